//! Applying one entry: the ledger clock, expiry, the command, then sealing
//! the entry's block.

use super::state::At;
use super::{Changes, Command, Entry, Ledger, Outcome};

impl Ledger {
    /// [`Self::apply_logged`] with log term 0 (tests, benchmarks).
    pub fn apply(&mut self, entry: &Entry, log_index: u64) -> (Outcome, Changes) {
        self.apply_logged(entry, log_index, 0)
    }

    /// Applies one entry committed at (`log_term`, `log_index`); it becomes
    /// the next block.
    pub fn apply_logged(
        &mut self,
        entry: &Entry,
        log_index: u64,
        log_term: u64,
    ) -> (Outcome, Changes) {
        self.clock_ms = self.clock_ms.max(entry.timestamp_ms);
        let at = At {
            actor: &entry.actor,
            // seal_block makes this the head's height.
            height: self.head.height + 1,
            log_index,
            timestamp_ms: entry.timestamp_ms,
            clock_ms: self.clock_ms,
        };
        let named = entry.command.transfers_named();
        let mut changes = Changes::for_transfers(named);
        self.stored_at.reserve(named);
        self.expire_due(at, &mut changes);
        let base = changes.leaf_hashes.len() as u64;
        let outcome = match &entry.command {
            Command::CreateAccount(req) => {
                Outcome::Account(self.create_account(at, req, &mut changes))
            }
            Command::Transfers {
                transfers,
                atomic: false,
            } => Outcome::Transfers(
                (base..)
                    .zip(transfers)
                    .map(|(leaf, t)| self.transfer_and_remember(at, t, leaf, &mut changes))
                    .collect(),
            ),
            Command::Transfers {
                transfers,
                atomic: true,
            } => Outcome::Transfers(self.atomic_batch(at, transfers, base, &mut changes)),
            Command::PostPending { id, amount } => {
                Outcome::Transfer(self.post_pending(at, id, *amount, &mut changes))
            }
            Command::VoidPending { id } => {
                Outcome::Transfer(self.void_pending(at, id, &mut changes))
            }
            Command::CloseAccount { id } => {
                Outcome::Account(self.close_account(at, id, &mut changes))
            }
            Command::SetReaders { id, readers } => {
                Outcome::Account(self.set_readers(at, id, readers, &mut changes))
            }
            Command::Tick => Outcome::Ticked,
            Command::Group(items) => Outcome::Transfers(
                (base..)
                    .zip(items)
                    .map(|(leaf, g)| {
                        let at = At {
                            actor: &g.actor,
                            ..at
                        };
                        self.transfer_and_remember(at, &g.transfer, leaf, &mut changes)
                    })
                    .collect(),
            ),
        };
        debug_assert!(self.journal.is_none(), "a batch left its journal open");
        self.seal_block(at, &outcome, log_term, &mut changes);
        (outcome, changes)
    }
}
