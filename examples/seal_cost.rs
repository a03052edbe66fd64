//! What evidence of origin costs per write unit: a node sealing a bundle,
//! and a replica checking the seal in apply (with the certificate already
//! checked once, as in steady state), with real certificates from the
//! demo's scripts.
//!
//! `cargo run --release --example seal_cost [ITEMS_PER_BUNDLE]` (default 1).

use std::collections::BTreeSet;
use std::time::Instant;

use alliance::config::{Genesis, NodeConfig};
use alliance::demo::{self, Options};
use alliance::identity::attest::{Attested, Attester, Witness};
use alliance::identity::Trust;
use alliance::ledger::chain::Blinding;
use alliance::ledger::{
    AccountId, Actor, Amount, Bundle, Command, Entry, Evidence, Gov, Grouped, NewTransfer, OrgName,
    Role, TransferId,
};

const ROUNDS: u32 = 2_000;

fn main() {
    let items: usize = std::env::args()
        .nth(1)
        .map_or(1, |n| n.parse().expect("ITEMS_PER_BUNDLE is a number"));
    let dir = tempfile::tempdir().expect("temp dir");
    let layout = demo::prepare(dir.path(), &Options::default()).expect("demo certificates");
    let genesis = Genesis::load(&layout.genesis).expect("genesis");
    let trust = std::sync::Arc::new(Trust::from_genesis(&genesis).expect("trust"));
    let tls = NodeConfig::load(&layout.node(1).config)
        .expect("node 1 config")
        .tls;
    let attester = Attester::new(1, &tls, genesis.hash_bytes()).expect("attester");
    let follower = Witness::new(
        trust.clone(),
        genesis.hash_bytes(),
        alliance::api::body::decode_signed,
    );
    let leader = Witness::new(
        trust,
        genesis.hash_bytes(),
        alliance::api::body::decode_signed,
    )
    .with_own_seals(attester.own_seals());

    let org1 = OrgName::parse("org1").unwrap();
    let app = Actor {
        org: org1.clone(),
        role: Role::App,
    };
    let bundle: Vec<Grouped> = (0..items)
        .map(|i| Grouped {
            actor: app.clone(),
            transfer: NewTransfer {
                id: TransferId::parse(&format!("org1.t-{i}")).unwrap(),
                debit_account: AccountId::parse("org1.ops").unwrap(),
                credit_account: AccountId::parse("org2.ops").unwrap(),
                amount: Amount::new(1_000).unwrap(),
                asset: None,
                memo: Some("invoice 17".into()),
                pending: false,
                timeout_ms: None,
            },
        })
        .collect();
    let now = alliance::api::service::write::now_ms();
    let entry = |evidence: Evidence, now: u64| Entry {
        actor: Actor {
            org: org1.clone(),
            role: Role::Node,
        },
        timestamp_ms: now,
        command: Command::Group(vec![Bundle {
            evidence,
            items: bundle.clone(),
        }]),
        evidence: Evidence::Leader,
        blinding: Blinding([7; 16]),
    };

    let start = Instant::now();
    let mut entries = Vec::new();
    // Each seal at its own millisecond: each signs its own message.
    for i in 0..u64::from(ROUNDS) {
        let seal = attester.seal(&Attested::Bundle(&bundle), now + i);
        entries.push(entry(seal, now + i));
    }
    let seal = start.elapsed() / ROUNDS;

    let start = Instant::now();
    for e in &entries {
        assert_eq!(
            follower.verdicts(e, e.timestamp_ms, &Gov::default()),
            vec![Ok(())]
        );
    }
    let check = start.elapsed() / ROUNDS;

    let start = Instant::now();
    for e in &entries[ROUNDS as usize - 1_000..] {
        assert_eq!(
            leader.verdicts(e, e.timestamp_ms, &Gov::default()),
            vec![Ok(())]
        );
    }
    let own = start.elapsed() / 1_000;
    let orgs: BTreeSet<_> = genesis.org_names();
    println!(
        "bundle of {items} transfer(s), {} organizations: seal {seal:?}, check on a replica \
         {check:?}, check of its own seal on the sealing node {own:?}",
        orgs.len()
    );
}
