//! Rebuilding a data dir from PostgreSQL, for a replacement machine
//! when the old one and its disk are gone.
//!
//! For each shard, the rows and holds PostgreSQL holds reflect the journal up
//! to the writer's checkpoint `C`. The restore writes them as a snapshot at
//! `C` and an empty journal, so the service resumes at `C + 1`, and the
//! writer, whose checkpoint is `C`, continues exactly where it stopped. What
//! is lost is what the writer had not applied at the moment of loss: the
//! recovery point equals the writer's lag then.
//!
//! Operator state comes back too: frozen rows, adjustments and transfers,
//! each row's breakdown rebuilt from them.
//!
//! Not restored: idempotency records (PostgreSQL does not keep them). After
//! a restore a retried write is evaluated afresh; one hold per order line
//! still holds, and confirm and release are idempotent by state.

use std::collections::BTreeMap;
use std::path::Path;

use inventory_core::{
    shard_for_sku, Adjustment, AdjustmentId, AdjustmentStatus, HoldImage, Levels, Millis, ReservationId,
    ReservationStatus, RowImage, RowOps, Shard, ShardConfig, ShardImage, Transfer, TransferId, TransferStatus, TxnKind,
    ROW_UNITS_MAX,
};
use inventory_journal::{snapshot, Backend, Store};
use tokio_postgres::Client;

use crate::schema::{migrate, Schema};
use crate::{connect, PersistenceError};

#[derive(Debug, Default)]
pub struct RestoreReport {
    pub shards: u16,
    pub rows: u64,
    pub holds: u64,
    /// Per shard: the journal sequence the restored state corresponds to.
    pub checkpoints: Vec<u64>,
    /// Per shard: the event relay's position as of its checkpoint (`None`
    /// when no relay ran). The events of the changes after it, up to the
    /// checkpoint, may never have reached the broker: [`changes_between`]
    /// gives them.
    pub relay_positions: Vec<Option<u64>>,
}

/// One change as `inventory_txn` holds it: everything its event carries.
#[derive(Clone, Debug)]
pub struct TxnRecord {
    pub shard: u16,
    pub seq: u64,
    pub txn_id: u64,
    pub kind: TxnKind,
    pub sku_id: String,
    pub warehouse_id: String,
    /// `Txn::qty`'s bits, so `qty as i64` is the change's delta.
    pub qty: u64,
    pub ref_id: String,
    pub order_id: String,
    pub detail: String,
    pub after: Levels,
    pub version: u64,
    pub at: Millis,
    pub trace_id: u128,
    pub operator: String,
}

/// The changes of `shard` journaled after `after` up to `upto`, in journal
/// order.
pub async fn changes_between(
    url: &str,
    schema: &Schema,
    shard: u16,
    after: u64,
    upto: u64,
) -> Result<Vec<TxnRecord>, PersistenceError> {
    let client = connect(url, schema).await?;
    let rows = client
        .query(
            "SELECT seq, txn_id, type, sku_id, warehouse_id, qty, ref_id, order_id, detail, after_qty, after_reserved,
                    after_sold, version, created_at, trace_id, operator
               FROM inventory_txn WHERE shard = $1 AND seq > $2 AND seq <= $3 ORDER BY seq, txn_id",
            &[&(shard as i16), &(after as i64), &(upto as i64)],
        )
        .await?;
    rows.iter()
        .map(|r| {
            let kind: String = r.get(2);
            let trace: String = r.get(14);
            let n = |i: usize| r.get::<_, i64>(i) as u64;
            Ok(TxnRecord {
                shard,
                seq: n(0),
                txn_id: n(1),
                kind: TxnKind::parse(&kind)
                    .ok_or_else(|| PersistenceError::Restore(format!("unknown txn type {kind:?}")))?,
                sku_id: r.get(3),
                warehouse_id: r.get(4),
                qty: n(5),
                ref_id: r.get(6),
                order_id: r.get(7),
                detail: r.get(8),
                after: Levels { available: n(9), reserved: n(10), sold: n(11) },
                version: n(12),
                at: ms(r.get(13)),
                trace_id: u128::from_str_radix(&trace, 16).unwrap_or(0),
                operator: r.get(15),
            })
        })
        .collect()
}

fn ms(t: std::time::SystemTime) -> Millis {
    t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as Millis).unwrap_or(0)
}

fn status(s: &str) -> Result<ReservationStatus, PersistenceError> {
    Ok(match s {
        "RESERVED" => ReservationStatus::Reserved,
        "CONFIRMED" => ReservationStatus::Confirmed,
        "RELEASED" => ReservationStatus::Released,
        "EXPIRED" => ReservationStatus::Expired,
        other => return Err(PersistenceError::Restore(format!("unknown reservation status {other:?}"))),
    })
}

/// Builds `data_dir` (which must not hold a journal yet) from PostgreSQL,
/// with an empty journal of kind `journal`.
pub async fn restore(
    url: &str,
    schema: &Schema,
    data_dir: &Path,
    shards: Option<u16>,
    journal: Backend,
) -> Result<RestoreReport, PersistenceError> {
    let journal_dir = data_dir.join("journal");
    if journal_dir.exists() {
        return Err(PersistenceError::Restore(format!(
            "{} already exists; restore into an empty data dir",
            journal_dir.display()
        )));
    }
    let mut client = connect(url, schema).await?;
    migrate(&mut client, schema).await?;
    let checkpoints = client
        .query(
            "SELECT shard, seq, max_hold_seq, max_txn_seq, last_at_ms, relay_seq FROM writer_checkpoint ORDER BY shard",
            &[],
        )
        .await?;
    if checkpoints.is_empty() {
        return Err(PersistenceError::Restore(format!(
            "schema {} has no writer checkpoints: nothing to restore",
            schema.name()
        )));
    }
    let count = checkpoints.len() as u16;
    if shards.is_some_and(|s| s != count) {
        return Err(PersistenceError::Restore(format!(
            "PostgreSQL holds {count} shards; --shards must be {count} or absent"
        )));
    }
    let mut images: Vec<ShardImage> = checkpoints
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let (hold, txn, at): (i64, i64, i64) = (row.get(2), row.get(3), row.get(4));
            ShardImage {
                index: i as u16,
                next_hold_seq: hold as u64 + 1,
                next_txn_seq: txn as u64 + 1,
                last_at: at as u64,
                ..ShardImage::default()
            }
        })
        .collect();
    let seqs: Vec<u64> = checkpoints.iter().map(|r| r.get::<_, i64>(1) as u64).collect();
    let relay_positions = checkpoints.iter().map(|r| r.get::<_, Option<i64>>(5).map(|s| s as u64)).collect();
    let mut report =
        RestoreReport { shards: count, checkpoints: seqs.clone(), relay_positions, ..RestoreReport::default() };
    // Position of each (sku, warehouse) row in its shard's image.
    let mut where_: BTreeMap<(String, String), u32> = BTreeMap::new();
    load_rows(&client, count, &mut images, &mut where_, &mut report).await?;
    load_holds(&client, &mut images, &where_, &mut report).await?;
    load_operator_state(&client, &mut images, &where_).await?;

    std::fs::create_dir_all(data_dir).map_err(|e| PersistenceError::Restore(e.to_string()))?;
    let snapshots = data_dir.join("snapshots");
    for (i, image) in images.into_iter().enumerate() {
        let shard = Shard::from_image(ShardConfig::new(i as u16), image.clone());
        shard
            .check_invariants()
            .map_err(|e| PersistenceError::Restore(format!("shard {i} would be inconsistent: {e}")))?;
        snapshot::write(&snapshots, i as u16, seqs[i], &image).map_err(|e| PersistenceError::Restore(e.to_string()))?;
    }
    let store = Store::open(&journal_dir, Some(journal), Some(count), count)?;
    store.flush()?;
    Ok(report)
}

async fn load_rows(
    client: &Client,
    shards: u16,
    images: &mut [ShardImage],
    where_: &mut BTreeMap<(String, String), u32>,
    report: &mut RestoreReport,
) -> Result<(), PersistenceError> {
    let rows = client
        .query("SELECT sku_id, warehouse_id, available, reserved, sold, version, updated_at FROM inventory ORDER BY sku_id, warehouse_id", &[])
        .await?;
    let mut last: Option<(String, u32)> = None;
    for r in rows {
        let (sku, warehouse): (String, String) = (r.get(0), r.get(1));
        let n = |i: usize| r.get::<_, i64>(i) as u64;
        let (available, reserved, sold) = (n(2), n(3), n(4));
        let received = available.saturating_add(reserved).saturating_add(sold);
        if received > ROW_UNITS_MAX {
            return Err(PersistenceError::Restore(format!(
                "{sku}/{warehouse}: available + reserved + sold = {received} exceeds the row limit of {ROW_UNITS_MAX} units"
            )));
        }
        let shard = shard_for_sku(&sku, shards) as usize;
        let image = &mut images[shard];
        // Rows arrive grouped by SKU: a new SKU starts a new entry.
        let sku_position = match &last {
            Some((s, i)) if *s == sku => *i,
            _ => image.push_sku(&sku),
        };
        let row = RowImage {
            sku: sku_position,
            warehouse: image.warehouse_position(&warehouse),
            on_hand: received as u32,
            reserved: reserved as u32,
            sold: sold as u32,
            version: n(5),
            updated_at: ms(r.get(6)),
        };
        where_.insert((sku.clone(), warehouse), image.rows.len() as u32);
        image.rows.push(row);
        last = Some((sku, sku_position));
        report.rows += 1;
    }
    Ok(())
}

async fn load_holds(
    client: &Client,
    images: &mut [ShardImage],
    where_: &BTreeMap<(String, String), u32>,
    report: &mut RestoreReport,
) -> Result<(), PersistenceError> {
    let holds = client
        .query(
            "SELECT reservation_id, order_id, sku_id, warehouse_id, qty, status, expire_at, idem_key, created_at, updated_at,
                    payment_id, release_reason FROM reservation",
            &[],
        )
        .await?;
    for r in holds {
        let id: String = r.get(0);
        let id: ReservationId =
            id.parse().map_err(|_| PersistenceError::Restore(format!("bad reservation id {id:?}")))?;
        let key = (r.get::<_, String>(2), r.get::<_, String>(3));
        let &row = where_.get(&key).ok_or_else(|| {
            PersistenceError::Restore(format!("hold {id} names {}/{}, which has no inventory row", key.0, key.1))
        })?;
        let image = images
            .get_mut(id.shard() as usize)
            .ok_or_else(|| PersistenceError::Restore(format!("hold {id} belongs to a shard that does not exist")))?;
        image.next_hold_seq = image.next_hold_seq.max(id.seq() + 1);
        let qty = r.get::<_, i64>(4) as u64;
        if qty > ROW_UNITS_MAX {
            return Err(PersistenceError::Restore(format!(
                "hold {id}: qty {qty} exceeds the row limit of {ROW_UNITS_MAX}"
            )));
        }
        image.holds.push(HoldImage {
            seq: id.seq(),
            order_id: r.get(1),
            row,
            qty,
            status: status(&r.get::<_, String>(5))?,
            expire_at: ms(r.get(6)),
            idem_key: r.get(7),
            created_at: ms(r.get(8)),
            updated_at: ms(r.get(9)),
            payment_id: r.get(10),
            release_reason: r.get(11),
        });
        report.holds += 1;
    }
    for image in images.iter_mut() {
        image.holds.sort_by_key(|h| h.seq);
    }
    Ok(())
}

fn levels(v: Option<Vec<i64>>) -> Levels {
    match v.as_deref() {
        Some([available, reserved, sold]) => {
            Levels { available: *available as u64, reserved: *reserved as u64, sold: *sold as u64 }
        }
        _ => Levels::default(),
    }
}

fn restore_error(message: String) -> PersistenceError {
    PersistenceError::Restore(message)
}

/// Frozen rows, adjustments and transfers, and each row's breakdown rebuilt
/// from them (the rows' counters already include their effect).
async fn load_operator_state(
    client: &Client,
    images: &mut [ShardImage],
    where_: &BTreeMap<(String, String), u32>,
) -> Result<(), PersistenceError> {
    let mut ops: Vec<BTreeMap<u32, RowOps>> = vec![BTreeMap::new(); images.len()];
    let position = |sku: &str, warehouse: &str, what: &str| {
        where_
            .get(&(sku.to_string(), warehouse.to_string()))
            .copied()
            .ok_or_else(|| restore_error(format!("{what} names {sku}/{warehouse}, which has no inventory row")))
    };
    let shards = images.len() as u16;
    let shard_of = |sku: &str| shard_for_sku(sku, shards) as usize;
    for r in client.query("SELECT sku_id, warehouse_id FROM inventory WHERE frozen", &[]).await? {
        let (sku, warehouse): (String, String) = (r.get(0), r.get(1));
        let row = position(&sku, &warehouse, "a frozen row")?;
        ops[shard_of(&sku)].entry(row).or_default().frozen = true;
    }
    let adjustments = client
        .query(
            "SELECT adjustment_id, sku_id, warehouse_id, delta, reason, status, proposed_by, proposed_at, expires_at,
                    proposed_levels, decided_by, decided_at, decision_reason, before_levels, after_levels
               FROM inventory_adjustment",
            &[],
        )
        .await?;
    for r in adjustments {
        let id: String = r.get(0);
        let id: AdjustmentId = id.parse().map_err(|_| restore_error(format!("bad adjustment id {id:?}")))?;
        let (sku, warehouse): (String, String) = (r.get(1), r.get(2));
        let row = position(&sku, &warehouse, &format!("adjustment {id}"))?;
        let status = match r.get::<_, &str>(5) {
            "PENDING" => AdjustmentStatus::Pending,
            "APPLIED" => AdjustmentStatus::Applied,
            "REJECTED" => AdjustmentStatus::Rejected,
            "EXPIRED" => AdjustmentStatus::Expired,
            other => return Err(restore_error(format!("adjustment {id}: unknown status {other:?}"))),
        };
        let delta: i64 = r.get(3);
        let shard = id.shard() as usize;
        if shard != shard_of(&sku) {
            return Err(restore_error(format!("adjustment {id} is not on the shard of {sku}")));
        }
        if status == AdjustmentStatus::Applied {
            ops[shard].entry(row).or_default().adjusted += delta;
        }
        let image = &mut images[shard];
        image.ops.next_adjustment_seq = image.ops.next_adjustment_seq.max(id.seq() + 1);
        image.ops.adjustments.push(Adjustment {
            seq: id.seq(),
            row,
            delta,
            reason: r.get(4),
            proposed_by: r.get(6),
            proposed_at: ms(r.get(7)),
            expires_at: ms(r.get(8)),
            proposed_levels: levels(r.get(9)),
            status,
            decided_by: r.get(10),
            decided_at: r.get::<_, Option<std::time::SystemTime>>(11).map_or(0, ms),
            decision_reason: r.get(12),
            before: levels(r.get(13)),
            after: levels(r.get(14)),
        });
    }
    let transfers = client
        .query(
            "SELECT transfer_id, sku_id, from_warehouse_id, to_warehouse_id, qty, reason, status, created_by,
                    created_at, expected_at, finished_by, finished_at, finish_reason
               FROM inventory_transfer",
            &[],
        )
        .await?;
    for r in transfers {
        let id: String = r.get(0);
        let id: TransferId = id.parse().map_err(|_| restore_error(format!("bad transfer id {id:?}")))?;
        let sku: String = r.get(1);
        let from = position(&sku, r.get(2), &format!("transfer {id}"))?;
        let to = position(&sku, r.get(3), &format!("transfer {id}"))?;
        let qty = r.get::<_, i64>(4) as u64;
        let status = match r.get::<_, &str>(6) {
            "IN_TRANSIT" => TransferStatus::InTransit,
            "ARRIVED" => TransferStatus::Arrived,
            "CANCELLED" => TransferStatus::Cancelled,
            other => return Err(restore_error(format!("transfer {id}: unknown status {other:?}"))),
        };
        let shard = id.shard() as usize;
        if shard != shard_of(&sku) {
            return Err(restore_error(format!("transfer {id} is not on the shard of {sku}")));
        }
        match status {
            TransferStatus::InTransit => {
                ops[shard].entry(from).or_default().transferred_out += qty;
                ops[shard].entry(to).or_default().in_transit += qty;
            }
            TransferStatus::Arrived => {
                ops[shard].entry(from).or_default().transferred_out += qty;
                ops[shard].entry(to).or_default().transferred_in += qty;
            }
            TransferStatus::Cancelled => {}
        }
        let image = &mut images[shard];
        image.ops.next_transfer_seq = image.ops.next_transfer_seq.max(id.seq() + 1);
        image.ops.transfers.push(Transfer {
            seq: id.seq(),
            from_row: from,
            to_row: to,
            qty,
            reason: r.get(5),
            created_by: r.get(7),
            created_at: ms(r.get(8)),
            expected_at: r.get::<_, Option<std::time::SystemTime>>(9).map(ms),
            status,
            finished_by: r.get(10),
            finished_at: r.get::<_, Option<std::time::SystemTime>>(11).map_or(0, ms),
            finish_reason: r.get(12),
        });
    }
    for (image, rows) in images.iter_mut().zip(ops) {
        image.ops.rows = rows.into_iter().filter(|(_, o)| !o.is_empty()).collect();
        image.ops.adjustments.sort_by_key(|a| a.seq);
        image.ops.transfers.sort_by_key(|t| t.seq);
        image.ops.next_adjustment_seq = image.ops.next_adjustment_seq.max(1);
        image.ops.next_transfer_seq = image.ops.next_transfer_seq.max(1);
    }
    Ok(())
}
