import { describe, expect, it } from "vitest";
import { describeCode, describeDetail } from "./errors";

describe("describeCode", () => {
  it("says each policy refusal in words", () => {
    expect(describeCode("PURCHASE_LIMIT_EXCEEDED")).toBe("limit reached");
    expect(describeCode("BUYER_REQUIRED")).toMatch(/buyer is required/);
    expect(describeCode("SALE_NOT_STARTED")).toBe("the sale has not started");
    expect(describeCode("SALE_ENDED")).toBe("the sale has ended");
    expect(describeCode("CHANNEL_REQUIRED")).toMatch(/channel is required/);
    expect(describeCode("UNKNOWN_CHANNEL")).toMatch(/no quota/);
    expect(describeCode("CHANNEL_QUOTA_EXHAUSTED")).toMatch(/quota is used up/);
    expect(describeCode("SOMETHING_NEW")).toBe("something new");
  });
});

describe("describeDetail", () => {
  it("puts the detail fields in words", () => {
    expect(describeDetail({ code: "PURCHASE_LIMIT_EXCEEDED", message: "", limit: 1, held: 1 })).toBe(
      "limit 1 per buyer, 1 already held or bought",
    );
    expect(describeDetail({ code: "RISK_CHECK_REQUIRED", message: "", limit: 10, held: 9 })).toBe("limit 10, 9 held");
    expect(describeDetail({ code: "SALE_NOT_STARTED", message: "", startsAt: "2026-12-24T10:00:00.000Z" }, () => "then")).toBe(
      "starts then",
    );
    expect(describeDetail({ code: "CHANNEL_QUOTA_EXHAUSTED", message: "", quota: 5, used: 5 })).toBe("quota 5, 5 held or sold");
    expect(describeDetail({ code: "INSUFFICIENT_STOCK", message: "", available: 0 })).toBe("0 available");
  });

  it("is null without details, and ignores nulls", () => {
    expect(describeDetail({ code: "SALE_ENDED", message: "" })).toBeNull();
    expect(describeDetail({ code: "X", message: "", available: null, limit: null, held: null })).toBeNull();
  });
});
