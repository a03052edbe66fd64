//! The node's sled database: trees, typed keys, and durable flushes.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::{ErrorSubject, ErrorVerb};

use super::StorageError;
use crate::codec::decode;
use crate::ledger::{AccountId, Transfer, TransferId};

/// sled's page cache. Its default (1 GiB) dominated a node's memory; the
/// ledger keeps its hot state in memory anyway.
pub const SLED_CACHE_BYTES: u64 = 128 * 1024 * 1024;

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
    /// The current snapshot.
    pub snapshot: sled::Tree,
    pub durable: Durable,
}

impl Store {
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
            durable: Durable::new(dir, &db)?,
            db,
        })
    }
}

/// The encoding of everything stored (see [`crate::codec`]), kept in the
/// default tree: a data dir written in another is refused, not misread.
pub const FORMAT: &str = "alliance-postcard-3";

const FORMAT_KEY: &[u8] = b"format";

fn check_format(db: &sled::Db) -> io::Result<()> {
    let found = db.get(FORMAT_KEY).map_err(io::Error::other)?;
    match found {
        Some(f) if *f == *FORMAT.as_bytes() => Ok(()),
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
    /// Blob files already synced. sled writes a blob once and never changes
    /// it, so each needs one fsync; also serializes syncs (a sync that
    /// waited covers the writes before it).
    synced_blobs: Arc<Mutex<HashSet<OsString>>>,
}

impl Durable {
    fn new(dir: &Path, db: &sled::Db) -> io::Result<Self> {
        Ok(Self {
            db: db.clone(),
            file: Arc::new(File::open(dir.join("db"))?),
            blobs: dir.join("blobs"),
            synced_blobs: Arc::new(Mutex::new(HashSet::new())),
        })
    }

    /// Blocks until every write issued before the call is on disk.
    pub fn sync(&self) -> io::Result<()> {
        let mut synced = self.synced_blobs.lock().unwrap_or_else(|p| p.into_inner());
        self.db.flush().map_err(io::Error::other)?;
        self.file.sync_data()?;
        // Large values live in blob files, which sled writes without syncing.
        let Ok(entries) = std::fs::read_dir(&self.blobs) else {
            return Ok(());
        };
        let names = entries
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<Vec<_>>>()?;
        sync_blobs(&self.blobs, names, &mut synced)
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
    /// block left it: a transfer's latest version is in the highest block
    /// that holds it. One key per block, not per transfer: sled's cost
    /// (memory and CPU) grows with its number of keys.
    Transfers(u64),
    Rejected(&'a TransferId),
    Clock,
    /// The last block's header.
    Head,
    /// A block's header, by height (big-endian).
    Block(u64),
    /// A block's leaf hashes, by height. The leaves' JSON is not stored:
    /// a transfer's leaf is its record as its block left it (see
    /// [`crate::ledger::transfer_leaf`]).
    LeafHashes(u64),
    /// An account's history items from one block, a consecutive run, keyed
    /// by the run's first sequence: the id, a 0 byte (ids have none), then
    /// the big-endian sequence, so one account's runs scan in order.
    History(&'a AccountId, u64),
    /// Where an account's run of block `height` starts: the account's
    /// first sequence in that block, keyed like [`Self::History`] by
    /// height, so the history as of a height is one lookup.
    HistoryAt(&'a AccountId, u64),
}

pub const ACCOUNT_TAG: u8 = 0x10;
pub const TRANSFERS_TAG: u8 = 0x20;
pub const REJECTED_TAG: u8 = 0x30;
pub const HISTORY_TAG: u8 = 0x40;
pub const HISTORY_AT_TAG: u8 = 0x41;
pub const BLOCK_TAG: u8 = 0x50;
pub const LEAF_HASHES_TAG: u8 = 0x51;

impl StateKey<'_> {
    pub fn encode(&self) -> Vec<u8> {
        let (tag, id) = match self {
            Self::History(id, seq) => {
                return [
                    Self::account_prefix(HISTORY_TAG, id),
                    seq.to_be_bytes().to_vec(),
                ]
                .concat()
            }
            Self::HistoryAt(id, h) => {
                return [
                    Self::account_prefix(HISTORY_AT_TAG, id),
                    h.to_be_bytes().to_vec(),
                ]
                .concat()
            }
            Self::Transfers(h) => return [&[TRANSFERS_TAG][..], &h.to_be_bytes()].concat(),
            Self::Block(h) => return [&[BLOCK_TAG][..], &h.to_be_bytes()].concat(),
            Self::LeafHashes(h) => return [&[LEAF_HASHES_TAG][..], &h.to_be_bytes()].concat(),
            Self::LastApplied => (0x01, ""),
            Self::Membership => (0x02, ""),
            Self::Clock => (0x04, ""),
            Self::Head => (0x05, ""),
            Self::Account(id) => (ACCOUNT_TAG, id.as_str()),
            Self::Rejected(id) => (REJECTED_TAG, id.as_str()),
        };
        let mut key = Vec::with_capacity(1 + id.len());
        key.push(tag);
        key.extend_from_slice(id.as_bytes());
        key
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

/// Calls `f` with each block's height and transfer records, in height
/// order: one block decoded at a time.
pub fn for_each_transfer_block(
    state: &sled::Tree,
    mut f: impl FnMut(u64, Vec<Transfer>),
) -> io::Result<()> {
    for kv in state.scan_prefix([TRANSFERS_TAG]) {
        let (key, value) = kv.map_err(io::Error::other)?;
        let height = key
            .get(1..)
            .and_then(|h| <[u8; 8]>::try_from(h).ok())
            .map(u64::from_be_bytes)
            .ok_or_else(|| io::Error::other(format!("a transfers key of {} bytes", key.len())))?;
        let block: Vec<Transfer> = decode(&value)
            .map_err(|e| io::Error::other(format!("transfers of block {height}: {e}")))?;
        f(height, block);
    }
    Ok(())
}

/// Every stored transfer at its latest version: the blocks' transfer
/// records replayed in height order, a later version replacing an earlier.
pub fn stored_transfers(state: &sled::Tree) -> io::Result<BTreeMap<TransferId, Transfer>> {
    let mut transfers = BTreeMap::new();
    for_each_transfer_block(state, |_, block| {
        transfers.extend(block.into_iter().map(|t| (t.id.clone(), t)));
    })?;
    Ok(transfers)
}

/// Log keys: big-endian so that sled orders them by index.
pub fn log_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// A storage failure, as openraft wants it: fatal to the node.
pub fn storage_err(
    subject: ErrorSubject<u64>,
    verb: ErrorVerb,
    e: impl std::error::Error + 'static,
) -> StorageError {
    StorageError::from_io_error(subject, verb, io::Error::other(e.to_string()))
}
