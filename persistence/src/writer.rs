//! The writer: one task per shard, tailing that shard's journal from its
//! checkpoint, one PostgreSQL transaction per batch.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use inventory_core::{Entry, Millis};
use inventory_journal::follow::{Cursor, Followers};
use inventory_journal::Journal;
use tokio::task::JoinHandle;
use tokio_postgres::Client;

use crate::batch::Batch;
use crate::schema::{self, connect, migrate, Schema};
use crate::PersistenceError;

#[derive(Clone, Debug)]
pub struct WriterConfig {
    pub url: String,
    pub schema: Schema,
    /// Most journal entries per PostgreSQL transaction.
    pub batch_max: usize,
    pub reservation_retention_ms: Millis,
    pub txn_retention_ms: Millis,
    /// The name of the event relay's cursor, when it runs: its position is
    /// recorded with each checkpoint, for `restore`.
    pub relay_follower: Option<&'static str>,
}

/// The name of the writer's cursor on each shard's journal.
pub const FOLLOWER: &str = "postgres";

/// One shard's writer: its cursor on the shard's journal (the checkpoint:
/// the last sequence applied to PostgreSQL) and its connection state.
pub struct ShardProgress {
    /// The shard's journal head; the writer never reads past it.
    pub followers: Arc<Followers>,
    pub cursor: Arc<Cursor>,
    pub connected: AtomicBool,
    pub last_error: ErrorSlot,
}

/// Every shard's writer progress, by shard index.
pub type Progress = Vec<Arc<ShardProgress>>;

impl ShardProgress {
    /// Registers the writer as a follower of one shard's journal. Until it
    /// has read its checkpoint, it holds back every entry from truncation.
    pub fn follow(followers: &Arc<Followers>) -> Arc<ShardProgress> {
        Arc::new(ShardProgress {
            followers: followers.clone(),
            cursor: followers.follow(FOLLOWER),
            connected: AtomicBool::new(false),
            last_error: ErrorSlot::default(),
        })
    }

    /// Last acknowledged journal sequence.
    pub fn durable(&self) -> u64 {
        self.followers.durable()
    }

    /// Last sequence applied to PostgreSQL.
    pub fn applied(&self) -> u64 {
        self.cursor.position()
    }

    /// Entries durable in the journal but not yet in PostgreSQL.
    pub fn lag_records(&self) -> u64 {
        self.cursor.lag_entries(&self.followers)
    }

    /// How far behind the writer is, in journal time.
    pub fn lag_ms(&self) -> u64 {
        self.cursor.lag_ms(&self.followers)
    }
}

/// The writer's last error message, for the status endpoint (written rarely).
#[derive(Default)]
pub struct ErrorSlot(std::sync::Mutex<Option<String>>);

impl ErrorSlot {
    pub fn set(&self, value: Option<String>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = value;
    }
    pub fn get(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Faults a test can inject into the writer, to see reconciliation catch them.
#[derive(Debug, Default)]
pub struct WriterFaults {
    /// Advance the checkpoint over the next batch without writing its rows.
    pub skip_next_batch: AtomicBool,
    /// After the next batch, write the previous batch's inventory rows again
    /// (a stale re-apply).
    pub reapply_previous_batch: AtomicBool,
}

/// Starts one writer per shard, plus the retention task. `readers[i]` reads
/// shard `i`'s journal.
pub fn spawn_writers(
    config: WriterConfig,
    readers: Vec<Box<dyn Journal + Sync>>,
    progress: Progress,
    faults: Arc<WriterFaults>,
) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    for (shard, reader) in readers.into_iter().enumerate() {
        let (config, progress, faults) = (config.clone(), progress.clone(), faults.clone());
        let reader: Arc<dyn Journal + Sync> = Arc::from(reader);
        tasks.push(tokio::spawn(async move { run_shard(shard as u16, config, reader, progress, faults).await }));
    }
    tasks.push(tokio::spawn(retention(config)));
    tasks
}

async fn run_shard(
    shard: u16,
    config: WriterConfig,
    reader: Arc<dyn Journal + Sync>,
    progress: Progress,
    faults: Arc<WriterFaults>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let result = session(shard, &config, &reader, &progress, &faults, &mut backoff).await;
        let p = &progress[shard as usize];
        p.connected.store(false, Ordering::Release);
        if let Err(e) = result {
            tracing::warn!(shard, error = %e, retry_in_ms = backoff.as_millis() as u64, "postgres writer failed; retrying");
            p.last_error.set(Some(e.to_string()));
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn session(
    shard: u16,
    config: &WriterConfig,
    reader: &Arc<dyn Journal + Sync>,
    progress: &Progress,
    faults: &WriterFaults,
    backoff: &mut Duration,
) -> Result<(), PersistenceError> {
    let mut client = connect(&config.url, &config.schema).await?;
    // Each batch's statements run once: compiling them to machine code
    // (which PostgreSQL starts above a cost threshold) costs more than it saves.
    client.batch_execute("SET jit = off").await?;
    migrate(&mut client, &config.schema).await?;
    client
        .execute("INSERT INTO writer_checkpoint (shard, seq, updated_at) VALUES ($1, 0, now()) ON CONFLICT (shard) DO NOTHING", &[&(shard as i16)])
        .await?;
    let row = client.query_one("SELECT seq FROM writer_checkpoint WHERE shard = $1", &[&(shard as i16)]).await?;
    let mut applied = row.get::<_, i64>(0) as u64;
    let p = &progress[shard as usize];
    p.cursor.advance(applied, p.cursor.position_at());
    p.connected.store(true, Ordering::Release);
    p.last_error.set(None);
    *backoff = Duration::from_millis(100);
    tracing::info!(shard, checkpoint = applied, "postgres writer connected");
    let relay = config.relay_follower.and_then(|name| p.followers.cursors().into_iter().find(|c| c.name() == name));
    let mut days: BTreeSet<i64> = BTreeSet::new();
    let mut previous: Option<Batch> = None;
    loop {
        let durable = p.durable();
        if applied >= durable {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        }
        let count = (durable - applied).min(config.batch_max as u64) as usize;
        let entries = read(reader, applied + 1, count).await?;
        let last = entries.last().expect("durable entries exist");
        let (to, to_at) = (last.seq, last.at);
        let batch = Batch::build(shard, &entries);
        let relay_seq = relay.as_ref().map(|c| c.position() as i64);
        apply(&mut client, shard, (applied, to), relay_seq, &batch, &mut days, faults).await?;
        applied = to;
        p.cursor.advance(applied, to_at);
        if faults.reapply_previous_batch.swap(false, Ordering::SeqCst) {
            if let Some(stale) = &previous {
                let tx = client.transaction().await?;
                stale.write_inventory(&tx).await?;
                tx.commit().await?;
            }
        }
        previous = Some(batch);
    }
}

/// Reads `count` entries starting at `from` (blocking sled reads, off the
/// async threads).
async fn read(reader: &Arc<dyn Journal + Sync>, from: u64, count: usize) -> Result<Vec<Entry>, PersistenceError> {
    let shard = reader.shard();
    let reader = reader.clone();
    let entries = tokio::task::spawn_blocking(move || -> Result<Vec<Entry>, PersistenceError> {
        let mut out = Vec::with_capacity(count);
        for entry in reader.read_from(from)?.take(count) {
            out.push(entry?);
        }
        Ok(out)
    })
    .await
    .expect("journal read panicked")?;
    if entries.len() != count || entries.first().map(|e| e.seq) != Some(from) {
        return Err(PersistenceError::Journal(inventory_journal::JournalError::Gap {
            shard,
            expected: from,
            found: entries.first().map_or(0, |e| e.seq),
        }));
    }
    Ok(entries)
}

async fn apply(
    client: &mut Client,
    shard: u16,
    (from, to): (u64, u64),
    relay_seq: Option<i64>,
    batch: &Batch,
    days: &mut BTreeSet<i64>,
    faults: &WriterFaults,
) -> Result<(), PersistenceError> {
    // New day partitions are created and committed on their own first:
    // creating a partition locks its parent table, and holding that lock
    // for the length of a large batch would stall every other shard's writer.
    let new_days: Vec<i64> = batch.days.difference(days).copied().collect();
    if !new_days.is_empty() {
        let tx = client.transaction().await?;
        for day in &new_days {
            schema::ensure_day(&tx, *day).await?;
        }
        tx.commit().await?;
        days.extend(new_days);
    }
    let tx = client.transaction().await?;
    let moved = tx
        .execute(
            "UPDATE writer_checkpoint SET seq = $2, updated_at = now(), max_hold_seq = greatest(max_hold_seq, $4),
                    max_txn_seq = greatest(max_txn_seq, $5), last_at_ms = greatest(last_at_ms, $6), relay_seq = $7
              WHERE shard = $1 AND seq = $3",
            &[
                &(shard as i16),
                &(to as i64),
                &(from as i64),
                &(batch.max_hold_seq as i64),
                &(batch.max_txn_seq as i64),
                &(batch.last_at as i64),
                &relay_seq,
            ],
        )
        .await?;
    if moved != 1 {
        return Err(PersistenceError::CheckpointMoved { shard, expected: from });
    }
    let skip = faults.skip_next_batch.swap(false, Ordering::SeqCst);
    if !batch.is_empty() && !skip {
        batch.write(&tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Drops expired partitions at start and then hourly.
async fn retention(config: WriterConfig) {
    loop {
        match connect(&config.url, &config.schema).await {
            Ok(mut client) => {
                let result = async {
                    migrate(&mut client, &config.schema).await?;
                    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
                    schema::drop_expired(&client, &config.schema, "reservation", now, config.reservation_retention_ms)
                        .await?;
                    schema::drop_expired(&client, &config.schema, "inventory_txn", now, config.txn_retention_ms)
                        .await?;
                    Ok::<_, PersistenceError>(())
                }
                .await;
                if let Err(e) = result {
                    tracing::warn!(error = %e, "partition retention failed");
                }
            }
            Err(e) => tracing::debug!(error = %e, "retention: postgres unavailable"),
        }
        tokio::time::sleep(Duration::from_secs(3_600)).await;
    }
}
