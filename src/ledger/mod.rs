//! The ledger: accounts, transfers and the rules that move money.
//!
//! This module is pure. [`Ledger::apply`] is a function of the current state
//! and one [`Entry`]: no clock (the leader stamps `timestamp_ms` before it
//! proposes), no randomness, no I/O. Every replica that applies the same log
//! ends with the same state, which is what makes Raft replication of it sound.
//!
//! The caller (the Raft state machine) persists what [`Changes`] names after
//! each entry, in one atomic sled batch.
//!
//! Checks run in a fixed, documented order, one line per check, and the first
//! failing check is the answer (see [`Rejection`]). A rejected command changes
//! nothing.

pub mod ids;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

pub use ids::{AccountId, Amount, Asset, InvalidAmount, InvalidId, OrgName, TransferId};

/// What a certificate's `OU` says its holder may do (DESIGN §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Node,
    App,
    Partner,
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "node" => Some(Self::Node),
            "app" => Some(Self::App),
            "partner" => Some(Self::Partner),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }

    /// Apps and admins write; partners and nodes never do.
    pub fn may_write(self) -> bool {
        matches!(self, Self::App | Self::Admin)
    }
}

/// Who proposed a command, as verified from the caller's TLS session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub org: OrgName,
    pub role: Role,
}

/// An account as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub id: AccountId,
    pub owner: OrgName,
    pub asset: Asset,
    pub allow_negative: bool,
    /// Organizations other than the owner that may read this account.
    pub readers: BTreeSet<OrgName>,
    pub debits_posted: u128,
    pub credits_posted: u128,
    /// Block height at which the account was created.
    pub created_height: u64,
}

impl Account {
    /// Credits minus debits. Cannot overflow: apply keeps both sums below
    /// `i128::MAX` (see [`Rejection::Overflow`]).
    pub fn balance(&self) -> i128 {
        self.credits_posted as i128 - self.debits_posted as i128
    }

    /// The role table of DESIGN §3: apps and admins read their own
    /// organization's accounts; any role but `node` reads a granted one.
    pub fn readable_by(&self, actor: &Actor) -> bool {
        match actor.role {
            Role::Node => false,
            Role::App | Role::Admin => self.owner == actor.org || self.readers.contains(&actor.org),
            Role::Partner => self.readers.contains(&actor.org),
        }
    }
}

/// A request to create an account; the owner is the proposing organization.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewAccount {
    pub id: AccountId,
    pub asset: Asset,
    pub allow_negative: bool,
    pub readers: BTreeSet<OrgName>,
}

/// A request to move `amount` from `debit_account` to `credit_account`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewTransfer {
    pub id: TransferId,
    pub debit_account: AccountId,
    pub credit_account: AccountId,
    pub amount: Amount,
    /// When given, must equal both accounts' asset.
    pub asset: Option<Asset>,
    pub memo: Option<String>,
}

/// A committed transfer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    pub id: TransferId,
    pub debit_account: AccountId,
    pub credit_account: AccountId,
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
}

impl Transfer {
    /// Whether `req` is a re-send of this transfer (same idempotency key and body).
    fn same_request(&self, req: &NewTransfer) -> bool {
        self.debit_account == req.debit_account
            && self.credit_account == req.credit_account
            && self.amount == req.amount
            && req.asset.as_ref().is_none_or(|a| a == &self.asset)
            && self.memo == req.memo
    }

    /// A transfer is visible to whoever may read either of its accounts.
    pub fn readable_by(&self, actor: &Actor, ledger: &Ledger) -> bool {
        [&self.debit_account, &self.credit_account]
            .into_iter()
            .filter_map(|id| ledger.account(id))
            .any(|a| a.readable_by(actor))
    }
}

/// A command in the replicated log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    CreateAccount(NewAccount),
    /// Each transfer gets its own result, in order.
    Transfers(Vec<NewTransfer>),
}

/// One proposed log entry: the command with who proposed it and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub actor: Actor,
    pub timestamp_ms: u64,
    pub command: Command,
}

/// Why a command was refused. A closed set; the order of the variants within
/// each command is the order in which they are checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rejection {
    // create account, in check order
    /// The caller's role may not write (partners, nodes).
    RoleMayNotWrite,
    /// Only an admin may create an account that may go negative.
    AllowNegativeRequiresAdmin,
    /// Only an admin may grant other organizations read access.
    GrantRequiresAdmin,
    /// A reader organization is not a member of the consortium.
    UnknownReaderOrg,
    /// The account id is taken, with other fields than requested.
    AccountExists,

    // transfer, in check order (RoleMayNotWrite first)
    AccountsMustBeDifferent,
    DebitAccountNotFound,
    CreditAccountNotFound,
    /// The debit account belongs to another organization.
    DebitAccountNotOwned,
    /// The transfer id was used before with another body.
    ExistsWithDifferentFields,
    AssetMismatch,
    InsufficientFunds,
    /// A posted total would pass what the ledger can represent.
    Overflow,
}

impl Rejection {
    /// The stable error code clients see.
    pub fn code(self) -> &'static str {
        match self {
            Self::RoleMayNotWrite => "role_may_not_write",
            Self::AllowNegativeRequiresAdmin => "allow_negative_requires_admin",
            Self::GrantRequiresAdmin => "grant_requires_admin",
            Self::UnknownReaderOrg => "unknown_reader_org",
            Self::AccountExists => "account_exists",
            Self::AccountsMustBeDifferent => "accounts_must_be_different",
            Self::DebitAccountNotFound => "debit_account_not_found",
            Self::CreditAccountNotFound => "credit_account_not_found",
            Self::DebitAccountNotOwned => "debit_account_not_owned",
            Self::ExistsWithDifferentFields => "exists_with_different_fields",
            Self::AssetMismatch => "asset_mismatch",
            Self::InsufficientFunds => "insufficient_funds",
            Self::Overflow => "overflow",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Self::RoleMayNotWrite => "this certificate's role may not write",
            Self::AllowNegativeRequiresAdmin => {
                "only an admin may create an account with allow_negative"
            }
            Self::GrantRequiresAdmin => "only an admin may grant other organizations read access",
            Self::UnknownReaderOrg => "a reader organization is not a member of the consortium",
            Self::AccountExists => "an account with this id exists with other fields",
            Self::AccountsMustBeDifferent => "debit and credit account must be different",
            Self::DebitAccountNotFound => "the debit account does not exist",
            Self::CreditAccountNotFound => "the credit account does not exist",
            Self::DebitAccountNotOwned => "the debit account belongs to another organization",
            Self::ExistsWithDifferentFields => "a transfer with this id exists with another body",
            Self::AssetMismatch => {
                "the accounts' assets (and the transfer's asset, if given) differ"
            }
            Self::InsufficientFunds => "the debit account's balance is lower than the amount",
            Self::Overflow => "the transfer would overflow an account's posted totals",
        }
    }
}

/// The result of applying one entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Account(Result<Account, Rejection>),
    Transfers(Vec<Result<Transfer, Rejection>>),
}

/// A transfer refused by a business rule after its caller was found to own
/// the debit account. Kept so that a re-send gets the original answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedTransfer {
    pub request: NewTransfer,
    pub rejection: Rejection,
}

/// What an entry changed, for the caller to persist atomically.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub accounts: BTreeSet<AccountId>,
    pub transfers: Vec<TransferId>,
    pub rejected: Vec<TransferId>,
}

/// The whole ledger state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    /// Member organizations, from genesis.
    orgs: BTreeSet<OrgName>,
    accounts: BTreeMap<AccountId, Account>,
    transfers: BTreeMap<TransferId, Transfer>,
    rejected: BTreeMap<TransferId, RejectedTransfer>,
    /// Number of blocks applied so far.
    height: u64,
}

/// Each posted total stays at or below this, so that balances fit an i128.
const POSTED_MAX: u128 = i128::MAX as u128;

impl Ledger {
    pub fn new(orgs: BTreeSet<OrgName>) -> Self {
        Self {
            orgs,
            ..Self::default()
        }
    }

    /// Rebuilds a ledger from persisted parts.
    pub fn from_parts(
        orgs: BTreeSet<OrgName>,
        accounts: impl IntoIterator<Item = Account>,
        transfers: impl IntoIterator<Item = Transfer>,
        rejected: impl IntoIterator<Item = RejectedTransfer>,
        height: u64,
    ) -> Self {
        Self {
            orgs,
            accounts: accounts.into_iter().map(|a| (a.id.clone(), a)).collect(),
            transfers: transfers.into_iter().map(|t| (t.id.clone(), t)).collect(),
            rejected: rejected
                .into_iter()
                .map(|r| (r.request.id.clone(), r))
                .collect(),
            height,
        }
    }

    pub fn orgs(&self) -> &BTreeSet<OrgName> {
        &self.orgs
    }
    pub fn height(&self) -> u64 {
        self.height
    }
    pub fn account(&self, id: &AccountId) -> Option<&Account> {
        self.accounts.get(id)
    }
    pub fn transfer(&self, id: &TransferId) -> Option<&Transfer> {
        self.transfers.get(id)
    }
    pub fn accounts(&self) -> impl Iterator<Item = &Account> {
        self.accounts.values()
    }
    pub fn transfers(&self) -> impl Iterator<Item = &Transfer> {
        self.transfers.values()
    }
    pub fn rejected(&self, id: &TransferId) -> Option<&RejectedTransfer> {
        self.rejected.get(id)
    }
    pub fn all_rejected(&self) -> impl Iterator<Item = &RejectedTransfer> {
        self.rejected.values()
    }

    /// Applies one entry committed at `log_index`; it becomes the next block.
    pub fn apply(&mut self, entry: &Entry, log_index: u64) -> (Outcome, Changes) {
        self.height += 1;
        let mut changes = Changes::default();
        let outcome = match &entry.command {
            Command::CreateAccount(req) => {
                Outcome::Account(self.create_account(&entry.actor, req, &mut changes))
            }
            Command::Transfers(reqs) => Outcome::Transfers(
                reqs.iter()
                    .map(|req| self.transfer_and_remember(entry, req, log_index, &mut changes))
                    .collect(),
            ),
        };
        (outcome, changes)
    }

    fn create_account(
        &mut self,
        actor: &Actor,
        req: &NewAccount,
        changes: &mut Changes,
    ) -> Result<Account, Rejection> {
        ensure(actor.role.may_write(), Rejection::RoleMayNotWrite)?;
        ensure(
            !req.allow_negative || actor.role == Role::Admin,
            Rejection::AllowNegativeRequiresAdmin,
        )?;
        ensure(
            req.readers.is_empty() || actor.role == Role::Admin,
            Rejection::GrantRequiresAdmin,
        )?;
        ensure(
            req.readers.is_subset(&self.orgs),
            Rejection::UnknownReaderOrg,
        )?;
        if let Some(existing) = self.accounts.get(&req.id) {
            let same = existing.owner == actor.org
                && existing.asset == req.asset
                && existing.allow_negative == req.allow_negative
                && existing.readers == req.readers;
            // A re-sent create returns the account as it is now.
            return if same {
                Ok(existing.clone())
            } else {
                Err(Rejection::AccountExists)
            };
        }
        let account = Account {
            id: req.id.clone(),
            owner: actor.org.clone(),
            asset: req.asset.clone(),
            allow_negative: req.allow_negative,
            readers: req.readers.clone(),
            debits_posted: 0,
            credits_posted: 0,
            created_height: self.height,
        };
        self.accounts.insert(account.id.clone(), account.clone());
        changes.accounts.insert(account.id.clone());
        Ok(account)
    }

    /// [`Self::transfer_one`], remembering a business-rule rejection (one
    /// decided after ownership was established) under the transfer's id.
    fn transfer_and_remember(
        &mut self,
        entry: &Entry,
        req: &NewTransfer,
        log_index: u64,
        changes: &mut Changes,
    ) -> Result<Transfer, Rejection> {
        let result = self.transfer_one(entry, req, log_index, changes);
        if let Err(
            rejection @ (Rejection::AssetMismatch
            | Rejection::InsufficientFunds
            | Rejection::Overflow),
        ) = result
        {
            if !self.rejected.contains_key(&req.id) {
                self.rejected.insert(
                    req.id.clone(),
                    RejectedTransfer {
                        request: req.clone(),
                        rejection,
                    },
                );
                changes.rejected.push(req.id.clone());
            }
        }
        result
    }

    fn transfer_one(
        &mut self,
        entry: &Entry,
        req: &NewTransfer,
        log_index: u64,
        changes: &mut Changes,
    ) -> Result<Transfer, Rejection> {
        let actor = &entry.actor;
        ensure(actor.role.may_write(), Rejection::RoleMayNotWrite)?;
        ensure(
            req.debit_account != req.credit_account,
            Rejection::AccountsMustBeDifferent,
        )?;
        let debit = self
            .accounts
            .get(&req.debit_account)
            .ok_or(Rejection::DebitAccountNotFound)?;
        let credit = self
            .accounts
            .get(&req.credit_account)
            .ok_or(Rejection::CreditAccountNotFound)?;
        ensure(debit.owner == actor.org, Rejection::DebitAccountNotOwned)?;
        if let Some(existing) = self.transfers.get(&req.id) {
            // Exactly once: a re-send gets the original result.
            return if existing.same_request(req) {
                Ok(existing.clone())
            } else {
                Err(Rejection::ExistsWithDifferentFields)
            };
        }
        if let Some(refused) = self.rejected.get(&req.id) {
            // A re-send of a refused transfer gets the original refusal.
            return Err(if &refused.request == req {
                refused.rejection
            } else {
                Rejection::ExistsWithDifferentFields
            });
        }
        ensure(debit.asset == credit.asset, Rejection::AssetMismatch)?;
        ensure(
            req.asset.as_ref().is_none_or(|a| a == &debit.asset),
            Rejection::AssetMismatch,
        )?;
        let amount = u128::from(req.amount.units());
        let new_debits = debit
            .debits_posted
            .checked_add(amount)
            .filter(|d| *d <= POSTED_MAX);
        let new_credits = credit
            .credits_posted
            .checked_add(amount)
            .filter(|c| *c <= POSTED_MAX);
        ensure(
            debit.allow_negative
                || debit
                    .debits_posted
                    .checked_add(amount)
                    .is_some_and(|d| d <= debit.credits_posted),
            Rejection::InsufficientFunds,
        )?;
        let (Some(new_debits), Some(new_credits)) = (new_debits, new_credits) else {
            return Err(Rejection::Overflow);
        };

        let transfer = Transfer {
            id: req.id.clone(),
            debit_account: req.debit_account.clone(),
            credit_account: req.credit_account.clone(),
            amount: req.amount,
            asset: debit.asset.clone(),
            memo: req.memo.clone(),
            posted_by: actor.org.clone(),
            timestamp_ms: entry.timestamp_ms,
            height: self.height,
            log_index,
        };
        self.post(&req.debit_account, |a| a.debits_posted = new_debits);
        self.post(&req.credit_account, |a| a.credits_posted = new_credits);
        debug_assert!(
            self.accounts[&req.debit_account].allow_negative
                || self.accounts[&req.debit_account].balance() >= 0,
            "apply let a non-negative account go below zero"
        );
        self.transfers.insert(transfer.id.clone(), transfer.clone());
        changes.accounts.insert(req.debit_account.clone());
        changes.accounts.insert(req.credit_account.clone());
        changes.transfers.push(transfer.id.clone());
        Ok(transfer)
    }

    fn post(&mut self, id: &AccountId, f: impl FnOnce(&mut Account)) {
        let account = self
            .accounts
            .get_mut(id)
            .expect("account checked to exist before posting");
        f(account);
    }

    /// Sum of all balances per asset. Every transfer moves money between two
    /// accounts of one asset, so each sum is zero in a correct ledger.
    pub fn totals(&self) -> BTreeMap<Asset, i128> {
        let mut totals = BTreeMap::new();
        for a in self.accounts.values() {
            *totals.entry(a.asset.clone()).or_insert(0i128) += a.balance();
        }
        totals
    }
}

fn ensure(condition: bool, rejection: Rejection) -> Result<(), Rejection> {
    if condition {
        Ok(())
    } else {
        Err(rejection)
    }
}

#[cfg(test)]
mod tests;
