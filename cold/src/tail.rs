//! The follower that builds a shard's cold store from its journal: it reads
//! from the store's position up to the journal's head, has the store take
//! the entries, makes them durable a few times a second, and then moves its
//! cursor, which holds back truncation and tells the shard loop what it may
//! forget.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use inventory_core::Millis;

use inventory_journal::follow::{Cursor, Followers};
use inventory_journal::Journal;

use crate::store::ColdStore;

/// The name of the cold store's cursor on each shard's journal.
pub const FOLLOWER: &str = "cold";

/// Most entries taken in one durable write.
const ENTRIES_MAX: usize = 4_096;
/// How long the follower sleeps when it has taken everything.
const IDLE_SLEEP: Duration = Duration::from_millis(10);
/// How often what it has taken is made durable (one `fdatasync`).
const PERSIST_EVERY: Duration = Duration::from_millis(200);
/// How long it waits after a failure before trying again.
const RETRY_SLEEP: Duration = Duration::from_millis(500);
/// How often it drops the slices whose retention has ended.
const DROP_EVERY: Duration = Duration::from_secs(60);

/// Follows one shard's journal into its cold store until `stop` is set and
/// it has taken everything acknowledged. `cursor` starts at the store's
/// position and moves only to what is durable in the store. Once a minute
/// it drops the slices whose retention has ended by `now()`.
pub fn run_follower(
    store: Arc<ColdStore>,
    reader: Arc<dyn Journal + Sync>,
    followers: Arc<Followers>,
    cursor: Arc<Cursor>,
    now: impl Fn() -> Millis,
    stop: Arc<AtomicBool>,
) {
    let shard = reader.shard();
    let mut entries = Vec::with_capacity(ENTRIES_MAX);
    let mut next_drop = Instant::now();
    // Taken but not yet durable: the last entry, and since when.
    let mut pending: Option<(u64, Millis, Instant)> = None;
    loop {
        if Instant::now() >= next_drop {
            next_drop = Instant::now() + DROP_EVERY;
            match store.drop_before(now()) {
                Ok(0) => {}
                Ok(dropped) => tracing::info!(shard, dropped, "cold store: slices past retention dropped"),
                Err(e) => tracing::error!(shard, error = %e, "cold store: cannot drop old slices"),
            }
        }
        let stopping = stop.load(Ordering::Acquire);
        let from = pending.map_or(cursor.position(), |(seq, ..)| seq) + 1;
        let durable = followers.durable();
        let caught_up = from > durable;
        if let Some((seq, at, since)) = pending {
            if caught_up || since.elapsed() >= PERSIST_EVERY {
                match store.persist() {
                    Ok(()) => {
                        cursor.advance(seq, at);
                        pending = None;
                    }
                    Err(e) => {
                        tracing::error!(shard, error = %e, "cold store: cannot make taken entries durable; retrying");
                        if stopping {
                            return;
                        }
                        std::thread::sleep(RETRY_SLEEP);
                        continue;
                    }
                }
            }
        }
        if caught_up {
            if stopping {
                return;
            }
            std::thread::sleep(IDLE_SLEEP);
            continue;
        }
        entries.clear();
        let read = reader.read_from(from).and_then(|it| {
            for entry in it {
                let entry = entry?;
                if entry.seq > durable || entries.len() >= ENTRIES_MAX {
                    break;
                }
                entries.push(entry);
            }
            Ok(())
        });
        let taken = read.map_err(|e| e.to_string()).and_then(|()| match entries.first() {
            Some(first) if first.seq != from => Err(format!("the journal resumes at {} after {}", first.seq, from - 1)),
            _ => store.take(&entries).map_err(|e| e.to_string()),
        });
        match (taken, entries.last()) {
            (Ok(()), Some(last)) => {
                let since = pending.map_or_else(Instant::now, |(.., since)| since);
                pending = Some((last.seq, last.at, since));
            }
            (Ok(()), None) => std::thread::sleep(IDLE_SLEEP),
            (Err(e), _) => {
                tracing::error!(shard, from, error = %e, "cold store: cannot take the journal; retrying");
                if stopping {
                    return;
                }
                std::thread::sleep(RETRY_SLEEP);
            }
        }
    }
}
