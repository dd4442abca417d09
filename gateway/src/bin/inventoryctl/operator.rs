//! What `sku`, `adjust` and `transfer` share: their flags, sending one
//! request to the service's operator API (`/api/admin/...`), and showing
//! the answer.
//!
//! A write names its operator (the `X-Operator` header, which the service
//! requires) and carries an idempotency key (`idemKey` in the body): the
//! one given with `--idem-key`, or one made from the time and the process
//! id and printed on stderr, so a retry can send it again and the service
//! does the write at most once.
//!
//! Exit codes: 0 done; 1 the service refused (a 4xx answer, whose code and
//! message go to stderr); 2 no answer to act on (bad arguments, the service
//! unreachable, a 5xx answer or an unreadable one).

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::Value;

use crate::client::{Blocking, Endpoint, Request};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for an answer: a write is answered once it is durable.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest answer accepted (a list holds every record that matches).
const ANSWER_BYTES_MAX: usize = 64 << 20;

/// What percent-encoding leaves as it is in a path segment or a query
/// value: letters, digits and `-_.~`.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// The exit codes, for the end of each group's help.
pub const EXIT_CODES: &str = "\
Exit status: 0 done; 1 the service refused (its code and message are printed
on stderr); 2 no answer to act on (bad arguments, the service unreachable, a
server error). After exit 2 a write may or may not have happened: run it
again with the same --idem-key and the service does it at most once.";

/// The flags of a write.
#[derive(clap::Args)]
pub struct WriteArgs {
    /// Who acts: sent as the X-Operator header and recorded with the write.
    #[arg(long, value_parser = parse_operator)]
    operator: String,
    /// Idempotency key of this write. Default: a new one, printed on
    /// stderr; to retry a write that got no answer, pass the printed key.
    #[arg(long, value_name = "KEY")]
    idem_key: Option<String>,
    /// The service.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
}

/// The flags of a read.
#[derive(clap::Args)]
pub struct ReadArgs {
    /// Who asks (optional for reads): sent as the X-Operator header.
    #[arg(long, value_parser = parse_operator)]
    operator: Option<String>,
    /// The service.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
}

/// How a list is shown.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ListFormat {
    /// One line per record, the main fields in columns.
    Table,
    /// The service's answer, pretty-printed.
    Json,
}

/// A 2xx answer: its JSON, as parsed and as sent, and whether it replays
/// an earlier write.
pub struct Answer {
    pub json: Value,
    text: String,
    replayed: bool,
}

impl Answer {
    /// Prints the answer pretty-printed, its fields in the service's order.
    pub fn print(&self) {
        println!("{}", pretty(&self.text));
    }
}

/// Why a command failed; each is printed as `inventoryctl <command>: ...`.
pub enum Failure {
    /// The service answered and refused (exit 1).
    Refused(String),
    /// No answer to act on (exit 2).
    NoAnswer(String),
}

/// The exit code of a finished command, its failure printed on stderr.
pub fn finish(command: &str, result: Result<(), Failure>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Refused(e)) => {
            eprintln!("inventoryctl {command}: {e}");
            ExitCode::from(1)
        }
        Err(Failure::NoAnswer(e)) => {
            eprintln!("inventoryctl {command}: {e}");
            ExitCode::from(2)
        }
    }
}

fn parse_operator(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        return Err("the operator name must not be empty".to_string());
    }
    if !s.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(format!("{s:?}: the operator name must be visible ASCII (it travels as a header)"));
    }
    Ok(s.to_string())
}

/// `s` percent-encoded for a path segment or a query value.
pub fn encode(s: &str) -> String {
    utf8_percent_encode(s, UNRESERVED).to_string()
}

/// `path?name=value&...`, with the pairs whose value is given.
pub fn with_query(path: &str, pairs: &[(&str, Option<&str>)]) -> String {
    let mut url = path.to_string();
    for (name, value) in pairs.iter().filter_map(|(n, v)| v.map(|v| (n, v))) {
        url.push(if url.contains('?') { '&' } else { '?' });
        let _ = write!(url, "{name}={}", encode(value));
    }
    url
}

/// An idempotency key no other run makes: the time in nanoseconds and the
/// process id.
fn new_idem_key() -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("ctl-{nanos}-{}", std::process::id())
}

/// POSTs `body` (a JSON object, given its `idemKey` here) as `args`'
/// operator, and prints the answer.
pub fn write(command: &str, args: &WriteArgs, path: &str, body: Value) -> Result<(), Failure> {
    send_write(command, args, path, body).map(|answer| answer.print())
}

/// [`write`], returning the answer instead of printing it.
pub fn send_write(command: &str, args: &WriteArgs, path: &str, mut body: Value) -> Result<Answer, Failure> {
    let key = match &args.idem_key {
        Some(key) => key.clone(),
        None => {
            let key = new_idem_key();
            eprintln!("inventoryctl {command}: idempotency key {key} (to retry: --idem-key {key})");
            key
        }
    };
    body["idemKey"] = Value::String(key.clone());
    let request = Request::post(path, "application/json", serde_json::to_vec(&body).expect("json"))
        .header("x-operator", args.operator.clone());
    let answer = send(&args.url, request)?;
    if answer.replayed {
        eprintln!("inventoryctl {command}: already done under key {key}; the record as it stands:");
    }
    Ok(answer)
}

/// Prints `/api/admin/<what>?status=&skuId=` as a table, a line a record
/// made by `row` under `headers`, or as the service's JSON.
pub fn list(
    read_args: &ReadArgs,
    what: &str,
    status: Option<&str>,
    sku: Option<&str>,
    format: ListFormat,
    headers: &[&str],
    row: fn(&Value) -> Vec<String>,
) -> Result<(), Failure> {
    let status = status.map(|s| s.to_ascii_uppercase());
    let path = with_query(&format!("/api/admin/{what}"), &[("status", status.as_deref()), ("skuId", sku)]);
    let answer = read(read_args, &path)?;
    if format == ListFormat::Json {
        answer.print();
        return Ok(());
    }
    let records = answer.json[what].as_array().map(Vec::as_slice).unwrap_or_default();
    if records.is_empty() {
        println!("no {what}");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = records.iter().map(row).collect();
    print_table(headers, &rows);
    Ok(())
}

/// GETs `path` and returns the answer.
pub fn read(args: &ReadArgs, path: &str) -> Result<Answer, Failure> {
    let mut request = Request::get(path);
    if let Some(operator) = &args.operator {
        request = request.header("x-operator", operator.clone());
    }
    send(&args.url, request)
}

/// Sends `request`; a 2xx answer, else why not.
fn send(url: &str, request: Request) -> Result<Answer, Failure> {
    let endpoint = Endpoint::parse_scheme_optional(url).map_err(Failure::NoAnswer)?.connect_timeout(CONNECT_TIMEOUT);
    let request = request.timeout(ANSWER_TIMEOUT).body_limit(ANSWER_BYTES_MAX);
    let response = Blocking::new(endpoint).send(request).map_err(Failure::NoAnswer)?;
    let status = response.status;
    let text = String::from_utf8_lossy(&response.body).into_owned();
    let answer: Option<Value> = serde_json::from_str(&text).ok();
    if status.is_success() {
        let replayed = response.headers.get("idempotent-replayed").is_some_and(|v| v == "true");
        return match answer {
            Some(json) => Ok(Answer { json, text, replayed }),
            None => Err(Failure::NoAnswer(format!("the service answered {status} with no JSON: {text}"))),
        };
    }
    let said = match &answer {
        Some(Value::Object(error)) if error.contains_key("code") => format!(
            "{} {}: {}",
            status.as_u16(),
            error["code"].as_str().unwrap_or_default(),
            error.get("message").and_then(Value::as_str).unwrap_or_default()
        ),
        _ => format!("{status}: {}", text.trim()),
    };
    if status.is_client_error() {
        Err(Failure::Refused(format!("refused: {said}")))
    } else {
        Err(Failure::NoAnswer(format!("the service failed: {said}")))
    }
}

/// Valid JSON text re-indented as `serde_json::to_string_pretty` would
/// print it, its object fields kept in their order (a parsed `Value`
/// sorts them).
fn pretty(json: &str) -> String {
    let mut out = String::with_capacity(json.len() * 2);
    let mut depth = 0usize;
    let (mut in_string, mut escaped) = (false, false);
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        out.extend(std::iter::repeat_n("  ", depth));
    };
    let mut chars = json.trim().chars().peekable();
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                out.push(c);
                while chars.next_if(|c| c.is_whitespace()).is_some() {}
                if let Some(close) = chars.next_if(|&n| n == '}' || n == ']') {
                    out.push(close);
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_whitespace() => {}
            c => out.push(c),
        }
    }
    out
}

/// A table cell: `-` for a missing or empty field, a string as it is
/// unless it would blur the columns or reach the terminal as a control
/// character (then it is quoted), anything else as JSON.
pub fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".to_string(),
        Value::String(s) if s.is_empty() => "-".to_string(),
        Value::String(s) if s.chars().any(|c| c.is_whitespace() || c.is_control() || c == '"') => format!("{s:?}"),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `rows` under `headers`, in columns two spaces apart; the last column is
/// not padded.
pub fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, value) in widths.iter_mut().zip(row) {
            *width = (*width).max(value.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, (value, width)) in cells.zip(&widths).enumerate() {
            if i + 1 == widths.len() {
                text.push_str(value);
            } else {
                let _ = write!(text, "{value:<width$}  ");
            }
        }
        println!("{}", text.trim_end());
    };
    line(&mut headers.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_queries_are_encoded() {
        assert_eq!(encode("adj-0-1"), "adj-0-1");
        assert_eq!(encode("a b/c?&"), "a%20b%2Fc%3F%26");
        assert_eq!(with_query("/x", &[("status", None), ("skuId", None)]), "/x");
        assert_eq!(
            with_query("/x", &[("status", Some("PENDING")), ("skuId", Some("a&b"))]),
            "/x?status=PENDING&skuId=a%26b"
        );
        assert_eq!(with_query("/x", &[("status", None), ("skuId", Some("s"))]), "/x?skuId=s");
    }

    #[test]
    fn operators_are_visible_ascii() {
        assert_eq!(parse_operator("ann"), Ok("ann".to_string()));
        for bad in ["", " ", "\u{e9}ric", "a\tb"] {
            assert!(parse_operator(bad).is_err(), "{bad:?} parsed");
        }
        assert!(new_idem_key().ends_with(&format!("-{}", std::process::id())));
    }

    #[test]
    fn answers_are_pretty_printed_in_their_order() {
        let text = r#"{"b":1,"a":{"x":[1,{"y":"s,\"{:"}],"e":{},"f":[ ]},"c":null}"#;
        let value: Value = serde_json::from_str(text).unwrap();
        let printed = pretty(text);
        assert_eq!(serde_json::from_str::<Value>(&printed).unwrap(), value);
        assert!(printed.starts_with("{\n  \"b\": 1,\n  \"a\": {\n    \"x\": [\n      1,"), "{printed}");
        let sorted = serde_json::to_string_pretty(&value).unwrap();
        assert_eq!(pretty(&serde_json::to_string(&value).unwrap()), sorted);
        assert_eq!(pretty(" [] "), "[]");
    }

    #[test]
    fn cells() {
        assert_eq!(cell(&Value::Null), "-");
        assert_eq!(cell(&Value::from("")), "-");
        assert_eq!(cell(&Value::from("tea")), "tea");
        assert_eq!(cell(&Value::from("cycle count")), "\"cycle count\"");
        assert_eq!(cell(&Value::from(-3)), "-3");
    }
}
