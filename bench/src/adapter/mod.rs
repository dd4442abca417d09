//! The baselines behind the service's own HTTP API, so that every target is
//! measured through the same client path: `inventory-bench adapter` serves
//! the same routes and JSON shapes as `inventoryd` over PostgreSQL
//! ([`postgres`]), Redis ([`redis`]) or, as a reference with nothing on
//! disk, maps in its own memory ([`memory`]), with the same semantics: idempotency
//! keys, one hold per order line, confirm/release/expiry, `{code, message}`
//! errors. It also offers `POST /bench/seed` to load a catalogue in bulk.
//!
//! The adapter is deliberately thin: it parses the request, makes one round
//! trip to the database (a PL/pgSQL function or a Lua script), and writes
//! the stored JSON back.

pub mod memory;
pub mod postgres;
pub mod redis;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use serde::Deserialize;

use crate::{BenchError, Result};

/// Largest request body the adapter reads.
const BODY_BYTES_MAX: usize = 64 * 1024;
/// How often due holds are expired.
const EXPIRY_INTERVAL: Duration = Duration::from_millis(500);
/// Most holds expired per database call.
pub const EXPIRY_BATCH_MAX: i64 = 2_000;
/// Idempotency keys are remembered this long (as in the service).
pub const IDEMPOTENCY_TTL_SECS: u64 = 72 * 3600;
/// Default hold duration when a reserve names no `ttlSeconds` (as in the service).
pub const DEFAULT_TTL_SECS: u64 = 900;

/// A response: status and JSON body.
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Reply {
        Reply { status, body: body.into() }
    }

    pub fn error(status: u16, code: &str, message: &str) -> Reply {
        Reply::new(status, serde_json::to_vec(&serde_json::json!({ "code": code, "message": message })).expect("json"))
    }

    /// A `STATUS|BODY` string as the database functions return it.
    pub fn from_stored(stored: &str) -> Result<Reply> {
        let (status, body) =
            stored.split_once('|').ok_or_else(|| BenchError::Config(format!("malformed stored reply {stored:?}")))?;
        let status = status.parse().map_err(|_| BenchError::Config(format!("malformed stored reply {stored:?}")))?;
        Ok(Reply::new(status, body.as_bytes()))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceiveBody {
    pub sku_id: String,
    pub warehouse_id: Option<String>,
    pub qty: u64,
    pub idem_key: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReserveBody {
    pub order_id: String,
    pub sku_id: String,
    pub qty: u64,
    pub idem_key: String,
    pub warehouse_id: Option<String>,
    pub ttl_seconds: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfirmBody {
    pub reservation_id: String,
    pub payment_id: String,
    pub idem_key: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseBody {
    pub reservation_id: String,
    pub reason: String,
    pub idem_key: String,
}

#[derive(Deserialize)]
pub struct SeedBody {
    pub prefix: String,
    pub from: u64,
    pub to: u64,
    pub qty: u64,
}

/// A baseline store.
pub enum Backend {
    Postgres(postgres::PgBackend),
    Redis(Box<redis::RedisBackend>),
    Memory(memory::MemoryBackend),
}

macro_rules! dispatch {
    ($self:ident, $method:ident($($arg:expr),*)) => {
        match $self {
            Backend::Postgres(b) => b.$method($($arg),*).await,
            Backend::Redis(b) => b.$method($($arg),*).await,
            Backend::Memory(b) => b.$method($($arg),*).await,
        }
    };
}

impl Backend {
    async fn receive(&self, b: ReceiveBody) -> Result<Reply> {
        dispatch!(self, receive(b))
    }
    async fn reserve(&self, b: ReserveBody) -> Result<Reply> {
        dispatch!(self, reserve(b))
    }
    async fn confirm(&self, b: ConfirmBody) -> Result<Reply> {
        dispatch!(self, confirm(b))
    }
    async fn release(&self, b: ReleaseBody) -> Result<Reply> {
        dispatch!(self, release(b))
    }
    async fn stock(&self, sku_id: &str) -> Result<Reply> {
        dispatch!(self, stock(sku_id))
    }
    async fn reservation(&self, id: &str) -> Result<Reply> {
        dispatch!(self, reservation(id))
    }
    async fn seed(&self, b: SeedBody) -> Result<Reply> {
        dispatch!(self, seed(b))
    }
    /// Expires due holds; returns how many.
    pub async fn expire_due(&self) -> Result<u64> {
        dispatch!(self, expire_due())
    }
    /// Undoes what the backend set up (schema, server settings).
    pub async fn teardown(&self) -> Result<()> {
        dispatch!(self, teardown())
    }
}

/// Serves the API on `listener` until `shutdown` resolves, expiring due
/// holds in the background.
pub async fn serve(
    backend: Arc<Backend>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let expiry = {
        let backend = backend.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(EXPIRY_INTERVAL);
            loop {
                tick.tick().await;
                loop {
                    match backend.expire_due().await {
                        Ok(n) if n as i64 >= EXPIRY_BATCH_MAX => continue,
                        Ok(_) => break,
                        Err(e) => {
                            eprintln!("inventory-bench adapter: expiry failed: {e}");
                            break;
                        }
                    }
                }
            }
        })
    };
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        eprintln!("inventory-bench adapter: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let backend = backend.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| handle(backend.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            _ = &mut shutdown => break,
        }
    }
    expiry.abort();
    Ok(())
}

async fn handle(backend: Arc<Backend>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = match route(&backend, req).await {
        Ok(reply) => reply,
        Err(e) => Reply::error(500, "BACKEND_ERROR", &e.to_string()),
    };
    let mut response = Response::new(Full::new(Bytes::from(reply.body)));
    *response.status_mut() =
        hyper::StatusCode::from_u16(reply.status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}

async fn route(backend: &Backend, req: Request<Incoming>) -> Result<Reply> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (segments.as_slice(), &method) {
        (["healthz"] | ["readyz"], &Method::GET) => Ok(Reply::new(200, &br#"{"status":"ready"}"#[..])),
        (["api", "inventory", action @ ("receive" | "reserve" | "confirm" | "release")], &Method::POST) => {
            let action = action.to_string();
            let body = match read_body(req).await {
                Ok(body) => body,
                Err(reply) => return Ok(reply),
            };
            match action.as_str() {
                "receive" => match parse::<ReceiveBody>(&body) {
                    Ok(b) if valid_qty(b.qty) && valid(&[&b.sku_id, &b.idem_key]) => backend.receive(b).await,
                    Ok(_) => Ok(invalid()),
                    Err(reply) => Ok(reply),
                },
                "reserve" => match parse::<ReserveBody>(&body) {
                    Ok(b) if valid_qty(b.qty) && valid(&[&b.order_id, &b.sku_id, &b.idem_key]) => {
                        backend.reserve(b).await
                    }
                    Ok(_) => Ok(invalid()),
                    Err(reply) => Ok(reply),
                },
                "confirm" => match parse::<ConfirmBody>(&body) {
                    Ok(b) if valid(&[&b.reservation_id, &b.payment_id, &b.idem_key]) => backend.confirm(b).await,
                    Ok(_) => Ok(invalid()),
                    Err(reply) => Ok(reply),
                },
                _ => match parse::<ReleaseBody>(&body) {
                    Ok(b) if valid(&[&b.reservation_id, &b.reason, &b.idem_key]) => backend.release(b).await,
                    Ok(_) => Ok(invalid()),
                    Err(reply) => Ok(reply),
                },
            }
        }
        (["api", "inventory", sku], &Method::GET) => backend.stock(&decode(sku)).await,
        (["api", "reservations", id], &Method::GET) => backend.reservation(&decode(id)).await,
        (["bench", "seed"], &Method::POST) => {
            let body = match read_body(req).await {
                Ok(body) => body,
                Err(reply) => return Ok(reply),
            };
            match parse::<SeedBody>(&body) {
                Ok(b) if b.from <= b.to && valid_qty(b.qty) => backend.seed(b).await,
                Ok(_) => Ok(invalid()),
                Err(reply) => Ok(reply),
            }
        }
        _ => Ok(Reply::error(404, "NOT_FOUND", &format!("no route for {method} {path}"))),
    }
}

fn decode(segment: &str) -> String {
    percent_encoding::percent_decode_str(segment).decode_utf8_lossy().into_owned()
}

async fn read_body(req: Request<Incoming>) -> std::result::Result<Bytes, Reply> {
    match Limited::new(req.into_body(), BODY_BYTES_MAX).collect().await {
        Ok(body) => Ok(body.to_bytes()),
        Err(_) => Err(Reply::error(413, "BODY_TOO_LARGE", "request body too large or unreadable")),
    }
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> std::result::Result<T, Reply> {
    serde_json::from_slice(body).map_err(|e| Reply::error(400, "INVALID_FIELD", &e.to_string()))
}

fn valid(fields: &[&str]) -> bool {
    fields.iter().all(|f| !f.trim().is_empty() && f.len() <= 256 && !f.contains('|'))
}

fn valid_qty(qty: u64) -> bool {
    qty > 0 && qty <= i64::MAX as u64 / 4
}

fn invalid() -> Reply {
    Reply::error(400, "INVALID_FIELD", "a field is empty, too long or out of range")
}

/// The adapter subcommand: connect, set up, print the address, serve until
/// SIGTERM or SIGINT, tear down.
pub fn main(args: crate::cli::AdapterArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let backend = Arc::new(match args.backend {
            crate::cli::BackendKind::Postgres => {
                Backend::Postgres(postgres::PgBackend::connect(&args.pg_url, args.pool).await?)
            }
            crate::cli::BackendKind::Redis => Backend::Redis(Box::new(
                redis::RedisBackend::connect(&args.redis_url, args.pool, args.appendfsync).await?,
            )),
            crate::cli::BackendKind::Memory => Backend::Memory(memory::MemoryBackend::new()),
        });
        let listener = match tokio::net::TcpListener::bind(args.listen).await {
            Ok(l) => l,
            Err(e) => {
                backend.teardown().await?;
                return Err(e.into());
            }
        };
        let addr: SocketAddr = listener.local_addr()?;
        println!("inventory-bench adapter listening on http://{addr}");
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        };
        let served = serve(backend.clone(), listener, shutdown).await;
        let torn_down = backend.teardown().await;
        served.and(torn_down)
    })
}
