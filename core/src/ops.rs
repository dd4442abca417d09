//! Operator controls: what a stock row records beyond its counters (frozen,
//! adjusted, transferred), stock adjustments under two-person approval, and
//! transfers between the warehouses of one SKU.
//!
//! All of it is rare next to reserves: a shard keeps it beside the stock
//! table (a row with no operator state has no entry), and every record stays
//! in memory and in snapshots for the shard's life.

use std::fmt;
use std::str::FromStr;

use crate::ids::{Millis, ReservationId};
use crate::state::Levels;

/// What operators did to one stock row. A row's counters already include
/// all of it: `received` as queries report it is the row's units on hand
/// less `adjusted` and `transferred_in`, plus `transferred_out`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct RowOps {
    /// Reserves of this row are refused (`SKU_FROZEN`).
    pub frozen: bool,
    /// Net units added (positive) or written off (negative) by applied
    /// adjustments.
    pub adjusted: i64,
    /// Units that arrived from other warehouses.
    pub transferred_in: u64,
    /// Units dispatched to other warehouses and not brought back by a
    /// cancellation (in transit or arrived).
    pub transferred_out: u64,
    /// Units on their way to this row: dispatched, not yet arrived.
    pub in_transit: u64,
}

impl RowOps {
    pub fn is_empty(&self) -> bool {
        *self == RowOps::default()
    }

    /// Units the operators' changes add to the row's units on hand.
    pub fn net(&self) -> i128 {
        self.adjusted as i128 + self.transferred_in as i128 - self.transferred_out as i128
    }
}

macro_rules! shard_seq_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $invalid:ident) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, rkyv::Archive, rkyv::Serialize,
            rkyv::Deserialize,
        )]
        pub struct $name(pub u64);

        impl $name {
            pub fn new(shard: u16, seq: u64) -> $name {
                $name(ReservationId::new(shard, seq).0)
            }

            pub fn shard(self) -> u16 {
                ReservationId(self.0).shard()
            }

            pub fn seq(self) -> u64 {
                ReservationId(self.0).seq()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "-{}-{}"), self.shard(), self.seq())
            }
        }

        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $invalid;

        impl FromStr for $name {
            type Err = $invalid;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let rest = s.strip_prefix(concat!($prefix, "-")).ok_or($invalid)?;
                let id: ReservationId = format!("rsv-{rest}").parse().map_err(|_| $invalid)?;
                Ok($name(id.0))
            }
        }
    };
}

shard_seq_id!(
    /// An adjustment's id: its shard (the SKU's) and the shard's adjustment
    /// sequence, rendered `adj-<shard>-<seq>`.
    AdjustmentId,
    "adj",
    InvalidAdjustmentId
);

shard_seq_id!(
    /// A transfer's id: its shard (the SKU's) and the shard's transfer
    /// sequence, rendered `trf-<shard>-<seq>`.
    TransferId,
    "trf",
    InvalidTransferId
);

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub enum AdjustmentStatus {
    Pending,
    Applied,
    Rejected,
    Expired,
}

impl AdjustmentStatus {
    pub const ALL: [AdjustmentStatus; 4] =
        [AdjustmentStatus::Pending, AdjustmentStatus::Applied, AdjustmentStatus::Rejected, AdjustmentStatus::Expired];

    pub fn as_str(self) -> &'static str {
        match self {
            AdjustmentStatus::Pending => "PENDING",
            AdjustmentStatus::Applied => "APPLIED",
            AdjustmentStatus::Rejected => "REJECTED",
            AdjustmentStatus::Expired => "EXPIRED",
        }
    }
}

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub enum TransferStatus {
    InTransit,
    Arrived,
    Cancelled,
}

impl TransferStatus {
    pub const ALL: [TransferStatus; 3] =
        [TransferStatus::InTransit, TransferStatus::Arrived, TransferStatus::Cancelled];

    pub fn as_str(self) -> &'static str {
        match self {
            TransferStatus::InTransit => "IN_TRANSIT",
            TransferStatus::Arrived => "ARRIVED",
            TransferStatus::Cancelled => "CANCELLED",
        }
    }
}

/// A proposed change of one row's units by `delta`, applied only once a
/// second operator approves it.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Adjustment {
    pub seq: u64,
    /// The stock row, by position.
    pub row: u32,
    pub delta: i64,
    pub reason: String,
    pub proposed_by: String,
    pub proposed_at: Millis,
    /// A pending adjustment expires at this time.
    pub expires_at: Millis,
    /// The row's levels when it was proposed.
    pub proposed_levels: Levels,
    pub status: AdjustmentStatus,
    /// Who approved or rejected it (empty while pending, and for one that
    /// expired).
    pub decided_by: String,
    /// When it left `PENDING` (0 while pending).
    pub decided_at: Millis,
    /// The reason the deciding operator gave (required to reject).
    pub decision_reason: String,
    /// The row's levels just before and after it was applied.
    pub before: Levels,
    pub after: Levels,
}

/// Units moving from one warehouse row of an SKU to another.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Transfer {
    pub seq: u64,
    pub from_row: u32,
    pub to_row: u32,
    pub qty: u64,
    pub reason: String,
    pub created_by: String,
    pub created_at: Millis,
    /// When it is expected to arrive (none: no expectation, never overdue).
    pub expected_at: Option<Millis>,
    pub status: TransferStatus,
    /// Who marked it arrived or cancelled it, when, and why (a cancellation).
    pub finished_by: String,
    pub finished_at: Millis,
    pub finish_reason: String,
}

impl Transfer {
    /// In transit past its expected arrival at `at`.
    pub fn overdue(&self, at: Millis) -> bool {
        self.status == TransferStatus::InTransit && self.expected_at.is_some_and(|e| e < at)
    }
}

/// An adjustment as queries return it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdjustmentView {
    pub id: AdjustmentId,
    pub sku_id: String,
    pub warehouse_id: String,
    pub adjustment: Adjustment,
}

/// A transfer as queries return it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferView {
    pub id: TransferId,
    pub sku_id: String,
    pub from_warehouse_id: String,
    pub to_warehouse_id: String,
    pub transfer: Transfer,
}

/// A shard's operator state as snapshots store it (a section of its own
/// after the image and the cold section).
#[derive(Clone, Debug, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct OpsImage {
    /// `(row, what operators did to it)`, by row.
    pub rows: Vec<(u32, RowOps)>,
    pub adjustments: Vec<Adjustment>,
    pub transfers: Vec<Transfer>,
    pub next_adjustment_seq: u64,
    pub next_transfer_seq: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operator_ids_round_trip_and_refuse_each_other() {
        let adj = AdjustmentId::new(3, 17);
        assert_eq!(adj.to_string(), "adj-3-17");
        assert_eq!("adj-3-17".parse::<AdjustmentId>(), Ok(adj));
        assert_eq!(adj.shard(), 3);
        let trf = TransferId::new(1, 2);
        assert_eq!(trf.to_string(), "trf-1-2");
        assert_eq!("trf-1-2".parse::<TransferId>(), Ok(trf));
        for bad in ["", "trf-1-2", "adj-", "adj-1", "adj-1-0", "adj-a-1", "rsv-1-2", "adj-1-2-3"] {
            assert!(bad.parse::<AdjustmentId>().is_err(), "{bad:?} parsed");
        }
        assert!("adj-1-2".parse::<TransferId>().is_err());
    }
}
