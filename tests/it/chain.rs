//! The tamper-evident chain: identical on every replica; proofs verify
//! offline against a block hash served by another node, and fail if any byte
//! of the proof or the transfer changes.

use alliance::codec::{decode, encode};
use alliance::ledger::chain::{from_hex, Proof};
use reqwest::Method;

use crate::harness::{eventually, ok, sample, Cluster};

#[tokio::test(flavor = "multi_thread")]
async fn proofs_verify_offline_and_every_replica_has_the_same_chain() {
    let c = Cluster::start().await;
    c.seed(1_000_000).await;
    for i in 0..5 {
        ok(c.app(1, 1)
            .transfer(&format!("org1.c-{i}"), "org1.ops", "org2.ops", 10 + i)
            .await);
    }
    let batch: Vec<_> = (0..9)
        .map(|i| serde_json::json!({"id": format!("org1.cb-{i}"), "debit_account": "org1.ops", "credit_account": "org3.ops", "amount": 1}))
        .collect();
    ok(c.app(1, 2).batch(batch, false).await);

    // The proof from node 1, the block hash from node 2.
    let proof_json = ok(c
        .app(1, 1)
        .call(Method::GET, "/v1/transfers/org1.cb-5/proof", None)
        .await)
    .body;
    let proof: Proof = serde_json::from_value(proof_json.clone()).unwrap();
    assert_eq!(proof.header.leaf_count, 9);
    let block = ok(c
        .app(2, 2)
        .call(
            Method::GET,
            &format!("/v1/blocks/{}", proof.header.height),
            None,
        )
        .await)
    .body;
    let hash = from_hex(block["hash"].as_str().unwrap()).unwrap();
    assert!(proof.verify(&hash).is_ok());

    // The command-line verifier agrees, and refuses a tampered file.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("proof.json");
    std::fs::write(&file, serde_json::to_vec(&proof_json).unwrap()).unwrap();
    let verify = |file: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_alliance"))
            .args(["verify", "proof"])
            .arg(file)
            .args(["--head", block["hash"].as_str().unwrap()])
            .output()
            .unwrap()
    };
    let out = verify(&file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let mut tampered = proof.clone();
    tampered.leaf = tampered.leaf.replacen("\"amount\":1", "\"amount\":2", 1);
    assert_ne!(tampered.leaf, proof.leaf);
    std::fs::write(&file, serde_json::to_vec(&tampered).unwrap()).unwrap();
    assert_eq!(verify(&file).status.code(), Some(1));

    // Any byte of the transfer (the leaf), any bit of the path or header.
    for i in 0..proof.leaf.len() {
        let mut t = proof.clone();
        let mut bytes = t.leaf.into_bytes();
        bytes[i] ^= 0x01;
        t.leaf = String::from_utf8_lossy(&bytes).into_owned();
        assert!(t.verify(&hash).is_err(), "leaf byte {i}");
    }
    for (p, _) in proof.path.iter().enumerate() {
        for byte in [0, 31] {
            let mut t = proof.clone();
            t.path[p][byte] ^= 0x80;
            assert!(t.verify(&hash).is_err(), "path {p} byte {byte}");
        }
    }
    let header_changes: [fn(&mut Proof); 6] = [
        |t| t.header.height += 1,
        |t| t.header.prev_hash[0] ^= 1,
        |t| t.header.merkle_root[5] ^= 1,
        |t| t.header.timestamp_ms += 1,
        |t| t.header.state_digest[9] ^= 1,
        |t| t.leaf_index += 1,
    ];
    for (n, change) in header_changes.iter().enumerate() {
        let mut t = proof.clone();
        change(&mut t);
        assert!(t.verify(&hash).is_err(), "header change {n}");
    }

    // Every replica holds the same chain, linked block to block: each node's
    // own copy (local reads), once it has applied up to the leader's head.
    let top = ok(c
        .app(1, 1)
        .call(Method::GET, "/v1/blocks?limit=1", None)
        .await)
    .body;
    let head = top["head_height"].as_u64().unwrap();
    let mut chains = Vec::new();
    for node in c.ids() {
        let url = "/v1/blocks?limit=1000&consistency=local";
        let page = eventually("the replica to reach the head", || async {
            let page = c.app(1, node).call(Method::GET, url, None).await.ok()?.body;
            (page["head_height"].as_u64()? >= head).then_some(page)
        })
        .await;
        let blocks = page["blocks"].as_array().unwrap().clone();
        for pair in blocks.windows(2) {
            assert_eq!(pair[1]["prev_hash"], pair[0]["hash"], "node {node}");
        }
        chains.push(
            blocks
                .iter()
                .take(head as usize + 1)
                .map(|b| b["hash"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>(),
        );
    }
    assert!(chains.len() == 3 && chains.windows(2).all(|w| w[0] == w[1]));
    assert!(chains[0].len() > 10);
}

/// A client of the public window: trusts the member CAs, presents no
/// certificate, and connects from `from` (a loopback address of its own).
fn outsider(c: &Cluster, from: [u8; 4]) -> reqwest::Client {
    let roots = alliance::identity::roots_from_files(&c.layout.ca_certs()).unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(alliance::identity::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .local_address(Some(std::net::IpAddr::from(from)))
        .timeout(std::time::Duration::from_secs(20))
        .build()
        .unwrap()
}

async fn get(client: &reqwest::Client, url: String) -> (u16, Option<String>, String) {
    let r = client.get(url).send().await.unwrap();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (r.status().as_u16(), retry, r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_public_window_shows_headers_only_and_rate_limits_each_client() {
    let mut opts = crate::harness::options(alliance::config::RaftTuning::default());
    opts.limits.public_requests_per_minute = 20;
    let c = Cluster::start_with(opts).await;
    c.seed(1_000).await;
    let t = ok(c
        .app(1, 1)
        .transfer("org1.pub-1", "org1.ops", "org2.ops", 7)
        .await)
    .body;
    let height = t["height"].as_u64().unwrap();
    let base = c.layout.node(2).public_url.clone();
    let me = outsider(&c, [127, 0, 0, 1]);
    // The window shows what node 2 has applied.
    c.wait_for_height(2, height).await;

    // The head and a header, with no client certificate; a proof from a
    // member verifies against the hash the window serves.
    let (status, _, head) = get(&me, format!("{base}/public/v1/head")).await;
    assert_eq!(status, 200, "{head}");
    let head: serde_json::Value = serde_json::from_str(&head).unwrap();
    assert!(head["height"].as_u64().unwrap() >= height);
    let (status, _, block) = get(&me, format!("{base}/public/v1/blocks/{height}")).await;
    assert_eq!(status, 200, "{block}");
    for secret in ["org1.pub-1", "org1", "org2", "leaf_hashes", "\"amount\""] {
        assert!(
            !block.contains(secret),
            "the window revealed {secret}: {block}"
        );
    }
    let block: serde_json::Value = serde_json::from_str(&block).unwrap();
    let proof: Proof = serde_json::from_value(
        ok(c.app(1, 3)
            .call(Method::GET, "/v1/transfers/org1.pub-1/proof", None)
            .await)
        .body,
    )
    .unwrap();
    assert!(proof
        .verify(&from_hex(block["hash"].as_str().unwrap()).unwrap())
        .is_ok());

    // Nothing else is reachable there.
    for path in [
        "/v1/cluster",
        "/v1/accounts/org1.ops",
        "/v1/transfers/org1.pub-1",
        "/v1/transfers/org1.pub-1/proof",
        "/raft/vote",
    ] {
        let (status, _, body) = get(&me, format!("{base}{path}")).await;
        assert_eq!(status, 404, "{path}: {body}");
    }

    // Past the budget: 429 with Retry-After, for this client only.
    let mut refused = None;
    for _ in 0..25 {
        let (status, retry, _) = get(&me, format!("{base}/public/v1/head")).await;
        if status == 429 {
            refused = retry;
            break;
        }
        assert_eq!(status, 200);
    }
    let retry: u64 = refused.expect("a 429 within the budget").parse().unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    let other = outsider(&c, [127, 0, 0, 2]);
    let (status, _, _) = get(&other, format!("{base}/public/v1/head")).await;
    assert_eq!(status, 200, "another client is still served");
    let (_, text) = c.ops_text(2, "/metrics").await.unwrap();
    let limited = sample(&text, "alliance_public_rate_limited_total");
    assert_eq!(limited, Some(1), "one request refused: {text}");
}

/// Runs `alliance audit` with `args`; returns (exit code, stdout).
fn audit(args: &[&std::ffi::OsStr]) -> (Option<i32>, String) {
    crate::harness::run_cli(std::iter::once("audit".as_ref()).chain(args.iter().copied()))
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_recomputes_the_chain_and_finds_tampered_records() {
    let mut c = Cluster::start().await;
    c.seed(10_000).await;
    let app1 = c.app(1, 1);
    for i in 0..4 {
        ok(app1
            .transfer(&format!("org1.au-{i}"), "org1.ops", "org2.ops", 100 + i)
            .await);
    }
    let pending = serde_json::json!({"id": "org1.au-p", "debit_account": "org1.ops", "credit_account": "org3.ops", "amount": 50, "pending": true});
    ok(app1
        .call(Method::POST, "/v1/transfers", Some(&pending))
        .await);
    ok(app1.post_pending("org1.au-p", Some(20)).await);

    // Through the API.
    let org1_app = c.layout.org("org1").identities["app"].client_config.clone();
    let url = c.layout.node(2).api_url.clone();
    let (code, out) = audit(&[
        "--node".as_ref(),
        url.as_ref(),
        "--config".as_ref(),
        org1_app.as_os_str(),
    ]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("ok: no mismatch"), "{out}");

    // On a stopped node's files: clean, then tampered.
    let leader = c.wait_for_leader().await;
    let victim = c.ids().into_iter().find(|id| *id != leader).unwrap();
    eventually("the victim to apply everything", || async {
        let r = c
            .app(1, victim)
            .call(
                Method::GET,
                "/v1/transfers/org1.au-p?consistency=local",
                None,
            )
            .await
            .ok()?;
        (r.body["state"] == "posted").then_some(())
    })
    .await;
    c.kill(victim);
    let data_dir = c.layout.node(victim).data_dir.clone();
    let (code, out) = audit(&["--data-dir".as_ref(), data_dir.as_os_str()]);
    assert_eq!(code, Some(0), "{out}");

    tamper(&data_dir.join("sled"), |store| {
        // au-2's latest version is in the highest block that holds it.
        let blocks = store
            .state
            .scan_prefix([alliance::raft::store::TRANSFERS_TAG])
            .rev()
            .map(|kv| kv.unwrap());
        let (key, mut block) = blocks
            .map(|(k, v)| (k, decode::<Vec<alliance::ledger::Transfer>>(&v).unwrap()))
            .find(|(_, block)| block.iter().any(|t| t.id.as_str() == "org1.au-2"))
            .expect("a block holds au-2");
        let t = block
            .iter_mut()
            .find(|t| t.id.as_str() == "org1.au-2")
            .unwrap();
        t.amount = alliance::ledger::Amount::new(1).unwrap();
        store.state.insert(key, encode(&block)).unwrap();
    });

    let (code, out) = audit(&["--data-dir".as_ref(), data_dir.as_os_str()]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("transfer org1.au-2: stored record differs"),
        "{out}"
    );
    assert!(
        out.contains("account org1.ops"),
        "the balances no longer add up: {out}"
    );

    // The edited record no longer hashes to its leaf: the victim refuses
    // to prove it rather than prove something its block did not commit.
    // (Before the account is edited: a restarted victim re-applies the
    // entries its stored state had not flushed, and one that touches an
    // edited account makes its peers find it diverged, which refuses all
    // reads. The edited transfer is in no entry after its own.)
    c.restart(victim);
    let r = eventually("the restarted victim to answer", || async {
        c.app(1, victim)
            .call(
                Method::GET,
                "/v1/transfers/org1.au-2/proof?consistency=local",
                None,
            )
            .await
            .ok()
    })
    .await;
    assert_eq!(r.status, 503, "{:?}", r.body);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("differs from leaf")),
        "{:?}",
        r.body
    );
    c.kill(victim);

    tamper(&data_dir.join("sled"), |store| {
        use alliance::raft::store::StateKey;
        let id = alliance::ledger::AccountId::parse("org3.ops").unwrap();
        let key = StateKey::Account(&id).encode();
        let mut a: alliance::ledger::Account =
            decode(&store.state.get(&key).unwrap().unwrap()).unwrap();
        a.credits_posted = 999_999;
        store.state.insert(key, encode(&a)).unwrap();
    });
    let (code, out) = audit(&["--data-dir".as_ref(), data_dir.as_os_str()]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("account org3.ops"), "{out}");

    // What a node loads at start besides the accounts (the pending
    // transfers, the count) must agree with the blocks.
    tamper(&data_dir.join("sled"), |store| {
        use alliance::raft::store::StateKey;
        let key = StateKey::TransferCount.encode();
        store.state.insert(key, encode(&999u64)).unwrap();
    });
    let (code, out) = audit(&["--data-dir".as_ref(), data_dir.as_os_str()]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("the stored transfer count is Some(999)"),
        "{out}"
    );
}

/// Stored bytes that no longer decode (a disk fault, an edit outside the
/// node) are answered 503 by the reads that meet them, naming the record;
/// the node keeps serving everything else.
#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_stored_record_is_answered_503_and_the_node_serves_on() {
    let mut c = Cluster::start().await;
    c.seed(1_000).await;
    let leader = c.wait_for_leader().await;
    let victim = c.ids().into_iter().find(|id| *id != leader).unwrap();
    let local = |path: &str| format!("{path}?consistency=local");
    let seeded = local("/v1/transfers/org1.seed-issue");
    eventually("the victim to apply the seed", || async {
        let r = c
            .app(1, victim)
            .call(Method::GET, &seeded, None)
            .await
            .ok()?;
        (r.status == 200).then_some(())
    })
    .await;
    // A clean stop: the node's state is on disk when it exits.
    assert!(crate::harness::send_signal(c.pid(victim), "-TERM"));
    assert!(c.wait_exit(victim).await.success());
    let data_dir = c.layout.node(victim).data_dir.clone();
    tamper(&data_dir.join("sled"), |store| {
        use alliance::raft::store::{StateKey, HISTORY_TAG};
        // Every block's history, and one block's header.
        let history = store.state.scan_prefix([HISTORY_TAG]).keys();
        let mut keys: Vec<Vec<u8>> = history.map(|k| k.unwrap().to_vec()).collect();
        assert!(!keys.is_empty(), "stored history");
        keys.push(StateKey::Block(1).encode());
        for key in keys {
            assert!(store.state.get(&key).unwrap().is_some(), "a stored record");
            store.state.insert(key, &[0xff, 0xff, 0xff][..]).unwrap();
        }
    });
    c.restart(victim);
    let app = c.app(1, victim);
    let r = eventually("the restarted victim to answer", || async {
        app.call(Method::GET, &local("/v1/accounts/org1.ops/transfers"), None)
            .await
            .ok()
    })
    .await;
    let message = |r: &alliance::client::Response| {
        r.body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(
        (r.status, r.code()),
        (503, Some("unavailable")),
        "{:?}",
        r.body
    );
    assert!(message(&r).contains("history chunk"), "{}", message(&r));
    let r = app
        .call(Method::GET, &local("/v1/blocks/1"), None)
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.code()),
        (503, Some("unavailable")),
        "{:?}",
        r.body
    );
    assert!(message(&r).contains("block header"), "{}", message(&r));
    // Everything else is served as before.
    let r = ok(app.account("org1.ops", true).await);
    assert_eq!(r.body["balance"], "1000");
    ok(app.call(Method::GET, &local("/v1/blocks/2"), None).await);
    ok(app
        .call(Method::GET, &local("/v1/transfers/org1.seed-issue"), None)
        .await);
    c.assert_alive();
}

/// The test helper that edits a stopped node's stored state.
fn tamper(sled_dir: &std::path::Path, edit: impl FnOnce(&alliance::raft::store::Store)) {
    let store = alliance::raft::store::Store::open(sled_dir).unwrap();
    edit(&store);
    store.durable.sync().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tampered_replica_is_found_by_its_peers_once_the_account_is_touched() {
    let mut opts = crate::harness::options(alliance::config::RaftTuning::default());
    opts.limits.head_check_ms = 200;
    let mut c = Cluster::start_with(opts).await;
    c.seed(10_000).await;
    let leader = c.wait_for_leader().await;
    let victim = c.ids().into_iter().find(|id| *id != leader).unwrap();
    eventually("the victim to apply the seed", || async {
        c.balance(1, victim, "org1.ops", true)
            .await
            .filter(|b| b == "10000")
    })
    .await;
    c.kill(victim);
    tamper(&c.layout.node(victim).data_dir.join("sled"), |store| {
        use alliance::raft::store::StateKey;
        let id = alliance::ledger::AccountId::parse("org2.ops").unwrap();
        let key = StateKey::Account(&id).encode();
        let mut a: alliance::ledger::Account =
            decode(&store.state.get(&key).unwrap().unwrap()).unwrap();
        a.credits_posted = 5_000;
        store.state.insert(key, encode(&a)).unwrap();
    });
    c.restart(victim);
    c.wait_for_leader().await;

    // Touch the account: the victim's block now digests another record.
    ok(c.app(1, leader)
        .transfer("org1.touch", "org1.ops", "org2.ops", 1)
        .await);
    let why = eventually("the victim to find itself diverged", || async {
        let status = c.status(victim).await?;
        status["replicas"]["diverged"].as_str().map(str::to_owned)
    })
    .await;
    assert!(why.contains("differs"), "{why}");
    let r = c.app(2, victim).account("org2.ops", true).await.unwrap();
    assert_eq!((r.status, r.code()), (503, Some("diverged")));
    let log = std::fs::read_to_string(&c.layout.node(victim).log).unwrap();
    assert!(
        log.contains("ERROR") && log.contains("DIVERGED"),
        "no error-level report"
    );

    // The healthy nodes name the victim and keep serving.
    let seen = eventually("the leader to see the victim disagree", || async {
        let status = c.status(leader).await?;
        let peers = status["replicas"]["peers"].as_array()?.clone();
        peers
            .into_iter()
            .find(|p| p["node"] == victim && p["agrees"] == false)
    })
    .await;
    assert_eq!(seen["node"], victim);
    assert_eq!(
        c.status(leader).await.unwrap()["replicas"]["diverged"],
        serde_json::Value::Null
    );
    assert_eq!(
        c.balance(2, leader, "org2.ops", false).await.as_deref(),
        Some("1")
    );
}

/// Two blocks of one transfer each, the transfers equal but for their id:
/// an outsider who guesses a transfer's every field cannot match it to the
/// root the public window serves (each leaf is blinded), while the member's
/// proof, which carries its leaf's blind, verifies offline.
#[tokio::test(flavor = "multi_thread")]
async fn public_roots_cannot_be_matched_to_guessed_transfers_and_proofs_still_verify() {
    use alliance::ledger::chain::{blinded_leaf_hash, leaf_hash, to_hex};
    let c = Cluster::start().await;
    c.seed(1_000).await;
    let app = c.app(1, 1);
    let mut proofs = Vec::new();
    for id in ["org1.blind-1", "org1.blind-2"] {
        let body = serde_json::json!({"id": id, "debit_account": "org1.ops", "credit_account": "org2.ops", "amount": 7, "memo": "rent"});
        ok(app.call(Method::POST, "/v1/transfers", Some(&body)).await);
        let path = format!("/v1/transfers/{id}/proof");
        let json = ok(app.call(Method::GET, &path, None).await).body;
        let proof: Proof = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(proof.header.leaf_count, 1, "a block of one transfer");
        assert_eq!(json["blind"], to_hex(&proof.blind), "the blind is hex");
        proofs.push((json, proof));
    }
    let (a, b) = (&proofs[0].1, &proofs[1].1);
    assert_ne!(a.header.height, b.header.height);
    // The records differ in their id and in what the public header tells
    // anyone anyway (height, log index, time): all an outsider must guess
    // is the id and the transfer's own fields.
    let fields = |p: &Proof| {
        let mut leaf: serde_json::Value = serde_json::from_str(&p.leaf).unwrap();
        let t = leaf["transfer"].as_object_mut().unwrap();
        let h = &p.header;
        assert_eq!(t.remove("height"), Some(h.height.into()));
        assert_eq!(t.remove("log_index"), Some(h.log_index.into()));
        assert_eq!(t.remove("timestamp_ms"), Some(h.timestamp_ms.into()));
        t.remove("id");
        leaf
    };
    assert_eq!(fields(a), fields(b));
    assert_ne!(a.blind, b.blind, "each block has its own blinding");

    let base = c.layout.node(2).public_url.clone();
    let me = outsider(&c, [127, 0, 0, 3]);
    for (json, proof) in &proofs {
        let height = proof.header.height;
        let (status, _, text) = get(&me, format!("{base}/public/v1/blocks/{height}")).await;
        assert_eq!(status, 200, "{text}");
        assert!(!text.contains(&to_hex(&proof.blind)), "{text}");
        let public: serde_json::Value = serde_json::from_str(&text).unwrap();
        let root = from_hex(public["merkle_root"].as_str().unwrap()).unwrap();
        assert_eq!(root, proof.header.merkle_root);

        // The outsider's best guess, the exact record, hashed as an
        // unblinded RFC 6962 leaf (or with the other block's blind): not
        // the root. With its own blind, as the member has it: the root.
        assert_ne!(leaf_hash(proof.leaf.as_bytes()), root);
        for (_, other) in &proofs {
            if other.header.height != height {
                assert_ne!(blinded_leaf_hash(&other.blind, proof.leaf.as_bytes()), root);
            }
        }
        assert_eq!(blinded_leaf_hash(&proof.blind, proof.leaf.as_bytes()), root);

        // The member verifies offline against the hash the window serves;
        // a proof with another blind fails.
        let hash = public["hash"].as_str().unwrap();
        assert!(proof.verify(&from_hex(hash).unwrap()).is_ok());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("proof.json");
        let verify = |file: &std::path::Path| {
            std::process::Command::new(env!("CARGO_BIN_EXE_alliance"))
                .args(["verify", "proof"])
                .arg(file)
                .args(["--head", hash])
                .output()
                .unwrap()
        };
        std::fs::write(&file, serde_json::to_vec(json).unwrap()).unwrap();
        let out = verify(&file);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}");
        assert!(stdout.starts_with("ok: leaf 0 of block"), "{stdout}");
        let mut blind = proof.blind;
        blind[0] ^= 1;
        let mut tampered = json.clone();
        tampered["blind"] = to_hex(&blind).into();
        std::fs::write(&file, serde_json::to_vec(&tampered).unwrap()).unwrap();
        let out = verify(&file);
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("FAILED"));
    }
}
