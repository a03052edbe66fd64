//! The HTTPS API (`api_addr`), the peer channel (`raft_addr`), the public
//! window (`public_addr`) and the operations listener (`ops_addr`).
//!
//! Imports run one way, from the listeners down to the core:
//!
//! ```text
//! routes, peer, public, ops   the listeners' handlers: parse, check at the edge, render
//!   → service                 the core: runs each request on the leader (forwarding,
//!                             group commit, reads), answers in types
//!   → group, relay, watch,    group commit on the leader; bundles from a follower;
//!     chain                   replicas comparing heads; reading the chain
//!   → batcher                 coalescing concurrent requests (group and relay)
//!   → views, error            typed answers and errors, rendered to JSON at the edge
//! metrics                     the API's answers by status; /metrics on the ops listener
//! identify                    connection → Principal / NodePrincipal extractors
//! body, query                 request bodies and query strings → typed values
//! ```
//!
//! Both member listeners require a client certificate in the TLS
//! handshake; the caller's identity is computed once per connection, from
//! the verified session ([`identify`]).

pub mod batcher;
pub mod body;
pub mod chain;
pub mod error;
pub mod gov;
pub mod group;
pub mod identify;
pub mod metrics;
pub mod openapi;
pub mod ops;
pub mod peer;
pub mod public;
pub mod query;
pub mod relay;
pub mod routes;
pub mod service;
pub mod views;
pub mod watch;
