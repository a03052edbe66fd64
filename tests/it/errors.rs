//! Mistakes an operator makes, and messages that say what to fix.

use crate::harness::Cluster;

/// Runs `alliance client --config CONFIG status`; its exit status and
/// standard error. (The harness's links run on this runtime: the command
/// does not block it.)
async fn status_with(config: &std::path::Path) -> (std::process::ExitStatus, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_alliance"))
        .args(["client", "--config"])
        .arg(config)
        .arg("status")
        .output()
        .await
        .unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// org1's app's client config with `edit` applied, written to `dir`.
fn edited_config(
    c: &Cluster,
    dir: &std::path::Path,
    name: &str,
    edit: impl FnOnce(&mut toml::Table),
) -> std::path::PathBuf {
    let own = &c.layout.org("org1").identities["app"].client_config;
    let mut config: toml::Table = std::fs::read_to_string(own).unwrap().parse().unwrap();
    edit(&mut config);
    let path = dir.join(name);
    std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
    path
}

/// A client that lacks the CA of the node it calls is told which CA that
/// is; one whose node is not listening is told the address.
#[tokio::test]
async fn the_client_says_what_to_fix_when_it_gets_no_answer() {
    let c = Cluster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let org1_ca = c.layout.org("org1").ca_cert.to_str().unwrap().to_owned();
    let url = format!("https://{}", c.net.api_addr(1));

    let without_org1_ca = edited_config(&c, dir.path(), "no-ca.toml", |t| {
        t.insert("url".into(), url.clone().into());
        let cas = t["ca_certs"].as_array_mut().unwrap();
        cas.retain(|ca| ca.as_str() != Some(&org1_ca));
        assert_eq!(cas.len(), 2, "org1's CA was listed");
    });
    let (status, err) = status_with(&without_org1_ca).await;
    assert!(!status.success());
    assert!(err.contains(&url), "{err}");
    assert!(err.contains("issued by \"O=org1, CN=org1 CA\""), "{err}");
    assert!(
        err.contains("add that organization's CA certificate to ca_certs"),
        "{err}"
    );

    // A port that was just free: nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let nowhere = format!("https://{addr}");
    let unreachable = edited_config(&c, dir.path(), "closed.toml", |t| {
        t.insert("url".into(), nowhere.clone().into());
    });
    let (status, err) = status_with(&unreachable).await;
    assert!(!status.success());
    assert!(
        err.contains(&format!("{nowhere} refused the connection")),
        "{err}"
    );
}
