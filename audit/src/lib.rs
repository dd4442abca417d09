//! The audit log of the inventory service: every stock change outside the
//! hold flow (receipts now), as a hash-chained JSON-lines file under
//! `<data-dir>/audit`, and the tailer that writes it from the journal.
//!
//! Owns: the log's format and its verification ([`log`]), which journal
//! entries it records ([`is_audited`]), and the tailer thread ([`tail`]),
//! a follower of every shard's journal.
//!
//! Never: changes stock or decides anything. The log is derived from the
//! journal: what a crash loses from it is written again from the journal at
//! the next start.

pub mod log;
pub mod tail;

pub use log::*;
pub use tail::{run_tailer, AuditedUpto, TailedShard};
