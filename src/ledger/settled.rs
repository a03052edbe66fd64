//! The settled-transfer cache: a ledger may forget settled transfers once
//! stored, and load back the ones an entry names before applying it.

use super::{Changes, Entry, Ledger, RejectedTransfer, Transfer, TransferId, TransferState};

impl Ledger {
    /// After this call, settled transfers made by an entry are not kept in
    /// memory, as in a ledger rebuilt by [`Self::from_parts`]: the caller
    /// stores each entry's `changes.transfers` and loads the ones an entry
    /// names back with [`Self::load_settled`].
    pub fn forget_settled_from_now(&mut self) {
        self.forgets_settled = true;
    }

    /// After this call the caller holds the transfer index: where each
    /// transfer's latest version is stored. The ledger keeps what the
    /// entries it applies store, until the caller drops it
    /// ([`Self::drop_indexed`]); before each entry the caller tells it
    /// where the ids the entry names are ([`Self::to_look_up`],
    /// [`Self::looked_up`]). Deciding about an id that was not looked up
    /// stops the replica, as deciding about a stored transfer that was not
    /// loaded does.
    pub fn index_outside_from_now(&mut self) {
        self.index_outside = true;
    }

    /// With the index outside: the ids `entry` names that the ledger holds
    /// neither in the index nor as a refusal, to look up with
    /// [`Self::looked_up`] (and [`Self::refusal_looked_up`]) before
    /// applying it.
    pub fn to_look_up(&self, entry: &Entry) -> Vec<TransferId> {
        if !self.index_outside {
            return Vec::new();
        }
        entry
            .command
            .transfer_ids()
            .into_iter()
            .filter(|id| {
                !self.stored_at.contains_key(id.as_str())
                    && !self.absent.contains(*id)
                    && !self.rejected.contains_key(*id)
            })
            .cloned()
            .collect()
    }

    /// With the index outside: the id of `refused` is in no block, and the
    /// caller has this refusal stored under it, for the entry about to
    /// apply. Held until dropped ([`Self::drop_refusal`]).
    pub fn refusal_looked_up(&mut self, refused: RejectedTransfer) {
        assert!(
            self.index_outside,
            "only refusals kept outside are looked up"
        );
        self.absent.insert(refused.request.id.clone());
        self.rejected.insert(refused.request.id.clone(), refused);
    }

    /// With the index outside: forgets the refusal remembered under `id`,
    /// which the caller has stored (an entry naming `id` has it looked up
    /// again).
    pub fn drop_refusal(&mut self, id: &TransferId) {
        assert!(self.index_outside, "only refusals kept outside are dropped");
        self.rejected.remove(id);
    }

    /// How many refusals the ledger holds.
    pub fn refusals_held(&self) -> usize {
        self.rejected.len()
    }

    /// Where the caller's index stores transfer `id` (`None`: nowhere, the
    /// id is new), for the entry about to apply.
    pub fn looked_up(&mut self, id: TransferId, height: Option<u64>) {
        match height {
            Some(height) => {
                self.stored_at.insert(id.as_str().into(), height);
            }
            None => {
                self.absent.insert(id);
            }
        }
    }

    /// With the index outside: holds where transfer `id` is stored (as
    /// the caller's index says), until dropped.
    pub fn hold_indexed(&mut self, id: TransferId, height: u64) {
        self.stored_at.insert(id.as_str().into(), height);
    }

    /// With the index outside: forgets where transfer `id` is stored if
    /// that is at `height` (the caller has it stored there; a later
    /// version stays until dropped at its own height).
    pub fn drop_indexed(&mut self, id: &TransferId, height: u64) {
        assert!(self.index_outside, "only an index kept outside is dropped");
        if self.stored_at.get(id.as_str()) == Some(&height) {
            self.stored_at.remove(id.as_str());
        }
    }

    /// The ids the ledger holds of the transfer index, with their heights.
    pub fn held_index(&self) -> impl Iterator<Item = (&str, u64)> {
        self.stored_at.iter().map(|(id, h)| (&**id, *h))
    }

    /// This ledger holding none of the transfer index and no refusal (as
    /// a ledger kept outside is just after a restart).
    pub fn without_held(mut self) -> Self {
        self.stored_at.clear();
        self.rejected.clear();
        self
    }

    /// How many ids the ledger holds of the transfer index.
    pub fn indexed_len(&self) -> usize {
        self.stored_at.len()
    }

    /// Where transfer `id` is stored, if anywhere. With the index outside,
    /// an id neither held nor looked up is a caller's bug that would make
    /// a re-send a second transfer: it stops the replica. (An id whose
    /// refusal is held is in no block.)
    pub(super) fn indexed(&self, id: &TransferId) -> Option<u64> {
        let at = self.stored_at.get(id.as_str()).copied();
        assert!(
            at.is_some()
                || !self.index_outside
                || self.absent.contains(id)
                || self.rejected.contains_key(id),
            "transfer {id} was not looked up in the index before an entry naming it"
        );
        at
    }

    /// The stored transfers `entry` names (re-sent ids, posts, voids) that
    /// are not in memory, each with the height of the block that holds its
    /// latest version: load them with [`Self::load_settled`] before
    /// applying `entry` (and after [`Self::looked_up`], with the index
    /// outside).
    pub fn to_load(&self, entry: &Entry) -> Vec<(TransferId, u64)> {
        entry
            .command
            .transfer_ids()
            .into_iter()
            .filter(|id| !self.transfers.contains_key(*id))
            .filter_map(|id| Some((id.clone(), *self.stored_at.get(id.as_str())?)))
            .collect()
    }

    /// Puts a stored transfer back in memory; it must be the latest version
    /// (the one stored at [`Self::stored_height`]).
    pub fn load_settled(&mut self, t: Transfer) -> Result<(), StaleRecord> {
        let at = t.resolved_height.unwrap_or(t.height);
        let latest = self.stored_at.get(t.id.as_str()).copied();
        if latest != Some(at) {
            return Err(StaleRecord {
                id: t.id,
                at,
                latest,
            });
        }
        self.transfers.insert(t.id.clone(), t);
        Ok(())
    }

    /// Drops from memory those of `ids` that are settled (posted, voided,
    /// expired): the caller has stored them and loads them again when an
    /// entry names them. Pending transfers stay.
    pub fn forget_settled<'a>(&mut self, ids: impl IntoIterator<Item = &'a TransferId>) {
        assert!(
            self.journal.is_none(),
            "settled transfers are forgotten between entries only"
        );
        for id in ids {
            if self
                .transfers
                .get(id)
                .is_some_and(|t| t.state != TransferState::Pending)
            {
                self.transfers.remove(id);
            }
        }
    }

    /// Transfer `id`, if it exists: in memory, or made by the entry being
    /// applied. A stored transfer that was not loaded is a caller's bug that
    /// would make a re-send a second transfer: it stops the replica rather
    /// than decide wrongly.
    pub(super) fn known<'a>(
        &'a self,
        id: &TransferId,
        changes: &'a Changes,
    ) -> Option<&'a Transfer> {
        self.indexed(id)?;
        let t = self.transfers.get(id).or_else(|| changes.made(id));
        assert!(
            t.is_some(),
            "transfer {id} is stored but was not loaded before an entry naming it"
        );
        t
    }
}

/// A stored transfer record offered to [`Ledger::load_settled`] that is not
/// the transfer's latest version: the store and the ledger's index of it
/// disagree.
#[derive(Debug, thiserror::Error)]
#[error("the record of transfer {id} from block {at} is not its latest version (block {latest:?})")]
pub struct StaleRecord {
    pub id: TransferId,
    pub at: u64,
    pub latest: Option<u64>,
}
