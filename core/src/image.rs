//! A shard's whole state as one serialisable value: what snapshots store.
//!
//! The layout is part of the snapshot format (rkyv): change it only with a
//! format version bump in the snapshot file header.
//!
//! Columnar, so that loading allocates per column, not per row: the SKU ids
//! are one string with end offsets, warehouse ids a small table, and stock
//! rows plain fixed-size records that refer to both by position.

use crate::cold::SliceFilters;
use crate::ids::Millis;
use crate::ops::{OpsImage, RowOps};
use crate::outcome::Outcome;
use crate::sale::SalePolicy;
use crate::state::{Levels, ReservationStatus, StockRow};

#[derive(Clone, Debug, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ShardImage {
    pub index: u16,
    pub next_hold_seq: u64,
    pub next_txn_seq: u64,
    /// Time of the last command applied.
    pub last_at: Millis,
    /// Every SKU id, concatenated in the order the SKUs were created.
    pub sku_ids: String,
    /// End of each SKU id in `sku_ids`: SKU `i` is
    /// `sku_ids[sku_ends[i - 1]..sku_ends[i]]` (from 0 for `i == 0`).
    pub sku_ends: Vec<u32>,
    /// Warehouse ids in the order the shard first saw them.
    pub warehouses: Vec<String>,
    /// Stock rows in creation order (holds refer to them by position). An
    /// SKU's first row comes before its other rows and SKUs first appear in
    /// SKU order; an SKU's rows, in this order, are its warehouses in the
    /// order they were added.
    pub rows: Vec<RowImage>,
    pub holds: Vec<HoldImage>,
    pub idem: Vec<IdemImage>,
    /// The filters of what moved to the cold tier. Stored in a section of
    /// its own after the image (the snapshot file's layout), so images
    /// written before the cold tier read unchanged.
    #[rkyv(with = rkyv::with::Skip)]
    pub cold: ColdImage,
    /// What operators did: row state, adjustments, transfers. Stored in a
    /// section of its own after the cold section.
    #[rkyv(with = rkyv::with::Skip)]
    pub ops: OpsImage,
    /// Sale policies and what they counted. Stored in a section of its own
    /// after the operator section.
    #[rkyv(with = rkyv::with::Skip)]
    pub sale: SaleImage,
}

/// A shard's sale policies and orders, as snapshots store them.
#[derive(Clone, Debug, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct SaleImage {
    /// By first row.
    pub skus: Vec<SkuSaleImage>,
    /// The tags of the `RESERVED` holds a policy counted, by hold.
    pub tags: Vec<TagImage>,
    pub next_generation: u64,
    /// The records of the orders this shard is home of.
    pub orders: Vec<crate::OrderRecord>,
    /// The `RESERVED` lines of orders: `(hold, home shard, tentative)`.
    pub order_lines: Vec<(u64, u16, bool)>,
}

#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct SkuSaleImage {
    /// Position of the SKU's first row in `ShardImage::rows`.
    pub first: u32,
    pub policy: SalePolicy,
    pub generation: u64,
    /// Units held or sold per channel, by name.
    pub channels: Vec<(String, u64)>,
    /// Units held or sold per buyer (hash of the buyer id), by hash.
    pub buyers: Vec<(u64, u32)>,
}

#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct TagImage {
    pub seq: u64,
    pub first: u32,
    pub generation: u64,
    pub buyer: Option<u64>,
    pub channel: Option<String>,
}

/// Units a row received, given its units on hand and what operators did
/// to it.
pub(crate) fn received(on_hand: u64, ops: &RowOps) -> u64 {
    u64::try_from(on_hand as i128 - ops.net()).expect("a row received a negative number of units")
}

/// The keys of what a shard moved to the cold tier, by time slice.
#[derive(Clone, Debug, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ColdImage {
    /// Idempotency key hashes, filed by when the record expires.
    pub keys: SliceFilters,
    /// Hold sequences, filed by when the finished hold's retention ends.
    pub holds: SliceFilters,
    /// Order-id hashes of those holds.
    pub orders: SliceFilters,
}

/// One stock row. `available` is `on_hand - reserved - sold`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct RowImage {
    /// Position of the SKU in `ShardImage::sku_ends`.
    pub sku: u32,
    /// Position of the warehouse in `ShardImage::warehouses`.
    pub warehouse: u16,
    /// Units in the row: received, adjusted and transferred.
    pub on_hand: u32,
    pub reserved: u32,
    pub sold: u32,
    pub version: u64,
    pub updated_at: Millis,
}

impl RowImage {
    /// The row as the public [`StockRow`], given what operators did to it.
    pub fn stock_row(&self, ops: RowOps) -> StockRow {
        let (on_hand, reserved, sold) = (self.on_hand as u64, self.reserved as u64, self.sold as u64);
        StockRow {
            levels: Levels { available: on_hand.saturating_sub(reserved + sold), reserved, sold },
            received: received(on_hand, &ops),
            ops,
            version: self.version,
            updated_at: self.updated_at,
        }
    }
}

impl ShardImage {
    /// Number of SKUs.
    pub fn sku_count(&self) -> usize {
        self.sku_ends.len()
    }

    /// The id of SKU `i`.
    pub fn sku_id(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.sku_ends[i - 1] as usize };
        &self.sku_ids[start..self.sku_ends[i] as usize]
    }

    /// Appends an SKU id; returns its position.
    pub fn push_sku(&mut self, id: &str) -> u32 {
        self.sku_ids.push_str(id);
        let end = u32::try_from(self.sku_ids.len()).expect("SKU ids of one shard exceed 4 GiB");
        self.sku_ends.push(end);
        (self.sku_ends.len() - 1) as u32
    }

    /// The position of a warehouse id, added if new.
    pub fn warehouse_position(&mut self, id: &str) -> u16 {
        match self.warehouses.iter().position(|w| w == id) {
            Some(i) => i as u16,
            None => {
                self.warehouses.push(id.to_string());
                u16::try_from(self.warehouses.len() - 1).expect("more than 65536 warehouse ids in one shard")
            }
        }
    }

    /// Every stock row as `(sku, warehouse, row)`, in image order.
    pub fn stock_rows(&self) -> impl Iterator<Item = (&str, &str, StockRow)> + '_ {
        let ops: rustc_hash::FxHashMap<u32, RowOps> = self.ops.rows.iter().copied().collect();
        self.rows.iter().enumerate().map(move |(i, r)| {
            let row = r.stock_row(ops.get(&(i as u32)).copied().unwrap_or_default());
            (self.sku_id(r.sku as usize), self.warehouses[r.warehouse as usize].as_str(), row)
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct HoldImage {
    pub seq: u64,
    pub order_id: String,
    /// Position of the hold's stock row in `ShardImage::rows`.
    pub row: u32,
    pub qty: u64,
    pub expire_at: Millis,
    pub idem_key: String,
    pub created_at: Millis,
    pub status: ReservationStatus,
    pub updated_at: Millis,
    pub payment_id: Option<String>,
    pub release_reason: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct IdemImage {
    pub key: u128,
    pub fingerprint: u64,
    pub outcome: Outcome,
    pub expires_at: Millis,
}
