// A token's claims, read for display and to decide which actions to show.
// Nothing here verifies the token: the service does, on every request.

export interface Claims {
  sub?: string;
  roles: string[];
  tenant?: string;
  /** Seconds since the epoch. */
  exp?: number;
}

export type Decoded = { ok: true; claims: Claims } | { ok: false; problem: string };

function base64UrlDecode(part: string): string {
  const base64 = part.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(part.length / 4) * 4, "=");
  const binary = atob(base64);
  const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
  return new TextDecoder().decode(bytes);
}

export function decodeToken(token: string): Decoded {
  const parts = token.trim().split(".");
  if (parts.length !== 3 || !parts[1]) return { ok: false, problem: "a token has three dot-separated parts" };
  let payload: unknown;
  try {
    payload = JSON.parse(base64UrlDecode(parts[1]));
  } catch {
    return { ok: false, problem: "the token's claims are not base64url JSON" };
  }
  if (typeof payload !== "object" || payload === null || Array.isArray(payload)) return { ok: false, problem: "the claims are not an object" };
  const p = payload as Record<string, unknown>;
  const roles = Array.isArray(p.roles) ? p.roles.filter((r): r is string => typeof r === "string") : [];
  return {
    ok: true,
    claims: {
      sub: typeof p.sub === "string" ? p.sub : undefined,
      roles,
      tenant: typeof p.tenant === "string" ? p.tenant : undefined,
      exp: typeof p.exp === "number" ? p.exp : undefined,
    },
  };
}

export function expired(claims: Claims, nowMs: number): boolean {
  return claims.exp !== undefined && claims.exp * 1000 <= nowMs;
}
