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
//! | 32 + n | 8 | cold section length m, u64 LE (version 3) |
//! | 40 + n | 4 | CRC-32 of the cold section, u32 LE |
//! | 44 + n | m | rkyv archive of `inventory_core::ColdImage`: the filters of what moved to the cold tier |
//! | 44 + n + m | 8 + 4 + k | the operator section (version 4): length k, CRC-32, rkyv archive of `inventory_core::OpsImage` (frozen rows, adjustments, transfers) |
//! | 56 + n + m + k | 8 + 4 + j | the sale section (version 5): length j, CRC-32, rkyv archive of `inventory_core::SaleImage` (sale policies and what they counted) |
//!
//! Version 2 files (no cold section) are read with empty filters, version 2
//! and 3 files with no operator state, files before version 5 with no sale
//! policies.
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

use inventory_core::{ColdImage, OpsImage, SaleImage, ShardImage};
use rkyv::rancor;
use rkyv::util::AlignedVec;

const MAGIC: &[u8; 8] = b"INVSNAP1";
const HEADER: usize = 32;
/// Layout of the body. 2: columnar stock (SKU id string, warehouse table,
/// fixed-size rows with 32-bit counters); holds refer to rows by position.
/// 3: the same, followed by the cold section. 4: then the operator section.
/// 5: then the sale section.
pub const FORMAT_VERSION: u32 = 5;
/// The oldest version still read.
const FORMAT_VERSION_MIN: u32 = 2;
/// A section after the image: its length (u64 LE) and CRC-32 (u32 LE).
const SECTION_HEADER: usize = 12;

fn section<T>(value: &T) -> std::io::Result<Vec<u8>>
where
    T: for<'a> rkyv::Serialize<
        rkyv::api::high::HighSerializer<AlignedVec, rkyv::ser::allocator::ArenaHandle<'a>, rancor::Error>,
    >,
{
    let body = rkyv::to_bytes::<rancor::Error>(value).map_err(std::io::Error::other)?;
    let mut out = Vec::with_capacity(SECTION_HEADER + body.len());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Reads the next section's checked bytes.
fn read_section(f: &mut File, path: &Path, name: &str) -> Result<AlignedVec<16>, String> {
    let mut header = [0u8; SECTION_HEADER];
    f.read_exact(&mut header).map_err(|e| format!("{}: {name} section: {e}", path.display()))?;
    let len = u64::from_le_bytes(header[..8].try_into().unwrap()) as usize;
    let crc = u32::from_le_bytes(header[8..].try_into().unwrap());
    let mut body = AlignedVec::<16>::with_capacity(len);
    body.resize(len, 0);
    f.read_exact(&mut body).map_err(|e| format!("{}: {name} section: {e}", path.display()))?;
    if crc32fast::hash(&body) != crc {
        return Err(format!("{}: {name} section checksum mismatch", path.display()));
    }
    Ok(body)
}

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
    let cold = section(&image.cold)?;
    let ops = section(&image.ops)?;
    let sale = section(&image.sale)?;
    let mut header = [0u8; HEADER];
    header[..8].copy_from_slice(MAGIC);
    header[8..16].copy_from_slice(&seq.to_le_bytes());
    header[16..24].copy_from_slice(&(body.len() as u64).to_le_bytes());
    header[24..28].copy_from_slice(&crc32fast::hash(&body).to_le_bytes());
    header[28..32].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    let path = sdir.join(file_name(seq));
    let tmp = sdir.join(format!("{}.tmp", file_name(seq)));
    let written = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(&header)?;
        f.write_all(&body)?;
        f.write_all(&cold)?;
        f.write_all(&ops)?;
        f.write_all(&sale)?;
        f.sync_all()
    })();
    if let Err(e) = written {
        // What was written goes, so a full disk is not left fuller.
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, &path)?;
    File::open(&sdir)?.sync_all()?;
    Ok((path, (HEADER + body.len() + cold.len() + ops.len() + sale.len()) as u64))
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
    if !(FORMAT_VERSION_MIN..=FORMAT_VERSION).contains(&version) {
        return Err(format!(
            "{}: snapshot format version {version}, this build reads versions {FORMAT_VERSION_MIN} to {FORMAT_VERSION}",
            path.display()
        ));
    }
    let mut body = AlignedVec::<16>::with_capacity(len);
    body.resize(len, 0);
    f.read_exact(&mut body).map_err(|e| format!("{}: body: {e}", path.display()))?;
    if crc32fast::hash(&body) != crc {
        return Err(format!("{}: checksum mismatch", path.display()));
    }
    let mut image = rkyv::from_bytes::<ShardImage, rancor::Error>(&body)
        .map_err(|e| format!("{}: undecodable: {e}", path.display()))?;
    if version >= 3 {
        let cold = read_section(&mut f, &path, "cold")?;
        image.cold = rkyv::from_bytes::<ColdImage, rancor::Error>(&cold)
            .map_err(|e| format!("{}: cold section undecodable: {e}", path.display()))?;
    }
    if version >= 4 {
        let ops = read_section(&mut f, &path, "operator")?;
        image.ops = rkyv::from_bytes::<OpsImage, rancor::Error>(&ops)
            .map_err(|e| format!("{}: operator section undecodable: {e}", path.display()))?;
    }
    if version >= 5 {
        let sale = read_section(&mut f, &path, "sale")?;
        image.sale = rkyv::from_bytes::<SaleImage, rancor::Error>(&sale)
            .map_err(|e| format!("{}: sale section undecodable: {e}", path.display()))?;
    }
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
        assert!(e.ends_with("snapshot format version 1, this build reads versions 2 to 5"), "{e}");
        assert_eq!(latest(dir.path(), 1, u64::MAX).unwrap().unwrap(), (10, image(1)));
    }

    /// An image whose shard moved records to the cold tier.
    fn image_with_cold() -> ShardImage {
        use inventory_core::{ColdFacts, Evict, Release, Reserve};
        let mut s = Shard::new(ShardConfig::new(1));
        let apply = |s: &mut Shard, at, c: Command| s.apply_with(at, &c, &ColdFacts::NONE, &mut Vec::new()).unwrap();
        let receive = Receive {
            sku_id: "s".into(),
            warehouse_id: "w".into(),
            qty: 5,
            idem_key: "k".into(),
            reference: String::new(),
        };
        apply(&mut s, 5, Command::Receive(receive));
        let reserve = Reserve {
            order_id: "o".into(),
            sku_id: "s".into(),
            warehouse_id: "w".into(),
            qty: 1,
            idem_key: "r".into(),
            ttl_ms: 1_000,
            ttl_explicit: false,
        };
        apply(&mut s, 6, Command::Reserve(reserve));
        let id = "rsv-1-1".parse().unwrap();
        apply(&mut s, 7, Command::Release(Release { reservation_id: id, reason: "no".into(), idem_key: "x".into() }));
        apply(&mut s, 9, Command::Evict(Evict { holds_before: 8, keys_before: 8 }));
        let freeze = inventory_core::Freeze {
            sku_id: "s".into(),
            warehouse_id: None,
            frozen: true,
            reason: "count".into(),
            idem_key: "f".into(),
        };
        apply(&mut s, 10, Command::Freeze(freeze));
        let policy = inventory_core::SalePolicy { max_per_buyer: Some(2), ..Default::default() };
        let set = inventory_core::SetPolicy {
            sku_id: "s".into(),
            policy: Some(policy),
            operator: "ann".into(),
            idem_key: "p".into(),
        };
        apply(&mut s, 11, Command::SetPolicy(Box::new(set)));
        let image = s.image();
        assert!(image.cold != Default::default(), "the shard moved records out");
        assert!(!image.ops.rows.is_empty(), "an operator froze a row");
        assert!(!image.sale.skus.is_empty(), "an operator set a policy");
        image
    }

    #[test]
    fn the_filters_of_what_moved_to_the_cold_tier_are_kept_and_a_version_2_file_reads_without_them() {
        let dir = tempfile::tempdir().unwrap();
        let (path, bytes) = write(dir.path(), 1, 10, &image_with_cold()).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), bytes);
        assert_eq!(read(dir.path(), 1, 10).unwrap(), image_with_cold());
        // The same file as version 2 wrote it: no cold section.
        let mut old = fs::read(&path).unwrap();
        let body = u64::from_le_bytes(old[16..24].try_into().unwrap()) as usize;
        old.truncate(HEADER + body);
        old[28..32].copy_from_slice(&2u32.to_le_bytes());
        fs::write(&path, &old).unwrap();
        let read_back = read(dir.path(), 1, 10).unwrap();
        assert_eq!(read_back.cold, Default::default());
        let bare = ShardImage {
            cold: Default::default(),
            ops: Default::default(),
            sale: Default::default(),
            ..image_with_cold()
        };
        assert_eq!(bare, read_back);
    }

    #[test]
    fn the_operator_section_is_kept_and_a_version_3_file_reads_without_it() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = write(dir.path(), 1, 10, &image_with_cold()).unwrap();
        // The same file as version 3 wrote it: the cold section, no more.
        let mut old = fs::read(&path).unwrap();
        let body = u64::from_le_bytes(old[16..24].try_into().unwrap()) as usize;
        let cold = u64::from_le_bytes(old[HEADER + body..HEADER + body + 8].try_into().unwrap()) as usize;
        old.truncate(HEADER + body + SECTION_HEADER + cold);
        old[28..32].copy_from_slice(&3u32.to_le_bytes());
        fs::write(&path, &old).unwrap();
        let read_back = read(dir.path(), 1, 10).unwrap();
        assert_eq!(ShardImage { ops: Default::default(), sale: Default::default(), ..image_with_cold() }, read_back);
        // A damaged operator section is a bad file, not a shard without
        // operator state.
        let (path, _) = write(dir.path(), 1, 20, &image_with_cold()).unwrap();
        let mut bytes = fs::read(&path).unwrap();
        let ops_body = HEADER + body + SECTION_HEADER + cold + SECTION_HEADER;
        bytes[ops_body] ^= 0xff;
        fs::write(&path, &bytes).unwrap();
        let e = read(dir.path(), 1, 20).unwrap_err();
        assert!(e.ends_with("operator section checksum mismatch"), "{e}");
    }

    #[test]
    fn the_sale_section_is_kept_and_a_version_4_file_reads_without_it() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = write(dir.path(), 1, 10, &image_with_cold()).unwrap();
        assert_eq!(read(dir.path(), 1, 10).unwrap(), image_with_cold());
        // The same file as version 4 wrote it: no sale section.
        let mut old = fs::read(&path).unwrap();
        let sale = {
            let mut at = HEADER + u64::from_le_bytes(old[16..24].try_into().unwrap()) as usize;
            for _ in 0..2 {
                at += SECTION_HEADER + u64::from_le_bytes(old[at..at + 8].try_into().unwrap()) as usize;
            }
            at
        };
        old.truncate(sale);
        old[28..32].copy_from_slice(&4u32.to_le_bytes());
        fs::write(&path, &old).unwrap();
        assert_eq!(read(dir.path(), 1, 10).unwrap(), ShardImage { sale: Default::default(), ..image_with_cold() });
        // A damaged sale section is a bad file.
        let (path, _) = write(dir.path(), 1, 20, &image_with_cold()).unwrap();
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(&path, &bytes).unwrap();
        let e = read(dir.path(), 1, 20).unwrap_err();
        assert!(e.ends_with("sale section checksum mismatch"), "{e}");
    }
}
