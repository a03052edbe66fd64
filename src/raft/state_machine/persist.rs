//! One applied entry to sled: its changed records and the state machine's
//! progress, in one atomic batch; and the stored records an entry needs
//! loaded before it applies.

use std::collections::{BTreeMap, BTreeSet};

use super::{read_err, write_err, Applied, StateMachine};
use crate::codec::encode;
use crate::ledger::{AccountId, Changes, Entry, HistoryItem, Ledger, Transfer, TransferId};
use crate::raft::store::{chunks, read_chunks, StateKey, TRANSFERS_TAG};
use crate::raft::StorageError;

/// An entry's changed records in their stored encoding, by kind, in the
/// order [`Changes`] lists them.
struct Records<'a> {
    accounts: Vec<&'a [u8]>,
    transfers: Vec<&'a [u8]>,
    rejected: Vec<&'a [u8]>,
    history: Vec<&'a [u8]>,
}

/// Why an entry's named transfers could not be loaded.
#[derive(Debug, thiserror::Error)]
enum LoadError {
    #[error("block {height} lacks transfers indexed there: {ids}")]
    Missing { height: u64, ids: String },
}

impl StateMachine {
    /// Writes one entry's effects and progress in one atomic batch. The
    /// changed records are stored as the ledger encoded them for the block's
    /// state digest: serialized once. Accounts and refusals are a key each;
    /// the block's transfers, its leaf hashes and each account's history
    /// items in it are stored in chunks of about 4 KiB (see [`StateKey`],
    /// [`chunks`]). Takes `changes.encoded`; the rest of `changes` stays
    /// for the caller.
    pub(super) fn persist(
        &self,
        applied: &Applied,
        changes: &mut Changes,
    ) -> Result<(), StorageError> {
        assert_eq!(
            changes.encoded.len(),
            changes.record_count(),
            "one encoding per changed record"
        );
        let encoded = std::mem::take(&mut changes.encoded);
        let mut encoded = encoded.iter();
        let mut next = |n: usize| encoded.by_ref().take(n).collect::<Vec<_>>();
        let records = Records {
            accounts: next(changes.accounts.len()),
            transfers: next(changes.transfers.len()),
            rejected: next(changes.rejected.len()),
            history: next(changes.history.len()),
        };
        let mut batch = sled::Batch::default();
        put_records(&mut batch, changes, &records);
        put_progress(&mut batch, applied, changes);
        self.store.state.apply_batch(batch).map_err(write_err)
    }

    /// Loads into `ledger` the stored transfers `entry` names (re-sends,
    /// posts, voids), one block read per height; returns their ids.
    pub(super) fn load_named(
        &self,
        ledger: &mut Ledger,
        entry: &Entry,
    ) -> Result<Vec<TransferId>, StorageError> {
        let wanted = ledger.to_load(entry);
        let mut by_height: BTreeMap<u64, BTreeSet<&TransferId>> = BTreeMap::new();
        for (id, height) in &wanted {
            by_height.entry(*height).or_default().insert(id);
        }
        for (height, ids) in by_height {
            let prefix = StateKey::height_prefix(TRANSFERS_TAG, height);
            let block: Option<Vec<Transfer>> =
                read_chunks(&self.store.state, &prefix).map_err(read_err)?;
            let mut found = 0;
            for t in block
                .unwrap_or_default()
                .into_iter()
                .filter(|t| ids.contains(&t.id))
            {
                found += 1;
                ledger.load_settled(t).map_err(read_err)?;
            }
            if found != ids.len() {
                let ids = format!("{ids:?}");
                return Err(read_err(LoadError::Missing { height, ids }));
            }
        }
        Ok(wanted.into_iter().map(|(id, _)| id).collect())
    }
}

/// The entry's changed records: accounts and refusals a key each; a
/// block's transfers and history in chunks.
fn put_records(batch: &mut sled::Batch, changes: &Changes, records: &Records<'_>) {
    for (id, bytes) in changes.accounts.iter().zip(&records.accounts) {
        batch.insert(StateKey::Account(id).encode(), *bytes);
    }
    for (id, bytes) in changes.rejected.iter().zip(&records.rejected) {
        batch.insert(StateKey::Rejected(id).encode(), *bytes);
    }
    if records.transfers.is_empty() && records.history.is_empty() {
        return;
    }
    let height = changes
        .block
        .as_ref()
        .expect("an entry that changes records is a block")
        .height;
    if !records.transfers.is_empty() {
        for (n, (_, chunk)) in (0..).zip(chunks(&records.transfers)) {
            batch.insert(StateKey::Transfers(height, n).encode(), chunk);
        }
    }
    put_history(batch, height, &changes.history, &records.history);
}

/// Each account's history items of one block, as runs in chunks, and the
/// index from the block's height to the account's last run.
fn put_history(batch: &mut sled::Batch, height: u64, items: &[HistoryItem], bytes: &[&[u8]]) {
    // Each account's items of one entry are consecutive.
    let mut runs: BTreeMap<&AccountId, (u64, Vec<&[u8]>)> = BTreeMap::new();
    for (item, bytes) in items.iter().zip(bytes) {
        let (first, run) = runs.entry(&item.account).or_insert((item.seq, Vec::new()));
        assert_eq!(
            *first + run.len() as u64,
            item.seq,
            "history runs are consecutive"
        );
        run.push(bytes);
    }
    for (account, (first, run)) in runs {
        let mut last = first;
        for (at, chunk) in chunks(&run) {
            last = first + at as u64;
            batch.insert(StateKey::History(account, last).encode(), chunk);
        }
        batch.insert(
            StateKey::HistoryAt(account, height).encode(),
            &last.to_be_bytes(),
        );
    }
}

/// The state machine's progress (last applied, membership, ledger clock)
/// and the entry's block: its header, leaf hashes, blinding, and the new
/// head.
fn put_progress(batch: &mut sled::Batch, applied: &Applied, changes: &Changes) {
    batch.insert(
        StateKey::LastApplied.encode(),
        encode(&applied.last_applied),
    );
    batch.insert(StateKey::Membership.encode(), encode(&applied.membership));
    batch.insert(StateKey::Clock.encode(), encode(&applied.ledger.clock_ms()));
    if let Some(block) = &changes.block {
        batch.insert(StateKey::Block(block.height).encode(), encode(block));
        let hashes: Vec<Vec<u8>> = changes.leaf_hashes.iter().map(encode).collect();
        for (n, (_, chunk)) in (0..).zip(chunks(&hashes)) {
            batch.insert(StateKey::LeafHashes(block.height, n).encode(), chunk);
        }
        batch.insert(
            StateKey::Blinding(block.height).encode(),
            encode(&changes.blinding),
        );
        batch.insert(StateKey::Head.encode(), encode(block));
    }
}
