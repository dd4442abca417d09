//! `inventoryd restore`: a data dir rebuilt from PostgreSQL, with the event
//! relay's starting point.
//!
//! The restored journal starts after each shard's writer checkpoint, so the
//! relay starts there too. The changes between the relay's position as
//! PostgreSQL last recorded it and the checkpoint are in PostgreSQL but
//! maybe not in the broker: their events, rebuilt from `inventory_txn` with
//! the same ids and bytes, become the relay's backlog, published first.

use std::path::Path;

use inventory_events::position::Positions;
use inventory_events::relay::to_outgoing;
use inventory_events::Change;
use inventory_journal::Backend;
use inventory_persistence::restore::{changes_between, restore, RestoreReport, TxnRecord};
use inventory_persistence::{PersistenceError, Schema};

/// What a restore did.
pub struct Restored {
    pub report: RestoreReport,
    /// Events left for the relay to publish again, over all shards.
    pub backlog: u64,
}

pub async fn restore_data_dir(
    url: &str,
    schema: &Schema,
    data_dir: &Path,
    shards: Option<u16>,
    journal: Backend,
    events_source: &str,
) -> Result<Restored, PersistenceError> {
    let report = restore(url, schema, data_dir, shards, journal).await?;
    let io = |e: std::io::Error| PersistenceError::Restore(format!("event relay position: {e}"));
    let positions = Positions::open(data_dir.join("events")).map_err(io)?;
    let mut backlog = 0;
    for (shard, &checkpoint) in report.checkpoints.iter().enumerate() {
        let shard = shard as u16;
        if let Some(relayed) = report.relay_positions[shard as usize].filter(|&r| r < checkpoint) {
            let events: Vec<_> = changes_between(url, schema, shard, relayed, checkpoint)
                .await?
                .iter()
                .map(|record| to_outgoing(&change_of(record), events_source))
                .collect();
            backlog += events.len() as u64;
            positions.store_backlog(shard, &events).map_err(io)?;
        }
        positions.store(shard, checkpoint, 0).map_err(io)?;
    }
    Ok(Restored { report, backlog })
}

fn change_of(r: &TxnRecord) -> Change {
    Change {
        shard: r.shard,
        seq: r.seq,
        txn_id: r.txn_id,
        kind: r.kind,
        sku_id: r.sku_id.clone(),
        warehouse_id: r.warehouse_id.clone(),
        qty: r.qty as i64,
        ref_id: r.ref_id.clone(),
        order_id: r.order_id.clone(),
        detail: r.detail.clone(),
        after: r.after,
        version: r.version,
        at: r.at,
        trace_id: r.trace_id,
        operator: r.operator.clone(),
    }
}
