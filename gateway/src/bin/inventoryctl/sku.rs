//! `inventoryctl sku`: freeze and unfreeze an SKU on a running service
//! (`POST /api/admin/skus/{sku}/freeze` and `/unfreeze`).

use std::process::ExitCode;

use serde_json::json;

use crate::operator::{self, encode, WriteArgs};

#[derive(clap::Args)]
#[command(after_help = format!("\
Examples:
  inventoryctl sku freeze tea --operator ann --reason \"oversell page\"
  inventoryctl sku freeze tea --warehouse east --operator ann --reason \"stock count\"
  inventoryctl sku unfreeze tea --operator ann --reason reconciled

Each prints the SKU's stock as the service answers it (\"frozen\": true once
every warehouse row is frozen).

{}", operator::EXIT_CODES))]
pub struct SkuArgs {
    #[command(subcommand)]
    command: SkuCommand,
}

#[derive(clap::Subcommand)]
enum SkuCommand {
    /// Refuse new reserves of an SKU, in every warehouse or in one.
    ///
    /// A reserve of a frozen row is answered 409 SKU_FROZEN. Holds already
    /// made can still be confirmed or released, and stock still received.
    Freeze(FreezeArgs),
    /// Take new reserves of a frozen SKU again, in every warehouse or in one.
    Unfreeze(FreezeArgs),
}

#[derive(clap::Args)]
struct FreezeArgs {
    /// The SKU id.
    sku: String,
    /// Why (required; recorded with the change).
    #[arg(long)]
    reason: String,
    /// Only this warehouse's row. Default: every warehouse of the SKU.
    #[arg(long)]
    warehouse: Option<String>,
    #[command(flatten)]
    write: WriteArgs,
}

pub fn run(args: SkuArgs) -> ExitCode {
    let (command, action, args) = match args.command {
        SkuCommand::Freeze(args) => ("sku freeze", "freeze", args),
        SkuCommand::Unfreeze(args) => ("sku unfreeze", "unfreeze", args),
    };
    let mut body = json!({ "reason": args.reason });
    if let Some(warehouse) = &args.warehouse {
        body["warehouseId"] = json!(warehouse);
    }
    let path = format!("/api/admin/skus/{}/{action}", encode(&args.sku));
    operator::finish(command, operator::write(command, &args.write, &path, body))
}
