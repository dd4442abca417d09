//! Rebuilding a shard's state as of a point in its journal: what start-up,
//! reconciliation and the replay tool all need.

use std::path::Path;

use inventory_core::{Entry, Millis, Shard, ShardConfig};

use crate::{replay_range, snapshot, Journal, JournalError, ReplayStats};

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

/// The shard's state as of `until`: the newest usable snapshot in
/// `snapshots` at or before that point (if any), then the journal after it.
/// `on_entry` sees each journal entry applied.
pub fn rebuild(
    config: ShardConfig,
    snapshots: Option<&Path>,
    journal: &dyn Journal,
    until: Until,
    on_entry: impl FnMut(&Entry),
) -> Result<(Shard, ReplayStats), JournalError> {
    let index = config.index;
    let base = match snapshots {
        Some(dir) => {
            let at_most = match until {
                Until::Seq(seq) => seq,
                _ => u64::MAX,
            };
            let io =
                |e: std::io::Error| JournalError::Corrupt { shard: index, seq: 0, reason: format!("snapshots: {e}") };
            match until {
                // For a point in time: the newest snapshot not past it.
                Until::Time(at) => snapshot::list(dir, index)
                    .map_err(io)?
                    .into_iter()
                    .filter_map(|seq| snapshot::read(dir, index, seq).ok().map(|image| (seq, image)))
                    .find(|(_, image)| image.last_at <= at),
                _ => snapshot::latest(dir, index, at_most).map_err(io)?,
            }
        }
        None => None,
    };
    let (mut shard, from) = match base {
        Some((seq, image)) => (Shard::from_image(config, image), seq + 1),
        None => (Shard::new(config), 1),
    };
    // The journal must continue where the snapshot ends.
    if let Some(first) = journal.first_seq()? {
        if first > from {
            return Err(JournalError::Gap { shard: index, expected: from, found: first });
        }
    }
    let stats = replay_range(&mut shard, journal, from, |e| until.past(e), on_entry)?;
    Ok((shard, stats))
}
