//! Fault drills, each losing nothing it acknowledged: the journal's file
//! system filling up under load (a real one: a small tmpfs), the wall clock
//! stepping back an hour, and PostgreSQL stopped for a minute under load and
//! started again (a cluster of the test's own).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

use inventory_gateway::{Clock, SteadyClock, SystemClock};
use inventory_journal::{Backend, Store};
use reqwest::StatusCode;
use serde_json::json;
use tokio_postgres::NoTls;

use crate::pg::{wait_caught_up, PrivatePg};
use crate::support::{skus_on_different_shards, Client, Daemon, Options, TestServer};

/// Says why a drill cannot run here (it needs root, or PostgreSQL's
/// binaries); in CI that fails it instead.
fn skip(test: &str, why: &str) {
    assert!(std::env::var_os("CI").is_none(), "{test} cannot run in CI: {why}");
    eprintln!("skipping {test}: {why}");
}

fn median(values: &mut [Duration]) -> Duration {
    assert!(!values.is_empty());
    values.sort_unstable();
    values[values.len() / 2]
}

// ----- the journal's file system fills up ------------------------------------

/// A tmpfs mounted for one test, unmounted when dropped, also when the test
/// fails (lazily if something still has a file open on it).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = Process::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!("mount -t tmpfs failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Process::new("umount").arg(self.path()).status().is_ok_and(|s| s.success());
        if !unmounted {
            let _ = Process::new("umount").arg("--lazy").arg(self.path()).status();
        }
    }
}

/// A file that fills its file system, and keeps it full (space others free
/// is taken again) until it is removed.
struct Filler {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    /// Set once a write found the file system full.
    full: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Filler {
    fn start(path: PathBuf) -> Filler {
        let (stop, full) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let mut file = std::fs::File::create(&path).unwrap();
        let thread = {
            let (stop, full) = (stop.clone(), full.clone());
            std::thread::spawn(move || {
                let page = [0xA5u8; 4_096];
                while !stop.load(Ordering::Relaxed) {
                    match file.write(&page) {
                        Ok(_) => {}
                        Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                            full.store(true, Ordering::Release);
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        Err(e) => panic!("filler: {e}"),
                    }
                }
            })
        };
        Filler { path, stop, full, thread: Some(thread) }
    }

    fn is_full(&self) -> bool {
        self.full.load(Ordering::Acquire)
    }

    /// Stops filling and deletes the file.
    fn remove(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        std::fs::remove_file(&self.path).unwrap();
    }
}

impl Drop for Filler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// What the load saw.
#[derive(Default)]
struct DiskLedger {
    /// Acknowledged holds: id -> (sku, qty, when acknowledged).
    held: BTreeMap<String, (String, u64, Instant)>,
    /// Refused writes: (shard, how long the refusal took, when).
    refused: Vec<(u16, Duration, Instant)>,
}

const DISK_SHARDS: u16 = 2;
const DISK_STOCK: u64 = 1_000_000;

/// Reserves in a loop until `stop`, noting every answer; any answer but
/// 200 or 503 `JOURNAL_UNAVAILABLE` fails the test.
async fn reserve_until(
    c: Client,
    skus: Vec<String>,
    client: usize,
    ledger: Arc<Mutex<DiskLedger>>,
    stop: Arc<AtomicBool>,
) {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let sku = &skus[(n as usize + client) % skus.len()];
        let qty = 1 + n % 3;
        let order = format!("disk-{client}-{n}");
        let started = Instant::now();
        let r = c.reserve(&order, sku, qty, &format!("{order}:r")).await;
        let took = started.elapsed();
        match (r.status, r.code()) {
            (StatusCode::OK, _) => {
                let id = r.body["reservationId"].as_str().unwrap().to_string();
                ledger.lock().unwrap().held.insert(id, (sku.clone(), qty, Instant::now()));
            }
            (StatusCode::SERVICE_UNAVAILABLE, "JOURNAL_UNAVAILABLE") => {
                assert!(r.headers.contains_key("retry-after"), "a refusal without Retry-After");
                let shard = inventory_core::shard_for_sku(sku, DISK_SHARDS);
                ledger.lock().unwrap().refused.push((shard, took, Instant::now()));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            _ => panic!("reserve of {sku} answered {}: {}", r.status, r.text),
        }
    }
}

/// Waits until `done` holds of the ledger, or fails saying `what`.
async fn wait_for(ledger: &Mutex<DiskLedger>, within: Duration, what: &str, done: impl Fn(&DiskLedger) -> bool) {
    let deadline = Instant::now() + within;
    while !done(&ledger.lock().unwrap()) {
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every acknowledged hold is there as it was acknowledged, and the levels
/// are exactly the stock less what was acknowledged.
async fn assert_holds_exactly(c: &Client, skus: &[String], held: &BTreeMap<String, (String, u64, Instant)>) {
    let mut per_sku: BTreeMap<&str, u64> = BTreeMap::new();
    for (id, (sku, qty, _)) in held {
        let r = c.get(&format!("/api/reservations/{id}")).await;
        assert_eq!(r.status, StatusCode::OK, "acknowledged hold {id} lost: {}", r.text);
        assert_eq!(
            (r.body["skuId"].as_str(), r.body["qty"].as_u64(), r.body["status"].as_str()),
            (Some(sku.as_str()), Some(*qty), Some("RESERVED")),
            "{id}"
        );
        *per_sku.entry(sku).or_default() += qty;
    }
    for sku in skus {
        let acked = per_sku.get(sku.as_str()).copied().unwrap_or(0);
        assert_eq!(
            c.levels(sku).await,
            (DISK_STOCK - acked, acked, 0),
            "{sku}: levels differ from what was acknowledged"
        );
    }
}

/// Every shard's cold follower lag, from /metrics.
async fn cold_lags(c: &Client) -> Vec<u64> {
    const SERIES: &str = r#"inventory_follower_lag_entries{follower="cold""#;
    let text = c.get("/metrics").await.text;
    text.lines().filter(|l| l.starts_with(SERIES)).map(|l| l.rsplit(' ').next().unwrap().parse().unwrap()).collect()
}

async fn journal_file_system_fills_up(backend: Backend) {
    let test = format!("journal_file_system_fills_up ({backend})");
    let tmpfs = match Tmpfs::mount("16m") {
        Ok(tmpfs) => tmpfs,
        Err(e) => return skip(&test, &e),
    };
    let data = tmpfs.path().join("data");
    let args =
        ["--shards", "2", "--journal", backend.name(), "--pin-threads", "false", "--snapshot-every-entries", "500"];
    let daemon = Daemon::spawn(&data, &args);
    let c = Client::new(&daemon.url);
    c.wait_ready().await;
    let (a, b) = skus_on_different_shards("disk-a", DISK_SHARDS);
    let (x, y) = skus_on_different_shards("disk-b", DISK_SHARDS);
    let skus = vec![a, b, x, y];
    for sku in &skus {
        c.receive(sku, DISK_STOCK).await;
    }

    let ledger = Arc::new(Mutex::new(DiskLedger::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|client| {
            let c = Client::new(&daemon.url);
            tokio::spawn(reserve_until(c, skus.clone(), client, ledger.clone(), stop.clone()))
        })
        .collect();
    wait_for(&ledger, Duration::from_secs(10), "no reserve acknowledged", |l| l.held.len() >= 100).await;

    // The file system fills up under the load: every shard refuses writes.
    let filler = Filler::start(tmpfs.path().join("filler"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !filler.is_full() {
        assert!(Instant::now() < deadline, "the filler never filled the file system");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let filled = Instant::now();
    wait_for(&ledger, Duration::from_secs(30), "not every shard refused writes", |l| {
        (0..DISK_SHARDS).all(|shard| l.refused.iter().any(|(s, _, at)| *s == shard && *at > filled))
    })
    .await;
    // While full: reads answer, a snapshot fails without harm, and writes
    // go on being refused fast.
    let full_until = Instant::now() + Duration::from_secs(2);
    let some_hold = ledger.lock().unwrap().held.keys().next().unwrap().clone();
    let mut reads = 0;
    let started = Instant::now();
    let snapshot = c.post("/api/admin/snapshot", json!({})).await;
    eprintln!("{test}: a snapshot while full answered {} in {:?}", snapshot.status, started.elapsed());
    while Instant::now() < full_until {
        for sku in &skus {
            assert_eq!(
                c.get(&format!("/api/inventory/{sku}")).await.status,
                StatusCode::OK,
                "read of {sku} while full"
            );
        }
        let r = c.get(&format!("/api/reservations/{some_hold}")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        reads += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reads > 0);
    eprintln!("{test}: cold follower lag while full: {:?}", cold_lags(&c).await);

    // Space again: writes resume by themselves, on every shard.
    filler.remove();
    let freed = Instant::now();
    wait_for(&ledger, Duration::from_secs(10), "writes did not resume on every shard", |l| {
        (0..DISK_SHARDS).all(|shard| {
            l.held.values().any(|(sku, _, at)| *at > freed && inventory_core::shard_for_sku(sku, DISK_SHARDS) == shard)
        })
    })
    .await;
    let resumed_in = freed.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    // The cold tier's followers, whose store a failed write stopped, open
    // it again by themselves and take everything acknowledged.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let lags = cold_lags(&c).await;
        assert_eq!(lags.len(), DISK_SHARDS as usize, "a cold follower per shard");
        if lags.iter().all(|&lag| lag == 0) {
            break;
        }
        assert!(Instant::now() < deadline, "the cold followers did not catch up after the filler went: {lags:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let caught_up_in = freed.elapsed();
    let ledger = std::mem::take(&mut *ledger.lock().unwrap());
    let slowest = ledger.refused.iter().map(|(_, took, _)| *took).max().unwrap();
    eprintln!(
        "{test}: {} holds acknowledged, {} refused (slowest refusal {slowest:?}), writes resumed {resumed_in:?} after the filler went, the cold tier caught up in {caught_up_in:?}",
        ledger.held.len(),
        ledger.refused.len(),
    );
    for (shard, took, _) in &ledger.refused {
        assert!(*took < Duration::from_millis(500), "a refusal by shard {shard} took {took:?}");
    }
    // Nothing refused was applied, nothing acknowledged is missing.
    assert_holds_exactly(&c, &skus, &ledger.held).await;
    // A snapshot now succeeds: the failed ones left nothing in the way.
    let snapshot = c.post("/api/admin/snapshot", json!({})).await;
    assert_eq!(snapshot.status, StatusCode::OK, "{}", snapshot.text);

    // Every acknowledged change survives kill -9 and a restart.
    daemon.signal(libc::SIGKILL);
    assert!(!daemon.wait().success());
    let daemon = Daemon::spawn(&data, &["--pin-threads", "false"]);
    let c = Client::new(&daemon.url);
    c.wait_ready().await;
    assert_holds_exactly(&c, &skus, &ledger.held).await;
    let r = c.reserve("disk-after", &skus[0], 1, "disk-after:r").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait().success(), "SIGTERM should exit 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_journal_file_system_refuses_writes_fast_and_they_resume_once_there_is_space() {
    journal_file_system_fills_up(Backend::Sled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_journal_file_system_refuses_writes_fast_and_they_resume_once_there_is_space_with_the_file_journal() {
    journal_file_system_fills_up(Backend::File).await;
}

// ----- the wall clock steps back ---------------------------------------------

const HOUR_MS: u64 = 3_600_000;

/// The system's wall clock, which a test can set back.
#[derive(Clone, Default)]
struct SettableWall {
    back_ms: Arc<AtomicU64>,
}

impl SettableWall {
    fn step_back(&self, ms: u64) {
        self.back_ms.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for SettableWall {
    fn now_ms(&self) -> u64 {
        SystemClock.now_ms() - self.back_ms.load(Ordering::SeqCst)
    }
}

/// A hold's `(status, createdAt, updatedAt, expireAt)`, times in ms.
async fn hold_times(c: &Client, id: &str) -> (String, u64, u64, u64) {
    let r = c.get(&format!("/api/reservations/{id}")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let ms = |field: &str| {
        let at = humantime::parse_rfc3339(r.body[field].as_str().unwrap()).unwrap();
        at.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
    };
    (r.body["status"].as_str().unwrap().to_string(), ms("createdAt"), ms("updatedAt"), ms("expireAt"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_wall_clock_steps_back_an_hour_times_keep_their_order_and_holds_still_expire() {
    let wall = SettableWall::default();
    let clock = Arc::new(SteadyClock::new(wall.clone()));
    let server = TestServer::start_with(Options { shards: 1, clock: Some(clock.clone()), ..Default::default() }).await;
    let c = &server.client;
    c.receive("tick", 10).await;
    let r = c
        .post(
            "/api/inventory/reserve",
            json!({"orderId": "clock-1", "skuId": "tick", "qty": 1, "idemKey": "clock-1", "ttlSeconds": 2}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let reserved = Instant::now();
    let short = r.body["reservationId"].as_str().unwrap().to_string();
    let (_, created, _, expire_at) = hold_times(c, &short).await;
    assert_eq!(expire_at - created, 2_000);

    // The wall clock is set back an hour; time goes on from where it was.
    wall.step_back(HOUR_MS);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = c.reserve("clock-2", "tick", 1, "clock-2").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let long = r.body["reservationId"].as_str().unwrap().to_string();
    let (_, created_after, _, _) = hold_times(c, &long).await;
    assert!(clock.wall_behind(), "the wall clock is still an hour behind");
    // Made over 300 ms later (milliseconds rounded down on both sides).
    assert!(
        created_after >= created + 298 && created_after < created + 10_000,
        "a hold made 300 ms later was created {} ms after the first",
        created_after as i64 - created as i64
    );
    let r = c.confirm(&long, "pay-clock-2", "clock-2:c").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let (status, _, confirmed_at, _) = hold_times(c, &long).await;
    assert_eq!(status, "CONFIRMED");
    assert!(confirmed_at >= created_after, "confirmed {} ms before it was made", created_after - confirmed_at);

    // The short hold expires about when it was due, by the loop's timer.
    let deadline = reserved + Duration::from_secs(2 + 4);
    let expired_in = loop {
        let (status, ..) = hold_times(c, &short).await;
        if status == "EXPIRED" {
            break reserved.elapsed();
        }
        assert_eq!(status, "RESERVED");
        assert!(Instant::now() < deadline, "a 2 s hold still not expired after {:?}", reserved.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (_, _, expired_at, _) = hold_times(c, &short).await;
    assert!(
        expired_at >= expire_at && expired_at < expire_at + 2_000,
        "expired {} ms after it was due",
        expired_at as i64 - expire_at as i64
    );
    assert!(expired_at >= confirmed_at);
    assert_eq!(c.levels("tick").await, (9, 0, 1));
    eprintln!("a 2 s hold expired {expired_in:?} after it was acknowledged, the wall clock an hour behind");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_the_wall_clock_an_hour_behind_the_journal_goes_on_from_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let options = |clock: Arc<dyn Clock>| Options {
        shards: 1,
        data_dir: Some(dir.path().to_path_buf()),
        clock: Some(clock),
        ..Default::default()
    };
    let server = TestServer::start_with(options(Arc::new(SteadyClock::default()))).await;
    let c = &server.client;
    c.receive("tock", 10).await;
    let r = c
        .post(
            "/api/inventory/reserve",
            json!({"orderId": "tock-1", "skuId": "tock", "qty": 1, "idemKey": "tock-1", "ttlSeconds": 3}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let reserved = Instant::now();
    let short = r.body["reservationId"].as_str().unwrap().to_string();
    let (_, created, _, expire_at) = hold_times(c, &short).await;
    server.stop().await;

    // The journal's last time is an hour ahead of the wall clock now.
    let wall = SettableWall::default();
    wall.step_back(HOUR_MS);
    let server = TestServer::start_with(options(Arc::new(SteadyClock::new(wall)))).await;
    let c = &server.client;
    let r = c.reserve("tock-2", "tock", 1, "tock-2").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let (_, created_after, _, _) = hold_times(c, r.body["reservationId"].as_str().unwrap()).await;
    assert!(
        created_after >= created && created_after < created + 10_000,
        "a hold made after the restart was created {} ms after the one before it",
        created_after as i64 - created as i64
    );
    let deadline = reserved + Duration::from_secs(3 + 4);
    loop {
        let (status, _, expired_at, _) = hold_times(c, &short).await;
        if status == "EXPIRED" {
            assert!(expired_at >= expire_at && expired_at < expire_at + 2_000, "{expired_at} against {expire_at}");
            break;
        }
        assert!(Instant::now() < deadline, "a 3 s hold still not expired after {:?}", reserved.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(c.levels("tock").await, (9, 1, 0));
    server.stop().await;
}

// ----- PostgreSQL stopped for a minute ---------------------------------------

const DRILL_SKUS: usize = 6;
const DRILL_STOCK: u64 = 1_000_000;

/// What the drill's load saw.
#[derive(Default)]
struct DrillLedger {
    /// Acknowledged holds: id -> the status the last acknowledged change gave it.
    holds: BTreeMap<String, &'static str>,
    /// Every reserve: when it was sent and how long it took.
    reserves: Vec<(Instant, Duration)>,
    /// Every write that was not acknowledged.
    failures: Vec<String>,
}

/// Reserve, then confirm, release or keep, in a loop until `stop`.
async fn drill_load(c: Client, client: usize, stop: Arc<AtomicBool>) -> DrillLedger {
    let mut ledger = DrillLedger::default();
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let sku = format!("drill-{}", (n + client) % DRILL_SKUS);
        let order = format!("drill-{client}-{n}");
        let sent = Instant::now();
        let r = c.reserve(&order, &sku, 1 + n as u64 % 2, &format!("{order}:r")).await;
        ledger.reserves.push((sent, sent.elapsed()));
        if r.status != StatusCode::OK {
            ledger.failures.push(format!("reserve {order}: {} {}", r.status, r.text));
            continue;
        }
        let id = r.body["reservationId"].as_str().unwrap().to_string();
        ledger.holds.insert(id.clone(), "RESERVED");
        let (r, status) = match n % 3 {
            0 => (c.confirm(&id, &format!("pay-{order}"), &format!("{order}:c")).await, "CONFIRMED"),
            1 => (c.release(&id, &format!("{order}:x")).await, "RELEASED"),
            _ => {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
        };
        if r.status == StatusCode::OK {
            ledger.holds.insert(id, status);
        } else {
            ledger.failures.push(format!("{status} {id}: {} {}", r.status, r.text));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    ledger
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_for_a_minute_under_load_slows_nothing_and_is_caught_up_exactly_once() {
    const TEST: &str = "postgres_stopped_for_a_minute_under_load";
    const OUTAGE: Duration = Duration::from_secs(60);
    let pg = match PrivatePg::start() {
        Ok(pg) => pg,
        Err(e) => return skip(TEST, &e),
    };
    let dir = tempfile::tempdir().unwrap();
    let url = pg.url();
    let args = ["--shards", "2", "--pin-threads", "false", "--postgres-url", &url, "--postgres-schema", "drill"];
    let daemon = Daemon::spawn(dir.path(), &args);
    let c = Client::new(&daemon.url);
    c.wait_ready().await;
    let skus: Vec<String> = (0..DRILL_SKUS).map(|i| format!("drill-{i}")).collect();
    for sku in &skus {
        c.receive(sku, DRILL_STOCK).await;
    }
    wait_caught_up(&c, Duration::from_secs(20)).await;

    let stop = Arc::new(AtomicBool::new(false));
    let loaded = Instant::now();
    let clients: Vec<_> =
        (0..4).map(|client| tokio::spawn(drill_load(Client::new(&daemon.url), client, stop.clone()))).collect();
    tokio::time::sleep(Duration::from_secs(10)).await;

    // PostgreSQL goes down for a minute under the load.
    let stopped = Instant::now();
    pg.stop_immediately().unwrap();
    let mut lag_seen = 0;
    while stopped.elapsed() < OUTAGE {
        tokio::time::sleep(Duration::from_secs(5).min(OUTAGE.saturating_sub(stopped.elapsed()))).await;
        let status = c.get("/api/admin/persistence").await.body;
        let shards = status["shards"].as_array().unwrap();
        if shards.iter().any(|s| s["connected"] == false && s["lagRecords"].as_u64().unwrap() > 0) {
            lag_seen += 1;
        }
    }
    let restarted = Instant::now();
    pg.start_again().unwrap();
    // The writer reconnects and catches up by itself, under the load.
    let deadline = restarted + Duration::from_secs(30);
    let caught_up_in = loop {
        let status = c.get("/api/admin/persistence").await.body;
        let shards = status["shards"].as_array().unwrap();
        if shards.iter().all(|s| s["connected"] == true && s["lagRecords"].as_u64().unwrap() < 100) {
            break restarted.elapsed();
        }
        assert!(Instant::now() < deadline, "the writer did not catch up after PostgreSQL came back: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let mut ledger = DrillLedger::default();
    for client in clients {
        let part = client.await.unwrap();
        ledger.holds.extend(part.holds);
        ledger.reserves.extend(part.reserves);
        ledger.failures.extend(part.failures);
    }
    wait_caught_up(&c, Duration::from_secs(30)).await;

    // No write failed, and reserves were as fast while PostgreSQL was down.
    assert!(
        ledger.failures.is_empty(),
        "{} writes failed: {:?}",
        ledger.failures.len(),
        &ledger.failures[..5.min(ledger.failures.len())]
    );
    assert!(lag_seen > 0, "the service never reported the writer disconnected and lagging");
    let window = |from: Instant, to: Instant| -> Vec<Duration> {
        ledger.reserves.iter().filter(|(sent, _)| *sent >= from && *sent < to).map(|(_, took)| *took).collect()
    };
    let mut before = window(loaded + Duration::from_secs(2), stopped);
    let mut during = window(stopped, restarted);
    assert!(during.len() > 1_000, "too little load while PostgreSQL was down: {}", during.len());
    let (before_median, during_median) = (median(&mut before), median(&mut during));
    let during_p99 = during[during.len() * 99 / 100];
    eprintln!(
        "{TEST}: {} reserves; median {before_median:?} before ({} reserves), {during_median:?} while PostgreSQL was down ({}; p99 {during_p99:?}, slowest {:?}); caught up {caught_up_in:?} after it came back",
        ledger.reserves.len(),
        before.len(),
        during.len(),
        during.last().unwrap(),
    );
    // The bounds leave room for a busy machine: the medians here are
    // about 2 ms.
    assert!(
        during_median < 3 * before_median.max(Duration::from_millis(1)) && during_median < Duration::from_millis(20),
        "reserves slowed while PostgreSQL was down: median {during_median:?} against {before_median:?} before"
    );
    assert!(during_p99 < Duration::from_millis(250), "reserves slowed while PostgreSQL was down: p99 {during_p99:?}");

    // Exactly once: PostgreSQL holds what the service acknowledged.
    let (pg_client, connection) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    tokio::spawn(connection);
    pg_client.batch_execute("SET search_path TO drill").await.unwrap();
    let rows = pg_client.query("SELECT reservation_id, status FROM reservation", &[]).await.unwrap();
    let pg_holds: BTreeMap<String, String> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(rows.len(), pg_holds.len(), "a reservation row twice");
    let acked: BTreeMap<String, String> = ledger.holds.iter().map(|(id, s)| (id.clone(), s.to_string())).collect();
    if pg_holds != acked {
        let missing: Vec<_> = acked.keys().filter(|id| !pg_holds.contains_key(*id)).take(5).collect();
        let extra: Vec<_> = pg_holds.keys().filter(|id| !acked.contains_key(*id)).take(5).collect();
        let differ: Vec<_> =
            acked.iter().filter(|(id, s)| pg_holds.get(*id).is_some_and(|p| p != *s)).take(5).collect();
        panic!("reservation rows differ from the acknowledged holds: missing {missing:?}, extra {extra:?}, other status {differ:?}");
    }
    let rows = pg_client
        .query("SELECT sku_id, sum(available)::bigint, sum(reserved)::bigint, sum(sold)::bigint FROM inventory GROUP BY sku_id", &[])
        .await
        .unwrap();
    let pg_levels: BTreeMap<String, (i64, i64, i64)> =
        rows.iter().map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3)))).collect();
    assert_eq!(pg_levels.len(), skus.len());
    for sku in &skus {
        let (available, reserved, sold) = c.levels(sku).await;
        assert_eq!(pg_levels[sku], (available as i64, reserved as i64, sold as i64), "{sku}");
    }
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait().success(), "SIGTERM should exit 0");

    // ...and exactly the journal's changes, each once. (Entries keep coming
    // without load: records older than the hot windows move to the cold
    // tier, each move an entry without changes.)
    let store = Store::open(&dir.path().join("journal"), None, None, 1).unwrap();
    let checkpoints: BTreeMap<i16, i64> = pg_client
        .query("SELECT shard, seq FROM writer_checkpoint", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(checkpoints.len(), usize::from(store.shards()));
    let mut journal_txns = BTreeSet::new();
    for shard in 0..store.shards() {
        let checkpoint = checkpoints[&(shard as i16)] as u64;
        let mut last = 0;
        for entry in store.journal(shard).unwrap().read_from(1).unwrap() {
            let entry = entry.unwrap();
            assert!(
                entry.seq <= checkpoint || entry.txns.is_empty(),
                "shard {shard}: entry {} with changes past the writer's checkpoint {checkpoint}",
                entry.seq
            );
            last = entry.seq;
            for txn in entry.txns {
                assert!(journal_txns.insert(txn.txn_id as i64), "txn {} twice in the journal", txn.txn_id);
            }
        }
        assert!(checkpoint <= last, "shard {shard}: the checkpoint {checkpoint} is past the journal's end {last}");
    }
    let pg_txns: Vec<i64> =
        pg_client.query("SELECT txn_id FROM inventory_txn", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    let pg_txn_set: BTreeSet<i64> = pg_txns.iter().copied().collect();
    assert_eq!(pg_txns.len(), pg_txn_set.len(), "a change landed in PostgreSQL twice");
    assert_eq!(
        pg_txns.len(),
        journal_txns.len(),
        "PostgreSQL holds {} changes, the journal {}",
        pg_txns.len(),
        journal_txns.len()
    );
    assert!(pg_txn_set == journal_txns, "the changes in PostgreSQL are not the journal's");
    drop(pg);
}
