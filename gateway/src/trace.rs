//! W3C trace context: accept a caller's `traceparent`, or start a trace, and
//! give every request its own span id (returned as `x-request-id`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: u128,
    /// This request's span id.
    pub span_id: u64,
    pub sampled: bool,
}

impl TraceContext {
    /// `traceparent` for the response: the trace continues with our span.
    pub fn traceparent(&self) -> String {
        format!("00-{:032x}-{:016x}-{}", self.trace_id, self.span_id, if self.sampled { "01" } else { "00" })
    }

    pub fn request_id(&self) -> String {
        format!("{:016x}", self.span_id)
    }
}

/// Parses a version-00 `traceparent` header; `None` if malformed.
pub fn parse_traceparent(header: &str) -> Option<(u128, bool)> {
    let mut parts = header.trim().split('-');
    let (version, trace, parent, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if version == "ff" || !hex(version, 2) || !hex(trace, 32) || !hex(parent, 16) || !hex(flags, 2) {
        return None;
    }
    if version == "00" && parts.next().is_some() {
        return None;
    }
    let trace_id = u128::from_str_radix(trace, 16).ok()?;
    let parent_id = u64::from_str_radix(parent, 16).ok()?;
    if trace_id == 0 || parent_id == 0 {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some((trace_id, flags & 1 == 1))
}

/// Makes ids that are unique per process and unpredictable enough for
/// tracing (not for security): XXH3 of a random seed and a counter.
pub struct TraceIds {
    seed: u64,
    counter: AtomicU64,
}

impl Default for TraceIds {
    fn default() -> Self {
        TraceIds::new()
    }
}

impl TraceIds {
    pub fn new() -> TraceIds {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let seed =
            xxhash_rust::xxh3::xxh3_64(&[now.to_le_bytes().as_slice(), &std::process::id().to_le_bytes()].concat());
        TraceIds { seed, counter: AtomicU64::new(1) }
    }

    fn next(&self) -> u128 {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        xxhash_rust::xxh3::xxh3_128_with_seed(&n.to_le_bytes(), self.seed).max(1)
    }

    /// The context of a request carrying `traceparent` (if any).
    pub fn accept(&self, traceparent: Option<&str>) -> TraceContext {
        let id = self.next();
        let span_id = (id as u64).max(1);
        match traceparent.and_then(parse_traceparent) {
            Some((trace_id, sampled)) => TraceContext { trace_id, span_id, sampled },
            None => TraceContext { trace_id: id, span_id, sampled: false },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_traceparents_only() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(parse_traceparent(good), Some((0x4bf92f3577b34da6a3ce929d0e0e4736, true)));
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn continues_the_callers_trace_with_a_new_span() {
        let ids = TraceIds::new();
        let ctx = ids.accept(Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
        assert_eq!(ctx.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_ne!(ctx.span_id, 0x00f067aa0ba902b7);
        assert!(ctx.traceparent().starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        let fresh = ids.accept(None);
        assert_ne!(fresh.trace_id, ids.accept(None).trace_id);
    }
}
