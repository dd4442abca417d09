//! The stock rows of one shard in a compact layout (about 53 bytes per row
//! of a single-warehouse SKU with a 13-byte id, index included).
//!
//! - Rows are 32-byte records in fixed-size blocks, addressed by a global
//!   row number (`u32`) in creation order. Growth adds a block; nothing is
//!   ever copied or moved, so a growing catalogue never stalls the loop on a
//!   large reallocation.
//! - Counters are `u32`: `on_hand`, `reserved` and `sold`, with `available`
//!   derived as `on_hand - reserved - sold`. `on_hand` is every unit the
//!   row holds: received, adjusted and transferred (the shard keeps the
//!   breakdown of the rare rows operators changed beside the table). A
//!   change that would take `on_hand` past [`ROW_UNITS_MAX`] is rejected
//!   before anything changes; reserve, confirm and release only move units
//!   within `on_hand`.
//!   `version` and `updated_at` are 48-bit ([`ROW_MILLIS_MAX`]: a version
//!   count never reached, and milliseconds up to the year 10889).
//! - SKU ids are stored once, as bytes in an append-only arena of fixed-size
//!   blocks; a row refers to its id by offset and length. Every row of an SKU
//!   shares the id of the SKU's first row, so the offset identifies the SKU.
//!   Each id takes at least one byte, so first rows have strictly increasing
//!   offsets in row order: a row starts a new SKU exactly when its offset is
//!   greater than every offset before it.
//! - Warehouse ids are interned per shard: a row stores a `u16` position.
//! - The index maps an SKU id to its first row; it is split into
//!   [`INDEX_PARTS`] hash tables so that a table that grows rehashes only a
//!   small fraction of the SKUs. The other rows of an SKU (other warehouses)
//!   hang off the first row in a chain, in the order they were added; the
//!   links live in a side map that only SKUs in several warehouses use, and
//!   a flag bit in the row says whether to look there.

use hashbrown::HashTable;
use rustc_hash::FxHashMap;

use crate::ids::Millis;
use crate::image::{RowImage, ShardImage};
use crate::state::{Levels, StockRow};

/// Most units a stock row can ever receive: counters are 32-bit.
pub const ROW_UNITS_MAX: u64 = u32::MAX as u64;
/// Longest SKU id the core stores (the gateway allows far less).
pub const SKU_ID_BYTES_MAX: usize = LEN_MASK as usize;
/// Latest time a row can record as `updated_at` (48 bits of milliseconds:
/// the year 10889), and most versions a row can go through.
pub const ROW_MILLIS_MAX: u64 = (1 << 48) - 1;
/// Most distinct warehouse ids one shard can know.
pub const WAREHOUSE_IDS_MAX: usize = 1 << 16;

/// Rows per block: 16,368 rows of 32 bytes, 512 bytes short of 512 KiB.
/// The allocator (mimalloc) rounds a block of exactly 512 KiB up to twice
/// that in resident memory: at 10M SKUs, `inventoryd` held 717 MB with
/// 16,384-row blocks and 620 MB with these.
const ROW_BLOCK: usize = (1 << 14) - 16;
/// Bytes per id arena block; at least `SKU_ID_BYTES_MAX`.
const ID_BLOCK: usize = 1 << 16;
/// Number of hash tables the SKU index is split into.
pub const INDEX_PARTS: usize = 256;
/// "No row": the end of a chain.
pub(crate) const NO_ROW: u32 = u32::MAX;
/// `Row::id_len`: the id's length, and whether the row has a next row.
const LEN_MASK: u16 = 0x7fff;
const HAS_NEXT: u16 = 0x8000;
/// Seed of the index hash. The index is rebuilt on load and never stored,
/// so this only needs to differ from the shard routing hash (unseeded XXH3),
/// whose low bits are the same for every SKU of a shard.
const INDEX_SEED: u64 = 0x9e37_79b9_7f4a_7c15;

/// One `(sku, warehouse)` stock row: 32 bytes, 4-aligned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Row {
    /// Units in the row: received, adjusted and transferred. `reserved +
    /// sold <= on_hand` always.
    pub on_hand: u32,
    pub reserved: u32,
    pub sold: u32,
    /// The SKU id: offset into the id arena (shared by every row of the SKU).
    id_off: u32,
    /// Version (bumped on every change) and `updated_at`, 48 bits each.
    version_lo: u32,
    at_lo: u32,
    version_hi: u16,
    at_hi: u16,
    /// Position in the shard's warehouse table.
    warehouse: u16,
    /// Length of the id, and `HAS_NEXT` when the SKU has a further row
    /// (found in `StockTable::next`).
    id_len: u16,
}

impl Row {
    pub fn version(&self) -> u64 {
        self.version_lo as u64 | (self.version_hi as u64) << 32
    }

    pub fn updated_at(&self) -> Millis {
        self.at_lo as u64 | (self.at_hi as u64) << 32
    }

    /// Bumps the version and sets `updated_at`.
    pub fn touch(&mut self, at: Millis) {
        let version = self.version() + 1;
        assert!(version <= ROW_MILLIS_MAX && at <= ROW_MILLIS_MAX, "row version or time past 48 bits");
        (self.version_lo, self.version_hi) = (version as u32, (version >> 32) as u16);
        (self.at_lo, self.at_hi) = (at as u32, (at >> 32) as u16);
    }

    fn len(&self) -> usize {
        (self.id_len & LEN_MASK) as usize
    }

    fn has_next(&self) -> bool {
        self.id_len & HAS_NEXT != 0
    }

    pub fn available(&self) -> u64 {
        (self.on_hand as u64).saturating_sub(self.reserved as u64 + self.sold as u64)
    }

    pub fn levels(&self) -> Levels {
        Levels { available: self.available(), reserved: self.reserved as u64, sold: self.sold as u64 }
    }

    pub fn stock_row(&self) -> StockRow {
        StockRow {
            levels: self.levels(),
            received: self.on_hand as u64,
            ops: Default::default(),
            version: self.version(),
            updated_at: self.updated_at(),
        }
    }

    /// `sold + reserved > on_hand`: a broken row.
    pub fn oversold(&self) -> bool {
        self.reserved as u64 + self.sold as u64 > self.on_hand as u64
    }

    /// Copies the counters (not the links) of `from`.
    pub fn restore_counters(&mut self, from: &Row) {
        (self.version_lo, self.version_hi) = (from.version_lo, from.version_hi);
        (self.at_lo, self.at_hi) = (from.at_lo, from.at_hi);
        self.on_hand = from.on_hand;
        self.reserved = from.reserved;
        self.sold = from.sold;
    }
}

/// What adding a row changed, so that it can be taken back.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Added {
    pub row: u32,
    /// The row whose next row the new row became, or `NO_ROW` when the row
    /// started a new SKU.
    pub prev: u32,
    /// Length of the id arena before the new SKU's id was stored.
    pub ids_used: u32,
    /// The warehouse id was interned for this row.
    pub new_warehouse: bool,
}

pub(crate) struct StockTable {
    blocks: Vec<Vec<Row>>,
    len: u32,
    ids: Vec<Box<[u8]>>,
    ids_used: u32,
    index: Box<[HashTable<u32>]>,
    /// The next row of each row with `HAS_NEXT` (rows of SKUs stocked in
    /// more than one warehouse, all but the last).
    next: FxHashMap<u32, u32>,
    skus: u32,
    warehouses: Vec<Box<str>>,
    warehouse_ids: FxHashMap<Box<str>, u16>,
}

fn id_hash(id: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(id, INDEX_SEED)
}

/// An SKU id with its index hash, so that a lookup followed by an insert of
/// the same id hashes it once.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SkuKey<'a> {
    id: &'a str,
    hash: u64,
}

impl<'a> SkuKey<'a> {
    pub fn new(id: &'a str) -> SkuKey<'a> {
        SkuKey { id, hash: id_hash(id.as_bytes()) }
    }

    /// The key of `id`, whose hash is known to be `hash` (from an earlier
    /// `SkuKey::new(id)`).
    pub fn with_hash(id: &'a str, hash: u64) -> SkuKey<'a> {
        debug_assert_eq!(hash, id_hash(id.as_bytes()));
        SkuKey { id, hash }
    }

    pub fn id(&self) -> &'a str {
        self.id
    }

    pub fn hash(&self) -> u64 {
        self.hash
    }
}

fn part(hash: u64) -> usize {
    // Bits hashbrown uses for neither the bucket (low) nor the tag (top 7).
    (hash >> 32) as usize % INDEX_PARTS
}

fn row_in(blocks: &[Vec<Row>], r: u32) -> &Row {
    &blocks[r as usize / ROW_BLOCK][r as usize % ROW_BLOCK]
}

fn id_in<'a>(ids: &'a [Box<[u8]>], row: &Row) -> &'a [u8] {
    let off = row.id_off as usize;
    &ids[off / ID_BLOCK][off % ID_BLOCK..][..row.len()]
}

impl StockTable {
    pub fn new() -> StockTable {
        StockTable {
            blocks: Vec::new(),
            len: 0,
            ids: Vec::new(),
            ids_used: 0,
            index: (0..INDEX_PARTS).map(|_| HashTable::new()).collect(),
            next: FxHashMap::default(),
            skus: 0,
            warehouses: Vec::new(),
            warehouse_ids: FxHashMap::default(),
        }
    }

    /// Number of rows.
    pub fn len(&self) -> u32 {
        self.len
    }

    pub fn sku_count(&self) -> u32 {
        self.skus
    }

    pub fn warehouse_count(&self) -> usize {
        self.warehouses.len()
    }

    pub fn row(&self, r: u32) -> &Row {
        row_in(&self.blocks, r)
    }

    pub fn row_mut(&mut self, r: u32) -> &mut Row {
        &mut self.blocks[r as usize / ROW_BLOCK][r as usize % ROW_BLOCK]
    }

    fn id_bytes(&self, r: u32) -> &[u8] {
        id_in(&self.ids, self.row(r))
    }

    /// The SKU id of row `r`.
    pub fn sku_id(&self, r: u32) -> &str {
        std::str::from_utf8(self.id_bytes(r)).expect("ids are stored from &str")
    }

    /// The warehouse id of row `r`.
    pub fn warehouse_id(&self, r: u32) -> &str {
        &self.warehouses[self.row(r).warehouse as usize]
    }

    /// Rows `a` and `b` belong to the same SKU.
    pub fn same_sku(&self, a: u32, b: u32) -> bool {
        self.row(a).id_off == self.row(b).id_off
    }

    /// The first row of an SKU.
    pub fn find_sku(&self, sku_id: &str) -> Option<u32> {
        self.find_key(SkuKey::new(sku_id))
    }

    /// The first row of an SKU, by its hashed id.
    pub fn find_key(&self, key: SkuKey) -> Option<u32> {
        let id = key.id.as_bytes();
        self.index[part(key.hash)].find(key.hash, |&r| self.id_bytes(r) == id).copied()
    }

    /// The row of `(sku, warehouse)`, given the SKU's first row.
    pub fn find_row(&self, first: u32, warehouse_id: &str) -> Option<u32> {
        let w = *self.warehouse_ids.get(warehouse_id)?;
        self.chain(first).find(|&r| self.row(r).warehouse == w)
    }

    /// An SKU's rows, first row first, in the order they were added.
    pub fn chain(&self, first: u32) -> impl Iterator<Item = u32> + '_ {
        std::iter::successors(Some(first), |&r| self.row(r).has_next().then(|| self.next[&r]))
    }

    /// Whether a new row for `warehouse_id` would need a new warehouse id.
    pub fn knows_warehouse(&self, warehouse_id: &str) -> bool {
        self.warehouse_ids.contains_key(warehouse_id)
    }

    /// The first row of every SKU, in SKU creation order.
    pub fn first_rows(&self) -> impl Iterator<Item = u32> + '_ {
        let mut next_off = 0u64;
        (0..self.len).filter(move |&r| {
            let off = self.row(r).id_off as u64;
            let first = off >= next_off;
            if first {
                next_off = off + 1;
            }
            first
        })
    }

    /// Every row, SKU by SKU (in SKU creation order), each SKU's rows in the
    /// order they were added.
    pub fn rows_by_sku(&self) -> impl Iterator<Item = u32> + '_ {
        self.first_rows().flat_map(move |first| self.chain(first))
    }

    /// Adds a zeroed row for `(sku, warehouse)`: a new SKU when `first` is
    /// `None`, else another warehouse of the SKU whose first row is `first`.
    /// The caller has checked the limits.
    pub fn add_row(&mut self, first: Option<u32>, sku: SkuKey, warehouse_id: &str) -> Added {
        let ids_used = self.ids_used;
        let (warehouse, new_warehouse) = self.intern(warehouse_id);
        let (id_off, id_len, prev) = match first {
            Some(first) => {
                let tail = self.chain(first).last().expect("a chain has its first row");
                let f = self.row(first);
                (f.id_off, f.id_len & LEN_MASK, tail)
            }
            None => {
                assert!(sku.id.len() <= SKU_ID_BYTES_MAX, "checked against SKU_ID_BYTES_MAX");
                let id_len = sku.id.len() as u16;
                (self.push_id(sku.id.as_bytes()), id_len, NO_ROW)
            }
        };
        let row = self.push_row(Row {
            on_hand: 0,
            reserved: 0,
            sold: 0,
            id_off,
            version_lo: 0,
            at_lo: 0,
            version_hi: 0,
            at_hi: 0,
            warehouse,
            id_len,
        });
        if prev == NO_ROW {
            self.index_row(row, sku.hash);
        } else {
            self.row_mut(prev).id_len |= HAS_NEXT;
            self.next.insert(prev, row);
        }
        Added { row, prev, ids_used, new_warehouse }
    }

    /// Takes back the last `add_row` (which must be the last row).
    pub fn undo_add_row(&mut self, added: Added) {
        assert_eq!(added.row + 1, self.len, "undo of a row that is not the last");
        if added.prev == NO_ROW {
            let hash = id_hash(self.id_bytes(added.row));
            self.index[part(hash)].find_entry(hash, |&r| r == added.row).expect("sku missing from the index").remove();
            self.skus -= 1;
            // The id's bytes stay in the arena, unreachable, and are
            // overwritten by the next id stored.
            self.ids_used = added.ids_used;
        } else {
            self.row_mut(added.prev).id_len &= !HAS_NEXT;
            self.next.remove(&added.prev);
        }
        let block = self.blocks.last_mut().expect("a row to pop");
        block.pop();
        if block.is_empty() {
            self.blocks.pop();
        }
        self.len -= 1;
        if added.new_warehouse {
            let w = self.warehouses.pop().expect("a warehouse to pop");
            self.warehouse_ids.remove(&w);
        }
    }

    /// The position of `warehouse_id`, and whether it was added now.
    fn intern(&mut self, warehouse_id: &str) -> (u16, bool) {
        if let Some(&w) = self.warehouse_ids.get(warehouse_id) {
            return (w, false);
        }
        let w = u16::try_from(self.warehouses.len()).expect("checked against WAREHOUSE_IDS_MAX");
        self.warehouses.push(warehouse_id.into());
        self.warehouse_ids.insert(warehouse_id.into(), w);
        (w, true)
    }

    fn push_id(&mut self, id: &[u8]) -> u32 {
        // At least one byte, so that every SKU has its own offset.
        let slot = id.len().max(1);
        let mut off = self.ids_used as usize;
        if off % ID_BLOCK + slot > ID_BLOCK {
            off = (off / ID_BLOCK + 1) * ID_BLOCK;
        }
        let end = off + slot;
        assert!(end <= u32::MAX as usize, "SKU ids of one shard exceed 4 GiB");
        while self.ids.len() <= off / ID_BLOCK {
            self.ids.push(vec![0u8; ID_BLOCK].into_boxed_slice());
        }
        self.ids[off / ID_BLOCK][off % ID_BLOCK..][..id.len()].copy_from_slice(id);
        self.ids_used = end as u32;
        off as u32
    }

    fn push_row(&mut self, row: Row) -> u32 {
        assert!(self.len < NO_ROW, "too many stock rows in one shard");
        if self.blocks.last().is_none_or(|b| b.len() == ROW_BLOCK) {
            self.blocks.push(Vec::with_capacity(ROW_BLOCK));
        }
        self.blocks.last_mut().expect("just ensured").push(row);
        self.len += 1;
        self.len - 1
    }

    /// Sizes the SKU index for `skus` SKUs in all, so that growing to that
    /// many rehashes nothing. A table that grows must re-read the row and
    /// the id of every SKU it holds (two cache misses each), which is most
    /// of what a bulk load into an empty shard spends beyond the inserts.
    /// The tables take their full size at once (about 8-10 bytes per SKU),
    /// what they would reach holding that many anyway.
    pub fn reserve_skus(&mut self, skus: usize) {
        for part in 0..INDEX_PARTS {
            self.reserve_skus_part(skus, part);
        }
    }

    /// [`reserve_skus`](Self::reserve_skus) for one of the [`INDEX_PARTS`]
    /// tables of the index: sizes it for its share of `skus` SKUs in all.
    /// The work is that table's alone (a rehash of the SKUs it holds, if it
    /// must move), so a caller can size the index a part at a time.
    pub fn reserve_skus_part(&mut self, skus: usize, part: usize) {
        let per_part = skus / INDEX_PARTS;
        if per_part == 0 {
            return;
        }
        // The expected share of each table plus a margin for the spread.
        let room = per_part + per_part / 16 + 64;
        let StockTable { blocks, ids, index, .. } = self;
        let t = &mut index[part];
        t.reserve(room.saturating_sub(t.len()), |&r| id_hash(id_in(ids, row_in(blocks, r))));
    }

    /// SKUs the index holds without growing.
    #[cfg(test)]
    pub fn sku_capacity(&self) -> usize {
        self.index.iter().map(|t| t.capacity()).sum()
    }

    /// Indexes `row` as the first row of its SKU, whose id hashes to `hash`.
    fn index_row(&mut self, row: u32, hash: u64) {
        let StockTable { blocks, ids, index, .. } = self;
        debug_assert_eq!(hash, id_hash(id_in(ids, row_in(blocks, row))));
        index[part(hash)].insert_unique(hash, row, |&r| id_hash(id_in(ids, row_in(blocks, r))));
        self.skus += 1;
    }

    // ----- images ----------------------------------------------------------

    /// Fills the stock part of an image (SKU ids, warehouses, rows).
    pub fn fill_image(&self, image: &mut ShardImage) {
        image.warehouses = self.warehouses.iter().map(|w| w.to_string()).collect();
        image.sku_ids = String::with_capacity(self.ids_used as usize);
        image.sku_ends = Vec::with_capacity(self.skus as usize);
        image.rows = Vec::with_capacity(self.len as usize);
        // Arena offset of each SKU, by SKU position: strictly increasing.
        let mut offsets: Vec<u32> = Vec::with_capacity(self.skus as usize);
        for r in 0..self.len {
            let row = self.row(r);
            let sku = if offsets.last().is_none_or(|&o| row.id_off > o) {
                offsets.push(row.id_off);
                image.push_sku(self.sku_id(r))
            } else {
                offsets.binary_search(&row.id_off).expect("a later row of a known SKU") as u32
            };
            image.rows.push(RowImage {
                sku,
                warehouse: row.warehouse,
                on_hand: row.on_hand,
                reserved: row.reserved,
                sold: row.sold,
                version: row.version(),
                updated_at: row.updated_at(),
            });
        }
    }

    /// Rebuilds the table from the stock part of an image.
    pub fn load(image: &ShardImage) -> StockTable {
        let mut table = StockTable::new();
        for w in &image.warehouses {
            assert!(table.intern(w).1, "warehouse {w:?} twice in the image");
        }
        table.reserve_skus(image.sku_count());
        // First row of each SKU, by SKU position.
        let mut firsts: Vec<u32> = Vec::with_capacity(image.sku_count());
        for ri in &image.rows {
            let sku = ri.sku as usize;
            assert!((ri.warehouse as usize) < table.warehouses.len(), "row names an unknown warehouse");
            let first = match sku.cmp(&firsts.len()) {
                std::cmp::Ordering::Less => Some(firsts[sku]),
                std::cmp::Ordering::Equal => None,
                std::cmp::Ordering::Greater => panic!("image row of SKU {sku} before its first row"),
            };
            let added = table.add_row(first, SkuKey::new(image.sku_id(sku)), &image.warehouses[ri.warehouse as usize]);
            if first.is_none() {
                firsts.push(added.row);
            }
            let row = table.row_mut(added.row);
            row.on_hand = ri.on_hand;
            row.reserved = ri.reserved;
            row.sold = ri.sold;
            assert!(
                ri.version <= ROW_MILLIS_MAX && ri.updated_at <= ROW_MILLIS_MAX,
                "row version or time past 48 bits"
            );
            (row.version_lo, row.version_hi) = (ri.version as u32, (ri.version >> 32) as u16);
            (row.at_lo, row.at_hi) = (ri.updated_at as u32, (ri.updated_at >> 32) as u16);
        }
        table
    }

    // ----- checking ------------------------------------------------------

    /// Checks the structure: index, chains, warehouse table.
    pub fn check(&self) -> Result<(), String> {
        let mut seen = vec![false; self.len as usize];
        let mut skus = 0u32;
        for first in self.first_rows() {
            skus += 1;
            let id = self.sku_id(first);
            if self.find_sku(id) != Some(first) {
                return Err(format!("sku {id} not found at its first row {first}"));
            }
            let mut warehouses = Vec::new();
            for r in self.chain(first) {
                if std::mem::replace(&mut seen[r as usize], true) {
                    return Err(format!("row {r} is in two chains"));
                }
                if !self.same_sku(first, r) || self.id_bytes(r) != id.as_bytes() {
                    return Err(format!("row {r} is in the chain of sku {id} but names another"));
                }
                let w = self.row(r).warehouse;
                if w as usize >= self.warehouses.len() {
                    return Err(format!("row {r} names unknown warehouse {w}"));
                }
                if warehouses.contains(&w) {
                    return Err(format!("sku {id} has warehouse {} twice", self.warehouses[w as usize]));
                }
                warehouses.push(w);
            }
            if warehouses.len() > crate::shard::WAREHOUSES_PER_SKU_MAX {
                return Err(format!("sku {id} has {} warehouses", warehouses.len()));
            }
        }
        if let Some(r) = seen.iter().position(|s| !s) {
            return Err(format!("row {r} is in no SKU's chain"));
        }
        let linked = (0..self.len).filter(|&r| self.row(r).has_next()).count();
        if linked != self.next.len() {
            return Err(format!("{linked} rows have a next row, {} links", self.next.len()));
        }
        let indexed: usize = self.index.iter().map(|t| t.len()).sum();
        if skus != self.skus || indexed != skus as usize {
            return Err(format!("{skus} SKUs, counted {}, indexed {indexed}", self.skus));
        }
        if self.warehouse_ids.len() != self.warehouses.len()
            || self.warehouses.iter().enumerate().any(|(i, w)| self.warehouse_ids.get(w) != Some(&(i as u16)))
        {
            return Err("warehouse table and its index differ".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_is_32_bytes() {
        assert_eq!(std::mem::size_of::<Row>(), 32);
    }

    #[test]
    fn ids_do_not_straddle_arena_blocks() {
        let mut t = StockTable::new();
        let long = "x".repeat(SKU_ID_BYTES_MAX);
        let a = t.add_row(None, SkuKey::new("a"), "w").row;
        let b = t.add_row(None, SkuKey::new(&long), "w").row;
        let c = t.add_row(None, SkuKey::new(""), "w").row;
        let c2 = t.add_row(None, SkuKey::new("c"), "w").row;
        let d = t.add_row(None, SkuKey::new(&"y".repeat(SKU_ID_BYTES_MAX)), "v").row;
        let e = t.add_row(Some(a), SkuKey::new("a"), "v").row;
        assert_eq!(t.sku_id(b), long);
        assert_eq!(t.sku_id(c), "");
        let m = SKU_ID_BYTES_MAX as u32;
        assert_eq!((t.row(b).id_off, t.row(c).id_off, t.row(c2).id_off), (1, 1 + m, 2 + m));
        assert!(3 + 2 * m > ID_BLOCK as u32);
        assert_eq!(t.row(d).id_off as usize, ID_BLOCK, "does not fit in the rest of block 0");
        assert_eq!(t.sku_id(d), "y".repeat(SKU_ID_BYTES_MAX));
        assert_eq!(t.find_sku(""), Some(c));
        assert_eq!(t.find_row(a, "v"), Some(e));
        assert_eq!(t.rows_by_sku().collect::<Vec<_>>(), vec![a, e, b, c, c2, d]);
        t.check().unwrap();
        let mut image = ShardImage::default();
        t.fill_image(&mut image);
        let back = StockTable::load(&image);
        back.check().unwrap();
        let mut again = ShardImage::default();
        back.fill_image(&mut again);
        assert_eq!(image, again);
    }

    #[test]
    fn an_index_sized_for_its_skus_does_not_grow_to_hold_them() {
        let skus = 100_000;
        let mut t = StockTable::new();
        t.add_row(None, SkuKey::new("before"), "default");
        t.reserve_skus(skus);
        let capacity = t.sku_capacity();
        assert!(capacity >= skus, "{capacity} slots for {skus} SKUs");
        // Sized once: asking again for as many changes nothing, in one go
        // or a part at a time.
        t.reserve_skus(skus);
        (0..INDEX_PARTS).for_each(|part| t.reserve_skus_part(skus, part));
        assert_eq!(t.sku_capacity(), capacity);
        for i in 1..skus {
            t.add_row(None, SkuKey::new(&format!("sku-{i:09}")), "default");
        }
        assert_eq!((t.sku_count() as usize, t.sku_capacity()), (skus, capacity));
        t.check().unwrap();
        assert_eq!(t.find_sku("before"), Some(0));
    }

    #[test]
    fn sizing_the_index_a_part_at_a_time_sizes_each_part_alone() {
        let skus = 100_000;
        let mut t = StockTable::new();
        for i in 0..1_000 {
            t.add_row(None, SkuKey::new(&format!("sku-{i:09}")), "default");
        }
        let before: Vec<usize> = t.index.iter().map(|p| p.capacity()).collect();
        t.reserve_skus_part(skus, 7);
        for (part, (table, was)) in t.index.iter().zip(&before).enumerate() {
            if part == 7 {
                assert!(table.capacity() >= skus / INDEX_PARTS, "part 7 holds {}", table.capacity());
            } else {
                assert_eq!(table.capacity(), *was, "part {part} changed");
            }
        }
        (0..INDEX_PARTS).for_each(|part| t.reserve_skus_part(skus, part));
        assert!(t.sku_capacity() >= skus);
        t.check().unwrap();
        assert_eq!(t.find_sku("sku-000000999"), Some(999));
    }

    #[test]
    fn rows_grow_in_blocks_and_pop_back() {
        let mut t = StockTable::new();
        let added: Vec<Added> = (0..ROW_BLOCK as u32 + 3)
            .map(|i| t.add_row(None, SkuKey::new(&format!("sku-{i:09}")), "default"))
            .collect();
        assert_eq!(t.blocks.len(), 2);
        assert!(t.blocks.iter().all(|b| b.capacity() == ROW_BLOCK));
        for a in added.into_iter().rev().take(4) {
            t.undo_add_row(a);
        }
        assert_eq!((t.len(), t.sku_count(), t.blocks.len()), (ROW_BLOCK as u32 - 1, ROW_BLOCK as u32 - 1, 1));
        t.check().unwrap();
        assert_eq!(t.find_sku(&format!("sku-{:09}", ROW_BLOCK)), None);
        assert_eq!(t.find_sku("sku-000000007"), Some(7));
    }
}
