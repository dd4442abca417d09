// The console in a real browser against a real inventoryd: reserving (a
// success, a sold-out, a first attempt lost on the network), an order
// falling back to the read model and back, the two-person adjustment across
// two signed-in users, and a screenshot of every page.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import {
  api,
  DESKTOP,
  dropSchema,
  launchBrowser,
  PG_URL,
  PHONE,
  postgresSchema,
  secretFile,
  shot,
  startInventoryd,
  token,
  unique,
  waitCaughtUp,
} from "./harness.mjs";

const WAIT = { timeout: 15_000 };
let browser;

before(async () => {
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
});

async function receive(url, sku, qty, warehouseId, auth = {}) {
  const r = await api(url, "POST", "/api/inventory/receive", {
    body: { skuId: sku, qty, idemKey: unique("rcv"), ...(warehouseId ? { warehouseId } : {}) },
    ...auth,
  });
  assert.equal(r.status, 200, r.text);
}

async function fillReserve(page, { sku, qty, orderId, warehouse, buyer, channel }) {
  await page.getByLabel("SKU").fill(sku);
  if (warehouse) await page.getByLabel("Warehouse").fill(warehouse);
  await page.getByLabel("Quantity").fill(String(qty));
  await page.getByLabel("Order id").fill(orderId);
  await page.getByLabel("Buyer").fill(buyer ?? "");
  await page.getByLabel("Channel").fill(channel ?? "");
  await page.getByRole("button", { name: "Reserve" }).click();
}

async function signInAs(page, operator) {
  await page.goto("/console/#/sign-in");
  await page.getByRole("textbox", { name: /Operator name/ }).fill(operator);
  await page.getByRole("button", { name: "Save" }).click();
  await page.getByTestId("identity").getByText(`${operator} (X-Operator)`).waitFor(WAIT);
}

describe("without authentication, with the PostgreSQL read model", () => {
  const { schema, reason } = postgresSchema();
  let server;
  let context;

  before(async () => {
    const pg = schema ? ["--postgres-url", PG_URL, "--postgres-schema", schema] : [];
    server = await startInventoryd("open", pg);
    context = await browser.newContext({ viewport: DESKTOP, baseURL: server.url });
  });

  after(async () => {
    await context?.close();
    await server?.stop();
    dropSchema(schema);
  });

  test("the stock page shows every warehouse, frozen rows and refreshes", async () => {
    const sku = unique("tea");
    await receive(server.url, sku, 12, "east");
    await receive(server.url, sku, 5, "west");
    const frozen = await api(server.url, "POST", `/api/admin/skus/${sku}/freeze`, {
      body: { warehouseId: "west", reason: "recount", idemKey: unique("frz") },
      operator: "ops",
    });
    assert.equal(frozen.status, 200, frozen.text);
    const page = await context.newPage();
    await page.goto(`/console/#/stock/${sku}`);
    const table = page.getByRole("table");
    await table.getByRole("row", { name: /east/ }).waitFor(WAIT);
    assert.match(await table.getByRole("row", { name: /east/ }).innerText(), /east\s+12\s+0\s+0\s+0\s+no/);
    assert.match(await table.getByRole("row", { name: /west/ }).innerText(), /west\s+5\s+0\s+0\s+0\s+frozen/i);
    await page.getByText("partly frozen").waitFor(WAIT);
    // A reserve made elsewhere shows up without reloading.
    const r = await api(server.url, "POST", "/api/inventory/reserve", {
      body: { orderId: unique("o"), skuId: sku, qty: 2, warehouseId: "east", idemKey: unique("k") },
    });
    assert.equal(r.status, 200, r.text);
    await page.waitForFunction(() => /east\s+10\s+2/.test(document.querySelector("table")?.innerText ?? ""), null, WAIT);
    // The SKU is remembered as a recent one.
    await page.getByRole("navigation", { name: "Recent SKUs" }).getByText(sku).waitFor(WAIT);
    await shot(page, "stock");
    await page.setViewportSize(PHONE);
    await shot(page, "stock-phone");
    await page.close();
  });

  test("a reserve succeeds", async () => {
    const sku = unique("cup");
    await receive(server.url, sku, 5);
    const page = await context.newPage();
    await page.goto("/console/#/reserve");
    const orderId = unique("o");
    await fillReserve(page, { sku, qty: 2, orderId });
    const done = page.getByTestId("reserve-done");
    await done.waitFor(WAIT);
    assert.match(await done.innerText(), /Reserved: rsv-\d+-\d+/);
    assert.match(await done.innerText(), /1 attempt\b/);
    const order = await api(server.url, "GET", `/api/orders/${orderId}/inventory-status`);
    assert.equal(order.body.reservations.length, 1);
    assert.equal(order.body.reservations[0].qty, 2);
    await shot(page, "reserve-done");
    await page.setViewportSize(PHONE);
    await shot(page, "reserve-phone");
    await page.close();
  });

  test("a sold-out reserve says so and is not retried", async () => {
    const sku = unique("mug");
    await receive(server.url, sku, 1);
    const page = await context.newPage();
    const sent = [];
    page.on("request", (req) => req.url().endsWith("/api/inventory/reserve") && sent.push(req));
    await page.goto("/console/#/reserve");
    await fillReserve(page, { sku, qty: 3, orderId: unique("o") });
    const rejected = page.getByTestId("reserve-rejected");
    await rejected.waitFor(WAIT);
    const text = await rejected.innerText();
    assert.match(text, /sold out/);
    assert.match(text, /INSUFFICIENT_STOCK/);
    assert.match(text, /1 available/);
    assert.equal(sent.length, 1, "a 409 is a decision: not retried");
    await shot(page, "reserve-sold-out");
    await page.close();
  });

  test("a first attempt lost on the network is retried with its key, making exactly one hold", async () => {
    const sku = unique("pen");
    await receive(server.url, sku, 10);
    const page = await context.newPage();
    const keys = [];
    let attempts = 0;
    await page.route("**/api/inventory/reserve", async (route) => {
      keys.push(route.request().headers()["idempotency-key"]);
      attempts += 1;
      if (attempts === 1) {
        // The service makes the hold, and its answer is lost on the way back.
        const answer = await route.fetch();
        assert.equal(answer.status(), 200);
        await route.abort("connectionreset");
      } else {
        await route.continue();
      }
    });
    await page.goto("/console/#/reserve");
    const orderId = unique("o");
    await fillReserve(page, { sku, qty: 3, orderId });
    const done = page.getByTestId("reserve-done");
    await done.waitFor(WAIT);
    assert.match(await done.innerText(), /2 attempts/);
    assert.match(await done.innerText(), /already made this hold/);
    assert.equal(keys.length, 2);
    assert.ok(keys[0]?.startsWith("console:reserve:"), keys[0]);
    assert.equal(keys[1], keys[0], "both attempts carry one idempotency key");
    const order = await api(server.url, "GET", `/api/orders/${orderId}/inventory-status`);
    assert.equal(order.body.reservations.length, 1, order.text);
    const stock = await api(server.url, "GET", `/api/inventory/${sku}`);
    assert.deepEqual([stock.body.available, stock.body.reserved], [7, 3]);
    await page.close();
  });

  test("the order view falls back to the read model while the primary fails, and comes back", async (t) => {
    if (!schema) return t.skip(reason);
    const sku = unique("hat");
    await receive(server.url, sku, 4);
    const orderId = unique("o");
    const r = await api(server.url, "POST", "/api/inventory/reserve", {
      body: { orderId, skuId: sku, qty: 1, idemKey: unique("k") },
    });
    assert.equal(r.status, 200, r.text);
    await waitCaughtUp(server.url);
    const page = await context.newPage();
    await page.goto(`/console/#/order/${orderId}`);
    const hold = page.getByRole("row", { name: new RegExp(r.body.reservationId) });
    await hold.waitFor(WAIT);
    await page.getByText("live", { exact: true }).waitFor(WAIT);
    assert.equal(await page.getByTestId("degraded-badge").count(), 0);

    let failed = 0;
    const primary = `**/api/orders/${orderId}/inventory-status`;
    await page.route(primary, (route) => {
      failed += 1;
      return route.fulfill({
        status: 503,
        contentType: "application/json",
        body: JSON.stringify({ code: "OVERLOADED", message: "the shard's queue is full; retry shortly" }),
      });
    });
    await page.getByTestId("degraded-badge").waitFor(WAIT);
    assert.ok(failed >= 1);
    assert.match(await page.getByTestId("degraded-note").innerText(), /503 OVERLOADED.*PostgreSQL's copy, up to date/s);
    await hold.waitFor(WAIT);
    assert.match(await hold.innerText(), /RESERVED/);
    await shot(page, "order-degraded");
    await page.setViewportSize(PHONE);
    await shot(page, "order-degraded-phone");
    await page.setViewportSize(DESKTOP);

    await page.unroute(primary);
    await page.getByText("live", { exact: true }).waitFor(WAIT);
    await page.getByTestId("degraded-badge").waitFor({ state: "detached", ...WAIT });
    await shot(page, "order-live");
    await page.close();
  });

  test("the health page charts the metrics and evaluates the alert rules", async () => {
    const sku = unique("ink");
    await receive(server.url, sku, 1_000);
    const page = await context.newPage();
    await page.goto("/console/#/health");
    // Reserves while the page samples /metrics every 5 s.
    const until = Date.now() + 12_000;
    let made = 0;
    while (Date.now() < until) {
      const r = await api(server.url, "POST", "/api/inventory/reserve", {
        body: { orderId: unique("o"), skuId: sku, qty: 1, idemKey: unique("k") },
      });
      assert.equal(r.status, 200, r.text);
      made += 1;
      await new Promise((ok) => setTimeout(ok, 50));
    }
    assert.ok(made > 20, `${made} reserves`);
    const rate = page.getByRole("img", { name: /^Reserve rate: / });
    await page.waitForFunction(
      () => /Reserve rate: [1-9]/.test(document.querySelector('svg[aria-label^="Reserve rate"]')?.getAttribute("aria-label") ?? ""),
      null,
      { timeout: 20_000 },
    );
    assert.match(await rate.getAttribute("aria-label"), /\/s$/);
    assert.match(await page.getByRole("img", { name: /^Reserve p95/ }).getAttribute("aria-label"), /\d+(\.\d+)? ms$/);
    await page.getByRole("img", { name: "Timeout backlog: 0" }).waitFor(WAIT);
    await page.getByRole("img", { name: "Reserve 5xx rate: 0.00 %" }).waitFor(WAIT);
    const rules = page.getByRole("table");
    for (const rule of ["InventoryReserveLatencyHigh", "InventoryReserveErrorRateHigh", "InventoryOversellDetected"]) {
      assert.match(await rules.getByRole("row", { name: new RegExp(rule) }).innerText(), /\bok\b/i, rule);
    }
    assert.match(await rules.getByRole("row", { name: /InventoryEventStreamLagHigh/ }).innerText(), /no data/i);
    await page.getByText(/approximation of the Prometheus rules/).waitFor(WAIT);
    await shot(page, "health");
    await page.setViewportSize(PHONE);
    await shot(page, "health-phone");
    await page.close();
  });

  test("operations and sign-in pages, without a token", async () => {
    const page = await context.newPage();
    await page.goto("/console/#/sign-in");
    await page.getByRole("textbox", { name: /Operator name/ }).fill("olga");
    await page.getByRole("button", { name: "Save" }).click();
    await page.getByTestId("identity").getByText("olga (X-Operator)").waitFor(WAIT);
    await shot(page, "sign-in");
    await page.goto("/console/#/ops");
    await page.getByTestId("acting-as").getByText("olga").waitFor(WAIT);
    await page.getByRole("button", { name: "Run reconciliation" }).click();
    const report = page.getByTestId("reconcile-report");
    await report.waitFor({ timeout: 60_000 });
    assert.match(await report.innerText(), /consistent/i);
    await shot(page, "operations");
    await page.setViewportSize(PHONE);
    await shot(page, "operations-phone");
    await page.close();
  });

  test("freeze, and a transfer dispatched, overdue, then cancelled, from the operations page", async () => {
    const sku = unique("jar");
    await receive(server.url, sku, 9, "east");
    const page = await context.newPage();
    await page.goto("/console/#/sign-in");
    await page.getByRole("textbox", { name: /Operator name/ }).fill("omar");
    await page.getByRole("button", { name: "Save" }).click();
    await page.goto("/console/#/ops");

    const freeze = page.getByRole("region", { name: "Freeze or unfreeze an SKU" });
    await freeze.getByLabel("SKU").fill(sku);
    await freeze.getByLabel("Reason").fill("damaged shelf");
    await freeze.getByRole("button", { name: "Freeze", exact: true }).click();
    await freeze.getByText(/east frozen/).waitFor(WAIT);
    await freeze.getByRole("button", { name: "Unfreeze" }).click();
    await freeze.getByText(/east on sale/).waitFor(WAIT);

    const dispatch = page.getByRole("form", { name: "Dispatch a transfer" });
    await dispatch.getByLabel("SKU").fill(sku);
    await dispatch.getByLabel("From warehouse").fill("east");
    await dispatch.getByLabel("To warehouse").fill("west");
    await dispatch.getByLabel("Quantity").fill("4");
    await dispatch.getByLabel("Reason").fill("rebalance");
    await dispatch.getByLabel(/Expected in/).fill("1");
    await dispatch.getByRole("button", { name: "Dispatch" }).click();
    const sent = await dispatch.getByRole("status").innerText({ timeout: 15_000 });
    const id = sent.match(/trf-\d+-\d+/)?.[0];
    assert.ok(id, sent);
    let stock = await api(server.url, "GET", `/api/inventory/${sku}`);
    assert.deepEqual([stock.body.available, stock.body.inTransit], [5, 4], stock.text);

    await page.getByRole("radio", { name: "overdue only" }).check();
    const item = page.getByRole("list", { name: "Transfers" }).getByRole("listitem").filter({ hasText: id });
    await item.getByText("overdue", { exact: true }).waitFor({ timeout: 20_000 });
    await item.getByLabel("Reason").fill("truck cancelled");
    await item.getByRole("button", { name: "Cancel" }).click();
    await item.waitFor({ state: "detached", ...WAIT });
    const record = await api(server.url, "GET", `/api/admin/transfers/${id}`, { operator: "omar" });
    assert.equal(record.body.status, "CANCELLED", record.text);
    assert.equal(record.body.cancelReason, "truck cancelled");
    assert.equal(record.body.createdBy, "omar");
    stock = await api(server.url, "GET", `/api/inventory/${sku}`);
    assert.deepEqual([stock.body.available, stock.body.inTransit], [9, 0], stock.text);
    await page.close();
  });

  test("an operator limits an SKU to 1 unit per buyer; the buyer's second reserve says limit reached", async () => {
    const sku = unique("toy");
    await receive(server.url, sku, 10);
    const page = await context.newPage();
    await signInAs(page, "pia");
    await page.goto("/console/#/ops");
    const form = page.getByRole("form", { name: "Sale policy" });
    await form.getByLabel("SKU").fill(sku);
    await form.getByLabel("Limit per buyer").fill("1");
    await form.getByRole("button", { name: "Set policy" }).click();
    const result = page.getByTestId("policy-result");
    await result.waitFor(WAIT);
    assert.match(await result.innerText(), /1 unit per buyer; no sale window; no channel quotas/);
    await shot(page, "operations-policy");

    // The Stock page shows it, and counts the buyers.
    await page.goto(`/console/#/stock/${sku}`);
    await page.getByTestId("policy").waitFor(WAIT);
    assert.equal(await page.getByTestId("policy-limit").innerText(), "1 unit per buyer");
    assert.match(await page.getByTestId("policy-buyers").innerText(), /^0 holding/);

    await page.goto("/console/#/reserve");
    const first = unique("o");
    await fillReserve(page, { sku, qty: 1, orderId: first, buyer: "buyer-7" });
    await page.getByTestId("reserve-done").waitFor(WAIT);
    // The same buyer again, for another order: refused, and not retried.
    const sent = [];
    page.on("request", (req) => req.url().endsWith("/api/inventory/reserve") && sent.push(req.postDataJSON()));
    await fillReserve(page, { sku, qty: 1, orderId: unique("o"), buyer: "buyer-7" });
    const rejected = page.getByTestId("reserve-rejected");
    await rejected.waitFor(WAIT);
    const text = await rejected.innerText();
    assert.match(text, /Not reserved: limit reached/);
    assert.match(text, /PURCHASE_LIMIT_EXCEEDED \(409\)/);
    assert.match(text, /limit 1 per buyer, 1 already held or bought/);
    assert.equal(sent.length, 1, "a 409 is a decision: not retried");
    assert.equal(sent[0].buyerId, "buyer-7");
    assert.equal(sent[0].channel, undefined, "an empty channel is not sent");
    await shot(page, "reserve-limit-reached");
    await page.setViewportSize(PHONE);
    await shot(page, "reserve-limit-reached-phone");
    await page.setViewportSize(DESKTOP);
    // Without a buyer the SKU refuses too, in words.
    await fillReserve(page, { sku, qty: 1, orderId: unique("o") });
    await page.getByTestId("reserve-rejected").getByText(/a buyer is required/).waitFor(WAIT);

    const stock = await api(server.url, "GET", `/api/inventory/${sku}`);
    assert.deepEqual([stock.body.reserved, stock.body.policy.buyers], [1, 1], stock.text);
    await page.goto(`/console/#/stock/${sku}`);
    await page.getByTestId("policy-buyers").getByText(/^1 holding/).waitFor(WAIT);
    await page.close();
  });

  test("a sale window and channel quotas on the Stock page, their refusals, and the policy removed", async () => {
    const sku = unique("kit");
    await receive(server.url, sku, 20);
    const starts = new Date(Date.now() - 60_000).toISOString();
    const ends = new Date(Date.now() + 3_600_000).toISOString();
    const set = await api(server.url, "PUT", `/api/admin/skus/${sku}/policy`, {
      body: { saleStartsAt: starts, saleEndsAt: ends, channelQuotas: { web: 3, app: 2 }, idemKey: unique("pol") },
      operator: "ops",
    });
    assert.equal(set.status, 200, set.text);
    const r = await api(server.url, "POST", "/api/inventory/reserve", {
      body: { orderId: unique("o"), skuId: sku, qty: 2, channel: "app", idemKey: unique("k") },
    });
    assert.equal(r.status, 200, r.text);

    const page = await context.newPage();
    await page.goto(`/console/#/stock/${sku}`);
    await page.getByTestId("policy").waitFor(WAIT);
    assert.equal(await page.getByTestId("policy-limit").innerText(), "no limit");
    assert.match(await page.getByTestId("policy-window").innerText(), /^from .+ until .+open$/is);
    assert.match(await page.getByTestId("policy-buyers").innerText(), /not counted/);
    const quotas = page.getByRole("table", { name: "Channel quotas" });
    assert.match(await quotas.getByRole("row", { name: /app/ }).innerText(), /app\s+2\s+2\s+0/);
    assert.match(await quotas.getByRole("row", { name: /web/ }).innerText(), /web\s+3\s+0\s+3/);
    await shot(page, "stock-policy");
    await page.setViewportSize(PHONE);
    await shot(page, "stock-policy-phone");
    await page.setViewportSize(DESKTOP);

    await page.goto("/console/#/reserve");
    await fillReserve(page, { sku, qty: 1, orderId: unique("o") });
    await page.getByTestId("reserve-rejected").getByText(/a sales channel is required/).waitFor(WAIT);
    await fillReserve(page, { sku, qty: 1, orderId: unique("o"), channel: "phone" });
    await page.getByTestId("reserve-rejected").getByText(/this channel has no quota/).waitFor(WAIT);
    await fillReserve(page, { sku, qty: 1, orderId: unique("o"), channel: "app" });
    await page.getByTestId("reserve-rejected").getByText(/quota 2, 2 held or sold/).waitFor(WAIT);
    assert.match(await page.getByTestId("reserve-rejected").innerText(), /the channel's quota is used up/);
    await fillReserve(page, { sku, qty: 1, orderId: unique("o"), channel: "web" });
    await page.getByTestId("reserve-done").waitFor(WAIT);

    // A sale that has not started says when it starts.
    const later = new Date(Date.now() + 3_600_000).toISOString();
    const moved = await api(server.url, "PUT", `/api/admin/skus/${sku}/policy`, {
      body: { saleStartsAt: later, idemKey: unique("pol") },
      operator: "ops",
    });
    assert.equal(moved.status, 200, moved.text);
    await fillReserve(page, { sku, qty: 1, orderId: unique("o") });
    const early = page.getByTestId("reserve-rejected");
    await early.getByText(/the sale has not started/).waitFor(WAIT);
    assert.match(await early.getByTestId("error-detail").innerText(), /^starts \S/);

    // Removed from the Operations page.
    await signInAs(page, "pia");
    await page.goto("/console/#/ops");
    const form = page.getByRole("form", { name: "Sale policy" });
    await form.getByLabel("SKU").fill(sku);
    await form.getByRole("button", { name: "Remove policy" }).click();
    await page.getByTestId("policy-result").getByText("no sale policy").waitFor(WAIT);
    const stock = await api(server.url, "GET", `/api/inventory/${sku}`);
    assert.equal(stock.body.policy, undefined, stock.text);
    await page.goto(`/console/#/stock/${sku}`);
    await page.getByText(/No sale policy/).waitFor(WAIT);
    await page.close();
  });

  test("unknown console paths get the console, missing assets do not", async () => {
    const deep = await fetch(`${server.url}/console/some/deep/link`);
    assert.equal(deep.status, 200);
    assert.match(deep.headers.get("content-type"), /text\/html/);
    assert.equal(deep.headers.get("cache-control"), "no-cache");
    const html = await deep.text();
    const asset = html.match(/\/console\/(assets\/[^"]+\.js)/)?.[1];
    assert.ok(asset, html);
    const js = await fetch(`${server.url}/console/${asset}`);
    assert.equal(js.status, 200);
    assert.match(js.headers.get("content-type"), /javascript/);
    assert.match(js.headers.get("cache-control"), /immutable/);
    const etag = js.headers.get("etag");
    const again = await fetch(`${server.url}/console/${asset}`, { headers: { "if-none-match": etag } });
    assert.equal(again.status, 304);
    const missing = await fetch(`${server.url}/console/assets/nope-123.js`);
    assert.equal(missing.status, 404);
    const root = await fetch(`${server.url}/console`, { redirect: "manual" });
    assert.equal(root.status, 308);
    assert.equal(root.headers.get("location"), "/console/");
  });
});

describe("with --auth jwt: two operators and an adjustment", () => {
  let server;
  let secret;
  let tokens;

  before(async () => {
    secret = secretFile();
    server = await startInventoryd("auth", ["--auth", "jwt", "--jwt-hs256-secret-file", secret]);
    tokens = {
      ann: token(secret, "ann", ["operator", "approver", "reader"]),
      bob: token(secret, "bob", ["approver", "reader"]),
      receiver: token(secret, "rita", ["receiver"]),
      reader: token(secret, "rex", ["reader"]),
    };
  });

  after(async () => {
    await server?.stop();
  });

  async function signIn(name) {
    const context = await browser.newContext({ viewport: DESKTOP, baseURL: server.url });
    const page = await context.newPage();
    await page.goto("/console/#/sign-in");
    await page.getByLabel("Bearer token").fill(tokens[name]);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByTestId("signed-in").waitFor(WAIT);
    return { context, page };
  }

  test("an adjustment proposed by one operator is approved by another", async () => {
    const sku = unique("box");
    await receive(server.url, sku, 10, undefined, { token: tokens.receiver });
    const ann = await signIn("ann");
    const claims = await ann.page.getByTestId("signed-in").innerText();
    assert.match(claims, /ann/);
    assert.match(claims, /operator, approver, reader/);
    await shot(ann.page, "sign-in-token");

    await ann.page.goto("/console/#/ops");
    const propose = ann.page.getByRole("form", { name: "Propose an adjustment" });
    await propose.getByLabel("SKU").fill(sku);
    await propose.getByLabel(/Units/).fill("5");
    await propose.getByLabel("Reason").fill("found a carton");
    await propose.getByRole("button", { name: "Propose adjustment" }).click();
    const proposed = await propose.getByRole("status").innerText({ timeout: 15_000 });
    const id = proposed.match(/adj-\d+-\d+/)?.[0];
    assert.ok(id, proposed);

    // Ann may not approve her own: the button is disabled, and says why.
    const annItem = ann.page.getByTestId(`adjustment-${id}`);
    await annItem.waitFor(WAIT);
    assert.equal(await annItem.getByRole("button", { name: "Approve" }).isDisabled(), true);
    await annItem.getByTestId("own-adjustment").waitFor(WAIT);
    await shot(ann.page, "operations-own-adjustment");

    // Bob, in another browser, sees it pending and approves it.
    const bob = await signIn("bob");
    await bob.page.goto("/console/#/ops");
    const bobItem = bob.page.getByTestId(`adjustment-${id}`);
    await bobItem.waitFor(WAIT);
    assert.equal(await bob.page.getByTestId("own-adjustment").count(), 0);
    // Bob is no operator: no propose form, no freeze, no transfers.
    assert.equal(await bob.page.getByRole("form", { name: "Propose an adjustment" }).count(), 0);
    assert.equal(await bob.page.getByRole("heading", { name: "Transfers between warehouses" }).count(), 0);
    const approve = bobItem.getByRole("button", { name: "Approve" });
    assert.equal(await approve.isDisabled(), false);
    await approve.click();
    await bobItem.waitFor({ state: "detached", ...WAIT });
    await annItem.waitFor({ state: "detached", timeout: 20_000 });

    const record = await api(server.url, "GET", `/api/admin/adjustments/${id}`, { token: tokens.ann });
    assert.equal(record.body.status, "APPLIED", record.text);
    assert.equal(record.body.proposedBy, "ann");
    assert.equal(record.body.approvedBy, "bob");
    const stock = await api(server.url, "GET", `/api/inventory/${sku}`, { token: tokens.reader });
    assert.equal(stock.body.available, 15, stock.text);
    await ann.context.close();
    await bob.context.close();
  });

  test("without a token the API calls are refused and the page says to sign in", async () => {
    const context = await browser.newContext({ viewport: DESKTOP, baseURL: server.url });
    const page = await context.newPage();
    await page.goto("/console/#/stock/anything");
    await page.getByText(/sign in first/).waitFor(WAIT);
    await context.close();
  });
});
