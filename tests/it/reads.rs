//! The query rate limit: stock queries past it are refused with 429
//! `RATE_LIMITED` and `Retry-After`, before their path is even parsed;
//! writes, health, readiness and metrics are never limited.

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{unique, Client, Daemon};

/// The limit the daemon runs with: its burst, a second's worth, is this.
const LIMIT: usize = 20;

/// Reads `GET path` until one is refused; returns how many passed.
async fn admitted_before_refusal(client: &Client, path: &str) -> usize {
    for passed in 0..LIMIT * 10 {
        if client.get(path).await.status == StatusCode::TOO_MANY_REQUESTS {
            return passed;
        }
    }
    panic!("{path}: never refused");
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_queries_past_the_limit_get_429_and_nothing_else_is_limited() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::spawn(dir.path(), &["--shards", "2", "--query-rate-limit", &LIMIT.to_string()]);
    let client = Client::new(&daemon.url);
    client.wait_ready().await;
    let sku = format!("limited-{}", unique());
    assert_eq!(client.receive(&sku, 10).await.status, StatusCode::OK);

    // About a second's worth passes (a little more refills meanwhile).
    let passed = admitted_before_refusal(&client, &format!("/api/inventory/{sku}")).await;
    assert!((LIMIT - 1..=LIMIT * 2).contains(&passed), "{passed} queries passed a limit of {LIMIT}/s");
    let refused = client.get(&format!("/api/inventory/{sku}")).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.code(), "RATE_LIMITED");
    assert!(refused.body["message"].as_str().unwrap().contains("20 a second"), "{}", refused.text);
    assert_eq!(refused.headers.get("retry-after").unwrap(), "1");

    // Every public read shares the bucket; a refused one is not parsed:
    // a malformed reservation id is refused for the rate, not its form.
    for path in ["/api/reservations/not-an-id", "/api/orders/o1/inventory-status"] {
        let reply = client.get(path).await;
        assert_eq!((reply.status, reply.code()), (StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED"), "{path}");
    }

    // Writes, health, readiness, metrics and the API document are not limited.
    let reserve = client.reserve(&format!("o-{sku}"), &sku, 1, &format!("k-{sku}")).await;
    assert_eq!(reserve.status, StatusCode::OK, "{}", reserve.text);
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        assert_eq!(client.get(path).await.status, StatusCode::OK, "{path}");
    }
    let metrics = client.get("/metrics").await.text;
    let refusals = metric(&metrics, "inventory_rate_limited_total").unwrap();
    assert!(refusals >= 4.0, "{refusals} refusals counted");
    assert!(metrics.contains(r#"inventory_shard_read_queue_depth{shard="0"} 0"#), "{metrics}");
    assert!(
        metrics.contains(r#"inventory_http_requests_total{endpoint="stock",code="RATE_LIMITED",outcome="rejected"}"#),
        "{metrics}"
    );

    // The bucket refills at the rate: after a second, queries pass again.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let reply = client.get(&format!("/api/inventory/{sku}")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.body["reserved"], json!(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_of_zero_admits_every_query() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::spawn(dir.path(), &["--shards", "1", "--query-rate-limit", "0"]);
    let client = Client::new(&daemon.url);
    client.wait_ready().await;
    for _ in 0..LIMIT * 10 {
        let reply = client.get("/api/inventory/nothing-here").await;
        assert_eq!(reply.code(), "SKU_NOT_FOUND", "{}", reply.text);
    }
}
