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

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde::Deserialize;

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
}

#[derive(Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Row {
    sku_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    warehouse_id: Option<String>,
    qty: u64,
}

/// The body of one `receive-batch` request.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Chunk<'a> {
    idem_key: &'a str,
    #[serde(rename = "ref")]
    reference: &'a str,
    items: &'a [Row],
}

fn parse_csv_line(line: &str, n: usize) -> Result<Row, String> {
    if line.contains('"') {
        return Err(format!("line {n}: quoted CSV fields are not supported"));
    }
    let mut split = line.split(',').map(str::trim);
    let fields = [split.next(), split.next(), split.next()];
    let [Some(sku), Some(warehouse), Some(qty)] = fields else {
        return Err(format!("line {n}: expected 3 fields (skuId,warehouseId,qty), found {}", line.split(',').count()));
    };
    if split.next().is_some() {
        return Err(format!("line {n}: expected 3 fields (skuId,warehouseId,qty), found {}", line.split(',').count()));
    }
    let fields = [sku, warehouse, qty];
    let qty = fields[2].parse().map_err(|_| format!("line {n}: qty {:?} is not a positive integer", fields[2]))?;
    let warehouse_id = (!fields[1].is_empty()).then(|| fields[1].to_string());
    Ok(Row { sku_id: fields[0].to_string(), warehouse_id, qty })
}

/// Reads the file into chunks on a thread, so parsing overlaps sending.
fn read_chunks(args: &ImportArgs, tx: tokio::sync::mpsc::Sender<Result<(u64, Vec<Row>), String>>) {
    let file = match File::open(&args.file) {
        Ok(f) => f,
        Err(e) => {
            let _ = tx.blocking_send(Err(format!("{}: {e}", args.file.display())));
            return;
        }
    };
    let csv = args.file.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    let mut chunk = Vec::with_capacity(args.chunk as usize);
    let mut index = 0;
    for (i, line) in BufReader::with_capacity(1 << 20, file).lines().enumerate() {
        let n = i + 1;
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                let _ = tx.blocking_send(Err(format!("line {n}: {e}")));
                return;
            }
        };
        if line.trim().is_empty() || (csv && n == 1 && line.trim_start().starts_with("skuId")) {
            continue;
        }
        let row = if csv {
            parse_csv_line(&line, n)
        } else {
            serde_json::from_str(&line).map_err(|e| format!("line {n}: {e}"))
        };
        match row {
            Ok(row) => chunk.push(row),
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        }
        if chunk.len() as u64 == args.chunk {
            if tx.blocking_send(Ok((index, std::mem::take(&mut chunk)))).is_err() {
                return;
            }
            index += 1;
        }
    }
    if !chunk.is_empty() {
        let _ = tx.blocking_send(Ok((index, chunk)));
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
    let authority = args.url.trim_start_matches("http://").trim_end_matches('/').to_string();
    let size = std::fs::metadata(&args.file).map_err(|e| format!("{}: {e}", args.file.display()))?.len();
    let prefix = args.key_prefix.clone().unwrap_or_else(|| {
        format!("import:{}:{size}", args.file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default())
    });
    let (tx, rx) = tokio::sync::mpsc::channel(args.concurrency as usize * 2);
    let reader = {
        let args = ImportArgs {
            key_prefix: None,
            file: args.file.clone(),
            url: String::new(),
            reference: String::new(),
            ..args
        };
        std::thread::spawn(move || read_chunks(&args, tx))
    };
    let rx = std::sync::Arc::new(tokio::sync::Mutex::new(rx));
    let progress = indicatif::ProgressBar::new(size);
    progress.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {bytes}/{total_bytes} {wide_bar} {msg}").expect("template"),
    );
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let (rx, authority, prefix, reference, progress) =
            (rx.clone(), authority.clone(), prefix.clone(), args.reference.clone(), progress.clone());
        workers.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(&authority).await.map_err(|e| format!("{authority}: {e}"))?;
            let _ = stream.set_nodelay(true);
            let (mut sender, conn) = http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            let (mut rows, mut units) = (0u64, 0u64);
            loop {
                let next = rx.lock().await.recv().await;
                let Some(chunk) = next else { break };
                let (index, items) = chunk?;
                let bytes = items.len() as u64 * 32;
                let key = format!("{prefix}:{index}");
                let body =
                    serde_json::to_vec(&Chunk { idem_key: &key, reference: &reference, items: &items }).expect("json");
                let request = hyper::Request::post("/api/inventory/receive-batch")
                    .header("host", authority.as_str())
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(body)))
                    .expect("request");
                let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
                let status = response.status();
                let body = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
                let reply: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                if !status.is_success() {
                    return Err(format!("chunk {index} refused: {status} {}", String::from_utf8_lossy(&body)));
                }
                rows += reply["rows"].as_u64().unwrap_or(0);
                units += reply["units"].as_u64().unwrap_or(0);
                progress.inc(bytes);
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
