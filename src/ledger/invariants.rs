//! Invariants of the ledger's state, and the assertions that hold apply to
//! them in every build: apply panics before the changes of an entry that
//! breaks one are stored (see the module docs of [`crate::ledger`]).

use std::collections::{BTreeMap, HashMap};

use super::changes::Money;
use super::state::At;
use super::{Account, AccountId, Asset, BlockHeader, Gov, Ledger, Seeded, Transfer, TransferId};

impl Ledger {
    /// Sum of all posted balances per asset, and of pending debits minus
    /// pending credits. Every transfer moves money between two accounts of
    /// one asset, so both are zero in a correct ledger.
    pub fn totals(&self) -> BTreeMap<Asset, (i128, i128)> {
        let mut totals: BTreeMap<Asset, (i128, i128)> = BTreeMap::new();
        for a in self.accounts.values() {
            let t = totals.entry(a.asset.clone()).or_default();
            let money = Money::of(a);
            t.0 += money.balance;
            t.1 += money.pending;
        }
        totals
    }

    /// [`check_stored`] of this ledger as loaded from storage (its
    /// transfers in memory are then the pending ones).
    pub fn check_loaded(&self) -> Result<(), String> {
        let (head, count) = (&self.head, self.transfer_count);
        check_stored_head(Some(head), self.clock_ms, count, Some(&self.gov))?;
        let pending = self.transfers.values();
        check_stored(
            self.accounts.values(),
            |id| self.accounts.get(id),
            Some(pending),
        )
    }
}

/// Past any block height or count of transfers a ledger reaches (a block
/// a microsecond, or a million transfers a second, for over 100,000
/// years): a stored head or count at or past it is refused, so that the
/// next one never overflows.
pub const HEIGHT_MAX: u64 = 1 << 62;

/// Checks what apply takes for granted of a stored ledger's head (none:
/// genesis's), clock, count of transfers and governance state (none: the
/// founding one, from genesis): the clock is the head's time, as each
/// block sets both; neither the head's height nor the count is at or past
/// [`HEIGHT_MAX`]; and what [`Gov::check_stored`] checks.
pub fn check_stored_head(
    head: Option<&BlockHeader>,
    clock_ms: u64,
    transfers: u64,
    gov: Option<&Gov>,
) -> Result<(), String> {
    let (height, time_ms) = head.map_or((0, 0), |h| (h.height, h.timestamp_ms));
    if clock_ms != time_ms {
        return Err(format!(
            "the ledger clock reads {clock_ms} ms, but the head, block {height}, \
             was made at {time_ms} ms"
        ));
    }
    if height >= HEIGHT_MAX || transfers >= HEIGHT_MAX {
        return Err(format!(
            "the head is block {height} after {transfers} transfers, \
             past any a ledger reaches ({HEIGHT_MAX})"
        ));
    }
    match gov {
        Some(gov) => gov
            .check_stored(height)
            .map_err(|e| format!("the governance state: {e}")),
        None => Ok(()),
    }
}

/// Checks what apply takes for granted of stored `accounts` (each also
/// found by `account`) and `pending` transfers (a node's own state, or a
/// received snapshot's; none: not checked): every account without
/// `allow_negative` covers its debits, posted and pending; every pending
/// transfer is between two accounts of its asset; and each account's
/// pending debits and credits are the sums of its pending transfers'
/// amounts. Apply asserts what these keep (no account overdrawn, each
/// block balanced in each asset, pending totals that cover what settles),
/// so a state without them would stop the node at the first entry that
/// meets them. Of several faults, the message names the least transfer,
/// then account, id: the same whatever order they come in.
pub fn check_stored<'a>(
    accounts: impl IntoIterator<Item = &'a Account>,
    account: impl Fn(&AccountId) -> Option<&'a Account>,
    pending: Option<impl IntoIterator<Item = &'a Transfer>>,
) -> Result<(), String> {
    let checks_pending = pending.is_some();
    let mut sums: HashMap<&AccountId, (u128, u128), Seeded> = HashMap::default();
    let mut fault: Least<'a, TransferId> = None;
    for t in pending.into_iter().flatten() {
        for (side, debit) in [(&t.debit_account, true), (&t.credit_account, false)] {
            let why = match account(side) {
                Some(a) if a.asset == t.asset => None,
                Some(a) => Some(format!(
                    "pending transfer {} is in {}, but its account {side} holds {}",
                    t.id, t.asset, a.asset
                )),
                None => Some(format!(
                    "pending transfer {} names account {side}, which is not there",
                    t.id
                )),
            };
            keep_least(&mut fault, &t.id, why);
            let sum = sums.entry(side).or_default();
            let sum = if debit { &mut sum.0 } else { &mut sum.1 };
            *sum = sum.saturating_add(u128::from(t.amount.units()));
        }
    }
    if let Some((_, why)) = fault {
        return Err(why);
    }
    let mut fault: Least<'a, AccountId> = None;
    for a in accounts {
        let (debits, credits) = sums.get(&a.id).copied().unwrap_or_default();
        let why = if !a.can_debit(0) {
            Some(format!(
                "account {} is overdrawn: {} posted and {} pending in debits against {} in credits",
                a.id, a.debits_posted, a.debits_pending, a.credits_posted
            ))
        } else if checks_pending && (debits, credits) != (a.debits_pending, a.credits_pending) {
            Some(format!(
                "account {} holds {} in pending debits and {} in pending credits, \
                 but its pending transfers hold {debits} and {credits}",
                a.id, a.debits_pending, a.credits_pending
            ))
        } else {
            None
        };
        keep_least(&mut fault, &a.id, why);
    }
    fault.map_or(Ok(()), |(_, why)| Err(why))
}

/// A fault found, with the id it names.
type Least<'a, K> = Option<(&'a K, String)>;

/// Keeps `why`, a fault of `id`, in `least` if it is the first or names a
/// lesser id than the one there.
fn keep_least<'a, K: Ord>(least: &mut Least<'a, K>, id: &'a K, why: Option<String>) {
    if let Some(why) = why {
        if least.as_ref().is_none_or(|(kept, _)| id < *kept) {
            *least = Some((id, why));
        }
    }
}

/// [`Ledger::totals`] stays zero across an entry, checked over the accounts
/// it changed only: per asset, their balances moved by zero in sum, and so
/// did their pending debits less pending credits. Also no account the
/// entry changed is left below zero unless it has `allow_negative`. Fed
/// each changed account as the entry left it by the loop that encodes them
/// for the block: one hash look-up each, O(accounts changed).
pub(super) struct BalanceCheck<'a> {
    before: &'a HashMap<AccountId, Money, Seeded>,
    /// How many of `before` were given.
    seen: usize,
    moved: Moved<'a>,
    height: u64,
}

impl<'a> BalanceCheck<'a> {
    /// `before`: the changed accounts' money before the entry of block
    /// `height` (accounts it created have none).
    pub(super) fn new(before: &'a HashMap<AccountId, Money, Seeded>, height: u64) -> Self {
        Self {
            before,
            seen: 0,
            moved: Moved::default(),
            height,
        }
    }

    /// A changed account, as the entry left it; each once.
    pub(super) fn account(&mut self, account: &'a Account) {
        assert!(
            account.can_debit(0),
            "apply overdrew account {} in block {}: balance {}, pending debits {}",
            account.id,
            self.height,
            account.balance(),
            account.debits_pending
        );
        if let Some(was) = self.before.get(&account.id) {
            self.seen += 1;
            let now = Money::of(account);
            self.moved.add(
                &account.asset,
                now.balance.wrapping_sub(was.balance),
                now.pending.wrapping_sub(was.pending),
            );
        }
    }

    /// Asserts the sums, once every changed account was given.
    pub(super) fn finish(self) {
        let height = self.height;
        let unseen = self.before.len() - self.seen;
        assert!(
            unseen == 0,
            "block {height}: {unseen} changed accounts escaped the balance check"
        );
        self.moved.for_each(|asset, (balance, pending)| {
            assert!(
                balance == 0 && pending == 0,
                "block {height} does not balance in {asset}: balances moved by {balance} \
                 in sum, pending debits less credits by {pending}"
            );
        });
    }
}

/// How much an entry moved balances and pending nets, summed per asset.
/// An entry's transfers are nearly always in one asset, which is kept
/// inline: summing those allocates nothing. Sums wrap: a balance moves by
/// up to twice [`super::TOTAL_MAX`], and a sum that is zero modulo 2^128
/// is zero.
#[derive(Default)]
struct Moved<'a> {
    first: Option<(&'a Asset, (i128, i128))>,
    others: BTreeMap<&'a Asset, (i128, i128)>,
}

impl<'a> Moved<'a> {
    fn add(&mut self, asset: &'a Asset, balance: i128, pending: i128) {
        let sum = match &mut self.first {
            Some((first, sum)) if *first == asset => sum,
            Some(_) => self.others.entry(asset).or_default(),
            None => &mut self.first.insert((asset, (0, 0))).1,
        };
        sum.0 = sum.0.wrapping_add(balance);
        sum.1 = sum.1.wrapping_add(pending);
    }

    fn for_each(self, mut f: impl FnMut(&Asset, (i128, i128))) {
        for (asset, sum) in self.first.into_iter().chain(self.others) {
            f(asset, sum);
        }
    }
}

/// The entry at `at` follows the head: its block is the head's height plus
/// one, and the ledger clock (`clock_ms` before the entry) does not go back.
pub(super) fn assert_follows(head: &BlockHeader, clock_ms: u64, at: At<'_>) {
    assert!(
        at.height == head.height + 1,
        "block {} does not follow the head, block {}",
        at.height,
        head.height
    );
    assert!(
        at.clock_ms >= clock_ms && at.clock_ms >= at.timestamp_ms,
        "the ledger clock went back: {} ms after {clock_ms} ms, for an entry stamped {} ms",
        at.clock_ms,
        at.timestamp_ms
    );
}
