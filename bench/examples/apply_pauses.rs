//! The longest pauses of a shard loop's core while its holds and
//! idempotency records grow, on one thread with no I/O: `--skus` SKUs
//! received one command each (each leaves an idempotency record, as a
//! catalogue seeded through the receive endpoint does), then `--reserves`
//! reserves, each a new order line with a new key, on SKUs picked at random.
//! Commands are applied in batches of `--batch` inside begin/commit, as the
//! shard loop applies them, and each batch is timed. Reports the time per
//! command, the longest batches, and how many took over 1, 10 and 100 ms:
//! a batch that long holds every request queued behind it. Transparent huge
//! pages are off, as in `inventoryd` once it has recovered.
//!
//! `cargo run --release -p inventory-bench --example apply_pauses -- --skus 1000000 --reserves 2000000 --batch 16`

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::{Duration, Instant};

use inventory_core::{Command, Receive, Reserve, Shard, ShardConfig, DEFAULT_WAREHOUSE, HOUR_MS};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Batch times of one phase.
#[derive(Default)]
struct Pauses {
    commands: u64,
    total: Duration,
    batches: Vec<Duration>,
}

impl Pauses {
    fn report(mut self, phase: &str) {
        self.batches.sort_unstable();
        let over = |ms: u64| self.batches.iter().filter(|d| **d > Duration::from_millis(ms)).count();
        let longest: Vec<String> =
            self.batches.iter().rev().take(5).map(|d| format!("{:.1}", d.as_secs_f64() * 1e3)).collect();
        println!(
            "{phase}: {} commands, {:.0} ns each; batches over 1 ms: {}, over 10 ms: {}, over 100 ms: {}; longest (ms): {}",
            self.commands,
            self.total.as_nanos() as f64 / self.commands.max(1) as f64,
            over(1),
            over(10),
            over(100),
            longest.join(" "),
        );
    }
}

fn run(shard: &mut Shard, commands: impl Iterator<Item = Command>, batch: usize, at: &mut u64) -> Pauses {
    let mut pauses = Pauses::default();
    let mut txns = Vec::new();
    let mut commands = commands.peekable();
    while commands.peek().is_some() {
        let chunk: Vec<Command> = commands.by_ref().take(batch).collect();
        *at += 1;
        let started = Instant::now();
        shard.begin_batch();
        for command in &chunk {
            txns.clear();
            let applied = shard.apply(*at, command, &mut txns);
            assert!(applied.changed, "{:?}", applied.outcome);
        }
        shard.commit_batch();
        let took = started.elapsed();
        pauses.commands += chunk.len() as u64;
        pauses.total += took;
        pauses.batches.push(took);
    }
    pauses
}

fn main() {
    let skus = arg("--skus", 1_000_000);
    let reserves = arg("--reserves", 2_000_000);
    let batch = arg("--batch", 16) as usize;
    // As inventoryd runs once it has recovered.
    inventory_runtime::disable_transparent_huge_pages();
    let mut shard = Shard::new(ShardConfig::new(0));
    let mut at = 1_700_000_000_000;
    let receipts = (0..skus).map(|i| {
        Command::Receive(Receive {
            sku_id: format!("SKU-{i:09}"),
            warehouse_id: DEFAULT_WAREHOUSE.into(),
            qty: 1_000_000,
            idem_key: format!("seed:{i}:receive"),
            reference: String::new(),
        })
    });
    run(&mut shard, receipts, batch, &mut at).report("receive");
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let holds = (0..reserves).map(|n| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        Command::Reserve(Reserve {
            order_id: format!("o-{n}"),
            sku_id: format!("SKU-{:09}", x % skus),
            warehouse_id: DEFAULT_WAREHOUSE.into(),
            qty: 1,
            idem_key: format!("t1:o-{n}:reserve"),
            // Nothing expires during the run.
            ttl_ms: 24 * HOUR_MS,
            ttl_explicit: true,
        })
    });
    run(&mut shard, holds, batch, &mut at).report("reserve");
    let stats = shard.stats();
    println!("held: {} holds, {} idempotency records", stats.holds, stats.idempotency_keys);
}
