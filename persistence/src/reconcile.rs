//! The PostgreSQL side of reconciliation: the rows as PostgreSQL holds
//! them, each row rebuilt from `inventory_txn`, and repairs with an audit
//! record.

use std::collections::BTreeMap;

use inventory_core::{Levels, Millis};
use serde_json::json;
use tokio_postgres::Client;

use crate::schema::to_system_time;
use crate::PersistenceError;

pub type RowKey = (String, String);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PgRow {
    pub levels: Levels,
    pub version: u64,
}

/// Every `inventory` row.
pub async fn inventory_rows(client: &Client) -> Result<BTreeMap<RowKey, PgRow>, PersistenceError> {
    let rows =
        client.query("SELECT sku_id, warehouse_id, available, reserved, sold, version FROM inventory", &[]).await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let levels = Levels {
                available: r.get::<_, i64>(2) as u64,
                reserved: r.get::<_, i64>(3) as u64,
                sold: r.get::<_, i64>(4) as u64,
            };
            ((r.get(0), r.get(1)), PgRow { levels, version: r.get::<_, i64>(5) as u64 })
        })
        .collect())
}

/// A row rebuilt from its transaction history in PostgreSQL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum History {
    /// Consecutive versions, each change starting where the last ended.
    Rebuilt(PgRow),
    /// The chain breaks: a change is missing, repeated or out of order.
    Broken(String),
}

/// Rebuilds every row from `inventory_txn`, checking that versions are
/// consecutive and each change starts from the previous one's result. (After
/// retention drops old partitions, the rebuild starts at the oldest kept
/// change.)
pub async fn txn_history(client: &Client) -> Result<BTreeMap<RowKey, History>, PersistenceError> {
    let rows = client
        .query(
            "SELECT sku_id, warehouse_id, version, before_qty, before_reserved, before_sold, after_qty, after_reserved, after_sold
               FROM inventory_txn ORDER BY sku_id, warehouse_id, version, txn_id",
            &[],
        )
        .await?;
    let mut out: BTreeMap<RowKey, History> = BTreeMap::new();
    for r in rows {
        let key: RowKey = (r.get(0), r.get(1));
        let version = r.get::<_, i64>(2) as u64;
        let n = |i: usize| r.get::<_, i64>(i) as u64;
        let before = Levels { available: n(3), reserved: n(4), sold: n(5) };
        let after = Levels { available: n(6), reserved: n(7), sold: n(8) };
        match out.get(&key) {
            None => {
                out.insert(key, History::Rebuilt(PgRow { levels: after, version }));
            }
            Some(History::Broken(_)) => {}
            Some(History::Rebuilt(prev)) => {
                let next = if version != prev.version + 1 {
                    History::Broken(format!("version {} follows version {}", version, prev.version))
                } else if before != prev.levels {
                    History::Broken(format!(
                        "change to version {version} does not start where version {} ended",
                        prev.version
                    ))
                } else {
                    History::Rebuilt(PgRow { levels: after, version })
                };
                out.insert(key, next);
            }
        }
    }
    Ok(out)
}

/// Per-shard writer checkpoints.
pub async fn checkpoints(client: &Client) -> Result<BTreeMap<u16, u64>, PersistenceError> {
    let rows = client.query("SELECT shard, seq FROM writer_checkpoint", &[]).await?;
    Ok(rows.into_iter().map(|r| (r.get::<_, i16>(0) as u16, r.get::<_, i64>(1) as u64)).collect())
}

/// Sets a row to the correct value and records the repair.
pub async fn repair_row(
    client: &mut Client,
    key: &RowKey,
    before: Option<PgRow>,
    after: PgRow,
    at: Millis,
    reason: &str,
) -> Result<(), PersistenceError> {
    let tx = client.transaction().await?;
    let l = after.levels;
    tx.execute(
        "INSERT INTO inventory (sku_id, warehouse_id, available, reserved, sold, version, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (sku_id, warehouse_id) DO UPDATE SET available = EXCLUDED.available, reserved = EXCLUDED.reserved,
             sold = EXCLUDED.sold, version = EXCLUDED.version, updated_at = EXCLUDED.updated_at",
        &[
            &key.0,
            &key.1,
            &(l.available as i64),
            &(l.reserved as i64),
            &(l.sold as i64),
            &(after.version as i64),
            &to_system_time(at),
        ],
    )
    .await?;
    let image = |r: PgRow| json!({"available": r.levels.available, "reserved": r.levels.reserved, "sold": r.levels.sold, "version": r.version});
    tx.execute(
        "INSERT INTO reconcile_audit (at, sku_id, warehouse_id, side, before, after, reason) VALUES ($1, $2, $3, 'postgres', $4, $5, $6)",
        &[&to_system_time(at), &key.0, &key.1, &before.map(image), &image(after), &reason],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}
