// Who is at the console: a pasted bearer token (kept for the browser tab's
// life), or, when the service runs without authentication, an operator name
// sent as X-Operator. The token's claims are read for display and to decide
// which actions to offer; the service checks the token on every call.
import { createContext, useCallback, useContext, useMemo, useState, type ReactNode } from "react";
import { call, credentialHeaders, type CallOptions, type Reply } from "./http";
import { decodeToken, type Claims } from "./jwt";

const TOKEN_KEY = "inventory-console.token";
const OPERATOR_KEY = "inventory-console.operator";

export interface Session {
  token: string | null;
  claims: Claims | null;
  operator: string;
  /** Who acts: the token's subject, else the operator name. */
  identity: string | null;
  setToken: (token: string | null) => void;
  setOperator: (name: string) => void;
  /** Whether to offer an action needing `role`: without a token every action is offered (the service decides). */
  can: (role: string) => boolean;
  headers: () => Record<string, string>;
  api: <T>(path: string, options?: CallOptions) => Promise<Reply<T>>;
}

const Ctx = createContext<Session | null>(null);

function read(storage: Storage | undefined, key: string): string | null {
  try {
    return storage?.getItem(key) ?? null;
  } catch {
    return null;
  }
}

function write(storage: Storage | undefined, key: string, value: string | null) {
  try {
    if (value === null) storage?.removeItem(key);
    else storage?.setItem(key, value);
  } catch {
    // Storage refused (private mode): the value lives for this page only.
  }
}

export function SessionProvider({ children }: { children: ReactNode }) {
  const [token, setTokenState] = useState<string | null>(() => read(globalThis.sessionStorage, TOKEN_KEY));
  const [operator, setOperatorState] = useState<string>(() => read(globalThis.localStorage, OPERATOR_KEY) ?? "");
  const claims = useMemo(() => {
    if (!token) return null;
    const d = decodeToken(token);
    return d.ok ? d.claims : null;
  }, [token]);
  const setToken = useCallback((t: string | null) => {
    const v = t && t.trim() ? t.trim() : null;
    write(globalThis.sessionStorage, TOKEN_KEY, v);
    setTokenState(v);
  }, []);
  const setOperator = useCallback((name: string) => {
    write(globalThis.localStorage, OPERATOR_KEY, name.trim() || null);
    setOperatorState(name.trim());
  }, []);
  const headers = useCallback(() => credentialHeaders({ token, operator }), [token, operator]);
  const session = useMemo<Session>(
    () => ({
      token,
      claims,
      operator,
      identity: token ? (claims?.sub ?? null) : operator || null,
      setToken,
      setOperator,
      can: (role) => !token || (claims?.roles.includes(role) ?? false),
      headers,
      api: (path, options = {}) =>
        call(fetch.bind(globalThis), path, { ...options, headers: { ...headers(), ...options.headers } }),
    }),
    [token, claims, operator, setToken, setOperator, headers],
  );
  return <Ctx.Provider value={session}>{children}</Ctx.Provider>;
}

export function useSession(): Session {
  const s = useContext(Ctx);
  if (!s) throw new Error("useSession outside SessionProvider");
  return s;
}
