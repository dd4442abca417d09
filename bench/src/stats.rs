//! Measurements: one HDR histogram of latency per operation, counts of
//! responses by code, and a per-second timeline for the plot.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::workload::Op;

/// Highest latency a histogram records, in microseconds (10 minutes);
/// larger values are clamped.
const LATENCY_US_MAX: u64 = 600_000_000;

pub fn histogram(sigfig: u8) -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, sigfig).expect("valid histogram bounds")
}

/// How a request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// 2xx.
    Ok,
    /// A 4xx rejection the workload can legitimately meet (e.g.
    /// `INSUFFICIENT_STOCK`): an answer, not a failure.
    Rejected,
    /// 5xx, a transport failure or a timeout.
    Error,
}

/// Everything one worker measured; merged at the end of a run.
pub struct OpStats {
    pub latency_us: Histogram<u64>,
    pub codes: BTreeMap<String, u64>,
    pub ok: u64,
    pub rejected: u64,
    pub errors: u64,
}

impl OpStats {
    pub fn new() -> OpStats {
        OpStats { latency_us: histogram(3), codes: BTreeMap::new(), ok: 0, rejected: 0, errors: 0 }
    }

    pub fn record(&mut self, latency_us: u64, class: Class, code: &str) {
        self.latency_us.saturating_record(latency_us.clamp(1, LATENCY_US_MAX));
        match class {
            Class::Ok => self.ok += 1,
            Class::Rejected => self.rejected += 1,
            Class::Error => self.errors += 1,
        }
        if let Some(n) = self.codes.get_mut(code) {
            *n += 1;
        } else {
            self.codes.insert(code.to_string(), 1);
        }
    }

    pub fn merge(&mut self, other: &OpStats) {
        self.latency_us.add(&other.latency_us).expect("histograms with equal bounds");
        for (code, n) in &other.codes {
            *self.codes.entry(code.clone()).or_default() += n;
        }
        self.ok += other.ok;
        self.rejected += other.rejected;
        self.errors += other.errors;
    }

    pub fn count(&self) -> u64 {
        self.ok + self.rejected + self.errors
    }
}

impl Default for OpStats {
    fn default() -> Self {
        OpStats::new()
    }
}

/// One second of the timeline, all operations together.
#[derive(Clone, Default)]
pub struct Second {
    pub ok: u64,
    pub errors: u64,
    pub reserves_ok: u64,
    pub latency_us: Option<Histogram<u64>>,
}

/// The per-second timeline. Workers keep the current second locally and
/// hand it over once per second, so the lock is taken rarely.
#[derive(Default)]
pub struct Timeline {
    seconds: Mutex<Vec<Second>>,
}

impl Timeline {
    pub fn add(&self, index: usize, second: &Second) {
        let mut seconds = self.seconds.lock().expect("timeline lock");
        if seconds.len() <= index {
            seconds.resize_with(index + 1, Second::default);
        }
        let slot = &mut seconds[index];
        slot.ok += second.ok;
        slot.errors += second.errors;
        slot.reserves_ok += second.reserves_ok;
        if let Some(h) = &second.latency_us {
            slot.latency_us.get_or_insert_with(|| histogram(2)).add(h).expect("histograms with equal bounds");
        }
    }

    pub fn points(&self) -> Vec<TimelinePoint> {
        let seconds = self.seconds.lock().expect("timeline lock");
        seconds
            .iter()
            .enumerate()
            .map(|(t, s)| {
                let q = |p: f64| s.latency_us.as_ref().map(|h| h.value_at_quantile(p) as f64 / 1000.0).unwrap_or(0.0);
                TimelinePoint {
                    t_s: t as u64,
                    ok_per_s: s.ok,
                    reserves_ok_per_s: s.reserves_ok,
                    errors_per_s: s.errors,
                    p50_ms: q(0.5),
                    p99_ms: q(0.99),
                    p999_ms: q(0.999),
                    max_ms: s.latency_us.as_ref().map(|h| h.max() as f64 / 1000.0).unwrap_or(0.0),
                }
            })
            .collect()
    }
}

#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct TimelinePoint {
    pub t_s: u64,
    pub ok_per_s: u64,
    pub reserves_ok_per_s: u64,
    pub errors_per_s: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

/// Summary of one operation (or of all of them) in a run.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct OpSummary {
    pub count: u64,
    pub ok: u64,
    pub rejected: u64,
    pub errors: u64,
    pub ok_per_s: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub codes: BTreeMap<String, u64>,
}

impl OpSummary {
    pub fn of(stats: &OpStats, seconds: f64) -> OpSummary {
        let h = &stats.latency_us;
        let empty = h.is_empty();
        let q = |p: f64| if empty { 0.0 } else { h.value_at_quantile(p) as f64 / 1000.0 };
        OpSummary {
            count: stats.count(),
            ok: stats.ok,
            rejected: stats.rejected,
            errors: stats.errors,
            ok_per_s: if seconds > 0.0 { stats.ok as f64 / seconds } else { 0.0 },
            p50_ms: q(0.5),
            p95_ms: q(0.95),
            p99_ms: q(0.99),
            p999_ms: q(0.999),
            max_ms: if empty { 0.0 } else { h.max() as f64 / 1000.0 },
            codes: stats.codes.clone(),
        }
    }
}

/// Per-operation statistics of one worker or of a whole run.
#[derive(Default)]
pub struct RunStats {
    pub ops: [OpStats; Op::ALL.len()],
}

impl RunStats {
    pub fn op(&mut self, op: Op) -> &mut OpStats {
        &mut self.ops[op.index()]
    }

    pub fn merge(&mut self, other: &RunStats) {
        for (a, b) in self.ops.iter_mut().zip(&other.ops) {
            a.merge(b);
        }
    }

    pub fn total(&self) -> OpStats {
        let mut total = OpStats::new();
        for op in &self.ops {
            total.merge(op);
        }
        total
    }
}

/// Resident memory of process `pid` in bytes (`VmRSS`, "self" for this
/// process); 0 if it cannot be read.
pub fn rss_bytes(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().strip_suffix("kB"));
    kb.and_then(|kb| kb.trim().parse::<u64>().ok()).map_or(0, |kb| kb * 1024)
}

/// CPU time (user + system) and voluntary context switches so far, of this
/// process (`libc::RUSAGE_SELF`) or of the calling thread
/// (`libc::RUSAGE_THREAD`).
pub fn rusage(who: libc::c_int) -> (Duration, i64) {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        let rc = libc::getrusage(who, &mut usage);
        assert_eq!(rc, 0, "getrusage({who})");
        usage
    };
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1_000);
    (time(usage.ru_utime) + time(usage.ru_stime), usage.ru_nvcsw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_reports_percentiles_in_ms() {
        let mut s = OpStats::new();
        for us in 1..=1000 {
            s.record(us * 10, Class::Ok, "OK");
        }
        s.record(5_000_000, Class::Error, "TIMEOUT");
        let sum = OpSummary::of(&s, 2.0);
        assert_eq!(sum.count, 1001);
        assert_eq!(sum.errors, 1);
        assert!((sum.ok_per_s - 500.0).abs() < 1e-9);
        assert!((sum.p50_ms - 5.0).abs() < 0.05, "{}", sum.p50_ms);
        assert!((sum.max_ms - 5000.0).abs() < 5.0, "{}", sum.max_ms);
        assert_eq!(sum.codes["TIMEOUT"], 1);
    }
}
