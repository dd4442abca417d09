//! The benchmark harness: drives the inventory service and the baselines a
//! user would otherwise build (a PostgreSQL conditional `UPDATE`, a Redis Lua
//! script) with the same flash-sale workload over the same HTTP client path,
//! and audits every run for oversold units and lost acknowledged holds.
//!
//! Owns: the credentials it can send ([`auth`]: bearer JWTs, signed
//! writes), the load generator ([`loadgen`]: open-loop at a fixed arrival rate,
//! latency measured from each request's intended send time, or closed-loop
//! for saturation), the workload and scenarios ([`workload`]), the targets it
//! starts and seeds ([`target`]), the HTTP adapters that put the baselines
//! behind the service's own API ([`adapter`]), the oversell audit
//! ([`audit`]) and the report: terminal table, JSON and SVG ([`report`]).
//! For drills: the ledger of every acknowledged write with its time
//! ([`acklog`]) and its check against a service restored after the
//! machine was lost ([`verify`]).
//!
//! Never: links the service's code. The service is measured as a separate
//! process through its public HTTP API, exactly as a user would run it.

pub mod acklog;
pub mod adapter;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod client;
pub mod loadgen;
pub mod report;
pub mod run;
pub mod stats;
pub mod target;
pub mod verify;
pub mod workload;

/// Failures of the harness itself (not of the system under test, whose
/// errors are counted in the report).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}")]
    Config(String),
    #[error("cannot start {what}: {reason}")]
    Start { what: String, reason: String },
    #[error("seeding the catalogue failed: {0}")]
    Seed(String),
    #[error("audit failed: {0}")]
    Audit(String),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("PostgreSQL: {0}")]
    Postgres(String),
    #[error("Redis: {0}")]
    Redis(String),
    #[error("report: {0}")]
    Report(String),
}

impl From<tokio_postgres::Error> for BenchError {
    fn from(e: tokio_postgres::Error) -> Self {
        BenchError::Postgres(e.to_string())
    }
}

impl From<redis::RedisError> for BenchError {
    fn from(e: redis::RedisError) -> Self {
        BenchError::Redis(e.to_string())
    }
}

pub type Result<T, E = BenchError> = std::result::Result<T, E>;
