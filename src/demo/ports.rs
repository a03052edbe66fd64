//! Free loopback ports for the nodes' listeners.

use std::net::{SocketAddr, TcpListener};

use crate::error::{Error, Result};

/// Lowest port handed out; below it are well-known and registered services.
const PORT_MIN: u16 = 10_000;

/// `n` ports free on loopback now, chosen below the kernel's ephemeral
/// range: ports in that range are also handed out as the source ports of
/// outgoing connections, and one could be taken between this check and the
/// node's bind. Another process could still take one; the node then stops
/// with a clear bind error.
pub fn free_ports(n: usize) -> Result<Vec<SocketAddr>> {
    let ephemeral_low = ephemeral_port_low();
    let span = u32::from(ephemeral_low - PORT_MIN);
    let seed = search_seed();
    // The ports are free when found but released on return, and the nodes
    // bind them only seconds later (after certificates and genesis): a
    // second consortium made in this process meanwhile must not be handed
    // the same ones. (Another process can still race for them.)
    static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
    let mut found = Vec::with_capacity(n);
    for k in 0..span {
        if found.len() == n {
            break;
        }
        let port = PORT_MIN + ((seed.wrapping_add(k.wrapping_mul(7_919))) % span) as u16;
        if handed_out.contains(&port) {
            continue;
        }
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
            found.push(l);
        }
    }
    for l in &found {
        if let Ok(addr) = l.local_addr() {
            handed_out.insert(addr.port());
        }
    }
    if found.len() < n {
        return Err(Error::Other(format!(
            "found only {} free ports below {ephemeral_low}",
            found.len()
        )));
    }
    found
        .iter()
        .map(|l| l.local_addr().map_err(Error::from))
        .collect()
}

/// The lowest port of the kernel's ephemeral range (Linux; 32768 if it
/// cannot be read), and at least 1000 above [`PORT_MIN`].
fn ephemeral_port_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .next()
                .and_then(|p| p.parse::<u16>().ok())
        })
        .unwrap_or(32_768)
        .max(PORT_MIN + 1_000)
}

/// Where the search starts: it differs between processes and calls, so
/// that clusters made at the same moment do not try the same ports first.
fn search_seed() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
        ^ std::process::id().wrapping_mul(2_654_435_761)
}
