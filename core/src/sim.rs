//! Seeded simulation: random command streams, random batch boundaries and
//! rollbacks, against a deliberately naive reference model. Every outcome
//! must match the model, every invariant must hold after every command, and
//! replaying the committed entries must rebuild the identical state.
//!
//! The shard moves records to a cold tier constantly (tiny windows, tiny
//! filters that pass many keys falsely): a command that needs one is given
//! the records of a cold tier built from the committed entries, as the
//! service does, and must decide exactly as the model, which never moves
//! anything.
//!
//! A failure prints its seed; rerun one seed with `SIM_SEED=<seed>`.

use std::collections::{BTreeMap, HashMap};

use crate::*;

/// splitmix64: tiny, deterministic, good enough to drive a simulator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

#[derive(Clone, Debug)]
struct ModelHold {
    order: String,
    sku: String,
    warehouse: String,
    qty: u64,
    status: ReservationStatus,
    expire_at: Millis,
    payment: Option<String>,
    /// While `RESERVED` under a policy: the policy's generation, and the
    /// buyer and channel it counted.
    counted: Option<(u64, Option<String>, Option<String>)>,
    /// While `RESERVED` as a line of an order: its home, and whether it is
    /// still tentative.
    order_line: Option<(u16, bool)>,
}

#[derive(Clone, Debug)]
struct ModelOrder {
    shards: Vec<u16>,
    expire_at: Millis,
    state: OrderState,
    detail: String,
}

/// A sale policy and its counts, as plainly as possible.
#[derive(Clone, Debug)]
struct ModelPolicy {
    policy: SalePolicy,
    generation: u64,
    buyers: BTreeMap<String, u64>,
    channels: BTreeMap<String, u64>,
}

#[derive(Clone, Default)]
struct ModelRow {
    levels: Levels,
    received: u64,
    version: u64,
    updated_at: Millis,
    ops: RowOps,
}

#[derive(Clone, Debug)]
struct ModelAdjustment {
    sku: String,
    warehouse: String,
    delta: i64,
    proposed_by: String,
    expires_at: Millis,
    status: AdjustmentStatus,
}

#[derive(Clone, Debug)]
struct ModelTransfer {
    sku: String,
    from: String,
    to: String,
    qty: u64,
    status: TransferStatus,
}

/// The semantics written as plainly as possible: linear scans, no indexes.
#[derive(Clone)]
struct Model {
    shard: u16,
    idem_ttl: Millis,
    rows: BTreeMap<(String, String), ModelRow>,
    holds: BTreeMap<u64, ModelHold>,
    idem: HashMap<String, (u64, Outcome, Millis)>,
    next_seq: u64,
    adjustments: BTreeMap<u64, ModelAdjustment>,
    transfers: BTreeMap<u64, ModelTransfer>,
    /// Each SKU's first warehouse (where its policy's txns are recorded).
    first_warehouse: BTreeMap<String, String>,
    policies: BTreeMap<String, ModelPolicy>,
    generations: u64,
    /// Records of the orders this shard is home of.
    orders: BTreeMap<String, ModelOrder>,
    /// Why the last order's lines were refused.
    refusals: Vec<(u16, Rejection)>,
}

impl Model {
    fn new_row(&mut self, sku: &str, wh: &str) {
        self.first_warehouse.entry(sku.to_string()).or_insert_with(|| wh.to_string());
        self.rows.entry((sku.to_string(), wh.to_string())).or_default();
    }

    /// The policy check of a reserve: what it counts, or why it is refused.
    #[allow(clippy::type_complexity)]
    fn admit(
        &self,
        at: Millis,
        sku: &str,
        qty: u64,
        buyer: &str,
        channel: &str,
    ) -> Result<Option<(u64, Option<String>, Option<String>)>, Rejection> {
        let Some(p) = self.policies.get(sku) else { return Ok(None) };
        if let Some(starts_at) = p.policy.sale_starts_at.filter(|&s| at < s) {
            return Err(Rejection::SaleNotStarted { starts_at });
        }
        if p.policy.sale_ends_at.is_some_and(|e| at >= e) {
            return Err(Rejection::SaleEnded);
        }
        let mut counted_channel = None;
        if !p.policy.channel_quotas.is_empty() {
            if channel.is_empty() {
                return Err(Rejection::ChannelRequired);
            }
            let Some(&(_, quota)) = p.policy.channel_quotas.iter().find(|(c, _)| c == channel) else {
                return Err(Rejection::UnknownChannel);
            };
            let used = p.channels.get(channel).copied().unwrap_or(0);
            if used + qty > quota {
                return Err(Rejection::ChannelQuotaExhausted { quota, used });
            }
            counted_channel = Some(channel.to_string());
        }
        let mut counted_buyer = None;
        if let Some(limit) = p.policy.max_per_buyer {
            if buyer.is_empty() {
                return Err(Rejection::BuyerRequired);
            }
            let held = p.buyers.get(buyer).copied().unwrap_or(0);
            if held + qty > limit as u64 {
                return Err(Rejection::PurchaseLimitExceeded { limit, held: held as u32 });
            }
            counted_buyer = Some(buyer.to_string());
        }
        Ok(Some((p.generation, counted_buyer, counted_channel)))
    }

    /// A counted hold left `RESERVED`: a release gives its units back.
    fn uncount(&mut self, seq: u64, status: ReservationStatus) {
        let h = self.holds.get_mut(&seq).unwrap();
        let Some((generation, buyer, channel)) = h.counted.take() else { return };
        if status == ReservationStatus::Confirmed {
            return;
        }
        let (sku, qty) = (h.sku.clone(), h.qty);
        let Some(p) = self.policies.get_mut(&sku).filter(|p| p.generation == generation) else { return };
        if let Some(b) = buyer {
            if let Some(units) = p.buyers.get_mut(&b) {
                *units = units.saturating_sub(qty);
                if *units == 0 {
                    p.buyers.remove(&b);
                }
            }
        }
        if let Some(c) = channel {
            let units = p.channels.get_mut(&c).expect("a counted channel");
            *units -= qty;
            if *units == 0 {
                p.channels.remove(&c);
            }
        }
    }

    fn touch(&mut self, sku: &str, wh: &str, at: Millis, f: impl FnOnce(&mut ModelRow)) {
        let row = self.rows.get_mut(&(sku.to_string(), wh.to_string())).unwrap();
        f(row);
        row.version += 1;
        row.updated_at = at;
    }

    fn finish(&mut self, seq: u64, at: Millis, status: ReservationStatus) {
        let h = self.holds[&seq].clone();
        self.touch(&h.sku, &h.warehouse, at, |r| {
            r.levels.reserved -= h.qty;
            r.levels.available += h.qty;
        });
        let hold = self.holds.get_mut(&seq).unwrap();
        hold.status = status;
        hold.order_line = None;
        self.uncount(seq, status);
    }

    fn confirm_hold(&mut self, seq: u64, at: Millis, payment: &str) {
        let h = self.holds[&seq].clone();
        self.touch(&h.sku, &h.warehouse, at, |row| {
            row.levels.reserved -= h.qty;
            row.levels.sold += h.qty;
        });
        let hold = self.holds.get_mut(&seq).unwrap();
        hold.status = ReservationStatus::Confirmed;
        hold.payment = Some(payment.to_string());
        hold.order_line = None;
        self.uncount(seq, ReservationStatus::Confirmed);
    }

    /// This shard's lines of an order follow `state`; how many changed.
    fn follow(&mut self, at: Millis, order: &str, state: OrderState, detail: &str) -> u16 {
        let seqs: Vec<u64> =
            self.holds.iter().filter(|(_, h)| h.order == order && h.order_line.is_some()).map(|(&s, _)| s).collect();
        let mut n = 0;
        for seq in seqs {
            match state {
                OrderState::Committed => {
                    let line = self.holds.get_mut(&seq).unwrap().order_line.as_mut().unwrap();
                    if line.1 {
                        line.1 = false;
                        n += 1;
                    }
                }
                OrderState::Aborted | OrderState::Released => {
                    self.finish(seq, at, ReservationStatus::Released);
                    n += 1;
                }
                OrderState::Expired => {
                    self.finish(seq, at, ReservationStatus::Expired);
                    n += 1;
                }
                OrderState::Confirmed => {
                    self.confirm_hold(seq, at, detail);
                    n += 1;
                }
            }
        }
        n
    }

    /// The checks of one line of an order, as a reserve of it alone.
    #[allow(clippy::type_complexity)]
    fn check_line(
        &self,
        at: Millis,
        order: &str,
        line: &OrderLine,
        buyer: &str,
        channel: &str,
    ) -> Result<Option<(u64, Option<String>, Option<String>)>, Rejection> {
        if line.qty == 0 {
            return Err(Rejection::InvalidQuantity);
        }
        if !self.rows.keys().any(|(s, _)| *s == line.sku_id) {
            return Err(Rejection::SkuNotFound);
        }
        if let Some((&seq, h)) = self.holds.iter().find(|(_, h)| h.order == order && h.sku == line.sku_id) {
            return Err(Rejection::DuplicateOrderLine {
                existing: ReservationId::new(self.shard, seq),
                status: h.status,
            });
        }
        let Some(row) = self.rows.get(&(line.sku_id.clone(), line.warehouse_id.clone())) else {
            return Err(Rejection::SkuNotFound);
        };
        if row.ops.frozen {
            return Err(Rejection::SkuFrozen);
        }
        let counted = self.admit(at, &line.sku_id, line.qty, buyer, channel)?;
        if row.levels.available < line.qty {
            return Err(Rejection::InsufficientStock { available: row.levels.available });
        }
        Ok(counted)
    }

    fn apply(&mut self, at: Millis, c: &Command) -> (Outcome, bool) {
        use Outcome::*;
        use ReservationStatus as S;
        let rej = |r| (Rejected(r), false);
        if let Command::Expire(e) = c {
            let mut n = 0;
            for id in &e.ids {
                let seq = id.seq();
                if id.shard() == self.shard
                    && self
                        .holds
                        .get(&seq)
                        .is_some_and(|h| h.status == S::Reserved && h.expire_at <= at && h.order_line.is_none())
                {
                    self.finish(seq, at, S::Expired);
                    n += 1;
                }
            }
            return (Expired { count: n }, n > 0);
        }
        if let Command::Repair(r) = c {
            let key = (r.sku_id.clone(), r.warehouse_id.clone());
            if !self.rows.contains_key(&key) {
                return (Repaired { rows: 0 }, false);
            }
            self.touch(&r.sku_id, &r.warehouse_id, at, |_| {});
            return (Repaired { rows: 1 }, true);
        }
        if let Command::ExpireAdjustments(e) = c {
            let mut n = 0;
            for id in &e.ids {
                let due = id.shard() == self.shard
                    && self
                        .adjustments
                        .get(&id.seq())
                        .is_some_and(|a| a.status == AdjustmentStatus::Pending && a.expires_at <= at);
                if due {
                    let a = self.adjustments.get_mut(&id.seq()).unwrap();
                    a.status = AdjustmentStatus::Expired;
                    let (sku, wh) = (a.sku.clone(), a.warehouse.clone());
                    self.touch(&sku, &wh, at, |_| {});
                    n += 1;
                }
            }
            return (AdjustmentsExpired { count: n }, n > 0);
        }
        if let Command::FinishOrder(f) = c {
            let n = self.follow(at, &f.order_id, f.state, &f.detail);
            return (OrderFinished { lines: n }, n > 0);
        }
        if let Command::ExpireOrders(e) = c {
            let mut n = 0;
            for id in &e.order_ids {
                let due = self.orders.get(id).is_some_and(|o| o.state == OrderState::Committed && o.expire_at <= at);
                if due {
                    self.orders.get_mut(id).unwrap().state = OrderState::Expired;
                    self.follow(at, id, OrderState::Expired, "");
                    n += 1;
                }
            }
            return (OrdersExpired { count: n }, n > 0);
        }
        if let Command::DecideOrder(d) = c {
            let record = self.orders.get(&d.order_id).cloned();
            let decided = |state| (OrderDecided { state }, false);
            let (state, detail) = match (&record, &d.decision) {
                (None, OrderDecision::Confirm { .. } | OrderDecision::Release { .. }) => {
                    return rej(Rejection::OrderNotFound)
                }
                (None, OrderDecision::Commit | OrderDecision::Abort) if at >= d.expire_at => {
                    (OrderState::Expired, String::new())
                }
                (None, OrderDecision::Commit) => (OrderState::Committed, String::new()),
                (None, OrderDecision::Abort) => (OrderState::Aborted, String::new()),
                (Some(r), OrderDecision::Commit | OrderDecision::Abort) => return decided(r.state),
                (Some(r), OrderDecision::Confirm { payment_id }) => match r.state {
                    OrderState::Committed if at >= r.expire_at => (OrderState::Expired, String::new()),
                    OrderState::Committed => (OrderState::Confirmed, payment_id.clone()),
                    OrderState::Confirmed if r.detail == *payment_id => return decided(r.state),
                    OrderState::Confirmed => return rej(Rejection::PaymentMismatch),
                    OrderState::Aborted => return rej(Rejection::OrderAborted),
                    OrderState::Released => return rej(Rejection::ReservationReleased),
                    OrderState::Expired => return rej(Rejection::ReservationExpired),
                },
                (Some(r), OrderDecision::Release { reason }) => match r.state {
                    OrderState::Committed if at >= r.expire_at => (OrderState::Expired, String::new()),
                    OrderState::Committed => (OrderState::Released, reason.clone()),
                    OrderState::Confirmed => return rej(Rejection::ReservationConfirmed),
                    OrderState::Aborted => return rej(Rejection::OrderAborted),
                    OrderState::Released | OrderState::Expired => return decided(r.state),
                },
            };
            let (shards, expire_at) = record.map_or((d.shards.clone(), d.expire_at), |r| (r.shards, r.expire_at));
            self.orders.insert(d.order_id.clone(), ModelOrder { shards, expire_at, state, detail: detail.clone() });
            self.follow(at, &d.order_id, state, &detail);
            return match (&d.decision, state) {
                (OrderDecision::Confirm { .. }, OrderState::Expired) => (Rejected(Rejection::ReservationExpired), true),
                _ => (OrderDecided { state }, true),
            };
        }
        let key = c.idem_key().unwrap().to_string();
        if let Some(&(fp, outcome, expires)) = self.idem.get(&key) {
            if expires > at {
                return if fp == c.fingerprint() { (outcome, false) } else { rej(Rejection::IdempotencyKeyReused) };
            }
        }
        let hold_of = |m: &Model, id: ReservationId| {
            if id.shard() == m.shard {
                m.holds.get(&id.seq()).cloned()
            } else {
                None
            }
        };
        let result = match c {
            Command::DecideOrder(_) | Command::FinishOrder(_) | Command::ExpireOrders(_) => unreachable!("above"),
            Command::PrepareOrder(p) => {
                let mut skus: Vec<&str> = p.lines.iter().map(|l| l.sku_id.as_str()).collect();
                skus.sort_unstable();
                let valid = !p.lines.is_empty()
                    && p.shards.windows(2).all(|w| w[0] < w[1])
                    && p.shards.contains(&self.shard)
                    && skus.windows(2).all(|w| w[0] != w[1])
                    && p.expire_at > at;
                if !valid {
                    rej(Rejection::InvalidBatch)
                } else {
                    let checked: Vec<_> =
                        p.lines.iter().map(|l| self.check_line(at, &p.order_id, l, &p.buyer_id, &p.channel)).collect();
                    self.refusals = checked
                        .iter()
                        .enumerate()
                        .filter_map(|(i, r)| r.as_ref().err().map(|e| (i as u16, *e)))
                        .collect();
                    if !self.refusals.is_empty() {
                        rej(Rejection::OrderNotReservable { failed: self.refusals.len() as u16 })
                    } else {
                        let first = ReservationId::new(self.shard, self.next_seq);
                        let tentative = p.shards.len() > 1;
                        for (l, counted) in p.lines.iter().zip(checked) {
                            let counted = counted.unwrap();
                            if let Some((_, b, ch)) = &counted {
                                let pol = self.policies.get_mut(&l.sku_id).unwrap();
                                if let Some(b) = b {
                                    *pol.buyers.entry(b.clone()).or_default() += l.qty;
                                }
                                if let Some(ch) = ch {
                                    *pol.channels.entry(ch.clone()).or_default() += l.qty;
                                }
                            }
                            self.touch(&l.sku_id, &l.warehouse_id, at, |row| {
                                row.levels.available -= l.qty;
                                row.levels.reserved += l.qty;
                            });
                            let seq = self.next_seq;
                            self.next_seq += 1;
                            self.holds.insert(
                                seq,
                                ModelHold {
                                    order: p.order_id.clone(),
                                    sku: l.sku_id.clone(),
                                    warehouse: l.warehouse_id.clone(),
                                    qty: l.qty,
                                    status: S::Reserved,
                                    expire_at: p.expire_at,
                                    payment: None,
                                    counted,
                                    order_line: Some((p.shards[0], tentative)),
                                },
                            );
                        }
                        if !tentative {
                            let order = ModelOrder {
                                shards: p.shards.clone(),
                                expire_at: p.expire_at,
                                state: OrderState::Committed,
                                detail: String::new(),
                            };
                            self.orders.insert(p.order_id.clone(), order);
                        }
                        (OrderPrepared { first, lines: p.lines.len() as u16, expire_at: p.expire_at }, true)
                    }
                }
            }
            Command::Evict(_) => unreachable!("the model keeps everything in one place"),
            Command::ExpireAdjustments(_) | Command::Repair(_) => unreachable!("applied above"),
            Command::SetPolicy(c) => match self.first_warehouse.get(&c.sku_id).cloned() {
                None => rej(Rejection::SkuNotFound),
                Some(first) => match (&c.policy, self.policies.contains_key(&c.sku_id)) {
                    (None, false) => (PolicySet { present: false }, false),
                    (None, true) => {
                        self.policies.remove(&c.sku_id);
                        self.touch(&c.sku_id, &first, at, |_| {});
                        (PolicySet { present: false }, true)
                    }
                    (Some(policy), true) => {
                        let p = self.policies.get_mut(&c.sku_id).unwrap();
                        let drops_limit = p.policy.max_per_buyer.is_some() && policy.max_per_buyer.is_none();
                        p.policy = policy.clone();
                        if drops_limit {
                            p.buyers.clear();
                            for h in self.holds.values_mut().filter(|h| h.sku == c.sku_id) {
                                if let Some(counted) = &mut h.counted {
                                    counted.1 = None;
                                }
                            }
                        }
                        self.touch(&c.sku_id, &first, at, |_| {});
                        (PolicySet { present: true }, true)
                    }
                    (Some(policy), false) => {
                        self.generations += 1;
                        let p = ModelPolicy {
                            policy: policy.clone(),
                            generation: self.generations,
                            buyers: BTreeMap::new(),
                            channels: BTreeMap::new(),
                        };
                        self.policies.insert(c.sku_id.clone(), p);
                        self.touch(&c.sku_id, &first, at, |_| {});
                        (PolicySet { present: true }, true)
                    }
                },
            },
            Command::Freeze(f) => {
                let rows: Vec<(String, String)> = self
                    .rows
                    .keys()
                    .filter(|(s, w)| *s == f.sku_id && f.warehouse_id.as_ref().is_none_or(|x| x == w))
                    .cloned()
                    .collect();
                if rows.is_empty() {
                    rej(Rejection::SkuNotFound)
                } else {
                    let mut n = 0;
                    for (sku, wh) in rows {
                        if self.rows[&(sku.clone(), wh.clone())].ops.frozen != f.frozen {
                            self.touch(&sku, &wh, at, |row| row.ops.frozen = f.frozen);
                            n += 1;
                        }
                    }
                    (Frozen { rows: n }, n > 0)
                }
            }
            Command::ProposeAdjustment(p) => {
                if p.delta == 0 {
                    rej(Rejection::InvalidQuantity)
                } else if p.delta.unsigned_abs() > ROW_UNITS_MAX {
                    rej(Rejection::QuantityOverflow)
                } else if !self.rows.contains_key(&(p.sku_id.clone(), p.warehouse_id.clone())) {
                    rej(Rejection::SkuNotFound)
                } else {
                    let seq = self.adjustments.len() as u64 + 1;
                    self.touch(&p.sku_id, &p.warehouse_id, at, |_| {});
                    self.adjustments.insert(
                        seq,
                        ModelAdjustment {
                            sku: p.sku_id.clone(),
                            warehouse: p.warehouse_id.clone(),
                            delta: p.delta,
                            proposed_by: p.operator.clone(),
                            expires_at: at + p.ttl_ms,
                            status: AdjustmentStatus::Pending,
                        },
                    );
                    (AdjustmentProposed { id: AdjustmentId::new(self.shard, seq) }, true)
                }
            }
            Command::DecideAdjustment(d) => {
                let id = d.adjustment_id;
                let found = if id.shard() == self.shard { self.adjustments.get(&id.seq()).cloned() } else { None };
                match found {
                    None => rej(Rejection::AdjustmentNotFound),
                    Some(a) if a.status != AdjustmentStatus::Pending => {
                        rej(Rejection::AdjustmentNotPending { status: a.status })
                    }
                    Some(a) if at >= a.expires_at => {
                        self.touch(&a.sku, &a.warehouse, at, |_| {});
                        self.adjustments.get_mut(&id.seq()).unwrap().status = AdjustmentStatus::Expired;
                        (Rejected(Rejection::AdjustmentNotPending { status: AdjustmentStatus::Expired }), true)
                    }
                    Some(a) if d.approve => {
                        let row = &self.rows[&(a.sku.clone(), a.warehouse.clone())];
                        let available = row.levels.available;
                        if a.proposed_by == d.operator {
                            rej(Rejection::SameOperator)
                        } else if a.delta < 0 && a.delta.unsigned_abs() > available {
                            rej(Rejection::InsufficientStock { available })
                        } else if a.delta > 0 && row.levels.total() + a.delta as u64 > ROW_UNITS_MAX {
                            rej(Rejection::QuantityOverflow)
                        } else {
                            self.touch(&a.sku, &a.warehouse, at, |row| {
                                row.levels.available = (row.levels.available as i64 + a.delta) as u64;
                                row.ops.adjusted += a.delta;
                            });
                            self.adjustments.get_mut(&id.seq()).unwrap().status = AdjustmentStatus::Applied;
                            (AdjustmentDecided { id, status: AdjustmentStatus::Applied }, true)
                        }
                    }
                    Some(a) => {
                        self.touch(&a.sku, &a.warehouse, at, |_| {});
                        self.adjustments.get_mut(&id.seq()).unwrap().status = AdjustmentStatus::Rejected;
                        (AdjustmentDecided { id, status: AdjustmentStatus::Rejected }, true)
                    }
                }
            }
            Command::DispatchTransfer(t) => {
                let from = (t.sku_id.clone(), t.from_warehouse_id.clone());
                if t.qty == 0 {
                    rej(Rejection::InvalidQuantity)
                } else if t.from_warehouse_id == t.to_warehouse_id {
                    rej(Rejection::SameWarehouse)
                } else if !self.rows.contains_key(&from) {
                    rej(Rejection::SkuNotFound)
                } else if self.rows[&from].levels.available < t.qty {
                    rej(Rejection::InsufficientStock { available: self.rows[&from].levels.available })
                } else {
                    self.new_row(&t.sku_id, &t.to_warehouse_id);
                    self.touch(&t.sku_id, &t.from_warehouse_id, at, |row| {
                        row.levels.available -= t.qty;
                        row.ops.transferred_out += t.qty;
                    });
                    self.touch(&t.sku_id, &t.to_warehouse_id, at, |row| row.ops.in_transit += t.qty);
                    let seq = self.transfers.len() as u64 + 1;
                    self.transfers.insert(
                        seq,
                        ModelTransfer {
                            sku: t.sku_id.clone(),
                            from: t.from_warehouse_id.clone(),
                            to: t.to_warehouse_id.clone(),
                            qty: t.qty,
                            status: TransferStatus::InTransit,
                        },
                    );
                    (TransferDispatched { id: TransferId::new(self.shard, seq) }, true)
                }
            }
            Command::FinishTransfer(f) => {
                let id = f.transfer_id;
                let found = if id.shard() == self.shard { self.transfers.get(&id.seq()).cloned() } else { None };
                match found {
                    None => rej(Rejection::TransferNotFound),
                    Some(t) if t.status != TransferStatus::InTransit => {
                        rej(Rejection::TransferNotInTransit { status: t.status })
                    }
                    Some(t) => {
                        let lands = if f.arrive { &t.to } else { &t.from };
                        if self.rows[&(t.sku.clone(), lands.clone())].levels.total() + t.qty > ROW_UNITS_MAX {
                            rej(Rejection::QuantityOverflow)
                        } else if f.arrive {
                            self.touch(&t.sku, &t.to, at, |row| {
                                row.levels.available += t.qty;
                                row.ops.in_transit -= t.qty;
                                row.ops.transferred_in += t.qty;
                            });
                            self.transfers.get_mut(&id.seq()).unwrap().status = TransferStatus::Arrived;
                            (TransferFinished { id, status: TransferStatus::Arrived }, true)
                        } else {
                            self.touch(&t.sku, &t.from, at, |row| {
                                row.levels.available += t.qty;
                                row.ops.transferred_out -= t.qty;
                            });
                            self.touch(&t.sku, &t.to, at, |row| row.ops.in_transit -= t.qty);
                            self.transfers.get_mut(&id.seq()).unwrap().status = TransferStatus::Cancelled;
                            (TransferFinished { id, status: TransferStatus::Cancelled }, true)
                        }
                    }
                }
            }
            Command::Receive(r) => {
                let k = (r.sku_id.clone(), r.warehouse_id.clone());
                if r.qty == 0 {
                    rej(Rejection::InvalidQuantity)
                } else if r.qty > ROW_UNITS_MAX - self.rows.get(&k).map_or(0, |row| row.levels.total()) {
                    rej(Rejection::QuantityOverflow)
                } else {
                    self.new_row(&k.0, &k.1);
                    self.touch(&r.sku_id, &r.warehouse_id, at, |row| {
                        row.levels.available += r.qty;
                        row.received += r.qty;
                    });
                    let row = &self.rows[&(r.sku_id.clone(), r.warehouse_id.clone())];
                    (Received { levels: row.levels, version: row.version, updated_at: row.updated_at }, true)
                }
            }
            Command::Reserve(_) | Command::ReserveAs(_) => {
                let r = c.as_reserve().unwrap();
                let (buyer, channel) = match c {
                    Command::ReserveAs(a) => (a.buyer_id.as_str(), a.channel.as_str()),
                    _ => ("", ""),
                };
                let line = self.holds.iter().find(|(_, h)| h.order == r.order_id && h.sku == r.sku_id);
                if r.qty == 0 {
                    rej(Rejection::InvalidQuantity)
                } else if !self.rows.keys().any(|(s, _)| *s == r.sku_id) {
                    rej(Rejection::SkuNotFound)
                } else if let Some((&seq, h)) = line {
                    let id = ReservationId::new(self.shard, seq);
                    if h.order_line.is_none()
                        && h.status == S::Reserved
                        && at < h.expire_at
                        && h.qty == r.qty
                        && h.warehouse == r.warehouse_id
                    {
                        (Reserved { reservation_id: id, expire_at: h.expire_at }, false)
                    } else {
                        rej(Rejection::DuplicateOrderLine { existing: id, status: h.status })
                    }
                } else if let Some(row) = self.rows.get(&(r.sku_id.clone(), r.warehouse_id.clone())) {
                    let admitted = self.admit(at, &r.sku_id, r.qty, buyer, channel);
                    if row.ops.frozen {
                        rej(Rejection::SkuFrozen)
                    } else if let Err(rejection) = admitted {
                        rej(rejection)
                    } else if row.levels.available < r.qty {
                        rej(Rejection::InsufficientStock { available: row.levels.available })
                    } else {
                        let counted = admitted.unwrap();
                        if let Some((_, b, ch)) = &counted {
                            let p = self.policies.get_mut(&r.sku_id).unwrap();
                            if let Some(b) = b {
                                *p.buyers.entry(b.clone()).or_default() += r.qty;
                            }
                            if let Some(ch) = ch {
                                *p.channels.entry(ch.clone()).or_default() += r.qty;
                            }
                        }
                        self.touch(&r.sku_id, &r.warehouse_id, at, |row| {
                            row.levels.available -= r.qty;
                            row.levels.reserved += r.qty;
                        });
                        let seq = self.next_seq;
                        self.next_seq += 1;
                        let expire_at = at + r.ttl_ms;
                        self.holds.insert(
                            seq,
                            ModelHold {
                                order: r.order_id.clone(),
                                sku: r.sku_id.clone(),
                                warehouse: r.warehouse_id.clone(),
                                qty: r.qty,
                                status: S::Reserved,
                                expire_at,
                                payment: None,
                                counted,
                                order_line: None,
                            },
                        );
                        (Reserved { reservation_id: ReservationId::new(self.shard, seq), expire_at }, true)
                    }
                } else {
                    rej(Rejection::SkuNotFound)
                }
            }
            Command::Confirm(r) => match hold_of(self, r.reservation_id) {
                None => rej(Rejection::ReservationNotFound),
                Some(h) => match h.status {
                    S::Confirmed if h.payment.as_deref() == Some(&r.payment_id) => {
                        (Confirmed { reservation_id: r.reservation_id }, false)
                    }
                    S::Confirmed => rej(Rejection::PaymentMismatch),
                    S::Released => rej(Rejection::ReservationReleased),
                    S::Expired => rej(Rejection::ReservationExpired),
                    S::Reserved if h.order_line.is_some() => rej(Rejection::PartOfOrder),
                    S::Reserved if at >= h.expire_at => {
                        self.finish(r.reservation_id.seq(), at, S::Expired);
                        (Rejected(Rejection::ReservationExpired), true)
                    }
                    S::Reserved => {
                        self.confirm_hold(r.reservation_id.seq(), at, &r.payment_id);
                        (Confirmed { reservation_id: r.reservation_id }, true)
                    }
                },
            },
            Command::Release(r) => match hold_of(self, r.reservation_id) {
                None => rej(Rejection::ReservationNotFound),
                Some(h) => {
                    let id = r.reservation_id;
                    match h.status {
                        S::Confirmed => rej(Rejection::ReservationConfirmed),
                        s @ (S::Released | S::Expired) => (Released { reservation_id: id, status: s }, false),
                        S::Reserved if h.order_line.is_some() => rej(Rejection::PartOfOrder),
                        S::Reserved => {
                            let status = if at >= h.expire_at { S::Expired } else { S::Released };
                            self.finish(id.seq(), at, status);
                            (Released { reservation_id: id, status }, true)
                        }
                    }
                }
            },
            Command::ReceiveBatch(b) => {
                let mut seen = std::collections::HashSet::new();
                let problem = b.items.iter().find_map(|i| {
                    if i.qty == 0 {
                        Some(Rejection::InvalidQuantity)
                    } else if !seen.insert((i.sku_id.clone(), i.warehouse_id.clone())) {
                        Some(Rejection::InvalidBatch)
                    } else if i.qty
                        > ROW_UNITS_MAX
                            - self.rows.get(&(i.sku_id.clone(), i.warehouse_id.clone())).map_or(0, |r| r.levels.total())
                    {
                        Some(Rejection::QuantityOverflow)
                    } else {
                        None
                    }
                });
                match (problem, b.items.is_empty()) {
                    (Some(r), _) => rej(r),
                    (None, true) => rej(Rejection::InvalidBatch),
                    (None, false) => {
                        for i in &b.items {
                            self.new_row(&i.sku_id, &i.warehouse_id);
                            self.touch(&i.sku_id, &i.warehouse_id, at, |row| {
                                row.levels.available += i.qty;
                                row.received += i.qty;
                            });
                        }
                        let units = b.items.iter().map(|i| i.qty).sum();
                        (ReceivedBatch { rows: b.items.len() as u32, units }, true)
                    }
                }
            }
            Command::Expire(_) => unreachable!(),
        };
        if result.1 {
            self.idem.insert(key, (c.fingerprint(), result.0, at + self.idem_ttl));
        }
        result
    }
}

/// The cold tier as the service builds it: the records of every committed
/// entry, derived by `cold_changes`.
#[derive(Default)]
struct ColdModel {
    holds: BTreeMap<u64, ColdHold>,
    idem: HashMap<u128, ColdIdem>,
}

impl ColdModel {
    fn ingest(&mut self, idem_ttl: Millis, entry: &Entry) {
        let changes = cold_changes(idem_ttl, entry, |seq| self.holds.get(&seq).cloned()).expect("every hold is known");
        for change in changes {
            match change {
                ColdChange::Hold(h) => {
                    self.holds.insert(h.seq, h);
                }
                ColdChange::Idem(r) => {
                    self.idem.insert(r.key, r);
                }
            }
        }
    }

    /// What the cold tier answers to `needs`.
    fn facts(&self, needs: &ColdQuery) -> ColdFacts {
        ColdFacts {
            key: needs.key.map(|k| (k, self.idem.get(&k).cloned())),
            hold: needs.hold.map(|seq| (seq, self.holds.get(&seq).cloned())),
            order: needs
                .order
                .as_ref()
                .map(|o| (o.clone(), self.holds.values().filter(|h| h.order_id == *o).cloned().collect())),
        }
    }
}

/// How often the cold tier was asked and had the record: the simulation
/// must reach every kind of cold decision.
#[derive(Default, Debug)]
struct ColdStats {
    /// Operator outcomes reached, by name.
    operator: std::collections::BTreeMap<&'static str, u64>,
    evictions: u64,
    lookups: u64,
    keys_found: u64,
    holds_found: u64,
    orders_found: u64,
}

/// A name for the outcomes of operator commands (and a frozen reserve).
fn operator_outcome(outcome: &Outcome) -> Option<&'static str> {
    Some(match outcome {
        Outcome::Frozen { rows } if *rows > 0 => "frozen",
        Outcome::AdjustmentProposed { .. } => "proposed",
        Outcome::AdjustmentDecided { status, .. } => status.as_str(),
        Outcome::AdjustmentsExpired { count } if *count > 0 => "expired",
        Outcome::TransferDispatched { .. } => "dispatched",
        Outcome::TransferFinished { status, .. } => status.as_str(),
        Outcome::Repaired { rows } if *rows > 0 => "repaired",
        Outcome::PolicySet { present: true } => "policy_set",
        Outcome::PolicySet { present: false } => "policy_removed",
        Outcome::OrderPrepared { .. } => "order_prepared",
        Outcome::OrderDecided { state } => match state {
            OrderState::Committed => "order:COMMITTED",
            OrderState::Aborted => "order:ABORTED",
            OrderState::Confirmed => "order:CONFIRMED",
            OrderState::Released => "order:RELEASED",
            OrderState::Expired => "order:EXPIRED",
        },
        Outcome::OrderFinished { lines } if *lines > 0 => "order_finished",
        Outcome::OrdersExpired { count } if *count > 0 => "orders_expired",
        Outcome::Rejected(r) => r.code(),
        _ => return None,
    })
}

/// Applies `command`, looking up in `cold` what the shard no longer holds.
fn apply(
    shard: &mut Shard,
    cold: &ColdModel,
    stats: &mut ColdStats,
    at: Millis,
    command: &Command,
    txns: &mut Vec<Txn>,
) -> (Applied, ColdFacts) {
    match shard.apply_with(at, command, &ColdFacts::default(), txns) {
        Ok(applied) => (applied, ColdFacts::default()),
        Err(needs) => {
            let facts = cold.facts(&needs);
            stats.lookups += 1;
            stats.keys_found += facts.key.as_ref().is_some_and(|(_, r)| r.is_some()) as u64;
            stats.holds_found += facts.hold.as_ref().is_some_and(|(_, h)| h.is_some()) as u64;
            stats.orders_found += facts.order.as_ref().is_some_and(|(_, holds)| !holds.is_empty()) as u64;
            let applied = shard.apply_with(at, command, &facts, txns).expect("the facts answer what was needed");
            (applied, facts)
        }
    }
}

const SKUS: &[&str] = &["apple", "pear", "plum"];
const WAREHOUSES: &[&str] = &["default", "east"];
const ORDERS: &[&str] = &["o1", "o2", "o3", "o4", "o5", "o6", "o7"];
const KEYS: &[&str] = &["k1", "k2", "k3", "k4", "k5", "k6", "k7", "k8", "k9", "k10", "k11", "k12"];

fn random_command(rng: &mut Rng, shard: &Shard, model: &Model, at: Millis) -> Command {
    let key = rng.pick(KEYS).to_string();
    let known: Vec<u64> = model.holds.keys().copied().collect();
    let some_id = |rng: &mut Rng| {
        if known.is_empty() || rng.below(10) == 0 {
            ReservationId::new(if rng.below(5) == 0 { 9 } else { shard.index() }, 1 + rng.below(50))
        } else {
            ReservationId::new(shard.index(), known[rng.below(known.len() as u64) as usize])
        }
    };
    let operator = |rng: &mut Rng| rng.pick(&["ann", "bob"]).to_string();
    let adjustment = |rng: &mut Rng| {
        let known = model.adjustments.len() as u64;
        if known == 0 || rng.below(8) == 0 {
            AdjustmentId::new(if rng.below(4) == 0 { 9 } else { shard.index() }, 1 + rng.below(20))
        } else {
            AdjustmentId::new(shard.index(), 1 + rng.below(known))
        }
    };
    let transfer = |rng: &mut Rng| {
        let known = model.transfers.len() as u64;
        if known == 0 || rng.below(8) == 0 {
            TransferId::new(if rng.below(4) == 0 { 9 } else { shard.index() }, 1 + rng.below(20))
        } else {
            TransferId::new(shard.index(), 1 + rng.below(known))
        }
    };
    let other_shard = if shard.index() == 0 { 1 } else { shard.index() - 1 };
    let shards = |rng: &mut Rng| {
        let mut shards = vec![shard.index()];
        if rng.below(2) == 0 {
            shards.push(other_shard);
        }
        shards.sort_unstable();
        shards
    };
    match rng.below(40) {
        32..=34 => Command::PrepareOrder(Box::new(PrepareOrder {
            order_id: rng.pick(ORDERS).into(),
            lines: {
                let mut skus: Vec<&str> = SKUS.to_vec();
                skus.push("ghost");
                let n = 1 + rng.below(3) as usize;
                let mut lines = Vec::new();
                for _ in 0..n {
                    let sku = skus.remove(rng.below(skus.len() as u64) as usize);
                    lines.push(OrderLine {
                        sku_id: sku.into(),
                        warehouse_id: rng.pick(WAREHOUSES).into(),
                        qty: if rng.below(30) == 0 { 0 } else { 1 + rng.below(3) },
                    });
                }
                lines
            },
            buyer_id: rng.pick(&["b1", "b2", ""]).into(),
            channel: rng.pick(&["app", "web", ""]).into(),
            expire_at: at + 200 + rng.below(1_000),
            shards: shards(rng),
            idem_key: key,
        })),
        35 | 36 => Command::DecideOrder(Box::new(DecideOrder {
            order_id: rng.pick(ORDERS).into(),
            decision: match rng.below(4) {
                0 => OrderDecision::Commit,
                1 => OrderDecision::Abort,
                2 => OrderDecision::Confirm { payment_id: format!("pay-{}", rng.below(2)) },
                _ => OrderDecision::Release { reason: "CANCELLED".into() },
            },
            shards: shards(rng),
            expire_at: at + rng.below(1_200),
        })),
        37 | 38 => Command::FinishOrder(Box::new(FinishOrder {
            order_id: rng.pick(ORDERS).into(),
            state: [
                OrderState::Committed,
                OrderState::Aborted,
                OrderState::Confirmed,
                OrderState::Released,
                OrderState::Expired,
            ][rng.below(5) as usize],
            detail: rng.pick(&["pay-0", "CANCELLED"]).into(),
        })),
        39 => {
            let mut order_ids = shard.due_order_expirations(at, 1 + rng.below(3) as usize);
            if rng.below(3) == 0 {
                order_ids.push(rng.pick(ORDERS).into());
            }
            Command::ExpireOrders(ExpireOrders { order_ids })
        }
        28 => Command::SetPolicy(Box::new(SetPolicy {
            sku_id: if rng.below(20) == 0 { "ghost".into() } else { rng.pick(SKUS).into() },
            policy: (rng.below(4) != 0).then(|| SalePolicy {
                max_per_buyer: (rng.below(2) == 0).then(|| 1 + rng.below(6) as u32),
                sale_starts_at: (rng.below(5) == 0).then(|| at + rng.below(1_500)),
                sale_ends_at: (rng.below(5) == 0).then(|| at + rng.below(3_000)),
                channel_quotas: if rng.below(3) == 0 {
                    let mut quotas = vec![("app".to_string(), rng.below(12))];
                    if rng.below(2) == 0 {
                        quotas.push(("web".to_string(), rng.below(8)));
                    }
                    quotas
                } else {
                    Vec::new()
                },
            }),
            operator: operator(rng),
            idem_key: key,
        })),
        29..=31 => Command::ReserveAs(Box::new(ReserveAs {
            reserve: Reserve {
                order_id: rng.pick(ORDERS).into(),
                sku_id: rng.pick(SKUS).into(),
                warehouse_id: rng.pick(WAREHOUSES).into(),
                qty: 1 + rng.below(3),
                idem_key: key,
                ttl_ms: 200 + rng.below(1_000),
                ttl_explicit: rng.below(2) == 0,
            },
            buyer_id: rng.pick(&["b1", "b2", "b3", ""]).into(),
            channel: rng.pick(&["app", "web", "tv", ""]).into(),
        })),
        27 => Command::Repair(Repair {
            sku_id: if rng.below(5) == 0 { "ghost".into() } else { rng.pick(SKUS).into() },
            warehouse_id: rng.pick(WAREHOUSES).into(),
            detail: "postgres had available=0".into(),
        }),
        20 => Command::Freeze(Freeze {
            sku_id: if rng.below(20) == 0 { "ghost".into() } else { rng.pick(SKUS).into() },
            warehouse_id: (rng.below(2) == 0).then(|| rng.pick(WAREHOUSES).to_string()),
            // Mostly unfrozen, so that reserves mostly go ahead.
            frozen: rng.below(3) == 0,
            reason: "count".into(),
            idem_key: key,
        }),
        21 => Command::ProposeAdjustment(Box::new(ProposeAdjustment {
            sku_id: rng.pick(SKUS).into(),
            warehouse_id: rng.pick(WAREHOUSES).into(),
            delta: match rng.below(20) {
                0 => 0,
                1 => ROW_UNITS_MAX as i64 + 1,
                2 => -(ROW_UNITS_MAX as i64) + rng.below(3) as i64,
                _ => rng.below(12) as i64 - 8,
            },
            reason: "recount".into(),
            operator: operator(rng),
            ttl_ms: 100 + rng.below(3_000),
            idem_key: key,
        })),
        22 | 23 => Command::DecideAdjustment(DecideAdjustment {
            adjustment_id: adjustment(rng),
            approve: rng.below(4) != 0,
            operator: operator(rng),
            reason: String::new(),
            idem_key: key,
        }),
        24 => {
            let mut ids = shard.due_adjustment_expirations(at, 1 + rng.below(3) as usize);
            if rng.below(3) == 0 {
                ids.push(adjustment(rng));
            }
            Command::ExpireAdjustments(ExpireAdjustments { ids })
        }
        25 => Command::DispatchTransfer(Box::new(DispatchTransfer {
            sku_id: if rng.below(20) == 0 { "ghost".into() } else { rng.pick(SKUS).into() },
            from_warehouse_id: rng.pick(WAREHOUSES).into(),
            to_warehouse_id: rng.pick(&["default", "east", "west"]).into(),
            qty: if rng.below(20) == 0 { 0 } else { 1 + rng.below(4) },
            reason: "rebalance".into(),
            operator: operator(rng),
            expected_in_ms: (rng.below(2) == 0).then(|| rng.below(2_000)),
            idem_key: key,
        })),
        26 => Command::FinishTransfer(FinishTransfer {
            transfer_id: transfer(rng),
            arrive: rng.below(3) != 0,
            operator: operator(rng),
            reason: String::new(),
            idem_key: key,
        }),
        0..=2 => Command::Receive(Receive {
            sku_id: rng.pick(SKUS).into(),
            warehouse_id: rng.pick(WAREHOUSES).into(),
            qty: match rng.below(40) {
                0 => 0,
                // Near the 32-bit row limit: the next receipts overflow.
                1 => ROW_UNITS_MAX - 5 - rng.below(20),
                2 if rng.below(4) == 0 => u64::MAX - rng.below(2),
                _ => 1 + rng.below(6),
            },
            idem_key: key,
            reference: String::new(),
        }),
        3 if rng.below(3) == 0 => Command::ReceiveBatch(ReceiveBatch {
            items: (0..rng.below(4))
                .map(|_| ReceiveItem {
                    sku_id: rng.pick(SKUS).into(),
                    warehouse_id: rng.pick(WAREHOUSES).into(),
                    qty: match rng.below(20) {
                        0 => 0,
                        1 if rng.below(3) == 0 => ROW_UNITS_MAX - rng.below(4),
                        _ => 1 + rng.below(5),
                    },
                })
                .collect(),
            idem_key: key,
            reference: String::new(),
        }),
        3..=10 => Command::Reserve(Reserve {
            order_id: rng.pick(ORDERS).into(),
            sku_id: if rng.below(30) == 0 { "ghost".into() } else { rng.pick(SKUS).into() },
            warehouse_id: rng.pick(WAREHOUSES).into(),
            qty: if rng.below(40) == 0 { 0 } else { 1 + rng.below(4) },
            idem_key: key,
            ttl_ms: 200 + rng.below(1_000),
            ttl_explicit: rng.below(2) == 0,
        }),
        11..=14 => Command::Confirm(Confirm {
            reservation_id: some_id(rng),
            payment_id: format!("pay-{}", rng.below(2)),
            idem_key: key,
        }),
        15..=17 => Command::Release(Release { reservation_id: some_id(rng), reason: "CANCEL".into(), idem_key: key }),
        _ => {
            let mut ids = shard.due_expirations(at, 1 + rng.below(4) as usize);
            if rng.below(3) == 0 {
                ids.push(some_id(rng));
            }
            Command::Expire(Expire { ids })
        }
    }
}

fn run(seed: u64, steps: usize, stats: &mut ColdStats) {
    let mut rng = Rng(seed);
    let index = rng.below(4) as u16;
    let idem_ttl = 2_000 + rng.below(5_000);
    let tiers = TierConfig { slice_ms: 200 + rng.below(3_000), filter_keys: 1 + rng.below(16) as u32 };
    let config = ShardConfig { index, idempotency_ttl_ms: idem_ttl, tiers };
    let mut cold = ColdModel::default();
    // Records leave memory this long after they finish (holds) or are made
    // (keys), once the cold tier has them.
    let window = rng.below(1_500);
    let mut committed_at: Millis = 0;
    let mut shard = Shard::new(config.clone());
    let mut model = Model {
        shard: index,
        idem_ttl,
        rows: BTreeMap::new(),
        holds: BTreeMap::new(),
        idem: HashMap::new(),
        next_seq: 1,
        adjustments: BTreeMap::new(),
        transfers: BTreeMap::new(),
        first_warehouse: BTreeMap::new(),
        policies: BTreeMap::new(),
        generations: 0,
        orders: BTreeMap::new(),
        refusals: Vec::new(),
    };
    let mut at: Millis = 1_000_000;
    let mut journal: Vec<Entry> = Vec::new();
    let mut step = 0;
    while step < steps {
        // One batch: a few commands, then commit or (sometimes) roll back.
        let before_model = model.clone();
        let before_dump = shard.dump();
        let mut pending = Vec::new();
        shard.begin_batch();
        for _ in 0..1 + rng.below(8) {
            step += 1;
            at += rng.below(300);
            let command = random_command(&mut rng, &shard, &model, at);
            let mut txns = Vec::new();
            let (applied, facts) = apply(&mut shard, &cold, stats, at, &command, &mut txns);
            let (expected, changed) = model.apply(at, &command);
            assert_eq!(applied.outcome, expected, "seed {seed} step {step}: {command:?}");
            if let Outcome::Rejected(Rejection::OrderNotReservable { .. }) = expected {
                let refusals = std::mem::take(&mut model.refusals);
                assert_eq!(shard.take_refusals(), refusals, "seed {seed} step {step}: {command:?}");
            }
            assert_eq!(applied.changed, changed, "seed {seed} step {step}: {command:?}");
            if let Some(name) = operator_outcome(&applied.outcome) {
                *stats.operator.entry(name).or_default() += 1;
            }
            if let Err(e) = shard.check_invariants() {
                panic!("seed {seed} step {step}: {e} after {command:?}");
            }
            if applied.changed {
                let cold = (!facts.is_empty()).then(|| Box::new(facts));
                pending.push(Entry { seq: 0, at, trace_id: 0, operator: String::new(), command, txns, cold });
            } else {
                assert!(txns.is_empty(), "seed {seed} step {step}: txns without a change");
            }
        }
        // Move out what the cold tier holds: records of committed entries
        // only, as the service moves only what its cold tier has taken.
        if rng.below(3) == 0 {
            let before = at.saturating_sub(window).min(committed_at);
            let command = Command::Evict(Evict { holds_before: before, keys_before: before });
            let mut txns = Vec::new();
            let applied = shard.apply(at, &command, &mut txns);
            assert!(txns.is_empty(), "seed {seed} step {step}: an eviction changed stock");
            if applied.changed {
                stats.evictions += 1;
                let cold = None;
                pending.push(Entry { seq: 0, at, trace_id: 0, operator: String::new(), command, txns, cold });
            }
        }
        if rng.below(6) == 0 {
            shard.rollback_batch();
            model = before_model;
            assert_eq!(shard.dump(), before_dump, "seed {seed} step {step}: rollback differs");
        } else {
            shard.commit_batch();
            for mut e in pending {
                e.seq = journal.len() as u64 + 1;
                cold.ingest(idem_ttl, &e);
                committed_at = e.at;
                journal.push(e);
            }
        }
        if rng.below(10) == 0 {
            shard.purge_idempotency(at, 3);
        }
        // Shrinking a table is invisible: every comparison below still holds.
        if rng.below(4) == 0 {
            shard.shrink_tables(rng.below(256) as usize);
        }
        // The model's counters and holds agree with the shard's.
        for ((sku, wh), row) in &model.rows {
            let got = shard.stock(sku).unwrap().warehouses.into_iter().find(|w| w.warehouse_id == *wh).unwrap();
            assert_eq!(got.row.levels, row.levels, "seed {seed} step {step}: {sku}/{wh}");
            assert_eq!(got.row.received, row.received, "seed {seed} step {step}: {sku}/{wh}");
            assert_eq!(got.row.ops, row.ops, "seed {seed} step {step}: {sku}/{wh}");
        }
        for sku in SKUS {
            let got = shard.stock(sku).and_then(|s| s.policy);
            let want = model.policies.get(*sku);
            assert_eq!(got.is_some(), want.is_some(), "seed {seed} step {step}: policy of {sku}");
            if let (Some(got), Some(want)) = (got, want) {
                assert_eq!(got.policy, want.policy, "seed {seed} step {step}: policy of {sku}");
                let channels: Vec<(String, u64)> = want.channels.iter().map(|(c, &u)| (c.clone(), u)).collect();
                assert_eq!(got.channels_used, channels, "seed {seed} step {step}: channels of {sku}");
                assert_eq!(got.buyers, want.buyers.len() as u64, "seed {seed} step {step}: buyers of {sku}");
            }
        }
        for (order_id, o) in &model.orders {
            let got = shard.order_record(order_id).expect("every order record stays");
            assert_eq!(
                (got.state, &got.detail, got.expire_at),
                (o.state, &o.detail, o.expire_at),
                "seed {seed} step {step}"
            );
            assert_eq!(got.shards, o.shards, "seed {seed} step {step}");
        }
        for (&seq, a) in &model.adjustments {
            let view = shard.adjustment(AdjustmentId::new(index, seq)).expect("every adjustment stays");
            assert_eq!((&view.sku_id, &view.warehouse_id), (&a.sku, &a.warehouse), "seed {seed} step {step}");
            assert_eq!((view.adjustment.status, view.adjustment.delta), (a.status, a.delta), "seed {seed} step {step}");
        }
        for (&seq, t) in &model.transfers {
            let view = shard.transfer(TransferId::new(index, seq)).expect("every transfer stays");
            let got = (&view.sku_id, &view.from_warehouse_id, &view.to_warehouse_id, view.transfer.qty);
            assert_eq!(got, (&t.sku, &t.from, &t.to, t.qty), "seed {seed} step {step}");
            assert_eq!(view.transfer.status, t.status, "seed {seed} step {step}: transfer {seq}");
        }
        for (&seq, h) in &model.holds {
            let view = shard.reservation(ReservationId::new(index, seq)).unwrap_or_else(|| {
                cold.holds
                    .get(&seq)
                    .unwrap_or_else(|| panic!("seed {seed} step {step}: hold {seq} is nowhere"))
                    .view(index)
            });
            assert_eq!((view.status, view.qty), (h.status, h.qty), "seed {seed} step {step}: hold {seq}");
            assert_eq!(view.payment_id, h.payment, "seed {seed} step {step}: hold {seq}");
            assert_eq!((&view.order_id, &view.sku_id, &view.warehouse_id), (&h.order, &h.sku, &h.warehouse));
        }
    }
    // Replaying the committed entries rebuilds the same state and txns.
    let mut replica = Shard::new(config);
    for e in &journal {
        let mut txns = Vec::new();
        let applied = replica
            .apply_with(e.at, &e.command, e.cold.as_deref().unwrap_or(&ColdFacts::NONE), &mut txns)
            .unwrap_or_else(|needs| panic!("seed {seed}: replay of entry {} needs {needs:?}", e.seq));
        assert!(applied.changed, "seed {seed}: replayed entry {} changed nothing", e.seq);
        assert_eq!(txns, e.txns, "seed {seed}: replay of entry {} differs", e.seq);
    }
    // An image round trip is the identity, indexes included.
    let restored = Shard::from_image(replica.config().clone(), replica.image());
    restored.check_invariants().unwrap();
    assert_eq!(restored.dump(), replica.dump(), "seed {seed}: image round trip differs");
    // Rollbacks left nothing behind: the live shard's stock layout (SKU
    // ids, interned warehouses, row order) is exactly the replayed one's,
    // and its own image round trip is the identity too.
    let (live, replayed) = (shard.image(), replica.image());
    assert_eq!(
        (&live.sku_ids, &live.sku_ends, &live.warehouses, &live.rows, &live.holds),
        (&replayed.sku_ids, &replayed.sku_ends, &replayed.warehouses, &replayed.rows, &replayed.holds),
        "seed {seed}: live image differs from the replayed one"
    );
    let restored = Shard::from_image(shard.config().clone(), live);
    restored.check_invariants().unwrap();
    assert_eq!(restored.dump(), shard.dump(), "seed {seed}: live image round trip differs");
    let (mut a, mut b) = (shard.dump(), replica.dump());
    // Purging is invisible to outcomes but does change the table's contents.
    a.idem.retain(|r| r.3 > at);
    b.idem.retain(|r| r.3 > at);
    assert_eq!(a, b, "seed {seed}: replay differs from live state");
}

#[test]
fn simulate_random_command_streams() {
    let mut stats = ColdStats::default();
    if let Some(seed) = std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        return run(seed, 3_000, &mut stats);
    }
    for seed in 0..200 {
        run(seed, 600, &mut stats);
    }
    // Every operator decision was reached.
    for name in [
        "frozen",
        "SKU_FROZEN",
        "proposed",
        "APPLIED",
        "REJECTED",
        "expired",
        "SAME_OPERATOR",
        "ADJUSTMENT_NOT_PENDING",
        "INSUFFICIENT_STOCK",
        "dispatched",
        "ARRIVED",
        "CANCELLED",
        "TRANSFER_NOT_IN_TRANSIT",
        "SAME_WAREHOUSE",
        "repaired",
        "policy_set",
        "policy_removed",
        "SALE_NOT_STARTED",
        "SALE_ENDED",
        "BUYER_REQUIRED",
        "PURCHASE_LIMIT_EXCEEDED",
        "CHANNEL_REQUIRED",
        "UNKNOWN_CHANNEL",
        "CHANNEL_QUOTA_EXHAUSTED",
        "order_prepared",
        "order:COMMITTED",
        "order:ABORTED",
        "order:CONFIRMED",
        "order:RELEASED",
        "order:EXPIRED",
        "order_finished",
        "orders_expired",
        "ORDER_NOT_RESERVABLE",
        "ORDER_NOT_FOUND",
        "ORDER_ABORTED",
        "PART_OF_ORDER",
    ] {
        assert!(stats.operator.contains_key(name), "never reached {name}: {:?}", stats.operator);
    }
    // Every kind of decision from the cold tier was reached.
    let reached = [stats.evictions, stats.lookups, stats.keys_found, stats.holds_found, stats.orders_found];
    assert!(reached.iter().all(|&n| n > 0), "{stats:?}");
    eprintln!("cold tier in the simulation: {stats:?}");
}
