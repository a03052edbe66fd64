//! Node processes: started from this binary, watched, and stopped.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::DemoNode;
use crate::client::ApiClient;
use crate::error::{Error, Result};

/// Starts a node process of this binary, logging to the node's log file.
pub fn spawn_node(exe: &Path, node: &DemoNode) -> Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&node.log)?;
    Command::new(exe)
        .args(["node", "--config"])
        .arg(&node.config)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .map_err(Error::from)
}

/// Asks a process to stop (SIGTERM) and waits up to `grace` before SIGKILL.
pub fn stop_child(child: &mut Child, grace: Duration) {
    let _ = Command::new("sh")
        .args(["-c", &format!("kill -TERM {}", child.id())])
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
/// or until a node exits by itself.
pub(super) async fn wait_for_stop(children: &mut [Child]) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("install a SIGTERM handler");
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return,
            _ = term.recv() => return,
            _ = tick.tick() => {
                for c in children.iter_mut() {
                    if let Ok(Some(status)) = c.try_wait() {
                        eprintln!("a node (pid {}) exited ({status}); stopping the demo", c.id());
                        return;
                    }
                }
            }
        }
    }
}
