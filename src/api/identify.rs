//! Who is calling: the identity of each connection, computed once from the
//! verified TLS session when it opens, and handed to handlers as a
//! [`Principal`] (API listener) or [`NodePrincipal`] (peer listener)
//! extractor. Nothing else identifies a caller. Each request checks again
//! that the certificate is not revoked since (a revoked one is refused and
//! its connection closed), and on the peer listener that the node is still
//! one this node talks to.

use std::any::Any;
use std::future::{ready, Ready};
use std::sync::Arc;

use actix_tls::accept::rustls_0_23::TlsStream;
use actix_web::dev::{Extensions, Payload};
use actix_web::rt::net::TcpStream;
use actix_web::{web, FromRequest, HttpRequest};

use super::error::ApiError;
use crate::identity::refusals::RefusalLog;
use crate::identity::{IdentityError, NodePrincipal, PeerCert, Principal, Trust};
use crate::raft::incarnation::{Incarnations, INCARNATION_HEADER};
use crate::raft::network::GENESIS_HEADER;

/// The identity of an API connection, set when it opens, and the trust
/// that says whether its certificate has been revoked since.
#[derive(Clone)]
struct ApiIdentity(Result<Principal, IdentityError>, Arc<Trust>);

/// The identity of a peer connection, set when it opens: the node, the
/// certificate it presented (to check it again on each request), and the
/// trust that says whether that has been revoked since.
#[derive(Clone)]
struct PeerIdentity(Result<PeerCert, IdentityError>, Arc<Trust>);

/// What a peer's request must show besides its node certificate: the same
/// genesis, and the incarnation of its storage this node knows.
pub struct PeerGate {
    pub genesis_hash: String,
    pub incarnations: Incarnations,
}

fn peer_chain(conn: &dyn Any) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    conn.downcast_ref::<TlsStream<TcpStream>>()
        .and_then(|tls| tls.get_ref().1.peer_certificates())
        .map(|certs| certs.iter().map(|c| c.clone().into_owned()).collect())
        .unwrap_or_default()
}

/// `on_connect` hook of the API listener; a certificate that is not a
/// member identity goes to `refusals`.
pub fn identify_api(
    trust: Arc<Trust>,
    refusals: Arc<RefusalLog>,
) -> impl Fn(&dyn Any, &mut Extensions) + Send + Sync + 'static {
    move |conn, ext| {
        let identity = trust.identify(&peer_chain(conn));
        if let Err(e) = &identity {
            refusals.refused(&format_args!("identity: {e}"));
        }
        ext.insert(ApiIdentity(identity, trust.clone()));
    }
}

/// `on_connect` hook of the peer listener; a certificate that is not a
/// member node goes to `refusals`.
pub fn identify_peer(
    trust: Arc<Trust>,
    refusals: Arc<RefusalLog>,
) -> impl Fn(&dyn Any, &mut Extensions) + Send + Sync + 'static {
    move |conn, ext| {
        let identity = trust.identify_node(&peer_chain(conn));
        if let Err(e) = &identity {
            refusals.refused(&format_args!("peer identity: {e}"));
        }
        ext.insert(PeerIdentity(identity, trust.clone()));
    }
}

impl FromRequest for Principal {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(match req.conn_data::<ApiIdentity>() {
            Some(ApiIdentity(Ok(p), trust)) if trust.is_refused(p) => Err(ApiError::Revoked),
            Some(ApiIdentity(Ok(p), _)) => Ok(p.clone()),
            Some(ApiIdentity(Err(e), _)) => Err(ApiError::Unauthenticated(e.to_string())),
            None => Err(ApiError::Unauthenticated("no verified TLS session".into())),
        })
    }
}

impl FromRequest for NodePrincipal {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(node_principal(req))
    }
}

fn node_principal(req: &HttpRequest) -> Result<NodePrincipal, ApiError> {
    let identity = match req.conn_data::<PeerIdentity>() {
        Some(PeerIdentity(Ok(peer), trust)) => trust.is_refused_peer(peer).map(|()| peer),
        Some(PeerIdentity(Err(e), _)) => Err(*e),
        None => return Err(ApiError::Unauthenticated("no verified TLS session".into())),
    };
    let node = match identity {
        Ok(peer) => peer.node.clone(),
        Err(IdentityError::Revoked) => return Err(ApiError::Revoked),
        Err(IdentityError::NotANode) => {
            return Err(ApiError::Forbidden(
                "the peer listener serves member nodes only",
            ))
        }
        Err(e) => return Err(ApiError::Unauthenticated(e.to_string())),
    };
    let Some(gate) = req.app_data::<web::Data<PeerGate>>() else {
        return Err(ApiError::Unavailable("not ready".into()));
    };
    let header = |name: &str| req.headers().get(name).and_then(|h| h.to_str().ok());
    // Same genesis, or the two nodes would apply the log differently.
    if header(GENESIS_HEADER) != Some(gate.genesis_hash.as_str()) {
        return Err(ApiError::Forbidden(
            "the calling node runs a different genesis file than this node: every node of a \
             consortium runs the same one",
        ));
    }
    if let Err(why) = gate.incarnations.check(node.id, header(INCARNATION_HEADER)) {
        tracing::error!(peer = node.id, "{why}");
        return Err(ApiError::Forbidden(
            "this node id rejoined with lost storage",
        ));
    }
    Ok(node)
}
