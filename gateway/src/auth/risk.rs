//! The risk check on reserves (`--risk-max-units-per-minute N`): a caller
//! (tenant and `buyerId`, or the token's subject when no buyer is named)
//! may hold at most N units reserved in any sliding minute. A reserve that
//! would pass that is refused with 429 `RISK_CHECK_REQUIRED` unless its
//! token carries `risk_cleared: true`.
//!
//! The minute is six ten-second slots per caller. Units are taken before
//! the reserve is sent and given back when it fails, so concurrent
//! reserves of one caller cannot pass the limit together. A caller idle
//! for a minute is forgotten.

use hashbrown::HashMap;
use parking_lot::Mutex;

const SLOT_MS: u64 = 10_000;
const SLOTS: usize = 6;
const PARTS: usize = 16;

pub struct RiskCheck {
    max_units: u64,
    parts: Vec<Mutex<Part>>,
}

#[derive(Default)]
struct Part {
    callers: HashMap<u128, Window>,
    /// The slot of the last sweep for idle callers.
    swept: u64,
}

#[derive(Default)]
struct Window {
    /// Units per slot; `units[slot % SLOTS]` for the last `SLOTS` slots.
    units: [u64; SLOTS],
    /// The newest slot written.
    newest: u64,
}

impl Window {
    fn roll(&mut self, slot: u64) {
        if slot >= self.newest + SLOTS as u64 {
            self.units = [0; SLOTS];
        } else {
            for s in self.newest + 1..=slot {
                self.units[s as usize % SLOTS] = 0;
            }
        }
        self.newest = self.newest.max(slot);
    }

    fn total(&self) -> u64 {
        self.units.iter().sum()
    }
}

/// Units taken for a reserve; give them back if it fails.
#[derive(Clone, Copy, Debug)]
pub struct Taken {
    key: u128,
    slot: u64,
    units: u64,
}

impl RiskCheck {
    pub fn new(max_units: u64) -> RiskCheck {
        RiskCheck { max_units, parts: (0..PARTS).map(|_| Mutex::default()).collect() }
    }

    pub fn max_units(&self) -> u64 {
        self.max_units
    }

    /// The key of a caller.
    pub fn key(tenant: Option<&str>, caller: &str) -> u128 {
        let mut bytes = Vec::with_capacity(caller.len() + 66);
        bytes.extend_from_slice(tenant.unwrap_or_default().as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(caller.as_bytes());
        xxhash_rust::xxh3::xxh3_128(&bytes)
    }

    /// Takes `units` for `key` at `now_ms`; `Err(held)` when that would pass
    /// the limit, with the units held in the last minute.
    pub fn take(&self, key: u128, units: u64, now_ms: u64) -> Result<Taken, u64> {
        let slot = now_ms / SLOT_MS;
        let mut part = self.parts[key as usize % PARTS].lock();
        if slot >= part.swept + SLOTS as u64 {
            // Once a minute: forget the callers idle for a minute.
            part.callers.retain(|_, w| w.newest + SLOTS as u64 > slot);
            part.swept = slot;
        }
        let window = part.callers.entry(key).or_default();
        window.roll(slot);
        let held = window.total();
        if held + units > self.max_units {
            return Err(held);
        }
        window.units[slot as usize % SLOTS] += units;
        Ok(Taken { key, slot, units })
    }

    /// Returns the units of a reserve that did not hold them.
    pub fn give_back(&self, taken: Taken) {
        let mut part = self.parts[taken.key as usize % PARTS].lock();
        if let Some(window) = part.callers.get_mut(&taken.key) {
            if taken.slot + SLOTS as u64 > window.newest {
                let units = &mut window.units[taken.slot as usize % SLOTS];
                *units = units.saturating_sub(taken.units);
            }
        }
    }

    /// Callers remembered now.
    pub fn callers(&self) -> usize {
        self.parts.iter().map(|p| p.lock().callers.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_gets_its_units_per_sliding_minute() {
        let risk = RiskCheck::new(10);
        let (a, b) = (RiskCheck::key(Some("t"), "alice"), RiskCheck::key(Some("t"), "bob"));
        risk.take(a, 6, 0).unwrap();
        risk.take(a, 4, 30_000).unwrap();
        assert_eq!(risk.take(a, 1, 59_999).unwrap_err(), 10);
        risk.take(b, 10, 59_999).unwrap();
        // The first six units leave the minute after 60 s.
        assert_eq!(risk.take(a, 7, 60_000).unwrap_err(), 4);
        risk.take(a, 6, 60_000).unwrap();
        // A minute later nobody is remembered but the caller asking.
        risk.take(b, 1, 200_000).unwrap();
        assert_eq!(risk.callers(), 1 + usize::from(a as usize % PARTS != b as usize % PARTS));
    }

    #[test]
    fn units_of_a_failed_reserve_come_back() {
        let risk = RiskCheck::new(3);
        let a = RiskCheck::key(None, "alice");
        let taken = risk.take(a, 3, 0).unwrap();
        assert!(risk.take(a, 1, 1).is_err());
        risk.give_back(taken);
        risk.take(a, 3, 2).unwrap();
        assert_ne!(RiskCheck::key(Some("x"), "alice"), RiskCheck::key(Some("y"), "alice"));
    }
}
