//! The Raft state machine: committed entries applied to the ledger.
//!
//! The ledger lives in memory (shared with the API for reads) and on sled;
//! settled transfers only on sled: before an entry is applied, the stored
//! records it names are loaded, and after it is stored they are forgotten
//! again (see [`Ledger::to_load`]).
//!
//! The changes of the entries one call of apply applies, with the new
//! last-applied log id, go to sled in one atomic batch, written behind apply
//! by the [`Writer`] thread: the stored state is always the state after some
//! whole entry. Apply itself does not fsync: the log is durable, and a node
//! that restarts re-applies committed entries past its stored last-applied.
//! A reader holding the read lock waits for the writer before it reads sled,
//! so memory and sled agree under the lock.
//!
//! A snapshot is every key and value of the state tree (ledger records and
//! account histories) at one last-applied index: the tree is frozen there
//! under the read lock, then walked while apply goes on (the writer keeps
//! what the keys it overwrites held at the freeze; see [`Writer::freeze`]).
//! Installing one replaces the tree and reloads memory.

mod load;
mod persist;
mod read;
mod snapshot;
mod writer;

use std::collections::BTreeSet;
use std::io::Cursor;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder};

use self::load::load;
use self::persist::{put, Unqueued};
use self::snapshot::{decode_pairs, encode_pairs};
use self::writer::Writer;
use super::store::{storage_err, StateKey, Store};
use super::{LogId, StorageError, StoredMembership, TypeConfig};
use crate::codec::encode;
use crate::ledger::{Changes, Entry, Gov, Hash, Ledger, OrgName, Outcome, Verdict};

pub use self::read::{ReadError, StateRead};
pub use self::snapshot::SnapshotError;

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
    writer: Arc<Writer>,
    /// Snapshots built and installed here (for `/metrics`).
    pub snapshots: Arc<SnapshotCounts>,
    /// The ledger's height, kept up to date after each apply: what this
    /// node's seals say it had applied.
    height: Arc<AtomicU64>,
    /// One walk of the whole tree at a time (snapshot builds, installs and
    /// backups).
    snapshot_lock: Arc<tokio::sync::Mutex<()>>,
    /// A pause in each walk of the tree, standing in for slow storage in
    /// tests ([`SNAPSHOT_DELAY_VAR`]).
    walk_delay: Duration,
    /// Whether a snapshot is replacing the state now.
    installing: Arc<AtomicBool>,
}

/// The environment variable that sets a pause, in ms, in each snapshot
/// build and backup (after its point in time is fixed) and each install
/// (while it replaces the state): tests use it to stand in for a ledger
/// large enough to take that long.
pub const SNAPSHOT_DELAY_VAR: &str = "ALLIANCE_TEST_SNAPSHOT_DELAY_MS";

/// The environment variable that sets a pause, in ms, before each write
/// of applied entries to the store: tests stand in for a slow disk with
/// it.
pub const WRITE_DELAY_VAR: &str = "ALLIANCE_TEST_STATE_WRITE_DELAY_MS";

/// The governance state in a snapshot's data, if it holds one.
pub fn gov_in(data: &[u8]) -> Option<crate::ledger::Gov> {
    let key = StateKey::Gov.encode();
    let pairs = decode_pairs(data).ok()?;
    let (_, value) = pairs.into_iter().find(|(k, _)| **k == *key)?;
    crate::codec::decode(value).ok()
}

/// Snapshots a state machine built and installed since the node started.
#[derive(Default)]
pub struct SnapshotCounts {
    pub built: AtomicU64,
    pub installed: AtomicU64,
}

impl SharedState {
    /// The ledger's height as apply leaves it, without the state lock.
    pub fn applied_height(&self) -> Arc<AtomicU64> {
        self.height.clone()
    }

    /// [`Self::read`], unless a snapshot is replacing the state: then
    /// `None` at once, where `read` would wait until it is done.
    pub fn try_read(&self) -> Option<StateRead<'_>> {
        (!self.installing()).then(|| self.read())
    }

    /// [`Self::read`] for a read of the store: it first waits, without
    /// the lock, for the writer to store what is queued, so that under the
    /// lock it waits only for what apply queued since. Apply needs the lock
    /// to go on, and on a slow disk the first wait is long.
    pub fn read_stored(&self) -> StateRead<'_> {
        // A failed writer fails the read under the lock as well.
        let _ = self.writer.caught_up();
        self.read()
    }

    /// Whether a snapshot is replacing the state now.
    pub fn installing(&self) -> bool {
        self.installing.load(Ordering::Acquire)
    }

    pub fn read(&self) -> StateRead<'_> {
        StateRead {
            guard: self.applied.read().unwrap_or_else(|p| p.into_inner()),
            stored: &self.state,
            writer: &self.writer,
        }
    }

    /// The applied state as a snapshot's data, with the last applied log
    /// id and membership it holds: one consistent point in time. The state
    /// lock is held only to fix the point; apply goes on during the walk.
    /// Blocks: call it off the async runtime's threads.
    pub fn point_in_time(
        &self,
    ) -> Result<(Vec<u8>, Option<LogId>, StoredMembership), StorageError> {
        let _one_walk = self.snapshot_lock.blocking_lock();
        let (last_applied, membership) = {
            let applied = self.read_stored();
            self.writer.caught_up().map_err(read_err)?;
            self.writer.freeze();
            (applied.last_applied, applied.membership.clone())
        };
        std::thread::sleep(self.walk_delay);
        let data = encode_pairs(&self.state, &self.writer);
        self.writer.thaw();
        Ok((data?, last_applied, membership))
    }
}

/// Checks the evidence of who sent each unit of an entry, at the ledger
/// clock of its apply and against the governance state before it (revoked
/// certificates); the same way on every replica
/// (`crate::identity::attest::Witness`).
pub trait OriginCheck: Send + Sync + 'static {
    fn verdicts(&self, entry: &Entry, clock_ms: u64, gov: &Gov) -> Vec<Verdict>;

    /// Told the governance state when the state machine opens, and after
    /// each apply or snapshot install that changed it: the listeners
    /// enforce revocations from then on.
    fn governance(&self, _gov: &Gov) {}
}

impl OriginCheck for crate::identity::attest::Witness {
    fn verdicts(&self, entry: &Entry, clock_ms: u64, gov: &Gov) -> Vec<Verdict> {
        crate::identity::attest::Witness::verdicts(self, entry, clock_ms, gov)
    }

    fn governance(&self, gov: &Gov) {
        self.trust().govern(gov);
    }
}

/// What a new state machine starts from: genesis's organizations and the
/// governance state genesis sets (its policy).
#[derive(Clone, Debug, Default)]
pub struct Founding {
    pub orgs: BTreeSet<OrgName>,
    pub gov: Gov,
}

impl Founding {
    /// What genesis founds: its organizations, active, with their CAs and
    /// nodes, and its policy.
    pub fn of(genesis: &crate::config::Genesis) -> Self {
        let founders = genesis.orgs.iter().map(|o| {
            let nodes = genesis.nodes.iter().filter(|n| n.org == o.name);
            let nodes = nodes.map(|n| n.id).collect();
            (o.name.clone(), Gov::founder(vec![o.ca_cert.clone()], nodes))
        });
        Self {
            orgs: genesis.org_names(),
            gov: Gov::founding(founders, genesis.policy()).with_nodes(genesis.node_records()),
        }
    }
}

impl From<BTreeSet<OrgName>> for Founding {
    fn from(orgs: BTreeSet<OrgName>) -> Self {
        Self {
            gov: Ledger::new(orgs.clone()).gov().clone(),
            orgs,
        }
    }
}

pub struct StateMachine {
    store: Store,
    origins: Arc<dyn OriginCheck>,
    founding: Founding,
    genesis_hash: Hash,
    state: SharedState,
    /// Counts snapshots built, to give each a unique id.
    snapshots_built: u64,
}

fn read_err(e: impl std::error::Error + Send + Sync + 'static) -> StorageError {
    storage_err(ErrorSubject::StateMachine, ErrorVerb::Read, e)
}

fn write_err(e: impl std::error::Error + Send + Sync + 'static) -> StorageError {
    storage_err(ErrorSubject::StateMachine, ErrorVerb::Write, e)
}

impl StateMachine {
    /// Loads the applied state from sled, or starts from organizations
    /// `orgs` with the default policy.
    pub fn open(
        store: Store,
        orgs: BTreeSet<OrgName>,
        genesis_hash: Hash,
        origins: Arc<dyn OriginCheck>,
    ) -> Result<Self, StorageError> {
        Self::open_with(store, Founding::from(orgs), genesis_hash, origins)
    }

    /// Loads the applied state from sled, or starts from `founding`.
    pub fn open_with(
        store: Store,
        founding: Founding,
        genesis_hash: Hash,
        origins: Arc<dyn OriginCheck>,
    ) -> Result<Self, StorageError> {
        let applied = load(&store.state, &founding, genesis_hash)?;
        origins.governance(applied.ledger.gov());
        let height = Arc::new(AtomicU64::new(applied.ledger.height()));
        let delay = |var| {
            (std::env::var(var).ok())
                .and_then(|ms| ms.parse().ok())
                .map_or(Duration::ZERO, Duration::from_millis)
        };
        let walk_delay = delay(SNAPSHOT_DELAY_VAR);
        let state = SharedState {
            height,
            applied: Arc::new(RwLock::new(applied)),
            state: store.state.clone(),
            writer: Arc::new(Writer::start(store.state.clone(), delay(WRITE_DELAY_VAR))),
            snapshots: Arc::default(),
            snapshot_lock: Arc::default(),
            walk_delay,
            installing: Arc::default(),
        };
        Ok(Self {
            store,
            origins,
            founding,
            genesis_hash,
            state,
            snapshots_built: 0,
        })
    }

    pub fn shared(&self) -> SharedState {
        self.state.clone()
    }
}

impl StateMachine {
    /// Another handle on this state machine (the same store and state).
    fn handle(&self) -> Self {
        Self {
            store: self.store.clone(),
            origins: self.origins.clone(),
            founding: self.founding.clone(),
            genesis_hash: self.genesis_hash,
            state: self.state.clone(),
            snapshots_built: self.snapshots_built,
        }
    }

    /// Replaces the state with snapshot `data`. Blocks: one walk of the
    /// tree at a time, and the state lock while the tree is replaced.
    fn install(
        &self,
        meta: &SnapshotMeta<u64, openraft::BasicNode>,
        data: &[u8],
    ) -> Result<(), StorageError> {
        let sig = Some(meta.signature());
        let pairs = decode_pairs(data)
            .map_err(|e| storage_err(ErrorSubject::Snapshot(sig.clone()), ErrorVerb::Read, e))?;
        // The folder of snapshot files is in the data directory (and is
        // made by the first snapshot saved).
        let data_dir = (self.store.snapshots.parent()).unwrap_or(&self.store.snapshots);
        let free = rustix::fs::statvfs(data_dir)
            .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
            .map_err(|e| storage_err(ErrorSubject::Snapshot(sig.clone()), ErrorVerb::Read, e))?;
        room_to_install(free, data.len() as u64)
            .map_err(|e| storage_err(ErrorSubject::Snapshot(sig.clone()), ErrorVerb::Write, e))?;
        let _one_walk = self.state.snapshot_lock.blocking_lock();
        {
            let _installing = Installing::start(&self.state.installing);
            let mut applied = (self.state.applied.write()).unwrap_or_else(|p| p.into_inner());
            // Nothing queued may land on the new state.
            self.state.writer.caught_up().map_err(write_err)?;
            std::thread::sleep(self.state.walk_delay);
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
            *applied = load(&self.store.state, &self.founding, self.genesis_hash)?;
            self.origins.governance(applied.ledger.gov());
            (self.state.height).store(applied.ledger.height(), Ordering::Release);
        }
        self.save_snapshot(meta, data)?;
        (self.state.snapshots.installed).fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Whether `free` bytes of disk hold the install of a snapshot of `size`
/// bytes: the state written anew (about its size) and the snapshot's own
/// copy, kept to send to others. sled reclaims the old state's space
/// after.
fn room_to_install(free: u64, size: u64) -> std::io::Result<()> {
    let needed = size.saturating_mul(2);
    if free >= needed {
        return Ok(());
    }
    let mb = |b: u64| b.div_ceil(1 << 20);
    Err(std::io::Error::new(
        std::io::ErrorKind::StorageFull,
        format!(
            "installing a snapshot of {} MB needs about {} MB of free disk (the state written \
             anew and a copy of the snapshot) and {} MB are free: free space in the data \
             directory's file system or grow it, then restart this node",
            mb(size),
            mb(needed),
            mb(free)
        ),
    ))
}

/// Marks the state as being replaced while it lives.
struct Installing<'a>(&'a AtomicBool);

impl<'a> Installing<'a> {
    fn start(flag: &'a AtomicBool) -> Self {
        flag.store(true, Ordering::Release);
        Self(flag)
    }
}

impl Drop for Installing<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let state = self.state.clone();
        let (data, last_applied, membership) =
            tokio::task::spawn_blocking(move || state.point_in_time())
                .await
                .map_err(read_err)??;
        self.snapshots_built += 1;
        (self.state.snapshots.built).fetch_add(1, Ordering::Relaxed);
        let snapshot_id = match last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, self.snapshots_built),
            None => format!("none-{}", self.snapshots_built),
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership: membership,
            snapshot_id,
        };
        let one_walk = self.state.snapshot_lock.clone();
        let _one_walk = one_walk.lock().await;
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
        let mut applied = self
            .state
            .applied
            .write()
            .unwrap_or_else(|p| p.into_inner());
        // The entries' changes go in one batch (unless an entry names a
        // stored transfer: see `load_named`).
        let mut unqueued = Unqueued::default();
        for entry in entries {
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
                    loaded = self.load_named(&mut applied.ledger, &mut unqueued, e)?;
                    let log = entry.log_id;
                    let clock_ms = applied.ledger.clock_for(e);
                    let verdicts = self.origins.verdicts(e, clock_ms, applied.ledger.gov());
                    let (outcome, changes) =
                        applied
                            .ledger
                            .apply_logged(e, log.index, log.leader_id.term, &verdicts);
                    if changes.gov {
                        self.origins.governance(applied.ledger.gov());
                    }
                    (Some(outcome), changes)
                }
                EntryPayload::Membership(ref m) => {
                    applied.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                    (None, Changes::default())
                }
            };
            put(&mut unqueued, &applied, &mut changes);
            unqueued.settled.extend(loaded);
            unqueued
                .settled
                .extend(changes.transfers.into_iter().map(|t| t.id));
            replies.push(reply);
        }
        // Every read of sled waits for the writer: once queued, settled
        // records leave memory.
        self.queue(&mut applied.ledger, &mut unqueued)?;
        (self.state.height).store(applied.ledger.height(), Ordering::Release);
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.handle()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    /// Installs on a blocking thread, so the async runtime's threads go
    /// on serving (Raft's heartbeats among them); while the state is
    /// replaced, [`SharedState::try_read`] says so instead of waiting.
    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, openraft::BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let this = self.handle();
        let meta = meta.clone();
        let data = snapshot.into_inner();
        tokio::task::spawn_blocking(move || this.install(&meta, &data))
            .await
            .map_err(write_err)?
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        self.stored_snapshot()
    }
}

#[cfg(test)]
mod tests {
    use super::room_to_install;

    #[test]
    fn an_install_needs_room_for_the_state_and_the_snapshot() {
        const MB: u64 = 1 << 20;
        assert!(room_to_install(200 * MB, 100 * MB).is_ok());
        let e = room_to_install(150 * MB, 100 * MB).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::StorageFull);
        let e = e.to_string();
        assert!(
            e.contains("of 100 MB needs about 200 MB") && e.contains("150 MB are free"),
            "{e}"
        );
        assert!(
            room_to_install(u64::MAX - 1, u64::MAX).is_err(),
            "no overflow"
        );
    }
}
