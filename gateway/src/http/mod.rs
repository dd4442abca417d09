//! The HTTP API on axum: the route table, the request context every handler
//! gets, and the one middleware that gives each response its trace headers
//! and counts it.
//!
//! A handler parses and validates its request (any problem is a 4xx and
//! changes nothing), turns it into a shard command or query, sends it
//! through the [`Router`](inventory_runtime::Router)'s bounded queue and
//! renders the reply. Errors of every kind are an [`ApiError`], rendered as
//! `{code, message}` in one place.

mod admin;
mod console;
mod events;
mod extract;
mod guard;
pub mod openapi;
mod operator;
mod orders;
mod read_model;
mod reads;
mod writes;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::{HeaderValue, ALLOW, CONNECTION, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter, MethodRouter};
use inventory_runtime::{Runtime, SendError};

pub use admin::{persistence_gauges, ReplicationGuard, SnapshotJson, CAPACITY_SKUS_MAX};
pub use events::event_gauges;
pub use extract::Ctx;
pub use guard::{protected_mode, Security};
pub use orders::resolve_orders;
pub use read_model::READ_MODEL_TIMEOUT;

use crate::api::ApiError;
use crate::trace::TraceIds;

/// Everything a request handler needs; shared by all connections.
pub struct App {
    pub runtime: Runtime,
    pub trace_ids: TraceIds,
    /// The PostgreSQL writer's progress per shard (empty without PostgreSQL).
    pub writers: inventory_persistence::Progress,
    pub postgres: Option<inventory_persistence::WriterConfig>,
    /// The read model's connection pool (with PostgreSQL only).
    pub read_model: Option<inventory_persistence::read_model::ReadModel>,
    /// The event relay's status (without `--events-nats-url`, none).
    pub relay: Option<Arc<inventory_events::RelayStatus>>,
    /// Refuses writes while PostgreSQL lags too far (`--max-replication-lag-secs`).
    pub replication_guard: Option<Arc<ReplicationGuard>>,
    pub default_ttl_ms: u64,
    /// How long a proposed adjustment stays pending.
    pub adjustment_ttl_ms: u64,
    pub max_qty: u64,
    /// Tokens, roles, signed writes and the risk check.
    pub security: Security,
}

/// Operator recorded when a request names none.
pub const ANONYMOUS_OPERATOR: &str = "anonymous";

/// Every endpoint: its path, its label in the request metrics, and its
/// handlers. The route table below is built from this list alone, and the
/// API document (`openapi.rs`) from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Reserve,
    Confirm,
    Release,
    Receive,
    ReceiveBatch,
    Stock,
    Reservation,
    OrderStatus,
    ReadModelOrderStatus,
    Health,
    Ready,
    Metrics,
    OpenApi,
    AdminPersistence,
    AdminReconcile,
    AdminSnapshot,
    AdminCapacity,
    AdminEvents,
    Freeze,
    Unfreeze,
    AdjustmentPropose,
    AdjustmentList,
    Adjustment,
    AdjustmentApprove,
    AdjustmentReject,
    TransferDispatch,
    TransferList,
    Transfer,
    TransferArrive,
    TransferCancel,
    PolicySet,
    PolicyRemove,
    OrderReserve,
    OrderConfirm,
    OrderRelease,
    ConsoleRoot,
    Console,
    ConsoleFile,
}

impl Endpoint {
    /// In the order a request's path is looked up for its label: the
    /// busiest first.
    pub const ALL: [Endpoint; 38] = [
        Endpoint::Reserve,
        Endpoint::Confirm,
        Endpoint::Release,
        Endpoint::Stock,
        Endpoint::Receive,
        Endpoint::ReceiveBatch,
        Endpoint::Reservation,
        Endpoint::OrderStatus,
        Endpoint::ReadModelOrderStatus,
        Endpoint::Health,
        Endpoint::Ready,
        Endpoint::Metrics,
        Endpoint::OpenApi,
        Endpoint::AdminPersistence,
        Endpoint::AdminReconcile,
        Endpoint::AdminSnapshot,
        Endpoint::AdminCapacity,
        Endpoint::AdminEvents,
        Endpoint::Freeze,
        Endpoint::Unfreeze,
        Endpoint::AdjustmentPropose,
        Endpoint::AdjustmentList,
        Endpoint::Adjustment,
        Endpoint::AdjustmentApprove,
        Endpoint::AdjustmentReject,
        Endpoint::TransferDispatch,
        Endpoint::TransferList,
        Endpoint::Transfer,
        Endpoint::TransferArrive,
        Endpoint::TransferCancel,
        Endpoint::PolicySet,
        Endpoint::PolicyRemove,
        Endpoint::OrderReserve,
        Endpoint::OrderConfirm,
        Endpoint::OrderRelease,
        Endpoint::ConsoleRoot,
        Endpoint::Console,
        Endpoint::ConsoleFile,
    ];

    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Reserve => "/api/inventory/reserve",
            Endpoint::Confirm => "/api/inventory/confirm",
            Endpoint::Release => "/api/inventory/release",
            Endpoint::Receive => "/api/inventory/receive",
            Endpoint::ReceiveBatch => "/api/inventory/receive-batch",
            Endpoint::Stock => "/api/inventory/{sku_id}",
            Endpoint::Reservation => "/api/reservations/{reservation_id}",
            Endpoint::OrderStatus => "/api/orders/{order_id}/inventory-status",
            Endpoint::ReadModelOrderStatus => "/api/read-model/orders/{order_id}/inventory-status",
            Endpoint::Health => "/healthz",
            Endpoint::Ready => "/readyz",
            Endpoint::Metrics => "/metrics",
            Endpoint::OpenApi => "/openapi.json",
            Endpoint::AdminPersistence => "/api/admin/persistence",
            Endpoint::AdminReconcile => "/api/admin/reconcile",
            Endpoint::AdminSnapshot => "/api/admin/snapshot",
            Endpoint::AdminCapacity => "/api/admin/capacity",
            Endpoint::AdminEvents => "/api/admin/events",
            Endpoint::Freeze => "/api/admin/skus/{sku_id}/freeze",
            Endpoint::Unfreeze => "/api/admin/skus/{sku_id}/unfreeze",
            Endpoint::AdjustmentPropose | Endpoint::AdjustmentList => "/api/admin/adjustments",
            Endpoint::Adjustment => "/api/admin/adjustments/{adjustment_id}",
            Endpoint::AdjustmentApprove => "/api/admin/adjustments/{adjustment_id}/approve",
            Endpoint::AdjustmentReject => "/api/admin/adjustments/{adjustment_id}/reject",
            Endpoint::TransferDispatch | Endpoint::TransferList => "/api/admin/transfers",
            Endpoint::Transfer => "/api/admin/transfers/{transfer_id}",
            Endpoint::TransferArrive => "/api/admin/transfers/{transfer_id}/arrive",
            Endpoint::TransferCancel => "/api/admin/transfers/{transfer_id}/cancel",
            Endpoint::PolicySet | Endpoint::PolicyRemove => "/api/admin/skus/{sku_id}/policy",
            Endpoint::OrderReserve => "/api/orders/{order_id}/reserve",
            Endpoint::OrderConfirm => "/api/orders/{order_id}/confirm",
            Endpoint::OrderRelease => "/api/orders/{order_id}/release",
            Endpoint::ConsoleRoot => "/console",
            Endpoint::Console => "/console/",
            Endpoint::ConsoleFile => "/console/{*path}",
        }
    }

    /// The `endpoint` label of the request metrics.
    pub fn label(self) -> &'static str {
        match self {
            Endpoint::Reserve => "reserve",
            Endpoint::Confirm => "confirm",
            Endpoint::Release => "release",
            Endpoint::Receive => "receive",
            Endpoint::ReceiveBatch => "receive_batch",
            Endpoint::Stock => "stock",
            Endpoint::Reservation => "reservation",
            Endpoint::OrderStatus => "order_status",
            Endpoint::ReadModelOrderStatus => "read_model",
            Endpoint::Health | Endpoint::Ready => "health",
            Endpoint::Metrics => "metrics",
            Endpoint::OpenApi => "openapi",
            Endpoint::AdminPersistence
            | Endpoint::AdminReconcile
            | Endpoint::AdminSnapshot
            | Endpoint::AdminCapacity
            | Endpoint::AdminEvents => "admin",
            Endpoint::Freeze | Endpoint::Unfreeze => "freeze",
            Endpoint::AdjustmentPropose
            | Endpoint::AdjustmentList
            | Endpoint::Adjustment
            | Endpoint::AdjustmentApprove
            | Endpoint::AdjustmentReject => "adjustment",
            Endpoint::TransferDispatch
            | Endpoint::TransferList
            | Endpoint::Transfer
            | Endpoint::TransferArrive
            | Endpoint::TransferCancel => "transfer",
            Endpoint::PolicySet | Endpoint::PolicyRemove => "policy",
            Endpoint::OrderReserve => "order_reserve",
            Endpoint::OrderConfirm => "order_confirm",
            Endpoint::OrderRelease => "order_release",
            Endpoint::ConsoleRoot | Endpoint::Console | Endpoint::ConsoleFile => "console",
        }
    }

    /// The one method the endpoint takes.
    pub fn method(self) -> Method {
        match self {
            Endpoint::Stock
            | Endpoint::Reservation
            | Endpoint::OrderStatus
            | Endpoint::ReadModelOrderStatus
            | Endpoint::Health
            | Endpoint::Ready
            | Endpoint::Metrics
            | Endpoint::OpenApi
            | Endpoint::AdminPersistence
            | Endpoint::AdminEvents
            | Endpoint::AdjustmentList
            | Endpoint::Adjustment
            | Endpoint::TransferList
            | Endpoint::Transfer
            | Endpoint::ConsoleRoot
            | Endpoint::Console
            | Endpoint::ConsoleFile => Method::GET,
            Endpoint::Reserve
            | Endpoint::Confirm
            | Endpoint::Release
            | Endpoint::Receive
            | Endpoint::ReceiveBatch
            | Endpoint::AdminReconcile
            | Endpoint::AdminSnapshot
            | Endpoint::AdminCapacity
            | Endpoint::Freeze
            | Endpoint::Unfreeze
            | Endpoint::AdjustmentPropose
            | Endpoint::AdjustmentApprove
            | Endpoint::AdjustmentReject
            | Endpoint::TransferDispatch
            | Endpoint::TransferArrive
            | Endpoint::TransferCancel => Method::POST,
            Endpoint::OrderReserve | Endpoint::OrderConfirm | Endpoint::OrderRelease => Method::POST,
            Endpoint::PolicySet => Method::PUT,
            Endpoint::PolicyRemove => Method::DELETE,
        }
    }

    fn handler(self) -> MethodRouter<Arc<App>> {
        let method = MethodFilter::try_from(self.method()).expect("GET, POST, PUT and DELETE are filters");
        match self {
            Endpoint::Reserve => on(method, writes::reserve),
            Endpoint::Confirm => on(method, writes::confirm),
            Endpoint::Release => on(method, writes::release),
            Endpoint::Receive => on(method, writes::receive),
            Endpoint::ReceiveBatch => on(method, writes::receive_batch),
            Endpoint::Stock => on(method, reads::stock),
            Endpoint::Reservation => on(method, reads::reservation),
            Endpoint::OrderStatus => on(method, reads::order_status),
            Endpoint::ReadModelOrderStatus => on(method, read_model::order_status),
            Endpoint::Health => on(method, reads::health),
            Endpoint::Ready => on(method, reads::ready_check),
            Endpoint::Metrics => on(method, reads::metrics),
            Endpoint::OpenApi => on(method, openapi::serve),
            Endpoint::AdminPersistence => on(method, admin::persistence_status),
            Endpoint::AdminReconcile => on(method, admin::reconcile),
            Endpoint::AdminSnapshot => on(method, admin::snapshot),
            Endpoint::AdminCapacity => on(method, admin::capacity),
            Endpoint::AdminEvents => on(method, events::status),
            Endpoint::Freeze => on(method, operator::freeze),
            Endpoint::Unfreeze => on(method, operator::unfreeze),
            Endpoint::AdjustmentPropose => on(method, operator::propose),
            Endpoint::AdjustmentList => on(method, operator::adjustments),
            Endpoint::Adjustment => on(method, operator::adjustment),
            Endpoint::AdjustmentApprove => on(method, operator::approve),
            Endpoint::AdjustmentReject => on(method, operator::reject),
            Endpoint::TransferDispatch => on(method, operator::dispatch),
            Endpoint::TransferList => on(method, operator::transfers),
            Endpoint::Transfer => on(method, operator::transfer),
            Endpoint::TransferArrive => on(method, operator::arrive),
            Endpoint::TransferCancel => on(method, operator::cancel),
            Endpoint::OrderReserve => on(method, orders::reserve),
            Endpoint::OrderConfirm => on(method, orders::confirm),
            Endpoint::OrderRelease => on(method, orders::release),
            Endpoint::PolicySet => on(method, operator::set_policy),
            Endpoint::PolicyRemove => on(method, operator::remove_policy),
            Endpoint::ConsoleRoot => on(method, console::root),
            Endpoint::Console => on(method, console::index),
            Endpoint::ConsoleFile => on(method, console::file),
        }
    }

    /// The endpoint whose route a request matched: by path, and by method
    /// where two share a path (a list and a create).
    fn of(matched: Option<&MatchedPath>, method: &Method) -> Option<Endpoint> {
        let path = matched?.as_str();
        let mut on_path = Endpoint::ALL.into_iter().filter(|e| e.path() == path);
        let first = on_path.next()?;
        Some(std::iter::once(first).chain(on_path).find(|e| e.method() == *method).unwrap_or(first))
    }
}

/// The service's routes, with the observing middleware around every one of
/// them (and around the answers to unknown routes and methods). Endpoints
/// that share a path (a list and a create) share one route.
pub fn routes(app: Arc<App>) -> axum::Router {
    let mut router = axum::Router::new();
    let mut paths: Vec<&str> = Endpoint::ALL.iter().map(|e| e.path()).collect();
    paths.dedup();
    for path in paths {
        let mut methods = MethodRouter::new();
        for endpoint in Endpoint::ALL.into_iter().filter(|e| e.path() == path) {
            methods = methods.merge(endpoint.handler());
        }
        router = router.route(path, methods);
    }
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(app.clone(), guard::guard))
        .layer(middleware::from_fn_with_state(app.clone(), observe))
        .with_state(app)
}

/// The response's `code` label: what [`ApiError`] put in the response's
/// extensions, `OK` when nothing did.
#[derive(Clone, Copy)]
struct ErrorCode(&'static str);

/// Accepts the request's trace context (for the handler and the journal),
/// and on the way out sets `traceparent` and `x-request-id` and counts the
/// response in the request metrics.
async fn observe(State(app): State<Arc<App>>, mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let matched = Endpoint::of(request.extensions().get::<MatchedPath>(), request.method());
    let endpoint = matched.map_or("other", Endpoint::label);
    let trace = app.trace_ids.accept(request.headers().get("traceparent").and_then(|v| v.to_str().ok()));
    request.extensions_mut().insert(trace);
    if let Some(matched) = matched {
        request.extensions_mut().insert(matched);
    }
    let mut response = next.run(request).await;
    let code = response.extensions().get::<ErrorCode>().map_or("OK", |c| c.0);
    let headers = response.headers_mut();
    headers.insert("traceparent", HeaderValue::from_str(&trace.traceparent()).expect("hex"));
    headers.insert("x-request-id", HeaderValue::from_str(&trace.request_id()).expect("hex"));
    app.runtime.metrics.record_request(endpoint, code, response.status().as_u16(), started.elapsed());
    response
}

async fn not_found(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", format!("no route for {method} {}", uri.path()))
}

/// A known path asked with a method it does not take.
async fn method_not_allowed(matched: Option<MatchedPath>) -> ApiError {
    let path = matched.as_ref().map(|m| m.as_str());
    let methods: Vec<String> =
        Endpoint::ALL.into_iter().filter(|e| Some(e.path()) == path).map(|e| e.method().to_string()).collect();
    let allow = if methods.is_empty() { "GET".to_string() } else { methods.join(", ") };
    let mut e = ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED", format!("use {allow} here"));
    e.detail = Some(serde_json::json!({ "allow": allow }));
    e
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = json(self.status, self.body());
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.status == StatusCode::PAYLOAD_TOO_LARGE {
            // The rest of the body is never read: the connection cannot
            // carry another request, and the client must not reuse it.
            response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
        }
        if self.code == "UNAUTHENTICATED" {
            response.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"inventory\""));
        }
        if self.status == StatusCode::METHOD_NOT_ALLOWED {
            if let Some(allow) = self.detail.as_ref().and_then(|d| d["allow"].as_str()) {
                response.headers_mut().insert(ALLOW, HeaderValue::from_str(allow).expect("method names"));
            }
        }
        response.extensions_mut().insert(ErrorCode(self.code));
        response
    }
}

/// A JSON response.
pub(crate) fn json(status: StatusCode, body: Vec<u8>) -> Response {
    let mut response = Response::new(axum::body::Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Marks a response as the replay of an idempotent request.
pub(crate) fn replayed(mut response: Response) -> Response {
    response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}

pub(crate) fn ready(app: &App) -> Result<(), ApiError> {
    if app.runtime.router.is_ready() {
        Ok(())
    } else {
        Err(not_ready())
    }
}

pub(crate) fn not_ready() -> ApiError {
    ApiError::unavailable("NOT_READY", "the service is replaying its journal")
}

pub(crate) fn cold_unavailable(e: inventory_cold::ColdError) -> ApiError {
    ApiError::unavailable("COLD_TIER_UNAVAILABLE", format!("the cold tier could not be read: {e}"))
}

pub(crate) fn stopping() -> ApiError {
    ApiError::unavailable("SHUTTING_DOWN", "the service is shutting down")
}

impl App {
    /// The error for a request its shard's queue did not take.
    pub(crate) fn send_error(&self, e: SendError) -> ApiError {
        match e {
            SendError::Overloaded => {
                self.runtime.metrics.overload_refusals.inc();
                ApiError::unavailable("OVERLOADED", "the shard's queue is full; retry shortly")
            }
            SendError::Stopped => stopping(),
        }
    }
}
