//! Metrics move exactly with a known workload; trace context reaches the
//! response and the journal.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use inventory_core::Command;
use inventory_journal::{Journal, SledStore};
use reqwest::StatusCode;
use serde_json::json;

use crate::support::{inventoryctl, Options, TestServer};

/// `series -> value` for every sample line of an exposition.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

async fn scrape(server: &TestServer) -> BTreeMap<String, f64> {
    let r = server.client.get("/metrics").await;
    assert_eq!(r.status, StatusCode::OK);
    samples(&r.text)
}

fn get(m: &BTreeMap<String, f64>, series: &str) -> f64 {
    m.get(series).copied().unwrap_or_else(|| panic!("no series {series} in {m:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_known_workload_exactly() {
    let server = TestServer::start_with(Options { shards: 1, ..Default::default() }).await;
    let c = &server.client;
    c.receive("m-sku", 3).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            c.reserve(&format!("o{i}"), "m-sku", 1, &format!("k{i}")).await.body["reservationId"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(c.reserve("o9", "m-sku", 1, "k9").await.code(), "INSUFFICIENT_STOCK");
    assert_eq!(c.reserve("o0", "m-sku", 1, "k0").await.status, StatusCode::OK); // an idempotent replay
    c.confirm(&ids[0], "p", "c0").await;
    c.release(&ids[1], "r1").await;
    assert_eq!(c.post("/api/inventory/reserve", json!({"qty": 1})).await.status, StatusCode::BAD_REQUEST);

    let m = scrape(&server).await;
    assert_eq!(get(&m, r#"inventory_http_requests_total{endpoint="reserve",code="OK",outcome="ok"}"#), 4.0);
    assert_eq!(
        get(&m, r#"inventory_http_requests_total{endpoint="reserve",code="INSUFFICIENT_STOCK",outcome="rejected"}"#),
        1.0
    );
    assert_eq!(
        get(&m, r#"inventory_http_requests_total{endpoint="reserve",code="INVALID_FIELD",outcome="invalid"}"#),
        1.0
    );
    assert_eq!(get(&m, r#"inventory_http_requests_total{endpoint="confirm",code="OK",outcome="ok"}"#), 1.0);
    assert_eq!(get(&m, r#"inventory_http_request_duration_seconds_count{endpoint="reserve",outcome="ok"}"#), 4.0);
    assert_eq!(get(&m, r#"inventory_reservations_total{event="reserved"}"#), 3.0);
    assert_eq!(get(&m, r#"inventory_reservations_total{event="confirmed"}"#), 1.0);
    assert_eq!(get(&m, r#"inventory_reservations_total{event="released"}"#), 1.0);
    assert_eq!(get(&m, "inventory_idempotent_replays_total"), 1.0);
    assert_eq!(get(&m, "inventory_overload_refusals_total"), 0.0);
    assert_eq!(get(&m, r#"inventory_journal_healthy{shard="0"}"#), 1.0);
    // receive + 3 reserves + confirm + release = 6 journal entries.
    assert_eq!(get(&m, r#"inventory_journal_entries{shard="0"}"#), 6.0);
    assert!(get(&m, "inventory_journal_flush_seconds_count") >= 1.0);
    assert!(get(&m, "inventory_shard_batch_size_count") >= 1.0);
    assert_eq!(get(&m, r#"inventory_shard_queue_depth{shard="0"}"#), 0.0);
    assert_eq!(get(&m, r#"inventory_oversell_rows{shard="0"}"#), 0.0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_is_counted_with_its_delay() {
    let server = TestServer::start_with(Options { shards: 1, ..Default::default() }).await;
    let c = &server.client;
    c.receive("e-sku", 2).await;
    let r = c
        .post(
            "/api/inventory/reserve",
            json!({"orderId": "o", "skuId": "e-sku", "qty": 1, "idemKey": "k", "ttlSeconds": 1}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m = scrape(&server).await;
        if m.get(r#"inventory_reservations_total{event="expired"}"#) == Some(&1.0) {
            assert_eq!(get(&m, "inventory_release_delay_seconds_count"), 1.0);
            // Released within about a second of expireAt.
            assert!(get(&m, "inventory_release_delay_seconds_sum") < 1.0);
            break;
        }
        assert!(Instant::now() < deadline, "expiry never counted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_context_is_returned_and_journaled_with_the_operator() {
    let dir = tempfile::tempdir().unwrap();
    let server =
        TestServer::start_with(Options { shards: 1, data_dir: Some(dir.path().to_path_buf()), ..Default::default() })
            .await;
    server.client.receive("t-sku", 2).await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let r = reqwest::Client::new()
        .post(format!("{}/api/inventory/reserve", server.url))
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .header("x-operator", "checkout-svc")
        .json(&json!({"orderId": "o-t", "skuId": "t-sku", "qty": 1, "idemKey": "t-k"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let parent = r.headers()["traceparent"].to_str().unwrap().to_string();
    let request_id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert!(parent.starts_with(&format!("00-{trace}-")), "{parent}");
    assert!(parent.ends_with(&format!("{request_id}-01")), "{parent} / {request_id}");
    // Without a traceparent a new trace starts.
    let r = server.client.get("/api/inventory/t-sku").await;
    assert!(r.headers["traceparent"].to_str().unwrap().len() == 55);
    server.stop().await;

    let store = SledStore::open(&dir.path().join("journal"), None, 1).unwrap();
    let journal = store.journal(0).unwrap();
    let entries: Vec<_> = journal.read_from(1).unwrap().map(Result::unwrap).collect();
    let reserve = entries.iter().find(|e| matches!(e.command, Command::Reserve(_))).unwrap();
    assert_eq!(format!("{:032x}", reserve.trace_id), trace);
    assert_eq!(reserve.operator, "checkout-svc");
    assert_eq!(entries[0].operator, "anonymous");
}

fn ctl(args: &[&str]) -> (bool, String) {
    let out = inventoryctl(args);
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_are_audited_and_tampering_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let options = || Options { data_dir: Some(dir.path().to_path_buf()), ..Default::default() };
    let server = TestServer::start_with(options()).await;
    for (i, sku) in ["a-1", "a-2", "a-3"].iter().enumerate() {
        server.client.receive(sku, 10 + i as u64).await;
    }
    // Holds are not audited: they are the ordinary flow.
    server.client.reserve("o", "a-1", 1, "k").await;
    server.stop().await;

    let audit = dir.path().join("audit");
    let data_dir = dir.path().to_str().unwrap();
    let (ok, out) = ctl(&["audit", "verify", "--data-dir", data_dir]);
    assert!(ok, "{out}");
    assert!(out.contains("3 entries"), "{out}");

    // A copy with one quantity changed.
    let copy = tempfile::tempdir().unwrap();
    let log = std::fs::read_to_string(audit.join("audit.jsonl")).unwrap();
    let mut lines: Vec<String> = log.lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 3);
    // The tailer writes each shard's receipts in order, the shards in
    // turn: find the receipt of 11 units wherever it landed.
    let at = lines.iter().position(|l| l.contains("\"qty\":11")).expect("the receipt of a-2");
    let tampered = lines[at].replace("\"qty\":11", "\"qty\":111");
    lines[at] = tampered;
    std::fs::write(copy.path().join("audit.jsonl"), lines.join("\n") + "\n").unwrap();
    std::fs::copy(audit.join("audit.head"), copy.path().join("audit.head")).unwrap();
    let (ok, out) = ctl(&["audit", "verify", "--dir", copy.path().to_str().unwrap()]);
    assert!(!ok);
    let line = at + 1;
    assert!(out.contains(&format!("line {line}: entry {line} was altered")), "{out}");

    // Lost audit files are written again from the journal at the next start.
    std::fs::remove_dir_all(&audit).unwrap();
    let server = TestServer::start_with(options()).await;
    server.client.receive("a-4", 1).await;
    server.stop().await;
    let (ok, out) = ctl(&["audit", "verify", "--data-dir", data_dir]);
    assert!(ok, "{out}");
    assert!(out.contains("4 entries"), "{out}");
}
