//! A journal wrapper that fails on command, to test that a failed write is
//! never acknowledged and that the shard recovers once the disk does.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use inventory_core::Entry;

use crate::{Journal, JournalError, RecordVisitor};

#[derive(Default)]
struct Faults {
    /// While set, every append and recover fails.
    broken: AtomicBool,
    /// Fail this many of the next appends.
    fail_appends: AtomicU32,
    /// When an append fails, write the batch through anyway first (a flush
    /// that failed after the data reached the disk).
    write_through: AtomicBool,
    /// Sleep this long in every append (a slow disk).
    delay_ms: AtomicU64,
    appends: AtomicU64,
    failures: AtomicU64,
}

/// Controls a [`FaultyJournal`] from a test.
#[derive(Clone, Default)]
pub struct FaultHandle(Arc<Faults>);

impl FaultHandle {
    pub fn set_broken(&self, broken: bool) {
        self.0.broken.store(broken, Ordering::SeqCst);
    }
    pub fn fail_next_appends(&self, n: u32) {
        self.0.fail_appends.store(n, Ordering::SeqCst);
    }
    pub fn set_write_through(&self, on: bool) {
        self.0.write_through.store(on, Ordering::SeqCst);
    }
    pub fn set_delay_ms(&self, ms: u64) {
        self.0.delay_ms.store(ms, Ordering::SeqCst);
    }
    /// Successful appends so far.
    pub fn appends(&self) -> u64 {
        self.0.appends.load(Ordering::SeqCst)
    }
    /// Injected failures so far.
    pub fn failures(&self) -> u64 {
        self.0.failures.load(Ordering::SeqCst)
    }
}

pub struct FaultyJournal<J> {
    inner: J,
    faults: FaultHandle,
}

impl<J: Journal> FaultyJournal<J> {
    pub fn new(inner: J, faults: FaultHandle) -> FaultyJournal<J> {
        FaultyJournal { inner, faults }
    }

    fn should_fail(&self) -> bool {
        let f = &self.faults.0;
        f.broken.load(Ordering::SeqCst)
            || f.fail_appends.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
    }
}

impl<J: Journal> Journal for FaultyJournal<J> {
    fn append(&mut self, batch: &[Entry]) -> Result<(), JournalError> {
        let delay = self.faults.0.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            std::thread::sleep(std::time::Duration::from_millis(delay));
        }
        if self.should_fail() {
            if self.faults.0.write_through.load(Ordering::SeqCst) {
                self.inner.append(batch)?;
            }
            self.faults.0.failures.fetch_add(1, Ordering::SeqCst);
            return Err(JournalError::Injected);
        }
        self.inner.append(batch)?;
        self.faults.0.appends.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn recover(&mut self, next_seq: u64) -> Result<(), JournalError> {
        if self.faults.0.broken.load(Ordering::SeqCst) {
            return Err(JournalError::Injected);
        }
        self.inner.recover(next_seq)
    }

    fn read_from(&self, from: u64) -> Result<Box<dyn Iterator<Item = Result<Entry, JournalError>> + '_>, JournalError> {
        self.inner.read_from(from)
    }

    fn visit_records(&self, from: u64, f: RecordVisitor<'_>) -> Result<(), JournalError> {
        self.inner.visit_records(from, f)
    }

    fn shard(&self) -> u16 {
        self.inner.shard()
    }

    fn reader(&self) -> Box<dyn Journal + Sync> {
        self.inner.reader()
    }

    fn truncate_before(&self, keep_from: u64) -> Result<u64, JournalError> {
        self.inner.truncate_before(keep_from)
    }
}
