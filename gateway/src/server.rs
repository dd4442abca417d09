//! Starting and stopping the service: shard threads, the accept loop, and
//! an orderly shutdown that answers and flushes everything in flight.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::header::{HeaderValue, CONNECTION};
use axum::http::{Request, Response, StatusCode};
use axum::response::IntoResponse;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use inventory_core::SECOND_MS;
use inventory_events::position::Positions;
use inventory_events::{spawn_relay, NatsSink, RelayConfig, RelayStatus};
use inventory_journal::follow::Followers;
use inventory_journal::{Journal, JournalError, Store};
use inventory_persistence::read_model::ReadModel;
use inventory_persistence::{spawn_writers, Progress, Schema, ShardProgress, WriterConfig};
use inventory_runtime::{Clock, Metrics, Runtime, RuntimeError, SteadyClock};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;

use crate::api::ApiError;
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
    // Refused before the journal is opened.
    crate::tls::server_config(&config).map_err(ServerError::Config)?;
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
    crate::tls::install_default_provider();
    let tls = crate::tls::server_config(&config).map_err(ServerError::Config)?;
    let transport = Transport {
        tls: tls.map(TlsAcceptor::from),
        header_timeout: Duration::from_secs(config.header_read_timeout_secs),
        body_timeout: Duration::from_secs(config.body_read_timeout_secs),
        idle_timeout: Duration::from_secs(config.idle_timeout_secs),
        max_connections: usize::try_from(config.max_connections).unwrap_or(usize::MAX),
    };
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
            // A connection string or TLS setting that cannot work is refused
            // at start rather than retried for ever.
            inventory_persistence::tls::Target::parse(&url)?.connector()?;
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
    let read_model = match &postgres {
        Some(writer) => Some(ReadModel::new(&writer.url, &writer.schema, crate::http::READ_MODEL_TIMEOUT)?),
        None => None,
    };
    let app = Arc::new(App {
        runtime,
        trace_ids: crate::trace::TraceIds::new(),
        writers,
        postgres,
        read_model,
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
    background.push(tokio::spawn(crate::http::resolve_orders(app.clone())));

    // Replay runs on the shard threads while the listener already answers
    // /healthz and /readyz (not ready yet).
    let replayed = {
        let replay = threads.replay();
        tokio::task::spawn_blocking(move || replay.wait().map_err(ServerError::from))
    };
    let http_threads = config.http_threads.unwrap_or(default_shards() as usize);
    let result = serve(listener, app, transport, metrics, http_threads, shutdown, replayed).await;
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

/// How connections are served: over TLS or not, and the limits on their
/// pace and number.
#[derive(Clone)]
struct Transport {
    tls: Option<TlsAcceptor>,
    header_timeout: Duration,
    body_timeout: Duration,
    idle_timeout: Duration,
    max_connections: usize,
}

#[allow(clippy::too_many_arguments)]
async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    transport: Transport,
    metrics: Arc<Metrics>,
    http_threads: usize,
    shutdown: impl Future<Output = ()>,
    replayed: tokio::task::JoinHandle<Result<(), ServerError>>,
) -> Result<(), ServerError> {
    let mut pool = HttpThreads::start(http_threads)?;
    let result = accept_loop(listener, app, transport, metrics, &mut pool, shutdown, replayed).await;
    tokio::task::spawn_blocking(move || pool.stop()).await.expect("stopping the HTTP threads panicked");
    result
}

/// What a connection over `--max-connections` is answered before it is
/// closed (plain HTTP only).
static REFUSAL: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let body = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "TOO_MANY_CONNECTIONS",
        "the service has as many connections open as it takes (--max-connections); retry later",
    )
    .body();
    let mut refusal = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         retry-after: 1\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    refusal.extend_from_slice(&body);
    refusal
});

/// Answers a connection over the limit and closes it, without waiting: the
/// answer fits the new socket's send buffer, and what the client may
/// already have sent is read first so the close is not a reset.
fn refuse(stream: TcpStream, tls: bool) {
    if !tls {
        let _ = stream.try_write(&REFUSAL);
    }
    let mut sink = [0u8; 4096];
    let _ = stream.try_read(&mut sink);
    drop(stream);
}

/// Open connections: counted by the accept loop, uncounted when the
/// connection's task ends on its HTTP thread.
struct Open {
    count: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.metrics.connections_open.dec();
        self.count.fetch_sub(1, Ordering::Relaxed);
    }
}

#[allow(clippy::too_many_arguments)]
async fn accept_loop(
    listener: TcpListener,
    app: Arc<App>,
    transport: Transport,
    metrics: Arc<Metrics>,
    pool: &mut HttpThreads,
    shutdown: impl Future<Output = ()>,
    replayed: tokio::task::JoinHandle<Result<(), ServerError>>,
) -> Result<(), ServerError> {
    let router = routes(app);
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    // hyper's own header timeout is off: its clock also runs while a
    // keep-alive connection waits for its next request, which would make it
    // an idle timeout too. `Watched` keeps both deadlines.
    http.keep_alive(true).header_read_timeout(None);
    let open = Arc::new(AtomicUsize::new(0));
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
                let opened = Instant::now();
                if open.load(Ordering::Relaxed) >= transport.max_connections {
                    refuse(stream, transport.tls.is_some());
                    metrics.connection_closed("refused");
                    continue;
                }
                open.fetch_add(1, Ordering::Relaxed);
                metrics.connections_open.inc();
                let counted = Open { count: open.clone(), metrics: metrics.clone() };
                let _ = stream.set_nodelay(true);
                // Moved to the HTTP thread's own reactor (it stays non-blocking).
                let stream = match stream.into_std() {
                    Ok(stream) => stream,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot hand over a connection");
                        continue;
                    }
                };
                let connection = Connection {
                    router: router.clone(),
                    http: http.clone(),
                    transport: transport.clone(),
                    metrics: metrics.clone(),
                    opened,
                };
                let watcher = graceful.watcher();
                pool.next().spawn(async move {
                    let _counted = counted;
                    let stream = match TcpStream::from_std(stream) {
                        Ok(stream) => stream,
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot register a connection");
                            return;
                        }
                    };
                    connection.serve(stream, watcher).await;
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

/// One connection, served start to end on its HTTP thread: the TLS
/// handshake (if any), then HTTP/1.1 under its deadlines.
struct Connection {
    router: axum::Router,
    http: hyper::server::conn::http1::Builder,
    transport: Transport,
    metrics: Arc<Metrics>,
    opened: Instant,
}

impl Connection {
    async fn serve(self, stream: TcpStream, watcher: hyper_util::server::graceful::Watcher) {
        let state = Arc::new(ConnState::new(self.opened, self.metrics.clone()));
        let service = Guarded { router: self.router, state: state.clone(), body_timeout: self.transport.body_timeout };
        let (header, idle) = (self.transport.header_timeout, self.transport.idle_timeout);
        let served = match &self.transport.tls {
            None => {
                let io = Watched::new(stream, state.clone(), header, idle);
                watcher.watch(self.http.serve_connection(TokioIo::new(io), service)).await
            }
            Some(acceptor) => {
                // The handshake counts against the first request's header
                // deadline.
                let handshake = acceptor.accept(stream).into_fallible();
                let tls = match tokio::time::timeout_at(self.opened + header, handshake).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err((e, stream))) => {
                        tracing::debug!(error = %e, "TLS handshake failed");
                        // Counted before the client sees the close.
                        self.metrics.connection_closed("tls_handshake");
                        drop(stream);
                        return;
                    }
                    Err(_) => {
                        self.metrics.connection_closed("header_timeout");
                        return;
                    }
                };
                let io = Watched::new(tls, state.clone(), header, idle);
                watcher.watch(self.http.serve_connection(TokioIo::new(io), service)).await
            }
        };
        if let Err(e) = served {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    }
}

/// What a connection's reader ([`Watched`]) and its service ([`Guarded`])
/// share: how many requests have started (their header was read) and
/// finished (their response was written), and when the last one finished.
/// Both run on the connection's one task; the atomics only make the state
/// `Send`.
struct ConnState {
    opened: Instant,
    started: AtomicU64,
    finished: AtomicU64,
    /// When the last response finished, in nanoseconds since `opened`.
    last_finished_ns: AtomicU64,
    /// Whether the request in flight did not send its body in time.
    body_timed_out: AtomicBool,
    /// Counts the connection closed, by reason, before it closes.
    metrics: Arc<Metrics>,
}

impl ConnState {
    fn new(opened: Instant, metrics: Arc<Metrics>) -> ConnState {
        ConnState {
            opened,
            started: AtomicU64::new(0),
            finished: AtomicU64::new(0),
            last_finished_ns: AtomicU64::new(0),
            body_timed_out: AtomicBool::new(false),
            metrics,
        }
    }
}

/// A connection's byte stream under its deadlines, checked whenever hyper
/// waits for bytes that have not come:
/// - the first request's header must be complete `header` after the
///   connection opened;
/// - between requests, the connection may stay silent `idle` after the last
///   response finished;
/// - a later request's header must be complete `header` after its first
///   byte.
///
/// While a request is in flight (header read, response not yet finished)
/// none applies: its body has the body timeout ([`TimedBody`]).
/// A deadline that passes fails the read, and hyper closes the connection.
struct Watched<S> {
    inner: S,
    state: Arc<ConnState>,
    header: Duration,
    idle: Duration,
    /// The request (by the count of finished ones before it) whose first
    /// header byte came at `header_began`; only for keep-alive requests.
    header_of: u64,
    header_began: Option<Instant>,
    /// The armed deadline.
    sleep: Option<Pin<Box<Sleep>>>,
    armed: Option<Instant>,
}

impl<S> Watched<S> {
    fn new(inner: S, state: Arc<ConnState>, header: Duration, idle: Duration) -> Watched<S> {
        Watched { inner, state, header, idle, header_of: 0, header_began: None, sleep: None, armed: None }
    }

    /// Bytes came: the first ones after a finished response begin the
    /// next request's header.
    fn on_bytes(&mut self) {
        let finished = self.state.finished.load(Ordering::Relaxed);
        if finished > 0 && finished != self.header_of && self.state.started.load(Ordering::Relaxed) == finished {
            self.header_of = finished;
            self.header_began = Some(Instant::now());
        }
    }

    /// The deadline that applies now, and what passing it means.
    fn deadline(&self) -> Option<(Instant, &'static str)> {
        let finished = self.state.finished.load(Ordering::Relaxed);
        if self.state.started.load(Ordering::Relaxed) > finished {
            return None;
        }
        if finished == 0 {
            return Some((self.state.opened + self.header, "header_timeout"));
        }
        match self.header_began {
            Some(began) if self.header_of == finished => Some((began + self.header, "header_timeout")),
            _ => {
                let last = Duration::from_nanos(self.state.last_finished_ns.load(Ordering::Relaxed));
                Some((self.state.opened + last + self.idle, "idle_timeout"))
            }
        }
    }

    /// Arms the deadline that applies; whether it has passed.
    fn expired(&mut self, cx: &mut Context<'_>) -> Option<&'static str> {
        let (deadline, reason) = self.deadline()?;
        if self.armed != Some(deadline) {
            self.armed = Some(deadline);
            match &mut self.sleep {
                Some(sleep) => sleep.as_mut().reset(deadline),
                None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        let sleep = self.sleep.as_mut().expect("armed");
        sleep.as_mut().poll(cx).is_ready().then_some(reason)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.on_bytes();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match self.expired(cx) {
                None => Poll::Pending,
                Some(reason) => {
                    self.state.metrics.connection_closed(reason);
                    Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, reason)))
                }
            },
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The routes, with each request counted as started and finished for its
/// connection's deadlines, and its body under the body timeout.
#[derive(Clone)]
struct Guarded {
    router: axum::Router,
    state: Arc<ConnState>,
    body_timeout: Duration,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl hyper::service::Service<Request<Incoming>> for Guarded {
    type Response = Response<Tracked>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Result<Response<Tracked>, std::convert::Infallible>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        self.state.started.fetch_add(1, Ordering::Relaxed);
        self.state.body_timed_out.store(false, Ordering::Relaxed);
        // Finishes the request when the response body is done with, or
        // when the request is dropped unanswered.
        let finish = Finish(self.state.clone());
        let deadline = Instant::now() + self.body_timeout;
        let state = self.state.clone();
        let request = request.map(|body| TimedBody { inner: body, deadline, sleep: None, state: state.clone() });
        let mut router = self.router.clone();
        let timeout = self.body_timeout;
        Box::pin(async move {
            let response = match tower_service::Service::call(&mut router, request).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            let response = if state.body_timed_out.load(Ordering::Relaxed) {
                // Whatever the handler made of the failed read, the answer
                // is 408, and the connection closes (the rest of the body
                // would be taken for the next request).
                state.metrics.connection_closed("body_timeout");
                body_timeout(response, timeout)
            } else {
                response
            };
            Ok(response.map(|body| Tracked { inner: body, _finish: finish }))
        })
    }
}

/// The 408 that replaces the answer to a request whose body did not come
/// in time; it keeps the request's trace headers.
fn body_timeout(answered: axum::response::Response, timeout: Duration) -> axum::response::Response {
    let message = format!("the request body did not arrive within {} s", timeout.as_secs());
    let mut response = ApiError::new(StatusCode::REQUEST_TIMEOUT, "REQUEST_TIMEOUT", message).into_response();
    for name in ["traceparent", "x-request-id"] {
        if let Some(value) = answered.headers().get(name) {
            response.headers_mut().insert(name, value.clone());
        }
    }
    response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Marks its request finished when dropped.
struct Finish(Arc<ConnState>);

impl Drop for Finish {
    fn drop(&mut self) {
        let since_open = self.0.opened.elapsed().as_nanos().min(u64::MAX as u128) as u64;
        self.0.last_finished_ns.store(since_open, Ordering::Relaxed);
        self.0.finished.fetch_add(1, Ordering::Relaxed);
    }
}

/// A response body that finishes its request when hyper is done with it.
struct Tracked {
    inner: axum::body::Body,
    _finish: Finish,
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The request body did not arrive within the body timeout.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
pub struct BodyTimeout;

/// A request body that fails with [`BodyTimeout`] once its deadline passes
/// before it is complete.
struct TimedBody {
    inner: Incoming,
    deadline: Instant,
    /// Armed the first time the body has to wait.
    sleep: Option<Pin<Box<Sleep>>>,
    state: Arc<ConnState>,
}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending => {
                let deadline = self.deadline;
                let sleep = self.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if sleep.as_mut().poll(cx).is_ready() {
                    self.state.body_timed_out.store(true, Ordering::Relaxed);
                    return Poll::Ready(Some(Err(Box::new(BodyTimeout))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
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
