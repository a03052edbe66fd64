//! Replication: openraft 0.9 (storage-v2) on sled.
//!
//! - [`store`]: the sled database, its typed keys, and [`store::Durable`],
//!   which makes writes reach the disk. sled's own `flush` only issues
//!   `sync_file_range` on Linux (no metadata, no device cache flush) and never
//!   syncs its blob files, so after every flush we `fdatasync` the files
//!   ourselves before telling openraft a write is durable.
//! - [`log_store`]: the Raft log, vote and purge marker. Appends, votes,
//!   truncations and purges are durable before they are acknowledged. A
//!   leader sends its new entries to the followers while it syncs them
//!   (openraft is vendored with that one change, see `vendor/README.md`),
//!   and counts its own copy towards a quorum only once it is synced.
//! - [`state_machine`]: applies committed entries to the [`crate::ledger`] and
//!   writes what each entry changed in one atomic sled batch; builds and
//!   installs snapshots.
//! - [`network`]: Raft RPCs to peers over mutual TLS (`raft_addr`).
//! - [`incarnation`]: a node whose storage was lost cannot rejoin under its
//!   old id (it would have forgotten its votes and acknowledged entries).
//! - [`membership`]: the leader brings Raft's membership to the registry's
//!   nodes, as governance adds and removes them.
//! - [`turns`]: the nodes take turns building snapshots, so that they do
//!   not all walk their state at once.
//!
//! Each entry's payload is a [`crate::ledger::Entry`], stamped by the leader
//! (time, caller) before it is proposed, so `apply` is deterministic.

pub mod clock;
pub mod incarnation;
pub mod log_store;
pub mod membership;
pub mod network;
pub mod state_machine;
pub mod store;
pub mod turns;

use std::sync::Arc;

use crate::ledger::{Entry, Outcome};

openraft::declare_raft_types!(
    /// Alliance's Raft types: ledger entries in, ledger outcomes out. An
    /// entry is shared, not copied, between the log's cache, replication
    /// to each follower and apply (it serializes as the entry itself).
    pub TypeConfig:
        D = Arc<Entry>,

        R = Option<Outcome>,
        NodeId = u64,
        Node = openraft::BasicNode,
        SnapshotData = tokio::fs::File,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<u64>;
pub type StorageError = openraft::StorageError<u64>;
pub type StoredMembership = openraft::StoredMembership<u64, openraft::BasicNode>;

#[cfg(test)]
mod tests;
