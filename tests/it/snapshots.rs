//! Snapshots: restart from snapshot + journal equals the state before,
//! kill -9 while snapshotting leaves a usable snapshot, and truncation never
//! drops an entry PostgreSQL has not applied.

use std::time::Duration;

use inventory_journal::{Backend, Store};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::pg::{wait_caught_up, PgProxy, TestSchema};
use crate::support::{inventoryctl, Client, Daemon, Options, TestServer};

async fn snapshot(c: &Client) -> Vec<Value> {
    let r = c.post("/api/admin/snapshot", json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.body["snapshots"].as_array().unwrap().clone()
}

/// Everything observable about some SKUs and holds.
async fn state(c: &Client, skus: &[String], holds: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for sku in skus {
        out.push(c.get(&format!("/api/inventory/{sku}")).await.text);
    }
    for id in holds {
        out.push(c.get(&format!("/api/reservations/{id}")).await.text);
    }
    out
}

async fn load(c: &Client, tag: &str, skus: usize) -> (Vec<String>, Vec<String>) {
    let names: Vec<String> = (0..skus).map(|i| format!("{tag}-{i}")).collect();
    let mut holds = Vec::new();
    for (i, sku) in names.iter().enumerate() {
        c.receive(sku, 10).await;
        let r = c.reserve(&format!("{tag}-o{i}"), sku, 2, &format!("{tag}-k{i}")).await;
        let id = r.body["reservationId"].as_str().unwrap().to_string();
        if i % 2 == 0 {
            c.confirm(&id, "p", &format!("{tag}-c{i}")).await;
        }
        holds.push(id);
    }
    (names, holds)
}

fn journal_first_seqs(dir: &std::path::Path) -> Vec<Option<u64>> {
    let store = Store::open(&dir.join("journal"), None, None, 1).unwrap();
    (0..store.shards()).map(|i| store.journal(i).unwrap().first_seq().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_from_snapshot_and_journal_restores_everything() {
    restart_from_snapshot(Backend::Sled).await;
}

/// The file journal truncates whole segments only: this small journal keeps
/// the entries the snapshot covers, and a restart still starts from the
/// snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_from_snapshot_and_an_untruncated_file_journal_restores_everything() {
    restart_from_snapshot(Backend::File).await;
}

async fn restart_from_snapshot(journal: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let options = || Options { data_dir: Some(dir.path().to_path_buf()), journal, ..Default::default() };
    let server = TestServer::start_with(options()).await;
    let c = server.client.clone();
    let (mut skus, mut holds) = load(&c, "before", 20).await;
    let reports = snapshot(&c).await;
    assert_eq!(reports.len(), 2, "{reports:?}");
    let truncated: Vec<u64> = reports.iter().map(|r| r["truncated"].as_u64().unwrap()).collect();
    match journal {
        Backend::Sled => assert!(truncated.iter().all(|n| *n > 0), "{reports:?}"),
        Backend::File => assert!(truncated.iter().all(|n| *n == 0), "one segment each: {reports:?}"),
    }
    // More changes after the snapshot: these come from the journal.
    let (more_skus, more_holds) = load(&c, "after", 10).await;
    c.release(&holds[1], "rel-1").await;
    skus.extend(more_skus);
    holds.extend(more_holds);
    let before = state(&c, &skus, &holds).await;
    server.stop().await;
    let firsts = journal_first_seqs(dir.path());
    match journal {
        Backend::Sled => assert!(firsts.iter().all(|s| s.unwrap_or(0) > 1), "journal was truncated: {firsts:?}"),
        Backend::File => assert!(firsts.iter().all(|s| *s == Some(1)), "{firsts:?}"),
    }

    let server = TestServer::start_with(options()).await;
    let c = &server.client;
    assert_eq!(state(c, &skus, &holds).await, before);
    // Idempotency and id sequences continue across the snapshot.
    let again = c.reserve("before-o3", "before-3", 2, "before-k3").await;
    assert_eq!(again.headers.get("idempotent-replayed").map(|v| v.to_str().unwrap()), Some("true"));
    let fresh =
        c.reserve("new-order", "before-5", 1, "new-key").await.body["reservationId"].as_str().unwrap().to_string();
    assert!(!holds.contains(&fresh));
    // Receipts before the snapshot are still in the audit log.
    server.stop().await;
    let out = inventoryctl(["audit", "verify", "--data-dir", dir.path().to_str().unwrap()]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("30 entries"), "{}", String::from_utf8_lossy(&out.stdout));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_snapshotting_leaves_a_usable_state() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--shards", "2", "--snapshot-every-entries", "0"];
    let daemon = Daemon::spawn(dir.path(), &args);
    let c = Client::new(&daemon.url);
    c.wait_ready().await;
    let (skus, holds) = load(&c, "k", 150).await;
    snapshot(&c).await;
    let mut expected = state(&c, &skus, &holds).await;
    drop(daemon);
    // Kill at different points of a snapshot in progress, then restart.
    for (round, delay_ms) in [0u64, 3, 10, 25, 60].into_iter().enumerate() {
        let daemon = Daemon::spawn(dir.path(), &args);
        let c = Client::new(&daemon.url);
        c.wait_ready().await;
        assert_eq!(state(&c, &skus, &holds).await, expected, "round {round}: state after restart");
        // A change, then a snapshot that the kill interrupts.
        let r = c.release(&holds[round * 2 + 1], &format!("kill-rel-{round}")).await;
        assert_eq!(r.status, StatusCode::OK);
        expected = state(&c, &skus, &holds).await;
        let url = daemon.url.clone();
        let pending = tokio::spawn(async move { Client::new(&url).try_post("/api/admin/snapshot", json!({})).await });
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        daemon.signal(libc::SIGKILL);
        daemon.wait();
        let _ = pending.await;
    }
    let daemon = Daemon::spawn(dir.path(), &args);
    let c = Client::new(&daemon.url);
    c.wait_ready().await;
    assert_eq!(state(&c, &skus, &holds).await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncation_never_drops_what_postgres_has_not_applied() {
    let Some(schema) = TestSchema::create("snaptrunc").await else { return };
    let proxy = PgProxy::start().await;
    let dir = tempfile::tempdir().unwrap();
    let options = || Options {
        data_dir: Some(dir.path().to_path_buf()),
        postgres: Some((proxy.url(), schema.name.clone())),
        ..Default::default()
    };
    let server = TestServer::start_with(options()).await;
    let c = server.client.clone();
    let (first, _) = load(&c, "pg1", 10).await;
    wait_caught_up(&c, Duration::from_secs(20)).await;
    proxy.stop();
    let (second, _) = load(&c, "pg2", 10).await;
    let reports = snapshot(&c).await;
    assert!(reports.iter().any(|r| r["heldBack"].as_u64().unwrap() > 0), "{reports:?}");
    // Even across a restart while PostgreSQL is away.
    server.stop().await;
    let server = TestServer::start_with(options()).await;
    let c = server.client.clone();
    proxy.start_again();
    wait_caught_up(&c, Duration::from_secs(30)).await;
    for sku in first.iter().chain(&second) {
        let (a, r, s) = c.levels(sku).await;
        let row = schema
            .client
            .query_one("SELECT available, reserved, sold FROM inventory WHERE sku_id = $1", &[sku])
            .await
            .unwrap();
        assert_eq!(
            (row.get::<_, i64>(0), row.get::<_, i64>(1), row.get::<_, i64>(2)),
            (a as i64, r as i64, s as i64),
            "{sku}"
        );
    }
    // Now everything is applied, the next snapshot may truncate it all.
    let reports = snapshot(&c).await;
    assert!(reports.iter().all(|r| r["heldBack"] == 0), "{reports:?}");
    server.stop().await;
    schema.drop().await;
}
