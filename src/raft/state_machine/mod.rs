//! The Raft state machine: committed entries applied to the ledger.
//!
//! The ledger lives in memory (shared with the API for reads) and on sled;
//! settled transfers only on sled: before an entry is applied, the stored
//! records it names are loaded, and after it is stored they are forgotten
//! again (see [`Ledger::to_load`]).
//!
//! Each applied entry's changes, with the new last-applied log id, go to sled
//! in one atomic batch while the state's write lock is held, so the stored
//! state is always the state after some whole entry and a reader holding the
//! read lock sees memory and sled agree. Apply itself does not fsync: the log
//! is durable, and a node that restarts re-applies committed entries past its
//! stored last-applied.
//!
//! A snapshot is every key and value of the state tree (ledger records and
//! account histories), taken under the read lock: a consistent view at its
//! last-applied index. Installing one replaces the tree and reloads memory.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Cursor;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder};

use super::store::{
    chunks, for_each_transfer_block, read_chunks, storage_err, StateKey, Store, ACCOUNT_TAG,
    HISTORY_AT_TAG, HISTORY_TAG, LEAF_HASHES_TAG, REJECTED_TAG, TRANSFERS_TAG,
};
use super::{LogId, StorageError, StoredMembership, TypeConfig};
use crate::codec::{decode, encode};
use crate::ledger::{
    AccountId, BlockHeader, Changes, Entry, Hash, HistoryItem, Ledger, OrgName, Outcome, Transfer,
    TransferId, TransferIndex, TransferState,
};

/// The applied state: the ledger and how far it has applied.
#[derive(Clone, Debug, Default)]
pub struct Applied {
    pub ledger: Ledger,
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
}

/// Read access to the applied state (and the histories on sled), shared
/// with the API.
#[derive(Clone)]
pub struct SharedState {
    applied: Arc<RwLock<Applied>>,
    state: sled::Tree,
}

/// A read of the applied state; histories read through it are consistent
/// with it.
pub struct StateRead<'a> {
    guard: RwLockReadGuard<'a, Applied>,
    state: &'a sled::Tree,
}

impl std::ops::Deref for StateRead<'_> {
    type Target = Applied;
    fn deref(&self) -> &Applied {
        &self.guard
    }
}

impl StateRead<'_> {
    /// Up to `limit` history items of `account` from sequence `from` on.
    pub fn history(
        &self,
        account: &AccountId,
        from: u64,
        limit: usize,
    ) -> sled::Result<Vec<HistoryItem>> {
        // Start at the run that holds `from` (the last run starting at or
        // before it), if there is one.
        let prefix = StateKey::account_prefix(HISTORY_TAG, account);
        let start = self
            .state
            .range(prefix..=StateKey::History(account, from).encode())
            .next_back()
            .transpose()?
            .map_or(from, |(k, _)| key_suffix(&k));
        let start = StateKey::History(account, start).encode();
        let end = StateKey::History(account, u64::MAX).encode();
        let mut items = Vec::new();
        for kv in self.state.range(start..=end) {
            let run: Vec<HistoryItem> = decode(&kv?.1).expect("history runs are ours");
            items.extend(run.into_iter().filter(|i| i.seq >= from));
            if items.len() >= limit {
                break;
            }
        }
        items.truncate(limit);
        Ok(items)
    }

    /// `account`'s last history item at or below `height`, if any: the
    /// last item of the last run of a block at or below `height`.
    pub fn history_at_height(
        &self,
        account: &AccountId,
        height: u64,
    ) -> sled::Result<Option<HistoryItem>> {
        let prefix = StateKey::account_prefix(HISTORY_AT_TAG, account);
        let at = StateKey::HistoryAt(account, height).encode();
        let Some((_, first)) = self.state.range(prefix..=at).next_back().transpose()? else {
            return Ok(None);
        };
        let first = u64::from_be_bytes(first[..].try_into().expect("runs start at a u64"));
        let run = self.state.get(StateKey::History(account, first).encode())?;
        let mut run: Vec<HistoryItem> =
            decode(&run.expect("an indexed run exists")).expect("history runs are ours");
        Ok(run.pop())
    }

    /// The stored header of block `height` (block 0 is not stored).
    pub fn block(&self, height: u64) -> sled::Result<Option<BlockHeader>> {
        let v = self.state.get(StateKey::Block(height).encode())?;
        Ok(v.map(|v| decode(&v).expect("blocks are ours")))
    }

    /// Block `height`'s leaf hashes.
    pub fn leaf_hashes(&self, height: u64) -> sled::Result<Option<Vec<Hash>>> {
        let prefix = StateKey::height_prefix(LEAF_HASHES_TAG, height);
        read_chunks(self.state, &prefix).map_err(sled::Error::Io)
    }

    /// Transfer `id` as block `height` left it, if that block changed it.
    pub fn transfer_at(&self, height: u64, id: &TransferId) -> sled::Result<Option<Transfer>> {
        for kv in self
            .state
            .scan_prefix(StateKey::height_prefix(TRANSFERS_TAG, height))
        {
            let chunk: Vec<Transfer> = decode(&kv?.1).expect("transfer chunks are ours");
            if let Some(t) = chunk.into_iter().find(|t| t.id == *id) {
                return Ok(Some(t));
            }
        }
        Ok(None)
    }

    /// Transfer `id` at its latest version: from memory if it is pending,
    /// else from the block that stored it.
    pub fn transfer(&self, id: &TransferId) -> sled::Result<Option<Transfer>> {
        if let Some(t) = self.ledger.transfer(id) {
            return Ok(Some(t.clone()));
        }
        let Some(height) = self.ledger.stored_height(id) else {
            return Ok(None);
        };
        match self.transfer_at(height, id)? {
            Some(t) => Ok(Some(t)),
            None => Err(sled::Error::ReportableBug(format!(
                "transfer {id} is indexed at block {height}, which does not hold it"
            ))),
        }
    }
}

/// The transfer records block `height` stored (none if it stored none).
fn block_transfers(state: &sled::Tree, height: u64) -> std::io::Result<Vec<Transfer>> {
    let prefix = StateKey::height_prefix(TRANSFERS_TAG, height);
    Ok(read_chunks(state, &prefix)?.unwrap_or_default())
}

/// The big-endian u64 that ends a [`StateKey::History`] or
/// [`StateKey::HistoryAt`] key.
fn key_suffix(key: &[u8]) -> u64 {
    let (_, tail) = key.split_last_chunk::<8>().expect("the key ends in a u64");
    u64::from_be_bytes(*tail)
}

impl SharedState {
    pub fn read(&self) -> StateRead<'_> {
        StateRead {
            guard: self.applied.read().unwrap_or_else(|p| p.into_inner()),
            state: &self.state,
        }
    }
}

pub struct StateMachine {
    store: Store,
    orgs: BTreeSet<OrgName>,
    genesis_hash: Hash,
    state: SharedState,
    /// Serializes snapshot saves (builder and installer run concurrently).
    snapshot_lock: Arc<Mutex<()>>,
    /// Counts snapshots built, to give each a unique id.
    snapshots_built: u64,
}

const SNAPSHOT_META: &[u8] = b"meta";
/// The name of the current snapshot's file in [`Store::snapshots`].
const SNAPSHOT_FILE: &[u8] = b"file";
/// First bytes of a snapshot's data: format and version (v2: values in
/// the binary encoding of [`crate::codec`]; v3: transfers per block and
/// history in runs, see [`StateKey`]; v4: leaf hashes, not leaves; v5:
/// records in chunks of about 4 KiB). A node
/// refuses a snapshot of another version rather than misread its keys.
const SNAPSHOT_MAGIC: &[u8] = b"alliance-state-v5\n";

fn read_err(e: impl std::error::Error + 'static) -> StorageError {
    storage_err(ErrorSubject::StateMachine, ErrorVerb::Read, e)
}

fn write_err(e: impl std::error::Error + 'static) -> StorageError {
    storage_err(ErrorSubject::StateMachine, ErrorVerb::Write, e)
}

impl StateMachine {
    /// Loads the applied state from sled; `orgs` are genesis's organizations.
    pub fn open(
        store: Store,
        orgs: BTreeSet<OrgName>,
        genesis_hash: Hash,
    ) -> Result<Self, StorageError> {
        let applied = load(&store.state, orgs.clone(), genesis_hash)?;
        let state = SharedState {
            applied: Arc::new(RwLock::new(applied)),
            state: store.state.clone(),
        };
        Ok(Self {
            store,
            orgs,
            genesis_hash,
            state,
            snapshot_lock: Default::default(),
            snapshots_built: 0,
        })
    }

    pub fn shared(&self) -> SharedState {
        self.state.clone()
    }

    /// Writes one entry's effects and progress in one atomic batch. The
    /// changed records are stored as the ledger encoded them for the block's
    /// state digest: serialized once. Accounts and refusals are a key each;
    /// the block's transfers, its leaf hashes and each account's history
    /// items in it are stored in chunks of about 4 KiB (see [`StateKey`],
    /// [`chunks`]). Takes `changes.encoded`; the rest of `changes` stays
    /// for the caller.
    fn persist(&self, applied: &Applied, changes: &mut Changes) -> Result<(), StorageError> {
        let ledger = &applied.ledger;
        let mut batch = sled::Batch::default();
        assert_eq!(
            changes.encoded.len(),
            changes.record_count(),
            "one encoding per changed record"
        );
        let encoded = std::mem::take(&mut changes.encoded);
        let mut encoded = encoded.iter();
        let mut next = |n: usize| encoded.by_ref().take(n).collect::<Vec<_>>();
        let accounts = next(changes.accounts.len());
        let transfers = next(changes.transfers.len());
        let rejected = next(changes.rejected.len());
        let history = next(changes.history.len());
        for (id, bytes) in changes.accounts.iter().zip(accounts) {
            batch.insert(StateKey::Account(id).encode(), bytes);
        }
        for (id, bytes) in changes.rejected.iter().zip(rejected) {
            batch.insert(StateKey::Rejected(id).encode(), bytes);
        }
        if !transfers.is_empty() || !history.is_empty() {
            let height = changes
                .block
                .as_ref()
                .expect("an entry that changes records is a block")
                .height;
            if !transfers.is_empty() {
                for (n, (_, chunk)) in (0..).zip(chunks(&transfers)) {
                    batch.insert(StateKey::Transfers(height, n).encode(), chunk);
                }
            }
            // Each account's items of one entry are consecutive.
            let mut runs: BTreeMap<&AccountId, (u64, Vec<&[u8]>)> = BTreeMap::new();
            for (item, bytes) in changes.history.iter().zip(history) {
                let (first, run) = runs.entry(&item.account).or_insert((item.seq, Vec::new()));
                assert_eq!(
                    *first + run.len() as u64,
                    item.seq,
                    "history runs are consecutive"
                );
                run.push(bytes);
            }
            for (account, (first, run)) in runs {
                let mut last = first;
                for (at, chunk) in chunks(&run) {
                    last = first + at as u64;
                    batch.insert(StateKey::History(account, last).encode(), chunk);
                }
                batch.insert(
                    StateKey::HistoryAt(account, height).encode(),
                    &last.to_be_bytes(),
                );
            }
        }
        batch.insert(
            StateKey::LastApplied.encode(),
            encode(&applied.last_applied),
        );
        batch.insert(StateKey::Membership.encode(), encode(&applied.membership));
        batch.insert(StateKey::Clock.encode(), encode(&ledger.clock_ms()));
        if let Some(block) = &changes.block {
            batch.insert(StateKey::Block(block.height).encode(), encode(block));
            let hashes: Vec<Vec<u8>> = changes.leaf_hashes.iter().map(encode).collect();
            for (n, (_, chunk)) in (0..).zip(chunks(&hashes)) {
                batch.insert(StateKey::LeafHashes(block.height, n).encode(), chunk);
            }
            batch.insert(StateKey::Head.encode(), encode(block));
        }
        self.store.state.apply_batch(batch).map_err(write_err)
    }

    /// Loads into `ledger` the stored transfers `entry` names (re-sends,
    /// posts, voids), one block read per height; returns their ids.
    fn load_named(
        &self,
        ledger: &mut Ledger,
        entry: &Entry,
    ) -> Result<Vec<TransferId>, StorageError> {
        let wanted = ledger.to_load(entry);
        let mut by_height: BTreeMap<u64, BTreeSet<&TransferId>> = BTreeMap::new();
        for (id, height) in &wanted {
            by_height.entry(*height).or_default().insert(id);
        }
        for (height, ids) in by_height {
            let block = block_transfers(&self.store.state, height).map_err(read_err)?;
            let mut found = 0;
            for t in block.into_iter().filter(|t| ids.contains(&t.id)) {
                found += 1;
                ledger
                    .load_settled(t)
                    .map_err(|e| read_err(std::io::Error::other(e)))?;
            }
            if found != ids.len() {
                let e = format!("block {height} lacks transfers indexed there: {ids:?}");
                return Err(read_err(std::io::Error::other(e)));
            }
        }
        Ok(wanted.into_iter().map(|(id, _)| id).collect())
    }

    /// Stores `snapshot` unless a newer one is stored already: a snapshot
    /// build runs concurrently with installs, and must not replace a newer
    /// installed snapshot with an older view.
    ///
    /// The data goes to a file of its own (written, synced, renamed into
    /// place), then the metadata naming it to sled (synced), then older
    /// files are removed: a crash at any point leaves the stored metadata
    /// naming a complete file.
    fn save_snapshot(
        &self,
        meta: &SnapshotMeta<u64, openraft::BasicNode>,
        data: &[u8],
    ) -> Result<(), StorageError> {
        let sig = Some(meta.signature());
        let io_err = |e| {
            StorageError::from_io_error(ErrorSubject::Snapshot(sig.clone()), ErrorVerb::Write, e)
        };
        let _one_at_a_time = self.snapshot_lock.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.store.snapshot.get(SNAPSHOT_META).ok().flatten();
        let current: Option<SnapshotMeta<u64, openraft::BasicNode>> =
            current.and_then(|m| decode(&m).ok());
        if current.is_some_and(|c| c.last_log_id > meta.last_log_id) {
            return Ok(());
        }
        // The id may come from a peer: name the file by its hash.
        let id_hash = <sha2::Sha256 as sha2::Digest>::digest(meta.snapshot_id.as_bytes());
        let name = format!("{}.snap", hex::encode(id_hash));
        write_durably(&self.store.snapshots, &name, data).map_err(io_err)?;
        let mut batch = sled::Batch::default();
        batch.insert(SNAPSHOT_META, encode(meta));
        batch.insert(SNAPSHOT_FILE, name.as_bytes());
        self.store
            .snapshot
            .apply_batch(batch)
            .map_err(|e| storage_err(ErrorSubject::Snapshot(sig.clone()), ErrorVerb::Write, e))?;
        self.store.durable.sync().map_err(io_err)?;
        for entry in std::fs::read_dir(&self.store.snapshots).map_err(io_err)? {
            let path = entry.map_err(io_err)?.path();
            if path.file_name().is_some_and(|f| f != name.as_str()) {
                std::fs::remove_file(&path).map_err(io_err)?;
            }
        }
        Ok(())
    }
}

/// Writes `data` to `dir/name` so that it is whole on disk before the call
/// returns: a temporary file, synced, renamed into place, the folder synced.
fn write_durably(dir: &std::path::Path, name: &str, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!("{name}.tmp"));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(data)?;
    file.sync_all()?;
    std::fs::rename(&tmp, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
}

/// Reads the whole applied state from the state tree.
fn load(
    tree: &sled::Tree,
    orgs: BTreeSet<OrgName>,
    genesis_hash: Hash,
) -> Result<Applied, StorageError> {
    fn get<T: serde::de::DeserializeOwned + Default>(
        tree: &sled::Tree,
        key: StateKey,
    ) -> Result<T, StorageError> {
        match tree.get(key.encode()).map_err(read_err)? {
            Some(v) => decode(&v).map_err(read_err),
            None => Ok(T::default()),
        }
    }
    // Settled transfers stay on disk: only where each is stored, and the
    // pending ones, are kept.
    let mut stored_at = TransferIndex::default();
    let mut pending = HashMap::new();
    for_each_transfer_block(tree, |height, block| {
        for t in block {
            stored_at.insert(t.id.as_str().into(), height);
            if t.state == TransferState::Pending {
                pending.insert(t.id.clone(), t);
            } else {
                pending.remove(&t.id);
            }
        }
    })
    .map_err(read_err)?;
    let ledger = Ledger::from_parts(
        orgs,
        scan(tree, ACCOUNT_TAG)?,
        stored_at,
        pending.into_values(),
        scan(tree, REJECTED_TAG)?,
        match tree.get(StateKey::Head.encode()).map_err(read_err)? {
            Some(v) => decode(&v).map_err(read_err)?,
            None => BlockHeader::genesis(genesis_hash),
        },
        get(tree, StateKey::Clock)?,
    );
    Ok(Applied {
        ledger,
        last_applied: get(tree, StateKey::LastApplied)?,
        membership: get(tree, StateKey::Membership)?,
    })
}

fn scan<T: serde::de::DeserializeOwned>(
    tree: &sled::Tree,
    tag: u8,
) -> Result<Vec<T>, StorageError> {
    tree.scan_prefix([tag])
        .map(|kv| {
            let (_, v) = kv.map_err(read_err)?;
            decode(&v).map_err(read_err)
        })
        .collect()
}

/// Encodes key/value pairs: the magic, then (u32 BE length, bytes) for each
/// key and each value.
fn encode_pairs(tree: &sled::Tree) -> Result<Vec<u8>, StorageError> {
    let mut out = SNAPSHOT_MAGIC.to_vec();
    for kv in tree.iter() {
        let (k, v) = kv.map_err(read_err)?;
        for part in [&k[..], &v[..]] {
            let len = u32::try_from(part.len()).expect("sled keys and values are < 4 GiB");
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(part);
        }
    }
    Ok(out)
}

/// A snapshot's key/value pairs, borrowed from its data.
type Pairs<'a> = Vec<(&'a [u8], &'a [u8])>;

fn decode_pairs(data: &[u8]) -> Result<Pairs<'_>, String> {
    fn take<'a>(rest: &mut &'a [u8]) -> Result<&'a [u8], String> {
        let (len, tail) = rest.split_first_chunk::<4>().ok_or("truncated snapshot")?;
        let len = u32::from_be_bytes(*len) as usize;
        if tail.len() < len {
            return Err("truncated snapshot".into());
        }
        let (part, tail) = tail.split_at(len);
        *rest = tail;
        Ok(part)
    }
    let mut rest = data
        .strip_prefix(SNAPSHOT_MAGIC)
        .ok_or("not an alliance snapshot")?;
    let mut pairs = Vec::new();
    while !rest.is_empty() {
        let k = take(&mut rest)?;
        let v = take(&mut rest)?;
        pairs.push((k, v));
    }
    Ok(pairs)
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (data, last_applied, membership) = {
            let applied = self.state.read();
            (
                encode_pairs(&self.store.state)?,
                applied.last_applied,
                applied.membership.clone(),
            )
        };
        self.snapshots_built += 1;
        let snapshot_id = match last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, self.snapshots_built),
            None => format!("none-{}", self.snapshots_built),
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership: membership,
            snapshot_id,
        };
        self.save_snapshot(&meta, &data)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let applied = self.state.read();
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Option<Outcome>>, StorageError>
    where
        I: IntoIterator<Item = openraft::Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut replies = Vec::new();
        for entry in entries {
            let mut applied = self
                .state
                .applied
                .write()
                .unwrap_or_else(|p| p.into_inner());
            // Strictly increasing. (Not necessarily +1: openraft's storage
            // suite applies entries with gaps.)
            assert!(
                applied
                    .last_applied
                    .is_none_or(|l| l.index < entry.log_id.index),
                "apply out of order: {} after {:?}",
                entry.log_id.index,
                applied.last_applied
            );
            applied.last_applied = Some(entry.log_id);
            let mut loaded = Vec::new();
            let (reply, mut changes) = match entry.payload {
                EntryPayload::Blank => (None, Changes::default()),
                EntryPayload::Normal(ref e) => {
                    loaded = self.load_named(&mut applied.ledger, e)?;
                    let log = entry.log_id;
                    let (outcome, changes) =
                        applied
                            .ledger
                            .apply_logged(e, log.index, log.leader_id.term);
                    (Some(outcome), changes)
                }
                EntryPayload::Membership(ref m) => {
                    applied.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                    (None, Changes::default())
                }
            };
            self.persist(&applied, &mut changes)?;
            // Stored now: settled records leave memory.
            applied
                .ledger
                .forget_settled(loaded.iter().chain(changes.transfers.iter().map(|t| &t.id)));
            replies.push(reply);
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        Self {
            store: self.store.clone(),
            orgs: self.orgs.clone(),
            genesis_hash: self.genesis_hash,
            state: self.state.clone(),
            snapshot_lock: self.snapshot_lock.clone(),
            snapshots_built: self.snapshots_built,
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, openraft::BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let sig = Some(meta.signature());
        let pairs = decode_pairs(&data).map_err(|e| {
            storage_err(
                ErrorSubject::Snapshot(sig.clone()),
                ErrorVerb::Read,
                std::io::Error::other(e),
            )
        })?;
        {
            let mut applied = self
                .state
                .applied
                .write()
                .unwrap_or_else(|p| p.into_inner());
            let mut batch = sled::Batch::default();
            for kv in self.store.state.iter() {
                batch.remove(kv.map_err(read_err)?.0);
            }
            for (k, v) in pairs {
                batch.insert(k, v);
            }
            batch.insert(StateKey::LastApplied.encode(), encode(&meta.last_log_id));
            batch.insert(StateKey::Membership.encode(), encode(&meta.last_membership));
            self.store.state.apply_batch(batch).map_err(write_err)?;
            *applied = load(&self.store.state, self.orgs.clone(), self.genesis_hash)?;
        }
        self.save_snapshot(meta, &data)
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let read = |e: String| {
            storage_err(
                ErrorSubject::Snapshot(None),
                ErrorVerb::Read,
                std::io::Error::other(e),
            )
        };
        let get = |key| {
            self.store
                .snapshot
                .get(key)
                .map_err(|e| read(e.to_string()))
        };
        let (Some(meta), Some(name)) = (get(SNAPSHOT_META)?, get(SNAPSHOT_FILE)?) else {
            return Ok(None);
        };
        let meta = decode(&meta).map_err(|e| read(e.to_string()))?;
        let name = String::from_utf8_lossy(&name).into_owned();
        let data = std::fs::read(self.store.snapshots.join(&name))
            .map_err(|e| read(format!("snapshot file {name}: {e}")))?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}
