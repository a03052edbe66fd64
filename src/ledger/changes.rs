//! The changes buffer: what one entry changed, gathered while it runs, for
//! the caller to persist in one atomic batch.

use std::cell::OnceCell;
use std::collections::{BTreeSet, HashMap, HashSet};

use crate::codec::Encoded;

use super::chain::{self, Blinding, BlockHeader, Hash};
use super::leaf::{leaf_json, Leaf};
#[cfg(doc)]
use super::{invariants::BalanceCheck, transfer_leaf, Ledger};
use super::{Account, AccountId, HistoryItem, Seeded, Transfer, TransferId};

/// What an entry changed, for the caller to persist atomically.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// The accounts the entry changed or opened, in id order; filled when
    /// the block is sealed.
    pub accounts: Vec<AccountId>,
    /// While the entry runs: the accounts it changed or opened.
    pub(super) touched: HashSet<AccountId, Seeded>,
    /// The latest version of every transfer the entry made or changed, in
    /// id order; filled when the block is sealed.
    pub transfers: Vec<Transfer>,
    /// While the entry runs: the ids of changed transfers that are in the
    /// ledger's map (pending ones, and those resolved by this entry).
    pub(super) in_map: BTreeSet<TransferId>,
    /// While the entry runs: the settled transfers it made, in the order
    /// made. A ledger that forgets settled transfers never puts them in its
    /// map (one that keeps them does when the block is sealed, see
    /// [`Ledger::gather_transfers`]), so a batch of 8000 does not insert
    /// 8000 records there only to take them out again once stored.
    pub(super) made: Vec<Transfer>,
    /// Where each of `made` is, for a re-send within the same entry: built
    /// on the first such re-send, so an entry without one pays nothing.
    pub(super) made_at: OnceCell<HashMap<TransferId, usize>>,
    /// While the entry runs: each changed account's money before the
    /// entry, taken when the entry first changes it, for the balance check
    /// made when the block is sealed ([`BalanceCheck`]).
    pub(super) before: HashMap<AccountId, Money, Seeded>,
    pub rejected: Vec<TransferId>,
    pub history: Vec<HistoryItem>,
    /// The block's leaf hashes, in order: each the blinded hash of a
    /// canonical JSON record (see [`transfer_leaf`], [`chain::leaf_blind`]).
    /// The JSON itself is not kept: a transfer's leaf is rendered again from
    /// its stored record when a proof asks for it.
    pub leaf_hashes: Vec<Hash>,
    /// The entry's blinding, from which each leaf's blind is derived; the
    /// caller stores it with the block, outside its header.
    pub blinding: Blinding,
    /// The block this entry became.
    pub block: Option<BlockHeader>,
    /// Whether the governance state changed (it is stored whole).
    pub gov: bool,
    /// The changed records in their stored encoding, in the order of
    /// `accounts`, `transfers`, `rejected`, `history`, then the governance
    /// state if it changed: encoded once, for the block's state digest and
    /// for the caller to persist.
    pub encoded: Encoded,
}

/// An account's money, as the balance check compares it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Money {
    /// [`Account::balance`].
    pub(super) balance: i128,
    /// Pending debits minus pending credits: each at or below
    /// [`super::TOTAL_MAX`], so the difference fits an i128.
    pub(super) pending: i128,
}

impl Money {
    pub(super) fn of(account: &Account) -> Self {
        Self {
            balance: account.balance(),
            pending: account.debits_pending as i128 - account.credits_pending as i128,
        }
    }
}

impl Changes {
    /// Changed records: accounts, transfers, refusals, history items and
    /// the governance state.
    pub fn record_count(&self) -> usize {
        self.accounts.len()
            + self.transfers.len()
            + self.rejected.len()
            + self.history.len()
            + usize::from(self.gov)
    }

    /// Room for an entry that names `n` transfers: each makes at most one
    /// record, two history items and one leaf; its leaves are blinded with
    /// `blinding`.
    pub(super) fn for_transfers(n: usize, blinding: Blinding) -> Self {
        Self {
            blinding,
            made: Vec::with_capacity(n),
            history: Vec::with_capacity(2 * n),
            leaf_hashes: Vec::with_capacity(n),
            ..Self::default()
        }
    }

    /// A settled transfer the entry made: kept here, not in the ledger.
    pub(super) fn push_made(&mut self, t: Transfer) {
        if let Some(at) = self.made_at.get_mut() {
            at.insert(t.id.clone(), self.made.len());
        }
        self.made.push(t);
    }

    /// A transfer this entry made and settled, if `id` is one.
    pub(super) fn made(&self, id: &TransferId) -> Option<&Transfer> {
        let at = self.made_at.get_or_init(|| {
            (0..)
                .zip(&self.made)
                .map(|(i, t)| (t.id.clone(), i))
                .collect()
        });
        at.get(id).map(|&i| &self.made[i])
    }

    /// Renders `leaf` as canonical JSON and adds its hash, blinded with the
    /// blind of its position.
    pub(super) fn push_leaf(&mut self, leaf: &Leaf<'_>) {
        let blind = chain::leaf_blind(&self.blinding, self.leaf_hashes.len() as u64);
        let hash = chain::blinded_leaf_hash(&blind, &leaf_json(leaf));
        self.leaf_hashes.push(hash);
    }
}
