//! Node configuration, client configuration and the genesis file (TOML).
//!
//! Everything is validated once, at start, into typed values; a bad field is
//! a clear error naming the field, and the node does not start.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::ledger::gov::{NodeRecord, GOV_ORG, NODES_MAX};
use crate::ledger::{OrgName, Policy, Threshold};

/// Largest config or genesis file read, in bytes: these are small by nature,
/// and a bound keeps a wrong path (a device, a log) from eating memory.
pub const CONFIG_BYTES_MAX: u64 = 4 * 1024 * 1024;

/// A member node's numeric id: its Raft id and its certificate's CN.
pub type NodeId = u64;

/// The founding organizations and nodes of a consortium.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Genesis {
    pub consortium: String,
    /// How many organizations must approve a governance proposal:
    /// `majority` (the default) or a fraction such as `2/3`.
    #[serde(default)]
    pub threshold: Option<String>,
    pub orgs: Vec<GenesisOrg>,
    pub nodes: Vec<GenesisNode>,
    /// SHA-256 of the genesis file, hex: peers must run the same one.
    #[serde(skip)]
    pub hash: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisOrg {
    pub name: OrgName,
    /// The organization's CA certificate, PEM.
    pub ca_cert: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisNode {
    pub id: NodeId,
    pub org: OrgName,
    /// Where apps, partners and admins reach this node.
    pub api_addr: HostPort,
    /// Where peers reach this node.
    pub raft_addr: HostPort,
    /// SHA-256 (hex) of the node's public key (its certificate's
    /// SubjectPublicKeyInfo, DER), if registered: its peers then keep
    /// talking to it past its certificate's expiry, with an alarm, while
    /// it presents a certificate with that key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_sha256: Option<String>,
}

/// A `host:port` address: an IPv4 literal, a bracketed IPv6 literal or a DNS
/// name, and a port 1..=65535. Node certificates need a SAN for the host.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HostPort(String);

impl HostPort {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for HostPort {
    type Error = String;

    fn try_from(s: String) -> std::result::Result<Self, String> {
        let bad = || format!("{s:?} is not host:port");
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let port_ok = !port.starts_with('0') && port.parse::<u16>().is_ok_and(|p| p > 0);
        let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
            None => {
                !host.is_empty()
                    && host.len() <= 253
                    && host
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
            }
        };
        if port_ok && host_ok {
            Ok(Self(s))
        } else {
            Err(bad())
        }
    }
}

impl From<HostPort> for String {
    fn from(h: HostPort) -> Self {
        h.0
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Genesis {
    pub fn load(path: &Path) -> Result<Self> {
        use sha2::Digest;
        let mut genesis: Self = parse_toml(path)?;
        genesis.hash = hex::encode(sha2::Sha256::digest(read_bounded(path, CONFIG_BYTES_MAX)?));
        genesis
            .validate()
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        Ok(genesis)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        if self.orgs.is_empty() || self.nodes.is_empty() {
            return Err("genesis needs at least one org and one node".into());
        }
        if self.nodes.len() > NODES_MAX {
            return Err(format!(
                "genesis lists {} nodes; a consortium runs at most {NODES_MAX}",
                self.nodes.len()
            ));
        }
        if let Some(t) = &self.threshold {
            Threshold::parse(t).map_err(|e| format!("threshold {t:?}: {e}"))?;
        }
        let mut names = BTreeSet::new();
        for org in &self.orgs {
            if !names.insert(&org.name) {
                return Err(format!("org {} is listed twice", org.name));
            }
            if org.name.as_str() == GOV_ORG {
                return Err(format!(
                    "the org name {GOV_ORG} is reserved: corrections are posted by it"
                ));
            }
        }
        let mut ids = BTreeSet::new();
        let mut addrs = BTreeSet::new();
        for node in &self.nodes {
            if node.id == 0 {
                return Err("node id 0 is reserved".into());
            }
            if !ids.insert(node.id) {
                return Err(format!("node {} is listed twice", node.id));
            }
            if !names.contains(&node.org) {
                return Err(format!(
                    "node {} belongs to unknown org {}",
                    node.id, node.org
                ));
            }
            if !addrs.insert(&node.api_addr) || !addrs.insert(&node.raft_addr) {
                return Err(format!("node {} reuses an address", node.id));
            }
            if let Some(key) = &node.key_sha256 {
                if key.len() != 64 || !key.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                    return Err(format!(
                        "node {}'s key_sha256 must be 64 lowercase hex digits (new-genesis.sh \
                         --node-cert writes it)",
                        node.id
                    ));
                }
            }
        }
        Ok(())
    }

    pub fn node(&self, id: NodeId) -> Option<&GenesisNode> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// The genesis file's SHA-256, from which block 0 is derived.
    pub fn hash_bytes(&self) -> [u8; 32] {
        let mut out = [0; 32];
        hex::decode_to_slice(&self.hash, &mut out).expect("genesis hash is 64 hex digits");
        out
    }

    pub fn org_names(&self) -> BTreeSet<OrgName> {
        self.orgs.iter().map(|o| o.name.clone()).collect()
    }

    /// The registry's records of genesis's nodes.
    pub fn node_records(&self) -> Vec<(NodeId, NodeRecord)> {
        (self.nodes.iter())
            .map(|n| {
                let record = NodeRecord {
                    org: n.org.clone(),
                    api_addr: n.api_addr.to_string(),
                    raft_addr: n.raft_addr.to_string(),
                    key_sha256: n.key_sha256.clone(),
                    removed: false,
                    since_height: 0,
                };
                (n.id, record)
            })
            .collect()
    }

    /// The governance policy genesis sets.
    pub fn policy(&self) -> Policy {
        Policy {
            threshold: (self.threshold.as_deref())
                .and_then(|t| Threshold::parse(t).ok())
                .unwrap_or(Threshold::Majority),
            ..Policy::default()
        }
    }
}

/// What a node added by vote starts from besides genesis: the vote's
/// registry (`alliance client gov join-bundle ID` writes it), so that it
/// knows the members' CAs and nodes before it has caught up.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinBundle {
    pub genesis_hash: String,
    /// The proposal that added the node.
    pub proposal: u64,
    pub node: NodeId,
    /// The member organizations (not removed ones) and their CAs (PEM).
    pub orgs: Vec<(OrgName, Vec<String>)>,
    /// The registry's nodes, the new one included.
    pub nodes: BTreeMap<NodeId, NodeRecord>,
}

impl JoinBundle {
    /// Reads node `id`'s join bundle and checks it is for `genesis`.
    pub fn load(path: &Path, id: NodeId, genesis: &Genesis) -> Result<Self> {
        let bytes = read_bounded(path, CONFIG_BYTES_MAX)?;
        let bad = |e: String| Error::Config(format!("{}: {e}", path.display()));
        let bundle: Self = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
        if bundle.genesis_hash != genesis.hash {
            return Err(bad(format!(
                "the join bundle is for another genesis ({}) than {} ({}): export it from this \
                 consortium",
                bundle.genesis_hash, genesis.hash, genesis.hash
            )));
        }
        if bundle.node != id {
            return Err(bad(format!(
                "the join bundle is for node {}, this config is node {id}",
                bundle.node
            )));
        }
        bundle.me().map_err(bad)?;
        Ok(bundle)
    }

    /// The new node as genesis would list it.
    pub fn me(&self) -> std::result::Result<GenesisNode, String> {
        let n = (self.nodes.get(&self.node))
            .ok_or_else(|| format!("the join bundle does not list node {}", self.node))?;
        Ok(GenesisNode {
            id: self.node,
            org: n.org.clone(),
            api_addr: HostPort::try_from(n.api_addr.clone())?,
            raft_addr: HostPort::try_from(n.raft_addr.clone())?,
            key_sha256: n.key_sha256.clone(),
        })
    }
}

/// Configuration of one member node (`alliance node --config FILE`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's id; must be in genesis and be the CN of `tls.cert`.
    pub id: NodeId,
    /// Where sled keeps the Raft log and the ledger. Created if missing.
    pub data_dir: PathBuf,
    pub genesis: PathBuf,
    pub tls: TlsFiles,
    /// Address to bind the API listener to; default: this node's genesis
    /// `api_addr` (set it to e.g. `0.0.0.0:7101` behind NAT).
    #[serde(default)]
    pub api_listen: Option<HostPort>,
    /// Address to bind the peer listener to; default: genesis `raft_addr`.
    #[serde(default)]
    pub raft_listen: Option<HostPort>,
    /// The public window: chain head and block headers for anyone, with
    /// server-only TLS. Off unless set.
    #[serde(default)]
    pub public_addr: Option<HostPort>,
    /// The operations listener: health probes (`/livez`, `/readyz`) and
    /// `/metrics` for a load balancer, an orchestrator or Prometheus; plain
    /// HTTP with no client certificate. They reveal no ledger data; bind it
    /// to loopback or a private interface. Off unless set.
    #[serde(default)]
    pub ops_addr: Option<HostPort>,
    /// For a node added by vote (not in genesis): the join bundle its
    /// organization's admin exported (`alliance client gov join-bundle`).
    #[serde(default)]
    pub join: Option<PathBuf>,
    /// Reach these peers at another address than their genesis `raft_addr`
    /// (a NAT, a tunnel, a TCP proxy). The peer is still verified by its
    /// certificate, so the address must be covered by its SAN.
    #[serde(default)]
    pub peer_dial: Vec<PeerDial>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub raft: RaftTuning,
}

/// One `[[peer_dial]]` entry: dial node `id` at `addr`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerDial {
    pub id: NodeId,
    pub addr: HostPort,
}

/// A certificate chain and its private key, both PEM files.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The default of `limits.memory_soft_limit_mb`: about what a node holds
/// in use through 10 million transfers; a follower catching up on a
/// million at 8 million then held 235-236 MB on average against 256
/// without it (BENCHMARKS.md, "The memory soft limit").
pub const MEMORY_SOFT_LIMIT_MB: u64 = 240;

/// Every input and queue has a limit; past it the caller gets a clear error.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request body accepted on the API listener (413 past it).
    pub body_bytes_max: usize,
    /// Largest body accepted on the peer listener: Raft batches and snapshots.
    pub peer_body_bytes_max: usize,
    /// Bytes of request bodies one organization's callers may have on the
    /// API listener at once, from the first byte read until each is
    /// answered (429 past it).
    pub body_bytes_in_flight_max: usize,
    /// Bytes of bodies one peer node may have on the peer listener at
    /// once, from the first byte read until each is answered (429 past
    /// it).
    pub peer_body_bytes_in_flight_max: usize,
    /// Longest transfer memo, in bytes.
    pub memo_bytes_max: usize,
    /// Most readers one account may grant.
    pub readers_max: usize,
    /// Open client connections per listener worker, those still in their
    /// TLS handshake included; more wait in the accept backlog.
    pub connections_max: usize,
    /// How long a connection may take to finish its TLS handshake before it
    /// is closed: a socket that opens and sends nothing holds a slot no
    /// longer than this.
    pub tls_handshake_timeout_ms: u64,
    /// Connections in their TLS handshake at once, per listener worker;
    /// past it the listener accepts no more until one finishes or times out.
    pub tls_handshakes_max: usize,
    /// Writes proposed and not yet answered; more get 429.
    pub in_flight_proposals_max: usize,
    /// How long a request may take end to end; a proposed write past it is 504.
    pub request_timeout_ms: u64,
    /// Most transfers in one batch (one Raft entry).
    pub batch_transfers_max: usize,
    /// Longest `timeout_ms` a pending transfer may ask for.
    pub pending_timeout_ms_max: u64,
    /// Most items one page of a listing returns.
    pub page_items_max: usize,
    /// How often the leader looks for pending transfers due to expire.
    pub expiry_check_ms: u64,
    /// Requests one client address may make to the public window per minute.
    pub public_requests_per_minute: u32,
    /// Client addresses the public window's rate table remembers.
    pub public_clients_max: usize,
    /// How often a node compares its chain head with each peer's.
    pub head_check_ms: u64,
    /// Most single transfers the leader coalesces into one entry.
    pub group_commit_max: usize,
    /// Groups proposed and not yet committed at once; while all are busy,
    /// arriving writes wait and form the next group.
    pub group_commit_in_flight: usize,
    /// How many committed entries this node may have left to apply and
    /// still answer `/readyz` with 200.
    pub ready_lag_entries_max: u64,
    /// How far ahead of this node's clock an entry from the leader may be
    /// dated: a later-dated one is refused ([`crate::raft::clock`]).
    pub clock_offset_max_ms: u64,
    /// Most ids a node keeps in memory of those it looked up in the
    /// transfer index on disk (for entries that named them), for the
    /// entries after: a re-send or a post soon after needs no disk read.
    /// The newest ids stay in memory until they are written to a run.
    pub transfer_index_held_max: usize,
    /// Resident memory, in MiB, above which the node has its allocator
    /// purge the freed memory it holds for a while ([`crate::memory`]);
    /// 0: never.
    pub memory_soft_limit_mb: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            // Room for a full batch: 8190 transfers of ~300 bytes.
            body_bytes_max: 4 * 1024 * 1024,
            peer_body_bytes_max: 256 * 1024 * 1024,
            // Room for 32 full batches at once.
            body_bytes_in_flight_max: 128 * 1024 * 1024,
            // Room for two of the largest peer bodies at once.
            peer_body_bytes_in_flight_max: 512 * 1024 * 1024,
            memo_bytes_max: 512,
            readers_max: 64,
            // Room for thousands of sockets that never finish a handshake
            // (each is closed within tls_handshake_timeout_ms) beside the
            // real clients.
            connections_max: 8192,
            tls_handshake_timeout_ms: 1_000,
            tls_handshakes_max: 8192,
            in_flight_proposals_max: 4096,
            request_timeout_ms: 10_000,
            batch_transfers_max: 8190,
            pending_timeout_ms_max: 366 * 24 * 3600 * 1000,
            page_items_max: 1000,
            expiry_check_ms: 100,
            public_requests_per_minute: 120,
            public_clients_max: 10_000,
            head_check_ms: 1_000,
            group_commit_max: 1_000,
            group_commit_in_flight: 2,
            ready_lag_entries_max: 1_000,
            clock_offset_max_ms: 500,
            transfer_index_held_max: crate::raft::state_machine::INDEX_HELD_MAX,
            memory_soft_limit_mb: MEMORY_SOFT_LIMIT_MB,
        }
    }
}

/// Raft timing and log compaction.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftTuning {
    pub heartbeat_interval_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Build a snapshot every this many log entries, the nodes taking
    /// turns ([`crate::raft::turns`]).
    pub snapshot_logs_since_last: u64,
    /// Log entries kept behind the last snapshot for slow followers.
    pub snapshot_logs_kept: u64,
    /// Most log entries in one AppendEntries. An append with entries must
    /// complete within the shortest election timeout less a heartbeat
    /// interval (vendor/README.md, openraft change 4), and an entry may
    /// carry a whole batch (megabytes): a lagging follower sent hundreds of
    /// them at once would time out on every retry and never catch up.
    /// An append also carries at most 2 MiB of entries in all, or its first
    /// entry alone if that is larger
    /// ([`crate::raft::log_store::APPEND_BYTES_MAX`]).
    pub max_payload_entries: u64,
}

impl Default for RaftTuning {
    fn default() -> Self {
        Self {
            heartbeat_interval_ms: 150,
            election_timeout_min_ms: 1000,
            election_timeout_max_ms: 2000,
            snapshot_logs_since_last: 10_000,
            snapshot_logs_kept: 1_000,
            max_payload_entries: 8,
        }
    }
}

impl NodeConfig {
    /// The address to dial peer `id` at, if the config overrides genesis.
    pub fn dial(&self, id: NodeId) -> Option<&HostPort> {
        self.peer_dial.iter().find(|d| d.id == id).map(|d| &d.addr)
    }

    /// Checks what needs the genesis: `peer_dial` names other genesis
    /// nodes, each once.
    pub fn check_against(&self, genesis: &Genesis) -> Result<()> {
        let mut seen = BTreeSet::new();
        for d in &self.peer_dial {
            let why = if d.id == self.id {
                "is this node itself"
            } else if genesis.node(d.id).is_none() {
                "is not in genesis"
            } else if !seen.insert(d.id) {
                "is listed twice"
            } else {
                continue;
            };
            return Err(Error::Config(format!("peer_dial: node {} {why}", d.id)));
        }
        Ok(())
    }

    /// Reads and checks a node config. Relative paths are relative to the
    /// config file's directory.
    pub fn load(path: &Path) -> Result<Self> {
        let mut config: Self = parse_toml(path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [
            &mut config.data_dir,
            &mut config.genesis,
            &mut config.tls.cert,
            &mut config.tls.key,
        ]
        .into_iter()
        .chain(config.join.as_mut())
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        config
            .validate()
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        Ok(config)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        let l = &self.limits;
        let r = &self.raft;
        let checks: [(bool, &str); 25] = [
            (self.id > 0, "id must be positive"),
            ((64..=64 * 1024 * 1024).contains(&l.body_bytes_max), "limits.body_bytes_max must be 64..=67108864"),
            (l.peer_body_bytes_max >= l.body_bytes_max, "limits.peer_body_bytes_max must be >= body_bytes_max"),
            (l.body_bytes_in_flight_max >= l.body_bytes_max, "limits.body_bytes_in_flight_max must be >= body_bytes_max"),
            (l.peer_body_bytes_in_flight_max >= l.peer_body_bytes_max, "limits.peer_body_bytes_in_flight_max must be >= peer_body_bytes_max"),
            (l.memo_bytes_max <= 64 * 1024, "limits.memo_bytes_max must be <= 65536"),
            (l.connections_max > 0 && l.in_flight_proposals_max > 0, "limits.*_max must be positive"),
            ((100..=600_000).contains(&l.request_timeout_ms), "limits.request_timeout_ms must be 100..=600000"),
            ((100..=60_000).contains(&l.tls_handshake_timeout_ms), "limits.tls_handshake_timeout_ms must be 100..=60000"),
            ((1..=1_000_000).contains(&l.tls_handshakes_max), "limits.tls_handshakes_max must be 1..=1000000"),
            (r.heartbeat_interval_ms >= 10, "raft.heartbeat_interval_ms must be >= 10"),
            (
                r.heartbeat_interval_ms < r.election_timeout_min_ms
                    && r.election_timeout_min_ms < r.election_timeout_max_ms,
                "raft: need heartbeat_interval_ms < election_timeout_min_ms < election_timeout_max_ms",
            ),
            (r.snapshot_logs_since_last > 0, "raft.snapshot_logs_since_last must be positive"),
            ((1..=10_000).contains(&r.max_payload_entries), "raft.max_payload_entries must be 1..=10000"),
            ((1..=100_000).contains(&l.batch_transfers_max), "limits.batch_transfers_max must be 1..=100000"),
            ((1..=10_000).contains(&l.page_items_max), "limits.page_items_max must be 1..=10000"),
            ((10..=60_000).contains(&l.expiry_check_ms), "limits.expiry_check_ms must be 10..=60000"),
            ((1..=1_000_000).contains(&l.public_requests_per_minute), "limits.public_requests_per_minute must be 1..=1000000"),
            ((1..=1_000_000).contains(&l.public_clients_max), "limits.public_clients_max must be 1..=1000000"),
            ((100..=600_000).contains(&l.head_check_ms), "limits.head_check_ms must be 100..=600000"),
            ((1..=1_000_000_000).contains(&l.ready_lag_entries_max), "limits.ready_lag_entries_max must be 1..=1000000000"),
            ((10..=60_000).contains(&l.clock_offset_max_ms), "limits.clock_offset_max_ms must be 10..=60000"),
            (l.transfer_index_held_max <= 100_000_000, "limits.transfer_index_held_max must be 0..=100000000"),
            (l.memory_soft_limit_mb <= 1 << 20, "limits.memory_soft_limit_mb must be 0..=1048576 (0: no limit)"),
            (
                (1..=l.batch_transfers_max).contains(&l.group_commit_max) && (1..=64).contains(&l.group_commit_in_flight),
                "limits.group_commit_max must be 1..=batch_transfers_max and group_commit_in_flight 1..=64",
            ),
        ];
        match checks.iter().find(|(ok, _)| !ok) {
            Some((_, why)) => Err((*why).to_owned()),
            None => Ok(()),
        }
    }
}

/// Configuration of `alliance client`: whom to call and with which identity.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// The node's API URL, `https://host:port`.
    pub url: String,
    /// PEM file(s) of the CA certificates to trust for the server.
    pub ca_certs: Vec<PathBuf>,
    pub tls: TlsFiles,
    #[serde(default = "default_client_timeout_ms")]
    pub timeout_ms: u64,
    /// The consortium's genesis hash (64 hex digits, `genesis_hash` of
    /// `GET /v1/cluster`), which every signed write names. Set, the client
    /// signs for this consortium only, whatever a node says; unset, it asks
    /// the node it calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub genesis_hash: Option<String>,
}

fn default_client_timeout_ms() -> u64 {
    15_000
}

impl ClientConfig {
    pub fn load(path: &Path) -> Result<Self> {
        let mut config: Self = parse_toml(path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        let paths = config
            .ca_certs
            .iter_mut()
            .chain([&mut config.tls.cert, &mut config.tls.key]);
        for p in paths {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        if !config.url.starts_with("https://") {
            return Err(Error::Config(format!(
                "{}: url must start with https://",
                path.display()
            )));
        }
        let hex64 = |h: &String| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit());
        if config.genesis_hash.as_ref().is_some_and(|h| !hex64(h)) {
            return Err(Error::Config(format!(
                "{}: genesis_hash must be 64 hex digits (genesis_hash of GET /v1/cluster)",
                path.display()
            )));
        }
        Ok(config)
    }
}

/// Reads a bounded file.
pub fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let file =
        std::fs::File::open(path).map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
    if bytes.len() as u64 > max {
        return Err(Error::Config(format!(
            "{}: larger than {max} bytes",
            path.display()
        )));
    }
    Ok(bytes)
}

fn parse_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = read_bounded(path, CONFIG_BYTES_MAX)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| Error::Config(format!("{}: not UTF-8", path.display())))?;
    toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn genesis() -> Genesis {
        toml::from_str(
            r#"
            consortium = "c"
            [[orgs]]
            name = "org1"
            ca_cert = ""
            [[nodes]]
            id = 1
            org = "org1"
            api_addr = "127.0.0.1:7001"
            raft_addr = "127.0.0.1:7002"
            [[nodes]]
            id = 2
            org = "org1"
            api_addr = "127.0.0.1:7003"
            raft_addr = "127.0.0.1:7004"
            "#,
        )
        .unwrap()
    }

    fn config(peer_dial: &str) -> std::result::Result<NodeConfig, String> {
        let text = format!(
            "id = 1\ndata_dir = \"d\"\ngenesis = \"g\"\n[tls]\ncert = \"c\"\nkey = \"k\"\n{peer_dial}"
        );
        let config: NodeConfig = toml::from_str(&text).map_err(|e| e.to_string())?;
        config
            .check_against(&genesis())
            .map_err(|e| e.to_string())?;
        Ok(config)
    }

    #[test]
    fn a_genesis_of_more_nodes_than_a_consortium_runs_is_refused() {
        let mut g = genesis();
        let node = g.nodes[0].clone();
        let nodes = (1..=NODES_MAX as u64).map(|id| GenesisNode {
            id,
            api_addr: HostPort(format!("127.0.0.1:{}", 10_000 + 2 * id)),
            raft_addr: HostPort(format!("127.0.0.1:{}", 10_001 + 2 * id)),
            ..node.clone()
        });
        g.nodes = nodes.collect();
        assert_eq!(g.validate(), Ok(()));
        let mut one_more = g.nodes[0].clone();
        (one_more.id, one_more.api_addr, one_more.raft_addr) =
            (99, HostPort("h:1".into()), HostPort("h:2".into()));
        g.nodes.push(one_more);
        let err = g.validate().unwrap_err();
        assert_eq!(err, "genesis lists 65 nodes; a consortium runs at most 64");
    }

    #[test]
    fn peer_dial_overrides_one_peer_and_refuses_nonsense() {
        let ok = config("[[peer_dial]]\nid = 2\naddr = \"10.0.0.9:443\"").unwrap();
        assert_eq!(ok.dial(2).map(HostPort::as_str), Some("10.0.0.9:443"));
        assert_eq!(ok.dial(3), None);
        assert!(config("").unwrap().peer_dial.is_empty());
        for (bad, why) in [
            ("[[peer_dial]]\nid = 1\naddr = \"h:1\"", "itself"),
            ("[[peer_dial]]\nid = 9\naddr = \"h:1\"", "not in genesis"),
            (
                "[[peer_dial]]\nid = 2\naddr = \"h:1\"\n[[peer_dial]]\nid = 2\naddr = \"h:2\"",
                "twice",
            ),
            ("[[peer_dial]]\nid = 2\naddr = \"h\"", "not host:port"),
            ("[[peer_dial]]\nid = 2\naddr = \"h:0\"", "not host:port"),
            ("[[peer_dial]]\nid = -2\naddr = \"h:1\"", "invalid value"),
            ("[[peer_dial]]\nid = 2", "missing field `addr`"),
            (
                "[[peer_dial]]\nid = 2\naddr = \"h:1\"\nport = 3",
                "unknown field",
            ),
        ] {
            let err = config(bad).unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }

    #[test]
    fn the_operations_listener_and_its_readiness_limit_are_checked() {
        let with_ops = |addr: &str| {
            let text = format!(
                "id = 1\ndata_dir = \"d\"\ngenesis = \"g\"\nops_addr = \"{addr}\"\n\
                 [tls]\ncert = \"c\"\nkey = \"k\"\n"
            );
            toml::from_str::<NodeConfig>(&text).map_err(|e| e.to_string())
        };
        let ok = with_ops("127.0.0.1:7401").unwrap();
        assert_eq!(
            ok.ops_addr.as_ref().map(HostPort::as_str),
            Some("127.0.0.1:7401")
        );
        assert_eq!(ok.limits.ready_lag_entries_max, 1_000);
        assert!(config("").unwrap().ops_addr.is_none(), "off unless set");
        let err = with_ops("127.0.0.1").unwrap_err();
        assert!(err.contains("not host:port"), "{err}");
        for bad in ["0", "1000000001"] {
            let mut c = config(&format!("[limits]\nready_lag_entries_max = {bad}")).unwrap();
            let err = c.validate().unwrap_err();
            assert!(err.contains("limits.ready_lag_entries_max"), "{bad}: {err}");
            c.limits.ready_lag_entries_max = 1;
            assert_eq!(c.validate(), Ok(()));
        }
    }

    #[test]
    fn the_transfer_index_bound_is_checked() {
        assert_eq!(config("").unwrap().limits.transfer_index_held_max, 100_000);
        let mut c = config("[limits]\ntransfer_index_held_max = 100000001").unwrap();
        let err = c.validate().unwrap_err();
        assert!(err.contains("limits.transfer_index_held_max"), "{err}");
        c.limits.transfer_index_held_max = 0;
        assert_eq!(c.validate(), Ok(()));
        let err = config("[limits]\ntransfer_index_held_max = -1").unwrap_err();
        assert!(err.contains("transfer_index_held_max"), "{err}");
    }

    #[test]
    fn the_memory_soft_limit_is_checked() {
        assert_eq!(config("").unwrap().limits.memory_soft_limit_mb, 240);
        let mut c = config("[limits]\nmemory_soft_limit_mb = 1048577").unwrap();
        let err = c.validate().unwrap_err();
        assert!(
            err.contains("limits.memory_soft_limit_mb must be 0..=1048576"),
            "{err}"
        );
        for fine in [0, 1, 1 << 20] {
            c.limits.memory_soft_limit_mb = fine;
            assert_eq!(c.validate(), Ok(()), "{fine}");
        }
        for bad in ["-1", "\"240MB\"", "2.5"] {
            let err = config(&format!("[limits]\nmemory_soft_limit_mb = {bad}")).unwrap_err();
            // toml points at the value and says what it expected.
            let said = err.contains(&format!("memory_soft_limit_mb = {bad}"));
            assert!(said && err.contains("expected u64"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_clock_offset_bound_is_checked() {
        assert_eq!(config("").unwrap().limits.clock_offset_max_ms, 500);
        for bad in ["0", "9", "60001"] {
            let mut c = config(&format!("[limits]\nclock_offset_max_ms = {bad}")).unwrap();
            let err = c.validate().unwrap_err();
            assert!(err.contains("limits.clock_offset_max_ms"), "{bad}: {err}");
            c.limits.clock_offset_max_ms = 10;
            assert_eq!(c.validate(), Ok(()));
        }
    }

    #[test]
    fn the_tls_handshake_deadline_and_cap_are_checked() {
        let defaults = config("").unwrap();
        assert_eq!(defaults.limits.tls_handshake_timeout_ms, 1_000);
        assert_eq!(defaults.limits.tls_handshakes_max, 8_192);
        for (field, bad) in [
            ("tls_handshake_timeout_ms", "0"),
            ("tls_handshake_timeout_ms", "99"),
            ("tls_handshake_timeout_ms", "60001"),
            ("tls_handshakes_max", "0"),
            ("tls_handshakes_max", "1000001"),
        ] {
            let c = config(&format!("[limits]\n{field} = {bad}")).unwrap();
            let err = c.validate().unwrap_err();
            assert!(
                err.contains(&format!("limits.{field}")),
                "{field} = {bad}: {err}"
            );
        }
        let err = config("[limits]\ntls_handshake_timeout_ms = -1").unwrap_err();
        assert!(err.contains("tls_handshake_timeout_ms"), "{err}");
    }

    #[test]
    fn a_client_config_pins_a_well_formed_genesis_hash_or_none() {
        let dir = tempfile::tempdir().unwrap();
        let load = |extra: &str| {
            let path = dir.path().join("client.toml");
            let text = format!(
                "url = \"https://127.0.0.1:7101\"\nca_certs = []\n{extra}\n\
                 [tls]\ncert = \"c\"\nkey = \"k\"\n"
            );
            std::fs::write(&path, text).unwrap();
            ClientConfig::load(&path).map_err(|e| e.to_string())
        };
        assert_eq!(load("").unwrap().genesis_hash, None);
        let hash = "ab".repeat(32);
        let pinned = load(&format!("genesis_hash = \"{hash}\"")).unwrap();
        assert_eq!(pinned.genesis_hash.as_deref(), Some(hash.as_str()));
        for bad in ["ab", "zz".repeat(32).as_str(), ""] {
            let err = load(&format!("genesis_hash = \"{bad}\"")).unwrap_err();
            assert!(
                err.contains("genesis_hash must be 64 hex digits"),
                "{bad}: {err}"
            );
        }
    }
}
