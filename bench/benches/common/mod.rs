//! Shards and commands shared by the core micro-benchmarks
//! (`benches/core.rs`) and the examples that measure the same things in
//! other ways (`examples/journal_commits.rs`), so both build the same state.

use inventory_core::{Command, Millis, Receive, Reserve, Shard, ShardConfig, DEFAULT_WAREHOUSE, HOUR_MS};

/// Holds outlive any run, so nothing expires while measuring.
pub const HOLD_TTL_MS: Millis = 24 * HOUR_MS;

pub fn sku(i: u64) -> String {
    format!("sku-{i}")
}

/// A shard holding `skus` SKUs with plenty of stock each.
pub fn seeded_shard(skus: u64) -> Shard {
    let mut shard = Shard::new(ShardConfig::new(0));
    let mut txns = Vec::new();
    for i in 0..skus {
        let receive = Command::Receive(Receive {
            sku_id: sku(i),
            warehouse_id: DEFAULT_WAREHOUSE.to_string(),
            qty: 1_000_000_000,
            idem_key: format!("seed:{i}"),
            reference: String::new(),
        });
        txns.clear();
        shard.apply(1, &receive, &mut txns);
    }
    shard
}

/// Reserve one unit of SKU `sku_index` for order `o-<n>`.
pub fn reserve(n: u64, sku_index: u64) -> Command {
    Command::Reserve(Reserve {
        order_id: format!("o-{n}"),
        sku_id: sku(sku_index),
        warehouse_id: DEFAULT_WAREHOUSE.to_string(),
        qty: 1,
        idem_key: format!("t1:o-{n}:reserve"),
        ttl_ms: HOLD_TTL_MS,
        ttl_explicit: true,
    })
}
