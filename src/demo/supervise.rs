//! Node processes: started from this binary, watched, and stopped.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::DemoNode;
use crate::client::ApiClient;
use crate::error::{Error, Result};

/// Starts a node process of this binary, logging to the node's log file.
pub fn spawn_node(exe: &Path, node: &DemoNode) -> Result<Child> {
    spawn_node_with_env(exe, node, &[])
}

/// [`spawn_node`], with environment variables `env` set for the node.
pub fn spawn_node_with_env(exe: &Path, node: &DemoNode, env: &[(String, String)]) -> Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&node.log)?;
    Command::new(exe)
        .args(["node", "--config"])
        .arg(&node.config)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .map_err(Error::from)
}

/// Asks a process to stop (SIGTERM) and waits up to `grace` before SIGKILL.
pub fn stop_child(child: &mut Child, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .stderr(Stdio::null())
        .status();
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Waits until `client`'s node reports a leader; returns its id.
pub async fn wait_for_leader(client: &ApiClient, within: Duration) -> Result<u64> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(r) = client.cluster().await {
            if let Some(leader) = r.body["leader"].as_u64() {
                return Ok(leader);
            }
        }
        if Instant::now() > deadline {
            return Err(Error::Other(format!("no leader within {within:?}")));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Until Ctrl-C or SIGTERM (a supervisor's stop must not orphan the nodes),
/// or until a node exits by itself, which is an error that names it and
/// its log. `nodes` are the children's nodes, in the same order.
pub(super) async fn wait_for_stop(children: &mut [Child], nodes: &[DemoNode]) -> Result<()> {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("install a SIGTERM handler");
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = tick.tick() => {
                for (c, node) in children.iter_mut().zip(nodes) {
                    if let Ok(Some(status)) = c.try_wait() {
                        return Err(Error::Other(format!(
                            "node {} exited by itself ({status}); its log is {}; the demo \
                             stops the other nodes",
                            node.id,
                            node.log.display()
                        )));
                    }
                }
            }
        }
    }
    let ids: Vec<String> = nodes.iter().map(|n| n.id.to_string()).collect();
    eprintln!("alliance demo: stopping nodes {}", ids.join(", "));
    Ok(())
}

/// Refuses to start the nodes of a consortium whose addresses are taken:
/// most likely the same demo running already (its nodes would stop at
/// once on their locked data directories).
pub(super) fn ensure_addresses_free(dir: &Path, nodes: &[DemoNode]) -> Result<()> {
    for node in nodes {
        let listeners = [
            ("api", &node.api_url),
            ("peer", &node.peer_url),
            ("public", &node.public_url),
            ("ops", &node.ops_url),
        ];
        for (what, url) in listeners {
            let Some(addr) = url.split("://").nth(1) else {
                continue;
            };
            if std::net::TcpListener::bind(addr).is_err() {
                return Err(Error::Other(format!(
                    "the consortium under {} seems to be running already: node {}'s {what} \
                     address {addr} is in use. Stop it (Ctrl-C where it runs), or give this \
                     demo another --dir",
                    dir.display(),
                    node.id
                )));
            }
        }
    }
    Ok(())
}
