//! `inventoryctl journal diff`: the state replayed from the journal against
//! a running service.

use std::collections::BTreeMap;
use std::io::Write;
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
use crate::client::{Blocking, Endpoint, Request};

const HTTP_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for one SKU's stock.
const HTTP_IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest HTTP response body accepted from the service (an SKU has at
/// most 1024 warehouse rows, well under this).
const HTTP_RESPONSE_BYTES_MAX: usize = 8 << 20;

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
    let service = Service::new(&args.url)?;
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

/// The running service, through the shared HTTP client.
struct Service {
    client: Blocking,
}

impl Service {
    fn new(url: &str) -> Result<Service, CtlError> {
        let endpoint = Endpoint::parse(url).map_err(CtlError::Usage)?.connect_timeout(HTTP_CONNECT_TIMEOUT);
        Ok(Service { client: Blocking::new(endpoint) })
    }

    /// `GET {url}/api/inventory/{sku}`: `None` when the service has no stock
    /// for the SKU.
    fn stock(&self, sku: &str) -> Result<Option<ServiceStock>, CtlError> {
        let path = format!("/api/inventory/{}", utf8_percent_encode(sku, NON_ALPHANUMERIC));
        let request = Request::get(&path)
            .header("accept", "application/json")
            .header("user-agent", "inventoryctl")
            .body_limit(HTTP_RESPONSE_BYTES_MAX)
            .timeout(HTTP_IO_TIMEOUT);
        let response = self.client.send(request).map_err(CtlError::Http)?;
        let (status, body) = (response.status.as_u16(), response.body);
        let path = self.client.endpoint().path(&path);
        let snippet = || String::from_utf8_lossy(&body[..body.len().min(200)]).escape_debug().to_string();
        match status {
            200 => serde_json::from_slice(&body)
                .map(Some)
                .map_err(|e| CtlError::Http(format!("GET {path}: unexpected body ({e}): {}", snippet()))),
            404 if serde_json::from_slice::<Value>(&body).is_ok_and(|v| v["code"] == "SKU_NOT_FOUND") => Ok(None),
            _ => Err(CtlError::Http(format!("GET {path}: HTTP {status}: {}", snippet()))),
        }
    }
}
