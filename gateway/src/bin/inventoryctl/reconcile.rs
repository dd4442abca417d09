//! `inventoryctl reconcile`: runs `POST /api/admin/reconcile` on a service
//! and prints its report.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::time::Duration;

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
    let authority = args.url.trim_start_matches("http://").trim_end_matches('/');
    let body = format!("{{\"repair\":{}}}", args.repair);
    let result = (|| -> std::io::Result<(u16, String)> {
        let mut stream = TcpStream::connect(authority)?;
        stream.set_read_timeout(Some(Duration::from_secs(120)))?;
        write!(
            stream,
            "POST /api/admin/reconcile HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let payload = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        Ok((status, payload))
    })();
    match result {
        Ok((200, payload)) => {
            let report: serde_json::Value = serde_json::from_str(&payload).unwrap_or_default();
            println!("{}", serde_json::to_string_pretty(&report).unwrap_or(payload));
            if report["mismatched"].as_u64().unwrap_or(0) > report["repaired"].as_u64().unwrap_or(0) {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Ok((status, payload)) => {
            eprintln!("inventoryctl reconcile: the service answered {status}: {payload}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("inventoryctl reconcile: {authority}: {e}");
            ExitCode::from(2)
        }
    }
}
