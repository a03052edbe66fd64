//! Follower → leader: a request forwarded over the peer channel, and the
//! leader's answer as a typed signal.
//!
//! The leader answers [`PeerAnswer::Done`] with its rendered answer, which
//! the follower relays as it is, or a control signal that tells the
//! follower's retry loop what happened.

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::{Attempt, Op, Outcome, Service};
use crate::api::body::check_limits;
use crate::api::views::{Answer, Rendered};
use crate::config::NodeId;
use crate::identity::{ForwardedPrincipal, Principal};

/// Path of request forwarding on the peer listener.
pub const EXECUTE_PATH: &str = "/peer/v1/execute";

/// A forwarded request, as the peer channel carries it.
#[derive(Serialize, Deserialize)]
pub struct Forwarded {
    pub principal: ForwardedPrincipal,
    pub op: Op,
}

/// The leader's answer to a forwarded request.
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerAnswer {
    /// The finished answer, to relay as it is.
    Done(Rendered),
    /// The node asked is not the leader, and proposed nothing: ask again.
    NotLeader,
    /// A write may have been proposed, and its fate is not known yet.
    OutcomeUnknown,
}

impl Service {
    /// Runs a forwarded `op` here if this node is the leader; a follower
    /// says so.
    pub async fn execute_forwarded(&self, principal: &Principal, op: &Op) -> PeerAnswer {
        let checked = match op {
            Op::Write(command, _) => check_limits(command, &self.limits),
            Op::Read(read) => read.check_limits(self.limits.page_items_max),
        };
        if let Err(e) = checked {
            return PeerAnswer::Done(e.render());
        }
        let deadline = Instant::now() + self.timeout();
        match self.execute_local(principal, op, deadline).await {
            Ok(Ok(answer)) => PeerAnswer::Done(answer.render()),
            Ok(Err(e)) => PeerAnswer::Done(e.render()),
            Err(Attempt::RetryMaybeProposed) if op.is_write() => PeerAnswer::OutcomeUnknown,
            Err(_) => PeerAnswer::NotLeader,
        }
    }

    pub(super) async fn forward(
        &self,
        leader: NodeId,
        principal: &Principal,
        op: &Op,
        deadline: Instant,
    ) -> Result<Outcome, Attempt> {
        let Some(peer) = self.peers.get(leader) else {
            return Err(Attempt::Retry);
        };
        let body = Forwarded {
            principal: principal.forward(),
            op: op.clone(),
        };
        let sent = peer
            .http
            .post(peer.url(EXECUTE_PATH))
            .timeout(deadline.saturating_duration_since(Instant::now()))
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
}
