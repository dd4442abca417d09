//! Tokens and roles, tenants, signed writes and the risk check, over HTTP.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use inventory_gateway::auth::jwt::mint::SigningKey;
use inventory_gateway::auth::signed::sign;
use inventory_gateway::auth::Role;
use inventory_gateway::http::Endpoint;
use inventory_gateway::Config;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::{inventoryd, stderr, Client, Daemon, Options, Reply, TestServer};

pub(crate) const SECRET: &[u8] = b"test-hs256-secret";

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// A file only its owner can read.
pub(crate) fn secret_file(dir: &Path, name: &str, content: &[u8]) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn claims(sub: &str, roles: &[&str], tenant: Option<&str>) -> Value {
    let mut c = json!({ "sub": sub, "roles": roles, "exp": now() + 600, "iat": now() });
    if let Some(t) = tenant {
        c["tenant"] = t.into();
    }
    c
}

pub(crate) fn token(sub: &str, roles: &[&str], tenant: Option<&str>) -> String {
    SigningKey::Hs256(SECRET.to_vec()).sign(&claims(sub, roles, tenant), None)
}

struct Secured {
    server: TestServer,
    _keys: tempfile::TempDir,
}

/// A server with `--auth jwt` on an HS256 secret, and whatever else
/// `configure` sets.
async fn secured(configure: impl Fn(&mut Config, &Path) + Send + Sync + 'static) -> Secured {
    let keys = tempfile::tempdir().unwrap();
    let dir = keys.path().to_path_buf();
    let secret = secret_file(&dir, "hs256", SECRET);
    let options = Options {
        configure: Some(Arc::new(move |config: &mut Config| {
            config.auth = Some("jwt".into());
            config.jwt_hs256_secret_file = Some(secret.clone());
            configure(config, &dir);
        })),
        ..Options::default()
    };
    Secured { server: TestServer::start_with(options).await, _keys: keys }
}

async fn call(c: &Client, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> Reply {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer.iter().map(|b| ("authorization", b.as_str())).collect();
    let body = body.or_else(|| (method == "POST").then(|| json!({})));
    c.send(method, path, &headers, body.as_ref()).await
}

fn concrete(path: &str) -> String {
    path.replace("{sku_id}", "tea")
        .replace("{reservation_id}", "rsv-0-1")
        .replace("{order_id}", "o-1")
        .replace("{adjustment_id}", "adj-0-1")
        .replace("{transfer_id}", "trf-0-1")
        .replace("{*path}", "stock")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_needs_its_role_and_refuses_the_others() {
    let s = secured(|_, _| {}).await;
    let c = &s.server.client;
    let mut checked = 0;
    for endpoint in Endpoint::ALL {
        let path = concrete(endpoint.path());
        let method = endpoint.method().to_string();
        let allowed: Vec<&str> = endpoint.roles(true).iter().map(|r| r.name()).collect();
        if allowed.is_empty() {
            let r = call(c, &method, &path, None, None).await;
            if endpoint.label() == "console" {
                // 503 when this binary was built without the console (the console tests say which).
                assert!(matches!(r.status, StatusCode::OK | StatusCode::SERVICE_UNAVAILABLE), "{method} {path}");
            } else {
                assert_eq!(r.status, StatusCode::OK, "{method} {path} is open: {}", r.text);
            }
            continue;
        }
        let r = call(c, &method, &path, None, None).await;
        assert_eq!((r.status, r.code()), (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED"), "{method} {path}");
        assert_eq!(r.headers["www-authenticate"], "Bearer realm=\"inventory\"");
        for role in &allowed {
            let r = call(c, &method, &path, Some(&token("u", &[role], None)), None).await;
            assert!(
                r.status != StatusCode::UNAUTHORIZED && r.status != StatusCode::FORBIDDEN,
                "{method} {path} with role {role}: {} {}",
                r.status,
                r.text
            );
        }
        let others: Vec<&str> = Role::ALL.iter().map(|r| r.name()).filter(|r| !allowed.contains(r)).collect();
        let r = call(c, &method, &path, Some(&token("u", &others, None)), None).await;
        assert_eq!((r.status, r.code()), (StatusCode::FORBIDDEN, "FORBIDDEN"), "{method} {path}: {}", r.text);
        assert!(r.body["message"].as_str().unwrap().contains(allowed[0]), "{}", r.text);
        checked += 1;
    }
    assert_eq!(
        checked,
        Endpoint::ALL.len() - 7,
        "all but /healthz, /readyz, /metrics, /openapi.json and the console's files need a role"
    );

    // A refused write changes nothing, and refusals are counted.
    let receive = json!({"skuId": "tea", "qty": 5, "idemKey": "r1"});
    let r =
        call(c, "POST", "/api/inventory/receive", Some(&token("u", &["reader"], None)), Some(receive.clone())).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let reader = token("u", &["reader"], None);
    assert_eq!(call(c, "GET", "/api/inventory/tea", Some(&reader), None).await.status, StatusCode::NOT_FOUND);
    let r = call(c, "POST", "/api/inventory/receive", Some(&token("u", &["receiver"], None)), Some(receive)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let metrics = c.get("/metrics").await.text;
    let forbidden = metrics
        .lines()
        .find(|l| l.starts_with("inventory_auth_refusals_total{reason=\"forbidden\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(forbidden as usize > checked, "{forbidden} forbidden refusals counted");
    s.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_early_foreign_unsigned_and_wrong_audience_tokens_are_refused() {
    let s = secured(|config, _| {
        config.jwt_audience = Some("inventory".into());
        config.jwt_issuer = Some("idp".into());
        config.jwt_leeway_secs = 0;
    })
    .await;
    let c = &s.server.client;
    let good = |c: Value| {
        let mut c = c;
        c["aud"] = json!(["inventory"]);
        c["iss"] = json!("idp");
        c
    };
    let key = SigningKey::Hs256(SECRET.to_vec());
    let reader = good(claims("u", &["reader"], None));
    let ok = key.sign(&reader, None);
    assert_eq!(call(c, "GET", "/api/inventory/none", Some(&ok), None).await.code(), "SKU_NOT_FOUND");

    let mut expired = reader.clone();
    expired["exp"] = json!(now() - 1);
    let mut early = reader.clone();
    early["nbf"] = json!(now() + 120);
    let mut audience = reader.clone();
    audience["aud"] = json!("billing");
    let mut issuer = reader.clone();
    issuer["iss"] = json!("elsewhere");
    let (header, rest) = ok.split_once('.').unwrap();
    let payload = rest.split_once('.').unwrap().0;
    let _ = header;
    let none = format!("{}.{payload}.", base64_url(br#"{"alg":"none","typ":"JWT"}"#));
    let cases = [
        ("expired", key.sign(&expired, None), "expired"),
        ("not yet valid", key.sign(&early, None), "not valid yet"),
        ("wrong audience", key.sign(&audience, None), "audience"),
        ("wrong issuer", key.sign(&issuer, None), "issuer"),
        ("wrong key", SigningKey::Hs256(b"another".to_vec()).sign(&reader, None), "signature"),
        ("ES256 without a JWKS", SigningKey::generate_es256().0.sign(&reader, None), "no key"),
        ("alg none", none, "\"none\""),
        ("garbage", "not-a-token".to_string(), "compact JWS"),
    ];
    for (what, token, says) in cases {
        let r = call(c, "GET", "/api/inventory/none", Some(&token), None).await;
        assert_eq!((r.status, r.code()), (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED"), "{what}: {}", r.text);
        assert!(r.body["message"].as_str().unwrap().contains(says), "{what}: {}", r.text);
        assert!(!r.text.contains(&token[..token.len().min(20)]) || token.len() < 20, "{what}: the token is echoed");
    }
    let r = c.send("GET", "/api/inventory/none", &[("authorization", "Basic dTpw")], None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    s.server.stop().await;
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_see_and_touch_only_their_own_holds_and_keys() {
    let s = secured(|_, _| {}).await;
    let c = &s.server.client;
    let receiver = token("stock", &["receiver"], None);
    let body = json!({"skuId": "pen", "qty": 10, "idemKey": "in-1"});
    assert_eq!(call(c, "POST", "/api/inventory/receive", Some(&receiver), Some(body)).await.status, StatusCode::OK);
    let a = token("shop-a", &["reserver", "payment"], Some("acme"));
    let b = token("shop-b", &["reserver", "payment"], Some("bolt"));
    // The same order id and key in two tenants are two orders.
    let reserve = json!({"orderId": "o-1", "skuId": "pen", "qty": 2, "idemKey": "k-1"});
    let ra = call(c, "POST", "/api/inventory/reserve", Some(&a), Some(reserve.clone())).await;
    let rb = call(c, "POST", "/api/inventory/reserve", Some(&b), Some(reserve.clone())).await;
    assert_eq!((ra.status, rb.status), (StatusCode::OK, StatusCode::OK), "{} {}", ra.text, rb.text);
    assert_ne!(ra.body["reservationId"], rb.body["reservationId"]);
    assert!(rb.headers.get("idempotent-replayed").is_none(), "tenant B's key is its own");
    let again = call(c, "POST", "/api/inventory/reserve", Some(&a), Some(reserve)).await;
    assert_eq!((again.headers["idempotent-replayed"].to_str().unwrap(), &again.body), ("true", &ra.body));

    let id_a = ra.body["reservationId"].as_str().unwrap();
    let mine = call(c, "GET", &format!("/api/reservations/{id_a}"), Some(&a), None).await;
    assert_eq!((mine.status, mine.body["orderId"].as_str()), (StatusCode::OK, Some("o-1")), "{}", mine.text);
    let theirs = call(c, "GET", &format!("/api/reservations/{id_a}"), Some(&b), None).await;
    assert_eq!((theirs.status, theirs.code()), (StatusCode::NOT_FOUND, "RESERVATION_NOT_FOUND"));
    let confirm = json!({"reservationId": id_a, "paymentId": "p-1", "idemKey": "c-1"});
    let r = call(c, "POST", "/api/inventory/confirm", Some(&b), Some(confirm.clone())).await;
    assert_eq!((r.status, r.code()), (StatusCode::NOT_FOUND, "RESERVATION_NOT_FOUND"));
    let release = json!({"reservationId": id_a, "reason": "x", "idemKey": "x-1"});
    let r = call(c, "POST", "/api/inventory/release", Some(&b), Some(release)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // A caller without a tenant is not in any tenant's scope either.
    let plain = token("shop", &["reserver"], None);
    assert_eq!(
        call(c, "GET", &format!("/api/reservations/{id_a}"), Some(&plain), None).await.status,
        StatusCode::NOT_FOUND
    );

    let order_a = call(c, "GET", "/api/orders/o-1/inventory-status", Some(&a), None).await;
    let holds = order_a.body["reservations"].as_array().unwrap();
    assert_eq!(
        (holds.len(), holds[0]["reservationId"].as_str(), holds[0]["orderId"].as_str()),
        (1, Some(id_a), Some("o-1"))
    );
    let r = call(c, "GET", "/api/orders/o-1/inventory-status", Some(&plain), None).await;
    assert_eq!(r.body["reservations"], json!([]), "{}", r.text);
    // Ids may not name a tenant.
    let sneaky = json!({"orderId": "acme|o-1", "skuId": "pen", "qty": 1, "idemKey": "k-9"});
    let r = call(c, "POST", "/api/inventory/reserve", Some(&plain), Some(sneaky)).await;
    assert_eq!((r.status, r.code()), (StatusCode::BAD_REQUEST, "INVALID_FIELD"));

    assert_eq!(call(c, "POST", "/api/inventory/confirm", Some(&a), Some(confirm)).await.status, StatusCode::OK);
    let stock = call(c, "GET", "/api/inventory/pen", Some(&token("r", &["reader"], None)), None).await;
    assert_eq!(
        (stock.body["available"].as_u64(), stock.body["reserved"].as_u64(), stock.body["sold"].as_u64()),
        (Some(6), Some(2), Some(2))
    );
    s.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_names_the_operator_and_nobody_approves_their_own_adjustment() {
    let s = secured(|_, _| {}).await;
    let c = &s.server.client;
    let body = json!({"skuId": "ink", "qty": 10, "idemKey": "in-1"});
    call(c, "POST", "/api/inventory/receive", Some(&token("dock", &["receiver"], None)), Some(body)).await;
    let ann = token("ann", &["operator", "approver", "admin"], None);
    // X-Operator is ignored: the token says who acts.
    let propose = json!({"skuId": "ink", "delta": -3, "reason": "count", "idemKey": "p-1"});
    let bearer = format!("Bearer {ann}");
    let r = c
        .send("POST", "/api/admin/adjustments", &[("authorization", &bearer), ("x-operator", "bob")], Some(&propose))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["proposedBy"], "ann");
    let id = r.body["adjustmentId"].as_str().unwrap().to_string();
    let approve = |key: &str| json!({"idemKey": key});
    let path = format!("/api/admin/adjustments/{id}/approve");
    let r = c.send("POST", &path, &[("authorization", &bearer), ("x-operator", "bob")], Some(&approve("a-1"))).await;
    assert_eq!((r.status, r.code()), (StatusCode::FORBIDDEN, "SAME_OPERATOR"), "{}", r.text);
    let admin = token("root", &["admin", "operator"], None);
    let r = call(c, "POST", &path, Some(&admin), Some(approve("a-2"))).await;
    assert_eq!((r.status, r.code()), (StatusCode::FORBIDDEN, "FORBIDDEN"), "admin is not an approver");
    let r = call(c, "POST", &path, Some(&token("bob", &["approver"], None)), Some(approve("a-3"))).await;
    assert_eq!((r.status, r.body["approvedBy"].as_str()), (StatusCode::OK, Some("bob")), "{}", r.text);
    s.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_writes_pass_once_and_stale_replayed_or_forged_ones_are_refused() {
    let s = secured(|config, dir| {
        config.auth = Some("none".into());
        config.jwt_hs256_secret_file = None;
        config.signed_writes_secret_file = Some(secret_file(dir, "signing", b"sign-me\n"));
    })
    .await;
    let c = &s.server.client;
    let path = "/api/inventory/receive";
    let body = json!({"skuId": "cap", "qty": 4, "idemKey": "in-1"});
    let bytes = serde_json::to_vec(&body).unwrap();
    let post = |ts: String, nonce: &str, sig: String, bytes: Vec<u8>| {
        let c = c.clone();
        let nonce = nonce.to_string();
        async move {
            let headers = [
                ("x-timestamp", ts.as_str()),
                ("x-nonce", nonce.as_str()),
                ("x-signature", sig.as_str()),
                ("content-type", "application/json"),
            ];
            c.post_raw(path, &headers, Box::leak(bytes.into_boxed_slice())).await
        }
    };
    let ts = now().to_string();
    let sig = sign(b"sign-me", &ts, "n-1", "POST", path, &bytes);
    let r = post(ts.clone(), "n-1", sig.clone(), bytes.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = post(ts.clone(), "n-1", sig, bytes.clone()).await;
    assert_eq!((r.status, r.code()), (StatusCode::UNAUTHORIZED, "REPLAYED_REQUEST"));
    let old = (now() - 400).to_string();
    let r = post(old.clone(), "n-2", sign(b"sign-me", &old, "n-2", "POST", path, &bytes), bytes.clone()).await;
    assert_eq!((r.status, r.code()), (StatusCode::UNAUTHORIZED, "STALE_REQUEST"));
    let r = post(ts.clone(), "n-3", sign(b"forged", &ts, "n-3", "POST", path, &bytes), bytes.clone()).await;
    assert_eq!((r.status, r.code()), (StatusCode::UNAUTHORIZED, "BAD_SIGNATURE"));
    // A body changed after signing does not pass.
    let more = serde_json::to_vec(&json!({"skuId": "cap", "qty": 400, "idemKey": "in-2"})).unwrap();
    let r = post(ts.clone(), "n-4", sign(b"sign-me", &ts, "n-4", "POST", path, &bytes), more).await;
    assert_eq!((r.status, r.code()), (StatusCode::UNAUTHORIZED, "BAD_SIGNATURE"));
    let r = c.post(path, json!({"skuId": "cap", "qty": 1, "idemKey": "in-3"})).await;
    assert_eq!((r.status, r.code()), (StatusCode::UNAUTHORIZED, "STALE_REQUEST"), "unsigned: {}", r.text);
    assert_eq!(c.levels("cap").await, (4, 0, 0), "only the one signed receipt landed");
    // Reads need no signature, and a wrong method is still a 405.
    assert_eq!(c.get(path).await.code(), "METHOD_NOT_ALLOWED");
    s.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_risk_check_stops_a_fast_buyer_unless_cleared() {
    let s = secured(|config, _| config.risk_max_units_per_minute = Some(5)).await;
    let c = &s.server.client;
    let body = json!({"skuId": "gpu", "qty": 100, "idemKey": "in-1"});
    call(c, "POST", "/api/inventory/receive", Some(&token("dock", &["receiver"], None)), Some(body)).await;
    let shop = token("shop", &["reserver"], Some("acme"));
    let reserve = |buyer: &str, qty: u64, key: &str| json!({"orderId": format!("o-{key}"), "skuId": "gpu", "qty": qty, "buyerId": buyer, "idemKey": key});
    for (key, qty) in [("k1", 3), ("k2", 2)] {
        let r = call(c, "POST", "/api/inventory/reserve", Some(&shop), Some(reserve("bot", qty, key))).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
    let r = call(c, "POST", "/api/inventory/reserve", Some(&shop), Some(reserve("bot", 1, "k3"))).await;
    assert_eq!((r.status, r.code()), (StatusCode::TOO_MANY_REQUESTS, "RISK_CHECK_REQUIRED"), "{}", r.text);
    assert_eq!((r.body["limit"].as_u64(), r.body["held"].as_u64()), (Some(5), Some(5)));
    // A retry of an acknowledged reserve is answered as before.
    let r = call(c, "POST", "/api/inventory/reserve", Some(&shop), Some(reserve("bot", 2, "k2"))).await;
    assert_eq!((r.status, r.headers["idempotent-replayed"].to_str().unwrap()), (StatusCode::OK, "true"));
    // Another buyer of the same shop has its own allowance.
    let r = call(c, "POST", "/api/inventory/reserve", Some(&shop), Some(reserve("human", 5, "k4"))).await;
    assert_eq!(r.status, StatusCode::OK);
    let mut cleared = claims("shop", &["reserver"], Some("acme"));
    cleared["risk_cleared"] = json!(true);
    let cleared = SigningKey::Hs256(SECRET.to_vec()).sign(&cleared, None);
    let r = call(c, "POST", "/api/inventory/reserve", Some(&cleared), Some(reserve("bot", 1, "k5"))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let stock = call(c, "GET", "/api/inventory/gpu", Some(&token("r", &["reader"], None)), None).await;
    assert_eq!(stock.body["reserved"], 11, "the refused reserve held nothing");
    let metrics = c.get("/metrics").await.text;
    assert!(metrics.lines().any(|l| l == "inventory_risk_flags_total 1"), "{metrics}");
    s.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn es256_and_eddsa_tokens_verify_against_a_jwks_reloaded_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let (es, _) = SigningKey::generate_es256();
    let ed = SigningKey::generate_ed25519();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, json!({"keys": [es.jwk("es-1").unwrap()]}).to_string()).unwrap();
    let data = tempfile::tempdir().unwrap();
    let daemon =
        Daemon::spawn(data.path(), &["--auth", "jwt", "--jwt-jwks-file", jwks.to_str().unwrap(), "--shards", "1"]);
    let c = Client::new(&daemon.url);
    c.wait_ready().await;
    let reader = claims("u", &["reader"], None);
    let es_token = es.sign(&reader, Some("es-1"));
    let ed_token = ed.sign(&reader, Some("ed-1"));
    assert_eq!(call(&c, "GET", "/api/inventory/x", Some(&es_token), None).await.status, StatusCode::NOT_FOUND);
    assert_eq!(call(&c, "GET", "/api/inventory/x", Some(&ed_token), None).await.status, StatusCode::UNAUTHORIZED);
    // The new key set replaces the old one on SIGHUP.
    std::fs::write(&jwks, json!({"keys": [ed.jwk("ed-1").unwrap()]}).to_string()).unwrap();
    daemon.signal(libc::SIGHUP);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while call(&c, "GET", "/api/inventory/x", Some(&ed_token), None).await.status != StatusCode::NOT_FOUND {
        assert!(std::time::Instant::now() < deadline, "the JWKS was never reloaded");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(call(&c, "GET", "/api/inventory/x", Some(&es_token), None).await.status, StatusCode::UNAUTHORIZED);
    // A broken file leaves the keys in use.
    std::fs::write(&jwks, "{").unwrap();
    daemon.signal(libc::SIGHUP);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(call(&c, "GET", "/api/inventory/x", Some(&ed_token), None).await.status, StatusCode::NOT_FOUND);
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait().success());
}

#[test]
fn it_refuses_to_listen_beyond_loopback_without_an_auth_flag_or_with_an_open_secret() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap();
    let out = inventoryd(["--listen", "0.0.0.0:0", "--data-dir", dir]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--auth"), "{}", stderr(&out));
    assert!(!data.path().join("journal").exists(), "nothing was created");

    let keys = tempfile::tempdir().unwrap();
    let secret = keys.path().join("secret");
    std::fs::write(&secret, "s").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = inventoryd([
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        dir,
        "--auth",
        "jwt",
        "--jwt-hs256-secret-file",
        secret.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("chmod 600"), "{}", stderr(&out));
    let out = inventoryd(["--listen", "127.0.0.1:0", "--data-dir", dir, "--auth", "jwt"]);
    assert!(stderr(&out).contains("--jwt-hs256-secret-file"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_explicit_auth_none_runs_open_on_any_address() {
    let data = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_inventoryd"))
        .args(["--listen", "0.0.0.0:0", "--auth", "none", "--shards", "1", "--data-dir"])
        .arg(data.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
    assert!(line.starts_with("inventoryd listening on http://0.0.0.0:"), "{line}");
    let port = line.trim().rsplit(':').next().unwrap();
    let c = Client::new(&format!("http://127.0.0.1:{port}"));
    c.wait_ready().await;
    assert_eq!(c.get("/api/inventory/x").await.status, StatusCode::NOT_FOUND);
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_ids_reach_postgres_only_as_their_keyed_hash() {
    let Some(schema) = crate::pg::TestSchema::create("payment_hash").await else { return };
    let keys = tempfile::tempdir().unwrap();
    let key = secret_file(keys.path(), "payment-key", b"pepper");
    let options = Options {
        postgres: Some((crate::pg::url_for(crate::pg::PG_ADDR), schema.name.clone())),
        configure: Some(Arc::new(move |config: &mut Config| config.payment_id_key_file = Some(key.clone()))),
        ..Options::default()
    };
    let server = TestServer::start_with(options).await;
    let c = &server.client;
    c.receive("mug", 5).await;
    let id = c.reserve("o-1", "mug", 1, "r-1").await.body["reservationId"].as_str().unwrap().to_string();
    assert_eq!(c.confirm(&id, "card-4242", "c-1").await.status, StatusCode::OK);
    // A repeated callback under a new key still matches; another payment does not.
    assert_eq!(c.confirm(&id, "card-4242", "c-2").await.status, StatusCode::OK);
    assert_eq!(c.confirm(&id, "card-9999", "c-3").await.status, StatusCode::CONFLICT);
    let hold = c.get(&format!("/api/reservations/{id}")).await;
    let shown = hold.body["paymentId"].as_str().unwrap().to_string();
    assert!(shown.starts_with("hmac-") && !shown.contains("4242"), "{shown}");
    crate::pg::wait_caught_up(c, std::time::Duration::from_secs(20)).await;
    let row =
        schema.client.query_one(&format!("SELECT payment_id FROM {}.reservation", schema.name), &[]).await.unwrap();
    assert_eq!(row.get::<_, Option<String>>(0).as_deref(), Some(shown.as_str()));
    let plain = format!("SELECT count(*) FROM {}.inventory_txn WHERE detail LIKE '%4242%'", schema.name);
    assert_eq!(schema.count(&plain).await, 0);
    server.stop().await;
    schema.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventoryctl_signs_a_token_and_acts_with_it() {
    let keys = tempfile::tempdir().unwrap();
    let secret = secret_file(keys.path(), "hs256", SECRET);
    let secret = secret.to_str().unwrap();
    let data = tempfile::tempdir().unwrap();
    let daemon = Daemon::spawn(data.path(), &["--auth", "jwt", "--jwt-hs256-secret-file", secret, "--shards", "1"]);
    let c = Client::new(&daemon.url);
    c.wait_ready().await;
    let mint = |args: &[&str]| {
        let out = crate::support::inventoryctl([&["token", "--hs256-secret-file", secret][..], args].concat());
        (out.status.success(), crate::support::stdout(&out).trim().to_string(), stderr(&out))
    };
    let (ok, receiver, _) = mint(&["--sub", "dock", "--role", "receiver"]);
    assert!(ok);
    let body = json!({"skuId": "jar", "qty": 3, "idemKey": "in-1"});
    assert_eq!(call(&c, "POST", "/api/inventory/receive", Some(&receiver), Some(body)).await.status, StatusCode::OK);
    let (_, operator, _) = mint(&["--sub", "ann", "--role", "operator", "--ttl", "5m"]);
    let ctl = |token: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_inventoryctl"))
            .args(["sku", "freeze", "jar", "--reason", "count", "--operator", "someone-else", "--url", &daemon.url])
            .env("INVENTORY_TOKEN", token)
            .output()
            .unwrap()
    };
    let refused = ctl(&receiver);
    assert!(!refused.status.success() && stderr(&refused).contains("FORBIDDEN"), "{}", stderr(&refused));
    let done = ctl(&operator);
    assert!(done.status.success(), "{}", stderr(&done));
    let (ok, _, err) = mint(&["--sub", "x", "--role", "superuser"]);
    assert!(!ok && err.contains("unknown role"), "{err}");
    // An ES256 key pair: the private key signs, the JWKS verifies.
    let out = crate::support::inventoryctl(["keygen", "--out-dir", keys.path().join("es").to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let es = keys.path().join("es/es256.pk8");
    let out = crate::support::inventoryctl([
        "token",
        "--es256-key-file",
        es.to_str().unwrap(),
        "--kid",
        "k1",
        "--sub",
        "u",
        "--role",
        "reader",
    ]);
    let es_token = crate::support::stdout(&out).trim().to_string();
    let jwks = std::fs::read_to_string(keys.path().join("es/jwks.json")).unwrap();
    let keyset = inventory_gateway::auth::jwt::KeySet {
        hs256: None,
        public: inventory_gateway::auth::jwt::parse_jwks(&jwks).unwrap(),
    };
    let claims = inventory_gateway::auth::jwt::verify(&es_token, &keyset, &Default::default(), now()).unwrap();
    assert_eq!(claims.roles, ["reader"]);
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait().success());
    // The audit log names the token's subject, not the --operator given.
    let out = crate::support::inventoryctl(["audit", "list", "--data-dir", data.path().to_str().unwrap()]);
    let log = crate::support::stdout(&out);
    assert!(log.contains("ann") && !log.contains("someone-else"), "{log}{}", stderr(&out));
}
