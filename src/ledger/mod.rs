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
pub mod chain;
pub mod ids;
mod leaf;
mod rejection;
mod transfer;
pub mod types;

use std::cell::OnceCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::codec::Encoded;

pub use chain::{BlockHeader, Hash, Proof};
pub use ids::{AccountId, Amount, Asset, InvalidAmount, InvalidId, OrgName, TransferId};
pub use leaf::transfer_leaf;
use leaf::{leaf_json, Leaf};
pub use rejection::Rejection;
pub use types::{
    Account, Event, HistoryItem, NewAccount, NewTransfer, RejectedTransfer, Transfer,
    TransferState, TOTAL_MAX,
};

/// What a certificate's `OU` says its holder may do (`docs/design.md`,
/// "Trust model").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Node,
    App,
    Partner,
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "node" => Some(Self::Node),
            "app" => Some(Self::App),
            "partner" => Some(Self::Partner),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }

    /// Apps and admins write; partners and nodes never do.
    pub fn may_write(self) -> bool {
        matches!(self, Self::App | Self::Admin)
    }
}

/// Who proposed a command, as verified from the caller's TLS session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub org: OrgName,
    pub role: Role,
}

/// A command in the replicated log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    CreateAccount(NewAccount),
    /// One or many transfers; each gets its own result, in order. With
    /// `atomic`, one refusal refuses them all and nothing changes.
    Transfers {
        transfers: Vec<NewTransfer>,
        atomic: bool,
    },
    /// Post a pending transfer, for its full amount or less.
    PostPending {
        id: TransferId,
        amount: Option<Amount>,
    },
    VoidPending {
        id: TransferId,
    },
    CloseAccount {
        id: AccountId,
    },
    SetReaders {
        id: AccountId,
        readers: BTreeSet<OrgName>,
    },
    /// Proposed by the leader when pending transfers are due to expire and
    /// nothing else is being written; it only advances the ledger clock.
    Tick,
    /// Single transfers from many callers, coalesced by the leader into one
    /// entry (group commit). Each is checked as its own caller's, on its own.
    Group(Vec<Grouped>),
}

impl Command {
    /// How many transfers the command names: new ones, or the pending one
    /// it posts or voids.
    pub fn transfers_named(&self) -> usize {
        match self {
            Command::Transfers { transfers, .. } => transfers.len(),
            Command::Group(items) => items.len(),
            Command::PostPending { .. } | Command::VoidPending { .. } => 1,
            Command::CreateAccount(_)
            | Command::CloseAccount { .. }
            | Command::SetReaders { .. }
            | Command::Tick => 0,
        }
    }
}

/// One caller's transfer inside a [`Command::Group`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grouped {
    pub actor: Actor,
    pub transfer: NewTransfer,
}

/// One proposed log entry: the command with who proposed it and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub actor: Actor,
    pub timestamp_ms: u64,
    pub command: Command,
}

/// The result of applying one entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Account(Result<Account, Rejection>),
    Transfers(Vec<Result<Transfer, Rejection>>),
    Transfer(Result<Transfer, Rejection>),
    Ticked,
}

/// Bytes reserved per changed record for its encoding, up front: records
/// of short ids take about 40 (a batch of 8000 in `examples/ledger_apply`),
/// ids of 64 bytes make them longer, and the buffer grows as needed.
const RECORD_BYTES_GUESS: usize = 64;

/// What an entry changed, for the caller to persist atomically.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub accounts: BTreeSet<AccountId>,
    /// The latest version of every transfer the entry made or changed, in
    /// id order; filled when the block is sealed.
    pub transfers: Vec<Transfer>,
    /// While the entry runs: the ids of changed transfers that are in the
    /// ledger's map (pending ones, and those resolved by this entry).
    in_map: BTreeSet<TransferId>,
    /// While the entry runs: the settled transfers it made, in the order
    /// made. A ledger that forgets settled transfers never puts them in its
    /// map (one that keeps them does when the block is sealed, see
    /// [`Ledger::gather_transfers`]), so a batch of 8000 does not insert
    /// 8000 records there only to take them out again once stored.
    made: Vec<Transfer>,
    /// Where each of `made` is, for a re-send within the same entry: built
    /// on the first such re-send, so an entry without one pays nothing.
    made_at: OnceCell<HashMap<TransferId, usize>>,
    pub rejected: Vec<TransferId>,
    pub history: Vec<HistoryItem>,
    /// The block's leaf hashes, in order: each the hash of a canonical JSON
    /// record (see [`transfer_leaf`]). The JSON itself is not kept: a
    /// transfer's leaf is rendered again from its stored record when a
    /// proof asks for it.
    pub leaf_hashes: Vec<Hash>,
    /// The block this entry became.
    pub block: Option<BlockHeader>,
    /// The changed records in their stored encoding, in the order of
    /// `accounts`, `transfers`, `rejected`, `history`: encoded once, for the
    /// block's state digest and for the caller to persist.
    pub encoded: Encoded,
}

impl Changes {
    /// Changed records: accounts, transfers, refusals and history items.
    pub fn record_count(&self) -> usize {
        self.accounts.len() + self.transfers.len() + self.rejected.len() + self.history.len()
    }

    /// Room for an entry that names `n` transfers: each makes at most one
    /// record, two history items and one leaf.
    fn for_transfers(n: usize) -> Self {
        Self {
            made: Vec::with_capacity(n),
            history: Vec::with_capacity(2 * n),
            leaf_hashes: Vec::with_capacity(n),
            ..Self::default()
        }
    }

    /// A settled transfer the entry made: kept here, not in the ledger.
    fn push_made(&mut self, t: Transfer) {
        if let Some(at) = self.made_at.get_mut() {
            at.insert(t.id.clone(), self.made.len());
        }
        self.made.push(t);
    }

    /// A transfer this entry made and settled, if `id` is one.
    fn made(&self, id: &TransferId) -> Option<&Transfer> {
        let at = self.made_at.get_or_init(|| {
            (0..)
                .zip(&self.made)
                .map(|(i, t)| (t.id.clone(), i))
                .collect()
        });
        at.get(id).map(|&i| &self.made[i])
    }

    /// Renders `leaf` as canonical JSON and adds its hash.
    fn push_leaf(&mut self, leaf: &Leaf<'_>) {
        self.leaf_hashes.push(chain::leaf_hash(&leaf_json(leaf)));
    }
}

/// Where each transfer's latest version is stored: its id, with the height
/// of the block that stored it. Ids as boxed strings, not [`TransferId`]s,
/// whose shared allocation adds 16 bytes of counts to each of a million
/// entries. Hashed with foldhash, seeded
/// at random per process as std's SipHash is, and cheaper for short keys:
/// SipHash was 3.9% of a follower's samples at batches of 8000.
pub type TransferIndex = HashMap<Box<str>, u64, foldhash::quality::RandomState>;

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
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    /// Member organizations, from genesis.
    orgs: BTreeSet<OrgName>,
    accounts: BTreeMap<AccountId, Account>,
    /// Transfers in memory: every pending one, and settled ones until the
    /// caller forgets them (a ledger that never forgets holds all; one that
    /// forgets settled ones never holds those an entry makes).
    transfers: BTreeMap<TransferId, Transfer>,
    /// Every transfer, with the height of the block that stored its latest
    /// version. Never iterated, so its order cannot reach a decision.
    #[serde(serialize_with = "in_key_order")]
    stored_at: TransferIndex,
    rejected: BTreeMap<TransferId, RejectedTransfer>,
    /// Pending transfers by (expiry on the ledger clock, id).
    expiries: BTreeSet<(u64, TransferId)>,
    /// Largest entry timestamp applied so far, ms.
    clock_ms: u64,
    /// The last block's header (block 0 from genesis).
    head: BlockHeader,
    /// Undo records while an atomic batch runs; never persisted.
    #[serde(skip)]
    journal: Option<Journal>,
    /// Whether settled transfers made by an entry stay out of `transfers`
    /// (its caller stores them and loads them back when named; see
    /// [`Self::from_parts`]). Otherwise the ledger keeps them all.
    #[serde(skip)]
    forgets_settled: bool,
}

/// What an atomic batch touched, to restore it if the batch is refused.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Journal {
    accounts: BTreeMap<AccountId, Account>,
    transfers: Vec<TransferId>,
    expiries: Vec<(u64, TransferId)>,
}

/// The entry being applied: what every record made by it carries.
#[derive(Clone, Copy)]
struct At<'a> {
    actor: &'a Actor,
    height: u64,
    log_index: u64,
    timestamp_ms: u64,
    clock_ms: u64,
}

impl Ledger {
    /// A new ledger whose block 0 is derived from the genesis file's hash.
    pub fn genesis(orgs: BTreeSet<OrgName>, genesis_hash: Hash) -> Self {
        Self {
            orgs,
            head: BlockHeader::genesis(genesis_hash),
            ..Self::default()
        }
    }

    /// A new ledger for tests and benchmarks (a genesis hash of zeros).
    pub fn new(orgs: BTreeSet<OrgName>) -> Self {
        Self::genesis(orgs, [0; 32])
    }

    /// Rebuilds a ledger from persisted parts: `stored_at` names every
    /// transfer and the height that stored its latest version; `pending`
    /// are the pending ones (settled ones are loaded when named). The ledger
    /// forgets settled transfers (see [`Self::forget_settled_from_now`]).
    pub fn from_parts(
        orgs: BTreeSet<OrgName>,
        accounts: impl IntoIterator<Item = Account>,
        stored_at: TransferIndex,
        pending: impl IntoIterator<Item = Transfer>,
        rejected: impl IntoIterator<Item = RejectedTransfer>,
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
            stored_at,
            rejected: rejected
                .into_iter()
                .map(|r| (r.request.id.clone(), r))
                .collect(),
            expiries,
            clock_ms,
            head,
            journal: None,
            forgets_settled: true,
        }
    }

    /// After this call, settled transfers made by an entry are not kept in
    /// memory, as in a ledger rebuilt by [`Self::from_parts`]: the caller
    /// stores each entry's `changes.transfers` and loads the ones an entry
    /// names back with [`Self::load_settled`].
    pub fn forget_settled_from_now(&mut self) {
        self.forgets_settled = true;
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
    pub fn account(&self, id: &AccountId) -> Option<&Account> {
        self.accounts.get(id)
    }
    /// Transfer `id` if it is in memory: pending, or settled and not
    /// forgotten (a ledger that forgets settled transfers never holds one
    /// an entry made). Otherwise see [`Self::stored_height`].
    pub fn transfer(&self, id: &TransferId) -> Option<&Transfer> {
        self.transfers.get(id)
    }
    /// The height of the block that stored transfer `id`'s latest version.
    pub fn stored_height(&self, id: &TransferId) -> Option<u64> {
        self.stored_at.get(id.as_str()).copied()
    }
    /// Number of transfers ever made.
    pub fn transfer_count(&self) -> usize {
        self.stored_at.len()
    }
    pub fn accounts(&self) -> impl Iterator<Item = &Account> {
        self.accounts.values()
    }
    /// Accounts with ids after `after`, in id order.
    pub fn accounts_after(&self, after: Option<&AccountId>) -> impl Iterator<Item = &Account> {
        use std::ops::Bound;
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.accounts
            .range((start, Bound::Unbounded))
            .map(|(_, a)| a)
    }
    /// The transfers in memory (see [`Self::transfer`]).
    pub fn transfers(&self) -> impl Iterator<Item = &Transfer> {
        self.transfers.values()
    }

    /// The stored transfers `entry` names (re-sent ids, posts, voids) that
    /// are not in memory, each with the height of the block that holds its
    /// latest version: load them with [`Self::load_settled`] before
    /// applying `entry`.
    pub fn to_load(&self, entry: &Entry) -> Vec<(TransferId, u64)> {
        let named: Vec<&TransferId> = match &entry.command {
            Command::Transfers { transfers, .. } => transfers.iter().map(|t| &t.id).collect(),
            Command::Group(items) => items.iter().map(|g| &g.transfer.id).collect(),
            Command::PostPending { id, .. } | Command::VoidPending { id } => vec![id],
            Command::CreateAccount(_)
            | Command::CloseAccount { .. }
            | Command::SetReaders { .. }
            | Command::Tick => vec![],
        };
        named
            .into_iter()
            .filter(|id| !self.transfers.contains_key(*id))
            .filter_map(|id| Some((id.clone(), *self.stored_at.get(id.as_str())?)))
            .collect()
    }

    /// Puts a stored transfer back in memory; it must be the latest version
    /// (the one stored at [`Self::stored_height`]).
    pub fn load_settled(&mut self, t: Transfer) -> Result<(), String> {
        let at = t.resolved_height.unwrap_or(t.height);
        if self.stored_at.get(t.id.as_str()) != Some(&at) {
            return Err(format!(
                "the record of transfer {} from block {at} is not its latest version (block {:?})",
                t.id,
                self.stored_at.get(t.id.as_str())
            ));
        }
        self.transfers.insert(t.id.clone(), t);
        Ok(())
    }

    /// Drops from memory those of `ids` that are settled (posted, voided,
    /// expired): the caller has stored them and loads them again when an
    /// entry names them. Pending transfers stay.
    pub fn forget_settled<'a>(&mut self, ids: impl IntoIterator<Item = &'a TransferId>) {
        debug_assert!(self.journal.is_none(), "forget between entries only");
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
    fn known<'a>(&'a self, id: &TransferId, changes: &'a Changes) -> Option<&'a Transfer> {
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

    /// Adds the outcome's leaves and makes the entry's block the new head.
    fn seal_block(&mut self, at: At<'_>, outcome: &Outcome, log_term: u64, changes: &mut Changes) {
        let refused = |r: &Rejection| Leaf::Refused { code: r.code() };
        match outcome {
            Outcome::Account(Ok(a)) => changes.push_leaf(&Leaf::Account(a)),
            Outcome::Transfer(Ok(t)) => changes.push_leaf(&Leaf::Transfer(t)),
            Outcome::Account(Err(r)) | Outcome::Transfer(Err(r)) => changes.push_leaf(&refused(r)),
            Outcome::Transfers(results) => {
                for r in results {
                    changes.push_leaf(&r.as_ref().map_or_else(refused, Leaf::Transfer));
                }
            }
            Outcome::Ticked => {}
        }
        self.gather_transfers(changes);
        let state_digest = self.state_digest(changes);
        let block = BlockHeader {
            height: at.height,
            prev_hash: self.head.hash(),
            merkle_root: chain::merkle_root(&changes.leaf_hashes),
            leaf_count: changes.leaf_hashes.len() as u64,
            log_index: at.log_index,
            log_term,
            timestamp_ms: at.timestamp_ms,
            state_digest,
        };
        self.head = block.clone();
        changes.block = Some(block);
    }

    /// Fills `changes.transfers`: the changed transfers in the map and
    /// those the entry made, merged in id order. A ledger that keeps
    /// settled transfers puts the made ones in its map here.
    fn gather_transfers(&mut self, changes: &mut Changes) {
        changes.made_at = OnceCell::new();
        let made = std::mem::take(&mut changes.made);
        if !self.forgets_settled {
            for t in &made {
                self.transfers.insert(t.id.clone(), t.clone());
            }
        }
        let in_map = std::mem::take(&mut changes.in_map);
        let mut all = made;
        all.extend(in_map.iter().map(|id| self.transfers[id].clone()));
        // Ids are unique: a made transfer is settled and new, a transfer
        // in the map was pending or loaded.
        all.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        debug_assert!(
            all.windows(2).all(|w| w[0].id < w[1].id),
            "one record per id"
        );
        changes.transfers = all;
    }

    /// SHA-256 over every record `changes` holds or names, in key order, each
    /// in its stored (binary) encoding, which is kept in `changes.encoded`.
    fn state_digest(&self, changes: &mut Changes) -> Hash {
        let mut d = chain::StateDigest::default();
        let records = changes.record_count();
        let mut encoded = Encoded::with_capacity(records, records * RECORD_BYTES_GUESS);
        for id in &changes.accounts {
            d.add("account", encoded.push(&self.accounts[id]));
        }
        for t in &changes.transfers {
            d.add("transfer", encoded.push(t));
        }
        for id in &changes.rejected {
            d.add("rejected", encoded.push(&self.rejected[id]));
        }
        for item in &changes.history {
            d.add("history", encoded.push(item));
        }
        changes.encoded = encoded;
        d.finish()
    }

    /// A mutable account, journaled first if an atomic batch is running.
    fn account_mut(&mut self, id: &AccountId) -> &mut Account {
        let account = self
            .accounts
            .get_mut(id)
            .expect("account checked to exist before it changes");
        if let Some(j) = &mut self.journal {
            j.accounts
                .entry(id.clone())
                .or_insert_with(|| account.clone());
        }
        account
    }

    /// A new transfer, stored by this entry's block: a pending one in the
    /// map, a settled one with the entry's changes.
    fn insert_transfer(&mut self, t: Transfer, changes: &mut Changes) {
        if let Some(j) = &mut self.journal {
            j.transfers.push(t.id.clone());
        }
        self.stored_at.insert(t.id.as_str().into(), t.height);
        if t.state == TransferState::Pending {
            changes.in_map.insert(t.id.clone());
            self.transfers.insert(t.id.clone(), t);
        } else {
            changes.push_made(t);
        }
    }

    fn insert_expiry(&mut self, at_ms: u64, id: TransferId) {
        if let Some(j) = &mut self.journal {
            j.expiries.push((at_ms, id.clone()));
        }
        self.expiries.insert((at_ms, id));
    }

    /// Appends an event to `id`'s history with its balances after it.
    fn record(
        &mut self,
        at: At<'_>,
        id: &AccountId,
        t: &Transfer,
        event: Event,
        amount: Amount,
        changes: &mut Changes,
    ) {
        let account = self.account_mut(id);
        let item = HistoryItem {
            account: id.clone(),
            seq: account.history_len,
            transfer: t.id.clone(),
            event,
            debit: &t.debit_account == id,
            amount,
            balance_after: account.balance(),
            debits_pending_after: account.debits_pending,
            credits_pending_after: account.credits_pending,
            height: at.height,
            log_index: at.log_index,
            timestamp_ms: at.timestamp_ms,
        };
        account.history_len += 1;
        changes.accounts.insert(id.clone());
        changes.history.push(item);
    }

    /// Sum of all posted balances per asset, and of pending debits minus
    /// pending credits. Every transfer moves money between two accounts of
    /// one asset, so both are zero in a correct ledger.
    pub fn totals(&self) -> BTreeMap<Asset, (i128, i128)> {
        let mut totals: BTreeMap<Asset, (i128, i128)> = BTreeMap::new();
        for a in self.accounts.values() {
            let t = totals.entry(a.asset.clone()).or_default();
            t.0 += a.balance();
            t.1 += a.debits_pending as i128 - a.credits_pending as i128;
        }
        totals
    }
}

/// Serializes a map in key order, so equal ledgers serialize alike.
fn in_key_order<S: serde::Serializer>(map: &TransferIndex, s: S) -> Result<S::Ok, S::Error> {
    map.iter().collect::<BTreeMap<_, _>>().serialize(s)
}

fn ensure(condition: bool, rejection: Rejection) -> Result<(), Rejection> {
    if condition {
        Ok(())
    } else {
        Err(rejection)
    }
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
