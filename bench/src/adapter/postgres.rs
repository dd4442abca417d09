//! The PostgreSQL baseline: the design document's own approach. Each write
//! is one transaction, run as one PL/pgSQL function call (one round trip):
//! a reserve is the conditional
//! `UPDATE inventory SET available = available - qty, reserved = reserved + qty,
//! version = version + 1 WHERE sku_id = $1 AND warehouse_id = $2 AND available >= qty`
//! plus the reservation insert and the idempotency record; confirm, release
//! and expiry lock the reservation row, then the stock row.
//!
//! Tables live in a schema of their own (`bench_<pid>`), dropped at the end.

use std::str::FromStr;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use serde_json::json;
use tokio_postgres::NoTls;

use super::{ConfirmBody, ReceiveBody, ReleaseBody, Reply, ReserveBody, SeedBody, DEFAULT_TTL_SECS, EXPIRY_BATCH_MAX};
use crate::{BenchError, Result};

/// Retries of a transaction that failed on a deadlock, a serialization
/// failure or a unique-key race.
const RETRIES_MAX: u32 = 5;

const SCHEMA_SQL: &str = r#"
CREATE TABLE inventory (
    sku_id text NOT NULL,
    warehouse_id text NOT NULL,
    available bigint NOT NULL,
    reserved bigint NOT NULL,
    sold bigint NOT NULL,
    version bigint NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (sku_id, warehouse_id)
);
CREATE TABLE reservation (
    reservation_id bigserial PRIMARY KEY,
    order_id text NOT NULL,
    sku_id text NOT NULL,
    warehouse_id text NOT NULL,
    qty bigint NOT NULL,
    status text NOT NULL,
    expire_at timestamptz NOT NULL,
    idem_key text NOT NULL,
    payment_id text,
    release_reason text,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    UNIQUE (order_id, sku_id)
);
CREATE INDEX reservation_status_expire ON reservation (status, expire_at);
CREATE TABLE idempotency (
    idem_key text PRIMARY KEY,
    reply text NOT NULL,
    created_at timestamptz NOT NULL
);

CREATE FUNCTION hold_json(id bigint, st text) RETURNS text LANGUAGE sql AS $$
    SELECT '200|' || json_build_object('reservationId', 'rsv-' || id, 'status', st)::text
$$;

CREATE FUNCTION err(status int, code text, message text) RETURNS text LANGUAGE sql AS $$
    SELECT status || '|' || json_build_object('code', code, 'message', message)::text
$$;

CREATE FUNCTION receive(p_sku text, p_wh text, p_qty bigint, p_key text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE out text;
BEGIN
    SELECT reply INTO out FROM idempotency WHERE idem_key = p_key;
    IF FOUND THEN RETURN out; END IF;
    INSERT INTO inventory AS t VALUES (p_sku, p_wh, p_qty, 0, 0, 1, now())
    ON CONFLICT (sku_id, warehouse_id) DO UPDATE
        SET available = t.available + p_qty, version = t.version + 1, updated_at = now()
    RETURNING '200|' || json_build_object('skuId', t.sku_id, 'warehouseId', t.warehouse_id,
        'available', t.available, 'reserved', t.reserved, 'sold', t.sold, 'version', t.version,
        'updatedAt', t.updated_at)::text INTO out;
    INSERT INTO idempotency VALUES (p_key, out, now());
    RETURN out;
END $$;

CREATE FUNCTION reserve(p_order text, p_sku text, p_wh text, p_qty bigint, p_key text, p_ttl_s bigint)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE out text; v_id bigint; v_status text; v_avail bigint; v_exp timestamptz;
BEGIN
    SELECT reply INTO out FROM idempotency WHERE idem_key = p_key;
    IF FOUND THEN RETURN out; END IF;
    SELECT reservation_id, status INTO v_id, v_status FROM reservation WHERE order_id = p_order AND sku_id = p_sku;
    IF FOUND THEN
        RETURN '409|' || json_build_object('code', 'DUPLICATE_ORDER_LINE',
            'message', 'order line already has hold rsv-' || v_id, 'reservationId', 'rsv-' || v_id,
            'status', v_status)::text;
    END IF;
    UPDATE inventory SET available = available - p_qty, reserved = reserved + p_qty,
        version = version + 1, updated_at = now()
    WHERE sku_id = p_sku AND warehouse_id = p_wh AND available >= p_qty;
    IF NOT FOUND THEN
        SELECT available INTO v_avail FROM inventory WHERE sku_id = p_sku AND warehouse_id = p_wh;
        IF NOT FOUND THEN
            RETURN err(404, 'SKU_NOT_FOUND', 'no stock row for this SKU and warehouse');
        END IF;
        RETURN '409|' || json_build_object('code', 'INSUFFICIENT_STOCK',
            'message', 'not enough stock: ' || v_avail || ' available', 'available', v_avail)::text;
    END IF;
    v_exp := now() + make_interval(secs => p_ttl_s);
    INSERT INTO reservation (order_id, sku_id, warehouse_id, qty, status, expire_at, idem_key, created_at, updated_at)
    VALUES (p_order, p_sku, p_wh, p_qty, 'RESERVED', v_exp, p_key, now(), now())
    RETURNING reservation_id INTO v_id;
    out := '200|' || json_build_object('reservationId', 'rsv-' || v_id, 'status', 'RESERVED', 'expireAt', v_exp)::text;
    INSERT INTO idempotency VALUES (p_key, out, now());
    RETURN out;
END $$;

-- Returns a due hold's units to available; the caller holds its row lock.
CREATE FUNCTION expire_one(r reservation) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    UPDATE reservation SET status = 'EXPIRED', release_reason = 'TIMEOUT', updated_at = now()
    WHERE reservation_id = r.reservation_id;
    UPDATE inventory SET available = available + r.qty, reserved = reserved - r.qty,
        version = version + 1, updated_at = now()
    WHERE sku_id = r.sku_id AND warehouse_id = r.warehouse_id;
END $$;

CREATE FUNCTION confirm(p_id bigint, p_payment text, p_key text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE out text; r reservation;
BEGIN
    SELECT reply INTO out FROM idempotency WHERE idem_key = p_key;
    IF FOUND THEN RETURN out; END IF;
    SELECT * INTO r FROM reservation WHERE reservation_id = p_id FOR UPDATE;
    IF NOT FOUND THEN RETURN err(404, 'RESERVATION_NOT_FOUND', 'no such reservation'); END IF;
    IF r.status = 'CONFIRMED' THEN
        IF r.payment_id = p_payment THEN RETURN hold_json(p_id, 'CONFIRMED'); END IF;
        RETURN err(409, 'PAYMENT_MISMATCH', 'the reservation was confirmed by a different payment');
    ELSIF r.status = 'RELEASED' THEN
        RETURN err(409, 'RESERVATION_RELEASED', 'the reservation was released');
    ELSIF r.status = 'EXPIRED' THEN
        RETURN err(409, 'RESERVATION_EXPIRED', 'the reservation expired');
    ELSIF r.expire_at <= now() THEN
        PERFORM expire_one(r);
        RETURN err(409, 'RESERVATION_EXPIRED', 'the reservation expired');
    END IF;
    UPDATE inventory SET reserved = reserved - r.qty, sold = sold + r.qty, version = version + 1, updated_at = now()
    WHERE sku_id = r.sku_id AND warehouse_id = r.warehouse_id;
    UPDATE reservation SET status = 'CONFIRMED', payment_id = p_payment, updated_at = now()
    WHERE reservation_id = p_id;
    out := hold_json(p_id, 'CONFIRMED');
    INSERT INTO idempotency VALUES (p_key, out, now());
    RETURN out;
END $$;

CREATE FUNCTION release(p_id bigint, p_reason text, p_key text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE out text; r reservation;
BEGIN
    SELECT reply INTO out FROM idempotency WHERE idem_key = p_key;
    IF FOUND THEN RETURN out; END IF;
    SELECT * INTO r FROM reservation WHERE reservation_id = p_id FOR UPDATE;
    IF NOT FOUND THEN RETURN err(404, 'RESERVATION_NOT_FOUND', 'no such reservation'); END IF;
    IF r.status = 'CONFIRMED' THEN
        RETURN err(409, 'RESERVATION_CONFIRMED', 'the reservation is already confirmed');
    ELSIF r.status IN ('RELEASED', 'EXPIRED') THEN
        RETURN hold_json(p_id, r.status);
    ELSIF r.expire_at <= now() THEN
        PERFORM expire_one(r);
        out := hold_json(p_id, 'EXPIRED');
    ELSE
        UPDATE inventory SET available = available + r.qty, reserved = reserved - r.qty,
            version = version + 1, updated_at = now()
        WHERE sku_id = r.sku_id AND warehouse_id = r.warehouse_id;
        UPDATE reservation SET status = 'RELEASED', release_reason = p_reason, updated_at = now()
        WHERE reservation_id = p_id;
        out := hold_json(p_id, 'RELEASED');
    END IF;
    INSERT INTO idempotency VALUES (p_key, out, now());
    RETURN out;
END $$;

CREATE FUNCTION expire_due(p_max int) RETURNS int LANGUAGE plpgsql AS $$
DECLARE r reservation; n int := 0;
BEGIN
    FOR r IN SELECT * FROM reservation WHERE status = 'RESERVED' AND expire_at <= now()
             ORDER BY expire_at LIMIT p_max FOR UPDATE SKIP LOCKED LOOP
        PERFORM expire_one(r);
        n := n + 1;
    END LOOP;
    RETURN n;
END $$;
"#;

pub struct PgBackend {
    pool: Pool,
    schema: String,
}

fn pg(e: impl std::fmt::Display) -> BenchError {
    BenchError::Postgres(e.to_string())
}

impl PgBackend {
    /// Connects, creates the schema `bench_<pid>` and its tables and
    /// functions, and opens a pool of `pool` connections.
    pub async fn connect(url: &str, pool: usize) -> Result<PgBackend> {
        let schema = format!("bench_{}", std::process::id());
        let mut config = tokio_postgres::Config::from_str(url).map_err(pg)?;
        let (client, connection) = config.connect(NoTls).await?;
        let conn_task = tokio::spawn(connection);
        client
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}; SET search_path = {schema};\n{SCHEMA_SQL}"
            ))
            .await?;
        drop(client);
        let _ = conn_task.await;
        config.options(format!("-c search_path={schema}"));
        let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager).max_size(pool.max(1)).build().map_err(pg)?;
        Ok(PgBackend { pool, schema })
    }

    /// Runs `sql` (returning one text column) with retries on transient
    /// transaction failures.
    async fn call(&self, sql: &str, params: &[&(dyn tokio_postgres::types::ToSql + Sync)]) -> Result<String> {
        let client = self.pool.get().await.map_err(pg)?;
        let statement = client.prepare_cached(sql).await?;
        let mut attempt = 0;
        loop {
            match client.query_one(&statement, params).await {
                Ok(row) => return Ok(row.get(0)),
                Err(e) if attempt < RETRIES_MAX && transient(&e) => attempt += 1,
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn call_reply(&self, sql: &str, params: &[&(dyn tokio_postgres::types::ToSql + Sync)]) -> Result<Reply> {
        Reply::from_stored(&self.call(sql, params).await?)
    }

    pub async fn receive(&self, b: ReceiveBody) -> Result<Reply> {
        let wh = b.warehouse_id.unwrap_or_else(|| "default".into());
        self.call_reply("SELECT receive($1, $2, $3, $4)", &[&b.sku_id, &wh, &(b.qty as i64), &b.idem_key]).await
    }

    pub async fn reserve(&self, b: ReserveBody) -> Result<Reply> {
        let wh = b.warehouse_id.unwrap_or_else(|| "default".into());
        let ttl = b.ttl_seconds.unwrap_or(DEFAULT_TTL_SECS) as i64;
        self.call_reply(
            "SELECT reserve($1, $2, $3, $4, $5, $6)",
            &[&b.order_id, &b.sku_id, &wh, &(b.qty as i64), &b.idem_key, &ttl],
        )
        .await
    }

    pub async fn confirm(&self, b: ConfirmBody) -> Result<Reply> {
        let Some(id) = parse_id(&b.reservation_id) else { return Ok(not_found()) };
        self.call_reply("SELECT confirm($1, $2, $3)", &[&id, &b.payment_id, &b.idem_key]).await
    }

    pub async fn release(&self, b: ReleaseBody) -> Result<Reply> {
        let Some(id) = parse_id(&b.reservation_id) else { return Ok(not_found()) };
        self.call_reply("SELECT release($1, $2, $3)", &[&id, &b.reason, &b.idem_key]).await
    }

    pub async fn stock(&self, sku_id: &str) -> Result<Reply> {
        let client = self.pool.get().await.map_err(pg)?;
        let statement = client
            .prepare_cached(
                "SELECT warehouse_id, available, reserved, sold, version, updated_at::text FROM inventory \
                 WHERE sku_id = $1 ORDER BY warehouse_id",
            )
            .await?;
        let rows = client.query(&statement, &[&sku_id]).await?;
        if rows.is_empty() {
            return Ok(Reply::error(404, "SKU_NOT_FOUND", "no stock for this SKU"));
        }
        let mut total = (0i64, 0i64, 0i64);
        let mut updated = String::new();
        let warehouses: Vec<_> = rows
            .iter()
            .map(|r| {
                let (a, res, s): (i64, i64, i64) = (r.get(1), r.get(2), r.get(3));
                total = (total.0 + a, total.1 + res, total.2 + s);
                let at: String = r.get(5);
                updated = updated.clone().max(at.clone());
                json!({"warehouseId": r.get::<_, String>(0), "available": a, "reserved": res, "sold": s,
                       "version": r.get::<_, i64>(4), "updatedAt": at})
            })
            .collect();
        let body = json!({"skuId": sku_id, "available": total.0, "reserved": total.1, "sold": total.2,
                          "updatedAt": updated, "warehouses": warehouses});
        Ok(Reply::new(200, serde_json::to_vec(&body).expect("json")))
    }

    pub async fn reservation(&self, id: &str) -> Result<Reply> {
        let Some(n) = parse_id(id) else { return Ok(not_found()) };
        let client = self.pool.get().await.map_err(pg)?;
        let statement = client
            .prepare_cached(
                "SELECT order_id, sku_id, warehouse_id, qty, status, expire_at::text, created_at::text, \
                 updated_at::text, payment_id, release_reason FROM reservation WHERE reservation_id = $1",
            )
            .await?;
        let Some(r) = client.query_opt(&statement, &[&n]).await? else { return Ok(not_found()) };
        let body = json!({
            "reservationId": id, "orderId": r.get::<_, String>(0), "skuId": r.get::<_, String>(1),
            "warehouseId": r.get::<_, String>(2), "qty": r.get::<_, i64>(3), "status": r.get::<_, String>(4),
            "expireAt": r.get::<_, String>(5), "createdAt": r.get::<_, String>(6), "updatedAt": r.get::<_, String>(7),
            "paymentId": r.get::<_, Option<String>>(8), "releaseReason": r.get::<_, Option<String>>(9),
        });
        Ok(Reply::new(200, serde_json::to_vec(&body).expect("json")))
    }

    pub async fn seed(&self, b: SeedBody) -> Result<Reply> {
        let client = self.pool.get().await.map_err(pg)?;
        let n = client
            .execute(
                "INSERT INTO inventory SELECT $1::text || g, 'default', $4, 0, 0, 1, now() \
                 FROM generate_series($2::bigint, $3::bigint - 1) g \
                 ON CONFLICT (sku_id, warehouse_id) DO UPDATE SET available = inventory.available + EXCLUDED.available",
                &[&b.prefix, &(b.from as i64), &(b.to as i64), &(b.qty as i64)],
            )
            .await?;
        Ok(Reply::new(200, serde_json::to_vec(&json!({ "count": n })).expect("json")))
    }

    pub async fn expire_due(&self) -> Result<u64> {
        let client = self.pool.get().await.map_err(pg)?;
        let statement = client.prepare_cached("SELECT expire_due($1)").await?;
        let n: i32 = client.query_one(&statement, &[&(EXPIRY_BATCH_MAX as i32)]).await?.get(0);
        Ok(n as u64)
    }

    pub async fn teardown(&self) -> Result<()> {
        let client = self.pool.get().await.map_err(pg)?;
        client.batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema)).await?;
        Ok(())
    }
}

fn transient(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    matches!(e.code(), Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED
        || *c == SqlState::T_R_SERIALIZATION_FAILURE
        || *c == SqlState::UNIQUE_VIOLATION)
}

fn parse_id(id: &str) -> Option<i64> {
    id.strip_prefix("rsv-")?.parse().ok()
}

fn not_found() -> Reply {
    Reply::error(404, "RESERVATION_NOT_FOUND", "no such reservation")
}
