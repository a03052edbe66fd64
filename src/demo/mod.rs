//! `alliance demo`: a whole consortium on this machine in one command.
//!
//! [`prepare`] makes, under a directory, one organization per node with its
//! CA and one certificate per role (by running our own `scripts/`, embedded in
//! the binary), the genesis file, one config per node, one client config per
//! organization and role, and `demo.json`, an index of all of it. Running it
//! again on the same directory reuses what is there, so the consortium and its
//! data resume. The integration tests build their clusters with it too.
//!
//! One file a job:
//!
//! - `layout`: `demo.json`, the index of what was made, and lookups in it.
//! - `provision`: [`prepare`], which makes the certificates, genesis and
//!   configs in order.
//! - `scripts`: the embedded admin scripts, written out and run.
//! - `configs`: node and client configs, written as TOML.
//! - `ports`: free loopback ports for the nodes' listeners.
//! - `supervise`: node processes started, watched and stopped.
//! - `scenario`: the sample accounts and transfers.
//! - `summary`: what `alliance demo` prints once the consortium is up.
//! - `run`: [`run`], the `alliance demo` command, which ties them together.

mod configs;
mod layout;
mod ports;
mod provision;
mod run;
mod scenario;
mod scripts;
mod summary;
mod supervise;

use crate::config::{Limits, RaftTuning};

pub use configs::write_toml;
pub use layout::{DemoIdentity, DemoNode, DemoOrg, Layout};
pub use ports::free_ports;
pub use provision::prepare;
pub use run::run;
pub use scripts::{run_script, write_scripts, SCRIPTS};
pub use supervise::{spawn_node, spawn_node_with_env, stop_child, wait_for_leader};

/// Roles that get a client certificate in every demo organization.
pub const CLIENT_ROLES: [&str; 3] = ["app", "partner", "admin"];

/// Most nodes `alliance demo` will start: one per organization on one machine.
pub const DEMO_NODES_MAX: usize = 9;

/// What to make.
#[derive(Clone, Debug)]
pub struct Options {
    pub nodes: usize,
    pub raft: RaftTuning,
    pub limits: Limits,
    /// Genesis's governance threshold (`new-genesis.sh --threshold`);
    /// `majority` if none.
    pub threshold: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            nodes: 3,
            raft: RaftTuning::default(),
            limits: Limits::default(),
            threshold: None,
        }
    }
}
