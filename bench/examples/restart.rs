//! Measures the memory footprint of stock rows and the bounded-restart path:
//! builds `--skus` SKUs spread over `--shards` shards through the core,
//! snapshots them, appends `--entries` journal entries (reserves) after the
//! snapshot, then rebuilds every shard from snapshot + journal in parallel,
//! exactly as `inventoryd` does at start-up, and reports times and RSS.
//!
//! `cargo run --release -p inventory-bench --example restart -- --skus 1000000 --entries 1000000`
//!
//! `--holds N` (default 0) also places N holds (reserves of 1 unit, each with
//! its own order and idempotency key) right after the load and reports the
//! RSS they add per hold; they are then part of the snapshot.
//!
//! `--dir DIR --keep` leaves the data dir in DIR (an `inventoryd --data-dir`).
//!
//! `--journal file` writes the journal as segment files instead of sled
//! (`inventoryd --journal file`).

use std::path::PathBuf;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::time::Instant;

use inventory_core::{Command, Entry, ReceiveBatch, ReceiveItem, Reserve, Shard, ShardConfig};
use inventory_journal::{rebuild, snapshot, Backend, Journal, Store, Until};

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn main() {
    if std::env::args().any(|a| a == "--restart-only") {
        return restart_only();
    }
    let skus = arg("--skus", 1_000_000);
    let entries = arg("--entries", 1_000_000);
    let holds = arg("--holds", 0);
    let shards = arg("--shards", 2) as u16;
    let dir = std::env::args()
        .skip_while(|a| a != "--dir")
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join(format!("restart-bench-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir);
    let t0 = 1_700_000_000_000u64;
    let base_rss = rss_bytes();

    // 1. Build the state through the core, one batch command per 10k SKUs.
    let started = Instant::now();
    let mut live: Vec<Shard> = (0..shards).map(|i| Shard::new(ShardConfig::new(i))).collect();
    let mut pending: Vec<Vec<ReceiveItem>> = vec![Vec::new(); shards as usize];
    let mut txns = Vec::new();
    for i in 0..skus {
        let sku = format!("sku-{i:09}");
        let s = inventory_core::shard_for_sku(&sku, shards) as usize;
        pending[s].push(ReceiveItem { sku_id: sku, warehouse_id: "default".into(), qty: 1_000 });
        if pending[s].len() == 10_000 || i + 1 == skus {
            for (s, items) in pending.iter_mut().enumerate() {
                if items.is_empty() {
                    continue;
                }
                let c = Command::ReceiveBatch(ReceiveBatch {
                    items: std::mem::take(items),
                    idem_key: format!("load-{i}-{s}"),
                    reference: String::new(),
                });
                txns.clear();
                assert!(live[s].apply(t0, &c, &mut txns).changed);
            }
        }
    }
    let built = started.elapsed();
    let rows_rss = rss_bytes().saturating_sub(base_rss);
    println!("built {skus} SKUs in {:.1} s; RSS for the rows: {:.0} MB = {:.1} bytes/row (incl. index, ids, idempotency records of the load)", built.as_secs_f64(), rows_rss as f64 / 1e6, rows_rss as f64 / skus as f64);

    // 1b. Optionally, live holds, to measure their memory.
    if holds > 0 {
        let before = rss_bytes();
        let started = Instant::now();
        for n in 0..holds {
            let sku = format!("sku-{:09}", n % skus);
            let s = inventory_core::shard_for_sku(&sku, shards) as usize;
            let command = Command::Reserve(Reserve {
                order_id: format!("ord-{n:09}"),
                sku_id: sku,
                warehouse_id: "default".into(),
                qty: 1,
                idem_key: format!("hold-{n:09}"),
                ttl_ms: 900_000,
                ttl_explicit: false,
            });
            txns.clear();
            assert!(live[s].apply(t0, &command, &mut txns).changed, "hold {n} not placed");
        }
        let added = rss_bytes().saturating_sub(before);
        println!(
            "placed {holds} holds in {:.1} s; RSS for them: {:.0} MB = {:.1} bytes/hold (hold, order index, expiry queue, idempotency record)",
            started.elapsed().as_secs_f64(),
            added as f64 / 1e6,
            added as f64 / holds as f64
        );
    }

    // 2. Snapshot each shard.
    let snapshots = dir.join("snapshots");
    let started = Instant::now();
    let mut bytes = 0;
    for shard in &live {
        bytes += snapshot::write(&snapshots, shard.index(), 1, &shard.image()).unwrap().1;
    }
    println!("snapshot: {:.0} MB written in {:.1} s", bytes as f64 / 1e6, started.elapsed().as_secs_f64());

    // 3. The journal after the snapshot: reserves, appended in batches.
    let kind: Backend =
        std::env::args().skip_while(|a| a != "--journal").nth(1).map(|k| k.parse().unwrap()).unwrap_or_default();
    println!("journal: {kind}");
    let store = Store::open(&dir.join("journal"), Some(kind), Some(shards), shards).unwrap();
    let started = Instant::now();
    let per_shard = entries / shards as u64;
    std::thread::scope(|scope| {
        for shard in live.iter_mut() {
            let journal = store.journal(shard.index()).unwrap();
            scope.spawn(move || {
                let mut journal = journal;
                let mut batch = Vec::with_capacity(1_000);
                let mut txns = Vec::new();
                // The snapshot covers entry 1 (the load); the journal goes on from 2.
                let mut next_seq = 2;
                for n in 0..per_shard {
                    // An SKU this shard owns.
                    let sku = (0..)
                        .map(|k| format!("sku-{:09}", (n * 7 + k) % skus))
                        .find(|s| inventory_core::shard_for_sku(s, shards) == shard.index())
                        .unwrap();
                    let command = Command::Reserve(Reserve {
                        order_id: format!("o-{}-{n}", shard.index()),
                        sku_id: sku,
                        warehouse_id: "default".into(),
                        qty: 1,
                        idem_key: format!("k-{}-{n}", shard.index()),
                        ttl_ms: 900_000,
                        ttl_explicit: false,
                    });
                    let at = t0 + 1 + n / 1_000;
                    txns.clear();
                    if shard.apply(at, &command, &mut txns).changed {
                        let txns = std::mem::take(&mut txns);
                        batch.push(Entry {
                            seq: next_seq,
                            at,
                            trace_id: 0,
                            operator: "bench".into(),
                            command,
                            txns,
                            cold: Default::default(),
                        });
                        next_seq += 1;
                    }
                    if batch.len() == 1_000 || n + 1 == per_shard {
                        journal.append(&batch).unwrap();
                        batch.clear();
                    }
                }
            });
        }
    });
    println!(
        "journal: {} entries after the snapshot appended in {:.1} s",
        per_shard * shards as u64,
        started.elapsed().as_secs_f64()
    );
    let expected: Vec<_> = live.iter().map(|s| s.dump().rows.len()).collect();
    drop(live);
    drop(store);

    // 4. Restart, in a fresh process so its memory is its own.
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--restart-only",
            "--dir",
            dir.to_str().unwrap(),
            "--shards",
            &shards.to_string(),
            "--skus",
            &skus.to_string(),
        ])
        .arg("--expect")
        .arg(expected.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(","))
        .status()
        .unwrap();
    assert!(out.success());
    if !std::env::args().any(|a| a == "--keep") {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

fn restart_only() {
    let skus = arg("--skus", 0);
    let shards = arg("--shards", 2) as u16;
    let dir = PathBuf::from(std::env::args().skip_while(|a| a != "--dir").nth(1).unwrap());
    let expected: Vec<usize> = std::env::args()
        .skip_while(|a| a != "--expect")
        .nth(1)
        .unwrap()
        .split(',')
        .map(|n| n.parse().unwrap())
        .collect();
    let snapshots = dir.join("snapshots");
    let store = Store::open(&dir.join("journal"), None, None, 1).unwrap();
    let started = Instant::now();
    let rebuilt: Vec<(Shard, u64)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..shards)
            .map(|i| {
                let journal = store.journal(i).unwrap();
                let snapshots = snapshots.clone();
                scope.spawn(move || {
                    let (shard, stats) =
                        rebuild(ShardConfig::new(i), Some(&snapshots), &journal, Until::End, |_| {}).unwrap();
                    // As inventoryd's shard loops do after recovery.
                    inventory_runtime::release_free_memory();
                    (shard, stats.entries)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let secs = started.elapsed().as_secs_f64();
    // As inventoryd does once recovered.
    inventory_runtime::disable_transparent_huge_pages();
    let replayed: u64 = rebuilt.iter().map(|(_, n)| n).sum();
    let (rss, peak) = (rss_bytes(), peak_rss_bytes());
    for (i, (shard, _)) in rebuilt.iter().enumerate() {
        assert_eq!(shard.dump().rows.len(), expected[i]);
    }
    println!(
        "restart: {skus} SKUs from snapshot + {replayed} journal entries in {secs:.1} s; RSS after {:.0} MB, peak {:.0} MB",
        rss as f64 / 1e6,
        peak as f64 / 1e6
    );
}
