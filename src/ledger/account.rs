//! Account commands: create, close, grant readers.

use std::collections::BTreeSet;

use super::state::At;
use super::{ensure, Account, AccountId, Changes, Ledger, NewAccount, OrgName, Rejection, Role};

impl Ledger {
    /// Checks, in order: `role_may_not_write`, `id_outside_namespace`,
    /// `allow_negative_requires_admin`, `grant_requires_admin`,
    /// `unknown_reader_org`, then the id (the same request again returns the
    /// account; another → `account_exists`).
    pub(super) fn create_account(
        &mut self,
        at: At<'_>,
        req: &NewAccount,
        changes: &mut Changes,
    ) -> Result<Account, Rejection> {
        let actor = at.actor;
        ensure(actor.role.may_write(), Rejection::RoleMayNotWrite)?;
        ensure(
            req.id.in_namespace_of(&actor.org),
            Rejection::IdOutsideNamespace,
        )?;
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
                && existing.balance_max == req.balance_max;
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
            closed: false,
            balance_max: req.balance_max,
            debits_pending: 0,
            credits_pending: 0,
            debits_posted: 0,
            credits_posted: 0,
            created_height: at.height,
            history_len: 0,
            // The readers it is created with are a grant signed then: an
            // older grant change replayed later cannot override them.
            readers_signed_at_ms: at.signed_at_ms.unwrap_or(0),
        };
        self.accounts.insert(account.id.clone(), account.clone());
        changes.touched.insert(account.id.clone());
        Ok(account)
    }

    /// An admin's own account, for close and grants. Checks, in order: the
    /// role (`admin_error` unless admin), `account_not_found`,
    /// `account_not_owned`.
    fn own_account_as_admin(
        &self,
        at: At<'_>,
        id: &AccountId,
        admin_error: Rejection,
    ) -> Result<(), Rejection> {
        ensure(at.actor.role == Role::Admin, admin_error)?;
        let account = self.accounts.get(id).ok_or(Rejection::AccountNotFound)?;
        ensure(account.owner == at.actor.org, Rejection::AccountNotOwned)
    }

    /// Closing is idempotent. Checks: `close_requires_admin`,
    /// `account_not_found`, `account_not_owned`, `account_frozen` (a
    /// frozen account stays open, so that a voted correction can reach it).
    pub(super) fn close_account(
        &mut self,
        at: At<'_>,
        id: &AccountId,
        changes: &mut Changes,
    ) -> Result<Account, Rejection> {
        self.own_account_as_admin(at, id, Rejection::CloseRequiresAdmin)?;
        ensure(!self.gov.is_frozen(id), Rejection::AccountFrozen)?;
        let account = self.account_mut(id, changes);
        account.closed = true;
        Ok(account.clone())
    }

    /// Replaces the organizations that may read `id`. Checks:
    /// `grant_requires_admin`, `account_not_found`, `account_not_owned`,
    /// `unknown_reader_org`, `origin_replayed` (signed no later than the
    /// grant in force).
    pub(super) fn set_readers(
        &mut self,
        at: At<'_>,
        id: &AccountId,
        readers: &BTreeSet<OrgName>,
        changes: &mut Changes,
    ) -> Result<Account, Rejection> {
        self.own_account_as_admin(at, id, Rejection::GrantRequiresAdmin)?;
        ensure(readers.is_subset(&self.orgs), Rejection::UnknownReaderOrg)?;
        if let Some(signed_at_ms) = at.signed_at_ms {
            let in_force = self.accounts[id].readers_signed_at_ms;
            ensure(signed_at_ms > in_force, Rejection::OriginReplayed)?;
        }
        let account = self.account_mut(id, changes);
        account.readers = readers.clone();
        if let Some(signed_at_ms) = at.signed_at_ms {
            account.readers_signed_at_ms = signed_at_ms;
        }
        Ok(account.clone())
    }
}
