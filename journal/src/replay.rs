//! Rebuilding a shard from its journal.

use inventory_core::{ColdFacts, Shard, Txn};

use crate::{Journal, JournalError};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplayStats {
    /// The first sequence replayed (the entry after the snapshot, or 1).
    pub from: u64,
    pub entries: u64,
    pub txns: u64,
    /// The sequence number the next appended entry must carry.
    pub next_seq: u64,
}

/// Re-applies every entry of `journal` to `shard` (normally empty), checking
/// that sequence numbers are gapless and that each command reproduces exactly
/// the transactions that were journaled with it.
pub fn replay(shard: &mut Shard, journal: &dyn Journal) -> Result<ReplayStats, JournalError> {
    replay_with(shard, journal, |_| {})
}

/// [`replay`], calling `on_entry` with every entry after it is applied.
pub fn replay_with(
    shard: &mut Shard,
    journal: &dyn Journal,
    on_entry: impl FnMut(&inventory_core::Entry),
) -> Result<ReplayStats, JournalError> {
    replay_upto(shard, journal, u64::MAX, on_entry)
}

/// [`replay_with`], stopping after entry `last_seq`.
pub fn replay_upto(
    shard: &mut Shard,
    journal: &dyn Journal,
    last_seq: u64,
    on_entry: impl FnMut(&inventory_core::Entry),
) -> Result<ReplayStats, JournalError> {
    replay_range(shard, journal, 1, |e| e.seq > last_seq, on_entry)
}

/// Re-applies entries from sequence `from` (the shard must hold exactly the
/// state after `from - 1`) until `stop` says an entry is past the end.
pub fn replay_range(
    shard: &mut Shard,
    journal: &dyn Journal,
    from: u64,
    stop: impl Fn(&inventory_core::Entry) -> bool,
    mut on_entry: impl FnMut(&inventory_core::Entry),
) -> Result<ReplayStats, JournalError> {
    let id = journal.shard();
    let mut stats = ReplayStats { from, next_seq: from, ..ReplayStats::default() };
    let mut txns: Vec<Txn> = Vec::new();
    for entry in journal.read_from(from)? {
        let entry = entry?;
        if stop(&entry) {
            break;
        }
        if entry.seq != stats.next_seq {
            return Err(JournalError::Gap { shard: id, expected: stats.next_seq, found: entry.seq });
        }
        let diverged = |reason: String| JournalError::Diverged { shard: id, seq: entry.seq, reason };
        if entry.at < shard.last_at() {
            return Err(diverged(format!("time {} before {}", entry.at, shard.last_at())));
        }
        txns.clear();
        let applied = match shard.apply_with(
            entry.at,
            &entry.command,
            entry.cold.as_deref().unwrap_or(&ColdFacts::NONE),
            &mut txns,
        ) {
            Ok(applied) => applied,
            Err(needs) => return Err(diverged(format!("{} needs {needs:?} from the cold tier", entry.command.name()))),
        };
        if !applied.changed {
            return Err(diverged(format!("{} changed nothing on replay", entry.command.name())));
        }
        if txns != entry.txns {
            return Err(diverged(format!("{} produced different transactions", entry.command.name())));
        }
        on_entry(&entry);
        stats.entries += 1;
        stats.txns += txns.len() as u64;
        stats.next_seq += 1;
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemJournal;
    use inventory_core::{Command, Entry, Receive, ShardConfig};

    fn receive(seq: u64, qty: u64) -> (Command, Millis) {
        let c = Command::Receive(Receive {
            sku_id: "s".into(),
            warehouse_id: "default".into(),
            qty,
            idem_key: format!("k{seq}"),
            reference: String::new(),
        });
        (c, seq * 100)
    }
    type Millis = u64;

    fn journal_of(n: u64) -> (MemJournal, Shard) {
        let mut live = Shard::new(ShardConfig::new(0));
        let mut j = MemJournal::new(0);
        for seq in 1..=n {
            let (command, at) = receive(seq, seq);
            let mut txns = Vec::new();
            assert!(live.apply(at, &command, &mut txns).changed);
            j.append(&[Entry {
                seq,
                at,
                trace_id: 0,
                operator: String::new(),
                command,
                txns,
                cold: Default::default(),
            }])
            .unwrap();
        }
        (j, live)
    }

    #[test]
    fn replay_rebuilds_the_same_state() {
        let (j, live) = journal_of(5);
        let mut replica = Shard::new(ShardConfig::new(0));
        let stats = replay(&mut replica, &j).unwrap();
        assert_eq!(stats, ReplayStats { from: 1, entries: 5, txns: 5, next_seq: 6 });
        assert_eq!(replica.dump(), live.dump());
    }

    #[test]
    fn replay_reports_gaps_corruption_and_divergence() {
        let (j, _) = journal_of(5);
        j.corrupt(3, |r| {
            let last = r.len() - 1;
            r[last] ^= 1;
        });
        assert!(matches!(replay(&mut Shard::new(ShardConfig::new(0)), &j), Err(JournalError::Corrupt { seq: 3, .. })));

        let (mut j, _) = journal_of(5);
        j.recover(3).unwrap();
        let (command, at) = receive(9, 1);
        j.append(&[Entry {
            seq: 4,
            at,
            trace_id: 0,
            operator: String::new(),
            command,
            txns: vec![],
            cold: Default::default(),
        }])
        .unwrap();
        let err = replay(&mut Shard::new(ShardConfig::new(0)), &j).unwrap_err();
        assert!(matches!(err, JournalError::Gap { expected: 3, found: 4, .. }), "{err}");

        let (mut j, _) = journal_of(2);
        let (command, at) = receive(3, 7);
        j.append(&[Entry {
            seq: 3,
            at,
            trace_id: 0,
            operator: String::new(),
            command,
            txns: vec![],
            cold: Default::default(),
        }])
        .unwrap();
        let err = replay(&mut Shard::new(ShardConfig::new(0)), &j).unwrap_err();
        assert!(matches!(err, JournalError::Diverged { seq: 3, .. }), "{err}");
    }
}
