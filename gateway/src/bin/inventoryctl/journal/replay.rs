//! `inventoryctl journal replay`: the state of one SKU or one order after
//! replaying up to a point in time or a `shard:seq`.

use std::io::Write;
use std::process::ExitCode;

use inventory_core::{shard_for_sku, Millis, ReservationView};
use inventory_journal::Until;
use serde_json::{json, Value};

use super::args::{parse_shard_seq, Format, Source, Target};
use super::format::{kv, shown};
use super::open::{open, Opened};
use super::rebuild::replay_to;
use super::time::{fmt_time, parse_time};
use super::CtlError;

#[derive(clap::Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    source: Source,
    #[command(flatten)]
    target: Target,
    /// Replay entries applied at or before this time (RFC 3339 UTC or ms
    /// since the epoch). Default: the whole journal.
    #[arg(long, value_parser = parse_time, conflicts_with = "until_seq")]
    until: Option<Millis>,
    /// Replay shard SHARD up to and including entry SEQ, and every other
    /// shard up to that entry's time.
    #[arg(long, value_name = "SHARD:SEQ", value_parser = parse_shard_seq)]
    until_seq: Option<(u16, u64)>,
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

/// How far each shard is replayed, and what to call that point.
struct Point {
    until_seq: Option<(u16, u64)>,
    /// For `--until`, or the time of the `--until-seq` entry.
    at: Option<Millis>,
}

impl Point {
    fn resolve(opened: &Opened, until: Option<Millis>, until_seq: Option<(u16, u64)>) -> Result<Point, CtlError> {
        let Some((shard, seq)) = until_seq else {
            return Ok(Point { until_seq: None, at: until });
        };
        opened.check_shard(shard)?;
        let journal = opened.journal(shard)?;
        let entry = journal.read_from(seq)?.next().transpose()?.filter(|e| e.seq == seq);
        match entry {
            Some(entry) => Ok(Point { until_seq: Some((shard, seq)), at: Some(entry.at) }),
            None => {
                let first = journal.first_seq()?;
                let truncated = match first {
                    Some(first) if first > seq => format!(" (its journal starts at seq {first})"),
                    _ => String::new(),
                };
                Err(CtlError::Usage(format!("shard {shard} has no entry with seq {seq}{truncated}")))
            }
        }
    }

    fn until(&self, shard: u16) -> Until {
        match (self.until_seq, self.at) {
            (Some((s, seq)), _) if s == shard => Until::Seq(seq),
            (_, Some(at)) => Until::Time(at),
            _ => Until::End,
        }
    }

    fn describe(&self) -> String {
        match (self.until_seq, self.at) {
            (Some((shard, seq)), Some(at)) => format!("shard {shard} seq {seq} ({})", fmt_time(at)),
            (_, Some(at)) => fmt_time(at),
            _ => "the end of the journal".to_string(),
        }
    }
}

pub fn run(out: &mut impl Write, args: ReplayArgs) -> Result<ExitCode, CtlError> {
    let opened = open(&args.source.data_dir)?;
    let point = Point::resolve(&opened, args.until, args.until_seq)?;
    match (args.target.sku, args.target.order) {
        (Some(sku), _) => replay_sku(out, &opened, &point, &sku, args.format),
        (None, Some(order)) => replay_order(out, &opened, &point, &order, args.format),
        (None, None) => Err(CtlError::Usage("give --sku or --order".into())),
    }
}

fn replay_sku(
    out: &mut impl Write,
    opened: &Opened,
    point: &Point,
    sku: &str,
    format: Format,
) -> Result<ExitCode, CtlError> {
    let home = shard_for_sku(sku, opened.shards());
    let (shard, replayed) = replay_to(opened, &opened.journal(home)?, point.until(home))?;
    let stock = shard.stock(sku);
    if format == Format::Jsonl {
        let warehouses: Vec<Value> = stock
            .iter()
            .flat_map(|s| s.warehouses.iter())
            .map(|w| {
                json!({
                    "warehouseId": w.warehouse_id, "available": w.row.levels.available,
                    "reserved": w.row.levels.reserved, "sold": w.row.levels.sold, "version": w.row.version,
                    "updatedAt": fmt_time(w.row.updated_at),
                })
            })
            .collect();
        let total = stock.as_ref().map(|s| s.total()).unwrap_or_default();
        let line = json!({
            "skuId": sku, "shard": home, "found": stock.is_some(),
            "replayedToSeq": replayed.seq,
            "available": total.available, "reserved": total.reserved, "sold": total.sold,
            "warehouses": warehouses,
        });
        writeln!(out, "{line}")?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(out, "SKU {} as of {}; {}", shown(sku), point.describe(), replayed.describe())?;
    let Some(stock) = stock else {
        writeln!(out, "no stock rows for this SKU at that point")?;
        return Ok(ExitCode::SUCCESS);
    };
    writeln!(
        out,
        "{:<20} {:>10} {:>10} {:>10} {:>8}  UPDATED",
        "WAREHOUSE", "AVAILABLE", "RESERVED", "SOLD", "VERSION"
    )?;
    for w in &stock.warehouses {
        let l = w.row.levels;
        writeln!(
            out,
            "{:<20} {:>10} {:>10} {:>10} {:>8}  {}",
            shown(&w.warehouse_id),
            l.available,
            l.reserved,
            l.sold,
            w.row.version,
            fmt_time(w.row.updated_at)
        )?;
    }
    let t = stock.total();
    writeln!(out, "{:<20} {:>10} {:>10} {:>10}", "TOTAL", t.available, t.reserved, t.sold)?;
    Ok(ExitCode::SUCCESS)
}

fn replay_order(
    out: &mut impl Write,
    opened: &Opened,
    point: &Point,
    order: &str,
    format: Format,
) -> Result<ExitCode, CtlError> {
    let mut holds: Vec<ReservationView> = Vec::new();
    let mut notes = Vec::new();
    for index in 0..opened.shards() {
        let (shard, replayed) = replay_to(opened, &opened.journal(index)?, point.until(index))?;
        holds.extend(shard.order(order));
        notes.push(replayed.describe());
    }
    holds.sort_by_key(|h| (h.created_at, h.reservation_id));
    if format == Format::Jsonl {
        for h in &holds {
            writeln!(out, "{}", hold_json(h))?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(out, "order {} as of {}; {}", shown(order), point.describe(), notes.join(", "))?;
    if holds.is_empty() {
        writeln!(out, "no holds for this order at that point")?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "{:<16} {:<20} {:<12} {:>6} {:<10} {:<24} {:<24} {:<24} DETAIL",
        "RESERVATION", "SKU", "WAREHOUSE", "QTY", "STATUS", "CREATED", "EXPIRES", "UPDATED"
    )?;
    for h in &holds {
        let detail = match (&h.payment_id, &h.release_reason) {
            (Some(p), _) => kv("payment", p),
            (_, Some(r)) => kv("reason", r),
            _ => String::new(),
        };
        writeln!(
            out,
            "{:<16} {:<20} {:<12} {:>6} {:<10} {:<24} {:<24} {:<24} {}",
            h.reservation_id.to_string(),
            shown(&h.sku_id),
            shown(&h.warehouse_id),
            h.qty,
            h.status.as_str(),
            fmt_time(h.created_at),
            fmt_time(h.expire_at),
            fmt_time(h.updated_at),
            detail
        )?;
    }
    writeln!(out, "{} holds", holds.len())?;
    Ok(ExitCode::SUCCESS)
}

fn hold_json(h: &ReservationView) -> Value {
    json!({
        "reservationId": h.reservation_id.to_string(), "orderId": h.order_id, "skuId": h.sku_id,
        "warehouseId": h.warehouse_id, "qty": h.qty, "status": h.status.as_str(),
        "createdAt": fmt_time(h.created_at), "expireAt": fmt_time(h.expire_at), "updatedAt": fmt_time(h.updated_at),
        "paymentId": h.payment_id, "releaseReason": h.release_reason,
    })
}
