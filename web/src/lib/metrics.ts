// The service's /metrics text (OpenMetrics), read in the browser and turned
// into the few series the Health page charts. Rates and quantiles are
// computed the way Prometheus computes rate() and histogram_quantile() over
// a window of the samples taken here.

export interface MetricSample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** One scrape: when it was taken and what it said. */
export interface Scrape {
  at: number;
  samples: MetricSample[];
}

const LINE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

export function parseMetrics(text: string): MetricSample[] {
  const out: MetricSample[] = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = LINE.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? "").matchAll(LABEL)) {
      labels[l[1]!] = l[2]!.replace(/\\"/g, '"').replace(/\\n/g, "\n").replace(/\\\\/g, "\\");
    }
    const raw = m[3]!;
    const value = raw === "+Inf" ? Infinity : raw === "-Inf" ? -Infinity : Number(raw);
    if (!Number.isNaN(value) || raw === "NaN") out.push({ name: m[1]!, labels, value });
  }
  return out;
}

type Filter = Record<string, string>;

function matches(s: MetricSample, name: string, filter: Filter): boolean {
  if (s.name !== name) return false;
  for (const [k, v] of Object.entries(filter)) if (s.labels[k] !== v) return false;
  return true;
}

/** The sum of the matching series, or null when there is none. */
export function sum(scrape: Scrape, name: string, filter: Filter = {}): number | null {
  let total: number | null = null;
  for (const s of scrape.samples) if (matches(s, name, filter)) total = (total ?? 0) + s.value;
  return total;
}

/** The largest matching value, or null. */
export function max(scrape: Scrape, name: string, filter: Filter = {}): number | null {
  let best: number | null = null;
  for (const s of scrape.samples) if (matches(s, name, filter)) best = best === null ? s.value : Math.max(best, s.value);
  return best;
}

/** The scrape to compare scrape `i` with for a window: the newest at least `windowMs` older, else the oldest. */
function windowStart(scrapes: Scrape[], i: number, windowMs: number): number {
  const at = scrapes[i]!.at;
  for (let j = i - 1; j >= 0; j--) if (at - scrapes[j]!.at >= windowMs) return j;
  return 0;
}

/** Increase of a counter (summed over matching series) between two scrapes; a drop is a restart. */
function increase(a: Scrape, b: Scrape, name: string, filter: Filter): number | null {
  const before = sum(a, name, filter);
  const after = sum(b, name, filter);
  if (after === null) return null;
  if (before === null || after < before) return after;
  return after - before;
}

/** Per-second rate of a counter over the window ending at scrape `i`; null without two scrapes. */
export function rate(scrapes: Scrape[], i: number, name: string, filter: Filter, windowMs: number): number | null {
  if (i <= 0) return null;
  const j = windowStart(scrapes, i, windowMs);
  const seconds = (scrapes[i]!.at - scrapes[j]!.at) / 1000;
  const inc = increase(scrapes[j]!, scrapes[i]!, name, filter);
  return inc === null || seconds <= 0 ? null : inc / seconds;
}

/** histogram_quantile(q, sum by (le) (rate(<name>_bucket{filter}[window]))); NaN when nothing was observed. */
export function quantile(
  scrapes: Scrape[],
  i: number,
  q: number,
  name: string,
  filter: Filter,
  windowMs: number,
): number | null {
  if (i <= 0) return null;
  const j = windowStart(scrapes, i, windowMs);
  const bucket = `${name}_bucket`;
  const les = new Set<string>();
  for (const s of scrapes[i]!.samples) if (matches(s, bucket, filter) && s.labels.le) les.add(s.labels.le);
  if (les.size === 0) return null;
  const buckets = [...les]
    .map((le) => ({ le: le === "+Inf" ? Infinity : Number(le), count: increase(scrapes[j]!, scrapes[i]!, bucket, { ...filter, le }) ?? 0 }))
    .sort((a, b) => a.le - b.le);
  const total = buckets[buckets.length - 1]!.count;
  if (total <= 0) return NaN;
  const rank = q * total;
  let lowerLe = 0;
  let lowerCount = 0;
  for (const b of buckets) {
    if (b.count >= rank) {
      if (b.le === Infinity) return lowerLe;
      if (b.count === lowerCount) return b.le;
      return lowerLe + ((b.le - lowerLe) * (rank - lowerCount)) / (b.count - lowerCount);
    }
    lowerLe = b.le;
    lowerCount = b.count;
  }
  return lowerLe;
}

/** What the Health page shows at one scrape. */
export interface Point {
  at: number;
  reserveRate: number | null;
  /** Seconds. */
  reserveP95: number | null;
  /** 5xx share of reserves (0..1); NaN without reserves. */
  errorRatio: number | null;
  timeoutBacklog: number | null;
  eventLagEntries: number | null;
  postgresLagSeconds: number | null;
  postgresLagRecords: number | null;
  queueDepth: number | null;
  readQueueDepth: number | null;
  /** Oversold rows seen within the last minute (max of the gauge, or the counter's increase). */
  oversold: number | null;
  transfersOverdue: number | null;
}

export const WINDOW_MS = 60_000;

export function point(scrapes: Scrape[], i: number): Point {
  const s = scrapes[i]!;
  const reserve = { endpoint: "reserve" };
  const total = rate(scrapes, i, "inventory_http_requests_total", reserve, WINDOW_MS);
  const errors = rate(scrapes, i, "inventory_http_requests_total", { ...reserve, outcome: "error" }, WINDOW_MS);
  let oversold: number | null = null;
  const j = windowStart(scrapes, i, WINDOW_MS);
  for (let k = j; k <= i; k++) {
    const rows = sum(scrapes[k]!, "inventory_oversell_rows");
    if (rows !== null) oversold = Math.max(oversold ?? 0, rows);
  }
  const found = i > 0 ? increase(scrapes[j]!, s, "inventory_oversell_detected_total", {}) : null;
  if (found !== null) oversold = Math.max(oversold ?? 0, found);
  return {
    at: s.at,
    reserveRate: total,
    reserveP95: quantile(scrapes, i, 0.95, "inventory_http_request_duration_seconds", reserve, WINDOW_MS),
    errorRatio: total === null ? null : total > 0 ? (errors ?? 0) / total : NaN,
    timeoutBacklog: sum(s, "inventory_reservation_timeout_backlog"),
    eventLagEntries: sum(s, "inventory_event_stream_lag_entries"),
    postgresLagSeconds: max(s, "inventory_persistence_lag_seconds"),
    postgresLagRecords: sum(s, "inventory_persistence_lag_records"),
    queueDepth: sum(s, "inventory_shard_queue_depth"),
    readQueueDepth: sum(s, "inventory_shard_read_queue_depth"),
    oversold,
    transfersOverdue: sum(s, "inventory_transfers_overdue"),
  };
}
