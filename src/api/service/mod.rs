//! Executing a request where it must run: on the leader.
//!
//! Any node serves its own organization's callers. Writes run on the
//! leader: a follower seals what its caller asked (see
//! [`crate::identity::attest`]) and forwards it over the peer channel
//! ([`forward`]; single transfers in bundles, [`crate::api::relay`]), and
//! relays the leader's answer. A linearizable read on a follower asks the
//! leader for a read index confirmed by a quorum, waits until it has
//! applied that index, and is served here. Every
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
mod lifetime;
mod read;
mod signed;
pub mod write;

use std::sync::Arc;
use std::time::Duration;

use actix_web::web::Payload;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::body::{self, Body, BodyBudgets, Shape};
use super::error::ApiError;
use super::group;
use super::metrics::NodeStats;
use super::relay::Relay;
use super::views::{Answer, ClusterView, MemberView, ReadyView};
use super::watch::Watch;
use crate::config::{Genesis, Limits, NodeId};
use crate::identity::attest::{Attester, Witness};
use crate::identity::Expiry;
use crate::identity::Principal;
use crate::ledger::{AccountId, Actor, ClientSeal, Command, Evidence, OrgName, Role, TransferId};
use crate::raft::log_store::CommitIndex;
use crate::raft::network::Peers;
use crate::raft::state_machine::SharedState;
use crate::raft::Raft;

pub use forward::READ_INDEX_PATH;
pub use forward::{Forwarded, PeerAnswer, ReadIndex, EXECUTE_PATH, FORWARDED_ORG_HEADER};

/// How long `/readyz` on the leader waits for a quorum to confirm it.
const READY_QUORUM_WAIT_MS: u64 = 1_000;

/// First and longest pause between attempts while a leader is sought.
const RETRY_BACKOFF_MIN_MS: u64 = 10;
const RETRY_BACKOFF_MAX_MS: u64 = 200;

/// What a request asks.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Op {
    /// A write, with the caller's own seal if this node may not vouch for
    /// the caller (another organization's).
    Write(Command, Shape, Option<ClientSeal>),
    Read(Read),
}

/// A read, served from the applied state (after a linearizable barrier,
/// or locally).
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
    Proposal(u64),
    Proposals {
        from: u64,
        limit: usize,
    },
    Registry,
}

impl Op {
    fn is_write(&self) -> bool {
        matches!(self, Self::Write(..))
    }
}

impl Read {
    /// Whether the read may need records that only the store holds
    /// (settled transfers, histories, blocks), not only memory.
    fn needs_store(&self) -> bool {
        match self {
            Self::Account { at_height, .. } => at_height.is_some(),
            Self::Transfer(_)
            | Self::History { .. }
            | Self::Block(_)
            | Self::Blocks { .. }
            | Self::Proof(_) => true,
            Self::Accounts { .. } | Self::Proposal(_) | Self::Proposals { .. } | Self::Registry => {
                false
            }
        }
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
    /// Bundles this node's callers' single transfers while another node
    /// leads.
    relay: Relay,
    /// Seals what this node accepts from its callers.
    attester: Arc<Attester>,
    /// Checks callers' own seals at the edge (and, in the state machine,
    /// every seal in apply).
    witness: Arc<Witness>,
    /// What this node knows of its peers' chains.
    watch: Arc<Watch>,
    in_flight: Semaphore,
    /// Request bodies in memory, per organization on the API listener
    /// and per node on the peer listener.
    bodies: Arc<BodyBudgets>,
    peer_bodies: Arc<BodyBudgets>,
    /// What this node counts for `/metrics`.
    stats: Arc<NodeStats>,
    /// `GET /v1/openapi.json`, made once: it depends on the limits only.
    openapi: std::sync::OnceLock<actix_web::web::Bytes>,
}

/// What a peer's request body is for, each with its own budget.
pub enum PeerBody<'a> {
    /// A Raft message: an append, a vote, a snapshot chunk.
    Raft,
    /// Single transfers a follower sealed for its callers.
    Bundle,
    /// A write the node forwards for a caller of this organization.
    Forward(&'a OrgName),
}

/// Why one attempt did not produce an answer.
enum Attempt {
    /// Not sent, or refused before proposing: try again.
    Retry,
    /// Refused by a leader too busy to propose it: try again, and if the
    /// deadline passes, say so (429).
    RetryOverloaded,
    /// May have been proposed: retry (writes are idempotent), but if the
    /// deadline passes the outcome is unknown.
    RetryMaybeProposed,
}

/// What a node's service runs on: its Raft, the applied state, the
/// committed index and its peers.
pub struct Replica {
    pub raft: Raft,
    pub state: SharedState,
    pub commit_index: CommitIndex,
    pub peers: Peers,
    pub witness: Arc<Witness>,
    pub stats: Arc<NodeStats>,
}

/// The answer to a read while a snapshot replaces this node's state.
fn installing_refusal() -> ApiError {
    ApiError::Unavailable(
        "this node is installing a snapshot from the leader: retry shortly, or ask another node"
            .into(),
    )
}

impl Service {
    pub fn new(
        (id, org): (NodeId, OrgName),
        replica: Replica,
        genesis: Arc<Genesis>,
        limits: Limits,
        attester: Attester,
    ) -> Self {
        let Replica {
            raft,
            state,
            commit_index,
            peers,
            witness,
            stats,
        } = replica;
        let attester = Arc::new(attester);
        let group = group::GroupCommit::start(
            raft.clone(),
            Actor {
                org: org.clone(),
                role: Role::Node,
            },
            attester.clone(),
            stats.clone(),
            limits.group_commit_max,
            limits.group_commit_in_flight,
            limits.in_flight_proposals_max,
        );
        let relay = Relay::start(
            raft.clone(),
            id,
            peers.clone(),
            attester.clone(),
            Duration::from_millis(limits.request_timeout_ms),
            (
                limits.group_commit_max,
                limits.group_commit_in_flight,
                limits.in_flight_proposals_max,
            ),
        );
        let watch = Watch::new(
            (state.clone(), raft.clone()),
            genesis.hash_bytes(),
            peers.clone(),
            limits.clock_offset_max_ms,
        );
        Self {
            in_flight: Semaphore::new(limits.in_flight_proposals_max),
            bodies: BodyBudgets::new(
                "limits.body_bytes_in_flight_max",
                limits.body_bytes_in_flight_max,
            ),
            peer_bodies: BodyBudgets::new(
                "limits.peer_body_bytes_in_flight_max",
                limits.peer_body_bytes_in_flight_max,
            ),
            id,
            org,
            raft,
            state,
            genesis,
            limits,
            peers,
            commit_index,
            group,
            relay,
            attester,
            witness,
            watch: Arc::new(watch),
            stats,
            openapi: std::sync::OnceLock::new(),
        }
    }

    /// The API's OpenAPI description under this node's limits, as JSON.
    pub fn openapi(&self) -> actix_web::web::Bytes {
        let made = self.openapi.get_or_init(|| {
            crate::api::openapi::document(&self.limits)
                .to_string()
                .into()
        });
        made.clone()
    }

    /// Whether a node proposed for the registry has a node certificate of
    /// its organization's current CA, with its id (checked at the edge:
    /// the members see the certificate before they vote).
    pub fn check_node_cert(&self, node: &crate::ledger::gov::NewNode) -> Result<(), ApiError> {
        let der = crate::identity::first_cert_der(node.cert.as_bytes()).unwrap_or_default();
        let cert = rustls::pki_types::CertificateDer::from(der);
        let issued = self.witness.trust().identify(std::slice::from_ref(&cert));
        match issued {
            Ok(p)
                if p.org() == &node.org
                    && p.role() == crate::ledger::Role::Node
                    && p.name() == node.id.to_string() =>
            {
                Ok(())
            }
            Ok(_) => Err(crate::api::body::invalid(
                "invalid_node_cert",
                format!("cert is not node {}'s certificate of {}", node.id, node.org),
            )),
            Err(e) => Err(crate::api::body::invalid(
                "invalid_node_cert",
                format!(
                    "cert: {e} (a node certificate of {}'s current CA)",
                    node.org
                ),
            )),
        }
    }

    /// This node's applied state now, as a backup file's bytes (see
    /// [`crate::backup`]). Blocks while it walks the state.
    pub fn backup(&self) -> crate::error::Result<Vec<u8>> {
        let backup = crate::backup::Backup::take(&self.state, &self.genesis.hash, self.id)?;
        Ok(backup.to_bytes())
    }

    pub fn org(&self) -> &OrgName {
        &self.org
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.limits.request_timeout_ms)
    }

    /// Reads the body of a request of `org`'s caller on the API listener.
    pub async fn api_body(&self, org: &OrgName, payload: Payload) -> Result<Body, ApiError> {
        let held = self.bodies.hold(org);
        body::read(payload, self.limits.body_bytes_max, self.timeout(), held).await
    }

    /// Reads the body of a request of peer node `node`: each purpose has
    /// its own budget, and forwards one per organization, so that no
    /// member's callers can hold up the Raft messages or another member's
    /// forwards of the node that passes their writes on.
    pub async fn peer_body(
        &self,
        node: NodeId,
        purpose: PeerBody<'_>,
        payload: Payload,
    ) -> Result<Body, ApiError> {
        let held = self.peer_bodies.hold(match purpose {
            PeerBody::Raft => format!("node {node}"),
            PeerBody::Bundle => format!("node {node}, bundles"),
            PeerBody::Forward(org) => format!("node {node}, forwards for {org}"),
        });
        let max = self.limits.peer_body_bytes_max;
        body::read(payload, max, self.timeout(), held).await
    }

    /// Whether `org` is a member now.
    pub fn is_member(&self, org: &OrgName) -> bool {
        self.witness.trust().is_member(org)
    }

    pub fn witness(&self) -> &Arc<Witness> {
        &self.witness
    }

    /// The applied state this node serves.
    pub fn state(&self) -> &SharedState {
        &self.state
    }

    pub fn watch(&self) -> &Arc<Watch> {
        &self.watch
    }

    pub fn stats(&self) -> &Arc<NodeStats> {
        &self.stats
    }

    /// The answer to a write while this node's clock is off its peers'.
    fn clock_off_refusal(&self) -> Option<ApiError> {
        let why = self.watch.clock_off()?;
        Some(ApiError::Unavailable(format!(
            "{why}; until then this node takes no writes: retry later, or ask another node"
        )))
    }

    /// Runs `op` for `principal`: a write on the leader, wherever that is;
    /// a read here, after a read index from the leader (linearizable).
    pub async fn execute(&self, principal: &Principal, op: &Op) -> Outcome {
        if !op.is_write() && self.state.installing() {
            return Err(installing_refusal());
        }
        if let (true, Some(e)) = (op.is_write(), self.clock_off_refusal()) {
            return Err(e);
        }
        let deadline = Instant::now() + self.timeout();
        let mut maybe_proposed = false;
        // Whether a leader refused an attempt as too busy to propose it.
        let mut overloaded = false;
        let mut backoff = Duration::from_millis(RETRY_BACKOFF_MIN_MS);
        let metrics = self.raft.metrics();
        loop {
            let leader = metrics.borrow().current_leader;
            let attempt = match leader {
                Some(l) if l == self.id => self.execute_local(principal, op, deadline).await,
                Some(l) => match op {
                    Op::Write(command, shape, signed) => {
                        self.forward(l, principal, command, *shape, signed, deadline)
                            .await
                    }
                    Op::Read(read) => self.read_via(l, principal, read, deadline).await,
                },
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
                Err(Attempt::RetryOverloaded) => overloaded = true,
            }
            let wait = backoff.min(deadline.saturating_duration_since(Instant::now()));
            if wait.is_zero() {
                return Err(if maybe_proposed {
                    ApiError::OutcomeUnknown
                } else if overloaded {
                    ApiError::Overloaded
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
            Op::Write(command, shape, signed) => {
                let evidence = signed.clone().map(Evidence::Client);
                self.write(principal, command, *shape, evidence, deadline)
                    .await
            }
            Op::Read(read) => {
                self.linearize(deadline).await?;
                Ok(self.read_by(principal, read, deadline).await)
            }
        }
    }

    /// The owner of account `id` on this node's applied state, for checks
    /// at the edge (apply checks again); `None` while a snapshot replaces
    /// the state, rather than wait for it.
    pub fn account_owner(&self, id: &AccountId) -> Option<OrgName> {
        let state = self.state.try_read()?;
        state.ledger.account(id).map(|a| a.owner.clone())
    }

    /// This node's view of the cluster.
    /// Seals with the node certificate and key in `tls` from now on.
    pub fn reload_certificate(&self, tls: &crate::config::TlsFiles) -> crate::error::Result<()> {
        self.attester.reload(tls)
    }

    /// [`Self::cluster`], with the expiry of the caller's certificate.
    pub fn cluster_for(&self, caller_cert: &[u8]) -> ClusterView {
        ClusterView {
            caller_certificate: Expiry::now(caller_cert),
            ..self.cluster()
        }
    }

    pub fn cluster(&self) -> ClusterView {
        let m = self.raft.metrics().borrow().clone();
        let state = self.state.try_read();
        let installing_snapshot = state.is_none();
        let members: Vec<MemberView> = (state.iter())
            .flat_map(|state| state.ledger.gov().nodes())
            .filter(|(_, n)| !n.removed)
            .map(|(id, n)| MemberView {
                id: *id,
                org: n.org.clone(),
                api_addr: n.api_addr.clone(),
                raft_addr: n.raft_addr.clone(),
            })
            .collect();
        drop(state);
        ClusterView {
            consortium: self.genesis.consortium.clone(),
            genesis_hash: self.genesis.hash.clone(),
            node_id: self.id,
            state: format!("{:?}", m.state),
            leader: m.current_leader,
            term: m.current_term,
            voters: m.membership_config.membership().voter_ids().collect(),
            learners: m.membership_config.membership().learner_ids().collect(),
            members,
            installing_snapshot,
            last_log_index: m.last_log_index,
            commit_index: self.commit_index.get(),
            applied_index: m.last_applied.map(|l| l.index),
            snapshot_index: m.snapshot.map(|l| l.index),
            purged_index: m.purged.map(|l| l.index),
            height: (self.state.applied_height()).load(std::sync::atomic::Ordering::Acquire),
            replicas: self.watch.status(),
            certificate: Expiry::now(&self.attester.cert()),
            caller_certificate: None,
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
        if let Some(why) = self.watch.clock_off() {
            // Confirming leadership here would renew the followers' leases
            // of a leader that is stepping down.
            reasons.push(why);
        } else if m.current_leader.is_none() {
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
