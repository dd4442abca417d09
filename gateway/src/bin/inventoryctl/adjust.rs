//! `inventoryctl adjust`: stock adjustments under two-person approval on a
//! running service (`/api/admin/adjustments`): propose, approve, reject,
//! list and show.

use std::process::ExitCode;

use serde_json::{json, Value};

use crate::operator::{self, cell, encode, Failure, ListFormat, ReadArgs, WriteArgs};

#[derive(clap::Args)]
#[command(after_help = format!("\
An adjustment changes an SKU's available units by DELTA (e.g. after a stock
count) only once a second operator approves it: whoever proposed it cannot
approve it (the service refuses with SAME_OPERATOR). A pending adjustment
expires after the service's --adjustment-ttl-secs (a day by default).

Examples:
  inventoryctl adjust propose --operator ann --sku tea --delta=-3 --reason \"cycle count\"
  inventoryctl adjust list --status PENDING
  inventoryctl adjust approve adj-0-1 --operator bob
  inventoryctl adjust reject adj-0-1 --operator bob --reason \"count again\"
  inventoryctl adjust show adj-0-1

{}", operator::EXIT_CODES))]
pub struct AdjustArgs {
    #[command(subcommand)]
    command: AdjustCommand,
}

#[derive(clap::Subcommand)]
enum AdjustCommand {
    /// Propose a change of an SKU's available units.
    ///
    /// The adjustment waits, PENDING, for another operator's approval.
    /// Prints it, with its id (adjustmentId) for `approve` or `reject`.
    Propose(ProposeArgs),
    /// Approve a pending adjustment, which applies it.
    ///
    /// The approver must not be the proposer (SAME_OPERATOR otherwise); a
    /// write-off the available units no longer cover is refused
    /// (INSUFFICIENT_STOCK). Prints the adjustment, now APPLIED, with the
    /// row before and after.
    Approve(ApproveArgs),
    /// Reject a pending adjustment: the stock stays as it is.
    Reject(RejectArgs),
    /// List adjustments, oldest first.
    List(ListArgs),
    /// Show one adjustment.
    Show(ShowArgs),
}

#[derive(clap::Args)]
struct ProposeArgs {
    /// The SKU id.
    #[arg(long)]
    sku: String,
    /// The warehouse whose row changes. Default: the service's default
    /// warehouse.
    #[arg(long)]
    warehouse: Option<String>,
    /// Units to add (positive) or write off (negative), e.g. --delta=-3.
    #[arg(long, allow_negative_numbers = true, value_parser = parse_delta)]
    delta: i64,
    /// Why (required; recorded with the adjustment).
    #[arg(long)]
    reason: String,
    /// Print only the new adjustment's id (for scripts:
    /// `ADJ=$(inventoryctl adjust propose ... --print-id)`).
    #[arg(long)]
    print_id: bool,
    #[command(flatten)]
    write: WriteArgs,
}

#[derive(clap::Args)]
struct ApproveArgs {
    /// The adjustment's id (adj-<shard>-<seq>).
    adjustment_id: String,
    /// Why (optional; recorded with the decision).
    #[arg(long)]
    reason: Option<String>,
    #[command(flatten)]
    write: WriteArgs,
}

#[derive(clap::Args)]
struct RejectArgs {
    /// The adjustment's id (adj-<shard>-<seq>).
    adjustment_id: String,
    /// Why (required; recorded with the decision).
    #[arg(long)]
    reason: String,
    #[command(flatten)]
    write: WriteArgs,
}

#[derive(clap::Args)]
struct ListArgs {
    /// Only adjustments in this state.
    #[arg(long, value_parser = ["PENDING", "APPLIED", "REJECTED", "EXPIRED"], ignore_case = true)]
    status: Option<String>,
    /// Only adjustments of this SKU.
    #[arg(long)]
    sku: Option<String>,
    #[arg(long, value_enum, default_value = "table")]
    format: ListFormat,
    #[command(flatten)]
    read: ReadArgs,
}

#[derive(clap::Args)]
struct ShowArgs {
    /// The adjustment's id (adj-<shard>-<seq>).
    adjustment_id: String,
    #[command(flatten)]
    read: ReadArgs,
}

fn parse_delta(s: &str) -> Result<i64, String> {
    match s.parse::<i64>() {
        Ok(0) => Err("the delta must not be 0".to_string()),
        Ok(delta) => Ok(delta),
        Err(_) => Err(format!("{s:?} is not a whole number of units (e.g. 5 or -3)")),
    }
}

fn decision(id: &str, action: &str) -> String {
    format!("/api/admin/adjustments/{}/{action}", encode(id))
}

pub fn run(args: AdjustArgs) -> ExitCode {
    let (command, result) = match args.command {
        AdjustCommand::Propose(a) => {
            let mut body = json!({ "skuId": a.sku, "delta": a.delta, "reason": a.reason });
            if let Some(warehouse) = &a.warehouse {
                body["warehouseId"] = json!(warehouse);
            }
            let sent = operator::send_write("adjust propose", &a.write, "/api/admin/adjustments", body);
            let shown = sent.map(|answer| match answer.json["adjustmentId"].as_str() {
                Some(id) if a.print_id => println!("{id}"),
                _ => answer.print(),
            });
            ("adjust propose", shown)
        }
        AdjustCommand::Approve(a) => {
            let mut body = json!({});
            if let Some(reason) = &a.reason {
                body["reason"] = json!(reason);
            }
            let path = decision(&a.adjustment_id, "approve");
            ("adjust approve", operator::write("adjust approve", &a.write, &path, body))
        }
        AdjustCommand::Reject(a) => {
            let path = decision(&a.adjustment_id, "reject");
            ("adjust reject", operator::write("adjust reject", &a.write, &path, json!({ "reason": a.reason })))
        }
        AdjustCommand::List(a) => ("adjust list", list(&a)),
        AdjustCommand::Show(a) => {
            let path = format!("/api/admin/adjustments/{}", encode(&a.adjustment_id));
            ("adjust show", operator::read(&a.read, &path).map(|answer| answer.print()))
        }
    };
    operator::finish(command, result)
}

fn list(args: &ListArgs) -> Result<(), Failure> {
    let headers = &["ID", "STATUS", "SKU", "WAREHOUSE", "DELTA", "PROPOSED_BY", "DECIDED_BY", "PROPOSED_AT", "REASON"];
    operator::list(&args.read, "adjustments", args.status.as_deref(), args.sku.as_deref(), args.format, headers, row)
}

fn row(a: &Value) -> Vec<String> {
    let decided_by = if a["approvedBy"].is_null() { &a["rejectedBy"] } else { &a["approvedBy"] };
    [
        &a["adjustmentId"],
        &a["status"],
        &a["skuId"],
        &a["warehouseId"],
        &a["delta"],
        &a["proposedBy"],
        decided_by,
        &a["proposedAt"],
        &a["reason"],
    ]
    .into_iter()
    .map(cell)
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_are_signed_and_not_zero() {
        assert_eq!(parse_delta("-3"), Ok(-3));
        assert_eq!(parse_delta("+5"), Ok(5));
        for bad in ["0", "", "1.5", "x"] {
            assert!(parse_delta(bad).is_err(), "{bad:?} parsed");
        }
    }
}
