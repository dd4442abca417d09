//! The Redis baseline: every write is one atomic Lua script (EVALSHA) that
//! checks and moves stock and writes the reservation record, the
//! order-line key, the expiry index and the idempotency record together.
//!
//! Durability is switched per run with `CONFIG SET appendonly yes` and
//! `appendfsync always` (every write on disk before the reply, as the
//! service does) or `everysec` (how most deployments run it: up to a second
//! of acknowledged writes can be lost). The previous settings are restored
//! at teardown. The adapter owns one logical database (`/9` by default in
//! the URL) and flushes it at start and at the end.
//!
//! Keys: `i:{sku}:{warehouse}` stock hash (a, r, s, v, u), `w:{sku}` set of
//! warehouses, `h:{reservation}` hold hash, `ol:{order}:{sku}` order line,
//! `k:{idemKey}` stored reply, `seq` hold counter, `exp` zset of RESERVED
//! holds by expiry time (ms).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::Script;
use serde_json::json;

use super::{
    ConfirmBody, ReceiveBody, ReleaseBody, Reply, ReserveBody, SeedBody, DEFAULT_TTL_SECS, EXPIRY_BATCH_MAX,
    IDEMPOTENCY_TTL_SECS,
};
use crate::cli::Appendfsync;
use crate::Result;

/// Longest wait for one Redis reply.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// SKUs per pipeline when seeding in bulk.
const SEED_PIPELINE: u64 = 5_000;

const NOW: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function err(status, code, message)
  return status .. '|' .. cjson.encode({code = code, message = message})
end
local function hold(id, st)
  return '200|' .. cjson.encode({reservationId = id, status = st})
end
"#;

/// KEYS: stock, warehouses, idem. ARGV: sku, warehouse, qty, idem ttl (s).
const RECEIVE: &str = r#"
local stored = redis.call('GET', KEYS[3])
if stored then return stored end
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'a', 0, 'r', 0, 's', 0, 'v', 0)
  redis.call('SADD', KEYS[2], ARGV[2])
end
local a = redis.call('HINCRBY', KEYS[1], 'a', ARGV[3])
local v = redis.call('HINCRBY', KEYS[1], 'v', 1)
redis.call('HSET', KEYS[1], 'u', now)
local row = redis.call('HMGET', KEYS[1], 'r', 's')
local out = '200|' .. cjson.encode({skuId = ARGV[1], warehouseId = ARGV[2], available = a,
  reserved = tonumber(row[1]), sold = tonumber(row[2]), version = v, updatedAt = now})
redis.call('SET', KEYS[3], out, 'EX', ARGV[4])
return out
"#;

/// KEYS: stock, order line, idem, seq, exp. ARGV: order, sku, warehouse,
/// qty, ttl (ms), idem ttl (s).
const RESERVE: &str = r#"
local stored = redis.call('GET', KEYS[3])
if stored then return stored end
local existing = redis.call('GET', KEYS[2])
if existing then
  return '409|' .. cjson.encode({code = 'DUPLICATE_ORDER_LINE', message = 'order line already has hold ' .. existing,
    reservationId = existing})
end
local a = redis.call('HGET', KEYS[1], 'a')
if not a then return err(404, 'SKU_NOT_FOUND', 'no stock row for this SKU and warehouse') end
a = tonumber(a)
local qty = tonumber(ARGV[4])
if a < qty then
  return '409|' .. cjson.encode({code = 'INSUFFICIENT_STOCK', message = 'not enough stock: ' .. a .. ' available',
    available = a})
end
redis.call('HINCRBY', KEYS[1], 'a', -qty)
redis.call('HINCRBY', KEYS[1], 'r', qty)
redis.call('HINCRBY', KEYS[1], 'v', 1)
redis.call('HSET', KEYS[1], 'u', now)
local id = 'rsv-' .. redis.call('INCR', KEYS[4])
local exp = now + tonumber(ARGV[5])
redis.call('HSET', 'h:' .. id, 'o', ARGV[1], 'k', ARGV[2], 'w', ARGV[3], 'q', qty, 'st', 'RESERVED',
  'e', exp, 'c', now, 'u', now)
redis.call('SET', KEYS[2], id)
redis.call('ZADD', KEYS[5], exp, id)
local out = '200|' .. cjson.encode({reservationId = id, status = 'RESERVED', expireAt = exp})
redis.call('SET', KEYS[3], out, 'EX', ARGV[6])
return out
"#;

/// Shared by confirm and release: expires hold `id` (hash `h`) now.
const EXPIRE_ONE: &str = r#"
local function expire_one(id, h, sku, wh, q)
  local inv = 'i:' .. sku .. ':' .. wh
  redis.call('HINCRBY', inv, 'a', q)
  redis.call('HINCRBY', inv, 'r', -q)
  redis.call('HINCRBY', inv, 'v', 1)
  redis.call('HSET', inv, 'u', now)
  redis.call('HSET', h, 'st', 'EXPIRED', 'rr', 'TIMEOUT', 'u', now)
  redis.call('ZREM', 'exp', id)
end
"#;

/// KEYS: hold, idem, exp. ARGV: id, payment, idem ttl (s).
const CONFIRM: &str = r#"
local stored = redis.call('GET', KEYS[2])
if stored then return stored end
local h = redis.call('HMGET', KEYS[1], 'st', 'k', 'w', 'q', 'e', 'p')
if not h[1] then return err(404, 'RESERVATION_NOT_FOUND', 'no such reservation') end
local st, q = h[1], tonumber(h[4])
if st == 'CONFIRMED' then
  if h[6] == ARGV[2] then return hold(ARGV[1], 'CONFIRMED') end
  return err(409, 'PAYMENT_MISMATCH', 'the reservation was confirmed by a different payment')
elseif st == 'RELEASED' then
  return err(409, 'RESERVATION_RELEASED', 'the reservation was released')
elseif st == 'EXPIRED' then
  return err(409, 'RESERVATION_EXPIRED', 'the reservation expired')
elseif tonumber(h[5]) <= now then
  expire_one(ARGV[1], KEYS[1], h[2], h[3], q)
  return err(409, 'RESERVATION_EXPIRED', 'the reservation expired')
end
local inv = 'i:' .. h[2] .. ':' .. h[3]
redis.call('HINCRBY', inv, 'r', -q)
redis.call('HINCRBY', inv, 's', q)
redis.call('HINCRBY', inv, 'v', 1)
redis.call('HSET', inv, 'u', now)
redis.call('HSET', KEYS[1], 'st', 'CONFIRMED', 'p', ARGV[2], 'u', now)
redis.call('ZREM', KEYS[3], ARGV[1])
local out = hold(ARGV[1], 'CONFIRMED')
redis.call('SET', KEYS[2], out, 'EX', ARGV[3])
return out
"#;

/// KEYS: hold, idem, exp. ARGV: id, reason, idem ttl (s).
const RELEASE: &str = r#"
local stored = redis.call('GET', KEYS[2])
if stored then return stored end
local h = redis.call('HMGET', KEYS[1], 'st', 'k', 'w', 'q', 'e')
if not h[1] then return err(404, 'RESERVATION_NOT_FOUND', 'no such reservation') end
local st, q = h[1], tonumber(h[4])
local out
if st == 'CONFIRMED' then
  return err(409, 'RESERVATION_CONFIRMED', 'the reservation is already confirmed')
elseif st == 'RELEASED' or st == 'EXPIRED' then
  return hold(ARGV[1], st)
elseif tonumber(h[5]) <= now then
  expire_one(ARGV[1], KEYS[1], h[2], h[3], q)
  out = hold(ARGV[1], 'EXPIRED')
else
  local inv = 'i:' .. h[2] .. ':' .. h[3]
  redis.call('HINCRBY', inv, 'a', q)
  redis.call('HINCRBY', inv, 'r', -q)
  redis.call('HINCRBY', inv, 'v', 1)
  redis.call('HSET', inv, 'u', now)
  redis.call('HSET', KEYS[1], 'st', 'RELEASED', 'rr', ARGV[2], 'u', now)
  redis.call('ZREM', KEYS[3], ARGV[1])
  out = hold(ARGV[1], 'RELEASED')
end
redis.call('SET', KEYS[2], out, 'EX', ARGV[3])
return out
"#;

/// KEYS: exp. ARGV: most holds to expire.
const EXPIRE_DUE: &str = r#"
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, id in ipairs(ids) do
  local hk = 'h:' .. id
  local h = redis.call('HMGET', hk, 'st', 'k', 'w', 'q')
  if h[1] == 'RESERVED' then
    expire_one(id, hk, h[2], h[3], tonumber(h[4]))
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return #ids
"#;

struct Scripts {
    receive: Script,
    reserve: Script,
    confirm: Script,
    release: Script,
    expire_due: Script,
}

pub struct RedisBackend {
    conns: Vec<MultiplexedConnection>,
    next: AtomicUsize,
    scripts: Scripts,
    /// `appendonly` and `appendfsync` before the adapter changed them.
    restore: (String, String),
}

impl RedisBackend {
    /// Connects with `pool` multiplexed connections, flushes the database
    /// and switches the AOF on with the requested fsync policy.
    pub async fn connect(url: &str, pool: usize, fsync: Appendfsync) -> Result<RedisBackend> {
        let client = redis::Client::open(url)?;
        // The harness's request timeout governs; the crate's default of
        // 500 ms would turn a slow fsync into an error.
        let config = redis::AsyncConnectionConfig::new().set_response_timeout(Some(RESPONSE_TIMEOUT));
        let mut conns = Vec::new();
        for _ in 0..pool.clamp(1, 64) {
            conns.push(client.get_multiplexed_async_connection_with_config(&config).await?);
        }
        let mut c = conns[0].clone();
        let get = |name: &'static str| {
            let mut c = c.clone();
            async move {
                let v: Vec<String> = redis::cmd("CONFIG").arg("GET").arg(name).query_async(&mut c).await?;
                Ok::<_, redis::RedisError>(v.get(1).cloned().unwrap_or_default())
            }
        };
        let restore = (get("appendonly").await?, get("appendfsync").await?);
        redis::cmd("FLUSHDB").arg("ASYNC").query_async::<()>(&mut c).await?;
        let policy = match fsync {
            Appendfsync::Always => "always",
            Appendfsync::Everysec => "everysec",
        };
        redis::cmd("CONFIG").arg("SET").arg("appendfsync").arg(policy).query_async::<()>(&mut c).await?;
        redis::cmd("CONFIG").arg("SET").arg("appendonly").arg("yes").query_async::<()>(&mut c).await?;
        wait_for_aof(&mut c).await?;
        let with = |body: &str| Script::new(&format!("{NOW}{EXPIRE_ONE}{body}"));
        let scripts = Scripts {
            receive: with(RECEIVE),
            reserve: with(RESERVE),
            confirm: with(CONFIRM),
            release: with(RELEASE),
            expire_due: with(EXPIRE_DUE),
        };
        Ok(RedisBackend { conns, next: AtomicUsize::new(0), scripts, restore })
    }

    fn conn(&self) -> MultiplexedConnection {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.conns.len();
        self.conns[i].clone()
    }

    pub async fn receive(&self, b: ReceiveBody) -> Result<Reply> {
        let wh = b.warehouse_id.unwrap_or_else(|| "default".into());
        let out: String = self
            .scripts
            .receive
            .key(format!("i:{}:{wh}", b.sku_id))
            .key(format!("w:{}", b.sku_id))
            .key(format!("k:{}", b.idem_key))
            .arg(&b.sku_id)
            .arg(&wh)
            .arg(b.qty)
            .arg(IDEMPOTENCY_TTL_SECS)
            .invoke_async(&mut self.conn())
            .await?;
        Reply::from_stored(&out)
    }

    pub async fn reserve(&self, b: ReserveBody) -> Result<Reply> {
        let wh = b.warehouse_id.unwrap_or_else(|| "default".into());
        let ttl_ms = b.ttl_seconds.unwrap_or(DEFAULT_TTL_SECS) * 1000;
        let out: String = self
            .scripts
            .reserve
            .key(format!("i:{}:{wh}", b.sku_id))
            .key(format!("ol:{}:{}", b.order_id, b.sku_id))
            .key(format!("k:{}", b.idem_key))
            .key("seq")
            .key("exp")
            .arg(&b.order_id)
            .arg(&b.sku_id)
            .arg(&wh)
            .arg(b.qty)
            .arg(ttl_ms)
            .arg(IDEMPOTENCY_TTL_SECS)
            .invoke_async(&mut self.conn())
            .await?;
        Reply::from_stored(&out)
    }

    pub async fn confirm(&self, b: ConfirmBody) -> Result<Reply> {
        let out: String = self
            .scripts
            .confirm
            .key(format!("h:{}", b.reservation_id))
            .key(format!("k:{}", b.idem_key))
            .key("exp")
            .arg(&b.reservation_id)
            .arg(&b.payment_id)
            .arg(IDEMPOTENCY_TTL_SECS)
            .invoke_async(&mut self.conn())
            .await?;
        Reply::from_stored(&out)
    }

    pub async fn release(&self, b: ReleaseBody) -> Result<Reply> {
        let out: String = self
            .scripts
            .release
            .key(format!("h:{}", b.reservation_id))
            .key(format!("k:{}", b.idem_key))
            .key("exp")
            .arg(&b.reservation_id)
            .arg(&b.reason)
            .arg(IDEMPOTENCY_TTL_SECS)
            .invoke_async(&mut self.conn())
            .await?;
        Reply::from_stored(&out)
    }

    pub async fn stock(&self, sku_id: &str) -> Result<Reply> {
        let mut c = self.conn();
        let mut warehouses: Vec<String> = redis::cmd("SMEMBERS").arg(format!("w:{sku_id}")).query_async(&mut c).await?;
        if warehouses.is_empty() {
            return Ok(Reply::error(404, "SKU_NOT_FOUND", "no stock for this SKU"));
        }
        warehouses.sort();
        let mut pipe = redis::pipe();
        for wh in &warehouses {
            pipe.cmd("HMGET").arg(format!("i:{sku_id}:{wh}")).arg(&["a", "r", "s", "v", "u"]);
        }
        let rows: Vec<Vec<Option<i64>>> = pipe.query_async(&mut c).await?;
        let mut total = (0i64, 0i64, 0i64);
        let mut updated = 0i64;
        let rows: Vec<_> = warehouses
            .iter()
            .zip(rows)
            .map(|(wh, r)| {
                let f = |i: usize| r.get(i).copied().flatten().unwrap_or(0);
                total = (total.0 + f(0), total.1 + f(1), total.2 + f(2));
                updated = updated.max(f(4));
                json!({"warehouseId": wh, "available": f(0), "reserved": f(1), "sold": f(2), "version": f(3),
                       "updatedAt": f(4)})
            })
            .collect();
        let body = json!({"skuId": sku_id, "available": total.0, "reserved": total.1, "sold": total.2,
                          "updatedAt": updated, "warehouses": rows});
        Ok(Reply::new(200, serde_json::to_vec(&body).expect("json")))
    }

    pub async fn reservation(&self, id: &str) -> Result<Reply> {
        let mut c = self.conn();
        let h: std::collections::HashMap<String, String> =
            redis::cmd("HGETALL").arg(format!("h:{id}")).query_async(&mut c).await?;
        if h.is_empty() {
            return Ok(Reply::error(404, "RESERVATION_NOT_FOUND", "no such reservation"));
        }
        let s = |k: &str| h.get(k).cloned().unwrap_or_default();
        let n = |k: &str| h.get(k).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
        let body = json!({
            "reservationId": id, "orderId": s("o"), "skuId": s("k"), "warehouseId": s("w"), "qty": n("q"),
            "status": s("st"), "expireAt": n("e"), "createdAt": n("c"), "updatedAt": n("u"),
            "paymentId": h.get("p"), "releaseReason": h.get("rr"),
        });
        Ok(Reply::new(200, serde_json::to_vec(&body).expect("json")))
    }

    pub async fn seed(&self, b: SeedBody) -> Result<Reply> {
        let mut c = self.conn();
        let mut from = b.from;
        while from < b.to {
            let to = (from + SEED_PIPELINE).min(b.to);
            let mut pipe = redis::pipe();
            for i in from..to {
                let sku = format!("{}{i}", b.prefix);
                pipe.cmd("HSET")
                    .arg(format!("i:{sku}:default"))
                    .arg(&["a", &b.qty.to_string(), "r", "0", "s", "0", "v", "1", "u", "0"])
                    .ignore();
                pipe.cmd("SADD").arg(format!("w:{sku}")).arg("default").ignore();
            }
            pipe.query_async::<()>(&mut c).await?;
            from = to;
        }
        Ok(Reply::new(200, serde_json::to_vec(&json!({ "count": b.to - b.from })).expect("json")))
    }

    pub async fn expire_due(&self) -> Result<u64> {
        let n: u64 = self.scripts.expire_due.key("exp").arg(EXPIRY_BATCH_MAX).invoke_async(&mut self.conn()).await?;
        Ok(n)
    }

    pub async fn teardown(&self) -> Result<()> {
        let mut c = self.conn();
        redis::cmd("CONFIG").arg("SET").arg("appendonly").arg(&self.restore.0).query_async::<()>(&mut c).await?;
        redis::cmd("CONFIG").arg("SET").arg("appendfsync").arg(&self.restore.1).query_async::<()>(&mut c).await?;
        redis::cmd("FLUSHDB").arg("ASYNC").query_async::<()>(&mut c).await?;
        Ok(())
    }
}

/// Enabling the AOF starts a rewrite; wait for it so the measured phase
/// does not share the disk with it.
async fn wait_for_aof(c: &mut MultiplexedConnection) -> Result<()> {
    for _ in 0..600 {
        let info: String = redis::cmd("INFO").arg("persistence").query_async(c).await?;
        let field = |name: &str| {
            info.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(':'))).map(str::trim)
        };
        if field("aof_enabled") == Some("1")
            && field("aof_rewrite_in_progress") == Some("0")
            && field("aof_rewrite_scheduled") == Some("0")
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(crate::BenchError::Redis("the AOF rewrite did not finish within 30 s".into()))
}
