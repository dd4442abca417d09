//! `inventoryctl audit list`: the audit trail, all of it or one SKU's: who
//! did what to which row, why, and the counters before and after.
//!
//! Exit codes: 0 listed; 2 the log could not be read.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use inventory_audit::{AuditRecord, LevelsJson, LOG_FILE};

#[derive(clap::Args)]
pub struct ListArgs {
    /// The service's data dir (the log is in <data-dir>/audit).
    #[arg(long, default_value = "./data", conflicts_with = "dir")]
    data_dir: PathBuf,
    /// A directory holding audit.jsonl (e.g. a copy).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Only the entries that touch this SKU.
    #[arg(long)]
    sku: Option<String>,
    /// `table` (one line an entry) or `jsonl` (the entries as logged).
    #[arg(long, default_value = "table", value_parser = ["table", "jsonl"])]
    format: String,
}

fn levels(l: &Option<LevelsJson>) -> String {
    l.as_ref().map_or("-".to_string(), |l| format!("{}/{}/{}", l.available, l.reserved, l.sold))
}

pub fn run(args: ListArgs) -> ExitCode {
    let dir = args.dir.unwrap_or_else(|| args.data_dir.join("audit"));
    let path = dir.join(LOG_FILE);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("inventoryctl: cannot read the audit log {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    let mut out = std::io::stdout().lock();
    if args.format == "table" {
        let _ = writeln!(
            out,
            "{:>6} {:<24} {:<22} {:<24} {:<16} {:>6}  DETAILS",
            "INDEX", "TIME", "ACTION", "SKU/WAREHOUSE", "OPERATOR", "QTY"
        );
    }
    let mut shown = 0;
    for (n, line) in BufReader::new(file).lines().enumerate() {
        let line = match line {
            Ok(line) if line.trim().is_empty() => continue,
            Ok(line) => line,
            Err(e) => {
                eprintln!("inventoryctl: {}: line {}: {e}", path.display(), n + 1);
                return ExitCode::from(2);
            }
        };
        let record: AuditRecord = match serde_json::from_str(&line) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("inventoryctl: {}: line {}: not an audit entry: {e}", path.display(), n + 1);
                return ExitCode::from(2);
            }
        };
        let e = &record.event;
        if let Some(sku) = &args.sku {
            let touches = e.sku_id.as_deref() == Some(sku) || e.rows.iter().any(|r| r.sku_id() == sku);
            if !touches {
                continue;
            }
        }
        shown += 1;
        if args.format == "jsonl" {
            let _ = writeln!(out, "{line}");
            continue;
        }
        let place = match (&e.sku_id, &e.warehouse_id, &e.to_warehouse_id) {
            (Some(s), Some(w), Some(to)) => format!("{s}/{w}->{to}"),
            (Some(s), Some(w), None) => format!("{s}/{w}"),
            (Some(s), None, _) => s.clone(),
            (None, _, _) => format!("{} rows", e.rows.len()),
        };
        let mut details = vec![format!("before={} after={}", levels(&e.before), levels(&e.after))];
        if let Some(id) = &e.ref_id {
            details.push(format!("ref={id}"));
        }
        if let Some(delta) = e.delta {
            details.push(format!("delta={delta}"));
        }
        if let Some(by) = &e.proposed_by {
            details.push(format!("proposedBy={by}"));
        }
        if !e.reason.is_empty() {
            details.push(format!("reason={:?}", e.reason));
        }
        for row in &e.rows {
            details.push(format!("{}/{}:{}", row.sku_id(), row.warehouse_id(), row.qty()));
        }
        let time = humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(e.at_ms));
        let _ = writeln!(
            out,
            "{:>6} {:<24} {:<22} {:<24} {:<16} {:>6}  {}",
            record.index,
            time.to_string(),
            e.action,
            place,
            e.operator,
            e.qty,
            details.join(" ")
        );
    }
    if args.format == "table" {
        let _ = writeln!(out, "{shown} entries");
    }
    ExitCode::SUCCESS
}
