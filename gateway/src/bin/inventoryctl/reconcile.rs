//! `inventoryctl reconcile`: runs `POST /api/admin/reconcile` on a service
//! and prints its report.

use std::process::ExitCode;
use std::time::Duration;

use hyper::StatusCode;

use crate::client::{Blocking, Endpoint, Request};

/// Longest wait for the report: the service compares every row first.
const REPORT_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(clap::Args)]
pub struct ReconcileArgs {
    /// The service.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Correct wrong PostgreSQL rows (each repair is audited as AUTO_RECONCILE).
    #[arg(long)]
    repair: bool,
}

pub fn run(args: ReconcileArgs) -> ExitCode {
    let body = format!("{{\"repair\":{}}}", args.repair);
    let request = Request::post("/api/admin/reconcile", "application/json", body).timeout(REPORT_TIMEOUT);
    let result = Endpoint::parse_scheme_optional(&args.url).and_then(|endpoint| Blocking::new(endpoint).send(request));
    match result {
        Ok(response) if response.status == StatusCode::OK => {
            let payload = String::from_utf8_lossy(&response.body).into_owned();
            let report: serde_json::Value = serde_json::from_str(&payload).unwrap_or_default();
            println!("{}", serde_json::to_string_pretty(&report).unwrap_or(payload));
            if report["mismatched"].as_u64().unwrap_or(0) > report["repaired"].as_u64().unwrap_or(0) {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Ok(response) => {
            let payload = String::from_utf8_lossy(&response.body);
            eprintln!("inventoryctl reconcile: the service answered {}: {payload}", response.status.as_u16());
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("inventoryctl reconcile: {e}");
            ExitCode::from(2)
        }
    }
}
