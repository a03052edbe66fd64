//! Integration tests: real node processes, real TLS, real disk.

mod attest;
mod chain;
mod cluster;
mod errors;
mod gov;
mod harness;
mod identity;
mod lapsed;
mod ledger_api;
mod membership;
mod nemesis;
mod proxy;
mod readme;
mod scripts;
mod semantics;
