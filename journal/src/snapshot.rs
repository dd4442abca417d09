//! Snapshot files: a shard's whole state at a journal sequence.
//!
//! Layout of `<dir>/shard-<i>/snap-<seq:020>.bin`:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `INVSNAP1` |
//! | 8 | 8 | sequence of the last entry included, u64 LE |
//! | 16 | 8 | body length, u64 LE |
//! | 24 | 4 | CRC-32 of the body, u32 LE |
//! | 28 | 4 | format version of the body, u32 LE ([`FORMAT_VERSION`]; 0 in the files of version 1, where this was padding) |
//! | 32 | n | rkyv archive of `inventory_core::ShardImage` |
//!
//! A file of another format version is unusable (reported, naming both
//! versions) like any other bad file: start-up skips it and falls back to an
//! older snapshot or to the journal from its start, and refuses to start if
//! the journal no longer reaches back that far.
//!
//! Written to a temporary name, synced, renamed into place and the directory
//! synced: a crash leaves either the old set of snapshots or the new one,
//! never a half file under a snapshot name. A file that fails its checks is
//! skipped in favour of the next older one.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use inventory_core::ShardImage;
use rkyv::rancor;
use rkyv::util::AlignedVec;

const MAGIC: &[u8; 8] = b"INVSNAP1";
const HEADER: usize = 32;
/// Layout of the body. 2: columnar stock (SKU id string, warehouse table,
/// fixed-size rows with 32-bit counters); holds refer to rows by position.
pub const FORMAT_VERSION: u32 = 2;

fn shard_dir(dir: &Path, shard: u16) -> PathBuf {
    dir.join(format!("shard-{shard}"))
}

fn file_name(seq: u64) -> String {
    format!("snap-{seq:020}.bin")
}

/// Writes a snapshot of `image` covering entries `..=seq`; returns its path
/// and size in bytes.
pub fn write(dir: &Path, shard: u16, seq: u64, image: &ShardImage) -> std::io::Result<(PathBuf, u64)> {
    let sdir = shard_dir(dir, shard);
    fs::create_dir_all(&sdir)?;
    let body = rkyv::to_bytes::<rancor::Error>(image).map_err(std::io::Error::other)?;
    let mut header = [0u8; HEADER];
    header[..8].copy_from_slice(MAGIC);
    header[8..16].copy_from_slice(&seq.to_le_bytes());
    header[16..24].copy_from_slice(&(body.len() as u64).to_le_bytes());
    header[24..28].copy_from_slice(&crc32fast::hash(&body).to_le_bytes());
    header[28..32].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    let path = sdir.join(file_name(seq));
    let tmp = sdir.join(format!("{}.tmp", file_name(seq)));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(&header)?;
        f.write_all(&body)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, &path)?;
    File::open(&sdir)?.sync_all()?;
    Ok((path, (HEADER + body.len()) as u64))
}

/// Sequences of the snapshots of `shard`, newest first.
pub fn list(dir: &Path, shard: u16) -> std::io::Result<Vec<u64>> {
    let sdir = shard_dir(dir, shard);
    if !sdir.exists() {
        return Ok(Vec::new());
    }
    let mut seqs: Vec<u64> = fs::read_dir(&sdir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("snap-")?.strip_suffix(".bin")?.parse().ok())
        .collect();
    seqs.sort_unstable_by(|a, b| b.cmp(a));
    Ok(seqs)
}

/// Reads and checks one snapshot.
pub fn read(dir: &Path, shard: u16, seq: u64) -> Result<ShardImage, String> {
    let path = shard_dir(dir, shard).join(file_name(seq));
    let mut f = File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut header = [0u8; HEADER];
    f.read_exact(&mut header).map_err(|e| format!("{}: header: {e}", path.display()))?;
    if &header[..8] != MAGIC {
        return Err(format!("{}: not a snapshot", path.display()));
    }
    let at = u64::from_le_bytes(header[8..16].try_into().unwrap());
    let len = u64::from_le_bytes(header[16..24].try_into().unwrap()) as usize;
    let crc = u32::from_le_bytes(header[24..28].try_into().unwrap());
    let version = u32::from_le_bytes(header[28..32].try_into().unwrap()).max(1);
    if at != seq {
        return Err(format!("{}: header says seq {at}", path.display()));
    }
    if version != FORMAT_VERSION {
        return Err(format!(
            "{}: snapshot format version {version}, this build reads only version {FORMAT_VERSION}",
            path.display()
        ));
    }
    let mut body = AlignedVec::<16>::with_capacity(len);
    body.resize(len, 0);
    f.read_exact(&mut body).map_err(|e| format!("{}: body: {e}", path.display()))?;
    if crc32fast::hash(&body) != crc {
        return Err(format!("{}: checksum mismatch", path.display()));
    }
    let image = rkyv::from_bytes::<ShardImage, rancor::Error>(&body)
        .map_err(|e| format!("{}: undecodable: {e}", path.display()))?;
    if image.index != shard {
        return Err(format!("{}: image of shard {}", path.display(), image.index));
    }
    Ok(image)
}

/// The newest valid snapshot of `shard` with `seq <= at_most`, skipping (and
/// reporting) bad ones.
pub fn latest(dir: &Path, shard: u16, at_most: u64) -> std::io::Result<Option<(u64, ShardImage)>> {
    for seq in list(dir, shard)?.into_iter().filter(|s| *s <= at_most) {
        match read(dir, shard, seq) {
            Ok(image) => return Ok(Some((seq, image))),
            Err(e) => tracing::warn!(shard, seq, error = %e, "skipping unusable snapshot"),
        }
    }
    Ok(None)
}

/// Deletes all but the newest `keep` snapshots (and stray temporary files).
pub fn prune(dir: &Path, shard: u16, keep: usize) -> std::io::Result<()> {
    let sdir = shard_dir(dir, shard);
    for seq in list(dir, shard)?.into_iter().skip(keep.max(1)) {
        fs::remove_file(sdir.join(file_name(seq)))?;
    }
    if sdir.exists() {
        for e in fs::read_dir(&sdir)?.filter_map(|e| e.ok()) {
            if e.file_name().to_str().is_some_and(|n| n.ends_with(".tmp")) {
                let _ = fs::remove_file(e.path());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use inventory_core::{Command, Receive, Shard, ShardConfig};

    fn image(qty: u64) -> ShardImage {
        let mut s = Shard::new(ShardConfig::new(1));
        let c = Command::Receive(Receive {
            sku_id: "s".into(),
            warehouse_id: "w".into(),
            qty,
            idem_key: "k".into(),
            reference: String::new(),
        });
        s.apply(5, &c, &mut Vec::new());
        s.image()
    }

    #[test]
    fn newest_valid_snapshot_wins_and_bad_ones_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), 1, 10, &image(1)).unwrap();
        let (newest, _) = write(dir.path(), 1, 20, &image(2)).unwrap();
        assert_eq!(list(dir.path(), 1).unwrap(), vec![20, 10]);
        assert_eq!(latest(dir.path(), 1, u64::MAX).unwrap().unwrap(), (20, image(2)));
        assert_eq!(latest(dir.path(), 1, 15).unwrap().unwrap().0, 10);
        // A torn newest snapshot: fall back to the older one.
        let bytes = fs::read(&newest).unwrap();
        fs::write(&newest, &bytes[..bytes.len() - 3]).unwrap();
        assert_eq!(latest(dir.path(), 1, u64::MAX).unwrap().unwrap(), (10, image(1)));
        prune(dir.path(), 1, 1).unwrap();
        assert_eq!(list(dir.path(), 1).unwrap(), vec![20]);
        assert!(latest(dir.path(), 2, u64::MAX).unwrap().is_none());
    }

    #[test]
    fn a_snapshot_of_another_format_version_is_reported_and_skipped() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), 1, 10, &image(1)).unwrap();
        let (newest, _) = write(dir.path(), 1, 20, &image(2)).unwrap();
        // A file of format version 1 (zero where the version now is).
        let mut bytes = fs::read(&newest).unwrap();
        bytes[28..32].copy_from_slice(&[0; 4]);
        fs::write(&newest, &bytes).unwrap();
        let e = read(dir.path(), 1, 20).unwrap_err();
        assert!(e.ends_with("snapshot format version 1, this build reads only version 2"), "{e}");
        assert_eq!(latest(dir.path(), 1, u64::MAX).unwrap().unwrap(), (10, image(1)));
    }
}
