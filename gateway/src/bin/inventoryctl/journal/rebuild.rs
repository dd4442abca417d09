//! A shard's state rebuilt from the journal (and the snapshot it starts
//! from): every subcommand that needs state comes through here.

use inventory_core::{Entry, Millis, Shard, ShardConfig};
use inventory_journal::{rebuild, Journal, JournalError, ReplayStats, Until};

use super::open::Opened;
use super::time::fmt_time;
use super::CtlError;

/// A shard's state as of `until`. Every command that needs state goes
/// through here, so all of them follow `rebuild` (and whatever it starts
/// from) rather than replaying by hand.
pub fn rebuild_shard(
    opened: &Opened,
    journal: &dyn Journal,
    until: Until,
    on_entry: impl FnMut(&Entry),
) -> Result<(Shard, ReplayStats), JournalError> {
    rebuild(ShardConfig::new(journal.shard()), Some(&opened.snapshots), journal, until, on_entry)
}

/// How far a shard was rebuilt: the last sequence included (from a snapshot
/// or the journal) and the time of the last journal entry applied.
pub struct Replayed {
    shard: u16,
    pub seq: u64,
    at: Option<Millis>,
}

impl Replayed {
    pub fn describe(&self) -> String {
        match self.at {
            Some(at) => format!("shard {} replayed to seq {} ({})", self.shard, self.seq, fmt_time(at)),
            None => format!("shard {} replayed to seq {}", self.shard, self.seq),
        }
    }
}

/// A shard rebuilt to a point (from its newest usable snapshot at or before
/// that point, then the journal).
pub fn replay_to(opened: &Opened, journal: &dyn Journal, until: Until) -> Result<(Shard, Replayed), CtlError> {
    let mut at = None;
    match rebuild_shard(opened, journal, until, |e| at = Some(e.at)) {
        Ok((shard, stats)) => Ok((shard, Replayed { shard: journal.shard(), seq: stats.next_seq - 1, at })),
        Err(JournalError::Gap { shard, expected, found }) if journal.first_seq()? == Some(found) => {
            Err(CtlError::Usage(format!(
                "cannot rebuild shard {shard} as of that point: its journal starts at seq {found} (seq {expected}..{} \
                 were truncated after a snapshot) and no kept snapshot is that old",
                found - 1
            )))
        }
        Err(e) => Err(e.into()),
    }
}
