//! Operator controls: freeze and unfreeze, stock adjustments under
//! two-person approval, transfers between warehouses. Each write is one
//! command to the shard of its SKU (an adjustment's or transfer's id names
//! that shard), journaled and acknowledged like a reserve; its answer is the
//! record as it stands once the write is durable. Every one of these
//! endpoints needs the acting operator (`X-Operator`).

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use inventory_core::{
    AdjustmentId, AdjustmentStatus, Command, DecideAdjustment, DispatchTransfer, FinishTransfer, Freeze, Outcome,
    ProposeAdjustment, Query, QueryResult, SetPolicy, TransferId, TransferStatus, SECOND_MS,
};
use percent_encoding::percent_decode_str;

use super::extract::{path_id, BodyBytes, Ctx, HeaderKey, SmallBody, Write};
use super::reads::read;
use super::writes::{answer, warehouse, write};
use super::{json, ready, App};
use crate::api::{self, ApiError, ID_BYTES_MAX, TEXT_BYTES_MAX};

/// The operator a request names: required here.
fn operator(ctx: &Ctx) -> Result<String, ApiError> {
    if !ctx.named {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "OPERATOR_REQUIRED",
            "operator actions need the X-Operator header naming who acts",
        ));
    }
    Ok(ctx.operator.clone())
}

fn rejected(outcome: Outcome) -> ApiError {
    match outcome {
        Outcome::Rejected(rejection) => api::rejection_error(rejection),
        other => unreachable!("an operator command answered {other:?}"),
    }
}

fn adjustment_not_found(id: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "ADJUSTMENT_NOT_FOUND", format!("no adjustment {id}"))
}

fn transfer_not_found(id: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "TRANSFER_NOT_FOUND", format!("no transfer {id}"))
}

/// An adjustment id from the path, with its shard; one that names no
/// adjustment this service could have made is not found.
fn adjustment_id(app: &App, path: Result<Path<String>, PathRejection>) -> Result<AdjustmentId, ApiError> {
    let raw = path_id("adjustmentId", path)?;
    raw.parse::<AdjustmentId>()
        .ok()
        .filter(|id| id.shard() < app.runtime.router.shards())
        .ok_or_else(|| adjustment_not_found(&raw))
}

fn transfer_id(app: &App, path: Result<Path<String>, PathRejection>) -> Result<TransferId, ApiError> {
    let raw = path_id("transferId", path)?;
    raw.parse::<TransferId>()
        .ok()
        .filter(|id| id.shard() < app.runtime.router.shards())
        .ok_or_else(|| transfer_not_found(&raw))
}

fn reason(field: &str, reason: Option<&str>, required: bool) -> Result<String, ApiError> {
    match reason {
        Some(r) => {
            api::check_text(field, r, TEXT_BYTES_MAX)?;
            Ok(r.to_string())
        }
        None if required => Err(ApiError::invalid(format!("{field} is required"))),
        None => Ok(String::new()),
    }
}

// ----- freeze -----------------------------------------------------------------

pub async fn freeze(
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
    write: Write<api::FreezeBody>,
) -> Result<Response, ApiError> {
    set_frozen(app, path, write, true).await
}

pub async fn unfreeze(
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
    write: Write<api::FreezeBody>,
) -> Result<Response, ApiError> {
    set_frozen(app, path, write, false).await
}

/// Freezes or unfreezes one warehouse row of an SKU, or all of them;
/// answers with the SKU's stock.
async fn set_frozen(
    app: Arc<App>,
    path: Result<Path<String>, PathRejection>,
    Write { ctx, body: b, idem_key }: Write<api::FreezeBody>,
    frozen: bool,
) -> Result<Response, ApiError> {
    operator(&ctx)?;
    let sku_id = path_id("skuId", path)?;
    if let Some(w) = &b.warehouse_id {
        api::check_text("warehouseId", w, ID_BYTES_MAX)?;
    }
    let reason = reason("reason", Some(&b.reason), true)?;
    let shard = app.runtime.router.shard_for_sku(&sku_id);
    let command =
        Command::Freeze(Freeze { sku_id: sku_id.clone(), warehouse_id: b.warehouse_id, frozen, reason, idem_key });
    let applied = write(&app, shard, command, ctx.meta()).await?;
    if !matches!(applied.outcome, Outcome::Frozen { .. }) {
        return Err(rejected(applied.outcome));
    }
    match read(&app, shard, Query::Stock { sku_id }).await? {
        QueryResult::Stock(Some(stock)) => Ok(answer(api::stock_json(&stock), applied.replayed)),
        other => unreachable!("a frozen SKU has stock: {other:?}"),
    }
}

// ----- adjustments --------------------------------------------------------------

/// The adjustment as it stands, as a write's answer.
async fn adjustment_answer(app: &App, id: AdjustmentId, replayed: bool) -> Result<Response, ApiError> {
    match read(app, id.shard(), Query::Adjustment { id }).await? {
        QueryResult::Adjustment(Some(view)) => {
            let body = serde_json::to_vec(&api::AdjustmentJson::from(view)).expect("json");
            Ok(answer(body, replayed))
        }
        _ => Err(adjustment_not_found(&id.to_string())),
    }
}

pub async fn propose(
    State(app): State<Arc<App>>,
    Write { ctx, body: b, idem_key }: Write<api::ProposeBody>,
) -> Result<Response, ApiError> {
    let operator = operator(&ctx)?;
    api::check_text("skuId", &b.sku_id, ID_BYTES_MAX)?;
    let warehouse_id = warehouse(b.warehouse_id)?;
    if b.delta == 0 || b.delta.unsigned_abs() > app.max_qty {
        return Err(ApiError::invalid(format!(
            "delta must be a non-zero number of units between -{max} and {max}, got {}",
            b.delta,
            max = app.max_qty
        )));
    }
    let reason = reason("reason", Some(&b.reason), true)?;
    let shard = app.runtime.router.shard_for_sku(&b.sku_id);
    let command = Command::ProposeAdjustment(Box::new(ProposeAdjustment {
        sku_id: b.sku_id,
        warehouse_id,
        delta: b.delta,
        reason,
        operator,
        ttl_ms: app.adjustment_ttl_ms,
        idem_key,
    }));
    let applied = write(&app, shard, command, ctx.meta()).await?;
    match applied.outcome {
        Outcome::AdjustmentProposed { id } => adjustment_answer(&app, id, applied.replayed).await,
        other => Err(rejected(other)),
    }
}

pub async fn approve(
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
    write: Write<api::DecisionBody>,
) -> Result<Response, ApiError> {
    decide(app, path, write, true).await
}

pub async fn reject(
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
    write: Write<api::DecisionBody>,
) -> Result<Response, ApiError> {
    decide(app, path, write, false).await
}

async fn decide(
    app: Arc<App>,
    path: Result<Path<String>, PathRejection>,
    Write { ctx, body: b, idem_key }: Write<api::DecisionBody>,
    approve: bool,
) -> Result<Response, ApiError> {
    let operator = operator(&ctx)?;
    let id = adjustment_id(&app, path)?;
    let reason = reason("reason", b.reason.as_deref(), !approve)?;
    let command =
        Command::DecideAdjustment(DecideAdjustment { adjustment_id: id, approve, operator, reason, idem_key });
    let applied = write(&app, id.shard(), command, ctx.meta()).await?;
    match applied.outcome {
        Outcome::AdjustmentDecided { id, .. } => adjustment_answer(&app, id, applied.replayed).await,
        other => Err(rejected(other)),
    }
}

pub async fn adjustment(
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = adjustment_id(&app, path)?;
    ready(&app)?;
    match read(&app, id.shard(), Query::Adjustment { id }).await? {
        QueryResult::Adjustment(Some(view)) => {
            Ok(json(StatusCode::OK, serde_json::to_vec(&api::AdjustmentJson::from(view)).expect("json")))
        }
        _ => Err(adjustment_not_found(&id.to_string())),
    }
}

/// `?status=...&skuId=...` of a list, each at most once.
struct ListQuery {
    status: Option<String>,
    sku_id: Option<String>,
}

fn list_query(uri: &Uri) -> Result<ListQuery, ApiError> {
    let mut query = ListQuery { status: None, sku_id: None };
    for pair in uri.query().unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode_str(&value.replace('+', " "))
            .decode_utf8()
            .map_err(|_| ApiError::invalid(format!("{name} in the query is not UTF-8")))?
            .into_owned();
        let slot = match name {
            "status" => &mut query.status,
            "skuId" => {
                api::check_text("skuId", &value, ID_BYTES_MAX)?;
                &mut query.sku_id
            }
            other => {
                return Err(ApiError::invalid(format!("unknown query parameter {other:?}: use status and skuId")));
            }
        };
        if slot.replace(value).is_some() {
            return Err(ApiError::invalid(format!("{name} is given twice")));
        }
    }
    Ok(query)
}

/// The shards a list asks: the SKU's, or all of them.
fn shards_of(app: &App, sku_id: Option<&str>) -> Vec<u16> {
    let router = &app.runtime.router;
    match sku_id {
        Some(sku) => vec![router.shard_for_sku(sku)],
        None => (0..router.shards()).collect(),
    }
}

pub async fn adjustments(State(app): State<Arc<App>>, uri: Uri) -> Result<Response, ApiError> {
    let query = list_query(&uri)?;
    let status = match query.status.as_deref() {
        None => None,
        Some(s) => Some(AdjustmentStatus::ALL.into_iter().find(|x| x.as_str() == s).ok_or_else(|| {
            ApiError::invalid(format!("status must be one of PENDING, APPLIED, REJECTED, EXPIRED; got {s:?}"))
        })?),
    };
    ready(&app)?;
    let mut views = Vec::new();
    for shard in shards_of(&app, query.sku_id.as_deref()) {
        let ask = Query::Adjustments { status, sku_id: query.sku_id.clone() };
        if let QueryResult::Adjustments(found) = read(&app, shard, ask).await? {
            views.extend(found);
        }
    }
    views.sort_by_key(|v| (v.adjustment.proposed_at, v.id));
    let list = api::AdjustmentListJson { adjustments: views.into_iter().map(Into::into).collect() };
    Ok(json(StatusCode::OK, serde_json::to_vec(&list).expect("json")))
}

// ----- transfers ------------------------------------------------------------------

async fn transfer_answer(app: &App, id: TransferId, replayed: bool) -> Result<Response, ApiError> {
    let now = app.runtime.clock.now_ms();
    match read(app, id.shard(), Query::Transfer { id }).await? {
        QueryResult::Transfer(Some(view)) => {
            Ok(answer(serde_json::to_vec(&api::TransferJson::new(view, now)).expect("json"), replayed))
        }
        _ => Err(transfer_not_found(&id.to_string())),
    }
}

pub async fn dispatch(
    State(app): State<Arc<App>>,
    Write { ctx, body: b, idem_key }: Write<api::TransferBody>,
) -> Result<Response, ApiError> {
    let operator = operator(&ctx)?;
    api::check_text("skuId", &b.sku_id, ID_BYTES_MAX)?;
    api::check_text("fromWarehouseId", &b.from_warehouse_id, ID_BYTES_MAX)?;
    api::check_text("toWarehouseId", &b.to_warehouse_id, ID_BYTES_MAX)?;
    if b.from_warehouse_id == b.to_warehouse_id {
        return Err(api::rejection_error(inventory_core::Rejection::SameWarehouse));
    }
    api::check_qty(b.qty, app.max_qty)?;
    let reason = reason("reason", Some(&b.reason), true)?;
    let expected_in_ms = match b.expected_arrival_seconds {
        Some(s) if s == 0 || s > api::TRANSFER_SECONDS_MAX => {
            return Err(ApiError::invalid(format!(
                "expectedArrivalSeconds must be between 1 and {}, got {s}",
                api::TRANSFER_SECONDS_MAX
            )));
        }
        s => s.map(|s| s * SECOND_MS),
    };
    let shard = app.runtime.router.shard_for_sku(&b.sku_id);
    let command = Command::DispatchTransfer(Box::new(DispatchTransfer {
        sku_id: b.sku_id,
        from_warehouse_id: b.from_warehouse_id,
        to_warehouse_id: b.to_warehouse_id,
        qty: b.qty,
        reason,
        operator,
        expected_in_ms,
        idem_key,
    }));
    let applied = write(&app, shard, command, ctx.meta()).await?;
    match applied.outcome {
        Outcome::TransferDispatched { id } => transfer_answer(&app, id, applied.replayed).await,
        other => Err(rejected(other)),
    }
}

pub async fn arrive(
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
    write: Write<api::DecisionBody>,
) -> Result<Response, ApiError> {
    finish(app, path, write, true).await
}

pub async fn cancel(
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
    write: Write<api::DecisionBody>,
) -> Result<Response, ApiError> {
    finish(app, path, write, false).await
}

async fn finish(
    app: Arc<App>,
    path: Result<Path<String>, PathRejection>,
    Write { ctx, body: b, idem_key }: Write<api::DecisionBody>,
    arrive: bool,
) -> Result<Response, ApiError> {
    let operator = operator(&ctx)?;
    let id = transfer_id(&app, path)?;
    let reason = reason("reason", b.reason.as_deref(), !arrive)?;
    let command = Command::FinishTransfer(FinishTransfer { transfer_id: id, arrive, operator, reason, idem_key });
    let applied = write(&app, id.shard(), command, ctx.meta()).await?;
    match applied.outcome {
        Outcome::TransferFinished { id, .. } => transfer_answer(&app, id, applied.replayed).await,
        other => Err(rejected(other)),
    }
}

pub async fn transfer(
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = transfer_id(&app, path)?;
    ready(&app)?;
    transfer_answer(&app, id, false).await
}

/// `status` may also be `OVERDUE`: in transit past the expected arrival.
pub async fn transfers(State(app): State<Arc<App>>, uri: Uri) -> Result<Response, ApiError> {
    let query = list_query(&uri)?;
    let overdue = query.status.as_deref() == Some("OVERDUE");
    let status = match query.status.as_deref() {
        None => None,
        Some("OVERDUE") => Some(TransferStatus::InTransit),
        Some(s) => Some(TransferStatus::ALL.into_iter().find(|x| x.as_str() == s).ok_or_else(|| {
            ApiError::invalid(format!("status must be one of IN_TRANSIT, ARRIVED, CANCELLED, OVERDUE; got {s:?}"))
        })?),
    };
    ready(&app)?;
    let now = app.runtime.clock.now_ms();
    let mut views = Vec::new();
    for shard in shards_of(&app, query.sku_id.as_deref()) {
        let ask = Query::Transfers { status, sku_id: query.sku_id.clone() };
        if let QueryResult::Transfers(found) = read(&app, shard, ask).await? {
            views.extend(found.into_iter().filter(|v| !overdue || v.transfer.overdue(now)));
        }
    }
    views.sort_by_key(|v| (v.transfer.created_at, v.id));
    let list = api::TransferListJson { transfers: views.into_iter().map(|v| api::TransferJson::new(v, now)).collect() };
    Ok(json(StatusCode::OK, serde_json::to_vec(&list).expect("json")))
}

// ----- sale policies ------------------------------------------------------------

/// Sets an SKU's sale policy (replacing the one it has: what it counted is
/// kept); answers with the SKU's stock, policy included.
pub async fn set_policy(
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
    Write { ctx, body: b, idem_key }: Write<api::PolicyBody>,
) -> Result<Response, ApiError> {
    let operator = operator(&ctx)?;
    let sku_id = path_id("skuId", path)?;
    let policy = b.policy(app.max_qty)?;
    policy_write(&app, ctx, sku_id, Some(policy), operator, idem_key).await
}

/// Removes an SKU's sale policy and everything it counted. The body may be
/// empty, with the key in the `Idempotency-Key` header.
pub async fn remove_policy(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    HeaderKey(header_key): HeaderKey,
    path: Result<Path<String>, PathRejection>,
    BodyBytes(bytes): SmallBody,
) -> Result<Response, ApiError> {
    let operator = operator(&ctx)?;
    let sku_id = path_id("skuId", path)?;
    ready(&app)?;
    let body: api::PolicyRemoveBody =
        if bytes.iter().all(u8::is_ascii_whitespace) { Default::default() } else { api::parse(&bytes)? };
    let idem_key = ctx.scope("idemKey", api::idem_key(body.idem_key, header_key.as_deref())?)?;
    policy_write(&app, ctx, sku_id, None, operator, idem_key).await
}

async fn policy_write(
    app: &App,
    ctx: Ctx,
    sku_id: String,
    policy: Option<inventory_core::SalePolicy>,
    operator: String,
    idem_key: String,
) -> Result<Response, ApiError> {
    let shard = app.runtime.router.shard_for_sku(&sku_id);
    let command = Command::SetPolicy(Box::new(SetPolicy { sku_id: sku_id.clone(), policy, operator, idem_key }));
    let applied = write(app, shard, command, ctx.meta()).await?;
    if !matches!(applied.outcome, Outcome::PolicySet { .. }) {
        return Err(rejected(applied.outcome));
    }
    match read(app, shard, Query::Stock { sku_id }).await? {
        QueryResult::Stock(Some(stock)) => Ok(answer(api::stock_json(&stock), applied.replayed)),
        other => unreachable!("an SKU with a policy has stock: {other:?}"),
    }
}
