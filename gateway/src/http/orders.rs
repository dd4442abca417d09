//! Orders of several lines: reserved all or nothing across shards,
//! confirmed and released as one, and the resolver that settles what a
//! failure or a crash left undecided. The protocol is in
//! `core/src/order.rs` and ARCHITECTURE.md ("Orders across shards").
//!
//! The gateway coordinates, and never holds a shard while another decides:
//! each shard holds its lines on its own (`PrepareOrder`), the home (the
//! lowest of the order's shards) records the decision (`DecideOrder`),
//! and the others follow it (`FinishOrder`). A reserve is answered only
//! once every shard's lines are the order's.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use inventory_core::{
    Applied, Command, DecideOrder, FinishOrder, LineRefusal, OrderDecision, OrderLine, OrderLineView, OrderRecord,
    OrderState, Outcome, PrepareOrder, Query, QueryResult, Rejection, ReservationId, ReservationView,
    DEFAULT_WAREHOUSE, ORDER_LINES_MAX, REASON_ORDER_ABORTED, REASON_TIMEOUT, SECOND_MS,
};
use inventory_runtime::{Meta, Request, SendError, WriteReply};
use tokio::sync::oneshot;

use super::extract::{path_id, Ctx, Write};
use super::reads::read;
use super::writes::{answer, write_detailed};
use super::{stopping, App};
use crate::api::{self, ApiError, ID_BYTES_MAX, TEXT_BYTES_MAX, TTL_SECONDS_MAX};

/// A tentative line older than this, whose home has not decided, is
/// aborted by the resolver: the longest another buyer can find its units
/// taken by an order that will not hold.
pub const TENTATIVE_MAX_MS: u64 = 2_000;
/// How often the resolver looks for lines to settle.
pub const RESOLVE_EVERY: Duration = Duration::from_millis(500);

/// `POST /api/orders/{orderId}/reserve`.
pub async fn reserve(
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
    Write { ctx, body: b, idem_key }: Write<api::OrderReserveBody>,
) -> Result<Response, ApiError> {
    let asked = path_id("orderId", path)?;
    if b.lines.is_empty() || b.lines.len() > ORDER_LINES_MAX {
        return Err(ApiError::invalid(format!("lines must hold 1 to {ORDER_LINES_MAX} lines, got {}", b.lines.len())));
    }
    let mut seen = HashSet::new();
    let mut lines = Vec::with_capacity(b.lines.len());
    for (i, line) in b.lines.into_iter().enumerate() {
        api::check_text(format!("lines[{i}].skuId"), &line.sku_id, ID_BYTES_MAX)?;
        let warehouse_id = line.warehouse_id.unwrap_or_else(|| DEFAULT_WAREHOUSE.to_string());
        api::check_text(format!("lines[{i}].warehouseId"), &warehouse_id, ID_BYTES_MAX)?;
        if line.qty == 0 || line.qty > app.max_qty {
            return Err(ApiError::invalid(format!(
                "lines[{i}].qty must be between 1 and {}, got {}",
                app.max_qty, line.qty
            )));
        }
        if !seen.insert(line.sku_id.clone()) {
            return Err(ApiError::invalid(format!(
                "lines[{i}]: SKU {:?} is already a line of this order (one line per SKU)",
                line.sku_id
            )));
        }
        lines.push(OrderLine { sku_id: line.sku_id, warehouse_id, qty: line.qty });
    }
    for (field, value) in [("buyerId", &b.buyer_id), ("channel", &b.channel)] {
        if let Some(value) = value {
            api::check_text(field, value, ID_BYTES_MAX)?;
        }
    }
    let ttl_ms = match b.ttl_seconds {
        Some(s) if s == 0 || s > TTL_SECONDS_MAX => {
            return Err(ApiError::invalid(format!("ttlSeconds must be between 1 and {TTL_SECONDS_MAX}, got {s}")));
        }
        Some(s) => s * SECOND_MS,
        None => app.default_ttl_ms,
    };
    let order_id = ctx.scope("orderId", asked.clone())?;
    let buyer_id = match b.buyer_id {
        Some(buyer) => ctx.scope("buyerId", buyer)?,
        None => String::new(),
    };
    let channel = b.channel.unwrap_or_default();

    // Each shard's lines, in the request's order; the order's shards
    // ascending, the first its home.
    let router = &app.runtime.router;
    let mut parts: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
    for (i, line) in lines.iter().enumerate() {
        parts.entry(router.shard_for_sku(&line.sku_id)).or_default().push(i);
    }
    let shards: Vec<u16> = parts.keys().copied().collect();
    let home = shards[0];
    let expire_at = app.runtime.clock.now_ms().saturating_add(ttl_ms);
    let mut pending = Vec::with_capacity(parts.len());
    for (&shard, indexes) in &parts {
        let command = Command::PrepareOrder(Box::new(PrepareOrder {
            order_id: order_id.clone(),
            lines: indexes.iter().map(|&i| lines[i].clone()).collect(),
            buyer_id: buyer_id.clone(),
            channel: channel.clone(),
            expire_at,
            shards: shards.clone(),
            idem_key: format!("{idem_key}#{shard}"),
        }));
        pending.push(write_detailed(&app, shard, command, ctx.meta()));
    }
    let mut prepared: BTreeMap<u16, (ReservationId, u64)> = BTreeMap::new();
    let mut refused: Vec<(usize, Rejection)> = Vec::new();
    let mut other: Option<ApiError> = None;
    let mut all_replayed = true;
    for ((&shard, indexes), part) in parts.iter().zip(futures_join(pending).await) {
        match part {
            Ok((Applied { outcome: Outcome::OrderPrepared { first, expire_at, .. }, replayed, .. }, _)) => {
                prepared.insert(shard, (first, expire_at));
                all_replayed &= replayed;
            }
            Ok((Applied { outcome: Outcome::Rejected(Rejection::OrderNotReservable { .. }), .. }, lines)) => {
                refused.extend(lines.into_iter().map(|(i, r): LineRefusal| (indexes[i as usize], r)));
            }
            Ok((applied, _)) => {
                let e = match applied.outcome {
                    Outcome::Rejected(r) => api::rejection_error(r),
                    o => unreachable!("a prepare answered {o:?}"),
                };
                other.get_or_insert(e);
            }
            Err(e) => {
                other.get_or_insert(e);
            }
        }
    }
    let meta = ctx.meta();
    if !refused.is_empty() || other.as_ref().is_some_and(|e| e.status.is_client_error()) {
        // Nothing of the order may stay held: the home records the abort
        // (so a late commit cannot revive it) and the shards that held
        // their lines give them back.
        if shards.len() > 1 {
            let state = decide(&app, home, &order_id, OrderDecision::Abort, &shards, expire_at, &meta).await?;
            finish_all(&app, &order_id, state, "", prepared.keys().copied().filter(|&s| s != home), &meta).await;
        }
        if refused.is_empty() {
            return Err(other.expect("a refusal"));
        }
        refused.sort_by_key(|&(i, _)| i);
        return Err(not_reservable(&lines, &refused));
    }
    if let Some(e) = other {
        // A shard could not answer (overloaded, its journal failing): the
        // lines held stay tentative, and a retry with the same key picks
        // them up; without one the resolver aborts them.
        return Err(e);
    }
    let expire_at = prepared[&home].1;
    if shards.len() > 1 {
        let state = decide(&app, home, &order_id, OrderDecision::Commit, &shards, expire_at, &meta).await?;
        finish_all(&app, &order_id, state, "", shards[1..].iter().copied(), &meta).await;
        match state {
            OrderState::Committed => {}
            OrderState::Confirmed | OrderState::Released | OrderState::Expired => {}
            OrderState::Aborted => return Err(api::rejection_error(Rejection::OrderAborted)),
        }
    }
    let mut counters: BTreeMap<u16, u64> = BTreeMap::new();
    let body = api::OrderStateJson {
        order_id: asked,
        status: OrderState::Committed.as_str(),
        expire_at: api::rfc3339(expire_at),
        lines: lines
            .iter()
            .map(|line| {
                let shard = router.shard_for_sku(&line.sku_id);
                let n = counters.entry(shard).or_default();
                let first = prepared[&shard].0;
                let id = ReservationId::new(shard, first.seq() + *n);
                *n += 1;
                api::OrderLineJson {
                    sku_id: line.sku_id.clone(),
                    warehouse_id: line.warehouse_id.clone(),
                    qty: line.qty,
                    reservation_id: id.to_string(),
                }
            })
            .collect(),
    };
    Ok(answer(serde_json::to_vec(&body).expect("json"), all_replayed))
}

/// `409 ORDER_NOT_RESERVABLE`, naming every line that cannot be held.
fn not_reservable(lines: &[OrderLine], refused: &[(usize, Rejection)]) -> ApiError {
    let detail: Vec<api::LineRefusalJson> = refused
        .iter()
        .map(|&(i, r)| api::LineRefusalJson {
            sku_id: lines[i].sku_id.clone(),
            warehouse_id: lines[i].warehouse_id.clone(),
            code: r.code(),
            available: match r {
                Rejection::InsufficientStock { available } => Some(available),
                _ => None,
            },
        })
        .collect();
    let mut e = api::rejection_error(Rejection::OrderNotReservable { failed: refused.len() as u16 });
    e.detail = Some(serde_json::json!({ "lines": detail }));
    e
}

/// Awaits every future, polling them together (a write is queued on its
/// first poll, so every shard works at once); the outputs in order.
async fn futures_join<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut out = Vec::with_capacity(futures.len());
    let mut pinned: Vec<std::pin::Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut done: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut all = true;
        for (f, slot) in pinned.iter_mut().zip(done.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => all = false,
                }
            }
        }
        if all {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    out.extend(done.into_iter().map(|v| v.expect("ready")));
    out
}

/// Sends a keyless order command (a decision or a finish) to its shard,
/// retrying a full queue for a while: these settle what is already
/// decided, and must not be lost to a burst.
async fn send_order(app: &App, shard: u16, command: Command, meta: &Meta) -> Result<Applied, ApiError> {
    let mut wait = Duration::from_millis(5);
    for _ in 0..8 {
        let (reply, answer) = oneshot::channel();
        let request = Request::Write { command: command.clone(), meta: meta.clone(), reply };
        match app.runtime.router.send(shard, request) {
            Ok(()) => {}
            Err(SendError::Overloaded) => {
                tokio::time::sleep(wait).await;
                wait *= 2;
                continue;
            }
            Err(SendError::Stopped) => return Err(stopping()),
        }
        match answer.await {
            Ok(WriteReply::Applied(applied)) | Ok(WriteReply::Refused(applied, _)) => return Ok(applied),
            Ok(WriteReply::Overloaded) => {
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            Ok(WriteReply::JournalUnavailable) => {
                return Err(ApiError::unavailable(
                    "JOURNAL_UNAVAILABLE",
                    "the journal could not make this change durable; retry with the same idempotency key",
                ))
            }
            Ok(WriteReply::ColdUnavailable) => {
                return Err(ApiError::unavailable("COLD_TIER_UNAVAILABLE", "the cold tier could not be read"))
            }
            Err(_) => return Err(stopping()),
        }
    }
    Err(app.send_error(SendError::Overloaded))
}

/// Asks the order's home to decide; answers the state it decided (now or
/// before).
async fn decide(
    app: &App,
    home: u16,
    order_id: &str,
    decision: OrderDecision,
    shards: &[u16],
    expire_at: u64,
    meta: &Meta,
) -> Result<OrderState, ApiError> {
    let command = Command::DecideOrder(Box::new(DecideOrder {
        order_id: order_id.to_string(),
        decision,
        shards: shards.to_vec(),
        expire_at,
    }));
    match send_order(app, home, command, meta).await?.outcome {
        Outcome::OrderDecided { state } => Ok(state),
        Outcome::Rejected(r) => Err(api::rejection_error(r)),
        o => unreachable!("a decision answered {o:?}"),
    }
}

/// Tells `shards` the decided state; one that cannot be told now is left
/// to the resolver.
async fn finish_all(
    app: &App,
    order_id: &str,
    state: OrderState,
    detail: &str,
    shards: impl Iterator<Item = u16>,
    meta: &Meta,
) {
    let mut pending = Vec::new();
    for shard in shards {
        let command = Command::FinishOrder(Box::new(FinishOrder {
            order_id: order_id.to_string(),
            state,
            detail: detail.to_string(),
        }));
        pending.push(async move { (shard, send_order(app, shard, command, meta).await) });
    }
    for (shard, result) in futures_join(pending).await {
        if let Err(e) = result {
            tracing::warn!(
                shard,
                order_id,
                code = e.code,
                "an order's lines did not follow its decision yet; the resolver will"
            );
        }
    }
}

/// The record of an order, from whichever shard is its home.
async fn find_record(app: &App, order_id: &str) -> Result<Option<OrderRecord>, ApiError> {
    for shard in 0..app.runtime.router.shards() {
        if let QueryResult::OrderRecord(Some(record)) =
            read(app, shard, Query::OrderRecord { order_id: order_id.to_string() }).await?
        {
            return Ok(Some(record));
        }
    }
    Ok(None)
}

/// The order's holds on every shard, for an answer.
async fn order_holds(app: &App, order_id: &str) -> Result<Vec<ReservationView>, ApiError> {
    let mut holds = Vec::new();
    for shard in 0..app.runtime.router.shards() {
        if let QueryResult::Order(views) = read(app, shard, Query::Order { order_id: order_id.to_string() }).await? {
            holds.extend(views);
        }
    }
    holds.sort_by_key(|v| v.reservation_id);
    Ok(holds)
}

/// Confirms or releases an order: its home decides, the others follow,
/// and the answer is the order as it then stands.
async fn settle(app: &App, ctx: &Ctx, asked: String, decision: OrderDecision) -> Result<Response, ApiError> {
    let order_id = ctx.scope("orderId", asked.clone())?;
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, "ORDER_NOT_FOUND", format!("no order {asked:?}"));
    let record = find_record(app, &order_id).await?.ok_or_else(not_found)?;
    let home = record.shards[0];
    let meta = ctx.meta();
    let detail = match &decision {
        OrderDecision::Confirm { payment_id } => payment_id.clone(),
        OrderDecision::Release { reason } => reason.clone(),
        OrderDecision::Commit | OrderDecision::Abort => String::new(),
    };
    let state = decide(app, home, &order_id, decision, &record.shards, record.expire_at, &meta).await?;
    let detail = if state == OrderState::Expired { String::new() } else { detail };
    finish_all(app, &order_id, state, &detail, record.shards[1..].iter().copied(), &meta).await;
    let holds = order_holds(app, &order_id).await?;
    let body = api::OrderStateJson {
        order_id: asked,
        status: state.as_str(),
        expire_at: api::rfc3339(record.expire_at),
        lines: holds
            .into_iter()
            .map(|h| api::OrderLineJson {
                sku_id: h.sku_id,
                warehouse_id: h.warehouse_id,
                qty: h.qty,
                reservation_id: h.reservation_id.to_string(),
            })
            .collect(),
    };
    Ok(answer(serde_json::to_vec(&body).expect("json"), false))
}

/// `POST /api/orders/{orderId}/confirm`.
pub async fn confirm(
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
    Write { ctx, body: b, idem_key: _ }: Write<api::OrderConfirmBody>,
) -> Result<Response, ApiError> {
    let asked = path_id("orderId", path)?;
    api::check_text("paymentId", &b.payment_id, ID_BYTES_MAX)?;
    let payment_id = app.security.payment_id(b.payment_id);
    settle(&app, &ctx, asked, OrderDecision::Confirm { payment_id }).await
}

/// `POST /api/orders/{orderId}/release`.
pub async fn release(
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
    Write { ctx, body: b, idem_key: _ }: Write<api::OrderReleaseBody>,
) -> Result<Response, ApiError> {
    let asked = path_id("orderId", path)?;
    api::check_text("reason", &b.reason, TEXT_BYTES_MAX)?;
    if b.reason == REASON_TIMEOUT || b.reason == REASON_ORDER_ABORTED {
        return Err(ApiError::invalid(format!("reason {:?} is the service's own; give another", b.reason)));
    }
    settle(&app, &ctx, asked, OrderDecision::Release { reason: b.reason }).await
}

/// Settles what no request will: tentative lines whose order was never
/// decided (its request failed, or the service crashed), and the lines of
/// orders their home decided that another shard has not followed yet
/// (expired, or confirmed while that shard's queue was full). The first
/// pass after start looks at every line of an order.
pub async fn resolve_orders(app: Arc<App>) {
    while !app.runtime.router.is_ready() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut all = true;
    loop {
        if let Err(e) = resolve_pass(&app, all).await {
            tracing::debug!(code = e.code, "order resolver pass failed; retrying");
        } else {
            all = false;
        }
        tokio::time::sleep(RESOLVE_EVERY).await;
    }
}

async fn resolve_pass(app: &App, all: bool) -> Result<(), ApiError> {
    let now = app.runtime.clock.now_ms();
    let meta = Meta { trace_id: 0, operator: "system".to_string() };
    for shard in 0..app.runtime.router.shards() {
        let query = Query::UnsettledOrders { at: now, tentative_before: now.saturating_sub(TENTATIVE_MAX_MS), all };
        let QueryResult::OrderLines(lines) = read(app, shard, query).await? else { continue };
        for line in lines {
            resolve_line(app, shard, &line, &meta).await?;
        }
    }
    Ok(())
}

async fn resolve_line(app: &App, shard: u16, line: &OrderLineView, meta: &Meta) -> Result<(), ApiError> {
    let query = Query::OrderRecord { order_id: line.order_id.clone() };
    let record = match read(app, line.home, query).await? {
        QueryResult::OrderRecord(record) => record,
        _ => None,
    };
    let (state, detail) = match record {
        Some(record) => (record.state, record.detail),
        // Undecided: a tentative line old enough (or any, after a
        // restart) is aborted by its home first, so a late commit fails.
        None if line.tentative => {
            let home = line.home;
            let shards = if home == shard { vec![home] } else { vec![home.min(shard), home.max(shard)] };
            let state = decide(app, home, &line.order_id, OrderDecision::Abort, &shards, line.expire_at, meta).await?;
            (state, String::new())
        }
        None => return Ok(()),
    };
    let follow = match state {
        OrderState::Committed => line.tentative,
        _ => true,
    };
    // The home's own lines follow its decisions in the same command.
    if follow && shard != line.home {
        let command = Command::FinishOrder(Box::new(FinishOrder { order_id: line.order_id.clone(), state, detail }));
        send_order(app, shard, command, meta).await?;
    }
    Ok(())
}
