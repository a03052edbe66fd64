//! The ledger: accounts, transfers and the rules that move money.
//!
//! This module is pure. [`Ledger::apply`] is a function of the current state
//! and one [`Entry`]: no clock (the leader stamps `timestamp_ms` before it
//! proposes), no randomness, no I/O. Every replica that applies the same log
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
//! nothing (except that a refusal decided after ownership is remembered under
//! its transfer id, so a re-send gets the same answer).

mod account;
mod actor;
mod apply;
pub mod chain;
mod changes;
mod command;
pub mod ids;
mod invariants;
mod leaf;
mod mutate;
mod rejection;
mod seal;
mod settled;
mod state;
mod transfer;
pub mod types;

pub use actor::{Actor, Role};
pub use chain::{BlockHeader, Hash, Proof};
pub use changes::Changes;
pub use command::{Command, Entry, Grouped, Outcome};
pub use ids::{AccountId, Amount, Asset, InvalidAmount, InvalidId, OrgName, TransferId};
pub use leaf::transfer_leaf;
use rejection::ensure;
pub use rejection::Rejection;
pub use state::{Ledger, TransferIndex};
pub use types::{
    Account, Event, HistoryItem, NewAccount, NewTransfer, RejectedTransfer, Transfer,
    TransferState, TOTAL_MAX,
};

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
