//! The workload: the catalogue, the operation mix, how SKUs are picked, and
//! the scenarios built from them. Deterministic for a given seed.

use std::time::Duration;

use serde::Serialize;

/// Largest quantity the service accepts in one receive by default
/// (`inventoryd --max-qty`); larger stock is seeded in several receives.
pub const RECEIVE_QTY_MAX: u64 = 1_000_000;

/// A small, fast, seedable generator (SplitMix64). Statistical quality is
/// ample for picking operations and SKUs; no crate needed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The kinds of request the harness sends during the measured phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Reserve,
    Confirm,
    Release,
    Query,
    /// An earlier order looked at again after minutes: its hold read back
    /// or its reserve retried with the same key (answered from the cold
    /// tier once those have left memory).
    Recall,
    /// An order of several lines reserved in one request
    /// (`POST /api/orders/{orderId}/reserve`, `--lines`).
    Order,
}

impl Op {
    pub const ALL: [Op; 6] = [Op::Reserve, Op::Confirm, Op::Release, Op::Query, Op::Recall, Op::Order];

    pub fn name(self) -> &'static str {
        match self {
            Op::Reserve => "reserve",
            Op::Confirm => "confirm",
            Op::Release => "release",
            Op::Query => "query",
            Op::Recall => "recall",
            Op::Order => "order",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// Shares of each operation, in percent (they sum to 100).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Mix {
    pub reserve: u32,
    pub confirm: u32,
    pub release: u32,
    pub query: u32,
    pub recall: u32,
}

impl Mix {
    /// The design document's order traffic: 70% reserves; the rest confirms
    /// and releases of earlier holds and stock queries. Of the holds that
    /// are settled most are confirmed (20 confirms to 4 releases); the
    /// others are left to expire.
    pub const ORDERS: Mix = Mix { reserve: 70, confirm: 20, release: 4, query: 6, recall: 0 };
    /// The order traffic of a long run: 2 points of the reserves become
    /// recalls of orders made minutes before.
    pub const SOAK: Mix = Mix { reserve: 68, confirm: 20, release: 4, query: 6, recall: 2 };
    /// Reserves only: the rate of durable reserves.
    pub const RESERVES: Mix = Mix { reserve: 100, confirm: 0, release: 0, query: 0, recall: 0 };

    pub fn pick(&self, rng: &mut Rng) -> Op {
        let x = rng.below(100) as u32;
        if x < self.reserve {
            Op::Reserve
        } else if x < self.reserve + self.confirm {
            Op::Confirm
        } else if x < self.reserve + self.confirm + self.release {
            Op::Release
        } else if x < self.reserve + self.confirm + self.release + self.query {
            Op::Query
        } else {
            Op::Recall
        }
    }
}

/// The SKUs of one run: `catalogue` regular SKUs (the first `hot` of them
/// hot) and one extra "flash" SKU used by the single-SKU scenarios. SKU ids
/// carry a per-run prefix so that runs against a long-lived target never
/// collide.
#[derive(Clone, Debug, Serialize)]
pub struct Catalogue {
    pub prefix: String,
    pub skus: u64,
    pub hot: u64,
    /// Share of SKU picks that go to the hot set.
    pub hot_share: f64,
    pub stock: u64,
    pub hot_stock: u64,
    pub flash_stock: u64,
}

impl Catalogue {
    /// Index of the flash SKU.
    pub fn flash(&self) -> u64 {
        self.skus
    }

    pub fn sku_id(&self, index: u64) -> String {
        if index == self.flash() {
            format!("{}flash", self.prefix)
        } else {
            format!("{}{index}", self.prefix)
        }
    }

    /// Stock seeded for an SKU.
    pub fn seeded(&self, index: u64) -> u64 {
        if index == self.flash() {
            self.flash_stock
        } else if index < self.hot {
            self.hot_stock
        } else {
            self.stock
        }
    }

    /// A SKU for regular traffic: a hot one with probability `hot_share`,
    /// otherwise uniform over the rest of the catalogue.
    pub fn pick(&self, rng: &mut Rng) -> u64 {
        let cold = self.skus - self.hot;
        if self.hot > 0 && (cold == 0 || rng.unit() < self.hot_share) {
            rng.below(self.hot)
        } else {
            self.hot + rng.below(cold)
        }
    }

    /// `n` distinct SKUs for the lines of one order, each picked as
    /// [`Catalogue::pick`] does (`n` at most the catalogue's size).
    pub fn pick_distinct(&self, rng: &mut Rng, n: usize) -> Vec<u64> {
        assert!(n as u64 <= self.skus, "{n} distinct SKUs from a catalogue of {}", self.skus);
        let mut picked = Vec::with_capacity(n);
        while picked.len() < n {
            let sku = self.pick(rng);
            if !picked.contains(&sku) {
                picked.push(sku);
            }
        }
        picked
    }
}

/// Named scenarios (the list).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Open loop at the document's peak: 30k QPS of order traffic.
    Peak,
    /// Open loop at twice the peak: 60k QPS (the document runs it 30 minutes).
    DoublePeak,
    /// Open loop at a base rate with a 10x burst of reserves on one SKU in
    /// the middle third of the run; the SKU sells out during the burst.
    HotBurst,
    /// Closed loop, every reserve on one SKU.
    HotOnly,
    /// Closed loop, uniform SKUs: saturation throughput.
    Max,
    /// Closed loop at saturation for a long time (default 10 minutes),
    /// sampling the target's resident memory and disk use as it goes.
    Soak,
    /// A limited drop: one SKU under a sale policy of a few units per
    /// buyer, a crowd of buyers ten times larger than the stock, half of
    /// them bots firing reserve after reserve. Closed loop; ends when every
    /// buyer has had their turn (or at `--duration`).
    Drop,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Peak => "peak",
            Scenario::DoublePeak => "double-peak",
            Scenario::HotBurst => "hot-burst",
            Scenario::HotOnly => "hot-only",
            Scenario::Max => "max",
            Scenario::Soak => "soak",
            Scenario::Drop => "drop",
        }
    }

    /// Default offered rate (requests per second) of the open-loop scenarios.
    pub fn default_rate(self) -> Option<f64> {
        match self {
            Scenario::Peak => Some(30_000.0),
            Scenario::DoublePeak => Some(60_000.0),
            Scenario::HotBurst => Some(3_000.0),
            Scenario::HotOnly | Scenario::Max | Scenario::Soak | Scenario::Drop => None,
        }
    }
}

/// How requests are issued.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Mode {
    /// A fixed arrival rate over all connections; latency from the intended
    /// send time.
    Open { rate: f64 },
    /// Each connection sends its next request when the previous one returns.
    Closed,
}

/// A burst of extra reserves on the flash SKU.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Burst {
    pub start: Duration,
    pub end: Duration,
    /// Extra arrival rate during the burst (requests per second).
    pub rate: f64,
}

/// The buyers of a `drop` and what each of them sends. Buyers take their
/// turn in order (one connection each at a time); odd-numbered buyers are
/// bots, so exactly half of them (rounded down) are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct DropPlan {
    pub buyers: u64,
    /// The sale policy's `maxPerBuyer`: units one buyer may hold.
    pub max_per_buyer: u64,
    /// A bot's reserves, fired back to back whatever the answer (a refusal
    /// is retried at once, a grant is followed by a try for more), each
    /// with a new order id and idempotency key.
    pub bot_attempts: u64,
    /// Units per bot reserve: one, the small orders bots use to slip under
    /// a per-order cap.
    pub bot_qty: u64,
    /// Units of an honest buyer's single reserve: the limit.
    pub honest_qty: u64,
}

impl DropPlan {
    pub fn is_bot(buyer: u64) -> bool {
        buyer % 2 == 1
    }

    pub fn bots(&self) -> u64 {
        self.buyers / 2
    }

    /// Units the buyers are after: the limit, per buyer.
    pub fn demand_units(&self) -> u64 {
        self.buyers * self.max_per_buyer
    }

    /// The stock of a drop by default: a tenth of the demand.
    pub fn default_stock(&self) -> u64 {
        (self.demand_units() / 10).max(1)
    }

    /// What `buyer` sends: `(reserves, units each)`.
    pub fn requests_of(&self, buyer: u64) -> (u64, u64) {
        if Self::is_bot(buyer) {
            (self.bot_attempts, self.bot_qty)
        } else {
            (1, self.honest_qty)
        }
    }
}

/// Everything the load generator needs to know about one measured phase.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    pub scenario: Scenario,
    pub mode: Mode,
    pub duration: Duration,
    pub mix: Mix,
    /// Every reserve (and query) goes to the flash SKU.
    pub flash_only: bool,
    pub burst: Option<Burst>,
    pub qty: u64,
    pub hold_ttl_secs: u64,
    pub seed: u64,
    /// Lines of each order: 1 sends single-line reserves
    /// (`POST /api/inventory/reserve`), more sends orders
    /// (`POST /api/orders/{orderId}/reserve`) of that many distinct SKUs.
    pub lines: usize,
    /// The buyers of a `drop`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drop: Option<DropPlan>,
}

impl Plan {
    /// Expected number of burst reserves (for sizing the flash SKU's stock).
    pub fn burst_demand(&self) -> u64 {
        self.burst.map(|b| (b.rate * (b.end - b.start).as_secs_f64()) as u64 * self.qty).unwrap_or(0)
    }
}

/// Splits `qty` into receives the service accepts.
pub fn receive_chunks(qty: u64) -> impl Iterator<Item = u64> {
    let full = qty / RECEIVE_QTY_MAX;
    let rest = qty % RECEIVE_QTY_MAX;
    std::iter::repeat_n(RECEIVE_QTY_MAX, full as usize).chain((rest > 0).then_some(rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_shares_match_the_percentages() {
        let mut rng = Rng::new(7);
        let mut counts = [0u32; Op::ALL.len()];
        for _ in 0..100_000 {
            counts[Mix::ORDERS.pick(&mut rng).index()] += 1;
        }
        assert_eq!(counts[Op::Recall.index()], 0);
        let share = |i: usize| counts[i] as f64 / 1000.0;
        assert!((share(0) - 70.0).abs() < 1.0, "{counts:?}");
        assert!((share(1) - 20.0).abs() < 1.0, "{counts:?}");
        assert!((share(2) - 4.0).abs() < 0.5, "{counts:?}");
        assert!((share(3) - 6.0).abs() < 0.5, "{counts:?}");
    }

    #[test]
    fn the_soak_mix_recalls_two_percent() {
        let mut rng = Rng::new(7);
        let mut counts = [0u32; Op::ALL.len()];
        for _ in 0..100_000 {
            counts[Mix::SOAK.pick(&mut rng).index()] += 1;
        }
        let share = |op: Op| counts[op.index()] as f64 / 1000.0;
        assert!((share(Op::Reserve) - 68.0).abs() < 1.0, "{counts:?}");
        assert!((share(Op::Recall) - 2.0).abs() < 0.3, "{counts:?}");
    }

    #[test]
    fn hot_skus_take_their_share() {
        let cat = Catalogue {
            prefix: "s-".into(),
            skus: 10_000,
            hot: 10,
            hot_share: 0.15,
            stock: 1,
            hot_stock: 1,
            flash_stock: 1,
        };
        let mut rng = Rng::new(1);
        let n = 100_000;
        let hot = (0..n).filter(|_| cat.pick(&mut rng) < 10).count();
        assert!((hot as f64 / n as f64 - 0.15).abs() < 0.01, "{hot}");
        assert_eq!(cat.sku_id(cat.flash()), "s-flash");
        assert_eq!(cat.sku_id(3), "s-3");
    }

    #[test]
    fn order_lines_are_distinct_skus() {
        let cat =
            Catalogue { prefix: "s-".into(), skus: 4, hot: 1, hot_share: 0.9, stock: 1, hot_stock: 1, flash_stock: 1 };
        let mut rng = Rng::new(3);
        for _ in 0..1_000 {
            let mut lines = cat.pick_distinct(&mut rng, 3);
            lines.sort_unstable();
            lines.dedup();
            assert_eq!(lines.len(), 3);
            assert!(lines.iter().all(|&s| s < 4));
        }
        assert_eq!(cat.pick_distinct(&mut rng, 4).len(), 4);
    }

    #[test]
    fn half_the_drop_buyers_are_bots() {
        let plan = DropPlan { buyers: 100_000, max_per_buyer: 2, bot_attempts: 4, bot_qty: 1, honest_qty: 2 };
        assert_eq!((0..plan.buyers).filter(|&b| DropPlan::is_bot(b)).count() as u64, plan.bots());
        assert_eq!(plan.bots(), 50_000);
        assert_eq!(plan.demand_units(), 200_000);
        assert_eq!(plan.default_stock(), 20_000);
        assert_eq!(plan.requests_of(0), (1, 2));
        assert_eq!(plan.requests_of(1), (4, 1));
    }

    #[test]
    fn receives_are_split_at_the_service_limit() {
        assert_eq!(receive_chunks(2_500_000).collect::<Vec<_>>(), vec![1_000_000, 1_000_000, 500_000]);
        assert_eq!(receive_chunks(5).collect::<Vec<_>>(), vec![5]);
        assert_eq!(receive_chunks(0).count(), 0);
    }
}
