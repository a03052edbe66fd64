//! # alliance
//!
//! A private ledger for a consortium of organizations. Each member runs one
//! node; nodes replicate one ledger with Raft; every connection is mutual TLS
//! with certificates issued by each organization's own CA.
//!
//! ## Layout
//!
//! The design these modules rely on (guarantees, trust model, identifiers,
//! replication, limits) is `docs/design.md`.
//!
//! - [`config`]: node and client configuration, genesis; validated at start.
//! - [`ledger`]: the domain, pure and deterministic: commands, `apply` and
//!   the checks of each command, sealing entries into blocks of the hash
//!   chain, the invariants asserted after every entry.
//! - [`raft`]: openraft type config; the sled store and log store; the state
//!   machine (`apply`, persist, reads, load, snapshots); the peer network.
//! - [`codec`]: the binary encoding of stored records and peer messages.
//! - [`identity`]: certificate → [`identity::Principal`], rustls configs, the
//!   evidence of origin every write carries ([`identity::attest`]) and signed
//!   requests ([`identity::request`]).
//! - [`api`]: the listeners (routes, peer, public window), request bodies and
//!   queries, the service that runs each request on the leader (reads,
//!   writes, forwarding, group commit), typed answers rendered to JSON at
//!   the edge. Its module docs draw its one-way imports.
//! - [`node`]: wiring of one node; any panic (a failed invariant) stops it.
//! - [`memory`]: the node's resident memory held to its soft limit.
//! - [`client`]: the mTLS HTTP client used by `alliance client`, the demo and tests.
//! - [`demo`]: the one-command local consortium (also the tests' harness).
//! - [`bench`]: a load generator against a running demo consortium.
//! - [`audit`]: recompute the chain and balances, through the API or on a stopped node's files.
//! - [`backup`]: a running node's state to a checksummed file, restored only into a new node id.
//! - [`import`]: transfers from a CSV or JSON-lines file, posted in batches.
//!
//! Modules depend downward only: `api → raft → ledger → codec`, `api → identity`,
//! `raft → identity` (evidence checked in apply);
//! the API names no sled type: it reads through `raft`'s own types and errors
//! (only `audit`, which opens a stopped node's files, uses sled's).
//!
//! ## The write path
//!
//! ```text
//! HTTPS request (api_addr, client cert verified by rustls)
//!   → api::identify: Principal from the verified leaf (org = the CA that signed it, role = OU)
//!   → api::routes: api::body::write_command parses and validates the body; role check at
//!     the edge; a caller of another organization must sign (api::service::signed)
//!   → api::service: on a follower, forward to the leader over raft_addr, sealed with
//!     this node's key (identity::attest; single transfers in bundles, api::relay);
//!     the leader answers a typed PeerAnswer
//!   → on the leader, single transfers queue for group commit (api::group):
//!     one entry carries many callers' transfers in sealed bundles
//!   → leader stamps the time, Raft::client_write(Entry)
//!   → raft::log_store: append + fsync on a majority → committed
//!   → raft::state_machine: the evidence of each unit checked (identity::attest::Witness),
//!     then Ledger::apply (checks again, deterministically; seals the entry into a
//!     block of the hash chain), one sled batch
//!   → the outcome (transfer record or rejection) → api::views::Answer
//!   → rendered to JSON by the listener that received the request
//! ```
//!
//! ## The read path
//!
//! ```text
//! HTTPS request → api::identify → api::routes (api::query parses the query string)
//!   → api::service: unless `?consistency=local`, a read index: on the leader,
//!     Raft::ensure_linearizable (a quorum confirms leadership and the leader has
//!     applied everything committed before the read began); on a follower, the
//!     leader's read index over raft_addr, then wait until applied that far
//!   → api::service::read: the applied state under its read lock (raft::state_machine),
//!     settled records and histories from sled → api::views::Answer with `as_of`
//!   → rendered to JSON by the listener that received the request
//! ```
//!
//! `?consistency=local` reads this node's applied state directly and reports
//! `as_of`, its applied index.

#![forbid(unsafe_code)]

pub mod api;
pub mod audit;
pub mod backup;
pub mod bench;
pub mod client;
pub mod codec;
pub mod config;
pub mod demo;
pub mod error;
pub mod identity;
pub mod import;
pub mod ledger;
pub mod memory;
pub mod node;
pub mod stats;
// openraft's trait signatures fix `StorageError` (large) as the error type.
#[allow(clippy::result_large_err)]
pub mod raft;
