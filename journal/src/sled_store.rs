//! The sled backend: one sled database per data dir, one tree per shard,
//! keyed by the big-endian sequence number.

use std::path::Path;

use inventory_core::Entry;

use crate::codec::{decode, encode};
use crate::{Journal, JournalError};

const META_TREE: &str = "meta";
const CACHE_BYTES: u64 = 128 * 1024 * 1024;
const SHARDS_KEY: &str = "shards";

/// An open journal database. Cheap to clone; shared by the shard journals.
#[derive(Clone)]
pub struct SledStore {
    db: sled::Db,
    shards: u16,
}

impl SledStore {
    /// Opens (or creates) the journal under `dir`. The shard count is fixed
    /// when the journal is created, because reservation ids and SKU routing
    /// depend on it: `requested` must match it afterwards, or be `None`.
    pub fn open(dir: &Path, requested: Option<u16>, default_shards: u16) -> Result<SledStore, JournalError> {
        // The journal is written once and read back only at start-up and by
        // the PostgreSQL writer close behind: a small page cache is enough.
        let db = sled::Config::new().path(dir).mode(sled::Mode::HighThroughput).cache_capacity(CACHE_BYTES).open()?;
        let meta = db.open_tree(META_TREE)?;
        let shards = match meta.get(SHARDS_KEY)? {
            Some(v) => {
                let bytes: [u8; 2] = v.as_ref().try_into().map_err(|_| JournalError::Corrupt {
                    shard: 0,
                    seq: 0,
                    reason: "bad shard count in journal metadata".into(),
                })?;
                let stored = u16::from_le_bytes(bytes);
                if let Some(requested) = requested.filter(|r| *r != stored) {
                    return Err(JournalError::ShardCountMismatch { stored, requested });
                }
                stored
            }
            None => {
                let shards = requested.unwrap_or(default_shards).max(1);
                meta.insert(SHARDS_KEY, &shards.to_le_bytes())?;
                db.flush()?;
                shards
            }
        };
        Ok(SledStore { db, shards })
    }

    pub fn shards(&self) -> u16 {
        self.shards
    }

    pub fn journal(&self, shard: u16) -> Result<SledJournal, JournalError> {
        assert!(shard < self.shards);
        Ok(SledJournal { tree: self.db.open_tree(format!("shard-{shard}"))?, shard })
    }

    /// Flushes everything; used at shutdown.
    pub fn flush(&self) -> Result<(), JournalError> {
        self.db.flush()?;
        Ok(())
    }
}

pub struct SledJournal {
    tree: sled::Tree,
    shard: u16,
}

impl Journal for SledJournal {
    fn append(&mut self, batch: &[Entry]) -> Result<(), JournalError> {
        let mut writes = sled::Batch::default();
        for entry in batch {
            let record = encode(entry);
            debug_assert_eq!(decode(self.shard, entry.seq, &record).as_ref().ok(), Some(entry));
            writes.insert(&entry.seq.to_be_bytes(), record);
        }
        // One atomic batch, then one flush: the group commit.
        self.tree.apply_batch(writes)?;
        self.tree.flush()?;
        Ok(())
    }

    fn recover(&mut self, next_seq: u64) -> Result<(), JournalError> {
        let mut removals = sled::Batch::default();
        for key in self.tree.range(next_seq.to_be_bytes()..).keys() {
            removals.remove(key?);
        }
        self.tree.apply_batch(removals)?;
        self.tree.flush()?;
        Ok(())
    }

    fn read_from(&self, from: u64) -> Result<Box<dyn Iterator<Item = Result<Entry, JournalError>> + '_>, JournalError> {
        let shard = self.shard;
        Ok(Box::new(self.tree.range(from.to_be_bytes()..).map(move |item| {
            let (key, value) = item?;
            let seq = u64::from_be_bytes(key.as_ref().try_into().map_err(|_| JournalError::Corrupt {
                shard,
                seq: 0,
                reason: format!("key of {} bytes", key.len()),
            })?);
            decode(shard, seq, &value)
        })))
    }

    fn shard(&self) -> u16 {
        self.shard
    }

    fn reader(&self) -> Box<dyn Journal + Sync> {
        Box::new(SledJournal { tree: self.tree.clone(), shard: self.shard })
    }

    fn truncate_before(&self, keep_from: u64) -> Result<u64, JournalError> {
        let mut removed = 0;
        loop {
            // In slices, so a long truncation never holds one huge batch.
            let keys: Vec<sled::IVec> =
                self.tree.range(..keep_from.to_be_bytes()).keys().take(65_536).collect::<Result<_, _>>()?;
            if keys.is_empty() {
                break;
            }
            let mut batch = sled::Batch::default();
            removed += keys.len() as u64;
            for key in keys {
                batch.remove(key);
            }
            self.tree.apply_batch(batch)?;
        }
        self.tree.flush()?;
        Ok(removed)
    }

    fn first_seq(&self) -> Result<Option<u64>, JournalError> {
        Ok(self.tree.first()?.and_then(|(k, _)| k.as_ref().try_into().ok().map(u64::from_be_bytes)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use inventory_core::{Command, Expire};

    fn entry(seq: u64) -> Entry {
        Entry {
            seq,
            at: seq * 10,
            trace_id: 0,
            operator: String::new(),
            command: Command::Expire(Expire { ids: vec![] }),
            txns: vec![],
        }
    }

    #[test]
    fn entries_survive_reopen_and_recover_truncates() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path(), Some(2), 8).unwrap();
            let mut j = store.journal(1).unwrap();
            j.append(&[entry(1), entry(2)]).unwrap();
            j.append(&[entry(3)]).unwrap();
        }
        let store = SledStore::open(dir.path(), None, 8).unwrap();
        assert_eq!(store.shards(), 2);
        let mut j = store.journal(1).unwrap();
        let seqs: Vec<u64> = j.read_from(1).unwrap().map(|e| e.unwrap().seq).collect();
        assert_eq!(seqs, vec![1, 2, 3]);
        j.recover(3).unwrap();
        let seqs: Vec<u64> = j.read_from(2).unwrap().map(|e| e.unwrap().seq).collect();
        assert_eq!(seqs, vec![2]);
        assert!(store.journal(0).unwrap().read_from(1).unwrap().next().is_none());
    }

    #[test]
    fn shard_count_is_fixed_at_creation() {
        let dir = tempfile::tempdir().unwrap();
        drop(SledStore::open(dir.path(), Some(3), 8).unwrap());
        match SledStore::open(dir.path(), Some(4), 8) {
            Err(JournalError::ShardCountMismatch { stored: 3, requested: 4 }) => {}
            Err(other) => panic!("unexpected error {other}"),
            Ok(_) => panic!("a different shard count was accepted"),
        }
        assert_eq!(SledStore::open(dir.path(), Some(3), 8).unwrap().shards(), 3);
    }
}
