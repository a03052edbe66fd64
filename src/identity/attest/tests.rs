//! Seals made with real node keys (certificates from our scripts, through
//! `demo::prepare`), checked as every replica checks them.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::*;
use crate::config::{Genesis, NodeConfig};
use crate::demo::{self, Layout, Options};
use crate::ledger::{AccountId, Amount, Blinding, ClientSeal, NewTransfer, OrgName, TransferId};

impl Witness {
    /// Verdicts with nothing revoked.
    fn verdicts_ungoverned(&self, entry: &Entry, clock_ms: u64) -> Vec<Verdict> {
        self.verdicts(entry, clock_ms, &Gov::default())
    }
}

/// A three-organization consortium's certificates and genesis, on disk.
pub(crate) struct Consortium {
    _dir: tempfile::TempDir,
    pub layout: Layout,
    pub genesis: Genesis,
    pub trust: Arc<Trust>,
}

impl Consortium {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let layout = demo::prepare(dir.path(), &Options::default()).expect("prepare consortium");
        let genesis = Genesis::load(&layout.genesis).expect("genesis");
        let trust = Arc::new(Trust::from_genesis(&genesis).expect("trust"));
        Self {
            _dir: dir,
            layout,
            genesis,
            trust,
        }
    }

    pub fn tls(&self, node: NodeId) -> TlsFiles {
        NodeConfig::load(&self.layout.node(node).config)
            .expect("node config")
            .tls
    }

    /// The certificate and key of `org`'s `role`.
    pub fn role_tls(&self, org: &str, role: &str) -> TlsFiles {
        let id = &self.layout.org(org).identities[role];
        TlsFiles {
            cert: id.cert.clone(),
            key: id.key.clone(),
        }
    }

    /// Node `node`'s attester (node 1 is org1's, 2 org2's, 3 org3's).
    pub fn attester(&self, node: NodeId) -> Attester {
        Attester::new(node, &self.tls(node), self.genesis.hash_bytes()).expect("attester")
    }

    pub fn witness(&self) -> Witness {
        Witness::new(
            self.trust.clone(),
            self.genesis.hash_bytes(),
            crate::api::body::decode_signed,
        )
    }

    pub fn orgs(&self) -> BTreeSet<OrgName> {
        self.genesis.org_names()
    }
}

pub(crate) fn app(org: &str) -> Actor {
    Actor {
        org: OrgName::parse(org).unwrap(),
        role: crate::ledger::Role::App,
    }
}

pub(crate) fn transfer(id: &str, from: &str, to: &str, amount: u64) -> Command {
    Command::Transfers {
        transfers: vec![NewTransfer {
            id: TransferId::parse(id).unwrap(),
            debit_account: AccountId::parse(from).unwrap(),
            credit_account: AccountId::parse(to).unwrap(),
            amount: Amount::new(amount).unwrap(),
            asset: None,
            memo: None,
            pending: false,
            timeout_ms: None,
        }],
        atomic: false,
    }
}

/// An entry at `at_ms` whose caller is `actor`, sealed by `attester`.
pub(crate) fn sealed(attester: &Attester, actor: Actor, command: Command, at_ms: u64) -> Entry {
    let evidence = attester.seal(
        &Attested::Command {
            actor: &actor,
            command: &command,
        },
        at_ms,
    );
    Entry {
        actor,
        timestamp_ms: at_ms,
        command,
        evidence,
        blinding: Blinding([7; 16]),
    }
}

/// The clock of these tests: within the certificates' validity.
pub(crate) fn now() -> u64 {
    crate::api::service::write::now_ms()
}

/// A seal whose signature was checked ahead of its apply (as a follower
/// does on append) passes there on that check; what the check remembers
/// never lets a forged or altered seal pass.
#[test]
fn a_seal_checked_ahead_passes_and_a_forged_one_is_still_refused() {
    let c = Consortium::new();
    let witness = Arc::new(c.witness());
    let t = now();
    let own = sealed(
        &c.attester(1),
        app("org1"),
        transfer("t1", "org1.ops", "org2.ops", 5),
        t,
    );
    let mut forged = own.clone();
    let Evidence::Node(seal) = &mut forged.evidence else {
        unreachable!()
    };
    seal.signature[10] ^= 1;
    let mut altered = own.clone();
    altered.command = transfer("t1", "org1.ops", "org2.ops", 500);
    let checked = || witness.checked.made.lock().unwrap().len();
    witness.check_ahead(
        [&own, &forged, &altered]
            .map(|e| Arc::new(e.clone()))
            .to_vec(),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while checked() == 0 {
        assert!(std::time::Instant::now() < deadline, "checked ahead");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    for refused in [&forged, &altered] {
        assert_eq!(
            witness.verdicts_ungoverned(refused, t),
            vec![Err(Rejection::OriginInvalid)]
        );
    }
    assert_eq!(checked(), 1, "only the valid seal was remembered");
    assert_eq!(witness.verdicts_ungoverned(&own, t), vec![Ok(())]);
    assert_eq!(checked(), 0, "apply took it");
}

#[test]
fn a_node_seals_its_own_organizations_callers_and_nothing_else() {
    let c = Consortium::new();
    let witness = c.witness();
    let node1 = c.attester(1);
    let t = now();
    let pay = || transfer("t1", "org1.ops", "org2.ops", 5);

    let own = sealed(&node1, app("org1"), pay(), t);
    assert_eq!(witness.verdicts_ungoverned(&own, t), vec![Ok(())]);

    // Node 1 (org1) vouching for org2's app.
    let foreign = sealed(
        &node1,
        app("org2"),
        transfer("t2", "org2.ops", "org1.ops", 5),
        t,
    );
    assert_eq!(
        witness.verdicts_ungoverned(&foreign, t),
        vec![Err(Rejection::OriginForeign)]
    );

    // What was sealed, altered afterwards: the command, the caller, or the
    // node the seal claims.
    let mut altered = own.clone();
    altered.command = transfer("t1", "org1.ops", "org2.ops", 500);
    assert_eq!(
        witness.verdicts_ungoverned(&altered, t),
        vec![Err(Rejection::OriginInvalid)]
    );
    let mut admin = own.clone();
    admin.actor.role = crate::ledger::Role::Admin;
    assert_eq!(
        witness.verdicts_ungoverned(&admin, t),
        vec![Err(Rejection::OriginInvalid)]
    );
    let mut renamed = own.clone();
    let Evidence::Node(seal) = &mut renamed.evidence else {
        unreachable!()
    };
    seal.node = 2;
    assert_eq!(
        witness.verdicts_ungoverned(&renamed, t),
        vec![Err(Rejection::OriginInvalid)]
    );
    // Node 1's signature for org2's caller, under node 2's certificate.
    let mut borrowed = foreign.clone();
    let Evidence::Node(seal) = &mut borrowed.evidence else {
        unreachable!()
    };
    let Evidence::Node(node2_seal) = c.attester(2).seal(&Attested::Bundle(&[]), t) else {
        unreachable!()
    };
    seal.cert = node2_seal.cert;
    seal.node = 2;
    assert_eq!(
        witness.verdicts_ungoverned(&borrowed, t),
        vec![Err(Rejection::OriginInvalid)]
    );

    // No evidence: refused, except for the leader's tick.
    let mut bare = own.clone();
    bare.evidence = Evidence::Leader;
    assert_eq!(
        witness.verdicts_ungoverned(&bare, t),
        vec![Err(Rejection::OriginMissing)]
    );
    bare.command = Command::Tick;
    assert_eq!(witness.verdicts_ungoverned(&bare, t), vec![Ok(())]);
}

#[test]
fn a_seal_is_valid_only_near_the_ledger_clock_and_within_its_certificate() {
    let c = Consortium::new();
    let witness = c.witness();
    let t = now();
    let own = sealed(
        &c.attester(1),
        app("org1"),
        transfer("t1", "org1.ops", "org2.ops", 5),
        t,
    );
    assert_eq!(
        witness.verdicts_ungoverned(&own, t + SEAL_AGE_MAX_MS),
        vec![Ok(())]
    );
    assert_eq!(
        witness.verdicts_ungoverned(&own, t + SEAL_AGE_MAX_MS + 1),
        vec![Err(Rejection::OriginStale)]
    );
    // Signed on a clock ahead of the leader's.
    let pay = || transfer("t1", "org1.ops", "org2.ops", 5);
    let ahead = sealed(&c.attester(1), app("org1"), pay(), t + SEAL_AHEAD_MAX_MS);
    assert_eq!(witness.verdicts_ungoverned(&ahead, t), vec![Ok(())]);
    let too_far = sealed(
        &c.attester(1),
        app("org1"),
        pay(),
        t + SEAL_AHEAD_MAX_MS + 1,
    );
    assert_eq!(
        witness.verdicts_ungoverned(&too_far, t),
        vec![Err(Rejection::OriginStale)]
    );
    // Signed and applied two centuries on: the certificate (now known to
    // the witness) has expired by then; a fresh witness agrees.
    let later = t + 200 * 365 * 24 * 3600 * 1000;
    let late = sealed(
        &c.attester(1),
        app("org1"),
        transfer("t1", "org1.ops", "org2.ops", 5),
        later,
    );
    for w in [&witness, &c.witness()] {
        assert_eq!(
            w.verdicts_ungoverned(&late, later),
            vec![Err(Rejection::OriginInvalid)]
        );
    }
}

#[test]
fn a_bundle_is_refused_whole_if_any_caller_is_of_another_organization() {
    let c = Consortium::new();
    let witness = c.witness();
    let node1 = c.attester(1);
    let t = now();
    let item = |org: &str, id: &str| crate::ledger::Grouped {
        actor: app(org),
        transfer: match transfer(id, &format!("{org}.ops"), "org3.ops", 1) {
            Command::Transfers { mut transfers, .. } => transfers.remove(0),
            _ => unreachable!(),
        },
    };
    let bundle = |items: Vec<crate::ledger::Grouped>| crate::ledger::Bundle {
        evidence: node1.seal(&Attested::Bundle(&items), t),
        items,
    };
    let entry = Entry {
        actor: Actor {
            org: OrgName::parse("org1").unwrap(),
            role: crate::ledger::Role::Node,
        },
        timestamp_ms: t,
        command: Command::Group(vec![
            bundle(vec![item("org1", "a"), item("org1", "b")]),
            bundle(vec![item("org1", "c"), item("org2", "d")]),
        ]),
        evidence: Evidence::Leader,
        blinding: Blinding([7; 16]),
    };
    assert_eq!(
        witness.verdicts_ungoverned(&entry, t),
        vec![Ok(()), Err(Rejection::OriginForeign)]
    );
}

#[test]
fn only_a_node_certificate_seals() {
    let c = Consortium::new();
    let app_key = &c.layout.org("org1").identities["app"];
    let tls = TlsFiles {
        cert: app_key.cert.clone(),
        key: app_key.key.clone(),
    };
    let as_app = Attester::new(1, &tls, c.genesis.hash_bytes()).expect("an app's key signs");
    let t = now();
    let entry = sealed(
        &as_app,
        app("org1"),
        transfer("t1", "org1.ops", "org2.ops", 5),
        t,
    );
    assert_eq!(
        c.witness().verdicts_ungoverned(&entry, t),
        vec![Err(Rejection::OriginInvalid)]
    );
}

/// A caller's own signature, carried by any node: valid for exactly the
/// request it signed, under its own certificate.
#[test]
fn a_client_seal_proves_exactly_the_request_its_caller_signed() {
    use crate::identity::request::KeySigner;
    let c = Consortium::new();
    let witness = c.witness();
    let files = |org: &str| {
        let id = &c.layout.org(org).identities["app"];
        TlsFiles {
            cert: id.cert.clone(),
            key: id.key.clone(),
        }
    };
    let cert = |org: &str| load_identity(&files(org)).unwrap().0[0].to_vec();
    let t = now();
    let body = br#"{"id":"c1","debit_account":"org2.ops","credit_account":"org1.ops","amount":5}"#;
    let seal = |key_of: &str, body: &[u8]| {
        let signer = KeySigner::load(&files(key_of)).unwrap();
        let genesis = hex::encode(c.genesis.hash_bytes());
        let s = signer.sign_request(&genesis, "POST", "/v1/transfers", t, body);
        ClientSeal {
            cert: cert("org2"),
            signed_at_ms: s.signed_at_ms,
            signature: s.signature,
            method: "POST".into(),
            path: "/v1/transfers".into(),
            body: body.to_vec(),
        }
    };
    let entry = |seal: ClientSeal, amount: u64| Entry {
        actor: app("org2"),
        timestamp_ms: t,
        command: transfer("c1", "org2.ops", "org1.ops", amount),
        evidence: Evidence::Client(seal),
        blinding: Blinding([7; 16]),
    };
    assert_eq!(
        witness.verdicts_ungoverned(&entry(seal("org2", body), 5), t),
        vec![Ok(())]
    );

    // One byte of the body changed after signing.
    let mut altered = seal("org2", body);
    altered.body[body.len() - 2] = b'6';
    assert_eq!(
        witness.verdicts_ungoverned(&entry(altered, 6), t),
        vec![Err(Rejection::OriginInvalid)]
    );
    // Signed by another key than the certificate's.
    assert_eq!(
        witness.verdicts_ungoverned(&entry(seal("org1", body), 5), t),
        vec![Err(Rejection::OriginInvalid)]
    );
    // A command other than the one the request decodes to.
    assert_eq!(
        witness.verdicts_ungoverned(&entry(seal("org2", body), 6), t),
        vec![Err(Rejection::OriginInvalid)]
    );
    // The caller named as another role of its organization.
    let mut as_admin = entry(seal("org2", body), 5);
    as_admin.actor.role = crate::ledger::Role::Admin;
    assert_eq!(
        witness.verdicts_ungoverned(&as_admin, t),
        vec![Err(Rejection::OriginInvalid)]
    );
    // In a group, as a bundle of one.
    let group = Entry {
        actor: app("org1"),
        timestamp_ms: t,
        command: Command::Group(vec![crate::ledger::Bundle {
            evidence: Evidence::Client(seal("org2", body)),
            items: vec![crate::ledger::Grouped {
                actor: app("org2"),
                transfer: match transfer("c1", "org2.ops", "org1.ops", 5) {
                    Command::Transfers { mut transfers, .. } => transfers.remove(0),
                    _ => unreachable!(),
                },
            }],
        }]),
        evidence: Evidence::Leader,
        blinding: Blinding([7; 16]),
    };
    assert_eq!(witness.verdicts_ungoverned(&group, t), vec![Ok(())]);
}

/// Evidence past the sizes every replica accepts is refused, the same way
/// everywhere, before any certificate is parsed.
#[test]
fn oversized_evidence_is_refused() {
    let c = Consortium::new();
    let t = now();
    let mut entry = sealed(
        &c.attester(1),
        app("org1"),
        transfer("t1", "org1.ops", "org2.ops", 5),
        t,
    );
    let Evidence::Node(seal) = &mut entry.evidence else {
        unreachable!()
    };
    seal.cert.resize(SEAL_CERT_BYTES_MAX + 1, 0);
    assert!(!fits(&entry.evidence));
    assert_eq!(
        c.witness().verdicts_ungoverned(&entry, t),
        vec![Err(Rejection::OriginInvalid)]
    );
    let Evidence::Node(seal) = &mut entry.evidence else {
        unreachable!()
    };
    seal.cert.truncate(100);
    seal.signature.resize(SEAL_SIGNATURE_BYTES_MAX + 1, 0);
    assert!(!fits(&entry.evidence));
}

/// The governance state after the other organizations voted `org` out.
fn removing(orgs: BTreeSet<OrgName>, org: &str) -> Gov {
    use crate::ledger::{Action, Outcome};
    let mut ledger = crate::ledger::Ledger::new(orgs.clone());
    let mut index = 0;
    let mut apply = |ledger: &mut crate::ledger::Ledger, by: &OrgName, command| {
        index += 1;
        let entry = Entry {
            actor: Actor {
                org: by.clone(),
                role: Role::Admin,
            },
            timestamp_ms: now(),
            command,
            evidence: Evidence::Client(ClientSeal {
                cert: vec![1],
                signed_at_ms: now(),
                signature: vec![2],
                method: "POST".into(),
                path: "/v1/gov".into(),
                body: Vec::new(),
            }),
            blinding: Blinding([3; 16]),
        };
        ledger.apply(&entry, index).0
    };
    let gone = OrgName::parse(org).unwrap();
    let voters: Vec<OrgName> = orgs.into_iter().filter(|o| *o != gone).collect();
    let remove = Command::Propose(Action::RemoveOrg { name: gone });
    let Outcome::Proposal(Ok(p)) = apply(&mut ledger, &voters[0], remove) else {
        panic!("proposed")
    };
    for voter in &voters {
        let ballot = Command::Ballot {
            proposal: p.id,
            approve: true,
            digest: p.digest.clone(),
        };
        assert!(matches!(
            apply(&mut ledger, voter, ballot),
            Outcome::Proposal(Ok(_))
        ));
    }
    ledger.gov().clone()
}

/// The governance state after org `org`'s admin revoked the certificate
/// `der` (its own organization's).
fn revoking(orgs: BTreeSet<OrgName>, org: &str, der: &[u8]) -> Gov {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der).expect("a certificate");
    let serial = Serial::from_be_bytes(cert.raw_serial()).expect("a serial");
    let org = OrgName::parse(org).unwrap();
    let mut ledger = crate::ledger::Ledger::new(orgs);
    let entry = Entry {
        actor: Actor {
            org: org.clone(),
            role: Role::Admin,
        },
        timestamp_ms: now(),
        command: Command::Revoke(crate::ledger::CertRef { org, serial }),
        evidence: Evidence::Client(ClientSeal {
            cert: vec![1],
            signed_at_ms: now(),
            signature: vec![2],
            method: "POST".into(),
            path: "/v1/gov/revocations".into(),
            body: Vec::new(),
        }),
        blinding: Blinding([3; 16]),
    };
    let (outcome, _) = ledger.apply(&entry, 1);
    assert!(
        matches!(outcome, crate::ledger::Outcome::Revoked(Ok(_))),
        "{outcome:?}"
    );
    ledger.gov().clone()
}

#[test]
fn a_revoked_certificate_attests_nothing() {
    let c = Consortium::new();
    let witness = c.witness();
    let t = now();
    let pay = || transfer("org1.t1", "org1.ops", "org2.ops", 5);
    let by_node1 = sealed(&c.attester(1), app("org1"), pay(), t);
    let by_node2 = sealed(&c.attester(2), app("org2"), pay(), t);
    let node1_cert = load_identity(&c.tls(1)).unwrap().0[0].to_vec();
    let gov = revoking(c.orgs(), "org1", &node1_cert);
    assert_eq!(
        witness.verdicts(&by_node1, t, &gov),
        vec![Err(Rejection::CertificateRevoked)]
    );
    // Before the revocation, and for another node, the same seals hold.
    assert_eq!(witness.verdicts_ungoverned(&by_node1, t), vec![Ok(())]);
    assert_eq!(witness.verdicts(&by_node2, t, &gov), vec![Ok(())]);
    // Org1's app revoked at height 1: what node 1 sealed for org1 before
    // it had applied that is refused; once it had, its seals hold.
    let app_cert = load_identity(&c.role_tls("org1", "app")).unwrap().0[0].to_vec();
    let app_gone = revoking(c.orgs(), "org1", &app_cert);
    let mut node1 = c.attester(1);
    let lagging = sealed(&node1, app("org1"), pay(), t);
    assert_eq!(
        witness.verdicts(&lagging, t, &app_gone),
        vec![Err(Rejection::CertificateRevoked)]
    );
    node1.follow(Arc::new(std::sync::atomic::AtomicU64::new(1)));
    let caught_up = sealed(&node1, app("org1"), pay(), t);
    assert_eq!(witness.verdicts(&caught_up, t, &app_gone), vec![Ok(())]);
    assert_eq!(witness.verdicts(&by_node2, t, &app_gone), vec![Ok(())]);
    // Once org1 has left, nothing its certificates attest holds.
    let gone = removing(c.orgs(), "org1");
    assert_eq!(
        witness.verdicts(&by_node1, t, &gone),
        vec![Err(Rejection::OrgRemoved)]
    );
    assert_eq!(witness.verdicts(&by_node2, t, &gone), vec![Ok(())]);
}

/// A ballot as an admin signs it, and the same entry with one byte
/// flipped anywhere in its evidence: every replica refuses the latter, and
/// the ledger counts no ballot for it.
#[test]
fn a_ballot_with_one_flipped_byte_is_refused() {
    use crate::identity::request::KeySigner;
    use crate::ledger::{Ledger, Outcome};
    let c = Consortium::new();
    let witness = c.witness();
    let t = now();
    let admin2 = c.role_tls("org2", "admin");
    let digest = "ab".repeat(32);
    let body = format!(r#"{{"vote":"approve","digest":"{digest}"}}"#).into_bytes();
    let path = "/v1/gov/proposals/1/ballots";
    let genesis = hex::encode(c.genesis.hash_bytes());
    let signed = KeySigner::load(&admin2)
        .unwrap()
        .sign_request(&genesis, "POST", path, t, &body);
    let seal = ClientSeal {
        cert: load_identity(&admin2).unwrap().0[0].to_vec(),
        signed_at_ms: t,
        signature: signed.signature,
        method: "POST".into(),
        path: path.into(),
        body,
    };
    let entry = |seal: ClientSeal| Entry {
        actor: Actor {
            org: OrgName::parse("org2").unwrap(),
            role: Role::Admin,
        },
        timestamp_ms: t,
        command: Command::Ballot {
            proposal: 1,
            approve: true,
            digest: digest.clone(),
        },
        evidence: Evidence::Client(seal),
        blinding: Blinding([1; 16]),
    };
    assert_eq!(
        witness.verdicts_ungoverned(&entry(seal.clone()), t),
        vec![Ok(())]
    );
    let flips: Vec<ClientSeal> = (0..seal.body.len())
        .map(|i| {
            let mut s = seal.clone();
            s.body[i] ^= 1;
            s
        })
        .chain((0..seal.signature.len()).map(|i| {
            let mut s = seal.clone();
            s.signature[i] ^= 1;
            s
        }))
        .chain([{
            let mut s = seal.clone();
            s.path = "/v1/gov/proposals/2/ballots".into();
            s
        }])
        .collect();
    for flipped in flips {
        let e = entry(flipped);
        assert_eq!(
            witness.verdicts_ungoverned(&e, t),
            vec![Err(Rejection::OriginInvalid)],
            "{:?}",
            e.evidence
        );
        // Refused, it is a ballot of nobody's.
        let mut ledger = Ledger::new(c.orgs());
        let (outcome, changes) = ledger.apply_logged(&e, 1, 1, &[Err(Rejection::OriginInvalid)]);
        assert_eq!(outcome, Outcome::Proposal(Err(Rejection::OriginInvalid)));
        assert!(!changes.gov);
    }
}

/// Genesis's governance state with each organization's CA certificates
/// as `cas` lists them (given genesis's CA of each organization by name).
fn with_cas(c: &Consortium, cas: impl Fn(&str, &dyn Fn(&str) -> String) -> Vec<String>) -> Gov {
    let ca_of = |name: &str| {
        let org = c.genesis.orgs.iter().find(|o| o.name.as_str() == name);
        org.expect("a genesis organization").ca_cert.clone()
    };
    let founders = c.genesis.orgs.iter().map(|o| {
        let nodes = c.genesis.nodes.iter().filter(|n| n.org == o.name);
        let member = Gov::founder(cas(o.name.as_str(), &ca_of), nodes.map(|n| n.id).collect());
        (o.name.clone(), member)
    });
    Gov::founding(founders, c.genesis.policy()).with_nodes(c.genesis.node_records())
}

/// A certificate accepted once is checked again after governance changed
/// its organization's CAs: a replica that saw it before the change refuses
/// it as one that never saw it does.
#[test]
fn a_certificate_checked_before_its_ca_left_is_refused_after() {
    let c = Consortium::new();
    let witness = c.witness();
    let t = now();
    let by_node2 = sealed(
        &c.attester(2),
        app("org2"),
        transfer("org2.t1", "org2.ops", "org1.ops", 5),
        t,
    );
    let genesis_cas = with_cas(&c, |org, ca_of| vec![ca_of(org)]);
    assert_eq!(witness.verdicts(&by_node2, t, &genesis_cas), vec![Ok(())]);
    // Org2's CA replaced by another: node 2's certificate leads nowhere.
    let rotated = with_cas(&c, |org, ca_of| match org {
        "org2" => vec![ca_of("org3")],
        _ => vec![ca_of(org)],
    });
    c.trust.govern(&rotated);
    let refused = vec![Err(Rejection::OriginInvalid)];
    assert_eq!(witness.verdicts(&by_node2, t, &rotated), refused);
    assert_eq!(c.witness().verdicts(&by_node2, t, &rotated), refused);
    // And back: accepted again.
    c.trust.govern(&genesis_cas);
    assert_eq!(witness.verdicts(&by_node2, t, &genesis_cas), vec![Ok(())]);
}

/// An organization that lists a copy of another's CA among its own gains
/// nothing and locks nobody out: a certificate is checked only against
/// the CAs of the organization its O names.
#[test]
fn a_copy_of_another_organizations_ca_makes_no_certificate_ambiguous() {
    let c = Consortium::new();
    let copied = with_cas(&c, |org, ca_of| match org {
        "org1" => vec![ca_of("org1"), ca_of("org2")],
        _ => vec![ca_of(org)],
    });
    c.trust.govern(&copied);
    let chain = |org: &str| load_identity(&c.role_tls(org, "app")).unwrap().0;
    let p = c.trust.identify(&chain("org2")).expect("org2's app");
    assert_eq!(p.org().as_str(), "org2");
    let p = c.trust.identify(&chain("org1")).expect("org1's app");
    assert_eq!(p.org().as_str(), "org1");
    let t = now();
    let by_node2 = sealed(
        &c.attester(2),
        app("org2"),
        transfer("org2.t1", "org2.ops", "org1.ops", 5),
        t,
    );
    assert_eq!(c.witness().verdicts(&by_node2, t, &copied), vec![Ok(())]);
}

/// A node added by vote authenticates its peers by its join bundle while
/// its applied state is behind the vote; what apply checks stays the
/// applied state's.
#[test]
fn a_joining_nodes_bundle_authenticates_peers_until_its_state_catches_up() {
    use crate::ledger::gov::NodeRecord;
    let c = Consortium::new();
    let org1 = OrgName::parse("org1").unwrap();
    let mut nodes: std::collections::BTreeMap<NodeId, NodeRecord> =
        c.genesis.node_records().into_iter().collect();
    let added = NodeRecord {
        org: org1.clone(),
        api_addr: "127.0.0.1:1".into(),
        raft_addr: "127.0.0.1:2".into(),
        key_sha256: None,
        removed: false,
        since_height: 9,
    };
    nodes.insert(4, added);
    let bundle = crate::config::JoinBundle {
        genesis_hash: c.genesis.hash.clone(),
        proposal: 1,
        node: 4,
        orgs: (c.genesis.orgs.iter())
            .map(|o| (o.name.clone(), vec![o.ca_cert.clone()]))
            .collect(),
        nodes,
    };
    c.trust.join(&bundle).unwrap();
    // Opening empty storage governs by genesis: the bundle still holds.
    c.trust.govern(&with_cas(&c, |org, ca_of| vec![ca_of(org)]));
    assert_eq!(c.trust.peer_nodes().org_of(4), Some(&org1));
    assert_eq!(c.trust.nodes().org_of(4), None, "apply's registry");
    // Applied up to the vote (proposal 1 closed): the applied state rules.
    let voted = removing(c.orgs(), "org3");
    assert!(voted.proposal(1).is_some());
    c.trust.govern(&voted);
    assert_eq!(c.trust.peer_nodes().org_of(4), None);
}

/// A CA certificate that is no trust anchor is left out of the member
/// view, the same way on a running replica and a restarted one, instead
/// of the whole view staying as it was.
#[test]
fn a_ca_that_is_no_trust_anchor_is_left_out_the_same_way_everywhere() {
    let c = Consortium::new();
    let garbage = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_owned();
    assert!(!crate::identity::is_one_ca_cert(garbage.as_bytes()));
    let gov = with_cas(&c, |org, ca_of| match org {
        "org2" => vec![garbage.clone(), ca_of("org2")],
        "org3" => vec![garbage.clone()],
        _ => vec![ca_of(org)],
    });
    c.trust.govern(&gov);
    let restarted = Trust::from_genesis(&c.genesis).unwrap();
    restarted.govern(&gov);
    let chain = |org: &str| load_identity(&c.role_tls(org, "app")).unwrap().0;
    for trust in [&*c.trust, &restarted] {
        assert!(trust.identify(&chain("org1")).is_ok());
        assert!(trust.identify(&chain("org2")).is_ok());
        assert!(trust.identify(&chain("org3")).is_err(), "no usable CA");
    }
    let mut genesis = c.genesis.clone();
    genesis.orgs[2].ca_cert = garbage;
    let refused = Trust::from_genesis(&genesis).err().unwrap().to_string();
    assert!(refused.contains("not a usable CA certificate"), "{refused}");
}
