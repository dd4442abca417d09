//! `inventoryctl journal`: inspect, verify and replay a data dir's journal.

use std::process::ExitCode;

#[derive(clap::Args)]
pub struct JournalArgs {
    #[command(subcommand)]
    command: JournalCommand,
}

#[derive(clap::Subcommand)]
enum JournalCommand {}

pub fn run(args: JournalArgs) -> ExitCode {
    match args.command {}
}
