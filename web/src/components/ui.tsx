// Small building blocks shared by the pages.
import { useId, type ReactNode } from "react";
import type { ApiErrorBody } from "../api/types";
import { describeCode, describeDetail } from "../lib/errors";
import type { Reply } from "../lib/http";

/** A labelled input; the label is tied to the input for screen readers and clicks. */
export function Field(props: {
  label: string;
  value: string;
  onChange: (v: string) => void;
  type?: "text" | "number" | "datetime-local";
  required?: boolean;
  placeholder?: string;
  hint?: string;
  min?: number;
  list?: string;
  name?: string;
  autoFocus?: boolean;
}) {
  const id = useId();
  const hintId = `${id}-hint`;
  return (
    <div className="field">
      <label htmlFor={id}>
        {props.label}
        {props.required ? "" : <span className="optional"> (optional)</span>}
      </label>
      <input
        id={id}
        name={props.name}
        type={props.type ?? "text"}
        value={props.value}
        required={props.required}
        placeholder={props.placeholder}
        min={props.min}
        list={props.list}
        autoFocus={props.autoFocus}
        aria-describedby={props.hint ? hintId : undefined}
        onChange={(e) => props.onChange(e.target.value)}
      />
      {props.hint && (
        <small id={hintId} className="hint">
          {props.hint}
        </small>
      )}
    </div>
  );
}

/** An error answer: the code in words, then the code and the service's message. */
export function ErrorNote({ error, status, title }: { error: ApiErrorBody; status?: number; title?: string }) {
  const detail = describeDetail(error, time);
  return (
    <div className="note error" role="alert">
      <strong>
        {title ? `${title}: ` : ""}
        {describeCode(error.code)}
      </strong>
      <div className="detail">
        <code>{error.code}</code>
        {status ? ` (${status})` : ""}: {error.message}
      </div>
      {detail && (
        <div className="detail" data-testid="error-detail">
          {detail}
        </div>
      )}
    </div>
  );
}

/** Any reply that is not a success, as a note. */
export function ReplyError({ reply, title }: { reply: Reply<unknown>; title?: string }) {
  if (reply.kind === "ok") return null;
  if (reply.kind === "network") {
    return (
      <div className="note error" role="alert">
        <strong>{title ? `${title}: ` : ""}no answer from the service</strong>
        <div className="detail">{reply.message}</div>
      </div>
    );
  }
  return <ErrorNote error={reply.error} status={reply.status} title={title} />;
}

export function Section({ title, children, actions }: { title: string; children: ReactNode; actions?: ReactNode }) {
  const id = useId();
  return (
    <section className="card" aria-labelledby={id}>
      <div className="card-head">
        <h2 id={id}>{title}</h2>
        {actions}
      </div>
      {children}
    </section>
  );
}

export function Badge({ tone, children, label }: { tone: "ok" | "warn" | "bad" | "info"; children: ReactNode; label?: string }) {
  return (
    <span className={`badge ${tone}`} aria-label={label}>
      {children}
    </span>
  );
}

export function Loading({ what }: { what: string }) {
  return (
    <p className="muted" role="status">
      Loading {what}…
    </p>
  );
}

export function time(iso: string | null | undefined): string {
  if (!iso) return "";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString();
}

export function clock(ms: number): string {
  return new Date(ms).toLocaleTimeString();
}
