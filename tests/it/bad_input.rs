//! Every kind of bad input gets a 4xx `{code, message}`, changes nothing,
//! and leaves the keep-alive connection usable.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{Options, TestServer};

/// A bare HTTP/1.1 connection, so the test sees exactly what happens to it.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(url: &str) -> Conn {
        let addr = url.trim_start_matches("http://");
        Conn { stream: TcpStream::connect(addr).await.unwrap(), buf: Vec::new() }
    }

    async fn send(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, Value) {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n", body.len());
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        self.stream.write_all(req.as_bytes()).await.unwrap();
        self.stream.write_all(body).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), self.read_response()).await.expect("no response")
    }

    async fn read_response(&mut self) -> (u16, Value) {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8(self.buf[..end].to_vec()).unwrap();
                let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap_or(0);
                while self.buf.len() < end + 4 + length {
                    self.fill().await;
                }
                let body = self.buf[end + 4..end + 4 + length].to_vec();
                self.buf.drain(..end + 4 + length);
                return (status, serde_json::from_slice(&body).unwrap_or(Value::Null));
            }
            self.fill().await;
        }
    }

    async fn fill(&mut self) {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "server closed the connection");
        self.buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_clearly_and_changes_nothing() {
    let server = TestServer::start_with(Options { max_qty: 100, ..Default::default() }).await;
    let c = &server.client;
    c.receive("widget", 50).await;
    let id = c.reserve("o-good", "widget", 1, "good-key").await.body["reservationId"].as_str().unwrap().to_string();
    let before = c.get("/api/inventory/widget").await.text;
    let long = "x".repeat(300);
    let json_ct = [("Content-Type", "application/json")];
    let cases: Vec<(&str, String, Vec<u8>, u16, &str)> = vec![
        ("POST", "/api/inventory/reserve".into(), b"{not json".to_vec(), 400, "MALFORMED_JSON"),
        ("POST", "/api/inventory/reserve".into(), b"".to_vec(), 400, "MALFORMED_JSON"),
        (
            "POST",
            "/api/inventory/reserve".into(),
            br#"{"orderId":"o-trail","skuId":"widget","qty":1,"idemKey":"t"} trailing"#.to_vec(),
            400,
            "MALFORMED_JSON",
        ),
        ("POST", "/api/inventory/reserve".into(), b"[1,2]".to_vec(), 400, "INVALID_FIELD"),
        (
            "POST",
            "/api/inventory/reserve".into(),
            br#"{"skuId":"widget","qty":1,"idemKey":"a"}"#.to_vec(),
            400,
            "INVALID_FIELD",
        ),
        (
            "POST",
            "/api/inventory/reserve".into(),
            br#"{"orderId":"o","skuId":"widget","qty":"1","idemKey":"b"}"#.to_vec(),
            400,
            "INVALID_FIELD",
        ),
        (
            "POST",
            "/api/inventory/reserve".into(),
            br#"{"orderId":"o","skuId":"widget","qty":1.5,"idemKey":"c"}"#.to_vec(),
            400,
            "INVALID_FIELD",
        ),
        (
            "POST",
            "/api/inventory/reserve".into(),
            br#"{"orderId":"o","skuId":"widget","qty":0,"idemKey":"d"}"#.to_vec(),
            400,
            "INVALID_FIELD",
        ),
        (
            "POST",
            "/api/inventory/reserve".into(),
            br#"{"orderId":"o","skuId":"widget","qty":-3,"idemKey":"e"}"#.to_vec(),
            400,
            "INVALID_FIELD",
        ),
        (
            "POST",
            "/api/inventory/reserve".into(),
            br#"{"orderId":"o","skuId":"widget","qty":101,"idemKey":"f"}"#.to_vec(),
            400,
            "INVALID_FIELD",
        ),
        (
            "POST",
            "/api/inventory/reserve".into(),
            br#"{"orderId":"o","skuId":"widget","qty":1}"#.to_vec(),
            400,
            "IDEMPOTENCY_KEY_REQUIRED",
        ),
        (
            "POST",
            "/api/inventory/reserve".into(),
            br#"{"orderId":"","skuId":"widget","qty":1,"idemKey":"g"}"#.to_vec(),
            400,
            "INVALID_FIELD",
        ),
        (
            "POST",
            "/api/inventory/reserve".into(),
            format!(r#"{{"orderId":"{long}","skuId":"widget","qty":1,"idemKey":"h"}}"#).into_bytes(),
            400,
            "INVALID_FIELD",
        ),
        (
            "POST",
            "/api/inventory/reserve".into(),
            format!(r#"{{"orderId":"o","skuId":"widget","qty":1,"idemKey":"{long}"}}"#).into_bytes(),
            400,
            "INVALID_FIELD",
        ),
        (
            "POST",
            "/api/inventory/reserve".into(),
            br#"{"orderId":"o","skuId":"widget","qty":1,"idemKey":"i","ttlSeconds":0}"#.to_vec(),
            400,
            "INVALID_FIELD",
        ),
        (
            "POST",
            "/api/inventory/reserve".into(),
            br#"{"orderId":"o\u0001","skuId":"widget","qty":1,"idemKey":"j"}"#.to_vec(),
            400,
            "INVALID_FIELD",
        ),
        (
            "POST",
            "/api/inventory/receive".into(),
            br#"{"skuId":"widget","qty":100000000,"idemKey":"k"}"#.to_vec(),
            400,
            "INVALID_FIELD",
        ),
        (
            "POST",
            "/api/inventory/confirm".into(),
            br#"{"reservationId":"bogus","paymentId":"p","idemKey":"l"}"#.to_vec(),
            400,
            "INVALID_FIELD",
        ),
        (
            "POST",
            "/api/inventory/confirm".into(),
            format!(r#"{{"reservationId":"{id}","idemKey":"m"}}"#).into_bytes(),
            400,
            "INVALID_FIELD",
        ),
        (
            "POST",
            "/api/inventory/release".into(),
            format!(r#"{{"reservationId":"{id}","idemKey":"n"}}"#).into_bytes(),
            400,
            "INVALID_FIELD",
        ),
        ("GET", "/api/inventory/reserve".into(), vec![], 405, "METHOD_NOT_ALLOWED"),
        ("DELETE", "/api/inventory/widget".into(), vec![], 405, "METHOD_NOT_ALLOWED"),
        ("POST", "/api/reservations/rsv-0-1".into(), vec![], 405, "METHOD_NOT_ALLOWED"),
        ("GET", "/api/nothing/here".into(), vec![], 404, "NOT_FOUND"),
        ("GET", "/".into(), vec![], 404, "NOT_FOUND"),
        ("GET", "/api/reservations/not-an-id".into(), vec![], 400, "INVALID_FIELD"),
        ("GET", format!("/api/inventory/{long}"), vec![], 400, "INVALID_FIELD"),
    ];
    // All of them on one keep-alive connection: it must survive each.
    let mut conn = Conn::open(&server.url).await;
    for (method, path, body, status, code) in &cases {
        let (got, reply) = conn.send(method, path, &json_ct, body).await;
        let what = format!("{method} {path} {}", String::from_utf8_lossy(&body[..body.len().min(80)]));
        assert_eq!(got, *status, "{what}: {reply}");
        assert_eq!(reply["code"], *code, "{what}: {reply}");
        assert!(reply["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: {reply}");
    }
    // A wrong field deep in a body is named by its path.
    let batch = br#"{"idemKey":"b1","items":[{"skuId":"widget","qty":1},{"skuId":"gadget","qty":"x"}]}"#;
    let (status, reply) = conn.send("POST", "/api/inventory/receive-batch", &json_ct, batch).await;
    assert_eq!((status, reply["code"].as_str()), (400, Some("INVALID_FIELD")), "{reply}");
    assert!(reply["message"].as_str().is_some_and(|m| m.starts_with("items[1].qty: ")), "{reply}");
    let (status, _) = conn.send("GET", "/api/inventory/widget", &[], b"").await;
    assert_eq!(status, 200, "the connection still serves good requests");

    // Nothing changed: same stock, only the one good hold.
    assert_eq!(c.get("/api/inventory/widget").await.text, before);
    assert_eq!(c.get("/api/orders/o/inventory-status").await.body["reservations"], json!([]));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_get_413() {
    let server = TestServer::start().await;
    let big = format!(r#"{{"orderId":"o","skuId":"s","qty":1,"idemKey":"k","pad":"{}"}}"#, "p".repeat(70 * 1024));
    let mut conn = Conn::open(&server.url).await;
    let (status, reply) =
        conn.send("POST", "/api/inventory/reserve", &[("Content-Type", "application/json")], big.as_bytes()).await;
    assert_eq!((status, reply["code"].as_str()), (413, Some("PAYLOAD_TOO_LARGE")));
    // Without a Content-Length (chunked), the limit holds too.
    let mut conn = Conn::open(&server.url).await;
    let head = "POST /api/inventory/reserve HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n";
    let mut request = head.as_bytes().to_vec();
    for chunk in big.as_bytes().chunks(8 * 1024) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    // The server may answer and stop reading before all of it is sent.
    let _ = conn.stream.write_all(&request).await;
    let (status, reply) =
        tokio::time::timeout(Duration::from_secs(10), conn.read_response()).await.expect("no response");
    assert_eq!((status, reply["code"].as_str()), (413, Some("PAYLOAD_TOO_LARGE")));
    server.stop().await;
}

/// serde reads a struct from an array of its fields in order too: a reserve
/// sent as `["o-1", "sku", 1, ...]` held units, and a reconcile sent as
/// `[true]` repaired. Bodies, and the rows of a batch, are objects only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_is_an_array_of_the_fields_is_refused_and_changes_nothing() {
    let server = TestServer::start().await;
    let c = &server.client;
    c.receive("arrays", 5).await;
    let cases = [
        ("/api/inventory/reserve", json!(["o-1", "arrays", 2, "a1", null, null, null])),
        ("/api/admin/reconcile", json!([true])),
        ("/api/admin/capacity", json!([1000])),
        ("/api/inventory/receive-batch", json!({"idemKey": "a2", "items": [["arrays", null, 3]]})),
        ("/api/inventory/receive-batch", json!([[{"skuId": "arrays", "qty": 3}], "a3", null])),
    ];
    for (path, body) in cases {
        let r = c.post(path, body.clone()).await;
        assert_eq!((r.status.as_u16(), r.code()), (400, "INVALID_FIELD"), "{path} {body}: {}", r.text);
    }
    assert_eq!(c.levels("arrays").await, (5, 0, 0));
    assert_eq!(c.get("/api/orders/o-1/inventory-status").await.body["reservations"], json!([]));
    server.stop().await;
}
