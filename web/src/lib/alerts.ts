// The alert rules of ops/prometheus/alerts.yml, evaluated on the scrapes
// this page took: an approximation of Prometheus, which evaluates every 15 s
// over its own scrapes and remembers more than this page has seen. A rule
// fires here when its condition held at every scrape for its `for` duration;
// a rule with a long `for` cannot fire until the page has watched that long.
import type { Point } from "./metrics";

export interface Rule {
  name: string;
  severity: "P0" | "P1" | "P2";
  summary: string;
  forMs: number;
  /** The value compared with the threshold, or null when the service exports no such series. */
  value: (p: Point) => number | null;
  threshold: number;
  unit: "s" | "ratio" | "count";
}

export const RULES: Rule[] = [
  {
    name: "InventoryReserveLatencyHigh",
    severity: "P1",
    summary: "reserve p95 above 120 ms for 5 minutes",
    forMs: 5 * 60_000,
    value: (p) => p.reserveP95,
    threshold: 0.12,
    unit: "s",
  },
  {
    name: "InventoryReserveErrorRateHigh",
    severity: "P1",
    summary: "reserve 5xx rate above 0.8% for 3 minutes",
    forMs: 3 * 60_000,
    value: (p) => p.errorRatio,
    threshold: 0.008,
    unit: "ratio",
  },
  {
    name: "InventoryOversellDetected",
    severity: "P0",
    summary: "an oversold stock row within the last minute",
    forMs: 0,
    value: (p) => p.oversold,
    threshold: 0,
    unit: "count",
  },
  {
    name: "InventoryReservationTimeoutBacklogHigh",
    severity: "P1",
    summary: "more than 2,000,000 expired holds not yet released",
    forMs: 0,
    value: (p) => p.timeoutBacklog,
    threshold: 2_000_000,
    unit: "count",
  },
  {
    name: "InventoryEventStreamLagHigh",
    severity: "P1",
    summary: "event-stream lag above 1,000,000 for 10 minutes",
    forMs: 10 * 60_000,
    value: (p) => p.eventLagEntries,
    threshold: 1_000_000,
    unit: "count",
  },
  {
    name: "InventoryTransferOverdue",
    severity: "P2",
    summary: "transfers overdue for 15 minutes",
    forMs: 15 * 60_000,
    value: (p) => p.transfersOverdue,
    threshold: 0,
    unit: "count",
  },
];

export type AlertState =
  | { state: "no-data" }
  | { state: "inactive"; value: number }
  | { state: "pending"; value: number; heldMs: number }
  | { state: "firing"; value: number; heldMs: number };

/** Where a rule stands at the newest point. NaN (no traffic) never holds, as in PromQL. */
export function evaluate(rule: Rule, points: Point[]): AlertState {
  const newest = points[points.length - 1];
  const value = newest ? rule.value(newest) : null;
  if (!newest || value === null) return { state: "no-data" };
  if (!(value > rule.threshold)) return { state: "inactive", value };
  let since = newest.at;
  for (let i = points.length - 1; i >= 0; i--) {
    const v = rule.value(points[i]!);
    if (v === null || !(v > rule.threshold)) break;
    since = points[i]!.at;
  }
  const heldMs = newest.at - since;
  return heldMs >= rule.forMs ? { state: "firing", value, heldMs } : { state: "pending", value, heldMs };
}
