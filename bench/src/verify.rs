//! `inventory-bench verify`: reads back every hold of a ledger written by
//! `run --ledger` from a service, typically one restored from PostgreSQL
//! after its machine was lost, and says which acknowledged writes it lacks.
//!
//! Per hold: the reserve is there (same order, SKU and quantity; a lost
//! hold's id may since have gone to another hold), and its status is what
//! the last answer said: `CONFIRMED` after a confirm, `RELEASED` after a
//! release, `EXPIRED` once its expiry passed without either. A settle that
//! got no answer allows either outcome.
//!
//! A write the service lacks is *missing*. Given each shard's
//! `writer_checkpoint.last_at_ms` at the loss (the journal time of the last
//! change PostgreSQL had applied), every missing write must have been
//! acknowledged at or after that time: a write acknowledged earlier was
//! journaled before an entry PostgreSQL had, so it should be there too.
//! Anything else that contradicts an answer (a hold released that was
//! confirmed, a hold never released past its expiry) is *inconsistent*.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::acklog::{self, Ack, UNANSWERED};
use crate::audit::get_with_retry;
use crate::cli::VerifyArgs;
use crate::client::{segment, Conn};
use crate::{target, BenchError, Result};

/// Findings spelled out in the report (the rest are only counted).
const DETAILS_MAX: usize = 20;

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct VerifyReport {
    /// Acknowledged writes in the ledger: reserves, confirms, releases
    /// (a release answered `EXPIRED` changed nothing and is not counted).
    pub acked: u64,
    pub acked_reserves: u64,
    pub acked_confirms: u64,
    pub acked_releases: u64,
    /// Confirms and releases that got no answer.
    pub unanswered: u64,
    pub holds_read: u64,
    /// Acknowledged writes the service lacks.
    pub missing: u64,
    pub missing_reserves: u64,
    pub missing_confirms: u64,
    pub missing_releases: u64,
    /// Missing writes acknowledged before their shard's last applied
    /// change (by more than the clock slack): lost although PostgreSQL had
    /// what came after them. Zero when nothing is lost beyond the writer's
    /// lag.
    pub missing_before_checkpoint: u64,
    /// Acknowledgement times (Unix ms) of the first and last missing write.
    pub missing_first_ack_ms: Option<u64>,
    pub missing_last_ack_ms: Option<u64>,
    /// Holds granted and never settled whose expiry fell between the loss
    /// and the restored service being ready, and how many of them read
    /// `EXPIRED`.
    pub expired_in_outage: u64,
    pub expired_in_outage_released: u64,
    /// Unsettled holds past their expiry (and the grace) still `RESERVED`.
    pub not_released: u64,
    /// Answers the service contradicts other than by lacking a write.
    pub inconsistent: u64,
    pub details: Vec<String>,
}

impl VerifyReport {
    /// Nothing lost but what the writer's lag allows, expired holds
    /// released, nothing contradicted.
    pub fn clean(&self) -> bool {
        self.missing_before_checkpoint == 0 && self.not_released == 0 && self.inconsistent == 0
    }

    /// A few lines for a person.
    pub fn summary(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "verify: {} acknowledged writes ({} reserves, {} confirms, {} releases; {} settles unanswered), {} holds read",
            self.acked, self.acked_reserves, self.acked_confirms, self.acked_releases, self.unanswered, self.holds_read
        );
        let _ = writeln!(
            s,
            "verify: missing {} ({} reserves, {} confirms, {} releases), {} of them acknowledged before PostgreSQL's \
             last applied change",
            self.missing,
            self.missing_reserves,
            self.missing_confirms,
            self.missing_releases,
            self.missing_before_checkpoint
        );
        let _ = writeln!(
            s,
            "verify: {} holds expired during the outage, {} read EXPIRED; {} past expiry not released; {} inconsistent \
             -> {}",
            self.expired_in_outage,
            self.expired_in_outage_released,
            self.not_released,
            self.inconsistent,
            if self.clean() { "clean" } else { "NOT CLEAN" }
        );
        for d in &self.details {
            let _ = writeln!(s, "  {d}");
        }
        s
    }

    fn note(&mut self, detail: String) {
        if self.details.len() < DETAILS_MAX {
            self.details.push(detail);
        }
    }

    fn missed(&mut self, ack_ms: u64, before_checkpoint: bool) {
        self.missing += 1;
        self.missing_first_ack_ms = Some(self.missing_first_ack_ms.map_or(ack_ms, |m| m.min(ack_ms)));
        self.missing_last_ack_ms = Some(self.missing_last_ack_ms.map_or(ack_ms, |m| m.max(ack_ms)));
        if before_checkpoint {
            self.missing_before_checkpoint += 1;
        }
    }
}

/// A reserve the ledger holds, and what became of it.
#[derive(Clone, Debug)]
struct Hold {
    reservation_id: String,
    order_id: String,
    sku_id: String,
    qty: u64,
    ack_ms: u64,
    expire_at_ms: u64,
    /// The one confirm or release sent for it: op, answer, time.
    settle: Option<Settle>,
}

#[derive(Clone, Debug)]
struct Settle {
    confirm: bool,
    status: String,
    ack_ms: u64,
}

/// What the service says about one hold.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Found {
    order_id: String,
    sku_id: String,
    qty: u64,
    status: String,
}

/// What the checks need besides the ledger and the service's answers.
#[derive(Clone, Debug, Default)]
pub struct Context {
    /// Per shard, the journal time of PostgreSQL's last applied change.
    pub applied_at_ms: FxHashMap<u16, u64>,
    pub lost_at_ms: Option<u64>,
    pub ready_at_ms: Option<u64>,
    pub expiry_grace_ms: u64,
    /// How far the service's clock may run ahead of the ledger's.
    pub clock_slack_ms: u64,
}

/// The holds of `acks`, each with its settle; counts the acknowledged
/// writes into `report`.
fn holds_of(acks: Vec<Ack>, report: &mut VerifyReport) -> Vec<Hold> {
    let mut holds = Vec::new();
    let mut index: FxHashMap<String, usize> = FxHashMap::default();
    for ack in acks {
        let (confirm, ack_ms, reservation_id, status) = match ack {
            Ack::Reserve { ack_ms, reservation_id, order_id, sku_id, qty, expire_at_ms } => {
                report.acked_reserves += 1;
                index.insert(reservation_id.clone(), holds.len());
                holds.push(Hold { reservation_id, order_id, sku_id, qty, ack_ms, expire_at_ms, settle: None });
                continue;
            }
            Ack::Confirm { ack_ms, reservation_id, status } => (true, ack_ms, reservation_id, status),
            Ack::Release { ack_ms, reservation_id, status } => (false, ack_ms, reservation_id, status),
        };
        match status.as_str() {
            UNANSWERED => report.unanswered += 1,
            "EXPIRED" => {}
            _ if confirm => report.acked_confirms += 1,
            _ => report.acked_releases += 1,
        }
        let Some(&i) = index.get(&reservation_id) else {
            report.inconsistent += 1;
            report.note(format!("{reservation_id}: settled in the ledger but never granted in it"));
            continue;
        };
        holds[i].settle = Some(Settle { confirm, status, ack_ms });
    }
    holds
}

/// The shard a reservation id names (`rsv-<shard>-<seq>`).
fn shard_of(reservation_id: &str) -> Option<u16> {
    reservation_id.strip_prefix("rsv-")?.split('-').next()?.parse().ok()
}

/// Checks one hold against what the service says (`None`: not found),
/// read at `read_ms`. Returns whether it should be read again later: an
/// unsettled hold still `RESERVED` within the grace after its expiry.
fn check(report: &mut VerifyReport, ctx: &Context, hold: &Hold, found: Option<&Found>, read_ms: u64) -> Recheck {
    let id = &hold.reservation_id;
    let applied_at = shard_of(id).and_then(|s| ctx.applied_at_ms.get(&s).copied());
    let before_checkpoint = |ack_ms: u64| applied_at.is_some_and(|at| ack_ms + ctx.clock_slack_ms < at);
    let answered = hold.settle.as_ref().filter(|s| s.status != UNANSWERED && s.status != "EXPIRED");
    let same = found.filter(|f| f.order_id == hold.order_id && f.sku_id == hold.sku_id && f.qty == hold.qty);
    let Some(found) = same else {
        // The hold is gone, and with it any settle of it.
        report.missing_reserves += 1;
        report.missed(hold.ack_ms, before_checkpoint(hold.ack_ms));
        if let Some(s) = answered {
            if s.confirm {
                report.missing_confirms += 1;
            } else {
                report.missing_releases += 1;
            }
            report.missed(s.ack_ms, before_checkpoint(s.ack_ms));
        }
        let what = match found {
            Some(f) => format!("now names {} x {} of order {}", f.qty, f.sku_id, f.order_id),
            None => "not found".into(),
        };
        if before_checkpoint(hold.ack_ms) {
            report.note(format!("{id}: granted at {} before PostgreSQL's last applied change, {what}", hold.ack_ms));
        }
        return Recheck::No;
    };
    let status = found.status.as_str();
    let expired = hold.expire_at_ms.saturating_add(ctx.expiry_grace_ms) <= read_ms;
    if let (Some(lost), Some(ready)) = (ctx.lost_at_ms, ctx.ready_at_ms) {
        if hold.settle.is_none() && hold.expire_at_ms > lost && hold.expire_at_ms <= ready {
            report.expired_in_outage += 1;
            if status == "EXPIRED" {
                report.expired_in_outage_released += 1;
            }
        }
    }
    match &hold.settle {
        // Never settled, or a release found it expired already.
        None => match status {
            "EXPIRED" => {}
            "RESERVED" if !expired => {}
            "RESERVED" => return Recheck::Expiry,
            _ => {
                report.inconsistent += 1;
                report.note(format!("{id}: never confirmed or released, the service says {status}"));
            }
        },
        Some(s) if s.status == "EXPIRED" => {
            if status != "EXPIRED" {
                report.inconsistent += 1;
                report.note(format!("{id}: a release found it EXPIRED, the service says {status}"));
            }
        }
        Some(s) if s.status == UNANSWERED => {
            let settled = if s.confirm { "CONFIRMED" } else { "RELEASED" };
            if !(status == settled || status == "EXPIRED" || status == "RESERVED") {
                report.inconsistent += 1;
                report.note(format!("{id}: a {settled} without an answer, the service says {status}"));
            }
        }
        Some(s) => {
            let want = if s.confirm { "CONFIRMED" } else { "RELEASED" };
            if status == want {
                return Recheck::No;
            }
            if matches!(status, "RESERVED" | "EXPIRED") {
                if s.confirm {
                    report.missing_confirms += 1;
                } else {
                    report.missing_releases += 1;
                }
                report.missed(s.ack_ms, before_checkpoint(s.ack_ms));
                if before_checkpoint(s.ack_ms) {
                    report.note(format!(
                        "{id}: {want} at {} before PostgreSQL's last applied change, the service says {status}",
                        s.ack_ms
                    ));
                }
            } else {
                report.inconsistent += 1;
                report.note(format!("{id}: answered {want}, the service says {status}"));
            }
        }
    }
    Recheck::No
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Recheck {
    No,
    /// Past its expiry and still `RESERVED`: read again after the grace.
    Expiry,
}

pub fn main(args: VerifyArgs) -> Result<VerifyReport> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(run(args))
}

pub async fn run(args: VerifyArgs) -> Result<VerifyReport> {
    if args.connections == 0 {
        return Err(BenchError::Config("--connections must be at least 1".into()));
    }
    let addr = target::parse_url(&args.target_url)?;
    let acks = acklog::read(&args.ledger)?;
    let mut report = VerifyReport::default();
    let holds = holds_of(acks, &mut report);
    let ctx = Context {
        applied_at_ms: args.applied_at_ms.map(|t| t.0).unwrap_or_default().into_iter().collect(),
        lost_at_ms: args.lost_at_ms,
        ready_at_ms: args.ready_at_ms,
        expiry_grace_ms: args.expiry_grace.as_millis() as u64,
        clock_slack_ms: args.clock_slack.as_millis() as u64,
    };
    let holds = Arc::new(holds);
    let all: Vec<usize> = (0..holds.len()).collect();
    let found = read_holds(addr, args.connections, args.timeout, &holds, &all).await?;
    let mut again = Vec::new();
    for (i, found, read_ms) in found {
        report.holds_read += 1;
        if check(&mut report, &ctx, &holds[i], found.as_ref(), read_ms) == Recheck::Expiry {
            again.push(i);
        }
    }
    if !again.is_empty() {
        eprintln!(
            "verify: {} holds past their expiry still read RESERVED; reading them again in {:?}",
            again.len(),
            args.expiry_grace
        );
        tokio::time::sleep(args.expiry_grace).await;
        for (i, found, _) in read_holds(addr, args.connections, args.timeout, &holds, &again).await? {
            let hold = &holds[i];
            match found.as_ref().map(|f| f.status.as_str()) {
                Some("EXPIRED") => {}
                status => {
                    report.not_released += 1;
                    report.note(format!(
                        "{}: expired at {} without a settle, the service says {}",
                        hold.reservation_id,
                        hold.expire_at_ms,
                        status.unwrap_or("nothing")
                    ));
                }
            }
        }
    }
    report.acked = report.acked_reserves + report.acked_confirms + report.acked_releases;
    Ok(report)
}

/// Reads the holds at `which` over `connections` connections: each with
/// what the service said and when (Unix ms).
async fn read_holds(
    addr: SocketAddr,
    connections: usize,
    timeout: Duration,
    holds: &Arc<Vec<Hold>>,
    which: &[usize],
) -> Result<Vec<(usize, Option<Found>, u64)>> {
    let which = Arc::new(which.to_vec());
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (holds, which, next) = (holds.clone(), which.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::new(addr, timeout);
            let mut out = Vec::new();
            while let Some(&i) = which.get(next.fetch_add(1, Ordering::Relaxed)) {
                let path = format!("/api/reservations/{}", segment(&holds[i].reservation_id));
                let reply = get_with_retry(&mut conn, &path).await?;
                let read_ms = acklog::now_ms();
                let found = match reply.status {
                    200 => Some(reply.json::<Found>().ok_or_else(|| bad(&path, &reply))?),
                    404 => None,
                    _ => return Err(bad(&path, &reply)),
                };
                out.push((i, found, read_ms));
            }
            Ok::<_, BenchError>(out)
        }));
    }
    let mut all = Vec::with_capacity(which.len());
    for task in tasks {
        all.extend(task.await.map_err(|e| BenchError::Audit(e.to_string()))??);
    }
    Ok(all)
}

fn bad(path: &str, reply: &crate::client::Reply) -> BenchError {
    BenchError::Audit(format!("GET {path}: HTTP {} {}", reply.status, String::from_utf8_lossy(&reply.body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reserve(id: &str, ack_ms: u64, expire_at_ms: u64) -> Ack {
        Ack::Reserve {
            ack_ms,
            reservation_id: id.into(),
            order_id: format!("o-{id}"),
            sku_id: "s-1".into(),
            qty: 1,
            expire_at_ms,
        }
    }

    fn found(id: &str, status: &str) -> Found {
        Found { order_id: format!("o-{id}"), sku_id: "s-1".into(), qty: 1, status: status.into() }
    }

    /// Shard 0 had applied everything up to 1_000 when the machine was
    /// lost at 1_200; the service was ready again at 5_000.
    fn ctx() -> Context {
        Context {
            applied_at_ms: [(0, 1_000)].into_iter().collect(),
            lost_at_ms: Some(1_200),
            ready_at_ms: Some(5_000),
            expiry_grace_ms: 100,
            clock_slack_ms: 10,
        }
    }

    fn verify(acks: Vec<Ack>, answers: &[(&str, Option<&str>)], read_ms: u64) -> (VerifyReport, Vec<Recheck>) {
        let mut report = VerifyReport::default();
        let holds = holds_of(acks, &mut report);
        let mut rechecks = Vec::new();
        for hold in &holds {
            let (id, status) = answers.iter().find(|(id, _)| *id == hold.reservation_id).expect("an answer");
            let f = status.map(|s| found(id, s));
            rechecks.push(check(&mut report, &ctx(), hold, f.as_ref(), read_ms));
        }
        report.acked = report.acked_reserves + report.acked_confirms + report.acked_releases;
        (report, rechecks)
    }

    #[test]
    fn writes_lost_inside_the_lag_are_missing_but_clean() {
        let acks = vec![
            reserve("rsv-0-1", 900, 60_000),
            Ack::Confirm { ack_ms: 1_050, reservation_id: "rsv-0-1".into(), status: "CONFIRMED".into() },
            reserve("rsv-0-2", 1_100, 60_000),
            Ack::Release { ack_ms: 1_150, reservation_id: "rsv-0-2".into(), status: "RELEASED".into() },
        ];
        // The confirm of rsv-0-1 and all of rsv-0-2 came after the checkpoint.
        let (report, _) = verify(acks, &[("rsv-0-1", Some("RESERVED")), ("rsv-0-2", None)], 6_000);
        assert_eq!((report.acked, report.missing), (4, 3), "{report:?}");
        assert_eq!((report.missing_reserves, report.missing_confirms, report.missing_releases), (1, 1, 1));
        assert_eq!(report.missing_before_checkpoint, 0);
        assert_eq!((report.missing_first_ack_ms, report.missing_last_ack_ms), (Some(1_050), Some(1_150)));
        assert!(report.clean(), "{}", report.summary());
    }

    #[test]
    fn a_write_lost_before_the_checkpoint_is_not_clean() {
        let acks = vec![
            reserve("rsv-0-1", 900, 60_000),
            Ack::Confirm { ack_ms: 950, reservation_id: "rsv-0-1".into(), status: "CONFIRMED".into() },
            // Within the clock slack of the checkpoint: taken as after it.
            reserve("rsv-0-2", 995, 60_000),
        ];
        let (report, _) = verify(acks, &[("rsv-0-1", Some("RESERVED")), ("rsv-0-2", None)], 6_000);
        assert_eq!((report.missing, report.missing_before_checkpoint), (2, 1), "{report:?}");
        assert!(!report.clean());
        assert!(report.details[0].contains("rsv-0-1"), "{:?}", report.details);
    }

    #[test]
    fn a_lost_hold_whose_id_went_to_another_hold_is_missing() {
        let mut report = VerifyReport::default();
        let holds = holds_of(vec![reserve("rsv-0-3", 1_100, 60_000)], &mut report);
        let other = Found { order_id: "o-after".into(), sku_id: "s-1".into(), qty: 1, status: "RESERVED".into() };
        check(&mut report, &ctx(), &holds[0], Some(&other), 6_000);
        assert_eq!((report.missing_reserves, report.missing_before_checkpoint), (1, 0));
    }

    #[test]
    fn holds_past_their_expiry_must_read_expired() {
        let acks = vec![
            // Expired before the loss, during the outage, after it.
            reserve("rsv-0-1", 100, 1_100),
            reserve("rsv-0-2", 200, 3_000),
            reserve("rsv-0-3", 300, 3_100),
            reserve("rsv-0-4", 400, 9_000),
        ];
        let answers = [
            ("rsv-0-1", Some("EXPIRED")),
            ("rsv-0-2", Some("EXPIRED")),
            ("rsv-0-3", Some("RESERVED")),
            ("rsv-0-4", Some("RESERVED")),
        ];
        let (report, rechecks) = verify(acks, &answers, 6_000);
        assert_eq!((report.expired_in_outage, report.expired_in_outage_released), (2, 1), "{report:?}");
        assert_eq!(rechecks, [Recheck::No, Recheck::No, Recheck::Expiry, Recheck::No]);
        assert_eq!(report.missing, 0);
    }

    #[test]
    fn unanswered_settles_allow_either_outcome_and_contradictions_are_caught() {
        let acks = vec![
            reserve("rsv-1-1", 100, 60_000),
            Ack::Confirm { ack_ms: 150, reservation_id: "rsv-1-1".into(), status: UNANSWERED.into() },
            reserve("rsv-1-2", 100, 60_000),
            Ack::Release { ack_ms: 150, reservation_id: "rsv-1-2".into(), status: UNANSWERED.into() },
            reserve("rsv-1-3", 100, 60_000),
            Ack::Confirm { ack_ms: 150, reservation_id: "rsv-1-3".into(), status: "CONFIRMED".into() },
            reserve("rsv-1-4", 100, 60_000),
        ];
        let answers = [
            ("rsv-1-1", Some("CONFIRMED")),
            ("rsv-1-2", Some("RESERVED")),
            ("rsv-1-3", Some("RELEASED")),
            ("rsv-1-4", Some("CONFIRMED")),
        ];
        let (report, _) = verify(acks, &answers, 6_000);
        assert_eq!((report.unanswered, report.acked_confirms, report.acked), (2, 1, 5), "{report:?}");
        assert_eq!((report.missing, report.inconsistent), (0, 2), "{report:?}");
        assert!(!report.clean());
    }

    #[test]
    fn reservation_ids_name_their_shard() {
        assert_eq!(shard_of("rsv-3-17"), Some(3));
        assert_eq!(shard_of("order-3"), None);
    }
}
