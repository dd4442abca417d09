//! Times the core's bulk receipt path on one thread, no I/O: `--skus` new
//! SKUs arriving in `ReceiveBatch` commands of `--batch` items (one shard's
//! share of an import), each inside a begin/commit batch as the shard loop
//! runs it. Reports ns per row, best and median of `--runs` runs.
//!
//! `cargo run --release -p inventory-bench --example bulk_core -- --skus 5000000 --batch 5000 --runs 3 [--presize]`

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::Instant;

use inventory_core::{Command, ReceiveBatch, ReceiveItem, Shard, ShardConfig};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let skus = arg("--skus", 5_000_000);
    let batch = arg("--batch", 5_000);
    let runs = arg("--runs", 3);
    let presize = std::env::args().any(|a| a == "--presize");
    let mut times = Vec::new();
    for run in 0..runs {
        let mut shard = Shard::new(ShardConfig::new(0));
        if presize {
            shard.reserve_skus(skus as usize);
        }
        let mut txns = Vec::new();
        let mut spent = std::time::Duration::ZERO;
        let mut next = 0u64;
        let mut at = 1_000;
        while next < skus {
            let n = batch.min(skus - next);
            let items = (next..next + n)
                .map(|i| ReceiveItem { sku_id: format!("SKU-{i:09}"), warehouse_id: "default".into(), qty: 100 })
                .collect();
            let command = Command::ReceiveBatch(ReceiveBatch {
                items,
                idem_key: format!("bulk:{run}:{next}"),
                reference: "import".into(),
            });
            let started = Instant::now();
            shard.begin_batch();
            let applied = shard.apply(at, &command, &mut txns);
            assert!(applied.changed, "{:?}", applied.outcome);
            shard.commit_batch();
            txns.clear();
            spent += started.elapsed();
            next += n;
            at += 1;
        }
        let ns = spent.as_nanos() as f64 / skus as f64;
        println!("run {run}: {ns:.0} ns/row");
        times.push(ns);
    }
    times.sort_by(f64::total_cmp);
    println!("best {:.0} ns/row, median {:.0} ns/row", times[0], times[times.len() / 2]);
}
