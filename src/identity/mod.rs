//! Who is calling, decided only from the verified TLS session.
//!
//! Every organization has its own CA (docs/design.md, "Trust model"); genesis lists them. A leaf
//! is accepted in the handshake if any member CA signed it (rustls/webpki
//! checks chain, validity and key usage). After the handshake, [`Principal`]
//! is built from the leaf: the organization is the one its `O` names, and
//! only that organization's own CAs are tried for the leaf, so one
//! organization's CA cannot mint identities for another (nor, by listing a
//! copy of another's CA, make its certificates ambiguous). The role is `OU`.
//!
//! A [`Principal`] can only be made here: handlers take one as proof that the
//! caller was verified, and never parse a certificate or read a header.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use serde::{Deserialize, Serialize};

use crate::config::{read_bounded, Genesis, NodeId, TlsFiles};
use crate::error::{Error, Result};
use crate::ledger::gov::{OrgStatus, ProposalState};
use crate::ledger::{Actor, CertRef, Gov, OrgName, Role, Serial};
use lapsed::{RegisteredNodes, SharedNodes};
use refusals::RefusalLog;

pub mod attest;
pub mod lapsed;
pub mod own;
pub mod refusals;
pub mod request;
pub mod unknown_issuer;

/// Largest PEM file read (certificate chains, keys).
const PEM_BYTES_MAX: u64 = 1024 * 1024;

/// The one crypto provider of the whole binary.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The consortium's organizations and their CAs, as TLS trust: genesis's,
/// then the applied governance state's ([`Trust::govern`]).
pub struct Trust {
    /// The member CAs now; replaced whole when governance changes them.
    view: Arc<RwLock<Arc<View>>>,
    /// The nodes, their organizations and registered keys, for checking
    /// peer certificates.
    nodes: SharedNodes,
    /// Revoked certificates as this node's applied state has them: refused
    /// in the handshake and on every request.
    revoked: Revoked,
    /// A node added by vote: the members and nodes its join bundle lists,
    /// which authenticate peers until its applied state reaches the vote.
    joined: Joining,
}

/// The join bundle's view of the consortium, while a node added by vote
/// catches up. Only peer authentication uses it; what apply checks stays
/// the applied state's, the same on every replica.
struct Joined {
    view: Arc<View>,
    nodes: Arc<RegisteredNodes>,
    /// The proposal that added this node: once the applied state has it
    /// closed, the applied state is at least as new as the bundle.
    proposal: u64,
}

type Joining = Arc<RwLock<Option<Arc<Joined>>>>;

/// What peer authentication trusts: the applied state's members and nodes,
/// or a joining node's bundle's until it catches up.
#[derive(Clone)]
struct Peering {
    view: Arc<RwLock<Arc<View>>>,
    nodes: SharedNodes,
    joined: Joining,
}

impl std::fmt::Debug for Peering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Peering")
    }
}

impl Peering {
    fn joined(&self) -> Option<Arc<Joined>> {
        self.joined
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn view(&self) -> Arc<View> {
        match self.joined() {
            Some(j) => j.view.clone(),
            None => self.view.read().unwrap_or_else(|p| p.into_inner()).clone(),
        }
    }

    /// The nodes peers may be: the registry's, and removed ones until Raft
    /// has removed them.
    fn peers(&self) -> Arc<RegisteredNodes> {
        match self.joined() {
            Some(j) => j.nodes.clone(),
            None => self.nodes.peers(),
        }
    }
}

/// Numbers every [`View`] built, so that what was checked against one view
/// is not taken for what another would say.
static VIEWS_BUILT: AtomicU64 = AtomicU64::new(0);

/// The member organizations' CAs at one time.
struct View {
    /// Unique to this view.
    generation: u64,
    /// Each organization's CA certificates (PEM), as governance lists them:
    /// what this view was built from.
    source: Vec<(OrgName, Vec<String>)>,
    /// Trusts every member CA: the handshake's check.
    any: Arc<dyn ClientCertVerifier>,
    /// One verifier per organization, trusting only its own CAs.
    by_org: Vec<(OrgName, Arc<dyn ClientCertVerifier>)>,
    /// Each organization's CA certificates.
    ca_by_org: Vec<(OrgName, Vec<CertificateDer<'static>>)>,
}

impl View {
    fn build(source: Vec<(OrgName, Vec<String>)>) -> Result<Self> {
        let verifier = |roots: RootCertStore| {
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| Error::Tls(e.to_string()))
        };
        let mut all = RootCertStore::empty();
        let mut by_org = Vec::new();
        let mut ca_by_org = Vec::new();
        for (org, pems) in &source {
            // A CA that is not a trust anchor is left out, the same way on
            // every replica and at every restart (governance takes only
            // ones that are, see `is_one_ca_cert`); an organization left
            // without one has no certificate accepted.
            let mut cas = Vec::new();
            let mut own = RootCertStore::empty();
            for pem in pems {
                let Some(ca) = parse_certs(pem.as_bytes())
                    .ok()
                    .and_then(|c| c.into_iter().next())
                else {
                    tracing::warn!("org {org}: a CA certificate that does not parse is left out");
                    continue;
                };
                if let Err(e) = own.add(ca.clone()) {
                    tracing::warn!("org {org}: a CA certificate is left out: {e}");
                    continue;
                }
                all.add(ca.clone())
                    .map_err(|e| Error::Tls(format!("org {org}'s CA: {e}")))?;
                cas.push(ca);
            }
            if cas.is_empty() {
                tracing::warn!(
                    "org {org} has no usable CA certificate: none of its certificates is accepted"
                );
                continue;
            }
            by_org.push((org.clone(), verifier(own)?));
            ca_by_org.push((org.clone(), cas));
        }
        Ok(Self {
            generation: VIEWS_BUILT.fetch_add(1, Ordering::Relaxed),
            any: verifier(all)?,
            source,
            by_org,
            ca_by_org,
        })
    }

    /// Identifies the holder of a certificate chain (leaf first) as of
    /// `now`: the organization its `O` names must be a member, the chain
    /// must lead to one of that organization's CAs, every certificate in it
    /// valid at `now`.
    fn identify_at(
        &self,
        chain: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<Principal, IdentityError> {
        let (leaf, intermediates) = chain.split_first().ok_or(IdentityError::NoCertificate)?;
        let subject = Subject::parse(leaf)?;
        let (org, verifier) = (self.by_org.iter())
            .find(|(org, _)| org.as_str() == subject.org)
            .ok_or(IdentityError::UnknownIssuer)?;
        verifier
            .verify_client_cert(leaf, intermediates, now)
            .map_err(|e| {
                if lapsed::is_expiry(&e) {
                    IdentityError::Expired
                } else if lapsed::is_not_yet_valid(&e) {
                    IdentityError::NotYetValid
                } else {
                    IdentityError::UnknownIssuer
                }
            })?;
        if !subject.client_auth {
            return Err(IdentityError::NoClientAuth);
        }
        let role = Role::parse(&subject.role).ok_or(IdentityError::UnknownRole)?;
        Ok(Principal {
            org: org.clone(),
            role,
            name: subject.name,
            serial: Some(subject.serial),
            cert: Arc::from(leaf.as_ref()),
        })
    }

    fn is_member(&self, org: &OrgName) -> bool {
        self.by_org.iter().any(|(name, _)| name == org)
    }

    fn cas_of(&self, org: &OrgName) -> Vec<CertificateDer<'static>> {
        (self.ca_by_org.iter())
            .find(|(name, _)| name == org)
            .map(|(_, cas)| cas.clone())
            .unwrap_or_default()
    }
}

/// The revoked certificates the listeners refuse, replaced whole whenever
/// the applied governance state changes them.
#[derive(Clone, Debug, Default)]
pub struct Revoked(Arc<RwLock<HashSet<CertRef>>>);

impl Revoked {
    pub fn contains(&self, org: &OrgName, serial: &Serial) -> bool {
        let set = self.0.read().unwrap_or_else(|p| p.into_inner());
        !set.is_empty()
            && set.contains(&CertRef {
                org: org.clone(),
                serial: serial.clone(),
            })
    }

    /// Whether a certificate (DER) is revoked: by its `O` and serial (a
    /// certificate whose `O` is not its issuer's is refused anyway).
    pub fn contains_der(&self, der: &[u8]) -> bool {
        if self.0.read().unwrap_or_else(|p| p.into_inner()).is_empty() {
            return false;
        }
        match Subject::parse(&CertificateDer::from(der)) {
            Ok(s) => OrgName::parse(&s.org).is_ok_and(|org| self.contains(&org, &s.serial)),
            Err(_) => false,
        }
    }
}

impl Trust {
    pub fn from_genesis(genesis: &Genesis) -> Result<Self> {
        let source = genesis
            .orgs
            .iter()
            .map(|o| (o.name.clone(), vec![o.ca_cert.clone()]))
            .collect();
        let view = View::build(source).map_err(|e| Error::Tls(format!("genesis: {e}")))?;
        if let Some(o) = genesis.orgs.iter().find(|o| !view.is_member(&o.name)) {
            return Err(Error::Tls(format!(
                "genesis: org {}'s ca_cert is not a usable CA certificate (one PEM certificate \
                 with basicConstraints CA:TRUE, as scripts/new-org.sh makes)",
                o.name
            )));
        }
        Ok(Self {
            view: Arc::new(RwLock::new(Arc::new(view))),
            nodes: SharedNodes::new(genesis.node_records()),
            revoked: Revoked::default(),
            joined: Joining::default(),
        })
    }

    /// The applied state's view of the members.
    fn view(&self) -> Arc<View> {
        self.view.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether `org` is a member now.
    pub fn is_member(&self, org: &OrgName) -> bool {
        self.view().is_member(org)
    }

    fn peering(&self) -> Peering {
        Peering {
            view: self.view.clone(),
            nodes: self.nodes.clone(),
            joined: self.joined.clone(),
        }
    }

    /// Takes the member organizations, their CAs and the revoked
    /// certificates from the applied governance state: listeners enforce
    /// them from the next handshake and request on.
    pub fn govern(&self, gov: &Gov) {
        let mut joined = self.joined.write().unwrap_or_else(|p| p.into_inner());
        let caught_up = |j: &Arc<Joined>| {
            (gov.proposal(j.proposal)).is_some_and(|p| p.state != ProposalState::Open)
        };
        if joined.as_ref().is_some_and(caught_up) {
            *joined = None;
        }
        drop(joined);
        self.nodes
            .set(gov.nodes().map(|(id, n)| (*id, n.clone())).collect());
        let certs = gov.revoked().map(|r| r.cert.clone()).collect();
        *self.revoked.0.write().unwrap_or_else(|p| p.into_inner()) = certs;
        let source: Vec<(OrgName, Vec<String>)> = gov
            .orgs()
            .filter(|(_, m)| m.status != OrgStatus::Removed)
            .map(|(name, m)| (name.clone(), m.ca_certs.clone()))
            .collect();
        if source.is_empty() || self.view().source == source {
            return;
        }
        match View::build(source) {
            Ok(view) => *self.view.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(view),
            // Governance takes only CA certificates that parse (checked
            // where a proposal is decoded, on every replica alike).
            Err(e) => tracing::error!("the governed CAs do not make a trust store: {e}"),
        }
    }

    /// Takes the members and nodes of a join bundle for peer
    /// authentication: a node added by vote knows them before its applied
    /// state has caught up ([`Trust::govern`] drops them then).
    pub fn join(&self, bundle: &crate::config::JoinBundle) -> Result<()> {
        let view = View::build(bundle.orgs.clone())
            .map_err(|e| Error::Config(format!("join bundle: {e}")))?;
        let joined = Joined {
            view: Arc::new(view),
            nodes: Arc::new(RegisteredNodes::new(&bundle.nodes)),
            proposal: bundle.proposal,
        };
        *self.joined.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(joined));
        Ok(())
    }

    /// The registry's nodes of the moment.
    pub fn nodes(&self) -> Arc<RegisteredNodes> {
        self.nodes.now()
    }

    /// The nodes this node talks to: the registry's, and removed ones
    /// until Raft has removed them (a joining node: its bundle's).
    pub fn peer_nodes(&self) -> Arc<RegisteredNodes> {
        self.peering().peers()
    }

    /// Takes the nodes in Raft's membership (see [`Trust::peer_nodes`]).
    pub fn in_raft(&self, ids: std::collections::BTreeSet<NodeId>) {
        self.nodes.set_in_raft(ids);
    }

    /// The revoked certificates, as the listeners refuse them.
    pub fn revoked(&self) -> Revoked {
        self.revoked.clone()
    }

    /// Whether `p`'s certificate is refused now: revoked, or of an
    /// organization that is no longer a member.
    pub fn is_refused(&self, p: &Principal) -> bool {
        self.refused_in(&self.view(), p)
    }

    fn refused_in(&self, view: &View, p: &Principal) -> bool {
        let revoked = p
            .serial
            .as_ref()
            .is_some_and(|s| self.revoked.contains(&p.org, s));
        revoked || !view.is_member(&p.org)
    }

    /// Whether a peer, identified when its connection opened, is refused
    /// now: its certificate revoked or its organization gone, or the node
    /// no longer one this node talks to (removed by vote, and out of Raft).
    pub fn is_refused_peer(&self, peer: &PeerCert) -> Result<(), IdentityError> {
        let peering = self.peering();
        if self.refused_in(&peering.view(), &peer.principal) {
            return Err(IdentityError::Revoked);
        }
        match peering.peers().org_of(peer.node.id) {
            Some(org) if *org == peer.node.org => Ok(()),
            _ => Err(IdentityError::NotANode),
        }
    }

    /// A client config for calling one peer, which must prove to be that
    /// node: a `node` certificate with CN = `target`, issued by the CA of the
    /// node's own organization (another member's CA cannot impersonate it).
    pub fn peer_client_config(
        &self,
        own: Arc<own::OwnIdentity>,
        target: NodeId,
    ) -> Result<ClientConfig> {
        let peering = self.peering();
        let org = (peering.peers().org_of(target).cloned())
            .ok_or_else(|| Error::Tls(format!("node {target} is not a node of the consortium")))?;
        let mut roots = RootCertStore::empty();
        let cas = peering.view().cas_of(&org);
        for ca in &cas {
            roots
                .add(ca.clone())
                .map_err(|e| Error::Tls(e.to_string()))?;
        }
        let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| Error::Tls(e.to_string()))?;
        let verifier = Arc::new(NodeServerVerifier {
            inner,
            org,
            id: target,
            cas,
            peering,
            revoked: self.revoked.clone(),
        });
        Ok(ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Tls(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_cert_resolver(own))
    }

    /// A server config for the API listener: it requires a client
    /// certificate from a member CA, valid now; refused certificates go to
    /// `refusals`.
    pub fn server_config(
        &self,
        own: Arc<own::OwnIdentity>,
        refusals: Arc<RefusalLog>,
    ) -> Result<ServerConfig> {
        self.server_config_with(own, refusals, None)
    }

    /// A server config for the peer listener: as [`Trust::server_config`],
    /// and a registered node's expired certificate is accepted too
    /// ([`lapsed`]).
    pub fn peer_server_config(
        &self,
        own: Arc<own::OwnIdentity>,
        refusals: Arc<RefusalLog>,
    ) -> Result<ServerConfig> {
        self.server_config_with(own, refusals, Some(self.peering()))
    }

    fn server_config_with(
        &self,
        own: Arc<own::OwnIdentity>,
        refusals: Arc<RefusalLog>,
        peering: Option<Peering>,
    ) -> Result<ServerConfig> {
        let verifier = Arc::new(LoggedClientVerifier {
            view: self.view.clone(),
            refusals,
            revoked: self.revoked.clone(),
            peering,
        });
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Tls(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(own);
        // No resumption: every connection runs the full handshake, so a
        // revoked certificate cannot come back on an old session.
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        Ok(config)
    }

    /// Identifies the holder of a verified certificate chain (leaf first),
    /// now: also refused if the certificate is revoked.
    pub fn identify(&self, chain: &[CertificateDer<'_>]) -> Result<Principal, IdentityError> {
        self.identify_in(&self.view(), chain)
    }

    fn identify_in(
        &self,
        view: &View,
        chain: &[CertificateDer<'_>],
    ) -> Result<Principal, IdentityError> {
        let p = view.identify_at(chain, UnixTime::now())?;
        if self.refused_in(view, &p) {
            return Err(IdentityError::Revoked);
        }
        Ok(p)
    }

    /// Identifies a peer: a `node` certificate whose CN is the id of a
    /// node of the same organization ([`Trust::peer_nodes`]). An expired one
    /// is accepted if its key is the one registered for that node and it
    /// lapsed by time alone ([`lapsed`]); the answer then carries when it
    /// expired.
    pub fn identify_node(&self, chain: &[CertificateDer<'_>]) -> Result<PeerCert, IdentityError> {
        let (principal, expired_at) = self.identify_peer(chain)?;
        Ok(PeerCert {
            node: self.peer_node_of(principal.clone())?,
            principal,
            expired_at,
        })
    }

    /// Identifies the holder of a certificate chain as peer authentication
    /// does: against a joining node's bundle while it catches up, and with
    /// a registered node's lapsed certificate accepted (with when it
    /// expired).
    pub fn identify_peer(
        &self,
        chain: &[CertificateDer<'_>],
    ) -> Result<(Principal, Option<i64>), IdentityError> {
        let peering = self.peering();
        let view = peering.view();
        match self.identify_in(&view, chain) {
            Err(IdentityError::Expired) => Ok((
                self.identify_lapsed(&peering, &view, chain)?,
                not_after_unix(&chain[0]),
            )),
            other => Ok((other?, None)),
        }
    }

    /// The node a principal is among the nodes peers may be.
    pub fn peer_node_of(&self, p: Principal) -> Result<NodePrincipal, IdentityError> {
        node_in(&self.peer_nodes(), p)
    }

    /// An expired node certificate's identity as of the last moment its
    /// chain was valid, if its key is the registered one.
    fn identify_lapsed(
        &self,
        peering: &Peering,
        view: &View,
        chain: &[CertificateDer<'_>],
    ) -> Result<Principal, IdentityError> {
        let leaf = &chain[0];
        let nodes = peering.peers();
        let id = (nodes.registered_node(leaf)).ok_or(IdentityError::Expired)?;
        let org = nodes.org_of(id).ok_or(IdentityError::Expired)?;
        let principal = lapsed::last_valid_moments(leaf, &view.cas_of(org), UnixTime::now())
            .into_iter()
            .find_map(|t| view.identify_at(chain, t).ok())
            .ok_or(IdentityError::Expired)?;
        if self.refused_in(view, &principal) {
            return Err(IdentityError::Revoked);
        }
        Ok(principal)
    }

    /// The member node a principal is, if it is one.
    /// The registry's node a principal is, if it is one.
    pub fn node_of(&self, p: Principal) -> Result<NodePrincipal, IdentityError> {
        node_in(&self.nodes.now(), p)
    }
}

/// The node of `nodes` a principal is, if it is one.
fn node_in(nodes: &RegisteredNodes, p: Principal) -> Result<NodePrincipal, IdentityError> {
    if p.role != Role::Node {
        return Err(IdentityError::NotANode);
    }
    let id: NodeId = p.name.parse().map_err(|_| IdentityError::NotANode)?;
    match nodes.org_of(id) {
        Some(org) if *org == p.org => Ok(NodePrincipal { id, org: p.org }),
        _ => Err(IdentityError::NotANode),
    }
}

/// A client certificate verifier over the member CAs of the moment, that
/// refuses revoked certificates and logs what it refuses (a few lines a
/// second at most, see [`RefusalLog`]). It names no CAs to clients (the
/// members change), and clients send their certificate regardless.
struct LoggedClientVerifier {
    view: Arc<RwLock<Arc<View>>>,
    refusals: Arc<RefusalLog>,
    revoked: Revoked,
    /// On the peer listener: what peer authentication trusts, and the
    /// registered nodes, whose expired certificates are accepted
    /// ([`lapsed`]).
    peering: Option<Peering>,
}

impl std::fmt::Debug for LoggedClientVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LoggedClientVerifier")
    }
}

impl LoggedClientVerifier {
    /// The view the handshake checks against: peer authentication's on
    /// the peer listener, the applied state's on the others.
    fn view(&self) -> Arc<View> {
        match &self.peering {
            Some(peering) => peering.view(),
            None => self.view.read().unwrap_or_else(|p| p.into_inner()).clone(),
        }
    }

    fn any(&self) -> Arc<dyn ClientCertVerifier> {
        self.view().any.clone()
    }

    /// Whether an expired `end_entity` is a registered node's certificate
    /// that lapsed by time alone.
    fn lapsed_node(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> bool {
        let Some(nodes) = self.peering.as_ref().map(Peering::peers) else {
            return false;
        };
        let Some(org) = nodes
            .registered_node(end_entity)
            .and_then(|id| nodes.org_of(id))
        else {
            return false;
        };
        let view = self.view();
        let verifier = view.by_org.iter().find(|(name, _)| name == org);
        let cas = view.ca_by_org.iter().find(|(name, _)| name == org);
        let (Some((_, verifier)), Some((_, cas))) = (verifier, cas) else {
            return false;
        };
        lapsed::last_valid_moments(end_entity, cas, now)
            .into_iter()
            .any(|t| {
                verifier
                    .verify_client_cert(end_entity, intermediates, t)
                    .is_ok()
            })
    }
}

impl ClientCertVerifier for LoggedClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> std::result::Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        let mut verified = self
            .any()
            .verify_client_cert(end_entity, intermediates, now);
        if let Err(e) = &verified {
            if lapsed::is_expiry(e) && self.lapsed_node(end_entity, intermediates, now) {
                verified = Ok(rustls::server::danger::ClientCertVerified::assertion());
            }
        }
        // A leaf whose issuer's name is a member CA's but whose signature is
        // not (a CA rotated under the same name, and the old one removed)
        // was not issued by a member CA: the client hears "unknown CA",
        // not "decrypt error".
        if let Err(rustls::Error::InvalidCertificate(rustls::CertificateError::BadSignature)) =
            &verified
        {
            verified = Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            ));
        }
        if verified.is_ok() && self.revoked.contains_der(end_entity) {
            verified = Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Revoked,
            ));
        }
        if let Err(e) = &verified {
            self.refusals
                .refused(&format_args!("client certificate: {e}"));
        }
        verified
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.any().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.any().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.any().supported_verify_schemes()
    }
}

/// Verifies that a peer's server certificate is node `id` of `org`: the
/// chain and host name by webpki (trusting only `org`'s CA), then the subject.
#[derive(Debug)]
struct NodeServerVerifier {
    inner: Arc<WebPkiServerVerifier>,
    org: OrgName,
    id: NodeId,
    /// `org`'s CAs, for when a certificate of `id` lapsed ([`lapsed`]).
    cas: Vec<CertificateDer<'static>>,
    peering: Peering,
    revoked: Revoked,
}

impl ServerCertVerifier for NodeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let verify = |at| {
            self.inner
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, at)
        };
        let verified = match verify(now) {
            Err(e) if lapsed::is_expiry(&e) => {
                if self.peering.peers().registered_node(end_entity) != Some(self.id) {
                    return Err(e);
                }
                lapsed::last_valid_moments(end_entity, &self.cas, now)
                    .into_iter()
                    .find_map(|t| verify(t).ok())
                    .ok_or(e)?
            }
            other => other?,
        };
        let subject =
            Subject::parse(end_entity).map_err(|e| rustls::Error::General(e.to_string()))?;
        if self.revoked.contains_der(end_entity) {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Revoked,
            ));
        }
        if subject.org != self.org.as_str()
            || subject.role != "node"
            || subject.name != self.id.to_string()
        {
            return Err(rustls::Error::General(format!(
                "peer certificate is not node {} of {}",
                self.id, self.org
            )));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Why a verified session was not accepted as an identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("no client certificate")]
    NoCertificate,
    #[error("the certificate was not issued by a CA of the member organization its O names")]
    UnknownIssuer,
    #[error("the certificate's subject must have exactly one O, OU and CN")]
    BadSubject,
    #[error("the certificate's OU is not a role (node, app, partner, admin)")]
    UnknownRole,
    #[error("this listener serves member nodes only")]
    NotANode,
    #[error("the certificate lacks the clientAuth extended key usage (issue it with scripts/issue-cert.sh)")]
    NoClientAuth,
    #[error("the certificate is revoked: ask your organization's admin for a new one")]
    Revoked,
    #[error("the certificate has expired (or this machine's clock is wrong): renew it with scripts/issue-cert.sh")]
    Expired,
    #[error("the certificate is not valid yet: check this machine's clock")]
    NotYetValid,
}

/// A peer node as its certificate identifies it.
#[derive(Clone, Debug)]
pub struct PeerCert {
    pub node: NodePrincipal,
    pub principal: Principal,
    /// When its certificate expired (Unix seconds), if it did: accepted
    /// because its key is the node's registered one ([`lapsed`]).
    pub expired_at: Option<i64>,
}

/// A verified caller of the API listener.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Principal {
    org: OrgName,
    role: Role,
    /// The certificate's CN.
    name: String,
    /// The certificate's serial; none for a caller forwarded by a peer.
    #[serde(skip)]
    serial: Option<Serial>,
    /// The certificate (DER); empty for a caller forwarded by a peer.
    #[serde(skip)]
    cert: Arc<[u8]>,
}

impl Principal {
    pub fn org(&self) -> &OrgName {
        &self.org
    }
    pub fn role(&self) -> Role {
        self.role
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The caller's certificate (DER), as its TLS session presented it.
    pub fn cert(&self) -> &[u8] {
        &self.cert
    }
    /// The caller's certificate's serial (none for a forwarded caller).
    pub fn serial(&self) -> Option<&Serial> {
        self.serial.as_ref()
    }
    /// The same caller, without its certificate's bytes (for keeping).
    pub fn without_cert(self) -> Self {
        Self {
            cert: Arc::from(&[][..]),
            ..self
        }
    }
    /// Whether `other` names the same caller (organization, role, name).
    pub fn is(&self, other: &Principal) -> bool {
        (&self.org, self.role, &self.name) == (&other.org, other.role, &other.name)
    }
    pub fn actor(&self) -> Actor {
        Actor {
            org: self.org.clone(),
            role: self.role,
        }
    }

    /// The form in which a follower forwards its caller to the leader.
    pub fn forward(&self) -> ForwardedPrincipal {
        ForwardedPrincipal {
            org: self.org.clone(),
            role: self.role,
            name: self.name.clone(),
        }
    }

    /// Accepts a caller forwarded by a verified member node, if it is of
    /// that node's own organization: a node vouches for its own
    /// organization's callers only (docs/design.md, "Trust model").
    pub fn forwarded(by: &NodePrincipal, f: ForwardedPrincipal) -> Option<Self> {
        (f.org == by.org && f.role != Role::Node).then(|| Self {
            org: f.org,
            role: f.role,
            name: f.name,
            serial: None,
            cert: Arc::from(&[][..]),
        })
    }
}

/// A caller's identity as carried over the peer channel.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ForwardedPrincipal {
    org: OrgName,
    role: Role,
    name: String,
}

impl ForwardedPrincipal {
    pub fn org(&self) -> &OrgName {
        &self.org
    }

    /// Whether this names `p` (organization, role, name).
    pub fn names(&self, p: &Principal) -> bool {
        (&self.org, self.role, &self.name) == (&p.org, p.role, &p.name)
    }
}

/// A verified member node on the peer listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodePrincipal {
    pub id: NodeId,
    pub org: OrgName,
}

struct Subject {
    org: String,
    role: String,
    name: String,
    /// Whether the certificate names `clientAuth` among its extended key
    /// usages. The chain check accepts a leaf without that extension at
    /// all; a member identity must have it.
    client_auth: bool,
    serial: Serial,
}

impl Subject {
    fn parse(leaf: &CertificateDer<'_>) -> Result<Self, IdentityError> {
        use x509_parser::prelude::*;
        let (_, cert) =
            X509Certificate::from_der(leaf.as_ref()).map_err(|_| IdentityError::BadSubject)?;
        let subject = cert.subject();
        let one = |mut it: Box<dyn Iterator<Item = &AttributeTypeAndValue<'_>> + '_>| {
            let first = it.next().ok_or(IdentityError::BadSubject)?;
            if it.next().is_some() {
                return Err(IdentityError::BadSubject);
            }
            first
                .as_str()
                .map(str::to_owned)
                .map_err(|_| IdentityError::BadSubject)
        };
        let client_auth = matches!(
            cert.extended_key_usage(),
            Ok(Some(eku)) if eku.value.client_auth
        );
        let serial = Serial::from_be_bytes(cert.raw_serial()).ok_or(IdentityError::BadSubject)?;
        Ok(Self {
            serial,
            org: one(Box::new(subject.iter_organization()))?,
            role: one(Box::new(subject.iter_organizational_unit()))?,
            name: one(Box::new(subject.iter_common_name()))?,
            client_auth,
        })
    }
}

/// When a certificate expires and how many whole days are left then.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Expiry {
    /// Seconds since the Unix epoch.
    pub not_after: i64,
    /// Whole days left (negative once expired).
    pub days_left: i64,
}

impl Expiry {
    /// A certificate's (DER) expiry, as of `now` (seconds since the epoch).
    pub fn of(der: &[u8], now: i64) -> Option<Self> {
        let not_after = not_after_unix(der)?;
        Some(Self {
            not_after,
            days_left: (not_after - now).div_euclid(86_400),
        })
    }

    /// A certificate's expiry as of this node's clock.
    pub fn now(der: &[u8]) -> Option<Self> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        Self::of(der, now)
    }
}

/// Days before expiry at which a node warns in its log, each once.
pub const EXPIRY_WARNING_DAYS: [i64; 3] = [30, 7, 1];

/// The warning a certificate's expiry calls for, if it is within one of
/// [`EXPIRY_WARNING_DAYS`]: the smallest such threshold.
pub fn expiry_warning(expiry: Expiry) -> Option<i64> {
    EXPIRY_WARNING_DAYS
        .into_iter()
        .filter(|d| expiry.days_left < *d)
        .min()
}

/// When a certificate (DER) expires, in seconds since the Unix epoch.
pub fn not_after_unix(der: &[u8]) -> Option<i64> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    Some(cert.validity().not_after.timestamp())
}

/// A server config for the public window: server-only TLS, no client
/// certificate asked for (the one listener where that is the point).
pub fn public_server_config(own: Arc<own::OwnIdentity>) -> Result<ServerConfig> {
    Ok(ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(own))
}

/// The TLS error in `e`'s chain of causes, if there is one. A handshake's
/// error may come wrapped in I/O errors several deep, and an I/O error's
/// `source` skips the error it wraps: each is looked into.
pub fn rustls_error<'e>(e: &'e (dyn std::error::Error + 'static)) -> Option<&'e rustls::Error> {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if let Some(tls) = c.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        cause = match c.downcast_ref::<std::io::Error>() {
            Some(io) => io.get_ref().map(|inner| inner as _),
            None => c.source(),
        };
    }
    None
}

/// A client config trusting `roots` and presenting `own`.
pub fn client_config(roots: Arc<RootCertStore>, own: &TlsFiles) -> Result<ClientConfig> {
    let inner: Arc<dyn ServerCertVerifier> =
        WebPkiServerVerifier::builder_with_provider(roots, provider())
            .build()
            .map_err(|e| Error::Tls(e.to_string()))?;
    client_config_with(Arc::new(unknown_issuer::NamingVerifier { inner }), own)
}

/// A client config that checks servers with `verifier` and presents `own`.
fn client_config_with(
    verifier: Arc<dyn ServerCertVerifier>,
    own: &TlsFiles,
) -> Result<ClientConfig> {
    let (chain, key) = load_identity(own)?;
    ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(chain, key)
        .map_err(|e| Error::Tls(e.to_string()))
}

/// A root store from PEM files of CA certificates.
pub fn roots_from_files(paths: &[std::path::PathBuf]) -> Result<Arc<RootCertStore>> {
    let mut roots = RootCertStore::empty();
    for path in paths {
        let pem = read_bounded(path, PEM_BYTES_MAX)?;
        for cert in parse_certs(&pem).map_err(|e| Error::Tls(format!("{}: {e}", path.display())))? {
            roots
                .add(cert)
                .map_err(|e| Error::Tls(format!("{}: {e}", path.display())))?;
        }
    }
    Ok(Arc::new(roots))
}

/// Loads a PEM certificate chain and its private key.
pub fn load_identity(
    files: &TlsFiles,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let chain_pem = read_bounded(&files.cert, PEM_BYTES_MAX)?;
    let chain = parse_certs(&chain_pem)
        .map_err(|e| Error::Tls(format!("{}: {e}", files.cert.display())))?;
    if chain.is_empty() {
        return Err(Error::Tls(format!(
            "{}: no certificate",
            files.cert.display()
        )));
    }
    let key_pem = read_bounded(&files.key, PEM_BYTES_MAX)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            Error::Tls(format!("{}: no private key", files.key.display()))
        }
        e => Error::Tls(format!("{}: {e}", files.key.display())),
    })?;
    let signing = provider()
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| Error::Tls(format!("{}: {e}", files.key.display())))?;
    rustls::sign::CertifiedKey::new(chain.clone(), signing)
        .keys_match()
        .map_err(|_| {
            Error::Tls(format!(
                "the key {} is not the private key of the certificate {}: set [tls] key to the key \
                 that was made with that certificate",
                files.key.display(),
                files.cert.display()
            ))
        })?;
    Ok((chain, key))
}

/// Whether a PEM text is exactly one certificate, of a CA
/// (basicConstraints CA:TRUE).
pub fn is_one_ca_cert(pem: &[u8]) -> bool {
    use x509_parser::prelude::*;
    match parse_certs(pem).as_deref() {
        Ok([one]) => {
            X509Certificate::from_der(one.as_ref()).is_ok_and(|(_, c)| c.is_ca())
                && RootCertStore::empty().add(one.clone()).is_ok()
        }
        _ => false,
    }
}

/// The first certificate (DER) of a PEM text.
pub fn first_cert_der(pem: &[u8]) -> Option<Vec<u8>> {
    parse_certs(pem)
        .ok()?
        .into_iter()
        .next()
        .map(|c| c.to_vec())
}

fn parse_certs(
    pem: &[u8],
) -> std::result::Result<Vec<CertificateDer<'static>>, rustls::pki_types::pem::Error> {
    CertificateDer::pem_slice_iter(pem).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_warnings_come_at_30_7_and_1_days_left() {
        let at = |days_left| Expiry {
            not_after: 0,
            days_left,
        };
        let warnings: Vec<Option<i64>> = [400, 30, 29, 7, 6, 1, 0, -3]
            .into_iter()
            .map(|d| expiry_warning(at(d)))
            .collect();
        assert_eq!(
            warnings,
            [
                None,
                None,
                Some(30),
                Some(30),
                Some(7),
                Some(7),
                Some(1),
                Some(1)
            ]
        );
        assert_eq!(Expiry::of(&[], 0), None, "not a certificate");
    }
}
