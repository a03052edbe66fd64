//! One applied entry's changed records and the state machine's progress,
//! put into the batch that goes to sled; and the stored records an entry needs
//! loaded before it applies.

use std::collections::{BTreeMap, BTreeSet};

use super::history::Tails;
use super::writer::StateBatch;
use super::{read_err, write_err, Applied, StateMachine};
use crate::codec::{decode, encode};
use crate::ledger::{Changes, Entry, RejectedTransfer, Transfer, TransferId, TransferState};
use crate::raft::store::{chunks, read_chunks, StateKey, TRANSFERS_TAG};
use crate::raft::StorageError;

/// An entry's changed records in their stored encoding, by kind, in the
/// order [`Changes`] lists them.
struct Records<'a> {
    accounts: Vec<&'a [u8]>,
    transfers: Vec<&'a [u8]>,
    rejected: Vec<&'a [u8]>,
    history: Vec<&'a [u8]>,
    gov: Option<&'a [u8]>,
}

/// Why an entry's named transfers could not be loaded.
#[derive(Debug, thiserror::Error)]
enum LoadError {
    #[error("block {height} lacks transfers indexed there: {ids}")]
    Missing { height: u64, ids: String },
    #[error("the refusal stored under {0} is another id's")]
    Misfiled(String),
}

/// Puts one entry's effects and progress into `batch`. The changed records
/// are stored as the ledger encoded them for the block's state digest:
/// serialized once. Accounts and refusals are a key each; the block's
/// transfers, its leaf hashes and its history items are stored in chunks
/// of about 4 KiB (see [`StateKey`], [`chunks`], [`super::history`]). Takes
/// `changes.encoded`; the rest of `changes` stays for the caller.
pub(super) fn put(unqueued: &mut Unqueued, applied: &mut Applied, changes: &mut Changes) {
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
        gov: next(usize::from(changes.gov)).pop(),
    };
    put_records(&mut unqueued.batch, changes, &records, &mut applied.tails);
    put_progress(&mut unqueued.batch, applied, changes);
    unqueued.refused.extend(changes.rejected.iter().cloned());
    if let Some(block) = &changes.block {
        let ids = changes
            .transfers
            .iter()
            .map(|t| (t.id.clone(), block.height));
        unqueued.indexed.extend(ids);
    }
    unqueued.entries += 1;
}

/// The changes of entries applied but not yet queued for the writer, the
/// settled records they touched, which leave memory once queued, and the
/// ids they indexed and refused, which may leave it once written.
#[derive(Default)]
pub(super) struct Unqueued {
    batch: StateBatch,
    entries: usize,
    pub settled: Vec<TransferId>,
    indexed: Vec<(TransferId, u64)>,
    refused: Vec<TransferId>,
}

impl StateMachine {
    /// Queues the changes put so far, then forgets the settled records
    /// they touched.
    pub(super) fn queue(
        &self,
        applied: &mut Applied,
        unqueued: &mut Unqueued,
    ) -> Result<(), StorageError> {
        if unqueued.entries > 0 {
            let batch = std::mem::take(&mut unqueued.batch);
            let number = self.state.writer.queue(batch).map_err(write_err)?;
            (applied.index).hold(number, std::mem::take(&mut unqueued.indexed));
            (applied.index).hold_refused(number, std::mem::take(&mut unqueued.refused));
            unqueued.entries = 0;
        }
        (applied.ledger).forget_settled(&std::mem::take(&mut unqueued.settled));
        Ok(())
    }

    /// Keeps the transfer index (see [`super::index`]): drops from the
    /// ledger what the runs on sled have, writes new runs and merges. Only
    /// between calls of apply: an entry's ids stay held from their look-up
    /// until it is applied.
    pub(super) fn keep_index(&self, applied: &mut Applied) -> Result<(), StorageError> {
        let Applied { ledger, index, .. } = applied;
        let (writer, tree) = (&self.state.writer, &self.store.state);
        (index.maintain(ledger, writer, tree, self.index_limits)).map_err(write_err)
    }

    /// Tells the ledger where the ids `entry` names are that it does not
    /// hold, and the refusals stored under those in no block: the transfer
    /// index and the refusals on sled have every id the ledger dropped (it
    /// drops none before its batch is written).
    pub(super) fn look_up_named(
        &self,
        applied: &mut Applied,
        entry: &Entry,
    ) -> Result<(), StorageError> {
        let tree = &self.store.state;
        for id in applied.ledger.to_look_up(entry) {
            let height = applied.index.look_up(tree, &id).map_err(read_err)?;
            if let Some(height) = height {
                applied.index.remember(id.clone(), height);
            } else if let Some(v) = (applied.index.may_be_refused(&id))
                .then(|| tree.get(StateKey::Rejected(&id).encode()))
                .transpose()
                .map_err(read_err)?
                .flatten()
            {
                let refused: RejectedTransfer = decode(&v).map_err(read_err)?;
                if refused.request.id != id {
                    return Err(read_err(LoadError::Misfiled(id.to_string())));
                }
                applied.index.hold_refused(0, [id]);
                applied.ledger.refusal_looked_up(refused);
                continue;
            }
            applied.ledger.looked_up(id, height);
        }
        Ok(())
    }

    /// Loads into `ledger` the stored transfers `entry` names (re-sends,
    /// posts, voids), one block read per height; returns their ids. They
    /// may be in changes not yet queued, or queued and not yet written:
    /// this queues the changes and waits for the writer first. Queueing
    /// forgets the settled transfers those changes touched, some of which
    /// the entry may name: what to load is decided after it.
    pub(super) fn load_named(
        &self,
        applied: &mut Applied,
        unqueued: &mut Unqueued,
        entry: &Entry,
    ) -> Result<Vec<TransferId>, StorageError> {
        if applied.ledger.to_load(entry).is_empty() {
            return Ok(Vec::new());
        }
        self.queue(applied, unqueued)?;
        let ledger = &mut applied.ledger;
        let wanted = ledger.to_load(entry);
        self.state.writer.caught_up().map_err(read_err)?;
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
fn put_records(
    batch: &mut StateBatch,
    changes: &Changes,
    records: &Records<'_>,
    tails: &mut Tails,
) {
    for (id, bytes) in changes.accounts.iter().zip(&records.accounts) {
        batch.insert(StateKey::Account(id).encode(), *bytes);
    }
    for (id, bytes) in changes.rejected.iter().zip(&records.rejected) {
        batch.insert(StateKey::Rejected(id).encode(), *bytes);
    }
    if let Some(gov) = records.gov {
        batch.insert(StateKey::Gov.encode(), gov);
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
        put_pending(batch, height, &changes.transfers, &records.transfers);
    }
    if !records.history.is_empty() {
        tails.put(batch, height, &changes.history, &records.history);
    }
}

/// The pending transfers' records of one block (their latest versions)
/// while they are pending. A transfer made and settled by the same block
/// never had a pending key.
fn put_pending(batch: &mut StateBatch, height: u64, transfers: &[Transfer], bytes: &[&[u8]]) {
    for (t, bytes) in transfers.iter().zip(bytes) {
        if t.state == TransferState::Pending {
            batch.insert(StateKey::Pending(&t.id).encode(), *bytes);
        } else if t.height < height {
            batch.remove(StateKey::Pending(&t.id).encode());
        }
    }
}

/// The state machine's progress (last applied, membership, ledger clock)
/// and the entry's block: its header, leaf hashes, blinding, and the new
/// head.
fn put_progress(batch: &mut StateBatch, applied: &Applied, changes: &Changes) {
    batch.insert(
        StateKey::LastApplied.encode(),
        encode(&applied.last_applied),
    );
    // The membership changes only with a membership entry.
    if applied.membership.log_id() == &applied.last_applied {
        batch.insert(StateKey::Membership.encode(), encode(&applied.membership));
    }
    batch.insert(StateKey::Clock.encode(), encode(&applied.ledger.clock_ms()));
    if !changes.transfers.is_empty() {
        batch.insert(
            StateKey::TransferCount.encode(),
            encode(&applied.ledger.transfer_count()),
        );
    }
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
        batch.insert(StateKey::Indexed.encode(), encode(&block.height));
    }
}
