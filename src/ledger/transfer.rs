//! Transfer commands: single and batched transfers, two-phase (pending,
//! post, void) and expiry on the ledger clock.

use super::leaf::Leaf;
use super::mutate::{record, Journal};
use super::state::At;
use super::{
    ensure, Account, AccountId, Amount, Asset, Changes, Event, Ledger, NewTransfer,
    RejectedTransfer, Rejection, Transfer, TransferId, TransferState, TOTAL_MAX,
};

/// `a + b` if it stays at or below [`TOTAL_MAX`].
fn add(a: u128, b: u128) -> Option<u128> {
    a.checked_add(b).filter(|s| *s <= TOTAL_MAX)
}

/// Whether both totals a new transfer adds to (pending or posted) stay
/// at or below [`TOTAL_MAX`].
fn totals_fit(pending: bool, debit: &Account, credit: &Account, amount: u128) -> bool {
    if pending {
        add(debit.debits_pending, amount).is_some() && add(credit.credits_pending, amount).is_some()
    } else {
        add(debit.debits_posted, amount).is_some() && add(credit.credits_posted, amount).is_some()
    }
}

/// Whether a new transfer is stopped by a frozen account: every one but
/// a correction is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Freezes {
    Apply,
    Ignore,
}

/// The record of a new transfer that passed every check.
fn transfer_record(at: At<'_>, req: &NewTransfer, asset: &Asset, leaf_index: u64) -> Transfer {
    let timeout_ms = req.timeout_ms.filter(|_| req.pending);
    Transfer {
        id: req.id.clone(),
        debit_account: req.debit_account.clone(),
        credit_account: req.credit_account.clone(),
        amount: req.amount,
        asset: asset.clone(),
        memo: req.memo.clone(),
        posted_by: at.actor.org.clone(),
        timestamp_ms: at.clock_ms,
        height: at.height,
        log_index: at.log_index,
        leaf_index,
        pending: req.pending,
        timeout_ms,
        expires_at_ms: timeout_ms.map(|t| at.clock_ms.saturating_add(t)),
        state: if req.pending {
            TransferState::Pending
        } else {
            TransferState::Posted
        },
        posted_amount: None,
        resolved_height: None,
    }
}

impl Ledger {
    /// [`Self::transfer_one`], remembering a refusal under the transfer's
    /// id (see [`remembered`]).
    pub(super) fn transfer_and_remember(
        &mut self,
        at: At<'_>,
        req: &NewTransfer,
        leaf: u64,
        changes: &mut Changes,
    ) -> Result<Transfer, Rejection> {
        let result = self.transfer_one(at, req, leaf, changes);
        if let Err(r) = result {
            self.remember_refusal(req, r, changes);
        }
        result
    }

    /// Remembers that `req` was refused with `r`, if `r` is [`remembered`]
    /// and the id holds nothing yet (neither a refusal nor a transfer: an
    /// atomic batch refused for another item may re-send one): the same
    /// request again gets the same refusal, whoever sends it and whenever.
    fn remember_refusal(&mut self, req: &NewTransfer, r: Rejection, changes: &mut Changes) {
        if remembered(r) && !self.rejected.contains_key(&req.id) && self.indexed(&req.id).is_none()
        {
            self.rejected.insert(
                req.id.clone(),
                RejectedTransfer {
                    request: req.clone(),
                    rejection: r,
                },
            );
            changes.rejected.push(req.id.clone());
        }
    }

    /// All or nothing: every item is checked (so each refused one reports
    /// its own code), and if any is refused the journal restores the state,
    /// the others report `linked_transfer_failed`, and each item's refusal
    /// is remembered under its id.
    pub(super) fn atomic_batch(
        &mut self,
        at: At<'_>,
        reqs: &[NewTransfer],
        base_leaf: u64,
        changes: &mut Changes,
    ) -> Vec<Result<Transfer, Rejection>> {
        let before = changes.clone();
        self.journal = Some(Journal::default());
        let results: Vec<_> = (base_leaf..)
            .zip(reqs)
            .map(|(leaf, req)| self.transfer_one(at, req, leaf, changes))
            .collect();
        let journal = self.journal.take().expect("journal opened above");
        if results.iter().all(Result::is_ok) {
            return results;
        }
        self.undo(journal);
        *changes = before;
        let results: Vec<_> = results
            .into_iter()
            .map(|r| r.and(Err(Rejection::LinkedTransferFailed)))
            .collect();
        for (req, result) in reqs.iter().zip(&results) {
            if let Err(r) = result {
                self.remember_refusal(req, *r, changes);
            }
        }
        results
    }

    /// Checks, in order: `role_may_not_write`, `id_outside_namespace`,
    /// `accounts_must_be_different`,
    /// `debit_account_not_found`, `credit_account_not_found`,
    /// `debit_account_not_owned`, the id (same request → the original
    /// transfer or refusal; another → `exists_with_different_fields`),
    /// then [`Self::check_and_move`]'s.
    pub(super) fn transfer_one(
        &mut self,
        at: At<'_>,
        req: &NewTransfer,
        leaf_index: u64,
        changes: &mut Changes,
    ) -> Result<Transfer, Rejection> {
        let actor = at.actor;
        ensure(actor.role.may_write(), Rejection::RoleMayNotWrite)?;
        ensure(
            req.id.in_namespace_of(&actor.org),
            Rejection::IdOutsideNamespace,
        )?;
        ensure(
            req.debit_account != req.credit_account,
            Rejection::AccountsMustBeDifferent,
        )?;
        let debit = self
            .accounts
            .get(&req.debit_account)
            .ok_or(Rejection::DebitAccountNotFound)?;
        ensure(
            self.accounts.contains_key(&req.credit_account),
            Rejection::CreditAccountNotFound,
        )?;
        ensure(debit.owner == actor.org, Rejection::DebitAccountNotOwned)?;
        if let Some(existing) = self.known(&req.id, changes) {
            // Exactly once: a re-send gets the original result.
            return if existing.same_request(req) {
                Ok(existing.clone())
            } else {
                Err(Rejection::ExistsWithDifferentFields)
            };
        }
        if let Some(refused) = self.rejected.get(&req.id) {
            return Err(if &refused.request == req {
                refused.rejection
            } else {
                Rejection::ExistsWithDifferentFields
            });
        }
        self.check_and_move(at, req, leaf_index, Freezes::Apply, changes)
    }

    /// A correction a proposal approved: posted by `at.actor` (`gov`)
    /// between any two accounts, its leaf added at once. Its id is the
    /// proposal's and holds nothing yet; then the checks of
    /// [`Self::check_and_move`], a freeze left out.
    pub(super) fn correct(
        &mut self,
        at: At<'_>,
        req: &NewTransfer,
        changes: &mut Changes,
    ) -> Result<Transfer, Rejection> {
        assert!(
            !self.stored_at.contains_key(req.id.as_str()) && !self.rejected.contains_key(&req.id),
            "a correction's id is its proposal's, and a proposal executes once"
        );
        let leaf_index = changes.leaf_hashes.len() as u64;
        let t = self.check_and_move(at, req, leaf_index, Freezes::Ignore, changes)?;
        changes.push_leaf(&Leaf::Transfer(&t));
        Ok(t)
    }

    /// The checks of a new transfer whose accounts exist and whose id is
    /// free, in order: `asset_mismatch`, `debit_account_closed`,
    /// `credit_account_closed`, `debit_account_frozen`,
    /// `credit_account_frozen`, `insufficient_funds`,
    /// `exceeds_balance_max`, `overflow`; then it moves the funds.
    fn check_and_move(
        &mut self,
        at: At<'_>,
        req: &NewTransfer,
        leaf_index: u64,
        freezes: Freezes,
        changes: &mut Changes,
    ) -> Result<Transfer, Rejection> {
        let debit = &self.accounts[&req.debit_account];
        let credit = &self.accounts[&req.credit_account];
        ensure(debit.asset == credit.asset, Rejection::AssetMismatch)?;
        ensure(
            req.asset.as_ref().is_none_or(|a| a == &debit.asset),
            Rejection::AssetMismatch,
        )?;
        ensure(!debit.closed, Rejection::DebitAccountClosed)?;
        ensure(!credit.closed, Rejection::CreditAccountClosed)?;
        if freezes == Freezes::Apply {
            self.ensure_not_frozen(&req.debit_account, &req.credit_account)?;
        }
        let amount = u128::from(req.amount.units());
        ensure(debit.can_debit(amount), Rejection::InsufficientFunds)?;
        ensure(credit.can_credit(amount), Rejection::ExceedsBalanceMax)?;
        ensure(
            totals_fit(req.pending, debit, credit, amount),
            Rejection::Overflow,
        )?;
        let transfer = transfer_record(at, req, &debit.asset, leaf_index);
        self.move_funds(at, &transfer, changes);
        Ok(transfer)
    }

    /// `debit_account_frozen`, `credit_account_frozen`.
    fn ensure_not_frozen(&self, debit: &AccountId, credit: &AccountId) -> Result<(), Rejection> {
        ensure(!self.gov.is_frozen(debit), Rejection::DebitAccountFrozen)?;
        ensure(!self.gov.is_frozen(credit), Rejection::CreditAccountFrozen)
    }

    /// Reserves (pending) or moves (posted) a new transfer's amount, with
    /// a history item on each side, and stores the transfer.
    fn move_funds(&mut self, at: At<'_>, transfer: &Transfer, changes: &mut Changes) {
        let (units, pending) = (u128::from(transfer.amount.units()), transfer.pending);
        let event = if pending {
            Event::Pending
        } else {
            Event::Posted
        };
        let sides = [
            (&transfer.debit_account, true),
            (&transfer.credit_account, false),
        ];
        for (id, debit) in sides {
            let account = self.account_mut(id, changes);
            *account.total_mut(debit, pending) += units;
            record(at, account, transfer, event, transfer.amount, changes);
        }
        if let Some(expiry) = transfer.expires_at_ms {
            self.insert_expiry(expiry, transfer.id.clone());
        }
        self.insert_transfer(transfer.clone(), changes);
    }

    /// The pending transfer `id` as its debit account's owner may resolve it.
    /// Checks, in order: `role_may_not_write`, `pending_transfer_not_found`
    /// (also when not visible to the caller), `debit_account_not_owned`,
    /// `pending_transfer_not_pending`.
    fn pending_for(
        &self,
        at: At<'_>,
        id: &TransferId,
        changes: &Changes,
    ) -> Result<Transfer, Rejection> {
        ensure(at.actor.role.may_write(), Rejection::RoleMayNotWrite)?;
        let t = self
            .known(id, changes)
            .ok_or(Rejection::PendingTransferNotFound)?;
        ensure(
            self.transfer_readable_by(t, at.actor),
            Rejection::PendingTransferNotFound,
        )?;
        ensure(
            self.accounts[&t.debit_account].owner == at.actor.org,
            Rejection::DebitAccountNotOwned,
        )?;
        ensure(t.pending, Rejection::PendingTransferNotPending)?;
        Ok(t.clone())
    }

    /// Moves `amount` (default: all) of a pending transfer and releases the
    /// rest. After [`Self::pending_for`]'s checks: already posted (the same
    /// amount again → the transfer; another → `pending_transfer_already_posted`),
    /// `pending_transfer_already_voided`, `pending_transfer_expired`,
    /// `debit_account_frozen`, `credit_account_frozen`,
    /// `exceeds_pending_amount`, `overflow`.
    pub(super) fn post_pending(
        &mut self,
        at: At<'_>,
        id: &TransferId,
        amount: Option<Amount>,
        changes: &mut Changes,
    ) -> Result<Transfer, Rejection> {
        let mut t = self.pending_for(at, id, changes)?;
        let amount = amount.unwrap_or(t.amount);
        match t.state {
            TransferState::Posted if t.posted_amount == Some(amount) => return Ok(t),
            TransferState::Posted => return Err(Rejection::PendingTransferAlreadyPosted),
            TransferState::Voided => return Err(Rejection::PendingTransferAlreadyVoided),
            TransferState::Expired => return Err(Rejection::PendingTransferExpired),
            TransferState::Pending => {}
        }
        self.ensure_not_frozen(&t.debit_account, &t.credit_account)?;
        ensure(amount <= t.amount, Rejection::ExceedsPendingAmount)?;
        let units = u128::from(amount.units());
        let fits = add(self.accounts[&t.debit_account].debits_posted, units).is_some()
            && add(self.accounts[&t.credit_account].credits_posted, units).is_some();
        ensure(fits, Rejection::Overflow)?;
        self.release(&t, changes);
        self.account_mut(&t.debit_account, changes).debits_posted += units;
        self.account_mut(&t.credit_account, changes).credits_posted += units;
        t.state = TransferState::Posted;
        t.posted_amount = Some(amount);
        self.resolve(at, t, Event::PendingPosted, amount, changes)
    }

    /// Releases a pending transfer's funds. After [`Self::pending_for`]'s
    /// checks: already voided → the transfer;
    /// `pending_transfer_already_posted`, `pending_transfer_expired`.
    pub(super) fn void_pending(
        &mut self,
        at: At<'_>,
        id: &TransferId,
        changes: &mut Changes,
    ) -> Result<Transfer, Rejection> {
        let mut t = self.pending_for(at, id, changes)?;
        match t.state {
            TransferState::Voided => return Ok(t),
            TransferState::Posted => return Err(Rejection::PendingTransferAlreadyPosted),
            TransferState::Expired => return Err(Rejection::PendingTransferExpired),
            TransferState::Pending => {}
        }
        self.release(&t, changes);
        t.state = TransferState::Voided;
        let amount = t.amount;
        self.resolve(at, t, Event::PendingVoided, amount, changes)
    }

    /// Expires every pending transfer due on the ledger clock, in order of
    /// expiry then id: the same on every replica.
    pub(super) fn expire_due(&mut self, at: At<'_>, changes: &mut Changes) {
        while let Some((due, id)) = self.expiries.first().cloned() {
            if due > at.clock_ms {
                break;
            }
            let mut t = self.transfers[&id].clone();
            assert_eq!(
                t.state,
                TransferState::Pending,
                "only pending transfers are indexed for expiry"
            );
            self.release(&t, changes);
            t.state = TransferState::Expired;
            let amount = t.amount;
            if let Ok(expired) = self.resolve(at, t, Event::PendingExpired, amount, changes) {
                changes.push_leaf(&Leaf::Expired(&expired));
            }
        }
    }

    /// Takes a pending transfer's reservation off both accounts.
    fn release(&mut self, t: &Transfer, changes: &mut Changes) {
        let units = u128::from(t.amount.units());
        let debit = self.account_mut(&t.debit_account, changes);
        debit.debits_pending = debit
            .debits_pending
            .checked_sub(units)
            .expect("pending debits cover the reservation");
        let credit = self.account_mut(&t.credit_account, changes);
        credit.credits_pending = credit
            .credits_pending
            .checked_sub(units)
            .expect("pending credits cover the reservation");
    }

    /// Stores a pending transfer's final state and its history events.
    fn resolve(
        &mut self,
        at: At<'_>,
        mut t: Transfer,
        event: Event,
        amount: Amount,
        changes: &mut Changes,
    ) -> Result<Transfer, Rejection> {
        t.resolved_height = Some(at.height);
        if let Some(due) = t.expires_at_ms {
            self.expiries.remove(&(due, t.id.clone()));
        }
        for id in [&t.debit_account, &t.credit_account] {
            let account = self.account_mut(id, changes);
            record(at, account, &t, event, amount, changes);
        }
        self.stored_at.insert(t.id.as_str().into(), at.height);
        self.transfers.insert(t.id.clone(), t.clone());
        changes.in_map.insert(t.id.clone());
        Ok(t)
    }
}

/// Whether a refusal is remembered under the transfer's id. Every refusal
/// decided once the id is known to be the caller's organization's is: a
/// request that was refused can never be applied later, by a retry or by a
/// member replaying its seal. Not remembered: a role that may not write
/// (the caller is not one the id's organization writes with), an id
/// outside the caller's namespace (it is another organization's), and an
/// id that holds a transfer already.
fn remembered(r: Rejection) -> bool {
    !matches!(
        r,
        Rejection::RoleMayNotWrite
            | Rejection::IdOutsideNamespace
            | Rejection::ExistsWithDifferentFields
            | Rejection::OriginMissing
            | Rejection::OriginInvalid
            | Rejection::OriginForeign
            | Rejection::OriginStale
            | Rejection::CertificateRevoked
    )
}
