//! Operator commands: freeze, adjustments under two-person approval, and
//! transfers between the warehouses of one SKU. Every one is a command like
//! a reserve: applied by the shard alone, journaled, undone with its batch.
//!
//! A row's counters include what operators did to it (`on_hand` gains an
//! adjustment's delta, loses a dispatched transfer's units, gains an arrived
//! one's); [`Ops`] keeps the breakdown for the rows that have one, and the
//! adjustments and transfers themselves.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;

use super::{Outcome, Rejection, RowChange, Shard, Undo};
use crate::command::{
    DecideAdjustment, DispatchTransfer, ExpireAdjustments, FinishTransfer, Freeze, ProposeAdjustment, Repair,
};
use crate::ids::Millis;
use crate::ops::{
    Adjustment, AdjustmentId, AdjustmentStatus, AdjustmentView, OpsImage, RowOps, Transfer, TransferId, TransferStatus,
    TransferView,
};
use crate::shard::WAREHOUSES_PER_SKU_MAX;
use crate::state::{Levels, StockRow, Txn, TxnKind};
use crate::table::{SkuKey, ROW_UNITS_MAX, WAREHOUSE_IDS_MAX};

/// What operators did, beside the stock table.
#[derive(Clone, Debug)]
pub(super) struct Ops {
    /// Only rows with some operator state.
    rows: FxHashMap<u32, RowOps>,
    pub(super) adjustments: BTreeMap<u64, Adjustment>,
    pub(super) transfers: BTreeMap<u64, Transfer>,
    pub(super) next_adjustment_seq: u64,
    pub(super) next_transfer_seq: u64,
}

impl Default for Ops {
    fn default() -> Ops {
        Ops {
            rows: FxHashMap::default(),
            adjustments: BTreeMap::new(),
            transfers: BTreeMap::new(),
            next_adjustment_seq: 1,
            next_transfer_seq: 1,
        }
    }
}

impl Ops {
    pub(super) fn row(&self, row: u32) -> RowOps {
        if self.rows.is_empty() {
            return RowOps::default();
        }
        self.rows.get(&row).copied().unwrap_or_default()
    }

    /// Whether reserves of `row` are refused. One branch for a shard whose
    /// rows operators never touched.
    pub(super) fn frozen(&self, row: u32) -> bool {
        !self.rows.is_empty() && self.rows.get(&row).is_some_and(|o| o.frozen)
    }

    pub(super) fn set_row(&mut self, row: u32, ops: RowOps) {
        if ops.is_empty() {
            self.rows.remove(&row);
        } else {
            self.rows.insert(row, ops);
        }
    }

    pub(super) fn image(&self) -> OpsImage {
        let mut rows: Vec<(u32, RowOps)> = self.rows.iter().map(|(&r, &o)| (r, o)).collect();
        rows.sort_unstable_by_key(|&(r, _)| r);
        OpsImage {
            rows,
            adjustments: self.adjustments.values().cloned().collect(),
            transfers: self.transfers.values().cloned().collect(),
            next_adjustment_seq: self.next_adjustment_seq,
            next_transfer_seq: self.next_transfer_seq,
        }
    }

    /// From an image; an image written before operator controls (all
    /// empty) gives a shard that has none.
    pub(super) fn load(image: OpsImage) -> Ops {
        Ops {
            rows: image.rows.into_iter().collect(),
            adjustments: image.adjustments.into_iter().map(|a| (a.seq, a)).collect(),
            transfers: image.transfers.into_iter().map(|t| (t.seq, t)).collect(),
            next_adjustment_seq: image.next_adjustment_seq.max(1),
            next_transfer_seq: image.next_transfer_seq.max(1),
        }
    }
}

fn rejected(rejection: Rejection) -> (Outcome, bool) {
    (Outcome::Rejected(rejection), false)
}

impl Shard {
    /// A row as queries show it: its counters and what operators did to it.
    pub(super) fn stock_row(&self, row: u32) -> StockRow {
        let mut stock = self.table.row(row).stock_row();
        let ops = self.ops.row(row);
        if !ops.is_empty() {
            stock.received = crate::image::received(stock.received, &ops);
            stock.ops = ops;
        }
        stock
    }

    fn change_ops(&mut self, row: u32, change: impl FnOnce(&mut RowOps)) {
        let prev = self.ops.rows.get(&row).copied();
        let mut ops = prev.unwrap_or_default();
        change(&mut ops);
        self.ops.set_row(row, ops);
        self.record(Undo::RowOps { row, prev });
    }

    fn put_adjustment(&mut self, adjustment: Adjustment) {
        let seq = adjustment.seq;
        let prev = self.ops.adjustments.insert(seq, adjustment).map(Box::new);
        self.record(Undo::Adjustment { seq, prev });
    }

    fn put_transfer(&mut self, transfer: Transfer) {
        let seq = transfer.seq;
        let prev = self.ops.transfers.insert(seq, transfer).map(Box::new);
        self.record(Undo::Transfer { seq, prev });
    }

    /// The txn of an operator action on a row: `change` applied to its
    /// counters (nothing, for an action that leaves them as they are, such
    /// as a proposal). Every action is a version of its row, so that a
    /// row's history is one unbroken chain of versions.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn operator_txn(
        &mut self,
        at: Millis,
        kind: TxnKind,
        row: u32,
        qty: u64,
        ref_id: String,
        other_end: String,
        reason: &str,
        change: &dyn Fn(&mut crate::table::Row),
    ) -> Txn {
        let (before, after) = self.change_row(row, at, change);
        self.txn(RowChange {
            kind,
            row,
            qty,
            ref_id,
            order_id: other_end,
            detail: reason.to_string(),
            before,
            after,
            at,
        })
    }

    /// The row of `(sku, warehouse)`, if the SKU has one there.
    fn find(&self, sku_id: &str, warehouse_id: &str) -> Option<u32> {
        let first = self.table.find_sku(sku_id)?;
        self.table.find_row(first, warehouse_id)
    }

    pub(super) fn freeze(&mut self, at: Millis, c: &Freeze, txns: &mut Vec<Txn>) -> (Outcome, bool) {
        let Some(first) = self.table.find_sku(&c.sku_id) else {
            return rejected(Rejection::SkuNotFound);
        };
        let rows: Vec<u32> = match &c.warehouse_id {
            Some(warehouse_id) => match self.table.find_row(first, warehouse_id) {
                Some(row) => vec![row],
                None => return rejected(Rejection::SkuNotFound),
            },
            None => self.table.chain(first).collect(),
        };
        let kind = if c.frozen { TxnKind::Freeze } else { TxnKind::Unfreeze };
        let mut changed = 0;
        for row in rows {
            if self.ops.frozen(row) == c.frozen {
                continue;
            }
            self.change_ops(row, |o| o.frozen = c.frozen);
            let txn = self.operator_txn(at, kind, row, 0, c.idem_key.clone(), String::new(), &c.reason, &|_| {});
            txns.push(txn);
            changed += 1;
        }
        (Outcome::Frozen { rows: changed }, changed > 0)
    }

    pub(super) fn propose_adjustment(
        &mut self,
        at: Millis,
        c: &ProposeAdjustment,
        txns: &mut Vec<Txn>,
    ) -> (Outcome, bool) {
        if c.delta == 0 {
            return rejected(Rejection::InvalidQuantity);
        }
        if c.delta.unsigned_abs() > ROW_UNITS_MAX {
            return rejected(Rejection::QuantityOverflow);
        }
        let Some(row) = self.find(&c.sku_id, &c.warehouse_id) else {
            return rejected(Rejection::SkuNotFound);
        };
        let seq = self.ops.next_adjustment_seq;
        self.ops.next_adjustment_seq += 1;
        let id = AdjustmentId::new(self.config.index, seq);
        self.put_adjustment(Adjustment {
            seq,
            row,
            delta: c.delta,
            reason: c.reason.clone(),
            proposed_by: c.operator.clone(),
            proposed_at: at,
            expires_at: at.saturating_add(c.ttl_ms),
            proposed_levels: self.table.row(row).levels(),
            status: AdjustmentStatus::Pending,
            decided_by: String::new(),
            decided_at: 0,
            decision_reason: String::new(),
            before: Levels::default(),
            after: Levels::default(),
        });
        let kind = TxnKind::AdjustProposed;
        let proposer = c.operator.clone();
        txns.push(self.operator_txn(at, kind, row, c.delta as u64, id.to_string(), proposer, &c.reason, &|_| {}));
        (Outcome::AdjustmentProposed { id }, true)
    }

    fn own_adjustment(&self, id: AdjustmentId) -> Option<&Adjustment> {
        if id.shard() != self.config.index {
            return None;
        }
        self.ops.adjustments.get(&id.seq())
    }

    pub(super) fn decide_adjustment(
        &mut self,
        at: Millis,
        c: &DecideAdjustment,
        txns: &mut Vec<Txn>,
    ) -> (Outcome, bool) {
        let id = c.adjustment_id;
        let Some(adjustment) = self.own_adjustment(id) else {
            return rejected(Rejection::AdjustmentNotFound);
        };
        if adjustment.status != AdjustmentStatus::Pending {
            return rejected(Rejection::AdjustmentNotPending { status: adjustment.status });
        }
        if at >= adjustment.expires_at {
            // Past its time, the timer not yet fired: it expires now, so a
            // late approval never applies it.
            self.expire_adjustment(at, id.seq(), txns);
            return (Outcome::Rejected(Rejection::AdjustmentNotPending { status: AdjustmentStatus::Expired }), true);
        }
        let mut adjustment = adjustment.clone();
        let (row, delta) = (adjustment.row, adjustment.delta);
        let (kind, status) = if c.approve {
            if adjustment.proposed_by == c.operator {
                return rejected(Rejection::SameOperator);
            }
            let counters = self.table.row(row);
            let available = counters.available();
            if delta < 0 && delta.unsigned_abs() > available {
                return rejected(Rejection::InsufficientStock { available });
            }
            if delta > 0 && counters.on_hand as u64 + delta as u64 > ROW_UNITS_MAX {
                return rejected(Rejection::QuantityOverflow);
            }
            (TxnKind::AdjustApplied, AdjustmentStatus::Applied)
        } else {
            (TxnKind::AdjustRejected, AdjustmentStatus::Rejected)
        };
        let reason = if c.approve { adjustment.reason.clone() } else { c.reason.clone() };
        let change = |r: &mut crate::table::Row| r.on_hand = (r.on_hand as i64 + delta) as u32;
        let txn = self.operator_txn(
            at,
            kind,
            row,
            delta as u64,
            id.to_string(),
            adjustment.proposed_by.clone(),
            &reason,
            if c.approve { &change } else { &|_| {} },
        );
        if c.approve {
            self.change_ops(row, |o| o.adjusted += delta);
            (adjustment.before, adjustment.after) = (txn.before, txn.after);
        }
        adjustment.decision_reason = c.reason.clone();
        txns.push(txn);
        adjustment.status = status;
        adjustment.decided_by = c.operator.clone();
        adjustment.decided_at = at;
        self.put_adjustment(adjustment);
        (Outcome::AdjustmentDecided { id, status }, true)
    }

    fn expire_adjustment(&mut self, at: Millis, seq: u64, txns: &mut Vec<Txn>) {
        let mut adjustment = self.ops.adjustments[&seq].clone();
        debug_assert_eq!(adjustment.status, AdjustmentStatus::Pending);
        let id = AdjustmentId::new(self.config.index, seq);
        let (row, delta) = (adjustment.row, adjustment.delta);
        let (reason, proposer) = (adjustment.reason.clone(), adjustment.proposed_by.clone());
        let kind = TxnKind::AdjustExpired;
        txns.push(self.operator_txn(at, kind, row, delta as u64, id.to_string(), proposer, &reason, &|_| {}));
        adjustment.status = AdjustmentStatus::Expired;
        adjustment.decided_at = at;
        self.put_adjustment(adjustment);
    }

    pub(super) fn expire_adjustments(&mut self, at: Millis, c: &ExpireAdjustments, txns: &mut Vec<Txn>) -> u32 {
        let mut count = 0;
        for &id in &c.ids {
            let due =
                self.own_adjustment(id).is_some_and(|a| a.status == AdjustmentStatus::Pending && a.expires_at <= at);
            if due {
                self.expire_adjustment(at, id.seq(), txns);
                count += 1;
            }
        }
        count
    }

    pub(super) fn dispatch_transfer(
        &mut self,
        at: Millis,
        c: &DispatchTransfer,
        txns: &mut Vec<Txn>,
    ) -> (Outcome, bool) {
        if c.qty == 0 {
            return rejected(Rejection::InvalidQuantity);
        }
        if c.from_warehouse_id == c.to_warehouse_id {
            return rejected(Rejection::SameWarehouse);
        }
        let Some(first) = self.table.find_sku(&c.sku_id) else {
            return rejected(Rejection::SkuNotFound);
        };
        let Some(from) = self.table.find_row(first, &c.from_warehouse_id) else {
            return rejected(Rejection::SkuNotFound);
        };
        let available = self.table.row(from).available();
        if available < c.qty {
            return rejected(Rejection::InsufficientStock { available });
        }
        let to = self.table.find_row(first, &c.to_warehouse_id);
        if to.is_none()
            && (self.table.chain(first).count() >= WAREHOUSES_PER_SKU_MAX
                || (self.table.warehouse_count() >= WAREHOUSE_IDS_MAX
                    && !self.table.knows_warehouse(&c.to_warehouse_id)))
        {
            return rejected(Rejection::TooManyWarehouses);
        }
        let to = to.unwrap_or_else(|| {
            let added = self.table.add_row(Some(first), SkuKey::new(&c.sku_id), &c.to_warehouse_id);
            self.record(Undo::NewRow(added));
            added.row
        });
        let seq = self.ops.next_transfer_seq;
        self.ops.next_transfer_seq += 1;
        let id = TransferId::new(self.config.index, seq);
        // At most `available`, so within the row's counters.
        let qty = c.qty as u32;
        let (out, incoming) = (TxnKind::TransferOut, TxnKind::TransferIncoming);
        let to_warehouse = c.to_warehouse_id.clone();
        let txn = self.operator_txn(
            at,
            out,
            from,
            c.qty,
            id.to_string(),
            to_warehouse,
            &c.reason,
            &|r: &mut crate::table::Row| r.on_hand -= qty,
        );
        txns.push(txn);
        self.change_ops(from, |o| o.transferred_out += c.qty);
        let from_warehouse = c.from_warehouse_id.clone();
        let txn = self.operator_txn(at, incoming, to, c.qty, id.to_string(), from_warehouse, &c.reason, &|_| {});
        txns.push(txn);
        self.change_ops(to, |o| o.in_transit += c.qty);
        self.put_transfer(Transfer {
            seq,
            from_row: from,
            to_row: to,
            qty: c.qty,
            reason: c.reason.clone(),
            created_by: c.operator.clone(),
            created_at: at,
            expected_at: c.expected_in_ms.map(|ms| at.saturating_add(ms)),
            status: TransferStatus::InTransit,
            finished_by: String::new(),
            finished_at: 0,
            finish_reason: String::new(),
        });
        (Outcome::TransferDispatched { id }, true)
    }

    pub(super) fn finish_transfer(&mut self, at: Millis, c: &FinishTransfer, txns: &mut Vec<Txn>) -> (Outcome, bool) {
        let id = c.transfer_id;
        let found = (id.shard() == self.config.index).then(|| self.ops.transfers.get(&id.seq())).flatten();
        let Some(transfer) = found else {
            return rejected(Rejection::TransferNotFound);
        };
        if transfer.status != TransferStatus::InTransit {
            return rejected(Rejection::TransferNotInTransit { status: transfer.status });
        }
        let mut transfer = transfer.clone();
        let (from, to, units) = (transfer.from_row, transfer.to_row, transfer.qty);
        // Back at the source or arrived: either must fit that row's counters
        // (receipts may have filled it since dispatch).
        let lands = if c.arrive { to } else { from };
        if self.table.row(lands).on_hand as u64 + units > ROW_UNITS_MAX {
            return rejected(Rejection::QuantityOverflow);
        }
        let qty = units as u32;
        let (from_warehouse, to_warehouse) =
            (self.table.warehouse_id(from).to_string(), self.table.warehouse_id(to).to_string());
        let add = |r: &mut crate::table::Row| r.on_hand += qty;
        let status = if c.arrive {
            let kind = TxnKind::TransferIn;
            txns.push(self.operator_txn(at, kind, to, units, id.to_string(), from_warehouse, &c.reason, &add));
            self.change_ops(to, |o| {
                o.in_transit -= units;
                o.transferred_in += units;
            });
            TransferStatus::Arrived
        } else {
            let kind = TxnKind::TransferReturned;
            let back = self.operator_txn(at, kind, from, units, id.to_string(), to_warehouse, &c.reason, &add);
            txns.push(back);
            self.change_ops(from, |o| o.transferred_out -= units);
            let kind = TxnKind::TransferCancelled;
            let gone = self.operator_txn(at, kind, to, units, id.to_string(), from_warehouse, &c.reason, &|_| {});
            txns.push(gone);
            self.change_ops(to, |o| o.in_transit -= units);
            TransferStatus::Cancelled
        };
        transfer.status = status;
        transfer.finished_by = c.operator.clone();
        transfer.finished_at = at;
        transfer.finish_reason = c.reason.clone();
        self.put_transfer(transfer);
        (Outcome::TransferFinished { id, status }, true)
    }

    /// Records a repair of a copy of a row as a version of the row.
    pub(super) fn repair(&mut self, at: Millis, c: &Repair, txns: &mut Vec<Txn>) -> u32 {
        let Some(row) = self.find(&c.sku_id, &c.warehouse_id) else {
            return 0;
        };
        txns.push(self.operator_txn(at, TxnKind::Repair, row, 0, String::new(), String::new(), &c.detail, &|_| {}));
        1
    }

    // ----- queries and the timer -----------------------------------------

    fn adjustment_view(&self, adjustment: &Adjustment) -> AdjustmentView {
        AdjustmentView {
            id: AdjustmentId::new(self.config.index, adjustment.seq),
            sku_id: self.table.sku_id(adjustment.row).to_string(),
            warehouse_id: self.table.warehouse_id(adjustment.row).to_string(),
            adjustment: adjustment.clone(),
        }
    }

    fn transfer_view(&self, transfer: &Transfer) -> TransferView {
        TransferView {
            id: TransferId::new(self.config.index, transfer.seq),
            sku_id: self.table.sku_id(transfer.from_row).to_string(),
            from_warehouse_id: self.table.warehouse_id(transfer.from_row).to_string(),
            to_warehouse_id: self.table.warehouse_id(transfer.to_row).to_string(),
            transfer: transfer.clone(),
        }
    }

    pub fn adjustment(&self, id: AdjustmentId) -> Option<AdjustmentView> {
        self.own_adjustment(id).map(|a| self.adjustment_view(a))
    }

    /// This shard's adjustments, oldest first, of one status and SKU where
    /// given (an unknown SKU has none).
    pub fn adjustments(&self, status: Option<AdjustmentStatus>, sku_id: Option<&str>) -> Vec<AdjustmentView> {
        let first = sku_id.map(|s| self.table.find_sku(s));
        if first == Some(None) {
            return Vec::new();
        }
        self.ops
            .adjustments
            .values()
            .filter(|a| status.is_none_or(|s| a.status == s))
            .filter(|a| first.flatten().is_none_or(|f| self.table.same_sku(a.row, f)))
            .map(|a| self.adjustment_view(a))
            .collect()
    }

    pub fn transfer(&self, id: TransferId) -> Option<TransferView> {
        if id.shard() != self.config.index {
            return None;
        }
        self.ops.transfers.get(&id.seq()).map(|t| self.transfer_view(t))
    }

    /// This shard's transfers, oldest first, of one status and SKU where
    /// given.
    pub fn transfers(&self, status: Option<TransferStatus>, sku_id: Option<&str>) -> Vec<TransferView> {
        let first = sku_id.map(|s| self.table.find_sku(s));
        if first == Some(None) {
            return Vec::new();
        }
        self.ops
            .transfers
            .values()
            .filter(|t| status.is_none_or(|s| t.status == s))
            .filter(|t| first.flatten().is_none_or(|f| self.table.same_sku(t.from_row, f)))
            .map(|t| self.transfer_view(t))
            .collect()
    }

    /// Up to `max` pending adjustments whose time has passed at `at`: the
    /// ids for the next [`crate::Command::ExpireAdjustments`].
    pub fn due_adjustment_expirations(&self, at: Millis, max: usize) -> Vec<AdjustmentId> {
        self.ops
            .adjustments
            .values()
            .filter(|a| a.status == AdjustmentStatus::Pending && a.expires_at <= at)
            .take(max)
            .map(|a| AdjustmentId::new(self.config.index, a.seq))
            .collect()
    }

    /// Adjustments waiting for a decision.
    pub fn pending_adjustments(&self) -> usize {
        self.ops.adjustments.values().filter(|a| a.status == AdjustmentStatus::Pending).count()
    }

    /// Transfers in transit past their expected arrival at `at`.
    pub fn overdue_transfers(&self, at: Millis) -> usize {
        self.ops.transfers.values().filter(|t| t.overdue(at)).count()
    }

    /// The operator invariants: every row's breakdown is what its
    /// adjustments and transfers add up to, and no row received a negative
    /// number of units.
    pub(super) fn check_ops(&self) -> Result<(), String> {
        let mut expected: FxHashMap<u32, RowOps> = FxHashMap::default();
        for a in self.ops.adjustments.values() {
            if a.row >= self.table.len() || a.seq >= self.ops.next_adjustment_seq {
                return Err(format!("adjustment {} refers to row {} or is past the sequence", a.seq, a.row));
            }
            if a.status == AdjustmentStatus::Applied {
                expected.entry(a.row).or_default().adjusted += a.delta;
            }
        }
        for t in self.ops.transfers.values() {
            if t.from_row >= self.table.len() || t.to_row >= self.table.len() || t.seq >= self.ops.next_transfer_seq {
                return Err(format!("transfer {} refers to a missing row or is past the sequence", t.seq));
            }
            if t.from_row == t.to_row || !self.table.same_sku(t.from_row, t.to_row) {
                return Err(format!("transfer {} is not between two rows of one SKU", t.seq));
            }
            match t.status {
                TransferStatus::InTransit => {
                    expected.entry(t.from_row).or_default().transferred_out += t.qty;
                    expected.entry(t.to_row).or_default().in_transit += t.qty;
                }
                TransferStatus::Arrived => {
                    expected.entry(t.from_row).or_default().transferred_out += t.qty;
                    expected.entry(t.to_row).or_default().transferred_in += t.qty;
                }
                TransferStatus::Cancelled => {}
            }
        }
        for (&row, ops) in &self.ops.rows {
            if ops.is_empty() || row >= self.table.len() {
                return Err(format!("row {row}: an empty or dangling operator record"));
            }
            let counted = expected.remove(&row).unwrap_or_default();
            let frozen = RowOps { frozen: ops.frozen, ..counted };
            if frozen != *ops {
                return Err(format!("row {row}: operator record {ops:?}, its adjustments and transfers {counted:?}"));
            }
            let on_hand = self.table.row(row).on_hand as i128;
            if on_hand - ops.net() < 0 {
                return Err(format!("row {row}: on hand {on_hand} less than its operators' net {}", ops.net()));
            }
        }
        if let Some((row, ops)) = expected.into_iter().find(|(_, o)| !o.is_empty()) {
            return Err(format!("row {row}: no operator record, but its adjustments and transfers add {ops:?}"));
        }
        Ok(())
    }
}
