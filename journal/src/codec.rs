//! Record framing: `[version: u8][crc32c: u32 LE][rkyv Entry]`.

use inventory_core::Entry;
use rkyv::rancor;
use rkyv::util::AlignedVec;

use crate::JournalError;

/// Bumped on any incompatible change of the record layout.
pub const FORMAT_VERSION: u8 = 1;
const HEADER_LEN: usize = 5;

/// Encodes one entry into a framed record.
pub fn encode(entry: &Entry) -> Vec<u8> {
    let body = rkyv::to_bytes::<rancor::Error>(entry).expect("entries always serialize");
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// Checks and decodes one framed record. `shard` and `seq` (the record's
/// key) only label errors and are compared with the decoded entry.
pub fn decode(shard: u16, seq: u64, record: &[u8]) -> Result<Entry, JournalError> {
    let corrupt = |reason: String| JournalError::Corrupt { shard, seq, reason };
    if record.len() < HEADER_LEN {
        return Err(corrupt(format!("record of {} bytes is shorter than its header", record.len())));
    }
    if record[0] != FORMAT_VERSION {
        return Err(corrupt(format!("unknown format version {}", record[0])));
    }
    let crc = u32::from_le_bytes(record[1..5].try_into().unwrap());
    let body = &record[HEADER_LEN..];
    if crc32fast::hash(body) != crc {
        return Err(corrupt("checksum mismatch".into()));
    }
    let mut aligned = AlignedVec::<16>::with_capacity(body.len());
    aligned.extend_from_slice(body);
    let entry = rkyv::from_bytes::<Entry, rancor::Error>(&aligned).map_err(|e| corrupt(format!("undecodable: {e}")))?;
    if entry.seq != seq {
        return Err(corrupt(format!("record says seq {}", entry.seq)));
    }
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use inventory_core::{Command, Expire, ReservationId};

    fn entry() -> Entry {
        Entry {
            seq: 7,
            at: 42,
            trace_id: 7,
            operator: "op".into(),
            command: Command::Expire(Expire { ids: vec![ReservationId::new(1, 2)] }),
            txns: vec![],
        }
    }

    #[test]
    fn round_trip() {
        assert_eq!(decode(0, 7, &encode(&entry())).unwrap(), entry());
    }

    #[test]
    fn any_flipped_byte_is_detected() {
        let good = encode(&entry());
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x40;
            assert!(decode(0, 7, &bad).is_err(), "flip at byte {i} went unnoticed");
        }
        assert!(decode(0, 7, &good[..good.len() - 1]).is_err());
        assert!(decode(0, 8, &good).is_err(), "a record under the wrong key is corrupt");
    }
}
