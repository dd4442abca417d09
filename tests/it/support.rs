//! Starting servers and talking to them.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use inventory_gateway::{run_with, Clock, Config, SteadyClock};
use inventory_journal::{Backend, FaultHandle, FaultyJournal, Journal, Store};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// A server running inside the test process, on its own data dir.
pub struct TestServer {
    pub url: String,
    pub shards: u16,
    pub faults: FaultHandle,
    pub client: Client,
    stop: Option<oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<Result<(), inventory_gateway::ServerError>>>,
    _dir: Option<tempfile::TempDir>,
}

pub struct Options {
    pub shards: u16,
    pub queue_capacity: usize,
    pub batch_max: usize,
    pub max_qty: u64,
    pub data_dir: Option<PathBuf>,
    /// `(url, schema)` of a PostgreSQL to persist to.
    pub postgres: Option<(String, String)>,
    pub postgres_batch_max: usize,
    pub writer_faults: Arc<inventory_persistence::WriterFaults>,
    /// The kind of journal a new data dir gets.
    pub journal: Backend,
    /// Seconds finished holds and idempotency records stay in memory
    /// before they move to the cold tier (`None`: the service's defaults).
    pub hot_secs: Option<(u64, u64)>,
    /// Runs with `--cold-tier false`: everything stays in memory.
    pub keep_all: bool,
    /// How long a proposed adjustment stays pending (`None`: the default).
    pub adjustment_ttl_secs: Option<u64>,
    /// The server's clock (`None`: the service's, a steady system clock).
    pub clock: Option<Arc<dyn Clock>>,
    /// A NATS server to publish events to.
    pub events_nats_url: Option<String>,
    /// `--max-replication-lag-secs`.
    pub max_replication_lag_secs: Option<u64>,
    /// Sets anything else of the configuration, last.
    pub configure: Option<Configure>,
}

/// Sets what [`Options`] has no field for.
pub type Configure = Arc<dyn Fn(&mut Config) + Send + Sync>;

impl Default for Options {
    fn default() -> Self {
        Options {
            shards: 2,
            queue_capacity: 4_096,
            batch_max: 512,
            max_qty: 1_000_000,
            data_dir: None,
            postgres: None,
            postgres_batch_max: 2_048,
            writer_faults: Arc::default(),
            journal: Backend::Sled,
            hot_secs: None,
            keep_all: false,
            adjustment_ttl_secs: None,
            clock: None,
            events_nats_url: None,
            max_replication_lag_secs: None,
            configure: None,
        }
    }
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::start_with(Options::default()).await
    }

    /// Starts a server whose journals can be made to fail via `faults`.
    pub async fn start_with(options: Options) -> TestServer {
        let (dir, path) = match options.data_dir.clone() {
            Some(path) => (None, path),
            None => {
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().to_path_buf();
                (Some(dir), path)
            }
        };
        let mut config = Config::new(&path);
        config.shards = Some(options.shards);
        config.queue_capacity = options.queue_capacity;
        config.batch_max = options.batch_max;
        config.max_qty = options.max_qty;
        config.pin_threads = false;
        if let Some((url, schema)) = &options.postgres {
            config.postgres_url = Some(url.clone());
            config.postgres_schema = schema.clone();
        }
        config.postgres_batch_max = options.postgres_batch_max;
        config.cold_tier = !options.keep_all;
        if let Some((holds, keys)) = options.hot_secs {
            (config.cold_tier, config.hot_holds_secs, config.hot_keys_secs) = (true, holds, keys);
        }
        if let Some(secs) = options.adjustment_ttl_secs {
            config.adjustment_ttl_secs = secs;
        }
        config.events_nats_url = options.events_nats_url.clone();
        config.max_replication_lag_secs = options.max_replication_lag_secs;
        config.writer_faults = options.writer_faults.clone();
        if let Some(configure) = &options.configure {
            configure(&mut config);
        }
        let faults = FaultHandle::default();
        let store = Store::open(&config.journal_dir(), Some(options.journal), config.shards, 1).unwrap();
        let journals: Vec<Box<dyn Journal>> = (0..store.shards())
            .map(|i| Box::new(FaultyJournal::new(store.journal(i).unwrap(), faults.clone())) as Box<dyn Journal>)
            .collect();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let clock = options.clock.clone().unwrap_or_else(|| Arc::new(SteadyClock::default()));
        let done = tokio::spawn(async move {
            let result = run_with(config, listener, journals, clock, async {
                let _ = stopped.await;
            })
            .await;
            store.flush().unwrap();
            result
        });
        let client = Client::new(&url);
        client.wait_ready().await;
        TestServer { url, shards: options.shards, faults, client, stop: Some(stop), done: Some(done), _dir: dir }
    }

    /// Shuts down gracefully and waits until the journal is closed.
    pub async fn stop(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        self.done.take().unwrap().await.unwrap().unwrap();
    }
}

/// A JSON-over-HTTP client with keep-alive.
#[derive(Clone)]
pub struct Client {
    pub url: String,
    http: reqwest::Client,
}

pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
    pub text: String,
    pub headers: reqwest::header::HeaderMap,
}

impl Reply {
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }
}

impl Client {
    pub fn new(url: &str) -> Client {
        Client { url: url.to_string(), http: reqwest::Client::builder().pool_max_idle_per_host(64).build().unwrap() }
    }

    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = self.http.get(format!("{}/readyz", self.url)).send().await {
                if r.status() == StatusCode::OK {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "server at {} never became ready", self.url);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn reply(response: reqwest::Response) -> Reply {
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply { status, body, text, headers }
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        Self::reply(self.http.post(format!("{}{path}", self.url)).json(&body).send().await.unwrap()).await
    }

    /// Posts a body as it is, with the given headers.
    pub async fn post_raw(&self, path: &str, headers: &[(&str, &str)], body: &'static [u8]) -> Reply {
        let mut request = self.http.post(format!("{}{path}", self.url)).body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        Self::reply(request.send().await.unwrap()).await
    }

    pub async fn try_post(&self, path: &str, body: Value) -> Result<Reply, reqwest::Error> {
        Ok(Self::reply(self.http.post(format!("{}{path}", self.url)).json(&body).send().await?).await)
    }

    /// Posts as an operator (`X-Operator`).
    pub async fn post_as(&self, operator: &str, path: &str, body: Value) -> Reply {
        let request = self.http.post(format!("{}{path}", self.url)).header("x-operator", operator).json(&body);
        Self::reply(request.send().await.unwrap()).await
    }

    /// Any request, with the given headers and an optional JSON body.
    pub async fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&Value>) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.http.request(method, format!("{}{path}", self.url));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        Self::reply(request.send().await.unwrap()).await
    }

    /// Any request, with the given headers and a body sent as it is.
    pub async fn send_bytes(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.http.request(method, format!("{}{path}", self.url)).body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        Self::reply(request.send().await.unwrap()).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        Self::reply(self.http.get(format!("{}{path}", self.url)).send().await.unwrap()).await
    }

    pub async fn receive(&self, sku: &str, qty: u64) -> Reply {
        let r = self
            .post(
                "/api/inventory/receive",
                json!({"skuId": sku, "qty": qty, "idemKey": format!("rcv:{sku}:{qty}:{}", unique())}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        r
    }

    pub async fn reserve(&self, order: &str, sku: &str, qty: u64, key: &str) -> Reply {
        self.post("/api/inventory/reserve", json!({"orderId": order, "skuId": sku, "qty": qty, "idemKey": key})).await
    }

    pub async fn confirm(&self, id: &str, payment: &str, key: &str) -> Reply {
        self.post("/api/inventory/confirm", json!({"reservationId": id, "paymentId": payment, "idemKey": key})).await
    }

    pub async fn release(&self, id: &str, key: &str) -> Reply {
        self.post("/api/inventory/release", json!({"reservationId": id, "reason": "USER_CANCELLED", "idemKey": key}))
            .await
    }

    /// `(available, reserved, sold)` summed over warehouses.
    pub async fn levels(&self, sku: &str) -> (u64, u64, u64) {
        let r = self.get(&format!("/api/inventory/{sku}")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let n = |f: &str| r.body[f].as_u64().unwrap();
        (n("available"), n("reserved"), n("sold"))
    }
}

/// A process-unique number, for idempotency keys that must not collide.
pub fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Two SKU ids that route to different shards.
pub fn skus_on_different_shards(prefix: &str, shards: u16) -> (String, String) {
    let first = format!("{prefix}-0");
    let home = inventory_core::shard_for_sku(&first, shards);
    let other =
        (1..).map(|i| format!("{prefix}-{i}")).find(|s| inventory_core::shard_for_sku(s, shards) != home).unwrap();
    (first, other)
}

/// The `inventoryd` binary, running as a child process.
pub struct Daemon {
    pub child: Child,
    pub url: String,
}

impl Daemon {
    pub fn spawn(data_dir: &Path, args: &[&str]) -> Daemon {
        let mut child = Process::new(env!("CARGO_BIN_EXE_inventoryd"))
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start inventoryd");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let url = line
            .trim()
            .strip_prefix("inventoryd listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        Daemon { child, url }
    }

    pub fn signal(&self, signal: i32) {
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, signal) }, 0);
    }

    /// Waits for the process to exit; returns its exit status.
    pub fn wait(mut self) -> std::process::ExitStatus {
        self.child.wait().unwrap()
    }

    /// Waits up to `within` for the process to exit; `None` if it did not
    /// (it is then killed when dropped).
    pub fn wait_for(&mut self, within: std::time::Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `inventoryctl` with `args` to completion.
pub fn inventoryctl<S: AsRef<std::ffi::OsStr>>(args: impl IntoIterator<Item = S>) -> std::process::Output {
    Process::new(env!("CARGO_BIN_EXE_inventoryctl")).args(args).output().unwrap()
}

/// Runs `inventoryctl` with `args` off the runtime's threads (it blocks).
pub async fn ctl(args: &[&str]) -> std::process::Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || inventoryctl(args)).await.unwrap()
}

pub fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `inventoryd` with `args` to completion: a subcommand, or a start
/// that is to be refused.
pub fn inventoryd<S: AsRef<std::ffi::OsStr>>(args: impl IntoIterator<Item = S>) -> std::process::Output {
    Process::new(env!("CARGO_BIN_EXE_inventoryd")).args(args).output().unwrap()
}
