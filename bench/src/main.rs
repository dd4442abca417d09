//! `inventory-bench`: runs the flash-sale scenarios against the service and
//! its baselines (`run`), serves a baseline behind the service's HTTP API
//! (`adapter`, started by `run`), or checks a run's ledger against a
//! service (`verify`). Exits 1 on a harness failure and 2 when the audit of
//! any target, or the check, is not clean.

use std::process::ExitCode;

use clap::Parser;
use inventory_bench::cli::{Cli, Commands};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Commands::Run(args) => match inventory_bench::run::main(*args) {
            Ok(report) if report.targets.iter().all(|t| t.audit.clean()) => ExitCode::SUCCESS,
            Ok(_) => {
                eprintln!("inventory-bench: the audit found inconsistencies (see the report)");
                ExitCode::from(2)
            }
            Err(e) => {
                eprintln!("inventory-bench: {e}");
                ExitCode::FAILURE
            }
        },
        Commands::Adapter(args) => match inventory_bench::adapter::main(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("inventory-bench adapter: {e}");
                ExitCode::FAILURE
            }
        },
        Commands::Verify(args) => match inventory_bench::verify::main(args) {
            Ok(report) => {
                eprint!("{}", report.summary());
                println!("{}", serde_json::to_string(&report).expect("json"));
                if report.clean() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(2)
                }
            }
            Err(e) => {
                eprintln!("inventory-bench verify: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
