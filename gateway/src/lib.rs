//! The inventory reservation service's HTTP gateway (binary `inventoryd`).
//!
//! Owns: the HTTP API on axum ([`http`]) with its JSON shapes and validation
//! ([`api`]) and trace context ([`trace`]); the service's configuration
//! ([`config`]); and start-up and shutdown ([`server`]): opening the
//! journals, starting the shard runtime
//! ([`inventory_runtime::Runtime`]) and the PostgreSQL writer, serving
//! connections on the HTTP threads, and draining them.
//!
//! Never: touches stock state (only the shard loops do, behind the
//! runtime's queues), acknowledges a write before the shard's journal flush
//! has answered, or waits on a full queue (it refuses with `503
//! OVERLOADED`).

pub mod api;
pub mod auth;
pub mod config;
pub mod http;
pub mod restore;
pub mod server;
pub mod tls;
pub mod trace;

pub use config::Config;
pub use inventory_runtime::{Clock, ManualClock, SteadyClock, SystemClock};
pub use server::{run, run_with, ServerError};
