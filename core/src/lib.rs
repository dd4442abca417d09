//! The deterministic reservation core.
//!
//! Owns: stock rows per `(sku, warehouse)` with `available / reserved / sold`,
//! holds (reservations) with their expiry, one-hold-per-order-line, and the
//! idempotency table. [`Shard::apply`] turns a [`Command`] applied at a given
//! time into an [`Outcome`] and the [`Txn`] records of every counter change.
//!
//! Never: reads a clock, does I/O, spawns threads or takes locks. Time is an
//! input that only moves forward, so replaying the journal's [`Entry`]
//! records reproduces the state exactly. Depends on no async runtime, file
//! system or network crate; keep it that way.

mod cold;
mod command;
mod grow;
mod ids;
mod image;
mod ops;
mod order;
mod outcome;
mod sale;
mod shard;
mod state;
mod table;

pub use cold::{
    cold_changes, hashes_of_u128, ColdChange, ColdFacts, ColdHold, ColdIdem, ColdQuery, KeyFilter, SliceFilters,
    TierConfig, UnknownHold,
};
pub use command::{
    Command, Confirm, DecideAdjustment, DecideOrder, DispatchTransfer, Evict, Expire, ExpireAdjustments, ExpireOrders,
    FinishOrder, FinishTransfer, Freeze, PrepareOrder, ProposeAdjustment, Query, Receive, ReceiveBatch, ReceiveItem,
    Release, Repair, Reserve, ReserveAs, SetPolicy,
};
pub use ids::{
    key_hash, order_hash, InvalidReservationId, Millis, ReservationId, DEFAULT_WAREHOUSE, HOUR_MS, IDEMPOTENCY_TTL_MS,
    REASON_TIMEOUT, SECOND_MS,
};
pub use image::{ColdImage, HoldImage, IdemImage, RowImage, SaleImage, ShardImage, SkuSaleImage, TagImage};
pub use ops::{
    Adjustment, AdjustmentId, AdjustmentStatus, AdjustmentView, InvalidAdjustmentId, InvalidTransferId, OpsImage,
    RowOps, Transfer, TransferId, TransferStatus, TransferView,
};
pub use order::{
    OrderDecision, OrderLine, OrderLineView, OrderRecord, OrderState, ORDER_LINES_MAX, REASON_ORDER_ABORTED,
};
pub use outcome::{Applied, Outcome, Rejection};
pub use sale::{PolicyView, SalePolicy, CHANNELS_MAX};
pub use shard::{
    Dump, LineRefusal, QueryResult, Shard, ShardConfig, ShardStats, HOLD_RETENTION_MS, WAREHOUSES_PER_SKU_MAX,
};
pub use state::{
    ArchivedLevels, Entry, Levels, ReservationStatus, ReservationView, SkuStock, StockRow, Txn, TxnKind, WarehouseStock,
};
pub use table::{INDEX_PARTS, ROW_MILLIS_MAX, ROW_UNITS_MAX, SKU_ID_BYTES_MAX, WAREHOUSE_IDS_MAX};

/// Which shard owns an SKU: a stable hash of the id, modulo the shard count.
/// Stable across versions and machines (XXH3), because the journal layout
/// depends on it.
pub fn shard_for_sku(sku_id: &str, shards: u16) -> u16 {
    assert!(shards > 0);
    (xxhash_rust::xxh3::xxh3_64(sku_id.as_bytes()) % shards as u64) as u16
}

#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;
