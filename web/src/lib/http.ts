// One way to call the service: JSON in and out, the caller's credentials on
// every request, and the three ways a call ends kept apart (an answer, an
// error answer, no answer at all).
import type { ApiErrorBody } from "../api/types";

export type FetchLike = (input: string, init?: RequestInit) => Promise<Response>;

/** Headers that say who calls: a bearer token, or an operator name when the service runs without authentication. */
export interface Credentials {
  token?: string | null;
  operator?: string | null;
}

export function credentialHeaders(c: Credentials): Record<string, string> {
  const headers: Record<string, string> = {};
  if (c.token) headers["Authorization"] = `Bearer ${c.token}`;
  else if (c.operator) headers["X-Operator"] = c.operator;
  return headers;
}

export type Reply<T> =
  | { kind: "ok"; status: number; data: T; headers: Headers }
  | { kind: "error"; status: number; error: ApiErrorBody; headers: Headers }
  | { kind: "network"; message: string };

export interface CallOptions {
  method?: "GET" | "POST" | "PUT" | "DELETE";
  body?: unknown;
  headers?: Record<string, string>;
  /** Give up (as a network failure) after this long. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

/** Calls the service once. Never throws for a failed call: the reply says how it failed. */
export async function call<T>(fetchFn: FetchLike, path: string, options: CallOptions = {}): Promise<Reply<T>> {
  const headers: Record<string, string> = { Accept: "application/json", ...options.headers };
  let body: string | undefined;
  if (options.body !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(options.body);
  }
  const controller = new AbortController();
  const onAbort = () => controller.abort();
  options.signal?.addEventListener("abort", onAbort);
  const timer = options.timeoutMs ? setTimeout(() => controller.abort(), options.timeoutMs) : undefined;
  let response: Response;
  try {
    response = await fetchFn(path, { method: options.method ?? "GET", headers, body, signal: controller.signal });
  } catch (e) {
    const timedOut = controller.signal.aborted && !options.signal?.aborted;
    return { kind: "network", message: timedOut ? "no answer in time" : errorText(e) };
  } finally {
    if (timer) clearTimeout(timer);
    options.signal?.removeEventListener("abort", onAbort);
  }
  const text = await response.text().catch(() => "");
  let parsed: unknown = undefined;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    parsed = undefined;
  }
  if (response.ok) {
    return { kind: "ok", status: response.status, data: parsed as T, headers: response.headers };
  }
  const error = isErrorBody(parsed)
    ? parsed
    : { code: `HTTP_${response.status}`, message: text.slice(0, 200) || response.statusText || "no message" };
  return { kind: "error", status: response.status, error, headers: response.headers };
}

function isErrorBody(v: unknown): v is ApiErrorBody {
  return typeof v === "object" && v !== null && typeof (v as ApiErrorBody).code === "string";
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message || e.name : String(e);
}

/** A fresh idempotency key: `console:<action>:<random>` (no `|`, which tenants reserve). */
export function newIdemKey(action: string, random: () => string = () => crypto.randomUUID()): string {
  return `console:${action}:${random()}`;
}

/** Whether a failed call may be tried again: no answer, a 5xx, or 429. Any other 4xx is a decision. */
export function retryable(reply: Reply<unknown>): boolean {
  if (reply.kind === "network") return true;
  if (reply.kind === "error") return reply.status >= 500 || reply.status === 429;
  return false;
}

/** `Retry-After` in milliseconds, if the answer has one. */
export function retryAfterMs(reply: Reply<unknown>): number | undefined {
  if (reply.kind === "network") return undefined;
  const v = reply.headers.get("Retry-After");
  const seconds = v === null ? NaN : Number(v);
  return Number.isFinite(seconds) && seconds >= 0 ? seconds * 1000 : undefined;
}
