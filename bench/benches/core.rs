//! Core micro-benchmarks (criterion): single-thread shard apply throughput
//! (reserves per second, no I/O) over a catalogue of 1M SKUs, and 50M when
//! `INVENTORY_BENCH_50M=1` (about 10 GB of memory and minutes of set-up);
//! and the cost of one journal group commit (sled, flushed) at several batch
//! sizes.
//!
//! `cargo bench -p inventory-bench --bench core`

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use inventory_core::{Command, Entry, Millis};
use inventory_journal::{Backend, Journal, Store};

mod common;
use common::{reserve, seeded_shard};

/// Reserves generated per chunk outside the timed section.
const CHUNK: usize = 16_384;

struct Xorshift(u64);

impl Xorshift {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn shard_apply(c: &mut Criterion) {
    let mut sizes = vec![1_000_000u64];
    if std::env::var("INVENTORY_BENCH_50M").is_ok_and(|v| v == "1") {
        sizes.push(50_000_000);
    }
    let mut group = c.benchmark_group("shard_apply_reserve");
    group.throughput(Throughput::Elements(1));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(10));
    for skus in sizes {
        let mut shard = seeded_shard(skus);
        let mut rng = Xorshift(0x2545_F491_4F6C_DD1D);
        let mut order = 0u64;
        let mut at: Millis = 2;
        let mut txns = Vec::with_capacity(4);
        group.bench_with_input(
            BenchmarkId::from_parameter(format!("{}M_skus", skus / 1_000_000)),
            &skus,
            |b, &skus| {
                b.iter_custom(|iters| {
                    let mut elapsed = Duration::ZERO;
                    let mut left = iters as usize;
                    while left > 0 {
                        let n = left.min(CHUNK);
                        let commands: Vec<Command> = (0..n)
                            .map(|_| {
                                order += 1;
                                reserve(order, rng.below(skus))
                            })
                            .collect();
                        let start = Instant::now();
                        for command in &commands {
                            txns.clear();
                            let applied = shard.apply(at, command, &mut txns);
                            debug_assert!(applied.changed);
                        }
                        elapsed += start.elapsed();
                        at += 1;
                        left -= n;
                    }
                    elapsed
                })
            },
        );
    }
    group.finish();
}

fn journal_group_commit(c: &mut Criterion) {
    for backend in Backend::ALL {
        group_commit(c, backend);
    }
}

/// One append of a batch of reserve entries, flushed, on a journal of the
/// given kind: `journal_group_commit` (sled) and `journal_group_commit_file`.
fn group_commit(c: &mut Criterion, backend: Backend) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path(), Some(backend), Some(1), 1).expect("open journal");
    let mut journal = store.journal(0).expect("journal");
    // Realistic entries: reserves applied to a small shard, with their txns.
    let mut shard = seeded_shard(10_000);
    let mut rng = Xorshift(0x9E37_79B9_7F4A_7C15);
    let template: Vec<Entry> = (1..=1024u64)
        .map(|n| {
            let command = reserve(n, rng.below(10_000));
            let mut txns = Vec::new();
            shard.apply(2, &command, &mut txns);
            Entry { seq: 0, at: 2, trace_id: 0, operator: "bench".into(), command, txns, cold: Default::default() }
        })
        .collect();
    let mut seq = 0u64;
    let name = match backend {
        Backend::Sled => "journal_group_commit".to_string(),
        other => format!("journal_group_commit_{other}"),
    };
    let mut group = c.benchmark_group(name);
    group.sample_size(20);
    for batch in [1usize, 16, 64, 256, 1024] {
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, &batch| {
            b.iter_custom(|iters| {
                let mut elapsed = Duration::ZERO;
                for _ in 0..iters {
                    let entries: Vec<Entry> = template[..batch]
                        .iter()
                        .map(|e| {
                            seq += 1;
                            Entry { seq, ..e.clone() }
                        })
                        .collect();
                    let start = Instant::now();
                    journal.append(&entries).expect("append");
                    elapsed += start.elapsed();
                }
                elapsed
            })
        });
    }
    group.finish();
}

criterion_group!(benches, shard_apply, journal_group_commit);
criterion_main!(benches);
