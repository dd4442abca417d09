//! A flush of the sled journal writes sled's log on the flushing thread
//! (the patch in `vendor/sled/PATCHED.md`): appends start none of sled's
//! I/O threads. A test binary of its own, as sled's thread pool is one per
//! process and another test could start its threads.

use inventory_core::{Command, Entry, Expire};
use inventory_journal::{Journal, SledStore};

fn entry(seq: u64) -> Entry {
    Entry {
        seq,
        at: seq * 10,
        trace_id: 0,
        operator: "x".repeat(200),
        command: Command::Expire(Expire { ids: vec![] }),
        txns: vec![],
    }
}

/// Threads of this process whose name starts with `prefix`.
fn threads_named(prefix: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter(|task| {
            let comm = std::fs::read_to_string(task.as_ref().unwrap().path().join("comm")).unwrap_or_default();
            comm.starts_with(prefix)
        })
        .count()
}

#[test]
fn appends_write_sleds_log_on_the_appending_thread() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path(), Some(2), 2).unwrap();
    let mut journals = [store.journal(0).unwrap(), store.journal(1).unwrap()];
    for seq in 1..=500 {
        for journal in &mut journals {
            journal.append(&[entry(seq)]).unwrap();
        }
    }
    assert_eq!(threads_named("sled-io"), 0, "a flush handed sled's log write to its thread pool");
    for journal in &journals {
        let seqs: Vec<u64> = journal.read_from(1).unwrap().map(|e| e.unwrap().seq).collect();
        assert_eq!(seqs, (1..=500).collect::<Vec<_>>());
    }
}
