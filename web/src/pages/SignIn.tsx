// Signing in: a bearer token pasted from `inventoryctl token`, its claims
// shown as the token states them; or, when the service runs without
// authentication, the operator name its operator actions record.
import { useState, type FormEvent } from "react";
import { Badge, Field, Section } from "../components/ui";
import { decodeToken, expired } from "../lib/jwt";
import { useSession } from "../lib/session";

export function SignInPage() {
  const session = useSession();
  const [token, setToken] = useState("");
  const [problem, setProblem] = useState<string | null>(null);
  const [operator, setOperator] = useState(session.operator);
  const [saved, setSaved] = useState(false);

  const signIn = (e: FormEvent) => {
    e.preventDefault();
    const d = decodeToken(token);
    if (!d.ok) {
      setProblem(d.problem);
      return;
    }
    setProblem(null);
    session.setToken(token);
    setToken("");
  };

  const c = session.claims;
  return (
    <>
      <Section title="Token">
        {session.token ? (
          <div data-testid="signed-in">
            <dl className="kv">
              <div>
                <dt>Subject (sub)</dt>
                <dd>{c?.sub ?? <em>none</em>}</dd>
              </div>
              <div>
                <dt>Roles</dt>
                <dd>{c?.roles.length ? c.roles.join(", ") : <em>none</em>}</dd>
              </div>
              <div>
                <dt>Tenant</dt>
                <dd>{c?.tenant ?? <em>none</em>}</dd>
              </div>
              <div>
                <dt>Expires</dt>
                <dd>
                  {c?.exp ? new Date(c.exp * 1000).toLocaleString() : <em>never stated</em>}{" "}
                  {c && expired(c, Date.now()) && <Badge tone="bad">expired</Badge>}
                </dd>
              </div>
            </dl>
            <p className="muted">
              Read from the token for display only; the service verifies it on every request and decides what it allows.
            </p>
            <button type="button" className="secondary" onClick={() => session.setToken(null)}>
              Sign out
            </button>
          </div>
        ) : (
          <form onSubmit={signIn}>
            <div className="field">
              <label htmlFor="token">Bearer token</label>
              <textarea
                id="token"
                name="token"
                rows={4}
                value={token}
                onChange={(e) => setToken(e.target.value)}
                aria-describedby="token-hint"
                spellCheck={false}
                autoComplete="off"
              />
              <small id="token-hint" className="hint">
                For a service started with <code>--auth jwt</code>: <code>inventoryctl token --hs256-secret-file F --sub NAME --role ROLE</code>.
                Kept for this browser tab only.
              </small>
            </div>
            {problem && (
              <div className="note error" role="alert">
                {problem}
              </div>
            )}
            <button type="submit" disabled={!token.trim()}>
              Sign in
            </button>
          </form>
        )}
      </Section>
      <Section title="Operator name (no authentication)">
        <form
          className="row"
          onSubmit={(e) => {
            e.preventDefault();
            session.setOperator(operator);
            setSaved(true);
          }}
        >
          <Field
            label="Operator name"
            value={operator}
            onChange={(v) => {
              setOperator(v);
              setSaved(false);
            }}
            name="operator"
            hint="Sent as X-Operator when no token is given; the service records it with operator actions."
          />
          <button type="submit">Save</button>
          {saved && (
            <span role="status" className="muted">
              Saved.
            </span>
          )}
        </form>
      </Section>
    </>
  );
}
