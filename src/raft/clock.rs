//! The leader dates every entry, and the ledger clock is the latest date
//! applied (it never goes back). A leader whose clock runs ahead, by
//! mistake or on purpose, would move that clock forward for good: expire
//! holds and proposals early and make every honest seal look stale. So a
//! follower takes no entry dated more than `limits.clock_offset_max_ms`
//! ahead of its own clock: such an entry commits only once a majority's
//! clocks have reached its date. Entries dated in the past are taken (they
//! may be replicated late).

use std::sync::atomic::{AtomicU64, Ordering};

use openraft::EntryPayload;

use super::TypeConfig;

/// The first of `entries` dated more than `max_ms` after `now_ms`: its log
/// index and how far ahead it is dated.
pub fn dated_ahead(
    entries: &[openraft::Entry<TypeConfig>],
    now_ms: u64,
    max_ms: u64,
) -> Option<(u64, u64)> {
    entries.iter().find_map(|e| match &e.payload {
        EntryPayload::Normal(entry) if entry.timestamp_ms > now_ms.saturating_add(max_ms) => {
            Some((e.log_id.index, entry.timestamp_ms - now_ms))
        }
        _ => None,
    })
}

/// Whether to log a refusal of an append now (for its date, or its
/// membership): at most one line every ten seconds, as a leader retries an
/// append many times a second.
pub fn log_refusal_now(now_ms: u64) -> bool {
    static LAST_MS: AtomicU64 = AtomicU64::new(0);
    let last = LAST_MS.load(Ordering::Relaxed);
    now_ms.saturating_sub(last) >= 10_000
        && LAST_MS
            .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{Actor, Blinding, Command, Entry, Evidence, OrgName, Role};

    fn entry(index: u64, timestamp_ms: u64) -> openraft::Entry<TypeConfig> {
        let entry = Entry {
            actor: Actor {
                org: OrgName::parse("org1").unwrap(),
                role: Role::Node,
            },
            timestamp_ms,
            command: Command::Tick,
            evidence: Evidence::Leader,
            blinding: Blinding([0; 16]),
        };
        openraft::Entry {
            log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(1, 0), index),
            payload: EntryPayload::Normal(std::sync::Arc::new(entry)),
        }
    }

    #[test]
    fn an_entry_dated_ahead_of_the_followers_clock_is_found() {
        let now = 1_700_000_000_000;
        let late = [entry(1, now - 60_000), entry(2, now + 500)];
        assert_eq!(dated_ahead(&late, now, 500), None, "past, and within");
        let ahead = [entry(1, now), entry(2, now + 7_200_000), entry(3, now)];
        assert_eq!(dated_ahead(&ahead, now, 500), Some((2, 7_200_000)));
        let blank = openraft::Entry {
            log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(1, 0), 4),
            payload: EntryPayload::Blank,
        };
        assert_eq!(dated_ahead(&[blank], now, 500), None);
    }

    #[test]
    fn refusals_are_logged_once_per_ten_seconds() {
        let t = 1_000_000_000;
        assert!(log_refusal_now(t));
        assert!(!log_refusal_now(t + 9_999));
        assert!(log_refusal_now(t + 10_000));
    }
}
