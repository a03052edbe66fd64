//! Wiring of one member node: open storage, start Raft, form the cluster
//! from genesis on first start, serve both listeners, stop on SIGTERM/SIGINT.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::{web, App, HttpServer};
use openraft::storage::RaftLogStorage;
use openraft::{BasicNode, SnapshotPolicy};

use crate::api::{self, public::RateLimiter, service::Service};
use crate::config::{Genesis, NodeConfig};
use crate::error::{Error, Result};
use crate::identity::Trust;
use crate::ledger::{Actor, Command, Entry, OrgName, Role};
use crate::raft::incarnation::{Incarnations, INCARNATION_HEADER};
use crate::raft::log_store::LogStore;
use crate::raft::network::{Peer, PeerNetwork, Peers, GENESIS_HEADER};
use crate::raft::state_machine::StateMachine;
use crate::raft::store::Store;
use crate::raft::Raft;

/// HTTP worker threads per listener; the machine this targets has two cores.
const HTTP_WORKERS: usize = 2;
/// How long an idle pooled peer connection is kept.
const PEER_POOL_IDLE_MS: u64 = 90_000;

/// Runs a node until it is told to stop.
pub async fn run(config_path: &Path) -> Result<()> {
    let config = NodeConfig::load(config_path)?;
    let genesis = Arc::new(Genesis::load(&config.genesis)?);
    let me = genesis
        .node(config.id)
        .ok_or_else(|| Error::Config(format!("node id {} is not in genesis", config.id)))?
        .clone();
    config.check_against(&genesis)?;

    let trust = Arc::new(Trust::from_genesis(&genesis)?);
    check_own_certificate(&trust, &config)?;

    let store = Store::open(&config.data_dir.join("sled"))?;
    // What sled recovered may have reached only the page cache before a
    // crash (SIGKILL), never the disk. A leader restoring itself counts its
    // whole log as its own durable copy: make it one.
    store.durable.sync()?;
    let incarnations = Incarnations::open(&store, config.id)?;
    let mut log_store = LogStore::new(store.clone());
    let commit_index = log_store.commit_index();
    let state_machine = StateMachine::open(store, genesis.org_names(), genesis.hash_bytes())
        .map_err(|e| Error::Storage(e.to_string()))?;
    let shared = state_machine.shared();

    let peers = peer_clients(&trust, &config, &genesis, incarnations.clone())?;
    if incarnations.fresh() {
        ensure_not_rejoining(&peers, &genesis, config.id).await?;
    }
    let raft_config = raft_config(&config, &genesis)?;
    let log_state = log_store
        .get_log_state()
        .await
        .map_err(|e| Error::Storage(e.to_string()))?;
    let vote = log_store
        .read_vote()
        .await
        .map_err(|e| Error::Storage(e.to_string()))?;
    let raft = Raft::new(
        config.id,
        raft_config,
        PeerNetwork::new(peers.clone()),
        log_store,
        state_machine,
    )
    .await
    .map_err(|e| Error::Raft(e.to_string()))?;

    if log_state.last_log_id.is_none() && vote.is_none() {
        form_cluster(&raft, &genesis).await?;
    }

    let mut service = Service::new(
        config.id,
        raft.clone(),
        shared,
        genesis.clone(),
        config.limits.clone(),
        peers,
        commit_index,
    );
    if config.public_addr.is_some() {
        let l = &config.limits;
        service.public_limiter = Some(RateLimiter::new(
            l.public_requests_per_minute,
            l.public_clients_max,
        ));
    }
    let service = Arc::new(service);
    spawn_expiry_ticker(service.clone(), me.org.clone());
    api::watch::spawn(
        service.clone(),
        service.watch.clone(),
        Duration::from_millis(config.limits.head_check_ms),
    );
    let api_tls = trust.server_config(&config.tls)?;
    let peer_tls = trust.server_config(&config.tls)?;
    let limits = config.limits.clone();

    let api_service = service.clone();
    let api = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::from(api_service.clone()))
            .configure(api::routes::configure)
    })
    .on_connect(api::identify_api(trust.clone()))
    .workers(HTTP_WORKERS)
    .max_connections(limits.connections_max)
    .client_request_timeout(Duration::from_millis(limits.request_timeout_ms))
    .bind_rustls_0_23(
        config.api_listen.as_ref().unwrap_or(&me.api_addr).as_str(),
        api_tls,
    )?
    .run();

    let peer_service = service.clone();
    let own_incarnation = incarnations.own().to_owned();
    let peer = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::from(peer_service.clone()))
            .wrap(
                actix_web::middleware::DefaultHeaders::new()
                    .add((INCARNATION_HEADER, own_incarnation.clone())),
            )
            .configure(api::peer::configure)
    })
    .on_connect(api::identify_peer(trust.clone()))
    .workers(HTTP_WORKERS)
    .max_connections(limits.connections_max)
    .bind_rustls_0_23(
        config
            .raft_listen
            .as_ref()
            .unwrap_or(&me.raft_addr)
            .as_str(),
        peer_tls,
    )?
    .run();

    let public = match &config.public_addr {
        Some(addr) => {
            let public_service = service.clone();
            let server = HttpServer::new(move || {
                App::new()
                    .app_data(web::Data::from(public_service.clone()))
                    .configure(api::public::configure)
            })
            .workers(1)
            .max_connections(limits.connections_max)
            .client_request_timeout(Duration::from_millis(limits.request_timeout_ms))
            .bind_rustls_0_23(
                addr.as_str(),
                crate::identity::public_server_config(&config.tls)?,
            )?
            .run();
            tracing::info!(public = %addr, "public window open");
            Some(server)
        }
        None => None,
    };
    let public = async move {
        match public {
            Some(server) => server.await,
            None => Ok(()),
        }
    };
    tracing::info!(node = config.id, api = %me.api_addr, raft = %me.raft_addr, "node started");
    // SIGTERM or SIGINT stops every server; wait for all of them. A fatal
    // Raft error (a storage failure) stops the node: better down than a
    // zombie that answers 503 forever.
    let servers = async { tokio::join!(api, peer, public) };
    let (api_result, peer_result, public_result) = tokio::select! {
        results = servers => results,
        fatal = raft_fatal(&raft) => {
            let fatal = fatal.unwrap_or_else(|e| format!("raft watch failed: {e}"));
            tracing::error!("raft stopped: {fatal}; the node exits");
            return Err(Error::Raft(fatal));
        }
    };
    public_result?;
    tracing::info!(node = config.id, "listeners stopped; shutting down raft");
    let _ = raft.shutdown().await;
    api_result?;
    peer_result?;
    Ok(())
}

/// One client per other genesis node, each verifying that exact node and
/// announcing our genesis hash.
fn peer_clients(
    trust: &Trust,
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
    let mut peers = BTreeMap::new();
    for node in genesis.nodes.iter().filter(|n| n.id != config.id) {
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(trust.peer_client_config(&config.tls, node.id)?)
            .default_headers(headers.clone())
            .pool_idle_timeout(Duration::from_millis(PEER_POOL_IDLE_MS))
            .build()
            .map_err(|e| Error::Tls(e.to_string()))?;
        let dial = config.dial(node.id).unwrap_or(&node.raft_addr);
        let base = format!("https://{dial}");
        peers.insert(node.id, Peer { http, base });
    }
    Ok(Peers::new(peers, incarnations))
}

/// On empty storage: if any reachable peer remembers this node id under
/// another incarnation, this node lost its storage and must not rejoin.
async fn ensure_not_rejoining(peers: &Peers, genesis: &Genesis, me: u64) -> Result<()> {
    for node in genesis.nodes.iter().filter(|n| n.id != me) {
        let Some(peer) = peers.get(node.id) else {
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
                     restore this node's data directory, or add it to the consortium under a new id",
                    node.id
                )));
            }
        }
    }
    Ok(())
}

/// While this node leads, proposes a `Tick` whenever a pending transfer is
/// due to expire and nothing else has advanced the ledger clock past it, so
/// expiry happens (at one log position on every replica) even when idle.
fn spawn_expiry_ticker(service: Arc<Service>, org: OrgName) {
    let every = Duration::from_millis(service.limits.expiry_check_ms);
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(every);
        loop {
            interval.tick().await;
            if service.raft.metrics().borrow().current_leader != Some(service.id) {
                continue;
            }
            let now_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let due = service.state.read().ledger.next_expiry_ms();
            if due.is_some_and(|d| d <= now_ms) {
                let actor = Actor {
                    org: org.clone(),
                    role: Role::Node,
                };
                let entry = Entry {
                    actor,
                    timestamp_ms: now_ms,
                    command: Command::Tick,
                };
                if let Err(e) =
                    tokio::time::timeout(service.timeout(), service.raft.client_write(entry.into()))
                        .await
                {
                    tracing::warn!("expiry tick not confirmed in time: {e}");
                }
            }
        }
    });
}

/// The node's own certificate must be a node certificate for its id.
fn check_own_certificate(trust: &Trust, config: &NodeConfig) -> Result<()> {
    let (chain, _) = crate::identity::load_identity(&config.tls)?;
    let node = trust
        .identify_node(&chain)
        .map_err(|e| Error::Config(format!("{}: {e}", config.tls.cert.display())))?;
    if node.id != config.id {
        return Err(Error::Config(format!(
            "{}: certificate is for node {}, config says {}",
            config.tls.cert.display(),
            node.id,
            config.id
        )));
    }
    Ok(())
}

fn raft_config(config: &NodeConfig, genesis: &Genesis) -> Result<Arc<openraft::Config>> {
    let r = &config.raft;
    let c = openraft::Config {
        cluster_name: genesis.consortium.clone(),
        heartbeat_interval: r.heartbeat_interval_ms,
        election_timeout_min: r.election_timeout_min_ms,
        election_timeout_max: r.election_timeout_max_ms,
        install_snapshot_timeout: config.limits.request_timeout_ms,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(r.snapshot_logs_since_last),
        max_in_snapshot_log_to_keep: r.snapshot_logs_kept,
        max_payload_entries: r.max_payload_entries,
        ..Default::default()
    };
    Ok(Arc::new(
        c.validate()
            .map_err(|e| Error::Config(format!("raft: {e}")))?,
    ))
}

/// Resolves when Raft has stopped with a fatal error. The watch runs as a
/// task on the runtime's workers: Raft's metrics change several times per
/// write, and waking the thread that waits on the listeners (the process's
/// main thread) for each change cost two context switches per write.
fn raft_fatal(raft: &Raft) -> tokio::task::JoinHandle<String> {
    let mut metrics = raft.metrics();
    tokio::spawn(async move {
        loop {
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
