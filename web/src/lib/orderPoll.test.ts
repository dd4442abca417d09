import { describe, expect, it } from "vitest";
import { fetchOrder, pollOrder, type OrderView } from "./orderPoll";
import type { FetchLike } from "./http";

const primaryBody = { orderId: "o-1", reservations: [] };
const readModelBody = { orderId: "o-1", reservations: [], stale: true, lagMs: 1500, lagRecords: 3 };

/** A fake clock whose timers run when the test says. */
function fakeTimers() {
  let now = 0;
  const timers: { at: number; fn: () => void; id: number }[] = [];
  let next = 1;
  return {
    setTimeout: (fn: () => void, ms: number) => {
      const id = next++;
      timers.push({ at: now + ms, fn, id });
      return id;
    },
    clearTimeout: (id: unknown) => {
      const i = timers.findIndex((t) => t.id === id);
      if (i >= 0) timers.splice(i, 1);
    },
    now: () => now,
    pending: () => timers.length,
    /** Runs the next timer, after moving the clock to it. */
    async tick() {
      timers.sort((a, b) => a.at - b.at);
      const t = timers.shift();
      if (!t) throw new Error("no timer");
      now = t.at;
      t.fn();
      await flush();
    },
  };
}

async function flush() {
  for (let i = 0; i < 20; i++) await Promise.resolve();
  await new Promise((r) => setImmediate(r));
}

/** A service whose primary can be broken: "ok", a status, or "network". */
function service() {
  const state = { primary: "ok" as "ok" | number | "network", readModel: "ok" as "ok" | number | "network" };
  const calls: string[] = [];
  const answer = (mode: "ok" | number | "network", body: unknown) => {
    if (mode === "network") throw new TypeError("Failed to fetch");
    if (mode === "ok") return new Response(JSON.stringify(body), { status: 200 });
    return new Response(JSON.stringify({ code: mode === 429 ? "RATE_LIMITED" : "OVERLOADED", message: "x" }), {
      status: mode,
    });
  };
  const fetch: FetchLike = async (url) => {
    calls.push(url.startsWith("/api/read-model/") ? "read-model" : "primary");
    return url.startsWith("/api/read-model/") ? answer(state.readModel, readModelBody) : answer(state.primary, primaryBody);
  };
  return { state, calls, fetch };
}

describe("fetchOrder", () => {
  it("uses the primary while it answers", async () => {
    const s = service();
    const v = await fetchOrder("o-1", { fetch: s.fetch, now: () => 7 });
    expect(v).toEqual({ state: "done", source: "primary", degraded: false, order: primaryBody, at: 7 });
    expect(s.calls).toEqual(["primary"]);
  });

  it.each([["network" as const], [503], [500], [429]])("falls back to the read model on %s", async (mode) => {
    const s = service();
    s.state.primary = mode;
    const v = await fetchOrder("o-1", { fetch: s.fetch, now: () => 7 });
    expect(v).toMatchObject({ state: "done", source: "read-model", degraded: true, order: readModelBody });
    expect(s.calls).toEqual(["primary", "read-model"]);
  });

  it("does not fall back on a 4xx decision", async () => {
    const s = service();
    s.state.primary = 403;
    const v = await fetchOrder("o-1", { fetch: s.fetch, now: () => 7 });
    expect(v.state).toBe("error");
    expect(s.calls).toEqual(["primary"]);
  });

  it("is an error when both fail, keeping the last answer", async () => {
    const s = service();
    s.state.primary = "network";
    s.state.readModel = 503;
    const last = { state: "done", source: "primary", degraded: false, order: primaryBody, at: 1 } as const;
    const v = await fetchOrder("o-1", { fetch: s.fetch, now: () => 7 }, {}, last);
    expect(v).toMatchObject({ state: "error", last, error: { code: "OVERLOADED" } });
    expect(v.state === "error" && v.message).toContain("read model: 503 OVERLOADED");
  });

  it("escapes the order id in the path", async () => {
    const urls: string[] = [];
    const fetch: FetchLike = async (url) => {
      urls.push(url);
      return new Response(JSON.stringify(primaryBody));
    };
    await fetchOrder("a/b c", { fetch, now: () => 0 });
    expect(urls).toEqual(["/api/orders/a%2Fb%20c/inventory-status"]);
  });
});

describe("pollOrder", () => {
  it("polls every 3 s, degrades while the primary fails and returns when it recovers", async () => {
    const s = service();
    const t = fakeTimers();
    const views: OrderView[] = [];
    const stop = pollOrder("o-1", { fetch: s.fetch, ...t }, (v) => views.push(v));
    await flush();
    expect(views.map((v) => v.state)).toEqual(["loading", "done"]);
    expect(views[1]).toMatchObject({ source: "primary", degraded: false });

    s.state.primary = 503;
    await t.tick();
    expect(t.now()).toBe(3000);
    expect(views[2]).toMatchObject({ source: "read-model", degraded: true, primaryProblem: "503 OVERLOADED" });

    s.state.primary = "network";
    await t.tick();
    expect(views[3]).toMatchObject({ source: "read-model", degraded: true });

    s.state.primary = "ok";
    await t.tick();
    expect(t.now()).toBe(9000);
    expect(views[4]).toMatchObject({ source: "primary", degraded: false });
    expect(s.calls).toEqual(["primary", "primary", "read-model", "primary", "read-model", "primary"]);

    stop();
    expect(t.pending()).toBe(0);
  });

  it("stops cleanly while a round is in flight", async () => {
    const s = service();
    const t = fakeTimers();
    const views: OrderView[] = [];
    const stop = pollOrder("o-1", { fetch: s.fetch, ...t }, (v) => views.push(v));
    stop();
    await flush();
    expect(views.map((v) => v.state)).toEqual(["loading"]);
    expect(t.pending()).toBe(0);
  });
});
