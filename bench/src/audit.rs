//! The oversell audit: after a run, reads back every SKU the run wrote to
//! and the acknowledged holds, and checks them against the harness's own
//! ledger of acknowledged responses.
//!
//! Per SKU: no counter is negative, `sold + reserved <= received`
//! (oversold units otherwise), `available + reserved + sold == received`,
//! and `sold` covers every acknowledged confirm. Per hold: it exists, for
//! the SKU and quantity granted, with a status consistent with what the
//! harness was last told. Per multi-line order: every line it was granted
//! is held for it; a refused order holds nothing. Per buyer of a drop,
//! from the acknowledged answers alone: the units granted and not released
//! stay within the sale's limit.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::client::{segment, Conn};
use crate::loadgen::{BuyerLedger, HoldRecord, HoldStatus, Ledger, OrderRecord, SkuLedger};
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
    /// Multi-line orders acknowledged, and those of them read back.
    #[serde(default)]
    pub orders_acked: u64,
    #[serde(default)]
    pub orders_checked: u64,
    /// Acknowledged orders with a line not held as granted. The goal is
    /// zero.
    #[serde(default)]
    pub lost_acked_orders: u64,
    /// Orders refused `ORDER_NOT_RESERVABLE` read back, and those of them
    /// holding anything (a partial order). The goal is zero.
    #[serde(default)]
    pub refused_orders_checked: u64,
    #[serde(default)]
    pub refused_orders_holding: u64,
    /// A drop's per-buyer limit, checked from the acknowledged answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buyers: Option<BuyerAudit>,
    pub details: Vec<String>,
}

/// The units each buyer of a drop holds by the acknowledged answers: the
/// units of every distinct hold granted (200) to them, less those the
/// harness released. None may exceed the limit.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuyerAudit {
    pub limit: u64,
    /// Buyers granted at least one unit.
    pub buyers_with_units: u64,
    /// The most units any one buyer holds.
    pub max_units: u64,
    /// Buyers holding more than the limit. The goal is zero.
    pub buyers_over_limit: u64,
    /// Units granted and not released, over all buyers.
    pub units: u64,
    /// Some of the buyers over the limit: `(buyer, units)`.
    pub over_limit: Vec<(u64, u64)>,
}

/// Checks every buyer's acknowledged units against `limit`.
pub fn audit_buyers<'a>(buyers: impl IntoIterator<Item = (&'a u64, &'a BuyerLedger)>, limit: u64) -> BuyerAudit {
    let mut audit = BuyerAudit { limit, ..BuyerAudit::default() };
    for (&buyer, ledger) in buyers {
        let units = held_units(ledger);
        if units > 0 {
            audit.buyers_with_units += 1;
        }
        audit.units += units;
        audit.max_units = audit.max_units.max(units);
        if units > limit {
            audit.buyers_over_limit += 1;
            if audit.over_limit.len() < DETAILS_MAX {
                audit.over_limit.push((buyer, units));
            }
        }
    }
    audit.over_limit.sort_unstable();
    audit
}

/// Units a buyer holds by the acknowledged answers: each distinct hold
/// counted once (a repeated answer naming the same hold is one hold),
/// released ones not at all.
pub fn held_units(ledger: &BuyerLedger) -> u64 {
    let mut seen = std::collections::HashSet::with_capacity(ledger.grants.len());
    ledger
        .grants
        .iter()
        .filter(|(id, _)| seen.insert(id.as_str()) && !ledger.released.contains(id))
        .map(|(_, qty)| qty)
        .sum()
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
            && self.lost_acked_orders == 0
            && self.refused_orders_holding == 0
            && self.buyers.as_ref().is_none_or(|b| b.buyers_over_limit == 0)
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

/// A hold as `GET /api/orders/{orderId}/inventory-status` lists it.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderHold {
    pub reservation_id: String,
    pub sku_id: String,
    pub qty: u64,
    pub status: String,
}

#[derive(Deserialize)]
struct OrderStatus {
    reservations: Vec<OrderHold>,
}

enum Finding {
    Sku { sku: u64, ledger: SkuLedger, stock: Option<Stock> },
    Hold { record: HoldRecord, found: Option<Reservation> },
    Order { record: OrderRecord, found: Vec<OrderHold> },
    Refused { order_id: String, found: Vec<OrderHold> },
}

/// Audits `ledger` against the target at `addr` using `connections`
/// parallel connections; with a drop's `buyer_limit`, also each buyer's
/// acknowledged units.
pub async fn audit(
    addr: SocketAddr,
    connections: usize,
    timeout: Duration,
    catalogue: &Catalogue,
    ledger: &Ledger,
    buyer_limit: Option<u64>,
    auth: Option<&Arc<crate::auth::Auth>>,
) -> Result<AuditReport> {
    enum Job {
        Sku(u64, SkuLedger, String),
        Hold(HoldRecord),
        Order(OrderRecord),
        Refused(String),
    }
    let mut jobs: Vec<Job> = ledger.skus.iter().map(|(&sku, &l)| Job::Sku(sku, l, catalogue.sku_id(sku))).collect();
    jobs.extend(ledger.holds.iter().cloned().map(Job::Hold));
    jobs.extend(ledger.orders.iter().cloned().map(Job::Order));
    jobs.extend(ledger.refused_orders.iter().cloned().map(Job::Refused));
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
                    Job::Order(OrderRecord { order_id, .. }) | Job::Refused(order_id) => {
                        format!("/api/orders/{}/inventory-status", segment(order_id))
                    }
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
                    Job::Order(_) | Job::Refused(_) => {
                        let found = match reply.status {
                            200 => reply.json::<OrderStatus>().ok_or_else(|| bad(&path, &reply))?.reservations,
                            _ => return Err(bad(&path, &reply)),
                        };
                        match job {
                            Job::Order(record) => Finding::Order { record: record.clone(), found },
                            Job::Refused(order_id) => Finding::Refused { order_id: order_id.clone(), found },
                            _ => unreachable!("an order's job"),
                        }
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
        orders_acked: ledger.orders_acked,
        buyers: buyer_limit.map(|limit| audit_buyers(&ledger.buyers, limit)),
        ..AuditReport::default()
    };
    if let Some(b) = &report.buyers {
        for &(buyer, units) in &b.over_limit {
            report.details.push(format!("buyer {buyer}: {units} units acknowledged, over the limit of {}", b.limit));
        }
    }
    for task in tasks {
        for finding in task.await.map_err(|e| BenchError::Audit(e.to_string()))?? {
            match finding {
                Finding::Sku { sku, ledger, stock } => check_sku(&mut report, catalogue, sku, ledger, stock),
                Finding::Hold { record, found } => check_hold(&mut report, catalogue, &record, found),
                Finding::Order { record, found } => check_order(&mut report, catalogue, &record, &found),
                Finding::Refused { order_id, found } => check_refused(&mut report, &order_id, &found),
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

/// Every line of an acknowledged order is held for it, as granted: its SKU
/// and quantity, `RESERVED` (or `EXPIRED`: orders are never settled).
fn check_order(report: &mut AuditReport, catalogue: &Catalogue, record: &OrderRecord, found: &[OrderHold]) {
    report.orders_checked += 1;
    for line in &record.lines {
        let sku_id = catalogue.sku_id(line.sku);
        let held = found.iter().find(|h| h.reservation_id == line.reservation_id);
        let ok = held.is_some_and(|h| {
            h.sku_id == sku_id && h.qty == line.qty && matches!(h.status.as_str(), "RESERVED" | "EXPIRED")
        });
        if !ok {
            report.lost_acked_orders += 1;
            report.note(match held {
                None => format!(
                    "order {}: line {} x {sku_id} ({}) not held",
                    record.order_id, line.qty, line.reservation_id
                ),
                Some(h) => format!(
                    "order {}: line {} x {sku_id} ({}) held as {} of {} x {}",
                    record.order_id, line.qty, line.reservation_id, h.status, h.qty, h.sku_id
                ),
            });
            return;
        }
    }
}

/// A refused order holds nothing: its lines are reserved together or not
/// at all.
fn check_refused(report: &mut AuditReport, order_id: &str, found: &[OrderHold]) {
    report.refused_orders_checked += 1;
    if !found.is_empty() {
        report.refused_orders_holding += 1;
        let held: Vec<String> = found.iter().map(|h| format!("{} x {} {}", h.qty, h.sku_id, h.status)).collect();
        report.note(format!("order {order_id} was refused but holds {}", held.join(", ")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadgen::OrderLine;
    use rustc_hash::FxHashMap;

    fn buyer(grants: &[(&str, u64)], released: &[&str]) -> BuyerLedger {
        BuyerLedger {
            grants: grants.iter().map(|&(id, qty)| (id.to_string(), qty)).collect(),
            released: released.iter().map(|id| id.to_string()).collect(),
        }
    }

    #[test]
    fn a_buyer_over_the_limit_is_found() {
        let buyers: FxHashMap<u64, BuyerLedger> = [
            (1, buyer(&[("r1", 2)], &[])),
            (2, buyer(&[("r2", 1), ("r3", 1)], &[])),
            // Three holds of one unit acknowledged: one over the limit.
            (3, buyer(&[("r4", 1), ("r5", 1), ("r6", 1)], &[])),
            (4, buyer(&[], &[])),
        ]
        .into_iter()
        .collect();
        let audit = audit_buyers(&buyers, 2);
        assert_eq!(audit.max_units, 3);
        assert_eq!(audit.buyers_over_limit, 1);
        assert_eq!(audit.over_limit, vec![(3, 3)]);
        assert_eq!(audit.buyers_with_units, 3);
        assert_eq!(audit.units, 7);
        let report = AuditReport { buyers: Some(audit), ..AuditReport::default() };
        assert!(!report.clean());
    }

    #[test]
    fn released_units_and_repeated_answers_do_not_count() {
        // Granted 2, released them, granted 2 again: holds 2.
        assert_eq!(held_units(&buyer(&[("r1", 2), ("r2", 2)], &["r1"])), 2);
        // The same hold named by two answers (a replay) is one hold.
        assert_eq!(held_units(&buyer(&[("r1", 2), ("r1", 2)], &[])), 2);
        let buyers: FxHashMap<u64, BuyerLedger> =
            [(7, buyer(&[("r1", 2), ("r2", 2)], &["r1"])), (8, buyer(&[("r3", 1), ("r3", 1)], &[]))]
                .into_iter()
                .collect();
        let audit = audit_buyers(&buyers, 2);
        assert_eq!((audit.max_units, audit.buyers_over_limit), (2, 0));
        assert!(AuditReport { buyers: Some(audit), ..AuditReport::default() }.clean());
        // Released but granted more than the limit at once: still over.
        assert_eq!(
            audit_buyers(&[(9, buyer(&[("r1", 1), ("r2", 3)], &["r1"]))].into_iter().collect::<FxHashMap<_, _>>(), 2)
                .buyers_over_limit,
            1
        );
    }

    fn catalogue() -> Catalogue {
        Catalogue { prefix: "c-".into(), skus: 10, hot: 0, hot_share: 0.0, stock: 5, hot_stock: 5, flash_stock: 0 }
    }

    fn hold(id: &str, sku: &str, qty: u64, status: &str) -> OrderHold {
        OrderHold { reservation_id: id.into(), sku_id: sku.into(), qty, status: status.into() }
    }

    #[test]
    fn an_order_missing_a_line_is_a_lost_order() {
        let record = OrderRecord {
            order_id: "o-1".into(),
            lines: vec![
                OrderLine { sku: 1, qty: 1, reservation_id: "r-a".into() },
                OrderLine { sku: 2, qty: 1, reservation_id: "r-b".into() },
                OrderLine { sku: 3, qty: 1, reservation_id: "r-c".into() },
            ],
        };
        let all =
            [hold("r-a", "c-1", 1, "RESERVED"), hold("r-b", "c-2", 1, "EXPIRED"), hold("r-c", "c-3", 1, "RESERVED")];
        let mut report = AuditReport::default();
        check_order(&mut report, &catalogue(), &record, &all);
        assert_eq!((report.orders_checked, report.lost_acked_orders), (1, 0));
        assert!(report.clean());

        check_order(&mut report, &catalogue(), &record, &all[..2]);
        assert_eq!(report.lost_acked_orders, 1, "{:?}", report.details);
        let mut wrong = all.clone();
        wrong[1] = hold("r-b", "c-9", 1, "RESERVED");
        check_order(&mut report, &catalogue(), &record, &wrong);
        wrong[1] = hold("r-b", "c-2", 1, "RELEASED");
        check_order(&mut report, &catalogue(), &record, &wrong);
        assert_eq!(report.lost_acked_orders, 3, "{:?}", report.details);
        assert!(!report.clean());
    }

    #[test]
    fn a_refused_order_holding_a_line_is_found() {
        let mut report = AuditReport::default();
        check_refused(&mut report, "o-2", &[]);
        assert!(report.clean());
        check_refused(&mut report, "o-3", &[hold("r-x", "c-1", 1, "RESERVED")]);
        assert_eq!((report.refused_orders_checked, report.refused_orders_holding), (2, 1));
        assert!(!report.clean());
        assert!(report.details[0].contains("o-3"), "{:?}", report.details);
    }

    #[test]
    fn order_status_answers_parse() {
        let body = r#"{"orderId":"o-1","reservations":[{"reservationId":"rsv-1-1","orderId":"o-1","skuId":"s-1",
            "warehouseId":"default","qty":2,"status":"RESERVED","expireAt":"2026-11-24T19:30:04.064Z"}]}"#;
        let status: OrderStatus = serde_json::from_str(body).unwrap();
        assert_eq!(status.reservations.len(), 1);
        assert_eq!((status.reservations[0].sku_id.as_str(), status.reservations[0].qty), ("s-1", 2));
        let none: OrderStatus = serde_json::from_str(r#"{"orderId":"x","reservations":[]}"#).unwrap();
        assert!(none.reservations.is_empty());
    }
}
