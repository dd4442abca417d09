//! `inventoryctl journal diff`: the state replayed from the journal against
//! a running service.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use inventory_core::{shard_for_sku, StockRow};
use inventory_journal::Until;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde::Deserialize;
use serde_json::Value;

use super::args::Source;
use super::format::{fmt_levels, kv};
use super::open::open;
use super::rebuild::replay_to;
use super::CtlError;

const HTTP_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const HTTP_IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest HTTP response accepted from the service (an SKU has at most
/// 1024 warehouse rows, well under this).
const HTTP_RESPONSE_BYTES_MAX: u64 = 8 << 20;

#[derive(clap::Args)]
pub struct DiffArgs {
    #[command(flatten)]
    source: Source,
    /// Base URL of the running service, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    url: String,
    /// Compare only these SKUs (repeatable). Default: every SKU in the journal.
    #[arg(long)]
    sku: Vec<String>,
}

/// One warehouse row of `GET /api/inventory/{sku}`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServiceRow {
    warehouse_id: String,
    available: u64,
    reserved: u64,
    sold: u64,
    version: u64,
}

#[derive(Deserialize)]
struct ServiceStock {
    warehouses: Vec<ServiceRow>,
}

#[derive(Default)]
struct DiffCounts {
    skus: u64,
    equal: u64,
    different: u64,
    moved_on: u64,
}

pub fn run(out: &mut impl Write, args: DiffArgs) -> Result<ExitCode, CtlError> {
    let service = HttpTarget::parse(&args.url)?;
    let opened = open(&args.source.data_dir)?;
    // Shard by shard, so only one rebuilt shard is in memory at a time.
    let mut wanted: BTreeMap<u16, Vec<String>> = BTreeMap::new();
    for sku in &args.sku {
        wanted.entry(shard_for_sku(sku, opened.shards())).or_default().push(sku.clone());
    }
    let mut counts = DiffCounts::default();
    for index in 0..opened.shards() {
        if !args.sku.is_empty() && !wanted.contains_key(&index) {
            continue;
        }
        let (shard, _) = replay_to(&opened, &opened.journal(index)?, Until::End)?;
        let skus: Vec<String> = match wanted.remove(&index) {
            Some(skus) => skus,
            None => {
                let mut all: Vec<String> = shard.rows().map(|(sku, _, _)| sku.to_string()).collect();
                all.dedup();
                all
            }
        };
        for sku in skus {
            let rows: Vec<(String, StockRow)> = shard
                .stock(&sku)
                .map(|s| s.warehouses.into_iter().map(|w| (w.warehouse_id, w.row)).collect())
                .unwrap_or_default();
            let live = service.stock(&sku)?;
            if rows.is_empty() && live.is_none() {
                writeln!(out, "note: {} is neither in the journal nor in the service", kv("sku", &sku))?;
                continue;
            }
            counts.skus += 1;
            compare_sku(out, &sku, &rows, live, &mut counts)?;
        }
    }
    writeln!(
        out,
        "diff: {} SKUs, {} rows equal, {} different, {} moved on since the journal was read (journal {}, service {})",
        counts.skus,
        counts.equal,
        counts.different,
        counts.moved_on,
        opened.origin(),
        args.url
    )?;
    Ok(if counts.different > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// Compares one SKU row by row. The service may have moved on since the
/// journal was read: a row whose service version is higher is counted as
/// moved on, not compared. A lower version (the service lacks journaled
/// changes) or the same version with other values is a difference.
fn compare_sku(
    out: &mut impl Write,
    sku: &str,
    journal: &[(String, StockRow)],
    service: Option<ServiceStock>,
    counts: &mut DiffCounts,
) -> Result<(), CtlError> {
    let mut live: BTreeMap<String, ServiceRow> =
        service.into_iter().flat_map(|s| s.warehouses).map(|r| (r.warehouse_id.clone(), r)).collect();
    for (warehouse, row) in journal {
        let l = row.levels;
        let here = format!("journal {} v{}", fmt_levels(&l), row.version);
        let Some(s) = live.remove(warehouse) else {
            counts.different += 1;
            writeln!(out, "DIFF {} {}: {here}, service has no such row", kv("sku", sku), kv("warehouse", warehouse))?;
            continue;
        };
        let there = format!("service {}/{}/{} v{}", s.available, s.reserved, s.sold, s.version);
        let same = (s.available, s.reserved, s.sold) == (l.available, l.reserved, l.sold);
        if s.version > row.version {
            counts.moved_on += 1;
        } else if s.version < row.version {
            counts.different += 1;
            writeln!(
                out,
                "DIFF {} {}: {here}, {there}: the service is behind the journal",
                kv("sku", sku),
                kv("warehouse", warehouse)
            )?;
        } else if !same {
            counts.different += 1;
            writeln!(out, "DIFF {} {}: {here}, {there}", kv("sku", sku), kv("warehouse", warehouse))?;
        } else {
            counts.equal += 1;
        }
    }
    // Rows the journal does not have yet were created after it was read.
    counts.moved_on += live.len() as u64;
    Ok(())
}

/// A minimal blocking HTTP/1.1 client for one `http://host:port[/prefix]`.
struct HttpTarget {
    host: String,
    port: u16,
    /// `host[:port]` as given, for the Host header.
    authority: String,
    prefix: String,
}

impl HttpTarget {
    fn parse(url: &str) -> Result<HttpTarget, CtlError> {
        let bad = |why: &str| CtlError::Usage(format!("bad --url {url:?}: {why}"));
        let rest = url.strip_prefix("http://").ok_or_else(|| bad("only http:// URLs are supported"))?;
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(bad("expected http://host:port"));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !port.contains(']') => {
                (host, port.parse::<u16>().map_err(|_| bad("the port is not a number from 0 to 65535"))?)
            }
            _ => (authority, 80),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad("no host"));
        }
        Ok(HttpTarget { host: host.to_string(), port, authority: authority.to_string(), prefix: prefix.to_string() })
    }

    /// `GET {url}/api/inventory/{sku}`: `None` when the service has no stock
    /// for the SKU.
    fn stock(&self, sku: &str) -> Result<Option<ServiceStock>, CtlError> {
        let path = format!("{}/api/inventory/{}", self.prefix, utf8_percent_encode(sku, NON_ALPHANUMERIC));
        let (status, body) = self.get(&path)?;
        let snippet = || String::from_utf8_lossy(&body[..body.len().min(200)]).escape_debug().to_string();
        match status {
            200 => serde_json::from_slice(&body)
                .map(Some)
                .map_err(|e| CtlError::Http(format!("GET {path}: unexpected body ({e}): {}", snippet()))),
            404 if serde_json::from_slice::<Value>(&body).is_ok_and(|v| v["code"] == "SKU_NOT_FOUND") => Ok(None),
            _ => Err(CtlError::Http(format!("GET {path}: HTTP {status}: {}", snippet()))),
        }
    }

    fn get(&self, path: &str) -> Result<(u16, Vec<u8>), CtlError> {
        let fail = |what: String| CtlError::Http(format!("GET http://{}{path}: {what}", self.authority));
        let addrs: Vec<_> = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| fail(format!("cannot resolve {}: {e}", self.host)))?
            .collect();
        let mut last = None;
        let mut stream = None;
        for addr in &addrs {
            match TcpStream::connect_timeout(addr, HTTP_CONNECT_TIMEOUT) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let mut stream = stream.ok_or_else(|| {
            fail(format!("cannot connect: {}", last.map_or("no address".to_string(), |e| e.to_string())))
        })?;
        let io = |e: io::Error| fail(e.to_string());
        stream.set_read_timeout(Some(HTTP_IO_TIMEOUT)).map_err(io)?;
        stream.set_write_timeout(Some(HTTP_IO_TIMEOUT)).map_err(io)?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\n\
             User-Agent: inventoryctl\r\nConnection: close\r\n\r\n",
            self.authority
        );
        stream.write_all(request.as_bytes()).map_err(io)?;
        let mut raw = Vec::new();
        stream.take(HTTP_RESPONSE_BYTES_MAX + 1).read_to_end(&mut raw).map_err(io)?;
        if raw.len() as u64 > HTTP_RESPONSE_BYTES_MAX {
            return Err(fail(format!("response larger than {HTTP_RESPONSE_BYTES_MAX} bytes")));
        }
        parse_response(&raw).map_err(fail)
    }
}

/// Status and body of a whole HTTP/1.1 response (`Content-Length`, chunked,
/// or delimited by the connection closing).
fn parse_response(raw: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or("incomplete response header")?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "response header is not UTF-8")?;
    let body = &raw[end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|s| s.get(2..5))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") && value.eq_ignore_ascii_case("chunked") {
            chunked = true;
        } else if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<usize>().map_err(|_| format!("bad Content-Length {value:?}"))?);
        }
    }
    if chunked {
        return dechunk(body).map(|body| (status, body));
    }
    match length {
        Some(n) if n > body.len() => Err(format!("body shorter than its Content-Length {n}")),
        Some(n) => Ok((status, body[..n].to_vec())),
        None => Ok((status, body.to_vec())),
    }
}

fn dechunk(mut raw: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let eol = raw.windows(2).position(|w| w == b"\r\n").ok_or("truncated chunk size")?;
        let line = std::str::from_utf8(&raw[..eol]).map_err(|_| "bad chunk size")?;
        let size = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16).map_err(|_| format!("bad chunk size {size:?}"))?;
        raw = &raw[eol + 2..];
        if size == 0 {
            return Ok(body);
        }
        if raw.len() < size + 2 {
            return Err("truncated chunk".into());
        }
        body.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_urls() {
        let t = HttpTarget::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.authority.as_str(), t.prefix.as_str()),
            ("127.0.0.1", 8080, "127.0.0.1:8080", "")
        );
        let t = HttpTarget::parse("http://[::1]:9/inv/").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.prefix.as_str()), ("::1", 9, "/inv"));
        assert_eq!(HttpTarget::parse("http://example").unwrap().port, 80);
        for bad in ["https://x", "127.0.0.1:8080", "http://", "http://:80", "http://h:port", "http://u@h:1"] {
            assert!(HttpTarget::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn http_responses_with_length_chunks_or_close() {
        let r = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}trailing";
        assert_eq!(parse_response(r), Ok((200, b"{}".to_vec())));
        let r = b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=1\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(r), Ok((404, b"abcde".to_vec())));
        assert_eq!(parse_response(b"HTTP/1.0 503 x\r\n\r\nbusy"), Ok((503, b"busy".to_vec())));
        for bad in [&b"HTTP/1.1 200 OK\r\n"[..], b"SSH-2.0\r\n\r\n", b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n{}"]
        {
            assert!(parse_response(bad).is_err());
        }
        assert!(dechunk(b"zz\r\n").is_err());
        assert!(dechunk(b"5\r\nab").is_err());
    }
}
