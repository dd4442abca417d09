// Operator actions: freeze and unfreeze, adjustments under the two-person
// rule, transfers between warehouses, and reconciliation. Each write gets a
// fresh idempotency key when it is submitted. Actions the signed-in roles do
// not allow are not offered; the service decides in any case.
import { useCallback, useEffect, useState, type FormEvent, type ReactNode } from "react";
import type {
  Adjustment,
  AdjustmentList,
  DecisionRequest,
  PolicyRequest,
  ProposeRequest,
  ReconcileReport,
  Stock,
  Transfer,
  TransferList,
  TransferRequest,
} from "../api/types";
import { Badge, Field, Loading, ReplyError, Section, time } from "../components/ui";
import { newIdemKey, type Reply } from "../lib/http";
import { describePolicy, policyRequest } from "../lib/policy";
import { href } from "../lib/route";
import { useSession, type Session } from "../lib/session";

const LIST_REFRESH_MS = 5_000;

function post<T>(session: Session, path: string, body: object, action: string): Promise<Reply<T>> {
  const idemKey = newIdemKey(action);
  return session.api<T>(path, { method: "POST", body: { ...body, idemKey }, timeoutMs: 10_000 });
}

/** A submit that shows its result and can run once at a time. */
function useSubmit<T>() {
  const [busy, setBusy] = useState(false);
  const [reply, setReply] = useState<Reply<T> | null>(null);
  const run = useCallback(async (go: () => Promise<Reply<T>>) => {
    setBusy(true);
    setReply(null);
    const r = await go();
    setReply(r);
    setBusy(false);
    return r;
  }, []);
  return { busy, reply, run };
}

export function OperationsPage() {
  const session = useSession();
  const canOperate = session.can("operator");
  const canApprove = session.can("approver");
  const canAdmin = session.can("admin");
  return (
    <>
      <WhoActs />
      {canOperate && <FreezeForm />}
      {canOperate && <PolicyForm />}
      {(canOperate || canApprove) && <Adjustments />}
      {canOperate && <Transfers />}
      {canAdmin && <Reconcile />}
      {!canOperate && !canApprove && !canAdmin && (
        <p className="note info">Your token has none of the roles operator, approver or admin: there is nothing to do here.</p>
      )}
    </>
  );
}

function WhoActs() {
  const session = useSession();
  if (session.token) {
    return (
      <p className="muted" data-testid="acting-as">
        Acting as <strong>{session.identity ?? "(token without sub)"}</strong>, roles {session.claims?.roles.join(", ") || "none"}.
      </p>
    );
  }
  return session.operator ? (
    <p className="muted" data-testid="acting-as">
      Acting as <strong>{session.operator}</strong> (sent as X-Operator; the service runs without authentication).
    </p>
  ) : (
    <p className="note warn">
      Operator actions need an operator: <a href={href("sign-in")}>sign in</a> with a token, or give an operator name there.
    </p>
  );
}

// ----- freeze ------------------------------------------------------------------

function FreezeForm() {
  const session = useSession();
  const [sku, setSku] = useState("");
  const [warehouse, setWarehouse] = useState("");
  const [reason, setReason] = useState("");
  const { busy, reply, run } = useSubmit<Stock>();
  const act = (frozen: boolean) => (e: FormEvent) => {
    e.preventDefault();
    const body = { reason, ...(warehouse.trim() ? { warehouseId: warehouse.trim() } : {}) };
    const path = `/api/admin/skus/${encodeURIComponent(sku.trim())}/${frozen ? "freeze" : "unfreeze"}`;
    void run(() => post<Stock>(session, path, body, frozen ? "freeze" : "unfreeze"));
  };
  return (
    <Section title="Freeze or unfreeze an SKU">
      <form className="grid-form" onSubmit={act(true)}>
        <Field label="SKU" value={sku} onChange={setSku} required name="freezeSku" />
        <Field label="Warehouse" value={warehouse} onChange={setWarehouse} hint="Empty: every warehouse of the SKU" name="freezeWarehouse" />
        <Field label="Reason" value={reason} onChange={setReason} required name="freezeReason" />
        <div className="wide actions">
          <button type="submit" disabled={busy}>
            Freeze
          </button>
          <button type="button" className="secondary" disabled={busy} onClick={act(false)}>
            Unfreeze
          </button>
        </div>
      </form>
      {reply?.kind === "ok" && (
        <div className="note ok" role="status">
          <a href={href("stock", reply.data.skuId)}>{reply.data.skuId}</a>:{" "}
          {reply.data.warehouses.map((w) => `${w.warehouseId} ${w.frozen ? "frozen" : "on sale"}`).join(", ")}
        </div>
      )}
      {reply && <ReplyError reply={reply} />}
    </Section>
  );
}

// ----- sale policy -------------------------------------------------------------------

function PolicyForm() {
  const session = useSession();
  const [sku, setSku] = useState("");
  const [max, setMax] = useState("");
  const [starts, setStarts] = useState("");
  const [ends, setEnds] = useState("");
  const [quotas, setQuotas] = useState("");
  const [invalid, setInvalid] = useState<string | null>(null);
  const { busy, reply, run } = useSubmit<Stock>();
  const path = () => `/api/admin/skus/${encodeURIComponent(sku.trim())}/policy`;
  const set = (e: FormEvent) => {
    e.preventDefault();
    const parsed = policyRequest({ maxPerBuyer: max, saleStartsAt: starts, saleEndsAt: ends, channelQuotas: quotas });
    if (!parsed.ok) {
      setInvalid(parsed.problem);
      return;
    }
    setInvalid(null);
    const body: PolicyRequest = { ...parsed.value, idemKey: newIdemKey("policy") };
    void run(() => session.api<Stock>(path(), { method: "PUT", body, timeoutMs: 10_000 }));
  };
  const remove = () => {
    setInvalid(null);
    const headers = { "Idempotency-Key": newIdemKey("unpolicy") };
    void run(() => session.api<Stock>(path(), { method: "DELETE", headers, timeoutMs: 10_000 }));
  };
  const done = reply?.kind === "ok" ? reply.data : null;
  const summary = done?.policy ? describePolicy(done.policy, Date.now(), time) : null;
  return (
    <Section title="Sale policy of an SKU">
      <form className="grid-form" onSubmit={set} aria-label="Sale policy" noValidate>
        <p className="muted wide">
          Setting a policy replaces the SKU's policy (what it counted is kept); reserves must then name their buyer (with a limit)
          and channel (with quotas). Leave a field empty for no such rule.
        </p>
        <Field label="SKU" value={sku} onChange={setSku} required name="policySku" />
        <Field label="Limit per buyer" value={max} onChange={setMax} type="number" min={1} name="policyMax" hint="Units one buyer may hold and buy" />
        <Field label="Sale starts" value={starts} onChange={setStarts} type="datetime-local" name="policyStarts" hint="Your time zone" />
        <Field label="Sale ends" value={ends} onChange={setEnds} type="datetime-local" name="policyEnds" hint="Your time zone" />
        <Field
          label="Channel quotas"
          value={quotas}
          onChange={setQuotas}
          name="policyQuotas"
          placeholder="web=100, app=50"
          hint="channel=units, separated by commas"
        />
        <div className="wide actions">
          <button type="submit" disabled={busy || !sku.trim()}>
            Set policy
          </button>
          <button type="button" className="secondary" disabled={busy || !sku.trim()} onClick={remove}>
            Remove policy
          </button>
        </div>
      </form>
      {invalid && (
        <div className="note error" role="alert">
          {invalid}
        </div>
      )}
      {done && (
        <div className="note ok" role="status" data-testid="policy-result">
          <a href={href("stock", done.skuId)}>{done.skuId}</a>:{" "}
          {summary
            ? [
                summary.limit,
                summary.window === "always" ? "no sale window" : `on sale ${summary.windowText}`,
                summary.channels.length > 0
                  ? `quotas ${summary.channels.map((c) => `${c.channel} ${c.quota ?? 0}`).join(", ")}`
                  : "no channel quotas",
              ].join("; ")
            : "no sale policy"}
        </div>
      )}
      {reply && <ReplyError reply={reply} />}
    </Section>
  );
}

// ----- adjustments -----------------------------------------------------------------

function useList<D, T>(path: string, pick: (data: D) => T[]) {
  const session = useSession();
  const [reply, setReply] = useState<Reply<unknown> | null>(null);
  const [items, setItems] = useState<T[] | null>(null);
  const [version, setVersion] = useState(0);
  useEffect(() => {
    let stopped = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const load = async () => {
      const r = await session.api<D>(path, { timeoutMs: 5_000 });
      if (stopped) return;
      setReply(r);
      if (r.kind === "ok") setItems(pick(r.data));
      timer = setTimeout(load, LIST_REFRESH_MS);
    };
    void load();
    return () => {
      stopped = true;
      if (timer) clearTimeout(timer);
    };
    // `pick` is a fixed projection at each call site: not a dependency.
  }, [path, session, version]);
  return { reply, items, reload: () => setVersion((v) => v + 1) };
}

function Adjustments() {
  const session = useSession();
  const pending = useList<AdjustmentList, Adjustment>("/api/admin/adjustments?status=PENDING", (d: AdjustmentList) => d.adjustments);
  return (
    <Section title="Adjustments (two-person rule)">
      {session.can("operator") && <ProposeForm onDone={pending.reload} />}
      <h3>Pending</h3>
      {pending.reply && <ReplyError reply={pending.reply} title="Pending adjustments" />}
      {pending.items === null ? (
        <Loading what="pending adjustments" />
      ) : pending.items.length === 0 ? (
        <p className="muted">No adjustment waits for approval.</p>
      ) : (
        <ul className="cards" aria-label="Pending adjustments">
          {pending.items.map((a) => (
            <PendingAdjustment key={a.adjustmentId} adjustment={a} onDone={pending.reload} />
          ))}
        </ul>
      )}
    </Section>
  );
}

function ProposeForm({ onDone }: { onDone: () => void }) {
  const session = useSession();
  const [sku, setSku] = useState("");
  const [warehouse, setWarehouse] = useState("");
  const [delta, setDelta] = useState("");
  const [reason, setReason] = useState("");
  const { busy, reply, run } = useSubmit<Adjustment>();
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    const body: ProposeRequest = {
      skuId: sku.trim(),
      delta: Number(delta),
      reason,
      ...(warehouse.trim() ? { warehouseId: warehouse.trim() } : {}),
    };
    const r = await run(() => post<Adjustment>(session, "/api/admin/adjustments", body, "adjust"));
    if (r.kind === "ok") onDone();
  };
  return (
    <form className="grid-form" onSubmit={submit} aria-label="Propose an adjustment">
      <Field label="SKU" value={sku} onChange={setSku} required name="adjustSku" />
      <Field label="Warehouse" value={warehouse} onChange={setWarehouse} name="adjustWarehouse" />
      <Field label="Units (+ adds, − removes)" value={delta} onChange={setDelta} type="number" required name="adjustDelta" />
      <Field label="Reason" value={reason} onChange={setReason} required name="adjustReason" />
      <div className="wide actions">
        <button type="submit" disabled={busy}>
          Propose adjustment
        </button>
      </div>
      <div className="wide">
        {reply?.kind === "ok" && (
          <div className="note ok" role="status">
            Proposed {reply.data.adjustmentId} ({reply.data.delta > 0 ? "+" : ""}
            {reply.data.delta} on {reply.data.skuId}/{reply.data.warehouseId}): it applies once another operator approves it.
          </div>
        )}
        {reply && <ReplyError reply={reply} />}
      </div>
    </form>
  );
}

function PendingAdjustment({ adjustment: a, onDone }: { adjustment: Adjustment; onDone: () => void }) {
  const session = useSession();
  const [reason, setReason] = useState("");
  const { busy, reply, run } = useSubmit<Adjustment>();
  const own = session.identity !== null && session.identity === a.proposedBy;
  const decide = async (verdict: "approve" | "reject") => {
    const body: DecisionRequest = reason.trim() ? { reason: reason.trim() } : {};
    const path = `/api/admin/adjustments/${encodeURIComponent(a.adjustmentId)}/${verdict}`;
    const r = await run(() => post<Adjustment>(session, path, body, verdict));
    if (r.kind === "ok") onDone();
  };
  const explain = `own-${a.adjustmentId}`;
  return (
    <li className="card inner" data-testid={`adjustment-${a.adjustmentId}`}>
      <div className="row spread">
        <strong>
          {a.adjustmentId}: {a.delta > 0 ? "+" : ""}
          {a.delta} units of <a href={href("stock", a.skuId)}>{a.skuId}</a> in {a.warehouseId}
        </strong>
        <Badge tone="info">{a.status}</Badge>
      </div>
      <p className="muted">
        “{a.reason}”, proposed by <strong>{a.proposedBy}</strong> at {time(a.proposedAt)}; expires {time(a.expiresAt)}. Available then:{" "}
        {a.before.available}.
      </p>
      {session.can("approver") ? (
        <div className="row">
          <Field label="Decision reason" value={reason} onChange={setReason} hint="Required to reject" name="decisionReason" />
          <button type="button" disabled={busy || own} aria-describedby={own ? explain : undefined} onClick={() => void decide("approve")}>
            Approve
          </button>
          <button type="button" className="secondary" disabled={busy || !reason.trim()} onClick={() => void decide("reject")}>
            Reject
          </button>
        </div>
      ) : (
        <p className="muted">Approving needs the approver role.</p>
      )}
      {own && session.can("approver") && (
        <p id={explain} className="note info" data-testid="own-adjustment">
          You proposed this adjustment: a second operator must approve it (two-person rule). You may still reject it.
        </p>
      )}
      {reply && <ReplyError reply={reply} />}
    </li>
  );
}

// ----- transfers ---------------------------------------------------------------------

function Transfers() {
  const [filter, setFilter] = useState<"IN_TRANSIT" | "OVERDUE">("IN_TRANSIT");
  const list = useList<TransferList, Transfer>(`/api/admin/transfers?status=${filter}`, (d: TransferList) => d.transfers);
  return (
    <Section title="Transfers between warehouses">
      <DispatchForm onDone={list.reload} />
      <div className="row" role="radiogroup" aria-label="Which transfers">
        <h3>{filter === "OVERDUE" ? "Overdue" : "In transit"}</h3>
        <label className="inline">
          <input type="radio" name="transfer-filter" checked={filter === "IN_TRANSIT"} onChange={() => setFilter("IN_TRANSIT")} /> in transit
        </label>
        <label className="inline">
          <input type="radio" name="transfer-filter" checked={filter === "OVERDUE"} onChange={() => setFilter("OVERDUE")} /> overdue only
        </label>
      </div>
      {list.reply && <ReplyError reply={list.reply} title="Transfers" />}
      {list.items === null ? (
        <Loading what="transfers" />
      ) : list.items.length === 0 ? (
        <p className="muted">{filter === "OVERDUE" ? "No transfer is overdue." : "No transfer is in transit."}</p>
      ) : (
        <ul className="cards" aria-label="Transfers">
          {list.items.map((t) => (
            <TransferItem key={t.transferId} transfer={t} onDone={list.reload} />
          ))}
        </ul>
      )}
    </Section>
  );
}

function DispatchForm({ onDone }: { onDone: () => void }) {
  const session = useSession();
  const [sku, setSku] = useState("");
  const [from, setFrom] = useState("");
  const [to, setTo] = useState("");
  const [qty, setQty] = useState("");
  const [reason, setReason] = useState("");
  const [eta, setEta] = useState("");
  const { busy, reply, run } = useSubmit<Transfer>();
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    const body: TransferRequest = {
      skuId: sku.trim(),
      fromWarehouseId: from.trim(),
      toWarehouseId: to.trim(),
      qty: Number(qty),
      reason,
      ...(eta.trim() ? { expectedArrivalSeconds: Number(eta) } : {}),
    };
    const r = await run(() => post<Transfer>(session, "/api/admin/transfers", body, "transfer"));
    if (r.kind === "ok") onDone();
  };
  return (
    <form className="grid-form" onSubmit={submit} aria-label="Dispatch a transfer">
      <Field label="SKU" value={sku} onChange={setSku} required name="transferSku" />
      <Field label="From warehouse" value={from} onChange={setFrom} required name="transferFrom" />
      <Field label="To warehouse" value={to} onChange={setTo} required name="transferTo" />
      <Field label="Quantity" value={qty} onChange={setQty} type="number" min={1} required name="transferQty" />
      <Field label="Reason" value={reason} onChange={setReason} required name="transferReason" />
      <Field label="Expected in (seconds)" value={eta} onChange={setEta} type="number" min={1} name="transferEta" />
      <div className="wide actions">
        <button type="submit" disabled={busy}>
          Dispatch
        </button>
      </div>
      <div className="wide">
        {reply?.kind === "ok" && (
          <div className="note ok" role="status">
            Dispatched {reply.data.transferId}: {reply.data.qty} units of {reply.data.skuId} on their way to {reply.data.toWarehouseId}.
          </div>
        )}
        {reply && <ReplyError reply={reply} />}
      </div>
    </form>
  );
}

function TransferItem({ transfer: t, onDone }: { transfer: Transfer; onDone: () => void }) {
  const session = useSession();
  const [reason, setReason] = useState("");
  const { busy, reply, run } = useSubmit<Transfer>();
  const finish = async (how: "arrive" | "cancel") => {
    const path = `/api/admin/transfers/${encodeURIComponent(t.transferId)}/${how}`;
    const r = await run(() => post<Transfer>(session, path, reason.trim() ? { reason: reason.trim() } : {}, how));
    if (r.kind === "ok") onDone();
  };
  return (
    <li className="card inner">
      <div className="row spread">
        <strong>
          {t.transferId}: {t.qty} × {t.skuId}, {t.fromWarehouseId} → {t.toWarehouseId}
        </strong>
        {t.overdue ? <Badge tone="bad">overdue</Badge> : <Badge tone="info">{t.status}</Badge>}
      </div>
      <p className="muted">
        “{t.reason}”, by {t.createdBy} at {time(t.createdAt)}
        {t.expectedArrivalAt ? `; expected ${time(t.expectedArrivalAt)}` : ""}.
      </p>
      <div className="row">
        <Field label="Reason" value={reason} onChange={setReason} hint="Required to cancel" name="finishReason" />
        <button type="button" disabled={busy} onClick={() => void finish("arrive")}>
          Arrived
        </button>
        <button type="button" className="secondary" disabled={busy || !reason.trim()} onClick={() => void finish("cancel")}>
          Cancel
        </button>
      </div>
      {reply && <ReplyError reply={reply} />}
    </li>
  );
}

// ----- reconciliation ------------------------------------------------------------------

function Reconcile() {
  const session = useSession();
  const [repair, setRepair] = useState(false);
  const { busy, reply, run } = useSubmit<ReconcileReport>();
  const submit = (e: FormEvent) => {
    e.preventDefault();
    void run(() => session.api<ReconcileReport>("/api/admin/reconcile", { method: "POST", body: { repair }, timeoutMs: 60_000 }));
  };
  return (
    <Section title="Reconciliation">
      <form className="row" onSubmit={submit}>
        <label className="inline">
          <input type="checkbox" checked={repair} onChange={(e) => setRepair(e.target.checked)} /> repair PostgreSQL rows that differ
        </label>
        <button type="submit" disabled={busy} aria-busy={busy}>
          {busy ? "Reconciling…" : "Run reconciliation"}
        </button>
      </form>
      {reply?.kind === "ok" && <Report report={reply.data} />}
      {reply && <ReplyError reply={reply} />}
    </Section>
  );
}

function Report({ report: r }: { report: ReconcileReport }) {
  const row = (label: string, value: ReactNode) => (
    <div>
      <dt>{label}</dt>
      <dd>{value}</dd>
    </div>
  );
  return (
    <div data-testid="reconcile-report">
      <p>
        {r.mismatched === 0 ? <Badge tone="ok">consistent</Badge> : <Badge tone="bad">{r.mismatched} mismatched</Badge>}
      </p>
      <dl className="totals">
        {row("Rows checked", r.checked)}
        {row("Core vs journal", r.coreMismatches)}
        {row("Repaired", r.repaired)}
        {r.postgres && row("PostgreSQL compared", r.postgres.compared)}
        {r.postgres && row("PostgreSQL mismatched", r.postgres.mismatched)}
        {r.postgres && row("History broken", r.postgres.historyBroken)}
        {r.postgres && row("Changed since", r.postgres.skippedNewer)}
      </dl>
      {!r.postgres && <p className="muted">No PostgreSQL read model is configured: only the core and its journal were compared.</p>}
      {r.details.length > 0 && (
        <div className="table-wrap">
          <table>
            <thead>
              <tr>
                <th scope="col">SKU</th>
                <th scope="col">Warehouse</th>
                <th scope="col">Side</th>
                <th scope="col">Problem or action</th>
              </tr>
            </thead>
            <tbody>
              {r.details.map((d, i) => (
                <tr key={i}>
                  <td>{d.skuId}</td>
                  <td>{d.warehouseId}</td>
                  <td>{d.side}</td>
                  <td>{d.problem ?? d.action}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </div>
  );
}
