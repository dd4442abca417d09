//! The shard loops: one pinned OS thread per shard, each owning its
//! [`Shard`] outright (no lock around stock state).
//!
//! Each loop:
//! 1. replays its journal, then reports ready;
//! 2. blocks for the first request (or the expiry tick), then drains up to
//!    `batch_max` more without blocking;
//! 3. reads the clock once and applies the batch's writes, plus an `Expire`
//!    command for holds that came due;
//! 4. appends the entries of the commands that changed state to the journal
//!    and flushes them (one group commit per batch);
//! 5. only then replies: outcomes if the flush succeeded; if it failed, rolls
//!    the batch back, answers `JournalUnavailable`, and refuses writes until
//!    the journal is recovered;
//! 6. answers the batch's reads from the committed state.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use inventory_core::{Applied, Command, Entry, Expire, Millis, Query, QueryResult, Shard, ShardConfig, ShardStats};
use inventory_journal::{replay, Journal, JournalError};
use tokio::sync::oneshot;

use crate::clock::Clock;
use crate::router::IdemIndex;

/// How often a loop looks for due holds (F5: released within about a second).
pub const EXPIRY_TICK_MS: u64 = 100;
/// Most holds one `Expire` command releases; the rest wait for the next tick.
pub const EXPIRE_BATCH_MAX: usize = 4_096;
/// Most idempotency records forgotten per tick.
pub const PURGE_BATCH_MAX: usize = 8_192;
/// How often a loop whose journal failed tries to recover it.
pub const JOURNAL_RETRY_MS: u64 = 500;

/// What a write request gets back.
#[derive(Debug)]
pub enum WriteReply {
    Applied(Applied),
    /// The journal could not make the batch durable: not acknowledged.
    JournalUnavailable,
}

pub enum Request {
    Write {
        command: Command,
        reply: oneshot::Sender<WriteReply>,
    },
    Read {
        query: Query,
        reply: oneshot::Sender<QueryResult>,
    },
    Stats {
        reply: oneshot::Sender<LoopStats>,
    },
    /// Finish what is queued before this, then stop.
    Shutdown,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct LoopStats {
    pub shard: ShardStats,
    pub journal_healthy: bool,
    pub next_seq: u64,
    pub expiry_backlog: usize,
}

pub struct LoopConfig {
    pub shard: ShardConfig,
    pub batch_max: usize,
    /// Pin the thread to this core.
    pub core: Option<core_affinity::CoreId>,
}

/// Runs one shard loop on the current thread until shutdown. `ready`
/// receives the replay result; on a replay error the loop returns at once.
pub fn run(
    config: LoopConfig,
    journal: Box<dyn Journal>,
    clock: Arc<dyn Clock>,
    requests: Receiver<Request>,
    idem_index: Arc<IdemIndex>,
    ready: crossbeam_channel::Sender<(u16, Result<u64, JournalError>)>,
) {
    if let Some(core) = config.core {
        core_affinity::set_for_current(core);
    }
    let index = config.shard.index;
    let mut shard = Shard::new(config.shard);
    let started = Instant::now();
    let next_seq = match replay(&mut shard, &*journal) {
        Ok(stats) => {
            tracing::info!(
                shard = index,
                entries = stats.entries,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "journal replayed"
            );
            stats.next_seq
        }
        Err(e) => {
            let _ = ready.send((index, Err(e)));
            return;
        }
    };
    for (key, expires_at) in shard.idempotency_keys() {
        idem_index.restore(key, index, expires_at);
    }
    let mut state = LoopState {
        shard,
        journal,
        clock,
        next_seq,
        healthy: true,
        last_now: 0,
        next_tick: 0,
        next_retry: 0,
        batch_max: config.batch_max.max(1),
        entries: Vec::new(),
        writes: Vec::new(),
        reads: Vec::new(),
    };
    let _ = ready.send((index, Ok(next_seq - 1)));
    drop(ready);
    state.run(requests);
    tracing::info!(shard = index, "shard loop stopped");
}

struct LoopState {
    shard: Shard,
    journal: Box<dyn Journal>,
    clock: Arc<dyn Clock>,
    next_seq: u64,
    healthy: bool,
    last_now: Millis,
    next_tick: Millis,
    next_retry: Millis,
    batch_max: usize,
    // Reused per batch, so steady state allocates no buffers.
    entries: Vec<Entry>,
    writes: Vec<(oneshot::Sender<WriteReply>, Applied)>,
    reads: Vec<Request>,
}

impl LoopState {
    fn run(&mut self, requests: Receiver<Request>) {
        let mut batch: Vec<Request> = Vec::with_capacity(self.batch_max);
        let mut stopping = false;
        while !stopping {
            let wait = Duration::from_millis(self.next_tick.saturating_sub(self.clock.now_ms()).min(EXPIRY_TICK_MS));
            match requests.recv_timeout(wait) {
                Ok(request) => batch.push(request),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => stopping = true,
            }
            while batch.len() < self.batch_max {
                match requests.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            if let Some(i) = batch.iter().position(|r| matches!(r, Request::Shutdown)) {
                // Everything queued before the marker is served. What came
                // after it is dropped: its caller sees the shard has stopped.
                batch.truncate(i);
                stopping = true;
            }
            self.process(&mut batch);
        }
    }

    fn process(&mut self, batch: &mut Vec<Request>) {
        let now = self.clock.now_ms().max(self.last_now);
        self.last_now = now;
        if !self.healthy && now >= self.next_retry {
            self.try_recover(now);
        }
        if self.healthy {
            self.shard.begin_batch();
        }
        let mut txns = Vec::new();
        for request in batch.drain(..) {
            match request {
                Request::Write { command, reply } => {
                    if !self.healthy {
                        let _ = reply.send(WriteReply::JournalUnavailable);
                        continue;
                    }
                    let applied = self.shard.apply(now, &command, &mut txns);
                    if applied.changed {
                        self.push_entry(now, command, &mut txns);
                    }
                    self.writes.push((reply, applied));
                }
                read @ (Request::Read { .. } | Request::Stats { .. }) => self.reads.push(read),
                Request::Shutdown => unreachable!("handled by run"),
            }
        }
        if now >= self.next_tick && self.healthy {
            let due = self.shard.due_expirations(now, EXPIRE_BATCH_MAX);
            if !due.is_empty() {
                let command = Command::Expire(Expire { ids: due });
                if self.shard.apply(now, &command, &mut txns).changed {
                    self.push_entry(now, command, &mut txns);
                }
            }
            self.shard.purge_idempotency(now, PURGE_BATCH_MAX);
        }
        if now >= self.next_tick {
            self.next_tick = now + EXPIRY_TICK_MS;
        }
        if self.healthy {
            self.commit();
        }
        for request in self.reads.drain(..) {
            match request {
                Request::Read { query, reply } => {
                    let _ = reply.send(self.shard.query(&query));
                }
                Request::Stats { reply } => {
                    let _ = reply.send(LoopStats {
                        shard: self.shard.stats(),
                        journal_healthy: self.healthy,
                        next_seq: self.next_seq,
                        expiry_backlog: self.shard.expiry_backlog(now),
                    });
                }
                _ => unreachable!(),
            }
        }
    }

    fn push_entry(&mut self, at: Millis, command: Command, txns: &mut Vec<inventory_core::Txn>) {
        let seq = self.next_seq + self.entries.len() as u64;
        self.entries.push(Entry { seq, at, command, txns: std::mem::take(txns) });
    }

    /// Makes the batch durable, then answers its writes.
    fn commit(&mut self) {
        let durable = self.entries.is_empty()
            || {
                match self.journal.append(&self.entries) {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::error!(shard = self.shard.index(), error = %e, entries = self.entries.len(), "journal append failed; batch rolled back, writes refused until the journal recovers");
                        false
                    }
                }
            };
        if durable {
            self.shard.commit_batch();
            self.next_seq += self.entries.len() as u64;
            for (reply, applied) in self.writes.drain(..) {
                let _ = reply.send(WriteReply::Applied(applied));
            }
        } else {
            self.shard.rollback_batch();
            self.healthy = false;
            self.next_retry = self.last_now + JOURNAL_RETRY_MS;
            for (reply, _) in self.writes.drain(..) {
                let _ = reply.send(WriteReply::JournalUnavailable);
            }
        }
        self.entries.clear();
    }

    /// Brings the journal back to exactly the acknowledged entries.
    fn try_recover(&mut self, now: Millis) {
        match self.journal.recover(self.next_seq) {
            Ok(()) => {
                tracing::warn!(
                    shard = self.shard.index(),
                    next_seq = self.next_seq,
                    "journal recovered; accepting writes again"
                );
                self.healthy = true;
            }
            Err(e) => {
                tracing::error!(shard = self.shard.index(), error = %e, "journal still unavailable");
                self.next_retry = now + JOURNAL_RETRY_MS;
            }
        }
    }
}
