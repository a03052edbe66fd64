//! The Raft state machine: committed entries applied to the ledger.
//!
//! The ledger lives in memory (shared with the API for reads) and on sled.
//! Each applied entry's changes, with the new last-applied log id, go to sled
//! in one atomic batch, so the stored state is always the state after some
//! whole entry. Apply itself does not fsync: the log is durable, and a node
//! that restarts re-applies committed entries past its stored last-applied.

use std::io::Cursor;
use std::sync::{Arc, RwLock, RwLockReadGuard};

use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};

use super::store::{
    storage_err, to_json, StateKey, Store, ACCOUNT_TAG, REJECTED_TAG, TRANSFER_TAG,
};
use super::{LogId, StorageError, StoredMembership, TypeConfig};
use crate::ledger::{Account, Changes, Ledger, OrgName, Outcome, RejectedTransfer, Transfer};

/// The applied state: the ledger and how far it has applied.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Applied {
    pub ledger: Ledger,
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
}

/// Read access to the applied state, shared with the API.
#[derive(Clone)]
pub struct SharedState(Arc<RwLock<Applied>>);

impl SharedState {
    pub fn read(&self) -> RwLockReadGuard<'_, Applied> {
        self.0.read().unwrap_or_else(|p| p.into_inner())
    }
}

pub struct StateMachine {
    store: Store,
    state: SharedState,
    /// Serializes snapshot saves (builder and installer run concurrently).
    snapshot_lock: Arc<std::sync::Mutex<()>>,
    /// Counts snapshots built, to give each a unique id.
    snapshots_built: u64,
}

struct StoredSnapshot {
    meta: SnapshotMeta<u64, openraft::BasicNode>,
    data: Vec<u8>,
}

const SNAPSHOT_META: &[u8] = b"meta";
const SNAPSHOT_DATA: &[u8] = b"data";

impl StateMachine {
    /// Loads the applied state from sled; `orgs` are genesis's organizations.
    pub fn open(
        store: Store,
        orgs: std::collections::BTreeSet<OrgName>,
    ) -> Result<Self, StorageError> {
        let read = |e: sled::Error| storage_err(ErrorSubject::StateMachine, ErrorVerb::Read, e);
        let decode_err =
            |e: serde_json::Error| storage_err(ErrorSubject::StateMachine, ErrorVerb::Read, e);
        let get = |key: StateKey| store.state.get(key.encode()).map_err(read);
        let last_applied = match get(StateKey::LastApplied)? {
            Some(v) => serde_json::from_slice(&v).map_err(decode_err)?,
            None => None,
        };
        let membership = match get(StateKey::Membership)? {
            Some(v) => serde_json::from_slice(&v).map_err(decode_err)?,
            None => StoredMembership::default(),
        };
        let height = match get(StateKey::Height)? {
            Some(v) => serde_json::from_slice(&v).map_err(decode_err)?,
            None => 0,
        };
        let accounts: Vec<Account> = scan(&store.state, ACCOUNT_TAG)?;
        let transfers: Vec<Transfer> = scan(&store.state, TRANSFER_TAG)?;
        let rejected: Vec<RejectedTransfer> = scan(&store.state, REJECTED_TAG)?;
        let ledger = Ledger::from_parts(orgs, accounts, transfers, rejected, height);
        let state = SharedState(Arc::new(RwLock::new(Applied {
            ledger,
            last_applied,
            membership,
        })));
        Ok(Self {
            store,
            state,
            snapshot_lock: Default::default(),
            snapshots_built: 0,
        })
    }

    pub fn shared(&self) -> SharedState {
        self.state.clone()
    }

    /// Writes one entry's effects and progress in one atomic batch.
    fn persist(&self, applied: &Applied, changes: &Changes) -> Result<(), StorageError> {
        let mut batch = sled::Batch::default();
        write_changes(&mut batch, applied, changes);
        self.store
            .state
            .apply_batch(batch)
            .map_err(|e| storage_err(ErrorSubject::StateMachine, ErrorVerb::Write, e))
    }

    /// Replaces the whole stored state with `applied` (snapshot install).
    fn persist_all(&self, applied: &Applied) -> Result<(), StorageError> {
        let write = |e: sled::Error| storage_err(ErrorSubject::StateMachine, ErrorVerb::Write, e);
        let mut batch = sled::Batch::default();
        for kv in self.store.state.iter() {
            batch.remove(kv.map_err(write)?.0);
        }
        let ledger = &applied.ledger;
        let everything = Changes {
            accounts: ledger.accounts().map(|a| a.id.clone()).collect(),
            transfers: ledger.transfers().map(|t| t.id.clone()).collect(),
            rejected: ledger
                .all_rejected()
                .map(|r| r.request.id.clone())
                .collect(),
        };
        write_changes(&mut batch, applied, &everything);
        self.store.state.apply_batch(batch).map_err(write)
    }

    /// Stores `snapshot` unless a newer one is stored already: a snapshot
    /// build runs concurrently with installs, and must not replace a newer
    /// installed snapshot with an older view.
    fn save_snapshot(&self, snapshot: &StoredSnapshot) -> Result<(), StorageError> {
        let sig = Some(snapshot.meta.signature());
        let _one_at_a_time = self.snapshot_lock.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.store.snapshot.get(SNAPSHOT_META).ok().flatten();
        let current: Option<SnapshotMeta<u64, openraft::BasicNode>> =
            current.and_then(|m| serde_json::from_slice(&m).ok());
        if current.is_some_and(|c| c.last_log_id > snapshot.meta.last_log_id) {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        batch.insert(SNAPSHOT_META, to_json(&snapshot.meta));
        batch.insert(SNAPSHOT_DATA, snapshot.data.as_slice());
        self.store
            .snapshot
            .apply_batch(batch)
            .map_err(|e| storage_err(ErrorSubject::Snapshot(sig.clone()), ErrorVerb::Write, e))?;
        self.store.durable.sync().map_err(|e| {
            StorageError::from_io_error(ErrorSubject::Snapshot(sig), ErrorVerb::Write, e)
        })
    }
}

/// Adds `changes` (read from `applied`) and the apply progress to `batch`.
fn write_changes(batch: &mut sled::Batch, applied: &Applied, changes: &Changes) {
    let ledger = &applied.ledger;
    for id in &changes.accounts {
        batch.insert(
            StateKey::Account(id).encode(),
            to_json(&ledger.account(id).expect("changed accounts exist")),
        );
    }
    for id in &changes.transfers {
        batch.insert(
            StateKey::Transfer(id).encode(),
            to_json(&ledger.transfer(id).expect("changed transfers exist")),
        );
    }
    for id in &changes.rejected {
        batch.insert(
            StateKey::Rejected(id).encode(),
            to_json(&ledger.rejected(id).expect("refusals exist")),
        );
    }
    batch.insert(
        StateKey::LastApplied.encode(),
        to_json(&applied.last_applied),
    );
    batch.insert(StateKey::Membership.encode(), to_json(&applied.membership));
    batch.insert(StateKey::Height.encode(), to_json(&ledger.height()));
}

fn scan<T: serde::de::DeserializeOwned>(
    tree: &sled::Tree,
    tag: u8,
) -> Result<Vec<T>, StorageError> {
    tree.scan_prefix([tag])
        .map(|kv| {
            let (_, v) =
                kv.map_err(|e| storage_err(ErrorSubject::StateMachine, ErrorVerb::Read, e))?;
            serde_json::from_slice(&v)
                .map_err(|e| storage_err(ErrorSubject::StateMachine, ErrorVerb::Read, e))
        })
        .collect()
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (data, last_applied, membership) = {
            let applied = self.state.read();
            (
                to_json(&*applied),
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
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        self.save_snapshot(&stored)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(stored.data)),
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
            let mut applied = self.state.0.write().unwrap_or_else(|p| p.into_inner());
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
            let (reply, changes) = match entry.payload {
                EntryPayload::Blank => (None, Changes::default()),
                EntryPayload::Normal(ref e) => {
                    let (outcome, changes) = applied.ledger.apply(e, entry.log_id.index);
                    (Some(outcome), changes)
                }
                EntryPayload::Membership(ref m) => {
                    applied.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                    (None, Changes::default())
                }
            };
            self.persist(&applied, &changes)?;
            replies.push(reply);
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        Self {
            store: self.store.clone(),
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
        let mut incoming: Applied = serde_json::from_slice(&data)
            .map_err(|e| storage_err(ErrorSubject::Snapshot(sig.clone()), ErrorVerb::Read, e))?;
        incoming.last_applied = meta.last_log_id;
        incoming.membership = meta.last_membership.clone();
        {
            let mut applied = self.state.0.write().unwrap_or_else(|p| p.into_inner());
            self.persist_all(&incoming)?;
            *applied = incoming;
        }
        self.save_snapshot(&StoredSnapshot {
            meta: meta.clone(),
            data,
        })
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
        let (Some(meta), Some(data)) = (get(SNAPSHOT_META)?, get(SNAPSHOT_DATA)?) else {
            return Ok(None);
        };
        let meta = serde_json::from_slice(&meta).map_err(|e| read(e.to_string()))?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data.to_vec())),
        }))
    }
}
