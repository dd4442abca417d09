//! Orders on a shard: holding its lines of an order all or none, the
//! records of the orders it is home of, and its lines following what the
//! home decided (see `order.rs` for the protocol).
//!
//! A `RESERVED` hold that is a line of an order carries a [`LineTag`]
//! until it finishes. Such a hold is not in the shard's expiry queue: its
//! order's home expires it, through the order.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rustc_hash::FxHashMap;

use super::sale::Buyer;
use super::{ColdFacts, Outcome, Rejection, Shard, Undo};
use crate::command::{DecideOrder, ExpireOrders, FinishOrder, PrepareOrder};
use crate::ids::{order_hash, Millis, ReservationId, IDEMPOTENCY_TTL_MS, REASON_TIMEOUT};
use crate::order::{OrderDecision, OrderLineView, OrderRecord, OrderState, REASON_ORDER_ABORTED};
use crate::state::{Hold, HoldChange, ReservationStatus, Txn, TxnKind};

/// What a `RESERVED` line of an order knows of its order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct LineTag {
    /// The order's home shard.
    pub(super) home: u16,
    /// Held, but its home has not decided yet.
    pub(super) tentative: bool,
}

#[derive(Clone, Debug, Default)]
pub(super) struct Orders {
    /// Tags of the `RESERVED` holds that are lines of an order, by hold.
    pub(super) lines: FxHashMap<u64, LineTag>,
    /// Records of the orders whose home this shard is, by order id.
    pub(super) records: BTreeMap<String, OrderRecord>,
    /// The committed records, by `(expire_at, order id)`: the home's timer.
    pub(super) expiry: BTreeSet<(Millis, String)>,
    /// Records that reached a final state, as `(updated_at, order id)`, in
    /// that order: purged once past retention.
    pub(super) finished: VecDeque<(Millis, String)>,
}

/// One step of the undo log for orders.
pub(super) enum OrderUndo {
    Line { seq: u64, prev: Option<LineTag> },
    Record { order_id: String, prev: Option<Box<OrderRecord>> },
}

/// Why one line of an order could not be held: its position among the
/// command's lines, and the rejection a reserve of it alone would get.
pub type LineRefusal = (u16, Rejection);

/// How long a finished order's record is kept: as long as idempotency keys.
const RECORD_RETENTION_MS: Millis = IDEMPOTENCY_TTL_MS;

fn record_visible(record: &OrderRecord, at: Millis) -> bool {
    !record.state.is_final() || at < record.updated_at.saturating_add(RECORD_RETENTION_MS)
}

impl Orders {
    pub(super) fn undo(&mut self, step: OrderUndo) {
        match step {
            OrderUndo::Line { seq, prev } => match prev {
                Some(tag) => {
                    self.lines.insert(seq, tag);
                }
                None => {
                    self.lines.remove(&seq);
                }
            },
            OrderUndo::Record { order_id, prev } => {
                if let Some(now) = self.records.get(&order_id) {
                    if now.state == OrderState::Committed {
                        self.expiry.remove(&(now.expire_at, order_id.clone()));
                    } else if self.finished.back().is_some_and(|(_, id)| *id == order_id) {
                        self.finished.pop_back();
                    }
                }
                match prev {
                    Some(record) => {
                        if record.state == OrderState::Committed {
                            self.expiry.insert((record.expire_at, order_id.clone()));
                        }
                        self.records.insert(order_id, *record);
                    }
                    None => {
                        self.records.remove(&order_id);
                    }
                }
            }
        }
    }
}

impl Shard {
    fn record_order(&mut self, step: OrderUndo) {
        self.record(Undo::Order(step));
    }

    /// Whether a hold is a `RESERVED` line of an order.
    pub(super) fn is_order_line(&self, seq: u64) -> bool {
        !self.order_state.lines.is_empty() && self.order_state.lines.contains_key(&seq)
    }

    /// A line of an order left `RESERVED`: it no longer waits on its order.
    pub(super) fn untag_line(&mut self, seq: u64) {
        if let Some(tag) = self.order_state.lines.remove(&seq) {
            self.record_order(OrderUndo::Line { seq, prev: Some(tag) });
        }
    }

    /// Why the last `PrepareOrder` refused its lines, line by line (empty
    /// after any other command). Not state: nothing replays it.
    pub fn take_refusals(&mut self) -> Vec<LineRefusal> {
        std::mem::take(&mut self.refusals)
    }

    /// Sets or replaces an order's record.
    fn put_record(&mut self, record: OrderRecord) {
        let order_id = record.order_id.clone();
        let prev = self.order_state.records.get(&order_id).cloned();
        if let Some(prev) = &prev {
            if prev.state == OrderState::Committed {
                self.order_state.expiry.remove(&(prev.expire_at, order_id.clone()));
            }
        }
        if record.state == OrderState::Committed {
            self.order_state.expiry.insert((record.expire_at, order_id.clone()));
        } else {
            self.order_state.finished.push_back((record.updated_at, order_id.clone()));
        }
        self.order_state.records.insert(order_id.clone(), record);
        self.record_order(OrderUndo::Record { order_id, prev: prev.map(Box::new) });
    }

    pub(super) fn prepare_order(
        &mut self,
        at: Millis,
        c: &PrepareOrder,
        cold: &ColdFacts,
        txns: &mut Vec<Txn>,
    ) -> (Outcome, bool) {
        self.refusals.clear();
        let shards_ok = c.shards.windows(2).all(|w| w[0] < w[1]) && c.shards.contains(&self.config.index);
        let mut skus: Vec<&str> = c.lines.iter().map(|l| l.sku_id.as_str()).collect();
        skus.sort_unstable();
        let distinct = skus.windows(2).all(|w| w[0] != w[1]);
        if c.lines.is_empty() || c.lines.len() > crate::ORDER_LINES_MAX || !shards_ok || !distinct || c.expire_at <= at
        {
            return (Outcome::Rejected(Rejection::InvalidBatch), false);
        }
        let who = Buyer { buyer_id: &c.buyer_id, channel: &c.channel };
        // Every line is checked before any is held: the lines name
        // distinct SKUs, so no line's hold changes another's check.
        let mut rows = Vec::with_capacity(c.lines.len());
        for (i, line) in c.lines.iter().enumerate() {
            match self.check_line(at, &c.order_id, line, who, cold) {
                Ok(found) => rows.push(found),
                Err(rejection) => self.refusals.push((i as u16, rejection)),
            }
        }
        if !self.refusals.is_empty() {
            let failed = self.refusals.len() as u16;
            return (Outcome::Rejected(Rejection::OrderNotReservable { failed }), false);
        }
        let single = c.shards.len() == 1;
        let tag = LineTag { home: c.shards[0], tentative: !single };
        let first = ReservationId::new(self.config.index, self.next_hold_seq);
        for (line, (row, admitted)) in c.lines.iter().zip(rows) {
            let seq = self.hold_line(at, &c.order_id, line.qty, row, c.expire_at, &c.idem_key, txns);
            if let Some(admitted) = admitted {
                self.count_hold(seq, line.qty as u32, admitted);
            }
            self.order_state.lines.insert(seq, tag);
            self.record_order(OrderUndo::Line { seq, prev: None });
        }
        if single {
            self.put_record(OrderRecord {
                order_id: c.order_id.clone(),
                shards: c.shards.clone(),
                expire_at: c.expire_at,
                state: OrderState::Committed,
                detail: String::new(),
                created_at: at,
                updated_at: at,
            });
        }
        let outcome = Outcome::OrderPrepared { first, lines: c.lines.len() as u16, expire_at: c.expire_at };
        (outcome, true)
    }

    /// The checks of a reserve, for one line of an order: its row and what
    /// its SKU's policy counts, or why it cannot be held.
    fn check_line(
        &self,
        at: Millis,
        order_id: &str,
        line: &crate::OrderLine,
        who: Buyer<'_>,
        cold: &ColdFacts,
    ) -> Result<(u32, Option<super::sale::Admitted>), Rejection> {
        if line.qty == 0 {
            return Err(Rejection::InvalidQuantity);
        }
        let first = self.table.find_sku(&line.sku_id).ok_or(Rejection::SkuNotFound)?;
        if let Some(seq) = self.find_order_line(order_hash(order_id), order_id, first, at) {
            let existing = ReservationId::new(self.config.index, seq);
            return Err(Rejection::DuplicateOrderLine { existing, status: self.holds[&seq].change.status });
        }
        let cold_line = cold.order(order_id).and_then(|holds| {
            holds.iter().find(|h| h.order_id == order_id && h.sku_id == line.sku_id && h.visible(at))
        });
        if let Some(hold) = cold_line {
            let existing = ReservationId::new(self.config.index, hold.seq);
            return Err(Rejection::DuplicateOrderLine { existing, status: hold.status });
        }
        let row = self.table.find_row(first, &line.warehouse_id).ok_or(Rejection::SkuNotFound)?;
        if self.ops.frozen(row) {
            return Err(Rejection::SkuFrozen);
        }
        let admitted = self.admit(at, first, line.qty, who)?;
        let available = self.table.row(row).available();
        if available < line.qty {
            return Err(Rejection::InsufficientStock { available });
        }
        Ok((row, admitted))
    }

    /// Holds a checked line: like a reserve, but outside the expiry queue.
    #[allow(clippy::too_many_arguments)]
    fn hold_line(
        &mut self,
        at: Millis,
        order_id: &str,
        qty: u64,
        row: u32,
        expire_at: Millis,
        idem_key: &str,
        txns: &mut Vec<Txn>,
    ) -> u64 {
        let qty32 = qty as u32;
        let (before, row_after) = self.change_row(row, at, |r| r.reserved += qty32);
        let seq = self.next_hold_seq;
        self.next_hold_seq += 1;
        let reservation_id = ReservationId::new(self.config.index, seq);
        self.holds.insert(
            seq,
            Hold {
                order_id: order_id.into(),
                row,
                qty: qty32,
                expire_at,
                idem_key: idem_key.into(),
                created_at: at,
                change: HoldChange { status: ReservationStatus::Reserved, updated_at: at, detail: None },
            },
        );
        self.orders.get_or_default(order_hash(order_id)).push(seq);
        self.record(Undo::NewHold { seq });
        let txn = self.txn(super::RowChange {
            kind: TxnKind::Reserve,
            row,
            qty,
            ref_id: reservation_id.to_string(),
            order_id: order_id.to_string(),
            detail: String::new(),
            before,
            after: row_after,
            at,
        });
        txns.push(txn);
        seq
    }

    /// The `RESERVED` lines of an order this shard holds, by sequence.
    fn order_lines(&self, order_id: &str) -> Vec<u64> {
        let Some(seqs) = self.orders.get(&order_hash(order_id)) else { return Vec::new() };
        seqs.iter()
            .copied()
            .filter(|seq| self.order_state.lines.contains_key(seq) && *self.holds[seq].order_id == *order_id)
            .collect()
    }

    /// Makes this shard's lines of an order follow `state`; returns how many
    /// changed.
    fn follow(&mut self, at: Millis, order_id: &str, state: OrderState, detail: &str, txns: &mut Vec<Txn>) -> u16 {
        let mut changed = 0;
        for seq in self.order_lines(order_id) {
            let tag = self.order_state.lines[&seq];
            match state {
                OrderState::Committed => {
                    if tag.tentative {
                        self.order_state.lines.insert(seq, LineTag { tentative: false, ..tag });
                        self.record_order(OrderUndo::Line { seq, prev: Some(tag) });
                        changed += 1;
                    }
                }
                OrderState::Aborted => {
                    self.release_hold(at, seq, ReservationStatus::Released, REASON_ORDER_ABORTED, txns);
                    changed += 1;
                }
                OrderState::Confirmed => {
                    self.confirm_line(at, seq, detail, txns);
                    changed += 1;
                }
                OrderState::Released => {
                    self.release_hold(at, seq, ReservationStatus::Released, detail, txns);
                    changed += 1;
                }
                OrderState::Expired => {
                    self.release_hold(at, seq, ReservationStatus::Expired, REASON_TIMEOUT, txns);
                    changed += 1;
                }
            }
        }
        changed
    }

    pub(super) fn decide_order(&mut self, at: Millis, c: &DecideOrder, txns: &mut Vec<Txn>) -> (Outcome, bool) {
        let decided = |state| (Outcome::OrderDecided { state }, false);
        let record = self.order_state.records.get(&c.order_id).filter(|r| record_visible(r, at)).cloned();
        let (state, detail) = match (&record, &c.decision) {
            (None, OrderDecision::Confirm { .. } | OrderDecision::Release { .. }) => {
                return (Outcome::Rejected(Rejection::OrderNotFound), false);
            }
            (None, OrderDecision::Commit) if at >= c.expire_at => (OrderState::Expired, String::new()),
            (None, OrderDecision::Commit) => (OrderState::Committed, String::new()),
            (None, OrderDecision::Abort) if at >= c.expire_at => (OrderState::Expired, String::new()),
            (None, OrderDecision::Abort) => (OrderState::Aborted, String::new()),
            (Some(r), OrderDecision::Commit | OrderDecision::Abort) => return decided(r.state),
            (Some(r), OrderDecision::Confirm { payment_id }) => match r.state {
                OrderState::Committed if at >= r.expire_at => (OrderState::Expired, String::new()),
                OrderState::Committed => (OrderState::Confirmed, payment_id.clone()),
                OrderState::Confirmed if r.detail == *payment_id => return decided(r.state),
                OrderState::Confirmed => return (Outcome::Rejected(Rejection::PaymentMismatch), false),
                OrderState::Aborted => return (Outcome::Rejected(Rejection::OrderAborted), false),
                OrderState::Released => return (Outcome::Rejected(Rejection::ReservationReleased), false),
                OrderState::Expired => return (Outcome::Rejected(Rejection::ReservationExpired), false),
            },
            (Some(r), OrderDecision::Release { reason }) => match r.state {
                OrderState::Committed if at >= r.expire_at => (OrderState::Expired, String::new()),
                OrderState::Committed => (OrderState::Released, reason.clone()),
                OrderState::Confirmed => return (Outcome::Rejected(Rejection::ReservationConfirmed), false),
                OrderState::Aborted => return (Outcome::Rejected(Rejection::OrderAborted), false),
                OrderState::Released | OrderState::Expired => return decided(r.state),
            },
        };
        let (shards, expire_at, created_at) = match &record {
            Some(r) => (r.shards.clone(), r.expire_at, r.created_at),
            None => (c.shards.clone(), c.expire_at, at),
        };
        self.put_record(OrderRecord {
            order_id: c.order_id.clone(),
            shards,
            expire_at,
            state,
            detail: detail.clone(),
            created_at,
            updated_at: at,
        });
        // The home holds lines of the order too: they follow at once. A
        // late confirm that found the order expired answers so, and is a
        // change all the same.
        self.follow(at, &c.order_id, state, &detail, txns);
        let outcome = match (&c.decision, state) {
            (OrderDecision::Confirm { .. }, OrderState::Expired) => Outcome::Rejected(Rejection::ReservationExpired),
            _ => Outcome::OrderDecided { state },
        };
        (outcome, true)
    }

    pub(super) fn finish_order(&mut self, at: Millis, c: &FinishOrder, txns: &mut Vec<Txn>) -> (Outcome, bool) {
        let lines = self.follow(at, &c.order_id, c.state, &c.detail, txns);
        (Outcome::OrderFinished { lines }, lines > 0)
    }

    pub(super) fn expire_orders(&mut self, at: Millis, c: &ExpireOrders, txns: &mut Vec<Txn>) -> u32 {
        let mut count = 0;
        for order_id in &c.order_ids {
            let due = self
                .order_state
                .records
                .get(order_id)
                .is_some_and(|r| r.state == OrderState::Committed && r.expire_at <= at);
            if due {
                let mut record = self.order_state.records[order_id].clone();
                record.state = OrderState::Expired;
                record.updated_at = at;
                self.put_record(record);
                self.follow(at, order_id, OrderState::Expired, "", txns);
                count += 1;
            }
        }
        count
    }

    /// Up to `max` committed orders of this home whose `expire_at <= at`:
    /// the ids for the next [`crate::Command::ExpireOrders`].
    pub fn due_order_expirations(&self, at: Millis, max: usize) -> Vec<String> {
        self.order_state.expiry.iter().take_while(|(e, _)| *e <= at).take(max).map(|(_, id)| id.clone()).collect()
    }

    /// An order's record, if this shard is its home and keeps it.
    pub fn order_record(&self, order_id: &str) -> Option<OrderRecord> {
        self.order_state.records.get(order_id).filter(|r| record_visible(r, self.last_at)).cloned()
    }

    /// The lines of orders to settle by asking their home: tentative ones
    /// held since before `tentative_before`, and ones past their deadline
    /// at `at` (their home expires them). `all`: every line of an order
    /// still `RESERVED`, as after a restart.
    pub fn unsettled_order_lines(&self, at: Millis, tentative_before: Millis, all: bool) -> Vec<OrderLineView> {
        let mut views: Vec<OrderLineView> = self
            .order_state
            .lines
            .iter()
            .filter_map(|(seq, tag)| {
                let hold = &self.holds[seq];
                let due = all || (tag.tentative && hold.created_at < tentative_before) || hold.expire_at <= at;
                due.then(|| OrderLineView {
                    order_id: hold.order_id.to_string(),
                    home: tag.home,
                    tentative: tag.tentative,
                    created_at: hold.created_at,
                    expire_at: hold.expire_at,
                })
            })
            .collect();
        views.sort_by(|a, b| a.order_id.cmp(&b.order_id));
        views.dedup_by(|a, b| a.order_id == b.order_id);
        views
    }

    /// Forgets at most `max` final order records past retention at `at`;
    /// they are already invisible, so this only reclaims memory.
    pub(super) fn purge_orders(&mut self, at: Millis, max: usize) -> usize {
        let mut purged = 0;
        while purged < max {
            match self.order_state.finished.front() {
                Some((updated_at, _)) if updated_at.saturating_add(RECORD_RETENTION_MS) <= at => {
                    let (_, order_id) = self.order_state.finished.pop_front().expect("checked");
                    if self.order_state.records.get(&order_id).is_some_and(|r| !record_visible(r, at)) {
                        self.order_state.records.remove(&order_id);
                    }
                    purged += 1;
                }
                _ => break,
            }
        }
        purged
    }

    pub(super) fn order_image(&self) -> (Vec<OrderRecord>, Vec<(u64, u16, bool)>) {
        let records = self.order_state.records.values().cloned().collect();
        let mut lines: Vec<(u64, u16, bool)> =
            self.order_state.lines.iter().map(|(&seq, t)| (seq, t.home, t.tentative)).collect();
        lines.sort_unstable();
        (records, lines)
    }

    pub(super) fn load_orders(records: Vec<OrderRecord>, lines: Vec<(u64, u16, bool)>) -> Orders {
        let mut orders = Orders {
            lines: lines.into_iter().map(|(seq, home, tentative)| (seq, LineTag { home, tentative })).collect(),
            ..Orders::default()
        };
        let mut finished: Vec<(Millis, String)> = Vec::new();
        for record in records {
            if record.state == OrderState::Committed {
                orders.expiry.insert((record.expire_at, record.order_id.clone()));
            } else {
                finished.push((record.updated_at, record.order_id.clone()));
            }
            orders.records.insert(record.order_id.clone(), record);
        }
        finished.sort();
        orders.finished = finished.into();
        orders
    }

    /// Order invariants: a tag is of a `RESERVED` hold outside the expiry
    /// queue; a committed record is in the home's timer, and only those.
    pub(super) fn check_orders(&self) -> Result<(), String> {
        for seq in self.order_state.lines.keys() {
            let Some(hold) = self.holds.get(seq) else { return Err(format!("order tag of missing hold {seq}")) };
            if hold.change.status != ReservationStatus::Reserved {
                return Err(format!("order tag of finished hold {seq}"));
            }
        }
        let committed: BTreeSet<(Millis, String)> = self
            .order_state
            .records
            .values()
            .filter(|r| r.state == OrderState::Committed)
            .map(|r| (r.expire_at, r.order_id.clone()))
            .collect();
        if committed != self.order_state.expiry {
            return Err("order expiry differs from the committed records".into());
        }
        Ok(())
    }
}
