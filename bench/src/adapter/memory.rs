//! The in-memory reference: the service's API over maps in the adapter's
//! own memory, behind one mutex, with nothing written anywhere. It has the
//! semantics of the other backends (idempotency keys, one hold per order
//! line, confirm/release/expiry, the same JSON), so the same workload and
//! audit run against it, but an acknowledged write is lost with the
//! process.
//!
//! It keeps every hold and idempotency record for the life of the process:
//! fine for runs of minutes, not for the 30-minute `double-peak` at full
//! rate.
//!
//! It is not an alternative for a durable reservation service. It measures
//! the floor under every target here: what one HTTP/1.1 request costs on
//! this machine through the harness's client and a hyper server, when the
//! request itself costs next to nothing.

use std::collections::BTreeSet;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use serde_json::json;

use super::{ConfirmBody, ReceiveBody, ReleaseBody, Reply, ReserveBody, SeedBody, DEFAULT_TTL_SECS, EXPIRY_BATCH_MAX};
use crate::Result;

#[derive(Clone, Copy, Default)]
struct Row {
    available: u64,
    reserved: u64,
    sold: u64,
    version: u64,
    updated_ms: i64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Status {
    Reserved,
    Confirmed,
    Released,
    Expired,
}

impl Status {
    fn name(self) -> &'static str {
        match self {
            Status::Reserved => "RESERVED",
            Status::Confirmed => "CONFIRMED",
            Status::Released => "RELEASED",
            Status::Expired => "EXPIRED",
        }
    }
}

/// How a RESERVED hold ends.
enum Settle {
    Confirm(String),
    Release(String),
    Expire,
}

struct Hold {
    order_id: String,
    sku_id: String,
    warehouse_id: String,
    qty: u64,
    status: Status,
    expire_ms: i64,
    created_ms: i64,
    updated_ms: i64,
    payment_id: Option<String>,
    release_reason: Option<String>,
}

/// A stored reply, replayed for a repeated idempotency key.
#[derive(Clone)]
struct Stored {
    status: u16,
    body: Vec<u8>,
}

impl Stored {
    fn reply(&self) -> Reply {
        Reply::new(self.status, self.body.clone())
    }
}

#[derive(Default)]
struct State {
    /// Keyed by `(sku, warehouse)`.
    stock: FxHashMap<(String, String), Row>,
    /// Warehouses per SKU, sorted.
    warehouses: FxHashMap<String, BTreeSet<String>>,
    holds: FxHashMap<String, Hold>,
    /// `(order, sku)` to its hold.
    lines: FxHashMap<(String, String), String>,
    idem: FxHashMap<String, Stored>,
    /// RESERVED holds by expiry time.
    expiry: BTreeSet<(i64, String)>,
    seq: u64,
}

impl State {
    /// Settles a RESERVED hold: confirmed (its units sold), or released or
    /// expired (its units available again).
    fn settle(&mut self, id: &str, how: Settle, now: i64) {
        let Some(hold) = self.holds.get_mut(id) else { return };
        if hold.status != Status::Reserved {
            return;
        }
        let confirmed = matches!(how, Settle::Confirm(_));
        match how {
            Settle::Confirm(payment) => (hold.status, hold.payment_id) = (Status::Confirmed, Some(payment)),
            Settle::Release(reason) => (hold.status, hold.release_reason) = (Status::Released, Some(reason)),
            Settle::Expire => (hold.status, hold.release_reason) = (Status::Expired, Some("TIMEOUT".into())),
        }
        hold.updated_ms = now;
        self.expiry.remove(&(hold.expire_ms, id.to_string()));
        if let Some(row) = self.stock.get_mut(&(hold.sku_id.clone(), hold.warehouse_id.clone())) {
            row.reserved -= hold.qty;
            if confirmed {
                row.sold += hold.qty;
            } else {
                row.available += hold.qty;
            }
            row.version += 1;
            row.updated_ms = now;
        }
    }

    /// What a confirm or release sees of hold `id`: `(status, due)` (`due`:
    /// its expiry has passed), or the reply to give at once (the stored one
    /// of a repeated key, or not found).
    fn settling(&self, idem_key: &str, id: &str, now: i64) -> std::result::Result<(&Hold, bool), Reply> {
        if let Some(stored) = self.idem.get(idem_key) {
            return Err(stored.reply());
        }
        match self.holds.get(id) {
            Some(hold) => Ok((hold, hold.expire_ms <= now)),
            None => Err(Reply::error(404, "RESERVATION_NOT_FOUND", "no such reservation")),
        }
    }

    fn remember(&mut self, idem_key: String, reply: Reply) -> Reply {
        self.idem.insert(idem_key, Stored { status: reply.status, body: reply.body.clone() });
        reply
    }
}

pub struct MemoryBackend {
    state: Mutex<State>,
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn hold_reply(id: &str, status: Status) -> Reply {
    Reply::new(200, serde_json::to_vec(&json!({"reservationId": id, "status": status.name()})).expect("json"))
}

impl MemoryBackend {
    pub fn new() -> MemoryBackend {
        MemoryBackend { state: Mutex::new(State::default()) }
    }

    pub async fn receive(&self, b: ReceiveBody) -> Result<Reply> {
        let wh = b.warehouse_id.unwrap_or_else(|| "default".into());
        let now = now_ms();
        let mut s = self.state.lock();
        if let Some(stored) = s.idem.get(&b.idem_key) {
            return Ok(stored.reply());
        }
        s.warehouses.entry(b.sku_id.clone()).or_default().insert(wh.clone());
        let row = s.stock.entry((b.sku_id.clone(), wh.clone())).or_default();
        row.available += b.qty;
        row.version += 1;
        row.updated_ms = now;
        let row = *row;
        let body = json!({"skuId": b.sku_id, "warehouseId": wh, "available": row.available,
                          "reserved": row.reserved, "sold": row.sold, "version": row.version, "updatedAt": now});
        let reply = Reply::new(200, serde_json::to_vec(&body).expect("json"));
        Ok(s.remember(b.idem_key, reply))
    }

    pub async fn reserve(&self, b: ReserveBody) -> Result<Reply> {
        let wh = b.warehouse_id.unwrap_or_else(|| "default".into());
        let ttl_ms = (b.ttl_seconds.unwrap_or(DEFAULT_TTL_SECS) * 1000) as i64;
        let now = now_ms();
        let mut guard = self.state.lock();
        let s = &mut *guard;
        if let Some(stored) = s.idem.get(&b.idem_key) {
            return Ok(stored.reply());
        }
        let line = (b.order_id.clone(), b.sku_id.clone());
        if let Some(existing) = s.lines.get(&line) {
            let body = json!({"code": "DUPLICATE_ORDER_LINE",
                              "message": format!("order line already has hold {existing}"),
                              "reservationId": existing});
            return Ok(Reply::new(409, serde_json::to_vec(&body).expect("json")));
        }
        let Some(row) = s.stock.get_mut(&(b.sku_id.clone(), wh.clone())) else {
            return Ok(Reply::error(404, "SKU_NOT_FOUND", "no stock row for this SKU and warehouse"));
        };
        if row.available < b.qty {
            let body = json!({"code": "INSUFFICIENT_STOCK",
                              "message": format!("not enough stock: {} available", row.available),
                              "available": row.available});
            return Ok(Reply::new(409, serde_json::to_vec(&body).expect("json")));
        }
        row.available -= b.qty;
        row.reserved += b.qty;
        row.version += 1;
        row.updated_ms = now;
        s.seq += 1;
        let id = format!("rsv-{}", s.seq);
        let expire_ms = now + ttl_ms;
        s.holds.insert(
            id.clone(),
            Hold {
                order_id: b.order_id,
                sku_id: b.sku_id,
                warehouse_id: wh,
                qty: b.qty,
                status: Status::Reserved,
                expire_ms,
                created_ms: now,
                updated_ms: now,
                payment_id: None,
                release_reason: None,
            },
        );
        s.lines.insert(line, id.clone());
        s.expiry.insert((expire_ms, id.clone()));
        let body = json!({"reservationId": id, "status": "RESERVED", "expireAt": expire_ms});
        let reply = Reply::new(200, serde_json::to_vec(&body).expect("json"));
        Ok(s.remember(b.idem_key, reply))
    }

    pub async fn confirm(&self, b: ConfirmBody) -> Result<Reply> {
        let now = now_ms();
        let mut s = self.state.lock();
        let (status, due, same_payment) = match s.settling(&b.idem_key, &b.reservation_id, now) {
            Ok((hold, due)) => (hold.status, due, hold.payment_id.as_deref() == Some(b.payment_id.as_str())),
            Err(reply) => return Ok(reply),
        };
        let id = b.reservation_id;
        let reply = match status {
            Status::Confirmed if same_payment => hold_reply(&id, Status::Confirmed),
            Status::Confirmed => {
                Reply::error(409, "PAYMENT_MISMATCH", "the reservation was confirmed by a different payment")
            }
            Status::Released => Reply::error(409, "RESERVATION_RELEASED", "the reservation was released"),
            Status::Expired => Reply::error(409, "RESERVATION_EXPIRED", "the reservation expired"),
            Status::Reserved if due => {
                s.settle(&id, Settle::Expire, now);
                Reply::error(409, "RESERVATION_EXPIRED", "the reservation expired")
            }
            Status::Reserved => {
                s.settle(&id, Settle::Confirm(b.payment_id), now);
                return Ok(s.remember(b.idem_key, hold_reply(&id, Status::Confirmed)));
            }
        };
        Ok(reply)
    }

    pub async fn release(&self, b: ReleaseBody) -> Result<Reply> {
        let now = now_ms();
        let mut s = self.state.lock();
        let (status, due) = match s.settling(&b.idem_key, &b.reservation_id, now) {
            Ok((hold, due)) => (hold.status, due),
            Err(reply) => return Ok(reply),
        };
        let id = b.reservation_id;
        let settled = match status {
            Status::Confirmed => {
                return Ok(Reply::error(409, "RESERVATION_CONFIRMED", "the reservation is already confirmed"))
            }
            done @ (Status::Released | Status::Expired) => return Ok(hold_reply(&id, done)),
            Status::Reserved if due => {
                s.settle(&id, Settle::Expire, now);
                Status::Expired
            }
            Status::Reserved => {
                s.settle(&id, Settle::Release(b.reason), now);
                Status::Released
            }
        };
        Ok(s.remember(b.idem_key, hold_reply(&id, settled)))
    }

    pub async fn stock(&self, sku_id: &str) -> Result<Reply> {
        let s = self.state.lock();
        let Some(warehouses) = s.warehouses.get(sku_id) else {
            return Ok(Reply::error(404, "SKU_NOT_FOUND", "no stock for this SKU"));
        };
        let mut total = (0u64, 0u64, 0u64);
        let mut updated = 0i64;
        let rows: Vec<_> = warehouses
            .iter()
            .map(|wh| {
                let r = s.stock.get(&(sku_id.to_string(), wh.clone())).copied().unwrap_or_default();
                total = (total.0 + r.available, total.1 + r.reserved, total.2 + r.sold);
                updated = updated.max(r.updated_ms);
                json!({"warehouseId": wh, "available": r.available, "reserved": r.reserved, "sold": r.sold,
                       "version": r.version, "updatedAt": r.updated_ms})
            })
            .collect();
        let body = json!({"skuId": sku_id, "available": total.0, "reserved": total.1, "sold": total.2,
                          "updatedAt": updated, "warehouses": rows});
        Ok(Reply::new(200, serde_json::to_vec(&body).expect("json")))
    }

    pub async fn reservation(&self, id: &str) -> Result<Reply> {
        let s = self.state.lock();
        let Some(h) = s.holds.get(id) else {
            return Ok(Reply::error(404, "RESERVATION_NOT_FOUND", "no such reservation"));
        };
        let body = json!({
            "reservationId": id, "orderId": h.order_id, "skuId": h.sku_id, "warehouseId": h.warehouse_id,
            "qty": h.qty, "status": h.status.name(), "expireAt": h.expire_ms, "createdAt": h.created_ms,
            "updatedAt": h.updated_ms, "paymentId": h.payment_id, "releaseReason": h.release_reason,
        });
        Ok(Reply::new(200, serde_json::to_vec(&body).expect("json")))
    }

    pub async fn seed(&self, b: SeedBody) -> Result<Reply> {
        let mut s = self.state.lock();
        for i in b.from..b.to {
            let sku = format!("{}{i}", b.prefix);
            s.warehouses.entry(sku.clone()).or_default().insert("default".into());
            let row = s.stock.entry((sku, "default".into())).or_default();
            row.available += b.qty;
            row.version += 1;
        }
        Ok(Reply::new(200, serde_json::to_vec(&json!({ "count": b.to - b.from })).expect("json")))
    }

    pub async fn expire_due(&self) -> Result<u64> {
        let now = now_ms();
        let mut s = self.state.lock();
        let due: Vec<String> = s
            .expiry
            .iter()
            .take_while(|(at, _)| *at <= now)
            .take(EXPIRY_BATCH_MAX as usize)
            .map(|(_, id)| id.clone())
            .collect();
        for id in &due {
            s.settle(id, Settle::Expire, now);
        }
        Ok(due.len() as u64)
    }

    pub async fn teardown(&self) -> Result<()> {
        Ok(())
    }
}

impl Default for MemoryBackend {
    fn default() -> Self {
        MemoryBackend::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(r: &Reply) -> serde_json::Value {
        serde_json::from_slice(&r.body).expect("json body")
    }

    fn reserve(order: &str, qty: u64, key: &str, ttl: u64) -> ReserveBody {
        ReserveBody {
            order_id: order.into(),
            sku_id: "A".into(),
            qty,
            idem_key: key.into(),
            warehouse_id: None,
            ttl_seconds: Some(ttl),
        }
    }

    async fn stocked(units: u64) -> MemoryBackend {
        let m = MemoryBackend::new();
        m.receive(ReceiveBody { sku_id: "A".into(), warehouse_id: None, qty: units, idem_key: "r1".into() })
            .await
            .unwrap();
        m
    }

    async fn counters(m: &MemoryBackend) -> (u64, u64, u64) {
        let b = body(&m.stock("A").await.unwrap());
        let n = |k: &str| b[k].as_u64().unwrap();
        (n("available"), n("reserved"), n("sold"))
    }

    #[tokio::test]
    async fn reserves_never_take_more_than_was_received() {
        let m = stocked(5).await;
        let first = m.reserve(reserve("o1", 3, "k1", 60)).await.unwrap();
        assert_eq!(first.status, 200);
        let second = m.reserve(reserve("o2", 3, "k2", 60)).await.unwrap();
        assert_eq!((second.status, body(&second)["code"].as_str()), (409, Some("INSUFFICIENT_STOCK")));
        assert_eq!(counters(&m).await, (2, 3, 0));
    }

    #[tokio::test]
    async fn a_repeated_key_replays_and_a_second_hold_per_line_is_refused() {
        let m = stocked(10).await;
        let a = m.reserve(reserve("o1", 1, "k1", 60)).await.unwrap();
        let again = m.reserve(reserve("o1", 1, "k1", 60)).await.unwrap();
        assert_eq!(a.body, again.body);
        let other_key = m.reserve(reserve("o1", 1, "k2", 60)).await.unwrap();
        assert_eq!((other_key.status, body(&other_key)["code"].as_str()), (409, Some("DUPLICATE_ORDER_LINE")));
        assert_eq!(counters(&m).await, (9, 1, 0));
    }

    #[tokio::test]
    async fn confirm_sells_release_returns_and_expiry_returns() {
        let m = stocked(10).await;
        let id = |r: &Reply| body(r)["reservationId"].as_str().unwrap().to_string();
        let a = id(&m.reserve(reserve("o1", 2, "k1", 60)).await.unwrap());
        let b = id(&m.reserve(reserve("o2", 3, "k2", 60)).await.unwrap());
        let c = id(&m.reserve(reserve("o3", 4, "k3", 0)).await.unwrap());
        let confirm = ConfirmBody { reservation_id: a.clone(), payment_id: "p".into(), idem_key: "c1".into() };
        assert_eq!(body(&m.confirm(confirm).await.unwrap())["status"], "CONFIRMED");
        let release = ReleaseBody { reservation_id: b, reason: "CANCELLED".into(), idem_key: "l1".into() };
        assert_eq!(body(&m.release(release).await.unwrap())["status"], "RELEASED");
        assert_eq!(m.expire_due().await.unwrap(), 1);
        assert_eq!(body(&m.reservation(&c).await.unwrap())["status"], "EXPIRED");
        let late = ReleaseBody { reservation_id: a, reason: "CANCELLED".into(), idem_key: "l2".into() };
        assert_eq!(body(&m.release(late).await.unwrap())["code"], "RESERVATION_CONFIRMED");
        assert_eq!(counters(&m).await, (8, 0, 2));
    }
}
