//! Helpers for tests against the local PostgreSQL: a schema per test, and a
//! proxy that can "stop" and "restart" the database for one test only.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_postgres::{Client, NoTls};

use crate::support::Client as Http;

pub const PG_ADDR: &str = "127.0.0.1:5432";

pub fn url_for(addr: &str) -> String {
    let (host, port) = addr.split_once(':').unwrap();
    format!("host={host} port={port} user=root dbname=test connect_timeout=3")
}

/// A fresh schema on the local PostgreSQL, dropped at the end. `None` (with a
/// message) when PostgreSQL is unreachable and `CI` is not set; in CI an
/// unreachable PostgreSQL fails the test.
pub struct TestSchema {
    pub name: String,
    pub client: Client,
}

impl TestSchema {
    pub async fn create(test: &str) -> Option<TestSchema> {
        let connected = tokio_postgres::connect(&url_for(PG_ADDR), NoTls).await;
        let (client, connection) = match connected {
            Ok(c) => c,
            Err(e) if std::env::var_os("CI").is_none() => {
                eprintln!("skipping {test}: PostgreSQL at {PG_ADDR} is unreachable ({e})");
                return None;
            }
            Err(e) => panic!("PostgreSQL at {PG_ADDR} is unreachable in CI: {e}"),
        };
        tokio::spawn(connection);
        let name = format!("it_{test}_{}_{}", std::process::id(), crate::support::unique());
        client.batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE")).await.unwrap();
        client.batch_execute(&format!("SET search_path TO {name}")).await.unwrap();
        Some(TestSchema { name, client })
    }

    pub async fn drop(self) {
        self.client.batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name)).await.unwrap();
    }

    pub async fn count(&self, sql: &str) -> i64 {
        self.client.query_one(sql, &[]).await.unwrap().get(0)
    }
}

/// Waits until the writer has applied everything durable.
pub async fn wait_caught_up(http: &Http, within: Duration) -> serde_json::Value {
    let deadline = Instant::now() + within;
    loop {
        let status = http.get("/api/admin/persistence").await.body;
        let shards = status["shards"].as_array().unwrap();
        if shards.iter().all(|s| s["lagRecords"] == 0 && s["connected"] == true) {
            return status;
        }
        assert!(Instant::now() < deadline, "writer did not catch up: {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A TCP proxy to PostgreSQL that a test can take down and bring back.
pub struct PgProxy {
    pub addr: String,
    up: Arc<AtomicBool>,
    kill: watch::Sender<u64>,
}

impl PgProxy {
    pub async fn start() -> PgProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let up = Arc::new(AtomicBool::new(true));
        let (kill, _) = watch::channel(0u64);
        let (up2, kill2) = (up.clone(), kill.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { return };
                if !up2.load(Ordering::SeqCst) {
                    drop(inbound); // refused while "down"
                    continue;
                }
                let mut killed = kill2.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(PG_ADDR).await else { return };
                    tokio::select! {
                        _ = copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = killed.changed() => {}
                    }
                });
            }
        });
        PgProxy { addr, up, kill }
    }

    pub fn url(&self) -> String {
        url_for(&self.addr)
    }

    /// Drops every open connection and refuses new ones.
    pub fn stop(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.kill.send_modify(|n| *n += 1);
    }

    pub fn start_again(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}
