//! Rebuilding a shard's state as of a point in its journal: what start-up,
//! reconciliation and the replay tool all need.

use inventory_core::{Entry, Millis, Shard, ShardConfig};

use crate::{replay_range, Journal, JournalError, ReplayStats};

/// How far to replay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Until {
    /// Every entry.
    End,
    /// Entries up to and including this sequence.
    Seq(u64),
    /// Entries applied at or before this time.
    Time(Millis),
}

impl Until {
    fn past(self, entry: &Entry) -> bool {
        match self {
            Until::End => false,
            Until::Seq(seq) => entry.seq > seq,
            Until::Time(at) => entry.at > at,
        }
    }
}

/// The shard's state after replaying its journal up to `until`, calling
/// `on_entry` with each entry applied.
pub fn rebuild(
    config: ShardConfig,
    journal: &dyn Journal,
    until: Until,
    on_entry: impl FnMut(&Entry),
) -> Result<(Shard, ReplayStats), JournalError> {
    let mut shard = Shard::new(config);
    let stats = replay_range(&mut shard, journal, 1, |e| until.past(e), on_entry)?;
    Ok((shard, stats))
}
