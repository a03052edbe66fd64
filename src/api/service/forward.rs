//! Follower → leader over the peer channel: a write this node sealed for its
//! caller, a bundle of single transfers ([`crate::api::relay`]), or a
//! request for a read index; and the leader's answers as typed signals.
//!
//! The leader accepts a forwarded caller of the forwarding node's own
//! organization, or one whose own signature it checks: a node vouches for
//! its own callers, never for another member's (and every replica checks
//! the seal again in apply).

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::{Attempt, Outcome, Service};
use crate::api::body::{check_limits, check_memo, decode_signed, Shape};
use crate::api::error::ApiError;
use crate::api::group::{GroupError, Unit};
use crate::api::relay::BundleAnswer;
use crate::api::views::{Answer, Rendered};
use crate::config::NodeId;
use crate::identity::attest::{self, Attested};
use crate::identity::{ForwardedPrincipal, NodePrincipal, Principal};
use crate::ledger::{Bundle, ClientSeal, Command, Evidence};

/// Path of write forwarding on the peer listener.
pub const EXECUTE_PATH: &str = "/peer/v1/execute";
/// Header of a forward naming its caller's organization, whose budget on
/// the leader its body counts against.
pub const FORWARDED_ORG_HEADER: &str = "alliance-forwarded-org";
/// Path of read-index requests on the peer listener.
pub const READ_INDEX_PATH: &str = "/peer/v1/read-index";

/// A forwarded write, as the peer channel carries it.
#[derive(Serialize, Deserialize)]
pub struct Forwarded {
    pub principal: ForwardedPrincipal,
    pub command: Command,
    pub shape: Shape,
    /// The forwarding node's seal over the caller and the command, or the
    /// caller's own.
    pub evidence: Evidence,
}

/// The leader's answer to a forwarded write.
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerAnswer {
    /// The finished answer, to relay as it is.
    Done(Rendered),
    /// The node asked is not the leader, and proposed nothing: ask again.
    NotLeader,
    /// A write may have been proposed, and its fate is not known yet.
    OutcomeUnknown,
}

/// The leader's answer to a read-index request.
#[derive(Debug, Serialize, Deserialize)]
pub enum ReadIndex {
    /// A quorum confirmed this node's leadership, and everything committed
    /// before the request is at or below this log index.
    At(u64),
    /// The node asked is not (or no longer) the leader.
    NotLeader,
}

/// A seal past the sizes replicas accept.
fn oversized() -> ApiError {
    ApiError::Forbidden("a seal's certificate, signature or signed request is too large")
}

/// Whether `seal` is the caller's signature over exactly `command`.
fn signs(seal: &ClientSeal, command: &Command) -> bool {
    decode_signed(&seal.method, &seal.path, &seal.body).as_ref() == Some(command)
}

/// Why a peer may not forward this: it vouches for its own callers only.
fn foreign(node: &NodePrincipal) -> ApiError {
    ApiError::SignOrUseOwnNode(node.org.to_string())
}

impl Service {
    /// Runs a write forwarded by `node` here if this node is the leader; a
    /// follower says so.
    pub async fn execute_forwarded(&self, node: &NodePrincipal, fwd: Forwarded) -> PeerAnswer {
        if !attest::fits(&fwd.evidence) {
            return PeerAnswer::Done(oversized().render());
        }
        let principal = match &fwd.evidence {
            Evidence::Client(seal) if seal.body.len() > self.limits.body_bytes_max => {
                Err(ApiError::BodyTooLarge(self.limits.body_bytes_max))
            }
            Evidence::Client(seal) if !signs(seal, &fwd.command) => {
                Err(ApiError::InvalidSignature(
                    "the forwarded command is not the one the caller signed".into(),
                ))
            }
            Evidence::Client(seal) => self.forwarded_signer(seal, &fwd.principal),
            _ => Principal::forwarded(node, fwd.principal).ok_or_else(|| foreign(node)),
        };
        let principal = match principal {
            Ok(p) => p,
            Err(e) => return PeerAnswer::Done(e.render()),
        };
        if let Err(e) = check_limits(&fwd.command, &self.limits) {
            return PeerAnswer::Done(e.render());
        }
        let deadline = Instant::now() + self.timeout();
        let evidence = Some(fwd.evidence);
        match self
            .write(&principal, &fwd.command, fwd.shape, evidence, deadline)
            .await
        {
            Ok(Ok(answer)) => PeerAnswer::Done(answer.render()),
            Ok(Err(e)) => PeerAnswer::Done(e.render()),
            Err(Attempt::RetryMaybeProposed) => PeerAnswer::OutcomeUnknown,
            Err(Attempt::Retry) => PeerAnswer::NotLeader,
            Err(Attempt::RetryOverloaded) => PeerAnswer::Done(ApiError::Overloaded.render()),
        }
    }

    /// Puts a bundle that `node` forwarded into this leader's next group.
    /// `Err` if `node` may not send it (it is the edge's check; apply
    /// checks the seal itself).
    pub async fn accept_bundle(
        &self,
        node: &NodePrincipal,
        bundle: Bundle,
    ) -> Result<BundleAnswer, ApiError> {
        let sealed_by_sender = matches!(&bundle.evidence, Evidence::Node(s) if s.node == node.id);
        if !sealed_by_sender || bundle.items.iter().any(|g| g.actor.org != node.org) {
            return Err(foreign(node));
        }
        if !attest::fits(&bundle.evidence) {
            return Err(oversized());
        }
        if bundle.items.is_empty() || bundle.items.len() > self.limits.group_commit_max {
            return Err(ApiError::Forbidden(
                "a bundle holds 1..=group_commit_max transfers",
            ));
        }
        for g in &bundle.items {
            check_memo(g.transfer.memo.as_ref(), &self.limits)?;
        }
        let leads = self.raft.metrics().borrow().current_leader == Some(self.id);
        if !leads || self.watch.clock_off().is_some() {
            return Ok(BundleAnswer::NotLeader);
        }
        let Ok(_permit) = self.in_flight.try_acquire() else {
            return Err(ApiError::Overloaded);
        };
        let written = self.group.write(Unit::Forwarded(bundle));
        Ok(match tokio::time::timeout(self.timeout(), written).await {
            Ok(Ok((results, log_index))) => BundleAnswer::Done { log_index, results },
            Ok(Err(GroupError::NotLeader | GroupError::Refused)) => BundleAnswer::NotLeader,
            Ok(Err(GroupError::MaybeProposed)) | Err(_) => BundleAnswer::OutcomeUnknown,
        })
    }

    /// A read index, if this node leads and a quorum confirms it.
    pub async fn read_index(&self) -> ReadIndex {
        let deadline = Instant::now() + self.timeout();
        match self.linearize(deadline).await {
            Ok(index) => ReadIndex::At(index),
            Err(_) => ReadIndex::NotLeader,
        }
    }

    /// Forwards a write to `leader`, sealed by this node for `principal`.
    pub(super) async fn forward(
        &self,
        leader: NodeId,
        principal: &Principal,
        command: &Command,
        shape: Shape,
        signed: &Option<ClientSeal>,
        deadline: Instant,
    ) -> Result<Outcome, Attempt> {
        let evidence = match (signed, command.single_transfer()) {
            (Some(seal), _) => Evidence::Client(seal.clone()),
            (None, Some(one)) => {
                return self
                    .write_grouped(principal, command, shape, one, false, deadline)
                    .await;
            }
            (None, None) => {
                let actor = principal.actor();
                let what = Attested::Command {
                    actor: &actor,
                    command,
                };
                self.attester.seal(&what, super::write::now_ms())
            }
        };
        let Some(peer) = self.peers.get(leader) else {
            return Err(Attempt::Retry);
        };
        let body = Forwarded {
            principal: principal.forward(),
            command: command.clone(),
            shape,
            evidence,
        };
        let sent = peer
            .http
            .post(peer.url(EXECUTE_PATH))
            .timeout(deadline.saturating_duration_since(Instant::now()))
            .header(FORWARDED_ORG_HEADER, principal.org().as_str())
            .json(&body)
            .send()
            .await;
        let resp = match sent {
            Ok(r) => r,
            Err(e) if e.is_connect() => return Err(Attempt::Retry),
            Err(_) => return Err(Attempt::RetryMaybeProposed),
        };
        if self.peers.check_response(leader, &resp).is_err() {
            return Err(Attempt::RetryMaybeProposed);
        }
        if !resp.status().is_success() {
            // The leader's peer listener refused the forward itself (e.g. a
            // body past its limit): relay its error as it is.
            let status = resp.status().as_u16();
            let body = resp.json().await.unwrap_or(serde_json::Value::Null);
            return Ok(Ok(Answer::Relayed(Rendered::with(status, &body))));
        }
        match resp.json().await {
            Ok(PeerAnswer::Done(rendered)) => Ok(Ok(Answer::Relayed(rendered))),
            Ok(PeerAnswer::NotLeader) => Err(Attempt::Retry),
            Ok(PeerAnswer::OutcomeUnknown) | Err(_) => Err(Attempt::RetryMaybeProposed),
        }
    }

    /// Asks `leader` for a read index.
    pub(super) async fn ask_read_index(
        &self,
        leader: NodeId,
        deadline: Instant,
    ) -> Result<u64, Attempt> {
        let peer = self.peers.get(leader).ok_or(Attempt::Retry)?;
        let resp = peer
            .http
            .post(peer.url(READ_INDEX_PATH))
            .timeout(deadline.saturating_duration_since(Instant::now()))
            .send()
            .await
            .map_err(|_| Attempt::Retry)?;
        if self.peers.check_response(leader, &resp).is_err() || !resp.status().is_success() {
            return Err(Attempt::Retry);
        }
        match resp.json().await {
            Ok(ReadIndex::At(index)) => Ok(index),
            Ok(ReadIndex::NotLeader) | Err(_) => Err(Attempt::Retry),
        }
    }
}
