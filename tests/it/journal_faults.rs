//! A failed journal write is never acknowledged, leaves no trace in memory,
//! and the shard takes writes again once the journal recovers.

use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::support::{Client, Options, TestServer};

async fn eventually_ok(c: &Client, order: &str, sku: &str, key: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = c.reserve(order, sku, 1, key).await;
        if r.status == StatusCode::OK {
            return r.body;
        }
        assert_eq!((r.status, r.code()), (StatusCode::SERVICE_UNAVAILABLE, "JOURNAL_UNAVAILABLE"), "{}", r.text);
        assert!(Instant::now() < deadline, "journal never recovered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_flush_is_not_acknowledged_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let options = || Options { shards: 1, data_dir: Some(dir.path().to_path_buf()), ..Default::default() };
    let server = TestServer::start_with(options()).await;
    let c = server.client.clone();
    c.receive("disk", 5).await;
    let before = c.get("/api/inventory/disk").await.text;

    // The flush fails after the data reached the disk: the worst case.
    server.faults.set_write_through(true);
    server.faults.fail_next_appends(1);
    let r = c.reserve("o-1", "disk", 2, "k-1").await;
    assert_eq!((r.status, r.code()), (StatusCode::SERVICE_UNAVAILABLE, "JOURNAL_UNAVAILABLE"), "{}", r.text);
    assert!(r.headers.contains_key("retry-after"));
    // Memory was rolled back: reads still work and show no hold.
    assert_eq!(c.get("/api/inventory/disk").await.text, before);
    assert_eq!(c.get("/api/orders/o-1/inventory-status").await.body["reservations"], serde_json::json!([]));

    // The shard recovers its journal and takes writes again; a retry with the
    // same key now succeeds.
    let hold = eventually_ok(&c, "o-1", "disk", "k-1").await;
    assert_eq!(c.levels("disk").await, (4, 1, 0));
    server.stop().await;

    // After a restart, the journal holds exactly what was acknowledged.
    let server = TestServer::start_with(options()).await;
    assert_eq!(server.client.levels("disk").await, (4, 1, 0));
    let id = hold["reservationId"].as_str().unwrap();
    assert_eq!(server.client.get(&format!("/api/reservations/{id}")).await.body["qty"], 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_journal_refuses_writes_but_serves_reads() {
    let server = TestServer::start_with(Options { shards: 1, ..Default::default() }).await;
    let c = &server.client;
    c.receive("ssd", 3).await;
    server.faults.set_broken(true);
    for i in 0..3 {
        let r = c.reserve(&format!("o-{i}"), "ssd", 1, &format!("k-{i}")).await;
        assert_eq!((r.status, r.code()), (StatusCode::SERVICE_UNAVAILABLE, "JOURNAL_UNAVAILABLE"));
    }
    assert_eq!(c.levels("ssd").await, (3, 0, 0));
    assert!(server.faults.failures() >= 1);
    server.faults.set_broken(false);
    eventually_ok(c, "o-0", "ssd", "k-0").await;
    assert_eq!(c.levels("ssd").await, (2, 1, 0));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_is_refused_fast_not_queued_forever() {
    // One shard, a tiny queue and a slow disk: most of a burst cannot wait.
    let server =
        TestServer::start_with(Options { shards: 1, queue_capacity: 4, batch_max: 4, ..Default::default() }).await;
    server.client.receive("slow", 1_000).await;
    server.faults.set_delay_ms(1_000);
    let mut tasks = Vec::new();
    for i in 0..64 {
        let c = Client::new(&server.url);
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let r = c.reserve(&format!("o-{i}"), "slow", 1, &format!("k-{i}")).await;
            (r.status, r.code().to_string(), r.headers.contains_key("retry-after"), started.elapsed())
        }));
    }
    let mut refused = 0;
    let mut held = 0;
    for t in tasks {
        let (status, code, retry_after, took) = t.await.unwrap();
        match status {
            StatusCode::OK => held += 1,
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(code, "OVERLOADED");
                assert!(retry_after, "503 without Retry-After");
                // Queued requests wait at least one 1 s flush; a refusal does not wait for one.
                assert!(took < Duration::from_millis(600), "refusal took {took:?}");
                refused += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(refused > 0, "nothing was shed");
    server.faults.set_delay_ms(0);
    assert_eq!(server.client.levels("slow").await, (1_000 - held, held, 0));
    server.stop().await;
}
