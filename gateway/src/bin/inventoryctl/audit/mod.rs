//! `inventoryctl audit`: the tamper-evident audit log.

use std::process::ExitCode;

mod verify;

#[derive(clap::Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(clap::Subcommand)]
enum AuditCommand {
    /// Check the hash chain; name every altered, removed or reordered entry.
    Verify(verify::VerifyArgs),
}

pub fn run(args: AuditArgs) -> ExitCode {
    match args.command {
        AuditCommand::Verify(args) => verify::run(args),
    }
}
