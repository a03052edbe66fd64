//! `/v1` routes of the API listener. Each handler validates its input,
//! checks the caller's role at the edge (apply checks again), and hands an
//! [`Op`] to the [`Service`].

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::error::{ApiError, Reply};
use super::service::{Op, Read, Service};
use super::types::{
    account_id, parse_json, transfer_id, transfers_command, Answer, CreateAccountBody, PostBody,
    ReadersBody,
};
use super::{no_route, read_body};
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

/// Query parameters of reads; each endpoint accepts the ones it uses.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReadQuery {
    consistency: Option<String>,
    at_height: Option<u64>,
    cursor: Option<String>,
    limit: Option<usize>,
}

impl ReadQuery {
    /// Parses `query`, refusing parameters outside `allowed`.
    fn parse(query: &str, allowed: &[&str]) -> Result<Self, ApiError> {
        let q: Self = web::Query::<Self>::from_query(query)
            .map_err(|e| ApiError::InvalidQuery(e.to_string()))?
            .into_inner();
        let given = [
            ("at_height", q.at_height.is_some()),
            ("cursor", q.cursor.is_some()),
            ("limit", q.limit.is_some()),
        ];
        if let Some((name, _)) = given
            .iter()
            .find(|(name, set)| *set && !allowed.contains(name))
        {
            return Err(ApiError::InvalidQuery(format!(
                "{name} does not apply here"
            )));
        }
        Ok(q)
    }

    /// Whether the read asked for `consistency=local`.
    fn local(&self) -> Result<bool, ApiError> {
        match self.consistency.as_deref() {
            None | Some("linearizable") => Ok(false),
            Some("local") => Ok(true),
            Some(_) => Err(ApiError::InvalidQuery(
                "consistency must be linearizable or local".into(),
            )),
        }
    }

    fn limit(&self, svc: &Service) -> Result<usize, ApiError> {
        let max = svc.limits.page_items_max;
        match self.limit.unwrap_or(100.min(max)) {
            n if (1..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::InvalidQuery(format!("limit must be 1..={max}"))),
        }
    }
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
    let reply = if q.local()? {
        svc.read(principal, &read)
    } else {
        svc.execute(principal, &Op::Read(read)).await
    };
    Ok(reply.into())
}

/// A write whose answer is one record or one error.
async fn write(
    svc: &Service,
    principal: &Principal,
    command: Command,
) -> Result<HttpResponse, ApiError> {
    write_answering(svc, principal, command, Answer::One).await
}

async fn write_answering(
    svc: &Service,
    principal: &Principal,
    command: Command,
    answer: Answer,
) -> Result<HttpResponse, ApiError> {
    ensure_may_write(principal)?;
    Ok(svc
        .execute(principal, &Op::Write(command, answer))
        .await
        .into())
}

async fn create_account(
    principal: Principal,
    svc: web::Data<Service>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(body, svc.limits.body_bytes_max, svc.timeout()).await?;
    let account = parse_json::<CreateAccountBody>(&body)?.validate(&svc.limits)?;
    write(&svc, &principal, Command::CreateAccount(account)).await
}

async fn post_transfers(
    principal: Principal,
    svc: web::Data<Service>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(body, svc.limits.body_bytes_max, svc.timeout()).await?;
    let (command, answer) = transfers_command(&body, &svc.limits)?;
    if let (Command::Transfers { transfers, .. }, Answer::One) = (&command, answer) {
        // Edge check of ownership on this node's state; apply checks again.
        let state = svc.state.read();
        if let Some(debit) = transfers
            .first()
            .and_then(|t| state.ledger.account(&t.debit_account))
        {
            if &debit.owner != principal.org() && principal.role().may_write() {
                return Err(ApiError::Rejected(Rejection::DebitAccountNotOwned));
            }
        }
    }
    write_answering(&svc, &principal, command, answer).await
}

async fn post_pending(
    principal: Principal,
    svc: web::Data<Service>,
    id: web::Path<String>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let id = transfer_id(&id)?;
    let body = read_body(body, svc.limits.body_bytes_max, svc.timeout()).await?;
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
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let id = transfer_id(&id)?;
    let body = read_body(body, svc.limits.body_bytes_max, svc.timeout()).await?;
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
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let id = account_id(&id)?;
    let body = read_body(body, svc.limits.body_bytes_max, svc.timeout()).await?;
    if !body.is_empty() {
        parse_json::<EmptyBody>(&body)?;
    }
    write(&svc, &principal, Command::CloseAccount { id }).await
}

async fn set_readers(
    principal: Principal,
    svc: web::Data<Service>,
    id: web::Path<String>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let id = account_id(&id)?;
    let body = read_body(body, svc.limits.body_bytes_max, svc.timeout()).await?;
    let readers = parse_json::<ReadersBody>(&body)?.validate(&svc.limits)?;
    write(&svc, &principal, Command::SetReaders { id, readers }).await
}

async fn get_account(
    principal: Principal,
    svc: web::Data<Service>,
    id: web::Path<String>,
    req: actix_web::HttpRequest,
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
    req: actix_web::HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let id = account_id(&id)?;
    let q = ReadQuery::parse(req.query_string(), &["cursor", "limit"])?;
    let from = match q.cursor.as_deref() {
        None => 0,
        Some(c) => c
            .parse()
            .map_err(|_| ApiError::InvalidQuery("cursor is not one this API returned".into()))?,
    };
    let limit = q.limit(&svc)?;
    read(&svc, &principal, &q, Read::History { id, from, limit }).await
}

async fn list_accounts(
    principal: Principal,
    svc: web::Data<Service>,
    req: actix_web::HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let q = ReadQuery::parse(req.query_string(), &["cursor", "limit"])?;
    let after = q
        .cursor
        .as_deref()
        .map(account_id)
        .transpose()
        .map_err(|_| ApiError::InvalidQuery("bad cursor".into()))?;
    let limit = q.limit(&svc)?;
    read(&svc, &principal, &q, Read::Accounts { after, limit }).await
}

async fn transfer_proof(
    principal: Principal,
    svc: web::Data<Service>,
    id: web::Path<String>,
    req: actix_web::HttpRequest,
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
    req: actix_web::HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let height = parse_height(&height)?;
    let q = ReadQuery::parse(req.query_string(), &[])?;
    read(&svc, &principal, &q, Read::Block(height)).await
}

async fn list_blocks(
    principal: Principal,
    svc: web::Data<Service>,
    req: actix_web::HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let q = ReadQuery::parse(req.query_string(), &["cursor", "limit"])?;
    let from = q
        .cursor
        .as_deref()
        .map(parse_height)
        .transpose()?
        .unwrap_or(0);
    let limit = q.limit(&svc)?;
    read(&svc, &principal, &q, Read::Blocks { from, limit }).await
}

/// A block height: decimal digits, no sign or leading zero.
pub fn parse_height(s: &str) -> Result<u64, ApiError> {
    let canonical =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    s.parse()
        .ok()
        .filter(|_| canonical)
        .ok_or_else(|| ApiError::InvalidQuery(format!("{s:?} is not a block height")))
}

async fn get_transfer(
    principal: Principal,
    svc: web::Data<Service>,
    id: web::Path<String>,
    req: actix_web::HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let id = transfer_id(&id)?;
    let q = ReadQuery::parse(req.query_string(), &[])?;
    read(&svc, &principal, &q, Read::Transfer(id)).await
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
        "replicas": svc.watch.lock().unwrap_or_else(|p| p.into_inner()).status(),
    });
    Reply::ok(body).into()
}
