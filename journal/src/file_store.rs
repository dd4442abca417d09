//! The file backend: per shard, a directory of append-only segment files.
//!
//! Layout under the journal dir:
//! - `shards`: the shard count, fixed when the journal is created;
//! - `LOCK`: held (`flock`) by the one process that appends;
//! - `shard-<n>/<first seq, 20 digits>.seg`: segments, each a run of
//!   blocks with consecutive sequences starting at the one in the file's
//!   name. A block is one group commit: a header `[body length: u32 LE]
//!   [crc32c: u32 LE][first seq: u64 LE][records: u32 LE]`, then per record
//!   `[length: u32 LE][framed record]` (the format of [`crate::encode`],
//!   which carries its own checksum). The block's checksum covers the header
//!   after it and the body.
//!
//! A group commit is one positioned write of its block at the end of the
//! active segment and one `fdatasync`, on the caller's thread: no other
//! thread is woken and no log is shared between shards. A segment that has
//! grown past its size limit is closed before the next batch, which starts a
//! new segment (its directory entry synced before the block is written), so
//! a block never spans two segments.
//!
//! The active segment's file is kept written with zeros ahead of its last
//! block, [`PREALLOCATE`] bytes at a time: a block that would end past the
//! zeros is written with the next run of zeros after it, in the same commit.
//! A block written over zeros that were already synced changes neither the
//! file's size nor its extents, so its `fdatasync` has only the data to
//! flush and skips the file system's own journal commit, one disk wait of
//! the three an appending write costs. An all-zero block header is where a
//! segment's blocks end; a closed segment is cut to its blocks when the
//! next one starts (a crash may leave its zeros, which readers pass over).
//!
//! After a crash the last segment may end in a block that was cut short or
//! half written: it was never acknowledged. Such a block fails its checksum
//! (or is incomplete, or does not continue the sequence) and reaches the end
//! of the file, or only zeros follow the end its header gives. Opening a
//! shard for appending cuts the last segment there (logging what it cut),
//! so nothing left of that write can later be taken for a record. A bad
//! block anywhere else, or data after the zeros where the blocks end, is
//! damage to acknowledged entries: opening fails, naming the shard and
//! sequence. Readers in the same process stop at the last sequence made
//! durable ([`Shared::durable`]); a read-only store opened by another
//! process (the replay tool beside a running service) treats an unfinished
//! block at the end of the last segment as the end, by the same rule, and
//! lists the shard's dir again at the end of a segment, so that it follows
//! the appender into segments started after it opened.
//!
//! Truncation removes whole segments: every segment but the last whose
//! entries all come before the bound. Entries before the bound may stay, in
//! the segment that also holds later ones.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use inventory_core::Entry;
use parking_lot::Mutex;

use crate::codec::{decode, encode_into};
use crate::{Journal, JournalError, RecordVisitor};

const SHARDS_FILE: &str = "shards";
const LOCK_FILE: &str = "LOCK";
const SEGMENT_EXT: &str = "seg";
/// A segment is closed once it has grown past this.
pub const SEGMENT_BYTES: u64 = 64 << 20;
/// The active segment's file is written with zeros this far past a block
/// that ends beyond the zeros already there (see the module doc).
pub const PREALLOCATE: usize = 1 << 20;
static ZEROS: [u8; PREALLOCATE] = [0; PREALLOCATE];
/// Readers seek to a sparse index point and read forward from it: one point
/// per this many bytes of a segment.
const INDEX_EVERY: u64 = 64 << 10;
const READ_BUFFER: usize = 256 << 10;
const BLOCK_HEADER: usize = 20;
/// The append buffer is given back after a batch larger than this.
const BATCH_BUFFER_KEEP: usize = 8 << 20;
/// A block length above this is damage, not a block.
const BLOCK_BYTES_MAX: u32 = 1 << 30;

/// An open file journal. Cheap to clone; shared by the shard journals.
#[derive(Clone)]
pub struct FileStore {
    dir: PathBuf,
    shards: u16,
    segment_bytes: u64,
    /// `None` for a read-only store; otherwise the lock, held while any
    /// clone lives.
    lock: Option<Arc<File>>,
}

impl FileStore {
    /// Opens (or creates) the journal under `dir` for appending, holding its
    /// lock. As [`crate::SledStore::open`], the shard count is fixed at
    /// creation: `requested` must match it afterwards, or be `None`.
    pub fn open(dir: &Path, requested: Option<u16>, default_shards: u16) -> Result<FileStore, JournalError> {
        FileStore::open_with(dir, requested, default_shards, SEGMENT_BYTES)
    }

    /// [`FileStore::open`] with segments closed past `segment_bytes`.
    pub fn open_with(
        dir: &Path,
        requested: Option<u16>,
        default_shards: u16,
        segment_bytes: u64,
    ) -> Result<FileStore, JournalError> {
        fs::create_dir_all(dir)?;
        let lock = OpenOptions::new().create(true).truncate(false).write(true).open(dir.join(LOCK_FILE))?;
        lock.try_lock().map_err(|e| match e {
            fs::TryLockError::WouldBlock => JournalError::Locked(dir.to_path_buf()),
            fs::TryLockError::Error(e) => JournalError::Io(e),
        })?;
        let shards = match read_shards(dir)? {
            Some(stored) => {
                if let Some(requested) = requested.filter(|r| *r != stored) {
                    return Err(JournalError::ShardCountMismatch { stored, requested });
                }
                stored
            }
            None => {
                let shards = requested.unwrap_or(default_shards).max(1);
                let temp = dir.join(format!("{SHARDS_FILE}.tmp"));
                fs::write(&temp, format!("{shards}\n"))?;
                File::open(&temp)?.sync_all()?;
                fs::rename(&temp, dir.join(SHARDS_FILE))?;
                sync_dir(dir)?;
                // The journal dir's own entry, in a data dir just made.
                if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                    sync_dir(parent)?;
                }
                shards
            }
        };
        Ok(FileStore {
            dir: dir.to_path_buf(),
            shards,
            segment_bytes: segment_bytes.max(1),
            lock: Some(Arc::new(lock)),
        })
    }

    /// Opens an existing journal for reading only, beside a process that may
    /// be appending to it: takes no lock and changes nothing.
    pub fn open_read_only(dir: &Path) -> Result<FileStore, JournalError> {
        let shards = read_shards(dir)?.ok_or_else(|| {
            JournalError::Io(io::Error::new(io::ErrorKind::NotFound, format!("no journal under {}", dir.display())))
        })?;
        Ok(FileStore { dir: dir.to_path_buf(), shards, segment_bytes: SEGMENT_BYTES, lock: None })
    }

    /// Whether `dir` holds a file journal.
    pub fn exists(dir: &Path) -> bool {
        dir.join(SHARDS_FILE).is_file()
    }

    pub fn shards(&self) -> u16 {
        self.shards
    }

    /// The journal of one shard. On a store opened for appending, this
    /// cuts off what a crash left of an unfinished write (see the module
    /// doc); call it once per shard.
    pub fn journal(&self, shard: u16) -> Result<FileJournal, JournalError> {
        assert!(shard < self.shards);
        let dir = self.dir.join(format!("shard-{shard}"));
        let read_only = self.lock.is_none();
        if !read_only && !dir.is_dir() {
            fs::create_dir_all(&dir)?;
            sync_dir(&self.dir)?;
        }
        let segments = match list_segments(&dir) {
            Ok(firsts) => firsts.into_iter().map(|first| (first, vec![(first, 0)])).collect(),
            Err(e) if e.kind() == io::ErrorKind::NotFound && read_only => BTreeMap::new(),
            Err(e) => return Err(e.into()),
        };
        let shared = Arc::new(Shared {
            dir,
            shard,
            segments: Mutex::new(segments),
            durable: AtomicU64::new(u64::MAX),
            bounded: !read_only,
        });
        let mut journal = FileJournal::handle(shared, !read_only, self.segment_bytes, self.lock.clone());
        if !read_only {
            journal.open_tail()?;
        }
        Ok(journal)
    }

    /// Every append is durable when it returns: nothing is left to flush.
    pub fn flush(&self) -> Result<(), JournalError> {
        Ok(())
    }
}

fn read_shards(dir: &Path) -> Result<Option<u16>, JournalError> {
    match fs::read_to_string(dir.join(SHARDS_FILE)) {
        Ok(text) => text.trim().parse::<u16>().map(Some).map_err(|_| JournalError::Corrupt {
            shard: 0,
            seq: 0,
            reason: format!("bad shard count {:?} in {}", text.trim(), dir.join(SHARDS_FILE).display()),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The first sequences of the segments in a shard's dir.
fn list_segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut firsts = Vec::new();
    for item in fs::read_dir(dir)? {
        if let Some(first) = segment_seq(&item?.file_name().to_string_lossy()) {
            firsts.push(first);
        }
    }
    Ok(firsts)
}

fn segment_name(first: u64) -> String {
    format!("{first:020}.{SEGMENT_EXT}")
}

fn segment_seq(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(&format!(".{SEGMENT_EXT}"))?;
    (stem.len() == 20).then(|| stem.parse().ok()).flatten()
}

/// What the handles of one shard's journal share.
struct Shared {
    dir: PathBuf,
    shard: u16,
    /// Each segment's first sequence, with its sparse index: `(seq, offset)`
    /// of records in it, ascending, starting with `(first, 0)`.
    segments: Mutex<BTreeMap<u64, Vec<(u64, u64)>>>,
    /// The last sequence a reader may read: every record up to it is whole
    /// and durable. `u64::MAX` until the appender has opened the tail.
    durable: AtomicU64,
    /// Whether readers stop at `durable` (the appending process) or at an
    /// unfinished record at the end (a read-only store).
    bounded: bool,
}

impl Shared {
    fn path(&self, first: u64) -> PathBuf {
        self.dir.join(segment_name(first))
    }

    /// For a read-only store: adds the segments the appender has started
    /// since the store listed them.
    fn refresh(&self) -> Result<(), JournalError> {
        if self.bounded {
            return Ok(());
        }
        let firsts = match list_segments(&self.dir) {
            Ok(firsts) => firsts,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let mut segments = self.segments.lock();
        let last = segments.keys().next_back().copied().unwrap_or(0);
        for first in firsts.into_iter().filter(|first| *first > last) {
            segments.insert(first, vec![(first, 0)]);
        }
        Ok(())
    }

    fn corrupt(&self, seq: u64, reason: String) -> JournalError {
        JournalError::Corrupt { shard: self.shard, seq, reason }
    }
}

/// The segment being appended to.
struct Active {
    first: u64,
    file: File,
    /// Bytes of blocks written and synced.
    len: u64,
    /// The file's bytes from `len` up to this are zeros, synced.
    allocated: u64,
    next: u64,
    /// Offset of the segment's last sparse index point.
    indexed: u64,
}

/// One shard's file journal: the appending handle, or a reader from
/// [`Journal::reader`].
pub struct FileJournal {
    shared: Arc<Shared>,
    active: Option<Active>,
    writable: bool,
    segment_bytes: u64,
    /// The batch being written, kept between appends.
    batch: Vec<u8>,
    record: Vec<u8>,
    /// A write or sync failed: nothing is appended until `recover`.
    failed: bool,
    lock: Option<Arc<File>>,
    /// Where this handle's last read stopped, at a block boundary: the
    /// next read from there on starts there instead of at an index point up
    /// to 64 KiB before it (readers that tail the journal read on from
    /// where they stopped).
    resume: Arc<Mutex<Option<Place>>>,
}

/// `(seq, segment, offset)`: the block at `offset` of segment `segment`
/// starts with record `seq`.
type Place = (u64, u64, u64);

impl FileJournal {
    /// A handle on a shard's journal, with nothing active or read yet.
    fn handle(shared: Arc<Shared>, writable: bool, segment_bytes: u64, lock: Option<Arc<File>>) -> FileJournal {
        FileJournal {
            shared,
            active: None,
            writable,
            segment_bytes,
            batch: Vec::new(),
            record: Vec::new(),
            failed: false,
            lock,
            resume: Arc::default(),
        }
    }

    /// Reads the last segment, cuts it after its last whole record, and
    /// makes it the active one.
    fn open_tail(&mut self) -> Result<(), JournalError> {
        let shared = self.shared.clone();
        loop {
            let last = shared.segments.lock().keys().next_back().copied();
            let Some(first) = last else {
                shared.durable.store(0, Ordering::Release);
                return Ok(());
            };
            let (next, len, points, unfinished) = {
                let mut cursor = Cursor::at(&shared, first, 0, first, u64::MAX, true)?;
                while cursor.next_record()?.is_some() {}
                (cursor.next_seq, cursor.offset, std::mem::take(&mut cursor.points), cursor.unfinished)
            };
            let path = shared.path(first);
            let file = OpenOptions::new().read(true).write(true).open(&path)?;
            let on_disk = file.metadata()?.len();
            // Past `len` there is nothing, zeros written ahead, or what is
            // left of an unfinished write followed by zeros.
            let mut allocated = on_disk;
            if unfinished {
                tracing::warn!(
                    shard = shared.shard,
                    segment = %path.display(),
                    kept = len,
                    dropped = on_disk - len,
                    "journal: cutting off an unfinished write at the end of the last segment"
                );
                file.set_len(len)?;
                file.sync_all()?;
                allocated = len;
            }
            if len == 0 {
                // A segment created just before a crash, with nothing in it.
                drop(file);
                fs::remove_file(&path)?;
                sync_dir(&shared.dir)?;
                shared.segments.lock().remove(&first);
                continue;
            }
            let indexed = points.last().map_or(0, |p| p.1);
            shared.segments.lock().insert(first, std::iter::once((first, 0)).chain(points).collect());
            shared.durable.store(next - 1, Ordering::Release);
            self.active = Some(Active { first, file, len, allocated, next, indexed });
            return Ok(());
        }
    }

    /// Starts a segment whose first record is `first`.
    fn start_segment(&mut self, first: u64) -> Result<(), JournalError> {
        if let Some(closed) = &self.active {
            // Its zeros ahead go; should a crash keep them, readers pass
            // over them to the next segment.
            closed.file.set_len(closed.len)?;
        }
        let path = self.shared.path(first);
        let file = OpenOptions::new().read(true).write(true).create_new(true).open(&path)?;
        sync_dir(&self.shared.dir)?;
        self.shared.segments.lock().insert(first, vec![(first, 0)]);
        self.active = Some(Active { first, file, len: 0, allocated: 0, next: first, indexed: 0 });
        Ok(())
    }

    fn cursor(&self, from: u64) -> Result<Option<Cursor>, JournalError> {
        let bound = if self.shared.bounded { self.shared.durable.load(Ordering::Acquire) } else { u64::MAX };
        let start = {
            let segments = self.shared.segments.lock();
            let found = segments.range(..=from).next_back().or_else(|| segments.iter().next());
            let indexed = found.map(|(first, index)| {
                let at = index.partition_point(|(seq, _)| *seq <= from).saturating_sub(1);
                (index[at].0, *first, index[at].1)
            });
            let resume = *self.resume.lock();
            match (indexed, resume) {
                (Some(point), Some(place))
                    if point.0 <= place.0 && place.0 <= from && segments.contains_key(&place.1) =>
                {
                    Some(place)
                }
                (point, _) => point,
            }
        };
        let Some((seq, first, offset)) = start else { return Ok(None) };
        let mut cursor = Cursor::at(&self.shared, first, offset, seq, bound, false)?;
        cursor.resume = Some(self.resume.clone());
        cursor.skip_to(from)?;
        Ok(Some(cursor))
    }
}

/// Reads records in order from a point of a shard's segments.
struct Cursor {
    shared: Arc<Shared>,
    first: u64,
    file: BufReader<File>,
    /// Offset of the next block in the segment.
    offset: u64,
    /// The sequence of the next record.
    next_seq: u64,
    /// The last sequence to read.
    bound: u64,
    /// The current block's records not read yet: `[len: u32 LE][record]`..
    block: Vec<u8>,
    block_first: u64,
    at: usize,
    left: u32,
    /// Index points passed on the way, to add to the shared index.
    points: Vec<(u64, u64)>,
    last_point: u64,
    /// Where to note the block boundary the cursor stops at.
    resume: Option<Arc<Mutex<Option<Place>>>>,
    /// Whether a block that is cut short or fails its checksum ends the
    /// read (what a crash, or a write in progress in another process, leaves
    /// at the end) instead of failing it.
    lenient: bool,
    /// The read ended at such a block.
    unfinished: bool,
}

/// What [`Cursor::next_block`] found.
enum Block {
    Read,
    End,
}

impl Cursor {
    fn at(
        shared: &Arc<Shared>,
        first: u64,
        offset: u64,
        seq: u64,
        bound: u64,
        lenient: bool,
    ) -> Result<Cursor, JournalError> {
        let mut file = BufReader::with_capacity(READ_BUFFER, File::open(shared.path(first))?);
        file.seek(SeekFrom::Start(offset))?;
        Ok(Cursor {
            shared: shared.clone(),
            first,
            file,
            offset,
            next_seq: seq,
            bound,
            block: Vec::new(),
            block_first: seq,
            at: 0,
            left: 0,
            points: Vec::new(),
            last_point: offset,
            resume: None,
            lenient: lenient || !shared.bounded,
            unfinished: false,
        })
    }

    /// Moves on to the first record at or after `from`, skipping whole
    /// blocks before it without reading them.
    fn skip_to(&mut self, from: u64) -> Result<(), JournalError> {
        while self.next_seq < from && self.next_seq <= self.bound {
            if self.left == 0 {
                match self.next_block(Some(from))? {
                    Block::Read => continue,
                    Block::End => break,
                }
            }
            if self.next_record()?.is_none() {
                break;
            }
        }
        Ok(())
    }

    /// The next record, `None` at the end.
    fn next_record(&mut self) -> Result<Option<(u64, &[u8])>, JournalError> {
        if self.next_seq > self.bound {
            return Ok(None);
        }
        while self.left == 0 {
            if let Block::End = self.next_block(None)? {
                return Ok(None);
            }
        }
        let seq = self.next_seq;
        let cut = || self.shared.corrupt(seq, format!("a block of {} ends inside a record", segment_name(self.first)));
        let len = self.block.get(self.at..self.at + 4).ok_or_else(cut)?;
        let len = u32::from_le_bytes(len.try_into().unwrap()) as usize;
        let record = self.block.get(self.at + 4..self.at + 4 + len).ok_or_else(cut)?;
        self.at += 4 + len;
        self.left -= 1;
        self.next_seq += 1;
        if self.left == 0 && self.at != self.block.len() {
            return Err(self
                .shared
                .corrupt(seq, format!("bytes after the last record of a block of {}", segment_name(self.first))));
        }
        Ok(Some((seq, record)))
    }

    /// Reads the next block's header and, unless all of its records come
    /// before `skip_before`, its body.
    fn next_block(&mut self, skip_before: Option<u64>) -> Result<Block, JournalError> {
        let mut header = [0u8; BLOCK_HEADER];
        let got = read_up_to(&mut self.file, &mut header)?;
        if got == 0 {
            return self.next_segment();
        }
        let expected = self.next_seq;
        if got < BLOCK_HEADER {
            return self.damaged("the segment ends inside a block header", None);
        }
        if header == [0; BLOCK_HEADER] {
            return self.zeros();
        }
        let (len, crc, first, count) = parse_header(&header);
        if count == 0 || len > BLOCK_BYTES_MAX {
            return self.damaged(&format!("a block header of {count} records in {len} bytes"), Some(len));
        }
        if first != expected {
            return self.damaged(&format!("a block starting at seq {first}"), Some(len));
        }
        let block_at = self.offset;
        if self.offset - self.last_point >= INDEX_EVERY {
            self.points.push((first, self.offset));
            self.last_point = self.offset;
        }
        if skip_before.is_some_and(|from| first + u64::from(count) <= from) {
            let length = self.file.get_ref().metadata()?.len();
            if block_at + BLOCK_HEADER as u64 + u64::from(len) > length {
                return self.damaged("the segment ends inside a block", Some(len));
            }
            self.file.seek_relative(i64::from(len))?;
        } else {
            self.block.resize(len as usize, 0);
            if read_up_to(&mut self.file, &mut self.block)? < len as usize {
                return self.damaged("the segment ends inside a block", Some(len));
            }
            if block_crc(&header, &self.block) != crc {
                return self.damaged("a block fails its checksum", Some(len));
            }
            self.at = 0;
            self.left = count;
            self.block_first = first;
        }
        self.offset += BLOCK_HEADER as u64 + u64::from(len);
        if self.left == 0 {
            self.next_seq = first + u64::from(count);
        }
        Ok(Block::Read)
    }

    /// A block that is cut short or unreadable. For a lenient cursor in the
    /// last segment that is the end of the journal when the block is what
    /// an unfinished write leaves: it ends at or past the end of the file
    /// (its header or body cut short, or the file's new size written before
    /// its data), or only zeros follow from it. Anything else is damage.
    fn damaged(&mut self, reason: &str, body_len: Option<u32>) -> Result<Block, JournalError> {
        let is_last = self.shared.segments.lock().keys().next_back() == Some(&self.first);
        let skip = body_len.map(|len| BLOCK_HEADER as u64 + u64::from(len));
        if self.lenient && is_last && (self.zeros_from(skip)? || self.written_since()?) {
            self.bound = 0;
            self.unfinished = true;
            return Ok(Block::End);
        }
        Err(self
            .shared
            .corrupt(self.next_seq, format!("{reason} at byte {} of {}", self.offset, segment_name(self.first))))
    }

    /// An all-zero block header: the end of the segment's blocks, with
    /// zeros written ahead of them. In a closed segment, the read goes on in
    /// the next one. In the last, every byte after it must be zero too
    /// (else this is damage) and the read ends; the next read from here
    /// starts at this header again and finds the block written since, if
    /// any. A reader bounded by [`Shared::durable`] never reads this far:
    /// zeros before its bound are damage.
    fn zeros(&mut self) -> Result<Block, JournalError> {
        self.shared.refresh()?;
        let is_last = self.shared.segments.lock().keys().next_back() == Some(&self.first);
        if !is_last {
            return self.next_segment();
        }
        if self.lenient && (self.zeros_from(Some(BLOCK_HEADER as u64))? || self.written_since()?) {
            self.bound = 0;
            return Ok(Block::End);
        }
        Err(self.shared.corrupt(
            self.next_seq,
            format!("zeros where a block was written at byte {} of {}", self.offset, segment_name(self.first)),
        ))
    }

    /// For a read-only store beside an appender: whether a whole block is
    /// at the current block's start now. Then what looked like damage was
    /// the appender's write in progress, and what came after it its next
    /// one; the next read from here reads them.
    fn written_since(&self) -> Result<bool, JournalError> {
        if self.shared.bounded {
            return Ok(false);
        }
        let file = self.file.get_ref();
        let mut header = [0u8; BLOCK_HEADER];
        if file.read_exact_at(&mut header, self.offset).is_err() {
            return Ok(false);
        }
        let (len, crc, first, count) = parse_header(&header);
        if count == 0 || len > BLOCK_BYTES_MAX || first != self.next_seq {
            return Ok(false);
        }
        let mut body = vec![0u8; len as usize];
        if file.read_exact_at(&mut body, self.offset + BLOCK_HEADER as u64).is_err() {
            return Ok(false);
        }
        Ok(block_crc(&header, &body) == crc)
    }

    /// Whether the segment holds only zeros from `skip` bytes past the
    /// current block's start to its end (`None`: the block's header was cut
    /// short, so the file ends inside it).
    fn zeros_from(&self, skip: Option<u64>) -> Result<bool, JournalError> {
        let file_len = self.file.get_ref().metadata()?.len();
        let Some(skip) = skip else { return Ok(true) };
        let from = self.offset + skip;
        if from >= file_len {
            return Ok(true);
        }
        let mut file = BufReader::with_capacity(READ_BUFFER, File::open(self.shared.path(self.first))?);
        file.seek(SeekFrom::Start(from))?;
        let mut chunk = vec![0u8; READ_BUFFER];
        loop {
            match read_up_to(&mut file, &mut chunk)? {
                0 => return Ok(true),
                n if chunk[..n].iter().any(|b| *b != 0) => return Ok(false),
                _ => {}
            }
        }
    }

    /// Moves on to the segment that starts at `next_seq`; the end if there
    /// is none.
    fn next_segment(&mut self) -> Result<Block, JournalError> {
        self.publish_points();
        self.shared.refresh()?;
        let next = {
            let segments = self.shared.segments.lock();
            segments.range(self.first + 1..).next().map(|(first, _)| *first)
        };
        match next {
            None => Ok(Block::End),
            Some(first) if first == self.next_seq => {
                let file = File::open(self.shared.path(first))?;
                self.file = BufReader::with_capacity(READ_BUFFER, file);
                self.first = first;
                self.offset = 0;
                self.last_point = 0;
                Ok(Block::Read)
            }
            Some(found) => Err(JournalError::Gap { shard: self.shared.shard, expected: self.next_seq, found }),
        }
    }

    /// Adds the index points passed in the current segment to the shared
    /// index, where they extend it.
    fn publish_points(&mut self) {
        if self.points.is_empty() {
            return;
        }
        let mut segments = self.shared.segments.lock();
        if let Some(index) = segments.get_mut(&self.first) {
            for point in self.points.drain(..) {
                if index.last().is_some_and(|last| last.0 < point.0) {
                    index.push(point);
                }
            }
        }
        self.points.clear();
    }
}

impl Drop for Cursor {
    fn drop(&mut self) {
        self.publish_points();
        if let Some(resume) = &self.resume {
            // At a block boundary, or inside a block read whole: its start.
            let place = if self.left == 0 {
                (self.next_seq, self.first, self.offset)
            } else {
                (self.block_first, self.first, self.offset - (BLOCK_HEADER + self.block.len()) as u64)
            };
            *resume.lock() = Some(place);
        }
    }
}

/// `(body length, crc, first seq, record count)` of a block header.
fn parse_header(header: &[u8; BLOCK_HEADER]) -> (u32, u32, u64, u32) {
    let u32_at = |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().unwrap());
    (u32_at(0), u32_at(4), u64::from_le_bytes(header[8..16].try_into().unwrap()), u32_at(16))
}

/// The header of a block of `count` records from `first` with `body`.
fn block_header(len: u32, first: u64, count: u32, body: &[u8]) -> [u8; BLOCK_HEADER] {
    let mut header = [0u8; BLOCK_HEADER];
    header[0..4].copy_from_slice(&len.to_le_bytes());
    header[8..16].copy_from_slice(&first.to_le_bytes());
    header[16..20].copy_from_slice(&count.to_le_bytes());
    let crc = block_crc(&header, body);
    header[4..8].copy_from_slice(&crc.to_le_bytes());
    header
}

/// The checksum of a block: its header after the checksum, then its body.
fn block_crc(header: &[u8; BLOCK_HEADER], body: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header[8..]);
    hasher.update(body);
    hasher.finalize()
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
fn read_up_to(file: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

struct Entries {
    cursor: Option<Cursor>,
    failed: bool,
}

impl Iterator for Entries {
    type Item = Result<Entry, JournalError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let cursor = self.cursor.as_mut()?;
        let shard = cursor.shared.shard;
        let item = match cursor.next_record() {
            Ok(Some((seq, record))) => decode(shard, seq, record),
            Ok(None) => return None,
            Err(e) => Err(e),
        };
        self.failed = item.is_err();
        Some(item)
    }
}

impl Journal for FileJournal {
    fn append(&mut self, batch: &[Entry]) -> Result<(), JournalError> {
        let Some(head) = batch.first() else { return Ok(()) };
        if !self.writable {
            return Err(JournalError::Io(io::Error::other("a journal reader cannot append")));
        }
        if self.failed {
            return Err(JournalError::Io(io::Error::other("the last append failed: recover first")));
        }
        if let Some(active) = &self.active {
            if head.seq != active.next {
                return Err(JournalError::Gap { shard: self.shared.shard, expected: active.next, found: head.seq });
            }
        }
        if self.active.as_ref().is_none_or(|a| a.len >= self.segment_bytes) {
            self.start_segment(head.seq)?;
        }
        let active = self.active.as_mut().expect("an active segment");
        self.batch.clear();
        self.batch.resize(BLOCK_HEADER, 0);
        for (i, entry) in batch.iter().enumerate() {
            debug_assert_eq!(entry.seq, head.seq + i as u64);
            encode_into(entry, &mut self.record);
            self.batch.extend_from_slice(&(self.record.len() as u32).to_le_bytes());
            self.batch.extend_from_slice(&self.record);
        }
        let body = self.batch.len() - BLOCK_HEADER;
        let header = block_header(body as u32, head.seq, batch.len() as u32, &self.batch[BLOCK_HEADER..]);
        self.batch[..BLOCK_HEADER].copy_from_slice(&header);
        // One write and one flush: the group commit. A block that ends past
        // the zeros written ahead takes the next run of zeros with it.
        let end = active.len + self.batch.len() as u64;
        let extend = end > active.allocated;
        let written = active
            .file
            .write_all_at(&self.batch, active.len)
            .and_then(|()| if extend { active.file.write_all_at(&ZEROS, end) } else { Ok(()) })
            .and_then(|()| active.file.sync_data());
        if let Err(e) = written {
            self.failed = true;
            return Err(e.into());
        }
        if extend {
            active.allocated = end + PREALLOCATE as u64;
        }
        if active.len - active.indexed >= INDEX_EVERY {
            if let Some(index) = self.shared.segments.lock().get_mut(&active.first) {
                index.push((head.seq, active.len));
            }
            active.indexed = active.len;
        }
        active.len += self.batch.len() as u64;
        active.next = head.seq + batch.len() as u64;
        self.shared.durable.store(active.next - 1, Ordering::Release);
        if self.batch.capacity() > BATCH_BUFFER_KEEP {
            self.batch = Vec::new();
        }
        Ok(())
    }

    fn recover(&mut self, next_seq: u64) -> Result<(), JournalError> {
        if !self.writable {
            return Err(JournalError::Io(io::Error::other("a journal reader cannot recover")));
        }
        self.active = None;
        *self.resume.lock() = None;
        let shared = self.shared.clone();
        let segments: Vec<u64> = shared.segments.lock().keys().copied().collect();
        // Later segments go first, newest first, so a crash midway leaves
        // a journal without gaps.
        for &first in segments.iter().rev().filter(|first| **first >= next_seq) {
            fs::remove_file(shared.path(first))?;
            shared.segments.lock().remove(&first);
        }
        sync_dir(&shared.dir)?;
        if let Some(&first) = segments.iter().rev().find(|first| **first < next_seq) {
            let (seq, offset) = {
                let segments = shared.segments.lock();
                let index = &segments[&first];
                index[index.partition_point(|(seq, _)| *seq <= next_seq).saturating_sub(1)]
            };
            let mut cursor = Cursor::at(&shared, first, offset, seq, u64::MAX, true)?;
            cursor.skip_to(next_seq)?;
            let file = OpenOptions::new().read(true).write(true).open(shared.path(first))?;
            let cut = if cursor.left == 0 {
                cursor.offset
            } else {
                // `next_seq` is inside a block: rewrite the block with the
                // records before it.
                let kept = (next_seq - cursor.block_first) as u32;
                let body = &cursor.block[..cursor.at];
                let start = cursor.offset - (BLOCK_HEADER + cursor.block.len()) as u64;
                let mut block = block_header(body.len() as u32, cursor.block_first, kept, body).to_vec();
                block.extend_from_slice(body);
                file.write_all_at(&block, start)?;
                start + block.len() as u64
            };
            drop(cursor);
            file.set_len(cut)?;
            file.sync_all()?;
            if let Some(index) = shared.segments.lock().get_mut(&first) {
                index.retain(|(seq, at)| *seq < next_seq && *at < cut);
            }
        }
        self.failed = false;
        self.open_tail()
    }

    fn read_from(&self, from: u64) -> Result<Box<dyn Iterator<Item = Result<Entry, JournalError>> + '_>, JournalError> {
        Ok(Box::new(Entries { cursor: self.cursor(from)?, failed: false }))
    }

    fn visit_records(&self, from: u64, f: RecordVisitor<'_>) -> Result<(), JournalError> {
        let Some(mut cursor) = self.cursor(from)? else { return Ok(()) };
        while let Some((seq, record)) = cursor.next_record()? {
            if !f(seq, record)? {
                break;
            }
        }
        Ok(())
    }

    fn shard(&self) -> u16 {
        self.shared.shard
    }

    fn reader(&self) -> Box<dyn Journal + Sync> {
        Box::new(FileJournal::handle(self.shared.clone(), false, self.segment_bytes, self.lock.clone()))
    }

    fn truncate_before(&self, keep_from: u64) -> Result<u64, JournalError> {
        if self.lock.is_none() {
            return Err(JournalError::Io(io::Error::other("a read-only journal cannot be truncated")));
        }
        let segments: Vec<u64> = self.shared.segments.lock().keys().copied().collect();
        let mut removed = 0;
        // Oldest first, so a crash midway leaves a journal without gaps.
        for pair in segments.windows(2) {
            let (first, next) = (pair[0], pair[1]);
            if next > keep_from {
                break;
            }
            self.shared.segments.lock().remove(&first);
            fs::remove_file(self.shared.path(first))?;
            removed += next - first;
        }
        if removed > 0 {
            sync_dir(&self.shared.dir)?;
        }
        Ok(removed)
    }

    fn first_seq(&self) -> Result<Option<u64>, JournalError> {
        Ok(self.shared.segments.lock().keys().next().copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{big, entry};

    fn entries(seqs: std::ops::RangeInclusive<u64>, make: fn(u64) -> Entry) -> Vec<Entry> {
        seqs.map(make).collect()
    }

    /// Appends `batches` batches of `size` 1 KB entries from seq 1.
    fn append_batches(j: &mut FileJournal, batches: u64, size: u64) {
        append_batches_from(j, 1, batches, size);
    }

    /// Appends `batches` batches of `size` 1 KB entries from seq `first`.
    fn append_batches_from(j: &mut FileJournal, first: u64, batches: u64, size: u64) {
        for batch in 0..batches {
            let from = first + batch * size;
            j.append(&entries(from..=from + size - 1, big)).unwrap();
        }
    }

    fn seqs(j: &dyn Journal, from: u64) -> Vec<u64> {
        j.read_from(from).unwrap().map(|e| e.unwrap().seq).collect()
    }

    /// A single-shard store in a temporary dir with small segments.
    fn one_shard(segment_bytes: u64) -> (tempfile::TempDir, FileStore, FileJournal) {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open_with(dir.path(), Some(1), 1, segment_bytes).unwrap();
        let journal = store.journal(0).unwrap();
        (dir, store, journal)
    }

    fn segment_files(dir: &Path) -> Vec<(u64, u64)> {
        let mut files: Vec<(u64, u64)> = fs::read_dir(dir.join("shard-0"))
            .unwrap()
            .filter_map(|e| {
                let e = e.unwrap();
                segment_seq(&e.file_name().to_string_lossy()).map(|seq| (seq, e.metadata().unwrap().len()))
            })
            .collect();
        files.sort();
        files
    }

    fn last_segment(dir: &Path) -> PathBuf {
        let (first, _) = *segment_files(dir).last().unwrap();
        dir.join("shard-0").join(segment_name(first))
    }

    #[test]
    fn entries_survive_reopen_and_the_shard_count_and_lock_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = FileStore::open(dir.path(), Some(2), 8).unwrap();
            let mut j = store.journal(1).unwrap();
            j.append(&[entry(1), entry(2)]).unwrap();
            j.append(&[entry(3)]).unwrap();
            assert!(matches!(FileStore::open(dir.path(), None, 8), Err(JournalError::Locked(_))));
        }
        match FileStore::open(dir.path(), Some(4), 8) {
            Err(JournalError::ShardCountMismatch { stored: 2, requested: 4 }) => {}
            Err(other) => panic!("unexpected error {other}"),
            Ok(_) => panic!("a different shard count was accepted"),
        }
        let store = FileStore::open(dir.path(), None, 8).unwrap();
        assert_eq!(store.shards(), 2);
        let mut j = store.journal(1).unwrap();
        assert_eq!(seqs(&j, 1), vec![1, 2, 3]);
        assert_eq!(j.read_from(2).unwrap().next().unwrap().unwrap(), entry(2));
        j.append(&[entry(4)]).unwrap();
        assert_eq!(seqs(&j, 3), vec![3, 4]);
        assert!(store.journal(0).unwrap().read_from(1).unwrap().next().is_none());
        // Appends continue the sequence or are refused.
        assert!(matches!(j.append(&[entry(9)]), Err(JournalError::Gap { expected: 5, found: 9, .. })));
    }

    #[test]
    fn segments_roll_and_reads_cross_them_from_any_point() {
        let (dir, _store, mut j) = one_shard(8 << 10);
        append_batches(&mut j, 40, 5);
        let files = segment_files(dir.path());
        assert!(files.len() >= 10, "200 KB in {} segments", files.len());
        for pair in files.windows(2) {
            assert_eq!((pair[1].0 - pair[0].0) % 5, 0, "a batch never spans two segments");
        }
        assert_eq!(seqs(&j, 1), (1..=200).collect::<Vec<_>>());
        for from in [0, 2, 77, 150, 199, 200] {
            assert_eq!(seqs(&j, from), (from.max(1)..=200).collect::<Vec<_>>(), "from {from}");
        }
        assert!(seqs(&j, 201).is_empty());
        assert_eq!(j.read_from(77).unwrap().next().unwrap().unwrap(), big(77));
        let reader = j.reader();
        assert_eq!(seqs(reader.as_ref(), 190), (190..=200).collect::<Vec<_>>());
    }

    #[test]
    fn readers_find_their_place_through_the_index_in_a_long_segment() {
        let (_dir, _store, mut j) = one_shard(SEGMENT_BYTES);
        append_batches(&mut j, 100, 10);
        let points = j.shared.segments.lock()[&1].clone();
        assert!(points.len() >= 10, "1 MB indexed at {} points", points.len());
        assert!(points.windows(2).all(|p| p[0].0 < p[1].0 && p[0].1 < p[1].1));
        for from in [1, 11, 505, 999, 1000] {
            assert_eq!(seqs(&j, from), (from..=1000).collect::<Vec<_>>(), "from {from}");
        }
        // A reader tailing the journal reads on from where it stopped, also
        // from inside a batch, and can still go back.
        let reader = j.reader();
        assert_eq!(reader.read_from(995).unwrap().take(3).map(|e| e.unwrap().seq).collect::<Vec<_>>(), [995, 996, 997]);
        j.append(&entries(1001..=1010, big)).unwrap();
        assert_eq!(seqs(reader.as_ref(), 998), (998..=1010).collect::<Vec<_>>());
        assert_eq!(seqs(reader.as_ref(), 1011), Vec::<u64>::new());
        j.append(&entries(1011..=1012, big)).unwrap();
        assert_eq!(seqs(reader.as_ref(), 1011), [1011, 1012]);
        assert_eq!(seqs(reader.as_ref(), 3).len(), 1010);
        // A reopened journal builds its index as readers pass.
        drop(reader);
        drop(j);
        drop(_store);
        let store = FileStore::open(_dir.path(), None, 1).unwrap();
        let j = store.journal(0).unwrap();
        assert_eq!(seqs(&j, 600), (600..=1012).collect::<Vec<_>>());
        assert!(j.shared.segments.lock()[&1].len() >= 10);
    }

    #[test]
    fn recover_cuts_exactly_even_inside_a_batch() {
        let (dir, _store, mut j) = one_shard(8 << 10);
        j.append(&entries(1..=10, entry)).unwrap();
        j.append(&entries(11..=20, entry)).unwrap();
        j.recover(16).unwrap();
        assert_eq!(seqs(&j, 1), (1..=15).collect::<Vec<_>>());
        j.append(&[entry(16)]).unwrap();
        assert_eq!(seqs(&j, 14), vec![14, 15, 16]);
        j.recover(11).unwrap();
        assert_eq!(seqs(&j, 1), (1..=10).collect::<Vec<_>>());
        // Across segments: later segments go, the one holding the point is cut.
        j.append(&entries(11..=40, big)).unwrap();
        j.append(&entries(41..=50, big)).unwrap();
        assert!(segment_files(dir.path()).len() >= 2);
        j.recover(5).unwrap();
        assert_eq!(segment_files(dir.path()).len(), 1);
        assert_eq!(seqs(&j, 1), vec![1, 2, 3, 4]);
        j.recover(1).unwrap();
        assert!(segment_files(dir.path()).is_empty(), "no empty segment is left");
        assert_eq!(j.first_seq().unwrap(), None);
        j.append(&[entry(1)]).unwrap();
        drop(j);
        drop(_store);
        let store = FileStore::open(dir.path(), None, 1).unwrap();
        assert_eq!(seqs(&store.journal(0).unwrap(), 1), vec![1]);
    }

    #[test]
    fn truncation_removes_whole_segments_before_the_bound() {
        let (dir, _store, mut j) = one_shard(4 << 10);
        append_batches(&mut j, 20, 4);
        let firsts: Vec<u64> = segment_files(dir.path()).iter().map(|f| f.0).collect();
        let keep_from = firsts[3] + 1;
        let reader = j.reader();
        assert_eq!(reader.truncate_before(keep_from).unwrap(), firsts[3] - 1);
        assert_eq!(j.first_seq().unwrap(), Some(firsts[3]));
        assert_eq!(seqs(&j, 0), (firsts[3]..=80).collect::<Vec<_>>());
        assert_eq!(reader.truncate_before(keep_from).unwrap(), 0);
        // The last segment stays, whatever the bound.
        reader.truncate_before(1_000).unwrap();
        assert_eq!(j.first_seq().unwrap(), Some(*firsts.last().unwrap()));
        assert_eq!(seqs(&j, 80), vec![80]);
        j.append(&[big(81)]).unwrap();
        assert_eq!(seqs(reader.as_ref(), 80), vec![80, 81]);
    }

    type Damage<'a> = Box<dyn Fn(&mut Vec<u8>) + 'a>;

    #[test]
    fn an_unfinished_write_at_the_end_is_cut_off_on_open() {
        let (dir, store, mut j) = one_shard(SEGMENT_BYTES);
        j.append(&entries(1..=3, entry)).unwrap();
        let first_end = j.active.as_ref().unwrap().len as usize;
        j.append(&entries(4..=6, entry)).unwrap();
        let path = last_segment(dir.path());
        let mut whole = fs::read(&path).unwrap();
        assert_eq!(whole.len(), first_end + PREALLOCATE, "zeros written ahead of the first block");
        whole.truncate(j.active.as_ref().unwrap().len as usize);
        let second = whole.len() - (whole.len() - BLOCK_HEADER * 2) / 2 - BLOCK_HEADER;
        drop((j, store));
        // The second block cut short, then half written over with zeros,
        // then followed by zeros only: each time, entries 1..=3 remain,
        // except after the zeros; then all do. Each once at the end of the
        // file and once with zeros written ahead after it, as a crash leaves
        // it with or without them.
        let damages: [Damage<'_>; 4] = [
            Box::new(|b| b.truncate(b.len() - 7)),
            Box::new(|b| b.truncate(second + 9)),
            Box::new(|b| {
                let n = b.len();
                b[n - 10..].fill(0)
            }),
            Box::new(|b| b.extend_from_slice(&[0; 40])),
        ];
        for (i, damage) in damages.iter().enumerate() {
            for ahead in [0, PREALLOCATE] {
                let mut bytes = whole.clone();
                damage(&mut bytes);
                bytes.resize(bytes.len() + ahead, 0);
                fs::write(&path, &bytes).unwrap();
                let store = FileStore::open(dir.path(), None, 1).unwrap();
                let mut j = store.journal(0).unwrap();
                let expected: Vec<u64> = if i == 3 { (1..=6).collect() } else { (1..=3).collect() };
                assert_eq!(seqs(&j, 1), expected, "damage {i}, {ahead} zeros after");
                let kept = if i == 3 { bytes.len() } else { second };
                assert_eq!(fs::metadata(&path).unwrap().len(), kept as u64, "damage {i}: the write is cut off");
                let next = expected.len() as u64 + 1;
                j.append(&[big(next)]).unwrap();
                assert_eq!(j.read_from(next).unwrap().next().unwrap().unwrap(), big(next));
                j.recover(next).unwrap();
            }
        }
    }

    #[test]
    fn blocks_are_written_over_zeros_synced_ahead_and_the_file_grows_a_run_at_a_time() {
        let (dir, store, mut j) = one_shard(SEGMENT_BYTES);
        j.append(&[big(1)]).unwrap();
        let path = last_segment(dir.path());
        let run = PREALLOCATE as u64;
        let first_end = j.active.as_ref().unwrap().len;
        assert_eq!(fs::metadata(&path).unwrap().len(), first_end + run);
        // Batches that fit in the zeros leave the file's size as it is.
        let mut seq = 2;
        while j.active.as_ref().unwrap().len + 10_000 < first_end + run {
            j.append(&entries(seq..=seq + 4, big)).unwrap();
            seq += 5;
            assert_eq!(fs::metadata(&path).unwrap().len(), first_end + run, "no growth at seq {seq}");
        }
        // The batch that passes them takes the next run with it.
        while j.active.as_ref().unwrap().len <= first_end + run {
            j.append(&entries(seq..=seq + 4, big)).unwrap();
            seq += 5;
        }
        let len = j.active.as_ref().unwrap().len;
        assert_eq!(fs::metadata(&path).unwrap().len(), len + run);
        // Reopened, the zeros stay and the next batch goes over them.
        drop((j, store));
        let store = FileStore::open(dir.path(), None, 1).unwrap();
        let mut j = store.journal(0).unwrap();
        assert_eq!(seqs(&j, 1), (1..seq).collect::<Vec<_>>());
        assert_eq!(fs::metadata(&path).unwrap().len(), len + run, "nothing was cut");
        j.append(&entries(seq..=seq + 4, big)).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), len + run);
        assert_eq!(seqs(&j, seq - 2), (seq - 2..=seq + 4).collect::<Vec<_>>());
    }

    #[test]
    fn a_closed_segment_is_cut_to_its_blocks_and_zeros_left_after_them_are_passed_over() {
        let (dir, store, mut j) = one_shard(8 << 10);
        append_batches(&mut j, 12, 5);
        let files = segment_files(dir.path());
        assert!(files.len() >= 3, "{files:?}");
        let (last, closed) = files.split_last().unwrap();
        assert!(last.1 > j.active.as_ref().unwrap().len, "zeros ahead in the active segment");
        for (first, len) in closed {
            // Whole blocks of 5 entries of about 1 KB each, nothing after.
            assert!(*len >= 8 << 10 && *len < (8 << 10) + 6_000, "segment {first}: {len} bytes");
        }
        // As a crash before the cut reached the disk leaves them.
        for (first, _) in closed {
            let file = OpenOptions::new().write(true).open(dir.path().join("shard-0").join(segment_name(*first)));
            file.unwrap().set_len(PREALLOCATE as u64 * 2).unwrap();
        }
        assert_eq!(seqs(&j, 1), (1..=60).collect::<Vec<_>>());
        let read_only = FileStore::open_read_only(dir.path()).unwrap().journal(0).unwrap();
        assert_eq!(seqs(&read_only, 3), (3..=60).collect::<Vec<_>>());
        drop((j, store));
        let store = FileStore::open(dir.path(), None, 1).unwrap();
        let mut j = store.journal(0).unwrap();
        assert_eq!(seqs(&j, 1), (1..=60).collect::<Vec<_>>());
        append_batches_from(&mut j, 61, 1, 5);
        assert_eq!(seqs(&read_only, 58), (58..=65).collect::<Vec<_>>());
    }

    #[test]
    fn a_read_only_reader_takes_a_block_whole_on_a_second_look_for_a_write_in_progress() {
        let (dir, _store, mut j) = one_shard(SEGMENT_BYTES);
        append_batches(&mut j, 3, 3);
        let view = FileStore::open_read_only(dir.path()).unwrap().journal(0).unwrap();
        let mut cursor = Cursor::at(&view.shared, 1, 0, 1, u64::MAX, false).unwrap();
        for _ in 0..3 {
            cursor.next_record().unwrap().unwrap();
        }
        // At the second block: whole, so a read that saw it torn a moment
        // before ends there instead of reporting damage.
        assert_eq!((cursor.next_seq, cursor.left), (4, 0));
        assert!(cursor.written_since().unwrap());
        cursor.next_seq = 5;
        assert!(!cursor.written_since().unwrap(), "a block that does not continue the sequence");
        cursor.next_seq = 4;
        while cursor.next_record().unwrap().is_some() {}
        assert_eq!(cursor.offset, j.active.as_ref().unwrap().len, "at the zeros ahead");
        assert!(!cursor.written_since().unwrap());
        // The appender's own readers stop at the durable point instead.
        let bounded = Cursor::at(&j.shared, 1, 0, 1, u64::MAX, false).unwrap();
        assert!(!bounded.written_since().unwrap());
    }

    #[test]
    fn data_after_the_zeros_where_the_blocks_end_is_damage() {
        let (dir, store, mut j) = one_shard(SEGMENT_BYTES);
        append_batches(&mut j, 3, 3);
        let used = j.active.as_ref().unwrap().len as usize;
        drop((j, store));
        let path = last_segment(dir.path());
        let mut bytes = fs::read(&path).unwrap();
        bytes[used + 5_000] = 0xab;
        fs::write(&path, &bytes).unwrap();
        let read_only = FileStore::open_read_only(dir.path()).unwrap().journal(0).unwrap();
        let read: Vec<_> = read_only.read_from(1).unwrap().collect();
        assert!(matches!(read.last(), Some(Err(JournalError::Corrupt { seq: 10, .. }))), "{:?}", read.last());
        match FileStore::open(dir.path(), None, 1).unwrap().journal(0) {
            Err(JournalError::Corrupt { seq: 10, reason, .. }) => assert!(reason.contains("zeros"), "{reason}"),
            Err(other) => panic!("unexpected error {other}"),
            Ok(_) => panic!("a damaged journal was opened"),
        }
        assert_eq!(fs::read(&path).unwrap(), bytes, "nothing was cut");
    }

    #[test]
    fn damage_followed_by_whole_blocks_is_not_taken_for_an_unfinished_write() {
        let (dir, store, mut j) = one_shard(SEGMENT_BYTES);
        append_batches(&mut j, 3, 3);
        drop((j, store));
        let path = last_segment(dir.path());
        let mut bytes = fs::read(&path).unwrap();
        bytes[BLOCK_HEADER + 100] ^= 0x01;
        fs::write(&path, &bytes).unwrap();
        let read_only = FileStore::open_read_only(dir.path()).unwrap().journal(0).unwrap();
        let read: Vec<_> = read_only.read_from(1).unwrap().collect();
        assert!(matches!(read[..], [Err(JournalError::Corrupt { seq: 1, .. })]), "{read:?}");
        let store = FileStore::open(dir.path(), None, 1).unwrap();
        match store.journal(0) {
            Err(JournalError::Corrupt { seq: 1, reason, .. }) => assert!(reason.contains("checksum"), "{reason}"),
            Err(other) => panic!("unexpected error {other}"),
            Ok(_) => panic!("a damaged journal was opened"),
        }
        assert_eq!(fs::read(&path).unwrap(), bytes, "nothing was cut");
    }

    #[test]
    fn damage_before_the_last_segment_is_reported_with_its_sequence() {
        let (dir, _store, mut j) = one_shard(4 << 10);
        append_batches(&mut j, 6, 4);
        let files = segment_files(dir.path());
        assert!(files.len() >= 3);
        let path = dir.path().join("shard-0").join(segment_name(files[0].0));
        let mut bytes = fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 3] ^= 0x40;
        fs::write(&path, bytes).unwrap();
        let read: Vec<_> = j.read_from(1).unwrap().collect();
        assert!(read.last().unwrap().is_err(), "the read ends in an error");
        let ok = read.iter().filter(|r| r.is_ok()).count() as u64;
        assert!(
            matches!(read.last(), Some(Err(JournalError::Corrupt { seq, .. })) if *seq == ok + 1),
            "{:?}",
            read.last()
        );
        // A missing segment is a gap.
        fs::remove_file(dir.path().join("shard-0").join(segment_name(files[1].0))).unwrap();
        j.shared.segments.lock().remove(&files[1].0);
        let gap = match j.read_from(files[2].0 - 1) {
            Err(e) => e,
            Ok(mut read) => read.find_map(Result::err).expect("an error"),
        };
        assert!(matches!(gap, JournalError::Gap { found, .. } if found == files[2].0), "{gap:?}");
    }

    #[test]
    fn a_read_only_store_reads_beside_the_appender_and_stops_at_an_unfinished_write() {
        let (dir, _store, mut j) = one_shard(8 << 10);
        j.append(&entries(1..=30, big)).unwrap();
        j.append(&entries(31..=35, big)).unwrap();
        let path = last_segment(dir.path());
        let before = fs::read(&path).unwrap();
        // A write in progress over the zeros ahead: a block header and part
        // of its body.
        let used = j.active.as_ref().unwrap().len as usize;
        let mut bytes = before.clone();
        bytes[used..used + BLOCK_HEADER].copy_from_slice(&block_header(5_000, 36, 5, &[]));
        bytes[used + BLOCK_HEADER..used + BLOCK_HEADER + 100].fill(7);
        fs::write(&path, &bytes).unwrap();
        let read_only = FileStore::open_read_only(dir.path()).unwrap();
        let view = read_only.journal(0).unwrap();
        assert_eq!(seqs(&view, 1), (1..=35).collect::<Vec<_>>());
        assert_eq!(fs::read(&path).unwrap(), bytes, "reading changed nothing");
        assert!(view.truncate_before(10).is_err());
        fs::write(&path, &before).unwrap();
        j.append(&entries(36..=40, big)).unwrap();
        assert_eq!(seqs(&view, 34), (34..=40).collect::<Vec<_>>());
        // On into segments the appender started after the view listed its
        // segments.
        let listed = segment_files(dir.path()).len();
        append_batches_from(&mut j, 41, 4, 5);
        assert!(segment_files(dir.path()).len() >= listed + 2);
        assert_eq!(seqs(&view, 38), (38..=60).collect::<Vec<_>>());
        let mut walked = Vec::new();
        view.visit_records(20, &mut |seq, record| {
            walked.push(decode(0, seq, record)?.seq);
            Ok(seq < 25)
        })
        .unwrap();
        assert_eq!(walked, (20..=25).collect::<Vec<_>>());
    }

    #[test]
    fn readers_stop_at_the_last_durable_entry() {
        let (_dir, _store, mut j) = one_shard(SEGMENT_BYTES);
        j.append(&entries(1..=4, entry)).unwrap();
        let reader = j.reader();
        // Bytes past the durable point (a write whose sync has not
        // returned) are not read.
        let active = j.active.as_ref().unwrap();
        active.file.write_all_at(b"partial", active.len).unwrap();
        assert_eq!(seqs(reader.as_ref(), 1), vec![1, 2, 3, 4]);
        j.recover(5).unwrap();
        j.append(&[entry(5)]).unwrap();
        assert_eq!(seqs(reader.as_ref(), 3), vec![3, 4, 5]);
    }
}
