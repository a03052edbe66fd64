//! `demo.json`: what the demo made, for people and programs, and lookups in it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::client::ApiClient;
use crate::config::ClientConfig;
use crate::error::Result;

/// `demo.json`: what the demo made, for people and programs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Layout {
    pub dir: PathBuf,
    pub consortium: String,
    pub genesis: PathBuf,
    pub nodes: Vec<DemoNode>,
    pub orgs: Vec<DemoOrg>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DemoNode {
    pub id: u64,
    pub org: String,
    pub api_url: String,
    pub peer_url: String,
    /// The public window (chain head and block headers, no client certificate).
    pub public_url: String,
    /// The operations listener (health probes, metrics; plain HTTP). Empty
    /// when the node's config opens none.
    #[serde(default)]
    pub ops_url: String,
    pub config: PathBuf,
    pub data_dir: PathBuf,
    pub log: PathBuf,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DemoOrg {
    pub name: String,
    pub ca_cert: PathBuf,
    /// Role → certificate, key and a ready `alliance client` config.
    pub identities: BTreeMap<String, DemoIdentity>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DemoIdentity {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_config: PathBuf,
}

impl Layout {
    pub fn index_path(dir: &Path) -> PathBuf {
        dir.join("demo.json")
    }

    /// `demo.env`: shell variables for node 1 and org1's callers, as the
    /// README's examples use them (`. alliance-demo/demo.env`).
    pub fn write_env(&self) -> Result<()> {
        let node = &self.nodes[0];
        let org = self.org(&node.org);
        let dir = self.dir.display().to_string();
        let pem = |role: &str| {
            let id = &org.identities[role];
            format!(
                "--cacert {} --cert {} --key {}",
                org.ca_cert.display(),
                id.cert.display(),
                id.key.display()
            )
        };
        let env = format!(
            "# The demo consortium, for a shell: . {dir}/demo.env\n\
             D={dir}\n\
             # node 1's API, public window (certificate by {name}'s CA) and operations listener\n\
             API={api}\n\
             PUBLIC={public}\n\
             OPS={ops}\n\
             # curl options as {name}'s app and as its admin\n\
             AUTH=\"{app}\"\n\
             ADMIN=\"{admin}\"\n",
            dir = shell_quoted(&dir),
            name = org.name,
            api = node.api_url,
            public = node.public_url,
            ops = node.ops_url,
            app = pem("app"),
            admin = pem("admin"),
        );
        std::fs::write(self.dir.join("demo.env"), env)?;
        Ok(())
    }

    pub fn org(&self, name: &str) -> &DemoOrg {
        self.orgs
            .iter()
            .find(|o| o.name == name)
            .expect("demo org exists")
    }

    /// A client for `org`'s `role` identity, talking to node `node`.
    pub fn client(&self, org: &str, role: &str, node: u64, timeout: Duration) -> Result<ApiClient> {
        self.client_at(org, role, &self.node(node).api_url, timeout)
    }

    /// A client for `org`'s `role` identity, calling `url` (a node's API, or
    /// something in front of it, such as a proxy).
    pub fn client_at(
        &self,
        org: &str,
        role: &str,
        url: &str,
        timeout: Duration,
    ) -> Result<ApiClient> {
        let ident = &self.org(org).identities[role];
        let mut config = ClientConfig::load(&ident.client_config)?;
        config.url = url.to_owned();
        config.timeout_ms = timeout.as_millis() as u64;
        ApiClient::from_config(&config)
    }

    /// The running `alliance node` processes of this consortium on this
    /// machine, by node id: found in `/proc` (Linux) by their command line,
    /// `alliance node --config <the node's config>`.
    pub fn local_node_pids(&self) -> BTreeMap<u64, u32> {
        let mut pids = BTreeMap::new();
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return pids;
        };
        for entry in procs.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse().ok()) else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            let config = args
                .windows(3)
                .find(|w| w[0] == b"node" && w[1] == b"--config")
                .map(|w| w[2]);
            let node = config.and_then(|c| {
                self.nodes
                    .iter()
                    .find(|n| n.config.as_os_str().as_encoded_bytes() == c)
            });
            if let Some(node) = node {
                pids.insert(node.id, pid);
            }
        }
        pids
    }

    pub fn node(&self, id: u64) -> &DemoNode {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .expect("demo node exists")
    }

    /// Every organization's CA certificate.
    pub fn ca_certs(&self) -> Vec<PathBuf> {
        self.orgs.iter().map(|o| o.ca_cert.clone()).collect()
    }
}

/// `s` in single quotes for a POSIX shell.
fn shell_quoted(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}
