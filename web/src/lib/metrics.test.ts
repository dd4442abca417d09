import { describe, expect, it } from "vitest";
import { parseMetrics, point, quantile, rate, type Scrape } from "./metrics";
import { evaluate, RULES } from "./alerts";

function scrape(at: number, lines: string[]): Scrape {
  return { at, samples: parseMetrics(lines.join("\n")) };
}

/** Reserve counters and latency buckets as inventoryd renders them. */
function reserveScrape(at: number, ok: number, errors: number, fast: number, slow: number): Scrape {
  return scrape(at, [
    "# TYPE inventory_http_requests counter",
    `inventory_http_requests_total{endpoint="reserve",code="OK",outcome="ok"} ${ok}`,
    `inventory_http_requests_total{endpoint="reserve",code="OVERLOADED",outcome="error"} ${errors}`,
    `inventory_http_requests_total{endpoint="stock",code="OK",outcome="ok"} 999`,
    `inventory_http_request_duration_seconds_bucket{le="0.005",endpoint="reserve",outcome="ok"} ${fast}`,
    `inventory_http_request_duration_seconds_bucket{le="0.12",endpoint="reserve",outcome="ok"} ${fast}`,
    `inventory_http_request_duration_seconds_bucket{le="0.25",endpoint="reserve",outcome="ok"} ${fast + slow}`,
    `inventory_http_request_duration_seconds_bucket{le="+Inf",endpoint="reserve",outcome="ok"} ${fast + slow}`,
    'inventory_reservation_timeout_backlog{shard="0"} 2',
    'inventory_reservation_timeout_backlog{shard="1"} 3',
    "# EOF",
  ]);
}

describe("parseMetrics", () => {
  it("reads names, labels and values, skipping comments", () => {
    const s = parseMetrics('# HELP x y\na_total{k="v\\"q",z="1"} 4.5\nb 7\nc{le="+Inf"} +Inf\n# EOF\n');
    expect(s).toEqual([
      { name: "a_total", labels: { k: 'v"q', z: "1" }, value: 4.5 },
      { name: "b", labels: {}, value: 7 },
      { name: "c", labels: { le: "+Inf" }, value: Infinity },
    ]);
  });
});

describe("rates and quantiles", () => {
  it("computes the reserve rate, error ratio and p95 over a minute", () => {
    const scrapes = [reserveScrape(0, 0, 0, 0, 0), reserveScrape(30_000, 100, 0, 100, 0), reserveScrape(60_000, 190, 10, 180, 10)];
    expect(rate(scrapes, 2, "inventory_http_requests_total", { endpoint: "reserve" }, 60_000)).toBeCloseTo(200 / 60);
    const p = point(scrapes, 2);
    expect(p.errorRatio).toBeCloseTo(10 / 200);
    expect(p.timeoutBacklog).toBe(5);
    // 190 observations: 95% is rank 180.5, in the 0.12..0.25 bucket (180 below it, 10 in it).
    expect(p.reserveP95).toBeCloseTo(0.12 + (0.13 * 0.5) / 10);
    expect(quantile(scrapes, 1, 0.5, "inventory_http_request_duration_seconds", { endpoint: "reserve" }, 60_000)).toBeCloseTo(0.0025);
  });

  it("says NaN without reserves, and treats a counter drop as a restart", () => {
    const idle = [reserveScrape(0, 5, 0, 5, 0), reserveScrape(15_000, 5, 0, 5, 0)];
    expect(point(idle, 1).errorRatio).toBeNaN();
    expect(point(idle, 1).reserveP95).toBeNaN();
    const restarted = [reserveScrape(0, 500, 0, 500, 0), reserveScrape(10_000, 20, 0, 20, 0)];
    expect(rate(restarted, 1, "inventory_http_requests_total", { endpoint: "reserve" }, 60_000)).toBeCloseTo(2);
  });
});

describe("alert rules", () => {
  const latency = RULES.find((r) => r.name === "InventoryReserveLatencyHigh")!;
  const backlog = RULES.find((r) => r.name === "InventoryReservationTimeoutBacklogHigh")!;

  function slowPoints(minutes: number) {
    const scrapes: Scrape[] = [];
    for (let i = 0; i <= minutes * 4; i++) scrapes.push(reserveScrape(i * 15_000, i * 10, 0, 0, i * 10));
    return scrapes.map((_, i) => point(scrapes, i));
  }

  it("is pending until the condition held for its duration, then firing", () => {
    expect(evaluate(latency, slowPoints(3))).toMatchObject({ state: "pending" });
    expect(evaluate(latency, slowPoints(6))).toMatchObject({ state: "firing" });
  });

  it("fires at once without a duration, and says when there is no data", () => {
    expect(evaluate(backlog, [{ ...slowPoints(0)[0]!, timeoutBacklog: 2_000_001 }])).toMatchObject({ state: "firing" });
    expect(evaluate(backlog, [{ ...slowPoints(0)[0]!, timeoutBacklog: 5 }])).toEqual({ state: "inactive", value: 5 });
    expect(evaluate(backlog, [])).toEqual({ state: "no-data" });
    const events = RULES.find((r) => r.name === "InventoryEventStreamLagHigh")!;
    expect(evaluate(events, slowPoints(1))).toEqual({ state: "no-data" });
  });
});
