//! Idempotency, one hold per order line, queries and routing across shards.

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{skus_on_different_shards, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_returns_the_identical_status_and_body() {
    let server = TestServer::start().await;
    let c = &server.client;
    let body = json!({"skuId": "pen", "qty": 5, "idemKey": "rcv-pen-1", "ref": "PO-1"});
    let first = c.post("/api/inventory/receive", body.clone()).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.body["available"], 5);
    assert_eq!(first.body["warehouseId"], "default");
    let again = c.post("/api/inventory/receive", body).await;
    assert_eq!((again.status, &again.text), (first.status, &first.text));
    assert_eq!(c.levels("pen").await, (5, 0, 0), "a repeated receive adds nothing");

    let r1 = c.reserve("o1", "pen", 1, "res-1").await;
    c.reserve("o2", "pen", 4, "res-2").await;
    // Even now that stock is gone, the key answers what it answered.
    let r1_again = c.reserve("o1", "pen", 1, "res-1").await;
    assert_eq!((r1_again.status, &r1_again.text), (r1.status, &r1.text));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_key_for_a_different_request_is_rejected() {
    let server = TestServer::start().await;
    let c = &server.client;
    let (near, far) = skus_on_different_shards("cup", server.shards);
    c.receive(&near, 10).await;
    c.receive(&far, 10).await;
    assert_eq!(c.reserve("o1", &near, 1, "shared-key").await.status, StatusCode::OK);
    // Same shard, different payload.
    let r = c.reserve("o1", &near, 2, "shared-key").await;
    assert_eq!((r.status, r.code()), (StatusCode::UNPROCESSABLE_ENTITY, "IDEMPOTENCY_KEY_REUSED"), "{}", r.text);
    // A different SKU on another shard.
    let r = c.reserve("o1", &far, 1, "shared-key").await;
    assert_eq!((r.status, r.code()), (StatusCode::UNPROCESSABLE_ENTITY, "IDEMPOTENCY_KEY_REUSED"), "{}", r.text);
    assert_eq!(c.levels(&near).await, (9, 1, 0));
    assert_eq!(c.levels(&far).await, (10, 0, 0));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_may_come_in_a_header() {
    let server = TestServer::start().await;
    let c = &server.client;
    c.receive("mug", 3).await;
    let http = reqwest::Client::new();
    let send = |key: &'static str| {
        http.post(format!("{}/api/inventory/reserve", server.url))
            .header("Idempotency-Key", key)
            .json(&json!({"orderId": "o-h", "skuId": "mug", "qty": 1}))
            .send()
    };
    let first = send("hdr-1").await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let first = first.text().await.unwrap();
    let again = send("hdr-1").await.unwrap();
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.text().await.unwrap(), first);
    assert_eq!(c.levels("mug").await, (2, 1, 0));
    // Body and header must agree.
    let r = http
        .post(format!("{}/api/inventory/reserve", server.url))
        .header("Idempotency-Key", "hdr-2")
        .json(&json!({"orderId": "o-h2", "skuId": "mug", "qty": 1, "idemKey": "other"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_line_gets_one_hold() {
    let server = TestServer::start().await;
    let c = &server.client;
    c.receive("bag", 10).await;
    let first = c.reserve("o-line", "bag", 2, "line-k1").await;
    let id = first.body["reservationId"].as_str().unwrap().to_string();
    // A client that lost its key retries the same line: it gets the hold back.
    let retry = c.reserve("o-line", "bag", 2, "line-k2").await;
    assert_eq!((retry.status, retry.body["reservationId"].as_str()), (StatusCode::OK, Some(id.as_str())));
    let other = c.reserve("o-line", "bag", 5, "line-k3").await;
    assert_eq!((other.status, other.code()), (StatusCode::CONFLICT, "DUPLICATE_ORDER_LINE"));
    assert_eq!(other.body["reservationId"].as_str(), Some(id.as_str()));
    assert_eq!(c.levels("bag").await, (8, 2, 0));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_status_gathers_holds_from_every_shard() {
    let server = TestServer::start().await;
    let c = &server.client;
    let (a, b) = skus_on_different_shards("toy", server.shards);
    c.receive(&a, 5).await;
    c.receive(&b, 5).await;
    let ra = c.reserve("o-multi", &a, 1, "m-a").await.body["reservationId"].as_str().unwrap().to_string();
    let rb = c.reserve("o-multi", &b, 2, "m-b").await.body["reservationId"].as_str().unwrap().to_string();
    assert_ne!(ra.split('-').nth(1), rb.split('-').nth(1), "holds should sit on different shards");
    c.confirm(&ra, "p", "m-c").await;
    let status = c.get("/api/orders/o-multi/inventory-status").await;
    assert_eq!(status.status, StatusCode::OK);
    let holds = status.body["reservations"].as_array().unwrap();
    let mut seen: Vec<(&str, &str)> =
        holds.iter().map(|h| (h["reservationId"].as_str().unwrap(), h["status"].as_str().unwrap())).collect();
    seen.sort();
    let mut expected = vec![(ra.as_str(), "CONFIRMED"), (rb.as_str(), "RESERVED")];
    expected.sort();
    assert_eq!(seen, expected);
    let none = c.get("/api/orders/nobody/inventory-status").await;
    assert_eq!((none.status, none.body["reservations"].as_array().map(Vec::len)), (StatusCode::OK, Some(0)));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_is_per_warehouse_and_summed() {
    let server = TestServer::start().await;
    let c = &server.client;
    for (wh, qty) in [("east", 4), ("west", 6)] {
        let r = c
            .post(
                "/api/inventory/receive",
                json!({"skuId": "tv", "warehouseId": wh, "qty": qty, "idemKey": format!("rcv-{wh}")}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    let r = c
        .post(
            "/api/inventory/reserve",
            json!({"orderId": "o", "skuId": "tv", "warehouseId": "west", "qty": 5, "idemKey": "k"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // The default warehouse has no row for this SKU.
    let r = c.reserve("o2", "tv", 1, "k2").await;
    assert_eq!((r.status, r.code()), (StatusCode::NOT_FOUND, "SKU_NOT_FOUND"));
    let stock = c.get("/api/inventory/tv").await.body;
    assert_eq!(
        (stock["available"].as_u64(), stock["reserved"].as_u64(), stock["sold"].as_u64()),
        (Some(5), Some(5), Some(0))
    );
    let rows: Vec<_> = stock["warehouses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (w["warehouseId"].as_str().unwrap(), w["available"].as_u64().unwrap(), w["reserved"].as_u64().unwrap())
        })
        .collect();
    assert_eq!(rows, vec![("east", 4, 0), ("west", 1, 5)]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_things_are_not_found() {
    let server = TestServer::start().await;
    let c = &server.client;
    let r = c.get("/api/inventory/no-such-sku").await;
    assert_eq!((r.status, r.code()), (StatusCode::NOT_FOUND, "SKU_NOT_FOUND"));
    let r = c.reserve("o", "no-such-sku", 1, "k").await;
    assert_eq!((r.status, r.code()), (StatusCode::NOT_FOUND, "SKU_NOT_FOUND"));
    for id in ["rsv-0-999", "rsv-1-5", "rsv-999-1"] {
        let r = c.get(&format!("/api/reservations/{id}")).await;
        assert_eq!((r.status, r.code()), (StatusCode::NOT_FOUND, "RESERVATION_NOT_FOUND"), "{id}");
        let r = c.confirm(id, "p", &format!("c-{id}")).await;
        assert_eq!((r.status, r.code()), (StatusCode::NOT_FOUND, "RESERVATION_NOT_FOUND"), "{id}");
    }
    server.stop().await;
}
