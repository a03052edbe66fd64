//! Governance on the pure ledger: thresholds, proposals and ballots,
//! execution in the entry that reaches the threshold, failure, rejection,
//! expiry, freezes, corrections and revocations.

use std::collections::BTreeSet;

use super::super::tests::{acct, actor, new_account, new_transfer, org};
use super::super::*;
use super::OrgStatus;
use super::*;

const T0: u64 = 1_700_000_000_000;

/// The rejections these tests trigger (the ledger's test of every code
/// counts them).
pub(in crate::ledger) const COVERED: [Rejection; 24] = [
    Rejection::DebitAccountFrozen,   // a_freeze_executes_in_...
    Rejection::CreditAccountFrozen,  // a_freeze_executes_in_...
    Rejection::ProposalClosed,       // a_freeze_executes_in_...
    Rejection::DigestMismatch,       // forged_and_repeated_ballots_...
    Rejection::AdminRequired,        // forged_and_repeated_ballots_...
    Rejection::SignatureRequired,    // forged_and_repeated_ballots_...
    Rejection::ProposalNotFound,     // forged_and_repeated_ballots_...
    Rejection::AlreadyVoted,         // forged_and_repeated_ballots_...
    Rejection::VoteRequired,         // an_admin_revokes_its_own_...
    Rejection::UnknownOrg,           // an_admin_revokes_its_own_...
    Rejection::InvalidAction,        // a_policy_change_applies_...
    Rejection::TooManyOpenProposals, // an_organization_has_a_bounded_...
    Rejection::AccountAlreadyFrozen, // an_action_whose_precondition_...
    Rejection::AccountNotFrozen,     // an_action_whose_precondition_...
    Rejection::OrgNotActive,         // an_organization_added_by_vote_...
    Rejection::OrgExists,            // an_organization_added_by_vote_...
    Rejection::OrgRunsNodes,         // an_organization_added_by_vote_...
    Rejection::UnknownCa,            // a_ca_is_rotated_by_overlap
    Rejection::NodeExists,           // a_node_is_added_once_under_a_new_id
    Rejection::NodeNotFound,         // a_node_is_added_once_under_a_new_id
    Rejection::TooFewNodes,          // a_node_is_added_once_under_a_new_id
    Rejection::AccountFrozen,        // an_action_whose_precondition_...
    Rejection::TooManyRevocations,   // an_organization_revokes_a_bounded_...
    Rejection::BallotTooLarge,       // a_padded_ballot_is_refused
];

fn seal() -> ClientSeal {
    ClientSeal {
        cert: vec![1, 2, 3],
        signed_at_ms: T0,
        signature: vec![4, 5],
        method: "POST".into(),
        path: "/v1/gov".into(),
        body: b"{}".to_vec(),
    }
}

/// A ledger of `n` organizations (`org1`..), each with a USD account
/// `orgN.a` holding 100 (issued from `org1.issue`).
struct Gv {
    l: Ledger,
    index: u64,
    ms: u64,
}

impl Gv {
    fn new(n: usize) -> Self {
        let orgs: BTreeSet<OrgName> = (1..=n).map(|i| org(&format!("org{i}"))).collect();
        let mut g = Self {
            l: Ledger::new(orgs),
            index: 0,
            ms: 0,
        };
        let admin1 = actor("org1", Role::Admin);
        let issue = Command::CreateAccount(new_account("org1.issue", "USD", true));
        assert!(matches!(g.leader(&admin1, issue), Outcome::Account(Ok(_))));
        for i in 1..=n {
            let who = actor(&format!("org{i}"), Role::App);
            let id = format!("org{i}.a");
            let create = Command::CreateAccount(new_account(&id, "USD", false));
            assert!(matches!(g.leader(&who, create), Outcome::Account(Ok(_))));
            let fund = Command::single(new_transfer(
                &format!("org1.fund{i}"),
                "org1.issue",
                &id,
                100,
            ));
            assert!(matches!(g.leader(&admin1, fund), Outcome::Transfers(r) if r[0].is_ok()));
        }
        g
    }

    fn apply(&mut self, who: &Actor, command: Command, evidence: Evidence) -> (Outcome, Changes) {
        self.index += 1;
        self.ms += 1;
        let entry = Entry {
            actor: who.clone(),
            timestamp_ms: T0 + self.ms,
            command,
            evidence,
            blinding: Blinding([9; 16]),
        };
        self.l.apply(&entry, self.index)
    }

    /// A command as a node-attested write (no client signature).
    fn leader(&mut self, who: &Actor, command: Command) -> Outcome {
        self.apply(who, command, Evidence::Leader).0
    }

    /// A command signed by its caller.
    /// A command signed by its caller, at the time of its entry.
    fn signed(&mut self, who: &Actor, command: Command) -> Outcome {
        let seal = ClientSeal {
            signed_at_ms: T0 + self.ms + 1,
            ..seal()
        };
        self.apply(who, command, Evidence::Client(seal)).0
    }

    fn propose(&mut self, by: &str, action: Action) -> Result<Proposal, Rejection> {
        match self.signed(&admin(by), Command::Propose(action)) {
            Outcome::Proposal(r) => r,
            other => panic!("{other:?}"),
        }
    }

    fn vote(&mut self, by: &str, p: &Proposal, approve: bool) -> Result<Proposal, Rejection> {
        let ballot = Command::Ballot {
            proposal: p.id,
            approve,
            digest: p.digest.clone(),
        };
        match self.signed(&admin(by), ballot) {
            Outcome::Proposal(r) => r,
            other => panic!("{other:?}"),
        }
    }

    fn balance(&self, id: &str) -> i128 {
        self.l.account(&acct(id)).unwrap().balance()
    }

    fn transfer(&mut self, by: &str, id: &str, from: &str, to: &str) -> Result<(), Rejection> {
        let who = actor(by, Role::App);
        match self.leader(&who, Command::single(new_transfer(id, from, to, 1))) {
            Outcome::Transfers(mut r) => r.pop().unwrap().map(|_| ()),
            other => panic!("{other:?}"),
        }
    }
}

fn admin(o: &str) -> Actor {
    actor(o, Role::Admin)
}

fn freeze(a: &str) -> Action {
    Action::Freeze { account: acct(a) }
}

#[test]
fn thresholds_are_integer_arithmetic_above_one_half() {
    let two_thirds = Threshold::parse("2/3").unwrap();
    assert_eq!(two_thirds.required(15), 10);
    assert_eq!(Threshold::Majority.required(15), 8);
    assert_eq!(two_thirds.required(3), 2);
    assert_eq!(two_thirds.required(4), 3);
    assert_eq!(Threshold::Majority.required(4), 3);
    assert_eq!(Threshold::Majority.required(1), 1);
    assert_eq!(Threshold::parse("1/1").unwrap().required(15), 15);
    for bad in [
        "1/2", "2/4", "0/1", "3/2", "2/0", "1", "2/3 ", "-2/3", "2/10000", "half",
    ] {
        assert!(Threshold::parse(bad).is_err(), "{bad}");
    }
    // From the log, only the canonical spelling.
    assert!(Threshold::try_from("02/3".to_owned()).is_err());
    assert_eq!(Threshold::try_from("2/3".to_owned()), Ok(two_thirds));
}

#[test]
fn serials_are_hex_numbers_in_one_spelling() {
    let s = Serial::parse("00:1F:aB").unwrap();
    assert_eq!(s.as_str(), "1fab");
    assert_eq!(Serial::from_be_bytes(&[0, 0x1f, 0xab]), Some(s));
    assert_eq!(Serial::parse("0").unwrap().as_str(), "0");
    for bad in ["", "xyz", "1 2", &"f".repeat(41)] {
        assert!(Serial::parse(bad).is_err(), "{bad:?}");
    }
    assert!(Serial::try_from("001f".to_owned()).is_err());
}

#[test]
fn a_freeze_executes_in_the_entry_of_the_second_of_three_approvals() {
    let mut g = Gv::new(3);
    let p = g.propose("org1", freeze("org2.a")).unwrap();
    assert_eq!(p.state, ProposalState::Open);
    assert_eq!(p.digest, freeze("org2.a").digest(p.id));
    // The proposer's approval is not implied.
    assert_eq!(g.l.gov().tally(&p), (0, 0));
    let after_one = g.vote("org1", &p, true).unwrap();
    assert_eq!(after_one.state, ProposalState::Open);
    assert_eq!(g.transfer("org2", "org2.t1", "org2.a", "org1.a"), Ok(()));
    let height = g.l.height() + 1;
    let after_two = g.vote("org3", &p, true).unwrap();
    assert_eq!(after_two.state, ProposalState::Executed);
    assert_eq!(after_two.closed_height, Some(height));
    assert!(g.l.gov().is_frozen(&acct("org2.a")));
    assert_eq!(
        g.transfer("org2", "org2.t2", "org2.a", "org1.a"),
        Err(Rejection::DebitAccountFrozen)
    );
    assert_eq!(
        g.transfer("org1", "org1.t3", "org1.a", "org2.a"),
        Err(Rejection::CreditAccountFrozen)
    );
    // A third ballot comes too late.
    assert_eq!(g.vote("org2", &p, true), Err(Rejection::ProposalClosed));
    // Unfreezing is a vote too.
    let u = g
        .propose(
            "org2",
            Action::Unfreeze {
                account: acct("org2.a"),
            },
        )
        .unwrap();
    g.vote("org2", &u, true).unwrap();
    assert_eq!(
        g.vote("org1", &u, true).unwrap().state,
        ProposalState::Executed
    );
    assert_eq!(g.transfer("org2", "org2.t4", "org2.a", "org1.a"), Ok(()));
}

#[test]
fn forged_and_repeated_ballots_change_nothing() {
    let mut g = Gv::new(3);
    let p = g.propose("org1", freeze("org2.a")).unwrap();
    let before = g.l.gov().clone();
    // Another digest.
    let wrong = Command::Ballot {
        proposal: p.id,
        approve: true,
        digest: freeze("org3.a").digest(p.id),
    };
    assert!(matches!(
        g.signed(&admin("org2"), wrong),
        Outcome::Proposal(Err(Rejection::DigestMismatch))
    ));
    // An app's ballot, and an admin's without its own signature.
    let ballot = Command::Ballot {
        proposal: p.id,
        approve: true,
        digest: p.digest.clone(),
    };
    assert!(matches!(
        g.signed(&actor("org2", Role::App), ballot.clone()),
        Outcome::Proposal(Err(Rejection::AdminRequired))
    ));
    assert!(matches!(
        g.leader(&admin("org2"), ballot),
        Outcome::Proposal(Err(Rejection::SignatureRequired))
    ));
    // An unknown proposal.
    let unknown = Command::Ballot {
        proposal: 99,
        approve: true,
        digest: p.digest.clone(),
    };
    assert!(matches!(
        g.signed(&admin("org2"), unknown),
        Outcome::Proposal(Err(Rejection::ProposalNotFound))
    ));
    assert_eq!(g.l.gov(), &before);
    // One ballot per organization, never changed; the same one again is
    // answered with the proposal.
    g.vote("org2", &p, false).unwrap();
    let once = g.l.gov().clone();
    assert_eq!(g.vote("org2", &p, true), Err(Rejection::AlreadyVoted));
    let again = g.vote("org2", &p, false).unwrap();
    assert_eq!(g.l.gov().tally(&again), (0, 1));
    assert_eq!(g.l.gov(), &once);
}

#[test]
fn a_proposal_is_rejected_once_it_cannot_pass_and_expires_on_the_ledger_clock() {
    let mut g = Gv::new(3);
    let p = g.propose("org1", freeze("org2.a")).unwrap();
    g.vote("org2", &p, false).unwrap();
    assert_eq!(
        g.vote("org3", &p, false).unwrap().state,
        ProposalState::Rejected
    );
    assert!(!g.l.gov().is_frozen(&acct("org2.a")));

    let q = g.propose("org1", freeze("org3.a")).unwrap();
    g.vote("org1", &q, true).unwrap();
    // Nothing happens until an entry's clock passes the expiry.
    // (`apply` adds 1 ms to each entry.)
    g.ms = q.expires_at_ms - T0 - 2;
    g.leader(&admin("org1"), Command::Tick);
    assert_eq!(g.l.gov().proposal(q.id).unwrap().state, ProposalState::Open);
    g.leader(&admin("org1"), Command::Tick);
    let expired = g.l.gov().proposal(q.id).unwrap();
    assert_eq!(expired.state, ProposalState::Expired);
    assert_eq!(g.vote("org2", &q, true), Err(Rejection::ProposalClosed));
    assert!(!g.l.gov().is_frozen(&acct("org3.a")));
}

#[test]
fn a_correction_moves_money_once_and_fails_without_funds() {
    let mut g = Gv::new(3);
    let correct = |amount| Action::Correction {
        debit_account: acct("org2.a"),
        credit_account: acct("org1.a"),
        amount: Amount::new(amount).unwrap(),
        memo: Some("mistaken transfer".into()),
    };
    // A frozen account can still be corrected.
    let f = g.propose("org1", freeze("org2.a")).unwrap();
    g.vote("org1", &f, true).unwrap();
    g.vote("org3", &f, true).unwrap();
    let totals = g.l.totals();
    let p = g.propose("org1", correct(40)).unwrap();
    g.vote("org1", &p, true).unwrap();
    let done = g.vote("org3", &p, true).unwrap();
    assert_eq!(done.state, ProposalState::Executed);
    assert_eq!((g.balance("org2.a"), g.balance("org1.a")), (60, 140));
    assert_eq!(g.l.totals(), totals, "a correction conserves money");
    let t =
        g.l.transfer(&TransferId::parse("gov.correction-2").unwrap());
    let t = t.expect("kept in a ledger that does not forget");
    assert_eq!(t.posted_by.as_str(), GOV_ORG);
    // Beyond the balance: failed, nothing moved.
    let q = g.propose("org1", correct(61)).unwrap();
    g.vote("org1", &q, true).unwrap();
    let failed = g.vote("org2", &q, true).unwrap();
    assert_eq!(failed.state, ProposalState::Failed);
    assert_eq!(failed.code, Some(Rejection::InsufficientFunds));
    assert_eq!((g.balance("org2.a"), g.balance("org1.a")), (60, 140));
    // From an account to itself: refused as a transfer would be.
    let to_itself = Action::Correction {
        debit_account: acct("org2.a"),
        credit_account: acct("org2.a"),
        amount: Amount::new(1).unwrap(),
        memo: None,
    };
    assert_eq!(
        g.propose("org1", to_itself),
        Err(Rejection::AccountsMustBeDifferent)
    );
    assert!(g
        .l
        .stored_height(&TransferId::parse("gov.correction-3").unwrap())
        .is_none());
}

#[test]
fn an_admin_revokes_its_own_certificates_at_once_and_others_only_by_vote() {
    let mut g = Gv::new(3);
    let cert = |o: &str| CertRef {
        org: org(o),
        serial: Serial::parse("1f").unwrap(),
    };
    assert!(matches!(
        g.signed(&admin("org1"), Command::Revoke(cert("org2"))),
        Outcome::Revoked(Err(Rejection::VoteRequired))
    ));
    assert!(matches!(
        g.signed(&actor("org1", Role::App), Command::Revoke(cert("org1"))),
        Outcome::Revoked(Err(Rejection::AdminRequired))
    ));
    assert!(matches!(
        g.signed(&admin("org1"), Command::Revoke(cert("org1"))),
        Outcome::Revoked(Ok(_))
    ));
    assert!(g
        .l
        .gov()
        .is_revoked(&org("org1"), &Serial::parse("1f").unwrap()));
    assert!(!g
        .l
        .gov()
        .is_revoked(&org("org2"), &Serial::parse("1f").unwrap()));
    let p = g
        .propose(
            "org1",
            Action::Revoke {
                org: org("org2"),
                serial: Serial::parse("1f").unwrap(),
            },
        )
        .unwrap();
    g.vote("org1", &p, true).unwrap();
    g.vote("org3", &p, true).unwrap();
    assert!(g
        .l
        .gov()
        .is_revoked(&org("org2"), &Serial::parse("1f").unwrap()));
    assert_eq!(
        g.propose(
            "org1",
            Action::Revoke {
                org: org("org9"),
                serial: Serial::parse("1").unwrap(),
            }
        ),
        Err(Rejection::UnknownOrg)
    );
}

#[test]
fn a_policy_change_applies_to_the_next_ballot() {
    let mut g = Gv::new(4);
    let two_thirds = Threshold::parse("2/3").unwrap();
    let p = g
        .propose(
            "org1",
            Action::SetPolicy {
                threshold: two_thirds,
                proposal_ttl_ms: PROPOSAL_TTL_MS_DEFAULT,
            },
        )
        .unwrap();
    for o in ["org1", "org2"] {
        g.vote(o, &p, true).unwrap();
    }
    // A majority of 4 is 3.
    assert_eq!(
        g.vote("org3", &p, true).unwrap().state,
        ProposalState::Executed
    );
    assert_eq!(g.l.gov().policy().threshold, two_thirds);
    let q = g.propose("org1", freeze("org2.a")).unwrap();
    g.vote("org1", &q, true).unwrap();
    assert_eq!(g.vote("org2", &q, true).unwrap().state, ProposalState::Open);
    assert_eq!(
        g.vote("org3", &q, true).unwrap().state,
        ProposalState::Executed
    );
    let bad = Action::SetPolicy {
        threshold: Threshold::Majority,
        proposal_ttl_ms: 1,
    };
    assert_eq!(g.propose("org1", bad), Err(Rejection::InvalidAction));
}

#[test]
fn an_action_whose_precondition_fails_at_execution_ends_failed_and_changes_nothing() {
    let mut g = Gv::new(3);
    let p = g.propose("org1", freeze("org2.a")).unwrap();
    let q = g.propose("org2", freeze("org2.a")).unwrap();
    for o in ["org1", "org3"] {
        g.vote(o, &p, true).unwrap();
    }
    g.vote("org1", &q, true).unwrap();
    let before = g.l.gov().frozen.clone();
    let failed = g.vote("org3", &q, true).unwrap();
    assert_eq!(failed.state, ProposalState::Failed);
    assert_eq!(failed.code, Some(Rejection::AccountAlreadyFrozen));
    assert_eq!(g.l.gov().frozen, before);
    // Its owner cannot close a frozen account out of a correction's reach.
    let close = Command::CloseAccount { id: acct("org2.a") };
    assert!(matches!(
        g.leader(&admin("org2"), close),
        Outcome::Account(Err(Rejection::AccountFrozen))
    ));
    assert!(!g.l.account(&acct("org2.a")).unwrap().closed);
    let unfreeze = Action::Unfreeze {
        account: acct("org3.a"),
    };
    let u = g.propose("org1", unfreeze).unwrap();
    g.vote("org1", &u, true).unwrap();
    let failed = g.vote("org2", &u, true).unwrap();
    assert_eq!(failed.code, Some(Rejection::AccountNotFrozen));
}

#[test]
fn an_organization_has_a_bounded_number_of_open_proposals() {
    let mut g = Gv::new(3);
    for _ in 0..OPEN_PROPOSALS_PER_ORG_MAX {
        g.propose("org1", freeze("org2.a")).unwrap();
    }
    assert_eq!(
        g.propose("org1", freeze("org2.a")),
        Err(Rejection::TooManyOpenProposals)
    );
    assert!(g.propose("org2", freeze("org2.a")).is_ok());
}

#[test]
fn governance_blocks_commit_to_the_registry_and_every_ballot() {
    let mut g = Gv::new(3);
    let p = g.propose("org1", freeze("org2.a")).unwrap();
    let (_, c) = g.apply(
        &admin("org1"),
        Command::Ballot {
            proposal: p.id,
            approve: true,
            digest: p.digest.clone(),
        },
        Evidence::Client(seal()),
    );
    assert!(c.gov, "the registry changed");
    assert_eq!(c.leaf_hashes.len(), 1, "the ballot's leaf");
    let (_, c) = g.apply(
        &admin("org2"),
        Command::Ballot {
            proposal: p.id,
            approve: true,
            digest: p.digest.clone(),
        },
        Evidence::Client(seal()),
    );
    assert_eq!(
        c.leaf_hashes.len(),
        2,
        "the ballot's leaf and the outcome's"
    );
    // A refused ballot leaves the registry as it was.
    let (_, c) = g.apply(
        &admin("org3"),
        Command::Ballot {
            proposal: p.id,
            approve: true,
            digest: "0".repeat(64),
        },
        Evidence::Client(seal()),
    );
    assert!(!c.gov);
}

#[test]
fn an_organization_added_by_vote_counts_once_it_joins_and_leaves_by_vote() {
    let mut g = Gv::new(3);
    // Genesis's organizations run nodes here: org3 runs node 3.
    g.l.gov.orgs.get_mut(&org("org3")).unwrap().nodes.insert(3);
    let add = Action::AddOrg {
        name: org("org4"),
        ca_certs: vec!["-----BEGIN CERTIFICATE-----".into()],
    };
    let p = g.propose("org1", add.clone()).unwrap();
    g.vote("org1", &p, true).unwrap();
    assert_eq!(
        g.vote("org2", &p, true).unwrap().state,
        ProposalState::Executed
    );
    assert_eq!(
        g.l.gov().member(&org("org4")).unwrap().status,
        OrgStatus::Pending
    );
    assert_eq!(g.l.gov().members(), 3, "pending: not counted");
    // It transacts at once (its CA is trusted from now on)...
    let app4 = actor("org4", Role::App);
    let create = Command::CreateAccount(new_account("org4.a", "USD", false));
    assert!(matches!(g.leader(&app4, create), Outcome::Account(Ok(_))));
    // ...but votes only once its admin has acknowledged joining.
    let q = g.propose("org1", freeze("org2.a")).unwrap();
    assert_eq!(g.vote("org4", &q, true), Err(Rejection::OrgNotActive));
    assert!(matches!(
        g.signed(&admin("org4"), Command::Join),
        Outcome::Joined(Ok(_))
    ));
    assert_eq!(g.l.gov().members(), 4);
    g.vote("org4", &q, true).unwrap();
    assert_eq!(g.vote("org1", &q, true).unwrap().state, ProposalState::Open);
    assert_eq!(
        g.vote("org2", &q, true).unwrap().state,
        ProposalState::Executed
    );
    // A name is never reused; an organization with nodes is not removed.
    assert_eq!(g.propose("org1", add), Err(Rejection::OrgExists));
    let gov_name = Action::AddOrg {
        name: org(GOV_ORG),
        ca_certs: vec!["x".into()],
    };
    assert_eq!(g.propose("org1", gov_name), Err(Rejection::OrgExists));
    let remove3 = Action::RemoveOrg { name: org("org3") };
    assert_eq!(g.propose("org1", remove3), Err(Rejection::OrgRunsNodes));
    // Org4 leaves: its account is frozen, grants to it are dropped.
    let grant = Command::SetReaders {
        id: acct("org1.a"),
        readers: [org("org4")].into(),
    };
    assert!(matches!(
        g.leader(&admin("org1"), grant),
        Outcome::Account(Ok(_))
    ));
    // Org4's own open proposal fails when it leaves, and its ballots stop
    // counting.
    let mine = g.propose("org4", freeze("org1.a")).unwrap();
    let y = g.propose("org2", freeze("org3.a")).unwrap();
    g.vote("org4", &y, true).unwrap();
    let r = g
        .propose("org1", Action::RemoveOrg { name: org("org4") })
        .unwrap();
    for o in ["org1", "org2"] {
        g.vote(o, &r, true).unwrap();
    }
    assert_eq!(
        g.vote("org3", &r, true).unwrap().state,
        ProposalState::Executed
    );
    assert_eq!(
        g.l.gov().member(&org("org4")).unwrap().status,
        OrgStatus::Removed
    );
    assert!(g.l.gov().is_removed(&org("org4")));
    assert!(g.l.gov().is_frozen(&acct("org4.a")));
    assert!(g.l.account(&acct("org1.a")).unwrap().readers.is_empty());
    assert!(!g.l.orgs().contains(&org("org4")));
    assert_eq!(g.l.gov().members(), 3);
    let mine = g.l.gov().proposal(mine.id).unwrap();
    assert_eq!(mine.state, ProposalState::Failed);
    assert_eq!(mine.code, Some(Rejection::OrgRemoved));
    assert_eq!(g.l.gov().tally(g.l.gov().proposal(y.id).unwrap()), (0, 0));
    assert_eq!(g.vote("org1", &y, true).unwrap().state, ProposalState::Open);
    assert_eq!(
        g.vote("org2", &y, true).unwrap().state,
        ProposalState::Executed
    );
    assert!(g.l.gov().is_frozen(&acct("org3.a")));
    assert!(matches!(
        g.signed(&admin("org4"), Command::Join),
        Outcome::Joined(Err(Rejection::UnknownOrg))
    ));
}

#[test]
fn a_ca_is_rotated_by_overlap() {
    let pem =
        |b64: &str| format!("-----BEGIN CERTIFICATE-----\n{b64}\n-----END CERTIFICATE-----\n");
    let (old, new) = (pem("AAAA"), pem("AQID"));
    let mut g = Gv::new(3);
    g.l.gov.orgs.get_mut(&org("org2")).unwrap().ca_certs = vec![old.clone()];
    let run = |g: &mut Gv, action: Action| {
        let p = g.propose("org1", action)?;
        g.vote("org1", &p, true)?;
        g.vote("org3", &p, true)
    };
    let add = Action::AddCa {
        org: org("org2"),
        ca_cert: new.clone(),
    };
    // A CA would issue identities in org2's name: the others alone
    // cannot add one, org2 must approve too.
    let p = run(&mut g, add.clone()).unwrap();
    assert_eq!(p.state, ProposalState::Open);
    assert_eq!(
        g.vote("org2", &p, true).unwrap().state,
        ProposalState::Executed
    );
    let cas = |g: &Gv| g.l.gov().member(&org("org2")).unwrap().ca_certs.clone();
    assert_eq!(cas(&g), vec![old.clone(), new.clone()]);
    assert_eq!(
        g.propose("org1", add),
        Err(Rejection::InvalidAction),
        "twice"
    );
    // The same CA spelled otherwise is the same CA: it cannot be added
    // again, which would let removing it leave no CA at all.
    let respelled = Action::AddCa {
        org: org("org2"),
        ca_cert: new.replace('\n', "\r\n"),
    };
    assert_eq!(pem_sha256(&new.replace('\n', "\r\n")), pem_sha256(&new));
    assert_eq!(
        g.propose("org1", respelled),
        Err(Rejection::InvalidAction),
        "respelled"
    );
    let remove = |sha: String| Action::RemoveCa {
        org: org("org2"),
        ca_sha256: sha,
    };
    assert_eq!(
        g.propose("org1", remove("0".repeat(64))),
        Err(Rejection::UnknownCa)
    );
    let old_sha = pem_sha256(&old).unwrap();
    assert_eq!(
        run(&mut g, remove(old_sha.clone())).unwrap().state,
        ProposalState::Executed
    );
    assert_eq!(cas(&g), vec![new.clone()]);
    // Never the last one; never of an organization that runs nodes.
    let new_sha = pem_sha256(&new).unwrap();
    assert_eq!(
        g.propose("org1", remove(new_sha)),
        Err(Rejection::InvalidAction)
    );
    g.l.gov.orgs.get_mut(&org("org2")).unwrap().nodes.insert(2);
    g.l.gov
        .orgs
        .get_mut(&org("org2"))
        .unwrap()
        .ca_certs
        .push(old);
    assert_eq!(
        g.propose("org1", remove(old_sha)),
        Err(Rejection::OrgRunsNodes)
    );
}

#[test]
fn a_replayed_signed_proposal_opens_nothing() {
    let mut g = Gv::new(3);
    g.propose("org1", freeze("org2.a")).unwrap();
    let before = g.l.gov().clone();
    // Signed before the proposal just opened (a leader replaying it).
    let replayed = ClientSeal {
        signed_at_ms: T0,
        ..seal()
    };
    let (out, _) = g.apply(
        &admin("org1"),
        Command::Propose(freeze("org2.a")),
        Evidence::Client(replayed),
    );
    assert_eq!(out, Outcome::Proposal(Err(Rejection::OriginReplayed)));
    assert_eq!(g.l.gov(), &before);
    // A new signature opens a new proposal.
    assert!(g.propose("org1", freeze("org2.a")).is_ok());
}

#[test]
fn a_node_is_added_once_under_a_new_id() {
    let mut g = Gv::new(3);
    let record = |addr: &str| NodeRecord {
        org: org("org1"),
        api_addr: format!("{addr}:1"),
        raft_addr: format!("{addr}:2"),
        key_sha256: None,
        removed: false,
        since_height: 0,
    };
    g.l.gov.nodes.insert(1, record("n1"));
    let add = |id: u64, addr: &str| {
        Action::AddNode(Box::new(NewNode {
            id,
            org: org("org2"),
            api_addr: format!("{addr}:1"),
            raft_addr: format!("{addr}:2"),
            cert: String::new(),
            key_sha256: "ab".repeat(32),
        }))
    };
    assert_eq!(g.propose("org1", add(1, "n4")), Err(Rejection::NodeExists));
    assert_eq!(g.propose("org1", add(4, "n1")), Err(Rejection::NodeExists));
    assert_eq!(
        g.propose("org1", add(0, "n4")),
        Err(Rejection::InvalidAction)
    );
    let p = g.propose("org1", add(4, "n4")).unwrap();
    g.vote("org1", &p, true).unwrap();
    assert_eq!(
        g.vote("org2", &p, true).unwrap().state,
        ProposalState::Executed
    );
    let node = g.l.gov().node(4).unwrap();
    assert_eq!((node.org.as_str(), node.removed), ("org2", false));
    assert_eq!(node.key_sha256.as_deref(), Some(&*"ab".repeat(32)));
    assert!(g.l.gov().member(&org("org2")).unwrap().nodes.contains(&4));
    // Removed while two others remain: refused; with three others, it
    // leaves, and its id is never reused.
    let remove = |id| Action::RemoveNode { id };
    assert_eq!(g.propose("org1", remove(4)), Err(Rejection::TooFewNodes));
    assert_eq!(g.propose("org1", remove(7)), Err(Rejection::NodeNotFound));
    g.l.gov.nodes.insert(2, record("n2"));
    g.l.gov.nodes.insert(3, record("n3"));
    let p = g.propose("org1", remove(4)).unwrap();
    g.vote("org1", &p, true).unwrap();
    assert_eq!(
        g.vote("org3", &p, true).unwrap().state,
        ProposalState::Executed
    );
    assert!(g.l.gov().node(4).unwrap().removed);
    assert!(!g.l.gov().member(&org("org2")).unwrap().nodes.contains(&4));
    assert_eq!(g.propose("org1", remove(4)), Err(Rejection::NodeNotFound));
    assert_eq!(g.propose("org1", add(4, "n5")), Err(Rejection::NodeExists));
}

#[test]
fn a_node_is_replaced_in_one_vote() {
    let mut g = Gv::new(3);
    for id in 1..=3 {
        let record = NodeRecord {
            org: org(&format!("org{id}")),
            api_addr: format!("n{id}:1"),
            raft_addr: format!("n{id}:2"),
            key_sha256: None,
            removed: false,
            since_height: 0,
        };
        g.l.gov.nodes.insert(id, record);
    }
    let replace = |old: u64, id: u64, addr: &str| Action::ReplaceNode {
        old,
        new: Box::new(NewNode {
            id,
            org: org("org3"),
            api_addr: format!("{addr}:1"),
            raft_addr: format!("{addr}:2"),
            cert: String::new(),
            key_sha256: "cd".repeat(32),
        }),
    };
    assert_eq!(
        g.propose("org1", replace(9, 4, "n4")),
        Err(Rejection::NodeNotFound)
    );
    assert_eq!(
        g.propose("org1", replace(3, 2, "n4")),
        Err(Rejection::NodeExists)
    );
    assert_eq!(
        g.propose("org1", replace(3, 4, "n2")),
        Err(Rejection::NodeExists)
    );
    // A node is replaced by one of its own organization.
    assert_eq!(
        g.propose("org1", replace(2, 4, "n4")),
        Err(Rejection::InvalidAction)
    );
    // A registered key is 64 lowercase hex digits, as its certificate's.
    let mut upper = replace(3, 4, "n4");
    if let Action::ReplaceNode { new, .. } = &mut upper {
        new.key_sha256 = "CD".repeat(32);
    }
    assert_eq!(g.propose("org1", upper), Err(Rejection::InvalidAction));
    // Three nodes stay three: allowed; the new node may take the old one's
    // addresses (a node moved in place).
    let p = g.propose("org1", replace(3, 4, "n3")).unwrap();
    g.vote("org1", &p, true).unwrap();
    // The threshold is reached, but nobody adds a node in another
    // organization's name: org3 must approve too.
    assert_eq!(g.vote("org2", &p, true).unwrap().state, ProposalState::Open);
    assert_eq!(
        g.vote("org3", &p, true).unwrap().state,
        ProposalState::Executed
    );
    // An organization that refuses a node in its name rejects it.
    let q = g.propose("org1", replace(4, 5, "n5")).unwrap();
    assert_eq!(
        g.vote("org3", &q, false).unwrap().state,
        ProposalState::Rejected
    );
    let gov = g.l.gov();
    assert!(gov.node(3).unwrap().removed);
    assert!(!gov.node(4).unwrap().removed);
    let nodes = &gov.member(&org("org3")).unwrap().nodes;
    assert_eq!(nodes.iter().copied().collect::<Vec<_>>(), vec![4]);
}

#[test]
fn an_organization_revokes_a_bounded_number_of_its_certificates_itself() {
    let mut g = Gv::new(3);
    let revoke = |g: &mut Gv, o: &str, serial: usize| {
        let cert = CertRef {
            org: org(o),
            serial: Serial::parse(&format!("{serial:x}")).unwrap(),
        };
        match g.signed(&admin(o), Command::Revoke(cert)) {
            Outcome::Revoked(r) => r.map(|_| ()),
            other => panic!("{other:?}"),
        }
    };
    for serial in 1..=OWN_REVOCATIONS_PER_ORG_MAX {
        revoke(&mut g, "org2", serial).unwrap();
    }
    let before = g.l.gov().clone();
    let past = OWN_REVOCATIONS_PER_ORG_MAX + 1;
    assert_eq!(
        revoke(&mut g, "org2", past),
        Err(Rejection::TooManyRevocations)
    );
    assert_eq!(g.l.gov(), &before);
    // One already revoked is answered as before; other organizations are
    // not held back; a vote still revokes.
    assert_eq!(revoke(&mut g, "org2", 1), Ok(()));
    assert_eq!(revoke(&mut g, "org1", past), Ok(()));
    let p = g
        .propose(
            "org1",
            Action::Revoke {
                org: org("org2"),
                serial: Serial::parse(&format!("{past:x}")).unwrap(),
            },
        )
        .unwrap();
    g.vote("org1", &p, true).unwrap();
    assert_eq!(
        g.vote("org3", &p, true).unwrap().state,
        ProposalState::Executed
    );
    let height = g.l.height();
    assert!(g.l.gov().revoked_above(&org("org2"), height - 1));
    assert!(!g.l.gov().revoked_above(&org("org2"), height));
    assert!(!g.l.gov().revoked_above(&org("org3"), 0));
}

#[test]
fn a_padded_ballot_is_refused() {
    let mut g = Gv::new(3);
    let p = g.propose("org1", freeze("org2.a")).unwrap();
    let before = g.l.gov().clone();
    let ballot = Command::Ballot {
        proposal: p.id,
        approve: true,
        digest: p.digest.clone(),
    };
    let padded = ClientSeal {
        signed_at_ms: T0 + g.ms + 1,
        body: vec![b' '; BALLOT_BODY_BYTES_MAX + 1],
        ..seal()
    };
    assert!(matches!(
        g.apply(&admin("org2"), ballot, Evidence::Client(padded)).0,
        Outcome::Proposal(Err(Rejection::BallotTooLarge))
    ));
    assert_eq!(g.l.gov(), &before);
}

/// A proposal that has enough approvals once a member left executes when
/// any organization sends its same ballot again.
#[test]
fn a_repeated_ballot_counts_again_after_a_member_left() {
    let mut g = Gv::new(4);
    g.l.gov.policy.threshold = Threshold::Majority;
    let p = g.propose("org1", freeze("org3.a")).unwrap();
    g.vote("org1", &p, true).unwrap();
    g.vote("org2", &p, true).unwrap();
    assert_eq!(
        g.vote("org3", &p, false).unwrap().state,
        ProposalState::Open
    );
    let leave = g
        .propose("org1", Action::RemoveOrg { name: org("org4") })
        .unwrap();
    for o in ["org1", "org2"] {
        g.vote(o, &leave, true).unwrap();
    }
    assert_eq!(
        g.vote("org3", &leave, true).unwrap().state,
        ProposalState::Executed
    );
    // Two of three now suffice; the same ballot again decides it.
    assert_eq!(g.l.gov().required(), 2);
    assert_eq!(
        g.vote("org2", &p, true).unwrap().state,
        ProposalState::Executed
    );
    assert!(g.l.gov().is_frozen(&acct("org3.a")));
}

#[test]
fn a_stored_governance_state_apply_could_not_go_on_from_is_refused() {
    let mut g = Gv::new(3);
    // A node of each organization, as genesis registers them.
    for n in 1..=3u64 {
        let o = org(&format!("org{n}"));
        let record = NodeRecord {
            org: o.clone(),
            api_addr: format!("n{n}:1"),
            raft_addr: format!("n{n}:2"),
            key_sha256: None,
            removed: false,
            since_height: 0,
        };
        g.l.gov.nodes.insert(n, record);
        g.l.gov.orgs.get_mut(&o).unwrap().nodes.insert(n);
    }
    let executed = g.propose("org1", freeze("org2.a")).unwrap();
    g.vote("org1", &executed, true).unwrap();
    g.vote("org3", &executed, true).unwrap();
    let open = g.propose("org2", freeze("org3.a")).unwrap();
    let own = CertRef {
        org: org("org1"),
        serial: Serial::parse("1f").unwrap(),
    };
    let revoke = Command::Revoke(own.clone());
    assert!(matches!(
        g.signed(&admin("org1"), revoke),
        Outcome::Revoked(Ok(_))
    ));
    let correct = |amount| Action::Correction {
        debit_account: acct("org2.a"),
        credit_account: acct("org1.a"),
        amount: Amount::new(amount).unwrap(),
        memo: None,
    };
    for amount in [1, 1_000] {
        let p = g.propose("org1", correct(amount)).unwrap();
        g.vote("org1", &p, true).unwrap();
        g.vote("org3", &p, true).unwrap();
    }
    // What apply made passes; of the namespace of corrections, it holds
    // only the executed one's.
    let height = g.l.height();
    assert_eq!(g.l.gov().check_stored(height), Ok(()));
    let states: Vec<_> = g.l.gov().proposals_from(3).map(|p| p.state).collect();
    assert_eq!(states, [ProposalState::Executed, ProposalState::Failed]);
    for (id, made) in [
        ("gov.correction-3", true),
        ("org1.correction-9", true),
        ("gov.correction-4", false),
        ("gov.correction-5", false),
        ("gov.correction-03", false),
        ("gov.correction-1", false),
        ("gov.x", false),
    ] {
        let id = TransferId::parse(id).unwrap();
        assert_eq!(g.l.gov().could_hold(&id), made, "{id}");
    }

    let refused = |why: &str, tamper: &dyn Fn(&mut Gov)| {
        let mut gov = g.l.gov.clone();
        tamper(&mut gov);
        let err = gov.check_stored(height).unwrap_err();
        assert!(err.contains(why), "{why}: {err}");
    };
    let open_id = open.id;
    refused("proposal 2 is under id 12", &|gov| {
        let p = gov.proposals.remove(&open_id).unwrap();
        gov.proposals.insert(open_id + 10, p);
    });
    refused("ids run from 1", &|gov| {
        let mut p = gov.proposals.remove(&open_id).unwrap();
        p.id = PROPOSAL_ID_MAX;
        gov.proposals.insert(PROPOSAL_ID_MAX, p);
    });
    refused("proposal 2 is open but not due to expire", &|gov| {
        gov.expiries.clear();
    });
    refused("proposal 2 is open but not due to expire", &|gov| {
        let (due, id) = gov.expiries.pop_first().unwrap();
        gov.expiries.insert((due + 1, id));
    });
    refused("proposal 1 is open but not due to expire", &|gov| {
        gov.expiries.insert((0, executed.id));
    });
    refused("proposal 7 is open but not due to expire", &|gov| {
        gov.expiries.insert((0, 7));
    });
    refused(
        "organization org2 has 17 open proposals, more than 16",
        &|gov| {
            let template = gov.proposals[&open_id].clone();
            for id in 10..26 {
                let p = Proposal {
                    id,
                    ..template.clone()
                };
                gov.expiries.insert((p.expires_at_ms, id));
                gov.proposals.insert(id, p);
            }
        },
    );
    refused("an organization is named \"gov\"", &|gov| {
        let founder = Gov::founder(Vec::new(), BTreeSet::new());
        gov.orgs.insert(org(GOV_ORG), founder);
    });
    refused("time to live of proposals, 0 ms", &|gov| {
        gov.policy.proposal_ttl_ms = 0;
    });
    refused(
        "node 1 is of organization org9, which is not registered",
        &|gov| {
            gov.nodes.get_mut(&1).unwrap().org = org("org9");
        },
    );
    refused("node 0 is of organization org1", &|gov| {
        let n1 = gov.nodes[&1].clone();
        gov.nodes.insert(0, n1);
    });
    refused(
        "organization org2 lists nodes {2, 7}, but runs {2}",
        &|gov| {
            gov.orgs.get_mut(&org("org2")).unwrap().nodes.insert(7);
        },
    );
    refused("organization org2 lists nodes {}, but runs {2}", &|gov| {
        gov.orgs.get_mut(&org("org2")).unwrap().nodes.clear();
    });
    refused("organization org3 is removed, but runs nodes {3}", &|gov| {
        gov.orgs.get_mut(&org("org3")).unwrap().status = OrgStatus::Removed;
    });
    refused("65 nodes are registered, more than 64", &|gov| {
        for n in 4..=65 {
            let mut record = gov.nodes[&1].clone();
            record.api_addr = format!("n{n}:1");
            gov.nodes.insert(n, record);
            gov.orgs.get_mut(&org("org1")).unwrap().nodes.insert(n);
        }
    });
    refused("certificate 1f of org1 is under another's key", &|gov| {
        let r = gov.revoked.remove(&own).unwrap();
        let other = CertRef {
            serial: Serial::parse("20").unwrap(),
            ..own.clone()
        };
        gov.revoked.insert(other, r);
    });
    refused(
        &format!("or in block {}, past the head", height + 1),
        &|gov| {
            gov.revoked.get_mut(&own).unwrap().height = height + 1;
        },
    );
    refused(
        "organization org1 revoked 1025 of its own certificates",
        &|gov| {
            let r = gov.revoked[&own].clone();
            for serial in 0x1000..0x1000 + OWN_REVOCATIONS_PER_ORG_MAX {
                let cert = CertRef {
                    serial: Serial::parse(&format!("{serial:x}")).unwrap(),
                    ..own.clone()
                };
                let r = Revocation {
                    cert: cert.clone(),
                    ..r.clone()
                };
                gov.revoked.insert(cert, r);
            }
        },
    );
}
