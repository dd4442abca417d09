//! `inventoryctl`: operator tools for an inventory data dir.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use inventory_audit as audit;

mod import;
mod journal;
mod reconcile;

#[derive(Parser)]
#[command(name = "inventoryctl", version, about = "Operator tools for the inventory reservation service")]
struct Cli {
    #[command(subcommand)]
    command: Top,
}

#[derive(Subcommand)]
enum Top {
    /// The tamper-evident audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Inspect, verify and replay the journal (F22).
    Journal(journal::JournalArgs),
    /// Load a catalogue (CSV or JSONL of skuId, warehouseId, qty) into a
    /// running service through its bulk path.
    Import(import::ImportArgs),
    /// Reconcile a running service's counters with its journal and PostgreSQL (F9).
    Reconcile(reconcile::ReconcileArgs),
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the hash chain; name every altered, removed or reordered entry.
    Verify {
        /// The service's data dir (the log is in <data-dir>/audit).
        #[arg(long, default_value = "./data", conflicts_with = "dir")]
        data_dir: PathBuf,
        /// A directory holding audit.jsonl and audit.head (e.g. a copy).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Top::Journal(args) => journal::run(args),
        Top::Import(args) => import::run(args),
        Top::Reconcile(args) => reconcile::run(args),
        Top::Audit { command: AuditCommand::Verify { data_dir, dir } } => {
            let dir = dir.unwrap_or_else(|| data_dir.join("audit"));
            match audit::verify(&dir) {
                Ok(report) if report.ok() => {
                    println!("audit log OK: {} entries, chain intact ({})", report.entries, dir.display());
                    ExitCode::SUCCESS
                }
                Ok(report) => {
                    for problem in &report.problems {
                        println!("{problem}");
                    }
                    println!(
                        "audit log FAILED: {} problem(s) in {} entries ({})",
                        report.problems.len(),
                        report.entries,
                        dir.display()
                    );
                    ExitCode::from(1)
                }
                Err(e) => {
                    eprintln!("inventoryctl: cannot read the audit log in {}: {e}", dir.display());
                    ExitCode::from(2)
                }
            }
        }
    }
}
