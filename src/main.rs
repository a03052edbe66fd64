//! `alliance`: command-line entry. Parses arguments and dispatches; no logic.

// The library forbids unsafe code; here only the allocator's one call.
#![deny(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use alliance::client::{ApiClient, Response};
use alliance::config::ClientConfig;
use alliance::{bench, demo, node};

/// mimalloc, because with glibc's malloc a node holds about twice the
/// memory it uses (freed chunks stranded in per-thread arenas) and runs
/// slower.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc returns freed memory to the system this many ms after it is
/// freed. A node frees large buffers all the time (requests and entries of
/// thousands of transfers), so the delay trades memory held for CPU. At 0
/// every page freed is faulted in again by the next entry: 22% of a
/// follower's CPU at batches of 8000, which then run at 75,700-78,400
/// transfers/s (250-256 MB held after a million transfers). At 100 ms:
/// 84,800-90,100 /s, and 276-287 MB two seconds after a million transfers
/// (299-310 MB at once); at 1000 ms 96,000-97,600 /s but 292-318 MB. At
/// 10 ms a node holds more than at 100 ms: a thread
/// seems to return what it freed only when it allocates again, so threads
/// that go idle keep it. mimalloc reads its options when the process
/// starts, so `alliance node` sets this in its environment and runs itself
/// again, unless the operator set it.
///
/// mimalloc also asks for transparent huge pages (2 MiB) for its memory,
/// and a huge page stays resident whole while any part of it is in use.
/// Without them a node held 60-250 MB less at about the same throughput
/// (`scripts/bench-history.sh --millions 3 --snapshot-every 50`, two runs
/// each: largest RSS 326-369 against 403-456 MB after the first million,
/// 530-599 against 687-782 MB after the second; 98,900-103,800 against
/// 99,400-107,100 transfers/s in the first million).
const ALLOCATOR_OPTIONS: &[(&str, &str)] =
    &[("MIMALLOC_PURGE_DELAY", "100"), ("MIMALLOC_ALLOW_THP", "0")];

extern "C" {
    /// mimalloc's collection: with `force`, of the calling thread's heap
    /// and of every arena's freed memory waiting for its purge delay.
    /// Declared as libmimalloc-sys 0.1.49 (the version in Cargo.lock)
    /// declares it under its `extended` feature: `void mi_collect(bool
    /// force)`, which does not unwind.
    fn mi_collect(force: bool);
}

/// Has mimalloc purge the freed memory it holds for its purge delay
/// (`alliance::memory`, for `limits.memory_soft_limit_mb`). alliance's
/// one call into C.
#[allow(unsafe_code)]
fn purge_freed_memory() {
    // SAFETY: the declaration matches the linked mimalloc's (above; Rust's
    // bool is C's), which is linked in as the global allocator. It takes
    // no pointer and leaves every allocation as it is: it collects the
    // calling thread's own heap, and claims each arena's free slices with
    // atomic operations before it purges them, so it runs beside
    // allocations on other threads. It is called from an ordinary thread,
    // never from a signal handler.
    unsafe { mi_collect(true) }
}

/// The allocator options the operator did not set.
fn allocator_options_unset() -> Vec<(&'static str, &'static str)> {
    ALLOCATOR_OPTIONS
        .iter()
        .filter(|(var, _)| std::env::var_os(var).is_none())
        .copied()
        .collect()
}

/// Runs this executable again, as it was called, with the allocator's
/// options `unset` set; returns only if that fails.
fn rerun_with(unset: &[(&str, &str)]) -> std::io::Error {
    use std::os::unix::process::CommandExt;
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return e,
    };
    std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .envs(unset.iter().copied())
        .exec()
}

#[derive(Parser)]
#[command(
    name = "alliance",
    version,
    about = "A private ledger for a consortium of organizations"
)]
struct Cli {
    /// How log lines are written to standard error: `text` (colour only when
    /// standard error is a terminal) or `json` (one object per line, for a
    /// log collector). Which lines: `RUST_LOG`, e.g. `RUST_LOG=debug` or
    /// `RUST_LOG=info,openraft=warn` (default: info for `node`, warn otherwise).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Make and run a local consortium: certificates, genesis, N nodes, sample data.
    Demo {
        /// Where to keep certificates, configs and data; reused on the next run.
        #[arg(long, default_value = "alliance-demo")]
        dir: PathBuf,
        /// Number of organizations (one node each).
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Stop after the sample scenario instead of running until Ctrl-C.
        #[arg(long)]
        exit: bool,
    },
    /// Load a running demo consortium with transfers and report throughput and latency.
    Bench {
        /// The demo's directory (its demo.json says where the nodes are).
        #[arg(long, default_value = "alliance-demo")]
        dir: PathBuf,
        /// The node to send to (e.g. the leader, or a follower).
        #[arg(long, default_value_t = 1)]
        node: u64,
        /// Concurrent clients, each sending one request at a time.
        #[arg(long, default_value_t = 1)]
        clients: usize,
        /// How long to measure, after the warm-up.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// How long to send before measuring (not counted).
        #[arg(long, default_value_t = 2)]
        warmup_seconds: u64,
        /// Transfers per request (1: single transfers; more: batches).
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Stop after sending this many transfers in all, warm-up included
        /// (`--seconds` still bounds the run).
        #[arg(long)]
        transfers: Option<u64>,
        /// Spread transfers uniformly over this many accounts (2..=100000;
        /// 10000 is what TigerBeetle's benchmark uses), instead of one
        /// issuer and one sink.
        #[arg(long)]
        accounts: Option<usize>,
        /// Write each acknowledged request's send time (Unix ms) and
        /// latency (µs) to this file, a line per request (it is replaced).
        #[arg(long)]
        latencies: Option<std::path::PathBuf>,
    },
    /// Recompute the chain (and, on a stopped node's files, every balance)
    /// and report the first mismatch. Exit 0 if all adds up, 1 if not.
    Audit {
        /// Walk the chain through this node's API (with --config's identity).
        #[arg(long, requires = "config", conflicts_with = "data_dir")]
        node: Option<String>,
        /// A client config (identity and trusted CAs) for --node.
        #[arg(long)]
        config: Option<PathBuf>,
        /// A stopped node's data_dir.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Copy a running node's state to FILE (no stop), as an admin of the
    /// node's organization: consistent, and checksummed.
    Backup {
        /// A client config of an admin of the node's organization, calling
        /// that node.
        #[arg(long)]
        config: PathBuf,
        /// The file to write; an existing one is not replaced.
        #[arg(long)]
        out: PathBuf,
    },
    /// Turn a backup into the data directory of a new node (never a node
    /// the consortium has had), which then joins by vote.
    Restore {
        /// The backup file (`alliance backup`).
        #[arg(long)]
        backup: PathBuf,
        /// The new node's config: its id and (empty) data_dir.
        #[arg(long)]
        config: PathBuf,
    },
    /// Check evidence offline, with nothing but the evidence and a hash.
    Verify {
        #[command(subcommand)]
        what: VerifyCmd,
    },
    /// Run one member node.
    Node {
        /// The node's config file (README, "Node configuration").
        #[arg(long)]
        config: PathBuf,
    },
    /// Call a node's API with a member certificate.
    Client {
        /// The client config: node URL, trusted CAs, identity (README,
        /// "Client configuration").
        #[arg(long)]
        config: PathBuf,
        #[command(subcommand)]
        command: ClientCmd,
    },
    /// Print a completion script for a shell, e.g.
    /// `alliance completions bash > /etc/bash_completion.d/alliance`.
    Completions {
        /// The shell the script is for.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), e.g. `alliance man | man -l -`.
    Man,
    /// Print the API's OpenAPI 3.1 description (JSON) with the default
    /// limits, e.g. to generate a client; a node serves its own at
    /// `GET /v1/openapi.json`.
    Openapi,
}

#[derive(Subcommand)]
enum VerifyCmd {
    /// A transfer's inclusion proof (as `alliance client proof` saves it)
    /// against the hash of its block, obtained elsewhere (e.g. the public window).
    Proof {
        file: PathBuf,
        /// The block's hash, 64 hex digits.
        #[arg(long)]
        head: String,
    },
}

#[derive(Subcommand)]
enum ClientCmd {
    /// Create an account owned by your organization.
    Account {
        id: String,
        #[arg(long)]
        asset: String,
        /// Allow the balance to go below zero (admins only: issuance accounts).
        #[arg(long)]
        allow_negative: bool,
        /// An organization allowed to read the account (repeatable; admins).
        #[arg(long = "reader")]
        readers: Vec<String>,
        /// Ceiling on the balance, in minor units.
        #[arg(long)]
        balance_max: Option<String>,
    },
    /// Move an amount from one of your accounts to another account.
    Transfer(TransferArgs),
    /// Show an account's balance and details.
    Balance {
        id: String,
        /// Read this node's own state instead of a linearizable read.
        #[arg(long)]
        local: bool,
        /// The balances as of block H (after its transfers) instead of now.
        #[arg(long, value_name = "H")]
        at_height: Option<u64>,
    },
    /// Show a transfer.
    ShowTransfer { id: String },
    /// Post a pending transfer, for all of it or --amount.
    Post {
        id: String,
        #[arg(long)]
        amount: Option<u64>,
    },
    /// Void a pending transfer, releasing its funds.
    Void { id: String },
    /// Close an account (admins): it takes part in no new transfer.
    Close { id: String },
    /// Set which organizations may read an account (admins).
    Readers {
        id: String,
        #[arg(long = "reader")]
        readers: Vec<String>,
    },
    /// An account's transfers, oldest first, a page at a time.
    History {
        id: String,
        #[arg(long)]
        cursor: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Show the cluster as the node sees it.
    Status,
    /// A transfer's inclusion proof (save it, then `alliance verify proof`).
    Proof { id: String },
    /// A block header with its hash and leaf hashes.
    Block { height: u64 },
    /// Post the transfers of a file in batches (JSON lines, or CSV with a
    /// header: id, debit_account, credit_account, amount[, memo, asset]);
    /// prints progress each second and a summary of refusals. Exit 0 if
    /// none was refused, 1 if some were, 2 if the file is malformed (then
    /// nothing is sent).
    Import {
        file: PathBuf,
        /// Transfers per request (at most the node's batch_transfers_max).
        #[arg(long, default_value_t = 1000)]
        batch: usize,
    },
    /// List accounts visible to you (owned or granted), a page at a time.
    Accounts {
        /// Where to go on: the previous page's `next_cursor`.
        #[arg(long)]
        cursor: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// List block headers, a page at a time.
    Blocks {
        /// Where to go on: the previous page's `next_cursor` (a height).
        #[arg(long)]
        cursor: Option<u64>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Governance: proposals, ballots, revocations, the registry (admins
    /// write; every member reads).
    #[command(subcommand)]
    Gov(GovCmd),
}

#[derive(Subcommand)]
enum GovCmd {
    /// Propose an action; then each organization's admin approves or
    /// rejects it (the proposer too: its approval is not implied).
    #[command(subcommand)]
    Propose(ProposeCmd),
    /// Show proposal ID and its digest, check that the digest is the
    /// action's, then sign an approving ballot.
    Approve { id: u64 },
    /// As approve, with a rejecting ballot.
    Reject { id: u64 },
    /// Show a proposal with its ballots.
    Show { id: u64 },
    /// List proposals, oldest first, a page at a time.
    List {
        /// The proposal id to start from.
        #[arg(long)]
        cursor: Option<u64>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// The member organizations, the policy, revoked certificates and
    /// frozen accounts.
    Registry,
    /// Revoke one of your own organization's certificates at once (no vote).
    Revoke(CertArgs),
    /// As the admin of an organization added by vote, acknowledge joining:
    /// from then on it votes and counts towards the threshold.
    Join,
    /// Write the join bundle of the node that executed proposal ID added:
    /// the new node starts from genesis and this file (`join` in its
    /// config).
    JoinBundle {
        id: u64,
        /// The file to write; an existing one is not replaced.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum ProposeCmd {
    /// Stop every transfer debiting or crediting an account.
    Freeze {
        account: String,
    },
    Unfreeze {
        account: String,
    },
    /// One transfer between any two accounts, posted by `gov` on approval.
    Correction {
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
        /// Amount in minor units (a positive integer).
        #[arg(long)]
        amount: String,
        #[arg(long)]
        memo: Option<String>,
    },
    /// Revoke another organization's certificate.
    Revoke(CertArgs),
    /// Add an organization with its CA certificate(s): it may transact at
    /// once, and votes once its admin runs `gov join`.
    AddOrg {
        name: String,
        /// Its CA certificate (PEM), as scripts/new-org.sh writes it;
        /// repeatable.
        #[arg(long = "ca", required = true)]
        cas: Vec<PathBuf>,
    },
    /// Remove an organization: its certificates are refused, its accounts
    /// frozen, grants to it dropped.
    RemoveOrg {
        name: String,
    },
    /// Trust another CA of an organization (rotation: add the new CA,
    /// reissue certificates, then remove the old CA).
    AddCa {
        org: String,
        /// The CA certificate (PEM).
        #[arg(long = "ca")]
        ca: PathBuf,
    },
    /// Stop trusting a CA of an organization, by the SHA-256 the registry
    /// shows for it (`gov registry`).
    RemoveCa {
        org: String,
        #[arg(long)]
        sha256: String,
    },
    /// Add a node of a member organization: the leader adds it to Raft as
    /// a learner, then as a voter once it has caught up.
    AddNode {
        /// Its id: never used before, the CN of its certificate.
        id: u64,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Replace node OLD by a new node in one vote: the new node joins, and
    /// the leader removes OLD from Raft once the new one votes.
    ReplaceNode {
        /// The node it replaces.
        old: u64,
        /// The new node's id: never used before, the CN of its certificate.
        #[arg(long = "id")]
        id: u64,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Remove a node: the leader removes it from Raft while more than
    /// three voters remain (to replace a node, add the new one first); its
    /// id is never reused.
    RemoveNode {
        id: u64,
    },
    /// Change the threshold and the proposals' time to live.
    Policy {
        /// `majority` or a fraction N/D above one half, e.g. 2/3.
        #[arg(long)]
        threshold: String,
        /// Hours a proposal stays open (1 minute to 1 year).
        #[arg(long, default_value_t = 168)]
        ttl_hours: u64,
    },
}

/// Where a new node is and what it presents.
#[derive(Args)]
struct NodeArgs {
    /// Its organization (a member).
    #[arg(long)]
    org: String,
    /// Where apps reach it, HOST:PORT.
    #[arg(long)]
    api: String,
    /// Where its peers reach it, HOST:PORT.
    #[arg(long)]
    raft: String,
    /// Its node certificate (PEM): the registry pins its public key.
    #[arg(long)]
    cert: PathBuf,
}

impl NodeArgs {
    /// The node as a proposal names it.
    fn json(&self, id: u64) -> alliance::error::Result<serde_json::Value> {
        let pem = alliance::config::read_bounded(&self.cert, 64 * 1024)?;
        let pem = String::from_utf8_lossy(&pem).into_owned();
        Ok(
            serde_json::json!({"id": id, "org": self.org, "api_addr": self.api,
            "raft_addr": self.raft, "cert": pem}),
        )
    }
}

/// A certificate, by its PEM file or by organization and serial.
#[derive(Args)]
struct CertArgs {
    /// The certificate's PEM file (its O and serial are read from it).
    #[arg(long, conflicts_with_all = ["org", "serial"])]
    cert: Option<PathBuf>,
    /// The organization whose CA issued it.
    #[arg(long, requires = "serial")]
    org: Option<String>,
    /// Its serial number in hex (openssl x509 -noout -serial).
    #[arg(long, requires = "org")]
    serial: Option<String>,
}

impl CertArgs {
    fn org_and_serial(&self) -> alliance::error::Result<(String, String)> {
        match (&self.cert, &self.org, &self.serial) {
            (Some(path), _, _) => alliance::client::cert_ref(path),
            (None, Some(org), Some(serial)) => Ok((org.clone(), serial.clone())),
            _ => Err(alliance::error::Error::Other(
                "name the certificate: --cert FILE, or --org ORG --serial HEX".into(),
            )),
        }
    }
}

#[derive(Args)]
struct TransferArgs {
    /// The transfer's id: its idempotency key. Re-sending the same transfer is safe.
    #[arg(long)]
    id: String,
    #[arg(long)]
    from: String,
    #[arg(long)]
    to: String,
    /// Amount in minor units (a positive integer).
    #[arg(long)]
    amount: String,
    #[arg(long)]
    asset: Option<String>,
    #[arg(long)]
    memo: Option<String>,
    /// Reserve the amount now; post or void it later.
    #[arg(long)]
    pending: bool,
    /// With --pending: release the reservation after this many ms.
    #[arg(long)]
    timeout_ms: Option<u64>,
}

fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let unset = allocator_options_unset();
    if matches!(cli.command, Cmd::Node { .. }) && !unset.is_empty() {
        let e = rerun_with(&unset);
        eprintln!("alliance: could not restart with {unset:?} set ({e}); going on without");
    }
    let default_log = if matches!(cli.command, Cmd::Node { .. }) {
        "info"
    } else {
        "warn"
    };
    init_logs(cli.log_format, default_log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("alliance: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(dispatch(cli.command))
}

/// actix-http writes an error line for every connection that ends in an
/// error, a malformed request from anyone included: a flood of them would
/// flood the log. Off unless `RUST_LOG` names `actix_http`.
const PER_CONNECTION_ERRORS: &str = "actix_http::h1::dispatcher=off";

/// Log lines to standard error, filtered by `RUST_LOG` (else `default`).
fn init_logs(format: LogFormat, default: &str) {
    use std::io::IsTerminal;
    let wanted = std::env::var("RUST_LOG").ok().filter(|v| !v.is_empty());
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    if !wanted.is_some_and(|v| v.contains("actix_http")) {
        filter = filter.add_directive(PER_CONNECTION_ERRORS.parse().expect("a valid directive"));
    }
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().init(),
    }
}

async fn dispatch(cmd: Cmd) -> ExitCode {
    let result = match cmd {
        Cmd::Demo { dir, nodes, exit } => {
            let opts = demo::Options {
                nodes,
                ..Default::default()
            };
            demo::run(&dir, &opts, exit)
                .await
                .map(|_| ExitCode::SUCCESS)
        }
        Cmd::Node { config } => {
            (node::run(&config, purge_freed_memory).await).map(|_| ExitCode::SUCCESS)
        }
        Cmd::Bench {
            dir,
            node,
            clients,
            seconds,
            warmup_seconds,
            batch,
            transfers,
            accounts,
            latencies,
        } => {
            let opts = bench::Options {
                node,
                clients,
                duration: std::time::Duration::from_secs(seconds),
                warmup: std::time::Duration::from_secs(warmup_seconds),
                batch,
                transfers,
                accounts,
                latencies,
            };
            bench::run(&dir, &opts).await.map(|_| ExitCode::SUCCESS)
        }
        Cmd::Client { config, command } => client(&config, command).await,
        Cmd::Audit {
            node,
            config,
            data_dir,
        } => audit(node, config, data_dir).await,
        Cmd::Backup { config, out } => backup(&config, &out).await,
        Cmd::Restore { backup, config } => restore(&backup, &config).await,
        Cmd::Verify {
            what: VerifyCmd::Proof { file, head },
        } => Ok(verify_proof(&file, &head)),
        Cmd::Completions { shell } => {
            let mut cli = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cli, "alliance", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Openapi => {
            let doc = alliance::api::openapi::document(&alliance::config::Limits::default());
            let json = serde_json::to_string_pretty(&doc).expect("JSON values serialize");
            println!("{json}");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Man => {
            let man = clap_mangen::Man::new(<Cli as clap::CommandFactory>::command());
            match man.render(&mut std::io::stdout()) {
                // A reader that stopped early (`alliance man | head`).
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
                written => written
                    .map(|_| ExitCode::SUCCESS)
                    .map_err(alliance::error::Error::from),
            }
        }
    };
    result.unwrap_or_else(|e| {
        eprintln!("alliance: {e}");
        ExitCode::from(2)
    })
}

/// A request that got no answer, as the CLI reports it: what to fix.
async fn no_answer(api: &ApiClient, e: &reqwest::Error) -> alliance::error::Error {
    alliance::error::Error::Other(api.explain(e).await)
}

async fn backup(
    config: &std::path::Path,
    out: &std::path::Path,
) -> alliance::error::Result<ExitCode> {
    let config = ClientConfig::load(config)?;
    let api = ApiClient::from_config(&config)?;
    let backup = match api.backup().await {
        Err(e) => return Err(no_answer(&api, &e).await),
        Ok(Ok(b)) => b,
        Ok(Err(why)) => {
            eprintln!("alliance: backup refused: {why}");
            return Ok(ExitCode::from(1));
        }
    };
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(out)
        .and_then(|mut f| {
            std::io::Write::write_all(&mut f, &backup.to_bytes())?;
            f.sync_all()
        });
    if let Err(e) = written {
        eprintln!(
            "alliance: {}: {e} (an existing file is not replaced)",
            out.display()
        );
        return Ok(ExitCode::from(1));
    }
    println!("{}: {}", out.display(), backup.describe());
    Ok(ExitCode::SUCCESS)
}

async fn restore(
    file: &std::path::Path,
    config: &std::path::Path,
) -> alliance::error::Result<ExitCode> {
    let backup = alliance::backup::read(file)?;
    let config = alliance::config::NodeConfig::load(config)?;
    let genesis = alliance::config::Genesis::load(&config.genesis)?;
    alliance::backup::restore(&backup, &config, &genesis).await?;
    println!(
        "restored {} into node {}'s data_dir {}: once node {} is added by vote \
         (gov propose add-node), start it with its join bundle (join = ... in its config)",
        backup.describe(),
        config.id,
        config.data_dir.display(),
        config.id
    );
    Ok(ExitCode::SUCCESS)
}

async fn audit(
    node: Option<String>,
    config: Option<PathBuf>,
    data_dir: Option<PathBuf>,
) -> alliance::error::Result<ExitCode> {
    use alliance::error::Error;
    let report = match (node, config, data_dir) {
        (Some(url), Some(config), None) => {
            let mut config = ClientConfig::load(&config)?;
            config.url = url;
            let api = ApiClient::from_config(&config)?;
            alliance::audit::audit_node(&api)
                .await
                .map_err(Error::Other)?
        }
        (None, _, Some(dir)) => {
            alliance::audit::audit_data_dir(&dir.join("sled")).map_err(Error::Other)?
        }
        _ => {
            return Err(Error::Config(
                "give --node URL --config FILE, or --data-dir DIR".into(),
            ))
        }
    };
    report.print();
    Ok(if report.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Largest proof file read: a proof of a leaf in an 8190-leaf block is a
/// few KiB; the bound only keeps a wrong path from eating memory.
const PROOF_BYTES_MAX: u64 = 16 * 1024 * 1024;

/// Exit 0 if the proof holds, 1 if it does not, 2 if it cannot be read.
fn verify_proof(file: &std::path::Path, head: &str) -> ExitCode {
    use alliance::ledger::chain::{from_hex, to_hex, Proof};
    let Some(head) = from_hex(head) else {
        eprintln!("alliance: --head must be 64 hex digits");
        return ExitCode::from(2);
    };
    let proof: Proof = match alliance::config::read_bounded(file, PROOF_BYTES_MAX)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| format!("{}: {e}", file.display())))
    {
        Ok(p) => p,
        Err(e) => {
            eprintln!("alliance: {e}");
            return ExitCode::from(2);
        }
    };
    match proof.verify(&head) {
        Ok(()) => {
            println!(
                "ok: leaf {} of block {} (hash {}) is {}",
                proof.leaf_index,
                proof.header.height,
                to_hex(&head),
                proof.leaf
            );
            ExitCode::SUCCESS
        }
        Err(why) => {
            println!("FAILED: {why}");
            ExitCode::from(1)
        }
    }
}

/// A governance command's request; `Err` with an exit code when it stops
/// before sending one (a ballot whose digest does not check out).
async fn gov(
    api: &ApiClient,
    cmd: GovCmd,
) -> alliance::error::Result<std::result::Result<Result<Response, reqwest::Error>, ExitCode>> {
    use serde_json::json;
    let sent = match cmd {
        GovCmd::Propose(p) => {
            let action = match p {
                ProposeCmd::Freeze { account } => json!({"freeze": {"account": account}}),
                ProposeCmd::Unfreeze { account } => json!({"unfreeze": {"account": account}}),
                ProposeCmd::Correction {
                    from,
                    to,
                    amount,
                    memo,
                } => json!({"correction": {
                    "debit_account": from, "credit_account": to, "amount": amount, "memo": memo,
                }}),
                ProposeCmd::Revoke(cert) => {
                    let (org, serial) = cert.org_and_serial()?;
                    json!({"revoke": {"org": org, "serial": serial}})
                }
                ProposeCmd::AddOrg { name, cas } => {
                    let mut pems = Vec::new();
                    for path in cas {
                        let pem = alliance::config::read_bounded(&path, 64 * 1024)?;
                        pems.push(String::from_utf8_lossy(&pem).into_owned());
                    }
                    json!({"add_org": {"name": name, "ca_certs": pems}})
                }
                ProposeCmd::RemoveOrg { name } => json!({"remove_org": {"name": name}}),
                ProposeCmd::AddCa { org, ca } => {
                    let pem = alliance::config::read_bounded(&ca, 64 * 1024)?;
                    let pem = String::from_utf8_lossy(&pem).into_owned();
                    json!({"add_ca": {"org": org, "ca_cert": pem}})
                }
                ProposeCmd::RemoveNode { id } => json!({"remove_node": {"id": id}}),
                ProposeCmd::RemoveCa { org, sha256 } => {
                    json!({"remove_ca": {"org": org, "ca_sha256": sha256}})
                }
                ProposeCmd::AddNode { id, node } => json!({"add_node": node.json(id)?}),
                ProposeCmd::ReplaceNode { old, id, node } => {
                    json!({"replace_node": {"old": old, "new": node.json(id)?}})
                }
                ProposeCmd::Policy {
                    threshold,
                    ttl_hours,
                } => json!({"set_policy": {
                    "threshold": threshold,
                    "proposal_ttl_ms": ttl_hours.saturating_mul(3_600_000),
                }}),
            };
            api.propose(&action).await
        }
        GovCmd::Approve { id } => return ballot(api, id, true).await,
        GovCmd::Reject { id } => return ballot(api, id, false).await,
        GovCmd::Show { id } => api.proposal(id).await,
        GovCmd::List { cursor, limit } => {
            let cursor = cursor.map(|c| format!("&cursor={c}")).unwrap_or_default();
            let path = format!("/v1/gov/proposals?limit={limit}{cursor}");
            api.call(reqwest::Method::GET, &path, None).await
        }
        GovCmd::Registry => {
            api.call(reqwest::Method::GET, "/v1/gov/registry", None)
                .await
        }
        GovCmd::Revoke(cert) => {
            let (org, serial) = cert.org_and_serial()?;
            api.revoke(&org, &serial).await
        }
        GovCmd::Join => {
            let empty = json!({});
            api.call(reqwest::Method::POST, "/v1/gov/join", Some(&empty))
                .await
        }
        GovCmd::JoinBundle { id, out } => {
            let bundle = match api.join_bundle(id).await? {
                Ok(b) => b,
                Err(why) => {
                    eprintln!("alliance: {why}");
                    return Ok(Err(ExitCode::from(1)));
                }
            };
            let text = serde_json::to_vec_pretty(&bundle)
                .map_err(|e| alliance::error::Error::Other(e.to_string()))?;
            let written = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&out)
                .and_then(|mut f| std::io::Write::write_all(&mut f, &text));
            if let Err(e) = written {
                eprintln!(
                    "alliance: {}: {e} (an existing file is not replaced)",
                    out.display()
                );
                return Ok(Err(ExitCode::from(1)));
            }
            println!("{}", out.display());
            return Ok(Err(ExitCode::SUCCESS));
        }
    };
    Ok(Ok(sent))
}

/// Fetches proposal `id`, shows its action and digest, checks the digest
/// and signs the ballot.
async fn ballot(
    api: &ApiClient,
    id: u64,
    approve: bool,
) -> alliance::error::Result<std::result::Result<Result<Response, reqwest::Error>, ExitCode>> {
    let shown = match api.proposal(id).await {
        Ok(shown) => shown,
        Err(e) => return Err(no_answer(api, &e).await),
    };
    if !shown.is_success() {
        return Ok(Ok(Ok(shown)));
    }
    let digest = match alliance::client::checked_digest(&shown.body) {
        Ok(d) => d,
        Err(why) => {
            eprintln!("alliance: {why}");
            return Ok(Err(ExitCode::from(1)));
        }
    };
    eprintln!(
        "proposal {id}: {}\ndigest {digest}\nsigning a ballot to {}",
        shown.body["action"],
        if approve { "approve" } else { "reject" }
    );
    let sent = api.ballot(id, approve, &digest).await;
    let ballots = |r: &Response| r.body["ballots"].as_array().map_or(0, Vec::len);
    if let Ok(answer) = &sent {
        // A repeated ballot is taken and changes nothing: no new ballot.
        if answer.is_success() && ballots(answer) == ballots(&shown) {
            eprintln!(
                "your organization had already voted so on proposal {id}: this ballot changed nothing"
            );
        }
    }
    Ok(Ok(sent))
}

async fn client(config: &std::path::Path, cmd: ClientCmd) -> alliance::error::Result<ExitCode> {
    let config = ClientConfig::load(config)?;
    let api = ApiClient::from_config(&config)?;
    let sent = match cmd {
        ClientCmd::Account {
            id,
            asset,
            allow_negative,
            readers,
            balance_max,
        } => {
            let body = serde_json::json!({
                "id": id, "asset": asset, "allow_negative": allow_negative,
                "readers": readers, "balance_max": balance_max,
            });
            api.call(reqwest::Method::POST, "/v1/accounts", Some(&body))
                .await
        }
        ClientCmd::Transfer(t) => {
            let body = serde_json::json!({
                "id": t.id, "debit_account": t.from, "credit_account": t.to,
                "amount": t.amount, "asset": t.asset, "memo": t.memo,
                "pending": t.pending, "timeout_ms": t.timeout_ms,
            });
            api.call(reqwest::Method::POST, "/v1/transfers", Some(&body))
                .await
        }
        ClientCmd::Balance {
            id,
            local,
            at_height,
        } => api.account_at(&id, at_height, local).await,
        ClientCmd::ShowTransfer { id } => api.get_transfer(&id).await,
        ClientCmd::Post { id, amount } => api.post_pending(&id, amount).await,
        ClientCmd::Void { id } => api.void_pending(&id).await,
        ClientCmd::Close { id } => api.close_account(&id).await,
        ClientCmd::Readers { id, readers } => api.set_readers(&id, &readers).await,
        ClientCmd::History { id, cursor, limit } => {
            api.history(&id, cursor.as_deref(), limit).await
        }
        ClientCmd::Status => api.cluster().await,
        ClientCmd::Proof { id } => {
            api.call(
                reqwest::Method::GET,
                &format!("/v1/transfers/{id}/proof"),
                None,
            )
            .await
        }
        ClientCmd::Import { file, batch } => {
            let items = match alliance::import::read(&file) {
                Ok(items) => items,
                Err(why) => {
                    eprintln!("alliance: {why} (nothing was sent)");
                    return Ok(ExitCode::from(2));
                }
            };
            let summary = match alliance::import::post(&api, &items, batch).await {
                Ok(s) => s,
                Err(why) => {
                    eprintln!("alliance: {why}");
                    return Ok(ExitCode::from(1));
                }
            };
            let text = serde_json::to_string_pretty(&summary).unwrap_or_default();
            println!("{text}");
            return Ok(ExitCode::from(u8::from(summary.refused > 0)));
        }
        ClientCmd::Accounts { cursor, limit } => {
            let cursor = cursor.map(|c| format!("&cursor={c}")).unwrap_or_default();
            let path = format!("/v1/accounts?limit={limit}{cursor}");
            api.call(reqwest::Method::GET, &path, None).await
        }
        ClientCmd::Blocks { cursor, limit } => {
            let cursor = cursor.map(|c| format!("&cursor={c}")).unwrap_or_default();
            let path = format!("/v1/blocks?limit={limit}{cursor}");
            api.call(reqwest::Method::GET, &path, None).await
        }
        ClientCmd::Block { height } => {
            api.call(reqwest::Method::GET, &format!("/v1/blocks/{height}"), None)
                .await
        }
        ClientCmd::Gov(cmd) => match gov(&api, cmd).await? {
            Ok(sent) => sent,
            Err(code) => return Ok(code),
        },
    };
    let response: Response = match sent {
        Ok(response) => response,
        Err(e) => return Err(no_answer(&api, &e).await),
    };
    println!(
        "{}",
        serde_json::to_string_pretty(&response.body).unwrap_or_default()
    );
    Ok(if response.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
