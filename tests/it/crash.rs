//! kill -9 under load, restart on the same data dir: nothing acknowledged is
//! lost, stock is conserved, and the state equals a replay of the journal;
//! with either kind of journal.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use inventory_core::{Shard, ShardConfig};
use inventory_journal::{replay, Backend, Store};
use reqwest::StatusCode;

use crate::support::{Client, Daemon};

const SKUS: [&str; 4] = ["crash-a", "crash-b", "crash-c", "crash-d"];
const STOCK: u64 = 400;
const CLIENTS: usize = 16;

#[derive(Default)]
struct Ledger {
    /// Acknowledged holds: id -> (sku, qty, confirmed acknowledged).
    holds: BTreeMap<String, (String, u64, bool)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_no_acknowledged_change() {
    kill_9_under_load(Backend::Sled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_no_acknowledged_change_with_the_file_journal() {
    kill_9_under_load(Backend::File).await;
}

async fn kill_9_under_load(journal: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::spawn(dir.path(), &["--shards", "2", "--journal", journal.name()]);
    let seed = Client::new(&daemon.url);
    seed.wait_ready().await;
    for sku in SKUS {
        seed.receive(sku, STOCK).await;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let c = Client::new(&daemon.url);
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut ledger = Ledger::default();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let sku = SKUS[(n as usize + client) % SKUS.len()];
                let qty = 1 + n % 3;
                let order = format!("c{client}-o{n}");
                let Ok(r) = c.try_post("/api/inventory/reserve", serde_json::json!({"orderId": order, "skuId": sku, "qty": qty, "idemKey": format!("{order}:r")})).await else {
                    break; // the server is gone
                };
                if r.status != StatusCode::OK {
                    continue; // sold out
                }
                let id = r.body["reservationId"].as_str().unwrap().to_string();
                ledger.holds.insert(id.clone(), (sku.to_string(), qty, false));
                if n.is_multiple_of(2) {
                    let Ok(r) = c.try_post("/api/inventory/confirm", serde_json::json!({"reservationId": id, "paymentId": format!("p-{order}"), "idemKey": format!("{order}:c")})).await else {
                        break;
                    };
                    if r.status == StatusCode::OK {
                        ledger.holds.get_mut(&id).unwrap().2 = true;
                    }
                }
            }
            ledger
        }));
    }
    // Let the load run, then kill the process mid-flight.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    daemon.signal(libc::SIGKILL);
    let status = daemon.wait();
    assert!(!status.success());
    stop.store(true, Ordering::Relaxed);
    let mut acked = Ledger::default();
    for t in tasks {
        acked.holds.extend(t.await.unwrap().holds);
    }
    assert!(acked.holds.len() > 50, "too little load before the kill: {}", acked.holds.len());

    // Restart on the same data dir, which keeps its kind of journal.
    let daemon = Daemon::spawn(dir.path(), &[]);
    let c = Client::new(&daemon.url);
    c.wait_ready().await;
    let mut acked_qty: BTreeMap<&str, u64> = BTreeMap::new();
    for (id, (sku, qty, confirmed)) in &acked.holds {
        let r = c.get(&format!("/api/reservations/{id}")).await;
        assert_eq!(r.status, StatusCode::OK, "acknowledged hold {id} lost");
        assert_eq!((r.body["skuId"].as_str(), r.body["qty"].as_u64()), (Some(sku.as_str()), Some(*qty)), "{id}");
        let status = r.body["status"].as_str().unwrap();
        if *confirmed {
            assert_eq!(status, "CONFIRMED", "acknowledged confirm of {id} lost");
        } else {
            assert!(status == "RESERVED" || status == "CONFIRMED", "{id} is {status}");
        }
        *acked_qty.entry(sku).or_default() += qty;
    }
    let mut live = BTreeMap::new();
    for sku in SKUS {
        let (available, reserved, sold) = c.levels(sku).await;
        assert_eq!(available + reserved + sold, STOCK, "{sku}: stock not conserved");
        let held = acked_qty.get(sku).copied().unwrap_or(0);
        assert!(reserved + sold >= held, "{sku}: {held} acknowledged but only {} held", reserved + sold);
        // At most one unacknowledged request per client was in flight.
        assert!(reserved + sold <= held + (CLIENTS as u64) * 3, "{sku}: more held than was requested");
        live.insert(sku, (available, reserved, sold));
    }

    // The counters equal a replay of the journal from an empty state.
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait().success(), "SIGTERM should exit 0");
    let store = Store::open(&dir.path().join("journal"), None, None, 1).unwrap();
    assert_eq!((store.backend(), store.shards()), (journal, 2));
    let mut replayed = BTreeMap::new();
    for i in 0..store.shards() {
        let mut shard = Shard::new(ShardConfig::new(i));
        replay(&mut shard, &store.journal(i).unwrap()).unwrap();
        shard.check_invariants().unwrap();
        for (sku, _, row) in shard.rows() {
            let l = row.levels;
            replayed.insert(sku.to_string(), (l.available, l.reserved, l.sold));
        }
    }
    for sku in SKUS {
        assert_eq!(replayed.get(sku), live.get(sku), "{sku}: live counters differ from a replay");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_in_flight_requests_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::spawn(dir.path(), &["--shards", "2"]);
    let c = Client::new(&daemon.url);
    c.wait_ready().await;
    c.receive("term", 100).await;
    let mut tasks = Vec::new();
    for i in 0..32 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            c.try_post(
                "/api/inventory/reserve",
                serde_json::json!({"orderId": format!("t{i}"), "skuId": "term", "qty": 1, "idemKey": format!("t{i}")}),
            )
            .await
        }));
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    daemon.signal(libc::SIGTERM);
    let mut acked = 0;
    for t in tasks {
        // A request either completed or was never accepted; none hangs.
        if let Ok(r) = t.await.unwrap() {
            if r.status == StatusCode::OK {
                acked += 1;
            }
        }
    }
    assert!(daemon.wait().success(), "SIGTERM should exit 0");
    let daemon = Daemon::spawn(dir.path(), &[]);
    let c = Client::new(&daemon.url);
    c.wait_ready().await;
    let (available, reserved, _) = c.levels("term").await;
    assert!(reserved >= acked, "{acked} acknowledged but {reserved} held after restart");
    assert_eq!(available + reserved, 100);
}

/// Creates a data dir with `first` flags, stops the service, then starts it
/// again with `then`: that start must fail; returns what it printed.
fn refused_restart(first: &[&str], then: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::spawn(dir.path(), first);
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait().success());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_inventoryd"))
        .args(["--listen", "127.0.0.1:0"])
        .args(then)
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success(), "the second start was accepted");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_different_shard_count_on_an_existing_data_dir_is_refused() {
    let stderr = refused_restart(&["--shards", "2"], &["--shards", "3"]);
    assert!(stderr.contains("created with 2 shards"), "{stderr}");
}

#[test]
fn another_kind_of_journal_on_an_existing_data_dir_is_refused() {
    let stderr = refused_restart(&["--journal", "file"], &["--journal", "sled"]);
    assert!(stderr.contains("is a file journal, not a sled one; start with --journal file"), "{stderr}");
}
