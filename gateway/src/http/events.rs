//! The event relay's status endpoint and gauges.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use inventory_events::RelayStatus;
use inventory_runtime::metrics::{Metrics, ShardLabels};
use serde_json::json;

use super::{json, App};

/// How often the relay's lag is measured.
const LAG_EVERY: Duration = Duration::from_millis(250);

/// `GET /api/admin/events`: per shard, the relay's durable position, the
/// journal head, the lag in entries and seconds; and the last error.
pub async fn status(State(app): State<Arc<App>>) -> Response {
    let Some(relay) = &app.relay else {
        return json(StatusCode::OK, serde_json::to_vec(&json!({ "enabled": false })).expect("json"));
    };
    let shards: Vec<_> = relay
        .shards
        .iter()
        .enumerate()
        .map(|(i, s)| {
            json!({
                "shard": i,
                "position": s.cursor.position(),
                "durableSeq": s.followers.durable(),
                "lagEntries": s.lag_entries(),
                "lagSeconds": s.cursor.waiting(&s.followers).as_secs_f64(),
                "published": s.published.load(Ordering::Relaxed),
                "skipped": s.skipped.load(Ordering::Relaxed),
            })
        })
        .collect();
    let last_error = relay.last_error().map(|(message, at)| json!({ "message": message, "atMs": at }));
    let body = json!({
        "enabled": true,
        "url": relay.config.url,
        "stream": relay.config.stream,
        "connected": relay.connected.load(Ordering::Acquire),
        "lagEntries": relay.shards.iter().map(|s| s.lag_entries()).sum::<u64>(),
        "lastError": last_error,
        "shards": shards,
    });
    json(StatusCode::OK, serde_json::to_vec(&body).expect("json"))
}

/// Keeps the relay's gauges current.
pub async fn event_gauges(relay: Arc<RelayStatus>, metrics: Arc<Metrics>) {
    let mut published = 0;
    loop {
        let mut total = 0;
        for (i, s) in relay.shards.iter().enumerate() {
            let labels = ShardLabels { shard: i as u16 };
            metrics.event_stream_lag_entries.get_or_create(&labels).set(s.lag_entries());
            metrics.event_stream_lag_seconds.get_or_create(&labels).set(s.cursor.waiting(&s.followers).as_secs_f64());
            total += s.published.load(Ordering::Relaxed);
        }
        metrics.events_published.inc_by(total - published);
        published = total;
        tokio::time::sleep(LAG_EVERY).await;
    }
}
