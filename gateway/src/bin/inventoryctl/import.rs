//! `inventoryctl import`: bulk-load a catalogue through `POST
//! /api/inventory/receive-batch`, a chunk per request, several in flight.
//!
//! Every chunk carries the key `<key-prefix>:<chunk number>`, so running the
//! same import again (e.g. after an interruption) adds nothing twice.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use hyper::StatusCode;
use inventory_gateway::{api::csv_fields, http::CAPACITY_SKUS_MAX};
use serde::Deserialize;

use crate::client::{Endpoint, Request};

#[derive(clap::Args)]
pub struct ImportArgs {
    /// Catalogue file: `.csv` with a `skuId,warehouseId,qty` header
    /// (`warehouseId` may be empty), or `.jsonl` of `{skuId, warehouseId?, qty}`.
    #[arg(long)]
    file: PathBuf,
    /// The service.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Rows per request (at most 10,000).
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    chunk: u64,
    /// Requests in flight.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64))]
    concurrency: u64,
    /// Idempotency key prefix (default: from the file's name and size).
    #[arg(long)]
    key_prefix: Option<String>,
    /// Reference recorded on every receipt.
    #[arg(long, default_value = "import")]
    reference: String,
    /// Do not ask the service to size its stock index for the file's rows
    /// before sending them (`POST /api/admin/capacity`), e.g. when the file
    /// mostly restocks SKUs the service already holds.
    #[arg(long)]
    no_presize: bool,
}

/// One catalogue row, as sent: borrowed from the line it was read from.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Row<'a> {
    sku_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    warehouse_id: Option<&'a str>,
    qty: u64,
}

/// One JSONL row as read.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OwnedRow {
    sku_id: String,
    warehouse_id: Option<String>,
    qty: u64,
}

fn parse_csv_line(line: &str, n: usize) -> Result<Row<'_>, String> {
    let [sku_id, warehouse, qty] = csv_fields(line).map_err(|e| format!("line {n}: {e}"))?;
    let qty = qty.parse().map_err(|_| format!("line {n}: qty {qty:?} is not a positive integer"))?;
    Ok(Row { sku_id, warehouse_id: (!warehouse.is_empty()).then_some(warehouse), qty })
}

/// The body of one `receive-batch` request, written as its rows are read
/// (no per-row allocation): CSV rows where the key can travel in the
/// `Idempotency-Key` header, else JSON.
struct Body {
    bytes: Vec<u8>,
    rows: u64,
    csv: bool,
}

impl Body {
    fn new(key: &str, reference: &str, csv: bool) -> Body {
        let mut bytes = Vec::with_capacity(64 * 1024);
        if csv {
            bytes.extend_from_slice(b"skuId,warehouseId,qty\n");
        } else {
            bytes.extend_from_slice(b"{\"idemKey\":");
            serde_json::to_writer(&mut bytes, key).expect("json");
            bytes.extend_from_slice(b",\"ref\":");
            serde_json::to_writer(&mut bytes, reference).expect("json");
            bytes.extend_from_slice(b",\"items\":[");
        }
        Body { bytes, rows: 0, csv }
    }

    fn push(&mut self, row: &Row) {
        if self.csv {
            let b = &mut self.bytes;
            b.extend_from_slice(row.sku_id.as_bytes());
            b.push(b',');
            b.extend_from_slice(row.warehouse_id.unwrap_or_default().as_bytes());
            b.push(b',');
            b.extend_from_slice(itoa::Buffer::new().format(row.qty).as_bytes());
            b.push(b'\n');
        } else {
            if self.rows > 0 {
                self.bytes.push(b',');
            }
            serde_json::to_writer(&mut self.bytes, row).expect("json");
        }
        self.rows += 1;
    }

    fn finish(mut self) -> Vec<u8> {
        if !self.csv {
            self.bytes.extend_from_slice(b"]}");
        }
        self.bytes
    }
}

/// A request ready to send: its chunk number and key, body, and the file
/// bytes its rows came from.
struct Chunk {
    index: u64,
    key: String,
    body: Vec<u8>,
    csv: bool,
    file_bytes: u64,
}

/// Whether `key` can be sent as a header value (visible ASCII).
fn header_safe(key: &str) -> bool {
    key.bytes().all(|b| (0x20..0x7f).contains(&b))
}

/// Reads the file into request bodies on a thread, so parsing overlaps
/// sending. Chunk `i` carries the key `<prefix>:<i>`.
fn read_chunks(args: &ImportArgs, prefix: &str, tx: tokio::sync::mpsc::Sender<Result<Chunk, String>>) {
    let file = match File::open(&args.file) {
        Ok(f) => f,
        Err(e) => {
            let _ = tx.blocking_send(Err(format!("{}: {e}", args.file.display())));
            return;
        }
    };
    let csv = args.file.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut line = String::new();
    let (mut index, mut file_bytes, mut n) = (0, 0u64, 0);
    // A CSV file goes as CSV rows: cheaper to write and to parse than JSON.
    let csv_body = csv && header_safe(prefix);
    let key = |index: u64| format!("{prefix}:{index}");
    let mut body = Body::new(&key(index), &args.reference, csv_body);
    loop {
        line.clear();
        let read = match reader.read_line(&mut line) {
            Ok(read) => read,
            Err(e) => {
                let _ = tx.blocking_send(Err(format!("line {}: {e}", n + 1)));
                return;
            }
        };
        if read == 0 {
            break;
        }
        n += 1;
        file_bytes += read as u64;
        let text = line.trim_end_matches(['\n', '\r']);
        if text.trim().is_empty() || (csv && n == 1 && text.trim_start().starts_with("skuId")) {
            continue;
        }
        let pushed = if csv {
            parse_csv_line(text, n).map(|row| body.push(&row))
        } else {
            serde_json::from_str::<OwnedRow>(text).map_err(|e| format!("line {n}: {e}")).map(|row| {
                body.push(&Row { sku_id: &row.sku_id, warehouse_id: row.warehouse_id.as_deref(), qty: row.qty })
            })
        };
        if let Err(e) = pushed {
            let _ = tx.blocking_send(Err(e));
            return;
        }
        if body.rows == args.chunk {
            let full = std::mem::replace(&mut body, Body::new(&key(index + 1), &args.reference, csv_body));
            let chunk = Chunk { index, key: key(index), body: full.finish(), csv: csv_body, file_bytes };
            if tx.blocking_send(Ok(chunk)).is_err() {
                return;
            }
            (index, file_bytes) = (index + 1, 0);
        }
    }
    if body.rows > 0 {
        let _ = tx.blocking_send(Ok(Chunk { index, key: key(index), body: body.finish(), csv: csv_body, file_bytes }));
    }
}

/// Lines in the file: an upper bound on the SKUs it can add.
fn count_lines(path: &std::path::Path) -> std::io::Result<u64> {
    use std::io::Read;
    let mut file = File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut lines = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(lines);
        }
        lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
    }
}

/// Asks the service to make room in its stock index for `rows` more SKUs,
/// so the import does not grow the index step by step. A service without
/// the endpoint is imported into all the same.
async fn presize(endpoint: &Endpoint, rows: u64) -> Result<(), String> {
    let body = serde_json::to_vec(&serde_json::json!({ "skus": rows.min(CAPACITY_SKUS_MAX) })).expect("json");
    let response = endpoint.send(Request::post("/api/admin/capacity", "application/json", body)).await?;
    match response.status {
        s if s.is_success() => Ok(()),
        StatusCode::NOT_FOUND => {
            eprintln!("inventoryctl import: the service cannot size its index ahead (no /api/admin/capacity)");
            Ok(())
        }
        s => Err(format!("sizing the index for {rows} SKUs refused: {s} {}", String::from_utf8_lossy(&response.body))),
    }
}

pub fn run(args: ImportArgs) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    match runtime.block_on(import(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("inventoryctl import: {e}");
            ExitCode::from(1)
        }
    }
}

async fn import(args: ImportArgs) -> Result<(), String> {
    let size = std::fs::metadata(&args.file).map_err(|e| format!("{}: {e}", args.file.display()))?.len();
    let endpoint = Endpoint::parse_scheme_optional(&args.url)?;
    let prefix = args.key_prefix.clone().unwrap_or_else(|| {
        format!("import:{}:{size}", args.file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default())
    });
    let reference =
        percent_encoding::utf8_percent_encode(&args.reference, percent_encoding::NON_ALPHANUMERIC).to_string();
    let (tx, rx) = tokio::sync::mpsc::channel(args.concurrency as usize * 2);
    let reader = {
        let args = ImportArgs { key_prefix: None, file: args.file.clone(), url: String::new(), ..args };
        let prefix = prefix.clone();
        std::thread::spawn(move || read_chunks(&args, &prefix, tx))
    };
    let rx = std::sync::Arc::new(tokio::sync::Mutex::new(rx));
    // The rate counts sizing the index too.
    let started = Instant::now();
    if !args.no_presize {
        let file = args.file.clone();
        let lines = tokio::task::spawn_blocking(move || count_lines(&file))
            .await
            .expect("count panicked")
            .map_err(|e| format!("{}: {e}", args.file.display()))?;
        if lines > 0 {
            presize(&endpoint, lines).await?;
        }
    }
    let progress = indicatif::ProgressBar::new(size);
    progress.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {bytes}/{total_bytes} {wide_bar} {msg}").expect("template"),
    );
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let (rx, endpoint, progress, reference) = (rx.clone(), endpoint.clone(), progress.clone(), reference.clone());
        workers.push(tokio::spawn(async move {
            let mut connection = endpoint.connect().await?;
            let (mut rows, mut units) = (0u64, 0u64);
            loop {
                let next = rx.lock().await.recv().await;
                let Some(chunk) = next else { break };
                let Chunk { index, key, body, csv, file_bytes } = chunk?;
                let request = if csv {
                    Request::post(format!("/api/inventory/receive-batch?ref={reference}"), "text/csv", body)
                        .header("idempotency-key", key)
                } else {
                    Request::post("/api/inventory/receive-batch", "application/json", body)
                };
                let response = connection.send(request).await?;
                let (status, body) = (response.status, response.body);
                let reply: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                if !status.is_success() {
                    return Err(format!("chunk {index} refused: {status} {}", String::from_utf8_lossy(&body)));
                }
                rows += reply["rows"].as_u64().unwrap_or(0);
                units += reply["units"].as_u64().unwrap_or(0);
                progress.inc(file_bytes);
                progress.set_message(format!("{rows} rows"));
            }
            Ok::<_, String>((rows, units))
        }));
    }
    let (mut rows, mut units) = (0, 0);
    let mut failure = None;
    for worker in workers {
        match worker.await.expect("worker panicked") {
            Ok((r, u)) => {
                rows += r;
                units += u;
            }
            Err(e) => failure = failure.or(Some(e)),
        }
    }
    let _ = reader.join();
    progress.finish_and_clear();
    if let Some(e) = failure {
        return Err(format!("{e} (after {rows} rows; run again with the same --key-prefix to resume)"));
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "imported {rows} rows, {units} units in {secs:.2} s ({:.0} rows/s), key prefix {prefix}",
        rows as f64 / secs
    );
    Ok(())
}
