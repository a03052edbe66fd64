//! The ledger's records: accounts, transfers, history items.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::{AccountId, Actor, Amount, Asset, OrgName, Rejection, Role, TransferId};

/// An account as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub id: AccountId,
    pub owner: OrgName,
    pub asset: Asset,
    /// May the balance go below zero (issuance accounts; admins only)?
    pub allow_negative: bool,
    /// Organizations other than the owner that may read this account.
    pub readers: BTreeSet<OrgName>,
    /// A closed account takes part in no new transfer (pending ones may
    /// still be posted or voided).
    pub closed: bool,
    /// Ceiling on the balance including incoming pending credits.
    pub balance_max: Option<u128>,
    pub debits_pending: u128,
    pub credits_pending: u128,
    pub debits_posted: u128,
    pub credits_posted: u128,
    /// Block height at which the account was created.
    pub created_height: u64,
    /// Number of items in the account's history; the next item's sequence.
    pub history_len: u64,
    /// When the grant in force (`readers`) was signed, in ms since the Unix
    /// epoch on its signer's clock; 0 until one is set. A grant change
    /// signed no later is refused (`origin_replayed`), so a replayed one
    /// cannot undo a later one.
    pub readers_signed_at_ms: u64,
}

/// Each posted or pending total stays at or below this, so that balances
/// (differences of totals) fit an i128.
pub const TOTAL_MAX: u128 = i128::MAX as u128;

impl Account {
    /// A new account `id` of org1 in USD, as tests make them.
    #[cfg(test)]
    pub fn for_test(id: &str) -> Self {
        Self {
            id: AccountId::parse(id).unwrap(),
            owner: OrgName::parse("org1").unwrap(),
            asset: Asset::parse("USD").unwrap(),
            allow_negative: false,
            readers: BTreeSet::new(),
            closed: false,
            balance_max: None,
            debits_pending: 0,
            credits_pending: 0,
            debits_posted: 0,
            credits_posted: 0,
            created_height: 1,
            history_len: 0,
            readers_signed_at_ms: 0,
        }
    }

    /// Posted credits minus posted debits. Cannot overflow: totals stay at
    /// or below [`TOTAL_MAX`].
    pub fn balance(&self) -> i128 {
        self.credits_posted as i128 - self.debits_posted as i128
    }

    /// What may still be debited: the balance less pending debits.
    pub fn available(&self) -> i128 {
        self.balance() - self.debits_pending as i128
    }

    /// The role table (`docs/design.md`, "Trust model"): apps and admins
    /// read their own organization's accounts; any role but `node` reads a
    /// granted one.
    pub fn readable_by(&self, actor: &Actor) -> bool {
        match actor.role {
            Role::Node => false,
            Role::App | Role::Admin => self.owner == actor.org || self.readers.contains(&actor.org),
            Role::Partner => self.readers.contains(&actor.org),
        }
    }

    /// The balance as a debit of `amount` more would leave it, if allowed.
    pub(super) fn can_debit(&self, amount: u128) -> bool {
        self.allow_negative
            || self
                .debits_posted
                .checked_add(self.debits_pending)
                .and_then(|d| d.checked_add(amount))
                .is_some_and(|d| d <= self.credits_posted)
    }

    /// The total a transfer adds to on this side of it: debits or credits,
    /// pending or posted.
    pub(super) fn total_mut(&mut self, debit: bool, pending: bool) -> &mut u128 {
        match (debit, pending) {
            (true, true) => &mut self.debits_pending,
            (true, false) => &mut self.debits_posted,
            (false, true) => &mut self.credits_pending,
            (false, false) => &mut self.credits_posted,
        }
    }

    /// Whether a credit of `amount` more stays within `balance_max`.
    pub(super) fn can_credit(&self, amount: u128) -> bool {
        let Some(max) = self.balance_max else {
            return true;
        };
        let incoming = self
            .credits_posted
            .saturating_add(self.credits_pending)
            .saturating_add(amount);
        incoming <= max.saturating_add(self.debits_posted)
    }
}

/// A request to create an account; the owner is the proposing organization.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewAccount {
    pub id: AccountId,
    pub asset: Asset,
    pub allow_negative: bool,
    pub readers: BTreeSet<OrgName>,
    pub balance_max: Option<u128>,
}

/// A request to move `amount` from `debit_account` to `credit_account`, or,
/// with `pending`, to reserve it until it is posted, voided or expires.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewTransfer {
    pub id: TransferId,
    pub debit_account: AccountId,
    pub credit_account: AccountId,
    pub amount: Amount,
    /// When given, must equal both accounts' asset.
    pub asset: Option<Asset>,
    pub memo: Option<String>,
    pub pending: bool,
    /// A pending transfer not resolved this long after it was applied
    /// (ledger time) expires and releases its funds.
    pub timeout_ms: Option<u64>,
}

/// Where a transfer stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TransferState {
    /// Money moved (a single-phase transfer, or a posted pending one).
    Posted,
    /// Funds reserved, awaiting post or void.
    Pending,
    Voided,
    Expired,
}

/// A committed transfer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    pub id: TransferId,
    pub debit_account: AccountId,
    pub credit_account: AccountId,
    /// The amount requested (reserved, for a pending transfer).
    pub amount: Amount,
    pub asset: Asset,
    pub memo: Option<String>,
    /// The organization whose app or admin posted it.
    pub posted_by: OrgName,
    /// Leader's wall clock when it proposed the entry, ms since the Unix epoch.
    pub timestamp_ms: u64,
    /// Height of the block (applied ledger entry) that holds it.
    pub height: u64,
    /// Raft log index of that entry.
    pub log_index: u64,
    /// Position of the transfer's leaf in that block's Merkle tree.
    pub leaf_index: u64,
    pub pending: bool,
    pub timeout_ms: Option<u64>,
    /// Ledger time at which a pending transfer expires.
    pub expires_at_ms: Option<u64>,
    pub state: TransferState,
    /// The amount that moved when a pending transfer was posted.
    pub posted_amount: Option<Amount>,
    /// Height at which a pending transfer was posted, voided or expired.
    pub resolved_height: Option<u64>,
}

impl Transfer {
    /// Whether `req` is a re-send of this transfer (same idempotency key and body).
    pub(super) fn same_request(&self, req: &NewTransfer) -> bool {
        self.debit_account == req.debit_account
            && self.credit_account == req.credit_account
            && self.amount == req.amount
            && req.asset.as_ref().is_none_or(|a| a == &self.asset)
            && self.memo == req.memo
            && self.pending == req.pending
            && self.timeout_ms == req.timeout_ms
    }
}

/// A transfer refused by a business rule after its caller was found to own
/// the debit account. Kept so that a re-send gets the original answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedTransfer {
    pub request: NewTransfer,
    pub rejection: Rejection,
}

/// What happened to an account, in commit order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// A single-phase transfer moved money.
    Posted,
    /// A pending transfer reserved funds.
    Pending,
    /// A pending transfer was posted (its `amount` moved).
    PendingPosted,
    PendingVoided,
    PendingExpired,
}

/// One line of an account's history: an event and the balances after it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryItem {
    pub account: AccountId,
    /// Position in the account's history, from 0.
    pub seq: u64,
    pub transfer: TransferId,
    pub event: Event,
    /// Whether this account is the transfer's debit side.
    pub debit: bool,
    /// The amount of the event (posted, reserved or released).
    pub amount: Amount,
    pub balance_after: i128,
    pub debits_pending_after: u128,
    pub credits_pending_after: u128,
    pub height: u64,
    pub log_index: u64,
    pub timestamp_ms: u64,
}
