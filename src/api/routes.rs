//! `/v1` routes of the API listener. Each handler validates its input,
//! checks the caller's role at the edge (apply checks again), hands an
//! [`Op`] to the [`Service`] and renders its answer.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::body::{
    self, account_id, parse_json, transfer_id, transfers_command, CreateAccountBody, PostBody,
    ReadersBody, Shape,
};
use super::error::{no_route, respond, ApiError};
use super::query::{parse_height, ReadQuery};
use super::service::{Op, Read, Service};
use super::views::Answer;
use crate::identity::Principal;
use crate::ledger::{Command, Rejection};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/v1")
            .route("/accounts", web::post().to(create_account))
            .route("/accounts", web::get().to(list_accounts))
            .route("/accounts/{id}", web::get().to(get_account))
            .route("/accounts/{id}/transfers", web::get().to(account_history))
            .route("/accounts/{id}/readers", web::put().to(set_readers))
            .route("/accounts/{id}/close", web::post().to(close_account))
            .route("/transfers", web::post().to(post_transfers))
            .route("/transfers/{id}", web::get().to(get_transfer))
            .route("/transfers/{id}/post", web::post().to(post_pending))
            .route("/transfers/{id}/void", web::post().to(void_pending))
            .route("/transfers/{id}/proof", web::get().to(transfer_proof))
            .route("/blocks", web::get().to(list_blocks))
            .route("/blocks/{height}", web::get().to(get_block))
            .route("/cluster", web::get().to(cluster)),
    )
    .default_service(web::to(no_route));
}

fn ensure_may_write(p: &Principal) -> Result<(), ApiError> {
    if p.role().may_write() {
        Ok(())
    } else {
        Err(ApiError::Rejected(Rejection::RoleMayNotWrite))
    }
}

/// Runs a read linearizably (default) or on this node's state.
async fn read(
    svc: &Service,
    principal: &Principal,
    q: &ReadQuery,
    read: Read,
) -> Result<HttpResponse, ApiError> {
    let outcome = if q.local()? {
        svc.read(principal, &read)
    } else {
        svc.execute(principal, &Op::Read(read)).await
    };
    Ok(respond(outcome))
}

/// A write whose answer is one record or one error.
async fn write(
    svc: &Service,
    principal: &Principal,
    command: Command,
) -> Result<HttpResponse, ApiError> {
    write_shaped(svc, principal, command, Shape::One).await
}

async fn write_shaped(
    svc: &Service,
    principal: &Principal,
    command: Command,
    shape: Shape,
) -> Result<HttpResponse, ApiError> {
    ensure_may_write(principal)?;
    Ok(respond(
        svc.execute(principal, &Op::Write(command, shape)).await,
    ))
}

/// Reads a write's body: declared as JSON, within the API's limits.
async fn read_body(
    svc: &Service,
    req: &HttpRequest,
    payload: web::Payload,
) -> Result<web::Bytes, ApiError> {
    body::ensure_json(req)?;
    body::read(payload, svc.limits().body_bytes_max, svc.timeout()).await
}

async fn create_account(
    principal: Principal,
    svc: web::Data<Service>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(&svc, &req, body).await?;
    let account = parse_json::<CreateAccountBody>(&body)?.validate(svc.limits())?;
    write(&svc, &principal, Command::CreateAccount(account)).await
}

async fn post_transfers(
    principal: Principal,
    svc: web::Data<Service>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(&svc, &req, body).await?;
    let (command, shape) = transfers_command(&body, svc.limits())?;
    if let (Command::Transfers { transfers, .. }, Shape::One) = (&command, shape) {
        // Edge check of ownership on this node's state; apply checks again.
        let owner = transfers
            .first()
            .and_then(|t| svc.account_owner(&t.debit_account));
        if owner.is_some_and(|o| &o != principal.org()) && principal.role().may_write() {
            return Err(ApiError::Rejected(Rejection::DebitAccountNotOwned));
        }
    }
    write_shaped(&svc, &principal, command, shape).await
}

async fn post_pending(
    principal: Principal,
    svc: web::Data<Service>,
    id: web::Path<String>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let id = transfer_id(&id)?;
    let body = read_body(&svc, &req, body).await?;
    let post = if body.is_empty() {
        PostBody::default()
    } else {
        parse_json::<PostBody>(&body)?
    };
    write(
        &svc,
        &principal,
        Command::PostPending {
            id,
            amount: post.amount()?,
        },
    )
    .await
}

async fn void_pending(
    principal: Principal,
    svc: web::Data<Service>,
    id: web::Path<String>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let id = transfer_id(&id)?;
    let body = read_body(&svc, &req, body).await?;
    if !body.is_empty() {
        parse_json::<EmptyBody>(&body)?;
    }
    write(&svc, &principal, Command::VoidPending { id }).await
}

/// `{}`: the only body `void` and `close` accept.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmptyBody {}

async fn close_account(
    principal: Principal,
    svc: web::Data<Service>,
    id: web::Path<String>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let id = account_id(&id)?;
    let body = read_body(&svc, &req, body).await?;
    if !body.is_empty() {
        parse_json::<EmptyBody>(&body)?;
    }
    write(&svc, &principal, Command::CloseAccount { id }).await
}

async fn set_readers(
    principal: Principal,
    svc: web::Data<Service>,
    id: web::Path<String>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let id = account_id(&id)?;
    let body = read_body(&svc, &req, body).await?;
    let readers = parse_json::<ReadersBody>(&body)?.validate(svc.limits())?;
    write(&svc, &principal, Command::SetReaders { id, readers }).await
}

async fn get_account(
    principal: Principal,
    svc: web::Data<Service>,
    id: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let id = account_id(&id)?;
    let q = ReadQuery::parse(req.query_string(), &["at_height"])?;
    let at_height = q.at_height;
    read(&svc, &principal, &q, Read::Account { id, at_height }).await
}

async fn account_history(
    principal: Principal,
    svc: web::Data<Service>,
    id: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let id = account_id(&id)?;
    let q = ReadQuery::parse(req.query_string(), &["cursor", "limit"])?;
    let from = q.history_cursor()?;
    let limit = q.limit(svc.limits().page_items_max)?;
    read(&svc, &principal, &q, Read::History { id, from, limit }).await
}

async fn list_accounts(
    principal: Principal,
    svc: web::Data<Service>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let q = ReadQuery::parse(req.query_string(), &["cursor", "limit"])?;
    let after = q.account_cursor()?;
    let limit = q.limit(svc.limits().page_items_max)?;
    read(&svc, &principal, &q, Read::Accounts { after, limit }).await
}

async fn transfer_proof(
    principal: Principal,
    svc: web::Data<Service>,
    id: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let id = transfer_id(&id)?;
    let q = ReadQuery::parse(req.query_string(), &[])?;
    read(&svc, &principal, &q, Read::Proof(id)).await
}

/// Block headers reveal no ledger data: any member certificate may read them.
async fn get_block(
    principal: Principal,
    svc: web::Data<Service>,
    height: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let height = parse_height(&height)?;
    let q = ReadQuery::parse(req.query_string(), &[])?;
    read(&svc, &principal, &q, Read::Block(height)).await
}

async fn list_blocks(
    principal: Principal,
    svc: web::Data<Service>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let q = ReadQuery::parse(req.query_string(), &["cursor", "limit"])?;
    let from = q.block_cursor()?;
    let limit = q.limit(svc.limits().page_items_max)?;
    read(&svc, &principal, &q, Read::Blocks { from, limit }).await
}

async fn get_transfer(
    principal: Principal,
    svc: web::Data<Service>,
    id: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let id = transfer_id(&id)?;
    let q = ReadQuery::parse(req.query_string(), &[])?;
    read(&svc, &principal, &q, Read::Transfer(id)).await
}

/// Cluster status from this node's view; any member certificate may ask.
async fn cluster(_principal: Principal, svc: web::Data<Service>) -> HttpResponse {
    Answer::Cluster(Box::new(svc.cluster())).render().into()
}
