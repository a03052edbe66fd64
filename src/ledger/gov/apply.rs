//! Governance commands as one entry applies them: proposing, voting,
//! revoking one's own certificate, expiring proposals, and executing an
//! action in the entry that reaches the threshold.

use sha2::{Digest, Sha256};

use super::super::ensure;
use super::super::leaf::{BallotLeaf, Leaf};
use super::super::state::At;
use super::super::{Actor, Changes, Ledger, NewTransfer, OrgName, Rejection, Role, TransferId};
use super::{
    Action, Ballot, CertRef, Member, NewNode, NodeRecord, OrgStatus, Policy, Proposal,
    ProposalState, Revocation, RevokedBy, BALLOT_BODY_BYTES_MAX, CA_CERTS_MAX,
    CA_CERT_PEM_BYTES_MAX, GOV_ORG, NODES_MAX, NODES_MIN, NODE_ADDR_BYTES_MAX,
    OPEN_PROPOSALS_PER_ORG_MAX, OWN_REVOCATIONS_PER_ORG_MAX,
};

/// SHA-256 (hex) of the DER of the first certificate in a PEM text: how a
/// CA is named. PEM decoding only, no certificate parsing: the same on
/// every replica.
pub fn pem_sha256(pem: &str) -> Option<String> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let der = CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()?
        .ok()?;
    Some(hex::encode(Sha256::digest(der)))
}

impl Ledger {
    /// Who may write governance: an admin, with its own signature.
    /// Checks, in order: `signature_required`, `admin_required`.
    fn governor(at: At<'_>) -> Result<(), Rejection> {
        ensure(at.client.is_some(), Rejection::SignatureRequired)?;
        ensure(at.actor.role == Role::Admin, Rejection::AdminRequired)
    }

    /// Who may propose and vote: [`Self::governor`]'s checks, then
    /// `org_not_active` (an organization that has not acknowledged joining).
    fn voter(&self, at: At<'_>) -> Result<(), Rejection> {
        Self::governor(at)?;
        let status = self.gov.member(&at.actor.org).map(|m| m.status);
        ensure(status == Some(OrgStatus::Active), Rejection::OrgNotActive)
    }

    /// Opens a proposal. After [`Self::voter`]'s checks: `origin_replayed`
    /// (signed no later than the organization's latest proposal: a leader
    /// replaying a signed proposal cannot fill the organization's quota),
    /// the action's (see [`Self::check_action`]),
    /// `too_many_open_proposals`.
    pub(in crate::ledger) fn propose(
        &mut self,
        at: At<'_>,
        action: &Action,
        changes: &mut Changes,
    ) -> Result<Proposal, Rejection> {
        self.voter(at)?;
        let signed_at = at.client.expect("voter checked the signature").signed_at_ms;
        let latest = self.gov.proposed_at.get(&at.actor.org).copied();
        ensure(
            latest.is_none_or(|l| signed_at > l),
            Rejection::OriginReplayed,
        )?;
        self.check_action(action)?;
        ensure(
            self.gov.open_of(&at.actor.org) < OPEN_PROPOSALS_PER_ORG_MAX,
            Rejection::TooManyOpenProposals,
        )?;
        let id = self.gov.next_id();
        let expires_at_ms = at.clock_ms.saturating_add(self.gov.policy.proposal_ttl_ms);
        let proposal = Proposal {
            id,
            digest: action.digest(id),
            action: action.clone(),
            proposed_by: at.actor.org.clone(),
            proposed_height: at.height,
            expires_at_ms,
            ballots: Default::default(),
            state: ProposalState::Open,
            code: None,
            closed_height: None,
        };
        changes.push_leaf(&Leaf::Proposal(&proposal));
        self.gov.proposed_at.insert(at.actor.org.clone(), signed_at);
        self.gov.expiries.insert((expires_at_ms, id));
        self.gov.proposals.insert(id, proposal.clone());
        changes.gov = true;
        Ok(proposal)
    }

    /// Whether `action` names what exists and is well formed:
    /// `unknown_org` (a revocation of a non-member's certificate, the
    /// removal of a non-member), `org_exists` (a name that is or was a
    /// member's), `org_runs_nodes`, `accounts_must_be_different` (a
    /// correction between one account and itself), `account_not_found`,
    /// `invalid_action` (a policy out of bounds, a correction with a long
    /// memo, no or too many CA certificates, a removal that would leave no
    /// member, a node without an id, with an address or a certificate too
    /// long, or beyond [`NODES_MAX`], a key that is not lowercase hex, a
    /// replacement of another organization than the node it replaces),
    /// `node_exists`.
    fn check_action(&self, action: &Action) -> Result<(), Rejection> {
        match action {
            Action::Freeze { account } | Action::Unfreeze { account } => ensure(
                self.accounts.contains_key(account),
                Rejection::AccountNotFound,
            ),
            Action::Correction {
                debit_account,
                credit_account,
                memo,
                ..
            } => {
                ensure(
                    debit_account != credit_account,
                    Rejection::AccountsMustBeDifferent,
                )?;
                ensure(
                    memo.as_ref()
                        .is_none_or(|m| m.len() <= super::CORRECTION_MEMO_BYTES_MAX),
                    Rejection::InvalidAction,
                )?;
                ensure(
                    self.accounts.contains_key(debit_account)
                        && self.accounts.contains_key(credit_account),
                    Rejection::AccountNotFound,
                )
            }
            Action::Revoke { org, .. } => {
                ensure(self.gov.member(org).is_some(), Rejection::UnknownOrg)
            }
            Action::AddOrg { name, ca_certs } => {
                ensure(name.as_str() != GOV_ORG, Rejection::OrgExists)?;
                ensure(self.gov.member(name).is_none(), Rejection::OrgExists)?;
                let fits = |pem: &String| pem.len() <= CA_CERT_PEM_BYTES_MAX;
                ensure(
                    (1..=CA_CERTS_MAX).contains(&ca_certs.len()) && ca_certs.iter().all(fits),
                    Rejection::InvalidAction,
                )
            }
            Action::AddCa { org, ca_cert } => {
                let member = self.gov.current(org)?;
                // The same certificate spelled otherwise is the same CA.
                let sha = pem_sha256(ca_cert);
                let known = |pem: &String| pem_sha256(pem) == sha;
                ensure(
                    member.ca_certs.len() < CA_CERTS_MAX
                        && ca_cert.len() <= CA_CERT_PEM_BYTES_MAX
                        && sha.is_some()
                        && !member.ca_certs.iter().any(known),
                    Rejection::InvalidAction,
                )
            }
            Action::RemoveCa { org, ca_sha256 } => {
                let member = self.gov.current(org)?;
                ensure(member.nodes.is_empty(), Rejection::OrgRunsNodes)?;
                let named = |pem: &&String| pem_sha256(pem).as_deref() == Some(ca_sha256.as_str());
                ensure(
                    member.ca_certs.iter().any(|p| named(&p)),
                    Rejection::UnknownCa,
                )?;
                // Another CA stays, however many spellings of this one.
                ensure(
                    member.ca_certs.iter().any(|p| !named(&p)),
                    Rejection::InvalidAction,
                )
            }
            Action::RemoveOrg { name } => {
                let member = self.gov.current(name)?;
                ensure(member.nodes.is_empty(), Rejection::OrgRunsNodes)?;
                let others = self
                    .gov
                    .orgs()
                    .filter(|(n, m)| *n != name && m.status == OrgStatus::Active);
                ensure(others.count() > 0, Rejection::InvalidAction)
            }
            Action::SetPolicy {
                threshold,
                proposal_ttl_ms,
            } => {
                let policy = Policy {
                    threshold: *threshold,
                    proposal_ttl_ms: *proposal_ttl_ms,
                };
                ensure(policy.valid(), Rejection::InvalidAction)
            }
            Action::AddNode(node) => self.check_new_node(node, None),
            Action::RemoveNode { id } => self.check_removal(*id, 1),
            Action::ReplaceNode { old, new } => {
                self.check_removal(*old, 0)?;
                let same_org = self.gov.nodes.get(old).is_some_and(|n| n.org == new.org);
                ensure(same_org, Rejection::InvalidAction)?;
                self.check_new_node(new, Some(*old))
            }
        }
    }

    /// Casts the caller's organization's ballot on proposal `id`. After
    /// [`Self::voter`]'s checks: `ballot_too_large`, `proposal_not_found`,
    /// `digest_mismatch`, the organization's earlier ballot (the same vote
    /// again → the proposal, counted again against the threshold of now:
    /// members may have left since; another → `already_voted`),
    /// `proposal_closed`. See [`Self::decide`].
    pub(in crate::ledger) fn vote(
        &mut self,
        at: At<'_>,
        id: u64,
        approve: bool,
        digest: &str,
        changes: &mut Changes,
    ) -> Result<Proposal, Rejection> {
        self.voter(at)?;
        let seal = at.client.expect("voter checked the signature");
        ensure(
            seal.body.len() <= BALLOT_BODY_BYTES_MAX,
            Rejection::BallotTooLarge,
        )?;
        let proposal = self
            .gov
            .proposals
            .get(&id)
            .ok_or(Rejection::ProposalNotFound)?;
        ensure(proposal.digest == digest, Rejection::DigestMismatch)?;
        if let Some(earlier) = proposal.ballots.get(&at.actor.org) {
            ensure(earlier.approve == approve, Rejection::AlreadyVoted)?;
            if proposal.state == ProposalState::Open {
                self.decide(at, id, changes);
            }
            return Ok(self.gov.proposals[&id].clone());
        }
        ensure(
            proposal.state == ProposalState::Open,
            Rejection::ProposalClosed,
        )?;
        let ballot = Ballot {
            approve,
            height: at.height,
            signed_at_ms: seal.signed_at_ms,
            signer: hex::encode(Sha256::digest(&seal.cert)),
            certificate: hex::encode(&seal.cert),
            signature: hex::encode(&seal.signature),
            body: String::from_utf8_lossy(&seal.body).into_owned(),
        };
        changes.push_leaf(&Leaf::Ballot(BallotLeaf {
            proposal: id,
            org: &at.actor.org,
            digest,
            ballot: &ballot,
        }));
        let proposal = self.gov.proposals.get_mut(&id).expect("found above");
        proposal.ballots.insert(at.actor.org.clone(), ballot);
        changes.gov = true;
        self.decide(at, id, changes);
        Ok(self.gov.proposals[&id].clone())
    }

    /// Decides open proposal `id` if its ballots now allow: it executes
    /// ([`Self::execute`]) once its approvals reach the threshold and, for
    /// a node or a CA added in an organization's name, that organization
    /// approved (nobody adds a node, or a CA that would issue identities,
    /// for another); it is rejected once the threshold is out of reach, or
    /// that organization rejected it.
    fn decide(&mut self, at: At<'_>, id: u64, changes: &mut Changes) {
        let members = self.gov.members() as u64;
        let required = self.gov.required();
        let proposal = &self.gov.proposals[&id];
        let (approvals, rejections) = self.gov.tally(proposal);
        let owner =
            (proposal.action.owner()).map(|org| proposal.ballots.get(org).map(|b| b.approve));
        let (owner_approved, owner_rejected) = (
            owner.is_none_or(|vote| vote == Some(true)),
            owner == Some(Some(false)),
        );
        if approvals >= required && owner_approved {
            let action = proposal.action.clone();
            let result = self.execute(at, id, &action, changes);
            self.close(at, id, result.err(), changes);
        } else if rejections > members.saturating_sub(required) || owner_rejected {
            self.close_as(at, id, ProposalState::Rejected, None, changes);
        }
    }

    /// Closes proposal `id` after its action ran: executed, or failed with
    /// `code`.
    fn close(&mut self, at: At<'_>, id: u64, code: Option<Rejection>, changes: &mut Changes) {
        let state = match code {
            None => ProposalState::Executed,
            Some(_) => ProposalState::Failed,
        };
        self.close_as(at, id, state, code, changes);
    }

    fn close_as(
        &mut self,
        at: At<'_>,
        id: u64,
        state: ProposalState,
        code: Option<Rejection>,
        changes: &mut Changes,
    ) {
        let p = self
            .gov
            .proposals
            .get_mut(&id)
            .expect("closing a proposal that exists");
        self.gov.expiries.remove(&(p.expires_at_ms, id));
        p.state = state;
        p.code = code;
        p.closed_height = Some(at.height);
        changes.push_leaf(&Leaf::Decided {
            proposal: id,
            state,
            code: code.map(Rejection::code),
        });
        changes.gov = true;
    }

    /// Runs an approved action; a failed precondition changes nothing.
    fn execute(
        &mut self,
        at: At<'_>,
        id: u64,
        action: &Action,
        changes: &mut Changes,
    ) -> Result<(), Rejection> {
        self.check_action(action)?;
        match action {
            Action::Freeze { account } => {
                ensure(
                    !self.gov.is_frozen(account),
                    Rejection::AccountAlreadyFrozen,
                )?;
                self.gov.frozen.insert(account.clone(), id);
            }
            Action::Unfreeze { account } => {
                self.gov
                    .frozen
                    .remove(account)
                    .ok_or(Rejection::AccountNotFrozen)?;
            }
            Action::Correction {
                debit_account,
                credit_account,
                amount,
                memo,
            } => {
                let gov = Actor {
                    org: OrgName::parse(GOV_ORG).expect("a valid name"),
                    role: Role::Admin,
                };
                let req = NewTransfer {
                    id: TransferId::parse(&format!("{GOV_ORG}.correction-{id}"))
                        .expect("a valid id"),
                    debit_account: debit_account.clone(),
                    credit_account: credit_account.clone(),
                    amount: *amount,
                    asset: None,
                    memo: memo.clone(),
                    pending: false,
                    timeout_ms: None,
                };
                let at = At { actor: &gov, ..at };
                self.correct(at, &req, changes)?;
            }
            Action::Revoke { org, serial } => {
                let cert = CertRef {
                    org: org.clone(),
                    serial: serial.clone(),
                };
                self.gov
                    .revoked
                    .entry(cert.clone())
                    .or_insert_with(|| Revocation {
                        cert: cert.clone(),
                        by: RevokedBy::Proposal(id),
                        height: at.height,
                    });
            }
            Action::AddOrg { name, ca_certs } => {
                let member = Member {
                    status: OrgStatus::Pending,
                    ca_certs: ca_certs.clone(),
                    nodes: Default::default(),
                    since_height: at.height,
                };
                self.gov.orgs.insert(name.clone(), member);
                self.orgs.insert(name.clone());
            }
            Action::RemoveOrg { name } => self.remove_org(at, id, name, changes),
            Action::AddCa { org, ca_cert } => {
                let member = self.gov.orgs.get_mut(org).expect("checked to be a member");
                member.ca_certs.push(ca_cert.clone());
            }
            Action::RemoveCa { org, ca_sha256 } => {
                let member = self.gov.orgs.get_mut(org).expect("checked to be a member");
                let named = |pem: &String| pem_sha256(pem).as_deref() == Some(ca_sha256.as_str());
                member.ca_certs.retain(|pem| !named(pem));
            }
            Action::SetPolicy {
                threshold,
                proposal_ttl_ms,
            } => {
                self.gov.policy = Policy {
                    threshold: *threshold,
                    proposal_ttl_ms: *proposal_ttl_ms,
                }
            }
            Action::AddNode(node) => self.add_node(at, node),
            Action::RemoveNode { id } => self.remove_node(at, *id),
            Action::ReplaceNode { old, new } => {
                self.add_node(at, new);
                self.remove_node(at, *old);
            }
        }
        Ok(())
    }

    /// Whether `node` may join the registry: `unknown_org`,
    /// `invalid_action` (no id, an address or a certificate too long, the
    /// registry full), `node_exists` (its id ever used, or an address of a
    /// node other than `replaced`).
    fn check_new_node(&self, node: &NewNode, replaced: Option<u64>) -> Result<(), Rejection> {
        let NewNode {
            id,
            org,
            api_addr,
            raft_addr,
            cert,
            key_sha256,
        } = node;
        self.gov.current(org)?;
        let addrs = [api_addr, raft_addr];
        let fits = |a: &&String| (1..=NODE_ADDR_BYTES_MAX).contains(&a.len());
        ensure(
            *id != 0
                && addrs.iter().all(fits)
                && api_addr != raft_addr
                && cert.len() <= CA_CERT_PEM_BYTES_MAX
                && key_sha256.len() == 64
                && key_sha256
                    .bytes()
                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
                && self.gov.nodes.values().filter(|n| !n.removed).count() < NODES_MAX,
            Rejection::InvalidAction,
        )?;
        let taken = |(n, r): (&u64, &NodeRecord)| {
            !r.removed
                && Some(*n) != replaced
                && addrs
                    .iter()
                    .any(|a| **a == r.api_addr || **a == r.raft_addr)
        };
        ensure(
            !self.gov.nodes.contains_key(id) && !self.gov.nodes.iter().any(taken),
            Rejection::NodeExists,
        )
    }

    /// Whether node `id` may leave the registry (`leaving` is 1, or 0 when
    /// another joins in the same action): `node_not_found`,
    /// `too_few_nodes`.
    fn check_removal(&self, id: u64, leaving: usize) -> Result<(), Rejection> {
        let node = self.gov.nodes.get(&id).filter(|n| !n.removed);
        ensure(node.is_some(), Rejection::NodeNotFound)?;
        let current = self.gov.nodes.values().filter(|n| !n.removed).count();
        ensure(
            leaving == 0 || current - leaving >= NODES_MIN,
            Rejection::TooFewNodes,
        )
    }

    fn add_node(&mut self, at: At<'_>, node: &NewNode) {
        let record = NodeRecord {
            org: node.org.clone(),
            api_addr: node.api_addr.clone(),
            raft_addr: node.raft_addr.clone(),
            key_sha256: Some(node.key_sha256.clone()),
            removed: false,
            since_height: at.height,
        };
        self.gov.nodes.insert(node.id, record);
        let member = (self.gov.orgs.get_mut(&node.org)).expect("checked to be a member");
        member.nodes.insert(node.id);
    }

    fn remove_node(&mut self, at: At<'_>, id: u64) {
        let node = self.gov.nodes.get_mut(&id).expect("checked to be a node");
        node.removed = true;
        node.since_height = at.height;
        if let Some(member) = self.gov.orgs.get_mut(&node.org) {
            member.nodes.remove(&id);
        }
    }

    /// Removes organization `name` by proposal `id`: its accounts are
    /// frozen, grants to it dropped, and its other open proposals fail
    /// with `org_removed` (its ballots stop counting, see [`super::Gov::tally`]).
    fn remove_org(&mut self, at: At<'_>, id: u64, name: &OrgName, changes: &mut Changes) {
        let member = self.gov.orgs.get_mut(name).expect("checked to be a member");
        member.status = OrgStatus::Removed;
        member.since_height = at.height;
        self.orgs.remove(name);
        let open: Vec<u64> = (self.gov.expiries.iter())
            .map(|(_, p)| *p)
            .filter(|p| *p != id && &self.gov.proposals[p].proposed_by == name)
            .collect();
        for p in open {
            self.close(at, p, Some(Rejection::OrgRemoved), changes);
        }
        let touched: Vec<_> = (self.accounts.values())
            .filter(|a| &a.owner == name || a.readers.contains(name))
            .map(|a| (a.id.clone(), &a.owner == name))
            .collect();
        for (account, owned) in touched {
            if owned {
                self.gov.frozen.entry(account).or_insert(id);
            } else {
                self.account_mut(&account, changes).readers.remove(name);
            }
        }
    }

    /// Acknowledges, as the admin of an organization added by vote, that it
    /// joined: from then on it votes and counts towards the threshold.
    /// After [`Self::governor`]'s checks: `unknown_org` (not added, or
    /// removed); already active → its name.
    pub(in crate::ledger) fn join(
        &mut self,
        at: At<'_>,
        changes: &mut Changes,
    ) -> Result<OrgName, Rejection> {
        Self::governor(at)?;
        let org = &at.actor.org;
        let member = self.gov.orgs.get_mut(org).ok_or(Rejection::UnknownOrg)?;
        match member.status {
            OrgStatus::Active => return Ok(org.clone()),
            OrgStatus::Removed => return Err(Rejection::UnknownOrg),
            OrgStatus::Pending => {}
        }
        member.status = OrgStatus::Active;
        member.since_height = at.height;
        changes.push_leaf(&Leaf::Joined { org });
        changes.gov = true;
        Ok(org.clone())
    }

    /// Revokes one of the caller's own organization's certificates at once.
    /// After [`Self::governor`]'s checks: `vote_required` (another
    /// organization's certificate); an already revoked one → its
    /// revocation.
    pub(in crate::ledger) fn revoke_own(
        &mut self,
        at: At<'_>,
        cert: &CertRef,
        changes: &mut Changes,
    ) -> Result<Revocation, Rejection> {
        Self::governor(at)?;
        ensure(cert.org == at.actor.org, Rejection::VoteRequired)?;
        if let Some(r) = self.gov.revoked.get(cert) {
            return Ok(r.clone());
        }
        let own = (self.gov.revocations_of(&cert.org)).filter(|r| r.by == RevokedBy::Owner);
        ensure(
            own.count() < OWN_REVOCATIONS_PER_ORG_MAX,
            Rejection::TooManyRevocations,
        )?;
        let r = Revocation {
            cert: cert.clone(),
            by: RevokedBy::Owner,
            height: at.height,
        };
        changes.push_leaf(&Leaf::Revoked(&r));
        self.gov.revoked.insert(cert.clone(), r.clone());
        changes.gov = true;
        Ok(r)
    }

    /// Expires every open proposal due on the ledger clock, in order of
    /// expiry then id.
    pub(in crate::ledger) fn expire_proposals(&mut self, at: At<'_>, changes: &mut Changes) {
        while let Some(&(due, id)) = self.gov.expiries.first() {
            if due > at.clock_ms {
                break;
            }
            self.close_as(at, id, ProposalState::Expired, None, changes);
        }
    }
}
