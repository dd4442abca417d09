import { describe, expect, it } from "vitest";
import type { Policy } from "../api/types";
import { describePolicy, parseQuotas, policyRequest, windowState } from "./policy";

const at = (iso: string) => Date.parse(iso);
const same = (iso: string) => iso;

describe("describePolicy", () => {
  it("shows a limit, a window, and each channel's quota, use and rest", () => {
    const policy: Policy = {
      maxPerBuyer: 2,
      saleStartsAt: "2026-12-24T10:00:00.000Z",
      saleEndsAt: "2026-12-24T12:00:00.000Z",
      channelQuotas: { web: 10, app: 5 },
      channelsUsed: { web: 3, app: 7 },
      buyers: 4,
    };
    const v = describePolicy(policy, at("2026-12-24T11:00:00Z"), same);
    expect(v.limit).toBe("2 units per buyer");
    expect(v.window).toBe("open");
    expect(v.windowText).toBe("from 2026-12-24T10:00:00.000Z until 2026-12-24T12:00:00.000Z");
    expect(v.channels).toEqual([
      { channel: "app", quota: 5, used: 7, left: 0 },
      { channel: "web", quota: 10, used: 3, left: 7 },
    ]);
    expect([v.buyers, v.buyersCounted]).toEqual([4, true]);
  });

  it("says what is absent: no limit, no window, buyers not counted", () => {
    const v = describePolicy({ channelQuotas: { web: 1 }, buyers: 0 }, 0, same);
    expect(v.limit).toBe("no limit");
    expect([v.window, v.windowText]).toEqual(["always", "any time"]);
    expect(v.buyersCounted).toBe(false);
    expect(describePolicy({ maxPerBuyer: 1, buyers: 0 }, 0, same).limit).toBe("1 unit per buyer");
    // Nulls are how the document allows an absent field to be sent.
    expect(describePolicy({ maxPerBuyer: null, saleStartsAt: null, saleEndsAt: null, buyers: 0 }, 0, same).limit).toBe("no limit");
  });

  it("lists a channel that used units but has no quota", () => {
    const v = describePolicy({ channelQuotas: { web: 2 }, channelsUsed: { shop: 1 }, buyers: 0 }, 0, same);
    expect(v.channels).toContainEqual({ channel: "shop", quota: null, used: 1, left: null });
  });
});

describe("windowState", () => {
  const policy: Policy = { saleStartsAt: "2026-12-24T10:00:00Z", saleEndsAt: "2026-12-24T12:00:00Z", buyers: 0 };
  it("is not started before the start, open from it, ended from the end", () => {
    expect(windowState(policy, at("2026-12-24T09:59:59Z"))).toBe("not started");
    expect(windowState(policy, at("2026-12-24T10:00:00Z"))).toBe("open");
    expect(windowState(policy, at("2026-12-24T12:00:00Z"))).toBe("ended");
    expect(windowState({ saleEndsAt: "2026-12-24T12:00:00Z", buyers: 0 }, 0)).toBe("open");
  });
});

describe("policyRequest", () => {
  const empty = { maxPerBuyer: "", saleStartsAt: "", saleEndsAt: "", channelQuotas: "" };

  it("sends only the rules given, times in UTC", () => {
    expect(policyRequest({ ...empty, maxPerBuyer: " 1 " })).toEqual({ ok: true, value: { maxPerBuyer: 1 } });
    const r = policyRequest({ ...empty, saleStartsAt: "2026-12-24T10:00:00Z", channelQuotas: "web=100, app: 50\nshop=0" });
    expect(r).toEqual({
      ok: true,
      value: { saleStartsAt: "2026-12-24T10:00:00.000Z", channelQuotas: { web: 100, app: 50, shop: 0 } },
    });
  });

  it("reads a datetime-local value as local time", () => {
    const r = policyRequest({ ...empty, saleEndsAt: "2026-12-24T10:00" });
    expect(r).toEqual({ ok: true, value: { saleEndsAt: new Date(2026, 11, 24, 10, 0).toISOString() } });
  });

  it("refuses what the service would, before sending", () => {
    expect(policyRequest(empty)).toMatchObject({ ok: false });
    expect(policyRequest({ ...empty, maxPerBuyer: "0" })).toMatchObject({ ok: false, problem: /at least 1/ });
    expect(policyRequest({ ...empty, maxPerBuyer: "1.5" })).toMatchObject({ ok: false });
    expect(policyRequest({ ...empty, saleStartsAt: "soon" })).toMatchObject({ ok: false, problem: /sale start/ });
    expect(
      policyRequest({ ...empty, saleStartsAt: "2026-12-24T12:00:00Z", saleEndsAt: "2026-12-24T10:00:00Z" }),
    ).toMatchObject({ ok: false, problem: /end after/ });
    expect(policyRequest({ ...empty, channelQuotas: "web=-1" })).toMatchObject({ ok: false, problem: /channel=units/ });
  });
});

describe("parseQuotas", () => {
  it("refuses a channel named twice", () => {
    expect(parseQuotas("web=1, web=2")).toMatchObject({ ok: false, problem: /twice/ });
    expect(parseQuotas(" , ")).toEqual({ ok: true, value: {} });
  });
});
