//! The sled backend: one sled database per data dir, one tree per shard.
//!
//! A tree holds *chunks*: the key is the big-endian sequence number of the
//! chunk's first entry, the value up to [`CHUNK_BYTES`] of consecutive framed
//! records. One group commit writes its batch as one or a few chunks, so sled
//! does one insert per chunk instead of one per entry (see `DESIGN.md`).

use std::path::Path;

use inventory_core::Entry;

use crate::codec::{decode, encode, FORMAT_VERSION};
use crate::{Journal, JournalError};

const META_TREE: &str = "meta";
const CACHE_BYTES: u64 = 128 * 1024 * 1024;
const SHARDS_KEY: &str = "shards";

/// First byte of a chunk value. A value that starts with [`FORMAT_VERSION`]
/// instead is a single record (the layout before chunks), still readable.
const CHUNK_TAG: u8 = 0xC1;
const CHUNK_HEADER: usize = 5;
/// Upper bound of a chunk value, well under sled's blob threshold (a quarter
/// of its 512 KiB segment), so chunks stay inline in sled's log.
pub const CHUNK_BYTES: usize = 64 * 1024;

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

/// Builds chunk values: `[CHUNK_TAG][count: u32 LE]` then, per entry,
/// `[len: u32 LE][framed record]`, entries with consecutive sequences.
struct ChunkWriter {
    first: u64,
    count: u32,
    bytes: Vec<u8>,
}

impl ChunkWriter {
    fn new(first: u64) -> ChunkWriter {
        let mut bytes = Vec::with_capacity(CHUNK_BYTES);
        bytes.push(CHUNK_TAG);
        bytes.extend_from_slice(&0u32.to_le_bytes());
        ChunkWriter { first, count: 0, bytes }
    }

    fn next_seq(&self) -> u64 {
        self.first + u64::from(self.count)
    }

    fn push(&mut self, record: &[u8]) {
        self.bytes.extend_from_slice(&(record.len() as u32).to_le_bytes());
        self.bytes.extend_from_slice(record);
        self.count += 1;
    }

    fn finish(mut self) -> (u64, Vec<u8>) {
        self.bytes[1..CHUNK_HEADER].copy_from_slice(&self.count.to_le_bytes());
        (self.first, self.bytes)
    }
}

/// Splits one stored value into its framed records: `(seq, record)`.
fn records(shard: u16, first: u64, value: &[u8]) -> Result<Vec<(u64, &[u8])>, JournalError> {
    let corrupt = |reason: String| JournalError::Corrupt { shard, seq: first, reason };
    match value.first() {
        Some(&FORMAT_VERSION) => return Ok(vec![(first, value)]),
        Some(&CHUNK_TAG) if value.len() >= CHUNK_HEADER => {}
        _ => return Err(corrupt(format!("unknown chunk header in a value of {} bytes", value.len()))),
    }
    let count = u32::from_le_bytes(value[1..CHUNK_HEADER].try_into().unwrap());
    let mut out = Vec::with_capacity(count as usize);
    let mut at = CHUNK_HEADER;
    for i in 0..u64::from(count) {
        let seq = first + i;
        let len = value
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()) as usize)
            .ok_or_else(|| JournalError::Corrupt { shard, seq, reason: "chunk ends inside a length".into() })?;
        let record = value.get(at + 4..at + 4 + len).ok_or_else(|| JournalError::Corrupt {
            shard,
            seq,
            reason: "chunk ends inside a record".into(),
        })?;
        out.push((seq, record));
        at += 4 + len;
    }
    if at != value.len() {
        return Err(corrupt(format!("{} bytes after the last record of the chunk", value.len() - at)));
    }
    Ok(out)
}

fn key_seq(shard: u16, key: &[u8]) -> Result<u64, JournalError> {
    let bytes: [u8; 8] = key.try_into().map_err(|_| JournalError::Corrupt {
        shard,
        seq: 0,
        reason: format!("key of {} bytes", key.len()),
    })?;
    Ok(u64::from_be_bytes(bytes))
}

impl SledJournal {
    /// The chunk that holds `seq`, if any: the last key at or before it.
    fn chunk_at(&self, seq: u64) -> Result<Option<(u64, sled::IVec)>, JournalError> {
        match self.tree.range(..=seq.to_be_bytes()).next_back().transpose()? {
            Some((key, value)) => Ok(Some((key_seq(self.shard, &key)?, value))),
            None => Ok(None),
        }
    }

    /// Rewrites the chunk at `first` keeping only the records for which
    /// `keep` holds (a contiguous range), under the key of the first kept.
    fn trim_chunk(
        &self,
        writes: &mut sled::Batch,
        first: u64,
        value: &[u8],
        keep: impl Fn(u64) -> bool,
    ) -> Result<u64, JournalError> {
        let records = records(self.shard, first, value)?;
        let kept: Vec<_> = records.iter().filter(|(seq, _)| keep(*seq)).collect();
        writes.remove(&first.to_be_bytes());
        if let Some((start, _)) = kept.first() {
            let mut chunk = ChunkWriter::new(*start);
            for (_, record) in &kept {
                chunk.push(record);
            }
            let (key, bytes) = chunk.finish();
            writes.insert(&key.to_be_bytes(), bytes);
        }
        Ok((records.len() - kept.len()) as u64)
    }
}

impl Journal for SledJournal {
    fn append(&mut self, batch: &[Entry]) -> Result<(), JournalError> {
        let mut writes = sled::Batch::default();
        let mut chunk: Option<ChunkWriter> = None;
        for entry in batch {
            let record = encode(entry);
            debug_assert_eq!(decode(self.shard, entry.seq, &record).as_ref().ok(), Some(entry));
            let full = chunk
                .as_ref()
                .is_some_and(|c| c.next_seq() != entry.seq || c.bytes.len() + 4 + record.len() > CHUNK_BYTES);
            if full {
                let (key, bytes) = chunk.take().unwrap().finish();
                writes.insert(&key.to_be_bytes(), bytes);
            }
            chunk.get_or_insert_with(|| ChunkWriter::new(entry.seq)).push(&record);
        }
        if let Some(c) = chunk {
            let (key, bytes) = c.finish();
            writes.insert(&key.to_be_bytes(), bytes);
        }
        // One atomic batch, then one flush: the group commit.
        self.tree.apply_batch(writes)?;
        self.tree.flush()?;
        Ok(())
    }

    fn recover(&mut self, next_seq: u64) -> Result<(), JournalError> {
        let mut removals = sled::Batch::default();
        if let Some((first, value)) = self.chunk_at(next_seq)?.filter(|(first, _)| *first < next_seq) {
            self.trim_chunk(&mut removals, first, &value, |seq| seq < next_seq)?;
        }
        for key in self.tree.range(next_seq.to_be_bytes()..).keys() {
            removals.remove(key?);
        }
        self.tree.apply_batch(removals)?;
        self.tree.flush()?;
        Ok(())
    }

    fn read_from(&self, from: u64) -> Result<Box<dyn Iterator<Item = Result<Entry, JournalError>> + '_>, JournalError> {
        let shard = self.shard;
        let start = match self.chunk_at(from)? {
            Some((first, _)) => first,
            None => from,
        };
        Ok(Box::new(
            self.tree
                .range(start.to_be_bytes()..)
                .flat_map(move |item| {
                    let decoded: Vec<Result<Entry, JournalError>> =
                        match item.map_err(JournalError::from).and_then(|(k, v)| Ok((key_seq(shard, &k)?, v))) {
                            Err(e) => vec![Err(e)],
                            Ok((first, value)) => match records(shard, first, &value) {
                                Err(e) => vec![Err(e)],
                                Ok(records) => records
                                    .into_iter()
                                    .filter(|(seq, _)| *seq >= from)
                                    .map(|(seq, record)| decode(shard, seq, record))
                                    .collect(),
                            },
                        };
                    decoded
                })
                // A record that fails to decode ends the read: nothing after
                // it can be trusted to be in sequence.
                .scan(false, |failed, item| {
                    if *failed {
                        return None;
                    }
                    *failed = item.is_err();
                    Some(item)
                }),
        ))
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
            let chunks: Vec<(sled::IVec, sled::IVec)> =
                self.tree.range(..keep_from.to_be_bytes()).take(1_024).collect::<Result<_, _>>()?;
            if chunks.is_empty() {
                break;
            }
            let mut batch = sled::Batch::default();
            for (key, value) in &chunks {
                let first = key_seq(self.shard, key)?;
                let count = records(self.shard, first, value)?.len() as u64;
                if first + count <= keep_from {
                    batch.remove(key);
                    removed += count;
                } else {
                    // The chunk that straddles `keep_from` keeps its tail.
                    removed += self.trim_chunk(&mut batch, first, value, |seq| seq >= keep_from)?;
                }
            }
            self.tree.apply_batch(batch)?;
        }
        self.tree.flush()?;
        Ok(removed)
    }

    fn first_seq(&self) -> Result<Option<u64>, JournalError> {
        match self.tree.first()? {
            Some((key, _)) => Ok(Some(key_seq(self.shard, &key)?)),
            None => Ok(None),
        }
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

    fn seqs(j: &SledJournal, from: u64) -> Vec<u64> {
        j.read_from(from).unwrap().map(|e| e.unwrap().seq).collect()
    }

    fn big(seq: u64) -> Entry {
        Entry { operator: "x".repeat(1_000), ..entry(seq) }
    }

    #[test]
    fn a_large_batch_is_split_into_chunks_and_reads_back_from_any_point() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), Some(1), 1).unwrap();
        let mut j = store.journal(0).unwrap();
        let batch: Vec<Entry> = (1..=200).map(big).collect();
        j.append(&batch).unwrap();
        assert!(j.tree.len() >= 3, "200 KB in {} chunks", j.tree.len());
        for value in j.tree.iter().values() {
            assert!(value.unwrap().len() <= CHUNK_BYTES);
        }
        assert_eq!(seqs(&j, 1), (1..=200).collect::<Vec<_>>());
        assert_eq!(seqs(&j, 77), (77..=200).collect::<Vec<_>>());
        assert_eq!(j.read_from(77).unwrap().next().unwrap().unwrap(), big(77));
        assert!(seqs(&j, 201).is_empty());
    }

    #[test]
    fn recover_and_truncate_cut_inside_a_chunk_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), Some(1), 1).unwrap();
        let mut j = store.journal(0).unwrap();
        j.append(&(1..=10).map(entry).collect::<Vec<_>>()).unwrap();
        j.append(&(11..=20).map(entry).collect::<Vec<_>>()).unwrap();
        j.recover(16).unwrap();
        assert_eq!(seqs(&j, 1), (1..=15).collect::<Vec<_>>());
        j.append(&[entry(16)]).unwrap();
        assert_eq!(j.truncate_before(5).unwrap(), 4);
        assert_eq!(j.first_seq().unwrap(), Some(5));
        assert_eq!(seqs(&j, 1), (5..=16).collect::<Vec<_>>());
        assert_eq!(j.truncate_before(13).unwrap(), 8);
        assert_eq!(seqs(&j, 0), (13..=16).collect::<Vec<_>>());
        assert_eq!(j.truncate_before(100).unwrap(), 4);
        assert_eq!(j.first_seq().unwrap(), None);
    }

    #[test]
    fn single_record_values_are_read_as_one_entry_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), Some(1), 1).unwrap();
        let mut j = store.journal(0).unwrap();
        for seq in 1..=3u64 {
            j.tree.insert(seq.to_be_bytes(), encode(&entry(seq))).unwrap();
        }
        j.append(&[entry(4), entry(5)]).unwrap();
        assert_eq!(seqs(&j, 2), vec![2, 3, 4, 5]);
        j.recover(5).unwrap();
        assert_eq!(j.truncate_before(2).unwrap(), 1);
        assert_eq!(seqs(&j, 0), vec![2, 3, 4]);
    }

    #[test]
    fn damage_inside_a_chunk_names_the_record_and_ends_the_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), Some(1), 1).unwrap();
        let mut j = store.journal(0).unwrap();
        j.append(&(1..=5).map(entry).collect::<Vec<_>>()).unwrap();
        let mut value = j.tree.get(1u64.to_be_bytes()).unwrap().unwrap().to_vec();
        let last = value.len() - 1;
        value[last] ^= 0x40;
        j.tree.insert(1u64.to_be_bytes(), value.clone()).unwrap();
        let read: Vec<_> = j.read_from(1).unwrap().collect();
        assert_eq!(read.len(), 5);
        assert!(read[..4].iter().all(Result::is_ok));
        assert!(matches!(read[4], Err(JournalError::Corrupt { seq: 5, .. })), "{:?}", read[4]);

        value.truncate(value.len() - 3);
        j.tree.insert(1u64.to_be_bytes(), value).unwrap();
        let read: Vec<_> = j.read_from(1).unwrap().collect();
        assert!(matches!(read.last(), Some(Err(JournalError::Corrupt { .. }))), "{read:?}");
    }
}
