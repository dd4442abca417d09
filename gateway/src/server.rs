//! Starting and stopping the service: shard threads, the accept loop, and
//! an orderly shutdown that answers and flushes everything in flight.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use inventory_core::SECOND_MS;
use inventory_events::position::Positions;
use inventory_events::{spawn_relay, NatsSink, RelayConfig, RelayStatus};
use inventory_journal::follow::Followers;
use inventory_journal::{Journal, JournalError, Store};
use inventory_persistence::{spawn_writers, Progress, Schema, ShardProgress, WriterConfig};
use inventory_runtime::{Clock, Metrics, Runtime, RuntimeError, SteadyClock};
use tokio::net::TcpListener;

use crate::config::{default_shards, Config};
use crate::http::{routes, App, ReplicationGuard, Security};

/// How long shutdown waits for open connections to finish their requests.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How often expired keys leave the cross-shard idempotency index.
const IDEM_PURGE_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Persistence(#[from] inventory_persistence::PersistenceError),
    #[error("{0}")]
    Config(String),
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
    let result = run_with(config, listener, journals, Arc::new(SteadyClock::default()), shutdown).await;
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
    let security = Security::from_config(&config, listener.local_addr()?).map_err(ServerError::Config)?;
    let mut metrics = Metrics::new();
    if config.postgres_url.is_some() {
        metrics.register_persistence();
    }
    if config.events_nats_url.is_some() {
        metrics.register_events();
    }
    if config.max_replication_lag_secs.is_some() && config.postgres_url.is_none() {
        return Err(ServerError::Config(
            "--max-replication-lag-secs bounds how far PostgreSQL may lag: it needs --postgres-url".into(),
        ));
    }
    let metrics = Arc::new(metrics);
    let postgres = config
        .postgres_url
        .clone()
        .map(|url| -> Result<WriterConfig, ServerError> {
            Ok(WriterConfig {
                url,
                schema: Schema::new(&config.postgres_schema)?,
                batch_max: config.postgres_batch_max.max(1),
                reservation_retention_ms: config.reservation_retention_hours * 3_600_000,
                txn_retention_ms: config.txn_retention_hours * 3_600_000,
                relay_follower: config.events_nats_url.as_ref().map(|_| inventory_events::FOLLOWER),
            })
        })
        .transpose()?;
    // Every follower of the journals is registered before the runtime's
    // snapshotter can truncate them.
    let followers: Vec<Arc<Followers>> = (0..shards).map(|_| Arc::default()).collect();
    let writers: Progress =
        if postgres.is_some() { followers.iter().map(ShardProgress::follow).collect() } else { Vec::new() };
    let relay = config.events_nats_url.clone().map(|url| {
        let relay_config = RelayConfig {
            url,
            stream: config.events_stream.clone(),
            source: config.events_source.clone(),
            batch_max: config.events_batch_max as usize,
        };
        RelayStatus::follow(relay_config, &followers)
    });
    let replication_guard =
        config.max_replication_lag_secs.map(|secs| Arc::new(ReplicationGuard::new(Duration::from_secs(secs), shards)));
    let (runtime, threads) = {
        let (runtime_config, clock, metrics) = (config.runtime(), clock.clone(), metrics.clone());
        tokio::task::spawn_blocking(move || Runtime::start(runtime_config, journals, followers, clock, metrics))
            .await
            .expect("runtime start panicked")?
    };

    let mut background = Vec::new();
    if let Some(writer) = &postgres {
        let own_readers = runtime.readers.iter().map(|r| r.reader()).collect();
        background.extend(spawn_writers(writer.clone(), own_readers, writers.clone(), config.writer_faults.clone()));
        background.push(tokio::spawn(crate::http::persistence_gauges(
            writers.clone(),
            replication_guard.clone(),
            metrics.clone(),
        )));
    }
    if let Some(relay) = &relay {
        let positions = Arc::new(Positions::open(config.events_dir())?);
        let readers = runtime.readers.iter().map(|r| Arc::from(r.reader())).collect();
        let (url, stream) = (relay.config.url.clone(), relay.config.stream.clone());
        background.extend(spawn_relay(relay.clone(), positions, readers, || NatsSink::new(&url, &stream)));
        background.push(tokio::spawn(crate::http::event_gauges(relay.clone(), metrics.clone())));
    }
    background.push({
        let (idem, clock) = (runtime.idem.clone(), clock.clone());
        tokio::spawn(async move {
            let mut every = tokio::time::interval(IDEM_PURGE_EVERY);
            loop {
                every.tick().await;
                idem.purge(clock.now_ms());
            }
        })
    });
    let app = Arc::new(App {
        runtime,
        trace_ids: crate::trace::TraceIds::new(),
        writers,
        postgres,
        relay,
        replication_guard,
        default_ttl_ms: config.reservation_ttl_secs * SECOND_MS,
        adjustment_ttl_ms: config.adjustment_ttl_secs * SECOND_MS,
        max_qty: config.max_qty,
        security,
    });
    if app.security.auth.is_some() {
        background.push(tokio::spawn(reload_keys_on_hangup(app.clone())));
    }

    // Replay runs on the shard threads while the listener already answers
    // /healthz and /readyz (not ready yet).
    let replayed = {
        let replay = threads.replay();
        tokio::task::spawn_blocking(move || replay.wait().map_err(ServerError::from))
    };
    let http_threads = config.http_threads.unwrap_or(default_shards() as usize);
    let result = serve(listener, app, http_threads, shutdown, replayed).await;
    for task in background {
        task.abort();
    }
    // The connections are gone, and with them the last App (which closes
    // the snapshot queue): stop the shards, answering and flushing every
    // request already queued.
    tokio::task::spawn_blocking(move || threads.stop()).await.expect("shard shutdown panicked");
    tracing::info!("stopped");
    result
}

/// Re-reads the token keys on every SIGHUP; a bad file leaves the keys in
/// use.
async fn reload_keys_on_hangup(app: Arc<App>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot watch SIGHUP: token keys are read only at start");
        return;
    };
    while hangups.recv().await.is_some() {
        let Some(auth) = &app.security.auth else { return };
        match auth.reload() {
            Ok(()) => tracing::info!("token keys reloaded"),
            Err(e) => tracing::error!(error = %e, "token keys not reloaded; the previous keys stay in use"),
        }
    }
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
    let service = TowerToHyperService::new(routes(app));
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
                let (service, http, watcher) = (service.clone(), http.clone(), graceful.watcher());
                pool.next().spawn(async move {
                    let stream = match tokio::net::TcpStream::from_std(stream) {
                        Ok(stream) => stream,
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot register a connection");
                            return;
                        }
                    };
                    let conn = http.serve_connection(TokioIo::new(stream), service);
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

#[cfg(test)]
mod tests {
    use super::*;

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
