//! The report of a run: a table on the terminal, `report.json`, and one SVG
//! per target (latency percentiles and throughput per second) plus one
//! comparing the targets.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;
use serde::Serialize;

use crate::audit::{held_units, AuditReport};
use crate::loadgen::Ledger;
use crate::stats::{OpSummary, TimelinePoint};
use crate::target::TargetKind;
use crate::workload::{Catalogue, DropPlan, Mode, Plan, Scenario};
use crate::{BenchError, Result};

#[derive(Clone, Debug, Serialize)]
pub struct HostInfo {
    pub cpus: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub memory_gib: f64,
}

impl HostInfo {
    pub fn detect() -> HostInfo {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name").and_then(|v| v.split_once(':')).map(|(_, v)| v.trim()))
            .unwrap_or("unknown")
            .to_string();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kib: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        HostInfo {
            cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            cpu_model,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string(),
            memory_gib: (mem_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct TargetReport {
    pub target: TargetKind,
    pub label: String,
    /// Offered rate of an open-loop run (requests per second).
    pub offered_rate: Option<f64>,
    /// Wall time of the measured phase.
    pub seconds: f64,
    pub seed_seconds: f64,
    pub ops: BTreeMap<String, OpSummary>,
    pub total: OpSummary,
    /// Open-loop requests never sent because the target fell behind.
    pub unsent: u64,
    /// (errors + unsent) / (requests + unsent). Rejections such as
    /// `INSUFFICIENT_STOCK` are answers, not errors.
    pub error_rate: f64,
    pub timeline: Vec<TimelinePoint>,
    pub audit: AuditReport,
    /// CPU time (user + system) of the load generator's process during the
    /// measured phase, per request sent: the harness's own share of a
    /// machine it shares with the target.
    pub loadgen_cpu_us_per_request: f64,
    /// CPU time of the process the harness started for the target (the
    /// service, or a baseline's adapter, without its database server)
    /// during the measured phase, per request; `None` with `--target-url`.
    pub target_cpu_us_per_request: Option<f64>,
    /// The target's resident memory and disk use over the measured phase
    /// (soak only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<ResourceSample>,
    /// The service's reads of its cold tier during the measured phase
    /// (soak only, when it made any).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cold_lookups: Option<ColdLookups>,
    /// Its filters of what moved to the cold tier, at the end (soak only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cold_filters: Option<ColdFilters>,
    /// Seconds into the measured phase at which the target stopped
    /// accepting connections (`--stop-when-target-lost`); such a run is
    /// not audited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_lost_after_s: Option<f64>,
    /// The concurrent read flood (`--read-flood-connections`), if any. Its
    /// requests are not in `ops` or `total`; the CPU per request divides
    /// by those alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_flood: Option<ReadFlood>,
    /// A drop: its buyers, rates and who got the stock (the per-buyer
    /// limit's audit is in `audit.buyers`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drop: Option<DropReport>,
    /// Multi-line orders (`--lines`): orders and lines per second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub orders: Option<OrderReport>,
}

/// What a drop's buyers got: units and buyers, by kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BuyersGot {
    pub buyers: u64,
    /// Of them, those granted at least one unit.
    pub buyers_with_units: u64,
    /// Units granted and not released.
    pub units: u64,
}

/// A drop's figures.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DropReport {
    pub buyers: u64,
    /// Buyers who had their turn before the phase ended.
    pub buyers_served: u64,
    pub max_per_buyer: u64,
    pub bot_attempts: u64,
    pub stock_units: u64,
    /// Units the buyers were after: the limit, per buyer.
    pub demand_units: u64,
    /// Reserves answered, granted or refused, per second of the phase (it
    /// ends when the last buyer is done).
    pub reserves_answered_per_s: f64,
    pub reserves_granted_per_s: f64,
    /// Latency of every reserve, granted or refused.
    pub reserve_p50_ms: f64,
    pub reserve_p99_ms: f64,
    /// When the first `INSUFFICIENT_STOCK` came back.
    pub sold_out_after_s: Option<f64>,
    pub honest: BuyersGot,
    pub bots: BuyersGot,
}

impl DropReport {
    pub fn of(plan: &DropPlan, stock: u64, ledger: &Ledger, reserve: Option<&OpSummary>, seconds: f64) -> DropReport {
        let mut honest = BuyersGot { buyers: plan.buyers - plan.bots(), ..BuyersGot::default() };
        let mut bots = BuyersGot { buyers: plan.bots(), ..BuyersGot::default() };
        for (&buyer, l) in &ledger.buyers {
            let got = if DropPlan::is_bot(buyer) { &mut bots } else { &mut honest };
            let units = held_units(l);
            got.units += units;
            got.buyers_with_units += u64::from(units > 0);
        }
        let seconds = seconds.max(f64::MIN_POSITIVE);
        let (answered, granted) = reserve.map_or((0, 0), |r| (r.ok + r.rejected, r.ok));
        DropReport {
            buyers: plan.buyers,
            buyers_served: ledger.buyers_served,
            max_per_buyer: plan.max_per_buyer,
            bot_attempts: plan.bot_attempts,
            stock_units: stock,
            demand_units: plan.demand_units(),
            reserves_answered_per_s: answered as f64 / seconds,
            reserves_granted_per_s: granted as f64 / seconds,
            reserve_p50_ms: reserve.map_or(0.0, |r| r.p50_ms),
            reserve_p99_ms: reserve.map_or(0.0, |r| r.p99_ms),
            sold_out_after_s: ledger.sold_out_after.map(|d| d.as_secs_f64()),
            honest,
            bots,
        }
    }
}

/// Multi-line orders: each one request of `lines` lines.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OrderReport {
    pub lines: usize,
    pub orders_ok: u64,
    pub orders_ok_per_s: f64,
    pub lines_ok_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    /// Orders refused (`ORDER_NOT_RESERVABLE` and any other 4xx).
    pub refused: u64,
    /// Lines of the `ORDER_NOT_RESERVABLE` refusals, by each line's code.
    pub refused_lines: BTreeMap<String, u64>,
}

impl OrderReport {
    pub fn of(lines: usize, order: &OpSummary, ledger: &Ledger) -> OrderReport {
        OrderReport {
            lines,
            orders_ok: order.ok,
            orders_ok_per_s: order.ok_per_s,
            lines_ok_per_s: order.ok_per_s * lines as f64,
            p50_ms: order.p50_ms,
            p99_ms: order.p99_ms,
            p999_ms: order.p999_ms,
            refused: order.rejected,
            refused_lines: ledger.refused_lines.clone(),
        }
    }
}

/// What the concurrent read flood got: stock queries answered 200 and
/// refused 429 `RATE_LIMITED`, counted apart.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReadFlood {
    pub connections: usize,
    pub ok: u64,
    pub rate_limited: u64,
    /// Other answers and requests that got none.
    pub other: u64,
    pub ok_per_s: f64,
    pub rate_limited_per_s: f64,
}

impl ReadFlood {
    pub fn of(counts: crate::loadgen::FloodCounts, seconds: f64) -> ReadFlood {
        let per_s = |n: u64| n as f64 / seconds.max(f64::MIN_POSITIVE);
        ReadFlood {
            connections: counts.connections,
            ok: counts.ok,
            rate_limited: counts.rate_limited,
            other: counts.other,
            ok_per_s: per_s(counts.ok),
            rate_limited_per_s: per_s(counts.rate_limited),
        }
    }
}

/// The service's `inventory_cold_lookup_duration_seconds` histogram: how
/// long its cold-tier reads took (the store's read, not the queue before).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ColdLookups {
    pub count: u64,
    /// Upper bounds of the buckets holding the median and the 99th
    /// percentile, in ms.
    pub p50_le_ms: f64,
    pub p99_le_ms: f64,
}

impl ColdLookups {
    const NAME: &'static str = "inventory_cold_lookup_duration_seconds";

    /// Reads the histogram from a Prometheus text exposition; `None`
    /// without it or without a lookup.
    pub fn parse(exposition: &str) -> Option<ColdLookups> {
        let mut buckets = Vec::new();
        for line in exposition.lines() {
            let Some(rest) = line.strip_prefix(Self::NAME).and_then(|r| r.strip_prefix("_bucket{le=\"")) else {
                continue;
            };
            let (le, n) = rest.split_once("\"} ")?;
            buckets.push((le.parse::<f64>().ok()?, n.trim().parse::<f64>().ok()? as u64));
        }
        let count = buckets.iter().map(|b| b.1).max().filter(|&n| n > 0)?;
        let quantile = |q: f64| {
            let rank = (q * count as f64).ceil() as u64;
            buckets.iter().find(|b| b.1 >= rank).map_or(f64::INFINITY, |b| b.0 * 1e3)
        };
        Some(ColdLookups { count, p50_le_ms: quantile(0.5), p99_le_ms: quantile(0.99) })
    }
}

/// The service's filters of what moved to the cold tier at the end of a
/// run: keys noted and their memory, summed over shards
/// (`inventory_cold_filter_keys`, `inventory_cold_filter_bytes`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ColdFilters {
    pub keys: u64,
    pub bytes: u64,
}

impl ColdFilters {
    /// Reads the gauges from a Prometheus text exposition; `None` while no
    /// key has been noted.
    pub fn parse(exposition: &str) -> Option<ColdFilters> {
        let sum = |name: &str| -> u64 {
            exposition
                .lines()
                .filter_map(|line| line.strip_prefix(name)?.strip_prefix('{')?.split_once("} "))
                .filter_map(|(_, v)| v.trim().parse::<u64>().ok())
                .sum()
        };
        let filters =
            ColdFilters { keys: sum("inventory_cold_filter_keys"), bytes: sum("inventory_cold_filter_bytes") };
        (filters.keys > 0).then_some(filters)
    }
}

/// One sample of what the target holds, `t_s` seconds into the measured
/// phase.
#[derive(Clone, Debug, Serialize)]
pub struct ResourceSample {
    pub t_s: f64,
    pub rss_bytes: u64,
    pub disk_bytes: u64,
    /// Reserves answered OK so far.
    pub reserves_ok: u64,
}

impl TargetReport {
    /// Resident memory growth per reserve over the second half of the run:
    /// what each hold costs memory once the hot windows are full (run
    /// longer than twice the longest window). Measured between the lowest
    /// samples of the third and the last quarter, because a snapshot holds
    /// a second copy of the state for seconds and a sample taken then is
    /// not what the service keeps. `None` with fewer than four samples.
    pub fn rss_bytes_per_reserve(&self) -> Option<f64> {
        let n = self.resources.len();
        if n < 4 {
            return None;
        }
        let lowest = |samples: &[ResourceSample]| samples.iter().min_by_key(|r| r.rss_bytes).cloned();
        let from = lowest(&self.resources[n / 2..3 * n / 4])?;
        let to = lowest(&self.resources[3 * n / 4..])?;
        let reserves = to.reserves_ok as f64 - from.reserves_ok as f64;
        (reserves != 0.0).then(|| (to.rss_bytes as f64 - from.rss_bytes as f64) / reserves)
    }

    /// Disk use per reserve over the whole run.
    pub fn disk_bytes_per_reserve(&self) -> Option<f64> {
        let (first, last) = (self.resources.first()?, self.resources.last()?);
        let reserves = last.reserves_ok.checked_sub(first.reserves_ok).filter(|&n| n > 0)?;
        Some((last.disk_bytes as f64 - first.disk_bytes as f64) / reserves as f64)
    }
}

impl TargetReport {
    /// The reserves, or with `--lines` the orders.
    pub fn reserve(&self) -> Option<&OpSummary> {
        self.ops.get("reserve").or_else(|| self.ops.get("order"))
    }
}

/// A baseline next to the service, measured in the same run.
#[derive(Clone, Debug, Serialize)]
pub struct Ratio {
    pub target: TargetKind,
    /// Service successful ops/s divided by this target's.
    pub service_throughput_ratio: f64,
    /// This target's reserve p99 divided by the service's.
    pub reserve_p99_ratio: Option<f64>,
    /// Whether this target beat the service on throughput or reserve p99.
    pub service_loses: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    pub started_at: String,
    pub host: HostInfo,
    pub scenario: Scenario,
    pub plan: Plan,
    pub catalogue: Catalogue,
    pub connections: usize,
    /// How the targets are driven (the same client path for all).
    pub client_path: String,
    pub targets: Vec<TargetReport>,
    pub comparison: Vec<Ratio>,
}

pub fn compare(targets: &[TargetReport]) -> Vec<Ratio> {
    let Some(service) = targets.iter().find(|t| t.target == TargetKind::Service) else { return Vec::new() };
    targets
        .iter()
        .filter(|t| t.target != TargetKind::Service)
        .map(|t| {
            let service_throughput_ratio = service.total.ok_per_s / t.total.ok_per_s.max(f64::MIN_POSITIVE);
            let reserve_p99_ratio = match (service.reserve(), t.reserve()) {
                (Some(s), Some(b)) if s.p99_ms > 0.0 => Some(b.p99_ms / s.p99_ms),
                _ => None,
            };
            // In open loop both may carry the offered rate: compare latency
            // then; in closed loop throughput decides.
            // Only a baseline can beat the service; another configuration
            // of it, or the reference that keeps nothing, is a measure.
            let service_loses = t.target.is_baseline()
                && (service_throughput_ratio < 0.98 || reserve_p99_ratio.is_some_and(|r| r < 1.0));
            Ratio { target: t.target, service_throughput_ratio, reserve_p99_ratio, service_loses }
        })
        .collect()
}

/// Writes `report.json` and the plots into `dir`.
pub fn write(report: &RunReport, dir: &Path) -> Result<()> {
    let json = serde_json::to_vec_pretty(report).map_err(|e| BenchError::Report(e.to_string()))?;
    std::fs::write(dir.join("report.json"), json)?;
    for t in &report.targets {
        if !t.resources.is_empty() {
            let path = dir.join(format!("{}-{}-resources.svg", report.scenario.name(), t.target.name()));
            plot_resources(t, &path).map_err(|e| std::io::Error::other(e.to_string()))?;
        }
        let path = dir.join(format!("{}-{}.svg", report.scenario.name(), t.target.name()));
        plot_target(report, t, &path).map_err(|e| BenchError::Report(format!("{}: {e}", path.display())))?;
    }
    if report.targets.len() > 1 {
        let path = dir.join(format!("{}-compare.svg", report.scenario.name()));
        plot_compare(report, &path).map_err(|e| BenchError::Report(format!("{}: {e}", path.display())))?;
    }
    Ok(())
}

/// A plotted line: legend, value of a point, colour.
type Series<T> = (&'static str, fn(&TimelinePoint) -> T, RGBColor);

type PlotResult = std::result::Result<(), Box<dyn std::error::Error>>;

fn latency_range(points: &[TimelinePoint]) -> std::ops::Range<f64> {
    let max = points.iter().map(|p| p.max_ms).fold(1.0, f64::max);
    let min = points.iter().map(|p| p.p50_ms).filter(|v| *v > 0.0).fold(max, f64::min);
    (min / 2.0).max(0.001)..max * 2.0
}

fn plot_target(report: &RunReport, t: &TargetReport, path: &Path) -> PlotResult {
    let root = SVGBackend::new(path, (1000, 720)).into_drawing_area();
    root.fill(&WHITE)?;
    let (upper, lower) = root.split_vertically(400);
    let points = &t.timeline;
    let t_max = points.len().max(2) as f64;
    let title = format!("{} / {}: latency per second (ms, log scale)", report.scenario.name(), t.target.name());
    let mut chart = ChartBuilder::on(&upper)
        .caption(title, ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..t_max, latency_range(points).log_scale())?;
    chart.configure_mesh().x_desc("seconds").y_desc("ms").draw()?;
    let series: [Series<f64>; 4] = [
        ("p50", |p| p.p50_ms, BLUE),
        ("p99", |p| p.p99_ms, GREEN),
        ("p99.9", |p| p.p999_ms, MAGENTA),
        ("max", |p| p.max_ms, RED),
    ];
    for (name, f, color) in series {
        chart
            .draw_series(LineSeries::new(points.iter().filter(|p| f(p) > 0.0).map(|p| (p.t_s as f64, f(p))), color))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;

    let ok_max = points.iter().map(|p| p.ok_per_s.max(p.errors_per_s)).max().unwrap_or(1).max(1) as f64;
    let mut chart = ChartBuilder::on(&lower)
        .caption("throughput per second", ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..t_max, 0f64..ok_max * 1.1)?;
    chart.configure_mesh().x_desc("seconds").y_desc("per second").draw()?;
    let series: [Series<u64>; 3] = [
        ("ok", |p| p.ok_per_s, BLUE),
        ("reserves ok", |p| p.reserves_ok_per_s, GREEN),
        ("errors", |p| p.errors_per_s, RED),
    ];
    for (name, f, color) in series {
        chart
            .draw_series(LineSeries::new(points.iter().map(|p| (p.t_s as f64, f(p) as f64)), color))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    root.present()?;
    Ok(())
}

/// Resident memory and disk use over a soak run.
fn plot_resources(t: &TargetReport, path: &Path) -> PlotResult {
    let root = SVGBackend::new(path, (1000, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let t_max = t.resources.last().map_or(1.0, |r| r.t_s).max(1.0);
    let mb = |b: u64| b as f64 / 1e6;
    let y_max = t.resources.iter().map(|r| mb(r.rss_bytes).max(mb(r.disk_bytes))).fold(1.0, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{}: resident memory and disk use (MB)", t.target.name()), ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..t_max, 0f64..y_max * 1.1)?;
    chart.configure_mesh().x_desc("seconds").y_desc("MB").draw()?;
    type Resource = (&'static str, fn(&ResourceSample) -> u64, RGBColor);
    let series: [Resource; 2] = [("resident memory", |r| r.rss_bytes, BLUE), ("disk", |r| r.disk_bytes, RED)];
    for (name, f, color) in series {
        chart
            .draw_series(LineSeries::new(t.resources.iter().map(|r| (r.t_s, mb(f(r)))), color))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    root.present()?;
    Ok(())
}

fn plot_compare(report: &RunReport, path: &Path) -> PlotResult {
    let root = SVGBackend::new(path, (1000, 720)).into_drawing_area();
    root.fill(&WHITE)?;
    let (upper, lower) = root.split_vertically(400);
    let all: Vec<&TimelinePoint> = report.targets.iter().flat_map(|t| &t.timeline).collect();
    let t_max = report.targets.iter().map(|t| t.timeline.len()).max().unwrap_or(2).max(2) as f64;
    let p99_max = all.iter().map(|p| p.p99_ms).fold(1.0, f64::max);
    let p99_min = all.iter().map(|p| p.p99_ms).filter(|v| *v > 0.0).fold(p99_max, f64::min);
    let colors = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];
    let mut chart = ChartBuilder::on(&upper)
        .caption(format!("{}: p99 latency per second (ms, log scale)", report.scenario.name()), ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..t_max, ((p99_min / 2.0).max(0.001)..p99_max * 2.0).log_scale())?;
    chart.configure_mesh().x_desc("seconds").y_desc("ms").draw()?;
    for (t, color) in report.targets.iter().zip(colors.iter().cycle()) {
        let color = *color;
        chart
            .draw_series(LineSeries::new(
                t.timeline.iter().filter(|p| p.p99_ms > 0.0).map(|p| (p.t_s as f64, p.p99_ms)),
                color,
            ))?
            .label(t.target.name())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    let ok_max = all.iter().map(|p| p.ok_per_s).max().unwrap_or(1).max(1) as f64;
    let mut chart = ChartBuilder::on(&lower)
        .caption("successful requests per second", ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..t_max, 0f64..ok_max * 1.1)?;
    chart.configure_mesh().x_desc("seconds").y_desc("per second").draw()?;
    for (t, color) in report.targets.iter().zip(colors.iter().cycle()) {
        let color = *color;
        chart
            .draw_series(LineSeries::new(t.timeline.iter().map(|p| (p.t_s as f64, p.ok_per_s as f64)), color))?
            .label(t.target.name())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    root.present()?;
    Ok(())
}

/// The terminal table.
pub fn table(report: &RunReport) -> String {
    let mut s = String::new();
    let mode = match report.plan.mode {
        Mode::Open { rate } => format!("open loop at {rate:.0} req/s"),
        Mode::Closed => "closed loop".to_string(),
    };
    let c = &report.catalogue;
    if report.plan.drop.is_some() {
        let _ = writeln!(
            s,
            "\n{} ({mode}, {} connections, at most {:.0} s; one SKU of {} units under a limit per buyer; {} cpus)",
            report.scenario.name(),
            report.connections,
            report.plan.duration.as_secs_f64(),
            c.flash_stock,
            report.host.cpus,
        );
    } else if report.plan.lines > 1 {
        let _ = writeln!(
            s,
            "\n{} ({mode}, {} connections, {:.0} s; {} SKUs, {} hot taking {:.0}%; orders of {} lines of {} units; {} \
             cpus)",
            report.scenario.name(),
            report.connections,
            report.plan.duration.as_secs_f64(),
            c.skus,
            c.hot,
            c.hot_share * 100.0,
            report.plan.lines,
            report.plan.qty,
            report.host.cpus,
        );
    } else {
        let _ = writeln!(
            s,
            "\n{} ({mode}, {} connections, {:.0} s; {} SKUs, {} hot taking {:.0}%; mix reserve/confirm/release/query \
             {}/{}/{}/{}; {} cpus)",
            report.scenario.name(),
            report.connections,
            report.plan.duration.as_secs_f64(),
            c.skus,
            c.hot,
            c.hot_share * 100.0,
            report.plan.mix.reserve,
            report.plan.mix.confirm,
            report.plan.mix.release,
            report.plan.mix.query,
            report.host.cpus,
        );
    }
    let _ = writeln!(
        s,
        "{:<15} {:>9} {:>9} | {:>7} {:>7} {:>7} {:>7} {:>8} | {:>7} | {:>7} {:>8} {:>5} | {:>8} {:>6}",
        "target",
        "ok/s",
        "resv ok/s",
        "p50",
        "p95",
        "p99",
        "p99.9",
        "max ms",
        "all p99",
        "errors",
        "oversold",
        "lost",
        "svc x",
        "p99 x",
    );
    for t in &report.targets {
        let r = t.reserve();
        let f = |v: Option<f64>| v.map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into());
        let ratio = report.comparison.iter().find(|x| x.target == t.target);
        let _ = writeln!(
            s,
            "{:<15} {:>9.0} {:>9.0} | {:>7} {:>7} {:>7} {:>7} {:>8} | {:>7.2} | {:>6.2}% {:>8} {:>5} | {:>8} {:>6}",
            t.target.name(),
            t.total.ok_per_s,
            r.map(|r| r.ok_per_s).unwrap_or(0.0),
            f(r.map(|r| r.p50_ms)),
            f(r.map(|r| r.p95_ms)),
            f(r.map(|r| r.p99_ms)),
            f(r.map(|r| r.p999_ms)),
            f(r.map(|r| r.max_ms)),
            t.total.p99_ms,
            t.error_rate * 100.0,
            t.audit.oversold_units,
            t.audit.lost_acked_holds,
            ratio.map(|x| format!("{:.2}", x.service_throughput_ratio)).unwrap_or_else(|| "-".into()),
            ratio.and_then(|x| x.reserve_p99_ratio).map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into()),
        );
    }
    let _ = writeln!(
        s,
        "latencies are of reserves, in ms, from the intended send time in open loop; \"svc x\" = service ok/s \
                          / target ok/s; \"p99 x\" = target reserve p99 / service reserve p99"
    );
    for t in &report.targets {
        let _ = writeln!(s, "{}: {}", t.target.name(), t.label);
        for (op, o) in &t.ops {
            let codes: Vec<String> = o.codes.iter().map(|(c, n)| format!("{c} {n}")).collect();
            let _ = writeln!(
                s,
                "  {op:<8} {:>9} sent, {:>9.0} ok/s, p50 {:.2} p99 {:.2} p99.9 {:.2} max {:.2} ms; {}",
                o.count,
                o.ok_per_s,
                o.p50_ms,
                o.p99_ms,
                o.p999_ms,
                o.max_ms,
                codes.join(", ")
            );
        }
        if t.unsent > 0 {
            let _ =
                writeln!(s, "  {} requests never sent: the target fell more than 5 s behind the schedule", t.unsent);
        }
        if !t.resources.is_empty() {
            let _ = writeln!(s, "  {:>8} {:>10} {:>10} {:>12}", "seconds", "RSS MB", "disk MB", "reserves ok");
            for r in &t.resources {
                let mb = |b: u64| b as f64 / 1e6;
                let _ = writeln!(
                    s,
                    "  {:>8.0} {:>10.1} {:>10.1} {:>12}",
                    r.t_s,
                    mb(r.rss_bytes),
                    mb(r.disk_bytes),
                    r.reserves_ok
                );
            }
            let per = |v: Option<f64>| v.map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".into());
            let _ = writeln!(
                s,
                "  per reserve: RSS growth over the second half (lowest samples) {} bytes, disk {} bytes",
                per(t.rss_bytes_per_reserve()),
                per(t.disk_bytes_per_reserve())
            );
        }
        if let Some(c) = &t.cold_lookups {
            let _ = writeln!(
                s,
                "  cold-tier reads: {}, p50 <= {} ms, p99 <= {} ms (histogram buckets)",
                c.count, c.p50_le_ms, c.p99_le_ms
            );
        }
        if let Some(f) = &t.cold_filters {
            let _ = writeln!(
                s,
                "  cold-tier filters: {} keys in {:.1} MB, {:.2} bytes a key (hold sequences, order ids, idempotency keys)",
                f.keys,
                f.bytes as f64 / 1e6,
                f.bytes as f64 / f.keys as f64
            );
        }
        let _ = match t.target_cpu_us_per_request {
            Some(target) => writeln!(
                s,
                "  CPU per request: load generator {:.1} us, {} {target:.1} us",
                t.loadgen_cpu_us_per_request,
                if t.target.is_adapter() { "adapter (not its database server)" } else { "inventoryd" },
            ),
            None => writeln!(s, "  CPU per request: load generator {:.1} us", t.loadgen_cpu_us_per_request),
        };
        if let Some(f) = &t.read_flood {
            let _ = writeln!(
                s,
                "  read flood: {} connections, {:.0} ok/s (200), {:.0} rate-limited/s (429), {} other answers or \
                 failures",
                f.connections, f.ok_per_s, f.rate_limited_per_s, f.other
            );
        }
        if let Some(d) = &t.drop {
            let _ = writeln!(
                s,
                "  drop: {} buyers ({} served), {} bots firing {} reserves of 1 unit, the others one of {}; limit {} \
                 per buyer; stock {} units for a demand of {}",
                d.buyers,
                d.buyers_served,
                d.bots.buyers,
                d.bot_attempts,
                d.max_per_buyer,
                d.max_per_buyer,
                d.stock_units,
                d.demand_units
            );
            let _ = writeln!(
                s,
                "  drop: reserves answered {:.0}/s, granted {:.0}/s, p50 {:.2} ms, p99 {:.2} ms; sold out after {}",
                d.reserves_answered_per_s,
                d.reserves_granted_per_s,
                d.reserve_p50_ms,
                d.reserve_p99_ms,
                d.sold_out_after_s.map(|s| format!("{s:.2} s")).unwrap_or_else(|| "- (never)".into())
            );
            let _ = writeln!(
                s,
                "  drop: honest buyers got {} units ({} of {} buyers), bots {} units ({} of {})",
                d.honest.units,
                d.honest.buyers_with_units,
                d.honest.buyers,
                d.bots.units,
                d.bots.buyers_with_units,
                d.bots.buyers
            );
        }
        if let Some(b) = &t.audit.buyers {
            let _ = writeln!(
                s,
                "  per buyer (acknowledged units, less released): most {} units, {} buyers over the limit of {} -> {}",
                b.max_units,
                b.buyers_over_limit,
                b.limit,
                if b.buyers_over_limit == 0 { "clean" } else { "NOT CLEAN" }
            );
        }
        if let Some(o) = &t.orders {
            let refused: Vec<String> = o.refused_lines.iter().map(|(c, n)| format!("{c} {n}")).collect();
            let _ = writeln!(
                s,
                "  orders of {} lines: {:.0} orders/s, {:.0} lines/s, p50 {:.2} p99 {:.2} p99.9 {:.2} ms; {} refused{}",
                o.lines,
                o.orders_ok_per_s,
                o.lines_ok_per_s,
                o.p50_ms,
                o.p99_ms,
                o.p999_ms,
                o.refused,
                if refused.is_empty() { String::new() } else { format!(" (lines: {})", refused.join(", ")) }
            );
            let a = &t.audit;
            let _ = writeln!(
                s,
                "  orders audit: {}/{} acknowledged orders read back, {} with a line not held; {} refused orders \
                 read back, {} holding something",
                a.orders_checked,
                a.orders_acked,
                a.lost_acked_orders,
                a.refused_orders_checked,
                a.refused_orders_holding
            );
        }
        if let Some(after) = t.target_lost_after_s {
            let _ = writeln!(s, "  target lost {after:.1} s into the run: not audited");
            continue;
        }
        let a = &t.audit;
        let _ = writeln!(
            s,
            "  audit: {} SKUs, {}/{} acknowledged holds read back; oversold units {}, lost acknowledged holds {}, \
             negative counters {}, unbalanced SKUs {}, lost confirmed units {}, unacknowledged sold units {}, \
             contradictions {} -> {}",
            a.skus_checked,
            a.holds_checked,
            a.holds_acked,
            a.oversold_units,
            a.lost_acked_holds,
            a.negative_counters,
            a.unbalanced_skus,
            a.lost_confirmed_units,
            a.unacknowledged_sold_units,
            a.contradictions,
            if a.clean() { "clean" } else { "NOT CLEAN" }
        );
        for d in &a.details {
            let _ = writeln!(s, "    {d}");
        }
    }
    for r in &report.comparison {
        if r.service_loses {
            let _ = writeln!(s, "the service loses to {} in this run", r.target.name());
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_growth_per_reserve_is_taken_between_the_lowest_samples() {
        let mut t = measured(TargetKind::Service, 1.0, 1.0);
        let sample = |i: u64, mb: u64| ResourceSample {
            t_s: i as f64,
            rss_bytes: mb << 20,
            disk_bytes: 0,
            reserves_ok: i * 1_000_000,
        };
        // Flat at 100 MB, a snapshot's peak at the end.
        t.resources = (0..8).map(|i| sample(i, if i == 7 { 180 } else { 100 })).collect();
        assert_eq!(t.rss_bytes_per_reserve(), Some(0.0));
        // Growing 1 MiB per million reserves.
        t.resources = (0..8).map(|i| sample(i, 100 + i)).collect();
        assert_eq!(t.rss_bytes_per_reserve(), Some((2u64 << 20) as f64 / 2e6));
        t.resources.truncate(3);
        assert_eq!(t.rss_bytes_per_reserve(), None);
    }

    #[test]
    fn cold_lookups_are_read_from_the_histogram_buckets() {
        let exposition = "# HELP inventory_cold_lookup_duration_seconds Time.\n\
            # TYPE inventory_cold_lookup_duration_seconds histogram\n\
            inventory_cold_lookup_duration_seconds_sum 0.5\n\
            inventory_cold_lookup_duration_seconds_count 200\n\
            inventory_cold_lookup_duration_seconds_bucket{le=\"0.0001\"} 90\n\
            inventory_cold_lookup_duration_seconds_bucket{le=\"0.001\"} 150\n\
            inventory_cold_lookup_duration_seconds_bucket{le=\"0.005\"} 197\n\
            inventory_cold_lookup_duration_seconds_bucket{le=\"+Inf\"} 200\n\
            inventory_cold_lookups_total 7\n";
        let c = ColdLookups::parse(exposition).unwrap();
        assert_eq!(c, ColdLookups { count: 200, p50_le_ms: 1.0, p99_le_ms: f64::INFINITY });
        let c = ColdLookups::parse(&exposition.replace("} 197", "} 198")).unwrap();
        assert_eq!(c.p99_le_ms, 5.0);
        assert_eq!(ColdLookups::parse("inventory_cold_lookup_duration_seconds_bucket{le=\"+Inf\"} 0\n"), None);
        assert_eq!(ColdLookups::parse("inventory_cold_lookups_total 7\n"), None);
    }

    #[test]
    fn cold_filters_are_summed_over_shards() {
        let exposition = "# TYPE inventory_cold_filter_keys gauge\n\
            inventory_cold_filter_keys{shard=\"0\"} 1000\n\
            inventory_cold_filter_keys{shard=\"1\"} 500\n\
            inventory_cold_filter_bytes{shard=\"0\"} 1310720\n\
            inventory_cold_filter_bytes{shard=\"1\"} 1310720\n";
        assert_eq!(ColdFilters::parse(exposition), Some(ColdFilters { keys: 1500, bytes: 2621440 }));
        assert_eq!(ColdFilters::parse("inventory_cold_filter_keys{shard=\"0\"} 0\n"), None);
    }

    fn measured(target: TargetKind, ok_per_s: f64, p99_ms: f64) -> TargetReport {
        let summary = OpSummary {
            count: 1,
            ok: 1,
            rejected: 0,
            errors: 0,
            ok_per_s,
            p50_ms: p99_ms / 2.0,
            p95_ms: p99_ms,
            p99_ms,
            p999_ms: p99_ms,
            max_ms: p99_ms,
            codes: BTreeMap::new(),
        };
        TargetReport {
            target,
            label: target.label().into(),
            offered_rate: None,
            seconds: 1.0,
            seed_seconds: 0.0,
            ops: BTreeMap::from([("reserve".to_string(), summary.clone())]),
            total: summary,
            unsent: 0,
            error_rate: 0.0,
            timeline: Vec::new(),
            audit: AuditReport::default(),
            loadgen_cpu_us_per_request: 1.0,
            target_cpu_us_per_request: None,
            resources: Vec::new(),
            cold_lookups: None,
            cold_filters: None,
            target_lost_after_s: None,
            read_flood: None,
            drop: None,
            orders: None,
        }
    }

    #[test]
    fn only_a_baseline_that_beats_the_service_makes_it_lose() {
        let runs = [
            measured(TargetKind::Service, 20_000.0, 6.0),
            measured(TargetKind::ServiceFile, 22_000.0, 5.0),
            measured(TargetKind::Memory, 40_000.0, 3.0),
            measured(TargetKind::Postgres, 5_000.0, 20.0),
            measured(TargetKind::RedisEverysec, 21_000.0, 7.0),
        ];
        let ratios = compare(&runs);
        let loses: Vec<_> = ratios.iter().map(|r| (r.target, r.service_loses)).collect();
        assert_eq!(
            loses,
            [
                (TargetKind::ServiceFile, false),
                (TargetKind::Memory, false),
                (TargetKind::Postgres, false),
                (TargetKind::RedisEverysec, true),
            ]
        );
        let memory = &ratios[1];
        assert!((memory.service_throughput_ratio - 0.5).abs() < 1e-9);
        assert!((memory.reserve_p99_ratio.unwrap() - 0.5).abs() < 1e-9);
    }
}
