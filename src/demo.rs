//! `alliance demo`: a whole consortium on this machine in one command.
//!
//! [`prepare`] makes, under a directory, one organization per node with its
//! CA and one certificate per role (by running our own `scripts/`, embedded in
//! the binary), the genesis file, one config per node, one client config per
//! organization and role, and `demo.json`, an index of all of it. Running it
//! again on the same directory reuses what is there, so the consortium and its
//! data resume. The integration tests build their clusters with it too.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::client::ApiClient;
use crate::config::{ClientConfig, HostPort, Limits, NodeConfig, RaftTuning, TlsFiles};
use crate::error::{Error, Result};

/// The admin scripts, embedded so the demo works from any directory.
pub const SCRIPTS: [(&str, &str); 3] = [
    ("new-org.sh", include_str!("../scripts/new-org.sh")),
    ("issue-cert.sh", include_str!("../scripts/issue-cert.sh")),
    ("new-genesis.sh", include_str!("../scripts/new-genesis.sh")),
];

/// Roles that get a client certificate in every demo organization.
pub const CLIENT_ROLES: [&str; 3] = ["app", "partner", "admin"];

/// Most nodes `alliance demo` will start: one per organization on one machine.
pub const DEMO_NODES_MAX: usize = 9;

/// How long the demo waits for a leader.
const LEADER_WAIT: Duration = Duration::from_secs(60);

/// What to make.
#[derive(Clone, Debug)]
pub struct Options {
    pub nodes: usize,
    pub raft: RaftTuning,
    pub limits: Limits,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            nodes: 3,
            raft: RaftTuning::default(),
            limits: Limits::default(),
        }
    }
}

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

fn write_node_config(
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

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Writes the embedded scripts under `dir/scripts` and returns that folder.
pub fn write_scripts(dir: &Path) -> Result<PathBuf> {
    let scripts = dir.join("scripts");
    std::fs::create_dir_all(&scripts)?;
    for (name, text) in SCRIPTS {
        std::fs::write(scripts.join(name), text)?;
    }
    Ok(scripts)
}

/// Runs one of our scripts with `sh`; its stderr is shown on failure.
pub fn run_script(scripts: &Path, name: &str, args: &[&str]) -> Result<String> {
    let out = Command::new("sh")
        .arg(scripts.join(name))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Other(format!("running {name}: {e} (is `sh` installed?)")))?;
    if !out.status.success() {
        return Err(Error::Other(format!(
            "{name} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Lowest port handed out; below it are well-known and registered services.
const PORT_MIN: u16 = 10_000;

/// `n` ports free on loopback now, chosen below the kernel's ephemeral
/// range: ports in that range are also handed out as the source ports of
/// outgoing connections, and one could be taken between this check and the
/// node's bind. Another process could still take one; the node then stops
/// with a clear bind error.
pub fn free_ports(n: usize) -> Result<Vec<SocketAddr>> {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .next()
                .and_then(|p| p.parse::<u16>().ok())
        })
        .unwrap_or(32_768)
        .max(PORT_MIN + 1_000);
    let span = u32::from(ephemeral_low - PORT_MIN);
    // A start that differs between processes and calls, so that clusters
    // made at the same moment do not try the same ports first.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
        ^ std::process::id().wrapping_mul(2_654_435_761);
    // The ports are free when found but released on return, and the nodes
    // bind them only seconds later (after certificates and genesis): a
    // second consortium made in this process meanwhile must not be handed
    // the same ones. (Another process can still race for them.)
    static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
    let mut found = Vec::with_capacity(n);
    for k in 0..span {
        if found.len() == n {
            break;
        }
        let port = PORT_MIN + ((seed.wrapping_add(k.wrapping_mul(7_919))) % span) as u16;
        if handed_out.contains(&port) {
            continue;
        }
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
            found.push(l);
        }
    }
    for l in &found {
        if let Ok(addr) = l.local_addr() {
            handed_out.insert(addr.port());
        }
    }
    if found.len() < n {
        return Err(Error::Other(format!(
            "found only {} free ports below {ephemeral_low}",
            found.len()
        )));
    }
    found
        .iter()
        .map(|l| l.local_addr().map_err(Error::from))
        .collect()
}

/// Starts a node process of this binary, logging to the node's log file.
pub fn spawn_node(exe: &Path, node: &DemoNode) -> Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&node.log)?;
    Command::new(exe)
        .args(["node", "--config"])
        .arg(&node.config)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .map_err(Error::from)
}

/// Asks a process to stop (SIGTERM) and waits up to `grace` before SIGKILL.
pub fn stop_child(child: &mut Child, grace: Duration) {
    let _ = Command::new("sh")
        .args(["-c", &format!("kill -TERM {}", child.id())])
        .status();
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Waits until `client`'s node reports a leader; returns its id.
pub async fn wait_for_leader(client: &ApiClient, within: Duration) -> Result<u64> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(r) = client.cluster().await {
            if let Some(leader) = r.body["leader"].as_u64() {
                return Ok(leader);
            }
        }
        if Instant::now() > deadline {
            return Err(Error::Other(format!("no leader within {within:?}")));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `alliance demo`.
pub async fn run(dir: &Path, opts: &Options, exit: bool) -> Result<()> {
    let started = Instant::now();
    let layout = prepare(dir, opts)?;
    let exe = std::env::current_exe()?;
    let mut children = Vec::new();
    for node in &layout.nodes {
        children.push(spawn_node(&exe, node)?);
    }
    let result = async {
        let first = layout.nodes[0].id;
        let status = layout.client(&layout.nodes[0].org, "app", first, Duration::from_secs(5))?;
        let leader = wait_for_leader(&status, LEADER_WAIT).await?;
        let balances = scenario(&layout).await?;
        print_summary(&layout, leader, started.elapsed());
        println!("\nBalances (minor units, read linearizably by each owner):");
        for (account, balance) in balances {
            println!("  {account:<16} {balance}");
        }
        if !exit {
            println!("Ctrl-C stops the consortium; the same command resumes it.");
            wait_for_stop(&mut children).await;
        }
        Ok::<_, Error>(())
    }
    .await;
    for child in &mut children {
        stop_child(child, Duration::from_secs(10));
    }
    result
}

/// Until Ctrl-C or SIGTERM (a supervisor's stop must not orphan the nodes),
/// or until a node exits by itself.
async fn wait_for_stop(children: &mut [Child]) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("install a SIGTERM handler");
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return,
            _ = term.recv() => return,
            _ = tick.tick() => {
                for c in children.iter_mut() {
                    if let Ok(Some(status)) = c.try_wait() {
                        eprintln!("a node (pid {}) exited ({status}); stopping the demo", c.id());
                        return;
                    }
                }
            }
        }
    }
}

/// A short, re-runnable scenario: accounts, an issuance and two transfers.
/// Fixed ids make it idempotent, so a resumed demo runs it again harmlessly.
async fn scenario(layout: &Layout) -> Result<Vec<(String, String)>> {
    let timeout = Duration::from_secs(15);
    let orgs: Vec<&str> = layout.orgs.iter().map(|o| o.name.as_str()).collect();
    let node_of = |org: &str| {
        layout
            .nodes
            .iter()
            .find(|n| n.org == org)
            .expect("node per org")
            .id
    };
    let first = orgs[0];
    let admin = layout.client(first, "admin", node_of(first), timeout)?;
    let treasury = format!("{first}.treasury");
    until_ok("create treasury", || {
        admin.create_account(&treasury, "USD", true, &[])
    })
    .await?;
    for (i, org) in orgs.iter().enumerate() {
        let org_admin = layout.client(org, "admin", node_of(org), timeout)?;
        // The next organization may read this account (granting is an admin's).
        let readers: Vec<String> = orgs.get(i + 1).map(|o| o.to_string()).into_iter().collect();
        let account = format!("{org}.ops");
        until_ok("create account", || {
            org_admin.create_account(&account, "USD", false, &readers)
        })
        .await?;
    }
    let ops = format!("{first}.ops");
    until_ok("issue", || {
        admin.transfer("demo-issue-1", &treasury, &ops, 1_000_000)
    })
    .await?;
    let app = layout.client(first, "app", node_of(first), timeout)?;
    for (n, org) in orgs.iter().enumerate().skip(1) {
        let id = format!("demo-pay-{n}");
        let to = format!("{org}.ops");
        until_ok("transfer", || {
            app.transfer(&id, &ops, &to, 25_000 * n as u64)
        })
        .await?;
    }
    let mut balances = Vec::new();
    for org in &orgs {
        let owner = layout.client(org, "app", node_of(org), timeout)?;
        let account = format!("{org}.ops");
        let r = until_ok(&format!("read {account}"), || {
            owner.account(&account, false)
        })
        .await?;
        balances.push((
            account,
            r.body["balance"].as_str().unwrap_or("?").to_owned(),
        ));
    }
    Ok(balances)
}

/// How long the scenario re-sends a step that failed for a passing reason,
/// and how long it pauses between two sends.
const STEP_WAIT: Duration = Duration::from_secs(60);
const STEP_PAUSE: Duration = Duration::from_millis(200);

/// Runs `step` until it succeeds. A transport error, a 503 or a 504 (no
/// leader yet, a leader change, a timeout on a busy machine) is tried again
/// every [`STEP_PAUSE`] for up to [`STEP_WAIT`]: the scenario's ids are fixed, so a
/// re-sent step is answered as the first was. Any other answer is final.
async fn until_ok<F, Fut>(what: &str, mut step: F) -> Result<crate::client::Response>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<crate::client::Response, reqwest::Error>>,
{
    let deadline = Instant::now() + STEP_WAIT;
    loop {
        let failure = match step().await {
            Ok(r) if r.is_success() => return Ok(r),
            Ok(r) if !matches!(r.status, 503 | 504) => {
                return Err(Error::Other(format!("{what}: {} {}", r.status, r.body)))
            }
            Ok(r) => format!("{what}: {} {}", r.status, r.body),
            Err(e) => format!("{what}: {e}"),
        };
        if Instant::now() >= deadline {
            return Err(Error::Other(failure));
        }
        tokio::time::sleep(STEP_PAUSE).await;
    }
}

fn print_summary(layout: &Layout, leader: u64, elapsed: Duration) {
    println!(
        "alliance demo: consortium \"{}\" is up in {:.1}s under {}",
        layout.consortium,
        elapsed.as_secs_f64(),
        layout.dir.display()
    );
    for n in &layout.nodes {
        let tag = if n.id == leader { "  (leader)" } else { "" };
        println!(
            "  node {} ({})  api {}  peer {}  public {}  log {}{tag}",
            n.id,
            n.org,
            n.api_url,
            n.peer_url,
            n.public_url,
            n.log.display()
        );
    }
    let org1 = layout.org(&layout.nodes[0].org);
    let app = &org1.identities["app"];
    let curl = format!(
        "curl -sS --cacert {} --cert {} --key {}",
        org1.ca_cert.display(),
        app.cert.display(),
        app.key.display()
    );
    let url = &layout.nodes[0].api_url;
    println!(
        "\nTry it (as {}'s app, against node {}):",
        org1.name, layout.nodes[0].id
    );
    println!("  {curl} {url}/v1/accounts/{}.ops", org1.name);
    if let Some(other) = layout.orgs.get(1) {
        println!(
            "  {curl} -H 'content-type: application/json' -d '{{\"id\":\"my-first-transfer\",\"debit_account\":\"{}.ops\",\"credit_account\":\"{}.ops\",\"amount\":\"100\"}}' {url}/v1/transfers",
            org1.name, other.name
        );
    }
    println!("  {curl} {url}/v1/cluster");
    println!(
        "  curl -sS --cacert {} {}/public/v1/head      # the public window: no client certificate",
        org1.ca_cert.display(),
        layout.nodes[0].public_url
    );
    println!(
        "  alliance client --config {} balance {}.ops",
        app.client_config.display(),
        org1.name
    );
    println!(
        "Everything made is listed in {}",
        Layout::index_path(&layout.dir).display()
    );
}
