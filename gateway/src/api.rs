//! The HTTP API's JSON shapes, input validation, and the one place where
//! outcomes and rejections become HTTP statuses.

use std::time::{Duration, UNIX_EPOCH};

use hyper::StatusCode;
use inventory_core::{
    AdjustmentStatus, AdjustmentView, Levels, Millis, Outcome, Rejection, ReservationId, ReservationStatus,
    ReservationView, SkuStock, TransferStatus, TransferView, ROW_UNITS_MAX, SKU_ID_BYTES_MAX, WAREHOUSES_PER_SKU_MAX,
    WAREHOUSE_IDS_MAX,
};
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::ToSchema;

/// Longest SKU, warehouse, order, payment or reservation id, in bytes.
pub const ID_BYTES_MAX: usize = 128;
/// Longest idempotency key, release reason or receipt reference, in bytes.
pub const TEXT_BYTES_MAX: usize = 256;
/// Longest hold a caller may ask for (`ttlSeconds`): 7 days.
pub const TTL_SECONDS_MAX: u64 = 7 * 24 * 3600;
/// Largest request body.
pub const BODY_BYTES_MAX: usize = 64 * 1024;
/// What follows the prefix of a reservation, adjustment or transfer id
/// (`rsv-<shard>-<seq>`), as a pattern of the API document.
pub const SHARD_SEQ_PATTERN: &str = "-[0-9]{1,20}-[0-9]{1,20}";

/// An error response: `{code, message}` plus optional detail fields.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds, for `Retry-After` on 503s.
    pub retry_after: Option<u32>,
    pub detail: Option<serde_json::Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), retry_after: None, detail: None }
    }

    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "INVALID_FIELD", message)
    }

    pub fn unavailable(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { retry_after: Some(1), ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, message) }
    }

    pub fn body(&self) -> Vec<u8> {
        let mut value = serde_json::json!({ "code": self.code, "message": self.message });
        if let Some(serde_json::Value::Object(detail)) = &self.detail {
            value.as_object_mut().unwrap().extend(detail.clone());
        }
        serde_json::to_vec(&value).expect("json")
    }
}

/// The HTTP status of each rejection. Nowhere else maps rejections.
pub fn rejection_error(rejection: Rejection) -> ApiError {
    use Rejection::*;
    let (status, message, detail) = match rejection {
        SkuNotFound => (StatusCode::NOT_FOUND, "no stock row for this SKU and warehouse".to_string(), None),
        InsufficientStock { available } => (
            StatusCode::CONFLICT,
            format!("not enough stock: {available} available"),
            Some(serde_json::json!({ "available": available })),
        ),
        DuplicateOrderLine { existing, status } => (
            StatusCode::CONFLICT,
            format!("order line already has hold {existing} ({})", status.as_str()),
            Some(serde_json::json!({ "reservationId": existing.to_string(), "status": status.as_str() })),
        ),
        ReservationNotFound => (StatusCode::NOT_FOUND, "no such reservation".to_string(), None),
        ReservationExpired => (StatusCode::CONFLICT, "the reservation expired".to_string(), None),
        ReservationReleased => (StatusCode::CONFLICT, "the reservation was released".to_string(), None),
        ReservationConfirmed => (StatusCode::CONFLICT, "the reservation is already confirmed".to_string(), None),
        PaymentMismatch => {
            (StatusCode::CONFLICT, "the reservation was confirmed by a different payment".to_string(), None)
        }
        IdempotencyKeyReused => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "this idempotency key was used for a different request".to_string(),
            None,
        ),
        QuantityOverflow => (
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("a stock row can receive at most {ROW_UNITS_MAX} units in total; this quantity would exceed that"),
            Some(serde_json::json!({ "limit": ROW_UNITS_MAX })),
        ),
        InvalidQuantity => (StatusCode::BAD_REQUEST, "qty must be positive".to_string(), None),
        InvalidBatch => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "a batch must be non-empty and name each SKU and warehouse once".to_string(),
            None,
        ),
        TooManyWarehouses => (
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "this SKU already has the maximum number of warehouses ({WAREHOUSES_PER_SKU_MAX}), \
                 or its shard the maximum number of distinct warehouse ids ({WAREHOUSE_IDS_MAX})"
            ),
            None,
        ),
        SkuIdTooLong => (StatusCode::BAD_REQUEST, format!("skuId is longer than {SKU_ID_BYTES_MAX} bytes"), None),
        SkuFrozen => (
            StatusCode::CONFLICT,
            "this SKU is frozen in this warehouse: reserves are refused until an operator unfreezes it".to_string(),
            None,
        ),
        SameOperator => (
            StatusCode::FORBIDDEN,
            "an adjustment must be approved by an operator other than the one who proposed it".to_string(),
            None,
        ),
        AdjustmentNotFound => (StatusCode::NOT_FOUND, "no such adjustment".to_string(), None),
        AdjustmentNotPending { status } => (
            StatusCode::CONFLICT,
            format!("the adjustment is no longer pending: it is {}", status.as_str()),
            Some(serde_json::json!({ "status": status.as_str() })),
        ),
        TransferNotFound => (StatusCode::NOT_FOUND, "no such transfer".to_string(), None),
        TransferNotInTransit { status } => (
            StatusCode::CONFLICT,
            format!("the transfer is no longer in transit: it is {}", status.as_str()),
            Some(serde_json::json!({ "status": status.as_str() })),
        ),
        SameWarehouse => (StatusCode::BAD_REQUEST, "fromWarehouseId and toWarehouseId must differ".to_string(), None),
        BuyerRequired => (
            StatusCode::BAD_REQUEST,
            "this SKU limits units per buyer: the reserve must name its buyerId".to_string(),
            None,
        ),
        PurchaseLimitExceeded { limit, held } => (
            StatusCode::CONFLICT,
            format!("this buyer holds or bought {held} units of this SKU; the limit is {limit}"),
            Some(serde_json::json!({ "limit": limit, "held": held })),
        ),
        SaleNotStarted { starts_at } => (
            StatusCode::CONFLICT,
            format!("the sale of this SKU starts at {}", rfc3339(starts_at)),
            Some(serde_json::json!({ "startsAt": rfc3339(starts_at) })),
        ),
        SaleEnded => (StatusCode::CONFLICT, "the sale of this SKU has ended".to_string(), None),
        ChannelRequired => (
            StatusCode::BAD_REQUEST,
            "this SKU has channel quotas: the reserve must name its channel".to_string(),
            None,
        ),
        UnknownChannel => {
            (StatusCode::BAD_REQUEST, "this SKU's policy has no quota for this channel".to_string(), None)
        }
        OrderNotReservable { failed } => {
            (StatusCode::CONFLICT, format!("{failed} line(s) of this order cannot be held; no line is held"), None)
        }
        OrderNotFound => (StatusCode::NOT_FOUND, "no such order".to_string(), None),
        PartOfOrder => (
            StatusCode::CONFLICT,
            "this hold is a line of an order: confirm or release the order (/api/orders/{orderId}/...)".to_string(),
            None,
        ),
        OrderAborted => (
            StatusCode::CONFLICT,
            "this order was abandoned before all its lines were held; nothing is held: retry with a new key"
                .to_string(),
            None,
        ),
        ChannelQuotaExhausted { quota, used } => (
            StatusCode::CONFLICT,
            format!("this channel's quota of {quota} units is used up ({used} held or sold)"),
            Some(serde_json::json!({ "quota": quota, "used": used })),
        ),
    };
    ApiError { detail, ..ApiError::new(status, rejection.code(), message) }
}

pub fn rfc3339(ms: Millis) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

// The schema of the bodies `ApiError::body` writes, for the API document
// only (errors are written on the hot path as they were); the integration
// tests hold it to real error answers.
/// An error: `code` and `message`, and the detail fields some codes add.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = Error)]
pub struct ErrorJson {
    /// Stable and machine-readable; each operation lists the codes it can
    /// answer with, per status.
    pub code: String,
    /// For people; may change.
    pub message: String,
    /// `INSUFFICIENT_STOCK`: units available.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available: Option<u64>,
    /// `DUPLICATE_ORDER_LINE`: the order line's hold.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reservation_id: Option<String>,
    /// `DUPLICATE_ORDER_LINE`: the hold's status; `ADJUSTMENT_NOT_PENDING`
    /// and `TRANSFER_NOT_IN_TRANSIT`: the record's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// `QUANTITY_OVERFLOW`: units a row may receive in total;
    /// `RISK_CHECK_REQUIRED`: units a caller may hold in a minute;
    /// `PURCHASE_LIMIT_EXCEEDED`: units a buyer may hold and buy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// `RISK_CHECK_REQUIRED`: units the caller holds from the last minute;
    /// `PURCHASE_LIMIT_EXCEEDED`: units the buyer holds or bought.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held: Option<u64>,
    /// `SALE_NOT_STARTED`: when the sale starts.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub starts_at: Option<String>,
    /// `CHANNEL_QUOTA_EXHAUSTED`: the channel's units, and those held or
    /// sold.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub used: Option<u64>,
    /// `ORDER_NOT_RESERVABLE`: every line that cannot be held, with its own
    /// code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lines: Option<Vec<LineRefusalJson>>,
    /// `FORBIDDEN`: the roles any one of which the endpoint takes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub required_roles: Option<Vec<String>>,
    /// `METHOD_NOT_ALLOWED`: the methods the path takes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow: Option<String>,
    /// `SNAPSHOT_FAILED`: every shard's report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshots: Option<Vec<crate::http::SnapshotJson>>,
}

/// A string schema of the given values.
fn one_of_strings(values: impl IntoIterator<Item = &'static str>) -> Schema {
    ObjectBuilder::new().schema_type(Type::String).enum_values(Some(values)).into()
}

/// A hold's status.
fn hold_status() -> Schema {
    one_of_strings(ReservationStatus::ALL.map(ReservationStatus::as_str))
}

fn adjustment_status() -> Schema {
    one_of_strings(AdjustmentStatus::ALL.map(AdjustmentStatus::as_str))
}

fn transfer_status() -> Schema {
    one_of_strings(TransferStatus::ALL.map(TransferStatus::as_str))
}

// ----- requests -------------------------------------------------------------

// Lengths are in characters in the API document and in bytes here: the
// document's limits are the gateway's (ID_BYTES_MAX, TEXT_BYTES_MAX) for
// ASCII, and a unit test of the document holds them equal.

/// `POST /api/inventory/receive`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReceiveBody {
    #[schema(min_length = 1, max_length = 128)]
    pub sku_id: String,
    /// `default` when not given.
    #[schema(min_length = 1, max_length = 128)]
    pub warehouse_id: Option<String>,
    /// At most `--max-qty` (1,000,000 by default).
    #[schema(minimum = 1)]
    pub qty: u64,
    /// Or the `Idempotency-Key` header.
    #[schema(min_length = 1, max_length = 256)]
    pub idem_key: Option<String>,
    /// The receipt's reference (a purchase order), kept with the change.
    #[serde(rename = "ref")]
    #[schema(max_length = 256)]
    pub reference: Option<String>,
}

/// `POST /api/inventory/receive-batch` as JSON.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReceiveBatchBody {
    /// Each `(skuId, warehouseId)` at most once.
    #[schema(min_items = 1, max_items = 10000)]
    pub items: Vec<BatchItem>,
    /// Or the `Idempotency-Key` header.
    #[schema(min_length = 1, max_length = 256)]
    pub idem_key: Option<String>,
    #[serde(rename = "ref")]
    #[schema(max_length = 256)]
    pub reference: Option<String>,
}

#[derive(Debug, ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct BatchItem {
    #[schema(min_length = 1, max_length = 128)]
    pub sku_id: String,
    /// `default` when not given.
    #[schema(min_length = 1, max_length = 128)]
    pub warehouse_id: Option<String>,
    /// At most `--max-qty`.
    #[schema(minimum = 1)]
    pub qty: u64,
}

/// A row of a JSON batch is an object only: serde's derive would also read
/// it from an array of its fields in order, a form the API does not have.
impl<'de> Deserialize<'de> for BatchItem {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<BatchItem, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Fields {
            sku_id: String,
            warehouse_id: Option<String>,
            qty: u64,
        }
        struct Object;
        impl<'de> serde::de::Visitor<'de> for Object {
            type Value = BatchItem;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object {skuId, warehouseId?, qty}")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<BatchItem, A::Error> {
                let Fields { sku_id, warehouse_id, qty } =
                    Fields::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(BatchItem { sku_id, warehouse_id, qty })
            }
        }
        deserializer.deserialize_map(Object)
    }
}

/// The CSV header of a `receive-batch` body sent as `text/csv`.
pub const BATCH_CSV_HEADER: &str = "skuId,warehouseId,qty";

/// A `text/csv` `receive-batch` body: lines of `skuId,warehouseId,qty`
/// (`warehouseId` may be empty), after an optional header line. Fields are
/// trimmed; blank lines are skipped; quoted fields are refused (ids hold no
/// commas). Returns the items with the line number of each.
pub fn parse_batch_csv(body: &[u8]) -> Result<(Vec<BatchItem>, Vec<u32>), ApiError> {
    let malformed = |message: String| ApiError::new(StatusCode::BAD_REQUEST, "MALFORMED_CSV", message);
    let text = std::str::from_utf8(body).map_err(|e| malformed(format!("request body is not UTF-8 text: {e}")))?;
    let estimate = body.len() / 24 + 1;
    let (mut items, mut lines) = (Vec::with_capacity(estimate), Vec::with_capacity(estimate));
    let mut first = true;
    for (i, line) in text.split('\n').enumerate() {
        let n = i as u32 + 1;
        let line = line.strip_suffix('\r').unwrap_or(line);
        // Blank lines are skipped, and the header if the first line is one.
        if line.trim().is_empty() || (std::mem::take(&mut first) && is_batch_csv_header(line)) {
            continue;
        }
        let [sku_id, warehouse_id, qty] = csv_fields(line).map_err(|e| malformed(format!("line {n}: {e}")))?;
        let qty =
            qty.parse().map_err(|_| ApiError::invalid(format!("line {n}: qty {qty:?} is not a positive integer")))?;
        let warehouse_id = (!warehouse_id.is_empty()).then(|| warehouse_id.to_string());
        items.push(BatchItem { sku_id: sku_id.to_string(), warehouse_id, qty });
        lines.push(n);
    }
    Ok((items, lines))
}

/// Why a CSV line is not a row of `skuId,warehouseId,qty`.
#[derive(Debug, PartialEq, Eq)]
pub enum CsvLineError {
    Quoted,
    /// The number of fields found.
    Fields(usize),
}

impl std::fmt::Display for CsvLineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CsvLineError::Quoted => f.write_str("quoted fields are not supported"),
            CsvLineError::Fields(n) => write!(f, "expected 3 fields ({BATCH_CSV_HEADER}), found {n}"),
        }
    }
}

/// The three fields of a CSV row line, trimmed, found in one pass over its
/// bytes (a batch body or a catalogue has millions of lines). Quoting is
/// refused rather than parsed: ids hold no commas.
pub fn csv_fields(line: &str) -> Result<[&str; 3], CsvLineError> {
    let (mut commas, mut fields) = ([0; 2], 1);
    for (i, &b) in line.as_bytes().iter().enumerate() {
        match b {
            b',' => {
                if fields <= commas.len() {
                    commas[fields - 1] = i;
                }
                fields += 1;
            }
            b'"' => return Err(CsvLineError::Quoted),
            _ => {}
        }
    }
    if fields != 3 {
        return Err(CsvLineError::Fields(fields));
    }
    // The commas are ASCII, so these are character boundaries.
    let [a, b] = commas;
    Ok([line[..a].trim(), line[a + 1..b].trim(), line[b + 1..].trim()])
}

fn is_batch_csv_header(line: &str) -> bool {
    let mut names = line.split(',').map(str::trim);
    BATCH_CSV_HEADER.split(',').all(|name| names.next() == Some(name)) && names.next().is_none()
}

/// Most rows in one `receive-batch` request.
pub const BATCH_ROWS_MAX: usize = 10_000;
/// Largest `receive-batch` body.
pub const BATCH_BODY_BYTES_MAX: usize = 4 * 1024 * 1024;

/// `POST /api/inventory/reserve`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReserveBody {
    /// One hold per order line `(orderId, skuId)`.
    #[schema(min_length = 1, max_length = 128)]
    pub order_id: String,
    #[schema(min_length = 1, max_length = 128)]
    pub sku_id: String,
    /// At most `--max-qty`.
    #[schema(minimum = 1)]
    pub qty: u64,
    /// Or the `Idempotency-Key` header.
    #[schema(min_length = 1, max_length = 256)]
    pub idem_key: Option<String>,
    /// `default` when not given.
    #[schema(min_length = 1, max_length = 128)]
    pub warehouse_id: Option<String>,
    /// How long the hold lasts unconfirmed (`--reservation-ttl-secs` when
    /// not given).
    #[schema(minimum = 1, maximum = 604800)]
    pub ttl_seconds: Option<u64>,
    /// The buyer: for the SKU's purchase limit, and the risk check's
    /// count of units per caller.
    #[schema(min_length = 1, max_length = 128)]
    pub buyer_id: Option<String>,
    /// The sales channel, for the SKU's channel quotas.
    #[schema(min_length = 1, max_length = 128)]
    pub channel: Option<String>,
}

/// One line of `POST /api/orders/{orderId}/reserve`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = OrderLineRequest)]
pub struct OrderLineBody {
    #[schema(min_length = 1, max_length = 128)]
    pub sku_id: String,
    /// `default` when not given.
    #[schema(min_length = 1, max_length = 128)]
    pub warehouse_id: Option<String>,
    /// At most `--max-qty`.
    #[schema(minimum = 1)]
    pub qty: u64,
}

/// `POST /api/orders/{orderId}/reserve`: every line held, or none.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = OrderReserveRequest)]
pub struct OrderReserveBody {
    /// 1 to 100 lines, each SKU once.
    pub lines: Vec<OrderLineBody>,
    /// The buyer, for the SKUs' purchase limits.
    #[schema(min_length = 1, max_length = 128)]
    pub buyer_id: Option<String>,
    /// The sales channel, for the SKUs' channel quotas.
    #[schema(min_length = 1, max_length = 128)]
    pub channel: Option<String>,
    /// Or the `Idempotency-Key` header.
    #[schema(min_length = 1, max_length = 256)]
    pub idem_key: Option<String>,
    /// How long the order's lines are held unconfirmed (`--reservation-ttl-secs`
    /// when not given); one `expireAt` for every line.
    #[schema(minimum = 1, maximum = 604800)]
    pub ttl_seconds: Option<u64>,
}

/// `POST /api/orders/{orderId}/confirm`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = OrderConfirmRequest)]
pub struct OrderConfirmBody {
    #[schema(min_length = 1, max_length = 128)]
    pub payment_id: String,
    /// Or the `Idempotency-Key` header.
    #[schema(min_length = 1, max_length = 256)]
    pub idem_key: Option<String>,
}

/// `POST /api/orders/{orderId}/release`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = OrderReleaseRequest)]
pub struct OrderReleaseBody {
    /// Not `TIMEOUT` nor `ORDER_ABORTED`, which the service gives itself.
    #[schema(min_length = 1, max_length = 256)]
    pub reason: String,
    /// Or the `Idempotency-Key` header.
    #[schema(min_length = 1, max_length = 256)]
    pub idem_key: Option<String>,
}

/// One line of an order's answer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = OrderLine)]
pub struct OrderLineJson {
    pub sku_id: String,
    pub warehouse_id: String,
    pub qty: u64,
    /// `rsv-<shard>-<seq>`.
    pub reservation_id: String,
}

/// An order's answer: its state and its lines.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = Order)]
pub struct OrderStateJson {
    pub order_id: String,
    /// `RESERVED`, `CONFIRMED`, `RELEASED` or `EXPIRED`.
    pub status: &'static str,
    /// When the unconfirmed lines are released together (reason `TIMEOUT`).
    #[schema(format = DateTime)]
    pub expire_at: String,
    pub lines: Vec<OrderLineJson>,
}

/// Why one line of an order could not be held (`ORDER_NOT_RESERVABLE`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = OrderLineRefusal)]
pub struct LineRefusalJson {
    pub sku_id: String,
    pub warehouse_id: String,
    /// The code a reserve of this line alone would get.
    pub code: &'static str,
    /// `INSUFFICIENT_STOCK`: units available.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available: Option<u64>,
}

/// `PUT /api/admin/skus/{skuId}/policy`: the SKU's sale policy, replacing
/// the one it has (what that one counted is kept).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = PolicyRequest)]
pub struct PolicyBody {
    /// Units one buyer may hold and buy together; reserves must then name
    /// their `buyerId`. At most `--max-qty`.
    #[schema(minimum = 1)]
    pub max_per_buyer: Option<u64>,
    /// Reserves before this time are refused (`SALE_NOT_STARTED`).
    #[schema(format = DateTime)]
    pub sale_starts_at: Option<String>,
    /// Reserves from this time are refused (`SALE_ENDED`); after
    /// `saleStartsAt`.
    #[schema(format = DateTime)]
    pub sale_ends_at: Option<String>,
    /// Units each channel may hold and sell (1 to 32 channels); reserves
    /// must then name one of them as `channel`.
    pub channel_quotas: Option<std::collections::BTreeMap<String, u64>>,
    /// Or the `Idempotency-Key` header.
    #[schema(min_length = 1, max_length = 256)]
    pub idem_key: Option<String>,
}

/// `DELETE /api/admin/skus/{skuId}/policy`: the key, in the body or the
/// `Idempotency-Key` header (the body may be empty).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = PolicyRemoval)]
pub struct PolicyRemoveBody {
    /// Or the `Idempotency-Key` header.
    #[schema(min_length = 1, max_length = 256)]
    pub idem_key: Option<String>,
}

/// Largest quota of one channel.
pub const CHANNEL_UNITS_MAX: u64 = 1 << 40;

/// A time field in RFC 3339 (`2026-12-24T10:00:00Z`), as milliseconds.
pub fn parse_time(field: &str, value: &str) -> Result<Millis, ApiError> {
    let at = humantime::parse_rfc3339_weak(value).map_err(|_| {
        ApiError::invalid(format!("{field} must be an RFC 3339 time (2026-12-24T10:00:00Z), got {value:?}"))
    })?;
    let ms =
        at.duration_since(UNIX_EPOCH).map_err(|_| ApiError::invalid(format!("{field} is before 1970")))?.as_millis();
    u64::try_from(ms)
        .ok()
        .filter(|&ms| ms <= inventory_core::ROW_MILLIS_MAX)
        .ok_or_else(|| ApiError::invalid(format!("{field} is too far in the future")))
}

impl PolicyBody {
    /// The policy the body asks for, checked.
    pub fn policy(&self, max_qty: u64) -> Result<inventory_core::SalePolicy, ApiError> {
        let max_per_buyer = match self.max_per_buyer {
            Some(n) if n == 0 || n > max_qty.min(u32::MAX as u64) => {
                return Err(ApiError::invalid(format!(
                    "maxPerBuyer must be between 1 and {}, got {n}",
                    max_qty.min(u32::MAX as u64)
                )))
            }
            n => n.map(|n| n as u32),
        };
        let starts = self.sale_starts_at.as_deref().map(|v| parse_time("saleStartsAt", v)).transpose()?;
        let ends = self.sale_ends_at.as_deref().map(|v| parse_time("saleEndsAt", v)).transpose()?;
        if let (Some(s), Some(e)) = (starts, ends) {
            if e <= s {
                return Err(ApiError::invalid("saleEndsAt must be after saleStartsAt"));
            }
        }
        let mut channel_quotas = Vec::new();
        if let Some(quotas) = &self.channel_quotas {
            if quotas.is_empty() || quotas.len() > inventory_core::CHANNELS_MAX {
                return Err(ApiError::invalid(format!(
                    "channelQuotas must name 1 to {} channels, got {}",
                    inventory_core::CHANNELS_MAX,
                    quotas.len()
                )));
            }
            for (channel, &units) in quotas {
                check_text("channelQuotas (a channel name)", channel, ID_BYTES_MAX)?;
                if units > CHANNEL_UNITS_MAX {
                    return Err(ApiError::invalid(format!(
                        "channelQuotas.{channel} must be at most {CHANNEL_UNITS_MAX}, got {units}"
                    )));
                }
                channel_quotas.push((channel.clone(), units));
            }
        }
        Ok(inventory_core::SalePolicy { max_per_buyer, sale_starts_at: starts, sale_ends_at: ends, channel_quotas })
    }
}

/// `POST /api/inventory/confirm`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfirmBody {
    /// `rsv-<shard>-<seq>`.
    #[schema(pattern = "^rsv-[0-9]{1,20}-[0-9]{1,20}$")]
    pub reservation_id: String,
    /// A repeated callback with the same payment answers `CONFIRMED` again.
    #[schema(min_length = 1, max_length = 128)]
    pub payment_id: String,
    /// Or the `Idempotency-Key` header.
    #[schema(min_length = 1, max_length = 256)]
    pub idem_key: Option<String>,
}

/// `POST /api/inventory/release`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseBody {
    /// `rsv-<shard>-<seq>`.
    #[schema(pattern = "^rsv-[0-9]{1,20}-[0-9]{1,20}$")]
    pub reservation_id: String,
    /// Why, e.g. `USER_CANCELLED`.
    #[schema(min_length = 1, max_length = 256)]
    pub reason: String,
    /// Or the `Idempotency-Key` header.
    #[schema(min_length = 1, max_length = 256)]
    pub idem_key: Option<String>,
}

/// `POST /api/admin/skus/{skuId}/freeze` and `/unfreeze`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FreezeBody {
    /// One warehouse's row; every row of the SKU when not given.
    #[schema(min_length = 1, max_length = 128)]
    pub warehouse_id: Option<String>,
    #[schema(min_length = 1, max_length = 256)]
    pub reason: String,
    /// Or the `Idempotency-Key` header.
    #[schema(min_length = 1, max_length = 256)]
    pub idem_key: Option<String>,
}

/// `POST /api/admin/adjustments`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProposeBody {
    #[schema(min_length = 1, max_length = 128)]
    pub sku_id: String,
    /// `default` when not given.
    #[schema(min_length = 1, max_length = 128)]
    pub warehouse_id: Option<String>,
    /// Units to add (positive) or remove (negative); not zero, and at most
    /// `--max-qty` either way.
    pub delta: i64,
    #[schema(min_length = 1, max_length = 256)]
    pub reason: String,
    /// Or the `Idempotency-Key` header.
    #[schema(min_length = 1, max_length = 256)]
    pub idem_key: Option<String>,
}

/// `POST /api/admin/adjustments/{id}/approve` and `/reject`, and
/// `/api/admin/transfers/{id}/arrive` and `/cancel`: a reason (required to
/// reject or cancel) and the key.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DecisionBody {
    /// Required to reject or cancel.
    #[schema(min_length = 1, max_length = 256)]
    pub reason: Option<String>,
    /// Or the `Idempotency-Key` header.
    #[schema(min_length = 1, max_length = 256)]
    pub idem_key: Option<String>,
}

/// `POST /api/admin/transfers`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransferBody {
    #[schema(min_length = 1, max_length = 128)]
    pub sku_id: String,
    #[schema(min_length = 1, max_length = 128)]
    pub from_warehouse_id: String,
    /// Not `fromWarehouseId`.
    #[schema(min_length = 1, max_length = 128)]
    pub to_warehouse_id: String,
    /// At most `--max-qty`.
    #[schema(minimum = 1)]
    pub qty: u64,
    #[schema(min_length = 1, max_length = 256)]
    pub reason: String,
    /// Or the `Idempotency-Key` header.
    #[schema(min_length = 1, max_length = 256)]
    pub idem_key: Option<String>,
    /// When it is due; past it, an unfinished transfer is `overdue`.
    #[schema(minimum = 1, maximum = 7776000)]
    pub expected_arrival_seconds: Option<u64>,
}

/// Longest `expectedArrivalSeconds` of a transfer: 90 days.
pub const TRANSFER_SECONDS_MAX: u64 = 90 * 24 * 3600;

/// A row's counters.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = Levels)]
pub struct LevelsJson {
    available: u64,
    reserved: u64,
    sold: u64,
}

impl From<Levels> for LevelsJson {
    fn from(l: Levels) -> LevelsJson {
        LevelsJson { available: l.available, reserved: l.reserved, sold: l.sold }
    }
}

/// An adjustment as the API shows it. `before` is the row when it was
/// proposed, or just before it was applied; `after` just after.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = Adjustment)]
pub struct AdjustmentJson {
    /// `adj-<shard>-<seq>`.
    adjustment_id: String,
    #[schema(schema_with = adjustment_status)]
    status: &'static str,
    sku_id: String,
    warehouse_id: String,
    delta: i64,
    reason: String,
    proposed_by: String,
    #[schema(format = DateTime)]
    proposed_at: String,
    #[schema(format = DateTime)]
    expires_at: String,
    before: LevelsJson,
    #[serde(skip_serializing_if = "Option::is_none")]
    after: Option<LevelsJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    approved_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rejected_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    decision_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    decided_at: Option<String>,
}

/// `GET /api/admin/adjustments`: oldest first.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = AdjustmentList)]
pub struct AdjustmentListJson {
    pub adjustments: Vec<AdjustmentJson>,
}

impl From<AdjustmentView> for AdjustmentJson {
    fn from(v: AdjustmentView) -> AdjustmentJson {
        let a = v.adjustment;
        let applied = a.status == AdjustmentStatus::Applied;
        let rejected = a.status == AdjustmentStatus::Rejected;
        AdjustmentJson {
            adjustment_id: v.id.to_string(),
            status: a.status.as_str(),
            sku_id: v.sku_id,
            warehouse_id: v.warehouse_id,
            delta: a.delta,
            reason: a.reason,
            proposed_by: a.proposed_by,
            proposed_at: rfc3339(a.proposed_at),
            expires_at: rfc3339(a.expires_at),
            before: if applied { a.before } else { a.proposed_levels }.into(),
            after: applied.then(|| a.after.into()),
            approved_by: applied.then(|| a.decided_by.clone()),
            rejected_by: rejected.then(|| a.decided_by.clone()),
            decision_reason: (!a.decision_reason.is_empty()).then_some(a.decision_reason),
            decided_at: (a.status != AdjustmentStatus::Pending).then(|| rfc3339(a.decided_at)),
        }
    }
}

/// A transfer as the API shows it; `overdue` is judged at `now`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = Transfer)]
pub struct TransferJson {
    /// `trf-<shard>-<seq>`.
    transfer_id: String,
    #[schema(schema_with = transfer_status)]
    status: &'static str,
    sku_id: String,
    from_warehouse_id: String,
    to_warehouse_id: String,
    qty: u64,
    reason: String,
    created_by: String,
    #[schema(format = DateTime)]
    created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    expected_arrival_at: Option<String>,
    /// In transit past its expected arrival.
    overdue: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    arrived_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    cancelled_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    finished_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cancel_reason: Option<String>,
}

/// `GET /api/admin/transfers`: oldest first.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = TransferList)]
pub struct TransferListJson {
    pub transfers: Vec<TransferJson>,
}

impl TransferJson {
    pub fn new(v: TransferView, now: Millis) -> TransferJson {
        let t = v.transfer;
        let finished = t.status != TransferStatus::InTransit;
        let cancelled = t.status == TransferStatus::Cancelled;
        TransferJson {
            transfer_id: v.id.to_string(),
            status: t.status.as_str(),
            sku_id: v.sku_id,
            from_warehouse_id: v.from_warehouse_id,
            to_warehouse_id: v.to_warehouse_id,
            qty: t.qty,
            reason: t.reason.clone(),
            created_by: t.created_by.clone(),
            created_at: rfc3339(t.created_at),
            expected_arrival_at: t.expected_at.map(rfc3339),
            overdue: t.overdue(now),
            arrived_at: (t.status == TransferStatus::Arrived).then(|| rfc3339(t.finished_at)),
            cancelled_at: cancelled.then(|| rfc3339(t.finished_at)),
            finished_by: finished.then(|| t.finished_by.clone()),
            cancel_reason: cancelled.then(|| t.finish_reason.clone()),
        }
    }
}

/// Parses a JSON body, naming the offending field in the error.
pub fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    // Every body is a JSON object. serde's derive would also read a struct
    // from an array of its fields in order, a form the API does not have.
    if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err(ApiError::invalid("the request body must be a JSON object, not an array"));
    }
    // Valid bodies take the fast path; tracking the path of every field (a
    // bulk receipt has 10,000 rows) is paid only to explain an error.
    let error = match serde_json::from_slice(body) {
        Ok(value) => return Ok(value),
        Err(e) => e,
    };
    let malformed = |e: &dyn std::fmt::Display| {
        ApiError::new(StatusCode::BAD_REQUEST, "MALFORMED_JSON", format!("request body is not valid JSON: {e}"))
    };
    let de = &mut serde_json::Deserializer::from_slice(body);
    match serde_path_to_error::deserialize::<_, T>(de) {
        // Only what follows a valid value (trailing characters) was wrong.
        Ok(_) => Err(malformed(&error)),
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            match inner.classify() {
                serde_json::error::Category::Data if path == "." => Err(ApiError::invalid(inner.to_string())),
                serde_json::error::Category::Data => Err(ApiError::invalid(format!("{path}: {inner}"))),
                _ => Err(malformed(&inner)),
            }
        }
    }
}

/// Checks an id-like field: present, not blank, bounded, no control characters.
/// `field` is only formatted when the value is refused.
pub fn check_text(field: impl std::fmt::Display, value: &str, max: usize) -> Result<(), ApiError> {
    if value.trim().is_empty() {
        return Err(ApiError::invalid(format!("{field} must not be empty")));
    }
    if value.len() > max {
        return Err(ApiError::invalid(format!("{field} is {} bytes long; at most {max} allowed", value.len())));
    }
    // Ids are almost always ASCII, where a byte check is the same test.
    let control = if value.is_ascii() {
        value.bytes().any(|b| b.is_ascii_control())
    } else {
        value.chars().any(char::is_control)
    };
    if control {
        return Err(ApiError::invalid(format!("{field} must not contain control characters")));
    }
    Ok(())
}

pub fn check_qty(qty: u64, max: u64) -> Result<(), ApiError> {
    if qty == 0 || qty > max {
        return Err(ApiError::invalid(format!("qty must be between 1 and {max}, got {qty}")));
    }
    Ok(())
}

pub fn parse_reservation_id(field: &str, value: &str) -> Result<ReservationId, ApiError> {
    check_text(field, value, ID_BYTES_MAX)?;
    value
        .parse()
        .map_err(|_| ApiError::invalid(format!("{field} {value:?} is not a reservation id (rsv-<shard>-<seq>)")))
}

/// The idempotency key from the body or the `Idempotency-Key` header.
pub fn idem_key(body: Option<String>, header: Option<&str>) -> Result<String, ApiError> {
    let key = match (body, header) {
        (Some(b), Some(h)) if b != h => {
            return Err(ApiError::invalid("idemKey in the body differs from the Idempotency-Key header"));
        }
        (Some(b), _) => b,
        (None, Some(h)) => h.to_string(),
        (None, None) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "IDEMPOTENCY_KEY_REQUIRED",
                "every write needs an idempotency key: idemKey in the body or an Idempotency-Key header",
            ))
        }
    };
    check_text("idemKey", &key, TEXT_BYTES_MAX)?;
    Ok(key)
}

// ----- responses ------------------------------------------------------------

/// The stock row a receipt changed, after it.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = Row)]
pub struct RowJson<'a> {
    pub sku_id: &'a str,
    pub warehouse_id: &'a str,
    pub available: u64,
    pub reserved: u64,
    pub sold: u64,
    /// Bumped on every change of the row.
    pub version: u64,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

/// A reserve's, confirm's or release's answer: `RESERVED` with `expireAt`,
/// `CONFIRMED`, or `RELEASED` (`EXPIRED` when the hold had timed out).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = Hold)]
pub struct HoldJson {
    /// `rsv-<shard>-<seq>`.
    pub reservation_id: String,
    #[schema(schema_with = hold_status)]
    pub status: &'static str,
    /// When an unconfirmed hold is released (reason `TIMEOUT`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub expire_at: Option<String>,
}

/// A bulk receipt's answer: rows changed and units received over them.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = BatchReceipt)]
pub struct BatchJson {
    pub rows: u64,
    pub units: u64,
}

/// The body of a receipt: the row it changed, named by the request (the
/// outcome carries only the counters).
pub fn row_json(sku: &str, warehouse: &str, levels: Levels, version: u64, updated_at: Millis) -> Vec<u8> {
    let Levels { available, reserved, sold } = levels;
    serde_json::to_vec(&RowJson {
        sku_id: sku,
        warehouse_id: warehouse,
        available,
        reserved,
        sold,
        version,
        updated_at: rfc3339(updated_at),
    })
    .expect("json")
}

/// The success body of a write other than a receipt, or its rejection.
pub fn outcome_json(outcome: Outcome) -> Result<Vec<u8>, ApiError> {
    let json = match outcome {
        Outcome::Received { .. } => unreachable!("a receipt's body names its row: row_json"),
        Outcome::Reserved { reservation_id, expire_at } => serde_json::to_vec(&HoldJson {
            reservation_id: reservation_id.to_string(),
            status: "RESERVED",
            expire_at: Some(rfc3339(expire_at)),
        }),
        Outcome::Confirmed { reservation_id } => serde_json::to_vec(&HoldJson {
            reservation_id: reservation_id.to_string(),
            status: "CONFIRMED",
            expire_at: None,
        }),
        Outcome::Released { reservation_id, status } => serde_json::to_vec(&HoldJson {
            reservation_id: reservation_id.to_string(),
            status: status.as_str(),
            expire_at: None,
        }),
        Outcome::ReceivedBatch { rows, units } => serde_json::to_vec(&BatchJson { rows: u64::from(rows), units }),
        Outcome::Rejected(rejection) => return Err(rejection_error(rejection)),
        Outcome::Expired { .. }
        | Outcome::Evicted { .. }
        | Outcome::AdjustmentsExpired { .. }
        | Outcome::Repaired { .. } => unreachable!("expiry, eviction and repairs are internal"),
        Outcome::Frozen { .. }
        | Outcome::AdjustmentProposed { .. }
        | Outcome::AdjustmentDecided { .. }
        | Outcome::TransferDispatched { .. }
        | Outcome::TransferFinished { .. }
        | Outcome::PolicySet { .. } => unreachable!("an operator action's body is its record"),
        Outcome::OrderPrepared { .. }
        | Outcome::OrderDecided { .. }
        | Outcome::OrderFinished { .. }
        | Outcome::OrdersExpired { .. } => unreachable!("an order's body is its lines"),
    };
    Ok(json.expect("json"))
}

/// One warehouse's row of an SKU.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = WarehouseStock)]
pub struct WarehouseJson<'a> {
    warehouse_id: &'a str,
    available: u64,
    reserved: u64,
    sold: u64,
    /// Units on their way here from another warehouse.
    in_transit: u64,
    /// Reserves are refused here until an operator unfreezes it.
    frozen: bool,
    version: u64,
    #[schema(format = DateTime)]
    updated_at: String,
}

/// An SKU's stock: totals over its warehouses, and each warehouse's row.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = Stock)]
pub struct StockJson<'a> {
    sku_id: &'a str,
    available: u64,
    reserved: u64,
    sold: u64,
    in_transit: u64,
    /// Every warehouse row is frozen.
    frozen: bool,
    #[schema(format = DateTime)]
    updated_at: String,
    warehouses: Vec<WarehouseJson<'a>>,
    /// The SKU's sale policy and what it counted.
    #[serde(skip_serializing_if = "Option::is_none")]
    policy: Option<PolicyJson>,
}

/// An SKU's sale policy and what it counted.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = Policy)]
struct PolicyJson {
    #[serde(skip_serializing_if = "Option::is_none")]
    max_per_buyer: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    sale_starts_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    sale_ends_at: Option<String>,
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    channel_quotas: std::collections::BTreeMap<String, u64>,
    /// Units held or sold per channel.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    channels_used: std::collections::BTreeMap<String, u64>,
    /// Buyers holding or having bought units (counted only with a limit).
    buyers: u64,
}

impl From<&inventory_core::PolicyView> for PolicyJson {
    fn from(v: &inventory_core::PolicyView) -> PolicyJson {
        PolicyJson {
            max_per_buyer: v.policy.max_per_buyer,
            sale_starts_at: v.policy.sale_starts_at.map(rfc3339),
            sale_ends_at: v.policy.sale_ends_at.map(rfc3339),
            channel_quotas: v.policy.channel_quotas.iter().cloned().collect(),
            channels_used: v.channels_used.iter().cloned().collect(),
            buyers: v.buyers,
        }
    }
}

pub fn stock_json(stock: &SkuStock) -> Vec<u8> {
    let total = stock.total();
    serde_json::to_vec(&StockJson {
        sku_id: &stock.sku_id,
        available: total.available,
        reserved: total.reserved,
        sold: total.sold,
        in_transit: stock.warehouses.iter().map(|w| w.row.ops.in_transit).sum(),
        frozen: stock.warehouses.iter().all(|w| w.row.ops.frozen),
        updated_at: rfc3339(stock.updated_at()),
        warehouses: stock
            .warehouses
            .iter()
            .map(|w| WarehouseJson {
                warehouse_id: &w.warehouse_id,
                available: w.row.levels.available,
                reserved: w.row.levels.reserved,
                sold: w.row.levels.sold,
                in_transit: w.row.ops.in_transit,
                frozen: w.row.ops.frozen,
                version: w.row.version,
                updated_at: rfc3339(w.row.updated_at),
            })
            .collect(),
        policy: stock.policy.as_ref().map(PolicyJson::from),
    })
    .expect("json")
}

/// A hold as it stands.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = Reservation)]
pub struct ReservationJson {
    reservation_id: String,
    order_id: String,
    sku_id: String,
    warehouse_id: String,
    qty: u64,
    #[schema(schema_with = hold_status)]
    status: &'static str,
    #[schema(format = DateTime)]
    expire_at: String,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    updated_at: String,
    /// Once confirmed (with `--payment-id-key-file`, its keyed hash).
    #[serde(skip_serializing_if = "Option::is_none")]
    payment_id: Option<String>,
    /// Once released or expired (`TIMEOUT`).
    #[serde(skip_serializing_if = "Option::is_none")]
    release_reason: Option<String>,
}

impl From<ReservationView> for ReservationJson {
    fn from(v: ReservationView) -> Self {
        ReservationJson {
            reservation_id: v.reservation_id.to_string(),
            order_id: v.order_id,
            sku_id: v.sku_id,
            warehouse_id: v.warehouse_id,
            qty: v.qty,
            status: v.status.as_str(),
            expire_at: rfc3339(v.expire_at),
            created_at: rfc3339(v.created_at),
            updated_at: rfc3339(v.updated_at),
            payment_id: v.payment_id,
            release_reason: v.release_reason,
        }
    }
}

/// An order's holds, oldest first.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = OrderHolds)]
pub struct OrderJson {
    pub order_id: String,
    pub reservations: Vec<ReservationJson>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_csv_batch_reads_rows_with_their_line_numbers() {
        let body = b"skuId, warehouseId ,qty\r\n\na-1,east,3\r\n b-2 ,, 40\n\n  \nc-3,w,1";
        let (items, lines) = parse_batch_csv(body).unwrap();
        let rows: Vec<_> = items.iter().map(|i| (i.sku_id.as_str(), i.warehouse_id.as_deref(), i.qty)).collect();
        assert_eq!(rows, [("a-1", Some("east"), 3), ("b-2", None, 40), ("c-3", Some("w"), 1)]);
        assert_eq!(lines, [3, 4, 7]);
        // The header is optional, and only a first line is taken for one.
        let (items, lines) = parse_batch_csv(b"a-1,,3\n").unwrap();
        assert_eq!((items.len(), lines), (1, vec![1]));
        let e = parse_batch_csv(b"a-1,,3\nskuId,warehouseId,qty\n").unwrap_err();
        assert_eq!((e.code, e.message.as_str()), ("INVALID_FIELD", r#"line 2: qty "qty" is not a positive integer"#));
        assert!(parse_batch_csv(b"").unwrap().0.is_empty());
    }

    #[test]
    fn a_bad_csv_batch_is_refused_naming_the_line() {
        let cases: [(&[u8], &str, &str); 5] = [
            (b"skuId,warehouseId,qty\na,,1\nb,,-2\n", "INVALID_FIELD", r#"line 3: qty "-2" is not a positive integer"#),
            (b"a,,1\nb,1\n", "MALFORMED_CSV", "line 2: expected 3 fields (skuId,warehouseId,qty), found 2"),
            (b"a,,1,x\n", "MALFORMED_CSV", "line 1: expected 3 fields (skuId,warehouseId,qty), found 4"),
            (b"\"a,b\",,1\n", "MALFORMED_CSV", "line 1: quoted fields are not supported"),
            (b"a,,1\n\xff,,2\n", "MALFORMED_CSV", "request body is not UTF-8 text"),
        ];
        for (body, code, message) in cases {
            let e = parse_batch_csv(body).unwrap_err();
            assert_eq!((e.status, e.code), (StatusCode::BAD_REQUEST, code), "{}", e.message);
            assert!(e.message.starts_with(message), "{:?} does not start with {message:?}", e.message);
        }
    }

    #[test]
    fn text_checks_treat_ascii_and_unicode_controls_alike() {
        for bad in ["a\u{1}b", "a\u{7f}", "\u{85}x", "tab\there"] {
            assert!(check_text("f", bad, 64).is_err(), "{bad:?}");
        }
        for good in ["SKU-1", "é€ ok", "a b"] {
            assert!(check_text("f", good, 64).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn parse_errors_name_the_field() {
        let e = parse::<ReserveBody>(br#"{"orderId":"o","skuId":"s","qty":-1}"#).unwrap_err();
        assert_eq!((e.status, e.code), (StatusCode::BAD_REQUEST, "INVALID_FIELD"));
        assert!(e.message.starts_with("qty:"), "{}", e.message);
        let e = parse::<ReserveBody>(br#"{"orderId":"o","qty":1}"#).unwrap_err();
        assert!(e.message.contains("skuId"), "{}", e.message);
        let e = parse::<ReserveBody>(br#"{"orderId":"o","#).unwrap_err();
        assert_eq!(e.code, "MALFORMED_JSON");
    }

    #[test]
    fn bodies_and_batch_rows_are_objects_not_arrays_of_their_fields() {
        let e = parse::<ReserveBody>(br#" ["o", "s", 1, "k", null, null, null]"#).unwrap_err();
        assert_eq!((e.status, e.code), (StatusCode::BAD_REQUEST, "INVALID_FIELD"));
        let e = parse::<ReceiveBatchBody>(br#"{"idemKey":"k","items":[["s",null,1]]}"#).unwrap_err();
        assert_eq!((e.status, e.code), (StatusCode::BAD_REQUEST, "INVALID_FIELD"));
        assert!(e.message.starts_with("items[0]:"), "{}", e.message);
        let b = parse::<ReceiveBatchBody>(br#"{"items":[{"skuId":"s","qty":2,"warehouseId":"w"}]}"#).unwrap();
        assert_eq!(
            (b.items[0].sku_id.as_str(), b.items[0].warehouse_id.as_deref(), b.items[0].qty),
            ("s", Some("w"), 2)
        );
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }

    #[test]
    fn idem_key_from_body_or_header() {
        assert_eq!(idem_key(Some("a".into()), None).unwrap(), "a");
        assert_eq!(idem_key(None, Some("b")).unwrap(), "b");
        assert_eq!(idem_key(Some("a".into()), Some("a")).unwrap(), "a");
        assert!(idem_key(Some("a".into()), Some("b")).is_err());
        assert_eq!(idem_key(None, None).unwrap_err().code, "IDEMPOTENCY_KEY_REQUIRED");
        assert!(idem_key(Some(" ".into()), None).is_err());
    }
}
