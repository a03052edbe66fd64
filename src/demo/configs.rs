//! Node and client configs, written as TOML.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{DemoNode, Options};
use crate::config::{ClientConfig, HostPort, NodeConfig, TlsFiles};
use crate::error::{Error, Result};

pub(super) fn write_node_config(
    dir: &Path,
    id: u64,
    org: &str,
    [api, raft, public, ops]: [SocketAddr; 4],
    opts: &Options,
) -> Result<DemoNode> {
    let node_dir = dir.join(format!("node{id}"));
    let config = NodeConfig {
        id,
        data_dir: node_dir.join("data"),
        genesis: dir.join("genesis.toml"),
        tls: TlsFiles {
            cert: dir.join("pki").join(org).join(format!("node-{id}.crt")),
            key: dir.join("pki").join(org).join(format!("node-{id}.key")),
        },
        api_listen: None,
        raft_listen: None,
        public_addr: Some(
            HostPort::try_from(public.to_string()).expect("a socket address is host:port"),
        ),
        ops_addr: Some(HostPort::try_from(ops.to_string()).expect("a socket address is host:port")),
        join: None,
        peer_dial: Vec::new(),
        limits: opts.limits.clone(),
        raft: opts.raft.clone(),
    };
    let path = node_dir.join("config.toml");
    write_toml(&path, &config)?;
    Ok(DemoNode {
        id,
        org: org.into(),
        api_url: format!("https://{api}"),
        peer_url: format!("https://{raft}"),
        public_url: format!("https://{public}"),
        ops_url: format!("http://{ops}"),
        config: path,
        data_dir: config.data_dir,
        log: node_dir.join("node.log"),
    })
}

/// How long `alliance client`, run with a demo client config, waits for an
/// answer before it gives up.
const CLIENT_TIMEOUT_MS: u64 = 15_000;

/// Writes a client config at `path` for the identity `tls`, calling `url`.
pub(super) fn write_client_config(
    path: &Path,
    url: &str,
    ca_certs: &[PathBuf],
    tls: &TlsFiles,
    genesis_hash: &str,
) -> Result<()> {
    let client = ClientConfig {
        url: url.to_owned(),
        ca_certs: ca_certs.to_vec(),
        tls: tls.clone(),
        timeout_ms: CLIENT_TIMEOUT_MS,
        genesis_hash: Some(genesis_hash.to_owned()),
    };
    write_toml(path, &client)
}

/// Writes `value` as TOML, creating parent directories.
pub fn write_toml<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let text = toml::to_string_pretty(value).map_err(|e| Error::Other(e.to_string()))?;
    std::fs::write(path, text)?;
    Ok(())
}
