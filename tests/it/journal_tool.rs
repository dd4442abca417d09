//! `inventoryctl journal` on known journals: a real server makes a fixed
//! sequence of changes, then the tool's outputs are checked against them.

use std::path::Path;
use std::time::Duration;

use inventory_core::{shard_for_sku, Entry};
use inventory_journal::{Backend, Journal, SledStore, Store};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::{skus_on_different_shards, Client, Options, TestServer};

/// What `inventoryctl` printed and how it exited.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn all(&self) -> String {
        format!("exit {:?}\n--- stdout\n{}--- stderr\n{}", self.code, self.stdout, self.stderr)
    }

    /// The stdout lines, each parsed as JSON.
    fn jsonl(&self) -> Vec<Value> {
        self.stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
    }
}

/// Runs `inventoryctl` with `TMPDIR` set to `tmp`, where it puts any copy
/// of a live journal.
fn ctl(args: &[&str], tmp: &Path) -> Run {
    let out =
        std::process::Command::new(env!("CARGO_BIN_EXE_inventoryctl")).args(args).env("TMPDIR", tmp).output().unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `inventoryctl journal <args> --data-dir <dir>`, expecting exit 0.
fn journal_ok(dir: &Path, args: &[&str]) -> Run {
    let run = journal(dir, args);
    assert_eq!(run.code, Some(0), "{args:?}: {}", run.all());
    run
}

fn journal(dir: &Path, args: &[&str]) -> Run {
    journal_in(dir, args, &std::env::temp_dir())
}

fn journal_in(dir: &Path, args: &[&str], tmp: &Path) -> Run {
    let mut all = vec!["journal"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--data-dir", dir.to_str().unwrap()]);
    ctl(&all, tmp)
}

/// [`journal_in`] off the async runtime, for use while a server runs in it.
async fn journal_async(dir: &Path, args: &[&str], tmp: &Path) -> Run {
    let (dir, tmp) = (dir.to_path_buf(), tmp.to_path_buf());
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || journal_in(&dir, &args.iter().map(String::as_str).collect::<Vec<_>>(), &tmp))
        .await
        .unwrap()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for item in std::fs::read_dir(from).unwrap() {
        let item = item.unwrap();
        if item.file_type().unwrap().is_dir() {
            copy_dir(&item.path(), &to.join(item.file_name()));
        } else {
            std::fs::copy(item.path(), to.join(item.file_name())).unwrap();
        }
    }
}

/// The changes every test starts from. With `a` on shard A and `b` on
/// shard B, the journal holds:
///
/// | shard | seq | change |
/// |---|---|---|
/// | A | 1 | receive 10 of a (warehouse default) |
/// | A | 2 | receive 4 of a (warehouse east) |
/// | B | 1 | receive 5 of b |
/// | A | 3 | reserve 3 of a for o-1 (`rsv1`) |
/// | | | `mid` |
/// | B | 2 | reserve 2 of b for o-1 (`rsv2`) |
/// | A | 4 | confirm `rsv1` |
/// | A | 5 | reserve 1 of a for o-2 (`rsv3`) |
/// | A | 6 | release `rsv3` |
struct Known {
    a: String,
    b: String,
    shard_a: u16,
    shard_b: u16,
    rsv1: String,
    rsv2: String,
    rsv3: String,
    /// A time after A seq 3 and before B seq 2.
    mid: u64,
}

async fn reserve(client: &Client, order: &str, sku: &str, qty: u64, key: &str) -> String {
    let r = client.reserve(order, sku, qty, key).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.body["reservationId"].as_str().unwrap().to_string()
}

async fn make_known_changes(client: &Client) -> Known {
    // Entries carry the millisecond their batch was applied at, and shards
    // are merged by time: keep the changes in distinct milliseconds.
    let tick = || tokio::time::sleep(Duration::from_millis(3));
    let (a, b) = skus_on_different_shards("jt", 2);
    client.receive(&a, 10).await;
    tick().await;
    let east = client
        .post("/api/inventory/receive", json!({"skuId": a, "warehouseId": "east", "qty": 4, "idemKey": "jt-east"}))
        .await;
    assert_eq!(east.status, StatusCode::OK, "{}", east.text);
    tick().await;
    client.receive(&b, 5).await;
    tick().await;
    let rsv1 = reserve(client, "o-1", &a, 3, "jt-r1").await;
    tick().await;
    let mid = now_ms();
    tick().await;
    let rsv2 = reserve(client, "o-1", &b, 2, "jt-r2").await;
    tick().await;
    assert_eq!(client.confirm(&rsv1, "pay-1", "jt-c1").await.status, StatusCode::OK);
    tick().await;
    let rsv3 = reserve(client, "o-2", &a, 1, "jt-r3").await;
    tick().await;
    assert_eq!(client.release(&rsv3, "jt-x3").await.status, StatusCode::OK);
    Known { shard_a: shard_for_sku(&a, 2), shard_b: shard_for_sku(&b, 2), a, b, rsv1, rsv2, rsv3, mid }
}

/// A stopped server's data dir holding the known journal.
async fn known_journal() -> (tempfile::TempDir, Known) {
    known_journal_of(Backend::Sled).await
}

/// [`known_journal`] in a journal of the given kind.
async fn known_journal_of(journal: Backend) -> (tempfile::TempDir, Known) {
    let dir = tempfile::tempdir().unwrap();
    let server =
        TestServer::start_with(Options { data_dir: Some(dir.path().to_path_buf()), journal, ..Default::default() })
            .await;
    let known = make_known_changes(&server.client).await;
    server.stop().await;
    (dir, known)
}

/// A warehouse row of `replay --format jsonl`: warehouse, available,
/// reserved, sold, version.
type Row = (String, u64, u64, u64, u64);

/// `"N entries"` / `"N txns"`: the table's closing count.
fn count(run: &Run, what: &str) -> u64 {
    let last = run.stdout.lines().last().unwrap_or_default();
    last.strip_suffix(what).and_then(|n| n.trim().parse().ok()).unwrap_or_else(|| panic!("no count: {}", run.all()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_shows_every_entry_and_filters_by_sku_order_reservation_shard_and_time() {
    let (dir, k) = known_journal().await;
    let dir = dir.path();

    let all = journal_ok(dir, &["list"]);
    assert_eq!(count(&all, "entries"), 8, "{}", all.all());
    assert_eq!(all.stdout.lines().count(), 10, "header, 8 rows, count: {}", all.all());
    assert!(all.stdout.lines().next().unwrap().contains("COMMAND"), "{}", all.all());
    let row = all.stdout.lines().find(|l| l.contains(&format!("reservation={}", k.rsv3)) && l.contains("release"));
    assert!(row.is_some_and(|r| r.contains("reason=USER_CANCELLED") && r.contains("order=o-2")), "{}", all.all());

    let entries = journal_ok(dir, &["list", "--format", "jsonl"]).jsonl();
    assert_eq!(entries.len(), 8);
    let on_a: Vec<(u64, &str)> = entries
        .iter()
        .filter(|e| e["shard"] == k.shard_a)
        .map(|e| (e["seq"].as_u64().unwrap(), e["command"]["type"].as_str().unwrap()))
        .collect();
    assert_eq!(on_a, [(1, "receive"), (2, "receive"), (3, "reserve"), (4, "confirm"), (5, "reserve"), (6, "release")]);
    let times: Vec<u64> = entries.iter().map(|e| e["atMs"].as_u64().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "shards are merged in time order: {times:?}");
    let reserve_b = entries.iter().find(|e| e["shard"] == k.shard_b && e["seq"] == 2).unwrap();
    assert_eq!(reserve_b["command"]["orderId"], "o-1");
    assert_eq!(reserve_b["txns"][0]["refId"], k.rsv2.as_str());
    assert_eq!(reserve_b["txns"][0]["after"], json!({"available": 3, "reserved": 2, "sold": 0}));
    assert_eq!(reserve_b["operator"], "anonymous");
    assert_eq!(reserve_b["traceId"].as_str().unwrap().len(), 32);

    let jsonl = |args: &[&str]| {
        let mut all = vec!["list", "--format", "jsonl"];
        all.extend_from_slice(args);
        journal_ok(dir, &all).jsonl()
    };
    let keys = |entries: &[Value]| -> Vec<(u64, u64)> {
        entries.iter().map(|e| (e["shard"].as_u64().unwrap(), e["seq"].as_u64().unwrap())).collect()
    };
    let (a, b) = (k.shard_a as u64, k.shard_b as u64);
    assert_eq!(keys(&jsonl(&["--sku", &k.a])), [(a, 1), (a, 2), (a, 3), (a, 4), (a, 5), (a, 6)]);
    assert_eq!(keys(&jsonl(&["--sku", &k.b])), [(b, 1), (b, 2)]);
    // The confirm names the order only in its txn.
    assert_eq!(keys(&jsonl(&["--order", "o-1"])), [(a, 3), (b, 2), (a, 4)]);
    assert_eq!(keys(&jsonl(&["--reservation", &k.rsv3])), [(a, 5), (a, 6)]);
    assert_eq!(keys(&jsonl(&["--shard", &k.shard_b.to_string()])), [(b, 1), (b, 2)]);
    let mid = k.mid.to_string();
    assert_eq!(keys(&jsonl(&["--to", &mid])), [(a, 1), (a, 2), (b, 1), (a, 3)]);
    assert_eq!(keys(&jsonl(&["--from", &mid])), [(b, 2), (a, 4), (a, 5), (a, 6)]);
    let mid_rfc3339 = inventory_gateway::api::rfc3339(k.mid);
    assert_eq!(keys(&jsonl(&["--from", &mid_rfc3339, "--sku", &k.a])), [(a, 4), (a, 5), (a, 6)]);
    assert_eq!(keys(&jsonl(&["--order", "o-1", "--sku", &k.b])), [(b, 2)]);
    assert_eq!(jsonl(&["--limit", "3"]).len(), 3);
    assert_eq!(count(&journal_ok(dir, &["list", "--order", "nobody"]), "entries"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_passes_a_clean_journal_and_names_the_first_bad_record_of_a_damaged_copy() {
    verify_case(Backend::Sled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reads_a_file_journal_and_names_its_first_bad_record() {
    verify_case(Backend::File).await;
}

async fn verify_case(kind: Backend) {
    let (dir, k) = known_journal_of(kind).await;
    let ok = journal_ok(dir.path(), &["verify"]);
    assert!(ok.stdout.contains("journal OK: 2 shards, 8 entries, 8 txns"), "{}", ok.all());
    assert!(ok.stdout.contains(&format!("shard {}: OK, 6 entries (seq 1..6", k.shard_a)), "{}", ok.all());

    let copy = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), copy.path());
    let original: Vec<Entry> = {
        let store = Store::open(&copy.path().join("journal"), None, None, 1).unwrap();
        let j = store.journal(k.shard_a).unwrap();
        j.read_from(1).unwrap().map(Result::unwrap).collect()
    };
    if kind == Backend::Sled {
        // A copy that lost A seq 5 but kept seq 6: a gap.
        {
            let store = Store::open(&copy.path().join("journal"), None, None, 1).unwrap();
            let mut j = store.journal(k.shard_a).unwrap();
            j.recover(5).unwrap();
            j.append(&original[5..6]).unwrap();
        }
        let gap = journal(copy.path(), &["verify"]);
        assert_eq!(gap.code, Some(1), "{}", gap.all());
        let named = format!("shard {} seq 6: sequence gap, expected seq 5", k.shard_a);
        assert!(
            gap.stdout.contains(&format!("journal FAILED: 1 of 2 shards have a bad record; first: {named}")),
            "{}",
            gap.all()
        );
        assert!(gap.stdout.contains(&format!("shard {}: OK, 2 entries", k.shard_b)), "{}", gap.all());
    } else {
        // A copy with a flipped bit in A seq 1, whole entries after it.
        let segment = copy.path().join(format!("journal/shard-{}/{:020}.seg", k.shard_a, 1));
        let mut bytes = std::fs::read(&segment).unwrap();
        bytes[30] ^= 0x01;
        std::fs::write(&segment, &bytes).unwrap();
        let damaged = journal(copy.path(), &["verify"]);
        assert_eq!(damaged.code, Some(1), "{}", damaged.all());
        let named = format!("shard {} seq 1: ", k.shard_a);
        assert!(damaged.stdout.contains(&named) && damaged.stdout.contains("checksum"), "{}", damaged.all());
        assert!(damaged.stdout.contains(&format!("shard {}: OK, 2 entries", k.shard_b)), "{}", damaged.all());
        bytes[30] ^= 0x01;
        std::fs::write(&segment, &bytes).unwrap();
    }

    // A copy whose A seq 5 records txns its command does not produce.
    {
        let store = Store::open(&copy.path().join("journal"), None, None, 1).unwrap();
        let mut j = store.journal(k.shard_a).unwrap();
        j.recover(5).unwrap();
        let mut forged = original[4].clone();
        forged.txns[0].qty += 1;
        j.append(&[forged]).unwrap();
    }
    assert_eq!(Backend::detect(&copy.path().join("journal")), Some(kind));
    let diverged = journal(copy.path(), &["verify"]);
    assert_eq!(diverged.code, Some(1), "{}", diverged.all());
    let named = format!("shard {} seq 5: replay diverged: reserve produced different transactions", k.shard_a);
    assert!(diverged.stdout.contains(&named), "{}", diverged.all());

    // The other commands refuse to show state past a bad record.
    let replay = journal(copy.path(), &["replay", "--sku", &k.a]);
    assert_eq!(replay.code, Some(2), "{}", replay.all());
    assert!(replay.stderr.contains(&named) && replay.stderr.contains("journal verify"), "{}", replay.all());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_until_a_time_or_a_sequence_shows_the_intermediate_state() {
    let (dir, k) = known_journal().await;
    let dir = dir.path();
    let rows = |args: &[&str]| -> (Value, Vec<Row>) {
        let mut all = vec!["replay", "--format", "jsonl"];
        all.extend_from_slice(args);
        let line = journal_ok(dir, &all).jsonl().remove(0);
        let n = |w: &Value, f: &str| w[f].as_u64().unwrap();
        let rows = line["warehouses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| {
                let name = w["warehouseId"].as_str().unwrap().to_string();
                (name, n(w, "available"), n(w, "reserved"), n(w, "sold"), n(w, "version"))
            })
            .collect();
        (line, rows)
    };
    let row = |w: &str, a: u64, r: u64, s: u64, v: u64| (w.to_string(), a, r, s, v);

    // Between the reserve of rsv1 and the confirm.
    let mid = k.mid.to_string();
    let (sku, at_mid) = rows(&["--sku", &k.a, "--until", &mid]);
    assert_eq!(at_mid, [row("default", 7, 3, 0, 2), row("east", 4, 0, 0, 1)]);
    assert_eq!(
        (sku["available"].clone(), sku["reserved"].clone(), sku["sold"].clone()),
        (json!(11), json!(3), json!(0))
    );
    assert_eq!(sku["replayedToSeq"], 3);
    // The same point as RFC 3339.
    let table = journal_ok(dir, &["replay", "--sku", &k.a, "--until", &inventory_gateway::api::rfc3339(k.mid)]);
    let default_row: Vec<&str> =
        table.stdout.lines().find(|l| l.starts_with("default")).unwrap().split_whitespace().collect();
    assert_eq!(default_row[..5], ["default", "7", "3", "0", "2"], "{}", table.all());
    assert!(table.stdout.lines().any(|l| l.split_whitespace().eq(["TOTAL", "11", "3", "0"])), "{}", table.all());

    // The whole journal, and up to a shard's sequence number.
    let (_, at_end) = rows(&["--sku", &k.a]);
    assert_eq!(at_end, [row("default", 7, 0, 3, 5), row("east", 4, 0, 0, 1)]);
    let after_confirm = format!("{}:4", k.shard_a);
    let (_, at_seq) = rows(&["--sku", &k.a, "--until-seq", &after_confirm]);
    assert_eq!(at_seq, [row("default", 7, 0, 3, 3), row("east", 4, 0, 0, 1)]);
    let (sku, before_all) = rows(&["--sku", &k.a, "--until", "0"]);
    assert!(before_all.is_empty() && sku["found"] == false, "{sku}");

    // An order spans shards.
    let holds = |args: &[&str]| -> Vec<(String, String, String)> {
        let mut all = vec!["replay", "--format", "jsonl", "--order", "o-1"];
        all.extend_from_slice(args);
        journal_ok(dir, &all)
            .jsonl()
            .iter()
            .map(|h| {
                let s = |f: &str| h[f].as_str().unwrap().to_string();
                (s("reservationId"), s("skuId"), s("status"))
            })
            .collect()
    };
    let hold = |id: &str, sku: &str, status: &str| (id.to_string(), sku.to_string(), status.to_string());
    assert_eq!(holds(&["--until", &mid]), [hold(&k.rsv1, &k.a, "RESERVED")]);
    assert_eq!(holds(&[]), [hold(&k.rsv1, &k.a, "CONFIRMED"), hold(&k.rsv2, &k.b, "RESERVED")]);
    // Shard A up to seq 3; shard B up to that entry's time (before rsv2).
    let at_reserve = format!("{}:3", k.shard_a);
    assert_eq!(holds(&["--until-seq", &at_reserve]), [hold(&k.rsv1, &k.a, "RESERVED")]);
    let table = journal_ok(dir, &["replay", "--order", "o-2"]);
    assert!(table.stdout.contains(&k.rsv3) && table.stdout.contains("reason=USER_CANCELLED"), "{}", table.all());
    assert!(table.stdout.contains("RELEASED") && table.stdout.contains("1 holds"), "{}", table.all());

    let missing = journal(dir, &["replay", "--sku", &k.a, "--until-seq", &format!("{}:99", k.shard_a)]);
    assert_eq!(missing.code, Some(2), "{}", missing.all());
    assert!(missing.stderr.contains("has no entry with seq 99"), "{}", missing.all());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_lists_the_txns_of_an_sku_and_an_order_in_order() {
    let (dir, k) = known_journal().await;
    let dir = dir.path();
    let txns = journal_ok(dir, &["history", "--sku", &k.a, "--format", "jsonl"]).jsonl();
    let kinds: Vec<(&str, &str, u64, &str)> = txns
        .iter()
        .map(|t| {
            let s = |f: &str| t[f].as_str().unwrap();
            (s("type"), s("warehouseId"), t["qty"].as_u64().unwrap(), s("refId"))
        })
        .collect();
    // A receipt without a reference records its idempotency key.
    let first_key = kinds[0].3;
    assert!(first_key.starts_with("rcv:"), "{first_key}");
    assert_eq!(
        kinds,
        [
            ("RECEIVE", "default", 10, first_key),
            ("RECEIVE", "east", 4, "jt-east"),
            ("RESERVE", "default", 3, k.rsv1.as_str()),
            ("CONFIRM", "default", 3, k.rsv1.as_str()),
            ("RESERVE", "default", 1, k.rsv3.as_str()),
            ("RELEASE", "default", 1, k.rsv3.as_str()),
        ]
    );
    // Each change of the default row starts where the previous one ended.
    let default: Vec<&Value> = txns.iter().filter(|t| t["warehouseId"] == "default").collect();
    assert_eq!(default[0]["before"], json!({"available": 0, "reserved": 0, "sold": 0}));
    for pair in default.windows(2) {
        assert_eq!(pair[0]["after"], pair[1]["before"]);
        assert_eq!(pair[0]["version"].as_u64().unwrap() + 1, pair[1]["version"].as_u64().unwrap());
    }
    assert_eq!(default.last().unwrap()["after"], json!({"available": 7, "reserved": 0, "sold": 3}));
    assert_eq!(txns[3]["detail"], "pay-1");
    assert_eq!(txns[5]["detail"], "USER_CANCELLED");
    assert!(txns.iter().all(|t| t["operator"] == "anonymous" && t["traceId"].as_str().unwrap().len() == 32));
    let mut ids: Vec<u64> = txns.iter().map(|t| t["txnId"].as_u64().unwrap()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 6);

    let order = journal_ok(dir, &["history", "--order", "o-1", "--format", "jsonl"]).jsonl();
    let steps: Vec<(&str, &str)> =
        order.iter().map(|t| (t["type"].as_str().unwrap(), t["skuId"].as_str().unwrap())).collect();
    assert_eq!(steps, [("RESERVE", k.a.as_str()), ("RESERVE", k.b.as_str()), ("CONFIRM", k.a.as_str())]);

    let table = journal_ok(dir, &["history", "--sku", &k.a]);
    assert_eq!(count(&table, "txns"), 6, "{}", table.all());
    let confirm = table.stdout.lines().find(|l| l.contains("CONFIRM")).unwrap();
    let cells: Vec<&str> = confirm.split_whitespace().collect();
    assert!(cells.windows(2).any(|w| w == ["7/3/0", "7/0/3"]), "before and after: {confirm}");
    assert!(cells.contains(&"pay-1") && cells.contains(&"o-1") && cells.contains(&"anonymous"), "{confirm}");
    assert_eq!(count(&journal_ok(dir, &["history", "--order", "nobody"]), "txns"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_file_journal_is_read_in_place_and_follows_the_service() {
    let data = tempfile::tempdir().unwrap();
    let options = Options { data_dir: Some(data.path().to_path_buf()), journal: Backend::File, ..Default::default() };
    let server = TestServer::start_with(options).await;
    let k = make_known_changes(&server.client).await;
    let scratch = tempfile::tempdir().unwrap();
    let tmp = scratch.path();
    let before: Vec<u8> = segment_bytes(data.path());
    let live = journal_async(data.path(), &["list", "--format", "jsonl"], tmp).await;
    assert_eq!(live.code, Some(0), "{}", live.all());
    assert_eq!(live.jsonl().len(), 8, "{}", live.all());
    assert!(!live.stderr.contains("copy"), "read in place: {}", live.all());
    assert_eq!(std::fs::read_dir(tmp).unwrap().count(), 0, "no copy is made");
    assert_eq!(segment_bytes(data.path()), before, "reading changed nothing");
    reserve(&server.client, "o-3", &k.a, 2, "jt-r4").await;
    let diff = journal_async(data.path(), &["diff", "--url", &server.url], tmp).await;
    assert!(diff.stdout.contains("diff: 2 SKUs, 3 rows equal, 0 different, 0 moved on"), "{}", diff.all());
    let verify = journal_async(data.path(), &["verify"], tmp).await;
    assert!(verify.stdout.contains("journal OK: 2 shards, 9 entries, 9 txns"), "{}", verify.all());
    server.stop().await;
}

/// Every segment file's bytes under a data dir's file journal, in order.
fn segment_bytes(data: &Path) -> Vec<u8> {
    let mut files: Vec<_> =
        walk(&data.join("journal")).into_iter().filter(|p| p.extension().is_some_and(|e| e == "seg")).collect();
    files.sort();
    assert!(!files.is_empty(), "a file journal has segments");
    files.iter().flat_map(|p| std::fs::read(p).unwrap()).collect()
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .flat_map(|e| {
            let path = e.unwrap().path();
            if path.is_dir() {
                walk(&path)
            } else {
                vec![path]
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_reads_a_live_journal_and_tells_rows_that_moved_on_from_differences() {
    let data = tempfile::tempdir().unwrap();
    let server =
        TestServer::start_with(Options { data_dir: Some(data.path().to_path_buf()), ..Default::default() }).await;
    let k = make_known_changes(&server.client).await;

    // The service holds the journal's lock: the tool reads a copy.
    let scratch = tempfile::tempdir().unwrap();
    let tmp = scratch.path();
    let live = journal_async(data.path(), &["diff", "--url", &server.url], tmp).await;
    assert_eq!(live.code, Some(0), "{}", live.all());
    assert!(live.stderr.contains("in use by a running service"), "{}", live.all());
    assert!(live.stdout.contains("diff: 2 SKUs, 3 rows equal, 0 different, 0 moved on"), "{}", live.all());
    assert_eq!(std::fs::read_dir(tmp).unwrap().count(), 0, "the copy is removed");

    // A journal copy from now; then the service moves on.
    let then = tempfile::tempdir().unwrap();
    copy_dir(data.path(), then.path());
    reserve(&server.client, "o-3", &k.a, 2, "jt-r4").await;
    let moved = journal_async(then.path(), &["diff", "--url", &server.url], tmp).await;
    assert_eq!(moved.code, Some(0), "{}", moved.all());
    assert!(moved.stdout.contains("diff: 2 SKUs, 2 rows equal, 0 different, 1 moved on"), "{}", moved.all());
    assert!(!moved.stderr.contains("in use"), "a copy is read in place: {}", moved.all());
    let only_b = journal_async(then.path(), &["diff", "--url", &server.url, "--sku", &k.b], tmp).await;
    assert!(only_b.stdout.contains("diff: 1 SKUs, 1 rows equal, 0 different, 0 moved on"), "{}", only_b.all());
    // The service was not disturbed.
    assert_eq!(server.client.levels(&k.a).await, (9, 2, 3));

    // A service that lacks journaled changes differs.
    let other = TestServer::start().await;
    other.client.receive(&k.a, 99).await;
    let differs = journal_async(then.path(), &["diff", "--url", &other.url], tmp).await;
    assert_eq!(differs.code, Some(1), "{}", differs.all());
    let diffs: Vec<&str> = differs.stdout.lines().filter(|l| l.starts_with("DIFF")).collect();
    assert_eq!(diffs.len(), 3, "{}", differs.all());
    assert!(
        diffs.contains(
            &format!(
                "DIFF sku={} warehouse=default: journal 7/0/3 v5, service 99/0/0 v1: the service is behind the journal",
                k.a
            )
            .as_str()
        ),
        "{}",
        differs.all()
    );
    assert!(
        diffs.contains(&format!("DIFF sku={} warehouse=east: journal 4/0/0 v1, service has no such row", k.a).as_str())
    );
    assert!(diffs
        .contains(&format!("DIFF sku={} warehouse=default: journal 3/2/0 v2, service has no such row", k.b).as_str()));
    assert!(differs.stdout.contains("0 rows equal, 3 different, 0 moved on"), "{}", differs.all());

    other.stop().await;
    server.stop().await;
    let unreachable = journal(then.path(), &["diff", "--url", &server_url_of_closed_port()]);
    assert_eq!(unreachable.code, Some(2), "{}", unreachable.all());
    assert!(unreachable.stderr.contains("cannot connect"), "{}", unreachable.all());
}

fn server_url_of_closed_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_receipts_are_listed_with_their_items() {
    let dir = tempfile::tempdir().unwrap();
    let server =
        TestServer::start_with(Options { data_dir: Some(dir.path().to_path_buf()), ..Default::default() }).await;
    let (x, y) = skus_on_different_shards("bulk", 2);
    let items = json!([
        {"skuId": x, "qty": 3},
        {"skuId": x, "warehouseId": "east", "qty": 2},
        {"skuId": y, "qty": 4},
    ]);
    let r = server
        .client
        .post("/api/inventory/receive-batch", json!({"items": items, "idemKey": "bulk-1", "ref": "PO-9"}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    server.stop().await;
    let dir = dir.path();

    journal_ok(dir, &["verify"]);
    // One entry per shard the batch touched.
    let entries = journal_ok(dir, &["list", "--format", "jsonl"]).jsonl();
    assert_eq!(entries.len(), 2);
    assert!(entries.iter().all(|e| e["command"]["type"] == "receive_batch" && e["command"]["ref"] == "PO-9"));
    let of_x = journal_ok(dir, &["list", "--sku", &x, "--format", "jsonl"]).jsonl();
    assert_eq!(of_x.len(), 1);
    assert_eq!(of_x[0]["command"]["items"].as_array().unwrap().len(), 2);
    let table = journal_ok(dir, &["list", "--sku", &x]);
    let row = table.stdout.lines().nth(1).unwrap();
    assert!(row.contains("receive_batch") && row.contains("items=2 units=5 ref=PO-9"), "{}", table.all());
    let txns = journal_ok(dir, &["history", "--sku", &x, "--format", "jsonl"]).jsonl();
    let rows: Vec<(&str, u64, &str)> = txns
        .iter()
        .map(|t| (t["warehouseId"].as_str().unwrap(), t["qty"].as_u64().unwrap(), t["refId"].as_str().unwrap()))
        .collect();
    assert_eq!(rows, [("default", 3, "PO-9"), ("east", 2, "PO-9")]);
}

#[test]
fn a_missing_data_dir_or_journal_is_a_clear_error_and_nothing_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let gone = dir.path().join("no-such-dir");
    let run = journal(&gone, &["verify"]);
    assert_eq!(run.code, Some(2), "{}", run.all());
    assert!(run.stderr.contains("does not exist"), "{}", run.all());
    assert!(!gone.exists());

    for args in [&["list"][..], &["verify"], &["replay", "--sku", "x"], &["history", "--order", "o"]] {
        let run = journal(dir.path(), args);
        assert_eq!(run.code, Some(2), "{args:?}: {}", run.all());
        assert!(run.stderr.contains("no journal at"), "{}", run.all());
    }
    assert!(!dir.path().join("journal").exists(), "no journal is created where there was none");

    for args in [
        &["replay"][..],
        &["replay", "--sku", "x", "--order", "o"],
        &["list", "--reservation", "r-1"],
        &["list", "--from", "soon"],
        &["replay", "--sku", "x", "--until-seq", "1"],
    ] {
        let run = journal(dir.path(), args);
        assert_eq!(run.code, Some(2), "{args:?}: {}", run.all());
        assert!(!run.stderr.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_truncated_after_a_snapshot_is_verified_and_replayed_from_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let server =
        TestServer::start_with(Options { data_dir: Some(dir.path().to_path_buf()), ..Default::default() }).await;
    let k = make_known_changes(&server.client).await;
    let r = server.client.post("/api/admin/snapshot", json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    reserve(&server.client, "o-4", &k.a, 1, "jt-r5").await;
    server.stop().await;
    let first_a = {
        let store = SledStore::open(&dir.path().join("journal"), None, 1).unwrap();
        store.journal(k.shard_a).unwrap().first_seq().unwrap()
    };
    assert_eq!(first_a, Some(7), "the snapshot at seq 6 let the journal drop seq 1..6: {}", r.text);
    let dir = dir.path();

    let ok = journal_ok(dir, &["verify"]);
    assert!(ok.stdout.contains(&format!("shard {}: OK, 1 entries (seq 7..7", k.shard_a)), "{}", ok.all());
    assert!(ok.stdout.contains("replayed from seq 7"), "{}", ok.all());
    assert!(
        ok.stdout.contains(&format!("shard {}: OK, no entries after the snapshot at seq 2", k.shard_b)),
        "{}",
        ok.all()
    );

    // State comes from the snapshot plus the journal after it.
    let line = journal_ok(dir, &["replay", "--sku", &k.a, "--format", "jsonl"]).jsonl().remove(0);
    assert_eq!(line["warehouses"][0]["warehouseId"], "default");
    assert_eq!(
        (&line["available"], &line["reserved"], &line["sold"], &line["warehouses"][0]["version"]),
        (&json!(10), &json!(1), &json!(3), &json!(6))
    );
    let line = journal_ok(dir, &["replay", "--sku", &k.b, "--format", "jsonl"]).jsonl().remove(0);
    assert_eq!((&line["available"], &line["reserved"], &line["replayedToSeq"]), (&json!(3), &json!(2), &json!(2)));
    // A point the truncated journal can no longer reach is a clear error.
    let gone = journal(dir, &["replay", "--sku", &k.a, "--until", &k.mid.to_string()]);
    assert_eq!(gone.code, Some(2), "{}", gone.all());
    assert!(gone.stderr.contains("truncated after a snapshot"), "{}", gone.all());

    // Listings show what the journal still holds, and say so.
    let list = journal_ok(dir, &["list", "--sku", &k.a, "--format", "jsonl"]);
    assert_eq!(list.jsonl().len(), 1, "{}", list.all());
    assert!(list.stderr.contains("journal starts at seq 7"), "{}", list.all());
    let history = journal_ok(dir, &["history", "--sku", &k.a, "--format", "jsonl"]).jsonl();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0]["before"], json!({"available": 7, "reserved": 0, "sold": 3}));

    // Without a usable snapshot, the truncated start is a bad record.
    let copy = tempfile::tempdir().unwrap();
    copy_dir(dir, copy.path());
    let snaps = copy.path().join("snapshots").join(format!("shard-{}", k.shard_a));
    for file in std::fs::read_dir(&snaps).unwrap() {
        let path = file.unwrap().path();
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x55;
        std::fs::write(&path, bytes).unwrap();
    }
    let bad = journal(copy.path(), &["verify"]);
    assert_eq!(bad.code, Some(1), "{}", bad.all());
    let named =
        format!("shard {} seq 7: the journal starts at seq 7 but no usable snapshot covers seq 1..6", k.shard_a);
    assert!(bad.stdout.contains(&named), "{}", bad.all());
}
