//! The records a shard owns and the transaction records it emits.

use crate::cold::ColdFacts;
use crate::command::Command;
use crate::ids::{Millis, ReservationId};
use crate::ops::RowOps;

/// The three counters of a stock row.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Levels {
    pub available: u64,
    pub reserved: u64,
    pub sold: u64,
}

impl Levels {
    pub fn total(&self) -> u64 {
        self.available + self.reserved + self.sold
    }
}

/// One `(sku, warehouse)` stock row. Invariant:
/// `levels.available + levels.reserved + levels.sold == received +
/// ops.adjusted + ops.transferred_in - ops.transferred_out`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct StockRow {
    pub levels: Levels,
    /// Total ever received into this row.
    pub received: u64,
    /// What operators did to it (frozen, adjusted, transferred).
    pub ops: RowOps,
    /// Bumped on every change of the row.
    pub version: u64,
    pub updated_at: Millis,
}

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub enum ReservationStatus {
    Reserved,
    Confirmed,
    Released,
    Expired,
}

impl ReservationStatus {
    pub const ALL: [ReservationStatus; 4] = [
        ReservationStatus::Reserved,
        ReservationStatus::Confirmed,
        ReservationStatus::Released,
        ReservationStatus::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ReservationStatus::Reserved => "RESERVED",
            ReservationStatus::Confirmed => "CONFIRMED",
            ReservationStatus::Released => "RELEASED",
            ReservationStatus::Expired => "EXPIRED",
        }
    }
}

/// A hold as the shard stores it: its stock row by position. `qty` fits in
/// 32 bits because it is at most the row's `received`.
#[derive(Clone, Debug)]
pub(crate) struct Hold {
    pub order_id: Box<str>,
    pub row: u32,
    pub qty: u32,
    pub expire_at: Millis,
    pub idem_key: Box<str>,
    pub created_at: Millis,
    pub change: HoldChange,
}

/// The part of a hold that changes after creation (what the undo log saves).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HoldChange {
    pub status: ReservationStatus,
    pub updated_at: Millis,
    /// The payment id of a `CONFIRMED` hold, the release reason of a
    /// `RELEASED` or `EXPIRED` one (a hold never has both).
    pub detail: Option<Box<str>>,
}

impl HoldChange {
    pub fn payment_id(&self) -> Option<&str> {
        self.detail.as_deref().filter(|_| self.status == ReservationStatus::Confirmed)
    }

    pub fn release_reason(&self) -> Option<&str> {
        self.detail
            .as_deref()
            .filter(|_| matches!(self.status, ReservationStatus::Released | ReservationStatus::Expired))
    }
}

/// A reservation as queries return it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReservationView {
    pub reservation_id: ReservationId,
    pub order_id: String,
    pub sku_id: String,
    pub warehouse_id: String,
    pub qty: u64,
    pub status: ReservationStatus,
    pub expire_at: Millis,
    pub idem_key: String,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub payment_id: Option<String>,
    pub release_reason: Option<String>,
}

/// One warehouse row of an SKU as queries return it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WarehouseStock {
    pub warehouse_id: String,
    pub row: StockRow,
}

/// Every row of one SKU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkuStock {
    pub sku_id: String,
    pub warehouses: Vec<WarehouseStock>,
    /// The SKU's sale policy, if it has one.
    pub policy: Option<crate::sale::PolicyView>,
}

impl SkuStock {
    pub fn total(&self) -> Levels {
        self.warehouses.iter().fold(Levels::default(), |t, w| Levels {
            available: t.available + w.row.levels.available,
            reserved: t.reserved + w.row.levels.reserved,
            sold: t.sold + w.row.levels.sold,
        })
    }

    pub fn updated_at(&self) -> Millis {
        self.warehouses.iter().map(|w| w.row.updated_at).max().unwrap_or(0)
    }
}

/// Kind of counter change. Stable numbering: part of the journal format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum TxnKind {
    /// 0: `available += qty`.
    Receive,
    /// 1: `available -= qty; reserved += qty`.
    Reserve,
    /// 2: `reserved -= qty; sold += qty`.
    Confirm,
    /// 3: `reserved -= qty; available += qty` (reason `TIMEOUT` on expiry).
    Release,
    /// 4: the row is frozen (no counter changes; `qty` 0).
    Freeze,
    /// 5: the row is unfrozen.
    Unfreeze,
    /// 6: an adjustment is proposed for the row; nothing changes yet.
    /// `qty` is the signed delta's bits ([`Txn::delta`]).
    AdjustProposed,
    /// 7: an approved adjustment: `available += delta`.
    AdjustApplied,
    /// 8: a pending adjustment is rejected.
    AdjustRejected,
    /// 9: a pending adjustment expired.
    AdjustExpired,
    /// 10: `available -= qty` at the source of a transfer.
    TransferOut,
    /// 11: a transfer is on its way to this row (`in_transit += qty`).
    TransferIncoming,
    /// 12: a transfer arrived: `in_transit -= qty; available += qty`.
    TransferIn,
    /// 13: a cancelled transfer's units are back at its source:
    /// `available += qty`.
    TransferReturned,
    /// 14: a cancelled transfer no longer comes to this row
    /// (`in_transit -= qty`).
    TransferCancelled,
    /// 15: reconciliation repaired a copy of this row (no counter changes;
    /// `detail` says what the copy held).
    Repair,
    /// 16: the SKU's sale policy was set (on its first row; no counter
    /// changes; `detail` describes the policy).
    PolicySet,
    /// 17: the SKU's sale policy was removed.
    PolicyRemoved,
}

impl TxnKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TxnKind::Receive => "RECEIVE",
            TxnKind::Reserve => "RESERVE",
            TxnKind::Confirm => "CONFIRM",
            TxnKind::Release => "RELEASE",
            TxnKind::Freeze => "FREEZE",
            TxnKind::Unfreeze => "UNFREEZE",
            TxnKind::AdjustProposed => "ADJUST_PROPOSED",
            TxnKind::AdjustApplied => "ADJUST",
            TxnKind::AdjustRejected => "ADJUST_REJECTED",
            TxnKind::AdjustExpired => "ADJUST_EXPIRED",
            TxnKind::TransferOut => "TRANSFER_OUT",
            TxnKind::TransferIncoming => "TRANSFER_INCOMING",
            TxnKind::TransferIn => "TRANSFER_IN",
            TxnKind::TransferReturned => "TRANSFER_RETURNED",
            TxnKind::TransferCancelled => "TRANSFER_CANCELLED",
            TxnKind::Repair => "REPAIR",
            TxnKind::PolicySet => "POLICY_SET",
            TxnKind::PolicyRemoved => "POLICY_REMOVED",
        }
    }

    /// Every kind, in code order.
    pub const ALL: [TxnKind; 18] = [
        TxnKind::Receive,
        TxnKind::Reserve,
        TxnKind::Confirm,
        TxnKind::Release,
        TxnKind::Freeze,
        TxnKind::Unfreeze,
        TxnKind::AdjustProposed,
        TxnKind::AdjustApplied,
        TxnKind::AdjustRejected,
        TxnKind::AdjustExpired,
        TxnKind::TransferOut,
        TxnKind::TransferIncoming,
        TxnKind::TransferIn,
        TxnKind::TransferReturned,
        TxnKind::TransferCancelled,
        TxnKind::Repair,
        TxnKind::PolicySet,
        TxnKind::PolicyRemoved,
    ];

    /// The kind [`as_str`](Self::as_str) names.
    pub fn parse(name: &str) -> Option<TxnKind> {
        TxnKind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// The kinds of an operator's action (not a receipt's, not a hold's).
    pub fn is_operator(self) -> bool {
        !matches!(self, TxnKind::Receive | TxnKind::Reserve | TxnKind::Confirm | TxnKind::Release)
    }

    /// The kinds of an adjustment, whose `qty` is a signed delta.
    pub fn is_adjustment(self) -> bool {
        matches!(
            self,
            TxnKind::AdjustProposed | TxnKind::AdjustApplied | TxnKind::AdjustRejected | TxnKind::AdjustExpired
        )
    }
}

/// One change of a stock row's counters: the unit of history, audit
/// and reconciliation.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Txn {
    /// Unique across shards: shard in the high 16 bits.
    pub txn_id: u64,
    pub kind: TxnKind,
    pub sku_id: String,
    pub warehouse_id: String,
    /// Units moved; for an adjustment's kinds, the signed delta as `i64`
    /// bits ([`Txn::delta`]).
    pub qty: u64,
    /// Reservation id for hold changes, the caller's reference for receipts,
    /// the adjustment's or transfer's id for theirs, the idempotency key
    /// for a freeze.
    pub ref_id: String,
    /// Order of the hold; for a transfer's txns, the warehouse at its other
    /// end; for an adjustment's, the operator who proposed it; empty
    /// otherwise.
    pub order_id: String,
    /// Release reason (`TIMEOUT` on expiry), payment id on confirm, the
    /// operator's reason for operator actions.
    pub detail: String,
    pub before: Levels,
    pub after: Levels,
    /// The row's version after this change.
    pub version: u64,
    pub at: Millis,
}

impl Txn {
    /// The signed change of units this txn records: an adjustment's delta,
    /// or `qty` for any other kind.
    pub fn delta(&self) -> i64 {
        // Other kinds' quantities are at most a row's 32-bit counters.
        self.qty as i64
    }
}

/// The durable record of one applied command: what a journal stores. Replay
/// re-applies `command` at `at` and must reproduce `txns` exactly.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Entry {
    /// Per-shard sequence, gapless from 1.
    pub seq: u64,
    pub at: Millis,
    /// W3C trace id of the request that caused it (0 for the service's own
    /// commands, e.g. expiry). Recorded for traceability; never interpreted.
    pub trace_id: u128,
    /// Who asked for it (`system` for the service's own commands).
    pub operator: String,
    pub command: Command,
    pub txns: Vec<Txn>,
    /// The records from the cold tier the command was decided with (empty
    /// for nearly every entry). The journal stores them in a record format
    /// of their own, so entries without them keep their layout.
    #[rkyv(with = rkyv::with::Skip)]
    pub cold: Option<Box<ColdFacts>>,
}
