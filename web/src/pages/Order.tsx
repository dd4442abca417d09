// An order's holds, polled every 3 s from the primary API, falling back to
// the PostgreSQL read model (and saying so) while the primary fails.
import { useEffect, useState, type FormEvent } from "react";
import type { ReadModelOrderStatus } from "../api/types";
import { Badge, ErrorNote, Field, Loading, Section, clock, time } from "../components/ui";
import { pollOrder, type OrderView } from "../lib/orderPoll";
import { href } from "../lib/route";
import { useSession } from "../lib/session";

export function OrderPage({ orderId }: { orderId?: string }) {
  const session = useSession();
  const [input, setInput] = useState(orderId ?? "");
  const [view, setView] = useState<OrderView>({ state: "loading" });

  useEffect(() => setInput(orderId ?? ""), [orderId]);

  useEffect(() => {
    if (!orderId) return;
    return pollOrder(
      orderId,
      {
        fetch: fetch.bind(globalThis),
        setTimeout: (fn, ms) => setTimeout(fn, ms),
        clearTimeout: (h) => clearTimeout(h as ReturnType<typeof setTimeout>),
        now: Date.now,
      },
      setView,
      { headers: session.headers() },
    );
  }, [orderId, session]);

  const submit = (e: FormEvent) => {
    e.preventDefault();
    if (input.trim()) window.location.hash = href("order", input.trim());
  };

  const shown = view.state === "done" ? view : view.state === "error" ? view.last : undefined;
  return (
    <>
      <Section title="Watch an order">
        <form className="row" onSubmit={submit}>
          <Field label="Order id" value={input} onChange={setInput} required name="orderId" />
          <button type="submit">Watch</button>
        </form>
      </Section>
      {!orderId && <p className="muted">Enter an order id to follow its holds; the view refreshes every 3 seconds.</p>}
      {orderId && view.state === "loading" && <Loading what={`order ${orderId}`} />}
      {orderId && view.state === "error" && (
        <div data-testid="order-error">
          {view.error ? (
            <ErrorNote error={view.error} title="The order could not be read" />
          ) : (
            <div className="note error" role="alert">
              <strong>The order could not be read</strong>
              <div className="detail">{view.message}</div>
            </div>
          )}
          {view.last && <p className="muted">Showing the answer of {clock(view.last.at)}.</p>}
        </div>
      )}
      {orderId && shown && <OrderView view={shown} />}
    </>
  );
}

function OrderView({ view }: { view: Extract<OrderView, { state: "done" }> }) {
  const rm = view.source === "read-model" ? (view.order as ReadModelOrderStatus) : null;
  return (
    <Section
      title={`Order ${view.order.orderId}`}
      actions={
        <div className="row tight" aria-live="polite">
          {view.degraded ? (
            <Badge tone="warn" label="degraded: served from the read model">
              <span data-testid="degraded-badge">degraded</span>
            </Badge>
          ) : (
            <Badge tone="ok">live</Badge>
          )}
          <span className="muted">updated {clock(view.at)}</span>
        </div>
      }
    >
      {rm && (
        <div className="note warn" role="status" data-testid="degraded-note">
          The primary API failed ({view.primaryProblem}); this is PostgreSQL's copy,{" "}
          {rm.stale
            ? `behind by ${rm.lagRecords} change${rm.lagRecords === 1 ? "" : "s"} (${(rm.lagMs / 1000).toFixed(1)} s)`
            : "up to date"}
          . The primary is asked again every 3 s.
        </div>
      )}
      {view.order.reservations.length === 0 ? (
        <p className="muted">No holds for this order.</p>
      ) : (
        <div className="table-wrap">
          <table className="stack">
            <caption className="sr-only">Holds of order {view.order.orderId}</caption>
            <thead>
              <tr>
                <th scope="col">Reservation</th>
                <th scope="col">SKU</th>
                <th scope="col">Warehouse</th>
                <th scope="col" className="num">
                  Qty
                </th>
                <th scope="col">Status</th>
                <th scope="col">Expires</th>
                <th scope="col">Updated</th>
              </tr>
            </thead>
            <tbody>
              {view.order.reservations.map((h) => (
                <tr key={h.reservationId}>
                  <th scope="row" data-label="Reservation">
                    <code>{h.reservationId}</code>
                  </th>
                  <td data-label="SKU">
                    <a href={href("stock", h.skuId)}>{h.skuId}</a>
                  </td>
                  <td data-label="Warehouse">{h.warehouseId}</td>
                  <td className="num" data-label="Qty">
                    {h.qty}
                  </td>
                  <td data-label="Status">
                    <Badge tone={h.status === "RESERVED" ? "info" : h.status === "CONFIRMED" ? "ok" : "warn"}>{h.status}</Badge>
                    {h.releaseReason ? <span className="muted"> {h.releaseReason}</span> : null}
                  </td>
                  <td data-label="Expires">{time(h.expireAt)}</td>
                  <td data-label="Updated">{time(h.updatedAt)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </Section>
  );
}
