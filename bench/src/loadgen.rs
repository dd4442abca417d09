//! The load generator: one task per connection, each with its own schedule
//! (open loop, as wrk2 does it) or sending back to back (closed loop). In
//! open loop a request's latency runs from the moment it was *meant* to be
//! sent, so a stalled server shows up as latency instead of silently
//! lowering the offered load (coordinated omission).
//!
//! Each worker keeps the holds it was granted and settles some of them
//! later (confirm or release); the rest are left to expire. Every
//! acknowledged response goes into the worker's ledger, which the audit
//! compares with the target's state afterwards. With an [`AckLog`] every
//! acknowledged write also goes to a file, with the time of its answer.
//!
//! Told to stop when the target is lost, the phase ends early once workers
//! can no longer connect to it (a drill that kills the target under load).
//!
//! In a `drop` the workers take the buyers in turn from a shared counter,
//! each buyer sending its reserves back to back, and the ledger keeps what
//! every buyer was granted. With `lines` above 1 a reserve is an order of
//! that many lines in one request, and the ledger keeps a sample of the
//! granted orders and of the refused ones for the audit.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use hyper::Method;
use rustc_hash::FxHashMap;
use serde::Deserialize;
use tokio::time::Instant;

use crate::acklog::{self, Ack, AckLog};
use crate::client::{segment, Conn, Failure, Reply};
use crate::stats::{histogram, Class, RunStats, Second, Timeline};
use crate::workload::{Catalogue, DropPlan, Mode, Op, Plan, Rng};

/// Holds a worker keeps to settle later; older ones are left to expire.
const PENDING_HOLDS_MAX: usize = 4096;
/// How long past the end of the run a lagging open-loop worker keeps
/// sending its backlog; what is left then is counted as unsent.
/// Age at which an order is recalled: past both of the service's default
/// hot windows (60 s for finished holds, 300 s for idempotency keys), so
/// that the answers come from its cold tier when that is on.
const RECALL_AFTER: Duration = Duration::from_secs(330);
/// One granted reserve in this many is kept for a later recall.
const RECALL_SAMPLE: u64 = 16;
/// Most reserves a worker keeps for recalls, waiting to age and aged.
const RECALL_KEPT: usize = 4096;
const DRAIN_GRACE: Duration = Duration::from_secs(5);
/// Connection attempts in a row a worker sees refused before it takes the
/// target for lost (with `stop_when_lost`).
const LOST_AFTER_REFUSALS: u32 = 3;
/// Refused orders kept, over all workers, to check that they hold nothing.
const REFUSED_ORDERS_AUDIT_MAX: usize = 10_000;

/// Status of an acknowledged hold as the harness last learned it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldStatus {
    Reserved,
    Confirmed,
    Released,
    Expired,
}

/// One acknowledged hold, kept for the audit (all of them, or a uniform
/// sample once there are more than the audit budget).
#[derive(Clone, Debug)]
pub struct HoldRecord {
    pub reservation_id: String,
    pub sku: u64,
    pub qty: u64,
    pub status: HoldStatus,
    /// A settle request for it failed without an answer: its outcome is
    /// unknown, so any final status is consistent.
    pub uncertain: bool,
}

/// What the harness was told about one SKU.
#[derive(Clone, Copy, Debug, Default)]
pub struct SkuLedger {
    /// Units in acknowledged reserves.
    pub reserved: u64,
    /// Units in acknowledged confirms.
    pub confirmed: u64,
    /// Units in acknowledged releases (status `RELEASED`).
    pub released: u64,
    /// Units in writes that got no answer (timeouts, 5xx): may or may not
    /// have been applied.
    pub uncertain: u64,
}

/// What one buyer of a drop was granted, as the acknowledged answers said.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BuyerLedger {
    /// Granted holds (answers 200): reservation id and units.
    pub grants: Vec<(String, u64)>,
    /// Those of them the harness released (answered `RELEASED`).
    pub released: Vec<String>,
}

/// One line of an acknowledged order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderLine {
    pub sku: u64,
    pub qty: u64,
    pub reservation_id: String,
}

/// One acknowledged multi-line order, kept for the audit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderRecord {
    pub order_id: String,
    pub lines: Vec<OrderLine>,
}

/// A worker's (and after merging, the run's) ledger of acknowledged writes.
#[derive(Default)]
pub struct Ledger {
    pub skus: FxHashMap<u64, SkuLedger>,
    pub holds: Vec<HoldRecord>,
    /// Acknowledged reserves, of which `holds` is a sample.
    pub holds_acked: u64,
    /// Responses that contradict an earlier acknowledgement (e.g. a confirm
    /// of a granted, unexpired hold answered `RESERVATION_NOT_FOUND`).
    pub contradictions: u64,
    /// A drop's buyers, by number, with what each was granted.
    pub buyers: FxHashMap<u64, BuyerLedger>,
    /// Buyers of a drop who had their turn (sent at least one reserve).
    pub buyers_served: u64,
    /// When the first `INSUFFICIENT_STOCK` came back, from the phase's start.
    pub sold_out_after: Option<Duration>,
    /// A sample of the acknowledged multi-line orders.
    pub orders: Vec<OrderRecord>,
    /// Acknowledged multi-line orders, of which `orders` is a sample.
    pub orders_acked: u64,
    /// A sample of the orders refused `ORDER_NOT_RESERVABLE`: each must
    /// hold nothing.
    pub refused_orders: Vec<String>,
    pub refused_orders_seen: u64,
    /// Lines of refused orders, by the code the refusal gave each.
    pub refused_lines: BTreeMap<String, u64>,
}

impl Ledger {
    pub fn merge(&mut self, other: Ledger) {
        for (sku, l) in other.skus {
            let e = self.skus.entry(sku).or_default();
            e.reserved += l.reserved;
            e.confirmed += l.confirmed;
            e.released += l.released;
            e.uncertain += l.uncertain;
        }
        self.holds.extend(other.holds);
        self.holds_acked += other.holds_acked;
        self.contradictions += other.contradictions;
        for (buyer, l) in other.buyers {
            let e = self.buyers.entry(buyer).or_default();
            e.grants.extend(l.grants);
            e.released.extend(l.released);
        }
        self.buyers_served += other.buyers_served;
        self.sold_out_after = match (self.sold_out_after, other.sold_out_after) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.orders.extend(other.orders);
        self.orders_acked += other.orders_acked;
        self.refused_orders.extend(other.refused_orders);
        self.refused_orders_seen += other.refused_orders_seen;
        for (code, n) in other.refused_lines {
            *self.refused_lines.entry(code).or_default() += n;
        }
    }
}

/// The body of `POST /api/orders/{orderId}/reserve` for `lines` of
/// `(skuId, qty)`.
pub fn order_body<'a>(order_id: &str, lines: impl IntoIterator<Item = (&'a str, u64)>, ttl_seconds: u64) -> String {
    let lines: Vec<serde_json::Value> =
        lines.into_iter().map(|(sku_id, qty)| serde_json::json!({"skuId": sku_id, "qty": qty})).collect();
    serde_json::json!({
        "lines": lines,
        "idemKey": format!("t1:{order_id}:reserve"),
        "ttlSeconds": ttl_seconds,
    })
    .to_string()
}

/// A granted order: 200 `{orderId, status:"RESERVED", expireAt, lines}`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderGranted {
    pub order_id: String,
    pub status: String,
    #[serde(default)]
    pub expire_at: Option<String>,
    pub lines: Vec<GrantedLine>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GrantedLine {
    pub sku_id: String,
    #[serde(default)]
    pub warehouse_id: Option<String>,
    pub qty: u64,
    pub reservation_id: String,
}

/// A refused order: 409 `{code:"ORDER_NOT_RESERVABLE", message, lines}`,
/// each line with its own code (and `available` for a stock shortage).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderRefused {
    pub code: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub lines: Vec<RefusedLine>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RefusedLine {
    pub sku_id: String,
    #[serde(default)]
    pub warehouse_id: Option<String>,
    pub code: String,
    #[serde(default)]
    pub available: Option<i64>,
}

/// The code of a refused order.
pub const ORDER_NOT_RESERVABLE: &str = "ORDER_NOT_RESERVABLE";

/// Reads a granted order's answer against what was asked (`(sku, skuId)`
/// per line, `qty` units each): the order, `RESERVED`, every line once,
/// with its quantity and a reservation id of its own. The lines come back
/// in the order asked.
pub fn granted_lines(order_id: &str, asked: &[(u64, String)], qty: u64, body: &[u8]) -> Result<Vec<OrderLine>, String> {
    let granted: OrderGranted = serde_json::from_slice(body)
        .map_err(|e| format!("not a granted order ({e}): {}", String::from_utf8_lossy(body)))?;
    if granted.order_id != order_id {
        return Err(format!("answered for order {:?}, asked for {order_id:?}", granted.order_id));
    }
    if granted.status != "RESERVED" {
        return Err(format!("status {:?}, not RESERVED", granted.status));
    }
    if granted.lines.len() != asked.len() {
        return Err(format!("{} lines granted, {} asked", granted.lines.len(), asked.len()));
    }
    let mut lines = Vec::with_capacity(asked.len());
    for (sku, sku_id) in asked {
        let mut matching = granted.lines.iter().filter(|l| &l.sku_id == sku_id);
        let (Some(line), None) = (matching.next(), matching.next()) else {
            return Err(format!("{sku_id} is not granted exactly once"));
        };
        if line.qty != qty {
            return Err(format!("{sku_id}: {} units granted, {qty} asked", line.qty));
        }
        if line.reservation_id.is_empty() || lines.iter().any(|l: &OrderLine| l.reservation_id == line.reservation_id) {
            return Err(format!("{sku_id}: reservation id {:?} is empty or not its own", line.reservation_id));
        }
        lines.push(OrderLine { sku: *sku, qty, reservation_id: line.reservation_id.clone() });
    }
    Ok(lines)
}

/// Live counters for the progress bar.
#[derive(Default)]
pub struct Progress {
    pub ok: AtomicU64,
    pub errors: AtomicU64,
    pub reserves_ok: AtomicU64,
}

pub struct LoadConfig {
    pub addr: SocketAddr,
    pub connections: usize,
    pub request_timeout: Duration,
    pub plan: Plan,
    pub catalogue: Arc<Catalogue>,
    /// Distinguishes this run's order ids and idempotency keys.
    pub run_tag: String,
    /// Most hold records kept for the audit, over all workers.
    pub audit_holds_max: usize,
    /// Where every acknowledged write goes, if anywhere.
    pub acks: Option<Arc<AckLog>>,
    /// End the phase early once the target refuses connections.
    pub stop_when_lost: bool,
    /// Extra connections that read stock back to back during the phase
    /// (closed loop, the catalogue's SKU picks), beside the workload.
    pub read_flood: usize,
    /// Credentials every request carries, if any.
    pub auth: Option<Arc<crate::auth::Auth>>,
}

pub struct LoadResult {
    pub stats: RunStats,
    pub ledger: Ledger,
    pub timeline: Timeline,
    /// Open-loop requests never sent because the target fell too far behind.
    pub unsent: u64,
    /// Wall time of the measured phase.
    pub elapsed: Duration,
    /// When the target was found gone, from the start of the phase (with
    /// `stop_when_lost`).
    pub target_lost_after: Option<Duration>,
    /// What the read flood got back (with `read_flood` connections).
    pub flood: Option<FloodCounts>,
}

/// Answers to the read flood's stock queries, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FloodCounts {
    pub connections: usize,
    /// 200s.
    pub ok: u64,
    /// 429 `RATE_LIMITED`.
    pub rate_limited: u64,
    /// Any other answer, and requests that got none.
    pub other: u64,
}

impl FloodCounts {
    fn merge(&mut self, other: FloodCounts) {
        self.ok += other.ok;
        self.rate_limited += other.rate_limited;
        self.other += other.other;
    }
}

/// One read-flood connection: stock queries back to back until `end`.
async fn flood(config: Arc<LoadConfig>, id: usize, start: Instant, end: Instant) -> FloodCounts {
    let mut conn = Conn::with_auth(config.addr, config.request_timeout, config.auth.as_ref());
    let mut rng = Rng::new(config.plan.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(id as u64));
    let mut counts = FloodCounts::default();
    let catalogue = &config.catalogue;
    tokio::time::sleep_until(start).await;
    while Instant::now() < end {
        let path = format!("/api/inventory/{}", segment(&catalogue.sku_id(catalogue.pick(&mut rng))));
        match conn.get(&path).await {
            Ok(r) if r.status == 200 => counts.ok += 1,
            Ok(r) if r.status == 429 => counts.rate_limited += 1,
            Ok(_) => counts.other += 1,
            Err(_) => {
                counts.other += 1;
                // Not a tight loop against a target that went away.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    counts
}

/// Runs the measured phase and returns what it measured.
pub async fn run(config: LoadConfig, progress: Arc<Progress>) -> LoadResult {
    let config = Arc::new(config);
    let timeline = Arc::new(Timeline::default());
    // Start a little in the future so that every worker is ready at t = 0.
    let start = Instant::now() + Duration::from_millis(50);
    let lost = Arc::new(AtomicU64::new(0));
    let next_buyer = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(config.connections);
    for id in 0..config.connections {
        let worker = Worker::new(id, config.clone(), timeline.clone(), progress.clone(), start, lost.clone());
        tasks.push(match config.plan.drop {
            Some(drop) => tokio::spawn(worker.run_drop(drop, next_buyer.clone())),
            None => tokio::spawn(worker.run()),
        });
    }
    let floods: Vec<_> = (0..config.read_flood)
        .map(|id| tokio::spawn(flood(config.clone(), id, start, start + config.plan.duration)))
        .collect();
    let mut stats = RunStats::default();
    let mut ledger = Ledger::default();
    let mut unsent = 0;
    for task in tasks {
        let done = task.await.expect("load worker panicked");
        stats.merge(&done.stats);
        ledger.merge(done.ledger);
        unsent += done.unsent;
    }
    let mut flood =
        (config.read_flood > 0).then_some(FloodCounts { connections: config.read_flood, ..Default::default() });
    for task in floods {
        let counts = task.await.expect("read flood panicked");
        flood.as_mut().expect("flood counted").merge(counts);
    }
    let elapsed = Instant::now().saturating_duration_since(start).min(config.plan.duration + DRAIN_GRACE);
    let timeline = Arc::try_unwrap(timeline).unwrap_or_else(|_| unreachable!("workers are done"));
    let target_lost_after = match lost.load(Relaxed) {
        0 => None,
        ms => Some(Duration::from_millis(ms - 1)),
    };
    LoadResult { stats, ledger, timeline, unsent, elapsed, target_lost_after, flood }
}

/// An open-loop arrival schedule: one worker's share of a fixed rate.
struct Schedule {
    next: Instant,
    interval: Duration,
    end: Instant,
}

impl Schedule {
    fn new(start: Instant, end: Instant, rate: f64, workers: usize, id: usize) -> Schedule {
        let interval = Duration::from_secs_f64(workers as f64 / rate);
        let offset = Duration::from_secs_f64(id as f64 / rate);
        Schedule { next: start + offset, interval, end }
    }

    fn due(&self) -> Option<Instant> {
        (self.next < self.end).then_some(self.next)
    }

    /// Requests still scheduled (for counting what was never sent).
    fn remaining(&self) -> u64 {
        if self.next >= self.end {
            0
        } else {
            ((self.end - self.next).as_secs_f64() / self.interval.as_secs_f64()).ceil() as u64
        }
    }
}

struct Pending {
    reservation_id: String,
    order_id: String,
    sku: u64,
    qty: u64,
    granted: Instant,
    slot: Option<usize>,
    /// The drop buyer it was granted to.
    buyer: Option<u64>,
}

/// A granted reserve kept to be looked at again later.
struct Recall {
    reservation_id: String,
    order_id: String,
    sku: u64,
    granted: Instant,
}

struct Worker {
    id: usize,
    config: Arc<LoadConfig>,
    timeline: Arc<Timeline>,
    progress: Arc<Progress>,
    start: Instant,
    conn: Conn,
    rng: Rng,
    stats: RunStats,
    ledger: Ledger,
    pending: VecDeque<Pending>,
    /// Reserves kept for recalls, oldest first, until they are
    /// `RECALL_AFTER` old; then a sample of those in `aged`.
    aging: VecDeque<Recall>,
    aged: Vec<Recall>,
    recalls: u64,
    orders: u64,
    holds_cap: usize,
    /// Refused orders this worker keeps for the audit.
    refused_cap: usize,
    second: Second,
    second_index: usize,
    /// Shared by all workers: 0 while the target answers, else 1 + the
    /// milliseconds into the phase at which a worker found it gone.
    lost: Arc<AtomicU64>,
    /// Connection attempts refused in a row.
    refusals: u32,
}

enum Arrival {
    Regular,
    Burst,
}

impl Worker {
    fn new(
        id: usize,
        config: Arc<LoadConfig>,
        timeline: Arc<Timeline>,
        progress: Arc<Progress>,
        start: Instant,
        lost: Arc<AtomicU64>,
    ) -> Self {
        let conn = Conn::with_auth(config.addr, config.request_timeout, config.auth.as_ref());
        let rng = Rng::new(config.plan.seed.wrapping_mul(0x100_0000_01B3).wrapping_add(id as u64));
        let holds_cap = (config.audit_holds_max / config.connections).max(1);
        let refused_cap = (REFUSED_ORDERS_AUDIT_MAX / config.connections).max(1);
        Worker {
            id,
            config,
            timeline,
            progress,
            start,
            conn,
            rng,
            stats: RunStats::default(),
            ledger: Ledger::default(),
            pending: VecDeque::new(),
            aging: VecDeque::new(),
            aged: Vec::new(),
            recalls: 0,
            orders: 0,
            holds_cap,
            refused_cap,
            second: Second::default(),
            second_index: 0,
            lost,
            refusals: 0,
        }
    }

    async fn run(mut self) -> WorkerDone {
        let plan = self.config.plan.clone();
        let end = self.start + plan.duration;
        let workers = self.config.connections;
        let mut regular = match plan.mode {
            Mode::Open { rate } => Some(Schedule::new(self.start, end, rate, workers, self.id)),
            Mode::Closed => None,
        };
        let mut burst = plan
            .burst
            .map(|b| Schedule::new(self.start + b.start, (self.start + b.end).min(end), b.rate, workers, self.id));
        let mut unsent = 0;
        tokio::time::sleep_until(self.start).await;
        loop {
            if self.lost.load(Relaxed) != 0 {
                break;
            }
            let (intended, arrival) = match plan.mode {
                Mode::Closed => {
                    let now = Instant::now();
                    if now >= end {
                        break;
                    }
                    (now, Arrival::Regular)
                }
                Mode::Open { .. } => {
                    let r = regular.as_ref().and_then(Schedule::due);
                    let b = burst.as_ref().and_then(Schedule::due);
                    match (r, b) {
                        (None, None) => break,
                        (Some(r), Some(b)) if b < r => (b, Arrival::Burst),
                        (Some(r), _) => (r, Arrival::Regular),
                        (None, Some(b)) => (b, Arrival::Burst),
                    }
                }
            };
            if let Mode::Open { .. } = plan.mode {
                let now = Instant::now();
                if now > end + DRAIN_GRACE {
                    unsent += regular.as_ref().map_or(0, Schedule::remaining);
                    unsent += burst.as_ref().map_or(0, Schedule::remaining);
                    break;
                }
                if intended > now {
                    tokio::time::sleep_until(intended).await;
                }
                let schedule = match arrival {
                    Arrival::Regular => regular.as_mut(),
                    Arrival::Burst => burst.as_mut(),
                }
                .expect("schedule exists");
                schedule.next += schedule.interval;
            }
            let op = match arrival {
                Arrival::Burst => Op::Reserve,
                Arrival::Regular => plan.mix.pick(&mut self.rng),
            };
            let flash = plan.flash_only || matches!(arrival, Arrival::Burst);
            self.step(op, flash, intended).await;
        }
        self.flush_second();
        WorkerDone { stats: self.stats, ledger: self.ledger, unsent }
    }

    /// A drop: takes the next buyer until every buyer has had a turn (or
    /// the phase is over) and sends that buyer's reserves back to back.
    async fn run_drop(mut self, drop: DropPlan, next_buyer: Arc<AtomicU64>) -> WorkerDone {
        let end = self.start + self.config.plan.duration;
        let flash = self.config.catalogue.flash();
        tokio::time::sleep_until(self.start).await;
        'buyers: while Instant::now() < end && self.lost.load(Relaxed) == 0 {
            let buyer = next_buyer.fetch_add(1, Relaxed);
            if buyer >= drop.buyers {
                break;
            }
            self.ledger.buyers_served += 1;
            let (attempts, qty) = drop.requests_of(buyer);
            for _ in 0..attempts {
                let intended = Instant::now();
                if intended >= end {
                    break 'buyers;
                }
                let (op, class, code) = self.reserve_sku(flash, qty, Some(buyer)).await;
                if code == "INSUFFICIENT_STOCK" && self.ledger.sold_out_after.is_none() {
                    self.ledger.sold_out_after = Some(Instant::now().saturating_duration_since(self.start));
                }
                self.record(op, class, code, intended);
            }
        }
        self.flush_second();
        WorkerDone { stats: self.stats, ledger: self.ledger, unsent: 0 }
    }

    /// Sends one operation (a settle with nothing to settle becomes a
    /// reserve; a reserve is an order with `lines` above 1) and records it.
    async fn step(&mut self, op: Op, flash: bool, intended: Instant) {
        let reserve_or_order = self.config.plan.lines > 1 && !flash;
        let (op, class, code) = match op {
            Op::Reserve | Op::Order if reserve_or_order => self.order().await,
            Op::Reserve | Op::Order => self.reserve(flash).await,
            Op::Confirm | Op::Release => match self.take_pending() {
                Some(hold) => self.settle(op, hold).await,
                None => self.reserve(flash).await,
            },
            Op::Query => self.query(flash).await,
            Op::Recall => match self.take_recall() {
                Some(i) => self.recall(i).await,
                None => self.reserve(flash).await,
            },
        };
        self.record(op, class, code, intended);
    }

    /// Records an answered (or failed) operation sent at `intended`.
    fn record(&mut self, op: Op, class: Class, code: String, intended: Instant) {
        let done = Instant::now();
        let latency_us = done.saturating_duration_since(intended).as_micros() as u64;
        if self.config.stop_when_lost {
            self.note_refusal(code == Failure::Connect.code(), done);
        }
        self.stats.op(op).record(latency_us, class, &code);
        self.tick(done, op, class, latency_us);
    }

    /// Counts refused connections in a row; enough of them and the target
    /// is taken for lost, which ends every worker's phase.
    fn note_refusal(&mut self, refused: bool, now: Instant) {
        self.refusals = if refused { self.refusals + 1 } else { 0 };
        if self.refusals >= LOST_AFTER_REFUSALS {
            let ms = now.saturating_duration_since(self.start).as_millis() as u64;
            let _ = self.lost.compare_exchange(0, ms + 1, Relaxed, Relaxed);
        }
    }

    fn log(&self, ack: impl FnOnce(u64) -> Ack) {
        if let Some(log) = &self.config.acks {
            log.append(&ack(acklog::now_ms()));
        }
    }

    fn tick(&mut self, done: Instant, op: Op, class: Class, latency_us: u64) {
        let index = done.saturating_duration_since(self.start).as_secs() as usize;
        if index != self.second_index {
            self.flush_second();
            self.second_index = index;
        }
        let s = &mut self.second;
        match class {
            Class::Ok => {
                s.ok += 1;
                if matches!(op, Op::Reserve | Op::Order) {
                    s.reserves_ok += 1;
                    self.progress.reserves_ok.fetch_add(1, Relaxed);
                }
                self.progress.ok.fetch_add(1, Relaxed);
            }
            Class::Rejected => {}
            Class::Error => {
                s.errors += 1;
                self.progress.errors.fetch_add(1, Relaxed);
            }
        }
        s.latency_us.get_or_insert_with(|| histogram(2)).saturating_record(latency_us.max(1));
    }

    fn flush_second(&mut self) {
        let second = std::mem::take(&mut self.second);
        if second.latency_us.is_some() {
            self.timeline.add(self.second_index, &second);
        }
    }

    fn take_pending(&mut self) -> Option<Pending> {
        // Settle the newest hold (a buyer pays shortly after ordering); one
        // that is close to expiry is left to expire.
        let ttl = Duration::from_secs(self.config.plan.hold_ttl_secs);
        let margin = Duration::from_millis(500).min(ttl / 2);
        let now = Instant::now();
        while let Some(hold) = self.pending.pop_back() {
            if now.saturating_duration_since(hold.granted) + margin < ttl {
                return Some(hold);
            }
        }
        None
    }

    async fn reserve(&mut self, flash: bool) -> (Op, Class, String) {
        let sku = if flash { self.config.catalogue.flash() } else { self.config.catalogue.pick(&mut self.rng) };
        self.reserve_sku(sku, self.config.plan.qty, None).await
    }

    /// A drop buyer's id as the service sees it.
    fn buyer_id(&self, buyer: u64) -> String {
        format!("{}-buyer-{buyer}", self.config.run_tag)
    }

    /// Reserves `qty` units of `sku` for a new order (for a drop's `buyer`).
    async fn reserve_sku(&mut self, sku: u64, qty: u64, buyer: Option<u64>) -> (Op, Class, String) {
        let catalogue = self.config.catalogue.clone();
        let sku_id = catalogue.sku_id(sku);
        self.orders += 1;
        let order_id = format!("{}-{}-{}", self.config.run_tag, self.id, self.orders);
        let buyer_id = buyer.map(|b| self.buyer_id(b));
        let body = reserve_body(&order_id, &sku_id, qty, self.config.plan.hold_ttl_secs, buyer_id.as_deref());
        let reply = self.conn.request(Method::POST, "/api/inventory/reserve", Some(body.into_bytes())).await;
        let granted = Instant::now();
        let (class, code) = classify(&reply);
        match (&reply, class) {
            (Ok(r), Class::Ok) => {
                #[derive(Deserialize)]
                #[serde(rename_all = "camelCase")]
                struct Granted {
                    reservation_id: String,
                    // Text from the service; the baselines answer other
                    // shapes, which the drill does not need.
                    #[serde(default)]
                    expire_at: Option<serde_json::Value>,
                }
                let Some(Granted { reservation_id, expire_at }) = r.json() else {
                    return (Op::Reserve, Class::Error, "BAD_RESPONSE".into());
                };
                self.log(|ack_ms| Ack::Reserve {
                    ack_ms,
                    reservation_id: reservation_id.clone(),
                    order_id: order_id.clone(),
                    sku_id: sku_id.clone(),
                    qty,
                    expire_at_ms: expire_at
                        .as_ref()
                        .and_then(|v| v.as_str())
                        .and_then(acklog::parse_rfc3339_ms)
                        .unwrap_or(0),
                });
                self.ledger.skus.entry(sku).or_default().reserved += qty;
                if let Some(buyer) = buyer {
                    self.ledger.buyers.entry(buyer).or_default().grants.push((reservation_id.clone(), qty));
                }
                let slot = self.sample_hold(HoldRecord {
                    reservation_id: reservation_id.clone(),
                    sku,
                    qty,
                    status: HoldStatus::Reserved,
                    uncertain: false,
                });
                if self.pending.len() == PENDING_HOLDS_MAX {
                    self.pending.pop_front();
                }
                if self.config.plan.mix.recall > 0 && self.orders.is_multiple_of(RECALL_SAMPLE) {
                    if self.aging.len() == RECALL_KEPT {
                        self.aging.pop_front();
                    }
                    let (reservation_id, order_id) = (reservation_id.clone(), order_id.clone());
                    self.aging.push_back(Recall { reservation_id, order_id, sku, granted });
                }
                self.pending.push_back(Pending { reservation_id, order_id, sku, qty, granted, slot, buyer });
            }
            (_, Class::Error) => self.ledger.skus.entry(sku).or_default().uncertain += qty,
            _ => {}
        }
        (Op::Reserve, class, code)
    }

    /// Reserves an order of `lines` distinct SKUs in one request.
    async fn order(&mut self) -> (Op, Class, String) {
        let catalogue = self.config.catalogue.clone();
        let qty = self.config.plan.qty;
        let asked: Vec<(u64, String)> = catalogue
            .pick_distinct(&mut self.rng, self.config.plan.lines)
            .into_iter()
            .map(|sku| (sku, catalogue.sku_id(sku)))
            .collect();
        self.orders += 1;
        let order_id = format!("{}-{}-{}", self.config.run_tag, self.id, self.orders);
        let body =
            order_body(&order_id, asked.iter().map(|(_, id)| (id.as_str(), qty)), self.config.plan.hold_ttl_secs);
        let path = format!("/api/orders/{}/reserve", segment(&order_id));
        let reply = self.conn.request(Method::POST, &path, Some(body.into_bytes())).await;
        let (class, code) = classify(&reply);
        match (&reply, class) {
            (Ok(r), Class::Ok) => {
                let lines = match granted_lines(&order_id, &asked, qty, &r.body) {
                    Ok(lines) => lines,
                    Err(_) => {
                        // Granted, but not as asked: whatever it holds is
                        // not known.
                        for (sku, _) in &asked {
                            self.ledger.skus.entry(*sku).or_default().uncertain += qty;
                        }
                        return (Op::Order, Class::Error, "BAD_RESPONSE".into());
                    }
                };
                let expire_at_ms = r
                    .json::<OrderGranted>()
                    .and_then(|g| g.expire_at)
                    .and_then(|at| acklog::parse_rfc3339_ms(&at))
                    .unwrap_or(0);
                for line in &lines {
                    self.ledger.skus.entry(line.sku).or_default().reserved += line.qty;
                    self.log(|ack_ms| Ack::Reserve {
                        ack_ms,
                        reservation_id: line.reservation_id.clone(),
                        order_id: order_id.clone(),
                        sku_id: catalogue.sku_id(line.sku),
                        qty: line.qty,
                        expire_at_ms,
                    });
                }
                self.sample_order(OrderRecord { order_id, lines });
            }
            (Ok(r), Class::Rejected) if code == ORDER_NOT_RESERVABLE => {
                for line in r.json::<OrderRefused>().map(|o| o.lines).unwrap_or_default() {
                    *self.ledger.refused_lines.entry(line.code).or_default() += 1;
                }
                self.sample_refused(order_id);
            }
            (_, Class::Error) => {
                for (sku, _) in &asked {
                    self.ledger.skus.entry(*sku).or_default().uncertain += qty;
                }
            }
            _ => {}
        }
        (Op::Order, class, code)
    }

    /// Reservoir sampling of acknowledged orders (as of holds).
    fn sample_order(&mut self, record: OrderRecord) {
        self.ledger.orders_acked += 1;
        if self.ledger.orders.len() < self.holds_cap {
            self.ledger.orders.push(record);
        } else {
            let j = self.rng.below(self.ledger.orders_acked) as usize;
            if j < self.holds_cap {
                self.ledger.orders[j] = record;
            }
        }
    }

    /// Reservoir sampling of refused orders.
    fn sample_refused(&mut self, order_id: String) {
        self.ledger.refused_orders_seen += 1;
        if self.ledger.refused_orders.len() < self.refused_cap {
            self.ledger.refused_orders.push(order_id);
        } else {
            let j = self.rng.below(self.ledger.refused_orders_seen) as usize;
            if j < self.refused_cap {
                self.ledger.refused_orders[j] = order_id;
            }
        }
    }

    /// The index in `aged` of a reserve to recall, if one is old enough.
    fn take_recall(&mut self) -> Option<usize> {
        while self.aging.front().is_some_and(|r| r.granted.elapsed() >= RECALL_AFTER) {
            let recall = self.aging.pop_front().expect("front exists");
            if self.aged.len() < RECALL_KEPT {
                self.aged.push(recall);
            } else {
                let j = self.rng.below(RECALL_KEPT as u64) as usize;
                self.aged[j] = recall;
            }
        }
        (!self.aged.is_empty()).then(|| self.rng.below(self.aged.len() as u64) as usize)
    }

    /// Looks at an old order again, alternately reading its hold and
    /// retrying its reserve with the same key: both must name the hold
    /// that was granted.
    async fn recall(&mut self, i: usize) -> (Op, Class, String) {
        self.recalls += 1;
        let recall = &self.aged[i];
        let reply = if self.recalls.is_multiple_of(2) {
            self.conn.get(&format!("/api/reservations/{}", segment(&recall.reservation_id))).await
        } else {
            let plan = &self.config.plan;
            let sku_id = self.config.catalogue.sku_id(recall.sku);
            let body = reserve_body(&recall.order_id, &sku_id, plan.qty, plan.hold_ttl_secs, None);
            self.conn.request(Method::POST, "/api/inventory/reserve", Some(body.into_bytes())).await
        };
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Named {
            reservation_id: String,
        }
        let (class, code) = classify(&reply);
        let named = reply.as_ref().ok().and_then(|r| r.json::<Named>()).map(|n| n.reservation_id);
        match class {
            Class::Ok if named.as_deref() == Some(recall.reservation_id.as_str()) => (Op::Recall, class, code),
            Class::Error => (Op::Recall, class, code),
            // Another hold, or a refusal: the answer changed.
            Class::Ok | Class::Rejected => {
                self.ledger.contradictions += 1;
                (Op::Recall, Class::Error, format!("RECALL_CHANGED {code}"))
            }
        }
    }

    /// Reservoir sampling (algorithm R) of acknowledged holds.
    fn sample_hold(&mut self, record: HoldRecord) -> Option<usize> {
        self.ledger.holds_acked += 1;
        if self.ledger.holds.len() < self.holds_cap {
            self.ledger.holds.push(record);
            return Some(self.ledger.holds.len() - 1);
        }
        let j = self.rng.below(self.ledger.holds_acked) as usize;
        if j < self.holds_cap {
            self.ledger.holds[j] = record;
            Some(j)
        } else {
            None
        }
    }

    fn update_hold(&mut self, hold: &Pending, f: impl FnOnce(&mut HoldRecord)) {
        if let Some(record) =
            hold.slot.and_then(|i| self.ledger.holds.get_mut(i)).filter(|r| r.reservation_id == hold.reservation_id)
        {
            f(record);
        }
    }

    async fn settle(&mut self, op: Op, hold: Pending) -> (Op, Class, String) {
        let (path, body) = if op == Op::Confirm {
            (
                "/api/inventory/confirm",
                format!(
                    r#"{{"reservationId":"{}","paymentId":"pay-{}","idemKey":"t1:{}:confirm"}}"#,
                    hold.reservation_id, hold.order_id, hold.order_id
                ),
            )
        } else {
            (
                "/api/inventory/release",
                format!(
                    r#"{{"reservationId":"{}","reason":"CANCELLED","idemKey":"t1:{}:release"}}"#,
                    hold.reservation_id, hold.order_id
                ),
            )
        };
        let reply = self.conn.request(Method::POST, path, Some(body.into_bytes())).await;
        let (class, code) = classify(&reply);
        let ledger = self.ledger.skus.entry(hold.sku).or_default();
        match class {
            Class::Ok => {
                #[derive(Deserialize)]
                struct Settled {
                    status: String,
                }
                let status = reply.as_ref().ok().and_then(|r| r.json::<Settled>()).map(|s| s.status);
                let new = match (op, status.as_deref()) {
                    (Op::Confirm, Some("CONFIRMED")) => {
                        ledger.confirmed += hold.qty;
                        HoldStatus::Confirmed
                    }
                    (Op::Release, Some("RELEASED")) => {
                        ledger.released += hold.qty;
                        if let Some(buyer) = hold.buyer {
                            self.ledger.buyers.entry(buyer).or_default().released.push(hold.reservation_id.clone());
                        }
                        HoldStatus::Released
                    }
                    (Op::Release, Some("EXPIRED")) => HoldStatus::Expired,
                    _ => return (op, Class::Error, "BAD_RESPONSE".into()),
                };
                self.update_hold(&hold, |r| r.status = new);
                self.log_settle(op, &hold, status.as_deref().unwrap_or_default());
            }
            Class::Rejected => match code.as_str() {
                "RESERVATION_EXPIRED" => self.update_hold(&hold, |r| r.status = HoldStatus::Expired),
                _ => self.ledger.contradictions += 1,
            },
            Class::Error => {
                ledger.uncertain += hold.qty;
                self.update_hold(&hold, |r| r.uncertain = true);
                self.log_settle(op, &hold, acklog::UNANSWERED);
            }
        }
        (op, class, code)
    }

    fn log_settle(&self, op: Op, hold: &Pending, status: &str) {
        let (reservation_id, status) = (hold.reservation_id.clone(), status.to_string());
        self.log(|ack_ms| match op {
            Op::Confirm => Ack::Confirm { ack_ms, reservation_id, status },
            _ => Ack::Release { ack_ms, reservation_id, status },
        });
    }

    async fn query(&mut self, flash: bool) -> (Op, Class, String) {
        let catalogue = &self.config.catalogue;
        let sku = if flash { catalogue.flash() } else { catalogue.pick(&mut self.rng) };
        let path = format!("/api/inventory/{}", segment(&catalogue.sku_id(sku)));
        let reply = self.conn.get(&path).await;
        let (class, code) = classify(&reply);
        (Op::Query, class, code)
    }
}

struct WorkerDone {
    stats: RunStats,
    ledger: Ledger,
    unsent: u64,
}

/// The body of `POST /api/inventory/reserve` (with a `buyerId` for a
/// drop's buyers).
pub fn reserve_body(order_id: &str, sku_id: &str, qty: u64, ttl_seconds: u64, buyer_id: Option<&str>) -> String {
    let buyer = buyer_id.map(|b| format!(r#","buyerId":"{b}""#)).unwrap_or_default();
    format!(
        r#"{{"orderId":"{order_id}","skuId":"{sku_id}","qty":{qty},"idemKey":"t1:{order_id}:reserve","ttlSeconds":{ttl_seconds}{buyer}}}"#
    )
}

/// Sorts a reply into ok / rejected / error, with its code.
pub fn classify(reply: &Result<Reply, Failure>) -> (Class, String) {
    match reply {
        Ok(r) if r.ok() => (Class::Ok, "OK".into()),
        Ok(r) if r.status < 500 => (Class::Rejected, r.code()),
        Ok(r) => (Class::Error, r.code()),
        Err(f) => (Class::Error, f.code().into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_spreads_workers_over_the_interval() {
        let start = Instant::now();
        let end = start + Duration::from_secs(1);
        let s0 = Schedule::new(start, end, 1000.0, 10, 0);
        let s3 = Schedule::new(start, end, 1000.0, 10, 3);
        assert_eq!(s0.interval, Duration::from_millis(10));
        assert_eq!(s3.next - start, Duration::from_millis(3));
        assert_eq!(s0.remaining(), 100);
    }

    #[test]
    fn a_drop_buyer_is_named_in_the_reserve() {
        let body = reserve_body("o-1", "s-flash", 2, 920, Some("r-buyer-7"));
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"orderId": "o-1", "skuId": "s-flash", "qty": 2, "idemKey": "t1:o-1:reserve",
                "ttlSeconds": 920, "buyerId": "r-buyer-7"})
        );
        let v: serde_json::Value = serde_json::from_str(&reserve_body("o-2", "s-1", 1, 30, None)).unwrap();
        assert!(v.get("buyerId").is_none(), "{v}");
    }

    #[test]
    fn an_order_body_lists_its_lines() {
        let body = order_body("o-9", [("s-1", 1), ("s-7", 2), ("s-3", 1)], 30);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "lines": [{"skuId": "s-1", "qty": 1}, {"skuId": "s-7", "qty": 2}, {"skuId": "s-3", "qty": 1}],
                "idemKey": "t1:o-9:reserve",
                "ttlSeconds": 30,
            })
        );
    }

    fn asked() -> Vec<(u64, String)> {
        vec![(1, "s-1".to_string()), (7, "s-7".to_string()), (3, "s-3".to_string())]
    }

    #[test]
    fn a_granted_order_is_read_line_by_line() {
        // Lines may come back in another order, with warehouses filled in.
        let body = br#"{"orderId":"o-9","status":"RESERVED","expireAt":"2026-11-24T19:30:04.064Z","lines":[
            {"skuId":"s-7","warehouseId":"default","qty":1,"reservationId":"rsv-1-2"},
            {"skuId":"s-1","warehouseId":"default","qty":1,"reservationId":"rsv-0-5"},
            {"skuId":"s-3","warehouseId":"east","qty":1,"reservationId":"rsv-1-3"}]}"#;
        let lines = granted_lines("o-9", &asked(), 1, body).unwrap();
        let line = |sku, id: &str| OrderLine { sku, qty: 1, reservation_id: id.into() };
        assert_eq!(lines, vec![line(1, "rsv-0-5"), line(7, "rsv-1-2"), line(3, "rsv-1-3")]);
        let granted: OrderGranted = serde_json::from_slice(body).unwrap();
        assert_eq!(granted.expire_at.as_deref().and_then(acklog::parse_rfc3339_ms), Some(1_795_548_604_064));
        assert_eq!(granted.lines[2].warehouse_id.as_deref(), Some("east"));
    }

    #[test]
    fn a_granted_order_unlike_the_one_asked_is_not_taken() {
        let line = |sku: &str, qty: u64, id: &str| format!(r#"{{"skuId":"{sku}","qty":{qty},"reservationId":"{id}"}}"#);
        let order = |order_id: &str, status: &str, lines: &[String]| {
            format!(r#"{{"orderId":"{order_id}","status":"{status}","lines":[{}]}}"#, lines.join(","))
        };
        let good = [line("s-1", 1, "r1"), line("s-7", 1, "r2"), line("s-3", 1, "r3")];
        assert!(granted_lines("o-9", &asked(), 1, order("o-9", "RESERVED", &good).as_bytes()).is_ok());
        let cases = [
            (order("o-8", "RESERVED", &good), "order"),
            (order("o-9", "PENDING", &good), "RESERVED"),
            (order("o-9", "RESERVED", &good[..2]), "2 lines"),
            (order("o-9", "RESERVED", &[good[0].clone(), good[1].clone(), line("s-4", 1, "r3")]), "s-3"),
            (order("o-9", "RESERVED", &[good[0].clone(), good[1].clone(), line("s-3", 2, "r3")]), "2 units"),
            (order("o-9", "RESERVED", &[good[0].clone(), good[1].clone(), line("s-3", 1, "r2")]), "its own"),
            (r#"{"code":"ORDER_NOT_RESERVABLE"}"#.to_string(), "not a granted order"),
        ];
        for (body, why) in cases {
            let e = granted_lines("o-9", &asked(), 1, body.as_bytes()).unwrap_err();
            assert!(e.contains(why), "{body}: {e}");
        }
    }

    #[test]
    fn a_refused_order_gives_each_line_its_code() {
        let body = br#"{"code":"ORDER_NOT_RESERVABLE","message":"1 of 3 lines cannot be reserved","lines":[
            {"skuId":"s-7","warehouseId":"default","code":"INSUFFICIENT_STOCK","available":0},
            {"skuId":"s-1","warehouseId":"default","code":"OK"},
            {"skuId":"s-3","warehouseId":"default","code":"SKU_FROZEN"}]}"#;
        let reply = Reply { status: 409, body: bytes::Bytes::from_static(body) };
        let refused: OrderRefused = reply.json().unwrap();
        assert_eq!(classify(&Ok(reply)), (Class::Rejected, ORDER_NOT_RESERVABLE.to_string()));
        assert_eq!(refused.code, ORDER_NOT_RESERVABLE);
        let codes: Vec<(&str, &str, Option<i64>)> =
            refused.lines.iter().map(|l| (l.sku_id.as_str(), l.code.as_str(), l.available)).collect();
        assert_eq!(codes, [("s-7", "INSUFFICIENT_STOCK", Some(0)), ("s-1", "OK", None), ("s-3", "SKU_FROZEN", None)]);
    }

    #[test]
    fn ledgers_merge_buyers_orders_and_the_sell_out() {
        let mut a = Ledger { sold_out_after: Some(Duration::from_millis(900)), buyers_served: 2, ..Ledger::default() };
        a.buyers.entry(1).or_default().grants.push(("r1".into(), 1));
        a.refused_lines.insert("INSUFFICIENT_STOCK".into(), 2);
        let mut b = Ledger { sold_out_after: Some(Duration::from_millis(700)), buyers_served: 3, ..Ledger::default() };
        b.buyers.entry(1).or_default().grants.push(("r2".into(), 1));
        b.buyers.entry(1).or_default().released.push("r1".into());
        b.refused_lines.insert("INSUFFICIENT_STOCK".into(), 1);
        b.orders_acked = 4;
        a.merge(b);
        assert_eq!(a.sold_out_after, Some(Duration::from_millis(700)));
        assert_eq!(a.buyers_served, 5);
        assert_eq!(a.buyers[&1].grants.len(), 2);
        assert_eq!(a.buyers[&1].released, vec!["r1".to_string()]);
        assert_eq!(a.refused_lines["INSUFFICIENT_STOCK"], 3);
        assert_eq!(a.orders_acked, 4);
    }

    #[test]
    fn classify_splits_rejections_from_errors() {
        let reply = |status, body: &'static str| Ok(Reply { status, body: bytes::Bytes::from_static(body.as_bytes()) });
        assert_eq!(classify(&reply(200, "{}")).0, Class::Ok);
        assert_eq!(
            classify(&reply(409, r#"{"code":"INSUFFICIENT_STOCK","message":"x"}"#)),
            (Class::Rejected, "INSUFFICIENT_STOCK".to_string())
        );
        assert_eq!(classify(&reply(503, r#"{"code":"OVERLOADED"}"#)), (Class::Error, "OVERLOADED".to_string()));
        assert_eq!(classify(&reply(502, "")), (Class::Error, "HTTP_502".to_string()));
        assert_eq!(classify(&Err(Failure::Timeout)), (Class::Error, "TIMEOUT".to_string()));
    }
}
