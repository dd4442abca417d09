//! One shard: the stock rows, holds and idempotency records of the SKUs that
//! hash to it, and the only code that changes them.
//!
//! `Shard::apply(at, command)` is a pure function of the shard's state, the
//! command and the time it is given. It never reads a clock, never does I/O
//! and never locks: the shard loop owns the value outright.
//!
//! Batches: the shard loop opens a batch, applies commands, and either
//! commits (the journal made them durable) or rolls back (the journal
//! failed). Rollback replays an undo log in reverse, restoring exactly the
//! state before the batch.

use std::collections::{BTreeSet, VecDeque};
use std::hash::BuildHasher;

use hashbrown::HashTable;
use rustc_hash::{FxBuildHasher, FxHashMap};
use smallvec::SmallVec;

use crate::command::{Command, Confirm, Expire, Query, Receive, ReceiveBatch, Release, Reserve};
use crate::ids::{key_hash, order_hash, Millis, ReservationId, HOUR_MS, IDEMPOTENCY_TTL_MS, REASON_TIMEOUT};
use crate::image::{HoldImage, IdemImage, ShardImage, SkuImage};
use crate::outcome::{Applied, Outcome, Rejection};
use crate::state::{
    Hold, HoldChange, Levels, ReservationStatus, ReservationView, SkuStock, StockRow, Txn, TxnKind, WarehouseStock,
};

/// Most warehouse rows one SKU may have.
pub const WAREHOUSES_PER_SKU_MAX: usize = 1024;

/// How long a finished (confirmed, released or expired) hold stays: 48 h,
/// as the design document keeps reservations. After that it is gone for
/// every lookup, deterministically from time, and its memory is reclaimed a
/// little per tick. A constant, because replay must use the live value.
pub const HOLD_RETENTION_MS: Millis = 48 * HOUR_MS;

#[derive(Clone, Debug)]
pub struct ShardConfig {
    /// This shard's index: encoded into reservation and txn ids.
    pub index: u16,
    /// How long idempotency keys are remembered.
    pub idempotency_ttl_ms: Millis,
}

impl ShardConfig {
    pub fn new(index: u16) -> ShardConfig {
        ShardConfig { index, idempotency_ttl_ms: IDEMPOTENCY_TTL_MS }
    }
}

struct Sku {
    id: Box<str>,
    warehouses: SmallVec<[(Box<str>, StockRow); 1]>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct IdemRecord {
    fingerprint: u64,
    outcome: Outcome,
    expires_at: Millis,
}

/// One step of the undo log, recorded while a batch is open.
enum Undo {
    NewSku,
    NewRow { sku: u32 },
    Row { sku: u32, warehouse: u16, prev: StockRow },
    NewHold { seq: u64 },
    Hold { seq: u64, prev: HoldChange },
    Idem { key: u128, prev: Option<IdemRecord> },
}

struct BatchMark {
    next_hold_seq: u64,
    next_txn_seq: u64,
    idem_pushed: usize,
    finished_pushed: usize,
}

/// Counts for metrics and sizing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShardStats {
    pub skus: usize,
    pub rows: usize,
    pub holds: usize,
    pub active_holds: usize,
    pub idempotency_keys: usize,
}

pub struct Shard {
    config: ShardConfig,
    /// SKU id -> dense index into `skus`.
    sku_table: HashTable<u32>,
    skus: Vec<Sku>,
    /// Holds by reservation sequence.
    holds: FxHashMap<u64, Hold>,
    /// Order-id hash -> sequences of that order's holds (F7, per-order query).
    orders: FxHashMap<u64, SmallVec<[u64; 2]>>,
    /// Exactly the `RESERVED` holds, ordered by `(expire_at, seq)`.
    expiry: BTreeSet<(Millis, u64)>,
    idem: FxHashMap<u128, IdemRecord>,
    /// Idempotency records in insertion order, for incremental purging.
    idem_expiry: VecDeque<(Millis, u128)>,
    /// Finished holds in the order they finished, for incremental purging.
    finished: VecDeque<(Millis, u64)>,
    next_hold_seq: u64,
    next_txn_seq: u64,
    last_at: Millis,
    undo: Vec<Undo>,
    batch: Option<BatchMark>,
}

fn visible(hold: &Hold, at: Millis) -> bool {
    hold.change.status == ReservationStatus::Reserved || at < hold.change.updated_at.saturating_add(HOLD_RETENTION_MS)
}

fn str_hash(s: &str) -> u64 {
    FxBuildHasher.hash_one(s)
}

impl Shard {
    pub fn new(config: ShardConfig) -> Shard {
        Shard {
            config,
            sku_table: HashTable::new(),
            skus: Vec::new(),
            holds: FxHashMap::default(),
            orders: FxHashMap::default(),
            expiry: BTreeSet::new(),
            idem: FxHashMap::default(),
            idem_expiry: VecDeque::new(),
            finished: VecDeque::new(),
            next_hold_seq: 1,
            next_txn_seq: 1,
            last_at: 0,
            undo: Vec::new(),
            batch: None,
        }
    }

    pub fn index(&self) -> u16 {
        self.config.index
    }

    pub fn config(&self) -> &ShardConfig {
        &self.config
    }

    /// The latest time a command was applied at.
    pub fn last_at(&self) -> Millis {
        self.last_at
    }

    // ----- batches -------------------------------------------------------

    /// Starts recording an undo log. Commands applied until `commit_batch` or
    /// `rollback_batch` can be taken back together.
    pub fn begin_batch(&mut self) {
        assert!(self.batch.is_none(), "batch already open");
        debug_assert!(self.undo.is_empty());
        self.batch = Some(BatchMark {
            next_hold_seq: self.next_hold_seq,
            next_txn_seq: self.next_txn_seq,
            idem_pushed: 0,
            finished_pushed: 0,
        });
    }

    /// The batch is durable: forget its undo log.
    pub fn commit_batch(&mut self) {
        self.batch.take().expect("no batch open");
        self.undo.clear();
    }

    /// The batch could not be made durable: restore the state before it.
    pub fn rollback_batch(&mut self) {
        let mark = self.batch.take().expect("no batch open");
        let mut undo = std::mem::take(&mut self.undo);
        while let Some(step) = undo.pop() {
            match step {
                Undo::NewSku => {
                    let index = (self.skus.len() - 1) as u32;
                    let sku = self.skus.pop().expect("undo of a missing sku");
                    self.sku_table
                        .find_entry(str_hash(&sku.id), |&i| i == index)
                        .expect("sku missing from table")
                        .remove();
                }
                Undo::NewRow { sku } => {
                    self.skus[sku as usize].warehouses.pop();
                }
                Undo::Row { sku, warehouse, prev } => {
                    self.skus[sku as usize].warehouses[warehouse as usize].1 = prev;
                }
                Undo::NewHold { seq } => {
                    let hold = self.holds.remove(&seq).expect("undo of a missing hold");
                    self.unindex_order(&hold.order_id, seq);
                    self.expiry.remove(&(hold.expire_at, seq));
                }
                Undo::Hold { seq, prev } => {
                    let hold = self.holds.get_mut(&seq).expect("undo of a missing hold");
                    if prev.status == ReservationStatus::Reserved && hold.change.status != ReservationStatus::Reserved {
                        self.expiry.insert((hold.expire_at, seq));
                    }
                    hold.change = prev;
                }
                Undo::Idem { key, prev } => match prev {
                    Some(record) => {
                        self.idem.insert(key, record);
                    }
                    None => {
                        self.idem.remove(&key);
                    }
                },
            }
        }
        self.undo = undo;
        for _ in 0..mark.idem_pushed {
            self.idem_expiry.pop_back();
        }
        for _ in 0..mark.finished_pushed {
            self.finished.pop_back();
        }
        self.next_hold_seq = mark.next_hold_seq;
        self.next_txn_seq = mark.next_txn_seq;
    }

    fn record(&mut self, step: Undo) {
        if self.batch.is_some() {
            self.undo.push(step);
        }
    }

    // ----- commands ------------------------------------------------------

    /// Applies one command at time `at`, appending the counter changes it
    /// makes to `txns`. `at` must not go backwards.
    pub fn apply(&mut self, at: Millis, command: &Command, txns: &mut Vec<Txn>) -> Applied {
        assert!(at >= self.last_at, "time went backwards: {at} < {}", self.last_at);
        self.last_at = at;
        if let Command::Expire(expire) = command {
            let count = self.expire(at, expire, txns);
            return Applied { outcome: Outcome::Expired { count }, changed: count > 0, replayed: false };
        }
        let key = key_hash(command.idem_key().expect("write commands carry a key"));
        let fingerprint = command.fingerprint();
        if let Some(record) = self.idem.get(&key) {
            if record.expires_at > at {
                if record.fingerprint == fingerprint {
                    return Applied { outcome: record.outcome, changed: false, replayed: true };
                }
                return Applied {
                    outcome: Outcome::Rejected(Rejection::IdempotencyKeyReused),
                    changed: false,
                    replayed: false,
                };
            }
        }
        let (outcome, changed) = match command {
            Command::Receive(c) => self.receive(at, c, txns),
            Command::Reserve(c) => self.reserve(at, c, txns),
            Command::Confirm(c) => self.confirm(at, c, txns),
            Command::Release(c) => self.release(at, c, txns),
            Command::ReceiveBatch(c) => self.receive_batch(at, c, txns),
            Command::Expire(_) => unreachable!(),
        };
        // Only a command that changed state is remembered: one that changed
        // nothing is simply evaluated again when retried.
        if changed {
            let record =
                IdemRecord { fingerprint, outcome, expires_at: at.saturating_add(self.config.idempotency_ttl_ms) };
            let prev = self.idem.insert(key, record);
            self.idem_expiry.push_back((record.expires_at, key));
            if let Some(mark) = &mut self.batch {
                mark.idem_pushed += 1;
            }
            self.record(Undo::Idem { key, prev });
        }
        Applied { outcome, changed, replayed: false }
    }

    fn receive(&mut self, at: Millis, c: &Receive, txns: &mut Vec<Txn>) -> (Outcome, bool) {
        if c.qty == 0 {
            return (Outcome::Rejected(Rejection::InvalidQuantity), false);
        }
        let sku = match self.find_sku(&c.sku_id) {
            Some(sku) => sku,
            None => self.insert_sku(&c.sku_id),
        };
        let warehouse = match self.find_warehouse(sku, &c.warehouse_id) {
            Some(w) => w,
            None => {
                let rows = &mut self.skus[sku as usize].warehouses;
                if rows.len() >= WAREHOUSES_PER_SKU_MAX {
                    return (Outcome::Rejected(Rejection::TooManyWarehouses), false);
                }
                rows.push((c.warehouse_id.as_str().into(), StockRow::default()));
                let w = (rows.len() - 1) as u16;
                self.record(Undo::NewRow { sku });
                w
            }
        };
        let row = self.row(sku, warehouse);
        if row.received.checked_add(c.qty).is_none() {
            return (Outcome::Rejected(Rejection::QuantityOverflow), false);
        }
        let qty = c.qty;
        let (before, row) = self.change_row(sku, warehouse, at, |r| {
            r.levels.available += qty;
            r.received += qty;
        });
        let reference = if c.reference.is_empty() { &c.idem_key } else { &c.reference };
        let txn = self.txn(
            TxnKind::Receive,
            sku,
            warehouse,
            qty,
            reference.clone(),
            String::new(),
            String::new(),
            before,
            row,
            at,
        );
        txns.push(txn);
        (Outcome::Received { levels: row.levels, version: row.version, updated_at: row.updated_at }, true)
    }

    fn receive_batch(&mut self, at: Millis, c: &ReceiveBatch, txns: &mut Vec<Txn>) -> (Outcome, bool) {
        // Check everything first: the batch applies whole or not at all.
        let mut seen = rustc_hash::FxHashSet::default();
        for item in &c.items {
            if item.qty == 0 {
                return (Outcome::Rejected(Rejection::InvalidQuantity), false);
            }
            if !seen.insert((item.sku_id.as_str(), item.warehouse_id.as_str())) {
                return (Outcome::Rejected(Rejection::InvalidBatch), false);
            }
            if let Some(sku) = self.find_sku(&item.sku_id) {
                match self.find_warehouse(sku, &item.warehouse_id) {
                    Some(w) if self.row(sku, w).received.checked_add(item.qty).is_none() => {
                        return (Outcome::Rejected(Rejection::QuantityOverflow), false);
                    }
                    None if self.skus[sku as usize].warehouses.len() >= WAREHOUSES_PER_SKU_MAX => {
                        return (Outcome::Rejected(Rejection::TooManyWarehouses), false);
                    }
                    _ => {}
                }
            }
        }
        if c.items.is_empty() {
            return (Outcome::Rejected(Rejection::InvalidBatch), false);
        }
        let mut units = 0u64;
        for item in &c.items {
            let one = Receive {
                sku_id: item.sku_id.clone(),
                warehouse_id: item.warehouse_id.clone(),
                qty: item.qty,
                idem_key: c.idem_key.clone(),
                reference: c.reference.clone(),
            };
            let (outcome, changed) = self.receive(at, &one, txns);
            debug_assert!(changed, "checked above: {outcome:?}");
            units = units.saturating_add(item.qty);
        }
        (Outcome::ReceivedBatch { rows: c.items.len() as u32, units }, true)
    }

    fn reserve(&mut self, at: Millis, c: &Reserve, txns: &mut Vec<Txn>) -> (Outcome, bool) {
        if c.qty == 0 {
            return (Outcome::Rejected(Rejection::InvalidQuantity), false);
        }
        let Some(sku) = self.find_sku(&c.sku_id) else {
            return (Outcome::Rejected(Rejection::SkuNotFound), false);
        };
        let order = order_hash(&c.order_id);
        if let Some(seq) = self.find_order_line(order, &c.order_id, sku, at) {
            // One hold per order line (F7). The same request under a new key
            // gets the live hold back; anything else is a conflict.
            let hold = &self.holds[&seq];
            let reservation_id = ReservationId::new(self.config.index, seq);
            let same = hold.change.status == ReservationStatus::Reserved
                && at < hold.expire_at
                && hold.qty == c.qty
                && *self.skus[sku as usize].warehouses[hold.warehouse as usize].0 == *c.warehouse_id;
            return if same {
                (Outcome::Reserved { reservation_id, expire_at: hold.expire_at }, false)
            } else {
                let rejection = Rejection::DuplicateOrderLine { existing: reservation_id, status: hold.change.status };
                (Outcome::Rejected(rejection), false)
            };
        }
        let Some(warehouse) = self.find_warehouse(sku, &c.warehouse_id) else {
            return (Outcome::Rejected(Rejection::SkuNotFound), false);
        };
        let available = self.row(sku, warehouse).levels.available;
        if available < c.qty {
            return (Outcome::Rejected(Rejection::InsufficientStock { available }), false);
        }
        let qty = c.qty;
        let (before, row) = self.change_row(sku, warehouse, at, |r| {
            r.levels.available -= qty;
            r.levels.reserved += qty;
        });
        let seq = self.next_hold_seq;
        self.next_hold_seq += 1;
        let reservation_id = ReservationId::new(self.config.index, seq);
        let expire_at = at.saturating_add(c.ttl_ms);
        self.holds.insert(
            seq,
            Hold {
                order_id: c.order_id.as_str().into(),
                sku,
                warehouse,
                qty,
                expire_at,
                idem_key: c.idem_key.as_str().into(),
                created_at: at,
                change: HoldChange {
                    status: ReservationStatus::Reserved,
                    updated_at: at,
                    payment_id: None,
                    release_reason: None,
                },
            },
        );
        self.orders.entry(order).or_default().push(seq);
        self.expiry.insert((expire_at, seq));
        self.record(Undo::NewHold { seq });
        let txn = self.txn(
            TxnKind::Reserve,
            sku,
            warehouse,
            qty,
            reservation_id.to_string(),
            c.order_id.clone(),
            String::new(),
            before,
            row,
            at,
        );
        txns.push(txn);
        (Outcome::Reserved { reservation_id, expire_at }, true)
    }

    fn confirm(&mut self, at: Millis, c: &Confirm, txns: &mut Vec<Txn>) -> (Outcome, bool) {
        let id = c.reservation_id;
        let Some(hold) = self.own_hold(id, at) else {
            return (Outcome::Rejected(Rejection::ReservationNotFound), false);
        };
        match hold.change.status {
            ReservationStatus::Confirmed => {
                // A repeated payment callback: answer again, deduct nothing.
                if hold.change.payment_id.as_deref() == Some(c.payment_id.as_str()) {
                    (Outcome::Confirmed { reservation_id: id }, false)
                } else {
                    (Outcome::Rejected(Rejection::PaymentMismatch), false)
                }
            }
            ReservationStatus::Released => (Outcome::Rejected(Rejection::ReservationReleased), false),
            ReservationStatus::Expired => (Outcome::Rejected(Rejection::ReservationExpired), false),
            ReservationStatus::Reserved if at >= hold.expire_at => {
                // Past its deadline but the timer has not fired yet: expire
                // it now, so a late payment can never turn into a sale.
                self.release_hold(at, id.seq(), ReservationStatus::Expired, REASON_TIMEOUT, txns);
                (Outcome::Rejected(Rejection::ReservationExpired), true)
            }
            ReservationStatus::Reserved => {
                let (sku, warehouse, qty) = (hold.sku, hold.warehouse, hold.qty);
                let order_id = hold.order_id.to_string();
                let (before, row) = self.change_row(sku, warehouse, at, |r| {
                    r.levels.reserved -= qty;
                    r.levels.sold += qty;
                });
                self.set_hold(id.seq(), at, ReservationStatus::Confirmed, Some(c.payment_id.as_str().into()), None);
                let txn = self.txn(
                    TxnKind::Confirm,
                    sku,
                    warehouse,
                    qty,
                    id.to_string(),
                    order_id,
                    c.payment_id.clone(),
                    before,
                    row,
                    at,
                );
                txns.push(txn);
                (Outcome::Confirmed { reservation_id: id }, true)
            }
        }
    }

    fn release(&mut self, at: Millis, c: &Release, txns: &mut Vec<Txn>) -> (Outcome, bool) {
        let id = c.reservation_id;
        let Some(hold) = self.own_hold(id, at) else {
            return (Outcome::Rejected(Rejection::ReservationNotFound), false);
        };
        let released = |status| Outcome::Released { reservation_id: id, status };
        match hold.change.status {
            ReservationStatus::Confirmed => (Outcome::Rejected(Rejection::ReservationConfirmed), false),
            status @ (ReservationStatus::Released | ReservationStatus::Expired) => (released(status), false),
            ReservationStatus::Reserved if at >= hold.expire_at => {
                self.release_hold(at, id.seq(), ReservationStatus::Expired, REASON_TIMEOUT, txns);
                (released(ReservationStatus::Expired), true)
            }
            ReservationStatus::Reserved => {
                self.release_hold(at, id.seq(), ReservationStatus::Released, &c.reason, txns);
                (released(ReservationStatus::Released), true)
            }
        }
    }

    fn expire(&mut self, at: Millis, c: &Expire, txns: &mut Vec<Txn>) -> u32 {
        let mut count = 0;
        for &id in &c.ids {
            let due = self
                .own_hold(id, at)
                .is_some_and(|h| h.change.status == ReservationStatus::Reserved && h.expire_at <= at);
            if due {
                self.release_hold(at, id.seq(), ReservationStatus::Expired, REASON_TIMEOUT, txns);
                count += 1;
            }
        }
        count
    }

    /// Returns a `RESERVED` hold's quantity to available.
    fn release_hold(&mut self, at: Millis, seq: u64, status: ReservationStatus, reason: &str, txns: &mut Vec<Txn>) {
        let hold = &self.holds[&seq];
        debug_assert_eq!(hold.change.status, ReservationStatus::Reserved);
        let (sku, warehouse, qty) = (hold.sku, hold.warehouse, hold.qty);
        let order_id = hold.order_id.to_string();
        let (before, row) = self.change_row(sku, warehouse, at, |r| {
            r.levels.reserved -= qty;
            r.levels.available += qty;
        });
        self.set_hold(seq, at, status, None, Some(reason.into()));
        let reservation_id = ReservationId::new(self.config.index, seq);
        let txn = self.txn(
            TxnKind::Release,
            sku,
            warehouse,
            qty,
            reservation_id.to_string(),
            order_id,
            reason.to_string(),
            before,
            row,
            at,
        );
        txns.push(txn);
    }

    // ----- state helpers ---------------------------------------------------

    fn find_sku(&self, sku_id: &str) -> Option<u32> {
        self.sku_table.find(str_hash(sku_id), |&i| *self.skus[i as usize].id == *sku_id).copied()
    }

    fn insert_sku(&mut self, sku_id: &str) -> u32 {
        let index = u32::try_from(self.skus.len()).expect("too many SKUs in one shard");
        self.skus.push(Sku { id: sku_id.into(), warehouses: SmallVec::new() });
        let skus = &self.skus;
        self.sku_table.insert_unique(str_hash(sku_id), index, |&i| str_hash(&skus[i as usize].id));
        self.record(Undo::NewSku);
        index
    }

    fn find_warehouse(&self, sku: u32, warehouse_id: &str) -> Option<u16> {
        self.skus[sku as usize].warehouses.iter().position(|(w, _)| **w == *warehouse_id).map(|w| w as u16)
    }

    fn row(&self, sku: u32, warehouse: u16) -> &StockRow {
        &self.skus[sku as usize].warehouses[warehouse as usize].1
    }

    /// Applies `change` to a row, bumps its version, records the undo step,
    /// and checks the row invariant. Returns the levels before and the row after.
    fn change_row(
        &mut self,
        sku: u32,
        warehouse: u16,
        at: Millis,
        change: impl FnOnce(&mut StockRow),
    ) -> (Levels, StockRow) {
        let row = &mut self.skus[sku as usize].warehouses[warehouse as usize].1;
        let prev = *row;
        change(row);
        row.version += 1;
        row.updated_at = at;
        assert_eq!(row.levels.total(), row.received, "stock row invariant broken");
        let after = *row;
        self.record(Undo::Row { sku, warehouse, prev });
        (prev.levels, after)
    }

    fn set_hold(
        &mut self,
        seq: u64,
        at: Millis,
        status: ReservationStatus,
        payment_id: Option<Box<str>>,
        release_reason: Option<Box<str>>,
    ) {
        let hold = self.holds.get_mut(&seq).expect("hold exists");
        let change = HoldChange { status, updated_at: at, payment_id, release_reason };
        let prev = std::mem::replace(&mut hold.change, change);
        if prev.status == ReservationStatus::Reserved && status != ReservationStatus::Reserved {
            self.expiry.remove(&(hold.expire_at, seq));
            self.finished.push_back((at, seq));
            if let Some(mark) = &mut self.batch {
                mark.finished_pushed += 1;
            }
        }
        self.record(Undo::Hold { seq, prev });
    }

    #[allow(clippy::too_many_arguments)]
    fn txn(
        &mut self,
        kind: TxnKind,
        sku: u32,
        warehouse: u16,
        qty: u64,
        ref_id: String,
        order_id: String,
        detail: String,
        before: Levels,
        after: StockRow,
        at: Millis,
    ) -> Txn {
        let txn_id = ((self.config.index as u64) << ReservationId::SEQ_BITS) | self.next_txn_seq;
        self.next_txn_seq += 1;
        let sku = &self.skus[sku as usize];
        Txn {
            txn_id,
            kind,
            sku_id: sku.id.to_string(),
            warehouse_id: sku.warehouses[warehouse as usize].0.to_string(),
            qty,
            ref_id,
            order_id,
            detail,
            before,
            after: after.levels,
            version: after.version,
            at,
        }
    }

    /// A hold of this shard that still exists at `at` (finished holds are
    /// gone `HOLD_RETENTION_MS` after they finished).
    fn own_hold(&self, id: ReservationId, at: Millis) -> Option<&Hold> {
        if id.shard() != self.config.index {
            return None;
        }
        self.holds.get(&id.seq()).filter(|h| visible(h, at))
    }

    fn find_order_line(&self, order: u64, order_id: &str, sku: u32, at: Millis) -> Option<u64> {
        let seqs = self.orders.get(&order)?;
        seqs.iter().copied().find(|seq| {
            let hold = &self.holds[seq];
            hold.sku == sku && *hold.order_id == *order_id && visible(hold, at)
        })
    }

    fn unindex_order(&mut self, order_id: &str, seq: u64) {
        let key = order_hash(order_id);
        if let Some(seqs) = self.orders.get_mut(&key) {
            seqs.retain(|s| *s != seq);
            if seqs.is_empty() {
                self.orders.remove(&key);
            }
        }
    }

    // ----- queries -------------------------------------------------------

    pub fn query(&self, query: &Query) -> QueryResult {
        match query {
            Query::Stock { sku_id } => QueryResult::Stock(self.stock(sku_id)),
            Query::Reservation { id } => QueryResult::Reservation(self.reservation(*id)),
            Query::Order { order_id } => QueryResult::Order(self.order(order_id)),
        }
    }

    pub fn stock(&self, sku_id: &str) -> Option<SkuStock> {
        let sku = &self.skus[self.find_sku(sku_id)? as usize];
        Some(SkuStock {
            sku_id: sku.id.to_string(),
            warehouses: sku
                .warehouses
                .iter()
                .map(|(w, row)| WarehouseStock { warehouse_id: w.to_string(), row: *row })
                .collect(),
        })
    }

    pub fn reservation(&self, id: ReservationId) -> Option<ReservationView> {
        self.own_hold(id, self.last_at).map(|hold| self.view(id.seq(), hold))
    }

    /// This shard's holds of one order, oldest first.
    pub fn order(&self, order_id: &str) -> Vec<ReservationView> {
        let Some(seqs) = self.orders.get(&order_hash(order_id)) else {
            return Vec::new();
        };
        let mut views: Vec<_> = seqs
            .iter()
            .map(|seq| (seq, &self.holds[seq]))
            .filter(|(_, hold)| *hold.order_id == *order_id && visible(hold, self.last_at))
            .map(|(seq, hold)| self.view(*seq, hold))
            .collect();
        views.sort_by_key(|v| v.reservation_id);
        views
    }

    fn view(&self, seq: u64, hold: &Hold) -> ReservationView {
        let sku = &self.skus[hold.sku as usize];
        ReservationView {
            reservation_id: ReservationId::new(self.config.index, seq),
            order_id: hold.order_id.to_string(),
            sku_id: sku.id.to_string(),
            warehouse_id: sku.warehouses[hold.warehouse as usize].0.to_string(),
            qty: hold.qty,
            status: hold.change.status,
            expire_at: hold.expire_at,
            idem_key: hold.idem_key.to_string(),
            created_at: hold.created_at,
            updated_at: hold.change.updated_at,
            payment_id: hold.change.payment_id.as_deref().map(str::to_string),
            release_reason: hold.change.release_reason.as_deref().map(str::to_string),
        }
    }

    // ----- time-driven maintenance -----------------------------------------

    /// Up to `max` holds whose `expire_at <= at`, earliest first: the ids for
    /// the next [`Command::Expire`].
    pub fn due_expirations(&self, at: Millis, max: usize) -> Vec<ReservationId> {
        self.expiry
            .range(..(at.saturating_add(1), 0))
            .take(max)
            .map(|&(_, seq)| ReservationId::new(self.config.index, seq))
            .collect()
    }

    /// When a hold of this shard expires (or expired).
    pub fn expire_at(&self, id: ReservationId) -> Option<Millis> {
        self.own_hold(id, self.last_at).map(|h| h.expire_at)
    }

    /// Moves the shard's idea of "now" forward for queries (finished holds
    /// past retention disappear from them). Changes no state a command sees.
    pub fn advance(&mut self, at: Millis) {
        self.last_at = self.last_at.max(at);
    }

    /// Frees at most `max` finished holds that are past retention at `at`.
    /// They are already invisible, so this only reclaims memory.
    pub fn purge_holds(&mut self, at: Millis, max: usize) -> usize {
        let mut purged = 0;
        while purged < max {
            match self.finished.front() {
                Some(&(finished_at, seq)) if finished_at.saturating_add(HOLD_RETENTION_MS) <= at => {
                    self.finished.pop_front();
                    let gone = self.holds.get(&seq).is_some_and(|h| !visible(h, at));
                    if gone {
                        let hold = self.holds.remove(&seq).expect("checked");
                        self.unindex_order(&hold.order_id, seq);
                    }
                    purged += 1;
                }
                _ => break,
            }
        }
        purged
    }

    /// Holds past `expire_at` and not yet released (the F5 backlog).
    pub fn expiry_backlog(&self, at: Millis) -> usize {
        self.expiry.range(..(at.saturating_add(1), 0)).count()
    }

    /// Forgets at most `max` idempotency records that expired by `at`. Expired
    /// records are already ignored by lookups, so when this runs never
    /// changes an outcome; it only bounds memory, a little per call.
    pub fn purge_idempotency(&mut self, at: Millis, max: usize) -> usize {
        let mut purged = 0;
        while purged < max {
            match self.idem_expiry.front() {
                Some(&(expires_at, key)) if expires_at <= at => {
                    self.idem_expiry.pop_front();
                    if self.idem.get(&key).is_some_and(|r| r.expires_at == expires_at) {
                        self.idem.remove(&key);
                    }
                    purged += 1;
                }
                _ => break,
            }
        }
        purged
    }

    /// Live idempotency keys (hash and expiry), e.g. to rebuild a
    /// cross-shard index after replay.
    pub fn idempotency_keys(&self) -> impl Iterator<Item = (u128, Millis)> + '_ {
        self.idem.iter().map(|(&k, r)| (k, r.expires_at))
    }

    pub fn stats(&self) -> ShardStats {
        ShardStats {
            skus: self.skus.len(),
            rows: self.skus.iter().map(|s| s.warehouses.len()).sum(),
            holds: self.holds.len(),
            active_holds: self.expiry.len(),
            idempotency_keys: self.idem.len(),
        }
    }

    /// Checks the SKUs with dense index `from..from + max` for oversold
    /// rows (`sold + reserved > received`). Returns where the next call
    /// should start (0 after the last SKU: the sweep wrapped) and how many
    /// oversold rows were found. Lets a loop sweep a large shard a slice at
    /// a time.
    pub fn scan_oversold(&self, from: usize, max: usize) -> (usize, u64) {
        let end = from.saturating_add(max).min(self.skus.len());
        let start = from.min(end);
        let found = self.skus[start..end]
            .iter()
            .flat_map(|s| s.warehouses.iter())
            .filter(|(_, row)| row.levels.sold + row.levels.reserved > row.received)
            .count() as u64;
        (if end >= self.skus.len() { 0 } else { end }, found)
    }

    /// Overwrites a row's counters without any check: only for tests of the
    /// invariant monitors, which must see what a corrupted row looks like.
    #[cfg(feature = "testing")]
    pub fn corrupt_row_for_testing(&mut self, sku_id: &str, warehouse_id: &str, levels: Levels) {
        let sku = self.find_sku(sku_id).expect("no such sku");
        let warehouse = self.find_warehouse(sku, warehouse_id).expect("no such warehouse");
        self.skus[sku as usize].warehouses[warehouse as usize].1.levels = levels;
    }

    /// Every stock row, in creation order.
    pub fn rows(&self) -> impl Iterator<Item = (&str, &str, &StockRow)> {
        self.skus.iter().flat_map(|s| s.warehouses.iter().map(move |(w, row)| (&*s.id, &**w, row)))
    }

    // ----- images ----------------------------------------------------------

    /// The whole state as an image (a copy).
    pub fn image(&self) -> ShardImage {
        assert!(self.batch.is_none(), "image taken inside a batch");
        let mut holds: Vec<HoldImage> = self
            .holds
            .iter()
            .map(|(&seq, h)| HoldImage {
                seq,
                order_id: h.order_id.to_string(),
                sku: h.sku,
                warehouse: h.warehouse,
                qty: h.qty,
                expire_at: h.expire_at,
                idem_key: h.idem_key.to_string(),
                created_at: h.created_at,
                status: h.change.status,
                updated_at: h.change.updated_at,
                payment_id: h.change.payment_id.as_deref().map(str::to_string),
                release_reason: h.change.release_reason.as_deref().map(str::to_string),
            })
            .collect();
        holds.sort_by_key(|h| h.seq);
        // Insertion order, so a restored shard purges keys in the same order.
        let idem = self
            .idem_expiry
            .iter()
            .filter_map(|&(expires_at, key)| {
                let r = self.idem.get(&key).filter(|r| r.expires_at == expires_at)?;
                Some(IdemImage { key, fingerprint: r.fingerprint, outcome: r.outcome, expires_at })
            })
            .collect();
        ShardImage {
            index: self.config.index,
            next_hold_seq: self.next_hold_seq,
            next_txn_seq: self.next_txn_seq,
            last_at: self.last_at,
            skus: self
                .skus
                .iter()
                .map(|s| SkuImage {
                    id: s.id.to_string(),
                    rows: s.warehouses.iter().map(|(w, r)| (w.to_string(), *r)).collect(),
                })
                .collect(),
            holds,
            idem,
        }
    }

    /// Rebuilds a shard, indexes included, from an image.
    pub fn from_image(config: ShardConfig, image: ShardImage) -> Shard {
        assert_eq!(config.index, image.index, "image of another shard");
        let mut shard = Shard::new(config);
        shard.next_hold_seq = image.next_hold_seq;
        shard.next_txn_seq = image.next_txn_seq;
        shard.last_at = image.last_at;
        shard.skus.reserve(image.skus.len());
        shard.sku_table.reserve(image.skus.len(), |&i| str_hash(&shard.skus[i as usize].id));
        for sku in image.skus {
            let index = shard.skus.len() as u32;
            shard.skus.push(Sku {
                id: sku.id.into(),
                warehouses: sku.rows.into_iter().map(|(w, r)| (w.into(), r)).collect(),
            });
            let skus = &shard.skus;
            shard
                .sku_table
                .insert_unique(str_hash(&skus[index as usize].id), index, |&i| str_hash(&skus[i as usize].id));
        }
        shard.holds.reserve(image.holds.len());
        for h in image.holds {
            shard.orders.entry(order_hash(&h.order_id)).or_default().push(h.seq);
            if h.status == ReservationStatus::Reserved {
                shard.expiry.insert((h.expire_at, h.seq));
            }
            let change = HoldChange {
                status: h.status,
                updated_at: h.updated_at,
                payment_id: h.payment_id.map(Into::into),
                release_reason: h.release_reason.map(Into::into),
            };
            shard.holds.insert(
                h.seq,
                Hold {
                    order_id: h.order_id.into(),
                    sku: h.sku,
                    warehouse: h.warehouse,
                    qty: h.qty,
                    expire_at: h.expire_at,
                    idem_key: h.idem_key.into(),
                    created_at: h.created_at,
                    change,
                },
            );
        }
        let mut finished: Vec<(Millis, u64)> = shard
            .holds
            .iter()
            .filter(|(_, h)| h.change.status != ReservationStatus::Reserved)
            .map(|(&seq, h)| (h.change.updated_at, seq))
            .collect();
        finished.sort_unstable();
        shard.finished = finished.into();
        shard.idem.reserve(image.idem.len());
        for r in image.idem {
            shard
                .idem
                .insert(r.key, IdemRecord { fingerprint: r.fingerprint, outcome: r.outcome, expires_at: r.expires_at });
            shard.idem_expiry.push_back((r.expires_at, r.key));
        }
        shard
    }

    // ----- checking ------------------------------------------------------

    /// Verifies every structural invariant with a full scan. For tests and
    /// the simulator; far too slow for the hot path.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut reserved: FxHashMap<(u32, u16), u64> = FxHashMap::default();
        let mut sold: FxHashMap<(u32, u16), u64> = FxHashMap::default();
        let mut live = BTreeSet::new();
        for (&seq, hold) in &self.holds {
            match hold.change.status {
                ReservationStatus::Reserved => {
                    *reserved.entry((hold.sku, hold.warehouse)).or_default() += hold.qty;
                    live.insert((hold.expire_at, seq));
                }
                ReservationStatus::Confirmed => *sold.entry((hold.sku, hold.warehouse)).or_default() += hold.qty,
                _ => {}
            }
            let indexed = self.orders.get(&order_hash(&hold.order_id)).is_some_and(|s| s.contains(&seq));
            if !indexed {
                return Err(format!("hold {seq} missing from the order index"));
            }
            if seq >= self.next_hold_seq {
                return Err(format!("hold {seq} at or past next sequence {}", self.next_hold_seq));
            }
        }
        if live != self.expiry {
            return Err("expiry queue differs from the set of RESERVED holds".into());
        }
        let indexed: usize = self.orders.values().map(|s| s.len()).sum();
        if indexed != self.holds.len() {
            return Err(format!("order index has {indexed} entries for {} holds", self.holds.len()));
        }
        for (i, sku) in self.skus.iter().enumerate() {
            if self.find_sku(&sku.id) != Some(i as u32) {
                return Err(format!("sku {} not found at its index", sku.id));
            }
            for (w, (wid, row)) in sku.warehouses.iter().enumerate() {
                let key = (i as u32, w as u16);
                let where_ = || format!("{}/{}", sku.id, wid);
                if row.levels.total() != row.received {
                    return Err(format!(
                        "{}: available+reserved+sold {} != received {}",
                        where_(),
                        row.levels.total(),
                        row.received
                    ));
                }
                if row.levels.reserved != reserved.get(&key).copied().unwrap_or(0) {
                    return Err(format!("{}: reserved {} != sum of RESERVED holds", where_(), row.levels.reserved));
                }
                // Confirmed holds leave memory after retention; their units stay sold.
                if row.levels.sold < sold.get(&key).copied().unwrap_or(0) {
                    return Err(format!("{}: sold {} < sum of CONFIRMED holds", where_(), row.levels.sold));
                }
            }
        }
        Ok(())
    }

    /// A canonical, comparable copy of the whole state.
    pub fn dump(&self) -> Dump {
        let mut holds: Vec<_> = self.holds.iter().map(|(&seq, h)| self.view(seq, h)).collect();
        holds.sort_by_key(|v| v.reservation_id);
        let mut idem: Vec<_> =
            self.idem.iter().map(|(&k, r)| (k, r.fingerprint, format!("{:?}", r.outcome), r.expires_at)).collect();
        idem.sort();
        Dump {
            rows: self.rows().map(|(s, w, r)| (s.to_string(), w.to_string(), *r)).collect(),
            holds,
            idem,
            next_hold_seq: self.next_hold_seq,
            next_txn_seq: self.next_txn_seq,
        }
    }
}

/// What a [`Query`] returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueryResult {
    Stock(Option<SkuStock>),
    Reservation(Option<ReservationView>),
    Order(Vec<ReservationView>),
}

/// See [`Shard::dump`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dump {
    pub rows: Vec<(String, String, StockRow)>,
    pub holds: Vec<ReservationView>,
    pub idem: Vec<(u128, u64, String, Millis)>,
    pub next_hold_seq: u64,
    pub next_txn_seq: u64,
}
