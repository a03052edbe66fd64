//! A TCP proxy the tests control. Every peer link and every client link of a
//! test cluster runs through one [`Link`], so a test can cut a link in one
//! direction or both, heal it, or slow it down, without the nodes knowing.
//!
//! A cut drops bytes, as a partition drops packets: the sender's writes
//! succeed and the receiver hears nothing. A connection that lost bytes is
//! broken (its TLS stream has a hole), so it is closed when the link heals,
//! as TCP would give up on it; new connections then work again.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// Chunks in flight per direction of one connection (backpressure past it).
const CHUNKS_IN_FLIGHT: usize = 256;
const CHUNK_BYTES: usize = 64 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Which way bytes flow through a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// From the dialer to the target.
    Forward,
    /// From the target back to the dialer.
    Backward,
}

/// One proxied route: connections to [`Link::addr`] go on to the target.
pub struct Link {
    pub addr: SocketAddr,
    state: Arc<LinkState>,
    accept: tokio::task::JoinHandle<()>,
}

struct LinkState {
    forward_cut: AtomicBool,
    backward_cut: AtomicBool,
    delay_ms: AtomicU64,
    /// Bumped on every heal: connections that lost bytes close then.
    healed: watch::Sender<u64>,
}

impl LinkState {
    fn cut_flag(&self, dir: Dir) -> &AtomicBool {
        match dir {
            Dir::Forward => &self.forward_cut,
            Dir::Backward => &self.backward_cut,
        }
    }

    fn is_cut(&self, dir: Dir) -> bool {
        self.cut_flag(dir).load(Ordering::SeqCst)
    }
}

impl Link {
    /// Listens on an ephemeral loopback port, forwarding to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let state = Arc::new(LinkState {
            forward_cut: AtomicBool::new(false),
            backward_cut: AtomicBool::new(false),
            delay_ms: AtomicU64::new(0),
            healed: watch::channel(0).0,
        });
        let accept_state = state.clone();
        let accept = tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((inbound, _)) => {
                        tokio::spawn(relay(inbound, target, accept_state.clone()));
                    }
                    // Out of descriptors, say: the link must not die quietly.
                    Err(e) => {
                        eprintln!("proxy {addr} -> {target}: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        });
        Self {
            addr,
            state,
            accept,
        }
    }

    /// Drops (or, `false`, passes again) the bytes flowing `dir`.
    pub fn set_cut(&self, dir: Dir, cut: bool) {
        self.state.cut_flag(dir).store(cut, Ordering::SeqCst);
    }

    /// Holds every chunk for `delay` before passing it on, both ways.
    pub fn set_delay(&self, delay: Duration) {
        self.state
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Passes everything again, at once; connections that lost bytes close.
    pub fn heal(&self) {
        self.set_cut(Dir::Forward, false);
        self.set_cut(Dir::Backward, false);
        self.set_delay(Duration::ZERO);
        self.state.healed.send_modify(|g| *g += 1);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn relay(inbound: TcpStream, target: SocketAddr, state: Arc<LinkState>) {
    let Ok(Ok(outbound)) = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await
    else {
        return; // the target is down: the dialer sees its connection close
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let lost_bytes = Arc::new(AtomicBool::new(false));
    let (in_read, in_write) = inbound.into_split();
    let (out_read, out_write) = outbound.into_split();
    let forward = pump(
        in_read,
        out_write,
        Dir::Forward,
        state.clone(),
        lost_bytes.clone(),
    );
    let backward = pump(out_read, in_write, Dir::Backward, state, lost_bytes);
    tokio::join!(forward, backward);
}

/// Copies one direction of a connection, dropping or delaying as the link
/// says, until either end closes or the link heals after losing bytes.
async fn pump(
    mut from: OwnedReadHalf,
    to: OwnedWriteHalf,
    dir: Dir,
    state: Arc<LinkState>,
    lost_bytes: Arc<AtomicBool>,
) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>(CHUNKS_IN_FLIGHT);
    let writer = tokio::spawn(deliver(rx, to));
    let mut healed = state.healed.subscribe();
    let mut buf = vec![0u8; CHUNK_BYTES];
    loop {
        tokio::select! {
            read = from.read(&mut buf) => {
                let n = match read {
                    // A close does not cross a cut either: the far side
                    // hears of it when the link heals (and the connection,
                    // having lost it, closes then).
                    Ok(0) | Err(_) if state.is_cut(dir) => {
                        lost_bytes.store(true, Ordering::SeqCst);
                        let _ = healed.changed().await;
                        writer.abort();
                        return;
                    }
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                if state.is_cut(dir) {
                    lost_bytes.store(true, Ordering::SeqCst);
                    continue;
                }
                let delay = Duration::from_millis(state.delay_ms.load(Ordering::SeqCst));
                if tx.send((Instant::now() + delay, buf[..n].to_vec())).await.is_err() {
                    break;
                }
            }
            changed = healed.changed() => {
                if changed.is_err() || lost_bytes.load(Ordering::SeqCst) {
                    writer.abort();
                    return;
                }
            }
        }
    }
    drop(tx);
    let _ = writer.await;
}

async fn deliver(mut rx: mpsc::Receiver<(Instant, Vec<u8>)>, mut to: OwnedWriteHalf) {
    while let Some((due, bytes)) = rx.recv().await {
        tokio::time::sleep_until(due).await;
        if to.write_all(&bytes).await.is_err() {
            return;
        }
    }
    let _ = to.shutdown().await;
}

/// Every link of one cluster: one per ordered pair of nodes (the dialer's
/// connections to the other's peer listener) and one per node's API.
pub struct Net {
    peer: BTreeMap<(u64, u64), Link>,
    api: BTreeMap<u64, Link>,
}

impl Net {
    /// `nodes`: each node's id with its peer and API addresses.
    pub async fn start(nodes: &[(u64, SocketAddr, SocketAddr)]) -> Self {
        let mut peer = BTreeMap::new();
        let mut api = BTreeMap::new();
        for &(to, raft, api_addr) in nodes {
            for &(from, _, _) in nodes.iter().filter(|n| n.0 != to) {
                peer.insert((from, to), Link::start(raft).await);
            }
            api.insert(to, Link::start(api_addr).await);
        }
        Self { peer, api }
    }

    /// Where node `from` dials node `to`.
    pub fn peer_addr(&self, from: u64, to: u64) -> SocketAddr {
        self.peer[&(from, to)].addr
    }

    /// Where clients reach node `id`'s API.
    pub fn api_addr(&self, id: u64) -> SocketAddr {
        self.api[&id].addr
    }

    /// Nothing `from` sends reaches `to` (requests `from` makes and answers
    /// it gives); the other direction still flows.
    pub fn cut_one_way(&self, from: u64, to: u64) {
        self.peer[&(from, to)].set_cut(Dir::Forward, true);
        self.peer[&(to, from)].set_cut(Dir::Backward, true);
    }

    /// `a` and `b` hear nothing from each other.
    pub fn cut(&self, a: u64, b: u64) {
        self.cut_one_way(a, b);
        self.cut_one_way(b, a);
    }

    /// Clients of node `id` reach it, but hear nothing back (and it hears
    /// nothing they send).
    pub fn cut_clients(&self, id: u64) {
        self.api[&id].set_cut(Dir::Forward, true);
        self.api[&id].set_cut(Dir::Backward, true);
    }

    /// Every peer link slowed by `delay` each way.
    pub fn delay_peers(&self, delay: Duration) {
        for link in self.peer.values() {
            link.set_delay(delay);
        }
    }

    pub fn heal(&self) {
        for link in self.peer.values().chain(self.api.values()) {
            link.heal();
        }
    }
}
