//! The ledger's state: the [`Ledger`] struct, how it is built, and what it
//! answers between entries.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::account_map::AccountMap;
use super::mutate::Journal;
use super::{
    Account, AccountId, Actor, BlockHeader, ClientSeal, Gov, Hash, OrgName, RejectedTransfer,
    Seeded, Transfer, TransferId, TransferState,
};

/// Where each transfer's latest version is stored: its id, with the height
/// of the block that stored it. Ids as boxed strings, not [`TransferId`]s,
/// whose shared allocation adds 16 bytes of counts to each of a million
/// entries. Hashed with foldhash, seeded
/// at random per process as std's SipHash is, and cheaper for short keys,
/// which matters at tens of thousands of lookups per entry.
pub type TransferIndex = HashMap<Box<str>, u64, Seeded>;

/// The ledger state a replica decides with.
///
/// Settled transfers (posted, voided, expired) need not stay in memory: a
/// caller that stores each entry's changes may forget them
/// ([`Self::forget_settled`]) and, before applying an entry, load back the
/// ones it names ([`Self::to_load`], [`Self::load_settled`]). The ledger
/// keeps every transfer's id and where its latest version is stored, so a
/// re-send still gets its original answer; it refuses to decide about a
/// stored transfer that was not loaded. A ledger rebuilt with
/// [`Self::from_parts`], or told [`Self::forget_settled_from_now`], does not
/// even put the settled transfers an entry makes in memory: that only saves
/// work, the answers and blocks are the same.
///
/// Likewise the index of where each transfer is stored may live with the
/// caller ([`Self::index_outside_from_now`]): the ledger then holds part
/// of it, and before applying an entry the caller looks up the ids it
/// names that the ledger does not hold ([`Self::to_look_up`],
/// [`Self::looked_up`]); between entries it may drop what it stored
/// ([`Self::drop_indexed`]). So may the refusals remembered under ids
/// that hold no transfer: the caller stores them, looks up those an entry
/// names ([`Self::refusal_looked_up`]) and drops them
/// ([`Self::drop_refusal`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    /// Member organizations, from genesis.
    pub(super) orgs: BTreeSet<OrgName>,
    pub(super) accounts: AccountMap,
    /// Transfers in memory: every pending one, and settled ones until the
    /// caller forgets them (a ledger that never forgets holds all; one that
    /// forgets settled ones never holds those an entry makes).
    pub(super) transfers: BTreeMap<TransferId, Transfer>,
    /// Every transfer, with the height of the block that stored its latest
    /// version; with the index outside, those the caller has not dropped.
    /// Never iterated, so its order cannot reach a decision.
    #[serde(serialize_with = "in_key_order")]
    pub(super) stored_at: TransferIndex,
    /// Number of transfers ever made.
    pub(super) transfer_count: u64,
    /// Refusals remembered under ids that hold no transfer; with the index
    /// outside, those the caller has not dropped.
    pub(super) rejected: BTreeMap<TransferId, RejectedTransfer>,
    /// Pending transfers by (expiry on the ledger clock, id).
    pub(super) expiries: BTreeSet<(u64, TransferId)>,
    /// Largest entry timestamp applied so far, ms.
    pub(super) clock_ms: u64,
    /// The last block's header (block 0 from genesis).
    pub(super) head: BlockHeader,
    /// The consortium's governance state.
    pub(super) gov: Gov,
    /// Undo records while an atomic batch runs; never persisted.
    #[serde(skip)]
    pub(super) journal: Option<Journal>,
    /// Whether settled transfers made by an entry stay out of `transfers`
    /// (its caller stores them and loads them back when named; see
    /// [`Self::from_parts`]). Otherwise the ledger keeps them all.
    #[serde(skip)]
    pub(super) forgets_settled: bool,
    /// Whether the caller holds the transfer index, `stored_at` only part
    /// of it (see [`Self::index_outside_from_now`]).
    #[serde(skip)]
    pub(super) index_outside: bool,
    /// With the index outside: ids the caller looked up for the entry
    /// about to apply and found in no block. Cleared after each entry.
    #[serde(skip)]
    pub(super) absent: HashSet<TransferId, Seeded>,
}

/// The entry being applied: what every record made by it carries.
#[derive(Clone, Copy)]
pub(super) struct At<'a> {
    pub(super) actor: &'a Actor,
    pub(super) height: u64,
    pub(super) log_index: u64,
    pub(super) timestamp_ms: u64,
    pub(super) clock_ms: u64,
    /// When the entry's command was signed, by its evidence (none for the
    /// leader's own entries and for groups, whose bundles carry their own).
    pub(super) signed_at_ms: Option<u64>,
    /// The caller's own signature, if it signed the command (governance
    /// requires one).
    pub(super) client: Option<&'a ClientSeal>,
}

impl Ledger {
    /// A new ledger whose block 0 is derived from the genesis file's hash;
    /// its organizations are founders without CA certificates (see
    /// [`Self::with_gov`]).
    pub fn genesis(orgs: BTreeSet<OrgName>, genesis_hash: Hash) -> Self {
        let founders = orgs
            .iter()
            .map(|o| (o.clone(), Gov::founder(Vec::new(), BTreeSet::new())));
        Self {
            gov: Gov::founding(founders, Default::default()),
            orgs,
            head: BlockHeader::genesis(genesis_hash),
            ..Self::default()
        }
    }

    /// This ledger with governance state `gov`: its member organizations
    /// (all but removed ones) are the ledger's.
    pub fn with_gov(self, gov: Gov) -> Self {
        let orgs = gov
            .orgs()
            .filter(|(_, m)| m.status != super::gov::OrgStatus::Removed)
            .map(|(o, _)| o.clone())
            .collect();
        Self { gov, orgs, ..self }
    }

    /// A new ledger for tests and benchmarks (a genesis hash of zeros).
    pub fn new(orgs: BTreeSet<OrgName>) -> Self {
        Self::genesis(orgs, [0; 32])
    }

    /// Rebuilds a ledger from persisted parts: `transfer_count` transfers
    /// were ever made, whose index the caller holds (see
    /// [`Self::index_outside_from_now`]), as it holds the refusals;
    /// `pending` are the pending ones (settled ones are loaded when
    /// named). The ledger forgets settled transfers (see
    /// [`Self::forget_settled_from_now`]).
    pub fn from_parts(
        orgs: BTreeSet<OrgName>,
        accounts: impl IntoIterator<Item = Account>,
        transfer_count: u64,
        pending: impl IntoIterator<Item = Transfer>,
        head: BlockHeader,
        clock_ms: u64,
    ) -> Self {
        let transfers: BTreeMap<TransferId, Transfer> =
            pending.into_iter().map(|t| (t.id.clone(), t)).collect();
        assert!(
            transfers
                .values()
                .all(|t| t.state == TransferState::Pending),
            "only pending transfers are loaded with the ledger"
        );
        let expiries = transfers
            .values()
            .filter_map(|t| t.expires_at_ms.map(|at| (at, t.id.clone())))
            .collect();
        Self {
            orgs,
            accounts: accounts.into_iter().map(|a| (a.id.clone(), a)).collect(),
            transfers,
            stored_at: TransferIndex::default(),
            transfer_count,
            rejected: BTreeMap::new(),
            expiries,
            clock_ms,
            head,
            gov: Gov::default(),
            journal: None,
            forgets_settled: true,
            index_outside: true,
            absent: HashSet::default(),
        }
    }

    pub fn orgs(&self) -> &BTreeSet<OrgName> {
        &self.orgs
    }
    /// Number of blocks applied so far: the head's height.
    pub fn height(&self) -> u64 {
        self.head.height
    }
    pub fn clock_ms(&self) -> u64 {
        self.clock_ms
    }
    /// The last block's header.
    pub fn head(&self) -> &BlockHeader {
        &self.head
    }
    pub fn gov(&self) -> &Gov {
        &self.gov
    }
    pub fn account(&self, id: &AccountId) -> Option<&Account> {
        self.accounts.get(id)
    }
    /// Transfer `id` if it is in memory: pending, or settled and not
    /// forgotten (a ledger that forgets settled transfers never holds one
    /// an entry made). Otherwise see [`Self::stored_height`].
    pub fn transfer(&self, id: &TransferId) -> Option<&Transfer> {
        self.transfers.get(id)
    }
    /// The height of the block that stored transfer `id`'s latest version;
    /// with the index outside, `None` may also mean that the caller
    /// dropped it (see [`Self::index_outside_from_now`]).
    pub fn stored_height(&self, id: &TransferId) -> Option<u64> {
        self.stored_at.get(id.as_str()).copied()
    }
    /// Number of transfers ever made.
    pub fn transfer_count(&self) -> u64 {
        self.transfer_count
    }
    pub fn accounts(&self) -> impl Iterator<Item = &Account> {
        self.accounts.values()
    }
    /// Accounts with ids after `after`, in id order.
    pub fn accounts_after(&self, after: Option<&AccountId>) -> impl Iterator<Item = &Account> {
        self.accounts.after(after)
    }
    /// The transfers in memory (see [`Self::transfer`]).
    pub fn transfers(&self) -> impl Iterator<Item = &Transfer> {
        self.transfers.values()
    }

    pub fn rejected(&self, id: &TransferId) -> Option<&RejectedTransfer> {
        self.rejected.get(id)
    }
    pub fn all_rejected(&self) -> impl Iterator<Item = &RejectedTransfer> {
        self.rejected.values()
    }
    /// When the next pending transfer expires, on the ledger clock.
    pub fn next_expiry_ms(&self) -> Option<u64> {
        self.expiries.first().map(|(at, _)| *at)
    }

    /// A transfer is visible to whoever may read either of its accounts.
    pub fn transfer_readable_by(&self, t: &Transfer, actor: &Actor) -> bool {
        [&t.debit_account, &t.credit_account]
            .into_iter()
            .filter_map(|id| self.accounts.get(id))
            .any(|a| a.readable_by(actor))
    }
}

/// Serializes a map in key order, so equal ledgers serialize alike.
fn in_key_order<S: serde::Serializer>(map: &TransferIndex, s: S) -> Result<S::Ok, S::Error> {
    map.iter().collect::<BTreeMap<_, _>>().serialize(s)
}
