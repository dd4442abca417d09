//! The systems under test: starting them as child processes (the service,
//! or this binary's `adapter` subcommand for a baseline), waiting until they
//! are ready, seeding the catalogue, and stopping them.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::client::Conn;
use crate::workload::{receive_chunks, Catalogue};
use crate::{BenchError, Result};

/// How long a target may take to print its address and become ready.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a target may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// SKUs per bulk-seed request to an adapter.
const BULK_SEED_CHUNK: u64 = 100_000;

/// The systems the harness can measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum TargetKind {
    /// `inventoryd`: sharded in-memory core, sled journal flushed per batch.
    Service,
    /// `inventoryd --journal file`: the same, with the segment-file journal
    /// (one `fdatasync` per batch on the shard's thread).
    ServiceFile,
    /// PostgreSQL: one transaction per command, conditional `UPDATE`.
    Postgres,
    /// Redis Lua script with `appendfsync always` (durability of the service).
    RedisAlways,
    /// Redis Lua script with `appendfsync everysec` (common deployments).
    RedisEverysec,
    /// The same API over maps in the adapter's memory, nothing on disk: the
    /// HTTP floor of this machine and client, not a durable alternative.
    Memory,
}

impl TargetKind {
    pub fn name(self) -> &'static str {
        match self {
            TargetKind::Service => "service",
            TargetKind::ServiceFile => "service-file",
            TargetKind::Postgres => "postgres",
            TargetKind::RedisAlways => "redis-always",
            TargetKind::RedisEverysec => "redis-everysec",
            TargetKind::Memory => "memory",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            TargetKind::Service => "inventoryd (sled journal, flushed before each reply)",
            TargetKind::ServiceFile => "inventoryd --journal file (segment files, fdatasync before each reply)",
            TargetKind::Postgres => "PostgreSQL, conditional UPDATE per transaction, synchronous_commit=on",
            TargetKind::RedisAlways => "Redis Lua script, AOF appendfsync always",
            TargetKind::RedisEverysec => "Redis Lua script, AOF appendfsync everysec (up to 1 s of acks can be lost)",
            TargetKind::Memory => "in-memory maps in the adapter, nothing on disk (the HTTP floor, not durable)",
        }
    }

    /// Whether the target is one of this binary's HTTP adapters, which also
    /// offer a bulk seeding endpoint.
    pub fn is_adapter(self) -> bool {
        !matches!(self, TargetKind::Service | TargetKind::ServiceFile)
    }

    /// Whether the target is something a user would build instead of the
    /// service (PostgreSQL, Redis). The service is said to lose only to
    /// these: another configuration of the service, or the in-memory
    /// reference that keeps nothing, is a measure, not a rival.
    pub fn is_baseline(self) -> bool {
        matches!(self, TargetKind::Postgres | TargetKind::RedisAlways | TargetKind::RedisEverysec)
    }
}

/// Where to find and how to start the targets.
#[derive(Clone, Debug)]
pub struct StartOptions {
    pub inventoryd: Option<PathBuf>,
    pub service_args: Vec<String>,
    pub pg_url: String,
    pub redis_url: String,
    pub adapter_pool: usize,
    pub log_dir: PathBuf,
}

/// A started (or, with `--target-url`, an external) target.
pub struct Running {
    pub kind: TargetKind,
    pub addr: SocketAddr,
    child: Option<Child>,
    _data_dir: Option<tempfile::TempDir>,
}

impl Running {
    /// CPU time (user + system) the started process has used so far, from
    /// `/proc/<pid>/stat`; `None` for an external target. For a baseline
    /// this is its adapter: the database server's own CPU is not counted.
    pub fn cpu(&self) -> Option<Duration> {
        let pid = self.child.as_ref()?.id();
        process_cpu_of(pid)
    }

    /// Reads the started process's resident memory in bytes (`VmRSS`; 0
    /// for an external target).
    pub fn rss_probe(&self) -> impl Fn() -> u64 + Send + 'static {
        let pid = self.child.as_ref().map(Child::id);
        move || pid.map_or(0, |pid| crate::stats::rss_bytes(&pid.to_string()))
    }

    /// Reads the bytes the started service's data dir takes on disk
    /// (allocated blocks, as `du` counts them; 0 without one).
    pub fn disk_probe(&self) -> Arc<dyn Fn() -> u64 + Send + Sync> {
        fn walk(dir: &std::path::Path) -> u64 {
            use std::os::unix::fs::MetadataExt;
            let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
            entries
                .filter_map(|e| e.ok())
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => walk(&e.path()),
                    Ok(m) => m.blocks() * 512,
                    Err(_) => 0,
                })
                .sum()
        }
        let dir = self._data_dir.as_ref().map(|d| d.path().to_path_buf());
        Arc::new(move || dir.as_deref().map_or(0, walk))
    }

    pub fn external(kind: TargetKind, addr: SocketAddr) -> Running {
        Running { kind, addr, child: None, _data_dir: None }
    }

    pub fn start(kind: TargetKind, options: &StartOptions) -> Result<Running> {
        std::fs::create_dir_all(&options.log_dir)?;
        let log_path = options.log_dir.join(format!("{}.log", kind.name()));
        let log = std::fs::File::create(&log_path)?;
        let (mut command, data_dir) = match kind {
            TargetKind::Service | TargetKind::ServiceFile => {
                let bin = find_inventoryd(options.inventoryd.as_deref())?;
                let data_dir = tempfile::Builder::new().prefix("inventory-bench-").tempdir()?;
                let mut command = Command::new(bin);
                command.arg("--listen").arg("127.0.0.1:0").arg("--data-dir").arg(data_dir.path());
                // The audit reads every hold back, faster than the service's
                // default query rate limit allows; a --service-arg naming the
                // flag wins over this (older builds ignore the variable).
                command.env("INVENTORY_QUERY_RATE_LIMIT", "0");
                if kind == TargetKind::ServiceFile {
                    command.args(["--journal", "file"]);
                }
                command.args(&options.service_args);
                (command, Some(data_dir))
            }
            _ => {
                let mut command = Command::new(std::env::current_exe()?);
                command.args(["adapter", "--listen", "127.0.0.1:0", "--pool", &options.adapter_pool.to_string()]);
                match kind {
                    TargetKind::Postgres => command.args(["--backend", "postgres", "--pg-url", &options.pg_url]),
                    TargetKind::RedisAlways => command.args([
                        "--backend",
                        "redis",
                        "--appendfsync",
                        "always",
                        "--redis-url",
                        &options.redis_url,
                    ]),
                    TargetKind::RedisEverysec => command.args([
                        "--backend",
                        "redis",
                        "--appendfsync",
                        "everysec",
                        "--redis-url",
                        &options.redis_url,
                    ]),
                    _ => command.args(["--backend", "memory"]),
                };
                (command, None)
            }
        };
        let what = || format!("{} (log: {})", kind.name(), log_path.display());
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|e| BenchError::Start { what: what(), reason: e.to_string() })?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(first)) = lines.next() {
                let _ = tx.send(first);
            }
            // Keep draining so the child never blocks on a full pipe.
            for _ in lines {}
        });
        let line = match rx.recv_timeout(START_TIMEOUT) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let tail = std::fs::read_to_string(&log_path).unwrap_or_default();
                let tail: String = tail.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
                return Err(BenchError::Start { what: what(), reason: format!("it printed no address; log: {tail}") });
            }
        };
        let addr = parse_listening_line(&line)
            .ok_or_else(|| BenchError::Start { what: what(), reason: format!("unexpected first line {line:?}") })?;
        Ok(Running { kind, addr, child: Some(child), _data_dir: data_dir })
    }

    /// Polls `GET /readyz` until it answers 200.
    pub async fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut conn = Conn::new(self.addr, Duration::from_secs(5));
        loop {
            if let Ok(r) = conn.get("/readyz").await {
                if r.status == 200 {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(BenchError::Start { what: self.kind.name().into(), reason: "never became ready".into() });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then wait; kill if it does not stop in time.
    pub fn stop(mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else { return Ok(()) };
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                return if status.success() {
                    Ok(())
                } else {
                    Err(BenchError::Start { what: self.kind.name().into(), reason: format!("exited with {status}") })
                };
            }
            if Instant::now() > deadline {
                child.kill()?;
                child.wait()?;
                return Err(BenchError::Start {
                    what: self.kind.name().into(),
                    reason: "did not stop on SIGTERM".into(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            // SAFETY: plain kill(2) on our own child's pid; the adapters
            // restore the database settings they changed on SIGTERM.
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `... listening on http://127.0.0.1:PORT` → the address.
pub fn parse_listening_line(line: &str) -> Option<SocketAddr> {
    let (_, url) = line.split_once(" listening on ")?;
    url.trim().strip_prefix("http://")?.trim_end_matches('/').parse().ok()
}

/// Parses `http://host:port` (what `--target-url` takes).
pub fn parse_url(url: &str) -> Result<SocketAddr> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| BenchError::Config(format!("--target-url {url:?}: only http://IP:PORT is supported")))?;
    let rest = rest.trim_end_matches('/');
    use std::net::ToSocketAddrs;
    rest.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| BenchError::Config(format!("--target-url {url:?}: cannot resolve {rest:?}")))
}

/// `inventoryd` next to this binary (both are built into the same target
/// directory), unless a path is given.
pub fn find_inventoryd(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = explicit {
        return if path.is_file() {
            Ok(path.to_path_buf())
        } else {
            Err(BenchError::Config(format!("--inventoryd {}: no such file", path.display())))
        };
    }
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent();
    // Also look one level up, for binaries under target/<profile>/deps.
    for _ in 0..2 {
        if let Some(d) = dir {
            let candidate = d.join("inventoryd");
            if candidate.is_file() {
                return Ok(candidate);
            }
            dir = d.parent();
        }
    }
    Err(BenchError::Config(format!(
        "cannot find inventoryd next to {}; build it with `cargo build --release -p inventory-gateway` or pass --inventoryd PATH",
        exe.display()
    )))
}

/// Seeds every SKU of the catalogue (and the flash SKU when it has stock):
/// through the receive endpoint, many connections at once, or through an
/// adapter's bulk endpoint for the uniform part. Returns the number of
/// receive requests sent.
pub async fn seed(
    addr: SocketAddr,
    bulk: bool,
    catalogue: Arc<Catalogue>,
    connections: usize,
    timeout: Duration,
    progress: Option<indicatif::ProgressBar>,
    auth: Option<&Arc<crate::auth::Auth>>,
) -> Result<u64> {
    let bulk = bulk && catalogue.skus > catalogue.hot;
    if bulk {
        let mut conn = Conn::with_auth(addr, timeout.max(Duration::from_secs(600)), auth);
        let mut from = catalogue.hot;
        while from < catalogue.skus {
            let to = (from + BULK_SEED_CHUNK).min(catalogue.skus);
            let body = serde_json::json!({
                "prefix": catalogue.prefix, "from": from, "to": to, "qty": catalogue.stock,
            });
            let reply = conn.post("/bench/seed", &body).await.map_err(|f| BenchError::Seed(f.code().into()))?;
            if reply.status != 200 {
                return Err(BenchError::Seed(format!(
                    "bulk seed: HTTP {} {}",
                    reply.status,
                    String::from_utf8_lossy(&reply.body)
                )));
            }
            if let Some(p) = &progress {
                p.inc(to - from);
            }
            from = to;
        }
    }
    // The rest one SKU at a time: the hot SKUs (all SKUs without a bulk
    // path), then the flash SKU (index `skus`).
    let singles = if bulk { catalogue.hot } else { catalogue.skus };
    let next = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..connections.max(1) {
        let (next, sent, catalogue, progress) = (next.clone(), sent.clone(), catalogue.clone(), progress.clone());
        let auth = auth.cloned();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::with_auth(addr, timeout, auth.as_ref());
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let sku = match k.cmp(&singles) {
                    std::cmp::Ordering::Less => k,
                    std::cmp::Ordering::Equal => catalogue.flash(),
                    std::cmp::Ordering::Greater => return Ok::<_, BenchError>(()),
                };
                let sku_id = catalogue.sku_id(sku);
                for (chunk, qty) in receive_chunks(catalogue.seeded(sku)).enumerate() {
                    let body = format!(
                        r#"{{"skuId":"{sku_id}","qty":{qty},"idemKey":"seed:{sku_id}:{chunk}","ref":"bench-seed"}}"#
                    );
                    receive_with_retry(&mut conn, body).await?;
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                if let Some(p) = &progress {
                    p.inc(1);
                }
            }
        }));
    }
    for task in tasks {
        task.await.map_err(|e| BenchError::Seed(e.to_string()))??;
    }
    Ok(sent.load(Ordering::Relaxed))
}

/// Puts a sale policy of at most `max_per_buyer` units per buyer on
/// `sku_id` (`PUT /api/admin/skus/{skuId}/policy`, as operator "bench").
pub async fn set_buyer_limit(
    addr: SocketAddr,
    sku_id: &str,
    max_per_buyer: u64,
    timeout: Duration,
    auth: Option<&Arc<crate::auth::Auth>>,
) -> Result<()> {
    let mut conn = Conn::with_auth(addr, timeout, auth);
    let path = format!("/api/admin/skus/{}/policy", crate::client::segment(sku_id));
    let body = format!(r#"{{"maxPerBuyer":{max_per_buyer},"idemKey":"policy:{sku_id}"}}"#);
    let mut last = String::new();
    for attempt in 0..8u32 {
        let reply =
            conn.request_with(hyper::Method::PUT, &path, Some(body.clone().into_bytes()), &[("x-operator", "bench")]);
        match reply.await {
            Ok(r) if r.status == 200 => {
                let set = r.json::<serde_json::Value>().and_then(|v| v["policy"]["maxPerBuyer"].as_u64());
                return match set {
                    Some(n) if n == max_per_buyer => Ok(()),
                    _ => Err(BenchError::Seed(format!(
                        "PUT {path}: the answer shows no maxPerBuyer {max_per_buyer}: {}",
                        String::from_utf8_lossy(&r.body)
                    ))),
                };
            }
            Ok(r) if r.status == 503 => last = r.code(),
            Ok(r) => {
                return Err(BenchError::Seed(format!(
                    "PUT {path}: HTTP {} {}",
                    r.status,
                    String::from_utf8_lossy(&r.body)
                )))
            }
            Err(f) => last = f.code().into(),
        }
        tokio::time::sleep(Duration::from_millis(20 << attempt)).await;
    }
    Err(BenchError::Seed(format!("PUT {path}: {last}")))
}

/// Checks that the target answers multi-line orders
/// (`POST /api/orders/{orderId}/reserve`) with an order of no lines, which
/// it must refuse without holding anything; a target without the route
/// (404 `NOT_FOUND`, 405) is refused before the run.
pub async fn probe_orders(
    addr: SocketAddr,
    prefix: &str,
    timeout: Duration,
    auth: Option<&Arc<crate::auth::Auth>>,
) -> Result<()> {
    let mut conn = Conn::with_auth(addr, timeout, auth);
    let path = format!("/api/orders/{}/reserve", crate::client::segment(&format!("{prefix}probe")));
    let body = format!(r#"{{"lines":[],"idemKey":"{prefix}probe:reserve"}}"#);
    let reply = conn
        .request(hyper::Method::POST, &path, Some(body.into_bytes()))
        .await
        .map_err(|f| BenchError::Start { what: "the orders probe".into(), reason: f.code().into() })?;
    if reply.status == 405 || (reply.status == 404 && reply.code() == "NOT_FOUND") {
        return Err(BenchError::Config(format!(
            "--lines needs POST /api/orders/{{orderId}}/reserve, which this target does not have (HTTP {} {})",
            reply.status,
            String::from_utf8_lossy(&reply.body)
        )));
    }
    Ok(())
}

async fn receive_with_retry(conn: &mut Conn, body: String) -> Result<()> {
    let mut last = String::new();
    for attempt in 0..8u32 {
        match conn.request(hyper::Method::POST, "/api/inventory/receive", Some(body.clone().into_bytes())).await {
            Ok(r) if r.status == 200 => return Ok(()),
            Ok(r) if r.status == 503 => last = r.code(),
            Ok(r) => {
                return Err(BenchError::Seed(format!("receive {body}: HTTP {} {}", r.status, r.code())));
            }
            Err(f) => last = f.code().into(),
        }
        tokio::time::sleep(Duration::from_millis(20 << attempt)).await;
    }
    Err(BenchError::Seed(format!("receive {body}: {last}")))
}

/// CPU time (user + system) of process `pid` so far, in whole clock ticks.
fn process_cpu_of(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces;
    // utime and stime are fields 14 and 15, the 12th and 13th after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (ticks > 0).then(|| Duration::from_secs_f64((utime + stime) as f64 / ticks as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_lines_parse() {
        assert_eq!(
            parse_listening_line("inventoryd listening on http://127.0.0.1:4321"),
            Some("127.0.0.1:4321".parse().unwrap())
        );
        assert_eq!(
            parse_listening_line("inventory-bench adapter listening on http://127.0.0.1:80/"),
            Some("127.0.0.1:80".parse().unwrap())
        );
        assert_eq!(parse_listening_line("hello"), None);
        assert!(parse_url("http://127.0.0.1:8080").is_ok());
        assert!(parse_url("https://127.0.0.1:8080").is_err());
    }
}
