//! Reads of the applied state for the API: what memory holds, and the
//! settled records, histories and blocks that only sled holds. A read
//! holds the state's read lock, so memory and sled agree under it.

use std::sync::RwLockReadGuard;

use super::writer::{WriteFailed, Writer};
use super::Applied;
use crate::codec::{self, decode};
use crate::ledger::{AccountId, Blinding, BlockHeader, Hash, HistoryItem, Transfer, TransferId};
use crate::raft::store::{
    read_chunks, StateKey, HISTORY_AT_TAG, HISTORY_TAG, LEAF_HASHES_TAG, TRANSFERS_TAG,
};

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
    /// far: then it holds what memory shows (no batch is queued while this
    /// read holds the lock).
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

    /// `account`'s last history item at or below `height`, if any: the
    /// last item of the last run of a block at or below `height`.
    pub fn history_at_height(
        &self,
        account: &AccountId,
        height: u64,
    ) -> Result<Option<HistoryItem>, ReadError> {
        let prefix = StateKey::account_prefix(HISTORY_AT_TAG, account);
        let at = StateKey::HistoryAt(account, height).encode();
        let Some((key, first)) = self.tree()?.range(prefix..=at).next_back().transpose()? else {
            return Ok(None);
        };
        let first = <[u8; 8]>::try_from(&first[..])
            .map(u64::from_be_bytes)
            .map_err(|_| corrupt_key("history index", &key))?;
        let run_key = StateKey::History(account, first).encode();
        let Some(run) = self.tree()?.get(&run_key)? else {
            return Err(ReadError::Inconsistent(format!(
                "history of {account} indexes a run at {first} that is not stored"
            )));
        };
        let mut run: Vec<HistoryItem> = decode_at("history run", &run_key, &run)?;
        Ok(run.pop())
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
        let Some(height) = self.ledger.stored_height(id) else {
            return Ok(None);
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

/// The big-endian u64 that ends a [`StateKey::History`] or
/// [`StateKey::HistoryAt`] key.
fn key_suffix(key: &[u8]) -> Result<u64, ReadError> {
    key.split_last_chunk::<8>()
        .map(|(_, tail)| u64::from_be_bytes(*tail))
        .ok_or_else(|| corrupt_key("history key suffix", key))
}
