//! PostgreSQL persistence: the read model of the journal.
//!
//! Owns: the schema (migrations in `migrations/`, applied at start), the
//! asynchronous writer that tails each shard's journal from its checkpoint
//! and applies it in batches, each batch one transaction that also advances
//! the checkpoint (so every entry lands exactly once), day partitions and
//! their retention, the queries reconciliation needs, and the read model's
//! order query (its own small connection pool).
//!
//! Never: decides or changes stock. PostgreSQL is downstream of the journal;
//! when it is down or slow the service keeps serving and the writer catches
//! up later. Nothing here runs on a shard loop.

mod batch;
pub mod read_model;
pub mod reconcile;
pub mod restore;
pub mod schema;
pub mod tls;
mod writer;

pub use schema::{connect, migrate, Schema};
pub use writer::{spawn_writers, Progress, ShardProgress, WriterConfig, WriterFaults, FOLLOWER};

#[derive(Debug, thiserror::Error)]
pub enum PersistenceError {
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("journal: {0}")]
    Journal(#[from] inventory_journal::JournalError),
    #[error("checkpoint of shard {shard} moved: expected {expected}, another writer applied it")]
    CheckpointMoved { shard: u16, expected: u64 },
    #[error("invalid schema name {0:?}: use lowercase letters, digits and _")]
    BadSchema(String),
    #[error("restore: {0}")]
    Restore(String),
    #[error("postgres TLS: {0}")]
    Tls(String),
    #[error("read model: {0}")]
    ReadModel(String),
}
