//! The event relay's status endpoint and gauges.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use inventory_events::RelayStatus;
use inventory_runtime::metrics::{Metrics, ShardLabels};
use serde::Serialize;
use utoipa::ToSchema;

use super::{json, App};

/// How often the relay's lag is measured.
const LAG_EVERY: Duration = Duration::from_millis(250);

/// `GET /api/admin/events`: without `--events-nats-url`, `{"enabled":
/// false}`; else the relay's state.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[schema(as = EventsStatus)]
pub enum EventsJson {
    Off(RelayOffJson),
    On(RelayJson),
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = RelayOff)]
pub struct RelayOffJson {
    /// false.
    enabled: bool,
}

/// The relay: per shard, its durable position, the journal head, the lag
/// in entries and seconds; and the last error.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = Relay)]
pub struct RelayJson {
    /// true.
    enabled: bool,
    url: String,
    stream: String,
    connected: bool,
    /// Over all shards.
    lag_entries: u64,
    #[schema(required = true)]
    last_error: Option<RelayErrorJson>,
    shards: Vec<RelayShardJson>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = RelayError)]
pub struct RelayErrorJson {
    message: String,
    /// When, in Unix milliseconds.
    at_ms: u64,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = RelayShard)]
pub struct RelayShardJson {
    shard: u16,
    /// Every journal entry up to here is published and the position durable.
    position: u64,
    /// The shard's last acknowledged journal entry.
    durable_seq: u64,
    lag_entries: u64,
    /// How long the oldest entry not yet published has been acknowledged.
    lag_seconds: f64,
    /// Events the broker acknowledged.
    published: u64,
    /// Entries a snapshot covered before the relay reached them (never
    /// published).
    skipped: u64,
}

pub async fn status(State(app): State<Arc<App>>) -> Response {
    let body = match &app.relay {
        None => EventsJson::Off(RelayOffJson { enabled: false }),
        Some(relay) => EventsJson::On(RelayJson {
            enabled: true,
            url: relay.config.url.clone(),
            stream: relay.config.stream.clone(),
            connected: relay.connected.load(Ordering::Acquire),
            lag_entries: relay.shards.iter().map(|s| s.lag_entries()).sum::<u64>(),
            last_error: relay.last_error().map(|(message, at_ms)| RelayErrorJson { message, at_ms }),
            shards: relay
                .shards
                .iter()
                .enumerate()
                .map(|(i, s)| RelayShardJson {
                    shard: i as u16,
                    position: s.cursor.position(),
                    durable_seq: s.followers.durable(),
                    lag_entries: s.lag_entries(),
                    lag_seconds: s.cursor.waiting(&s.followers).as_secs_f64(),
                    published: s.published.load(Ordering::Relaxed),
                    skipped: s.skipped.load(Ordering::Relaxed),
                })
                .collect(),
        }),
    };
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
