//! Signed writes (`--signed-writes-secret-file`): every write carries
//! `X-Timestamp` (unix seconds), `X-Nonce` and `X-Signature`, the hex
//! HMAC-SHA256 of `timestamp \n nonce \n METHOD \n path \n hex
//! sha256(body)` under the shared secret. A request outside the time
//! window, with a nonce seen inside it, or with a wrong signature is
//! refused before it reaches a shard.
//!
//! The nonces are remembered for as long as their timestamp is acceptable
//! (until `timestamp + window`), in ten-second buckets by timestamp, each a
//! set of 64-bit nonce hashes, split over [`PARTS`] locks: memory is
//! bounded by the write rate times the window (`2 x window` at most, for
//! timestamps at the far future edge), about 16 bytes a nonce.

use std::collections::VecDeque;

use hashbrown::HashSet;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};

/// How far a request's timestamp may be from the service's clock.
pub const WINDOW_SECS: u64 = 300;
/// Nonces are at most this long.
pub const NONCE_BYTES_MAX: usize = 128;
const BUCKET_SECS: u64 = 10;
/// Lock-striped parts of the nonce memory.
const PARTS: usize = 16;

#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `X-Timestamp` missing or outside the window: `STALE_REQUEST`.
    Stale(String),
    /// The nonce was seen inside the window: `REPLAYED_REQUEST`.
    Replayed,
    /// Missing or wrong signature or nonce: `BAD_SIGNATURE`.
    BadSignature(String),
}

/// The secret and the nonces seen.
pub struct SignedWrites {
    key: ring::hmac::Key,
    parts: Vec<Mutex<Nonces>>,
}

#[derive(Default)]
struct Nonces {
    /// `(bucket, hashes)`, oldest bucket first.
    buckets: VecDeque<(u64, HashSet<u64, BuildIdentity>)>,
}

/// The nonces are already hashed: the set uses the hash as it is.
#[derive(Clone, Copy, Default)]
struct BuildIdentity;

impl std::hash::BuildHasher for BuildIdentity {
    type Hasher = IdentityHasher;
    fn build_hasher(&self) -> IdentityHasher {
        IdentityHasher(0)
    }
}

struct IdentityHasher(u64);

impl std::hash::Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, _: &[u8]) {
        unreachable!("only u64 keys")
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// What a signed request shows.
pub struct Signed<'a> {
    pub timestamp: Option<&'a str>,
    pub nonce: Option<&'a str>,
    pub signature: Option<&'a str>,
    pub method: &'a str,
    pub path: &'a str,
    pub body: &'a [u8],
}

impl SignedWrites {
    pub fn new(secret: &[u8]) -> SignedWrites {
        SignedWrites {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret),
            parts: (0..PARTS).map(|_| Mutex::default()).collect(),
        }
    }

    /// Checks a request at `now_secs`; an accepted nonce is remembered.
    pub fn check(&self, request: &Signed, now_secs: u64) -> Result<(), Refusal> {
        let timestamp = request.timestamp.ok_or_else(|| Refusal::Stale("X-Timestamp is missing".into()))?;
        let ts: u64 = timestamp.parse().map_err(|_| Refusal::Stale("X-Timestamp must be unix seconds".into()))?;
        if ts.abs_diff(now_secs) > WINDOW_SECS {
            return Err(Refusal::Stale(format!(
                "X-Timestamp is {} s from the service's clock; at most {WINDOW_SECS} s allowed",
                ts.abs_diff(now_secs)
            )));
        }
        let nonce = request.nonce.ok_or_else(|| Refusal::BadSignature("X-Nonce is missing".into()))?;
        if nonce.is_empty() || nonce.len() > NONCE_BYTES_MAX {
            return Err(Refusal::BadSignature(format!("X-Nonce must be 1 to {NONCE_BYTES_MAX} bytes")));
        }
        let signature = request.signature.ok_or_else(|| Refusal::BadSignature("X-Signature is missing".into()))?;
        let signature = hex::decode(signature).map_err(|_| Refusal::BadSignature("X-Signature must be hex".into()))?;
        let message = signing_string(timestamp, nonce, request.method, request.path, request.body);
        if ring::hmac::verify(&self.key, message.as_bytes(), &signature).is_err() {
            return Err(Refusal::BadSignature("X-Signature does not match the request".into()));
        }
        let hash = xxhash_rust::xxh3::xxh3_64(nonce.as_bytes());
        let mut part = self.parts[(hash as usize) % PARTS].lock();
        part.forget_before((now_secs.saturating_sub(WINDOW_SECS)) / BUCKET_SECS);
        if part.buckets.iter().any(|(_, set)| set.contains(&hash)) {
            return Err(Refusal::Replayed);
        }
        part.insert(ts / BUCKET_SECS, hash);
        Ok(())
    }

    /// Nonces remembered now.
    pub fn nonces(&self) -> usize {
        self.parts.iter().map(|p| p.lock().buckets.iter().map(|(_, s)| s.len()).sum::<usize>()).sum()
    }

    /// Bytes the nonce sets take now (their tables' capacity).
    pub fn nonce_bytes(&self) -> usize {
        self.parts.iter().map(|p| p.lock().buckets.iter().map(|(_, s)| s.allocation_size()).sum::<usize>()).sum()
    }
}

impl Nonces {
    fn forget_before(&mut self, bucket: u64) {
        self.buckets.retain(|(b, _)| *b >= bucket);
    }

    fn insert(&mut self, bucket: u64, hash: u64) {
        let at = self.buckets.partition_point(|(b, _)| *b < bucket);
        if self.buckets.get(at).is_none_or(|(b, _)| *b != bucket) {
            self.buckets.insert(at, (bucket, HashSet::default()));
        }
        self.buckets[at].1.insert(hash);
    }
}

/// The text a signature covers.
pub fn signing_string(timestamp: &str, nonce: &str, method: &str, path: &str, body: &[u8]) -> String {
    format!("{timestamp}\n{nonce}\n{method}\n{path}\n{}", hex::encode(Sha256::digest(body)))
}

/// The `X-Signature` of a request (for clients and tests).
pub fn sign(secret: &[u8], timestamp: &str, nonce: &str, method: &str, path: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    hex::encode(ring::hmac::sign(&key, signing_string(timestamp, nonce, method, path, body).as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn request<'a>(ts: &'a str, nonce: &'a str, sig: &'a str, body: &'a [u8]) -> Signed<'a> {
        Signed {
            timestamp: Some(ts),
            nonce: Some(nonce),
            signature: Some(sig),
            method: "POST",
            path: "/api/inventory/reserve",
            body,
        }
    }

    #[test]
    fn a_signed_request_passes_once() {
        let writes = SignedWrites::new(b"k");
        let ts = NOW.to_string();
        let sig = sign(b"k", &ts, "n1", "POST", "/api/inventory/reserve", b"{}");
        assert_eq!(writes.check(&request(&ts, "n1", &sig, b"{}"), NOW), Ok(()));
        assert_eq!(writes.check(&request(&ts, "n1", &sig, b"{}"), NOW + 1), Err(Refusal::Replayed));
        assert_eq!(writes.nonces(), 1);
    }

    #[test]
    fn stale_forged_and_altered_requests_are_refused() {
        let writes = SignedWrites::new(b"k");
        let old = (NOW - 301).to_string();
        let sig = sign(b"k", &old, "n", "POST", "/api/inventory/reserve", b"{}");
        assert!(matches!(writes.check(&request(&old, "n", &sig, b"{}"), NOW), Err(Refusal::Stale(_))));
        let ts = NOW.to_string();
        let forged = sign(b"other", &ts, "n", "POST", "/api/inventory/reserve", b"{}");
        assert!(matches!(writes.check(&request(&ts, "n", &forged, b"{}"), NOW), Err(Refusal::BadSignature(_))));
        let sig = sign(b"k", &ts, "n", "POST", "/api/inventory/reserve", b"{}");
        let altered = request(&ts, "n", &sig, br#"{"qty":9}"#);
        assert!(matches!(writes.check(&altered, NOW), Err(Refusal::BadSignature(_))));
        // A refused request does not use up its nonce.
        assert_eq!(writes.check(&request(&ts, "n", &sig, b"{}"), NOW), Ok(()));
    }

    #[test]
    fn nonces_are_forgotten_once_their_timestamp_left_the_window() {
        let writes = SignedWrites::new(b"k");
        for i in 0..1_000u64 {
            let ts = (NOW + i % 60).to_string();
            let nonce = format!("n{i}");
            let sig = sign(b"k", &ts, &nonce, "POST", "/p", b"");
            let r = Signed { path: "/p", ..request(&ts, &nonce, &sig, b"") };
            writes.check(&r, NOW).unwrap();
        }
        assert_eq!(writes.nonces(), 1_000);
        // Much later, a new request drops the buckets of its part that
        // left the window.
        let later = NOW + 60 + WINDOW_SECS + BUCKET_SECS;
        for i in 0..200u64 {
            let ts = later.to_string();
            let nonce = format!("m{i}");
            let sig = sign(b"k", &ts, &nonce, "POST", "/p", b"");
            writes.check(&Signed { path: "/p", ..request(&ts, &nonce, &sig, b"") }, later).unwrap();
        }
        assert_eq!(writes.nonces(), 200);
    }

    #[test]
    fn a_million_nonces_take_under_32_bytes_each() {
        let writes = SignedWrites::new(b"k");
        let mut part = writes.parts[0].lock();
        for i in 0..1_000_000u64 {
            part.insert(NOW / BUCKET_SECS + i % 30, xxhash_rust::xxh3::xxh3_64(&i.to_le_bytes()));
        }
        drop(part);
        let per_nonce = writes.nonce_bytes() as f64 / writes.nonces() as f64;
        eprintln!("{} nonces in 30 buckets: {:.1} bytes each", writes.nonces(), per_nonce);
        assert!(per_nonce < 32.0, "{per_nonce:.1} bytes a nonce");
    }
}
