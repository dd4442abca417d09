//! The one HTTP client of `inventoryctl`: HTTP/1.1 over hyper's connection
//! API and tokio, which the gateway depends on already.
//!
//! An [`Endpoint`] is a service's URL, `http://host[:port][/prefix]`.
//! `import` opens a [`Connection`] for each of its workers and sends
//! request after request on it; a single request goes through
//! [`Endpoint::send`], on a connection of its own that closes after the
//! response; and the commands that run without an async runtime (`journal
//! diff`, `reconcile`) do the same through [`Blocking`]. A response body is
//! read as it arrives, and refused once it passes the request's limit.
//!
//! Errors are text that names the request, e.g. `GET
//! http://127.0.0.1:8080/api/inventory/a: cannot connect: Connection refused`.

use std::error::Error;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::client::conn::http1;
use hyper::{Method, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// A running service's base URL.
#[derive(Clone, Debug)]
pub struct Endpoint {
    host: String,
    port: u16,
    /// `host[:port]` as given, for the Host header.
    authority: String,
    /// The path the service's API is under: empty, or `/prefix`.
    prefix: String,
    connect_timeout: Option<Duration>,
}

impl Endpoint {
    /// Parses `http://host[:port][/prefix]` (port 80 if none is given).
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        match url.strip_prefix("http://") {
            Some(rest) => Endpoint::parse_after_scheme(url, rest),
            None => Err(bad_url(url, "only http:// URLs are supported")),
        }
    }

    /// As [`Endpoint::parse`], and a URL without a scheme (`host:port`) is
    /// taken as `http://host:port`.
    pub fn parse_scheme_optional(url: &str) -> Result<Endpoint, String> {
        match url.strip_prefix("http://") {
            Some(rest) => Endpoint::parse_after_scheme(url, rest),
            None if !url.contains("://") => Endpoint::parse_after_scheme(url, url),
            None => Err(bad_url(url, "only http:// URLs are supported")),
        }
    }

    fn parse_after_scheme(url: &str, rest: &str) -> Result<Endpoint, String> {
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(bad_url(url, "expected http://host:port"));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !port.contains(']') => {
                (host, port.parse::<u16>().map_err(|_| bad_url(url, "the port is not a number from 0 to 65535"))?)
            }
            _ => (authority, 80),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad_url(url, "no host"));
        }
        Ok(Endpoint {
            host: host.to_string(),
            port,
            authority: authority.to_string(),
            prefix: prefix.to_string(),
            connect_timeout: None,
        })
    }

    /// Gives up on an address that has not accepted the connection within
    /// `limit` (by default the system's own limit applies).
    pub fn connect_timeout(self, limit: Duration) -> Endpoint {
        Endpoint { connect_timeout: Some(limit), ..self }
    }

    /// `path` under the service's prefix, as sent in the request line.
    pub fn path(&self, path: &str) -> String {
        format!("{}{path}", self.prefix)
    }

    /// The whole URL of `path`, for messages.
    fn url(&self, path: &str) -> String {
        format!("http://{}{}{path}", self.authority, self.prefix)
    }

    /// `METHOD url`: what a failed request's message starts with.
    fn describe(&self, request: &Request) -> String {
        format!("{} {}", request.method, self.url(&request.path))
    }

    /// Opens a connection to send requests on, one after another.
    pub async fn connect(&self) -> Result<Connection, String> {
        self.open().await.map_err(|e| format!("{}: {e}", self.url("")))
    }

    /// Sends one request on a connection of its own, closed after the
    /// response.
    pub async fn send(&self, request: Request) -> Result<Response, String> {
        let request = request.header("connection", "close");
        let mut connection = self.open().await.map_err(|e| format!("{}: {e}", self.describe(&request)))?;
        connection.send(request).await
    }

    /// Connects to the first of the host's addresses that accepts.
    async fn open(&self) -> Result<Connection, String> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("cannot resolve {}: {e}", self.host))?
            .collect();
        let mut last = None;
        for addr in addrs {
            let connected = match self.connect_timeout {
                Some(limit) => tokio::time::timeout(limit, TcpStream::connect(addr))
                    .await
                    .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "connection timed out"))),
                None => TcpStream::connect(addr).await,
            };
            match connected {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    let (sender, connection) =
                        http1::handshake(TokioIo::new(stream)).await.map_err(|e| with_causes(&e))?;
                    tokio::spawn(connection);
                    return Ok(Connection { sender, endpoint: self.clone() });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(format!("cannot connect: {}", last.map_or("no address".to_string(), |e| e.to_string())))
    }
}

fn bad_url(url: &str, why: &str) -> String {
    format!("bad --url {url:?}: {why}")
}

/// A request to send: method, path under the endpoint's prefix, headers,
/// body, and how long and how large a response it accepts.
pub struct Request {
    method: Method,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Bytes,
    body_limit: usize,
    timeout: Option<Duration>,
}

impl Request {
    pub fn get(path: impl Into<String>) -> Request {
        Request::new(Method::GET, path.into(), Bytes::new())
    }

    pub fn post(path: impl Into<String>, content_type: &'static str, body: impl Into<Bytes>) -> Request {
        Request::new(Method::POST, path.into(), body.into()).header("content-type", content_type)
    }

    fn new(method: Method, path: String, body: Bytes) -> Request {
        Request { method, path, headers: Vec::new(), body, body_limit: usize::MAX, timeout: None }
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Request {
        self.headers.push((name, value.into()));
        self
    }

    /// Refuses a response whose body is longer than `bytes` (by default any
    /// length is read).
    pub fn body_limit(self, bytes: usize) -> Request {
        Request { body_limit: bytes, ..self }
    }

    /// Gives up when the whole response has not arrived within `limit` of
    /// sending the request (by default it waits as long as it takes).
    pub fn timeout(self, limit: Duration) -> Request {
        Request { timeout: Some(limit), ..self }
    }
}

/// A whole response: its status, headers and body.
pub struct Response {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

/// `Bearer <INVENTORY_TOKEN>`, sent with every request when the variable
/// is set (a service run with `--auth jwt` needs it).
fn bearer_token() -> Option<&'static str> {
    static TOKEN: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    TOKEN
        .get_or_init(|| {
            std::env::var("INVENTORY_TOKEN")
                .ok()
                .filter(|t| !t.trim().is_empty())
                .map(|t| format!("Bearer {}", t.trim()))
        })
        .as_deref()
}

/// An open connection to an endpoint.
pub struct Connection {
    sender: http1::SendRequest<Full<Bytes>>,
    endpoint: Endpoint,
}

impl Connection {
    /// Sends `request` and reads the whole response.
    pub async fn send(&mut self, request: Request) -> Result<Response, String> {
        let what = self.endpoint.describe(&request);
        let result = match request.timeout {
            Some(limit) => tokio::time::timeout(limit, self.exchange(request))
                .await
                .unwrap_or_else(|_| Err(format!("no whole response within {} s", limit.as_secs_f64()))),
            None => self.exchange(request).await,
        };
        result.map_err(|e| format!("{what}: {e}"))
    }

    async fn exchange(&mut self, request: Request) -> Result<Response, String> {
        let mut builder = hyper::Request::builder()
            .method(request.method)
            .uri(self.endpoint.path(&request.path))
            .header(hyper::header::HOST, self.endpoint.authority.as_str());
        if let Some(token) = bearer_token() {
            builder = builder.header(hyper::header::AUTHORIZATION, token);
        }
        for (name, value) in request.headers {
            builder = builder.header(name, value);
        }
        let sent = builder.body(Full::new(request.body)).map_err(|e| e.to_string())?;
        let response = self.sender.send_request(sent).await.map_err(|e| with_causes(&e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let limit = request.body_limit;
        let body = Limited::new(response.into_body(), limit).collect().await.map_err(|e| {
            if e.is::<LengthLimitError>() {
                format!("response larger than {limit} bytes")
            } else {
                with_causes(e.as_ref())
            }
        })?;
        Ok(Response { status, headers, body: body.to_bytes() })
    }
}

/// A client for code that runs without an async runtime: each request goes
/// through [`Endpoint::send`] on a runtime of the client's own.
pub struct Blocking {
    endpoint: Endpoint,
    runtime: tokio::runtime::Runtime,
}

impl Blocking {
    pub fn new(endpoint: Endpoint) -> Blocking {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        Blocking { endpoint, runtime }
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    pub fn send(&self, request: Request) -> Result<Response, String> {
        self.runtime.block_on(self.endpoint.send(request))
    }
}

/// An error followed by its causes: hyper's own message often leaves out
/// the cause (such as the I/O error that ended a connection).
fn with_causes(e: &(dyn Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::thread::JoinHandle;

    use super::*;

    #[test]
    fn service_urls() {
        let t = Endpoint::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.authority.as_str(), t.prefix.as_str()),
            ("127.0.0.1", 8080, "127.0.0.1:8080", "")
        );
        let t = Endpoint::parse("http://[::1]:9/inv/").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.prefix.as_str()), ("::1", 9, "/inv"));
        assert_eq!(Endpoint::parse("http://example").unwrap().port, 80);
        for bad in ["https://x", "127.0.0.1:8080", "http://", "http://:80", "http://h:port", "http://u@h:1"] {
            assert!(Endpoint::parse(bad).is_err(), "{bad:?} parsed");
        }
        let t = Endpoint::parse_scheme_optional("127.0.0.1:8080/").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.prefix.as_str()), ("127.0.0.1", 8080, ""));
        assert!(Endpoint::parse_scheme_optional("https://x").is_err());
    }

    /// Answers one request on a local port with `raw`, then closes the
    /// connection; the thread returns the request it read.
    fn serve_once(raw: &[u8], prefix: &str) -> (Endpoint, JoinHandle<String>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}{prefix}", listener.local_addr().unwrap());
        let raw = raw.to_vec();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut byte = [0u8; 1];
            while !request.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap() == 1 {
                request.push(byte[0]);
            }
            stream.write_all(&raw).unwrap();
            String::from_utf8(request).unwrap()
        });
        (Endpoint::parse(&url).unwrap(), server)
    }

    fn get(raw: &[u8]) -> Result<(u16, Vec<u8>), String> {
        let (endpoint, _) = serve_once(raw, "");
        let response = Blocking::new(endpoint).send(Request::get("/"))?;
        Ok((response.status.as_u16(), response.body.to_vec()))
    }

    #[test]
    fn http_responses_with_length_chunks_or_close() {
        let r = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}trailing";
        assert_eq!(get(r), Ok((200, b"{}".to_vec())));
        let r = b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=1\r\nde\r\n0\r\n\r\n";
        assert_eq!(get(r), Ok((404, b"abcde".to_vec())));
        assert_eq!(get(b"HTTP/1.0 503 x\r\n\r\nbusy"), Ok((503, b"busy".to_vec())));
        for bad in [&b"HTTP/1.1 200 OK\r\n"[..], b"SSH-2.0\r\n\r\n", b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n{}"]
        {
            assert!(get(bad).is_err());
        }
        let chunked = |body: &[u8]| [&b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"[..], body].concat();
        assert!(get(&chunked(b"zz\r\n")).is_err());
        assert!(get(&chunked(b"5\r\nab")).is_err());
    }

    #[test]
    fn requests_name_the_host_and_the_prefix_and_bodies_have_a_limit() {
        let (endpoint, server) = serve_once(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello", "/inv/");
        let request = Request::get("/api/inventory/a").body_limit(4);
        let authority = endpoint.authority.clone();
        let refused = Blocking::new(endpoint).send(request).map(|r| r.status);
        let expected = format!("GET http://{authority}/inv/api/inventory/a: response larger than 4 bytes");
        assert_eq!(refused, Err(expected));
        let sent = server.join().unwrap();
        assert!(sent.starts_with("GET /inv/api/inventory/a HTTP/1.1\r\n"), "{sent}");
        assert!(sent.to_ascii_lowercase().contains(&format!("\r\nhost: {authority}\r\n")), "{sent}");
    }

    #[test]
    fn an_unreachable_service_is_named() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let client = Blocking::new(Endpoint::parse(&url).unwrap().connect_timeout(Duration::from_secs(5)));
        let error = client.send(Request::get("/x")).map(|r| r.status).unwrap_err();
        assert!(error.starts_with(&format!("GET {url}/x: cannot connect: ")), "{error}");
    }
}
