//! The audit log: every stock change outside the reserve/confirm/release
//! flow (receipts, freezes, adjustments, transfers), as a hash-chained
//! JSON-lines file.
//!
//! Each line carries `index` (1, 2, ...), `prevHash` and `hash =
//! SHA-256(prevHash || "\n" || the line's other fields as JSON)`. Altering,
//! removing or reordering a line breaks the chain at that line;
//! `audit.head` (replaced atomically after every append) records the last
//! index and hash, so removing lines from the end is caught too (after a
//! crash the head may lag the synced lines; the next start moves it on). The log is
//! derived from the journal: entries missing after a crash are written again
//! at the next start from the journaled commands.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use inventory_core::{Command, Entry, Levels, Millis, TxnKind};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const LOG_FILE: &str = "audit.jsonl";
/// `action` of a bulk receipt's record.
pub const ACTION_BULK_RECEIVE: &str = "RECEIVE_BULK";
pub const HEAD_FILE: &str = "audit.head";
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LevelsJson {
    pub available: u64,
    pub reserved: u64,
    pub sold: u64,
}

impl From<Levels> for LevelsJson {
    fn from(l: Levels) -> Self {
        LevelsJson { available: l.available, reserved: l.reserved, sold: l.sold }
    }
}

/// What is audited about one journal entry that changes stock (everything
/// but the chain fields). A single receipt carries its row inline
/// (`skuId`, `warehouseId`, `before`, `after`); a bulk receipt lists its
/// rows in `rows` instead, so that a 10,000-row receipt is one record and
/// one hash rather than 10,000.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    pub shard: u16,
    pub seq: u64,
    pub at_ms: Millis,
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warehouse_id: Option<String>,
    /// Units received (by all rows, for a bulk receipt).
    pub qty: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<LevelsJson>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<LevelsJson>,
    pub reason: String,
    pub operator: String,
    pub trace_id: String,
    /// The adjustment or transfer acted on (the idempotency key of a
    /// freeze).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ref_id: Option<String>,
    /// An adjustment's signed change of units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<i64>,
    /// Who proposed the adjustment (`operator` approved, rejected it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proposed_by: Option<String>,
    /// A transfer's destination (`warehouseId` is its source).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_warehouse_id: Option<String>,
    /// Last: the log's writer appends rows written ahead of time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rows: Vec<AuditRow>,
}

/// One row of a bulk receipt, written as a JSON array to keep a bulk
/// record small: `[skuId, warehouseId, qty, [available, reserved, sold]
/// before, [available, reserved, sold] after]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRow(pub String, pub String, pub u64, pub [u64; 3], pub [u64; 3]);

impl AuditRow {
    pub fn sku_id(&self) -> &str {
        &self.0
    }

    pub fn warehouse_id(&self) -> &str {
        &self.1
    }

    pub fn qty(&self) -> u64 {
        self.2
    }

    pub fn before(&self) -> Levels {
        let [available, reserved, sold] = self.3;
        Levels { available, reserved, sold }
    }

    pub fn after(&self) -> Levels {
        let [available, reserved, sold] = self.4;
        Levels { available, reserved, sold }
    }
}

fn levels_array(l: Levels) -> [u64; 3] {
    [l.available, l.reserved, l.sold]
}

/// One line of the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    pub index: u64,
    pub prev_hash: String,
    #[serde(flatten)]
    pub event: AuditEvent,
    pub hash: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Hashed<'a> {
    index: u64,
    #[serde(flatten)]
    event: &'a AuditEvent,
}

fn chain_hash(prev_hash: &str, index: u64, event: &AuditEvent) -> String {
    let body = serde_json::to_vec(&Hashed { index, event }).expect("json");
    String::from_utf8(hash_of(prev_hash, &body).to_vec()).expect("hex")
}

/// `SHA-256(prev_hash || "\n" || body)` in lowercase hex.
fn hash_of(prev_hash: &str, body: &[u8]) -> [u8; 64] {
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(b"\n");
    h.update(body);
    let mut hex = [0u8; 64];
    hex::encode_to_slice(h.finalize(), &mut hex).expect("64 hex digits");
    hex
}

/// Whether the audit log records `entry`: exactly when [`event_of`] gives
/// it a record.
pub fn is_audited(entry: &Entry) -> bool {
    entry.txns.iter().any(|t| t.kind == TxnKind::Receive || t.kind.is_operator())
}

/// The action an operator command's record names.
fn operator_action(command: &Command, txns: &[inventory_core::Txn]) -> &'static str {
    match command {
        Command::Freeze(c) if c.frozen => "FREEZE",
        Command::Freeze(_) => "UNFREEZE",
        Command::ProposeAdjustment(_) => "ADJUSTMENT_PROPOSED",
        Command::DecideAdjustment(_) => match txns.first().map(|t| t.kind) {
            Some(TxnKind::AdjustApplied) => "ADJUSTMENT_APPLIED",
            Some(TxnKind::AdjustRejected) => "ADJUSTMENT_REJECTED",
            _ => "ADJUSTMENT_EXPIRED",
        },
        Command::ExpireAdjustments(_) => "ADJUSTMENT_EXPIRED",
        Command::DispatchTransfer(_) => "TRANSFER_DISPATCHED",
        Command::FinishTransfer(c) if c.arrive => "TRANSFER_ARRIVED",
        Command::FinishTransfer(_) => "TRANSFER_CANCELLED",
        Command::Repair(_) => "RECONCILE_REPAIR",
        Command::SetPolicy(c) if c.policy.is_some() => "POLICY_SET",
        Command::SetPolicy(_) => "POLICY_REMOVED",
        Command::Receive(_)
        | Command::ReserveAs(_)
        | Command::PrepareOrder(_)
        | Command::DecideOrder(_)
        | Command::FinishOrder(_)
        | Command::ExpireOrders(_)
        | Command::ReceiveBatch(_)
        | Command::Reserve(_)
        | Command::Confirm(_)
        | Command::Release(_)
        | Command::Expire(_)
        | Command::Evict(_) => unreachable!("not an operator command"),
    }
}

/// The record of an operator's action: its one row inline, or (a freeze
/// of several rows, a transfer's two ends) its rows.
fn operator_event(shard: u16, entry: Entry) -> AuditEvent {
    let action = operator_action(&entry.command, &entry.txns);
    let Entry { seq, at, trace_id, operator, txns, .. } = entry;
    let first = &txns[0];
    let adjustment = first.kind.is_adjustment();
    let mut refs: Vec<&str> = txns.iter().map(|t| t.ref_id.as_str()).collect();
    refs.dedup();
    let mut event = AuditEvent {
        shard,
        seq,
        at_ms: at,
        action: action.to_string(),
        sku_id: Some(first.sku_id.clone()),
        warehouse_id: None,
        qty: if adjustment { first.delta().unsigned_abs() } else { first.qty },
        before: None,
        after: None,
        reason: first.detail.clone(),
        operator,
        trace_id: format!("{trace_id:032x}"),
        ref_id: Some(refs.join(",")).filter(|r| !r.is_empty()),
        delta: adjustment.then(|| first.delta()),
        proposed_by: adjustment.then(|| first.order_id.clone()),
        to_warehouse_id: None,
        rows: Vec::new(),
    };
    if matches!(first.kind, TxnKind::TransferOut | TxnKind::TransferReturned) {
        event.warehouse_id = Some(first.warehouse_id.clone());
        event.to_warehouse_id = Some(first.order_id.clone());
    } else if first.kind == TxnKind::TransferIn {
        event.warehouse_id = Some(first.order_id.clone());
        event.to_warehouse_id = Some(first.warehouse_id.clone());
    }
    if txns.len() == 1 {
        let t = txns.into_iter().next().expect("one");
        event.warehouse_id.get_or_insert(t.warehouse_id);
        event.before = Some(t.before.into());
        event.after = Some(t.after.into());
    } else {
        event.rows = txns
            .into_iter()
            .map(|t| {
                let qty = if t.kind.is_adjustment() { t.delta().unsigned_abs() } else { t.qty };
                AuditRow(t.sku_id, t.warehouse_id, qty, levels_array(t.before), levels_array(t.after))
            })
            .collect();
    }
    event
}

/// The audit record of one journal entry, if it received stock or was an
/// operator's action. Takes the entry to move its strings into the record.
pub fn event_of(shard: u16, entry: Entry) -> Option<AuditEvent> {
    if entry.txns.first().is_some_and(|t| t.kind.is_operator()) {
        return Some(operator_event(shard, entry));
    }
    let bulk = matches!(entry.command, Command::ReceiveBatch(_));
    let Entry { seq, at, trace_id, operator, txns, .. } = entry;
    let mut receipts = txns.into_iter().filter(|t| t.kind == TxnKind::Receive).peekable();
    let first = receipts.peek()?;
    let mut event = AuditEvent {
        shard,
        seq,
        at_ms: at,
        action: if bulk { ACTION_BULK_RECEIVE } else { first.kind.as_str() }.to_string(),
        sku_id: None,
        warehouse_id: None,
        qty: 0,
        before: None,
        after: None,
        reason: first.ref_id.clone(),
        operator,
        trace_id: format!("{trace_id:032x}"),
        ref_id: None,
        delta: None,
        proposed_by: None,
        to_warehouse_id: None,
        rows: Vec::new(),
    };
    if bulk {
        event.rows = receipts
            .map(|t| {
                event.qty += t.qty;
                AuditRow(t.sku_id, t.warehouse_id, t.qty, levels_array(t.before), levels_array(t.after))
            })
            .collect();
    } else if let Some(t) = receipts.next() {
        event.qty = t.qty;
        event.before = Some(t.before.into());
        event.after = Some(t.after.into());
        event.sku_id = Some(t.sku_id);
        event.warehouse_id = Some(t.warehouse_id);
    }
    Some(event)
}

/// An event on its way into the log, its bulk rows (if any) already
/// written as the JSON the log holds them in.
pub struct Pending {
    /// The event without its rows.
    event: AuditEvent,
    /// The rows' JSON arrays, comma-separated.
    rows: Vec<u8>,
    row_count: usize,
}

impl Pending {
    /// Rows this event audits: one for a single receipt.
    pub fn rows(&self) -> usize {
        self.row_count.max(1)
    }

    /// The journal time of the change.
    pub fn at_ms(&self) -> Millis {
        self.event.at_ms
    }
}

impl From<AuditEvent> for Pending {
    fn from(mut event: AuditEvent) -> Pending {
        let mut rows = Vec::new();
        for row in &event.rows {
            push_row(&mut rows, &row.0, &row.1, row.2, row.3, row.4);
        }
        let row_count = event.rows.len();
        event.rows = Vec::new();
        Pending { event, rows, row_count }
    }
}

/// Appends one row as `serde_json` writes an [`AuditRow`], after a comma
/// if `out` holds rows already.
fn push_row(out: &mut Vec<u8>, sku_id: &str, warehouse_id: &str, qty: u64, before: [u64; 3], after: [u64; 3]) {
    let mut n = itoa::Buffer::new();
    if !out.is_empty() {
        out.push(b',');
    }
    out.push(b'[');
    push_str(out, sku_id);
    out.push(b',');
    push_str(out, warehouse_id);
    out.push(b',');
    out.extend_from_slice(n.format(qty).as_bytes());
    for levels in [before, after] {
        out.extend_from_slice(b",[");
        for (i, v) in levels.into_iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(n.format(v).as_bytes());
        }
        out.push(b']');
    }
    out.push(b']');
}

/// A JSON string as `serde_json` writes it: ids rarely need escaping, so
/// those that do not are copied as they are.
fn push_str(out: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        serde_json::to_writer(out, s).expect("a string serializes");
    }
}

/// The audit record of one framed journal record (see [`event_of`]). A
/// bulk receipt's rows are written straight from the record, without
/// decoding the entry and its txns.
pub fn pending_of_record(
    shard: u16,
    seq: u64,
    record: &[u8],
) -> Result<Option<Pending>, inventory_journal::JournalError> {
    inventory_journal::inspect(shard, seq, record, |inspected| match inspected {
        inventory_journal::Inspected::Entry(entry) => event_of(shard, entry).map(Pending::from),
        inventory_journal::Inspected::Bulk(bulk) => {
            let (mut rows, mut row_count, mut qty) = (Vec::new(), 0, 0);
            for row in bulk.rows() {
                if row_count == 0 {
                    rows.reserve(bulk.len() * (row.sku_id.len() + row.warehouse_id.len() + 32));
                }
                push_row(
                    &mut rows,
                    row.sku_id,
                    row.warehouse_id,
                    row.qty,
                    levels_array(row.before),
                    levels_array(row.after),
                );
                row_count += 1;
                qty += row.qty;
            }
            (row_count > 0).then(|| Pending {
                event: AuditEvent {
                    shard,
                    seq: bulk.seq(),
                    at_ms: bulk.at(),
                    action: ACTION_BULK_RECEIVE.to_string(),
                    sku_id: None,
                    warehouse_id: None,
                    qty,
                    before: None,
                    after: None,
                    reason: bulk.reference().to_string(),
                    operator: bulk.operator().to_string(),
                    trace_id: format!("{:032x}", bulk.trace_id()),
                    ref_id: None,
                    delta: None,
                    proposed_by: None,
                    to_warehouse_id: None,
                    rows: Vec::new(),
                },
                rows,
                row_count,
            })
        }
    })
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Head {
    index: u64,
    hash: String,
}

/// The writer. Single-threaded: the service feeds it from one audit thread.
pub struct AuditLog {
    dir: PathBuf,
    file: File,
    index: u64,
    hash: String,
    /// Highest journal sequence audited per shard, to resume after a crash.
    audited: BTreeMap<u16, u64>,
    /// Buffers kept between appends: the hashed body of one line, the lines.
    body: Vec<u8>,
    out: Vec<u8>,
}

impl AuditLog {
    /// Opens (or creates) the log in `dir`. A final line cut short by a
    /// crash is dropped (its change is still in the journal and is audited
    /// again); anything else that does not check out is an error.
    pub fn open(dir: &Path) -> std::io::Result<AuditLog> {
        fs::create_dir_all(dir)?;
        let path = dir.join(LOG_FILE);
        let mut index = 0;
        let mut hash = GENESIS.to_string();
        let mut audited = BTreeMap::new();
        if path.exists() {
            let bytes = fs::read(&path)?;
            let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            if complete < bytes.len() {
                OpenOptions::new().write(true).open(&path)?.set_len(complete as u64)?;
            }
            let report = verify(dir)?;
            if let Some(problem) = report.problems.first() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("audit log {}: {problem}", path.display()),
                ));
            }
            for line in bytes[..complete].split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                let record: AuditRecord = serde_json::from_slice(line).map_err(std::io::Error::other)?;
                let max = audited.entry(record.event.shard).or_insert(0);
                *max = (*max).max(record.event.seq);
                index = record.index;
                hash = record.hash;
            }
        }
        let new = !path.exists();
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let log = AuditLog { dir: dir.to_path_buf(), file, index, hash, audited, body: Vec::new(), out: Vec::new() };
        // A crash may have left the head behind the log. A new log gets a
        // head at entry 0 before its first line, so a crash during the first
        // append leaves a head behind, not a missing one (which is refused:
        // somebody removed it).
        if index > 0 || new {
            log.write_head()?;
        }
        Ok(log)
    }

    fn write_head(&self) -> std::io::Result<()> {
        let head = serde_json::to_vec(&Head { index: self.index, hash: self.hash.clone() }).expect("json");
        let tmp = self.dir.join(format!("{HEAD_FILE}.tmp"));
        fs::write(&tmp, head)?;
        File::open(&tmp)?.sync_all()?;
        fs::rename(tmp, self.dir.join(HEAD_FILE))
    }

    /// Highest journal sequence of `shard` already in the log.
    pub fn audited_upto(&self, shard: u16) -> u64 {
        self.audited.get(&shard).copied().unwrap_or(0)
    }

    pub fn len(&self) -> u64 {
        self.index
    }

    pub fn is_empty(&self) -> bool {
        self.index == 0
    }

    /// Appends events, syncs the file, then moves the head.
    pub fn append<E: Into<Pending>>(&mut self, events: Vec<E>) -> std::io::Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let AuditLog { body, out, .. } = self;
        out.clear();
        for pending in events {
            let Pending { event, rows, row_count } = pending.into();
            let event = &event;
            let index = self.index + 1;
            // The hashed body is `{"index":N,<event fields>}`; the line is
            // the same with `prevHash` after the index and `hash` at the
            // end: exactly how `AuditRecord` serializes, built without
            // serializing the event twice. `rows` is the last field, so a
            // bulk receipt's rows, written already, go in before the `}`.
            body.clear();
            serde_json::to_writer(&mut *body, &Hashed { index, event }).expect("json");
            if row_count > 0 {
                body.pop();
                body.extend_from_slice(b",\"rows\":[");
                body.extend_from_slice(&rows);
                body.extend_from_slice(b"]}");
            }
            let hash = hash_of(&self.hash, body);
            let fields = body.iter().position(|b| *b == b',').expect("an event has fields") + 1;
            out.extend_from_slice(&body[..fields - 1]);
            out.extend_from_slice(b",\"prevHash\":\"");
            out.extend_from_slice(self.hash.as_bytes());
            out.extend_from_slice(b"\",");
            out.extend_from_slice(&body[fields..body.len() - 1]);
            out.extend_from_slice(b",\"hash\":\"");
            out.extend_from_slice(&hash);
            out.extend_from_slice(b"\"}\n");
            self.hash.clear();
            self.hash.push_str(std::str::from_utf8(&hash).expect("hex"));
            let max = self.audited.entry(event.shard).or_insert(0);
            *max = (*max).max(event.seq);
            self.index = index;
        }
        self.file.write_all(out)?;
        self.file.sync_data()?;
        self.write_head()
    }
}

/// What `verify` found.
#[derive(Debug, Default)]
pub struct VerifyReport {
    pub entries: u64,
    /// One line per problem, naming the line and entry.
    pub problems: Vec<String>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks the whole chain in `dir` (a live log or a copy).
pub fn verify(dir: &Path) -> std::io::Result<VerifyReport> {
    let mut report = VerifyReport::default();
    let file = File::open(dir.join(LOG_FILE))?;
    let mut expected_index = 1;
    let mut prev_hash = GENESIS.to_string();
    let mut last: Option<(u64, String)> = None;
    let head = match fs::read(dir.join(HEAD_FILE)) {
        Ok(bytes) => Some(serde_json::from_slice::<Head>(&bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let head_index = match &head {
        Some(Ok(h)) => h.index,
        _ => 0,
    };
    let mut hash_at_head: Option<String> = None;
    for (n, line) in BufReader::new(file).lines().enumerate() {
        let line_no = n + 1;
        let line = line?;
        if line.is_empty() {
            continue;
        }
        let record: AuditRecord = match serde_json::from_str(&line) {
            Ok(r) => r,
            Err(e) => {
                report.problems.push(format!("line {line_no}: unreadable entry ({e})"));
                continue;
            }
        };
        report.entries += 1;
        let i = record.index;
        if chain_hash(&record.prev_hash, i, &record.event) != record.hash {
            report
                .problems
                .push(format!("line {line_no}: entry {i} was altered (its hash does not match its contents)"));
        }
        if i > expected_index {
            report.problems.push(format!(
                "line {line_no}: entry {i} follows entry {}: entries {expected_index}..{} were removed",
                expected_index - 1,
                i - 1
            ));
        } else if i < expected_index {
            report.problems.push(format!(
                "line {line_no}: entry {i} appears after entry {}: entries were reordered or duplicated",
                expected_index - 1
            ));
        } else if record.prev_hash != prev_hash {
            report.problems.push(format!(
                "line {line_no}: entry {i} does not chain to the entry before it (altered, removed or reordered)"
            ));
        }
        expected_index = i + 1;
        if i == head_index {
            hash_at_head = Some(record.hash.clone());
        }
        prev_hash = record.hash.clone();
        last = Some((i, record.hash));
    }
    // The head is moved after the lines are synced, so after a crash it may
    // lag the log (the service moves it forward on its next start). It may
    // never be ahead, and the entry it names must be the one it recorded.
    match head {
        Some(Ok(head)) => {
            let (index, _) = last.clone().unwrap_or((0, GENESIS.to_string()));
            if head.index > index {
                report.problems.push(format!(
                    "the log ends at entry {index} but the head records entry {}: entries were removed from the end",
                    head.index
                ));
            } else if head.index > 0 && hash_at_head.as_deref() != Some(head.hash.as_str()) {
                report.problems.push(format!("entry {}, recorded as the head, was altered or replaced", head.index));
            }
        }
        Some(Err(e)) => report.problems.push(format!("{HEAD_FILE} is unreadable ({e})")),
        None if last.is_some() => report.problems.push(format!("{HEAD_FILE} is missing")),
        None => {}
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bulk receipt of `(sku, warehouse, qty)` items.
    fn receive_batch(items: &[(&str, &str, u64)], idem_key: &str, reference: &str) -> Command {
        Command::ReceiveBatch(inventory_core::ReceiveBatch {
            items: items
                .iter()
                .map(|&(s, w, q)| inventory_core::ReceiveItem { sku_id: s.into(), warehouse_id: w.into(), qty: q })
                .collect(),
            idem_key: idem_key.into(),
            reference: reference.into(),
        })
    }

    fn event(seq: u64, qty: u64) -> AuditEvent {
        AuditEvent {
            shard: 0,
            seq,
            at_ms: 1_000 * seq,
            action: "RECEIVE".into(),
            sku_id: Some(format!("sku-{seq}")),
            warehouse_id: Some("default".into()),
            qty,
            before: Some(Levels::default().into()),
            after: Some(Levels { available: qty, reserved: 0, sold: 0 }.into()),
            reason: "po".into(),
            operator: "ops".into(),
            trace_id: "0".repeat(32),
            ref_id: None,
            delta: None,
            proposed_by: None,
            to_warehouse_id: None,
            rows: Vec::new(),
        }
    }

    fn log_with(n: u64) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let mut log = AuditLog::open(dir.path()).unwrap();
        log.append((1..=n).map(|i| event(i, i * 10)).collect()).unwrap();
        dir
    }

    fn lines(dir: &Path) -> Vec<String> {
        fs::read_to_string(dir.join(LOG_FILE)).unwrap().lines().map(str::to_string).collect()
    }

    fn write_lines(dir: &Path, lines: &[String]) {
        fs::write(dir.join(LOG_FILE), lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    }

    #[test]
    fn each_line_is_the_serialized_record_with_its_chained_hash() {
        let dir = log_with(3);
        let mut prev_hash = GENESIS.to_string();
        for (i, line) in lines(dir.path()).iter().enumerate() {
            let index = i as u64 + 1;
            let event = event(index, index * 10);
            let hash = chain_hash(&prev_hash, index, &event);
            let record = AuditRecord { index, prev_hash, event, hash: hash.clone() };
            assert_eq!(*line, serde_json::to_string(&record).unwrap());
            prev_hash = hash;
        }
    }

    /// The journal entry of `command` applied to `shard` at `at`.
    fn entry_of(shard: &mut inventory_core::Shard, seq: u64, at: Millis, command: Command) -> Entry {
        let mut txns = Vec::new();
        assert!(shard.apply(at, &command, &mut txns).changed);
        Entry { seq, at, trace_id: 7, operator: "ops".into(), command, txns, cold: Default::default() }
    }

    #[test]
    fn a_bulk_receipt_is_one_record_listing_its_rows() {
        use inventory_core::{Receive, Shard, ShardConfig};
        let mut shard = Shard::new(ShardConfig::new(0));
        let single = Command::Receive(Receive {
            sku_id: "a".into(),
            warehouse_id: "w".into(),
            qty: 5,
            idem_key: "k1".into(),
            reference: "po-1".into(),
        });
        let items = [("a", "w", 3), ("b", "w", 4), ("c", "e", 6)];
        let bulk = receive_batch(&items, "k2", "po-2");
        let one = event_of(0, entry_of(&mut shard, 1, 10, single)).unwrap();
        assert_eq!((one.action.as_str(), one.sku_id.as_deref(), one.qty), ("RECEIVE", Some("a"), 5));
        assert!(one.rows.is_empty());
        let many = event_of(0, entry_of(&mut shard, 2, 20, bulk)).unwrap();
        assert_eq!((many.action.as_str(), many.sku_id.as_deref(), many.qty), (ACTION_BULK_RECEIVE, None, 13));
        assert_eq!((many.seq, many.reason.as_str(), many.trace_id.as_str()), (2, "po-2", &*format!("{:032x}", 7)));
        let rows: Vec<_> = many.rows.iter().map(|r| (r.sku_id(), r.warehouse_id(), r.qty())).collect();
        assert_eq!(rows, items);
        assert_eq!((many.rows[0].before().available, many.rows[0].after().available), (5, 8), "images of row a");

        // Both kinds chain and verify; altering one row of the bulk record is caught.
        let dir = tempfile::tempdir().unwrap();
        AuditLog::open(dir.path()).unwrap().append(vec![one, many]).unwrap();
        assert!(verify(dir.path()).unwrap().ok());
        let mut altered = lines(dir.path());
        assert!(altered[1].contains(r#""rows":[["a","w",3,[5,0,0],[8,0,0]],["b","w",4,"#), "{}", altered[1]);
        altered[1] = altered[1].replace(r#"["b","w",4,"#, r#"["b","w",40,"#);
        write_lines(dir.path(), &altered);
        let r = verify(dir.path()).unwrap();
        assert!(r.problems[0].starts_with("line 2: entry 2 was altered"), "{:?}", r.problems);
    }

    #[test]
    fn a_bulk_receipt_read_from_its_record_makes_the_same_lines_as_its_decoded_entry() {
        use inventory_core::{Receive, Shard, ShardConfig};
        let mut shard = Shard::new(ShardConfig::new(0));
        let receive = |sku: &str, key: &str| {
            Command::Receive(Receive {
                sku_id: sku.into(),
                warehouse_id: "w".into(),
                qty: 5,
                idem_key: key.into(),
                reference: String::new(),
            })
        };
        let items = [("a", "w", 3), ("q\"u\\o\u{1}", "w", 4), ("é€", "tab\there", 6), ("b", "w", 1)];
        let entries = [
            entry_of(&mut shard, 1, 10, receive("a", "k1")),
            entry_of(&mut shard, 2, 20, receive_batch(&items, "k2", "")),
            entry_of(&mut shard, 3, 30, receive("b", "k3")),
            entry_of(&mut shard, 4, 40, receive_batch(&items, "k4", "po-4")),
        ];
        let (decoded, in_place) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let events: Vec<AuditEvent> = entries.iter().map(|e| event_of(0, e.clone()).unwrap()).collect();
        AuditLog::open(decoded.path()).unwrap().append(events).unwrap();
        let mut pending = Vec::new();
        for e in &entries {
            let record = inventory_journal::encode(e);
            let bulk = matches!(e.command, Command::ReceiveBatch(_));
            assert_eq!(record[0] == inventory_journal::FORMAT_BULK_COLUMNS, bulk);
            let p = pending_of_record(0, e.seq, &record).unwrap().unwrap();
            assert_eq!(p.rows(), if bulk { items.len() } else { 1 });
            pending.push(p);
        }
        AuditLog::open(in_place.path()).unwrap().append(pending).unwrap();
        assert_eq!(lines(in_place.path()), lines(decoded.path()));
        assert!(verify(in_place.path()).unwrap().ok());
        assert!(lines(in_place.path())[1].contains(r#"["a","w",3,[5,0,0],[8,0,0]],["q\"u\\o\u0001","w",4,"#));
        // A record that does not check out is an error, not a skipped line.
        let mut bad = inventory_journal::encode(&entries[1]);
        bad[9] ^= 1;
        assert!(pending_of_record(0, 2, &bad).is_err());
    }

    #[test]
    fn an_intact_log_verifies_and_reopens_where_it_left_off() {
        let dir = log_with(4);
        let report = verify(dir.path()).unwrap();
        assert!(report.ok(), "{:?}", report.problems);
        assert_eq!(report.entries, 4);
        let mut log = AuditLog::open(dir.path()).unwrap();
        assert_eq!((log.len(), log.audited_upto(0)), (4, 4));
        log.append(vec![event(5, 1)]).unwrap();
        assert!(verify(dir.path()).unwrap().ok());
    }

    #[test]
    fn tampering_is_detected_and_named() {
        let dir = log_with(4);
        let original = lines(dir.path());

        let mut altered = original.clone();
        altered[1] = altered[1].replace("\"qty\":20", "\"qty\":25");
        write_lines(dir.path(), &altered);
        let r = verify(dir.path()).unwrap();
        assert!(r.problems[0].starts_with("line 2: entry 2 was altered"), "{:?}", r.problems);

        let mut removed = original.clone();
        removed.remove(1);
        write_lines(dir.path(), &removed);
        let r = verify(dir.path()).unwrap();
        assert!(r.problems.iter().any(|p| p.contains("entries 2..2 were removed")), "{:?}", r.problems);

        let mut reordered = original.clone();
        reordered.swap(1, 2);
        write_lines(dir.path(), &reordered);
        let r = verify(dir.path()).unwrap();
        assert!(r.problems.iter().any(|p| p.contains("reordered")), "{:?}", r.problems);

        write_lines(dir.path(), &original[..3]);
        let r = verify(dir.path()).unwrap();
        assert!(r.problems.iter().any(|p| p.contains("removed from the end")), "{:?}", r.problems);

        write_lines(dir.path(), &original);
        assert!(verify(dir.path()).unwrap().ok());
    }

    #[test]
    fn a_head_left_behind_by_a_crash_is_moved_forward() {
        let dir = log_with(2);
        let head = fs::read(dir.path().join(HEAD_FILE)).unwrap();
        AuditLog::open(dir.path()).unwrap().append(vec![event(3, 1)]).unwrap();
        fs::write(dir.path().join(HEAD_FILE), head).unwrap(); // the crash: lines synced, head not moved
        assert!(verify(dir.path()).unwrap().ok());
        let log = AuditLog::open(dir.path()).unwrap();
        assert_eq!(log.len(), 3);
        let head: Head = serde_json::from_slice(&fs::read(dir.path().join(HEAD_FILE)).unwrap()).unwrap();
        assert_eq!(head.index, 3);
    }

    #[test]
    fn a_crash_during_the_first_append_leaves_a_log_that_opens() {
        let dir = tempfile::tempdir().unwrap();
        drop(AuditLog::open(dir.path()).unwrap());
        let head = fs::read(dir.path().join(HEAD_FILE)).unwrap();
        AuditLog::open(dir.path()).unwrap().append(vec![event(1, 1)]).unwrap();
        fs::write(dir.path().join(HEAD_FILE), head).unwrap(); // the crash: lines synced, head not moved
        assert_eq!(AuditLog::open(dir.path()).unwrap().len(), 1);
        // A head removed by hand is still refused.
        fs::remove_file(dir.path().join(HEAD_FILE)).unwrap();
        let refused = AuditLog::open(dir.path()).err().expect("a log without its head is refused");
        assert!(refused.to_string().contains("missing"), "{refused}");
    }

    #[test]
    fn a_torn_last_line_is_dropped_on_open() {
        let dir = log_with(2);
        let mut bytes = fs::read(dir.path().join(LOG_FILE)).unwrap();
        bytes.extend_from_slice(b"{\"index\":3,\"prev");
        fs::write(dir.path().join(LOG_FILE), bytes).unwrap();
        let log = AuditLog::open(dir.path()).unwrap();
        assert_eq!(log.len(), 2);
        assert!(verify(dir.path()).unwrap().ok());
    }
}
