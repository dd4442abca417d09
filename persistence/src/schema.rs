//! Connecting, migrating, day partitions and retention.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use inventory_core::Millis;
use tokio_postgres::Client;

use crate::PersistenceError;

/// Migrations in order; each runs once, recorded in `schema_migrations`.
pub const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("../migrations/0001_init.sql")),
    (2, include_str!("../migrations/0002_checkpoint_ids.sql")),
    (3, include_str!("../migrations/0003_hot_updates.sql")),
    (4, include_str!("../migrations/0004_outbox_json.sql")),
    (5, include_str!("../migrations/0005_operator.sql")),
    (6, include_str!("../migrations/0006_relay.sql")),
    (7, include_str!("../migrations/0007_order_index.sql")),
];

const MIGRATION_LOCK: i64 = 0x696e_7630_0001;
const PARTITION_LOCK: i64 = 0x696e_7630_0002;
pub const DAY_MS: Millis = 86_400_000;

/// A validated schema name, quoted for SQL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schema(String);

impl Schema {
    pub fn new(name: &str) -> Result<Schema, PersistenceError> {
        let ok = !name.is_empty()
            && name.len() <= 63
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            && !name.as_bytes()[0].is_ascii_digit();
        if ok {
            Ok(Schema(name.to_string()))
        } else {
            Err(PersistenceError::BadSchema(name.to_string()))
        }
    }

    pub fn name(&self) -> &str {
        &self.0
    }

    fn quoted(&self) -> String {
        format!("\"{}\"", self.0)
    }
}

/// Connects (over TLS as the URL's `sslmode` asks, see [`crate::tls`]) and
/// points the session at `schema` (created if missing).
pub async fn connect(url: &str, schema: &Schema) -> Result<Client, PersistenceError> {
    let target = crate::tls::Target::parse(url)?;
    let (client, connection) = target.config.connect(target.connector()?).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "postgres connection closed");
        }
    });
    client.batch_execute(&format!("SET search_path TO {}", schema.quoted())).await?;
    Ok(client)
}

/// Creates the schema and applies pending migrations, serialised across
/// concurrent writers by an advisory lock.
pub async fn migrate(client: &mut Client, schema: &Schema) -> Result<(), PersistenceError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {q}; SET LOCAL search_path TO {q};
         CREATE TABLE IF NOT EXISTS schema_migrations (version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now());",
        q = schema.quoted()
    ))
    .await?;
    for (version, sql) in MIGRATIONS {
        let done = tx.query_opt("SELECT 1 FROM schema_migrations WHERE version = $1", &[version]).await?.is_some();
        if !done {
            tx.batch_execute(sql).await?;
            tx.execute("INSERT INTO schema_migrations (version) VALUES ($1)", &[version]).await?;
            tracing::info!(schema = schema.name(), version, "applied migration");
        }
    }
    tx.commit().await?;
    Ok(())
}

pub fn to_system_time(ms: Millis) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

pub fn day_of(ms: Millis) -> i64 {
    (ms / DAY_MS) as i64
}

/// `(year, month, day)` of a day number since 1970-01-01 (proleptic
/// Gregorian; Howard Hinnant's civil_from_days).
pub fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn date(days: i64) -> String {
    let (y, m, d) = civil(days);
    format!("{y:04}-{m:02}-{d:02}")
}

fn suffix(days: i64) -> String {
    let (y, m, d) = civil(days);
    format!("p{y:04}{m:02}{d:02}")
}

/// The partitioned tables and what their partitions are named after.
pub const PARTITIONED: [&str; 2] = ["reservation", "inventory_txn"];

/// Creates the day partitions for `day` if missing (inside the caller's
/// transaction).
pub async fn ensure_day(tx: &tokio_postgres::Transaction<'_>, day: i64) -> Result<(), PersistenceError> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PARTITION_LOCK]).await?;
    let (from, to, sfx) = (date(day), date(day + 1), suffix(day));
    for table in PARTITIONED {
        tx.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {table}_{sfx} PARTITION OF {table} FOR VALUES FROM ('{from} 00:00:00+00') TO ('{to} 00:00:00+00')"
        ))
        .await?;
    }
    tx.batch_execute(&format!(
        "CREATE UNIQUE INDEX IF NOT EXISTS reservation_{sfx}_line ON reservation_{sfx} (order_id, sku_id)"
    ))
    .await?;
    Ok(())
}

/// Drops day partitions of `table` that ended before `now - retention`.
/// Returns the dropped partitions' names.
pub async fn drop_expired(
    client: &Client,
    schema: &Schema,
    table: &str,
    now: Millis,
    retention_ms: Millis,
) -> Result<Vec<String>, PersistenceError> {
    let rows = client
        .query(
            "SELECT c.relname FROM pg_inherits i
               JOIN pg_class c ON c.oid = i.inhrelid
               JOIN pg_class p ON p.oid = i.inhparent
               JOIN pg_namespace n ON n.oid = p.relnamespace
              WHERE p.relname = $1 AND n.nspname = $2",
            &[&table, &schema.name()],
        )
        .await?;
    let cutoff = now.saturating_sub(retention_ms);
    let mut dropped = Vec::new();
    for row in rows {
        let name: String = row.get(0);
        let Some(day) = name.strip_prefix(&format!("{table}_p")).and_then(parse_day) else { continue };
        let end_ms = (day + 1) as u64 * DAY_MS;
        if end_ms <= cutoff {
            client.batch_execute(&format!("DROP TABLE IF EXISTS {name}")).await?;
            tracing::info!(partition = %name, "dropped partition past retention");
            dropped.push(name);
        }
    }
    Ok(dropped)
}

/// Day number of `yyyymmdd`.
fn parse_day(s: &str) -> Option<i64> {
    if s.len() != 8 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (y, m, d): (i64, u32, u32) = (s[..4].parse().ok()?, s[4..6].parse().ok()?, s[6..].parse().ok()?);
    // Inverse of `civil`, by search around the estimate (a handful of steps).
    let estimate = (y - 1970) * 365 + (y - 1969) / 4;
    (estimate - 2..estimate + 370).find(|&days| civil(days) == (y, m, d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(day_of(1_700_000_000_000)), (2023, 11, 14));
        assert_eq!(civil(day_of(951_782_400_000)), (2000, 2, 29));
        for days in [0, 59, 365, 11_016, 19_675, 20_416] {
            assert_eq!(parse_day(&suffix(days)[1..]), Some(days));
        }
    }

    #[test]
    fn schema_names_are_checked() {
        assert!(Schema::new("inv_test_1").is_ok());
        for bad in ["", "Inv", "a-b", "1abc", "x;drop", "a\"b"] {
            assert!(Schema::new(bad).is_err(), "{bad}");
        }
    }
}
