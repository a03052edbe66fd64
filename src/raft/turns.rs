//! The nodes take turns building snapshots. Each builds one every
//! `raft.snapshot_logs_since_last` entries, but at its own place in that
//! cycle: the nodes in Raft's membership, in the order of their ids, are
//! spread evenly over it. A build walks the whole stored state and takes a
//! core for seconds to minutes; were every node to start one at the same
//! entry, as a count since the last snapshot alone would have them do, all
//! of them would walk at once and every write would wait on a node that is
//! walking. Taking turns, at most one node walks at a time while builds
//! take less than a turn (the cycle over the number of nodes), so a quorum
//! of nodes that are not walking keeps committing.
//!
//! A node keeps its place after a snapshot that came late (it catches up,
//! restarts, or installs one): the next build is at its place again, at
//! least half a cycle after the last. A follower asks for none until it
//! has taken an append since it started: one that restarts far behind then
//! knows that it is catching up, and its build waits until it is in step
//! (see `state_machine`).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::state_machine::SharedState;
use super::Raft;

/// How long a node waits before asking again for a build it asked for
/// and did not get (one was running then: Raft builds one at a time), and
/// between looks when Raft's metrics do not change. A build that ends
/// meanwhile starts the wait again: Raft's metrics show its snapshot a
/// moment after it ends, and an ask in between would start another.
const ASK_AGAIN: Duration = Duration::from_secs(1);

/// The log index at or past which a node builds its next snapshot, given
/// the index of its last one (`last`, 0 for none), the entries between
/// builds, and its place among `places` nodes.
pub fn next_build(last: u64, every: u64, place: u64, places: u64) -> u64 {
    let every = every.max(1);
    let places = places.max(1);
    let offset =
        (u128::from(every) * u128::from(place.min(places - 1)) / u128::from(places)) as u64;
    let earliest = last.saturating_add(every.div_ceil(2));
    let cycles = earliest.saturating_sub(offset).div_ceil(every);
    offset.saturating_add(cycles.saturating_mul(every))
}

/// Asks Raft for a snapshot build each time this node's turn comes (see
/// the module's documentation), for as long as Raft runs. Raft itself
/// builds none (its policy is `Never`).
pub fn take_turns(raft: Raft, every: u64, state: SharedState) {
    tokio::spawn(async move {
        let mut metrics = raft.metrics();
        // The turn asked for last, when, and the builds and installs done
        // by then.
        let mut asked: Option<(u64, Instant, u64)> = None;
        loop {
            let due = {
                let m = metrics.borrow();
                let membership = m.membership_config.membership();
                let places = membership.nodes().count() as u64;
                let place = (membership.nodes())
                    .take_while(|(id, _)| **id != m.id)
                    .count() as u64;
                let last = m.snapshot.map_or(0, |s| s.index);
                let at = next_build(last, every, place, places);
                let applied = m.last_applied.map_or(0, |a| a.index);
                // The lock behind `took_an_append` only once a turn is due.
                let knows = || m.current_leader == Some(m.id) || state.took_an_append();
                (applied >= at && knows()).then_some(at)
            };
            if let Some(at) = due {
                let counts = &state.snapshots;
                let done =
                    counts.built.load(Ordering::Relaxed) + counts.installed.load(Ordering::Relaxed);
                match asked {
                    Some((was, _, then)) if was == at && then != done => {
                        asked = Some((at, Instant::now(), done));
                    }
                    Some((was, when, _)) if was == at && when.elapsed() < ASK_AGAIN => {}
                    _ => {
                        if raft.trigger().snapshot().await.is_err() {
                            return;
                        }
                        asked = Some((at, Instant::now(), done));
                    }
                }
            }
            // Also every second: what a follower took comes without a
            // change of Raft's metrics.
            if let Ok(Err(_closed)) = tokio::time::timeout(ASK_AGAIN, metrics.changed()).await {
                return;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::next_build;

    /// Three nodes building every 300 entries take a third of the cycle
    /// each, and keep their places whenever their last build was.
    #[test]
    fn nodes_build_at_their_own_place_in_the_cycle() {
        let at = |last, place| next_build(last, 300, place, 3);
        assert_eq!([at(0, 0), at(0, 1), at(0, 2)], [300, 400, 200]);
        // Each build at its place: the next is a whole cycle later.
        assert_eq!([at(300, 0), at(400, 1), at(200, 2)], [600, 700, 500]);
        // A build that came late (apply ran past the place before it
        // began) leaves the next at the place.
        assert_eq!([at(307, 0), at(431, 1), at(249, 2)], [600, 700, 500]);
        // A snapshot installed anywhere: the next build at the node's
        // place, at least half a cycle on.
        assert_eq!(at(1_000, 1), 1_300);
        assert_eq!(at(1_200, 1), 1_600);
        assert_eq!(at(1_149, 2), 1_400);
        assert_eq!(at(1_250, 2), 1_400);
        assert_eq!(at(1_251, 2), 1_700);
    }

    /// One node builds every `every` entries from the start; odd sizes
    /// and bounds neither overflow nor build twice at once.
    #[test]
    fn edges_of_the_cycle() {
        assert_eq!(next_build(0, 10, 0, 1), 10);
        assert_eq!(next_build(10, 10, 0, 1), 20);
        assert_eq!(next_build(0, 1, 0, 1), 1);
        assert_eq!(next_build(5, 1, 0, 1), 6);
        assert_eq!(next_build(0, 10, 1, 3), 13);
        assert_eq!(next_build(0, 10, 2, 3), 6);
        // A place past the last (the membership changed meanwhile) counts
        // as the last; no nodes at all as one.
        assert_eq!(next_build(0, 300, 7, 3), 200);
        assert_eq!(next_build(0, 300, 0, 0), 300);
        // Nothing wraps: a cycle too long to finish never comes.
        assert_eq!(next_build(0, u64::MAX, 2, 3), (u64::MAX / 3) * 2);
        assert_eq!(next_build(u64::MAX - 5, 100, 1, 3), u64::MAX);
        assert!(next_build(u64::MAX / 2, u64::MAX, 0, 3) >= u64::MAX / 2);
    }
}
