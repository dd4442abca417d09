//! `inventoryctl events tail`: the example consumer of the stock-change
//! events the service publishes to NATS JetStream (stream `INVENTORY`,
//! subjects `inventory.<type>`, one CloudEvent per change).
//!
//! It reads the stream through an ordered consumer: ephemeral (nothing is
//! left on the broker once it exits), without acks, in stream order. From
//! there it does what any consumer of the stream has to do: delivery is at
//! least once, so the same event (same id, same bytes) may be in the stream
//! more than once, and every copy after the first is dropped by its id.
//!
//! Exit codes: 0 done (`--no-follow` reached the end, an interrupt, or the
//! reader of the output went away); 2 nothing to read (bad arguments, the
//! broker unreachable, no such stream, the stream lost mid-way).

use std::collections::{HashSet, VecDeque};
use std::io::{self, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::consumer::pull::OrderedConfig;
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::ErrorCode;
use futures_util::StreamExt;
use serde_json::Value;

/// Event ids remembered to drop re-deliveries: those of the events printed
/// last. Each is kept as a 128-bit hash, some 50 bytes with its share of
/// the set, so about 50 MB at the most.
const REMEMBERED_IDS_MAX: usize = 1_000_000;

/// Output held before it is written while the consumer catches up; at the
/// end of the stream every event is written at once.
const OUTPUT_BUFFER_BYTES_MAX: usize = 64 * 1024;

/// Longest wait for the broker to accept the connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The end of `events --help` and `events tail --help`.
const AFTER_HELP: &str = "\
Examples:
  inventoryctl events tail
  inventoryctl events tail --sku tea --since 10m
  inventoryctl events tail --from-seq 1200 --no-follow > events.jsonl
  INVENTORY_EVENTS_NATS_URL=nats://broker:4222 inventoryctl events tail --since 2024-05-01T10:00:00Z

Exit status: 0 done (the end with --no-follow, or interrupted); 2 nothing to
read (bad arguments, the broker unreachable, no such stream).";

#[derive(clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct EventsArgs {
    #[command(subcommand)]
    command: EventsCommand,
}

#[derive(clap::Subcommand)]
enum EventsCommand {
    /// Print the stream's events, oldest first, one JSON line each, and
    /// follow new ones.
    ///
    /// Each line is a CloudEvent as the service published it (`id`, `type`
    /// such as inventory.reserved, `subject` the SKU, `time`, and `data`
    /// with the change and the counters after it), on one line. Delivery is
    /// at least once: an event whose id was already printed is dropped. The
    /// last 1,000,000 ids printed are remembered (as 16-byte hashes, some
    /// 50 MB at the most); a copy of an event further back than that would
    /// be printed again.
    Tail(TailArgs),
}

#[derive(clap::Args)]
#[command(after_help = AFTER_HELP)]
struct TailArgs {
    /// Start at this stream sequence. Default: the first message in the
    /// stream.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..), conflicts_with = "since")]
    from_seq: Option<u64>,
    /// Start at the first message the broker stored at or after TIME: RFC
    /// 3339 (2024-05-01T10:00:00Z, or with an offset) or a duration ago
    /// (30s, 10m, 2h, 3days).
    #[arg(long, value_name = "TIME", value_parser = parse_since)]
    since: Option<UnixNanos>,
    /// Only the events of this SKU (CloudEvents `subject`).
    #[arg(long)]
    sku: Option<String>,
    /// The broker.
    #[arg(long, value_name = "URL", env = "INVENTORY_EVENTS_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// The JetStream stream the service publishes to.
    #[arg(long, env = "INVENTORY_EVENTS_STREAM", default_value = "INVENTORY")]
    stream: String,
    /// Stop at the end of the stream as it was at the start (exit 0)
    /// instead of following new events.
    #[arg(long)]
    no_follow: bool,
}

/// A time as nanoseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct UnixNanos(i128);

fn parse_since(s: &str) -> Result<UnixNanos, String> {
    since_at(s, SystemTime::now())
}

/// `--since` given `now`: a duration ago (a time before 1970 is taken as
/// 1970), RFC 3339 with an offset, or RFC 3339 in UTC without the `Z`.
fn since_at(s: &str, now: SystemTime) -> Result<UnixNanos, String> {
    let s = s.trim();
    let nanos = |t: SystemTime| UnixNanos(t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i128));
    if let Ok(ago) = humantime::parse_duration(s) {
        return Ok(nanos(now.checked_sub(ago).unwrap_or(UNIX_EPOCH)));
    }
    if let Ok(time) = async_nats::datetime::parse_rfc3339(s) {
        return Ok(UnixNanos(time.unix_timestamp_nanos().max(0)));
    }
    match humantime::parse_rfc3339_weak(s) {
        Ok(time) => Ok(nanos(time)),
        Err(_) => Err(format!("{s:?} is neither RFC 3339 (2024-05-01T10:00:00Z) nor a duration ago (10m, 2h)")),
    }
}

#[derive(Debug, thiserror::Error)]
enum TailError {
    #[error("cannot connect to the broker at {url}: {source}")]
    Connect { url: String, source: async_nats::ConnectError },
    #[error("no stream {stream} on the broker at {url}")]
    NoStream { stream: String, url: String },
    #[error("cannot read stream {stream} on the broker at {url}: {reason}")]
    Stream { stream: String, url: String, reason: String },
    #[error("cannot write output: {0}")]
    Output(#[from] io::Error),
}

pub fn run(args: EventsArgs) -> ExitCode {
    let EventsCommand::Tail(args) = args.command;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let stdout = io::stdout();
    let mut out = stdout.lock();
    match runtime.block_on(tail(&args, &mut out)) {
        Ok(()) => ExitCode::SUCCESS,
        // `inventoryctl events tail | head`: the reader has all it wanted.
        Err(TailError::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("inventoryctl events tail: {e}");
            ExitCode::from(2)
        }
    }
}

async fn tail(args: &TailArgs, out: &mut impl Write) -> Result<(), TailError> {
    let url = args.nats_url.as_str();
    let stream_error = |reason: String| TailError::Stream { stream: args.stream.clone(), url: url.to_string(), reason };
    let client = connect(url).await?;
    let jetstream = async_nats::jetstream::new(client);
    let stream = jetstream.get_stream(&args.stream).await.map_err(|e| match e.kind() {
        GetStreamErrorKind::JetStream(e) if e.error_code() == ErrorCode::STREAM_NOT_FOUND => {
            TailError::NoStream { stream: args.stream.clone(), url: url.to_string() }
        }
        _ => stream_error(e.to_string()),
    })?;
    // With --no-follow, the end: the last sequence at the start.
    let last_seq = stream.cached_info().state.last_sequence;
    if args.no_follow && last_seq == 0 {
        return Ok(());
    }
    let since = args.since.map(|UnixNanos(nanos)| async_nats::datetime::from_nanos(nanos)).transpose();
    let since = since.map_err(|e| stream_error(e.to_string()))?;
    let deliver_policy = match (args.from_seq, since) {
        (Some(start_sequence), _) => DeliverPolicy::ByStartSequence { start_sequence },
        (None, Some(start_time)) => DeliverPolicy::ByStartTime { start_time },
        (None, None) => DeliverPolicy::All,
    };
    let consumer = stream
        .create_consumer(OrderedConfig { deliver_policy, ..Default::default() })
        .await
        .map_err(|e| stream_error(format!("cannot create a consumer: {e}")))?;
    if args.no_follow && consumer.cached_info().num_pending == 0 {
        return Ok(());
    }
    let mut messages = consumer.messages().await.map_err(|e| stream_error(e.to_string()))?;
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);

    let mut seen = Seen::new(REMEMBERED_IDS_MAX);
    let mut buffer = Vec::with_capacity(OUTPUT_BUFFER_BYTES_MAX * 2);
    // The next stream sequence to show, and whether one was shown yet:
    // should the consumer, recreated after a lost connection, start over,
    // nothing before the start or before a message already shown is shown.
    let mut next_seq = args.from_seq.unwrap_or(1);
    let mut accepted_any = false;
    loop {
        let message = tokio::select! {
            message = messages.next() => message,
            _ = &mut interrupted => break,
        };
        let Some(message) = message else { break };
        let message = message.map_err(|e| stream_error(e.to_string()))?;
        let info = message.info().map_err(|e| stream_error(format!("a message without its position: {e}")))?;
        let (seq, pending) = (info.stream_sequence, info.pending);
        let early = !accepted_any && since.is_some_and(|since| info.published < since);
        if args.no_follow && seq > last_seq {
            break;
        }
        if seq >= next_seq && !early {
            (next_seq, accepted_any) = (seq + 1, true);
            match event_head(&message.payload) {
                Ok(head) => {
                    let wanted = args.sku.as_deref().is_none_or(|sku| head.subject.as_deref() == Some(sku));
                    if wanted && seen.first_time(&head.id) {
                        push_compact(&mut buffer, &message.payload);
                        buffer.push(b'\n');
                    }
                }
                Err(why) => eprintln!("inventoryctl events tail: stream sequence {seq} skipped: {why}"),
            }
        }
        if args.no_follow && (seq >= last_seq || pending == 0) {
            break;
        }
        if pending == 0 || buffer.len() >= OUTPUT_BUFFER_BYTES_MAX {
            out.write_all(&buffer)?;
            out.flush()?;
            buffer.clear();
        }
    }
    out.write_all(&buffer)?;
    out.flush()?;
    Ok(())
}

/// Connects to the broker; a lost connection later is retried without end,
/// and said on stderr.
async fn connect(url: &str) -> Result<async_nats::Client, TailError> {
    let lost = Arc::new(AtomicBool::new(false));
    let reported_url = url.to_string();
    async_nats::ConnectOptions::new()
        .name("inventoryctl events tail")
        .connection_timeout(CONNECT_TIMEOUT)
        .event_callback(move |event| {
            let (lost, url) = (lost.clone(), reported_url.clone());
            async move {
                match event {
                    async_nats::Event::Disconnected => {
                        lost.store(true, Ordering::Relaxed);
                        eprintln!("inventoryctl events tail: lost the broker at {url}; reconnecting");
                    }
                    async_nats::Event::Connected if lost.swap(false, Ordering::Relaxed) => {
                        eprintln!("inventoryctl events tail: reconnected to {url}");
                    }
                    _ => {}
                }
            }
        })
        .connect(url)
        .await
        .map_err(|source| TailError::Connect { url: url.to_string(), source })
}

/// What the consumer reads of an event: its id and its subject (the SKU).
#[derive(Debug, PartialEq, Eq)]
struct EventHead {
    id: String,
    subject: Option<String>,
}

/// The id and subject of a CloudEvent in JSON, or why it is not one.
fn event_head(payload: &[u8]) -> Result<EventHead, String> {
    let value: Value = serde_json::from_slice(payload).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(mut event) = value else { return Err("not a JSON object".to_string()) };
    let id = match event.remove("id") {
        Some(Value::String(id)) if !id.is_empty() => id,
        _ => return Err("no \"id\"".to_string()),
    };
    let subject = match event.remove("subject") {
        Some(Value::String(subject)) => Some(subject),
        _ => None,
    };
    Ok(EventHead { id, subject })
}

/// Appends `json` (valid JSON text) to `out` without the whitespace between
/// its tokens: on one line, its fields in the order they came.
fn push_compact(out: &mut Vec<u8>, json: &[u8]) {
    let (mut in_string, mut escaped) = (false, false);
    for &b in json {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else if matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            continue;
        } else if b == b'"' {
            in_string = true;
        }
        out.push(b);
    }
}

/// The ids of the events printed last, at most `capacity` of them, as
/// 128-bit hashes of the ids.
struct Seen {
    capacity: usize,
    order: VecDeque<u128>,
    ids: HashSet<u128>,
}

impl Seen {
    fn new(capacity: usize) -> Seen {
        assert!(capacity > 0, "a window of no ids drops nothing");
        Seen { capacity, order: VecDeque::new(), ids: HashSet::new() }
    }

    /// Whether `id` is not among the remembered ids; it is remembered from
    /// now on, and the oldest forgotten if there are more than `capacity`.
    fn first_time(&mut self, id: &str) -> bool {
        let hash = xxhash_rust::xxh3::xxh3_128(id.as_bytes());
        if !self.ids.insert(hash) {
            return false;
        }
        if self.order.len() == self.capacity {
            let oldest = self.order.pop_front().expect("a full window");
            self.ids.remove(&oldest);
        }
        self.order.push_back(hash);
        debug_assert_eq!(self.order.len(), self.ids.len());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_is_a_time_or_a_duration_ago() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let secs = |s: i128| UnixNanos(s * 1_000_000_000);
        assert_eq!(since_at("10m", now), Ok(secs(1_700_000_000 - 600)));
        assert_eq!(since_at("1h 30s", now), Ok(secs(1_700_000_000 - 3_630)));
        assert_eq!(since_at("2023-11-14T22:13:20Z", now), Ok(secs(1_700_000_000)));
        assert_eq!(since_at("2023-11-14T23:13:20.5+01:00", now), Ok(UnixNanos(1_700_000_000_500_000_000)));
        assert_eq!(since_at("2023-11-14 22:13:20", now), Ok(secs(1_700_000_000)));
        assert_eq!(since_at("100years", now), Ok(UnixNanos(0)));
        for bad in ["", "yesterday", "5", "2023-13-01T00:00:00Z", "-10m"] {
            assert!(since_at(bad, now).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn events_are_read_for_their_id_and_subject() {
        let head = event_head(br#"{"id":"e1","subject":"tea","data":{"subject":"x"}}"#).unwrap();
        assert_eq!(head, EventHead { id: "e1".into(), subject: Some("tea".into()) });
        assert_eq!(event_head(br#"{"id":"e2"}"#).unwrap().subject, None);
        for bad in [&b"not json"[..], b"[1]", b"{\"id\":7}", b"{\"id\":\"\"}", b"{\"subject\":\"tea\"}"] {
            assert!(event_head(bad).is_err(), "{:?} read", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn compact_json_keeps_strings_and_field_order() {
        let text = b"{ \"b\" : 1,\n  \"a\": [ \"x y\", \"q\\\" \\\\\", {} ],\r\n\t\"c\":null }";
        let mut out = Vec::new();
        push_compact(&mut out, text);
        assert_eq!(String::from_utf8(out).unwrap(), r#"{"b":1,"a":["x y","q\" \\",{}],"c":null}"#);
        let already = br#"{"id":"0001-ab","data":{"qty":-2}}"#;
        let mut out = Vec::new();
        push_compact(&mut out, already);
        assert_eq!(out, already);
    }

    #[test]
    fn the_last_ids_are_remembered_and_the_oldest_forgotten() {
        let mut seen = Seen::new(2);
        assert!(seen.first_time("a") && seen.first_time("b"));
        assert!(!seen.first_time("a") && !seen.first_time("b"));
        assert!(seen.first_time("c"));
        // "a" was the oldest of three: forgotten, so new again.
        assert!(!seen.first_time("b") && !seen.first_time("c") && seen.first_time("a"));
        assert_eq!((seen.order.len(), seen.ids.len()), (2, 2));
    }
}
