//! The oversell audit: after a run, reads back every SKU the run wrote to
//! and the acknowledged holds, and checks them against the harness's own
//! ledger of acknowledged responses.
//!
//! Per SKU: no counter is negative, `sold + reserved <= received`
//! (oversold units otherwise), `available + reserved + sold == received`,
//! and `sold` covers every acknowledged confirm. Per hold: it exists, for
//! the SKU and quantity granted, with a status consistent with what the
//! harness was last told.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::client::{segment, Conn};
use crate::loadgen::{HoldRecord, HoldStatus, Ledger, SkuLedger};
use crate::workload::Catalogue;
use crate::{BenchError, Result};

/// Inconsistencies spelled out in the report (the rest are only counted).
const DETAILS_MAX: usize = 20;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AuditReport {
    pub skus_checked: u64,
    /// Units by which `sold + reserved` exceeds what was received, summed
    /// over SKUs. The goal is zero.
    pub oversold_units: u64,
    pub oversold_skus: u64,
    pub negative_counters: u64,
    /// SKUs where `available + reserved + sold != received`.
    pub unbalanced_skus: u64,
    /// Units of acknowledged confirms missing from `sold`.
    pub lost_confirmed_units: u64,
    /// Units in `sold` beyond the acknowledged (or unanswered) confirms.
    pub unacknowledged_sold_units: u64,
    pub holds_acked: u64,
    pub holds_checked: u64,
    /// Acknowledged holds that are missing or whose status contradicts an
    /// acknowledgement. The goal is zero.
    pub lost_acked_holds: u64,
    /// Answers during the run that contradicted an earlier acknowledgement.
    pub contradictions: u64,
    pub details: Vec<String>,
}

impl AuditReport {
    /// No oversell, nothing lost, nothing negative or unbalanced.
    pub fn clean(&self) -> bool {
        self.oversold_units == 0
            && self.negative_counters == 0
            && self.unbalanced_skus == 0
            && self.lost_confirmed_units == 0
            && self.unacknowledged_sold_units == 0
            && self.lost_acked_holds == 0
            && self.contradictions == 0
    }

    fn note(&mut self, detail: String) {
        if self.details.len() < DETAILS_MAX {
            self.details.push(detail);
        }
    }
}

#[derive(Deserialize)]
struct Stock {
    available: i64,
    reserved: i64,
    sold: i64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Reservation {
    sku_id: String,
    qty: u64,
    status: String,
}

enum Finding {
    Sku { sku: u64, ledger: SkuLedger, stock: Option<Stock> },
    Hold { record: HoldRecord, found: Option<Reservation> },
}

/// Audits `ledger` against the target at `addr` using `connections`
/// parallel connections.
pub async fn audit(
    addr: SocketAddr,
    connections: usize,
    timeout: Duration,
    catalogue: &Catalogue,
    ledger: &Ledger,
    auth: Option<&Arc<crate::auth::Auth>>,
) -> Result<AuditReport> {
    enum Job {
        Sku(u64, SkuLedger, String),
        Hold(HoldRecord),
    }
    let mut jobs: Vec<Job> = ledger.skus.iter().map(|(&sku, &l)| Job::Sku(sku, l, catalogue.sku_id(sku))).collect();
    jobs.extend(ledger.holds.iter().cloned().map(Job::Hold));
    let jobs = Arc::new(jobs);
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..connections.max(1) {
        let (jobs, next, auth) = (jobs.clone(), next.clone(), auth.cloned());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::with_auth(addr, timeout, auth.as_ref());
            let mut findings = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(job) = jobs.get(i) else { break };
                let path = match job {
                    Job::Sku(_, _, id) => format!("/api/inventory/{}", segment(id)),
                    Job::Hold(r) => format!("/api/reservations/{}", segment(&r.reservation_id)),
                };
                let reply = get_with_retry(&mut conn, &path).await?;
                let finding = match job {
                    Job::Sku(sku, l, _) => {
                        let stock = match reply.status {
                            200 => Some(reply.json::<Stock>().ok_or_else(|| bad(&path, &reply))?),
                            404 => None,
                            _ => return Err(bad(&path, &reply)),
                        };
                        Finding::Sku { sku: *sku, ledger: *l, stock }
                    }
                    Job::Hold(record) => {
                        let found = match reply.status {
                            200 => Some(reply.json::<Reservation>().ok_or_else(|| bad(&path, &reply))?),
                            404 => None,
                            _ => return Err(bad(&path, &reply)),
                        };
                        Finding::Hold { record: record.clone(), found }
                    }
                };
                findings.push(finding);
            }
            Ok::<_, BenchError>(findings)
        }));
    }
    let mut report = AuditReport {
        holds_acked: ledger.holds_acked,
        contradictions: ledger.contradictions,
        ..AuditReport::default()
    };
    for task in tasks {
        for finding in task.await.map_err(|e| BenchError::Audit(e.to_string()))?? {
            match finding {
                Finding::Sku { sku, ledger, stock } => check_sku(&mut report, catalogue, sku, ledger, stock),
                Finding::Hold { record, found } => check_hold(&mut report, catalogue, &record, found),
            }
        }
    }
    Ok(report)
}

fn bad(path: &str, reply: &crate::client::Reply) -> BenchError {
    BenchError::Audit(format!("GET {path}: HTTP {} {}", reply.status, String::from_utf8_lossy(&reply.body)))
}

/// How long a read refused by the target's query rate limit waits before
/// it is sent again; such refusals do not count as failed attempts.
const RATE_LIMITED_WAIT: Duration = Duration::from_millis(20);
/// Most rate-limited refusals of one read before the audit gives up.
const RATE_LIMITED_MAX: u32 = 3_000;

pub(crate) async fn get_with_retry(conn: &mut Conn, path: &str) -> Result<crate::client::Reply> {
    let mut last = None;
    let mut limited = 0;
    let mut attempt = 0u32;
    while attempt < 5 {
        match conn.get(path).await {
            Ok(r) if r.status == 429 && limited < RATE_LIMITED_MAX => {
                limited += 1;
                tokio::time::sleep(RATE_LIMITED_WAIT).await;
                continue;
            }
            Ok(r) if r.status == 503 => last = Some(format!("HTTP 503 {}", String::from_utf8_lossy(&r.body))),
            Ok(r) => return Ok(r),
            Err(f) => last = Some(f.code().to_string()),
        }
        tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
        attempt += 1;
    }
    Err(BenchError::Audit(format!("GET {path}: {}", last.unwrap_or_default())))
}

fn check_sku(report: &mut AuditReport, catalogue: &Catalogue, sku: u64, ledger: SkuLedger, stock: Option<Stock>) {
    report.skus_checked += 1;
    let id = catalogue.sku_id(sku);
    let received = catalogue.seeded(sku) as i64;
    let Some(s) = stock else {
        report.unbalanced_skus += 1;
        report.note(format!("{id}: seeded with {received} but the target does not know it"));
        return;
    };
    for (name, v) in [("available", s.available), ("reserved", s.reserved), ("sold", s.sold)] {
        if v < 0 {
            report.negative_counters += 1;
            report.note(format!("{id}: {name} = {v}"));
        }
    }
    let held = s.sold + s.reserved;
    if held > received {
        report.oversold_units += (held - received) as u64;
        report.oversold_skus += 1;
        report.note(format!("{id}: sold {} + reserved {} > received {received}", s.sold, s.reserved));
    }
    if s.available + s.reserved + s.sold != received {
        report.unbalanced_skus += 1;
        report.note(format!(
            "{id}: available {} + reserved {} + sold {} != received {received}",
            s.available, s.reserved, s.sold
        ));
    }
    let confirmed = ledger.confirmed as i64;
    if s.sold < confirmed {
        report.lost_confirmed_units += (confirmed - s.sold) as u64;
        report.note(format!("{id}: sold {} < acknowledged confirms {confirmed}", s.sold));
    }
    let ceiling = (ledger.confirmed + ledger.uncertain) as i64;
    if s.sold > ceiling {
        report.unacknowledged_sold_units += (s.sold - ceiling) as u64;
        report.note(format!(
            "{id}: sold {} > acknowledged confirms {confirmed} + unanswered {}",
            s.sold, ledger.uncertain
        ));
    }
}

fn check_hold(report: &mut AuditReport, catalogue: &Catalogue, record: &HoldRecord, found: Option<Reservation>) {
    report.holds_checked += 1;
    let id = &record.reservation_id;
    let Some(found) = found else {
        report.lost_acked_holds += 1;
        report.note(format!("{id}: acknowledged hold not found"));
        return;
    };
    let consistent = record.uncertain
        || match record.status {
            HoldStatus::Reserved => matches!(found.status.as_str(), "RESERVED" | "EXPIRED"),
            HoldStatus::Confirmed => found.status == "CONFIRMED",
            HoldStatus::Released => found.status == "RELEASED",
            HoldStatus::Expired => found.status == "EXPIRED",
        };
    let sku_id = catalogue.sku_id(record.sku);
    if !consistent || found.sku_id != sku_id || found.qty != record.qty {
        report.lost_acked_holds += 1;
        report.note(format!(
            "{id}: acknowledged {:?} of {} x {sku_id}, target has {} of {} x {}",
            record.status, record.qty, found.status, found.qty, found.sku_id
        ));
    }
}
