//! Unit tests of the pure ledger: every rejection code, in its check order,
//! changes nothing; two-phase transfers, expiry, atomic batches, history.

use std::collections::BTreeSet;

use super::*;

pub(super) fn org(s: &str) -> OrgName {
    OrgName::parse(s).unwrap()
}
pub(super) fn acct(s: &str) -> AccountId {
    AccountId::parse(s).unwrap()
}
pub(super) fn tid(s: &str) -> TransferId {
    TransferId::parse(s).unwrap()
}
pub(super) fn actor(o: &str, role: Role) -> Actor {
    Actor { org: org(o), role }
}
pub(super) fn new_account(id: &str, asset: &str, allow_negative: bool) -> NewAccount {
    NewAccount {
        id: acct(id),
        asset: Asset::parse(asset).unwrap(),
        allow_negative,
        readers: BTreeSet::new(),
        balance_max: None,
    }
}
pub(super) fn new_transfer(id: &str, from: &str, to: &str, amount: u64) -> NewTransfer {
    NewTransfer {
        id: tid(id),
        debit_account: acct(from),
        credit_account: acct(to),
        amount: Amount::new(amount).unwrap(),
        asset: None,
        memo: None,
        pending: false,
        timeout_ms: None,
    }
}
fn pending(id: &str, from: &str, to: &str, amount: u64, timeout_ms: Option<u64>) -> NewTransfer {
    NewTransfer {
        pending: true,
        timeout_ms,
        ..new_transfer(id, from, to, amount)
    }
}
fn one(t: NewTransfer) -> Command {
    Command::Transfers {
        transfers: vec![t],
        atomic: false,
    }
}

const T0: u64 = 1_700_000_000_000;

/// Applies commands at time `T0 + ms`, panicking on nothing.
struct Run {
    l: Ledger,
    index: u64,
}

impl Run {
    fn at(&mut self, who: &Actor, ms: u64, command: Command) -> Outcome {
        self.at_with_changes(who, ms, command).0
    }
    fn at_with_changes(&mut self, who: &Actor, ms: u64, command: Command) -> (Outcome, Changes) {
        self.index += 1;
        let entry = Entry {
            actor: who.clone(),
            timestamp_ms: T0 + ms,
            command,
            evidence: Evidence::Leader,
            blinding: Blinding([7; 16]),
        };
        self.l.apply(&entry, self.index)
    }
    fn ok(&mut self, who: &Actor, command: Command) {
        let out = self.at(who, 0, command);
        let fine = match &out {
            Outcome::Account(r) => r.is_ok(),
            Outcome::Transfer(r) => r.is_ok(),
            Outcome::Transfers(rs) => rs.iter().all(Result::is_ok),
            Outcome::Ticked => true,
            Outcome::Proposal(r) => r.is_ok(),
            Outcome::Revoked(r) => r.is_ok(),
            Outcome::Joined(r) => r.is_ok(),
        };
        assert!(fine, "{out:?}");
    }
}

/// org1: `issue` (may go negative), `a1` (100 USD, 30 of it reserved by
/// pending `p1`, timeout 1000 ms), `closed1` (closed). org2: `b1`, `e1`
/// (EUR), `capped` (balance_max 150, holding 100).
fn seeded() -> Run {
    let mut r = Run {
        l: Ledger::new([org("org1"), org("org2"), org("org3")].into()),
        index: 0,
    };
    let (admin1, app1) = (actor("org1", Role::Admin), actor("org1", Role::App));
    let (admin2, app2) = (actor("org2", Role::Admin), actor("org2", Role::App));
    r.ok(
        &admin1,
        Command::CreateAccount(new_account("org1.issue", "USD", true)),
    );
    r.ok(
        &app1,
        Command::CreateAccount(new_account("org1.a1", "USD", false)),
    );
    r.ok(
        &admin1,
        Command::CreateAccount(new_account("org1.closed1", "USD", false)),
    );
    r.ok(
        &app2,
        Command::CreateAccount(new_account("org2.b1", "USD", false)),
    );
    r.ok(
        &app2,
        Command::CreateAccount(new_account("org2.e1", "EUR", false)),
    );
    let capped = NewAccount {
        balance_max: Some(150),
        ..new_account("org2.capped", "USD", false)
    };
    r.ok(&admin2, Command::CreateAccount(capped));
    r.ok(
        &admin1,
        one(new_transfer("org1.seed", "org1.issue", "org1.a1", 100)),
    );
    r.ok(
        &admin1,
        one(new_transfer(
            "org1.seed-cap",
            "org1.issue",
            "org2.capped",
            100,
        )),
    );
    r.ok(
        &app1,
        one(pending("org1.p1", "org1.a1", "org2.b1", 30, Some(1000))),
    );
    r.ok(
        &admin1,
        Command::CloseAccount {
            id: acct("org1.closed1"),
        },
    );
    r
}

fn rejection_of(out: &Outcome) -> Option<Rejection> {
    match out {
        Outcome::Account(Err(r)) | Outcome::Transfer(Err(r)) => Some(*r),
        Outcome::Transfers(rs) => rs.iter().find_map(|r| {
            r.as_ref()
                .err()
                .copied()
                .filter(|r| *r != Rejection::LinkedTransferFailed)
        }),
        _ => None,
    }
}

#[test]
fn every_rejection_is_triggered_and_changes_nothing() {
    use Rejection::*;
    let (admin1, app1, app2, partner1) = (
        actor("org1", Role::Admin),
        actor("org1", Role::App),
        actor("org2", Role::App),
        actor("org1", Role::Partner),
    );
    let mut granted = new_account("org1.g", "USD", false);
    granted.readers.insert(org("org2"));
    let mut to_nobody = new_account("org1.g", "USD", false);
    to_nobody.readers.insert(org("nobody"));
    let post = |id: &str, amount: Option<u64>| Command::PostPending {
        id: tid(id),
        amount: amount.map(|a| Amount::new(a).unwrap()),
    };
    let void = |id: &str| Command::VoidPending { id: tid(id) };
    type Case = (Rejection, Vec<(Actor, u64, Command)>, Actor, u64, Command);
    let cases: Vec<Case> = vec![
        (
            RoleMayNotWrite,
            vec![],
            partner1.clone(),
            0,
            one(new_transfer("org1.t", "org1.a1", "org2.b1", 1)),
        ),
        (
            AllowNegativeRequiresAdmin,
            vec![],
            app1.clone(),
            0,
            Command::CreateAccount(new_account("org1.n", "USD", true)),
        ),
        (
            GrantRequiresAdmin,
            vec![],
            app1.clone(),
            0,
            Command::CreateAccount(granted),
        ),
        (
            CloseRequiresAdmin,
            vec![],
            app1.clone(),
            0,
            Command::CloseAccount {
                id: acct("org1.a1"),
            },
        ),
        (
            UnknownReaderOrg,
            vec![],
            admin1.clone(),
            0,
            Command::CreateAccount(to_nobody),
        ),
        (
            AccountExists,
            vec![],
            app1.clone(),
            0,
            Command::CreateAccount(new_account("org1.a1", "EUR", false)),
        ),
        (
            AccountNotFound,
            vec![],
            admin1.clone(),
            0,
            Command::CloseAccount {
                id: acct("org1.zz"),
            },
        ),
        (
            AccountNotOwned,
            vec![],
            admin1.clone(),
            0,
            Command::CloseAccount {
                id: acct("org2.b1"),
            },
        ),
        (
            AccountsMustBeDifferent,
            vec![],
            app1.clone(),
            0,
            one(new_transfer("org1.t", "org1.a1", "org1.a1", 1)),
        ),
        (
            DebitAccountNotFound,
            vec![],
            app1.clone(),
            0,
            one(new_transfer("org1.t", "org1.zz", "org2.b1", 1)),
        ),
        (
            CreditAccountNotFound,
            vec![],
            app1.clone(),
            0,
            one(new_transfer("org1.t", "org1.a1", "org1.zz", 1)),
        ),
        (
            DebitAccountNotOwned,
            vec![],
            app2.clone(),
            0,
            one(new_transfer("org2.t", "org1.a1", "org2.b1", 1)),
        ),
        (
            IdOutsideNamespace,
            vec![],
            app2.clone(),
            0,
            one(new_transfer("org1.t", "org2.b1", "org1.a1", 1)),
        ),
        (
            ExistsWithDifferentFields,
            vec![],
            admin1.clone(),
            0,
            one(new_transfer("org1.seed", "org1.issue", "org1.a1", 99)),
        ),
        (
            AssetMismatch,
            vec![],
            app1.clone(),
            0,
            one(new_transfer("org1.t", "org1.a1", "org2.e1", 1)),
        ),
        (
            DebitAccountClosed,
            vec![],
            admin1.clone(),
            0,
            one(new_transfer("org1.t", "org1.closed1", "org1.a1", 1)),
        ),
        (
            CreditAccountClosed,
            vec![],
            app1.clone(),
            0,
            one(new_transfer("org1.t", "org1.a1", "org1.closed1", 1)),
        ),
        // 100 posted, 30 reserved: 70 available.
        (
            InsufficientFunds,
            vec![],
            app1.clone(),
            0,
            one(new_transfer("org1.t", "org1.a1", "org2.b1", 71)),
        ),
        (
            ExceedsBalanceMax,
            vec![],
            app1.clone(),
            0,
            one(new_transfer("org1.t", "org1.a1", "org2.capped", 51)),
        ),
        (
            LinkedTransferFailed,
            vec![],
            app1.clone(),
            0,
            Command::Transfers {
                transfers: vec![
                    new_transfer("org1.t1", "org1.a1", "org2.b1", 10),
                    new_transfer("org1.t2", "org1.a1", "org2.b1", 61),
                ],
                atomic: true,
            },
        ),
        (
            PendingTransferNotFound,
            vec![],
            app1.clone(),
            0,
            post("org1.nope", None),
        ),
        (
            PendingTransferNotPending,
            vec![],
            admin1.clone(),
            0,
            post("org1.seed", None),
        ),
        (
            PendingTransferAlreadyPosted,
            vec![(app1.clone(), 0, post("org1.p1", Some(10)))],
            app1.clone(),
            0,
            post("org1.p1", Some(20)),
        ),
        (
            PendingTransferAlreadyVoided,
            vec![(app1.clone(), 0, void("org1.p1"))],
            app1.clone(),
            0,
            post("org1.p1", None),
        ),
        (
            PendingTransferExpired,
            vec![(app1.clone(), 2000, Command::Tick)],
            app1.clone(),
            2000,
            void("org1.p1"),
        ),
        (
            ExceedsPendingAmount,
            vec![],
            app1.clone(),
            0,
            post("org1.p1", Some(31)),
        ),
    ];
    let mut covered = BTreeSet::new();
    for (want, setup, who, ms, command) in cases {
        let mut r = seeded();
        for (a, ms, c) in setup {
            r.at(&a, ms, c);
        }
        let before = r.l.clone();
        let out = r.at(&who, ms, command);
        if want == LinkedTransferFailed {
            // The good leg says it was dragged down; the bad leg says why.
            let Outcome::Transfers(rs) = &out else {
                panic!("{out:?}")
            };
            assert_eq!(rs, &vec![Err(LinkedTransferFailed), Err(InsufficientFunds)]);
        } else {
            assert_eq!(rejection_of(&out), Some(want), "{out:?}");
        }
        // Only the block height (and remembered refusals) move.
        assert_eq!(r.l.accounts, before.accounts, "{want:?}");
        assert_eq!(r.l.transfers, before.transfers, "{want:?}");
        assert_eq!(r.l.expiries, before.expiries, "{want:?}");
        assert_eq!(r.l.height(), before.height() + 1, "{want:?}");
        covered.insert(want.code());
    }
    covered.insert(Overflow.code()); // overflow_is_refused_not_wrapped
    for r in ORIGIN_REJECTIONS {
        covered.insert(r.code()); // a_refused_origin_refuses_its_unit_and_changes_nothing
    }
    covered.insert(OriginReplayed.code()); // a_grant_signed_before_the_one_in_force_is_refused
    for r in gov::tests::COVERED {
        covered.insert(r.code()); // the governance tests, each named there
    }
    // identity::attest::tests::a_revoked_certificate_attests_nothing
    covered.insert(CertificateRevoked.code());
    covered.insert(OrgRemoved.code());
    covered.insert(OrgRemoved.code());
    let all: BTreeSet<_> = Rejection::ALL.iter().map(|r| r.code()).collect();
    assert_eq!(covered, all, "every rejection code has a case");
}

const ORIGIN_REJECTIONS: [Rejection; 4] = [
    Rejection::OriginMissing,
    Rejection::OriginInvalid,
    Rejection::OriginForeign,
    Rejection::OriginStale,
];

/// A unit whose evidence was refused is refused whole, changes nothing and
/// leaves no refusal under its ids (they stay their owners' to use); the
/// other bundles of a group apply.
#[test]
fn a_refused_origin_refuses_its_unit_and_changes_nothing() {
    let app1 = actor("org1", Role::App);
    for r in ORIGIN_REJECTIONS {
        let mut run = seeded();
        let before = run.l.clone();
        let entry = |command| Entry {
            actor: app1.clone(),
            timestamp_ms: T0,
            command,
            evidence: Evidence::Leader,
            blinding: Blinding([7; 16]),
        };
        let batch = entry(one(new_transfer("org1.o1", "org1.a1", "org2.b1", 5)));
        let (out, _) = run.l.apply_logged(&batch, 100, 1, &[Err(r)]);
        assert_eq!(out, Outcome::Transfers(vec![Err(r)]));
        let create = entry(Command::CreateAccount(new_account("org1.o2", "USD", false)));
        let (out, _) = run.l.apply_logged(&create, 101, 1, &[Err(r)]);
        assert_eq!(out, Outcome::Account(Err(r)));
        assert_eq!(run.l.accounts, before.accounts, "{r:?}");
        assert_eq!(run.l.transfers, before.transfers, "{r:?}");
        assert_eq!(run.l.rejected, before.rejected, "{r:?}");
        assert_eq!(run.l.height(), before.height() + 2, "{r:?}");

        let bundle = |id: &str| Bundle {
            evidence: Evidence::Leader,
            items: vec![Grouped {
                actor: app1.clone(),
                transfer: new_transfer(id, "org1.a1", "org2.b1", 5),
            }],
        };
        let group = entry(Command::Group(vec![bundle("org1.o1"), bundle("org1.o3")]));
        let (out, _) = run.l.apply_logged(&group, 102, 1, &[Err(r), Ok(())]);
        let Outcome::Transfers(results) = out else {
            panic!("{out:?}")
        };
        assert_eq!(results[0], Err(r));
        assert!(results[1].is_ok(), "{results:?}");
        // The refused id is still free for its owner.
        run.ok(&app1, one(new_transfer("org1.o1", "org1.a1", "org2.b1", 5)));
    }
}

/// Ids belong to the organization that creates them: another organization
/// cannot create an account or a transfer in its namespace, and so cannot
/// learn from a conflict whether one of its ids exists.
#[test]
fn no_organization_creates_an_id_in_anothers_namespace() {
    let mut r = seeded();
    let (app1, app2) = (actor("org1", Role::App), actor("org2", Role::App));
    let before = r.l.clone();
    for (who, command) in [
        (
            &app2,
            Command::CreateAccount(new_account("org1.a1", "USD", false)),
        ),
        (
            &app2,
            Command::CreateAccount(new_account("org1.fresh", "USD", false)),
        ),
        (
            &app2,
            one(new_transfer("org1.seed", "org2.b1", "org1.a1", 1)),
        ),
        (
            &app2,
            one(new_transfer("org1.unused", "org2.b1", "org1.a1", 1)),
        ),
        (
            &app1,
            Command::CreateAccount(new_account("org1", "USD", false)),
        ),
        (
            &app1,
            Command::CreateAccount(new_account("org10.x", "USD", false)),
        ),
        (&app1, one(new_transfer("org1.", "org1.a1", "org2.b1", 1))),
        (&app1, one(new_transfer("org1x.t", "org1.a1", "org2.b1", 1))),
    ] {
        let out = r.at(who, 0, command);
        // The same answer whether the id exists or not.
        assert_eq!(rejection_of(&out), Some(Rejection::IdOutsideNamespace));
    }
    assert_eq!(r.l.accounts, before.accounts);
    assert_eq!(r.l.transfers, before.transfers);
    assert_eq!(r.l.rejected, before.rejected);
    // In its own namespace, org2 creates what it likes.
    r.ok(
        &app2,
        Command::CreateAccount(new_account("org2.a1", "USD", false)),
    );
}

/// A replayed grant change (or an older one arriving late) cannot undo a
/// later one: each account keeps when its grant in force was signed.
#[test]
fn a_grant_signed_before_the_one_in_force_is_refused() {
    let mut r = seeded();
    let admin1 = actor("org1", Role::Admin);
    let grant = |readers: &[&str], signed_at_ms: u64| Entry {
        actor: admin1.clone(),
        timestamp_ms: T0,
        command: Command::SetReaders {
            id: acct("org1.a1"),
            readers: readers.iter().map(|o| org(o)).collect(),
        },
        evidence: Evidence::Node(Seal {
            as_of_height: 0,
            node: 1,
            cert: Vec::new(),
            signed_at_ms,
            signature: Vec::new(),
        }),
        blinding: Blinding([0; 16]),
    };
    let apply = |r: &mut Run, entry: Entry| {
        r.index += 1;
        r.l.apply(&entry, r.index).0
    };
    let grant_org2 = grant(&["org2"], T0 + 10);
    assert!(matches!(
        apply(&mut r, grant_org2.clone()),
        Outcome::Account(Ok(_))
    ));
    let revoke = grant(&[], T0 + 20);
    assert!(matches!(
        apply(&mut r, revoke.clone()),
        Outcome::Account(Ok(_))
    ));
    for stale in [grant_org2, revoke, grant(&["org3"], T0 + 15)] {
        assert_eq!(
            apply(&mut r, stale),
            Outcome::Account(Err(Rejection::OriginReplayed))
        );
    }
    let a1 = r.l.account(&acct("org1.a1")).unwrap();
    assert!(a1.readers.is_empty(), "the revocation stands: {a1:?}");
    assert_eq!(a1.readers_signed_at_ms, T0 + 20);
    assert!(matches!(
        apply(&mut r, grant(&["org3"], T0 + 30)),
        Outcome::Account(Ok(_))
    ));
}

#[test]
fn overflow_is_refused_not_wrapped() {
    let mut r = seeded();
    let admin = actor("org1", Role::Admin);
    r.ok(
        &admin,
        Command::CreateAccount(new_account("org1.x", "USD", false)),
    );
    r.l.accounts
        .get_mut(&acct("org1.x"))
        .unwrap()
        .credits_posted = TOTAL_MAX - 5;
    r.l.accounts
        .get_mut(&acct("org1.issue"))
        .unwrap()
        .debits_posted = TOTAL_MAX - 5;
    let before = r.l.clone();
    let out = r.at(
        &admin,
        0,
        one(new_transfer("org1.o", "org1.issue", "org1.x", 6)),
    );
    assert_eq!(rejection_of(&out), Some(Rejection::Overflow));
    assert_eq!(r.l.accounts, before.accounts);
    // The refusal is remembered under its id; a new id within range works.
    let again = r.at(
        &admin,
        0,
        one(new_transfer("org1.o", "org1.issue", "org1.x", 6)),
    );
    assert_eq!(rejection_of(&again), Some(Rejection::Overflow));
    r.ok(
        &admin,
        one(new_transfer("org1.o2", "org1.issue", "org1.x", 5)),
    );
}

#[test]
fn a_refused_transfer_is_refused_again_on_resend() {
    let mut r = seeded();
    let app1 = actor("org1", Role::App);
    let big = new_transfer("org1.big", "org1.a1", "org2.b1", 150);
    assert_eq!(
        rejection_of(&r.at(&app1, 0, one(big.clone()))),
        Some(Rejection::InsufficientFunds)
    );
    r.ok(
        &actor("org1", Role::Admin),
        one(new_transfer("org1.top-up", "org1.issue", "org1.a1", 100)),
    );
    assert_eq!(
        rejection_of(&r.at(&app1, 0, one(big))),
        Some(Rejection::InsufficientFunds)
    );
    let other = new_transfer("org1.big", "org1.a1", "org2.b1", 10);
    assert_eq!(
        rejection_of(&r.at(&app1, 0, one(other))),
        Some(Rejection::ExistsWithDifferentFields)
    );
    // Every refusal of an id in the caller's namespace is remembered; one
    // outside it is not (the id is another organization's).
    let not_mine = new_transfer("org1.x1", "org2.b1", "org1.a1", 1);
    assert_eq!(
        rejection_of(&r.at(&app1, 0, one(not_mine))),
        Some(Rejection::DebitAccountNotOwned)
    );
    let remembered = r.l.rejected(&tid("org1.x1")).map(|x| x.rejection);
    assert_eq!(remembered, Some(Rejection::DebitAccountNotOwned));
    let outside = new_transfer("org2.x1", "org1.a1", "org2.b1", 1);
    assert_eq!(
        rejection_of(&r.at(&app1, 0, one(outside))),
        Some(Rejection::IdOutsideNamespace)
    );
    assert!(r.l.rejected(&tid("org2.x1")).is_none());
}

/// A request that was refused is never applied later: sent again after
/// what refused it has changed (the credit account now exists, the funds
/// arrived), a plain transfer and an atomic batch get their first answer.
/// So neither a retry nor a member replaying a signed request can turn a
/// refusal into a payment.
#[test]
fn a_refused_request_sent_again_later_is_refused_again() {
    let mut r = seeded();
    let (app1, admin1) = (actor("org1", Role::App), actor("org1", Role::Admin));
    let to_missing = one(new_transfer("org1.m1", "org1.a1", "org1.later", 5));
    assert_eq!(
        rejection_of(&r.at(&app1, 0, to_missing.clone())),
        Some(Rejection::CreditAccountNotFound)
    );
    r.ok(
        &app1,
        Command::CreateAccount(new_account("org1.later", "USD", false)),
    );
    assert_eq!(
        rejection_of(&r.at(&app1, 0, to_missing)),
        Some(Rejection::CreditAccountNotFound)
    );

    let batch = Command::Transfers {
        transfers: vec![
            new_transfer("org1.m2", "org1.a1", "org2.b1", 10),
            new_transfer("org1.m3", "org1.a1", "org2.b1", 1_000),
        ],
        atomic: true,
    };
    let first = r.at(&app1, 0, batch.clone());
    r.ok(
        &admin1,
        one(new_transfer("org1.m-fund", "org1.issue", "org1.a1", 5_000)),
    );
    let before = r.l.account(&acct("org2.b1")).unwrap().balance();
    let again = r.at(&app1, 0, batch);
    assert_eq!(again, first);
    assert_eq!(
        first,
        Outcome::Transfers(vec![
            Err(Rejection::LinkedTransferFailed),
            Err(Rejection::InsufficientFunds)
        ])
    );
    assert_eq!(r.l.account(&acct("org2.b1")).unwrap().balance(), before);
}

/// An atomic batch that re-sends a transfer already made and is refused
/// for another item: the re-sent item reports `linked_transfer_failed`,
/// but its id keeps the transfer it holds, and no refusal is remembered
/// beside it.
#[test]
fn a_refused_atomic_batch_remembers_nothing_under_an_id_that_holds_a_transfer() {
    let mut r = seeded();
    let app1 = actor("org1", Role::App);
    let made = new_transfer("org1.r1", "org1.a1", "org2.b1", 10);
    r.ok(&app1, one(made.clone()));
    let batch = Command::Transfers {
        transfers: vec![
            made.clone(),
            new_transfer("org1.r2", "org1.a1", "org2.b1", 1_000),
        ],
        atomic: true,
    };
    assert_eq!(
        r.at(&app1, 0, batch),
        Outcome::Transfers(vec![
            Err(Rejection::LinkedTransferFailed),
            Err(Rejection::InsufficientFunds)
        ])
    );
    assert!(!r.l.rejected.contains_key(&made.id), "no refusal beside it");
    assert!(r.l.rejected.contains_key(&tid("org1.r2")));
    let Outcome::Transfers(again) = r.at(&app1, 0, one(made.clone())) else {
        panic!("a transfer outcome")
    };
    assert_eq!(
        again[0].as_ref().map(|t| t.amount),
        Ok(made.amount),
        "the original"
    );
}

#[test]
fn pending_reserves_then_post_moves_part_and_releases_the_rest() {
    let mut r = seeded();
    let app1 = actor("org1", Role::App);
    let a1 = |l: &Ledger| l.account(&acct("org1.a1")).unwrap().clone();
    assert_eq!(
        (
            a1(&r.l).balance(),
            a1(&r.l).available(),
            a1(&r.l).debits_pending
        ),
        (100, 70, 30)
    );
    let out = r.at(
        &app1,
        0,
        Command::PostPending {
            id: tid("org1.p1"),
            amount: Some(Amount::new(20).unwrap()),
        },
    );
    let Outcome::Transfer(Ok(t)) = out else {
        panic!("{out:?}")
    };
    assert_eq!(
        (t.state, t.posted_amount.map(Amount::units)),
        (TransferState::Posted, Some(20))
    );
    assert_eq!(
        (
            a1(&r.l).balance(),
            a1(&r.l).available(),
            a1(&r.l).debits_pending
        ),
        (80, 80, 0)
    );
    let b1 = r.l.account(&acct("org2.b1")).unwrap();
    assert_eq!((b1.balance(), b1.credits_pending), (20, 0));
    // The same post again is idempotent; the pending left the expiry index.
    let again = r.at(
        &app1,
        0,
        Command::PostPending {
            id: tid("org1.p1"),
            amount: Some(Amount::new(20).unwrap()),
        },
    );
    assert_eq!(again, Outcome::Transfer(Ok(t)));
    assert_eq!(r.l.next_expiry_ms(), None);
}

#[test]
fn a_leader_stamping_the_past_moves_no_timestamp_back() {
    let mut r = seeded();
    let app1 = actor("org1", Role::App);
    let late_ms = 7_200_000 + 10_000;
    let late = one(new_transfer("org1.late", "org1.a1", "org2.b1", 1));
    r.at(&app1, late_ms, late);
    // A leader whose clock is two hours behind.
    let early = one(new_transfer("org1.early", "org1.a1", "org2.b1", 1));
    let (_, changes) = r.at_with_changes(&app1, late_ms - 7_200_000, early);
    let now = T0 + late_ms;
    assert_eq!(r.l.head().timestamp_ms, now, "the block");
    assert_eq!(r.l.transfer(&tid("org1.early")).unwrap().timestamp_ms, now);
    assert_eq!(changes.history.len(), 2);
    assert!(
        changes.history.iter().all(|i| i.timestamp_ms == now),
        "history"
    );
}

#[test]
fn void_releases_and_expiry_happens_on_the_ledger_clock() {
    let mut r = seeded();
    let app1 = actor("org1", Role::App);
    r.ok(&app1, Command::VoidPending { id: tid("org1.p1") });
    assert_eq!(r.l.account(&acct("org1.a1")).unwrap().available(), 100);
    r.ok(&app1, Command::VoidPending { id: tid("org1.p1") }); // idempotent

    r.ok(
        &app1,
        one(pending("org1.p2", "org1.a1", "org2.b1", 40, Some(500))),
    );
    let expires =
        r.l.transfer(&tid("org1.p2"))
            .unwrap()
            .expires_at_ms
            .unwrap();
    assert_eq!(r.l.next_expiry_ms(), Some(expires));
    // A leader whose clock runs behind cannot turn the ledger clock back.
    r.at(&app1, 0, Command::Tick);
    assert_eq!(
        r.l.transfer(&tid("org1.p2")).unwrap().state,
        TransferState::Pending
    );
    let height = r.l.height() + 1;
    r.at(&app1, 499 + 1, Command::Tick);
    let p2 = r.l.transfer(&tid("org1.p2")).unwrap();
    assert_eq!(
        (p2.state, p2.resolved_height),
        (TransferState::Expired, Some(height))
    );
    assert_eq!(r.l.account(&acct("org1.a1")).unwrap().available(), 100);
    assert_eq!(r.l.account(&acct("org2.b1")).unwrap().credits_pending, 0);
}

#[test]
fn atomic_batches_are_all_or_nothing_and_plain_ones_are_per_item() {
    let mut r = seeded();
    let app1 = actor("org1", Role::App);
    let ok_batch = vec![
        new_transfer("org1.x1", "org1.a1", "org2.b1", 10),
        new_transfer("org1.x2", "org1.a1", "org2.b1", 20),
    ];
    r.ok(
        &app1,
        Command::Transfers {
            transfers: ok_batch,
            atomic: true,
        },
    );
    assert_eq!(r.l.account(&acct("org2.b1")).unwrap().balance(), 30);

    let mixed = vec![
        new_transfer("org1.y1", "org1.a1", "org2.b1", 5),
        new_transfer("org1.y2", "org1.a1", "org1.zz", 5),
    ];
    let out = r.at(
        &app1,
        0,
        Command::Transfers {
            transfers: mixed,
            atomic: false,
        },
    );
    let Outcome::Transfers(rs) = out else {
        panic!()
    };
    assert!(rs[0].is_ok() && rs[1] == Err(Rejection::CreditAccountNotFound));
    assert_eq!(r.l.account(&acct("org2.b1")).unwrap().balance(), 35);
}

/// A ledger that forgets settled transfers keeps the ones an entry makes
/// with that entry's changes: a re-send later in the same batch still gets
/// the original, and the block stores each made transfer once, in id order.
#[test]
fn a_resend_within_one_entry_gets_the_original_in_a_forgetting_ledger() {
    let mut r = seeded();
    r.l.forget_settled_from_now();
    let app1 = actor("org1", Role::App);
    let entry = Entry {
        actor: app1,
        timestamp_ms: T0,
        command: Command::Transfers {
            transfers: vec![
                new_transfer("org1.z2", "org1.a1", "org2.b1", 10),
                new_transfer("org1.z1", "org1.a1", "org2.b1", 5),
                new_transfer("org1.z2", "org1.a1", "org2.b1", 10),
                new_transfer("org1.z3", "org1.a1", "org2.b1", 7),
                new_transfer("org1.z3", "org1.a1", "org2.b1", 7),
                new_transfer("org1.z2", "org1.a1", "org2.b1", 11),
            ],
            atomic: false,
        },
        evidence: Evidence::Leader,
        blinding: Blinding([7; 16]),
    };
    r.index += 1;
    let (out, changes) = r.l.apply(&entry, r.index);
    let Outcome::Transfers(rs) = out else {
        panic!("{out:?}")
    };
    let first = rs[0].clone().expect("z2 is made");
    assert_eq!(rs[2], Ok(first.clone()), "the re-send is answered with z2");
    // z3 is made after the first re-send looked z2 up, and found too.
    let third = rs[3].clone().expect("z3 is made");
    assert_eq!(rs[4], Ok(third), "the re-send is answered with z3");
    assert_eq!(rs[5], Err(Rejection::ExistsWithDifferentFields));
    assert_eq!(r.l.account(&acct("org2.b1")).unwrap().balance(), 22);
    let ids: Vec<&str> = changes.transfers.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(
        ids,
        ["org1.z1", "org1.z2", "org1.z3"],
        "each made transfer once, in id order"
    );
    assert_eq!(changes.transfers[1], first);
    assert!(r.l.transfer(&tid("org1.z2")).is_none(), "settled: not kept");
    assert_eq!(r.l.stored_height(&tid("org1.z2")), Some(first.height));
}

#[test]
fn history_records_every_event_with_the_balance_after_it() {
    let mut r = seeded();
    let app1 = actor("org1", Role::App);
    let mut changes = Changes::default();
    for (i, ms) in [(0, 0), (1, 0)] {
        r.index += 1;
        let entry = Entry {
            actor: app1.clone(),
            timestamp_ms: T0 + ms,
            command: one(new_transfer(&format!("org1.h{i}"), "org1.a1", "org2.b1", 5)),
            evidence: Evidence::Leader,
            blinding: Blinding([7; 16]),
        };
        changes = r.l.apply(&entry, r.index).1;
    }
    let item = changes
        .history
        .iter()
        .find(|h| h.account == acct("org1.a1"))
        .unwrap();
    // a1: seed (credit), p1 (pending), h0, h1 → the fourth item, seq 3.
    assert_eq!(
        (
            item.seq,
            item.balance_after,
            item.debits_pending_after,
            item.event
        ),
        (3, 90, 30, Event::Posted)
    );
    assert_eq!(r.l.account(&acct("org1.a1")).unwrap().history_len, 4);
}

#[test]
fn grants_change_who_reads() {
    let mut r = seeded();
    let partner2 = actor("org2", Role::Partner);
    assert!(!r
        .l
        .account(&acct("org1.a1"))
        .unwrap()
        .readable_by(&partner2));
    r.ok(
        &actor("org1", Role::Admin),
        Command::SetReaders {
            id: acct("org1.a1"),
            readers: [org("org2")].into(),
        },
    );
    assert!(r
        .l
        .account(&acct("org1.a1"))
        .unwrap()
        .readable_by(&partner2));
    r.ok(
        &actor("org1", Role::Admin),
        Command::SetReaders {
            id: acct("org1.a1"),
            readers: BTreeSet::new(),
        },
    );
    assert!(!r
        .l
        .account(&acct("org1.a1"))
        .unwrap()
        .readable_by(&partner2));
}

#[test]
fn same_log_same_state() {
    let (a, b) = (seeded(), seeded());
    assert_eq!(
        serde_json::to_vec(&a.l).unwrap(),
        serde_json::to_vec(&b.l).unwrap()
    );
}

/// Seals an empty block on the seeded ledger for the entry after its head,
/// as `apply` would make it and then `edit` changes it.
fn seal_next(edit: impl FnOnce(&mut state::At<'_>)) {
    let mut r = seeded();
    let admin = actor("org1", Role::Admin);
    let mut at = state::At {
        actor: &admin,
        height: r.l.height() + 1,
        log_index: r.index + 1,
        timestamp_ms: r.l.clock_ms(),
        clock_ms: r.l.clock_ms(),
        signed_at_ms: None,
        client: None,
    };
    edit(&mut at);
    r.l.seal_block(at, &Outcome::Ticked, 0, &mut Changes::default());
}

#[test]
fn the_entry_after_the_head_seals() {
    seal_next(|_| {});
}

#[test]
#[should_panic(expected = "block 12 does not follow the head, block 10")]
fn a_block_that_skips_a_height_stops_the_replica() {
    seal_next(|at| at.height += 1);
}

#[test]
#[should_panic(expected = "the ledger clock went back")]
fn a_ledger_clock_that_goes_back_stops_the_replica() {
    seal_next(|at| {
        at.clock_ms -= 1;
        at.timestamp_ms -= 1;
    });
}

/// Checks, as one entry's, the money `edit` changes directly (as a broken
/// apply would) in the seeded accounts.
fn check_entry(edit: impl FnOnce(&mut Ledger, &mut Changes)) {
    let mut r = seeded();
    let mut changes = Changes::default();
    edit(&mut r.l, &mut changes);
    r.l.state_digest(&mut changes, r.l.height() + 1);
}

#[test]
#[should_panic(expected = "does not balance in USD: balances moved by 1 in sum")]
fn an_entry_that_makes_money_stops_the_replica() {
    check_entry(|l, c| l.account_mut(&acct("org2.b1"), c).credits_posted += 1);
}

#[test]
#[should_panic(expected = "pending debits less credits by 1")]
fn an_entry_that_reserves_on_one_side_only_stops_the_replica() {
    check_entry(|l, c| l.account_mut(&acct("org1.issue"), c).debits_pending += 1);
}

#[test]
#[should_panic(expected = "apply overdrew account org1.a1")]
fn apply_that_overdraws_an_account_stops_the_replica() {
    // a1 holds 100, 30 of it reserved: 71 more balances but overdraws.
    check_entry(|l, c| {
        l.account_mut(&acct("org1.a1"), c).debits_posted += 71;
        l.account_mut(&acct("org2.b1"), c).credits_posted += 71;
    });
}

#[test]
#[should_panic(expected = "1 changed accounts escaped the balance check")]
fn an_account_changed_but_not_stored_stops_the_replica() {
    check_entry(|l, c| {
        let a1 = &l.accounts[&acct("org1.a1")];
        c.before.insert(a1.id.clone(), changes::Money::of(a1));
    });
}

#[test]
fn an_entry_that_moves_money_between_accounts_balances() {
    check_entry(|l, c| {
        l.account_mut(&acct("org1.a1"), c).debits_posted += 70;
        l.account_mut(&acct("org2.b1"), c).credits_posted += 70;
        l.account_mut(&acct("org1.issue"), c).debits_pending += 5;
        l.account_mut(&acct("org2.capped"), c).credits_pending += 5;
    });
}

#[test]
#[should_panic(expected = "a batch left its journal open")]
fn an_entry_that_leaves_a_journal_open_stops_the_replica() {
    let mut r = seeded();
    r.l.journal = Some(mutate::Journal::default());
    r.at(&actor("org1", Role::Admin), 0, Command::Tick);
}

#[test]
#[should_panic(expected = "settled transfers are forgotten between entries only")]
fn forgetting_while_a_batch_runs_stops_the_replica() {
    let mut r = seeded();
    r.l.journal = Some(mutate::Journal::default());
    r.l.forget_settled([&tid("org1.seed")]);
}

#[test]
#[should_panic(expected = "an entry stored two versions of one transfer")]
fn an_entry_that_stores_a_transfer_twice_stops_the_replica() {
    let mut r = seeded();
    let p1 = r.l.transfer(&tid("org1.p1")).unwrap().clone();
    let mut changes = Changes::default();
    changes.in_map.insert(p1.id.clone());
    changes.push_made(p1);
    r.l.gather_transfers(&mut changes);
}

/// Applies one transfer `id` (5 from a1 to b1) at `T0` on a fresh seeded
/// ledger, in an entry blinded with `blinding`: the block's leaf hashes,
/// its header, and the transfer's leaf JSON.
fn one_transfer_block(id: &str, blinding: [u8; 16]) -> (Vec<Hash>, BlockHeader, String) {
    let mut r = seeded();
    r.index += 1;
    let entry = Entry {
        actor: actor("org1", Role::App),
        timestamp_ms: T0,
        command: one(new_transfer(id, "org1.a1", "org2.b1", 5)),
        evidence: Evidence::Leader,
        blinding: Blinding(blinding),
    };
    let (out, changes) = r.l.apply(&entry, r.index);
    let Outcome::Transfers(results) = out else {
        panic!("{out:?}")
    };
    let t = results[0].as_ref().expect("the transfer is accepted");
    let block = changes.block.expect("every entry is a block");
    (changes.leaf_hashes, block, transfer_leaf(t))
}

#[test]
fn leaf_hashes_are_blinded_by_the_entrys_blinding_and_are_the_same_on_every_replica() {
    use sha2::{Digest, Sha256};
    let (a, a_block, a_leaf) = one_transfer_block("org1.bl-1", [1; 16]);

    // The documented hash: SHA-256(0x00 ‖ blind ‖ leaf), the blind
    // SHA-256("alliance leaf blind v1" ‖ blinding ‖ index as u64 BE).
    let blind: Hash = Sha256::new()
        .chain_update(b"alliance leaf blind v1")
        .chain_update([1u8; 16])
        .chain_update(0u64.to_be_bytes())
        .finalize()
        .into();
    let leaf: Hash = Sha256::new()
        .chain_update([0x00])
        .chain_update(blind)
        .chain_update(a_leaf.as_bytes())
        .finalize()
        .into();
    assert_eq!(a, vec![leaf]);
    assert_eq!(a_block.merkle_root, leaf, "a block of one leaf");
    assert_ne!(
        a[0],
        chain::leaf_hash(a_leaf.as_bytes()),
        "the record alone does not give the leaf"
    );

    // The same entry: the same leaves and block, as on every replica.
    let (again, again_block, again_leaf) = one_transfer_block("org1.bl-1", [1; 16]);
    assert_eq!((&again, &again_leaf), (&a, &a_leaf));
    assert_eq!(again_block.hash(), a_block.hash());

    // The same record under another blinding: another leaf hash.
    let (other, other_block, other_leaf) = one_transfer_block("org1.bl-1", [2; 16]);
    assert_eq!(other_leaf, a_leaf, "the record is the same");
    assert_ne!(other, a);
    assert_ne!(other_block.merkle_root, a_block.merkle_root);

    // Transfers equal but for their id: each leaf is its blinding's and its
    // record's, whether the blindings are equal or not.
    let (b_same, _, b_leaf) = one_transfer_block("org1.bl-2", [1; 16]);
    let (b_other, _, _) = one_transfer_block("org1.bl-2", [2; 16]);
    assert_eq!(a_leaf.replacen("bl-1", "bl-2", 1), b_leaf);
    assert_ne!(b_same, a);
    assert_ne!(b_other, a);
    assert_ne!(b_other, b_same);
    assert_eq!(
        b_same,
        vec![chain::blinded_leaf_hash(&blind, b_leaf.as_bytes())]
    );

    // Each position has its own blind.
    let blinding = Blinding([1; 16]);
    assert_eq!(chain::leaf_blind(&blinding, 0), blind);
    assert_ne!(chain::leaf_blind(&blinding, 1), blind);
}

#[test]
fn a_stored_head_clock_or_count_apply_could_not_go_on_from_is_refused() {
    let mut head = BlockHeader::genesis([0; 32]);
    assert_eq!(check_stored_head(None, 0, 0, None), Ok(()));
    let err = check_stored_head(None, 5, 0, None).unwrap_err();
    assert!(
        err.contains("the ledger clock reads 5 ms, but the head, block 0, was made at 0 ms"),
        "{err}"
    );
    (head.height, head.timestamp_ms) = (HEIGHT_MAX - 1, 7);
    assert_eq!(
        check_stored_head(Some(&head), 7, HEIGHT_MAX - 1, None),
        Ok(())
    );
    let err = check_stored_head(Some(&head), 8, 0, None).unwrap_err();
    assert!(err.contains("reads 8 ms"), "{err}");
    let err = check_stored_head(Some(&head), 7, HEIGHT_MAX, None).unwrap_err();
    assert!(err.contains("past any a ledger reaches"), "{err}");
    head.height = HEIGHT_MAX;
    let err = check_stored_head(Some(&head), 7, 0, None).unwrap_err();
    assert!(
        err.contains("the head is block 4611686018427387904 after 0 transfers"),
        "{err}"
    );
}
