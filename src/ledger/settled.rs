//! The settled-transfer cache: a ledger may forget settled transfers once
//! stored, and load back the ones an entry names before applying it.

use super::{Changes, Command, Entry, Ledger, Transfer, TransferId, TransferState};

impl Ledger {
    /// After this call, settled transfers made by an entry are not kept in
    /// memory, as in a ledger rebuilt by [`Self::from_parts`]: the caller
    /// stores each entry's `changes.transfers` and loads the ones an entry
    /// names back with [`Self::load_settled`].
    pub fn forget_settled_from_now(&mut self) {
        self.forgets_settled = true;
    }

    /// The stored transfers `entry` names (re-sent ids, posts, voids) that
    /// are not in memory, each with the height of the block that holds its
    /// latest version: load them with [`Self::load_settled`] before
    /// applying `entry`.
    pub fn to_load(&self, entry: &Entry) -> Vec<(TransferId, u64)> {
        let named: Vec<&TransferId> = match &entry.command {
            Command::Transfers { transfers, .. } => transfers.iter().map(|t| &t.id).collect(),
            Command::Group(bundles) => bundles
                .iter()
                .flat_map(|b| &b.items)
                .map(|g| &g.transfer.id)
                .collect(),
            Command::PostPending { id, .. } | Command::VoidPending { id } => vec![id],
            Command::CreateAccount(_)
            | Command::CloseAccount { .. }
            | Command::SetReaders { .. }
            | Command::Tick
            | Command::Propose(_)
            | Command::Ballot { .. }
            | Command::Revoke(_)
            | Command::Join => vec![],
        };
        named
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
        if !self.stored_at.contains_key(id.as_str()) {
            return None;
        }
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
