//! The runtime that owns the reservation shards.
//!
//! Owns: the pinned shard loops, each holding its [`Shard`](inventory_core::Shard)
//! outright and group-committing to its journal ([`shard_loop`]); the
//! bounded queues in front of them (a write queue and a read lane per
//! shard) and the cross-shard idempotency index ([`router`]); the query
//! rate limit ([`limiter`]); the snapshotter ([`snapshotter`]); the audit tailer, a
//! follower of every journal; the service's metrics ([`metrics`]) and clock
//! ([`clock`]). [`Runtime`] starts and stops all of it.
//!
//! Never: speaks HTTP, touches stock state outside a shard loop,
//! acknowledges a write before its journal flush, or blocks a caller on a
//! full queue (a full queue is an immediate [`SendError::Overloaded`]).

pub mod clock;
pub mod limiter;
pub mod metrics;
pub mod router;
mod service;
pub mod shard_loop;
pub mod snapshotter;

pub use clock::{Clock, ManualClock, SteadyClock, SystemClock};
pub use limiter::QueryLimiter;
pub use metrics::Metrics;
pub use router::{Claim, IdemIndex, Router, SendError};
pub use service::{HotWindows, Replay, Runtime, RuntimeConfig, RuntimeError, Threads};
pub use shard_loop::{Meta, Request, WriteReply};

/// Returns freed memory held by mimalloc (`inventoryd`'s allocator) to the
/// OS: the calling thread's heap and the pages shared by all threads. Costs
/// milliseconds; called once after start-up work that frees a lot at once.
/// Under another global allocator (the tests) there is nothing to return.
pub fn release_free_memory() {
    // SAFETY: mi_collect only walks the allocator's own structures.
    unsafe { libmimalloc_sys::mi_collect(true) };
}

/// Turns transparent huge pages off for this process from now on; the
/// service calls it once recovery is done. mimalloc asks for huge pages on
/// its memory but returns freed memory to the OS in small pieces, so reusing
/// a returned piece faulted in, and zeroed, a whole fresh 2 MiB page: page
/// zeroing was a tenth of the CPU of a bulk import, and the faults showed in
/// reserve tail latency. Recovery, which only grows, builds its state faster
/// on huge pages, and what it built keeps them.
pub fn disable_transparent_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE sets a flag on this process and reads no
    // memory.
    let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if rc != 0 {
        eprintln!("could not turn off transparent huge pages: {}", std::io::Error::last_os_error());
    }
}

/// Lowers the calling thread's CPU priority to the least there is (nice
/// 19), for background work that should take only the CPU the shard loops
/// leave: the audit tailer. It reads the journal, so falling behind under
/// full load loses nothing; it catches up as soon as the shards idle.
pub fn lower_thread_priority() {
    // SAFETY: gettid and setpriority take integers and touch no memory;
    // on Linux, PRIO_PROCESS with a thread id sets that thread's nice.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 19) };
    if rc != 0 {
        eprintln!("could not lower a background thread's priority: {}", std::io::Error::last_os_error());
    }
}

#[cfg(test)]
mod tests {
    /// The calling thread's nice value.
    fn nice() -> i32 {
        // SAFETY: as in `lower_thread_priority`.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
    }

    #[test]
    fn a_lowered_thread_runs_at_the_least_priority_and_the_others_keep_theirs() {
        let before = nice();
        let lowered = std::thread::spawn(|| {
            super::lower_thread_priority();
            nice()
        })
        .join()
        .unwrap();
        assert_eq!(lowered, 19);
        assert_eq!(nice(), before, "only the calling thread is lowered");
    }
}
