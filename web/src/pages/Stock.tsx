// Stock of one SKU, per warehouse, refreshed every few seconds; recently
// looked-up SKUs are kept in this browser.
import { useEffect, useState, type FormEvent } from "react";
import type { Stock } from "../api/types";
import { Badge, Field, Loading, ReplyError, Section, clock, time } from "../components/ui";
import type { Reply } from "../lib/http";
import { href } from "../lib/route";
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
      {stock.policy != null && (
        <div className="policy">
          <h3>Policy</h3>
          <dl className="kv">
            {Object.entries(stock.policy).map(([k, v]) => (
              <div key={k}>
                <dt>{k}</dt>
                <dd>{typeof v === "object" ? JSON.stringify(v) : String(v)}</dd>
              </div>
            ))}
          </dl>
        </div>
      )}
    </Section>
  );
}
