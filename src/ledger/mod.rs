//! The ledger: accounts, transfers and the rules that move money.
//!
//! This module is pure. [`Ledger::apply`] is a function of the current state
//! and one [`Entry`]: no clock (the leader stamps `timestamp_ms` before it
//! proposes), no randomness (the leader draws the entry's `blinding`), no
//! I/O. Every replica that applies the same log
//! ends with the same state, which is what makes Raft replication of it sound.
//!
//! - Time is the *ledger clock*: the largest entry timestamp applied so far,
//!   so it never runs backwards even if a new leader's clock does. Before
//!   each entry, pending transfers whose timeout has passed on the ledger
//!   clock expire; so they expire at the same log position on every replica.
//! - An atomic batch runs under a journal of what it touched; if any item is
//!   refused, the journal restores the state and the batch changes nothing.
//! - The caller (the Raft state machine) persists what [`Changes`] names
//!   after each entry, in one atomic sled batch; history items exist only
//!   there (the ledger needs none of them to decide anything).
//!
//! Checks run in a fixed, documented order, one line per check, and the first
//! failing check is the answer (see [`Rejection`]). A rejected command changes
//! nothing (except that a transfer's refusal is remembered under its id, so a
//! re-send gets the same answer; see `transfer.rs`, `remembered`).
//!
//! Invariants that only a bug could break are asserted in every build, not
//! only in debug ones: each block follows the head by one, the ledger clock
//! never goes back, and per asset the money an entry moves sums to zero with
//! no account without `allow_negative` left below zero. One that fails means
//! the ledger's own rules were broken (a bug, or stored state changed
//! outside Raft): apply panics before the caller stores the entry's
//! changes, and the node stops rather than store or serve a wrong state.
//! Apply is deterministic, so a bug stops every replica at the same entry,
//! and a restart stops at it again: the cluster halts (fail-stop) until a
//! fixed build runs, and nothing wrong is sealed into a block.
//!
//! # Layout
//!
//! - `command.rs`: what the log carries ([`Entry`], [`Command`]) and the
//!   [`Outcome`] of applying it; `actor.rs`: who proposed it; `origin.rs`:
//!   the evidence that proves it, and the [`Verdict`] on that evidence.
//! - `state.rs`: the [`Ledger`] struct, how it is built, and its reads.
//! - `apply.rs`: one entry, from the ledger clock to the sealed block;
//!   `account.rs` and `transfer.rs`: each command's checks and effects.
//! - `mutate.rs`: every write to the ledger's maps, journaled while an atomic
//!   batch runs; `changes.rs`: what an entry changed, for the caller to store.
//! - `seal.rs`: an entry's leaves, state digest and block header;
//!   `chain.rs`, `leaf.rs`: hashing and proofs.
//! - `settled.rs`: forgetting settled transfers and loading them back.
//! - `gov/`: governance, the consortium's rules ([`Gov`]): proposals,
//!   ballots, revocations, frozen accounts and corrections.
//! - `invariants.rs`: the release-build assertions above, the checks of a
//!   stored state ([`check_stored`], [`check_stored_head`]) and
//!   [`Ledger::totals`].
//! - `ids.rs`, `types.rs`, `rejection.rs`: the values and refusals all of the
//!   above speak in.

mod account;
mod account_map;
mod actor;
mod apply;
pub mod chain;
mod changes;
mod command;
pub mod gov;
pub mod ids;
mod invariants;
mod leaf;
mod mutate;
mod origin;
mod rejection;
mod seal;
mod settled;
mod state;
mod transfer;
pub mod types;

pub use account_map::Seeded;
pub use actor::{Actor, Role};
pub use chain::{Blinding, BlockHeader, Hash, Proof};
pub use changes::Changes;
pub use command::{Command, Entry, Grouped, Outcome};
pub use gov::{
    Action, CertRef, Gov, Policy, Proposal, ProposalState, Revocation, Serial, Threshold,
};
pub use ids::{AccountId, Amount, Asset, InvalidAmount, InvalidId, OrgName, TransferId};
pub use invariants::{check_stored, check_stored_head, HEIGHT_MAX};
pub use leaf::transfer_leaf;
pub use origin::{Bundle, ClientSeal, Evidence, Seal, Verdict};
use rejection::ensure;
pub use rejection::Rejection;
pub use settled::StaleRecord;
pub use state::{Ledger, TransferIndex};
pub use types::{
    Account, Event, HistoryItem, NewAccount, NewTransfer, RejectedTransfer, Transfer,
    TransferState, TOTAL_MAX,
};

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
