//! The applied state as sled holds it, read at start and after a snapshot
//! is installed: all but the settled transfers, the refusals, the
//! transfer index and the history, which stay on disk (of the history,
//! memory holds each account's last page).

use std::collections::{BTreeMap, HashMap};

use super::history::{runs_from, Page, Tails, SEQ_MAX};
use super::index::{self, Index};
use super::{read_err, write_err, Applied, Founding, INSTALL_BATCH_KEYS};
use crate::codec::{decode, encode};
use crate::ledger::{
    check_stored, check_stored_head, Account, AccountId, BlockHeader, Gov, Hash, Ledger, Seeded,
    Transfer, TransferState,
};
use crate::raft::store::{
    for_each_transfer_block, key_height, transfers_chunk, transfers_height, StateKey, Store,
    ACCOUNT_TAG, FILTER_TAG, HISTORY_PAGE_TAG, HISTORY_RUNS_TAG, HISTORY_TAIL_TAG, PENDING_TAG,
    REJECTED_TAG, RUN_TAG, TRANSFERS_TAG,
};
use crate::raft::StorageError;

/// Reads the whole applied state from the state tree.
pub(super) fn load(
    tree: &sled::Tree,
    founding: &Founding,
    genesis_hash: Hash,
) -> Result<Applied, StorageError> {
    fn get<T: serde::de::DeserializeOwned + Default>(
        tree: &sled::Tree,
        key: StateKey,
    ) -> Result<T, StorageError> {
        match tree.get(key.encode()).map_err(read_err)? {
            Some(v) => decode(&v).map_err(read_err),
            None => Ok(T::default()),
        }
    }
    let mut ledger = Ledger::from_parts(
        founding.orgs.clone(),
        scan(tree, ACCOUNT_TAG)?,
        get(tree, StateKey::TransferCount)?,
        scan(tree, PENDING_TAG)?,
        match tree.get(StateKey::Head.encode()).map_err(read_err)? {
            Some(v) => decode(&v).map_err(read_err)?,
            None => BlockHeader::genesis(genesis_hash),
        },
        get(tree, StateKey::Clock)?,
    )
    .with_gov(match tree.get(StateKey::Gov.encode()).map_err(read_err)? {
        Some(v) => decode(&v).map_err(read_err)?,
        None => founding.gov.clone(),
    });
    (ledger.check_loaded())
        .map_err(|e| read_err(std::io::Error::other(format!("the stored ledger: {e}"))))?;
    let index = Index::load(tree, &mut ledger).map_err(read_err)?;
    let tails = Tails::load(tree, &ledger).map_err(read_err)?;
    Ok(Applied {
        ledger,
        last_applied: get(tree, StateKey::LastApplied)?,
        membership: get(tree, StateKey::Membership)?,
        index,
        tails,
    })
}

/// What [`load`] and [`derive_index`] read of a received snapshot,
/// checked before the snapshot replaces anything, so that a snapshot this
/// node could not start from leaves its state as it was. The file is read
/// twice. The first read checks each pair alone ([`Self::first`]) and
/// notes the keys that say what the load reads of the rest; the second
/// ([`Received::second_read`], then [`Whole::pair`]) gathers that, which
/// [`Whole::finish`] checks whole. The pairs may come in any order; of a
/// key given twice, what is gathered is the last, as sled keeps it.
#[derive(Default)]
pub(super) struct Received {
    manifest: Option<Vec<u8>>,
    indexed: Option<u64>,
    tails_stored: u64,
    singletons: Singletons,
}

/// A received snapshot's head (none: genesis's), clock, count of
/// transfers and governance state (none: the founding one), checked whole
/// ([`check_stored_head`]).
#[derive(Default)]
struct Singletons {
    head: Option<BlockHeader>,
    clock_ms: u64,
    transfers: u64,
    gov: Option<Gov>,
}

/// The second read of a received snapshot.
pub(super) struct Whole {
    filters: index::ReceivedFilters,
    /// Whether [`derive_index`] reads every block's transfer records.
    derives: bool,
    head_height: u64,
    singletons: Singletons,
    tails_stored: u64,
    /// The first key of the runs of history the load reads.
    runs_from: Vec<u8>,
    /// The accounts' last pages of history, and the runs stored after
    /// them.
    tail_pages: BTreeMap<Vec<u8>, Vec<u8>>,
    history_runs: BTreeMap<Vec<u8>, Vec<u8>>,
    /// The accounts, and the pending transfers by key.
    accounts: HashMap<AccountId, Account, Seeded>,
    pending: HashMap<Vec<u8>, Transfer, Seeded>,
}

impl Received {
    /// The first read: checks one pair alone ([`index::check_received`],
    /// [`check_received`]).
    pub(super) fn first(&mut self, key: &[u8], value: &[u8]) -> Result<(), String> {
        index::check_received(key, value).map_err(|e| format!("the snapshot holds {e}"))?;
        let held = &mut self.singletons;
        match check_received(key, value)? {
            Some(Singleton::Head(head)) => held.head = Some(head),
            Some(Singleton::Clock(ms)) => held.clock_ms = ms,
            Some(Singleton::Transfers(n)) => held.transfers = n,
            Some(Singleton::Gov(gov)) => held.gov = Some(*gov),
            Some(Singleton::TailsStored(height)) => self.tails_stored = height,
            None if key == StateKey::IndexRuns.encode() => self.manifest = Some(value.to_vec()),
            None if key == StateKey::Indexed.encode() => self.indexed = decode(value).ok(),
            None => {}
        }
        Ok(())
    }

    /// After the first read: the second.
    pub(super) fn second_read(self) -> Result<Whole, String> {
        let head_height = self.singletons.head.as_ref().map_or(0, |h| h.height);
        Ok(Whole {
            filters: index::ReceivedFilters::new(self.manifest.as_deref())
                .map_err(|e| format!("the snapshot holds {e}"))?,
            derives: derives(head_height, self.indexed),
            head_height,
            singletons: self.singletons,
            tails_stored: self.tails_stored,
            runs_from: runs_from(self.tails_stored),
            tail_pages: BTreeMap::new(),
            history_runs: BTreeMap::new(),
            accounts: HashMap::default(),
            pending: HashMap::default(),
        })
    }
}

impl Whole {
    /// Checks that a block's transfer records the load reads decode and
    /// hold no transfer in the namespace of corrections but those of
    /// executed proposals ([`Gov::could_hold`]), that no runs of history
    /// are stored for a block past the head, that the chunks of the runs
    /// the manifest names are ones a lookup reads, and gathers the pieces
    /// of the filters of those runs,
    /// the last pages of history, the runs stored after them, the
    /// accounts and the pending transfers.
    pub(super) fn pair(&mut self, key: &[u8], value: &[u8]) -> Result<(), String> {
        match key.first() {
            Some(&ACCOUNT_TAG) => {
                // The first read checked that it decodes.
                let account: Account = decode(value)
                    .map_err(|e| format!("the snapshot's account record does not decode: {e}"))?;
                self.accounts.insert(account.id.clone(), account);
            }
            Some(&PENDING_TAG) if !self.derives => {
                let t: Transfer = decode(value)
                    .map_err(|e| format!("the snapshot's pending transfer does not decode: {e}"))?;
                self.pending.insert(key.to_vec(), t);
            }
            Some(&TRANSFERS_TAG) => {
                let records = |e| format!("the snapshot's transfer records: {e}");
                let height = transfers_height(key).map_err(records)?;
                if self.derives || height > self.filters.through() {
                    // The load holds these ids.
                    let (_, transfers) = transfers_chunk(key, value).map_err(records)?;
                    // No registry stored: no proposal was ever made.
                    let none = Gov::default();
                    let gov = self.singletons.gov.as_ref().unwrap_or(&none);
                    if let Some(t) = transfers.iter().find(|t| !gov.could_hold(&t.id)) {
                        return Err(format!(
                            "the snapshot holds transfer {} in block {height}, \
                             which no executed correction made",
                            t.id
                        ));
                    }
                }
            }
            Some(&FILTER_TAG | &RUN_TAG) => (self.filters)
                .pair(key, value, self.head_height)
                .map_err(|e| format!("the snapshot holds {e}"))?,
            Some(&HISTORY_TAIL_TAG) => {
                self.tail_pages.insert(key.to_vec(), value.to_vec());
            }
            Some(&HISTORY_RUNS_TAG) => {
                // A block past the head would store its runs over these.
                let Some(height) = key_height(key) else {
                    return Err(format!(
                        "the snapshot holds runs of history under a key of {} bytes",
                        key.len()
                    ));
                };
                if height > self.head_height {
                    return Err(format!(
                        "the snapshot holds runs of history of block {height}, past its head ({})",
                        self.head_height
                    ));
                }
                if key >= self.runs_from.as_slice() {
                    self.history_runs.insert(key.to_vec(), value.to_vec());
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Checks that every run the manifest names has a filter the load
    /// takes, that the last pages of history cover no block past the
    /// head, that the runs stored after them continue them, that the
    /// pages with the runs end where the accounts' histories do, and that
    /// the accounts and pending transfers hold what apply takes for
    /// granted ([`check_stored`]), and so do the head, clock, count and
    /// governance state ([`check_stored_head`]). The pending transfers
    /// only when the load keeps them: those [`derive_index`] derives again
    /// from the blocks are checked by the load, after the install, and a
    /// node whose derived ones fail it does not start.
    pub(super) fn finish(self) -> Result<(), String> {
        (self.filters.finish()).map_err(|e| format!("the snapshot holds {e}"))?;
        if self.tails_stored > self.head_height {
            return Err(format!(
                "the snapshot's last pages of history cover block {}, past its head ({})",
                self.tails_stored, self.head_height
            ));
        }
        let (pages, runs) = (&self.tail_pages, &self.history_runs);
        Tails::check_received(self.tails_stored, pages, runs, &self.accounts)
            .map_err(|e| format!("the snapshot holds history the node could not load: {e}"))?;
        let accounts = &self.accounts;
        let pending = (!self.derives).then(|| self.pending.values());
        let could_not = |e| format!("the snapshot holds a ledger the node could not apply to: {e}");
        check_stored(accounts.values(), |id| accounts.get(id), pending).map_err(could_not)?;
        let held = &self.singletons;
        let (head, gov) = (held.head.as_ref(), held.gov.as_ref());
        check_stored_head(head, held.clock_ms, held.transfers, gov).map_err(could_not)
    }
}

/// Checks a pair of a received snapshot that [`load`] reads on its own:
/// the singletons decode as what it makes of them, an account's record
/// is the account its key names, a pending record is a pending transfer
/// under its own id (the ledger takes no other), an account's last page
/// of history decodes under an account id and a refusal's key is an id.
/// Also refused: a page of history that is not under its first item's
/// number or holds items numbered [`SEQ_MAX`] or more (reads count items
/// from its first); the mark of an install under way, which a node
/// stopped in the middle of this install would read at start to finish
/// it. Returns the singletons the install checks whole, decoded.
fn check_received(key: &[u8], value: &[u8]) -> Result<Option<Singleton>, String> {
    fn decodes<T: serde::de::DeserializeOwned>(value: &[u8], what: &str) -> Result<T, String> {
        decode(value).map_err(|e| format!("the snapshot's {what} does not decode: {e}"))
    }
    match key {
        [ACCOUNT_TAG, id @ ..] => {
            let account: Account = decodes(value, "account record")?;
            if account.id.as_str().as_bytes() != id {
                return Err(format!(
                    "the snapshot holds account {} under the key of another",
                    account.id
                ));
            }
        }
        [PENDING_TAG, id @ ..] => {
            let t: Transfer = decodes(value, "pending transfer record")?;
            if t.id.as_str().as_bytes() != id || t.state != TransferState::Pending {
                return Err(format!(
                    "the snapshot holds transfer {} ({:?}) as a pending transfer under the key of {:?}",
                    t.id,
                    t.state,
                    String::from_utf8_lossy(id)
                ));
            }
        }
        [HISTORY_TAIL_TAG, id @ ..] => {
            let id = std::str::from_utf8(id)
                .ok()
                .and_then(|id| AccountId::parse(id).ok());
            if id.is_none() {
                return Err("the snapshot holds a last page of history under a key that is not an account id".into());
            }
            decodes::<Page>(value, "last page of an account's history")?;
        }
        [HISTORY_PAGE_TAG, rest @ ..] => {
            let page = decodes::<Page>(value, "page of an account's history")?;
            let seq = (rest.len().checked_sub(8))
                .map(|at| u64::from_be_bytes(rest[at..].try_into().expect("8 bytes")));
            if seq != Some(page.first_seq) {
                return Err(format!(
                    "the snapshot holds a page of history that starts at item {} under the key of another",
                    page.first_seq
                ));
            }
            if page.checked_end_seq().is_none() {
                return Err(format!(
                    "the snapshot holds a page of history with items numbered {SEQ_MAX} or more"
                ));
            }
        }
        [REJECTED_TAG, id @ ..] if std::str::from_utf8(id).is_err() => {
            return Err("the snapshot holds a refusal under a key that is not an id".into());
        }
        [_] => {
            let is = |k: StateKey| key == k.encode();
            if is(StateKey::Head) {
                return Ok(Some(Singleton::Head(decodes(value, "head")?)));
            } else if is(StateKey::Gov) {
                let gov = decodes(value, "governance state")?;
                return Ok(Some(Singleton::Gov(Box::new(gov))));
            } else if is(StateKey::LastApplied) {
                decodes::<Option<crate::raft::LogId>>(value, "last applied log id")?;
            } else if is(StateKey::Membership) {
                decodes::<crate::raft::StoredMembership>(value, "membership")?;
            } else if is(StateKey::Clock) {
                return Ok(Some(Singleton::Clock(decodes(value, "clock")?)));
            } else if is(StateKey::TransferCount) {
                let n = decodes(value, "transfer count")?;
                return Ok(Some(Singleton::Transfers(n)));
            } else if is(StateKey::TailsStored) {
                let height = decodes(value, "height of the stored last pages")?;
                return Ok(Some(Singleton::TailsStored(height)));
            } else if is(StateKey::Installing) {
                // Written while a snapshot replaces the state, and read at
                // start to finish it: never part of a state.
                return Err("the snapshot holds the mark of an install under way".into());
            }
        }
        _ => {}
    }
    Ok(None)
}

/// A singleton of a received snapshot that [`check_received`] decoded.
enum Singleton {
    Head(BlockHeader),
    Clock(u64),
    Transfers(u64),
    Gov(Box<Gov>),
    TailsStored(u64),
}

fn scan<T: serde::de::DeserializeOwned>(
    tree: &sled::Tree,
    tag: u8,
) -> Result<Vec<T>, StorageError> {
    tree.scan_prefix([tag])
        .map(|kv| {
            let (_, v) = kv.map_err(read_err)?;
            decode(&v).map_err(read_err)
        })
        .collect()
}

/// Whether [`derive_index`] derives the records again, for a head at
/// `head` and [`StateKey::Indexed`] at `covered`.
fn derives(head: u64, covered: Option<u64>) -> bool {
    covered != Some(head)
}

/// Derives the pending transfers' records and the transfer count
/// ([`StateKey::Pending`], [`StateKey::TransferCount`]) from the blocks'
/// transfer records, unless [`StateKey::Indexed`] says they cover the
/// head: a state written before they existed, or written since by an
/// alliance that does not keep them (a node rolled back, then forward),
/// or installed from such a snapshot, gets them anew. Written in batches,
/// the marker last: a stop in between derives them again.
pub(super) fn derive_index(store: &Store) -> Result<(), StorageError> {
    let tree = &store.state;
    let head = match tree.get(StateKey::Head.encode()).map_err(read_err)? {
        Some(v) => decode::<BlockHeader>(&v).map_err(read_err)?.height,
        None => 0,
    };
    let covered = (tree.get(StateKey::Indexed.encode()).map_err(read_err)?)
        .and_then(|v| decode::<u64>(&v).ok());
    if !derives(head, covered) {
        return Ok(());
    }
    // Records of transfers no longer pending may be among those there.
    let mut batch = sled::Batch::default();
    for key in tree.scan_prefix([PENDING_TAG]).keys() {
        batch.remove(key.map_err(read_err)?);
    }
    let (mut in_batch, mut count, mut blocks) = (0, 0u64, 0u64);
    let mut failed = None;
    for_each_transfer_block(tree, |height, block| {
        blocks += 1;
        for t in &block {
            if t.height == height {
                count += 1;
            }
            let pending = StateKey::Pending(&t.id).encode();
            if t.state == TransferState::Pending {
                batch.insert(pending, encode(t));
            } else if t.height < height {
                batch.remove(pending);
            }
            in_batch += 1;
        }
        if in_batch >= INSTALL_BATCH_KEYS && failed.is_none() {
            failed = tree.apply_batch(std::mem::take(&mut batch)).err();
            in_batch = 0;
        }
    })
    .map_err(read_err)?;
    if let Some(e) = failed {
        return Err(write_err(e));
    }
    if blocks > 0 {
        tracing::info!(
            blocks,
            transfers = count,
            "derived the pending records and the count"
        );
    }
    batch.insert(StateKey::TransferCount.encode(), encode(&count));
    batch.insert(StateKey::Indexed.encode(), encode(&head));
    tree.apply_batch(batch).map_err(write_err)?;
    store.durable.sync().map_err(write_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::state_machine::history::Run;

    /// Pages of history that reads would misnumber are refused pair by
    /// pair.
    #[test]
    fn pages_that_would_overflow_are_refused() {
        let a = AccountId::parse("org1.a").unwrap();
        let page = |first_seq, items| Page {
            first_seq,
            runs: vec![Run {
                height: 1,
                chunk: 0,
                last_chunk: 0,
                items,
            }],
        };
        let check = |at: u64, page: Page| {
            check_received(&StateKey::HistoryPage(&a, at).encode(), &encode(&page)).map(|_| ())
        };
        assert_eq!(check(32, page(32, 16)), Ok(()));
        assert_eq!(check(SEQ_MAX - 16, page(SEQ_MAX - 16, 16)), Ok(()));
        let err = check(32, page(48, 16)).unwrap_err();
        assert!(
            err.contains("starts at item 48 under the key of another"),
            "{err}"
        );
        let err = check(SEQ_MAX - 15, page(SEQ_MAX - 15, 16)).unwrap_err();
        assert!(
            err.contains("items numbered 4611686018427387904 or more"),
            "{err}"
        );
        let err = check(u64::MAX - 1, page(u64::MAX - 1, 5)).unwrap_err();
        assert!(
            err.contains("items numbered 4611686018427387904 or more"),
            "{err}"
        );
    }
}
