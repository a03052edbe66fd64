//! A node's resident memory against `limits.memory_soft_limit_mb`.
//!
//! The allocator holds memory the node freed for a while before it gives
//! it back to the system (mimalloc: its purge delay, 100 ms, README "Node
//! configuration"), so that the next entry's buffers find pages already
//! there: at batches of thousands of transfers, giving every freed page
//! back at once costs a node about a fifth of its CPU. What it holds that
//! way grows with how fast the node frees: a follower catching up on a
//! million transfers held about 50 MB more than with nothing held
//! (BENCHMARKS.md, "The memory soft limit").
//!
//! A thread reads the process's resident memory every [`CHECK_EVERY`]
//! (such a follower frees tens of MB in 20 ms). Above the soft limit, it
//! has the allocator purge what it holds for its delay ([`hold_to`]'s
//! `purge`), and reads the memory again. A purge that leaves the node
//! above the limit now and then is a burst of memory in use (a follower
//! decoding appends), and the checks go on. Purges that leave it above for
//! [`ABOVE_AFTER_PURGES`] checks in a row mean that what is above the
//! limit is memory in use, which no purge gives back: the checks go to
//! one every [`CHECK_EVERY_MAX`] until a purge brings the node under the
//! limit, or it falls a sixteenth under it by itself. So the limit is
//! soft: nothing is refused, and a node whose memory in use is above it
//! pays for a purge a second, not two hundred.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// How often the resident memory is read while purges keep the node
/// under its limit: a twentieth of the allocator's 100 ms.
pub const CHECK_EVERY: Duration = Duration::from_millis(5);

/// How far apart the checks go while purges leave the node above its
/// limit (its memory in use is).
pub const CHECK_EVERY_MAX: Duration = Duration::from_secs(1);

/// Checks in a row whose purge left the node above its limit after which
/// the checks go to one every [`CHECK_EVERY_MAX`]: a second of them.
pub const ABOVE_AFTER_PURGES: u32 = 200;

/// How often, at most, the log says the checks back off.
const SAY_EVERY: Duration = Duration::from_secs(60);

/// Whether purges have left the node above its soft limit for
/// [`ABOVE_AFTER_PURGES`] checks in a row, and the checks back off.
static IN_USE_ABOVE: AtomicBool = AtomicBool::new(false);
/// Whether the resident memory was above the soft limit at the last check.
static ABOVE: AtomicBool = AtomicBool::new(false);
/// Purges had because the node was above its limit.
static PURGES: AtomicU64 = AtomicU64::new(0);
/// The soft limit in bytes (0: none).
static LIMIT_BYTES: AtomicU64 = AtomicU64::new(0);

/// Whether this node's resident memory was above
/// `limits.memory_soft_limit_mb` at the last check (false when off).
pub fn above_soft_limit() -> bool {
    ABOVE.load(Ordering::Relaxed)
}

/// Whether purges leave this node above its soft limit, so that its
/// memory in use is above it (the checks back off to one a second).
pub fn in_use_above_soft_limit() -> bool {
    IN_USE_ABOVE.load(Ordering::Relaxed)
}

/// Times this node had its allocator purge the freed memory it held
/// because its resident memory was above `limits.memory_soft_limit_mb`.
pub fn purges() -> u64 {
    PURGES.load(Ordering::Relaxed)
}

/// The soft limit in bytes this node holds to (0: none).
pub fn soft_limit_bytes() -> u64 {
    LIMIT_BYTES.load(Ordering::Relaxed)
}

/// Starts the thread that holds the node to `soft_limit_mb` (0: none is
/// started), once per process; `purge` has the allocator give the system
/// the freed memory it holds for its purge delay.
pub fn hold_to(soft_limit_mb: u64, purge: fn()) -> std::io::Result<()> {
    if soft_limit_mb == 0 {
        return Ok(());
    }
    let mut guard = Guard::new(soft_limit_mb);
    let unset = LIMIT_BYTES.compare_exchange(0, guard.limit, Ordering::Relaxed, Ordering::Relaxed);
    if unset.is_err() {
        return Err(std::io::Error::other(
            "the memory soft limit is already held in this process",
        ));
    }
    std::thread::Builder::new()
        .name("memory".into())
        .spawn(move || {
            if resident_bytes().is_none() {
                LIMIT_BYTES.store(0, Ordering::Relaxed);
                tracing::warn!(
                    "limits.memory_soft_limit_mb is not held: this system does not say the \
                     process's resident memory (/proc/self/statm)"
                );
                return;
            }
            loop {
                std::thread::sleep(guard.wait());
                // Reading the memory allocates (the statm text), which
                // mimalloc's collection needs of the thread it runs on. A
                // reading that fails (no file descriptor left) is skipped.
                let Some(resident) = resident_bytes() else {
                    continue;
                };
                let above = guard.check(resident, || {
                    purge();
                    PURGES.fetch_add(1, Ordering::Relaxed);
                    resident_bytes()
                });
                ABOVE.store(above, Ordering::Relaxed);
                IN_USE_ABOVE.store(guard.backed_off(), Ordering::Relaxed);
            }
        })
        .map(|_| ())
}

/// Backed off, the checks come close again once a purge brings the node
/// under its limit, or once it is this fraction of the limit under it by
/// itself (15 MiB at 240): memory in use that hovers at the limit does
/// not bring back a purge every check.
const UNDER_BY: u64 = 16;

/// The checks' state.
struct Guard {
    soft_limit_mb: u64,
    limit: u64,
    /// Checks in a row whose purge left the node above the limit.
    above_after_purge: u32,
    /// Whether the log said so of this row of checks.
    said_of_row: bool,
    /// When the log last said so (at most a line a minute).
    said: Option<std::time::Instant>,
}

impl Guard {
    fn new(soft_limit_mb: u64) -> Self {
        Self {
            soft_limit_mb,
            limit: soft_limit_mb.saturating_mul(1 << 20),
            above_after_purge: 0,
            said_of_row: false,
            said: None,
        }
    }

    /// Whether the checks back off: what is above the limit is memory in
    /// use.
    fn backed_off(&self) -> bool {
        self.above_after_purge >= ABOVE_AFTER_PURGES
    }

    /// Until the next check.
    fn wait(&self) -> Duration {
        if self.backed_off() {
            CHECK_EVERY_MAX
        } else {
            CHECK_EVERY
        }
    }

    /// One check, of `resident` bytes: whether they are above the limit.
    /// `purge` purges and reads the resident memory after it.
    fn check(&mut self, resident: u64, purge: impl FnOnce() -> Option<u64>) -> bool {
        if resident <= self.limit {
            if !self.backed_off() || resident <= self.limit - self.limit / UNDER_BY {
                self.close_checks();
            }
            return false;
        }
        let after = purge().unwrap_or(resident);
        if after <= self.limit {
            self.close_checks();
            return true;
        }
        self.above_after_purge = self.above_after_purge.saturating_add(1);
        let quiet = self.said.is_some_and(|at| at.elapsed() < SAY_EVERY);
        if self.backed_off() && !self.said_of_row && !quiet {
            (self.said, self.said_of_row) = (Some(std::time::Instant::now()), true);
            tracing::info!(
                resident_mb = after >> 20,
                soft_limit_mb = self.soft_limit_mb,
                "resident memory stays above limits.memory_soft_limit_mb after the allocator \
                 purged what it held: it is memory in use; checking once a second until it \
                 is under (raise the limit if the machine has the memory)"
            );
        }
        true
    }

    fn close_checks(&mut self) {
        (self.above_after_purge, self.said_of_row) = (0, false);
    }
}

/// This process's resident memory (the second field of
/// `/proc/self/statm`, in pages: what `VmRSS` says, for less of the
/// kernel's time than `/proc/self/status`), if the system says.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    pages.checked_mul(u64::try_from(rustix::param::page_size()).ok()?)
}

/// The value, in kB, of field `key` (e.g. `VmRSS:`) of a
/// `/proc/<pid>/status` text.
pub fn status_kb(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1 << 20;

    fn guard() -> Guard {
        Guard::new(100)
    }

    #[test]
    fn under_the_limit_nothing_is_purged() {
        let mut g = guard();
        assert!(!g.check(100 * MB, || panic!("purged under the limit")));
        assert_eq!(g.wait(), CHECK_EVERY);
    }

    #[test]
    fn a_burst_above_the_limit_keeps_the_checks_close() {
        let mut g = guard();
        assert!(g.check(130 * MB, || Some(90 * MB)));
        assert_eq!(g.wait(), CHECK_EVERY);
        // Purges that leave the node above, short of a second of them.
        for _ in 1..ABOVE_AFTER_PURGES {
            assert!(g.check(130 * MB, || Some(120 * MB)));
            assert_eq!(g.wait(), CHECK_EVERY);
        }
        // One that brings it under starts the count again.
        assert!(g.check(130 * MB, || Some(99 * MB)));
        assert!(g.check(130 * MB, || Some(120 * MB)));
        assert_eq!(g.wait(), CHECK_EVERY);
    }

    #[test]
    fn memory_in_use_above_the_limit_backs_the_checks_off_until_under() {
        let mut g = guard();
        for _ in 0..ABOVE_AFTER_PURGES {
            assert!(g.check(130 * MB, || Some(120 * MB)));
        }
        assert_eq!(g.wait(), CHECK_EVERY_MAX);
        assert!(g.check(130 * MB, || Some(120 * MB)));
        assert_eq!(g.wait(), CHECK_EVERY_MAX);
        // Memory in use at the limit keeps them apart; clearly under by
        // itself, or under by a purge, it brings them close again.
        assert!(!g.check(99 * MB, || panic!("purged under the limit")));
        assert_eq!(g.wait(), CHECK_EVERY_MAX);
        assert!(!g.check(100 * MB - 100 * MB / UNDER_BY, || panic!("purged under")));
        assert_eq!(g.wait(), CHECK_EVERY);
        for _ in 0..ABOVE_AFTER_PURGES {
            assert!(g.check(130 * MB, || Some(120 * MB)));
        }
        assert!(g.check(130 * MB, || Some(99 * MB)));
        assert_eq!(g.wait(), CHECK_EVERY);
    }

    #[test]
    fn the_status_field_is_read_in_kb() {
        let status = "Name:\talliance\nVmHWM:\t  301000 kB\nVmRSS:\t  250880 kB\n";
        assert_eq!(status_kb(status, "VmRSS:"), Some(250_880));
        assert_eq!(status_kb(status, "VmSwap:"), None);
    }

    #[test]
    fn the_resident_memory_is_what_vm_rss_says() {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let rss = status_kb(&status, "VmRSS:").unwrap() * 1024;
        let statm = resident_bytes().unwrap();
        // The same count read a moment apart: not pages, not the
        // virtual size.
        assert!(
            rss / 2 <= statm && statm <= rss * 2,
            "{statm} against {rss}"
        );
    }
}
