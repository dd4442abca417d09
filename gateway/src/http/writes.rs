//! Writes: receipts, holds, confirmations and releases. Each becomes one
//! command (a bulk receipt one per shard), queued to its shard and answered
//! only once the journal flush that holds it has returned.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use inventory_core::{
    key_hash, Applied, Command, Confirm, Outcome, Receive, Release, Reserve, ReserveAs, DEFAULT_WAREHOUSE, SECOND_MS,
};
use inventory_runtime::{Claim, Meta, Request, SendError, WriteReply};
use percent_encoding::percent_decode_str;
use tokio::sync::oneshot;

use super::extract::{BatchBody, BodyBytes, Ctx, HeaderKey, Write};
use super::{cold_unavailable, json, ready, replayed, stopping, App};
use crate::api::{self, ApiError, ID_BYTES_MAX, TEXT_BYTES_MAX, TTL_SECONDS_MAX};
use crate::auth::risk::{RiskCheck, Taken};

pub async fn receive(
    State(app): State<Arc<App>>,
    Write { ctx, body: b, idem_key }: Write<api::ReceiveBody>,
) -> Result<Response, ApiError> {
    api::check_text("skuId", &b.sku_id, ID_BYTES_MAX)?;
    let warehouse_id = warehouse(b.warehouse_id)?;
    api::check_qty(b.qty, app.max_qty)?;
    let reference = b.reference.unwrap_or_default();
    if !reference.is_empty() {
        api::check_text("ref", &reference, TEXT_BYTES_MAX)?;
    }
    let shard = app.runtime.router.shard_for_sku(&b.sku_id);
    let sku = b.sku_id.clone();
    let command = Command::Receive(Receive {
        sku_id: b.sku_id,
        warehouse_id: warehouse_id.clone(),
        qty: b.qty,
        idem_key,
        reference,
    });
    let applied = write(&app, shard, command, ctx.meta()).await?;
    let body = match applied.outcome {
        Outcome::Received { levels, version, updated_at } => {
            api::row_json(&sku, &warehouse_id, levels, version, updated_at)
        }
        other => api::outcome_json(other)?,
    };
    Ok(answer(body, applied.replayed))
}

/// How a `receive-batch` body is written: JSON, or CSV rows (`Content-Type:
/// text/csv`) with the key in the `Idempotency-Key` header and the
/// reference in the `ref` query parameter.
enum BatchForm {
    Json,
    Csv { reference: Option<String> },
}

fn batch_form(headers: &HeaderMap, uri: &Uri) -> Result<BatchForm, ApiError> {
    let csv = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("text/csv"));
    let mut pairs = uri.query().unwrap_or_default().split('&').filter(|p| !p.is_empty());
    if !csv {
        // A JSON body carries everything; a query parameter would be
        // ignored, so it is refused rather than lost.
        return match pairs.next() {
            None => Ok(BatchForm::Json),
            Some(pair) => {
                let name = pair.split_once('=').map_or(pair, |(name, _)| name);
                Err(ApiError::invalid(format!(
                    "unknown query parameter {name:?}: a JSON receive-batch takes none (ref goes in the body)"
                )))
            }
        };
    }
    let mut reference = None;
    for pair in pairs {
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
pub async fn receive_batch(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    HeaderKey(header_key): HeaderKey,
    headers: HeaderMap,
    uri: Uri,
    BodyBytes(body): BatchBody,
) -> Result<Response, ApiError> {
    let form = batch_form(&headers, &uri)?;
    ready(&app)?;
    let (items, lines, body_key, reference) = match form {
        BatchForm::Json => {
            let b: api::ReceiveBatchBody = api::parse(&body)?;
            (b.items, None, b.idem_key, b.reference)
        }
        BatchForm::Csv { reference } => {
            let (items, lines) = api::parse_batch_csv(&body)?;
            (items, Some(lines), None, reference)
        }
    };
    let idem_key = ctx.scope("idemKey", api::idem_key(body_key, header_key.as_deref())?)?;
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
    let shards = app.runtime.router.shards() as usize;
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
        let shard = app.runtime.router.shard_for_sku(&item.sku_id);
        parts[shard as usize].push(inventory_core::ReceiveItem { sku_id: item.sku_id, warehouse_id, qty: item.qty });
    }
    let mut pending = Vec::new();
    for (shard, items) in parts.into_iter().enumerate().filter(|(_, items)| !items.is_empty()) {
        let command = Command::ReceiveBatch(inventory_core::ReceiveBatch {
            items,
            idem_key: format!("{idem_key}#{shard}"),
            reference: reference.clone(),
        });
        pending.push(write(&app, shard as u16, command, ctx.meta()));
    }
    let (mut rows, mut units, mut all_replayed) = (0u64, 0u64, true);
    for part in pending {
        let applied = part.await?;
        match applied.outcome {
            Outcome::ReceivedBatch { rows: r, units: u } => {
                rows += r as u64;
                units += u;
                all_replayed &= applied.replayed;
            }
            Outcome::Rejected(r) => return Err(api::rejection_error(r)),
            other => unreachable!("receive-batch answered {other:?}"),
        }
    }
    let body = serde_json::to_vec(&api::BatchJson { rows, units }).expect("json");
    Ok(answer(body, all_replayed))
}

pub async fn reserve(
    State(app): State<Arc<App>>,
    Write { ctx, body: b, idem_key }: Write<api::ReserveBody>,
) -> Result<Response, ApiError> {
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
    if let Some(buyer) = &b.buyer_id {
        api::check_text("buyerId", buyer, ID_BYTES_MAX)?;
    }
    if let Some(channel) = &b.channel {
        api::check_text("channel", channel, ID_BYTES_MAX)?;
    }
    let order_id = ctx.scope("orderId", b.order_id)?;
    let taken = risk_check(&app, &ctx, b.buyer_id.as_deref(), &idem_key, b.qty)?;
    let shard = app.runtime.router.shard_for_sku(&b.sku_id);
    let reserve = Reserve {
        order_id,
        sku_id: b.sku_id,
        warehouse_id,
        qty: b.qty,
        idem_key,
        ttl_ms,
        ttl_explicit: b.ttl_seconds.is_some(),
    };
    // A buyer is counted per tenant, like the order ids.
    let command = if b.buyer_id.is_some() || b.channel.is_some() {
        let buyer_id = match b.buyer_id {
            Some(buyer) => ctx.scope("buyerId", buyer)?,
            None => String::new(),
        };
        Command::ReserveAs(Box::new(ReserveAs { reserve, buyer_id, channel: b.channel.unwrap_or_default() }))
    } else {
        Command::Reserve(reserve)
    };
    let applied = write(&app, shard, command, ctx.meta()).await;
    if let (Some(taken), Some(risk)) = (taken, &app.security.risk) {
        let held = matches!(&applied, Ok(a) if !a.replayed && matches!(a.outcome, Outcome::Reserved { .. }));
        if !held {
            risk.give_back(taken);
        }
    }
    hold_answer(applied?)
}

/// Takes a reserve's units from its caller's allowance for the minute
/// (`--risk-max-units-per-minute`); a retry of a known key is not counted
/// again, and a token with `risk_cleared` passes.
fn risk_check(app: &App, ctx: &Ctx, buyer: Option<&str>, idem_key: &str, qty: u64) -> Result<Option<Taken>, ApiError> {
    let Some(risk) = &app.security.risk else { return Ok(None) };
    if ctx.identity.as_ref().is_some_and(|i| i.risk_cleared) {
        return Ok(None);
    }
    let now = app.runtime.clock.now_ms();
    if app.runtime.idem.is_claimed(key_hash(idem_key), now) {
        return Ok(None);
    }
    let caller = buyer.unwrap_or(&ctx.operator);
    match risk.take(RiskCheck::key(ctx.tenant(), caller), qty, now) {
        Ok(taken) => Ok(Some(taken)),
        Err(held) => {
            app.runtime.metrics.risk_flags.inc();
            tracing::warn!(
                tenant = ctx.tenant().unwrap_or(""),
                caller,
                held,
                qty,
                limit = risk.max_units(),
                "risk check: reserve refused"
            );
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "RISK_CHECK_REQUIRED",
                format!(
                    "this caller reserved {held} units in the last minute; {qty} more would pass {} without a risk clearance",
                    risk.max_units()
                ),
            );
            e.detail = Some(serde_json::json!({ "limit": risk.max_units(), "held": held }));
            Err(e)
        }
    }
}

/// With authentication on, a hold that is not the caller's tenant's is not
/// found: confirm and release look it up first.
async fn check_owner(app: &App, ctx: &Ctx, id: inventory_core::ReservationId) -> Result<(), ApiError> {
    if ctx.identity.is_none() {
        return Ok(());
    }
    let view = super::reads::hold(app, id).await?;
    match view {
        Some(view) if ctx.owns(&view.order_id).is_some() => Ok(()),
        _ => Err(ApiError::new(StatusCode::NOT_FOUND, "RESERVATION_NOT_FOUND", format!("no reservation {id}"))),
    }
}

pub async fn confirm(
    State(app): State<Arc<App>>,
    Write { ctx, body: b, idem_key }: Write<api::ConfirmBody>,
) -> Result<Response, ApiError> {
    let id = api::parse_reservation_id("reservationId", &b.reservation_id)?;
    api::check_text("paymentId", &b.payment_id, ID_BYTES_MAX)?;
    let shard = own_shard(&app, id)?;
    check_owner(&app, &ctx, id).await?;
    let payment_id = app.security.payment_id(b.payment_id);
    let command = Command::Confirm(Confirm { reservation_id: id, payment_id, idem_key });
    hold_answer(write(&app, shard, command, ctx.meta()).await?)
}

pub async fn release(
    State(app): State<Arc<App>>,
    Write { ctx, body: b, idem_key }: Write<api::ReleaseBody>,
) -> Result<Response, ApiError> {
    let id = api::parse_reservation_id("reservationId", &b.reservation_id)?;
    api::check_text("reason", &b.reason, TEXT_BYTES_MAX)?;
    let shard = own_shard(&app, id)?;
    check_owner(&app, &ctx, id).await?;
    let command = Command::Release(Release { reservation_id: id, reason: b.reason, idem_key });
    hold_answer(write(&app, shard, command, ctx.meta()).await?)
}

pub(super) fn warehouse(id: Option<String>) -> Result<String, ApiError> {
    let id = id.unwrap_or_else(|| DEFAULT_WAREHOUSE.to_string());
    api::check_text("warehouseId", &id, ID_BYTES_MAX)?;
    Ok(id)
}

fn own_shard(app: &App, id: inventory_core::ReservationId) -> Result<u16, ApiError> {
    app.runtime
        .router
        .shard_for_reservation(id)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "RESERVATION_NOT_FOUND", format!("no reservation {id}")))
}

/// Whether shard `shard`'s cold tier holds an unexpired record of `key`.
async fn cold_key(app: &App, shard: u16, key: u128, now: u64) -> Result<bool, ApiError> {
    let Some(store) = app.runtime.cold.get(shard as usize).cloned() else { return Ok(false) };
    let found = tokio::task::spawn_blocking(move || store.idem(key, now)).await.expect("cold lookup panicked");
    found.map(|record| record.is_some()).map_err(cold_unavailable)
}

/// Sends a command to its shard and waits for the durable outcome.
pub(super) async fn write(app: &App, shard: u16, command: Command, meta: Meta) -> Result<Applied, ApiError> {
    write_detailed(app, shard, command, meta).await.map(|(applied, _)| applied)
}

/// [`write`], with why an order's lines were refused, line by line.
pub(super) async fn write_detailed(
    app: &App,
    shard: u16,
    command: Command,
    meta: Meta,
) -> Result<(Applied, Vec<inventory_core::LineRefusal>), ApiError> {
    if let Some(guard) = &app.replication_guard {
        guard.check(shard)?;
    }
    let key = key_hash(command.idem_key().expect("writes carry a key"));
    let runtime = &app.runtime;
    let now = runtime.clock.now_ms();
    let reused = || api::rejection_error(inventory_core::Rejection::IdempotencyKeyReused);
    let fresh = match runtime.idem.claim(key, shard, now) {
        Claim::Conflict => return Err(reused()),
        Claim::Same => false,
        Claim::Fresh => true,
        Claim::Maybe(others) => {
            // Other shards may have used the key long enough ago that it
            // is in their cold tier only: ask them.
            for other in others {
                if cold_key(app, other, key, now).await.inspect_err(|_| runtime.idem.unclaim(key, shard))? {
                    runtime.idem.unclaim(key, shard);
                    return Err(reused());
                }
            }
            true
        }
    };
    let (reply, answer) = oneshot::channel();
    if let Err(e) = runtime.router.send(shard, Request::Write { command, meta, reply }) {
        if fresh {
            runtime.idem.unclaim(key, shard);
        }
        return Err(app.send_error(e));
    }
    match answer.await {
        Ok(WriteReply::Applied(applied)) => {
            if applied.replayed {
                runtime.metrics.idempotent_replays.inc();
            }
            Ok((applied, Vec::new()))
        }
        Ok(WriteReply::Refused(applied, lines)) => Ok((applied, lines)),
        Ok(WriteReply::JournalUnavailable) => Err(ApiError::unavailable(
            "JOURNAL_UNAVAILABLE",
            "the journal could not make this change durable; nothing was acknowledged, retry with the same idempotency key",
        )),
        Ok(WriteReply::Overloaded) => Err(app.send_error(SendError::Overloaded)),
        Ok(WriteReply::ColdUnavailable) => Err(ApiError::unavailable(
            "COLD_TIER_UNAVAILABLE",
            "this request needs records from the cold tier, which could not be read; nothing changed, retry shortly",
        )),
        Err(_) => Err(stopping()),
    }
}

/// The answer to a reserve, confirm or release.
fn hold_answer(applied: Applied) -> Result<Response, ApiError> {
    Ok(answer(api::outcome_json(applied.outcome)?, applied.replayed))
}

/// A write's 200 answer; a replayed one carries `idempotent-replayed: true`
/// and the identical body.
pub(super) fn answer(body: Vec<u8>, was_replayed: bool) -> Response {
    let response = json(StatusCode::OK, body);
    if was_replayed {
        replayed(response)
    } else {
        response
    }
}
