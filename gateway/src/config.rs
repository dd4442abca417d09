//! Service configuration: command-line flags, each also settable by an
//! environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use inventory_journal::Backend;
use inventory_runtime::{HotWindows, RuntimeConfig};

#[derive(clap::Args, Clone, Debug)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "INVENTORY_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Directory holding the journal.
    #[arg(long, env = "INVENTORY_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Journal kind for a new data dir: `sled` (a sled database per shard) or
    /// `file` (append-only segment files, one `fdatasync` per group commit
    /// on the shard's own thread). A data dir keeps the kind it was created
    /// with; naming another is refused.
    #[arg(long, env = "INVENTORY_JOURNAL", value_parser = clap::value_parser!(Backend))]
    pub journal: Option<Backend>,
    /// Number of shard loops (default: number of cores). Fixed when the data
    /// dir is created; later starts must pass the same number or none.
    #[arg(long, env = "INVENTORY_SHARDS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub shards: Option<u16>,
    /// Default hold duration when a reserve names no `ttlSeconds`.
    #[arg(long, env = "INVENTORY_RESERVATION_TTL_SECS", default_value_t = 900, value_parser = clap::value_parser!(u64).range(1..=604_800))]
    pub reservation_ttl_secs: u64,
    /// How long a proposed stock adjustment waits for a second operator's
    /// approval before it expires.
    #[arg(long, env = "INVENTORY_ADJUSTMENT_TTL_SECS", default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(1..=2_592_000))]
    pub adjustment_ttl_secs: u64,
    /// Largest `qty` one request may carry.
    #[arg(long, env = "INVENTORY_MAX_QTY", default_value_t = 1_000_000)]
    pub max_qty: u64,
    /// Requests queued per shard before the gateway sheds load with 503.
    #[arg(long, env = "INVENTORY_QUEUE_CAPACITY", default_value_t = 16_384)]
    pub queue_capacity: usize,
    /// Most requests one shard applies per journal flush.
    #[arg(long, env = "INVENTORY_BATCH_MAX", default_value_t = 1_024)]
    pub batch_max: usize,
    /// SKUs (over all shards) the stock index is sized for at start; it
    /// grows past that as needed. Set to the catalogue's size, a bulk load
    /// into an empty service skips the index's step-by-step growth; the
    /// index's memory for that many SKUs (about 8-10 bytes each) is resident
    /// from the start (`0`: grow as SKUs come).
    #[arg(long, env = "INVENTORY_EXPECTED_SKUS", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=4_000_000_000))]
    pub expected_skus: u64,
    /// Pin each shard loop to a core.
    #[arg(long, env = "INVENTORY_PIN_THREADS", default_value_t = true, action = clap::ArgAction::Set)]
    pub pin_threads: bool,
    /// HTTP threads (default: number of cores). Each serves its share of the
    /// connections, handed out in turn, on a runtime of its own.
    #[arg(long, env = "INVENTORY_HTTP_THREADS")]
    pub http_threads: Option<usize>,
    /// PostgreSQL to persist the journal to, asynchronously (e.g.
    /// `postgres://root@127.0.0.1/test`). Without it nothing leaves the
    /// local journal.
    #[arg(long, env = "INVENTORY_POSTGRES_URL")]
    pub postgres_url: Option<String>,
    /// PostgreSQL schema for the service's tables.
    #[arg(long, env = "INVENTORY_POSTGRES_SCHEMA", default_value = "inventory")]
    pub postgres_schema: String,
    /// Most journal entries per PostgreSQL transaction.
    #[arg(long, env = "INVENTORY_POSTGRES_BATCH_MAX", default_value_t = 2_048)]
    pub postgres_batch_max: usize,
    /// Reservation partitions are dropped this long after their day ends.
    #[arg(long, env = "INVENTORY_RESERVATION_RETENTION_HOURS", default_value_t = 48)]
    pub reservation_retention_hours: u64,
    /// Transaction-history partitions are dropped this long after their day ends.
    #[arg(long, env = "INVENTORY_TXN_RETENTION_HOURS", default_value_t = 30 * 24)]
    pub txn_retention_hours: u64,
    /// Snapshot a shard once this many journal entries accumulated since its
    /// last snapshot (0: only on request, `POST /api/admin/snapshot`). Each
    /// snapshot rebuilds the shard beside its loop: taken every million
    /// entries, that cost a soak 40% of its rate (bench/README.md, "The
    /// cold tier"); a restart replays at most this many entries (about
    /// 0.5M a second).
    #[arg(long, env = "INVENTORY_SNAPSHOT_EVERY_ENTRIES", default_value_t = 10_000_000)]
    pub snapshot_every_entries: u64,
    /// Snapshots kept per shard.
    #[arg(long, env = "INVENTORY_SNAPSHOTS_KEEP", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=100))]
    pub snapshots_keep: u64,
    /// Move finished holds and idempotency records older than the hot
    /// windows below to a cold tier on local disk (`<data-dir>/cold`), so
    /// memory stays flat through a long sale. `false` keeps everything in
    /// memory for its whole retention (48-72 h).
    #[arg(long, env = "INVENTORY_COLD_TIER", default_value_t = true, action = clap::ArgAction::Set)]
    pub cold_tier: bool,
    /// With the cold tier: finished holds stay in memory this long after
    /// they finish, then move to disk for the rest of their 48 h.
    #[arg(long, env = "INVENTORY_HOT_HOLDS_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=172_800))]
    pub hot_holds_secs: u64,
    /// With the cold tier: idempotency records stay in memory this long
    /// after they are made, then move to disk for the rest of their 72 h.
    #[arg(long, env = "INVENTORY_HOT_KEYS_SECS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=259_200))]
    pub hot_keys_secs: u64,
    /// Refuse writes with 503 `REPLICATION_LAG` while PostgreSQL, the copy
    /// off this machine, has not applied a change acknowledged this many
    /// seconds ago: losing the machine then loses at most that much. Off
    /// when not set; needs `--postgres-url`.
    #[arg(long, env = "INVENTORY_MAX_REPLICATION_LAG_SECS", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub max_replication_lag_secs: Option<u64>,
    /// NATS server to publish every stock change to, as a CloudEvent on
    /// JetStream (e.g. `nats://127.0.0.1:4222`). Without it no events are
    /// published.
    #[arg(long, env = "INVENTORY_EVENTS_NATS_URL")]
    pub events_nats_url: Option<String>,
    /// JetStream stream for the events (created, on subjects `inventory.>`,
    /// if missing).
    #[arg(long, env = "INVENTORY_EVENTS_STREAM", default_value = "INVENTORY")]
    pub events_stream: String,
    /// The CloudEvents `source` of this instance's events.
    #[arg(long, env = "INVENTORY_EVENTS_SOURCE", default_value = "inventoryd")]
    pub events_source: String,
    /// Most journal entries per publish (the relay awaits the broker's
    /// acknowledgements once per batch).
    #[arg(long, env = "INVENTORY_EVENTS_BATCH_MAX", default_value_t = 1_024, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub events_batch_max: u64,
    /// Authentication: `jwt` requires `Authorization: Bearer <token>` on
    /// every endpoint but /healthz, /readyz and /openapi.json (and
    /// /metrics, see `--metrics-open`); `none` lets any caller in. Left unset, the
    /// service runs open on a loopback address (with a warning) and refuses
    /// to start on any other.
    #[arg(long, env = "INVENTORY_AUTH", value_parser = ["none", "jwt"])]
    pub auth: Option<String>,
    /// HS256 secret for tokens (a file only its owner can read).
    #[arg(long, env = "INVENTORY_JWT_HS256_SECRET_FILE")]
    pub jwt_hs256_secret_file: Option<PathBuf>,
    /// JWKS file of the public keys (RS256, ES256, EdDSA) tokens are signed
    /// with; re-read, with the secret file, on SIGHUP.
    #[arg(long, env = "INVENTORY_JWT_JWKS_FILE")]
    pub jwt_jwks_file: Option<PathBuf>,
    /// Accept only tokens with this `iss`.
    #[arg(long, env = "INVENTORY_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Accept only tokens whose `aud` holds this.
    #[arg(long, env = "INVENTORY_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Clock difference allowed on `exp` and `nbf`.
    #[arg(long, env = "INVENTORY_JWT_LEEWAY_SECS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(0..=300))]
    pub jwt_leeway_secs: u64,
    /// With `--auth jwt`, whether /metrics stays open (`false`: it needs the
    /// admin role).
    #[arg(long, env = "INVENTORY_METRICS_OPEN", default_value_t = true, action = clap::ArgAction::Set)]
    pub metrics_open: bool,
    /// Require signed writes: every POST carries `X-Timestamp`, `X-Nonce`
    /// and `X-Signature` (HMAC-SHA256 under this secret, see the README).
    #[arg(long, env = "INVENTORY_SIGNED_WRITES_SECRET_FILE")]
    pub signed_writes_secret_file: Option<PathBuf>,
    /// Refuse a reserve that takes one caller (tenant and buyerId, or token
    /// subject) past this many units in a sliding minute, with 429
    /// `RISK_CHECK_REQUIRED`, unless its token says `risk_cleared`.
    #[arg(long, env = "INVENTORY_RISK_MAX_UNITS_PER_MINUTE", value_parser = clap::value_parser!(u64).range(1..))]
    pub risk_max_units_per_minute: Option<u64>,
    /// Key (a file only its owner can read) under which a confirm's
    /// `paymentId` is replaced by its keyed hash (`hmac-` and the hex
    /// HMAC-SHA256) before it is journaled: the journal, PostgreSQL and the
    /// events hold only the hash, and a repeated callback with the same id
    /// still matches. Keep the key: under another one, a repeated callback
    /// of an earlier payment conflicts.
    #[arg(long, env = "INVENTORY_PAYMENT_ID_KEY_FILE")]
    pub payment_id_key_file: Option<PathBuf>,
    /// Faults to inject into the PostgreSQL writer (tests only; not a flag).
    #[arg(skip)]
    pub writer_faults: std::sync::Arc<inventory_persistence::WriterFaults>,
    /// PEM certificate chain to serve HTTPS with (HTTP/1.1 only); needs
    /// `--tls-key`. Without both, the service serves plain HTTP.
    #[arg(long, env = "INVENTORY_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `--tls-cert`.
    #[arg(long, env = "INVENTORY_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificate(s): every client must present a certificate
    /// signed by one of them (mutual TLS). Needs `--tls-cert` and
    /// `--tls-key`.
    #[arg(long, env = "INVENTORY_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// A connection is closed unless the whole header of a request arrives
    /// within this many seconds: of the connection opening (TLS handshake
    /// included) for its first request, of the request's first byte for
    /// later ones.
    #[arg(long, env = "INVENTORY_HEADER_READ_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub header_read_timeout_secs: u64,
    /// A request body not fully received this many seconds after its
    /// header is answered 408 `REQUEST_TIMEOUT`, and its connection closed.
    #[arg(long, env = "INVENTORY_BODY_READ_TIMEOUT_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub body_read_timeout_secs: u64,
    /// A keep-alive connection with no request in flight for this many
    /// seconds is closed.
    #[arg(long, env = "INVENTORY_IDLE_TIMEOUT_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub idle_timeout_secs: u64,
    /// Open connections at most; one more is answered 503
    /// `TOO_MANY_CONNECTIONS` (plain HTTP) or closed (HTTPS) at once, never
    /// queued. Keep it under the process's file limit (`ulimit -n`).
    #[arg(long, env = "INVENTORY_MAX_CONNECTIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: u64,
    /// Stock queries (`GET /api/inventory/{skuId}`, `/api/reservations/{id}`,
    /// `/api/orders/{orderId}/inventory-status`) admitted per second, over
    /// all HTTP threads, by a token bucket that holds one second's worth:
    /// after a quiet second this many pass at once. Past it a query is
    /// refused with 429 `RATE_LIMITED` and `Retry-After` before it is
    /// parsed or queued. Health, readiness, metrics and admin routes are
    /// not limited. `0`: unlimited.
    #[arg(long, env = "INVENTORY_QUERY_RATE_LIMIT", default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(0..=1_000_000_000))]
    pub query_rate_limit: u64,
}

impl Config {
    /// Defaults, with the journal under `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Config {
        Config {
            listen: "127.0.0.1:8080".parse().unwrap(),
            data_dir: data_dir.into(),
            journal: None,
            shards: None,
            reservation_ttl_secs: 900,
            adjustment_ttl_secs: 86_400,
            max_qty: 1_000_000,
            queue_capacity: 16_384,
            batch_max: 1_024,
            expected_skus: 0,
            pin_threads: true,
            http_threads: None,
            postgres_url: None,
            postgres_schema: "inventory".to_string(),
            postgres_batch_max: 2_048,
            reservation_retention_hours: 48,
            txn_retention_hours: 30 * 24,
            snapshot_every_entries: 10_000_000,
            snapshots_keep: 2,
            cold_tier: true,
            hot_holds_secs: 60,
            hot_keys_secs: 300,
            max_replication_lag_secs: None,
            events_nats_url: None,
            events_stream: "INVENTORY".to_string(),
            events_source: "inventoryd".to_string(),
            events_batch_max: 1_024,
            auth: None,
            jwt_hs256_secret_file: None,
            jwt_jwks_file: None,
            jwt_issuer: None,
            jwt_audience: None,
            jwt_leeway_secs: 5,
            metrics_open: true,
            signed_writes_secret_file: None,
            risk_max_units_per_minute: None,
            payment_id_key_file: None,
            writer_faults: Default::default(),
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            header_read_timeout_secs: 10,
            body_read_timeout_secs: 30,
            idle_timeout_secs: 60,
            max_connections: 10_000,
            query_rate_limit: 5_000,
        }
    }

    /// Where the event relay keeps its positions.
    pub fn events_dir(&self) -> PathBuf {
        self.data_dir.join("events")
    }

    pub fn journal_dir(&self) -> PathBuf {
        self.data_dir.join("journal")
    }

    /// What the shard runtime is told.
    pub fn runtime(&self) -> RuntimeConfig {
        RuntimeConfig {
            data_dir: self.data_dir.clone(),
            queue_capacity: self.queue_capacity,
            batch_max: self.batch_max,
            pin_threads: self.pin_threads,
            expected_skus: self.expected_skus,
            snapshot_every_entries: self.snapshot_every_entries,
            snapshots_keep: self.snapshots_keep as usize,
            hot: self
                .cold_tier
                .then(|| HotWindows { holds_ms: self.hot_holds_secs * 1_000, keys_ms: self.hot_keys_secs * 1_000 }),
            query_rate_limit: self.query_rate_limit,
        }
    }
}

pub fn default_shards() -> u16 {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(1024) as u16
}
