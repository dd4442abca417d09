//! The relay: one task per shard, following that shard's journal from its
//! durable position and publishing each change as an event.
//!
//! A shard's events go out in journal order, a batch at a time; the next
//! batch starts only once the broker acknowledged the last one, so a
//! consumer sees a shard's changes (and so every SKU's) in order. The
//! position is written at most every [`PERSIST_EVERY`] and the cursor, which
//! holds back journal truncation, moves only to a written position: after a
//! crash the relay publishes again from there, and the broker (inside its
//! duplicate window) or the consumer (by id) drops what it already has.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use inventory_core::Entry;
use inventory_journal::follow::{Cursor, Followers};
use inventory_journal::Journal;
use parking_lot::Mutex;
use tokio::task::JoinHandle;

use crate::event::Change;
use crate::position::Positions;
use crate::sink::{Outgoing, Sink};

/// The name of the relay's cursor on each shard's journal.
pub const FOLLOWER: &str = "events";

/// How often a shard's position is written while events flow.
pub const PERSIST_EVERY: Duration = Duration::from_millis(100);

/// How long a shard's task sleeps when its journal has nothing new.
const IDLE_SLEEP: Duration = Duration::from_millis(2);

#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// The broker, e.g. `nats://127.0.0.1:4222`.
    pub url: String,
    pub stream: String,
    /// The CloudEvents `source` of every event.
    pub source: String,
    /// Most journal entries per publish.
    pub batch_max: usize,
}

/// One shard's relay: its cursor (the durable position) and counters.
pub struct ShardRelay {
    pub followers: Arc<Followers>,
    /// Every entry up to here is published and the position is durable.
    pub cursor: Arc<Cursor>,
    /// Events acknowledged by the broker.
    pub published: AtomicU64,
    /// Journal entries that were covered by a snapshot when the relay
    /// reached them (never published; see [`spawn_relay`]).
    pub skipped: AtomicU64,
}

impl ShardRelay {
    pub fn lag_entries(&self) -> u64 {
        self.cursor.lag_entries(&self.followers)
    }
}

/// What the status endpoint and the gauges read.
pub struct RelayStatus {
    pub config: RelayConfig,
    pub shards: Vec<Arc<ShardRelay>>,
    pub connected: AtomicBool,
    last_error: Mutex<Option<(String, u64)>>,
}

impl RelayStatus {
    /// Registers the relay as a follower of every shard's journal. Until
    /// it has read its positions, it holds back every entry from
    /// truncation.
    pub fn follow(config: RelayConfig, followers: &[Arc<Followers>]) -> Arc<RelayStatus> {
        let shards = followers
            .iter()
            .map(|f| {
                Arc::new(ShardRelay {
                    followers: f.clone(),
                    cursor: f.follow(FOLLOWER),
                    published: AtomicU64::new(0),
                    skipped: AtomicU64::new(0),
                })
            })
            .collect();
        Arc::new(RelayStatus { config, shards, connected: AtomicBool::new(false), last_error: Mutex::new(None) })
    }

    /// The last publish error and its wall time (ms), until a publish
    /// succeeds.
    pub fn last_error(&self) -> Option<(String, u64)> {
        self.last_error.lock().clone()
    }

    fn failed(&self, error: String) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        self.connected.store(false, Ordering::Release);
        *self.last_error.lock() = Some((error, now));
    }

    fn succeeded(&self) {
        if !self.connected.swap(true, Ordering::AcqRel) {
            *self.last_error.lock() = None;
        }
    }
}

/// Starts one task per shard. `readers[i]` reads shard `i`'s journal;
/// `make_sink` makes each task's own connection. A shard whose position
/// cannot be read does not publish (it logs why and holds its journal).
///
/// Entries that a snapshot already covers when the relay reaches them
/// (the relay was off while the journal was truncated, or the data dir was
/// restored) are not in the journal and are skipped with a warning.
pub fn spawn_relay<S, F>(
    status: Arc<RelayStatus>,
    positions: Arc<Positions>,
    readers: Vec<Arc<dyn Journal + Sync>>,
    make_sink: F,
) -> Vec<JoinHandle<()>>
where
    S: Sink + 'static,
    F: Fn() -> S,
{
    readers
        .into_iter()
        .enumerate()
        .map(|(shard, reader)| {
            let (status, positions, sink) = (status.clone(), positions.clone(), make_sink());
            tokio::spawn(async move {
                if let Err(e) = run_shard(shard as u16, &status, &positions, reader, sink).await {
                    tracing::error!(shard, error = %e, "event relay stopped; it resumes from its position at the next start");
                    status.failed(e.to_string());
                }
            })
        })
        .collect()
}

async fn run_shard<S: Sink>(
    shard: u16,
    status: &RelayStatus,
    positions: &Positions,
    reader: Arc<dyn Journal + Sync>,
    mut sink: S,
) -> std::io::Result<()> {
    let relay = &status.shards[shard as usize];
    let (mut published, mut published_at) = positions.load(shard)?;
    relay.cursor.advance(published, published_at);
    let mut persisted_at = Instant::now();
    if let Some(backlog) = positions.backlog(shard)? {
        tracing::info!(shard, events = backlog.len(), "event relay: publishing the backlog a restore left");
        for batch in backlog.chunks(status.config.batch_max.max(1)) {
            publish(shard, status, &mut sink, batch).await;
            relay.published.fetch_add(batch.len() as u64, Ordering::Relaxed);
        }
        positions.remove_backlog(shard)?;
    }
    tracing::info!(shard, position = published, "event relay following the journal");
    loop {
        let durable = relay.followers.durable();
        if published >= durable {
            if relay.cursor.position() < published {
                positions.store(shard, published, published_at)?;
                relay.cursor.advance(published, published_at);
            }
            tokio::time::sleep(IDLE_SLEEP).await;
            continue;
        }
        let count = (durable - published).min(status.config.batch_max as u64) as usize;
        let entries = read(&reader, published + 1, count).await?;
        let (to, to_at) = match entries.last() {
            Some(last) => (last.seq, last.at),
            None => (durable, relay.followers.durable_at()),
        };
        let first = entries.first().map_or(to + 1, |e| e.seq);
        if first > published + 1 {
            let missing = first - published - 1;
            tracing::warn!(shard, from = published + 1, to = first - 1, "event relay: journal entries covered by a snapshot are not in the journal; their events are not published");
            relay.skipped.fetch_add(missing, Ordering::Relaxed);
        }
        let batch = outgoing(shard, &entries, &status.config.source);
        publish(shard, status, &mut sink, &batch).await;
        relay.published.fetch_add(batch.len() as u64, Ordering::Relaxed);
        (published, published_at) = (to, to_at);
        if persisted_at.elapsed() >= PERSIST_EVERY {
            positions.store(shard, published, published_at)?;
            relay.cursor.advance(published, published_at);
            persisted_at = Instant::now();
        }
    }
}

/// Publishes `batch`, retrying until the broker takes all of it.
async fn publish<S: Sink>(shard: u16, status: &RelayStatus, sink: &mut S, batch: &[Outgoing]) {
    let mut backoff = Duration::from_millis(100);
    while let Err(e) = sink.publish(batch).await {
        tracing::warn!(shard, error = %e, retry_in_ms = backoff.as_millis() as u64, "event relay: publish failed; retrying");
        status.failed(e.to_string());
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
    status.succeeded();
}

/// The events of a run of entries, in journal order.
pub fn outgoing(shard: u16, entries: &[Entry], source: &str) -> Vec<Outgoing> {
    let mut out = Vec::new();
    for entry in entries {
        for t in &entry.txns {
            let change = Change::of_txn(shard, entry.seq, entry.trace_id, &entry.operator, t);
            out.push(to_outgoing(&change, source));
        }
    }
    out
}

pub fn to_outgoing(change: &Change, source: &str) -> Outgoing {
    let payload = serde_json::to_vec(&change.to_cloud_event(source)).expect("an event is JSON");
    Outgoing { subject: change.subject(), id: change.id(), payload: Bytes::from(payload) }
}

/// Reads up to `count` entries from `from` (blocking journal reads, off the
/// async threads). Fewer, or a later first one, where a snapshot covers
/// the start.
async fn read(reader: &Arc<dyn Journal + Sync>, from: u64, count: usize) -> std::io::Result<Vec<Entry>> {
    let reader = reader.clone();
    tokio::task::spawn_blocking(move || -> std::io::Result<Vec<Entry>> {
        let mut out = Vec::with_capacity(count);
        let iter = reader.read_from(from).map_err(std::io::Error::other)?;
        for entry in iter {
            let entry = entry.map_err(std::io::Error::other)?;
            if entry.seq >= from + count as u64 {
                break;
            }
            out.push(entry);
        }
        Ok(out)
    })
    .await
    .expect("journal read panicked")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::SinkError;
    use inventory_core::{Command, Receive, Reserve, Shard, ShardConfig, DEFAULT_WAREHOUSE};
    use inventory_journal::MemJournal;

    /// A broker in memory that can be told to refuse publishes.
    #[derive(Clone, Default)]
    struct Memory {
        taken: Arc<Mutex<Vec<Outgoing>>>,
        down: Arc<AtomicBool>,
    }

    impl Sink for Memory {
        async fn publish(&mut self, batch: &[Outgoing]) -> Result<(), SinkError> {
            if self.down.load(Ordering::SeqCst) {
                return Err(SinkError::Publish("down".into()));
            }
            self.taken.lock().extend_from_slice(batch);
            Ok(())
        }
    }

    /// A journal of one receipt and `n - 1` reserves, all acknowledged.
    fn journal_with_changes(n: u64) -> (Box<dyn Journal + Sync>, Arc<Followers>) {
        let (mut shard, mut journal) = (Shard::new(ShardConfig::new(0)), MemJournal::new(0));
        let followers = Arc::new(Followers::default());
        for seq in 1..=n {
            let command = if seq == 1 {
                Command::Receive(Receive {
                    sku_id: "s".into(),
                    warehouse_id: DEFAULT_WAREHOUSE.into(),
                    qty: 1_000,
                    idem_key: "receive".into(),
                    reference: String::new(),
                })
            } else {
                Command::Reserve(Reserve {
                    order_id: format!("o{seq}"),
                    sku_id: "s".into(),
                    warehouse_id: DEFAULT_WAREHOUSE.into(),
                    qty: 1,
                    idem_key: format!("reserve-{seq}"),
                    ttl_ms: 60_000,
                    ttl_explicit: false,
                })
            };
            let mut txns = Vec::new();
            assert!(shard.apply(seq, &command, &mut txns).changed);
            let entry =
                Entry { seq, at: seq, trace_id: 0, operator: "t".into(), command, txns, cold: Default::default() };
            journal.append(std::slice::from_ref(&entry)).unwrap();
        }
        followers.publish(n, n);
        (journal.reader(), followers)
    }

    #[tokio::test]
    async fn every_change_is_published_in_order_and_the_position_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, followers) = journal_with_changes(50);
        let reader: Arc<dyn Journal + Sync> = Arc::from(journal);
        let config = RelayConfig { url: String::new(), stream: "S".into(), source: "test".into(), batch_max: 7 };
        let broker = Memory::default();
        broker.down.store(true, Ordering::SeqCst);
        let status = RelayStatus::follow(config.clone(), std::slice::from_ref(&followers));
        let positions = Arc::new(Positions::open(dir.path()).unwrap());
        let tasks = spawn_relay(status.clone(), positions.clone(), vec![reader.clone()], || broker.clone());
        tokio::time::sleep(Duration::from_millis(300)).await;
        // While the broker refuses, nothing moves and the journal is held.
        assert!(broker.taken.lock().is_empty());
        assert_eq!(status.shards[0].lag_entries(), 50);
        assert!(status.last_error().is_some());
        assert_eq!(followers.truncation_bound().1, Some(FOLLOWER));
        broker.down.store(false, Ordering::SeqCst);
        wait_until(|| status.shards[0].cursor.position() == 50).await;
        let ids: Vec<String> = broker.taken.lock().iter().map(|o| o.id.clone()).collect();
        assert_eq!(ids.len(), 50);
        let seqs: Vec<u64> = broker
            .taken
            .lock()
            .iter()
            .map(|o| serde_json::from_slice::<serde_json::Value>(&o.payload).unwrap()["data"]["seq"].as_u64().unwrap())
            .collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "journal order: {seqs:?}");
        assert!(status.last_error().is_none());
        for task in tasks {
            task.abort();
        }
        assert_eq!(positions.load(0).unwrap().0, 50);

        // A new relay on the same positions publishes nothing again.
        let again = Memory::default();
        let status = RelayStatus::follow(config, std::slice::from_ref(&followers));
        let tasks = spawn_relay(status.clone(), positions, vec![reader], || again.clone());
        wait_until(|| status.shards[0].cursor.position() == 50).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(again.taken.lock().is_empty());
        for task in tasks {
            task.abort();
        }
    }

    async fn wait_until(mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "timed out");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
