//! `inventoryctl journal`: inspect, verify and replay a data dir's journal
//! (F22).
//!
//! - `list`: one row (or one JSON line) per entry, filtered by shard, SKU,
//!   order, reservation and time range. Several shards are merged by time;
//!   entries of different shards in the same millisecond have no order
//!   between them and are listed lower shard first.
//! - `verify`: every record decodes and passes its checksum, sequences run
//!   without gaps (from 1, or from just after a snapshot that covers the
//!   truncated start), replay reproduces the journaled txns, and each later
//!   snapshot equals the state replayed to it; names the first bad record of
//!   each shard.
//! - `replay`: the state of one SKU or one order after replaying up to a
//!   point in time or a `shard:seq`.
//! - `history`: the transaction records (F8) of one SKU or one order.
//! - `diff`: the state replayed from the journal against a running service.
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

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use inventory_core::{
    shard_for_sku, Command, Entry, Levels, Millis, ReservationId, ReservationView, RowImage, Shard, ShardConfig,
    ShardImage, StockRow, Txn, TxnKind,
};
use inventory_journal::{
    rebuild, replay_range, snapshot, Backend, FileStore, Journal, JournalError, ReplayStats, SledStore, Store, Until,
};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde::Deserialize;
use serde_json::{json, Value};

/// Expire entries list at most this many reservation ids in a table row.
const TABLE_IDS_MAX: usize = 5;
/// Attempts at copying a live journal into a state sled can open.
const COPY_ATTEMPTS_MAX: u32 = 3;
const HTTP_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const HTTP_IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest HTTP response accepted from the service (an SKU has at most
/// 1024 warehouse rows, well under this).
const HTTP_RESPONSE_BYTES_MAX: u64 = 8 << 20;
/// The latest time `api::rfc3339` can render (9999-12-31T23:59:59.999Z).
const RFC3339_MS_MAX: Millis = 253_402_300_799_999;

#[derive(clap::Args)]
pub struct JournalArgs {
    #[command(subcommand)]
    command: JournalCommand,
}

#[derive(clap::Subcommand)]
enum JournalCommand {
    /// One row per journal entry, in time order, optionally filtered.
    List(ListArgs),
    /// Check every record (checksum, decoding, gapless sequence) and that
    /// replay reproduces the journaled txns; exit 1 naming the first bad one.
    Verify {
        #[command(flatten)]
        source: Source,
    },
    /// The state of an SKU or an order after replaying up to a point.
    Replay(ReplayArgs),
    /// The transaction records (F8) of an SKU or an order, oldest first.
    History(HistoryArgs),
    /// Compare the state replayed from the journal with a running service;
    /// exit 1 if any row differs.
    Diff(DiffArgs),
}

#[derive(clap::Args)]
struct Source {
    /// The service's data dir (the journal is <data-dir>/journal): a copy,
    /// or the live one of a running service.
    #[arg(long, default_value = "./data")]
    data_dir: PathBuf,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Table,
    Jsonl,
}

/// Exactly one of `--sku` and `--order`.
#[derive(clap::Args)]
#[group(required = true, multiple = false)]
struct Target {
    /// An SKU id.
    #[arg(long)]
    sku: Option<String>,
    /// An order id.
    #[arg(long)]
    order: Option<String>,
}

#[derive(clap::Args)]
struct ListArgs {
    #[command(flatten)]
    source: Source,
    /// Only this shard.
    #[arg(long)]
    shard: Option<u16>,
    /// Only entries that change this SKU.
    #[arg(long)]
    sku: Option<String>,
    /// Only entries that change a hold of this order.
    #[arg(long)]
    order: Option<String>,
    /// Only entries that create or change this reservation (rsv-<shard>-<seq>).
    #[arg(long, value_parser = parse_reservation)]
    reservation: Option<ReservationId>,
    /// Only entries applied at or after this time (RFC 3339 UTC or ms since the epoch).
    #[arg(long, value_parser = parse_time)]
    from: Option<Millis>,
    /// Only entries applied at or before this time (RFC 3339 UTC or ms since the epoch).
    #[arg(long, value_parser = parse_time)]
    to: Option<Millis>,
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Stop after this many entries.
    #[arg(long)]
    limit: Option<usize>,
}

#[derive(clap::Args)]
struct ReplayArgs {
    #[command(flatten)]
    source: Source,
    #[command(flatten)]
    target: Target,
    /// Replay entries applied at or before this time (RFC 3339 UTC or ms
    /// since the epoch). Default: the whole journal.
    #[arg(long, value_parser = parse_time, conflicts_with = "until_seq")]
    until: Option<Millis>,
    /// Replay shard SHARD up to and including entry SEQ, and every other
    /// shard up to that entry's time.
    #[arg(long, value_name = "SHARD:SEQ", value_parser = parse_shard_seq)]
    until_seq: Option<(u16, u64)>,
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

#[derive(clap::Args)]
struct HistoryArgs {
    #[command(flatten)]
    source: Source,
    #[command(flatten)]
    target: Target,
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

#[derive(clap::Args)]
struct DiffArgs {
    #[command(flatten)]
    source: Source,
    /// Base URL of the running service, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    url: String,
    /// Compare only these SKUs (repeatable). Default: every SKU in the journal.
    #[arg(long)]
    sku: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
enum CtlError {
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
        JournalCommand::List(args) => list(&mut out, args),
        JournalCommand::Verify { source } => verify(&mut out, &source),
        JournalCommand::Replay(args) => replay(&mut out, args),
        JournalCommand::History(args) => history(&mut out, args),
        JournalCommand::Diff(args) => diff(&mut out, args),
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

// ----- opening a journal without disturbing the service --------------------

/// One shard's journal, of whichever kind the data dir keeps.
type ShardJournal = Box<dyn Journal + Sync>;

/// An open journal: the data dir's own, or a temporary copy of it when a
/// running service holds the lock.
struct Opened {
    // Declared before `copy` so the database closes before the copy is removed.
    store: Store,
    /// The journal directory as named on the command line.
    path: PathBuf,
    /// `<data-dir>/snapshots`, read in place (files are only ever renamed
    /// into place, so a running service never shows a half-written one).
    snapshots: PathBuf,
    copy: Option<TempCopy>,
}

impl Opened {
    fn journal(&self, shard: u16) -> Result<ShardJournal, CtlError> {
        Ok(self.store.journal(shard)?)
    }

    fn shards(&self) -> u16 {
        self.store.shards()
    }

    /// Where the entries were read from, for summaries.
    fn origin(&self) -> String {
        match &self.copy {
            Some(_) => format!("{}, read from a copy", self.path.display()),
            None => self.path.display().to_string(),
        }
    }

    fn check_shard(&self, shard: u16) -> Result<(), CtlError> {
        if shard >= self.shards() {
            return Err(CtlError::Usage(format!("no shard {shard}: the journal has {} shards", self.shards())));
        }
        Ok(())
    }
}

fn open(data_dir: &Path) -> Result<Opened, CtlError> {
    if !data_dir.is_dir() {
        return Err(CtlError::NoDataDir(data_dir.to_path_buf()));
    }
    let path = data_dir.join("journal");
    let snapshots = data_dir.join("snapshots");
    // Opening a sled database creates one where there is none: check first.
    match Backend::detect(&path) {
        None => return Err(CtlError::NoJournal(path)),
        // Segment files are read in place beside a running service, which
        // only ever appends to them.
        Some(Backend::File) => {
            return match FileStore::open_read_only(&path) {
                Ok(store) => Ok(Opened { store: Store::File(store), path, snapshots, copy: None }),
                Err(source) => Err(CtlError::Open { path, source }),
            }
        }
        Some(Backend::Sled) => {}
    }
    match SledStore::open(&path, None, 1) {
        Ok(store) => Ok(Opened { store: Store::Sled(store), path, snapshots, copy: None }),
        Err(e) if e.to_string().contains("could not acquire lock") => open_copy(path, snapshots),
        Err(source) => Err(CtlError::Open { path, source }),
    }
}

/// Copies a journal a running service holds and opens the copy. A copy
/// taken while the service writes may catch a write half done; sled
/// recovers it like a crash, and a copy it cannot open is taken again.
fn open_copy(path: PathBuf, snapshots: PathBuf) -> Result<Opened, CtlError> {
    let mut last_error = String::new();
    for _ in 0..COPY_ATTEMPTS_MAX {
        let copy = TempCopy::of(&path).map_err(|e| CtlError::Copy { path: path.clone(), reason: e.to_string() })?;
        match SledStore::open(&copy.path, None, 1) {
            Ok(store) => {
                let _ = writeln!(
                    io::stderr(),
                    "inventoryctl journal: {} is in use by a running service; reading a copy taken at {}",
                    path.display(),
                    fmt_time(now_ms())
                );
                return Ok(Opened { store: Store::Sled(store), path, snapshots, copy: Some(copy) });
            }
            Err(e) => last_error = e.to_string(),
        }
    }
    Err(CtlError::Copy { path, reason: format!("the copy could not be opened: {last_error}") })
}

/// A directory under the system temp dir, removed on drop.
struct TempCopy {
    path: PathBuf,
}

impl TempCopy {
    fn of(source: &Path) -> io::Result<TempCopy> {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        for attempt in 0..100u32 {
            let path =
                std::env::temp_dir().join(format!("inventoryctl-journal-{}-{nanos}-{attempt}", std::process::id()));
            match fs::create_dir(&path) {
                Ok(()) => {
                    let copy = TempCopy { path };
                    copy_tree(source, &copy.path)?;
                    return Ok(copy);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::other("no free temporary directory name"))
    }
}

impl Drop for TempCopy {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Copies the files and directories under `from` into `to` (which exists).
/// A file the service removes while this runs (an old sled snapshot) is
/// skipped.
fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    for item in fs::read_dir(from)? {
        let item = item?;
        let target = to.join(item.file_name());
        let kind = item.file_type()?;
        let copied = if kind.is_dir() {
            fs::create_dir(&target).and_then(|()| copy_tree(&item.path(), &target))
        } else if kind.is_file() {
            fs::copy(item.path(), &target).map(|_| ())
        } else {
            Ok(())
        };
        match copied {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            other => other?,
        }
    }
    Ok(())
}

/// A shard's state as of `until`. Every command that needs state goes
/// through here, so all of them follow `rebuild` (and whatever it starts
/// from) rather than replaying by hand.
fn rebuild_shard(
    opened: &Opened,
    journal: &dyn Journal,
    until: Until,
    on_entry: impl FnMut(&Entry),
) -> Result<(Shard, ReplayStats), JournalError> {
    rebuild(ShardConfig::new(journal.shard()), Some(&opened.snapshots), journal, until, on_entry)
}

// ----- list ------------------------------------------------------------------

/// Which entries `list` shows.
#[derive(Default)]
struct Filter {
    sku: Option<String>,
    order: Option<String>,
    reservation: Option<ReservationId>,
    from: Option<Millis>,
    to: Option<Millis>,
}

impl Filter {
    fn matches(&self, entry: &Entry) -> bool {
        if self.from.is_some_and(|from| entry.at < from) || self.to.is_some_and(|to| entry.at > to) {
            return false;
        }
        if let Some(sku) = &self.sku {
            let named = match &entry.command {
                Command::Receive(c) => c.sku_id == *sku,
                Command::Reserve(c) => c.sku_id == *sku,
                Command::ReceiveBatch(c) => c.items.iter().any(|i| i.sku_id == *sku),
                _ => false,
            };
            if !named && !entry.txns.iter().any(|t| t.sku_id == *sku) {
                return false;
            }
        }
        if let Some(order) = &self.order {
            let named = matches!(&entry.command, Command::Reserve(c) if c.order_id == *order);
            if !named && !entry.txns.iter().any(|t| t.order_id == *order) {
                return false;
            }
        }
        if let Some(id) = self.reservation {
            let named = match &entry.command {
                Command::Confirm(c) => c.reservation_id == id,
                Command::Release(c) => c.reservation_id == id,
                Command::Expire(c) => c.ids.contains(&id),
                _ => false,
            };
            let rendered = id.to_string();
            if !named && !entry.txns.iter().any(|t| t.kind != TxnKind::Receive && t.ref_id == rendered) {
                return false;
            }
        }
        true
    }
}

fn list(out: &mut impl Write, args: ListArgs) -> Result<ExitCode, CtlError> {
    let opened = open(&args.source.data_dir)?;
    let mut shards: Vec<u16> = (0..opened.shards()).collect();
    if let Some(shard) = args.shard {
        opened.check_shard(shard)?;
        shards.retain(|s| *s == shard);
    }
    if let Some(id) = args.reservation {
        opened.check_shard(id.shard())?;
        shards.retain(|s| *s == id.shard());
    }
    if let Some(sku) = &args.sku {
        let home = shard_for_sku(sku, opened.shards());
        shards.retain(|s| *s == home);
    }
    let filter =
        Filter { sku: args.sku, order: args.order, reservation: args.reservation, from: args.from, to: args.to };
    let journals = shards.iter().map(|s| opened.journal(*s)).collect::<Result<Vec<_>, _>>()?;
    note_truncated(&journals)?;
    let limit = args.limit.unwrap_or(usize::MAX);
    if args.format == Format::Table {
        writeln!(out, "{:>5} {:>8} {:<24} {:<8} {:>4}  DETAILS", "SHARD", "SEQ", "TIME", "COMMAND", "TXNS")?;
    }
    let mut matched = 0usize;
    for item in Merged::new(&journals)? {
        if matched >= limit {
            break;
        }
        let (shard, entry) = item?;
        if !filter.matches(&entry) {
            continue;
        }
        matched += 1;
        match args.format {
            Format::Table => writeln!(
                out,
                "{:>5} {:>8} {:<24} {:<8} {:>4}  {}",
                shard,
                entry.seq,
                fmt_time(entry.at),
                entry.command.name(),
                entry.txns.len(),
                entry_details(&entry)
            )?,
            Format::Jsonl => writeln!(out, "{}", entry_json(shard, &entry))?,
        }
    }
    if args.format == Format::Table {
        writeln!(out, "{matched} entries")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Says on stderr when a shard's journal no longer holds its oldest
/// entries (truncated after a snapshot), so a listing starts later.
fn note_truncated(journals: &[ShardJournal]) -> Result<(), CtlError> {
    for journal in journals {
        if let Some(first) = journal.first_seq()?.filter(|first| *first > 1) {
            let _ = writeln!(
                io::stderr(),
                "inventoryctl journal: note: shard {}'s journal starts at seq {first}; \
                 seq 1..{} were truncated after a snapshot",
                journal.shard(),
                first - 1
            );
        }
    }
    Ok(())
}

type EntryIter<'a> = Box<dyn Iterator<Item = Result<Entry, JournalError>> + 'a>;

/// The entries of several shards as one stream, oldest first (ties: lower
/// shard first). Each shard's entries are in sequence order and their times
/// never go backwards, so merging the heads is enough.
struct Merged<'a> {
    shards: Vec<u16>,
    iters: Vec<EntryIter<'a>>,
    heads: Vec<Option<Result<Entry, JournalError>>>,
}

impl<'a> Merged<'a> {
    fn new(journals: &'a [ShardJournal]) -> Result<Merged<'a>, JournalError> {
        let mut merged = Merged { shards: Vec::new(), iters: Vec::new(), heads: Vec::new() };
        for journal in journals {
            let mut iter = journal.read_from(0)?;
            merged.heads.push(iter.next());
            merged.iters.push(iter);
            merged.shards.push(journal.shard());
        }
        Ok(merged)
    }
}

impl Iterator for Merged<'_> {
    type Item = Result<(u16, Entry), JournalError>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut best: Option<(usize, Millis)> = None;
        for (i, head) in self.heads.iter().enumerate() {
            match head {
                // A read error comes out first: the caller stops there.
                Some(Err(_)) => {
                    best = Some((i, 0));
                    break;
                }
                Some(Ok(entry)) if best.is_none_or(|(_, at)| entry.at < at) => best = Some((i, entry.at)),
                _ => {}
            }
        }
        let (i, _) = best?;
        let head = std::mem::replace(&mut self.heads[i], self.iters[i].next());
        head.map(|r| r.map(|entry| (self.shards[i], entry)))
    }
}

/// A value for a table, quoted when it is empty or would blur the columns
/// (and so that control characters never reach the terminal).
fn shown(value: &str) -> String {
    if value.is_empty() || value.chars().any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '=') {
        format!("{value:?}")
    } else {
        value.to_string()
    }
}

/// `key=value`, the value [`shown`].
fn kv(key: &str, value: &str) -> String {
    format!("{key}={}", shown(value))
}

/// The key fields of an entry for a table row. Confirm, release and expire
/// name the SKU and order only in their txns.
fn entry_details(entry: &Entry) -> String {
    let first = entry.txns.first();
    let mut parts = match &entry.command {
        Command::Receive(c) => {
            let mut p = vec![kv("sku", &c.sku_id), kv("warehouse", &c.warehouse_id), format!("qty={}", c.qty)];
            if !c.reference.is_empty() {
                p.push(kv("ref", &c.reference));
            }
            p
        }
        Command::Reserve(c) => {
            let mut p = vec![kv("order", &c.order_id), kv("sku", &c.sku_id), kv("warehouse", &c.warehouse_id)];
            p.push(format!("qty={}", c.qty));
            if let Some(t) = first {
                p.push(kv("reservation", &t.ref_id));
            }
            p
        }
        Command::Confirm(c) => vec![format!("reservation={}", c.reservation_id), kv("payment", &c.payment_id)],
        Command::Release(c) => vec![format!("reservation={}", c.reservation_id), kv("reason", &c.reason)],
        Command::Expire(c) => {
            let mut ids: Vec<String> = c.ids.iter().take(TABLE_IDS_MAX).map(|id| id.to_string()).collect();
            if c.ids.len() > TABLE_IDS_MAX {
                ids.push(format!("+{} more", c.ids.len() - TABLE_IDS_MAX));
            }
            vec![format!("reservations={}", ids.join(","))]
        }
        Command::ReceiveBatch(c) => {
            let units: u64 = c.items.iter().map(|i| i.qty).sum();
            let mut p = vec![format!("items={}", c.items.len()), format!("units={units}")];
            if !c.reference.is_empty() {
                p.push(kv("ref", &c.reference));
            }
            p.push(skus_cell(c.items.iter().map(|i| i.sku_id.as_str())));
            p
        }
        // A command added after this tool: what its txns changed.
        #[allow(unreachable_patterns)]
        _ => vec![skus_cell(entry.txns.iter().map(|t| t.sku_id.as_str()))],
    };
    if matches!(entry.command, Command::Confirm(_) | Command::Release(_)) {
        if let Some(t) = first {
            parts.push(kv("order", &t.order_id));
            parts.push(kv("sku", &t.sku_id));
        }
    }
    if !entry.operator.is_empty() {
        parts.push(kv("operator", &entry.operator));
    }
    parts.join(" ")
}

/// `skus=a,b,c,+N more` (at most [`TABLE_IDS_MAX`] named, repeats dropped).
fn skus_cell<'a>(skus: impl Iterator<Item = &'a str>) -> String {
    let mut named: Vec<&str> = Vec::new();
    let mut more = 0usize;
    for sku in skus {
        if named.contains(&sku) {
            continue;
        }
        if named.len() < TABLE_IDS_MAX {
            named.push(sku);
        } else {
            more += 1;
        }
    }
    let mut cells: Vec<String> = named.into_iter().map(shown).collect();
    if more > 0 {
        cells.push(format!("+{more} more"));
    }
    format!("skus={}", cells.join(","))
}

fn trace_hex(trace_id: u128) -> String {
    format!("{trace_id:032x}")
}

fn levels_json(l: &Levels) -> Value {
    json!({"available": l.available, "reserved": l.reserved, "sold": l.sold})
}

fn command_json(command: &Command) -> Value {
    match command {
        Command::Receive(c) => json!({
            "type": "receive", "skuId": c.sku_id, "warehouseId": c.warehouse_id, "qty": c.qty,
            "idemKey": c.idem_key, "ref": c.reference,
        }),
        Command::Reserve(c) => json!({
            "type": "reserve", "orderId": c.order_id, "skuId": c.sku_id, "warehouseId": c.warehouse_id,
            "qty": c.qty, "idemKey": c.idem_key, "ttlMs": c.ttl_ms, "ttlExplicit": c.ttl_explicit,
        }),
        Command::Confirm(c) => json!({
            "type": "confirm", "reservationId": c.reservation_id.to_string(), "paymentId": c.payment_id,
            "idemKey": c.idem_key,
        }),
        Command::Release(c) => json!({
            "type": "release", "reservationId": c.reservation_id.to_string(), "reason": c.reason,
            "idemKey": c.idem_key,
        }),
        Command::Expire(c) => json!({
            "type": "expire", "reservationIds": c.ids.iter().map(|id| id.to_string()).collect::<Vec<_>>(),
        }),
        Command::ReceiveBatch(c) => json!({
            "type": "receive_batch", "idemKey": c.idem_key, "ref": c.reference,
            "items": c.items.iter().map(|i| json!({"skuId": i.sku_id, "warehouseId": i.warehouse_id, "qty": i.qty}))
                .collect::<Vec<_>>(),
        }),
        // A command added after this tool: its txns still say what changed.
        #[allow(unreachable_patterns)]
        _ => json!({"type": command.name()}),
    }
}

fn txn_json(t: &Txn) -> Value {
    json!({
        "txnId": t.txn_id, "type": t.kind.as_str(), "skuId": t.sku_id, "warehouseId": t.warehouse_id,
        "qty": t.qty, "refId": t.ref_id, "orderId": t.order_id, "detail": t.detail,
        "before": levels_json(&t.before), "after": levels_json(&t.after), "version": t.version,
        "atMs": t.at, "at": fmt_time(t.at),
    })
}

fn entry_json(shard: u16, entry: &Entry) -> Value {
    json!({
        "shard": shard, "seq": entry.seq, "atMs": entry.at, "at": fmt_time(entry.at),
        "traceId": trace_hex(entry.trace_id), "operator": entry.operator,
        "command": command_json(&entry.command),
        "txns": entry.txns.iter().map(txn_json).collect::<Vec<_>>(),
    })
}

// ----- verify ----------------------------------------------------------------

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

fn verify(out: &mut impl Write, source: &Source) -> Result<ExitCode, CtlError> {
    let opened = open(&source.data_dir)?;
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

/// A journal error as "shard S seq N: what is wrong", naming the record.
fn describe(e: &JournalError) -> String {
    match e {
        JournalError::Corrupt { shard, seq, reason } => format!("shard {shard} seq {seq}: corrupt record: {reason}"),
        JournalError::Gap { shard, expected, found } => {
            format!("shard {shard} seq {found}: sequence gap, expected seq {expected}")
        }
        JournalError::Diverged { shard, seq, reason } => format!("shard {shard} seq {seq}: replay diverged: {reason}"),
        other => other.to_string(),
    }
}

// ----- replay ----------------------------------------------------------------

/// How far each shard is replayed, and what to call that point.
struct Point {
    until_seq: Option<(u16, u64)>,
    /// For `--until`, or the time of the `--until-seq` entry.
    at: Option<Millis>,
}

impl Point {
    fn resolve(opened: &Opened, until: Option<Millis>, until_seq: Option<(u16, u64)>) -> Result<Point, CtlError> {
        let Some((shard, seq)) = until_seq else {
            return Ok(Point { until_seq: None, at: until });
        };
        opened.check_shard(shard)?;
        let journal = opened.journal(shard)?;
        let entry = journal.read_from(seq)?.next().transpose()?.filter(|e| e.seq == seq);
        match entry {
            Some(entry) => Ok(Point { until_seq: Some((shard, seq)), at: Some(entry.at) }),
            None => {
                let first = journal.first_seq()?;
                let truncated = match first {
                    Some(first) if first > seq => format!(" (its journal starts at seq {first})"),
                    _ => String::new(),
                };
                Err(CtlError::Usage(format!("shard {shard} has no entry with seq {seq}{truncated}")))
            }
        }
    }

    fn until(&self, shard: u16) -> Until {
        match (self.until_seq, self.at) {
            (Some((s, seq)), _) if s == shard => Until::Seq(seq),
            (_, Some(at)) => Until::Time(at),
            _ => Until::End,
        }
    }

    fn describe(&self) -> String {
        match (self.until_seq, self.at) {
            (Some((shard, seq)), Some(at)) => format!("shard {shard} seq {seq} ({})", fmt_time(at)),
            (_, Some(at)) => fmt_time(at),
            _ => "the end of the journal".to_string(),
        }
    }
}

/// How far a shard was rebuilt: the last sequence included (from a snapshot
/// or the journal) and the time of the last journal entry applied.
struct Replayed {
    shard: u16,
    seq: u64,
    at: Option<Millis>,
}

impl Replayed {
    fn describe(&self) -> String {
        match self.at {
            Some(at) => format!("shard {} replayed to seq {} ({})", self.shard, self.seq, fmt_time(at)),
            None => format!("shard {} replayed to seq {}", self.shard, self.seq),
        }
    }
}

/// A shard rebuilt to a point (from its newest usable snapshot at or before
/// that point, then the journal).
fn replay_to(opened: &Opened, journal: &dyn Journal, until: Until) -> Result<(Shard, Replayed), CtlError> {
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

fn replay(out: &mut impl Write, args: ReplayArgs) -> Result<ExitCode, CtlError> {
    let opened = open(&args.source.data_dir)?;
    let point = Point::resolve(&opened, args.until, args.until_seq)?;
    match (args.target.sku, args.target.order) {
        (Some(sku), _) => replay_sku(out, &opened, &point, &sku, args.format),
        (None, Some(order)) => replay_order(out, &opened, &point, &order, args.format),
        (None, None) => Err(CtlError::Usage("give --sku or --order".into())),
    }
}

fn replay_sku(
    out: &mut impl Write,
    opened: &Opened,
    point: &Point,
    sku: &str,
    format: Format,
) -> Result<ExitCode, CtlError> {
    let home = shard_for_sku(sku, opened.shards());
    let (shard, replayed) = replay_to(opened, &opened.journal(home)?, point.until(home))?;
    let stock = shard.stock(sku);
    if format == Format::Jsonl {
        let warehouses: Vec<Value> = stock
            .iter()
            .flat_map(|s| s.warehouses.iter())
            .map(|w| {
                json!({
                    "warehouseId": w.warehouse_id, "available": w.row.levels.available,
                    "reserved": w.row.levels.reserved, "sold": w.row.levels.sold, "version": w.row.version,
                    "updatedAt": fmt_time(w.row.updated_at),
                })
            })
            .collect();
        let total = stock.as_ref().map(|s| s.total()).unwrap_or_default();
        let line = json!({
            "skuId": sku, "shard": home, "found": stock.is_some(),
            "replayedToSeq": replayed.seq,
            "available": total.available, "reserved": total.reserved, "sold": total.sold,
            "warehouses": warehouses,
        });
        writeln!(out, "{line}")?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(out, "SKU {} as of {}; {}", shown(sku), point.describe(), replayed.describe())?;
    let Some(stock) = stock else {
        writeln!(out, "no stock rows for this SKU at that point")?;
        return Ok(ExitCode::SUCCESS);
    };
    writeln!(
        out,
        "{:<20} {:>10} {:>10} {:>10} {:>8}  UPDATED",
        "WAREHOUSE", "AVAILABLE", "RESERVED", "SOLD", "VERSION"
    )?;
    for w in &stock.warehouses {
        let l = w.row.levels;
        writeln!(
            out,
            "{:<20} {:>10} {:>10} {:>10} {:>8}  {}",
            shown(&w.warehouse_id),
            l.available,
            l.reserved,
            l.sold,
            w.row.version,
            fmt_time(w.row.updated_at)
        )?;
    }
    let t = stock.total();
    writeln!(out, "{:<20} {:>10} {:>10} {:>10}", "TOTAL", t.available, t.reserved, t.sold)?;
    Ok(ExitCode::SUCCESS)
}

fn replay_order(
    out: &mut impl Write,
    opened: &Opened,
    point: &Point,
    order: &str,
    format: Format,
) -> Result<ExitCode, CtlError> {
    let mut holds: Vec<ReservationView> = Vec::new();
    let mut notes = Vec::new();
    for index in 0..opened.shards() {
        let (shard, replayed) = replay_to(opened, &opened.journal(index)?, point.until(index))?;
        holds.extend(shard.order(order));
        notes.push(replayed.describe());
    }
    holds.sort_by_key(|h| (h.created_at, h.reservation_id));
    if format == Format::Jsonl {
        for h in &holds {
            writeln!(out, "{}", hold_json(h))?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(out, "order {} as of {}; {}", shown(order), point.describe(), notes.join(", "))?;
    if holds.is_empty() {
        writeln!(out, "no holds for this order at that point")?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "{:<16} {:<20} {:<12} {:>6} {:<10} {:<24} {:<24} {:<24} DETAIL",
        "RESERVATION", "SKU", "WAREHOUSE", "QTY", "STATUS", "CREATED", "EXPIRES", "UPDATED"
    )?;
    for h in &holds {
        let detail = match (&h.payment_id, &h.release_reason) {
            (Some(p), _) => kv("payment", p),
            (_, Some(r)) => kv("reason", r),
            _ => String::new(),
        };
        writeln!(
            out,
            "{:<16} {:<20} {:<12} {:>6} {:<10} {:<24} {:<24} {:<24} {}",
            h.reservation_id.to_string(),
            shown(&h.sku_id),
            shown(&h.warehouse_id),
            h.qty,
            h.status.as_str(),
            fmt_time(h.created_at),
            fmt_time(h.expire_at),
            fmt_time(h.updated_at),
            detail
        )?;
    }
    writeln!(out, "{} holds", holds.len())?;
    Ok(ExitCode::SUCCESS)
}

fn hold_json(h: &ReservationView) -> Value {
    json!({
        "reservationId": h.reservation_id.to_string(), "orderId": h.order_id, "skuId": h.sku_id,
        "warehouseId": h.warehouse_id, "qty": h.qty, "status": h.status.as_str(),
        "createdAt": fmt_time(h.created_at), "expireAt": fmt_time(h.expire_at), "updatedAt": fmt_time(h.updated_at),
        "paymentId": h.payment_id, "releaseReason": h.release_reason,
    })
}

// ----- history ---------------------------------------------------------------

fn history(out: &mut impl Write, args: HistoryArgs) -> Result<ExitCode, CtlError> {
    let opened = open(&args.source.data_dir)?;
    let shards: Vec<u16> = match &args.target.sku {
        Some(sku) => vec![shard_for_sku(sku, opened.shards())],
        None => (0..opened.shards()).collect(),
    };
    let journals = shards.iter().map(|s| opened.journal(*s)).collect::<Result<Vec<_>, _>>()?;
    let wanted = |t: &Txn| match (&args.target.sku, &args.target.order) {
        (Some(sku), _) => t.sku_id == *sku,
        (None, Some(order)) => t.order_id == *order,
        (None, None) => false,
    };
    note_truncated(&journals)?;
    if args.format == Format::Table {
        writeln!(
            out,
            "{:<24} {:>15} {:<8} {:<16} {:<12} {:>6} {:<16} {:<12} {:<12} {:<14} {:<14} {:>7} {:<32} OPERATOR",
            "TIME",
            "TXN",
            "TYPE",
            "SKU",
            "WAREHOUSE",
            "QTY",
            "REF",
            "ORDER",
            "DETAIL",
            "BEFORE a/r/s",
            "AFTER a/r/s",
            "VERSION",
            "TRACE"
        )?;
    }
    let mut matched = 0u64;
    for item in Merged::new(&journals)? {
        let (shard, entry) = item?;
        for t in entry.txns.iter().filter(|t| wanted(t)) {
            matched += 1;
            match args.format {
                Format::Table => writeln!(
                    out,
                    "{:<24} {:>15} {:<8} {:<16} {:<12} {:>6} {:<16} {:<12} {:<12} {:<14} {:<14} {:>7} {:<32} {}",
                    fmt_time(t.at),
                    t.txn_id,
                    t.kind.as_str(),
                    shown(&t.sku_id),
                    shown(&t.warehouse_id),
                    t.qty,
                    dash(&t.ref_id),
                    dash(&t.order_id),
                    dash(&t.detail),
                    fmt_levels(&t.before),
                    fmt_levels(&t.after),
                    t.version,
                    if entry.trace_id == 0 { "-".to_string() } else { trace_hex(entry.trace_id) },
                    dash(&entry.operator)
                )?,
                Format::Jsonl => {
                    let mut line = txn_json(t);
                    line["shard"] = json!(shard);
                    line["seq"] = json!(entry.seq);
                    line["command"] = json!(entry.command.name());
                    line["traceId"] = json!(trace_hex(entry.trace_id));
                    line["operator"] = json!(entry.operator);
                    writeln!(out, "{line}")?;
                }
            }
        }
    }
    if args.format == Format::Table {
        writeln!(out, "{matched} txns")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// A table cell: `-` when empty, else [`shown`].
fn dash(s: &str) -> String {
    if s.is_empty() {
        "-".to_string()
    } else {
        shown(s)
    }
}

fn fmt_levels(l: &Levels) -> String {
    format!("{}/{}/{}", l.available, l.reserved, l.sold)
}

// ----- diff ------------------------------------------------------------------

/// One warehouse row of `GET /api/inventory/{sku}`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServiceRow {
    warehouse_id: String,
    available: u64,
    reserved: u64,
    sold: u64,
    version: u64,
}

#[derive(Deserialize)]
struct ServiceStock {
    warehouses: Vec<ServiceRow>,
}

#[derive(Default)]
struct DiffCounts {
    skus: u64,
    equal: u64,
    different: u64,
    moved_on: u64,
}

fn diff(out: &mut impl Write, args: DiffArgs) -> Result<ExitCode, CtlError> {
    let service = HttpTarget::parse(&args.url)?;
    let opened = open(&args.source.data_dir)?;
    // Shard by shard, so only one rebuilt shard is in memory at a time.
    let mut wanted: BTreeMap<u16, Vec<String>> = BTreeMap::new();
    for sku in &args.sku {
        wanted.entry(shard_for_sku(sku, opened.shards())).or_default().push(sku.clone());
    }
    let mut counts = DiffCounts::default();
    for index in 0..opened.shards() {
        if !args.sku.is_empty() && !wanted.contains_key(&index) {
            continue;
        }
        let (shard, _) = replay_to(&opened, &opened.journal(index)?, Until::End)?;
        let skus: Vec<String> = match wanted.remove(&index) {
            Some(skus) => skus,
            None => {
                let mut all: Vec<String> = shard.rows().map(|(sku, _, _)| sku.to_string()).collect();
                all.dedup();
                all
            }
        };
        for sku in skus {
            let rows: Vec<(String, StockRow)> = shard
                .stock(&sku)
                .map(|s| s.warehouses.into_iter().map(|w| (w.warehouse_id, w.row)).collect())
                .unwrap_or_default();
            let live = service.stock(&sku)?;
            if rows.is_empty() && live.is_none() {
                writeln!(out, "note: {} is neither in the journal nor in the service", kv("sku", &sku))?;
                continue;
            }
            counts.skus += 1;
            compare_sku(out, &sku, &rows, live, &mut counts)?;
        }
    }
    writeln!(
        out,
        "diff: {} SKUs, {} rows equal, {} different, {} moved on since the journal was read (journal {}, service {})",
        counts.skus,
        counts.equal,
        counts.different,
        counts.moved_on,
        opened.origin(),
        args.url
    )?;
    Ok(if counts.different > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// Compares one SKU row by row. The service may have moved on since the
/// journal was read: a row whose service version is higher is counted as
/// moved on, not compared. A lower version (the service lacks journaled
/// changes) or the same version with other values is a difference.
fn compare_sku(
    out: &mut impl Write,
    sku: &str,
    journal: &[(String, StockRow)],
    service: Option<ServiceStock>,
    counts: &mut DiffCounts,
) -> Result<(), CtlError> {
    let mut live: BTreeMap<String, ServiceRow> =
        service.into_iter().flat_map(|s| s.warehouses).map(|r| (r.warehouse_id.clone(), r)).collect();
    for (warehouse, row) in journal {
        let l = row.levels;
        let here = format!("journal {} v{}", fmt_levels(&l), row.version);
        let Some(s) = live.remove(warehouse) else {
            counts.different += 1;
            writeln!(out, "DIFF {} {}: {here}, service has no such row", kv("sku", sku), kv("warehouse", warehouse))?;
            continue;
        };
        let there = format!("service {}/{}/{} v{}", s.available, s.reserved, s.sold, s.version);
        let same = (s.available, s.reserved, s.sold) == (l.available, l.reserved, l.sold);
        if s.version > row.version {
            counts.moved_on += 1;
        } else if s.version < row.version {
            counts.different += 1;
            writeln!(
                out,
                "DIFF {} {}: {here}, {there}: the service is behind the journal",
                kv("sku", sku),
                kv("warehouse", warehouse)
            )?;
        } else if !same {
            counts.different += 1;
            writeln!(out, "DIFF {} {}: {here}, {there}", kv("sku", sku), kv("warehouse", warehouse))?;
        } else {
            counts.equal += 1;
        }
    }
    // Rows the journal does not have yet were created after it was read.
    counts.moved_on += live.len() as u64;
    Ok(())
}

/// A minimal blocking HTTP/1.1 client for one `http://host:port[/prefix]`.
struct HttpTarget {
    host: String,
    port: u16,
    /// `host[:port]` as given, for the Host header.
    authority: String,
    prefix: String,
}

impl HttpTarget {
    fn parse(url: &str) -> Result<HttpTarget, CtlError> {
        let bad = |why: &str| CtlError::Usage(format!("bad --url {url:?}: {why}"));
        let rest = url.strip_prefix("http://").ok_or_else(|| bad("only http:// URLs are supported"))?;
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(bad("expected http://host:port"));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !port.contains(']') => {
                (host, port.parse::<u16>().map_err(|_| bad("the port is not a number from 0 to 65535"))?)
            }
            _ => (authority, 80),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad("no host"));
        }
        Ok(HttpTarget { host: host.to_string(), port, authority: authority.to_string(), prefix: prefix.to_string() })
    }

    /// `GET {url}/api/inventory/{sku}`: `None` when the service has no stock
    /// for the SKU.
    fn stock(&self, sku: &str) -> Result<Option<ServiceStock>, CtlError> {
        let path = format!("{}/api/inventory/{}", self.prefix, utf8_percent_encode(sku, NON_ALPHANUMERIC));
        let (status, body) = self.get(&path)?;
        let snippet = || String::from_utf8_lossy(&body[..body.len().min(200)]).escape_debug().to_string();
        match status {
            200 => serde_json::from_slice(&body)
                .map(Some)
                .map_err(|e| CtlError::Http(format!("GET {path}: unexpected body ({e}): {}", snippet()))),
            404 if serde_json::from_slice::<Value>(&body).is_ok_and(|v| v["code"] == "SKU_NOT_FOUND") => Ok(None),
            _ => Err(CtlError::Http(format!("GET {path}: HTTP {status}: {}", snippet()))),
        }
    }

    fn get(&self, path: &str) -> Result<(u16, Vec<u8>), CtlError> {
        let fail = |what: String| CtlError::Http(format!("GET http://{}{path}: {what}", self.authority));
        let addrs: Vec<_> = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| fail(format!("cannot resolve {}: {e}", self.host)))?
            .collect();
        let mut last = None;
        let mut stream = None;
        for addr in &addrs {
            match TcpStream::connect_timeout(addr, HTTP_CONNECT_TIMEOUT) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let mut stream = stream.ok_or_else(|| {
            fail(format!("cannot connect: {}", last.map_or("no address".to_string(), |e| e.to_string())))
        })?;
        let io = |e: io::Error| fail(e.to_string());
        stream.set_read_timeout(Some(HTTP_IO_TIMEOUT)).map_err(io)?;
        stream.set_write_timeout(Some(HTTP_IO_TIMEOUT)).map_err(io)?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\n\
             User-Agent: inventoryctl\r\nConnection: close\r\n\r\n",
            self.authority
        );
        stream.write_all(request.as_bytes()).map_err(io)?;
        let mut raw = Vec::new();
        stream.take(HTTP_RESPONSE_BYTES_MAX + 1).read_to_end(&mut raw).map_err(io)?;
        if raw.len() as u64 > HTTP_RESPONSE_BYTES_MAX {
            return Err(fail(format!("response larger than {HTTP_RESPONSE_BYTES_MAX} bytes")));
        }
        parse_response(&raw).map_err(fail)
    }
}

/// Status and body of a whole HTTP/1.1 response (`Content-Length`, chunked,
/// or delimited by the connection closing).
fn parse_response(raw: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or("incomplete response header")?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "response header is not UTF-8")?;
    let body = &raw[end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|s| s.get(2..5))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") && value.eq_ignore_ascii_case("chunked") {
            chunked = true;
        } else if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<usize>().map_err(|_| format!("bad Content-Length {value:?}"))?);
        }
    }
    if chunked {
        return dechunk(body).map(|body| (status, body));
    }
    match length {
        Some(n) if n > body.len() => Err(format!("body shorter than its Content-Length {n}")),
        Some(n) => Ok((status, body[..n].to_vec())),
        None => Ok((status, body.to_vec())),
    }
}

fn dechunk(mut raw: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let eol = raw.windows(2).position(|w| w == b"\r\n").ok_or("truncated chunk size")?;
        let line = std::str::from_utf8(&raw[..eol]).map_err(|_| "bad chunk size")?;
        let size = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16).map_err(|_| format!("bad chunk size {size:?}"))?;
        raw = &raw[eol + 2..];
        if size == 0 {
            return Ok(body);
        }
        if raw.len() < size + 2 {
            return Err("truncated chunk".into());
        }
        body.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

// ----- arguments and formatting ----------------------------------------------

/// RFC 3339 in UTC (`2024-05-01T10:00:00Z`, `2024-05-01 10:00:00.250`) or
/// milliseconds since the Unix epoch.
fn parse_time(s: &str) -> Result<Millis, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse::<Millis>().map_err(|_| format!("{s:?} is too large for milliseconds since the epoch"));
    }
    let time = humantime::parse_rfc3339_weak(s)
        .map_err(|e| format!("{s:?} is neither RFC 3339 in UTC nor milliseconds since the epoch: {e}"))?;
    let since = time.duration_since(UNIX_EPOCH).map_err(|_| format!("{s:?} is before 1970"))?;
    Millis::try_from(since.as_millis()).map_err(|_| format!("{s:?} is out of range"))
}

fn parse_reservation(s: &str) -> Result<ReservationId, String> {
    s.parse().map_err(|_| format!("{s:?} is not a reservation id (rsv-<shard>-<seq>)"))
}

fn parse_shard_seq(s: &str) -> Result<(u16, u64), String> {
    let bad = || format!("{s:?} is not SHARD:SEQ (e.g. 0:42)");
    let (shard, seq) = s.split_once(':').ok_or_else(bad)?;
    let shard = shard.trim().parse::<u16>().map_err(|_| bad())?;
    let seq = seq.trim().parse::<u64>().map_err(|_| bad())?;
    if seq == 0 {
        return Err(format!("{s:?}: sequence numbers start at 1"));
    }
    Ok((shard, seq))
}

/// RFC 3339 with milliseconds, or the raw number for a time no calendar
/// format can show.
fn fmt_time(ms: Millis) -> String {
    if ms <= RFC3339_MS_MAX {
        inventory_gateway::api::rfc3339(ms)
    } else {
        format!("{ms}ms")
    }
}

fn now_ms() -> Millis {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as Millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_or_milliseconds() {
        assert_eq!(parse_time("1700000000123"), Ok(1_700_000_000_123));
        assert_eq!(parse_time("2023-11-14T22:13:20.123Z"), Ok(1_700_000_000_123));
        assert_eq!(parse_time("2023-11-14 22:13:20"), Ok(1_700_000_000_000));
        assert_eq!(parse_time(&fmt_time(1_700_000_000_123)), Ok(1_700_000_000_123));
        for bad in ["", "yesterday", "2023-13-01T00:00:00Z", "99999999999999999999999", "-5"] {
            assert!(parse_time(bad).is_err(), "{bad:?} parsed");
        }
        assert_eq!(fmt_time(u64::MAX), format!("{}ms", u64::MAX));
    }

    #[test]
    fn shard_seq_and_reservation_arguments() {
        assert_eq!(parse_shard_seq("1:42"), Ok((1, 42)));
        for bad in ["1", "1:", ":4", "a:1", "1:0", "70000:1", "1:-1"] {
            assert!(parse_shard_seq(bad).is_err(), "{bad:?} parsed");
        }
        assert_eq!(parse_reservation("rsv-1-2"), Ok(ReservationId::new(1, 2)));
        assert!(parse_reservation("rsv-1").is_err());
    }

    #[test]
    fn service_urls() {
        let t = HttpTarget::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.authority.as_str(), t.prefix.as_str()),
            ("127.0.0.1", 8080, "127.0.0.1:8080", "")
        );
        let t = HttpTarget::parse("http://[::1]:9/inv/").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.prefix.as_str()), ("::1", 9, "/inv"));
        assert_eq!(HttpTarget::parse("http://example").unwrap().port, 80);
        for bad in ["https://x", "127.0.0.1:8080", "http://", "http://:80", "http://h:port", "http://u@h:1"] {
            assert!(HttpTarget::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn http_responses_with_length_chunks_or_close() {
        let r = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}trailing";
        assert_eq!(parse_response(r), Ok((200, b"{}".to_vec())));
        let r = b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=1\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(r), Ok((404, b"abcde".to_vec())));
        assert_eq!(parse_response(b"HTTP/1.0 503 x\r\n\r\nbusy"), Ok((503, b"busy".to_vec())));
        for bad in [&b"HTTP/1.1 200 OK\r\n"[..], b"SSH-2.0\r\n\r\n", b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n{}"]
        {
            assert!(parse_response(bad).is_err());
        }
        assert!(dechunk(b"zz\r\n").is_err());
        assert!(dechunk(b"5\r\nab").is_err());
    }

    #[test]
    fn table_values_are_quoted_when_they_would_blur_columns() {
        assert_eq!(kv("sku", "a-1"), "sku=a-1");
        assert_eq!(kv("ref", ""), "ref=\"\"");
        assert_eq!(kv("reason", "out of stock"), "reason=\"out of stock\"");
        assert_eq!(shown("a\x1b[2J"), "\"a\\u{1b}[2J\"");
    }
}
