//! The query rate limit: one token bucket shared by every HTTP thread,
//! kept as a single atomic (the generic cell rate algorithm: the bucket is
//! the theoretical time of the next admitted request). Admitting or
//! refusing a request reads the monotonic clock and does one
//! compare-and-swap; nothing is locked or allocated.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// Admits at most `per_second` requests a second on average, and up to one
/// second's worth (`per_second`) at once after a quiet second.
pub struct QueryLimiter {
    /// Nanoseconds one request takes from the bucket; 0: unlimited.
    interval_ns: u64,
    /// How far the theoretical time may run ahead of now: the burst, less
    /// the request being admitted.
    tolerance_ns: u64,
    /// The theoretical time of the next request, in ns since `origin`.
    tat_ns: AtomicU64,
    origin: Instant,
    per_second: u64,
}

impl QueryLimiter {
    /// `per_second` 0 admits everything.
    pub fn new(per_second: u64) -> QueryLimiter {
        let interval_ns = NANOS_PER_SECOND.checked_div(per_second).map_or(0, |ns| ns.max(1));
        QueryLimiter {
            interval_ns,
            tolerance_ns: interval_ns.saturating_mul(per_second.saturating_sub(1)),
            tat_ns: AtomicU64::new(0),
            origin: Instant::now(),
            per_second,
        }
    }

    /// The limit, per second (0: none).
    pub fn per_second(&self) -> u64 {
        self.per_second
    }

    /// Takes a token, or says how long until one is there.
    #[inline]
    pub fn admit(&self) -> Result<(), Duration> {
        if self.interval_ns == 0 {
            return Ok(());
        }
        self.admit_at(self.origin.elapsed().as_nanos() as u64)
    }

    fn admit_at(&self, now_ns: u64) -> Result<(), Duration> {
        let mut tat = self.tat_ns.load(Ordering::Relaxed);
        loop {
            let from = tat.max(now_ns);
            let ahead = from - now_ns;
            if ahead > self.tolerance_ns {
                return Err(Duration::from_nanos(ahead - self.tolerance_ns));
            }
            match self.tat_ns.compare_exchange_weak(tat, from + self.interval_ns, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Ok(()),
                Err(now) => tat = now,
            }
        }
    }
}

/// Whole seconds for a `Retry-After` header: at least 1.
pub fn retry_after_secs(wait: Duration) -> u32 {
    wait.as_secs_f64().ceil().clamp(1.0, u32::MAX as f64) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn a_full_bucket_admits_one_seconds_worth_then_refills_at_the_rate() {
        let limiter = QueryLimiter::new(1_000);
        let admitted = (0..2_000).filter(|_| limiter.admit_at(0).is_ok()).count();
        assert_eq!(admitted, 1_000, "the burst is one second's worth");
        // One token a millisecond from then on.
        let wait = limiter.admit_at(0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(1));
        assert!(limiter.admit_at(MS).is_ok());
        assert!(limiter.admit_at(MS).is_err());
        let admitted = (0..100).filter(|_| limiter.admit_at(11 * MS).is_ok()).count();
        assert_eq!(admitted, 10);
        // After a quiet second the bucket is full again, and no fuller.
        let later = 3_000 * MS;
        let admitted = (0..5_000).filter(|_| limiter.admit_at(later).is_ok()).count();
        assert_eq!(admitted, 1_000);
    }

    #[test]
    fn zero_is_unlimited() {
        let limiter = QueryLimiter::new(0);
        assert!((0..100_000).all(|_| limiter.admit().is_ok()));
    }

    #[test]
    fn threads_share_one_bucket() {
        let limiter = std::sync::Arc::new(QueryLimiter::new(10_000));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let limiter = limiter.clone();
                std::thread::spawn(move || (0..10_000).filter(|_| limiter.admit_at(0).is_ok()).count())
            })
            .collect();
        let admitted: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(admitted, 10_000);
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::from_micros(200)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1_500)), 2);
    }
}
