//! The tailer: one background thread that follows every shard's journal
//! (never past its last acknowledged entry) and appends the audited changes
//! it finds to the log.
//!
//! Its memory stays bounded however far behind it falls (a bulk import),
//! and after a crash it resumes after the last change in the log. Each
//! shard loop notes, before publishing its head, the last durable sequence
//! that holds an audited change ([`AuditedUpto`]); where that is behind the
//! tailer's cursor, the tailer moves the cursor on without reading the
//! journal, so a run of reserves costs it nothing.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use inventory_journal::follow::{Cursor, Followers};
use inventory_journal::Journal;

use crate::log::{pending_of_record, AuditLog};

/// The name of the tailer's cursor on each shard's journal.
pub const FOLLOWER: &str = "audit";

/// Bounds one append, in audited rows (a bulk receipt is one record of up
/// to 10,000 rows).
const ROWS_MAX: usize = 50_000;

/// How long the tailer sleeps when no shard has anything new.
const IDLE_SLEEP: Duration = Duration::from_millis(5);

/// Per shard: the last durable sequence that may hold an audited change,
/// noted by the shard loop before it publishes its head. At start-up it is
/// the whole recovered journal, since nothing says what that held.
#[derive(Default)]
pub struct AuditedUpto(AtomicU64);

impl AuditedUpto {
    pub fn note(&self, seq: u64) {
        self.0.store(seq, Ordering::Release);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
}

/// What the tailer follows of one shard.
pub struct TailedShard {
    pub reader: Arc<dyn Journal + Sync>,
    pub followers: Arc<Followers>,
    /// The tailer's cursor on this shard, registered as [`FOLLOWER`]: where
    /// it starts is the log's last audited sequence of the shard.
    pub cursor: Arc<Cursor>,
    pub audited_upto: Arc<AuditedUpto>,
}

/// Runs the tailer on the calling thread until `stop` is set and every shard
/// is caught up. If the log cannot be written it stops (so nothing is
/// skipped); the next start resumes from the log.
pub fn run_tailer(mut log: AuditLog, shards: Vec<TailedShard>, stop: Arc<AtomicBool>) {
    loop {
        let stopping = stop.load(Ordering::Acquire);
        let mut idle = true;
        for (index, shard) in shards.iter().enumerate() {
            let from = shard.cursor.position() + 1;
            let durable = shard.followers.durable();
            if from > durable {
                continue;
            }
            // Read after `durable`, so it covers every entry up to it.
            if shard.audited_upto.get() < from {
                // Nothing the log records was journaled since the cursor.
                shard.cursor.advance(durable, shard.followers.durable_at());
                continue;
            }
            idle = false;
            let (mut events, mut rows) = (Vec::new(), 0);
            let (mut scanned, mut scanned_at) = (from - 1, shard.cursor.position_at());
            let read = shard.reader.visit_records(from, &mut |seq, record| {
                if seq > durable || rows >= ROWS_MAX {
                    return Ok(false);
                }
                scanned = seq;
                if let Some(event) = pending_of_record(index as u16, seq, record)? {
                    scanned_at = event.at_ms();
                    rows += event.rows();
                    events.push(event);
                }
                Ok(true)
            });
            if let Err(e) = read {
                tracing::error!(shard = index, error = %e, "audit: cannot read the journal; auditing stops until restart");
                return;
            }
            if scanned < from {
                // Nothing from `from` to `durable` is in the journal: a
                // snapshot covers it and the journal holds nothing after it
                // yet (a data dir made by `restore`, or one whose audit log
                // was lost). There is nothing here to audit.
                tracing::warn!(shard = index, from, to = durable, "audit: journal entries covered by a snapshot are not in the journal; auditing continues after them");
                scanned = durable;
            }
            if let Err(e) = log.append(events) {
                tracing::error!(error = %e, "audit log write failed; auditing resumes from the journal at the next start");
                return;
            }
            if scanned == durable {
                scanned_at = shard.followers.durable_at();
            }
            shard.cursor.advance(scanned, scanned_at);
        }
        if idle {
            if stopping {
                return;
            }
            std::thread::sleep(IDLE_SLEEP);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{is_audited, LOG_FILE};
    use inventory_core::{Command, Entry, Receive, Reserve, Shard, ShardConfig, DEFAULT_WAREHOUSE};
    use inventory_journal::{JournalError, MemJournal, RecordVisitor};
    use std::time::Instant;

    /// A journal reader that counts the records it hands out.
    struct Counting {
        inner: Box<dyn Journal + Sync>,
        visited: Arc<AtomicU64>,
    }

    impl Journal for Counting {
        fn append(&mut self, batch: &[Entry]) -> Result<(), JournalError> {
            self.inner.append(batch)
        }
        fn recover(&mut self, next_seq: u64) -> Result<(), JournalError> {
            self.inner.recover(next_seq)
        }
        fn read_from(
            &self,
            from: u64,
        ) -> Result<Box<dyn Iterator<Item = Result<Entry, JournalError>> + '_>, JournalError> {
            self.inner.read_from(from)
        }
        fn visit_records(&self, from: u64, f: RecordVisitor<'_>) -> Result<(), JournalError> {
            self.inner.visit_records(from, &mut |seq, record| {
                self.visited.fetch_add(1, Ordering::Relaxed);
                f(seq, record)
            })
        }
        fn shard(&self) -> u16 {
            self.inner.shard()
        }
        fn reader(&self) -> Box<dyn Journal + Sync> {
            self.inner.reader()
        }
        fn truncate_before(&self, keep_from: u64) -> Result<u64, JournalError> {
            self.inner.truncate_before(keep_from)
        }
    }

    /// Applies `command` as the shard loop does and journals its entry.
    fn journal(shard: &mut Shard, journal: &mut MemJournal, tailed: &TailedShard, command: Command) {
        let seq = tailed.followers.durable() + 1;
        let mut txns = Vec::new();
        assert!(shard.apply(seq, &command, &mut txns).changed);
        let entry = Entry { seq, at: seq, trace_id: 0, operator: "t".into(), command, txns, cold: Default::default() };
        journal.append(std::slice::from_ref(&entry)).unwrap();
        if is_audited(&entry) {
            tailed.audited_upto.note(seq);
        }
        tailed.followers.publish(seq, seq);
    }

    fn receive(sku: &str) -> Command {
        Command::Receive(Receive {
            sku_id: sku.into(),
            warehouse_id: DEFAULT_WAREHOUSE.into(),
            qty: 1_000,
            idem_key: format!("receive-{sku}"),
            reference: String::new(),
        })
    }

    fn reserve(i: u64, sku: &str) -> Command {
        Command::Reserve(Reserve {
            order_id: format!("o{i}"),
            sku_id: sku.into(),
            warehouse_id: DEFAULT_WAREHOUSE.into(),
            qty: 1,
            idem_key: format!("reserve-{i}"),
            ttl_ms: 60_000,
            ttl_explicit: false,
        })
    }

    #[test]
    fn the_audit_tailer_reads_the_journal_only_where_a_receipt_was_journaled() {
        let dir = tempfile::tempdir().unwrap();
        let (mut shard, mut mem) = (Shard::new(ShardConfig::new(0)), MemJournal::new(0));
        let visited = Arc::new(AtomicU64::new(0));
        let followers: Arc<Followers> = Arc::default();
        let mine = TailedShard {
            reader: Arc::new(Counting { inner: mem.reader(), visited: visited.clone() }),
            followers: followers.clone(),
            cursor: followers.follow(FOLLOWER),
            audited_upto: Arc::default(),
        };
        let theirs = TailedShard {
            reader: mine.reader.clone(),
            followers: followers.clone(),
            cursor: mine.cursor.clone(),
            audited_upto: mine.audited_upto.clone(),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let tailer = {
            let (log, stop) = (AuditLog::open(dir.path()).unwrap(), stop.clone());
            std::thread::spawn(move || run_tailer(log, vec![theirs], stop))
        };
        let audited_to = |seq: u64| {
            let deadline = Instant::now() + Duration::from_secs(10);
            while mine.cursor.position() < seq {
                assert!(Instant::now() < deadline, "the tailer never reached {seq}");
                std::thread::sleep(Duration::from_millis(2));
            }
        };

        journal(&mut shard, &mut mem, &mine, receive("a"));
        audited_to(1);
        let read = visited.load(Ordering::Relaxed);
        assert!(read >= 1);
        // A run of reserves is passed over without reading a record.
        for i in 0..200 {
            journal(&mut shard, &mut mem, &mine, reserve(i, "a"));
        }
        audited_to(201);
        assert_eq!(visited.load(Ordering::Relaxed), read);
        // A receipt after them is read and audited.
        journal(&mut shard, &mut mem, &mine, receive("b"));
        audited_to(202);
        assert!(visited.load(Ordering::Relaxed) > read);
        assert_eq!(followers.truncation_bound(), (202, Some(FOLLOWER)));

        stop.store(true, Ordering::Release);
        tailer.join().unwrap();
        let log = std::fs::read_to_string(dir.path().join(LOG_FILE)).unwrap();
        let receipts: Vec<&str> = log.lines().collect();
        assert_eq!(receipts.len(), 2, "{log}");
        assert!(receipts[0].contains(r#""seq":1,"#) && receipts[1].contains(r#""seq":202,"#), "{log}");
    }
}
