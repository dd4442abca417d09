//! Finished holds and idempotency records moving to the cold tier: every
//! answer is the same from disk as from memory, across a restart too.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{skus_on_different_shards, Client, Options, Reply, TestServer};

/// A server whose records leave memory a second after they finish or are
/// made.
fn options(dir: &std::path::Path) -> Options {
    Options { data_dir: Some(dir.to_path_buf()), hot_secs: Some((1, 1)), ..Default::default() }
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines().filter(|l| l.starts_with(series)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

/// Waits until the shards have moved `holds` finished holds and `keys`
/// idempotency records out of memory.
async fn wait_until_moved(c: &Client, holds: f64, keys: f64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = c.get("/metrics").await.text;
        let moved = (
            metric(&text, r#"inventory_evicted_total{event="hold"}"#),
            metric(&text, r#"inventory_evicted_total{event="key"}"#),
        );
        if moved.0 >= holds && moved.1 >= keys {
            return;
        }
        assert!(Instant::now() < deadline, "moved only {moved:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct Made {
    sold: String,
    released: String,
    reserve: Reply,
}

/// An SKU on another shard than `cold-a` (two shards).
fn elsewhere() -> String {
    let (home, other) = skus_on_different_shards("cold", 2);
    assert_eq!(inventory_core::shard_for_sku("cold-a", 2), inventory_core::shard_for_sku(&home, 2));
    other
}

async fn make(c: &Client) -> Made {
    assert_eq!(c.receive("cold-a", 10).await.status, StatusCode::OK);
    assert_eq!(c.receive(&elsewhere(), 10).await.status, StatusCode::OK);
    let reserve = c.reserve("order-1", "cold-a", 2, "t:k1").await;
    let sold = reserve.body["reservationId"].as_str().unwrap().to_string();
    assert_eq!(c.confirm(&sold, "pay-1", "t:k2").await.status, StatusCode::OK);
    let other = c.reserve("order-2", "cold-a", 3, "t:k3").await;
    let released = other.body["reservationId"].as_str().unwrap().to_string();
    assert_eq!(c.release(&released, "t:k4").await.status, StatusCode::OK);
    Made { sold, released, reserve }
}

/// Every path that reads a record that has moved to disk.
async fn check_answers_from_the_cold_tier(c: &Client, made: &Made, round: &str) {
    let hold = c.get(&format!("/api/reservations/{}", made.sold)).await;
    assert_eq!((hold.status, hold.body["status"].as_str()), (StatusCode::OK, Some("CONFIRMED")), "{}", hold.text);
    assert_eq!(hold.body["paymentId"], "pay-1");
    let order = c.get("/api/orders/order-1/inventory-status").await;
    assert_eq!(order.body["reservations"].as_array().map(Vec::len), Some(1), "{}", order.text);
    // An idempotent replay: the same body, marked replayed.
    let again = c.reserve("order-1", "cold-a", 2, "t:k1").await;
    assert_eq!((again.status, &again.text), (StatusCode::OK, &made.reserve.text));
    assert_eq!(again.headers["idempotent-replayed"], "true");
    // The same key for another request.
    let reused = c.reserve("order-9", "cold-a", 1, "t:k1").await;
    assert_eq!((reused.status, reused.code()), (StatusCode::UNPROCESSABLE_ENTITY, "IDEMPOTENCY_KEY_REUSED"));
    // ...and for a request that goes to another shard.
    let reused = c.reserve("order-9", &elsewhere(), 1, "t:k1").await;
    assert_eq!((reused.status, reused.code()), (StatusCode::UNPROCESSABLE_ENTITY, "IDEMPOTENCY_KEY_REUSED"));
    // A repeated payment callback under a new key deducts nothing.
    let paid = c.confirm(&made.sold, "pay-1", &format!("t:{round}:again")).await;
    assert_eq!((paid.status, paid.body["status"].as_str()), (StatusCode::OK, Some("CONFIRMED")), "{}", paid.text);
    let other = c.confirm(&made.sold, "pay-2", &format!("t:{round}:other")).await;
    assert_eq!((other.status, other.code()), (StatusCode::CONFLICT, "PAYMENT_MISMATCH"));
    // One hold per order line, even when the line's hold is on disk.
    let line = c.reserve("order-1", "cold-a", 1, &format!("t:{round}:line")).await;
    assert_eq!((line.status, line.code()), (StatusCode::CONFLICT, "DUPLICATE_ORDER_LINE"));
    assert_eq!(line.body["reservationId"], made.sold.as_str());
    // A released hold stays released.
    let late = c.confirm(&made.released, "pay-3", &format!("t:{round}:late")).await;
    assert_eq!((late.status, late.code()), (StatusCode::CONFLICT, "RESERVATION_RELEASED"));
    let released = c
        .post(
            "/api/inventory/release",
            json!({"reservationId": made.released, "reason": "again", "idemKey": format!("t:{round}:rel")}),
        )
        .await;
    assert_eq!((released.status, released.body["status"].as_str()), (StatusCode::OK, Some("RELEASED")));
    // Nothing was sold twice or held again.
    assert_eq!(c.levels("cold-a").await, (8, 0, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_on_disk_answer_as_they_did_in_memory_and_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(options(dir.path())).await;
    let made = make(&server.client).await;
    // Two finished holds; the keys of the receipts and the hold changes.
    wait_until_moved(&server.client, 2.0, 6.0).await;
    check_answers_from_the_cold_tier(&server.client, &made, "a").await;
    let lookups = metric(&server.client.get("/metrics").await.text, "inventory_cold_lookups_total");
    assert!(lookups >= 5.0, "decisions came from the cold tier: {lookups}");
    server.stop().await;

    // After a restart the records are still on disk, and the journal's
    // replay moves them out of memory again.
    let server = TestServer::start_with(options(dir.path())).await;
    check_answers_from_the_cold_tier(&server.client, &made, "b").await;
    server.stop().await;

    // Started without the cold tier, the data dir still answers from it.
    let keep_all = Options { data_dir: Some(dir.path().to_path_buf()), ..Default::default() };
    let server = TestServer::start_with(keep_all).await;
    check_answers_from_the_cold_tier(&server.client, &made, "c").await;
    server.stop().await;
}

/// kill -9 while records move to disk under load: after a restart every
/// acknowledged hold and idempotency record answers as acknowledged, from
/// memory or from disk, and stock is conserved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_records_move_to_disk_loses_and_repeats_nothing() {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use crate::support::Daemon;

    const SKUS: [&str; 3] = ["move-a", "move-b", "move-c"];
    const STOCK: u64 = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let args = ["--shards", "2", "--cold-tier", "true", "--hot-holds-secs", "1", "--hot-keys-secs", "1"];
    let daemon = Daemon::spawn(dir.path(), &args);
    let seed = Client::new(&daemon.url);
    seed.wait_ready().await;
    for sku in SKUS {
        seed.receive(sku, STOCK).await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for client in 0..8 {
        let (c, stop) = (Client::new(&daemon.url), stop.clone());
        tasks.push(tokio::spawn(async move {
            // Acknowledged reserves: key -> (reservation id, sku, confirmed).
            let mut acked: BTreeMap<String, (String, String, bool)> = BTreeMap::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let sku = SKUS[(n as usize + client) % SKUS.len()];
                let key = format!("m{client}-{n}:r");
                let body = json!({"orderId": format!("m{client}-{n}"), "skuId": sku, "qty": 1, "idemKey": key});
                let Ok(r) = c.try_post("/api/inventory/reserve", body).await else { break };
                if r.status != StatusCode::OK {
                    continue;
                }
                let id = r.body["reservationId"].as_str().unwrap().to_string();
                acked.insert(key.clone(), (id.clone(), sku.to_string(), false));
                if n.is_multiple_of(2) {
                    let body = json!({"reservationId": id, "paymentId": format!("p{n}"), "idemKey": format!("m{client}-{n}:c")});
                    let Ok(r) = c.try_post("/api/inventory/confirm", body).await else { break };
                    if r.status == StatusCode::OK {
                        acked.get_mut(&key).unwrap().2 = true;
                    }
                }
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    let moved = metric(&seed.get("/metrics").await.text, "inventory_evicted_total");
    daemon.signal(libc::SIGKILL);
    assert!(!daemon.wait().success());
    stop.store(true, Ordering::Relaxed);
    let mut acked = BTreeMap::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    assert!(moved > 0.0, "records were moving when the process was killed");
    assert!(acked.len() > 100, "too little load: {}", acked.len());

    let daemon = Daemon::spawn(dir.path(), &args);
    let c = Client::new(&daemon.url);
    c.wait_ready().await;
    // Let everything acknowledged before the kill move out again.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let mut held: BTreeMap<&str, u64> = BTreeMap::new();
    for (key, (id, sku, confirmed)) in &acked {
        let hold = c.get(&format!("/api/reservations/{id}")).await;
        assert_eq!(hold.status, StatusCode::OK, "acknowledged hold {id} lost: {}", hold.text);
        let status = hold.body["status"].as_str().unwrap();
        assert!(!*confirmed || status == "CONFIRMED", "{id}: acknowledged confirm lost, {status}");
        // The reserve's key answers it again, whichever tier keeps it.
        let order = key.trim_end_matches(":r");
        let again =
            c.post("/api/inventory/reserve", json!({"orderId": order, "skuId": sku, "qty": 1, "idemKey": key})).await;
        assert_eq!(
            (again.status, again.body["reservationId"].as_str()),
            (StatusCode::OK, Some(id.as_str())),
            "{key}: {}",
            again.text
        );
        *held.entry(sku.as_str()).or_default() += 1;
    }
    for sku in SKUS {
        let (available, reserved, sold) = c.levels(sku).await;
        assert_eq!(available + reserved + sold, STOCK, "{sku}: stock not conserved");
        let acked = held.get(sku).copied().unwrap_or(0);
        assert!(
            reserved + sold >= acked && reserved + sold <= acked + 8,
            "{sku}: {reserved} + {sold} held for {acked}"
        );
    }
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait().success());
}

/// A data dir whose journal was truncated while it ran without the cold
/// tier, then started with it: the cold tier starts from the shard's
/// state, and everything still answers from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_tier_that_missed_the_journals_start_begins_from_the_shards_state() {
    let dir = tempfile::tempdir().unwrap();
    let keep_all = Options { data_dir: Some(dir.path().to_path_buf()), keep_all: true, ..Default::default() };
    let server = TestServer::start_with(keep_all).await;
    let made = make(&server.client).await;
    let snapshot = server.client.post("/api/admin/snapshot", json!({})).await;
    let truncated: u64 =
        snapshot.body["snapshots"].as_array().unwrap().iter().map(|s| s["truncated"].as_u64().unwrap()).sum();
    assert!(truncated > 0, "the journal no longer starts at entry 1: {}", snapshot.text);
    server.stop().await;
    assert!(!dir.path().join("cold").exists());

    let server = TestServer::start_with(options(dir.path())).await;
    wait_until_moved(&server.client, 2.0, 6.0).await;
    check_answers_from_the_cold_tier(&server.client, &made, "c").await;
    server.stop().await;
}
