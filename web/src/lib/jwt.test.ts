import { describe, expect, it } from "vitest";
import { decodeToken, expired } from "./jwt";

function token(claims: object): string {
  const part = (o: object) => Buffer.from(JSON.stringify(o)).toString("base64url");
  return `${part({ alg: "HS256", typ: "JWT" })}.${part(claims)}.c2lnbmF0dXJl`;
}

describe("decodeToken", () => {
  it("reads sub, roles, tenant and exp", () => {
    const d = decodeToken(` ${token({ sub: "ann", roles: ["operator", 7, "approver"], tenant: "acme", exp: 100 })}\n`);
    expect(d).toEqual({ ok: true, claims: { sub: "ann", roles: ["operator", "approver"], tenant: "acme", exp: 100 } });
  });

  it("reads UTF-8 claims", () => {
    const d = decodeToken(token({ sub: "Zoë 王", roles: [] }));
    expect(d.ok && d.claims.sub).toBe("Zoë 王");
  });

  it("refuses what is not a token", () => {
    expect(decodeToken("abc").ok).toBe(false);
    expect(decodeToken("a.!!!.c").ok).toBe(false);
    expect(decodeToken(`a.${Buffer.from("[1]").toString("base64url")}.c`).ok).toBe(false);
    expect(decodeToken(`a.${Buffer.from("7").toString("base64url")}.c`).ok).toBe(false);
  });

  it("says when it has expired", () => {
    expect(expired({ roles: [], exp: 100 }, 100_000)).toBe(true);
    expect(expired({ roles: [], exp: 100 }, 99_999)).toBe(false);
    expect(expired({ roles: [] }, 1e15)).toBe(false);
  });
});
