//! Smoke runs of every scenario against the service and every baseline, a
//! few seconds each at a low rate on a small catalogue, so the harness
//! cannot rot. Each run must end with a clean audit (zero oversold units,
//! zero lost acknowledged holds), no errors, and successful reserves.
//!
//! The PostgreSQL and Redis baselines are skipped, with a message, only
//! when their server is unreachable and `CI` is not set; in CI they run.
//! Runs are serialized: the Redis baselines change server-wide settings.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

static SERIAL: Mutex<()> = Mutex::new(());

fn bench_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_inventory-bench"))
}

/// `inventoryd` from the same target directory, built if it is missing.
fn inventoryd() -> PathBuf {
    let bin = bench_bin();
    let dir = bin.parent().expect("binary has a directory");
    let path = dir.join("inventoryd");
    if !path.is_file() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "-p", "inventory-gateway", "--bin", "inventoryd"]);
        if dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        if let Some(target_dir) = dir.parent() {
            build.arg("--target-dir").arg(target_dir);
        }
        let status = build.status().expect("run cargo build for inventoryd");
        assert!(status.success(), "cargo build -p inventory-gateway failed");
    }
    assert!(path.is_file(), "no inventoryd at {}", path.display());
    path
}

fn reachable(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
}

/// The service with each kind of journal, the in-memory reference, and
/// every baseline whose server can be reached (all of them in CI).
fn targets() -> String {
    let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty());
    let mut targets = vec!["service", "service-file", "memory"];
    if ci || reachable(5432) {
        targets.push("postgres");
    } else {
        eprintln!("SKIPPED: the postgres baseline: nothing listens on 127.0.0.1:5432 (and CI is not set)");
    }
    if ci || reachable(6379) {
        targets.extend(["redis-always", "redis-everysec"]);
    } else {
        eprintln!("SKIPPED: the redis baselines: nothing listens on 127.0.0.1:6379 (and CI is not set)");
    }
    targets.join(",")
}

/// Runs one scenario against all targets and returns the parsed report.
fn smoke(scenario: &str, extra: &[&str]) -> serde_json::Value {
    smoke_on(scenario, &targets(), extra)
}

/// Runs one scenario against `targets` and returns the parsed report.
fn smoke_on(scenario: &str, targets: &str, extra: &[&str]) -> serde_json::Value {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let out = tempfile::tempdir().expect("temp dir");
    let inventoryd = inventoryd();
    let mut command = Command::new(bench_bin());
    command
        .args(["run", "--scenario", scenario, "--targets", targets])
        .args(["--duration", "2s", "--catalogue", "1000", "--hot-skus", "10", "--connections", "4"])
        .args(["--hold-ttl-secs", "1", "--no-progress"])
        .arg("--inventoryd")
        .arg(&inventoryd)
        .arg("--out-dir")
        .arg(out.path())
        .args(extra);
    let output = command.output().expect("run inventory-bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "inventory-bench {scenario} failed: {}\n{stdout}\n{stderr}", output.status);
    println!("{stdout}");
    let report = find_report(out.path()).unwrap_or_else(|| panic!("no report.json under {}", out.path().display()));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).expect("read report")).expect("report is JSON");
    let expected = targets.split(',').count();
    let runs = report["targets"].as_array().expect("targets");
    assert_eq!(runs.len(), expected, "{stdout}");
    for t in runs {
        let name = t["target"].as_str().unwrap();
        let audit = &t["audit"];
        assert_eq!(audit["oversold_units"], 0, "{name} oversold: {stdout}");
        assert_eq!(audit["lost_acked_holds"], 0, "{name} lost acknowledged holds: {stdout}");
        assert_eq!(audit["unbalanced_skus"], 0, "{name}: {stdout}");
        assert_eq!(audit["negative_counters"], 0, "{name}: {stdout}");
        if t["orders"].is_null() {
            assert!(audit["holds_checked"].as_u64().unwrap() > 0, "{name} audited no hold: {stdout}");
            assert!(t["ops"]["reserve"]["ok"].as_u64().unwrap() > 0, "{name} granted no reserve: {stdout}");
        } else {
            assert!(audit["orders_checked"].as_u64().unwrap() > 0, "{name} audited no order: {stdout}");
            assert!(t["ops"]["order"]["ok"].as_u64().unwrap() > 0, "{name} granted no order: {stdout}");
        }
        assert_eq!(t["total"]["errors"], 0, "{name} had errors: {stdout}");
        // Sending, receiving and recording a request costs the harness some
        // CPU, and far less than a second of it.
        let cpu = t["loadgen_cpu_us_per_request"].as_f64().unwrap();
        assert!(cpu > 0.0 && cpu < 1e6, "{name}: load generator CPU {cpu} us per request: {stdout}");
        // The harness started the target, so it read the target's CPU too.
        let target_cpu = t["target_cpu_us_per_request"].as_f64();
        assert!(target_cpu.is_some_and(|c| c > 0.0 && c < 1e6), "{name}: target CPU {target_cpu:?}: {stdout}");
        let svg = out_file(out.path(), &format!("{scenario}-{name}.svg"));
        assert!(svg.is_some(), "{name}: no plot");
    }
    report
}

fn find_report(dir: &Path) -> Option<PathBuf> {
    out_file(dir, "report.json")
}

fn out_file(dir: &Path, name: &str) -> Option<PathBuf> {
    std::fs::read_dir(dir).ok()?.flatten().map(|e| e.path().join(name)).find(|p| p.is_file())
}

#[test]
fn peak_smoke() {
    let report = smoke("peak", &["--rate", "200"]);
    for t in report["targets"].as_array().unwrap() {
        for op in ["reserve", "confirm", "release", "query"] {
            assert!(t["ops"][op]["count"].as_u64().unwrap() > 0, "no {op} sent");
        }
    }
}

#[test]
fn double_peak_smoke() {
    smoke("double-peak", &["--rate", "400"]);
}

#[test]
fn hot_burst_smoke() {
    // The single SKU sells out during the burst: rejections, never oversell.
    let report = smoke("hot-burst", &["--rate", "100"]);
    for t in report["targets"].as_array().unwrap() {
        assert!(t["ops"]["reserve"]["codes"]["INSUFFICIENT_STOCK"].as_u64().unwrap_or(0) > 0, "never sold out");
    }
}

#[test]
fn hot_only_smoke() {
    smoke("hot-only", &[]);
}

#[test]
fn max_smoke() {
    smoke("max", &["--mix", "reserves"]);
}

/// `max` with orders of 3 lines against the service's order endpoint:
/// granted orders are read back whole, refused ones hold nothing.
#[test]
fn max_orders_smoke() {
    let report = smoke_on("max", "service,service-file", &["--mix", "reserves", "--lines", "3"]);
    for t in report["targets"].as_array().unwrap() {
        let name = t["target"].as_str().unwrap();
        let audit = &t["audit"];
        assert_eq!(audit["lost_acked_orders"], 0, "{name}: {audit}");
        assert_eq!(audit["refused_orders_holding"], 0, "{name}: {audit}");
        assert_eq!(t["orders"]["lines"], 3, "{name}: {}", t["orders"]);
        assert!(t["orders"]["orders_ok"].as_u64().unwrap_or(0) > 0, "{name}: no order granted: {}", t["orders"]);
    }
}

/// A drop against the service (the only target with sale policies): the
/// SKU sells out, bots meet the limit, and no buyer holds more than it.
#[test]
fn drop_smoke() {
    let report = smoke_on("drop", "service,service-file", &["--buyers", "2000"]);
    for t in report["targets"].as_array().unwrap() {
        let name = t["target"].as_str().unwrap();
        let codes = &t["ops"]["reserve"]["codes"];
        assert!(codes["INSUFFICIENT_STOCK"].as_u64().unwrap_or(0) > 0, "{name} never sold out: {codes}");
        assert!(codes["PURCHASE_LIMIT_EXCEEDED"].as_u64().unwrap_or(0) > 0, "{name}: no bot met the limit: {codes}");
        let buyers = &t["audit"]["buyers"];
        assert_eq!(buyers["limit"], 2, "{name}: {buyers}");
        assert_eq!(buyers["buyers_over_limit"], 0, "{name}: {buyers}");
        assert_eq!(buyers["max_units"], 2, "{name}: {buyers}");
        // 2,000 buyers after 2 units each: 400 units, all sold.
        assert_eq!(t["drop"]["stock_units"], 400, "{name}");
        assert_eq!(buyers["units"], 400, "{name}: {buyers}");
        assert!(t["drop"]["sold_out_after_s"].as_f64().is_some(), "{name}");
    }
}

#[test]
fn drop_refuses_targets_without_sale_policies() {
    let output = Command::new(bench_bin())
        .args(["run", "--scenario", "drop", "--targets", "service,postgres"])
        .output()
        .expect("run inventory-bench");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("only the service has"), "{stderr}");
}

#[test]
fn soak_smoke() {
    let report = smoke("soak", &["--sample-every", "500ms"]);
    for t in report["targets"].as_array().unwrap() {
        let name = t["target"].as_str().unwrap();
        let samples = t["resources"].as_array().unwrap_or_else(|| panic!("{name}: no resource samples"));
        assert!(samples.len() >= 3, "{name}: {samples:?}");
        assert!(samples.iter().all(|s| s["rss_bytes"].as_u64().unwrap() > 0), "{name}: {samples:?}");
        if name.starts_with("service") {
            assert!(samples.iter().all(|s| s["disk_bytes"].as_u64().unwrap() > 0), "{name}: {samples:?}");
        }
        let last = samples.last().unwrap()["reserves_ok"].as_u64().unwrap();
        assert_eq!(last, t["ops"]["reserve"]["ok"].as_u64().unwrap(), "{name}: the last sample counts every reserve");
    }
}

#[test]
fn bad_input_is_refused_with_a_clear_message() {
    let output = Command::new(bench_bin())
        .args(["run", "--scenario", "peak", "--catalogue", "0"])
        .output()
        .expect("run inventory-bench");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--catalogue must be between 1 and 50000000"), "{stderr}");
}
