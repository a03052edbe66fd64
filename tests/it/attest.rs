//! No member can act for another: a node vouches only for its own
//! organization's callers, and any other caller's write must carry the
//! caller's own signature, which every replica checks.

use alliance::api::service::Forwarded;
use alliance::config::{Genesis, TlsFiles};
use alliance::identity::attest::{Attested, Attester};
use alliance::identity::request::{KeySigner, SIGNATURE_HEADER};
use alliance::identity::{self, Trust};
use alliance::ledger::{Actor, Bundle, Command, Grouped, NewTransfer};
use reqwest::header::HeaderMap;
use serde_json::{json, Value};

use crate::harness::{now_ms, ok, Cluster, REQUEST_TIMEOUT};

fn node_tls(c: &Cluster, id: u64) -> TlsFiles {
    let org = &c.layout.node(id).org;
    TlsFiles {
        cert: c.layout.dir.join(format!("pki/{org}/node-{id}.crt")),
        key: c.layout.dir.join(format!("pki/{org}/node-{id}.key")),
    }
}

fn role_tls(c: &Cluster, org: &str, role: &str) -> TlsFiles {
    let id = &c.layout.org(org).identities[role];
    TlsFiles {
        cert: id.cert.clone(),
        key: id.key.clone(),
    }
}

fn genesis(c: &Cluster) -> Genesis {
    Genesis::load(&c.layout.genesis).unwrap()
}

/// An HTTP client presenting `tls`, with `headers` on every request.
fn http_as(c: &Cluster, tls: &TlsFiles, headers: HeaderMap) -> reqwest::Client {
    let roots = identity::roots_from_files(&c.layout.ca_certs()).unwrap();
    reqwest::Client::builder()
        .use_preconfigured_tls(identity::client_config(roots, tls).unwrap())
        .default_headers(headers)
        .timeout(REQUEST_TIMEOUT)
        .build()
        .unwrap()
}

/// A peer-channel client that is node 1, as a hostile member running node 1
/// could make with the node certificate its own CA issued.
pub(crate) async fn peer_as_node1(c: &Cluster) -> reqwest::Client {
    peer_as_node(c, 1).await.0
}

/// A peer-channel client that is node `id`, and the genesis hash and
/// incarnation it sends.
pub(crate) async fn peer_as_node(c: &Cluster, id: u64) -> (reqwest::Client, String, String) {
    let genesis = genesis(c).hash;
    let mut headers = HeaderMap::new();
    headers.insert("alliance-genesis", genesis.parse().unwrap());
    // Without an incarnation the node refuses the probe and records nothing
    // (with a made-up one it would record that as its own), and its answer
    // names its incarnation.
    let probe = http_as(c, &node_tls(c, id), headers.clone());
    let hello = format!("{}/peer/v1/hello", c.layout.node(id).peer_url);
    let own = probe.post(hello).send().await.unwrap();
    let incarnation = own.headers()["alliance-incarnation"].clone();
    headers.insert("alliance-incarnation", incarnation.clone());
    let incarnation = incarnation.to_str().unwrap().to_owned();
    (http_as(c, &node_tls(c, id), headers), genesis, incarnation)
}

fn org2_theft(id: &str) -> NewTransfer {
    let Command::Transfers { mut transfers, .. } = command(id, "org2.ops", "org1.ops", 1) else {
        unreachable!()
    };
    transfers.remove(0)
}

fn command(id: &str, from: &str, to: &str, amount: u64) -> Command {
    let body = json!({"id": id, "debit_account": from, "credit_account": to, "amount": amount});
    alliance::api::body::decode_signed("POST", "/v1/transfers", body.to_string().as_bytes())
        .expect("a transfer body")
}

/// Org1's node, with its own node certificate and key, forwards writes that
/// claim org2's admin, in every form the peer channel takes: the leader
/// refuses each, and nothing moves on any node.
#[tokio::test]
async fn a_node_cannot_forward_a_write_for_another_organizations_caller() {
    let c = Cluster::start().await;
    c.seed(1_000).await;
    ok(c.client("org1", "admin", 1)
        .transfer("org1.to-org2", "org1.ops", "org2.ops", 100)
        .await);
    let leader = c.wait_for_leader().await;
    let leader_peer = c.layout.node(leader).peer_url.clone();
    let peer = peer_as_node1(&c).await;
    let genesis = genesis(&c);
    let trust = Trust::from_genesis(&genesis).unwrap();
    let org2_admin_cert = identity::load_identity(&role_tls(&c, "org2", "admin"))
        .unwrap()
        .0;
    let org2_admin = trust.identify(&org2_admin_cert).unwrap();
    let node1 = Attester::new(1, &node_tls(&c, 1), genesis.hash_bytes()).unwrap();

    // A forwarded write, sealed by node 1 for org2's admin.
    let theft = Command::single(org2_theft("theft-1"));
    let actor = org2_admin.actor();
    let seal = node1.seal(
        &Attested::Command {
            actor: &actor,
            command: &theft,
        },
        now_ms(),
    );
    let forwarded = Forwarded {
        principal: org2_admin.forward(),
        command: theft.clone(),
        shape: alliance::api::body::Shape::One,
        evidence: seal,
    };
    let r = peer
        .post(format!("{leader_peer}/peer/v1/execute"))
        .header("alliance-forwarded-org", "org2")
        .json(&forwarded)
        .send()
        .await
        .unwrap();
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["Done"]["status"], 403, "{answer}");
    assert_eq!(
        answer["Done"]["body"]["error"]["code"], "sign_or_use_own_node",
        "{answer}"
    );

    // A bundle of org2's callers sealed by node 1, and one whose seal
    // claims node 2.
    let item = |id: &str| Grouped {
        actor: Actor {
            org: actor.org.clone(),
            role: actor.role,
        },
        transfer: org2_theft(id),
    };
    let items = vec![item("theft-2")];
    let own_seal = node1.seal(&Attested::Bundle(&items), now_ms());
    let mut claims_node2 = own_seal.clone();
    if let alliance::ledger::Evidence::Node(s) = &mut claims_node2 {
        s.node = 2;
    }
    for evidence in [own_seal, claims_node2] {
        let bundle = Bundle {
            evidence,
            items: items.clone(),
        };
        let r = peer
            .post(format!("{leader_peer}/peer/v1/bundle"))
            .header("content-type", alliance::codec::CONTENT_TYPE)
            .body(alliance::codec::encode(&bundle))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or_default();
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (403, Some("sign_or_use_own_node")),
            "{body}"
        );
    }

    // Nothing moved, on any node; no trace of the ids either.
    for node in c.ids() {
        assert_eq!(
            c.balance(2, node, "org2.ops", false).await.as_deref(),
            Some("100"),
            "node {node}"
        );
        for id in ["theft-1", "theft-2"] {
            let r = c.app(2, node).get_transfer(id).await.unwrap();
            assert_eq!(r.status, 404, "{id} on node {node}");
        }
    }
}

/// A request and its signature header, sent as org2's app over a TLS
/// session of `session` to node 1's API.
async fn signed_post(
    c: &Cluster,
    session: &TlsFiles,
    key: &TlsFiles,
    signed_body: &[u8],
    sent_body: &[u8],
    signed_at_ms: u64,
) -> (u16, Value) {
    let genesis_hex = genesis(c).hash;
    let signer = KeySigner::load(key).unwrap();
    let sig = signer.sign_request(
        &genesis_hex,
        "POST",
        "/v1/transfers",
        signed_at_ms,
        signed_body,
    );
    let http = http_as(c, session, HeaderMap::new());
    let r = http
        .post(format!("{}/v1/transfers", c.layout.node(1).api_url))
        .header("content-type", "application/json")
        .header(SIGNATURE_HEADER, sig.header_value())
        .body(sent_body.to_vec())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or_default())
}

/// Org2's app writes through org1's node by signing; unsigned, altered,
/// stale or signed with another key, the write is refused there.
#[tokio::test]
async fn a_caller_signs_to_write_through_another_organizations_node() {
    let c = Cluster::start().await;
    c.seed(1_000).await;
    ok(c.client("org1", "admin", 1)
        .transfer("org1.to-org2", "org1.ops", "org2.ops", 100)
        .await);
    let org2_app = role_tls(&c, "org2", "app");
    let body = |id: &str| {
        json!({"id": id, "debit_account": "org2.ops", "credit_account": "org1.ops", "amount": 7})
            .to_string()
            .into_bytes()
    };

    // Unsigned: org1's node will not vouch for org2's caller.
    let unsigned = c.app(2, 1).unsigned();
    let r = unsigned
        .transfer("org2.u-1", "org2.ops", "org1.ops", 7)
        .await
        .unwrap();
    assert_eq!((r.status, r.code()), (403, Some("sign_or_use_own_node")));
    let message = r.body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("sign"), "{message}");

    // One byte changed after signing; signed by org1's app key; signed
    // ten minutes ago; a malformed header.
    let mut changed = body("org2.s-2");
    let at = changed.iter().position(|b| *b == b'7').expect("the amount");
    changed[at] = b'8';
    let t = now_ms();
    let org1_app = role_tls(&c, "org1", "app");
    for (key, signed, sent, when, why) in [
        (
            &org2_app,
            body("org2.s-2"),
            changed.clone(),
            t,
            "altered body",
        ),
        (
            &org1_app,
            body("org2.s-3"),
            body("org2.s-3"),
            t,
            "another key",
        ),
        (
            &org2_app,
            body("org2.s-4"),
            body("org2.s-4"),
            t - 600_000,
            "stale",
        ),
    ] {
        let (status, answer) = signed_post(&c, &org2_app, key, &signed, &sent, when).await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (401, Some("invalid_signature")),
            "{why}: {answer}"
        );
    }
    let http = http_as(&c, &org2_app, HeaderMap::new());
    let r = http
        .post(format!("{}/v1/transfers", c.layout.node(1).api_url))
        .header("content-type", "application/json")
        .header(SIGNATURE_HEADER, "t=1, sig=zz")
        .body(body("org2.s-5"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);

    // Signed as it is sent: it commits, through org1's node, as org2's.
    let (status, answer) = signed_post(
        &c,
        &org2_app,
        &org2_app,
        &body("org2.s-1"),
        &body("org2.s-1"),
        t,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["posted_by"], "org2", "{answer}");
    // The signing client does the same for every write it sends, to any
    // node: a batch and an account of org2's, through node 3.
    let signing = c.client("org2", "admin", 3);
    ok(signing
        .create_account("org2.signed", "USD", false, &[])
        .await);
    ok(signing
        .batch(
            vec![json!({"id": "org2.s-6", "debit_account": "org2.ops", "credit_account": "org2.signed", "amount": 3})],
            true,
        )
        .await);

    for node in c.ids() {
        assert_eq!(
            c.balance(2, node, "org2.ops", false).await.as_deref(),
            Some("90"),
            "node {node}"
        );
        for refused in ["org2.u-1", "org2.s-2", "org2.s-3", "org2.s-4", "org2.s-5"] {
            let r = c.app(2, node).get_transfer(refused).await.unwrap();
            assert_eq!(r.status, 404, "{refused} on node {node}");
        }
    }
}

/// Sends node 2, as node 1 (what a hostile member running node 1 could
/// do as leader), an append of one entry with `payload` after node 1's
/// log: node 2's status and answer.
async fn append_as_node1(
    c: &Cluster,
    payload: openraft::EntryPayload<alliance::raft::TypeConfig>,
) -> (u16, Value) {
    use openraft::raft::AppendEntriesRequest;
    let peer = peer_as_node1(c).await;
    let status = c.status(1).await.unwrap();
    let term = status["term"].as_u64().unwrap();
    let last = status["last_log_index"].as_u64().unwrap();
    let rpc: AppendEntriesRequest<alliance::raft::TypeConfig> = AppendEntriesRequest {
        vote: openraft::Vote::new_committed(term, 1),
        prev_log_id: None,
        entries: vec![openraft::Entry {
            log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(term, 1), last + 1),
            payload,
        }],
        leader_commit: None,
    };
    let r = peer
        .post(format!("{}/raft/append", c.layout.node(2).peer_url))
        .header("content-type", alliance::codec::CONTENT_TYPE)
        .body(alliance::codec::encode(&rpc))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

/// Node 1, as a hostile leader would, sends node 2 an entry dated an hour
/// ahead: node 2 refuses it before Raft sees it, naming the clocks.
#[tokio::test]
async fn a_follower_refuses_entries_dated_ahead_of_its_clock() {
    use alliance::ledger::{Blinding, Entry, Evidence};
    let c = Cluster::start().await;
    c.seed(1_000).await;
    let entry = Entry {
        actor: Actor {
            org: alliance::ledger::OrgName::parse("org1").unwrap(),
            role: alliance::ledger::Role::Node,
        },
        timestamp_ms: now_ms() + 3_600_000,
        command: Command::Tick,
        evidence: Evidence::Leader,
        blinding: Blinding([0; 16]),
    };
    let payload = openraft::EntryPayload::Normal(std::sync::Arc::new(entry));
    let (status, body) = append_as_node1(&c, payload).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "entry_dated_ahead", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("ahead of this node's clock"), "{message}");
    // The cluster goes on: a write commits, dated by the real leader.
    ok(c.client("org1", "admin", 1)
        .transfer("org1.after-dated", "org1.ops", "org2.ops", 1)
        .await);
}

/// Node 1, as a hostile leader would, sends node 2 a configuration in
/// which node 1 is the only voter: node 2 refuses it, and the cluster
/// goes on with its three voters.
#[tokio::test]
async fn a_follower_refuses_a_configuration_of_one_voter() {
    let c = Cluster::start().await;
    c.seed(1_000).await;
    let sole = openraft::Membership::new(vec![std::collections::BTreeSet::from([1])], None);
    let (status, body) = append_as_node1(&c, openraft::EntryPayload::Membership(sole)).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "too_few_voters", "{body}");
    ok(c.client("org1", "admin", 1)
        .transfer("org1.after-sole", "org1.ops", "org2.ops", 1)
        .await);
    let status = c.status(2).await.unwrap();
    assert_eq!(status["voters"], json!([1, 2, 3]), "{status}");
}
