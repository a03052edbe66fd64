//! How one applied entry's state writes reach sled so that a crash leaves
//! the stored state after some whole entry.
//!
//! A large entry's writes go in one sled batch, which is atomic. A batch
//! costs a device write of its own, though: sled seals its I/O buffer
//! before and after the batch, and each sealed buffer is written and waited
//! for (`sync_file_range`), and the Raft log's next sync queues behind it.
//! With one write at a time that cost 0.05-0.1 ms of each write's latency.
//!
//! So a small entry's writes are journaled instead: first all of them under
//! one key ([`StateKey::Journal`]), with the entry's log id, then each on
//! its own. They stay in sled's buffer until the next sync (the Raft log's)
//! writes them. sled recovers its log as a prefix: it stops at the first
//! torn or missing message (`pagecache/iterator.rs`), and one thread's
//! writes are logged in order. So a crash keeps the journal of any entry
//! of which it keeps a single write, and on open [`replay`] writes the
//! journal again, in one batch, if it is newer than the stored
//! last-applied id. The records are whole values, so writing them twice is
//! harmless.

use serde::{Deserialize, Serialize};

use super::store::StateKey;
use super::LogId;
use crate::codec::{decode, encode};

/// Entries whose keys and values take more bytes than this are written in
/// one batch. A single transfer's entry takes about 800 bytes in 13 keys;
/// the journal stays far below the size at which sled writes a node as a
/// blob file.
pub const JOURNAL_BYTES_MAX: usize = 32 * 1024;

/// Keys and values, in order.
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// One entry's writes to the state tree, in order.
#[derive(Default)]
pub struct Writes {
    pairs: Pairs,
    bytes: usize,
}

/// What the journal key holds.
#[derive(Serialize, Deserialize)]
struct Journal<P> {
    /// The entry's log id: the last-applied id its writes store.
    last_applied: Option<LogId>,
    pairs: P,
}

impl Writes {
    pub fn insert(&mut self, key: Vec<u8>, value: impl Into<Vec<u8>>) {
        let value = value.into();
        self.bytes += key.len() + value.len();
        self.pairs.push((key, value));
    }

    /// Writes the pairs to `tree` (journaled or as one batch, see the
    /// module); `last_applied` is the id they store as last applied.
    pub fn store(self, tree: &sled::Tree, last_applied: Option<LogId>) -> sled::Result<()> {
        if self.bytes > JOURNAL_BYTES_MAX {
            let mut batch = sled::Batch::default();
            for (k, v) in self.pairs {
                batch.insert(k, v);
            }
            return tree.apply_batch(batch);
        }
        let journal = Journal {
            last_applied,
            pairs: &self.pairs,
        };
        tree.insert(StateKey::Journal.encode(), encode(&journal))?;
        for (k, v) in self.pairs {
            tree.insert(k, v)?;
        }
        Ok(())
    }
}

/// Completes the journaled entry a crash may have cut short: writes the
/// journal's pairs again, in one batch, if its id is newer than the stored
/// last-applied id. Returns whether it did.
pub fn replay(tree: &sled::Tree) -> std::io::Result<bool> {
    let get = |key: StateKey| tree.get(key.encode()).map_err(std::io::Error::other);
    let Some(journal) = get(StateKey::Journal)? else {
        return Ok(false);
    };
    let journal: Journal<Vec<(Vec<u8>, Vec<u8>)>> =
        decode(&journal).map_err(|e| std::io::Error::other(format!("the state journal: {e}")))?;
    let stored: Option<LogId> = match get(StateKey::LastApplied)? {
        Some(v) => {
            decode(&v).map_err(|e| std::io::Error::other(format!("the last-applied id: {e}")))?
        }
        None => None,
    };
    let index = |id: Option<LogId>| id.map(|l| l.index);
    if index(journal.last_applied) <= index(stored) {
        return Ok(false);
    }
    let mut batch = sled::Batch::default();
    for (k, v) in journal.pairs {
        batch.insert(k, v);
    }
    tree.apply_batch(batch).map_err(std::io::Error::other)?;
    Ok(true)
}

/// The journal's id and pairs, if there is one.
#[cfg(test)]
pub fn stored(tree: &sled::Tree) -> Option<(Option<LogId>, Pairs)> {
    let journal = tree.get(StateKey::Journal.encode()).expect("read")?;
    let journal: Journal<Pairs> = decode(&journal).expect("a journal");
    Some((journal.last_applied, journal.pairs))
}
