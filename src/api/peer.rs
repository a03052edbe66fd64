//! Routes of the peer listener (`raft_addr`): Raft RPCs, forwarded writes
//! and bundles, and read indexes. Only member nodes get here ([`NodePrincipal`]); a Raft RPC
//! must come from the node it claims to be sent by.

use actix_web::{web, HttpResponse, ResponseError};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};

use super::body::{self, parse_json, Held};
use super::chain::Head;
use super::error::{no_route, ApiError};
use super::relay::BUNDLE_PATH;
use super::service::write::now_ms;
use super::service::READ_INDEX_PATH;
use super::service::{Forwarded, PeerBody, Service, EXECUTE_PATH, FORWARDED_ORG_HEADER};
use super::watch::{Watch, HEAD_PATH};
use crate::codec;
use crate::identity::NodePrincipal;
use crate::ledger::{Bundle, OrgName};
use crate::raft::network::{APPEND_PATH, SNAPSHOT_PATH, VOTE_PATH};
use crate::raft::{clock, membership, Raft, TypeConfig};

/// A peer asks whether it is accepted (used by a node on empty storage).
pub const HELLO_PATH: &str = "/peer/v1/hello";

/// The environment variable that sets a pause, in ms, before a node takes
/// each chunk of a snapshot from its leader: tests stand in for a snapshot
/// of gigabytes, whose stream outlasts an election timeout, with it.
pub const SNAPSHOT_CHUNK_DELAY_VAR: &str = "ALLIANCE_TEST_SNAPSHOT_CHUNK_DELAY_MS";

fn snapshot_chunk_delay() -> std::time::Duration {
    static DELAY: std::sync::OnceLock<std::time::Duration> = std::sync::OnceLock::new();
    *DELAY.get_or_init(|| crate::raft::state_machine::delay_of(SNAPSHOT_CHUNK_DELAY_VAR))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route(HELLO_PATH, web::post().to(hello))
        .route(HEAD_PATH, web::post().to(head))
        .route(APPEND_PATH, web::post().to(append))
        .route(VOTE_PATH, web::post().to(vote))
        .route(SNAPSHOT_PATH, web::post().to(snapshot))
        .route(EXECUTE_PATH, web::post().to(execute))
        .route(BUNDLE_PATH, web::post().to(bundle))
        .route(READ_INDEX_PATH, web::post().to(read_index))
        .default_service(web::to(no_route));
}

/// A peer's request for `purpose`, in the binary peer encoding, and its
/// body's place in `node`'s budget, held until the caller drops it (the
/// bytes themselves are dropped once decoded).
async fn rpc_of<T: serde::de::DeserializeOwned>(
    svc: &Service,
    node: &NodePrincipal,
    purpose: PeerBody<'_>,
    body: web::Payload,
) -> Result<(T, Held), ApiError> {
    let bytes = svc.peer_body(node.id, purpose, body).await?;
    let rpc = codec::decode(&bytes).map_err(|e| ApiError::MalformedRpc(e.to_string()))?;
    Ok((rpc, bytes.into_held()))
}

/// A Raft RPC's answer, in the binary peer encoding.
fn rpc_reply<T: serde::Serialize>(answer: &T) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(codec::CONTENT_TYPE)
        .body(codec::encode(answer))
}

async fn head(_node: NodePrincipal, watch: web::Data<Watch>) -> HttpResponse {
    match watch.head() {
        Some(head) => HttpResponse::Ok().json(Head {
            clock_ms: Some(now_ms()),
            ..head
        }),
        None => ApiError::Unavailable("this node is installing a snapshot".into()).error_response(),
    }
}

async fn hello(_node: NodePrincipal) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"ok": true}))
}

/// A Raft RPC's sender is the node whose vote it carries.
fn ensure_sender(node: &NodePrincipal, claimed: Option<u64>) -> Result<(), ApiError> {
    if claimed == Some(node.id) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "a node may only send Raft RPCs as itself",
        ))
    }
}

async fn append(
    node: NodePrincipal,
    svc: web::Data<Service>,
    raft: web::Data<Raft>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (rpc, _held): (AppendEntriesRequest<TypeConfig>, _) =
        rpc_of(&svc, &node, PeerBody::Raft, body).await?;
    ensure_sender(&node, rpc.vote.leader_id().voted_for())?;
    let (now, max) = (now_ms(), svc.limits().clock_offset_max_ms);
    if let Some((index, ahead_ms)) = clock::dated_ahead(&rpc.entries, now, max) {
        let why = format!(
            "entry {index} is dated {ahead_ms} ms ahead of this node's clock (at most \
             limits.clock_offset_max_ms = {max}): the leader's clock is wrong, or this node's"
        );
        if clock::log_refusal_now(now) {
            tracing::error!(leader = node.id, "{why}");
        }
        return Err(body::invalid("entry_dated_ahead", why));
    }
    let voters_now = || {
        (raft.metrics().borrow().membership_config.membership())
            .voter_ids()
            .count()
    };
    if let Some(why) = membership::too_few_voters(&rpc.entries, voters_now) {
        if clock::log_refusal_now(now) {
            tracing::error!(leader = node.id, "refusing an append: {why}");
        }
        return Err(body::invalid("too_few_voters", why));
    }
    let entries = rpc.entries.iter().filter_map(|e| match &e.payload {
        openraft::EntryPayload::Normal(entry) => Some(entry.clone()),
        _ => None,
    });
    svc.witness().check_ahead(entries.collect());
    let last = (rpc.entries.last().map(|e| e.log_id)).or(rpc.prev_log_id);
    let behind = rpc
        .leader_commit
        .map_or(0, |c| c.index.saturating_sub(last.map_or(0, |l| l.index)));
    let reply = raft.append_entries(rpc).await;
    if reply.as_ref().is_ok_and(|r| r.is_success()) {
        svc.state().appended(behind);
    }
    Ok(rpc_reply(&reply))
}

async fn vote(
    node: NodePrincipal,
    svc: web::Data<Service>,
    raft: web::Data<Raft>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (rpc, _held): (VoteRequest<u64>, _) = rpc_of(&svc, &node, PeerBody::Raft, body).await?;
    ensure_sender(&node, rpc.vote.leader_id().voted_for())?;
    Ok(rpc_reply(&raft.vote(rpc).await))
}

async fn snapshot(
    node: NodePrincipal,
    svc: web::Data<Service>,
    raft: web::Data<Raft>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (rpc, _held): (InstallSnapshotRequest<TypeConfig>, _) =
        rpc_of(&svc, &node, PeerBody::Raft, body).await?;
    ensure_sender(&node, rpc.vote.leader_id().voted_for())?;
    // A chunk from the leader this node follows (its committed vote, and
    // the leader it knows): the node does not campaign while it takes it
    // (the last one's call lasts until the snapshot is installed) and for
    // a while after. Another member's node claiming a vote cannot hold off
    // this node's elections.
    let from_leader = {
        let m = raft.metrics();
        let m = m.borrow();
        rpc.vote == m.vote && rpc.vote.is_committed() && m.current_leader == Some(node.id)
    };
    let _taking = from_leader.then(|| svc.watch().snapshot_chunk());
    let delay = snapshot_chunk_delay();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    Ok(rpc_reply(&raft.install_snapshot(rpc).await))
}

async fn execute(
    node: NodePrincipal,
    svc: web::Data<Service>,
    req: actix_web::HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    // The caller's organization, named before the body is read so that
    // the body counts against that organization's forwards.
    let org = (req.headers().get(FORWARDED_ORG_HEADER))
        .and_then(|h| h.to_str().ok())
        .and_then(|h| OrgName::parse(h).ok())
        .ok_or_else(|| {
            ApiError::MalformedRpc(format!(
                "a forward names its caller's organization in {FORWARDED_ORG_HEADER}"
            ))
        })?;
    // Not a member in this node's view, which may lag the forwarding
    // node's: not done this time (503), which the forwarding node passes
    // on, or asks again after an attempt that may have been proposed.
    if !svc.is_member(&org) {
        return Err(ApiError::Unavailable(format!(
            "{org} is not a member in this node's view of the consortium"
        )));
    }
    let body = svc
        .peer_body(node.id, PeerBody::Forward(&org), body)
        .await?;
    let fwd: Forwarded = parse_json(&body)?;
    let _held = body.into_held();
    if fwd.principal.org() != &org {
        return Err(ApiError::MalformedRpc(format!(
            "the forward's caller is not of {org}, which its {FORWARDED_ORG_HEADER} names"
        )));
    }
    Ok(HttpResponse::Ok().json(svc.execute_forwarded(&node, fwd).await))
}

/// Single transfers that a follower sealed for its callers, for the next
/// group commit (binary peer encoding both ways).
async fn bundle(
    node: NodePrincipal,
    svc: web::Data<Service>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (bundle, _held): (Bundle, _) = rpc_of(&svc, &node, PeerBody::Bundle, body).await?;
    Ok(rpc_reply(&svc.accept_bundle(&node, bundle).await?))
}

async fn read_index(_node: NodePrincipal, svc: web::Data<Service>) -> HttpResponse {
    HttpResponse::Ok().json(svc.read_index().await)
}
