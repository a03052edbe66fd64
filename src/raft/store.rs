//! The node's sled database: trees, typed keys, and durable flushes.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use openraft::{ErrorSubject, ErrorVerb};

use super::StorageError;
use serde::de::DeserializeOwned;

use crate::codec::{decode, encode_seq};
use crate::ledger::{AccountId, Transfer, TransferId};
use crate::stats::Histogram;

/// sled's page cache. The ledger keeps its hot state (accounts, pending
/// transfers, the transfer index) in memory; sled's cache serves history
/// and block reads, and the history and account records a block rewrites.
/// Transfers spread over 10,000 accounts touch pages all over the tree:
/// there 64 MiB gave 37% more throughput than 16 MiB for 27% less CPU,
/// and 256 MiB no more throughput for 300 MB more memory. 48 MiB runs as
/// fast as 64, there and between two accounts, and holds less: at most
/// 250 MB per node against 306 and 324 in a million transfers over
/// 10,000 accounts, and 25-35 MB less on a follower catching up at 8
/// million between two (BENCHMARKS.md, "sled's cache at 48 MiB"); 32 MiB
/// ran about 7% slower over 10,000 accounts.
pub const SLED_CACHE_BYTES: u64 = 48 * 1024 * 1024;

/// The sled trees of a node.
#[derive(Clone)]
pub struct Store {
    pub db: sled::Db,
    /// Raft log entries by index.
    pub log: sled::Tree,
    /// Vote, purge marker, committed index.
    pub raft: sled::Tree,
    /// Ledger state and apply progress, by [`StateKey`].
    pub state: sled::Tree,
    /// The current snapshot's metadata and file name; its data is a file
    /// in `snapshots` (a sled value that large would stay in memory).
    pub snapshot: sled::Tree,
    /// The folder of snapshot files.
    pub snapshots: PathBuf,
    /// The folder of snapshot files being received or built: complete
    /// ones move to `snapshots`; whatever is here when the node starts is
    /// left over from before and removed.
    pub snapshots_incoming: PathBuf,
    pub durable: Durable,
}

/// Key, in the `raft` tree, of the SHA-256 of the genesis file the data
/// directory was made with.
const GENESIS_KEY: &[u8] = b"genesis";

impl Store {
    /// Binds the data directory to the genesis file whose SHA-256 is
    /// `hash`: recorded on the first start; afterwards the recorded hash
    /// if it is another one.
    pub fn bind_genesis(&self, hash: &str) -> io::Result<Option<String>> {
        match self.raft.get(GENESIS_KEY).map_err(io::Error::other)? {
            Some(made_with) if made_with.as_ref() == hash.as_bytes() => Ok(None),
            Some(made_with) => Ok(Some(String::from_utf8_lossy(&made_with).into_owned())),
            None => {
                (self.raft)
                    .insert(GENESIS_KEY, hash.as_bytes())
                    .map_err(io::Error::other)?;
                self.durable.sync()?;
                Ok(None)
            }
        }
    }

    pub fn open(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(SLED_CACHE_BYTES)
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(io::Error::other)?;
        check_format(&db)?;
        let tree = |name: &str| db.open_tree(name).map_err(io::Error::other);
        Ok(Self {
            log: tree("log")?,
            raft: tree("raft")?,
            state: tree("state")?,
            snapshot: tree("snapshot")?,
            snapshots: dir.join("snapshots"),
            snapshots_incoming: dir.join("snapshots-incoming"),
            durable: Durable::new(dir, &db)?,
            db,
        })
    }
}

/// The encoding of everything stored (see [`crate::codec`]), kept in the
/// default tree: a data dir written in another is refused, not misread.
/// Format 9 stores a large log entry in pieces (`log_store::PIECE_BYTES`).
pub const FORMAT: &str = "alliance-postcard-9";

/// The format before [`FORMAT`], which this alliance reads as it is (its
/// log entries are whole) and marks as [`FORMAT`] at open: an alliance
/// that reads only format 8 then refuses the data dir instead of
/// misreading the log's pieces.
const FORMAT_BEFORE: &str = "alliance-postcard-8";

const FORMAT_KEY: &[u8] = b"format";

fn check_format(db: &sled::Db) -> io::Result<()> {
    let found = db.get(FORMAT_KEY).map_err(io::Error::other)?;
    match found {
        Some(f) if *f == *FORMAT.as_bytes() => Ok(()),
        Some(f) if *f == *FORMAT_BEFORE.as_bytes() => {
            db.insert(FORMAT_KEY, FORMAT.as_bytes())
                .map_err(io::Error::other)?;
            Ok(())
        }
        Some(f) => Err(io::Error::other(format!(
            "this data dir is in format {:?}; this alliance reads {FORMAT:?}",
            String::from_utf8_lossy(&f)
        ))),
        None => {
            for name in db.tree_names() {
                let tree = db.open_tree(&name).map_err(io::Error::other)?;
                if !tree.is_empty() {
                    return Err(io::Error::other(format!(
                        "this data dir was written by an earlier alliance (JSON records); \
                         this one reads {FORMAT:?} and cannot convert it: run the earlier \
                         version, or start the consortium anew"
                    )));
                }
            }
            db.insert(FORMAT_KEY, FORMAT.as_bytes())
                .map_err(io::Error::other)?;
            Ok(())
        }
    }
}

/// Makes sled's writes durable: flush, then `fdatasync` the files that hold
/// them (the main file and any blob files).
#[derive(Clone)]
pub struct Durable {
    db: sled::Db,
    file: Arc<File>,
    blobs: PathBuf,
    /// Counts writes handed to [`Self::sync_after`]: each gets the next
    /// number, taken after the write.
    issued: Arc<AtomicU64>,
    /// Serializes syncs (a sync that waited covers the writes before it).
    synced: Arc<Mutex<Synced>>,
    /// How long each flush and fdatasync took, in microseconds.
    pub sync_us: Arc<Histogram>,
}

/// What the syncs so far have made durable.
#[derive(Default)]
pub(super) struct Synced {
    /// Blob files already synced. sled writes a blob once and never changes
    /// it, so each needs one fsync.
    blobs: HashSet<OsString>,
    /// Every write numbered up to this one is on disk: the last sync began
    /// after it.
    upto: u64,
    /// Syncs done (flush and fdatasync), for tests.
    done: u64,
    /// The first sync's failure. Every later sync fails with it: after a
    /// failed fsync Linux may report the next one as a success although the
    /// lost pages never reached the disk, and a later append's success must
    /// not count an earlier, failed one as durable.
    failed: Option<(io::ErrorKind, String)>,
}

impl Synced {
    /// Every write numbered up to this one is on disk.
    #[cfg(test)]
    pub fn upto(&self) -> u64 {
        self.upto
    }

    /// The first sync's failure, if one failed: every later sync fails
    /// with it.
    pub(super) fn failure(&self) -> Option<io::Error> {
        let (kind, e) = self.failed.as_ref()?;
        Some(io::Error::new(
            *kind,
            format!("an earlier sync failed: {e}"),
        ))
    }

    /// Records a sync's `result`; `covers` is the last write number issued
    /// when it began.
    pub(super) fn record(&mut self, result: io::Result<()>, covers: u64) -> io::Result<()> {
        match result {
            Ok(()) => {
                self.upto = self.upto.max(covers);
                self.done += 1;
                Ok(())
            }
            Err(e) => {
                self.failed = Some((e.kind(), e.to_string()));
                Err(e)
            }
        }
    }
}

impl Durable {
    fn new(dir: &Path, db: &sled::Db) -> io::Result<Self> {
        Ok(Self {
            db: db.clone(),
            file: Arc::new(File::open(dir.join("db"))?),
            blobs: dir.join("blobs"),
            issued: Arc::default(),
            synced: Arc::default(),
            sync_us: Arc::new(Histogram::latency()),
        })
    }

    /// Blocks until every write issued before the call is on disk.
    pub fn sync(&self) -> io::Result<()> {
        self.sync_inner(None)
    }

    /// Numbers a write that has been issued, for [`Self::sync_after`].
    pub fn issued(&self) -> u64 {
        self.issued.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Blocks until write number `n` (from [`Self::issued`]) is on disk;
    /// returns at once if a sync that began after it has finished. So many
    /// writes waiting together share one sync.
    pub fn sync_after(&self, n: u64) -> io::Result<()> {
        self.sync_inner(Some(n))
    }

    /// Syncs unless write number `after` is known to be on disk already.
    fn sync_inner(&self, after: Option<u64>) -> io::Result<()> {
        let mut synced = self.synced.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = synced.failure() {
            return Err(e);
        }
        if after.is_some_and(|n| synced.upto >= n) {
            return Ok(());
        }
        let covers = self.issued.load(Ordering::Acquire);
        let started = std::time::Instant::now();
        let result = self.flush_and_sync(&mut synced.blobs);
        self.sync_us.observe_duration(started.elapsed());
        synced.record(result, covers)
    }

    fn flush_and_sync(&self, synced_blobs: &mut HashSet<OsString>) -> io::Result<()> {
        self.db.flush().map_err(io::Error::other)?;
        self.file.sync_data()?;
        // Large values live in blob files, which sled writes without syncing.
        if let Ok(entries) = std::fs::read_dir(&self.blobs) {
            let names = entries
                .map(|e| e.map(|e| e.file_name()))
                .collect::<io::Result<Vec<_>>>()?;
            sync_blobs(&self.blobs, names, synced_blobs)?;
        }
        Ok(())
    }

    /// Syncs done so far.
    #[cfg(test)]
    pub fn syncs_done(&self) -> u64 {
        self.synced.lock().unwrap_or_else(|p| p.into_inner()).done
    }

    /// [`Self::sync`] off the async runtime's threads.
    pub async fn sync_async(&self) -> io::Result<()> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.sync())
            .await
            .map_err(io::Error::other)?
    }
}

/// fsyncs the listed blob files not synced before, then the folder if any
/// was new; `synced` becomes the set of names present. A listed file that is
/// gone was removed by sled after the listing: nothing to sync.
pub fn sync_blobs(
    dir: &Path,
    listed: Vec<OsString>,
    synced: &mut HashSet<OsString>,
) -> io::Result<()> {
    let mut present = HashSet::new();
    let mut new_blobs = false;
    for name in listed {
        if !synced.contains(&name) {
            match File::open(dir.join(&name)) {
                Ok(blob) => blob.sync_data()?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
            new_blobs = true;
        }
        present.insert(name);
    }
    if new_blobs {
        File::open(dir)?.sync_all()?;
    }
    // Forget blobs sled has removed, so the set stays as small as the folder.
    *synced = present;
    Ok(())
}

/// Keys of the `state` tree: a tag byte, then the id, so each kind scans in
/// order on its own.
pub enum StateKey<'a> {
    LastApplied,
    Membership,
    Account(&'a AccountId),
    /// The transfer records block `height` created or changed, each as the
    /// block left it, in chunks numbered from 0 (see [`chunks`]): a
    /// transfer's latest version is in the highest block that holds it.
    /// Chunks of many records, not a key per transfer: sled's cost (memory
    /// and CPU) grows with its number of keys.
    Transfers(u64, u32),
    Rejected(&'a TransferId),
    Clock,
    /// The last block's header.
    Head,
    /// The governance state ([`crate::ledger::Gov`]), whole.
    Gov,
    /// Set while a snapshot replaces the state (in several batches, to
    /// bound memory), with the snapshot's last log id: found at start,
    /// the install is done again from the stored snapshot.
    Installing,
    /// A block's header, by height (big-endian).
    Block(u64),
    /// A block's leaf hashes, by height, in chunks numbered from 0 (a
    /// block without leaves has one empty chunk). The leaves' JSON is not
    /// stored: a transfer's leaf is its record as its block left it (see
    /// [`crate::ledger::transfer_leaf`]).
    LeafHashes(u64, u32),
    /// A block's [`crate::ledger::Blinding`], by height: each leaf's blind
    /// is derived from it (see [`crate::ledger::chain::leaf_blind`]). Not
    /// part of the header, which is public.
    Blinding(u64),
    /// A pending transfer's record, as its block stored it, while it is
    /// pending: what a node loads at start. Derived from the blocks'
    /// transfer records.
    Pending(&'a TransferId),
    /// Number of transfers ever made. Derived, as `Pending`.
    TransferCount,
    /// The height of the last block the derived keys (`Pending`,
    /// `TransferCount`) cover, written with every block: a state where it
    /// is not the head's (written before they existed, or by an earlier
    /// alliance since) has them derived again at start.
    Indexed,
    /// The transfer index's manifest: its runs, whose chunks and filters
    /// lie under [`RUN_TAG`] and [`FILTER_TAG`] (see
    /// `state_machine::index`).
    IndexRuns,
    /// A block's history items, by height, in chunks numbered from 0 (see
    /// [`chunks`]): each account's items of the block are consecutive.
    /// Accounts find theirs through their pages (see
    /// `state_machine::history`).
    HistoryChunk(u64, u32),
    /// A full page of an account's history runs (where its items are),
    /// keyed by its first item's sequence: the id, a 0 byte (ids have
    /// none), then the big-endian sequence, so one account's pages scan in
    /// order.
    HistoryPage(&'a AccountId, u64),
    /// An account's last page, not yet full, as of [`Self::TailsStored`].
    HistoryTail(&'a AccountId),
    /// The height of the last block the stored history tails cover (0
    /// when absent): the tails are stored every few blocks, and the runs
    /// of the blocks after it are read again at start (see
    /// `state_machine::history`).
    TailsStored,
    /// The runs a block added to the accounts' tails, by height, in chunks
    /// numbered from 0; kept only for the blocks after
    /// [`Self::TailsStored`].
    HistoryRuns(u64, u32),
}

pub const ACCOUNT_TAG: u8 = 0x10;
pub const TRANSFERS_TAG: u8 = 0x20;
pub const REJECTED_TAG: u8 = 0x30;
pub const HISTORY_TAG: u8 = 0x40;
pub const HISTORY_RUNS_TAG: u8 = 0x41;
pub const HISTORY_PAGE_TAG: u8 = 0x42;
pub const HISTORY_TAIL_TAG: u8 = 0x43;
pub const BLOCK_TAG: u8 = 0x50;
pub const LEAF_HASHES_TAG: u8 = 0x51;
pub const BLINDING_TAG: u8 = 0x52;
pub const PENDING_TAG: u8 = 0x61;
/// A transfer index run's chunks: the tag, the run's number (big-endian),
/// the chunk's first id.
pub const RUN_TAG: u8 = 0x62;
/// A transfer index run's filter: the tag, the run's number, the piece's
/// number (both big-endian).
pub const FILTER_TAG: u8 = 0x63;

impl StateKey<'_> {
    pub fn encode(&self) -> Vec<u8> {
        let (tag, id) = match self {
            Self::HistoryRuns(h, n) => {
                return suffixed(Self::height_prefix(HISTORY_RUNS_TAG, *h), &n.to_be_bytes())
            }
            Self::HistoryChunk(h, n) => {
                return suffixed(Self::height_prefix(HISTORY_TAG, *h), &n.to_be_bytes())
            }
            Self::HistoryPage(id, seq) => {
                return suffixed(
                    Self::account_prefix(HISTORY_PAGE_TAG, id),
                    &seq.to_be_bytes(),
                )
            }
            Self::Transfers(h, n) => {
                return suffixed(Self::height_prefix(TRANSFERS_TAG, *h), &n.to_be_bytes())
            }
            Self::Block(h) => return Self::height_prefix(BLOCK_TAG, *h),
            Self::LeafHashes(h, n) => {
                return suffixed(Self::height_prefix(LEAF_HASHES_TAG, *h), &n.to_be_bytes())
            }
            Self::Blinding(h) => return Self::height_prefix(BLINDING_TAG, *h),
            Self::LastApplied => (0x01, ""),
            Self::Membership => (0x02, ""),
            Self::Clock => (0x04, ""),
            Self::Head => (0x05, ""),
            Self::Gov => (0x06, ""),
            Self::Installing => (0x07, ""),
            Self::TransferCount => (0x08, ""),
            Self::Indexed => (0x09, ""),
            Self::IndexRuns => (0x0a, ""),
            Self::TailsStored => (0x0b, ""),
            Self::Pending(id) => (PENDING_TAG, id.as_str()),
            Self::Account(id) => (ACCOUNT_TAG, id.as_str()),
            Self::Rejected(id) => (REJECTED_TAG, id.as_str()),
            Self::HistoryTail(id) => (HISTORY_TAIL_TAG, id.as_str()),
        };
        let mut key = Vec::with_capacity(1 + id.len());
        key.push(tag);
        key.extend_from_slice(id.as_bytes());
        key
    }

    /// The prefix under which all chunks of block `height`'s records of
    /// kind `tag` lie.
    pub fn height_prefix(tag: u8, height: u64) -> Vec<u8> {
        [&[tag][..], &height.to_be_bytes()].concat()
    }

    /// The prefix under which all of `account`'s keys of kind `tag` lie.
    pub fn account_prefix(tag: u8, account: &AccountId) -> Vec<u8> {
        let mut key = Vec::with_capacity(2 + account.as_str().len() + 8);
        key.push(tag);
        key.extend_from_slice(account.as_str().as_bytes());
        key.push(0);
        key
    }
}

/// `prefix` followed by `suffix`: a key of a prefix-scanned kind.
fn suffixed(mut prefix: Vec<u8>, suffix: &[u8]) -> Vec<u8> {
    prefix.extend_from_slice(suffix);
    prefix
}

/// Most bytes of records stored under one key (a chunk holds at least
/// one record, so it may exceed this by one record).
///
/// sled 0.34 writes a tree node larger than a quarter of its 512 KiB
/// segment as a blob file, and counts such a node against its cache by the
/// size of its pointer: a node of large values is never evicted, and the
/// node's memory grows with the data stored (measured: 500 KB values kept
/// all 600 MB written resident; 4 and 8 KiB values stayed within the
/// cache). A node splits past 16 items, so values of 4 KiB keep nodes
/// inline and the cache bounds sled's memory.
pub const CHUNK_BYTES: usize = 4096;

/// Groups consecutive encoded records into chunks of about
/// [`CHUNK_BYTES`]: (position of the chunk's first record, the chunk as
/// an encoded sequence). No records make one empty chunk.
pub fn chunks<B: AsRef<[u8]>>(records: &[B]) -> Vec<(usize, Vec<u8>)> {
    let mut out = Vec::new();
    let mut first = 0;
    let mut bytes = 0;
    for (i, r) in records.iter().enumerate() {
        if i > first && bytes + r.as_ref().len() > CHUNK_BYTES {
            out.push((first, encode_seq(&records[first..i])));
            (first, bytes) = (i, 0);
        }
        bytes += r.as_ref().len();
    }
    if first < records.len() || out.is_empty() {
        out.push((first, encode_seq(&records[first..])));
    }
    out
}

/// The records of all chunks under `prefix`, in order; `None` if there is
/// no chunk.
pub fn read_chunks<T: DeserializeOwned>(
    state: &sled::Tree,
    prefix: &[u8],
) -> io::Result<Option<Vec<T>>> {
    let mut records = None;
    for kv in state.scan_prefix(prefix) {
        let (key, value) = kv.map_err(io::Error::other)?;
        let chunk: Vec<T> = decode(&value)
            .map_err(|e| io::Error::other(format!("the chunk at key {key:?}: {e}")))?;
        records.get_or_insert_with(Vec::new).extend(chunk);
    }
    Ok(records)
}

/// Calls `f` with each block's height and transfer records, in height
/// order: one block decoded at a time.
pub fn for_each_transfer_block(
    state: &sled::Tree,
    f: impl FnMut(u64, Vec<Transfer>),
) -> io::Result<()> {
    for_each_transfer_block_from(state, 0, f)
}

/// [`for_each_transfer_block`] from height `from` on.
pub fn for_each_transfer_block_from(
    state: &sled::Tree,
    from: u64,
    mut f: impl FnMut(u64, Vec<Transfer>),
) -> io::Result<()> {
    let mut block: Option<(u64, Vec<Transfer>)> = None;
    let start = StateKey::height_prefix(TRANSFERS_TAG, from);
    for kv in state.range(start..[TRANSFERS_TAG + 1].to_vec()) {
        let (key, value) = kv.map_err(io::Error::other)?;
        let (height, chunk) = transfers_chunk(&key, &value)?;
        match &mut block {
            Some((h, records)) if *h == height => records.extend(chunk),
            _ => {
                if let Some((h, records)) = block.replace((height, chunk)) {
                    f(h, records);
                }
            }
        }
    }
    if let Some((h, records)) = block {
        f(h, records);
    }
    Ok(())
}

/// The height of the block whose transfer records are under `key`.
pub fn transfers_height(key: &[u8]) -> io::Result<u64> {
    key_height(key)
        .ok_or_else(|| io::Error::other(format!("a transfers key of {} bytes", key.len())))
}

/// The height in a key made by [`StateKey::height_prefix`] (none: the key
/// is too short to hold one).
pub fn key_height(key: &[u8]) -> Option<u64> {
    key.get(1..9)
        .and_then(|h| <[u8; 8]>::try_from(h).ok())
        .map(u64::from_be_bytes)
}

/// A chunk of a block's transfer records ([`StateKey::Transfers`]): the
/// block's height and the records.
pub fn transfers_chunk(key: &[u8], value: &[u8]) -> io::Result<(u64, Vec<Transfer>)> {
    let height = transfers_height(key)?;
    let chunk =
        decode(value).map_err(|e| io::Error::other(format!("transfers of block {height}: {e}")))?;
    Ok((height, chunk))
}

/// Every stored transfer at its latest version: the blocks' transfer
/// records replayed in height order, a later version replacing an earlier.
#[cfg(test)]
pub fn stored_transfers(
    state: &sled::Tree,
) -> io::Result<std::collections::BTreeMap<TransferId, Transfer>> {
    let mut transfers = std::collections::BTreeMap::new();
    for_each_transfer_block(state, |_, block| {
        transfers.extend(block.into_iter().map(|t| (t.id.clone(), t)));
    })?;
    Ok(transfers)
}

/// Log keys: big-endian so that sled orders them by index.
pub fn log_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// A storage failure, as openraft wants it (fatal to the node), keeping
/// the failure as its source.
pub fn storage_err(
    subject: ErrorSubject<u64>,
    verb: ErrorVerb,
    e: impl std::error::Error + Send + Sync + 'static,
) -> StorageError {
    StorageError::from_io_error(subject, verb, io::Error::other(e))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    /// Keys of three families, one of them longer than what sled keeps
    /// inline (22 bytes), numbered so that many fall in one leaf.
    fn key(family: u8, n: u16) -> Vec<u8> {
        let prefix: &[u8] = match family % 3 {
            0 => b"a",
            1 => b"b.account-with-a-long-name",
            _ => b"c",
        };
        [prefix, &n.to_be_bytes()].concat()
    }

    fn value(n: u16, len: usize) -> Vec<u8> {
        let mut v = n.to_be_bytes().repeat(len / 2 + 1);
        v.truncate(len);
        v
    }

    type Model = BTreeMap<Vec<u8>, Vec<u8>>;

    fn apply(tree: &sled::Tree, model: &mut Model, writes: &[(Vec<u8>, Option<Vec<u8>>)]) {
        let mut batch = sled::Batch::default();
        for (k, v) in writes {
            match v {
                Some(v) => {
                    batch.insert(k.clone(), v.clone());
                    model.insert(k.clone(), v.clone());
                }
                None => {
                    batch.remove(k.clone());
                    model.remove(k);
                }
            }
        }
        tree.apply_batch(batch).unwrap();
    }

    fn assert_holds(tree: &sled::Tree, model: &Model) {
        let stored: Model = tree
            .iter()
            .map(|kv| kv.map(|(k, v)| (k.to_vec(), v.to_vec())).unwrap())
            .collect();
        assert_eq!(stored.len(), model.len());
        assert!(stored == *model, "the tree differs from what was written");
        for (k, v) in model.iter().step_by(7) {
            assert_eq!(tree.get(k).unwrap().as_deref(), Some(&v[..]));
        }
    }

    /// A new sled database in `dir`, and its tree `t`.
    fn opened(dir: &std::path::Path) -> (sled::Db, sled::Tree) {
        let db = sled::Config::new().path(dir).open().unwrap();
        let tree = db.open_tree("t").unwrap();
        (db, tree)
    }

    fn reopened(dir: &std::path::Path, db: sled::Db, tree: sled::Tree) -> (sled::Db, sled::Tree) {
        db.flush().unwrap();
        drop((db, tree));
        let db =
            super::super::tests::once_unlocked(|| sled::Config::new().path(dir).open()).unwrap();
        let tree = db.open_tree("t").unwrap();
        (db, tree)
    }

    /// sled applies a batch's writes that fall in one leaf to one copy of
    /// it (vendor/README.md, sled change 7): 12,000 new keys in one batch
    /// (linked one at a time, splitting leaves as they fill), every key
    /// changed in the next (whole leaves at a time), half removed in a
    /// third, and all of it read back after a reopen, which replays the
    /// log.
    #[test]
    fn large_batches_read_back_before_and_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (db, tree) = opened(dir.path());
        let mut model = Model::new();
        let all: Vec<_> = (0..3u8)
            .flat_map(|f| (0..4000u16).map(move |n| (f, n)))
            .collect();
        let fill: Vec<_> = all
            .iter()
            .map(|&(f, n)| (key(f, n), Some(value(n, 40))))
            .collect();
        apply(&tree, &mut model, &fill);
        assert_holds(&tree, &model);
        let change: Vec<_> = all
            .iter()
            .map(|&(f, n)| (key(f, n), Some(value(n + 1, 90))))
            .collect();
        apply(&tree, &mut model, &change);
        let remove: Vec<_> = all
            .iter()
            .filter(|(_, n)| n % 2 == 0)
            .map(|&(f, n)| (key(f, n), None))
            .collect();
        apply(&tree, &mut model, &remove);
        assert_holds(&tree, &model);
        let (_db, tree) = reopened(dir.path(), db, tree);
        assert_holds(&tree, &model);
    }

    /// sled reuses the space that rewritten pages free and moves no page
    /// only to shrink its file (vendor/README.md, sled change 8): keys
    /// rewritten by every batch beside values appended once, as a node's
    /// blocks do, each batch flushed as a node syncs each append. The
    /// file stays within 2.5 times what is stored (sled cleans a segment
    /// once half of it is stale), though 3.5 times that was written, and
    /// reads back after a reopen. (sled cleans or frees a segment only
    /// once the log past it is on disk: without a flush per batch, that
    /// waits for its background flush every 500 ms, and how far the file
    /// grows meanwhile depends on the machine's load.)
    #[test]
    fn space_freed_by_rewrites_is_reused() {
        let dir = tempfile::tempdir().unwrap();
        let (db, tree) = opened(dir.path());
        let mut model = Model::new();
        let mut written = 0;
        for round in 0..200u16 {
            let hot = (0..1000).map(|n| (key(0, n), Some(value(round, 100))));
            let cold = (0..10).map(|n| (key(2, round * 10 + n), Some(value(n, 4000))));
            let writes: Vec<_> = hot.chain(cold).collect();
            written += writes
                .iter()
                .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len))
                .sum::<usize>();
            apply(&tree, &mut model, &writes);
            db.flush().unwrap();
        }
        let stored: usize = model.iter().map(|(k, v)| k.len() + v.len()).sum();
        let on_disk = usize::try_from(db.size_on_disk().unwrap()).unwrap();
        assert!(written > 3 * stored);
        assert!(
            on_disk * 2 < 5 * stored,
            "{on_disk} bytes on disk for {stored} stored ({written} written)"
        );
        assert_holds(&tree, &model);
        let (_db, tree) = reopened(dir.path(), db, tree);
        assert_holds(&tree, &model);
    }

    /// (family, number, what to write: none removes, else a value's length)
    fn write() -> impl Strategy<Value = (u8, u16, Option<usize>)> {
        (
            0u8..3,
            0u16..300,
            prop_oneof![
                3 => proptest::option::of(0usize..120),
                1 => Just(Some(5000usize)),
            ],
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Random batches of sets, overwrites, no-op writes and removes
        /// leave the tree equal to a map given the same writes, before and
        /// after a reopen.
        #[test]
        fn batches_leave_the_tree_as_a_map_would_be(
            batches in proptest::collection::vec(proptest::collection::vec(write(), 1..400), 1..8)
        ) {
            let dir = tempfile::tempdir().unwrap();
            let (db, tree) = opened(dir.path());
            let mut model = Model::new();
            for batch in &batches {
                let writes: Vec<_> = batch
                    .iter()
                    .map(|&(f, n, len)| (key(f, n), len.map(|len| value(n, len))))
                    .collect();
                apply(&tree, &mut model, &writes);
                assert_holds(&tree, &model);
            }
            let (_db, tree) = reopened(dir.path(), db, tree);
            assert_holds(&tree, &model);
        }
    }
}
