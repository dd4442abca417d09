//! Helpers for tests against the local PostgreSQL: a schema per test, and a
//! proxy that can "stop" and "restart" the database for one test only.

use std::path::Path;
use std::process::Command as Process;
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

// ----- a cluster of the test's own ----------------------------------------------

pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A PostgreSQL cluster of the test's own (the shared one stays up): made by
/// `initdb` as the `postgres` user in a temp dir, trust auth, a free port,
/// its socket in the temp dir. Stopped when dropped.
pub struct PrivatePg {
    dir: tempfile::TempDir,
    pub port: u16,
    /// Server options beyond the port, socket and listen address.
    options: String,
}

impl PrivatePg {
    pub fn start() -> Result<PrivatePg, String> {
        PrivatePg::start_with(|_, _| Ok(String::new()))
    }

    /// As [`PrivatePg::start`]; `setup` gets the cluster's directory and the
    /// `postgres` user's `(uid, gid)` before the first start (to place files
    /// there) and returns more server options (`-c name=value ...`).
    pub fn start_with(setup: impl FnOnce(&Path, (u32, u32)) -> Result<String, String>) -> Result<PrivatePg, String> {
        if !Path::new(PG_BIN).join("initdb").exists() {
            return Err(format!("no PostgreSQL binaries in {PG_BIN}"));
        }
        let id = |flag: &str| -> Result<u32, String> {
            let out = Process::new("id").args([flag, "postgres"]).output().map_err(|e| e.to_string())?;
            String::from_utf8_lossy(&out.stdout).trim().parse().map_err(|_| "no user postgres".to_string())
        };
        let owner = (id("-u")?, id("-g")?);
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        std::os::unix::fs::chown(dir.path(), Some(owner.0), Some(owner.1)).map_err(|e| e.to_string())?;
        let options = setup(dir.path(), owner)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let pg = PrivatePg { dir, port, options };
        let data = pg.data();
        pg.run("initdb", &["-D", &data, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"])?;
        pg.start_again()?;
        Ok(pg)
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    /// Runs one of PostgreSQL's programs as the `postgres` user.
    fn run(&self, program: &str, args: &[&str]) -> Result<(), String> {
        let out = Process::new("runuser")
            .args(["-u", "postgres", "--", &format!("{PG_BIN}/{program}")])
            .args(args)
            .output()
            .map_err(|e| format!("{program}: {e}"))?;
        if !out.status.success() {
            return Err(format!("{program} failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(())
    }

    /// Starts the cluster on its port and waits until it takes connections.
    pub fn start_again(&self) -> Result<(), String> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off {}",
            self.port,
            self.dir.path().display(),
            self.options
        );
        let log = self.dir.path().join("log").display().to_string();
        self.run("pg_ctl", &["-D", &self.data(), "-l", &log, "-o", &options, "-w", "start"])
    }

    /// Stops it the way a crash would: no shutdown checkpoint, every
    /// connection cut.
    pub fn stop_immediately(&self) -> Result<(), String> {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "immediate", "-w", "stop"])
    }

    pub fn url(&self) -> String {
        format!("host=127.0.0.1 port={} user=postgres dbname=postgres connect_timeout=3", self.port)
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let _ = self.stop_immediately();
    }
}
