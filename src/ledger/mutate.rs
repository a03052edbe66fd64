//! Writes to the ledger that an atomic batch may have to undo: changes to
//! accounts, new transfers and their expiries. While a batch runs, each
//! records in the journal what restores it (a batch only makes transfers,
//! so posting, voiding and expiring write directly). Every account change
//! goes through [`Ledger::account_mut`], which also keeps the account's
//! money as it was before the entry, for the entry's balance check.

use std::collections::BTreeMap;

use super::changes::Money;
use super::state::At;
use super::{
    Account, AccountId, Amount, Changes, Event, HistoryItem, Ledger, Transfer, TransferId,
    TransferState,
};

/// What an atomic batch touched, to restore it if the batch is refused.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Journal {
    pub(super) accounts: BTreeMap<AccountId, Account>,
    pub(super) transfers: Vec<TransferId>,
    pub(super) expiries: Vec<(u64, TransferId)>,
}

impl Ledger {
    /// Restores what an atomic batch's journal recorded.
    pub(super) fn undo(&mut self, journal: Journal) {
        for (id, account) in journal.accounts {
            self.accounts.insert(id, account);
        }
        for id in journal.transfers {
            self.transfers.remove(&id);
            self.stored_at.remove(id.as_str());
            self.transfer_count -= 1;
        }
        for expiry in journal.expiries {
            self.expiries.remove(&expiry);
        }
    }

    /// A mutable account, journaled first if an atomic batch is running,
    /// and named in `changes` with its money as it was before the entry.
    pub(super) fn account_mut(&mut self, id: &AccountId, changes: &mut Changes) -> &mut Account {
        let account = self
            .accounts
            .get_mut(id)
            .expect("account checked to exist before it changes");
        if let Some(j) = &mut self.journal {
            j.accounts
                .entry(id.clone())
                .or_insert_with(|| account.clone());
        }
        if !changes.touched.contains(id) {
            changes.touched.insert(id.clone());
            changes.before.insert(id.clone(), Money::of(account));
        }
        account
    }

    /// A new transfer, stored by this entry's block: a pending one in the
    /// map, a settled one with the entry's changes.
    pub(super) fn insert_transfer(&mut self, t: Transfer, changes: &mut Changes) {
        if let Some(j) = &mut self.journal {
            j.transfers.push(t.id.clone());
        }
        self.stored_at.insert(t.id.as_str().into(), t.height);
        self.transfer_count += 1;
        if t.state == TransferState::Pending {
            changes.in_map.insert(t.id.clone());
            self.transfers.insert(t.id.clone(), t);
        } else {
            changes.push_made(t);
        }
    }

    pub(super) fn insert_expiry(&mut self, at_ms: u64, id: TransferId) {
        if let Some(j) = &mut self.journal {
            j.expiries.push((at_ms, id.clone()));
        }
        self.expiries.insert((at_ms, id));
    }
}

/// Appends an event to `account`'s history with its balances after it.
pub(super) fn record(
    at: At<'_>,
    account: &mut Account,
    t: &Transfer,
    event: Event,
    amount: Amount,
    changes: &mut Changes,
) {
    let item = HistoryItem {
        account: account.id.clone(),
        seq: account.history_len,
        transfer: t.id.clone(),
        event,
        debit: t.debit_account == account.id,
        amount,
        balance_after: account.balance(),
        debits_pending_after: account.debits_pending,
        credits_pending_after: account.credits_pending,
        height: at.height,
        log_index: at.log_index,
        timestamp_ms: at.clock_ms,
    };
    account.history_len += 1;
    changes.history.push(item);
}
