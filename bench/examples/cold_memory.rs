//! The cold tier's resident memory as its store fills: a shard with the
//! service's hot windows (60 s holds, 300 s keys) reserves and confirms,
//! evicts what ages out, and its journal entries are taken by a cold store
//! as the service's follower takes them, with no HTTP and no journal, so
//! what grows is the shard's filters or the store.
//!
//! `cargo run --release -p inventory-bench --example cold_memory -- --reserves 20000000`
//!
//! Simulated time advances one millisecond per reserve (1,000 reserves/s,
//! so nothing reaches the end of its retention). After every 1,000
//! reserves, `--reads` (20) orders from over 400 s before are read back
//! from the store with their reserve's idempotency record, as the soak's
//! recalls do. Every `--every`
//! (1,000,000) reserves it prints the process's RSS, the shard's filter
//! memory and the store's size on disk.

use std::time::Instant;

use inventory_cold::ColdStore;
use inventory_core::{
    key_hash, ColdFacts, Command, Confirm, Entry, Evict, Outcome, Shard, TierConfig, IDEMPOTENCY_TTL_MS,
};

#[path = "../benches/common/mod.rs"]
mod common;
use common::{reserve, seeded_shard};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SKUS: u64 = 100_000;
const HOT_HOLDS_MS: u64 = 60_000;
const HOT_KEYS_MS: u64 = 300_000;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn rss_mb() -> f64 {
    inventory_bench::stats::rss_bytes("self") as f64 / (1 << 20) as f64
}

fn main() {
    let reserves = arg("--reserves", 20_000_000);
    let every = arg("--every", 1_000_000);
    let reads = arg("--reads", 20);
    let dir = tempfile::tempdir().expect("temp dir");
    let store = ColdStore::open(dir.path(), TierConfig::default(), IDEMPOTENCY_TTL_MS).expect("open cold store");
    let mut shard = seeded_shard(SKUS);
    let mut seq = 0u64;
    let mut pending: Vec<Entry> = Vec::new();
    let mut apply = |shard: &mut Shard, at: u64, command: Command, pending: &mut Vec<Entry>| {
        let mut txns = Vec::new();
        let applied = match shard.apply_with(at, &command, &ColdFacts::NONE, &mut txns) {
            Ok(applied) => applied,
            Err(needs) => {
                // A filter's false positive: the store answers, as in the service.
                let facts = ColdFacts {
                    key: needs.key.map(|k| (k, store.idem(k, at).expect("idem lookup"))),
                    hold: needs.hold.map(|s| (s, store.hold(s).expect("hold lookup"))),
                    order: needs.order.map(|o| {
                        let holds = store.order(&o).expect("order lookup");
                        (o, holds)
                    }),
                };
                shard.apply_with(at, &command, &facts, &mut txns).expect("facts given")
            }
        };
        seq += 1;
        pending.push(Entry { seq, at, trace_id: 0, operator: String::new(), command, txns, cold: Default::default() });
        applied
    };

    let base = rss_mb();
    println!("{:>11} {:>8} {:>9} {:>11} {:>9}", "reserves", "seconds", "RSS MB", "filters MB", "disk MB");
    let started = Instant::now();
    for n in 1..=reserves {
        let at = 1_000 + n;
        let applied = apply(&mut shard, at, reserve(n, n % SKUS), &mut pending);
        let Outcome::Reserved { reservation_id, .. } = applied.outcome else { panic!("{:?}", applied.outcome) };
        let confirm = Command::Confirm(Confirm {
            reservation_id,
            payment_id: format!("pay-{n}"),
            idem_key: format!("t1:o-{n}:confirm"),
        });
        apply(&mut shard, at, confirm, &mut pending);
        if n % 1_000 == 0 {
            let evict = Command::Evict(Evict {
                holds_before: at.saturating_sub(HOT_HOLDS_MS),
                keys_before: at.saturating_sub(HOT_KEYS_MS),
            });
            apply(&mut shard, at, evict, &mut pending);
            store.take(&pending).expect("take");
            pending.clear();
            for r in 0..reads.min(n.saturating_sub(400_000)) {
                // Older orders, spread over what the store holds.
                let m = 1 + (n - 400_000).wrapping_mul(r + 1).wrapping_mul(0x9E37_79B9) % (n - 400_000);
                let holds = store.order(&format!("o-{m}")).expect("order lookup");
                assert_eq!(holds.len(), 1, "order o-{m} has its hold in the store");
                let record = store.idem(key_hash(&format!("t1:o-{m}:reserve")), at).expect("idem lookup");
                assert!(record.is_some(), "order o-{m}'s reserve key is in the store");
            }
        }
        if n % 100_000 == 0 {
            store.persist().expect("persist");
        }
        if n % every == 0 {
            let stats = shard.stats();
            println!(
                "{n:>11} {:>8.1} {:>9.1} {:>11.1} {:>9.1}",
                started.elapsed().as_secs_f64(),
                rss_mb() - base,
                stats.cold_filter_bytes as f64 / (1 << 20) as f64,
                store.stats().bytes_on_disk as f64 / (1 << 20) as f64,
            );
        }
    }
}
