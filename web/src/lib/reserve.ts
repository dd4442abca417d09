// Reserving with retries: up to three attempts that all carry ONE
// idempotency key, made when the user submits, so however many attempts
// reach the service, at most one hold is made (a repeat is answered with the
// first attempt's outcome). Only a failure that says nothing about the
// decision is retried: no answer, a 5xx, or 429. Any other 4xx is the
// service's decision and is final.
import type { ApiErrorBody, HoldReply, ReserveRequest } from "../api/types";
import { call, newIdemKey, retryable, retryAfterMs, type FetchLike, type Reply } from "./http";

export interface ReserveDeps {
  fetch: FetchLike;
  sleep: (ms: number) => Promise<void>;
  /** Makes the idempotency key (once per submit). */
  newKey?: () => string;
}

export interface ReserveOptions {
  attempts?: number;
  /** Wait before attempt n+1 is `backoffMs * n`, or the answer's Retry-After if longer (capped at `maxWaitMs`). */
  backoffMs?: number;
  maxWaitMs?: number;
  /** Give up on an attempt that has no answer after this long. */
  timeoutMs?: number;
  headers?: Record<string, string>;
  /** Told before each attempt and after each failed one. */
  onAttempt?: (event: AttemptEvent) => void;
  signal?: AbortSignal;
}

export type AttemptEvent =
  | { phase: "sending"; attempt: number }
  | { phase: "failed"; attempt: number; reason: string; retryInMs?: number };

export type ReserveResult =
  | { kind: "done"; hold: HoldReply; attempts: number; idemKey: string; replayed: boolean }
  /** The service decided no (a 4xx other than 429). */
  | { kind: "rejected"; status: number; error: ApiErrorBody; attempts: number; idemKey: string }
  /** Every attempt failed without a decision. */
  | { kind: "failed"; status?: number; error?: ApiErrorBody; message: string; attempts: number; idemKey: string };

export const RESERVE_ATTEMPTS = 3;
export const RESERVE_BACKOFF_MS = 300;

export async function reserveWithRetry(
  request: Omit<ReserveRequest, "idemKey">,
  deps: ReserveDeps,
  options: ReserveOptions = {},
): Promise<ReserveResult> {
  const attempts = options.attempts ?? RESERVE_ATTEMPTS;
  const backoff = options.backoffMs ?? RESERVE_BACKOFF_MS;
  const maxWait = options.maxWaitMs ?? 5_000;
  const idemKey = (deps.newKey ?? (() => newIdemKey("reserve")))();
  const body: ReserveRequest = { ...request, idemKey };
  let last: Reply<HoldReply> = { kind: "network", message: "not sent" };
  for (let attempt = 1; attempt <= attempts; attempt++) {
    options.onAttempt?.({ phase: "sending", attempt });
    last = await call<HoldReply>(deps.fetch, "/api/inventory/reserve", {
      method: "POST",
      body,
      headers: { ...options.headers, "Idempotency-Key": idemKey },
      timeoutMs: options.timeoutMs ?? 10_000,
      signal: options.signal,
    });
    if (last.kind === "ok") {
      const replayed = last.headers.get("idempotent-replayed") === "true";
      return { kind: "done", hold: last.data, attempts: attempt, idemKey, replayed };
    }
    if (!retryable(last)) {
      const { status, error } = last as Extract<Reply<HoldReply>, { kind: "error" }>;
      return { kind: "rejected", status, error, attempts: attempt, idemKey };
    }
    const reason = last.kind === "network" ? `no answer (${last.message})` : `${last.status} ${last.error.code}`;
    if (attempt === attempts || options.signal?.aborted) {
      options.onAttempt?.({ phase: "failed", attempt, reason });
      break;
    }
    const wait = Math.min(maxWait, Math.max(backoff * attempt, retryAfterMs(last) ?? 0));
    options.onAttempt?.({ phase: "failed", attempt, reason, retryInMs: wait });
    await deps.sleep(wait);
  }
  if (last.kind === "network") {
    return { kind: "failed", message: `no answer from the service (${last.message})`, attempts, idemKey };
  }
  if (last.kind === "error") {
    return { kind: "failed", status: last.status, error: last.error, message: last.error.message, attempts, idemKey };
  }
  throw new Error("unreachable: a successful reply returns early");
}
