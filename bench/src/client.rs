//! The HTTP client every target is measured through: one keep-alive HTTP/1.1
//! connection per load-generator worker, on hyper's client, reconnecting
//! after a failure.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde::Deserialize;

use crate::auth::{Auth, ConnAuth};

/// A response: status and body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Bytes,
}

impl Reply {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The `code` of an error body (`{code, message}`), or `HTTP_<status>`.
    pub fn code(&self) -> String {
        #[derive(Deserialize)]
        struct Code<'a> {
            #[serde(borrow)]
            code: Option<std::borrow::Cow<'a, str>>,
        }
        match serde_json::from_slice::<Code>(&self.body) {
            Ok(Code { code: Some(code) }) => code.into_owned(),
            _ => format!("HTTP_{}", self.status),
        }
    }

    pub fn json<'a, T: Deserialize<'a>>(&'a self) -> Option<T> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// Why a request got no HTTP response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Could not connect.
    Connect,
    /// The connection failed mid-request.
    Io,
    /// No response within the request timeout.
    Timeout,
}

impl Failure {
    pub fn code(self) -> &'static str {
        match self {
            Failure::Connect => "CONNECT_FAILED",
            Failure::Io => "IO_ERROR",
            Failure::Timeout => "TIMEOUT",
        }
    }
}

/// One keep-alive connection to a target.
pub struct Conn {
    addr: SocketAddr,
    host: HeaderValue,
    timeout: Duration,
    sender: Option<SendRequest<Full<Bytes>>>,
    /// The credentials every request carries, if the run has any.
    auth: Option<(Arc<Auth>, ConnAuth)>,
}

impl Conn {
    pub fn new(addr: SocketAddr, timeout: Duration) -> Conn {
        let host = HeaderValue::from_str(&addr.to_string()).expect("socket address is a valid header");
        Conn { addr, host, timeout, sender: None, auth: None }
    }

    /// A connection whose requests carry `auth`'s token, and whose writes
    /// are signed, when it asks for them.
    pub fn with_auth(addr: SocketAddr, timeout: Duration, auth: Option<&Arc<Auth>>) -> Conn {
        let mut conn = Conn::new(addr, timeout);
        conn.auth = auth.map(|auth| (auth.clone(), auth.connection()));
        conn
    }

    async fn connect(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, Failure> {
        if self.sender.as_ref().is_some_and(|s| s.is_closed()) {
            self.sender = None;
        }
        if self.sender.is_none() {
            let stream = tokio::time::timeout(self.timeout, tokio::net::TcpStream::connect(self.addr))
                .await
                .map_err(|_| Failure::Connect)?
                .map_err(|_| Failure::Connect)?;
            stream.set_nodelay(true).map_err(|_| Failure::Connect)?;
            let (sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|_| Failure::Connect)?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            self.sender = Some(sender);
        }
        Ok(self.sender.as_mut().expect("connected"))
    }

    /// Sends one request and reads the whole response. On any failure the
    /// connection is dropped and the next request reconnects.
    pub async fn request(&mut self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<Reply, Failure> {
        self.request_with(method, path, body, &[]).await
    }

    /// [`Conn::request`] with extra headers (e.g. `X-Operator`).
    pub async fn request_with(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        headers: &[(&'static str, &str)],
    ) -> Result<Reply, Failure> {
        let timeout = self.timeout;
        let host = self.host.clone();
        let credentials = match &mut self.auth {
            None => None,
            Some((auth, conn)) => {
                let signed = (method == Method::POST).then(|| body.as_deref().unwrap_or_default());
                Some(conn.headers(auth, method.as_str(), path, signed))
            }
        };
        let result = tokio::time::timeout(timeout, async {
            let sender = self.connect().await?;
            sender.ready().await.map_err(|_| Failure::Io)?;
            let mut builder = Request::builder().method(method).uri(path).header(HOST, host);
            if body.is_some() {
                builder = builder.header(CONTENT_TYPE, "application/json");
            }
            for &(name, value) in headers {
                builder = builder.header(name, value);
            }
            if let Some(credentials) = credentials {
                if let Some(bearer) = credentials.authorization {
                    builder = builder.header(AUTHORIZATION, bearer);
                }
                if let Some((timestamp, nonce, signature)) = credentials.signed {
                    builder = builder
                        .header("x-timestamp", timestamp)
                        .header("x-nonce", nonce)
                        .header("x-signature", signature);
                }
            }
            let request = builder.body(Full::new(body.map(Bytes::from).unwrap_or_default())).expect("valid request");
            let response = sender.send_request(request).await.map_err(|_| Failure::Io)?;
            let status = response.status().as_u16();
            let body = response.into_body().collect().await.map_err(|_| Failure::Io)?.to_bytes();
            Ok(Reply { status, body })
        })
        .await
        .unwrap_or(Err(Failure::Timeout));
        if result.is_err() {
            self.sender = None;
        }
        result
    }

    pub async fn post(&mut self, path: &str, body: &serde_json::Value) -> Result<Reply, Failure> {
        self.request(Method::POST, path, Some(serde_json::to_vec(body).expect("json"))).await
    }

    pub async fn get(&mut self, path: &str) -> Result<Reply, Failure> {
        self.request(Method::GET, path, None).await
    }
}

/// Percent-encodes one path segment (SKU ids, reservation ids).
pub fn segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}
