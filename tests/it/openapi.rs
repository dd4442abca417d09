//! The API document (`GET /openapi.json`) against the server that serves
//! it: every endpoint is in it at its path and method and nothing else is,
//! and live answers, successes and refusals, validate against its schema
//! for their status (an unlisted status, an unlisted error code, a field
//! missing, extra or of another type fails).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use inventory_gateway::http::Endpoint;
use inventory_gateway::Config;
use reqwest::header::CONTENT_TYPE;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::auth::{secret_file, token, SECRET};
use crate::nats::PrivateNats;
use crate::pg::{url_for, wait_caught_up, TestSchema, PG_ADDR};
use crate::support::{Client, Options, Reply, TestServer};

/// The document as a server serves it, and the answers checked against it.
struct Contract {
    doc: Value,
    validators: BTreeMap<String, jsonschema::Validator>,
    /// `(endpoint, status)` of every answer checked.
    checked: BTreeSet<(usize, u16)>,
}

impl Contract {
    async fn fetch(c: &Client) -> Contract {
        let reply = c.get("/openapi.json").await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        let mut contract = Contract { doc: reply.body.clone(), validators: BTreeMap::new(), checked: BTreeSet::new() };
        contract.check(Endpoint::OpenApi, &reply);
        contract
    }

    /// Sends a request to `endpoint` at `path` (its parameters filled in)
    /// and checks the answer.
    async fn call(
        &mut self,
        c: &Client,
        endpoint: Endpoint,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> Reply {
        let reply = c.send(endpoint.method().as_str(), path, headers, body.as_ref()).await;
        self.check(endpoint, &reply);
        reply
    }

    /// Like [`call`](Self::call), with a body sent as it is.
    async fn call_raw(
        &mut self,
        c: &Client,
        endpoint: Endpoint,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Reply {
        let reply = c.send_bytes(endpoint.method().as_str(), path, headers, body).await;
        self.check(endpoint, &reply);
        reply
    }

    /// Holds an answer of `endpoint` to the document: its status is listed
    /// for the operation, with its media type, and its body validates
    /// against that response's schema.
    fn check(&mut self, endpoint: Endpoint, reply: &Reply) {
        let (path, method) = (endpoint.path(), endpoint.method().as_str().to_lowercase());
        let operation = &self.doc["paths"][path][&method];
        assert!(operation.is_object(), "{method} {path} is not in the document");
        let status = reply.status.as_u16().to_string();
        let response = &operation["responses"][&status];
        assert!(
            response.is_object(),
            "{method} {path} answered {status}, which the document does not list: {}",
            reply.text
        );
        let index = Endpoint::ALL.iter().position(|e| *e == endpoint).unwrap();
        if response.get("content").is_none() {
            assert!(reply.text.is_empty(), "{method} {path} {status} is documented without a body: {}", reply.text);
            self.checked.insert((index, reply.status.as_u16()));
            return;
        }
        let media = reply.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        let media = media.split(';').next().unwrap().trim();
        let content = &response["content"][media];
        assert!(
            content.is_object(),
            "{method} {path} {status} answered {media}; the document: {}",
            response["content"]
        );
        if media == "application/json" {
            let body: Value = serde_json::from_str(&reply.text)
                .unwrap_or_else(|e| panic!("{method} {path} {status}: not JSON ({e}): {}", reply.text));
            let key = format!("{method} {path} {status}");
            let components = &self.doc["components"];
            let validator = self.validators.entry(key).or_insert_with(|| {
                let schema = json!({
                    "$schema": "https://json-schema.org/draft/2020-12/schema",
                    "components": components,
                    "allOf": [content["schema"]],
                });
                jsonschema::options()
                    .with_draft(jsonschema::Draft::Draft202012)
                    .should_validate_formats(true)
                    .build(&schema)
                    .unwrap_or_else(|e| panic!("{method} {path} {status}: the document's schema does not compile: {e}"))
            });
            let errors: Vec<String> = validator.iter_errors(&body).map(|e| e.to_string()).collect();
            assert!(
                errors.is_empty(),
                "{method} {path} answered {status} with a body the document does not describe: {}\n  {}",
                reply.text,
                errors.join("\n  ")
            );
        }
        self.checked.insert((index, reply.status.as_u16()));
    }

    /// The statuses the document lists for `endpoint`.
    fn statuses(&self, endpoint: Endpoint) -> Vec<u16> {
        let operation = &self.doc["paths"][endpoint.path()][endpoint.method().as_str().to_lowercase()];
        operation["responses"].as_object().unwrap().keys().map(|s| s.parse().unwrap()).collect()
    }
}

fn status_of(reply: &Reply) -> (StatusCode, &str) {
    (reply.status, reply.code())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_lists_every_endpoint_at_its_path_and_method_and_nothing_else() {
    let server = TestServer::start().await;
    let contract = Contract::fetch(&server.client).await;
    let doc = &contract.doc;
    assert_eq!(doc["openapi"], "3.1.0");
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            documented.insert((path.clone(), method.to_uppercase()));
            let endpoint = Endpoint::ALL
                .into_iter()
                .find(|e| e.path() == path && e.method().as_str().eq_ignore_ascii_case(method))
                .unwrap_or_else(|| panic!("{method} {path} is documented but not served"));
            let roles: Vec<&str> = endpoint.roles(true).iter().map(|r| r.name()).collect();
            assert_eq!(operation["x-roles"], json!(roles), "{method} {path}");
        }
    }
    let served: BTreeSet<_> = Endpoint::ALL.iter().map(|e| (e.path().to_string(), e.method().to_string())).collect();
    assert_eq!(documented, served, "the document's operations are the route table's endpoints");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_as_the_document_says() {
    use Endpoint::*;
    let server = TestServer::start_with(Options { max_qty: 1_000, ..Options::default() }).await;
    let c = &server.client;
    let mut k = Contract::fetch(c).await;
    let ann = [("x-operator", "ann")];
    let bob = [("x-operator", "bob")];

    // Receipts.
    let r = k
        .call(c, Receive, "/api/inventory/receive", &[], Some(json!({"skuId": "tea", "qty": 50, "idemKey": "r1"})))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let east = json!({"skuId": "tea", "warehouseId": "east", "qty": 5, "idemKey": "r2", "ref": "po-7"});
    k.call(c, Receive, "/api/inventory/receive", &[], Some(east)).await;
    let r = k
        .call(c, Receive, "/api/inventory/receive", &[], Some(json!({"skuId": "tea", "qty": 3, "idemKey": "r1"})))
        .await;
    assert_eq!(status_of(&r), (StatusCode::UNPROCESSABLE_ENTITY, "IDEMPOTENCY_KEY_REUSED"));
    let r = k.call(c, Receive, "/api/inventory/receive", &[], Some(json!({"skuId": "tea", "qty": 3}))).await;
    assert_eq!(status_of(&r), (StatusCode::BAD_REQUEST, "IDEMPOTENCY_KEY_REQUIRED"));
    let r = k
        .call(c, Receive, "/api/inventory/receive", &[], Some(json!({"skuId": "tea", "qty": 0, "idemKey": "r3"})))
        .await;
    assert_eq!(status_of(&r), (StatusCode::BAD_REQUEST, "INVALID_FIELD"));
    let json_type = [("content-type", "application/json")];
    let r = k.call_raw(c, Receive, "/api/inventory/receive", &json_type, b"{\"skuId\":".to_vec()).await;
    assert_eq!(status_of(&r), (StatusCode::BAD_REQUEST, "MALFORMED_JSON"));
    let r = k.call_raw(c, Receive, "/api/inventory/receive", &json_type, vec![b' '; 70 * 1024]).await;
    assert_eq!(status_of(&r), (StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE"));

    let batch = json!({"idemKey": "b1", "items": [{"skuId": "mug", "qty": 4}, {"skuId": "cup", "warehouseId": "east", "qty": 2}]});
    let r = k.call(c, ReceiveBatch, "/api/inventory/receive-batch", &[], Some(batch)).await;
    assert_eq!(r.body, json!({"rows": 2, "units": 6}));
    let csv = [("content-type", "text/csv"), ("idempotency-key", "b2")];
    let r = k
        .call_raw(
            c,
            ReceiveBatch,
            "/api/inventory/receive-batch?ref=po-8",
            &csv,
            b"skuId,warehouseId,qty\nbowl,,3\n".to_vec(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let twice = json!({"idemKey": "b3", "items": [{"skuId": "mug", "qty": 1}, {"skuId": "mug", "qty": 1}]});
    let r = k.call(c, ReceiveBatch, "/api/inventory/receive-batch", &[], Some(twice)).await;
    assert_eq!(status_of(&r), (StatusCode::UNPROCESSABLE_ENTITY, "INVALID_BATCH"));
    let csv = [("content-type", "text/csv"), ("idempotency-key", "b4")];
    let r = k.call_raw(c, ReceiveBatch, "/api/inventory/receive-batch", &csv, b"bowl,1\n".to_vec()).await;
    assert_eq!(status_of(&r), (StatusCode::BAD_REQUEST, "MALFORMED_CSV"));

    // Holds.
    let reserve =
        |order: &str, qty: u64, key: &str| json!({"orderId": order, "skuId": "tea", "qty": qty, "idemKey": key});
    let r = k.call(c, Reserve, "/api/inventory/reserve", &[], Some(reserve("o-1", 2, "h1"))).await;
    assert_eq!(r.body["status"], "RESERVED", "{}", r.text);
    let held = r.body["reservationId"].as_str().unwrap().to_string();
    let r = k.call(c, Reserve, "/api/inventory/reserve", &[], Some(reserve("o-1", 2, "h1"))).await;
    assert_eq!(r.headers["idempotent-replayed"], "true");
    let r = k.call(c, Reserve, "/api/inventory/reserve", &[], Some(reserve("o-1", 1, "h2"))).await;
    assert_eq!(status_of(&r), (StatusCode::CONFLICT, "DUPLICATE_ORDER_LINE"));
    let r = k.call(c, Reserve, "/api/inventory/reserve", &[], Some(reserve("o-2", 900, "h3"))).await;
    assert_eq!(status_of(&r), (StatusCode::CONFLICT, "INSUFFICIENT_STOCK"));
    let r = k
        .call(
            c,
            Reserve,
            "/api/inventory/reserve",
            &[],
            Some(json!({"orderId": "o-2", "skuId": "none", "qty": 1, "idemKey": "h4"})),
        )
        .await;
    assert_eq!(status_of(&r), (StatusCode::NOT_FOUND, "SKU_NOT_FOUND"));
    let r = k.call(c, Reserve, "/api/inventory/reserve", &[], Some(reserve("o-2", 1, "h1"))).await;
    assert_eq!(status_of(&r), (StatusCode::UNPROCESSABLE_ENTITY, "IDEMPOTENCY_KEY_REUSED"));

    let confirm =
        |id: &str, payment: &str, key: &str| json!({"reservationId": id, "paymentId": payment, "idemKey": key});
    let r = k.call(c, Confirm, "/api/inventory/confirm", &[], Some(confirm(&held, "pay-1", "c1"))).await;
    assert_eq!(r.body["status"], "CONFIRMED", "{}", r.text);
    let r = k.call(c, Confirm, "/api/inventory/confirm", &[], Some(confirm(&held, "pay-2", "c2"))).await;
    assert_eq!(status_of(&r), (StatusCode::CONFLICT, "PAYMENT_MISMATCH"));
    let r = k.call(c, Confirm, "/api/inventory/confirm", &[], Some(confirm("rsv-1-99999", "pay-3", "c3"))).await;
    assert_eq!(status_of(&r), (StatusCode::NOT_FOUND, "RESERVATION_NOT_FOUND"));
    let r = k.call(c, Confirm, "/api/inventory/confirm", &[], Some(confirm("hold-1", "pay-3", "c4"))).await;
    assert_eq!(status_of(&r), (StatusCode::BAD_REQUEST, "INVALID_FIELD"));

    let r = k.call(c, Reserve, "/api/inventory/reserve", &[], Some(reserve("o-3", 1, "h5"))).await;
    let second = r.body["reservationId"].as_str().unwrap().to_string();
    let release = |id: &str, key: &str| json!({"reservationId": id, "reason": "USER_CANCELLED", "idemKey": key});
    let r = k.call(c, Release, "/api/inventory/release", &[], Some(release(&second, "l1"))).await;
    assert_eq!(r.body["status"], "RELEASED", "{}", r.text);
    let r = k.call(c, Release, "/api/inventory/release", &[], Some(release(&held, "l2"))).await;
    assert_eq!(status_of(&r), (StatusCode::CONFLICT, "RESERVATION_CONFIRMED"));
    let r = k.call(c, Confirm, "/api/inventory/confirm", &[], Some(confirm(&second, "pay-4", "c5"))).await;
    assert_eq!(status_of(&r), (StatusCode::CONFLICT, "RESERVATION_RELEASED"));

    // Reads.
    let r = k.call(c, Stock, "/api/inventory/tea", &[], None).await;
    assert_eq!(r.body["warehouses"].as_array().unwrap().len(), 2, "{}", r.text);
    let r = k.call(c, Stock, "/api/inventory/none", &[], None).await;
    assert_eq!(status_of(&r), (StatusCode::NOT_FOUND, "SKU_NOT_FOUND"));
    for id in [&held, &second] {
        k.call(c, Reservation, &format!("/api/reservations/{id}"), &[], None).await;
    }
    let r = k.call(c, Reservation, "/api/reservations/rsv-1-99999", &[], None).await;
    assert_eq!(status_of(&r), (StatusCode::NOT_FOUND, "RESERVATION_NOT_FOUND"));
    let r = k.call(c, Reservation, "/api/reservations/hold-1", &[], None).await;
    assert_eq!(status_of(&r), (StatusCode::BAD_REQUEST, "INVALID_FIELD"));
    let r = k.call(c, OrderStatus, "/api/orders/o-1/inventory-status", &[], None).await;
    assert_eq!(r.body["reservations"].as_array().unwrap().len(), 1, "{}", r.text);
    k.call(c, OrderStatus, "/api/orders/nobody/inventory-status", &[], None).await;
    let r = k.call(c, OrderStatus, "/api/orders/o%01/inventory-status", &[], None).await;
    assert_eq!(status_of(&r), (StatusCode::BAD_REQUEST, "INVALID_FIELD"));
    for (endpoint, path) in
        [(Health, "/healthz"), (Ready, "/readyz"), (Metrics, "/metrics"), (OpenApi, "/openapi.json")]
    {
        let r = k.call(c, endpoint, path, &[], None).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
    }

    // Admin.
    k.call(c, AdminPersistence, "/api/admin/persistence", &[], None).await;
    k.call(c, AdminEvents, "/api/admin/events", &[], None).await;
    let r = k.call(c, AdminReconcile, "/api/admin/reconcile", &[], Some(json!({"repair": false}))).await;
    assert_eq!(r.body["mismatched"], 0, "{}", r.text);
    let r = k.call_raw(c, AdminReconcile, "/api/admin/reconcile", &[], Vec::new()).await;
    assert_eq!(r.status, StatusCode::OK, "an empty body is {{}}: {}", r.text);
    let r = k.call(c, AdminReconcile, "/api/admin/reconcile", &[], Some(json!({"repair": "yes"}))).await;
    assert_eq!(status_of(&r), (StatusCode::BAD_REQUEST, "INVALID_FIELD"));
    let r = k.call(c, AdminSnapshot, "/api/admin/snapshot", &[], None).await;
    assert_eq!(r.body["snapshots"].as_array().unwrap().len(), 2, "{}", r.text);
    k.call(c, AdminCapacity, "/api/admin/capacity", &[], Some(json!({"skus": 1000}))).await;
    for bad in [json!({"skus": 0}), json!({"skus": 1, "more": 1})] {
        let r = k.call(c, AdminCapacity, "/api/admin/capacity", &[], Some(bad)).await;
        assert_eq!(status_of(&r), (StatusCode::BAD_REQUEST, "INVALID_FIELD"));
    }

    // Operator actions.
    let freeze = |key: &str| json!({"warehouseId": "default", "reason": "recount", "idemKey": key});
    let r = k.call(c, Freeze, "/api/admin/skus/tea/freeze", &ann, Some(freeze("f1"))).await;
    assert_eq!(r.body["warehouses"][0]["frozen"], true, "{}", r.text);
    let r = k.call(c, Reserve, "/api/inventory/reserve", &[], Some(reserve("o-4", 1, "h6"))).await;
    assert_eq!(status_of(&r), (StatusCode::CONFLICT, "SKU_FROZEN"));
    let r = k.call(c, Freeze, "/api/admin/skus/tea/freeze", &[], Some(freeze("f2"))).await;
    assert_eq!(status_of(&r), (StatusCode::BAD_REQUEST, "OPERATOR_REQUIRED"));
    let r = k.call(c, Freeze, "/api/admin/skus/none/freeze", &ann, Some(freeze("f3"))).await;
    assert_eq!(status_of(&r), (StatusCode::NOT_FOUND, "SKU_NOT_FOUND"));
    k.call(c, Unfreeze, "/api/admin/skus/tea/unfreeze", &ann, Some(freeze("f4"))).await;
    let r =
        k.call(c, Unfreeze, "/api/admin/skus/tea/unfreeze", &ann, Some(json!({"reason": "", "idemKey": "f5"}))).await;
    assert_eq!(status_of(&r), (StatusCode::BAD_REQUEST, "INVALID_FIELD"));

    let propose = |delta: i64, key: &str| json!({"skuId": "tea", "delta": delta, "reason": "damaged", "idemKey": key});
    let r = k.call(c, AdjustmentPropose, "/api/admin/adjustments", &ann, Some(propose(-2, "a1"))).await;
    assert_eq!(r.body["status"], "PENDING", "{}", r.text);
    let adjustment = r.body["adjustmentId"].as_str().unwrap().to_string();
    let approve = format!("/api/admin/adjustments/{adjustment}/approve");
    let r = k.call(c, AdjustmentApprove, &approve, &ann, Some(json!({"idemKey": "a2"}))).await;
    assert_eq!(status_of(&r), (StatusCode::FORBIDDEN, "SAME_OPERATOR"));
    let r = k.call(c, AdjustmentApprove, &approve, &bob, Some(json!({"idemKey": "a3"}))).await;
    assert_eq!(r.body["status"], "APPLIED", "{}", r.text);
    let r = k.call(c, AdjustmentApprove, &approve, &bob, Some(json!({"idemKey": "a4"}))).await;
    assert_eq!(status_of(&r), (StatusCode::CONFLICT, "ADJUSTMENT_NOT_PENDING"));
    let r = k
        .call(
            c,
            AdjustmentPropose,
            "/api/admin/adjustments",
            &ann,
            Some(json!({"skuId": "none", "delta": 1, "reason": "x", "idemKey": "a5"})),
        )
        .await;
    assert_eq!(status_of(&r), (StatusCode::NOT_FOUND, "SKU_NOT_FOUND"));
    let r = k.call(c, AdjustmentPropose, "/api/admin/adjustments", &ann, Some(propose(3, "a6"))).await;
    let other = r.body["adjustmentId"].as_str().unwrap().to_string();
    let reject = format!("/api/admin/adjustments/{other}/reject");
    let r = k.call(c, AdjustmentReject, &reject, &bob, Some(json!({"idemKey": "a7"}))).await;
    assert_eq!(status_of(&r), (StatusCode::BAD_REQUEST, "INVALID_FIELD"), "a rejection needs a reason");
    let r = k.call(c, AdjustmentReject, &reject, &bob, Some(json!({"reason": "no", "idemKey": "a8"}))).await;
    assert_eq!(r.body["status"], "REJECTED", "{}", r.text);
    k.call(c, Adjustment, &format!("/api/admin/adjustments/{adjustment}"), &[], None).await;
    let r = k.call(c, Adjustment, "/api/admin/adjustments/adj-0-999", &[], None).await;
    assert_eq!(status_of(&r), (StatusCode::NOT_FOUND, "ADJUSTMENT_NOT_FOUND"));
    let r = k.call(c, AdjustmentList, "/api/admin/adjustments?skuId=tea", &[], None).await;
    assert_eq!(r.body["adjustments"].as_array().unwrap().len(), 2, "{}", r.text);
    let r = k.call(c, AdjustmentList, "/api/admin/adjustments?status=LOST", &[], None).await;
    assert_eq!(status_of(&r), (StatusCode::BAD_REQUEST, "INVALID_FIELD"));

    let dispatch = |qty: u64, to: &str, key: &str| {
        json!({"skuId": "tea", "fromWarehouseId": "default", "toWarehouseId": to, "qty": qty, "reason": "rebalance",
               "idemKey": key, "expectedArrivalSeconds": 3600})
    };
    let r = k.call(c, TransferDispatch, "/api/admin/transfers", &ann, Some(dispatch(2, "east", "t1"))).await;
    assert_eq!(r.body["status"], "IN_TRANSIT", "{}", r.text);
    let transfer = r.body["transferId"].as_str().unwrap().to_string();
    let r = k.call(c, TransferDispatch, "/api/admin/transfers", &ann, Some(dispatch(2, "default", "t2"))).await;
    assert_eq!(status_of(&r), (StatusCode::BAD_REQUEST, "SAME_WAREHOUSE"));
    let r = k.call(c, TransferDispatch, "/api/admin/transfers", &ann, Some(dispatch(999, "east", "t3"))).await;
    assert_eq!(status_of(&r), (StatusCode::CONFLICT, "INSUFFICIENT_STOCK"));
    let arrive = format!("/api/admin/transfers/{transfer}/arrive");
    let r = k.call(c, TransferArrive, &arrive, &bob, Some(json!({"idemKey": "t4"}))).await;
    assert_eq!(r.body["status"], "ARRIVED", "{}", r.text);
    let r = k.call(c, TransferArrive, &arrive, &bob, Some(json!({"idemKey": "t5"}))).await;
    assert_eq!(status_of(&r), (StatusCode::CONFLICT, "TRANSFER_NOT_IN_TRANSIT"));
    let r = k.call(c, TransferDispatch, "/api/admin/transfers", &ann, Some(dispatch(1, "west", "t6"))).await;
    let cancel = format!("/api/admin/transfers/{}/cancel", r.body["transferId"].as_str().unwrap());
    let r = k.call(c, TransferCancel, &cancel, &ann, Some(json!({"reason": "truck full", "idemKey": "t7"}))).await;
    assert_eq!(r.body["status"], "CANCELLED", "{}", r.text);
    let r = k
        .call(
            c,
            TransferCancel,
            "/api/admin/transfers/trf-0-999/cancel",
            &ann,
            Some(json!({"reason": "x", "idemKey": "t8"})),
        )
        .await;
    assert_eq!(status_of(&r), (StatusCode::NOT_FOUND, "TRANSFER_NOT_FOUND"));
    k.call(c, Transfer, &format!("/api/admin/transfers/{transfer}"), &[], None).await;
    let r = k.call(c, Transfer, "/api/admin/transfers/trf-1-999", &[], None).await;
    assert_eq!(status_of(&r), (StatusCode::NOT_FOUND, "TRANSFER_NOT_FOUND"));
    let r = k.call(c, TransferList, "/api/admin/transfers", &[], None).await;
    assert_eq!(r.body["transfers"].as_array().unwrap().len(), 2, "{}", r.text);
    k.call(c, TransferList, "/api/admin/transfers?status=OVERDUE&skuId=tea", &[], None).await;
    let r = k.call(c, TransferList, "/api/admin/transfers?status=LOST", &[], None).await;
    assert_eq!(status_of(&r), (StatusCode::BAD_REQUEST, "INVALID_FIELD"));

    // Sale policies, and the reserves they refuse.
    let policy = json!({"maxPerBuyer": 1, "channelQuotas": {"app": 2}, "idemKey": "p1"});
    let r = k.call(c, PolicySet, "/api/admin/skus/tea/policy", &ann, Some(policy.clone())).await;
    assert_eq!(r.body["policy"]["maxPerBuyer"], 1, "{}", r.text);
    let r = k.call(c, PolicySet, "/api/admin/skus/tea/policy", &[], Some(policy)).await;
    assert_eq!(status_of(&r), (StatusCode::BAD_REQUEST, "OPERATOR_REQUIRED"));
    let r = k
        .call(c, PolicySet, "/api/admin/skus/none/policy", &ann, Some(json!({"maxPerBuyer": 1, "idemKey": "p2"})))
        .await;
    assert_eq!(status_of(&r), (StatusCode::NOT_FOUND, "SKU_NOT_FOUND"));
    let buy = |order: &str, buyer: &str, key: &str| json!({"orderId": order, "skuId": "tea", "qty": 1, "idemKey": key, "buyerId": buyer, "channel": "app"});
    let r = k.call(c, Reserve, "/api/inventory/reserve", &[], Some(reserve("o-p1", 1, "hp1"))).await;
    assert_eq!(status_of(&r), (StatusCode::BAD_REQUEST, "CHANNEL_REQUIRED"));
    let r = k.call(c, Reserve, "/api/inventory/reserve", &[], Some(buy("o-p2", "amy", "hp2"))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = k.call(c, Reserve, "/api/inventory/reserve", &[], Some(buy("o-p3", "amy", "hp3"))).await;
    assert_eq!(status_of(&r), (StatusCode::CONFLICT, "PURCHASE_LIMIT_EXCEEDED"));
    let r = k.call(c, Reserve, "/api/inventory/reserve", &[], Some(buy("o-p4", "bob", "hp4"))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = k.call(c, Reserve, "/api/inventory/reserve", &[], Some(buy("o-p6", "cat", "hp6"))).await;
    assert_eq!(status_of(&r), (StatusCode::CONFLICT, "CHANNEL_QUOTA_EXHAUSTED"));
    let later = json!({"saleStartsAt": "2100-01-01T00:00:00Z", "idemKey": "p3"});
    k.call(c, PolicySet, "/api/admin/skus/tea/policy", &ann, Some(later)).await;
    let r = k.call(c, Reserve, "/api/inventory/reserve", &[], Some(reserve("o-p5", 1, "hp5"))).await;
    assert_eq!(status_of(&r), (StatusCode::CONFLICT, "SALE_NOT_STARTED"));
    let r = k
        .call(c, PolicyRemove, "/api/admin/skus/tea/policy", &[("x-operator", "ann"), ("idempotency-key", "p4")], None)
        .await;
    assert!(r.body.get("policy").is_none(), "{}", r.text);
    let r = k.call(c, PolicyRemove, "/api/admin/skus/tea/policy", &ann, None).await;
    assert_eq!(status_of(&r), (StatusCode::BAD_REQUEST, "IDEMPOTENCY_KEY_REQUIRED"));

    // Orders of several lines.
    c.receive("cake", 5).await;
    let lines = json!([{"skuId": "tea", "qty": 1}, {"skuId": "cake", "qty": 1}]);
    let r = k
        .call(c, OrderReserve, "/api/orders/ord-1/reserve", &[], Some(json!({"lines": lines, "idemKey": "or1"})))
        .await;
    assert_eq!(r.body["status"], "RESERVED", "{}", r.text);
    let short = json!({"lines": [{"skuId": "cake", "qty": 99}], "idemKey": "or2"});
    let r = k.call(c, OrderReserve, "/api/orders/ord-2/reserve", &[], Some(short)).await;
    assert_eq!(status_of(&r), (StatusCode::CONFLICT, "ORDER_NOT_RESERVABLE"));
    let r =
        k.call(c, OrderReserve, "/api/orders/ord-3/reserve", &[], Some(json!({"lines": [], "idemKey": "or3"}))).await;
    assert_eq!(status_of(&r), (StatusCode::BAD_REQUEST, "INVALID_FIELD"));
    let paid = json!({"paymentId": "pay-o", "idemKey": "oc1"});
    let r = k.call(c, OrderConfirm, "/api/orders/ord-1/confirm", &[], Some(paid)).await;
    assert_eq!(r.body["status"], "CONFIRMED", "{}", r.text);
    let r = k
        .call(c, OrderConfirm, "/api/orders/ord-9/confirm", &[], Some(json!({"paymentId": "p", "idemKey": "oc2"})))
        .await;
    assert_eq!(status_of(&r), (StatusCode::NOT_FOUND, "ORDER_NOT_FOUND"));
    let r =
        k.call(c, OrderRelease, "/api/orders/ord-1/release", &[], Some(json!({"reason": "x", "idemKey": "ol1"}))).await;
    assert_eq!(status_of(&r), (StatusCode::CONFLICT, "RESERVATION_CONFIRMED"));
    k.call(
        c,
        OrderReserve,
        "/api/orders/ord-4/reserve",
        &[],
        Some(json!({"lines": [{"skuId": "cake", "qty": 1}], "idemKey": "or4"})),
    )
    .await;
    let r =
        k.call(c, OrderRelease, "/api/orders/ord-4/release", &[], Some(json!({"reason": "x", "idemKey": "ol2"}))).await;
    assert_eq!(r.body["status"], "RELEASED", "{}", r.text);

    // The read model needs PostgreSQL (below, with it).
    let r = k.call(c, ReadModelOrderStatus, "/api/read-model/orders/o-1/inventory-status", &[], None).await;
    assert_eq!(status_of(&r), (StatusCode::SERVICE_UNAVAILABLE, "READ_MODEL_UNAVAILABLE"));
    let r = k.call(c, ReadModelOrderStatus, "/api/read-model/orders/o%01/inventory-status", &[], None).await;
    assert_eq!(status_of(&r), (StatusCode::BAD_REQUEST, "INVALID_FIELD"));
    if let Some(schema) = TestSchema::create("openapi_read_model").await {
        let pg = TestServer::start_with(Options {
            postgres: Some((url_for(PG_ADDR), schema.name.clone())),
            ..Options::default()
        })
        .await;
        pg.client.receive("tea", 3).await;
        pg.client.reserve("o-rm", "tea", 1, "rm1").await;
        wait_caught_up(&pg.client, std::time::Duration::from_secs(20)).await;
        let r =
            k.call(&pg.client, ReadModelOrderStatus, "/api/read-model/orders/o-rm/inventory-status", &[], None).await;
        assert_eq!(r.body["reservations"].as_array().unwrap().len(), 1, "{}", r.text);
        pg.stop().await;
    }

    // The console's files.
    let unfollowed = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let root = unfollowed.get(format!("{}/console", c.url)).send().await.unwrap();
    let (status, headers) = (root.status(), root.headers().clone());
    let reply = Reply { status, body: Value::Null, text: root.text().await.unwrap(), headers };
    assert_eq!(reply.status, StatusCode::PERMANENT_REDIRECT);
    k.check(ConsoleRoot, &reply);
    let r = k.call(c, Console, "/console/", &[], None).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = k.call(c, ConsoleFile, "/console/orders/o-1", &[], None).await;
    assert_eq!(r.status, StatusCode::OK, "a page path is the page");
    let r = k.call(c, ConsoleFile, "/console/assets/nope-123.js", &[], None).await;
    assert_eq!(status_of(&r), (StatusCode::NOT_FOUND, "NOT_FOUND"));

    // A journal that cannot take writes.
    server.faults.set_broken(true);
    let r = k
        .call(c, Receive, "/api/inventory/receive", &[], Some(json!({"skuId": "tea", "qty": 1, "idemKey": "r9"})))
        .await;
    assert_eq!(status_of(&r), (StatusCode::SERVICE_UNAVAILABLE, "JOURNAL_UNAVAILABLE"));
    server.faults.set_broken(false);

    // Tokens, roles, the query rate limit and the risk check; signed writes.
    let keys = tempfile::tempdir().unwrap();
    let secret = secret_file(keys.path(), "hs256", SECRET);
    let signing = secret_file(keys.path(), "signing", b"signing-secret");
    let guarded = TestServer::start_with(Options {
        configure: Some(Arc::new(move |config: &mut Config| {
            config.auth = Some("jwt".into());
            config.jwt_hs256_secret_file = Some(secret.clone());
            config.metrics_open = false;
            config.query_rate_limit = 1;
            config.risk_max_units_per_minute = Some(1);
        })),
        ..Options::default()
    })
    .await;
    let g = &guarded.client;
    for endpoint in Endpoint::ALL {
        let needed: Vec<&str> = endpoint.roles(false).iter().map(|r| r.name()).collect();
        if needed.is_empty() {
            continue;
        }
        let path = concrete(endpoint.path());
        let body = (endpoint.method() != reqwest::Method::GET).then(|| json!({}));
        let r = k.call(g, endpoint, &path, &[], body.clone()).await;
        assert_eq!(status_of(&r), (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED"), "{path}");
        let others: Vec<&str> = ["reserver", "payment", "reader", "receiver", "operator", "approver", "admin"]
            .into_iter()
            .filter(|r| !needed.contains(r))
            .collect();
        let bearer = format!("Bearer {}", token("u", &others, None));
        let r = k.call(g, endpoint, &path, &[("authorization", &bearer)], body).await;
        assert_eq!(status_of(&r), (StatusCode::FORBIDDEN, "FORBIDDEN"), "{path}");
    }
    let reader = format!("Bearer {}", token("u", &["reader"], None));
    let reads: Vec<Reply> = two_reads(g, &reader).await;
    let limited = reads
        .iter()
        .find(|r| r.status == StatusCode::TOO_MANY_REQUESTS)
        .expect("one of two reads in a second is limited");
    k.check(Stock, limited);
    let reserver = format!("Bearer {}", token("u", &["reserver"], None));
    let r = k
        .call(g, Reserve, "/api/inventory/reserve", &[("authorization", &reserver)], Some(reserve("o-9", 2, "h9")))
        .await;
    assert_eq!(status_of(&r), (StatusCode::TOO_MANY_REQUESTS, "RISK_CHECK_REQUIRED"));

    let signed = TestServer::start_with(Options {
        configure: Some(Arc::new(move |config: &mut Config| config.signed_writes_secret_file = Some(signing.clone()))),
        ..Options::default()
    })
    .await;
    let r = k.call(&signed.client, AdminSnapshot, "/api/admin/snapshot", &[], None).await;
    assert_eq!(status_of(&r), (StatusCode::UNAUTHORIZED, "STALE_REQUEST"));

    // Every endpoint answered as documented, with its success and, where
    // the document lists any short of a 5xx, a refusal.
    for (index, endpoint) in Endpoint::ALL.into_iter().enumerate() {
        assert!(
            k.checked.iter().any(|&(i, s)| i == index && (200..400).contains(&s) && s != 304),
            "{endpoint:?}: no success checked"
        );
        let refusals: Vec<u16> = k.statuses(endpoint).into_iter().filter(|s| (400..500).contains(s)).collect();
        if !refusals.is_empty() {
            assert!(
                k.checked.iter().any(|&(i, s)| i == index && (400..500).contains(&s)),
                "{endpoint:?}: none of its refusals {refusals:?} checked"
            );
        }
    }
    signed.stop().await;
    guarded.stop().await;
    server.stop().await;
}

/// The admin status and reconciliation with PostgreSQL and the event relay
/// configured: answers the server of the test above, with neither, never
/// gives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_answers_with_postgres_and_events_as_the_document_says() {
    let Some(schema) = TestSchema::create("openapi").await else { return };
    let nats = PrivateNats::start();
    let server = TestServer::start_with(Options {
        postgres: Some((url_for(PG_ADDR), schema.name.clone())),
        events_nats_url: Some(nats.url()),
        ..Options::default()
    })
    .await;
    let c = &server.client;
    let mut k = Contract::fetch(c).await;
    c.receive("pg-tea", 5).await;
    wait_caught_up(c, std::time::Duration::from_secs(20)).await;
    let r = k.call(c, Endpoint::AdminPersistence, "/api/admin/persistence", &[], None).await;
    assert_eq!((r.body["enabled"].as_bool(), r.body["shards"].as_array().map(Vec::len)), (Some(true), Some(2)));
    let r = k.call(c, Endpoint::AdminEvents, "/api/admin/events", &[], None).await;
    assert_eq!(r.body["enabled"], true, "{}", r.text);
    let r = k.call(c, Endpoint::AdminReconcile, "/api/admin/reconcile", &[], Some(json!({}))).await;
    assert_eq!(r.body["postgres"]["compared"], 1, "{}", r.text);
    server.stop().await;
    schema.drop().await;
}

/// Two stock reads at once with the query rate limit at 1 a second.
async fn two_reads(c: &Client, bearer: &str) -> Vec<Reply> {
    let headers = [("authorization", bearer)];
    let (a, b) = tokio::join!(
        c.send("GET", "/api/inventory/tea", &headers, None),
        c.send("GET", "/api/inventory/tea", &headers, None)
    );
    vec![a, b]
}

fn concrete(path: &str) -> String {
    path.replace("{sku_id}", "tea")
        .replace("{reservation_id}", "rsv-0-1")
        .replace("{order_id}", "o-1")
        .replace("{adjustment_id}", "adj-0-1")
        .replace("{transfer_id}", "trf-0-1")
}
