//! What the replicated log carries: an [`Entry`] with its [`Command`], and
//! the [`Outcome`] of applying it.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::{
    Account, AccountId, Actor, Amount, NewAccount, NewTransfer, OrgName, Rejection, Transfer,
    TransferId,
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
    /// entry (group commit). Each is checked as its own caller's, on its own.
    Group(Vec<Grouped>),
}

impl Command {
    /// How many transfers the command names: new ones, or the pending one
    /// it posts or voids.
    pub fn transfers_named(&self) -> usize {
        match self {
            Command::Transfers { transfers, .. } => transfers.len(),
            Command::Group(items) => items.len(),
            Command::PostPending { .. } | Command::VoidPending { .. } => 1,
            Command::CreateAccount(_)
            | Command::CloseAccount { .. }
            | Command::SetReaders { .. }
            | Command::Tick => 0,
        }
    }
}

/// One caller's transfer inside a [`Command::Group`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grouped {
    pub actor: Actor,
    pub transfer: NewTransfer,
}

/// One proposed log entry: the command with who proposed it and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub actor: Actor,
    pub timestamp_ms: u64,
    pub command: Command,
}

/// The result of applying one entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Account(Result<Account, Rejection>),
    Transfers(Vec<Result<Transfer, Rejection>>),
    Transfer(Result<Transfer, Rejection>),
    Ticked,
}
