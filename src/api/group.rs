//! Group commit: concurrent single-transfer writes on the leader become one
//! Raft entry, so one fsync and one replication round carry many transfers.
//!
//! The leader's own callers' transfers and the bundles its followers
//! forward queue in one [`Batcher`]. Each group becomes one
//! [`Command::Group`]: the leader's callers in one bundle that the leader
//! seals, each forwarded bundle as its node sealed it. Each transfer keeps
//! its caller's identity and is checked on its own, exactly as if it had
//! been proposed alone.

use std::sync::Arc;

use openraft::error::{ClientWriteError, RaftError};

use super::batcher::{Batcher, Queued};
use super::metrics::NodeStats;
use super::service::write::{fresh_blinding, now_ms};
use crate::identity::attest::{Attested, Attester};
use crate::ledger::{
    Actor, Bundle, Command, Entry, Evidence, Grouped, Outcome, Rejection, Role, Transfer,
};
use crate::raft::Raft;

/// Why a grouped write has no result.
#[derive(Clone, Copy, Debug)]
pub enum GroupError {
    /// This node is not the leader; nothing was proposed by it.
    NotLeader,
    /// The group may have been proposed; its fate is unknown.
    MaybeProposed,
    /// The leader refused the group before proposing it (too busy): ask
    /// again.
    Refused,
}

/// The results of a unit's transfers, in order, and the log index of
/// their entry.
pub type GroupReply = Result<(Vec<Result<Transfer, Rejection>>, u64), GroupError>;

/// What queues for group commit.
pub enum Unit {
    /// A transfer of this node's caller; the leader seals it.
    Local(Grouped),
    /// Transfers a follower accepted and sealed.
    Forwarded(Bundle),
}

impl Unit {
    fn transfers(&self) -> usize {
        match self {
            Self::Local(_) => 1,
            Self::Forwarded(b) => b.items.len(),
        }
    }
}

/// The handle writes queue on.
pub struct GroupCommit {
    batcher: Batcher<Unit, GroupReply>,
}

impl GroupCommit {
    /// Starts the batcher. `node` stamps each group's entry (its actor only
    /// marks who proposed the group; items carry their callers).
    pub fn start(
        raft: Raft,
        node: Actor,
        attester: Arc<Attester>,
        stats: Arc<NodeStats>,
        group_max: usize,
        in_flight_max: usize,
        queue_max: usize,
    ) -> Self {
        debug_assert_eq!(node.role, Role::Node);
        let batcher = Batcher::start(
            group_max,
            in_flight_max,
            queue_max,
            Unit::transfers,
            move |group| {
                let (raft, node) = (raft.clone(), node.clone());
                commit(raft, node, attester.clone(), stats.clone(), group)
            },
        );
        Self { batcher }
    }

    /// Queues one caller's transfer, or a follower's bundle, and waits for
    /// its results.
    pub async fn write(&self, unit: Unit) -> GroupReply {
        self.batcher
            .submit(unit)
            .await
            .unwrap_or(Err(GroupError::MaybeProposed))
    }
}

async fn commit(
    raft: Raft,
    node: Actor,
    attester: Arc<Attester>,
    stats: Arc<NodeStats>,
    group: Vec<Queued<Unit, GroupReply>>,
) {
    let timestamp_ms = now_ms();
    // The leader's own callers first, so that one seal covers them all.
    let (local, forwarded): (Vec<_>, Vec<_>) = group
        .into_iter()
        .partition(|q| matches!(q.request, Unit::Local(_)));
    let (units, replies): (Vec<Unit>, Vec<_>) = local
        .into_iter()
        .chain(forwarded)
        .map(|q| (q.request, q.reply))
        .unzip();
    let sizes: Vec<usize> = units.iter().map(Unit::transfers).collect();
    let entry = Entry {
        actor: node,
        timestamp_ms,
        command: Command::Group(bundles(units, &attester, timestamp_ms)),
        evidence: Evidence::Leader,
        blinding: fresh_blinding(),
    };
    let transfers: usize = sizes.iter().sum();
    stats.group_transfers.observe(transfers as u64);
    let proposed = std::time::Instant::now();
    let written = raft.client_write(entry.into()).await;
    stats.proposed(written.is_ok(), proposed.elapsed());
    match written {
        Ok(resp) => {
            let index = resp.log_id.index;
            let Some(Outcome::Transfers(results)) = resp.data else {
                unreachable!("a group entry applies to one result per item")
            };
            assert_eq!(results.len(), transfers, "one result per grouped transfer");
            let mut results = results.into_iter();
            for (reply, size) in replies.into_iter().zip(sizes) {
                let _ = reply.send(Ok((results.by_ref().take(size).collect(), index)));
            }
        }
        Err(e) => {
            // As for a single write: ForwardToLeader can follow an append
            // that may still commit, so only "maybe" is honest.
            if !matches!(e, RaftError::APIError(ClientWriteError::ForwardToLeader(_))) {
                tracing::warn!(error = %e, "group write failed");
            }
            for reply in replies {
                let _ = reply.send(Err(GroupError::MaybeProposed));
            }
        }
    }
}

/// The group's bundles, in the order of `units`: each run of the leader's
/// own callers' transfers sealed by it as one bundle, each forwarded
/// bundle as it came.
fn bundles(units: Vec<Unit>, attester: &Attester, now_ms: u64) -> Vec<Bundle> {
    let mut out: Vec<Bundle> = Vec::new();
    let mut local: Vec<Grouped> = Vec::new();
    let seal_local = |local: &mut Vec<Grouped>, out: &mut Vec<Bundle>| {
        if !local.is_empty() {
            let items = std::mem::take(local);
            let evidence = attester.seal(&Attested::Bundle(&items), now_ms);
            out.push(Bundle { evidence, items });
        }
    };
    for unit in units {
        match unit {
            Unit::Local(g) => local.push(g),
            Unit::Forwarded(b) => {
                seal_local(&mut local, &mut out);
                out.push(b);
            }
        }
    }
    seal_local(&mut local, &mut out);
    out
}
