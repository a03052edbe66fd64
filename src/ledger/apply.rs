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
        let at = At {
            actor: &entry.actor,
            // seal_block makes this the head's height.
            height: self.head.height + 1,
            log_index,
            timestamp_ms: entry.timestamp_ms,
            // seal_block makes this the ledger clock.
            clock_ms: self.clock_ms.max(entry.timestamp_ms),
        };
        let named = entry.command.transfers_named();
        let mut changes = Changes::for_transfers(named);
        self.stored_at.reserve(named);
        self.expire_due(at, &mut changes);
        let outcome = self.run_command(at, &entry.command, &mut changes);
        assert!(
            self.journal.is_none(),
            "a batch left its journal open: a refused batch would not be undone"
        );
        self.seal_block(at, &outcome, log_term, &mut changes);
        (outcome, changes)
    }

    /// Runs `command`, after the entry's expiries, and returns its outcome.
    fn run_command(&mut self, at: At<'_>, command: &Command, changes: &mut Changes) -> Outcome {
        let base = changes.leaf_hashes.len() as u64;
        match command {
            Command::CreateAccount(req) => Outcome::Account(self.create_account(at, req, changes)),
            Command::Transfers {
                transfers,
                atomic: false,
            } => Outcome::Transfers(
                (base..)
                    .zip(transfers)
                    .map(|(leaf, t)| self.transfer_and_remember(at, t, leaf, changes))
                    .collect(),
            ),
            Command::Transfers {
                transfers,
                atomic: true,
            } => Outcome::Transfers(self.atomic_batch(at, transfers, base, changes)),
            Command::PostPending { id, amount } => {
                Outcome::Transfer(self.post_pending(at, id, *amount, changes))
            }
            Command::VoidPending { id } => Outcome::Transfer(self.void_pending(at, id, changes)),
            Command::CloseAccount { id } => Outcome::Account(self.close_account(at, id, changes)),
            Command::SetReaders { id, readers } => {
                Outcome::Account(self.set_readers(at, id, readers, changes))
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
                        self.transfer_and_remember(at, &g.transfer, leaf, changes)
                    })
                    .collect(),
            ),
        }
    }
}
