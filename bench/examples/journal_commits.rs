//! The cost of a journal group commit, counted as well as timed: wall time,
//! the CPU of the whole process and of the appending thread, and the
//! appending thread's voluntary context switches (each a wait: for the data
//! write, for an inode write, for the disk's cache flush), per commit.
//! Switches do not depend on how busy the machine is, which the times do.
//!
//! `cargo run --release -p inventory-bench --example journal_commits -- --journal sled --batch 16 --commits 5000`
//!
//! Each commit is one `Journal::append` of `--batch` reserve entries with
//! their txns, flushed, on a fresh journal of the given kind in a temporary
//! directory under `--dir` (default: the system's temporary directory).

use std::time::{Duration, Instant};

use inventory_bench::stats::rusage;
use inventory_core::Entry;
use inventory_journal::{Backend, Journal, Store};

#[path = "../benches/common/mod.rs"]
mod common;
use common::{reserve, seeded_shard};

const SKUS: u64 = 10_000;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let backend: Backend = arg("--journal").unwrap_or_else(|| "sled".into()).parse().expect("--journal sled|file");
    let batch: usize = arg("--batch").map_or(16, |v| v.parse().expect("--batch N"));
    let commits: usize = arg("--commits").map_or(5_000, |v| v.parse().expect("--commits N"));
    let dir = match arg("--dir") {
        Some(parent) => tempfile::tempdir_in(parent),
        None => tempfile::tempdir(),
    }
    .expect("temp dir");

    let store = Store::open(dir.path(), Some(backend), Some(1), 1).expect("open journal");
    let mut journal = store.journal(0).expect("journal");

    let mut shard = seeded_shard(SKUS);

    let mut seq = 0u64;
    let mut walls = Vec::with_capacity(commits);
    let mut order = 0u64;
    let (process_before, _) = rusage(libc::RUSAGE_SELF);
    let (thread_before, switches_before) = rusage(libc::RUSAGE_THREAD);
    let started = Instant::now();
    for _ in 0..commits {
        let entries: Vec<Entry> = (0..batch)
            .map(|_| {
                order += 1;
                seq += 1;
                let command = reserve(order, order.wrapping_mul(0x9E37_79B9_7F4A_7C15) % SKUS);
                let mut txns = Vec::new();
                shard.apply(2, &command, &mut txns);
                Entry { seq, at: 2, trace_id: 0, operator: "bench".into(), command, txns, cold: Default::default() }
            })
            .collect();
        let start = Instant::now();
        journal.append(&entries).expect("append");
        walls.push(start.elapsed());
    }
    let total = started.elapsed();
    let (process_after, _) = rusage(libc::RUSAGE_SELF);
    let (thread_after, switches_after) = rusage(libc::RUSAGE_THREAD);

    walls.sort();
    let per = |d: Duration| d.as_secs_f64() * 1e6 / commits as f64;
    println!(
        "{backend} journal, {commits} commits of {batch} entries: wall per commit p50 {:.1} us, p99 {:.1} us, max {:.1} us; \
         CPU per commit (whole run, entries built too): process {:.1} us, appending thread {:.1} us; \
         voluntary switches of the appending thread per commit {:.2}; {:.0} commits/s",
        walls[commits / 2].as_secs_f64() * 1e6,
        walls[commits * 99 / 100].as_secs_f64() * 1e6,
        walls[commits - 1].as_secs_f64() * 1e6,
        per(process_after - process_before),
        per(thread_after - thread_before),
        (switches_after - switches_before) as f64 / commits as f64,
        commits as f64 / total.as_secs_f64(),
    );
}
