// An SKU's sale policy in words (a limit per buyer, a sale window, unit
// quotas per channel), and the operator's policy form read into the
// service's request. Pure: the time is an argument.
import type { Policy, PolicyRequest } from "../api/types";

export type WindowState = "always" | "not started" | "open" | "ended";

export interface ChannelLine {
  channel: string;
  /** Units the channel may hold and sell; null when it has used units but no quota (a quota since removed). */
  quota: number | null;
  /** Units held or sold through it. */
  used: number;
  /** Units it may still take (never below 0), null without a quota. */
  left: number | null;
}

export interface PolicyView {
  /** "2 units per buyer", or "no limit". */
  limit: string;
  window: WindowState;
  /** "from … until …", "from …", "until …", or "any time". */
  windowText: string;
  channels: ChannelLine[];
  /** Buyers holding or having bought units: counted only with a limit. */
  buyers: number;
  buyersCounted: boolean;
}

export function windowState(policy: Policy, nowMs: number): WindowState {
  const starts = policy.saleStartsAt ? Date.parse(policy.saleStartsAt) : NaN;
  const ends = policy.saleEndsAt ? Date.parse(policy.saleEndsAt) : NaN;
  if (Number.isNaN(starts) && Number.isNaN(ends)) return "always";
  if (!Number.isNaN(starts) && nowMs < starts) return "not started";
  if (!Number.isNaN(ends) && nowMs >= ends) return "ended";
  return "open";
}

/** The policy as the Stock page shows it; `when` formats a time. */
export function describePolicy(policy: Policy, nowMs: number, when: (iso: string) => string): PolicyView {
  const max = policy.maxPerBuyer ?? null;
  const starts = policy.saleStartsAt ?? null;
  const ends = policy.saleEndsAt ?? null;
  const windowText =
    starts && ends ? `from ${when(starts)} until ${when(ends)}` : starts ? `from ${when(starts)}` : ends ? `until ${when(ends)}` : "any time";
  const quotas = policy.channelQuotas ?? {};
  const used = policy.channelsUsed ?? {};
  const names = [...new Set([...Object.keys(quotas), ...Object.keys(used)])].sort();
  const channels = names.map((channel): ChannelLine => {
    const quota = quotas[channel] ?? null;
    const u = used[channel] ?? 0;
    return { channel, quota, used: u, left: quota === null ? null : Math.max(0, quota - u) };
  });
  return {
    limit: max === null ? "no limit" : `${max} unit${max === 1 ? "" : "s"} per buyer`,
    window: windowState(policy, nowMs),
    windowText,
    channels,
    buyers: policy.buyers,
    buyersCounted: max !== null,
  };
}

/** What the operator typed into the policy form. */
export interface PolicyForm {
  maxPerBuyer: string;
  /** `datetime-local` values (the browser's time zone), or RFC 3339. */
  saleStartsAt: string;
  saleEndsAt: string;
  /** `web=100, app=50` (commas or new lines). */
  channelQuotas: string;
}

export type Parsed<T> = { ok: true; value: T } | { ok: false; problem: string };

/** Reads a `datetime-local` value (local time) or an RFC 3339 time into RFC 3339 UTC. */
export function toRfc3339(value: string): string | null {
  const v = value.trim();
  if (!v) return null;
  const ms = Date.parse(v);
  return Number.isNaN(ms) ? null : new Date(ms).toISOString();
}

/** `web=100, app=50` into `{web: 100, app: 50}`. */
export function parseQuotas(text: string): Parsed<Record<string, number>> {
  const quotas: Record<string, number> = {};
  for (const part of text.split(/[,\n]/)) {
    const item = part.trim();
    if (!item) continue;
    const m = /^([^=:\s]+)\s*[=:]\s*(\d+)$/.exec(item);
    if (!m) return { ok: false, problem: `“${item}” is not channel=units` };
    const [, channel, units] = m as unknown as [string, string, string];
    if (channel in quotas) return { ok: false, problem: `channel ${channel} is named twice` };
    quotas[channel] = Number(units);
  }
  return { ok: true, value: quotas };
}

/** The form as a `PUT .../policy` body (without its key), or what is wrong with it. */
export function policyRequest(form: PolicyForm): Parsed<Omit<PolicyRequest, "idemKey">> {
  const body: Omit<PolicyRequest, "idemKey"> = {};
  const max = form.maxPerBuyer.trim();
  if (max) {
    const n = Number(max);
    if (!Number.isInteger(n) || n < 1) return { ok: false, problem: "the limit per buyer must be a whole number of at least 1" };
    body.maxPerBuyer = n;
  }
  for (const [field, value, label] of [
    ["saleStartsAt", form.saleStartsAt, "sale start"],
    ["saleEndsAt", form.saleEndsAt, "sale end"],
  ] as const) {
    if (!value.trim()) continue;
    const at = toRfc3339(value);
    if (!at) return { ok: false, problem: `the ${label} is not a time` };
    body[field] = at;
  }
  if (body.saleStartsAt && body.saleEndsAt && Date.parse(body.saleEndsAt) <= Date.parse(body.saleStartsAt)) {
    return { ok: false, problem: "the sale must end after it starts" };
  }
  const quotas = parseQuotas(form.channelQuotas);
  if (!quotas.ok) return quotas;
  if (Object.keys(quotas.value).length > 0) body.channelQuotas = quotas.value;
  if (Object.keys(body).length === 0) {
    return { ok: false, problem: "give a limit per buyer, a sale window or channel quotas (or remove the policy)" };
  }
  return { ok: true, value: body };
}
