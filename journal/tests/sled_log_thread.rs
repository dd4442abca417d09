//! A flush of the sled journal writes sled's log on the flushing thread
//! (the patch in `vendor/sled/PATCHED.md`): appends do not wake sled's
//! I/O threads. A test binary of its own, as sled's thread pool is one per
//! process and another test could start its threads.

use inventory_core::{Command, Entry, Expire};
use std::collections::HashMap;

use inventory_journal::{Journal, SledStore};

fn entry(seq: u64) -> Entry {
    Entry {
        seq,
        at: seq * 10,
        trace_id: 0,
        operator: "x".repeat(200),
        command: Command::Expire(Expire { ids: vec![] }),
        txns: vec![],
        cold: Default::default(),
    }
}

/// Voluntary context switches so far of each thread of this process whose
/// name starts with `prefix`, by thread id: a thread that waits and is
/// woken adds one.
fn switches_of_threads_named(prefix: &str) -> HashMap<String, u64> {
    let mut switches = HashMap::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let path = task.unwrap().path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if !comm.starts_with(prefix) {
            continue;
        }
        let status = std::fs::read_to_string(path.join("status")).unwrap_or_default();
        let line = status.lines().find(|l| l.starts_with("voluntary_ctxt_switches:"));
        let count = line.and_then(|l| l.split_whitespace().nth(1)?.parse().ok()).unwrap_or(0);
        switches.insert(path.file_name().unwrap().to_string_lossy().into_owned(), count);
    }
    switches
}

#[test]
fn appends_write_sleds_log_on_the_appending_thread() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path(), Some(2), 2).unwrap();
    let mut journals = [store.journal(0).unwrap(), store.journal(1).unwrap()];
    journals[0].append(&[entry(1)]).unwrap();
    journals[1].append(&[entry(1)]).unwrap();
    // Opening may have started the pool (its threads stay); what matters is
    // that the flushes below do not wake them. Handed to the pool, each of
    // the 998 flushes would wake every idle pool thread (seven).
    let before = switches_of_threads_named("sled-io");
    for seq in 2..=500 {
        for journal in &mut journals {
            journal.append(&[entry(seq)]).unwrap();
        }
    }
    let woken: u64 = switches_of_threads_named("sled-io")
        .iter()
        .map(|(thread, after)| after - before.get(thread).copied().unwrap_or(0))
        .sum();
    assert!(woken < 100, "sled's I/O threads were woken {woken} times by 998 flushes");
    for journal in &journals {
        let seqs: Vec<u64> = journal.read_from(1).unwrap().map(|e| e.unwrap().seq).collect();
        assert_eq!(seqs, (1..=500).collect::<Vec<_>>());
    }
}
