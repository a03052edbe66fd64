//! Evidence of who sent a write, carried in the log with it.
//!
//! Members do not trust each other, and Raft makes every replica apply what
//! the leader logs. So a write names its caller only together with evidence
//! that a replica can check on its own: a [`Seal`] made with the private key
//! of the member node that authenticated the caller over mutual TLS (valid
//! only for callers of that node's own organization). The ledger does not
//! check signatures itself (it has no keys and no certificates): the caller
//! of [`super::Ledger::apply_logged`] checks each unit's evidence and passes
//! one [`Verdict`] per unit, and the ledger records a refused unit's
//! transfers and commands as rejections, like any other refusal.

use serde::{Deserialize, Serialize};

use super::{Grouped, Rejection};

/// What proves who sent a unit of the log (a command, or one bundle of a
/// group commit).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Evidence {
    /// No caller: an entry the leader makes on its own (a `Tick`). Valid for
    /// nothing else.
    Leader,
    /// Signed by the member node that authenticated the caller.
    Node(Seal),
    /// Signed by the caller itself, over its request as sent.
    Client(ClientSeal),
}

/// A member node's signature over what it accepted from its callers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seal {
    /// The signing node's id.
    pub node: u64,
    /// The signing node's certificate (DER), checked against its
    /// organization's CA at the ledger clock.
    pub cert: Vec<u8>,
    /// The signing node's clock when it signed, in ms since the Unix epoch.
    pub signed_at_ms: u64,
    /// The height the signing node had applied when it signed: a
    /// revocation of its organization's certificates at a later height was
    /// not yet enforced there, so the write is refused.
    pub as_of_height: u64,
    /// ECDSA P-256 with SHA-256 (ASN.1 DER) over the attestation message.
    pub signature: Vec<u8>,
}

/// A caller's own signature over the request it sent: the method, path and
/// exact body bytes, which every replica decodes again and compares with
/// the command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientSeal {
    /// The caller's certificate (DER), checked against its organization's
    /// CA at the ledger clock.
    pub cert: Vec<u8>,
    /// The caller's clock when it signed, in ms since the Unix epoch.
    pub signed_at_ms: u64,
    /// ECDSA P-256 with SHA-256 (ASN.1 DER) over the request message.
    pub signature: Vec<u8>,
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
}

/// Single transfers of one node's callers inside a group commit, with that
/// node's evidence for all of them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bundle {
    pub evidence: Evidence,
    pub items: Vec<Grouped>,
}

/// Whether a unit's evidence proves its callers: `Ok`, or the rejection
/// every item of the unit gets.
pub type Verdict = Result<(), Rejection>;
