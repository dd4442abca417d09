//! `inventoryctl import` through the bulk path.

use reqwest::StatusCode;

use serde_json::json;

use crate::support::{inventoryctl, skus_on_different_shards, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_sizes_every_shard_for_its_share_of_more_skus() {
    let server = TestServer::start().await;
    let c = &server.client;
    let sized = |body: &serde_json::Value| -> Vec<u64> {
        body["shards"].as_array().unwrap().iter().map(|s| s["sizedForSkus"].as_u64().unwrap()).collect()
    };
    let r = c.post("/api/admin/capacity", json!({"skus": 1001})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(sized(&r.body), vec![501; server.shards as usize]);
    // Room is counted beyond the SKUs a shard already holds.
    let (held, _) = skus_on_different_shards("cap", server.shards);
    let home = inventory_core::shard_for_sku(&held, server.shards) as usize;
    let r = c.post("/api/inventory/receive", json!({"idemKey": "cap-r", "skuId": held, "qty": 4})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = c.post("/api/admin/capacity", json!({"skus": 20_000})).await;
    let mut expect = vec![10_000; server.shards as usize];
    expect[home] += 1;
    assert_eq!((r.status, sized(&r.body)), (StatusCode::OK, expect), "{}", r.text);

    // Bad requests are refused and change nothing.
    for bad in [
        json!({"skus": 0}),
        json!({"skus": 100_000_001}),
        json!({"skus": "many"}),
        json!({}),
        json!({"skus": 5, "x": 1}),
    ] {
        let r = c.post("/api/admin/capacity", bad.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.text);
        assert!(["INVALID_FIELD", "MALFORMED_JSON"].contains(&r.code()), "{bad}: {}", r.text);
    }
    assert_eq!(c.get("/api/admin/capacity").await.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(c.levels(&held).await, (4, 0, 0));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_may_be_sent_as_csv_and_is_the_same_receipt_as_its_json() {
    let server = TestServer::start().await;
    let c = &server.client;
    let path = "/api/inventory/receive-batch?ref=po%2F9";
    let csv = |key| [("content-type", "text/csv; charset=utf-8"), ("idempotency-key", key)];
    let body: &[u8] = b"skuId,warehouseId,qty\r\ncsv-a,,3\ncsv-b,east,4\n\ncsv-a,west,5\n";
    let r = c.post_raw(path, &csv("c1"), body).await;
    assert_eq!((r.status, &r.body), (StatusCode::OK, &json!({"rows": 3, "units": 12})), "{}", r.text);
    assert_eq!(c.levels("csv-a").await, (8, 0, 0));
    assert_eq!(c.get("/api/inventory/csv-b").await.body["warehouses"][0]["warehouseId"], "east");
    // Sent again, or as the same batch in JSON under the same key, it is a replay.
    let again = c.post_raw(path, &csv("c1"), body).await;
    assert_eq!((again.status, again.headers.get("idempotent-replayed").is_some()), (StatusCode::OK, true));
    let items = json!([
        {"skuId": "csv-a", "qty": 3},
        {"skuId": "csv-b", "warehouseId": "east", "qty": 4},
        {"skuId": "csv-a", "warehouseId": "west", "qty": 5},
    ]);
    let as_json = c.post("/api/inventory/receive-batch", json!({"idemKey": "c1", "ref": "po/9", "items": items})).await;
    assert_eq!((as_json.status, as_json.headers.get("idempotent-replayed").is_some()), (StatusCode::OK, true));
    // The reference is part of the receipt: another one under the key is refused.
    let other_ref = c.post_raw("/api/inventory/receive-batch?ref=po-10", &csv("c1"), body).await;
    assert_eq!((other_ref.status, other_ref.code()), (StatusCode::UNPROCESSABLE_ENTITY, "IDEMPOTENCY_KEY_REUSED"));

    // Bad CSV is refused naming the line, and nothing of it lands.
    type Headers<'a> = &'a [(&'a str, &'a str)];
    let bad: [(&str, Headers, &[u8], &str, &str); 5] = [
        (path, &csv("c2"), b"csv-c,,1\ncsv-d,,0\n", "INVALID_FIELD", "line 2: qty must be between 1 and"),
        (path, &csv("c3"), b"csv-c,,1\ncsv-d,1\n", "MALFORMED_CSV", "line 2: expected 3 fields"),
        (path, &csv("c4"), b"csv-c,,1\ncsv\x01d,,1\n", "INVALID_FIELD", "line 2: skuId must not contain control"),
        ("/api/inventory/receive-batch?reff=x", &csv("c5"), b"csv-c,,1\n", "INVALID_FIELD", "unknown query parameter"),
        (path, &[("content-type", "text/csv")], b"csv-c,,1\n", "IDEMPOTENCY_KEY_REQUIRED", "every write needs"),
    ];
    for (path, headers, body, code, message) in bad {
        let r = c.post_raw(path, headers, body).await;
        assert_eq!((r.status, r.code()), (StatusCode::BAD_REQUEST, code), "{}", r.text);
        assert!(r.body["message"].as_str().unwrap().starts_with(message), "{}", r.text);
    }
    assert_eq!(c.get("/api/inventory/csv-c").await.status, StatusCode::NOT_FOUND);
    server.stop().await;
}

/// A JSON batch's `ref` is in its body; a query parameter beside it was
/// ignored (an over-long `ref` in the query was accepted and dropped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_batch_refuses_query_parameters_it_would_ignore() {
    let server = TestServer::start().await;
    let c = &server.client;
    let long = "r".repeat(300);
    for query in ["ref=po-9", "ref=", long.as_str(), "x=1&ref=po-9"] {
        let path = format!("/api/inventory/receive-batch?{query}");
        let r = c.post(&path, json!({"idemKey": "q1", "items": [{"skuId": "query-a", "qty": 1}]})).await;
        assert_eq!((r.status, r.code()), (StatusCode::BAD_REQUEST, "INVALID_FIELD"), "{query}: {}", r.text);
        assert!(r.body["message"].as_str().unwrap().contains("a JSON receive-batch takes none"), "{}", r.text);
    }
    assert_eq!(c.get("/api/inventory/query-a").await.status, StatusCode::NOT_FOUND, "nothing landed");
    let r = c
        .post("/api/inventory/receive-batch?", json!({"idemKey": "q1", "items": [{"skuId": "query-a", "qty": 1}]}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "an empty query is none: {}", r.text);
    server.stop().await;
}

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
        let file = csv.to_str().unwrap();
        inventoryctl(["import", "--file", file, "--url", &server.url, "--chunk", "300", "--concurrency", "3"])
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
    // JSONL goes through the JSON form of the same path.
    let jsonl = dir.path().join("more.jsonl");
    std::fs::write(
        &jsonl,
        "{\"skuId\":\"imp-j1\",\"qty\":2}\n\n{\"skuId\":\"imp-7\",\"warehouseId\":\"east\",\"qty\":3}\n",
    )
    .unwrap();
    let out = inventoryctl(["import", "--file", jsonl.to_str().unwrap(), "--url", &server.url, "--no-presize"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("imported 2 rows, 5 units"), "{out:?}");
    assert_eq!((c.levels("imp-j1").await, c.levels("imp-7").await), ((2, 0, 0), (4, 0, 0)));
    // A bad row is named, nothing of its chunk lands.
    std::fs::write(&csv, "skuId,warehouseId,qty\nbad-1,,3\nbad-2,,zero\n").unwrap();
    let out = run();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 3"), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(c.get("/api/inventory/bad-1").await.status, StatusCode::NOT_FOUND);
    server.stop().await;
}
