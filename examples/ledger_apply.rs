//! Apply throughput of the pure ledger, single-threaded (one core): no Raft,
//! no disk, no HTTP. Run: `cargo run --release --example ledger_apply`.
//!
//! It applies single-transfer entries, then batches of 100 and of 8000
//! transfers, from an issuance account to 1000 accounts, and prints
//! transfers per second for each shape.

use std::collections::BTreeSet;
use std::hint::black_box;
use std::time::Instant;

use alliance::ledger::{
    AccountId, Actor, Amount, Asset, Blinding, Command, Entry, Evidence, Ledger, NewAccount,
    NewTransfer, OrgName, Role, TransferId,
};

const ACCOUNTS: usize = 1000;

fn main() {
    for (label, batch, entries) in [
        ("single", 1usize, 200_000usize),
        ("batch 100", 100, 2_000),
        ("batch 8000", 8000, 25),
    ] {
        run(label, batch, entries);
    }
}

/// Applies `entries` entries of `batch` transfers each to a fresh ledger.
fn run(label: &str, batch: usize, entries: usize) {
    let org = OrgName::parse("org1").unwrap();
    let admin = Actor {
        org: org.clone(),
        role: Role::Admin,
    };
    let mut ledger = Ledger::new([org].into());
    // As a node's: settled transfers are stored, not kept in memory.
    ledger.forget_settled_from_now();
    let mut index = 0u64;
    let mut apply = |ledger: &mut Ledger, command: Command| {
        index += 1;
        let entry = Entry {
            actor: admin.clone(),
            timestamp_ms: 1_700_000_000_000 + index,
            command,
            evidence: Evidence::Leader,
            blinding: Blinding([7; 16]),
        };
        black_box(ledger.apply(&entry, index));
    };
    let account = |id: &str, allow_negative| NewAccount {
        id: AccountId::parse(id).unwrap(),
        asset: Asset::parse("USD").unwrap(),
        allow_negative,
        readers: BTreeSet::new(),
        balance_max: None,
    };
    apply(&mut ledger, Command::CreateAccount(account("issuer", true)));
    for i in 0..ACCOUNTS {
        apply(
            &mut ledger,
            Command::CreateAccount(account(&format!("acct-{i}"), false)),
        );
    }
    let mut next_id = 0u64;
    let mut transfer = || {
        next_id += 1;
        NewTransfer {
            id: TransferId::parse(&format!("t-{next_id}")).unwrap(),
            debit_account: AccountId::parse("issuer").unwrap(),
            credit_account: AccountId::parse(&format!("acct-{}", next_id as usize % ACCOUNTS))
                .unwrap(),
            amount: Amount::new(1 + next_id % 1000).unwrap(),
            asset: None,
            memo: None,
            pending: false,
            timeout_ms: None,
        }
    };
    let commands: Vec<Command> = (0..entries)
        .map(|_| Command::Transfers {
            transfers: (0..batch).map(|_| transfer()).collect(),
            atomic: false,
        })
        .collect();
    let start = Instant::now();
    for command in commands {
        apply(&mut ledger, command);
    }
    let secs = start.elapsed().as_secs_f64();
    let n = (batch * entries) as f64;
    println!(
        "{label:>10}: {n:>9} transfers in {secs:.3} s = {:>9.0} transfers/s on one core",
        n / secs
    );
    let totals = ledger.totals();
    assert!(
        totals
            .values()
            .all(|(posted, pending)| *posted == 0 && *pending == 0),
        "money not conserved"
    );
}
