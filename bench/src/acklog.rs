//! The log of acknowledged writes (`run --ledger FILE`): one JSON line per
//! write of the measured phase that got an answer meaning "done", with the
//! wall-clock time the answer arrived, and one per settle that got no
//! answer at all (its outcome is unknown). `verify` reads it back against a
//! service, e.g. one restored after its machine was lost.
//!
//! ```text
//! {"ackMs":1733300000123,"op":"reserve","reservationId":"rsv-1-7","orderId":"a1b2c3s-0-7","skuId":"ba1b2c3-42","qty":1,"expireAtMs":1733300030120}
//! {"ackMs":1733300000456,"op":"confirm","reservationId":"rsv-1-7","status":"CONFIRMED"}
//! {"ackMs":1733300000789,"op":"release","reservationId":"rsv-0-9","status":"UNANSWERED"}
//! ```

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::{BenchError, Result};

/// `status` of a settle that got no answer (timeout, dropped connection,
/// 5xx): it may or may not have been applied.
pub const UNANSWERED: &str = "UNANSWERED";

/// One acknowledged write, or one settle without an answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "op", rename_all_fields = "camelCase")]
pub enum Ack {
    /// A granted hold.
    #[serde(rename = "reserve")]
    Reserve { ack_ms: u64, reservation_id: String, order_id: String, sku_id: String, qty: u64, expire_at_ms: u64 },
    /// A confirm answered `CONFIRMED`, or without an answer (`UNANSWERED`).
    #[serde(rename = "confirm")]
    Confirm { ack_ms: u64, reservation_id: String, status: String },
    /// A release answered `RELEASED` or `EXPIRED`, or without an answer
    /// (`UNANSWERED`).
    #[serde(rename = "release")]
    Release { ack_ms: u64, reservation_id: String, status: String },
}

impl Ack {
    pub fn ack_ms(&self) -> u64 {
        match self {
            Ack::Reserve { ack_ms, .. } | Ack::Confirm { ack_ms, .. } | Ack::Release { ack_ms, .. } => *ack_ms,
        }
    }

    pub fn reservation_id(&self) -> &str {
        match self {
            Ack::Reserve { reservation_id, .. }
            | Ack::Confirm { reservation_id, .. }
            | Ack::Release { reservation_id, .. } => reservation_id,
        }
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// `2026-11-24T19:30:04.064Z` as milliseconds since the Unix epoch.
pub fn parse_rfc3339_ms(s: &str) -> Option<u64> {
    let t = humantime::parse_rfc3339(s).ok()?;
    Some(t.duration_since(UNIX_EPOCH).ok()?.as_millis() as u64)
}

/// An ack log being written. Shared by the load generator's workers, which
/// all run on one thread, so the lock is never contended.
pub struct AckLog {
    path: PathBuf,
    out: Mutex<BufWriter<File>>,
    failed: Mutex<Option<std::io::Error>>,
}

impl AckLog {
    /// Creates (or truncates) the file at `path`.
    pub fn create(path: &Path) -> Result<AckLog> {
        let file = File::create(path)
            .map_err(|e| BenchError::Config(format!("--ledger {}: cannot create it: {e}", path.display())))?;
        Ok(AckLog {
            path: path.to_path_buf(),
            out: Mutex::new(BufWriter::with_capacity(1 << 20, file)),
            failed: Mutex::new(None),
        })
    }

    /// Appends one line; the first write error is kept for [`AckLog::finish`].
    pub fn append(&self, ack: &Ack) {
        let mut line = serde_json::to_vec(ack).expect("an ack serializes");
        line.push(b'\n');
        if let Err(e) = self.out.lock().write_all(&line) {
            self.failed.lock().get_or_insert(e);
        }
    }

    /// Flushes everything to the file and reports the first write error.
    pub fn finish(&self) -> Result<()> {
        let flushed = self.out.lock().flush();
        match self.failed.lock().take().map_or(flushed, Err) {
            Ok(()) => Ok(()),
            Err(e) => Err(BenchError::Config(format!("--ledger {}: cannot write it: {e}", self.path.display()))),
        }
    }
}

/// Reads every line of the ack log at `path`.
pub fn read(path: &Path) -> Result<Vec<Ack>> {
    let file = File::open(path)
        .map_err(|e| BenchError::Config(format!("--ledger {}: cannot open it: {e}", path.display())))?;
    let mut acks = Vec::new();
    for (i, line) in BufReader::with_capacity(1 << 20, file).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let ack = serde_json::from_str(&line)
            .map_err(|e| BenchError::Config(format!("--ledger {} line {}: {e}", path.display(), i + 1)))?;
        acks.push(ack);
    }
    Ok(acks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_in_the_documented_shape() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("acks.jsonl");
        let log = AckLog::create(&path).unwrap();
        let acks = [
            Ack::Reserve {
                ack_ms: 5,
                reservation_id: "rsv-1-7".into(),
                order_id: "o-7".into(),
                sku_id: "b-42".into(),
                qty: 2,
                expire_at_ms: 30_005,
            },
            Ack::Confirm { ack_ms: 6, reservation_id: "rsv-1-7".into(), status: "CONFIRMED".into() },
            Ack::Release { ack_ms: 7, reservation_id: "rsv-0-9".into(), status: UNANSWERED.into() },
        ];
        for ack in &acks {
            log.append(ack);
        }
        log.finish().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(
            first,
            serde_json::json!({"ackMs": 5, "op": "reserve", "reservationId": "rsv-1-7", "orderId": "o-7",
                               "skuId": "b-42", "qty": 2, "expireAtMs": 30_005})
        );
        assert_eq!(read(&path).unwrap(), acks);
        assert_eq!(acks[2].reservation_id(), "rsv-0-9");
        assert_eq!(acks[1].ack_ms(), 6);
    }

    #[test]
    fn service_times_parse_to_milliseconds() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:01.250Z"), Some(1_250));
        assert_eq!(parse_rfc3339_ms("yesterday"), None);
    }
}
