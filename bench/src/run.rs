//! One benchmark run: for each target in turn, start it, seed the
//! catalogue, run the measured phase, audit, stop; then write the report.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::acklog::AckLog;
use crate::audit::{audit, AuditReport};
use crate::auth::{Auth, AuthFiles};
use crate::cli::{MixKind, RunArgs};
use crate::loadgen::{self, LoadConfig, Progress};
use crate::report::{
    self, ColdFilters, ColdLookups, DropReport, HostInfo, OrderReport, ReadFlood, ResourceSample, RunReport,
    TargetReport,
};
use crate::stats::OpSummary;
use crate::target::{self, Running, StartOptions, TargetKind};
use crate::workload::{Burst, Catalogue, DropPlan, Mix, Mode, Op, Plan, Scenario};
use crate::{BenchError, Result};

/// How long a drop's holds outlive its measured phase: none may expire
/// before the audit has read them back, or its units would return to the
/// buyer's allowance and the per-buyer audit, which counts only the
/// harness's releases, would not hold.
const DROP_HOLD_MARGIN_SECS: u64 = 900;

/// The measured phase's plan for `args`.
pub fn plan(args: &RunArgs) -> Plan {
    let mode = match args.scenario.default_rate() {
        Some(default) => Mode::Open { rate: args.rate.unwrap_or(default) },
        None => Mode::Closed,
    };
    let burst = match (args.scenario, mode) {
        (Scenario::HotBurst, Mode::Open { rate }) => Some(Burst {
            start: args.duration / 3,
            end: args.duration * 2 / 3,
            rate: rate * (args.burst_factor - 1.0).max(f64::MIN_POSITIVE),
        }),
        _ => None,
    };
    let drop = (args.scenario == Scenario::Drop).then_some(DropPlan {
        buyers: args.buyers,
        max_per_buyer: args.max_per_buyer,
        bot_attempts: args.bot_attempts,
        bot_qty: 1,
        honest_qty: args.max_per_buyer,
    });
    let hold_ttl_secs = match drop {
        Some(_) => args.hold_ttl_secs.max(args.duration.as_secs() + DROP_HOLD_MARGIN_SECS),
        None => args.hold_ttl_secs,
    };
    Plan {
        scenario: args.scenario,
        mode,
        duration: args.duration,
        mix: match args.mix {
            MixKind::Orders if args.scenario == Scenario::Soak => Mix::SOAK,
            MixKind::Orders if args.scenario == Scenario::Drop => Mix::RESERVES,
            MixKind::Orders => Mix::ORDERS,
            MixKind::Reserves => Mix::RESERVES,
        },
        flash_only: matches!(args.scenario, Scenario::HotOnly | Scenario::Drop),
        burst,
        qty: args.qty,
        hold_ttl_secs,
        seed: args.seed,
        lines: args.lines,
        drop,
    }
}

/// The catalogue for `args` and `plan`, with SKU ids prefixed by `tag`.
pub fn catalogue(args: &RunArgs, plan: &Plan, tag: &str) -> Catalogue {
    let flash_stock = args.flash_stock.unwrap_or(match args.scenario {
        Scenario::HotOnly => (100_000.0 * args.duration.as_secs_f64()).max(1_000_000.0) as u64 * args.qty,
        Scenario::HotBurst => (plan.burst_demand() / 2).max(args.qty),
        Scenario::Drop => plan.drop.map_or(0, |d| d.default_stock()),
        _ => 0,
    });
    if plan.drop.is_some() {
        // The drop's one SKU and nothing else.
        return Catalogue {
            prefix: format!("b{tag}-"),
            skus: 0,
            hot: 0,
            hot_share: 0.0,
            stock: 0,
            hot_stock: 0,
            flash_stock,
        };
    }
    Catalogue {
        prefix: format!("b{tag}-"),
        skus: args.catalogue,
        hot: args.hot_skus,
        hot_share: args.hot_share,
        stock: args.stock,
        hot_stock: args.hot_stock,
        flash_stock,
    }
}

pub fn main(mut args: RunArgs) -> Result<RunReport> {
    args.resolve().map_err(BenchError::Config)?;
    // One thread drives every connection: on a machine the target shares,
    // that measured 11% less of the harness's CPU per request than a
    // two-worker runtime (bench/README.md). At the 15-20 us a request
    // measured here, one core sends 50k-65k requests a second, about twice
    // what the targets here answer.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(run(args))
}

/// The credentials of the run's requests, from the key files it names.
pub fn auth(args: &RunArgs) -> Result<Option<Arc<Auth>>> {
    let files = AuthFiles {
        hs256_secret: args.jwt_hs256_secret_file.as_deref(),
        es256_key: args.jwt_es256_key_file.as_deref(),
        tenant: args.jwt_tenant.as_deref(),
        kid: args.jwt_kid.as_deref(),
        signing_secret: args.signed_writes_secret_file.as_deref(),
    };
    Ok(Auth::load(&files).map_err(BenchError::Config)?.map(Arc::new))
}

pub async fn run(args: RunArgs) -> Result<RunReport> {
    let auth = auth(&args)?;
    let plan = plan(&args);
    let started = SystemTime::now();
    let nanos = started.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_nanos() as u64;
    let tag = format!("{:06x}", (nanos ^ ((std::process::id() as u64) << 20)) & 0xff_ffff);
    let catalogue = Arc::new(catalogue(&args, &plan, &tag));
    let out_dir = args.out_dir.join(format!("{}-{}", plan.scenario.name(), nanos / 1_000_000_000));
    std::fs::create_dir_all(&out_dir)?;
    let options = StartOptions {
        inventoryd: args.inventoryd.clone(),
        service_args: args.service_args.clone(),
        pg_url: args.pg_url.clone(),
        redis_url: args.redis_url.clone(),
        adapter_pool: 32,
        log_dir: out_dir.clone(),
    };
    let mut targets = Vec::new();
    for &kind in &args.targets {
        let mut options = options.clone();
        options.adapter_pool = args.adapter_pool.unwrap_or(match kind {
            TargetKind::Postgres => 32,
            _ => 4,
        });
        let report = measure(&args, &plan, catalogue.clone(), kind, &options, &tag, auth.as_ref()).await?;
        targets.push(report);
    }
    let report = RunReport {
        started_at: humantime::format_rfc3339_seconds(started).to_string(),
        host: HostInfo::detect(),
        scenario: plan.scenario,
        plan: plan.clone(),
        catalogue: (*catalogue).clone(),
        connections: args.connections,
        client_path: "every target through the same hyper HTTP/1.1 keep-alive client; the baselines are served by \
                      `inventory-bench adapter`, a hyper server in a separate process making one database round \
                      trip per request (a PL/pgSQL function or a Lua script)"
            .into(),
        comparison: report::compare(&targets),
        targets,
    };
    report::write(&report, &out_dir)?;
    print!("{}", report::table(&report));
    println!("report: {}", out_dir.display());
    Ok(report)
}

fn bar(hidden: bool, len: u64, prefix: String, template: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        Some(len),
        if hidden { ProgressDrawTarget::hidden() } else { ProgressDrawTarget::stderr() },
    );
    bar.set_style(ProgressStyle::with_template(template).expect("valid template").progress_chars("=> "));
    bar.set_prefix(prefix);
    bar
}

async fn measure(
    args: &RunArgs,
    plan: &Plan,
    catalogue: Arc<Catalogue>,
    kind: TargetKind,
    options: &StartOptions,
    tag: &str,
    auth: Option<&Arc<Auth>>,
) -> Result<TargetReport> {
    let name = kind.name();
    let running = match &args.target_url {
        Some(url) => Running::external(kind, target::parse_url(url)?),
        None => Running::start(kind, options)?,
    };
    running.wait_ready().await?;
    if plan.lines > 1 {
        target::probe_orders(running.addr, &catalogue.prefix, args.timeout, auth).await?;
    }

    let seeding = bar(
        args.no_progress,
        catalogue.skus + 1,
        format!("{name}: seeding"),
        "{prefix:>24} [{bar:30}] {pos}/{len} SKUs {elapsed}",
    );
    let t0 = Instant::now();
    let receives = target::seed(
        running.addr,
        kind.is_adapter(),
        catalogue.clone(),
        args.connections,
        args.timeout,
        Some(seeding.clone()),
        auth,
    )
    .await?;
    seeding.finish_and_clear();
    let seed_s = t0.elapsed().as_secs_f64();
    eprintln!("{name}: seeded {} SKUs in {seed_s:.1} s ({receives} receive requests)", catalogue.skus);
    if let Some(drop) = plan.drop {
        let sku_id = catalogue.sku_id(catalogue.flash());
        target::set_buyer_limit(running.addr, &sku_id, drop.max_per_buyer, args.timeout, auth).await?;
        eprintln!(
            "{name}: {sku_id}: {} units, at most {} per buyer, for {} buyers",
            catalogue.flash_stock, drop.max_per_buyer, drop.buyers
        );
    }

    let progress = Arc::new(Progress::default());
    let running_bar = bar(
        args.no_progress,
        plan.duration.as_secs().max(1),
        format!("{name}: {}", plan.scenario.name()),
        "{prefix:>24} [{bar:30}] {pos}/{len} s {msg}",
    );
    let ticker = {
        let (progress, bar) = (progress.clone(), running_bar.clone());
        tokio::spawn(async move {
            let start = Instant::now();
            let mut last = (0, start);
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let ok = progress.ok.load(std::sync::atomic::Ordering::Relaxed);
                let errors = progress.errors.load(std::sync::atomic::Ordering::Relaxed);
                let now = Instant::now();
                let rate = (ok - last.0) as f64 / (now - last.1).as_secs_f64();
                last = (ok, now);
                bar.set_position(start.elapsed().as_secs());
                bar.set_message(format!("{rate:>8.0} ok/s  {errors} errors"));
            }
        })
    };
    let sampler = (plan.scenario == Scenario::Soak).then(|| sample_resources(&running, &progress, args.sample_every));
    let acks = args.ledger.as_deref().map(AckLog::create).transpose()?.map(Arc::new);
    let cpu_before = process_cpu();
    let target_cpu_before = running.cpu();
    let load = loadgen::run(
        LoadConfig {
            addr: running.addr,
            connections: args.connections,
            request_timeout: args.timeout,
            plan: plan.clone(),
            catalogue: catalogue.clone(),
            run_tag: format!("{tag}{}", &name[..1]),
            audit_holds_max: args.audit_holds,
            acks: acks.clone(),
            stop_when_lost: args.stop_when_target_lost,
            read_flood: args.read_flood_connections,
            auth: auth.cloned(),
        },
        progress,
    )
    .await;
    if let (Some(acks), Some(path)) = (&acks, &args.ledger) {
        acks.finish()?;
        eprintln!("{name}: acknowledged writes in {}", path.display());
    }
    let loadgen_cpu = process_cpu().saturating_sub(cpu_before);
    let target_cpu = running.cpu().zip(target_cpu_before).map(|(after, before)| after.saturating_sub(before));
    ticker.abort();
    running_bar.finish_and_clear();
    let resources = match sampler {
        Some((stop, task)) => {
            let _ = stop.send(());
            task.await.unwrap_or_default()
        }
        None => Vec::new(),
    };

    let lost = load.target_lost_after;
    // Read before the audit, whose reads of old holds are not the run's.
    let (cold_lookups, cold_filters) = match plan.scenario {
        Scenario::Soak if lost.is_none() => cold_tier(running.addr, args.timeout).await,
        _ => (None, None),
    };
    let audit = match lost {
        Some(after) => {
            eprintln!("{name}: the target went away {:.1} s into the run; nothing to audit", after.as_secs_f64());
            AuditReport::default()
        }
        None => {
            eprintln!("{name}: auditing {} SKUs and {} holds", load.ledger.skus.len(), load.ledger.holds.len());
            let buyer_limit = plan.drop.map(|d| d.max_per_buyer);
            audit(running.addr, args.connections, args.timeout, &catalogue, &load.ledger, buyer_limit, auth).await?
        }
    };
    if let Err(e) = running.stop() {
        // The measurement stands; say what went wrong on the way out.
        eprintln!("{name}: warning: {e} (see its log under {})", options.log_dir.display());
    }

    let seconds = load.elapsed.as_secs_f64();
    let mut ops = BTreeMap::new();
    for op in Op::ALL {
        let stats = &load.stats.ops[op.index()];
        if stats.count() > 0 {
            ops.insert(op.name().to_string(), OpSummary::of(stats, seconds));
        }
    }
    let total = OpSummary::of(&load.stats.total(), seconds);
    let attempted = total.count + load.unsent;
    let per_request = |cpu: Duration| cpu.as_secs_f64() * 1e6 / total.count.max(1) as f64;
    let loadgen_cpu_us_per_request = per_request(loadgen_cpu);
    let target_cpu_us_per_request = target_cpu.map(per_request);
    let error_rate = if attempted > 0 { (total.errors + load.unsent) as f64 / attempted as f64 } else { 0.0 };
    let drop = plan.drop.map(|d| DropReport::of(&d, catalogue.flash_stock, &load.ledger, ops.get("reserve"), seconds));
    let orders = ops.get("order").map(|o| OrderReport::of(plan.lines, o, &load.ledger));
    Ok(TargetReport {
        target: kind,
        label: kind.label().into(),
        offered_rate: match plan.mode {
            Mode::Open { rate } => Some(rate),
            Mode::Closed => None,
        },
        seconds,
        seed_seconds: seed_s,
        ops,
        total,
        unsent: load.unsent,
        error_rate,
        timeline: load.timeline.points(),
        audit,
        loadgen_cpu_us_per_request,
        target_cpu_us_per_request,
        resources,
        cold_lookups,
        cold_filters,
        target_lost_after_s: lost.map(|d| d.as_secs_f64()),
        read_flood: load.flood.map(|f| ReadFlood::of(f, seconds)),
        drop,
        orders,
    })
}

/// The target's cold-tier read times, from its metrics.
async fn cold_tier(addr: std::net::SocketAddr, timeout: Duration) -> (Option<ColdLookups>, Option<ColdFilters>) {
    let Ok(reply) = crate::client::Conn::new(addr, timeout).get("/metrics").await else {
        return (None, None);
    };
    let text = String::from_utf8_lossy(&reply.body);
    (ColdLookups::parse(&text), ColdFilters::parse(&text))
}

/// Samples the target's resident memory and disk use every `every` until
/// told to stop, and once more then.
fn sample_resources(
    running: &Running,
    progress: &Arc<Progress>,
    every: Duration,
) -> (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<Vec<ResourceSample>>) {
    let (stop, mut stopped) = tokio::sync::oneshot::channel();
    let (rss, disk) = (running.rss_probe(), running.disk_probe());
    let progress = progress.clone();
    let task = tokio::spawn(async move {
        let start = Instant::now();
        let mut samples = Vec::new();
        loop {
            let done = tokio::select! {
                _ = tokio::time::sleep(every) => false,
                _ = &mut stopped => true,
            };
            let disk = disk.clone();
            let disk_bytes = tokio::task::spawn_blocking(move || disk()).await.unwrap_or(0);
            samples.push(ResourceSample {
                t_s: start.elapsed().as_secs_f64(),
                rss_bytes: rss(),
                disk_bytes,
                reserves_ok: progress.reserves_ok.load(std::sync::atomic::Ordering::Relaxed),
            });
            if done {
                return samples;
            }
        }
    });
    (stop, task)
}

/// CPU time (user + system) this process has used so far.
fn process_cpu() -> Duration {
    crate::stats::rusage(libc::RUSAGE_SELF).0
}
