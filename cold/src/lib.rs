//! The cold tier: the finished holds and idempotency records a shard no
//! longer keeps in memory, on local disk for the rest of their retention.
//!
//! Owns: one store per shard under `<data-dir>/cold/shard-<i>` ([`ColdStore`]),
//! an fjall database (an LSM tree per keyspace) whose keyspaces are time
//! slices, dropped whole once every record in them has reached the end of
//! its retention; and its follower
//! ([`run_follower`]), which builds the store from the shard's journal the
//! way the PostgreSQL writer and the audit tailer follow it, with a cursor
//! that holds back truncation.
//!
//! Never: decides anything. It keeps records exactly as the shard held them
//! (`inventory_core::cold_changes`), answers lookups, and says how far it
//! has taken the journal; the shard loop moves out of memory only what the
//! store already holds.

mod store;
mod tail;

pub use store::{ColdError, ColdStore, Position, StoreStats};
pub use tail::{run_follower, FOLLOWER};
