//! `inventoryctl journal history`: the transaction records (every change
//! of a stock row, with its levels before and after) of one SKU or one
//! order, oldest first.

use std::io::Write;
use std::process::ExitCode;

use inventory_core::{shard_for_sku, Txn};
use serde_json::json;

use super::args::{Format, Source, Target};
use super::entries::{note_truncated, Merged};
use super::format::{dash, fmt_levels, shown, trace_hex, txn_json};
use super::open::open;
use super::time::fmt_time;
use super::CtlError;

#[derive(clap::Args)]
pub struct HistoryArgs {
    #[command(flatten)]
    source: Source,
    #[command(flatten)]
    target: Target,
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

pub fn run(out: &mut impl Write, args: HistoryArgs) -> Result<ExitCode, CtlError> {
    let opened = open(&args.source.data_dir)?;
    let shards: Vec<u16> = match &args.target.sku {
        Some(sku) => vec![shard_for_sku(sku, opened.shards())],
        None => (0..opened.shards()).collect(),
    };
    let journals = shards.iter().map(|s| opened.journal(*s)).collect::<Result<Vec<_>, _>>()?;
    let wanted = |t: &Txn| match (&args.target.sku, &args.target.order) {
        (Some(sku), _) => t.sku_id == *sku,
        (None, Some(order)) => t.order_id == *order,
        (None, None) => false,
    };
    note_truncated(&journals)?;
    if args.format == Format::Table {
        writeln!(
            out,
            "{:<24} {:>15} {:<8} {:<16} {:<12} {:>6} {:<16} {:<12} {:<12} {:<14} {:<14} {:>7} {:<32} OPERATOR",
            "TIME",
            "TXN",
            "TYPE",
            "SKU",
            "WAREHOUSE",
            "QTY",
            "REF",
            "ORDER",
            "DETAIL",
            "BEFORE a/r/s",
            "AFTER a/r/s",
            "VERSION",
            "TRACE"
        )?;
    }
    let mut matched = 0u64;
    for item in Merged::new(&journals)? {
        let (shard, entry) = item?;
        for t in entry.txns.iter().filter(|t| wanted(t)) {
            matched += 1;
            match args.format {
                Format::Table => writeln!(
                    out,
                    "{:<24} {:>15} {:<8} {:<16} {:<12} {:>6} {:<16} {:<12} {:<12} {:<14} {:<14} {:>7} {:<32} {}",
                    fmt_time(t.at),
                    t.txn_id,
                    t.kind.as_str(),
                    shown(&t.sku_id),
                    shown(&t.warehouse_id),
                    t.qty,
                    dash(&t.ref_id),
                    dash(&t.order_id),
                    dash(&t.detail),
                    fmt_levels(&t.before),
                    fmt_levels(&t.after),
                    t.version,
                    if entry.trace_id == 0 { "-".to_string() } else { trace_hex(entry.trace_id) },
                    dash(&entry.operator)
                )?,
                Format::Jsonl => {
                    let mut line = txn_json(t);
                    line["shard"] = json!(shard);
                    line["seq"] = json!(entry.seq);
                    line["command"] = json!(entry.command.name());
                    line["traceId"] = json!(trace_hex(entry.trace_id));
                    line["operator"] = json!(entry.operator);
                    writeln!(out, "{line}")?;
                }
            }
        }
    }
    if args.format == Format::Table {
        writeln!(out, "{matched} txns")?;
    }
    Ok(ExitCode::SUCCESS)
}
