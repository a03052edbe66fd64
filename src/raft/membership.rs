//! Raft's membership follows the registry: the leader adds each node that
//! governance added and removes each one it removed, one change at a time.
//!
//! A node added by vote joins as a learner (it catches up by snapshot and
//! log) and becomes a voter once it is within [`LEARNER_LAG_MAX`] entries of
//! the log's end. A removal waits while an added node is catching up (not
//! once it has replicated nothing for [`LEARNER_STALL`]), and a voter is
//! removed only while more than [`NODES_MIN`] remain (or than the registry
//! has nodes, in a smaller consortium): a replacement (add the new node,
//! remove the old one) removes the old node once the new one votes, and a
//! node that was added but never started blocks nothing (the old one then
//! stays a voter; while removed nodes are half the voters or more, the
//! leader says so in its log each minute). A joint configuration left by a
//! leader that crashed mid-change is finished first. Every node tells its
//! [`Trust`] which nodes Raft still has, so that a removed node's peer
//! traffic is refused only once Raft has removed it. A new leader changes
//! nothing until it has applied its log as it was when it began to lead:
//! its registry is then at least as new as any its peers acted on.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::{BasicNode, ChangeMembers};

use super::Raft;
use crate::config::NodeId;
use crate::identity::Trust;
use crate::ledger::gov::NODES_MIN;

/// How often Raft's membership is compared with the registry.
const CHECK_EVERY: Duration = Duration::from_millis(500);
/// How far behind the leader's log a learner may be when it is made a
/// voter.
pub const LEARNER_LAG_MAX: u64 = 100;
/// How long one membership change may take before it is tried again.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a learner that is behind may replicate nothing before it stops
/// holding up removals: a node that stalls (or is stalled on purpose)
/// cannot keep a removed node voting.
pub const LEARNER_STALL: Duration = Duration::from_secs(60);
/// How often the leader repeats that removed nodes are half its voters.
const ALARM_EVERY: Duration = Duration::from_secs(60);

/// The next membership change that brings Raft to the registry.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    /// Finish a joint configuration: these are the voters it moves to.
    Finish(BTreeSet<NodeId>),
    AddLearner(NodeId, String),
    Promote(NodeId),
    RemoveVoter(NodeId),
    RemoveLearner(NodeId),
}

/// What the leader sees: Raft's membership, how far each follower has
/// replicated, and the registry's nodes with their Raft addresses.
pub struct View<'a> {
    pub joint: &'a [BTreeSet<NodeId>],
    pub learners: BTreeSet<NodeId>,
    pub matched: BTreeMap<NodeId, u64>,
    /// Learners that replicated nothing for [`LEARNER_STALL`].
    pub stalled: BTreeSet<NodeId>,
    pub last_index: u64,
    pub registry: BTreeMap<NodeId, String>,
}

/// The one change to make next, if any.
pub fn next_change(v: &View<'_>) -> Option<Change> {
    if v.joint.len() > 1 {
        return v.joint.last().cloned().map(Change::Finish);
    }
    let voters = v.joint.first().cloned().unwrap_or_default();
    for (id, addr) in &v.registry {
        if voters.contains(id) {
            continue;
        }
        if !v.learners.contains(id) {
            return Some(Change::AddLearner(*id, addr.clone()));
        }
        match v.matched.get(id) {
            Some(m) if m + LEARNER_LAG_MAX >= v.last_index => return Some(Change::Promote(*id)),
            // Stalled: it blocks nothing.
            Some(_) if v.stalled.contains(id) => {}
            // Catching up: removals wait for it.
            Some(_) => return None,
            // Never reached (not started yet): it blocks nothing.
            None => {}
        }
    }
    // Never fewer voters than three (or than the registry has nodes).
    if voters.len() > NODES_MIN.min(v.registry.len()) {
        if let Some(id) = voters.iter().find(|id| !v.registry.contains_key(id)) {
            return Some(Change::RemoveVoter(*id));
        }
    }
    (v.learners.iter())
        .find(|id| !v.registry.contains_key(id))
        .map(|id| Change::RemoveLearner(*id))
}

/// Runs for as long as the node does: on every node, tells `trust` which
/// nodes Raft has; on the leader, makes [`next_change`].
pub fn drive(raft: Raft, trust: Arc<Trust>, me: NodeId) {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(CHECK_EVERY);
        let mut progress = Progress::default();
        let mut alarmed: Option<Instant> = None;
        // The term this node leads in, and its log's end when it began:
        // until it has applied that far, its registry may be older than
        // its log (a removed node would be added back).
        let mut leading: Option<(u64, u64)> = None;
        loop {
            interval.tick().await;
            let m = raft.metrics().borrow().clone();
            let membership = m.membership_config.membership();
            trust.in_raft(membership.nodes().map(|(id, _)| *id).collect());
            if m.current_leader != Some(me) {
                progress = Progress::default();
                leading = None;
                continue;
            }
            let term_start = match leading {
                Some((term, start)) if term == m.current_term => start,
                _ => {
                    let start = m.last_log_index.unwrap_or(0);
                    leading = Some((m.current_term, start));
                    start
                }
            };
            if m.last_applied.map_or(0, |l| l.index) < term_start {
                continue;
            }
            let registry = trust.nodes();
            let matched: BTreeMap<NodeId, u64> = (m.replication.iter().flatten())
                .filter_map(|(id, l)| l.map(|l| (*id, l.index)))
                .collect();
            let view = View {
                joint: membership.get_joint_config(),
                learners: membership.learner_ids().collect(),
                stalled: progress.stalled(&matched, Instant::now()),
                matched,
                last_index: m.last_log_index.unwrap_or(0),
                registry: (registry.ids())
                    .filter_map(|id| Some((id, registry.get(id)?.raft_addr.clone())))
                    .collect(),
            };
            let removed = removed_voters(&view);
            if !removed.is_empty() && alarmed.is_none_or(|t| t.elapsed() >= ALARM_EVERY) {
                let voters = view.joint.first().map_or(0, BTreeSet::len);
                tracing::warn!(
                    "nodes {removed:?}, removed by vote, are {} of {voters} Raft voters: they stay \
                     until the nodes added in their place have started and caught up",
                    removed.len()
                );
                alarmed = Some(Instant::now());
            }
            if let Some(change) = next_change(&view) {
                make(&raft, change).await;
            }
        }
    });
}

/// Why a follower refuses the membership entries of an append, if it
/// does: a configuration with fewer voters than [`NODES_MIN`] (or than
/// the follower's `voters_now()`, if fewer; asked only if an entry
/// changes the membership). The leader's driver never
/// proposes one; a leader that does (a hostile member's node making itself
/// the only voter, to lead for good) gets it accepted by no honest node.
pub fn too_few_voters(
    entries: &[openraft::Entry<super::TypeConfig>],
    voters_now: impl FnOnce() -> usize,
) -> Option<String> {
    let mut changes = (entries.iter())
        .filter_map(|e| match &e.payload {
            openraft::EntryPayload::Membership(m) => Some((e.log_id.index, m)),
            _ => None,
        })
        .peekable();
    changes.peek()?;
    let least = NODES_MIN.min(voters_now());
    changes.find_map(|(index, m)| {
        (m.get_joint_config().iter())
            .find(|voters| voters.len() < least)
            .map(|voters| {
                format!(
                    "entry {index} makes the voters {voters:?}: fewer than {least}, which no \
                     change by vote makes"
                )
            })
    })
}

/// Removed nodes that are still voters, when they are half the voters or
/// more.
fn removed_voters(v: &View<'_>) -> Vec<NodeId> {
    let voters = v.joint.first().cloned().unwrap_or_default();
    let removed: Vec<NodeId> = (voters.iter())
        .filter(|id| !v.registry.contains_key(id))
        .copied()
        .collect();
    if removed.len() * 2 >= voters.len() {
        removed
    } else {
        Vec::new()
    }
}

/// When each follower's replicated index last moved, as the leader saw it.
#[derive(Default)]
struct Progress(BTreeMap<NodeId, (u64, Instant)>);

impl Progress {
    /// Takes this tick's indexes; returns those that stood still for
    /// [`LEARNER_STALL`].
    fn stalled(&mut self, matched: &BTreeMap<NodeId, u64>, now: Instant) -> BTreeSet<NodeId> {
        self.0.retain(|id, _| matched.contains_key(id));
        let mut stalled = BTreeSet::new();
        for (id, index) in matched {
            let seen = self.0.entry(*id).or_insert((*index, now));
            if seen.0 != *index {
                *seen = (*index, now);
            } else if now.duration_since(seen.1) >= LEARNER_STALL {
                stalled.insert(*id);
            }
        }
        stalled
    }
}

async fn make(raft: &Raft, change: Change) {
    let what = format!("{change:?}");
    let done = match change {
        Change::AddLearner(id, addr) => {
            let added = raft.add_learner(id, BasicNode { addr }, false);
            tokio::time::timeout(CHANGE_TIMEOUT, added)
                .await
                .map(|r| r.map(drop).map_err(|e| e.to_string()))
        }
        other => {
            let changes: ChangeMembers<NodeId, BasicNode> = match other {
                Change::Finish(voters) => ChangeMembers::ReplaceAllVoters(voters),
                Change::Promote(id) => ChangeMembers::AddVoterIds(BTreeSet::from([id])),
                Change::RemoveVoter(id) => ChangeMembers::RemoveVoters(BTreeSet::from([id])),
                Change::RemoveLearner(id) => ChangeMembers::RemoveNodes(BTreeSet::from([id])),
                Change::AddLearner(..) => unreachable!("handled above"),
            };
            let changed = raft.change_membership(changes, false);
            tokio::time::timeout(CHANGE_TIMEOUT, changed)
                .await
                .map(|r| r.map(drop).map_err(|e| e.to_string()))
        }
    };
    match done {
        Ok(Ok(())) => tracing::info!("membership: {what} done"),
        Ok(Err(e)) => tracing::warn!("membership: {what}: {e}"),
        Err(_) => tracing::warn!("membership: {what}: timed out, tried again"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(
        voters: &[u64],
        learners: &[u64],
        registry: &[u64],
    ) -> (Vec<BTreeSet<u64>>, View<'static>) {
        let joint = vec![voters.iter().copied().collect()];
        let v = View {
            joint: &[],
            learners: learners.iter().copied().collect(),
            matched: BTreeMap::new(),
            stalled: BTreeSet::new(),
            last_index: 1_000,
            registry: registry.iter().map(|id| (*id, format!("h:{id}"))).collect(),
        };
        (joint, v)
    }

    #[test]
    fn a_new_node_is_a_learner_then_a_voter_once_caught_up() {
        let (joint, mut v) = view(&[1, 2, 3], &[], &[1, 2, 3, 4]);
        v.joint = &joint;
        assert_eq!(next_change(&v), Some(Change::AddLearner(4, "h:4".into())));
        v.learners.insert(4);
        assert_eq!(next_change(&v), None, "not caught up");
        v.matched.insert(4, 1_000 - LEARNER_LAG_MAX - 1);
        assert_eq!(next_change(&v), None, "still too far behind");
        v.matched.insert(4, 1_000 - LEARNER_LAG_MAX);
        assert_eq!(next_change(&v), Some(Change::Promote(4)));
    }

    #[test]
    fn a_removal_waits_for_the_replacement_to_vote() {
        let (joint, mut v) = view(&[1, 2, 3], &[4], &[2, 3, 4]);
        v.joint = &joint;
        assert_eq!(next_change(&v), None, "4 is not started: 1 stays a voter");
        v.matched.insert(4, 10);
        assert_eq!(next_change(&v), None, "4 is catching up");
        v.matched.insert(4, 1_000);
        assert_eq!(next_change(&v), Some(Change::Promote(4)));
        let (joint, mut v) = view(&[1, 2, 3, 4], &[], &[2, 3, 4]);
        v.joint = &joint;
        assert_eq!(next_change(&v), Some(Change::RemoveVoter(1)));
        let (joint, mut v) = view(&[2, 3, 4], &[5], &[2, 3, 4]);
        v.joint = &joint;
        assert_eq!(next_change(&v), Some(Change::RemoveLearner(5)));
        // A node added but never started blocks no other removal.
        let (joint, mut v) = view(&[1, 2, 3, 4], &[6], &[2, 3, 4, 6]);
        v.joint = &joint;
        assert_eq!(next_change(&v), Some(Change::RemoveVoter(1)));
        let (joint, mut v) = view(&[2, 3, 4], &[], &[2, 3, 4]);
        v.joint = &joint;
        assert_eq!(next_change(&v), None);
    }

    #[test]
    fn a_stalled_learner_does_not_keep_a_removed_node_voting() {
        let (joint, mut v) = view(&[1, 2, 3, 4], &[5], &[2, 3, 4, 5]);
        v.joint = &joint;
        v.matched.insert(5, 10);
        assert_eq!(next_change(&v), None, "5 is catching up");
        v.stalled.insert(5);
        assert_eq!(next_change(&v), Some(Change::RemoveVoter(1)));
        // Once it moves again and catches up, it is promoted.
        v.stalled.clear();
        v.matched.insert(5, 1_000);
        assert_eq!(next_change(&v), Some(Change::Promote(5)));
    }

    #[test]
    fn progress_marks_a_follower_stalled_only_after_it_stood_still_long_enough() {
        let mut p = Progress::default();
        let t0 = Instant::now();
        let at = |index: u64| BTreeMap::from([(5, index)]);
        assert!(p.stalled(&at(10), t0).is_empty());
        assert!(p.stalled(&at(10), t0 + LEARNER_STALL / 2).is_empty());
        assert!(
            p.stalled(&at(11), t0 + LEARNER_STALL).is_empty(),
            "it moved"
        );
        let still = t0 + LEARNER_STALL * 2;
        assert_eq!(p.stalled(&at(11), still), BTreeSet::from([5]));
        assert!(p.stalled(&BTreeMap::new(), still).is_empty(), "gone");
    }

    #[test]
    fn a_configuration_of_fewer_than_three_voters_is_refused() {
        let entry = |index: u64, configs: Vec<BTreeSet<u64>>| {
            let membership = openraft::Membership::new(configs, None);
            openraft::Entry::<crate::raft::TypeConfig> {
                log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(1, 0), index),
                payload: openraft::EntryPayload::Membership(membership),
            }
        };
        let sole = entry(7, vec![[1, 2, 3].into(), [3].into()]);
        let why = too_few_voters(&[sole], || 3).expect("refused");
        assert!(
            why.contains("entry 7") && why.contains("fewer than 3"),
            "{why}"
        );
        let fine = entry(8, vec![[1, 2, 3].into(), [2, 3, 4].into()]);
        assert_eq!(too_few_voters(std::slice::from_ref(&fine), || 3), None);
        // A smaller cluster keeps its size; a node with no voters yet
        // (joining) takes what its log holds.
        let pair = entry(9, vec![[1, 2].into()]);
        assert_eq!(too_few_voters(std::slice::from_ref(&pair), || 2), None);
        assert_eq!(too_few_voters(&[pair], || 0), None);
        // Without a membership entry the follower's voters are not asked.
        let asked = || -> usize { panic!("asked for the voters without a membership entry") };
        assert_eq!(too_few_voters(&[], asked), None);
    }

    #[test]
    fn removed_nodes_that_are_half_the_voters_are_named() {
        let (joint, mut v) = view(&[1, 2, 3], &[4, 5], &[3, 4, 5]);
        v.joint = &joint;
        assert_eq!(removed_voters(&v), vec![1, 2]);
        let (joint, mut v) = view(&[1, 2, 3, 4], &[], &[2, 3, 4]);
        v.joint = &joint;
        assert!(removed_voters(&v).is_empty(), "one of four");
    }

    #[test]
    fn a_joint_configuration_is_finished_first() {
        let joint: Vec<BTreeSet<u64>> = vec![[1, 2, 3].into(), [1, 2, 3, 4].into()];
        let (_, mut v) = view(&[], &[], &[1, 2, 3, 4, 5]);
        v.joint = &joint;
        assert_eq!(next_change(&v), Some(Change::Finish([1, 2, 3, 4].into())));
    }
}
