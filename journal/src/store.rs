//! Choosing and opening a data dir's journal: sled or segment files.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use crate::{FileStore, Journal, JournalError, SledStore};

/// Which kind of journal a data dir keeps. Fixed when the journal is
/// created; the kind found on disk wins over the default afterwards.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backend {
    /// sled: a database per shard and one for the metadata ([`SledStore`]).
    #[default]
    Sled,
    /// Append-only segment files, one directory per shard ([`FileStore`]).
    File,
}

impl Backend {
    pub const ALL: [Backend; 2] = [Backend::Sled, Backend::File];

    pub fn name(self) -> &'static str {
        match self {
            Backend::Sled => "sled",
            Backend::File => "file",
        }
    }

    /// The kind of journal under `dir`, if there is one.
    pub fn detect(dir: &Path) -> Option<Backend> {
        if FileStore::exists(dir) {
            Some(Backend::File)
        } else if dir.join("db").is_file() && dir.join("conf").is_file() {
            Some(Backend::Sled)
        } else {
            None
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Backend {
    type Err = String;

    fn from_str(s: &str) -> Result<Backend, String> {
        Backend::ALL
            .into_iter()
            .find(|b| b.name() == s)
            .ok_or_else(|| format!("unknown journal {s:?}: expected one of sled, file"))
    }
}

/// An open journal of either kind.
#[derive(Clone)]
pub enum Store {
    Sled(SledStore),
    File(FileStore),
}

impl Store {
    /// Opens the journal under `dir` for appending, or creates one of kind
    /// `backend` (sled if `None`) where there is none. A journal of another
    /// kind than `backend` asks for is refused. Shard counts as in
    /// [`SledStore::open`].
    pub fn open(
        dir: &Path,
        backend: Option<Backend>,
        requested: Option<u16>,
        default_shards: u16,
    ) -> Result<Store, JournalError> {
        let kind = match (Backend::detect(dir), backend) {
            (Some(found), Some(asked)) if found != asked => {
                return Err(JournalError::BackendMismatch { dir: dir.to_path_buf(), found, asked })
            }
            (Some(found), _) => found,
            (None, asked) => asked.unwrap_or_default(),
        };
        Ok(match kind {
            Backend::Sled => Store::Sled(SledStore::open(dir, requested, default_shards)?),
            Backend::File => Store::File(FileStore::open(dir, requested, default_shards)?),
        })
    }

    pub fn backend(&self) -> Backend {
        match self {
            Store::Sled(_) => Backend::Sled,
            Store::File(_) => Backend::File,
        }
    }

    pub fn shards(&self) -> u16 {
        match self {
            Store::Sled(s) => s.shards(),
            Store::File(s) => s.shards(),
        }
    }

    /// One shard's journal (call once per shard: a file journal cuts off
    /// an unfinished write when it is opened).
    pub fn journal(&self, shard: u16) -> Result<Box<dyn Journal + Sync>, JournalError> {
        Ok(match self {
            Store::Sled(s) => Box::new(s.journal(shard)?),
            Store::File(s) => Box::new(s.journal(shard)?),
        })
    }

    /// Makes everything written durable; used at shutdown.
    pub fn flush(&self) -> Result<(), JournalError> {
        match self {
            Store::Sled(s) => s.flush(),
            Store::File(s) => s.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kind_on_disk_wins_and_a_different_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (sled_dir, file_dir) = (dir.path().join("a"), dir.path().join("b"));
        assert_eq!(Store::open(&sled_dir, None, Some(2), 4).unwrap().backend(), Backend::Sled);
        assert_eq!(Store::open(&file_dir, Some(Backend::File), Some(3), 4).unwrap().backend(), Backend::File);
        assert_eq!(Backend::detect(&sled_dir), Some(Backend::Sled));
        assert_eq!(Backend::detect(&file_dir), Some(Backend::File));
        assert_eq!(Backend::detect(dir.path()), None);
        let reopened = Store::open(&file_dir, None, None, 4).unwrap();
        assert_eq!((reopened.backend(), reopened.shards()), (Backend::File, 3));
        drop(reopened);
        match Store::open(&sled_dir, Some(Backend::File), None, 4) {
            Err(JournalError::BackendMismatch { found: Backend::Sled, asked: Backend::File, .. }) => {}
            Err(other) => panic!("unexpected error {other}"),
            Ok(_) => panic!("a sled journal was opened as a file journal"),
        }
        assert!(Backend::detect(&sled_dir.join("nothing")).is_none());
        assert_eq!("file".parse::<Backend>(), Ok(Backend::File));
        assert!("rocks".parse::<Backend>().is_err());
    }
}
