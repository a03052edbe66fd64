//! The Raft log on sled: entries by big-endian index, plus vote, purge marker
//! and committed index. Nothing is acknowledged before [`Durable::sync`].

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader, Vote};

use super::store::{log_key, storage_err, Store};
use super::{LogId, StorageError, TypeConfig};
use crate::codec;

const VOTE_KEY: &[u8] = b"vote";
const PURGED_KEY: &[u8] = b"last_purged";
const COMMITTED_KEY: &[u8] = b"committed";

/// The log store; cheap to clone (sled trees are shared handles).
#[derive(Clone)]
pub struct LogStore {
    store: Store,
    committed: CommitIndex,
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
        Self {
            store,
            committed: CommitIndex::default(),
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
        let end = match range.end_bound() {
            Bound::Included(i) => Bound::Included(log_key(*i)),
            Bound::Excluded(i) => Bound::Excluded(log_key(*i)),
            Bound::Unbounded => Bound::Unbounded,
        };
        self.store
            .log
            .range((Bound::Included(log_key(start)), end))
            .map(|kv| {
                let (_, v) = kv.map_err(|e| storage_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
                Self::decode(&v)
            })
            .collect()
    }
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
        let last_log_id = match last {
            Some((_, v)) => Some(Self::decode(&v)?.log_id),
            None => last_purged,
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
        Ok(self
            .get_meta::<Option<LogId>>(COMMITTED_KEY, ErrorSubject::Store)?
            .flatten())
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
        let mut batch = sled::Batch::default();
        for entry in entries {
            batch.insert(&log_key(entry.log_id.index), codec::encode(&entry));
        }
        self.store
            .log
            .apply_batch(batch)
            .map_err(|e| storage_err(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        let result = self.store.durable.sync_async().await;
        let failed = result.as_ref().err().map(|e| {
            StorageError::from_io_error(
                ErrorSubject::Logs,
                ErrorVerb::Write,
                std::io::Error::new(e.kind(), e.to_string()),
            )
        });
        callback.log_io_completed(result);
        failed.map_or(Ok(()), Err)
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.remove_range(log_key(log_id.index).., ErrorSubject::Logs)?;
        self.sync(ErrorSubject::Logs).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // The marker first: a crash between the two steps leaves entries that
        // get_log_state already treats as purged.
        self.store
            .raft
            .insert(PURGED_KEY, codec::encode(&log_id))
            .map_err(|e| storage_err(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        self.remove_range(..=log_key(log_id.index), ErrorSubject::Logs)?;
        self.sync(ErrorSubject::Logs).await
    }
}

impl LogStore {
    fn remove_range<R: RangeBounds<[u8; 8]>>(
        &self,
        range: R,
        subject: ErrorSubject<u64>,
    ) -> Result<(), StorageError> {
        let mut batch = sled::Batch::default();
        for kv in self.store.log.range(range) {
            let (k, _) = kv.map_err(|e| storage_err(subject.clone(), ErrorVerb::Read, e))?;
            batch.remove(k);
        }
        self.store
            .log
            .apply_batch(batch)
            .map_err(|e| storage_err(subject, ErrorVerb::Write, e))
    }
}
