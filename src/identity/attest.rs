//! Attestations: a member node's signature over the writes it accepted from
//! its callers, or a caller's own signature over its request
//! ([`super::request`]), and the check every replica makes of them before
//! apply.
//!
//! A node that authenticated a caller over mutual TLS signs, with its node
//! key, what it accepted: the caller and the command (or a bundle of its
//! callers' single transfers), the genesis hash, its node id, its clock and
//! the height it had applied.
//! A replica accepts the [`Seal`] only if
//!
//! 1. it was signed at most [`SEAL_AGE_MAX_MS`] before the ledger clock and
//!    at most [`SEAL_AHEAD_MAX_MS`] after it (`origin_stale`);
//! 2. its certificate is node `seal.node`'s, issued by the CA of that node's
//!    organization and valid at the ledger clock (`origin_invalid`);
//! 3. every caller it names belongs to that node's organization
//!    (`origin_foreign`);
//! 4. the signature verifies under that certificate (`origin_invalid`);
//! 5. the certificate's organization is still a member (`org_removed`) and
//!    the certificate is not revoked (`certificate_revoked`) in the
//!    governance state the entry applies to;
//! 6. no certificate of its callers' organization was revoked above the
//!    height the node had applied when it signed (`certificate_revoked`):
//!    the seal does not name its caller's certificate, so a write a lagging
//!    node accepted from a certificate revoked meanwhile is refused, and
//!    with it, in that window only, the same organization's other writes
//!    that node sealed.
//!
//! A [`ClientSeal`] passes the same age check; its certificate must name
//! the caller exactly (organization and role) and be valid at the ledger
//! clock; its signature must verify over the request message; and the
//! request's method, path and body must decode to exactly the entry's
//! command (`origin_invalid` otherwise). Decoding is the API's own body
//! parsing without node-local limits, handed in as a [`Decode`].
//!
//! Every input is in the log entry or in genesis, and time is the ledger
//! clock, so every replica reaches the same verdict. A node can therefore
//! speak only for its own organization's callers, and a leader can neither
//! forge a caller of another organization nor alter what a node signed.
//!
//! The signed message is `"alliance attestation v2\0"`, the 32-byte genesis
//! hash, the node id, `signed_at_ms` and `as_of_height` as 8-byte big-endian
//! integers, and the SHA-256 of the binary encoding of what was attested
//! ([`Attested`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, SignatureVerificationAlgorithm, UnixTime};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::request::{ecdsa_p256, public_key, request_message, KeySigner};
use super::{load_identity, Principal, Trust};
use crate::config::{NodeId, TlsFiles};
use crate::error::Result;
use crate::ledger::{
    Actor, ClientSeal, Command, Entry, Evidence, Gov, Grouped, Hash, Rejection, Role, Seal, Serial,
    Verdict,
};

/// Decodes a signed request (method, path, body) into the command the API
/// would make of it, with no node-local limits; `None` if it is not a
/// write the API takes.
pub type Decode = fn(&str, &str, &[u8]) -> Option<Command>;

/// How long before the ledger clock a seal may have been signed. A write
/// waits at most its request timeout (and retries) before it is proposed;
/// the rest is room for the nodes' clocks to differ. Within this window a
/// leader could propose a sealed command a second time: transfers,
/// accounts, posts and voids are idempotent by id, so only a grant change
/// could be replayed, and only within it.
pub const SEAL_AGE_MAX_MS: u64 = 5 * 60 * 1000;
/// How far after the ledger clock a seal may have been signed: the signing
/// node's clock may run ahead of the leader's by this much.
pub const SEAL_AHEAD_MAX_MS: u64 = 60 * 1000;
/// The niceness of the thread that checks seals ahead of apply (19, the
/// lowest priority: it runs when the node's other threads leave a core
/// idle, as while they wait for the disk).
const CHECK_AHEAD_NICE: i32 = 19;
/// Appends queued for the thread that checks seals ahead; past this an
/// append's seals are left to apply.
const CHECK_AHEAD_QUEUE: usize = 64;
/// Largest unit whose seal is checked ahead of apply: the seal's check
/// (about 58 µs) is worth taking off apply's path, but the digest of a
/// batch of thousands of transfers costs more than it, and would then be
/// made twice.
const CHECK_AHEAD_TRANSFERS_MAX: usize = 100;
/// Certificates whose checks are remembered; past this the memory is
/// cleared (it only saves work, it never changes a verdict).
const KNOWN_CERTS_MAX: usize = 10_000;
/// Largest certificate a seal may carry. The profile's are under 1 KiB; a
/// seal is refused past this, so that no member can make entries that
/// followers cannot receive or that fill memory.
pub const SEAL_CERT_BYTES_MAX: usize = 16 * 1024;
/// Largest signature a seal may carry (ECDSA P-256 in DER is at most 72).
pub const SEAL_SIGNATURE_BYTES_MAX: usize = 80;
/// Largest signed request a client seal may carry: the largest
/// `limits.body_bytes_max` a node accepts, and a path of a few ids.
pub const SEALED_BODY_BYTES_MAX: usize = 64 * 1024 * 1024;
const SEALED_PATH_BYTES_MAX: usize = 512;

/// Whether `evidence` is within the sizes every replica accepts.
/// Whether `entry` has a node seal over few enough transfers to check
/// ahead of apply: a large unit's digest costs more than the check saves.
fn worth_checking_ahead(entry: &Entry) -> bool {
    let small = |evidence: &Evidence, what: Attested<'_>| {
        matches!(evidence, Evidence::Node(_)) && what.len() <= CHECK_AHEAD_TRANSFERS_MAX
    };
    match &entry.command {
        Command::Group(bundles) => {
            (bundles.iter()).any(|b| small(&b.evidence, Attested::Bundle(&b.items)))
        }
        Command::Tick => false,
        command => small(
            &entry.evidence,
            Attested::Command {
                actor: &entry.actor,
                command,
            },
        ),
    }
}

pub fn fits(evidence: &Evidence) -> bool {
    match evidence {
        Evidence::Leader => true,
        Evidence::Node(s) => {
            s.cert.len() <= SEAL_CERT_BYTES_MAX && s.signature.len() <= SEAL_SIGNATURE_BYTES_MAX
        }
        Evidence::Client(s) => {
            s.cert.len() <= SEAL_CERT_BYTES_MAX
                && s.signature.len() <= SEAL_SIGNATURE_BYTES_MAX
                && s.body.len() <= SEALED_BODY_BYTES_MAX
                && s.method.len() <= 8
                && s.path.len() <= SEALED_PATH_BYTES_MAX
        }
    }
}

const CONTEXT: &[u8] = b"alliance attestation v2\0";

/// What a seal covers.
#[derive(Serialize)]
pub enum Attested<'a> {
    /// One caller's command.
    Command {
        actor: &'a Actor,
        command: &'a Command,
    },
    /// Single transfers of the node's callers, for a group commit.
    Bundle(&'a [Grouped]),
}

impl Attested<'_> {
    fn digest(&self) -> Hash {
        Sha256::digest(crate::codec::encode(self)).into()
    }

    /// How many transfers it covers (at least 1: a command).
    fn len(&self) -> usize {
        match self {
            Self::Command {
                command: Command::Transfers { transfers, .. },
                ..
            } => transfers.len(),
            Self::Command { .. } => 1,
            Self::Bundle(items) => items.len(),
        }
    }

    fn actors(&self) -> Box<dyn Iterator<Item = &Actor> + '_> {
        match self {
            Self::Command { actor, .. } => Box::new(std::iter::once(*actor)),
            Self::Bundle(items) => Box::new(items.iter().map(|g| &g.actor)),
        }
    }
}

/// A seal signed at `signed_at_ms` is usable at ledger clock `clock_ms`.
fn fresh(signed_at_ms: u64, clock_ms: u64) -> Verdict {
    let age_ok = clock_ms.saturating_sub(signed_at_ms) <= SEAL_AGE_MAX_MS;
    let ahead_ok = signed_at_ms.saturating_sub(clock_ms) <= SEAL_AHEAD_MAX_MS;
    if age_ok && ahead_ok {
        Ok(())
    } else {
        Err(Rejection::OriginStale)
    }
}

/// What a node's seal signs besides what it attests.
struct Signing<'a> {
    genesis: &'a Hash,
    node: NodeId,
    signed_at_ms: u64,
    as_of_height: u64,
}

fn message(s: &Signing<'_>, digest: &Hash) -> Vec<u8> {
    let mut m = Vec::with_capacity(CONTEXT.len() + 32 + 8 + 8 + 8 + 32);
    m.extend_from_slice(CONTEXT);
    m.extend_from_slice(s.genesis);
    m.extend_from_slice(&s.node.to_be_bytes());
    m.extend_from_slice(&s.signed_at_ms.to_be_bytes());
    m.extend_from_slice(&s.as_of_height.to_be_bytes());
    m.extend_from_slice(digest);
    m
}

/// Seals this node made that its own apply has not met yet: there, a seal
/// found here with the same message, signature and certificate needs no
/// second signature check (the verdict is the one the check would give,
/// since this node made that signature with the certificate's key). It
/// takes a signature check off the leader's path to its answer; every
/// other replica checks as usual.
#[derive(Default)]
pub struct OwnSeals {
    /// SHA-256 of a signed message → the signature made over it, and the
    /// SHA-256 of the certificate the seal carries.
    made: Mutex<HashMap<Hash, (Vec<u8>, Hash)>>,
}

/// Own seals remembered at most; past this they are forgotten (apply then
/// checks their signatures like anyone else's).
const OWN_SEALS_MAX: usize = 4096;

impl OwnSeals {
    fn remember(&self, message: &[u8], signature: &[u8], cert: &Hash) {
        let mut made = self.made.lock().unwrap_or_else(|p| p.into_inner());
        if made.len() >= OWN_SEALS_MAX {
            made.clear();
        }
        let key = Sha256::digest(message).into();
        made.insert(key, (signature.to_vec(), *cert));
    }

    /// Whether this node made `signature` over `message` with `cert`
    /// (forgetting it: apply meets each seal once).
    fn made(&self, cert: &[u8], message: &[u8], signature: &[u8]) -> bool {
        let key: Hash = Sha256::digest(message).into();
        let mut made = self.made.lock().unwrap_or_else(|p| p.into_inner());
        let cert: Hash = Sha256::digest(cert).into();
        match made.get(&key) {
            Some((s, c)) if s == signature && *c == cert => made.remove(&key).is_some(),
            _ => false,
        }
    }
}

/// A node certificate and its key, for sealing.
struct SealingKey {
    cert: Vec<u8>,
    cert_sha256: Hash,
    signer: KeySigner,
}

impl SealingKey {
    fn load(tls: &TlsFiles) -> Result<Self> {
        let (chain, _) = load_identity(tls)?;
        let cert = chain[0].to_vec();
        Ok(Self {
            cert_sha256: Sha256::digest(&cert).into(),
            cert,
            signer: KeySigner::load(tls)?,
        })
    }
}

/// This node's signer of attestations.
pub struct Attester {
    node: NodeId,
    /// The certificate and key it seals with (see [`Self::reload`]).
    key: RwLock<Arc<SealingKey>>,
    genesis: Hash,
    own: Arc<OwnSeals>,
    /// The height this node has applied (see [`Self::follow`]).
    applied_height: Arc<AtomicU64>,
}

impl Attester {
    /// The signer for node `node` with its TLS certificate and key, which
    /// must be ECDSA P-256 (the certificate profile's).
    pub fn new(node: NodeId, tls: &TlsFiles, genesis: Hash) -> Result<Self> {
        Ok(Self {
            node,
            own: Arc::default(),
            key: RwLock::new(Arc::new(SealingKey::load(tls)?)),
            genesis,
            applied_height: Arc::default(),
        })
    }

    /// Seals with the certificate and key in `tls` from now on.
    pub fn reload(&self, tls: &TlsFiles) -> Result<()> {
        let key = Arc::new(SealingKey::load(tls)?);
        *self.key.write().unwrap_or_else(|p| p.into_inner()) = key;
        Ok(())
    }

    fn key(&self) -> Arc<SealingKey> {
        self.key.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Seals from now on name the height in `applied_height`, which the
    /// state machine keeps at the height it has applied.
    pub fn follow(&mut self, applied_height: Arc<AtomicU64>) {
        self.applied_height = applied_height;
    }

    /// This node's certificate (DER).
    pub fn cert(&self) -> Vec<u8> {
        self.key().cert.clone()
    }

    /// The seals this attester makes, for this node's [`Witness`].
    pub fn own_seals(&self) -> Arc<OwnSeals> {
        self.own.clone()
    }

    /// Seals `what`, signed at `now_ms` on this node's clock.
    pub fn seal(&self, what: &Attested<'_>, now_ms: u64) -> Evidence {
        let signing = Signing {
            genesis: &self.genesis,
            node: self.node,
            signed_at_ms: now_ms,
            as_of_height: self.applied_height.load(Ordering::Acquire),
        };
        let m = message(&signing, &what.digest());
        let key = self.key();
        let signature = key.signer.sign(&m);
        self.own.remember(&m, &signature, &key.cert_sha256);
        Evidence::Node(Seal {
            node: self.node,
            cert: key.cert.clone(),
            signed_at_ms: now_ms,
            as_of_height: signing.as_of_height,
            signature,
        })
    }
}

/// What a verdict is reached against: the ledger clock and the governance
/// state before the entry.
#[derive(Clone, Copy)]
struct At<'a> {
    clock_ms: u64,
    gov: &'a Gov,
}

impl At<'_> {
    /// `org_removed`, `certificate_revoked`.
    fn not_revoked(&self, cert: &Known) -> Verdict {
        let org = cert.principal.org();
        if self.gov.is_removed(org) {
            Err(Rejection::OrgRemoved)
        } else if self.gov.is_revoked(org, &cert.serial) {
            Err(Rejection::CertificateRevoked)
        } else {
            Ok(())
        }
    }
}

/// A certificate already checked: who it names, when it (and its CA) are
/// valid, in seconds since the Unix epoch, and its public key.
struct Known {
    /// The member view it was checked against ([`super::View`]): a
    /// governance change makes a new one, and every certificate is checked
    /// again, so no replica keeps accepting what the others refuse.
    generation: u64,
    principal: Principal,
    serial: Serial,
    valid_secs: (u64, u64),
    public_key: Vec<u8>,
}

/// Checks the evidence of log entries, the same way on every replica.
pub struct Witness {
    trust: Arc<Trust>,
    genesis: Hash,
    genesis_hex: String,
    decode: Decode,
    ecdsa_p256: &'static dyn SignatureVerificationAlgorithm,
    known: Mutex<HashMap<Hash, Arc<Known>>>,
    own: Arc<OwnSeals>,
    /// Seals whose signatures [`Self::check_ahead`] verified before their
    /// apply: there they need no second check.
    checked: OwnSeals,
    /// The thread that checks ahead, once started.
    ahead: std::sync::OnceLock<std::sync::mpsc::SyncSender<Vec<Arc<Entry>>>>,
}

impl Witness {
    pub fn new(trust: Arc<Trust>, genesis: Hash, decode: Decode) -> Self {
        Self {
            trust,
            genesis,
            genesis_hex: hex::encode(genesis),
            decode,
            ecdsa_p256: ecdsa_p256(),
            known: Mutex::default(),
            own: Arc::default(),
            checked: OwnSeals::default(),
            ahead: std::sync::OnceLock::new(),
        }
    }

    /// Verifies the node seals' signatures of `entries`, just appended to
    /// this node's log, on a thread of their own, so that their apply,
    /// later, finds them verified. Only saves work: apply checks all the
    /// rest, and a seal not checked ahead (the thread busy, the entry
    /// dated outside its certificate) is checked there as usual.
    pub fn check_ahead(self: &Arc<Self>, mut entries: Vec<Arc<Entry>>) {
        // Only entries with a seal worth checking wait in the queue: one
        // that holds a batch of thousands, on a thread busy elsewhere,
        // would hold megabytes each for nothing.
        entries.retain(|e| worth_checking_ahead(e));
        if entries.is_empty() {
            return;
        }
        let send = self.ahead.get_or_init(|| {
            let (send, receive) =
                std::sync::mpsc::sync_channel::<Vec<Arc<Entry>>>(CHECK_AHEAD_QUEUE);
            let witness = Arc::downgrade(self);
            let started = std::thread::Builder::new()
                .name("seal-check".into())
                .spawn(move || {
                    // Work that only saves work: on cores that would idle.
                    let me = rustix::thread::gettid();
                    let _ = rustix::process::setpriority_process(Some(me), CHECK_AHEAD_NICE);
                    for entries in receive {
                        let Some(witness) = witness.upgrade() else {
                            return;
                        };
                        for entry in &entries {
                            witness.verify_ahead(entry);
                        }
                    }
                });
            if let Err(e) = started {
                tracing::warn!("seals are checked in apply only: {e}");
            }
            send
        });
        let _ = send.try_send(entries);
    }

    fn verify_ahead(&self, entry: &Entry) {
        let verify = |evidence: &Evidence, what: &Attested<'_>| {
            let Evidence::Node(seal) = evidence else {
                return;
            };
            if !fits(evidence) || what.len() > CHECK_AHEAD_TRANSFERS_MAX {
                return;
            }
            let Ok(signer) = self.certificate(&seal.cert, entry.timestamp_ms) else {
                return;
            };
            let m = self.signed_message(seal, what);
            let valid = self
                .ecdsa_p256
                .verify_signature(&signer.public_key, &m, &seal.signature);
            if valid.is_ok() {
                let cert = Sha256::digest(&seal.cert).into();
                self.checked.remember(&m, &seal.signature, &cert);
            }
        };
        match &entry.command {
            Command::Group(bundles) => {
                for b in bundles {
                    verify(&b.evidence, &Attested::Bundle(&b.items));
                }
            }
            Command::Tick => {}
            command => verify(
                &entry.evidence,
                &Attested::Command {
                    actor: &entry.actor,
                    command,
                },
            ),
        }
    }

    /// This witness's node seals with `own` (see [`OwnSeals`]).
    pub fn with_own_seals(self, own: Arc<OwnSeals>) -> Self {
        Self { own, ..self }
    }

    /// The trust this witness checks certificates against.
    pub fn trust(&self) -> &Trust {
        &self.trust
    }

    /// One verdict per unit of `entry` ([`Entry::units`]), at ledger clock
    /// `clock_ms`, with the certificates `gov` revokes refused. A group's
    /// own evidence is not used: each bundle carries its own.
    pub fn verdicts(&self, entry: &Entry, clock_ms: u64, gov: &Gov) -> Vec<Verdict> {
        let at = At { clock_ms, gov };
        match (&entry.command, &entry.evidence) {
            (Command::Group(bundles), _) => bundles
                .iter()
                .map(|b| self.check(&b.evidence, &Attested::Bundle(&b.items), at))
                .collect(),
            (Command::Tick, _) => vec![Ok(())],
            (command, evidence) => {
                let actor = &entry.actor;
                vec![self.check(evidence, &Attested::Command { actor, command }, at)]
            }
        }
    }

    fn check(&self, evidence: &Evidence, what: &Attested<'_>, at: At<'_>) -> Verdict {
        if !fits(evidence) {
            return Err(Rejection::OriginInvalid);
        }
        match evidence {
            Evidence::Leader => Err(Rejection::OriginMissing),
            Evidence::Node(seal) => self.check_node(seal, what, at),
            Evidence::Client(seal) => self.check_client(seal, what, at),
        }
    }

    fn check_node(&self, seal: &Seal, what: &Attested<'_>, at: At<'_>) -> Verdict {
        let clock_ms = at.clock_ms;
        fresh(seal.signed_at_ms, clock_ms)?;
        let signer = self.node_cert(seal, clock_ms)?;
        at.not_revoked(&signer)?;
        let org = signer.principal.org();
        if what.actors().any(|a| &a.org != org) {
            return Err(Rejection::OriginForeign);
        }
        if at.gov.revoked_above(org, seal.as_of_height) {
            return Err(Rejection::CertificateRevoked);
        }
        let m = self.signed_message(seal, what);
        if self.own.made(&seal.cert, &m, &seal.signature)
            || self.checked.made(&seal.cert, &m, &seal.signature)
        {
            return Ok(());
        }
        self.ecdsa_p256
            .verify_signature(&signer.public_key, &m, &seal.signature)
            .map_err(|_| Rejection::OriginInvalid)
    }

    /// The message a node seal's signature is over.
    fn signed_message(&self, seal: &Seal, what: &Attested<'_>) -> Vec<u8> {
        let signing = Signing {
            genesis: &self.genesis,
            node: seal.node,
            signed_at_ms: seal.signed_at_ms,
            as_of_height: seal.as_of_height,
        };
        message(&signing, &what.digest())
    }

    fn check_client(&self, seal: &ClientSeal, what: &Attested<'_>, at: At<'_>) -> Verdict {
        let clock_ms = at.clock_ms;
        fresh(seal.signed_at_ms, clock_ms)?;
        let (actor, command) = match what {
            Attested::Command { actor, command } => (*actor, (*command).clone()),
            Attested::Bundle([one]) => (&one.actor, Command::single(one.transfer.clone())),
            Attested::Bundle(_) => return Err(Rejection::OriginInvalid),
        };
        let caller = self
            .client_principal(seal, clock_ms)
            .ok_or(Rejection::OriginInvalid)?;
        if caller.actor() != *actor || actor.role == Role::Node {
            return Err(Rejection::OriginInvalid);
        }
        let decoded = (self.decode)(&seal.method, &seal.path, &seal.body);
        if decoded.as_ref() != Some(&command) {
            return Err(Rejection::OriginInvalid);
        }
        at.not_revoked(&*self.certificate(&seal.cert, clock_ms)?)
    }

    /// The principal a client seal's certificate names, if it is valid at
    /// `now_ms` and its signature verifies over the seal's request (what the
    /// edge checks; apply also checks the caller, the age and the command).
    pub fn client_principal(&self, seal: &ClientSeal, now_ms: u64) -> Option<Principal> {
        let caller = self.certificate(&seal.cert, now_ms).ok()?;
        let m = request_message(
            &self.genesis_hex,
            &seal.method,
            &seal.path,
            seal.signed_at_ms,
            &seal.body,
        );
        self.ecdsa_p256
            .verify_signature(&caller.public_key, &m, &seal.signature)
            .ok()?;
        Some(caller.principal.clone())
    }

    /// The seal's certificate, if it is node `seal.node`'s and valid at
    /// `clock_ms`.
    fn node_cert(&self, seal: &Seal, clock_ms: u64) -> Result<Arc<Known>, Rejection> {
        let known = self.certificate(&seal.cert, clock_ms)?;
        match self.trust.node_of(known.principal.clone()) {
            Ok(node) if node.id == seal.node => Ok(known),
            _ => Err(Rejection::OriginInvalid),
        }
    }

    /// A certificate checked against the member CAs as of `clock_ms`.
    fn certificate(&self, der: &[u8], clock_ms: u64) -> Result<Arc<Known>, Rejection> {
        let secs = clock_ms / 1000;
        let within = |k: &Known| (k.valid_secs.0..=k.valid_secs.1).contains(&secs);
        let key: Hash = Sha256::digest(der).into();
        let view = self.trust.view();
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(k) = known.get(&key).filter(|k| k.generation == view.generation) {
            return if within(k) {
                Ok(k.clone())
            } else {
                Err(Rejection::OriginInvalid)
            };
        }
        let now = UnixTime::since_unix_epoch(Duration::from_secs(secs));
        let cert = CertificateDer::from(der);
        let principal = view
            .identify_at(std::slice::from_ref(&cert), now)
            .map_err(|_| Rejection::OriginInvalid)?;
        let cas = view.cas_of(principal.org());
        let facts = Self::facts(der, principal, &cas, view.generation);
        let k = Arc::new(facts.ok_or(Rejection::OriginInvalid)?);
        if known.len() >= KNOWN_CERTS_MAX {
            known.clear();
        }
        known.insert(key, k.clone());
        // The chain check does not look at the CA's own validity; the
        // window does, on this path as on the remembered one.
        if within(&k) {
            Ok(k)
        } else {
            Err(Rejection::OriginInvalid)
        }
    }

    /// What a verified certificate's check depends on besides its chain:
    /// its validity and its CA's, and its public key.
    fn facts(
        der: &[u8],
        principal: Principal,
        cas: &[CertificateDer<'_>],
        generation: u64,
    ) -> Option<Known> {
        use x509_parser::prelude::*;
        let (_, leaf) = X509Certificate::from_der(der).ok()?;
        let public_key = public_key(der)?;
        // The organization's CA that issued the leaf.
        let ca = cas.iter().find_map(|der| {
            let (_, ca) = X509Certificate::from_der(der).ok()?;
            (ca.subject().as_raw() == leaf.issuer().as_raw()).then_some(ca)
        })?;
        let secs = |t: ASN1Time| u64::try_from(t.timestamp()).unwrap_or(0);
        let from = secs(leaf.validity().not_before).max(secs(ca.validity().not_before));
        let until = secs(leaf.validity().not_after).min(secs(ca.validity().not_after));
        Some(Known {
            generation,
            serial: Serial::from_be_bytes(leaf.raw_serial())?,
            public_key,
            valid_secs: (from, until),
            principal: principal.without_cert(),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests;
