//! Command-line interface: `run` (measure targets) and `adapter` (serve a
//! baseline behind the service's HTTP API; started by `run`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::target::TargetKind;
use crate::workload::Scenario;

/// Largest catalogue the harness seeds (the document's 50 million SKUs).
pub const CATALOGUE_MAX: u64 = 50_000_000;
/// Most connections (and load-generator tasks).
pub const CONNECTIONS_MAX: usize = 4_096;
/// Most lines in one order (`--lines`).
pub const LINES_MAX: usize = 100;
/// Most buyers of a `drop`.
pub const BUYERS_MAX: u64 = 10_000_000;
/// Most reserves one bot of a `drop` fires.
pub const BOT_ATTEMPTS_MAX: u64 = 100;

#[derive(Parser, Debug)]
#[command(
    name = "inventory-bench",
    version,
    about = "Flash-sale benchmark of the inventory service against PostgreSQL and Redis baselines, with an oversell audit"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Commands,
}

#[derive(Subcommand, Debug)]
pub enum Commands {
    /// Run a scenario against one or more targets and report.
    Run(Box<RunArgs>),
    /// Serve a baseline (PostgreSQL or Redis) behind the service's HTTP API.
    Adapter(AdapterArgs),
    /// Check a ledger written by `run --ledger` against a service (e.g. one
    /// restored after its machine was lost): which acknowledged writes it
    /// lacks, and whether holds past their expiry were released.
    Verify(VerifyArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum MixKind {
    /// 70% reserves, 20% confirms, 4% releases, 6% stock queries.
    Orders,
    /// Reserves only.
    Reserves,
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Scenario to run.
    #[arg(long, value_enum)]
    pub scenario: Scenario,
    /// Targets to measure, one after the other, comma separated.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "service")]
    pub targets: Vec<TargetKind>,
    /// Length of the measured phase (e.g. 60s, 30m; default 60s, 10m for
    /// soak).
    #[arg(long = "duration", value_parser = parse_duration)]
    pub duration_arg: Option<Duration>,
    /// The measured phase's length, resolved against the scenario.
    #[arg(skip = Duration::ZERO)]
    pub duration: Duration,
    /// How often soak samples the target's memory and disk use.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub sample_every: Duration,
    /// Offered rate in requests per second for the open-loop scenarios
    /// (default: 30000 peak, 60000 double-peak, 3000 base for hot-burst).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Keep-alive connections (one load-generator task each).
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Operation mix (default: orders; max and hot-only also accept reserves).
    #[arg(long, value_enum, default_value = "orders")]
    pub mix: MixKind,
    /// Number of SKUs in the catalogue (up to 50,000,000).
    #[arg(long, default_value_t = 1_000_000)]
    pub catalogue: u64,
    /// How many of them are hot.
    #[arg(long, default_value_t = 100)]
    pub hot_skus: u64,
    /// Share of SKU picks that go to the hot SKUs.
    #[arg(long, default_value_t = 0.15)]
    pub hot_share: f64,
    /// Units seeded per regular SKU.
    #[arg(long, default_value_t = 1_000)]
    pub stock: u64,
    /// Units seeded per hot SKU.
    #[arg(long, default_value_t = 100_000)]
    pub hot_stock: u64,
    /// Units seeded for the single SKU of hot-only, hot-burst and drop
    /// (default: hot-only 100,000 per second of run; hot-burst half the
    /// burst demand, so it sells out during the burst; drop a tenth of the
    /// buyers' demand, buyers x --max-per-buyer).
    #[arg(long)]
    pub flash_stock: Option<u64>,
    /// Burst rate as a multiple of the base rate (hot-burst).
    #[arg(long, default_value_t = 10.0)]
    pub burst_factor: f64,
    /// Units per reserve (per line of an order).
    #[arg(long, default_value_t = 1)]
    pub qty: u64,
    /// Lines per order (max with --mix reserves): more than 1 reserves each
    /// order's lines, distinct SKUs, in one request to
    /// `POST /api/orders/{orderId}/reserve`.
    #[arg(long, default_value_t = 1)]
    pub lines: usize,
    /// Buyers of a drop; odd-numbered ones are bots.
    #[arg(long, default_value_t = 100_000)]
    pub buyers: u64,
    /// The drop's sale policy: units one buyer may hold (`maxPerBuyer`).
    /// Honest buyers reserve this many in one request.
    #[arg(long, default_value_t = 2)]
    pub max_per_buyer: u64,
    /// Reserves of one unit each a bot of a drop fires back to back,
    /// whatever the answers, each with a new order id and key.
    #[arg(long, default_value_t = 4)]
    pub bot_attempts: u64,
    /// `ttlSeconds` of each hold; unsettled holds expire after it.
    #[arg(long, default_value_t = 30)]
    pub hold_ttl_secs: u64,
    /// Seed of the workload's random choices.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Per-request timeout.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Acknowledged holds read back by the audit (a uniform sample beyond).
    #[arg(long, default_value_t = 200_000)]
    pub audit_holds: usize,
    /// Directory for the JSON report, the plots and the targets' logs.
    #[arg(long, default_value = "target/inventory-bench")]
    pub out_dir: PathBuf,
    /// Measure an already running service at this URL (http://IP:PORT)
    /// instead of starting one.
    #[arg(long)]
    pub target_url: Option<String>,
    /// Write every acknowledged write of the measured phase to this file,
    /// one JSON line each with the time its answer arrived (`ackMs`), and
    /// every confirm or release that got no answer. The file is created
    /// when the measured phase starts, after seeding.
    #[arg(long, value_name = "FILE")]
    pub ledger: Option<PathBuf>,
    /// End the measured phase early, without an audit, once the target
    /// refuses connections: for drills that kill it under load (needs
    /// --target-url).
    #[arg(long)]
    pub stop_when_target_lost: bool,
    /// Path of the inventoryd binary (default: next to this binary).
    #[arg(long)]
    pub inventoryd: Option<PathBuf>,
    /// Extra flag for inventoryd (repeatable), e.g. --service-arg=--shards=2.
    #[arg(long = "service-arg", allow_hyphen_values = true)]
    pub service_args: Vec<String>,
    /// PostgreSQL for the postgres baseline.
    #[arg(long, env = "BENCH_PG_URL", default_value = "postgres://root@127.0.0.1:5432/test")]
    pub pg_url: String,
    /// Redis for the redis baselines; the adapter flushes this database.
    #[arg(long, env = "BENCH_REDIS_URL", default_value = "redis://127.0.0.1:6379/9")]
    pub redis_url: String,
    /// Database connections of a baseline adapter (PostgreSQL pool size;
    /// multiplexed Redis connections).
    #[arg(long)]
    pub adapter_pool: Option<usize>,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// Extra connections that flood the target with stock queries during
    /// the measured phase of `max` (closed loop, GET /api/inventory/{sku}
    /// of the catalogue's picks), beside the workload's connections; 200s
    /// and 429s are counted apart (0: none).
    #[arg(long, default_value_t = 0)]
    pub read_flood_connections: usize,
    /// Send `Authorization: Bearer <JWT>` on every request, signed HS256
    /// with the bytes of this file (a trailing newline is not part of the
    /// secret). Claims: sub "bench", roles reserver, payment, receiver and
    /// reader, iat now, exp an hour later; minted once per connection.
    #[arg(long, value_name = "FILE", conflicts_with = "jwt_es256_key_file")]
    pub jwt_hs256_secret_file: Option<PathBuf>,
    /// The same, signed ES256 with this P-256 private key (PKCS#8, PEM or
    /// DER).
    #[arg(long, value_name = "FILE")]
    pub jwt_es256_key_file: Option<PathBuf>,
    /// A `tenant` claim for the tokens.
    #[arg(long, value_name = "T")]
    pub jwt_tenant: Option<String>,
    /// A `kid` for the tokens' header.
    #[arg(long, value_name = "K")]
    pub jwt_kid: Option<String>,
    /// Sign every write: `X-Timestamp` (Unix seconds), `X-Nonce` (unique per
    /// request) and `X-Signature`, the lowercase hex HMAC-SHA256, keyed with
    /// this file's bytes (trailing newline trimmed), of
    /// "{timestamp}\n{nonce}\n{METHOD}\n{path}\n{hex sha256(body)}".
    #[arg(long, value_name = "FILE")]
    pub signed_writes_secret_file: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    Postgres,
    Redis,
    /// Maps in the adapter's memory, nothing on disk (a reference, not a baseline).
    Memory,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Appendfsync {
    Always,
    Everysec,
}

#[derive(Args, Debug, Clone)]
pub struct AdapterArgs {
    #[arg(long, value_enum)]
    pub backend: BackendKind,
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    #[arg(long, env = "BENCH_PG_URL", default_value = "postgres://root@127.0.0.1:5432/test")]
    pub pg_url: String,
    #[arg(long, env = "BENCH_REDIS_URL", default_value = "redis://127.0.0.1:6379/9")]
    pub redis_url: String,
    /// Redis AOF fsync policy for the run.
    #[arg(long, value_enum, default_value = "always")]
    pub appendfsync: Appendfsync,
    /// Database connections.
    #[arg(long, default_value_t = 32)]
    pub pool: usize,
}

#[derive(Args, Debug, Clone)]
pub struct VerifyArgs {
    /// The service to check (http://IP:PORT).
    #[arg(long)]
    pub target_url: String,
    /// The ledger `run --ledger` wrote.
    #[arg(long, value_name = "FILE")]
    pub ledger: PathBuf,
    /// Per shard, the journal time (Unix ms) of the last change PostgreSQL
    /// had applied when the machine was lost (`writer_checkpoint.last_at_ms`),
    /// as SHARD:MS pairs, comma separated. A write missing from the service
    /// must have been acknowledged at or after its shard's time.
    #[arg(long, value_name = "SHARD:MS,...", value_parser = parse_shard_times)]
    pub applied_at_ms: Option<ShardTimes>,
    /// When the machine was lost (Unix ms).
    #[arg(long, value_name = "MS")]
    pub lost_at_ms: Option<u64>,
    /// When the restored service was ready (Unix ms): holds that expired
    /// between the loss and this time expired during the outage.
    #[arg(long, value_name = "MS")]
    pub ready_at_ms: Option<u64>,
    /// Parallel connections for the reads.
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// Per-request timeout.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// How far the service's clock may run ahead of this machine's: after
    /// the wall clock steps back the service's time goes on from where it
    /// was, ahead by up to the step. A missing write counts as acknowledged
    /// before its shard's last applied change only by more than this.
    #[arg(long, default_value = "100ms", value_parser = parse_duration_or_zero)]
    pub clock_slack: Duration,
    /// How long a hold past its expiry may still read RESERVED before it
    /// counts as not released.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub expiry_grace: Duration,
}

/// A time per shard: `(shard, Unix ms)` pairs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardTimes(pub Vec<(u16, u64)>);

/// `0:1733300000123,1:1733300000456` → `[(0, 1733300000123), (1, ...)]`.
fn parse_shard_times(s: &str) -> Result<ShardTimes, String> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|pair| {
            let (shard, ms) = pair.trim().split_once(':').ok_or_else(|| format!("{pair:?} is not SHARD:MS"))?;
            let shard = shard.trim().parse().map_err(|_| format!("{pair:?}: {shard:?} is not a shard number"))?;
            let ms = ms.trim().parse().map_err(|_| format!("{pair:?}: {ms:?} is not milliseconds"))?;
            Ok((shard, ms))
        })
        .collect::<Result<_, _>>()
        .map(ShardTimes)
}

fn parse_duration_or_zero(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration like 100ms or 1s: {e}"))
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration like 30s or 5m: {e}"))?;
    if d.is_zero() {
        return Err("must be longer than zero".into());
    }
    Ok(d)
}

impl RunArgs {
    /// Resolves what defaults by scenario, then checks combinations clap
    /// cannot express.
    pub fn resolve(&mut self) -> Result<(), String> {
        let default = if self.scenario == Scenario::Soak { 600 } else { 60 };
        self.duration = self.duration_arg.unwrap_or(Duration::from_secs(default));
        self.validate()
    }

    /// Checks combinations clap cannot express.
    pub fn validate(&self) -> Result<(), String> {
        if self.targets.is_empty() {
            return Err("--targets names no target".into());
        }
        if self.connections == 0 || self.connections > CONNECTIONS_MAX {
            return Err(format!("--connections must be between 1 and {CONNECTIONS_MAX}, got {}", self.connections));
        }
        if self.catalogue == 0 || self.catalogue > CATALOGUE_MAX {
            return Err(format!("--catalogue must be between 1 and {CATALOGUE_MAX}, got {}", self.catalogue));
        }
        if self.hot_skus > self.catalogue {
            return Err(format!("--hot-skus {} exceeds --catalogue {}", self.hot_skus, self.catalogue));
        }
        if !(0.0..=1.0).contains(&self.hot_share) {
            return Err(format!("--hot-share must be between 0 and 1, got {}", self.hot_share));
        }
        if let Some(rate) = self.rate {
            if !(rate.is_finite() && rate > 0.0) {
                return Err(format!("--rate must be a positive number, got {rate}"));
            }
            if self.scenario.default_rate().is_none() {
                return Err(format!("--rate applies to open-loop scenarios; {} is closed-loop", self.scenario.name()));
            }
        }
        if !(self.burst_factor.is_finite() && self.burst_factor >= 1.0) {
            return Err(format!("--burst-factor must be at least 1, got {}", self.burst_factor));
        }
        if self.qty == 0 {
            return Err("--qty must be at least 1".into());
        }
        if self.stock < self.qty || self.hot_stock < self.qty {
            return Err("--stock and --hot-stock must be at least --qty".into());
        }
        if self.hold_ttl_secs == 0 {
            return Err("--hold-ttl-secs must be at least 1".into());
        }
        if self.mix == MixKind::Reserves
            && !matches!(self.scenario, Scenario::Max | Scenario::HotOnly | Scenario::Soak | Scenario::Drop)
        {
            return Err("--mix reserves applies to the closed-loop scenarios max, hot-only, soak and drop".into());
        }
        let service_only = self.targets.iter().all(|t| matches!(t, TargetKind::Service | TargetKind::ServiceFile));
        if self.scenario == Scenario::Drop {
            if !service_only {
                return Err("drop sets a sale policy (PUT /api/admin/skus/{skuId}/policy, maxPerBuyer), which only \
                            the service has: use --targets service and/or service-file"
                    .into());
            }
            if self.jwt_hs256_secret_file.is_some() || self.jwt_es256_key_file.is_some() {
                return Err("drop sets a sale policy, an operator action, and the harness's tokens carry no \
                            operator role: run drop without --jwt-* flags"
                    .into());
            }
            if self.buyers == 0 || self.buyers > BUYERS_MAX {
                return Err(format!("--buyers must be between 1 and {BUYERS_MAX}, got {}", self.buyers));
            }
            if self.max_per_buyer == 0 || self.max_per_buyer > u32::MAX as u64 {
                return Err(format!("--max-per-buyer must be between 1 and {}, got {}", u32::MAX, self.max_per_buyer));
            }
            if self.bot_attempts == 0 || self.bot_attempts > BOT_ATTEMPTS_MAX {
                return Err(format!(
                    "--bot-attempts must be between 1 and {BOT_ATTEMPTS_MAX}, got {}",
                    self.bot_attempts
                ));
            }
            if self.flash_stock == Some(0) {
                return Err("--flash-stock must be at least 1".into());
            }
        }
        if self.lines == 0 || self.lines > LINES_MAX {
            return Err(format!("--lines must be between 1 and {LINES_MAX}, got {}", self.lines));
        }
        if self.lines > 1 {
            if self.scenario != Scenario::Max || self.mix != MixKind::Reserves {
                return Err("--lines applies to --scenario max --mix reserves".into());
            }
            if !service_only {
                return Err("--lines sends multi-line orders (POST /api/orders/{orderId}/reserve), which only the \
                            service answers: use --targets service and/or service-file"
                    .into());
            }
            if self.catalogue < self.lines as u64 {
                return Err(format!("--lines {} needs a catalogue of at least that many SKUs", self.lines));
            }
        }
        if self.target_url.is_some() && self.targets != [TargetKind::Service] {
            return Err("--target-url measures one running service: use it with --targets service".into());
        }
        if self.stop_when_target_lost && self.target_url.is_none() {
            return Err(
                "--stop-when-target-lost applies to a service started elsewhere: use it with --target-url".into()
            );
        }
        if self.ledger.is_some() && self.targets.len() != 1 {
            return Err("--ledger records one target's writes: name one target".into());
        }
        if self.read_flood_connections > CONNECTIONS_MAX {
            return Err(format!("--read-flood-connections must be at most {CONNECTIONS_MAX}"));
        }
        if self.read_flood_connections > 0 && self.scenario != Scenario::Max {
            return Err("--read-flood-connections applies to the closed-loop scenario max".into());
        }
        if (self.jwt_tenant.is_some() || self.jwt_kid.is_some())
            && self.jwt_hs256_secret_file.is_none()
            && self.jwt_es256_key_file.is_none()
        {
            return Err("--jwt-tenant and --jwt-kid need --jwt-hs256-secret-file or --jwt-es256-key-file".into());
        }
        if self.adapter_pool == Some(0) {
            return Err("--adapter-pool must be at least 1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<RunArgs, String> {
        let mut all = vec!["inventory-bench", "run"];
        all.extend_from_slice(args);
        let cli = Cli::try_parse_from(all).map_err(|e| e.to_string())?;
        let Commands::Run(run) = cli.command else { unreachable!() };
        let mut run = *run;
        run.resolve()?;
        Ok(run)
    }

    #[test]
    fn good_input_parses() {
        let run = parse(&["--scenario", "peak", "--targets", "service,postgres", "--duration", "2m"]).unwrap();
        assert_eq!(run.targets, vec![TargetKind::Service, TargetKind::Postgres]);
        assert_eq!(run.duration, Duration::from_secs(120));
    }

    #[test]
    fn bad_input_gets_a_clear_error() {
        assert!(parse(&["--scenario", "nope"]).unwrap_err().contains("invalid value"));
        assert!(parse(&["--scenario", "peak", "--duration", "0s"]).unwrap_err().contains("longer than zero"));
        assert!(parse(&["--scenario", "peak", "--catalogue", "60000000"]).unwrap_err().contains("--catalogue"));
        assert!(parse(&["--scenario", "max", "--rate", "10"]).unwrap_err().contains("closed-loop"));
        assert!(parse(&["--scenario", "peak", "--hot-share", "2"]).unwrap_err().contains("--hot-share"));
        assert!(parse(&["--scenario", "peak", "--connections", "0"]).unwrap_err().contains("--connections"));
        assert!(parse(&["--scenario", "peak", "--targets", "postgres", "--target-url", "http://127.0.0.1:1"])
            .unwrap_err()
            .contains("--target-url"));
        assert!(parse(&["--scenario", "peak", "--stop-when-target-lost"]).unwrap_err().contains("--target-url"));
        assert!(parse(&["--scenario", "peak", "--read-flood-connections", "8"]).unwrap_err().contains("max"));
        assert!(parse(&["--scenario", "max", "--jwt-kid", "k"]).unwrap_err().contains("--jwt-hs256-secret-file"));
        assert!(parse(&["--scenario", "max", "--jwt-hs256-secret-file", "a", "--jwt-es256-key-file", "b"])
            .unwrap_err()
            .contains("cannot be used with"));
        assert_eq!(parse(&["--scenario", "max", "--read-flood-connections", "8"]).unwrap().read_flood_connections, 8);
        assert!(parse(&["--scenario", "peak", "--targets", "service,memory", "--ledger", "x"])
            .unwrap_err()
            .contains("--ledger"));
    }

    #[test]
    fn drop_runs_only_against_targets_with_sale_policies() {
        let run = parse(&["--scenario", "drop", "--targets", "service,service-file"]).unwrap();
        assert_eq!((run.buyers, run.max_per_buyer, run.bot_attempts), (100_000, 2, 4));
        for other in ["postgres", "redis-always", "redis-everysec", "memory", "service,memory"] {
            let e = parse(&["--scenario", "drop", "--targets", other]).unwrap_err();
            assert!(e.contains("only the service has"), "{other}: {e}");
        }
        assert!(parse(&["--scenario", "drop", "--jwt-hs256-secret-file", "f"]).unwrap_err().contains("operator"));
        assert!(parse(&["--scenario", "drop", "--buyers", "0"]).unwrap_err().contains("--buyers"));
        assert!(parse(&["--scenario", "drop", "--max-per-buyer", "0"]).unwrap_err().contains("--max-per-buyer"));
        assert!(parse(&["--scenario", "drop", "--bot-attempts", "0"]).unwrap_err().contains("--bot-attempts"));
    }

    #[test]
    fn multi_line_orders_are_a_variant_of_max_against_the_service() {
        let run = parse(&["--scenario", "max", "--mix", "reserves", "--lines", "3"]).unwrap();
        assert_eq!(run.lines, 3);
        assert_eq!(parse(&["--scenario", "max"]).unwrap().lines, 1);
        assert!(parse(&["--scenario", "max", "--lines", "3"]).unwrap_err().contains("--mix reserves"));
        assert!(parse(&["--scenario", "hot-only", "--mix", "reserves", "--lines", "3"])
            .unwrap_err()
            .contains("--scenario max"));
        assert!(parse(&["--scenario", "max", "--mix", "reserves", "--lines", "3", "--targets", "postgres"])
            .unwrap_err()
            .contains("only the"));
        assert!(parse(&["--scenario", "max", "--lines", "0"]).unwrap_err().contains("--lines"));
        assert!(parse(&["--scenario", "max", "--mix", "reserves", "--lines", "3", "--catalogue", "2"])
            .unwrap_err()
            .contains("catalogue"));
    }

    #[test]
    fn a_drill_run_parses() {
        let run = parse(&[
            "--scenario",
            "max",
            "--target-url",
            "http://127.0.0.1:1",
            "--ledger",
            "/tmp/acks.jsonl",
            "--stop-when-target-lost",
        ])
        .unwrap();
        assert!(run.stop_when_target_lost);
        assert_eq!(run.ledger.as_deref(), Some(std::path::Path::new("/tmp/acks.jsonl")));
    }

    #[test]
    fn shard_times_parse() {
        assert_eq!(parse_shard_times("0:10, 1:20").unwrap(), ShardTimes(vec![(0, 10), (1, 20)]));
        assert_eq!(parse_shard_times("").unwrap(), ShardTimes(vec![]));
        assert!(parse_shard_times("0=10").unwrap_err().contains("SHARD:MS"));
        assert!(parse_shard_times("a:10").unwrap_err().contains("shard number"));
        let cli = Cli::try_parse_from([
            "inventory-bench",
            "verify",
            "--target-url",
            "http://127.0.0.1:1",
            "--ledger",
            "acks.jsonl",
            "--applied-at-ms",
            "0:5,1:7",
        ])
        .unwrap();
        let Commands::Verify(v) = cli.command else { unreachable!() };
        assert_eq!(v.applied_at_ms, Some(ShardTimes(vec![(0, 5), (1, 7)])));
    }

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
