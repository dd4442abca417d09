//! Starting and stopping the service: shard threads, the accept loop, and
//! an orderly shutdown that answers and flushes everything in flight.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use inventory_core::{ShardConfig, IDEMPOTENCY_TTL_MS, SECOND_MS};
use inventory_journal::{Journal, JournalError, Store};
use tokio::net::TcpListener;

use crate::clock::{Clock, SystemClock};
use crate::config::{default_shards, Config};
use crate::http::{handle, App};
use crate::metrics::Metrics;
use crate::router::{IdemIndex, Router};
use crate::shard_loop::{self, LoopConfig, LoopContext};
use crate::snapshotter::{AuditMarks, SnapshotConfig, Snapshotter};
use inventory_journal::audit::AuditLog;
use inventory_persistence::{spawn_writers, Schema, ShardProgress, WriterConfig};
use std::sync::atomic::{AtomicU64, Ordering};

/// How long shutdown waits for open connections to finish their requests.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("a shard loop stopped during start-up")]
    ShardLost,
    #[error(transparent)]
    Persistence(#[from] inventory_persistence::PersistenceError),
}

/// Runs the service on `listener` with the journal under the data dir (sled
/// or segment files, see [`Store`]), until `shutdown` completes.
pub async fn run(config: Config, listener: TcpListener, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
    let dir = config.journal_dir();
    let (store, journals) = tokio::task::spawn_blocking(move || -> Result<_, JournalError> {
        let store = Store::open(&dir, config.journal, config.shards, default_shards())?;
        tracing::info!(journal = %store.backend(), shards = store.shards(), "journal open");
        let journals = (0..store.shards())
            .map(|i| Ok(store.journal(i)? as Box<dyn Journal>))
            .collect::<Result<Vec<_>, JournalError>>()?;
        Ok((store, journals))
    })
    .await
    .expect("journal open panicked")?;
    let result = run_with(config, listener, journals, Arc::new(SystemClock), shutdown).await;
    store.flush()?;
    result
}

/// Runs the service over the given journals (one per shard) and clock.
pub async fn run_with(
    config: Config,
    listener: TcpListener,
    journals: Vec<Box<dyn Journal>>,
    clock: Arc<dyn Clock>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let shards = journals.len() as u16;
    let idem = Arc::new(IdemIndex::new(IDEMPOTENCY_TTL_MS));
    let mut metrics = Metrics::new();
    if config.postgres_url.is_some() {
        metrics.register_persistence();
    }
    let metrics = Arc::new(metrics);
    let progress: Vec<Arc<ShardProgress>> = (0..shards).map(|_| Arc::default()).collect();
    let readers: Vec<Arc<dyn Journal + Sync>> = journals.iter().map(|j| Arc::from(j.reader())).collect();
    let postgres = config.postgres_url.clone().map(|url| -> Result<WriterConfig, ServerError> {
        Ok(WriterConfig {
            url,
            schema: Schema::new(&config.postgres_schema)?,
            batch_max: config.postgres_batch_max.max(1),
            reservation_retention_ms: config.reservation_retention_hours * 3_600_000,
            txn_retention_ms: config.txn_retention_hours * 3_600_000,
        })
    });
    let postgres = postgres.transpose()?;
    let audit_dir = config.data_dir.join("audit");
    let audit_log =
        tokio::task::spawn_blocking(move || AuditLog::open(&audit_dir)).await.expect("audit open panicked")?;
    // How far each shard's journal has been scanned for audited changes:
    // resume after the last audited one (entries without any are skipped).
    let audit_marks: AuditMarks = Arc::new((0..shards).map(|i| AtomicU64::new(audit_log.audited_upto(i))).collect());
    let audit_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let cores = if config.pin_threads { core_affinity::get_core_ids().unwrap_or_default() } else { Vec::new() };
    let (ready_tx, ready_rx) = crossbeam_channel::unbounded();
    let mut queues = Vec::with_capacity(shards as usize);
    let mut threads = Vec::with_capacity(shards as usize);
    for (i, journal) in journals.into_iter().enumerate() {
        let (tx, rx) = crossbeam_channel::bounded(config.queue_capacity.max(1));
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
            progress: progress.clone()[i].clone(),
        };
        let ready = ready_tx.clone();
        threads.push(
            std::thread::Builder::new()
                .name(format!("shard-{i}"))
                .spawn(move || shard_loop::run(loop_config, journal, context, rx, ready))?,
        );
    }
    drop(ready_tx);
    let router = Arc::new(Router::new(queues));
    let (snapshot_tx, snapshot_rx) = crossbeam_channel::unbounded();
    let snapshotter = Snapshotter {
        config: SnapshotConfig {
            dir: config.snapshot_dir(),
            every_entries: if config.snapshot_every_entries == 0 { u64::MAX } else { config.snapshot_every_entries },
            check_every: Duration::from_secs(1),
            keep: config.snapshots_keep as usize,
        },
        shard_configs: (0..shards).map(ShardConfig::new).collect(),
        readers: readers.clone(),
        progress: progress.clone(),
        postgres: postgres.is_some(),
        audit_marks: audit_marks.clone(),
    };
    let snapshot_thread =
        std::thread::Builder::new().name("snapshots".into()).spawn(move || snapshotter.run(snapshot_rx))?;
    let audit_thread = {
        let (readers, progress, marks, stop) =
            (readers.clone(), progress.clone(), audit_marks.clone(), audit_stop.clone());
        std::thread::Builder::new().name("audit".into()).spawn(move || {
            crate::lower_thread_priority();
            audit_tailer(audit_log, readers, progress, marks, stop)
        })?
    };
    let mut background = Vec::new();
    if let Some(writer) = &postgres {
        let own_readers = readers.iter().map(|r| r.reader()).collect();
        background.extend(spawn_writers(writer.clone(), own_readers, progress.clone(), config.writer_faults.clone()));
        background.push(tokio::spawn(crate::admin::persistence_gauges(
            writer.clone(),
            progress.clone(),
            metrics.clone(),
        )));
    }
    let app = Arc::new(App {
        snapshots: snapshot_tx,
        progress,
        readers,
        postgres,
        router: router.clone(),
        idem: idem.clone(),
        clock: clock.clone(),
        metrics,
        trace_ids: crate::trace::TraceIds::new(),
        default_ttl_ms: config.reservation_ttl_secs * SECOND_MS,
        max_qty: config.max_qty,
    });

    // Replay runs on the shard threads while the listener already answers
    // /healthz and /readyz (not ready yet).
    let replayed = {
        let router = router.clone();
        tokio::task::spawn_blocking(move || -> Result<(), ServerError> {
            for _ in 0..shards {
                match ready_rx.recv() {
                    Ok((_, Ok(_))) => {}
                    Ok((_, Err(e))) => return Err(e.into()),
                    Err(_) => return Err(ServerError::ShardLost),
                }
            }
            crate::disable_transparent_huge_pages();
            router.set_ready();
            tracing::info!(shards, "ready");
            Ok(())
        })
    };
    let purger = {
        let (idem, clock) = (idem.clone(), clock.clone());
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(60));
            loop {
                every.tick().await;
                idem.purge(clock.now_ms());
            }
        })
    };

    let http_threads = config.http_threads.unwrap_or(default_shards() as usize);
    let result = serve(listener, app.clone(), http_threads, shutdown, replayed).await;
    drop(app); // closes the snapshot queue once the connections are gone
    purger.abort();
    for task in background {
        task.abort();
    }
    // Queue a stop marker behind every request already queued, then wait
    // for the loops to answer and flush them.
    tokio::task::spawn_blocking(move || {
        router.stop_all();
        for t in threads {
            let _ = t.join();
        }
        // The loops have stopped: the audit thread catches up and ends.
        audit_stop.store(true, Ordering::Release);
        let _ = audit_thread.join();
        let _ = snapshot_thread.join();
    })
    .await
    .expect("shard shutdown panicked");
    tracing::info!("stopped");
    result
}

/// The HTTP threads. Each runs a current-thread runtime and serves, start to
/// end, the connections it is handed; the accept loop hands them out in
/// turn. A connection never moves between threads, so a request and its
/// reply cost no work stealing or hand-over between workers: a shard loop's
/// reply wakes the one thread that waits for it.
struct HttpThreads {
    handles: Vec<tokio::runtime::Handle>,
    stops: Vec<tokio::sync::oneshot::Sender<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    next: usize,
}

impl HttpThreads {
    fn start(count: usize) -> std::io::Result<HttpThreads> {
        let mut pool = HttpThreads { handles: Vec::new(), stops: Vec::new(), threads: Vec::new(), next: 0 };
        for i in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            pool.handles.push(runtime.handle().clone());
            pool.stops.push(stop);
            // Dropping the runtime at the end cancels whatever connection
            // outlived the drain.
            pool.threads.push(std::thread::Builder::new().name(format!("http-{i}")).spawn(move || {
                runtime.block_on(async {
                    let _ = stopped.await;
                })
            })?);
        }
        Ok(pool)
    }

    /// The runtime the next connection goes to.
    fn next(&mut self) -> &tokio::runtime::Handle {
        let handle = &self.handles[self.next % self.handles.len()];
        self.next = self.next.wrapping_add(1);
        handle
    }

    /// Stops the threads and waits for them (blocking).
    fn stop(self) {
        drop(self.stops);
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    http_threads: usize,
    shutdown: impl Future<Output = ()>,
    replayed: tokio::task::JoinHandle<Result<(), ServerError>>,
) -> Result<(), ServerError> {
    let mut pool = HttpThreads::start(http_threads)?;
    let result = accept_loop(listener, app, &mut pool, shutdown, replayed).await;
    tokio::task::spawn_blocking(move || pool.stop()).await.expect("stopping the HTTP threads panicked");
    result
}

async fn accept_loop(
    listener: TcpListener,
    app: Arc<App>,
    pool: &mut HttpThreads,
    shutdown: impl Future<Output = ()>,
    replayed: tokio::task::JoinHandle<Result<(), ServerError>>,
) -> Result<(), ServerError> {
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.keep_alive(true);
    tokio::pin!(shutdown);
    tokio::pin!(replayed);
    let mut replay_pending = true;
    let mut result = Ok(());
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        // Out of file descriptors and the like: back off briefly.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                // Moved to the HTTP thread's own reactor (it stays non-blocking).
                let stream = match stream.into_std() {
                    Ok(stream) => stream,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot hand over a connection");
                        continue;
                    }
                };
                let (app, http, watcher) = (app.clone(), http.clone(), graceful.watcher());
                pool.next().spawn(async move {
                    let stream = match tokio::net::TcpStream::from_std(stream) {
                        Ok(stream) => stream,
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot register a connection");
                            return;
                        }
                    };
                    let conn = http.serve_connection(TokioIo::new(stream), service_fn(move |req| handle(app.clone(), req)));
                    if let Err(e) = watcher.watch(conn).await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            done = &mut replayed, if replay_pending => {
                replay_pending = false;
                if let Err(e) = done.expect("replay watcher panicked") {
                    tracing::error!(error = %e, "start-up failed");
                    result = Err(e);
                    break;
                }
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(DRAIN_TIMEOUT) => tracing::warn!("connections still open after the drain timeout"),
    }
    result
}

/// Tails every shard's journal (never past its last acknowledged entry) and
/// appends the audited changes it finds. Memory stays bounded however far
/// behind it falls, and after a crash it simply resumes after the last
/// change in the log. If the log cannot be written it stops (so nothing is
/// skipped); the next start resumes from the log.
fn audit_tailer(
    mut log: AuditLog,
    readers: Vec<Arc<dyn Journal + Sync>>,
    progress: Vec<Arc<ShardProgress>>,
    marks: AuditMarks,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    // Bounds one append, in audited rows (a bulk receipt is one record of
    // up to 10,000 rows).
    const ROWS_MAX: usize = 50_000;
    loop {
        let stopping = stop.load(Ordering::Acquire);
        let mut idle = true;
        for (shard, reader) in readers.iter().enumerate() {
            let from = marks[shard].load(Ordering::Acquire) + 1;
            let durable = progress[shard].durable.load(Ordering::Acquire);
            if from > durable {
                continue;
            }
            // Read after `durable`, so it covers every entry up to it.
            if progress[shard].receipts_upto.load(Ordering::Acquire) < from {
                // Nothing the log records was journaled since the mark.
                marks[shard].store(durable, Ordering::Release);
                continue;
            }
            idle = false;
            let (mut events, mut rows) = (Vec::new(), 0);
            let mut scanned = from - 1;
            let read = reader.visit_records(from, &mut |seq, record| {
                if seq > durable || rows >= ROWS_MAX {
                    return Ok(false);
                }
                scanned = seq;
                if let Some(event) = inventory_journal::audit::pending_of_record(shard as u16, seq, record)? {
                    rows += event.rows();
                    events.push(event);
                }
                Ok(true)
            });
            if let Err(e) = read {
                tracing::error!(shard, error = %e, "audit: cannot read the journal; auditing stops until restart");
                return;
            }
            if scanned < from {
                // Nothing from `from` to `durable` is in the journal: a
                // snapshot covers it and the journal holds nothing after it
                // yet (a data dir made by `restore`, or one whose audit log
                // was lost). There is nothing here to audit.
                tracing::warn!(shard, from, to = durable, "audit: journal entries covered by a snapshot are not in the journal; auditing continues after them");
                scanned = durable;
            }
            if let Err(e) = log.append(events) {
                tracing::error!(error = %e, "audit log write failed; auditing resumes from the journal at the next start");
                return;
            }
            marks[shard].store(scanned, Ordering::Release);
        }
        if idle {
            if stopping {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard_loop::tests::reserve;
    use inventory_core::{Command, Entry, Receive, Shard, DEFAULT_WAREHOUSE};
    use inventory_journal::{MemJournal, RecordVisitor};
    use std::sync::atomic::AtomicBool;
    use std::time::Instant;

    /// A journal reader that counts the records it hands out.
    struct Counting {
        inner: Box<dyn Journal + Sync>,
        visited: Arc<AtomicU64>,
    }

    impl Journal for Counting {
        fn append(&mut self, batch: &[Entry]) -> Result<(), JournalError> {
            self.inner.append(batch)
        }
        fn recover(&mut self, next_seq: u64) -> Result<(), JournalError> {
            self.inner.recover(next_seq)
        }
        fn read_from(
            &self,
            from: u64,
        ) -> Result<Box<dyn Iterator<Item = Result<Entry, JournalError>> + '_>, JournalError> {
            self.inner.read_from(from)
        }
        fn visit_records(&self, from: u64, f: RecordVisitor<'_>) -> Result<(), JournalError> {
            self.inner.visit_records(from, &mut |seq, record| {
                self.visited.fetch_add(1, Ordering::Relaxed);
                f(seq, record)
            })
        }
        fn shard(&self) -> u16 {
            self.inner.shard()
        }
        fn reader(&self) -> Box<dyn Journal + Sync> {
            self.inner.reader()
        }
        fn truncate_before(&self, keep_from: u64) -> Result<u64, JournalError> {
            self.inner.truncate_before(keep_from)
        }
    }

    /// Applies `command` as the shard loop does and journals its entry.
    fn journal(shard: &mut Shard, journal: &mut MemJournal, progress: &ShardProgress, command: Command) {
        let seq = progress.durable.load(Ordering::Acquire) + 1;
        let mut txns = Vec::new();
        assert!(shard.apply(seq, &command, &mut txns).changed);
        let entry = Entry { seq, at: seq, trace_id: 0, operator: "t".into(), command, txns };
        journal.append(std::slice::from_ref(&entry)).unwrap();
        if inventory_journal::audit::is_audited(&entry) {
            progress.receipts_upto.store(seq, Ordering::Release);
        }
        progress.durable.store(seq, Ordering::Release);
    }

    fn receive(sku: &str) -> Command {
        Command::Receive(Receive {
            sku_id: sku.into(),
            warehouse_id: DEFAULT_WAREHOUSE.into(),
            qty: 1_000,
            idem_key: format!("receive-{sku}"),
            reference: String::new(),
        })
    }

    #[test]
    fn the_audit_tailer_reads_the_journal_only_where_a_receipt_was_journaled() {
        let dir = tempfile::tempdir().unwrap();
        let (mut shard, mut mem) = (Shard::new(ShardConfig::new(0)), MemJournal::new(0));
        let visited = Arc::new(AtomicU64::new(0));
        let reader: Arc<dyn Journal + Sync> = Arc::new(Counting { inner: mem.reader(), visited: visited.clone() });
        let progress: Arc<ShardProgress> = Arc::default();
        let marks: AuditMarks = Arc::new(vec![AtomicU64::new(0)]);
        let stop = Arc::new(AtomicBool::new(false));
        let tailer = {
            let (log, progress, marks, stop) =
                (AuditLog::open(dir.path()).unwrap(), vec![progress.clone()], marks.clone(), stop.clone());
            std::thread::spawn(move || audit_tailer(log, vec![reader], progress, marks, stop))
        };
        let audited_to = |seq: u64| {
            let deadline = Instant::now() + Duration::from_secs(10);
            while marks[0].load(Ordering::Acquire) < seq {
                assert!(Instant::now() < deadline, "the tailer never reached {seq}");
                std::thread::sleep(Duration::from_millis(2));
            }
        };

        journal(&mut shard, &mut mem, &progress, receive("a"));
        audited_to(1);
        let read = visited.load(Ordering::Relaxed);
        assert!(read >= 1);
        // A run of reserves is passed over without reading a record.
        for i in 0..200 {
            journal(&mut shard, &mut mem, &progress, reserve(i, "a"));
        }
        audited_to(201);
        assert_eq!(visited.load(Ordering::Relaxed), read);
        // A receipt after them is read and audited.
        journal(&mut shard, &mut mem, &progress, receive("b"));
        audited_to(202);
        assert!(visited.load(Ordering::Relaxed) > read);

        stop.store(true, Ordering::Release);
        tailer.join().unwrap();
        let log = std::fs::read_to_string(dir.path().join(inventory_journal::audit::LOG_FILE)).unwrap();
        let receipts: Vec<&str> = log.lines().collect();
        assert_eq!(receipts.len(), 2, "{log}");
        assert!(receipts[0].contains(r#""seq":1,"#) && receipts[1].contains(r#""seq":202,"#), "{log}");
    }

    #[test]
    fn connections_are_handed_to_the_http_threads_in_turn() {
        let mut pool = HttpThreads::start(2).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..4 {
            let tx = tx.clone();
            pool.next().spawn(async move {
                tx.send(std::thread::current().name().map(str::to_string)).unwrap();
            });
        }
        let names: Vec<_> =
            (0..4).map(|_| rx.recv_timeout(Duration::from_secs(5)).expect("task ran").expect("named")).collect();
        // The two threads run their tasks concurrently, so the reports come
        // in any order: count them per thread.
        assert_eq!(names.iter().filter(|n| *n == "http-0").count(), 2, "{names:?}");
        assert_eq!(names.iter().filter(|n| *n == "http-1").count(), 2, "{names:?}");
        pool.stop();
    }

    #[test]
    fn stopping_the_http_threads_ends_what_still_runs_on_them() {
        struct Dropped(std::sync::mpsc::Sender<()>);
        impl Drop for Dropped {
            fn drop(&mut self) {
                let _ = self.0.send(());
            }
        }
        let mut pool = HttpThreads::start(1).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        pool.next().spawn(async move {
            let _guard = Dropped(tx);
            started_tx.send(()).unwrap();
            std::future::pending::<()>().await;
        });
        started_rx.recv_timeout(Duration::from_secs(5)).expect("task started");
        assert!(rx.try_recv().is_err(), "the task is still running");
        pool.stop();
        rx.recv_timeout(Duration::from_secs(5)).expect("the task was dropped when its thread stopped");
    }
}
