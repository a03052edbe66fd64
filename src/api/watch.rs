//! Replicas watch each other: every node regularly asks each peer for its
//! chain head over the peer channel and compares the peer's block hash with
//! its own block at that height. Same log, same blocks: a difference means
//! one replica's stored state was changed outside Raft (tampering, a disk
//! fault, a bug). A node that disagrees with more peers than agree with it
//! (counting itself) is the odd one out: it logs at error level, reports it
//! in `GET /v1/cluster`, and refuses reads until an operator restores it
//! (e.g. from a healthy replica's snapshot) and restarts it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::service::Service;
use crate::ledger::chain::{self, Hash};
use crate::ledger::BlockHeader;

/// Path of the head exchange on the peer listener.
pub const HEAD_PATH: &str = "/peer/v1/head";

/// A chain head as peers exchange it.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Head {
    pub height: u64,
    #[serde(with = "hex32")]
    pub hash: Hash,
}

/// What this node last learned from each peer.
#[derive(Default)]
pub struct Watch {
    /// Peer → (their head, whether our block at that height agrees).
    peers: BTreeMap<u64, (Head, Option<bool>)>,
    /// Set once this node finds itself in the minority; never cleared
    /// without a restart.
    diverged: Option<String>,
}

impl Watch {
    pub fn diverged(&self) -> Option<&str> {
        self.diverged.as_deref()
    }

    pub fn status(&self) -> Value {
        let peers: Vec<Value> = self
            .peers
            .iter()
            .map(|(id, (head, agrees))| {
                json!({"node": id, "height": head.height, "hash": chain::to_hex(&head.hash), "agrees": agrees})
            })
            .collect();
        json!({"diverged": self.diverged, "peers": peers})
    }
}

impl Service {
    /// This node's head.
    pub fn head(&self) -> Head {
        let head = self.state.read().ledger.head().clone();
        Head {
            height: head.height,
            hash: head.hash(),
        }
    }

    /// Our block hash at `height`, if we have that block.
    fn hash_at(&self, height: u64) -> Option<Hash> {
        let state = self.state.read();
        if height > state.ledger.height() {
            return None;
        }
        if height == 0 {
            return Some(BlockHeader::genesis(self.genesis.hash_bytes()).hash());
        }
        state.block(height).ok().flatten().map(|b| b.hash())
    }

    /// Compares one peer's head with our chain and updates the verdict.
    fn compare(&self, peer: u64, head: Head, watch: &Mutex<Watch>) {
        let agrees = self.hash_at(head.height).map(|ours| ours == head.hash);
        let mut w = watch.lock().unwrap_or_else(|p| p.into_inner());
        w.peers.insert(peer, (head, agrees));
        let disagree = w.peers.values().filter(|(_, a)| *a == Some(false)).count();
        let agree = 1 + w.peers.values().filter(|(_, a)| *a == Some(true)).count();
        if agrees == Some(false) {
            tracing::error!(
                peer,
                height = head.height,
                "replica heads differ at the same height"
            );
        }
        if disagree > 0 && disagree >= agree && w.diverged.is_none() {
            let why = format!(
                "this node's chain differs from {disagree} of {} peers at the same height (first at {}): its stored state \
                 was changed outside Raft; it serves no reads until restored and restarted",
                w.peers.len(),
                head.height
            );
            tracing::error!("DIVERGED: {why}");
            w.diverged = Some(why);
        }
    }
}

/// Asks every peer for its head every `every`, for as long as the node runs.
pub fn spawn(service: Arc<Service>, watch: Arc<Mutex<Watch>>, every: Duration) {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(every);
        loop {
            interval.tick().await;
            for node in service.genesis.nodes.iter().filter(|n| n.id != service.id) {
                let Some(peer) = service.peers.get(node.id) else {
                    continue;
                };
                let sent = peer.http.post(peer.url(HEAD_PATH)).timeout(every);
                let Ok(resp) = sent.send().await else {
                    continue;
                };
                if service.peers.check_response(node.id, &resp).is_err()
                    || !resp.status().is_success()
                {
                    continue;
                }
                if let Ok(head) = resp.json::<Head>().await {
                    service.compare(node.id, head, &watch);
                }
            }
        }
    });
}

mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(h: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(h))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        crate::ledger::chain::from_hex(&s)
            .ok_or_else(|| serde::de::Error::custom("expected 64 hex digits"))
    }
}
