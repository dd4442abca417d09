//! Where the shard loops get time from. The core never reads a clock; the
//! loop reads this once per batch and journals the value it used.
//!
//! The service runs on a [`SteadyClock`] over the [`SystemClock`]: wall-clock
//! time that never goes backwards and never stands still.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use inventory_core::Millis;
use parking_lot::Mutex;

pub trait Clock: Send + Sync {
    fn now_ms(&self) -> Millis;

    /// Tells the clock a time already used (the last time in a journal,
    /// at start-up): a clock that never goes backwards reads no earlier
    /// from then on.
    fn not_before(&self, _at: Millis) {}
}

/// Wall-clock time, as the system reports it: it steps backwards when the
/// system's time is set back.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> Millis {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as Millis).unwrap_or(0)
    }
}

/// Wall-clock time that never goes backwards: it follows its wall clock
/// forwards; when the wall clock steps back, it goes on from where it was at
/// the rate of the monotonic clock ([`Instant`]) until the wall clock is
/// ahead of it again, and follows the wall clock from there.
///
/// So holds still expire on time after the system's time is set back, and
/// command times keep their order. While the wall clock is behind, times
/// are ahead of it by at most the size of the step back. A time given to
/// [`Clock::not_before`] counts as read: after a restart with the wall
/// clock behind the journal, time goes on from the journal's last time.
pub struct SteadyClock<W = SystemClock> {
    wall: W,
    state: Mutex<Steady>,
}

struct Steady {
    /// The last time read, and the monotonic instant it was read at.
    last: Millis,
    read_at: Instant,
    /// Set while the wall clock is behind: the last time read before it
    /// stepped back and when that was, from which time goes on.
    behind: Option<(Millis, Instant)>,
}

impl<W: Clock> SteadyClock<W> {
    pub fn new(wall: W) -> SteadyClock<W> {
        SteadyClock { wall, state: Mutex::new(Steady { last: 0, read_at: Instant::now(), behind: None }) }
    }

    /// Whether the wall clock is behind the time this clock reads.
    pub fn wall_behind(&self) -> bool {
        self.state.lock().behind.is_some()
    }
}

impl Default for SteadyClock<SystemClock> {
    fn default() -> Self {
        SteadyClock::new(SystemClock)
    }
}

impl<W: Clock> Clock for SteadyClock<W> {
    fn now_ms(&self) -> Millis {
        // Both clocks are read under the lock, so reads in turn see the
        // wall clock in its own order.
        let mut state = self.state.lock();
        let wall = self.wall.now_ms();
        let read_at = Instant::now();
        let since = |at: Instant| read_at.saturating_duration_since(at).as_millis() as Millis;
        let now = match state.behind {
            None if wall >= state.last => wall,
            None => {
                tracing::warn!(
                    stepped_back_ms = state.last - wall,
                    "the wall clock stepped back; time goes on at the monotonic clock's rate until it catches up"
                );
                state.behind = Some((state.last, state.read_at));
                state.last + since(state.read_at)
            }
            Some((from, at)) => {
                let steady = from + since(at);
                if wall >= steady {
                    state.behind = None;
                    wall
                } else {
                    steady
                }
            }
        };
        let now = now.max(state.last);
        (state.last, state.read_at) = (now, read_at);
        now
    }

    fn not_before(&self, at: Millis) {
        let mut state = self.state.lock();
        if at > state.last {
            (state.last, state.read_at) = (at, Instant::now());
        }
    }
}

/// A clock a test moves by hand.
#[derive(Clone, Default)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    pub fn new(start: Millis) -> ManualClock {
        ManualClock(Arc::new(AtomicU64::new(start)))
    }
    pub fn advance(&self, by: Millis) {
        self.0.fetch_add(by, Ordering::SeqCst);
    }
    /// Sets the time, backwards too: a wall clock being set.
    pub fn set(&self, to: Millis) {
        self.0.store(to, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> Millis {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const HOUR_MS: Millis = 3_600_000;
    const START: Millis = 1_800_000_000_000;

    #[test]
    fn follows_the_wall_clock_forwards() {
        let wall = ManualClock::new(START);
        let clock = SteadyClock::new(wall.clone());
        assert_eq!(clock.now_ms(), START);
        wall.advance(1_500);
        assert_eq!(clock.now_ms(), START + 1_500);
        // A jump forwards is followed too.
        wall.advance(HOUR_MS);
        assert_eq!(clock.now_ms(), START + 1_500 + HOUR_MS);
        assert!(!clock.wall_behind());
    }

    #[test]
    fn a_step_back_keeps_time_moving_forwards_at_the_monotonic_rate() {
        let wall = ManualClock::new(START);
        let clock = SteadyClock::new(wall.clone());
        let read = Instant::now();
        assert_eq!(clock.now_ms(), START);
        wall.set(START - HOUR_MS);
        let held = clock.now_ms();
        assert!((START..START + 50).contains(&held), "never earlier than the last time read: {held}");
        assert!(clock.wall_behind());
        std::thread::sleep(Duration::from_millis(120));
        let later = clock.now_ms();
        let elapsed = read.elapsed().as_millis() as Millis;
        assert!(later >= START + 120 && later <= START + elapsed, "{} ms after the step", later - START);
        // The wall clock moving on while still behind changes nothing.
        wall.advance(30 * 60_000);
        let again = clock.now_ms();
        assert!(again >= later && again < START + 10_000, "{again}");
        // Reads in a row never go backwards.
        let mut previous = again;
        for _ in 0..1_000 {
            let now = clock.now_ms();
            assert!(now >= previous);
            previous = now;
        }
    }

    #[test]
    fn once_the_wall_clock_is_ahead_again_it_is_followed() {
        let wall = ManualClock::new(START);
        let clock = SteadyClock::new(wall.clone());
        clock.now_ms();
        wall.set(START - HOUR_MS);
        let held = clock.now_ms();
        assert!(clock.wall_behind());
        // Back past where time stood, plus a little.
        wall.set(START + 5_000);
        assert_eq!(clock.now_ms(), START + 5_000);
        assert!(!clock.wall_behind());
        assert!(held <= START + 5_000);
        wall.advance(10);
        assert_eq!(clock.now_ms(), START + 5_010);
        // A second step back starts from the time read last.
        wall.set(START);
        let held = clock.now_ms();
        assert!((START + 5_010..START + 5_060).contains(&held), "{held}");
        assert!(clock.wall_behind());
    }

    #[test]
    fn a_time_already_used_is_not_read_again_earlier() {
        // The journal's last entry is an hour ahead of the wall clock.
        let wall = ManualClock::new(START - HOUR_MS);
        let clock = SteadyClock::new(wall.clone());
        clock.not_before(START);
        let first = clock.now_ms();
        assert!((START..START + 50).contains(&first), "{first}");
        assert!(clock.wall_behind());
        std::thread::sleep(Duration::from_millis(50));
        assert!(clock.now_ms() >= START + 50);
        // An earlier time changes nothing.
        clock.not_before(START - 1);
        assert!(clock.now_ms() >= START + 50);
    }
}
