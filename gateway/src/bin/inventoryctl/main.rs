//! `inventoryctl`: operator tools for an inventory data dir.
//!
//! Each subcommand lives in its own file (`journal/` and `audit/` hold one
//! file per subcommand of theirs); every one that talks to a running
//! service does so through [`client`] (with the bearer token in
//! `INVENTORY_TOKEN`, if set), and `events` reads the broker the service
//! publishes to.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod adjust;
mod audit;
mod client;
mod events;
mod import;
mod journal;
mod operator;
mod reconcile;
mod sku;
mod token;
mod transfer;

#[derive(Parser)]
#[command(name = "inventoryctl", version, about = "Operator tools for the inventory reservation service")]
struct Cli {
    #[command(subcommand)]
    command: Top,
}

#[derive(Subcommand)]
enum Top {
    /// The tamper-evident audit log.
    Audit(audit::AuditArgs),
    /// Inspect, verify and replay the journal.
    Journal(journal::JournalArgs),
    /// Load a catalogue (CSV or JSONL of skuId, warehouseId, qty) into a
    /// running service through its bulk path.
    Import(import::ImportArgs),
    /// Reconcile a running service's counters with its journal and PostgreSQL.
    Reconcile(reconcile::ReconcileArgs),
    /// Freeze or unfreeze an SKU on a running service.
    Sku(sku::SkuArgs),
    /// Propose, approve, reject and list stock adjustments on a running
    /// service (two-person approval).
    Adjust(adjust::AdjustArgs),
    /// Create, finish and list transfers between warehouses on a running
    /// service.
    Transfer(transfer::TransferArgs),
    /// Print the stock-change events the service publishes to NATS
    /// JetStream, one JSON line each, and follow new ones.
    Events(events::EventsArgs),
    /// Sign a bearer token with the service's HS256 secret (for a service
    /// run with `--auth jwt`; the other commands send `INVENTORY_TOKEN`).
    Token(token::TokenArgs),
    /// Make an ES256 key pair for `inventoryctl token --es256-key-file` and
    /// the service's `--jwt-jwks-file`.
    Keygen(token::KeygenArgs),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Top::Audit(args) => audit::run(args),
        Top::Journal(args) => journal::run(args),
        Top::Import(args) => import::run(args),
        Top::Reconcile(args) => reconcile::run(args),
        Top::Sku(args) => sku::run(args),
        Top::Adjust(args) => adjust::run(args),
        Top::Transfer(args) => transfer::run(args),
        Top::Events(args) => events::run(args),
        Top::Token(args) => token::run(args),
        Top::Keygen(args) => token::keygen(args),
    }
}
