//! The sled backend: a journal dir holds one small sled database for the
//! journal's metadata and, beside it, one sled database per shard, each
//! holding that shard's tree (`shard-<i>/` under the dir). A shard's flush
//! then writes and waits for its own log only: sled flushes a whole
//! database, whichever tree it is called on, so with the shards' trees in
//! one database every shard's flush also waited for the other shards'
//! writes, and both synced the same log file. Journals made before keep
//! every tree in the one database and are still opened as they are.
//!
//! A tree holds *chunks*: the key is the big-endian sequence number of the
//! chunk's first entry, the value up to [`CHUNK_BYTES`] of consecutive framed
//! records. One group commit writes its batch as one or a few chunks, so sled
//! does one insert per chunk instead of one per entry (see `DESIGN.md`).
//!
//! A record too large for a chunk (a bulk receipt of thousands of rows, a
//! large expiry) is *split*: its first [`CHUNK_BYTES`] go in a head value
//! under the record's own key, the rest in part values keyed by the record's
//! sequence followed by the part number (12 bytes, so they sort right after
//! the head and before the next record). No single write is then larger than
//! a chunk: a record of megabytes written as one value went to a blob file
//! of its own (a file created, written and synced) on every write.
//!
//! sled's flush writes its log with `pwrite` (on the flushing thread: the
//! vendored sled is patched for that, `vendor/sled/PATCHED.md`) and waits
//! for it with `sync_file_range`, which neither flushes the disk's write cache nor
//! commits the file's size: after a power loss the flushed writes can be
//! gone. So every flush here is followed by an `fdatasync` of the log file
//! of the database flushed (`db` in its dir), and a write is durable only
//! once that returns. The vendored sled writes each new 512 KiB segment of
//! its log with zeros before using it, so that sync has a new file size to
//! commit once per segment, not on every append.
//!
//! sled keeps the first I/O error a database meets (a full disk, say) and
//! fails every later operation of that database with it, for as long as it
//! is open. So each database sits in a [`Slot`] that every handle on it
//! goes through, and a journal whose `recover` fails in place closes the
//! database and opens it again from what is on disk.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;

use inventory_core::Entry;

use crate::codec::{decode, encode_into, FORMAT_VERSION};
use crate::{Journal, JournalError, RecordVisitor};

const META_TREE: &str = "meta";
/// sled's page cache, shared out among the shards' databases. The journal
/// is written once and read back only at start-up and by the PostgreSQL
/// writer close behind: a small cache is enough.
const CACHE_BYTES: u64 = 128 * 1024 * 1024;
/// The least page cache of one shard's database.
const SHARD_CACHE_MIN_BYTES: u64 = 16 * 1024 * 1024;
const SHARDS_KEY: &str = "shards";
/// Metadata key present in journals that keep each shard in a database of
/// its own; the shards' trees are in the metadata database where it is not.
const LAYOUT_KEY: &str = "layout";
const LAYOUT_DB_PER_SHARD: &[u8] = b"db-per-shard";

/// First byte of a chunk value. A value that starts with [`FORMAT_VERSION`]
/// instead is a single record (the layout before chunks), still readable.
const CHUNK_TAG: u8 = 0xC1;
const CHUNK_HEADER: usize = 5;
/// First byte of the head of a split record: `[SPLIT_TAG][parts: u32 LE]`
/// then the record's first bytes.
const SPLIT_TAG: u8 = 0xC2;
const SPLIT_HEADER: usize = 5;
/// First byte of each further part of a split record, then its bytes.
const PART_TAG: u8 = 0xC3;
/// Upper bound of a chunk value, well under sled's blob threshold (a quarter
/// of its 512 KiB segment), so chunks stay inline in sled's log.
pub const CHUNK_BYTES: usize = 64 * 1024;

/// An open journal. Cheap to clone; shared by the shard journals.
#[derive(Clone)]
pub struct SledStore {
    meta: Arc<Slot>,
    shards: u16,
    /// The database that holds each shard's tree: its own, or `meta` in a
    /// journal made before shards had databases of their own.
    dbs: Arc<[Arc<Slot>]>,
}

/// How long opening a database again waits for sled to let go of the
/// files of the handle just closed.
const REOPEN_WAIT: Duration = Duration::from_millis(500);

/// A sled database that can be closed and opened again, shared by every
/// handle on it (the shard's journal, its readers, the store).
struct Slot {
    dir: PathBuf,
    cache_bytes: u64,
    /// `None` after a reopen that could not finish; the next use opens it.
    open: RwLock<Option<Db>>,
}

impl Slot {
    fn open(dir: &Path, cache_bytes: u64) -> Result<Arc<Slot>, JournalError> {
        let db = Db::open(dir, cache_bytes)?;
        Ok(Arc::new(Slot { dir: dir.to_path_buf(), cache_bytes, open: RwLock::new(Some(db)) }))
    }

    /// The open database.
    fn db(&self) -> Result<Db, JournalError> {
        if let Some(db) = &*self.open.read() {
            return Ok(db.clone());
        }
        let mut open = self.open.write();
        if open.is_none() {
            *open = Some(Db::open_when_unlocked(&self.dir, self.cache_bytes)?);
        }
        Ok(open.clone().expect("opened"))
    }

    /// Closes the database and opens it again from what is on disk. A
    /// handle still in use elsewhere (a reader's iteration) keeps the old
    /// one open; then this fails, and the next use opens it.
    fn reopen(&self) -> Result<(), JournalError> {
        let mut open = self.open.write();
        drop(open.take());
        *open = Some(Db::open_when_unlocked(&self.dir, self.cache_bytes)?);
        Ok(())
    }
}

/// A sled database and its log file, synced after each flush.
#[derive(Clone)]
struct Db {
    db: sled::Db,
    log: Arc<File>,
}

impl Db {
    fn open(dir: &Path, cache_bytes: u64) -> Result<Db, JournalError> {
        let config = sled::Config::new().path(dir).mode(sled::Mode::HighThroughput).cache_capacity(cache_bytes);
        let db = match config.open() {
            // sled writes its own snapshot to `snap.<lsn>.generating`, then
            // renames it into place; one that failed (a full disk, a crash)
            // stays behind, and sled then takes it for its newest snapshot
            // and refuses the database as corrupt. It was never finished:
            // without it sled reads the snapshot before it and its log.
            Err(sled::Error::Corruption { .. }) if remove_unfinished_snapshots(dir)? > 0 => {
                Db::when_unlocked(|| config.open().map_err(JournalError::from))?
            }
            opened => opened?,
        };
        let log_path = dir.join(SLED_LOG_FILE);
        let log = Arc::new(File::open(&log_path).map_err(|e| {
            JournalError::Io(std::io::Error::new(
                e.kind(),
                format!("sled's log file {} cannot be opened to sync it: {e}", log_path.display()),
            ))
        })?);
        Ok(Db { db, log })
    }

    /// [`Db::open`], again while sled still holds the lock of a handle
    /// on it just closed: sled lets go of its files once its deferred frees
    /// have run, not at once.
    fn open_when_unlocked(dir: &Path, cache_bytes: u64) -> Result<Db, JournalError> {
        Db::when_unlocked(|| Db::open(dir, cache_bytes))
    }

    fn when_unlocked<T>(mut open: impl FnMut() -> Result<T, JournalError>) -> Result<T, JournalError> {
        let deadline = Instant::now() + REOPEN_WAIT;
        loop {
            match open() {
                Err(e) if e.to_string().contains("could not acquire lock") && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                opened => return opened,
            }
        }
    }

    fn flush(&self) -> Result<(), JournalError> {
        flush_durably(&self.db, &self.log)
    }
}

impl SledStore {
    /// Opens (or creates) the journal under `dir`. The shard count is fixed
    /// when the journal is created, because reservation ids and SKU routing
    /// depend on it: `requested` must match it afterwards, or be `None`.
    pub fn open(dir: &Path, requested: Option<u16>, default_shards: u16) -> Result<SledStore, JournalError> {
        // The whole cache: in a journal made before shards had databases of
        // their own, this one holds every shard. Otherwise it holds two keys,
        // and a cache is only ever filled by what is read or written.
        let meta = Slot::open(dir, CACHE_BYTES)?;
        let tree = meta.db()?.db.open_tree(META_TREE)?;
        let (shards, own_dbs, created) = match tree.get(SHARDS_KEY)? {
            Some(v) => {
                let bytes: [u8; 2] = v.as_ref().try_into().map_err(|_| JournalError::Corrupt {
                    shard: 0,
                    seq: 0,
                    reason: "bad shard count in journal metadata".into(),
                })?;
                let stored = u16::from_le_bytes(bytes);
                if let Some(requested) = requested.filter(|r| *r != stored) {
                    return Err(JournalError::ShardCountMismatch { stored, requested });
                }
                let own_dbs = match tree.get(LAYOUT_KEY)? {
                    None => false,
                    Some(v) if v == LAYOUT_DB_PER_SHARD => true,
                    Some(v) => {
                        return Err(JournalError::Corrupt {
                            shard: 0,
                            seq: 0,
                            reason: format!("unknown journal layout {:?}", String::from_utf8_lossy(&v)),
                        })
                    }
                };
                (stored, own_dbs, false)
            }
            None => (requested.unwrap_or(default_shards).max(1), true, true),
        };
        let dbs: Arc<[Arc<Slot>]> = if own_dbs {
            let cache = (CACHE_BYTES / u64::from(shards)).max(SHARD_CACHE_MIN_BYTES);
            (0..shards).map(|i| Slot::open(&dir.join(shard_tree(i)), cache)).collect::<Result<_, _>>()?
        } else {
            (0..shards).map(|_| meta.clone()).collect()
        };
        if created {
            // Created: the shards' databases exist before the metadata that
            // names them is durable, so a crash in between leaves a journal
            // that is created afresh on the next open.
            tree.insert(LAYOUT_KEY, LAYOUT_DB_PER_SHARD)?;
            tree.insert(SHARDS_KEY, &shards.to_le_bytes())?;
            meta.db()?.flush()?;
        }
        Ok(SledStore { meta, shards, dbs })
    }

    pub fn shards(&self) -> u16 {
        self.shards
    }

    pub fn journal(&self, shard: u16) -> Result<SledJournal, JournalError> {
        assert!(shard < self.shards);
        let slot = self.dbs[usize::from(shard)].clone();
        let journal = SledJournal { slot, shard, tree_name: shard_tree(shard), record: Vec::new() };
        journal.open()?;
        Ok(journal)
    }

    /// Flushes everything; used at shutdown.
    pub fn flush(&self) -> Result<(), JournalError> {
        for slot in self.dbs.iter() {
            slot.db()?.flush()?;
        }
        self.meta.db()?.flush()
    }
}

/// The name of a shard's tree, and of the dir of its database.
fn shard_tree(shard: u16) -> String {
    format!("shard-{shard}")
}

/// Removes sled's unfinished snapshots (`snap.<lsn>.generating`) from a
/// database's dir; returns how many there were.
fn remove_unfinished_snapshots(dir: &Path) -> Result<usize, JournalError> {
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("snap.") && name.ends_with(".generating") {
            tracing::warn!(file = %path.display(), "journal: removing an unfinished sled snapshot");
            std::fs::remove_file(&path)?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// The file of a sled 0.34 database that holds its log.
const SLED_LOG_FILE: &str = "db";

/// sled's flush (of the whole database, whichever tree it is called on),
/// then the sync of its log file that makes it durable (module doc).
fn flush_durably(tree: &sled::Tree, log: &File) -> Result<(), JournalError> {
    tree.flush()?;
    log.sync_data()?;
    Ok(())
}

pub struct SledJournal {
    /// The database holding the shard's tree.
    slot: Arc<Slot>,
    shard: u16,
    /// The name of the shard's tree.
    tree_name: String,
    /// The record being appended, kept between appends.
    record: Vec<u8>,
}

/// Builds chunk values: `[CHUNK_TAG][count: u32 LE]` then, per entry,
/// `[len: u32 LE][framed record]`, entries with consecutive sequences.
struct ChunkWriter {
    first: u64,
    count: u32,
    bytes: Vec<u8>,
}

impl ChunkWriter {
    fn new(first: u64) -> ChunkWriter {
        let mut bytes = Vec::with_capacity(CHUNK_BYTES);
        bytes.push(CHUNK_TAG);
        bytes.extend_from_slice(&0u32.to_le_bytes());
        ChunkWriter { first, count: 0, bytes }
    }

    fn next_seq(&self) -> u64 {
        self.first + u64::from(self.count)
    }

    fn push(&mut self, record: &[u8]) {
        self.bytes.extend_from_slice(&(record.len() as u32).to_le_bytes());
        self.bytes.extend_from_slice(record);
        self.count += 1;
    }

    fn finish(mut self) -> (u64, Vec<u8>) {
        self.bytes[1..CHUNK_HEADER].copy_from_slice(&self.count.to_le_bytes());
        (self.first, self.bytes)
    }
}

/// Splits one stored value into its framed records: `(seq, record)`.
fn records(shard: u16, first: u64, value: &[u8]) -> Result<Vec<(u64, &[u8])>, JournalError> {
    let corrupt = |reason: String| JournalError::Corrupt { shard, seq: first, reason };
    match value.first() {
        Some(&FORMAT_VERSION) => return Ok(vec![(first, value)]),
        Some(&CHUNK_TAG) if value.len() >= CHUNK_HEADER => {}
        _ => return Err(corrupt(format!("unknown chunk header in a value of {} bytes", value.len()))),
    }
    let count = u32::from_le_bytes(value[1..CHUNK_HEADER].try_into().unwrap());
    let mut out = Vec::with_capacity(count as usize);
    let mut at = CHUNK_HEADER;
    for i in 0..u64::from(count) {
        let seq = first + i;
        let len = value
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()) as usize)
            .ok_or_else(|| JournalError::Corrupt { shard, seq, reason: "chunk ends inside a length".into() })?;
        let record = value.get(at + 4..at + 4 + len).ok_or_else(|| JournalError::Corrupt {
            shard,
            seq,
            reason: "chunk ends inside a record".into(),
        })?;
        out.push((seq, record));
        at += 4 + len;
    }
    if at != value.len() {
        return Err(corrupt(format!("{} bytes after the last record of the chunk", value.len() - at)));
    }
    Ok(out)
}

/// The sequence a key belongs to: the first record of a chunk, or the split
/// record a part key (`seq` then the part number) belongs to.
fn key_seq(shard: u16, key: &[u8]) -> Result<u64, JournalError> {
    match key.len() {
        8 | 12 => Ok(u64::from_be_bytes(key[..8].try_into().unwrap())),
        n => Err(JournalError::Corrupt { shard, seq: 0, reason: format!("key of {n} bytes") }),
    }
}

fn part_key(seq: u64, part: u32) -> [u8; 12] {
    let mut key = [0u8; 12];
    key[..8].copy_from_slice(&seq.to_be_bytes());
    key[8..].copy_from_slice(&part.to_be_bytes());
    key
}

/// Writes one record as a head value and parts, each at most [`CHUNK_BYTES`].
fn write_split(writes: &mut Vec<(sled::IVec, sled::IVec)>, seq: u64, record: &[u8]) {
    let room = CHUNK_BYTES - SPLIT_HEADER;
    let pieces: Vec<&[u8]> = std::iter::once(&record[..room]).chain(record[room..].chunks(room)).collect();
    let mut head = Vec::with_capacity(CHUNK_BYTES);
    head.push(SPLIT_TAG);
    head.extend_from_slice(&(pieces.len() as u32).to_le_bytes());
    head.extend_from_slice(pieces[0]);
    writes.push((seq.to_be_bytes()[..].into(), head.into()));
    for (part, piece) in pieces.iter().enumerate().skip(1) {
        let mut value = Vec::with_capacity(1 + piece.len());
        value.push(PART_TAG);
        value.extend_from_slice(piece);
        writes.push((part_key(seq, part as u32)[..].into(), value.into()));
    }
}

/// The number of parts a split head announces, if `value` is one.
fn split_parts(shard: u16, seq: u64, value: &[u8]) -> Result<Option<u32>, JournalError> {
    match value.first() {
        Some(&SPLIT_TAG) if value.len() > SPLIT_HEADER => {
            let parts = u32::from_le_bytes(value[1..SPLIT_HEADER].try_into().unwrap());
            if parts < 2 {
                return Err(JournalError::Corrupt { shard, seq, reason: format!("split record of {parts} parts") });
            }
            Ok(Some(parts))
        }
        Some(&SPLIT_TAG) => Err(JournalError::Corrupt { shard, seq, reason: "split record head cut short".into() }),
        _ => Ok(None),
    }
}

/// The shard's tree in the database open now, and that database's log.
struct Open {
    tree: sled::Tree,
    log: Arc<File>,
}

impl Open {
    fn flush(&self) -> Result<(), JournalError> {
        flush_durably(&self.tree, &self.log)
    }
}

impl SledJournal {
    fn open(&self) -> Result<Open, JournalError> {
        let Db { db, log } = self.slot.db()?;
        Ok(Open { tree: db.open_tree(&self.tree_name)?, log })
    }

    /// The stored values holding entries `from..`, from the chunk that
    /// holds `from`.
    fn records_from(&self, from: u64) -> Result<Records, JournalError> {
        let tree = self.open()?.tree;
        let start = match self.chunk_at(&tree, from)? {
            Some((first, _)) => first,
            None => from,
        };
        Ok(Records { shard: self.shard, from, values: tree.range(start.to_be_bytes()..), joined: Vec::new() })
    }

    /// The value that holds `seq`, if any: the last key at or before it, or
    /// the head of the split record whose part that is.
    fn chunk_at(&self, tree: &sled::Tree, seq: u64) -> Result<Option<(u64, sled::IVec)>, JournalError> {
        match tree.range(..=seq.to_be_bytes()).next_back().transpose()? {
            Some((key, value)) if key.len() == 8 => Ok(Some((key_seq(self.shard, &key)?, value))),
            Some((key, _)) => {
                let first = key_seq(self.shard, &key)?;
                let head = tree.get(first.to_be_bytes())?.ok_or_else(|| JournalError::Corrupt {
                    shard: self.shard,
                    seq: first,
                    reason: "part of a split record without its head".into(),
                })?;
                Ok(Some((first, head)))
            }
            None => Ok(None),
        }
    }

    /// Rewrites the chunk at `first` keeping only the records for which
    /// `keep` holds (a contiguous range), under the key of the first kept.
    fn trim_chunk(
        &self,
        writes: &mut sled::Batch,
        first: u64,
        value: &[u8],
        keep: impl Fn(u64) -> bool,
    ) -> Result<u64, JournalError> {
        let records = records(self.shard, first, value)?;
        let kept: Vec<_> = records.iter().filter(|(seq, _)| keep(*seq)).collect();
        writes.remove(&first.to_be_bytes());
        if let Some((start, _)) = kept.first() {
            let mut chunk = ChunkWriter::new(*start);
            for (_, record) in &kept {
                chunk.push(record);
            }
            let (key, bytes) = chunk.finish();
            writes.insert(&key.to_be_bytes(), bytes);
        }
        Ok((records.len() - kept.len()) as u64)
    }
}

/// Reads entries in order from a range of stored values, joining split
/// records. A record that fails to decode ends the read: nothing after it
/// can be trusted to be in sequence.
/// Walks the stored values of a range, joining split records.
struct Records {
    shard: u16,
    from: u64,
    values: sled::Iter,
    /// A split record's parts joined, kept from record to record.
    joined: Vec<u8>,
}

impl Records {
    /// Reads the next stored value (with its parts) and calls `f` with each
    /// record in it at or after `from`; false at the end of the range.
    fn next_value(&mut self, mut f: impl FnMut(u64, &[u8])) -> Result<bool, JournalError> {
        let Some(item) = self.values.next() else { return Ok(false) };
        let (key, value) = item?;
        let (shard, first) = (self.shard, key_seq(self.shard, &key)?);
        if key.len() != 8 {
            return Err(JournalError::Corrupt {
                shard,
                seq: first,
                reason: "part of a split record without its head".into(),
            });
        }
        if let Some(parts) = split_parts(shard, first, &value)? {
            let record = &mut self.joined;
            record.clear();
            record.reserve(parts as usize * CHUNK_BYTES);
            record.extend_from_slice(&value[SPLIT_HEADER..]);
            for part in 1..parts {
                let cut = || JournalError::Corrupt {
                    shard,
                    seq: first,
                    reason: format!("split record lacks part {part} of {parts}"),
                };
                let (key, value) = self.values.next().ok_or_else(cut)??;
                if key.as_ref() != part_key(first, part) || value.first() != Some(&PART_TAG) {
                    return Err(cut());
                }
                record.extend_from_slice(&value[1..]);
            }
            if first >= self.from {
                f(first, record);
            }
            return Ok(true);
        }
        for (seq, record) in records(shard, first, &value)? {
            if seq >= self.from {
                f(seq, record);
            }
        }
        Ok(true)
    }
}

struct Reader {
    records: Records,
    ready: std::collections::VecDeque<Result<Entry, JournalError>>,
    failed: bool,
}

impl Reader {
    /// Decodes the next stored value (with its parts) into `ready`; false
    /// at the end of the range.
    fn fill(&mut self) -> Result<bool, JournalError> {
        let (shard, ready) = (self.records.shard, &mut self.ready);
        self.records.next_value(|seq, record| ready.push_back(decode(shard, seq, record)))
    }
}

impl Iterator for Reader {
    type Item = Result<Entry, JournalError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        while self.ready.is_empty() {
            match self.fill() {
                Err(e) => self.ready.push_back(Err(e)),
                Ok(false) => return None,
                Ok(true) => {}
            }
        }
        let item = self.ready.pop_front()?;
        self.failed = item.is_err();
        Some(item)
    }
}

impl SledJournal {
    /// Deletes every entry from `next_seq` on and flushes the deletion.
    fn recover_in_place(&self, next_seq: u64) -> Result<(), JournalError> {
        let open = self.open()?;
        let mut removals = sled::Batch::default();
        if let Some((first, value)) = self.chunk_at(&open.tree, next_seq)?.filter(|(first, _)| *first < next_seq) {
            // A split record holds one entry: before `next_seq`, so kept.
            if split_parts(self.shard, first, &value)?.is_none() {
                self.trim_chunk(&mut removals, first, &value, |seq| seq < next_seq)?;
            }
        }
        for key in open.tree.range(next_seq.to_be_bytes()..).keys() {
            removals.remove(key?);
        }
        open.tree.apply_batch(removals)?;
        open.flush()
    }
}

impl Journal for SledJournal {
    fn append(&mut self, batch: &[Entry]) -> Result<(), JournalError> {
        let mut writes: Vec<(sled::IVec, sled::IVec)> = Vec::new();
        let mut chunk: Option<ChunkWriter> = None;
        let record = &mut self.record;
        for entry in batch {
            encode_into(entry, record);
            let record = &record[..];
            debug_assert_eq!(decode(self.shard, entry.seq, record).as_ref().ok(), Some(entry));
            if CHUNK_HEADER + 4 + record.len() > CHUNK_BYTES {
                if let Some(c) = chunk.take() {
                    let (key, bytes) = c.finish();
                    writes.push((key.to_be_bytes()[..].into(), bytes.into()));
                }
                write_split(&mut writes, entry.seq, record);
                continue;
            }
            let full = chunk
                .as_ref()
                .is_some_and(|c| c.next_seq() != entry.seq || c.bytes.len() + 4 + record.len() > CHUNK_BYTES);
            if full {
                let (key, bytes) = chunk.take().unwrap().finish();
                writes.push((key.to_be_bytes()[..].into(), bytes.into()));
            }
            chunk.get_or_insert_with(|| ChunkWriter::new(entry.seq)).push(record);
        }
        if let Some(c) = chunk {
            let (key, bytes) = c.finish();
            writes.push((key.to_be_bytes()[..].into(), bytes.into()));
        }
        // The group commit: its values, then one flush. One value (one
        // chunk: the usual commit) is one insert, atomic on its own. An
        // `apply_batch` costs more: sled first seals its current log buffer
        // and writes a batch manifest in a buffer of its own, each one
        // more log write that the flush waits for. So only a commit of
        // several values (past a chunk, or a split record) takes one, to
        // stay all or nothing.
        let open = self.open()?;
        if writes.len() == 1 {
            let (key, value) = writes.pop().expect("one value");
            open.tree.insert(key, value)?;
        } else {
            let mut all = sled::Batch::default();
            for (key, value) in writes {
                all.insert(key, value);
            }
            open.tree.apply_batch(all)?;
        }
        open.flush()
    }

    /// Recovers in place; if that fails (sled keeps the I/O error that
    /// failed the append, see the module doc), closes the shard's database,
    /// opens it again from disk and recovers that.
    fn recover(&mut self, next_seq: u64) -> Result<(), JournalError> {
        let Err(e) = self.recover_in_place(next_seq) else { return Ok(()) };
        tracing::warn!(shard = self.shard, error = %e, "journal: recovering in place failed; opening the database again");
        self.slot.reopen()?;
        self.recover_in_place(next_seq)
    }

    fn read_from(&self, from: u64) -> Result<Box<dyn Iterator<Item = Result<Entry, JournalError>> + '_>, JournalError> {
        Ok(Box::new(Reader { records: self.records_from(from)?, ready: Default::default(), failed: false }))
    }

    fn visit_records(&self, from: u64, f: RecordVisitor<'_>) -> Result<(), JournalError> {
        let mut records = self.records_from(from)?;
        let mut walking = Ok(true);
        while walking.as_ref().is_ok_and(|go| *go) {
            let more = records.next_value(|seq, record| {
                if let Ok(true) = walking {
                    walking = f(seq, record);
                }
            })?;
            if !more {
                break;
            }
        }
        walking.map(|_| ())
    }

    fn shard(&self) -> u16 {
        self.shard
    }

    fn reader(&self) -> Box<dyn Journal + Sync> {
        Box::new(SledJournal {
            slot: self.slot.clone(),
            shard: self.shard,
            tree_name: self.tree_name.clone(),
            record: Vec::new(),
        })
    }

    fn truncate_before(&self, keep_from: u64) -> Result<u64, JournalError> {
        let open = self.open()?;
        let mut removed = 0;
        loop {
            // In slices, so a long truncation never holds one huge batch.
            let chunks: Vec<(sled::IVec, sled::IVec)> =
                open.tree.range(..keep_from.to_be_bytes()).take(1_024).collect::<Result<_, _>>()?;
            if chunks.is_empty() {
                break;
            }
            let mut batch = sled::Batch::default();
            for (key, value) in &chunks {
                let first = key_seq(self.shard, key)?;
                // A split record sorts before `keep_from` only if it is
                // wholly before it. Its head counts the entry and takes all
                // its parts along in the same batch, so a reader never sees
                // parts without their head, even where a slice ends between
                // them (the parts then come up again in the next slice).
                if key.len() == 12 {
                    batch.remove(key);
                    continue;
                }
                if let Some(parts) = split_parts(self.shard, first, value)? {
                    batch.remove(key);
                    for part in 1..parts {
                        batch.remove(&part_key(first, part));
                    }
                    removed += 1;
                    continue;
                }
                let count = records(self.shard, first, value)?.len() as u64;
                if first + count <= keep_from {
                    batch.remove(key);
                    removed += count;
                } else {
                    // The chunk that straddles `keep_from` keeps its tail.
                    removed += self.trim_chunk(&mut batch, first, value, |seq| seq >= keep_from)?;
                }
            }
            open.tree.apply_batch(batch)?;
        }
        open.flush()?;
        Ok(removed)
    }

    fn first_seq(&self) -> Result<Option<u64>, JournalError> {
        match self.open()?.tree.first()? {
            Some((key, _)) => Ok(Some(key_seq(self.shard, &key)?)),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::encode;
    use crate::test_support::{big, entry};

    impl SledJournal {
        fn tree(&self) -> sled::Tree {
            self.open().unwrap().tree
        }
    }

    #[test]
    fn an_append_is_durable_only_once_sleds_log_file_is_synced() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), Some(1), 1).unwrap();
        let mut j = store.journal(0).unwrap();
        j.append(&[entry(1)]).unwrap();
        // A handle whose sync fails (`fdatasync` of a pipe is EINVAL) in
        // place of the log file's: the append must fail, not be reported
        // written.
        let (_read, write) = std::io::pipe().unwrap();
        if let Some(db) = j.slot.open.write().as_mut() {
            db.log = Arc::new(File::from(std::os::fd::OwnedFd::from(write)));
        }
        assert!(matches!(j.append(&[entry(2)]), Err(JournalError::Io(_))));
        assert!(j.recover_in_place(2).is_err(), "recover syncs too");
        // Recovering opens the database again, with its real log file.
        j.recover(2).unwrap();
        assert_eq!(seqs(&j, 1), vec![1]);
        j.append(&[entry(2)]).unwrap();
        // The handle synced is that of the file sled writes the shard's log
        // to, in the shard's own database.
        use std::os::unix::fs::MetadataExt;
        let log = std::fs::metadata(dir.path().join("shard-0").join(SLED_LOG_FILE)).unwrap();
        assert_eq!(store.dbs[0].db().unwrap().log.metadata().unwrap().ino(), log.ino());
        assert!(log.len() > 0);
        drop((j, store));
        let store = when_unlocked(|| SledStore::open(dir.path(), None, 1)).unwrap();
        assert_eq!(seqs(&store.journal(0).unwrap(), 1), vec![1, 2]);
    }

    #[test]
    fn an_unfinished_sled_snapshot_does_not_make_the_database_unopenable() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path(), Some(1), 1).unwrap();
            store.journal(0).unwrap().append(&[entry(1), entry(2)]).unwrap();
        }
        // What sled leaves of a snapshot whose write failed (a full disk)
        // or was cut short: sled alone would take it for its newest one.
        let unfinished = dir.path().join("shard-0").join("snap.7FFFFFFFFFFFFFFF.generating");
        std::fs::write(&unfinished, b"").unwrap();
        let store = when_unlocked(|| SledStore::open(dir.path(), None, 1)).unwrap();
        assert!(!unfinished.exists());
        let mut j = store.journal(0).unwrap();
        assert_eq!(seqs(&j, 1), vec![1, 2]);
        j.append(&[entry(3)]).unwrap();
    }

    #[test]
    fn a_reader_keeps_reading_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), Some(1), 1).unwrap();
        let mut j = store.journal(0).unwrap();
        let reader = j.reader();
        j.append(&[entry(1), entry(2)]).unwrap();
        j.slot.reopen().unwrap();
        assert_eq!(seqs(&*reader, 1), vec![1, 2]);
        j.append(&[entry(3)]).unwrap();
        assert_eq!(seqs(&*reader, 2), vec![2, 3]);
        // A reopen that could not finish (a reader was still iterating over
        // the old database) leaves it to the next use to open it.
        drop(j.slot.open.write().take());
        assert_eq!(seqs(&*reader, 1), vec![1, 2, 3]);
        j.append(&[entry(4)]).unwrap();
    }

    /// The segment size of sled 0.34's log (its default, which the store
    /// keeps).
    const SLED_SEGMENT: u64 = 512 * 1024;

    #[test]
    fn sleds_log_grows_by_whole_segments_written_with_zeros() {
        // The vendored sled writes a new segment with zeros before using it
        // (`vendor/sled/PATCHED.md`), so an append writes over blocks the
        // log file already has and its `fdatasync` has no new size to
        // commit: the file's length only ever moves a segment at a time.
        let dir = tempfile::tempdir().unwrap();
        let log_len = || std::fs::metadata(dir.path().join("shard-0").join(SLED_LOG_FILE)).unwrap().len();
        let mut lengths = std::collections::BTreeSet::new();
        {
            let store = SledStore::open(dir.path(), Some(1), 1).unwrap();
            let mut j = store.journal(0).unwrap();
            for seq in 1..=1_500 {
                j.append(&[big(seq)]).unwrap();
                let len = log_len();
                assert_eq!(len % SLED_SEGMENT, 0, "log file {len} bytes after append {seq}");
                lengths.insert(len);
            }
        }
        assert!(lengths.len() >= 3, "1.5 MB of entries crossed segments: {lengths:?}");
        // The zeros past the last write read as the end of the log: the
        // journal reopens with every entry, and goes on from there.
        let store = when_unlocked(|| SledStore::open(dir.path(), None, 1)).unwrap();
        let mut j = store.journal(0).unwrap();
        assert_eq!(seqs(&j, 1), (1..=1_500).collect::<Vec<_>>());
        for seq in 1_501..=2_000 {
            j.append(&[big(seq)]).unwrap();
            assert_eq!(log_len() % SLED_SEGMENT, 0);
        }
        drop(j);
        drop(store);
        let store = when_unlocked(|| SledStore::open(dir.path(), None, 1)).unwrap();
        assert_eq!(seqs(&store.journal(0).unwrap(), 1), (1..=2_000).collect::<Vec<_>>());
    }

    #[test]
    fn entries_survive_reopen_and_recover_truncates() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path(), Some(2), 8).unwrap();
            let mut j = store.journal(1).unwrap();
            j.append(&[entry(1), entry(2)]).unwrap();
            j.append(&[entry(3)]).unwrap();
        }
        let store = when_unlocked(|| SledStore::open(dir.path(), None, 8)).unwrap();
        assert_eq!(store.shards(), 2);
        let mut j = store.journal(1).unwrap();
        let seqs: Vec<u64> = j.read_from(1).unwrap().map(|e| e.unwrap().seq).collect();
        assert_eq!(seqs, vec![1, 2, 3]);
        j.recover(3).unwrap();
        let seqs: Vec<u64> = j.read_from(2).unwrap().map(|e| e.unwrap().seq).collect();
        assert_eq!(seqs, vec![2]);
        assert!(store.journal(0).unwrap().read_from(1).unwrap().next().is_none());
    }

    #[test]
    fn each_shard_keeps_its_tree_in_a_database_of_its_own() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path(), Some(2), 8).unwrap();
            let (mut a, mut b) = (store.journal(0).unwrap(), store.journal(1).unwrap());
            a.append(&[entry(1), entry(2)]).unwrap();
            b.append(&[entry(1)]).unwrap();
            // Each journal syncs the log of its own database.
            let ino = |j: &SledJournal| j.open().unwrap().log.metadata().unwrap().ino();
            for (j, shard) in [(&a, 0), (&b, 1)] {
                let log = dir.path().join(format!("shard-{shard}")).join(SLED_LOG_FILE);
                assert_eq!(ino(j), std::fs::metadata(log).unwrap().ino());
            }
            assert_ne!(ino(&a), ino(&b));
        }
        let store = when_unlocked(|| SledStore::open(dir.path(), None, 8)).unwrap();
        assert_eq!(seqs(&store.journal(0).unwrap(), 1), vec![1, 2]);
        assert_eq!(seqs(&store.journal(1).unwrap(), 1), vec![1]);
        drop(store);
        // Nothing of the shards is in the metadata database.
        let meta = when_unlocked(|| sled::open(dir.path())).unwrap();
        assert!(!meta.tree_names().iter().any(|n| n.starts_with(b"shard-")));
    }

    /// `open()`, again while it fails on the lock of a database just
    /// dropped in this process: sled lets go of its files once its deferred
    /// frees have run, not at once.
    fn when_unlocked<T, E: std::fmt::Display>(mut open: impl FnMut() -> Result<T, E>) -> Result<T, E> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match open() {
                Err(e) if e.to_string().contains("could not acquire lock") && std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                opened => return opened,
            }
        }
    }

    #[test]
    fn a_journal_with_every_shard_in_one_database_is_opened_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        {
            // As journals were made before shards had databases of their
            // own: the shard count, and no layout.
            let db = when_unlocked(|| sled::open(dir.path())).unwrap();
            db.open_tree(META_TREE).unwrap().insert(SHARDS_KEY, &2u16.to_le_bytes()).unwrap();
            db.flush().unwrap();
        }
        {
            let store = when_unlocked(|| SledStore::open(dir.path(), Some(2), 8)).unwrap();
            store.journal(1).unwrap().append(&[entry(1), entry(2)]).unwrap();
        }
        let store = when_unlocked(|| SledStore::open(dir.path(), None, 8)).unwrap();
        assert_eq!(seqs(&store.journal(1).unwrap(), 1), vec![1, 2]);
        drop(store);
        assert!(!dir.path().join("shard-0").exists() && !dir.path().join("shard-1").exists());
        let db = when_unlocked(|| sled::open(dir.path())).unwrap();
        assert_eq!(db.open_tree("shard-1").unwrap().len(), 1, "one chunk, in the one database");
        // A layout this build does not know is refused, not guessed at.
        db.open_tree(META_TREE).unwrap().insert(LAYOUT_KEY, "db-per-sku").unwrap();
        db.flush().unwrap();
        drop(db);
        match when_unlocked(|| SledStore::open(dir.path(), None, 8)) {
            Err(JournalError::Corrupt { reason, .. }) => assert!(reason.contains("db-per-sku"), "{reason}"),
            Err(other) => panic!("unexpected error {other}"),
            Ok(_) => panic!("an unknown layout was opened"),
        }
    }

    #[test]
    fn shard_count_is_fixed_at_creation() {
        let dir = tempfile::tempdir().unwrap();
        drop(SledStore::open(dir.path(), Some(3), 8).unwrap());
        match when_unlocked(|| SledStore::open(dir.path(), Some(4), 8)) {
            Err(JournalError::ShardCountMismatch { stored: 3, requested: 4 }) => {}
            Err(other) => panic!("unexpected error {other}"),
            Ok(_) => panic!("a different shard count was accepted"),
        }
        assert_eq!(when_unlocked(|| SledStore::open(dir.path(), Some(3), 8)).unwrap().shards(), 3);
    }

    /// A fresh single-shard journal in a temporary dir (kept while it lives).
    fn one_shard() -> (tempfile::TempDir, SledJournal) {
        let dir = tempfile::tempdir().unwrap();
        let journal = SledStore::open(dir.path(), Some(1), 1).unwrap().journal(0).unwrap();
        (dir, journal)
    }

    fn seqs(j: &(impl Journal + ?Sized), from: u64) -> Vec<u64> {
        j.read_from(from).unwrap().map(|e| e.unwrap().seq).collect()
    }

    #[test]
    fn a_large_batch_is_split_into_chunks_and_reads_back_from_any_point() {
        let (_dir, mut j) = one_shard();
        let batch: Vec<Entry> = (1..=200).map(big).collect();
        j.append(&batch).unwrap();
        assert!(j.tree().len() >= 3, "200 KB in {} chunks", j.tree().len());
        for value in j.tree().iter().values() {
            assert!(value.unwrap().len() <= CHUNK_BYTES);
        }
        assert_eq!(seqs(&j, 1), (1..=200).collect::<Vec<_>>());
        assert_eq!(seqs(&j, 77), (77..=200).collect::<Vec<_>>());
        assert_eq!(j.read_from(77).unwrap().next().unwrap().unwrap(), big(77));
        assert!(seqs(&j, 201).is_empty());
    }

    #[test]
    fn recover_and_truncate_cut_inside_a_chunk_exactly() {
        let (_dir, mut j) = one_shard();
        j.append(&(1..=10).map(entry).collect::<Vec<_>>()).unwrap();
        j.append(&(11..=20).map(entry).collect::<Vec<_>>()).unwrap();
        j.recover(16).unwrap();
        assert_eq!(seqs(&j, 1), (1..=15).collect::<Vec<_>>());
        j.append(&[entry(16)]).unwrap();
        assert_eq!(j.truncate_before(5).unwrap(), 4);
        assert_eq!(j.first_seq().unwrap(), Some(5));
        assert_eq!(seqs(&j, 1), (5..=16).collect::<Vec<_>>());
        assert_eq!(j.truncate_before(13).unwrap(), 8);
        assert_eq!(seqs(&j, 0), (13..=16).collect::<Vec<_>>());
        assert_eq!(j.truncate_before(100).unwrap(), 4);
        assert_eq!(j.first_seq().unwrap(), None);
    }

    #[test]
    fn single_record_values_are_read_as_one_entry_chunks() {
        let (_dir, mut j) = one_shard();
        for seq in 1..=3u64 {
            j.tree().insert(seq.to_be_bytes(), encode(&entry(seq))).unwrap();
        }
        j.append(&[entry(4), entry(5)]).unwrap();
        assert_eq!(seqs(&j, 2), vec![2, 3, 4, 5]);
        j.recover(5).unwrap();
        assert_eq!(j.truncate_before(2).unwrap(), 1);
        assert_eq!(seqs(&j, 0), vec![2, 3, 4]);
    }

    #[test]
    fn damage_inside_a_chunk_names_the_record_and_ends_the_read() {
        let (_dir, mut j) = one_shard();
        j.append(&(1..=5).map(entry).collect::<Vec<_>>()).unwrap();
        let mut value = j.tree().get(1u64.to_be_bytes()).unwrap().unwrap().to_vec();
        let last = value.len() - 1;
        value[last] ^= 0x40;
        j.tree().insert(1u64.to_be_bytes(), value.clone()).unwrap();
        let read: Vec<_> = j.read_from(1).unwrap().collect();
        assert_eq!(read.len(), 5);
        assert!(read[..4].iter().all(Result::is_ok));
        assert!(matches!(read[4], Err(JournalError::Corrupt { seq: 5, .. })), "{:?}", read[4]);

        value.truncate(value.len() - 3);
        j.tree().insert(1u64.to_be_bytes(), value).unwrap();
        let read: Vec<_> = j.read_from(1).unwrap().collect();
        assert!(matches!(read.last(), Some(Err(JournalError::Corrupt { .. }))), "{read:?}");
    }

    fn huge(seq: u64) -> Entry {
        Entry { operator: format!("{seq}").repeat(200_000), ..entry(seq) }
    }

    /// `(seq, entry)` of each record `visit_records` walks from `from`,
    /// stopping after `stop_after` records.
    fn visited(j: &SledJournal, from: u64, stop_after: usize) -> Vec<(u64, Entry)> {
        let mut seen = Vec::new();
        j.visit_records(from, &mut |seq, record| {
            seen.push((seq, decode(0, seq, record)?));
            Ok(seen.len() < stop_after)
        })
        .unwrap();
        seen
    }

    #[test]
    fn records_are_visited_in_order_whole_from_any_point_and_until_told_to_stop() {
        let (_dir, mut j) = one_shard();
        let batch: Vec<Entry> = (1..=150).map(big).chain([huge(151), entry(152), huge(153)]).collect();
        j.append(&batch).unwrap();
        for from in [1, 77, 151, 152, 153] {
            let expected: Vec<(u64, Entry)> = batch[from as usize - 1..].iter().map(|e| (e.seq, e.clone())).collect();
            assert_eq!(visited(&j, from, usize::MAX), expected, "from {from}");
        }
        assert_eq!(visited(&j, 150, 2).iter().map(|(seq, _)| *seq).collect::<Vec<_>>(), vec![150, 151]);
        assert!(visited(&j, 154, usize::MAX).is_empty());
        // An error from the visitor ends the walk and is returned.
        let mut calls = 0;
        let stopped = j.visit_records(1, &mut |seq, _| {
            calls += 1;
            Err(JournalError::Corrupt { shard: 0, seq, reason: "stop".into() })
        });
        assert!(matches!(stopped, Err(JournalError::Corrupt { seq: 1, .. })), "{stopped:?}");
        assert_eq!(calls, 1);
    }

    #[test]
    fn a_record_larger_than_a_chunk_is_split_and_read_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path(), Some(1), 1).unwrap();
            let mut j = store.journal(0).unwrap();
            j.append(&[entry(1), entry(2), huge(3), entry(4)]).unwrap();
            j.append(&[huge(5)]).unwrap();
        }
        let store = when_unlocked(|| SledStore::open(dir.path(), None, 1)).unwrap();
        let j = store.journal(0).unwrap();
        for value in j.tree().iter().values() {
            assert!(value.unwrap().len() <= CHUNK_BYTES, "no value is larger than a chunk");
        }
        let parts = j.tree().iter().keys().filter(|k| k.as_ref().unwrap().len() == 12).count();
        assert!(parts >= 4, "two 200 KB records in {parts} further parts");
        assert_eq!(seqs(&j, 1), vec![1, 2, 3, 4, 5]);
        assert_eq!(seqs(&j, 3), vec![3, 4, 5]);
        assert_eq!(seqs(&j, 4), vec![4, 5]);
        assert_eq!(j.read_from(3).unwrap().next().unwrap().unwrap(), huge(3));
        assert_eq!(j.read_from(5).unwrap().next().unwrap().unwrap(), huge(5));
        assert!(seqs(&j, 6).is_empty());
    }

    #[test]
    fn recover_and_truncate_take_split_records_whole() {
        let (_dir, mut j) = one_shard();
        j.append(&[entry(1), huge(2), huge(3), entry(4)]).unwrap();
        // Cut right after a split record: it stays whole.
        j.recover(3).unwrap();
        assert_eq!(seqs(&j, 1), vec![1, 2]);
        assert!(j.tree().iter().keys().all(|k| k.unwrap()[..8] <= 2u64.to_be_bytes()[..]), "record 3's parts are gone");
        j.append(&[huge(3), entry(4)]).unwrap();
        assert_eq!(seqs(&j, 1), vec![1, 2, 3, 4]);
        assert_eq!(j.truncate_before(3).unwrap(), 2);
        assert_eq!(j.first_seq().unwrap(), Some(3));
        assert!(j.tree().iter().keys().all(|k| k.unwrap()[..8] >= 3u64.to_be_bytes()[..]), "record 2's parts are gone");
        assert_eq!(seqs(&j, 0), vec![3, 4]);
    }

    #[test]
    fn a_missing_part_of_a_split_record_is_reported_and_ends_the_read() {
        let (_dir, mut j) = one_shard();
        j.append(&[entry(1), huge(2), entry(3)]).unwrap();
        j.tree().remove(part_key(2, 1)).unwrap();
        let read: Vec<_> = j.read_from(1).unwrap().collect();
        assert_eq!(read.len(), 2, "{read:?}");
        assert!(read[0].is_ok());
        assert!(
            matches!(&read[1], Err(JournalError::Corrupt { seq: 2, reason, .. }) if reason.contains("part 1")),
            "{:?}",
            read[1]
        );
    }
}
