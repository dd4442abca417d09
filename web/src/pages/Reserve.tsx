// The reserve form: one idempotency key per submit, up to three attempts
// with backoff on failures that decided nothing, and every state shown.
import { useRef, useState, type FormEvent } from "react";
import { ErrorNote, Field, Section, time } from "../components/ui";
import { describeCode } from "../lib/errors";
import { reserveWithRetry, RESERVE_ATTEMPTS, type AttemptEvent, type ReserveResult } from "../lib/reserve";
import { href } from "../lib/route";
import { useSession } from "../lib/session";

type State = { phase: "idle" } | { phase: "loading"; event: AttemptEvent } | { phase: "finished"; result: ReserveResult };

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export function ReservePage() {
  const session = useSession();
  const [sku, setSku] = useState("");
  const [warehouse, setWarehouse] = useState("");
  const [qty, setQty] = useState("1");
  const [orderId, setOrderId] = useState("");
  const [buyer, setBuyer] = useState("");
  const [channel, setChannel] = useState("");
  const [state, setState] = useState<State>({ phase: "idle" });
  const [invalid, setInvalid] = useState<string | null>(null);
  const busy = useRef(false);

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    if (busy.current) return;
    const n = Number(qty);
    if (!sku.trim() || !orderId.trim() || !Number.isInteger(n) || n < 1) {
      setInvalid("SKU, order id and a whole quantity of at least 1 are required.");
      return;
    }
    setInvalid(null);
    busy.current = true;
    setState({ phase: "loading", event: { phase: "sending", attempt: 1 } });
    const result = await reserveWithRetry(
      {
        orderId: orderId.trim(),
        skuId: sku.trim(),
        qty: n,
        ...(warehouse.trim() ? { warehouseId: warehouse.trim() } : {}),
        ...(buyer.trim() ? { buyerId: buyer.trim() } : {}),
        ...(channel.trim() ? { channel: channel.trim() } : {}),
      },
      { fetch: fetch.bind(globalThis), sleep },
      { headers: session.headers(), onAttempt: (event) => setState({ phase: "loading", event }) },
    );
    busy.current = false;
    setState({ phase: "finished", result });
  };

  const loading = state.phase === "loading";
  return (
    <Section title="Reserve stock">
      <form onSubmit={submit} className="grid-form" aria-describedby="reserve-help" noValidate>
        <p id="reserve-help" className="muted wide">
          Holds units for an order. A failed attempt that decided nothing (no answer, 5xx, 429) is tried again, up to{" "}
          {RESERVE_ATTEMPTS} times, with the same idempotency key: at most one hold is made.
        </p>
        <Field label="SKU" value={sku} onChange={setSku} required name="skuId" />
        <Field label="Warehouse" value={warehouse} onChange={setWarehouse} name="warehouseId" hint="Empty: the default warehouse" />
        <Field label="Quantity" value={qty} onChange={setQty} type="number" min={1} required name="qty" />
        <Field label="Order id" value={orderId} onChange={setOrderId} required name="orderId" />
        <Field label="Buyer" value={buyer} onChange={setBuyer} name="buyerId" hint="For the SKU's limit per buyer" />
        <Field label="Channel" value={channel} onChange={setChannel} name="channel" hint="For the SKU's channel quotas" />
        <div className="wide actions">
          <button type="submit" disabled={loading} aria-busy={loading}>
            {loading ? "Reserving…" : "Reserve"}
          </button>
        </div>
      </form>
      {invalid && (
        <div className="note error" role="alert">
          {invalid}
        </div>
      )}
      <div aria-live="polite" className="outcome">
        {state.phase === "loading" && <Progress event={state.event} />}
        {state.phase === "finished" && <Outcome result={state.result} orderId={orderId.trim()} />}
      </div>
    </Section>
  );
}

function Progress({ event }: { event: AttemptEvent }) {
  return (
    <div className="note info" role="status" data-testid="reserve-progress">
      {event.phase === "sending"
        ? `Sending attempt ${event.attempt} of ${RESERVE_ATTEMPTS}…`
        : `Attempt ${event.attempt} failed: ${event.reason}.${event.retryInMs !== undefined ? ` Retrying in ${event.retryInMs} ms…` : ""}`}
    </div>
  );
}

function Outcome({ result, orderId }: { result: ReserveResult; orderId: string }) {
  const attempts = `${result.attempts} attempt${result.attempts === 1 ? "" : "s"}`;
  if (result.kind === "done") {
    return (
      <div className="note ok" role="status" data-testid="reserve-done">
        <strong>Reserved: {result.hold.reservationId}</strong>
        <div className="detail">
          {result.hold.status}, expires {time(result.hold.expireAt)}; {attempts}
          {result.replayed ? " (the service had already made this hold: answered from the first attempt)" : ""}.{" "}
          <a href={href("order", orderId)}>Watch order {orderId}</a>
        </div>
        <div className="detail muted">Idempotency key {result.idemKey}</div>
      </div>
    );
  }
  if (result.kind === "rejected") {
    return (
      <div data-testid="reserve-rejected">
        <ErrorNote error={result.error} status={result.status} title="Not reserved" />
        <p className="muted">
          Decided by the service after {attempts}; not retried. Key {result.idemKey}
        </p>
      </div>
    );
  }
  return (
    <div className="note error" role="alert" data-testid="reserve-failed">
      <strong>Not reserved: {result.error ? describeCode(result.error.code) : "no answer from the service"}</strong>
      <div className="detail">
        {result.error && <code>{result.error.code}</code>} {result.message}; gave up after {attempts}. Submitting again makes a new
        request with a new key.
      </div>
    </div>
  );
}
