//! What apply keeps of a governance state: checked when a node loads its
//! own state and before it installs a received one, so that a state apply
//! could not go on from, or that no apply makes, is refused with the
//! reason instead of stopping the node at the first entry that meets it.

use std::collections::{BTreeMap, BTreeSet};

use super::{
    Action, Gov, OrgName, OrgStatus, ProposalState, RevokedBy, GOV_ORG, NODES_MAX,
    OPEN_PROPOSALS_PER_ORG_MAX, OWN_REVOCATIONS_PER_ORG_MAX,
};
use crate::ledger::TransferId;

/// Past any proposal id a consortium reaches (a proposal a microsecond for
/// over 100,000 years): the next id, the last one's plus one, never
/// overflows.
pub const PROPOSAL_ID_MAX: u64 = 1 << 62;

impl Gov {
    /// Checks a stored governance state whose head is block `height`:
    /// - each proposal is under its own id, from 1 and below
    ///   [`PROPOSAL_ID_MAX`];
    /// - the expiries are exactly the open proposals', each at its expiry
    ///   time: expiry closes what they name (a proposal not there panics)
    ///   and removes it at the proposal's own time (one named at another
    ///   time would be closed again and again);
    /// - no organization holds the name of [`GOV_ORG`], whose corrections
    ///   execute once each;
    /// - the policy is one a vote could set;
    /// - each node is of a registered organization, under an id above 0,
    ///   at most [`NODES_MAX`] not removed, and each organization lists
    ///   exactly its nodes not removed (removals and joins count them);
    /// - each revocation is under the certificate it revokes (apply finds
    ///   it by the key, the listeners by the certificate) and in a block
    ///   no later than the head;
    /// - no organization has more open proposals or revocations of its own
    ///   than apply lets it make.
    pub fn check_stored(&self, height: u64) -> Result<(), String> {
        self.check_proposals()?;
        if self.orgs.keys().any(|org| org.as_str() == GOV_ORG) {
            return Err(format!(
                "an organization is named {GOV_ORG:?}, the name of corrections"
            ));
        }
        if !self.policy.valid() {
            return Err(format!(
                "the policy's time to live of proposals, {} ms, is not one a vote could set",
                self.policy.proposal_ttl_ms
            ));
        }
        self.check_nodes()?;
        self.check_revocations(height)
    }

    /// Whether a stored transfer under `id` is one apply makes: any
    /// outside [`GOV_ORG`]'s namespace, and in it only the correction of a
    /// proposal executed (apply takes a correction's id to be new, and
    /// stops the node if it is not).
    pub fn could_hold(&self, id: &TransferId) -> bool {
        let Some(rest) = id
            .as_str()
            .strip_prefix(GOV_ORG)
            .and_then(|r| r.strip_prefix('.'))
        else {
            return true;
        };
        let proposal = (rest.strip_prefix("correction-"))
            .and_then(|n| n.parse::<u64>().ok().filter(|p| p.to_string() == n))
            .and_then(|n| self.proposals.get(&n));
        proposal.is_some_and(|p| {
            p.state == ProposalState::Executed && matches!(p.action, Action::Correction { .. })
        })
    }

    fn check_proposals(&self) -> Result<(), String> {
        let mut open = BTreeSet::new();
        let mut open_of: BTreeMap<&OrgName, usize> = BTreeMap::new();
        for (&id, p) in &self.proposals {
            if p.id != id || !(1..PROPOSAL_ID_MAX).contains(&id) {
                return Err(format!(
                    "proposal {} is under id {id}; ids run from 1 and stay below {PROPOSAL_ID_MAX}",
                    p.id
                ));
            }
            if p.state == ProposalState::Open {
                open.insert((p.expires_at_ms, id));
                *open_of.entry(&p.proposed_by).or_default() += 1;
            }
        }
        if let Some((_, id)) = open.symmetric_difference(&self.expiries).next() {
            return Err(format!(
                "proposal {id} is open but not due to expire, or due to expire but not open, \
                 or due at another time than its own"
            ));
        }
        match open_of
            .into_iter()
            .find(|(_, n)| *n > OPEN_PROPOSALS_PER_ORG_MAX)
        {
            Some((org, n)) => Err(format!(
                "organization {org} has {n} open proposals, more than {OPEN_PROPOSALS_PER_ORG_MAX}"
            )),
            None => Ok(()),
        }
    }

    fn check_nodes(&self) -> Result<(), String> {
        let mut runs: BTreeMap<&OrgName, BTreeSet<u64>> = BTreeMap::new();
        for (&id, node) in &self.nodes {
            if id == 0 || !self.orgs.contains_key(&node.org) {
                return Err(format!(
                    "node {id} is of organization {}, which is not registered, or numbered 0",
                    node.org
                ));
            }
            if !node.removed {
                runs.entry(&node.org).or_default().insert(id);
            }
        }
        let current: usize = runs.values().map(BTreeSet::len).sum();
        if current > NODES_MAX {
            return Err(format!(
                "{current} nodes are registered, more than {NODES_MAX}"
            ));
        }
        for (org, member) in &self.orgs {
            let nodes = runs.remove(org).unwrap_or_default();
            if member.nodes != nodes {
                return Err(format!(
                    "organization {org} lists nodes {:?}, but runs {nodes:?}",
                    member.nodes
                ));
            }
            if member.status == OrgStatus::Removed && !nodes.is_empty() {
                return Err(format!(
                    "organization {org} is removed, but runs nodes {nodes:?}"
                ));
            }
        }
        Ok(())
    }

    fn check_revocations(&self, height: u64) -> Result<(), String> {
        let mut own: BTreeMap<&OrgName, usize> = BTreeMap::new();
        for (cert, r) in &self.revoked {
            if &r.cert != cert || r.height > height {
                return Err(format!(
                    "the revocation of certificate {} of {} is under another's key, \
                     or in block {}, past the head ({height})",
                    r.cert.serial, r.cert.org, r.height
                ));
            }
            if r.by == RevokedBy::Owner {
                *own.entry(&cert.org).or_default() += 1;
            }
        }
        match own
            .into_iter()
            .find(|(_, n)| *n > OWN_REVOCATIONS_PER_ORG_MAX)
        {
            Some((org, n)) => Err(format!(
                "organization {org} revoked {n} of its own certificates, \
                 more than {OWN_REVOCATIONS_PER_ORG_MAX}"
            )),
            None => Ok(()),
        }
    }
}
