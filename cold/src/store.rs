//! One shard's cold store: an fjall database (an LSM tree per keyspace)
//! whose keyspaces are time slices.
//!
//! | keyspace | key | value |
//! |---|---|---|
//! | `meta` | `"position"` | the last journal entry taken: sequence and time, u64 LE each |
//! | `live` | hold sequence, u64 BE | a `RESERVED` hold's record (rkyv `ColdHold`), until it finishes |
//! | `holds-<slice>` | hold sequence, u64 BE | a finished hold's record |
//! | `orders-<slice>` | order-id hash, u64 BE, then hold sequence, u64 BE | empty: the holds of an order |
//! | `keys-<slice>` | idempotency key hash, u128 BE | the record (rkyv `ColdIdem`) |
//!
//! A record is filed under the slice `retention end / slice_ms`: a finished
//! hold 48 h after it finished, an idempotency record when it expires. A
//! slice whose end has passed is dropped as a whole keyspace.
//!
//! Every call to [`ColdStore::take`] is one atomic write batch, the new
//! position included, so the position a reopened store reports never runs
//! ahead of its records, and a crash takes the same entries again (every
//! write is an upsert of the same value). The batch reaches the disk at
//! the next [`ColdStore::persist`] (an `fdatasync` of fjall's journal),
//! which the follower calls a few times a second rather than per batch.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, OwnedWriteBatch, PersistMode};
use inventory_core::{
    cold_changes, order_hash, ColdChange, ColdHold, ColdIdem, Entry, Millis, ReservationStatus, TierConfig,
    UnknownHold, HOLD_RETENTION_MS,
};
use parking_lot::Mutex;
use rkyv::rancor;
use rkyv::util::AlignedVec;

/// How far the store has taken its shard's journal.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Position {
    pub seq: u64,
    pub at: Millis,
}

#[derive(Debug, thiserror::Error)]
pub enum ColdError {
    #[error("cold store: {0}")]
    Storage(#[from] fjall::Error),
    #[error("cold store file: {0}")]
    Io(#[from] std::io::Error),
    #[error("cold store record undecodable: {0}")]
    Corrupt(String),
    #[error("cold store: entry {seq} finishes hold {hold}, of which it has no record")]
    UnknownHold { seq: u64, hold: u64 },
}

/// Counts, for metrics and the soak measurement.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub slices: usize,
    pub bytes_on_disk: u64,
}

const POSITION: &[u8] = b"position";
/// fjall's block cache: the data blocks the store keeps in memory.
const CACHE_BYTES: u64 = 32 << 20;
/// Each keyspace's write buffer before it is written out as a table.
const MEMTABLE_BYTES: u64 = 8 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Holds,
    Orders,
    Keys,
}

impl Kind {
    fn name(self, slice: u64) -> String {
        let kind = match self {
            Kind::Holds => "holds",
            Kind::Orders => "orders",
            Kind::Keys => "keys",
        };
        format!("{kind}-{slice:012}")
    }

    fn parse(name: &str) -> Option<(Kind, u64)> {
        let (kind, slice) = name.split_once('-')?;
        let kind = match kind {
            "holds" => Kind::Holds,
            "orders" => Kind::Orders,
            "keys" => Kind::Keys,
            _ => return None,
        };
        Some((kind, slice.parse().ok()?))
    }
}

fn options() -> KeyspaceCreateOptions {
    KeyspaceCreateOptions::default().manual_journal_persist(true).max_memtable_size(MEMTABLE_BYTES)
}

pub struct ColdStore {
    db: Database,
    meta: Keyspace,
    live: Keyspace,
    tiers: TierConfig,
    idempotency_ttl_ms: Millis,
    slices: Slices,
}

/// The slices that exist, by kind, with their open keyspaces.
#[derive(Default)]
struct Slices(Mutex<BTreeMap<(Kind, u64), Keyspace>>);

impl Slices {
    fn keyspace(&self, db: &Database, kind: Kind, slice: u64) -> Result<Keyspace, ColdError> {
        let mut slices = self.0.lock();
        if let Some(keyspace) = slices.get(&(kind, slice)) {
            return Ok(keyspace.clone());
        }
        let keyspace = db.keyspace(&kind.name(slice), options)?;
        slices.insert((kind, slice), keyspace.clone());
        Ok(keyspace)
    }

    fn remove(&self, kind: Kind, slice: u64) -> Option<Keyspace> {
        self.0.lock().remove(&(kind, slice))
    }

    /// The keyspaces of `kind` from slice `first` on, newest first.
    fn of(&self, kind: Kind, first: u64) -> Vec<Keyspace> {
        self.0.lock().range((kind, first)..=(kind, u64::MAX)).rev().map(|(_, k)| k.clone()).collect()
    }

    /// The slice numbers of `kind`, newest first.
    fn numbers(&self, kind: Kind) -> Vec<u64> {
        self.0.lock().range((kind, 0)..=(kind, u64::MAX)).rev().map(|(&(_, slice), _)| slice).collect()
    }

    fn all(&self) -> Vec<(Kind, u64)> {
        self.0.lock().keys().copied().collect()
    }
}

/// One atomic write to the store, and the live holds it has changed (a
/// hold made and finished within one batch is read back from here).
struct Batch<'a> {
    store: &'a ColdStore,
    writes: OwnedWriteBatch,
    live: HashMap<u64, Option<ColdHold>>,
}

impl Batch<'_> {
    fn live_hold(&self, seq: u64) -> Result<Option<ColdHold>, ColdError> {
        match self.live.get(&seq) {
            Some(hold) => Ok(hold.clone()),
            None => self.store.live.get(seq.to_be_bytes())?.map(|v| decode(&v)).transpose(),
        }
    }

    fn put(&mut self, change: ColdChange) -> Result<(), ColdError> {
        match change {
            ColdChange::Hold(hold) => self.put_hold(hold),
            ColdChange::Idem(record) => self.put_idem(&record),
        }
    }

    fn put_hold(&mut self, hold: ColdHold) -> Result<(), ColdError> {
        let key = hold.seq.to_be_bytes();
        let value = encode(&hold);
        if hold.status == ReservationStatus::Reserved {
            self.writes.insert(&self.store.live, key, value.as_slice());
            self.live.insert(hold.seq, Some(hold));
            return Ok(());
        }
        self.writes.remove(&self.store.live, key);
        let slice = self.store.slice(hold.updated_at.saturating_add(HOLD_RETENTION_MS));
        let holds = self.store.keyspace(Kind::Holds, slice)?;
        self.writes.insert(&holds, key, value.as_slice());
        let mut order_key = [0u8; 16];
        order_key[..8].copy_from_slice(&order_hash(&hold.order_id).to_be_bytes());
        order_key[8..].copy_from_slice(&key);
        let orders = self.store.keyspace(Kind::Orders, slice)?;
        self.writes.insert(&orders, order_key, []);
        self.live.insert(hold.seq, None);
        Ok(())
    }

    fn put_idem(&mut self, record: &ColdIdem) -> Result<(), ColdError> {
        let keys = self.store.keyspace(Kind::Keys, self.store.slice(record.expires_at))?;
        self.writes.insert(&keys, record.key.to_be_bytes(), encode(record).as_slice());
        Ok(())
    }

    /// Writes the batch and `position` atomically.
    fn commit(mut self, position: Position) -> Result<(), ColdError> {
        let mut value = [0u8; 16];
        value[..8].copy_from_slice(&position.seq.to_le_bytes());
        value[8..].copy_from_slice(&position.at.to_le_bytes());
        self.writes.insert(&self.store.meta, POSITION, value);
        self.writes.commit()?;
        Ok(())
    }
}

impl ColdStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path, tiers: TierConfig, idempotency_ttl_ms: Millis) -> Result<ColdStore, ColdError> {
        std::fs::create_dir_all(dir)?;
        // Two workers per store: with one, a compaction of several minutes
        // held up every memtable flush behind it, and the memtables grew to
        // 1.6 GB in a 30-minute soak (`inventory_cold_write_buffer_bytes`).
        let db =
            Database::builder(dir).cache_size(CACHE_BYTES).manual_journal_persist(true).worker_threads(2).open()?;
        let meta = db.keyspace("meta", options)?;
        let live = db.keyspace("live", options)?;
        let slices = Slices::default();
        for name in db.list_keyspace_names() {
            if let Some((kind, slice)) = Kind::parse(&name) {
                slices.keyspace(&db, kind, slice)?;
            }
        }
        Ok(ColdStore { db, meta, live, tiers, idempotency_ttl_ms, slices })
    }

    /// The last journal entry taken (zero before the first).
    pub fn position(&self) -> Result<Position, ColdError> {
        Ok(match self.meta.get(POSITION)? {
            Some(v) if v.len() == 16 => Position {
                seq: u64::from_le_bytes(v[..8].try_into().expect("8 bytes")),
                at: u64::from_le_bytes(v[8..].try_into().expect("8 bytes")),
            },
            Some(_) => return Err(ColdError::Corrupt("position".into())),
            None => Position::default(),
        })
    }

    fn batch(&self) -> Batch<'_> {
        Batch { store: self, writes: self.db.batch(), live: HashMap::new() }
    }

    /// Takes journal entries, in order, each right after the last taken,
    /// with the new position; durable at the next [`ColdStore::persist`].
    pub fn take(&self, entries: &[Entry]) -> Result<(), ColdError> {
        let Some(last) = entries.last() else { return Ok(()) };
        let mut batch = self.batch();
        for entry in entries {
            let changes = cold_changes(self.idempotency_ttl_ms, entry, |seq| batch.live_hold(seq).ok().flatten())
                .map_err(|UnknownHold(hold)| ColdError::UnknownHold { seq: entry.seq, hold })?;
            for change in changes {
                batch.put(change)?;
            }
        }
        batch.commit(Position { seq: last.seq, at: last.at })
    }

    /// Starts the store from a shard's whole state at `position`, for a
    /// store that has not taken the journal from its start (a data dir
    /// whose journal was truncated before the store existed).
    pub fn seed(
        &self,
        holds: impl IntoIterator<Item = ColdHold>,
        records: impl IntoIterator<Item = ColdIdem>,
        position: Position,
    ) -> Result<(), ColdError> {
        let mut batch = self.batch();
        for hold in holds {
            batch.put_hold(hold)?;
        }
        for record in records {
            batch.put_idem(&record)?;
        }
        batch.commit(position)?;
        self.persist()
    }

    /// Makes everything taken so far durable.
    pub fn persist(&self) -> Result<(), ColdError> {
        self.db.persist(PersistMode::SyncData)?;
        Ok(())
    }

    fn slice(&self, retention_end: Millis) -> u64 {
        retention_end / self.tiers.slice_ms
    }

    fn keyspace(&self, kind: Kind, slice: u64) -> Result<Keyspace, ColdError> {
        self.slices.keyspace(&self.db, kind, slice)
    }

    /// The idempotency record of `key`, if one is kept and unexpired at `at`.
    pub fn idem(&self, key: u128, at: Millis) -> Result<Option<ColdIdem>, ColdError> {
        for keys in self.slices.of(Kind::Keys, self.slice(at)) {
            if let Some(v) = keys.get(key.to_be_bytes())? {
                let record: ColdIdem = decode(&v)?;
                return Ok((record.expires_at > at).then_some(record));
            }
        }
        Ok(None)
    }

    /// The finished hold of sequence `seq`, if one is kept.
    pub fn hold(&self, seq: u64) -> Result<Option<ColdHold>, ColdError> {
        for holds in self.slices.of(Kind::Holds, 0) {
            if let Some(v) = holds.get(seq.to_be_bytes())? {
                return decode(&v).map(Some);
            }
        }
        Ok(None)
    }

    /// The finished holds of an order that are kept.
    pub fn order(&self, order_id: &str) -> Result<Vec<ColdHold>, ColdError> {
        let prefix = order_hash(order_id).to_be_bytes();
        let mut holds = Vec::new();
        for slice in self.slices.numbers(Kind::Orders) {
            let (orders, by_seq) = (self.keyspace(Kind::Orders, slice)?, self.keyspace(Kind::Holds, slice)?);
            for guard in orders.prefix(prefix) {
                let key = guard.key()?;
                let seq = &key[8..16];
                if let Some(v) = by_seq.get(seq)? {
                    let hold: ColdHold = decode(&v)?;
                    if hold.order_id == order_id {
                        holds.push(hold);
                    }
                }
            }
        }
        holds.sort_by_key(|h| h.seq);
        Ok(holds)
    }

    /// Drops every slice whose records' retention has ended by `at`;
    /// returns how many keyspaces went.
    pub fn drop_before(&self, at: Millis) -> Result<usize, ColdError> {
        let first_kept = self.slice(at);
        let mut dropped = 0;
        for (kind, slice) in self.slices.all() {
            if slice < first_kept {
                if let Some(keyspace) = self.slices.remove(kind, slice) {
                    self.db.delete_keyspace(keyspace)?;
                    dropped += 1;
                }
            }
        }
        Ok(dropped)
    }

    /// The store's memtables, active and sealed: written, not yet flushed
    /// to disk.
    pub fn write_buffer_bytes(&self) -> u64 {
        self.db.write_buffer_size()
    }

    /// The filter and index blocks the store's tables keep in memory; they
    /// grow with what the store holds on disk.
    pub fn pinned_bytes(&self) -> u64 {
        use fjall::AbstractTree;
        let keyspaces: Vec<Keyspace> = self.slices.0.lock().values().cloned().collect();
        [&self.meta, &self.live]
            .into_iter()
            .chain(keyspaces.iter())
            .map(|k| (k.tree.pinned_filter_size() + k.tree.pinned_block_index_size()) as u64)
            .sum()
    }

    pub fn stats(&self) -> StoreStats {
        let slices: BTreeSet<u64> = self.slices.all().into_iter().map(|(_, s)| s).collect();
        StoreStats { slices: slices.len(), bytes_on_disk: self.db.disk_space().unwrap_or(0) }
    }
}

fn encode<T>(value: &T) -> AlignedVec
where
    T: for<'a> rkyv::Serialize<
        rkyv::api::high::HighSerializer<AlignedVec, rkyv::ser::allocator::ArenaHandle<'a>, rancor::Error>,
    >,
{
    rkyv::to_bytes::<rancor::Error>(value).expect("records always serialize")
}

fn decode<T>(bytes: &[u8]) -> Result<T, ColdError>
where
    T: rkyv::Archive,
    T::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rancor::Error>>
        + rkyv::Deserialize<T, rkyv::api::high::HighDeserializer<rancor::Error>>,
{
    let mut aligned = AlignedVec::<16>::with_capacity(bytes.len());
    aligned.extend_from_slice(bytes);
    rkyv::from_bytes::<T, rancor::Error>(&aligned).map_err(|e| ColdError::Corrupt(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use inventory_core::{
        key_hash, Command, Confirm, Outcome, Receive, Release, ReservationId, Reserve, Shard, ShardConfig,
        DEFAULT_WAREHOUSE, HOUR_MS, IDEMPOTENCY_TTL_MS,
    };

    /// A shard that journals what it applies, and its entries.
    struct Journaled {
        shard: Shard,
        entries: Vec<Entry>,
    }

    impl Journaled {
        fn new() -> Journaled {
            Journaled { shard: Shard::new(ShardConfig::new(0)), entries: Vec::new() }
        }

        fn apply(&mut self, at: Millis, command: Command) -> Outcome {
            let mut txns = Vec::new();
            let applied = self.shard.apply(at, &command, &mut txns);
            if applied.changed {
                let seq = self.entries.len() as u64 + 1;
                self.entries.push(Entry { seq, at, trace_id: 0, operator: String::new(), command, txns, cold: None });
            }
            applied.outcome
        }
    }

    fn receive() -> Command {
        Command::Receive(Receive {
            sku_id: "sku".into(),
            warehouse_id: DEFAULT_WAREHOUSE.into(),
            qty: 9,
            idem_key: "r".into(),
            reference: String::new(),
        })
    }

    fn reserve(order: &str, key: &str) -> Command {
        Command::Reserve(Reserve {
            order_id: order.into(),
            sku_id: "sku".into(),
            warehouse_id: DEFAULT_WAREHOUSE.into(),
            qty: 1,
            idem_key: key.into(),
            ttl_ms: HOUR_MS,
            ttl_explicit: false,
        })
    }

    fn id(outcome: Outcome) -> ReservationId {
        match outcome {
            Outcome::Reserved { reservation_id, .. } => reservation_id,
            other => panic!("{other:?}"),
        }
    }

    fn open(dir: &Path) -> ColdStore {
        ColdStore::open(dir, TierConfig::default(), IDEMPOTENCY_TTL_MS).unwrap()
    }

    #[test]
    fn finished_holds_and_keys_are_kept_as_the_shard_held_them_and_found_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journaled::new();
        let t = 10 * HOUR_MS;
        j.apply(t, receive());
        let sold = id(j.apply(t + 1, reserve("o1", "k1")));
        let released = id(j.apply(t + 2, reserve("o2", "k2")));
        let live = id(j.apply(t + 3, reserve("o3", "k3")));
        j.apply(
            t + 4,
            Command::Confirm(Confirm { reservation_id: sold, payment_id: "pay".into(), idem_key: "k4".into() }),
        );
        j.apply(
            t + 5,
            Command::Release(Release { reservation_id: released, reason: "gone".into(), idem_key: "k5".into() }),
        );
        {
            let store = open(dir.path());
            assert_eq!(store.position().unwrap(), Position::default());
            store.take(&j.entries[..3]).unwrap();
            store.take(&j.entries[3..]).unwrap();
            store.persist().unwrap();
            assert_eq!(store.position().unwrap(), Position { seq: 6, at: t + 5 });
        }
        let store = open(dir.path());
        assert_eq!(store.position().unwrap(), Position { seq: 6, at: t + 5 });
        let at = t + 6;
        for seq in [sold.seq(), released.seq()] {
            let kept = store.hold(seq).unwrap().expect("a finished hold is kept");
            assert_eq!(kept.view(0), j.shard.reservation(ReservationId::new(0, seq)).unwrap());
        }
        assert!(store.hold(live.seq()).unwrap().is_none(), "a live hold is the shard's alone");
        let orders: Vec<u64> = store.order("o1").unwrap().iter().map(|h| h.seq).collect();
        assert_eq!(orders, [sold.seq()]);
        assert!(store.order("o3").unwrap().is_empty());
        let dump = j.shard.dump();
        for key in ["r", "k1", "k2", "k3", "k4", "k5"] {
            let kept = store.idem(key_hash(key), at).unwrap().expect(key);
            let held = dump.idem.iter().find(|r| r.0 == key_hash(key)).unwrap();
            assert_eq!(
                (kept.fingerprint, format!("{:?}", kept.outcome), kept.expires_at),
                (held.1, held.2.clone(), held.3),
                "{key}"
            );
        }
        assert!(store.idem(key_hash("k1"), t + 1 + IDEMPOTENCY_TTL_MS).unwrap().is_none(), "expired");
        assert!(store.idem(key_hash("never"), at).unwrap().is_none());
    }

    #[test]
    fn slices_are_dropped_whole_once_their_retention_has_ended() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journaled::new();
        j.apply(1, receive());
        let early = id(j.apply(2, reserve("o1", "k1")));
        j.apply(3, Command::Release(Release { reservation_id: early, reason: "x".into(), idem_key: "k2".into() }));
        let late = id(j.apply(20 * HOUR_MS, reserve("o2", "k3")));
        j.apply(
            20 * HOUR_MS + 1,
            Command::Release(Release { reservation_id: late, reason: "x".into(), idem_key: "k4".into() }),
        );
        let store = open(dir.path());
        store.take(&j.entries).unwrap();
        let before = store.stats().slices;
        // The early hold's retention ends at 48 h: its slice goes by 60 h.
        assert_eq!(store.drop_before(HOLD_RETENTION_MS).unwrap(), 0, "its slice also holds later ends");
        assert!(store.drop_before(60 * HOUR_MS).unwrap() > 0);
        assert!(store.hold(early.seq()).unwrap().is_none());
        assert!(store.hold(late.seq()).unwrap().is_some(), "the late hold's slice stays");
        assert!(store.stats().slices < before);
    }

    #[test]
    fn a_seeded_store_takes_the_journal_on_from_the_shards_state() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journaled::new();
        j.apply(1, receive());
        let hold = id(j.apply(2, reserve("o1", "k1")));
        let store = open(dir.path());
        // Without the hold's creation, its finish cannot be taken.
        let finish = Command::Confirm(Confirm { reservation_id: hold, payment_id: "p".into(), idem_key: "k2".into() });
        j.apply(3, finish);
        assert!(matches!(store.take(&j.entries[2..]), Err(ColdError::UnknownHold { seq: 3, hold: 1 })));
        // The hold as it was before the confirm: live.
        let mut created = ColdHold::of_view(j.shard.reservation(hold).unwrap());
        (created.status, created.updated_at, created.detail) = (ReservationStatus::Reserved, created.created_at, None);
        store.seed([created], [], Position { seq: 2, at: 2 }).unwrap();
        store.take(&j.entries[2..]).unwrap();
        assert_eq!(store.hold(hold.seq()).unwrap().unwrap().view(0), j.shard.reservation(hold).unwrap());
    }
}
