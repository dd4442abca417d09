// The service's health over the last minutes, from its /metrics read every
// 5 s by this page, and which alert rules would be firing.
import { useEffect, useRef, useState } from "react";
import { Badge, ReplyError, Section, clock } from "../components/ui";
import { Sparkline } from "../components/Sparkline";
import { evaluate, RULES, type AlertState } from "../lib/alerts";
import type { Reply } from "../lib/http";
import { parseMetrics, point, type Point, type Scrape } from "../lib/metrics";
import { useSession } from "../lib/session";

export const SCRAPE_MS = 5_000;
/** Kept: 20 minutes of scrapes. */
const KEEP_MS = 20 * 60_000;

const ms = (v: number) => `${(v * 1000).toFixed(v < 0.01 ? 2 : 0)} ms`;
const perSecond = (v: number) => `${v < 10 ? v.toFixed(1) : Math.round(v).toLocaleString()} /s`;
const percent = (v: number) => `${(v * 100).toFixed(2)} %`;
const count = (v: number) => Math.round(v).toLocaleString();
const seconds = (v: number) => `${v.toFixed(1)} s`;

export function HealthPage() {
  const session = useSession();
  const scrapes = useRef<Scrape[]>([]);
  const [points, setPoints] = useState<Point[]>([]);
  const [failure, setFailure] = useState<Reply<unknown> | null>(null);

  useEffect(() => {
    let stopped = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const scrape = async () => {
      const controller = new AbortController();
      const t = setTimeout(() => controller.abort(), 4_000);
      let reply: Reply<unknown> | null = null;
      try {
        const response = await fetch("/metrics", { headers: session.headers(), signal: controller.signal });
        const text = await response.text();
        if (response.ok) {
          const now = Date.now();
          const kept = scrapes.current.filter((s) => now - s.at <= KEEP_MS);
          kept.push({ at: now, samples: parseMetrics(text) });
          scrapes.current = kept;
          if (!stopped) setPoints(kept.map((_, i) => point(kept, i)));
        } else {
          let error = { code: `HTTP_${response.status}`, message: text.slice(0, 200) };
          try {
            error = JSON.parse(text);
          } catch {
            // Not JSON: keep the text.
          }
          reply = { kind: "error", status: response.status, error, headers: response.headers };
        }
      } catch (e) {
        reply = { kind: "network", message: e instanceof Error ? e.message : String(e) };
      } finally {
        clearTimeout(t);
      }
      if (stopped) return;
      setFailure(reply);
      timer = setTimeout(scrape, SCRAPE_MS);
    };
    void scrape();
    return () => {
      stopped = true;
      if (timer) clearTimeout(timer);
    };
  }, [session]);

  const series = (pick: (p: Point) => number | null) => points.map((p) => ({ at: p.at, value: pick(p) }));
  const last = points[points.length - 1];
  return (
    <>
      <Section
        title="The last minutes"
        actions={<span className="muted">{last ? `sampled ${clock(last.at)}, every ${SCRAPE_MS / 1000} s` : "sampling…"}</span>}
      >
        {failure && <ReplyError reply={failure} title="/metrics" />}
        <div className="charts">
          <Sparkline title="Reserve rate" points={series((p) => p.reserveRate)} format={perSecond} />
          <Sparkline title="Reserve p95 (1 min)" points={series((p) => p.reserveP95)} format={ms} threshold={0.12} />
          <Sparkline title="Reserve 5xx rate" points={series((p) => p.errorRatio)} format={percent} threshold={0.008} />
          <Sparkline title="Timeout backlog" points={series((p) => p.timeoutBacklog)} format={count} />
          <Sparkline
            title="PostgreSQL lag"
            points={series((p) => p.postgresLagSeconds)}
            format={seconds}
            empty="no PostgreSQL configured"
          />
          <Sparkline
            title="Event stream lag (entries)"
            points={series((p) => p.eventLagEntries)}
            format={count}
            empty="no event relay configured"
          />
          <Sparkline title="Write queue depth" points={series((p) => p.queueDepth)} format={count} />
          <Sparkline title="Read queue depth" points={series((p) => p.readQueueDepth)} format={count} />
        </div>
      </Section>
      <Section title="Alert rules">
        <p className="muted">
          An approximation of the Prometheus rules in ops/prometheus/alerts.yml, evaluated on what this page sampled since it
          opened: a rule with a duration fires here only after its condition held at every sample for that long.
          Prometheus, which keeps history, is the authority.
        </p>
        <div className="table-wrap">
          <table>
            <thead>
              <tr>
                <th scope="col">Rule</th>
                <th scope="col">Severity</th>
                <th scope="col">Condition</th>
                <th scope="col">State</th>
              </tr>
            </thead>
            <tbody>
              {RULES.map((rule) => (
                <tr key={rule.name}>
                  <th scope="row">{rule.name}</th>
                  <td>{rule.severity}</td>
                  <td>{rule.summary}</td>
                  <td>
                    <StateCell state={evaluate(rule, points)} forMs={rule.forMs} unit={rule.unit} />
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      </Section>
    </>
  );
}

function StateCell({ state, forMs, unit }: { state: AlertState; forMs: number; unit: "s" | "ratio" | "count" }) {
  const show = (v: number) => (Number.isNaN(v) ? "no traffic" : unit === "s" ? ms(v) : unit === "ratio" ? percent(v) : count(v));
  switch (state.state) {
    case "no-data":
      return <Badge tone="info">no data</Badge>;
    case "inactive":
      return (
        <>
          <Badge tone="ok">ok</Badge> <span className="muted">{show(state.value)}</span>
        </>
      );
    case "pending":
      return (
        <>
          <Badge tone="warn">pending</Badge>{" "}
          <span className="muted">
            {show(state.value)}, held {Math.round(state.heldMs / 1000)} s of {forMs / 1000} s
          </span>
        </>
      );
    case "firing":
      return (
        <>
          <Badge tone="bad">firing</Badge> <span className="muted">{show(state.value)}</span>
        </>
      );
  }
}
