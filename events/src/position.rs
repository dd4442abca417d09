//! The relay's durable position per shard: every journal entry up to it is
//! in the broker. One small file per shard, `<dir>/shard-<n>`, replaced
//! whole (write, sync, rename), holding `<seq> <journal time>`.
//!
//! Beside it may lie a backlog, `<dir>/backlog-<n>.jsonl`: events a restore
//! found in PostgreSQL that the lost machine's relay may not have
//! published. The relay publishes a backlog before anything else, then
//! deletes it.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use crate::sink::Outgoing;

pub struct Positions {
    dir: PathBuf,
}

impl Positions {
    pub fn open(dir: impl Into<PathBuf>) -> std::io::Result<Positions> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        Ok(Positions { dir })
    }

    fn path(&self, shard: u16) -> PathBuf {
        self.dir.join(format!("shard-{shard}"))
    }

    /// The shard's position and its journal time; `(0, 0)` when nothing was
    /// published yet. A file that cannot be read is an error, never 0: that
    /// would publish the whole journal again silently.
    pub fn load(&self, shard: u16) -> std::io::Result<(u64, u64)> {
        let path = self.path(shard);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, 0)),
            Err(e) => return Err(e),
        };
        parse(&text).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: not `<seq> <time>`: {text:?}", path.display()),
            )
        })
    }

    /// Replaces the shard's position; durable when this returns.
    pub fn store(&self, shard: u16, seq: u64, at: u64) -> std::io::Result<()> {
        let path = self.path(shard);
        let tmp = path.with_extension("tmp");
        let mut file = std::fs::File::create(&tmp)?;
        writeln!(file, "{seq} {at}")?;
        file.sync_data()?;
        std::fs::rename(&tmp, &path)?;
        sync_dir(&self.dir)
    }
}

impl Positions {
    fn backlog_path(&self, shard: u16) -> PathBuf {
        self.dir.join(format!("backlog-{shard}.jsonl"))
    }

    /// Writes the shard's backlog (durable when this returns).
    pub fn store_backlog(&self, shard: u16, events: &[Outgoing]) -> std::io::Result<()> {
        let path = self.backlog_path(shard);
        let tmp = path.with_extension("tmp");
        let mut file = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        for e in events {
            let payload = std::str::from_utf8(&e.payload).map_err(std::io::Error::other)?;
            let line = serde_json::json!({ "subject": e.subject, "id": e.id, "payload": payload });
            serde_json::to_writer(&mut file, &line)?;
            file.write_all(b"\n")?;
        }
        file.into_inner().map_err(|e| e.into_error())?.sync_data()?;
        std::fs::rename(&tmp, &path)?;
        sync_dir(&self.dir)
    }

    /// The shard's backlog, if a restore left one.
    pub fn backlog(&self, shard: u16) -> std::io::Result<Option<Vec<Outgoing>>> {
        let file = match std::fs::File::open(self.backlog_path(shard)) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for line in std::io::BufReader::new(file).lines() {
            let value: serde_json::Value = serde_json::from_str(&line?)?;
            let field = |name: &str| {
                value[name].as_str().map(str::to_string).ok_or_else(|| {
                    std::io::Error::new(std::io::ErrorKind::InvalidData, format!("backlog line without {name}"))
                })
            };
            out.push(Outgoing { subject: field("subject")?, id: field("id")?, payload: field("payload")?.into() });
        }
        Ok(Some(out))
    }

    /// Deletes the shard's backlog once it is published.
    pub fn remove_backlog(&self, shard: u16) -> std::io::Result<()> {
        std::fs::remove_file(self.backlog_path(shard))?;
        sync_dir(&self.dir)
    }
}

fn parse(text: &str) -> Option<(u64, u64)> {
    let mut parts = text.split_whitespace();
    let (seq, at) = (parts.next()?.parse().ok()?, parts.next()?.parse().ok()?);
    parts.next().is_none().then_some((seq, at))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_survives_reopening_and_a_damaged_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let positions = Positions::open(dir.path().join("events")).unwrap();
        assert_eq!(positions.load(0).unwrap(), (0, 0));
        positions.store(0, 42, 1_000).unwrap();
        positions.store(1, 7, 900).unwrap();
        positions.store(0, 43, 1_001).unwrap();
        let reopened = Positions::open(dir.path().join("events")).unwrap();
        assert_eq!((reopened.load(0).unwrap(), reopened.load(1).unwrap()), ((43, 1_001), (7, 900)));
        std::fs::write(dir.path().join("events/shard-1"), "").unwrap();
        assert!(reopened.load(1).is_err());
    }

    #[test]
    fn a_backlog_keeps_each_event_byte_for_byte_until_removed() {
        let dir = tempfile::tempdir().unwrap();
        let positions = Positions::open(dir.path()).unwrap();
        assert!(positions.backlog(0).unwrap().is_none());
        let events = vec![
            Outgoing { subject: "inventory.reserved".into(), id: "a".into(), payload: r#"{"x":"1\n"}"#.into() },
            Outgoing { subject: "inventory.released".into(), id: "b".into(), payload: r#"{"y":2}"#.into() },
        ];
        positions.store_backlog(0, &events).unwrap();
        let read = positions.backlog(0).unwrap().unwrap();
        assert_eq!(read.len(), 2);
        assert_eq!((read[0].id.as_str(), &read[0].payload[..]), ("a", &br#"{"x":"1\n"}"#[..]));
        assert_eq!(read[1].subject, "inventory.released");
        positions.remove_backlog(0).unwrap();
        assert!(positions.backlog(0).unwrap().is_none());
    }
}
