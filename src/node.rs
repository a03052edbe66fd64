//! Wiring of one member node: open storage, start Raft, form the cluster
//! from genesis on first start, serve both listeners, stop on SIGTERM/SIGINT.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, Service as _};
use actix_web::{web, App, HttpServer};
use openraft::storage::RaftLogStorage;
use openraft::{BasicNode, SnapshotPolicy};

use crate::api::identify::{identify_api, identify_peer, PeerGate};
use crate::api::metrics::NodeStats;
use crate::api::public::RateLimiter;
use crate::api::service::{Replica, Service};
use crate::api::{self};
use crate::config::{Genesis, GenesisNode, HostPort, JoinBundle, NodeConfig, NodeId};
use crate::error::{Error, Result};
use crate::identity::attest::{Attester, Witness};
use crate::identity::own::OwnIdentity;
use crate::identity::refusals::RefusalLog;
use crate::identity::Trust;
use crate::ledger::Role;
use crate::raft::incarnation::{Incarnations, INCARNATION_HEADER};
use crate::raft::log_store::{CommitIndex, LogStore};
use crate::raft::network::{Dialer, Peer, PeerNetwork, Peers, GENESIS_HEADER};
use crate::raft::state_machine::{Founding, SharedState, StateMachine};
use crate::raft::store::Store;
use crate::raft::Raft;
use crate::stats::Histogram;

/// HTTP worker threads per listener; the machine this targets has two cores.
const HTTP_WORKERS: usize = 2;
/// How long an idle pooled peer connection is kept.
const PEER_POOL_IDLE_MS: u64 = 90_000;

/// Runs a node until it is told to stop. `purge` has the process's
/// allocator give the system the freed memory it holds for a while (see
/// [`crate::memory`]).
pub async fn run(config_path: &Path, purge: fn()) -> Result<()> {
    stop_on_panic();
    let config = NodeConfig::load(config_path)?;
    (crate::memory::hold_to(config.limits.memory_soft_limit_mb, purge)).map_err(|e| {
        Error::Io(std::io::Error::other(format!(
            "cannot start the thread that holds limits.memory_soft_limit_mb: {e}"
        )))
    })?;
    let genesis = Arc::new(Genesis::load(&config.genesis)?);
    config.check_against(&genesis)?;
    let trust = Arc::new(Trust::from_genesis(&genesis)?);
    let me = match genesis.node(config.id) {
        Some(me) => me.clone(),
        None => joining(&config, &genesis, &trust)?,
    };
    check_own_certificate(&trust, &config)?;

    let mut attester = Attester::new(config.id, &config.tls, genesis.hash_bytes())?;
    let witness = Witness::new(
        trust.clone(),
        genesis.hash_bytes(),
        api::body::decode_signed,
    );
    let witness = Arc::new(witness.with_own_seals(attester.own_seals()));
    let opened = open_storage(&config, &genesis, witness.clone())?;
    attester.follow(opened.shared.applied_height());
    let own = OwnIdentity::load(&config.tls)?;
    let peers = peer_clients(&trust, &own, &config, &genesis, opened.incarnations.clone())?;
    if opened.incarnations.fresh() {
        ensure_not_rejoining(&peers, config.id, genesis.node(config.id).is_some()).await?;
    }
    let raft = start_raft(
        &config,
        &genesis,
        &peers,
        opened.log_store,
        opened.state_machine,
    )
    .await?;
    let snapshots = (
        opened.shared.snapshots.clone(),
        peers.snapshots_sent.clone(),
    );
    let stats = Arc::new(NodeStats::new(opened.sync_us, snapshots));
    let every = config.raft.snapshot_logs_since_last;
    crate::raft::turns::take_turns(raft.clone(), every, opened.shared.clone());
    let replica = Replica {
        raft: raft.clone(),
        state: opened.shared,
        commit_index: opened.commit_index,
        peers,
        witness,
        stats: stats.clone(),
    };
    let service = Arc::new(Service::new(
        (config.id, me.org.clone()),
        replica,
        genesis.clone(),
        config.limits.clone(),
        attester,
    ));
    service.clone().spawn_expiry_ticker();
    service.clone().spawn_expiry_warnings();
    reload_on_hangup(&config, &trust, &own, &service)?;
    crate::raft::membership::drive(raft.clone(), trust.clone(), config.id);
    service
        .watch()
        .clone()
        .spawn(Duration::from_millis(config.limits.head_check_ms));
    let gate = web::Data::new(PeerGate {
        genesis_hash: genesis.hash.clone(),
        incarnations: opened.incarnations,
    });
    let listeners = Listeners {
        config: &config,
        me: &me,
        trust: &trust,
        own: &own,
        service,
        raft: web::Data::new(raft.clone()),
    };
    let api = listeners.api()?;
    let peer = listeners.peer(gate)?;
    let public = listeners.public()?;
    let ops = listeners.ops()?;
    tracing::info!(node = config.id, api = %me.api_addr, raft = %me.raft_addr, "node started");
    serve(config.id, &raft, &stats, api, peer, [public, ops]).await
}

/// A node added by vote: it starts from its join bundle, which must be for
/// this consortium and this node id.
fn joining(config: &NodeConfig, genesis: &Genesis, trust: &Trust) -> Result<GenesisNode> {
    let Some(path) = &config.join else {
        return Err(Error::Config(format!(
            "node id {} is not in genesis: a node added by vote starts with the join bundle its \
             organization's admin exports after the vote (alliance client gov join-bundle \
             PROPOSAL --out FILE); set join = \"FILE\" in this node's config",
            config.id
        )));
    };
    let bundle = JoinBundle::load(path, config.id, genesis)?;
    trust.join(&bundle)?;
    let me = bundle.me().map_err(Error::Config)?;
    tracing::info!(
        node = config.id,
        proposal = bundle.proposal,
        "joining the consortium: added by vote"
    );
    Ok(me)
}

/// Makes any panic stop the whole process, after the standard report of
/// it on standard error. A panic is a failed invariant (the ledger's and
/// the log's assertions run in release builds): the replica's state can no
/// longer be trusted, and a thread of the node must not go on serving or
/// storing it while another has died. The hook logs nothing through
/// `tracing`: the panic may have happened inside its writer.
fn stop_on_panic() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        eprintln!("alliance: the node stops (a panic is a failed invariant)");
        std::process::abort();
    }));
}

/// What the node opens on its data directory.
struct Opened {
    incarnations: Incarnations,
    /// The log's durable appends, timed.
    sync_us: Arc<Histogram>,
    log_store: LogStore,
    commit_index: CommitIndex,
    state_machine: StateMachine,
    shared: SharedState,
}

fn open_storage(config: &NodeConfig, genesis: &Genesis, witness: Arc<Witness>) -> Result<Opened> {
    let store = open_store(&config.data_dir.join("sled"))?;
    // What sled recovered may have reached only the page cache before a
    // crash (SIGKILL), never the disk. A leader restoring itself counts its
    // whole log as its own durable copy: make it one.
    store.durable.sync()?;
    if let Some(made_with) = store.bind_genesis(&genesis.hash)? {
        return Err(Error::Config(format!(
            "{}: this data directory was made with the genesis file of SHA-256 {made_with}, but \
             {} has SHA-256 {}. A consortium's genesis never changes: start the node with the \
             genesis file it was made with. Members, certificates and the policy change by a \
             vote (alliance client gov propose), not by editing genesis",
            config.data_dir.display(),
            config.genesis.display(),
            genesis.hash
        )));
    }
    let incarnations = Incarnations::open(&store, config.id)?;
    let sync_us = store.durable.sync_us.clone();
    let log_store = LogStore::new(store.clone());
    let commit_index = log_store.commit_index();
    let founding = Founding::of(genesis);
    let state_machine = StateMachine::open_with(store, founding, genesis.hash_bytes(), witness)?
        .index_held_max(config.limits.transfer_index_held_max);
    let shared = state_machine.shared();
    Ok(Opened {
        incarnations,
        sync_us,
        log_store,
        commit_index,
        state_machine,
        shared,
    })
}

/// Starts Raft on the opened stores; on a first start (no log, no vote),
/// forms the cluster from genesis.
async fn start_raft(
    config: &NodeConfig,
    genesis: &Genesis,
    peers: &Peers,
    mut log_store: LogStore,
    state_machine: StateMachine,
) -> Result<Raft> {
    let raft_config = raft_config(config, genesis)?;
    let log_state = log_store.get_log_state().await?;
    let vote = log_store.read_vote().await?;
    let raft = Raft::new(
        config.id,
        raft_config,
        PeerNetwork::new(peers.clone()),
        log_store,
        state_machine,
    )
    .await
    .map_err(|e| Error::Raft(e.to_string()))?;
    // A node added by vote never initializes: the leader adds it.
    let founder = genesis.node(config.id).is_some();
    if founder && log_state.last_log_id.is_none() && vote.is_none() {
        form_cluster(&raft, genesis).await?;
    }
    Ok(raft)
}

/// Builds the node's listeners, each an actix server bound to its address.
struct Listeners<'a> {
    config: &'a NodeConfig,
    me: &'a GenesisNode,
    trust: &'a Arc<Trust>,
    own: &'a Arc<OwnIdentity>,
    service: Arc<Service>,
    raft: web::Data<Raft>,
}

impl Listeners<'_> {
    /// The API listener: members' apps, partners and admins.
    fn api(&self) -> Result<Server> {
        let (service, limits) = (self.service.clone(), &self.config.limits);
        let addr = self.config.api_listen.as_ref().unwrap_or(&self.me.api_addr);
        let refusals = Arc::new(RefusalLog::new("API"));
        let server = HttpServer::new(move || {
            let stats = service.stats().clone();
            App::new()
                .app_data(web::Data::from(service.clone()))
                .wrap_fn(move |req, app| {
                    let method = req.method().clone();
                    let (answer, stats) = (app.call(req), stats.clone());
                    async move {
                        let answer = answer.await?;
                        let route = answer.request().match_pattern();
                        let status = answer.status().as_u16();
                        stats.responses.record(method.as_str(), route, status);
                        Ok(answer)
                    }
                })
                .configure(api::routes::configure)
        })
        .on_connect(identify_api(self.trust.clone(), refusals.clone()))
        .workers(HTTP_WORKERS)
        .max_connections(limits.connections_max)
        .max_connection_rate(limits.tls_handshakes_max)
        .tls_handshake_timeout(Duration::from_millis(limits.tls_handshake_timeout_ms))
        .client_request_timeout(Duration::from_millis(limits.request_timeout_ms))
        .bind_rustls_0_23(
            addr.as_str(),
            self.trust.server_config(self.own.clone(), refusals)?,
        )
        .map_err(|e| bind_error("API", "api_listen, or api_addr in genesis", addr, e))?;
        Ok(server.run())
    }

    /// The peer listener: Raft RPCs, forwarded requests, head exchange.
    fn peer(&self, gate: web::Data<PeerGate>) -> Result<Server> {
        let (service, raft) = (self.service.clone(), self.raft.clone());
        let watch = web::Data::from(self.service.watch().clone());
        let addr = self
            .config
            .raft_listen
            .as_ref()
            .unwrap_or(&self.me.raft_addr);
        let incarnation = gate.incarnations.own().to_owned();
        let refusals = Arc::new(RefusalLog::new("peer"));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::from(service.clone()))
                .app_data(raft.clone())
                .app_data(watch.clone())
                .app_data(gate.clone())
                .wrap(
                    actix_web::middleware::DefaultHeaders::new()
                        .add((INCARNATION_HEADER, incarnation.clone())),
                )
                .configure(api::peer::configure)
        })
        .on_connect(identify_peer(self.trust.clone(), refusals.clone()))
        .workers(HTTP_WORKERS)
        .max_connections(self.config.limits.connections_max)
        .tls_handshake_timeout(Duration::from_millis(
            self.config.limits.tls_handshake_timeout_ms,
        ))
        .bind_rustls_0_23(
            addr.as_str(),
            self.trust.peer_server_config(self.own.clone(), refusals)?,
        )
        .map_err(|e| bind_error("peer", "raft_listen, or raft_addr in genesis", addr, e))?;
        Ok(server.run())
    }

    /// The operations listener (health probes), if the config opens one.
    fn ops(&self) -> Result<Option<Server>> {
        let Some(addr) = &self.config.ops_addr else {
            return Ok(None);
        };
        let service = self.service.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::from(service.clone()))
                .configure(api::ops::configure)
        })
        .workers(1)
        .max_connections(self.config.limits.connections_max)
        .client_request_timeout(Duration::from_millis(self.config.limits.request_timeout_ms))
        .bind(addr.as_str())
        .map_err(|e| bind_error("operations", "ops_addr", addr, e))?;
        tracing::info!(ops = %addr, "operations listener open");
        Ok(Some(server.run()))
    }

    /// The public window, if the config opens one.
    fn public(&self) -> Result<Option<Server>> {
        let Some(addr) = &self.config.public_addr else {
            return Ok(None);
        };
        let limits = &self.config.limits;
        let limiter = web::Data::new(RateLimiter::new(
            limits.public_requests_per_minute,
            limits.public_clients_max,
        ));
        let service = self.service.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::from(service.clone()))
                .configure(|cfg| api::public::configure(cfg, limiter.clone()))
        })
        .workers(1)
        .max_connections(limits.connections_max)
        .tls_handshake_timeout(Duration::from_millis(limits.tls_handshake_timeout_ms))
        .client_request_timeout(Duration::from_millis(limits.request_timeout_ms))
        .bind_rustls_0_23(
            addr.as_str(),
            crate::identity::public_server_config(self.own.clone())?,
        )
        .map_err(|e| bind_error("public window", "public_addr", addr, e))?;
        tracing::info!(public = %addr, "public window open");
        Ok(Some(server.run()))
    }
}

/// A listener that could not bind, named with the config field that set
/// its address.
fn bind_error(listener: &str, field: &str, addr: &HostPort, e: std::io::Error) -> Error {
    let hint = match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            ": another process listens there (this node already running?)"
        }
        std::io::ErrorKind::AddrNotAvailable => ": no interface of this machine has that address",
        _ => "",
    };
    Error::Config(format!(
        "the {listener} listener cannot bind {addr} (set by {field}): {e}{hint}"
    ))
}

/// Opens the node's sled directory; one that another process holds is
/// said to be in use.
fn open_store(dir: &Path) -> Result<Store> {
    Store::open(dir).map_err(|e| {
        if e.to_string().contains("could not acquire lock") {
            Error::Config(format!(
                "data_dir: {} is in use by another process (is this node already running?)",
                dir.display()
            ))
        } else {
            Error::Io(e)
        }
    })
}

/// Serves until SIGTERM or SIGINT stops every server (the API and peer
/// listeners, and the optional public window and operations listener), or
/// Raft stops with a fatal error (a storage failure): better down than a
/// zombie that answers 503 forever.
async fn serve(
    id: NodeId,
    raft: &Raft,
    stats: &Arc<NodeStats>,
    api: Server,
    peer: Server,
    optional: [Option<Server>; 2],
) -> Result<()> {
    let optional = futures_util::future::join_all(optional.into_iter().flatten());
    let optional = async move { optional.await.into_iter().collect::<std::io::Result<()>>() };
    let servers = async { tokio::join!(api, peer, optional) };
    let (api_result, peer_result, optional_result) = tokio::select! {
        results = servers => results,
        fatal = watch_raft(raft, stats.clone()) => {
            let fatal = fatal.unwrap_or_else(|e| format!("raft watch failed: {e}"));
            tracing::error!("raft stopped: {fatal}; the node exits");
            return Err(Error::Raft(fatal));
        }
    };
    optional_result?;
    tracing::info!(node = id, "listeners stopped; shutting down raft");
    let _ = raft.shutdown().await;
    api_result?;
    peer_result?;
    Ok(())
}

/// On SIGHUP, takes the node certificate and key its config names again
/// (renewed, say): new TLS handshakes present them, and seals carry them.
/// One that is not this node's certificate of its organization's CA is
/// refused, and the one in use kept.
fn reload_on_hangup(
    config: &NodeConfig,
    trust: &Arc<Trust>,
    own: &Arc<OwnIdentity>,
    service: &Arc<Service>,
) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = signal(SignalKind::hangup())
        .map_err(|e| Error::Other(format!("cannot watch for SIGHUP: {e}")))?;
    let (config, trust, own, service) =
        (config.clone(), trust.clone(), own.clone(), service.clone());
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            let reloaded = check_own_certificate(&trust, &config).and_then(|cert| {
                own.reload(&config.tls)?;
                service.reload_certificate(&config.tls)?;
                Ok(cert)
            });
            match reloaded {
                Ok(cert) => {
                    let expiry = crate::identity::Expiry::now(&cert);
                    let days_left = expiry.map(|e| e.days_left);
                    tracing::info!(cert = %config.tls.cert.display(), ?days_left,
                        "SIGHUP: the node presents its reloaded certificate from now on");
                }
                Err(e) => tracing::error!("SIGHUP: kept the certificate in use: {e}"),
            }
        }
    });
    Ok(())
}

/// This node's peers: every other node of the registry, each reached by a
/// client that verifies that exact node and announces our genesis hash and
/// incarnation.
fn peer_clients(
    trust: &Arc<Trust>,
    own: &Arc<OwnIdentity>,
    config: &NodeConfig,
    genesis: &Genesis,
    incarnations: Incarnations,
) -> Result<Peers> {
    let value = |v: &str| {
        reqwest::header::HeaderValue::from_str(v).map_err(|e| Error::Other(e.to_string()))
    };
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(GENESIS_HEADER, value(&genesis.hash)?);
    headers.insert(INCARNATION_HEADER, value(incarnations.own())?);
    let dialer = RegistryDialer {
        trust: trust.clone(),
        own: own.clone(),
        config: config.clone(),
        headers,
    };
    Ok(Peers::new(Arc::new(dialer), incarnations, trust.revoked()))
}

/// Dials the registry's nodes: at the address the registry has for each,
/// or the node config's `peer_dial` override.
struct RegistryDialer {
    trust: Arc<Trust>,
    own: Arc<OwnIdentity>,
    config: NodeConfig,
    headers: reqwest::header::HeaderMap,
}

impl Dialer for RegistryDialer {
    fn ids(&self) -> Vec<u64> {
        let nodes = self.trust.peer_nodes();
        nodes.ids().filter(|id| *id != self.config.id).collect()
    }

    fn dial(&self, id: u64) -> Option<Peer> {
        let addr = match self.config.dial(id) {
            Some(addr) => addr.to_string(),
            None => self.trust.peer_nodes().get(id)?.raft_addr.clone(),
        };
        let tls = self.trust.peer_client_config(self.own.clone(), id);
        let http = tls.and_then(|tls| {
            reqwest::Client::builder()
                .use_preconfigured_tls(tls)
                .default_headers(self.headers.clone())
                .pool_idle_timeout(Duration::from_millis(PEER_POOL_IDLE_MS))
                .tls_info(true)
                .build()
                .map_err(|e| Error::Tls(e.to_string()))
        });
        match http {
            Ok(http) => Some(Peer {
                http,
                base: format!("https://{addr}"),
            }),
            Err(e) => {
                tracing::error!(peer = id, "cannot make a client for node {id}: {e}");
                None
            }
        }
    }
}

/// On empty storage: if any reachable peer remembers this node id under
/// another incarnation, this node lost its storage and must not rejoin.
async fn ensure_not_rejoining(peers: &Peers, me: u64, founder: bool) -> Result<()> {
    for peer_id in peers.ids() {
        let Some(peer) = peers.get(peer_id) else {
            continue;
        };
        let sent = peer.http.post(peer.url(api::peer::HELLO_PATH));
        let Ok(resp) = sent.timeout(Duration::from_secs(5)).send().await else {
            continue; // not up yet: it will refuse us later if it knows us
        };
        if resp.status() == reqwest::StatusCode::FORBIDDEN {
            let body = resp.text().await.unwrap_or_default();
            if body.contains("lost storage") {
                return Err(Error::Config(format!(
                    "node {me} started on empty storage, but node {} remembers it with other storage: \
                     it cannot rejoin under this id (a data directory restored from a backup is a \
                     stale copy that could lose a committed transfer). Replace it: add a node under \
                     a new id by vote (alliance client gov propose add-node, then gov join-bundle), \
                     then remove this one (gov propose remove-node {me})",
                    peer_id
                )));
            }
            // A genesis node its peers do not take for a node was removed
            // by vote (a node added by vote may just be early).
            if founder && body.contains("serves member nodes only") {
                return Err(Error::Config(format!(
                    "node {peer_id} refuses node {me} as a node of the consortium: node {me} was \
                     removed by vote, and its id is never reused"
                )));
            }
        }
    }
    Ok(())
}

/// The node's own certificate must be a node certificate for its id,
/// issued by its organization's CA; returns it (DER).
fn check_own_certificate(trust: &Trust, config: &NodeConfig) -> Result<Vec<u8>> {
    let (chain, _) = crate::identity::load_identity(&config.tls)?;
    let cert = config.tls.cert.display();
    // An expired certificate with the key genesis registers still serves
    // the peer channel (identity::lapsed); the node alarms about it.
    let (principal, _) = trust
        .identify_peer(&chain)
        .map_err(|e| Error::Config(format!("{cert}: {e}")))?;
    if principal.role() != Role::Node {
        return Err(Error::Config(format!(
            "{cert} is the `{}` certificate {:?} of {}; tls.cert must be a `node` certificate \
             (scripts/issue-cert.sh --org {} --role node --name {})",
            principal.role().as_str(),
            principal.name(),
            principal.org(),
            principal.org(),
            config.id
        )));
    }
    let node = trust.peer_node_of(principal).map_err(|e| {
        Error::Config(format!(
            "{cert}: {e}: its CN must be the id of a node of its organization in genesis"
        ))
    })?;
    if node.id != config.id {
        return Err(Error::Config(format!(
            "{}: certificate is for node {}, config says {}",
            config.tls.cert.display(),
            node.id,
            config.id
        )));
    }
    Ok(chain[0].to_vec())
}

fn raft_config(config: &NodeConfig, genesis: &Genesis) -> Result<Arc<openraft::Config>> {
    let r = &config.raft;
    let c = openraft::Config {
        cluster_name: genesis.consortium.clone(),
        heartbeat_interval: r.heartbeat_interval_ms,
        election_timeout_min: r.election_timeout_min_ms,
        election_timeout_max: r.election_timeout_max_ms,
        install_snapshot_timeout: config.limits.request_timeout_ms,
        // The nodes take turns instead (`crate::raft::turns`).
        snapshot_policy: SnapshotPolicy::Never,
        max_in_snapshot_log_to_keep: r.snapshot_logs_kept,
        max_payload_entries: r.max_payload_entries,
        ..Default::default()
    };
    Ok(Arc::new(
        c.validate()
            .map_err(|e| Error::Config(format!("raft: {e}")))?,
    ))
}

/// Counts leader changes in `stats`; resolves when Raft has stopped with a
/// fatal error. The watch runs as a task on the runtime's workers: Raft's
/// metrics change several times per write, and waking the thread that
/// waits on the listeners (the process's main thread) for each change cost
/// two context switches per write.
fn watch_raft(raft: &Raft, stats: Arc<NodeStats>) -> tokio::task::JoinHandle<String> {
    let mut metrics = raft.metrics();
    tokio::spawn(async move {
        // A node starts knowing no leader: the first it learns is a change.
        let mut leader = None;
        loop {
            let now = metrics.borrow().current_leader;
            if now != leader {
                leader = now;
                stats.leader_changes.fetch_add(1, Ordering::Relaxed);
            }
            if let Err(fatal) = &metrics.borrow().running_state {
                return fatal.to_string();
            }
            if metrics.changed().await.is_err() {
                return "raft metrics closed".into();
            }
        }
    })
}

/// First start: every genesis node proposes the same initial membership.
/// openraft accepts identical initialization on each node; a node that has
/// already joined (has a log or a vote) never gets here.
async fn form_cluster(raft: &Raft, genesis: &Genesis) -> Result<()> {
    let members: BTreeMap<u64, BasicNode> = genesis
        .nodes
        .iter()
        .map(|n| {
            (
                n.id,
                BasicNode {
                    addr: n.raft_addr.to_string(),
                },
            )
        })
        .collect();
    match raft.initialize(members).await {
        Ok(()) => Ok(()),
        Err(openraft::error::RaftError::APIError(
            openraft::error::InitializeError::NotAllowed(_),
        )) => Ok(()),
        Err(e) => Err(Error::Raft(e.to_string())),
    }
}
