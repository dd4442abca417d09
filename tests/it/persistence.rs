//! The PostgreSQL writer against the real local PostgreSQL: rows equal the
//! core's state, exactly once across crashes and outages, retention, and
//! reconciliation catching corrupted rows and writer faults.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use inventory_persistence::{schema, Schema, WriterFaults};
use reqwest::StatusCode;
use serde_json::json;

use crate::pg::{url_for, wait_caught_up, PgProxy, TestSchema, PG_ADDR};
use crate::support::{inventoryctl, inventoryd, Client, Daemon, Options, TestServer};

fn pg_options(schema: &TestSchema, url: String) -> Options {
    Options { postgres: Some((url, schema.name.clone())), ..Default::default() }
}

/// A mixed workload; returns the SKUs it touched.
async fn workload(c: &Client, tag: &str) -> Vec<String> {
    let skus: Vec<String> = (0..6).map(|i| format!("{tag}-sku-{i}")).collect();
    for sku in &skus {
        c.receive(sku, 20).await;
    }
    for (i, sku) in skus.iter().enumerate() {
        for n in 0..4 {
            let order = format!("{tag}-o{i}-{n}");
            let r = c.reserve(&order, sku, 1 + n % 2, &format!("{order}:r")).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text);
            let id = r.body["reservationId"].as_str().unwrap().to_string();
            match n {
                0 | 1 => assert_eq!(
                    c.confirm(&id, &format!("pay-{order}"), &format!("{order}:c")).await.status,
                    StatusCode::OK
                ),
                2 => assert_eq!(c.release(&id, &format!("{order}:x")).await.status, StatusCode::OK),
                _ => {}
            }
        }
    }
    skus
}

/// `(available, reserved, sold)` per SKU, summed over its warehouses.
async fn pg_inventory(schema: &TestSchema) -> BTreeMap<String, (i64, i64, i64)> {
    let rows = schema
        .client
        .query(
            "SELECT sku_id, sum(available)::bigint, sum(reserved)::bigint, sum(sold)::bigint FROM inventory GROUP BY sku_id",
            &[],
        )
        .await
        .unwrap();
    rows.into_iter().map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3)))).collect()
}

async fn assert_pg_matches_core(c: &Client, schema: &TestSchema, skus: &[String]) {
    let pg = pg_inventory(schema).await;
    for sku in skus {
        let (a, r, s) = c.levels(sku).await;
        assert_eq!(pg.get(sku), Some(&(a as i64, r as i64, s as i64)), "{sku}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_equal_the_core_after_a_mixed_workload() {
    let Some(schema) = TestSchema::create("mixed").await else { return };
    let server = TestServer::start_with(pg_options(&schema, url_for(PG_ADDR))).await;
    let c = &server.client;
    let skus = workload(c, "mx").await;
    // One hold left to expire.
    c.receive("mx-exp", 1).await;
    let r = c
        .post(
            "/api/inventory/reserve",
            json!({"orderId": "mx-e", "skuId": "mx-exp", "qty": 1, "idemKey": "mx-e", "ttlSeconds": 1}),
        )
        .await;
    let expiring = r.body["reservationId"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    let status = wait_caught_up(c, Duration::from_secs(20)).await;
    assert_eq!(status["enabled"], true);

    assert_pg_matches_core(c, &schema, &skus).await;
    // Holds: 24 from the workload plus the expired one, each with the core's status.
    let holds = schema.client.query("SELECT reservation_id, status FROM reservation", &[]).await.unwrap();
    assert_eq!(holds.len(), 25);
    for row in &holds {
        let id: String = row.get(0);
        let core = c.get(&format!("/api/reservations/{id}")).await.body["status"].as_str().unwrap().to_string();
        assert_eq!(row.get::<_, String>(1), core, "{id}");
    }
    let expired: String = schema
        .client
        .query_one("SELECT status FROM reservation WHERE reservation_id = $1", &[&expiring])
        .await
        .unwrap()
        .get(0);
    assert_eq!(expired, "EXPIRED");
    // One txn per counter change, each txn id unique.
    // 7 receipts + 25 reserves + 12 confirms + 6 releases + 1 expiry.
    assert_eq!(schema.count("SELECT count(*) FROM inventory_txn").await, 51);
    assert_eq!(schema.count("SELECT count(DISTINCT txn_id) FROM inventory_txn").await, 51);
    assert_eq!(schema.count("SELECT count(*) FROM inventory_txn WHERE type = 'RESERVE'").await, 25);
    // The expiry's txn carries the hold, the reason and the counters after it.
    let expiry = schema
        .client
        .query_one(
            "SELECT sku_id, qty, detail, after_qty, after_reserved, after_sold FROM inventory_txn
              WHERE type = 'RELEASE' AND ref_id = $1",
            &[&expiring],
        )
        .await
        .unwrap();
    assert_eq!(expiry.get::<_, String>(0), "mx-exp");
    assert_eq!(expiry.get::<_, i64>(1), 1);
    assert_eq!(expiry.get::<_, String>(2), "TIMEOUT");
    assert_eq!((expiry.get::<_, i64>(3), expiry.get::<_, i64>(4), expiry.get::<_, i64>(5)), (1, 0, 0));
    let checkpoint: i64 = schema.count("SELECT sum(seq)::bigint FROM writer_checkpoint").await;
    let durable: u64 = status["shards"].as_array().unwrap().iter().map(|s| s["durableSeq"].as_u64().unwrap()).sum();
    assert_eq!(checkpoint as u64, durable);
    server.stop().await;
    schema.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_during_load_is_caught_up_exactly_once() {
    let Some(schema) = TestSchema::create("outage").await else { return };
    let proxy = PgProxy::start().await;
    let server = TestServer::start_with(Options { postgres_batch_max: 8, ..pg_options(&schema, proxy.url()) }).await;
    let c = &server.client;
    let first = workload(c, "ou1").await;
    wait_caught_up(c, Duration::from_secs(20)).await;
    // PostgreSQL goes away mid-load: the service keeps serving.
    proxy.stop();
    let second = workload(c, "ou2").await;
    let lagging = c.get("/api/admin/persistence").await.body;
    assert!(lagging["shards"].as_array().unwrap().iter().any(|s| s["lagRecords"].as_u64().unwrap() > 0), "{lagging}");
    let metrics = c.get("/metrics").await.text;
    assert!(metrics.contains("inventory_persistence_lag_records"), "lag is exported");
    proxy.start_again();
    wait_caught_up(c, Duration::from_secs(30)).await;
    assert_pg_matches_core(c, &schema, &[first, second].concat()).await;
    // Exactly once: as many txn rows as changes, no more (txn_id is a key).
    assert_eq!(schema.count("SELECT count(*) FROM inventory_txn").await, 2 * (6 + 24 + 12 + 6));
    server.stop().await;
    schema.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_service_mid_batch_lands_every_entry_once() {
    let Some(schema) = TestSchema::create("kill").await else { return };
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--shards",
        "2",
        "--postgres-url",
        &url_for(PG_ADDR),
        "--postgres-schema",
        &schema.name,
        "--postgres-batch-max",
        "4",
    ];
    let daemon = Daemon::spawn(dir.path(), &args);
    let c = Client::new(&daemon.url);
    c.wait_ready().await;
    let mut tasks = Vec::new();
    for t in 0..8 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0.. {
                let sku = format!("k-{t}-{n}");
                let Ok(r) = c
                    .try_post(
                        "/api/inventory/receive",
                        json!({"skuId": sku, "qty": 5, "idemKey": format!("{sku}:rcv")}),
                    )
                    .await
                else {
                    break;
                };
                if r.status != StatusCode::OK {
                    break;
                }
                if c.try_post(
                    "/api/inventory/reserve",
                    json!({"orderId": format!("o-{sku}"), "skuId": sku, "qty": 2, "idemKey": format!("{sku}:r")}),
                )
                .await
                .is_err()
                {
                    break;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    daemon.signal(libc::SIGKILL);
    daemon.wait();
    for t in tasks {
        let _ = t.await;
    }
    let daemon = Daemon::spawn(dir.path(), &args);
    let c = Client::new(&daemon.url);
    c.wait_ready().await;
    let status = wait_caught_up(&c, Duration::from_secs(30)).await;
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait().success());
    // Every journaled change is in PostgreSQL exactly once.
    let store = inventory_journal::SledStore::open(&dir.path().join("journal"), None, 1).unwrap();
    let mut txns = 0;
    for shard in 0..store.shards() {
        use inventory_journal::Journal;
        for entry in store.journal(shard).unwrap().read_from(1).unwrap() {
            txns += entry.unwrap().txns.len() as i64;
        }
    }
    assert!(txns > 20, "too little load: {txns}");
    assert_eq!(schema.count("SELECT count(*) FROM inventory_txn").await, txns);
    assert_eq!(schema.count("SELECT count(DISTINCT txn_id) FROM inventory_txn").await, txns);
    let durable: u64 = status["shards"].as_array().unwrap().iter().map(|s| s["durableSeq"].as_u64().unwrap()).sum();
    assert_eq!(schema.count("SELECT sum(seq)::bigint FROM writer_checkpoint").await as u64, durable);
    schema.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_past_retention_are_dropped() {
    let Some(test) = TestSchema::create("retention").await else { return };
    let server = TestServer::start_with(pg_options(&test, url_for(PG_ADDR))).await;
    workload(&server.client, "rt").await;
    wait_caught_up(&server.client, Duration::from_secs(20)).await;
    server.stop().await;
    let name = Schema::new(&test.name).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    // Within the window nothing goes; two days on, today's partitions do.
    assert!(schema::drop_expired(&test.client, &name, "reservation", now, 48 * 3_600_000).await.unwrap().is_empty());
    let dropped = schema::drop_expired(&test.client, &name, "reservation", now + 3 * schema::DAY_MS, 48 * 3_600_000)
        .await
        .unwrap();
    assert_eq!(dropped.len(), 1, "{dropped:?}");
    assert_eq!(test.count("SELECT count(*) FROM reservation").await, 0);
    assert!(test.count("SELECT count(*) FROM inventory_txn").await > 0, "txn history has its own retention");
    test.drop().await;
}

async fn reconcile(c: &Client, repair: bool) -> serde_json::Value {
    let r = c.post("/api/admin/reconcile", json!({ "repair": repair })).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_finds_and_repairs_a_corrupted_row() {
    let Some(schema) = TestSchema::create("recon").await else { return };
    let server = TestServer::start_with(pg_options(&schema, url_for(PG_ADDR))).await;
    let c = &server.client;
    let skus = workload(c, "rc").await;
    wait_caught_up(c, Duration::from_secs(20)).await;
    let clean = reconcile(c, false).await;
    assert_eq!((clean["checked"].as_u64(), clean["mismatched"].as_u64()), (Some(6), Some(0)), "{clean}");
    assert_eq!(clean["postgres"]["historyBroken"], 0, "{clean}");

    schema.client.execute("UPDATE inventory SET sold = sold + 5 WHERE sku_id = $1", &[&skus[2]]).await.unwrap();
    let found = reconcile(c, false).await;
    assert_eq!(found["mismatched"], 1, "{found}");
    assert_eq!(found["details"][0]["skuId"], skus[2]);
    assert_eq!(found["repaired"], 0);
    let fixed = reconcile(c, true).await;
    assert_eq!((fixed["mismatched"].as_u64(), fixed["repaired"].as_u64()), (Some(1), Some(1)), "{fixed}");
    assert_pg_matches_core(c, &schema, &skus).await;
    let audit = schema
        .client
        .query_one("SELECT sku_id, reason, before->>'sold', after->>'sold' FROM reconcile_audit", &[])
        .await
        .unwrap();
    assert_eq!((audit.get::<_, String>(0), audit.get::<_, String>(1)), (skus[2].clone(), "AUTO_RECONCILE".to_string()));
    assert_ne!(audit.get::<_, String>(2), audit.get::<_, String>(3), "before and after images differ");
    assert_eq!(reconcile(c, false).await["mismatched"], 0);
    // The same from the command line.
    let out = inventoryctl(["reconcile", "--url", &server.url]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("\"mismatched\": 0"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    server.stop().await;
    schema.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_catches_a_skipped_and_a_stale_reapplied_batch() {
    let Some(schema) = TestSchema::create("faults").await else { return };
    let faults = Arc::new(WriterFaults::default());
    let options = Options {
        shards: 1,
        postgres_batch_max: 1,
        writer_faults: faults.clone(),
        ..pg_options(&schema, url_for(PG_ADDR))
    };
    let server = TestServer::start_with(options).await;
    let c = &server.client;
    c.receive("f-a", 10).await;
    c.receive("f-b", 10).await;
    wait_caught_up(c, Duration::from_secs(20)).await;

    // A batch is skipped: the checkpoint moves on, the rows never land.
    faults.skip_next_batch.store(true, Ordering::SeqCst);
    c.reserve("f-o1", "f-a", 3, "f-k1").await;
    wait_caught_up(c, Duration::from_secs(20)).await;
    let report = reconcile(c, false).await;
    assert_eq!(report["postgres"]["mismatched"], 1, "{report}");
    assert_eq!(report["postgres"]["historyBroken"], 1, "{report}");
    assert_eq!(reconcile(c, true).await["repaired"], 1);

    // A stale batch is applied again after a newer one: f-b goes backwards.
    c.reserve("f-o2", "f-b", 2, "f-k2").await;
    wait_caught_up(c, Duration::from_secs(20)).await;
    faults.reapply_previous_batch.store(true, Ordering::SeqCst);
    c.reserve("f-o3", "f-b", 4, "f-k3").await;
    wait_caught_up(c, Duration::from_secs(20)).await;
    let report = reconcile(c, true).await;
    assert_eq!(report["postgres"]["mismatched"], 1, "{report}");
    let rows: Vec<_> = report["details"].as_array().unwrap().iter().filter(|d| d["side"] == "postgres").collect();
    assert_eq!(rows.len(), 1, "{report}");
    assert_eq!(rows[0]["skuId"], "f-b", "{report}");
    assert_eq!(pg_inventory(&schema).await.get("f-b"), Some(&(4, 6, 0)));
    server.stop().await;
    schema.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_from_postgres_then_serve() {
    let Some(schema) = TestSchema::create("restore").await else { return };
    let server = TestServer::start_with(pg_options(&schema, url_for(PG_ADDR))).await;
    let c = server.client.clone();
    let skus = workload(&c, "rs").await;
    let held = c.reserve("rs-open", &skus[0], 1, "rs-open-k").await.body["reservationId"].as_str().unwrap().to_string();
    // Operator state: a frozen row, an applied and a pending adjustment, a
    // transfer arrived and one in transit.
    let post = |who: &'static str, path: String, body: serde_json::Value| {
        let c = c.clone();
        async move {
            let r = c.post_as(who, &path, body).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text);
            r.body
        }
    };
    post("ann", format!("/api/admin/skus/{}/freeze", skus[2]), json!({"reason": "r", "idemKey": "rs-f"})).await;
    let adjust = json!({"skuId": skus[3], "delta": -3, "reason": "r", "idemKey": "rs-p1"});
    let applied =
        post("ann", "/api/admin/adjustments".into(), adjust).await["adjustmentId"].as_str().unwrap().to_string();
    post("bob", format!("/api/admin/adjustments/{applied}/approve"), json!({"idemKey": "rs-a1"})).await;
    let adjust = json!({"skuId": skus[3], "delta": 2, "reason": "r", "idemKey": "rs-p2"});
    let pending =
        post("ann", "/api/admin/adjustments".into(), adjust).await["adjustmentId"].as_str().unwrap().to_string();
    let move_ = |key: &str| json!({"skuId": skus[4], "fromWarehouseId": "default", "toWarehouseId": "east", "qty": 2, "reason": "r", "idemKey": key});
    let arrived =
        post("ann", "/api/admin/transfers".into(), move_("rs-t1")).await["transferId"].as_str().unwrap().to_string();
    post("bob", format!("/api/admin/transfers/{arrived}/arrive"), json!({"idemKey": "rs-t2"})).await;
    let moving =
        post("ann", "/api/admin/transfers".into(), move_("rs-t3")).await["transferId"].as_str().unwrap().to_string();
    let operator_paths = [
        format!("/api/admin/adjustments/{applied}"),
        format!("/api/admin/adjustments/{pending}"),
        format!("/api/admin/transfers/{arrived}"),
        format!("/api/admin/transfers/{moving}"),
    ];
    wait_caught_up(&c, Duration::from_secs(20)).await;
    let mut operator_before = Vec::new();
    for path in &operator_paths {
        operator_before.push(c.get(path).await.body);
    }
    let mut before = Vec::new();
    for sku in &skus {
        before.push(c.get(&format!("/api/inventory/{sku}")).await.text);
    }
    let hold_before = c.get(&format!("/api/reservations/{held}")).await.text;
    server.stop().await; // the machine and its disk are gone

    let fresh = tempfile::tempdir().unwrap();
    let restore = |data_dir: &std::path::Path| {
        let (url, dir) = (url_for(PG_ADDR), data_dir.to_str().unwrap().to_string());
        inventoryd(["restore", "--from-postgres", &url, "--postgres-schema", &schema.name, "--data-dir", &dir])
    };
    let out = restore(fresh.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("restored 7 rows and 25 holds"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // A restored data dir holds a snapshot and an empty journal: the service
    // starts on it, and stops cleanly before anything new was written.
    let mut daemon = Daemon::spawn(fresh.path(), &[]);
    Client::new(&daemon.url).wait_ready().await;
    daemon.signal(libc::SIGTERM);
    let status = daemon.wait_for(Duration::from_secs(20));
    assert!(status.is_some_and(|s| s.success()), "a freshly restored service did not stop on SIGTERM: {status:?}");

    let server = TestServer::start_with(Options {
        data_dir: Some(fresh.path().to_path_buf()),
        ..pg_options(&schema, url_for(PG_ADDR))
    })
    .await;
    let c = server.client.clone();
    for (sku, text) in skus.iter().zip(&before) {
        assert_eq!(&c.get(&format!("/api/inventory/{sku}")).await.text, text, "{sku}");
    }
    assert_eq!(c.get(&format!("/api/reservations/{held}")).await.text, hold_before);
    for (path, was) in operator_paths.iter().zip(&operator_before) {
        let mut now = c.get(path).await.body;
        // Judged at the time of asking.
        if let (Some(now), Some(was)) = (now.get_mut("overdue"), was.get("overdue")) {
            *now = was.clone();
        }
        assert_eq!(&now, was, "{path}");
    }
    assert_eq!(c.reserve("rs-frozen", &skus[2], 1, "rs-frozen-k").await.code(), "SKU_FROZEN");
    let r = c.post_as("bob", &format!("/api/admin/adjustments/{pending}/approve"), json!({"idemKey": "rs-a2"})).await;
    assert_eq!(r.body["status"], "APPLIED", "{}", r.text);
    let r = c.post_as("bob", &format!("/api/admin/transfers/{moving}/arrive"), json!({"idemKey": "rs-t4"})).await;
    assert_eq!(r.body["status"], "ARRIVED", "{}", r.text);
    // It serves: the open hold confirms, new holds get new ids, and the
    // writer continues from its checkpoint without re-applying anything.
    assert_eq!(c.confirm(&held, "pay-after", "rs-after-c").await.status, StatusCode::OK);
    let new = c.reserve("rs-new", &skus[1], 1, "rs-new-k").await.body["reservationId"].as_str().unwrap().to_string();
    assert_eq!(schema.count(&format!("SELECT count(*) FROM reservation WHERE reservation_id = '{new}'")).await, 0);
    wait_caught_up(&c, Duration::from_secs(20)).await;
    assert_eq!(schema.count(&format!("SELECT count(*) FROM reservation WHERE reservation_id = '{new}'")).await, 1);
    assert_eq!(schema.count("SELECT count(*) - count(DISTINCT txn_id) FROM inventory_txn").await, 0);
    assert_pg_matches_core(&c, &schema, &skus).await;
    // Restoring over an existing journal is refused.
    let again = restore(fresh.path());
    assert!(!again.status.success());
    server.stop().await;
    schema.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_actions_land_in_postgres_and_the_audit_log() {
    let Some(schema) = TestSchema::create("operator").await else { return };
    let dir = tempfile::tempdir().unwrap();
    let options = Options { data_dir: Some(dir.path().to_path_buf()), ..pg_options(&schema, url_for(PG_ADDR)) };
    let server = TestServer::start_with(options).await;
    let c = &server.client;
    c.receive("op-1", 10).await;
    let ok = |r: crate::support::Reply| {
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        r.body
    };
    ok(c.post_as("ann", "/api/admin/skus/op-1/freeze", json!({"reason": "oversell page", "idemKey": "f1"})).await);
    let body = json!({"skuId": "op-1", "delta": -2, "reason": "damaged", "idemKey": "p1"});
    let adj = ok(c.post_as("ann", "/api/admin/adjustments", body).await)["adjustmentId"].as_str().unwrap().to_string();
    ok(c.post_as("bob", &format!("/api/admin/adjustments/{adj}/approve"), json!({"idemKey": "a1"})).await);
    let body = json!({"skuId": "op-1", "fromWarehouseId": "default", "toWarehouseId": "east", "qty": 3,
                      "reason": "rebalance", "idemKey": "t1"});
    let trf = ok(c.post_as("ann", "/api/admin/transfers", body).await)["transferId"].as_str().unwrap().to_string();
    wait_caught_up(c, Duration::from_secs(20)).await;

    // The rows, the records, the history and the events.
    let row = |wh: &'static str| {
        let client = &schema.client;
        async move {
            client
                .query_one(
                    "SELECT available, frozen, in_transit FROM inventory WHERE sku_id = 'op-1' AND warehouse_id = $1",
                    &[&wh],
                )
                .await
                .unwrap()
        }
    };
    let d = row("default").await;
    assert_eq!((d.get::<_, i64>(0), d.get::<_, bool>(1), d.get::<_, i64>(2)), (5, true, 0));
    let e = row("east").await;
    assert_eq!((e.get::<_, i64>(0), e.get::<_, bool>(1), e.get::<_, i64>(2)), (0, false, 3));
    let a = schema
        .client
        .query_one("SELECT status, delta, proposed_by, decided_by, after_levels FROM inventory_adjustment WHERE adjustment_id = $1", &[&adj])
        .await
        .unwrap();
    assert_eq!((a.get::<_, String>(0), a.get::<_, i64>(1)), ("APPLIED".to_string(), -2));
    assert_eq!((a.get::<_, String>(2), a.get::<_, String>(3)), ("ann".to_string(), "bob".to_string()));
    assert_eq!(a.get::<_, Vec<i64>>(4), vec![8, 0, 0]);
    let t = schema
        .client
        .query_one("SELECT status, from_warehouse_id, to_warehouse_id, qty, created_by FROM inventory_transfer WHERE transfer_id = $1", &[&trf])
        .await
        .unwrap();
    assert_eq!(
        (
            t.get::<_, String>(0),
            t.get::<_, String>(1),
            t.get::<_, String>(2),
            t.get::<_, i64>(3),
            t.get::<_, String>(4)
        ),
        ("IN_TRANSIT".into(), "default".into(), "east".into(), 3, "ann".into())
    );
    let kinds: Vec<String> = schema
        .client
        .query("SELECT type FROM inventory_txn WHERE sku_id = 'op-1' ORDER BY txn_id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(kinds, ["RECEIVE", "FREEZE", "ADJUST_PROPOSED", "ADJUST", "TRANSFER_OUT", "TRANSFER_INCOMING"]);
    let adjusted = schema.count("SELECT count(*) FROM inventory_txn WHERE type = 'ADJUST'").await;
    assert_eq!(adjusted, 1);
    // The transfer arrives; the repair of a corrupted row is journaled too.
    ok(c.post_as("bob", &format!("/api/admin/transfers/{trf}/arrive"), json!({"idemKey": "t2"})).await);
    wait_caught_up(c, Duration::from_secs(20)).await;
    let e = row("east").await;
    assert_eq!((e.get::<_, i64>(0), e.get::<_, i64>(2)), (3, 0));
    schema
        .client
        .execute("UPDATE inventory SET available = 99 WHERE sku_id = 'op-1' AND warehouse_id = 'default'", &[])
        .await
        .unwrap();
    let r = c.post_as("carl", "/api/admin/reconcile", json!({"repair": true})).await;
    assert_eq!(r.body["repaired"], 1, "{}", r.text);
    wait_caught_up(c, Duration::from_secs(20)).await;
    let history = reconcile(c, false).await;
    assert_eq!(
        (history["mismatched"].as_u64(), history["postgres"]["historyBroken"].as_u64()),
        (Some(0), Some(0)),
        "{history}"
    );
    let repairs = schema.count("SELECT count(*) FROM inventory_txn WHERE type = 'REPAIR' AND operator = 'carl'").await;
    assert_eq!(repairs, 1);
    server.stop().await;

    // Every operator action is in the audit log, with its operators, and
    // the chain verifies.
    let data_dir = dir.path().to_str().unwrap();
    let out = inventoryctl(["audit", "verify", "--data-dir", data_dir]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let out = inventoryctl(["audit", "list", "--data-dir", data_dir, "--sku", "op-1", "--format", "jsonl"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let entries: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let actions: Vec<&str> = entries.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(
        actions,
        [
            "RECEIVE",
            "FREEZE",
            "ADJUSTMENT_PROPOSED",
            "ADJUSTMENT_APPLIED",
            "TRANSFER_DISPATCHED",
            "TRANSFER_ARRIVED",
            "RECONCILE_REPAIR"
        ]
    );
    let applied = &entries[3];
    assert_eq!((applied["operator"].as_str(), applied["proposedBy"].as_str()), (Some("bob"), Some("ann")));
    assert_eq!((applied["delta"].as_i64(), applied["reason"].as_str()), (Some(-2), Some("damaged")));
    assert_eq!((applied["before"]["available"].as_u64(), applied["after"]["available"].as_u64()), (Some(10), Some(8)));
    assert_eq!(entries[4]["toWarehouseId"], "east");
    assert!(entries[6]["reason"].as_str().unwrap().contains("postgres had available=99"), "{}", entries[6]);
    let table = inventoryctl(["audit", "list", "--data-dir", data_dir, "--sku", "op-1"]);
    assert!(String::from_utf8_lossy(&table.stdout).contains("7 entries"), "{}", String::from_utf8_lossy(&table.stdout));
    schema.drop().await;
}
