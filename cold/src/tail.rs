//! The follower that builds a shard's cold store from its journal: it reads
//! from the store's position up to the journal's head, has the store take
//! the entries, makes them durable a few times a second, and then moves its
//! cursor, which holds back truncation and tells the shard loop what it may
//! forget. After the store fails to write (a full disk), it opens the
//! store again and resumes from the store's position.

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
    // The last entry the store has taken, and since when what it has taken
    // past the cursor is not yet durable.
    let mut taken = (cursor.position(), cursor.position_at());
    let mut pending: Option<Instant> = None;
    // Set after the store failed: fjall refuses every write after a failed
    // one until the database is opened again.
    let mut reopen = false;
    loop {
        if reopen {
            match store.reopen().and_then(|()| store.position()) {
                Ok(position) => {
                    // Resumes from what the reopened store holds: never past
                    // it, and what it holds beyond the cursor is made
                    // durable before the cursor moves.
                    tracing::info!(shard, position = position.seq, "cold store: opened again after a failure");
                    if position.seq < cursor.position() {
                        tracing::warn!(
                            shard,
                            position = position.seq,
                            cursor = cursor.position(),
                            "cold store: reopened behind its cursor; taking the journal again from its position"
                        );
                    }
                    taken = (position.seq, position.at);
                    pending = (position.seq > cursor.position()).then(Instant::now);
                    reopen = false;
                }
                Err(e) => {
                    tracing::error!(shard, error = %e, "cold store: cannot open it again; retrying");
                    if stop.load(Ordering::Acquire) {
                        return;
                    }
                    std::thread::sleep(RETRY_SLEEP);
                    continue;
                }
            }
        }
        if Instant::now() >= next_drop {
            next_drop = Instant::now() + DROP_EVERY;
            match store.drop_before(now()) {
                Ok(0) => {}
                Ok(dropped) => tracing::info!(shard, dropped, "cold store: slices past retention dropped"),
                Err(e) => tracing::error!(shard, error = %e, "cold store: cannot drop old slices"),
            }
        }
        // The shard loop moves the cursor itself when it seeds the store
        // from its state (a journal that starts after a snapshot).
        if pending.is_none() && cursor.position() > taken.0 {
            taken = (cursor.position(), cursor.position_at());
        }
        let stopping = stop.load(Ordering::Acquire);
        let from = taken.0 + 1;
        let durable = followers.durable();
        let caught_up = from > durable;
        if let Some(since) = pending {
            if caught_up || since.elapsed() >= PERSIST_EVERY {
                match store.persist() {
                    Ok(()) => {
                        if taken.0 >= cursor.position() {
                            cursor.advance(taken.0, taken.1);
                        }
                        pending = None;
                    }
                    Err(e) => {
                        tracing::error!(shard, error = %e, "cold store: cannot make taken entries durable; retrying");
                        if stopping {
                            return;
                        }
                        reopen = true;
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
        let taking = read.map_err(|e| e.to_string()).and_then(|()| match entries.first() {
            Some(first) if first.seq != from => Err(format!("the journal resumes at {} after {}", first.seq, from - 1)),
            _ => Ok(store.take(&entries)),
        });
        match (taking, entries.last()) {
            (Ok(Ok(())), Some(last)) => {
                taken = (last.seq, last.at);
                pending.get_or_insert_with(Instant::now);
            }
            (Ok(Ok(())), None) => std::thread::sleep(IDLE_SLEEP),
            (Ok(Err(e)), _) => {
                tracing::error!(shard, from, error = %e, "cold store: cannot take the journal; retrying");
                if stopping {
                    return;
                }
                reopen = e.is_storage();
                std::thread::sleep(RETRY_SLEEP);
            }
            (Err(e), _) => {
                tracing::error!(shard, from, error = %e, "cold store: cannot read the journal; retrying");
                if stopping {
                    return;
                }
                std::thread::sleep(RETRY_SLEEP);
            }
        }
    }
}
