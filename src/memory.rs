//! A node's resident memory against `limits.memory_soft_limit_mb`.
//!
//! The allocator keeps memory the node freed for a while before it gives
//! it back to the system (mimalloc: 100 ms, README "Node configuration"),
//! so that the next entry's buffers find pages already there: at batches
//! of thousands of transfers, giving every freed page back at once costs
//! a node about a fifth of its CPU. What it keeps that way grows with how
//! fast the node frees: a follower catching up on a million transfers held
//! about 50 MB more than with nothing kept (BENCHMARKS.md, "The memory
//! soft limit").
//!
//! A thread reads the process's resident memory every [`CHECK_EVERY`];
//! while it is above the soft limit, it has the allocator give back what
//! it keeps freed at each check. The limit is soft: memory in use is not
//! given back and nothing is refused, so a node whose memory in use is
//! above it runs on with freed memory given back every check, about 10%
//! slower at batches of 8,000.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// How often the resident memory is read, and, above the soft limit,
/// freed memory given back: a fifth of the allocator's 100 ms.
pub const CHECK_EVERY: Duration = Duration::from_millis(20);

/// Whether the resident memory was above the soft limit at the last check.
static ABOVE: AtomicBool = AtomicBool::new(false);
/// Times freed memory was given back because the node was above its limit.
static RETURNS: AtomicU64 = AtomicU64::new(0);

/// Whether this node's resident memory was above
/// `limits.memory_soft_limit_mb` at the last check (false when off).
pub fn above_soft_limit() -> bool {
    ABOVE.load(Ordering::Relaxed)
}

/// Times this node had its allocator give back freed memory because its
/// resident memory was above `limits.memory_soft_limit_mb`.
pub fn returns() -> u64 {
    RETURNS.load(Ordering::Relaxed)
}

/// Starts the thread that holds the node to `soft_limit_mb` (0: none is
/// started); `give_back` has the allocator give the system the memory it
/// keeps freed.
pub fn hold_to(soft_limit_mb: u64, give_back: fn()) -> std::io::Result<()> {
    if soft_limit_mb == 0 {
        return Ok(());
    }
    let limit_bytes = soft_limit_mb.saturating_mul(1 << 20);
    std::thread::Builder::new()
        .name("memory".into())
        .spawn(move || loop {
            std::thread::sleep(CHECK_EVERY);
            let above = resident_bytes().is_some_and(|bytes| bytes > limit_bytes);
            if above {
                give_back();
                RETURNS.fetch_add(1, Ordering::Relaxed);
            }
            if ABOVE.swap(above, Ordering::Relaxed) != above {
                tracing::debug!(
                    above,
                    soft_limit_mb,
                    "resident memory against the soft limit"
                );
            }
        })
        .map(|_| ())
}

/// This process's resident memory (`VmRSS` in `/proc/self/status`), if
/// the system says.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status_kb(&status, "VmRSS:")?.checked_mul(1024)
}

/// The value, in kB, of field `key` (e.g. `VmRSS:`) of a
/// `/proc/<pid>/status` text.
pub fn status_kb(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
