// The service's JSON, exactly as inventoryd sends and takes it (camelCase).
// Every API type of the console lives in this one file, so that it can be
// checked against the service's OpenAPI document (GET /openapi.json).

/** Every error: `{code, message}`, plus details for some codes. */
export interface ApiErrorBody {
  code: string;
  message: string;
  /** INSUFFICIENT_STOCK */
  available?: number;
  /** DUPLICATE_ORDER_LINE: the existing hold */
  reservationId?: string;
  status?: string;
  /** FORBIDDEN */
  requiredRoles?: string[];
  /** RISK_CHECK_REQUIRED, QUANTITY_OVERFLOW */
  limit?: number;
  held?: number;
  /** METHOD_NOT_ALLOWED */
  allow?: string;
}

// ----- stock -----------------------------------------------------------------

/** One warehouse row of an SKU. */
export interface WarehouseStock {
  warehouseId: string;
  available: number;
  reserved: number;
  sold: number;
  inTransit: number;
  frozen: boolean;
  version: number;
  updatedAt: string;
}

/** `GET /api/inventory/{skuId}`: totals and per-warehouse rows. */
export interface Stock {
  skuId: string;
  available: number;
  reserved: number;
  sold: number;
  inTransit: number;
  /** Every warehouse row is frozen. */
  frozen: boolean;
  updatedAt: string;
  warehouses: WarehouseStock[];
  /** The SKU's sale policy, where the service reports one. */
  policy?: Record<string, unknown>;
}

/** `POST /api/inventory/receive`: the row it changed. */
export interface ReceiveRequest {
  skuId: string;
  warehouseId?: string;
  qty: number;
  idemKey?: string;
  ref?: string;
}

export interface ReceivedRow {
  skuId: string;
  warehouseId: string;
  available: number;
  reserved: number;
  sold: number;
  version: number;
  updatedAt: string;
}

// ----- holds -----------------------------------------------------------------

export type ReservationStatus = "RESERVED" | "CONFIRMED" | "RELEASED" | "EXPIRED";

/** `POST /api/inventory/reserve`. */
export interface ReserveRequest {
  orderId: string;
  skuId: string;
  qty: number;
  idemKey?: string;
  warehouseId?: string;
  ttlSeconds?: number;
  buyerId?: string;
}

/** The answer to reserve, confirm and release. */
export interface HoldReply {
  reservationId: string;
  status: ReservationStatus;
  /** Reserve only. */
  expireAt?: string;
}

/** A hold: `GET /api/reservations/{id}` and the holds of an order. */
export interface Reservation {
  reservationId: string;
  orderId: string;
  skuId: string;
  warehouseId: string;
  qty: number;
  status: ReservationStatus;
  expireAt: string;
  createdAt: string;
  updatedAt: string;
  paymentId?: string;
  releaseReason?: string;
}

/** `GET /api/orders/{orderId}/inventory-status`. */
export interface OrderStatus {
  orderId: string;
  reservations: Reservation[];
}

/** `GET /api/read-model/orders/{orderId}/inventory-status`: the same from PostgreSQL. */
export interface ReadModelOrderStatus extends OrderStatus {
  /** Some change acknowledged before the request is not in the answer. */
  stale: boolean;
  /** How long the oldest change PostgreSQL lacks has been acknowledged. */
  lagMs: number;
  /** Journal entries acknowledged before the request and not in the answer. */
  lagRecords: number;
}

// ----- operator actions ----------------------------------------------------------

/** `POST /api/admin/skus/{skuId}/freeze` and `/unfreeze` (answer: Stock). */
export interface FreezeRequest {
  warehouseId?: string;
  reason: string;
  idemKey?: string;
}

export interface Levels {
  available: number;
  reserved: number;
  sold: number;
}

export type AdjustmentStatus = "PENDING" | "APPLIED" | "REJECTED" | "EXPIRED";

/** `POST /api/admin/adjustments`. */
export interface ProposeRequest {
  skuId: string;
  warehouseId?: string;
  delta: number;
  reason: string;
  idemKey?: string;
}

/** `POST .../approve`, `.../reject`, `.../arrive`, `.../cancel`. */
export interface DecisionRequest {
  reason?: string;
  idemKey?: string;
}

export interface Adjustment {
  adjustmentId: string;
  status: AdjustmentStatus;
  skuId: string;
  warehouseId: string;
  delta: number;
  reason: string;
  proposedBy: string;
  proposedAt: string;
  expiresAt: string;
  /** The row when proposed, or just before it was applied. */
  before: Levels;
  after?: Levels;
  approvedBy?: string;
  rejectedBy?: string;
  decisionReason?: string;
  decidedAt?: string;
}

/** `GET /api/admin/adjustments?status=&skuId=`. */
export interface AdjustmentList {
  adjustments: Adjustment[];
}

export type TransferStatus = "IN_TRANSIT" | "ARRIVED" | "CANCELLED";

/** `POST /api/admin/transfers`. */
export interface TransferRequest {
  skuId: string;
  fromWarehouseId: string;
  toWarehouseId: string;
  qty: number;
  reason: string;
  idemKey?: string;
  expectedArrivalSeconds?: number;
}

export interface Transfer {
  transferId: string;
  status: TransferStatus;
  skuId: string;
  fromWarehouseId: string;
  toWarehouseId: string;
  qty: number;
  reason: string;
  createdBy: string;
  createdAt: string;
  expectedArrivalAt?: string;
  overdue: boolean;
  arrivedAt?: string;
  cancelledAt?: string;
  finishedBy?: string;
  cancelReason?: string;
}

/** `GET /api/admin/transfers?status=&skuId=` (status may be OVERDUE). */
export interface TransferList {
  transfers: Transfer[];
}

// ----- admin -------------------------------------------------------------------

/** `POST /api/admin/reconcile`. */
export interface ReconcileRequest {
  repair?: boolean;
}

export interface RowImage {
  available: number;
  reserved: number;
  sold: number;
  version: number;
}

/** One mismatch of a reconciliation (at most 100 are listed). */
export interface ReconcileDetail {
  skuId: string;
  warehouseId: string;
  side: "core" | "postgres" | "postgres_history";
  core?: RowImage;
  journal?: RowImage | null;
  postgres?: RowImage | null;
  history?: RowImage;
  action?: string;
  problem?: string;
}

export interface PgReconcileReport {
  compared: number;
  mismatched: number;
  repaired: number;
  historyBroken: number;
  skippedNewer: number;
}

export interface ReconcileReport {
  repair: boolean;
  checked: number;
  mismatched: number;
  repaired: number;
  coreMismatches: number;
  postgres: PgReconcileReport | null;
  details: ReconcileDetail[];
}

/** `GET /api/admin/persistence`. */
export interface PersistenceStatus {
  enabled: boolean;
  schema: string | null;
  shards: {
    shard: number;
    durableSeq: number;
    appliedSeq: number;
    lagRecords: number;
    lagSeconds: number;
    connected: boolean;
    lastError: string | null;
  }[];
}
