// The service's JSON as the console uses it, under the console's names. Each
// type is the schema of the service's OpenAPI document (GET /openapi.json,
// committed as gateway/openapi/openapi.json), from `generated.ts`, which
// `npm run gen:api` makes from that document and `npm run check:api` keeps
// fresh. So a change to the service's JSON reaches these types, and
// `tsc --noEmit` (in `npm run build`) fails where the console does not
// follow it. Write no shape by hand here that the document describes.
import type { components } from "./generated";

type Schemas = components["schemas"];

/** Every error: `{code, message}`, plus details for some codes (null or absent otherwise). */
export type ApiErrorBody = Schemas["Error"];

// ----- stock -----------------------------------------------------------------

/** One warehouse row of an SKU. */
export type WarehouseStock = Schemas["WarehouseStock"];

/** `GET /api/inventory/{skuId}`: totals, per-warehouse rows, and the sale policy if the SKU has one. */
export type Stock = Schemas["Stock"];

/** An SKU's sale policy and what it counted (`Stock.policy`). */
export type Policy = Schemas["Policy"];

/** `POST /api/inventory/receive`. */
export type ReceiveRequest = Schemas["ReceiveBody"];

/** The row a receipt changed. */
export type ReceivedRow = Schemas["Row"];

// ----- holds -----------------------------------------------------------------

/** `POST /api/inventory/reserve`. */
export type ReserveRequest = Schemas["ReserveBody"];

/** The answer to reserve, confirm and release. */
export type HoldReply = Schemas["Hold"];

export type ReservationStatus = HoldReply["status"];

/** A hold: `GET /api/reservations/{id}` and the holds of an order. */
export type Reservation = Schemas["Reservation"];

/** `GET /api/orders/{orderId}/inventory-status`. */
export type OrderStatus = Schemas["OrderHolds"];

/** `GET /api/read-model/orders/{orderId}/inventory-status`: the same from PostgreSQL, with its lag. */
export type ReadModelOrderStatus = Schemas["ReadModelOrderHolds"];

// ----- operator actions ----------------------------------------------------------

/** `POST /api/admin/skus/{skuId}/freeze` and `/unfreeze` (answer: Stock). */
export type FreezeRequest = Schemas["FreezeBody"];

/** `PUT /api/admin/skus/{skuId}/policy` (answer: Stock with its policy). */
export type PolicyRequest = Schemas["PolicyRequest"];

/** `DELETE /api/admin/skus/{skuId}/policy` (answer: Stock). */
export type PolicyRemoval = Schemas["PolicyRemoval"];

export type Levels = Schemas["Levels"];

export type Adjustment = Schemas["Adjustment"];

export type AdjustmentStatus = Adjustment["status"];

/** `POST /api/admin/adjustments`. */
export type ProposeRequest = Schemas["ProposeBody"];

/** `POST .../approve`, `.../reject`, `.../arrive`, `.../cancel`. */
export type DecisionRequest = Schemas["DecisionBody"];

/** `GET /api/admin/adjustments?status=&skuId=`. */
export type AdjustmentList = Schemas["AdjustmentList"];

export type Transfer = Schemas["Transfer"];

export type TransferStatus = Transfer["status"];

/** `POST /api/admin/transfers`. */
export type TransferRequest = Schemas["TransferBody"];

/** `GET /api/admin/transfers?status=&skuId=` (status may be OVERDUE). */
export type TransferList = Schemas["TransferList"];

// ----- admin -------------------------------------------------------------------

/** `POST /api/admin/reconcile`. */
export type ReconcileRequest = Schemas["ReconcileRequest"];

export interface RowImage {
  available: number;
  reserved: number;
  sold: number;
  version: number;
}

/**
 * One mismatch of a reconciliation (at most 100 are listed). The document
 * leaves these untyped (`items: {}`, described in words); this is the shape
 * gateway/src/http/admin.rs builds, and the console reads only `skuId`,
 * `warehouseId`, `side`, `problem` and `action` from it.
 */
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

/** `POST /api/admin/reconcile`'s report, its details read as {@link ReconcileDetail}. */
export type ReconcileReport = Omit<Schemas["ReconcileReport"], "details"> & { details: ReconcileDetail[] };

/** `GET /api/admin/persistence`. */
export type PersistenceStatus = Schemas["PersistenceStatus"];
