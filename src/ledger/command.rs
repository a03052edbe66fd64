//! What the replicated log carries: an [`Entry`] with its [`Command`], and
//! the [`Outcome`] of applying it.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::{
    Account, AccountId, Action, Actor, Amount, Blinding, Bundle, CertRef, Evidence, NewAccount,
    NewTransfer, OrgName, Proposal, Rejection, Revocation, Transfer, TransferId,
};

/// A command in the replicated log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    CreateAccount(NewAccount),
    /// One or many transfers; each gets its own result, in order. With
    /// `atomic`, one refusal refuses them all and nothing changes.
    Transfers {
        transfers: Vec<NewTransfer>,
        atomic: bool,
    },
    /// Post a pending transfer, for its full amount or less.
    PostPending {
        id: TransferId,
        amount: Option<Amount>,
    },
    VoidPending {
        id: TransferId,
    },
    CloseAccount {
        id: AccountId,
    },
    SetReaders {
        id: AccountId,
        readers: BTreeSet<OrgName>,
    },
    /// Proposed by the leader when pending transfers are due to expire and
    /// nothing else is being written; it only advances the ledger clock.
    Tick,
    /// Single transfers from many callers, coalesced by the leader into one
    /// entry (group commit), in bundles that each carry the evidence of the
    /// node that accepted them. Each transfer is checked as its own
    /// caller's, on its own.
    Group(Vec<Bundle>),
    /// Governance (see `gov/`): an admin's proposal, signed by the admin.
    Propose(Action),
    /// An admin's ballot on a proposal, over the proposal's digest.
    Ballot {
        proposal: u64,
        approve: bool,
        digest: String,
    },
    /// An admin revokes one of its own organization's certificates, at once.
    Revoke(CertRef),
    /// An organization added by vote acknowledges joining (its admin).
    Join,
}

impl Command {
    /// A non-atomic batch of one transfer.
    pub fn single(transfer: NewTransfer) -> Self {
        Command::Transfers {
            transfers: vec![transfer],
            atomic: false,
        }
    }

    /// The one transfer of a non-atomic batch of one: what group commit
    /// takes.
    pub fn single_transfer(&self) -> Option<&NewTransfer> {
        match self {
            Command::Transfers {
                transfers,
                atomic: false,
            } => match transfers.as_slice() {
                [one] => Some(one),
                _ => None,
            },
            _ => None,
        }
    }

    /// Whether the command is governance: it must carry its caller's own
    /// signature.
    pub fn is_governance(&self) -> bool {
        matches!(
            self,
            Command::Propose(_) | Command::Ballot { .. } | Command::Revoke(_) | Command::Join
        )
    }

    /// The transfer ids the command names: its transfers' (new or
    /// re-sent), or the pending one it posts or voids.
    pub fn transfer_ids(&self) -> Vec<&TransferId> {
        match self {
            Command::Transfers { transfers, .. } => transfers.iter().map(|t| &t.id).collect(),
            Command::Group(bundles) => bundles
                .iter()
                .flat_map(|b| &b.items)
                .map(|g| &g.transfer.id)
                .collect(),
            Command::PostPending { id, .. } | Command::VoidPending { id } => vec![id],
            Command::CreateAccount(_)
            | Command::CloseAccount { .. }
            | Command::SetReaders { .. }
            | Command::Tick
            | Command::Propose(_)
            | Command::Ballot { .. }
            | Command::Revoke(_)
            | Command::Join => vec![],
        }
    }

    /// How many transfers the command names (see [`Self::transfer_ids`]).
    pub fn transfers_named(&self) -> usize {
        match self {
            Command::Transfers { transfers, .. } => transfers.len(),
            Command::Group(bundles) => bundles.iter().map(|b| b.items.len()).sum(),
            command => command.transfer_ids().len(),
        }
    }
}

/// One caller's transfer inside a [`Bundle`] of a [`Command::Group`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grouped {
    pub actor: Actor,
    pub transfer: NewTransfer,
}

/// One proposed log entry: the command with who proposed it, when, the
/// evidence that the proposer is who it says (for a group, each bundle
/// carries its own and this is [`Evidence::Leader`]), and the randomness
/// that blinds its block's leaves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub actor: Actor,
    pub timestamp_ms: u64,
    pub command: Command,
    pub evidence: Evidence,
    /// Fresh randomness from the leader, like `timestamp_ms` fixed before
    /// it proposes: apply only reads it (see [`super::chain::leaf_blind`]).
    pub blinding: Blinding,
}

impl Entry {
    /// How many units carry evidence of their own: a group's bundles, or
    /// the entry as a whole.
    pub fn units(&self) -> usize {
        match &self.command {
            Command::Group(bundles) => bundles.len(),
            _ => 1,
        }
    }
}

/// The result of applying one entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Account(Result<Account, Rejection>),
    Transfers(Vec<Result<Transfer, Rejection>>),
    Transfer(Result<Transfer, Rejection>),
    Ticked,
    /// A proposal as the entry left it.
    Proposal(Result<Proposal, Rejection>),
    Revoked(Result<Revocation, Rejection>),
    Joined(Result<OrgName, Rejection>),
}
