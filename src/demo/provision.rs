//! [`prepare`]: the certificates, genesis, configs and index of a demo
//! consortium, made in that order, or reopened from its index.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::configs::{write_node_config, write_toml};
use super::ports::free_ports;
use super::scripts::{run_script, write_scripts};
use super::{DemoIdentity, DemoOrg, Layout, Options, CLIENT_ROLES, DEMO_NODES_MAX};
use crate::config::{ClientConfig, TlsFiles};
use crate::error::{Error, Result};

/// Makes (or, if `dir/demo.json` exists, reopens) a consortium under `dir`.
pub fn prepare(dir: &Path, opts: &Options) -> Result<Layout> {
    std::fs::create_dir_all(dir)?;
    let dir = dir.canonicalize()?;
    let index = Layout::index_path(&dir);
    if index.exists() {
        let bytes = crate::config::read_bounded(&index, crate::config::CONFIG_BYTES_MAX)?;
        return serde_json::from_slice(&bytes)
            .map_err(|e| Error::Config(format!("{}: {e}", index.display())));
    }
    if !(1..=DEMO_NODES_MAX).contains(&opts.nodes) {
        return Err(Error::Config(format!(
            "--nodes must be 1..={DEMO_NODES_MAX}"
        )));
    }
    let scripts = write_scripts(&dir)?;
    let pki = dir.join("pki");
    let mut orgs = Vec::new();
    let mut ports = free_ports(3 * opts.nodes)?.into_iter();
    let mut genesis_args = vec![
        "--out".into(),
        path_str(&dir.join("genesis.toml")),
        "--name".into(),
        "demo".into(),
    ];
    let mut node_addrs = Vec::new();
    for i in 1..=opts.nodes {
        let org = format!("org{i}");
        run_script(
            &scripts,
            "new-org.sh",
            &["--dir", &path_str(&pki), "--org", &org],
        )?;
        let id = i.to_string();
        let node_args = [
            "--dir",
            &path_str(&pki),
            "--org",
            &org,
            "--role",
            "node",
            "--name",
            &id,
        ];
        run_script(
            &scripts,
            "issue-cert.sh",
            &[
                &node_args[..],
                &["--host", "127.0.0.1", "--host", "localhost"],
            ]
            .concat(),
        )?;
        for role in CLIENT_ROLES {
            run_script(
                &scripts,
                "issue-cert.sh",
                &[
                    "--dir",
                    &path_str(&pki),
                    "--org",
                    &org,
                    "--role",
                    role,
                    "--name",
                    role,
                ],
            )?;
        }
        let ca = pki.join(&org).join("ca.crt");
        genesis_args.extend(["--org".into(), format!("{org}={}", path_str(&ca))]);
        let mut port = || ports.next().expect("enough ports");
        let (api, raft, public) = (port(), port(), port());
        genesis_args.extend(["--node".into(), format!("{i},{org},{api},{raft}")]);
        node_addrs.push((i as u64, org.clone(), api, raft, public));
        orgs.push(DemoOrg {
            name: org,
            ca_cert: ca,
            identities: BTreeMap::new(),
        });
    }
    let args: Vec<&str> = genesis_args.iter().map(String::as_str).collect();
    run_script(&scripts, "new-genesis.sh", &args)?;

    let ca_certs: Vec<PathBuf> = orgs.iter().map(|o| o.ca_cert.clone()).collect();
    let mut nodes = Vec::new();
    for (id, org, api, raft, public) in node_addrs {
        nodes.push(write_node_config(
            &dir,
            id,
            &org,
            [api, raft, public],
            opts,
        )?);
    }
    for org in &mut orgs {
        let node = nodes
            .iter()
            .find(|n| n.org == org.name)
            .expect("one node per org");
        for role in CLIENT_ROLES {
            let tls = TlsFiles {
                cert: pki.join(&org.name).join(format!("{role}-{role}.crt")),
                key: pki.join(&org.name).join(format!("{role}-{role}.key")),
            };
            let client = ClientConfig {
                url: node.api_url.clone(),
                ca_certs: ca_certs.clone(),
                tls: tls.clone(),
                timeout_ms: 15_000,
            };
            let path = dir
                .join("clients")
                .join(format!("{}-{role}.toml", org.name));
            write_toml(&path, &client)?;
            org.identities.insert(
                role.into(),
                DemoIdentity {
                    cert: tls.cert,
                    key: tls.key,
                    client_config: path,
                },
            );
        }
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
    Ok(layout)
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}
