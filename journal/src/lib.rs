//! The write-ahead journal of the reservation shards.
//!
//! Owns: the on-disk record format (rkyv [`Entry`] + CRC32C framing), the
//! [`Journal`] trait that a shard loop appends each batch to before it
//! acknowledges anything, two implementations chosen per data dir
//! ([`Store`]): sled ([`SledStore`], the default) and append-only segment
//! files ([`FileStore`]), an in-memory one and a fault-injecting wrapper
//! for tests, and [`replay`],
//! which rebuilds a [`Shard`](inventory_core::Shard) from its journal.
//!
//! Never: decides anything about stock. It stores and returns entries; the
//! core alone interprets them. See `DESIGN.md` for the layout and the write
//! path step by step.

mod codec;
mod fault;
mod file_store;
pub mod follow;
mod memory;
mod recover;
mod replay;
mod sled_store;
pub mod snapshot;
mod store;

#[cfg(test)]
mod test_support {
    use inventory_core::{Command, Entry, Expire, ReceiveBatch, ReceiveItem};

    /// A small entry: an empty expiry at `seq`.
    pub fn entry(seq: u64) -> Entry {
        Entry {
            seq,
            at: seq * 10,
            trace_id: 0,
            operator: String::new(),
            command: Command::Expire(Expire { ids: vec![] }),
            txns: vec![],
            cold: Default::default(),
        }
    }

    /// An entry of about 1 KB.
    pub fn big(seq: u64) -> Entry {
        Entry { operator: "x".repeat(1_000), ..entry(seq) }
    }

    /// A bulk receipt of `(sku, warehouse, qty)` items.
    pub fn receive_batch(items: &[(&str, &str, u64)], idem_key: &str, reference: &str) -> Command {
        Command::ReceiveBatch(ReceiveBatch {
            items: items
                .iter()
                .map(|&(s, w, q)| ReceiveItem { sku_id: s.into(), warehouse_id: w.into(), qty: q })
                .collect(),
            idem_key: idem_key.into(),
            reference: reference.into(),
        })
    }
}

use inventory_core::Entry;

pub use codec::{decode, encode, inspect, BulkRow, BulkView, Inspected, FORMAT_BULK_COLUMNS, FORMAT_VERSION};
pub use fault::{FaultHandle, FaultyJournal};
pub use file_store::{FileJournal, FileStore, SEGMENT_BYTES};
pub use memory::MemJournal;
pub use recover::{rebuild, Until};
pub use replay::{replay, replay_range, replay_upto, replay_with, ReplayStats};
pub use sled_store::{SledJournal, SledStore};
pub use store::{Backend, Store};

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal storage error: {0}")]
    Storage(#[from] sled::Error),
    #[error("corrupt journal record (shard {shard}, seq {seq}): {reason}")]
    Corrupt { shard: u16, seq: u64, reason: String },
    #[error("journal sequence gap in shard {shard}: expected {expected}, found {found}")]
    Gap { shard: u16, expected: u64, found: u64 },
    #[error("replay of shard {shard} diverged at seq {seq}: {reason}")]
    Diverged { shard: u16, seq: u64, reason: String },
    #[error("data dir was created with {stored} shards, {requested} requested; start with --shards {stored}")]
    ShardCountMismatch { stored: u16, requested: u16 },
    #[error("the journal under {} is a {found} journal, not a {asked} one; start with --journal {found}", .dir.display())]
    BackendMismatch { dir: std::path::PathBuf, found: Backend, asked: Backend },
    #[error("journal file error: {0}")]
    Io(#[from] std::io::Error),
    #[error("the journal under {} is in use by another process", .0.display())]
    Locked(std::path::PathBuf),
    #[error("injected journal fault")]
    Injected,
}

/// What [`Journal::visit_records`] calls with each record's sequence and
/// bytes; `Ok(false)` stops the walk.
pub type RecordVisitor<'a> = &'a mut dyn FnMut(u64, &[u8]) -> Result<bool, JournalError>;

/// One shard's journal: an append-only sequence of entries numbered 1, 2, 3..
///
/// `append` writes a whole batch and returns only once it is durable. If it
/// fails, the batch may or may not have reached the disk: the caller must not
/// acknowledge it, and must call `recover` before appending again.
pub trait Journal: Send {
    /// Writes `batch` (consecutive sequence numbers following the last
    /// entry) and makes it durable with one flush.
    fn append(&mut self, batch: &[Entry]) -> Result<(), JournalError>;

    /// Removes every entry with `seq >= next_seq` and makes that durable, so
    /// the journal again holds exactly what was acknowledged.
    fn recover(&mut self, next_seq: u64) -> Result<(), JournalError>;

    /// Entries with `seq >= from`, in order.
    fn read_from(&self, from: u64) -> Result<Box<dyn Iterator<Item = Result<Entry, JournalError>> + '_>, JournalError>;

    /// Calls `f` with each framed record (what [`decode`] and [`inspect`]
    /// read) with `seq >= from`, in order, for as long as `f` returns
    /// `Ok(true)`. For readers that need less than whole entries (the audit
    /// log reads a bulk receipt's rows in place). The default encodes what
    /// `read_from` yields.
    fn visit_records(&self, from: u64, f: RecordVisitor<'_>) -> Result<(), JournalError> {
        let mut record = Vec::new();
        for entry in self.read_from(from)? {
            let entry = entry?;
            codec::encode_into(&entry, &mut record);
            if !f(entry.seq, &record)? {
                break;
            }
        }
        Ok(())
    }

    /// The shard this journal belongs to (for error messages).
    fn shard(&self) -> u16;

    /// An independent handle for reading this journal from another thread
    /// while the owner appends (the PostgreSQL writer, reconciliation).
    /// Readers must not read past the last acknowledged sequence: entries
    /// beyond it may be rolled back.
    fn reader(&self) -> Box<dyn Journal + Sync>;

    /// Removes entries with `seq < keep_from` (covered by a snapshot) and
    /// makes that durable. Returns how many were removed. sled removes
    /// exactly those; the file journal removes whole segments only, so some
    /// of them may stay (reads from a later point never return them).
    fn truncate_before(&self, keep_from: u64) -> Result<u64, JournalError>;

    /// The first entry's sequence, if there is one.
    fn first_seq(&self) -> Result<Option<u64>, JournalError> {
        Ok(self.read_from(0)?.next().transpose()?.map(|e| e.seq))
    }
}

impl<J: Journal + ?Sized> Journal for Box<J> {
    fn append(&mut self, batch: &[Entry]) -> Result<(), JournalError> {
        (**self).append(batch)
    }
    fn recover(&mut self, next_seq: u64) -> Result<(), JournalError> {
        (**self).recover(next_seq)
    }
    fn read_from(&self, from: u64) -> Result<Box<dyn Iterator<Item = Result<Entry, JournalError>> + '_>, JournalError> {
        (**self).read_from(from)
    }
    fn visit_records(&self, from: u64, f: RecordVisitor<'_>) -> Result<(), JournalError> {
        (**self).visit_records(from, f)
    }
    fn shard(&self) -> u16 {
        (**self).shard()
    }
    fn reader(&self) -> Box<dyn Journal + Sync> {
        (**self).reader()
    }
    fn truncate_before(&self, keep_from: u64) -> Result<u64, JournalError> {
        (**self).truncate_before(keep_from)
    }
    fn first_seq(&self) -> Result<Option<u64>, JournalError> {
        (**self).first_seq()
    }
}
