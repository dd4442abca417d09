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

use std::collections::BTreeSet;

mod operator;
mod order;
mod sale;

pub use order::LineRefusal;

use hashbrown::hash_table::Entry as TableEntry;
use hashbrown::HashTable;
use rustc_hash::{FxHashMap, FxHashSet};
use smallvec::SmallVec;

use crate::cold::{hashes_of_u128, hashes_of_u64, ColdFacts, ColdHold, ColdQuery, TierConfig};
use crate::command::{Command, Confirm, Evict, Expire, Query, Receive, ReceiveBatch, Release, Reserve};
use crate::grow::{ChunkQueue, PartMap};
use crate::ids::{key_hash, order_hash, Millis, ReservationId, HOUR_MS, IDEMPOTENCY_TTL_MS, REASON_TIMEOUT};
use crate::image::{ColdImage, HoldImage, IdemImage, ShardImage};
use crate::ops::{Adjustment, AdjustmentView, Transfer, TransferView};
use crate::outcome::{Applied, Outcome, Rejection};
use crate::state::{
    Hold, HoldChange, Levels, ReservationStatus, ReservationView, SkuStock, StockRow, Txn, TxnKind, WarehouseStock,
};
use crate::table::{
    Added, Row, SkuKey, StockTable, ROW_MILLIS_MAX, ROW_UNITS_MAX, SKU_ID_BYTES_MAX, WAREHOUSE_IDS_MAX,
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
    /// How the filters of records moved to the cold tier are cut.
    pub tiers: TierConfig,
}

impl ShardConfig {
    pub fn new(index: u16) -> ShardConfig {
        ShardConfig { index, idempotency_ttl_ms: IDEMPOTENCY_TTL_MS, tiers: TierConfig::default() }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct IdemRecord {
    fingerprint: u64,
    outcome: Outcome,
    expires_at: Millis,
}

/// One receipt to apply, borrowed from a `Receive` or a batch item.
struct Receipt<'a> {
    sku: SkuKey<'a>,
    warehouse_id: &'a str,
    qty: u64,
    /// Recorded on the txn: the caller's reference, or the key if none.
    reference: &'a str,
}

/// An SKU's first row and one of its rows, where they exist.
type Located = (Option<u32>, Option<u32>);

/// Working space of `receive_batch`, kept from batch to batch: allocated
/// afresh, a 10,000-item batch's tables were paged in anew every time.
/// The tables hold item positions, so nothing here borrows from a command.
#[derive(Default)]
struct BatchScratch {
    /// Items by `(sku, warehouse)`, to find one the batch repeats.
    pairs: HashTable<u32>,
    /// Per SKU, `(first item naming it, rows the items checked so far add
    /// to it)`.
    skus: HashTable<(u32, u32)>,
    /// Per item: its SKU id's hash and where it lands.
    landings: Vec<(u64, Option<Located>)>,
}

/// Hash of an item's `(sku, warehouse)`, given its SKU id's hash.
fn pair_hash(sku_hash: u64, warehouse_id: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(warehouse_id.as_bytes(), sku_hash)
}

/// One step of the undo log, recorded while a batch is open.
enum Undo {
    /// A row was added (a new SKU, or a new warehouse of an SKU).
    NewRow(Added),
    /// A row's counters changed.
    Row {
        row: u32,
        prev: Row,
    },
    NewHold {
        seq: u64,
    },
    Hold {
        seq: u64,
        prev: HoldChange,
    },
    Idem {
        key: u128,
        prev: Option<IdemRecord>,
    },
    /// A finished hold moved to the cold tier, and its place in the queue.
    EvictedHold {
        seq: u64,
        hold: Box<Hold>,
        finished_at: Millis,
    },
    /// An idempotency record moved to the cold tier (`None`: the queue's
    /// entry was of a record replaced since), and its queue entry.
    EvictedIdem {
        record: Option<IdemRecord>,
        entry: (Millis, u64, u64),
    },
    /// What operators did to a row changed.
    RowOps {
        row: u32,
        prev: Option<crate::ops::RowOps>,
    },
    /// An adjustment was added (`prev` none) or changed.
    Adjustment {
        seq: u64,
        prev: Option<Box<Adjustment>>,
    },
    Transfer {
        seq: u64,
        prev: Option<Box<Transfer>>,
    },
    /// Sale policies and their counts changed.
    Sale(sale::SaleUndo),
    /// Orders' records or lines changed.
    Order(order::OrderUndo),
}

struct BatchMark {
    next_hold_seq: u64,
    next_txn_seq: u64,
    next_adjustment_seq: u64,
    next_transfer_seq: u64,
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
    /// Keys noted in the filters of what moved to the cold tier (hold
    /// sequences, order ids, idempotency keys), and the filters' memory.
    pub cold_filter_keys: u64,
    pub cold_filter_bytes: usize,
    /// Memory of the hash tables of holds, orders and idempotency records
    /// (their slots, used or not).
    pub table_bytes: usize,
}

/// One change to one stock row, as a [`Txn`] records it before the shard
/// numbers it.
struct RowChange {
    kind: TxnKind,
    row: u32,
    qty: u64,
    /// What the change answers to: the receipt's reference or the hold's id.
    ref_id: String,
    /// The hold's order, a transfer's other warehouse; empty otherwise.
    order_id: String,
    /// The payment of a confirmation, the reason of a release; empty
    /// otherwise.
    detail: String,
    before: Levels,
    after: StockRow,
    at: Millis,
}

pub struct Shard {
    config: ShardConfig,
    /// Stock rows, SKU ids, warehouse ids and the SKU index.
    table: StockTable,
    /// Holds by reservation sequence.
    holds: PartMap<u64, Hold>,
    /// Order-id hash -> sequences of that order's holds (the per-order query).
    orders: PartMap<u64, SmallVec<[u64; 2]>>,
    /// Exactly the `RESERVED` holds, ordered by `(expire_at, seq)`.
    expiry: BTreeSet<(Millis, u64)>,
    idem: PartMap<u128, IdemRecord>,
    /// Idempotency records in insertion order, for incremental purging.
    /// `(expires_at, key)`, the key split in halves (24 bytes, not 32).
    idem_expiry: ChunkQueue<(Millis, u64, u64)>,
    /// Finished holds in the order they finished, for incremental purging.
    finished: ChunkQueue<(Millis, u64)>,
    /// What left memory for the cold tier, by time slice: idempotency key
    /// hashes, hold sequences and order-id hashes. They only ever gain
    /// keys, rollback included (an extra key costs a lookup, never a
    /// different decision).
    cold: ColdImage,
    /// What operators did: row state, adjustments and transfers.
    ops: operator::Ops,
    /// Sale policies and what they counted.
    sales: sale::Sales,
    /// Lines of orders, and the records of the orders this shard is home of.
    order_state: order::Orders,
    /// Why the last `PrepareOrder` was refused, line by line.
    refusals: Vec<LineRefusal>,
    next_hold_seq: u64,
    next_txn_seq: u64,
    last_at: Millis,
    undo: Vec<Undo>,
    batch: Option<BatchMark>,
    scratch: BatchScratch,
}

fn expiry_entry(expires_at: Millis, key: u128) -> (Millis, u64, u64) {
    (expires_at, key as u64, (key >> 64) as u64)
}

fn expiry_key(lo: u64, hi: u64) -> u128 {
    (hi as u128) << 64 | lo as u128
}

fn visible(hold: &Hold, at: Millis) -> bool {
    hold.change.status == ReservationStatus::Reserved || at < hold.change.updated_at.saturating_add(HOLD_RETENTION_MS)
}

/// A confirm of a hold that has finished: a repeated payment callback is
/// answered again and deducts nothing; anything else is refused.
fn confirm_finished(id: ReservationId, c: &Confirm, status: ReservationStatus, payment: Option<&str>) -> Outcome {
    match status {
        ReservationStatus::Confirmed if payment == Some(c.payment_id.as_str()) => {
            Outcome::Confirmed { reservation_id: id }
        }
        ReservationStatus::Confirmed => Outcome::Rejected(Rejection::PaymentMismatch),
        ReservationStatus::Released => Outcome::Rejected(Rejection::ReservationReleased),
        ReservationStatus::Expired => Outcome::Rejected(Rejection::ReservationExpired),
        ReservationStatus::Reserved => unreachable!("a finished hold"),
    }
}

/// A release of a hold that has finished: released again, or refused if it
/// was sold.
fn release_finished(id: ReservationId, status: ReservationStatus) -> Outcome {
    match status {
        ReservationStatus::Confirmed => Outcome::Rejected(Rejection::ReservationConfirmed),
        ReservationStatus::Released | ReservationStatus::Expired => Outcome::Released { reservation_id: id, status },
        ReservationStatus::Reserved => unreachable!("a finished hold"),
    }
}

impl Shard {
    pub fn new(config: ShardConfig) -> Shard {
        Shard {
            config,
            table: StockTable::new(),
            holds: PartMap::default(),
            orders: PartMap::default(),
            expiry: BTreeSet::new(),
            idem: PartMap::default(),
            idem_expiry: ChunkQueue::default(),
            finished: ChunkQueue::default(),
            cold: ColdImage::default(),
            ops: operator::Ops::default(),
            sales: sale::Sales::default(),
            order_state: order::Orders::default(),
            refusals: Vec::new(),
            next_hold_seq: 1,
            next_txn_seq: 1,
            last_at: 0,
            undo: Vec::new(),
            batch: None,
            scratch: BatchScratch::default(),
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
            next_adjustment_seq: self.ops.next_adjustment_seq,
            next_transfer_seq: self.ops.next_transfer_seq,
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
                Undo::NewRow(added) => self.table.undo_add_row(added),
                Undo::Row { row, prev } => self.table.row_mut(row).restore_counters(&prev),
                Undo::NewHold { seq } => {
                    let hold = self.holds.remove(&seq).expect("undo of a missing hold");
                    self.unindex_order(&hold.order_id, seq);
                    self.expiry.remove(&(hold.expire_at, seq));
                }
                Undo::Hold { seq, prev } => {
                    let order_line = self.is_order_line(seq);
                    let hold = self.holds.get_mut(&seq).expect("undo of a missing hold");
                    if prev.status == ReservationStatus::Reserved
                        && hold.change.status != ReservationStatus::Reserved
                        && !order_line
                    {
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
                Undo::EvictedHold { seq, hold, finished_at } => {
                    let seqs = self.orders.get_or_default(order_hash(&hold.order_id));
                    let at = seqs.partition_point(|&s| s < seq);
                    seqs.insert(at, seq);
                    self.holds.insert(seq, *hold);
                    self.finished.push_front((finished_at, seq));
                }
                Undo::EvictedIdem { record, entry } => {
                    if let Some(record) = record {
                        self.idem.insert(expiry_key(entry.1, entry.2), record);
                    }
                    self.idem_expiry.push_front(entry);
                }
                Undo::RowOps { row, prev } => self.ops.set_row(row, prev.unwrap_or_default()),
                Undo::Adjustment { seq, prev } => match prev {
                    Some(adjustment) => {
                        self.ops.adjustments.insert(seq, *adjustment);
                    }
                    None => {
                        self.ops.adjustments.remove(&seq);
                    }
                },
                Undo::Transfer { seq, prev } => match prev {
                    Some(transfer) => {
                        self.ops.transfers.insert(seq, *transfer);
                    }
                    None => {
                        self.ops.transfers.remove(&seq);
                    }
                },
                Undo::Sale(step) => self.sales.undo(step),
                Undo::Order(step) => self.order_state.undo(step),
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
        self.ops.next_adjustment_seq = mark.next_adjustment_seq;
        self.ops.next_transfer_seq = mark.next_transfer_seq;
    }

    fn record(&mut self, step: Undo) {
        if self.batch.is_some() {
            self.undo.push(step);
        }
    }

    // ----- commands ------------------------------------------------------

    /// [`apply_with`](Self::apply_with) with no cold facts, for a shard
    /// that never evicts. Panics if the command needs a record that has
    /// left memory.
    pub fn apply(&mut self, at: Millis, command: &Command, txns: &mut Vec<Txn>) -> Applied {
        self.apply_with(at, command, &ColdFacts::NONE, txns)
            .unwrap_or_else(|needs| panic!("{needs:?} left memory: apply it with cold facts"))
    }

    /// Applies one command at time `at`, appending the counter changes it
    /// makes to `txns`. `at` must not go backwards.
    ///
    /// If the command needs a record that has moved to the cold tier and
    /// `cold` does not answer for it, nothing changes and the answer is what
    /// to look up; apply it again with the facts found (journaled with its
    /// entry). Facts are used only where memory has no record.
    pub fn apply_with(
        &mut self,
        at: Millis,
        command: &Command,
        cold: &ColdFacts,
        txns: &mut Vec<Txn>,
    ) -> Result<Applied, ColdQuery> {
        assert!(at >= self.last_at, "time went backwards: {at} < {}", self.last_at);
        assert!(at <= ROW_MILLIS_MAX, "time {at} past what a stock row records (48 bits of milliseconds)");
        let key = command.idem_key().map(key_hash);
        let needs = self.cold_needs(at, command, key, cold);
        if !needs.is_empty() {
            return Err(needs);
        }
        self.last_at = at;
        match command {
            Command::Expire(expire) => {
                let count = self.expire(at, expire, txns);
                return Ok(Applied { outcome: Outcome::Expired { count }, changed: count > 0, replayed: false });
            }
            Command::Evict(evict) => {
                let (holds, keys) = self.evict(at, evict);
                let changed = holds + keys > 0;
                return Ok(Applied { outcome: Outcome::Evicted { holds, keys }, changed, replayed: false });
            }
            Command::ExpireAdjustments(expire) => {
                let count = self.expire_adjustments(at, expire, txns);
                let outcome = Outcome::AdjustmentsExpired { count };
                return Ok(Applied { outcome, changed: count > 0, replayed: false });
            }
            Command::Repair(repair) => {
                let rows = self.repair(at, repair, txns);
                return Ok(Applied { outcome: Outcome::Repaired { rows }, changed: rows > 0, replayed: false });
            }
            Command::DecideOrder(c) => {
                let (outcome, changed) = self.decide_order(at, c, txns);
                return Ok(Applied { outcome, changed, replayed: false });
            }
            Command::FinishOrder(c) => {
                let (outcome, changed) = self.finish_order(at, c, txns);
                return Ok(Applied { outcome, changed, replayed: false });
            }
            Command::ExpireOrders(c) => {
                let count = self.expire_orders(at, c, txns);
                return Ok(Applied { outcome: Outcome::OrdersExpired { count }, changed: count > 0, replayed: false });
            }
            Command::Receive(_)
            | Command::Reserve(_)
            | Command::Confirm(_)
            | Command::Release(_)
            | Command::ReceiveBatch(_)
            | Command::Freeze(_)
            | Command::ProposeAdjustment(_)
            | Command::DecideAdjustment(_)
            | Command::DispatchTransfer(_)
            | Command::FinishTransfer(_)
            | Command::SetPolicy(_)
            | Command::ReserveAs(_)
            | Command::PrepareOrder(_) => {}
        }
        let key = key.expect("write commands carry a key");
        let fingerprint = command.fingerprint();
        let remembered = match self.idem.get(&key) {
            Some(record) if record.expires_at > at => Some((record.fingerprint, record.outcome)),
            _ => cold.key(key).flatten().filter(|r| r.expires_at > at).map(|r| (r.fingerprint, r.outcome)),
        };
        if let Some((remembered, outcome)) = remembered {
            if remembered == fingerprint {
                return Ok(Applied { outcome, changed: false, replayed: true });
            }
            let outcome = Outcome::Rejected(Rejection::IdempotencyKeyReused);
            return Ok(Applied { outcome, changed: false, replayed: false });
        }
        let (outcome, changed) = match command {
            Command::Receive(c) => self.receive(at, c, txns),
            Command::Reserve(c) => self.reserve(at, c, sale::Buyer::default(), cold, txns),
            Command::ReserveAs(c) => {
                let who = sale::Buyer { buyer_id: &c.buyer_id, channel: &c.channel };
                self.reserve(at, &c.reserve, who, cold, txns)
            }
            Command::SetPolicy(c) => self.set_policy(at, c, txns),
            Command::PrepareOrder(c) => self.prepare_order(at, c, cold, txns),
            Command::Confirm(c) => self.confirm(at, c, cold, txns),
            Command::Release(c) => self.release(at, c, cold, txns),
            Command::ReceiveBatch(c) => self.receive_batch(at, c, txns),
            Command::Freeze(c) => self.freeze(at, c, txns),
            Command::ProposeAdjustment(c) => self.propose_adjustment(at, c, txns),
            Command::DecideAdjustment(c) => self.decide_adjustment(at, c, txns),
            Command::DispatchTransfer(c) => self.dispatch_transfer(at, c, txns),
            Command::FinishTransfer(c) => self.finish_transfer(at, c, txns),
            Command::Expire(_)
            | Command::Evict(_)
            | Command::ExpireAdjustments(_)
            | Command::Repair(_)
            | Command::DecideOrder(_)
            | Command::FinishOrder(_)
            | Command::ExpireOrders(_) => {
                unreachable!("applied above")
            }
        };
        // Only a command that changed state is remembered: one that changed
        // nothing is simply evaluated again when retried.
        if changed {
            let record =
                IdemRecord { fingerprint, outcome, expires_at: at.saturating_add(self.config.idempotency_ttl_ms) };
            let prev = self.idem.insert(key, record);
            self.idem_expiry.push_back(expiry_entry(record.expires_at, key));
            if let Some(mark) = &mut self.batch {
                mark.idem_pushed += 1;
            }
            self.record(Undo::Idem { key, prev });
        }
        Ok(Applied { outcome, changed, replayed: false })
    }

    /// What `command` needs from the cold tier that neither memory nor
    /// `cold` holds. A record that may have left memory is one whose key
    /// passes the filters of evicted keys.
    fn cold_needs(&self, at: Millis, command: &Command, key: Option<u128>, cold: &ColdFacts) -> ColdQuery {
        // The filters first: with nothing moved out (or nothing that
        // matches) no lookup of memory is repeated here.
        let mut needs = ColdQuery::default();
        let Some(key) = key else {
            return needs;
        };
        let tiers = &self.config.tiers;
        if self.cold.keys.may_contain(hashes_of_u128(key), at, tiers) {
            if self.idem.get(&key).is_some_and(|r| r.expires_at > at) {
                return needs;
            }
            match cold.key(key) {
                Some(Some(record)) if record.expires_at > at => return needs,
                Some(_) => {}
                None => needs.key = Some(key),
            }
        }
        match command {
            Command::Reserve(_) | Command::ReserveAs(_) => {
                let c = command.as_reserve().expect("a reserve");
                let order = order_hash(&c.order_id);
                if c.qty == 0 || !self.cold.orders.may_contain(hashes_of_u64(order), at, tiers) {
                    return needs;
                }
                let Some(first) = self.table.find_sku(&c.sku_id) else { return needs };
                let known =
                    self.find_order_line(order, &c.order_id, first, at).is_some() || cold.order(&c.order_id).is_some();
                if !known {
                    needs.order = Some(c.order_id.clone());
                }
            }
            Command::PrepareOrder(c) => {
                let order = order_hash(&c.order_id);
                if !self.cold.orders.may_contain(hashes_of_u64(order), at, tiers) || cold.order(&c.order_id).is_some() {
                    return needs;
                }
                let known = c.lines.iter().all(|line| {
                    self.table
                        .find_sku(&line.sku_id)
                        .is_none_or(|first| self.find_order_line(order, &c.order_id, first, at).is_some())
                });
                if !known {
                    needs.order = Some(c.order_id.clone());
                }
            }
            Command::Confirm(Confirm { reservation_id: id, .. })
            | Command::Release(Release { reservation_id: id, .. }) => {
                if id.shard() != self.config.index || !self.cold.holds.may_contain(hashes_of_u64(id.seq()), at, tiers) {
                    return needs;
                }
                if self.own_hold(*id, at).is_none() && cold.hold(id.seq()).is_none() {
                    needs.hold = Some(id.seq());
                }
            }
            Command::Receive(_)
            | Command::ReceiveBatch(_)
            | Command::Expire(_)
            | Command::Evict(_)
            | Command::Freeze(_)
            | Command::ProposeAdjustment(_)
            | Command::DecideAdjustment(_)
            | Command::ExpireAdjustments(_)
            | Command::DispatchTransfer(_)
            | Command::FinishTransfer(_)
            | Command::Repair(_)
            | Command::SetPolicy(_)
            | Command::DecideOrder(_)
            | Command::FinishOrder(_)
            | Command::ExpireOrders(_) => {}
        }
        needs
    }

    /// Moves the finished holds that finished before `holds_before` and the
    /// idempotency records made before `keys_before` out of memory, noting
    /// each one's key in the filters. Returns how many of each.
    fn evict(&mut self, at: Millis, c: &Evict) -> (u32, u32) {
        let tiers = self.config.tiers.clone();
        let mut holds = 0;
        while let Some(&(finished_at, seq)) = self.finished.front() {
            if finished_at >= c.holds_before {
                break;
            }
            self.finished.pop_front();
            let hold = self.holds.remove(&seq).expect("a finished hold in the queue is held");
            self.unindex_order(&hold.order_id, seq);
            let retention_end = finished_at.saturating_add(HOLD_RETENTION_MS);
            if retention_end > at {
                self.cold.holds.insert(hashes_of_u64(seq), retention_end, &tiers);
                self.cold.orders.insert(hashes_of_u64(order_hash(&hold.order_id)), retention_end, &tiers);
            }
            if self.batch.is_some() {
                self.record(Undo::EvictedHold { seq, hold: Box::new(hold), finished_at });
            }
            holds += 1;
        }
        let mut keys = 0;
        let ttl = self.config.idempotency_ttl_ms;
        while let Some(&entry) = self.idem_expiry.front() {
            let (expires_at, lo, hi) = entry;
            if expires_at.saturating_sub(ttl) >= c.keys_before {
                break;
            }
            self.idem_expiry.pop_front();
            let key = expiry_key(lo, hi);
            let record = match self.idem.get(&key) {
                Some(r) if r.expires_at == expires_at => self.idem.remove(&key),
                _ => None,
            };
            if record.is_some() {
                if expires_at > at {
                    self.cold.keys.insert(hashes_of_u128(key), expires_at, &tiers);
                }
                keys += 1;
            }
            self.record(Undo::EvictedIdem { record, entry });
        }
        (holds, keys)
    }

    fn receive(&mut self, at: Millis, c: &Receive, txns: &mut Vec<Txn>) -> (Outcome, bool) {
        let reference = c.txn_reference();
        let receipt = Receipt { sku: SkuKey::new(&c.sku_id), warehouse_id: &c.warehouse_id, qty: c.qty, reference };
        self.receive_one(at, &receipt, txns)
    }

    fn receive_one(&mut self, at: Millis, c: &Receipt, txns: &mut Vec<Txn>) -> (Outcome, bool) {
        if c.qty == 0 {
            return (Outcome::Rejected(Rejection::InvalidQuantity), false);
        }
        let (first, existing) = self.locate(c.sku, c.warehouse_id);
        if let Some(rejection) = self.receive_rejection(first, existing, c, 0, 0) {
            return (Outcome::Rejected(rejection), false);
        }
        (self.receive_checked(at, c, first, existing, txns), true)
    }

    /// Applies a receipt already checked by `receive_rejection`, given the
    /// SKU's first row and the receipt's row where they exist.
    fn receive_checked(
        &mut self,
        at: Millis,
        c: &Receipt,
        first: Option<u32>,
        existing: Option<u32>,
        txns: &mut Vec<Txn>,
    ) -> Outcome {
        let row = match existing {
            Some(row) => row,
            None => {
                let added = self.table.add_row(first, c.sku, c.warehouse_id);
                self.record(Undo::NewRow(added));
                added.row
            }
        };
        // Checked: `on_hand + qty <= ROW_UNITS_MAX`.
        let qty = c.qty as u32;
        let (before, row_after) = self.change_row(row, at, |r| r.on_hand += qty);
        let txn = self.txn(RowChange {
            kind: TxnKind::Receive,
            row,
            qty: c.qty,
            ref_id: c.reference.to_string(),
            order_id: String::new(),
            detail: String::new(),
            before,
            after: row_after,
            at,
        });
        txns.push(txn);
        Outcome::Received { levels: row_after.levels, version: row_after.version, updated_at: row_after.updated_at }
    }

    /// The SKU's first row and the `(sku, warehouse)` row, where they exist.
    fn locate(&self, sku: SkuKey, warehouse_id: &str) -> Located {
        let first = self.table.find_key(sku);
        (first, first.and_then(|f| self.table.find_row(f, warehouse_id)))
    }

    /// Why a receipt (of positive quantity) cannot be applied, if it cannot.
    /// `pending_rows`: rows earlier items of the same batch add to this SKU;
    /// `pending_warehouses`: warehouse ids they add to the shard.
    fn receive_rejection(
        &self,
        first: Option<u32>,
        existing: Option<u32>,
        c: &Receipt,
        pending_rows: usize,
        pending_warehouses: usize,
    ) -> Option<Rejection> {
        if let Some(row) = existing {
            let on_hand = self.table.row(row).on_hand as u64;
            return (c.qty > ROW_UNITS_MAX - on_hand).then_some(Rejection::QuantityOverflow);
        }
        let rows = first.map_or(0, |f| self.table.chain(f).count()) + pending_rows;
        if first.is_none() && c.sku.id().len() > SKU_ID_BYTES_MAX {
            Some(Rejection::SkuIdTooLong)
        } else if rows >= WAREHOUSES_PER_SKU_MAX
            || (self.table.warehouse_count() + pending_warehouses >= WAREHOUSE_IDS_MAX
                && !self.table.knows_warehouse(c.warehouse_id))
        {
            Some(Rejection::TooManyWarehouses)
        } else if c.qty > ROW_UNITS_MAX {
            Some(Rejection::QuantityOverflow)
        } else {
            None
        }
    }

    fn receive_batch(&mut self, at: Millis, c: &ReceiveBatch, txns: &mut Vec<Txn>) -> (Outcome, bool) {
        let mut scratch = std::mem::take(&mut self.scratch);
        let result = match self.check_batch(c, &mut scratch) {
            Err(rejection) => (Outcome::Rejected(rejection), false),
            Ok(()) => {
                let reference = c.txn_reference();
                txns.reserve(c.items.len());
                let mut units = 0u64;
                for (item, &(hash, landing)) in c.items.iter().zip(&scratch.landings) {
                    let sku = SkuKey::with_hash(&item.sku_id, hash);
                    let receipt = Receipt { sku, warehouse_id: &item.warehouse_id, qty: item.qty, reference };
                    match landing {
                        Some((first, existing)) => {
                            self.receive_checked(at, &receipt, first, existing, txns);
                        }
                        None => {
                            let (outcome, changed) = self.receive_one(at, &receipt, txns);
                            debug_assert!(changed, "checked: {outcome:?}");
                        }
                    }
                    units = units.saturating_add(item.qty);
                }
                (Outcome::ReceivedBatch { rows: c.items.len() as u32, units }, true)
            }
        };
        self.scratch = scratch;
        result
    }

    /// Checks a whole batch (it applies whole or not at all), recording in
    /// `scratch.landings` where each item lands. Rows never move, so an
    /// existing row or an SKU's first row found now is still right when the
    /// items are applied; a new SKU that an earlier item of the batch
    /// creates is looked up again then (`None`).
    fn check_batch(&self, c: &ReceiveBatch, scratch: &mut BatchScratch) -> Result<(), Rejection> {
        let items = &c.items;
        if items.is_empty() {
            return Err(Rejection::InvalidBatch);
        }
        let BatchScratch { pairs, skus, landings } = scratch;
        let sku_hash = |j: u32| SkuKey::new(&items[j as usize].sku_id).hash();
        let item_pair_hash = |j: u32| pair_hash(sku_hash(j), &items[j as usize].warehouse_id);
        pairs.clear();
        pairs.reserve(items.len(), |&j| item_pair_hash(j));
        skus.clear();
        skus.reserve(items.len(), |&(j, _)| sku_hash(j));
        landings.clear();
        landings.reserve(items.len());
        // The index lookups first, in a loop of their own: each is a cache
        // miss, and with nothing else between them the misses of
        // consecutive items overlap instead of waiting one by one.
        for item in items {
            let sku = SkuKey::new(&item.sku_id);
            landings.push((sku.hash(), Some(self.locate(sku, &item.warehouse_id))));
        }
        // Warehouse ids the items checked so far add to the shard: counted
        // only when the batch could reach the limit of warehouse ids.
        let mut new_warehouses = FxHashSet::default();
        let count_warehouses = self.table.warehouse_count() + items.len() >= WAREHOUSE_IDS_MAX;
        for (i, item) in items.iter().enumerate() {
            if item.qty == 0 {
                return Err(Rejection::InvalidQuantity);
            }
            let (hash, found) = landings[i];
            let sku = SkuKey::with_hash(&item.sku_id, hash);
            let same_pair = |&j: &u32| {
                let other = &items[j as usize];
                other.sku_id == item.sku_id && other.warehouse_id == item.warehouse_id
            };
            match pairs.entry(pair_hash(sku.hash(), &item.warehouse_id), same_pair, |&j| item_pair_hash(j)) {
                TableEntry::Occupied(_) => return Err(Rejection::InvalidBatch),
                TableEntry::Vacant(slot) => {
                    slot.insert(i as u32);
                }
            }
            let same_sku = |&(j, _): &(u32, u32)| items[j as usize].sku_id == item.sku_id;
            let pending_rows = skus.find(sku.hash(), same_sku).map_or(0, |&(_, rows)| rows as usize);
            let pending_warehouses =
                new_warehouses.len() - new_warehouses.contains(item.warehouse_id.as_str()) as usize;
            let (first, existing) = found.expect("every item was located");
            let receipt = Receipt { sku, warehouse_id: &item.warehouse_id, qty: item.qty, reference: "" };
            if let Some(rejection) = self.receive_rejection(first, existing, &receipt, pending_rows, pending_warehouses)
            {
                return Err(rejection);
            }
            landings[i].1 = (first.is_some() || pending_rows == 0).then_some((first, existing));
            if existing.is_none() {
                match skus.entry(sku.hash(), same_sku, |&(j, _)| sku_hash(j)) {
                    TableEntry::Occupied(mut counted) => counted.get_mut().1 += 1,
                    TableEntry::Vacant(slot) => {
                        slot.insert((i as u32, 1));
                    }
                }
                if count_warehouses && !self.table.knows_warehouse(&item.warehouse_id) {
                    new_warehouses.insert(item.warehouse_id.as_str());
                }
            }
        }
        Ok(())
    }

    fn reserve(
        &mut self,
        at: Millis,
        c: &Reserve,
        who: sale::Buyer<'_>,
        cold: &ColdFacts,
        txns: &mut Vec<Txn>,
    ) -> (Outcome, bool) {
        if c.qty == 0 {
            return (Outcome::Rejected(Rejection::InvalidQuantity), false);
        }
        let Some(first) = self.table.find_sku(&c.sku_id) else {
            return (Outcome::Rejected(Rejection::SkuNotFound), false);
        };
        let order = order_hash(&c.order_id);
        if let Some(seq) = self.find_order_line(order, &c.order_id, first, at) {
            // One hold per order line. The same request under a new key
            // gets the live hold back; anything else is a conflict.
            let hold = &self.holds[&seq];
            let reservation_id = ReservationId::new(self.config.index, seq);
            // A line of an order is never a single reserve's hold.
            let same = !self.is_order_line(seq)
                && hold.change.status == ReservationStatus::Reserved
                && at < hold.expire_at
                && hold.qty as u64 == c.qty
                && self.table.warehouse_id(hold.row) == c.warehouse_id;
            return if same {
                (Outcome::Reserved { reservation_id, expire_at: hold.expire_at }, false)
            } else {
                let rejection = Rejection::DuplicateOrderLine { existing: reservation_id, status: hold.change.status };
                (Outcome::Rejected(rejection), false)
            };
        }
        let cold_line = cold
            .order(&c.order_id)
            .and_then(|holds| holds.iter().find(|h| h.order_id == c.order_id && h.sku_id == c.sku_id && h.visible(at)));
        if let Some(hold) = cold_line {
            // A hold in the cold tier is finished: never the same request.
            let existing = ReservationId::new(self.config.index, hold.seq);
            return (Outcome::Rejected(Rejection::DuplicateOrderLine { existing, status: hold.status }), false);
        }
        let Some(row) = self.table.find_row(first, &c.warehouse_id) else {
            return (Outcome::Rejected(Rejection::SkuNotFound), false);
        };
        if self.ops.frozen(row) {
            return (Outcome::Rejected(Rejection::SkuFrozen), false);
        }
        let admitted = match self.admit(at, first, c.qty, who) {
            Ok(admitted) => admitted,
            Err(rejection) => return (Outcome::Rejected(rejection), false),
        };
        let available = self.table.row(row).available();
        if available < c.qty {
            return (Outcome::Rejected(Rejection::InsufficientStock { available }), false);
        }
        // At most `available`, so at most `ROW_UNITS_MAX`.
        let qty = c.qty as u32;
        let (before, row_after) = self.change_row(row, at, |r| r.reserved += qty);
        let seq = self.next_hold_seq;
        self.next_hold_seq += 1;
        let reservation_id = ReservationId::new(self.config.index, seq);
        let expire_at = at.saturating_add(c.ttl_ms);
        self.holds.insert(
            seq,
            Hold {
                order_id: c.order_id.as_str().into(),
                row,
                qty,
                expire_at,
                idem_key: c.idem_key.as_str().into(),
                created_at: at,
                change: HoldChange { status: ReservationStatus::Reserved, updated_at: at, detail: None },
            },
        );
        self.orders.get_or_default(order).push(seq);
        self.expiry.insert((expire_at, seq));
        self.record(Undo::NewHold { seq });
        if let Some(admitted) = admitted {
            self.count_hold(seq, qty, admitted);
        }
        let txn = self.txn(RowChange {
            kind: TxnKind::Reserve,
            row,
            qty: c.qty,
            ref_id: reservation_id.to_string(),
            order_id: c.order_id.clone(),
            detail: String::new(),
            before,
            after: row_after,
            at,
        });
        txns.push(txn);
        (Outcome::Reserved { reservation_id, expire_at }, true)
    }

    fn confirm(&mut self, at: Millis, c: &Confirm, cold: &ColdFacts, txns: &mut Vec<Txn>) -> (Outcome, bool) {
        let id = c.reservation_id;
        let Some(hold) = self.own_hold(id, at) else {
            return match self.cold_hold(id, at, cold) {
                Some(hold) => (confirm_finished(id, c, hold.status, hold.payment_id()), false),
                None => (Outcome::Rejected(Rejection::ReservationNotFound), false),
            };
        };
        match hold.change.status {
            status @ (ReservationStatus::Confirmed | ReservationStatus::Released | ReservationStatus::Expired) => {
                (confirm_finished(id, c, status, hold.change.payment_id()), false)
            }
            ReservationStatus::Reserved if self.is_order_line(id.seq()) => {
                (Outcome::Rejected(Rejection::PartOfOrder), false)
            }
            ReservationStatus::Reserved if at >= hold.expire_at => {
                // Past its deadline but the timer has not fired yet: expire
                // it now, so a late payment can never turn into a sale.
                self.release_hold(at, id.seq(), ReservationStatus::Expired, REASON_TIMEOUT, txns);
                (Outcome::Rejected(Rejection::ReservationExpired), true)
            }
            ReservationStatus::Reserved => {
                self.confirm_line(at, id.seq(), &c.payment_id, txns);
                (Outcome::Confirmed { reservation_id: id }, true)
            }
        }
    }

    /// Moves a `RESERVED` hold's quantity to sold.
    fn confirm_line(&mut self, at: Millis, seq: u64, payment_id: &str, txns: &mut Vec<Txn>) {
        let hold = &self.holds[&seq];
        debug_assert_eq!(hold.change.status, ReservationStatus::Reserved);
        let (row, qty) = (hold.row, hold.qty);
        let order_id = hold.order_id.to_string();
        let (before, row_after) = self.change_row(row, at, |r| {
            r.reserved -= qty;
            r.sold += qty;
        });
        self.set_hold(seq, at, ReservationStatus::Confirmed, payment_id.into());
        let txn = self.txn(RowChange {
            kind: TxnKind::Confirm,
            row,
            qty: qty as u64,
            ref_id: ReservationId::new(self.config.index, seq).to_string(),
            order_id,
            detail: payment_id.to_string(),
            before,
            after: row_after,
            at,
        });
        txns.push(txn);
    }

    fn release(&mut self, at: Millis, c: &Release, cold: &ColdFacts, txns: &mut Vec<Txn>) -> (Outcome, bool) {
        let id = c.reservation_id;
        let Some(hold) = self.own_hold(id, at) else {
            return match self.cold_hold(id, at, cold) {
                Some(hold) => (release_finished(id, hold.status), false),
                None => (Outcome::Rejected(Rejection::ReservationNotFound), false),
            };
        };
        let released = |status| Outcome::Released { reservation_id: id, status };
        match hold.change.status {
            status @ (ReservationStatus::Confirmed | ReservationStatus::Released | ReservationStatus::Expired) => {
                (release_finished(id, status), false)
            }
            ReservationStatus::Reserved if self.is_order_line(id.seq()) => {
                (Outcome::Rejected(Rejection::PartOfOrder), false)
            }
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
                .is_some_and(|h| h.change.status == ReservationStatus::Reserved && h.expire_at <= at)
                && !self.is_order_line(id.seq());
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
        let (row, qty) = (hold.row, hold.qty);
        let order_id = hold.order_id.to_string();
        let (before, row_after) = self.change_row(row, at, |r| r.reserved -= qty);
        self.set_hold(seq, at, status, reason.into());
        let reservation_id = ReservationId::new(self.config.index, seq);
        let txn = self.txn(RowChange {
            kind: TxnKind::Release,
            row,
            qty: qty as u64,
            ref_id: reservation_id.to_string(),
            order_id,
            detail: reason.to_string(),
            before,
            after: row_after,
            at,
        });
        txns.push(txn);
    }

    // ----- state helpers ---------------------------------------------------

    /// Applies `change` to a row, bumps its version, records the undo step,
    /// and checks the row invariant. Returns the levels before and the row after.
    fn change_row(&mut self, row: u32, at: Millis, change: impl FnOnce(&mut Row)) -> (Levels, StockRow) {
        let r = self.table.row_mut(row);
        let prev = *r;
        change(r);
        r.touch(at);
        assert!(!r.oversold(), "stock row invariant broken");
        let after = r.stock_row();
        self.record(Undo::Row { row, prev });
        (prev.levels(), after)
    }

    fn set_hold(&mut self, seq: u64, at: Millis, status: ReservationStatus, detail: Box<str>) {
        let hold = self.holds.get_mut(&seq).expect("hold exists");
        let change = HoldChange { status, updated_at: at, detail: Some(detail) };
        let prev = std::mem::replace(&mut hold.change, change);
        let finished = prev.status == ReservationStatus::Reserved && status != ReservationStatus::Reserved;
        let qty = hold.qty;
        if finished {
            self.expiry.remove(&(hold.expire_at, seq));
            self.finished.push_back((at, seq));
            if let Some(mark) = &mut self.batch {
                mark.finished_pushed += 1;
            }
        }
        self.record(Undo::Hold { seq, prev });
        if finished {
            self.uncount_hold(seq, qty, status);
            self.untag_line(seq);
        }
    }

    /// Numbers a change to one stock row and names its row.
    fn txn(&mut self, change: RowChange) -> Txn {
        let RowChange { kind, row, qty, ref_id, order_id, detail, before, after, at } = change;
        let txn_id = ((self.config.index as u64) << ReservationId::SEQ_BITS) | self.next_txn_seq;
        self.next_txn_seq += 1;
        Txn {
            txn_id,
            kind,
            sku_id: self.table.sku_id(row).to_string(),
            warehouse_id: self.table.warehouse_id(row).to_string(),
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

    /// A hold of this shard that has moved to the cold tier, as `cold`
    /// holds it, if it is still visible at `at`.
    fn cold_hold<'a>(&self, id: ReservationId, at: Millis, cold: &'a ColdFacts) -> Option<&'a ColdHold> {
        if id.shard() != self.config.index {
            return None;
        }
        cold.hold(id.seq()).flatten().filter(|h| h.visible(at))
    }

    /// The visible hold of order line `(order_id, sku)`, the SKU given by
    /// its first row.
    fn find_order_line(&self, order: u64, order_id: &str, first: u32, at: Millis) -> Option<u64> {
        let seqs = self.orders.get(&order)?;
        seqs.iter().copied().find(|seq| {
            let hold = &self.holds[seq];
            self.table.same_sku(hold.row, first) && *hold.order_id == *order_id && visible(hold, at)
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
            Query::Adjustment { id } => QueryResult::Adjustment(self.adjustment(*id)),
            Query::Adjustments { status, sku_id } => {
                QueryResult::Adjustments(self.adjustments(*status, sku_id.as_deref()))
            }
            Query::Transfer { id } => QueryResult::Transfer(self.transfer(*id)),
            Query::Transfers { status, sku_id } => QueryResult::Transfers(self.transfers(*status, sku_id.as_deref())),
            Query::OrderRecord { order_id } => QueryResult::OrderRecord(self.order_record(order_id)),
            Query::UnsettledOrders { at, tentative_before, all } => {
                QueryResult::OrderLines(self.unsettled_order_lines(*at, *tentative_before, *all))
            }
        }
    }

    pub fn stock(&self, sku_id: &str) -> Option<SkuStock> {
        let first = self.table.find_sku(sku_id)?;
        Some(SkuStock {
            sku_id: self.table.sku_id(first).to_string(),
            warehouses: self
                .table
                .chain(first)
                .map(|r| WarehouseStock {
                    warehouse_id: self.table.warehouse_id(r).to_string(),
                    row: self.stock_row(r),
                })
                .collect(),
            policy: self.sales.policy(first),
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
        ReservationView {
            reservation_id: ReservationId::new(self.config.index, seq),
            order_id: hold.order_id.to_string(),
            sku_id: self.table.sku_id(hold.row).to_string(),
            warehouse_id: self.table.warehouse_id(hold.row).to_string(),
            qty: hold.qty as u64,
            status: hold.change.status,
            expire_at: hold.expire_at,
            idem_key: hold.idem_key.to_string(),
            created_at: hold.created_at,
            updated_at: hold.change.updated_at,
            payment_id: hold.change.payment_id().map(str::to_string),
            release_reason: hold.change.release_reason().map(str::to_string),
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

    /// Sizes the stock index for `skus` SKUs in this shard, so that a bulk
    /// load up to that many does not grow it step by step. Changes no state
    /// a command sees.
    pub fn reserve_skus(&mut self, skus: usize) {
        self.table.reserve_skus(skus);
    }

    /// [`reserve_skus`](Self::reserve_skus) for part `part` (of
    /// [`INDEX_PARTS`](crate::INDEX_PARTS)) of the index alone, so that a
    /// loop can size a full shard's index a slice at a time between batches.
    pub fn reserve_skus_part(&mut self, skus: usize, part: usize) {
        self.table.reserve_skus_part(skus, part);
    }

    /// Moves the shard's idea of "now" forward for queries (finished holds
    /// past retention disappear from them). Changes no state a command sees.
    pub fn advance(&mut self, at: Millis) {
        self.last_at = self.last_at.max(at);
    }

    /// Frees at most `max` finished holds that are past retention at `at`.
    /// They are already invisible, so this only reclaims memory.
    pub fn purge_holds(&mut self, at: Millis, max: usize) -> usize {
        self.purge_orders(at, max);
        self.cold.holds.drop_before(at, &self.config.tiers);
        self.cold.orders.drop_before(at, &self.config.tiers);
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

    /// Shrinks part `part` of the tables of holds, orders and idempotency
    /// records where they use less than a quarter of their room, so that
    /// memory sized for a peak follows the hot tier back down. One part is
    /// a 256th of each table. Changes nothing a command or query sees.
    pub fn shrink_tables(&mut self, part: usize) -> bool {
        let holds = self.holds.shrink_part(part);
        let orders = self.orders.shrink_part(part);
        let idem = self.idem.shrink_part(part);
        holds || orders || idem
    }

    /// The filters of the idempotency keys this shard has moved to the
    /// cold tier.
    pub fn cold_keys(&self) -> &crate::SliceFilters {
        &self.cold.keys
    }

    /// Whether an `Evict` with these bounds would move anything.
    pub fn has_evictable(&self, holds_before: Millis, keys_before: Millis) -> bool {
        let ttl = self.config.idempotency_ttl_ms;
        self.finished.front().is_some_and(|&(finished_at, _)| finished_at < holds_before)
            || self.idem_expiry.front().is_some_and(|&(expires_at, _, _)| expires_at.saturating_sub(ttl) < keys_before)
    }

    /// Every hold and idempotency record the shard holds, as the cold tier
    /// keeps them: what a cold tier that did not take the journal from its
    /// start begins with.
    pub fn cold_seed(&self) -> (Vec<ColdHold>, Vec<IdemImage>) {
        let holds = self.holds.iter().map(|(&seq, h)| ColdHold::of_view(self.view(seq, h))).collect();
        (holds, self.image_idem())
    }

    /// Holds past `expire_at` and not yet released (the expiry backlog).
    pub fn expiry_backlog(&self, at: Millis) -> usize {
        self.expiry.range(..(at.saturating_add(1), 0)).count()
    }

    /// Forgets at most `max` idempotency records that expired by `at`. Expired
    /// records are already ignored by lookups, so when this runs never
    /// changes an outcome; it only bounds memory, a little per call.
    pub fn purge_idempotency(&mut self, at: Millis, max: usize) -> usize {
        self.cold.keys.drop_before(at, &self.config.tiers);
        let mut purged = 0;
        while purged < max {
            match self.idem_expiry.front() {
                Some(&(expires_at, lo, hi)) if expires_at <= at => {
                    let key = expiry_key(lo, hi);
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
            skus: self.table.sku_count() as usize,
            rows: self.table.len() as usize,
            holds: self.holds.len(),
            active_holds: self.expiry.len(),
            idempotency_keys: self.idem.len(),
            cold_filter_keys: self.cold.keys.keys() + self.cold.holds.keys() + self.cold.orders.keys(),
            cold_filter_bytes: self.cold.keys.bytes() + self.cold.holds.bytes() + self.cold.orders.bytes(),
            table_bytes: self.holds.table_bytes() + self.orders.table_bytes() + self.idem.table_bytes(),
        }
    }

    /// Checks the rows `from..from + max` (in creation order) for oversold
    /// rows (`sold + reserved > received`). Returns where the next call
    /// should start (0 after the last row: the sweep wrapped) and how many
    /// oversold rows were found. Lets a loop sweep a large shard a slice at
    /// a time.
    pub fn scan_oversold(&self, from: usize, max: usize) -> (usize, u64) {
        let len = self.table.len() as usize;
        let end = from.saturating_add(max).min(len);
        let start = from.min(end);
        let found = (start..end).filter(|&r| self.table.row(r as u32).oversold()).count() as u64;
        (if end >= len { 0 } else { end }, found)
    }

    /// Overwrites a row's `reserved` and `sold` without any check (keeping
    /// `received`; `available` is derived, so `levels.available` is
    /// ignored): only for tests of the invariant monitors, which must see
    /// what a corrupted row looks like.
    #[cfg(feature = "testing")]
    pub fn corrupt_row_for_testing(&mut self, sku_id: &str, warehouse_id: &str, levels: Levels) {
        let (_, row) = self.locate(SkuKey::new(sku_id), warehouse_id);
        let row = self.table.row_mut(row.expect("no such row"));
        row.reserved = levels.reserved as u32;
        row.sold = levels.sold as u32;
    }

    /// Every stock row: SKU by SKU in the order they were created, each
    /// SKU's warehouses in the order they were added.
    pub fn rows(&self) -> impl Iterator<Item = (&str, &str, StockRow)> {
        self.table.rows_by_sku().map(|r| (self.table.sku_id(r), self.table.warehouse_id(r), self.stock_row(r)))
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
                row: h.row,
                qty: h.qty as u64,
                expire_at: h.expire_at,
                idem_key: h.idem_key.to_string(),
                created_at: h.created_at,
                status: h.change.status,
                updated_at: h.change.updated_at,
                payment_id: h.change.payment_id().map(str::to_string),
                release_reason: h.change.release_reason().map(str::to_string),
            })
            .collect();
        holds.sort_by_key(|h| h.seq);
        let idem = self.image_idem();
        let mut image = ShardImage {
            index: self.config.index,
            next_hold_seq: self.next_hold_seq,
            next_txn_seq: self.next_txn_seq,
            last_at: self.last_at,
            holds,
            idem,
            cold: self.cold.clone(),
            ops: self.ops.image(),
            sale: self.sale_image(),
            ..ShardImage::default()
        };
        self.table.fill_image(&mut image);
        image
    }

    /// The idempotency records in insertion order, so that a restored shard
    /// purges keys in the same order.
    fn image_idem(&self) -> Vec<IdemImage> {
        self.idem_expiry
            .iter()
            .filter_map(|&(expires_at, lo, hi)| {
                let key = expiry_key(lo, hi);
                let r = self.idem.get(&key).filter(|r| r.expires_at == expires_at)?;
                Some(IdemImage { key, fingerprint: r.fingerprint, outcome: r.outcome, expires_at })
            })
            .collect()
    }

    /// Rebuilds a shard, indexes included, from an image.
    pub fn from_image(config: ShardConfig, image: ShardImage) -> Shard {
        assert_eq!(config.index, image.index, "image of another shard");
        let mut shard = Shard::new(config);
        shard.next_hold_seq = image.next_hold_seq;
        shard.next_txn_seq = image.next_txn_seq;
        shard.last_at = image.last_at;
        shard.table = StockTable::load(&image);
        shard.cold = image.cold;
        shard.ops = operator::Ops::load(image.ops);
        let (records, lines) = (image.sale.orders.clone(), image.sale.order_lines.clone());
        shard.sales = Shard::load_sales(image.sale);
        shard.order_state = Shard::load_orders(records, lines);
        shard.holds.reserve(image.holds.len());
        for h in image.holds {
            shard.orders.get_or_default(order_hash(&h.order_id)).push(h.seq);
            if h.status == ReservationStatus::Reserved && !shard.is_order_line(h.seq) {
                shard.expiry.insert((h.expire_at, h.seq));
            }
            let change = HoldChange {
                status: h.status,
                updated_at: h.updated_at,
                detail: match h.status {
                    ReservationStatus::Confirmed => h.payment_id.map(Into::into),
                    ReservationStatus::Released | ReservationStatus::Expired => h.release_reason.map(Into::into),
                    ReservationStatus::Reserved => None,
                },
            };
            shard.holds.insert(
                h.seq,
                Hold {
                    order_id: h.order_id.into(),
                    row: h.row,
                    qty: u32::try_from(h.qty).expect("a hold's quantity is within its row's counters"),
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
        shard.finished = finished.into_iter().collect();
        shard.idem.reserve(image.idem.len());
        for r in image.idem {
            shard
                .idem
                .insert(r.key, IdemRecord { fingerprint: r.fingerprint, outcome: r.outcome, expires_at: r.expires_at });
            shard.idem_expiry.push_back(expiry_entry(r.expires_at, r.key));
        }
        shard
    }

    // ----- checking ------------------------------------------------------

    /// Verifies every structural invariant with a full scan. For tests and
    /// the simulator; far too slow for the hot path.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut reserved: FxHashMap<u32, u64> = FxHashMap::default();
        let mut sold: FxHashMap<u32, u64> = FxHashMap::default();
        let mut live = BTreeSet::new();
        for (&seq, hold) in self.holds.iter() {
            if hold.row >= self.table.len() {
                return Err(format!("hold {seq} refers to row {} of {}", hold.row, self.table.len()));
            }
            match hold.change.status {
                ReservationStatus::Reserved => {
                    *reserved.entry(hold.row).or_default() += hold.qty as u64;
                    if !self.is_order_line(seq) {
                        live.insert((hold.expire_at, seq));
                    }
                }
                ReservationStatus::Confirmed => *sold.entry(hold.row).or_default() += hold.qty as u64,
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
        self.table.check()?;
        for r in 0..self.table.len() {
            let row = self.table.row(r);
            let where_ = || format!("{}/{}", self.table.sku_id(r), self.table.warehouse_id(r));
            if row.oversold() {
                return Err(format!(
                    "{}: reserved {} + sold {} > on hand {}",
                    where_(),
                    row.reserved,
                    row.sold,
                    row.on_hand
                ));
            }
            if row.reserved as u64 != reserved.get(&r).copied().unwrap_or(0) {
                return Err(format!("{}: reserved {} != sum of RESERVED holds", where_(), row.reserved));
            }
            // Confirmed holds leave memory after retention; their units stay sold.
            if (row.sold as u64) < sold.get(&r).copied().unwrap_or(0) {
                return Err(format!("{}: sold {} < sum of CONFIRMED holds", where_(), row.sold));
            }
        }
        self.check_ops()?;
        self.check_sales()?;
        self.check_orders()
    }

    /// A canonical, comparable copy of the whole state.
    pub fn dump(&self) -> Dump {
        let mut holds: Vec<_> = self.holds.iter().map(|(&seq, h)| self.view(seq, h)).collect();
        holds.sort_by_key(|v| v.reservation_id);
        let mut idem: Vec<_> =
            self.idem.iter().map(|(&k, r)| (k, r.fingerprint, format!("{:?}", r.outcome), r.expires_at)).collect();
        idem.sort();
        Dump {
            rows: self.rows().map(|(s, w, r)| (s.to_string(), w.to_string(), r)).collect(),
            holds,
            idem,
            next_hold_seq: self.next_hold_seq,
            next_txn_seq: self.next_txn_seq,
            ops: self.ops.image(),
            sale: self.sale_image(),
        }
    }
}

/// What a [`Query`] returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueryResult {
    Stock(Option<SkuStock>),
    Reservation(Option<ReservationView>),
    Order(Vec<ReservationView>),
    Adjustment(Option<AdjustmentView>),
    Adjustments(Vec<AdjustmentView>),
    Transfer(Option<TransferView>),
    Transfers(Vec<TransferView>),
    OrderRecord(Option<crate::OrderRecord>),
    OrderLines(Vec<crate::OrderLineView>),
}

/// See [`Shard::dump`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dump {
    pub rows: Vec<(String, String, StockRow)>,
    pub holds: Vec<ReservationView>,
    pub idem: Vec<(u128, u64, String, Millis)>,
    pub next_hold_seq: u64,
    pub next_txn_seq: u64,
    pub ops: crate::ops::OpsImage,
    pub sale: crate::SaleImage,
}
