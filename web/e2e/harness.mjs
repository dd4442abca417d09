// What the end-to-end tests need around the browser: a real inventoryd (the
// binary cargo built) on a free port with a temporary data directory, an
// HTTP client for the API, PostgreSQL schemas of their own, tokens from
// inventoryctl, and Debian's Chromium driven by playwright-core.
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, writeFileSync, chmodSync, existsSync, mkdirSync, rmSync, openSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, "../..");

/** Where screenshots and server logs go (gitignored). */
export const ARTIFACTS = resolve(process.env.E2E_ARTIFACTS ?? join(here, "artifacts"));
mkdirSync(ARTIFACTS, { recursive: true });

export const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const BIN_DIR = resolve(process.env.INVENTORY_BIN_DIR ?? join(repo, "target/debug"));
export const PG_URL = process.env.E2E_POSTGRES_URL ?? "host=127.0.0.1 port=5432 user=root dbname=test connect_timeout=3";

export function binary(name) {
  const path = join(BIN_DIR, name);
  if (!existsSync(path)) {
    throw new Error(`${path} is missing: build it first (cargo build -p inventory-gateway), or set INVENTORY_BIN_DIR`);
  }
  return path;
}

export function freePort() {
  return new Promise((ok, fail) => {
    const server = createServer();
    server.on("error", fail);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => ok(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Starts inventoryd with `args` beyond the listen address and data dir; resolves once /readyz says ready. */
export async function startInventoryd(name, args = []) {
  const port = await freePort();
  const dataDir = mkdtempSync(join(tmpdir(), "inventory-e2e-"));
  const log = openSync(join(ARTIFACTS, `${name}.log`), "w");
  const child = spawn(binary("inventoryd"), ["--listen", `127.0.0.1:${port}`, "--data-dir", dataDir, "--shards", "2", ...args], {
    stdio: ["ignore", log, log],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "warn" },
  });
  const url = `http://127.0.0.1:${port}`;
  let exited = null;
  child.on("exit", (code, signal) => (exited = { code, signal }));
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (exited) throw new Error(`inventoryd exited at start (${JSON.stringify(exited)}): see ${join(ARTIFACTS, `${name}.log`)}`);
    try {
      const r = await fetch(`${url}/readyz`);
      if (r.ok) break;
    } catch {
      // Not listening yet.
    }
    if (Date.now() > deadline) throw new Error(`inventoryd did not become ready: see ${join(ARTIFACTS, `${name}.log`)}`);
    await sleep(100);
  }
  return {
    url,
    async stop() {
      if (!exited) {
        child.kill("SIGTERM");
        for (let i = 0; i < 100 && !exited; i++) await sleep(100);
        if (!exited) child.kill("SIGKILL");
      }
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** Calls the API from the test (not through the browser). */
export async function api(url, method, path, { body, token, operator } = {}) {
  const headers = { "content-type": "application/json" };
  if (token) headers.authorization = `Bearer ${token}`;
  if (operator) headers["x-operator"] = operator;
  const r = await fetch(`${url}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {
    // Not JSON.
  }
  return { status: r.status, body: json, text };
}

let uniqueN = 0;
export function unique(prefix) {
  return `${prefix}-${process.pid}-${Date.now().toString(36)}-${++uniqueN}`;
}

function psql(sql) {
  return execFileSync("psql", [PG_URL, "-v", "ON_ERROR_STOP=1", "-qAtc", sql], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
}

/** A fresh schema name on the local PostgreSQL, or null (with the reason) when it cannot be reached outside CI. */
export function postgresSchema() {
  try {
    psql("SELECT 1");
  } catch (e) {
    if (process.env.CI) throw new Error(`PostgreSQL is unreachable in CI: ${e.message}`);
    return { schema: null, reason: `PostgreSQL is unreachable (${String(e.message).split("\n")[0]})` };
  }
  return { schema: `console_e2e_${process.pid}_${Date.now().toString(36)}`, reason: null };
}

export function dropSchema(schema) {
  if (schema) psql(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
}

/** Waits until the PostgreSQL writer has applied everything (needs an admin token with auth on). */
export async function waitCaughtUp(url, token) {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const r = await api(url, "GET", "/api/admin/persistence", { token });
    if (r.status === 200 && r.body.shards.every((s) => s.lagRecords === 0 && s.connected)) return;
    if (Date.now() > deadline) throw new Error(`the PostgreSQL writer did not catch up: ${r.text}`);
    await sleep(100);
  }
}

/** An HS256 secret file only its owner may read, as the service requires. */
export function secretFile() {
  const dir = mkdtempSync(join(tmpdir(), "inventory-e2e-keys-"));
  const path = join(dir, "hs256");
  writeFileSync(path, `console-e2e-${process.pid}-${Math.random()}`);
  chmodSync(path, 0o600);
  return path;
}

export function token(secret, sub, roles, tenant) {
  const args = ["token", "--hs256-secret-file", secret, "--sub", sub, "--ttl", "1h"];
  for (const role of roles) args.push("--role", role);
  if (tenant) args.push("--tenant", tenant);
  return execFileSync(binary("inventoryctl"), args, { encoding: "utf8" }).trim();
}

export async function launchBrowser() {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: apt-get install -y chromium`);
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}

export const DESKTOP = { width: 1280, height: 800 };
export const PHONE = { width: 390, height: 844 };

export async function shot(page, name) {
  await page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });
}
