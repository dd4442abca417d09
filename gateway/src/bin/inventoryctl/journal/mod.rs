//! `inventoryctl journal`: inspect, verify and replay a data dir's journal.
//!
//! One file per subcommand, each saying what it does: `list` (the entries,
//! filtered), `verify` (every record, and replay against the journaled
//! txns and the snapshots), `replay` (the state of an SKU or an order at a
//! point), `history` (the txns of an SKU or an order) and `diff` (the
//! replayed state against a running service).
//!
//! Reads `<data-dir>/journal` (a copy or a live one, of either kind) and the
//! snapshots in `<data-dir>/snapshots`; never adds, changes or removes an
//! entry, and never creates a journal where there is none. A segment-file
//! journal is read in place, without its lock: the service only appends,
//! and a block it is still writing ends the read. A running `inventoryd`
//! holds a sled journal's lock: the tool then copies the journal to a
//! temporary directory, reads the copy and removes it, so the service is
//! not disturbed. State always comes from `inventory_journal::rebuild` (the
//! newest usable snapshot at or before the point, then the journal), the
//! same code the service starts with. After truncation the journal no
//! longer holds the entries a snapshot covers: `list` and `history` say so
//! and start later, and `replay` cannot go back before the oldest snapshot.
//!
//! Exit codes: 0 success; 1 `verify` found a bad record or `diff` found a
//! difference; 2 the command could not run (bad arguments, no data dir or
//! journal, an unreadable record, the service unreachable).

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use inventory_journal::JournalError;

mod args;
mod diff;
mod entries;
mod format;
mod history;
mod list;
mod open;
mod rebuild;
mod replay;
mod time;
mod verify;

#[derive(clap::Args)]
pub struct JournalArgs {
    #[command(subcommand)]
    command: JournalCommand,
}

#[derive(clap::Subcommand)]
enum JournalCommand {
    /// One row per journal entry, in time order, optionally filtered.
    List(list::ListArgs),
    /// Check every record (checksum, decoding, gapless sequence) and that
    /// replay reproduces the journaled txns; exit 1 naming the first bad one.
    Verify(verify::VerifyArgs),
    /// The state of an SKU or an order after replaying up to a point.
    Replay(replay::ReplayArgs),
    /// The transaction records of an SKU or an order, oldest first.
    History(history::HistoryArgs),
    /// Compare the state replayed from the journal with a running service;
    /// exit 1 if any row differs.
    Diff(diff::DiffArgs),
}

#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("data dir {0} does not exist or is not a directory")]
    NoDataDir(PathBuf),
    #[error("no journal at {0} (expected the journal database the service creates in <data-dir>/journal)")]
    NoJournal(PathBuf),
    #[error("cannot open the journal at {path}: {source}")]
    Open { path: PathBuf, source: JournalError },
    #[error("the journal at {path} is in use by a running service and copying it failed: {reason}")]
    Copy { path: PathBuf, reason: String },
    #[error("{} (run `inventoryctl journal verify` for details)", describe(.0))]
    Journal(#[from] JournalError),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Http(String),
    #[error("cannot write output: {0}")]
    Output(#[from] io::Error),
}

pub fn run(args: JournalArgs) -> ExitCode {
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let result = match args.command {
        JournalCommand::List(args) => list::run(&mut out, args),
        JournalCommand::Verify(args) => verify::run(&mut out, args),
        JournalCommand::Replay(args) => replay::run(&mut out, args),
        JournalCommand::History(args) => history::run(&mut out, args),
        JournalCommand::Diff(args) => diff::run(&mut out, args),
    };
    let result = result.and_then(|code| out.flush().map(|()| code).map_err(CtlError::from));
    match result {
        Ok(code) => code,
        // `inventoryctl journal list | head`: the reader has all it wanted.
        Err(CtlError::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            drop(out);
            let _ = writeln!(io::stderr(), "inventoryctl journal: {e}");
            ExitCode::from(2)
        }
    }
}

/// A journal error as "shard S seq N: what is wrong", naming the record.
pub fn describe(e: &JournalError) -> String {
    match e {
        JournalError::Corrupt { shard, seq, reason } => format!("shard {shard} seq {seq}: corrupt record: {reason}"),
        JournalError::Gap { shard, expected, found } => {
            format!("shard {shard} seq {found}: sequence gap, expected seq {expected}")
        }
        JournalError::Diverged { shard, seq, reason } => format!("shard {shard} seq {seq}: replay diverged: {reason}"),
        other => other.to_string(),
    }
}
