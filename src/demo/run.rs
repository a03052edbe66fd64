//! `alliance demo`: make or reopen the consortium, start its nodes, run the
//! scenario, print the summary, and stop the nodes when told.

use std::path::Path;
use std::time::{Duration, Instant};

use super::scenario::scenario;
use super::summary::print_summary;
use super::supervise::{
    ensure_addresses_free, spawn_node, stop_child, wait_for_leader, wait_for_stop,
};
use super::{prepare, Options};
use crate::error::{Error, Result};

/// How long the demo waits for a leader.
const LEADER_WAIT: Duration = Duration::from_secs(60);

/// `alliance demo`.
pub async fn run(dir: &Path, opts: &Options, exit: bool) -> Result<()> {
    let started = Instant::now();
    let layout = prepare(dir, opts)?;
    let exe = std::env::current_exe()?;
    ensure_addresses_free(dir, &layout.nodes)?;
    let mut children = Vec::new();
    for node in &layout.nodes {
        children.push(spawn_node(&exe, node)?);
    }
    let result = async {
        let first = layout.nodes[0].id;
        let status = layout.client(&layout.nodes[0].org, "app", first, Duration::from_secs(5))?;
        let leader = wait_for_leader(&status, LEADER_WAIT).await?;
        let balances = scenario(&layout).await?;
        print_summary(&layout, leader, started.elapsed());
        println!("\nBalances (minor units, read linearizably by each owner):");
        for (account, balance) in balances {
            println!("  {account:<16} {balance}");
        }
        if !exit {
            println!("Ctrl-C stops the consortium; the same command resumes it.");
            wait_for_stop(&mut children, &layout.nodes).await?;
        }
        Ok::<_, Error>(())
    }
    .await;
    for child in &mut children {
        stop_child(child, Duration::from_secs(10));
    }
    result
}
