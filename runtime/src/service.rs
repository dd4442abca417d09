//! Starting and stopping the shards: one loop thread per journal, the
//! snapshotter thread and the audit tailer thread.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use inventory_audit::{AuditLog, AuditedUpto, TailedShard};
use inventory_cold::ColdStore;
use inventory_core::{Millis, ShardConfig, IDEMPOTENCY_TTL_MS};
use inventory_journal::follow::Followers;
use inventory_journal::{Journal, JournalError};

use crate::clock::Clock;
use crate::limiter::QueryLimiter;
use crate::metrics::Metrics;
use crate::router::{IdemIndex, Router};
use crate::shard_loop::{
    self, resolve_lookups, Evicting, Lanes, LoopConfig, LoopContext, Request, ShardCold, LOOKUPS_MAX,
};
use crate::snapshotter::{SnapshotConfig, SnapshotRequest, Snapshotter};

#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Snapshots live in `<data_dir>/snapshots`, the audit log in
    /// `<data_dir>/audit`.
    pub data_dir: PathBuf,
    /// Requests queued per shard before senders are refused, in each of
    /// its two lanes (writes; reads).
    pub queue_capacity: usize,
    /// Most requests one shard applies per journal flush.
    pub batch_max: usize,
    /// Pin each shard loop to a core.
    pub pin_threads: bool,
    /// SKUs (over all shards) to size the stock index for once recovered.
    pub expected_skus: u64,
    /// Snapshot a shard once this many entries accumulated since its last
    /// (0: only on request).
    pub snapshot_every_entries: u64,
    /// Snapshots kept per shard.
    pub snapshots_keep: usize,
    /// Finished holds and idempotency records stay in memory this long
    /// after they finish or are made, then move to the cold tier under
    /// `<data_dir>/cold` (`None`: everything stays in memory).
    pub hot: Option<HotWindows>,
    /// Stock queries admitted per second over all callers, with a burst
    /// of one second's worth ([`QueryLimiter`]); 0: unlimited.
    pub query_rate_limit: u64,
}

/// How long records stay in memory before they move to the cold tier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HotWindows {
    pub holds_ms: Millis,
    pub keys_ms: Millis,
}

impl RuntimeConfig {
    pub fn snapshot_dir(&self) -> PathBuf {
        self.data_dir.join("snapshots")
    }

    pub fn audit_dir(&self) -> PathBuf {
        self.data_dir.join("audit")
    }

    pub fn cold_dir(&self, shard: u16) -> PathBuf {
        self.data_dir.join("cold").join(format!("shard-{shard}"))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("a shard loop stopped during start-up")]
    ShardLost,
    #[error(transparent)]
    Cold(#[from] inventory_cold::ColdError),
}

/// What callers use while the shards run: shared by every request.
pub struct Runtime {
    pub router: Arc<Router>,
    pub idem: Arc<IdemIndex>,
    pub metrics: Arc<Metrics>,
    pub clock: Arc<dyn Clock>,
    /// Per shard: the journal's head and its followers' cursors.
    pub followers: Vec<Arc<Followers>>,
    /// Read handles on every shard's journal.
    pub readers: Vec<Arc<dyn Journal + Sync>>,
    /// Every shard's cold store, by shard (empty when nothing leaves
    /// memory).
    pub cold: Vec<Arc<ColdStore>>,
    /// Asks the snapshotter for a snapshot of every shard now. The
    /// snapshotter stops once every copy of this is dropped.
    pub snapshots: Sender<SnapshotRequest>,
    /// Where the shards' snapshots are: a journal starts after the oldest.
    pub snapshot_dir: std::path::PathBuf,
    /// The query rate limit, shared by every caller.
    pub queries: QueryLimiter,
}

/// The threads behind a [`Runtime`], to stop it.
pub struct Threads {
    router: Arc<Router>,
    ready: Receiver<(u16, Result<u64, JournalError>)>,
    loops: Vec<JoinHandle<()>>,
    snapshotter: JoinHandle<()>,
    audit: JoinHandle<()>,
    /// The followers that end once the shards have stopped: the audit
    /// tailer and the cold stores' followers.
    follower_stop: Arc<AtomicBool>,
    cold: Vec<JoinHandle<()>>,
}

impl Runtime {
    /// Starts a shard loop per journal (each begins replaying at once), the
    /// snapshotter and the audit tailer. `followers[i]` is shard `i`'s,
    /// with every follower outside the runtime (the PostgreSQL writer)
    /// already registered: the snapshotter may truncate as soon as it runs.
    pub fn start(
        config: RuntimeConfig,
        journals: Vec<Box<dyn Journal>>,
        followers: Vec<Arc<Followers>>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
    ) -> Result<(Runtime, Threads), RuntimeError> {
        let shards = journals.len() as u16;
        assert_eq!(followers.len(), journals.len(), "one set of followers per shard");
        let idem = Arc::new(IdemIndex::new(IDEMPOTENCY_TTL_MS, shards));
        let readers: Vec<Arc<dyn Journal + Sync>> = journals.iter().map(|j| Arc::from(j.reader())).collect();
        let audited_upto: Vec<Arc<AuditedUpto>> = (0..shards).map(|_| Arc::default()).collect();

        // The audit tailer's cursors are registered, at the log's last
        // audited entries, before anything can truncate.
        let audit_log = AuditLog::open(&config.audit_dir())?;
        let tailed: Vec<TailedShard> = (0..shards as usize)
            .map(|i| {
                let cursor = followers[i].follow(inventory_audit::tail::FOLLOWER);
                cursor.advance(audit_log.audited_upto(i as u16), 0);
                TailedShard {
                    reader: readers[i].clone(),
                    followers: followers[i].clone(),
                    cursor,
                    audited_upto: audited_upto[i].clone(),
                }
            })
            .collect();

        let follower_stop = Arc::new(AtomicBool::new(false));
        let shared = Shared { clock: &clock, stop: &follower_stop, metrics: &metrics };
        let (mut cold_threads, mut stores) = (Vec::new(), Vec::new());
        let cores = if config.pin_threads { core_affinity::get_core_ids().unwrap_or_default() } else { Vec::new() };
        let (ready_tx, ready) = crossbeam_channel::unbounded();
        let mut queues = Vec::with_capacity(shards as usize);
        let mut read_queues = Vec::with_capacity(shards as usize);
        let mut loops = Vec::with_capacity(shards as usize);
        for (i, journal) in journals.into_iter().enumerate() {
            let (tx, rx) = crossbeam_channel::bounded(config.queue_capacity.max(1));
            let (read_tx, read_rx) = crossbeam_channel::bounded(config.queue_capacity.max(1));
            read_queues.push(read_tx);
            // A data dir that moved records out before keeps its stores for
            // lookups, whether or not records move out now.
            let cold = if config.hot.is_some() || config.cold_dir(i as u16).exists() {
                let (cold, threads) = start_cold(&config, i, &readers[i], &followers[i], &tx, &shared)?;
                cold_threads.extend(threads);
                stores.push(cold.store.clone());
                Some(cold)
            } else {
                None
            };
            queues.push(tx);
            let loop_config = LoopConfig {
                shard: ShardConfig::new(i as u16),
                snapshots: Some(config.snapshot_dir()),
                batch_max: config.batch_max,
                core: (!cores.is_empty()).then(|| cores[i % cores.len()]),
                expected_skus: config.expected_skus.div_ceil(shards as u64) as usize,
            };
            let context = LoopContext {
                clock: clock.clone(),
                idem_index: idem.clone(),
                metrics: metrics.clone(),
                followers: followers[i].clone(),
                audited_upto: audited_upto[i].clone(),
                cold,
            };
            let ready = ready_tx.clone();
            loops.push(std::thread::Builder::new().name(format!("shard-{i}")).spawn(move || {
                shard_loop::run(loop_config, journal, context, Lanes { writes: rx, reads: read_rx }, ready)
            })?);
        }
        let router = Arc::new(Router::new(queues, read_queues));

        let (snapshots, snapshot_requests) = crossbeam_channel::unbounded();
        let snapshotter = Snapshotter {
            config: SnapshotConfig {
                dir: config.snapshot_dir(),
                every_entries: if config.snapshot_every_entries == 0 {
                    u64::MAX
                } else {
                    config.snapshot_every_entries
                },
                check_every: Duration::from_secs(1),
                keep: config.snapshots_keep,
            },
            shard_configs: (0..shards).map(ShardConfig::new).collect(),
            readers: readers.clone(),
            followers: followers.clone(),
        };
        let snapshotter =
            std::thread::Builder::new().name("snapshots".into()).spawn(move || snapshotter.run(snapshot_requests))?;

        let audit = {
            let stop = follower_stop.clone();
            std::thread::Builder::new().name("audit".into()).spawn(move || {
                crate::lower_thread_priority();
                inventory_audit::run_tailer(audit_log, tailed, stop)
            })?
        };

        let runtime = Runtime {
            router: router.clone(),
            idem: idem.clone(),
            metrics,
            clock,
            followers,
            readers,
            cold: stores,
            snapshots,
            snapshot_dir: config.snapshot_dir(),
            queries: QueryLimiter::new(config.query_rate_limit),
        };
        let threads = Threads { router, ready, loops, snapshotter, audit, follower_stop, cold: cold_threads };
        Ok((runtime, threads))
    }

    pub fn shards(&self) -> u16 {
        self.router.shards()
    }
}

/// The shards' replay, to wait for.
pub struct Replay {
    router: Arc<Router>,
    ready: Receiver<(u16, Result<u64, JournalError>)>,
}

impl Replay {
    /// Waits (blocking) until every shard has replayed its journal, then
    /// marks the router ready. An error is the first shard's that failed.
    pub fn wait(self) -> Result<(), RuntimeError> {
        for _ in 0..self.router.shards() {
            match self.ready.recv() {
                Ok((_, Ok(_))) => {}
                Ok((_, Err(e))) => return Err(e.into()),
                Err(_) => return Err(RuntimeError::ShardLost),
            }
        }
        crate::disable_transparent_huge_pages();
        self.router.set_ready();
        tracing::info!(shards = self.router.shards(), "ready");
        Ok(())
    }
}

impl Threads {
    /// The replay the shard loops began at start.
    pub fn replay(&self) -> Replay {
        Replay { router: self.router.clone(), ready: self.ready.clone() }
    }

    /// Stops the shards (blocking): a stop marker is queued behind every
    /// request already queued, so each is answered and flushed; then the
    /// audit tailer catches up and ends, and the snapshotter ends once the
    /// last [`Runtime`] (and its snapshot queue) is gone.
    pub fn stop(self) {
        self.router.stop_all();
        for thread in self.loops {
            let _ = thread.join();
        }
        self.follower_stop.store(true, Ordering::Release);
        let _ = self.audit.join();
        for thread in self.cold {
            let _ = thread.join();
        }
        drop(self.router);
        let _ = self.snapshotter.join();
    }
}

/// What every shard's cold tier shares.
struct Shared<'a> {
    clock: &'a Arc<dyn Clock>,
    /// Set when the followers are to finish.
    stop: &'a Arc<AtomicBool>,
    metrics: &'a Metrics,
}

/// Opens shard `shard`'s cold store and starts the thread that answers its
/// loop's lookups and, when records move out of memory, its follower.
fn start_cold(
    config: &RuntimeConfig,
    shard: usize,
    reader: &Arc<dyn Journal + Sync>,
    followers: &Arc<Followers>,
    queue: &Sender<Request>,
    shared: &Shared,
) -> Result<(ShardCold, Vec<JoinHandle<()>>), RuntimeError> {
    let Shared { clock, stop, metrics } = *shared;
    let shard_config = ShardConfig::new(shard as u16);
    let store = Arc::new(ColdStore::open(
        &config.cold_dir(shard as u16),
        shard_config.tiers.clone(),
        shard_config.idempotency_ttl_ms,
    )?);
    let mut threads = Vec::new();
    let evicting = match config.hot {
        Some(hot) => {
            let position = store.position()?;
            let cursor = followers.follow(inventory_cold::FOLLOWER);
            cursor.advance(position.seq, position.at);
            let (store, reader, followers, follower, clock, stop) =
                (store.clone(), reader.clone(), followers.clone(), cursor.clone(), clock.clone(), stop.clone());
            // At the shard loops' priority: memory holds what it has not taken.
            threads.push(std::thread::Builder::new().name(format!("cold-{shard}")).spawn(move || {
                inventory_cold::run_follower(store, reader, followers, follower, move || clock.now_ms(), stop)
            })?);
            Some(Evicting { cursor, holds_hot_ms: hot.holds_ms, keys_hot_ms: hot.keys_ms })
        }
        None => None,
    };
    let (lookups, waiting) = crossbeam_channel::bounded(LOOKUPS_MAX);
    let resolver = {
        let (store, queue, seconds) = (store.clone(), queue.clone(), metrics.cold_lookup_seconds.clone());
        std::thread::Builder::new()
            .name(format!("cold-lookup-{shard}"))
            .spawn(move || resolve_lookups(store, waiting, queue, seconds))?
    };
    threads.push(resolver);
    Ok((ShardCold { store, lookups, evicting }, threads))
}
