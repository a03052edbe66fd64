//! Governance: the consortium's replicated rules and the votes that change
//! them.
//!
//! Pure and deterministic like the rest of the ledger: [`Gov`] starts from
//! genesis, lives in the ledger (and so in snapshots), and changes only by
//! committed entries. An organization's admin proposes an [`Action`]; each
//! organization casts at most one [`Ballot`], never changed; the action
//! executes in the entry whose ballot reaches the [`Threshold`] of member
//! organizations, or ends `failed` with a code if its preconditions do not
//! hold then. It is `rejected` once it can no longer pass and `expired`
//! once its time to live has passed on the ledger clock.
//!
//! Who signed a ballot is checked outside the ledger, like every write's
//! evidence (see `origin.rs`): governance writes must carry the caller's
//! own signature ([`super::ClientSeal`]), so that the chain holds every
//! ballot with the admin signature that cast it.
//!
//! # Layout
//!
//! - this file: the values ([`Action`], [`Proposal`], [`Policy`], ...) and
//!   the [`Gov`] state;
//! - `apply.rs`: proposing, voting, revoking, expiry and execution;
//! - `stored.rs`: what apply takes for granted of a stored state.

mod apply;
mod stored;

pub use apply::pem_sha256;
pub use stored::PROPOSAL_ID_MAX;
#[cfg(test)]
pub(super) mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::ids::string_schema;
use super::{AccountId, Amount, OrgName, Rejection};

/// How long a proposal stays open by default: 7 days on the ledger clock.
pub const PROPOSAL_TTL_MS_DEFAULT: u64 = 7 * 24 * 3600 * 1000;
/// Shortest and longest time to live a policy may set.
pub const PROPOSAL_TTL_MS_MIN: u64 = 3600 * 1000;
pub const PROPOSAL_TTL_MS_MAX: u64 = 365 * 24 * 3600 * 1000;
/// Open proposals an organization may have at once: a member cannot fill
/// the registry with proposals nobody votes on.
pub const OPEN_PROPOSALS_PER_ORG_MAX: usize = 16;
/// Most certificates one organization's admins may revoke themselves
/// (revocations by vote are not counted): every replica keeps each
/// revocation, so one member alone must not be able to grow that set
/// without bound.
pub const OWN_REVOCATIONS_PER_ORG_MAX: usize = 1024;
/// Longest signed body a ballot may have: every ballot is kept, body and
/// all, so that anyone can check its signature.
pub const BALLOT_BODY_BYTES_MAX: usize = 1024;
/// Largest denominator of a threshold fraction.
pub const THRESHOLD_DENOMINATOR_MAX: u32 = 1000;
/// Longest memo of a correction, in bytes (as a transfer's).
pub const CORRECTION_MEMO_BYTES_MAX: usize = 512;
/// CA certificates an organization may have at once (rotation by overlap
/// needs two), and the size of each (PEM).
pub const CA_CERTS_MAX: usize = 4;
pub const CA_CERT_PEM_BYTES_MAX: usize = 16 * 1024;
/// Longest `host:port` of a node, in bytes (a DNS name is at most 253).
pub const NODE_ADDR_BYTES_MAX: usize = 260;
/// Nodes the registry may hold at once (removed ones are kept apart, so
/// that their ids are never reused): Raft with more voters than this gains
/// nothing.
pub const NODES_MAX: usize = 64;
/// Nodes a removal must leave: with fewer than three, one lost node stops
/// the consortium.
pub const NODES_MIN: usize = 3;

/// The pseudo-organization that posts corrections: no member may take the
/// name, so no member can write in its namespace.
pub const GOV_ORG: &str = "gov";

/// How many member organizations must approve; written `majority` or
/// `N/D`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Threshold {
    /// More than half.
    Majority,
    /// At least `num`/`den` of them, rounded up; always more than half.
    Fraction { num: u32, den: u32 },
}

impl utoipa::PartialSchema for Threshold {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        string_schema(
            "^(majority|[0-9]{1,4}/[0-9]{1,4})$",
            "`majority`, or a fraction N/D above one half and at most 1",
        )
    }
}

impl utoipa::ToSchema for Threshold {}

impl Threshold {
    /// Parses `majority` or `N/D` (more than one half, at most one, `D` at
    /// most [`THRESHOLD_DENOMINATOR_MAX`]).
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        const FORMAT: &str = "threshold must be `majority` or a fraction N/D above one half and at most 1, such as 2/3";
        if s == "majority" {
            return Ok(Self::Majority);
        }
        let (num, den) = s.split_once('/').ok_or(FORMAT)?;
        let digits =
            |x: &str| !x.is_empty() && x.len() <= 4 && x.bytes().all(|b| b.is_ascii_digit());
        if !digits(num) || !digits(den) {
            return Err(FORMAT);
        }
        let t = Self::Fraction {
            num: num.parse().map_err(|_| FORMAT)?,
            den: den.parse().map_err(|_| FORMAT)?,
        };
        t.valid().then_some(t).ok_or(FORMAT)
    }

    /// Above one half, at most one, with a bounded denominator.
    pub fn valid(self) -> bool {
        match self {
            Self::Majority => true,
            Self::Fraction { num, den } => {
                den > 0 && den <= THRESHOLD_DENOMINATOR_MAX && num <= den && 2 * num > den
            }
        }
    }

    /// Approvals needed among `members` organizations: integer arithmetic,
    /// so 2/3 of 15 is 10, a majority of 15 is 8, 2/3 of 3 is 2.
    pub fn required(self, members: u64) -> u64 {
        match self {
            Self::Majority => members / 2 + 1,
            Self::Fraction { num, den } => {
                (members * u64::from(num)).div_ceil(u64::from(den)).max(1)
            }
        }
    }
}

impl TryFrom<String> for Threshold {
    type Error = &'static str;
    fn try_from(s: String) -> Result<Self, &'static str> {
        let t = Self::parse(&s)?;
        // From the log or a peer: only the form Display writes.
        (t.to_string() == s)
            .then_some(t)
            .ok_or("threshold must be written without leading zeros")
    }
}

impl From<Threshold> for String {
    fn from(t: Threshold) -> String {
        t.to_string()
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Majority => f.write_str("majority"),
            Self::Fraction { num, den } => write!(f, "{num}/{den}"),
        }
    }
}

/// The rules governance itself follows; changed by vote.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub threshold: Threshold,
    pub proposal_ttl_ms: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            threshold: Threshold::Majority,
            proposal_ttl_ms: PROPOSAL_TTL_MS_DEFAULT,
        }
    }
}

impl Policy {
    pub fn valid(&self) -> bool {
        self.threshold.valid()
            && (PROPOSAL_TTL_MS_MIN..=PROPOSAL_TTL_MS_MAX).contains(&self.proposal_ttl_ms)
    }
}

/// A certificate's serial number: lowercase hex without leading zeros
/// (`0` for zero), at most 20 bytes as RFC 5280 allows.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Serial(String);

impl utoipa::PartialSchema for Serial {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        string_schema(
            "^[0-9a-f]{1,40}$",
            "a certificate's serial number: lowercase hex, no leading zeros",
        )
    }
}

impl utoipa::ToSchema for Serial {}

impl Serial {
    /// Parses hex digits (any case, leading zeros and `:` separators as
    /// `openssl x509 -serial` or a browser shows them).
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        const FORMAT: &str =
            "serial must be the certificate's serial number in hex (openssl x509 -noout -serial)";
        let digits: String = s.chars().filter(|c| *c != ':').collect();
        if digits.is_empty() || digits.len() > 64 || !digits.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(FORMAT);
        }
        let trimmed = digits.trim_start_matches('0').to_ascii_lowercase();
        if trimmed.len() > 40 {
            return Err(FORMAT);
        }
        Ok(Self(if trimmed.is_empty() {
            "0".into()
        } else {
            trimmed
        }))
    }

    /// A serial as a certificate encodes it: big-endian bytes.
    pub fn from_be_bytes(bytes: &[u8]) -> Option<Self> {
        Self::parse(&hex::encode(bytes)).ok()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Serial {
    type Error = &'static str;
    fn try_from(s: String) -> Result<Self, &'static str> {
        let parsed = Self::parse(&s)?;
        // From the log or a peer: only the canonical form.
        (parsed.0 == s)
            .then_some(parsed)
            .ok_or("serial must be lowercase hex without leading zeros")
    }
}

impl From<Serial> for String {
    fn from(s: Serial) -> String {
        s.0
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A certificate, by the organization whose CA issued it and its serial.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CertRef {
    pub org: OrgName,
    pub serial: Serial,
}

/// What a proposal asks the consortium to do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// No transfer may debit or credit the account (pending ones may still
    /// be voided or expire; reads still work).
    Freeze {
        account: AccountId,
    },
    Unfreeze {
        account: AccountId,
    },
    /// One transfer between any two accounts, posted by `gov` as
    /// `gov.correction-<proposal>`: the asset, closed-account, overdraft
    /// and balance ceiling rules hold; a freeze does not stop it.
    Correction {
        debit_account: AccountId,
        credit_account: AccountId,
        amount: Amount,
        memo: Option<String>,
    },
    /// Another organization's certificate, by its issuing organization and
    /// serial (an organization's admin revokes its own at once, without a
    /// vote).
    Revoke {
        org: OrgName,
        serial: Serial,
    },
    /// A new member organization with its CA certificates (PEM): its
    /// certificates are accepted from the entry that executes this; it
    /// counts towards the threshold once its admin acknowledged joining.
    AddOrg {
        name: OrgName,
        ca_certs: Vec<String>,
    },
    /// A member leaves: its certificates are refused from then on, its
    /// accounts frozen, grants to it dropped; its name is never reused.
    RemoveOrg {
        name: OrgName,
    },
    /// Another CA certificate (PEM) for an organization: rotation by
    /// overlap, both trusted until the old one is removed.
    AddCa {
        org: OrgName,
        ca_cert: String,
    },
    /// Stop trusting one of an organization's CAs, named by the SHA-256 of
    /// its certificate (DER, hex): certificates it issued are refused.
    RemoveCa {
        org: OrgName,
        ca_sha256: String,
    },
    SetPolicy {
        threshold: Threshold,
        proposal_ttl_ms: u64,
    },
    /// A new node of a member organization, with a new id (ids are never
    /// reused), its addresses, and its certificate (PEM) whose public key
    /// (`key_sha256`) the registry pins. The leader then adds it to Raft:
    /// as a learner, and as a voter once it has caught up.
    AddNode(Box<NewNode>),
    /// A node leaves: the leader removes it from Raft, and its id is never
    /// reused. At least [`NODES_MIN`] nodes remain.
    RemoveNode {
        id: u64,
    },
    /// Both at once: node `new` joins and node `old` leaves. The leader
    /// removes `old` from Raft once `new` votes.
    ReplaceNode {
        old: u64,
        new: Box<NewNode>,
    },
}

/// A node an [`Action::AddNode`] adds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NewNode {
    pub id: u64,
    pub org: OrgName,
    pub api_addr: String,
    pub raft_addr: String,
    /// Its certificate (PEM), for the members to check before they vote.
    pub cert: String,
    /// SHA-256 (hex) of the certificate's public key: what the registry
    /// pins.
    pub key_sha256: String,
}

impl Action {
    /// The organization whose own approval the action needs besides the
    /// threshold: the one a node or a CA would be added in the name of (a
    /// CA issues identities in its name, and only it can run its node).
    pub fn owner(&self) -> Option<&OrgName> {
        match self {
            Action::AddNode(node) | Action::ReplaceNode { new: node, .. } => Some(&node.org),
            Action::AddCa { org, .. } => Some(org),
            _ => None,
        }
    }

    /// The canonical JSON of the action: what a ballot's digest covers and
    /// what `alliance client gov approve` shows before it signs.
    pub fn canonical_json(&self) -> String {
        serde_json::to_string(self).expect("actions serialize")
    }

    /// The digest a ballot on proposal `id` of this action signs: SHA-256
    /// of `alliance proposal v1\n<id>\n<canonical JSON>`, lowercase hex.
    pub fn digest(&self, id: u64) -> String {
        let mut h = Sha256::new();
        h.update(format!("alliance proposal v1\n{id}\n"));
        h.update(self.canonical_json());
        hex::encode(h.finalize())
    }
}

/// Where a proposal stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProposalState {
    Open,
    /// Reached the threshold and its action took effect.
    Executed,
    /// Reached the threshold, but its preconditions failed then: nothing
    /// changed (`code` says why).
    Failed,
    /// Can no longer reach the threshold.
    Rejected,
    /// Its time to live passed on the ledger clock.
    Expired,
}

/// One organization's vote, as its admin signed it: with the certificate,
/// signature and signed body, anyone can check the signature (the signed
/// message is the request's, see `identity/request.rs`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ballot {
    pub approve: bool,
    /// The block that holds it.
    pub height: u64,
    /// When the admin signed it, on the admin's clock.
    pub signed_at_ms: u64,
    /// SHA-256 of the admin's certificate (DER), hex.
    pub signer: String,
    /// The admin's certificate (DER), hex.
    pub certificate: String,
    /// The signature, hex.
    pub signature: String,
    /// The signed request body.
    pub body: String,
}

/// A proposal and its ballots.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub id: u64,
    pub action: Action,
    /// What ballots sign: [`Action::digest`].
    pub digest: String,
    pub proposed_by: OrgName,
    pub proposed_height: u64,
    pub expires_at_ms: u64,
    pub ballots: BTreeMap<OrgName, Ballot>,
    pub state: ProposalState,
    /// Why it failed.
    pub code: Option<Rejection>,
    /// The block in which it was decided or expired.
    pub closed_height: Option<u64>,
}

/// How a certificate came to be revoked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevokedBy {
    /// Its own organization's admin, at once.
    Owner,
    /// A proposal, by vote.
    Proposal(u64),
}

/// A revoked certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    pub cert: CertRef,
    pub by: RevokedBy,
    pub height: u64,
}

/// Where a member organization stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrgStatus {
    /// Added by vote; its admin has not acknowledged joining yet. It may
    /// transact, but neither votes nor counts towards the threshold.
    Pending,
    Active,
    /// Left: its certificates are refused; its name is never reused.
    Removed,
}

/// A member organization in the registry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub status: OrgStatus,
    /// Its CA certificates (PEM).
    pub ca_certs: Vec<String>,
    /// The nodes it runs (genesis's).
    pub nodes: BTreeSet<u64>,
    /// The block that added it (0: genesis) or last changed its status.
    pub since_height: u64,
}

/// A node of the consortium in the registry: a genesis node or one added
/// by vote. A removed node's id is never reused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodeRecord {
    pub org: OrgName,
    pub api_addr: String,
    pub raft_addr: String,
    /// SHA-256 (hex) of its public key, if registered.
    pub key_sha256: Option<String>,
    pub removed: bool,
    /// The block that added it (0: genesis), or removed it.
    pub since_height: u64,
}

/// The replicated governance state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gov {
    /// Every organization that ever was a member, by name.
    pub(super) orgs: BTreeMap<OrgName, Member>,
    pub(super) policy: Policy,
    pub(super) revoked: BTreeMap<CertRef, Revocation>,
    /// Frozen accounts, with the proposal that froze each.
    pub(super) frozen: BTreeMap<AccountId, u64>,
    pub(super) proposals: BTreeMap<u64, Proposal>,
    /// Open proposals by (expiry on the ledger clock, id).
    pub(super) expiries: BTreeSet<(u64, u64)>,
    /// When each organization's latest proposal was signed (its admin's
    /// clock): one signed no later is a replay, refused.
    pub(super) proposed_at: BTreeMap<OrgName, u64>,
    /// Every node that ever was one, by id.
    pub(super) nodes: BTreeMap<u64, NodeRecord>,
}

impl Gov {
    /// The state genesis founds: its organizations, active, with their CA
    /// certificates and nodes, and its policy.
    pub fn founding(orgs: impl IntoIterator<Item = (OrgName, Member)>, policy: Policy) -> Self {
        Self {
            orgs: orgs.into_iter().collect(),
            policy,
            ..Self::default()
        }
    }

    /// The same state with genesis's nodes.
    pub fn with_nodes(mut self, nodes: impl IntoIterator<Item = (u64, NodeRecord)>) -> Self {
        self.nodes = nodes.into_iter().collect();
        self
    }

    /// A founding member: active since genesis.
    pub fn founder(ca_certs: Vec<String>, nodes: BTreeSet<u64>) -> Member {
        Member {
            status: OrgStatus::Active,
            ca_certs,
            nodes,
            since_height: 0,
        }
    }

    pub fn orgs(&self) -> impl Iterator<Item = (&OrgName, &Member)> {
        self.orgs.iter()
    }
    /// Every node that ever was one, removed ones included.
    pub fn nodes(&self) -> impl Iterator<Item = (&u64, &NodeRecord)> {
        self.nodes.iter()
    }
    pub fn node(&self, id: u64) -> Option<&NodeRecord> {
        self.nodes.get(&id)
    }
    pub fn member(&self, org: &OrgName) -> Option<&Member> {
        self.orgs.get(org)
    }
    /// Organizations that vote and count towards the threshold.
    pub fn members(&self) -> usize {
        self.orgs
            .values()
            .filter(|m| m.status == OrgStatus::Active)
            .count()
    }
    /// Organization `org`, if it is a member (pending or active);
    /// `unknown_org` otherwise.
    pub(super) fn current(&self, org: &OrgName) -> Result<&Member, Rejection> {
        (self.orgs.get(org))
            .filter(|m| m.status != OrgStatus::Removed)
            .ok_or(Rejection::UnknownOrg)
    }

    pub fn is_removed(&self, org: &OrgName) -> bool {
        self.orgs
            .get(org)
            .is_some_and(|m| m.status == OrgStatus::Removed)
    }
    pub fn policy(&self) -> &Policy {
        &self.policy
    }
    pub fn is_revoked(&self, org: &OrgName, serial: &Serial) -> bool {
        // Most checks find nothing revoked, and build no key.
        !self.revoked.is_empty()
            && self.revoked.contains_key(&CertRef {
                org: org.clone(),
                serial: serial.clone(),
            })
    }
    pub fn revoked(&self) -> impl Iterator<Item = &Revocation> {
        self.revoked.values()
    }
    /// Whether a certificate of `org` was revoked above `height`.
    pub fn revoked_above(&self, org: &OrgName, height: u64) -> bool {
        !self.revoked.is_empty() && self.revocations_of(org).any(|r| r.height > height)
    }
    /// The revocations of `org`'s certificates.
    pub(super) fn revocations_of<'a>(
        &'a self,
        org: &'a OrgName,
    ) -> impl Iterator<Item = &'a Revocation> + 'a {
        let first = CertRef {
            org: org.clone(),
            serial: Serial::parse("0").expect("the smallest serial"),
        };
        (self.revoked.range(first..))
            .take_while(move |(c, _)| &c.org == org)
            .map(|(_, r)| r)
    }
    pub fn is_frozen(&self, account: &AccountId) -> bool {
        self.frozen.contains_key(account)
    }
    pub fn frozen(&self) -> impl Iterator<Item = (&AccountId, &u64)> {
        self.frozen.iter()
    }
    pub fn proposal(&self, id: u64) -> Option<&Proposal> {
        self.proposals.get(&id)
    }
    /// Proposals with ids from `from` on, in id order.
    pub fn proposals_from(&self, from: u64) -> impl Iterator<Item = &Proposal> {
        self.proposals.range(from..).map(|(_, p)| p)
    }
    /// A proposal's approvals and rejections, counting only the ballots of
    /// organizations active now: a removed organization's ballot no longer
    /// counts, as it no longer counts towards [`Gov::required`].
    pub fn tally(&self, p: &Proposal) -> (u64, u64) {
        let active = |org: &OrgName| self.member(org).map(|m| m.status) == Some(OrgStatus::Active);
        let counted = p.ballots.iter().filter(|(org, _)| active(org));
        counted.fold((0, 0), |(yes, no), (_, b)| {
            if b.approve {
                (yes + 1, no)
            } else {
                (yes, no + 1)
            }
        })
    }
    /// Approvals a proposal needs now.
    pub fn required(&self) -> u64 {
        self.policy.threshold.required(self.members() as u64)
    }
    /// The id the next proposal gets.
    pub(super) fn next_id(&self) -> u64 {
        self.proposals.last_key_value().map_or(1, |(id, _)| id + 1)
    }
    pub(super) fn open_of(&self, org: &OrgName) -> usize {
        self.expiries
            .iter()
            .filter(|(_, id)| &self.proposals[id].proposed_by == org)
            .count()
    }
}
