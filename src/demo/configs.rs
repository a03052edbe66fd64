//! Node and client configs, written as TOML.

use std::net::SocketAddr;
use std::path::Path;

use serde::Serialize;

use super::{DemoNode, Options};
use crate::config::{HostPort, NodeConfig, TlsFiles};
use crate::error::{Error, Result};

pub(super) fn write_node_config(
    dir: &Path,
    id: u64,
    org: &str,
    [api, raft, public]: [SocketAddr; 3],
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
        config: path,
        data_dir: config.data_dir,
        log: node_dir.join("node.log"),
    })
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
