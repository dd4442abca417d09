//! The core's side of the cold tier.
//!
//! A shard keeps in memory its stock rows, its live holds, and only the
//! finished holds and idempotency records younger than a short window. An
//! [`Evict`](crate::Evict) command, journaled like any other, moves older
//! ones out: the shard forgets them and notes each one's key in a filter of
//! its time slice ([`SliceFilters`]). Their records live on in the cold tier,
//! a store built from the journal outside the core (the records it holds are
//! derived from journal entries by [`cold_changes`]).
//!
//! A command that needs a record the shard no longer holds (a retry under an
//! old key, a payment callback for an old hold, a reserve for an order line
//! with an old hold) is answered by [`Shard::apply_with`] with the
//! [`ColdQuery`] of what it needs, and nothing changes. The caller looks the
//! records up and applies the command again with the [`ColdFacts`] found;
//! the facts are journaled with the entry, so replay decides the same
//! without the cold tier. Where the records live never changes a decision:
//! the facts are exactly the records the shard held.
//!
//! A key that was never evicted passes its filter with probability about 1%
//! (10 bits a key), so deciding that a key, an order or a hold is new costs
//! no lookup for 99% of requests.
//!
//! [`Shard::apply_with`]: crate::Shard::apply_with

use std::collections::BTreeMap;

use crate::command::Command;
use crate::ids::REASON_TIMEOUT;
use crate::ids::{key_hash, Millis, ReservationId};
use crate::image::IdemImage;
use crate::ops::{AdjustmentStatus, TransferStatus};
use crate::outcome::{Outcome, Rejection};
use crate::state::{Entry, ReservationStatus, ReservationView, TxnKind};

/// An idempotency record as the cold tier keeps it.
pub type ColdIdem = IdemImage;

/// A hold as the cold tier keeps it: everything a query or a decision reads.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ColdHold {
    pub seq: u64,
    pub order_id: String,
    pub sku_id: String,
    pub warehouse_id: String,
    pub qty: u64,
    pub expire_at: Millis,
    pub idem_key: String,
    pub created_at: Millis,
    pub status: ReservationStatus,
    pub updated_at: Millis,
    /// The payment of a `CONFIRMED` hold, the reason of a `RELEASED` or
    /// `EXPIRED` one.
    pub detail: Option<String>,
}

impl ColdHold {
    /// Whether queries and decisions still see the hold at `at`: a finished
    /// hold is kept [`HOLD_RETENTION_MS`](crate::HOLD_RETENTION_MS) after it
    /// finished.
    pub fn visible(&self, at: Millis) -> bool {
        self.status == ReservationStatus::Reserved
            || at < self.updated_at.saturating_add(crate::shard::HOLD_RETENTION_MS)
    }

    pub fn payment_id(&self) -> Option<&str> {
        self.detail.as_deref().filter(|_| self.status == ReservationStatus::Confirmed)
    }

    /// The record of a hold as a query shows it.
    pub fn of_view(view: ReservationView) -> ColdHold {
        ColdHold {
            seq: view.reservation_id.seq(),
            order_id: view.order_id,
            sku_id: view.sku_id,
            warehouse_id: view.warehouse_id,
            qty: view.qty,
            expire_at: view.expire_at,
            idem_key: view.idem_key,
            created_at: view.created_at,
            status: view.status,
            updated_at: view.updated_at,
            detail: view.payment_id.or(view.release_reason),
        }
    }

    pub fn view(&self, shard: u16) -> ReservationView {
        let release_reason = matches!(self.status, ReservationStatus::Released | ReservationStatus::Expired)
            .then(|| self.detail.clone())
            .flatten();
        ReservationView {
            reservation_id: ReservationId::new(shard, self.seq),
            order_id: self.order_id.clone(),
            sku_id: self.sku_id.clone(),
            warehouse_id: self.warehouse_id.clone(),
            qty: self.qty,
            status: self.status,
            expire_at: self.expire_at,
            idem_key: self.idem_key.clone(),
            created_at: self.created_at,
            updated_at: self.updated_at,
            payment_id: self.payment_id().map(str::to_string),
            release_reason,
        }
    }
}

/// What a command needs from the cold tier before the shard can decide it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ColdQuery {
    /// The idempotency record of this key hash.
    pub key: Option<u128>,
    /// The hold of this reservation sequence.
    pub hold: Option<u64>,
    /// The holds of this order.
    pub order: Option<String>,
}

impl ColdQuery {
    pub fn is_empty(&self) -> bool {
        self.key.is_none() && self.hold.is_none() && self.order.is_none()
    }
}

/// What the cold tier held for a [`ColdQuery`]: each part answered
/// (`Some`), with the record or its absence. Journaled with the entry of
/// the command that used it.
#[derive(Clone, Debug, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ColdFacts {
    pub key: Option<(u128, Option<ColdIdem>)>,
    pub hold: Option<(u64, Option<ColdHold>)>,
    pub order: Option<(String, Vec<ColdHold>)>,
}

impl ColdFacts {
    /// No facts: what a command is applied with first.
    pub const NONE: ColdFacts = ColdFacts { key: None, hold: None, order: None };

    pub fn is_empty(&self) -> bool {
        self.key.is_none() && self.hold.is_none() && self.order.is_none()
    }

    /// The answer about `key`, if the facts have one: `Some(None)` when the
    /// cold tier had no record.
    pub(crate) fn key(&self, key: u128) -> Option<Option<&ColdIdem>> {
        self.key.as_ref().filter(|(k, _)| *k == key).map(|(_, r)| r.as_ref())
    }

    pub(crate) fn hold(&self, seq: u64) -> Option<Option<&ColdHold>> {
        self.hold.as_ref().filter(|(s, _)| *s == seq).map(|(_, h)| h.as_ref())
    }

    pub(crate) fn order(&self, order_id: &str) -> Option<&[ColdHold]> {
        self.order.as_ref().filter(|(o, _)| o == order_id).map(|(_, holds)| holds.as_slice())
    }
}

// ----- filters ---------------------------------------------------------------

/// Bits a key takes in a filter: about 1% false positives with
/// [`PROBES`] probes.
const BITS_PER_KEY: usize = 10;
const PROBES: u32 = 7;
const BLOCK_BITS: u64 = 512;

/// A blocked Bloom filter: each key sets [`PROBES`] bits within one 64-byte
/// block, so a lookup touches one cache line. It holds up to `capacity`
/// keys at the designed false-positive rate.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct KeyFilter {
    blocks: Vec<[u64; 8]>,
    keys: u32,
    capacity: u32,
}

impl KeyFilter {
    pub fn new(capacity: u32) -> KeyFilter {
        let bits = (capacity.max(1) as usize) * BITS_PER_KEY;
        let blocks = bits.div_ceil(BLOCK_BITS as usize);
        KeyFilter { blocks: vec![[0; 8]; blocks], keys: 0, capacity: capacity.max(1) }
    }

    pub fn is_full(&self) -> bool {
        self.keys >= self.capacity
    }

    /// The block and the bits of a key given as two independent 64-bit
    /// hashes.
    fn probes(&self, (h1, h2): (u64, u64)) -> (usize, impl Iterator<Item = u64>) {
        let block = ((h1 as u128 * self.blocks.len() as u128) >> 64) as usize;
        let bits = (0..PROBES).map(move |i| (h2.rotate_left(i * 9)) % BLOCK_BITS);
        (block, bits)
    }

    pub fn insert(&mut self, hashes: (u64, u64)) {
        let (block, bits) = self.probes(hashes);
        let block = &mut self.blocks[block];
        for bit in bits {
            block[(bit / 64) as usize] |= 1 << (bit % 64);
        }
        self.keys += 1;
    }

    pub fn may_contain(&self, hashes: (u64, u64)) -> bool {
        let (block, mut bits) = self.probes(hashes);
        let block = &self.blocks[block];
        bits.all(|bit| block[(bit / 64) as usize] & (1 << (bit % 64)) != 0)
    }

    pub fn bytes(&self) -> usize {
        self.blocks.len() * 64
    }
}

/// Two independent 64-bit hashes of a key: a 128-bit key hash is split; a
/// 64-bit one is mixed (splitmix64) for the second.
pub fn hashes_of_u128(key: u128) -> (u64, u64) {
    (key as u64, (key >> 64) as u64)
}

pub fn hashes_of_u64(key: u64) -> (u64, u64) {
    let mut z = key.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    let mixed = z ^ (z >> 31);
    (mixed, key)
}

/// Filters of evicted keys by time slice: a key is filed under the slice
/// in which its record's retention ends, and a slice is dropped whole once
/// every record in it has reached the end of its retention.
#[derive(Clone, Debug, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct SliceFilters {
    /// Slice number (`retention end / slice_ms`) -> its filters, each full
    /// but the last.
    slices: BTreeMap<u64, Vec<KeyFilter>>,
}

impl SliceFilters {
    pub fn insert(&mut self, hashes: (u64, u64), retention_end: Millis, tiers: &TierConfig) {
        let filters = self.slices.entry(retention_end / tiers.slice_ms).or_default();
        if filters.last().is_none_or(KeyFilter::is_full) {
            filters.push(KeyFilter::new(tiers.filter_keys));
        }
        filters.last_mut().expect("pushed").insert(hashes);
    }

    /// Whether a key whose retention has not ended at `at` may be in here.
    pub fn may_contain(&self, hashes: (u64, u64), at: Millis, tiers: &TierConfig) -> bool {
        self.slices.range(at / tiers.slice_ms..).any(|(_, filters)| filters.iter().any(|f| f.may_contain(hashes)))
    }

    /// Drops the slices whose every record's retention ended by `at`.
    pub fn drop_before(&mut self, at: Millis, tiers: &TierConfig) -> usize {
        let keep = self.slices.split_off(&(at / tiers.slice_ms));
        let dropped = self.slices.len();
        self.slices = keep;
        dropped
    }

    pub fn bytes(&self) -> usize {
        self.slices.values().flatten().map(KeyFilter::bytes).sum()
    }

    pub fn keys(&self) -> u64 {
        self.slices.values().flatten().map(|f| f.keys as u64).sum()
    }
}

/// How a shard's filters are cut: the width of a time slice, and the keys
/// one filter holds before another is started in its slice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TierConfig {
    pub slice_ms: Millis,
    pub filter_keys: u32,
}

impl Default for TierConfig {
    fn default() -> Self {
        TierConfig { slice_ms: 12 * crate::ids::HOUR_MS, filter_keys: 1 << 20 }
    }
}

// ----- what the cold tier stores ---------------------------------------------

/// A change to the cold tier's records that a journal entry makes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ColdChange {
    /// A hold, created or finished, as the shard now holds it.
    Hold(ColdHold),
    /// The idempotency record the shard kept for the entry's command.
    Idem(ColdIdem),
}

/// A finish of a hold the cold tier has no record of: it was created before
/// the cold tier's first entry, and the cold tier was not seeded with the
/// shard's holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownHold(pub u64);

/// The records a journal entry creates or changes, as the shard that
/// applied it holds them. `hold(seq)` is the cold tier's current record of
/// a hold: a finish is recorded on top of the hold's creation. Entries must
/// be handed over in journal order.
pub fn cold_changes(
    idempotency_ttl_ms: Millis,
    entry: &Entry,
    hold: impl Fn(u64) -> Option<ColdHold>,
) -> Result<Vec<ColdChange>, UnknownHold> {
    let at = entry.at;
    let mut changes = Vec::new();
    let mut outcome = None;
    for txn in &entry.txns {
        match txn.kind {
            TxnKind::Receive => {
                if let Command::Receive(_) = &entry.command {
                    outcome = Some(Outcome::Received { levels: txn.after, version: txn.version, updated_at: txn.at });
                }
            }
            TxnKind::Reserve => {
                let id: ReservationId = txn.ref_id.parse().expect("a reserve's txn names its hold");
                let (expire_at, idem_key) = match &entry.command {
                    Command::PrepareOrder(c) => (c.expire_at, &c.idem_key),
                    command => {
                        let c = command.as_reserve().expect("only a reserve or an order makes a hold");
                        (at.saturating_add(c.ttl_ms), &c.idem_key)
                    }
                };
                changes.push(ColdChange::Hold(ColdHold {
                    seq: id.seq(),
                    order_id: txn.order_id.clone(),
                    sku_id: txn.sku_id.clone(),
                    warehouse_id: txn.warehouse_id.clone(),
                    qty: txn.qty,
                    expire_at,
                    idem_key: idem_key.clone(),
                    created_at: at,
                    status: ReservationStatus::Reserved,
                    updated_at: at,
                    detail: None,
                }));
                outcome = Some(match (&entry.command, outcome) {
                    (Command::PrepareOrder(c), None) => {
                        Outcome::OrderPrepared { first: id, lines: c.lines.len() as u16, expire_at }
                    }
                    (Command::PrepareOrder(_), Some(first)) => first,
                    _ => Outcome::Reserved { reservation_id: id, expire_at },
                });
            }
            TxnKind::Confirm | TxnKind::Release => {
                let id: ReservationId = txn.ref_id.parse().expect("a hold's txn names it");
                let mut held = hold(id.seq()).ok_or(UnknownHold(id.seq()))?;
                let status = match (txn.kind, &entry.command) {
                    (TxnKind::Confirm, _) => ReservationStatus::Confirmed,
                    (_, Command::Release(_)) if at < held.expire_at => ReservationStatus::Released,
                    (_, Command::FinishOrder(c)) if c.state != crate::OrderState::Expired => {
                        ReservationStatus::Released
                    }
                    (_, Command::FinishOrder(_)) => ReservationStatus::Expired,
                    // An order's home releases its lines as expired with the
                    // timeout's reason, and no release of an order may give
                    // that reason.
                    (_, Command::DecideOrder(_)) if txn.detail != REASON_TIMEOUT => ReservationStatus::Released,
                    _ => ReservationStatus::Expired,
                };
                held.status = status;
                held.updated_at = at;
                held.detail = Some(txn.detail.clone());
                outcome = Some(match (&entry.command, status) {
                    (Command::Confirm(_), ReservationStatus::Confirmed) => Outcome::Confirmed { reservation_id: id },
                    (Command::Confirm(_), _) => Outcome::Rejected(Rejection::ReservationExpired),
                    _ => Outcome::Released { reservation_id: id, status },
                });
                changes.push(ColdChange::Hold(held));
            }
            TxnKind::Freeze | TxnKind::Unfreeze => {
                let rows = match outcome {
                    Some(Outcome::Frozen { rows }) => rows + 1,
                    _ => 1,
                };
                outcome = Some(Outcome::Frozen { rows });
            }
            TxnKind::AdjustProposed => {
                let id = txn.ref_id.parse().expect("an adjustment's txn names it");
                outcome = Some(Outcome::AdjustmentProposed { id });
            }
            TxnKind::AdjustApplied | TxnKind::AdjustRejected => {
                let id = txn.ref_id.parse().expect("an adjustment's txn names it");
                let status = if txn.kind == TxnKind::AdjustApplied {
                    AdjustmentStatus::Applied
                } else {
                    AdjustmentStatus::Rejected
                };
                outcome = Some(Outcome::AdjustmentDecided { id, status });
            }
            TxnKind::AdjustExpired => {
                // A decision that came too late: it expired the adjustment.
                let expired = AdjustmentStatus::Expired;
                outcome = Some(Outcome::Rejected(Rejection::AdjustmentNotPending { status: expired }));
            }
            TxnKind::TransferOut => {
                let id = txn.ref_id.parse().expect("a transfer's txn names it");
                outcome = Some(Outcome::TransferDispatched { id });
            }
            TxnKind::TransferIn | TxnKind::TransferReturned => {
                let id = txn.ref_id.parse().expect("a transfer's txn names it");
                let status =
                    if txn.kind == TxnKind::TransferIn { TransferStatus::Arrived } else { TransferStatus::Cancelled };
                outcome = Some(Outcome::TransferFinished { id, status });
            }
            TxnKind::PolicySet | TxnKind::PolicyRemoved => {
                outcome = Some(Outcome::PolicySet { present: txn.kind == TxnKind::PolicySet });
            }
            TxnKind::TransferIncoming | TxnKind::TransferCancelled | TxnKind::Repair => {}
        }
    }
    let key = match &entry.command {
        Command::Receive(c) => Some(&c.idem_key),
        Command::ReceiveBatch(c) => {
            outcome =
                Some(Outcome::ReceivedBatch { rows: c.items.len() as u32, units: c.items.iter().map(|i| i.qty).sum() });
            Some(&c.idem_key)
        }
        Command::Reserve(c) => Some(&c.idem_key),
        Command::ReserveAs(c) => Some(&c.reserve.idem_key),
        Command::SetPolicy(c) => Some(&c.idem_key),
        Command::PrepareOrder(c) => Some(&c.idem_key),
        Command::DecideOrder(_) | Command::FinishOrder(_) | Command::ExpireOrders(_) => None,
        Command::Confirm(c) => Some(&c.idem_key),
        Command::Release(c) => Some(&c.idem_key),
        Command::Freeze(c) => Some(&c.idem_key),
        Command::ProposeAdjustment(c) => Some(&c.idem_key),
        Command::DecideAdjustment(c) => Some(&c.idem_key),
        Command::DispatchTransfer(c) => Some(&c.idem_key),
        Command::FinishTransfer(c) => Some(&c.idem_key),
        Command::Expire(_) | Command::Evict(_) | Command::ExpireAdjustments(_) | Command::Repair(_) => None,
    };
    if let (Some(key), Some(outcome)) = (key, outcome) {
        changes.push(ColdChange::Idem(ColdIdem {
            key: key_hash(key),
            fingerprint: entry.command.fingerprint(),
            outcome,
            expires_at: at.saturating_add(idempotency_ttl_ms),
        }));
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_filter_passes_about_one_key_in_a_hundred_it_never_saw() {
        let mut filter = KeyFilter::new(100_000);
        for k in 0..100_000u64 {
            filter.insert(hashes_of_u64(k));
        }
        assert!((0..100_000u64).all(|k| filter.may_contain(hashes_of_u64(k))), "no false negatives");
        let false_positives = (100_000..1_100_000u64).filter(|&k| filter.may_contain(hashes_of_u64(k))).count();
        let rate = false_positives as f64 / 1_000_000.0;
        assert!(rate < 0.02, "false-positive rate {rate}");
        assert_eq!(
            filter.bytes(),
            (100_000 * BITS_PER_KEY).div_ceil(512) * 64,
            "10 bits a key, in whole 64-byte blocks"
        );
    }

    #[test]
    fn a_key_is_found_until_its_retention_ends_and_its_slice_is_dropped_whole() {
        let tiers = TierConfig { slice_ms: 100, filter_keys: 2 };
        let mut filters = SliceFilters::default();
        for k in 0..5u64 {
            filters.insert(hashes_of_u64(k), 150, &tiers);
        }
        filters.insert(hashes_of_u64(9), 260, &tiers);
        assert_eq!(filters.keys(), 6);
        assert!(filters.may_contain(hashes_of_u64(3), 149, &tiers));
        // Past the end of its slice a key is never looked for.
        assert!(!filters.may_contain(hashes_of_u64(3), 200, &tiers));
        assert!(filters.may_contain(hashes_of_u64(9), 200, &tiers));
        assert_eq!(filters.drop_before(150, &tiers), 0, "slice 1 still holds keys kept until 150..199");
        assert_eq!(filters.drop_before(200, &tiers), 1);
        assert_eq!(filters.keys(), 1);
    }
}
