//! A journal's resident memory over a long run of appends with truncation
//! behind them, as the service's snapshots truncate it: the journal alone,
//! without shards or HTTP, so whatever grows is the journal's.
//!
//! `cargo run --release -p inventory-bench --example journal_memory -- --journal sled --commits 400000`
//!
//! Each commit is one `Journal::append` of `--batch` (64) reserve entries
//! built once and renumbered; every `--every` (10,000) commits the journal
//! is truncated to its last `--keep` (1,000,000) entries and the process's
//! RSS is printed.

use std::time::Instant;

use inventory_core::Entry;
use inventory_journal::{Backend, Journal, Store};

#[path = "../benches/common/mod.rs"]
mod common;
use common::{reserve, seeded_shard};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SKUS: u64 = 10_000;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn rss_mb() -> f64 {
    inventory_bench::stats::rss_bytes("self") as f64 / (1 << 20) as f64
}

fn main() {
    let backend: Backend = arg("--journal").unwrap_or_else(|| "sled".into()).parse().expect("--journal sled|file");
    let batch: u64 = arg("--batch").map_or(64, |v| v.parse().expect("--batch N"));
    let commits: u64 = arg("--commits").map_or(400_000, |v| v.parse().expect("--commits N"));
    let every: u64 = arg("--every").map_or(10_000, |v| v.parse().expect("--every N"));
    let keep: u64 = arg("--keep").map_or(1_000_000, |v| v.parse().expect("--keep N"));
    let dir = match arg("--dir") {
        Some(parent) => tempfile::tempdir_in(parent),
        None => tempfile::tempdir(),
    }
    .expect("temp dir");

    let store = Store::open(dir.path(), Some(backend), Some(1), 1).expect("open journal");
    let mut journal = store.journal(0).expect("journal");

    let mut shard = seeded_shard(SKUS);
    let mut template: Vec<Entry> = (1..=batch)
        .map(|n| {
            let command = reserve(n, n.wrapping_mul(0x9E37_79B9_7F4A_7C15) % SKUS);
            let mut txns = Vec::new();
            shard.apply(2, &command, &mut txns);
            Entry { seq: n, at: 2, trace_id: 0, operator: "bench".into(), command, txns, cold: Default::default() }
        })
        .collect();
    drop(shard);

    let started = Instant::now();
    println!("{backend} journal, batches of {batch}, truncated to the last {keep} entries every {every} commits");
    println!("{:>12} {:>10} {:>9}", "entries", "seconds", "RSS MB");
    let mut seq = 0u64;
    for commit in 1..=commits {
        for entry in &mut template {
            seq += 1;
            entry.seq = seq;
        }
        journal.append(&template).expect("append");
        if commit % every == 0 {
            journal.truncate_before(seq.saturating_sub(keep) + 1).expect("truncate");
            println!("{seq:>12} {:>10.1} {:>9.1}", started.elapsed().as_secs_f64(), rss_mb());
        }
    }
}
