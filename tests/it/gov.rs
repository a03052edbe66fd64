//! Governance: proposals and ballots signed by each organization's admin,
//! executed on every replica at the same index; freezes, corrections and
//! revocations enforced on every listener, open connections included.

use alliance::client::{checked_digest, ApiClient, Response};
use alliance::config::{Genesis, RaftTuning, TlsFiles};
use alliance::identity::request::{KeySigner, SIGNATURE_HEADER};
use alliance::identity::{self};
use reqwest::header::HeaderMap;
use serde_json::{json, Value};

use crate::harness::{
    eventually, eventually_explained, ok, options, snapshot_often, transfer_until_ok, Cluster,
    REQUEST_TIMEOUT,
};

pub(crate) fn admin(c: &Cluster, org: usize, node: u64) -> ApiClient {
    c.client(&format!("org{org}"), "admin", node)
}

fn role_tls(c: &Cluster, org: &str, role: &str) -> TlsFiles {
    let id = &c.layout.org(org).identities[role];
    TlsFiles {
        cert: id.cert.clone(),
        key: id.key.clone(),
    }
}

/// Proposes `action` as `org`'s admin through its own node; the proposal.
pub(crate) async fn propose(c: &Cluster, org: usize, action: Value) -> Value {
    ok(admin(c, org, org as u64).propose(&action).await).body
}

/// `org`'s admin votes on proposal `id` through node `node`, after checking
/// the digest as `alliance client gov approve` does.
pub(crate) async fn vote(c: &Cluster, org: usize, node: u64, id: u64, approve: bool) -> Response {
    let a = admin(c, org, node);
    let shown = ok(a.proposal(id).await);
    let digest = checked_digest(&shown.body).expect("the digest is the action's");
    a.ballot(id, approve, &digest).await.expect("an answer")
}

fn id_of(p: &Value) -> u64 {
    p["id"].as_u64().expect("a proposal id")
}

/// Waits until every node has applied what node `from` has, then returns
/// `path` as each node reads it locally (`org1`'s app asking).
async fn on_every_node(c: &Cluster, from: u64, path: &str) -> Vec<Value> {
    let height = c.status(from).await.expect("status")["height"]
        .as_u64()
        .unwrap();
    let mut seen = Vec::new();
    for node in c.ids() {
        c.wait_for_height(node, height).await;
        let sep = if path.contains('?') { '&' } else { '?' };
        let r = ok(c
            .app(1, node)
            .call(
                reqwest::Method::GET,
                &format!("{path}{sep}consistency=local"),
                None,
            )
            .await);
        let mut body = r.body;
        body.as_object_mut().unwrap().remove("as_of");
        seen.push(body);
    }
    seen
}

/// Verifies a ballot's signature with the openssl CLI alone, from what the
/// API shows: the admin's certificate, the signature, the signed body.
fn openssl_verifies(genesis_hex: &str, proposal: u64, ballot: &Value) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let der = hex::decode(ballot["certificate"].as_str().unwrap()).unwrap();
    let sig = hex::decode(ballot["signature"].as_str().unwrap()).unwrap();
    let message = format!(
        "alliance request v1\n{genesis_hex}\nPOST\n/v1/gov/proposals/{proposal}/ballots\n{}\n{}",
        ballot["signed_at_ms"],
        ballot["body"].as_str().unwrap()
    );
    let path = |name: &str| dir.path().join(name);
    std::fs::write(path("cert.der"), der).unwrap();
    std::fs::write(path("sig"), sig).unwrap();
    std::fs::write(path("msg"), message).unwrap();
    let pubkey = std::process::Command::new("openssl")
        .args(["x509", "-inform", "DER", "-pubkey", "-noout", "-in"])
        .arg(path("cert.der"))
        .output()
        .expect("run openssl");
    assert!(pubkey.status.success());
    std::fs::write(path("pub.pem"), pubkey.stdout).unwrap();
    std::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(path("pub.pem"))
        .arg("-signature")
        .arg(path("sig"))
        .arg(path("msg"))
        .output()
        .expect("run openssl")
        .status
        .success()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_of_three_admins_freeze_an_account_and_correct_a_transfer() {
    let mut c = Cluster::start().await;
    c.seed(1_000).await;
    ok(admin(&c, 1, 1)
        .transfer("org1.pay", "org1.ops", "org2.ops", 300)
        .await);

    // One approval changes nothing.
    let freeze = propose(&c, 1, json!({"freeze": {"account": "org2.ops"}})).await;
    let id = id_of(&freeze);
    assert_eq!(freeze["state"], "open");
    assert_eq!(
        freeze["approvals"], 0,
        "the proposer's approval is not implied"
    );
    let r = vote(&c, 1, 1, id, true).await;
    assert_eq!(
        (r.status, &r.body["state"]),
        (200, &json!("open")),
        "{}",
        r.body
    );
    ok(c.app(2, 2)
        .transfer("org2.before", "org2.ops", "org1.ops", 1)
        .await);

    // The second, through another organization's node, executes it.
    let r = vote(&c, 3, 3, id, true).await;
    assert_eq!(r.body["state"], "executed", "{}", r.body);
    let executed_at = r.body["closed_height"].as_u64().unwrap();
    for node in c.ids() {
        c.wait_for_height(node, executed_at).await;
        let r = c
            .app(2, node)
            .transfer(&format!("org2.out-{node}"), "org2.ops", "org1.ops", 1)
            .await
            .unwrap();
        assert_eq!((r.status, r.code()), (422, Some("debit_account_frozen")));
        let r = c
            .app(1, node)
            .transfer(&format!("org1.in-{node}"), "org1.ops", "org2.ops", 1)
            .await
            .unwrap();
        assert_eq!((r.status, r.code()), (422, Some("credit_account_frozen")));
        // Reads still work.
        assert_eq!(
            c.balance(2, node, "org2.ops", true).await.as_deref(),
            Some("299")
        );
    }

    // A correction out of the frozen account, by two approvals.
    let correction = propose(
        &c,
        2,
        json!({"correction": {"debit_account": "org2.ops", "credit_account": "org1.ops",
                              "amount": "200", "memo": "sent twice"}}),
    )
    .await;
    let cid = id_of(&correction);
    vote(&c, 1, 1, cid, true).await;
    let done = vote(&c, 2, 2, cid, true).await;
    assert_eq!(done.body["state"], "executed", "{}", done.body);
    let correction_id = format!("gov.correction-{cid}");
    let t = ok(c.app(1, 1).get_transfer(&correction_id).await);
    assert_eq!(
        (&t.body["posted_by"], &t.body["amount"]),
        (&json!("gov"), &json!("200"))
    );
    // Its block holds the deciding ballot, the transfer and the outcome;
    // the earlier ballot is in a block of its own. Both are signed.
    let height = done.body["closed_height"].as_u64().unwrap();
    let block = ok(c
        .app(1, 1)
        .call(reqwest::Method::GET, &format!("/v1/blocks/{height}"), None)
        .await);
    assert_eq!(block.body["leaf_count"], 3, "{}", block.body);
    let genesis = Genesis::load(&c.layout.genesis).unwrap();
    let ballots = done.body["ballots"].as_array().unwrap();
    assert_eq!(ballots.len(), 2);
    for b in ballots {
        assert!(openssl_verifies(&genesis.hash, cid, b), "{b}");
        let mut forged = b.clone();
        forged["body"] = json!(b["body"].as_str().unwrap().replace("approve", "reject"));
        assert!(!openssl_verifies(&genesis.hash, cid, &forged));
    }

    // Beyond the balance it fails, and nothing moves.
    let too_much = propose(
        &c,
        1,
        json!({"correction": {"debit_account": "org2.ops", "credit_account": "org1.ops",
                              "amount": 100}}),
    )
    .await;
    let tid = id_of(&too_much);
    vote(&c, 1, 1, tid, true).await;
    let failed = vote(&c, 3, 3, tid, true).await;
    assert_eq!(
        (&failed.body["state"], &failed.body["code"]),
        (&json!("failed"), &json!("insufficient_funds"))
    );
    for node in c.ids() {
        assert_eq!(
            c.balance(2, node, "org2.ops", false).await.as_deref(),
            Some("99")
        );
    }

    // Every node has the same proposals and registry, also after a restart.
    c.kill(2);
    c.restart(2);
    for path in ["/v1/gov/registry", "/v1/gov/proposals"] {
        let seen = on_every_node(&c, 1, path).await;
        assert!(seen.windows(2).all(|w| w[0] == w[1]), "{path}: {seen:?}");
    }
    let registry = &on_every_node(&c, 1, "/v1/gov/registry").await[0];
    assert_eq!(
        registry["frozen"],
        json!([{"account": "org2.ops", "proposal": id}])
    );
    assert_eq!(
        (&registry["threshold"], &registry["required"]),
        (&json!("majority"), &json!(2))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_ballots_change_nothing() {
    let c = Cluster::start().await;
    c.seed(1_000).await;
    let p = propose(&c, 1, json!({"freeze": {"account": "org2.ops"}})).await;
    let id = id_of(&p);
    let digest = p["digest"].as_str().unwrap().to_owned();
    let ballot = |vote: &str, digest: &str| json!({"vote": vote, "digest": digest});
    let path = format!("/v1/gov/proposals/{id}/ballots");

    // An app's key; an admin without its own signature; another digest.
    let send = |client: ApiClient, digest: String| {
        let (path, body) = (path.clone(), ballot("approve", &digest));
        async move {
            let r = client.call(reqwest::Method::POST, &path, Some(&body)).await;
            let r = r.unwrap();
            (r.status, r.code().map(str::to_owned))
        }
    };
    let refused = |status, code: &str| (status, Some(code.to_owned()));
    assert_eq!(
        send(c.app(2, 2), digest.clone()).await,
        refused(403, "admin_required")
    );
    assert_eq!(
        send(admin(&c, 2, 2).unsigned(), digest.clone()).await,
        refused(403, "signature_required")
    );
    assert_eq!(
        send(admin(&c, 2, 2), "0".repeat(64)).await,
        refused(422, "digest_mismatch")
    );

    // Org2's admin key, over org1's admin TLS session: the signature must
    // be the session's certificate's.
    let genesis = Genesis::load(&c.layout.genesis).unwrap();
    let body = ballot("approve", &digest).to_string();
    let org2_key = KeySigner::load(&role_tls(&c, "org2", "admin")).unwrap();
    let t = alliance::api::service::write::now_ms();
    let sig = org2_key.sign_request(&genesis.hash, "POST", &path, t, body.as_bytes());
    let roots = identity::roots_from_files(&c.layout.ca_certs()).unwrap();
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(
            identity::client_config(roots, &role_tls(&c, "org1", "admin")).unwrap(),
        )
        .default_headers(HeaderMap::new())
        .timeout(REQUEST_TIMEOUT)
        .build()
        .unwrap();
    let r = http
        .post(format!("{}{path}", c.layout.node(1).api_url))
        .header("content-type", "application/json")
        .header(SIGNATURE_HEADER, sig.header_value())
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);

    // One ballot per organization, never changed.
    let r = vote(&c, 2, 2, id, false).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = vote(&c, 2, 1, id, true).await;
    assert_eq!((r.status, r.code()), (409, Some("already_voted")));

    // A revoked admin can no longer vote, not even through another node.
    let org3_admin = alliance::client::cert_ref(&role_tls(&c, "org3", "admin").cert).unwrap();
    let revoked = admin(&c, 3, 3).revoke(&org3_admin.0, &org3_admin.1).await;
    let revoked_at = ok(revoked).body["height"].as_u64().unwrap();
    for node in c.ids() {
        c.wait_for_height(node, revoked_at).await;
        let r = admin(&c, 3, node).proposal(id).await;
        assert!(
            r.is_err(),
            "node {node} still takes the revoked admin: {r:?}"
        );
    }

    // Nothing of it counted: one rejection, no approval, still open, on
    // every node.
    for p in on_every_node(&c, 1, &format!("/v1/gov/proposals/{id}")).await {
        assert_eq!(
            (&p["state"], &p["approvals"], &p["rejections"]),
            (&json!("open"), &json!(0), &json!(1)),
            "{p}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_certificate_is_refused_on_open_connections_and_in_new_handshakes() {
    let c = Cluster::start().await;
    c.seed(1_000).await;
    // Org1's app holds a kept-alive connection to every node.
    let apps: Vec<ApiClient> = c.ids().into_iter().map(|n| c.app(1, n)).collect();
    for app in &apps {
        ok(app.account("org1.ops", true).await);
    }
    let (org, serial) = alliance::client::cert_ref(&role_tls(&c, "org1", "app").cert).unwrap();
    let r = ok(admin(&c, 1, 1).revoke(&org, &serial).await);
    assert_eq!(r.body["revoked_by"], "owner", "{}", r.body);
    // The answer says where the revocation is already enforced: at least
    // on the leader, and each node it names has applied it (asked as
    // org1's admin: org1's app is refused now).
    let on: Vec<u64> = serde_json::from_value(r.body["enforced_on"].clone()).unwrap();
    let status = |node: u64| {
        let client = admin(&c, 1, node);
        async move { ok(client.cluster().await).body }
    };
    let leader = status(1).await["leader"].as_u64().unwrap();
    assert!(on.contains(&leader), "{}", r.body);
    let height = r.body["height"].as_u64().unwrap();
    for node in on {
        let at = status(node).await["height"].as_u64().unwrap();
        assert!(at >= height, "node {node} at {at}, before {height}");
    }
    for (node, app) in c.ids().into_iter().zip(&apps) {
        // The open connection serves until this node applies the
        // revocation; then its next request is refused, and the connection
        // closed...
        eventually(
            &format!("node {node} to refuse the open connection"),
            || async {
                let r = app
                    .account("org1.ops", true)
                    .await
                    .expect("the open connection answers");
                match (r.status, r.code()) {
                    (200, _) => None,
                    (403, Some("certificate_revoked")) => Some(()),
                    other => panic!("node {node}: {other:?} {}", r.body),
                }
            },
        )
        .await;
        // ... so the next request needs a handshake, which fails.
        let e = app.account("org1.ops", true).await.unwrap_err();
        let why = app.explain(&e).await;
        assert!(why.contains("revoked"), "node {node}: {why}");
        // Org1's other certificates, and other organizations', still work.
        ok(c.client("org1", "partner", node).cluster().await);
        ok(admin(&c, 1, node).account("org1.ops", true).await);
        ok(c.app(2, node).account("org2.ops", true).await);
    }
    // Revoking another organization's certificate takes a vote.
    let (org2, serial2) = alliance::client::cert_ref(&role_tls(&c, "org2", "app").cert).unwrap();
    let r = admin(&c, 1, 1).revoke(&org2, &serial2).await.unwrap();
    assert_eq!((r.status, r.code()), (403, Some("vote_required")));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_that_catches_up_by_snapshot_has_the_same_registry() {
    let mut c = Cluster::start_with(snapshot_often()).await;
    c.seed(1_000).await;
    let leader = c.wait_for_leader().await;
    let lagging = c.ids().into_iter().find(|id| *id != leader).unwrap();
    let left_at = c.status(lagging).await.unwrap()["last_log_index"]
        .as_u64()
        .unwrap();
    c.kill(lagging);
    let up = c.ids().into_iter().find(|id| *id != lagging).unwrap();
    let voters: Vec<usize> = c
        .ids()
        .into_iter()
        .filter(|id| *id != lagging)
        .map(|id| id as usize)
        .collect();
    let p = ok(admin(&c, voters[0], up)
        .propose(&json!({"freeze": {"account": "org3.ops"}}))
        .await)
    .body;
    for org in &voters {
        let r = vote(&c, *org, up, id_of(&p), true).await;
        assert!(r.is_success(), "{}", r.body);
    }
    for i in 0..20u64 {
        transfer_until_ok(
            &c.app(1, up),
            &format!("org1.s-{i}"),
            "org1.ops",
            "org2.ops",
            1,
        )
        .await;
    }
    eventually("the log to be purged past the lagging node", || async {
        let purged = c.status(leader).await?["purged_index"].as_u64()?;
        (purged > left_at).then_some(())
    })
    .await;
    c.restart(lagging);
    let seen = on_every_node(&c, up, "/v1/gov/registry").await;
    assert!(seen.windows(2).all(|w| w[0] == w[1]), "{seen:?}");
    assert_eq!(seen[0]["frozen"][0]["account"], "org3.ops", "{}", seen[0]);
    let status = c.status(lagging).await.unwrap();
    assert!(
        status["snapshot_index"].as_u64().unwrap() > left_at,
        "{status}"
    );
    // The frozen account is frozen there too.
    let r = c
        .app(3, lagging)
        .transfer("org3.out", "org3.ops", "org1.ops", 1)
        .await
        .unwrap();
    assert_eq!(r.code(), Some("debit_account_frozen"), "{}", r.body);
}

/// A new organization's CA and certificates, made by our scripts under the
/// consortium's directory; a client for each of its roles, calling `node`.
pub(crate) struct NewOrg {
    pub(crate) ca: std::path::PathBuf,
    pub(crate) pki: std::path::PathBuf,
}

impl NewOrg {
    pub(crate) fn make(c: &Cluster, org: &str) -> Self {
        Self::make_in(&c.layout.dir.join("pki"), org)
    }

    /// An organization's CA and certificates under `pki`.
    fn make_in(pki: &std::path::Path, org: &str) -> Self {
        let pki = pki.to_owned();
        let script = |name: &str| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("scripts")
                .join(name)
        };
        let run = |name: &str, args: &[&str]| {
            let out = std::process::Command::new("sh")
                .arg(script(name))
                .args(["--dir", pki.to_str().unwrap()])
                .args(args)
                .output()
                .expect("run the script");
            assert!(
                out.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run("new-org.sh", &["--org", org]);
        for role in ["admin", "app"] {
            run(
                "issue-cert.sh",
                &["--org", org, "--role", role, "--name", role],
            );
        }
        Self {
            ca: pki.join(org).join("ca.crt"),
            pki: pki.join(org),
        }
    }

    pub(crate) fn client(&self, c: &Cluster, role: &str, node: u64) -> ApiClient {
        let roots = identity::roots_from_files(&c.layout.ca_certs()).unwrap();
        let tls = TlsFiles {
            cert: self.pki.join(format!("{role}-{role}.crt")),
            key: self.pki.join(format!("{role}-{role}.key")),
        };
        let url = format!("https://{}", c.net.api_addr(node));
        ApiClient::new(&url, roots, &tls, REQUEST_TIMEOUT).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fourth_organization_joins_by_two_of_three_votes_and_transacts() {
    let c = Cluster::start_with(alliance::demo::Options {
        threshold: Some("2/3".into()),
        ..options(RaftTuning::default())
    })
    .await;
    c.seed(1_000).await;
    let org4 = NewOrg::make(&c, "org4");
    let pem = std::fs::read_to_string(&org4.ca).unwrap();
    let add = propose(
        &c,
        1,
        json!({"add_org": {"name": "org4", "ca_certs": [pem]}}),
    )
    .await;
    let id = id_of(&add);
    assert_eq!(add["required"], 2, "2/3 of 3: {add}");
    let r = vote(&c, 1, 1, id, true).await;
    assert_eq!(r.body["state"], "open", "{}", r.body);
    // With one approval nothing changes: org4 fails the handshake everywhere.
    for node in c.ids() {
        c.wait_for_height(node, r.body["ballots"][0]["height"].as_u64().unwrap())
            .await;
        let refused = org4.client(&c, "admin", node);
        let e = refused.cluster().await.unwrap_err();
        let why = refused.explain(&e).await;
        assert!(why.contains("UnknownCA"), "node {node}: {why}");
    }
    let r = vote(&c, 2, 2, id, true).await;
    assert_eq!(r.body["state"], "executed", "{}", r.body);
    let added_at = r.body["closed_height"].as_u64().unwrap();
    for node in c.ids() {
        c.wait_for_height(node, added_at).await;
    }

    // Pending until its admin acknowledges: it may not vote yet.
    let admin4 = org4.client(&c, "admin", 3);
    let freeze = propose(&c, 1, json!({"freeze": {"account": "org3.ops"}})).await;
    let shown = ok(admin4.proposal(id_of(&freeze)).await);
    let digest = checked_digest(&shown.body).unwrap();
    let r = admin4.ballot(id_of(&freeze), true, &digest).await.unwrap();
    assert_eq!(
        (r.status, r.code()),
        (403, Some("org_not_active")),
        "{}",
        r.body
    );
    let joined = ok(admin4
        .call(reqwest::Method::POST, "/v1/gov/join", Some(&json!({})))
        .await);
    assert_eq!(
        (&joined.body["status"], &joined.body["members"]),
        (&json!("active"), &json!(4))
    );

    // It creates an account (signed, through org1's node: it runs none),
    // receives money from org1 and passes it on; every node agrees.
    let app4 = org4.client(&c, "app", 1);
    ok(app4.create_account("org4.ops", "USD", false, &[]).await);
    ok(admin(&c, 1, 1)
        .transfer("org1.to-org4", "org1.ops", "org4.ops", 500)
        .await);
    ok(app4.transfer("org4.on", "org4.ops", "org3.ops", 200).await);
    let height = c.status(1).await.unwrap()["height"].as_u64().unwrap();
    for node in c.ids() {
        c.wait_for_height(node, height).await;
        let r = ok(org4.client(&c, "app", node).account("org4.ops", true).await);
        assert_eq!(r.body["balance"], "300", "node {node}");
        assert_eq!(
            c.balance(3, node, "org3.ops", true).await.as_deref(),
            Some("200")
        );
    }

    // Three of four now: org1 and org2 approving is not enough.
    let fid = id_of(&freeze);
    vote(&c, 1, 1, fid, true).await;
    let r = vote(&c, 2, 2, fid, true).await;
    assert_eq!(
        (&r.body["state"], &r.body["required"]),
        (&json!("open"), &json!(3))
    );
    let r = admin4.ballot(fid, true, &digest).await.unwrap();
    assert_eq!(r.body["state"], "executed", "{}", r.body);

    // The name is never reused; org4 leaves by vote and its certificates
    // are refused from then on.
    let again = admin(&c, 1, 1)
        .propose(&json!({"add_org": {"name": "org4", "ca_certs": [std::fs::read_to_string(&org4.ca).unwrap()]}}))
        .await
        .unwrap();
    assert_eq!((again.status, again.code()), (409, Some("org_exists")));
    let remove = propose(&c, 2, json!({"remove_org": {"name": "org4"}})).await;
    let rid = id_of(&remove);
    for (org, node) in [(1, 1), (2, 2)] {
        vote(&c, org, node, rid, true).await;
    }
    let r = vote(&c, 3, 3, rid, true).await;
    assert_eq!(r.body["state"], "executed", "{}", r.body);
    let removed_at = r.body["closed_height"].as_u64().unwrap();
    for node in c.ids() {
        c.wait_for_height(node, removed_at).await;
        let e = org4.client(&c, "app", node).account("org4.ops", true).await;
        assert!(e.is_err(), "node {node} still serves org4: {e:?}");
    }
    let registry = &on_every_node(&c, 1, "/v1/gov/registry").await[0];
    assert_eq!(registry["members"], 3, "{registry}");
    assert!(
        registry["frozen"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["account"] == "org4.ops"),
        "{registry}"
    );
    // A node that runs nodes cannot be removed (node changes are not
    // governed yet).
    let r = admin(&c, 1, 1)
        .propose(&json!({"remove_org": {"name": "org3"}}))
        .await
        .unwrap();
    assert_eq!((r.status, r.code()), (422, Some("org_runs_nodes")));
}

/// Passes `action` by the votes of org1 and org2 (of three).
pub(crate) async fn pass(c: &Cluster, action: Value) -> Value {
    let id = id_of(&propose(c, 1, action).await);
    vote(c, 1, 1, id, true).await;
    let r = vote(c, 2, 2, id, true).await;
    assert_eq!(r.body["state"], "executed", "{}", r.body);
    let at = r.body["closed_height"].as_u64().unwrap();
    for node in c.ids() {
        c.wait_for_height(node, at).await;
    }
    r.body
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ca_is_rotated_by_overlap() {
    let c = Cluster::start().await;
    let old = NewOrg::make(&c, "org4");
    let pem = |org: &NewOrg| std::fs::read_to_string(&org.ca).unwrap();
    pass(
        &c,
        json!({"add_org": {"name": "org4", "ca_certs": [pem(&old)]}}),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let new = NewOrg::make_in(dir.path(), "org4");
    // Before the vote only the old CA's certificates are taken.
    for node in c.ids() {
        ok(old.client(&c, "app", node).cluster().await);
        assert!(
            new.client(&c, "app", node).cluster().await.is_err(),
            "node {node}"
        );
    }
    // A CA is added to org4 only with org4's own approval: it joins, and
    // approves beside two others (3 of 4).
    let admin4 = old.client(&c, "admin", 1);
    ok(admin4
        .call(reqwest::Method::POST, "/v1/gov/join", Some(&json!({})))
        .await);
    let add = json!({"add_ca": {"org": "org4", "ca_cert": pem(&new)}});
    let id = id_of(&propose(&c, 1, add).await);
    vote(&c, 1, 1, id, true).await;
    vote(&c, 2, 2, id, true).await;
    let r = vote(&c, 3, 3, id, true).await;
    assert_eq!(r.body["state"], "open", "without org4: {}", r.body);
    let digest = checked_digest(&ok(admin4.proposal(id).await).body).unwrap();
    let r = ok(admin4.ballot(id, true, &digest).await);
    assert_eq!(r.body["state"], "executed", "{}", r.body);
    let at = r.body["closed_height"].as_u64().unwrap();
    for node in c.ids() {
        c.wait_for_height(node, at).await;
    }
    for node in c.ids() {
        ok(old.client(&c, "app", node).cluster().await);
        ok(new.client(&c, "app", node).cluster().await);
    }
    let registry = ok(c
        .app(1, 1)
        .call(reqwest::Method::GET, "/v1/gov/registry", None)
        .await);
    let org4 = registry.body["orgs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "org4");
    let cas = org4.unwrap()["cas"].as_array().unwrap().clone();
    assert_eq!(cas.len(), 2, "{}", registry.body);
    let old_sha = cas[0]["sha256"].as_str().unwrap().to_owned();
    // Removing one needs no particular organization: 3 of 4.
    let remove = json!({"remove_ca": {"org": "org4", "ca_sha256": old_sha}});
    let id = id_of(&propose(&c, 1, remove).await);
    vote(&c, 1, 1, id, true).await;
    vote(&c, 2, 2, id, true).await;
    let r = vote(&c, 3, 3, id, true).await;
    assert_eq!(r.body["state"], "executed", "{}", r.body);
    let at = r.body["closed_height"].as_u64().unwrap();
    for node in c.ids() {
        c.wait_for_height(node, at).await;
    }
    for node in c.ids() {
        assert!(
            old.client(&c, "app", node).cluster().await.is_err(),
            "node {node}"
        );
        ok(new.client(&c, "app", node).cluster().await);
    }
}

/// A node's certificate revoked by its own organization: its peers refuse
/// it on the connections it holds open and in new handshakes, and the rest
/// of the cluster goes on without it.
#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_node_certificate_is_refused_by_its_peers() {
    let c = Cluster::start().await;
    c.seed(1_000).await;
    let node3 = c.layout.dir.join("pki/org3/node-3.crt");
    let (org, serial) = alliance::client::cert_ref(&node3).unwrap();
    // If node 3 leads, it cannot confirm the revocation once its peers
    // refuse it: the answer may be 504 until 1 and 2 elect a leader, and
    // the same revocation again answers it.
    let r = eventually("the revocation to be acknowledged", || async {
        let r = admin(&c, 3, 1).revoke(&org, &serial).await.ok()?;
        r.is_success().then_some(r)
    })
    .await;
    let height = r.body["height"].as_u64().unwrap();
    for node in [1, 2] {
        c.wait_for_height(node, height).await;
    }
    // Its peers refuse it, and say so in their logs.
    eventually("node 1 to refuse node 3's revoked certificate", || async {
        let log = std::fs::read_to_string(&c.layout.node(1).log).ok()?;
        let refused = log
            .lines()
            .any(|l| l.contains("listener=\"peer\"") && l.contains("Revoked"));
        refused.then_some(())
    })
    .await;
    // Nodes 1 and 2 no longer listen to node 3, also on the connections
    // they had open to it, and say why.
    let why = eventually_explained("a peer to name node 3 as revoked", || async {
        let mut seen = Vec::new();
        for node in [1, 2] {
            // One node's status may fail for a moment: ask the other too.
            let Some(status) = c.status(node).await else {
                seen.push(format!("node {node} gave no status"));
                continue;
            };
            let peers = status["replicas"]["peers"].as_array().cloned();
            let peer = peers.into_iter().flatten().find(|p| p["node"] == 3);
            if let Some(why) = peer.as_ref().and_then(|p| p["refused"].as_str()) {
                return Ok(why.to_owned());
            }
            seen.push(format!("node {node} sees node 3 as {peer:?}"));
        }
        Err(seen.join("; "))
    })
    .await;
    assert!(why.contains("node 3's certificate is revoked"), "{why}");
    // Nodes 1 and 2 go on without it.
    crate::harness::transfer_until_ok(&c.app(1, 1), "org1.after", "org1.ops", "org2.ops", 1).await;
}
