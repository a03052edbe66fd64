//! Where the accounts' history items are stored.
//!
//! A block's items are stored together, in chunks keyed by the block's
//! height ([`StateKey::HistoryChunk`]): a block appends a few keys at the
//! end of their part of the tree, however many accounts it touches. Each
//! account's items of one block are consecutive there (a run). An
//! account finds its runs through its pages: the runs in the order of
//! their items, each naming its block, the chunk its first item is in and
//! how many items it has. An account's last page, its tail
//! ([`StateKey::HistoryTail`]), takes a run for every block that touches
//! the account; once it has [`PAGE_RUNS`] it is stored whole under its
//! first item's sequence ([`StateKey::HistoryPage`]) and a new tail
//! begins. So a block stores a new key for an account only once in
//! [`PAGE_RUNS`] blocks: a key per account per block made most of the
//! state writer's work on transfers spread over many accounts.
//!
//! Apply keeps every account's tail in memory ([`Tails`], at most
//! [`PAGE_RUNS`] runs each), and reads take the tails from there and the
//! full pages from sled. The tails that changed are stored once every
//! [`TAILS_STORED_EVERY`] blocks (sooner past [`TAILS_CHANGED_MAX`]),
//! beside the height they cover
//! ([`StateKey::TailsStored`]), in the batch of that block: rewriting
//! them with every block took a sixth of the throughput of blocks spread
//! over 10,000 accounts. The blocks in between store the runs they add
//! ([`StateKey::HistoryRuns`]: an account id and three numbers a run,
//! appended), which the next store of the tails removes. At start (and
//! after a snapshot is installed) the stored tails are read and the runs
//! stored after them added. The runs are records of their own, not read
//! from the history chunks, so a chunk that no longer decodes fails the
//! reads of its items, not the start of the node.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::writer::StateBatch;
use crate::codec::{decode, encode};
use crate::ledger::{Account, AccountId, HistoryItem, Ledger, Seeded};
use crate::raft::store::{chunks, StateKey, HISTORY_RUNS_TAG, HISTORY_TAIL_TAG};

/// Runs in a page: a tail is stored as a page of its own once it has
/// this many.
pub const PAGE_RUNS: usize = 16;

/// Past any sequence an account's history reaches (a million items a
/// second for over 100,000 years): stored history that ends past it is
/// refused, so that the next item's sequence never overflows.
pub(super) const SEQ_MAX: u64 = 1 << 62;

/// Blocks between two stores of the tails that changed: the runs of fewer
/// blocks than this are added to the stored tails at start.
pub const TAILS_STORED_EVERY: u64 = 32;

/// Most tails changed since they were stored: a block that leaves more
/// stores them sooner. Blocks that touch many accounts each (which any
/// member may send, once it has opened them) would otherwise gather up to
/// [`TAILS_STORED_EVERY`] blocks' worth into one write, stalling the state
/// writer; this bounds a store to about two blocks' accounts.
pub const TAILS_CHANGED_MAX: usize = 16_384;

/// One block's items of one account.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// The block.
    pub height: u64,
    /// The numbers of the block's history chunks that hold its first and
    /// its last item.
    pub chunk: u32,
    pub last_chunk: u32,
    pub items: u32,
}

/// Consecutive runs of one account, from its item `first_seq` on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    pub first_seq: u64,
    pub runs: Vec<Run>,
}

impl Page {
    /// One past the sequence of the page's last item.
    pub fn end_seq(&self) -> u64 {
        self.first_seq + self.runs.iter().map(|r| u64::from(r.items)).sum::<u64>()
    }

    /// [`Self::end_seq`], if it is at most [`SEQ_MAX`].
    pub(super) fn checked_end_seq(&self) -> Option<u64> {
        (self.runs.iter())
            .try_fold(self.first_seq, |end, r| end.checked_add(u64::from(r.items)))
            .filter(|end| *end <= SEQ_MAX)
    }

    /// The run that holds item `seq`, with its first item's sequence.
    pub fn run_holding(&self, seq: u64) -> Option<(u64, Run)> {
        let mut first = self.first_seq;
        for run in &self.runs {
            let end = first + u64::from(run.items);
            if (first..end).contains(&seq) {
                return Some((first, *run));
            }
            first = end;
        }
        None
    }
}

/// Why the stored tails could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TailError {
    #[error("the store failed: {0}")]
    Store(#[from] sled::Error),
    #[error("the history record at key {key} does not decode: {why}")]
    Corrupt { key: String, why: String },
    #[error("account {account} has {items} items of history, but its pages of history hold {end}")]
    Disagrees {
        account: AccountId,
        items: u64,
        end: u64,
    },
    #[error("the history of account {0} is stored, but the account is not")]
    NoAccount(AccountId),
    #[error("the history record at key {key} holds items of {account} numbered {SEQ_MAX} or more")]
    PastSeqMax { key: String, account: AccountId },
}

/// Every account's tail, as apply keeps them.
#[derive(Debug, Default, PartialEq, Eq)]
#[cfg_attr(test, derive(Clone))]
pub struct Tails {
    pages: HashMap<AccountId, Page, Seeded>,
    /// The accounts whose tails changed since the tails were stored.
    changed: HashSet<AccountId, Seeded>,
    /// The height of the last block the stored tails cover.
    stored: u64,
    /// The keys of the runs of the blocks after `stored`.
    runs_keys: Vec<Vec<u8>>,
    /// [`TAILS_CHANGED_MAX`], smaller in tests.
    changed_max: Option<usize>,
}

/// A record of the stored tails that does not decode or fit, as an error.
fn corrupt(key: &[u8], why: String) -> TailError {
    TailError::Corrupt {
        key: hex::encode(key),
        why,
    }
}

/// A record of the stored tails whose items pass [`SEQ_MAX`], as an error.
fn past_seq_max(key: &[u8], account: AccountId) -> TailError {
    TailError::PastSeqMax {
        key: hex::encode(key),
        account,
    }
}

/// The first key of the runs stored after tails stored at `height`.
pub(super) fn runs_from(height: u64) -> Vec<u8> {
    StateKey::HistoryRuns(height.saturating_add(1), 0).encode()
}

/// A run a block added to an account's tail, as stored for the blocks
/// after the stored tails ([`StateKey::HistoryRuns`]); written with the
/// account borrowed from the block's items, read back owned.
#[derive(Debug, Serialize, Deserialize)]
struct AddedRun<A> {
    account: A,
    first_seq: u64,
    run: Run,
}

impl Tails {
    /// The tails stored in `tree`, keyed by `ledger`'s own account ids
    /// (one copy of each id in memory), with the runs of the blocks after
    /// them added.
    pub fn load(tree: &sled::Tree, ledger: &Ledger) -> Result<Self, TailError> {
        let key = StateKey::TailsStored.encode();
        let stored = match tree.get(&key)? {
            Some(v) => decode(&v).map_err(|e| corrupt(&key, e.to_string()))?,
            None => 0,
        };
        let runs = tree.range(runs_from(stored)..);
        let tails = Self::assemble(
            stored,
            tree.scan_prefix([HISTORY_TAIL_TAG]),
            runs.take_while(|kv| {
                kv.as_ref()
                    .map_or(true, |(key, _)| key.first() == Some(&HISTORY_RUNS_TAG))
            }),
            |id| ledger.account(&id).map_or(id, |a| a.id.clone()),
        )?;
        tails.check_accounts(ledger.accounts().map(|a| (&a.id, a.history_len)), |id| {
            ledger.account(id).map(|a| a.history_len)
        })?;
        Ok(tails)
    }

    /// Checks what [`Self::load`] reads of a received snapshot: the height
    /// its last pages cover, those pages and its stored runs, by key (a
    /// key given twice counts once, as sled keeps it), against its
    /// accounts' numbers of history items.
    pub fn check_received(
        stored: u64,
        pages: &BTreeMap<Vec<u8>, Vec<u8>>,
        runs: &BTreeMap<Vec<u8>, Vec<u8>>,
        accounts: &HashMap<AccountId, Account, Seeded>,
    ) -> Result<(), TailError> {
        let runs = runs.range(runs_from(stored)..).map(Ok);
        let tails = Self::assemble(stored, pages.iter().map(Ok), runs, |id| id)?;
        tails.check_accounts(accounts.values().map(|a| (&a.id, a.history_len)), |id| {
            accounts.get(id).map(|a| a.history_len)
        })
    }

    /// Checks that each of `accounts` (with its number of history items)
    /// has a tail whose pages hold that many (none: no item), and that
    /// each tail's account is one `items_of` knows: apply appends an
    /// account's next item to its tail, and an item that does not follow
    /// the tail stops it. Of several accounts at fault, the error names
    /// the least id.
    fn check_accounts<'a>(
        &self,
        accounts: impl IntoIterator<Item = (&'a AccountId, u64)>,
        items_of: impl Fn(&AccountId) -> Option<u64>,
    ) -> Result<(), TailError> {
        let disagrees = (accounts.into_iter())
            .map(|(account, items)| (account, items, self.get(account).map_or(0, Page::end_seq)))
            .filter(|(_, items, end)| items != end)
            .min_by(|a, b| a.0.cmp(b.0));
        if let Some((account, items, end)) = disagrees {
            let account = account.clone();
            return Err(TailError::Disagrees {
                account,
                items,
                end,
            });
        }
        let unknown = self.pages.keys().filter(|id| items_of(id).is_none()).min();
        match unknown {
            Some(id) => Err(TailError::NoAccount(id.clone())),
            None => Ok(()),
        }
    }

    /// The tails of `pages` (under [`HISTORY_TAIL_TAG`]) stored at height
    /// `stored`, with `runs` (of the blocks after it, in key order) added;
    /// each account id as `own_id` gives it.
    fn assemble<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        stored: u64,
        pages: impl IntoIterator<Item = Result<(K, V), sled::Error>>,
        runs: impl IntoIterator<Item = Result<(K, V), sled::Error>>,
        own_id: impl Fn(AccountId) -> AccountId,
    ) -> Result<Self, TailError> {
        let mut tails = Self {
            stored,
            ..Self::default()
        };
        for kv in pages {
            let (key, value) = kv?;
            let (key, value) = (key.as_ref(), value.as_ref());
            let id = std::str::from_utf8(&key[1..]).map_err(|e| corrupt(key, e.to_string()))?;
            let id = AccountId::parse(id).map_err(|e| corrupt(key, e.to_string()))?;
            let page: Page = decode(value).map_err(|e| corrupt(key, e.to_string()))?;
            if page.checked_end_seq().is_none() {
                return Err(past_seq_max(key, id));
            }
            tails.pages.insert(own_id(id), page);
        }
        for kv in runs {
            let (key, value) = kv?;
            let (key, value) = (key.as_ref(), value.as_ref());
            let runs: Vec<AddedRun<AccountId>> =
                decode(value).map_err(|e| corrupt(key, e.to_string()))?;
            for AddedRun {
                account,
                first_seq,
                run,
            } in runs
            {
                let end = tails.get(&account).map_or(0, Page::end_seq);
                if end != first_seq {
                    let why = format!(
                        "{account}'s run starts at item {first_seq}, but its tail ends at {end}"
                    );
                    return Err(corrupt(key, why));
                }
                if first_seq
                    .checked_add(u64::from(run.items))
                    .is_none_or(|e| e > SEQ_MAX)
                {
                    return Err(past_seq_max(key, account));
                }
                // The page this run may fill was stored with its block.
                tails.add(own_id(account), first_seq, run);
            }
            tails.runs_keys.push(key.to_vec());
        }
        Ok(tails)
    }

    /// The height of the last block the stored tails cover.
    pub fn stored(&self) -> u64 {
        self.stored
    }

    /// `account`'s tail, if it has items.
    pub fn get(&self, account: &AccountId) -> Option<&Page> {
        self.pages.get(account)
    }

    /// Puts block `height`'s history `items` (encoded as `bytes`) into
    /// `batch`: the block's chunks, the pages its runs fill, and either the
    /// runs it adds to the tails or, once every [`TAILS_STORED_EVERY`]
    /// blocks or past [`TAILS_CHANGED_MAX`] changed, the tails that
    /// changed.
    pub fn put(
        &mut self,
        batch: &mut StateBatch,
        height: u64,
        items: &[HistoryItem],
        bytes: &[&[u8]],
    ) {
        // Each account's items side by side, in the order of their
        // sequence (a block may interleave accounts: a transfer's two sides).
        let mut at_of: HashMap<&AccountId, usize, Seeded> = HashMap::default();
        let mut groups: Vec<Vec<usize>> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let group = *at_of.entry(&item.account).or_insert_with(|| {
                groups.push(Vec::new());
                groups.len() - 1
            });
            groups[group].push(i);
        }
        let order: Vec<usize> = groups.into_iter().flatten().collect();
        let items: Vec<&HistoryItem> = order.iter().map(|&i| &items[i]).collect();
        let bytes: Vec<&[u8]> = order.iter().map(|&i| bytes[i]).collect();
        let chunks = chunks(&bytes);
        for (n, (_, chunk)) in (0..).zip(&chunks) {
            batch.insert(StateKey::HistoryChunk(height, n).encode(), chunk.as_slice());
        }
        // The chunk that holds item `i`: the last starting at or before it.
        let chunk_of = |i: usize| {
            let n = chunks.partition_point(|(first, _)| *first <= i) - 1;
            u32::try_from(n).expect("fewer than 2^32 chunks")
        };
        let mut added = Vec::new();
        let mut at = 0;
        while at < items.len() {
            let account = &items[at].account;
            let items_of = items[at..]
                .iter()
                .take_while(|i| i.account == *account)
                .count();
            let first_seq = items[at].seq;
            assert!(
                (items[at..at + items_of].iter())
                    .zip(first_seq..)
                    .all(|(i, seq)| i.seq == seq),
                "an account's items of a block are consecutive"
            );
            let run = Run {
                height,
                chunk: chunk_of(at),
                last_chunk: chunk_of(at + items_of - 1),
                items: u32::try_from(items_of).expect("fewer than 2^32 items"),
            };
            if let Some(full) = self.add(account.clone(), first_seq, run) {
                batch.insert(
                    StateKey::HistoryPage(account, full.first_seq).encode(),
                    encode(&full),
                );
            }
            added.push(AddedRun {
                account,
                first_seq,
                run,
            });
            at += items_of;
        }
        let changed_max = self.changed_max.unwrap_or(TAILS_CHANGED_MAX);
        if height >= self.stored + TAILS_STORED_EVERY || self.changed.len() > changed_max {
            self.store(batch, height);
        } else {
            let added: Vec<Vec<u8>> = added.iter().map(encode).collect();
            let added = crate::raft::store::chunks(&added);
            for (n, (_, chunk)) in (0..).zip(added) {
                let key = StateKey::HistoryRuns(height, n).encode();
                self.runs_keys.push(key.clone());
                batch.insert(key, chunk);
            }
        }
    }

    /// Puts the tails that changed into `batch`, as covering block
    /// `height`, in place of the runs stored since they were last stored.
    fn store(&mut self, batch: &mut StateBatch, height: u64) {
        for account in self.changed.drain() {
            let tail = &self.pages[&account];
            batch.insert(StateKey::HistoryTail(&account).encode(), encode(tail));
        }
        for key in self.runs_keys.drain(..) {
            batch.remove(key);
        }
        batch.insert(StateKey::TailsStored.encode(), encode(&height));
        self.stored = height;
    }

    /// Adds `run`, `account`'s items from `first_seq`, to its tail; the
    /// page it filled, if it did.
    fn add(&mut self, account: AccountId, first_seq: u64, run: Run) -> Option<Page> {
        // A new tail starts the account's history.
        let tail = self.pages.entry(account.clone()).or_default();
        assert_eq!(
            tail.end_seq(),
            first_seq,
            "an account's items of a block follow its earlier ones"
        );
        tail.runs.push(run);
        self.changed.insert(account);
        (tail.runs.len() >= PAGE_RUNS).then(|| {
            let full = std::mem::take(tail);
            tail.first_seq = full.end_seq();
            full
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{Amount, Event, TransferId};

    /// A block of one transfer's items to each of `accounts`, each the
    /// account's item `seq`.
    fn block(accounts: &[AccountId], seq: u64, height: u64) -> Vec<HistoryItem> {
        let item = |account: &AccountId| HistoryItem {
            account: account.clone(),
            seq,
            transfer: TransferId::parse(&format!("org1.t{height}")).unwrap(),
            event: Event::Posted,
            debit: false,
            amount: Amount::new(1).unwrap(),
            balance_after: 1,
            debits_pending_after: 0,
            credits_pending_after: 0,
            height,
            log_index: height,
            timestamp_ms: height,
        };
        accounts.iter().map(item).collect()
    }

    /// Whether `put`ting `items` stored the tails.
    fn stores(tails: &mut Tails, height: u64, items: &[HistoryItem]) -> bool {
        let bytes: Vec<Vec<u8>> = items.iter().map(encode).collect();
        let bytes: Vec<&[u8]> = bytes.iter().map(Vec::as_slice).collect();
        tails.put(&mut StateBatch::default(), height, items, &bytes);
        tails.stored() == height
    }

    /// Tails are stored every [`TAILS_STORED_EVERY`] blocks, and sooner
    /// when blocks touching many accounts have changed more than the most
    /// allowed: no store writes more than about two blocks' accounts.
    #[test]
    fn tails_are_stored_every_few_blocks_or_once_too_many_changed() {
        let ids = |from: usize, n: usize| -> Vec<AccountId> {
            (from..from + n)
                .map(|i| AccountId::parse(&format!("org1.a{i}")).unwrap())
                .collect()
        };
        let mut tails = Tails::default();
        let few = ids(0, 3);
        let stored: Vec<u64> = (1..=70)
            .filter(|&h| stores(&mut tails, h, &block(&few, h - 1, h)))
            .collect();
        assert_eq!(stored, [32, 64], "every {TAILS_STORED_EVERY} blocks");

        let mut tails = Tails {
            changed_max: Some(25),
            ..Tails::default()
        };
        let mut stored = Vec::new();
        for h in 1..=10u64 {
            // Each block touches 10 accounts no earlier block did.
            let touched = ids(10 * h as usize, 10);
            if stores(&mut tails, h, &block(&touched, 0, h)) {
                stored.push(h);
            }
            assert!(
                tails.changed.len() <= 25,
                "block {h}: {}",
                tails.changed.len()
            );
        }
        assert_eq!(stored, [3, 6, 9], "once more than 25 changed");
    }

    /// Stored history whose items' sequence would pass [`SEQ_MAX`] (a
    /// last page, or a run added to it) is refused: the account's next
    /// item would overflow it.
    #[test]
    fn history_ending_past_the_largest_sequence_is_refused() {
        let a = AccountId::parse("org1.a").unwrap();
        let run = |items| Run {
            height: 1,
            chunk: 0,
            last_chunk: 0,
            items,
        };
        let check = |first_seq: u64, items: u32, added: &[u32]| {
            let page = Page {
                first_seq,
                runs: vec![run(items)],
            };
            let pages = BTreeMap::from([(StateKey::HistoryTail(&a).encode(), encode(&page))]);
            let mut end = first_seq.saturating_add(u64::from(items));
            let mut runs = BTreeMap::new();
            for (h, n) in (2..).zip(added) {
                let added = AddedRun {
                    account: &a,
                    first_seq: end,
                    run: run(*n),
                };
                runs.insert(StateKey::HistoryRuns(h, 0).encode(), encode(&vec![added]));
                end = end.saturating_add(u64::from(*n));
            }
            let account = Account {
                history_len: end,
                ..Account::for_test(a.as_str())
            };
            let accounts = HashMap::from_iter([(a.clone(), account)]);
            Tails::check_received(1, &pages, &runs, &accounts).map_err(|e| e.to_string())
        };
        assert_eq!(check(SEQ_MAX - 3, 1, &[2]), Ok(()));
        let past = "holds items of org1.a numbered 4611686018427387904 or more";
        let err = check(u64::MAX - 1, 5, &[]).unwrap_err();
        assert!(err.contains(past), "{err}");
        let err = check(SEQ_MAX, 1, &[]).unwrap_err();
        assert!(err.contains(past), "{err}");
        let err = check(SEQ_MAX - 3, 1, &[2, 1]).unwrap_err();
        assert!(err.contains(past), "{err}");
    }
}
