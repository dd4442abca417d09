//! The harness's side of `max --lines 3`, against a stand-in for the
//! service's multi-line order endpoint: a small in-process server answering
//! the contract the harness is written against (receive, stock, order
//! reserve, order status), all or nothing per order, with a store small
//! enough to sell out. It checks the probe, the orders sent and read, the
//! refusals counted, the audit of granted and refused orders, and the
//! report; `max_orders_smoke` in `smoke.rs` runs the same against the
//! service itself.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

#[derive(Default)]
struct Stock {
    available: i64,
    reserved: i64,
}

#[derive(Default)]
struct State {
    stock: HashMap<String, Stock>,
    /// Holds by order: (reservation id, SKU, units).
    orders: HashMap<String, Vec<(String, String, i64)>>,
    /// Answers by idempotency key.
    replies: HashMap<String, (u16, Value)>,
    holds: u64,
    /// Whether it answers multi-line orders at all.
    serves_orders: bool,
}

type Shared = Arc<Mutex<State>>;

fn reply(status: u16, body: Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
    response
}

fn decode(segment: &str) -> String {
    percent_encoding::percent_decode_str(segment).decode_utf8_lossy().into_owned()
}

/// Reserves every line or none: 200 with a reservation per line, or 409
/// `ORDER_NOT_RESERVABLE` with each line's code.
fn reserve_order(state: &mut State, order_id: &str, body: &Value) -> (u16, Value) {
    let key = body["idemKey"].as_str().unwrap_or_default().to_string();
    if let Some(stored) = state.replies.get(&key) {
        return stored.clone();
    }
    let lines: Vec<(String, i64)> = body["lines"]
        .as_array()
        .map(|lines| {
            lines
                .iter()
                .map(|l| (l["skuId"].as_str().unwrap_or_default().into(), l["qty"].as_i64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default();
    if lines.is_empty() || key.is_empty() {
        return (400, json!({"code": "INVALID_FIELD", "message": "lines and idemKey are required"}));
    }
    let short: Vec<bool> =
        lines.iter().map(|(sku, qty)| state.stock.get(sku).is_none_or(|s| s.available < *qty)).collect();
    let answer = if short.iter().any(|&s| s) {
        let coded: Vec<Value> = lines
            .iter()
            .zip(&short)
            .map(|((sku, _), &short)| {
                let available = state.stock.get(sku).map_or(0, |s| s.available);
                match short {
                    true => json!({"skuId": sku, "warehouseId": "default", "code": "INSUFFICIENT_STOCK", "available": available}),
                    false => json!({"skuId": sku, "warehouseId": "default", "code": "OK"}),
                }
            })
            .collect();
        (409, json!({"code": "ORDER_NOT_RESERVABLE", "message": "a line cannot be reserved", "lines": coded}))
    } else {
        let mut granted = Vec::new();
        for (sku, qty) in &lines {
            let stock = state.stock.get_mut(sku).expect("checked");
            stock.available -= qty;
            stock.reserved += qty;
            state.holds += 1;
            let id = format!("rsv-0-{}", state.holds);
            state.orders.entry(order_id.to_string()).or_default().push((id.clone(), sku.clone(), *qty));
            granted.push(json!({"skuId": sku, "warehouseId": "default", "qty": qty, "reservationId": id}));
        }
        let expire_at = "2099-01-01T00:00:00.000Z";
        (200, json!({"orderId": order_id, "status": "RESERVED", "expireAt": expire_at, "lines": granted}))
    };
    state.replies.insert(key, answer.clone());
    answer
}

async fn handle(state: Shared, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let mut state = state.lock().unwrap();
    let orders = state.serves_orders;
    let (status, answer) = match (&method, segments.as_slice()) {
        (&Method::GET, ["readyz"]) => (200, json!({})),
        (&Method::POST, ["api", "inventory", "receive"]) => {
            let sku = body["skuId"].as_str().unwrap_or_default().to_string();
            let qty = body["qty"].as_i64().unwrap_or(0);
            let key = body["idemKey"].as_str().unwrap_or_default().to_string();
            if state.replies.insert(key, (200, json!({}))).is_none() {
                state.stock.entry(sku).or_default().available += qty;
            }
            (200, json!({}))
        }
        (&Method::GET, ["api", "inventory", sku]) => match state.stock.get(&decode(sku)) {
            Some(s) => (200, json!({"available": s.available, "reserved": s.reserved, "sold": 0})),
            None => (404, json!({"code": "SKU_NOT_FOUND", "message": "no such SKU"})),
        },
        (&Method::POST, ["api", "orders", order, "reserve"]) if orders => {
            reserve_order(&mut state, &decode(order), &body)
        }
        (&Method::GET, ["api", "orders", order, "inventory-status"]) => {
            let order = decode(order);
            let holds: Vec<Value> = state
                .orders
                .get(&order)
                .into_iter()
                .flatten()
                .map(|(id, sku, qty)| {
                    json!({"reservationId": id, "orderId": order, "skuId": sku, "warehouseId": "default",
                        "qty": qty, "status": "RESERVED"})
                })
                .collect();
            (200, json!({"orderId": order, "reservations": holds}))
        }
        _ => (404, json!({"code": "NOT_FOUND", "message": format!("no route for {method} {path}")})),
    };
    Ok(reply(status, answer))
}

/// Serves the stand-in (with the order endpoint, or without it) on a port
/// of its own, on a thread of its own.
fn start_stand_in(serves_orders: bool) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let state = Shared::new(Mutex::new(State { serves_orders, ..State::default() }));
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let state = state.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| handle(state.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    });
    addr
}

fn report(dir: &Path) -> Value {
    let path = std::fs::read_dir(dir).unwrap().flatten().map(|e| e.path().join("report.json")).find(|p| p.is_file());
    serde_json::from_slice(&std::fs::read(path.expect("a report")).unwrap()).unwrap()
}

#[test]
fn orders_of_three_lines_are_sent_read_and_audited() {
    let addr = start_stand_in(true);
    let out = tempfile::tempdir().unwrap();
    // 20 SKUs of 30 units: orders of 3 lines sell them out within the run,
    // so refusals come back too.
    let output = Command::new(env!("CARGO_BIN_EXE_inventory-bench"))
        .args(["run", "--scenario", "max", "--mix", "reserves", "--lines", "3"])
        .args(["--catalogue", "20", "--hot-skus", "0", "--stock", "30", "--connections", "4", "--duration", "2s"])
        .args(["--no-progress", "--target-url", &format!("http://{addr}")])
        .arg("--out-dir")
        .arg(out.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{}\n{stdout}\n{stderr}", output.status);
    let report = report(out.path());
    let t = &report["targets"][0];
    let orders = &t["orders"];
    // 20 x 30 units in orders of 3 distinct SKUs: at most 200 orders.
    assert_eq!(orders["lines"], 3, "{stdout}");
    let granted = orders["orders_ok"].as_u64().unwrap();
    assert!(granted > 0 && granted <= 200, "{stdout}");
    assert!(
        (orders["lines_ok_per_s"].as_f64().unwrap() - 3.0 * orders["orders_ok_per_s"].as_f64().unwrap()).abs() < 1e-6
    );
    assert!(orders["refused"].as_u64().unwrap() > 0, "{stdout}");
    assert!(orders["refused_lines"]["INSUFFICIENT_STOCK"].as_u64().unwrap() > 0, "{stdout}");
    assert_eq!(t["ops"]["order"]["errors"], 0, "{stdout}");
    let audit = &t["audit"];
    assert_eq!(audit["orders_acked"], granted, "{stdout}");
    assert_eq!(audit["orders_checked"], granted, "{stdout}");
    assert_eq!(audit["lost_acked_orders"], 0, "{stdout}");
    assert!(audit["refused_orders_checked"].as_u64().unwrap() > 0, "{stdout}");
    assert_eq!(audit["refused_orders_holding"], 0, "{stdout}");
    assert_eq!(audit["oversold_units"], 0, "{stdout}");
    assert_eq!(audit["skus_checked"], 20, "{stdout}");
    assert!(stdout.contains("orders of 3 lines:"), "{stdout}");
    println!("{stdout}");
}

#[test]
fn a_target_without_multi_line_orders_is_refused_before_the_run() {
    let addr = start_stand_in(false);
    let out = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_inventory-bench"))
        .args(["run", "--scenario", "max", "--mix", "reserves", "--lines", "3", "--catalogue", "20", "--hot-skus", "0"])
        .args(["--duration", "1s", "--no-progress", "--target-url", &format!("http://{addr}")])
        .arg("--out-dir")
        .arg(out.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--lines needs POST /api/orders/{orderId}/reserve"), "{stderr}");
}
