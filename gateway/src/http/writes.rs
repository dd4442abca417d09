//! Request handling: routing, body limits, and turning requests into shard
//! commands and replies into responses.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Method, Request as HttpRequest, Response, StatusCode};
use inventory_core::{
    key_hash, Applied, Command, Confirm, Query, QueryResult, Receive, Release, Reserve, DEFAULT_WAREHOUSE, SECOND_MS,
};
use percent_encoding::percent_decode_str;
use tokio::sync::oneshot;

use crate::api::{self, ApiError, BODY_BYTES_MAX, ID_BYTES_MAX, TEXT_BYTES_MAX, TTL_SECONDS_MAX};
use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::router::{Claim, IdemIndex, Router, SendError};
use crate::shard_loop::{Meta, Request, WriteReply};
use crate::trace::{TraceContext, TraceIds};

pub type Body = Full<Bytes>;

/// Everything a request handler needs; shared by all connections.
pub struct App {
    pub router: Arc<Router>,
    pub idem: Arc<IdemIndex>,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
    pub trace_ids: TraceIds,
    pub progress: Vec<Arc<inventory_persistence::ShardProgress>>,
    /// Read handles on every shard's journal (reconciliation).
    pub readers: Vec<Arc<dyn inventory_journal::Journal + Sync>>,
    pub postgres: Option<inventory_persistence::WriterConfig>,
    /// Asks the snapshotter for a snapshot of every shard now.
    pub snapshots: crossbeam_channel::Sender<crate::snapshotter::SnapshotRequest>,
    pub default_ttl_ms: u64,
    pub max_qty: u64,
}

const WRITE_PATHS: [&str; 5] = ["receive", "reserve", "confirm", "release", "receive-batch"];

/// Operator recorded when a request names none.
pub const ANONYMOUS_OPERATOR: &str = "anonymous";

/// Per-request context carried to the shard with each write.
struct Ctx {
    trace: TraceContext,
    operator: String,
}

impl Ctx {
    fn meta(&self) -> Meta {
        Meta { trace_id: self.trace.trace_id, operator: self.operator.clone() }
    }
}

pub async fn handle(app: Arc<App>, req: HttpRequest<Incoming>) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    let endpoint = endpoint_label(req.method(), req.uri().path());
    let trace = app.trace_ids.accept(req.headers().get("traceparent").and_then(|v| v.to_str().ok()));
    let (mut response, code) = match operator(&req) {
        Ok(operator) => {
            let ctx = Ctx { trace, operator };
            match route(&app, &ctx, req).await {
                Ok(response) => (response, "OK"),
                Err(error) => (error_response(&error), error.code),
            }
        }
        Err(error) => (error_response(&error), error.code),
    };
    let headers = response.headers_mut();
    headers.insert("traceparent", HeaderValue::from_str(&trace.traceparent()).expect("hex"));
    headers.insert("x-request-id", HeaderValue::from_str(&trace.request_id()).expect("hex"));
    app.metrics.record_request(endpoint, code, response.status().as_u16(), started.elapsed());
    Ok(response)
}

/// The `endpoint` label of a request: a small fixed set, whatever the path.
fn endpoint_label(method: &Method, path: &str) -> &'static str {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        (_, ["api", "inventory", "receive"]) => "receive",
        (_, ["api", "inventory", "reserve"]) => "reserve",
        (_, ["api", "inventory", "confirm"]) => "confirm",
        (_, ["api", "inventory", "release"]) => "release",
        (_, ["api", "inventory", "receive-batch"]) => "receive_batch",
        (_, ["api", "inventory", _]) => "stock",
        (_, ["api", "reservations", _]) => "reservation",
        (_, ["api", "orders", _, "inventory-status"]) => "order_status",
        (_, ["healthz"] | ["readyz"]) => "health",
        (_, ["metrics"]) => "metrics",
        (_, ["api", "admin", ..]) => "admin",
        _ => "other",
    }
}

fn operator(req: &HttpRequest<Incoming>) -> Result<String, ApiError> {
    match req.headers().get("x-operator") {
        None => Ok(ANONYMOUS_OPERATOR.to_string()),
        Some(v) => {
            let v = v.to_str().map_err(|_| ApiError::invalid("X-Operator header must be visible ASCII"))?;
            api::check_text("X-Operator", v, ID_BYTES_MAX)?;
            Ok(v.to_string())
        }
    }
}

async fn route(app: &App, ctx: &Ctx, req: HttpRequest<Incoming>) -> Result<Response<Body>, ApiError> {
    let path = req.uri().path().to_string();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let method = req.method().clone();
    match (segments.as_slice(), &method) {
        (["healthz"], &Method::GET) => Ok(json(StatusCode::OK, br#"{"status":"ok"}"#.to_vec())),
        (["metrics"], &Method::GET) => {
            let mut response = Response::new(Full::new(Bytes::from(app.metrics.render(&app.router.queue_depths()))));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
            );
            Ok(response)
        }
        (["readyz"], &Method::GET) => {
            if app.router.is_ready() {
                Ok(json(StatusCode::OK, br#"{"status":"ready"}"#.to_vec()))
            } else {
                Err(not_ready())
            }
        }
        (["api", "inventory", action], &Method::POST) if WRITE_PATHS.contains(action) => {
            let action = action.to_string();
            let header_key = header_key(&req)?;
            let batch = action == "receive-batch";
            let form = if batch { batch_form(&req)? } else { BatchForm::Json };
            let limit = if batch { api::BATCH_BODY_BYTES_MAX } else { BODY_BYTES_MAX };
            let body = read_body_limited(req, limit).await?;
            ready(app)?;
            match action.as_str() {
                "receive-batch" => receive_batch(app, ctx, &body, form, header_key.as_deref()).await,
                "receive" => receive(app, ctx, &body, header_key.as_deref()).await,
                "reserve" => reserve(app, ctx, &body, header_key.as_deref()).await,
                "confirm" => confirm(app, ctx, &body, header_key.as_deref()).await,
                _ => release(app, ctx, &body, header_key.as_deref()).await,
            }
        }
        (["api", "inventory", action], _) if WRITE_PATHS.contains(action) => Err(method_not_allowed("POST")),
        (["api", "inventory", sku], &Method::GET) => {
            let sku = decode_segment("skuId", sku)?;
            ready(app)?;
            let shard = app.router.shard_for_sku(&sku);
            match read(app, shard, Query::Stock { sku_id: sku.clone() }).await? {
                QueryResult::Stock(Some(stock)) => Ok(json(StatusCode::OK, api::stock_json(&stock))),
                _ => Err(ApiError::new(StatusCode::NOT_FOUND, "SKU_NOT_FOUND", format!("no stock for SKU {sku:?}"))),
            }
        }
        (["api", "reservations", id], &Method::GET) => {
            let id = decode_segment("reservationId", id)?;
            let id = api::parse_reservation_id("reservationId", &id)?;
            ready(app)?;
            let not_found =
                || ApiError::new(StatusCode::NOT_FOUND, "RESERVATION_NOT_FOUND", format!("no reservation {id}"));
            let shard = app.router.shard_for_reservation(id).ok_or_else(not_found)?;
            match read(app, shard, Query::Reservation { id }).await? {
                QueryResult::Reservation(Some(view)) => {
                    Ok(json(StatusCode::OK, serde_json::to_vec(&api::ReservationJson::from(view)).expect("json")))
                }
                _ => Err(not_found()),
            }
        }
        (["api", "admin", "persistence"], &Method::GET) => Ok(crate::admin::persistence_status(app)),
        (["api", "admin", "snapshot"], &Method::POST) => {
            ready(app)?;
            crate::admin::snapshot(app).await
        }
        (["api", "admin", "capacity"], &Method::POST) => {
            let body = read_body(req).await?;
            ready(app)?;
            crate::admin::capacity(app, &body).await
        }
        (["api", "admin", "reconcile"], &Method::POST) => {
            let body = read_body(req).await?;
            ready(app)?;
            crate::admin::reconcile(app, &body).await
        }
        (["api", "orders", order, "inventory-status"], &Method::GET) => {
            let order = decode_segment("orderId", order)?;
            ready(app)?;
            order_status(app, order).await
        }
        (["api", "inventory", _] | ["api", "reservations", _] | ["api", "orders", _, "inventory-status"], _) => {
            Err(method_not_allowed("GET"))
        }
        (["healthz"] | ["readyz"] | ["metrics"] | ["api", "admin", "persistence"], _) => Err(method_not_allowed("GET")),
        (["api", "admin", "reconcile" | "snapshot" | "capacity"], _) => Err(method_not_allowed("POST")),
        _ => Err(ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", format!("no route for {method} {path}"))),
    }
}

// ----- writes ---------------------------------------------------------------

async fn receive(app: &App, ctx: &Ctx, body: &[u8], header_key: Option<&str>) -> Result<Response<Body>, ApiError> {
    let b: api::ReceiveBody = api::parse(body)?;
    let idem_key = api::idem_key(b.idem_key, header_key)?;
    api::check_text("skuId", &b.sku_id, ID_BYTES_MAX)?;
    let warehouse_id = warehouse(b.warehouse_id)?;
    api::check_qty(b.qty, app.max_qty)?;
    let reference = b.reference.unwrap_or_default();
    if !reference.is_empty() {
        api::check_text("ref", &reference, TEXT_BYTES_MAX)?;
    }
    let shard = app.router.shard_for_sku(&b.sku_id);
    let sku = b.sku_id.clone();
    let command = Command::Receive(Receive {
        sku_id: b.sku_id,
        warehouse_id: warehouse_id.clone(),
        qty: b.qty,
        idem_key,
        reference,
    });
    let applied = write(app, shard, command, ctx.meta()).await?;
    outcome_response(applied, &sku, &warehouse_id)
}

/// How a `receive-batch` body is written: JSON, or CSV rows (`Content-Type:
/// text/csv`) with the key in the `Idempotency-Key` header and the
/// reference in the `ref` query parameter.
enum BatchForm {
    Json,
    Csv { reference: Option<String> },
}

fn batch_form(req: &HttpRequest<Incoming>) -> Result<BatchForm, ApiError> {
    let csv = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("text/csv"));
    if !csv {
        return Ok(BatchForm::Json);
    }
    let mut reference = None;
    for pair in req.uri().query().unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=').unwrap_or((pair, "")) {
            ("ref", value) => {
                let value = percent_decode_str(value)
                    .decode_utf8()
                    .map_err(|_| ApiError::invalid("ref in the query is not UTF-8"))?;
                reference = Some(value.into_owned());
            }
            (name, _) => {
                return Err(ApiError::invalid(format!(
                    "unknown query parameter {name:?}: a CSV receive-batch takes only ref"
                )))
            }
        }
    }
    Ok(BatchForm::Csv { reference })
}

/// Names a field of one batch row in an error: `items[3].qty` in JSON,
/// `line 4: qty` in CSV.
struct RowField<'a> {
    index: usize,
    lines: Option<&'a [u32]>,
    field: &'static str,
}

impl std::fmt::Display for RowField<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.lines {
            Some(lines) => write!(f, "line {}: {}", lines[self.index], self.field),
            None => write!(f, "items[{}].{}", self.index, self.field),
        }
    }
}

/// Bulk receipts: split by shard, one all-or-nothing command per shard, each
/// under a key derived from the request's (`<key>#<shard>`), so retrying a
/// request whose parts partly landed adds nothing twice.
async fn receive_batch(
    app: &App,
    ctx: &Ctx,
    body: &[u8],
    form: BatchForm,
    header_key: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let (items, lines, body_key, reference) = match form {
        BatchForm::Json => {
            let b: api::ReceiveBatchBody = api::parse(body)?;
            (b.items, None, b.idem_key, b.reference)
        }
        BatchForm::Csv { reference } => {
            let (items, lines) = api::parse_batch_csv(body)?;
            (items, Some(lines), None, reference)
        }
    };
    let idem_key = api::idem_key(body_key, header_key)?;
    if items.is_empty() || items.len() > api::BATCH_ROWS_MAX {
        let what = if lines.is_some() { "a CSV body" } else { "items" };
        return Err(ApiError::invalid(format!(
            "{what} must hold 1 to {} rows, got {}",
            api::BATCH_ROWS_MAX,
            items.len()
        )));
    }
    let reference = reference.unwrap_or_default();
    if !reference.is_empty() {
        api::check_text("ref", &reference, TEXT_BYTES_MAX)?;
    }
    let shards = app.router.shards() as usize;
    let mut parts: Vec<Vec<inventory_core::ReceiveItem>> =
        (0..shards).map(|_| Vec::with_capacity(items.len() / shards + items.len() / 8 + 1)).collect();
    let lines = lines.as_deref();
    for (index, item) in items.into_iter().enumerate() {
        let field = |field| RowField { index, lines, field };
        api::check_text(field("skuId"), &item.sku_id, ID_BYTES_MAX)?;
        let warehouse_id = item.warehouse_id.unwrap_or_else(|| DEFAULT_WAREHOUSE.to_string());
        api::check_text(field("warehouseId"), &warehouse_id, ID_BYTES_MAX)?;
        if item.qty == 0 || item.qty > app.max_qty {
            return Err(ApiError::invalid(format!(
                "{} must be between 1 and {}, got {}",
                field("qty"),
                app.max_qty,
                item.qty
            )));
        }
        let shard = app.router.shard_for_sku(&item.sku_id);
        parts[shard as usize].push(inventory_core::ReceiveItem { sku_id: item.sku_id, warehouse_id, qty: item.qty });
    }
    let mut pending = Vec::new();
    for (shard, items) in parts.into_iter().enumerate().filter(|(_, items)| !items.is_empty()) {
        let command = Command::ReceiveBatch(inventory_core::ReceiveBatch {
            items,
            idem_key: format!("{idem_key}#{shard}"),
            reference: reference.clone(),
        });
        pending.push(write(app, shard as u16, command, ctx.meta()));
    }
    let (mut rows, mut units, mut replayed) = (0u64, 0u64, true);
    for part in pending {
        let applied = part.await?;
        match applied.outcome {
            inventory_core::Outcome::ReceivedBatch { rows: r, units: u } => {
                rows += r as u64;
                units += u;
                replayed &= applied.replayed;
            }
            inventory_core::Outcome::Rejected(r) => return Err(api::rejection_error(r)),
            other => unreachable!("receive-batch answered {other:?}"),
        }
    }
    let mut response =
        json(StatusCode::OK, serde_json::to_vec(&serde_json::json!({ "rows": rows, "units": units })).expect("json"));
    if replayed {
        response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

async fn reserve(app: &App, ctx: &Ctx, body: &[u8], header_key: Option<&str>) -> Result<Response<Body>, ApiError> {
    let b: api::ReserveBody = api::parse(body)?;
    let idem_key = api::idem_key(b.idem_key, header_key)?;
    api::check_text("orderId", &b.order_id, ID_BYTES_MAX)?;
    api::check_text("skuId", &b.sku_id, ID_BYTES_MAX)?;
    let warehouse_id = warehouse(b.warehouse_id)?;
    api::check_qty(b.qty, app.max_qty)?;
    let ttl_ms = match b.ttl_seconds {
        Some(s) if s == 0 || s > TTL_SECONDS_MAX => {
            return Err(ApiError::invalid(format!("ttlSeconds must be between 1 and {TTL_SECONDS_MAX}, got {s}")));
        }
        Some(s) => s * SECOND_MS,
        None => app.default_ttl_ms,
    };
    let shard = app.router.shard_for_sku(&b.sku_id);
    let command = Command::Reserve(Reserve {
        order_id: b.order_id,
        sku_id: b.sku_id,
        warehouse_id,
        qty: b.qty,
        idem_key,
        ttl_ms,
        ttl_explicit: b.ttl_seconds.is_some(),
    });
    let applied = write(app, shard, command, ctx.meta()).await?;
    outcome_response(applied, "", "")
}

async fn confirm(app: &App, ctx: &Ctx, body: &[u8], header_key: Option<&str>) -> Result<Response<Body>, ApiError> {
    let b: api::ConfirmBody = api::parse(body)?;
    let idem_key = api::idem_key(b.idem_key, header_key)?;
    let id = api::parse_reservation_id("reservationId", &b.reservation_id)?;
    api::check_text("paymentId", &b.payment_id, ID_BYTES_MAX)?;
    let shard = own_shard(app, id)?;
    let command = Command::Confirm(Confirm { reservation_id: id, payment_id: b.payment_id, idem_key });
    let applied = write(app, shard, command, ctx.meta()).await?;
    outcome_response(applied, "", "")
}

async fn release(app: &App, ctx: &Ctx, body: &[u8], header_key: Option<&str>) -> Result<Response<Body>, ApiError> {
    let b: api::ReleaseBody = api::parse(body)?;
    let idem_key = api::idem_key(b.idem_key, header_key)?;
    let id = api::parse_reservation_id("reservationId", &b.reservation_id)?;
    api::check_text("reason", &b.reason, TEXT_BYTES_MAX)?;
    let shard = own_shard(app, id)?;
    let command = Command::Release(Release { reservation_id: id, reason: b.reason, idem_key });
    let applied = write(app, shard, command, ctx.meta()).await?;
    outcome_response(applied, "", "")
}

fn warehouse(id: Option<String>) -> Result<String, ApiError> {
    let id = id.unwrap_or_else(|| DEFAULT_WAREHOUSE.to_string());
    api::check_text("warehouseId", &id, ID_BYTES_MAX)?;
    Ok(id)
}

fn own_shard(app: &App, id: inventory_core::ReservationId) -> Result<u16, ApiError> {
    app.router
        .shard_for_reservation(id)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "RESERVATION_NOT_FOUND", format!("no reservation {id}")))
}

/// Sends a command to its shard and waits for the durable outcome.
async fn write(app: &App, shard: u16, command: Command, meta: Meta) -> Result<Applied, ApiError> {
    let key = key_hash(command.idem_key().expect("writes carry a key"));
    let claim = app.idem.claim(key, shard, app.clock.now_ms());
    if claim == Claim::Conflict {
        return Err(api::rejection_error(inventory_core::Rejection::IdempotencyKeyReused));
    }
    let (reply, answer) = oneshot::channel();
    if let Err(e) = app.router.send(shard, Request::Write { command, meta, reply }) {
        if claim == Claim::Fresh {
            app.idem.unclaim(key, shard);
        }
        return Err(app.send_error(e));
    }
    match answer.await {
        Ok(WriteReply::Applied(applied)) => {
            if applied.replayed {
                app.metrics.idempotent_replays.inc();
            }
            Ok(applied)
        }
        Ok(WriteReply::JournalUnavailable) => Err(ApiError::unavailable(
            "JOURNAL_UNAVAILABLE",
            "the journal could not make this change durable; nothing was acknowledged, retry with the same idempotency key",
        )),
        Err(_) => Err(stopping()),
    }
}

fn outcome_response(applied: Applied, sku: &str, warehouse: &str) -> Result<Response<Body>, ApiError> {
    let body = api::outcome_json(applied.outcome, sku, warehouse)?;
    let mut response = json(StatusCode::OK, body);
    if applied.replayed {
        response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

// ----- reads ----------------------------------------------------------------

async fn read(app: &App, shard: u16, query: Query) -> Result<QueryResult, ApiError> {
    let (reply, answer) = oneshot::channel();
    app.router.send(shard, Request::Read { query, reply }).map_err(|e| app.send_error(e))?;
    answer.await.map_err(|_| stopping())
}

async fn order_status(app: &App, order_id: String) -> Result<Response<Body>, ApiError> {
    // Holds of one order live on the shards of their SKUs: ask every shard.
    let mut answers = Vec::with_capacity(app.router.shards() as usize);
    for shard in 0..app.router.shards() {
        let (reply, answer) = oneshot::channel();
        app.router
            .send(shard, Request::Read { query: Query::Order { order_id: order_id.clone() }, reply })
            .map_err(|e| app.send_error(e))?;
        answers.push(answer);
    }
    let mut holds = Vec::new();
    for answer in answers {
        if let QueryResult::Order(views) = answer.await.map_err(|_| stopping())? {
            holds.extend(views);
        }
    }
    holds.sort_by_key(|v| (v.created_at, v.reservation_id));
    let body = api::OrderJson { order_id, reservations: holds.into_iter().map(Into::into).collect() };
    Ok(json(StatusCode::OK, serde_json::to_vec(&body).expect("json")))
}

// ----- plumbing -------------------------------------------------------------

pub(crate) fn ready(app: &App) -> Result<(), ApiError> {
    if app.router.is_ready() {
        Ok(())
    } else {
        Err(not_ready())
    }
}

fn not_ready() -> ApiError {
    ApiError::unavailable("NOT_READY", "the service is replaying its journal")
}

pub(crate) fn stopping() -> ApiError {
    ApiError::unavailable("SHUTTING_DOWN", "the service is shutting down")
}

impl App {
    pub(crate) fn send_error(&self, e: SendError) -> ApiError {
        match e {
            SendError::Overloaded => {
                self.metrics.overload_refusals.inc();
                ApiError::unavailable("OVERLOADED", "the shard's queue is full; retry shortly")
            }
            SendError::Stopped => stopping(),
        }
    }
}

fn method_not_allowed(allow: &'static str) -> ApiError {
    let mut e = ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED", format!("use {allow} here"));
    e.detail = Some(serde_json::json!({ "allow": allow }));
    e
}

fn header_key(req: &HttpRequest<Incoming>) -> Result<Option<String>, ApiError> {
    match req.headers().get("idempotency-key") {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(|s| Some(s.to_string()))
            .map_err(|_| ApiError::invalid("Idempotency-Key header must be visible ASCII")),
    }
}

fn decode_segment(field: &str, raw: &str) -> Result<String, ApiError> {
    let value = percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| ApiError::invalid(format!("{field} in the path is not UTF-8")))?
        .into_owned();
    api::check_text(field, &value, ID_BYTES_MAX)?;
    Ok(value)
}

pub(crate) async fn read_body(req: HttpRequest<Incoming>) -> Result<Bytes, ApiError> {
    read_body_limited(req, BODY_BYTES_MAX).await
}

async fn read_body_limited(req: HttpRequest<Incoming>, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            format!("request bodies are limited to {limit} bytes"),
        )
    };
    let declared = req.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match Limited::new(req.into_body(), limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Err(too_large()),
        Err(e) => Err(ApiError::invalid(format!("could not read the request body: {e}"))),
    }
}

pub(crate) fn json(status: StatusCode, body: Vec<u8>) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn error_response(error: &ApiError) -> Response<Body> {
    let mut response = json(error.status, error.body());
    if let Some(seconds) = error.retry_after {
        response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(seconds));
    }
    if error.status == StatusCode::METHOD_NOT_ALLOWED {
        if let Some(allow) = error.detail.as_ref().and_then(|d| d["allow"].as_str()) {
            response.headers_mut().insert(ALLOW, HeaderValue::from_str(allow).expect("static"));
        }
    }
    response
}
