//! Measures the PostgreSQL writer and restore: builds a journal of
//! `--skus` receipts (bulk, 10k rows per entry) followed by `--holds`
//! reserves over two shards, each settled 20,000 reserves later (four in five
//! confirmed, the rest released), lets the writer
//! apply all of it to a fresh schema, and reports its sustained rate; then
//! times `restore` from that schema into a new data dir.
//!
//! `cargo run --release -p inventory-bench --example pg_writer -- --skus 1000000 --holds 1000000`
//! (`PG_URL` overrides `host=127.0.0.1 user=root dbname=test`.)

use std::sync::Arc;
use std::time::{Duration, Instant};

use inventory_core::{
    Applied, Command, Confirm, Entry, Outcome, ReceiveBatch, ReceiveItem, Release, Reserve, Shard, ShardConfig,
};
use inventory_journal::follow::Followers;
use inventory_journal::{Journal, SledStore};
use inventory_persistence::{connect, spawn_writers, Schema, ShardProgress, WriterConfig, WriterFaults};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn apply(shard: &mut Shard, at: u64, command: Command, out: &mut Vec<Entry>) -> Applied {
    let mut txns = Vec::new();
    let applied = shard.apply(at, &command, &mut txns);
    if applied.changed {
        out.push(Entry {
            seq: out.len() as u64 + 1,
            at,
            trace_id: 0,
            operator: "bench".into(),
            command,
            txns,
            cold: Default::default(),
        });
    }
    applied
}

#[tokio::main]
async fn main() {
    let (skus, holds, shards) = (arg("--skus", 100_000), arg("--holds", 100_000), 2u16);
    let url = std::env::var("PG_URL").unwrap_or_else(|_| "host=127.0.0.1 user=root dbname=test".into());
    let dir = std::env::temp_dir().join(format!("pg-writer-bench-{}", std::process::id()));
    let t0 = 1_700_000_000_000u64;
    let mut live: Vec<Shard> = (0..shards).map(|i| Shard::new(ShardConfig::new(i))).collect();
    let mut entries: Vec<Vec<Entry>> = vec![Vec::new(); shards as usize];
    let names: Vec<String> = (0..skus).map(|i| format!("sku-{i:09}")).collect();
    for s in 0..shards as usize {
        let mine: Vec<&String> =
            names.iter().filter(|n| inventory_core::shard_for_sku(n, shards) as usize == s).collect();
        for (c, chunk) in mine.chunks(10_000).enumerate() {
            let items = chunk
                .iter()
                .map(|n| ReceiveItem { sku_id: n.to_string(), warehouse_id: "default".into(), qty: 100 })
                .collect();
            let command = Command::ReceiveBatch(ReceiveBatch {
                items,
                idem_key: format!("load-{s}-{c}"),
                reference: String::new(),
            });
            apply(&mut live[s], t0, command, &mut entries[s]);
        }
    }
    const SETTLE_AFTER: usize = 20_000;
    let mut pending = std::collections::VecDeque::new();
    for n in 0..holds {
        // Scattered over the catalogue, as uniform traffic is (a stride would keep
        // PostgreSQL's pages hot and flatter the writer).
        let sku = &names[(n.wrapping_mul(2_654_435_761) % skus) as usize];
        let s = inventory_core::shard_for_sku(sku, shards) as usize;
        let at = t0 + 1 + n / 1_000;
        let reserve = Command::Reserve(Reserve {
            order_id: format!("o-{n}"),
            sku_id: sku.clone(),
            warehouse_id: "default".into(),
            qty: 1,
            idem_key: format!("r-{n}"),
            ttl_ms: 900_000,
            ttl_explicit: false,
        });
        if let Outcome::Reserved { reservation_id, .. } = apply(&mut live[s], at, reserve, &mut entries[s]).outcome {
            pending.push_back((reservation_id, s, n));
        }
        // Holds are settled a while after they were taken, as payments are:
        // by then PostgreSQL holds the reservation row, and the writer
        // updates it.
        if pending.len() > SETTLE_AFTER || n + 1 == holds {
            while let Some((reservation_id, s, m)) = pending.pop_front() {
                let command = if m % 5 == 4 {
                    Command::Release(Release { reservation_id, reason: "CANCELLED".into(), idem_key: format!("x-{m}") })
                } else {
                    Command::Confirm(Confirm {
                        reservation_id,
                        payment_id: format!("p-{m}"),
                        idem_key: format!("c-{m}"),
                    })
                };
                apply(&mut live[s], at, command, &mut entries[s]);
                if pending.len() <= SETTLE_AFTER && n + 1 != holds {
                    break;
                }
            }
        }
    }
    let store = SledStore::open(&dir.join("journal"), Some(shards), shards).unwrap();
    let (mut total_entries, mut total_txns) = (0u64, 0u64);
    for (s, list) in entries.iter().enumerate() {
        let mut journal = store.journal(s as u16).unwrap();
        for chunk in list.chunks(1_000) {
            journal.append(chunk).unwrap();
        }
        total_entries += list.len() as u64;
        total_txns += list.iter().map(|e| e.txns.len() as u64).sum::<u64>();
    }
    let durable: Vec<u64> = entries.iter().map(|l| l.len() as u64).collect();
    // Each shard's journal starts with its receipts; the order phase follows.
    let receipt_entries: Vec<u64> = entries
        .iter()
        .map(|l| l.iter().take_while(|e| matches!(e.command, Command::ReceiveBatch(_))).count() as u64)
        .collect();
    let receipt_total: u64 = receipt_entries.iter().sum();
    drop(entries);
    drop(live);

    // The writer, against a fresh schema.
    let schema = Schema::new(&format!("bench_writer_{}", std::process::id())).unwrap();
    let progress: Vec<Arc<ShardProgress>> = durable
        .iter()
        .map(|&d| {
            let followers: Arc<Followers> = Arc::default();
            followers.publish(d, 0);
            ShardProgress::follow(&followers)
        })
        .collect();
    let config = WriterConfig {
        url: url.clone(),
        schema: schema.clone(),
        batch_max: 2_048,
        reservation_retention_ms: u64::MAX / 2,
        txn_retention_ms: u64::MAX / 2,
        relay_follower: None,
    };
    let readers: Vec<Box<dyn Journal + Sync>> = (0..shards).map(|i| store.journal(i).unwrap().reader()).collect();
    let started = Instant::now();
    let tasks = spawn_writers(config, readers, progress.clone(), Arc::new(WriterFaults::default()));
    let mut receipts_done: Option<f64> = None;
    while progress.iter().any(|p| p.lag_records() > 0) {
        if receipts_done.is_none() && progress.iter().zip(&receipt_entries).all(|(p, &r)| p.applied() >= r) {
            receipts_done = Some(started.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let receipt_secs = receipts_done.unwrap_or(secs);
    for t in tasks {
        t.abort();
    }
    println!(
        "writer: {total_entries} journal entries, {total_txns} txns ({skus} receipts, {holds} reserves, each confirmed or released later) applied in {secs:.1} s: {:.0} entries/s, {:.0} txns/s",
        total_entries as f64 / secs,
        total_txns as f64 / secs
    );
    // The phases overlap by at most one batch per shard.
    let order_entries = total_entries - receipt_total;
    println!(
        "  receipts: {skus} rows in {receipt_entries:?} entries per shard, applied in {receipt_secs:.1} s: {:.0} rows/s",
        skus as f64 / receipt_secs
    );
    println!(
        "  orders:   {order_entries} reserve, confirm and release entries in {:.1} s: {:.0} entries/s",
        secs - receipt_secs,
        order_entries as f64 / (secs - receipt_secs)
    );

    // Restore from it.
    let target = dir.join("restored");
    let started = Instant::now();
    let report =
        inventory_persistence::restore::restore(&url, &schema, &target, None, Default::default()).await.unwrap();
    println!(
        "restore: {} inventory rows and {} holds into a new data dir in {:.1} s",
        report.rows,
        report.holds,
        started.elapsed().as_secs_f64()
    );
    let client = connect(&url, &schema).await.unwrap();
    client.batch_execute(&format!("DROP SCHEMA {} CASCADE", schema.name())).await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
