//! Sealing: an entry's leaves, its changed records in stored encoding, and
//! the block header that commits to them.

use std::cell::OnceCell;

use crate::codec::Encoded;

use super::chain::{self, BlockHeader, Hash};
use super::invariants::{assert_follows, BalanceCheck};
use super::leaf::Leaf;
use super::state::At;
use super::{Changes, Ledger, Outcome, Rejection};

/// Bytes reserved per changed record for its encoding, up front: records
/// of short ids take about 40 (a batch of 8000 in `examples/ledger_apply`),
/// ids of 64 bytes make them longer, and the buffer grows as needed.
const RECORD_BYTES_GUESS: usize = 64;

impl Ledger {
    /// Adds the outcome's leaves and makes the entry's block the new head,
    /// and its clock the ledger clock.
    pub(super) fn seal_block(
        &mut self,
        at: At<'_>,
        outcome: &Outcome,
        log_term: u64,
        changes: &mut Changes,
    ) {
        assert_follows(&self.head, self.clock_ms, at);
        let refused = |r: &Rejection| Leaf::Refused { code: r.code() };
        match outcome {
            Outcome::Account(Ok(a)) => changes.push_leaf(&Leaf::Account(a)),
            Outcome::Transfer(Ok(t)) => changes.push_leaf(&Leaf::Transfer(t)),
            Outcome::Account(Err(r)) | Outcome::Transfer(Err(r)) => changes.push_leaf(&refused(r)),
            Outcome::Transfers(results) => {
                for r in results {
                    changes.push_leaf(&r.as_ref().map_or_else(refused, Leaf::Transfer));
                }
            }
            // A governance entry's leaves were added as it ran.
            Outcome::Ticked
            | Outcome::Proposal(Ok(_))
            | Outcome::Revoked(Ok(_))
            | Outcome::Joined(Ok(_)) => {}
            Outcome::Proposal(Err(r)) | Outcome::Revoked(Err(r)) | Outcome::Joined(Err(r)) => {
                changes.push_leaf(&refused(r))
            }
        }
        self.gather_transfers(changes);
        let state_digest = self.state_digest(changes, at.height);
        let block = BlockHeader {
            height: at.height,
            prev_hash: self.head.hash(),
            merkle_root: chain::merkle_root(&changes.leaf_hashes),
            leaf_count: changes.leaf_hashes.len() as u64,
            log_index: at.log_index,
            log_term,
            // The ledger clock, not the leader's: it never goes back.
            timestamp_ms: at.clock_ms,
            state_digest,
        };
        self.head = block.clone();
        self.clock_ms = at.clock_ms;
        changes.block = Some(block);
    }

    /// Fills `changes.transfers`: the changed transfers in the map and
    /// those the entry made, merged in id order. A ledger that keeps
    /// settled transfers puts the made ones in its map here.
    pub(super) fn gather_transfers(&mut self, changes: &mut Changes) {
        changes.made_at = OnceCell::new();
        let made = std::mem::take(&mut changes.made);
        if !self.forgets_settled {
            for t in &made {
                self.transfers.insert(t.id.clone(), t.clone());
            }
        }
        let in_map = std::mem::take(&mut changes.in_map);
        let mut all = made;
        all.extend(in_map.iter().map(|id| self.transfers[id].clone()));
        // Ids are unique: a made transfer is settled and new, a transfer
        // in the map was pending or loaded.
        all.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        assert!(
            all.windows(2).all(|w| w[0].id < w[1].id),
            "an entry stored two versions of one transfer"
        );
        changes.transfers = all;
    }

    /// SHA-256 over the entry's blinding, then every record `changes` holds
    /// or names, in key order, each in its stored (binary) encoding, which is
    /// kept in `changes.encoded`. The blinding comes first because the digest
    /// is in the public header: without it an outsider could confirm a
    /// guessed record (an account just created, a refused transfer) from
    /// the digest as from an unblinded Merkle root. Fills
    /// `changes.accounts` from the accounts touched. The changed accounts
    /// pass through the [`BalanceCheck`] of block `height` on the way.
    pub(super) fn state_digest(&self, changes: &mut Changes, height: u64) -> Hash {
        let mut d = chain::StateDigest::default();
        d.add("blinding", &changes.blinding.0);
        changes.accounts = changes.touched.drain().collect();
        changes.accounts.sort_unstable();
        let records = changes.record_count();
        let mut encoded = Encoded::with_capacity(records, records * RECORD_BYTES_GUESS);
        let mut balance = BalanceCheck::new(&changes.before, height);
        for id in &changes.accounts {
            let account = &self.accounts[id];
            balance.account(account);
            d.add("account", encoded.push(account));
        }
        balance.finish();
        for t in &changes.transfers {
            d.add("transfer", encoded.push(t));
        }
        for id in &changes.rejected {
            d.add("rejected", encoded.push(&self.rejected[id]));
        }
        for item in &changes.history {
            d.add("history", encoded.push(item));
        }
        if changes.gov {
            d.add("gov", encoded.push(&self.gov));
        }
        changes.encoded = encoded;
        d.finish()
    }
}
