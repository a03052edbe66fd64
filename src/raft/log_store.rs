//! The Raft log on sled: entries by big-endian index (a large one in
//! pieces, see [`PIECE_BYTES`]), plus vote, purge marker and committed
//! index. Nothing is acknowledged before it is synced
//! ([`super::store::Durable`]). An append returns once its entries are in
//! sled and reports their durability through openraft's callback: a leader
//! replicates its own entries meanwhile and counts itself towards a quorum
//! only then (the vendored openraft's one change); a follower answers only
//! then.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader, Vote};

use super::store::{log_key, storage_err, Store, CHUNK_BYTES};
use super::{LogId, StorageError, TypeConfig};
use crate::codec;

/// An entry whose encoding is larger than this is stored in pieces of
/// this size, under its index followed by the piece's number (u32,
/// big-endian), all in one atomic write; a smaller one whole, under its
/// index alone. sled writes a tree node larger than a quarter of its
/// segment as a file of its own, whole again at every consolidation and
/// split: a leaf of whole entries of batches (hundreds of KB each) is
/// such a file, and the files come to several times the entries' size.
/// Pieces keep the log's leaves as small as the state's (see
/// [`CHUNK_BYTES`]).
pub const PIECE_BYTES: usize = CHUNK_BYTES;

const VOTE_KEY: &[u8] = b"vote";
const PURGED_KEY: &[u8] = b"last_purged";
const COMMITTED_KEY: &[u8] = b"committed";

/// The log store; cheap to clone (sled trees are shared handles).
#[derive(Clone)]
pub struct LogStore {
    store: Store,
    committed: CommitIndex,
    recent: Arc<Mutex<Recent>>,
    /// Held by every read of entries from sled, and exclusively by every
    /// write to the log tree: sled applies a batch atomically for each
    /// step of an iterator, not across steps, and the pieces of one entry
    /// span several of them.
    entries: Arc<RwLock<()>>,
    /// The index after the last entry the log holds or purged (0: none):
    /// where the next append must start.
    next_index: Arc<AtomicU64>,
    /// Held by the removal of purged entries from sled, one at a time.
    removing: Arc<Mutex<()>>,
    /// Held by every handle of the log but those of purges' removals: once
    /// none is left the node is stopping, and a removal gives up.
    alive: Arc<()>,
}

/// How a removal of purged entries ended, with the keys it removed.
enum Removed {
    All(usize),
    /// Given up: the node is stopping.
    Stopped(usize),
}

/// Keys of the log (pieces of about 4 KiB, or whole small entries) that one
/// step of a purge's removal takes, rounded up to whole entries: each step
/// holds the log's write lock, which appends and the leader's reads for
/// replication wait for, so a step is small (BENCHMARKS.md, "The nodes
/// take turns building snapshots").
const PURGE_KEYS_PER_STEP: usize = 256;

/// Most entries, and most bytes of their stored encoding, kept in
/// [`Recent`]. A follower normally lags by a few entries; one entry may
/// carry a batch of thousands of transfers (about 70 bytes each encoded
/// with ids of 36 bytes, about four times that decoded: 2 MiB of encoding
/// hold about 8 MB).
pub const RECENT_ENTRIES_MAX: usize = 256;
pub const RECENT_BYTES_MAX: usize = 2 * 1024 * 1024;

/// Most bytes of stored entries that one append to a follower carries,
/// unless its first entry alone is larger: `raft.max_payload_entries` counts
/// entries, and an entry may hold a batch of thousands of transfers (about
/// 550 KB at 8,000 with ids of 36 bytes). A follower catching up is sent
/// appends back to back and holds each one decoded (about five times its
/// encoding) while it stores it: eight such entries would be about 22 MB of
/// it. At 2 MiB in all, an append carries three such entries, or more
/// smaller ones.
pub const APPEND_BYTES_MAX: usize = 2 * 1024 * 1024;

/// The last entries appended, as they were appended. The leader reads each
/// new entry once per follower to replicate it and once more to apply it;
/// from here those reads share it instead of decoding it from sled again.
/// A contiguous run of indexes: an append that does not follow it starts
/// it anew, and truncation and purges remove from it what they remove from
/// sled (before sled, so it never holds an entry sled no longer has).
#[derive(Default)]
struct Recent {
    entries: VecDeque<(Entry<TypeConfig>, usize)>,
    bytes: usize,
}

impl Recent {
    fn push(&mut self, entry: Entry<TypeConfig>, size: usize) {
        let next = self.entries.back().map(|(e, _)| e.log_id.index + 1);
        if next.is_some_and(|next| next != entry.log_id.index) {
            *self = Self::default();
        }
        self.entries.push_back((entry, size));
        self.bytes += size;
        while self.entries.len() > RECENT_ENTRIES_MAX || self.bytes > RECENT_BYTES_MAX {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        let (_, size) = self.entries.pop_front().expect("not empty");
        self.bytes -= size;
    }

    /// Forgets the entries from `index` on (a truncation).
    fn truncate(&mut self, index: u64) {
        while (self.entries.back()).is_some_and(|(e, _)| e.log_id.index >= index) {
            let (_, size) = self.entries.pop_back().expect("not empty");
            self.bytes -= size;
        }
    }

    /// Forgets the entries up to `index` (a purge).
    fn purge(&mut self, index: u64) {
        while (self.entries.front()).is_some_and(|(e, _)| e.log_id.index <= index) {
            self.pop_front();
        }
    }

    /// Entries `start..end` if all of them are here.
    fn get(&self, start: u64, end: Option<u64>) -> Option<Vec<Entry<TypeConfig>>> {
        self.get_within(start, end, usize::MAX)
    }

    /// The first of entries `start..end` whose sizes add up to at most
    /// `bytes_max` (the first one whatever its size), if all of `start..end`
    /// are here.
    fn get_within(
        &self,
        start: u64,
        end: Option<u64>,
        bytes_max: usize,
    ) -> Option<Vec<Entry<TypeConfig>>> {
        let first = self.entries.front()?.0.log_id.index;
        let after_last = first + self.entries.len() as u64;
        let end = end.unwrap_or(after_last);
        if start < first || end > after_last || start >= end {
            return None;
        }
        let range = (start - first) as usize..(end - first) as usize;
        let mut within = Within::new(bytes_max);
        Some(
            (self.entries.range(range))
                .take_while(|(_, size)| within.takes(*size))
                .map(|(e, _)| e.clone())
                .collect(),
        )
    }
}

/// Counts the sizes of the entries an answer takes, in log order: it takes
/// the first whatever its size, and each next one while the sum stays
/// within the bound.
struct Within {
    bytes: usize,
    bytes_max: usize,
}

impl Within {
    fn new(bytes_max: usize) -> Self {
        Self {
            bytes: 0,
            bytes_max,
        }
    }

    fn takes(&mut self, size: usize) -> bool {
        let first = self.bytes == 0;
        self.bytes = self.bytes.saturating_add(size.max(1));
        first || self.bytes <= self.bytes_max
    }
}

/// The latest commit index openraft reported to the store, for status.
#[derive(Clone, Default)]
pub struct CommitIndex(Arc<AtomicU64>);

impl CommitIndex {
    /// `None` until this node learns of a commit.
    pub fn get(&self) -> Option<u64> {
        match self.0.load(Ordering::Relaxed) {
            0 => None,
            n => Some(n - 1),
        }
    }

    fn set(&self, index: Option<u64>) {
        self.0.store(index.map_or(0, |i| i + 1), Ordering::Relaxed);
    }
}

impl LogStore {
    pub fn new(store: Store) -> Self {
        let last = store.log.last().ok().flatten();
        let last = last.and_then(|(k, _)| key_index(&k));
        let purged: Option<LogId> = store
            .raft
            .get(PURGED_KEY)
            .ok()
            .flatten()
            .and_then(|v| codec::decode(&v).ok());
        let last = last.max(purged.map(|p| p.index));
        Self {
            store,
            committed: CommitIndex::default(),
            recent: Default::default(),
            entries: Default::default(),
            next_index: Arc::new(AtomicU64::new(last.map_or(0, |l| l.saturating_add(1)))),
            removing: Default::default(),
            alive: Default::default(),
        }
    }

    /// Asserts that `entries` leave no hole in the log: each index one past
    /// the one before it, the first no further than where the log ends (or
    /// anywhere, on a log that never held an entry). openraft relies on a
    /// log without holes; a node whose log has one must stop.
    fn assert_continues(&self, entries: &[(Entry<TypeConfig>, usize)]) {
        let end = self.next_index.load(Ordering::Relaxed);
        let mut next = None;
        for (entry, _) in entries {
            let index = entry.log_id.index;
            let expected = next.unwrap_or(end);
            assert!(
                if next.is_some() {
                    index == expected
                } else {
                    end == 0 || index <= end
                },
                "a hole in the log: entry {index} appended where the log continues at {expected}"
            );
            next = Some(index + 1);
        }
        if let Some(next) = next {
            self.next_index.fetch_max(next, Ordering::Relaxed);
        }
    }

    pub fn commit_index(&self) -> CommitIndex {
        self.committed.clone()
    }

    fn get_meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
        subject: ErrorSubject<u64>,
    ) -> Result<Option<T>, StorageError> {
        let Some(bytes) = self
            .store
            .raft
            .get(key)
            .map_err(|e| storage_err(subject.clone(), ErrorVerb::Read, e))?
        else {
            return Ok(None);
        };
        codec::decode(&bytes)
            .map(Some)
            .map_err(|e| storage_err(subject, ErrorVerb::Read, e))
    }

    async fn sync(&self, subject: ErrorSubject<u64>) -> Result<(), StorageError> {
        self.store
            .durable
            .sync_async()
            .await
            .map_err(|e| StorageError::from_io_error(subject, ErrorVerb::Write, e))
    }

    fn decode(bytes: &[u8]) -> Result<Entry<TypeConfig>, StorageError> {
        codec::decode(bytes).map_err(|e| storage_err(ErrorSubject::Logs, ErrorVerb::Read, e))
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, Recent> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let recent_end = match range.end_bound() {
            Bound::Included(i) => Some(i.saturating_add(1)),
            Bound::Excluded(i) => Some(*i),
            Bound::Unbounded => None,
        };
        if let Some(entries) = self.recent().get(start, recent_end) {
            return Ok(entries);
        }
        // The pieces of the last entry sort after its index: the range
        // ends before the next index.
        let end = match range.end_bound() {
            Bound::Included(i) => i.checked_add(1).map(log_key),
            Bound::Excluded(i) => Some(log_key(*i)),
            Bound::Unbounded => None,
        };
        let end = end.map_or(Bound::Unbounded, Bound::Excluded);
        let mut entries = Vec::new();
        let range = (Bound::Included(log_key(start)), end);
        self.stored(range, |_| true, |entry| entries.push(entry))?;
        Ok(entries)
    }

    /// What openraft sends a follower in one append: entries from `start`,
    /// before `end`, at most [`APPEND_BYTES_MAX`] of their encoding (at
    /// least the first). openraft sends the rest in the next append.
    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError> {
        self.entries_within(start, end, APPEND_BYTES_MAX)
    }
}

impl LogStore {
    /// Entries `start..end`, the first of them whose stored sizes add up to
    /// at most `bytes_max` (at least the first).
    fn entries_within(
        &self,
        start: u64,
        end: u64,
        bytes_max: usize,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError> {
        if let Some(entries) = self.recent().get_within(start, Some(end), bytes_max) {
            return Ok(entries);
        }
        let mut within = Within::new(bytes_max);
        let mut entries = Vec::new();
        let range = log_key(start)..log_key(end);
        self.stored(
            range,
            |size| within.takes(size),
            |entry| entries.push(entry),
        )?;
        Ok(entries)
    }

    /// Stores `encoded` (the keys and values of entries `first..=last`)
    /// in one atomic write. Entries at indexes below `end` (where the log
    /// continued) replace what the log holds at those indexes: keys they
    /// do not overwrite (pieces of another size) are removed in the same
    /// write.
    fn write(
        &self,
        (first, last): (u64, u64),
        end: u64,
        encoded: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Result<(), StorageError> {
        let write_err = |e| storage_err(ErrorSubject::Logs, ErrorVerb::Write, e);
        let _writing = self.entries.write().unwrap_or_else(|p| p.into_inner());
        let replaced = if first < end {
            let to = last.checked_add(1).map(log_key);
            let to = to.map_or(Bound::Unbounded, Bound::Excluded);
            self.keys_in((Bound::Included(log_key(first)), to))?
        } else {
            Vec::new()
        };
        // One small entry is one insert, atomic on its own. A sled batch
        // costs two extra buffer writes (sled seals its write buffer before
        // and after a batch), so it is kept for writes of several keys.
        match <[_; 1]>::try_from(encoded) {
            Ok([(key, bytes)]) if replaced.is_empty() => {
                self.store.log.insert(key, bytes).map_err(write_err)?;
            }
            Ok(one) => self.write_batch(replaced, one.into())?,
            Err(encoded) => self.write_batch(replaced, encoded)?,
        }
        Ok(())
    }

    fn write_batch(
        &self,
        removed: Vec<sled::IVec>,
        inserted: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Result<(), StorageError> {
        let mut batch = sled::Batch::default();
        // Removals first: an insert of the same key replaces its removal.
        for key in removed {
            batch.remove(key);
        }
        for (key, bytes) in inserted {
            batch.insert(key, bytes);
        }
        (self.store.log.apply_batch(batch))
            .map_err(|e| storage_err(ErrorSubject::Logs, ErrorVerb::Write, e))
    }

    /// Calls `each` with every entry stored under `range` of keys, in
    /// order, while `takes` accepts the size of its encoding (asked before
    /// it is decoded). An entry whose pieces are not numbered from 0
    /// without a gap, that does not hold the index it is stored under, or
    /// that does not come after the one before it is a storage error.
    fn stored<R: RangeBounds<[u8; 8]>>(
        &self,
        range: R,
        mut takes: impl FnMut(usize) -> bool,
        mut each: impl FnMut(Entry<TypeConfig>),
    ) -> Result<(), StorageError> {
        let read_err = |e: String| storage_err(ErrorSubject::Logs, ErrorVerb::Read, io_err(e));
        let _reading = self.entries.read().unwrap_or_else(|p| p.into_inner());
        // The entry being put together from its pieces: index, pieces, bytes.
        let mut pieced: Option<(u64, u32, Vec<u8>)> = None;
        let mut previous: Option<u64> = None;
        // Whether to go on: false once `takes` refuses an entry.
        let mut finish = |index: u64, bytes: &[u8]| -> Result<bool, StorageError> {
            if previous.is_some_and(|p| p >= index) {
                return Err(read_err(format!("log entry {index} is stored twice")));
            }
            previous = Some(index);
            if !takes(bytes.len()) {
                return Ok(false);
            }
            let entry = Self::decode(bytes)?;
            if entry.log_id.index != index {
                return Err(read_err(format!(
                    "the log entry stored under index {index} is entry {}",
                    entry.log_id.index
                )));
            }
            each(entry);
            Ok(true)
        };
        for kv in self.store.log.range(range) {
            let (k, v) = kv.map_err(|e| storage_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
            let Some((index, piece)) = key_parts(&k) else {
                return Err(read_err(format!("a log key of {} bytes", k.len())));
            };
            match (&mut pieced, piece) {
                (Some((at, next, bytes)), Some(n)) if *at == index => {
                    if n != *next {
                        return Err(read_err(format!(
                            "log entry {index} lacks piece {next} (found {n})"
                        )));
                    }
                    *next += 1;
                    bytes.extend_from_slice(&v);
                    continue;
                }
                _ => {}
            }
            if let Some((at, _, bytes)) = pieced.take() {
                if !finish(at, &bytes)? {
                    return Ok(());
                }
            }
            match piece {
                None => {
                    if !finish(index, &v)? {
                        return Ok(());
                    }
                }
                Some(0) => pieced = Some((index, 1, v.to_vec())),
                Some(n) => {
                    return Err(read_err(format!(
                        "log entry {index} lacks piece 0 (found {n})"
                    )))
                }
            }
        }
        if let Some((at, _, bytes)) = pieced {
            finish(at, &bytes)?;
        }
        Ok(())
    }
}

/// The index a log key (an index, or an index and a piece number) is of.
fn key_index(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.get(..8)?.try_into().ok()?))
}

/// A log key's index and piece number (none: an entry stored whole).
fn key_parts(key: &[u8]) -> Option<(u64, Option<u32>)> {
    let index = key_index(key)?;
    match key.len() {
        8 => Some((index, None)),
        12 => Some((index, Some(u32::from_be_bytes(key[8..].try_into().ok()?)))),
        _ => None,
    }
}

/// The key of piece `n` of entry `index`.
fn piece_key(index: u64, n: u32) -> Vec<u8> {
    [&log_key(index)[..], &n.to_be_bytes()].concat()
}

fn io_err(e: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e)
}

/// The keys and values that store entry `index`'s encoding `bytes`: one
/// under the index if it is at most [`PIECE_BYTES`], else its pieces.
fn entry_pairs(index: u64, bytes: Vec<u8>) -> Vec<(Vec<u8>, Vec<u8>)> {
    if bytes.len() <= PIECE_BYTES {
        return vec![(log_key(index).to_vec(), bytes)];
    }
    (0u32..)
        .zip(bytes.chunks(PIECE_BYTES))
        .map(|(n, piece)| (piece_key(index, n), piece.to_vec()))
        .collect()
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId> = self.get_meta(PURGED_KEY, ErrorSubject::Logs)?;
        let last = self
            .store
            .log
            .last()
            .map_err(|e| storage_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
        let last_log_id = match last.and_then(|(k, _)| key_index(&k)) {
            Some(index) => {
                let (mut last, mut first) = (None, true);
                let only_first = |_| std::mem::take(&mut first);
                self.stored(log_key(index).., only_first, |e| last = Some(e.log_id))?;
                last
            }
            None => last_purged,
        };
        // Entries a purge has yet to remove from sled lie at or below its
        // marker (by index: a leftover entry may be of a later term).
        let last_log_id = match (last_log_id, last_purged) {
            (Some(last), Some(purged)) if last.index <= purged.index => Some(purged),
            (None, purged) => purged,
            (last, _) => last,
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError> {
        self.store
            .raft
            .insert(VOTE_KEY, codec::encode(vote))
            .map_err(|e| storage_err(ErrorSubject::Vote, ErrorVerb::Write, e))?;
        self.sync(ErrorSubject::Vote).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError> {
        self.get_meta(VOTE_KEY, ErrorSubject::Vote)
    }

    /// The committed index is a hint that lets a restarted node re-apply its
    /// log at once; it need not be synced (losing it only delays apply).
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.committed.set(committed.map(|l| l.index));
        self.store
            .raft
            .insert(COMMITTED_KEY, codec::encode(&committed))
            .map_err(|e| storage_err(ErrorSubject::Store, ErrorVerb::Write, e))?;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        let committed = self
            .get_meta::<Option<LogId>>(COMMITTED_KEY, ErrorSubject::Store)?
            .flatten();
        // Known from the start: readiness and the truncation check use it.
        self.committed.set(committed.map(|l| l.index));
        Ok(committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut encoded = Vec::new();
        let mut appended = Vec::new();
        for entry in entries {
            let bytes = codec::encode(&entry);
            appended.push((entry.clone(), bytes.len()));
            encoded.extend(entry_pairs(entry.log_id.index, bytes));
        }
        let end = self.next_index.load(Ordering::Relaxed);
        self.assert_continues(&appended);
        if let (Some((first, _)), Some((last, _))) = (appended.first(), appended.last()) {
            self.write((first.log_id.index, last.log_id.index), end, encoded)?;
        }
        {
            let mut recent = self.recent();
            for (entry, size) in appended {
                recent.push(entry, size);
            }
        }

        // Submitted: the callback reports when it is durable. openraft
        // (patched, see vendor/README.md) replicates a leader's own entries
        // meanwhile and counts them only then; a follower waits for it.
        let durable = self.store.durable.clone();
        let n = durable.issued();
        tokio::task::spawn_blocking(move || callback.log_io_completed(durable.sync_after(n)));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let committed = self.committed.get();
        assert!(
            committed.is_none_or(|c| log_id.index > c),
            "log truncation from entry {} would remove committed entries (committed: {committed:?})",
            log_id.index
        );
        self.next_index.store(log_id.index, Ordering::Relaxed);
        self.recent().truncate(log_id.index);
        self.remove_range(log_key(log_id.index)..)?;
        self.sync(ErrorSubject::Logs).await
    }

    /// Writes the purge marker and returns once it is durable; the purged
    /// entries leave sled behind it, a bounded step at a time
    /// ([`Self::remove_below`]). openraft awaits a purge on the task that
    /// also sends heartbeats and answers clients, and a purge after a
    /// snapshot can cover thousands of entries of a batch each (hundreds of
    /// MB): removed inline, it held that task, and the log's write lock,
    /// for as long as sled took to read and remove them all. What the
    /// marker covers is purged whether or not it is still on sled: no read
    /// asks for it, get_log_state and a restart go by the marker, and the
    /// next purge removes what a stop left.
    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.store
            .raft
            .insert(PURGED_KEY, codec::encode(&log_id))
            .map_err(|e| storage_err(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        self.recent().purge(log_id.index);
        self.next_index
            .fetch_max(log_id.index.saturating_add(1), Ordering::Relaxed);
        self.sync(ErrorSubject::Logs).await?;

        // Up to the next index: the pieces of the last sort after its own.
        let end = log_id.index.checked_add(1).map(log_key);
        let alive = Arc::downgrade(&self.alive);
        let log = Self {
            alive: Arc::default(),
            ..self.clone()
        };
        tokio::task::spawn_blocking(move || {
            let _one = log.removing.lock().unwrap_or_else(|p| p.into_inner());
            let began = std::time::Instant::now();
            match log.remove_below(end, PURGE_KEYS_PER_STEP, &alive) {
                Ok(Removed::Stopped(keys)) => tracing::info!(
                    up_to = log_id.index,
                    keys,
                    "the node is stopping: purged log entries left on disk for the next purge"
                ),
                Ok(Removed::All(0)) => {}
                Ok(Removed::All(keys)) => tracing::info!(
                    up_to = log_id.index,
                    keys,
                    ms = began.elapsed().as_millis() as u64,
                    "purged log entries removed from disk"
                ),
                Err(e) => tracing::error!(
                    up_to = log_id.index,
                    error = %e,
                    "removing purged log entries failed; the next purge removes them"
                ),
            }
        });
        Ok(())
    }
}

impl LogStore {
    fn remove_range<R: RangeBounds<[u8; 8]>>(&self, range: R) -> Result<(), StorageError> {
        let _writing = self.entries.write().unwrap_or_else(|p| p.into_inner());
        let keys = self.keys_in(range)?;
        self.write_batch(keys, Vec::new())
    }

    /// Removes the log's keys before `end` (none: all of them),
    /// `keys_per_step` keys and then the rest of the last entry met per
    /// sled batch, under the write lock for each batch only, so
    /// that a read never sees part of an entry, until done or `alive` is
    /// gone.
    fn remove_below(
        &self,
        end: Option<[u8; 8]>,
        keys_per_step: usize,
        alive: &Weak<()>,
    ) -> Result<Removed, StorageError> {
        let read_err = |e| storage_err(ErrorSubject::Logs, ErrorVerb::Read, e);
        let below = (
            Bound::Unbounded,
            end.map_or(Bound::Unbounded, Bound::Excluded),
        );
        let mut removed = 0;
        loop {
            let _writing = self.entries.write().unwrap_or_else(|p| p.into_inner());
            if alive.strong_count() == 0 {
                return Ok(Removed::Stopped(removed));
            }
            let mut keys = Vec::new();
            for key in self.store.log.range(below).keys() {
                let key = key.map_err(read_err)?;
                let whole = (keys.last()).is_some_and(|last: &sled::IVec| {
                    keys.len() >= keys_per_step && key_index(last) != key_index(&key)
                });
                if whole {
                    break;
                }
                keys.push(key);
            }
            if keys.is_empty() {
                return Ok(Removed::All(removed));
            }
            removed += keys.len();
            self.write_batch(keys, Vec::new())?;
        }
    }

    /// The keys the log tree holds in `range`.
    fn keys_in<R: RangeBounds<[u8; 8]>>(&self, range: R) -> Result<Vec<sled::IVec>, StorageError> {
        (self.store.log.range(range).keys())
            .map(|k| k.map_err(|e| storage_err(ErrorSubject::Logs, ErrorVerb::Read, e)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(openraft::CommittedLeaderId::new(1, 0), index),
            payload: openraft::EntryPayload::Blank,
        }
    }

    fn indexes(entries: Option<Vec<Entry<TypeConfig>>>) -> Option<Vec<u64>> {
        entries.map(|v| v.iter().map(|e| e.log_id.index).collect())
    }

    /// Waits for `done` to hold, up to a deadline.
    fn until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !done() {
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: not done in 20 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    fn log_store() -> (tempfile::TempDir, LogStore) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("open sled");
        (dir, LogStore::new(store))
    }

    fn appended(indexes: &[u64]) -> Vec<(Entry<TypeConfig>, usize)> {
        indexes.iter().map(|i| (entry(*i), 1)).collect()
    }

    #[test]
    fn appends_that_leave_no_hole_pass() {
        let (_dir, log) = log_store();
        log.assert_continues(&appended(&[10, 11, 12]));
        log.assert_continues(&appended(&[12, 13])); // overwrites 12
        log.assert_continues(&appended(&[14]));
        assert_eq!(log.next_index.load(Ordering::Relaxed), 15);
    }

    #[test]
    #[should_panic(expected = "a hole in the log: entry 12 appended where the log continues at 11")]
    fn an_append_past_the_end_stops_the_node() {
        let (_dir, log) = log_store();
        log.assert_continues(&appended(&[10]));
        log.assert_continues(&appended(&[12]));
    }

    #[test]
    #[should_panic(expected = "a hole in the log: entry 3 appended where the log continues at 2")]
    fn an_append_with_a_gap_inside_stops_the_node() {
        let (_dir, log) = log_store();
        log.assert_continues(&appended(&[1, 3]));
    }

    #[tokio::test]
    async fn a_truncation_above_the_committed_index_moves_the_end() {
        let (_dir, mut log) = log_store();
        log.assert_continues(&appended(&[1, 2, 3, 4]));
        log.save_committed(Some(entry(2).log_id)).await.unwrap();
        log.truncate(entry(3).log_id).await.unwrap();
        assert_eq!(log.next_index.load(Ordering::Relaxed), 3);
        log.assert_continues(&appended(&[3]));
    }

    #[tokio::test]
    #[should_panic(expected = "log truncation from entry 2 would remove committed entries")]
    async fn a_truncation_of_committed_entries_stops_the_node() {
        let (_dir, mut log) = log_store();
        log.assert_continues(&appended(&[1, 2, 3]));
        log.save_committed(Some(entry(2).log_id)).await.unwrap();
        let _ = log.truncate(entry(2).log_id).await;
    }

    #[test]
    fn a_reopened_log_continues_after_its_last_stored_entry() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("open sled");
        for i in 1..=3 {
            let bytes = codec::encode(&entry(i));
            store.log.insert(log_key(i), bytes).unwrap();
        }
        assert_eq!(LogStore::new(store).next_index.load(Ordering::Relaxed), 4);
    }

    /// Entries a purge has yet to remove from sled (or that a stop left
    /// there) lie below its marker: the log's state goes by the marker.
    #[tokio::test]
    async fn the_log_state_goes_by_the_purge_marker_over_entries_left_below_it() {
        let (_dir, mut log) = log_store();
        store_entries(&log, 0, &[entry(1), large_entry(2), entry(3)]);
        let marker = entry(7).log_id;
        log.store
            .raft
            .insert(PURGED_KEY, codec::encode(&marker))
            .unwrap();
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(marker));
        assert_eq!(
            state.last_log_id,
            Some(marker),
            "not entry 3, which sled still holds"
        );
        // The next purge removes them, and it leaves what follows it.
        store_entries(&log, 8, &[large_entry(8)]);
        log.purge(marker).await.unwrap();
        let keys = || log.store.log.iter().keys().count();
        until("the purge's removal", || {
            keys() == entry_pairs(8, codec::encode(&large_entry(8))).len()
        });
        assert_eq!(
            log.try_get_log_entries(8..).await.unwrap(),
            [large_entry(8)]
        );
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id, Some(large_entry(8).log_id));
    }

    /// A purge's removal gives up once nothing but it holds the log (the
    /// node stops): a stop does not wait for thousands of keys.
    #[tokio::test]
    async fn a_purge_removal_ends_when_the_log_is_dropped() {
        let (_dir, mut log) = log_store();
        // More keys than a step takes.
        let entries: Vec<_> = (1..=400).map(large_entry).collect();
        store_entries(&log, 0, &entries);
        let stored = log.store.log.len();
        let removal = Arc::downgrade(&log.removing);
        let tree = log.store.log.clone();
        // The removal cannot take a step before the log is dropped: a
        // thread holds the log's write lock until then.
        let (lock, (taken, held)) = (log.entries.clone(), std::sync::mpsc::channel());
        let (release, released) = std::sync::mpsc::channel::<()>();
        let holder = std::thread::spawn(move || {
            let _writing = lock.write().unwrap();
            taken.send(()).unwrap();
            let _ = released.recv();
        });
        held.recv().unwrap();
        log.purge(large_entry(400).log_id).await.unwrap();
        drop(log);
        release.send(()).unwrap();
        holder.join().unwrap();
        until("the removal to end", || removal.strong_count() == 0);
        let left = tree.len();
        assert!(
            left > 0,
            "none of {stored} keys left: the removal went on after the log was dropped"
        );
    }

    #[tokio::test]
    async fn a_reopened_log_continues_where_it_ended() {
        let (dir, mut log) = log_store();
        log.assert_continues(&appended(&[1, 2, 3]));
        log.purge(entry(7).log_id).await.unwrap(); // past the end: a snapshot's
        drop(log);
        let store = crate::raft::tests::reopen(dir.path());
        assert_eq!(LogStore::new(store).next_index.load(Ordering::Relaxed), 8);
    }

    #[test]
    fn an_append_carries_entries_up_to_its_bytes_from_memory_or_sled() {
        let (dir, log) = log_store();
        let size = codec::encode(&entry(1)).len();
        for i in 1..=6 {
            log.store
                .log
                .insert(log_key(i), codec::encode(&entry(i)))
                .unwrap();
            log.recent().push(entry(i), size);
        }
        let check = |log: &LogStore, from: &str| {
            let within = |start, end, bytes| indexes(log.entries_within(start, end, bytes).ok());
            assert_eq!(within(2, 7, 3 * size), Some(vec![2, 3, 4]), "{from}");
            let ends_first = "the range ends first";
            assert_eq!(
                within(5, 7, 3 * size),
                Some(vec![5, 6]),
                "{from}: {ends_first}"
            );
            let first = "the first whatever its size";
            assert_eq!(within(2, 7, 1), Some(vec![2]), "{from}: {first}");
            let all = Some(vec![1, 2, 3, 4, 5, 6]);
            assert_eq!(within(1, 7, usize::MAX), all, "{from}");
        };
        check(&log, "from memory");
        drop(log);
        let log = LogStore::new(crate::raft::tests::reopen(dir.path()));
        assert!(log.recent().entries.is_empty());
        check(&log, "from sled");
    }

    /// Entry `index`, a membership change naming nodes with long
    /// addresses: its encoding is about ten pieces long.
    fn large_entry(index: u64) -> Entry<TypeConfig> {
        membership_entry(index, 3)
    }

    /// Entry `index`, a membership of `n` voters with addresses of three
    /// pieces each.
    fn membership_entry(index: u64, n: u64) -> Entry<TypeConfig> {
        let nodes = (1..=n).map(|n| (n, openraft::BasicNode::new("x".repeat(3 * PIECE_BYTES))));
        let voters = (1..=n).collect::<std::collections::BTreeSet<_>>();
        Entry {
            log_id: LogId::new(openraft::CommittedLeaderId::new(1, 0), index),
            payload: openraft::EntryPayload::Membership(openraft::Membership::new(
                vec![voters],
                nodes.collect::<std::collections::BTreeMap<_, _>>(),
            )),
        }
    }

    /// Stores `entries` as an append does (on sled only), where the log
    /// continued at `end`.
    fn store_entries(log: &LogStore, end: u64, entries: &[Entry<TypeConfig>]) {
        let mut encoded = Vec::new();
        for e in entries {
            encoded.extend(entry_pairs(e.log_id.index, codec::encode(e)));
        }
        let indexes = |e: Option<&Entry<TypeConfig>>| e.map(|e| e.log_id.index).unwrap();
        let range = (indexes(entries.first()), indexes(entries.last()));
        log.write(range, end, encoded).unwrap();
    }

    #[tokio::test]
    async fn a_large_entry_is_stored_in_pieces_and_read_back_whole() {
        let (dir, log) = log_store();
        let large = codec::encode(&large_entry(2));
        let pairs = entry_pairs(2, large.clone());
        assert_eq!(pairs.len(), large.len().div_ceil(PIECE_BYTES));
        assert!(pairs.len() >= 9, "{} pieces", pairs.len());
        assert!(pairs
            .iter()
            .all(|(k, v)| k.len() == 12 && v.len() <= PIECE_BYTES));
        assert_eq!(
            entry_pairs(1, codec::encode(&entry(1))).len(),
            1,
            "small: whole"
        );
        store_entries(
            &log,
            0,
            &[entry(1), large_entry(2), entry(3), large_entry(4)],
        );
        drop(log);

        let mut log = LogStore::new(crate::raft::tests::reopen(dir.path()));
        assert_eq!(
            log.next_index.load(Ordering::Relaxed),
            5,
            "after the last, pieced"
        );
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id, Some(large_entry(4).log_id));
        // A large entry stored whole (format 8) reads as before.
        let whole = codec::encode(&large_entry(5));
        log.store.log.insert(log_key(5), whole).unwrap();
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id, Some(large_entry(5).log_id));
        let tail = log.try_get_log_entries(4..).await.unwrap();
        assert_eq!(tail, [large_entry(4), large_entry(5)]);
        let read = log.try_get_log_entries(1..=4).await.unwrap();
        let expected = [entry(1), large_entry(2), entry(3), large_entry(4)];
        assert_eq!(read, expected, "read back whole, in order");
        let one = log.try_get_log_entries(2..=2).await.unwrap();
        assert_eq!(
            one,
            [large_entry(2)],
            "an inclusive end takes all its pieces"
        );
        // An append's bound counts a pieced entry's whole size.
        let small = codec::encode(&entry(1)).len();
        let within = |bytes| indexes(log.entries_within(1, 5, bytes).ok());
        assert_eq!(within(small + large.len()), Some(vec![1, 2]));
        assert_eq!(within(small + large.len() - 1), Some(vec![1]));

        log.truncate(large_entry(4).log_id).await.unwrap();
        assert_eq!(
            log.try_get_log_entries(1..).await.unwrap().len(),
            3,
            "4 and 5 gone"
        );
        log.purge(large_entry(2).log_id).await.unwrap();
        assert_eq!(log.try_get_log_entries(3..).await.unwrap(), [entry(3)]);
        let keys = || -> Vec<_> { log.store.log.iter().keys().map(|k| k.unwrap()).collect() };
        until("the purge's removal", || keys() == [log_key(3).to_vec()]);
    }

    /// Reads from sled while other threads append large entries and
    /// purge them never see part of an entry: each read returns whole
    /// entries, in order, or none.
    #[test]
    fn reads_never_see_part_of_an_entry_being_written_or_purged() {
        let (_dir, log) = log_store();
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (log, done) = (log.clone(), done.clone());
            std::thread::spawn(move || {
                for i in 1..=300u64 {
                    store_entries(&log, i, &[large_entry(i)]);
                    if i > 3 {
                        // A key a step: each step removes one whole entry.
                        let purged = i - 3;
                        let alive = Arc::downgrade(&log.alive);
                        log.remove_below(Some(log_key(purged + 1)), 1, &alive)
                            .unwrap();
                    }
                }
                done.store(true, Ordering::Relaxed);
            })
        };
        let mut reads = 0;
        while !done.load(Ordering::Relaxed) {
            let mut seen = Vec::new();
            let read = log.stored(log_key(0).., |_| true, |e| seen.push(e));
            assert!(read.is_ok(), "read {reads}: {read:?}");
            for pair in seen.windows(2) {
                assert_eq!(pair[1].log_id.index, pair[0].log_id.index + 1);
            }
            assert!(seen.iter().all(|e| *e == large_entry(e.log_id.index)));
            reads += 1;
        }
        writer.join().unwrap();
        assert!(reads > 0);
    }

    #[tokio::test]
    async fn entries_written_where_the_log_holds_some_replace_them_whole() {
        let (_dir, mut log) = log_store();
        store_entries(&log, 0, &[entry(1), large_entry(2), large_entry(3)]);
        // Whole over pieces, then pieces over whole and over pieces; the
        // entry after them stays.
        store_entries(&log, 4, &[entry(2)]);
        let read = log.try_get_log_entries(1..).await.unwrap();
        assert_eq!(read, [entry(1), entry(2), large_entry(3)]);
        store_entries(&log, 4, &[large_entry(1), large_entry(2)]);
        let read = log.try_get_log_entries(0..).await.unwrap();
        assert_eq!(read, [large_entry(1), large_entry(2), large_entry(3)]);
        let shorter = membership_entry(2, 1);
        store_entries(&log, 4, std::slice::from_ref(&shorter));
        let read = log.try_get_log_entries(0..).await.unwrap();
        assert_eq!(read, [large_entry(1), shorter, large_entry(3)]);
    }

    #[tokio::test]
    async fn a_pieced_entry_with_a_piece_missing_or_misplaced_is_refused() {
        let read = |remove: Vec<u8>| async move {
            let (_dir, mut log) = log_store();
            store_entries(&log, 0, &[large_entry(1), entry(2)]);
            log.store.log.remove(remove).unwrap();
            log.try_get_log_entries(1..3)
                .await
                .map_err(|e| e.to_string())
        };
        let gap = read(piece_key(1, 1)).await.unwrap_err();
        assert!(gap.contains("log entry 1 lacks piece 1 (found 2)"), "{gap}");
        let first = read(piece_key(1, 0)).await.unwrap_err();
        assert!(
            first.contains("log entry 1 lacks piece 0 (found 1)"),
            "{first}"
        );
        // The last piece gone: the entry does not decode.
        let pieces = codec::encode(&large_entry(1)).len().div_ceil(PIECE_BYTES) as u32;
        assert!(read(piece_key(1, pieces - 1)).await.is_err());

        let (_dir, mut log) = log_store();
        for (key, value) in entry_pairs(1, codec::encode(&large_entry(7))) {
            log.store.log.insert(key, value).unwrap();
        }
        let moved = log.try_get_log_entries(1..2).await.unwrap_err().to_string();
        assert!(
            moved.contains("the log entry stored under index 1 is entry 7"),
            "{moved}"
        );

        // Whole and in pieces at once: refused, not read twice.
        let (_dir, mut log) = log_store();
        store_entries(&log, 0, &[large_entry(1)]);
        log.store
            .log
            .insert(log_key(1), codec::encode(&entry(1)))
            .unwrap();
        let twice = log.try_get_log_entries(1..2).await.unwrap_err().to_string();
        assert!(twice.contains("log entry 1 is stored twice"), "{twice}");
    }

    #[test]
    fn recent_entries_answer_only_ranges_they_hold_whole() {
        let mut r = Recent::default();
        assert_eq!(indexes(r.get(0, None)), None, "empty");
        for i in 5..10 {
            r.push(entry(i), 10);
        }
        assert_eq!(indexes(r.get(5, None)), Some(vec![5, 6, 7, 8, 9]));
        assert_eq!(indexes(r.get(7, Some(9))), Some(vec![7, 8]));
        assert_eq!(indexes(r.get(4, Some(7))), None, "starts before the first");
        assert_eq!(indexes(r.get(8, Some(11))), None, "ends after the last");
        assert_eq!(indexes(r.get(7, Some(7))), None, "empty ranges go to sled");

        r.truncate(8);
        assert_eq!(indexes(r.get(5, None)), Some(vec![5, 6, 7]));
        r.purge(5);
        assert_eq!(indexes(r.get(6, None)), Some(vec![6, 7]));
        assert_eq!(r.bytes, 20);

        r.push(entry(12), 10);
        assert_eq!(
            indexes(r.get(12, None)),
            Some(vec![12]),
            "a gap starts anew"
        );
        assert_eq!(r.bytes, 10);

        r.push(entry(13), RECENT_BYTES_MAX);
        assert_eq!(indexes(r.get(13, None)), Some(vec![13]), "bounded by bytes");
        assert_eq!(r.bytes, RECENT_BYTES_MAX);
        for i in 14..14 + RECENT_ENTRIES_MAX as u64 + 5 {
            r.push(entry(i), 0);
        }
        assert_eq!(r.entries.len(), RECENT_ENTRIES_MAX, "bounded by count");
        assert_eq!(r.bytes, 0);
    }
}
