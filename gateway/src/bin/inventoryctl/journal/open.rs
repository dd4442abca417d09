//! Opening a journal without disturbing the service that may be running
//! on it.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use inventory_journal::{Backend, FileStore, Journal, SledStore, Store};

use super::time::{fmt_time, now_ms};
use super::CtlError;

/// Attempts at copying a live journal into a state sled can open.
const COPY_ATTEMPTS_MAX: u32 = 3;

/// One shard's journal, of whichever kind the data dir keeps.
pub type ShardJournal = Box<dyn Journal + Sync>;

/// An open journal: the data dir's own, or a temporary copy of it when a
/// running service holds the lock.
pub struct Opened {
    // Declared before `copy` so the database closes before the copy is removed.
    store: Store,
    /// The journal directory as named on the command line.
    path: PathBuf,
    /// `<data-dir>/snapshots`, read in place (files are only ever renamed
    /// into place, so a running service never shows a half-written one).
    pub snapshots: PathBuf,
    copy: Option<TempCopy>,
}

impl Opened {
    pub fn journal(&self, shard: u16) -> Result<ShardJournal, CtlError> {
        Ok(self.store.journal(shard)?)
    }

    pub fn shards(&self) -> u16 {
        self.store.shards()
    }

    /// Where the entries were read from, for summaries.
    pub fn origin(&self) -> String {
        match &self.copy {
            Some(_) => format!("{}, read from a copy", self.path.display()),
            None => self.path.display().to_string(),
        }
    }

    pub fn check_shard(&self, shard: u16) -> Result<(), CtlError> {
        if shard >= self.shards() {
            return Err(CtlError::Usage(format!("no shard {shard}: the journal has {} shards", self.shards())));
        }
        Ok(())
    }
}

pub fn open(data_dir: &Path) -> Result<Opened, CtlError> {
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
