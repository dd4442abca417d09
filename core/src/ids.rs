//! Identifiers, time units and the stable hashes the core relies on.
//!
//! Everything here is deterministic: the hashes are XXH3 (a frozen algorithm),
//! so fingerprints and key hashes are the same on every machine and version.

use std::fmt;
use std::str::FromStr;

/// Milliseconds since the Unix epoch. The core never reads a clock: every
/// command is applied at a `Millis` chosen by the shard loop and journaled.
pub type Millis = u64;

pub const SECOND_MS: Millis = 1_000;
pub const HOUR_MS: Millis = 3_600 * SECOND_MS;
/// How long an idempotency key is remembered.
pub const IDEMPOTENCY_TTL_MS: Millis = 72 * HOUR_MS;

/// Warehouse used when a request names none.
pub const DEFAULT_WAREHOUSE: &str = "default";
/// Release reason recorded when a hold expires.
pub const REASON_TIMEOUT: &str = "TIMEOUT";

/// A reservation id packs the owning shard (high 16 bits) and the shard's
/// reservation sequence (low 48 bits), so it routes back to its shard without
/// a lookup table. Rendered as `rsv-<shard>-<seq>`.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct ReservationId(pub u64);

impl ReservationId {
    pub const SEQ_BITS: u32 = 48;
    pub const SEQ_MAX: u64 = (1 << Self::SEQ_BITS) - 1;

    pub fn new(shard: u16, seq: u64) -> ReservationId {
        assert!(seq <= Self::SEQ_MAX, "reservation sequence overflow");
        ReservationId(((shard as u64) << Self::SEQ_BITS) | seq)
    }

    pub fn shard(self) -> u16 {
        (self.0 >> Self::SEQ_BITS) as u16
    }

    pub fn seq(self) -> u64 {
        self.0 & Self::SEQ_MAX
    }
}

impl fmt::Display for ReservationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rsv-{}-{}", self.shard(), self.seq())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidReservationId;

impl FromStr for ReservationId {
    type Err = InvalidReservationId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s.strip_prefix("rsv-").ok_or(InvalidReservationId)?;
        let (shard, seq) = rest.split_once('-').ok_or(InvalidReservationId)?;
        let digits = |t: &str| !t.is_empty() && t.len() <= 20 && t.bytes().all(|b| b.is_ascii_digit());
        if !digits(shard) || !digits(seq) {
            return Err(InvalidReservationId);
        }
        let shard: u16 = shard.parse().map_err(|_| InvalidReservationId)?;
        let seq: u64 = seq.parse().map_err(|_| InvalidReservationId)?;
        if seq == 0 || seq > Self::SEQ_MAX {
            return Err(InvalidReservationId);
        }
        Ok(ReservationId::new(shard, seq))
    }
}

/// 128-bit hash of an idempotency key: the key table stores this instead of
/// the string (collisions are out of reach at 2^-128 per pair).
pub fn key_hash(key: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(key.as_bytes())
}

/// 64-bit hash of an order id, used by the per-order index. Collisions are
/// harmless: candidates are filtered by comparing the stored order id.
pub fn order_hash(order_id: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(order_id.as_bytes())
}

/// Builds a request fingerprint from length-prefixed fields (streaming XXH3,
/// no allocation).
pub(crate) struct Fingerprint {
    hasher: xxhash_rust::xxh3::Xxh3,
}

impl Default for Fingerprint {
    fn default() -> Self {
        Fingerprint { hasher: xxhash_rust::xxh3::Xxh3::new() }
    }
}

impl Fingerprint {
    // In place: the hasher state is several hundred bytes, too much to
    // move on every field of a 10,000-item batch.
    pub(crate) fn tag(&mut self, tag: u8) -> &mut Self {
        self.hasher.update(&[tag]);
        self
    }

    pub(crate) fn str(&mut self, s: &str) -> &mut Self {
        self.hasher.update(&(s.len() as u64).to_le_bytes());
        self.hasher.update(s.as_bytes());
        self
    }

    pub(crate) fn u64(&mut self, v: u64) -> &mut Self {
        self.hasher.update(&v.to_le_bytes());
        self
    }

    pub(crate) fn finish(&self) -> u64 {
        self.hasher.digest()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservation_id_round_trips_and_routes() {
        let id = ReservationId::new(7, 123_456);
        assert_eq!(id.shard(), 7);
        assert_eq!(id.seq(), 123_456);
        assert_eq!(id.to_string(), "rsv-7-123456");
        assert_eq!("rsv-7-123456".parse::<ReservationId>(), Ok(id));
    }

    #[test]
    fn malformed_reservation_ids_are_rejected() {
        for bad in [
            "",
            "rsv-",
            "rsv-1",
            "rsv-1-",
            "rsv--1",
            "rsv-a-1",
            "rsv-1-0",
            "xyz-1-2",
            "rsv-1-2-3",
            "rsv-70000-1",
            "rsv-+1-2",
        ] {
            assert!(bad.parse::<ReservationId>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn hashes_are_stable() {
        // XXH3 is frozen: these values must never change, snapshots and
        // fingerprints depend on them.
        assert_eq!(order_hash(""), 0x2d06800538d394c2);
        assert_eq!(Fingerprint::default().tag(1).str("a").finish(), Fingerprint::default().tag(1).str("a").finish());
        assert_ne!(
            Fingerprint::default().str("ab").str("").finish(),
            Fingerprint::default().str("a").str("b").finish()
        );
    }
}
