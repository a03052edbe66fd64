//! API errors: one closed set of codes, each with its HTTP status.
//!
//! Ledger rejections come from [`Rejection`]; the rest are the edge's own
//! (malformed input, identity, availability). The README's table lists them.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

use super::views::{Answer, ErrorBody, ErrorView, Rendered};
use crate::ledger::Rejection;

/// An error the API returns to a caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiError {
    /// The body is not the JSON the endpoint expects.
    MalformedJson(String),
    /// A peer's Raft RPC body is not the binary message the route expects.
    MalformedRpc(String),
    /// A field's value breaks its rule (ids, assets, amounts, memo).
    InvalidField {
        code: &'static str,
        message: String,
    },
    InvalidQuery(String),
    BodyTooLarge(usize),
    /// A write's body is not declared as JSON (`content-type`).
    NotJson,
    /// The body did not arrive within the request timeout.
    BodyTimeout,
    /// The session's certificate is not a member identity.
    Unauthenticated(String),
    /// The session's certificate was revoked after the connection opened;
    /// the connection is closed after this answer.
    Revoked,
    /// The caller's role may not do this.
    Forbidden(&'static str),
    /// A request's `alliance-signature` is malformed or does not verify.
    InvalidSignature(String),
    /// A write of another organization's caller, not signed by the caller:
    /// this node may not vouch for it (the argument is this node's org).
    SignOrUseOwnNode(String),
    /// Unknown route, or an object the caller may not see.
    NotFound(&'static str),
    /// A route that does not take this method; the ones it takes.
    MethodNotAllowed(String),
    Rejected(Rejection),
    /// Too many writes in flight on this node.
    Overloaded,
    /// The caller's request bodies on this node hold its budget (`limit`,
    /// `max` bytes).
    BodiesInFlight {
        limit: &'static str,
        max: usize,
    },
    /// The public window's budget for this client is spent; retry after N s.
    RateLimited(u64),
    /// No leader reachable before the deadline; nothing was proposed.
    NoQuorum,
    /// A write may have been proposed, but no answer came before the deadline.
    OutcomeUnknown,
    /// This node cannot serve now (storage failure, shutting down).
    Unavailable(String),
    /// This node's chain differs from its peers'; it serves no reads.
    Diverged(String),
}

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::MalformedJson(_) => "malformed_json",
            Self::MalformedRpc(_) => "malformed_rpc",
            Self::InvalidField { code, .. } => code,
            Self::InvalidQuery(_) => "invalid_query",
            Self::BodyTooLarge(_) => "body_too_large",
            Self::NotJson => "unsupported_media_type",
            Self::BodyTimeout => "body_timeout",
            Self::Unauthenticated(_) => "unauthenticated",
            Self::Revoked => "certificate_revoked",
            Self::Forbidden(_) => "forbidden",
            Self::SignOrUseOwnNode(_) => "sign_or_use_own_node",
            Self::InvalidSignature(_) => "invalid_signature",
            Self::NotFound(what) => what,
            Self::MethodNotAllowed(_) => "method_not_allowed",
            Self::Rejected(r) => r.code(),
            Self::Overloaded | Self::BodiesInFlight { .. } => "overloaded",
            Self::RateLimited(_) => "rate_limited",
            Self::NoQuorum => "no_quorum",
            Self::OutcomeUnknown => "outcome_unknown",
            Self::Unavailable(_) => "unavailable",
            Self::Diverged(_) => "diverged",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::MalformedJson(_)
            | Self::MalformedRpc(_)
            | Self::InvalidField { .. }
            | Self::InvalidQuery(_) => StatusCode::BAD_REQUEST,
            Self::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NotJson => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::Unauthenticated(_) | Self::InvalidSignature(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) | Self::SignOrUseOwnNode(_) | Self::Revoked => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Rejected(r) => rejection_status(*r),
            Self::Overloaded | Self::BodiesInFlight { .. } | Self::RateLimited(_) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Self::NoQuorum | Self::Unavailable(_) | Self::Diverged(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::OutcomeUnknown => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    pub fn message(&self) -> String {
        match self {
            Self::MalformedJson(m)
            | Self::MalformedRpc(m)
            | Self::InvalidQuery(m)
            | Self::Unauthenticated(m)
            | Self::InvalidSignature(m)
            | Self::Unavailable(m)
            | Self::Diverged(m) => m.clone(),
            Self::InvalidField { message, .. } => message.clone(),
            Self::BodyTooLarge(max) => format!("request body is larger than {max} bytes"),
            Self::BodyTimeout => "the request body did not arrive in time".to_owned(),
            Self::NotJson => {
                "a write's body is JSON: send the header content-type: application/json".to_owned()
            }
            Self::Forbidden(m) => (*m).to_owned(),
            Self::Revoked => "this connection's certificate has been revoked; the connection is \
                             closed: ask your organization's admin for a new certificate"
                .to_owned(),
            Self::SignOrUseOwnNode(org) => format!(
                "this node belongs to {org} and vouches only for {org}'s callers: send the \
                 write to a node of your own organization, or sign it with your \
                 certificate's key (alliance-signature header)"
            ),
            Self::NotFound(what) => not_found_message(what).to_owned(),
            Self::MethodNotAllowed(allow) => format!("this route takes {allow} only"),
            Self::Rejected(r) => r.message().to_owned(),
            Self::Overloaded => "too many writes in flight on this node; retry later".to_owned(),
            Self::BodiesInFlight { limit, max } => format!(
                "the request bodies this node holds for you (your organization's, or a peer \
                 node's) are at {limit} ({max} bytes); retry once some are answered"
            ),
            Self::RateLimited(s) => format!("request budget spent; retry after {s} s"),
            Self::NoQuorum => "no leader with a quorum could be reached; nothing was written".to_owned(),
            Self::OutcomeUnknown => {
                "the write was proposed but not confirmed in time; retry with the same id to learn its outcome".to_owned()
            }
        }
    }

    /// The error's JSON body and status.
    pub fn render(&self) -> Rendered {
        let message = self.message();
        let error = ErrorView {
            code: self.code(),
            message: &message,
        };
        Rendered::with(self.status().as_u16(), &ErrorBody { error })
    }
}

/// The HTTP response for a service result.
pub fn respond(result: Result<Answer, ApiError>) -> HttpResponse {
    match result {
        Ok(answer) => answer.render().into(),
        Err(e) => e.render().into(),
    }
}

fn rejection_status(r: Rejection) -> StatusCode {
    use Rejection::*;
    match r {
        RoleMayNotWrite
        | OriginMissing
        | OriginInvalid
        | OriginForeign
        | OriginStale
        | IdOutsideNamespace
        | AllowNegativeRequiresAdmin
        | GrantRequiresAdmin
        | CloseRequiresAdmin
        | AccountNotOwned
        | DebitAccountNotOwned
        | CertificateRevoked
        | SignatureRequired
        | AdminRequired
        | VoteRequired
        | OrgNotActive
        | OrgRemoved => StatusCode::FORBIDDEN,
        AccountNotFound
        | DebitAccountNotFound
        | CreditAccountNotFound
        | PendingTransferNotFound
        | ProposalNotFound
        | NodeNotFound => StatusCode::NOT_FOUND,
        AccountExists
        | OriginReplayed
        | ExistsWithDifferentFields
        | PendingTransferAlreadyPosted
        | PendingTransferAlreadyVoided
        | PendingTransferExpired
        | AlreadyVoted
        | ProposalClosed
        | OrgExists
        | NodeExists => StatusCode::CONFLICT,
        UnknownReaderOrg
        | AccountsMustBeDifferent
        | AssetMismatch
        | DebitAccountClosed
        | CreditAccountClosed
        | InsufficientFunds
        | ExceedsBalanceMax
        | Overflow
        | LinkedTransferFailed
        | PendingTransferNotPending
        | ExceedsPendingAmount
        | DebitAccountFrozen
        | CreditAccountFrozen
        | DigestMismatch
        | TooManyOpenProposals
        | InvalidAction
        | UnknownOrg
        | AccountAlreadyFrozen
        | AccountNotFrozen
        | AccountFrozen
        | BallotTooLarge
        | TooManyRevocations
        | OrgRunsNodes
        | TooFewNodes
        | UnknownCa => StatusCode::UNPROCESSABLE_ENTITY,
    }
}

/// The edge's 404 codes, each with what it says: what may be missing, and
/// where to look.
pub const NOT_FOUND: &[(&str, &str)] = &[
    (
        "route_not_found",
        "no such route (the README's API table lists them; GET /v1/openapi.json describes them)",
    ),
    (
        "account_not_found",
        "no such account, or this organization may not read it (its owner grants reads)",
    ),
    (
        "transfer_not_found",
        "no such transfer, or this organization may read neither of its accounts",
    ),
    (
        "block_not_found",
        "no block at this height yet (GET /v1/cluster shows the height)",
    ),
    (
        "proposal_not_found",
        "no such proposal (GET /v1/gov/proposals lists them)",
    ),
];

/// What a 404 says, by its code ([`NOT_FOUND`]).
fn not_found_message(code: &str) -> &'static str {
    NOT_FOUND.iter().find(|(known, _)| *known == code).map_or(
        "no such object, or not visible to this organization",
        |(_, m)| m,
    )
}

/// The HTTP status of a rejection code (for documentation and tests).
pub fn status_of(r: Rejection) -> u16 {
    rejection_status(r).as_u16()
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code(), self.message())
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status()
    }
    fn error_response(&self) -> HttpResponse {
        let mut response: HttpResponse = self.render().into();
        if *self == Self::Revoked {
            response
                .head_mut()
                .set_connection_type(actix_web::http::ConnectionType::Close);
        }
        response
    }
}

/// Any route not served: a JSON 404.
pub async fn no_route() -> HttpResponse {
    ApiError::NotFound("route_not_found").render().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's table of error codes names every rejection, with the
    /// status the API answers it with.
    #[test]
    fn every_rejection_is_in_the_readmes_table_with_its_status() {
        let readme = include_str!("../../README.md");
        let rows: Vec<&str> = readme.lines().filter(|l| l.starts_with("| 4")).collect();
        for r in Rejection::ALL {
            let code = format!("`{}`", r.code());
            let row = rows.iter().find(|row| row.contains(&code));
            let row = row.unwrap_or_else(|| panic!("{code} is not in the README's error table"));
            let status = format!("| {} |", status_of(*r));
            assert!(row.starts_with(&status), "{code}: README says {row}");
        }
    }
}
