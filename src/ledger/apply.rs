//! Applying one entry: the ledger clock, expiry, the command, then sealing
//! the entry's block.

use super::state::At;
use super::{Changes, Command, Entry, Evidence, Ledger, Outcome, Rejection, Verdict};

impl Ledger {
    /// [`Self::apply_logged`] with log term 0 and every unit's evidence
    /// accepted (tests, benchmarks).
    pub fn apply(&mut self, entry: &Entry, log_index: u64) -> (Outcome, Changes) {
        self.apply_logged(entry, log_index, 0, &vec![Ok(()); entry.units()])
    }

    /// The ledger clock while `entry` applies: the evidence of its units is
    /// checked against it.
    pub fn clock_for(&self, entry: &Entry) -> u64 {
        self.clock_ms.max(entry.timestamp_ms)
    }

    /// Applies one entry committed at (`log_term`, `log_index`); it becomes
    /// the next block. `verdicts` holds one verdict on the evidence of each
    /// of the entry's [`Entry::units`], checked first: the transfers and
    /// commands of a refused unit are refused with its rejection, are not
    /// remembered under their ids (the ids stay their owners'), and change
    /// nothing.
    pub fn apply_logged(
        &mut self,
        entry: &Entry,
        log_index: u64,
        log_term: u64,
        verdicts: &[Verdict],
    ) -> (Outcome, Changes) {
        assert_eq!(
            verdicts.len(),
            entry.units(),
            "one verdict per unit of evidence"
        );
        let at = At {
            actor: &entry.actor,
            // seal_block makes this the head's height.
            height: self.head.height + 1,
            log_index,
            timestamp_ms: entry.timestamp_ms,
            // seal_block makes this the ledger clock.
            clock_ms: self.clock_for(entry),
            signed_at_ms: match &entry.evidence {
                Evidence::Leader => None,
                Evidence::Node(seal) => Some(seal.signed_at_ms),
                Evidence::Client(seal) => Some(seal.signed_at_ms),
            },
            client: match &entry.evidence {
                Evidence::Client(seal) => Some(seal),
                Evidence::Leader | Evidence::Node(_) => None,
            },
        };
        let named = entry.command.transfers_named();
        let mut changes = Changes::for_transfers(named, entry.blinding);
        self.stored_at.reserve(named);
        self.expire_due(at, &mut changes);
        self.expire_proposals(at, &mut changes);
        let outcome = match (&entry.command, verdicts) {
            (Command::Group(_), _) | (_, [Ok(())]) => {
                self.run_command(at, &entry.command, verdicts, &mut changes)
            }
            (command, [Err(r)]) => refuse_all(command, *r),
            (_, _) => unreachable!("one verdict for a command that is not a group"),
        };
        assert!(
            self.journal.is_none(),
            "a batch left its journal open: a refused batch would not be undone"
        );
        self.seal_block(at, &outcome, log_term, &mut changes);
        self.absent.clear();
        (outcome, changes)
    }

    /// Runs `command`, after the entry's expiries, and returns its outcome.
    /// `verdicts` are a group's, one per bundle.
    fn run_command(
        &mut self,
        at: At<'_>,
        command: &Command,
        verdicts: &[Verdict],
        changes: &mut Changes,
    ) -> Outcome {
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
            Command::Propose(action) => Outcome::Proposal(self.propose(at, action, changes)),
            Command::Ballot {
                proposal,
                approve,
                digest,
            } => Outcome::Proposal(self.vote(at, *proposal, *approve, digest, changes)),
            Command::Revoke(cert) => Outcome::Revoked(self.revoke_own(at, cert, changes)),
            Command::Join => Outcome::Joined(self.join(at, changes)),
            Command::Group(bundles) => {
                let items = bundles
                    .iter()
                    .zip(verdicts)
                    .flat_map(|(b, verdict)| b.items.iter().map(move |g| (g, *verdict)));
                Outcome::Transfers(
                    (base..)
                        .zip(items)
                        .map(|(leaf, (g, verdict))| {
                            verdict?;
                            let at = At {
                                actor: &g.actor,
                                ..at
                            };
                            self.transfer_and_remember(at, &g.transfer, leaf, changes)
                        })
                        .collect(),
                )
            }
        }
    }
}

/// The outcome of a command whose evidence was refused with `r`: every
/// transfer or record it asked for is refused.
fn refuse_all(command: &Command, r: Rejection) -> Outcome {
    match command {
        Command::CreateAccount(_) | Command::CloseAccount { .. } | Command::SetReaders { .. } => {
            Outcome::Account(Err(r))
        }
        Command::Transfers { transfers, .. } => Outcome::Transfers(vec![Err(r); transfers.len()]),
        Command::PostPending { .. } | Command::VoidPending { .. } => Outcome::Transfer(Err(r)),
        Command::Tick => Outcome::Ticked,
        Command::Propose(_) | Command::Ballot { .. } => Outcome::Proposal(Err(r)),
        Command::Revoke(_) => Outcome::Revoked(Err(r)),
        Command::Join => Outcome::Joined(Err(r)),
        Command::Group(_) => unreachable!("a group's verdicts are its bundles'"),
    }
}
