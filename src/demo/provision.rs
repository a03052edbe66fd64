//! [`prepare`]: the certificates, genesis, configs and index of a demo
//! consortium, made in that order, or reopened from its index.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::configs::{write_client_config, write_node_config};
use super::ports::free_ports;
use super::scripts::{run_script, write_scripts};
use super::{DemoIdentity, DemoNode, DemoOrg, Layout, Options, CLIENT_ROLES, DEMO_NODES_MAX};
use crate::config::TlsFiles;
use crate::error::{Error, Result};

/// One node to make: its id, its organization (one per node) and its
/// listeners, in the order API, peer, public window.
struct NodePlan {
    id: u64,
    org: String,
    addrs: [SocketAddr; 4],
}

/// Makes (or, if `dir/demo.json` exists, reopens) a consortium under `dir`.
pub fn prepare(dir: &Path, opts: &Options) -> Result<Layout> {
    std::fs::create_dir_all(dir)?;
    let dir = dir.canonicalize()?;
    let index = Layout::index_path(&dir);
    if index.exists() {
        let layout = reopen(&index)?;
        layout.write_env()?;
        return Ok(layout);
    }
    if !(1..=DEMO_NODES_MAX).contains(&opts.nodes) {
        return Err(Error::Config(format!(
            "--nodes must be 1..={DEMO_NODES_MAX}"
        )));
    }
    let scripts = write_scripts(&dir)?;
    let plans = plan_nodes(opts.nodes)?;
    let pki = dir.join("pki");
    for plan in &plans {
        issue_certificates(&scripts, &pki, plan)?;
    }
    let mut genesis_args = genesis_args(&dir, &pki, &plans);
    if let Some(t) = &opts.threshold {
        genesis_args.extend(["--threshold".into(), t.clone()]);
    }
    let args: Vec<&str> = genesis_args.iter().map(String::as_str).collect();
    run_script(&scripts, "new-genesis.sh", &args)?;

    let ca_certs: Vec<PathBuf> = plans.iter().map(|p| ca_cert(&pki, &p.org)).collect();
    let mut nodes = Vec::new();
    for plan in &plans {
        nodes.push(write_node_config(
            &dir, plan.id, &plan.org, plan.addrs, opts,
        )?);
    }
    let genesis_hash = crate::config::Genesis::load(&dir.join("genesis.toml"))?.hash;
    let mut orgs = Vec::new();
    for node in &nodes {
        orgs.push(write_org_clients(
            &dir,
            &pki,
            node,
            &ca_certs,
            &genesis_hash,
        )?);
    }
    let layout = Layout {
        dir: dir.clone(),
        consortium: "demo".into(),
        genesis: dir.join("genesis.toml"),
        nodes,
        orgs,
    };
    std::fs::write(
        &index,
        serde_json::to_vec_pretty(&layout).expect("layout serializes"),
    )?;
    layout.write_env()?;
    Ok(layout)
}

/// The layout a previous run wrote to `index`.
fn reopen(index: &Path) -> Result<Layout> {
    let bytes = crate::config::read_bounded(index, crate::config::CONFIG_BYTES_MAX)?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Config(format!("{}: {e}", index.display())))
}

/// Nodes 1..=`nodes`, node `i` in organization `org{i}`, each with four free
/// ports (API, peer, public window, operations).
fn plan_nodes(nodes: usize) -> Result<Vec<NodePlan>> {
    let mut ports = free_ports(4 * nodes)?.into_iter();
    let mut port = || ports.next().expect("enough ports");
    Ok((1..=nodes)
        .map(|i| NodePlan {
            id: i as u64,
            org: format!("org{i}"),
            addrs: [port(), port(), port(), port()],
        })
        .collect())
}

/// The organization's CA, its node's certificate (for loopback) and one
/// client certificate per role in [`CLIENT_ROLES`].
fn issue_certificates(scripts: &Path, pki: &Path, plan: &NodePlan) -> Result<()> {
    let (pki, org, id) = (path_str(pki), plan.org.as_str(), plan.id.to_string());
    run_script(scripts, "new-org.sh", &["--dir", &pki, "--org", org])?;
    let node_args = [
        "--dir",
        &pki,
        "--org",
        org,
        "--role",
        "node",
        "--name",
        &id,
        "--host",
        "127.0.0.1",
        "--host",
        "localhost",
    ];
    run_script(scripts, "issue-cert.sh", &node_args)?;
    for role in CLIENT_ROLES {
        let args = ["--dir", &pki, "--org", org, "--role", role, "--name", role];
        run_script(scripts, "issue-cert.sh", &args)?;
    }
    Ok(())
}

/// `new-genesis.sh`'s arguments: the consortium's name, then each
/// organization's CA and its node's API and peer addresses and key.
fn genesis_args(dir: &Path, pki: &Path, plans: &[NodePlan]) -> Vec<String> {
    let mut args = vec![
        "--out".into(),
        path_str(&dir.join("genesis.toml")),
        "--name".into(),
        "demo".into(),
    ];
    for NodePlan { id, org, addrs } in plans {
        let [api, raft, _public, _ops] = addrs;
        args.extend([
            "--org".into(),
            format!("{org}={}", path_str(&ca_cert(pki, org))),
        ]);
        args.extend(["--node".into(), format!("{id},{org},{api},{raft}")]);
        let cert = pki.join(org).join(format!("node-{id}.crt"));
        args.extend(["--node-cert".into(), format!("{id}={}", path_str(&cert))]);
    }
    args
}

/// `node`'s organization: its CA and a client config per role, each
/// calling `node`.
fn write_org_clients(
    dir: &Path,
    pki: &Path,
    node: &DemoNode,
    ca_certs: &[PathBuf],
    genesis_hash: &str,
) -> Result<DemoOrg> {
    let mut identities = BTreeMap::new();
    for role in CLIENT_ROLES {
        let tls = TlsFiles {
            cert: pki.join(&node.org).join(format!("{role}-{role}.crt")),
            key: pki.join(&node.org).join(format!("{role}-{role}.key")),
        };
        let path = dir
            .join("clients")
            .join(format!("{}-{role}.toml", node.org));
        write_client_config(&path, &node.api_url, ca_certs, &tls, genesis_hash)?;
        let identity = DemoIdentity {
            cert: tls.cert,
            key: tls.key,
            client_config: path,
        };
        identities.insert(role.into(), identity);
    }
    Ok(DemoOrg {
        name: node.org.clone(),
        ca_cert: ca_cert(pki, &node.org),
        identities,
    })
}

fn ca_cert(pki: &Path, org: &str) -> PathBuf {
    pki.join(org).join("ca.crt")
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}
