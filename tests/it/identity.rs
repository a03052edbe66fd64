//! Who may call: decided from the verified TLS session only.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use alliance::client::ApiClient;
use alliance::config::TlsFiles;
use alliance::identity;
use openraft::raft::VoteRequest;
use openraft::Vote;
use reqwest::Method;
use serde_json::json;

use crate::harness::{ok, Cluster, REQUEST_TIMEOUT};

fn client_with(c: &Cluster, node: u64, tls: &TlsFiles) -> ApiClient {
    let roots = identity::roots_from_files(&c.layout.ca_certs()).unwrap();
    ApiClient::new(&c.layout.node(node).api_url, roots, tls, REQUEST_TIMEOUT).unwrap()
}

/// The server refused the TLS session with `alert` (no HTTP response came).
fn assert_tls_alert(err: &reqwest::Error, alert: &str) {
    let mut chain = format!("{err:?}");
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        chain.push_str(&format!(" <- {s:?}"));
        source = s.source();
    }
    assert!(
        chain.contains(&format!("AlertReceived({alert})")),
        "{chain}"
    );
}

fn node_tls_of(c: &Cluster, id: u64) -> TlsFiles {
    let org = &c.layout.node(id).org;
    TlsFiles {
        cert: c.layout.dir.join(format!("pki/{org}/node-{id}.crt")),
        key: c.layout.dir.join(format!("pki/{org}/node-{id}.key")),
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A leaf signed by `ca_dir`'s CA with whatever subject we like: what a
/// misbehaving organization's CA could issue.
fn forge_leaf(ca_dir: &Path, out: &Path, subject: &str) -> TlsFiles {
    let key = out.join("forged.key");
    let csr = out.join("forged.csr");
    let crt = out.join("forged.crt");
    let ext = out.join("forged.ext");
    std::fs::write(&ext, "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n").unwrap();
    run(Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
        ])
        .arg(&key));
    run(Command::new("openssl")
        .args(["req", "-new", "-key"])
        .arg(&key)
        .args(["-subj", subject, "-out"])
        .arg(&csr));
    run(Command::new("openssl")
        .args(["x509", "-req", "-in"])
        .arg(&csr)
        .arg("-CA")
        .arg(ca_dir.join("ca.crt"))
        .arg("-CAkey")
        .arg(ca_dir.join("ca.key"))
        .args(["-set_serial", "4242", "-days", "30", "-extfile"])
        .arg(&ext)
        .arg("-out")
        .arg(&crt));
    TlsFiles { cert: crt, key }
}

#[tokio::test(flavor = "multi_thread")]
async fn identity_comes_only_from_the_verified_session() {
    let c = Cluster::start().await;
    c.seed(1_000).await;
    let api_url = c.layout.node(1).api_url.clone();

    // No client certificate: the handshake fails, no HTTP response at all.
    let roots = identity::roots_from_files(&c.layout.ca_certs()).unwrap();
    let anonymous = rustls::ClientConfig::builder_with_provider(identity::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(anonymous)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let err = http
        .get(format!("{api_url}/v1/cluster"))
        .send()
        .await
        .unwrap_err();
    // The listener is there (a member certificate gets through, below);
    // this client is turned away in the TLS handshake.
    assert_tls_alert(&err, "CertificateRequired");
    ok(c.app(1, 1).cluster().await);

    // A certificate from a CA outside genesis: refused in the handshake.
    let rogue = tempfile::tempdir().unwrap();
    let pki = rogue.path().join("pki");
    let scripts = alliance::demo::write_scripts(rogue.path()).unwrap();
    let p = pki.to_str().unwrap();
    // A CA named like a member's (same subject DN, other key) fails the
    // signature check; a CA with a name of its own is simply unknown.
    for (org, alert) in [("org1", "DecryptError"), ("mallory", "UnknownCA")] {
        alliance::demo::run_script(&scripts, "new-org.sh", &["--dir", p, "--org", org]).unwrap();
        let args = ["--dir", p, "--org", org, "--role", "admin", "--name", "x"];
        alliance::demo::run_script(&scripts, "issue-cert.sh", &args).unwrap();
        let outsider = TlsFiles {
            cert: pki.join(format!("{org}/admin-x.crt")),
            key: pki.join(format!("{org}/admin-x.key")),
        };
        let err = client_with(&c, 1, &outsider).cluster().await.unwrap_err();
        assert_tls_alert(&err, alert);
    }

    // org1's CA minting an identity for org2: the session is accepted, the
    // identity is not, and nothing can be done with it.
    let forged = forge_leaf(
        &c.layout.dir.join("pki/org1"),
        rogue.path(),
        "/O=org2/OU=app/CN=evil",
    );
    let evil = client_with(&c, 1, &forged);
    let r = evil.cluster().await.unwrap();
    assert_eq!((r.status, r.code()), (401, Some("unauthenticated")));
    let r = evil
        .transfer("evil-1", "org2.ops", "org1.ops", 1)
        .await
        .unwrap();
    assert_eq!(r.status, 401);

    // A partner cannot write, but may read what was granted to it.
    let partner = c.client("org2", "partner", 2);
    let r = partner
        .transfer("p-1", "org2.ops", "org1.ops", 1)
        .await
        .unwrap();
    assert_eq!((r.status, r.code()), (403, Some("role_may_not_write")));
    let r = partner
        .create_account("org2.partner", "USD", false, &[])
        .await
        .unwrap();
    assert_eq!(r.status, 403);
    ok(partner.account("org1.ops", false).await); // seed grants org1.ops to org2
    let r = partner.account("org3.ops", false).await.unwrap();
    assert_eq!((r.status, r.code()), (404, Some("account_not_found")));

    // An app of org1 cannot debit org2's account.
    let r = c
        .app(1, 2)
        .transfer("steal-1", "org2.ops", "org1.ops", 1)
        .await
        .unwrap();
    assert_eq!((r.status, r.code()), (403, Some("debit_account_not_owned")));
    let r = c.app(1, 1).get_transfer("steal-1").await.unwrap();
    assert_eq!(r.status, 404);

    // An app certificate on the peer listener is refused.
    let org1_app = &c.layout.org("org1").identities["app"];
    let app_tls = TlsFiles {
        cert: org1_app.cert.clone(),
        key: org1_app.key.clone(),
    };
    let roots = identity::roots_from_files(&c.layout.ca_certs()).unwrap();
    let on_peer =
        ApiClient::new(&c.layout.node(1).peer_url, roots, &app_tls, REQUEST_TIMEOUT).unwrap();
    for path in ["/raft/vote", "/raft/append", "/peer/v1/execute"] {
        let r = on_peer
            .call(Method::POST, path, Some(&json!({})))
            .await
            .unwrap();
        assert_eq!((r.status, r.code()), (403, Some("forbidden")), "{path}");
    }

    // A node may send Raft RPCs only as itself, and only with our genesis.
    let genesis_hash = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(
            std::fs::read(&c.layout.genesis).unwrap(),
        ))
    };
    let peer_url = c.layout.node(2).peer_url.clone();
    let vote_as = |candidate: u64| {
        let req: VoteRequest<u64> = VoteRequest::new(Vote::new(0, candidate), None);
        serde_json::to_value(req).unwrap()
    };
    let as_node1 = |genesis: &str| {
        let roots = identity::roots_from_files(&c.layout.ca_certs()).unwrap();
        let tls = identity::client_config(roots, &node_tls_of(&c, 1)).unwrap();
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("alliance-genesis", genesis.parse().unwrap());
        reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .default_headers(headers)
            .build()
            .unwrap()
    };
    let post = |client: reqwest::Client, body: serde_json::Value| {
        let url = format!("{peer_url}/raft/vote");
        async move {
            let r = client.post(url).json(&body).send().await.unwrap();
            (
                r.status().as_u16(),
                r.json::<serde_json::Value>().await.unwrap_or_default(),
            )
        }
    };
    let (status, _) = post(as_node1(&genesis_hash), vote_as(1)).await;
    assert_eq!(
        status, 200,
        "a stale vote request from node 1 as itself is answered"
    );
    let (status, body) = post(as_node1(&genesis_hash), vote_as(3)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    let (status, body) = post(as_node1(&"0".repeat(64)), vote_as(1)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );

    // A node certificate on the API listener sees status but no data.
    let node_client = client_with(&c, 1, &node_tls_of(&c, 1));
    ok(node_client.cluster().await);
    assert_eq!(
        node_client.account("org1.ops", false).await.unwrap().status,
        404
    );

    // Nothing above changed any balance.
    assert_eq!(
        c.balance(1, 1, "org1.ops", false).await.as_deref(),
        Some("1000")
    );
    assert_eq!(
        c.balance(2, 2, "org2.ops", false).await.as_deref(),
        Some("0")
    );
}
