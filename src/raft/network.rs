//! Raft RPCs to peers: the binary encoding of [`crate::codec`] over HTTPS
//! with mutual TLS on `raft_addr`.
//!
//! One pooled [`reqwest::Client`] per node keeps connections alive, so steady
//! state makes no TLS handshakes. The peer side is in `crate::api::peer`.

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use openraft::BasicNode;

use super::incarnation::{Incarnations, INCARNATION_HEADER};
use crate::identity::Revoked;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::TypeConfig;
use crate::codec;

/// Paths of the Raft RPCs on the peer listener.
pub const APPEND_PATH: &str = "/raft/append";
pub const VOTE_PATH: &str = "/raft/vote";
pub const SNAPSHOT_PATH: &str = "/raft/snapshot";

/// Header carrying the SHA-256 of the sender's genesis file: nodes built
/// from different genesis files would apply the same log differently.
pub const GENESIS_HEADER: &str = "alliance-genesis";

/// One pooled HTTPS client per peer, each verifying that it reaches exactly
/// that node (see `Trust::peer_client_config`), made when first needed: the
/// registry's nodes change by vote.
/// Each request carries this node's incarnation, each response must carry
/// the peer's recorded one ([`Incarnations`]).
#[derive(Clone)]
pub struct Peers {
    peers: Arc<RwLock<BTreeMap<u64, Peer>>>,
    dialer: Arc<dyn Dialer>,
    pub incarnations: Incarnations,
    /// Certificates revoked by governance: a peer presenting one is not
    /// listened to, also on a connection opened before.
    revoked: Revoked,
    /// Snapshots this node finished sending to a peer (for `/metrics`).
    pub snapshots_sent: Arc<AtomicU64>,
}

/// How this node reaches one peer.
#[derive(Clone)]
pub struct Peer {
    pub http: reqwest::Client,
    /// `https://host:port` this node dials: the peer's genesis `raft_addr`,
    /// or the node config's `peer_dial` override for it.
    pub base: String,
}

impl Peer {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

/// How this node learns its peers: the registry's nodes of the moment, and
/// a client for each.
pub trait Dialer: Send + Sync {
    /// The other nodes, by id.
    fn ids(&self) -> Vec<u64>;
    /// A client for node `id`, if it is a node.
    fn dial(&self, id: u64) -> Option<Peer>;
}

impl Peers {
    pub fn new(dialer: Arc<dyn Dialer>, incarnations: Incarnations, revoked: Revoked) -> Self {
        Self {
            peers: Arc::default(),
            dialer,
            incarnations,
            revoked,
            snapshots_sent: Arc::default(),
        }
    }

    /// The client for node `id`, made on first use.
    pub fn get(&self, id: u64) -> Option<Peer> {
        if let Some(peer) = self
            .peers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
        {
            return Some(peer.clone());
        }
        let peer = self.dialer.dial(id)?;
        let mut peers = self.peers.write().unwrap_or_else(|p| p.into_inner());
        Some(peers.entry(id).or_insert(peer).clone())
    }

    /// The other nodes of the registry now.
    pub fn ids(&self) -> Vec<u64> {
        self.dialer.ids()
    }

    /// Accepts a response only from the incarnation of `peer` on record,
    /// over a connection whose certificate is not revoked.
    pub fn check_response(&self, peer: u64, resp: &reqwest::Response) -> Result<(), String> {
        let cert = (resp.extensions().get::<reqwest::tls::TlsInfo>())
            .and_then(|tls| tls.peer_certificate());
        if cert.is_some_and(|der| self.revoked.contains_der(der)) {
            return Err(format!("node {peer}'s certificate is revoked"));
        }
        let inc = resp
            .headers()
            .get(INCARNATION_HEADER)
            .and_then(|h| h.to_str().ok());
        self.incarnations.check(peer, inc)
    }
}

/// Makes one [`PeerClient`] per target.
#[derive(Clone)]
pub struct PeerNetwork {
    peers: Peers,
}

impl PeerNetwork {
    pub fn new(peers: Peers) -> Self {
        Self { peers }
    }
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerClient;

    /// Dials the address this node has for `target` (see [`Peer::base`]);
    /// membership records the genesis address, which every node shares.
    async fn new_client(&mut self, target: u64, _node: &BasicNode) -> PeerClient {
        PeerClient {
            peers: self.peers.clone(),
            peer: self.peers.get(target),
            target,
        }
    }
}

pub struct PeerClient {
    peers: Peers,
    /// None for a target outside genesis: every call is then unreachable.
    peer: Option<Peer>,
    target: u64,
}

impl PeerClient {
    async fn call<Req, Resp, E>(
        &self,
        path: &str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<u64, BasicNode, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let Some(peer) = &self.peer else {
            let e = std::io::Error::other(format!("node {} is not in genesis", self.target));
            return Err(RPCError::Unreachable(Unreachable::new(&e)));
        };
        let sent = peer
            .http
            .post(peer.url(path))
            .timeout(option.hard_ttl())
            .header(reqwest::header::CONTENT_TYPE, codec::CONTENT_TYPE)
            .body(codec::encode(req))
            .send()
            .await;
        let resp = match sent {
            Ok(r) => r,
            Err(e) if e.is_connect() => return Err(RPCError::Unreachable(Unreachable::new(&e))),
            Err(e) => return Err(RPCError::Network(NetworkError::new(&e))),
        };
        if let Err(e) = self.peers.check_response(self.target, &resp) {
            // A vote or acknowledgement from a node that lost its storage
            // must not count: treat it as unreachable.
            return Err(RPCError::Unreachable(Unreachable::new(
                &std::io::Error::other(e),
            )));
        }
        if !resp.status().is_success() {
            let err =
                std::io::Error::other(format!("peer {} answered {}", self.target, resp.status()));
            return Err(RPCError::Network(NetworkError::new(&err)));
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let result: Result<Resp, E> =
            codec::decode(&body).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(openraft::error::RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.call(APPEND_PATH, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        let last_chunk = rpc.done;
        let sent = self.call(SNAPSHOT_PATH, &rpc, &option).await;
        if last_chunk && sent.is_ok() {
            self.peers.snapshots_sent.fetch_add(1, Ordering::Relaxed);
        }
        sent
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.call(VOTE_PATH, &rpc, &option).await
    }
}
