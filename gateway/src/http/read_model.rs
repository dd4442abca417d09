//! The order status from the PostgreSQL read model: the primary's answer
//! (`reads::order_status`) as the asynchronous writer has it, for when the
//! shards cannot answer. Served off the shard loops entirely, through the
//! read model's own connection pool, and says how far behind it may be.

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;

use super::extract::{path_id, Ctx};
use super::{json, App};
use crate::api::{self, ApiError};

/// How long a read of the read model may wait for a connection, for
/// connecting, and for each statement before it is 503.
pub const READ_MODEL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// The primary's order JSON plus what the read model lacks.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = ReadModelOrderHolds)]
pub struct ReadModelOrderJson {
    order_id: String,
    reservations: Vec<api::ReservationJson>,
    /// Whether some change acknowledged before the request is not in the
    /// answer (or, while the service replays its journal, may not be).
    stale: bool,
    /// How long the oldest change PostgreSQL has not applied has been
    /// acknowledged (0 when it has them all).
    lag_ms: u64,
    /// Journal entries acknowledged before the request and not in the answer.
    lag_records: u64,
}

fn unavailable(message: impl Into<String>) -> ApiError {
    ApiError::unavailable("READ_MODEL_UNAVAILABLE", message)
}

/// Every hold of an order as PostgreSQL has it, scoped to the caller's
/// tenant like the primary.
pub async fn order_status(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let asked = path_id("orderId", path)?;
    let order_id = ctx.scope("orderId", asked.clone())?;
    let Some(model) = &app.read_model else {
        return Err(unavailable("no PostgreSQL read model is configured (--postgres-url)"));
    };
    // The heads first: everything acknowledged before the query, which the
    // checkpoints read with the holds are compared against.
    let ready = app.runtime.router.is_ready();
    let heads: Vec<u64> = app.writers.iter().map(|p| p.durable()).collect();
    let found = model.order(&order_id).await.map_err(|e| unavailable(format!("PostgreSQL could not be read: {e}")))?;
    let mut lag_records = 0;
    let mut lag_ms = 0;
    for (shard, (&head, progress)) in heads.iter().zip(&app.writers).enumerate() {
        let applied = found.checkpoints.get(&(shard as u16)).copied().unwrap_or(0);
        if head > applied {
            lag_records += head - applied;
            lag_ms = lag_ms.max(progress.cursor.waiting(&progress.followers).as_millis() as u64);
        }
    }
    let reservations = found
        .holds
        .into_iter()
        .map(|mut hold| {
            hold.order_id.clone_from(&asked);
            hold.into()
        })
        .collect();
    let body =
        ReadModelOrderJson { order_id: asked, reservations, stale: !ready || lag_records > 0, lag_ms, lag_records };
    Ok(json(StatusCode::OK, serde_json::to_vec(&body).expect("json")))
}
