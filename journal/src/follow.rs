//! Followers of a shard's journal: where its acknowledged entries end, and
//! how far each reader that consumes them (the PostgreSQL writer, the audit
//! tailer) has durably taken them.
//!
//! The shard loop publishes its head after every group commit; a follower
//! reads the journal up to the head, makes what it read durable in its own
//! store, then moves its [`Cursor`]. The snapshotter truncates the journal
//! only below [`Followers::truncation_bound`], the lowest cursor, so an
//! entry leaves the journal only once every follower has taken it.
//!
//! Positions are journal sequences (entry `n` is taken when the cursor is at
//! `n` or beyond); times are the journal time of that entry, so a lag in
//! time needs no clock.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// One shard's journal head and the cursors of its followers.
#[derive(Default)]
pub struct Followers {
    durable: AtomicU64,
    durable_at: AtomicU64,
    cursors: Mutex<Vec<Arc<Cursor>>>,
}

impl Followers {
    /// Publishes the last acknowledged entry (time first: a reader that
    /// sees the new sequence also sees its time). Only the shard loop calls
    /// this, after the flush that made `seq` durable.
    pub fn publish(&self, seq: u64, at: u64) {
        self.durable_at.store(at, Ordering::Release);
        self.durable.store(seq, Ordering::Release);
    }

    /// The last acknowledged sequence: followers never read past it, since
    /// an entry beyond it may still be rolled back.
    pub fn durable(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }

    /// The journal time of [`durable`](Self::durable)'s entry.
    pub fn durable_at(&self) -> u64 {
        self.durable_at.load(Ordering::Acquire)
    }

    /// Registers a follower. Its cursor starts at 0, holding back every
    /// entry, until the follower moves it to where it resumes. Register
    /// before anything may truncate the journal.
    pub fn follow(&self, name: &'static str) -> Arc<Cursor> {
        let cursor = Arc::new(Cursor {
            name,
            position: AtomicU64::new(0),
            position_at: AtomicU64::new(0),
            heads_seen: Mutex::default(),
        });
        self.cursors.lock().push(cursor.clone());
        cursor
    }

    /// The cursors registered so far.
    pub fn cursors(&self) -> Vec<Arc<Cursor>> {
        self.cursors.lock().clone()
    }

    /// The highest sequence the journal may be truncated through: the
    /// lowest cursor, with its follower's name; `u64::MAX` and `None` when
    /// nobody follows.
    pub fn truncation_bound(&self) -> (u64, Option<&'static str>) {
        self.cursors
            .lock()
            .iter()
            .map(|c| (c.position(), Some(c.name)))
            .min_by_key(|&(position, _)| position)
            .unwrap_or((u64::MAX, None))
    }
}

/// How far one follower has durably taken one shard's journal.
pub struct Cursor {
    name: &'static str,
    position: AtomicU64,
    position_at: AtomicU64,
    /// Heads seen by [`Cursor::waiting`] and when, oldest first, down to
    /// the first one beyond the position.
    heads_seen: Mutex<VecDeque<(u64, Instant)>>,
}

impl Cursor {
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Every entry up to this sequence has been taken.
    pub fn position(&self) -> u64 {
        self.position.load(Ordering::Acquire)
    }

    /// The journal time of the entry at [`position`](Self::position) (0
    /// before the follower has said).
    pub fn position_at(&self) -> u64 {
        self.position_at.load(Ordering::Acquire)
    }

    /// Moves the cursor: every entry up to `seq` is durably taken.
    pub fn advance(&self, seq: u64, at: u64) {
        self.position_at.store(at, Ordering::Release);
        self.position.store(seq, Ordering::Release);
    }

    /// Entries acknowledged but not yet taken.
    pub fn lag_entries(&self, head: &Followers) -> u64 {
        head.durable().saturating_sub(self.position())
    }

    /// How far behind the head the follower is, in journal time (0 when it
    /// has taken everything).
    pub fn lag_ms(&self, head: &Followers) -> u64 {
        if self.lag_entries(head) == 0 {
            return 0;
        }
        head.durable_at().saturating_sub(self.position_at())
    }

    /// How long the oldest entry the follower has not taken has been
    /// acknowledged, in real time (zero when it has taken everything).
    /// Exact to within the interval between calls: call it regularly (the
    /// gauges do, several times a second). Unlike [`lag_ms`](Self::lag_ms)
    /// it keeps growing while the follower stands still and nothing new is
    /// journaled.
    pub fn waiting(&self, head: &Followers) -> Duration {
        self.waiting_at(head, Instant::now())
    }

    fn waiting_at(&self, head: &Followers, now: Instant) -> Duration {
        let (durable, position) = (head.durable(), self.position());
        let mut seen = self.heads_seen.lock();
        if seen.back().is_none_or(|&(seq, _)| seq < durable) {
            seen.push_back((durable, now));
        }
        while seen.front().is_some_and(|&(seq, _)| seq <= position) {
            seen.pop_front();
        }
        seen.front().map_or(Duration::ZERO, |&(_, since)| now.saturating_duration_since(since))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_journal_may_be_truncated_only_through_the_slowest_follower() {
        let followers = Followers::default();
        assert_eq!(followers.truncation_bound(), (u64::MAX, None));
        followers.publish(10, 1_000);
        let postgres = followers.follow("postgres");
        // A new follower holds back everything until it says where it is.
        assert_eq!(followers.truncation_bound(), (0, Some("postgres")));
        let audit = followers.follow("audit");
        postgres.advance(7, 700);
        audit.advance(9, 900);
        assert_eq!(followers.truncation_bound(), (7, Some("postgres")));
        postgres.advance(10, 1_000);
        assert_eq!(followers.truncation_bound(), (9, Some("audit")));
        assert_eq!(followers.cursors().len(), 2);
    }

    #[test]
    fn lag_is_counted_in_entries_and_journal_time() {
        let followers = Followers::default();
        let cursor = followers.follow("relay");
        followers.publish(5, 5_000);
        cursor.advance(3, 3_500);
        assert_eq!((cursor.lag_entries(&followers), cursor.lag_ms(&followers)), (2, 1_500));
        cursor.advance(5, 5_000);
        assert_eq!((cursor.lag_entries(&followers), cursor.lag_ms(&followers)), (0, 0));
    }

    #[test]
    fn waiting_is_the_real_time_since_the_oldest_untaken_entry_was_acknowledged() {
        let followers = Followers::default();
        let cursor = followers.follow("relay");
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        assert_eq!(cursor.waiting_at(&followers, at(0)), Duration::ZERO);
        followers.publish(3, 0);
        assert_eq!(cursor.waiting_at(&followers, at(100)), Duration::ZERO, "seen just now");
        followers.publish(5, 0);
        // Nothing new is journaled and the follower stands still: it grows.
        assert_eq!(cursor.waiting_at(&followers, at(1_100)), Duration::from_millis(1_000));
        assert_eq!(cursor.waiting_at(&followers, at(5_100)), Duration::from_millis(5_000));
        // Entries 1-3 are taken: what waits now is 4-5, seen at 1,100.
        cursor.advance(3, 0);
        assert_eq!(cursor.waiting_at(&followers, at(6_100)), Duration::from_millis(5_000));
        cursor.advance(5, 0);
        assert_eq!(cursor.waiting_at(&followers, at(6_200)), Duration::ZERO);
    }
}
