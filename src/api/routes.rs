//! `/v1` routes of the API listener. Each handler validates its input,
//! checks the caller's role at the edge (apply checks again), hands an
//! [`Op`] to the [`Service`] and renders its answer. Every write route is
//! one handler, [`write`]: what a write asks is decided by its method, path
//! and body alone, so that a signed request means the same on every replica.

use actix_web::{web, HttpRequest, HttpResponse};

use super::body::{self, account_id, transfer_id, write_command, Body, Shape};
use super::error::{no_route, respond, ApiError};
use super::query::{parse_height, ReadQuery};
use super::service::{Op, Read, Service};
use super::views::Answer;
use crate::identity::request::SIGNATURE_HEADER;
use crate::identity::Principal;
use crate::ledger::{Action, Command, Rejection, Role};

/// How a route's handler is attached to it.
type Attach = fn(actix_web::Route) -> actix_web::Route;

/// Every `/v1` route: its path under `/v1`, and each method it takes with
/// its handler. The OpenAPI description ([`super::openapi`]) lists the same.
pub const ROUTES: &[(&str, &[(&str, Attach)])] = &[
    (
        "/accounts",
        &[("POST", |r| r.to(write)), ("GET", |r| r.to(list_accounts))],
    ),
    ("/accounts/{id}", &[("GET", |r| r.to(get_account))]),
    (
        "/accounts/{id}/transfers",
        &[("GET", |r| r.to(account_history))],
    ),
    ("/accounts/{id}/readers", &[("PUT", |r| r.to(write))]),
    ("/accounts/{id}/close", &[("POST", |r| r.to(write))]),
    ("/transfers", &[("POST", |r| r.to(write))]),
    ("/transfers/{id}", &[("GET", |r| r.to(get_transfer))]),
    ("/transfers/{id}/post", &[("POST", |r| r.to(write))]),
    ("/transfers/{id}/void", &[("POST", |r| r.to(write))]),
    (
        "/transfers/{id}/proof",
        &[("GET", |r| r.to(transfer_proof))],
    ),
    ("/blocks", &[("GET", |r| r.to(list_blocks))]),
    ("/blocks/{height}", &[("GET", |r| r.to(get_block))]),
    ("/cluster", &[("GET", |r| r.to(cluster))]),
    ("/backup", &[("GET", |r| r.to(backup))]),
    (
        "/gov/proposals",
        &[("POST", |r| r.to(write)), ("GET", |r| r.to(list_proposals))],
    ),
    ("/gov/proposals/{id}", &[("GET", |r| r.to(get_proposal))]),
    ("/gov/proposals/{id}/ballots", &[("POST", |r| r.to(write))]),
    ("/gov/revocations", &[("POST", |r| r.to(write))]),
    ("/gov/join", &[("POST", |r| r.to(write))]),
    ("/gov/registry", &[("GET", |r| r.to(registry))]),
    ("/openapi.json", &[("GET", |r| r.to(openapi))]),
];

/// The `/v1` routes; a method a route does not take answers 405 with the
/// ones it does (`Allow`), any other path 404.
pub fn configure(cfg: &mut web::ServiceConfig) {
    let mut scope = web::scope("/v1");
    for (path, methods) in ROUTES {
        let mut resource = web::resource(*path);
        for (method, attach) in *methods {
            let method = actix_web::http::Method::from_bytes(method.as_bytes())
                .expect("ROUTES names HTTP methods");
            resource = resource.route(attach(web::method(method)));
        }
        let allow: Vec<&str> = methods.iter().map(|(m, _)| *m).collect();
        let allow = allow.join(", ");
        let header = actix_web::http::header::HeaderValue::from_str(&allow)
            .expect("ROUTES names HTTP methods");
        // The caller's certificate is checked first, as on every route.
        resource = resource.default_service(web::to(move |_: Principal| {
            let mut response: HttpResponse =
                ApiError::MethodNotAllowed(allow.clone()).render().into();
            response
                .headers_mut()
                .insert(actix_web::http::header::ALLOW, header.clone());
            std::future::ready(response)
        }));
        scope = scope.service(resource);
    }
    cfg.service(scope)
        .default_service(web::to(|_: Principal| no_route()));
}

/// Runs a read linearizably (default) or on this node's state.
async fn read(
    svc: &Service,
    principal: &Principal,
    q: &ReadQuery,
    read: Read,
) -> Result<HttpResponse, ApiError> {
    let outcome = if q.local()? {
        let deadline = tokio::time::Instant::now() + svc.timeout();
        svc.read_by(principal, &read, deadline).await
    } else {
        svc.execute(principal, &Op::Read(read)).await
    };
    Ok(respond(outcome))
}

/// Reads a write's body: declared as JSON, within the API's limits.
async fn read_body(
    svc: &Service,
    principal: &Principal,
    req: &HttpRequest,
    payload: web::Payload,
) -> Result<Body, ApiError> {
    body::ensure_json(req)?;
    svc.api_body(principal.org(), payload).await
}

/// Every write route: the body parsed into its command ([`write_command`]),
/// checked at the edge, and run on the leader with the evidence of its
/// origin: this node's seal for its own organization's caller, or the
/// caller's signature, checked here, for any caller.
async fn write(
    principal: Principal,
    svc: web::Data<Service>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(&svc, &principal, &req, payload).await?;
    let (method, path) = (req.method().as_str(), req.path());
    let (command, shape) = write_command(method, path, &body, svc.limits())?;
    if !principal.role().may_write() {
        return Err(ApiError::Rejected(Rejection::RoleMayNotWrite));
    }
    if command.is_governance() && principal.role() != Role::Admin {
        return Err(ApiError::Rejected(Rejection::AdminRequired));
    }
    if matches!(command, Command::Ballot { .. })
        && body.len() > crate::ledger::gov::BALLOT_BODY_BYTES_MAX
    {
        return Err(ApiError::Rejected(Rejection::BallotTooLarge));
    }
    let signed = match req.headers().get(SIGNATURE_HEADER) {
        None => None,
        Some(header) => Some(svc.client_seal(&principal, header, method, path, &body)?),
    };
    if signed.is_none() && command.is_governance() {
        return Err(ApiError::Rejected(Rejection::SignatureRequired));
    }
    match &command {
        Command::Propose(Action::AddOrg { ca_certs, .. }) => super::gov::ensure_lasting(ca_certs)?,
        Command::Propose(Action::AddNode(node) | Action::ReplaceNode { new: node, .. }) => {
            super::gov::ensure_lasting(std::slice::from_ref(&node.cert))?;
            svc.check_node_cert(node)?;
        }
        Command::Propose(Action::AddCa { ca_cert, .. }) => {
            super::gov::ensure_lasting(std::slice::from_ref(ca_cert))?
        }
        _ => {}
    }
    if signed.is_none() && principal.org() != svc.org() {
        return Err(ApiError::SignOrUseOwnNode(svc.org().to_string()));
    }
    if let (Some(one), Shape::One) = (command.single_transfer(), shape) {
        // Edge check of ownership on this node's state; apply checks again.
        let owner = svc.account_owner(&one.debit_account);
        if owner.is_some_and(|o| &o != principal.org()) {
            return Err(ApiError::Rejected(Rejection::DebitAccountNotOwned));
        }
    }
    // This node vouches for its own organization's callers itself, but a
    // governance write carries the admin's own signature into the chain.
    let signed = signed.filter(|_| principal.org() != svc.org() || command.is_governance());
    let op = Op::Write(command, shape, signed);
    Ok(respond(svc.execute(&principal, &op).await))
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

async fn get_proposal(
    principal: Principal,
    svc: web::Data<Service>,
    id: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let id = super::gov::proposal_id(&id)?;
    let q = ReadQuery::parse(req.query_string(), &[])?;
    read(&svc, &principal, &q, Read::Proposal(id)).await
}

async fn list_proposals(
    principal: Principal,
    svc: web::Data<Service>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let q = ReadQuery::parse(req.query_string(), &["cursor", "limit"])?;
    let from = q.history_cursor()?;
    let limit = q.limit(svc.limits().page_items_max)?;
    read(&svc, &principal, &q, Read::Proposals { from, limit }).await
}

async fn registry(
    principal: Principal,
    svc: web::Data<Service>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let q = ReadQuery::parse(req.query_string(), &[])?;
    read(&svc, &principal, &q, Read::Registry).await
}

/// A backup of this node's applied state (`alliance backup`): for an
/// admin of the node's own organization, which holds its data anyway.
async fn backup(principal: Principal, svc: web::Data<Service>) -> Result<HttpResponse, ApiError> {
    if principal.role() != Role::Admin || principal.org() != svc.org() {
        return Err(ApiError::Forbidden(
            "a backup is for an admin of the node's own organization",
        ));
    }
    let svc = svc.into_inner();
    let bytes = tokio::task::spawn_blocking(move || svc.backup())
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    Ok(HttpResponse::Ok()
        .content_type("application/octet-stream")
        .body(bytes))
}

/// Cluster status from this node's view; any member certificate may ask.
async fn cluster(_principal: Principal, svc: web::Data<Service>) -> HttpResponse {
    Answer::Cluster(Box::new(svc.cluster_for(_principal.cert())))
        .render()
        .into()
}

/// This API's OpenAPI description, with this node's limits; any member
/// certificate may ask.
async fn openapi(_principal: Principal, svc: web::Data<Service>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(actix_web::http::header::ContentType::json())
        .body(svc.openapi())
}
