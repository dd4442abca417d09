//! Reads: stock, holds and orders, answered by the shard loops from
//! committed state through each shard's read lane (served after writes),
//! and admitted by the query rate limit first; health, readiness and
//! metrics.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::header::{HeaderValue, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::Response;
use inventory_core::{Query, QueryResult, ReservationId, ReservationView};
use inventory_runtime::limiter::retry_after_secs;
use inventory_runtime::Request;
use tokio::sync::oneshot;

use super::extract::{path_id, Ctx};
use super::{cold_unavailable, json, not_ready, ready, stopping, App};
use crate::api::{self, ApiError};

pub async fn health() -> Response {
    json(StatusCode::OK, br#"{"status":"ok"}"#.to_vec())
}

pub async fn ready_check(State(app): State<Arc<App>>) -> Result<Response, ApiError> {
    if app.runtime.router.is_ready() {
        Ok(json(StatusCode::OK, br#"{"status":"ready"}"#.to_vec()))
    } else {
        Err(not_ready())
    }
}

/// A stock query the query rate limit admitted. Taken before any other
/// extractor, so a refused query costs a clock read and a compare-and-swap:
/// its path is not parsed and nothing is queued.
pub struct Admitted;

impl FromRequestParts<Arc<App>> for Admitted {
    type Rejection = ApiError;

    async fn from_request_parts(_: &mut Parts, app: &Arc<App>) -> Result<Admitted, ApiError> {
        let queries = &app.runtime.queries;
        match queries.admit() {
            Ok(()) => Ok(Admitted),
            Err(wait) => {
                app.runtime.metrics.rate_limited.inc();
                let message = format!("stock queries are limited to {} a second; retry shortly", queries.per_second());
                Err(ApiError {
                    retry_after: Some(retry_after_secs(wait)),
                    ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED", message)
                })
            }
        }
    }
}

pub async fn metrics(State(app): State<Arc<App>>) -> Response {
    let runtime = &app.runtime;
    runtime.metrics.set_read_queue_depths(&runtime.router.read_queue_depths());
    let mut response = Response::new(Body::from(runtime.metrics.render(&runtime.router.queue_depths())));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"));
    response
}

pub async fn stock(
    _: Admitted,
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let sku = path_id("skuId", path)?;
    ready(&app)?;
    let shard = app.runtime.router.shard_for_sku(&sku);
    match read(&app, shard, Query::Stock { sku_id: sku.clone() }).await? {
        QueryResult::Stock(Some(stock)) => Ok(json(StatusCode::OK, api::stock_json(&stock))),
        _ => Err(ApiError::new(StatusCode::NOT_FOUND, "SKU_NOT_FOUND", format!("no stock for SKU {sku:?}"))),
    }
}

pub async fn reservation(
    _: Admitted,
    State(app): State<Arc<App>>,
    ctx: Ctx,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = path_id("reservationId", path)?;
    let id = api::parse_reservation_id("reservationId", &id)?;
    ready(&app)?;
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, "RESERVATION_NOT_FOUND", format!("no reservation {id}"));
    let mut view = hold(&app, id).await?.ok_or_else(not_found)?;
    // Another tenant's hold is not found.
    view.order_id = ctx.owns(&view.order_id).ok_or_else(not_found)?.to_string();
    Ok(json(StatusCode::OK, serde_json::to_vec(&api::ReservationJson::from(view)).expect("json")))
}

/// A hold, from memory or the cold tier.
pub(super) async fn hold(app: &App, id: ReservationId) -> Result<Option<ReservationView>, ApiError> {
    let Some(shard) = app.runtime.router.shard_for_reservation(id) else { return Ok(None) };
    match read(app, shard, Query::Reservation { id }).await? {
        QueryResult::Reservation(Some(view)) => Ok(Some(view)),
        _ => cold_hold(app, shard, id.seq()).await,
    }
}

/// A finished hold that has moved to the cold tier, if it is still kept.
async fn cold_hold(app: &App, shard: u16, seq: u64) -> Result<Option<ReservationView>, ApiError> {
    let Some(store) = app.runtime.cold.get(shard as usize).cloned() else { return Ok(None) };
    let now = app.runtime.clock.now_ms();
    let hold = cold_read(app, move || store.hold(seq)).await;
    Ok(hold.map_err(cold_unavailable)?.filter(|h| h.visible(now)).map(|h| h.view(shard)))
}

/// Runs a read of a cold store off the HTTP thread, timing the read.
async fn cold_read<T: Send + 'static>(app: &App, read: impl FnOnce() -> T + Send + 'static) -> T {
    let seconds = app.runtime.metrics.cold_lookup_seconds.clone();
    tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        let found = read();
        seconds.observe(started.elapsed().as_secs_f64());
        found
    })
    .await
    .expect("cold lookup panicked")
}

/// The finished holds of an order that have moved to the cold tier.
async fn cold_order(app: &App, order_id: &str) -> Result<Vec<ReservationView>, ApiError> {
    let now = app.runtime.clock.now_ms();
    let mut views = Vec::new();
    for (shard, store) in app.runtime.cold.iter().enumerate() {
        let (store, order_id) = (store.clone(), order_id.to_string());
        let holds = cold_read(app, move || store.order(&order_id)).await;
        let holds = holds.map_err(cold_unavailable)?;
        views.extend(holds.into_iter().filter(|h| h.visible(now)).map(|h| h.view(shard as u16)));
    }
    Ok(views)
}

/// Every hold of an order. Holds of one order live on the shards of their
/// SKUs: every shard is asked.
pub async fn order_status(
    _: Admitted,
    State(app): State<Arc<App>>,
    ctx: Ctx,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let asked = path_id("orderId", path)?;
    let order_id = ctx.scope("orderId", asked.clone())?;
    ready(&app)?;
    let router = &app.runtime.router;
    let mut answers = Vec::with_capacity(router.shards() as usize);
    for shard in 0..router.shards() {
        let (reply, answer) = oneshot::channel();
        router
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
    // A hold that finished recently is in memory and already in the cold
    // tier: memory's copy stands.
    let hot: std::collections::HashSet<_> = holds.iter().map(|v| v.reservation_id).collect();
    holds.extend(cold_order(&app, &order_id).await?.into_iter().filter(|v| !hot.contains(&v.reservation_id)));
    holds.sort_by_key(|v| (v.created_at, v.reservation_id));
    for hold in &mut holds {
        hold.order_id.clone_from(&asked);
    }
    let body = api::OrderJson { order_id: asked, reservations: holds.into_iter().map(Into::into).collect() };
    Ok(json(StatusCode::OK, serde_json::to_vec(&body).expect("json")))
}

/// Asks one shard a question; it answers from committed state.
pub(super) async fn read(app: &App, shard: u16, query: Query) -> Result<QueryResult, ApiError> {
    let (reply, answer) = oneshot::channel();
    app.runtime.router.send(shard, Request::Read { query, reply }).map_err(|e| app.send_error(e))?;
    answer.await.map_err(|_| stopping())
}
