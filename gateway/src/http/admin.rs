//! Admin endpoints: PostgreSQL writer progress, reconciliation of the
//! core, its journal and PostgreSQL, snapshots on demand, and sizing the
//! stock index ahead of a bulk load.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use inventory_core::{Command, Repair, ShardConfig, StockRow};
use inventory_journal::{rebuild, Until};
use inventory_persistence::reconcile::{self, History, PgRow};
use inventory_persistence::{connect, Progress, WriterConfig};
use inventory_runtime::metrics::{Metrics, ShardLabels};
use inventory_runtime::snapshotter::SnapshotReport;
use inventory_runtime::{Meta, Request, WriteReply};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::oneshot;
use utoipa::ToSchema;

use super::extract::{BodyBytes, Ctx, SmallBody};
use super::{json, ready, stopping, App};
use crate::api::{self, ApiError};

/// How long reconciliation waits for the writer to reach the rows it checks.
const CATCH_UP_WAIT: Duration = Duration::from_secs(30);
/// Most mismatches listed in a report.
const DETAILS_MAX: usize = 100;
pub const REPAIR_REASON: &str = "AUTO_RECONCILE";

/// `GET /api/admin/persistence`: the PostgreSQL writer.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = PersistenceStatus)]
pub struct PersistenceJson {
    /// Whether `--postgres-url` is set; without it `shards` is empty.
    enabled: bool,
    #[schema(required = true)]
    schema: Option<String>,
    shards: Vec<WriterShardJson>,
}

/// The writer of one shard.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = WriterShard)]
pub struct WriterShardJson {
    shard: u16,
    /// The shard's last acknowledged journal entry.
    durable_seq: u64,
    /// The last entry PostgreSQL holds.
    applied_seq: u64,
    lag_records: u64,
    /// How long the oldest entry PostgreSQL lacks has been acknowledged.
    lag_seconds: f64,
    connected: bool,
    #[schema(required = true)]
    last_error: Option<String>,
}

pub async fn persistence_status(State(app): State<Arc<App>>) -> Response {
    let shards = app
        .writers
        .iter()
        .enumerate()
        .map(|(i, p)| WriterShardJson {
            shard: i as u16,
            durable_seq: p.durable(),
            applied_seq: p.applied(),
            lag_records: p.lag_records(),
            lag_seconds: p.cursor.waiting(&p.followers).as_secs_f64(),
            connected: p.connected.load(std::sync::atomic::Ordering::Acquire),
            last_error: p.last_error.get(),
        })
        .collect();
    let body = PersistenceJson {
        enabled: app.postgres.is_some(),
        schema: app.postgres.as_ref().map(|p| p.schema.name().to_string()),
        shards,
    };
    json(StatusCode::OK, serde_json::to_vec(&body).expect("json"))
}

/// How often the writer's lag is measured (and the guard below decided).
const LAG_EVERY: Duration = Duration::from_millis(100);

/// Keeps the writer's lag gauges current and tells the replication guard
/// which shards lag too far.
pub async fn persistence_gauges(progress: Progress, guard: Option<Arc<ReplicationGuard>>, metrics: Arc<Metrics>) {
    loop {
        for (i, p) in progress.iter().enumerate() {
            let labels = ShardLabels { shard: i as u16 };
            let waiting = p.cursor.waiting(&p.followers);
            metrics.persistence_lag_records.get_or_create(&labels).set(p.lag_records());
            metrics.persistence_lag_seconds.get_or_create(&labels).set(waiting.as_secs_f64());
            if let Some(guard) = &guard {
                guard.note(i, waiting);
            }
        }
        tokio::time::sleep(LAG_EVERY).await;
    }
}

/// `--max-replication-lag-secs`: per shard, whether its oldest change not
/// yet in PostgreSQL was acknowledged longer ago than the bound. Writes to
/// such a shard are refused until the writer catches up, so the changes a
/// lost machine takes with it are at most the bound's worth.
pub struct ReplicationGuard {
    bound: Duration,
    lagging: Vec<std::sync::atomic::AtomicBool>,
}

impl ReplicationGuard {
    pub fn new(bound: Duration, shards: u16) -> ReplicationGuard {
        ReplicationGuard { bound, lagging: (0..shards).map(|_| Default::default()).collect() }
    }

    fn note(&self, shard: usize, waiting: Duration) {
        self.lagging[shard].store(waiting > self.bound, std::sync::atomic::Ordering::Release);
    }

    /// The refusal for a write to `shard`, if it lags too far.
    pub fn check(&self, shard: u16) -> Result<(), ApiError> {
        if !self.lagging[shard as usize].load(std::sync::atomic::Ordering::Acquire) {
            return Ok(());
        }
        Err(ApiError::unavailable(
            "REPLICATION_LAG",
            format!(
                "PostgreSQL has not applied this shard's changes of the last {} s; writes resume once it catches up",
                self.bound.as_secs()
            ),
        ))
    }
}

/// `POST /api/admin/reconcile`; an empty body is `{}`.
#[derive(Deserialize, Default, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = ReconcileRequest)]
pub struct ReconcileBody {
    /// Set PostgreSQL's wrong rows to the core's values (recorded with
    /// reason `AUTO_RECONCILE`).
    #[serde(default)]
    repair: bool,
}

/// What reconciliation found, and repaired.
#[derive(Serialize, Default, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = ReconcileReport)]
pub struct Report {
    repair: bool,
    checked: u64,
    mismatched: u64,
    repaired: u64,
    /// Rows where the live core differs from a replay of its journal.
    core_mismatches: u64,
    /// Without PostgreSQL, null.
    #[schema(required = true)]
    postgres: Option<PgReport>,
    /// At most 100 mismatches, each with `skuId`, `warehouseId`, `side`
    /// (`core`, `postgres` or `postgres_history`) and what each side holds.
    details: Vec<serde_json::Value>,
}

#[derive(Serialize, Default, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = PostgresReport)]
pub struct PgReport {
    compared: u64,
    /// Rows PostgreSQL has that the core does not, or at an older version.
    mismatched: u64,
    repaired: u64,
    /// Rows whose transaction history in PostgreSQL has a gap, a repeat or
    /// does not end at the row's value.
    history_broken: u64,
    /// Rows changed after the checked point (compared next time).
    skipped_newer: u64,
}

fn row_json(row: &StockRow) -> serde_json::Value {
    json!({"available": row.levels.available, "reserved": row.levels.reserved, "sold": row.levels.sold, "version": row.version})
}

fn pg_json(row: &PgRow) -> serde_json::Value {
    json!({"available": row.levels.available, "reserved": row.levels.reserved, "sold": row.levels.sold, "version": row.version})
}

/// Rebuilds every row from the journal and compares it with the live core
/// and, when configured, with PostgreSQL's row and transaction history. In
/// repair mode a wrong PostgreSQL row is set to the core's value and the
/// repair recorded in `reconcile_audit` with reason `AUTO_RECONCILE`.
pub async fn reconcile(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    BodyBytes(body): SmallBody,
) -> Result<Response, ApiError> {
    ready(&app)?;
    let app = &*app;
    let request: ReconcileBody =
        if body.iter().all(u8::is_ascii_whitespace) { ReconcileBody::default() } else { api::parse(&body)? };
    let mut report = Report { repair: request.repair, ..Report::default() };
    // Per shard: the live rows at a sequence, and the journal replayed to it.
    let mut core: BTreeMap<(String, String), (u16, StockRow)> = BTreeMap::new();
    let mut seqs = Vec::new();
    for shard in 0..app.runtime.shards() {
        let (reply, answer) = oneshot::channel();
        app.runtime.router.send(shard, Request::Rows { reply }).map_err(|e| app.send_error(e))?;
        let (seq, live) = answer.await.map_err(|_| stopping())?;
        let reader = app.runtime.readers[shard as usize].clone();
        let snapshots = app.runtime.snapshot_dir.clone();
        let rebuilt = tokio::task::spawn_blocking(move || {
            rebuild(ShardConfig::new(shard), Some(&snapshots), &*reader, Until::Seq(seq), |_| {})
                .map(|(replica, _)| replica.dump().rows)
        })
        .await
        .expect("replay panicked")
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "JOURNAL_UNREADABLE", e.to_string()))?;
        let rebuilt: BTreeMap<_, _> = rebuilt.into_iter().map(|(s, w, r)| ((s, w), r)).collect();
        for (sku, wh, row) in live {
            report.checked += 1;
            let key = (sku, wh);
            let from_history = rebuilt.get(&key);
            if from_history != Some(&row) {
                report.core_mismatches += 1;
                report.mismatched += 1;
                push_detail(
                    &mut report,
                    json!({
                        "skuId": key.0, "warehouseId": key.1, "side": "core",
                        "core": row_json(&row), "journal": from_history.map(row_json),
                        "action": "none: the core disagrees with its own journal; freeze the SKU and investigate",
                    }),
                );
            }
            core.insert(key, (shard, row));
        }
        seqs.push(seq);
    }
    if let Some(config) = &app.postgres {
        let meta = ctx.meta();
        report.postgres = Some(reconcile_postgres(app, config, &core, &seqs, request.repair, meta, &mut report).await?);
    }
    Ok(json(StatusCode::OK, serde_json::to_vec(&report).expect("json")))
}

/// Journals a repair of PostgreSQL's copy of a row: a version of the row
/// in its history, in PostgreSQL's `inventory_txn` and the outbox, and in
/// the audit log, with what PostgreSQL held.
async fn record_repair(
    app: &App,
    shard: u16,
    key: &(String, String),
    had: Option<PgRow>,
    meta: Meta,
) -> Result<(), ApiError> {
    let detail = match had {
        Some(h) => format!(
            "{REPAIR_REASON}: postgres had available={} reserved={} sold={} version={}",
            h.levels.available, h.levels.reserved, h.levels.sold, h.version
        ),
        None => format!("{REPAIR_REASON}: postgres had no row"),
    };
    let command = Command::Repair(Repair { sku_id: key.0.clone(), warehouse_id: key.1.clone(), detail });
    let (reply, answer) = oneshot::channel();
    app.runtime.router.send(shard, Request::Write { command, meta, reply }).map_err(|e| app.send_error(e))?;
    match answer.await {
        Ok(WriteReply::Applied(_)) => Ok(()),
        Ok(_) => Err(ApiError::unavailable(
            "JOURNAL_UNAVAILABLE",
            "the repair was made but could not be journaled; reconcile again to record it",
        )),
        Err(_) => Err(stopping()),
    }
}

fn push_detail(report: &mut Report, detail: serde_json::Value) {
    if report.details.len() < DETAILS_MAX {
        report.details.push(detail);
    }
}

async fn reconcile_postgres(
    app: &App,
    config: &WriterConfig,
    core: &BTreeMap<(String, String), (u16, StockRow)>,
    seqs: &[u64],
    repair: bool,
    meta: Meta,
    report: &mut Report,
) -> Result<PgReport, ApiError> {
    let pg_error =
        |e: inventory_persistence::PersistenceError| ApiError::unavailable("POSTGRES_UNAVAILABLE", e.to_string());
    // PostgreSQL must have applied at least what the core rows reflect.
    let deadline = Instant::now() + CATCH_UP_WAIT;
    for (shard, &seq) in seqs.iter().enumerate() {
        while app.writers[shard].applied() < seq {
            if Instant::now() > deadline {
                return Err(ApiError::unavailable(
                    "PERSISTENCE_LAGGING",
                    format!("shard {shard}: PostgreSQL has not caught up to entry {seq}"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let mut client = connect(&config.url, &config.schema).await.map_err(pg_error)?;
    let rows = reconcile::inventory_rows(&client).await.map_err(pg_error)?;
    let history = reconcile::txn_history(&client).await.map_err(pg_error)?;
    let mut pg = PgReport::default();
    let now = app.runtime.clock.now_ms();
    for (key, (shard, row)) in core {
        pg.compared += 1;
        let want = PgRow { levels: row.levels, version: row.version };
        let have = rows.get(key).copied();
        match have {
            Some(h) if h.version > want.version => {
                pg.skipped_newer += 1;
                continue;
            }
            Some(h) if h == want => {}
            _ => {
                pg.mismatched += 1;
                report.mismatched += 1;
                let mut action = "reported";
                if repair {
                    reconcile::repair_row(&mut client, key, have, want, now, REPAIR_REASON).await.map_err(pg_error)?;
                    record_repair(app, *shard, key, have, meta.clone()).await?;
                    pg.repaired += 1;
                    report.repaired += 1;
                    action = "postgres row set to the core's value";
                }
                push_detail(
                    report,
                    json!({
                        "skuId": key.0, "warehouseId": key.1, "side": "postgres",
                        "core": row_json(row), "postgres": have.as_ref().map(pg_json), "action": action,
                    }),
                );
            }
        }
        match history.get(key) {
            Some(History::Broken(reason)) => {
                pg.history_broken += 1;
                push_detail(
                    report,
                    json!({"skuId": key.0, "warehouseId": key.1, "side": "postgres_history", "problem": reason}),
                );
            }
            Some(History::Rebuilt(h)) if h.version == want.version && h.levels != want.levels => {
                pg.history_broken += 1;
                push_detail(
                    report,
                    json!({"skuId": key.0, "warehouseId": key.1, "side": "postgres_history",
                    "problem": "history ends at a different value", "core": row_json(row), "history": pg_json(h)}),
                );
            }
            Some(History::Rebuilt(h)) if h.version < want.version => {
                pg.history_broken += 1;
                push_detail(
                    report,
                    json!({"skuId": key.0, "warehouseId": key.1, "side": "postgres_history",
                    "problem": format!("history ends at version {} but the row is at version {}", h.version, want.version)}),
                );
            }
            None => {
                pg.history_broken += 1;
                push_detail(
                    report,
                    json!({"skuId": key.0, "warehouseId": key.1, "side": "postgres_history", "problem": "no history"}),
                );
            }
            _ => {}
        }
    }
    Ok(pg)
}

/// Most SKUs one capacity request makes room for: the design's 50M
/// catalogue twice over, about 1 GB of index.
pub const CAPACITY_SKUS_MAX: u64 = 100_000_000;

/// `POST /api/admin/capacity`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = CapacityRequest)]
pub struct CapacityBody {
    /// SKUs to make room for, over all shards.
    #[schema(minimum = 1, maximum = 100000000)]
    skus: u64,
}

/// What each shard's stock index is now sized for.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Capacity)]
pub struct CapacityJson {
    shards: Vec<ShardCapacityJson>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = ShardCapacity)]
pub struct ShardCapacityJson {
    shard: u16,
    sized_for_skus: usize,
}

/// Sizes the stock index for `skus` more SKUs (spread over the shards as
/// SKU ids hash), so that a bulk import of that many new SKUs does not grow
/// it step by step. The memory is taken now: about 8-10 bytes per SKU. Each
/// shard does it a slice at a time between batches; this answers once all
/// are done.
pub async fn capacity(State(app): State<Arc<App>>, BodyBytes(body): SmallBody) -> Result<Response, ApiError> {
    ready(&app)?;
    let CapacityBody { skus } = api::parse(&body)?;
    if skus == 0 || skus > CAPACITY_SKUS_MAX {
        return Err(ApiError::invalid(format!("skus must be from 1 to {CAPACITY_SKUS_MAX}, not {skus}")));
    }
    let shards = app.runtime.shards();
    let more = skus.div_ceil(u64::from(shards)) as usize;
    let mut answers = Vec::with_capacity(shards as usize);
    for shard in 0..shards {
        let (reply, answer) = oneshot::channel();
        app.runtime.router.send(shard, Request::Capacity { more, reply }).map_err(|e| app.send_error(e))?;
        answers.push(answer);
    }
    let mut shards = Vec::with_capacity(answers.len());
    for (shard, answer) in answers.into_iter().enumerate() {
        let sized_for_skus = answer.await.map_err(|_| stopping())?;
        shards.push(ShardCapacityJson { shard: shard as u16, sized_for_skus });
    }
    Ok(json(StatusCode::OK, serde_json::to_vec(&CapacityJson { shards }).expect("json")))
}

/// `POST /api/admin/snapshot`: each shard's snapshot.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Snapshots)]
pub struct SnapshotsJson {
    snapshots: Vec<SnapshotJson>,
}

/// One shard's snapshot.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = ShardSnapshot)]
pub struct SnapshotJson {
    shard: u16,
    /// The last journal entry it covers.
    seq: u64,
    bytes: u64,
    millis: u64,
    /// Journal entries removed (covered by a snapshot and safe to drop).
    truncated: u64,
    /// Entries kept only because a follower (PostgreSQL, the audit log)
    /// has not taken them yet.
    held_back: u64,
    /// The follower that held them back.
    #[serde(skip_serializing_if = "Option::is_none")]
    held_back_by: Option<&'static str>,
    /// Why this shard's snapshot failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl From<SnapshotReport> for SnapshotJson {
    fn from(r: SnapshotReport) -> SnapshotJson {
        let SnapshotReport { shard, seq, bytes, millis, truncated, held_back, held_back_by, error } = r;
        SnapshotJson { shard, seq, bytes, millis, truncated, held_back, held_back_by, error }
    }
}

/// Snapshots every shard now (and truncates what the snapshots cover). If
/// any shard's failed, the answer is 500 `SNAPSHOT_FAILED` with every
/// shard's report.
pub async fn snapshot(State(app): State<Arc<App>>) -> Result<Response, ApiError> {
    ready(&app)?;
    let (reply, answer) = oneshot::channel();
    app.runtime.snapshots.send(reply).map_err(|_| stopping())?;
    let reports = answer.await.map_err(|_| stopping())?;
    let failed = reports.iter().filter(|r| r.error.is_some()).count();
    let snapshots: Vec<SnapshotJson> = reports.into_iter().map(Into::into).collect();
    if failed > 0 {
        let mut e = ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "SNAPSHOT_FAILED",
            format!("{failed} of {} shards could not be snapshotted: see each one's error", snapshots.len()),
        );
        e.detail = Some(json!({ "snapshots": snapshots }));
        return Err(e);
    }
    Ok(json(StatusCode::OK, serde_json::to_vec(&SnapshotsJson { snapshots }).expect("json")))
}
