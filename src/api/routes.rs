//! `/v1` routes of the API listener. Each handler validates its input,
//! checks the caller's role at the edge (apply checks again), and hands an
//! [`Op`] to the [`Service`].

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::error::{ApiError, Reply};
use super::service::{Op, Service};
use super::types::{account_id, parse_json, transfer_id, CreateAccountBody, TransferBody};
use super::{no_route, read_body};
use crate::identity::Principal;
use crate::ledger::{Command, Rejection};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/v1")
            .route("/accounts", web::post().to(create_account))
            .route("/accounts/{id}", web::get().to(get_account))
            .route("/transfers", web::post().to(post_transfer))
            .route("/transfers/{id}", web::get().to(get_transfer))
            .route("/cluster", web::get().to(cluster)),
    )
    .default_service(web::to(no_route));
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadQuery {
    consistency: Option<String>,
}

/// Whether a read asked for `consistency=local`.
fn local_read(query: &str) -> Result<bool, ApiError> {
    let q: ReadQuery = web::Query::<ReadQuery>::from_query(query)
        .map_err(|e| ApiError::InvalidQuery(e.to_string()))?
        .into_inner();
    match q.consistency.as_deref() {
        None | Some("linearizable") => Ok(false),
        Some("local") => Ok(true),
        Some(_) => Err(ApiError::InvalidQuery(
            "consistency must be linearizable or local".into(),
        )),
    }
}

fn ensure_may_write(p: &Principal) -> Result<(), ApiError> {
    if p.role().may_write() {
        Ok(())
    } else {
        Err(ApiError::Rejected(Rejection::RoleMayNotWrite))
    }
}

async fn create_account(
    principal: Principal,
    svc: web::Data<Service>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(body, svc.limits.body_bytes_max, svc.timeout()).await?;
    let account = parse_json::<CreateAccountBody>(&body)?.validate(&svc.limits)?;
    ensure_may_write(&principal)?;
    let op = Op::Write(Command::CreateAccount(account));
    Ok(svc.execute(&principal, &op).await.into())
}

async fn post_transfer(
    principal: Principal,
    svc: web::Data<Service>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(body, svc.limits.body_bytes_max, svc.timeout()).await?;
    let transfer = parse_json::<TransferBody>(&body)?.validate(&svc.limits)?;
    ensure_may_write(&principal)?;
    // Edge check of ownership on this node's state; apply checks again.
    if let Some(debit) = svc.state.read().ledger.account(&transfer.debit_account) {
        if &debit.owner != principal.org() {
            return Err(ApiError::Rejected(Rejection::DebitAccountNotOwned));
        }
    }
    let op = Op::Write(Command::Transfers(vec![transfer]));
    Ok(svc.execute(&principal, &op).await.into())
}

async fn get_account(
    principal: Principal,
    svc: web::Data<Service>,
    id: web::Path<String>,
    req: actix_web::HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let id = account_id(&id)?;
    let reply = if local_read(req.query_string())? {
        svc.read_account(&principal, &id)
    } else {
        svc.execute(&principal, &Op::GetAccount(id)).await
    };
    Ok(reply.into())
}

async fn get_transfer(
    principal: Principal,
    svc: web::Data<Service>,
    id: web::Path<String>,
    req: actix_web::HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let id = transfer_id(&id)?;
    let reply = if local_read(req.query_string())? {
        svc.read_transfer(&principal, &id)
    } else {
        svc.execute(&principal, &Op::GetTransfer(id)).await
    };
    Ok(reply.into())
}

/// Cluster status from this node's view; any member certificate may ask.
async fn cluster(_principal: Principal, svc: web::Data<Service>) -> HttpResponse {
    let m = svc.raft.metrics().borrow().clone();
    let members: Vec<_> = svc
        .genesis
        .nodes
        .iter()
        .map(
            |n| json!({"id": n.id, "org": n.org, "api_addr": n.api_addr, "raft_addr": n.raft_addr}),
        )
        .collect();
    let voters: Vec<u64> = m.membership_config.membership().voter_ids().collect();
    let body = json!({
        "consortium": svc.genesis.consortium,
        "node_id": svc.id,
        "state": format!("{:?}", m.state),
        "leader": m.current_leader,
        "term": m.current_term,
        "voters": voters,
        "members": members,
        "last_log_index": m.last_log_index,
        "commit_index": svc.commit_index.get(),
        "applied_index": m.last_applied.map(|l| l.index),
        "snapshot_index": m.snapshot.map(|l| l.index),
        "purged_index": m.purged.map(|l| l.index),
        "height": svc.state.read().ledger.height(),
    });
    Reply::ok(body).into()
}
