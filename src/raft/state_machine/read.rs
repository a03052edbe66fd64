//! Reads of the applied state for the API: what memory holds, and the
//! settled records, histories and blocks that only sled holds. A read
//! holds the state's read lock, so memory and sled agree under it.

use std::sync::RwLockReadGuard;

use super::history::{Page, Run};
use super::writer::{WriteFailed, Writer};
use super::Applied;
use crate::codec::{self, decode};
use crate::ledger::{AccountId, Blinding, BlockHeader, Hash, HistoryItem, Transfer, TransferId};
use crate::raft::store::{read_chunks, StateKey, HISTORY_PAGE_TAG, LEAF_HASHES_TAG, TRANSFERS_TAG};

/// Why a read of the stored state failed. None of these is a caller's
/// mistake: the node answers that it cannot serve the read (503).
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("the store failed: {0}")]
    Store(#[from] sled::Error),
    #[error("{0}")]
    Chunks(#[from] std::io::Error),
    /// Stored bytes that do not decode as the record their key names.
    #[error("the stored {what} at key {key} does not decode: {source}")]
    Corrupt {
        what: &'static str,
        key: String,
        #[source]
        source: codec::Error,
    },
    #[error("{0}")]
    Behind(#[from] WriteFailed),
    #[error("{0}")]
    Index(#[from] super::index::IndexError),
    /// The stored records disagree with each other or with their keys.
    #[error("{0}")]
    Inconsistent(String),
}

#[cfg(test)]
thread_local! {
    /// History chunks this thread has read.
    pub static CHUNKS_READ: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// A read of the applied state; histories read through it are consistent
/// with it.
pub struct StateRead<'a> {
    pub(super) guard: RwLockReadGuard<'a, Applied>,
    /// Read only through [`Self::tree`].
    pub(super) stored: &'a sled::Tree,
    pub(super) writer: &'a Writer,
}

impl std::ops::Deref for StateRead<'_> {
    type Target = Applied;
    fn deref(&self) -> &Applied {
        &self.guard
    }
}

/// Decodes the record stored under `key`, naming it if the bytes are not one.
fn decode_at<T: serde::de::DeserializeOwned>(
    what: &'static str,
    key: &[u8],
    bytes: &[u8],
) -> Result<T, ReadError> {
    decode(bytes).map_err(|source| ReadError::Corrupt {
        what,
        key: hex::encode(key),
        source,
    })
}

impl StateRead<'_> {
    /// The state tree, once the writer has written every batch queued so
    /// far: then it holds what memory shows (apply queues no batch while
    /// this read holds the lock; the transfer index's jobs queue only runs
    /// that no manifest names yet).
    fn tree(&self) -> Result<&sled::Tree, ReadError> {
        self.writer.caught_up()?;
        Ok(self.stored)
    }

    /// Up to `limit` history items of `account` from sequence `from` on.
    pub fn history(
        &self,
        account: &AccountId,
        from: u64,
        limit: usize,
    ) -> Result<Vec<HistoryItem>, ReadError> {
        let mut items = Vec::new();
        let mut seq = from;
        while items.len() < limit {
            let Some(page) = self.page_holding(account, seq)? else {
                break;
            };
            // From the run holding `seq` to the page's end.
            let mut first = page.first_seq;
            for run in &page.runs {
                let end = first + u64::from(run.items);
                if end > seq && items.len() < limit {
                    let left = limit - items.len();
                    items.extend(self.run_items(account, (first, *run), seq, left)?);
                    seq = end;
                }
                first = end;
            }
        }
        items.truncate(limit);
        Ok(items)
    }

    /// `account`'s last history item at or below `height`, if any. An
    /// account's items rise in height with their sequence, so this is a
    /// binary search over its runs: a few page reads however long the
    /// history.
    pub fn history_at_height(
        &self,
        account: &AccountId,
        height: u64,
    ) -> Result<Option<HistoryItem>, ReadError> {
        // Items before `lo` are at or below `height`, those from `hi` on
        // above it.
        let (mut lo, mut hi) = (0, self.history_len(account));
        while lo < hi {
            let (first, run) = self.run_holding(account, lo + (hi - lo) / 2)?;
            if run.height <= height {
                lo = first + u64::from(run.items);
            } else {
                hi = first;
            }
        }
        if lo == 0 {
            return Ok(None);
        }
        let run = self.run_holding(account, lo - 1)?;
        let items = self.run_items(account, run, lo - 1, 1)?;
        Ok(items.into_iter().next())
    }

    /// How many history items `account` has.
    fn history_len(&self, account: &AccountId) -> u64 {
        self.tails.get(account).map_or(0, Page::end_seq)
    }

    /// The page of `account`'s runs that holds item `seq`: its tail, or
    /// the last stored page starting at or before `seq`. `None` past its
    /// last item.
    fn page_holding(&self, account: &AccountId, seq: u64) -> Result<Option<Page>, ReadError> {
        let Some(tail) = self.tails.get(account) else {
            return Ok(None);
        };
        if seq >= tail.end_seq() {
            return Ok(None);
        }
        if seq >= tail.first_seq {
            return Ok(Some(tail.clone()));
        }
        let prefix = StateKey::account_prefix(HISTORY_PAGE_TAG, account);
        let at = StateKey::HistoryPage(account, seq).encode();
        let found = self.tree()?.range(prefix..=at).next_back().transpose()?;
        let page = match found {
            Some((key, page)) => decode_at::<Page>("history page", &key, &page)?,
            None => Page::default(),
        };
        if page.run_holding(seq).is_none() {
            return Err(ReadError::Inconsistent(format!(
                "no history page of {account} holds item {seq}"
            )));
        }
        Ok(Some(page))
    }

    /// The run of `account` that holds item `seq`, with its first item's
    /// sequence.
    fn run_holding(&self, account: &AccountId, seq: u64) -> Result<(u64, Run), ReadError> {
        (self.page_holding(account, seq)?)
            .and_then(|page| page.run_holding(seq))
            .ok_or_else(|| {
                ReadError::Inconsistent(format!("no history run of {account} holds item {seq}"))
            })
    }

    /// Up to `limit` items of `account`'s `run` (whose first item is
    /// `first`) from sequence `from` on, read from its block's chunks. The
    /// chunk that holds `from` is found by a binary search between the
    /// run's first and last chunks: a read deep in a long run (a batch of
    /// thousands to one account) decodes a few chunks, not the run.
    fn run_items(
        &self,
        account: &AccountId,
        (first, run): (u64, Run),
        from: u64,
        limit: usize,
    ) -> Result<Vec<HistoryItem>, ReadError> {
        let end = first + u64::from(run.items);
        let from = from.max(first);
        let inconsistent = |what: String| {
            ReadError::Inconsistent(format!(
                "block {}'s history chunks {}..={} {what} (items {first}..{end} of {account})",
                run.height, run.chunk, run.last_chunk
            ))
        };
        // The last chunk whose first item of the run is at or before `from`.
        let (mut lo, mut hi) = (run.chunk, run.last_chunk);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            let chunk = self.history_chunk(run.height, mid)?;
            match chunk.iter().find(|i| i.account == *account) {
                Some(item) if item.seq <= from => lo = mid,
                Some(_) => hi = mid - 1,
                None => return Err(inconsistent(format!("miss the run in chunk {mid}"))),
            }
        }
        let want = usize::try_from(end.saturating_sub(from)).map_or(limit, |n| n.min(limit));
        let mut items = Vec::with_capacity(want);
        for chunk in lo..=run.last_chunk {
            if items.len() == want {
                break;
            }
            let stored = self.history_chunk(run.height, chunk)?;
            let of_run = (stored.into_iter())
                .filter(|i| i.account == *account && (from..end).contains(&i.seq));
            items.extend(of_run.take(want - items.len()));
        }
        if items.len() != want || items.iter().zip(from..).any(|(i, seq)| i.seq != seq) {
            return Err(inconsistent(format!(
                "hold {} of the {want} items from {from}",
                items.len()
            )));
        }
        Ok(items)
    }

    /// Chunk `n` of block `height`'s history items.
    fn history_chunk(&self, height: u64, n: u32) -> Result<Vec<HistoryItem>, ReadError> {
        #[cfg(test)]
        CHUNKS_READ.with(|c| c.set(c.get() + 1));
        let key = StateKey::HistoryChunk(height, n).encode();
        let Some(value) = self.tree()?.get(&key)? else {
            return Err(ReadError::Inconsistent(format!(
                "block {height} has no history chunk {n}"
            )));
        };
        decode_at("history chunk", &key, &value)
    }

    /// The stored header of block `height` (block 0 is not stored).
    pub fn block(&self, height: u64) -> Result<Option<BlockHeader>, ReadError> {
        let key = StateKey::Block(height).encode();
        let v = self.tree()?.get(&key)?;
        v.map(|v| decode_at("block header", &key, &v)).transpose()
    }

    /// Block `height`'s leaf hashes.
    pub fn leaf_hashes(&self, height: u64) -> Result<Option<Vec<Hash>>, ReadError> {
        let prefix = StateKey::height_prefix(LEAF_HASHES_TAG, height);
        Ok(read_chunks(self.tree()?, &prefix)?)
    }

    /// Block `height`'s blinding (block 0 has none).
    pub fn blinding(&self, height: u64) -> Result<Option<Blinding>, ReadError> {
        let key = StateKey::Blinding(height).encode();
        let v = self.tree()?.get(&key)?;
        v.map(|v| decode_at("block blinding", &key, &v)).transpose()
    }

    /// Transfer `id` as block `height` left it, if that block changed it.
    pub fn transfer_at(&self, height: u64, id: &TransferId) -> Result<Option<Transfer>, ReadError> {
        for kv in self
            .tree()?
            .scan_prefix(StateKey::height_prefix(TRANSFERS_TAG, height))
        {
            let (key, value) = kv?;
            let chunk: Vec<Transfer> = decode_at("transfer chunk", &key, &value)?;
            if let Some(t) = chunk.into_iter().find(|t| t.id == *id) {
                return Ok(Some(t));
            }
        }
        Ok(None)
    }

    /// Transfer `id` at its latest version: from memory if it is pending,
    /// else from the block that stored it.
    pub fn transfer(&self, id: &TransferId) -> Result<Option<Transfer>, ReadError> {
        if let Some(t) = self.ledger.transfer(id) {
            return Ok(Some(t.clone()));
        }
        let height = match self.ledger.stored_height(id) {
            Some(height) => height,
            None => match self.index.look_up(self.tree()?, id)? {
                Some(height) => height,
                None => return Ok(None),
            },
        };
        match self.transfer_at(height, id)? {
            Some(t) => Ok(Some(t)),
            None => Err(ReadError::Inconsistent(format!(
                "transfer {id} is indexed at block {height}, which does not hold it"
            ))),
        }
    }
}
