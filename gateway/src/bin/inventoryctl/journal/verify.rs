//! `inventoryctl journal verify`: every record decodes and passes its
//! checksum, sequences run without gaps (from 1, or from just after a
//! snapshot that covers the truncated start), replay reproduces the
//! journaled txns, and each later snapshot equals the state replayed to it;
//! names the first bad record of each shard.

use std::io::Write;
use std::process::ExitCode;

use inventory_core::{Millis, RowImage, ShardImage};
use inventory_journal::{replay_range, snapshot, Journal, JournalError, Until};

use super::args::Source;
use super::open::{open, Opened};
use super::rebuild::rebuild_shard;
use super::time::fmt_time;
use super::{describe, CtlError};

#[derive(clap::Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    source: Source,
}

/// What one shard's check found when it passed.
#[derive(Default)]
struct ShardCheck {
    entries: u64,
    txns: u64,
    first: Option<u64>,
    last: Option<(u64, Millis)>,
    /// The first entry replay checked (the one after the base snapshot).
    replayed_from: u64,
    /// Snapshots found equal to the journal replayed to them.
    snapshots_agree: Vec<u64>,
    /// Things start-up tolerates but an operator should know.
    notes: Vec<String>,
}

pub fn run(out: &mut impl Write, args: VerifyArgs) -> Result<ExitCode, CtlError> {
    let opened = open(&args.source.data_dir)?;
    let (mut entries, mut txns) = (0u64, 0u64);
    let mut failures = Vec::new();
    for shard in 0..opened.shards() {
        let journal = opened.journal(shard)?;
        match verify_shard(&opened, &journal) {
            Ok(check) => {
                entries += check.entries;
                txns += check.txns;
                let mut line = match (check.first, check.last) {
                    (Some(first), Some((last, at))) => format!(
                        "shard {shard}: OK, {} entries (seq {first}..{last}, last at {}), {} txns, \
                         replayed from seq {}",
                        check.entries,
                        fmt_time(at),
                        check.txns,
                        check.replayed_from
                    ),
                    _ if check.replayed_from > 1 => {
                        format!("shard {shard}: OK, no entries after the snapshot at seq {}", check.replayed_from - 1)
                    }
                    _ => format!("shard {shard}: OK, no entries"),
                };
                if !check.snapshots_agree.is_empty() {
                    let seqs: Vec<String> = check.snapshots_agree.iter().map(u64::to_string).collect();
                    line.push_str(&format!("; snapshots at seq {} agree", seqs.join(", ")));
                }
                writeln!(out, "{line}")?;
                for note in &check.notes {
                    writeln!(out, "shard {shard}: note: {note}")?;
                }
            }
            Err(problem) => {
                writeln!(out, "shard {shard}: FAILED: {problem}")?;
                failures.push(problem);
            }
        }
    }
    let path = opened.origin();
    match failures.first() {
        None => {
            writeln!(out, "journal OK: {} shards, {entries} entries, {txns} txns ({path})", opened.shards())?;
            Ok(ExitCode::SUCCESS)
        }
        Some(first) => {
            writeln!(
                out,
                "journal FAILED: {} of {} shards have a bad record; first: {first} ({path})",
                failures.len(),
                opened.shards()
            )?;
            Ok(ExitCode::from(1))
        }
    }
}

/// Checks one shard; the error names the first bad record ("shard S seq N:
/// what is wrong").
///
/// 1. Every record: version, checksum, decoding, key == seq, and sequences
///    without gaps from the first one.
/// 2. The start: a journal that does not start at seq 1 was truncated after
///    a snapshot, so a usable snapshot must cover everything before it.
/// 3. Replay from that base (the oldest usable snapshot that covers the
///    start, or nothing) through every entry: each command must reproduce its
///    journaled txns, and each later snapshot must equal the state replayed
///    to its sequence.
fn verify_shard(opened: &Opened, journal: &dyn Journal) -> Result<ShardCheck, String> {
    let shard = journal.shard();
    let mut check = ShardCheck::default();
    let mut next: Option<u64> = None;
    for entry in journal.read_from(0).map_err(|e| describe(&e))? {
        let entry = entry.map_err(|e| describe(&e))?;
        if entry.seq == 0 {
            return Err(format!("shard {shard} seq 0: a record under seq 0 (sequences start at 1)"));
        }
        if let Some(expected) = next.filter(|expected| entry.seq != *expected) {
            return Err(describe(&JournalError::Gap { shard, expected, found: entry.seq }));
        }
        next = Some(entry.seq + 1);
        check.first.get_or_insert(entry.seq);
        check.entries += 1;
        check.txns += entry.txns.len() as u64;
        check.last = Some((entry.seq, entry.at));
    }

    let dir = &opened.snapshots;
    let mut snapshots = snapshot::list(dir, shard)
        .map_err(|e| format!("shard {shard}: cannot list the snapshots in {}: {e}", dir.display()))?;
    snapshots.reverse(); // oldest first
    let usable = |seq: u64| snapshot::read(dir, shard, seq).ok();
    let base = match check.first {
        Some(1) => 0,
        Some(first) => {
            snapshots.iter().copied().filter(|s| *s + 1 >= first).find(|s| usable(*s).is_some()).ok_or_else(|| {
                format!(
                    "shard {shard} seq {first}: the journal starts at seq {first} \
                     but no usable snapshot covers seq 1..{}",
                    first - 1
                )
            })?
        }
        // No entries: the state is the newest usable snapshot, if any.
        None => match snapshots.iter().rev().copied().find(|s| usable(*s).is_some()) {
            Some(seq) => seq,
            None if snapshots.is_empty() => 0,
            None => return Err(format!("shard {shard}: the journal is empty and no snapshot is usable")),
        },
    };
    check.replayed_from = base + 1;
    let (mut state, stats) = rebuild_shard(opened, journal, Until::Seq(base), |_| {}).map_err(|e| describe(&e))?;
    let mut next_seq = stats.next_seq;
    let last = check.last.map_or(0, |(seq, _)| seq);
    for seq in snapshots.into_iter().filter(|s| *s > base) {
        if seq > last {
            check.notes.push(format!("snapshot at seq {seq} is past the journal's last entry {last}; not compared"));
            continue;
        }
        let stats = replay_range(&mut state, journal, next_seq, |e| e.seq > seq, |_| {}).map_err(|e| describe(&e))?;
        next_seq = stats.next_seq;
        match snapshot::read(dir, shard, seq) {
            Ok(image) => match image_difference(&state.image(), &image) {
                None => check.snapshots_agree.push(seq),
                Some(part) => {
                    return Err(format!(
                        "shard {shard} seq {seq}: the snapshot at seq {seq} \
                         disagrees with the journal replayed to it ({part})"
                    ))
                }
            },
            Err(e) => check.notes.push(format!("snapshot at seq {seq} is unusable (start-up skips it): {e}")),
        }
    }
    replay_range(&mut state, journal, next_seq, |_| false, |_| {}).map_err(|e| describe(&e))?;
    Ok(check)
}

/// Which part of a snapshot differs from the replayed state, if any. The
/// idempotency records are not compared: forgetting expired keys is
/// maintenance that is not journaled.
fn image_difference(replayed: &ShardImage, stored: &ShardImage) -> Option<&'static str> {
    fn stock(i: &ShardImage) -> (&str, &[u32], &[String], &[RowImage]) {
        (&i.sku_ids, &i.sku_ends, &i.warehouses, &i.rows)
    }
    if stock(replayed) != stock(stored) {
        Some("stock rows differ")
    } else if replayed.holds != stored.holds {
        Some("holds differ")
    } else if (replayed.next_hold_seq, replayed.next_txn_seq) != (stored.next_hold_seq, stored.next_txn_seq) {
        Some("id counters differ")
    } else if replayed.last_at != stored.last_at {
        Some("last applied time differs")
    } else {
        None
    }
}
