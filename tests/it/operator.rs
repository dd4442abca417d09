//! Operator controls over HTTP: freeze, adjustments under two-person
//! approval, transfers; their refusals; and that each survives a kill -9.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::{Client, Daemon, Options, TestServer};

async fn freeze(c: &Client, sku: &str, body: Value) -> crate::support::Reply {
    c.post_as("ann", &format!("/api/admin/skus/{sku}/freeze"), body).await
}

async fn unfreeze(c: &Client, sku: &str, body: Value) -> crate::support::Reply {
    c.post_as("ann", &format!("/api/admin/skus/{sku}/unfreeze"), body).await
}

async fn propose(c: &Client, operator: &str, sku: &str, delta: i64, key: &str) -> crate::support::Reply {
    let body = json!({"skuId": sku, "delta": delta, "reason": "cycle count", "idemKey": key});
    c.post_as(operator, "/api/admin/adjustments", body).await
}

async fn approve(c: &Client, operator: &str, id: &str, key: &str) -> crate::support::Reply {
    c.post_as(operator, &format!("/api/admin/adjustments/{id}/approve"), json!({"idemKey": key})).await
}

fn ok(r: &crate::support::Reply) {
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

fn refused(r: &crate::support::Reply, status: StatusCode, code: &str) {
    assert_eq!((r.status, r.code()), (status, code), "{}", r.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_sku_refuses_reserves_and_still_finishes_its_holds() {
    let server = TestServer::start().await;
    let c = &server.client;
    c.receive("ice", 10).await;
    let paid = c.reserve("o1", "ice", 2, "r1").await.body["reservationId"].as_str().unwrap().to_string();
    let cancelled = c.reserve("o2", "ice", 1, "r2").await.body["reservationId"].as_str().unwrap().to_string();

    // Refused first: no operator, no reason, no such SKU. Nothing changes.
    let r = c.post("/api/admin/skus/ice/freeze", json!({"reason": "page", "idemKey": "f0"})).await;
    refused(&r, StatusCode::BAD_REQUEST, "OPERATOR_REQUIRED");
    refused(&freeze(c, "ice", json!({"reason": " ", "idemKey": "f0"})).await, StatusCode::BAD_REQUEST, "INVALID_FIELD");
    refused(
        &freeze(c, "nope", json!({"reason": "page", "idemKey": "f0"})).await,
        StatusCode::NOT_FOUND,
        "SKU_NOT_FOUND",
    );
    assert_eq!(c.get("/api/inventory/ice").await.body["frozen"], false);

    let r = freeze(c, "ice", json!({"reason": "oversell page", "idemKey": "f1"})).await;
    ok(&r);
    assert_eq!((r.body["frozen"].clone(), r.body["warehouses"][0]["frozen"].clone()), (json!(true), json!(true)));
    let again = freeze(c, "ice", json!({"reason": "oversell page", "idemKey": "f1"})).await;
    assert_eq!(again.headers["idempotent-replayed"], "true");

    let r = c.reserve("o3", "ice", 1, "r3").await;
    refused(&r, StatusCode::CONFLICT, "SKU_FROZEN");
    assert_eq!(c.levels("ice").await, (7, 3, 0), "a refused reserve changes nothing");
    ok(&c.confirm(&paid, "pay-1", "c1").await);
    ok(&c.release(&cancelled, "x1").await);
    assert_eq!(c.levels("ice").await, (8, 0, 2));

    ok(&unfreeze(c, "ice", json!({"warehouseId": "default", "reason": "reconciled", "idemKey": "u1"})).await);
    assert_eq!(c.get("/api/inventory/ice").await.body["frozen"], false);
    ok(&c.reserve("o3", "ice", 1, "r3").await);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adjustment_needs_a_second_operator_and_a_write_off_the_stock_to_cover_it() {
    let server = TestServer::start().await;
    let c = &server.client;
    c.receive("tea", 10).await;

    let r = propose(c, "ann", "tea", -3, "p1").await;
    ok(&r);
    let id = r.body["adjustmentId"].as_str().unwrap().to_string();
    assert_eq!((r.body["status"].as_str(), r.body["delta"].as_i64()), (Some("PENDING"), Some(-3)));
    assert_eq!((r.body["proposedBy"].as_str(), r.body["before"]["available"].as_u64()), (Some("ann"), Some(10)));
    assert_eq!(c.levels("tea").await, (10, 0, 0), "nothing changes until approved");

    refused(&approve(c, "ann", &id, "a1").await, StatusCode::FORBIDDEN, "SAME_OPERATOR");
    let r = c.post(&format!("/api/admin/adjustments/{id}/approve"), json!({"idemKey": "a1"})).await;
    refused(&r, StatusCode::BAD_REQUEST, "OPERATOR_REQUIRED");
    assert_eq!(c.get(&format!("/api/admin/adjustments/{id}")).await.body["status"], "PENDING");

    let r = approve(c, "bob", &id, "a2").await;
    ok(&r);
    assert_eq!((r.body["status"].as_str(), r.body["approvedBy"].as_str()), (Some("APPLIED"), Some("bob")));
    assert_eq!((r.body["before"]["available"].as_u64(), r.body["after"]["available"].as_u64()), (Some(10), Some(7)));
    assert_eq!(c.levels("tea").await, (7, 0, 0));
    let replay = approve(c, "bob", &id, "a2").await;
    assert_eq!((replay.status, &replay.text), (r.status, &r.text));
    assert_eq!(replay.headers["idempotent-replayed"], "true");
    refused(&approve(c, "carl", &id, "a3").await, StatusCode::CONFLICT, "ADJUSTMENT_NOT_PENDING");

    // A write-off larger than what is available stays pending.
    c.reserve("o1", "tea", 5, "r1").await;
    let big = propose(c, "ann", "tea", -4, "p2").await.body["adjustmentId"].as_str().unwrap().to_string();
    let r = approve(c, "bob", &big, "a4").await;
    refused(&r, StatusCode::CONFLICT, "INSUFFICIENT_STOCK");
    assert_eq!(r.body["available"], 2);
    let r = c.post_as("bob", &format!("/api/admin/adjustments/{big}/reject"), json!({"idemKey": "j1"})).await;
    refused(&r, StatusCode::BAD_REQUEST, "INVALID_FIELD");
    let body = json!({"reason": "recounted: they are there", "idemKey": "j2"});
    let r = c.post_as("bob", &format!("/api/admin/adjustments/{big}/reject"), body).await;
    ok(&r);
    assert_eq!((r.body["status"].as_str(), r.body["rejectedBy"].as_str()), (Some("REJECTED"), Some("bob")));

    // Lists, by status and SKU.
    let applied = c.get("/api/admin/adjustments?status=APPLIED&skuId=tea").await;
    let ids: Vec<&str> =
        applied.body["adjustments"].as_array().unwrap().iter().map(|a| a["adjustmentId"].as_str().unwrap()).collect();
    assert_eq!(ids, [id.as_str()]);
    assert_eq!(c.get("/api/admin/adjustments?status=PENDING").await.body["adjustments"], json!([]));
    assert_eq!(c.get("/api/admin/adjustments").await.body["adjustments"].as_array().unwrap().len(), 2);

    // Bad input and unknown ids.
    refused(&c.get("/api/admin/adjustments?status=DONE").await, StatusCode::BAD_REQUEST, "INVALID_FIELD");
    refused(&c.get("/api/admin/adjustments?colour=red").await, StatusCode::BAD_REQUEST, "INVALID_FIELD");
    refused(&c.get("/api/admin/adjustments/adj-0-999").await, StatusCode::NOT_FOUND, "ADJUSTMENT_NOT_FOUND");
    refused(&c.get("/api/admin/adjustments/rsv-0-1").await, StatusCode::NOT_FOUND, "ADJUSTMENT_NOT_FOUND");
    refused(&approve(c, "bob", "adj-0-999", "a5").await, StatusCode::NOT_FOUND, "ADJUSTMENT_NOT_FOUND");
    let r = propose(c, "ann", "tea", 0, "p3").await;
    refused(&r, StatusCode::BAD_REQUEST, "INVALID_FIELD");
    assert!(r.text.contains("delta"), "{}", r.text);
    let r = c
        .post_as("ann", "/api/admin/adjustments", json!({"skuId": "tea", "delta": "x", "reason": "r", "idemKey": "p4"}))
        .await;
    refused(&r, StatusCode::BAD_REQUEST, "INVALID_FIELD");
    assert!(r.text.contains("delta"), "{}", r.text);
    refused(&propose(c, "ann", "nope", 1, "p5").await, StatusCode::NOT_FOUND, "SKU_NOT_FOUND");
    assert_eq!(c.levels("tea").await, (2, 5, 0));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_adjustment_expires() {
    let server = TestServer::start_with(Options { adjustment_ttl_secs: Some(1), ..Default::default() }).await;
    let c = &server.client;
    c.receive("jam", 5).await;
    let id = propose(c, "ann", "jam", 2, "p1").await.body["adjustmentId"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.get(&format!("/api/admin/adjustments/{id}")).await.body["status"] != "EXPIRED" {
        assert!(Instant::now() < deadline, "the adjustment never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = approve(c, "bob", &id, "a1").await;
    refused(&r, StatusCode::CONFLICT, "ADJUSTMENT_NOT_PENDING");
    assert_eq!(r.body["status"], "EXPIRED");
    assert_eq!(c.levels("jam").await, (5, 0, 0));
    server.stop().await;
}

async fn stock_row(c: &Client, sku: &str, warehouse: &str) -> Value {
    let stock = c.get(&format!("/api/inventory/{sku}")).await.body;
    stock["warehouses"].as_array().unwrap().iter().find(|w| w["warehouseId"] == warehouse).cloned().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_is_in_transit_until_it_arrives_or_is_cancelled() {
    let server = TestServer::start().await;
    let c = &server.client;
    c.receive("oil", 10).await;
    let body = json!({"skuId": "oil", "fromWarehouseId": "default", "toWarehouseId": "east", "qty": 4,
                      "reason": "rebalance", "idemKey": "t1", "expectedArrivalSeconds": 1});
    let r = c.post_as("ann", "/api/admin/transfers", body).await;
    ok(&r);
    let id = r.body["transferId"].as_str().unwrap().to_string();
    assert_eq!((r.body["status"].as_str(), r.body["overdue"].as_bool()), (Some("IN_TRANSIT"), Some(false)));
    assert_eq!(stock_row(c, "oil", "default").await["available"], 6);
    let east = stock_row(c, "oil", "east").await;
    assert_eq!((east["available"].as_u64(), east["inTransit"].as_u64()), (Some(0), Some(4)));
    assert_eq!(c.get("/api/inventory/oil").await.body["inTransit"], 4);

    // Past its expected arrival it is overdue: listed, and counted.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let overdue = c.get("/api/admin/transfers?status=OVERDUE").await.body;
        let metrics = c.get("/metrics").await.text;
        let counted = metrics.lines().any(|l| l.starts_with("inventory_transfers_overdue{") && l.ends_with(" 1"));
        if overdue["transfers"].as_array().unwrap().len() == 1 && counted {
            assert_eq!(overdue["transfers"][0]["transferId"], id.as_str());
            break;
        }
        assert!(Instant::now() < deadline, "never overdue: {overdue}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let r = c.post_as("bob", &format!("/api/admin/transfers/{id}/arrive"), json!({"idemKey": "t2"})).await;
    ok(&r);
    assert_eq!((r.body["status"].as_str(), r.body["finishedBy"].as_str()), (Some("ARRIVED"), Some("bob")));
    let east = stock_row(c, "oil", "east").await;
    assert_eq!((east["available"].as_u64(), east["inTransit"].as_u64()), (Some(4), Some(0)));
    let body = json!({"reason": "too late", "idemKey": "t3"});
    let r = c.post_as("bob", &format!("/api/admin/transfers/{id}/cancel"), body).await;
    refused(&r, StatusCode::CONFLICT, "TRANSFER_NOT_IN_TRANSIT");

    // A cancelled transfer's units go back where they left.
    let body = json!({"skuId": "oil", "fromWarehouseId": "east", "toWarehouseId": "west", "qty": 3,
                      "reason": "rebalance", "idemKey": "t4"});
    let back = c.post_as("ann", "/api/admin/transfers", body).await.body["transferId"].as_str().unwrap().to_string();
    let r = c
        .post_as(
            "ann",
            &format!("/api/admin/transfers/{back}/cancel"),
            json!({"reason": "truck broke down", "idemKey": "t5"}),
        )
        .await;
    ok(&r);
    assert_eq!(
        (r.body["status"].as_str(), r.body["cancelReason"].as_str()),
        (Some("CANCELLED"), Some("truck broke down"))
    );
    assert_eq!(stock_row(c, "oil", "east").await["available"], 4);
    assert_eq!(stock_row(c, "oil", "west").await["inTransit"], 0);
    assert_eq!(c.levels("oil").await, (10, 0, 0), "transfers neither make nor lose units");

    // Refusals change nothing.
    let bad = [
        (
            json!({"skuId": "oil", "fromWarehouseId": "east", "toWarehouseId": "east", "qty": 1, "reason": "r", "idemKey": "b1"}),
            StatusCode::BAD_REQUEST,
            "SAME_WAREHOUSE",
        ),
        (
            json!({"skuId": "oil", "fromWarehouseId": "east", "toWarehouseId": "west", "qty": 5, "reason": "r", "idemKey": "b2"}),
            StatusCode::CONFLICT,
            "INSUFFICIENT_STOCK",
        ),
        (
            json!({"skuId": "oil", "fromWarehouseId": "north", "toWarehouseId": "west", "qty": 1, "reason": "r", "idemKey": "b3"}),
            StatusCode::NOT_FOUND,
            "SKU_NOT_FOUND",
        ),
        (
            json!({"skuId": "oil", "fromWarehouseId": "east", "toWarehouseId": "west", "qty": 0, "reason": "r", "idemKey": "b4"}),
            StatusCode::BAD_REQUEST,
            "INVALID_FIELD",
        ),
        (
            json!({"skuId": "oil", "fromWarehouseId": "east", "qty": 1, "reason": "r", "idemKey": "b5"}),
            StatusCode::BAD_REQUEST,
            "INVALID_FIELD",
        ),
        (
            json!({"skuId": "oil", "fromWarehouseId": "east", "toWarehouseId": "west", "qty": 1, "reason": "r", "idemKey": "b6", "expectedArrivalSeconds": 0}),
            StatusCode::BAD_REQUEST,
            "INVALID_FIELD",
        ),
    ];
    for (body, status, code) in bad {
        refused(&c.post_as("ann", "/api/admin/transfers", body).await, status, code);
    }
    let r = c.post_as("ann", "/api/admin/transfers/trf-1-77/arrive", json!({"idemKey": "b7"})).await;
    refused(&r, StatusCode::NOT_FOUND, "TRANSFER_NOT_FOUND");
    assert_eq!(c.levels("oil").await, (10, 0, 0));
    let all = c.get("/api/admin/transfers?skuId=oil").await.body;
    assert_eq!(all["transfers"].as_array().unwrap().len(), 2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_operator_action_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::spawn(dir.path(), &["--shards", "2"]);
    let c = Client::new(&daemon.url);
    c.wait_ready().await;
    c.receive("salt", 10).await;
    ok(&freeze(&c, "salt", json!({"reason": "page", "idemKey": "f1"})).await);
    let applied = propose(&c, "ann", "salt", -2, "p1").await.body["adjustmentId"].as_str().unwrap().to_string();
    ok(&approve(&c, "bob", &applied, "a1").await);
    let pending = propose(&c, "ann", "salt", 5, "p2").await.body["adjustmentId"].as_str().unwrap().to_string();
    let body = json!({"skuId": "salt", "fromWarehouseId": "default", "toWarehouseId": "east", "qty": 3,
                      "reason": "rebalance", "idemKey": "t1"});
    let transfer =
        c.post_as("ann", "/api/admin/transfers", body).await.body["transferId"].as_str().unwrap().to_string();
    let before = c.get("/api/inventory/salt").await.body;
    daemon.signal(libc::SIGKILL);
    daemon.wait();

    let daemon = Daemon::spawn(dir.path(), &["--shards", "2"]);
    let c = Client::new(&daemon.url);
    c.wait_ready().await;
    let after = c.get("/api/inventory/salt").await.body;
    assert_eq!(after["warehouses"], before["warehouses"], "rows, frozen and in transit as acknowledged");
    refused(&c.reserve("o1", "salt", 1, "r1").await, StatusCode::CONFLICT, "SKU_FROZEN");
    assert_eq!(c.get(&format!("/api/admin/adjustments/{applied}")).await.body["status"], "APPLIED");
    assert_eq!(c.get(&format!("/api/admin/adjustments/{pending}")).await.body["status"], "PENDING");
    assert_eq!(c.get(&format!("/api/admin/transfers/{transfer}")).await.body["status"], "IN_TRANSIT");
    // Their ids go on from where they were.
    let next = propose(&c, "ann", "salt", 1, "p3").await.body["adjustmentId"].as_str().unwrap().to_string();
    assert_ne!(next, pending);
    ok(&approve(&c, "bob", &pending, "a2").await);
    ok(&c.post_as("bob", &format!("/api/admin/transfers/{transfer}/arrive"), json!({"idemKey": "t2"})).await);
    let east = stock_row(&c, "salt", "east").await;
    assert_eq!((east["available"].as_u64(), east["inTransit"].as_u64()), (Some(3), Some(0)));
    assert_eq!(c.levels("salt").await, (13, 0, 0));
}
