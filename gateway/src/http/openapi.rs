//! The API's OpenAPI 3.1 document, served at `GET /openapi.json`.
//!
//! Built from the route table and the Rust types: every [`Endpoint`] is one
//! operation, at its [`path`](Endpoint::path) and [`method`](Endpoint::method),
//! open or guarded by the roles of [`Endpoint::roles`] (the `x-roles`
//! extension, the description and the `bearer` security scheme); request
//! and response bodies are the `ToSchema` derives of the types the handlers
//! parse and serialise (`api.rs`, `admin.rs`, `events.rs`).
//!
//! [`Endpoint::doc`] is the one place an endpoint is described: what it
//! does, its body, its answer and the `code`s it can refuse with, per
//! status. Its `match` has no catch-all, so a new endpoint does not compile
//! until it is documented. Refusals every endpoint of a kind shares (a
//! role, a POST body, a write, a read) are added from what the route table
//! says of it. `tests/it/openapi.rs` holds live answers, successes and
//! refusals, to this document, and `gateway/openapi/schemathesis.sh` fuzzes
//! every operation against it.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use axum::body::{Body, Bytes};
use axum::http::header::{HeaderValue, CONTENT_TYPE};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::json;
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::extensions::ExtensionsBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItem};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{AllOfBuilder, ComponentsBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{InfoBuilder, OpenApi, OpenApiBuilder, PathsBuilder, Ref, RefOr, Required};
use utoipa::ToSchema;

use super::{admin, events, Endpoint};
use crate::api::{self, ID_BYTES_MAX, TEXT_BYTES_MAX};

/// The security scheme of the endpoints that take a role.
const BEARER: &str = "bearer";

/// `GET /openapi.json`.
pub async fn serve() -> Response {
    static DOCUMENT: LazyLock<Vec<u8>> =
        LazyLock::new(|| serde_json::to_vec(&document()).expect("the document serialises"));
    let mut response = Response::new(Body::from(Bytes::from_static(&DOCUMENT)));
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The document: every endpoint of [`Endpoint::ALL`] and the schemas they use.
pub fn document() -> OpenApi {
    let mut schemas = Schemas::default();
    schemas.add::<api::ErrorJson>();
    let mut paths: BTreeMap<&str, PathItem> = BTreeMap::new();
    for endpoint in Endpoint::ALL {
        let operation = operation(endpoint, &mut schemas);
        let method = http_method(&endpoint.method());
        match paths.get_mut(endpoint.path()) {
            Some(item) => item.merge_operations(PathItem::new(method, operation)),
            None => {
                paths.insert(endpoint.path(), PathItem::new(method, operation));
            }
        }
    }
    let bearer = Http::builder()
        .scheme(HttpAuthScheme::Bearer)
        .bearer_format("JWT")
        .description(Some(
            "With `--auth jwt`: a compact JWS (HS256, RS256, ES256 or EdDSA) with `sub`, `roles` and \
             optionally `tenant`; `inventoryctl token` makes one.",
        ))
        .build();
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("inventory-reservation")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Per-SKU, per-warehouse stock held for orders until paid or expired. Every write \
                     is journaled before it is answered and needs an idempotency key. Errors are \
                     `{code, message}` (plus detail fields for some codes); each operation lists its \
                     codes per status. Roles apply with `--auth jwt` (`x-roles` on each operation).",
                ))
                .build(),
        )
        .paths(paths.into_iter().fold(PathsBuilder::new(), |b, (path, item)| b.path(path, item)))
        .components(Some(
            ComponentsBuilder::new()
                .schemas_from_iter(schemas.0)
                .security_scheme(BEARER, SecurityScheme::Http(bearer))
                .build(),
        ))
        .build()
}

/// The `code`s an endpoint can answer with at one status.
type Refusals = &'static [(u16, &'static [&'static str])];

/// Any request: the accept loop refuses connections past `--max-connections`.
const ANY: Refusals = &[(503, &["TOO_MANY_CONNECTIONS"])];
/// An endpoint that takes a role, with `--auth jwt`.
const GUARDED: Refusals = &[(401, &["UNAUTHENTICATED"]), (403, &["FORBIDDEN"])];
/// Any POST: its body is read up to a limit, and with
/// `--signed-writes-secret-file` its signature checked.
const POSTED: Refusals = &[
    (400, &["INVALID_FIELD"]),
    (401, &["STALE_REQUEST", "REPLAYED_REQUEST", "BAD_SIGNATURE"]),
    (408, &["REQUEST_TIMEOUT"]),
    (413, &["PAYLOAD_TOO_LARGE"]),
];
/// A JSON write: its body and key (`Write`), then its shard's queue and
/// journal (`writes::write`).
const WRITE: Refusals = &[
    (400, &["MALFORMED_JSON", "INVALID_FIELD", "IDEMPOTENCY_KEY_REQUIRED"]),
    (422, &["IDEMPOTENCY_KEY_REUSED"]),
    (
        503,
        &[
            "NOT_READY",
            "REPLICATION_LAG",
            "OVERLOADED",
            "JOURNAL_UNAVAILABLE",
            "COLD_TIER_UNAVAILABLE",
            "SHUTTING_DOWN",
        ],
    ),
];
/// A read the shard loops answer.
const READ: Refusals = &[(400, &["INVALID_FIELD"]), (503, &["NOT_READY", "OVERLOADED", "SHUTTING_DOWN"])];
/// The public reads, which pass the query rate limit first.
const LIMITED: Refusals = &[(429, &["RATE_LIMITED"])];
/// An operator action without a token names its operator in `X-Operator`.
const OPERATOR: Refusals = &[(400, &["OPERATOR_REQUIRED"])];

impl Endpoint {
    /// What the document says of this endpoint beyond its path, method and
    /// roles. Every endpoint is described here.
    fn doc(self, s: &mut Schemas) -> Doc {
        match self {
            Endpoint::Reserve => Doc::new(
                "Hold units for an order line",
                "Holds `qty` units of an SKU in a warehouse for an order until it is confirmed, released, or \
                 `expireAt` passes (then released within about a second, reason `TIMEOUT`). One hold per \
                 order line `(orderId, skuId)`.",
            )
            .body(s.of::<api::ReserveBody>())
            .write()
            .ok(s.of::<api::HoldJson>(), "Held: `RESERVED` with `expireAt`.")
            .refuses(WRITE)
            .refuses(&[
                (404, &["SKU_NOT_FOUND"]),
                (400, &["BUYER_REQUIRED", "CHANNEL_REQUIRED", "UNKNOWN_CHANNEL"]),
                (
                    409,
                    &[
                        "INSUFFICIENT_STOCK",
                        "DUPLICATE_ORDER_LINE",
                        "SKU_FROZEN",
                        "PURCHASE_LIMIT_EXCEEDED",
                        "SALE_NOT_STARTED",
                        "SALE_ENDED",
                        "CHANNEL_QUOTA_EXHAUSTED",
                    ],
                ),
                (429, &["RISK_CHECK_REQUIRED"]),
            ]),
            Endpoint::Confirm => Doc::new(
                "Confirm a hold: its units are sold",
                "A repeated payment callback with the same `paymentId` answers `CONFIRMED` again and deducts \
                 nothing.",
            )
            .body(s.of::<api::ConfirmBody>())
            .write()
            .ok(s.of::<api::HoldJson>(), "`CONFIRMED`.")
            .refuses(WRITE)
            .refuses(&[
                (404, &["RESERVATION_NOT_FOUND"]),
                (409, &["RESERVATION_EXPIRED", "RESERVATION_RELEASED", "PAYMENT_MISMATCH", "PART_OF_ORDER"]),
            ]),
            Endpoint::Release => Doc::new(
                "Release a hold: its units are available again",
                "A hold that had timed out answers `EXPIRED`; one already released answers as it stands.",
            )
            .body(s.of::<api::ReleaseBody>())
            .write()
            .ok(s.of::<api::HoldJson>(), "`RELEASED`, or `EXPIRED` if it had timed out.")
            .refuses(WRITE)
            .refuses(&[(404, &["RESERVATION_NOT_FOUND"]), (409, &["RESERVATION_CONFIRMED", "PART_OF_ORDER"])]),
            Endpoint::Receive => Doc::new("Receive stock into a warehouse", "Adds `qty` units to the SKU's row.")
                .body(s.of::<api::ReceiveBody>())
                .write()
                .ok(s.of::<api::RowJson>(), "The row after the receipt.")
                .refuses(WRITE)
                .refuses(&[(422, &["QUANTITY_OVERFLOW", "TOO_MANY_WAREHOUSES"])]),
            Endpoint::ReceiveBatch => Doc::new(
                "Receive many rows at once",
                "All or nothing per shard, each part under `<key>#<shard>`, so a retry adds nothing twice. \
                 JSON, or `text/csv` lines of `skuId,warehouseId,qty` (an empty `warehouseId` is `default`) \
                 after an optional header line, with the key in `Idempotency-Key` and the reference in the \
                 `ref` query parameter. At most 10,000 rows and 4 MiB.",
            )
            .body(s.of::<api::ReceiveBatchBody>())
            .content(
                "text/csv",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .description(Some("`skuId,warehouseId,qty` lines"))
                    .into(),
            )
            .query(
                "ref",
                text(TEXT_BYTES_MAX, 0),
                "With a `text/csv` body, the receipt's reference; a JSON body takes no query parameters (400).",
            )
            .write()
            .ok(s.of::<api::BatchJson>(), "Rows changed and units received.")
            .refuses(WRITE)
            .refuses(&[
                (400, &["MALFORMED_CSV"]),
                (422, &["INVALID_BATCH", "QUANTITY_OVERFLOW", "TOO_MANY_WAREHOUSES"]),
            ]),
            Endpoint::Stock => Doc::new("An SKU's stock", "Totals over its warehouses, and each warehouse's row.")
                .ok(s.of::<api::StockJson>(), "The SKU's stock.")
                .refuses(READ)
                .refuses(LIMITED)
                .refuses(&[(404, &["SKU_NOT_FOUND"])]),
            Endpoint::Reservation => Doc::new(
                "A hold",
                "Finished holds are kept 48 hours. With a token, another tenant's hold is not found.",
            )
            .ok(s.of::<api::ReservationJson>(), "The hold.")
            .refuses(READ)
            .refuses(LIMITED)
            .refuses(&[(404, &["RESERVATION_NOT_FOUND"]), (503, &["COLD_TIER_UNAVAILABLE"])]),
            Endpoint::OrderStatus => Doc::new(
                "An order's holds",
                "Every hold of the order on every shard, oldest first; none is an empty list.",
            )
            .ok(s.of::<api::OrderJson>(), "The order's holds.")
            .refuses(READ)
            .refuses(LIMITED)
            .refuses(&[(503, &["COLD_TIER_UNAVAILABLE"])]),
            Endpoint::Health => {
                Doc::new("Liveness", "Answers while the process serves HTTP.").ok(status_schema("ok"), "`ok`.")
            }
            Endpoint::Ready => Doc::new("Readiness", "Ready once every shard has replayed its journal.")
                .ok(status_schema("ready"), "`ready`.")
                .refuses(&[(503, &["NOT_READY"])]),
            Endpoint::Metrics => Doc::new(
                "Prometheus metrics",
                "OpenMetrics text. Open, unless `--auth jwt` with `--metrics-open false`: then the role \
                 `admin`.",
            )
            .ok_as(
                "application/openmetrics-text",
                ObjectBuilder::new().schema_type(Type::String).into(),
                "The metrics.",
            ),
            Endpoint::OpenApi => Doc::new("This document", "The API's OpenAPI 3.1 document.").ok(
                ObjectBuilder::new()
                    .schema_type(Type::Object)
                    .required("openapi")
                    .required("info")
                    .required("paths")
                    .into(),
                "The document.",
            ),
            Endpoint::AdminPersistence => Doc::new(
                "The PostgreSQL writer",
                "Per shard: the journal head, what PostgreSQL holds, the lag in entries and seconds, the last \
                 error.",
            )
            .ok(s.of::<admin::PersistenceJson>(), "The writer's state."),
            Endpoint::AdminEvents => Doc::new(
                "The event relay",
                "Per shard: the relay's durable position, the journal head, the lag in entries and seconds; \
                 the last error.",
            )
            .ok(s.of::<events::EventsJson>(), "The relay's state."),
            Endpoint::AdminReconcile => Doc::new(
                "Reconcile the core, its journal and PostgreSQL",
                "Rebuilds every row from the journal and compares it with the live core and, with PostgreSQL, \
                 its rows and transaction history. With `repair`, PostgreSQL's wrong rows are set to the \
                 core's values and each repair journaled and audited.",
            )
            .optional_body(s.of::<admin::ReconcileBody>())
            .ok(s.of::<admin::Report>(), "What was compared, found and repaired.")
            .refuses(&[
                (400, &["MALFORMED_JSON", "INVALID_FIELD"]),
                (500, &["JOURNAL_UNREADABLE"]),
                (
                    503,
                    &[
                        "NOT_READY",
                        "OVERLOADED",
                        "SHUTTING_DOWN",
                        "PERSISTENCE_LAGGING",
                        "POSTGRES_UNAVAILABLE",
                        "JOURNAL_UNAVAILABLE",
                    ],
                ),
            ]),
            Endpoint::AdminSnapshot => Doc::new(
                "Snapshot every shard now",
                "And truncate the journal the snapshots cover, as far as every follower allows.",
            )
            .ok(s.of::<admin::SnapshotsJson>(), "Every shard's snapshot.")
            .refuses(&[(500, &["SNAPSHOT_FAILED"]), (503, &["NOT_READY", "SHUTTING_DOWN"])]),
            Endpoint::AdminCapacity => Doc::new(
                "Size the stock index for more SKUs",
                "Ahead of a bulk import: the memory (about 8-10 bytes an SKU) is taken now, a slice at a time \
                 between batches.",
            )
            .body(s.of::<admin::CapacityBody>())
            .ok(s.of::<admin::CapacityJson>(), "What each shard is sized for.")
            .refuses(&[
                (400, &["MALFORMED_JSON", "INVALID_FIELD"]),
                (503, &["NOT_READY", "OVERLOADED", "SHUTTING_DOWN"]),
            ]),
            Endpoint::Freeze | Endpoint::Unfreeze => {
                let (summary, description) = if self == Endpoint::Freeze {
                    (
                        "Freeze an SKU",
                        "One warehouse's row, or every row of the SKU: reserves are then refused \
                                       with 409 `SKU_FROZEN`.",
                    )
                } else {
                    ("Unfreeze an SKU", "One warehouse's row, or every row of the SKU.")
                };
                Doc::new(summary, description)
                    .body(s.of::<api::FreezeBody>())
                    .write()
                    .operator()
                    .ok(s.of::<api::StockJson>(), "The SKU's stock.")
                    .refuses(WRITE)
                    .refuses(OPERATOR)
                    .refuses(&[(404, &["SKU_NOT_FOUND"])])
            }
            Endpoint::OrderReserve => Doc::new(
                "Hold every line of an order, or none",
                "Each shard holds its lines on its own; the order's home (the lowest of its shards) then \
                 decides, and the answer comes once every line is the order's. Any line that cannot be held \
                 is named with its own code, and no line stays held. One `expireAt` for every line. A retry \
                 with the same key answers the same holds.",
            )
            .body(s.of::<api::OrderReserveBody>())
            .write()
            .ok(s.of::<api::OrderStateJson>(), "Held: `RESERVED`, each line with its hold.")
            .refuses(WRITE)
            .refuses(&[(409, &["ORDER_NOT_RESERVABLE", "ORDER_ABORTED"]), (422, &["INVALID_BATCH"])]),
            Endpoint::OrderConfirm | Endpoint::OrderRelease => {
                let (summary, description, body, answer) = if self == Endpoint::OrderConfirm {
                    (
                        "Confirm an order: every line is sold",
                        "Decided by the order's home before its `expireAt`; then every shard follows. A repeated \
                         payment callback answers `CONFIRMED` again.",
                        s.of::<api::OrderConfirmBody>(),
                        "`CONFIRMED` (or `EXPIRED`, if it came too late, as a 409).",
                    )
                } else {
                    (
                        "Release an order: every line is available again",
                        "An order that had timed out answers `EXPIRED`.",
                        s.of::<api::OrderReleaseBody>(),
                        "`RELEASED`, or `EXPIRED`.",
                    )
                };
                Doc::new(summary, description)
                    .body(body)
                    .write()
                    .ok(s.of::<api::OrderStateJson>(), answer)
                    .refuses(WRITE)
                    .refuses(&[
                        (404, &["ORDER_NOT_FOUND"]),
                        (
                            409,
                            &[
                                "ORDER_ABORTED",
                                "RESERVATION_EXPIRED",
                                "RESERVATION_RELEASED",
                                "RESERVATION_CONFIRMED",
                                "PAYMENT_MISMATCH",
                            ],
                        ),
                    ])
            }
            Endpoint::PolicySet => Doc::new(
                "Set an SKU's sale policy",
                "A limit of units per buyer, a sale window, and quotas of units per sales channel, checked by \
                 every reserve of the SKU in the same step that holds its units. Replaces the SKU's policy; what \
                 that one counted (units per buyer and per channel) is kept.",
            )
            .body(s.of::<api::PolicyBody>())
            .write()
            .operator()
            .ok(s.of::<api::StockJson>(), "The SKU's stock, with its `policy`.")
            .refuses(WRITE)
            .refuses(OPERATOR)
            .refuses(&[(404, &["SKU_NOT_FOUND"])]),
            Endpoint::PolicyRemove => Doc::new(
                "Remove an SKU's sale policy",
                "With everything it counted. The key may come in `Idempotency-Key` with an empty body.",
            )
            .optional_body(s.of::<api::PolicyRemoveBody>())
            .write()
            .operator()
            .ok(s.of::<api::StockJson>(), "The SKU's stock, without a policy.")
            .refuses(WRITE)
            .refuses(OPERATOR)
            .refuses(&[
                (404, &["SKU_NOT_FOUND"]),
                (413, &["PAYLOAD_TOO_LARGE"]),
                (408, &["REQUEST_TIMEOUT"]),
            ]),
            Endpoint::ReadModelOrderStatus => Doc::new(
                "An order's holds, from PostgreSQL",
                "The same answer as `GET /api/orders/{orderId}/inventory-status`, from the read model the \
                 PostgreSQL writer keeps, with how far behind it is: for clients to fall back on when the \
                 primary fails. Not subject to the query rate limit.",
            )
            .ok(s.of::<super::read_model::ReadModelOrderJson>(), "The order's holds as PostgreSQL has them.")
            .refuses(&[(400, &["INVALID_FIELD"]), (503, &["READ_MODEL_UNAVAILABLE"])]),
            Endpoint::ConsoleRoot => {
                Doc::new("The web console", "Redirects to `/console/`.").redirect(308, "To `/console/`.")
            }
            Endpoint::Console | Endpoint::ConsoleFile => Doc::new(
                "The web console",
                "Its page (any path that is not one of its files is the page), scripts and styles, embedded in \
                 the binary. 503 with a page saying how to build it when the binary was built without it.",
            )
            .ok_as("text/html", ObjectBuilder::new().schema_type(Type::String).into(), "The page or the file.")
            .bodiless(304, "Not modified (`If-None-Match`).")
            .refuses(if self == Endpoint::ConsoleFile {
                &[(400, &["INVALID_FIELD"]), (404, &["NOT_FOUND"])]
            } else {
                &[]
            }),
            Endpoint::AdjustmentPropose => Doc::new(
                "Propose a stock adjustment",
                "Pending until a second operator approves it (then applied) or rejects it, or it expires.",
            )
            .body(s.of::<api::ProposeBody>())
            .write()
            .operator()
            .ok(s.of::<api::AdjustmentJson>(), "The adjustment, `PENDING`.")
            .refuses(WRITE)
            .refuses(OPERATOR)
            .refuses(&[(404, &["SKU_NOT_FOUND"]), (422, &["QUANTITY_OVERFLOW"])]),
            Endpoint::AdjustmentApprove | Endpoint::AdjustmentReject => {
                let (summary, description, answer) = if self == Endpoint::AdjustmentApprove {
                    (
                        "Approve an adjustment",
                        "Applies it; by an operator other than the one who proposed it.",
                        "The adjustment, `APPLIED`.",
                    )
                } else {
                    ("Reject an adjustment", "A `reason` is required.", "The adjustment, `REJECTED`.")
                };
                Doc::new(summary, description)
                    .body(s.of::<api::DecisionBody>())
                    .write()
                    .operator()
                    .ok(s.of::<api::AdjustmentJson>(), answer)
                    .refuses(WRITE)
                    .refuses(OPERATOR)
                    .refuses(&[
                        (403, &["SAME_OPERATOR"]),
                        (404, &["ADJUSTMENT_NOT_FOUND"]),
                        (409, &["ADJUSTMENT_NOT_PENDING", "INSUFFICIENT_STOCK"]),
                        (422, &["QUANTITY_OVERFLOW"]),
                    ])
            }
            Endpoint::AdjustmentList => Doc::new("Adjustments", "Oldest first, over every shard or the SKU's.")
                .query("status", strings(&["PENDING", "APPLIED", "REJECTED", "EXPIRED"]), "Only those in this state.")
                .query("skuId", text(ID_BYTES_MAX, 1), "Only this SKU's.")
                .ok(s.of::<api::AdjustmentListJson>(), "The adjustments.")
                .refuses(READ),
            Endpoint::Adjustment => Doc::new("An adjustment", "As it stands.")
                .ok(s.of::<api::AdjustmentJson>(), "The adjustment.")
                .refuses(READ)
                .refuses(&[(404, &["ADJUSTMENT_NOT_FOUND"])]),
            Endpoint::TransferDispatch => Doc::new(
                "Send units from one warehouse to another",
                "The units leave `fromWarehouseId` now and count as in transit to `toWarehouseId` until they \
                 arrive or the transfer is cancelled.",
            )
            .body(s.of::<api::TransferBody>())
            .write()
            .operator()
            .ok(s.of::<api::TransferJson>(), "The transfer, `IN_TRANSIT`.")
            .refuses(WRITE)
            .refuses(OPERATOR)
            .refuses(&[
                (400, &["SAME_WAREHOUSE"]),
                (404, &["SKU_NOT_FOUND"]),
                (409, &["INSUFFICIENT_STOCK"]),
                (422, &["TOO_MANY_WAREHOUSES"]),
            ]),
            Endpoint::TransferArrive | Endpoint::TransferCancel => {
                let (summary, description, answer) = if self == Endpoint::TransferArrive {
                    ("A transfer arrived", "Its units are available at `toWarehouseId`.", "The transfer, `ARRIVED`.")
                } else {
                    (
                        "Cancel a transfer",
                        "Its units return to `fromWarehouseId`; a `reason` is required.",
                        "The transfer, `CANCELLED`.",
                    )
                };
                Doc::new(summary, description)
                    .body(s.of::<api::DecisionBody>())
                    .write()
                    .operator()
                    .ok(s.of::<api::TransferJson>(), answer)
                    .refuses(WRITE)
                    .refuses(OPERATOR)
                    .refuses(&[
                        (404, &["TRANSFER_NOT_FOUND"]),
                        (409, &["TRANSFER_NOT_IN_TRANSIT"]),
                        (422, &["QUANTITY_OVERFLOW"]),
                    ])
            }
            Endpoint::TransferList => Doc::new("Transfers", "Oldest first, over every shard or the SKU's.")
                .query(
                    "status",
                    strings(&["IN_TRANSIT", "ARRIVED", "CANCELLED", "OVERDUE"]),
                    "Only those in this state; `OVERDUE`: in transit past the expected arrival.",
                )
                .query("skuId", text(ID_BYTES_MAX, 1), "Only this SKU's.")
                .ok(s.of::<api::TransferListJson>(), "The transfers.")
                .refuses(READ),
            Endpoint::Transfer => Doc::new("A transfer", "As it stands.")
                .ok(s.of::<api::TransferJson>(), "The transfer.")
                .refuses(READ)
                .refuses(&[(404, &["TRANSFER_NOT_FOUND"])]),
        }
    }
}

/// How one endpoint is documented (built by [`Endpoint::doc`]).
struct Doc {
    summary: &'static str,
    description: &'static str,
    /// Media type and schema of each form of the request body.
    body: Vec<(&'static str, RefOr<Schema>)>,
    body_required: bool,
    /// Query and header parameters; path parameters come from the path.
    params: Vec<(ParameterIn, &'static str, Schema, &'static str)>,
    /// The success's status (200 unless a redirect), and its answer's
    /// media type, schema and description.
    success: u16,
    ok: (&'static str, RefOr<Schema>, &'static str),
    /// Answers without a body: status and description.
    bodiless: Vec<(u16, &'static str)>,
    /// Whether a repeat of the request is answered as the first was.
    replayable: bool,
    refusals: Vec<(u16, &'static str)>,
}

impl Doc {
    fn new(summary: &'static str, description: &'static str) -> Doc {
        Doc {
            summary,
            description,
            body: Vec::new(),
            body_required: false,
            params: Vec::new(),
            success: 200,
            ok: ("application/json", RefOr::T(Schema::default()), ""),
            bodiless: Vec::new(),
            replayable: false,
            refusals: Vec::new(),
        }
    }

    /// A required JSON body.
    fn body(mut self, schema: RefOr<Schema>) -> Doc {
        self.body_required = true;
        self.content("application/json", schema)
    }

    /// A JSON body that may be left out (or be blank).
    fn optional_body(self, schema: RefOr<Schema>) -> Doc {
        Doc { body_required: false, ..self.content("application/json", schema) }
    }

    /// Another form of the body.
    fn content(mut self, media_type: &'static str, schema: RefOr<Schema>) -> Doc {
        self.body.push((media_type, schema));
        self
    }

    fn query(mut self, name: &'static str, schema: Schema, description: &'static str) -> Doc {
        self.params.push((ParameterIn::Query, name, schema, description));
        self
    }

    fn header(mut self, name: &'static str, schema: Schema, description: &'static str) -> Doc {
        self.params.push((ParameterIn::Header, name, schema, description));
        self
    }

    /// A write: its key may come in a header, and a repeat is replayed.
    fn write(mut self) -> Doc {
        self.replayable = true;
        self.header(
            "Idempotency-Key",
            text(TEXT_BYTES_MAX, 1),
            "The write's idempotency key, if the body has no `idemKey` (both must agree); kept 72 h. A \
             repeat is answered as the first request was, with `idempotent-replayed: true`.",
        )
        // Unconstrained here: with a token the header is not read at all.
        .header(
            "X-Operator",
            ObjectBuilder::new().schema_type(Type::String).into(),
            "Without a token: who acts (1 to 128 characters), journaled with the change (`anonymous` when \
             not given). With a token its `sub` is the operator and this header is ignored.",
        )
    }

    /// An operator action: without a token, `X-Operator` is required.
    fn operator(mut self) -> Doc {
        for param in &mut self.params {
            if param.1 == "X-Operator" {
                param.3 = "Without a token: who acts (1 to 128 characters), required (400 `OPERATOR_REQUIRED`). \
                           With a token its `sub` is the operator and this header is ignored.";
            }
        }
        self
    }

    fn ok(self, schema: RefOr<Schema>, description: &'static str) -> Doc {
        self.ok_as("application/json", schema, description)
    }

    fn ok_as(mut self, media_type: &'static str, schema: RefOr<Schema>, description: &'static str) -> Doc {
        self.ok = (media_type, schema, description);
        self
    }

    /// A success that is a redirect, without a body.
    fn redirect(mut self, status: u16, description: &'static str) -> Doc {
        self.success = status;
        self.bodiless.push((status, description));
        self
    }

    /// Another answer without a body (a `304 Not Modified`).
    fn bodiless(mut self, status: u16, description: &'static str) -> Doc {
        self.bodiless.push((status, description));
        self
    }

    fn refuses(mut self, refusals: Refusals) -> Doc {
        for &(status, codes) in refusals {
            for &code in codes {
                if !self.refusals.contains(&(status, code)) {
                    self.refusals.push((status, code));
                }
            }
        }
        self
    }
}

/// The component schemas the operations refer to.
#[derive(Default)]
pub(crate) struct Schemas(Vec<(String, RefOr<Schema>)>);

impl Schemas {
    /// A reference to `T`'s schema, which (with those it refers to) joins
    /// the components.
    fn of<T: ToSchema>(&mut self) -> RefOr<Schema> {
        self.add::<T>();
        RefOr::Ref(Ref::from_schema_name(T::name()))
    }

    fn add<T: ToSchema>(&mut self) {
        self.0.push((T::name().into_owned(), T::schema()));
        T::schemas(&mut self.0);
    }
}

/// The operation of one endpoint.
fn operation(endpoint: Endpoint, schemas: &mut Schemas) -> utoipa::openapi::path::Operation {
    let doc = endpoint.doc(schemas).refuses(ANY);
    // Refusals that follow from the route table: a role to check, a POST
    // body to read.
    let guarded = !endpoint.roles(false).is_empty();
    let doc = if guarded { doc.refuses(GUARDED) } else { doc };
    let doc = if endpoint.method() == Method::POST { doc.refuses(POSTED) } else { doc };

    let roles: Vec<&str> = endpoint.roles(true).iter().map(|r| r.name()).collect();
    let closed_roles: Vec<&str> = endpoint.roles(false).iter().map(|r| r.name()).collect();
    let access = match (roles.as_slice(), closed_roles.as_slice()) {
        ([], []) => "Open: no token needed.".to_string(),
        ([], closed) => format!("Open by default; with `--metrics-open false`, role `{}`.", closed.join("` or `")),
        (roles, _) => format!("Role (with `--auth jwt`): `{}`.", roles.join("` or `")),
    };

    let mut builder = OperationBuilder::new()
        .operation_id(Some(operation_id(endpoint)))
        .summary(Some(doc.summary))
        .description(Some(format!("{}\n\n{access}", doc.description)))
        .extensions(Some(ExtensionsBuilder::new().add("x-roles", json!(roles)).build()));
    for name in path_params(endpoint.path()) {
        builder = builder.parameter(
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .description(Some(path_param_description(name)))
                .schema(Some(path_param_schema(name))),
        );
    }
    for (place, name, schema, description) in doc.params {
        builder = builder.parameter(
            ParameterBuilder::new()
                .name(name)
                .parameter_in(place)
                .required(Required::False)
                .description(Some(description))
                .schema(Some(schema)),
        );
    }
    if !doc.body.is_empty() {
        let required = if doc.body_required { Required::True } else { Required::False };
        let body =
            doc.body.into_iter().fold(RequestBodyBuilder::new().required(Some(required)), |b, (media, schema)| {
                b.content(media, ContentBuilder::new().schema(Some(schema)).build())
            });
        builder = builder.request_body(Some(body.build()));
    }

    let (media, schema, description) = doc.ok;
    let mut ok = ResponseBuilder::new()
        .description(description)
        .content(media, ContentBuilder::new().schema(Some(schema)).build());
    if doc.replayable {
        ok = ok.header(
            "idempotent-replayed",
            HeaderBuilder::new()
                .schema(Some(strings(&["true"])))
                .description(Some("`true` on the answer to a repeat of an earlier request."))
                .build(),
        );
    }
    if doc.success == 200 {
        builder = builder.response("200", ok.build());
    }
    for (status, description) in doc.bodiless {
        builder = builder.response(status.to_string(), ResponseBuilder::new().description(description).build());
    }

    let mut by_status: BTreeMap<u16, Vec<&str>> = BTreeMap::new();
    for (status, code) in doc.refusals {
        by_status.entry(status).or_default().push(code);
    }
    for (status, codes) in by_status {
        builder = builder.response(status.to_string(), refusal(status, &codes));
    }

    builder = match (roles.is_empty(), closed_roles.is_empty()) {
        (true, true) => builder.securities(Some([])),
        // A token is needed only with `--metrics-open false`.
        (true, false) => builder
            .securities(Some([SecurityRequirement::default(), SecurityRequirement::new(BEARER, [] as [&str; 0])])),
        _ => builder.security(SecurityRequirement::new(BEARER, [] as [&str; 0])),
    };
    builder.build()
}

/// An error answer whose `code` is one of `codes`.
fn refusal(status: u16, codes: &[&str]) -> utoipa::openapi::Response {
    let reason = StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("Refused");
    let schema = AllOfBuilder::new()
        .item(Ref::from_schema_name(api::ErrorJson::name()))
        .item(ObjectBuilder::new().property("code", strings(codes)));
    let listed: Vec<String> = codes.iter().map(|c| format!("`{c}`")).collect();
    let mut response = ResponseBuilder::new()
        .description(format!("{reason}: {}.", listed.join(", ")))
        .content("application/json", ContentBuilder::new().schema(Some(schema)).build());
    match status {
        503 => {
            response = response.header(
                "Retry-After",
                HeaderBuilder::new()
                    .schema(Some(ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(0))))
                    .description(Some("Seconds to wait before retrying."))
                    .build(),
            )
        }
        401 => {
            response = response.header(
                "WWW-Authenticate",
                HeaderBuilder::new()
                    .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                    .description(Some("`Bearer realm=\"inventory\"` with `UNAUTHENTICATED`."))
                    .build(),
            )
        }
        _ => {}
    }
    response.build()
}

/// `{status: <value>}`, the answer of the health checks.
fn status_schema(value: &'static str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .property("status", strings(&[value]))
        .required("status")
        .additional_properties(Some(utoipa::openapi::schema::AdditionalProperties::FreeForm(false)))
        .into()
}

/// A string that is one of `values`.
fn strings(values: &[&str]) -> Schema {
    ObjectBuilder::new().schema_type(Type::String).enum_values(Some(values.iter().copied())).into()
}

/// A string of `min` to `max` characters.
fn text(max: usize, min: usize) -> Schema {
    let min = (min > 0).then_some(min);
    ObjectBuilder::new().schema_type(Type::String).min_length(min).max_length(Some(max)).into()
}

/// The names of a path's `{parameters}`.
fn path_params(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
}

/// A path parameter: an id, of the form its kind has; the console's
/// catch-all is any path (a deep link of any length gets the page).
fn path_param_schema(name: &str) -> Schema {
    let prefix = match name {
        "*path" => return ObjectBuilder::new().schema_type(Type::String).min_length(Some(1)).into(),
        "reservation_id" => "rsv",
        "adjustment_id" => "adj",
        "transfer_id" => "trf",
        _ => return text(ID_BYTES_MAX, 1),
    };
    ObjectBuilder::new().schema_type(Type::String).pattern(Some(format!("^{prefix}{}$", api::SHARD_SEQ_PATTERN))).into()
}

fn path_param_description(name: &str) -> &'static str {
    match name {
        "sku_id" => "The SKU.",
        "reservation_id" => "The hold: `rsv-<shard>-<seq>`.",
        "order_id" => "The order.",
        "adjustment_id" => "The adjustment: `adj-<shard>-<seq>`.",
        "transfer_id" => "The transfer: `trf-<shard>-<seq>`.",
        "*path" => "A file of the console, or any other path (answered with its page).",
        _ => "",
    }
}

/// The endpoint's name in lower camel case: `reserve`, `adjustmentList`.
fn operation_id(endpoint: Endpoint) -> String {
    let name = format!("{endpoint:?}");
    let mut chars = name.chars();
    chars.next().map(|c| c.to_ascii_lowercase()).into_iter().chain(chars).collect()
}

fn http_method(method: &Method) -> HttpMethod {
    match *method {
        Method::GET => HttpMethod::Get,
        Method::POST => HttpMethod::Post,
        Method::PUT => HttpMethod::Put,
        Method::DELETE => HttpMethod::Delete,
        Method::PATCH => HttpMethod::Patch,
        ref other => unreachable!("no endpoint takes {other}"),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::*;
    use crate::api::{BATCH_ROWS_MAX, TRANSFER_SECONDS_MAX, TTL_SECONDS_MAX};
    use crate::http::CAPACITY_SKUS_MAX;

    fn doc() -> Value {
        serde_json::to_value(document()).unwrap()
    }

    #[test]
    fn every_endpoint_is_one_operation_and_nothing_else_is() {
        let doc = doc();
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
                for role in roles {
                    assert!(operation["description"].as_str().unwrap().contains(role), "{method} {path}");
                }
                let success = ["200", "308"].iter().any(|s| operation["responses"][*s].is_object());
                assert!(success, "{method} {path} documents its success");
                if !endpoint.roles(false).is_empty() {
                    assert!(operation["security"].to_string().contains(BEARER), "{method} {path}");
                    assert!(operation["responses"]["401"].is_object() && operation["responses"]["403"].is_object());
                }
            }
        }
        let served: BTreeSet<_> =
            Endpoint::ALL.iter().map(|e| (e.path().to_string(), e.method().to_string())).collect();
        assert_eq!(documented, served);
        assert_eq!(served.len(), Endpoint::ALL.len(), "no two endpoints share a path and method");
    }

    #[test]
    fn documented_limits_are_the_enforced_ones() {
        let doc = doc();
        let schema = |name: &str| doc["components"]["schemas"][name]["properties"].clone();
        let reserve = schema("ReserveBody");
        assert_eq!(reserve["orderId"]["maxLength"], json!(ID_BYTES_MAX));
        assert_eq!(reserve["skuId"]["maxLength"], json!(ID_BYTES_MAX));
        assert_eq!(reserve["idemKey"]["maxLength"], json!(TEXT_BYTES_MAX));
        assert_eq!(reserve["ttlSeconds"]["maximum"], json!(TTL_SECONDS_MAX));
        assert_eq!(schema("ReleaseBody")["reason"]["maxLength"], json!(TEXT_BYTES_MAX));
        assert_eq!(schema("ReceiveBatchBody")["items"]["maxItems"], json!(BATCH_ROWS_MAX));
        assert_eq!(schema("CapacityRequest")["skus"]["maximum"], json!(CAPACITY_SKUS_MAX));
        assert_eq!(schema("TransferBody")["expectedArrivalSeconds"]["maximum"], json!(TRANSFER_SECONDS_MAX));
        let reservation_id = json!(format!("^rsv{}$", api::SHARD_SEQ_PATTERN));
        assert_eq!(schema("ConfirmBody")["reservationId"]["pattern"], reservation_id);
        assert_eq!(schema("ReleaseBody")["reservationId"]["pattern"], reservation_id);
        // Any path under /console/ is a deep link into the page, however long.
        let console_path = &doc["paths"]["/console/{*path}"]["get"]["parameters"][0];
        assert_eq!(console_path["name"], "*path");
        assert!(console_path["schema"]["maxLength"].is_null(), "{console_path}");
        for (name, schema) in doc["components"]["schemas"].as_object().unwrap() {
            for (field, property) in schema["properties"].as_object().into_iter().flatten() {
                if let Some(max) = property["maxLength"].as_u64() {
                    assert!(max == ID_BYTES_MAX as u64 || max == TEXT_BYTES_MAX as u64, "{name}.{field}: {max}");
                }
            }
        }
    }

    /// `gateway/openapi/openapi.json` is the document as built: the API's
    /// contract under review, for clients to generate types from. After a
    /// change to the API, write it again with
    /// `UPDATE_OPENAPI=1 cargo test -p inventory-gateway --lib openapi`.
    #[test]
    fn the_committed_document_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi/openapi.json");
        let built = serde_json::to_string_pretty(&document()).unwrap() + "\n";
        if std::env::var_os("UPDATE_OPENAPI").is_some() {
            std::fs::write(&path, &built).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == built,
            "{} differs from the document the code builds; if the API change is meant, write it again with \
             UPDATE_OPENAPI=1 cargo test -p inventory-gateway --lib openapi",
            path.display()
        );
    }
}
