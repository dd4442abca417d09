//! The transport: HTTPS and mutual TLS, the limits on slow, idle and
//! surplus connections, and TLS to PostgreSQL.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use inventory_gateway::Config;
use inventory_persistence::Schema;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_rustls::TlsConnector;

use crate::pg::{url_for, wait_caught_up, PrivatePg, TestSchema, PG_ADDR};
use crate::support::{inventoryd, stderr, Client, Options, TestServer};

// ----- certificates ------------------------------------------------------------

/// A CA of the test's own, and the certificates it issues, as PEM files.
struct Pki {
    dir: tempfile::TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, format!("{name} CA"));
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        Pki { dir, ca }
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Issues a certificate for `names` (server) or for a client; returns
    /// the paths of its PEM certificate and key.
    fn issue(&self, stem: &str, names: &[&str], client: bool) -> (PathBuf, PathBuf) {
        let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, stem);
        params.extended_key_usages =
            vec![if client { ExtendedKeyUsagePurpose::ClientAuth } else { ExtendedKeyUsagePurpose::ServerAuth }];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let (cert_path, key_path) =
            (self.dir.path().join(format!("{stem}.pem")), self.dir.path().join(format!("{stem}.key")));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }
}

/// A TLS client trusting `ca`, offering `alpn`, with a client certificate
/// if given.
fn tls_client(ca: &Path, identity: Option<&(PathBuf, PathBuf)>, alpn: &[&[u8]]) -> TlsConnector {
    inventory_gateway::tls::install_default_provider();
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = ClientConfig::builder_with_provider(Arc::new(inventory_gateway::tls::provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert).unwrap().map(Result::unwrap).collect();
            builder.with_client_auth_cert(chain, PrivateKeyDer::from_pem_file(key).unwrap()).unwrap()
        }
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

// ----- raw HTTP/1.1 --------------------------------------------------------------

/// One response read off a connection: status, headers (lowercase names)
/// and body (by its Content-Length).
#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// Reads one response; an error if the connection ends before it is whole.
async fn read_response<S: AsyncRead + Unpin>(stream: &mut S) -> io::Result<Response> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("closed after {} bytes", buf.len())));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("not a response: {head:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers.iter().find(|(n, _)| n == "content-length").map_or(0, |(_, v)| v.parse().unwrap_or(0));
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed inside the body"));
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Ok(Response { status, headers, body: String::from_utf8_lossy(&body).into_owned() })
}

/// Sends `GET path` and reads the response.
async fn get<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, path: &str) -> io::Result<Response> {
    stream.write_all(format!("GET {path} HTTP/1.1\r\nhost: test\r\n\r\n").as_bytes()).await?;
    read_response(stream).await
}

/// How long until the server closes `stream` (reading and dropping
/// whatever it sends), at most `within`; `None` if it is still open then.
async fn closed_within<S: AsyncRead + Unpin>(stream: &mut S, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut sink = [0u8; 1024];
    let closed = tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    closed.ok().map(|()| started.elapsed())
}

/// The value of one metric series in the exposition text (0 if absent).
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

// ----- a server with the transport's settings ---------------------------------------

/// The real server in process, configured by the test.
struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<Result<(), inventory_gateway::ServerError>>>,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts a server; plain HTTP unless `configure` sets up TLS. Ready
    /// when it returns if `ready` can reach it.
    async fn start(configure: impl FnOnce(&mut Config)) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::new(dir.path());
        config.shards = Some(1);
        config.pin_threads = false;
        config.http_threads = Some(2);
        configure(&mut config);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let done = tokio::spawn(inventory_gateway::run(config, listener, async {
            let _ = stopped.await;
        }));
        Server { addr, stop: Some(stop), done: Some(done), _dir: dir }
    }

    /// Starts a plain-HTTP server and waits until it is ready.
    async fn plain(configure: impl FnOnce(&mut Config)) -> (Server, Client) {
        let server = Server::start(configure).await;
        let client = Client::new(&format!("http://{}", server.addr));
        client.wait_ready().await;
        (server, client)
    }

    /// A TLS session to the server.
    async fn tls(&self, connector: &TlsConnector) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(self.addr).await?;
        connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await
    }

    /// `GET path` over a new TLS session.
    async fn https_get(&self, connector: &TlsConnector, path: &str) -> io::Result<Response> {
        let mut tls = self.tls(connector).await?;
        get(&mut tls, path).await
    }

    async fn wait_ready_tls(&self, connector: &TlsConnector) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = self.https_get(connector, "/readyz").await {
                if r.status == 200 {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "the HTTPS server never became ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        self.done.take().unwrap().await.unwrap().unwrap();
    }
}

fn tls_flags(config: &mut Config, cert: &(PathBuf, PathBuf), client_ca: Option<&Path>) {
    config.tls_cert = Some(cert.0.clone());
    config.tls_key = Some(cert.1.clone());
    config.tls_client_ca = client_ca.map(Path::to_path_buf);
}

// ----- HTTPS ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_http_1_1_and_nothing_else() {
    let pki = Pki::new("https");
    let cert = pki.issue("server", &["localhost"], false);
    let server = Server::start(|c| tls_flags(c, &cert, None)).await;
    let client = tls_client(&pki.ca(), None, &[b"http/1.1"]);
    server.wait_ready_tls(&client).await;

    let mut tls = server.tls(&client).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let r = get(&mut tls, "/api/inventory/nothing-here").await.unwrap();
    assert_eq!((r.status, r.json()["code"].as_str()), (404, Some("SKU_NOT_FOUND")), "{r:?}");
    // The same session serves the next request (keep-alive).
    let r = get(&mut tls, "/readyz").await.unwrap();
    assert_eq!(r.status, 200, "{r:?}");

    // A client that speaks only HTTP/2 is refused in the handshake.
    let h2_only = tls_client(&pki.ca(), None, &[b"h2"]);
    assert!(server.tls(&h2_only).await.is_err(), "a handshake without http/1.1 was accepted");
    // Plain HTTP on the HTTPS port gets no HTTP answer.
    let mut plain = TcpStream::connect(server.addr).await.unwrap();
    assert!(get(&mut plain, "/readyz").await.is_err(), "plain HTTP answered on the HTTPS port");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_takes_only_clients_with_a_certificate_from_the_client_ca() {
    let (servers, clients, strangers) = (Pki::new("servers"), Pki::new("clients"), Pki::new("strangers"));
    let cert = servers.issue("server", &["localhost"], false);
    let server = Server::start(|c| tls_flags(c, &cert, Some(&clients.ca()))).await;
    let good = clients.issue("good-client", &[], true);
    let with_good = tls_client(&servers.ca(), Some(&good), &[b"http/1.1"]);
    server.wait_ready_tls(&with_good).await;

    let r = server.https_get(&with_good, "/readyz").await.unwrap();
    assert_eq!(r.status, 200, "{r:?}");

    let without = tls_client(&servers.ca(), None, &[b"http/1.1"]);
    let refused = server.https_get(&without, "/readyz").await;
    assert!(refused.is_err(), "a client without a certificate was served: {refused:?}");

    let stranger = strangers.issue("stranger", &[], true);
    let with_stranger = tls_client(&servers.ca(), Some(&stranger), &[b"http/1.1"]);
    let refused = server.https_get(&with_stranger, "/readyz").await;
    assert!(refused.is_err(), "a client with another CA's certificate was served: {refused:?}");

    // The good client still gets in, and the refusals were counted.
    let metrics = server.https_get(&with_good, "/metrics").await.unwrap().body;
    assert!(metric(&metrics, r#"inventory_connections_closed_total{reason="tls_handshake"}"#) >= 2.0, "{metrics}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_connection_that_never_says_hello_is_closed_at_the_header_timeout() {
    let pki = Pki::new("silent");
    let cert = pki.issue("server", &["localhost"], false);
    let server = Server::start(|c| {
        tls_flags(c, &cert, None);
        c.header_read_timeout_secs = 1;
    })
    .await;
    server.wait_ready_tls(&tls_client(&pki.ca(), None, &[b"http/1.1"])).await;
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let closed = closed_within(&mut silent, Duration::from_secs(5)).await;
    let took = closed.expect("a connection without a handshake was still open after 5 s");
    assert!(took >= Duration::from_millis(900), "closed before the header timeout: {took:?}");
    server.stop().await;
}

#[test]
fn a_start_with_a_client_ca_but_no_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("refused");
    let data = dir.path().display().to_string();
    let ca = pki.ca().display().to_string();
    let out = inventoryd(["--listen", "127.0.0.1:0", "--data-dir", &data, "--tls-client-ca", &ca]);
    assert!(!out.status.success());
    let message = stderr(&out);
    assert!(message.contains("--tls-client-ca") && message.contains("--tls-cert"), "{message}");

    let (cert, _) = pki.issue("server", &["localhost"], false);
    let cert = cert.display().to_string();
    let out = inventoryd(["--listen", "127.0.0.1:0", "--data-dir", &data, "--tls-cert", &cert]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--tls-key"), "{}", stderr(&out));
    // Neither started its journal.
    assert!(!dir.path().join("journal").exists());
}

// ----- slow, idle and surplus connections ---------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_headers_are_closed_at_the_header_timeout_while_requests_go_on() {
    const STALLED: usize = 2_000;
    const TIMEOUT: Duration = Duration::from_secs(2);
    let (server, client) = Server::plain(|c| c.header_read_timeout_secs = TIMEOUT.as_secs()).await;
    client.receive("stall-sku", 1_000_000).await;

    // Each sends half a request header and stops; each waits for the close.
    let (opened_tx, mut opened_rx) = tokio::sync::mpsc::channel::<()>(STALLED);
    let mut stalled = Vec::with_capacity(STALLED);
    let addr = server.addr;
    for _ in 0..STALLED {
        let opened_tx = opened_tx.clone();
        stalled.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            let opened = Instant::now();
            stream.write_all(b"POST /api/inventory/reserve HTTP/1.1\r\nhost: test\r\ncontent-ty").await.unwrap();
            opened_tx.send(()).await.unwrap();
            let closed = closed_within(&mut stream, TIMEOUT + Duration::from_secs(20)).await;
            (opened.elapsed(), closed.map(|_| opened.elapsed()))
        }));
        // Not more at once than the listen backlog takes.
        if stalled.len() % 200 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    drop(opened_tx);
    for _ in 0..STALLED {
        opened_rx.recv().await.expect("every stalled connection opened");
    }

    // Meanwhile the service answers as usual, each request at once.
    let mut slowest = Duration::ZERO;
    for i in 0..50 {
        let started = Instant::now();
        let r = client.reserve(&format!("stall-order-{i}"), "stall-sku", 1, &format!("stall:{i}")).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let r = Client::new(&client.url).get("/readyz").await;
        assert_eq!(r.status, 200, "{}", r.text);
        slowest = slowest.max(started.elapsed());
    }
    assert!(slowest < Duration::from_millis(1_000), "a request took {slowest:?} beside the stalled connections");

    let mut late = Vec::new();
    for task in stalled {
        let (_, closed) = task.await.unwrap();
        match closed {
            // The server's clock starts at accept, after the client's.
            Some(after) if after >= TIMEOUT - Duration::from_millis(100) && after <= TIMEOUT * 3 => {}
            other => late.push(other),
        }
    }
    assert!(
        late.is_empty(),
        "{} of {STALLED} stalled connections closed off time: {:?}",
        late.len(),
        &late[..5.min(late.len())]
    );

    let metrics = client.get("/metrics").await.text;
    assert!(
        metric(&metrics, r#"inventory_connections_closed_total{reason="header_timeout"}"#) >= STALLED as f64,
        "{metrics}"
    );
    // Only the client's own keep-alive connections remain.
    assert!(metric(&metrics, "inventory_connections_open") < 20.0, "{metrics}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sends_nothing_is_closed_at_the_header_timeout() {
    let (server, client) = Server::plain(|c| c.header_read_timeout_secs = 1).await;
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let took = closed_within(&mut silent, Duration::from_secs(5)).await.expect("still open after 5 s");
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(3), "closed after {took:?}");
    let metrics = client.get("/metrics").await.text;
    assert!(metric(&metrics, r#"inventory_connections_closed_total{reason="header_timeout"}"#) >= 1.0, "{metrics}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_at_the_idle_timeout_not_the_header_timeout() {
    let (server, client) = Server::plain(|c| {
        c.header_read_timeout_secs = 1;
        c.idle_timeout_secs = 3;
    })
    .await;
    let mut conn = TcpStream::connect(server.addr).await.unwrap();
    let r = get(&mut conn, "/readyz").await.unwrap();
    assert_eq!(r.status, 200);
    let answered = Instant::now();
    // Past the header timeout the idle connection is still open and serves.
    tokio::time::sleep(Duration::from_millis(1_800)).await;
    let r = get(&mut conn, "/readyz").await.expect("an idle connection was closed before the idle timeout");
    assert_eq!(r.status, 200);
    assert!(answered.elapsed() < Duration::from_secs(3));
    let answered = Instant::now();
    let took = closed_within(&mut conn, Duration::from_secs(8)).await.expect("still open 8 s after the last request");
    let idle = answered.elapsed();
    assert!(took >= Duration::from_millis(2_800) && idle < Duration::from_millis(5_500), "closed after {idle:?}");

    // A request header that begins on an idle connection must then be
    // complete within the header timeout, not the idle one.
    let mut conn = TcpStream::connect(server.addr).await.unwrap();
    assert_eq!(get(&mut conn, "/readyz").await.unwrap().status, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    conn.write_all(b"GET /readyz HTTP/1.1\r\nhost: te").await.unwrap();
    let took = closed_within(&mut conn, Duration::from_secs(5)).await.expect("a stalled header stayed open");
    assert!(took >= Duration::from_millis(900) && took < Duration::from_millis(2_500), "closed after {took:?}");

    let metrics = client.get("/metrics").await.text;
    assert!(metric(&metrics, r#"inventory_connections_closed_total{reason="idle_timeout"}"#) >= 1.0, "{metrics}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_does_not_arrive_in_time_is_answered_408() {
    let (server, client) = Server::plain(|c| c.body_read_timeout_secs = 1).await;
    let mut conn = TcpStream::connect(server.addr).await.unwrap();
    let sent = Instant::now();
    conn.write_all(
        b"POST /api/inventory/receive HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n\
          content-length: 100\r\n\r\n{\"skuId\": \"slow\",",
    )
    .await
    .unwrap();
    let r = tokio::time::timeout(Duration::from_secs(5), read_response(&mut conn))
        .await
        .expect("no answer 5 s after the body stalled")
        .unwrap();
    let took = sent.elapsed();
    assert_eq!((r.status, r.json()["code"].as_str()), (408, Some("REQUEST_TIMEOUT")), "{r:?}");
    assert!(r.json()["message"].is_string());
    assert_eq!(r.header("connection"), Some("close"));
    assert!(took >= Duration::from_millis(900), "answered after {took:?}");
    // And the connection is closed after it.
    closed_within(&mut conn, Duration::from_secs(2)).await.expect("open after the 408");

    // A body that arrives whole in time is served as usual.
    let r = client.post("/api/inventory/receive", json!({"skuId": "slow", "qty": 1, "idemKey": "slow:1"})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let metrics = client.get("/metrics").await.text;
    assert!(metric(&metrics, r#"inventory_connections_closed_total{reason="body_timeout"}"#) >= 1.0, "{metrics}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_over_the_limit_is_refused_at_once() {
    let server = Server::start(|c| c.max_connections = 3).await;
    let mut open = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    // Three connections, each served once (so each is surely counted).
    while open.len() < 3 {
        let mut conn = TcpStream::connect(server.addr).await.unwrap();
        match get(&mut conn, "/readyz").await {
            Ok(r) if r.status == 200 => open.push(conn),
            _ => {
                assert!(Instant::now() < deadline, "never ready");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    let started = Instant::now();
    let mut surplus = TcpStream::connect(server.addr).await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(2), read_response(&mut surplus))
        .await
        .expect("the surplus connection waited")
        .expect("an answer before the close");
    assert_eq!((r.status, r.json()["code"].as_str()), (503, Some("TOO_MANY_CONNECTIONS")), "{r:?}");
    assert_eq!(r.header("connection"), Some("close"));
    closed_within(&mut surplus, Duration::from_secs(1)).await.expect("the surplus connection stayed open");
    assert!(started.elapsed() < Duration::from_millis(500), "refused after {:?}", started.elapsed());
    // The ones already open still serve.
    assert_eq!(get(&mut open[0], "/readyz").await.unwrap().status, 200);

    // Once one closes, a new one is taken.
    drop(open.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    let metrics = loop {
        let mut conn = TcpStream::connect(server.addr).await.unwrap();
        let r = get(&mut conn, "/metrics").await.unwrap();
        if r.status == 200 {
            break r.body;
        }
        assert!(Instant::now() < deadline, "no connection was taken after one closed: {r:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(metric(&metrics, r#"inventory_connections_closed_total{reason="refused"}"#) >= 1.0, "{metrics}");
    assert_eq!(metric(&metrics, "inventory_connections_open"), 3.0, "{metrics}");
    server.stop().await;
}

// ----- PostgreSQL over TLS --------------------------------------------------------------

/// Whether the session of `client` is encrypted.
async fn encrypted(client: &tokio_postgres::Client) -> bool {
    client.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).await.unwrap().get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_connects_over_tls_with_sslmode_require() {
    let Some(schema) = TestSchema::create("transport_tls").await else { return };
    if schema.client.query_one("SHOW ssl", &[]).await.unwrap().get::<_, String>(0) != "on" {
        assert!(std::env::var_os("CI").is_none(), "PostgreSQL at {PG_ADDR} has ssl off");
        eprintln!("skipping: PostgreSQL at {PG_ADDR} has ssl off");
        return;
    }
    let app = format!("inventory_tls_{}", std::process::id());
    let url = format!("{} application_name={app} sslmode=require", url_for(PG_ADDR));
    let server =
        TestServer::start_with(Options { postgres: Some((url, schema.name.clone())), ..Default::default() }).await;
    server.client.receive("tls-sku", 5).await;
    wait_caught_up(&server.client, Duration::from_secs(30)).await;
    assert_eq!(schema.count("SELECT count(*) FROM inventory_txn").await, 1);
    let row = schema
        .client
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE ssl) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid)
             WHERE application_name = $1",
            &[&app],
        )
        .await
        .unwrap();
    let (sessions, encrypted): (i64, i64) = (row.get(0), row.get(1));
    assert!(sessions > 0, "no session of the writer");
    assert_eq!(encrypted, sessions, "some of the writer's sessions are not encrypted");
    server.stop().await;

    // Without sslmode the session stays plain, as before.
    let plain = inventory_persistence::connect(&url_for(PG_ADDR), &Schema::new(&schema.name).unwrap()).await.unwrap();
    assert!(!self::encrypted(&plain).await);
    schema.drop().await;
}

/// A private PostgreSQL cluster with TLS on, serving `cert` (copied where
/// the `postgres` user can read it).
fn tls_pg(cert: &(PathBuf, PathBuf)) -> Result<PrivatePg, String> {
    PrivatePg::start_with(|dir, (uid, gid)| {
        let (crt, key) = (dir.join("server.crt"), dir.join("server.key"));
        std::fs::copy(&cert.0, &crt).map_err(|e| e.to_string())?;
        std::fs::copy(&cert.1, &key).map_err(|e| e.to_string())?;
        for file in [&crt, &key] {
            std::os::unix::fs::chown(file, Some(uid), Some(gid)).map_err(|e| e.to_string())?;
            std::fs::set_permissions(file, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .map_err(|e| e.to_string())?;
        }
        Ok(format!("-c ssl=on -c ssl_cert_file={} -c ssl_key_file={}", crt.display(), key.display()))
    })
}

/// A key=value URL of `pg` naming `host` (for the certificate check) at
/// 127.0.0.1, with `tls` settings.
fn tls_url(pg: &PrivatePg, host: &str, tls: &str) -> String {
    format!("host={host} hostaddr=127.0.0.1 port={} user=postgres dbname=postgres connect_timeout=3 {tls}", pg.port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_verify_ca_and_verify_full_check_the_servers_certificate() {
    let (pki, other) = (Pki::new("postgres"), Pki::new("other"));
    let cert = pki.issue("db", &["db.internal"], false);
    let pg = match tokio::task::spawn_blocking(move || tls_pg(&cert)).await.unwrap() {
        Ok(pg) => pg,
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("skipping: no private PostgreSQL cluster ({e})");
            return;
        }
        Err(e) => panic!("no private PostgreSQL cluster in CI: {e}"),
    };
    let public = Schema::new("public").unwrap();
    let (ca, other_ca) = (pki.ca().display().to_string(), other.ca().display().to_string());
    let connect = |host: &str, tls: String| {
        let url = tls_url(&pg, host, &tls);
        let public = public.clone();
        async move { inventory_persistence::connect(&url, &public).await }
    };

    // verify-full: the CA and the name must both match.
    let client = connect("db.internal", format!("sslmode=verify-full sslrootcert={ca}")).await.unwrap();
    assert!(encrypted(&client).await);
    let wrong_name = connect("127.0.0.1", format!("sslmode=verify-full sslrootcert={ca}")).await;
    assert!(wrong_name.is_err(), "verify-full took a certificate for another name");
    let wrong_ca = connect("db.internal", format!("sslmode=verify-full sslrootcert={other_ca}")).await;
    assert!(wrong_ca.is_err(), "verify-full took a certificate from another CA");

    // verify-ca: the CA only.
    let client = connect("127.0.0.1", format!("sslmode=verify-ca sslrootcert={ca}")).await.unwrap();
    assert!(encrypted(&client).await);
    assert!(connect("127.0.0.1", format!("sslmode=verify-ca sslrootcert={other_ca}")).await.is_err());

    // require: encrypted, any certificate; with a root certificate, as verify-ca.
    let client = connect("127.0.0.1", "sslmode=require".to_string()).await.unwrap();
    assert!(encrypted(&client).await);
    assert!(connect("127.0.0.1", format!("sslmode=require sslrootcert={other_ca}")).await.is_err());
    // prefer takes TLS when offered; disable never.
    assert!(encrypted(&connect("127.0.0.1", "sslmode=prefer".to_string()).await.unwrap()).await);
    assert!(!encrypted(&connect("127.0.0.1", "sslmode=disable".to_string()).await.unwrap()).await);
    // A URL form works the same.
    let url = format!("postgres://postgres@127.0.0.1:{}/postgres?sslmode=verify-ca&sslrootcert={ca}", pg.port);
    assert!(encrypted(&inventory_persistence::connect(&url, &public).await.unwrap()).await);
}
