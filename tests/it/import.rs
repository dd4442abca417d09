//! `inventoryctl import` through the bulk path.

use reqwest::StatusCode;

use crate::support::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_import_loads_a_catalogue_once() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("catalogue.csv");
    let mut text = String::from("skuId,warehouseId,qty\n");
    for i in 0..2_500 {
        text.push_str(&format!("imp-{i},{},{}\n", if i % 5 == 0 { "east" } else { "" }, 1 + i % 7));
    }
    std::fs::write(&csv, text).unwrap();
    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_inventoryctl"))
            .args([
                "import",
                "--file",
                csv.to_str().unwrap(),
                "--url",
                &server.url,
                "--chunk",
                "300",
                "--concurrency",
                "3",
            ])
            .output()
            .unwrap()
    };
    let out = run();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let units: u64 = (0..2_500u64).map(|i| 1 + i % 7).sum();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("imported 2500 rows, {units} units")),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let c = &server.client;
    assert_eq!(c.levels("imp-7").await, (1, 0, 0));
    let east = c.get("/api/inventory/imp-10").await.body;
    assert_eq!((east["warehouses"][0]["warehouseId"].as_str(), east["available"].as_u64()), (Some("east"), Some(4)));
    // Importing the same file again adds nothing: every chunk is a replay.
    assert!(run().status.success());
    assert_eq!(c.levels("imp-7").await, (1, 0, 0));
    // A bad row is named, nothing of its chunk lands.
    std::fs::write(&csv, "skuId,warehouseId,qty\nbad-1,,3\nbad-2,,zero\n").unwrap();
    let out = run();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 3"), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(c.get("/api/inventory/bad-1").await.status, StatusCode::NOT_FOUND);
    server.stop().await;
}
