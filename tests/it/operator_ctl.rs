//! `inventoryctl sku`, `adjust` and `transfer` against a running server:
//! what they send, what they print, and their exit codes.

use std::process::Output;

use reqwest::StatusCode;
use serde_json::Value;

use crate::support::{ctl, stderr, stdout, TestServer};

/// The JSON a successful command printed.
fn answer(out: &Output) -> Value {
    assert!(out.status.success(), "exit {:?}: {}{}", out.status.code(), stdout(out), stderr(out));
    serde_json::from_str(&stdout(out)).unwrap_or_else(|e| panic!("{e}: {}", stdout(out)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freeze_and_a_two_person_adjustment_from_the_command_line() {
    let server = TestServer::start().await;
    let c = &server.client;
    let url = server.url.as_str();
    c.receive("sku", 10).await;

    let out = ctl(&["adjust", "--help"]).await;
    assert!(out.status.success() && stdout(&out).contains("approve"), "{}", stdout(&out));

    // Freeze: reserves are refused until the SKU is unfrozen.
    let frozen =
        answer(&ctl(&["sku", "freeze", "sku", "--reason", "oversell page", "--operator", "ann", "--url", url]).await);
    assert_eq!(frozen["frozen"], true);
    let r = c.reserve("o1", "sku", 1, "r1").await;
    assert_eq!((r.status, r.code()), (StatusCode::CONFLICT, "SKU_FROZEN"), "{}", r.text);
    // A write without --operator is a usage error, not sent.
    let out = ctl(&["sku", "unfreeze", "sku", "--reason", "x", "--url", url]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let args = ["sku", "unfreeze", "sku", "--reason", "counted", "--warehouse", "default", "--operator", "ann"];
    let out = ctl(&[&args[..], &["--idem-key", "u1", "--url", url]].concat()).await;
    assert_eq!(answer(&out)["frozen"], false);
    assert_eq!(c.reserve("o1", "sku", 1, "r2").await.status, StatusCode::OK);

    // Without --idem-key a key is made and printed; with it, a retry is
    // answered with the record as it stands and changes nothing.
    let propose =
        ["adjust", "propose", "--sku", "sku", "--delta", "-3", "--reason", "cycle count", "--operator", "ann"];
    let out = ctl(&[&propose[..], &["--url", url]].concat()).await;
    assert!(stderr(&out).contains("--idem-key ctl-"), "{}", stderr(&out));
    let proposed = answer(&out);
    assert_eq!((proposed["status"].as_str(), proposed["delta"].as_i64()), (Some("PENDING"), Some(-3)));
    let id = proposed["adjustmentId"].as_str().unwrap().to_string();
    let twice = ["adjust", "propose", "--sku", "sku", "--delta=2", "--reason", "r", "--operator", "ann"];
    let twice = [&twice[..], &["--idem-key", "p2", "--url", url]].concat();
    let first = answer(&ctl(&twice).await);
    let again = ctl(&twice).await;
    assert_eq!(answer(&again)["adjustmentId"], first["adjustmentId"]);
    assert!(stderr(&again).contains("already done"), "{}", stderr(&again));
    let second = first["adjustmentId"].as_str().unwrap().to_string();

    // The proposer cannot approve: refused, exit 1, the service's code named.
    let out = ctl(&["adjust", "approve", &id, "--operator", "ann", "--url", url]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("SAME_OPERATOR"), "{}", stderr(&out));
    assert_eq!(c.levels("sku").await, (9, 1, 0));
    let out = ctl(&["adjust", "approve", &id, "--operator", "bob", "--reason", "recounted", "--url", url]).await;
    assert!(stdout(&out).contains("APPLIED"), "{}", stdout(&out));
    let applied = answer(&out);
    assert_eq!((applied["approvedBy"].as_str(), applied["after"]["available"].as_u64()), (Some("bob"), Some(6)));
    assert_eq!(c.levels("sku").await, (6, 1, 0));
    let out = ctl(&["adjust", "reject", &second, "--reason", "duplicate", "--operator", "bob", "--url", url]).await;
    assert_eq!(answer(&out)["status"], "REJECTED");
    let out = ctl(&["adjust", "reject", &second, "--reason", "again", "--operator", "bob", "--url", url]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("ADJUSTMENT_NOT_PENDING"), "{}", stderr(&out));

    // Lists and show, which need no operator.
    let out = ctl(&["adjust", "list", "--sku", "sku", "--url", url]).await;
    let table = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    let line = |id: &str| table.lines().find(|l| l.starts_with(&format!("{id} "))).unwrap_or_default().to_string();
    assert!(table.starts_with("ID "), "{table}");
    assert!(line(&id).contains("APPLIED") && line(&id).contains("bob"), "{table}");
    assert!(line(&second).contains("REJECTED"), "{table}");
    let out = ctl(&["adjust", "list", "--status", "applied", "--format", "json", "--url", url]).await;
    let listed = answer(&out)["adjustments"].as_array().unwrap().clone();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["adjustmentId"], id.as_str());
    assert_eq!(answer(&ctl(&["adjust", "show", &id, "--url", url]).await)["status"], "APPLIED");
    let out = ctl(&["adjust", "show", "adj-0-999", "--url", url]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("ADJUSTMENT_NOT_FOUND"), "{}", stderr(&out));
    let out = ctl(&["adjust", "list", "--status", "DONE", "--url", url]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    server.stop().await;

    // No service (nothing listens on port 1): exit 2, the request named.
    let out = ctl(&["adjust", "approve", &id, "--operator", "bob", "--idem-key", "a9", "--url", "127.0.0.1:1"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot connect"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_from_the_command_line() {
    let server = TestServer::start().await;
    let c = &server.client;
    let url = server.url.as_str();
    c.receive("sku", 10).await;
    let row = |stock: &Value, warehouse: &str| {
        let rows = stock["warehouses"].as_array().unwrap();
        let row = rows.iter().find(|w| w["warehouseId"] == warehouse).cloned().unwrap();
        (row["available"].as_u64().unwrap(), row["inTransit"].as_u64().unwrap())
    };

    let create = ["transfer", "create", "--sku", "sku", "--from", "default", "--to", "east", "--qty", "4"];
    let out = ctl(&[
        &create[..],
        &["--reason", "rebalance", "--expected-arrival", "2h", "--operator", "ann"],
        &["--url", url],
    ]
    .concat())
    .await;
    let created = answer(&out);
    assert_eq!((created["status"].as_str(), created["qty"].as_u64()), (Some("IN_TRANSIT"), Some(4)));
    assert!(created["expectedArrivalAt"].is_string(), "{created}");
    let id = created["transferId"].as_str().unwrap().to_string();
    let stock = c.get("/api/inventory/sku").await.body;
    assert_eq!((row(&stock, "default"), row(&stock, "east")), ((6, 0), (0, 4)));

    let out = ctl(&["transfer", "list", "--status", "IN_TRANSIT", "--url", url]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    assert!(table.lines().any(|l| l.starts_with(&id) && l.contains("east") && l.contains("ann")), "{table}");

    let out = ctl(&["transfer", "arrive", &id, "--operator", "bob", "--url", url]).await;
    let arrived = answer(&out);
    assert_eq!((arrived["status"].as_str(), arrived["finishedBy"].as_str()), (Some("ARRIVED"), Some("bob")));
    let stock = c.get("/api/inventory/sku").await.body;
    assert_eq!((row(&stock, "default"), row(&stock, "east")), ((6, 0), (4, 0)));
    let out = ctl(&["transfer", "cancel", &id, "--reason", "too late", "--operator", "bob", "--url", url]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("TRANSFER_NOT_IN_TRANSIT"), "{}", stderr(&out));

    // A cancelled transfer's units go back.
    let back = ["transfer", "create", "--sku", "sku", "--from", "east", "--to", "west", "--qty", "3"];
    let out = ctl(&[&back[..], &["--reason", "rebalance", "--operator", "ann", "--url", url]].concat()).await;
    let back = answer(&out)["transferId"].as_str().unwrap().to_string();
    let out =
        ctl(&["transfer", "cancel", &back, "--reason", "truck broke down", "--operator", "bob", "--url", url]).await;
    assert_eq!(answer(&out)["cancelReason"], "truck broke down");
    assert_eq!(c.levels("sku").await, (10, 0, 0));

    let out = ctl(&["transfer", "list", "--sku", "sku", "--format", "json", "--url", url]).await;
    let statuses: Vec<Value> =
        answer(&out)["transfers"].as_array().unwrap().iter().map(|t| t["status"].clone()).collect();
    assert_eq!(statuses, ["ARRIVED", "CANCELLED"]);
    assert_eq!(answer(&ctl(&["transfer", "show", &back, "--url", url]).await)["status"], "CANCELLED");
    let out = ctl(&["transfer", "list", "--status", "OVERDUE", "--url", url]).await;
    assert_eq!(stdout(&out).trim(), "no transfers");
    // Refused by the service (same warehouse), and by the tool (no duration).
    let out =
        ctl(&[&create[..6], &["--to", "default", "--qty", "1", "--reason", "r", "--operator", "ann", "--url", url]]
            .concat())
        .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("SAME_WAREHOUSE"), "{}", stderr(&out));
    let out =
        ctl(&[&create[..], &["--reason", "r", "--expected-arrival", "soon", "--operator", "ann", "--url", url]]
            .concat())
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    server.stop().await;
}
