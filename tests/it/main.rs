//! The integration tests: the real server, in process on port 0 or as the
//! `inventoryd` binary, driven over HTTP.

mod support;

mod api;
mod auth;
mod bad_input;
mod concurrency;
mod crash;
mod events;
mod events_ctl;
mod faults;
mod import;
mod journal_faults;
mod journal_tool;
mod lifecycle;
mod machine_loss;
mod nats;
mod observability;
mod openapi;
mod operator;
mod operator_ctl;
mod orders;
mod persistence;
mod pg;
mod policy;
mod read_model;
mod reads;
mod runbook;
mod snapshots;
mod tiers;
mod transport;
