//! One stock change as a CloudEvents 1.0 JSON event.
//!
//! An event is made from one journaled [`Txn`] (or, after a restore, from
//! that txn's row in PostgreSQL): the same change always makes the same
//! bytes, so a re-delivery carries the same `id` and a consumer can drop it.

use std::time::{Duration, UNIX_EPOCH};

use inventory_core::{Levels, Millis, Txn, TxnKind, REASON_TIMEOUT};
use serde_json::{json, Value};

/// The CloudEvents `specversion` the service emits.
pub const SPEC_VERSION: &str = "1.0";

/// Every event's subject (and CloudEvents `type`) starts with this; the
/// stream takes `inventory.>`.
pub const SUBJECT_PREFIX: &str = "inventory.";

/// What an event is made of: a txn's fields, plus where it was journaled
/// and who asked for it. Built from a journal entry or a PostgreSQL row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub shard: u16,
    pub seq: u64,
    pub txn_id: u64,
    pub kind: TxnKind,
    pub sku_id: String,
    pub warehouse_id: String,
    /// The signed change of units ([`Txn::delta`]).
    pub qty: i64,
    pub ref_id: String,
    pub order_id: String,
    pub detail: String,
    pub after: Levels,
    pub version: u64,
    pub at: Millis,
    pub trace_id: u128,
    pub operator: String,
}

impl Change {
    pub fn of_txn(shard: u16, seq: u64, trace_id: u128, operator: &str, t: &Txn) -> Change {
        Change {
            shard,
            seq,
            txn_id: t.txn_id,
            kind: t.kind,
            sku_id: t.sku_id.clone(),
            warehouse_id: t.warehouse_id.clone(),
            qty: t.delta(),
            ref_id: t.ref_id.clone(),
            order_id: t.order_id.clone(),
            detail: t.detail.clone(),
            after: t.after,
            version: t.version,
            at: t.at,
            trace_id,
            operator: operator.to_string(),
        }
    }

    /// The event's type without the prefix: `reserved`, `expired`, ...
    pub fn event_type(&self) -> &'static str {
        match self.kind {
            TxnKind::Receive => "received",
            TxnKind::Reserve => "reserved",
            TxnKind::Confirm => "confirmed",
            TxnKind::Release if self.detail == REASON_TIMEOUT => "expired",
            TxnKind::Release => "released",
            TxnKind::Freeze => "frozen",
            TxnKind::Unfreeze => "unfrozen",
            TxnKind::AdjustProposed => "adjustment_proposed",
            TxnKind::AdjustApplied => "adjusted",
            TxnKind::AdjustRejected => "adjustment_rejected",
            TxnKind::AdjustExpired => "adjustment_expired",
            TxnKind::TransferOut => "transfer_dispatched",
            TxnKind::TransferIncoming => "transfer_incoming",
            TxnKind::TransferIn => "transfer_arrived",
            TxnKind::TransferReturned => "transfer_returned",
            TxnKind::TransferCancelled => "transfer_cancelled",
            TxnKind::Repair => "repaired",
            TxnKind::PolicySet => "policy_set",
            TxnKind::PolicyRemoved => "policy_removed",
        }
    }

    /// The NATS subject and CloudEvents `type`: `inventory.<type>`.
    pub fn subject(&self) -> String {
        format!("{SUBJECT_PREFIX}{}", self.event_type())
    }

    /// The event id: the txn id, which is unique per change, and a hash of
    /// the change itself. The hash keeps ids unique when a data dir
    /// restored from PostgreSQL hands out again the txn ids of changes that
    /// were lost with the machine (their events may have been published).
    pub fn id(&self) -> String {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(&self.at.to_le_bytes());
        h.update(self.kind.as_str().as_bytes());
        for s in [&self.sku_id, &self.warehouse_id, &self.ref_id] {
            h.update(&(s.len() as u32).to_le_bytes());
            h.update(s.as_bytes());
        }
        h.update(&self.qty.to_le_bytes());
        format!("{:016x}-{:08x}", self.txn_id, h.digest() as u32)
    }

    /// The CloudEvent as JSON. `source` names the service instance.
    pub fn to_cloud_event(&self, source: &str) -> Value {
        let time = humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(self.at)).to_string();
        let mut data = json!({
            "skuId": self.sku_id, "warehouseId": self.warehouse_id, "qty": self.qty,
            "refId": self.ref_id, "orderId": self.order_id,
            "available": self.after.available, "reserved": self.after.reserved, "sold": self.after.sold,
            "version": self.version, "txnId": self.txn_id, "shard": self.shard, "seq": self.seq,
            "operator": self.operator,
        });
        if !self.detail.is_empty() {
            data["detail"] = self.detail.clone().into();
        }
        let mut event = json!({
            "specversion": SPEC_VERSION, "id": self.id(), "type": self.subject(), "source": source,
            "subject": self.sku_id, "time": time, "datacontenttype": "application/json", "data": data,
        });
        if self.trace_id != 0 {
            // The parent span is the change's own: stable across re-delivery.
            let span = (self.txn_id ^ self.trace_id as u64) | 1;
            event["traceparent"] = format!("00-{:032x}-{:016x}-01", self.trace_id, span).into();
        }
        event
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change() -> Change {
        Change {
            shard: 1,
            seq: 42,
            txn_id: (1 << 48) | 7,
            kind: TxnKind::Release,
            sku_id: "sku-1".into(),
            warehouse_id: "WH1".into(),
            qty: 2,
            ref_id: "r-1".into(),
            order_id: "o-1".into(),
            detail: REASON_TIMEOUT.into(),
            after: Levels { available: 5, reserved: 0, sold: 3 },
            version: 9,
            at: 1_700_000_000_123,
            trace_id: 0xabc,
            operator: "system".into(),
        }
    }

    #[test]
    fn an_event_is_a_cloud_event_with_the_change_and_the_counters_after_it() {
        let e = change().to_cloud_event("inventoryd");
        assert_eq!(e["specversion"], "1.0");
        assert_eq!(e["type"], "inventory.expired");
        assert_eq!(e["subject"], "sku-1");
        assert_eq!(e["time"], "2023-11-14T22:13:20.123Z");
        assert_eq!(e["data"]["available"], 5);
        assert_eq!(e["data"]["detail"], "TIMEOUT");
        assert!(e["traceparent"].as_str().unwrap().starts_with("00-00000000000000000000000000000abc-"));
        let mut untraced = change();
        untraced.trace_id = 0;
        assert!(untraced.to_cloud_event("x").get("traceparent").is_none());
    }

    #[test]
    fn the_id_is_stable_for_a_change_and_differs_for_another_change_with_the_same_txn_id() {
        let a = change();
        assert_eq!(a.id(), change().id());
        assert_eq!(a.to_cloud_event("s"), change().to_cloud_event("s"));
        assert!(a.id().starts_with("0001000000000007-"));
        let mut other = change();
        other.at += 1;
        assert_ne!(a.id(), other.id());
    }
}
