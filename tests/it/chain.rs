//! The tamper-evident chain: identical on every replica; proofs verify
//! offline against a block hash served by another node, and fail if any byte
//! of the proof or the transfer changes.

use alliance::ledger::chain::{from_hex, Proof};
use reqwest::Method;

use crate::harness::{eventually, ok, Cluster};

#[tokio::test(flavor = "multi_thread")]
async fn proofs_verify_offline_and_every_replica_has_the_same_chain() {
    let c = Cluster::start().await;
    c.seed(1_000_000).await;
    for i in 0..5 {
        ok(c.app(1, 1)
            .transfer(&format!("c-{i}"), "org1.ops", "org2.ops", 10 + i)
            .await);
    }
    let batch: Vec<_> = (0..9)
        .map(|i| serde_json::json!({"id": format!("cb-{i}"), "debit_account": "org1.ops", "credit_account": "org3.ops", "amount": 1}))
        .collect();
    ok(c.app(1, 2).batch(batch, false).await);

    // The proof from node 1, the block hash from node 2.
    let proof_json = ok(c
        .app(1, 1)
        .call(Method::GET, "/v1/transfers/cb-5/proof", None)
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
