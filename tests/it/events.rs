//! The event relay against a real NATS JetStream broker (a private one per
//! test): the events' format, and the faults that must lose nothing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::nats::PrivateNats;
use crate::support::{Client, Daemon, Options, TestServer};

/// One message of the stream.
pub struct Published {
    pub msg_id: String,
    pub raw: Vec<u8>,
    pub event: Value,
}

/// Every message in the `INVENTORY` stream, in stream order.
pub async fn read_stream(url: &str) -> Vec<Published> {
    let client = async_nats::connect(url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream("INVENTORY").await.unwrap();
    let last = stream.info().await.unwrap().state.last_sequence;
    let mut out = Vec::new();
    if last == 0 {
        return out;
    }
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
            deliver_policy: async_nats::jetstream::consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    while let Some(message) = tokio::time::timeout(Duration::from_secs(20), messages.next()).await.unwrap() {
        let message = message.unwrap();
        let seq = message.info().unwrap().stream_sequence;
        let msg_id = message
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Msg-Id"))
            .map(|v| v.as_str().to_string())
            .unwrap_or_default();
        let raw = message.payload.to_vec();
        out.push(Published { msg_id, event: serde_json::from_slice(&raw).unwrap(), raw });
        if seq >= last {
            break;
        }
    }
    out
}

/// Waits until the relay has published everything journaled.
pub async fn caught_up(c: &Client, within: Duration) -> Value {
    // Until the shards have recovered, a journal's head is not known and
    // the relay's lag reads 0.
    c.wait_ready().await;
    let deadline = Instant::now() + within;
    loop {
        let r = c.get("/api/admin/events").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        if r.body["lagEntries"] == 0 {
            return r.body;
        }
        assert!(Instant::now() < deadline, "the relay never caught up: {}", r.text);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The events with distinct ids, in stream order; asserts that every copy
/// of an id carries the same bytes.
pub fn distinct(published: &[Published]) -> Vec<&Value> {
    let mut first: HashMap<&str, &[u8]> = HashMap::new();
    let mut out = Vec::new();
    for p in published {
        let id = p.event["id"].as_str().unwrap();
        assert_eq!(p.msg_id, id, "Nats-Msg-Id is the event id");
        match first.get(id) {
            Some(raw) => assert_eq!(*raw, &p.raw[..], "a re-delivery of {id} is the same event"),
            None => {
                first.insert(id, &p.raw);
                out.push(&p.event);
            }
        }
    }
    out
}

/// Per row, the versions its events carry, in stream order.
pub fn versions_by_row(events: &[&Value]) -> BTreeMap<(String, String), Vec<u64>> {
    let mut rows: BTreeMap<(String, String), Vec<u64>> = BTreeMap::new();
    for e in events {
        let d = &e["data"];
        let row = (d["skuId"].as_str().unwrap().to_string(), d["warehouseId"].as_str().unwrap().to_string());
        rows.entry(row).or_default().push(d["version"].as_u64().unwrap());
    }
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_is_published_as_a_cloud_event() {
    let nats = PrivateNats::start();
    let server = TestServer::start_with(Options { events_nats_url: Some(nats.url()), ..Default::default() }).await;
    let c = &server.client;
    c.receive("ev-1", 10).await;
    let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let reserved = reqwest::Client::new()
        .post(format!("{}/api/inventory/reserve", c.url))
        .header("traceparent", trace)
        .json(&json!({"orderId": "o-1", "skuId": "ev-1", "qty": 2, "idemKey": "k-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(reserved.status(), StatusCode::OK);
    let first: Value = reserved.json().await.unwrap();
    let first = first["reservationId"].as_str().unwrap().to_string();
    assert_eq!(c.confirm(&first, "pay-1", "k-2").await.status, StatusCode::OK);
    let second = c.reserve("o-2", "ev-1", 1, "k-3").await.body["reservationId"].as_str().unwrap().to_string();
    assert_eq!(c.release(&second, "k-4").await.status, StatusCode::OK);
    let r = c
        .post(
            "/api/inventory/reserve",
            json!({"orderId": "o-3", "skuId": "ev-1", "qty": 1, "idemKey": "k-5", "ttlSeconds": 1}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let freeze = c.post_as("alice", "/api/admin/skus/ev-1/freeze", json!({"reason": "audit", "idemKey": "k-6"})).await;
    assert_eq!(freeze.status, StatusCode::OK, "{}", freeze.text);
    // The short hold expires.
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.levels("ev-1").await.1 != 0 {
        assert!(Instant::now() < deadline, "the hold never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = caught_up(c, Duration::from_secs(10)).await;
    assert_eq!(status["connected"], true);
    assert!(status["lastError"].is_null());

    let published = read_stream(&nats.url()).await;
    let events = distinct(&published);
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "inventory.received",
            "inventory.reserved",
            "inventory.confirmed",
            "inventory.reserved",
            "inventory.released",
            "inventory.reserved",
            "inventory.frozen",
            "inventory.expired"
        ]
    );
    let reserve = events[1];
    assert_eq!(reserve["specversion"], "1.0");
    assert_eq!(reserve["source"], "inventoryd");
    assert_eq!(reserve["subject"], "ev-1");
    assert_eq!(reserve["datacontenttype"], "application/json");
    assert!(reserve["time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(reserve["data"]["refId"], first.as_str());
    assert_eq!(reserve["data"]["orderId"], "o-1");
    assert_eq!(reserve["data"]["qty"], 2);
    assert_eq!((&reserve["data"]["available"], &reserve["data"]["reserved"]), (&json!(8), &json!(2)));
    assert!(reserve["traceparent"].as_str().unwrap().starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
    assert_eq!(events[2]["data"]["detail"], "pay-1");
    assert_eq!(events[6]["data"]["operator"], "alice");
    assert_eq!(events[7]["data"]["detail"], "TIMEOUT");
    let metrics = c.get("/metrics").await.text;
    assert!(metrics.contains("inventory_event_stream_lag_entries{shard=\"0\"} 0"), "{metrics}");
    assert!(metrics.contains("inventory_events_published_total"), "{metrics}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_with_more_events_than_the_broker_lets_wait_is_published() {
    let nats = PrivateNats::start();
    let server =
        TestServer::start_with(Options { shards: 1, events_nats_url: Some(nats.url()), ..Default::default() }).await;
    let c = &server.client;
    // One journal entry of 10,000 receipts: more events in one publish
    // than acknowledgements may wait at once.
    let items: Vec<Value> = (0..10_000).map(|i| json!({"skuId": format!("bulk-{i}"), "qty": 1})).collect();
    let r = c.post("/api/inventory/receive-batch", json!({"idemKey": "bulk", "items": items})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    caught_up(c, Duration::from_secs(30)).await;
    assert_eq!(distinct(&read_stream(&nats.url()).await).len(), 10_000);
    server.stop().await;
}

/// What the load below did, as acknowledged by the service.
#[derive(Default)]
struct Ledger {
    /// Changes acknowledged (each a txn, so an event).
    changes: AtomicU64,
    failures: AtomicU64,
    /// `(started, took)` of every reserve.
    latencies: std::sync::Mutex<Vec<(Instant, Duration)>>,
}

/// Reserves and then confirms or releases, over `skus`, until `stop`.
async fn load(c: Client, worker: usize, skus: Vec<String>, ledger: Arc<Ledger>, stop: Arc<AtomicBool>) {
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let sku = &skus[(i as usize + worker) % skus.len()];
        let started = Instant::now();
        let key = format!("w{worker}-{i}");
        let body = json!({"orderId": format!("o-{key}"), "skuId": sku, "qty": 1, "idemKey": key, "ttlSeconds": 3600});
        // The server gone (killed by the test) ends the load.
        let Ok(r) = c.try_post("/api/inventory/reserve", body).await else { return };
        ledger.latencies.lock().unwrap().push((started, started.elapsed()));
        if r.status != StatusCode::OK {
            ledger.failures.fetch_add(1, Ordering::Relaxed);
            eprintln!("reserve failed: {}", r.text);
            continue;
        }
        ledger.changes.fetch_add(1, Ordering::Relaxed);
        let id = r.body["reservationId"].as_str().unwrap().to_string();
        let second = if i.is_multiple_of(2) {
            json!({"reservationId": id, "paymentId": "pay", "idemKey": format!("{key}-c")})
        } else {
            json!({"reservationId": id, "reason": "USER_CANCELLED", "idemKey": format!("{key}-r")})
        };
        let path = if i.is_multiple_of(2) { "/api/inventory/confirm" } else { "/api/inventory/release" };
        let Ok(r) = c.try_post(path, second).await else { return };
        if r.status == StatusCode::OK {
            ledger.changes.fetch_add(1, Ordering::Relaxed);
        } else {
            ledger.failures.fetch_add(1, Ordering::Relaxed);
            eprintln!("second step failed: {}", r.text);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_down_for_a_minute_under_load_loses_nothing_and_slows_no_reserve() {
    const BEFORE: Duration = Duration::from_secs(10);
    const OUTAGE: Duration = Duration::from_secs(60);
    let mut nats = PrivateNats::start();
    let server = TestServer::start_with(Options { events_nats_url: Some(nats.url()), ..Default::default() }).await;
    let c = server.client.clone();
    let skus: Vec<String> = (0..16).map(|i| format!("down-{i}")).collect();
    for sku in &skus {
        c.receive(sku, 1_000_000).await;
    }
    let ledger = Arc::new(Ledger::default());
    ledger.changes.fetch_add(skus.len() as u64, Ordering::Relaxed);
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> =
        (0..4).map(|w| tokio::spawn(load(c.clone(), w, skus.clone(), ledger.clone(), stop.clone()))).collect();

    tokio::time::sleep(BEFORE).await;
    nats.stop();
    let down = Instant::now();
    tokio::time::sleep(OUTAGE / 2).await;
    let during = c.get("/api/admin/events").await.body;
    assert!(during["lagEntries"].as_u64().unwrap() > 0, "the lag grows while the broker is down: {during}");
    assert!(!during["lastError"].is_null(), "the status says why: {during}");
    assert_eq!(during["connected"], false);
    let metrics = c.get("/metrics").await.text;
    let lag_seconds: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("inventory_event_stream_lag_seconds{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .fold(0.0, f64::max);
    assert!(lag_seconds >= 10.0, "the oldest unpublished change has waited since the broker went: {lag_seconds}");
    // A snapshot keeps every entry the relay has not published.
    let snapshots = c.post("/api/admin/snapshot", json!({})).await;
    assert_eq!(snapshots.status, StatusCode::OK, "{}", snapshots.text);
    for report in snapshots.body["snapshots"].as_array().unwrap() {
        assert_eq!(report["heldBackBy"], "events", "{report}");
        assert!(report["heldBack"].as_u64().unwrap() > 0, "{report}");
    }
    tokio::time::sleep(OUTAGE - down.elapsed()).await;
    nats.resume();
    let up = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    caught_up(&c, Duration::from_secs(60)).await;

    assert_eq!(ledger.failures.load(Ordering::Relaxed), 0, "no write failed");
    let latencies = ledger.latencies.lock().unwrap().clone();
    let start = down - BEFORE;
    let before = median(latencies.iter().filter(|(t, _)| *t >= start && *t < down).map(|l| l.1).collect());
    let outage = median(latencies.iter().filter(|(t, _)| *t >= down && *t < up).map(|l| l.1).collect());
    println!("reserve median before {before:?}, during the outage {outage:?}");
    assert!(outage <= before * 3 + Duration::from_millis(2), "before {before:?}, during {outage:?}");

    let published = read_stream(&nats.url()).await;
    let events = distinct(&published);
    assert_eq!(events.len() as u64, ledger.changes.load(Ordering::Relaxed), "every change arrived once");
    for (row, versions) in versions_by_row(&events) {
        let expected: Vec<u64> = (1..=versions.len() as u64).collect();
        assert_eq!(versions, expected, "{row:?}: every change, in order");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_while_publishing_loses_no_event() {
    let nats = PrivateNats::start();
    let dir = tempfile::tempdir().unwrap();
    let url = nats.url();
    let args = ["--shards", "2", "--pin-threads", "false", "--events-nats-url", &url];
    let daemon = Daemon::spawn(dir.path(), &args);
    let c = Client::new(&daemon.url);
    let skus: Vec<String> = (0..8).map(|i| format!("k9-{i}")).collect();
    for sku in &skus {
        c.receive(sku, 1_000_000).await;
    }
    let ledger = Arc::new(Ledger::default());
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> =
        (0..4).map(|w| tokio::spawn(load(c.clone(), w, skus.clone(), ledger.clone(), stop.clone()))).collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before_kill = read_stream(&url).await.len();
    assert!(before_kill > 0, "the relay was publishing");
    daemon.signal(libc::SIGKILL);
    let _ = daemon.wait();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }

    let daemon = Daemon::spawn(dir.path(), &args);
    let c = Client::new(&daemon.url);
    caught_up(&c, Duration::from_secs(30)).await;
    let published = read_stream(&url).await;
    let events = distinct(&published);
    // No gap: each row's events carry every version from 1 to the row's
    // version now, once and in order.
    let rows = versions_by_row(&events);
    for sku in &skus {
        let stock = c.get(&format!("/api/inventory/{sku}")).await.body;
        let version = stock["warehouses"][0]["version"].as_u64().unwrap();
        let versions = rows.get(&(sku.clone(), "default".to_string())).cloned().unwrap_or_default();
        assert_eq!(versions, (1..=version).collect::<Vec<_>>(), "{sku}");
    }
    let ids: HashSet<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), events.len());
    assert!(events.len() as u64 >= ledger.changes.load(Ordering::Relaxed), "every acknowledged change is there");
    drop(daemon);
}
