//! Times a shard's bulk receipt path on one thread: `--skus` new SKUs
//! arriving in `ReceiveBatch` commands of `--batch` items (one shard's share
//! of an import), each applied inside a begin/commit batch as the shard loop
//! runs it, and with `--journal` also appended to a sled journal (one group
//! commit per command, flushed). Reports ns per row for the core and the
//! journal, the median of `--runs` runs. `--presize` sizes the SKU index
//! first, as `inventoryd --expected-skus` does.
//!
//! `cargo run --release -p inventory-bench --example bulk_core -- --skus 5000000 --batch 5000 --runs 3 [--presize] [--journal]`

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::{Duration, Instant};

use inventory_core::{Command, Entry, ReceiveBatch, ReceiveItem, Shard, ShardConfig};
use inventory_journal::{Journal, SledStore};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let skus = arg("--skus", 5_000_000);
    let batch = arg("--batch", 5_000);
    let runs = arg("--runs", 3);
    let flag = |name: &str| std::env::args().any(|a| a == name);
    let (presize, journaled) = (flag("--presize"), flag("--journal"));
    let (mut core_ns, mut journal_ns) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut journal =
            journaled.then(|| SledStore::open(dir.path(), Some(1), 1).and_then(|s| s.journal(0)).unwrap());
        let mut shard = Shard::new(ShardConfig::new(0));
        if presize {
            shard.reserve_skus(skus as usize);
        }
        let (mut in_core, mut in_journal) = (Duration::ZERO, Duration::ZERO);
        let (mut next, mut seq, at) = (0u64, 1u64, 1_700_000_000_000);
        // Kept from batch to batch, as the shard loop keeps its txn lists.
        let mut txns = Vec::new();
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
            in_core += started.elapsed();
            if let Some(journal) = journal.as_mut() {
                let entries =
                    [Entry { seq, at, trace_id: 0, operator: "bench".into(), command, txns, cold: Default::default() }];
                let started = Instant::now();
                journal.append(&entries).expect("append");
                in_journal += started.elapsed();
                seq += 1;
                let [entry] = entries;
                txns = entry.txns;
            }
            txns.clear();
            shard.commit_batch();
            next += n;
        }
        let per_row = |d: Duration| d.as_nanos() as f64 / skus as f64;
        println!("run {run}: core {:.0} ns/row, journal {:.0} ns/row", per_row(in_core), per_row(in_journal));
        core_ns.push(per_row(in_core));
        journal_ns.push(per_row(in_journal));
    }
    println!("median: core {:.0} ns/row, journal {:.0} ns/row", median(core_ns), median(journal_ns));
}
