//! What applying a command produced: a result, or a rejection as data.
//!
//! Rejections are stable result codes, mapped to HTTP statuses in exactly one
//! place in the gateway. They are values, never panics or error strings.

use crate::ids::{Millis, ReservationId};
use crate::ops::{AdjustmentId, AdjustmentStatus, TransferId, TransferStatus};
use crate::order::OrderState;
use crate::state::{Levels, ReservationStatus};

/// The result of a command, stored verbatim under its idempotency key so a
/// repeat renders byte-identically. `Copy`: no heap data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Outcome {
    Received {
        levels: Levels,
        version: u64,
        updated_at: Millis,
    },
    Reserved {
        reservation_id: ReservationId,
        expire_at: Millis,
    },
    Confirmed {
        reservation_id: ReservationId,
    },
    /// `status` is `Released` or `Expired` (a hold released by its timeout).
    Released {
        reservation_id: ReservationId,
        status: ReservationStatus,
    },
    Expired {
        count: u32,
    },
    ReceivedBatch {
        rows: u32,
        units: u64,
    },
    Rejected(Rejection),
    /// What an `Evict` moved to the cold tier.
    Evicted {
        holds: u32,
        keys: u32,
    },
    /// A freeze or unfreeze: how many rows it changed (0: all of them were
    /// already so).
    Frozen {
        rows: u32,
    },
    AdjustmentProposed {
        id: AdjustmentId,
    },
    /// Approved (`Applied`) or `Rejected`.
    AdjustmentDecided {
        id: AdjustmentId,
        status: AdjustmentStatus,
    },
    AdjustmentsExpired {
        count: u32,
    },
    TransferDispatched {
        id: TransferId,
    },
    /// `Arrived` or `Cancelled`.
    TransferFinished {
        id: TransferId,
        status: TransferStatus,
    },
    /// A repair recorded on a row (0: the core has no such row).
    Repaired {
        rows: u32,
    },
    /// A sale policy was set (`present`) or removed.
    PolicySet {
        present: bool,
    },
    /// A shard's lines of an order are held: reservations `first`,
    /// `first + 1`, ... in the order of the command's lines.
    OrderPrepared {
        first: ReservationId,
        lines: u16,
        expire_at: Millis,
    },
    /// The order's state, as its home decided it (now or before).
    OrderDecided {
        state: OrderState,
    },
    /// How many of a shard's lines of an order changed.
    OrderFinished {
        lines: u16,
    },
    OrdersExpired {
        count: u32,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Rejection {
    /// No stock row for this `(sku, warehouse)`.
    SkuNotFound,
    /// Not enough available; nothing changed.
    InsufficientStock {
        available: u64,
    },
    /// The order line `(orderId, skuId)` already has a hold that this request
    /// does not match: one hold per order line.
    DuplicateOrderLine {
        existing: ReservationId,
        status: ReservationStatus,
    },
    ReservationNotFound,
    ReservationExpired,
    ReservationReleased,
    ReservationConfirmed,
    /// The hold was already confirmed by a different payment.
    PaymentMismatch,
    /// Same idempotency key, different request.
    IdempotencyKeyReused,
    /// Receiving this quantity would take the row's total received past
    /// [`crate::ROW_UNITS_MAX`] (counters are 32-bit).
    QuantityOverflow,
    /// Quantities must be positive.
    InvalidQuantity,
    /// The SKU already has the maximum number of warehouse rows
    /// ([`crate::WAREHOUSES_PER_SKU_MAX`]), or the shard already knows the
    /// maximum number of distinct warehouse ids ([`crate::WAREHOUSE_IDS_MAX`]).
    TooManyWarehouses,
    /// A batch names the same `(sku, warehouse)` twice, or is empty.
    InvalidBatch,
    /// A new SKU's id is longer than [`crate::SKU_ID_BYTES_MAX`].
    SkuIdTooLong,
    /// The row is frozen: reserves are refused until it is unfrozen.
    SkuFrozen,
    /// The operator approving an adjustment is the one who proposed it.
    SameOperator,
    AdjustmentNotFound,
    /// The adjustment was already approved, rejected or expired.
    AdjustmentNotPending {
        status: AdjustmentStatus,
    },
    TransferNotFound,
    /// The transfer already arrived or was cancelled.
    TransferNotInTransit {
        status: TransferStatus,
    },
    /// A transfer's source and destination are the same warehouse.
    SameWarehouse,
    /// The SKU's policy limits units per buyer: the reserve must name one.
    BuyerRequired,
    /// The buyer already holds or bought `held` units of the SKU; this
    /// reserve would take them past `limit`.
    PurchaseLimitExceeded {
        limit: u32,
        held: u32,
    },
    /// The SKU's sale starts at `starts_at`.
    SaleNotStarted {
        starts_at: Millis,
    },
    SaleEnded,
    /// The SKU's policy has channel quotas: the reserve must name a channel.
    ChannelRequired,
    /// The channel is not one of the policy's.
    UnknownChannel,
    /// The channel's units are all held or sold.
    ChannelQuotaExhausted {
        quota: u64,
        used: u64,
    },
    /// Some of a shard's lines of an order cannot be held; nothing was. The
    /// shard keeps why, line by line ([`crate::Shard::take_refusals`]).
    OrderNotReservable {
        failed: u16,
    },
    /// No such order (on its home shard).
    OrderNotFound,
    /// The hold is a line of an order: confirm or release the order.
    PartOfOrder,
    /// The order's lines were released before every shard held its own.
    OrderAborted,
}

impl Rejection {
    /// Stable machine-readable code, used as the `code` of error responses.
    pub fn code(self) -> &'static str {
        match self {
            Rejection::SkuNotFound => "SKU_NOT_FOUND",
            Rejection::InsufficientStock { .. } => "INSUFFICIENT_STOCK",
            Rejection::DuplicateOrderLine { .. } => "DUPLICATE_ORDER_LINE",
            Rejection::ReservationNotFound => "RESERVATION_NOT_FOUND",
            Rejection::ReservationExpired => "RESERVATION_EXPIRED",
            Rejection::ReservationReleased => "RESERVATION_RELEASED",
            Rejection::ReservationConfirmed => "RESERVATION_CONFIRMED",
            Rejection::PaymentMismatch => "PAYMENT_MISMATCH",
            Rejection::IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
            Rejection::QuantityOverflow => "QUANTITY_OVERFLOW",
            Rejection::InvalidQuantity => "INVALID_QUANTITY",
            Rejection::TooManyWarehouses => "TOO_MANY_WAREHOUSES",
            Rejection::InvalidBatch => "INVALID_BATCH",
            Rejection::SkuIdTooLong => "SKU_ID_TOO_LONG",
            Rejection::SkuFrozen => "SKU_FROZEN",
            Rejection::SameOperator => "SAME_OPERATOR",
            Rejection::AdjustmentNotFound => "ADJUSTMENT_NOT_FOUND",
            Rejection::AdjustmentNotPending { .. } => "ADJUSTMENT_NOT_PENDING",
            Rejection::TransferNotFound => "TRANSFER_NOT_FOUND",
            Rejection::TransferNotInTransit { .. } => "TRANSFER_NOT_IN_TRANSIT",
            Rejection::SameWarehouse => "SAME_WAREHOUSE",
            Rejection::BuyerRequired => "BUYER_REQUIRED",
            Rejection::PurchaseLimitExceeded { .. } => "PURCHASE_LIMIT_EXCEEDED",
            Rejection::SaleNotStarted { .. } => "SALE_NOT_STARTED",
            Rejection::SaleEnded => "SALE_ENDED",
            Rejection::ChannelRequired => "CHANNEL_REQUIRED",
            Rejection::UnknownChannel => "UNKNOWN_CHANNEL",
            Rejection::ChannelQuotaExhausted { .. } => "CHANNEL_QUOTA_EXHAUSTED",
            Rejection::OrderNotReservable { .. } => "ORDER_NOT_RESERVABLE",
            Rejection::OrderNotFound => "ORDER_NOT_FOUND",
            Rejection::PartOfOrder => "PART_OF_ORDER",
            Rejection::OrderAborted => "ORDER_ABORTED",
        }
    }
}

/// Outcome plus what the caller needs to know about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Applied {
    pub outcome: Outcome,
    /// State changed: the command must be journaled before anyone hears of it.
    pub changed: bool,
    /// The outcome was replayed from the idempotency table.
    pub replayed: bool,
}
