//! `alliance audit`: recompute the chain (and, offline, the balances) and
//! report the first thing that does not add up.
//!
//! - Through the API ([`audit_node`]): every block header is re-hashed, each
//!   link to the previous block checked, and each Merkle root recomputed
//!   from the block's leaf hashes.
//! - On a stopped node's files ([`audit_data_dir`]): the same from the
//!   stored headers and leaf hashes, plus every stored version of every
//!   transfer checked against the leaves of the block that stored it (its
//!   leaf, rendered again and hashed with the blind of its position from
//!   the block's stored blinding, must be one of them), and every account's
//!   totals recomputed from the transfers and compared with the stored ones.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::client::ApiClient;
use crate::codec;
use crate::ledger::chain::{self, from_hex, Blinding, BlockHeader, Hash};
use crate::ledger::{transfer_leaf, Account, AccountId, Transfer, TransferId, TransferState};
use crate::raft::state_machine::Index;
use crate::raft::store::{
    for_each_transfer_block, read_chunks, StateKey, Store, ACCOUNT_TAG, LEAF_HASHES_TAG,
    PENDING_TAG,
};

/// What an audit found.
#[derive(Debug, Default)]
pub struct Report {
    pub blocks: u64,
    pub head: Option<(u64, Hash)>,
    pub accounts: usize,
    pub transfers: usize,
    pub problems: Vec<String>,
}

impl Report {
    pub fn print(&self) {
        if let Some((h, hash)) = self.head {
            println!(
                "chain: {} blocks checked, head {h} {}",
                self.blocks,
                chain::to_hex(&hash)
            );
        }
        if self.accounts + self.transfers > 0 {
            println!(
                "ledger: {} accounts and {} transfers recomputed",
                self.accounts, self.transfers
            );
        }
        match self.problems.first() {
            None => println!("ok: no mismatch"),
            Some(first) => {
                println!("MISMATCH: {first}");
                for p in &self.problems[1..] {
                    println!("  also: {p}");
                }
            }
        }
    }
}

/// Checks one block against the previous block's hash; returns its hash.
fn check_block(
    header: &BlockHeader,
    leaf_hashes: &[Hash],
    prev: Option<Hash>,
    problems: &mut Vec<String>,
) -> Hash {
    let h = header.height;
    if let Some(prev) = prev {
        if header.prev_hash != prev {
            problems.push(format!(
                "block {h}: prev_hash does not match block {}'s hash",
                h - 1
            ));
        }
    }
    if h > 0 {
        if header.leaf_count != leaf_hashes.len() as u64 {
            problems.push(format!(
                "block {h}: leaf_count {} but {} leaves",
                header.leaf_count,
                leaf_hashes.len()
            ));
        }
        if chain::merkle_root(leaf_hashes) != header.merkle_root {
            problems.push(format!("block {h}: Merkle root does not match its leaves"));
        }
    }
    header.hash()
}

/// Walks blocks 0..=head through a node's API.
pub async fn audit_node(client: &ApiClient) -> Result<Report, String> {
    let get = |path: String| async move {
        let r = client
            .call(reqwest::Method::GET, &path, None)
            .await
            .map_err(|e| e.to_string())?;
        if r.is_success() {
            Ok(r.body)
        } else {
            Err(format!("{path}: {} {}", r.status, r.body))
        }
    };
    let head = get("/v1/blocks?limit=1".into()).await?["head_height"]
        .as_u64()
        .ok_or("no head_height")?;
    let mut report = Report::default();
    let mut prev = None;
    for h in 0..=head {
        let b = get(format!("/v1/blocks/{h}")).await?;
        let header: BlockHeader =
            serde_json::from_value(b.clone()).map_err(|e| format!("block {h}: {e}"))?;
        let leaves: Vec<Hash> = b["leaf_hashes"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .filter_map(from_hex)
                    .collect()
            })
            .unwrap_or_default();
        let hash = check_block(&header, &leaves, prev, &mut report.problems);
        if b["hash"].as_str().and_then(from_hex) != Some(hash) {
            report.problems.push(format!(
                "block {h}: the node reports another hash than its header hashes to"
            ));
        }
        prev = Some(hash);
        report.blocks += 1;
        report.head = Some((h, hash));
    }
    Ok(report)
}

/// Audits a stopped node's sled directory (`data_dir/sled`).
pub fn audit_data_dir(sled_dir: &Path) -> Result<Report, String> {
    let store = open_stopped(sled_dir)?;
    let mut report = Report::default();
    let leaves_by_height = check_stored_blocks(&store, &mut report)?;
    let latest = latest_transfers(&store, &leaves_by_height, &mut report.problems)?;
    drop(leaves_by_height);
    report.transfers = latest.len();
    check_index(&store, &latest, &mut report.problems)?;
    let expected = expected_totals(latest.into_values());
    check_accounts(&store, &expected, &mut report)?;
    Ok(report)
}

/// The transfer index, the pending transfers' records and the transfer
/// count against what the blocks' transfer records give: a node decides
/// whether an id is new by its index. A state whose pending records do
/// not cover its head (written by an earlier version) has them derived
/// when its node next starts.
fn check_index(
    store: &Store,
    latest: &BTreeMap<TransferId, Transfer>,
    problems: &mut Vec<String>,
) -> Result<(), String> {
    let state = &store.state;
    let read = |key: StateKey| -> Result<Option<sled::IVec>, String> {
        state.get(key.encode()).map_err(|e| e.to_string())
    };
    let head = (read(StateKey::Head)?)
        .and_then(|v| codec::decode::<BlockHeader>(&v).ok())
        .map_or(0, |h| h.height);
    let covered = read(StateKey::Indexed)?.and_then(|v| codec::decode::<u64>(&v).ok());
    if covered != Some(head) {
        return Ok(());
    }
    // The runs on disk, and the blocks past them as a node holds them.
    let mut tail = crate::ledger::Ledger::default();
    let index = Index::read(state, &mut tail).map_err(|e| e.to_string())?;
    let mut pending = 0;
    for (id, t) in latest {
        let at = t.resolved_height.unwrap_or(t.height);
        let indexed = match tail.stored_height(id) {
            Some(height) => Some(height),
            None => index.look_up(state, id).map_err(|e| e.to_string())?,
        };
        if indexed != Some(at) {
            problems.push(format!(
                "transfer {id}: the index says block {indexed:?}, its latest version is in block {at}"
            ));
        }
        let record = (state.get(StateKey::Pending(id).encode())).map_err(|e| e.to_string())?;
        let record: Option<Transfer> = record
            .map(|v| codec::decode(&v).map_err(|e| format!("pending record of {id}: {e}")))
            .transpose()?;
        match (&record, t.state == TransferState::Pending) {
            (Some(r), true) if r == t => pending += 1,
            (None, false) => {}
            _ => problems.push(format!(
                "transfer {id}: the pending records hold {record:?}, its latest version is {t:?}"
            )),
        }
    }
    if state.scan_prefix([PENDING_TAG]).count() != pending {
        problems.push("the pending records hold transfers that are not pending".into());
    }
    let count = state.get(StateKey::TransferCount.encode());
    let count: Option<u64> = (count.map_err(|e| e.to_string())?)
        .map(|v| codec::decode(&v).map_err(|e| format!("transfer count: {e}")))
        .transpose()?;
    if count != Some(latest.len() as u64) {
        problems.push(format!(
            "the stored transfer count is {count:?}, the blocks hold {} transfers",
            latest.len()
        ));
    }
    Ok(())
}

/// The store under `sled_dir`, which must hold a database and not be open
/// in a running node.
fn open_stopped(sled_dir: &Path) -> Result<Store, String> {
    if !sled_dir.join("db").exists() {
        return Err(format!(
            "{}: no sled database here (give the node's data_dir/sled)",
            sled_dir.display()
        ));
    }
    Store::open(sled_dir).map_err(|e| format!("{}: {e} (is the node stopped?)", sled_dir.display()))
}

fn get(store: &Store, key: StateKey) -> Result<Option<Vec<u8>>, String> {
    store
        .state
        .get(key.encode())
        .map(|v| v.map(|v| v.to_vec()))
        .map_err(|e| e.to_string())
}

/// A stored block's leaves: their hashes, and the blinding their blinds
/// come from.
struct Leaves {
    hashes: Vec<Hash>,
    blinding: Blinding,
}

/// Checks the stored blocks 1..=head, each against its leaf hashes and the
/// block before it, and the stored head against the last of them; returns
/// each block's leaves by height (of the blocks whose blinding is stored).
fn check_stored_blocks(
    store: &Store,
    report: &mut Report,
) -> Result<BTreeMap<u64, Leaves>, String> {
    let head: Option<BlockHeader> = get(store, StateKey::Head)?
        .map(|v| codec::decode(&v))
        .transpose()
        .map_err(|e| e.to_string())?;
    let mut prev: Option<Hash> = None;
    let mut leaves_by_height: BTreeMap<u64, Leaves> = BTreeMap::new();
    for h in 1..=head.as_ref().map_or(0, |h| h.height) {
        let header: BlockHeader = match get(store, StateKey::Block(h))? {
            Some(v) => codec::decode(&v).map_err(|e| format!("block {h}: {e}"))?,
            None => {
                report.problems.push(format!("block {h} is missing"));
                continue;
            }
        };
        let prefix = StateKey::height_prefix(LEAF_HASHES_TAG, h);
        let hashes: Vec<Hash> = read_chunks(&store.state, &prefix)
            .map_err(|e| format!("leaf hashes of block {h}: {e}"))?
            .unwrap_or_default();
        let hash = check_block(&header, &hashes, prev, &mut report.problems);
        prev = Some(hash);
        report.blocks += 1;
        report.head = Some((h, hash));
        match get(store, StateKey::Blinding(h))? {
            Some(v) => {
                let blinding = codec::decode(&v).map_err(|e| format!("block {h}: {e}"))?;
                leaves_by_height.insert(h, Leaves { hashes, blinding });
            }
            None => report
                .problems
                .push(format!("block {h}: its blinding is missing")),
        }
    }
    if let (Some(head), Some((_, hash))) = (&head, report.head) {
        if head.hash() != hash {
            report
                .problems
                .push("the stored head is not the last stored block".into());
        }
    }
    Ok(leaves_by_height)
}

/// One pass over the stored transfers: each block's versions checked
/// against its leaves, and the latest version of each transfer returned.
fn latest_transfers(
    store: &Store,
    leaves_by_height: &BTreeMap<u64, Leaves>,
    problems: &mut Vec<String>,
) -> Result<BTreeMap<TransferId, Transfer>, String> {
    let mut latest: BTreeMap<TransferId, Transfer> = BTreeMap::new();
    for_each_transfer_block(&store.state, |h, mut versions| {
        if let Some(leaves) = leaves_by_height.get(&h) {
            check_transfer_leaves(h, &mut versions, leaves, problems);
        }
        latest.extend(versions.into_iter().map(|t| (t.id.clone(), t)));
    })
    .map_err(|e| e.to_string())?;
    Ok(latest)
}

/// Each account's totals as its transfers give them: `[debits_posted,
/// credits_posted, debits_pending, credits_pending]`.
fn expected_totals(transfers: impl Iterator<Item = Transfer>) -> BTreeMap<AccountId, [u128; 4]> {
    let mut expected: BTreeMap<AccountId, [u128; 4]> = BTreeMap::new();
    for t in transfers {
        let units = u128::from(t.amount.units());
        let [debit, credit] =
            [&t.debit_account, &t.credit_account].map(|a| *expected.entry(a.clone()).or_default());
        let (mut debit, mut credit) = (debit, credit);
        match (t.pending, t.state) {
            (false, _) => (debit[0], credit[1]) = (debit[0] + units, credit[1] + units),
            (true, TransferState::Pending) => {
                (debit[2], credit[3]) = (debit[2] + units, credit[3] + units)
            }
            (true, TransferState::Posted) => {
                let moved = u128::from(t.posted_amount.map_or(0, |a| a.units()));
                (debit[0], credit[1]) = (debit[0] + moved, credit[1] + moved);
            }
            (true, TransferState::Voided | TransferState::Expired) => {}
        }
        expected.insert(t.debit_account.clone(), debit);
        expected.insert(t.credit_account.clone(), credit);
    }
    expected
}

/// Every stored account's totals against the ones its transfers give.
fn check_accounts(
    store: &Store,
    expected: &BTreeMap<AccountId, [u128; 4]>,
    report: &mut Report,
) -> Result<(), String> {
    for kv in store.state.scan_prefix([ACCOUNT_TAG]) {
        let (_, v) = kv.map_err(|e| e.to_string())?;
        let a: Account = codec::decode(&v).map_err(|e| format!("account: {e}"))?;
        report.accounts += 1;
        let stored = [
            a.debits_posted,
            a.credits_posted,
            a.debits_pending,
            a.credits_pending,
        ];
        let recomputed = expected.get(&a.id).copied().unwrap_or_default();
        if stored != recomputed {
            report.problems.push(format!(
                "account {}: stored [debits_posted, credits_posted, debits_pending, credits_pending] {stored:?} \
                 but its transfers give {recomputed:?}",
                a.id
            ));
        }
    }
    Ok(())
}

/// Every transfer version block `height` stored must be one of its leaves:
/// the record as that block committed it, byte for byte, hashed with the
/// blind of that leaf's position.
///
/// A version the block created is its leaf `leaf_index`. A version it
/// resolved (posted, voided, expired) names its creating block's leaf, so
/// its position here is searched for: expired leaves come first, in order
/// of expiry then id, and a post or void after them, so in that order each
/// is found just after the previous one and the search stays linear.
fn check_transfer_leaves(
    height: u64,
    versions: &mut [Transfer],
    leaves: &Leaves,
    problems: &mut Vec<String>,
) {
    let n = leaves.hashes.len();
    let is_leaf = |leaf: &[u8], i: usize| {
        let blind = chain::leaf_blind(&leaves.blinding, i as u64);
        leaves.hashes[i] == chain::blinded_leaf_hash(&blind, leaf)
    };
    let differs = |t: &Transfer, problems: &mut Vec<String>| {
        problems.push(format!(
            "transfer {}: stored record differs from the one block {height} committed",
            t.id
        ));
    };
    let order = |t: &Transfer| {
        let expired = t.state == TransferState::Expired;
        (t.height == height, !expired, t.expires_at_ms)
    };
    versions.sort_by(|a, b| order(a).cmp(&order(b)).then_with(|| a.id.cmp(&b.id)));
    let mut next = 0;
    for t in versions.iter() {
        let leaf = transfer_leaf(t);
        let leaf = leaf.as_bytes();
        if t.height == height {
            let i = t.leaf_index as usize;
            if i >= n || !is_leaf(leaf, i) {
                differs(t, problems);
            }
            continue;
        }
        match (0..n).map(|k| (next + k) % n).find(|&i| is_leaf(leaf, i)) {
            Some(i) => next = i + 1,
            None => differs(t, problems),
        }
    }
}
