//! Reads of the read model for the gateway: an order's holds as PostgreSQL
//! has them, with every shard's writer checkpoint read in the same snapshot,
//! so the caller knows exactly which journal entries the answer reflects.
//!
//! A small pool of connections of its own (never the writer's), each with
//! a statement timeout, so a slow or unreachable PostgreSQL answers an
//! error within a bounded time instead of holding requests.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use inventory_core::{Millis, ReservationStatus, ReservationView};
use tokio_postgres::IsolationLevel;

use crate::schema::Schema;
use crate::tls::Target;
use crate::PersistenceError;

/// Connections the read model keeps at most.
pub const READ_MODEL_CONNECTIONS_MAX: usize = 4;

/// An order's holds as PostgreSQL has them.
#[derive(Debug)]
pub struct OrderHolds {
    /// Ordered by creation time, then reservation id (as the primary orders them).
    pub holds: Vec<ReservationView>,
    /// The last journal sequence applied, per shard, in the same snapshot as
    /// `holds` (a shard the writer has not yet checkpointed is absent).
    pub checkpoints: BTreeMap<u16, u64>,
}

/// The read model's connection pool.
pub struct ReadModel {
    pool: Pool,
}

impl ReadModel {
    /// A pool for `url` (libpq syntax, TLS as its `sslmode` says), its
    /// sessions pointed at `schema`. Nothing connects until the first read.
    /// `timeout` bounds waiting for a connection, making one, and each
    /// statement.
    pub fn new(url: &str, schema: &Schema, timeout: Duration) -> Result<ReadModel, PersistenceError> {
        let target = Target::parse(url)?;
        let tls = target.connector()?;
        let mut config = target.config;
        let mut options = config.get_options().map(str::to_string).unwrap_or_default();
        // Schema names are lowercase letters, digits and `_` (`Schema::new`):
        // nothing to quote.
        options.push_str(&format!(
            " -c search_path={} -c statement_timeout={} -c default_transaction_read_only=on",
            schema.name(),
            timeout.as_millis()
        ));
        config.options(options.trim());
        if config.get_connect_timeout().is_none_or(|t| *t > timeout) {
            config.connect_timeout(timeout);
        }
        let manager = Manager::from_config(config, tls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(READ_MODEL_CONNECTIONS_MAX)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(timeout))
            .create_timeout(Some(timeout))
            .recycle_timeout(Some(timeout))
            .build()
            .map_err(|e| PersistenceError::ReadModel(e.to_string()))?;
        Ok(ReadModel { pool })
    }

    /// The holds of `order_id` (as stored: with its tenant prefix) and the
    /// writer checkpoints they reflect, read in one snapshot.
    pub async fn order(&self, order_id: &str) -> Result<OrderHolds, PersistenceError> {
        let mut client = self.pool.get().await.map_err(|e| PersistenceError::ReadModel(e.to_string()))?;
        let tx =
            client.build_transaction().isolation_level(IsolationLevel::RepeatableRead).read_only(true).start().await?;
        let checkpoints = tx
            .query("SELECT shard, seq FROM writer_checkpoint", &[])
            .await?
            .into_iter()
            .map(|r| (r.get::<_, i16>(0) as u16, r.get::<_, i64>(1) as u64))
            .collect();
        let rows = tx
            .query(
                "SELECT reservation_id, order_id, sku_id, warehouse_id, qty, status, expire_at, idem_key,
                        created_at, updated_at, payment_id, release_reason
                   FROM reservation WHERE order_id = $1",
                &[&order_id],
            )
            .await?;
        tx.commit().await?;
        let mut holds = rows
            .into_iter()
            .map(|r| {
                let id: String = r.get(0);
                let status: String = r.get(5);
                Ok(ReservationView {
                    reservation_id: id
                        .parse()
                        .map_err(|_| PersistenceError::ReadModel(format!("reservation id {id:?} is malformed")))?,
                    order_id: r.get(1),
                    sku_id: r.get(2),
                    warehouse_id: r.get(3),
                    qty: r.get::<_, i64>(4) as u64,
                    status: parse_status(&status)
                        .ok_or_else(|| PersistenceError::ReadModel(format!("hold {id}: unknown status {status:?}")))?,
                    expire_at: millis(r.get(6)),
                    idem_key: r.get(7),
                    created_at: millis(r.get(8)),
                    updated_at: millis(r.get(9)),
                    payment_id: r.get(10),
                    release_reason: r.get(11),
                })
            })
            .collect::<Result<Vec<_>, PersistenceError>>()?;
        holds.sort_by_key(|v| (v.created_at, v.reservation_id));
        Ok(OrderHolds { holds, checkpoints })
    }
}

fn parse_status(status: &str) -> Option<ReservationStatus> {
    [ReservationStatus::Reserved, ReservationStatus::Confirmed, ReservationStatus::Released, ReservationStatus::Expired]
        .into_iter()
        .find(|s| s.as_str() == status)
}

fn millis(at: SystemTime) -> Millis {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as Millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_the_writer_stores_reads_back() {
        for s in [
            ReservationStatus::Reserved,
            ReservationStatus::Confirmed,
            ReservationStatus::Released,
            ReservationStatus::Expired,
        ] {
            assert_eq!(parse_status(s.as_str()), Some(s));
        }
        assert_eq!(parse_status("reserved"), None);
    }

    #[test]
    fn the_pool_is_made_without_connecting_and_refuses_a_bad_url() {
        let schema = Schema::new("inventory").unwrap();
        assert!(ReadModel::new("host=127.0.0.1 port=1 user=root dbname=test", &schema, Duration::from_secs(1)).is_ok());
        assert!(ReadModel::new("host=127.0.0.1 sslmode=bogus", &schema, Duration::from_secs(1)).is_err());
    }
}
