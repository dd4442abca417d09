//! Snapshots without stalling the shard loops.
//!
//! A dedicated thread builds each snapshot from durable data only: the
//! shard's newest snapshot plus its journal up to the last acknowledged
//! entry, replayed by the same code start-up uses. The live loop is never
//! paused. After writing, the journal is truncated below the oldest kept
//! snapshot, but never past what a follower of the journal (the PostgreSQL
//! writer, the audit tailer) has not taken yet.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use inventory_core::ShardConfig;
use inventory_journal::follow::Followers;
use inventory_journal::{rebuild, snapshot, Journal, JournalError, Until};
use serde::Serialize;
use tokio::sync::oneshot;

#[derive(Clone, Debug)]
pub struct SnapshotConfig {
    pub dir: PathBuf,
    /// Take a shard's snapshot once this many entries accumulated since its last.
    pub every_entries: u64,
    /// How often to look.
    pub check_every: Duration,
    /// Snapshots kept per shard (older ones are deleted).
    pub keep: usize,
}

/// How long a snapshot waits for the journal's followers to reach it
/// before truncating less. In-process followers trail the journal by
/// milliseconds.
const FOLLOWER_WAIT: Duration = Duration::from_secs(1);

/// A request to snapshot every shard now.
pub type SnapshotRequest = oneshot::Sender<Vec<SnapshotReport>>;

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotReport {
    pub shard: u16,
    pub seq: u64,
    pub bytes: u64,
    pub millis: u64,
    /// Journal entries removed (covered by a snapshot and safe to drop).
    pub truncated: u64,
    /// Entries kept only because a follower (PostgreSQL, the audit log)
    /// has not taken them yet.
    pub held_back: u64,
    /// The follower that held them back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_back_by: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

pub struct Snapshotter {
    pub config: SnapshotConfig,
    pub shard_configs: Vec<ShardConfig>,
    pub readers: Vec<Arc<dyn Journal + Sync>>,
    /// Per shard: the journal's head and the cursors that bound truncation.
    pub followers: Vec<Arc<Followers>>,
}

impl Snapshotter {
    /// Runs until `requests` is closed.
    pub fn run(self, requests: Receiver<SnapshotRequest>) {
        loop {
            let forced = match requests.recv_timeout(self.config.check_every) {
                Ok(reply) => Some(reply),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let mut reports = Vec::new();
            for shard in 0..self.readers.len() {
                let durable = self.followers[shard].durable();
                let last =
                    snapshot::list(&self.config.dir, shard as u16).ok().and_then(|l| l.first().copied()).unwrap_or(0);
                let due = durable > last && (forced.is_some() || durable - last >= self.config.every_entries);
                if due {
                    let report = self.take(shard, durable);
                    if let Some(e) = &report.error {
                        tracing::error!(shard, error = %e, "snapshot failed");
                    } else {
                        tracing::info!(
                            shard,
                            seq = report.seq,
                            bytes = report.bytes,
                            ms = report.millis,
                            truncated = report.truncated,
                            "snapshot written"
                        );
                    }
                    reports.push(report);
                }
            }
            if let Some(reply) = forced {
                let _ = reply.send(reports);
            }
        }
    }

    fn take(&self, shard: usize, seq: u64) -> SnapshotReport {
        let started = Instant::now();
        let mut report = SnapshotReport {
            shard: shard as u16,
            seq,
            bytes: 0,
            millis: 0,
            truncated: 0,
            held_back: 0,
            held_back_by: None,
            error: None,
        };
        let result = (|| -> Result<(), String> {
            let reader = &self.readers[shard];
            let (replica, _) =
                rebuild(self.shard_configs[shard].clone(), Some(&self.config.dir), &**reader, Until::Seq(seq), |_| {})
                    .map_err(|e: JournalError| e.to_string())?;
            let image = replica.image();
            drop(replica);
            let (_, bytes) = snapshot::write(&self.config.dir, shard as u16, seq, &image).map_err(|e| e.to_string())?;
            drop(image);
            // The replica was a second copy of the shard: hand its memory
            // back now, not whenever the allocator next looks.
            crate::release_free_memory();
            report.bytes = bytes;
            snapshot::prune(&self.config.dir, shard as u16, self.config.keep).map_err(|e| e.to_string())?;
            // How far the journal may go: below the oldest kept snapshot...
            let kept = snapshot::list(&self.config.dir, shard as u16).map_err(|e| e.to_string())?;
            let kept_from = kept.last().copied().unwrap_or(0).min(seq);
            // ...and nothing a follower has not taken (give them a moment
            // to reach `seq`).
            let followers = &self.followers[shard];
            let deadline = Instant::now() + FOLLOWER_WAIT;
            while followers.truncation_bound().0 < seq && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            let (taken, slowest) = followers.truncation_bound();
            let bound = kept_from.min(taken);
            report.held_back = seq - bound;
            if taken < kept_from {
                report.held_back_by = slowest;
            }
            report.truncated = reader.truncate_before(bound + 1).map_err(|e| e.to_string())?;
            Ok(())
        })();
        report.error = result.err();
        report.millis = started.elapsed().as_millis() as u64;
        report
    }
}
