//! Routing from the gateway to the shard loops: which shard owns a request,
//! the bounded queues in between, and the cross-shard idempotency index.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crossbeam_channel::{Sender, TrySendError};
use inventory_core::{hashes_of_u128, shard_for_sku, Millis, ReservationId, SliceFilters, TierConfig};
use parking_lot::Mutex;
use rustc_hash::FxHashMap;

use crate::shard_loop::Request;

/// Why a request could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// The shard's queue is full: shed load now rather than wait.
    Overloaded,
    /// The shard loop has stopped.
    Stopped,
}

/// Each shard has two bounded lanes: one for writes (and the other
/// requests that are not reads), one for reads. A full read lane refuses
/// reads and nothing else; the loop serves reads after writes.
pub struct Router {
    queues: Vec<Sender<Request>>,
    read_queues: Vec<Sender<Request>>,
    ready: AtomicBool,
}

impl Router {
    pub fn new(queues: Vec<Sender<Request>>, read_queues: Vec<Sender<Request>>) -> Router {
        assert!(!queues.is_empty() && queues.len() <= u16::MAX as usize);
        assert_eq!(queues.len(), read_queues.len(), "a read lane per shard");
        Router { queues, read_queues, ready: AtomicBool::new(false) }
    }

    pub fn shards(&self) -> u16 {
        self.queues.len() as u16
    }

    pub fn shard_for_sku(&self, sku_id: &str) -> u16 {
        shard_for_sku(sku_id, self.shards())
    }

    /// The shard of a reservation id, if that shard exists here.
    pub fn shard_for_reservation(&self, id: ReservationId) -> Option<u16> {
        (id.shard() < self.shards()).then_some(id.shard())
    }

    /// Queues a request without ever blocking: a read in the shard's read
    /// lane, anything else in its write queue.
    pub fn send(&self, shard: u16, request: Request) -> Result<(), SendError> {
        let lane = match request {
            Request::Read { .. } | Request::Rows { .. } => &self.read_queues,
            _ => &self.queues,
        };
        lane[shard as usize].try_send(request).map_err(|e| match e {
            TrySendError::Full(_) => SendError::Overloaded,
            TrySendError::Disconnected(_) => SendError::Stopped,
        })
    }

    /// Queues a shutdown marker behind whatever is queued (blocks if full).
    pub fn stop_all(&self) {
        for queue in &self.queues {
            let _ = queue.send(Request::Shutdown);
        }
    }

    pub fn queue_depths(&self) -> Vec<usize> {
        self.queues.iter().map(|q| q.len()).collect()
    }

    /// Reads waiting in each shard's read lane.
    pub fn read_queue_depths(&self) -> Vec<usize> {
        self.read_queues.iter().map(|q| q.len()).collect()
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }
}

const IDEM_STRIPES: usize = 64;

/// Which shard first used each idempotency key.
///
/// Shards keep the authoritative idempotency records, but a key reused for a
/// request that routes to a *different* shard (another SKU, say) would never
/// meet its first use there. This index catches exactly that case: a key
/// claimed by one shard and presented for another is a conflict.
///
/// It keeps in memory only the keys of records their shard still holds in
/// memory (the key's 128-bit hash, its shard and its expiry), striped so the
/// gateway's threads rarely meet. Once a shard has moved a key's record to
/// its cold tier, [`purge`](Self::purge) moves the key into a filter of that
/// shard's cold keys; a claim that passes another shard's filter is
/// [`Claim::Maybe`]: that shard's cold store has the answer.
pub struct IdemIndex {
    stripes: Vec<Mutex<FxHashMap<u128, (u16, Millis)>>>,
    ttl_ms: Millis,
    /// Per shard: the keys whose records it has moved to its cold tier.
    cold: Vec<Mutex<SliceFilters>>,
    /// Per shard: whether its filter has ever held a key, so that a claim
    /// takes no lock for a shard that never moved anything out.
    has_cold: Vec<AtomicBool>,
    /// Per shard: records made before this time have left its memory.
    evicted_before: Vec<AtomicU64>,
    tiers: TierConfig,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key was unclaimed; it is now this shard's.
    Fresh,
    /// The key already belongs to this shard (a retry, or a conflict the
    /// shard itself will detect).
    Same,
    /// The key belongs to another shard: a different request.
    Conflict,
    /// Claimed for this shard, but these other shards may hold the key in
    /// their cold tier: ask them before going on.
    Maybe(Vec<u16>),
}

impl IdemIndex {
    pub fn new(ttl_ms: Millis, shards: u16) -> IdemIndex {
        IdemIndex {
            stripes: (0..IDEM_STRIPES).map(|_| Mutex::default()).collect(),
            ttl_ms,
            cold: (0..shards).map(|_| Mutex::default()).collect(),
            has_cold: (0..shards).map(|_| AtomicBool::new(false)).collect(),
            evicted_before: (0..shards).map(|_| AtomicU64::new(0)).collect(),
            tiers: TierConfig::default(),
        }
    }

    fn stripe(&self, key: u128) -> &Mutex<FxHashMap<u128, (u16, Millis)>> {
        &self.stripes[(key as usize) % IDEM_STRIPES]
    }

    pub fn claim(&self, key: u128, shard: u16, now: Millis) -> Claim {
        let mut stripe = self.stripe(key).lock();
        match stripe.get(&key) {
            Some(&(owner, expires_at)) if expires_at > now => {
                if owner == shard {
                    Claim::Same
                } else {
                    Claim::Conflict
                }
            }
            _ => {
                stripe.insert(key, (shard, now.saturating_add(self.ttl_ms)));
                drop(stripe);
                let hashes = hashes_of_u128(key);
                let elsewhere: Vec<u16> = (0..self.cold.len() as u16)
                    .filter(|&other| other != shard && self.has_cold[other as usize].load(Ordering::Acquire))
                    .filter(|&other| self.cold[other as usize].lock().may_contain(hashes, now, &self.tiers))
                    .collect();
                if elsewhere.is_empty() {
                    Claim::Fresh
                } else {
                    Claim::Maybe(elsewhere)
                }
            }
        }
    }

    /// Whether a live claim of `key` exists (on any shard): a write with it
    /// is a retry or a conflict, answered by the shard.
    pub fn is_claimed(&self, key: u128, now: Millis) -> bool {
        self.stripe(key).lock().get(&key).is_some_and(|&(_, expires_at)| expires_at > now)
    }

    /// Takes back a fresh claim whose request never reached its shard.
    pub fn unclaim(&self, key: u128, shard: u16) {
        let mut stripe = self.stripe(key).lock();
        if stripe.get(&key).is_some_and(|&(owner, _)| owner == shard) {
            stripe.remove(&key);
        }
    }

    /// Re-registers a key found in a shard's memory after replay.
    pub fn restore(&self, key: u128, shard: u16, expires_at: Millis) {
        self.stripe(key).lock().insert(key, (shard, expires_at));
    }

    /// Starts a shard's filter of cold keys from the shard's own, after
    /// replay.
    pub fn restore_cold(&self, shard: u16, keys: SliceFilters) {
        let mut filters = self.cold[shard as usize].lock();
        *filters = keys;
        if filters.keys() > 0 {
            self.has_cold[shard as usize].store(true, Ordering::Release);
        }
    }

    /// A shard has moved every record made before `before` out of memory.
    pub fn evicted(&self, shard: u16, before: Millis) {
        self.evicted_before[shard as usize].fetch_max(before, Ordering::AcqRel);
    }

    /// Forgets expired claims, and moves the keys their shards have moved
    /// to the cold tier into the filters; returns how many left memory.
    pub fn purge(&self, now: Millis) -> usize {
        let evicted: Vec<Millis> = self.evicted_before.iter().map(|e| e.load(Ordering::Acquire)).collect();
        for filters in &self.cold {
            filters.lock().drop_before(now, &self.tiers);
        }
        let mut purged = 0;
        let mut moved: Vec<(u16, u128, Millis)> = Vec::new();
        for stripe in &self.stripes {
            let mut stripe = stripe.lock();
            let before = stripe.len();
            stripe.retain(|&key, &mut (shard, expires_at)| {
                if expires_at <= now {
                    return false;
                }
                let made_at = expires_at.saturating_sub(self.ttl_ms);
                if evicted.get(shard as usize).is_some_and(|&before| made_at < before) {
                    moved.push((shard, key, expires_at));
                    return false;
                }
                true
            });
            purged += before - stripe.len();
            // Room sized for a peak follows the keys back down.
            if stripe.capacity() >= 64 && stripe.len() < stripe.capacity() / 4 {
                let len = stripe.len();
                stripe.shrink_to(len * 2);
            }
            // Into the filters before the stripe is released: a claim of
            // one of these keys finds it in one place or the other. Each
            // shard's filters are locked once per stripe, not per key.
            for (shard, filters) in self.cold.iter().enumerate() {
                let mut of_shard = moved.iter().filter(|m| m.0 as usize == shard).peekable();
                if of_shard.peek().is_none() {
                    continue;
                }
                let mut filters = filters.lock();
                for &(_, key, expires_at) in of_shard {
                    filters.insert(hashes_of_u128(key), expires_at, &self.tiers);
                }
                self.has_cold[shard].store(true, Ordering::Release);
            }
            moved.clear();
        }
        purged
    }

    /// Keys in memory.
    pub fn len(&self) -> usize {
        self.stripes.iter().map(|s| s.lock().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_belongs_to_the_first_shard_that_used_it() {
        let index = IdemIndex::new(1_000, 4);
        assert_eq!(index.claim(7, 0, 100), Claim::Fresh);
        assert_eq!(index.claim(7, 0, 200), Claim::Same);
        assert_eq!(index.claim(7, 1, 200), Claim::Conflict);
        // After the TTL the key is free again.
        assert_eq!(index.claim(7, 1, 1_100), Claim::Fresh);
        index.unclaim(7, 1);
        assert!(index.is_empty());
        index.restore(9, 2, 500);
        assert_eq!(index.claim(9, 3, 499), Claim::Conflict);
        assert_eq!(index.purge(500), 1);
    }

    #[test]
    fn a_key_its_shard_moved_to_disk_leaves_memory_and_its_reuse_elsewhere_is_asked_about() {
        let index = IdemIndex::new(100_000, 3);
        assert_eq!(index.claim(7, 0, 1_000), Claim::Fresh);
        assert_eq!(index.claim(8, 1, 1_000), Claim::Fresh);
        // Shard 0 has moved what it made before 2,000; shard 1 nothing.
        index.evicted(0, 2_000);
        assert_eq!(index.purge(5_000), 1);
        assert_eq!(index.len(), 1);
        // Reused on another shard: shard 0's cold tier must be asked.
        assert_eq!(index.claim(7, 2, 5_000), Claim::Maybe(vec![0]));
        index.unclaim(7, 2);
        // On its own shard, the shard itself decides.
        assert_eq!(index.claim(7, 0, 5_000), Claim::Fresh);
        // Past its expiry nobody is asked.
        index.unclaim(7, 0);
        assert_eq!(index.claim(7, 2, 1_000 + 100_000 + TierConfig::default().slice_ms), Claim::Fresh);
    }
}
