//! A node certificate past its expiry, between registered nodes only.
//!
//! Consensus must not stop because nobody renewed a certificate in time:
//! the vote that fixes things needs the nodes to keep talking. So on the
//! peer channel (both ways), a `node` certificate that has expired is still
//! accepted when its public key is the one genesis registers for that node
//! (`key_sha256`) and its chain was valid when the certificate expired:
//! nothing but the passing of time is wrong with it. The node and its peers
//! alarm in their logs every minute ([`crate::api::service`]), and the API
//! listener, clients and attestations stay strict.

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::{CertificateError, Error as TlsError};
use sha2::{Digest, Sha256};

use crate::config::NodeId;
use crate::ledger::gov::NodeRecord;
use crate::ledger::OrgName;

/// The nodes of the consortium (not removed ones), each with its
/// organization, address and, where registered, the SHA-256 of its public
/// key.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RegisteredNodes(Vec<(NodeId, NodeRecord)>);

/// The registered nodes of the moment, replaced whole when governance
/// changes them: the registry's (what replicas check seals against), and
/// the peers this node talks to, which also keep a removed node until Raft
/// has removed it.
#[derive(Clone, Debug, Default)]
pub struct SharedNodes(Arc<RwLock<NodesNow>>);

#[derive(Debug, Default)]
struct NodesNow {
    /// Every node the registry ever had.
    all: Vec<(NodeId, NodeRecord)>,
    /// The nodes in Raft's membership, as this node last saw it.
    in_raft: BTreeSet<NodeId>,
    registry: Arc<RegisteredNodes>,
    peers: Arc<RegisteredNodes>,
}

impl NodesNow {
    fn derive(&mut self) {
        let registry = RegisteredNodes::new(self.all.iter().map(|(id, n)| (id, n)));
        let lingering = |(id, n): &&(NodeId, NodeRecord)| !n.removed || self.in_raft.contains(id);
        let peers = RegisteredNodes(self.all.iter().filter(lingering).cloned().collect());
        if *self.registry != registry {
            self.registry = Arc::new(registry);
        }
        if *self.peers != peers {
            self.peers = Arc::new(peers);
        }
    }
}

impl SharedNodes {
    pub fn new(all: Vec<(NodeId, NodeRecord)>) -> Self {
        let shared = Self::default();
        shared.set(all);
        shared
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, NodesNow> {
        self.0.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The registry's nodes (not removed ones).
    pub fn now(&self) -> Arc<RegisteredNodes> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .registry
            .clone()
    }

    /// The nodes this node talks to: the registry's, and removed ones still
    /// in Raft's membership.
    pub fn peers(&self) -> Arc<RegisteredNodes> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .peers
            .clone()
    }

    /// Takes every node the registry ever had.
    pub fn set(&self, all: Vec<(NodeId, NodeRecord)>) {
        let mut now = self.write();
        if now.all != all {
            now.all = all;
            now.derive();
        }
    }

    /// Takes the nodes of Raft's membership.
    pub fn set_in_raft(&self, ids: BTreeSet<NodeId>) {
        let mut now = self.write();
        if now.in_raft != ids {
            now.in_raft = ids;
            now.derive();
        }
    }
}

impl RegisteredNodes {
    pub fn new<'a>(nodes: impl IntoIterator<Item = (&'a NodeId, &'a NodeRecord)>) -> Self {
        Self(
            (nodes.into_iter())
                .filter(|(_, n)| !n.removed)
                .map(|(id, n)| (*id, n.clone()))
                .collect(),
        )
    }

    pub fn get(&self, id: NodeId) -> Option<&NodeRecord> {
        self.0
            .iter()
            .find(|(n, _)| *n == id)
            .map(|(_, record)| record)
    }

    pub fn ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.0.iter().map(|(id, _)| *id)
    }

    /// The organization of node `id`.
    pub fn org_of(&self, id: NodeId) -> Option<&OrgName> {
        self.get(id).map(|n| &n.org)
    }

    /// The registered key's SHA-256 of node `id`, if it has one.
    pub fn key_of(&self, id: NodeId) -> Option<[u8; 32]> {
        let key = self.get(id)?.key_sha256.as_deref()?;
        let mut out = [0; 32];
        hex::decode_to_slice(key, &mut out).ok().map(|()| out)
    }

    /// Which node `leaf` claims to be, if it is an expired-or-not `node`
    /// certificate of that node's organization whose key is the one
    /// registered for it.
    pub fn registered_node(&self, leaf: &CertificateDer<'_>) -> Option<NodeId> {
        let subject = super::Subject::parse(leaf).ok()?;
        let id: NodeId = subject.name.parse().ok()?;
        let org = self.org_of(id)?;
        let key = self.key_of(id)?;
        (subject.role == "node" && subject.org == org.as_str() && key_sha256(leaf)? == key)
            .then_some(id)
    }
}

/// The registered key (SHA-256 of the public key, hex) of a node
/// certificate (PEM) for node `id` of `org`; why it is not one otherwise.
pub fn node_cert_key(pem: &str, org: &OrgName, id: NodeId) -> Result<String, String> {
    let der = super::first_cert_der(pem.as_bytes()).ok_or("cert is not a PEM certificate")?;
    let subject = super::Subject::parse(&CertificateDer::from(der.as_slice()))
        .map_err(|e| format!("cert: {e}"))?;
    if subject.org != org.as_str() || subject.role != "node" || subject.name != id.to_string() {
        return Err(format!(
            "cert is not node {id}'s certificate of {org} (its subject must be O={org}, \
             OU=node, CN={id}: scripts/issue-cert.sh --org {org} --role node --name {id})"
        ));
    }
    key_sha256(&der)
        .map(hex::encode)
        .ok_or_else(|| "cert has no public key".into())
}

/// SHA-256 of a certificate's SubjectPublicKeyInfo (DER), as
/// `new-genesis.sh --node-cert` registers it.
pub fn key_sha256(der: &[u8]) -> Option<[u8; 32]> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    Some(Sha256::digest(cert.public_key().raw).into())
}

/// Whether a verifier refused a certificate only because it (or a
/// certificate of its chain) has expired.
pub fn is_expiry(e: &TlsError) -> bool {
    matches!(
        e,
        TlsError::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. }
        )
    )
}

/// Whether a verifier refused a certificate because it is not valid yet.
pub fn is_not_yet_valid(e: &TlsError) -> bool {
    matches!(
        e,
        TlsError::InvalidCertificate(
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. }
        )
    )
}

/// The moments at which to check the chain of an expired `leaf` instead of
/// now, latest first: when the leaf expired and, earlier, when each CA
/// `cas` expired, and never later than `now`. A chain valid at one of them
/// lapsed by time alone.
pub fn last_valid_moments(
    leaf: &CertificateDer<'_>,
    cas: &[CertificateDer<'_>],
    now: UnixTime,
) -> Vec<UnixTime> {
    let leaf_end = super::not_after_unix(leaf);
    let mut moments: Vec<i64> = leaf_end.into_iter().collect();
    moments.extend(
        cas.iter()
            .filter_map(|ca| super::not_after_unix(ca))
            .filter(|t| leaf_end.is_some_and(|end| *t < end)),
    );
    moments.sort_unstable_by(|a, b| b.cmp(a));
    moments
        .into_iter()
        .filter(|t| *t >= 0 && (*t as u64) <= now.as_secs())
        .map(|t| UnixTime::since_unix_epoch(std::time::Duration::from_secs(t as u64)))
        .collect()
}
