//! The event relay: a follower of every shard's journal that publishes each
//! stock change, in journal order, to a broker as a CloudEvent.
//!
//! - [`event`]: one change as a CloudEvents 1.0 JSON object, with a stable id.
//! - [`sink`]: where events go ([`sink::Sink`]); NATS JetStream is the one
//!   broker it speaks.
//! - [`position`]: how far each shard's events are durably published.
//! - [`relay`]: the per-shard tasks, their status and lag.
//!
//! Delivery is at least once: a shard's position is written only after the
//! broker acknowledged everything up to it, so after a crash the relay
//! publishes again from its position, with the same ids.

pub mod event;
pub mod position;
pub mod relay;
pub mod sink;

pub use event::Change;
pub use relay::{spawn_relay, RelayConfig, RelayStatus, ShardRelay, FOLLOWER};
pub use sink::{NatsSink, Outgoing, Sink, SinkError};
