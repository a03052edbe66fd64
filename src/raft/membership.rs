//! Raft's membership follows the registry: the leader adds each node that
//! governance added and removes each one it removed, one change at a time.
//!
//! A node added by vote joins as a learner (it catches up by snapshot and
//! log) and becomes a voter once it is within [`LEARNER_LAG_MAX`] entries of
//! the log's end. A removal waits while an added node is catching up, and a
//! voter is removed only while more than [`NODES_MIN`] remain (or than the
//! registry has nodes, in a smaller consortium): a
//! replacement (add the new node, remove the old one) removes the old node
//! once the new one votes, and a node that was added but never started
//! blocks nothing (the old one then stays a voter). A joint configuration
//! left by a leader that crashed mid-change is finished first. Every node tells its [`Trust`] which nodes
//! Raft still has, so that a removed node's peer traffic is refused only
//! once Raft has removed it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

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
        loop {
            interval.tick().await;
            let m = raft.metrics().borrow().clone();
            let membership = m.membership_config.membership();
            trust.in_raft(membership.nodes().map(|(id, _)| *id).collect());
            if m.current_leader != Some(me) {
                continue;
            }
            let registry = trust.nodes();
            let view = View {
                joint: membership.get_joint_config(),
                learners: membership.learner_ids().collect(),
                matched: (m.replication.iter().flatten())
                    .filter_map(|(id, l)| l.map(|l| (*id, l.index)))
                    .collect(),
                last_index: m.last_log_index.unwrap_or(0),
                registry: (registry.ids())
                    .filter_map(|id| Some((id, registry.get(id)?.raft_addr.clone())))
                    .collect(),
            };
            if let Some(change) = next_change(&view) {
                make(&raft, change).await;
            }
        }
    });
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
    fn a_joint_configuration_is_finished_first() {
        let joint: Vec<BTreeSet<u64>> = vec![[1, 2, 3].into(), [1, 2, 3, 4].into()];
        let (_, mut v) = view(&[], &[], &[1, 2, 3, 4, 5]);
        v.joint = &joint;
        assert_eq!(next_change(&v), Some(Change::Finish([1, 2, 3, 4].into())));
    }
}
