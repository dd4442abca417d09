//! How values look in the output: table cells, and the JSON of a txn.

use inventory_core::{Levels, Txn};
use serde_json::{json, Value};

use super::time::fmt_time;

/// A value for a table, quoted when it is empty or would blur the columns
/// (and so that control characters never reach the terminal).
pub fn shown(value: &str) -> String {
    if value.is_empty() || value.chars().any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '=') {
        format!("{value:?}")
    } else {
        value.to_string()
    }
}

/// `key=value`, the value [`shown`].
pub fn kv(key: &str, value: &str) -> String {
    format!("{key}={}", shown(value))
}

/// A table cell: `-` when empty, else [`shown`].
pub fn dash(s: &str) -> String {
    if s.is_empty() {
        "-".to_string()
    } else {
        shown(s)
    }
}

pub fn fmt_levels(l: &Levels) -> String {
    format!("{}/{}/{}", l.available, l.reserved, l.sold)
}

pub fn trace_hex(trace_id: u128) -> String {
    format!("{trace_id:032x}")
}

fn levels_json(l: &Levels) -> Value {
    json!({"available": l.available, "reserved": l.reserved, "sold": l.sold})
}

pub fn txn_json(t: &Txn) -> Value {
    json!({
        "txnId": t.txn_id, "type": t.kind.as_str(), "skuId": t.sku_id, "warehouseId": t.warehouse_id,
        "qty": t.qty, "refId": t.ref_id, "orderId": t.order_id, "detail": t.detail,
        "before": levels_json(&t.before), "after": levels_json(&t.after), "version": t.version,
        "atMs": t.at, "at": fmt_time(t.at),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_values_are_quoted_when_they_would_blur_columns() {
        assert_eq!(kv("sku", "a-1"), "sku=a-1");
        assert_eq!(kv("ref", ""), "ref=\"\"");
        assert_eq!(kv("reason", "out of stock"), "reason=\"out of stock\"");
        assert_eq!(shown("a\x1b[2J"), "\"a\\u{1b}[2J\"");
    }
}
