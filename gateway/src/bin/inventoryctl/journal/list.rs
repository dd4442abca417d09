//! `inventoryctl journal list`: one row (or one JSON line) per entry,
//! filtered by shard, SKU, order, reservation and time range. Several
//! shards are merged by time; entries of different shards in the same
//! millisecond have no order between them and are listed lower shard first.

use std::io::Write;
use std::process::ExitCode;

use inventory_core::{shard_for_sku, Command, Entry, Millis, ReservationId, Txn, TxnKind};
use serde_json::{json, Value};

use super::args::{parse_reservation, Format, Source};
use super::entries::{note_truncated, Merged};
use super::format::{kv, shown, trace_hex, txn_json};
use super::open::open;
use super::time::{fmt_time, parse_time};
use super::CtlError;

/// Expire entries list at most this many reservation ids in a table row.
const TABLE_IDS_MAX: usize = 5;

#[derive(clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    source: Source,
    /// Only this shard.
    #[arg(long)]
    shard: Option<u16>,
    /// Only entries that change this SKU.
    #[arg(long)]
    sku: Option<String>,
    /// Only entries that change a hold of this order.
    #[arg(long)]
    order: Option<String>,
    /// Only entries that create or change this reservation (rsv-<shard>-<seq>).
    #[arg(long, value_parser = parse_reservation)]
    reservation: Option<ReservationId>,
    /// Only entries applied at or after this time (RFC 3339 UTC or ms since the epoch).
    #[arg(long, value_parser = parse_time)]
    from: Option<Millis>,
    /// Only entries applied at or before this time (RFC 3339 UTC or ms since the epoch).
    #[arg(long, value_parser = parse_time)]
    to: Option<Millis>,
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Stop after this many entries.
    #[arg(long)]
    limit: Option<usize>,
}

/// Which entries `list` shows.
#[derive(Default)]
struct Filter {
    sku: Option<String>,
    order: Option<String>,
    reservation: Option<ReservationId>,
    from: Option<Millis>,
    to: Option<Millis>,
}

impl Filter {
    fn matches(&self, entry: &Entry) -> bool {
        if self.from.is_some_and(|from| entry.at < from) || self.to.is_some_and(|to| entry.at > to) {
            return false;
        }
        if let Some(sku) = &self.sku {
            let named = match &entry.command {
                Command::Receive(c) => c.sku_id == *sku,
                Command::Reserve(c) => c.sku_id == *sku,
                Command::ReserveAs(c) => c.reserve.sku_id == *sku,
                Command::SetPolicy(c) => c.sku_id == *sku,
                Command::PrepareOrder(c) => c.lines.iter().any(|l| l.sku_id == *sku),
                Command::DecideOrder(_) | Command::FinishOrder(_) | Command::ExpireOrders(_) => false,
                Command::ReceiveBatch(c) => c.items.iter().any(|i| i.sku_id == *sku),
                Command::Freeze(c) => c.sku_id == *sku,
                Command::ProposeAdjustment(c) => c.sku_id == *sku,
                Command::DispatchTransfer(c) => c.sku_id == *sku,
                // These name holds, adjustments or transfers; only their
                // txns name the SKU.
                Command::Confirm(_)
                | Command::Release(_)
                | Command::Expire(_)
                | Command::Evict(_)
                | Command::DecideAdjustment(_)
                | Command::ExpireAdjustments(_)
                | Command::FinishTransfer(_) => false,
                Command::Repair(c) => c.sku_id == *sku,
            };
            if !named && !entry.txns.iter().any(|t| t.sku_id == *sku) {
                return false;
            }
        }
        if let Some(order) = &self.order {
            let named = match &entry.command {
                Command::Reserve(c) => c.order_id == *order,
                Command::ReserveAs(c) => c.reserve.order_id == *order,
                Command::PrepareOrder(c) => c.order_id == *order,
                Command::DecideOrder(c) => c.order_id == *order,
                Command::FinishOrder(c) => c.order_id == *order,
                Command::ExpireOrders(c) => c.order_ids.contains(order),
                // Only their txns name an order, if any.
                _ => false,
            };
            let of_hold = |t: &Txn| changes_hold(t.kind) && t.order_id == *order;
            if !named && !entry.txns.iter().any(of_hold) {
                return false;
            }
        }
        if let Some(id) = self.reservation {
            let named = match &entry.command {
                Command::Confirm(c) => c.reservation_id == id,
                Command::Release(c) => c.reservation_id == id,
                Command::Expire(c) => c.ids.contains(&id),
                // A reserve names the hold it creates only in its txn.
                _ => false,
            };
            let rendered = id.to_string();
            if !named && !entry.txns.iter().any(|t| changes_hold(t.kind) && t.ref_id == rendered) {
                return false;
            }
        }
        true
    }
}

/// Whether a txn of this kind changes a hold, so that its `ref_id` is the
/// hold's reservation id (a receipt's is the caller's reference, which may
/// look like one).
fn changes_hold(kind: TxnKind) -> bool {
    matches!(kind, TxnKind::Reserve | TxnKind::Confirm | TxnKind::Release)
}

pub fn run(out: &mut impl Write, args: ListArgs) -> Result<ExitCode, CtlError> {
    let opened = open(&args.source.data_dir)?;
    let mut shards: Vec<u16> = (0..opened.shards()).collect();
    if let Some(shard) = args.shard {
        opened.check_shard(shard)?;
        shards.retain(|s| *s == shard);
    }
    if let Some(id) = args.reservation {
        opened.check_shard(id.shard())?;
        shards.retain(|s| *s == id.shard());
    }
    if let Some(sku) = &args.sku {
        let home = shard_for_sku(sku, opened.shards());
        shards.retain(|s| *s == home);
    }
    let filter =
        Filter { sku: args.sku, order: args.order, reservation: args.reservation, from: args.from, to: args.to };
    let journals = shards.iter().map(|s| opened.journal(*s)).collect::<Result<Vec<_>, _>>()?;
    note_truncated(&journals)?;
    let limit = args.limit.unwrap_or(usize::MAX);
    if args.format == Format::Table {
        writeln!(out, "{:>5} {:>8} {:<24} {:<8} {:>4}  DETAILS", "SHARD", "SEQ", "TIME", "COMMAND", "TXNS")?;
    }
    let mut matched = 0usize;
    for item in Merged::new(&journals)? {
        if matched >= limit {
            break;
        }
        let (shard, entry) = item?;
        if !filter.matches(&entry) {
            continue;
        }
        matched += 1;
        match args.format {
            Format::Table => writeln!(
                out,
                "{:>5} {:>8} {:<24} {:<8} {:>4}  {}",
                shard,
                entry.seq,
                fmt_time(entry.at),
                entry.command.name(),
                entry.txns.len(),
                entry_details(&entry)
            )?,
            Format::Jsonl => writeln!(out, "{}", entry_json(shard, &entry))?,
        }
    }
    if args.format == Format::Table {
        writeln!(out, "{matched} entries")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The key fields of an entry for a table row. Confirm, release and expire
/// name the SKU and order only in their txns.
fn entry_details(entry: &Entry) -> String {
    let first = entry.txns.first();
    let mut parts = match &entry.command {
        Command::Receive(c) => {
            let mut p = vec![kv("sku", &c.sku_id), kv("warehouse", &c.warehouse_id), format!("qty={}", c.qty)];
            if !c.reference.is_empty() {
                p.push(kv("ref", &c.reference));
            }
            p
        }
        Command::Reserve(_) | Command::ReserveAs(_) => {
            let c = entry.command.as_reserve().expect("a reserve");
            let mut p = vec![kv("order", &c.order_id), kv("sku", &c.sku_id), kv("warehouse", &c.warehouse_id)];
            p.push(format!("qty={}", c.qty));
            if let Command::ReserveAs(a) = &entry.command {
                p.extend((!a.buyer_id.is_empty()).then(|| kv("buyer", &a.buyer_id)));
                p.extend((!a.channel.is_empty()).then(|| kv("channel", &a.channel)));
            }
            if let Some(t) = first {
                p.push(kv("reservation", &t.ref_id));
            }
            p
        }
        Command::PrepareOrder(c) => {
            let mut p = vec![kv("order", &c.order_id), format!("lines={}", c.lines.len())];
            p.push(skus_cell(c.lines.iter().map(|l| l.sku_id.as_str())));
            p.push(format!("shards={:?}", c.shards));
            p
        }
        Command::DecideOrder(c) => {
            let decision = match &c.decision {
                inventory_core::OrderDecision::Commit => "commit".to_string(),
                inventory_core::OrderDecision::Abort => "abort".to_string(),
                inventory_core::OrderDecision::Confirm { payment_id } => format!("confirm payment={payment_id}"),
                inventory_core::OrderDecision::Release { reason } => format!("release reason={reason}"),
            };
            vec![kv("order", &c.order_id), decision]
        }
        Command::FinishOrder(c) => vec![kv("order", &c.order_id), kv("state", c.state.as_str())],
        Command::ExpireOrders(c) => vec![format!("orders={}", c.order_ids.join(","))],
        Command::SetPolicy(c) => {
            let policy = c.policy.as_ref().map_or("none".to_string(), |p| p.describe());
            vec![kv("sku", &c.sku_id), kv("policy", &policy)]
        }
        Command::Confirm(c) => {
            let mut p = vec![format!("reservation={}", c.reservation_id), kv("payment", &c.payment_id)];
            p.extend(hold_owner(first));
            p
        }
        Command::Release(c) => {
            let mut p = vec![format!("reservation={}", c.reservation_id), kv("reason", &c.reason)];
            p.extend(hold_owner(first));
            p
        }
        Command::Expire(c) => {
            let mut ids: Vec<String> = c.ids.iter().take(TABLE_IDS_MAX).map(|id| id.to_string()).collect();
            if c.ids.len() > TABLE_IDS_MAX {
                ids.push(format!("+{} more", c.ids.len() - TABLE_IDS_MAX));
            }
            vec![format!("reservations={}", ids.join(","))]
        }
        Command::ReceiveBatch(c) => {
            let units: u64 = c.items.iter().map(|i| i.qty).sum();
            let mut p = vec![format!("items={}", c.items.len()), format!("units={units}")];
            if !c.reference.is_empty() {
                p.push(kv("ref", &c.reference));
            }
            p.push(skus_cell(c.items.iter().map(|i| i.sku_id.as_str())));
            p
        }
        Command::Evict(c) => {
            vec![
                format!("holds_before={}", fmt_time(c.holds_before)),
                format!("keys_before={}", fmt_time(c.keys_before)),
            ]
        }
        Command::Freeze(c) => {
            let mut p = vec![kv("sku", &c.sku_id)];
            p.extend(c.warehouse_id.as_deref().map(|w| kv("warehouse", w)));
            p.push(kv("reason", &c.reason));
            p
        }
        Command::ProposeAdjustment(c) => vec![
            kv("sku", &c.sku_id),
            kv("warehouse", &c.warehouse_id),
            format!("delta={}", c.delta),
            kv("reason", &c.reason),
            kv("adjustment", first.map_or("", |t| t.ref_id.as_str())),
        ],
        Command::DecideAdjustment(c) => {
            let mut p = vec![format!("adjustment={}", c.adjustment_id)];
            p.push(if c.approve { "approve".to_string() } else { kv("reject", &c.reason) });
            p.extend(first.map(|t| kv("sku", &t.sku_id)));
            p
        }
        Command::ExpireAdjustments(c) => {
            vec![format!("adjustments={}", c.ids.iter().map(|id| id.to_string()).collect::<Vec<_>>().join(","))]
        }
        Command::DispatchTransfer(c) => vec![
            kv("sku", &c.sku_id),
            kv("from", &c.from_warehouse_id),
            kv("to", &c.to_warehouse_id),
            format!("qty={}", c.qty),
            kv("transfer", first.map_or("", |t| t.ref_id.as_str())),
        ],
        Command::Repair(c) => vec![kv("sku", &c.sku_id), kv("warehouse", &c.warehouse_id), kv("detail", &c.detail)],
        Command::FinishTransfer(c) => {
            let mut p = vec![format!("transfer={}", c.transfer_id)];
            p.push(if c.arrive { "arrived".to_string() } else { kv("cancel", &c.reason) });
            p.extend(first.map(|t| kv("sku", &t.sku_id)));
            p
        }
    };
    if !entry.operator.is_empty() {
        parts.push(kv("operator", &entry.operator));
    }
    parts.join(" ")
}

/// `order=… sku=…` of the hold a confirm or release changed, from its txn.
fn hold_owner(txn: Option<&Txn>) -> Vec<String> {
    txn.map(|t| vec![kv("order", &t.order_id), kv("sku", &t.sku_id)]).unwrap_or_default()
}

/// `skus=a,b,c,+N more` (at most [`TABLE_IDS_MAX`] named, repeats dropped).
fn skus_cell<'a>(skus: impl Iterator<Item = &'a str>) -> String {
    let mut named: Vec<&str> = Vec::new();
    let mut more = 0usize;
    for sku in skus {
        if named.contains(&sku) {
            continue;
        }
        if named.len() < TABLE_IDS_MAX {
            named.push(sku);
        } else {
            more += 1;
        }
    }
    let mut cells: Vec<String> = named.into_iter().map(shown).collect();
    if more > 0 {
        cells.push(format!("+{more} more"));
    }
    format!("skus={}", cells.join(","))
}

fn command_json(command: &Command) -> Value {
    match command {
        Command::Receive(c) => json!({
            "type": "receive", "skuId": c.sku_id, "warehouseId": c.warehouse_id, "qty": c.qty,
            "idemKey": c.idem_key, "ref": c.reference,
        }),
        Command::Reserve(c) => json!({
            "type": "reserve", "orderId": c.order_id, "skuId": c.sku_id, "warehouseId": c.warehouse_id,
            "qty": c.qty, "idemKey": c.idem_key, "ttlMs": c.ttl_ms, "ttlExplicit": c.ttl_explicit,
        }),
        Command::Confirm(c) => json!({
            "type": "confirm", "reservationId": c.reservation_id.to_string(), "paymentId": c.payment_id,
            "idemKey": c.idem_key,
        }),
        Command::Release(c) => json!({
            "type": "release", "reservationId": c.reservation_id.to_string(), "reason": c.reason,
            "idemKey": c.idem_key,
        }),
        Command::Expire(c) => json!({
            "type": "expire", "reservationIds": c.ids.iter().map(|id| id.to_string()).collect::<Vec<_>>(),
        }),
        Command::ReceiveBatch(c) => json!({
            "type": "receive_batch", "idemKey": c.idem_key, "ref": c.reference,
            "items": c.items.iter().map(|i| json!({"skuId": i.sku_id, "warehouseId": i.warehouse_id, "qty": i.qty}))
                .collect::<Vec<_>>(),
        }),
        Command::Evict(c) => json!({
            "type": "evict", "holdsBeforeMs": c.holds_before, "keysBeforeMs": c.keys_before,
        }),
        Command::Freeze(c) => json!({
            "type": command.name(), "skuId": c.sku_id, "warehouseId": c.warehouse_id, "reason": c.reason,
            "idemKey": c.idem_key,
        }),
        Command::ProposeAdjustment(c) => json!({
            "type": command.name(), "skuId": c.sku_id, "warehouseId": c.warehouse_id, "delta": c.delta,
            "reason": c.reason, "operator": c.operator, "ttlMs": c.ttl_ms, "idemKey": c.idem_key,
        }),
        Command::DecideAdjustment(c) => json!({
            "type": command.name(), "adjustmentId": c.adjustment_id.to_string(), "operator": c.operator,
            "reason": c.reason, "idemKey": c.idem_key,
        }),
        Command::ExpireAdjustments(c) => json!({
            "type": command.name(), "adjustmentIds": c.ids.iter().map(|id| id.to_string()).collect::<Vec<_>>(),
        }),
        Command::DispatchTransfer(c) => json!({
            "type": command.name(), "skuId": c.sku_id, "fromWarehouseId": c.from_warehouse_id,
            "toWarehouseId": c.to_warehouse_id, "qty": c.qty, "reason": c.reason, "operator": c.operator,
            "expectedInMs": c.expected_in_ms, "idemKey": c.idem_key,
        }),
        Command::Repair(c) => json!({
            "type": command.name(), "skuId": c.sku_id, "warehouseId": c.warehouse_id, "detail": c.detail,
        }),
        Command::FinishTransfer(c) => json!({
            "type": command.name(), "transferId": c.transfer_id.to_string(), "operator": c.operator,
            "reason": c.reason, "idemKey": c.idem_key,
        }),
        Command::ReserveAs(c) => {
            let r = &c.reserve;
            json!({
                "type": "reserve", "orderId": r.order_id, "skuId": r.sku_id, "warehouseId": r.warehouse_id,
                "qty": r.qty, "idemKey": r.idem_key, "ttlMs": r.ttl_ms, "ttlExplicit": r.ttl_explicit,
                "buyerId": c.buyer_id, "channel": c.channel,
            })
        }
        Command::PrepareOrder(c) => json!({
            "type": command.name(), "orderId": c.order_id, "buyerId": c.buyer_id, "channel": c.channel,
            "expireAtMs": c.expire_at, "shards": c.shards, "idemKey": c.idem_key,
            "lines": c.lines.iter().map(|l| json!({"skuId": l.sku_id, "warehouseId": l.warehouse_id, "qty": l.qty}))
                .collect::<Vec<_>>(),
        }),
        Command::DecideOrder(c) => json!({
            "type": command.name(), "orderId": c.order_id, "shards": c.shards, "expireAtMs": c.expire_at,
            "decision": match &c.decision {
                inventory_core::OrderDecision::Commit => json!({"kind": "commit"}),
                inventory_core::OrderDecision::Abort => json!({"kind": "abort"}),
                inventory_core::OrderDecision::Confirm { payment_id } => json!({"kind": "confirm", "paymentId": payment_id}),
                inventory_core::OrderDecision::Release { reason } => json!({"kind": "release", "reason": reason}),
            },
        }),
        Command::FinishOrder(c) => json!({
            "type": command.name(), "orderId": c.order_id, "state": c.state.as_str(), "detail": c.detail,
        }),
        Command::ExpireOrders(c) => json!({ "type": command.name(), "orderIds": c.order_ids }),
        Command::SetPolicy(c) => json!({
            "type": command.name(), "skuId": c.sku_id, "operator": c.operator, "idemKey": c.idem_key,
            "policy": c.policy.as_ref().map(|p| json!({
                "maxPerBuyer": p.max_per_buyer, "saleStartsAtMs": p.sale_starts_at, "saleEndsAtMs": p.sale_ends_at,
                "channelQuotas": p.channel_quotas.iter().map(|(c, u)| (c.clone(), json!(u))).collect::<serde_json::Map<_, _>>(),
            })),
        }),
    }
}

fn entry_json(shard: u16, entry: &Entry) -> Value {
    json!({
        "shard": shard, "seq": entry.seq, "atMs": entry.at, "at": fmt_time(entry.at),
        "traceId": trace_hex(entry.trace_id), "operator": entry.operator,
        "command": command_json(&entry.command),
        "txns": entry.txns.iter().map(txn_json).collect::<Vec<_>>(),
    })
}
