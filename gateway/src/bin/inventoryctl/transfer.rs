//! `inventoryctl transfer`: moves of stock between an SKU's warehouses on a
//! running service (`/api/admin/transfers`): create, arrive, cancel, list
//! and show.

use std::process::ExitCode;

use inventory_gateway::api::TRANSFER_SECONDS_MAX;
use serde_json::{json, Value};

use crate::operator::{self, cell, encode, Failure, ListFormat, ReadArgs, WriteArgs};

#[derive(clap::Args)]
#[command(after_help = format!("\
A transfer takes QTY available units out of the FROM warehouse at once and
holds them as in transit at the TO warehouse (the service's default warehouse
is named \"default\"). `arrive` makes them available there; `cancel` puts
them back where they left. A transfer still in transit after its expected
arrival is listed as OVERDUE.

Examples:
  inventoryctl transfer create --operator ann --sku tea --from default --to east --qty 4 \\
      --reason rebalance --expected-arrival 2h
  inventoryctl transfer list --status IN_TRANSIT
  inventoryctl transfer arrive trf-1-2 --operator bob
  inventoryctl transfer cancel trf-1-2 --operator bob --reason \"truck broke down\"
  inventoryctl transfer show trf-1-2

{}", operator::EXIT_CODES))]
pub struct TransferArgs {
    #[command(subcommand)]
    command: TransferCommand,
}

#[derive(clap::Subcommand)]
enum TransferCommand {
    /// Send units of an SKU from one warehouse to another.
    ///
    /// The units leave the source's available units at once and are in
    /// transit until the transfer arrives or is cancelled. Prints the
    /// transfer, with its id (transferId) for `arrive` or `cancel`.
    Create(CreateArgs),
    /// Record that a transfer arrived: its units become available at the
    /// destination.
    Arrive(ArriveArgs),
    /// Cancel a transfer in transit: its units go back to the source.
    Cancel(CancelArgs),
    /// List transfers, oldest first.
    List(ListArgs),
    /// Show one transfer.
    Show(ShowArgs),
}

#[derive(clap::Args)]
struct CreateArgs {
    /// The SKU id.
    #[arg(long)]
    sku: String,
    /// The warehouse the units leave.
    #[arg(long, value_name = "WAREHOUSE")]
    from: String,
    /// The warehouse the units go to (created if the SKU has no row there).
    #[arg(long, value_name = "WAREHOUSE")]
    to: String,
    /// Units to move.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    qty: u64,
    /// Why (required; recorded with the transfer).
    #[arg(long)]
    reason: String,
    /// When the units should arrive, from now (e.g. 90m, 2h, 3days; whole
    /// seconds, at most 90 days). Past it the transfer is OVERDUE.
    /// Default: no expected arrival.
    #[arg(long, value_name = "DURATION", value_parser = parse_arrival)]
    expected_arrival: Option<u64>,
    #[command(flatten)]
    write: WriteArgs,
}

#[derive(clap::Args)]
struct ArriveArgs {
    /// The transfer's id (trf-<shard>-<seq>).
    transfer_id: String,
    #[command(flatten)]
    write: WriteArgs,
}

#[derive(clap::Args)]
struct CancelArgs {
    /// The transfer's id (trf-<shard>-<seq>).
    transfer_id: String,
    /// Why (required; recorded with the transfer).
    #[arg(long)]
    reason: String,
    #[command(flatten)]
    write: WriteArgs,
}

#[derive(clap::Args)]
struct ListArgs {
    /// Only transfers in this state (OVERDUE: in transit past the expected
    /// arrival).
    #[arg(long, value_parser = ["IN_TRANSIT", "ARRIVED", "CANCELLED", "OVERDUE"], ignore_case = true)]
    status: Option<String>,
    /// Only transfers of this SKU.
    #[arg(long)]
    sku: Option<String>,
    #[arg(long, value_enum, default_value = "table")]
    format: ListFormat,
    #[command(flatten)]
    read: ReadArgs,
}

#[derive(clap::Args)]
struct ShowArgs {
    /// The transfer's id (trf-<shard>-<seq>).
    transfer_id: String,
    #[command(flatten)]
    read: ReadArgs,
}

/// A duration such as `2h` or `90m` as whole seconds, from 1 s to 90 days.
fn parse_arrival(s: &str) -> Result<u64, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration such as 90m or 2h: {e}"))?;
    if d.subsec_nanos() != 0 {
        return Err(format!("{s:?}: the expected arrival is kept in whole seconds"));
    }
    match d.as_secs() {
        0 => Err("the expected arrival must be at least 1s from now".to_string()),
        secs if secs > TRANSFER_SECONDS_MAX => Err(format!("{s:?}: the expected arrival is at most 90 days from now")),
        secs => Ok(secs),
    }
}

fn finishing(id: &str, action: &str) -> String {
    format!("/api/admin/transfers/{}/{action}", encode(id))
}

pub fn run(args: TransferArgs) -> ExitCode {
    let (command, result) = match args.command {
        TransferCommand::Create(a) => {
            let mut body = json!({
                "skuId": a.sku, "fromWarehouseId": a.from, "toWarehouseId": a.to, "qty": a.qty, "reason": a.reason,
            });
            if let Some(secs) = a.expected_arrival {
                body["expectedArrivalSeconds"] = json!(secs);
            }
            ("transfer create", operator::write("transfer create", &a.write, "/api/admin/transfers", body))
        }
        TransferCommand::Arrive(a) => {
            let path = finishing(&a.transfer_id, "arrive");
            ("transfer arrive", operator::write("transfer arrive", &a.write, &path, json!({})))
        }
        TransferCommand::Cancel(a) => {
            let path = finishing(&a.transfer_id, "cancel");
            ("transfer cancel", operator::write("transfer cancel", &a.write, &path, json!({ "reason": a.reason })))
        }
        TransferCommand::List(a) => ("transfer list", list(&a)),
        TransferCommand::Show(a) => {
            let path = format!("/api/admin/transfers/{}", encode(&a.transfer_id));
            ("transfer show", operator::read(&a.read, &path).map(|answer| answer.print()))
        }
    };
    operator::finish(command, result)
}

fn list(args: &ListArgs) -> Result<(), Failure> {
    let headers = &["ID", "STATUS", "SKU", "FROM", "TO", "QTY", "CREATED_BY", "CREATED_AT", "EXPECTED_AT", "REASON"];
    operator::list(&args.read, "transfers", args.status.as_deref(), args.sku.as_deref(), args.format, headers, row)
}

fn row(t: &Value) -> Vec<String> {
    let status = if t["overdue"] == true { json!("OVERDUE") } else { t["status"].clone() };
    [
        &t["transferId"],
        &status,
        &t["skuId"],
        &t["fromWarehouseId"],
        &t["toWarehouseId"],
        &t["qty"],
        &t["createdBy"],
        &t["createdAt"],
        &t["expectedArrivalAt"],
        &t["reason"],
    ]
    .into_iter()
    .map(cell)
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_arrivals_are_whole_seconds_up_to_90_days() {
        assert_eq!(parse_arrival("2h"), Ok(7_200));
        assert_eq!(parse_arrival("1m 30s"), Ok(90));
        assert_eq!(parse_arrival("90days"), Ok(TRANSFER_SECONDS_MAX));
        for bad in ["0s", "500ms", "91days", "soon", "-1h"] {
            assert!(parse_arrival(bad).is_err(), "{bad:?} parsed");
        }
    }
}
