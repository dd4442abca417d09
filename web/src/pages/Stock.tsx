// Stock of one SKU, per warehouse, refreshed every few seconds; recently
// looked-up SKUs are kept in this browser.
import { useEffect, useState, type FormEvent } from "react";
import type { Policy, Stock } from "../api/types";
import { Badge, Field, Loading, ReplyError, Section, clock, time } from "../components/ui";
import type { Reply } from "../lib/http";
import { href } from "../lib/route";
import { describePolicy, type WindowState } from "../lib/policy";
import { useSession } from "../lib/session";

const RECENT_KEY = "inventory-console.recent-skus";
const RECENT_MAX = 8;
export const STOCK_REFRESH_MS = 3_000;

function loadRecent(): string[] {
  try {
    const v: unknown = JSON.parse(localStorage.getItem(RECENT_KEY) ?? "[]");
    return Array.isArray(v) ? v.filter((s): s is string => typeof s === "string").slice(0, RECENT_MAX) : [];
  } catch {
    return [];
  }
}

function remember(sku: string, recent: string[]): string[] {
  const next = [sku, ...recent.filter((s) => s !== sku)].slice(0, RECENT_MAX);
  try {
    localStorage.setItem(RECENT_KEY, JSON.stringify(next));
  } catch {
    // Not kept beyond this page.
  }
  return next;
}

export function StockPage({ sku: routeSku }: { sku?: string }) {
  const session = useSession();
  const [input, setInput] = useState(routeSku ?? "");
  const [sku, setSku] = useState(routeSku ?? "");
  const [recent, setRecent] = useState(loadRecent);
  const [reply, setReply] = useState<Reply<Stock> | null>(null);
  const [at, setAt] = useState(0);

  useEffect(() => {
    if (routeSku) {
      setInput(routeSku);
      setSku(routeSku);
    }
  }, [routeSku]);

  useEffect(() => {
    if (!sku) return;
    let stopped = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    setReply(null);
    const load = async () => {
      const r = await session.api<Stock>(`/api/inventory/${encodeURIComponent(sku)}`, { timeoutMs: 2_500 });
      if (stopped) return;
      setReply(r);
      setAt(Date.now());
      if (r.kind === "ok") setRecent((rec) => remember(sku, rec));
      timer = setTimeout(load, STOCK_REFRESH_MS);
    };
    void load();
    return () => {
      stopped = true;
      if (timer) clearTimeout(timer);
    };
  }, [sku, session]);

  const submit = (e: FormEvent) => {
    e.preventDefault();
    const v = input.trim();
    if (v) window.location.hash = href("stock", v);
  };

  return (
    <>
      <Section title="Look up an SKU">
        <form className="row" onSubmit={submit} role="search">
          <Field label="SKU" value={input} onChange={setInput} required list="recent-skus" name="sku" />
          <datalist id="recent-skus">
            {recent.map((s) => (
              <option key={s} value={s} />
            ))}
          </datalist>
          <button type="submit">Show stock</button>
        </form>
        {recent.length > 0 && (
          <nav aria-label="Recent SKUs" className="chips">
            <span className="muted">Recent:</span>
            {recent.map((s) => (
              <a key={s} href={href("stock", s)} className="chip" aria-current={s === sku ? "true" : undefined}>
                {s}
              </a>
            ))}
          </nav>
        )}
      </Section>
      {!sku && <p className="muted">Enter an SKU to see its stock per warehouse.</p>}
      {sku && !reply && <Loading what={`stock of ${sku}`} />}
      {sku && reply && reply.kind !== "ok" && <ReplyError reply={reply} title={`Stock of ${sku}`} />}
      {sku && reply?.kind === "ok" && <StockView stock={reply.data} at={at} />}
    </>
  );
}

function StockView({ stock, at }: { stock: Stock; at: number }) {
  const anyFrozen = stock.warehouses.some((w) => w.frozen);
  return (
    <Section
      title={`Stock of ${stock.skuId}`}
      actions={
        <span className="muted" aria-live="polite">
          refreshed {clock(at)}
        </span>
      }
    >
      <dl className="totals">
        <div>
          <dt>Available</dt>
          <dd>{stock.available}</dd>
        </div>
        <div>
          <dt>Reserved</dt>
          <dd>{stock.reserved}</dd>
        </div>
        <div>
          <dt>Sold</dt>
          <dd>{stock.sold}</dd>
        </div>
        <div>
          <dt>In transit</dt>
          <dd>{stock.inTransit}</dd>
        </div>
        <div>
          <dt>State</dt>
          <dd>
            {stock.frozen ? (
              <Badge tone="bad">frozen</Badge>
            ) : anyFrozen ? (
              <Badge tone="warn">partly frozen</Badge>
            ) : (
              <Badge tone="ok">on sale</Badge>
            )}
          </dd>
        </div>
      </dl>
      <div className="table-wrap">
        <table className="stack">
          <caption className="sr-only">Stock of {stock.skuId} per warehouse</caption>
          <thead>
            <tr>
              <th scope="col">Warehouse</th>
              <th scope="col" className="num">
                Available
              </th>
              <th scope="col" className="num">
                Reserved
              </th>
              <th scope="col" className="num">
                Sold
              </th>
              <th scope="col" className="num">
                In transit
              </th>
              <th scope="col">Frozen</th>
              <th scope="col">Updated</th>
            </tr>
          </thead>
          <tbody>
            {stock.warehouses.map((w) => (
              <tr key={w.warehouseId}>
                <th scope="row" data-label="Warehouse">
                  {w.warehouseId}
                </th>
                <td className="num" data-label="Available">
                  {w.available}
                </td>
                <td className="num" data-label="Reserved">
                  {w.reserved}
                </td>
                <td className="num" data-label="Sold">
                  {w.sold}
                </td>
                <td className="num" data-label="In transit">
                  {w.inTransit}
                </td>
                <td data-label="Frozen">{w.frozen ? <Badge tone="bad">frozen</Badge> : "no"}</td>
                <td data-label="Updated">{time(w.updatedAt)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {stock.policy ? <PolicyView policy={stock.policy} at={at} /> : <p className="muted">No sale policy: any buyer, any channel, any time.</p>}
    </Section>
  );
}

const WINDOW_TONE: Record<WindowState, "ok" | "warn" | "bad" | "info"> = {
  always: "ok",
  open: "ok",
  "not started": "warn",
  ended: "bad",
};

/** The SKU's sale policy and what it counted. */
function PolicyView({ policy, at }: { policy: Policy; at: number }) {
  const v = describePolicy(policy, at, time);
  return (
    <div className="policy" data-testid="policy">
      <h3>Sale policy</h3>
      <dl className="kv">
        <div>
          <dt>Limit</dt>
          <dd data-testid="policy-limit">{v.limit}</dd>
        </div>
        <div>
          <dt>Sale window</dt>
          <dd data-testid="policy-window">
            {v.windowText} <Badge tone={WINDOW_TONE[v.window]}>{v.window === "always" ? "no window" : v.window}</Badge>
          </dd>
        </div>
        <div>
          <dt>Buyers</dt>
          <dd data-testid="policy-buyers">
            {v.buyersCounted ? `${v.buyers} holding or having bought units` : "not counted (no limit per buyer)"}
          </dd>
        </div>
      </dl>
      {v.channels.length === 0 ? (
        <p className="muted">No channel quotas: reserves from any channel, or none.</p>
      ) : (
        <div className="table-wrap">
          <table className="stack" aria-label="Channel quotas">
            <thead>
              <tr>
                <th scope="col">Channel</th>
                <th scope="col" className="num">
                  Quota
                </th>
                <th scope="col" className="num">
                  Used
                </th>
                <th scope="col" className="num">
                  Left
                </th>
              </tr>
            </thead>
            <tbody>
              {v.channels.map((c) => (
                <tr key={c.channel}>
                  <th scope="row" data-label="Channel">
                    {c.channel}
                  </th>
                  <td className="num" data-label="Quota">
                    {c.quota ?? "none"}
                  </td>
                  <td className="num" data-label="Used">
                    {c.used}
                  </td>
                  <td className="num" data-label="Left">
                    {c.left === null ? "" : c.left === 0 ? <Badge tone="bad">0</Badge> : c.left}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </div>
  );
}
