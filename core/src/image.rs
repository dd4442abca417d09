//! A shard's whole state as one serialisable value: what snapshots store.
//!
//! The layout is part of the snapshot format (rkyv): append fields only
//! with a format version bump in the snapshot file header.

use crate::ids::Millis;
use crate::outcome::Outcome;
use crate::state::{ReservationStatus, StockRow};

#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ShardImage {
    pub index: u16,
    pub next_hold_seq: u64,
    pub next_txn_seq: u64,
    /// Time of the last command applied.
    pub last_at: Millis,
    /// SKUs in dense-index order (holds refer to them by position).
    pub skus: Vec<SkuImage>,
    pub holds: Vec<HoldImage>,
    pub idem: Vec<IdemImage>,
}

#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct SkuImage {
    pub id: String,
    pub rows: Vec<(String, StockRow)>,
}

#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct HoldImage {
    pub seq: u64,
    pub order_id: String,
    pub sku: u32,
    pub warehouse: u16,
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
