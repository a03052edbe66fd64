//! Governance commands as one entry applies them: proposing, voting,
//! revoking one's own certificate, expiring proposals, and executing an
//! action in the entry that reaches the threshold.

use sha2::{Digest, Sha256};

use super::super::ensure;
use super::super::leaf::{BallotLeaf, Leaf};
use super::super::state::At;
use super::super::{Actor, Changes, Ledger, NewTransfer, OrgName, Rejection, Role, TransferId};
use super::{
    Action, Ballot, CertRef, Policy, Proposal, ProposalState, Revocation, RevokedBy, GOV_ORG,
    OPEN_PROPOSALS_PER_ORG_MAX,
};

impl Ledger {
    /// Who may write governance: an admin, with its own signature.
    /// Checks, in order: `signature_required`, `admin_required`.
    fn governor(at: At<'_>) -> Result<(), Rejection> {
        ensure(at.client.is_some(), Rejection::SignatureRequired)?;
        ensure(at.actor.role == Role::Admin, Rejection::AdminRequired)
    }

    /// Opens a proposal. After [`Self::governor`]'s checks:
    /// `invalid_action` (see [`Self::check_action`]),
    /// `too_many_open_proposals`.
    pub(in crate::ledger) fn propose(
        &mut self,
        at: At<'_>,
        action: &Action,
        changes: &mut Changes,
    ) -> Result<Proposal, Rejection> {
        Self::governor(at)?;
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
        self.gov.expiries.insert((expires_at_ms, id));
        self.gov.proposals.insert(id, proposal.clone());
        changes.gov = true;
        Ok(proposal)
    }

    /// Whether `action` names what exists and is well formed:
    /// `unknown_org` (a revocation of a non-member's certificate),
    /// `account_not_found`, `invalid_action` (a policy out of bounds, a
    /// correction between one account and itself or with a long memo).
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
                ensure(debit_account != credit_account, Rejection::InvalidAction)?;
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
            Action::Revoke { org, .. } => ensure(self.orgs.contains(org), Rejection::UnknownOrg),
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
        }
    }

    /// Casts the caller's organization's ballot on proposal `id`. After
    /// [`Self::governor`]'s checks: `proposal_not_found`,
    /// `digest_mismatch`, the organization's earlier ballot (the same vote
    /// again → the proposal; another → `already_voted`),
    /// `proposal_closed`. The ballot that reaches the threshold executes
    /// the action ([`Self::execute`]); one after which the threshold is out
    /// of reach rejects the proposal.
    pub(in crate::ledger) fn vote(
        &mut self,
        at: At<'_>,
        id: u64,
        approve: bool,
        digest: &str,
        changes: &mut Changes,
    ) -> Result<Proposal, Rejection> {
        Self::governor(at)?;
        let seal = at.client.expect("governor checked the signature");
        let proposal = self
            .gov
            .proposals
            .get(&id)
            .ok_or(Rejection::ProposalNotFound)?;
        ensure(proposal.digest == digest, Rejection::DigestMismatch)?;
        if let Some(earlier) = proposal.ballots.get(&at.actor.org) {
            return if earlier.approve == approve {
                Ok(proposal.clone())
            } else {
                Err(Rejection::AlreadyVoted)
            };
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
        let members = self.orgs.len() as u64;
        let required = self.gov.policy.threshold.required(members);
        let proposal = self.gov.proposals.get_mut(&id).expect("found above");
        proposal.ballots.insert(at.actor.org.clone(), ballot);
        let (approvals, rejections) = (proposal.approvals(), proposal.rejections());
        changes.gov = true;
        if approvals >= required {
            let action = proposal.action.clone();
            let result = self.execute(at, id, &action, changes);
            self.close(at, id, result.err(), changes);
        } else if rejections > members.saturating_sub(required) {
            self.close_as(at, id, ProposalState::Rejected, None, changes);
        }
        Ok(self.gov.proposals[&id].clone())
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
            Action::SetPolicy {
                threshold,
                proposal_ttl_ms,
            } => {
                self.gov.policy = Policy {
                    threshold: *threshold,
                    proposal_ttl_ms: *proposal_ttl_ms,
                }
            }
        }
        Ok(())
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
