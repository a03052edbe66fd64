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

mod history;
mod index;
mod load;
mod persist;
mod read;
mod snapshot;
mod writer;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder};

use self::load::{derive_index, load};
use self::persist::{put, Unqueued};
use self::snapshot::{file_pairs, incoming_file, incoming_path, write_pairs, Pairs};
use self::writer::Writer;
use super::store::{storage_err, StateKey, Store};
use super::{LogId, StorageError, StoredMembership, TypeConfig};
use crate::codec::encode;
use crate::ledger::{Changes, Entry, Gov, Hash, Ledger, OrgName, Outcome, Verdict};

#[cfg(test)]
pub use self::history::PAGE_RUNS;
pub use self::index::{Index, INDEX_HELD_MAX};
#[cfg(test)]
pub use self::read::CHUNKS_READ;
pub use self::read::{ReadError, StateRead};
pub use self::snapshot::SnapshotError;

/// The applied state: the ledger and how far it has applied.
#[derive(Debug, Default)]
pub struct Applied {
    pub ledger: Ledger,
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    /// Which ids of the transfer index the ledger holds.
    pub index: index::Index,
    /// Every account's last page of history runs.
    pub tails: history::Tails,
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
    installing: Arc<InstallFlag>,
    /// Whether this node is catching up with its leader, as its appends
    /// say ([`SharedState::appended`]).
    behind: Arc<Mutex<Behind>>,
}

#[derive(Default)]
struct Behind {
    /// When an append last left this node far behind its leader.
    at: Option<Instant>,
    /// Whether the last append this node took left it far behind: appends
    /// to a node catching up may come seconds apart (the first ones after
    /// a restart do), so it counts as catching up until one finds it in
    /// step.
    far: bool,
    /// Whether a build has waited [`BUILD_DEFERRED_MAX`] since an append
    /// last found this node in step: the next builds do not wait until one
    /// does, so that a leader that keeps this node behind (or claims to)
    /// does not put off every build.
    waited_out: bool,
    /// Whether this node has taken an append since it started.
    appended: bool,
}

impl Behind {
    /// Notes an append that left this node `behind` entries behind its
    /// leader's commit index.
    fn note(&mut self, behind: u64) {
        self.appended = true;
        self.far = behind > CATCHING_UP_ENTRIES;
        if self.far {
            self.at = Some(Instant::now());
        } else {
            self.waited_out = false;
        }
    }

    /// How long a build should wait before it asks again, if it should
    /// wait: the last append left this node far behind, or one did lately,
    /// and no build has waited its longest since it was in step.
    fn catching_up(&self) -> Option<Duration> {
        if self.waited_out {
            return None;
        }
        if self.far {
            return Some(FAR_BEHIND_RECHECK);
        }
        let left = CATCHING_UP_QUIET.checked_sub(self.at?.elapsed())?;
        (!left.is_zero()).then_some(left)
    }
}

/// How far behind the leader's commit index an append must leave this
/// node for it to count as catching up: a node in step is a few entries
/// behind (those in flight).
pub(crate) const CATCHING_UP_ENTRIES: u64 = 32;
/// How long after the last append that found it catching up a node counts
/// as catching up still.
pub(crate) const CATCHING_UP_QUIET: Duration = Duration::from_secs(2);
/// How often a build waiting while the last append left this node far
/// behind looks again.
const FAR_BEHIND_RECHECK: Duration = Duration::from_millis(250);
/// How long a snapshot build waits, at most, for this node to stop
/// catching up before it walks the state.
const BUILD_DEFERRED_MAX: Duration = Duration::from_secs(120);

/// The environment variable that sets a pause, in ms, in each snapshot
/// build and backup (after its point in time is fixed) and each install
/// (while it replaces the state): tests use it to stand in for a ledger
/// large enough to take that long.
pub const SNAPSHOT_DELAY_VAR: &str = "ALLIANCE_TEST_SNAPSHOT_DELAY_MS";

/// The environment variable that sets a pause, in ms, before each write
/// of applied entries to the store: tests stand in for a slow disk with
/// it.
pub const WRITE_DELAY_VAR: &str = "ALLIANCE_TEST_STATE_WRITE_DELAY_MS";

/// The pause, in ms, that the test environment variable `var` sets (none:
/// no pause).
pub fn delay_of(var: &str) -> Duration {
    (std::env::var(var).ok())
        .and_then(|ms| ms.parse().ok())
        .map_or(Duration::ZERO, Duration::from_millis)
}

/// The governance state in a snapshot's data, if it holds one.
pub fn gov_in(data: &[u8]) -> Option<crate::ledger::Gov> {
    let key = StateKey::Gov.encode();
    let mut pairs = Pairs::new(data).ok()?;
    let (_, value) = pairs.find_map(|p| p.ok().filter(|(k, _)| *k == key))?;
    crate::codec::decode(&value).ok()
}

/// Snapshots a state machine built and installed since the node started.
#[derive(Default)]
pub struct SnapshotCounts {
    pub built: AtomicU64,
    pub installed: AtomicU64,
    /// Builds that waited while this node caught up with its leader.
    pub deferred: AtomicU64,
}

impl SharedState {
    /// The ledger's height as apply leaves it, without the state lock.
    pub fn applied_height(&self) -> Arc<AtomicU64> {
        self.height.clone()
    }

    /// [`Self::read`], unless a snapshot is replacing the state: then
    /// `None` at once, where `read` would wait until it is done. A read
    /// that finds no install takes the lock before one can ask for it, so
    /// it never waits behind an install either.
    pub fn try_read(&self) -> Option<StateRead<'_>> {
        let _gate = self.installing.gate();
        (!self.installing()).then(|| self.read())
    }

    /// [`Self::read_stored`], unless a snapshot is replacing the state, as
    /// [`Self::try_read`].
    pub fn try_read_stored(&self) -> Option<StateRead<'_>> {
        // Not to wait for the writer only to answer `None`.
        if self.installing() {
            return None;
        }
        // A failed writer fails the read under the lock as well.
        let _ = self.writer.caught_up();
        self.try_read()
    }

    /// Resolves once a snapshot is replacing the state (at once if one is
    /// now): what a read waiting for this node to apply an index stops
    /// waiting at, since the install holds the state until it is done.
    pub fn install_begun(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut now = self.installing.now.subscribe();
        async move {
            if now.wait_for(|installing| *installing).await.is_err() {
                // The state machine is gone, and no install will begin.
                std::future::pending::<()>().await;
            }
        }
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
        *self.installing.now.borrow()
    }

    /// Notes an append from the leader this node follows that it took:
    /// `behind` entries were committed past the append's last entry.
    pub fn appended(&self, behind: u64) {
        self.behind().note(behind);
    }

    /// Whether this node has taken an append from a leader since it
    /// started: until then it cannot tell whether it is catching up.
    pub fn took_an_append(&self) -> bool {
        self.behind().appended
    }

    fn behind(&self) -> std::sync::MutexGuard<'_, Behind> {
        self.behind.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits, up to [`BUILD_DEFERRED_MAX`], while this node catches up
    /// with its leader: a snapshot build waits so that its walk does not
    /// run beside the catch-up's burst of applies (both take memory and
    /// the cores), and so that what it builds is nearer the head.
    fn defer_while_catching_up(&self) {
        let catching_up = || self.behind().catching_up();
        if catching_up().is_none() {
            return;
        }
        (self.snapshots.deferred).fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        while let Some(left) = catching_up() {
            let Some(may_wait) = BUILD_DEFERRED_MAX.checked_sub(started.elapsed()) else {
                self.behind().waited_out = true;
                tracing::warn!(
                    ms = started.elapsed().as_millis() as u64,
                    "a snapshot build waited as long as it may for this node to catch up \
                     with its leader, and goes on; builds wait again once this node is in step"
                );
                return;
            };
            std::thread::sleep(left.min(may_wait));
        }
        tracing::info!(
            ms = started.elapsed().as_millis() as u64,
            "a snapshot build waited while this node caught up with its leader"
        );
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
        let mut data = Vec::new();
        let (last_applied, membership) =
            self.walk(|tree, writer| write_pairs(tree, writer, &mut data))?;
        Ok((data, last_applied, membership))
    }

    /// Runs `walk` over the state tree as frozen at one point in time (one
    /// walk at a time), and returns the last applied log id and membership
    /// of that point.
    fn walk<T>(
        &self,
        walk: impl FnOnce(&sled::Tree, &Writer) -> Result<T, StorageError>,
    ) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let _one_walk = self.snapshot_lock.blocking_lock();
        let (last_applied, membership, fixed_ms) = {
            let applied = self.read_stored();
            let fixing = std::time::Instant::now();
            self.writer.caught_up().map_err(read_err)?;
            self.writer.freeze();
            let membership = applied.membership.clone();
            // How long apply waited for the point to be fixed.
            let fixed_ms = fixing.elapsed().as_millis() as u64;
            (applied.last_applied, membership, fixed_ms)
        };
        std::thread::sleep(self.walk_delay);
        let (started, rss) = (std::time::Instant::now(), resident_mb());
        let walked = walk(&self.state, &self.writer);
        self.writer.thaw();
        tracing::info!(
            fixed_ms,
            ms = started.elapsed().as_millis() as u64,
            rss_mb_before = rss,
            rss_mb_after = resident_mb(),
            "walked the stored state (a snapshot build or a backup)"
        );
        walked.map(|_| (last_applied, membership))
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
    /// The transfer index's sizes.
    index_limits: index::Limits,
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
        let started = std::time::Instant::now();
        snapshot::clear_incoming(&store).map_err(write_err)?;
        resume_install(&store)?;
        derive_index(&store)?;
        let applied = load(&store.state, &founding, genesis_hash)?;
        tracing::info!(
            ms = started.elapsed().as_millis() as u64,
            height = applied.ledger.height(),
            transfers = applied.ledger.transfer_count(),
            index_runs = applied.index.runs(),
            index_held = applied.ledger.indexed_len(),
            "loaded the applied state"
        );
        origins.governance(applied.ledger.gov());
        let height = Arc::new(AtomicU64::new(applied.ledger.height()));
        let walk_delay = delay_of(SNAPSHOT_DELAY_VAR);
        let state = SharedState {
            height,
            applied: Arc::new(RwLock::new(applied)),
            state: store.state.clone(),
            writer: Arc::new(Writer::start(
                store.state.clone(),
                delay_of(WRITE_DELAY_VAR),
            )),
            snapshots: Arc::default(),
            snapshot_lock: Arc::default(),
            walk_delay,
            installing: Arc::default(),
            behind: Arc::default(),
        };
        Ok(Self {
            store,
            origins,
            founding,
            genesis_hash,
            state,
            snapshots_built: 0,
            index_limits: index::Limits::default(),
        })
    }

    /// This state machine, keeping at most `max` ids of the transfer index
    /// in memory once they are on disk, beside the newest.
    pub fn index_held_max(mut self, max: usize) -> Self {
        self.index_limits.looked_max = max;
        self
    }

    /// This state machine, writing runs of the transfer index of `ids`
    /// each (tests make many small runs with it).
    #[cfg(test)]
    pub fn index_run_ids(mut self, ids: usize) -> Self {
        self.index_limits.run_ids = ids;
        self
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
            index_limits: self.index_limits,
        }
    }

    /// Replaces the state with the snapshot in `file`, checked whole
    /// first and then stored as this node's snapshot. Blocks: one walk of
    /// the tree at a time, and the state lock while the tree is replaced.
    fn install(
        &self,
        meta: &SnapshotMeta<u64, openraft::BasicNode>,
        file: std::fs::File,
    ) -> Result<(), StorageError> {
        // A state this node could not load is refused before it replaces
        // anything: the state this node has stays.
        let started = std::time::Instant::now();
        let refused = |e| {
            let e = std::io::Error::new(std::io::ErrorKind::InvalidData, e);
            snapshot_err(meta, ErrorVerb::Read)(e)
        };
        // One read of the file, a pair at a time.
        let each_pair = |check: &mut PairCheck| {
            for pair in file_pairs(&file).map_err(snapshot_err(meta, ErrorVerb::Read))? {
                let (key, value) = pair.map_err(snapshot_err(meta, ErrorVerb::Read))?;
                check(&key, &value).map_err(refused)?;
            }
            Ok::<_, StorageError>(())
        };
        let mut received = load::Received::default();
        each_pair(&mut |key, value| received.first(key, value))?;
        let mut whole = received.second_read().map_err(refused)?;
        each_pair(&mut |key, value| whole.pair(key, value))?;
        whole.finish().map_err(refused)?;
        let size = file
            .metadata()
            .map_err(snapshot_err(meta, ErrorVerb::Read))?
            .len();
        tracing::info!(
            ms = started.elapsed().as_millis() as u64,
            bytes = size,
            "checked the received snapshot"
        );
        let free = rustix::fs::statvfs(&self.store.snapshots_incoming)
            .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
            .map_err(snapshot_err(meta, ErrorVerb::Read))?;
        room_to_install(free, size).map_err(snapshot_err(meta, ErrorVerb::Write))?;
        // Moved, not copied, into the snapshot folder when it was received
        // here (it was, unless it is a restored backup or a test's).
        let path = match incoming_path(&self.store, &file)
            .map_err(snapshot_err(meta, ErrorVerb::Read))?
        {
            Some(path) => path,
            None => {
                let (mut copy, path) =
                    incoming_file(&self.store).map_err(snapshot_err(meta, ErrorVerb::Write))?;
                let mut from = &file;
                std::io::Seek::rewind(&mut from).map_err(snapshot_err(meta, ErrorVerb::Read))?;
                std::io::copy(&mut from, &mut copy)
                    .map_err(snapshot_err(meta, ErrorVerb::Write))?;
                path
            }
        };
        drop(file);
        let _one_walk = self.state.snapshot_lock.blocking_lock();
        let data = self.store_snapshot(meta, &path)?;
        {
            let _installing = Installing::start(&self.state.installing);
            let mut applied = (self.state.applied.write()).unwrap_or_else(|p| p.into_inner());
            // Nothing queued may land on the new state.
            applied.index.stop();
            self.state.writer.caught_up().map_err(write_err)?;
            std::thread::sleep(self.state.walk_delay);
            rewrite_state(&self.store, meta, &data)?;
            derive_index(&self.store)?;
            *applied = load(&self.store.state, &self.founding, self.genesis_hash)?;
            self.origins.governance(applied.ledger.gov());
            (self.state.height).store(applied.ledger.height(), Ordering::Release);
        }
        (self.state.snapshots.installed).fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            ms = started.elapsed().as_millis() as u64,
            "installed the received snapshot"
        );
        Ok(())
    }
}

/// An error of snapshot `meta`'s, on `verb`.
fn snapshot_err<E: std::error::Error + Send + Sync + 'static>(
    meta: &SnapshotMeta<u64, openraft::BasicNode>,
    verb: ErrorVerb,
) -> impl Fn(E) -> StorageError + '_ {
    move |e| storage_err(ErrorSubject::Snapshot(Some(meta.signature())), verb, e)
}

/// A check of one key and value of a received snapshot.
type PairCheck<'a> = dyn FnMut(&[u8], &[u8]) -> Result<(), String> + 'a;

/// Keys written per batch while derived records are derived, and bytes
/// of pairs inserted per batch while a snapshot replaces the state: what
/// an install holds in memory at once.
const INSTALL_BATCH_KEYS: usize = 10_000;
const INSTALL_BATCH_BYTES: usize = 8 << 20;

/// Keys of the replaced state removed per batch while a snapshot replaces
/// it. sled reads back the leaf of each key it removes (most are cold) and
/// keeps what a batch replaces until the batch ends: at 10,000 keys of
/// about 4 KiB a batch, a follower installing a snapshot at 9 million
/// transfers went from 210 MB to 1.5 GB for a moment, several times.
const INSTALL_REMOVALS_PER_BATCH: usize = 500;

/// Replaces the state tree with the snapshot `meta` in `file`, in batches
/// of bounded size. [`StateKey::Installing`] is set first and cleared
/// with the last batch: a node that stops in between finds it at start
/// and does it again from the stored snapshot ([`resume_install`]).
fn rewrite_state(
    store: &Store,
    meta: &SnapshotMeta<u64, openraft::BasicNode>,
    file: &std::fs::File,
) -> Result<(), StorageError> {
    let tree = &store.state;
    let marker = StateKey::Installing.encode();
    tree.insert(&marker, encode(&meta.last_log_id))
        .map_err(write_err)?;
    store.durable.sync().map_err(write_err)?;
    let mut batch = sled::Batch::default();
    let mut in_batch = 0;
    for key in tree.iter().keys() {
        let key = key.map_err(read_err)?;
        if key != marker {
            batch.remove(key);
            in_batch += 1;
        }
        if in_batch == INSTALL_REMOVALS_PER_BATCH {
            tree.apply_batch(std::mem::take(&mut batch))
                .map_err(write_err)?;
            in_batch = 0;
        }
    }
    let mut bytes = 0;
    for pair in file_pairs(file).map_err(snapshot_err(meta, ErrorVerb::Read))? {
        let (k, v) = pair.map_err(snapshot_err(meta, ErrorVerb::Read))?;
        bytes += k.len() + v.len();
        batch.insert(k, v);
        if bytes >= INSTALL_BATCH_BYTES {
            tree.apply_batch(std::mem::take(&mut batch))
                .map_err(write_err)?;
            bytes = 0;
        }
    }
    batch.insert(StateKey::LastApplied.encode(), encode(&meta.last_log_id));
    batch.insert(StateKey::Membership.encode(), encode(&meta.last_membership));
    batch.remove(marker);
    tree.apply_batch(batch).map_err(write_err)?;
    store.durable.sync().map_err(write_err)
}

/// Finishes an install that a stop interrupted, if there was one: the
/// state is rewritten from the stored snapshot, the one it was installing.
fn resume_install(store: &Store) -> Result<(), StorageError> {
    let Some(was) = store
        .state
        .get(StateKey::Installing.encode())
        .map_err(read_err)?
    else {
        return Ok(());
    };
    let last_log_id: Option<LogId> = crate::codec::decode(&was).map_err(read_err)?;
    let stored = snapshot::stored_file(store)?;
    let Some((meta, path)) = stored.filter(|(m, _)| m.last_log_id == last_log_id) else {
        return Err(write_err(std::io::Error::other(format!(
            "an install of the snapshot up to {last_log_id:?} was interrupted, and that \
             snapshot is not the one stored: restore this node from a backup"
        ))));
    };
    tracing::warn!(
        ?last_log_id,
        "finishing a snapshot install that a stop interrupted"
    );
    let file = std::fs::File::open(&path).map_err(read_err)?;
    rewrite_state(store, &meta, &file)
}

/// Whether `free` bytes of disk hold the install of a snapshot of `size`
/// bytes, already received: the state written anew, about its size and a
/// quarter for sled's own records. sled reclaims the old state's space
/// after.
fn room_to_install(free: u64, size: u64) -> std::io::Result<()> {
    let needed = size.saturating_add(size / 4);
    if free >= needed {
        return Ok(());
    }
    let mb = |b: u64| b.div_ceil(1 << 20);
    Err(std::io::Error::new(
        std::io::ErrorKind::StorageFull,
        format!(
            "installing a snapshot of {} MB needs about {} MB of free disk (the state written \
             anew) and {} MB are free: free space in the data directory's file system or grow \
             it, then restart this node",
            mb(size),
            mb(needed),
            mb(free)
        ),
    ))
}

/// Whether a snapshot is replacing the state, for readers that must not
/// wait for it.
struct InstallFlag {
    /// Held by a reader from its look at [`Self::now`] until it has the
    /// state lock, and by an install while it raises the flag: a reader
    /// that finds the flag down holds the lock before the install asks for
    /// it, and never queues behind the install's write.
    gate: Mutex<()>,
    now: tokio::sync::watch::Sender<bool>,
}

impl Default for InstallFlag {
    fn default() -> Self {
        Self {
            gate: Mutex::new(()),
            now: tokio::sync::watch::Sender::new(false),
        }
    }
}

impl InstallFlag {
    fn gate(&self) -> std::sync::MutexGuard<'_, ()> {
        self.gate.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The flag raised while an install replaces the state, lowered when the
/// guard drops (after the state lock it is taken before).
struct Installing<'a>(&'a InstallFlag);

impl<'a> Installing<'a> {
    fn start(flag: &'a InstallFlag) -> Self {
        let _gate = flag.gate();
        flag.now.send_replace(true);
        Self(flag)
    }
}

impl Drop for Installing<'_> {
    fn drop(&mut self) {
        self.0.now.send_replace(false);
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (state, store) = (self.state.clone(), self.store.clone());
        // The walk runs on a thread of its own that ends with it: on a
        // pooled thread that idles afterwards, what other threads free into
        // its allocator heap during the walk stays resident, 40-280 MB more
        // after each build (BENCHMARKS.md, "Transparent huge pages").
        let (done, walked) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("snapshot-walk".into())
            .spawn(move || {
                state.defer_while_catching_up();
                let started = std::time::Instant::now();
                let mut path = None;
                let result = state
                    .walk(|_, writer| {
                        path = Some(snapshot::write_snapshot_file(&store, writer)?);
                        Ok(())
                    })
                    .map(|(last_applied, membership)| {
                        (
                            path.expect("the walk ran"),
                            last_applied,
                            membership,
                            started,
                        )
                    });
                let _ = done.send(result);
            })
            .map_err(read_err)?;
        let (path, last_applied, membership, started) = walked.await.map_err(read_err)??;
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
        // Off the runtime's workers: storing syncs files and the folder,
        // and removes the older snapshot file (gigabytes), which may take
        // hundreds of ms; a worker blocked that long holds up requests and
        // Raft.
        let (this, saved) = (self.handle(), meta.clone());
        let file = tokio::task::spawn_blocking(move || {
            let _one_walk = this.state.snapshot_lock.blocking_lock();
            this.store_snapshot(&saved, &path)
        })
        .await
        .map_err(write_err)??;
        // Counted once stored: the nodes' turns take a count that moved
        // as a build that ended (`crate::raft::turns`).
        (self.state.snapshots.built).fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            index = last_applied.map_or(0, |l| l.index),
            ms = started.elapsed().as_millis() as u64,
            "stored the built snapshot"
        );
        let file = tokio::fs::File::from_std(file);
        Ok(Snapshot {
            meta,
            snapshot: Box::new(file),
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
                    self.look_up_named(&mut applied, e)?;
                    loaded = self.load_named(&mut applied, &mut unqueued, e)?;
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
            put(&mut unqueued, &mut applied, &mut changes);
            unqueued.settled.extend(loaded);
            unqueued
                .settled
                .extend(changes.transfers.into_iter().map(|t| t.id));
            replies.push(reply);
        }
        // Every read of sled waits for the writer: once queued, settled
        // records leave memory.
        self.queue(&mut applied, &mut unqueued)?;
        self.keep_index(&mut applied)?;
        (self.state.height).store(applied.ledger.height(), Ordering::Release);
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.handle()
    }

    /// A new file in the folder of incoming snapshots, which the chunks
    /// are written to as they arrive.
    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        let (file, _) = snapshot::incoming_file(&self.store).map_err(write_err)?;
        Ok(Box::new(tokio::fs::File::from_std(file)))
    }

    /// Installs on a blocking thread, so the async runtime's threads go
    /// on serving (Raft's heartbeats among them); while the state is
    /// replaced, [`SharedState::try_read`] says so instead of waiting.
    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, openraft::BasicNode>,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError> {
        let this = self.handle();
        let meta = meta.clone();
        let file = snapshot.into_std().await;
        tokio::task::spawn_blocking(move || this.install(&meta, file))
            .await
            .map_err(write_err)?
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        self.stored_snapshot().await
    }
}

/// This process's resident memory in MB, for the log (0 if unknown).
fn resident_mb() -> u64 {
    crate::memory::resident_bytes().map_or(0, |b| b >> 20)
}

#[cfg(test)]
mod tests {
    use super::{room_to_install, Behind, CATCHING_UP_ENTRIES, CATCHING_UP_QUIET};

    /// A build that waited its longest does not make the next ones wait
    /// until an append finds the node in step: a leader that keeps a node
    /// behind, or says it does, cannot put off every build.
    #[test]
    fn builds_wait_again_only_once_the_node_was_in_step() {
        let mut behind = Behind::default();
        assert_eq!(behind.catching_up(), None);
        behind.note(CATCHING_UP_ENTRIES);
        assert_eq!(behind.catching_up(), None, "in step");
        behind.note(CATCHING_UP_ENTRIES + 1);
        let left = behind.catching_up().expect("behind");
        assert!(left <= CATCHING_UP_QUIET, "{left:?}");
        behind.at = std::time::Instant::now().checked_sub(CATCHING_UP_QUIET * 2);
        assert!(
            behind.catching_up().is_some(),
            "the last append left it far behind, however long ago"
        );
        behind.note(CATCHING_UP_ENTRIES);
        assert_eq!(behind.catching_up(), None, "in step, and not lately behind");
        behind.note(CATCHING_UP_ENTRIES + 1);
        behind.note(CATCHING_UP_ENTRIES);
        assert!(
            behind.catching_up().is_some_and(|l| l <= CATCHING_UP_QUIET),
            "in step, but far behind lately"
        );
        behind.note(CATCHING_UP_ENTRIES + 1);
        behind.waited_out = true;
        assert_eq!(behind.catching_up(), None, "a build waited its longest");
        behind.note(u64::MAX);
        assert_eq!(behind.catching_up(), None, "still behind: no wait again");
        behind.note(0);
        behind.note(CATCHING_UP_ENTRIES + 1);
        assert!(
            behind.catching_up().is_some(),
            "in step once since: builds wait again"
        );
    }

    #[test]
    fn an_install_needs_room_for_the_state_written_anew() {
        const MB: u64 = 1 << 20;
        assert!(room_to_install(125 * MB, 100 * MB).is_ok());
        let e = room_to_install(120 * MB, 100 * MB).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::StorageFull);
        let e = e.to_string();
        assert!(
            e.contains("of 100 MB needs about 125 MB") && e.contains("120 MB are free"),
            "{e}"
        );
        assert!(
            room_to_install(u64::MAX - 1, u64::MAX).is_err(),
            "no overflow"
        );
    }
}
