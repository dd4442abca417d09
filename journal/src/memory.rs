//! An in-memory journal for tests and simulation. Its contents can be shared
//! with a second handle, to "restart" a shard on what was written.

use std::collections::BTreeMap;
use std::sync::Arc;

use inventory_core::Entry;
use parking_lot::Mutex;

use crate::codec::{decode, encode};
use crate::{Journal, JournalError, RecordVisitor};

#[derive(Clone, Default)]
pub struct MemJournal {
    shard: u16,
    records: Arc<Mutex<BTreeMap<u64, Vec<u8>>>>,
}

impl MemJournal {
    pub fn new(shard: u16) -> MemJournal {
        MemJournal { shard, records: Arc::default() }
    }

    pub fn len(&self) -> usize {
        self.records.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Overwrites one stored record's bytes (to test corruption handling).
    pub fn corrupt(&self, seq: u64, f: impl FnOnce(&mut Vec<u8>)) {
        f(self.records.lock().get_mut(&seq).expect("no such record"));
    }
}

impl Journal for MemJournal {
    fn append(&mut self, batch: &[Entry]) -> Result<(), JournalError> {
        let mut records = self.records.lock();
        for entry in batch {
            records.insert(entry.seq, encode(entry));
        }
        Ok(())
    }

    fn recover(&mut self, next_seq: u64) -> Result<(), JournalError> {
        self.records.lock().retain(|seq, _| *seq < next_seq);
        Ok(())
    }

    fn read_from(&self, from: u64) -> Result<Box<dyn Iterator<Item = Result<Entry, JournalError>> + '_>, JournalError> {
        let shard = self.shard;
        let records: Vec<(u64, Vec<u8>)> = self.records.lock().range(from..).map(|(k, v)| (*k, v.clone())).collect();
        Ok(Box::new(records.into_iter().map(move |(seq, record)| decode(shard, seq, &record))))
    }

    fn visit_records(&self, from: u64, f: RecordVisitor<'_>) -> Result<(), JournalError> {
        let records: Vec<(u64, Vec<u8>)> = self.records.lock().range(from..).map(|(k, v)| (*k, v.clone())).collect();
        for (seq, record) in records {
            if !f(seq, &record)? {
                break;
            }
        }
        Ok(())
    }

    fn shard(&self) -> u16 {
        self.shard
    }

    fn reader(&self) -> Box<dyn Journal + Sync> {
        Box::new(self.clone())
    }

    fn truncate_before(&self, keep_from: u64) -> Result<u64, JournalError> {
        let mut records = self.records.lock();
        let before = records.len();
        records.retain(|seq, _| *seq >= keep_from);
        Ok((before - records.len()) as u64)
    }
}
