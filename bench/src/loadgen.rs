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

use std::collections::VecDeque;
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
use crate::workload::{Catalogue, Mode, Op, Plan, Rng};

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
    }
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
    let mut tasks = Vec::with_capacity(config.connections);
    for id in 0..config.connections {
        let worker = Worker::new(id, config.clone(), timeline.clone(), progress.clone(), start, lost.clone());
        tasks.push(tokio::spawn(worker.run()));
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

    /// Sends one operation (a settle with nothing to settle becomes a
    /// reserve) and records it.
    async fn step(&mut self, op: Op, flash: bool, intended: Instant) {
        let (op, class, code) = match op {
            Op::Reserve => self.reserve(flash).await,
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
                if op == Op::Reserve {
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
        let catalogue = self.config.catalogue.clone();
        let sku = if flash { catalogue.flash() } else { catalogue.pick(&mut self.rng) };
        let sku_id = catalogue.sku_id(sku);
        self.orders += 1;
        let order_id = format!("{}-{}-{}", self.config.run_tag, self.id, self.orders);
        let qty = self.config.plan.qty;
        let body = self.reserve_body(&order_id, &sku_id);
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
                self.pending.push_back(Pending { reservation_id, order_id, sku, qty, granted, slot });
            }
            (_, Class::Error) => self.ledger.skus.entry(sku).or_default().uncertain += qty,
            _ => {}
        }
        (Op::Reserve, class, code)
    }

    fn reserve_body(&self, order_id: &str, sku_id: &str) -> String {
        format!(
            r#"{{"orderId":"{order_id}","skuId":"{sku_id}","qty":{},"idemKey":"t1:{order_id}:reserve","ttlSeconds":{}}}"#,
            self.config.plan.qty, self.config.plan.hold_ttl_secs
        )
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
            let body = self.reserve_body(&recall.order_id, &self.config.catalogue.sku_id(recall.sku));
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
