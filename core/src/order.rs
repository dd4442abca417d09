//! Orders of several lines, held all or nothing across shards.
//!
//! Each shard holds the lines of the SKUs it owns; the lowest of the
//! order's shards, its home, keeps the order's record, where every change
//! of the order's state is decided, first come first served:
//!
//! - `PrepareOrder` on each shard holds its lines, all or none. On an order
//!   of one shard the lines are held outright and the record is made
//!   `COMMITTED` in the same command; otherwise they are held
//!   *tentatively*: counted as reserved, not yet the order's.
//! - `DecideOrder` on the home records `COMMITTED` (every shard prepared),
//!   `ABORTED`, `CONFIRMED` or `RELEASED`; a decision that comes after
//!   another is answered with the state already decided. The home's own
//!   lines follow in the same command.
//! - `FinishOrder` on every other shard makes its lines follow the decided
//!   state.
//! - `ExpireOrders`, from the home's timer, expires committed orders at
//!   their `expire_at`. The other shards never expire an order's lines on
//!   their own: a confirm decided before the deadline is never undone by
//!   another shard's timer.

use crate::ids::Millis;

/// Most lines one order may have.
pub const ORDER_LINES_MAX: usize = 100;

/// The release reason of an aborted order's tentative lines.
pub const REASON_ORDER_ABORTED: &str = "ORDER_ABORTED";

#[derive(Clone, Debug, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct OrderLine {
    pub sku_id: String,
    pub warehouse_id: String,
    pub qty: u64,
}

/// The state an order's home decided.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub enum OrderState {
    Committed,
    Aborted,
    Confirmed,
    Released,
    Expired,
}

impl OrderState {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderState::Committed => "RESERVED",
            OrderState::Aborted => "ABORTED",
            OrderState::Confirmed => "CONFIRMED",
            OrderState::Released => "RELEASED",
            OrderState::Expired => "EXPIRED",
        }
    }

    /// No later decision changes it.
    pub fn is_final(self) -> bool {
        self != OrderState::Committed
    }
}

/// What a `DecideOrder` asks for.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum OrderDecision {
    /// Every shard prepared its lines.
    Commit,
    /// Not every shard prepared (or one took too long): the tentative lines
    /// go back.
    Abort,
    Confirm {
        payment_id: String,
    },
    Release {
        reason: String,
    },
}

/// An order's record on its home shard.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct OrderRecord {
    pub order_id: String,
    /// The shards holding its lines, ascending; the first is the home.
    pub shards: Vec<u16>,
    pub expire_at: Millis,
    pub state: OrderState,
    /// The payment of a confirmed order, the reason of a released one.
    pub detail: String,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// A line of an order as a shard holds it: what a shard reports for an
/// order's lines still to be settled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderLineView {
    pub order_id: String,
    pub home: u16,
    /// Held, but not yet the order's: its home has not decided.
    pub tentative: bool,
    pub created_at: Millis,
    pub expire_at: Millis,
}
