// What each error code means to the person at the console. The codes are the
// service's (gateway/src/api.rs, core/src/outcome.rs and the http modules).
import type { ApiErrorBody } from "../api/types";

const WORDS: Record<string, string> = {
  // Reserve decisions
  SOLD_OUT: "sold out",
  INSUFFICIENT_STOCK: "sold out",
  SKU_FROZEN: "frozen",
  PURCHASE_LIMIT_EXCEEDED: "limit reached",
  RISK_CHECK_REQUIRED: "limit reached: a risk check is needed for more units",
  SKU_NOT_FOUND: "unknown SKU (or warehouse)",
  DUPLICATE_ORDER_LINE: "this order already holds this SKU",
  // The SKU's sale policy
  BUYER_REQUIRED: "a buyer is required: this SKU limits units per buyer",
  SALE_NOT_STARTED: "the sale has not started",
  SALE_ENDED: "the sale has ended",
  CHANNEL_REQUIRED: "a sales channel is required: this SKU has channel quotas",
  UNKNOWN_CHANNEL: "this channel has no quota for this SKU",
  CHANNEL_QUOTA_EXHAUSTED: "the channel's quota is used up",
  // Holds
  RESERVATION_NOT_FOUND: "no such hold",
  RESERVATION_EXPIRED: "the hold expired",
  RESERVATION_RELEASED: "the hold was released",
  RESERVATION_CONFIRMED: "the hold is already confirmed",
  PAYMENT_MISMATCH: "confirmed by a different payment",
  // Keys and input
  IDEMPOTENCY_KEY_REUSED: "this idempotency key was used for a different request",
  IDEMPOTENCY_KEY_REQUIRED: "an idempotency key is required",
  INVALID_FIELD: "invalid input",
  INVALID_QUANTITY: "the quantity must be positive",
  MALFORMED_JSON: "malformed request",
  PAYLOAD_TOO_LARGE: "request too large",
  QUANTITY_OVERFLOW: "more units than a stock row can hold",
  TOO_MANY_WAREHOUSES: "too many warehouses for this SKU",
  SKU_ID_TOO_LONG: "SKU id too long",
  OPERATOR_REQUIRED: "an operator name is required",
  // Operator actions
  SAME_OPERATOR: "a second operator must approve this",
  ADJUSTMENT_NOT_FOUND: "no such adjustment",
  ADJUSTMENT_NOT_PENDING: "the adjustment is no longer pending",
  TRANSFER_NOT_FOUND: "no such transfer",
  TRANSFER_NOT_IN_TRANSIT: "the transfer is no longer in transit",
  SAME_WAREHOUSE: "source and destination are the same warehouse",
  // Access
  UNAUTHENTICATED: "sign in first (the token is missing, expired or not accepted)",
  FORBIDDEN: "your roles do not allow this",
  STALE_REQUEST: "the request's timestamp is outside the window",
  REPLAYED_REQUEST: "the request's nonce was already used",
  BAD_SIGNATURE: "the request's signature does not match",
  // The service's state
  RATE_LIMITED: "too many requests: rate limited",
  OVERLOADED: "the service is overloaded",
  JOURNAL_UNAVAILABLE: "the service could not record the change",
  REPLICATION_LAG: "writes are paused until PostgreSQL catches up",
  NOT_READY: "the service is starting up",
  SHUTTING_DOWN: "the service is shutting down",
  COLD_TIER_UNAVAILABLE: "archived records could not be read",
  READ_MODEL_UNAVAILABLE: "the PostgreSQL read model is unavailable",
  POSTGRES_UNAVAILABLE: "PostgreSQL is unavailable",
  PERSISTENCE_LAGGING: "PostgreSQL has not caught up",
  JOURNAL_UNREADABLE: "the journal could not be read",
  REQUEST_TIMEOUT: "the request took too long to arrive",
  TOO_MANY_CONNECTIONS: "the service has too many connections",
  NOT_FOUND: "not found",
  METHOD_NOT_ALLOWED: "not allowed here",
};

/** The code in words, e.g. `INSUFFICIENT_STOCK` → "sold out". */
export function describeCode(code: string): string {
  return WORDS[code] ?? code.toLowerCase().replace(/_/g, " ");
}

/**
 * The detail fields an error carries, in words, or null: units available,
 * a buyer's limit and units held, when a sale starts, a channel's quota and
 * units used. `when` formats a time.
 */
export function describeDetail(error: ApiErrorBody, when: (iso: string) => string = (iso) => iso): string | null {
  const parts: string[] = [];
  if (error.available != null) parts.push(`${error.available} available`);
  if (error.limit != null && error.held != null) {
    parts.push(
      error.code === "PURCHASE_LIMIT_EXCEEDED"
        ? `limit ${error.limit} per buyer, ${error.held} already held or bought`
        : `limit ${error.limit}, ${error.held} held`,
    );
  }
  if (error.startsAt != null) parts.push(`starts ${when(error.startsAt)}`);
  if (error.quota != null && error.used != null) parts.push(`quota ${error.quota}, ${error.used} held or sold`);
  return parts.length > 0 ? parts.join("; ") : null;
}
