//! Invariants of the ledger's state.

use std::collections::BTreeMap;

use super::{Asset, Ledger};

impl Ledger {
    /// Sum of all posted balances per asset, and of pending debits minus
    /// pending credits. Every transfer moves money between two accounts of
    /// one asset, so both are zero in a correct ledger.
    pub fn totals(&self) -> BTreeMap<Asset, (i128, i128)> {
        let mut totals: BTreeMap<Asset, (i128, i128)> = BTreeMap::new();
        for a in self.accounts.values() {
            let t = totals.entry(a.asset.clone()).or_default();
            t.0 += a.balance();
            t.1 += a.debits_pending as i128 - a.credits_pending as i128;
        }
        totals
    }
}
