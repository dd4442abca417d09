//! Losing the machine: the bound on what PostgreSQL may lag
//! (`--max-replication-lag-secs`), and the events a restored data dir
//! publishes again.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::events::{caught_up, distinct, read_stream, versions_by_row};
use crate::nats::PrivateNats;
use crate::pg::{url_for, wait_caught_up, PgProxy, TestSchema, PG_ADDR};
use crate::support::{inventoryd, Options, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_refused_while_postgres_lags_past_the_bound_and_resume_when_it_catches_up() {
    let Some(schema) = TestSchema::create("replication_lag").await else { return };
    let proxy = PgProxy::start().await;
    let server = TestServer::start_with(Options {
        shards: 1,
        postgres: Some((proxy.url(), schema.name.clone())),
        max_replication_lag_secs: Some(2),
        ..Default::default()
    })
    .await;
    let c = &server.client;
    c.receive("lag-1", 100).await;
    wait_caught_up(c, Duration::from_secs(20)).await;

    proxy.stop();
    // Acknowledged while PostgreSQL is away: the change waits in the journal.
    let r = c.reserve("o-1", "lag-1", 1, "k-1").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let waited = Instant::now();
    let refused = loop {
        let r = c.reserve("o-2", "lag-1", 1, "k-2").await;
        if r.status != StatusCode::OK {
            break r;
        }
        assert!(waited.elapsed() < Duration::from_secs(10), "writes were never refused");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        (refused.status, refused.code()),
        (StatusCode::SERVICE_UNAVAILABLE, "REPLICATION_LAG"),
        "{}",
        refused.text
    );
    assert!(refused.headers.contains_key("retry-after"));
    assert!(waited.elapsed() >= Duration::from_secs(1), "refused only once the oldest change waited 2 s");
    // A refused write changes nothing; reads go on.
    assert_eq!(c.levels("lag-1").await, (98, 2, 0), "o-1 and, before the bound, o-2");
    let r = c.reserve("o-3", "lag-1", 1, "k-3").await;
    assert_eq!(r.code(), "REPLICATION_LAG");
    assert_eq!(c.levels("lag-1").await, (98, 2, 0));

    proxy.start_again();
    wait_caught_up(c, Duration::from_secs(30)).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = c.reserve("o-3", "lag-1", 1, "k-3").await;
        if r.status == StatusCode::OK {
            break;
        }
        assert_eq!(r.code(), "REPLICATION_LAG", "{}", r.text);
        assert!(Instant::now() < deadline, "writes never resumed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(c.levels("lag-1").await, (97, 3, 0));
    server.stop().await;
    schema.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bound_needs_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let out = inventoryd([
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--max-replication-lag-secs",
        "30",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--postgres-url"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_data_dir_publishes_again_what_the_broker_may_have_missed() {
    let Some(schema) = TestSchema::create("restore_events").await else { return };
    let mut nats = PrivateNats::start();
    let nats_url = nats.url();
    let options = |data_dir: std::path::PathBuf| Options {
        shards: 2,
        data_dir: Some(data_dir),
        postgres: Some((url_for(PG_ADDR), schema.name.clone())),
        events_nats_url: Some(nats_url.clone()),
        ..Default::default()
    };
    let lost = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(options(lost.path().to_path_buf())).await;
    let c = server.client.clone();
    for sku in ["rs-1", "rs-2", "rs-3"] {
        c.receive(sku, 50).await;
    }
    caught_up(&c, Duration::from_secs(10)).await;
    // The broker goes away; changes reach PostgreSQL but not the broker.
    nats.stop();
    for i in 0..20 {
        let r = c.reserve(&format!("o-{i}"), ["rs-1", "rs-2", "rs-3"][i % 3], 1, &format!("k-{i}")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
    wait_caught_up(&c, Duration::from_secs(20)).await;
    let unpublished = c.get("/api/admin/events").await.body["lagEntries"].as_u64().unwrap();
    assert_eq!(unpublished, 20);
    // The machine and its disk are gone.
    server.stop().await;
    drop(lost);

    let fresh = tempfile::tempdir().unwrap();
    let dir = fresh.path().to_str().unwrap().to_string();
    let out = inventoryd([
        "restore",
        "--from-postgres",
        &url_for(PG_ADDR),
        "--postgres-schema",
        &schema.name,
        "--data-dir",
        &dir,
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("20 events to publish again"), "{said}");

    nats.resume();
    let server = TestServer::start_with(options(fresh.path().to_path_buf())).await;
    let c = server.client.clone();
    let r = c.reserve("o-after", "rs-1", 1, "k-after").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let deadline = Instant::now() + Duration::from_secs(20);
    let events = loop {
        let published = read_stream(&nats.url()).await;
        // 3 receipts, 20 reserves, 1 after the restore.
        const EXPECTED: usize = 24;
        let n = distinct(&published).len();
        if n >= EXPECTED {
            break published;
        }
        assert!(Instant::now() < deadline, "only {n} events arrived");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let events = distinct(&events);
    assert_eq!(events.len(), 24, "each change once");
    for (row, versions) in versions_by_row(&events) {
        assert_eq!(versions, (1..=versions.len() as u64).collect::<Vec<_>>(), "{row:?}");
    }
    let status = c.get("/api/admin/events").await.body;
    assert_eq!(status["lagEntries"], 0, "{status}");
    // The restored journal starts after a snapshot: reconciliation rebuilds
    // from it and finds the core, its journal and PostgreSQL agreeing.
    wait_caught_up(&c, Duration::from_secs(20)).await;
    let report = c.post("/api/admin/reconcile", json!({})).await;
    assert_eq!(report.status, StatusCode::OK, "{}", report.text);
    assert_eq!((&report.body["mismatched"], &report.body["coreMismatches"]), (&json!(0), &json!(0)), "{}", report.text);
    assert_eq!(
        json!(status["shards"].as_array().unwrap().iter().map(|s| s["skipped"].as_u64().unwrap()).sum::<u64>()),
        json!(0),
        "the relay starts where the restored journal starts: {status}"
    );
    server.stop().await;
    schema.drop().await;
}
