//! A node certificate that expired keeps the peer channel working when its
//! key is the one genesis registers for the node; clients and the API
//! stay strict.

use std::path::{Path, PathBuf};
use std::process::Command;

use alliance::config::{Genesis, TlsFiles};

use crate::cluster::node_tls_paths;
use crate::harness::{eventually, transfer_until_ok, Cluster};

const ISSUED: u64 = 1_000_000;

fn sh(script: &str, args: &[&str]) -> String {
    let out = Command::new("sh")
        .args(["-c", script, "sh"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A certificate for node `id`, made by its organization's CA for `key`
/// with the same profile as `issue-cert.sh`'s, that expired a moment ago
/// (valid for the minute before, and after its CA was made).
async fn expired_node_certificate(c: &Cluster, id: u64, key: &Path, dir: &Path) -> PathBuf {
    let org = c.layout.node(id).org.clone();
    let ca = c.layout.dir.join("pki").join(org.as_str());
    let ca_from = sh(
        r#"date -u -d "$(openssl x509 -in "$1" -noout -startdate | cut -d= -f2)" +%s"#,
        &[ca.join("ca.crt").to_str().unwrap()],
    );
    let ca_from: i64 = ca_from.parse().unwrap();
    // Expired, yet after its CA was made: at least a second has passed.
    eventually("a second to pass since the CA was made", || async {
        (unix_now() - 1 > ca_from).then_some(())
    })
    .await;
    let end = unix_now() - 1;
    let stamp = |t: i64| sh(r#"date -u -d "@$1" +%Y%m%d%H%M%SZ"#, &[&t.to_string()]);
    let (from, until) = (stamp((end - 60).max(ca_from)), stamp(end));
    std::fs::write(dir.join("index.txt"), "").unwrap();
    std::fs::write(dir.join("serial"), "7e57\n").unwrap();
    std::fs::write(
        dir.join("ca.cnf"),
        "[ca]\ndefault_ca = c\n[c]\ndatabase = index.txt\nserial = serial\nnew_certs_dir = .\n\
         policy = p\ndefault_md = sha256\nunique_subject = no\n[p]\nO = supplied\n\
         OU = supplied\nCN = supplied\n[node]\nbasicConstraints = critical,CA:FALSE\n\
         keyUsage = critical,digitalSignature\nextendedKeyUsage = serverAuth,clientAuth\n\
         subjectAltName = IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    let cert = dir.join(format!("node-{id}-expired.crt"));
    sh(
        r#"cd "$1" && openssl req -new -key "$2" -subj "/O=$3/OU=node/CN=$4" -out node.csr &&
           openssl ca -batch -notext -config ca.cnf -cert "$5/ca.crt" -keyfile "$5/ca.key" \
             -extensions node -startdate "$6" -enddate "$7" -in node.csr -out "$8" 2>/dev/null"#,
        &[
            dir.to_str().unwrap(),
            key.to_str().unwrap(),
            org.as_str(),
            &id.to_string(),
            ca.to_str().unwrap(),
            &from,
            &until,
            cert.to_str().unwrap(),
        ],
    );
    cert
}

/// POSTs to node `to`'s peer listener with `tls` as the client
/// certificate: the status, or the error if the handshake failed.
async fn peer_hello(c: &Cluster, to: u64, tls: &TlsFiles) -> Result<u16, String> {
    let genesis = Genesis::load(&c.layout.genesis).unwrap();
    let roots = alliance::identity::roots_from_files(&c.layout.ca_certs()).unwrap();
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(alliance::identity::client_config(roots, tls).unwrap())
        .build()
        .unwrap();
    let url = format!(
        "https://{}/peer/v1/hello",
        genesis.node(to).unwrap().raft_addr
    );
    match http.post(url).send().await {
        Ok(r) => Ok(r.status().as_u16()),
        Err(e) => Err(format!("{e:?}")),
    }
}

/// Node 3's certificate expires (its key is the one genesis registers),
/// and node 3 restarts with it: with node 1 down, nodes 2 and 3 still commit together, both alarm in
/// their logs, and `/v1/cluster` shows it expired. Clients refuse node 3's
/// API, node 2's API refuses the expired certificate as a client, and an
/// expired certificate with another key is refused on the peer channel.
#[tokio::test(flavor = "multi_thread")]
async fn an_expired_node_certificate_with_its_registered_key_keeps_consensus() {
    let mut c = Cluster::start().await;
    c.seed(ISSUED).await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = node_tls_paths(&c, 3);
    let expired = expired_node_certificate(&c, 3, &key, dir.path()).await;
    // Node 3 restarts with it: its peers see it in their new handshakes.
    c.kill(3);
    std::fs::copy(&expired, &cert).unwrap();
    c.restart(3);
    let log3 = c.layout.node(3).log.clone();

    // The peer listener takes it (the genesis header is missing, so the
    // answer is 403: past the identity check, not 401).
    let expired_tls = TlsFiles {
        cert: expired.clone(),
        key: key.clone(),
    };
    assert_eq!(peer_hello(&c, 2, &expired_tls).await, Ok(403));

    // Nodes 2 and 3 commit together without node 1.
    c.kill(1);
    let r = transfer_until_ok(&c.app(1, 2), "org1.lapsed", "org1.ops", "org2.ops", 7).await;
    assert!(r.is_success());
    eventually("node 2 to show node 3's certificate expired", || async {
        let status = c.status(2).await?;
        let peers = status["replicas"]["peers"].as_array()?.clone();
        let peer3 = peers.into_iter().find(|p| p["node"] == 3)?;
        (peer3["certificate"]["days_left"].as_i64()? < 0).then_some(())
    })
    .await;
    for (node, what) in [
        (2, "node 3's certificate EXPIRED"),
        (3, "this node's certificate (node 3) EXPIRED"),
    ] {
        let log = c.layout.node(node).log.clone();
        eventually(&format!("node {node} to alarm"), || async {
            let text = std::fs::read_to_string(&log).ok()?;
            text.contains(what).then_some(())
        })
        .await;
    }

    // Clients stay strict: node 3's API presents an expired certificate,
    // and node 2's API refuses the expired one as a client's.
    assert!(c.app(3, 3).cluster().await.is_err());
    let roots = alliance::identity::roots_from_files(&c.layout.ca_certs()).unwrap();
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(alliance::identity::client_config(roots, &expired_tls).unwrap())
        .build()
        .unwrap();
    let url = format!("https://{}/v1/cluster", c.net.api_addr(2));
    assert!(http.get(url).send().await.is_err());

    // An expired certificate for node 3 with another key: refused on the
    // peer channel, and node 3 will not present it.
    let other = tempfile::tempdir().unwrap();
    let other_key = other.path().join("node-3.key");
    sh(
        "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out \"$1\" 2>/dev/null",
        &[other_key.to_str().unwrap()],
    );
    let other_cert = expired_node_certificate(&c, 3, &other_key, other.path()).await;
    let other_tls = TlsFiles {
        cert: other_cert.clone(),
        key: other_key.clone(),
    };
    assert!(peer_hello(&c, 2, &other_tls).await.is_err());
    std::fs::copy(&other_cert, &cert).unwrap();
    std::fs::copy(&other_key, &key).unwrap();
    assert!(crate::harness::send_signal(c.pid(3), "-HUP"));
    eventually("node 3 to keep its certificate", || async {
        let log = std::fs::read_to_string(&log3).ok()?;
        log.contains("SIGHUP: kept the certificate in use")
            .then_some(())
    })
    .await;
    let r = transfer_until_ok(&c.app(1, 2), "org1.lapsed-2", "org1.ops", "org2.ops", 1).await;
    assert!(r.is_success());
}
