//! Record framing: `[format: u8][crc32c: u32 LE][rkyv body]`.
//!
//! Three body formats:
//! - [`FORMAT_VERSION`]: the [`Entry`] as it is.
//! - [`FORMAT_BULK_COLUMNS`]: a bulk receipt without its txns, which follow
//!   from its items: txn `i` receives item `i` under the batch's reference,
//!   with consecutive txn ids, at the entry's time. The items are stored by
//!   column (their SKU ids one after the other with a length each, a
//!   warehouse number into the record's own warehouse list, a `u32`
//!   quantity), 21 bytes per row of a 13-byte id. Only the rows that
//!   existed before are listed, with their levels before and version after;
//!   a new row starts at zero and ends at version 1. The encoder derives
//!   the txns back and uses this format only when they match exactly.
//! - [`FORMAT_BULK_RECEIPT`]: the same, with the items stored as they are
//!   (37 bytes per such row); written before the columns, still read.
//! - [`FORMAT_WITH_COLD`]: an [`Entry`] decided with records from the cold
//!   tier, stored beside it ([`WithCold`]); the entry's own layout is that
//!   of [`FORMAT_VERSION`], where they are left out.

use inventory_core::{
    ArchivedLevels, ColdFacts, Command, Entry, Levels, Millis, ReceiveBatch, ReceiveItem, Txn, TxnKind,
};
use rkyv::rancor;
use rkyv::util::AlignedVec;
use rkyv::with::Inline;

use crate::JournalError;

/// Bumped on any incompatible change of the record layout.
pub const FORMAT_VERSION: u8 = 1;
/// A bulk receipt with derived txns, its items as they are (read only).
pub const FORMAT_BULK_RECEIPT: u8 = 2;
/// A bulk receipt with derived txns, its items by column.
pub const FORMAT_BULK_COLUMNS: u8 = 3;
/// An entry and the cold-tier records it was decided with.
pub const FORMAT_WITH_COLD: u8 = 4;
const HEADER_LEN: usize = 5;

/// The body of a [`FORMAT_BULK_RECEIPT`] record. Such records are read,
/// no longer written (the tests still write them, to read them back).
#[derive(rkyv::Archive, rkyv::Serialize)]
#[cfg_attr(not(test), allow(dead_code))]
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

/// The body of a [`FORMAT_WITH_COLD`] record.
#[derive(rkyv::Archive, rkyv::Serialize)]
struct WithCold<'a> {
    #[rkyv(with = Inline)]
    entry: &'a Entry,
    #[rkyv(with = Inline)]
    cold: &'a ColdFacts,
}

/// The body of a [`FORMAT_BULK_COLUMNS`] record.
#[derive(rkyv::Archive, rkyv::Serialize)]
struct BulkColumns<'a> {
    seq: u64,
    at: Millis,
    trace_id: u128,
    #[rkyv(with = Inline)]
    operator: &'a String,
    #[rkyv(with = Inline)]
    idem_key: &'a String,
    #[rkyv(with = Inline)]
    reference: &'a String,
    first_txn_id: u64,
    /// The items' distinct warehouse ids, in the order they first appear.
    warehouses: Vec<String>,
    /// The items' SKU ids one after the other, and the length of each.
    sku_ids: String,
    sku_lens: Vec<u16>,
    /// Per item: its warehouse's position in `warehouses`, and its quantity.
    warehouse: Vec<u16>,
    qty: Vec<u32>,
    /// Rows that existed before the receipt, by item position.
    existing: Vec<Existing>,
}

impl<'a> BulkColumns<'a> {
    /// The columns of `batch`, or `None` if an item does not fit them (an
    /// id or a warehouse count past `u16`, a quantity past `u32`; none of
    /// which a receipt the core applied has).
    fn of(entry: &'a Entry, batch: &'a ReceiveBatch, first_txn_id: u64, existing: Vec<Existing>) -> Option<Self> {
        let n = batch.items.len();
        let mut columns = BulkColumns {
            seq: entry.seq,
            at: entry.at,
            trace_id: entry.trace_id,
            operator: &entry.operator,
            idem_key: &batch.idem_key,
            reference: &batch.reference,
            first_txn_id,
            warehouses: Vec::new(),
            sku_ids: String::with_capacity(batch.items.iter().map(|i| i.sku_id.len()).sum()),
            sku_lens: Vec::with_capacity(n),
            warehouse: Vec::with_capacity(n),
            qty: Vec::with_capacity(n),
            existing,
        };
        let mut positions: rustc_hash::FxHashMap<&str, u16> = Default::default();
        for item in &batch.items {
            let next = columns.warehouses.len();
            let w = match positions.get(item.warehouse_id.as_str()) {
                Some(&w) => w,
                None => {
                    let w = u16::try_from(next).ok()?;
                    positions.insert(&item.warehouse_id, w);
                    columns.warehouses.push(item.warehouse_id.clone());
                    w
                }
            };
            columns.sku_ids.push_str(&item.sku_id);
            columns.sku_lens.push(u16::try_from(item.sku_id.len()).ok()?);
            columns.warehouse.push(w);
            columns.qty.push(u32::try_from(item.qty).ok()?);
        }
        Some(columns)
    }
}

/// One item of a [`FORMAT_BULK_COLUMNS`] record, read in place.
struct ColumnItem<'a> {
    sku_id: &'a str,
    warehouse_id: &'a str,
    qty: u64,
}

impl<'a> ArchivedBulkColumns<'a> {
    /// Whether the columns fit together: one entry per item in each, the
    /// lengths adding up to the ids (each ending on a character boundary),
    /// warehouse positions within the list, listed rows in item order.
    fn valid(&self) -> bool {
        let n = self.sku_lens.len();
        if self.warehouse.len() != n || self.qty.len() != n {
            return false;
        }
        let mut end = 0usize;
        for len in self.sku_lens.iter() {
            end += len.to_native() as usize;
            if !self.sku_ids.as_str().is_char_boundary(end) {
                return false;
            }
        }
        let warehouses = self.warehouses.len();
        end == self.sku_ids.len()
            && self.warehouse.iter().all(|w| (w.to_native() as usize) < warehouses)
            && in_item_order(self.existing.iter().map(|e| e.item.to_native()), n)
    }

    /// The items in order. Only for columns that are [`valid`](Self::valid).
    fn items<'s>(&'s self) -> impl Iterator<Item = ColumnItem<'s>> + use<'s, 'a> {
        let ids = self.sku_ids.as_str();
        let mut start = 0;
        self.sku_lens.iter().zip(self.warehouse.iter()).zip(self.qty.iter()).map(move |((len, w), qty)| {
            let end = start + len.to_native() as usize;
            let sku_id = &ids[start..end];
            start = end;
            ColumnItem {
                sku_id,
                warehouse_id: self.warehouses[w.to_native() as usize].as_str(),
                qty: qty.to_native() as u64,
            }
        })
    }

    fn reference(&self) -> &str {
        if self.reference.is_empty() {
            self.idem_key.as_str()
        } else {
            self.reference.as_str()
        }
    }
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
        let columns = bulk_existing(entry)
            .and_then(|(batch, first_txn_id, existing)| BulkColumns::of(entry, batch, first_txn_id, existing));
        let format = match columns {
            Some(columns) => {
                *scratch = rkyv::api::high::to_bytes_in::<_, rancor::Error>(&columns, std::mem::take(scratch))
                    .expect("entries always serialize");
                FORMAT_BULK_COLUMNS
            }
            None => match entry.cold.as_deref().filter(|cold| !cold.is_empty()) {
                None => {
                    *scratch = rkyv::api::high::to_bytes_in::<_, rancor::Error>(entry, std::mem::take(scratch))
                        .expect("entries always serialize");
                    FORMAT_VERSION
                }
                Some(cold) => {
                    let with_cold = WithCold { entry, cold };
                    *scratch = rkyv::api::high::to_bytes_in::<_, rancor::Error>(&with_cold, std::mem::take(scratch))
                        .expect("entries always serialize");
                    FORMAT_WITH_COLD
                }
            },
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

/// The entry of a bulk receipt: its batch, and the txns derived from its
/// items and the rows listed as existing before it.
fn bulk_entry(
    seq: u64,
    at: Millis,
    trace_id: u128,
    operator: &str,
    batch: ReceiveBatch,
    first_txn_id: u64,
    existing: &rkyv::vec::ArchivedVec<ArchivedExisting>,
) -> Result<Entry, rancor::Error> {
    let existing: Vec<Existing> = rkyv::deserialize::<Vec<Existing>, rancor::Error>(existing)?;
    let mut listed = existing.iter().peekable();
    let mut txns = Vec::with_capacity(batch.items.len());
    for i in 0..batch.items.len() {
        let e = listed.next_if(|e| e.item as usize == i);
        txns.push(receipt_txn(at, &batch, first_txn_id, i, e));
    }
    if listed.next().is_some() {
        return Err(<rancor::Error as rancor::Source>::new(BadBulk::Existing));
    }
    let command = Command::ReceiveBatch(batch);
    Ok(Entry { seq, at, trace_id, operator: operator.to_string(), command, txns, cold: None })
}

fn decode_with_cold(body: &[u8]) -> Result<Entry, rancor::Error> {
    let a = rkyv::access::<ArchivedWithCold, rancor::Error>(body)?;
    let mut entry: Entry = rkyv::deserialize::<Entry, rancor::Error>(&a.entry)?;
    entry.cold = Some(Box::new(rkyv::deserialize::<ColdFacts, rancor::Error>(&a.cold)?));
    Ok(entry)
}

fn decode_bulk(body: &[u8]) -> Result<Entry, rancor::Error> {
    let a = rkyv::access::<ArchivedBulkReceipt, rancor::Error>(body)?;
    let batch: ReceiveBatch = rkyv::deserialize::<ReceiveBatch, rancor::Error>(&a.batch)?;
    let (at, first_txn_id) = (a.at.to_native(), a.first_txn_id.to_native());
    bulk_entry(a.seq.to_native(), at, a.trace_id.to_native(), &a.operator, batch, first_txn_id, &a.existing)
}

fn decode_columns(body: &[u8]) -> Result<Entry, rancor::Error> {
    let a = rkyv::access::<ArchivedBulkColumns, rancor::Error>(body)?;
    if !a.valid() {
        return Err(<rancor::Error as rancor::Source>::new(BadBulk::Columns));
    }
    let items = a
        .items()
        .map(|i| ReceiveItem { sku_id: i.sku_id.to_string(), warehouse_id: i.warehouse_id.to_string(), qty: i.qty })
        .collect();
    let batch =
        ReceiveBatch { items, idem_key: a.idem_key.as_str().to_string(), reference: a.reference.as_str().to_string() };
    let (at, first_txn_id) = (a.at.to_native(), a.first_txn_id.to_native());
    bulk_entry(a.seq.to_native(), at, a.trace_id.to_native(), &a.operator, batch, first_txn_id, &a.existing)
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
    archived: Archived<'a>,
}

enum Archived<'a> {
    Items(&'a ArchivedBulkReceipt<'a>),
    Columns(&'a ArchivedBulkColumns<'a>),
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
        match self.archived {
            Archived::Items(a) => a.seq.to_native(),
            Archived::Columns(a) => a.seq.to_native(),
        }
    }

    pub fn at(&self) -> Millis {
        match self.archived {
            Archived::Items(a) => a.at.to_native(),
            Archived::Columns(a) => a.at.to_native(),
        }
    }

    pub fn trace_id(&self) -> u128 {
        match self.archived {
            Archived::Items(a) => a.trace_id.to_native(),
            Archived::Columns(a) => a.trace_id.to_native(),
        }
    }

    pub fn operator(&self) -> &'a str {
        match self.archived {
            Archived::Items(a) => a.operator.as_str(),
            Archived::Columns(a) => a.operator.as_str(),
        }
    }

    /// What every txn records as `ref_id` ([`ReceiveBatch::txn_reference`]).
    pub fn reference(&self) -> &'a str {
        match self.archived {
            Archived::Items(a) if a.batch.reference.is_empty() => a.batch.idem_key.as_str(),
            Archived::Items(a) => a.batch.reference.as_str(),
            Archived::Columns(a) => a.reference(),
        }
    }

    /// Rows (items) in the receipt.
    pub fn len(&self) -> usize {
        match self.archived {
            Archived::Items(a) => a.batch.items.len(),
            Archived::Columns(a) => a.qty.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The rows in item order, with the levels [`receipt_txn`] derives.
    pub fn rows(&self) -> Box<dyn Iterator<Item = BulkRow<'a>> + 'a> {
        match self.archived {
            Archived::Items(a) => {
                let items =
                    a.batch.items.iter().map(|i| (i.sku_id.as_str(), i.warehouse_id.as_str(), i.qty.to_native()));
                Box::new(bulk_rows(items, &a.existing))
            }
            Archived::Columns(a) => {
                Box::new(bulk_rows(a.items().map(|i| (i.sku_id, i.warehouse_id, i.qty)), &a.existing))
            }
        }
    }
}

/// A bulk receipt's rows from its items `(sku, warehouse, qty)` and the
/// rows listed as existing before it.
fn bulk_rows<'a>(
    items: impl Iterator<Item = (&'a str, &'a str, u64)> + 'a,
    existing: &'a [ArchivedExisting],
) -> impl Iterator<Item = BulkRow<'a>> + 'a {
    let mut listed = existing.iter().peekable();
    items.enumerate().map(move |(i, (sku_id, warehouse_id, qty))| {
        let (before, _) = listed
            .next_if(|e| e.item.to_native() as usize == i)
            .map_or((Levels::default(), 1), |e| (levels(&e.before), e.version.to_native()));
        BulkRow {
            sku_id,
            warehouse_id,
            qty,
            before,
            after: Levels { available: before.available.saturating_add(qty), ..before },
        }
    })
}

fn levels(archived: &ArchivedLevels) -> Levels {
    Levels {
        available: archived.available.to_native(),
        reserved: archived.reserved.to_native(),
        sold: archived.sold.to_native(),
    }
}

/// Whether listed row positions are in item order, each once, and within
/// the `items`: what [`bulk_entry`] requires of them.
fn in_item_order(listed: impl IntoIterator<Item = u32>, items: usize) -> bool {
    let mut next = 0;
    listed.into_iter().all(|item| {
        let item = item as usize;
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
    if format == FORMAT_VERSION || format == FORMAT_WITH_COLD {
        return decode(shard, seq, record).map(|entry| f(Inspected::Entry(entry)));
    }
    with_scratch(|aligned| {
        aligned.extend_from_slice(body);
        let undecodable = |e: &dyn std::fmt::Display| corrupt(format!("undecodable: {e}"));
        let archived = if format == FORMAT_BULK_COLUMNS {
            let a = rkyv::access::<ArchivedBulkColumns, rancor::Error>(aligned).map_err(|e| undecodable(&e))?;
            if !a.valid() {
                return Err(undecodable(&BadBulk::Columns));
            }
            Archived::Columns(a)
        } else {
            let a = rkyv::access::<ArchivedBulkReceipt, rancor::Error>(aligned).map_err(|e| undecodable(&e))?;
            if !in_item_order(a.existing.iter().map(|e| e.item.to_native()), a.batch.items.len()) {
                return Err(undecodable(&BadBulk::Existing));
            }
            Archived::Items(a)
        };
        let view = BulkView { archived };
        if view.seq() != seq {
            return Err(corrupt(format!("record says seq {}", view.seq())));
        }
        Ok(f(Inspected::Bulk(view)))
    })
}

/// A bulk receipt record whose parts do not fit together.
#[derive(Debug, thiserror::Error)]
enum BadBulk {
    #[error("existing rows out of order or past the last item")]
    Existing,
    #[error("bulk receipt columns of different lengths or out of range")]
    Columns,
}

/// Checks and decodes one framed record. `shard` and `seq` (the record's
/// key) only label errors and are compared with the decoded entry.
pub fn decode(shard: u16, seq: u64, record: &[u8]) -> Result<Entry, JournalError> {
    let corrupt = |reason: String| JournalError::Corrupt { shard, seq, reason };
    let (format, body) = checked_body(shard, seq, record)?;
    let entry = with_scratch(|aligned| {
        aligned.extend_from_slice(body);
        match format {
            FORMAT_VERSION => rkyv::from_bytes::<Entry, rancor::Error>(aligned),
            FORMAT_WITH_COLD => decode_with_cold(aligned),
            FORMAT_BULK_COLUMNS => decode_columns(aligned),
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
    if ![FORMAT_VERSION, FORMAT_BULK_RECEIPT, FORMAT_BULK_COLUMNS, FORMAT_WITH_COLD].contains(&record[0]) {
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
            cold: Default::default(),
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
        Entry { seq: 3, at: 9, trace_id: 11, operator: "ops".into(), command, txns, cold: Default::default() }
    }

    /// A record in the bulk format written before the columns.
    fn encode_items_format(entry: &Entry) -> Vec<u8> {
        let (batch, first_txn_id, existing) = bulk_existing(entry).expect("a derivable bulk receipt");
        let bulk = BulkReceipt {
            seq: entry.seq,
            at: entry.at,
            trace_id: entry.trace_id,
            operator: &entry.operator,
            batch,
            first_txn_id,
            existing,
        };
        frame(FORMAT_BULK_RECEIPT, &rkyv::to_bytes::<rancor::Error>(&bulk).unwrap())
    }

    fn frame(format: u8, body: &[u8]) -> Vec<u8> {
        let mut record = vec![format];
        record.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
        record.extend_from_slice(body);
        record
    }

    /// A receipt of `rows` new SKUs, as an import sends them.
    fn import(rows: usize) -> Entry {
        use inventory_core::{Shard, ShardConfig};
        let items: Vec<(String, &str, u64)> = (0..rows).map(|i| (format!("SKU-{i:09}"), "default", 100)).collect();
        let items: Vec<(&str, &str, u64)> = items.iter().map(|(s, w, q)| (s.as_str(), *w, *q)).collect();
        let command = crate::test_support::receive_batch(&items, "import:0", "import");
        let mut txns = Vec::new();
        assert!(Shard::new(ShardConfig::new(0)).apply(9, &command, &mut txns).changed);
        Entry { seq: 1, at: 9, trace_id: 0, operator: "ops".into(), command, txns, cold: Default::default() }
    }

    #[test]
    fn a_bulk_receipt_is_stored_without_its_txns_and_decodes_to_the_same_entry() {
        for reference in ["po-7", ""] {
            let entry = bulk(reference);
            let record = encode(&entry);
            assert_eq!(record[0], FORMAT_BULK_COLUMNS);
            assert_eq!(decode(0, 3, &record).unwrap(), entry);
            let full = rkyv::to_bytes::<rancor::Error>(&entry).unwrap();
            assert!(record.len() * 2 < full.len(), "{} bytes against {}", record.len(), full.len());
        }
    }

    #[test]
    fn an_imported_row_of_a_13_byte_id_takes_21_bytes_in_columns_against_37_as_items() {
        let entry = import(10_000);
        let (columns, items) = (encode(&entry), encode_items_format(&entry));
        assert_eq!(decode(0, 1, &columns).unwrap(), entry);
        assert_eq!(decode(0, 1, &items).unwrap(), entry);
        let per_row = |record: &[u8]| record.len() as f64 / 10_000.0;
        assert!((21.0..21.5).contains(&per_row(&columns)), "{} bytes per row", per_row(&columns));
        assert!((37.0..37.5).contains(&per_row(&items)), "{} bytes per row", per_row(&items));
    }

    #[test]
    fn a_bulk_receipt_in_the_items_format_still_decodes_and_reads_in_place() {
        for reference in ["po-7", ""] {
            let entry = bulk(reference);
            let (items, columns) = (encode_items_format(&entry), encode(&entry));
            assert_eq!(items[0], FORMAT_BULK_RECEIPT);
            assert_eq!(decode(0, 3, &items).unwrap(), entry);
            let rows = |record: &[u8]| {
                inspect(0, 3, record, |inspected| {
                    let Inspected::Bulk(view) = inspected else { panic!("a bulk receipt is read in place") };
                    let head = (view.seq(), view.at(), view.trace_id(), view.operator().to_string(), view.len());
                    (head, view.reference().to_string(), view.rows().map(|r| format!("{r:?}")).collect::<Vec<_>>())
                })
                .unwrap()
            };
            assert_eq!(rows(&items), rows(&columns));
            for i in 0..items.len() {
                let mut bad = items.clone();
                bad[i] ^= 0x40;
                assert!(decode(0, 3, &bad).is_err(), "flip at byte {i} went unnoticed");
                assert!(inspect(0, 3, &bad, |_| ()).is_err(), "flip at byte {i} went unnoticed in place");
            }
        }
    }

    #[test]
    fn columns_that_do_not_fit_together_are_refused_even_under_a_good_checksum() {
        let entry = bulk("po-7");
        let (batch, first_txn_id, existing) = bulk_existing(&entry).unwrap();
        let good = BulkColumns::of(&entry, batch, first_txn_id, existing).unwrap();
        type Break = fn(&mut BulkColumns);
        let breaks: [(&str, Break); 6] = [
            ("a quantity missing", |c| {
                c.qty.pop();
            }),
            ("a length too many", |c| c.sku_lens[0] += 1),
            ("a length splitting a character", |c| {
                // The first id now ends inside the 'é' before it.
                c.sku_ids.insert(0, 'é');
                let last = c.sku_lens.len() - 1;
                c.sku_lens[last] += 2;
            }),
            ("a warehouse past the list", |c| c.warehouse[1] = 2),
            ("a listed row past the items", |c| c.existing[0].item = 5),
            ("listed rows out of order", |c| c.existing.swap(0, 1)),
        ];
        for (what, break_it) in breaks {
            let mut columns = BulkColumns {
                warehouses: good.warehouses.clone(),
                sku_ids: good.sku_ids.clone(),
                sku_lens: good.sku_lens.clone(),
                warehouse: good.warehouse.clone(),
                qty: good.qty.clone(),
                existing: good.existing.clone(),
                ..good
            };
            break_it(&mut columns);
            let record = frame(FORMAT_BULK_COLUMNS, &rkyv::to_bytes::<rancor::Error>(&columns).unwrap());
            assert!(decode(0, 3, &record).is_err(), "{what} went unnoticed");
            assert!(inspect(0, 3, &record, |_| ()).is_err(), "{what} went unnoticed in place");
        }
        let record = frame(FORMAT_BULK_COLUMNS, &rkyv::to_bytes::<rancor::Error>(&good).unwrap());
        assert_eq!(decode(0, 3, &record).unwrap(), entry);
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
    fn a_bulk_receipt_past_what_the_columns_hold_is_stored_whole() {
        let mut entry = bulk("po-7");
        let Command::ReceiveBatch(batch) = &mut entry.command else { unreachable!() };
        let qty = u32::MAX as u64 + 1;
        batch.items[0].qty = qty;
        (entry.txns[0].qty, entry.txns[0].after.available) = (qty, qty);
        let record = encode(&entry);
        assert_eq!(record[0], FORMAT_VERSION);
        assert_eq!(decode(0, 3, &record).unwrap(), entry);
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
    fn an_entry_decided_with_cold_records_keeps_them_and_one_without_keeps_its_layout() {
        use inventory_core::{ColdFacts, ColdHold, ColdIdem, Outcome, ReservationStatus};
        let hold = ColdHold {
            seq: 9,
            order_id: "o".into(),
            sku_id: "a".into(),
            warehouse_id: "w".into(),
            qty: 2,
            expire_at: 50,
            idem_key: "k".into(),
            created_at: 5,
            status: ReservationStatus::Confirmed,
            updated_at: 20,
            detail: Some("pay".into()),
        };
        let idem = ColdIdem {
            key: 77,
            fingerprint: 5,
            outcome: Outcome::Confirmed { reservation_id: ReservationId::new(1, 9) },
            expires_at: 99,
        };
        let facts = ColdFacts {
            key: Some((77, Some(idem))),
            hold: Some((9, Some(hold.clone()))),
            order: Some(("o".into(), vec![hold])),
        };
        let with = Entry { cold: Some(Box::new(facts)), ..entry() };
        let record = encode(&with);
        assert_eq!(record[0], FORMAT_WITH_COLD);
        assert_eq!(decode(0, 7, &record).unwrap(), with);
        let inspected = inspect(0, 7, &record, |i| match i {
            Inspected::Entry(e) => e,
            Inspected::Bulk(_) => panic!("not a bulk receipt"),
        });
        assert_eq!(inspected.unwrap(), with);
        // Empty facts are not stored: the record is an ordinary entry.
        let empty = Entry { cold: Some(Box::default()), ..entry() };
        assert_eq!(encode(&empty)[0], FORMAT_VERSION);
        assert_eq!(encode(&empty), encode(&entry()));
        let mut bad = record.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(decode(0, 7, &bad).is_err());
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
