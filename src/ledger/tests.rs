//! Unit tests of the pure ledger: every rejection code, in its check order,
//! changes nothing; money is conserved.

use super::*;

fn org(s: &str) -> OrgName {
    OrgName::parse(s).unwrap()
}
fn acct(s: &str) -> AccountId {
    AccountId::parse(s).unwrap()
}
fn actor(o: &str, role: Role) -> Actor {
    Actor { org: org(o), role }
}
fn entry(actor: Actor, command: Command) -> Entry {
    Entry {
        actor,
        timestamp_ms: 1_700_000_000_000,
        command,
    }
}
fn new_account(id: &str, asset: &str, allow_negative: bool) -> NewAccount {
    NewAccount {
        id: acct(id),
        asset: Asset::parse(asset).unwrap(),
        allow_negative,
        readers: BTreeSet::new(),
    }
}
fn new_transfer(id: &str, from: &str, to: &str, amount: u64) -> NewTransfer {
    NewTransfer {
        id: TransferId::parse(id).unwrap(),
        debit_account: acct(from),
        credit_account: acct(to),
        amount: Amount::new(amount).unwrap(),
        asset: None,
        memo: None,
    }
}

/// org1 has an issuance account (may go negative) and `a1` holding 100 USD;
/// org2 has `b1` (USD) and `e1` (EUR).
fn seeded() -> Ledger {
    let mut l = Ledger::new([org("org1"), org("org2")].into());
    let admin1 = actor("org1", Role::Admin);
    let app1 = actor("org1", Role::App);
    let app2 = actor("org2", Role::App);
    for (who, a) in [
        (&admin1, new_account("issue", "USD", true)),
        (&app1, new_account("a1", "USD", false)),
        (&app2, new_account("b1", "USD", false)),
        (&app2, new_account("e1", "EUR", false)),
    ] {
        let (out, _) = l.apply(&entry(who.clone(), Command::CreateAccount(a)), 1);
        assert!(matches!(out, Outcome::Account(Ok(_))));
    }
    let (out, _) = l.apply(
        &entry(
            admin1,
            Command::Transfers(vec![new_transfer("seed", "issue", "a1", 100)]),
        ),
        2,
    );
    assert!(
        matches!(&out, Outcome::Transfers(r) if r[0].is_ok()),
        "{out:?}"
    );
    l
}

fn transfer_result(l: &mut Ledger, who: Actor, t: NewTransfer) -> Result<Transfer, Rejection> {
    match l.apply(&entry(who, Command::Transfers(vec![t])), 9).0 {
        Outcome::Transfers(mut r) => r.remove(0),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn every_transfer_rejection_changes_nothing() {
    let mut with_memo = new_transfer("seed", "issue", "a1", 100);
    with_memo.memo = Some("other".into());
    let mut wrong_asset = new_transfer("t", "a1", "b1", 1);
    wrong_asset.asset = Some(Asset::parse("EUR").unwrap());
    let cases: Vec<(&str, Actor, NewTransfer, Rejection)> = vec![
        (
            "partner",
            actor("org1", Role::Partner),
            new_transfer("t", "a1", "b1", 1),
            Rejection::RoleMayNotWrite,
        ),
        (
            "node",
            actor("org1", Role::Node),
            new_transfer("t", "a1", "b1", 1),
            Rejection::RoleMayNotWrite,
        ),
        (
            "same",
            actor("org1", Role::App),
            new_transfer("t", "a1", "a1", 1),
            Rejection::AccountsMustBeDifferent,
        ),
        (
            "no debit",
            actor("org1", Role::App),
            new_transfer("t", "zz", "b1", 1),
            Rejection::DebitAccountNotFound,
        ),
        (
            "no credit",
            actor("org1", Role::App),
            new_transfer("t", "a1", "zz", 1),
            Rejection::CreditAccountNotFound,
        ),
        (
            "not owner",
            actor("org2", Role::App),
            new_transfer("t", "a1", "b1", 1),
            Rejection::DebitAccountNotOwned,
        ),
        (
            "reused id",
            actor("org1", Role::Admin),
            with_memo,
            Rejection::ExistsWithDifferentFields,
        ),
        (
            "assets",
            actor("org1", Role::App),
            new_transfer("t", "a1", "e1", 1),
            Rejection::AssetMismatch,
        ),
        (
            "asset given",
            actor("org1", Role::App),
            wrong_asset,
            Rejection::AssetMismatch,
        ),
        (
            "overdraft",
            actor("org1", Role::App),
            new_transfer("t", "a1", "b1", 101),
            Rejection::InsufficientFunds,
        ),
    ];
    for (name, who, t, want) in cases {
        let mut l = seeded();
        let before = l.clone();
        let got = transfer_result(&mut l, who, t);
        assert_eq!(got, Err(want), "{name}");
        // Only the block height moves: a rejected command is still a block.
        assert_eq!(l.height(), before.height() + 1, "{name}");
        assert_eq!(l.accounts, before.accounts, "{name}");
        assert_eq!(l.transfers, before.transfers, "{name}");
    }
}

#[test]
fn overflow_is_refused_not_wrapped() {
    let mut l = Ledger::new([org("org1")].into());
    let admin = actor("org1", Role::Admin);
    for a in [
        new_account("i1", "USD", true),
        new_account("x", "USD", false),
    ] {
        l.apply(&entry(admin.clone(), Command::CreateAccount(a)), 1);
    }
    l.accounts.get_mut(&acct("x")).unwrap().credits_posted = POSTED_MAX - 5;
    l.accounts.get_mut(&acct("i1")).unwrap().debits_posted = POSTED_MAX - 5;
    let before = l.clone();
    let got = transfer_result(&mut l, admin.clone(), new_transfer("o", "i1", "x", 6));
    assert_eq!(got, Err(Rejection::Overflow));
    assert_eq!(l.accounts, before.accounts);
    // The refusal is remembered under its id.
    let again = transfer_result(&mut l, admin.clone(), new_transfer("o", "i1", "x", 6));
    assert_eq!(again, Err(Rejection::Overflow));
    assert!(transfer_result(&mut l, admin, new_transfer("o2", "i1", "x", 5)).is_ok());
}

#[test]
fn resend_returns_the_original() {
    let mut l = seeded();
    let t = new_transfer("p1", "a1", "b1", 40);
    let first = transfer_result(&mut l, actor("org1", Role::App), t.clone()).unwrap();
    let again = transfer_result(&mut l, actor("org1", Role::App), t).unwrap();
    assert_eq!(first, again);
    assert_eq!(l.account(&acct("a1")).unwrap().balance(), 60);
    assert_eq!(l.account(&acct("b1")).unwrap().balance(), 40);
}

#[test]
fn a_refused_transfer_is_refused_again_on_resend() {
    let mut l = seeded();
    let app1 = actor("org1", Role::App);
    let t = new_transfer("big", "a1", "b1", 150);
    assert_eq!(
        transfer_result(&mut l, app1.clone(), t.clone()),
        Err(Rejection::InsufficientFunds)
    );
    // Funds arrive; the same request still gets its original answer.
    let top_up = new_transfer("top-up", "issue", "a1", 100);
    assert!(transfer_result(&mut l, actor("org1", Role::Admin), top_up).is_ok());
    assert_eq!(
        transfer_result(&mut l, app1.clone(), t),
        Err(Rejection::InsufficientFunds)
    );
    let other = new_transfer("big", "a1", "b1", 10);
    assert_eq!(
        transfer_result(&mut l, app1, other),
        Err(Rejection::ExistsWithDifferentFields)
    );
    assert_eq!(l.account(&acct("b1")).unwrap().balance(), 0);
    // Refusals before ownership is known are not remembered.
    let not_mine = new_transfer("x1", "b1", "a1", 1);
    assert_eq!(
        transfer_result(&mut l, actor("org1", Role::App), not_mine),
        Err(Rejection::DebitAccountNotOwned)
    );
    assert!(l.rejected(&TransferId::parse("x1").unwrap()).is_none());
}

#[test]
fn create_account_rejections() {
    let mut readers = new_account("r", "USD", false);
    readers.readers.insert(org("nobody"));
    let mut grant = new_account("g", "USD", false);
    grant.readers.insert(org("org2"));
    let cases = vec![
        (
            actor("org1", Role::App),
            grant,
            Rejection::GrantRequiresAdmin,
        ),
        (
            actor("org1", Role::Partner),
            new_account("n", "USD", false),
            Rejection::RoleMayNotWrite,
        ),
        (
            actor("org1", Role::App),
            new_account("n", "USD", true),
            Rejection::AllowNegativeRequiresAdmin,
        ),
        (
            actor("org1", Role::Admin),
            readers,
            Rejection::UnknownReaderOrg,
        ),
        (
            actor("org2", Role::App),
            new_account("a1", "USD", false),
            Rejection::AccountExists,
        ),
        (
            actor("org1", Role::App),
            new_account("a1", "EUR", false),
            Rejection::AccountExists,
        ),
    ];
    for (who, req, want) in cases {
        let mut l = seeded();
        let before = l.accounts.clone();
        let (out, changes) = l.apply(&entry(who, Command::CreateAccount(req)), 9);
        assert_eq!(out, Outcome::Account(Err(want)));
        assert_eq!(changes, Changes::default());
        assert_eq!(l.accounts, before);
    }
    // The same create again is idempotent.
    let mut l = seeded();
    let (out, _) = l.apply(
        &entry(
            actor("org1", Role::App),
            Command::CreateAccount(new_account("a1", "USD", false)),
        ),
        9,
    );
    assert!(matches!(out, Outcome::Account(Ok(a)) if a.balance() == 100));
}

#[test]
fn money_is_conserved() {
    let mut l = seeded();
    for i in 0..50u64 {
        let t = new_transfer(&format!("c{i}"), "a1", "b1", i % 7 + 1);
        let _ = transfer_result(&mut l, actor("org1", Role::App), t);
        assert!(l.totals().values().all(|v| *v == 0));
        assert!(l.account(&acct("a1")).unwrap().balance() >= 0);
    }
}

#[test]
fn same_log_same_state() {
    let a = seeded();
    let b = seeded();
    assert_eq!(
        serde_json::to_vec(&a).unwrap(),
        serde_json::to_vec(&b).unwrap()
    );
}
