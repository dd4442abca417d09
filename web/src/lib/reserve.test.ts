import { describe, expect, it } from "vitest";
import { reserveWithRetry, type AttemptEvent } from "./reserve";
import type { FetchLike } from "./http";

type Step = { status: number; body: unknown; headers?: Record<string, string> } | "network";

/** A fetch that answers the scripted steps in order and records each request. */
function scripted(steps: Step[]) {
  const requests: { url: string; key: string | null; body: Record<string, unknown> }[] = [];
  const fetch: FetchLike = async (url, init) => {
    const headers = new Headers(init?.headers);
    requests.push({ url, key: headers.get("Idempotency-Key"), body: JSON.parse(String(init?.body)) });
    const step = steps.shift();
    if (!step) throw new Error("more requests than scripted");
    if (step === "network") throw new TypeError("Failed to fetch");
    return new Response(JSON.stringify(step.body), { status: step.status, headers: step.headers });
  };
  return { fetch, requests };
}

const hold = { reservationId: "rsv-0-1", status: "RESERVED", expireAt: "2026-11-24T19:30:04.064Z" };
const order = { orderId: "o-1", skuId: "sku-1", qty: 2 };

function deps(fetch: FetchLike) {
  const sleeps: number[] = [];
  let n = 0;
  return {
    sleeps,
    deps: { fetch, sleep: async (ms: number) => void sleeps.push(ms), newKey: () => `console:reserve:k${++n}` },
  };
}

describe("reserveWithRetry", () => {
  it("answers the first success without retrying", async () => {
    const { fetch, requests } = scripted([{ status: 200, body: hold }]);
    const { deps: d, sleeps } = deps(fetch);
    const r = await reserveWithRetry(order, d);
    expect(r).toEqual({ kind: "done", hold, attempts: 1, idemKey: "console:reserve:k1", replayed: false });
    expect(requests).toHaveLength(1);
    expect(requests[0]!.body).toEqual({ ...order, idemKey: "console:reserve:k1" });
    expect(sleeps).toEqual([]);
  });

  it("retries network failures, 5xx and 429 with one key for every attempt", async () => {
    const { fetch, requests } = scripted([
      "network",
      { status: 503, body: { code: "OVERLOADED", message: "full" }, headers: { "Retry-After": "1" } },
      { status: 200, body: hold, headers: { "idempotent-replayed": "true" } },
    ]);
    const { deps: d, sleeps } = deps(fetch);
    const events: AttemptEvent[] = [];
    const r = await reserveWithRetry(order, d, { onAttempt: (e) => events.push(e) });
    expect(r.kind).toBe("done");
    expect(r.attempts).toBe(3);
    expect(r.kind === "done" && r.replayed).toBe(true);
    const keys = new Set(requests.map((q) => q.key));
    expect(keys).toEqual(new Set(["console:reserve:k1"]));
    expect(new Set(requests.map((q) => q.body.idemKey))).toEqual(keys);
    // Backoff 300 ms, then the answer's Retry-After (1 s) as it is longer than 600 ms.
    expect(sleeps).toEqual([300, 1000]);
    expect(events.map((e) => e.phase)).toEqual(["sending", "failed", "sending", "failed", "sending"]);
  });

  it("retries 429 and gives up after three attempts", async () => {
    const limited = { status: 429, body: { code: "RATE_LIMITED", message: "slow down" } };
    const { fetch, requests } = scripted([limited, limited, limited]);
    const { deps: d } = deps(fetch);
    const r = await reserveWithRetry(order, d);
    expect(r).toMatchObject({ kind: "failed", status: 429, attempts: 3, error: { code: "RATE_LIMITED" } });
    expect(requests).toHaveLength(3);
  });

  it("never retries a 4xx decision", async () => {
    for (const [status, code] of [
      [409, "INSUFFICIENT_STOCK"],
      [409, "SKU_FROZEN"],
      [404, "SKU_NOT_FOUND"],
      [400, "INVALID_FIELD"],
      [403, "FORBIDDEN"],
      [422, "IDEMPOTENCY_KEY_REUSED"],
    ] as const) {
      const { fetch, requests } = scripted([{ status, body: { code, message: "no", available: 1 } }]);
      const { deps: d, sleeps } = deps(fetch);
      const r = await reserveWithRetry(order, d);
      expect(r).toMatchObject({ kind: "rejected", status, attempts: 1, error: { code } });
      expect(requests).toHaveLength(1);
      expect(sleeps).toEqual([]);
    }
  });

  it("a new submit gets a new key", async () => {
    const { fetch, requests } = scripted([{ status: 200, body: hold }, { status: 200, body: hold }]);
    const { deps: d } = deps(fetch);
    await reserveWithRetry(order, d);
    await reserveWithRetry(order, d);
    expect(requests.map((q) => q.key)).toEqual(["console:reserve:k1", "console:reserve:k2"]);
  });

  it("reports a network failure on every attempt as failed, not rejected", async () => {
    const { fetch } = scripted(["network", "network", "network"]);
    const { deps: d, sleeps } = deps(fetch);
    const r = await reserveWithRetry(order, d);
    expect(r.kind).toBe("failed");
    expect(r.attempts).toBe(3);
    expect(sleeps).toEqual([300, 600]);
  });
});
