//! Orders of several lines over HTTP: all or nothing across shards,
//! confirmed, released and expired as one; and a kill -9 during concurrent
//! orders, audited order by order after the restart.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::{skus_on_different_shards, unique, Client, Daemon, TestServer};

fn order_body(lines: &[(&str, u64)], key: &str) -> Value {
    let lines: Vec<Value> = lines.iter().map(|(sku, qty)| json!({"skuId": sku, "qty": qty})).collect();
    json!({"lines": lines, "idemKey": key})
}

async fn holds_of(c: &Client, order: &str) -> Vec<Value> {
    let r = c.get(&format!("/api/orders/{order}/inventory-status")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.body["reservations"].as_array().unwrap().clone()
}

#[tokio::test]
async fn an_order_over_two_shards_is_held_whole_and_confirmed_whole() {
    let server = TestServer::start().await;
    let c = &server.client;
    let (a, b) = skus_on_different_shards(&format!("ord-{}", unique()), server.shards);
    c.receive(&a, 10).await;
    c.receive(&b, 10).await;
    let order = format!("o-{}", unique());
    let body = order_body(&[(&a, 2), (&b, 3)], "k1");
    let r = c.post(&format!("/api/orders/{order}/reserve"), body.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["status"], "RESERVED");
    let lines = r.body["lines"].as_array().unwrap();
    assert_eq!((lines[0]["skuId"].as_str(), lines[1]["qty"].as_u64()), (Some(a.as_str()), Some(3)));
    assert_eq!((c.levels(&a).await, c.levels(&b).await), ((8, 2, 0), (7, 3, 0)));
    // The same key again: the same answer.
    let again = c.post(&format!("/api/orders/{order}/reserve"), body).await;
    assert_eq!((again.status, &again.body), (StatusCode::OK, &r.body));
    assert_eq!(again.headers.get("idempotent-replayed").unwrap(), "true");
    // A line is not confirmed on its own.
    let line = lines[0]["reservationId"].as_str().unwrap();
    let single = c.confirm(line, "pay-1", &format!("c-{}", unique())).await;
    assert_eq!((single.status, single.code()), (StatusCode::CONFLICT, "PART_OF_ORDER"), "{}", single.text);
    let confirm = json!({"paymentId": "pay-1", "idemKey": "k2"});
    let r = c.post(&format!("/api/orders/{order}/confirm"), confirm.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["status"], "CONFIRMED");
    assert_eq!((c.levels(&a).await, c.levels(&b).await), ((8, 0, 2), (7, 0, 3)));
    assert!(holds_of(c, &order).await.iter().all(|h| h["status"] == "CONFIRMED"));
    // A repeated payment callback deducts nothing; another payment is refused.
    assert_eq!(c.post(&format!("/api/orders/{order}/confirm"), confirm).await.status, StatusCode::OK);
    let other = c.post(&format!("/api/orders/{order}/confirm"), json!({"paymentId": "pay-2", "idemKey": "k3"})).await;
    assert_eq!((other.status, other.code()), (StatusCode::CONFLICT, "PAYMENT_MISMATCH"), "{}", other.text);
    assert_eq!((c.levels(&a).await, c.levels(&b).await), ((8, 0, 2), (7, 0, 3)));
    server.stop().await;
}

#[tokio::test]
async fn an_order_with_a_line_that_cannot_be_held_holds_nothing_and_names_every_failing_line() {
    let server = TestServer::start().await;
    let c = &server.client;
    let (a, b) = skus_on_different_shards(&format!("short-{}", unique()), server.shards);
    c.receive(&a, 10).await;
    c.receive(&b, 1).await;
    let order = format!("o-{}", unique());
    let ghost = format!("ghost-{}", unique());
    let r = c.post(&format!("/api/orders/{order}/reserve"), order_body(&[(&a, 2), (&b, 3), (&ghost, 1)], "k1")).await;
    assert_eq!((r.status, r.code()), (StatusCode::CONFLICT, "ORDER_NOT_RESERVABLE"), "{}", r.text);
    let refused = r.body["lines"].as_array().unwrap();
    assert_eq!(refused.len(), 2, "{}", r.text);
    assert_eq!(
        (refused[0]["skuId"].as_str(), refused[0]["code"].as_str()),
        (Some(b.as_str()), Some("INSUFFICIENT_STOCK"))
    );
    assert_eq!(refused[0]["available"], 1);
    assert_eq!(refused[1]["code"], "SKU_NOT_FOUND");
    assert_eq!((c.levels(&a).await, c.levels(&b).await), ((10, 0, 0), (1, 0, 0)), "no line stays held");
    assert!(holds_of(c, &order).await.iter().all(|h| h["status"] == "RELEASED"));
    server.stop().await;
}

#[tokio::test]
async fn an_order_is_released_whole_and_expires_whole() {
    let server = TestServer::start().await;
    let c = &server.client;
    let (a, b) = skus_on_different_shards(&format!("rel-{}", unique()), server.shards);
    c.receive(&a, 10).await;
    c.receive(&b, 10).await;
    let order = format!("o-{}", unique());
    assert_eq!(
        c.post(&format!("/api/orders/{order}/reserve"), order_body(&[(&a, 1), (&b, 1)], "k1")).await.status,
        StatusCode::OK
    );
    let r = c.post(&format!("/api/orders/{order}/release"), json!({"reason": "CANCELLED", "idemKey": "k2"})).await;
    assert_eq!((r.status, r.body["status"].as_str()), (StatusCode::OK, Some("RELEASED")), "{}", r.text);
    assert_eq!((c.levels(&a).await, c.levels(&b).await), ((10, 0, 0), (10, 0, 0)));
    let r = c.post(&format!("/api/orders/{order}/release"), json!({"reason": "TIMEOUT", "idemKey": "k3"})).await;
    assert_eq!((r.status, r.code()), (StatusCode::BAD_REQUEST, "INVALID_FIELD"), "the service's own reason");

    // Expiry: the home's timer expires the order, the other shard follows.
    let order = format!("o-{}", unique());
    let mut body = order_body(&[(&a, 2), (&b, 2)], "k4");
    body["ttlSeconds"] = json!(1);
    assert_eq!(c.post(&format!("/api/orders/{order}/reserve"), body).await.status, StatusCode::OK);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let holds = holds_of(c, &order).await;
        if holds.iter().all(|h| h["status"] == "EXPIRED") {
            break;
        }
        assert!(Instant::now() < deadline, "the order did not expire whole: {holds:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!((c.levels(&a).await, c.levels(&b).await), ((10, 0, 0), (10, 0, 0)));
    let r = c.post(&format!("/api/orders/{order}/confirm"), json!({"paymentId": "late", "idemKey": "k5"})).await;
    assert_eq!((r.status, r.code()), (StatusCode::CONFLICT, "RESERVATION_EXPIRED"), "{}", r.text);
    server.stop().await;
}

#[tokio::test]
async fn an_order_request_that_is_wrong_changes_nothing() {
    let server = TestServer::start().await;
    let c = &server.client;
    let sku = format!("bad-{}", unique());
    c.receive(&sku, 10).await;
    let path = "/api/orders/o-bad/reserve";
    for (body, code) in [
        (json!({"lines": [], "idemKey": "k1"}), "INVALID_FIELD"),
        (order_body(&[(&sku, 1), (&sku, 1)], "k2"), "INVALID_FIELD"),
        (order_body(&[(&sku, 0)], "k3"), "INVALID_FIELD"),
        (json!({"lines": [{"skuId": sku, "qty": 1}]}), "IDEMPOTENCY_KEY_REQUIRED"),
        (json!({"lines": [{"skuId": sku, "qty": 1}], "idemKey": "k4", "ttlSeconds": 0}), "INVALID_FIELD"),
    ] {
        let r = c.post(path, body.clone()).await;
        assert_eq!((r.status, r.code()), (StatusCode::BAD_REQUEST, code), "{body}: {}", r.text);
    }
    let r = c.post("/api/orders/nobody/confirm", json!({"paymentId": "p", "idemKey": "k5"})).await;
    assert_eq!((r.status, r.code()), (StatusCode::NOT_FOUND, "ORDER_NOT_FOUND"), "{}", r.text);
    assert_eq!(c.levels(&sku).await, (10, 0, 0));
    server.stop().await;
}

#[tokio::test]
async fn a_buyers_limit_applies_to_the_lines_of_an_order() {
    let server = TestServer::start().await;
    let c = &server.client;
    let (a, b) = skus_on_different_shards(&format!("lim-{}", unique()), server.shards);
    c.receive(&a, 10).await;
    c.receive(&b, 10).await;
    let path = format!("/api/admin/skus/{b}/policy");
    let r = c.send("PUT", &path, &[("x-operator", "ann")], Some(&json!({"maxPerBuyer": 2, "idemKey": "p1"}))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let mut body = order_body(&[(&a, 1), (&b, 2)], "k1");
    body["buyerId"] = json!("bob");
    assert_eq!(c.post("/api/orders/o-1/reserve", body).await.status, StatusCode::OK);
    let mut body = order_body(&[(&a, 1), (&b, 1)], "k2");
    body["buyerId"] = json!("bob");
    let r = c.post("/api/orders/o-2/reserve", body).await;
    assert_eq!((r.status, r.code()), (StatusCode::CONFLICT, "ORDER_NOT_RESERVABLE"), "{}", r.text);
    assert_eq!(r.body["lines"][0]["code"], "PURCHASE_LIMIT_EXCEEDED");
    assert_eq!((c.levels(&a).await, c.levels(&b).await), ((9, 1, 0), (8, 2, 0)));
    server.stop().await;
}

const SKUS: usize = 6;
const CLIENTS: usize = 12;

/// Many orders of three lines over six SKUs (two of them short of stock),
/// from many clients, and a kill -9 while they run. After the restart and
/// a few seconds, every order is wholly held or wholly released, stock is
/// conserved, and every acknowledged order has every line held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_during_concurrent_orders_leaves_every_order_whole_or_released() {
    for round in 0..3u64 {
        let dir = tempfile::tempdir().unwrap();
        let daemon = Daemon::spawn(dir.path(), &["--shards", "2"]);
        let seed = Client::new(&daemon.url);
        seed.wait_ready().await;
        let skus: Vec<String> = (0..SKUS).map(|i| format!("k9-{round}-{i}")).collect();
        let stock: Vec<u64> = (0..SKUS).map(|i| if i < 2 { 30 } else { 400 }).collect();
        for (sku, &qty) in skus.iter().zip(&stock) {
            seed.receive(sku, qty).await;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for client in 0..CLIENTS {
            let (c, stop, skus) = (Client::new(&daemon.url), stop.clone(), skus.clone());
            tasks.push(tokio::spawn(async move {
                // Orders asked, and those acknowledged with their lines.
                let mut asked = Vec::new();
                let mut acked: BTreeMap<String, Vec<String>> = BTreeMap::new();
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let order = format!("c{client}-o{n}");
                    let lines: Vec<(&str, u64)> =
                        (0..3).map(|j| (skus[(n + client + 2 * j) % SKUS].as_str(), 1 + (n as u64 % 2))).collect();
                    asked.push(order.clone());
                    let body = order_body(&lines, &format!("{order}:r"));
                    let Ok(r) = c.try_post(&format!("/api/orders/{order}/reserve"), body).await else { break };
                    if r.status == StatusCode::OK {
                        let ids = r.body["lines"].as_array().unwrap();
                        acked.insert(
                            order,
                            ids.iter().map(|l| l["reservationId"].as_str().unwrap().to_string()).collect(),
                        );
                    }
                }
                (asked, acked)
            }));
        }
        tokio::time::sleep(Duration::from_millis(400 + 500 * round)).await;
        daemon.signal(libc::SIGKILL);
        daemon.wait();
        stop.store(true, Ordering::Relaxed);
        let mut asked = Vec::new();
        let mut acked = BTreeMap::new();
        for task in tasks {
            let (a, k) = task.await.unwrap();
            asked.extend(a);
            acked.extend(k);
        }
        assert!(!acked.is_empty(), "round {round}: no order was acknowledged before the kill");

        // The audit reads every order several times over: no query limit.
        let daemon = Daemon::spawn(dir.path(), &["--shards", "2", "--query-rate-limit", "0"]);
        let c = Client::new(&daemon.url);
        c.wait_ready().await;
        // Within a few seconds every order is settled.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut unsettled = Vec::new();
        loop {
            unsettled.clear();
            for order in &asked {
                let holds = holds_of(&c, order).await;
                let held = holds.iter().filter(|h| h["status"] == "RESERVED").count();
                let released = holds.iter().filter(|h| h["status"] == "RELEASED" || h["status"] == "EXPIRED").count();
                let whole = (held == 3 && released == 0) || held == 0;
                if !whole {
                    unsettled.push((order.clone(), holds));
                }
            }
            if unsettled.is_empty() || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(unsettled.is_empty(), "round {round}: orders neither whole nor released: {unsettled:?}");
        for (order, ids) in &acked {
            let holds = holds_of(&c, order).await;
            for id in ids {
                let hold = holds.iter().find(|h| h["reservationId"] == id.as_str());
                assert_eq!(
                    hold.map(|h| h["status"].as_str().unwrap()),
                    Some("RESERVED"),
                    "round {round}: acknowledged {order} lost line {id}: {holds:?}"
                );
            }
        }
        // Stock is conserved, and what is reserved is what the held lines hold.
        let mut reserved_by_holds: BTreeMap<String, u64> = BTreeMap::new();
        for order in &asked {
            for h in holds_of(&c, order).await {
                if h["status"] == "RESERVED" {
                    *reserved_by_holds.entry(h["skuId"].as_str().unwrap().to_string()).or_default() +=
                        h["qty"].as_u64().unwrap();
                }
            }
        }
        for (sku, &qty) in skus.iter().zip(&stock) {
            let (available, reserved, sold) = c.levels(sku).await;
            assert_eq!(available + reserved + sold, qty, "round {round}: {sku} not conserved");
            assert_eq!(reserved, reserved_by_holds.get(sku).copied().unwrap_or(0), "round {round}: {sku}");
        }
        daemon.signal(libc::SIGTERM);
        daemon.wait();
    }
}

/// PostgreSQL keeps every line of an order as a reservation row of the
/// order, and follows the order's state.
#[tokio::test]
async fn postgres_has_a_row_for_every_line_of_an_order() {
    use crate::pg::{url_for, wait_caught_up, TestSchema, PG_ADDR};
    use crate::support::Options;
    let Some(schema) = TestSchema::create("orders").await else { return };
    let server = TestServer::start_with(Options {
        postgres: Some((url_for(PG_ADDR), schema.name.clone())),
        ..Options::default()
    })
    .await;
    let c = &server.client;
    let (a, b) = skus_on_different_shards(&format!("pg-{}", unique()), server.shards);
    c.receive(&a, 10).await;
    c.receive(&b, 10).await;
    let r = c.post("/api/orders/o-pg/reserve", order_body(&[(&a, 2), (&b, 3)], "k1")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    wait_caught_up(c, Duration::from_secs(20)).await;
    let rows = |status: &'static str| {
        format!("SELECT count(*) FROM reservation WHERE order_id = 'o-pg' AND status = '{status}'")
    };
    assert_eq!(schema.count(&rows("RESERVED")).await, 2);
    let total: i64 = schema.count("SELECT sum(qty)::bigint FROM reservation WHERE order_id = 'o-pg'").await;
    assert_eq!(total, 5);
    let r = c.post("/api/orders/o-pg/confirm", json!({"paymentId": "pay", "idemKey": "k2"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    wait_caught_up(c, Duration::from_secs(20)).await;
    assert_eq!(schema.count(&rows("CONFIRMED")).await, 2);
    server.stop().await;
    schema.drop().await;
}
