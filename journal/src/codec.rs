//! Record framing: `[format: u8][crc32c: u32 LE][rkyv body]`.
//!
//! Two body formats:
//! - [`FORMAT_VERSION`]: the [`Entry`] as it is.
//! - [`FORMAT_BULK_RECEIPT`]: a bulk receipt without its txns, which follow
//!   from its items: txn `i` receives item `i` under the batch's reference,
//!   with consecutive txn ids, at the entry's time. Only the rows that
//!   existed before are listed, with their levels before and version after;
//!   a new row starts at zero and ends at version 1. This stores a
//!   10,000-row receipt in about a fifth of the bytes. The encoder derives
//!   the txns back and uses this format only when they match exactly.

use inventory_core::{ArchivedLevels, Command, Entry, Levels, Millis, ReceiveBatch, Txn, TxnKind};
use rkyv::rancor;
use rkyv::util::AlignedVec;
use rkyv::with::Inline;

use crate::JournalError;

/// Bumped on any incompatible change of the record layout.
pub const FORMAT_VERSION: u8 = 1;
/// A bulk receipt with derived txns.
pub const FORMAT_BULK_RECEIPT: u8 = 2;
const HEADER_LEN: usize = 5;

/// The body of a [`FORMAT_BULK_RECEIPT`] record.
#[derive(rkyv::Archive, rkyv::Serialize)]
struct BulkReceipt<'a> {
    seq: u64,
    at: Millis,
    trace_id: u128,
    #[rkyv(with = Inline)]
    operator: &'a String,
    #[rkyv(with = Inline)]
    batch: &'a ReceiveBatch,
    first_txn_id: u64,
    /// Rows that existed before the receipt, by item position.
    existing: Vec<Existing>,
}

#[derive(Clone, Copy, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct Existing {
    item: u32,
    before: Levels,
    version: u64,
}

/// Txn `i` of a bulk receipt, given the row's levels before and version after.
fn receipt_txn(
    entry_at: Millis,
    batch: &ReceiveBatch,
    first_txn_id: u64,
    i: usize,
    existing: Option<&Existing>,
) -> Txn {
    let item = &batch.items[i];
    let (before, version) = existing.map_or((Levels::default(), 1), |e| (e.before, e.version));
    Txn {
        txn_id: first_txn_id + i as u64,
        kind: TxnKind::Receive,
        sku_id: item.sku_id.clone(),
        warehouse_id: item.warehouse_id.clone(),
        qty: item.qty,
        ref_id: batch.txn_reference().to_string(),
        order_id: String::new(),
        detail: String::new(),
        before,
        after: Levels { available: before.available.saturating_add(item.qty), ..before },
        version,
        at: entry_at,
    }
}

/// Whether `txn` is exactly what [`receipt_txn`] derives for item `i`,
/// checked field by field without building it.
fn derivable(entry_at: Millis, batch: &ReceiveBatch, first_txn_id: u64, i: usize, txn: &Txn, e: &Existing) -> bool {
    let item = &batch.items[i];
    txn.txn_id == first_txn_id.wrapping_add(i as u64)
        && txn.kind == TxnKind::Receive
        && txn.sku_id == item.sku_id
        && txn.warehouse_id == item.warehouse_id
        && txn.qty == item.qty
        && txn.ref_id == batch.txn_reference()
        && txn.order_id.is_empty()
        && txn.detail.is_empty()
        && txn.before == e.before
        && e.before.available.checked_add(item.qty) == Some(txn.after.available)
        && txn.after.reserved == e.before.reserved
        && txn.after.sold == e.before.sold
        && txn.version == e.version
        && txn.at == entry_at
}

/// The rows that existed before, if every txn of `entry` follows from its
/// bulk receipt.
fn bulk_existing(entry: &Entry) -> Option<(&ReceiveBatch, u64, Vec<Existing>)> {
    let Command::ReceiveBatch(batch) = &entry.command else { return None };
    let first_txn_id = entry.txns.first()?.txn_id;
    if entry.txns.len() != batch.items.len() {
        return None;
    }
    let mut existing = Vec::new();
    for (i, txn) in entry.txns.iter().enumerate() {
        let listed = Existing { item: i as u32, before: txn.before, version: txn.version };
        if !derivable(entry.at, batch, first_txn_id, i, txn, &listed) {
            return None;
        }
        if txn.before != Levels::default() || txn.version != 1 {
            existing.push(listed);
        }
    }
    Some((batch, first_txn_id, existing))
}

/// Encodes one entry into a framed record.
pub fn encode(entry: &Entry) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(entry, &mut out);
    out
}

/// Encodes one entry into a framed record, replacing what `out` held (a
/// buffer the caller keeps from record to record).
pub fn encode_into(entry: &Entry, out: &mut Vec<u8>) {
    with_scratch(|scratch| {
        let format = match bulk_existing(entry) {
            Some((batch, first_txn_id, existing)) => {
                let bulk = BulkReceipt {
                    seq: entry.seq,
                    at: entry.at,
                    trace_id: entry.trace_id,
                    operator: &entry.operator,
                    batch,
                    first_txn_id,
                    existing,
                };
                *scratch = rkyv::api::high::to_bytes_in::<_, rancor::Error>(&bulk, std::mem::take(scratch))
                    .expect("entries always serialize");
                FORMAT_BULK_RECEIPT
            }
            None => {
                *scratch = rkyv::api::high::to_bytes_in::<_, rancor::Error>(entry, std::mem::take(scratch))
                    .expect("entries always serialize");
                FORMAT_VERSION
            }
        };
        out.clear();
        out.reserve(HEADER_LEN + scratch.len());
        out.push(format);
        out.extend_from_slice(&crc32fast::hash(scratch).to_le_bytes());
        out.extend_from_slice(scratch);
    })
}

/// Most bytes a thread's scratch buffer keeps between records.
const SCRATCH_KEEP: usize = 8 << 20;

thread_local! {
    /// Each thread's buffer for serializing a record body, or for aligning
    /// one before reading it. Kept between records: a fresh buffer per
    /// 10,000-row receipt is a fresh (page-faulted) allocation each time.
    static SCRATCH: std::cell::RefCell<AlignedVec<16>> = std::cell::RefCell::new(AlignedVec::new());
}

/// Runs `f` with this thread's scratch buffer, empty.
fn with_scratch<T>(f: impl FnOnce(&mut AlignedVec<16>) -> T) -> T {
    SCRATCH.with(|cell| {
        let mut scratch = cell.take();
        scratch.clear();
        let result = f(&mut scratch);
        if scratch.capacity() <= SCRATCH_KEEP {
            cell.replace(scratch);
        }
        result
    })
}

fn decode_bulk(body: &[u8]) -> Result<Entry, rancor::Error> {
    let archived = rkyv::access::<ArchivedBulkReceipt, rancor::Error>(body)?;
    let batch: ReceiveBatch = rkyv::deserialize::<ReceiveBatch, rancor::Error>(&archived.batch)?;
    let existing: Vec<Existing> = rkyv::deserialize::<Vec<Existing>, rancor::Error>(&archived.existing)?;
    let (at, first_txn_id) = (archived.at.to_native(), archived.first_txn_id.to_native());
    let mut listed = existing.iter().peekable();
    let mut txns = Vec::with_capacity(batch.items.len());
    for i in 0..batch.items.len() {
        let e = listed.next_if(|e| e.item as usize == i);
        txns.push(receipt_txn(at, &batch, first_txn_id, i, e));
    }
    if listed.next().is_some() {
        return Err(<rancor::Error as rancor::Source>::new(BadExisting));
    }
    Ok(Entry {
        seq: archived.seq.to_native(),
        at,
        trace_id: archived.trace_id.to_native(),
        operator: archived.operator.as_str().to_string(),
        command: Command::ReceiveBatch(batch),
        txns,
    })
}

/// A record as a reader that needs less than the whole entry sees it.
pub enum Inspected<'a> {
    /// A bulk receipt, read in place: no entry and no txn is built.
    Bulk(BulkView<'a>),
    /// Any other record, decoded.
    Entry(Entry),
}

/// A bulk receipt's record, read in place.
pub struct BulkView<'a> {
    archived: &'a ArchivedBulkReceipt<'a>,
}

/// One row of a bulk receipt: what its txn records, without the txn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BulkRow<'a> {
    pub sku_id: &'a str,
    pub warehouse_id: &'a str,
    pub qty: u64,
    pub before: Levels,
    pub after: Levels,
}

impl<'a> BulkView<'a> {
    pub fn seq(&self) -> u64 {
        self.archived.seq.to_native()
    }

    pub fn at(&self) -> Millis {
        self.archived.at.to_native()
    }

    pub fn trace_id(&self) -> u128 {
        self.archived.trace_id.to_native()
    }

    pub fn operator(&self) -> &'a str {
        self.archived.operator.as_str()
    }

    /// What every txn records as `ref_id` ([`ReceiveBatch::txn_reference`]).
    pub fn reference(&self) -> &'a str {
        let batch = &self.archived.batch;
        if batch.reference.is_empty() {
            batch.idem_key.as_str()
        } else {
            batch.reference.as_str()
        }
    }

    /// Rows (items) in the receipt.
    pub fn len(&self) -> usize {
        self.archived.batch.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The rows in item order, with the levels [`receipt_txn`] derives.
    pub fn rows(&self) -> impl Iterator<Item = BulkRow<'a>> + 'a {
        let mut listed = self.archived.existing.iter().peekable();
        self.archived.batch.items.iter().enumerate().map(move |(i, item)| {
            let (before, _) = listed
                .next_if(|e| e.item.to_native() as usize == i)
                .map_or((Levels::default(), 1), |e| (levels(&e.before), e.version.to_native()));
            let qty = item.qty.to_native();
            BulkRow {
                sku_id: item.sku_id.as_str(),
                warehouse_id: item.warehouse_id.as_str(),
                qty,
                before,
                after: Levels { available: before.available.saturating_add(qty), ..before },
            }
        })
    }
}

fn levels(archived: &ArchivedLevels) -> Levels {
    Levels {
        available: archived.available.to_native(),
        reserved: archived.reserved.to_native(),
        sold: archived.sold.to_native(),
    }
}

/// Whether the listed rows are in item order, each once, and within the
/// items: what [`decode_bulk`] requires of them.
fn existing_in_order(archived: &ArchivedBulkReceipt) -> bool {
    let items = archived.batch.items.len();
    let mut next = 0;
    archived.existing.iter().all(|e| {
        let item = e.item.to_native() as usize;
        let ok = item >= next && item < items;
        next = item + 1;
        ok
    })
}

/// Checks one framed record like [`decode`] and hands it to `f`: a bulk
/// receipt in place ([`Inspected::Bulk`]), anything else decoded.
pub fn inspect<T>(shard: u16, seq: u64, record: &[u8], f: impl FnOnce(Inspected<'_>) -> T) -> Result<T, JournalError> {
    let corrupt = |reason: String| JournalError::Corrupt { shard, seq, reason };
    let (format, body) = checked_body(shard, seq, record)?;
    if format != FORMAT_BULK_RECEIPT {
        return decode(shard, seq, record).map(|entry| f(Inspected::Entry(entry)));
    }
    with_scratch(|aligned| {
        aligned.extend_from_slice(body);
        let archived = rkyv::access::<ArchivedBulkReceipt, rancor::Error>(aligned)
            .map_err(|e| corrupt(format!("undecodable: {e}")))?;
        if !existing_in_order(archived) {
            return Err(corrupt(format!("undecodable: {BadExisting}")));
        }
        if archived.seq.to_native() != seq {
            return Err(corrupt(format!("record says seq {}", archived.seq.to_native())));
        }
        Ok(f(Inspected::Bulk(BulkView { archived })))
    })
}

/// A listed row that is out of order or past the last item.
#[derive(Debug)]
struct BadExisting;

impl std::fmt::Display for BadExisting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("existing rows out of order or past the last item")
    }
}

impl std::error::Error for BadExisting {}

/// Checks and decodes one framed record. `shard` and `seq` (the record's
/// key) only label errors and are compared with the decoded entry.
pub fn decode(shard: u16, seq: u64, record: &[u8]) -> Result<Entry, JournalError> {
    let corrupt = |reason: String| JournalError::Corrupt { shard, seq, reason };
    let (format, body) = checked_body(shard, seq, record)?;
    let entry = with_scratch(|aligned| {
        aligned.extend_from_slice(body);
        match format {
            FORMAT_VERSION => rkyv::from_bytes::<Entry, rancor::Error>(aligned),
            _ => decode_bulk(aligned),
        }
    })
    .map_err(|e| corrupt(format!("undecodable: {e}")))?;
    if entry.seq != seq {
        return Err(corrupt(format!("record says seq {}", entry.seq)));
    }
    Ok(entry)
}

/// A record's format and body, once its header and checksum check out.
fn checked_body(shard: u16, seq: u64, record: &[u8]) -> Result<(u8, &[u8]), JournalError> {
    let corrupt = |reason: String| JournalError::Corrupt { shard, seq, reason };
    if record.len() < HEADER_LEN {
        return Err(corrupt(format!("record of {} bytes is shorter than its header", record.len())));
    }
    if record[0] != FORMAT_VERSION && record[0] != FORMAT_BULK_RECEIPT {
        return Err(corrupt(format!("unknown format version {}", record[0])));
    }
    let crc = u32::from_le_bytes(record[1..5].try_into().unwrap());
    let body = &record[HEADER_LEN..];
    if crc32fast::hash(body) != crc {
        return Err(corrupt("checksum mismatch".into()));
    }
    Ok((record[0], body))
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

    /// A bulk receipt applied by a real shard: `a` and `b` exist before it.
    fn bulk(reference: &str) -> Entry {
        use inventory_core::{Receive, Shard, ShardConfig};
        let mut shard = Shard::new(ShardConfig::new(3));
        let mut txns = Vec::new();
        for (i, sku) in ["a", "b"].iter().enumerate() {
            let receive = Command::Receive(Receive {
                sku_id: sku.to_string(),
                warehouse_id: "w".into(),
                qty: 2,
                idem_key: format!("r{i}"),
                reference: String::new(),
            });
            assert!(shard.apply(5, &receive, &mut txns).changed);
        }
        let items = [("x", "w", 1), ("a", "w", 4), ("y", "e", 9), ("b", "w", 6), ("a", "e", 3)];
        let command = crate::test_support::receive_batch(&items, "bulk-key", reference);
        txns.clear();
        assert!(shard.apply(9, &command, &mut txns).changed);
        Entry { seq: 3, at: 9, trace_id: 11, operator: "ops".into(), command, txns }
    }

    #[test]
    fn a_bulk_receipt_is_stored_without_its_txns_and_decodes_to_the_same_entry() {
        for reference in ["po-7", ""] {
            let entry = bulk(reference);
            let record = encode(&entry);
            assert_eq!(record[0], FORMAT_BULK_RECEIPT);
            assert_eq!(decode(0, 3, &record).unwrap(), entry);
            let full = rkyv::to_bytes::<rancor::Error>(&entry).unwrap();
            assert!(record.len() * 2 < full.len(), "{} bytes against {}", record.len(), full.len());
        }
    }

    #[test]
    fn a_bulk_receipt_read_in_place_shows_what_its_decoded_entry_holds() {
        for reference in ["po-7", ""] {
            let entry = bulk(reference);
            let Command::ReceiveBatch(batch) = &entry.command else { unreachable!() };
            let seen = inspect(0, 3, &encode(&entry), |inspected| {
                let Inspected::Bulk(view) = inspected else { panic!("a bulk receipt is read in place") };
                let head = (view.seq(), view.at(), view.trace_id(), view.operator().to_string(), view.len());
                (head, view.reference().to_string(), view.rows().map(|r| format!("{r:?}")).collect::<Vec<_>>())
            })
            .unwrap();
            let txns: Vec<String> = entry
                .txns
                .iter()
                .map(|t| {
                    let row = BulkRow {
                        sku_id: &t.sku_id,
                        warehouse_id: &t.warehouse_id,
                        qty: t.qty,
                        before: t.before,
                        after: t.after,
                    };
                    format!("{row:?}")
                })
                .collect();
            assert_eq!(seen, ((3, 9, 11, "ops".to_string(), 5), batch.txn_reference().to_string(), txns));
            assert!(entry.txns.iter().any(|t| t.before != Levels::default()), "existing rows are covered");
        }
    }

    #[test]
    fn any_other_record_is_inspected_decoded_and_bad_ones_are_refused() {
        let seen = inspect(0, 7, &encode(&entry()), |inspected| match inspected {
            Inspected::Entry(e) => e,
            Inspected::Bulk(_) => panic!("not a bulk receipt"),
        });
        assert_eq!(seen.unwrap(), entry());
        let good = encode(&bulk("po-7"));
        assert!(inspect(0, 4, &good, |_| ()).is_err(), "a record under the wrong key is corrupt");
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x40;
            assert!(inspect(0, 3, &bad, |_| ()).is_err(), "flip at byte {i} went unnoticed");
        }
    }

    #[test]
    fn a_bulk_receipt_whose_txns_do_not_follow_from_it_is_stored_whole() {
        let mut entry = bulk("po-7");
        entry.txns[2].detail = "note".into();
        let record = encode(&entry);
        assert_eq!(record[0], FORMAT_VERSION);
        assert_eq!(decode(0, 3, &record).unwrap(), entry);
        let mut entry = bulk("po-7");
        entry.txns.pop();
        assert_eq!(encode(&entry)[0], FORMAT_VERSION);
        assert_eq!(decode(0, 3, &encode(&entry)).unwrap(), entry);
    }

    #[test]
    fn any_flipped_byte_of_a_bulk_receipt_is_detected() {
        let good = encode(&bulk("po-7"));
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x40;
            assert!(decode(0, 3, &bad).is_err(), "flip at byte {i} went unnoticed");
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
