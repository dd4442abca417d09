// Watching an order's holds: every few seconds, ask the primary API; when it
// gives no answer, a 5xx or 429, ask the PostgreSQL read model instead and
// say so (degraded). Every round starts with the primary again, so the view
// returns to it as soon as it answers.
import type { ApiErrorBody, OrderStatus, ReadModelOrderStatus } from "../api/types";
import { call, retryable, type FetchLike, type Reply } from "./http";

export interface PollDeps {
  fetch: FetchLike;
  setTimeout: (fn: () => void, ms: number) => unknown;
  clearTimeout: (handle: unknown) => void;
  now: () => number;
}

export interface PollOptions {
  intervalMs?: number;
  /** A request with no answer after this long counts as failed. */
  timeoutMs?: number;
  headers?: Record<string, string>;
}

export type OrderView =
  | { state: "loading" }
  | {
      state: "done";
      source: "primary" | "read-model";
      /** Served from the read model because the primary failed. */
      degraded: boolean;
      order: OrderStatus | ReadModelOrderStatus;
      /** What the primary's failure was, when degraded. */
      primaryProblem?: string;
      at: number;
    }
  | {
      state: "error";
      message: string;
      error?: ApiErrorBody;
      /** The last answer that was had, still shown. */
      last?: Extract<OrderView, { state: "done" }>;
      at: number;
    };

export const ORDER_POLL_MS = 3_000;

function problem(reply: Reply<unknown>): string {
  if (reply.kind === "network") return `no answer (${reply.message})`;
  if (reply.kind === "error") return `${reply.status} ${reply.error.code}`;
  return "";
}

/** Fetches once: the primary, else the read model. */
export async function fetchOrder(
  orderId: string,
  deps: Pick<PollDeps, "fetch" | "now">,
  options: PollOptions = {},
  last?: Extract<OrderView, { state: "done" }>,
): Promise<OrderView> {
  const id = encodeURIComponent(orderId);
  const opts = { headers: options.headers, timeoutMs: options.timeoutMs ?? 2_500 };
  const primary = await call<OrderStatus>(deps.fetch, `/api/orders/${id}/inventory-status`, opts);
  if (primary.kind === "ok") {
    return { state: "done", source: "primary", degraded: false, order: primary.data, at: deps.now() };
  }
  if (!retryable(primary)) {
    // A decision (401, 403, 400): the read model would say the same.
    const error = primary.kind === "error" ? primary.error : undefined;
    return { state: "error", message: problem(primary), error, last, at: deps.now() };
  }
  const fallback = await call<ReadModelOrderStatus>(deps.fetch, `/api/read-model/orders/${id}/inventory-status`, opts);
  if (fallback.kind === "ok") {
    return {
      state: "done",
      source: "read-model",
      degraded: true,
      order: fallback.data,
      primaryProblem: problem(primary),
      at: deps.now(),
    };
  }
  const error = fallback.kind === "error" ? fallback.error : primary.kind === "error" ? primary.error : undefined;
  return {
    state: "error",
    message: `primary: ${problem(primary)}; read model: ${problem(fallback)}`,
    error,
    last,
    at: deps.now(),
  };
}

/** Polls until the returned function is called; `onView` gets every state. */
export function pollOrder(
  orderId: string,
  deps: PollDeps,
  onView: (view: OrderView) => void,
  options: PollOptions = {},
): () => void {
  let stopped = false;
  let timer: unknown = undefined;
  let last: Extract<OrderView, { state: "done" }> | undefined;
  const round = async () => {
    const view = await fetchOrder(orderId, deps, options, last);
    if (stopped) return;
    if (view.state === "done") last = view;
    onView(view);
    timer = deps.setTimeout(round, options.intervalMs ?? ORDER_POLL_MS);
  };
  onView({ state: "loading" });
  void round();
  return () => {
    stopped = true;
    if (timer !== undefined) deps.clearTimeout(timer);
  };
}
