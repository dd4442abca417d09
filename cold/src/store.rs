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
//!
//! fjall refuses every write after one failed (a full disk: `Poisoned`)
//! for as long as the database stays open. [`ColdStore::reopen`] closes it
//! and opens it again from what is on disk; lookups meanwhile use the
//! handle they hold, or fail with a [`ColdError`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, OwnedWriteBatch, PersistMode};
use inventory_core::{
    cold_changes, order_hash, ColdChange, ColdHold, ColdIdem, Entry, Millis, ReservationStatus, TierConfig,
    UnknownHold, HOLD_RETENTION_MS,
};
use parking_lot::{Mutex, RwLock};
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

impl ColdError {
    /// A failure of the database or its files (a full disk), after which
    /// fjall refuses writes until it is opened again; not one of the
    /// records taken.
    pub fn is_storage(&self) -> bool {
        matches!(self, ColdError::Storage(_) | ColdError::Io(_))
    }
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

/// How long opening the database again waits for the handle just closed
/// to let go of its lock (a lookup still reading with it).
const REOPEN_WAIT: Duration = Duration::from_millis(500);

pub struct ColdStore {
    dir: PathBuf,
    tiers: TierConfig,
    idempotency_ttl_ms: Millis,
    /// `None` after a reopen that could not finish; the next use opens it.
    open: RwLock<Option<Arc<Open>>>,
}

/// The open database and its keyspaces.
struct Open {
    db: Database,
    meta: Keyspace,
    live: Keyspace,
    slices: Slices,
}

impl Open {
    fn new(dir: &Path) -> Result<Open, ColdError> {
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
        Ok(Open { db, meta, live, slices })
    }

    /// [`Open::new`], again while a handle just closed still holds the
    /// database's lock.
    fn open_when_unlocked(dir: &Path) -> Result<Open, ColdError> {
        let deadline = Instant::now() + REOPEN_WAIT;
        loop {
            match Open::new(dir) {
                Err(ColdError::Storage(fjall::Error::Locked)) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                opened => return opened,
            }
        }
    }

    fn keyspace(&self, kind: Kind, slice: u64) -> Result<Keyspace, ColdError> {
        self.slices.keyspace(&self.db, kind, slice)
    }
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
    open: &'a Open,
    writes: OwnedWriteBatch,
    live: HashMap<u64, Option<ColdHold>>,
}

impl Batch<'_> {
    fn live_hold(&self, seq: u64) -> Result<Option<ColdHold>, ColdError> {
        match self.live.get(&seq) {
            Some(hold) => Ok(hold.clone()),
            None => self.open.live.get(seq.to_be_bytes())?.map(|v| decode(&v)).transpose(),
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
            self.writes.insert(&self.open.live, key, value.as_slice());
            self.live.insert(hold.seq, Some(hold));
            return Ok(());
        }
        self.writes.remove(&self.open.live, key);
        let slice = self.store.slice(hold.updated_at.saturating_add(HOLD_RETENTION_MS));
        let holds = self.open.keyspace(Kind::Holds, slice)?;
        self.writes.insert(&holds, key, value.as_slice());
        let mut order_key = [0u8; 16];
        order_key[..8].copy_from_slice(&order_hash(&hold.order_id).to_be_bytes());
        order_key[8..].copy_from_slice(&key);
        let orders = self.open.keyspace(Kind::Orders, slice)?;
        self.writes.insert(&orders, order_key, []);
        self.live.insert(hold.seq, None);
        Ok(())
    }

    fn put_idem(&mut self, record: &ColdIdem) -> Result<(), ColdError> {
        let keys = self.open.keyspace(Kind::Keys, self.store.slice(record.expires_at))?;
        self.writes.insert(&keys, record.key.to_be_bytes(), encode(record).as_slice());
        Ok(())
    }

    /// Writes the batch and `position` atomically.
    fn commit(mut self, position: Position) -> Result<(), ColdError> {
        let mut value = [0u8; 16];
        value[..8].copy_from_slice(&position.seq.to_le_bytes());
        value[8..].copy_from_slice(&position.at.to_le_bytes());
        self.writes.insert(&self.open.meta, POSITION, value);
        self.writes.commit()?;
        Ok(())
    }
}

impl ColdStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path, tiers: TierConfig, idempotency_ttl_ms: Millis) -> Result<ColdStore, ColdError> {
        let open = Open::new(dir)?;
        Ok(ColdStore { dir: dir.to_path_buf(), tiers, idempotency_ttl_ms, open: RwLock::new(Some(Arc::new(open))) })
    }

    /// The open database, opened again if a reopen could not finish.
    fn db(&self) -> Result<Arc<Open>, ColdError> {
        if let Some(open) = &*self.open.read() {
            return Ok(open.clone());
        }
        let mut open = self.open.write();
        if open.is_none() {
            *open = Some(Arc::new(Open::open_when_unlocked(&self.dir)?));
        }
        Ok(open.clone().expect("opened"))
    }

    /// Closes the database and opens it again from what is on disk: what
    /// was made durable, and perhaps batches written since (the position
    /// says which). After a write failed (a full disk), fjall refuses
    /// every write until then. If a lookup still holds the old handle past
    /// [`REOPEN_WAIT`], or the opening fails, this fails, and the next use
    /// opens it.
    pub fn reopen(&self) -> Result<(), ColdError> {
        let mut open = self.open.write();
        drop(open.take());
        *open = Some(Arc::new(Open::open_when_unlocked(&self.dir)?));
        Ok(())
    }

    /// The last journal entry taken (zero before the first).
    pub fn position(&self) -> Result<Position, ColdError> {
        Ok(match self.db()?.meta.get(POSITION)? {
            Some(v) if v.len() == 16 => Position {
                seq: u64::from_le_bytes(v[..8].try_into().expect("8 bytes")),
                at: u64::from_le_bytes(v[8..].try_into().expect("8 bytes")),
            },
            Some(_) => return Err(ColdError::Corrupt("position".into())),
            None => Position::default(),
        })
    }

    fn batch<'a>(&'a self, open: &'a Open) -> Batch<'a> {
        Batch { store: self, open, writes: open.db.batch(), live: HashMap::new() }
    }

    /// Takes journal entries, in order, each right after the last taken,
    /// with the new position; durable at the next [`ColdStore::persist`].
    pub fn take(&self, entries: &[Entry]) -> Result<(), ColdError> {
        let Some(last) = entries.last() else { return Ok(()) };
        let open = self.db()?;
        let mut batch = self.batch(&open);
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
        let open = self.db()?;
        let mut batch = self.batch(&open);
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
        self.db()?.db.persist(PersistMode::SyncData)?;
        Ok(())
    }

    fn slice(&self, retention_end: Millis) -> u64 {
        retention_end / self.tiers.slice_ms
    }

    /// The idempotency record of `key`, if one is kept and unexpired at `at`.
    pub fn idem(&self, key: u128, at: Millis) -> Result<Option<ColdIdem>, ColdError> {
        for keys in self.db()?.slices.of(Kind::Keys, self.slice(at)) {
            if let Some(v) = keys.get(key.to_be_bytes())? {
                let record: ColdIdem = decode(&v)?;
                return Ok((record.expires_at > at).then_some(record));
            }
        }
        Ok(None)
    }

    /// The finished hold of sequence `seq`, if one is kept.
    pub fn hold(&self, seq: u64) -> Result<Option<ColdHold>, ColdError> {
        for holds in self.db()?.slices.of(Kind::Holds, 0) {
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
        let open = self.db()?;
        for slice in open.slices.numbers(Kind::Orders) {
            let (orders, by_seq) = (open.keyspace(Kind::Orders, slice)?, open.keyspace(Kind::Holds, slice)?);
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
        let open = self.db()?;
        for (kind, slice) in open.slices.all() {
            if slice < first_kept {
                if let Some(keyspace) = open.slices.remove(kind, slice) {
                    open.db.delete_keyspace(keyspace)?;
                    dropped += 1;
                }
            }
        }
        Ok(dropped)
    }

    /// The store's memtables, active and sealed: written, not yet flushed
    /// to disk (0 while closed).
    pub fn write_buffer_bytes(&self) -> u64 {
        self.opened().map_or(0, |open| open.db.write_buffer_size())
    }

    /// The open database, if it is open.
    fn opened(&self) -> Option<Arc<Open>> {
        self.open.read().clone()
    }

    /// The filter and index blocks the store's tables keep in memory; they
    /// grow with what the store holds on disk (0 while closed).
    pub fn pinned_bytes(&self) -> u64 {
        use fjall::AbstractTree;
        let Some(open) = self.opened() else { return 0 };
        let keyspaces: Vec<Keyspace> = open.slices.0.lock().values().cloned().collect();
        [&open.meta, &open.live]
            .into_iter()
            .chain(keyspaces.iter())
            .map(|k| (k.tree.pinned_filter_size() + k.tree.pinned_block_index_size()) as u64)
            .sum()
    }

    pub fn stats(&self) -> StoreStats {
        let Some(open) = self.opened() else { return StoreStats::default() };
        let slices: BTreeSet<u64> = open.slices.all().into_iter().map(|(_, s)| s).collect();
        StoreStats { slices: slices.len(), bytes_on_disk: open.db.disk_space().unwrap_or(0) }
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

    /// A tmpfs of `size` mounted for one test, unmounted when dropped (lazily
    /// if something still has a file open on it).
    struct Tmpfs(tempfile::TempDir);

    impl Tmpfs {
        fn mount(size: &str) -> Result<Tmpfs, String> {
            let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
            let out = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(dir.path())
                .output()
                .map_err(|e| e.to_string())?;
            if !out.status.success() {
                return Err(format!("mount -t tmpfs failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
            }
            Ok(Tmpfs(dir))
        }
    }

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let umount = |lazy: bool| {
                let mut umount = std::process::Command::new("umount");
                if lazy {
                    umount.arg("--lazy");
                }
                umount.arg(self.0.path()).status().is_ok_and(|s| s.success())
            };
            if !umount(false) {
                umount(true);
            }
        }
    }

    /// Fills the file system of `path` with the file `path`.
    fn fill(path: &Path) {
        use std::io::Write;
        let mut file = std::fs::File::create(path).unwrap();
        let page = [0xA5u8; 4_096];
        loop {
            match file.write(&page) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::StorageFull => return,
                Err(e) => panic!("filler: {e}"),
            }
        }
    }

    #[test]
    fn after_a_full_disk_the_store_opened_again_takes_the_journal_on_from_its_position() {
        let tmpfs = match Tmpfs::mount("4m") {
            Ok(tmpfs) => tmpfs,
            Err(e) => {
                assert!(std::env::var_os("CI").is_none(), "needs a tmpfs: {e}");
                return eprintln!("skipping: {e}");
            }
        };
        let mut j = Journaled::new();
        let t = 10 * HOUR_MS;
        let Command::Receive(mut stock) = receive() else { unreachable!() };
        stock.qty = 1_000_000;
        j.apply(t, Command::Receive(stock));
        let mut ids = Vec::new();
        for n in 0..4_000 {
            let key = format!("k{n}");
            // Every third hold is released: records in the live keyspace and the slices.
            let id = id(j.apply(t + 1 + n, reserve(&format!("o{n}"), &key)));
            if n % 3 == 0 {
                let release = Release { reservation_id: id, reason: "gone".into(), idem_key: format!("x{n}") };
                j.apply(t + 1 + n, Command::Release(release));
            }
            ids.push(id);
        }
        let store = Arc::new(open(&tmpfs.0.path().join("cold")));
        store.take(&j.entries[..100]).unwrap();
        store.persist().unwrap();
        let filler = tmpfs.0.path().join("filler");
        fill(&filler);

        // The full disk fails a write, and fjall then refuses every write,
        // also once there is space again.
        let mut next = 100;
        let failed = loop {
            assert!(next < j.entries.len(), "no write failed on a full disk");
            let end = (next + 100).min(j.entries.len());
            match store.take(&j.entries[next..end]).and_then(|()| store.persist()) {
                Ok(()) => next = end,
                Err(e) => break e,
            }
        };
        assert!(failed.is_storage(), "{failed}");
        std::fs::remove_file(&filler).unwrap();
        assert!(store.take(&j.entries[next..next + 1]).and_then(|()| store.persist()).is_err());

        // Lookups go on during the reopen, answering or failing cleanly.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let looking = {
            let (store, stop) = (store.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut found = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Ok(record) = store.idem(key_hash("k0"), t + 2) {
                        assert!(record.is_some(), "a durable record went missing");
                        found += 1;
                    }
                }
                found
            })
        };
        store.reopen().unwrap();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(looking.join().unwrap() > 0);

        // It holds what was durable, perhaps more, and takes the journal on
        // from there.
        let position = store.position().unwrap();
        assert!(position.seq >= 100, "{position:?}");
        assert!(position.seq <= j.entries.len() as u64);
        store.take(&j.entries[position.seq as usize..]).unwrap();
        store.persist().unwrap();
        let last = j.entries.last().unwrap();
        assert_eq!(store.position().unwrap(), Position { seq: last.seq, at: last.at });
        drop(store);
        let store = open(&tmpfs.0.path().join("cold"));
        assert_eq!(store.position().unwrap().seq, last.seq);
        let at = t + 5_000;
        let dump = j.shard.dump();
        for (n, id) in ids.iter().enumerate() {
            let key = format!("k{n}");
            let kept = store.idem(key_hash(&key), at).unwrap().unwrap_or_else(|| panic!("{key}"));
            let held = dump.idem.iter().find(|r| r.0 == key_hash(&key)).unwrap();
            assert_eq!((kept.fingerprint, kept.expires_at), (held.1, held.3), "{key}");
            if n % 3 == 0 {
                let hold = store.hold(id.seq()).unwrap().unwrap_or_else(|| panic!("hold {n}"));
                assert_eq!(hold.view(0), j.shard.reservation(*id).unwrap());
            }
        }
        assert!(tmpfs.0.path().exists());
    }
}
