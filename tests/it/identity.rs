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

/// Does the TLS handshake with `config` against `url`'s listener, sends
/// nothing, and returns how the first read fails. With TLS 1.3 a refused
/// client certificate is answered by an alert after the client's side of the
/// handshake; reading (rather than racing an HTTP request against the alert,
/// as an HTTP client does) observes that alert every time.
fn handshake_refusal(url: &str, config: rustls::ClientConfig) -> String {
    use std::io::Read;
    let (mut conn, mut sock) = tls_session(url, config);
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    let mut byte = [0u8; 1];
    format!(
        "{:?}",
        tls.read(&mut byte)
            .expect_err("the server must refuse the session")
    )
}

/// A TLS client session with `config` to `url`'s listener (the handshake
/// runs on first use), reads bounded by a deadline.
fn tls_session(
    url: &str,
    config: rustls::ClientConfig,
) -> (rustls::ClientConnection, std::net::TcpStream) {
    let addr = url.trim_start_matches("https://");
    let sock = std::net::TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    (conn, sock)
}

/// A TLS client config that trusts the member CAs and presents no
/// certificate.
fn anonymous_config(c: &Cluster) -> rustls::ClientConfig {
    let roots = identity::roots_from_files(&c.layout.ca_certs()).unwrap();
    rustls::ClientConfig::builder_with_provider(identity::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

fn node_tls_of(c: &Cluster, id: u64) -> TlsFiles {
    let org = &c.layout.node(id).org;
    TlsFiles {
        cert: c.layout.dir.join(format!("pki/{org}/node-{id}.crt")),
        key: c.layout.dir.join(format!("pki/{org}/node-{id}.key")),
    }
}

/// A client of the peer listeners with node `id`'s certificate, sending
/// `genesis` (hex) and `incarnation` as a node does.
fn node_client(c: &Cluster, id: u64, genesis: &str, incarnation: &str) -> reqwest::Client {
    let roots = identity::roots_from_files(&c.layout.ca_certs()).unwrap();
    let tls = identity::client_config(roots, &node_tls_of(c, id)).unwrap();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("alliance-genesis", genesis.parse().unwrap());
    headers.insert("alliance-incarnation", incarnation.parse().unwrap());
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .default_headers(headers)
        .timeout(REQUEST_TIMEOUT)
        .build()
        .unwrap()
}

/// A connection to `base` with `tls` whose POST to `path` (with the extra
/// header lines `headers`) declares a body of 16,000 bytes and stops after
/// `bytes` of them: a body that stays in the node's memory.
async fn stall(
    base: &str,
    tls: std::sync::Arc<rustls::ClientConfig>,
    path: &str,
    headers: &str,
    bytes: usize,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use tokio::io::AsyncWriteExt;
    let mut s = alliance::client::connect_tls(base, tls).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: node\r\ncontent-type: application/json\r\n{headers}\
         content-length: 16000\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&vec![b' '; bytes]).await.unwrap();
    s.flush().await.unwrap();
    s
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
    forge_leaf_with(ca_dir, out, subject, "forged", Some("clientAuth"))
}

/// [`forge_leaf`] into files named `name.*`, with the extended key usage
/// `eku` (None: no such extension).
fn forge_leaf_with(
    ca_dir: &Path,
    out: &Path,
    subject: &str,
    name: &str,
    eku: Option<&str>,
) -> TlsFiles {
    let key = out.join(format!("{name}.key"));
    let csr = out.join(format!("{name}.csr"));
    let crt = out.join(format!("{name}.crt"));
    let ext = out.join(format!("{name}.ext"));
    let mut extensions =
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n".to_owned();
    if let Some(eku) = eku {
        extensions.push_str(&format!("extendedKeyUsage={eku}\n"));
    }
    std::fs::write(&ext, extensions).unwrap();
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
    let anonymous = anonymous_config(&c);
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(anonymous.clone())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    assert!(http
        .get(format!("{api_url}/v1/cluster"))
        .send()
        .await
        .is_err());
    let refusal = handshake_refusal(&api_url, anonymous);
    assert!(
        refusal.contains("AlertReceived(CertificateRequired)"),
        "{refusal}"
    );
    // The listener is there: a member certificate gets through.
    ok(c.app(1, 1).cluster().await);

    // A certificate from a CA outside genesis: refused in the handshake.
    let rogue = tempfile::tempdir().unwrap();
    let pki = rogue.path().join("pki");
    let scripts = alliance::demo::write_scripts(rogue.path()).unwrap();
    let p = pki.to_str().unwrap();
    // A CA named like a member's (same subject DN, other key) fails the
    // signature check, and a CA with a name of its own is not found: both
    // are an unknown CA to the client (not a "decrypt error").
    for (org, alert) in [("org1", "UnknownCA"), ("mallory", "UnknownCA")] {
        alliance::demo::run_script(&scripts, "new-org.sh", &["--dir", p, "--org", org]).unwrap();
        let args = ["--dir", p, "--org", org, "--role", "admin", "--name", "x"];
        alliance::demo::run_script(&scripts, "issue-cert.sh", &args).unwrap();
        let outsider = TlsFiles {
            cert: pki.join(format!("{org}/admin-x.crt")),
            key: pki.join(format!("{org}/admin-x.key")),
        };
        assert!(client_with(&c, 1, &outsider).cluster().await.is_err());
        let roots = identity::roots_from_files(&c.layout.ca_certs()).unwrap();
        let config = identity::client_config(roots, &outsider).unwrap();
        let refusal = handshake_refusal(&api_url, config);
        assert!(
            refusal.contains(&format!("AlertReceived({alert})")),
            "{org}: {refusal}"
        );
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
        .transfer("org2.evil-1", "org2.ops", "org1.ops", 1)
        .await
        .unwrap();
    assert_eq!(r.status, 401);

    // A leaf of org1's CA with no extended key usage at all: the chain
    // check lets it through, the identity check does not.
    let no_eku = forge_leaf_with(
        &c.layout.dir.join("pki/org1"),
        rogue.path(),
        "/O=org1/OU=app/CN=no-eku",
        "no-eku",
        None,
    );
    let no_eku = client_with(&c, 1, &no_eku);
    let r = no_eku.cluster().await.unwrap();
    assert_eq!((r.status, r.code()), (401, Some("unauthenticated")));
    let message = r.body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("clientAuth"), "{message}");
    let r = no_eku
        .transfer("org1.no-eku-1", "org1.ops", "org2.ops", 1)
        .await
        .unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(
        c.app(1, 1)
            .get_transfer("org1.no-eku-1")
            .await
            .unwrap()
            .status,
        404
    );

    // A partner cannot write, but may read what was granted to it.
    let partner = c.client("org2", "partner", 2);
    let r = partner
        .transfer("org2.p-1", "org2.ops", "org1.ops", 1)
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
        .transfer("org1.steal-1", "org2.ops", "org1.ops", 1)
        .await
        .unwrap();
    assert_eq!((r.status, r.code()), (403, Some("debit_account_not_owned")));
    let r = c.app(1, 1).get_transfer("org1.steal-1").await.unwrap();
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
        alliance::codec::encode(&req)
    };
    let as_node1 = |genesis: &str, incarnation: &str| node_client(&c, 1, genesis, incarnation);
    let post = |client: reqwest::Client, url: String, body: Vec<u8>| async move {
        let r = client.post(url).body(body).send().await.unwrap();
        let incarnation = r
            .headers()
            .get("alliance-incarnation")
            .map(|h| h.to_str().unwrap().to_owned());
        (
            r.status().as_u16(),
            r.json::<serde_json::Value>().await.unwrap_or_default(),
            incarnation,
        )
    };
    // Every answer of a peer listener names its node's incarnation.
    let node1_peer = format!("{}/peer/v1/hello", c.layout.node(1).peer_url);
    let (_, _, node1_incarnation) =
        post(as_node1(&genesis_hash, "x"), node1_peer, b"{}".to_vec()).await;
    let node1_incarnation = node1_incarnation.expect("incarnation header");

    let vote_url = format!("{peer_url}/raft/vote");
    let (status, body, _) = post(
        as_node1(&genesis_hash, &node1_incarnation),
        vote_url.clone(),
        vote_as(1),
    )
    .await;
    assert_eq!(status, 200, "node 1 as itself is answered: {body}");
    // A body that is not the binary RPC (here: the JSON of earlier
    // versions, then a truncated message) is refused and changes nothing.
    let json_vote = serde_json::to_vec(&VoteRequest::new(Vote::new(0, 1), None)).unwrap();
    let mut truncated = vote_as(1);
    truncated.truncate(3);
    for bad in [json_vote, truncated] {
        let (status, body, _) = post(
            as_node1(&genesis_hash, &node1_incarnation),
            vote_url.clone(),
            bad,
        )
        .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("malformed_rpc")),
            "{body}"
        );
    }
    for (genesis, incarnation, candidate, why) in [
        (
            genesis_hash.clone(),
            node1_incarnation.clone(),
            3,
            "as another node",
        ),
        (
            "0".repeat(64),
            node1_incarnation.clone(),
            1,
            "with another genesis",
        ),
        (
            genesis_hash.clone(),
            "f".repeat(32),
            1,
            "with another incarnation (lost storage)",
        ),
    ] {
        let (status, body, _) = post(
            as_node1(&genesis, &incarnation),
            vote_url.clone(),
            vote_as(candidate),
        )
        .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (403, Some("forbidden")),
            "{why}: {body}"
        );
    }

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

/// Connections that never finish their TLS handshake have a short deadline
/// and a cap of their own: thousands of bare TCP connections do not keep a
/// real client waiting.
#[tokio::test]
async fn bare_connections_do_not_delay_a_real_client() {
    const BARE: usize = 3_000;
    let c = Cluster::start().await;
    let url = c.layout.node(1).api_url.clone();
    let addr = url.trim_start_matches("https://").to_owned();
    let mut bare = Vec::with_capacity(BARE);
    for _ in 0..BARE {
        bare.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    let roots = identity::roots_from_files(&c.layout.ca_certs()).unwrap();
    let app = &c.layout.org("org1").identities["app"];
    let tls = TlsFiles {
        cert: app.cert.clone(),
        key: app.key.clone(),
    };
    let client = ApiClient::new(&url, roots, &tls, REQUEST_TIMEOUT).unwrap();
    let started = std::time::Instant::now();
    ok(client.cluster().await);
    let waited = started.elapsed();
    eprintln!("a real client waited {waited:?} behind {BARE} bare connections");
    drop(bare);
    assert!(
        waited < Duration::from_secs(2),
        "a real client waited {waited:?} behind {BARE} bare connections"
    );
}

/// A member's callers that open many request bodies and never finish them
/// hold their own organization's budget on the node, not the node's
/// memory: past `limits.body_bytes_in_flight_max` their next request is
/// 429, another organization's callers on the same node are answered as
/// before, and the budget comes back once the bodies are dropped.
#[tokio::test]
async fn a_members_unfinished_bodies_hold_its_own_budget_only() {
    const STALLED: usize = 3;
    const STALLED_BYTES: usize = 10_900;
    let mut opts = crate::harness::options(alliance::config::RaftTuning::default());
    opts.limits.body_bytes_max = 16 * 1024;
    opts.limits.body_bytes_in_flight_max = 32 * 1024;
    // The stalled bodies outlast the test: none is cut off as too slow.
    opts.limits.request_timeout_ms = 120_000;
    let c = Cluster::start_with(opts).await;
    c.seed(1_000).await;
    // org2's app at org1's node: bodies declared 16,000 bytes long, each
    // stopped 10,900 bytes in, 32,700 bytes in all of the 32,768.
    let hostile = c.app(2, 1);
    let mut stalled = Vec::new();
    for _ in 0..STALLED {
        let tls = hostile.http1_tls();
        stalled.push(stall(hostile.base(), tls, "/v1/transfers", "", STALLED_BYTES).await);
    }
    // Its next write does not fit (once node 1 has read the stalled
    // bytes; until then the probe is read and refused by the ledger).
    let refused = crate::harness::eventually("org2's budget on node 1 to be full", || async {
        let r = hostile
            .transfer("org2.probe", "org2.ops", "org1.ops", 1)
            .await
            .ok()?;
        (r.status == 429).then_some(r)
    })
    .await;
    assert_eq!(refused.code(), Some("overloaded"), "{:?}", refused.body);
    let message = refused.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("limits.body_bytes_in_flight_max (32768 bytes)"),
        "{message}"
    );
    // org1's callers on the same node are answered as before (and fund
    // org2's account).
    ok(c.app(1, 1)
        .transfer("org1.beside", "org1.ops", "org2.ops", 1)
        .await);
    // The budget comes back with the connections: org2's signed write is
    // read again, and written.
    drop(stalled);
    let answered = crate::harness::eventually("org2's budget on node 1 to come back", || async {
        let r = hostile
            .transfer("org2.more", "org2.ops", "org1.ops", 1)
            .await
            .ok()?;
        (r.status != 429).then_some(r)
    })
    .await;
    assert!(answered.is_success(), "{answered:?}");
}

/// On the peer listener each purpose of a peer's bodies has its own budget,
/// and forwards one per organization: a member's callers whose writes a
/// node forwards cannot hold up that node's Raft messages or its forwards
/// for another member. A forward names its caller's organization, a
/// member, or is refused.
#[tokio::test]
async fn a_peers_forwards_for_one_member_hold_only_their_own_budget() {
    let mut opts = crate::harness::options(alliance::config::RaftTuning::default());
    opts.limits.body_bytes_max = 16 * 1024;
    opts.limits.peer_body_bytes_max = 16 * 1024;
    opts.limits.peer_body_bytes_in_flight_max = 32 * 1024;
    // The stalled bodies outlast the test: none is cut off as too slow.
    opts.limits.request_timeout_ms = 120_000;
    let c = Cluster::start_with(opts).await;
    let roots = || identity::roots_from_files(&c.layout.ca_certs()).unwrap();
    let (as_node2, genesis, incarnation) = crate::attest::peer_as_node(&c, 2).await;
    let node1 = c.layout.node(1).peer_url.clone();
    let post = |path: &str, org: Option<&str>, body: Vec<u8>| {
        let mut req = as_node2.post(format!("{node1}{path}")).body(body);
        if let Some(org) = org {
            req = req.header("alliance-forwarded-org", org);
        }
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let body: serde_json::Value = r.json().await.unwrap_or_default();
            (
                status,
                body["error"]["message"].as_str().unwrap_or("").to_owned(),
            )
        }
    };
    // A forward that names no organization is refused unread; one that
    // names no member is not done this time (node 1's view may lag).
    for org in [None, Some("not an org")] {
        let (status, message) = post("/peer/v1/execute", org, b"{}".to_vec()).await;
        assert_eq!(status, 400, "{org:?}: {message}");
        assert!(message.contains("alliance-forwarded-org"), "{message}");
    }
    let (status, message) = post("/peer/v1/execute", Some("org9"), b"{}".to_vec()).await;
    assert_eq!(status, 503, "{message}");
    assert!(message.contains("org9 is not a member"), "{message}");
    // Node 2 stalls three forwards for org2 on node 1: all 32,768 bytes of
    // the budget of its forwards for org2.
    let tls = std::sync::Arc::new(identity::client_config(roots(), &node_tls_of(&c, 2)).unwrap());
    let headers = format!(
        "alliance-genesis: {genesis}\r\nalliance-incarnation: {incarnation}\r\n\
         alliance-forwarded-org: org2\r\n"
    );
    let mut stalled = Vec::new();
    for bytes in [10_922, 10_923, 10_923] {
        let path = "/peer/v1/execute";
        stalled.push(stall(&node1, tls.clone(), path, &headers, bytes).await);
    }
    let full = crate::harness::eventually("node 2's forwards for org2 to fill", || async {
        let (status, message) = post("/peer/v1/execute", Some("org2"), b"{}".to_vec()).await;
        (status == 429).then_some(message)
    })
    .await;
    assert!(
        full.contains("limits.peer_body_bytes_in_flight_max"),
        "{full}"
    );
    // Its forwards for org3 and its Raft messages are read as before: a
    // forward that is not one is malformed, a vote is answered.
    let (status, message) = post("/peer/v1/execute", Some("org3"), b"{}".to_vec()).await;
    assert_eq!(status, 400, "{message}");
    let vote = VoteRequest::<u64>::new(Vote::new(0, 2), None);
    let (status, message) = post("/raft/vote", None, alliance::codec::encode(&vote)).await;
    assert_eq!(status, 200, "{message}");
    drop(stalled);
}

/// A flood of refused certificates writes a few log lines a second, not one
/// a connection, and says how many it left out.
#[tokio::test]
async fn refused_handshakes_are_logged_a_few_times_a_second() {
    const REFUSED: usize = 200;
    let c = Cluster::start().await;
    let api_url = c.layout.node(1).api_url.clone();
    let rogue = tempfile::tempdir().unwrap();
    let pki = rogue.path().join("pki");
    let scripts = alliance::demo::write_scripts(rogue.path()).unwrap();
    let p = pki.to_str().unwrap();
    alliance::demo::run_script(&scripts, "new-org.sh", &["--dir", p, "--org", "mallory"]).unwrap();
    let args = [
        "--dir", p, "--org", "mallory", "--role", "app", "--name", "m",
    ];
    alliance::demo::run_script(&scripts, "issue-cert.sh", &args).unwrap();
    let outsider = TlsFiles {
        cert: pki.join("mallory/app-m.crt"),
        key: pki.join("mallory/app-m.key"),
    };
    let log = &c.layout.node(1).log;
    let lines = |what: &str| {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(what))
            .count()
    };
    let before = lines("refused a connection");
    let started = std::time::Instant::now();
    for _ in 0..REFUSED {
        let roots = identity::roots_from_files(&c.layout.ca_certs()).unwrap();
        let config = identity::client_config(roots, &outsider).unwrap();
        let refusal = handshake_refusal(&api_url, config);
        assert!(refusal.contains("UnknownCA"), "{refusal}");
    }
    // Refusals after the flood's last second report what was left out.
    let refuse = || {
        let roots = identity::roots_from_files(&c.layout.ca_certs()).unwrap();
        handshake_refusal(&api_url, identity::client_config(roots, &outsider).unwrap())
    };
    crate::harness::eventually("a line for the refusals left out", || async {
        refuse();
        (lines("more refused connections were not logged") > 0).then_some(())
    })
    .await;
    let seconds = started.elapsed().as_secs() + 1;
    let logged = lines("refused a connection") - before;
    let most = alliance::identity::refusals::LINES_PER_SECOND_MAX as usize * (seconds as usize + 2);
    assert!(
        logged <= most,
        "{logged} lines for {REFUSED} refusals and more in {seconds} s (at most {most})"
    );

    // Malformed requests from anyone (the public window asks for no
    // certificate) are not logged one line each. (Raft's own lines are not
    // counted: an election under load logs a dozen.)
    let count = || {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.contains("openraft"))
            .count()
    };
    let before = count();
    let public = c.layout.node(1).public_url.clone();
    for _ in 0..REFUSED {
        malformed_request(&public, &c);
    }
    ok(c.app(1, 1).cluster().await);
    let after = count();
    assert!(
        after - before < 20,
        "{} log lines for {REFUSED} malformed requests",
        after - before
    );
}

/// Sends a request that is not HTTP over a TLS session to `url` (server-only
/// TLS) and reads until the server closes.
fn malformed_request(url: &str, c: &Cluster) {
    use std::io::{Read, Write};
    let (mut conn, mut sock) = tls_session(url, anonymous_config(c));
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    tls.write_all(b"NOT HTTP \x01\x02\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer);
}
