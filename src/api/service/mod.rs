//! Executing a request where it must run: on the leader.
//!
//! Any node serves any request. Writes and linearizable reads run on the
//! leader; a follower forwards them over the peer channel with the caller's
//! verified identity ([`forward`]) and relays the leader's answer. Every
//! write is idempotent by its id (transfer id, account id), so a request
//! whose first attempt may or may not have been proposed can be retried
//! safely until the deadline; if no attempt was confirmed by then, the
//! caller gets 504 `outcome_unknown` (if anything may have been proposed)
//! or 503 `no_quorum`.
//!
//! The service answers in types ([`Answer`], [`ApiError`]); the listener
//! renders them.

mod expiry;
pub mod forward;
mod read;
mod write;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::body::Shape;
use super::error::ApiError;
use super::group;
use super::metrics::Responses;
use super::query::page_limit;
use super::views::{Answer, ClusterView, MemberView, ReadyView};
use super::watch::Watch;
use crate::config::{Genesis, Limits, NodeId};
use crate::identity::Principal;
use crate::ledger::{AccountId, Actor, Command, OrgName, Role, TransferId};
use crate::raft::log_store::CommitIndex;
use crate::raft::network::Peers;
use crate::raft::state_machine::SharedState;
use crate::raft::Raft;

pub use forward::{Forwarded, PeerAnswer, EXECUTE_PATH};

/// How long `/readyz` on the leader waits for a quorum to confirm it.
const READY_QUORUM_WAIT_MS: u64 = 1_000;

/// First and longest pause between attempts while a leader is sought.
const RETRY_BACKOFF_MIN_MS: u64 = 10;
const RETRY_BACKOFF_MAX_MS: u64 = 200;

/// What a request asks; the unit that is forwarded to the leader.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Op {
    Write(Command, Shape),
    Read(Read),
}

/// A read, served from the applied state (on the leader after a
/// linearizable barrier, or locally).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Read {
    Account {
        id: AccountId,
        at_height: Option<u64>,
    },
    Transfer(TransferId),
    History {
        id: AccountId,
        from: u64,
        limit: usize,
    },
    Accounts {
        after: Option<AccountId>,
        limit: usize,
    },
    Block(u64),
    Blocks {
        from: u64,
        limit: usize,
    },
    Proof(TransferId),
}

impl Op {
    fn is_write(&self) -> bool {
        matches!(self, Self::Write(..))
    }
}

impl Read {
    /// The page limit the edge checks, checked again on the leader for a
    /// read forwarded by a peer: a page holds 1..=`page_items_max` items.
    fn check_limits(&self, page_items_max: usize) -> Result<(), ApiError> {
        let limit = match self {
            Self::History { limit, .. }
            | Self::Accounts { limit, .. }
            | Self::Blocks { limit, .. } => *limit,
            _ => return Ok(()),
        };
        page_limit(limit, page_items_max).map(drop)
    }
}

/// The result of a request as the service gives it.
pub type Outcome = Result<Answer, ApiError>;

/// The application core of one node: runs requests on the leader.
pub struct Service {
    id: NodeId,
    /// This node's organization.
    org: OrgName,
    raft: Raft,
    state: SharedState,
    genesis: Arc<Genesis>,
    limits: Limits,
    /// Client for the peer channel (pooled, mutual TLS).
    peers: Peers,
    commit_index: CommitIndex,
    /// Coalesces single-transfer writes on the leader (see [`group`]).
    group: group::GroupCommit,
    /// What this node knows of its peers' chains.
    watch: Arc<Watch>,
    in_flight: Semaphore,
    /// The API listener's answers by status, for `/metrics`.
    responses: Arc<Responses>,
}

/// Why one attempt did not produce an answer.
enum Attempt {
    /// Not sent, or refused before proposing: try again.
    Retry,
    /// May have been proposed: retry (writes are idempotent), but if the
    /// deadline passes the outcome is unknown.
    RetryMaybeProposed,
}

impl Service {
    pub fn new(
        id: NodeId,
        raft: Raft,
        state: SharedState,
        genesis: Arc<Genesis>,
        limits: Limits,
        peers: Peers,
        commit_index: CommitIndex,
    ) -> Self {
        let org = genesis
            .node(id)
            .map(|n| n.org.clone())
            .expect("this node is in genesis");
        let group = group::GroupCommit::start(
            raft.clone(),
            Actor {
                org: org.clone(),
                role: Role::Node,
            },
            limits.group_commit_max,
            limits.group_commit_in_flight,
            limits.in_flight_proposals_max,
        );
        let peer_ids = genesis.nodes.iter().map(|n| n.id).filter(|n| *n != id);
        let watch = Watch::new(
            state.clone(),
            genesis.hash_bytes(),
            peers.clone(),
            peer_ids.collect(),
        );
        Self {
            in_flight: Semaphore::new(limits.in_flight_proposals_max),
            id,
            org,
            raft,
            state,
            genesis,
            limits,
            peers,
            commit_index,
            group,
            watch: Arc::new(watch),
            responses: Arc::default(),
        }
    }

    fn org(&self) -> &OrgName {
        &self.org
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.limits.request_timeout_ms)
    }

    pub fn watch(&self) -> &Arc<Watch> {
        &self.watch
    }

    pub fn responses(&self) -> &Arc<Responses> {
        &self.responses
    }

    /// Runs `op` for `principal` on the leader, wherever that is.
    pub async fn execute(&self, principal: &Principal, op: &Op) -> Outcome {
        let deadline = Instant::now() + self.timeout();
        let mut maybe_proposed = false;
        let mut backoff = Duration::from_millis(RETRY_BACKOFF_MIN_MS);
        let metrics = self.raft.metrics();
        loop {
            let leader = metrics.borrow().current_leader;
            let attempt = match leader {
                Some(l) if l == self.id => self.execute_local(principal, op, deadline).await,
                Some(l) => self.forward(l, principal, op, deadline).await,
                None => Err(Attempt::Retry),
            };
            match attempt {
                // After an attempt that may have been proposed, an answer
                // that only says "not done this time" (overloaded, a body
                // timeout, no quorum relayed by the leader's listener) does
                // not settle that attempt's fate: try again, and say 504 at
                // the deadline, never something that reads as "nothing done".
                Ok(outcome) if maybe_proposed && not_done_this_time(&outcome) => {}
                Ok(outcome) => return outcome,
                Err(Attempt::RetryMaybeProposed) => maybe_proposed |= op.is_write(),
                Err(Attempt::Retry) => {}
            }
            let wait = backoff.min(deadline.saturating_duration_since(Instant::now()));
            if wait.is_zero() {
                return Err(if maybe_proposed {
                    ApiError::OutcomeUnknown
                } else {
                    ApiError::NoQuorum
                });
            }
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(Duration::from_millis(RETRY_BACKOFF_MAX_MS));
        }
    }

    async fn execute_local(
        &self,
        principal: &Principal,
        op: &Op,
        deadline: Instant,
    ) -> Result<Outcome, Attempt> {
        match op {
            Op::Write(command, shape) => self.write(principal, command, *shape, deadline).await,
            Op::Read(read) => {
                self.linearize(deadline).await?;
                Ok(self.read(principal, read))
            }
        }
    }

    /// The owner of account `id` on this node's applied state, for checks
    /// at the edge (apply checks again).
    pub fn account_owner(&self, id: &AccountId) -> Option<OrgName> {
        self.state
            .read()
            .ledger
            .account(id)
            .map(|a| a.owner.clone())
    }

    /// This node's view of the cluster.
    pub fn cluster(&self) -> ClusterView {
        let m = self.raft.metrics().borrow().clone();
        let members = self.genesis.nodes.iter().map(|n| MemberView {
            id: n.id,
            org: n.org.clone(),
            api_addr: n.api_addr.to_string(),
            raft_addr: n.raft_addr.to_string(),
        });
        ClusterView {
            consortium: self.genesis.consortium.clone(),
            node_id: self.id,
            state: format!("{:?}", m.state),
            leader: m.current_leader,
            term: m.current_term,
            voters: m.membership_config.membership().voter_ids().collect(),
            members: members.collect(),
            last_log_index: m.last_log_index,
            commit_index: self.commit_index.get(),
            applied_index: m.last_applied.map(|l| l.index),
            snapshot_index: m.snapshot.map(|l| l.index),
            purged_index: m.purged.map(|l| l.index),
            height: self.state.read().ledger.height(),
            replicas: self.watch.status(),
        }
    }
}

impl Service {
    /// Whether this node serves reads and writes now: Raft runs (a storage
    /// failure stops it), a leader is known (and if it is this node, a
    /// quorum confirms it within [`READY_QUORUM_WAIT_MS`]), this node has
    /// applied all but at most `limits.ready_lag_entries_max` committed
    /// entries, and its chain agrees with its peers'.
    pub async fn readiness(&self) -> ReadyView {
        let m = self.raft.metrics().borrow().clone();
        let commit_index = self.commit_index.get();
        let applied_index = m.last_applied.map(|l| l.index);
        let mut reasons = Vec::new();
        if let Err(fatal) = &m.running_state {
            reasons.push(format!("raft has stopped: {fatal}"));
        }
        if m.current_leader.is_none() {
            reasons.push("no leader is known: a majority of nodes may be unreachable".into());
        } else if m.current_leader == Some(self.id) {
            let wait = Duration::from_millis(READY_QUORUM_WAIT_MS);
            let confirmed = tokio::time::timeout(wait, self.raft.ensure_linearizable()).await;
            if !matches!(confirmed, Ok(Ok(_))) {
                reasons.push(format!(
                    "this node leads, but within {READY_QUORUM_WAIT_MS} ms no quorum confirmed it \
                     or it did not apply what was committed: a majority of nodes may be \
                     unreachable"
                ));
            }
        }
        let lag = commit_index
            .unwrap_or(0)
            .saturating_sub(applied_index.unwrap_or(0));
        if lag > self.limits.ready_lag_entries_max {
            reasons.push(format!(
                "{lag} committed entries are not applied yet (ready at {} or fewer)",
                self.limits.ready_lag_entries_max
            ));
        }
        if let Some(why) = self.watch.diverged() {
            reasons.push(why);
        }
        ReadyView {
            ready: reasons.is_empty(),
            reasons,
            leader: m.current_leader,
            commit_index,
            applied_index,
        }
    }
}

/// Whether an outcome only says "not done this time" (a body timeout,
/// overloaded, rate limited, no quorum, unavailable).
fn not_done_this_time(outcome: &Outcome) -> bool {
    let status = match outcome {
        Ok(Answer::Relayed(rendered)) => rendered.status,
        Ok(_) => return false,
        Err(e) => e.status().as_u16(),
    };
    matches!(status, 408 | 429 | 503)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forwarded_read_asks_for_a_page_within_the_limit() {
        let id = AccountId::parse("org1.ops").unwrap();
        let code = |read: Read| read.check_limits(100).map_err(|e| e.code());
        assert_eq!(
            code(Read::Blocks { from: 0, limit: 0 }),
            Err("invalid_query")
        );
        let (after, limit) = (None, usize::MAX);
        assert_eq!(code(Read::Accounts { after, limit }), Err("invalid_query"));
        let (from, limit) = (0, 101);
        assert_eq!(
            code(Read::History {
                id: id.clone(),
                from,
                limit
            }),
            Err("invalid_query")
        );
        assert_eq!(
            code(Read::History {
                id: id.clone(),
                from,
                limit: 100
            }),
            Ok(())
        );
        assert_eq!(code(Read::Blocks { from: 9, limit: 1 }), Ok(()));
        assert_eq!(
            code(Read::Account {
                id,
                at_height: None
            }),
            Ok(())
        );
    }
}
