//! Governance over the API (`/v1/gov`): the bodies of proposals, ballots
//! and revocations, and the views of proposals and of the registry.
//!
//! Writes go through the one write route (`routes::write`), which requires
//! the caller's own signature for them: a ballot is the admin's signature
//! over `POST /v1/gov/proposals/{id}/ballots` with the proposal's digest in
//! the body, so the chain holds each vote as its admin signed it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::body::{account_id, amount, amount_in, check_memo, empty_body, invalid, parse_json};
use super::error::ApiError;
use super::views::Rendered;
use crate::config::{HostPort, Limits};
use crate::ledger::gov::{
    Ballot, NewNode, NodeRecord, OrgStatus, RevokedBy, CA_CERTS_MAX, CA_CERT_PEM_BYTES_MAX,
    PROPOSAL_TTL_MS_MAX, PROPOSAL_TTL_MS_MIN,
};
use crate::ledger::{
    AccountId, Action, CertRef, Command, Gov, OrgName, Proposal, ProposalState, Revocation, Serial,
    Threshold,
};

/// `POST /v1/gov/...` (the path after `gov/`) as a command.
pub fn command(path: &[&str], body: &[u8], limits: &Limits) -> Result<Command, ApiError> {
    match path {
        ["proposals"] => Ok(Command::Propose(
            parse_json::<ActionBody>(body)?.validate(limits)?,
        )),
        ["proposals", id, "ballots"] => {
            let proposal = proposal_id(id)?;
            let b = parse_json::<BallotBody>(body)?;
            let approve = match b.vote.as_str() {
                "approve" => true,
                "reject" => false,
                _ => return Err(invalid("invalid_vote", "vote must be approve or reject")),
            };
            let hex_ok = b.digest.len() == 64
                && b.digest
                    .bytes()
                    .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c));
            if !hex_ok {
                return Err(invalid(
                    "invalid_digest",
                    "digest must be the proposal's digest: 64 lowercase hex digits",
                ));
            }
            Ok(Command::Ballot {
                proposal,
                approve,
                digest: b.digest,
            })
        }
        ["join"] => {
            empty_body(body)?;
            Ok(Command::Join)
        }
        ["revocations"] => {
            let b = parse_json::<RevokeBody>(body)?;
            Ok(Command::Revoke(CertRef {
                org: org(&b.org)?,
                serial: serial(&b.serial)?,
            }))
        }
        _ => Err(ApiError::NotFound("route_not_found")),
    }
}

/// A proposal id in a path: decimal digits, no sign or leading zero.
pub fn proposal_id(s: &str) -> Result<u64, ApiError> {
    let canonical = !s.is_empty()
        && s.len() <= 20
        && s.bytes().all(|b| b.is_ascii_digit())
        && !s.starts_with('0');
    s.parse().ok().filter(|_| canonical).ok_or_else(|| {
        invalid(
            "invalid_proposal_id",
            "a proposal id is a positive decimal integer",
        )
    })
}

fn org(s: &str) -> Result<OrgName, ApiError> {
    OrgName::parse(s).map_err(|e| invalid("invalid_org", e.what))
}

fn serial(s: &str) -> Result<Serial, ApiError> {
    Serial::parse(s).map_err(|e| invalid("invalid_serial", e))
}

/// What a proposal asks: the canonical JSON of an [`Action`], with amounts
/// also accepted as decimal strings.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub(super) enum ActionBody {
    Freeze {
        account: String,
    },
    Unfreeze {
        account: String,
    },
    Correction {
        debit_account: String,
        credit_account: String,
        #[schema(schema_with = amount_in)]
        amount: Value,
        #[serde(default)]
        memo: Option<String>,
    },
    Revoke {
        org: String,
        serial: String,
    },
    SetPolicy {
        threshold: String,
        proposal_ttl_ms: u64,
    },
    AddOrg {
        name: String,
        ca_certs: Vec<String>,
    },
    RemoveOrg {
        name: String,
    },
    AddCa {
        org: String,
        ca_cert: String,
    },
    RemoveCa {
        org: String,
        ca_sha256: String,
    },
    AddNode(NewNodeBody),
    RemoveNode {
        id: u64,
    },
    ReplaceNode {
        old: u64,
        new: NewNodeBody,
    },
}

/// A node to add, as a proposal names it.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewNodeBody {
    id: u64,
    org: String,
    api_addr: String,
    raft_addr: String,
    /// Its node certificate (PEM): the registry pins its public key.
    cert: String,
}

impl NewNodeBody {
    fn validate(self) -> Result<NewNode, ApiError> {
        let Self {
            id,
            org: o,
            api_addr,
            raft_addr,
            cert,
        } = self;
        let o = org(&o)?;
        if id == 0 || id > i64::MAX as u64 {
            return Err(invalid(
                "invalid_node_id",
                "a node id is an integer in 1..=9223372036854775807, the CN of its certificate",
            ));
        }
        for (field, addr) in [("api_addr", &api_addr), ("raft_addr", &raft_addr)] {
            HostPort::try_from(addr.clone()).map_err(|e| {
                invalid(
                    "invalid_node_addr",
                    format!(
                        "{field}: {e} (HOST:PORT, the host covered by the node certificate's SAN)"
                    ),
                )
            })?;
        }
        if cert.len() > CA_CERT_PEM_BYTES_MAX {
            return Err(invalid(
                "invalid_node_cert",
                format!("cert is longer than {CA_CERT_PEM_BYTES_MAX} bytes"),
            ));
        }
        let key_sha256 = crate::identity::lapsed::node_cert_key(&cert, &o, id)
            .map_err(|e| invalid("invalid_node_cert", e))?;
        Ok(NewNode {
            id,
            org: o,
            api_addr,
            raft_addr,
            cert,
            key_sha256,
        })
    }
}

/// Days a CA certificate proposed for a new organization must still be
/// valid: one that would expire sooner is a time bomb.
pub const CA_DAYS_LEFT_MIN: i64 = 30;

/// Refuses CA certificates that expire within [`CA_DAYS_LEFT_MIN`] days of
/// this node's clock (at the edge only: apply has no clock of its own).
pub fn ensure_lasting(pems: &[String]) -> Result<(), ApiError> {
    let now = crate::api::service::write::now_ms() as i64 / 1000;
    for (i, pem) in pems.iter().enumerate() {
        let der = crate::identity::first_cert_der(pem.as_bytes()).unwrap_or_default();
        let left = crate::identity::not_after_unix(&der).map_or(0, |t| (t - now) / 86_400);
        if left < CA_DAYS_LEFT_MIN {
            return Err(invalid(
                "ca_cert_expiring",
                format!(
                    "ca_certs[{i}] expires in {left} days; a CA proposed for a member must be \
                     valid for at least {CA_DAYS_LEFT_MIN} more days: renew it first"
                ),
            ));
        }
    }
    Ok(())
}

/// A new organization's CA certificates: PEM, each one CA certificate
/// (basicConstraints CA:TRUE) that parses; at most [`CA_CERTS_MAX`].
fn ca_certs(pems: Vec<String>) -> Result<Vec<String>, ApiError> {
    let bad = |m: String| invalid("invalid_ca_cert", m);
    if !(1..=CA_CERTS_MAX).contains(&pems.len()) {
        return Err(bad(format!(
            "ca_certs must hold 1..={CA_CERTS_MAX} PEM certificates"
        )));
    }
    for (i, pem) in pems.iter().enumerate() {
        if pem.len() > CA_CERT_PEM_BYTES_MAX {
            return Err(bad(format!(
                "ca_certs[{i}] is longer than {CA_CERT_PEM_BYTES_MAX} bytes"
            )));
        }
        if !crate::identity::is_one_ca_cert(pem.as_bytes()) {
            return Err(bad(format!(
                "ca_certs[{i}] is not one PEM CA certificate (basicConstraints CA:TRUE), \
                 e.g. the ca.crt that scripts/new-org.sh writes"
            )));
        }
    }
    Ok(pems)
}

impl ActionBody {
    fn validate(self, limits: &Limits) -> Result<Action, ApiError> {
        Ok(match self {
            Self::Freeze { account } => Action::Freeze {
                account: account_id(&account)?,
            },
            Self::Unfreeze { account } => Action::Unfreeze {
                account: account_id(&account)?,
            },
            Self::Correction {
                debit_account,
                credit_account,
                amount: units,
                memo,
            } => {
                check_memo(memo.as_ref(), limits)?;
                let (debit, credit) = (account_id(&debit_account)?, account_id(&credit_account)?);
                if debit == credit {
                    return Err(ApiError::Rejected(
                        crate::ledger::Rejection::AccountsMustBeDifferent,
                    ));
                }
                Action::Correction {
                    debit_account: debit,
                    credit_account: credit,
                    amount: amount(&units)?,
                    memo,
                }
            }
            Self::Revoke { org: o, serial: s } => Action::Revoke {
                org: org(&o)?,
                serial: serial(&s)?,
            },
            Self::SetPolicy {
                threshold,
                proposal_ttl_ms,
            } => {
                let threshold =
                    Threshold::parse(&threshold).map_err(|e| invalid("invalid_threshold", e))?;
                if !(PROPOSAL_TTL_MS_MIN..=PROPOSAL_TTL_MS_MAX).contains(&proposal_ttl_ms) {
                    return Err(invalid(
                        "invalid_proposal_ttl",
                        format!(
                            "proposal_ttl_ms must be {PROPOSAL_TTL_MS_MIN}..={PROPOSAL_TTL_MS_MAX} \
                             (one minute to one year)"
                        ),
                    ));
                }
                Action::SetPolicy {
                    threshold,
                    proposal_ttl_ms,
                }
            }
            Self::AddOrg {
                name,
                ca_certs: pems,
            } => Action::AddOrg {
                name: org(&name)?,
                ca_certs: ca_certs(pems)?,
            },
            Self::RemoveOrg { name } => Action::RemoveOrg { name: org(&name)? },
            Self::AddCa { org: o, ca_cert } => Action::AddCa {
                org: org(&o)?,
                ca_cert: ca_certs(vec![ca_cert])?.remove(0),
            },
            Self::RemoveCa { org: o, ca_sha256 } => {
                let hex_ok = ca_sha256.len() == 64
                    && ca_sha256
                        .bytes()
                        .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c));
                if !hex_ok {
                    return Err(invalid(
                        "invalid_ca_sha256",
                        "ca_sha256 is the CA certificate's SHA-256 as the registry shows it: \
                         64 lowercase hex digits",
                    ));
                }
                Action::RemoveCa {
                    org: org(&o)?,
                    ca_sha256,
                }
            }
            Self::AddNode(node) => Action::AddNode(Box::new(node.validate()?)),
            Self::ReplaceNode { old, new } => Action::ReplaceNode {
                old,
                new: Box::new(new.validate()?),
            },
            Self::RemoveNode { id } => Action::RemoveNode { id },
        })
    }
}

/// `approve` or `reject` (OpenAPI).
fn vote_in() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(["approve", "reject"]))
        .into()
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct BallotBody {
    #[schema(schema_with = vote_in)]
    vote: String,
    digest: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RevokeBody {
    org: String,
    serial: String,
}

/// A proposal as the API shows it; `required` and `members` are the
/// threshold as it stands now.
#[derive(Serialize, ToSchema)]
pub(super) struct ProposalView<'a> {
    id: u64,
    action: &'a Action,
    digest: &'a str,
    proposed_by: &'a OrgName,
    proposed_height: u64,
    expires_at_ms: u64,
    state: ProposalState,
    code: Option<&'static str>,
    closed_height: Option<u64>,
    approvals: u64,
    rejections: u64,
    required: u64,
    members: usize,
    /// The organization whose own approval the action needs besides the
    /// threshold (the one a new node or CA belongs to); its rejection
    /// rejects the proposal.
    #[serde(skip_serializing_if = "Option::is_none")]
    needs_approval_of: Option<&'a OrgName>,
    ballots: Vec<BallotView<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    as_of: Option<u64>,
    /// (A write's answer) the nodes that had applied it when it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    enforced_on: Option<&'a [u64]>,
}

#[derive(Serialize, ToSchema)]
pub(super) struct BallotView<'a> {
    org: &'a OrgName,
    vote: &'static str,
    height: u64,
    signed_at_ms: u64,
    /// SHA-256 of the signing admin's certificate.
    signer: &'a str,
    /// The admin's certificate (DER), hex.
    certificate: &'a str,
    /// The signature over the ballot's request, hex.
    signature: &'a str,
    /// The signed request body.
    body: &'a str,
}

fn proposal_view<'a>(p: &'a Proposal, gov: &Gov, as_of: Option<u64>) -> ProposalView<'a> {
    proposal_view_on(p, gov, as_of, None)
}

fn proposal_view_on<'a>(
    p: &'a Proposal,
    gov: &Gov,
    as_of: Option<u64>,
    enforced_on: Option<&'a [u64]>,
) -> ProposalView<'a> {
    let ballot = |(org, b): (&'a OrgName, &'a Ballot)| BallotView {
        org,
        vote: if b.approve { "approve" } else { "reject" },
        height: b.height,
        signed_at_ms: b.signed_at_ms,
        signer: &b.signer,
        certificate: &b.certificate,
        signature: &b.signature,
        body: &b.body,
    };
    let (approvals, rejections) = gov.tally(p);
    ProposalView {
        id: p.id,
        action: &p.action,
        digest: &p.digest,
        proposed_by: &p.proposed_by,
        proposed_height: p.proposed_height,
        expires_at_ms: p.expires_at_ms,
        state: p.state,
        code: p.code.map(|c| c.code()),
        closed_height: p.closed_height,
        approvals,
        rejections,
        required: gov.required(),
        members: gov.members(),
        needs_approval_of: p.action.owner(),
        ballots: p.ballots.iter().map(ballot).collect(),
        as_of,
        enforced_on,
    }
}

/// A proposal as a governance write left it, and where that is enforced.
pub fn proposal_written(p: &Proposal, gov: &Gov, enforced_on: Option<&[u64]>) -> Rendered {
    Rendered::ok(&proposal_view_on(p, gov, None, enforced_on))
}

/// One proposal (`GET /v1/gov/proposals/{id}`, and a governance write's
/// answer).
pub fn proposal(p: &Proposal, gov: &Gov, as_of: Option<u64>) -> Rendered {
    Rendered::ok(&proposal_view(p, gov, as_of))
}

#[derive(Serialize, ToSchema)]
pub(super) struct ProposalsPage<'a> {
    proposals: Vec<ProposalView<'a>>,
    next_cursor: Option<String>,
    as_of: u64,
}

/// Proposals from id `from` on, at most `limit`.
pub fn proposals(gov: &Gov, from: u64, limit: usize, as_of: u64) -> Rendered {
    let mut page: Vec<&Proposal> = gov.proposals_from(from).take(limit + 1).collect();
    let next = (page.len() > limit).then(|| page[limit].id.to_string());
    page.truncate(limit);
    Rendered::ok(&ProposalsPage {
        proposals: page
            .into_iter()
            .map(|p| proposal_view(p, gov, None))
            .collect(),
        next_cursor: next,
        as_of,
    })
}

#[derive(Serialize, ToSchema)]
pub(super) struct RevocationView<'a> {
    org: &'a OrgName,
    serial: &'a Serial,
    /// `owner`, or the proposal that revoked it.
    revoked_by: String,
    height: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    enforced_on: Option<&'a [u64]>,
}

impl<'a> From<&'a Revocation> for RevocationView<'a> {
    fn from(r: &'a Revocation) -> Self {
        Self {
            org: &r.cert.org,
            serial: &r.cert.serial,
            revoked_by: match r.by {
                RevokedBy::Owner => "owner".to_owned(),
                RevokedBy::Proposal(id) => format!("proposal {id}"),
            },
            height: r.height,
            enforced_on: None,
        }
    }
}

/// A revocation (`POST /v1/gov/revocations`), and where it is enforced.
pub fn revocation<'a>(r: &'a Revocation, enforced_on: Option<&'a [u64]>) -> Rendered {
    Rendered::ok(&RevocationView {
        enforced_on,
        ..RevocationView::from(r)
    })
}

#[derive(Serialize, ToSchema)]
pub(super) struct RegistryView<'a> {
    orgs: Vec<OrgView<'a>>,
    members: usize,
    threshold: String,
    required: u64,
    proposal_ttl_ms: u64,
    revoked: Vec<RevocationView<'a>>,
    frozen: Vec<FrozenView<'a>>,
    /// Every node that ever was one, by id (a removed one's id is never
    /// reused).
    #[schema(value_type = BTreeMap<String, NodeRecord>)]
    nodes: &'a BTreeMap<u64, NodeRecord>,
    as_of: u64,
}

#[derive(Serialize, ToSchema)]
pub(super) struct OrgView<'a> {
    name: &'a OrgName,
    status: OrgStatus,
    /// The block that added it (0: genesis) or last changed its status.
    since_height: u64,
    cas: Vec<CaView<'a>>,
    nodes: &'a BTreeSet<u64>,
}

#[derive(Serialize, ToSchema)]
pub(super) struct CaView<'a> {
    /// SHA-256 of the CA certificate (DER), hex.
    sha256: String,
    /// When it expires, in seconds since the Unix epoch.
    not_after: Option<i64>,
    pem: &'a str,
}

#[derive(Serialize, ToSchema)]
pub(super) struct FrozenView<'a> {
    account: &'a AccountId,
    proposal: u64,
}

/// The registry (`GET /v1/gov/registry`): the organizations, the policy,
/// revoked certificates and frozen accounts.
pub fn registry(gov: &Gov, as_of: u64) -> Rendered {
    use sha2::{Digest, Sha256};
    fn ca(pem: &String) -> CaView<'_> {
        let der = crate::identity::first_cert_der(pem.as_bytes());
        CaView {
            sha256: der
                .as_deref()
                .map(|d| hex::encode(Sha256::digest(d)))
                .unwrap_or_default(),
            not_after: der.as_deref().and_then(crate::identity::not_after_unix),
            pem,
        }
    }
    let nodes: BTreeMap<u64, NodeRecord> = gov.nodes().map(|(id, n)| (*id, n.clone())).collect();
    Rendered::ok(&RegistryView {
        orgs: gov
            .orgs()
            .map(|(name, m)| OrgView {
                name,
                status: m.status,
                since_height: m.since_height,
                cas: m.ca_certs.iter().map(ca).collect(),
                nodes: &m.nodes,
            })
            .collect(),
        members: gov.members(),
        threshold: gov.policy().threshold.to_string(),
        required: gov.required(),
        proposal_ttl_ms: gov.policy().proposal_ttl_ms,
        revoked: gov.revoked().map(RevocationView::from).collect(),
        frozen: gov
            .frozen()
            .map(|(account, proposal)| FrozenView {
                account,
                proposal: *proposal,
            })
            .collect(),
        nodes: &nodes,
        as_of,
    })
}

/// The answer to `POST /v1/gov/join`.
#[derive(Serialize, ToSchema)]
pub(super) struct Joined<'a> {
    org: &'a OrgName,
    status: Option<OrgStatus>,
    members: usize,
    enforced_on: Option<&'a [u64]>,
}

/// An organization that acknowledged joining (`POST /v1/gov/join`).
pub fn joined(org: &OrgName, gov: &Gov, enforced_on: Option<&[u64]>) -> Rendered {
    Rendered::ok(&Joined {
        org,
        status: gov.member(org).map(|m| m.status),
        members: gov.members(),
        enforced_on,
    })
}
