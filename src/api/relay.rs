//! Follower → leader bundles: while another node leads, the single-transfer
//! writes of this node's callers are sealed together, with one signature,
//! and forwarded as one [`Bundle`] that the leader puts into its next group
//! commit as it is.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::batcher::{Batcher, Queued};
use super::group::{GroupError, GroupReply};
use super::service::write::now_ms;
use crate::codec;
use crate::config::NodeId;
use crate::identity::attest::{Attested, Attester};
use crate::ledger::{Bundle, Grouped, Rejection, Transfer};
use crate::raft::network::Peers;
use crate::raft::Raft;

/// Path of bundle forwarding on the peer listener.
pub const BUNDLE_PATH: &str = "/peer/v1/bundle";

/// The leader's answer to a forwarded bundle (binary peer encoding).
#[derive(Debug, Serialize, Deserialize)]
pub enum BundleAnswer {
    /// Applied: each transfer's result, in order, and the entry's index.
    Done {
        log_index: u64,
        results: Vec<Result<Transfer, Rejection>>,
    },
    /// The node asked is not the leader, and proposed nothing.
    NotLeader,
    /// The bundle may have been proposed, and its fate is not known yet.
    OutcomeUnknown,
}

/// What a follower needs to relay bundles.
struct Route {
    raft: Raft,
    me: NodeId,
    peers: Peers,
    attester: Arc<Attester>,
    timeout: Duration,
}

/// The handle this node's callers' transfers queue on while another node
/// leads.
pub struct Relay {
    batcher: Batcher<Grouped, GroupReply>,
}

impl Relay {
    pub fn start(
        raft: Raft,
        me: NodeId,
        peers: Peers,
        attester: Arc<Attester>,
        timeout: Duration,
        (bundle_max, in_flight_max, queue_max): (usize, usize, usize),
    ) -> Self {
        let route = Arc::new(Route {
            raft,
            me,
            peers,
            attester,
            timeout,
        });
        let batcher = Batcher::start(
            bundle_max,
            in_flight_max,
            queue_max,
            |_| 1,
            move |batch| relay(route.clone(), batch),
        );
        Self { batcher }
    }

    /// Forwards one caller's transfer to the leader and waits for its result.
    pub async fn write(&self, item: Grouped) -> GroupReply {
        self.batcher
            .submit(item)
            .await
            .unwrap_or(Err(GroupError::MaybeProposed))
    }
}

async fn relay(route: Arc<Route>, batch: Vec<Queued<Grouped, GroupReply>>) {
    let (items, replies): (Vec<Grouped>, Vec<_>) =
        batch.into_iter().map(|q| (q.request, q.reply)).unzip();
    let answer = send(&route, items).await;
    match answer {
        Ok(BundleAnswer::Done { log_index, results }) if results.len() == replies.len() => {
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(Ok((vec![result], log_index)));
            }
        }
        failed => {
            let error = match failed {
                Ok(BundleAnswer::NotLeader) | Err(GroupError::NotLeader) => GroupError::NotLeader,
                Err(GroupError::Refused) => GroupError::Refused,
                Ok(_) | Err(GroupError::MaybeProposed) => GroupError::MaybeProposed,
            };
            for reply in replies {
                let _ = reply.send(Err(error));
            }
        }
    }
}

/// Seals `items` and sends them to the leader as one bundle.
async fn send(route: &Route, items: Vec<Grouped>) -> Result<BundleAnswer, GroupError> {
    let leader = route.raft.metrics().borrow().current_leader;
    let Some(peer) = leader
        .filter(|l| *l != route.me)
        .and_then(|l| route.peers.get(l))
    else {
        return Err(GroupError::NotLeader);
    };
    let leader = leader.expect("a peer was found for it");
    let evidence = route.attester.seal(&Attested::Bundle(&items), now_ms());
    let bundle = Bundle { evidence, items };
    let sent = peer
        .http
        .post(peer.url(BUNDLE_PATH))
        .header("content-type", codec::CONTENT_TYPE)
        .timeout(route.timeout)
        .body(codec::encode(&bundle))
        .send()
        .await;
    let resp = match sent {
        Ok(r) => r,
        Err(e) if e.is_connect() => return Err(GroupError::NotLeader),
        Err(_) => return Err(GroupError::MaybeProposed),
    };
    if route.peers.check_response(leader, &resp).is_err() {
        return Err(GroupError::MaybeProposed);
    }
    if resp.status() == reqwest::StatusCode::TOO_MANY_REQUESTS {
        return Err(GroupError::Refused);
    }
    if !resp.status().is_success() {
        tracing::warn!(status = %resp.status(), leader, "the leader refused a bundle");
        return Err(GroupError::MaybeProposed);
    }
    let bytes = resp.bytes().await.map_err(|_| GroupError::MaybeProposed)?;
    codec::decode(&bytes).map_err(|_| GroupError::MaybeProposed)
}
