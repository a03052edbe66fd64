//! The one cluster harness of the integration tests: real `alliance node`
//! processes on loopback ports, certificates made by our scripts (through
//! `demo::prepare`), sled data in a temporary directory. Every peer link and
//! every client link runs through a [`Net`] of TCP proxies that the test
//! controls; nodes can be killed, paused and restarted on their old data.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use alliance::client::{ApiClient, Response};
use alliance::config::{HostPort, NodeConfig, PeerDial, RaftTuning};

use alliance::demo::{self, Layout, Options};

use crate::proxy::Net;

/// Deadline for anything the cluster should do by itself (elections,
/// catch-up, restarts). Generous: CI runs debug builds on two cores.
pub const DEADLINE: Duration = Duration::from_secs(60);
/// Per-request timeout of test clients.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

pub struct Cluster {
    pub layout: Layout,
    pub net: Net,
    nodes: BTreeMap<u64, Child>,
    /// Environment variables every node starts with (`{id}` in a value
    /// stands for the node's id).
    env: Vec<(String, String)>,
    _dir: tempfile::TempDir,
}

/// Raft tuned to snapshot every 10 entries and keep no log behind a
/// snapshot: a follower left behind catches up only by snapshot.
pub fn snapshot_often() -> Options {
    options(RaftTuning {
        snapshot_logs_since_last: 10,
        snapshot_logs_kept: 0,
        ..RaftTuning::default()
    })
}

pub fn options(raft: RaftTuning) -> Options {
    Options {
        nodes: 3,
        raft,
        ..Options::default()
    }
}

impl Cluster {
    /// Three organizations, one node each, with default tuning.
    pub async fn start() -> Self {
        Self::start_with(options(RaftTuning::default())).await
    }

    pub async fn start_with(opts: Options) -> Self {
        Self::start_with_env(opts, Vec::new()).await
    }

    /// [`Self::start_with`], every node with environment variables `env`.
    pub async fn start_with_env(opts: Options, env: Vec<(String, String)>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let layout = demo::prepare(dir.path(), &opts).expect("prepare consortium");
        let net = route_through_proxies(&layout).await;
        let mut cluster = Self {
            layout,
            net,
            nodes: BTreeMap::new(),
            env,
            _dir: dir,
        };
        for id in cluster.ids() {
            cluster.spawn(id);
        }
        let leader = tokio::time::timeout(DEADLINE, cluster.wait_for_leader()).await;
        cluster.assert_alive();
        assert!(leader.is_ok(), "no leader in {DEADLINE:?}");
        cluster
    }

    pub fn ids(&self) -> Vec<u64> {
        self.layout.nodes.iter().map(|n| n.id).collect()
    }

    fn spawn(&mut self, id: u64) {
        let exe = Path::new(env!("CARGO_BIN_EXE_alliance"));
        let env: Vec<(String, String)> = (self.env.iter())
            .map(|(k, v)| (k.clone(), v.replace("{id}", &id.to_string())))
            .collect();
        let child = demo::spawn_node_with_env(exe, self.layout.node(id), &env).expect("spawn node");
        assert!(
            self.nodes.insert(id, child).is_none(),
            "node {id} already running"
        );
    }

    /// SIGKILL: no shutdown, no flush.
    pub fn kill(&mut self, id: u64) {
        let mut child = self.nodes.remove(&id).expect("node is running");
        child.kill().expect("kill");
        child.wait().expect("reap");
    }

    /// Starts a killed node again on its old data.
    pub fn restart(&mut self, id: u64) {
        self.spawn(id);
    }

    /// SIGSTOP: the node is frozen, its sockets stay open.
    pub fn pause(&self, id: u64) {
        self.signal(id, "-STOP");
    }

    /// SIGCONT: a paused node runs on.
    pub fn resume(&self, id: u64) {
        self.signal(id, "-CONT");
    }

    /// Node `id`'s process id.
    pub fn pid(&self, id: u64) -> u32 {
        self.nodes[&id].id()
    }

    fn signal(&self, id: u64, signal: &str) {
        let pid = self.pid(id);
        assert!(send_signal(pid, signal), "kill {signal} {pid} failed");
    }

    /// Waits for node `id` to exit by itself and returns how it exited.
    pub async fn wait_exit(&mut self, id: u64) -> std::process::ExitStatus {
        let child = self.nodes.get_mut(&id).expect("node is running");
        let status = wait_child(&format!("node {id} to exit"), child).await;
        self.nodes.remove(&id);
        status
    }

    pub fn running(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    /// A client for `org`'s `role` certificate, calling node `node` through
    /// its client link.
    pub fn client(&self, org: &str, role: &str, node: u64) -> ApiClient {
        self.client_with_timeout(org, role, node, REQUEST_TIMEOUT)
    }

    pub fn client_with_timeout(
        &self,
        org: &str,
        role: &str,
        node: u64,
        timeout: Duration,
    ) -> ApiClient {
        let url = format!("https://{}", self.net.api_addr(node));
        self.layout
            .client_at(org, role, &url, timeout)
            .expect("client")
    }

    /// The app of organization `orgN` (N = 1, 2, 3), calling node `node`.
    pub fn app(&self, org: usize, node: u64) -> ApiClient {
        self.client(&format!("org{org}"), "app", node)
    }

    pub async fn status(&self, node: u64) -> Option<serde_json::Value> {
        let r = self.app(1, node).cluster().await.ok()?;
        r.is_success().then_some(r.body)
    }

    /// Panics at once (with the node's log) if a node has exited by itself.
    pub fn assert_alive(&mut self) {
        if let Some(exit) = self.unexpected_exits().first() {
            panic!("{exit}");
        }
    }

    /// Nodes that exited by themselves (not killed by the test), each with
    /// its log.
    pub fn unexpected_exits(&mut self) -> Vec<String> {
        let mut exits = Vec::new();
        for (id, child) in &mut self.nodes {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(&self.layout.node(*id).log).unwrap_or_default();
                // The panic first: a long log is often cut where it is shown.
                let panic = panic_lines(&log);
                exits.push(format!(
                    "node {id} exited ({status}) on its own:\n{panic}\n--- its log ---\n{log}"
                ));
            }
        }
        exits
    }

    /// Waits until every running node names the same running leader.
    pub async fn wait_for_leader(&self) -> u64 {
        eventually("a leader that every running node agrees on", || async {
            let mut leaders = Vec::new();
            for id in self.running() {
                leaders.push(self.status(id).await?["leader"].as_u64()?);
            }
            let first = *leaders.first()?;
            (leaders.iter().all(|l| *l == first) && self.nodes.contains_key(&first))
                .then_some(first)
        })
        .await
    }

    /// A plain-HTTP GET of node `id`'s operations listener: status and body
    /// text.
    pub async fn ops_text(&self, id: u64, path: &str) -> Option<(u16, String)> {
        let tls = rustls::ClientConfig::builder_with_provider(alliance::identity::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(std::time::Duration::from_secs(5))
            .build()
            .unwrap();
        let url = format!("{}{path}", self.layout.node(id).ops_url);
        let r = http.get(url).send().await.ok()?;
        Some((r.status().as_u16(), r.text().await.ok()?))
    }

    /// Waits until node `node` has applied the block at `height`.
    pub async fn wait_for_height(&self, node: u64, height: u64) {
        eventually(&format!("node {node} at height {height}"), || async {
            let at = self.status(node).await?["height"].as_u64()?;
            (at >= height).then_some(())
        })
        .await
    }

    /// Creates `org1.treasury` (may go negative), `orgN.ops` for every org,
    /// and issues `issued` into `org1.ops`.
    pub async fn seed(&self, issued: u64) {
        let admin = self.client("org1", "admin", 1);
        ok(admin
            .create_account("org1.treasury", "USD", true, &[])
            .await);
        for org in 1..=self.layout.orgs.len() {
            let readers = vec![format!("org{}", org % self.layout.orgs.len() + 1)];
            ok(self
                .client(&format!("org{org}"), "admin", org as u64)
                .create_account(&format!("org{org}.ops"), "USD", false, &readers)
                .await);
        }
        ok(admin
            .transfer("org1.seed-issue", "org1.treasury", "org1.ops", issued)
            .await);
    }

    /// `account`'s balance read by its owner `org` at `node`.
    pub async fn balance(
        &self,
        org: usize,
        node: u64,
        account: &str,
        local: bool,
    ) -> Option<String> {
        let r = self.app(org, node).account(account, local).await.ok()?;
        r.is_success()
            .then(|| r.body["balance"].as_str().map(str::to_owned))?
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.nodes.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            for node in &self.layout.nodes {
                let log = std::fs::read_to_string(&node.log).unwrap_or_default();
                // What the node learned of its peers, which a busy log's
                // tail may have pushed out.
                let watch = log.lines().filter(|l| l.contains("alliance::api::watch"));
                eprintln!("---- node {} watch log ----", node.id);
                for line in watch.take(40) {
                    eprintln!("{line}");
                }
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!("---- node {} log (last 40 lines) ----", node.id);
                for line in tail.into_iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
    }
}

/// This machine's wall clock, in Unix milliseconds.
pub fn now_ms() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.expect("a clock after 1970").as_millis() as u64
}

/// Polls `check` until it returns `Some`, or panics after [`DEADLINE`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_explained(what, || {
        let checked = check();
        async { checked.await.ok_or_else(String::new) }
    })
    .await
}

/// [`eventually`] for a check that says why it is not there yet: the last
/// reason (unless empty) is in the panic.
pub async fn eventually_explained<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        let why = match check().await {
            Ok(v) => return v,
            Err(why) => why,
        };
        let why = if why.is_empty() {
            why
        } else {
            format!(": {why}")
        };
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}{why}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends `signal` (as `kill` takes it: `-TERM`, `-STOP`, ...) to `pid`;
/// whether it was delivered.
pub fn send_signal(pid: u32, signal: &str) -> bool {
    std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("run kill")
        .success()
}

/// Waits, up to [`DEADLINE`], for `child` to exit; how it exited.
pub async fn wait_child(what: &str, child: &mut std::process::Child) -> std::process::ExitStatus {
    eventually(what, || {
        let exited = child.try_wait().expect("try_wait");
        async move { exited }
    })
    .await
}

/// Unwraps a 2xx response.
pub fn ok(r: Result<Response, reqwest::Error>) -> Response {
    let r = r.expect("an HTTP response");
    assert!(r.is_success(), "expected 2xx, got {} {}", r.status, r.body);
    r
}

/// Sends a transfer until it gets a 2xx, as a real client would: the same id
/// each time, so a retry after an unknown outcome cannot apply it twice.
pub async fn transfer_until_ok(
    client: &ApiClient,
    id: &str,
    from: &str,
    to: &str,
    amount: u64,
) -> Response {
    eventually(&format!("transfer {id} to be acknowledged"), || async {
        let r = client.transfer(id, from, to, amount).await.ok()?;
        match r.status {
            200..=299 => Some(r),
            503 | 504 => None,
            other => panic!("transfer {id}: unexpected {other} {}", r.body),
        }
    })
    .await
}

/// Starts one proxy per link and points every node's config at them: node
/// `i` dials node `j` through its own link `(i, j)`.
async fn route_through_proxies(layout: &Layout) -> Net {
    let addr = |url: &str| -> std::net::SocketAddr {
        let hostport = url.strip_prefix("https://").expect("https URL");
        hostport.parse().expect("a socket address")
    };
    let nodes: Vec<_> = layout
        .nodes
        .iter()
        .map(|n| (n.id, addr(&n.peer_url), addr(&n.api_url)))
        .collect();
    let net = Net::start(&nodes).await;
    for node in &layout.nodes {
        let mut config = NodeConfig::load(&node.config).expect("node config");
        config.peer_dial = layout
            .nodes
            .iter()
            .filter(|other| other.id != node.id)
            .map(|other| PeerDial {
                id: other.id,
                addr: HostPort::try_from(net.peer_addr(node.id, other.id).to_string())
                    .expect("host:port"),
            })
            .collect();
        demo::write_toml(&node.config, &config).expect("write node config");
    }
    net
}

/// The value of the sample `name` (with its labels) in a metrics text.
pub fn sample(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
}

/// Runs the `alliance` binary with `args`: its exit code and what it
/// printed (standard output, then standard error).
pub fn run_cli<S: AsRef<std::ffi::OsStr>>(
    args: impl IntoIterator<Item = S>,
) -> (Option<i32>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_alliance"))
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// Issues node `id` of `org` a certificate with our script, under the
/// consortium's `pki`; the certificate (PEM).
pub fn issue_node_cert(pki: &Path, org: &str, id: u64) -> String {
    issue_node_cert_with(pki, org, id, &[])
}

/// [`issue_node_cert`] with more of the script's options (`--days`, ...).
pub fn issue_node_cert_with(pki: &Path, org: &str, id: u64, more: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/issue-cert.sh");
    let out = std::process::Command::new("sh")
        .arg(script)
        .args([
            "--dir",
            pki.to_str().unwrap(),
            "--org",
            org,
            "--role",
            "node",
        ])
        .args(["--name", &id.to_string()])
        .args(more)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(pki.join(org).join(format!("node-{id}.crt"))).unwrap()
}

/// The lines of a node's log that say why it panicked: each `panicked at`
/// line and the message lines after it, up to the backtrace.
fn panic_lines(log: &str) -> String {
    let mut out = Vec::new();
    let mut lines = log.lines();
    while let Some(line) = lines.next() {
        if line.contains("panicked at") {
            out.push(line);
            out.extend(
                lines
                    .by_ref()
                    .take_while(|l| !l.starts_with("stack backtrace"))
                    .take(20),
            );
        }
    }
    if out.is_empty() {
        "(no panic in its log)".to_string()
    } else {
        out.join("\n")
    }
}

/// `alliance demo --dir DIR`, started as a user starts it, once it says it
/// is up (its standard error in `DIR/demo.stderr`). The consortium is made
/// here first, so that its ports are chosen in this process with every
/// other cluster's (see `demo::free_ports`); the demo resumes it.
pub async fn start_demo(dir: &Path) -> DemoGuard {
    use std::io::BufRead;
    use std::process::{Command, Stdio};

    let layout = alliance::demo::prepare(dir, &Default::default()).unwrap();
    let stderr_path = dir.join("demo.stderr");
    let demo = Command::new(env!("CARGO_BIN_EXE_alliance"))
        .args(["demo", "--dir"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let mut demo = DemoGuard { demo, layout };
    let stdout = demo.demo.stdout.take().unwrap();
    let (up_tx, up_rx) = std::sync::mpsc::channel();
    // Keep reading until EOF, so the demo never writes to a closed pipe.
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("Ctrl-C stops") {
                let _ = up_tx.send(());
            }
        }
    });
    let up = tokio::task::spawn_blocking(move || up_rx.recv_timeout(DEADLINE));
    if up.await.unwrap().is_err() {
        let status = demo.demo.try_wait();
        let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        panic!("the demo did not come up (exit: {status:?}); it wrote:\n{stderr}");
    }
    demo
}

/// The demo of a test, and its nodes: killed if the test ends early, so a
/// failure leaves no processes behind.
pub struct DemoGuard {
    pub demo: std::process::Child,
    pub layout: alliance::demo::Layout,
}

impl Drop for DemoGuard {
    fn drop(&mut self) {
        let _ = self.demo.kill();
        let _ = self.demo.wait();
        for pid in self.layout.local_node_pids().into_values() {
            crate::harness::send_signal(pid, "-KILL");
        }
    }
}
