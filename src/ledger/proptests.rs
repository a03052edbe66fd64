//! Property tests: random sequences of commands (duplicates, pendings,
//! posts, voids, expiries, batches, clocks that go backwards). After every
//! step: money is conserved per asset, no account without allow_negative is
//! below zero, re-applying the step changes nothing, and two ledgers fed the
//! same sequence are byte-identical.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::tests::{acct, actor, new_account, new_transfer, org, tid};
use super::*;

/// Accounts: (id, owner, asset, allow_negative).
const ACCOUNTS: [(&str, &str, &str, bool); 5] = [
    ("org1.issue", "org1", "USD", true),
    ("org1.a", "org1", "USD", false),
    ("org2.b", "org2", "USD", false),
    ("org2.c", "org2", "USD", false),
    ("org2.e", "org2", "EUR", false),
];

#[derive(Clone, Debug)]
enum Op {
    Transfer {
        id: u8,
        from: usize,
        to: usize,
        amount: u64,
        pending: bool,
        timeout: Option<u64>,
    },
    Batch {
        items: Vec<(u8, usize, usize, u64)>,
        atomic: bool,
    },
    Post {
        id: u8,
        amount: Option<u64>,
    },
    Void {
        id: u8,
    },
    Tick,
}

fn op() -> impl Strategy<Value = Op> {
    let transfer = (
        0u8..24,
        0usize..5,
        0usize..5,
        1u64..300,
        any::<bool>(),
        proptest::option::of(1u64..400),
    )
        .prop_map(|(id, from, to, amount, pending, timeout)| Op::Transfer {
            id,
            from,
            to,
            amount,
            pending,
            timeout,
        });
    let batch = (
        proptest::collection::vec((0u8..24, 0usize..5, 0usize..5, 1u64..300), 1..5),
        any::<bool>(),
    )
        .prop_map(|(items, atomic)| Op::Batch { items, atomic });
    prop_oneof![
        4 => transfer,
        2 => batch,
        2 => (0u8..24, proptest::option::of(1u64..300)).prop_map(|(id, amount)| Op::Post { id, amount }),
        1 => (0u8..24).prop_map(|id| Op::Void { id }),
        1 => Just(Op::Tick),
    ]
}

fn owner_of(i: usize) -> Actor {
    let org = ACCOUNTS[i].1;
    actor(org, if i == 0 { Role::Admin } else { Role::App })
}

/// Transfer ids are in the namespace of the organization that sends them:
/// for a batch, the owner of its first item's debit account; posts and voids
/// are org1's.
fn to_entry(op: &Op, timestamp_ms: u64) -> Entry {
    let t = |by: &Actor, id: u8, from: usize, to: usize, amount: u64| {
        let id = format!("{}.t{id}", by.org);
        new_transfer(&id, ACCOUNTS[from].0, ACCOUNTS[to].0, amount)
    };
    let (actor, command) = match op {
        Op::Transfer {
            id,
            from,
            to,
            amount,
            pending,
            timeout,
        } => {
            let by = owner_of(*from);
            let mut nt = t(&by, *id, *from, *to, *amount);
            nt.pending = *pending;
            nt.timeout_ms = timeout.filter(|_| *pending);
            (
                by,
                Command::Transfers {
                    transfers: vec![nt],
                    atomic: false,
                },
            )
        }
        Op::Batch { items, atomic } => {
            let by = owner_of(items[0].1);
            let transfers = items
                .iter()
                .map(|(id, f, to, a)| t(&by, *id, *f, *to, *a))
                .collect();
            (
                by,
                Command::Transfers {
                    transfers,
                    atomic: *atomic,
                },
            )
        }
        Op::Post { id, amount } => (
            owner_of(1),
            Command::PostPending {
                id: tid(&format!("org1.t{id}")),
                amount: amount.map(|a| Amount::new(a).unwrap()),
            },
        ),
        Op::Void { id } => (
            owner_of(1),
            Command::VoidPending {
                id: tid(&format!("org1.t{id}")),
            },
        ),
        Op::Tick => (actor("org1", Role::Node), Command::Tick),
    };
    Entry {
        actor,
        timestamp_ms,
        command,
        evidence: Evidence::Leader,
        blinding: Blinding([7; 16]),
    }
}

fn genesis() -> Ledger {
    let mut l = Ledger::new([org("org1"), org("org2")].into());
    for (i, (id, _, asset, neg)) in ACCOUNTS.iter().enumerate() {
        let entry = Entry {
            actor: owner_of(i),
            timestamp_ms: 0,
            command: Command::CreateAccount(new_account(id, asset, *neg)),
            evidence: Evidence::Leader,
            blinding: Blinding([7; 16]),
        };
        l.apply(&entry, i as u64 + 1);
    }
    let fund = Entry {
        actor: owner_of(0),
        timestamp_ms: 0,
        command: Command::Transfers {
            transfers: vec![new_transfer("org1.fund", "org1.issue", "org1.a", 1_000)],
            atomic: false,
        },
        evidence: Evidence::Leader,
        blinding: Blinding([7; 16]),
    };
    l.apply(&fund, 9);
    l
}

fn check_invariants(l: &Ledger) {
    for (asset, (posted, pending)) in l.totals() {
        assert_eq!((posted, pending), (0, 0), "money not conserved in {asset}");
    }
    for a in l.accounts() {
        if !a.allow_negative {
            assert!(
                a.available() >= 0 && a.balance() >= 0,
                "{} below zero: {a:?}",
                a.id
            );
        }
        assert!(a.debits_pending <= TOTAL_MAX && a.credits_posted <= TOTAL_MAX);
    }
    let pending: u128 = l
        .transfers()
        .filter(|t| t.state == TransferState::Pending)
        .map(|t| u128::from(t.amount.units()))
        .sum();
    let reserved: u128 = l.accounts().map(|a| a.debits_pending).sum();
    assert_eq!(
        pending, reserved,
        "pending transfers and reservations disagree"
    );
    assert_eq!(
        l.account(&acct("org1.issue")).map(|a| a.asset.as_str()),
        Some("USD")
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_sequences_keep_the_invariants(ops in proptest::collection::vec((op(), -200i64..400), 1..60)) {
        let (mut l, mut twin) = (genesis(), genesis());
        let mut now: i64 = 1_000;
        for (i, (op, step)) in ops.iter().enumerate() {
            now = (now + step).max(0);
            let entry = to_entry(op, now as u64);
            let index = 100 + 2 * i as u64;
            let (first, _) = l.apply(&entry, index);
            twin.apply(&entry, index);
            check_invariants(&l);
            // Re-applying the same entry (a retry) changes nothing.
            let before = (l.accounts.clone(), l.transfers.clone(), l.rejected.clone(), l.expiries.clone());
            let (again, changes) = l.apply(&entry, index + 1);
            twin.apply(&entry, index + 1);
            prop_assert_eq!(&before, &(l.accounts.clone(), l.transfers.clone(), l.rejected.clone(), l.expiries.clone()));
            prop_assert!(changes.history.is_empty(), "a retry wrote history: {:?}", changes.history);
            if !matches!(op, Op::Batch { atomic: true, .. }) {
                prop_assert_eq!(outcome_codes(&first), outcome_codes(&again));
            }
        }
        prop_assert_eq!(serde_json::to_vec(&l).unwrap(), serde_json::to_vec(&twin).unwrap());
    }
}

/// What a caller that forgets settled transfers stores: each block's
/// transfer records, as the block left them.
type Stored = BTreeMap<u64, Vec<Transfer>>;

/// What a caller that keeps the transfer index outside the ledger holds:
/// the height that stores each transfer's latest version.
type Index = BTreeMap<TransferId, u64>;

/// The refusals stored outside the ledger, by id.
type Refusals = BTreeMap<TransferId, RejectedTransfer>;

/// Applies `entry` as the Raft state machine does: looks up the ids it
/// names, loads the stored transfers among them, applies, stores the
/// block's records and index, forgets, and drops the whole index from the
/// ledger (the state machine drops only past a bound: dropping all is the
/// hardest case).
fn apply_forgetting(
    l: &mut Ledger,
    stored: &mut Stored,
    indexed: &mut Index,
    refusals: &mut Refusals,
    entry: &Entry,
    index: u64,
) -> (Outcome, Changes) {
    for id in l.to_look_up(entry) {
        let height = indexed.get(&id).copied();
        match (height, refusals.get(&id)) {
            (None, Some(refused)) => l.refusal_looked_up(refused.clone()),
            _ => l.looked_up(id, height),
        }
    }
    let wanted = l.to_load(entry);
    for (id, height) in &wanted {
        let t = stored[height]
            .iter()
            .find(|t| t.id == *id)
            .expect("indexed where stored");
        l.load_settled(t.clone()).expect("the latest version");
    }
    let (outcome, changes) = l.apply(entry, index);
    let height = changes.block.as_ref().expect("a block").height;
    if !changes.transfers.is_empty() {
        stored.insert(height, changes.transfers.clone());
    }
    for t in &changes.transfers {
        indexed.insert(t.id.clone(), height);
    }
    let changed = changes.transfers.iter().map(|t| &t.id);
    l.forget_settled(wanted.iter().map(|(id, _)| id).chain(changed));
    for (id, height) in indexed.iter() {
        l.drop_indexed(id, *height);
    }
    assert_eq!(l.indexed_len(), 0, "every id dropped");
    for id in &changes.rejected {
        let refused = l.rejected(id).expect("a refusal the entry made");
        refusals.insert(id.clone(), refused.clone());
    }
    // Refusals dropped after every other entry: a re-send meets its
    // refusal held, then dropped.
    if index % 2 == 1 {
        for id in refusals.keys() {
            l.drop_refusal(id);
        }
        assert_eq!(l.refusals_held(), 0, "every refusal dropped");
    }
    (outcome, changes)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// A ledger that keeps only pending transfers in memory, and loads the
    /// settled ones an entry names from what earlier blocks stored, with
    /// the index of where each is stored and the refusals kept outside
    /// it, gives every answer and every block exactly as one that keeps
    /// them all.
    #[test]
    fn forgetting_settled_transfers_and_their_index_changes_no_answer(ops in proptest::collection::vec((op(), -200i64..400), 1..60)) {
        let (mut keeps, mut forgets) = (genesis(), genesis());
        let (mut stored, mut indexed) = (Stored::new(), Index::new());
        let mut refusals = Refusals::new();
        for t in forgets.transfers.values() {
            let height = forgets.stored_height(&t.id).expect("indexed");
            stored.entry(height).or_default().push(t.clone());
            indexed.insert(t.id.clone(), height);
        }
        let all: Vec<TransferId> = forgets.transfers.keys().cloned().collect();
        forgets.forget_settled(&all);
        forgets.forget_settled_from_now();
        forgets.index_outside_from_now();
        for (id, height) in &indexed {
            forgets.drop_indexed(id, *height);
        }
        for r in forgets.all_rejected() {
            refusals.insert(r.request.id.clone(), r.clone());
        }
        for id in refusals.keys() {
            forgets.drop_refusal(id);
        }
        let mut now: i64 = 1_000;
        for (i, (op, step)) in ops.iter().enumerate() {
            now = (now + step).max(0);
            let entry = to_entry(op, now as u64);
            // Each entry twice: the second is a re-send of everything in it.
            for index in [100 + 2 * i as u64, 101 + 2 * i as u64] {
                let (want, want_changes) = keeps.apply(&entry, index);
                let (got, changes) = apply_forgetting(&mut forgets, &mut stored, &mut indexed, &mut refusals, &entry, index);
                prop_assert_eq!(&got, &want, "{:?}", op);
                prop_assert_eq!(&changes.block, &want_changes.block);
                prop_assert!(forgets.transfers.values().all(|t| t.state == TransferState::Pending));
            }
        }
        prop_assert_eq!(&forgets.accounts, &keeps.accounts);
        let kept: BTreeMap<&str, u64> = keeps.stored_at.iter().map(|(id, h)| (&**id, *h)).collect();
        let outside: BTreeMap<&str, u64> = indexed.iter().map(|(id, h)| (id.as_str(), *h)).collect();
        prop_assert_eq!(outside, kept);
        prop_assert_eq!(forgets.transfer_count(), keeps.transfer_count());
        prop_assert_eq!(&refusals, &keeps.rejected);
        for (id, t) in &keeps.transfers {
            let height = indexed[id];
            prop_assert_eq!(stored[&height].iter().find(|s| s.id == *id), Some(t));
        }
    }
}

/// Per item: Ok, or the refusal code (a retry's successes are the originals).
fn outcome_codes(o: &Outcome) -> Vec<Result<(), &'static str>> {
    let code = |r: &Result<Transfer, Rejection>| r.as_ref().map(|_| ()).map_err(|e| e.code());
    match o {
        Outcome::Transfers(rs) => rs.iter().map(code).collect(),
        Outcome::Transfer(r) => vec![code(r)],
        Outcome::Account(r) => vec![r.as_ref().map(|_| ()).map_err(|e| e.code())],
        Outcome::Ticked => vec![],
        Outcome::Proposal(r) => vec![r.as_ref().map(|_| ()).map_err(|e| e.code())],
        Outcome::Revoked(r) => vec![r.as_ref().map(|_| ()).map_err(|e| e.code())],
        Outcome::Joined(r) => vec![r.as_ref().map(|_| ()).map_err(|e| e.code())],
    }
}
