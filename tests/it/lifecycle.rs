//! A hold's life: reserve -> confirm, reserve -> release, reserve -> expire.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::support::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserve_then_confirm_sells_the_units() {
    let server = TestServer::start().await;
    let c = &server.client;
    c.receive("phone", 10).await;
    let r = c.reserve("order-1", "phone", 3, "t1:order-1:reserve").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["status"], "RESERVED");
    let id = r.body["reservationId"].as_str().unwrap().to_string();
    assert!(r.body["expireAt"].as_str().unwrap().ends_with('Z'));
    assert_eq!(c.levels("phone").await, (7, 3, 0));

    let r = c.confirm(&id, "pay-1", "t1:order-1:confirm").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body, json!({"reservationId": id, "status": "CONFIRMED"}));
    assert_eq!(c.levels("phone").await, (7, 0, 3));

    let hold = c.get(&format!("/api/reservations/{id}")).await;
    assert_eq!(hold.body["status"], "CONFIRMED");
    assert_eq!(hold.body["paymentId"], "pay-1");
    assert_eq!(hold.body["orderId"], "order-1");
    // A confirmed hold cannot be released.
    let r = c.release(&id, "t1:order-1:release").await;
    assert_eq!((r.status, r.code()), (StatusCode::CONFLICT, "RESERVATION_CONFIRMED"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserve_then_release_returns_the_units() {
    let server = TestServer::start().await;
    let c = &server.client;
    c.receive("lamp", 5).await;
    let id = c.reserve("order-2", "lamp", 5, "k-res").await.body["reservationId"].as_str().unwrap().to_string();
    assert_eq!(c.levels("lamp").await, (0, 5, 0));
    let r = c.reserve("order-3", "lamp", 1, "k-res-3").await;
    assert_eq!((r.status, r.code()), (StatusCode::CONFLICT, "INSUFFICIENT_STOCK"));

    let r = c.release(&id, "k-rel").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body, json!({"reservationId": id, "status": "RELEASED"}));
    assert_eq!(c.levels("lamp").await, (5, 0, 0));
    let hold = c.get(&format!("/api/reservations/{id}")).await;
    assert_eq!(
        (hold.body["status"].as_str(), hold.body["releaseReason"].as_str()),
        (Some("RELEASED"), Some("USER_CANCELLED"))
    );
    // Releasing again is harmless; confirming a released hold is refused.
    assert_eq!(c.release(&id, "k-rel-2").await.body["status"], "RELEASED");
    assert_eq!(c.levels("lamp").await, (5, 0, 0));
    let r = c.confirm(&id, "pay", "k-conf").await;
    assert_eq!((r.status, r.code()), (StatusCode::CONFLICT, "RESERVATION_RELEASED"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unconfirmed_hold_expires_on_its_own() {
    let server = TestServer::start().await;
    let c = &server.client;
    c.receive("ticket", 4).await;
    let r = c
        .post(
            "/api/inventory/reserve",
            json!({"orderId": "o-exp", "skuId": "ticket", "qty": 3, "idemKey": "k-exp", "ttlSeconds": 1}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let id = r.body["reservationId"].as_str().unwrap().to_string();
    assert_eq!(c.levels("ticket").await, (1, 3, 0));

    // The shard loop releases it within about a second of expireAt.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let hold = c.get(&format!("/api/reservations/{id}")).await;
        if hold.body["status"] == "EXPIRED" {
            assert_eq!(hold.body["releaseReason"], "TIMEOUT");
            break;
        }
        assert!(Instant::now() < deadline, "hold never expired: {}", hold.text);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(c.levels("ticket").await, (4, 0, 0));
    let r = c.confirm(&id, "pay-late", "k-late").await;
    assert_eq!((r.status, r.code()), (StatusCode::CONFLICT, "RESERVATION_EXPIRED"));
    let r = c.release(&id, "k-rel-late").await;
    assert_eq!((r.status, r.body["status"].as_str()), (StatusCode::OK, Some("EXPIRED")));
    assert_eq!(c.levels("ticket").await, (4, 0, 0));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_payment_callback_deducts_once() {
    let server = TestServer::start().await;
    let c = &server.client;
    c.receive("shoe", 10).await;
    let id = c.reserve("o-pay", "shoe", 2, "k-r").await.body["reservationId"].as_str().unwrap().to_string();
    let first = c.confirm(&id, "pay-9", "k-c1").await;
    assert_eq!(first.status, StatusCode::OK);
    // The payment provider calls back again: same key, then a fresh key.
    let same_key = c.confirm(&id, "pay-9", "k-c1").await;
    assert_eq!((same_key.status, &same_key.text), (first.status, &first.text));
    assert_eq!(same_key.headers.get("idempotent-replayed").map(|v| v.to_str().unwrap()), Some("true"));
    let new_key = c.confirm(&id, "pay-9", "k-c2").await;
    assert_eq!((new_key.status, &new_key.text), (first.status, &first.text));
    assert_eq!(c.levels("shoe").await, (8, 0, 2));
    // A different payment for an already-paid hold is flagged, not applied.
    let other = c.confirm(&id, "pay-10", "k-c3").await;
    assert_eq!((other.status, other.code()), (StatusCode::CONFLICT, "PAYMENT_MISMATCH"));
    assert_eq!(c.levels("shoe").await, (8, 0, 2));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_state_survives_a_graceful_restart() {
    let dir = tempfile::tempdir().unwrap();
    let options = || crate::support::Options { data_dir: Some(dir.path().to_path_buf()), ..Default::default() };
    let server = TestServer::start_with(options()).await;
    let c = server.client.clone();
    c.receive("chair", 9).await;
    let a = c.reserve("o-a", "chair", 2, "k-a").await.body["reservationId"].as_str().unwrap().to_string();
    let b = c.reserve("o-b", "chair", 3, "k-b").await.body["reservationId"].as_str().unwrap().to_string();
    c.confirm(&a, "pay-a", "k-ca").await;
    let before = c.get("/api/inventory/chair").await.text;
    server.stop().await;

    let server = TestServer::start_with(options()).await;
    let c = &server.client;
    assert_eq!(c.get("/api/inventory/chair").await.text, before);
    assert_eq!(c.get(&format!("/api/reservations/{b}")).await.body["status"], "RESERVED");
    // Idempotency records survive too: a retry replays, a reuse conflicts.
    let again = c.reserve("o-b", "chair", 3, "k-b").await;
    assert_eq!(again.body["reservationId"].as_str(), Some(b.as_str()));
    assert_eq!(again.headers.get("idempotent-replayed").map(|v| v.to_str().unwrap()), Some("true"));
    assert_eq!(c.reserve("o-c", "chair", 1, "k-b").await.code(), "IDEMPOTENCY_KEY_REUSED");
    // New holds continue the id sequence rather than reusing ids.
    let next = c.reserve("o-d", "chair", 1, "k-d").await.body["reservationId"].as_str().unwrap().to_string();
    assert!(next != a && next != b);
    server.stop().await;
}
