//! openraft's own storage test suite, run against our sled stores.

use std::collections::BTreeSet;

use openraft::testing::{StoreBuilder, Suite};

use super::log_store::LogStore;
use super::state_machine::{StateMachine, StateRead, PAGE_RUNS};
use super::store::Store;
use super::{LogId, StorageError, TypeConfig};
use crate::ledger::{
    AccountId, Actor, Amount, Asset, Blinding, Command, Entry, Evidence, Ledger, NewAccount,
    NewTransfer, OrgName, Outcome, Rejection, Role, TransferId, TransferState,
};

/// Accepts every unit's evidence: these tests are of storage; evidence is
/// checked by `identity::attest`'s tests and the cluster tests.
struct AcceptAll;

impl super::state_machine::OriginCheck for AcceptAll {
    fn verdicts(
        &self,
        entry: &Entry,
        _clock_ms: u64,
        _gov: &crate::ledger::Gov,
    ) -> Vec<crate::ledger::Verdict> {
        vec![Ok(()); entry.units()]
    }
}

fn accept_all() -> std::sync::Arc<AcceptAll> {
    std::sync::Arc::new(AcceptAll)
}

/// Each build gets a fresh sled directory; the guard removes it.
struct SledBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for SledBuilder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("open sled");
        let sm = StateMachine::open(store.clone(), Default::default(), [0; 32], accept_all())?;
        Ok((dir, LogStore::new(store), sm))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(SledBuilder).expect("openraft storage suite");
}

/// Regression: under load a sync listed a blob file that sled removed
/// before it was opened, and the failed open killed the node's Raft (found by
/// `alliance bench` with 256 clients). A listed blob that is gone is skipped.
#[test]
fn a_blob_removed_after_listing_does_not_fail_the_sync() {
    use std::collections::HashSet;
    use std::ffi::OsString;
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("7"), b"blob").expect("blob");
    let listed = vec![OsString::from("7"), OsString::from("8")]; // 8: removed meanwhile
    let mut synced = HashSet::new();
    super::store::sync_blobs(dir.path(), listed, &mut synced)
        .expect("a vanished blob is not an error");
    assert_eq!(
        synced,
        HashSet::from([OsString::from("7")]),
        "only present blobs are remembered"
    );
}

/// Appends waiting together share a sync: one that began after a write
/// covers it. A plain sync (vote, truncation, snapshot) always runs, since
/// its write is not numbered.
#[test]
fn a_sync_that_began_after_a_write_covers_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path()).expect("open sled");
    let durable = &store.durable;
    let before = durable.syncs_done();
    store.log.insert(b"a", b"1").expect("write a");
    let a = durable.issued();
    store.log.insert(b"b", b"2").expect("write b");
    let b = durable.issued();
    durable.sync_after(b).expect("sync for b");
    assert_eq!(durable.syncs_done(), before + 1, "b's sync ran");
    durable.sync_after(a).expect("sync for a");
    assert_eq!(durable.syncs_done(), before + 1, "b's sync began after a");
    store.log.insert(b"c", b"3").expect("write c");
    let c = durable.issued();
    durable.sync_after(c).expect("sync for c");
    assert_eq!(
        durable.syncs_done(),
        before + 2,
        "c came after the last sync"
    );
    durable.sync().expect("plain sync");
    assert_eq!(durable.syncs_done(), before + 3, "a plain sync always runs");
}

/// After a failed sync every later one fails too (`Durable::sync_inner`
/// checks `failure` first), and nothing more counts as synced: a later
/// append's success must not cover an earlier failure.
#[test]
fn a_failed_sync_fails_every_later_one() {
    let mut synced = super::store::Synced::default();
    synced.record(Ok(()), 1).expect("the first sync succeeds");
    let e = synced
        .record(Err(std::io::Error::other("EIO")), 2)
        .expect_err("the second fails");
    assert!(e.to_string().contains("EIO"), "{e}");
    let e = synced.failure().expect("the failure is remembered");
    assert!(e.to_string().contains("an earlier sync failed: EIO"), "{e}");
    assert_eq!(synced.upto(), 1, "only the first sync's writes are durable");
}

/// A data dir written before the binary encoding is refused with a clear
/// error, not misread; a new one gets the format and opens again.
#[test]
fn a_data_dir_in_another_format_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    drop(Store::open(dir.path()).expect("a new data dir opens"));
    drop(reopen(dir.path()));

    let old = tempfile::tempdir().expect("temp dir");
    {
        let db = sled::open(old.path()).expect("sled");
        let log = db.open_tree("log").expect("tree");
        log.insert(1u64.to_be_bytes(), &br#"{"log_id":{}}"#[..])
            .expect("insert");
        db.flush().expect("flush");
    }
    let err = once_unlocked(|| Store::open(old.path()))
        .err()
        .expect("an old data dir is refused");
    assert!(
        err.to_string().contains("written by an earlier alliance"),
        "{err}"
    );
    let log = once_unlocked(|| sled::open(old.path()))
        .expect("sled")
        .open_tree("log")
        .expect("tree");
    assert_eq!(log.len(), 1, "refusing changes nothing");
}

/// A data dir of format 8 (whole log entries) opens and is marked as
/// today's format, which an alliance of format 8 refuses; an older
/// format is refused.
#[test]
fn a_data_dir_of_the_format_before_opens_and_is_marked_as_this_one() {
    let marked = |dir: &std::path::Path, format: &str| {
        let db = sled::open(dir).expect("sled");
        db.insert(b"format", format.as_bytes()).expect("insert");
        db.flush().expect("flush");
    };
    let format = |dir: &std::path::Path| {
        let db = once_unlocked(|| sled::open(dir)).expect("sled");
        String::from_utf8(db.get(b"format").unwrap().unwrap().to_vec()).unwrap()
    };
    let before = tempfile::tempdir().expect("temp dir");
    marked(before.path(), "alliance-postcard-8");
    drop(once_unlocked(|| Store::open(before.path())).expect("format 8 opens"));
    assert_eq!(format(before.path()), super::store::FORMAT);
    assert_eq!(super::store::FORMAT, "alliance-postcard-9");

    let older = tempfile::tempdir().expect("temp dir");
    marked(older.path(), "alliance-postcard-7");
    let err = once_unlocked(|| Store::open(older.path()))
        .err()
        .expect("format 7 is refused");
    assert!(
        err.to_string()
            .contains(r#"in format "alliance-postcard-7""#),
        "{err}"
    );
    assert_eq!(format(older.path()), "alliance-postcard-7", "unchanged");
}

/// Applies `commands` (one entry each, as org1's admin) to a state machine
/// on a fresh sled directory.
async fn applied(dir: &std::path::Path, commands: Vec<Command>) -> StateMachine {
    let store = Store::open(dir).expect("open sled");
    let orgs = ["org1", "org2"].map(|o| OrgName::parse(o).unwrap());
    // Nothing of the transfer index held once on disk, a run per entry:
    // every id an entry names is looked up there.
    let mut sm = StateMachine::open(store, orgs.into(), [0; 32], accept_all())
        .expect("open")
        .index_held_max(0)
        .index_run_ids(1);
    apply_more(&mut sm, commands).await;
    sm
}

/// Opens the store of a dropped state machine (see [`once_unlocked`]).
pub(super) fn reopen(dir: &std::path::Path) -> Store {
    once_unlocked(|| Store::open(dir)).expect("reopen sled")
}

/// Runs `open` until it no longer fails on sled's directory lock, up to a
/// deadline. sled's background flusher keeps the database, and with it the
/// lock, alive for a moment after the last handle is dropped, so opening a
/// directory right after closing it in the same process can find it taken.
pub(super) fn once_unlocked<T, E: std::fmt::Display>(
    mut open: impl FnMut() -> Result<T, E>,
) -> Result<T, E> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        match open() {
            Err(e) if e.to_string().contains("could not acquire lock") => {
                assert!(std::time::Instant::now() < deadline, "still locked: {e}");
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// Applies `commands` after the last applied entry, as org1's admin, one
/// entry each; returns their outcomes.
async fn apply_more(sm: &mut StateMachine, commands: Vec<Command>) -> Vec<Outcome> {
    use openraft::storage::RaftStateMachine;
    let admin = Actor {
        org: OrgName::parse("org1").unwrap(),
        role: Role::Admin,
    };
    let next = sm.shared().read().last_applied.map_or(1, |l| l.index + 1);
    let entries = (next..)
        .zip(commands)
        .map(|(index, command)| openraft::Entry {
            log_id: LogId::new(openraft::CommittedLeaderId::new(1, 0), index),
            payload: openraft::EntryPayload::Normal(std::sync::Arc::new(Entry {
                actor: admin.clone(),
                timestamp_ms: 1_700_000_000_000 + index,
                command,
                evidence: Evidence::Leader,
                blinding: Blinding([index as u8; 16]),
            })),
        });
    let replies = sm.apply(entries.collect::<Vec<_>>()).await.expect("apply");
    replies
        .into_iter()
        .map(|r| r.expect("a normal entry has an outcome"))
        .collect()
}

/// A transfer without memo or timeout.
/// Ledgers `a` and `b` are the same, but for which ids of the transfer
/// index each holds; every id held is where `sm` finds the transfer's
/// latest version.
fn assert_same_ledger(sm: &StateMachine, a: Ledger, b: Ledger, what: &str) {
    for (id, height) in a.held_index().chain(b.held_index()) {
        let id = TransferId::parse(id).unwrap();
        let t = sm.shared().read_stored().transfer(&id).unwrap();
        let at = t.map(|t| t.resolved_height.unwrap_or(t.height));
        assert_eq!(at, Some(height), "{what}: {id} is held where it is");
    }
    assert_eq!(a.without_held(), b.without_held(), "{what}");
}

fn new_transfer(id: &str, from: &str, to: &str, amount: u64, pending: bool) -> NewTransfer {
    NewTransfer {
        id: TransferId::parse(id).unwrap(),
        debit_account: AccountId::parse(from).unwrap(),
        credit_account: AccountId::parse(to).unwrap(),
        amount: Amount::new(amount).unwrap(),
        asset: None,
        memo: None,
        pending,
        timeout_ms: None,
    }
}

/// One entry of independent transfers.
fn batch(transfers: Vec<NewTransfer>) -> Command {
    Command::Transfers {
        transfers,
        atomic: false,
    }
}

/// Opens a USD account; `org1.issue` may go negative (it issues money).
fn account(id: &str) -> Command {
    Command::CreateAccount(NewAccount {
        id: AccountId::parse(id).unwrap(),
        asset: Asset::parse("USD").unwrap(),
        allow_negative: id == "org1.issue",
        readers: Default::default(),
        balance_max: None,
    })
}

/// A block's history is stored as one record set, found through each
/// account's pages of runs, and its transfers as one record set. Every
/// page and every as-of-height read gives what item-by-item storage gave,
/// also after a restart (which loads the accounts' last pages), and a
/// restart loads each transfer's latest version.
#[tokio::test]
async fn grouped_history_and_transfers_read_back_item_by_item() {
    let transfer = |id: &str, from: &str, to: &str, pending: bool| {
        new_transfer(id, from, to, id.len() as u64, pending)
    };
    // Runs of one and of many items (more than one chunk holds), two
    // accounts interleaved in a block, and a pending transfer posted two
    // blocks later.
    let mut big: Vec<NewTransfer> = (0..150)
        .map(|i| {
            let to = if i % 3 == 0 { "org1.b" } else { "org1.a" };
            transfer(&format!("org1.t{i}"), "org1.issue", to, false)
        })
        .collect();
    big.push(transfer("org1.pend", "org1.a", "org1.b", true));
    let commands = vec![
        account("org1.issue"),
        account("org1.a"),
        account("org1.b"),
        batch(vec![transfer("org1.first", "org1.issue", "org1.a", false)]),
        batch(big),
        batch(vec![transfer("org1.x", "org1.a", "org1.b", false)]),
        Command::PostPending {
            id: TransferId::parse("org1.pend").unwrap(),
            amount: None,
        },
        batch(
            (0..5)
                .map(|i| transfer(&format!("org1.u{i}"), "org1.b", "org1.a", false))
                .collect(),
        ),
    ];
    // Enough blocks for stored pages of runs, and a tail after them.
    let singles = (0..2 * PAGE_RUNS + 3).map(|i| {
        let (from, to) = if i % 2 == 0 {
            ("org1.a", "org1.b")
        } else {
            ("org1.b", "org1.a")
        };
        batch(vec![transfer(&format!("org1.s{i}"), from, to, false)])
    });
    let commands: Vec<Command> = commands.into_iter().chain(singles).collect();
    let dir = tempfile::tempdir().expect("temp dir");
    let sm = applied(dir.path(), commands).await;
    let before = sm.shared().read().ledger.clone();
    let state = sm.shared();
    let histories = history_reads_match_the_items(&state.read());
    let read = state.read();
    assert!(
        histories[1] > 2 * PAGE_RUNS,
        "org1.a's {} runs fill pages",
        histories[1]
    );
    let history_a = read
        .history(&AccountId::parse("org1.a").unwrap(), 0, usize::MAX)
        .unwrap();
    let heights: BTreeSet<u64> = history_a.iter().map(|i| i.height).collect();
    assert!(
        history_a.len() > heights.len(),
        "some block holds a run of many items"
    );
    let pend = TransferId::parse("org1.pend").unwrap();
    assert_eq!(
        read.transfer(&pend).unwrap().unwrap().state,
        TransferState::Posted
    );
    assert_eq!(before.transfer(&pend), None, "settled: on disk only");
    let tails = read.tails.clone();
    tails_stored_below_head(&read);
    drop(read);
    drop((state, sm));

    let store = reopen(dir.path());
    let stored = super::store::stored_transfers(&store.state).expect("stored transfers");
    assert_eq!(stored.len() as u64, before.transfer_count());
    use super::store::{CHUNK_BYTES, HISTORY_TAG, TRANSFERS_TAG};
    let values = |tag: u8| -> Vec<(sled::IVec, sled::IVec)> {
        let kvs = store.state.scan_prefix([tag]).map(|kv| kv.unwrap());
        kvs.collect()
    };
    let (history, chunks) = (values(HISTORY_TAG), values(TRANSFERS_TAG));
    let runs = values(super::store::HISTORY_RUNS_TAG);
    let height = |key: &[u8]| u64::from_be_bytes(key[1..9].try_into().unwrap());
    assert!(
        !runs.is_empty() && runs.iter().all(|(k, _)| height(k) > tails.stored()),
        "the runs of the blocks after the stored tails, and only those, are kept"
    );
    let history_blocks: BTreeSet<&[u8]> = history.iter().map(|(k, _)| &k[1..9]).collect();
    assert!(
        history.len() > history_blocks.len(),
        "{} history chunks in {} blocks: a big block's history is chunked",
        history.len(),
        history_blocks.len()
    );
    let blocks: BTreeSet<&[u8]> = chunks.iter().map(|(k, _)| &k[1..9]).collect();
    assert_eq!(
        blocks.len(),
        5 + 2 * PAGE_RUNS + 3,
        "every block of transfers stores them"
    );
    assert!(
        chunks.len() > 5,
        "{} chunks: a big block is chunked",
        chunks.len()
    );
    let items: u64 = before.accounts().map(|a| a.history_len).sum();
    assert!(
        items > history.len() as u64,
        "{items} items in {} history chunks",
        history.len()
    );
    for (key, value) in history.iter().chain(&chunks) {
        // A chunk passes the limit by its last record at most.
        assert!(
            value.len() <= CHUNK_BYTES + 256,
            "{key:?}: {} bytes",
            value.len()
        );
    }

    let orgs = before.orgs().clone();
    let reopened = StateMachine::open(store, orgs, [0; 32], accept_all()).expect("reopen");
    let after = reopened.shared().read().ledger.clone();
    assert_same_ledger(&reopened, after, before, "a restart loads the same ledger");
    let reread = history_reads_match_the_items(&reopened.shared().read());
    assert_eq!(reread, histories, "the same runs after a restart");
    assert_eq!(
        reopened.shared().read().tails,
        tails,
        "the stored tails and the blocks after them make the same tails"
    );
}

/// The history tails were stored (see [`super::state_machine::history`]),
/// and the blocks after them will be read again when the state is loaded.
fn tails_stored_below_head(read: &StateRead<'_>) {
    let (stored, head) = (read.tails.stored(), read.ledger.height());
    assert!(
        0 < stored && stored < head,
        "the tails stored at block {stored}, below the head at {head}"
    );
}

/// Runs that do not follow the stored tails (one block's runs stored again
/// under a later block) stop the load with an error naming their key, not
/// a panic.
#[tokio::test]
async fn runs_that_do_not_follow_the_tails_are_a_load_error() {
    let pay = |id: &str| batch(vec![new_transfer(id, "org1.issue", "org1.a", 1, false)]);
    let commands = vec![
        account("org1.issue"),
        account("org1.a"),
        pay("org1.t1"),
        pay("org1.t2"),
    ];
    let dir = tempfile::tempdir().expect("temp dir");
    drop(applied(dir.path(), commands).await);
    let store = reopen(dir.path());
    let runs = store.state.scan_prefix([super::store::HISTORY_RUNS_TAG]);
    let runs: Vec<_> = runs.map(|kv| kv.unwrap()).collect();
    assert_eq!(
        runs.len(),
        2,
        "the runs of each block after the stored tails"
    );
    store.state.insert(&runs[1].0, runs[0].1.clone()).unwrap();
    let orgs = ["org1", "org2"].map(|o| OrgName::parse(o).unwrap());
    let Err(e) = StateMachine::open(store, orgs.into(), [0; 32], accept_all()) else {
        panic!("loaded runs that do not follow the tails");
    };
    assert!(
        e.to_string()
            .contains("starts at item 0, but its tail ends at 1"),
        "{e}"
    );
}

/// Checks every history page and as-of-height read of the three accounts
/// of [`grouped_history_and_transfers_read_back_item_by_item`] against
/// their whole histories; how many runs (distinct heights) each has.
fn history_reads_match_the_items(read: &StateRead<'_>) -> Vec<usize> {
    let mut runs = Vec::new();
    for id in ["org1.issue", "org1.a", "org1.b"] {
        let id = AccountId::parse(id).unwrap();
        let acct = read.ledger.account(&id).unwrap();
        let all = read.history(&id, 0, usize::MAX).expect("history");
        let seqs: Vec<u64> = all.iter().map(|i| i.seq).collect();
        assert_eq!(
            seqs,
            (0..acct.history_len).collect::<Vec<_>>(),
            "{id}: every item once, in order"
        );
        assert_eq!(all.last().unwrap().balance_after, acct.balance(), "{id}");
        assert!(
            all.iter().all(|i| i.account == id),
            "{id}: only its own items"
        );
        let len = all.len();
        for from in 0..=len + 1 {
            for limit in [1, 2, 3, 7, 40, len] {
                let page = read.history(&id, from as u64, limit).expect("page");
                let want = &all[from.min(len)..(from + limit).min(len)];
                assert_eq!(page, want, "{id} from {from} limit {limit}");
            }
        }
        for h in 0..=read.ledger.height() + 1 {
            let at = read.history_at_height(&id, h).expect("at height");
            let want = all.iter().rfind(|i| i.height <= h);
            assert_eq!(at.as_ref(), want, "{id} at height {h}");
        }
        let heights: BTreeSet<u64> = all.iter().map(|i| i.height).collect();
        runs.push(heights.len());
    }
    runs
}

/// A state stored before the pending transfers' records and the count were,
/// or installed from a snapshot without them, has them derived at start:
/// the same keys as apply writes, and the same ledger.
#[tokio::test]
async fn missing_pending_records_are_derived_at_start() {
    use crate::raft::store::{StateKey, PENDING_TAG};
    let transfer =
        |name: &str, pending: bool| new_transfer(name, "org1.issue", "org1.a", 5, pending);
    let dir = tempfile::tempdir().expect("temp dir");
    let mut sm = applied(dir.path(), vec![account("org1.issue"), account("org1.a")]).await;
    let made = vec![
        transfer("org1.x", false),
        transfer("org1.p", true),
        transfer("org1.q", true),
    ];
    let post = Command::PostPending {
        id: TransferId::parse("org1.q").unwrap(),
        amount: None,
    };
    apply_more(&mut sm, vec![batch(made), post]).await;
    let derived = |state: &sled::Tree| {
        let keys = [StateKey::TransferCount.encode(), StateKey::Indexed.encode()];
        let singles = keys.map(|k| (k.clone(), state.get(k).unwrap().expect("set")));
        let mut all: Vec<(Vec<u8>, Vec<u8>)> =
            singles.into_iter().map(|(k, v)| (k, v.to_vec())).collect();
        all.extend(
            state
                .scan_prefix([PENDING_TAG])
                .map(|kv| kv.unwrap())
                .map(|(k, v)| (k.to_vec(), v.to_vec())),
        );
        all
    };
    let before = sm.shared().read_stored().ledger.clone();
    drop(sm);
    let store = reopen(dir.path());
    let as_applied = derived(&store.state);
    assert_eq!(as_applied.len(), 2 + 1, "one pending");
    for (key, _) in &as_applied {
        store.state.remove(key).unwrap();
    }
    let state = store.state.clone();
    let orgs = before.orgs().clone();
    let sm = StateMachine::open(store, orgs.clone(), [0; 32], accept_all()).expect("reopen");
    assert_eq!(derived(&state), as_applied, "derived as applied wrote them");
    let after = sm.shared().read().ledger.clone();
    assert_same_ledger(&sm, after, before.clone(), "the same ledger");

    // Blocks applied by an alliance that keeps no pending records (rolled
    // back, then forward) leave them stale: here org1.x, settled, has one,
    // and the marker names an earlier block.
    drop((sm, state));
    let store = reopen(dir.path());
    let (pending_key, record) = as_applied.last().cloned().expect("org1.p's");
    let x = TransferId::parse("org1.x").unwrap();
    store
        .state
        .insert(StateKey::Pending(&x).encode(), record)
        .unwrap();
    store.state.remove(pending_key).unwrap();
    let marker = crate::codec::encode(&1u64);
    store
        .state
        .insert(StateKey::Indexed.encode(), marker)
        .unwrap();
    let state = store.state.clone();
    let sm = StateMachine::open(store, orgs, [0; 32], accept_all()).expect("reopen");
    assert_eq!(derived(&state), as_applied, "derived anew");
    let after = sm.shared().read().ledger.clone();
    assert_same_ledger(&sm, after, before, "the same ledger again");
}

/// The transfer index on disk, in runs (many small ones here, merged as
/// they grow): every id an entry names again is found where its latest
/// version is, before and after a restart, a new id is new, and memory
/// holds few of the ids.
#[tokio::test]
async fn the_transfer_index_in_runs_finds_every_transfer() {
    let dir = tempfile::tempdir().expect("temp dir");
    let open = |store: Store| {
        let orgs = ["org1", "org2"].map(|o| OrgName::parse(o).unwrap());
        StateMachine::open(store, orgs.into(), [0; 32], accept_all())
            .expect("open")
            .index_held_max(0)
            .index_run_ids(8)
    };
    let mut sm = open(Store::open(dir.path()).expect("open sled"));
    apply_more(&mut sm, vec![account("org1.issue"), account("org1.a")]).await;
    let id = |s: String| TransferId::parse(&s).unwrap();
    // Each round: five transfers, the first pending, and one refused for
    // want of funds, of an amount that the rounds after it make (a
    // refusal forgotten would be a transfer on a re-send); the last
    // round's pending one posted.
    let refused = |r: usize| {
        let amount = 100 + 5 * r as u64;
        new_transfer(&format!("org1.r{r}"), "org1.a", "org1.issue", amount, false)
    };
    let round = |r: usize| {
        let made = (0..5)
            .map(|k| new_transfer(&format!("org1.t{r}-{k}"), "org1.issue", "org1.a", 1, k == 0));
        let mut commands = vec![batch(made.chain([refused(r)]).collect())];
        if r > 0 {
            commands.push(Command::PostPending {
                id: id(format!("org1.t{}-0", r - 1)),
                amount: None,
            });
        }
        commands
    };
    let made = |o: &Outcome| match o {
        Outcome::Transfers(items) => items
            .iter()
            .map(|r| {
                r.as_ref()
                    .map(|t| (t.id.clone(), t.height, t.leaf_index))
                    .map_err(|e| *e)
            })
            .collect::<Vec<_>>(),
        other => panic!("not a batch's outcome: {other:?}"),
    };
    let mut first = Vec::new();
    for r in 0..80 {
        first.push(apply_more(&mut sm, round(r)).await);
        // The writer catches up, so that runs are made as they would be.
        drop(sm.shared().read_stored());
    }
    // 50 runs of 8 were made; merged, each size class of four keeps at
    // most three. Flushes and merges run behind apply, a flush at a time:
    // each apply takes what they made, and the ledger drops the ids a
    // flush put on sled.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (runs, held) = {
            let state = sm.shared();
            let read = state.read();
            (read.index.runs(), read.ledger.indexed_len())
        };
        if (2..=12).contains(&runs) && held < 100 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{runs} runs of 400 ids, {held} of them held"
        );
        drop(sm.shared().read_stored());
        apply_more(&mut sm, vec![Command::Tick]).await;
    }
    let held = sm.shared().read().ledger.refusals_held();
    assert!(held <= 6, "{held} of 80 refusals held");
    assert_eq!(
        made(&first[3][0])[5],
        Err(Rejection::InsufficientFunds),
        "a refusal each round"
    );
    for restart in [false, true] {
        if restart {
            let before = sm.shared().read_stored().ledger.clone();
            drop(sm);
            sm = open(reopen(dir.path()));
            let after = sm.shared().read().ledger.clone();
            assert_same_ledger(&sm, after, before, "a restart loads the same");
        }
        for (r, first) in first.iter().enumerate() {
            let again = apply_more(&mut sm, round(r)).await;
            // The same transfers (at their latest versions: posted now).
            assert_eq!(made(&again[0]), made(&first[0]), "round {r}");
            if r > 0 {
                assert_eq!(again[1], first[1], "round {r}: the post again");
            }
        }
        let shared = sm.shared();
        let read = shared.read_stored();
        assert_eq!(read.ledger.transfer_count(), 400, "no second transfer");
        let t = read
            .transfer(&id("org1.t3-0".into()))
            .unwrap()
            .expect("found");
        assert_eq!(t.state, TransferState::Posted, "its latest version");
    }
    let held = sm.shared().read().ledger.refusals_held();
    assert!(held <= 6, "{held} of 80 refusals held after re-sends");
    let mut other = refused(3);
    other.amount = Amount::new(999).unwrap();
    let again = apply_more(&mut sm, vec![batch(vec![other])]).await;
    assert_eq!(
        made(&again[0]),
        [Err(Rejection::ExistsWithDifferentFields)],
        "a refused id stays taken"
    );
    let new = apply_more(&mut sm, round(80)).await;
    let new = made(&new[0]);
    assert!(new[..5].iter().all(Result::is_ok), "{new:?}");
    assert_eq!(sm.shared().read().ledger.transfer_count(), 405);
}

/// Settled transfers live on disk only. An entry that names one again (a
/// re-send, a post or void of a settled pending transfer) is answered from
/// its stored record, as it was first answered, before and after a
/// restart, and makes no second transfer.
#[tokio::test]
async fn a_settled_transfer_named_again_gets_its_original_answer() {
    let id = |s: &str| TransferId::parse(s).unwrap();
    let transfer = |name: &str, amount: u64, pending: bool| {
        new_transfer(name, "org1.issue", "org1.a", amount, pending)
    };
    let originals = vec![
        transfer("org1.plain", 5, false),
        transfer("org1.held", 7, true),
        transfer("org1.posted", 9, true),
    ];
    let post = Command::PostPending {
        id: id("org1.posted"),
        amount: Some(Amount::new(3).unwrap()),
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let mut sm = applied(dir.path(), vec![account("org1.issue"), account("org1.a")]).await;
    let first = apply_more(&mut sm, vec![batch(originals.clone()), post.clone()]).await;
    // Once in runs on disk, the transfer index leaves memory (the bounds
    // are 0 and 1 here): what follows finds every id there.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while sm.shared().read().ledger.indexed_len() > 0 {
        assert!(std::time::Instant::now() < deadline, "never all on disk");
        drop(sm.shared().read_stored());
        apply_more(&mut sm, vec![Command::Tick]).await;
    }
    let plain = sm.shared().read_stored().transfer(&id("org1.plain"));
    assert_eq!(
        plain.unwrap().map(|t| t.amount),
        Some(Amount::new(5).unwrap()),
        "read back"
    );
    let a = AccountId::parse("org1.a").unwrap();
    let state_of = |sm: &StateMachine| {
        let shared = sm.shared();
        let read = shared.read();
        let in_memory: Vec<String> = read.ledger.transfers().map(|t| t.id.to_string()).collect();
        let account = read.ledger.account(&a).cloned().unwrap();
        (in_memory, read.ledger.transfer_count(), account)
    };
    let before = state_of(&sm);
    assert_eq!(
        before.0,
        ["org1.held"],
        "only the pending transfer stays in memory"
    );
    assert_eq!(before.1, 3);

    let current = |sm: &StateMachine| {
        let shared = sm.shared();
        let read = shared.read();
        ["org1.plain", "org1.held", "org1.posted"]
            .map(|s| Ok(read.transfer(&id(s)).unwrap().unwrap()))
    };
    let Outcome::Transfers(created) = &first[0] else {
        panic!("a batch answers per item: {:?}", first[0]);
    };
    let now = current(&sm);
    assert_eq!(created[..2], now[..2], "plain and held are as created");
    assert_eq!(now[2].as_ref().map(|t| t.state), Ok(TransferState::Posted));

    let mut changed = transfer("org1.plain", 6, false);
    changed.memo = Some("another body".into());
    let named_again = vec![
        batch(originals.clone()),
        post.clone(),
        batch(vec![changed]),
        Command::VoidPending {
            id: id("org1.posted"),
        },
    ];
    for round in ["before a restart", "after a restart"] {
        let again = apply_more(&mut sm, named_again.clone()).await;
        assert_eq!(
            again[0],
            Outcome::Transfers(current(&sm).to_vec()),
            "{round}"
        );
        assert_eq!(again[1], first[1], "{round}: the post again");
        assert_eq!(
            again[2],
            Outcome::Transfers(vec![Err(Rejection::ExistsWithDifferentFields)]),
            "{round}"
        );
        assert_eq!(
            again[3],
            Outcome::Transfer(Err(Rejection::PendingTransferAlreadyPosted)),
            "{round}"
        );
        assert_eq!(state_of(&sm), before, "{round}: nothing changed");

        let ledger = sm.shared().read().ledger.clone();
        drop(sm);
        let store = reopen(dir.path());
        let orgs = ledger.orgs().clone();
        sm = StateMachine::open(store, orgs, [0; 32], accept_all()).expect("reopen");
        let after = sm.shared().read().ledger.clone();
        assert_same_ledger(&sm, after, ledger, "a restart loads the same");
    }
}

/// Entries applied together that name stored transfers: the second loads
/// another stored transfer, which queues the changes so far and forgets
/// the settled transfers they touched, among them one the first entry
/// loaded and the second names too. It must be loaded again, not assumed
/// still in memory (a replica stopped on "stored but was not loaded").
#[tokio::test]
async fn entries_applied_together_load_every_stored_transfer_they_name() {
    let x = new_transfer("org1.x", "org1.issue", "org1.a", 5, false);
    let y = new_transfer("org1.y", "org1.issue", "org1.a", 7, false);
    let dir = tempfile::tempdir().expect("temp dir");
    let mut sm = applied(dir.path(), vec![account("org1.issue"), account("org1.a")]).await;
    let made = apply_more(
        &mut sm,
        vec![batch(vec![x.clone()]), batch(vec![y.clone()])],
    )
    .await;
    let again = apply_more(
        &mut sm,
        vec![batch(vec![x.clone()]), batch(vec![x.clone(), y.clone()])],
    )
    .await;
    let Outcome::Transfers(first) = &made[0] else {
        panic!("{:?}", made[0]);
    };
    let Outcome::Transfers(second) = &made[1] else {
        panic!("{:?}", made[1]);
    };
    assert_eq!(again[0], Outcome::Transfers(first.clone()));
    let both = [first[0].clone(), second[0].clone()].to_vec();
    assert_eq!(
        again[1],
        Outcome::Transfers(both),
        "re-sends get their answers"
    );
}

/// Only leaf hashes are stored. Every transfer version a block stored
/// renders to one of that block's leaves (created, posted, voided and
/// expired alike), and each transfer's proof leaf, rendered from the record
/// its creating block stored, is the leaf at its index.
#[tokio::test]
async fn stored_transfer_records_render_to_their_blocks_leaves() {
    use crate::ledger::{chain, transfer_leaf};
    let transfer = |id: &str, pending: bool, timeout_ms: Option<u64>| NewTransfer {
        memo: Some(format!("memo of {id}")),
        timeout_ms,
        ..new_transfer(id, "org1.issue", "org1.a", 5, pending)
    };
    let id = |s: &str| TransferId::parse(s).unwrap();
    let commands = vec![
        account("org1.issue"),
        account("org1.a"),
        batch(vec![
            transfer("org1.plain", false, None),
            transfer("org1.to-post", true, None),
            transfer("org1.to-void", true, None),
            // Expires on the ledger clock (1 ms per entry here).
            transfer("org1.to-expire", true, Some(1)),
        ]),
        Command::PostPending {
            id: id("org1.to-post"),
            amount: None,
        },
        Command::VoidPending {
            id: id("org1.to-void"),
        },
        // A re-send: answered with the original, stores no new version.
        batch(vec![transfer("org1.plain", false, None)]),
        Command::Tick,
    ];
    let dir = tempfile::tempdir().expect("temp dir");
    let sm = applied(dir.path(), commands).await;
    let state = sm.shared();
    let read = state.read();
    let ledger = &read.ledger;
    let expired = read.transfer(&id("org1.to-expire")).unwrap().unwrap();
    assert_eq!(expired.state, TransferState::Expired, "the expiry ran");
    let transfers: Vec<_> = [
        "org1.plain",
        "org1.to-post",
        "org1.to-void",
        "org1.to-expire",
    ]
    .map(|s| read.transfer(&id(s)).unwrap().expect("stored"))
    .into();
    assert_eq!(ledger.transfer_count(), transfers.len() as u64);

    let mut versions = 0;

    for h in 1..=ledger.height() {
        let header = read.block(h).unwrap().expect("every block is stored");
        let hashes = read.leaf_hashes(h).unwrap().expect("and its leaf hashes");
        assert_eq!(hashes.len() as u64, header.leaf_count, "block {h}");
        assert_eq!(chain::merkle_root(&hashes), header.merkle_root, "block {h}");
        let blinding = read.blinding(h).unwrap().expect("and its blinding");
        let blinded = |leaf: &str, i: usize| {
            let blind = chain::leaf_blind(&blinding, i as u64);
            chain::blinded_leaf_hash(&blind, leaf.as_bytes())
        };
        for t in &transfers {
            if let Some(v) = read.transfer_at(h, &t.id).unwrap() {
                versions += 1;
                let leaf = transfer_leaf(&v);
                assert!(
                    (0..hashes.len()).any(|i| hashes[i] == blinded(&leaf, i)),
                    "{} as block {h} left it",
                    t.id
                );
            }
        }
    }
    assert_eq!(versions, 4 + 3, "four created, three resolved");
    for t in &transfers {
        let created = read.transfer_at(t.height, &t.id).unwrap().expect("stored");
        let hashes = read.leaf_hashes(t.height).unwrap().unwrap();
        let blinding = read.blinding(t.height).unwrap().unwrap();
        let blind = chain::leaf_blind(&blinding, t.leaf_index);
        assert_eq!(
            chain::blinded_leaf_hash(&blind, transfer_leaf(&created).as_bytes()),
            hashes[t.leaf_index as usize],
            "{}: the proof leaf",
            t.id
        );
    }
    assert!(
        transfer_leaf(&expired).starts_with(r#"{"expired":"#),
        "an expired version renders as the expiry leaf"
    );
}

/// A snapshot in an earlier layout (v2: one key per transfer and history
/// item; v3: leaves as JSON; v5: no blindings; v6 and v7: a key per
/// account and block of history; v8: every tail stored with every block)
/// is refused, not installed and misread.
#[tokio::test]
async fn a_snapshot_of_the_earlier_layout_is_refused() {
    use openraft::storage::{RaftStateMachine, SnapshotMeta};
    let dir = tempfile::tempdir().expect("temp dir");
    let mut sm = applied(dir.path(), Vec::new()).await;
    let meta = SnapshotMeta {
        last_log_id: Some(LogId::new(openraft::CommittedLeaderId::new(1, 0), 5)),
        last_membership: Default::default(),
        snapshot_id: "old".into(),
    };
    for old in [
        &b"alliance-state-v2\n"[..],
        b"alliance-state-v3\n",
        b"alliance-state-v5\n",
        b"alliance-state-v6\n",
        b"alliance-state-v7\n",
        b"alliance-state-v8\n",
    ] {
        let mut data = sm.begin_receiving_snapshot().await.expect("a file");
        tokio::io::AsyncWriteExt::write_all(&mut data, old)
            .await
            .expect("written");
        let err = sm
            .install_snapshot(&meta, data)
            .await
            .expect_err("an earlier layout is refused");
        assert!(
            err.to_string().contains("not an alliance snapshot"),
            "{err}"
        );
        assert_eq!(sm.shared().read().last_applied, None, "nothing installed");
    }
}

/// A snapshot holds the blocks' history and every account's pages: the
/// node that installs it reads the same histories.
#[tokio::test]
async fn an_installed_snapshot_reads_the_same_histories() {
    use openraft::storage::RaftSnapshotBuilder;
    let pay = |i: usize, from: &str, to: &str, amount: u64| {
        let id = format!("org1.p{i}");
        batch(vec![new_transfer(&id, from, to, amount, false)])
    };
    let mut commands = vec![
        account("org1.issue"),
        account("org1.a"),
        account("org1.b"),
        pay(0, "org1.issue", "org1.a", 1_000),
        pay(1, "org1.issue", "org1.b", 1_000),
    ];
    commands.extend((2..2 * PAGE_RUNS + 5).map(|i| pay(i, "org1.a", "org1.b", 1)));
    let leader_dir = tempfile::tempdir().expect("temp dir");
    let mut leader = applied(leader_dir.path(), commands).await;
    let built = leader.build_snapshot().await.expect("snapshot");
    let want = history_reads_match_the_items(&leader.shared().read());
    assert!(want[1] > 2 * PAGE_RUNS, "stored pages: {want:?}");
    tails_stored_below_head(&leader.shared().read());
    let dir = tempfile::tempdir().expect("temp dir");
    let sm = installed(dir.path(), built).await;
    assert_eq!(history_reads_match_the_items(&sm.shared().read()), want);
    assert_eq!(sm.shared().read().tails, leader.shared().read().tails);
}

/// A read deep in a long run (one block of many transfers to an account,
/// which any member may send it) decodes a few of the run's chunks, not
/// all of them.
#[tokio::test]
async fn a_read_inside_a_long_run_reads_a_few_chunks() {
    use super::state_machine::CHUNKS_READ;
    let many = (0..3_000)
        .map(|i| new_transfer(&format!("org1.m{i}"), "org1.issue", "org1.a", 1, false))
        .collect();
    let dir = tempfile::tempdir().expect("temp dir");
    let commands = vec![account("org1.issue"), account("org1.a"), batch(many)];
    let sm = applied(dir.path(), commands).await;
    let state = sm.shared();
    let read = state.read();
    let a = AccountId::parse("org1.a").unwrap();
    let reads = |f: &dyn Fn()| {
        let before = CHUNKS_READ.with(|c| c.get());
        f();
        CHUNKS_READ.with(|c| c.get()) - before
    };
    let all = reads(&|| assert_eq!(read.history(&a, 0, usize::MAX).unwrap().len(), 3_000));
    assert!(all >= 20, "the run spans {all} chunks");
    let deep = reads(&|| {
        let page = read.history(&a, 2_500, 10).unwrap();
        assert_eq!(
            page.iter().map(|i| i.seq).collect::<Vec<_>>(),
            (2_500..2_510).collect::<Vec<_>>()
        );
    });
    let last = reads(&|| {
        let at = read.history_at_height(&a, read.ledger.height()).unwrap();
        assert_eq!(at.map(|i| i.seq), Some(2_999));
    });
    let bound = u64::from(2 + u64::BITS - all.leading_zeros());
    assert!(
        deep <= bound && last <= bound,
        "{deep} and {last} of {all} chunks"
    );
}

/// The pairs of a snapshot's data (its magic line, then each key and
/// value after its length, u32 big-endian), and back.
fn snapshot_pairs(data: &[u8]) -> (Vec<u8>, Vec<Pair>) {
    let magic = data.iter().position(|b| *b == b'\n').expect("a magic line") + 1;
    let (mut rest, mut pairs) = (&data[magic..], Vec::new());
    let take = |rest: &mut &[u8]| {
        let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        let part = rest[4..4 + len].to_vec();
        *rest = &rest[4 + len..];
        part
    };
    while !rest.is_empty() {
        let key = take(&mut rest);
        pairs.push((key, take(&mut rest)));
    }
    (data[..magic].to_vec(), pairs)
}

/// A key and its value.
type Pair = (Vec<u8>, Vec<u8>);

fn snapshot_data(magic: &[u8], pairs: &[Pair]) -> Vec<u8> {
    let mut data = magic.to_vec();
    for part in pairs.iter().flat_map(|(k, v)| [k, v]) {
        data.extend_from_slice(&(part.len() as u32).to_be_bytes());
        data.extend_from_slice(part);
    }
    data
}

/// A received snapshot whose ledger records the node could not load (a
/// head or a height of the stored last pages that does not decode, a
/// pending record of a settled transfer or under another id, an account
/// under another's key, a last page of history under a key that is no
/// account id, a run's filter cut short or chunk that a lookup could not
/// read or that names a block past the head, a block's transfer records or
/// runs of history that do not decode, runs of history that do not
/// continue the last pages, last pages or runs of history past the head,
/// history that does not end where its account's does or whose account
/// is not there, an overdrawn account, pending debits that are not its
/// pending transfers', the mark of an install under way, a correction no
/// proposal made, a ledger clock that is not its head's time, a registry
/// of nodes that does not add up)
/// is refused before it replaces anything: the node
/// keeps the state it had, in memory and on sled.
#[tokio::test]
async fn a_snapshot_the_ledger_could_not_load_is_refused_before_it_replaces_anything() {
    use crate::raft::store::{
        StateKey, ACCOUNT_TAG, FILTER_TAG, HISTORY_RUNS_TAG, HISTORY_TAIL_TAG, PENDING_TAG,
        RUN_TAG, TRANSFERS_TAG,
    };
    use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
    use tokio::io::AsyncWriteExt;
    let mut commands = one_payment();
    commands.push(batch(vec![new_transfer(
        "org1.held",
        "org1.issue",
        "org1.a",
        7,
        true,
    )]));
    let leader_dir = tempfile::tempdir().expect("temp dir");
    let mut leader = applied(leader_dir.path(), commands).await;
    // A run of the transfer index on sled, with its filter (a run of each
    // id here): the index's jobs run behind apply.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while leader.shared().read().index.runs() == 0 {
        assert!(std::time::Instant::now() < deadline, "no run of the index");
        drop(leader.shared().read_stored());
        apply_more(&mut leader, vec![Command::Tick]).await;
    }
    let built = leader.build_snapshot().await.expect("snapshot");
    let meta = built.meta.clone();
    let (magic, pairs) = snapshot_pairs(&bytes(built.snapshot).await);
    assert!(
        pairs.iter().any(|(k, _)| k[0] == PENDING_TAG),
        "a pending record"
    );
    let keys_of = |tag: u8| {
        pairs
            .iter()
            .filter(move |(k, _)| k[0] == tag)
            .map(|(k, _)| k)
    };
    for tag in [FILTER_TAG, TRANSFERS_TAG] {
        assert!(keys_of(tag).next().is_some(), "keys of {tag:#x}");
    }
    assert!(keys_of(HISTORY_RUNS_TAG).count() >= 2, "runs of two blocks");
    let first_runs = keys_of(HISTORY_RUNS_TAG).min().expect("runs").clone();
    let head = StateKey::Head.encode();
    let tails = StateKey::TailsStored.encode();
    let history = "the snapshot holds history the node could not load";
    let continues = format!("{history}: the history record at key …, but its tail ends at");
    let undecodable = format!(
        "{history}: the history record at key {}",
        hex::encode(&first_runs)
    );
    let a_key = [&[ACCOUNT_TAG][..], b"org1.a"].concat();
    let with_account = |v: &mut Vec<u8>, change: &dyn Fn(&mut crate::ledger::Account)| {
        let mut a: crate::ledger::Account = crate::codec::decode(v).unwrap();
        change(&mut a);
        *v = crate::codec::encode(&a);
    };
    type Tamper<'a> = Box<dyn Fn(&mut Vec<u8>, &mut Vec<u8>) + 'a>;
    let clock = StateKey::Clock.encode();
    let count = StateKey::TransferCount.encode();
    // A registry whose organization lists a node it does not run.
    let members = [(OrgName::parse("org1").unwrap(), {
        crate::ledger::gov::Gov::founder(Vec::new(), [1].into())
    })];
    let gov = crate::ledger::gov::Gov::founding(members, Default::default());
    let could_not = "the snapshot holds a ledger the node could not apply to";
    let tampered: [(&str, Tamper); 22] = [
        (
            "the snapshot's head does not decode",
            Box::new(|k, v| {
                if *k == head {
                    *v = vec![0xff; 3];
                }
            }),
        ),
        (
            "the snapshot's height of the stored last pages does not decode",
            Box::new(|k, v| {
                if *k == head {
                    (*k, *v) = (tails.clone(), vec![0xff; 11]);
                }
            }),
        ),
        (
            "a last page of history under a key that is not an account id",
            Box::new(|k, _| {
                if *k == [&[ACCOUNT_TAG][..], b"org1.issue"].concat() {
                    *k = [&[HISTORY_TAIL_TAG][..], b"no id"].concat();
                }
            }),
        ),
        (
            "(Posted) as a pending transfer under the key of \"org1.held\"",
            Box::new(|k, v| {
                if k[0] == PENDING_TAG {
                    let mut t: crate::ledger::Transfer = crate::codec::decode(v).unwrap();
                    t.state = TransferState::Posted;
                    *v = crate::codec::encode(&t);
                }
            }),
        ),
        (
            "as a pending transfer under the key of \"org1.other\"",
            Box::new(|k, _| {
                if k[0] == PENDING_TAG {
                    *k = [&[PENDING_TAG][..], b"org1.other"].concat();
                }
            }),
        ),
        (
            "the snapshot holds account org1.a under the key of another",
            Box::new(|k, _| {
                if *k == [&[ACCOUNT_TAG][..], b"org1.a"].concat() {
                    *k = [&[ACCOUNT_TAG][..], b"org1.z"].concat();
                }
            }),
        ),
        (
            "the snapshot holds the transfer index: run",
            Box::new(|k, v| {
                if k[0] == FILTER_TAG {
                    v.pop();
                }
            }),
        ),
        (
            "the snapshot's transfer records: transfers of block",
            Box::new(|k, v| {
                if k[0] == TRANSFERS_TAG {
                    *v = vec![0xff; 3];
                }
            }),
        ),
        (
            &undecodable,
            Box::new(|k, v| {
                if k[0] == HISTORY_RUNS_TAG {
                    *v = vec![0xff; 3];
                }
            }),
        ),
        (
            // The first block's runs moved where no load reads them.
            &continues,
            Box::new(|k, _| {
                if *k == first_runs {
                    *k = StateKey::HistoryRuns(0, 0).encode();
                }
            }),
        ),
        (
            "the snapshot's last pages of history cover block 1000, past its head (",
            Box::new(|k, v| {
                if *k == StateKey::Clock.encode() {
                    (*k, *v) = (tails.clone(), crate::codec::encode(&1_000u64));
                }
            }),
        ),
        (
            "history the node could not load: account org1.a has 3 items of history, \
             but its pages of history hold 2",
            Box::new(|k, v| {
                if *k == a_key {
                    with_account(v, &|a| a.history_len += 1);
                }
            }),
        ),
        (
            // org1.a as org1.b, with no history of its own.
            "history the node could not load: the history of account org1.a is stored, \
             but the account is not",
            Box::new(|k, v| {
                if *k == a_key {
                    let b = AccountId::parse("org1.b").unwrap();
                    *k = [&[ACCOUNT_TAG][..], b"org1.b"].concat();
                    with_account(v, &|a| (a.id, a.history_len) = (b.clone(), 0));
                }
            }),
        ),
        (
            "a ledger the node could not apply to: account org1.a holds 0 in pending debits \
             and 7 in pending credits, but its pending transfers hold 0 and 8",
            Box::new(|k, v| {
                if k[0] == PENDING_TAG {
                    let mut t: crate::ledger::Transfer = crate::codec::decode(v).unwrap();
                    t.amount = crate::ledger::Amount::new(8).unwrap();
                    *v = crate::codec::encode(&t);
                }
            }),
        ),
        (
            "a ledger the node could not apply to: account org1.a is overdrawn",
            Box::new(|k, v| {
                if *k == a_key {
                    with_account(v, &|a| a.debits_posted = a.credits_posted + 1);
                }
            }),
        ),
        (
            "the snapshot holds runs of history of block 1000, past its head (",
            Box::new(|k, _| {
                if *k == first_runs {
                    *k = StateKey::HistoryRuns(1_000, 0).encode();
                }
            }),
        ),
        (
            "the mark of an install under way",
            Box::new(|k, _| {
                if *k == StateKey::Clock.encode() {
                    *k = StateKey::Installing.encode();
                }
            }),
        ),
        (
            "the snapshot holds the transfer index: the index chunk at …: ",
            Box::new(|k, v| {
                if k[0] == RUN_TAG {
                    *v = vec![0xff; 3];
                }
            }),
        ),
        (
            "the snapshot holds the transfer index: the index chunk at …: its ids are not in \
             order from its key's, or one is stored in block 1000000, past the head",
            Box::new(|k, v| {
                if k[0] == RUN_TAG {
                    let first = std::str::from_utf8(&k[9..]).unwrap();
                    *v = postcard::to_allocvec(&(1u64, first, 1_000_000u64)).unwrap();
                }
            }),
        ),
        (
            // Apply takes a correction's id to be new.
            "the snapshot holds transfer gov.correction-1 in block …, which no executed \
             correction made",
            Box::new(|k, v| {
                if k[0] == TRANSFERS_TAG {
                    let (_, mut chunk) = crate::raft::store::transfers_chunk(k, v).unwrap();
                    chunk[0].id = crate::ledger::TransferId::parse("gov.correction-1").unwrap();
                    *v = crate::codec::encode(&chunk);
                }
            }),
        ),
        (
            // Each block sets both.
            &format!(
                "{could_not}: the ledger clock reads 1 ms, but the head, block …, was made at"
            ),
            Box::new(|k, v| {
                if *k == clock {
                    *v = crate::codec::encode(&1u64);
                }
            }),
        ),
        (
            &format!(
                "{could_not}: the governance state: organization org1 lists nodes {{1}}, \
                 but runs {{}}"
            ),
            Box::new(|k, v| {
                if *k == count {
                    (*k, *v) = (StateKey::Gov.encode(), crate::codec::encode(&gov));
                }
            }),
        ),
    ];
    let dir = tempfile::tempdir().expect("temp dir");
    let mut sm = applied(dir.path(), vec![account("org1.mine")]).await;
    let before = sm.shared().read().last_applied;
    assert!(before.is_some());
    let orgs = ["org1", "org2"].map(|o| OrgName::parse(o).unwrap());
    let mine = AccountId::parse("org1.mine").unwrap();
    for (expected, tamper) in tampered {
        let mut pairs = pairs.clone();
        for (k, v) in &mut pairs {
            tamper(k, v);
        }
        let mut data = sm.begin_receiving_snapshot().await.expect("a file");
        data.write_all(&snapshot_data(&magic, &pairs))
            .await
            .unwrap();
        let err = sm.install_snapshot(&meta, data).await.expect_err("refused");
        // Each part, in order ("…" between parts).
        let mut rest = err.to_string();
        for part in expected.split('…') {
            let at = rest
                .find(part)
                .unwrap_or_else(|| panic!("{expected}: {err}"));
            rest = rest[at + part.len()..].to_string();
        }
        {
            let state = sm.shared();
            let read = state.read();
            assert_eq!(read.last_applied, before, "{expected}: nothing installed");
            assert!(
                read.ledger.account(&mine).is_some(),
                "{expected}: the old state"
            );
        }
        // What sled holds is the old state too: a restart loads it.
        drop(sm);
        let store = reopen(dir.path());
        sm = StateMachine::open(store, orgs.clone().into(), [0; 32], accept_all())
            .unwrap_or_else(|e| panic!("{expected}: reopen: {e}"));
        let state = sm.shared();
        let read = state.read();
        assert_eq!(
            read.last_applied, before,
            "{expected}: the old state on sled"
        );
        assert!(read.ledger.account(&mine).is_some(), "{expected}");
    }
    // Without the marker that its pending records and transfer count
    // cover the head (a state of an alliance that does not keep them), it
    // installs: they are derived again from the blocks, its pending
    // transfer among them.
    let indexed = StateKey::Indexed.encode();
    assert!(pairs.iter().any(|(k, _)| *k == indexed), "the marker");
    let unmarked: Vec<Pair> = pairs
        .iter()
        .filter(|(k, _)| *k != indexed)
        .cloned()
        .collect();
    let other = tempfile::tempdir().expect("temp dir");
    let mut fresh = applied(other.path(), Vec::new()).await;
    let mut data = fresh.begin_receiving_snapshot().await.expect("a file");
    data.write_all(&snapshot_data(&magic, &unmarked))
        .await
        .unwrap();
    fresh
        .install_snapshot(&meta, data)
        .await
        .expect("installed");
    let held = TransferId::parse("org1.held").unwrap();
    let state = fresh.shared();
    let read = state.read();
    let t = read
        .ledger
        .transfers()
        .find(|t| t.id == held)
        .expect("held");
    assert_eq!(t.state, TransferState::Pending);
    drop(read);
    // Untampered, it installs.
    let mut data = sm.begin_receiving_snapshot().await.expect("a file");
    data.write_all(&snapshot_data(&magic, &pairs))
        .await
        .unwrap();
    sm.install_snapshot(&meta, data).await.expect("installed");
    assert_eq!(sm.shared().read().last_applied, meta.last_log_id);
}

/// A new state machine in `dir` that has installed `built`.
async fn installed(
    dir: &std::path::Path,
    built: openraft::storage::Snapshot<TypeConfig>,
) -> StateMachine {
    use openraft::storage::RaftStateMachine;
    use tokio::io::AsyncWriteExt;
    let mut sm = applied(dir, Vec::new()).await;
    let mut data = sm.begin_receiving_snapshot().await.expect("a file");
    data.write_all(&bytes(built.snapshot).await).await.unwrap();
    sm.install_snapshot(&built.meta, data)
        .await
        .expect("install");
    sm
}

/// A read never waits for an install: once a snapshot begins to replace
/// the state, `install_begun` resolves and `try_read` answers `None` at
/// once, both before the install has the state lock (a read held here
/// keeps it from taking it); once installed, reads see the new state.
#[tokio::test(flavor = "multi_thread")]
async fn reads_meet_an_install_without_waiting_for_it() {
    use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut source = applied(dir.path(), one_payment()).await;
    let built = (source.get_snapshot_builder().await.build_snapshot().await).expect("built");
    let other = tempfile::tempdir().expect("temp dir");
    let mut sm = applied(other.path(), Vec::new()).await;
    let state = sm.shared();
    let begun = state.install_begun();
    let held = state.read();
    let mut data = sm.begin_receiving_snapshot().await.expect("a file");
    data.write_all(&bytes(built.snapshot).await).await.unwrap();
    let meta = built.meta.clone();
    let install = tokio::spawn(async move { sm.install_snapshot(&meta, data).await });
    let within = std::time::Duration::from_secs(30);
    tokio::time::timeout(within, begun)
        .await
        .expect("the install begins");
    assert!(state.installing());
    assert!(state.try_read().is_none(), "a read waits for the install");
    assert!(
        state.try_read_stored().is_none(),
        "a read waits for the install"
    );
    assert!(!install.is_finished(), "the install took the state lock");
    drop(held);
    install.await.expect("joined").expect("installed");
    assert!(!state.installing());
    let read = state.try_read().expect("a read after the install");
    assert_eq!(read.last_applied, built.meta.last_log_id);
}

/// Two accounts and a payment between them.
fn one_payment() -> Vec<Command> {
    let pay = new_transfer("org1.s-1", "org1.issue", "org1.a", 5, false);
    vec![account("org1.issue"), account("org1.a"), batch(vec![pay])]
}

/// A snapshot build on a node that an append found far behind its
/// leader's commit index waits until an append finds it in step, and 2 s
/// since the last that found it behind; one on a node only the entries in
/// flight behind builds at once.
#[tokio::test]
async fn a_snapshot_build_waits_while_the_node_catches_up() {
    use super::state_machine::{CATCHING_UP_ENTRIES, CATCHING_UP_QUIET};
    use openraft::storage::RaftSnapshotBuilder;
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut sm = applied(dir.path(), one_payment()).await;
    let shared = sm.shared();
    let deferred = || shared.snapshots.deferred.load(Ordering::Relaxed);
    shared.appended(CATCHING_UP_ENTRIES);
    sm.build_snapshot().await.expect("snapshot");
    assert_eq!(deferred(), 0, "a node in step builds at once");

    let behind_at = std::time::Instant::now();
    shared.appended(CATCHING_UP_ENTRIES + 1);
    apply_more(&mut sm, vec![account("org1.b")]).await;
    // The next append comes 3 s later, and finds the node in step.
    let in_step_after = CATCHING_UP_QUIET + std::time::Duration::from_secs(1);
    let next = {
        let shared = sm.shared();
        std::thread::spawn(move || {
            std::thread::sleep(in_step_after);
            shared.appended(0);
        })
    };
    let built = sm.build_snapshot().await.expect("snapshot");
    let waited = behind_at.elapsed();
    next.join().unwrap();
    assert!(
        waited >= in_step_after,
        "built {waited:?} after an append found the node behind, before one found it in step"
    );
    // Generous against a loaded machine, far short of the longest wait.
    assert!(
        waited < in_step_after + CATCHING_UP_QUIET * 4,
        "built {waited:?} after an append found the node behind: it waited on after it was in step"
    );
    assert_eq!(deferred(), 1);
    let applied = sm.shared().read().last_applied;
    assert_eq!(built.meta.last_log_id, applied, "built from where apply is");
}

/// A snapshot's data is a file of its own, not a sled value (sled keeps a
/// value that large in memory); sled holds only its metadata and file
/// name. Building another replaces the file, and a restart reads it back.
#[tokio::test]
async fn a_snapshot_is_stored_as_a_file() {
    use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
    let dir = tempfile::tempdir().expect("temp dir");
    let mut sm = applied(dir.path(), one_payment()).await;
    let first = sm.build_snapshot().await.expect("snapshot");
    apply_more(&mut sm, vec![account("org1.b")]).await;
    let second = sm.build_snapshot().await.expect("snapshot");
    assert_ne!(first.meta.snapshot_id, second.meta.snapshot_id);
    let files: Vec<_> = std::fs::read_dir(dir.path().join("snapshots"))
        .expect("the snapshot folder")
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(files.len(), 1, "the older file is removed: {files:?}");
    let data = bytes(second.snapshot).await;
    let current = sm.get_current_snapshot().await.expect("read").expect("one");
    assert_eq!(current.meta, second.meta);
    assert_eq!(bytes(current.snapshot).await, data);

    drop(sm);
    let store = reopen(dir.path());
    let largest = store
        .snapshot
        .iter()
        .map(|kv| kv.unwrap().1.len())
        .max()
        .unwrap_or(0);
    assert!(largest < 1024, "sled holds metadata only: {largest} bytes");
    let orgs = ["org1", "org2"].map(|o| OrgName::parse(o).unwrap());
    let mut sm = StateMachine::open(store, orgs.into(), [0; 32], accept_all()).expect("reopen");
    let current = sm.get_current_snapshot().await.expect("read").expect("one");
    assert_eq!(current.meta, second.meta, "after a restart");
    assert_eq!(bytes(current.snapshot).await, data, "after a restart");
}

/// An install that a stop interrupts (the state replaced in several
/// batches) is finished at the next start, from the stored snapshot; a
/// received file left over is removed.
#[tokio::test]
async fn an_interrupted_install_is_finished_at_start() {
    use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
    let leader_dir = tempfile::tempdir().expect("temp dir");
    let mut leader = applied(leader_dir.path(), one_payment()).await;
    let built = leader.build_snapshot().await.expect("snapshot");
    let meta = built.meta.clone();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut sm = installed(dir.path(), built).await;
    let left_over = sm.begin_receiving_snapshot().await.expect("a file");
    drop((sm, left_over));
    let pairs = |store: &Store| -> Vec<_> { store.state.iter().map(Result::unwrap).collect() };
    let store = reopen(dir.path());
    let installed = pairs(&store);
    assert!(installed.len() > 5, "{installed:?}");

    // Stopped in the middle: marked, some keys gone, an old one still there.
    let marker = super::store::StateKey::Installing.encode();
    let last = crate::codec::encode(&meta.last_log_id);
    store.state.insert(marker, last).unwrap();
    let first = store.state.first().unwrap().unwrap().0;
    store.state.remove(first).unwrap();
    store.state.insert(b"\x03stale", &b"x"[..]).unwrap();
    store.durable.sync().unwrap();
    drop(store);

    let store = reopen(dir.path());
    let orgs = ["org1", "org2"].map(|o| OrgName::parse(o).unwrap());
    let sm = StateMachine::open(store.clone(), orgs.into(), [0; 32], accept_all()).expect("open");
    assert_eq!(pairs(&store), installed, "the state as installed");
    assert_eq!(sm.shared().read().last_applied, meta.last_log_id);
    let incoming = std::fs::read_dir(&store.snapshots_incoming).map_or(0, |d| d.count());
    assert_eq!(incoming, 0, "the left-over received file is removed");
}

/// A snapshot's data, read from its file.
async fn bytes(mut file: Box<tokio::fs::File>) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut data = Vec::new();
    file.read_to_end(&mut data).await.expect("read");
    data
}

/// Apply answers before the state writer has put the entry on sled; a
/// read right after it still sees everything it applied.
#[tokio::test]
async fn a_read_right_after_apply_sees_the_stored_records() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut sm = applied(dir.path(), vec![account("org1.issue"), account("org1.ops")]).await;
    let shared = sm.shared();
    let ops = AccountId::parse("org1.ops").unwrap();
    for n in 0..300 {
        let id = format!("org1.w-{n}");
        let t = new_transfer(&id, "org1.issue", "org1.ops", 1, false);
        apply_more(&mut sm, vec![batch(vec![t])]).await;
        let read = shared.read();
        let settled = read.transfer(&TransferId::parse(&id).unwrap()).unwrap();
        assert!(settled.is_some(), "transfer {id} readable at once");
        assert_eq!(read.history(&ops, 0, 1_000).unwrap().len(), n + 1);
        let height = read.ledger.height();
        assert!(read.block(height).unwrap().is_some(), "block {height}");
    }
}

/// Stored bytes that are not the record their key names (a disk fault, an
/// edit outside the node) make each read that meets them an error that
/// names the key, never a panic in the thread that serves the read.
#[tokio::test]
async fn corrupt_stored_records_are_read_errors() {
    use super::state_machine::ReadError;
    use super::store::StateKey;
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path()).expect("open sled");
    let orgs = ["org1", "org2"].map(|o| OrgName::parse(o).unwrap());
    let mut sm =
        StateMachine::open(store.clone(), orgs.into(), [0; 32], accept_all()).expect("open");
    let t = new_transfer("org1.t-1", "org1.issue", "org1.ops", 5, false);
    apply_more(
        &mut sm,
        vec![account("org1.issue"), account("org1.ops"), batch(vec![t])],
    )
    .await;
    let shared = sm.shared();
    let (id, ops) = (
        TransferId::parse("org1.t-1").unwrap(),
        AccountId::parse("org1.ops").unwrap(),
    );
    let height = shared.read().ledger.height();
    assert!(
        shared.read().transfer(&id).unwrap().is_some(),
        "readable before"
    );
    assert_eq!(shared.read().history(&ops, 0, 10).unwrap().len(), 1);

    let garbage: &[u8] = &[0xff; 3];
    let plant = |key: Vec<u8>| {
        assert!(store.state.get(&key).unwrap().is_some(), "a real key");
        store.state.insert(key, garbage).unwrap();
    };
    let corrupt = |r: Result<(), ReadError>, what: &str| match r {
        Err(e @ ReadError::Corrupt { .. }) => assert!(e.to_string().contains(what), "{e}"),
        other => panic!("{what}: {other:?}"),
    };
    plant(StateKey::Transfers(height, 0).encode());
    corrupt(shared.read().transfer(&id).map(drop), "transfer chunk");
    plant(StateKey::HistoryChunk(height, 0).encode());
    corrupt(
        shared.read().history(&ops, 0, 10).map(drop),
        "history chunk",
    );
    corrupt(
        shared.read().history_at_height(&ops, height).map(drop),
        "history chunk",
    );
    plant(StateKey::Block(height).encode());
    corrupt(shared.read().block(height).map(drop), "block header");
    plant(StateKey::LeafHashes(height, 0).encode());
    let e = shared.read().leaf_hashes(height).unwrap_err();
    assert!(e.to_string().contains("chunk"), "{e}");
    plant(StateKey::Blinding(height).encode());
    corrupt(shared.read().blinding(height).map(drop), "block blinding");
}

/// A node whose stored state breaks what apply takes for granted (an
/// account with more items than its pages of history hold, or overdrawn;
/// a ledger clock that is not its head's time; as a faulty disk or an
/// edit outside the node could leave it) refuses to start, naming what is
/// wrong, rather than stopping at the next entry that meets it.
#[tokio::test]
async fn a_state_apply_could_not_go_on_from_does_not_start() {
    use crate::raft::store::ACCOUNT_TAG;
    type Change = fn(&mut crate::ledger::Account);
    let cases: [(Change, &str); 2] = [
        (
            |a| a.history_len += 1,
            "account org1.a has 2 items of history, but its pages of history hold 1",
        ),
        (
            |a| a.debits_posted = a.credits_posted + 1,
            "the stored ledger: account org1.a is overdrawn: 6 posted and 0 pending in debits \
             against 5 in credits",
        ),
    ];
    let orgs = ["org1", "org2"].map(|o| OrgName::parse(o).unwrap());
    let open = |store| StateMachine::open(store, orgs.clone().into(), [0; 32], accept_all());
    for (change, expected) in cases {
        let dir = tempfile::tempdir().expect("temp dir");
        drop(applied(dir.path(), one_payment()).await);
        let store = reopen(dir.path());
        drop(open(store.clone()).expect("the state as it was starts"));
        let key = [&[ACCOUNT_TAG][..], b"org1.a"].concat();
        let stored = store.state.get(&key).unwrap().expect("stored");
        let mut a: crate::ledger::Account = crate::codec::decode(&stored).unwrap();
        assert_eq!((a.history_len, a.credits_posted), (1, 5));
        change(&mut a);
        store.state.insert(key, crate::codec::encode(&a)).unwrap();
        let err = open(store).map(drop).expect_err("refused").to_string();
        assert!(err.contains(expected), "{err}");
    }
    // A clock that is not the head's time.
    let dir = tempfile::tempdir().expect("temp dir");
    drop(applied(dir.path(), one_payment()).await);
    let store = reopen(dir.path());
    let key = crate::raft::store::StateKey::Clock.encode();
    store
        .state
        .insert(key, crate::codec::encode(&1u64))
        .unwrap();
    let err = open(store).map(drop).expect_err("refused").to_string();
    let expected = "the stored ledger: the ledger clock reads 1 ms, but the head, block 3,";
    assert!(err.contains(expected), "{err}");
}

/// A member's node vouching for another member's caller: the entry reaches
/// every replica's apply (as a leader could put it in the log), and every
/// replica refuses it with the same code and seals the same block.
#[tokio::test]
async fn every_replica_refuses_a_caller_vouched_for_by_another_organizations_node() {
    use crate::identity::attest::tests::{app, sealed, transfer, Consortium};
    use openraft::storage::RaftStateMachine;
    let c = Consortium::new();
    let t = crate::identity::attest::tests::now();
    let forged = sealed(
        &c.attester(1),
        app("org2"),
        transfer("steal-1", "org2.ops", "org1.ops", 1),
        t,
    );
    let mut heads = Vec::new();
    for _replica in 0..3 {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("open sled");
        let witness = std::sync::Arc::new(c.witness());
        let founding = super::state_machine::Founding::of(&c.genesis);
        let mut sm = StateMachine::open_with(store, founding, c.genesis.hash_bytes(), witness)
            .expect("open");
        let entry = openraft::Entry {
            log_id: LogId::new(openraft::CommittedLeaderId::new(1, 0), 1),
            payload: openraft::EntryPayload::Normal(std::sync::Arc::new(forged.clone())),
        };
        let replies = sm.apply(vec![entry]).await.expect("apply");
        assert_eq!(
            replies,
            vec![Some(Outcome::Transfers(vec![Err(
                Rejection::OriginForeign
            )]))]
        );
        let state = sm.shared();
        let read = state.read();
        assert_eq!(read.ledger.height(), 1, "the refusal is a block");
        heads.push(read.ledger.head().hash());
    }
    assert!(heads.windows(2).all(|w| w[0] == w[1]), "{heads:?}");
}
