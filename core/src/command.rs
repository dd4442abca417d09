//! The closed set of commands that change shard state, and the queries that
//! read it.
//!
//! Commands are journaled (rkyv): the variant order of [`Command`] is part of
//! the on-disk format. Append new variants at the end; never reorder.

use crate::ids::{Fingerprint, Millis, ReservationId};
use crate::ops::{AdjustmentId, TransferId};
use crate::order::{OrderDecision, OrderLine, OrderState};
use crate::sale::SalePolicy;

/// A state-changing command. Each carries everything needed to apply it
/// deterministically; the time is supplied separately by the shard loop.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Command {
    /// 0: inbound stock for `(sku, warehouse)`; creates the row if new.
    Receive(Receive),
    /// 1: move `qty` from available to reserved for an order line.
    Reserve(Reserve),
    /// 2: payment succeeded: move a hold from reserved to sold.
    Confirm(Confirm),
    /// 3: return a hold to available (cancel).
    Release(Release),
    /// 4: release the listed holds whose `expire_at` has passed. Issued
    /// by the shard loop's timer; the ids make replay independent of timers.
    Expire(Expire),
    /// 5: many receipts at once (bulk load): all of them or none.
    ReceiveBatch(ReceiveBatch),
    /// 6: move the finished holds and the idempotency records older than
    /// the hot window out of memory, to the cold tier (`cold.rs`). Issued
    /// by the shard loop once the cold tier holds them.
    Evict(Evict),
    /// 7: freeze or unfreeze one row of an SKU, or all of them.
    Freeze(Freeze),
    /// 8: propose a change of a row's units, applied once approved. Boxed,
    /// like the transfer: rare commands do not make every command larger.
    ProposeAdjustment(Box<ProposeAdjustment>),
    /// 9: approve (apply) or reject a pending adjustment.
    DecideAdjustment(DecideAdjustment),
    /// 10: expire the listed pending adjustments whose time has passed.
    /// Issued by the shard loop's timer, like `Expire`.
    ExpireAdjustments(ExpireAdjustments),
    /// 11: move units out of one warehouse row of an SKU towards another.
    DispatchTransfer(Box<DispatchTransfer>),
    /// 12: a transfer arrived, or is cancelled (its units go back).
    FinishTransfer(FinishTransfer),
    /// 13: reconciliation repaired a copy of a row (PostgreSQL's): recorded
    /// as a version of the row with what the copy held, changing no counter.
    Repair(Repair),
    /// 14: set (or remove) the sale policy of an SKU.
    SetPolicy(Box<SetPolicy>),
    /// 15: a reserve that names its buyer or its sales channel, for the
    /// SKU's sale policy. A reserve naming neither is a `Reserve`.
    ReserveAs(Box<ReserveAs>),
    /// 16: hold a shard's lines of an order, all or none (see `order.rs`).
    PrepareOrder(Box<PrepareOrder>),
    /// 17: on an order's home shard, decide its state.
    DecideOrder(Box<DecideOrder>),
    /// 18: make a shard's lines of an order follow its decided state.
    FinishOrder(Box<FinishOrder>),
    /// 19: expire the listed committed orders whose time has passed.
    /// Issued by the home shard's timer, like `Expire`.
    ExpireOrders(ExpireOrders),
}

#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct PrepareOrder {
    pub order_id: String,
    /// This shard's lines, each SKU once.
    pub lines: Vec<OrderLine>,
    /// The buyer and the sales channel (empty: none named).
    pub buyer_id: String,
    pub channel: String,
    /// One deadline for every line of the order, on every shard.
    pub expire_at: Millis,
    /// Every shard holding lines of the order, ascending; the first is
    /// its home.
    pub shards: Vec<u16>,
    pub idem_key: String,
}

#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct DecideOrder {
    pub order_id: String,
    pub decision: OrderDecision,
    /// For a first decision: the order's shards and deadline.
    pub shards: Vec<u16>,
    pub expire_at: Millis,
}

#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct FinishOrder {
    pub order_id: String,
    /// What the home decided.
    pub state: OrderState,
    /// The payment of a confirmed order, the reason of a released one.
    pub detail: String,
}

#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ExpireOrders {
    pub order_ids: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct SetPolicy {
    pub sku_id: String,
    /// The new policy; `None` removes the SKU's policy.
    pub policy: Option<SalePolicy>,
    pub operator: String,
    pub idem_key: String,
}

#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ReserveAs {
    pub reserve: Reserve,
    /// The buyer (empty: none named).
    pub buyer_id: String,
    /// The sales channel (empty: none named).
    pub channel: String,
}

#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Repair {
    pub sku_id: String,
    pub warehouse_id: String,
    /// What was repaired and what it held, as the txn's detail.
    pub detail: String,
}

#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Freeze {
    pub sku_id: String,
    /// One row; `None`: every row of the SKU.
    pub warehouse_id: Option<String>,
    /// Freeze (`true`) or unfreeze.
    pub frozen: bool,
    pub reason: String,
    pub idem_key: String,
}

#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ProposeAdjustment {
    pub sku_id: String,
    pub warehouse_id: String,
    /// Units to add (positive) or write off (negative); never 0.
    pub delta: i64,
    pub reason: String,
    /// The proposing operator: another must approve.
    pub operator: String,
    /// How long it may stay pending, resolved against the service default.
    pub ttl_ms: Millis,
    pub idem_key: String,
}

#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct DecideAdjustment {
    pub adjustment_id: AdjustmentId,
    /// Approve (apply it) or reject it.
    pub approve: bool,
    pub operator: String,
    /// Why it is rejected (empty for an approval).
    pub reason: String,
    pub idem_key: String,
}

#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ExpireAdjustments {
    pub ids: Vec<AdjustmentId>,
}

#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct DispatchTransfer {
    pub sku_id: String,
    pub from_warehouse_id: String,
    /// Created (empty) if the SKU has no row there yet.
    pub to_warehouse_id: String,
    pub qty: u64,
    pub reason: String,
    pub operator: String,
    /// Expected arrival, this long after dispatch.
    pub expected_in_ms: Option<Millis>,
    pub idem_key: String,
}

#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct FinishTransfer {
    pub transfer_id: TransferId,
    /// Arrived (`true`) or cancelled.
    pub arrive: bool,
    pub operator: String,
    /// Why it is cancelled (empty for an arrival).
    pub reason: String,
    pub idem_key: String,
}

#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ReceiveBatch {
    pub items: Vec<ReceiveItem>,
    pub idem_key: String,
    /// Caller's reference, recorded on every txn (or the key, if empty).
    pub reference: String,
}

impl ReceiveBatch {
    /// What every txn of the batch records as `ref_id`: the caller's
    /// reference, or the key if there is none.
    pub fn txn_reference(&self) -> &str {
        if self.reference.is_empty() {
            &self.idem_key
        } else {
            &self.reference
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ReceiveItem {
    pub sku_id: String,
    pub warehouse_id: String,
    pub qty: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Receive {
    pub sku_id: String,
    pub warehouse_id: String,
    pub qty: u64,
    pub idem_key: String,
    /// Caller's reference (e.g. a purchase order); recorded on the txn.
    pub reference: String,
}

impl Receive {
    /// What the txn records as `ref_id`: the caller's reference, or the key.
    pub fn txn_reference(&self) -> &str {
        if self.reference.is_empty() {
            &self.idem_key
        } else {
            &self.reference
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Reserve {
    pub order_id: String,
    pub sku_id: String,
    pub warehouse_id: String,
    pub qty: u64,
    pub idem_key: String,
    /// Hold duration, already resolved against the service default.
    pub ttl_ms: Millis,
    /// Whether the caller asked for `ttl_ms` explicitly. Only an explicit TTL
    /// is part of the request fingerprint, so a retry is not a conflict just
    /// because the service default changed in between.
    pub ttl_explicit: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Confirm {
    pub reservation_id: ReservationId,
    pub payment_id: String,
    pub idem_key: String,
}

#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Release {
    pub reservation_id: ReservationId,
    pub reason: String,
    pub idem_key: String,
}

#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Expire {
    pub ids: Vec<ReservationId>,
}

#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Evict {
    /// Holds that finished before this time leave memory.
    pub holds_before: Millis,
    /// Idempotency records made before this time leave memory.
    pub keys_before: Millis,
}

impl Command {
    /// The idempotency key, for commands that carry one.
    pub fn idem_key(&self) -> Option<&str> {
        match self {
            Command::Receive(c) => Some(&c.idem_key),
            Command::Reserve(c) => Some(&c.idem_key),
            Command::Confirm(c) => Some(&c.idem_key),
            Command::Release(c) => Some(&c.idem_key),
            Command::Expire(_) | Command::Evict(_) | Command::ExpireAdjustments(_) | Command::Repair(_) => None,
            Command::ReceiveBatch(c) => Some(&c.idem_key),
            Command::Freeze(c) => Some(&c.idem_key),
            Command::ProposeAdjustment(c) => Some(&c.idem_key),
            Command::DecideAdjustment(c) => Some(&c.idem_key),
            Command::DispatchTransfer(c) => Some(&c.idem_key),
            Command::FinishTransfer(c) => Some(&c.idem_key),
            Command::SetPolicy(c) => Some(&c.idem_key),
            Command::ReserveAs(c) => Some(&c.reserve.idem_key),
            Command::PrepareOrder(c) => Some(&c.idem_key),
            // Idempotent by the order's state: a repeat answers it.
            Command::DecideOrder(_) | Command::FinishOrder(_) | Command::ExpireOrders(_) => None,
        }
    }

    /// The reserve a `Reserve` or `ReserveAs` makes.
    pub fn as_reserve(&self) -> Option<&Reserve> {
        match self {
            Command::Reserve(c) => Some(c),
            Command::ReserveAs(c) => Some(&c.reserve),
            _ => None,
        }
    }

    /// Fingerprint of the request without its idempotency key: the same key
    /// with a different fingerprint is a conflict.
    pub fn fingerprint(&self) -> u64 {
        let mut f = Fingerprint::default();
        match self {
            Command::Receive(c) => {
                f.tag(0).str(&c.sku_id).str(&c.warehouse_id).u64(c.qty).str(&c.reference);
            }
            Command::Reserve(c) => {
                f.tag(1).str(&c.order_id).str(&c.sku_id).str(&c.warehouse_id).u64(c.qty);
                f.u64(if c.ttl_explicit { c.ttl_ms } else { u64::MAX });
            }
            Command::ReserveAs(c) => {
                let r = &c.reserve;
                f.tag(15).str(&r.order_id).str(&r.sku_id).str(&r.warehouse_id).u64(r.qty);
                f.u64(if r.ttl_explicit { r.ttl_ms } else { u64::MAX });
                f.str(&c.buyer_id).str(&c.channel);
            }
            Command::PrepareOrder(c) => {
                f.tag(16).str(&c.order_id).str(&c.buyer_id).str(&c.channel);
                for line in &c.lines {
                    f.str(&line.sku_id).str(&line.warehouse_id).u64(line.qty);
                }
                for &shard in &c.shards {
                    f.u64(shard as u64);
                }
            }
            Command::DecideOrder(c) => {
                f.tag(17).str(&c.order_id);
                match &c.decision {
                    OrderDecision::Commit => f.u64(0),
                    OrderDecision::Abort => f.u64(1),
                    OrderDecision::Confirm { payment_id } => f.u64(2).str(payment_id),
                    OrderDecision::Release { reason } => f.u64(3).str(reason),
                };
            }
            Command::FinishOrder(c) => {
                f.tag(18).str(&c.order_id).u64(c.state as u64).str(&c.detail);
            }
            Command::ExpireOrders(c) => {
                f.tag(19);
                for id in &c.order_ids {
                    f.str(id);
                }
            }
            Command::SetPolicy(c) => {
                f.tag(14).str(&c.sku_id).str(&c.operator);
                match &c.policy {
                    None => {
                        f.u64(0);
                    }
                    Some(p) => {
                        f.u64(1).u64(p.max_per_buyer.map_or(u64::MAX, u64::from));
                        f.u64(p.sale_starts_at.unwrap_or(u64::MAX)).u64(p.sale_ends_at.unwrap_or(u64::MAX));
                        for (channel, units) in &p.channel_quotas {
                            f.str(channel).u64(*units);
                        }
                    }
                }
            }
            Command::Confirm(c) => {
                f.tag(2).u64(c.reservation_id.0).str(&c.payment_id);
            }
            Command::Release(c) => {
                f.tag(3).u64(c.reservation_id.0).str(&c.reason);
            }
            Command::Expire(c) => {
                f.tag(4);
                for id in &c.ids {
                    f.u64(id.0);
                }
            }
            Command::ReceiveBatch(c) => {
                f.tag(5).str(&c.reference);
                for i in &c.items {
                    f.str(&i.sku_id).str(&i.warehouse_id).u64(i.qty);
                }
            }
            Command::Evict(c) => {
                f.tag(6).u64(c.holds_before).u64(c.keys_before);
            }
            Command::Freeze(c) => {
                f.tag(7).str(&c.sku_id).str(c.warehouse_id.as_deref().unwrap_or("\0*")).u64(c.frozen as u64);
                f.str(&c.reason);
            }
            Command::ProposeAdjustment(c) => {
                f.tag(8).str(&c.sku_id).str(&c.warehouse_id).u64(c.delta as u64).str(&c.reason).str(&c.operator);
            }
            Command::DecideAdjustment(c) => {
                f.tag(9).u64(c.adjustment_id.0).u64(c.approve as u64).str(&c.operator).str(&c.reason);
            }
            Command::ExpireAdjustments(c) => {
                f.tag(10);
                for id in &c.ids {
                    f.u64(id.0);
                }
            }
            Command::DispatchTransfer(c) => {
                f.tag(11).str(&c.sku_id).str(&c.from_warehouse_id).str(&c.to_warehouse_id).u64(c.qty);
                f.str(&c.reason).str(&c.operator).u64(c.expected_in_ms.unwrap_or(u64::MAX));
            }
            Command::FinishTransfer(c) => {
                f.tag(12).u64(c.transfer_id.0).u64(c.arrive as u64).str(&c.operator).str(&c.reason);
            }
            Command::Repair(c) => {
                f.tag(13).str(&c.sku_id).str(&c.warehouse_id).str(&c.detail);
            }
        }
        f.finish()
    }

    /// Short stable name, for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Receive(_) => "receive",
            Command::Reserve(_) => "reserve",
            Command::Confirm(_) => "confirm",
            Command::Release(_) => "release",
            Command::Expire(_) => "expire",
            Command::ReceiveBatch(_) => "receive_batch",
            Command::Evict(_) => "evict",
            Command::Freeze(c) if c.frozen => "freeze",
            Command::Freeze(_) => "unfreeze",
            Command::ProposeAdjustment(_) => "adjustment_propose",
            Command::DecideAdjustment(c) if c.approve => "adjustment_approve",
            Command::DecideAdjustment(_) => "adjustment_reject",
            Command::ExpireAdjustments(_) => "adjustment_expire",
            Command::DispatchTransfer(_) => "transfer_dispatch",
            Command::FinishTransfer(c) if c.arrive => "transfer_arrive",
            Command::FinishTransfer(_) => "transfer_cancel",
            Command::Repair(_) => "repair",
            Command::SetPolicy(c) if c.policy.is_some() => "policy_set",
            Command::SetPolicy(_) => "policy_remove",
            Command::ReserveAs(_) => "reserve",
            Command::PrepareOrder(_) => "order_prepare",
            Command::DecideOrder(_) => "order_decide",
            Command::FinishOrder(_) => "order_finish",
            Command::ExpireOrders(_) => "order_expire",
        }
    }
}

/// Read-only requests. Never journaled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Query {
    /// All warehouse rows of one SKU.
    Stock { sku_id: String },
    /// One reservation.
    Reservation { id: ReservationId },
    /// Every hold of one order held by this shard.
    Order { order_id: String },
    /// One adjustment.
    Adjustment { id: AdjustmentId },
    /// This shard's adjustments, oldest first, optionally of one status
    /// and one SKU.
    Adjustments { status: Option<crate::ops::AdjustmentStatus>, sku_id: Option<String> },
    /// One transfer.
    Transfer { id: TransferId },
    /// This shard's transfers, oldest first, optionally of one status and
    /// one SKU.
    Transfers { status: Option<crate::ops::TransferStatus>, sku_id: Option<String> },
    /// The record of an order this shard is home of.
    OrderRecord { order_id: String },
    /// The orders whose lines here wait on their home: tentative lines
    /// held before `tentative_before`, lines past their deadline at `at`,
    /// or (`all`) every line of an order.
    UnsettledOrders { at: Millis, tentative_before: Millis, all: bool },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Idempotency records keep fingerprints across restarts (in snapshots):
    /// the same request must fingerprint the same in every version.
    #[test]
    fn fingerprints_are_stable() {
        let item = |sku: &str, qty| ReceiveItem { sku_id: sku.into(), warehouse_id: "w".into(), qty };
        let batch =
            ReceiveBatch { items: vec![item("a", 1), item("b", 2)], idem_key: "k".into(), reference: "r".into() };
        let reserve = Reserve {
            order_id: "o".into(),
            sku_id: "a".into(),
            warehouse_id: "w".into(),
            qty: 3,
            idem_key: "k".into(),
            ttl_ms: 60_000,
            ttl_explicit: true,
        };
        let expire = Expire { ids: vec![ReservationId(7), ReservationId(9)] };
        let found = [
            Command::ReceiveBatch(batch).fingerprint(),
            Command::Reserve(reserve).fingerprint(),
            Command::Expire(expire).fingerprint(),
        ];
        assert_eq!(found, [0xbc8e9ad38c20e5c8, 0x0dc33cc2f2170b9a, 0xff16fdc34a9514b4], "{found:#x?}");
    }
}
