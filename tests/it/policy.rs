//! Sale policies over HTTP: per-buyer limits, sale windows and channel
//! quotas on single-line reserves, set and removed by operators, kept
//! across a restart, exact under concurrency.

use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::{unique, Client, Options, Reply, TestServer};

async fn put_policy(client: &Client, sku: &str, body: Value) -> Reply {
    let path = format!("/api/admin/skus/{sku}/policy");
    client.send("PUT", &path, &[("x-operator", "ann")], Some(&body)).await
}

async fn delete_policy(client: &Client, sku: &str, key: &str) -> Reply {
    let path = format!("/api/admin/skus/{sku}/policy");
    client.send("DELETE", &path, &[("x-operator", "ann"), ("idempotency-key", key)], None).await
}

async fn reserve(client: &Client, sku: &str, qty: u64, buyer: Option<&str>, channel: Option<&str>) -> Reply {
    let mut body =
        json!({"orderId": format!("o-{}", unique()), "skuId": sku, "qty": qty, "idemKey": format!("k-{}", unique())});
    if let Some(buyer) = buyer {
        body["buyerId"] = json!(buyer);
    }
    if let Some(channel) = channel {
        body["channel"] = json!(channel);
    }
    client.post("/api/inventory/reserve", body).await
}

fn rfc3339(offset_secs: i64) -> String {
    let now = SystemTime::now();
    let at = if offset_secs >= 0 {
        now + Duration::from_secs(offset_secs as u64)
    } else {
        now - Duration::from_secs(offset_secs.unsigned_abs())
    };
    humantime::format_rfc3339_seconds(at).to_string()
}

#[tokio::test]
async fn a_buyer_gets_at_most_the_limit_and_released_units_come_back() {
    let server = TestServer::start().await;
    let c = &server.client;
    let sku = format!("limit-{}", unique());
    c.receive(&sku, 100).await;
    let r = put_policy(c, &sku, json!({"maxPerBuyer": 2, "idemKey": format!("p-{}", unique())})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["policy"]["maxPerBuyer"], 2);
    assert_eq!(r.body["policy"]["buyers"], 0);

    let r = reserve(c, &sku, 1, None, None).await;
    assert_eq!((r.status, r.code()), (StatusCode::BAD_REQUEST, "BUYER_REQUIRED"), "{}", r.text);
    let first = reserve(c, &sku, 2, Some("bob"), None).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    let r = reserve(c, &sku, 1, Some("bob"), None).await;
    assert_eq!((r.status, r.code()), (StatusCode::CONFLICT, "PURCHASE_LIMIT_EXCEEDED"), "{}", r.text);
    assert_eq!((r.body["limit"].as_u64(), r.body["held"].as_u64()), (Some(2), Some(2)));
    assert_eq!(reserve(c, &sku, 2, Some("amy"), None).await.status, StatusCode::OK, "another buyer still buys");

    // Released units return to the buyer's allowance.
    let id = first.body["reservationId"].as_str().unwrap();
    assert_eq!(c.release(id, &format!("rel-{}", unique())).await.status, StatusCode::OK);
    assert_eq!(reserve(c, &sku, 2, Some("bob"), None).await.status, StatusCode::OK);
    let stock = c.get(&format!("/api/inventory/{sku}")).await;
    assert_eq!(stock.body["policy"]["buyers"], 2, "{}", stock.text);
    assert_eq!(stock.body["reserved"], 4);

    // Removed: a reserve needs no buyer any more.
    let r = delete_policy(c, &sku, &format!("d-{}", unique())).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(r.body.get("policy").is_none(), "{}", r.text);
    assert_eq!(reserve(c, &sku, 1, None, None).await.status, StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn a_sale_window_refuses_reserves_before_it_opens_and_after_it_ends() {
    let server = TestServer::start().await;
    let c = &server.client;
    let (early, late) = (format!("early-{}", unique()), format!("late-{}", unique()));
    c.receive(&early, 10).await;
    c.receive(&late, 10).await;
    let starts = rfc3339(3_600);
    let r = put_policy(c, &early, json!({"saleStartsAt": starts, "idemKey": format!("p-{}", unique())})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = reserve(c, &early, 1, None, None).await;
    assert_eq!((r.status, r.code()), (StatusCode::CONFLICT, "SALE_NOT_STARTED"), "{}", r.text);
    assert!(r.body["startsAt"].as_str().unwrap().starts_with(&starts[..19]), "{}", r.text);

    let window =
        json!({"saleStartsAt": rfc3339(-7_200), "saleEndsAt": rfc3339(-3_600), "idemKey": format!("p-{}", unique())});
    assert_eq!(put_policy(c, &late, window).await.status, StatusCode::OK);
    let r = reserve(c, &late, 1, None, None).await;
    assert_eq!((r.status, r.code()), (StatusCode::CONFLICT, "SALE_ENDED"), "{}", r.text);
    // Opened again by a changed window.
    let open = json!({"saleStartsAt": rfc3339(-7_200), "idemKey": format!("p-{}", unique())});
    assert_eq!(put_policy(c, &late, open).await.status, StatusCode::OK);
    assert_eq!(reserve(c, &late, 1, None, None).await.status, StatusCode::OK);
    assert_eq!(c.levels(&early).await, (10, 0, 0), "refused reserves changed nothing");
    server.stop().await;
}

#[tokio::test]
async fn channel_quotas_refuse_a_used_up_channel_while_the_others_sell() {
    let server = TestServer::start().await;
    let c = &server.client;
    let sku = format!("quota-{}", unique());
    c.receive(&sku, 100).await;
    let quotas =
        |app: u64, web: u64| json!({"channelQuotas": {"app": app, "web": web}, "idemKey": format!("p-{}", unique())});
    assert_eq!(put_policy(c, &sku, quotas(6, 4)).await.status, StatusCode::OK);

    let r = reserve(c, &sku, 1, None, None).await;
    assert_eq!((r.status, r.code()), (StatusCode::BAD_REQUEST, "CHANNEL_REQUIRED"), "{}", r.text);
    let r = reserve(c, &sku, 1, None, Some("tv")).await;
    assert_eq!((r.status, r.code()), (StatusCode::BAD_REQUEST, "UNKNOWN_CHANNEL"), "{}", r.text);
    assert_eq!(reserve(c, &sku, 6, None, Some("app")).await.status, StatusCode::OK);
    let r = reserve(c, &sku, 1, None, Some("app")).await;
    assert_eq!((r.status, r.code()), (StatusCode::CONFLICT, "CHANNEL_QUOTA_EXHAUSTED"), "{}", r.text);
    assert_eq!((r.body["quota"].as_u64(), r.body["used"].as_u64()), (Some(6), Some(6)));
    assert_eq!(reserve(c, &sku, 4, None, Some("web")).await.status, StatusCode::OK, "web still sells");

    // Changed mid-sale: what was sold stays counted.
    assert_eq!(put_policy(c, &sku, quotas(8, 4)).await.status, StatusCode::OK);
    let stock = c.get(&format!("/api/inventory/{sku}")).await;
    assert_eq!(stock.body["policy"]["channelsUsed"], json!({"app": 6, "web": 4}), "{}", stock.text);
    assert_eq!(reserve(c, &sku, 3, None, Some("app")).await.code(), "CHANNEL_QUOTA_EXHAUSTED");
    assert_eq!(reserve(c, &sku, 2, None, Some("app")).await.status, StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn a_policy_request_that_is_wrong_changes_nothing() {
    let server = TestServer::start().await;
    let c = &server.client;
    let sku = format!("bad-{}", unique());
    c.receive(&sku, 10).await;
    let key = || format!("p-{}", unique());
    for (body, code) in [
        (json!({"maxPerBuyer": 0, "idemKey": key()}), "INVALID_FIELD"),
        (json!({"maxPerBuyer": -1, "idemKey": key()}), "INVALID_FIELD"),
        (json!({"saleStartsAt": "tomorrow", "idemKey": key()}), "INVALID_FIELD"),
        (json!({"saleStartsAt": rfc3339(100), "saleEndsAt": rfc3339(50), "idemKey": key()}), "INVALID_FIELD"),
        (json!({"channelQuotas": {}, "idemKey": key()}), "INVALID_FIELD"),
        (json!({"channelQuotas": {"app": -3}, "idemKey": key()}), "INVALID_FIELD"),
        (json!({"maxPerBuyer": 2}), "IDEMPOTENCY_KEY_REQUIRED"),
    ] {
        let r = put_policy(c, &sku, body.clone()).await;
        assert_eq!((r.status, r.code()), (StatusCode::BAD_REQUEST, code), "{body}: {}", r.text);
    }
    let r = c
        .send("PUT", &format!("/api/admin/skus/{sku}/policy"), &[], Some(&json!({"maxPerBuyer": 1, "idemKey": key()})))
        .await;
    assert_eq!((r.status, r.code()), (StatusCode::BAD_REQUEST, "OPERATOR_REQUIRED"), "{}", r.text);
    let r = put_policy(c, "no-such-sku", json!({"maxPerBuyer": 1, "idemKey": key()})).await;
    assert_eq!((r.status, r.code()), (StatusCode::NOT_FOUND, "SKU_NOT_FOUND"), "{}", r.text);
    let r = c.send("DELETE", &format!("/api/admin/skus/{sku}/policy"), &[("x-operator", "ann")], None).await;
    assert_eq!((r.status, r.code()), (StatusCode::BAD_REQUEST, "IDEMPOTENCY_KEY_REQUIRED"), "{}", r.text);
    let stock = c.get(&format!("/api/inventory/{sku}")).await;
    assert!(stock.body.get("policy").is_none(), "{}", stock.text);
    assert_eq!(reserve(c, &sku, 1, None, None).await.status, StatusCode::OK);
    server.stop().await;
}

/// A bot firing many reserves at once for one buyer gets exactly its limit:
/// the check is made by the SKU's shard, one reserve after another.
#[tokio::test]
async fn a_buyer_firing_concurrent_reserves_gets_exactly_the_limit() {
    let server = TestServer::start().await;
    let c = server.client.clone();
    let sku = format!("bot-{}", unique());
    c.receive(&sku, 1_000).await;
    assert_eq!(
        put_policy(&c, &sku, json!({"maxPerBuyer": 3, "idemKey": format!("p-{}", unique())})).await.status,
        StatusCode::OK
    );
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let (c, sku) = (c.clone(), sku.clone());
        tasks.push(tokio::spawn(async move { reserve(&c, &sku, 1, Some("bot"), None).await }));
    }
    let mut held = 0;
    for task in tasks {
        let r = task.await.unwrap();
        match r.status {
            StatusCode::OK => held += 1,
            _ => assert_eq!(r.code(), "PURCHASE_LIMIT_EXCEEDED", "{}", r.text),
        }
    }
    assert_eq!(held, 3);
    assert_eq!(c.levels(&sku).await, (997, 3, 0));
    server.stop().await;
}

#[tokio::test]
async fn a_policy_and_what_it_counted_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let options = || Options { data_dir: Some(dir.path().to_path_buf()), ..Options::default() };
    let sku = format!("kept-{}", unique());
    let server = TestServer::start_with(options()).await;
    let c = &server.client;
    c.receive(&sku, 10).await;
    let policy = json!({"maxPerBuyer": 2, "channelQuotas": {"app": 5}, "idemKey": "p-kept"});
    assert_eq!(put_policy(c, &sku, policy.clone()).await.status, StatusCode::OK);
    assert_eq!(reserve(c, &sku, 2, Some("bob"), Some("app")).await.status, StatusCode::OK);
    // A snapshot, then one more change in the journal after it.
    let r = c.post("/api/admin/snapshot", json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(reserve(c, &sku, 1, Some("amy"), Some("app")).await.status, StatusCode::OK);
    server.stop().await;

    let server = TestServer::start_with(options()).await;
    let c = &server.client;
    let stock = c.get(&format!("/api/inventory/{sku}")).await;
    assert_eq!(stock.body["policy"]["channelsUsed"], json!({"app": 3}), "{}", stock.text);
    assert_eq!(stock.body["policy"]["buyers"], 2);
    assert_eq!(reserve(c, &sku, 1, Some("bob"), Some("app")).await.code(), "PURCHASE_LIMIT_EXCEEDED");
    // The same PUT again is a replay.
    let r = put_policy(c, &sku, policy).await;
    assert_eq!(r.headers.get("idempotent-replayed").map(|v| v.to_str().unwrap()), Some("true"), "{}", r.text);
    server.stop().await;
}
