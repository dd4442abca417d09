//! The shard loops: one pinned OS thread per shard, each owning its
//! [`Shard`] outright (no lock around stock state).
//!
//! Each loop:
//! 1. replays its journal, then reports ready;
//! 2. blocks for the first request of either lane (or the expiry tick),
//!    then drains up to `batch_max` writes without blocking, and reads
//!    from the read lane: up to `batch_max` while no more writes wait,
//!    [`READS_WHILE_WRITES_WAIT`] while they do;
//! 3. reads the clock once and applies the batch's writes (a write that
//!    needs records from the cold tier waits for them on the lookup thread
//!    and comes back as `Request::Resolved`), plus an `Expire` command for
//!    holds that came due and, with a cold tier, an `Evict` command for
//!    what is older than the hot windows and already in the cold store;
//! 4. appends the entries of the commands that changed state to the journal
//!    and flushes them (one group commit per batch);
//! 5. only then replies: outcomes if the flush succeeded; if it failed, rolls
//!    the batch back, answers `JournalUnavailable`, and refuses writes until
//!    the journal is recovered;
//! 6. answers the pass's reads from the committed state, after the writes'
//!    replies (a read sees every write acknowledged before it was asked,
//!    and nothing unacknowledged);
//! 7. sizes a slice of its stock index, if asked to make room for more SKUs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use inventory_cold::{ColdStore, Position};
use inventory_core::{
    Applied, ColdFacts, ColdQuery, Command, Entry, Evict, Expire, ExpireAdjustments, ExpireOrders, LineRefusal, Millis,
    Outcome, Query, QueryResult, Shard, ShardConfig, Txn, TxnKind, INDEX_PARTS, REASON_TIMEOUT,
};
use inventory_journal::{rebuild, Journal, JournalError, Until};
use tokio::sync::oneshot;

use crate::clock::Clock;
use crate::metrics::{EventLabels, FollowerLabels, Metrics, ShardLabels};
use crate::router::IdemIndex;
use inventory_audit::{is_audited, AuditedUpto};
use inventory_journal::follow::{Cursor, Followers};

/// How often a loop looks for due holds: a hold is released within about a
/// second of its expiry.
pub const EXPIRY_TICK_MS: u64 = 100;
/// Most holds one `Expire` command releases; the rest wait for the next tick.
pub const EXPIRE_BATCH_MAX: usize = 4_096;
/// Most idempotency records forgotten per tick.
pub const PURGE_BATCH_MAX: usize = 8_192;
/// How often a loop whose journal failed tries to recover it.
pub const JOURNAL_RETRY_MS: u64 = 500;
/// How often the timeout-backlog gauge is refreshed.
pub const BACKLOG_EVERY_MS: u64 = 1_000;
/// SKUs checked for oversell per tick: a full sweep of a large shard is
/// spread over many ticks instead of stalling one batch.
pub const OVERSELL_SWEEP_SKUS: usize = 65_536;
/// Operator recorded for the service's own commands.
pub const SYSTEM_OPERATOR: &str = "system";
/// Most reads a loop pass answers while more writes wait in the write
/// queue: however many reads are queued, a batch of writes waits for at
/// most this many reads (each a map lookup and a reply) before its turn.
pub const READS_WHILE_WRITES_WAIT: usize = 64;

/// Who asked for a write, recorded in its journal entry.
#[derive(Clone, Debug, Default)]
pub struct Meta {
    pub trace_id: u128,
    pub operator: String,
}

/// What a write request gets back.
#[derive(Debug)]
pub enum WriteReply {
    Applied(Applied),
    /// An order's lines were refused (`OrderNotReservable`): why, line by
    /// line.
    Refused(Applied, Vec<LineRefusal>),
    /// The journal could not make the batch durable: not acknowledged.
    JournalUnavailable,
    /// The command needs records from the cold tier and too many commands
    /// are waiting for theirs already: nothing changed.
    Overloaded,
    /// The cold tier could not be read: nothing changed.
    ColdUnavailable,
}

pub enum Request {
    Write {
        command: Command,
        meta: Meta,
        reply: oneshot::Sender<WriteReply>,
    },
    /// A write that needed records from the cold tier, with them.
    Resolved {
        command: Command,
        meta: Meta,
        reply: oneshot::Sender<WriteReply>,
        facts: Box<ColdFacts>,
    },
    Read {
        query: Query,
        reply: oneshot::Sender<QueryResult>,
    },
    /// Every stock row, with the last acknowledged sequence they reflect.
    Rows {
        reply: oneshot::Sender<RowsAt>,
    },
    /// Make room in the stock index for `more` SKUs beyond those held now
    /// (e.g. before a bulk import). Done a slice at a time between batches;
    /// the reply is the SKU count the index is then sized for.
    Capacity {
        more: usize,
        reply: oneshot::Sender<usize>,
    },
    /// Finish what is queued before this, then stop.
    Shutdown,
    /// Runs a closure on the shard between batches (unit tests only).
    #[cfg(test)]
    Mutate(Box<dyn FnOnce(&mut Shard) + Send>),
}

/// The two queues of a shard loop. Writes (and everything else that is
/// not a read) come through `writes`; reads ([`Request::Read`],
/// [`Request::Rows`]) through `reads`, so that reads can neither fill the
/// queue writes wait in nor take a write batch's slots.
pub struct Lanes {
    pub writes: Receiver<Request>,
    pub reads: Receiver<Request>,
}

/// Every `(sku, warehouse, row)` of a shard and the last acknowledged
/// sequence they reflect.
pub type RowsAt = (u64, Vec<(String, String, inventory_core::StockRow)>);

pub struct LoopConfig {
    pub shard: ShardConfig,
    /// Where snapshots live; start-up begins at the newest one.
    pub snapshots: Option<std::path::PathBuf>,
    pub batch_max: usize,
    /// Pin the thread to this core.
    pub core: Option<core_affinity::CoreId>,
    /// SKUs to size this shard's stock index for once it has recovered.
    pub expected_skus: usize,
}

/// What a shard loop is connected to.
pub struct LoopContext {
    pub clock: Arc<dyn Clock>,
    pub idem_index: Arc<IdemIndex>,
    pub metrics: Arc<Metrics>,
    /// Where this shard publishes its last acknowledged entry.
    pub followers: Arc<Followers>,
    /// Where it notes the last acknowledged entry the audit log records.
    pub audited_upto: Arc<AuditedUpto>,
    /// The shard's cold tier, if it moves records out of memory.
    pub cold: Option<ShardCold>,
}

/// What a shard loop needs of its cold tier.
pub struct ShardCold {
    pub store: Arc<ColdStore>,
    /// Where writes that need records from the store wait for them.
    pub lookups: crossbeam_channel::Sender<Lookup>,
    /// Set while records move out of memory; `None` for a data dir that
    /// moved records out before and now keeps everything in memory (its
    /// store still answers for what it holds).
    pub evicting: Option<Evicting>,
}

/// How a shard moves records out of memory.
pub struct Evicting {
    /// How far the store has taken the journal: only what it holds leaves
    /// memory.
    pub cursor: Arc<Cursor>,
    /// Finished holds stay in memory this long after they finish.
    pub holds_hot_ms: Millis,
    /// Idempotency records stay in memory this long after they are made.
    pub keys_hot_ms: Millis,
}

/// A write waiting for records from the cold tier.
pub struct Lookup {
    pub command: Command,
    pub meta: Meta,
    pub reply: oneshot::Sender<WriteReply>,
    pub needs: ColdQuery,
}

/// Most writes of one shard waiting for the cold tier at once; past that a
/// write that needs it is refused as overloaded.
pub const LOOKUPS_MAX: usize = 1_024;

/// Answers the lookups of one shard's writes from its cold store and
/// queues each write back to its shard with the records found. Runs until
/// `lookups` is closed.
pub fn resolve_lookups(
    store: Arc<ColdStore>,
    lookups: Receiver<Lookup>,
    queue: crossbeam_channel::Sender<Request>,
    seconds: prometheus_client::metrics::histogram::Histogram,
) {
    for Lookup { command, meta, reply, needs } in lookups {
        let started = Instant::now();
        let facts = cold_facts(&store, needs);
        seconds.observe(started.elapsed().as_secs_f64());
        match facts {
            Ok(facts) => {
                let facts = Box::new(facts);
                if queue.send(Request::Resolved { command, meta, reply, facts }).is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cold store lookup failed");
                let _ = reply.send(WriteReply::ColdUnavailable);
            }
        }
    }
}

/// What the cold store holds for `needs`.
fn cold_facts(store: &ColdStore, needs: ColdQuery) -> Result<ColdFacts, inventory_cold::ColdError> {
    Ok(ColdFacts {
        key: needs.key.map(|key| store.idem(key, 0).map(|r| (key, r))).transpose()?,
        hold: needs.hold.map(|seq| store.hold(seq).map(|h| (seq, h))).transpose()?,
        order: needs.order.map(|order| store.order(&order).map(|holds| (order, holds))).transpose()?,
    })
}

/// Runs one shard loop on the current thread until shutdown. `ready`
/// receives the replay result; on a replay error the loop returns at once.
///
/// A panic inside the loop means a broken invariant: the process aborts
/// rather than serve from state it can no longer trust. A restart replays
/// the journal, which holds only acknowledged changes.
pub fn run(
    config: LoopConfig,
    journal: Box<dyn Journal>,
    context: LoopContext,
    lanes: Lanes,
    ready: crossbeam_channel::Sender<(u16, Result<u64, JournalError>)>,
) {
    let index = config.shard.index;
    let outcome =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_inner(config, journal, context, lanes, ready)));
    if outcome.is_err() {
        tracing::error!(shard = index, "shard loop panicked: aborting so a restart replays the journal");
        std::process::abort();
    }
}

fn run_inner(
    config: LoopConfig,
    journal: Box<dyn Journal>,
    context: LoopContext,
    lanes: Lanes,
    ready: crossbeam_channel::Sender<(u16, Result<u64, JournalError>)>,
) {
    let LoopContext { clock, idem_index, metrics, followers, audited_upto, cold } = context;
    if let Some(core) = config.core {
        core_affinity::set_for_current(core);
    }
    let index = config.shard.index;
    let started = Instant::now();
    // Recover: newest snapshot, then the journal after it.
    let mut last_at = None;
    let rebuilt = rebuild(config.shard, config.snapshots.as_deref(), &*journal, Until::End, |entry| {
        last_at = Some(entry.at);
    });
    let (mut shard, stats) = match rebuilt {
        Ok(done) => done,
        Err(e) => {
            let _ = ready.send((index, Err(e)));
            return;
        }
    };
    let next_seq = stats.next_seq;
    shard.reserve_skus(config.expected_skus);
    // Loading the snapshot freed a read buffer and a decoded image about
    // twice the size of the state built from them; hand that memory back to
    // the OS now rather than whenever the allocator next purges this
    // thread's heap.
    crate::release_free_memory();
    tracing::info!(
        shard = index,
        from_seq = stats.from,
        entries = stats.entries,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "recovered from snapshot and journal"
    );
    let last_at = last_at.unwrap_or(shard.last_at());
    for (key, expires_at) in shard.idempotency_keys() {
        idem_index.restore(key, index, expires_at);
    }
    idem_index.restore_cold(index, shard.cold_keys().clone());
    if let Some(cold) = cold.as_ref().filter(|c| c.evicting.is_some()) {
        if let Err(e) = seed_cold(&shard, &*journal, cold, next_seq - 1, last_at) {
            let _ = ready.send((index, Err(JournalError::Io(std::io::Error::other(e.to_string())))));
            return;
        }
    }
    // Command times go on from the journal's, also when the wall clock is
    // now behind them.
    clock.not_before(last_at);
    audited_upto.note(next_seq - 1);
    followers.publish(next_seq - 1, last_at);
    let labels = ShardLabels { shard: index };
    metrics.journal_healthy.get_or_create(&labels).set(1);
    metrics.journal_entries.get_or_create(&labels).set(next_seq - 1);
    let mut state = LoopState {
        shard,
        journal,
        clock,
        metrics,
        idem_index,
        followers,
        audited_upto,
        cold,
        labels,
        next_seq,
        healthy: true,
        last_now: last_at,
        next_tick: 0,
        next_retry: 0,
        batch_max: config.batch_max.max(1),
        next_backlog: 0,
        sweep_cursor: 0,
        shrink_part: 0,
        sweep_found: 0,
        sizing: None,
        entries: Vec::new(),
        writes: Vec::new(),
        reads: Vec::new(),
        spare_txns: Vec::new(),
    };
    let _ = ready.send((index, Ok(next_seq - 1)));
    drop(ready);
    state.run(lanes);
    tracing::info!(shard = index, "shard loop stopped");
}

struct LoopState {
    shard: Shard,
    journal: Box<dyn Journal>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    idem_index: Arc<IdemIndex>,
    followers: Arc<Followers>,
    audited_upto: Arc<AuditedUpto>,
    cold: Option<ShardCold>,
    labels: ShardLabels,
    next_seq: u64,
    healthy: bool,
    last_now: Millis,
    next_tick: Millis,
    next_retry: Millis,
    batch_max: usize,
    next_backlog: Millis,
    sweep_cursor: usize,
    /// The part of the hot tier's tables the next tick may shrink.
    shrink_part: usize,
    sweep_found: u64,
    /// An index resize in progress (`Request::Capacity`).
    sizing: Option<Sizing>,
    // Reused per batch, so steady state allocates no buffers.
    entries: Vec<Entry>,
    writes: Vec<(oneshot::Sender<WriteReply>, WriteReply)>,
    reads: Vec<Request>,
    /// Emptied txn lists of committed entries, for the next entries: a
    /// 10,000-row receipt's list is 2 MB, too much to allocate afresh (and
    /// page in again) for every receipt.
    spare_txns: Vec<Vec<Txn>>,
}

/// Sizing the stock index for more SKUs, one part after another.
struct Sizing {
    /// SKUs in all the index is being sized for.
    skus: usize,
    /// The next index part to size.
    next_part: usize,
    /// Callers waiting for it to finish.
    replies: Vec<oneshot::Sender<usize>>,
}

/// Time a loop pass spends sizing index parts, beyond the first part. A
/// part holds 1/256 of a shard's SKUs, so a pass stalls the batches queued
/// behind it for at most this plus one part's rehash: what an insert that
/// grows that part would cost anyway.
const SIZING_SLICE: Duration = Duration::from_millis(1);

/// Most emptied txn lists kept for reuse.
const SPARE_TXNS_MAX: usize = 4;

impl LoopState {
    fn run(&mut self, lanes: Lanes) {
        let Lanes { writes, reads } = lanes;
        let closed = crossbeam_channel::never();
        let mut reads_open = true;
        let mut batch: Vec<Request> = Vec::with_capacity(self.batch_max);
        let mut stopping = false;
        while !stopping {
            let wait = if self.sizing.is_some() {
                Duration::ZERO
            } else {
                Duration::from_millis(self.next_tick.saturating_sub(self.clock.now_ms()).min(EXPIRY_TICK_MS))
            };
            // A read lane whose senders are gone is not waited on again.
            let read_lane = if reads_open { &reads } else { &closed };
            crossbeam_channel::select_biased! {
                recv(writes) -> request => match request {
                    Ok(request) => batch.push(request),
                    Err(_) => stopping = true,
                },
                recv(read_lane) -> request => match request {
                    Ok(request) => self.reads.push(request),
                    Err(_) => reads_open = false,
                },
                default(wait) => {}
            }
            while batch.len() < self.batch_max {
                match writes.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            if let Some(i) = batch.iter().position(|r| matches!(r, Request::Shutdown)) {
                // Everything queued before the marker is served. What came
                // after it is dropped: its caller sees the shard has stopped.
                batch.truncate(i);
                stopping = true;
            }
            // Reads wait behind writes: while more writes are queued, a
            // pass answers only a few; when stopping, every read queued.
            let reads_max = if stopping {
                usize::MAX
            } else if writes.is_empty() {
                self.batch_max
            } else {
                READS_WHILE_WRITES_WAIT
            };
            while self.reads.len() < reads_max {
                match reads.try_recv() {
                    Ok(request) => self.reads.push(request),
                    Err(_) => break,
                }
            }
            self.process(&mut batch);
        }
    }

    fn process(&mut self, batch: &mut Vec<Request>) {
        if !batch.is_empty() {
            self.metrics.batch_size.observe(batch.len() as f64);
        }
        let now = self.clock.now_ms().max(self.last_now);
        self.last_now = now;
        self.shard.advance(now);
        if !self.healthy && now >= self.next_retry {
            self.try_recover(now);
        }
        if self.healthy {
            self.shard.begin_batch();
        }
        let mut txns = self.spare_txns.pop().unwrap_or_default();
        for request in batch.drain(..) {
            match request {
                Request::Write { command, meta, reply } => {
                    self.write(now, command, meta, reply, None, &mut txns);
                }
                Request::Resolved { command, meta, reply, facts } => {
                    self.write(now, command, meta, reply, Some(facts), &mut txns);
                }
                read @ (Request::Read { .. } | Request::Rows { .. }) => self.reads.push(read),
                Request::Capacity { more, reply } => {
                    let skus = self.shard.stats().skus.saturating_add(more);
                    let sizing = self.sizing.get_or_insert_with(|| Sizing { skus, next_part: 0, replies: Vec::new() });
                    if skus > sizing.skus {
                        // Parts already sized for less are sized again.
                        (sizing.skus, sizing.next_part) = (skus, 0);
                    }
                    sizing.replies.push(reply);
                }
                #[cfg(test)]
                Request::Mutate(f) => f(&mut self.shard),
                Request::Shutdown => unreachable!("handled by run"),
            }
        }
        if now >= self.next_tick && self.healthy {
            let due = self.shard.due_expirations(now, EXPIRE_BATCH_MAX);
            if !due.is_empty() {
                for id in &due {
                    let expire_at = self.shard.expire_at(*id).unwrap_or(now);
                    self.metrics.release_delay.observe(now.saturating_sub(expire_at) as f64 / 1_000.0);
                }
                let command = Command::Expire(Expire { ids: due });
                if self.shard.apply(now, &command, &mut txns).changed {
                    let meta = Meta { trace_id: 0, operator: SYSTEM_OPERATOR.to_string() };
                    self.push_entry(now, meta, command, None, &mut txns);
                }
            }
            let orders = self.shard.due_order_expirations(now, EXPIRE_BATCH_MAX);
            if !orders.is_empty() {
                // The home expires its committed orders; the other shards'
                // lines follow when the resolver tells them.
                let command = Command::ExpireOrders(ExpireOrders { order_ids: orders });
                if self.shard.apply(now, &command, &mut txns).changed {
                    let meta = Meta { trace_id: 0, operator: SYSTEM_OPERATOR.to_string() };
                    self.push_entry(now, meta, command, None, &mut txns);
                }
            }
            for id in self.shard.due_adjustment_expirations(now, EXPIRE_BATCH_MAX) {
                // One entry each: an audit record names one adjustment.
                let command = Command::ExpireAdjustments(ExpireAdjustments { ids: vec![id] });
                if self.shard.apply(now, &command, &mut txns).changed {
                    let meta = Meta { trace_id: 0, operator: SYSTEM_OPERATOR.to_string() };
                    self.push_entry(now, meta, command, None, &mut txns);
                }
            }
            self.evict(now, &mut txns);
            self.shard.purge_idempotency(now, PURGE_BATCH_MAX);
            self.shard.purge_holds(now, PURGE_BATCH_MAX);
            self.shrink_part = self.shrink_part.wrapping_add(1);
            self.shard.shrink_tables(self.shrink_part);
            self.sweep_oversold();
        }
        if now >= self.next_backlog {
            self.next_backlog = now + BACKLOG_EVERY_MS;
            self.metrics.timeout_backlog.get_or_create(&self.labels).set(self.shard.expiry_backlog(now) as i64);
            let stats = self.shard.stats();
            self.metrics.holds.get_or_create(&self.labels).set(stats.holds as i64);
            self.metrics.idempotency_keys.get_or_create(&self.labels).set(stats.idempotency_keys as i64);
            self.metrics.stock_rows.get_or_create(&self.labels).set(stats.rows as i64);
            self.metrics.cold_filter_keys.get_or_create(&self.labels).set(stats.cold_filter_keys as i64);
            self.metrics.cold_filter_bytes.get_or_create(&self.labels).set(stats.cold_filter_bytes as i64);
            self.metrics.hot_table_bytes.get_or_create(&self.labels).set(stats.table_bytes as i64);
            if let Some(cold) = &self.cold {
                let bytes = cold.store.write_buffer_bytes();
                self.metrics.cold_write_buffer_bytes.get_or_create(&self.labels).set(bytes as i64);
                let pinned = cold.store.pinned_bytes();
                self.metrics.cold_pinned_bytes.get_or_create(&self.labels).set(pinned as i64);
            }
            let overdue = self.shard.overdue_transfers(now);
            self.metrics.transfers_overdue.get_or_create(&self.labels).set(overdue as i64);
            let pending = self.shard.pending_adjustments();
            self.metrics.adjustments_pending.get_or_create(&self.labels).set(pending as i64);
            for cursor in self.followers.cursors() {
                let labels = FollowerLabels { follower: cursor.name(), shard: self.labels.shard };
                self.metrics.follower_lag.get_or_create(&labels).set(cursor.lag_entries(&self.followers));
            }
        }
        if now >= self.next_tick {
            self.next_tick = now + EXPIRY_TICK_MS;
        }
        if self.healthy {
            self.commit();
        }
        self.recycle(txns);
        for request in self.reads.drain(..) {
            match request {
                Request::Read { query, reply } => {
                    let _ = reply.send(self.shard.query(&query));
                }
                Request::Rows { reply } => {
                    let rows = self.shard.rows().map(|(s, w, r)| (s.to_string(), w.to_string(), r)).collect();
                    let _ = reply.send((self.next_seq - 1, rows));
                }
                _ => unreachable!(),
            }
        }
        self.size_index();
    }

    fn push_entry(
        &mut self,
        at: Millis,
        meta: Meta,
        command: Command,
        cold: Option<Box<ColdFacts>>,
        txns: &mut Vec<Txn>,
    ) {
        let seq = self.next_seq + self.entries.len() as u64;
        let Meta { trace_id, operator } = meta;
        let txns = std::mem::replace(txns, self.spare_txns.pop().unwrap_or_default());
        self.entries.push(Entry { seq, at, trace_id, operator, command, txns, cold });
    }

    /// Applies one write, with the cold tier's records if it waited for
    /// them; one that needs records not yet looked up waits for them.
    fn write(
        &mut self,
        now: Millis,
        command: Command,
        meta: Meta,
        reply: oneshot::Sender<WriteReply>,
        facts: Option<Box<ColdFacts>>,
        txns: &mut Vec<Txn>,
    ) {
        if !self.healthy {
            let _ = reply.send(WriteReply::JournalUnavailable);
            return;
        }
        match self.shard.apply_with(now, &command, facts.as_deref().unwrap_or(&ColdFacts::NONE), txns) {
            Ok(applied) => {
                if applied.changed {
                    let facts = facts.filter(|f| !f.is_empty());
                    self.push_entry(now, meta, command, facts, txns);
                }
                let answer = match applied.outcome {
                    Outcome::Rejected(inventory_core::Rejection::OrderNotReservable { .. }) => {
                        WriteReply::Refused(applied, self.shard.take_refusals())
                    }
                    _ => WriteReply::Applied(applied),
                };
                self.writes.push((reply, answer));
            }
            Err(needs) => {
                let Some(cold) = &self.cold else {
                    // Records moved out, and their store is gone from the
                    // data dir.
                    tracing::error!(
                        shard = self.shard.index(),
                        ?needs,
                        "a write needs the cold store, which is missing"
                    );
                    let _ = reply.send(WriteReply::ColdUnavailable);
                    return;
                };
                self.metrics.cold_lookups.inc();
                if let Err(e) = cold.lookups.try_send(Lookup { command, meta, reply, needs }) {
                    let _ = e.into_inner().reply.send(WriteReply::Overloaded);
                }
            }
        }
    }

    /// Moves out of memory the finished holds and idempotency records older
    /// than the hot windows, of what the cold store has already taken.
    fn evict(&mut self, now: Millis, txns: &mut Vec<Txn>) {
        let Some(cold) = self.cold.as_ref().and_then(|c| c.evicting.as_ref()) else { return };
        // Everything made before the time of the last entry the store took
        // is in the store; everything up to that time, once it has taken
        // every acknowledged entry.
        let taken_at = cold.cursor.position_at();
        let taken_before = if cold.cursor.position() >= self.followers.durable() { taken_at + 1 } else { taken_at };
        let holds_before = now.saturating_sub(cold.holds_hot_ms).min(taken_before);
        let keys_before = now.saturating_sub(cold.keys_hot_ms).min(taken_before);
        // Whatever was made before the bound is out of memory once this
        // batch is applied (a rollback brings keys back, which only makes
        // a reuse elsewhere ask the cold store that has them).
        self.idem_index.evicted(self.shard.index(), keys_before);
        if !self.shard.has_evictable(holds_before, keys_before) {
            return;
        }
        let command = Command::Evict(Evict { holds_before, keys_before });
        let applied = self.shard.apply(now, &command, txns);
        if let Outcome::Evicted { holds, keys } = applied.outcome {
            self.metrics.evicted.get_or_create(&EventLabels { event: "hold" }).inc_by(holds as u64);
            self.metrics.evicted.get_or_create(&EventLabels { event: "key" }).inc_by(keys as u64);
        }
        if applied.changed {
            let meta = Meta { trace_id: 0, operator: SYSTEM_OPERATOR.to_string() };
            self.push_entry(now, meta, command, None, txns);
        }
    }

    /// One slice of a pending index resize: at least one part, then more
    /// while within [`SIZING_SLICE`]. Answers the callers when the last part
    /// is done.
    fn size_index(&mut self) {
        let Some(sizing) = &mut self.sizing else { return };
        let started = Instant::now();
        while sizing.next_part < INDEX_PARTS {
            self.shard.reserve_skus_part(sizing.skus, sizing.next_part);
            sizing.next_part += 1;
            if started.elapsed() >= SIZING_SLICE {
                break;
            }
        }
        if sizing.next_part == INDEX_PARTS {
            let done = self.sizing.take().expect("sizing");
            for reply in done.replies {
                let _ = reply.send(done.skus);
            }
        }
    }

    /// Keeps an entry's txn list for reuse, emptied, if there is room.
    fn recycle(&mut self, mut txns: Vec<Txn>) {
        if self.spare_txns.len() < SPARE_TXNS_MAX && txns.capacity() > 0 {
            txns.clear();
            self.spare_txns.push(txns);
        }
    }

    /// One slice of the invariant sweep; publishes the gauge when it wraps.
    fn sweep_oversold(&mut self) {
        let (next, found) = self.shard.scan_oversold(self.sweep_cursor, OVERSELL_SWEEP_SKUS);
        self.sweep_found += found;
        self.sweep_cursor = next;
        if next == 0 {
            if self.sweep_found > 0 {
                tracing::error!(
                    shard = self.shard.index(),
                    rows = self.sweep_found,
                    "OVERSELL: stock rows with sold + reserved > received"
                );
                self.metrics.oversell_detected.inc_by(self.sweep_found);
            }
            self.metrics.oversell_rows.get_or_create(&self.labels).set(self.sweep_found as i64);
            self.sweep_found = 0;
        }
    }

    /// Counts hold transitions and logs each stock change (receipts at info,
    /// hold changes at debug: never info-level logging per hot-path command).
    fn record_committed(&self) {
        let (mut reserved, mut confirmed, mut released, mut expired) = (0, 0, 0, 0);
        for entry in &self.entries {
            for txn in &entry.txns {
                match txn.kind {
                    TxnKind::Reserve => reserved += 1,
                    TxnKind::Confirm => confirmed += 1,
                    TxnKind::Release if txn.detail == REASON_TIMEOUT => expired += 1,
                    TxnKind::Release => released += 1,
                    TxnKind::Receive => {}
                    kind => {
                        debug_assert!(kind.is_operator());
                        tracing::info!(
                            target: "inventory::txn",
                            trace_id = %format_args!("{:032x}", entry.trace_id),
                            operator = %entry.operator,
                            shard = self.shard.index(),
                            seq = entry.seq,
                            sku_id = %txn.sku_id,
                            warehouse_id = %txn.warehouse_id,
                            kind = kind.as_str(),
                            ref_id = %txn.ref_id,
                            reason = %txn.detail,
                            "operator action"
                        );
                    }
                }
                tracing::debug!(
                    target: "inventory::txn",
                    trace_id = %format_args!("{:032x}", entry.trace_id),
                    operator = %entry.operator,
                    order_id = %txn.order_id,
                    sku_id = %txn.sku_id,
                    warehouse_id = %txn.warehouse_id,
                    kind = txn.kind.as_str(),
                    qty = txn.qty,
                    ref_id = %txn.ref_id,
                    "stock change"
                );
            }
        }
        for entry in &self.entries {
            let rows = entry.txns.len();
            let first = match &entry.command {
                Command::Receive(c) => Some(c.sku_id.as_str()),
                Command::ReceiveBatch(c) => c.items.first().map(|i| i.sku_id.as_str()),
                _ => None,
            };
            if let Some(first) = first {
                tracing::info!(
                    target: "inventory::txn",
                    trace_id = %format_args!("{:032x}", entry.trace_id),
                    operator = %entry.operator,
                    shard = self.shard.index(),
                    seq = entry.seq,
                    rows,
                    sku_id = %first,
                    "stock received"
                );
            }
        }
        self.metrics.reservation_events("reserved", reserved);
        self.metrics.reservation_events("confirmed", confirmed);
        self.metrics.reservation_events("released", released);
        self.metrics.reservation_events("expired", expired);
    }

    /// Makes the batch durable, then answers its writes.
    fn commit(&mut self) {
        let started = Instant::now();
        let durable = self.entries.is_empty()
            || {
                let result = self.journal.append(&self.entries);
                self.metrics.flush_seconds.observe(started.elapsed().as_secs_f64());
                match result {
                    Ok(()) => true,
                    Err(e) => {
                        self.metrics.journal_failures.inc();
                        tracing::error!(shard = self.shard.index(), error = %e, entries = self.entries.len(), "journal append failed; batch rolled back, writes refused until the journal recovers");
                        false
                    }
                }
            };
        if durable {
            self.shard.commit_batch();
            self.next_seq += self.entries.len() as u64;
            if let Some(last) = self.entries.last() {
                if let Some(receipt) = self.entries.iter().rev().find(|e| is_audited(e)) {
                    self.audited_upto.note(receipt.seq);
                }
                self.followers.publish(last.seq, last.at);
                self.record_committed();
                self.metrics.journal_entries.get_or_create(&self.labels).set(self.next_seq - 1);
            }
            for (reply, answer) in self.writes.drain(..) {
                let _ = reply.send(answer);
            }
        } else {
            self.shard.rollback_batch();
            self.healthy = false;
            self.metrics.journal_healthy.get_or_create(&self.labels).set(0);
            self.next_retry = self.last_now + JOURNAL_RETRY_MS;
            for (reply, _) in self.writes.drain(..) {
                let _ = reply.send(WriteReply::JournalUnavailable);
            }
        }
        let mut entries = std::mem::take(&mut self.entries);
        for entry in entries.drain(..) {
            self.recycle(entry.txns);
        }
        self.entries = entries;
    }

    /// Brings the journal back to exactly the acknowledged entries.
    fn try_recover(&mut self, now: Millis) {
        match self.journal.recover(self.next_seq) {
            Ok(()) => {
                tracing::warn!(
                    shard = self.shard.index(),
                    next_seq = self.next_seq,
                    "journal recovered; accepting writes again"
                );
                self.healthy = true;
            }
            Err(e) => {
                tracing::error!(shard = self.shard.index(), error = %e, "journal still unavailable");
                self.next_retry = now + JOURNAL_RETRY_MS;
            }
        }
    }
}

/// Starts a cold store that has not taken the journal from its start (a
/// data dir whose journal was truncated before the store existed, or whose
/// store was lost) from the shard's recovered state.
fn seed_cold(
    shard: &Shard,
    journal: &dyn Journal,
    cold: &ShardCold,
    recovered: u64,
    at: Millis,
) -> Result<(), Box<dyn std::error::Error>> {
    let cursor = &cold.evicting.as_ref().expect("seeding a store that takes the journal").cursor;
    let position = cold.store.position()?;
    if position.seq >= recovered {
        return Ok(());
    }
    let next = journal.read_from(position.seq + 1)?.next().transpose()?;
    if next.is_some_and(|e| e.seq == position.seq + 1) {
        return Ok(());
    }
    let (holds, records) = shard.cold_seed();
    tracing::warn!(
        shard = shard.index(),
        from = position.seq,
        to = recovered,
        holds = holds.len(),
        keys = records.len(),
        "cold store behind the journal's start: seeding it from the shard's state"
    );
    cold.store.seed(holds, records, Position { seq: recovered, at })?;
    cursor.advance(recovered, at);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::SendError;
    use inventory_core::{Levels, Receive, DEFAULT_WAREHOUSE};
    use inventory_journal::MemJournal;

    fn metric(text: &str, series: &str) -> Option<f64> {
        text.lines().find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
    }

    /// A loop on an in-memory journal, and its metrics.
    fn start_loop() -> (crossbeam_channel::Sender<Request>, std::thread::JoinHandle<()>, Arc<Metrics>) {
        let (tx, thread, metrics, _, _) = start_loop_with_progress();
        (tx, thread, metrics)
    }

    type Started = (
        crossbeam_channel::Sender<Request>,
        std::thread::JoinHandle<()>,
        Arc<Metrics>,
        Arc<Followers>,
        Arc<AuditedUpto>,
    );

    fn start_loop_with_progress() -> Started {
        let metrics = Arc::new(Metrics::new());
        let (followers, audited_upto): (Arc<Followers>, Arc<AuditedUpto>) = Default::default();
        let context = LoopContext {
            clock: Arc::new(SystemClock),
            idem_index: Arc::new(IdemIndex::new(1_000, 1)),
            metrics: metrics.clone(),
            followers: followers.clone(),
            audited_upto: audited_upto.clone(),
            cold: None,
        };
        let (tx, rx) = crossbeam_channel::bounded(16);
        // No reads here: the read lane's sender is dropped at once, which
        // the loop must take in its stride.
        let (_, reads) = crossbeam_channel::bounded(16);
        let thread = spawn_loop(context, Lanes { writes: rx, reads });
        (tx, thread, metrics, followers, audited_upto)
    }

    /// Starts a loop (batches of at most 16) and waits until it is ready.
    fn spawn_loop(context: LoopContext, lanes: Lanes) -> std::thread::JoinHandle<()> {
        let (ready_tx, ready_rx) = crossbeam_channel::unbounded();
        let config =
            LoopConfig { shard: ShardConfig::new(0), snapshots: None, batch_max: 16, core: None, expected_skus: 0 };
        let thread = std::thread::spawn(move || run(config, Box::new(MemJournal::new(0)), context, lanes, ready_tx));
        ready_rx.recv().unwrap().1.unwrap();
        thread
    }

    /// A loop behind a router whose write queue and read lane each hold
    /// `capacity` requests.
    fn start_routed(capacity: usize) -> (crate::Router, std::thread::JoinHandle<()>) {
        let context = LoopContext {
            clock: Arc::new(SystemClock),
            idem_index: Arc::new(IdemIndex::new(1_000, 1)),
            metrics: Arc::new(Metrics::new()),
            followers: Arc::default(),
            audited_upto: Arc::default(),
            cold: None,
        };
        let (writes_tx, writes) = crossbeam_channel::bounded(capacity);
        let (reads_tx, reads) = crossbeam_channel::bounded(capacity);
        let thread = spawn_loop(context, Lanes { writes, reads });
        (crate::Router::new(vec![writes_tx], vec![reads_tx]), thread)
    }

    /// Holds the loop inside a pass until the returned sender is dropped.
    fn hold_loop(router: &crate::Router) -> std::sync::mpsc::Sender<()> {
        let (release, released) = std::sync::mpsc::channel::<()>();
        let (entered_tx, entered) = std::sync::mpsc::channel();
        let hold = move |_: &mut Shard| {
            entered_tx.send(()).unwrap();
            let _ = released.recv();
        };
        router.send(0, Request::Mutate(Box::new(hold))).unwrap();
        entered.recv().unwrap();
        release
    }

    fn stock_query(sku: &str) -> (Request, oneshot::Receiver<QueryResult>) {
        let (reply, answer) = oneshot::channel();
        (Request::Read { query: Query::Stock { sku_id: sku.into() }, reply }, answer)
    }

    fn stop(router: crate::Router, thread: std::thread::JoinHandle<()>) {
        router.stop_all();
        thread.join().unwrap();
    }

    #[test]
    fn a_write_queued_after_reads_is_served_before_them() {
        let (router, thread) = start_routed(1_024);
        let release = hold_loop(&router);
        let mut reads = Vec::new();
        for _ in 0..200 {
            let (read, answer) = stock_query("s");
            router.send(0, read).unwrap();
            reads.push(answer);
        }
        let (write, mut written) = receive("s", "k");
        router.send(0, write).unwrap();
        drop(release);
        let mut reads = reads.into_iter();
        let first = reads.next().unwrap().blocking_recv().unwrap();
        // By the time the first read is answered, the write queued after
        // all of them has been.
        assert!(matches!(written.try_recv(), Ok(WriteReply::Applied(a)) if a.changed));
        // And every read sees the receipt: none was answered before it.
        assert!(matches!(first, QueryResult::Stock(Some(_))));
        for answer in reads {
            assert!(matches!(answer.blocking_recv().unwrap(), QueryResult::Stock(Some(_))));
        }
        stop(router, thread);
    }

    #[test]
    fn a_batch_of_writes_waits_for_a_bounded_number_of_reads() {
        let (router, thread) = start_routed(2_048);
        let release = hold_loop(&router);
        let reads: Vec<_> = (0..1_000)
            .map(|_| {
                let (read, answer) = stock_query("s");
                router.send(0, read).unwrap();
                answer
            })
            .collect();
        // Three batches' worth of writes (batches of 16).
        let written: Vec<_> = (0..48)
            .map(|i| {
                let (write, answer) = receive("s", &format!("k{i}"));
                router.send(0, write).unwrap();
                answer
            })
            .collect();
        drop(release);
        for answer in written {
            assert!(matches!(answer.blocking_recv().unwrap(), WriteReply::Applied(_)));
        }
        // A read sees the row's version as of the pass that answered it:
        // the first two passes, while more writes waited, answered at most
        // READS_WHILE_WRITES_WAIT reads each; the rest saw all 48 receipts.
        let versions: Vec<u64> = reads
            .into_iter()
            .map(|answer| match answer.blocking_recv().unwrap() {
                QueryResult::Stock(Some(stock)) => stock.warehouses[0].row.version,
                other => panic!("{other:?}"),
            })
            .collect();
        let early = versions.iter().filter(|v| **v < 48).count();
        assert!(early <= 2 * READS_WHILE_WRITES_WAIT, "{early} reads answered while writes waited");
        assert!(early > 0, "reads are not starved while writes wait either");
        stop(router, thread);
    }

    #[test]
    fn a_full_read_lane_refuses_reads_and_still_takes_writes() {
        let (router, thread) = start_routed(4);
        let release = hold_loop(&router);
        let reads: Vec<_> = (0..4)
            .map(|_| {
                let (read, answer) = stock_query("s");
                router.send(0, read).unwrap();
                answer
            })
            .collect();
        let (read, _) = stock_query("s");
        assert_eq!(router.send(0, read), Err(SendError::Overloaded));
        let (rows, _) = oneshot::channel();
        assert_eq!(router.send(0, Request::Rows { reply: rows }), Err(SendError::Overloaded));
        let (write, written) = receive("s", "k");
        router.send(0, write).unwrap();
        drop(release);
        assert!(matches!(written.blocking_recv().unwrap(), WriteReply::Applied(a) if a.changed));
        for answer in reads {
            assert!(matches!(answer.blocking_recv().unwrap(), QueryResult::Stock(Some(_))));
        }
        stop(router, thread);
    }

    #[test]
    fn reads_queued_before_shutdown_are_answered() {
        let (router, thread) = start_routed(64);
        let release = hold_loop(&router);
        let (read, answer) = stock_query("s");
        router.send(0, read).unwrap();
        router.stop_all();
        drop(release);
        assert!(matches!(answer.blocking_recv().unwrap(), QueryResult::Stock(None)));
        thread.join().unwrap();
    }

    /// A one-unit reserve of `sku` for order `o<i>`, key `reserve-<i>`.
    fn reserve(i: u64, sku: &str) -> Command {
        Command::Reserve(inventory_core::Reserve {
            order_id: format!("o{i}"),
            sku_id: sku.into(),
            warehouse_id: DEFAULT_WAREHOUSE.into(),
            qty: 1,
            idem_key: format!("reserve-{i}"),
            ttl_ms: 60_000,
            ttl_explicit: false,
        })
    }

    fn receive(sku: &str, key: &str) -> (Request, oneshot::Receiver<WriteReply>) {
        let (reply, answer) = oneshot::channel();
        let receive = Receive {
            sku_id: sku.into(),
            warehouse_id: DEFAULT_WAREHOUSE.into(),
            qty: 5,
            idem_key: key.into(),
            reference: String::new(),
        };
        (Request::Write { command: Command::Receive(receive), meta: Meta::default(), reply }, answer)
    }

    #[test]
    fn the_loop_publishes_the_last_receipt_beside_the_last_durable_entry() {
        let (tx, thread, _, followers, audited_upto) = start_loop_with_progress();
        let published = || (followers.durable(), audited_upto.get());
        let write = |(request, answer): (Request, oneshot::Receiver<WriteReply>)| {
            tx.send(request).unwrap();
            assert!(matches!(answer.blocking_recv().unwrap(), WriteReply::Applied(a) if a.changed));
        };
        assert_eq!(published(), (0, 0));
        write(receive("s", "k1"));
        assert_eq!(published(), (1, 1));
        for i in 0..3 {
            let (reply, answer) = oneshot::channel();
            write((Request::Write { command: reserve(i, "s"), meta: Meta::default(), reply }, answer));
        }
        // Holds are not audited: the last receipt stays where it was.
        assert_eq!(published(), (4, 1));
        write(receive("t", "k2"));
        assert_eq!(published(), (5, 5));
        tx.send(Request::Shutdown).unwrap();
        thread.join().unwrap();
    }

    #[test]
    fn capacity_requests_are_answered_once_sized_and_writes_behind_them_go_on() {
        let (tx, thread, _) = start_loop();
        let (first, sized_first) = oneshot::channel();
        tx.send(Request::Capacity { more: 5_000_000, reply: first }).unwrap();
        let (write, written) = receive("s", "k");
        tx.send(write).unwrap();
        // A smaller request while one is pending is answered with it.
        let (second, sized_second) = oneshot::channel();
        tx.send(Request::Capacity { more: 10, reply: second }).unwrap();
        assert!(matches!(written.blocking_recv().unwrap(), WriteReply::Applied(a) if a.changed));
        assert_eq!(
            (sized_first.blocking_recv().unwrap(), sized_second.blocking_recv().unwrap()),
            (5_000_000, 5_000_000)
        );
        // A later one counts the SKU now held.
        let (third, sized_third) = oneshot::channel();
        tx.send(Request::Capacity { more: 6_000_000, reply: third }).unwrap();
        assert_eq!(sized_third.blocking_recv().unwrap(), 6_000_001);
        tx.send(Request::Shutdown).unwrap();
        thread.join().unwrap();
    }

    #[test]
    fn the_invariant_sweep_reports_a_corrupted_row() {
        let (tx, thread, metrics) = start_loop();
        let (write, answer) = receive("s", "k");
        tx.send(write).unwrap();
        assert!(matches!(answer.blocking_recv().unwrap(), WriteReply::Applied(_)));

        let wait_for = |series: &str, value: f64| {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let text = metrics.render(&[]);
                if metric(&text, series) == Some(value) {
                    return;
                }
                assert!(Instant::now() < deadline, "{series} never reached {value}:\n{text}");
                std::thread::sleep(Duration::from_millis(20));
            }
        };
        wait_for(r#"inventory_oversell_rows{shard="0"}"#, 0.0);
        // Sell more than was received, behind the core's back.
        let corrupt = Levels { available: 0, reserved: 3, sold: 4 };
        tx.send(Request::Mutate(Box::new(move |s| s.corrupt_row_for_testing("s", DEFAULT_WAREHOUSE, corrupt))))
            .unwrap();
        wait_for(r#"inventory_oversell_rows{shard="0"}"#, 1.0);
        assert!(metric(&metrics.render(&[]), "inventory_oversell_detected_total").unwrap() >= 1.0);
        tx.send(Request::Shutdown).unwrap();
        thread.join().unwrap();
    }
}
