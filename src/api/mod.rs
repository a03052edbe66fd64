//! The HTTPS API (`api_addr`) and the peer channel (`raft_addr`).
//!
//! Both listeners require a client certificate in the TLS handshake. The
//! caller's identity is computed once per connection, from the verified
//! session, and handlers receive it as a [`Principal`] (API) or
//! [`NodePrincipal`] (peer) extractor; nothing else identifies a caller.

pub mod error;
pub mod group;
pub mod peer;
pub mod public;
pub mod routes;
pub mod service;
pub mod types;
pub mod watch;

use std::any::Any;
use std::future::{ready, Ready};
use std::sync::Arc;

use actix_tls::accept::rustls_0_23::TlsStream;
use actix_web::dev::{Extensions, Payload};
use actix_web::rt::net::TcpStream;
use actix_web::{web, FromRequest, HttpRequest};
use futures_util::StreamExt;

use self::error::ApiError;
use self::service::Service;
use crate::identity::{IdentityError, NodePrincipal, Principal, Trust};
use crate::raft::incarnation::INCARNATION_HEADER;
use crate::raft::network::GENESIS_HEADER;

/// The identity of an API connection, set when it opens.
#[derive(Clone)]
struct ApiIdentity(Result<Principal, IdentityError>);

/// The identity of a peer connection, set when it opens.
#[derive(Clone)]
struct PeerIdentity(Result<NodePrincipal, IdentityError>);

fn peer_chain(conn: &dyn Any) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    conn.downcast_ref::<TlsStream<TcpStream>>()
        .and_then(|tls| tls.get_ref().1.peer_certificates())
        .map(|certs| certs.iter().map(|c| c.clone().into_owned()).collect())
        .unwrap_or_default()
}

/// `on_connect` hook of the API listener.
pub fn identify_api(
    trust: Arc<Trust>,
) -> impl Fn(&dyn Any, &mut Extensions) + Send + Sync + 'static {
    move |conn, ext| {
        ext.insert(ApiIdentity(trust.identify(&peer_chain(conn))));
    }
}

/// `on_connect` hook of the peer listener.
pub fn identify_peer(
    trust: Arc<Trust>,
) -> impl Fn(&dyn Any, &mut Extensions) + Send + Sync + 'static {
    move |conn, ext| {
        ext.insert(PeerIdentity(trust.identify_node(&peer_chain(conn))));
    }
}

impl FromRequest for Principal {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(match req.conn_data::<ApiIdentity>() {
            Some(ApiIdentity(Ok(p))) => Ok(p.clone()),
            Some(ApiIdentity(Err(e))) => Err(ApiError::Unauthenticated(e.to_string())),
            None => Err(ApiError::Unauthenticated("no verified TLS session".into())),
        })
    }
}

impl FromRequest for NodePrincipal {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let header = |name: &str| req.headers().get(name).and_then(|h| h.to_str().ok());
        let node = match req.conn_data::<PeerIdentity>() {
            Some(PeerIdentity(Ok(p))) => p.clone(),
            Some(PeerIdentity(Err(IdentityError::NotANode))) => {
                return ready(Err(ApiError::Forbidden(
                    "the peer listener serves member nodes only",
                )))
            }
            Some(PeerIdentity(Err(e))) => {
                return ready(Err(ApiError::Unauthenticated(e.to_string())))
            }
            None => {
                return ready(Err(ApiError::Unauthenticated(
                    "no verified TLS session".into(),
                )))
            }
        };
        let Some(svc) = req.app_data::<web::Data<Service>>() else {
            return ready(Err(ApiError::Unavailable("not ready".into())));
        };
        // Same genesis, or the two nodes would apply the log differently.
        if header(GENESIS_HEADER) != Some(svc.genesis.hash.as_str()) {
            return ready(Err(ApiError::Forbidden(
                "the peer runs a different genesis file",
            )));
        }
        if let Err(why) = svc
            .peers
            .incarnations
            .check(node.id, header(INCARNATION_HEADER))
        {
            tracing::error!(peer = node.id, "{why}");
            return ready(Err(ApiError::Forbidden(
                "this node id rejoined with lost storage",
            )));
        }
        ready(Ok(node))
    }
}

/// Reads a request body of at most `max` bytes within `within`; a larger
/// one is refused before it is buffered (the limit bounds memory per
/// request), a slower one is cut off (a trickled body holds a connection).
pub async fn read_body(
    payload: web::Payload,
    max: usize,
    within: std::time::Duration,
) -> Result<web::Bytes, ApiError> {
    tokio::time::timeout(within, read_all(payload, max))
        .await
        .unwrap_or(Err(ApiError::BodyTimeout))
}

async fn read_all(mut payload: web::Payload, max: usize) -> Result<web::Bytes, ApiError> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| match e {
            actix_web::error::PayloadError::Overflow => ApiError::BodyTooLarge(max),
            other => ApiError::MalformedJson(other.to_string()),
        })?;
        if body.len() + chunk.len() > max {
            return Err(ApiError::BodyTooLarge(max));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Any route not served: a JSON 404.
pub async fn no_route() -> actix_web::HttpResponse {
    ApiError::NotFound("route_not_found").reply().into()
}
