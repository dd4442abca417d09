//! The service's metrics, in Prometheus/OpenMetrics text at `GET /metrics`.
//!
//! One [`Metrics`] per server (no global registry), so several servers in one
//! process, as in the tests, count separately. Recording is a few atomic
//! operations; the shard loops record once per batch, never per command.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Latency buckets in seconds; 0.12 is the reserve P95 alert threshold.
pub const LATENCY_BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.12, 0.25, 0.5, 1.0, 2.5, 5.0];
const FLUSH_BUCKETS: [f64; 12] = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5];
const BATCH_BUCKETS: [f64; 12] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0];
const COLD_LOOKUP_BUCKETS: [f64; 12] =
    [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5];
const DELAY_BUCKETS: [f64; 10] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 15.0, 60.0, 300.0];

/// What kind of answer a request got.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Outcome {
    /// 2xx.
    ok,
    /// A business rejection (404, 409, 422).
    rejected,
    /// Bad input (400, 405, 413).
    invalid,
    /// The service could not serve it (5xx).
    error,
}

impl Outcome {
    pub fn of(status: u16) -> Outcome {
        match status {
            200..=299 => Outcome::ok,
            500..=599 => Outcome::error,
            400 | 405 | 411 | 413 | 415 => Outcome::invalid,
            _ => Outcome::rejected,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub endpoint: &'static str,
    pub code: &'static str,
    pub outcome: Outcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LatencyLabels {
    pub endpoint: &'static str,
    pub outcome: Outcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    pub event: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShardLabels {
    pub shard: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FollowerLabels {
    pub follower: &'static str,
    pub shard: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CloseLabels {
    /// Why the service closed (or refused) the connection: `header_timeout`,
    /// `body_timeout`, `idle_timeout`, `tls_handshake` or `refused`.
    pub reason: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: HistogramFamily<LatencyLabels>,
    pub reservations: Family<EventLabels, Counter>,
    pub release_delay: Histogram,
    pub timeout_backlog: Family<ShardLabels, Gauge>,
    pub oversell_rows: Family<ShardLabels, Gauge>,
    pub oversell_detected: Counter,
    pub queue_depth: Family<ShardLabels, Gauge>,
    pub batch_size: Histogram,
    pub flush_seconds: Histogram,
    pub journal_healthy: Family<ShardLabels, Gauge>,
    pub journal_failures: Counter,
    pub idempotent_replays: Counter,
    pub overload_refusals: Counter,
    /// Requests refused by authentication, authorization or signed writes,
    /// by reason.
    pub auth_refusals: Family<ReasonLabels, Counter>,
    /// Reserves refused by the risk check.
    pub risk_flags: Counter,
    pub cold_lookups: Counter,
    pub cold_lookup_seconds: Histogram,
    pub evicted: Family<EventLabels, Counter>,
    pub follower_lag: Family<FollowerLabels, Gauge<u64, AtomicU64>>,
    pub journal_entries: Family<ShardLabels, Gauge<u64, AtomicU64>>,
    pub persistence_lag_records: Family<ShardLabels, Gauge<u64, AtomicU64>>,
    pub persistence_lag_seconds: Family<ShardLabels, Gauge<f64, AtomicU64>>,
    pub event_stream_lag_entries: Family<ShardLabels, Gauge<u64, AtomicU64>>,
    pub event_stream_lag_seconds: Family<ShardLabels, Gauge<f64, AtomicU64>>,
    pub events_published: Counter,
    pub holds: Family<ShardLabels, Gauge>,
    pub idempotency_keys: Family<ShardLabels, Gauge>,
    pub stock_rows: Family<ShardLabels, Gauge>,
    pub cold_filter_keys: Family<ShardLabels, Gauge>,
    pub cold_filter_bytes: Family<ShardLabels, Gauge>,
    /// Memory of the hash tables of the hot tier (holds, orders, keys).
    pub hot_table_bytes: Family<ShardLabels, Gauge>,
    /// The cold store's memtables (active and sealed, not yet flushed).
    pub cold_write_buffer_bytes: Family<ShardLabels, Gauge>,
    /// The cold store's filter and index blocks held in memory.
    pub cold_pinned_bytes: Family<ShardLabels, Gauge>,
    /// Transfers in transit past their expected arrival.
    pub transfers_overdue: Family<ShardLabels, Gauge>,
    /// Adjustments waiting for a second operator.
    pub adjustments_pending: Family<ShardLabels, Gauge>,
    /// Client connections open (HTTP or HTTPS).
    pub connections_open: Gauge,
    /// Client connections the service closed or refused, by reason.
    pub connections_closed: Family<CloseLabels, Counter>,
    /// Stock queries refused by the query rate limit.
    pub rate_limited: Counter,
    /// Reads waiting in each shard's read lane.
    pub read_queue_depth: Family<ShardLabels, Gauge>,
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("inventory");
        let requests = Family::default();
        registry.register("http_requests", "HTTP requests by endpoint, response code and outcome", requests.clone());
        let latency = HistogramFamily::<LatencyLabels>::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by endpoint and outcome",
            latency.clone(),
        );
        let reservations = Family::default();
        registry.register(
            "reservations",
            "Hold transitions: reserved, confirmed, released, expired",
            reservations.clone(),
        );
        let release_delay = Histogram::new(DELAY_BUCKETS);
        registry.register(
            "release_delay_seconds",
            "For holds released by timeout: release time minus expireAt",
            release_delay.clone(),
        );
        let timeout_backlog = Family::default();
        registry.register(
            "reservation_timeout_backlog",
            "Holds past expireAt not yet released",
            timeout_backlog.clone(),
        );
        let oversell_rows = Family::default();
        registry.register(
            "oversell_rows",
            "Stock rows with sold + reserved > received in the last invariant sweep (must be 0)",
            oversell_rows.clone(),
        );
        let oversell_detected = Counter::default();
        registry.register("oversell_detected", "Oversold rows found by invariant sweeps", oversell_detected.clone());
        let queue_depth = Family::default();
        registry.register("shard_queue_depth", "Requests waiting in each shard's queue", queue_depth.clone());
        let batch_size = Histogram::new(BATCH_BUCKETS);
        registry.register("shard_batch_size", "Requests per shard batch (one journal flush each)", batch_size.clone());
        let flush_seconds = Histogram::new(FLUSH_BUCKETS);
        registry.register("journal_flush_seconds", "Journal append and flush time per batch", flush_seconds.clone());
        let journal_healthy = Family::default();
        registry.register("journal_healthy", "1 while the shard's journal accepts writes", journal_healthy.clone());
        let journal_failures = Counter::default();
        registry.register(
            "journal_failures",
            "Journal appends that failed (batches refused)",
            journal_failures.clone(),
        );
        let idempotent_replays = Counter::default();
        registry.register(
            "idempotent_replays",
            "Writes answered from the idempotency table",
            idempotent_replays.clone(),
        );
        let overload_refusals = Counter::default();
        registry.register(
            "overload_refusals",
            "Requests refused because a shard queue was full",
            overload_refusals.clone(),
        );
        let auth_refusals = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "auth_refusals",
            "Requests refused by authentication, authorization or signed writes, by reason",
            auth_refusals.clone(),
        );
        let risk_flags = Counter::default();
        registry.register("risk_flags", "Reserves refused by the risk check", risk_flags.clone());
        let cold_lookups = Counter::default();
        registry.register(
            "cold_lookups",
            "Writes that needed records from the cold tier before they could be decided",
            cold_lookups.clone(),
        );
        let cold_lookup_seconds = Histogram::new(COLD_LOOKUP_BUCKETS);
        registry.register(
            "cold_lookup_duration_seconds",
            "Time to read what one request needs from the cold tier (writes' facts, reads of finished holds)",
            cold_lookup_seconds.clone(),
        );
        let evicted = Family::default();
        registry.register(
            "evicted",
            "Finished holds (kind=hold) and idempotency records (kind=key) moved from memory to the cold tier",
            evicted.clone(),
        );
        let follower_lag = Family::default();
        registry.register(
            "follower_lag_entries",
            "Acknowledged journal entries a follower of the journal (postgres, audit, cold) has not taken yet",
            follower_lag.clone(),
        );
        let journal_entries = Family::default();
        registry.register("journal_entries", "Entries in each shard's journal", journal_entries.clone());
        let holds = Family::default();
        registry.register("holds", "Holds in memory (active, and finished ones within retention)", holds.clone());
        let idempotency_keys = Family::default();
        registry.register("idempotency_keys", "Idempotency records in memory", idempotency_keys.clone());
        let stock_rows = Family::default();
        registry.register("stock_rows", "Stock rows (SKU x warehouse)", stock_rows.clone());
        let cold_filter_keys = Family::default();
        registry.register(
            "cold_filter_keys",
            "Keys in the in-memory filters of records moved to the cold tier",
            cold_filter_keys.clone(),
        );
        let cold_filter_bytes = Family::default();
        registry.register(
            "cold_filter_bytes",
            "Memory of the filters of records moved to the cold tier",
            cold_filter_bytes.clone(),
        );
        let hot_table_bytes = Family::default();
        registry.register(
            "hot_table_bytes",
            "Memory of the hash tables of holds, orders and idempotency records in memory",
            hot_table_bytes.clone(),
        );
        let cold_write_buffer_bytes = Family::default();
        registry.register(
            "cold_write_buffer_bytes",
            "The cold store's memtables not yet flushed to disk",
            cold_write_buffer_bytes.clone(),
        );
        let cold_pinned_bytes = Family::default();
        registry.register(
            "cold_pinned_bytes",
            "The cold store's filter and index blocks held in memory",
            cold_pinned_bytes.clone(),
        );
        let transfers_overdue = Family::default();
        registry.register(
            "transfers_overdue",
            "Warehouse transfers still in transit past their expected arrival",
            transfers_overdue.clone(),
        );
        let adjustments_pending = Family::default();
        registry.register(
            "adjustments_pending",
            "Stock adjustments waiting for a second operator's approval",
            adjustments_pending.clone(),
        );
        let connections_open = Gauge::default();
        registry.register("connections_open", "Client connections open", connections_open.clone());
        let connections_closed = Family::default();
        registry.register(
            "connections_closed",
            "Client connections closed by the service (header_timeout, body_timeout, idle_timeout, tls_handshake) or refused at the connection limit (refused)",
            connections_closed.clone(),
        );
        let rate_limited = Counter::default();
        registry.register(
            "rate_limited",
            "Stock queries refused with 429 by the query rate limit",
            rate_limited.clone(),
        );
        let read_queue_depth = Family::default();
        registry.register(
            "shard_read_queue_depth",
            "Reads waiting in each shard's read lane (served after writes)",
            read_queue_depth.clone(),
        );
        let persistence_lag_records = Family::default();
        let persistence_lag_seconds = Family::default();
        let (event_stream_lag_entries, event_stream_lag_seconds) = (Family::default(), Family::default());
        let events_published = Counter::default();
        Metrics {
            rate_limited,
            read_queue_depth,
            hot_table_bytes,
            cold_write_buffer_bytes,
            cold_pinned_bytes,
            transfers_overdue,
            adjustments_pending,
            registry,
            holds,
            idempotency_keys,
            stock_rows,
            cold_filter_keys,
            cold_filter_bytes,
            persistence_lag_records,
            persistence_lag_seconds,
            event_stream_lag_entries,
            event_stream_lag_seconds,
            events_published,
            requests,
            latency,
            reservations,
            release_delay,
            timeout_backlog,
            oversell_rows,
            oversell_detected,
            queue_depth,
            batch_size,
            flush_seconds,
            journal_healthy,
            journal_failures,
            idempotent_replays,
            overload_refusals,
            auth_refusals,
            risk_flags,
            cold_lookups,
            cold_lookup_seconds,
            evicted,
            follower_lag,
            journal_entries,
            connections_open,
            connections_closed,
        }
    }

    /// Adds the PostgreSQL writer's series; called once when it is configured.
    pub fn register_persistence(&mut self) {
        self.registry.register(
            "persistence_lag_records",
            "Journal entries not yet applied to PostgreSQL",
            self.persistence_lag_records.clone(),
        );
        self.registry.register(
            "persistence_lag_seconds",
            "How long the oldest change not yet in PostgreSQL has waited",
            self.persistence_lag_seconds.clone(),
        );
    }

    /// Adds the event relay's series; called once when it is configured.
    pub fn register_events(&mut self) {
        self.registry.register(
            "event_stream_lag_entries",
            "Journal entries whose events are not yet acknowledged by the broker",
            self.event_stream_lag_entries.clone(),
        );
        self.registry.register(
            "event_stream_lag_seconds",
            "How long the oldest change not yet published has waited",
            self.event_stream_lag_seconds.clone(),
        );
        self.registry.register(
            "events_published",
            "Events acknowledged by the broker (re-deliveries included)",
            self.events_published.clone(),
        );
    }

    pub fn record_request(&self, endpoint: &'static str, code: &'static str, status: u16, took: Duration) {
        let outcome = Outcome::of(status);
        self.requests.get_or_create(&RequestLabels { endpoint, code, outcome }).inc();
        self.latency.get_or_create(&LatencyLabels { endpoint, outcome }).observe(took.as_secs_f64());
    }

    /// Counts a connection the service closed or refused.
    pub fn connection_closed(&self, reason: &'static str) {
        self.connections_closed.get_or_create(&CloseLabels { reason }).inc();
    }

    pub fn reservation_events(&self, event: &'static str, n: u64) {
        if n > 0 {
            self.reservations.get_or_create(&EventLabels { event }).inc_by(n);
        }
    }

    /// Notes the depth of each shard's read lane for the next render.
    pub fn set_read_queue_depths(&self, depths: &[usize]) {
        for (shard, depth) in depths.iter().enumerate() {
            self.read_queue_depth.get_or_create(&ShardLabels { shard: shard as u16 }).set(*depth as i64);
        }
    }

    /// The exposition text.
    pub fn render(&self, queue_depths: &[usize]) -> String {
        for (shard, depth) in queue_depths.iter().enumerate() {
            self.queue_depth.get_or_create(&ShardLabels { shard: shard as u16 }).set(*depth as i64);
        }
        let mut out = String::with_capacity(16 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_follow_the_status() {
        assert_eq!(Outcome::of(200), Outcome::ok);
        assert_eq!(Outcome::of(409), Outcome::rejected);
        assert_eq!(Outcome::of(404), Outcome::rejected);
        assert_eq!(Outcome::of(422), Outcome::rejected);
        assert_eq!(Outcome::of(400), Outcome::invalid);
        assert_eq!(Outcome::of(413), Outcome::invalid);
        assert_eq!(Outcome::of(503), Outcome::error);
    }

    #[test]
    fn renders_prometheus_text_with_the_documented_names() {
        let m = Metrics::new();
        m.record_request("reserve", "OK", 200, Duration::from_millis(3));
        m.reservation_events("reserved", 2);
        let text = m.render(&[4, 0]);
        assert!(
            text.contains(r#"inventory_http_requests_total{endpoint="reserve",code="OK",outcome="ok"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"inventory_http_request_duration_seconds_bucket{le="0.005",endpoint="reserve",outcome="ok"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"inventory_reservations_total{event="reserved"} 2"#), "{text}");
        assert!(text.contains(r#"inventory_shard_queue_depth{shard="0"} 4"#), "{text}");
        m.rate_limited.inc();
        m.set_read_queue_depths(&[0, 3]);
        let text = m.render(&[]);
        assert!(text.contains("inventory_rate_limited_total 1"), "{text}");
        assert!(text.contains(r#"inventory_shard_read_queue_depth{shard="1"} 3"#), "{text}");
    }
}
