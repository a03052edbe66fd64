//! Reads of the applied state for the API: what memory holds, and the
//! settled records, histories and blocks that only sled holds. A read
//! holds the state's read lock, so memory and sled agree under it.

use std::sync::RwLockReadGuard;

use super::writer::{WriteFailed, Writer};
use super::Applied;
use crate::codec::{self, decode};
use crate::ledger::{AccountId, Blinding, BlockHeader, Hash, HistoryItem, Transfer, TransferId};
use crate::raft::store::{read_chunks, StateKey, HISTORY_TAG, LEAF_HASHES_TAG, TRANSFERS_TAG};

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
        // Start at the run that holds `from` (the last run starting at or
        // before it), if there is one.
        let prefix = StateKey::account_prefix(HISTORY_TAG, account);
        let start = self
            .tree()?
            .range(prefix..=StateKey::History(account, from).encode())
            .next_back()
            .transpose()?
            .map_or(Ok(from), |(k, _)| key_suffix(&k))?;
        let start = StateKey::History(account, start).encode();
        let end = StateKey::History(account, u64::MAX).encode();
        let mut items = Vec::new();
        for kv in self.tree()?.range(start..=end) {
            let (key, value) = kv?;
            let run: Vec<HistoryItem> = decode_at("history run", &key, &value)?;
            items.extend(run.into_iter().filter(|i| i.seq >= from));
            if items.len() >= limit {
                break;
            }
        }
        items.truncate(limit);
        Ok(items)
    }

    /// `account`'s last history item at or below `height`, if any. An
    /// account's items rise in height with their sequence, so this is a
    /// binary search over its runs: a few run reads however long the
    /// history.
    pub fn history_at_height(
        &self,
        account: &AccountId,
        height: u64,
    ) -> Result<Option<HistoryItem>, ReadError> {
        // The answer's sequence is in lo..hi, if there is one.
        let (mut lo, mut hi) = (0, self.history_len(account)?);
        while lo < hi {
            let run = self.run_holding(account, lo + (hi - lo) / 2)?;
            let (Some(first), Some(last)) = (run.first(), run.last()) else {
                return Err(ReadError::Inconsistent(format!(
                    "an empty history run of {account}"
                )));
            };
            if last.height <= height {
                lo = last.seq + 1;
            } else if first.height > height {
                hi = first.seq;
            } else {
                return Ok(run.into_iter().take_while(|i| i.height <= height).last());
            }
        }
        if lo == 0 {
            return Ok(None);
        }
        let run = self.run_holding(account, lo - 1)?;
        Ok(run.into_iter().find(|i| i.seq == lo - 1))
    }

    /// How many history items `account` has: one past its last item's
    /// sequence.
    fn history_len(&self, account: &AccountId) -> Result<u64, ReadError> {
        let prefix = StateKey::account_prefix(HISTORY_TAG, account);
        let Some((key, run)) = self.tree()?.scan_prefix(prefix).next_back().transpose()? else {
            return Ok(0);
        };
        let run: Vec<HistoryItem> = decode_at("history run", &key, &run)?;
        Ok(run.last().map_or(0, |i| i.seq + 1))
    }

    /// The history run of `account` that holds item `seq` (the last run
    /// starting at or before it).
    fn run_holding(&self, account: &AccountId, seq: u64) -> Result<Vec<HistoryItem>, ReadError> {
        let prefix = StateKey::account_prefix(HISTORY_TAG, account);
        let at = StateKey::History(account, seq).encode();
        let Some((key, run)) = self.tree()?.range(prefix..=at).next_back().transpose()? else {
            return Err(ReadError::Inconsistent(format!(
                "no history run of {account} holds item {seq}"
            )));
        };
        let run: Vec<HistoryItem> = decode_at("history run", &key, &run)?;
        if run.last().is_none_or(|i| i.seq < seq) {
            return Err(ReadError::Inconsistent(format!(
                "no history run of {account} holds item {seq}"
            )));
        }
        Ok(run)
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

fn corrupt_key(what: &'static str, key: &[u8]) -> ReadError {
    ReadError::Inconsistent(format!(
        "the stored {what} at key {} is not 8 bytes",
        hex::encode(key)
    ))
}

/// The big-endian u64 that ends a [`StateKey::History`] key.
fn key_suffix(key: &[u8]) -> Result<u64, ReadError> {
    key.split_last_chunk::<8>()
        .map(|(_, tail)| u64::from_be_bytes(*tail))
        .ok_or_else(|| corrupt_key("history key suffix", key))
}
