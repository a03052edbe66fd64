//! Backup and restore that cannot lose data.
//!
//! A backup is one consistent point in time of a running node's applied
//! state (what a Raft snapshot holds), fetched over the API by an admin of
//! the node's organization, with a SHA-256 over the whole so a damaged
//! file is refused. A restore turns it into the data directory of a *new*
//! node id, never of a node the consortium has had: a Raft node must never
//! forget what it acknowledged, and a copy from the past would (it could
//! help elect a leader that lacks a committed transfer). The restored node
//! then joins by vote like any new node and catches up from the log (or a
//! newer snapshot) past the backup.
//!
//! File layout: [`MAGIC`], the SHA-256 of the rest, then the [`Backup`] in
//! the binary encoding of [`crate::codec`].

use std::path::Path;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

use openraft::storage::{RaftLogStorage, RaftStateMachine};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::codec;
use crate::config::{Genesis, NodeConfig, NodeId};
use crate::error::{Error, Result};
use crate::raft::log_store::LogStore;
use crate::raft::state_machine::{gov_in, Founding, SharedState, StateMachine};
use crate::raft::store::Store;
use crate::raft::{LogId, StoredMembership};

/// The first bytes of a backup file.
pub const MAGIC: &[u8] = b"alliance backup v1\n";

/// One node's applied state at one point in time.
#[derive(Debug, Serialize, Deserialize)]
pub struct Backup {
    /// SHA-256 of the genesis file (hex): it restores only into the same
    /// consortium.
    pub genesis_hash: String,
    /// The node it was taken from.
    pub node: NodeId,
    /// The last log entry the state has applied.
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    /// The state, as a snapshot holds it.
    pub data: Vec<u8>,
}

impl Backup {
    /// Node `node`'s applied state now.
    pub fn take(state: &SharedState, genesis_hash: &str, node: NodeId) -> Result<Self> {
        let (data, last_applied, membership) = state
            .point_in_time()
            .map_err(|e| Error::Other(format!("backup: {e}")))?;
        Ok(Self {
            genesis_hash: genesis_hash.to_owned(),
            node,
            last_applied,
            membership,
            data,
        })
    }

    /// The backup as a file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let body = codec::encode(self);
        [MAGIC, Sha256::digest(&body).as_slice(), &body].concat()
    }

    /// A backup from a file's bytes, if they are one, whole.
    pub fn from_bytes(bytes: &[u8]) -> std::result::Result<Self, String> {
        let rest = (bytes.strip_prefix(MAGIC))
            .ok_or("not an alliance backup (made by `alliance backup`)")?;
        if rest.len() < 32 {
            return Err("the backup is truncated".into());
        }
        let (sum, body) = rest.split_at(32);
        if Sha256::digest(body).as_slice() != sum {
            return Err("the backup is damaged: its SHA-256 does not match".into());
        }
        codec::decode(body).map_err(|e| format!("the backup does not decode: {e}"))
    }

    /// The ledger height and log index it holds, for people.
    pub fn describe(&self) -> String {
        let index = self.last_applied.map_or(0, |l| l.index);
        format!(
            "node {}'s state at log index {index} ({} bytes)",
            self.node,
            self.data.len()
        )
    }
}

/// Why restoring into node `id` would be unsafe, if it would: it is (or
/// was) a node of the consortium, by genesis, by the backup's Raft
/// membership or by its registry (removed ids are never reused).
pub fn refusal(backup: &Backup, genesis: &Genesis, id: NodeId) -> Option<String> {
    let in_raft = backup
        .membership
        .membership()
        .nodes()
        .any(|(n, _)| *n == id);
    let in_registry = gov_in(&backup.data).and_then(|g| g.node(id).map(|n| n.removed));
    let why = if genesis.node(id).is_some() {
        "is a genesis node"
    } else if in_raft {
        "was in Raft's membership when the backup was taken"
    } else if in_registry == Some(true) {
        "was removed (a removed id is never reused)"
    } else {
        return None;
    };
    Some(format!(
        "node {id} {why}: restoring its data from a backup could lose committed transfers (a Raft \
         node must never go back in time). Restore into a new node id instead, add it by vote \
         (alliance client gov propose add-node), and start it with its join bundle"
    ))
}

/// Restores `backup` into the data directory of `config`, which must be a
/// new node id and an empty or missing directory.
pub async fn restore(backup: &Backup, config: &NodeConfig, genesis: &Genesis) -> Result<()> {
    if backup.genesis_hash != genesis.hash {
        return Err(Error::Config(format!(
            "the backup is of another consortium (genesis {}) than {} ({})",
            backup.genesis_hash,
            config.genesis.display(),
            genesis.hash
        )));
    }
    if let Some(why) = refusal(backup, genesis, config.id) {
        return Err(Error::Config(why));
    }
    let dir = &config.data_dir;
    if std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()) {
        return Err(Error::Config(format!(
            "data_dir {} is not empty: restore only into a new node's empty directory",
            dir.display()
        )));
    }
    let store = Store::open(&dir.join("sled"))?;
    store.bind_genesis(&genesis.hash)?;
    let trust = Arc::new(crate::identity::Trust::from_genesis(genesis)?);
    let witness = crate::identity::attest::Witness::new(
        trust,
        genesis.hash_bytes(),
        crate::api::body::decode_signed,
    );
    let founding = Founding::of(genesis);
    let storage = |e: openraft::StorageError<u64>| Error::Other(format!("restore: {e}"));
    let mut sm = StateMachine::open_with(
        store.clone(),
        founding,
        genesis.hash_bytes(),
        Arc::new(witness),
    )
    .map_err(storage)?;
    let index = backup.last_applied.map_or(0, |l| l.index);
    let meta = openraft::SnapshotMeta {
        last_log_id: backup.last_applied,
        last_membership: backup.membership.clone(),
        snapshot_id: format!("restored-{}-{index}", backup.node),
    };
    let mut data = sm.begin_receiving_snapshot().await.map_err(storage)?;
    data.write_all(&backup.data).await?;
    data.flush().await?;
    sm.install_snapshot(&meta, data).await.map_err(storage)?;
    if let Some(last) = backup.last_applied {
        // The log starts after the backup: the leader sends what follows.
        LogStore::new(store.clone())
            .purge(last)
            .await
            .map_err(storage)?;
    }
    store.durable.sync()?;
    Ok(())
}

/// Reads a backup file.
pub fn read(path: &Path) -> Result<Backup> {
    let bytes =
        std::fs::read(path).map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
    Backup::from_bytes(&bytes).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
}
