//! The runbook's procedures, run as they are written in ops/RUNBOOK.md.

use std::path::Path;
use std::process::Command;

use reqwest::StatusCode;

use crate::support::{Options, TestServer};

/// The shell block between `<!-- name -->` and `<!-- /name -->`.
fn procedure(name: &str) -> String {
    let runbook = include_str!("../../ops/RUNBOOK.md");
    let start = runbook.find(&format!("<!-- {name} -->\n```sh\n")).expect("the procedure's start marker");
    let body = &runbook[start..];
    let body = &body[body.find("```sh\n").unwrap() + 6..];
    body[..body.find("```\n").expect("the procedure's end")].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_oversell_page_runs_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let server =
        TestServer::start_with(Options { data_dir: Some(dir.path().to_path_buf()), ..Default::default() }).await;
    let c = &server.client;
    c.receive("page-1", 10).await;
    assert_eq!(c.reserve("o1", "page-1", 2, "r1").await.status, StatusCode::OK);

    let ctl = Path::new(env!("CARGO_BIN_EXE_inventoryctl"));
    let path = format!("{}:{}", ctl.parent().unwrap().display(), std::env::var("PATH").unwrap_or_default());
    let script = procedure("oversell-procedure");
    let (url, data_dir) = (server.url.clone(), dir.path().to_path_buf());
    let out = tokio::task::spawn_blocking(move || {
        Command::new("bash")
            .args(["-euo", "pipefail", "-c", &script])
            .env("PATH", path)
            .env("INVENTORY_URL", url)
            .env("DATA_DIR", data_dir)
            .env("SKU", "page-1")
            .env("DELTA", "-2")
            .env("OPERATOR", "alice")
            .env("SECOND_OPERATOR", "bob")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the procedure failed:\n{stdout}\n{stderr}");

    // Written off, unfrozen, and every step is in the trail.
    assert_eq!(c.levels("page-1").await, (6, 2, 0));
    assert_eq!(c.get("/api/inventory/page-1").await.body["frozen"], false);
    assert!(stdout.contains("FREEZE"), "the trail was not listed:\n{stdout}");
    // The audit log trails the journal by a moment: the last step may not
    // be in the trail the procedure printed, but it is there soon after.
    let data_dir = dir.path().to_str().unwrap().to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let args = ["audit", "list", "--sku", "page-1", "--data-dir", data_dir.as_str()];
        let trail = String::from_utf8_lossy(&crate::support::inventoryctl(args).stdout).into_owned();
        let actions = ["FREEZE", "ADJUSTMENT_PROPOSED", "ADJUSTMENT_APPLIED", "UNFREEZE"];
        if actions.iter().all(|a| trail.contains(a)) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the trail lacks a step:\n{trail}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let applied = c.get("/api/admin/adjustments?status=APPLIED&skuId=page-1").await.body;
    let applied = &applied["adjustments"][0];
    assert_eq!((applied["proposedBy"].as_str(), applied["approvedBy"].as_str()), (Some("alice"), Some("bob")));
    server.stop().await;
}
