//! The order status from the PostgreSQL read model
//! (`/api/read-model/orders/{orderId}/inventory-status`): the primary's
//! answer once the writer has caught up, stale with its lag while the
//! writer is behind, tenants and roles as the primary, and 503 without a
//! reachable PostgreSQL.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use inventory_gateway::auth::jwt::mint::SigningKey;
use inventory_gateway::Config;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::pg::{url_for, wait_caught_up, PgProxy, TestSchema, PG_ADDR};
use crate::support::{skus_on_different_shards, Client, Options, Reply, TestServer};

fn primary(order: &str) -> String {
    format!("/api/orders/{order}/inventory-status")
}

fn read_model(order: &str) -> String {
    format!("/api/read-model/orders/{order}/inventory-status")
}

/// The read model's answer without what only it has.
fn as_primary(mut body: Value) -> Value {
    let fields = body.as_object_mut().unwrap();
    for extra in ["stale", "lagMs", "lagRecords"] {
        assert!(fields.remove(extra).is_some(), "the read model's answer has {extra}");
    }
    body
}

fn pg_options(schema: &TestSchema, url: String) -> Options {
    Options { postgres: Some((url, schema.name.clone())), ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_model_answers_as_the_primary_once_the_writer_caught_up() {
    let Some(schema) = TestSchema::create("rm_same").await else { return };
    let server = TestServer::start_with(pg_options(&schema, url_for(PG_ADDR))).await;
    let c = &server.client;
    let (a, b) = skus_on_different_shards("rm-same", server.shards);
    let extra = format!("{a}-x");
    for sku in [&a, &b, &extra] {
        c.receive(sku, 10).await;
    }
    // One order with a hold in every state, on both shards.
    let r = c.reserve("o-1", &a, 2, "o-1:a").await;
    let confirmed = r.body["reservationId"].as_str().unwrap().to_string();
    assert_eq!(c.confirm(&confirmed, "pay-1", "o-1:a:c").await.status, StatusCode::OK);
    let r = c.reserve("o-1", &b, 3, "o-1:b").await;
    let released = r.body["reservationId"].as_str().unwrap().to_string();
    assert_eq!(c.release(&released, "o-1:b:x").await.status, StatusCode::OK);
    let r = c
        .post(
            "/api/inventory/reserve",
            json!({"orderId": "o-1", "skuId": extra, "qty": 1, "idemKey": "o-1:x", "ttlSeconds": 1}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(c.reserve("o-2", &b, 1, "o-2:b").await.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    wait_caught_up(c, Duration::from_secs(20)).await;

    for order in ["o-1", "o-2", "nobody"] {
        let p = c.get(&primary(order)).await;
        let m = c.get(&read_model(order)).await;
        assert_eq!((p.status, m.status), (StatusCode::OK, StatusCode::OK), "{} {}", p.text, m.text);
        assert_eq!((m.body["stale"].clone(), m.body["lagMs"].clone()), (json!(false), json!(0)), "{}", m.text);
        assert_eq!(m.body["lagRecords"], 0);
        assert_eq!(as_primary(m.body), p.body, "order {order}");
    }
    let o1 = c.get(&read_model("o-1")).await.body;
    let statuses: Vec<&str> =
        o1["reservations"].as_array().unwrap().iter().map(|h| h["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["CONFIRMED", "RELEASED", "EXPIRED"], "{o1}");
    assert_eq!(o1["reservations"][0]["paymentId"], "pay-1");
    assert_eq!(o1["reservations"][2]["releaseReason"], "TIMEOUT");

    // Bad input is refused before PostgreSQL is asked.
    let long = "x".repeat(300);
    let r = c.get(&read_model(&long)).await;
    assert_eq!((r.status, r.code()), (StatusCode::BAD_REQUEST, "INVALID_FIELD"), "{}", r.text);
    server.stop().await;
    schema.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_model_is_stale_with_its_lag_while_the_writer_is_behind() {
    let Some(schema) = TestSchema::create("rm_stale").await else { return };
    let server = TestServer::start_with(pg_options(&schema, url_for(PG_ADDR))).await;
    let c = &server.client;
    let (a, b) = skus_on_different_shards("rm-stale", server.shards);
    c.receive(&a, 10).await;
    c.receive(&b, 10).await;
    assert_eq!(c.reserve("o-1", &a, 1, "o-1:a").await.status, StatusCode::OK);
    wait_caught_up(c, Duration::from_secs(20)).await;
    let before = c.get(&read_model("o-1")).await.body;
    assert_eq!(before["stale"], false, "{before}");

    // The writer cannot move its checkpoint while the table is locked: its
    // batch waits uncommitted, and PostgreSQL keeps serving reads.
    schema.client.batch_execute("BEGIN; LOCK TABLE writer_checkpoint IN SHARE MODE").await.unwrap();
    assert_eq!(c.reserve("o-1", &b, 2, "o-1:b").await.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let p = c.get(&primary("o-1")).await.body;
    let m = c.get(&read_model("o-1")).await;
    assert_eq!(m.status, StatusCode::OK, "{}", m.text);
    assert_eq!(p["reservations"].as_array().unwrap().len(), 2, "{p}");
    assert_eq!(m.body["reservations"], before["reservations"], "the read model has only what it applied: {}", m.text);
    assert_eq!(m.body["stale"], true, "{}", m.text);
    assert!(m.body["lagRecords"].as_u64().unwrap() >= 1, "{}", m.text);
    let lag = m.body["lagMs"].as_u64().unwrap();
    assert!((400..60_000).contains(&lag), "the lag counts from the reserve 600 ms ago: {}", m.text);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let later = c.get(&read_model("o-1")).await.body;
    assert!(later["lagMs"].as_u64().unwrap() >= lag + 200, "the lag grows while the writer stands still: {later}");

    schema.client.batch_execute("COMMIT").await.unwrap();
    wait_caught_up(c, Duration::from_secs(20)).await;
    let m = c.get(&read_model("o-1")).await.body;
    assert_eq!((m["stale"].clone(), m["lagMs"].clone()), (json!(false), json!(0)), "{m}");
    assert_eq!(as_primary(m), c.get(&primary("o-1")).await.body);
    server.stop().await;
    schema.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_postgres_the_read_model_is_unavailable() {
    let server = TestServer::start().await;
    let c = &server.client;
    c.receive("rm-none", 5).await;
    assert_eq!(c.reserve("o-1", "rm-none", 1, "o-1").await.status, StatusCode::OK);
    let r = c.get(&read_model("o-1")).await;
    assert_eq!((r.status, r.code()), (StatusCode::SERVICE_UNAVAILABLE, "READ_MODEL_UNAVAILABLE"), "{}", r.text);
    assert!(r.body["message"].as_str().unwrap().contains("--postgres-url"), "{}", r.text);
    assert_eq!(r.headers["retry-after"], "1");
    // The primary answers all the same.
    assert_eq!(c.get(&primary("o-1")).await.body["reservations"].as_array().unwrap().len(), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_postgres_is_unavailable_within_the_timeout_and_serves_again_when_back() {
    let Some(schema) = TestSchema::create("rm_down").await else { return };
    let proxy = PgProxy::start().await;
    let server = TestServer::start_with(pg_options(&schema, proxy.url())).await;
    let c = &server.client;
    c.receive("rm-down", 5).await;
    assert_eq!(c.reserve("o-1", "rm-down", 1, "o-1").await.status, StatusCode::OK);
    wait_caught_up(c, Duration::from_secs(20)).await;
    assert_eq!(c.get(&read_model("o-1")).await.status, StatusCode::OK);

    proxy.stop();
    let started = Instant::now();
    let r = c.get(&read_model("o-1")).await;
    assert_eq!((r.status, r.code()), (StatusCode::SERVICE_UNAVAILABLE, "READ_MODEL_UNAVAILABLE"), "{}", r.text);
    assert!(started.elapsed() < Duration::from_secs(5), "answered in {:?}", started.elapsed());
    assert_eq!(c.get(&primary("o-1")).await.status, StatusCode::OK);

    proxy.start_again();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = c.get(&read_model("o-1")).await;
        if r.status == StatusCode::OK {
            assert_eq!(as_primary(r.body), c.get(&primary("o-1")).await.body);
            break;
        }
        assert!(Instant::now() < deadline, "the read model did not come back: {}", r.text);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.stop().await;
    schema.drop().await;
}

const SECRET: &[u8] = b"read-model-hs256-secret";

fn token(sub: &str, roles: &[&str], tenant: Option<&str>) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let mut claims = json!({ "sub": sub, "roles": roles, "exp": now + 600, "iat": now });
    if let Some(t) = tenant {
        claims["tenant"] = t.into();
    }
    SigningKey::Hs256(SECRET.to_vec()).sign(&claims, None)
}

async fn as_caller(c: &Client, token: &str, method: &str, path: &str, body: Option<Value>) -> Reply {
    let bearer = format!("Bearer {token}");
    c.send(method, path, &[("authorization", &bearer)], body.as_ref()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_and_roles_are_those_of_the_primary() {
    use std::os::unix::fs::PermissionsExt;
    let Some(schema) = TestSchema::create("rm_tenant").await else { return };
    let keys = tempfile::tempdir().unwrap();
    let secret: PathBuf = keys.path().join("hs256");
    std::fs::write(&secret, SECRET).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let options = Options {
        configure: Some(Arc::new(move |config: &mut Config| {
            config.auth = Some("jwt".into());
            config.jwt_hs256_secret_file = Some(secret.clone());
        })),
        ..pg_options(&schema, url_for(PG_ADDR))
    };
    let server = TestServer::start_with(options).await;
    let c = &server.client;
    let (acme, globex) = (token("ann", &["reserver"], Some("acme")), token("bob", &["reserver"], Some("globex")));
    let receiver = token("rec", &["receiver"], None);
    let body = json!({"skuId": "rm-t", "qty": 5, "idemKey": "rcv"});
    assert_eq!(as_caller(c, &receiver, "POST", "/api/inventory/receive", Some(body)).await.status, StatusCode::OK);
    let hold = json!({"orderId": "o-1", "skuId": "rm-t", "qty": 2, "idemKey": "o-1:r"});
    let r = as_caller(c, &acme, "POST", "/api/inventory/reserve", Some(hold)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let admin = token("root", &["admin"], None);
    let deadline = Instant::now() + Duration::from_secs(20);
    while as_caller(c, &admin, "GET", "/api/admin/persistence", None).await.body["shards"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["lagRecords"] != 0 || s["connected"] != true)
    {
        assert!(Instant::now() < deadline, "the writer did not catch up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The owner sees its order under the id it used; another tenant sees none.
    for caller in [&acme, &globex] {
        let p = as_caller(c, caller, "GET", &primary("o-1"), None).await;
        let m = as_caller(c, caller, "GET", &read_model("o-1"), None).await;
        assert_eq!(m.status, StatusCode::OK, "{}", m.text);
        assert_eq!(as_primary(m.body), p.body);
    }
    let mine = as_caller(c, &acme, "GET", &read_model("o-1"), None).await.body;
    assert_eq!(mine["reservations"][0]["orderId"], "o-1", "{mine}");
    let theirs = as_caller(c, &globex, "GET", &read_model("o-1"), None).await.body;
    assert_eq!(theirs["reservations"], json!([]), "{theirs}");
    // No naming another tenant's stored id.
    let r = as_caller(c, &globex, "GET", &read_model("acme%7Co-1"), None).await;
    assert_eq!((r.status, r.code()), (StatusCode::BAD_REQUEST, "INVALID_FIELD"), "{}", r.text);
    // Roles: the primary's.
    let r = as_caller(c, &token("r", &["reader"], Some("acme")), "GET", &read_model("o-1"), None).await;
    assert_eq!((r.status, r.code()), (StatusCode::FORBIDDEN, "FORBIDDEN"), "{}", r.text);
    let r = c.get(&read_model("o-1")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    server.stop().await;
    schema.drop().await;
}
