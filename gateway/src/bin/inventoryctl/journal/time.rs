//! Times on the command line and in the output: RFC 3339 in UTC, or
//! milliseconds since the Unix epoch.

use std::time::{SystemTime, UNIX_EPOCH};

use inventory_core::Millis;

/// The latest time `api::rfc3339` can render (9999-12-31T23:59:59.999Z).
const RFC3339_MS_MAX: Millis = 253_402_300_799_999;

/// RFC 3339 in UTC (`2024-05-01T10:00:00Z`, `2024-05-01 10:00:00.250`) or
/// milliseconds since the Unix epoch.
pub fn parse_time(s: &str) -> Result<Millis, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse::<Millis>().map_err(|_| format!("{s:?} is too large for milliseconds since the epoch"));
    }
    let time = humantime::parse_rfc3339_weak(s)
        .map_err(|e| format!("{s:?} is neither RFC 3339 in UTC nor milliseconds since the epoch: {e}"))?;
    let since = time.duration_since(UNIX_EPOCH).map_err(|_| format!("{s:?} is before 1970"))?;
    Millis::try_from(since.as_millis()).map_err(|_| format!("{s:?} is out of range"))
}

/// RFC 3339 with milliseconds, or the raw number for a time no calendar
/// format can show.
pub fn fmt_time(ms: Millis) -> String {
    if ms <= RFC3339_MS_MAX {
        inventory_gateway::api::rfc3339(ms)
    } else {
        format!("{ms}ms")
    }
}

pub fn now_ms() -> Millis {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as Millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_or_milliseconds() {
        assert_eq!(parse_time("1700000000123"), Ok(1_700_000_000_123));
        assert_eq!(parse_time("2023-11-14T22:13:20.123Z"), Ok(1_700_000_000_123));
        assert_eq!(parse_time("2023-11-14 22:13:20"), Ok(1_700_000_000_000));
        assert_eq!(parse_time(&fmt_time(1_700_000_000_123)), Ok(1_700_000_000_123));
        for bad in ["", "yesterday", "2023-13-01T00:00:00Z", "99999999999999999999999", "-5"] {
            assert!(parse_time(bad).is_err(), "{bad:?} parsed");
        }
        assert_eq!(fmt_time(u64::MAX), format!("{}ms", u64::MAX));
    }
}
