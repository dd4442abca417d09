//! `inventoryctl audit verify`: checks the audit log's hash chain and names
//! every altered, removed or reordered entry.
//!
//! Exit codes: 0 the chain is intact; 1 it is not; 2 the log could not be read.

use std::path::PathBuf;
use std::process::ExitCode;

use inventory_audit as audit;

#[derive(clap::Args)]
pub struct VerifyArgs {
    /// The service's data dir (the log is in <data-dir>/audit).
    #[arg(long, default_value = "./data", conflicts_with = "dir")]
    data_dir: PathBuf,
    /// A directory holding audit.jsonl and audit.head (e.g. a copy).
    #[arg(long)]
    dir: Option<PathBuf>,
}

pub fn run(args: VerifyArgs) -> ExitCode {
    let dir = args.dir.unwrap_or_else(|| args.data_dir.join("audit"));
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
