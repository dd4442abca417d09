//! `inventoryctl audit`: the tamper-evident audit log.

use std::process::ExitCode;

mod list;
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
    /// Print the trail (of one SKU with --sku): action, operator, reason,
    /// counters before and after.
    List(list::ListArgs),
}

pub fn run(args: AuditArgs) -> ExitCode {
    match args.command {
        AuditCommand::Verify(args) => verify::run(args),
        AuditCommand::List(args) => list::run(args),
    }
}
