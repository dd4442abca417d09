//! `inventoryctl events tail` against a private broker: hand-made
//! CloudEvents in the `INVENTORY` stream, re-deliveries among them, read
//! back through the real binary.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use async_nats::jetstream::{self, stream};
use async_nats::HeaderMap;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::nats::PrivateNats;
use crate::support::{ctl, stderr, stdout};

/// Longest wait for a line from a following `events tail`.
const LINE_TIMEOUT: Duration = Duration::from_secs(15);

/// A JetStream context on `nats`, with the `INVENTORY` stream created.
async fn inventory_stream(nats: &PrivateNats) -> jetstream::Context {
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = jetstream::new(client);
    let config =
        stream::Config { name: "INVENTORY".into(), subjects: vec!["inventory.>".into()], ..Default::default() };
    js.create_stream(config).await.unwrap();
    js
}

/// A CloudEvent as the service makes one (events/src/event.rs).
fn event(id: &str, kind: &str, sku: &str, qty: i64) -> Value {
    json!({
        "specversion": "1.0", "id": id, "type": format!("inventory.{kind}"), "source": "inventoryd-test",
        "subject": sku, "time": "2024-05-01T10:00:00.000Z", "datacontenttype": "application/json",
        "data": {
            "skuId": sku, "warehouseId": "default", "qty": qty, "refId": format!("ref-{id}"), "orderId": "",
            "available": 10, "reserved": 0, "sold": 0, "version": 1, "txnId": 1, "shard": 0, "seq": 1,
            "operator": "system",
        },
    })
}

/// Publishes `event` on `inventory.<type>` with `payload` as its bytes and
/// returns its stream sequence. With `msg_id` it carries the `Nats-Msg-Id`
/// header, as the relay sends it, and a second copy within the broker's
/// duplicate window is dropped (`None`); without it the broker keeps every
/// copy, as after a re-delivery past the window.
async fn publish_bytes(js: &jetstream::Context, event: &Value, payload: Vec<u8>, msg_id: bool) -> Option<u64> {
    let subject = event["type"].as_str().unwrap().to_string();
    let ack = if msg_id {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", event["id"].as_str().unwrap());
        js.publish_with_headers(subject, headers, payload.into()).await.unwrap().await.unwrap()
    } else {
        js.publish(subject, payload.into()).await.unwrap().await.unwrap()
    };
    (!ack.duplicate).then_some(ack.sequence)
}

async fn publish(js: &jetstream::Context, event: &Value, msg_id: bool) -> Option<u64> {
    publish_bytes(js, event, serde_json::to_vec(event).unwrap(), msg_id).await
}

/// The ids a finished `events tail` printed, in order; every line must be
/// one compact JSON event.
fn printed_ids(out: &Output) -> Vec<String> {
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(out), stderr(out));
    stdout(out).lines().map(id_of_line).collect()
}

fn id_of_line(line: &str) -> String {
    let event: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    assert_eq!(line, serde_json::to_string(&event).unwrap(), "not compact");
    event["id"].as_str().unwrap_or_else(|| panic!("no id: {line}")).to_string()
}

/// A following `events tail`, its stdout read a line at a time; killed
/// when dropped.
struct Following {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
}

impl Following {
    fn spawn(args: &[&str]) -> Following {
        let mut child = Command::new(env!("CARGO_BIN_EXE_inventoryctl"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start inventoryctl");
        let (tx, lines) = mpsc::unbounded_channel();
        let out = BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Following { child, lines }
    }

    /// The next line printed, within [`LINE_TIMEOUT`].
    async fn next_line(&mut self) -> String {
        match tokio::time::timeout(LINE_TIMEOUT, self.lines.recv()).await {
            Ok(Some(line)) => line,
            Ok(None) => panic!("events tail ended: {:?}", self.child.try_wait()),
            Err(_) => panic!("no line from events tail within {LINE_TIMEOUT:?}"),
        }
    }
}

impl Drop for Following {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_event_is_printed_once_in_stream_order_and_filters_pick_sku_and_start() {
    let nats = PrivateNats::start();
    let url = nats.url();
    let js = inventory_stream(&nats).await;
    let (tea1, coffee1) = (event("e-tea-1", "received", "tea", 10), event("e-coffee-1", "received", "coffee", 4));
    let (tea2, coffee2) = (event("e-tea-2", "reserved", "tea", -2), event("e-coffee-2", "reserved", "coffee", -1));
    assert_eq!(publish(&js, &tea1, true).await, Some(1));
    assert_eq!(publish(&js, &coffee1, true).await, Some(2));
    // A re-delivery past the duplicate window: the broker keeps both copies.
    assert_eq!(publish(&js, &tea1, false).await, Some(3));
    assert_eq!(publish(&js, &tea2, true).await, Some(4));
    // Within the window, a copy with the same Nats-Msg-Id is dropped.
    assert_eq!(publish(&js, &tea2, true).await, None);
    assert_eq!(publish(&js, &coffee1, false).await, Some(5));
    // An event as indented JSON is printed compact, on one line.
    assert_eq!(publish_bytes(&js, &coffee2, serde_json::to_vec_pretty(&coffee2).unwrap(), true).await, Some(6));
    assert_eq!(publish(&js, &coffee2, false).await, Some(7));

    let tail = ["events", "tail", "--no-follow", "--nats-url", url.as_str()];
    let out = ctl(&tail).await;
    assert_eq!(printed_ids(&out), ["e-tea-1", "e-coffee-1", "e-tea-2", "e-coffee-2"]);
    let first: Value = serde_json::from_str(stdout(&out).lines().next().unwrap()).unwrap();
    assert_eq!(first, tea1, "the event as published");
    assert_eq!(stderr(&out), "");

    let out = ctl(&[&tail[..], &["--sku", "tea"]].concat()).await;
    assert_eq!(printed_ids(&out), ["e-tea-1", "e-tea-2"]);
    let out = ctl(&[&tail[..], &["--sku", "coffee"]].concat()).await;
    assert_eq!(printed_ids(&out), ["e-coffee-1", "e-coffee-2"]);
    let out = ctl(&[&tail[..], &["--sku", "milk"]].concat()).await;
    assert_eq!(printed_ids(&out), Vec::<String>::new());

    // From sequence 4: the copy of e-coffee-1 at 5 is the first this run
    // sees, so it is printed.
    let out = ctl(&[&tail[..], &["--from-seq", "4"]].concat()).await;
    assert_eq!(printed_ids(&out), ["e-tea-2", "e-coffee-1", "e-coffee-2"]);
    let out = ctl(&[&tail[..], &["--from-seq", "7", "--sku", "coffee"]].concat()).await;
    assert_eq!(printed_ids(&out), ["e-coffee-2"]);
    let out = ctl(&[&tail[..], &["--from-seq", "100"]].concat()).await;
    assert_eq!(printed_ids(&out), Vec::<String>::new());

    // The broker's URL from the environment.
    let out = Command::new(env!("CARGO_BIN_EXE_inventoryctl"))
        .args(["events", "tail", "--no-follow", "--sku", "tea"])
        .env("INVENTORY_EVENTS_NATS_URL", &url)
        .output()
        .unwrap();
    assert_eq!(printed_ids(&out), ["e-tea-1", "e-tea-2"]);

    // A stream that is not there, and a start given twice.
    let out = ctl(&[&tail[..], &["--stream", "NOPE"]].concat()).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(stderr(&out).trim(), format!("inventoryctl events tail: no stream NOPE on the broker at {url}"));
    let out = ctl(&[&tail[..], &["--from-seq", "2", "--since", "10m"]].concat()).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = ctl(&[&tail[..], &["--since", "yesterday"]].concat()).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("nor a duration ago"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_skips_what_the_broker_stored_before_the_time() {
    let nats = PrivateNats::start();
    let url = nats.url();
    let js = inventory_stream(&nats).await;
    let early = event("e-early", "received", "tea", 5);
    publish(&js, &early, true).await.unwrap();
    publish(&js, &event("e-early-2", "reserved", "tea", -1), true).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let since = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let late = event("e-late", "released", "tea", 1);
    publish(&js, &late, true).await.unwrap();
    publish(&js, &late, false).await.unwrap();
    // A copy of an event from before the time: this run never printed it.
    publish(&js, &early, false).await.unwrap();
    publish(&js, &event("e-late-2", "frozen", "coffee", 0), true).await.unwrap();

    let tail = ["events", "tail", "--no-follow", "--nats-url", url.as_str()];
    let out = ctl(&[&tail[..], &["--since", &since]].concat()).await;
    assert_eq!(printed_ids(&out), ["e-late", "e-early", "e-late-2"]);
    let out = ctl(&[&tail[..], &["--since", &since, "--sku", "coffee"]].concat()).await;
    assert_eq!(printed_ids(&out), ["e-late-2"]);
    let out = ctl(&[&tail[..], &["--since", "1h"]].concat()).await;
    assert_eq!(printed_ids(&out), ["e-early", "e-early-2", "e-late", "e-late-2"]);
    // A time past the last event: nothing to print.
    let future = humantime::format_rfc3339_millis(SystemTime::now() + Duration::from_secs(3_600)).to_string();
    let out = ctl(&[&tail[..], &["--since", &future]].concat()).await;
    assert_eq!(printed_ids(&out), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_is_named_and_exits_2() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("nats://{}", listener.local_addr().unwrap());
    drop(listener);
    let started = Instant::now();
    let out = ctl(&["events", "tail", "--nats-url", &url]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
    let expected = format!("inventoryctl events tail: cannot connect to the broker at {url}: ");
    assert!(stderr(&out).starts_with(&expected), "{}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn following_prints_events_published_after_the_start_once_each() {
    let nats = PrivateNats::start();
    let url = nats.url();
    let js = inventory_stream(&nats).await;
    let first = event("e-1", "received", "tea", 3);
    publish(&js, &first, true).await.unwrap();

    let mut tail = Following::spawn(&["events", "tail", "--nats-url", &url]);
    assert_eq!(id_of_line(&tail.next_line().await), "e-1");
    // Published after the tail printed everything before: re-deliveries of
    // events it printed are dropped as they arrive.
    let second = event("e-2", "reserved", "tea", -1);
    publish(&js, &first, false).await.unwrap();
    publish(&js, &second, true).await.unwrap();
    publish(&js, &second, false).await.unwrap();
    publish(&js, &event("e-3", "confirmed", "tea", 0), true).await.unwrap();
    assert_eq!(id_of_line(&tail.next_line().await), "e-2");
    assert_eq!(id_of_line(&tail.next_line().await), "e-3");

    // An interrupt ends it with exit 0.
    assert_eq!(unsafe { libc::kill(tail.child.id() as i32, libc::SIGINT) }, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = tail.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "events tail still running after SIGINT");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(0));
    assert_eq!(tail.lines.recv().await, None, "nothing more printed");
}
