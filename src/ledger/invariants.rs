//! Invariants of the ledger's state, and the assertions that hold apply to
//! them in every build: a replica whose state breaks one has diverged, and
//! stops rather than serve or store it.

use std::collections::BTreeMap;

use super::changes::pending_net;
use super::state::At;
use super::{Asset, BlockHeader, Changes, Ledger};

impl Ledger {
    /// Sum of all posted balances per asset, and of pending debits minus
    /// pending credits. Every transfer moves money between two accounts of
    /// one asset, so both are zero in a correct ledger.
    pub fn totals(&self) -> BTreeMap<Asset, (i128, i128)> {
        let mut totals: BTreeMap<Asset, (i128, i128)> = BTreeMap::new();
        for a in self.accounts.values() {
            let t = totals.entry(a.asset.clone()).or_default();
            t.0 += a.balance();
            t.1 += pending_net(a);
        }
        totals
    }

    /// [`Self::totals`] stays zero across the entry that made `changes`,
    /// checked over the accounts it changed only: per asset, their
    /// balances moved by zero in sum, and so did their pending debits less
    /// pending credits. Also no account it changed without
    /// `allow_negative` is left below zero. O(accounts changed).
    pub(super) fn assert_balanced(&self, changes: &Changes, height: u64) {
        // Wrapping: a balance moves by up to twice TOTAL_MAX, and a sum
        // that is zero modulo 2^128 is zero.
        let mut moved: BTreeMap<&Asset, (i128, i128)> = BTreeMap::new();
        for before in &changes.before {
            let account = &self.accounts[&before.account];
            assert!(
                account.can_debit(0),
                "apply overdrew account {} in block {height}: balance {}, pending debits {}",
                account.id,
                account.balance(),
                account.debits_pending
            );
            let m = moved.entry(&account.asset).or_default();
            m.0 =
                m.0.wrapping_add(account.balance().wrapping_sub(before.balance));
            m.1 =
                m.1.wrapping_add(pending_net(account).wrapping_sub(before.pending));
        }
        for (asset, (balance, pending)) in moved {
            assert!(
                balance == 0 && pending == 0,
                "block {height} does not balance in {asset}: balances moved by {balance} \
                 in sum, pending debits less credits by {pending}"
            );
        }
    }
}

/// The entry at `at` follows the head: its block is the head's height plus
/// one, and the ledger clock (`clock_ms` before the entry) does not go back.
pub(super) fn assert_follows(head: &BlockHeader, clock_ms: u64, at: At<'_>) {
    assert!(
        at.height == head.height + 1,
        "block {} does not follow the head, block {}",
        at.height,
        head.height
    );
    assert!(
        at.clock_ms >= clock_ms && at.clock_ms >= at.timestamp_ms,
        "the ledger clock went back: {} ms after {clock_ms} ms, for an entry stamped {} ms",
        at.clock_ms,
        at.timestamp_ms
    );
}
