//! Routes of the peer listener (`raft_addr`): Raft RPCs and request
//! forwarding. Only member nodes get here ([`NodePrincipal`]); a Raft RPC
//! must come from the node it claims to be sent by.

use actix_web::{web, HttpResponse};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};

use super::error::ApiError;
use super::service::{Forwarded, Service, EXECUTE_PATH};
use super::types::parse_json;
use super::{no_route, read_body};
use crate::codec;
use crate::identity::{NodePrincipal, Principal};
use crate::raft::network::{APPEND_PATH, SNAPSHOT_PATH, VOTE_PATH};
use crate::raft::TypeConfig;

/// A peer asks whether it is accepted (used by a node on empty storage).
pub const HELLO_PATH: &str = "/peer/v1/hello";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route(HELLO_PATH, web::post().to(hello))
        .route(super::watch::HEAD_PATH, web::post().to(head))
        .route(APPEND_PATH, web::post().to(append))
        .route(VOTE_PATH, web::post().to(vote))
        .route(SNAPSHOT_PATH, web::post().to(snapshot))
        .route(EXECUTE_PATH, web::post().to(execute))
        .default_service(web::to(no_route));
}

async fn body_of<T: serde::de::DeserializeOwned>(
    svc: &Service,
    body: web::Payload,
) -> Result<T, ApiError> {
    let bytes = read_body(body, svc.limits.peer_body_bytes_max, svc.timeout()).await?;
    parse_json(&bytes)
}

/// A Raft RPC's request, in the binary peer encoding.
async fn rpc_of<T: serde::de::DeserializeOwned>(
    svc: &Service,
    body: web::Payload,
) -> Result<T, ApiError> {
    let bytes = read_body(body, svc.limits.peer_body_bytes_max, svc.timeout()).await?;
    codec::decode(&bytes).map_err(|e| ApiError::MalformedRpc(e.to_string()))
}

/// A Raft RPC's answer, in the binary peer encoding.
fn rpc_reply<T: serde::Serialize>(answer: &T) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(codec::CONTENT_TYPE)
        .body(codec::encode(answer))
}

async fn head(_node: NodePrincipal, svc: web::Data<Service>) -> HttpResponse {
    HttpResponse::Ok().json(svc.head())
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
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let rpc: AppendEntriesRequest<TypeConfig> = rpc_of(&svc, body).await?;
    ensure_sender(&node, rpc.vote.leader_id().voted_for())?;
    Ok(rpc_reply(&svc.raft.append_entries(rpc).await))
}

async fn vote(
    node: NodePrincipal,
    svc: web::Data<Service>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let rpc: VoteRequest<u64> = rpc_of(&svc, body).await?;
    ensure_sender(&node, rpc.vote.leader_id().voted_for())?;
    Ok(rpc_reply(&svc.raft.vote(rpc).await))
}

async fn snapshot(
    node: NodePrincipal,
    svc: web::Data<Service>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let rpc: InstallSnapshotRequest<TypeConfig> = rpc_of(&svc, body).await?;
    ensure_sender(&node, rpc.vote.leader_id().voted_for())?;
    Ok(rpc_reply(&svc.raft.install_snapshot(rpc).await))
}

async fn execute(
    node: NodePrincipal,
    svc: web::Data<Service>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let fwd: Forwarded = body_of(&svc, body).await?;
    let principal = Principal::forwarded(&node, fwd.principal);
    // The whole Reply (status and body) travels back; the follower relays it.
    Ok(HttpResponse::Ok().json(svc.execute_forwarded(&principal, &fwd.op).await))
}
