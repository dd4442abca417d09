//! Routing from the gateway to the shard loops: which shard owns a request,
//! the bounded queues in between, and the cross-shard idempotency index.

use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::{Sender, TrySendError};
use inventory_core::{shard_for_sku, Millis, ReservationId};
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

pub struct Router {
    queues: Vec<Sender<Request>>,
    ready: AtomicBool,
}

impl Router {
    pub fn new(queues: Vec<Sender<Request>>) -> Router {
        assert!(!queues.is_empty() && queues.len() <= u16::MAX as usize);
        Router { queues, ready: AtomicBool::new(false) }
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

    /// Queues a request without ever blocking.
    pub fn send(&self, shard: u16, request: Request) -> Result<(), SendError> {
        self.queues[shard as usize].try_send(request).map_err(|e| match e {
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
/// claimed by one shard and presented for another is a conflict. It holds
/// only the key's 128-bit hash, its shard and its expiry, is rebuilt from the
/// shards after replay, and is striped so the gateway's threads rarely meet.
pub struct IdemIndex {
    stripes: Vec<Mutex<FxHashMap<u128, (u16, Millis)>>>,
    ttl_ms: Millis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The key was unclaimed; it is now this shard's.
    Fresh,
    /// The key already belongs to this shard (a retry, or a conflict the
    /// shard itself will detect).
    Same,
    /// The key belongs to another shard: a different request.
    Conflict,
}

impl IdemIndex {
    pub fn new(ttl_ms: Millis) -> IdemIndex {
        IdemIndex { stripes: (0..IDEM_STRIPES).map(|_| Mutex::default()).collect(), ttl_ms }
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
                Claim::Fresh
            }
        }
    }

    /// Takes back a fresh claim whose request never reached its shard.
    pub fn unclaim(&self, key: u128, shard: u16) {
        let mut stripe = self.stripe(key).lock();
        if stripe.get(&key).is_some_and(|&(owner, _)| owner == shard) {
            stripe.remove(&key);
        }
    }

    /// Re-registers a key found in a shard's state after replay.
    pub fn restore(&self, key: u128, shard: u16, expires_at: Millis) {
        self.stripe(key).lock().insert(key, (shard, expires_at));
    }

    /// Forgets expired claims; returns how many.
    pub fn purge(&self, now: Millis) -> usize {
        let mut purged = 0;
        for stripe in &self.stripes {
            let mut stripe = stripe.lock();
            let before = stripe.len();
            stripe.retain(|_, &mut (_, expires_at)| expires_at > now);
            purged += before - stripe.len();
        }
        purged
    }

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
        let index = IdemIndex::new(1_000);
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
}
