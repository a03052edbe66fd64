//! Replicas watch each other: every node regularly asks each peer for its
//! chain head over the peer channel and compares the peer's block hash with
//! its own block at that height. Same log, same blocks: a difference means
//! one replica's stored state was changed outside Raft (tampering, a disk
//! fault, a bug). A node that disagrees with more peers than agree with it
//! (counting itself) is the odd one out: it logs at error level, reports it
//! in `GET /v1/cluster`, and refuses reads until an operator restores it
//! (e.g. from a healthy replica's snapshot) and restarts it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::chain::{self, Head};
use super::views::{PeerHeadView, ReplicasView};
use crate::config::NodeId;
use crate::identity::Expiry;
use crate::ledger::chain::{to_hex, Hash};
use crate::raft::network::Peers;
use crate::raft::state_machine::SharedState;
use crate::raft::Raft;

/// Path of the head exchange on the peer listener.
pub const HEAD_PATH: &str = "/peer/v1/head";

/// This node's watch over its peers' chains.
pub struct Watch {
    state: SharedState,
    /// This node's Raft: a node whose clock is off neither campaigns nor
    /// keeps its followers' leases.
    raft: Raft,
    genesis_hash: Hash,
    peers: Peers,
    verdict: Mutex<Verdict>,
    /// `limits.clock_offset_max_ms`.
    clock_offset_max_ms: u64,
    /// Snapshot chunks from the leader: how many are being taken now, and
    /// when the last one was.
    snapshot_chunks: Mutex<Chunks>,
}

#[derive(Default)]
struct Chunks {
    taking: usize,
    last: Option<Instant>,
    /// Whether elections are off for them (to log when they come back).
    holding_off: bool,
}

/// A snapshot chunk being taken ([`Watch::snapshot_chunk`]): the node does
/// not campaign until it is dropped and [`SNAPSHOT_QUIET`] has passed.
pub struct TakingChunk<'a>(&'a Watch);

impl Drop for TakingChunk<'_> {
    fn drop(&mut self) {
        let mut chunks = self.0.chunks();
        chunks.taking -= 1;
        chunks.last = Some(Instant::now());
    }
}

/// How long after the last chunk of a snapshot from its leader a node
/// still does not campaign. openraft's leader sends no heartbeat to a
/// follower while it streams it a snapshot, and a follower does not count
/// the chunks as hearing from its leader: a stream longer than an election
/// timeout (a snapshot of gigabytes) made the receiver campaign, the
/// leader step down for its higher term, and the stream start over, again
/// and again. Chunks come back to back; the last one's call lasts until
/// the snapshot is installed.
const SNAPSHOT_QUIET: Duration = Duration::from_secs(5);

/// Why a TLS handshake with `peer` failed, if TLS says: the peer refused
/// this node's certificate (an alert: revoked, unknown CA), or this node
/// refused the peer's.
fn tls_refusal(e: &(dyn std::error::Error + 'static), peer: NodeId) -> Option<String> {
    match crate::identity::rustls_error(e)? {
        rustls::Error::AlertReceived(alert) => {
            Some(format!("refused the TLS handshake with alert {alert:?}"))
        }
        rustls::Error::InvalidCertificate(rustls::CertificateError::Revoked) => {
            Some(format!("node {peer}'s certificate is revoked"))
        }
        rustls::Error::InvalidCertificate(why) => {
            Some(format!("node {peer}'s certificate is refused: {why:?}"))
        }
        _ => None,
    }
}

/// How a peer answered a head exchange.
enum Asked {
    /// Its head, the certificate it presented, and how far its clock is
    /// ahead of ours (ms).
    Head(Head, Option<Expiry>, Option<i64>),
    /// It answered with an error: why.
    Refused(String),
    NoAnswer,
}

/// What this node last learned from each peer.
#[derive(Default)]
struct Verdict {
    peers: BTreeMap<NodeId, Seen>,
    /// Set once this node finds itself in the minority; never cleared
    /// without a restart.
    diverged: Option<String>,
    /// Set while this node's clock is off most of its peers'.
    clock_off: Option<String>,
}

/// What this node last learned from one peer.
#[derive(Default)]
struct Seen {
    /// Its last head, and whether our block at that height agrees.
    head: Option<(Head, Option<bool>)>,
    /// When it last answered.
    answered_at: Option<Instant>,
    /// Whether it answered the last ask.
    reachable: bool,
    /// Why it refused the last ask, if it did.
    refused: Option<String>,
    /// The certificate it last presented.
    certificate: Option<Expiry>,
    /// How far its clock was ahead of ours at its last answer, ms.
    clock_offset_ms: Option<i64>,
}

/// Why this node's clock is off, if it is: more than `max_ms` from the
/// clocks of most of its `peers` peers (`offsets`: how far each that
/// answered is ahead, in ms). Its own clock counts as agreeing with
/// itself, so it is off once more than half of the whole group, itself
/// included, disagrees with it.
fn clock_off(offsets: &[i64], peers: usize, max_ms: u64) -> Option<String> {
    let mut off: Vec<i64> = (offsets.iter().copied())
        .filter(|o| o.unsigned_abs() > max_ms)
        .collect();
    if off.len() * 2 <= peers + 1 {
        return None;
    }
    off.sort_unstable();
    let typical = off[off.len() / 2];
    let (how, by) = if typical > 0 {
        ("behind", typical)
    } else {
        ("ahead of", typical.saturating_neg())
    };
    Some(format!(
        "this node's clock is about {by} ms {how} the clocks of {} of its {peers} peers, more \
         than limits.clock_offset_max_ms ({max_ms}): fix its time source (NTP)",
        off.len()
    ))
}

impl Verdict {
    /// The verdicts of the peers whose heads this node has compared.
    fn agreements(&self) -> impl Iterator<Item = Option<bool>> + '_ {
        self.peers.values().filter_map(|s| s.head.map(|(_, a)| a))
    }
}

impl Watch {
    pub fn new(
        (state, raft): (SharedState, Raft),
        genesis_hash: Hash,
        peers: Peers,
        clock_offset_max_ms: u64,
    ) -> Self {
        Self {
            state,
            raft,
            genesis_hash,
            peers,
            verdict: Mutex::default(),
            clock_offset_max_ms,
            snapshot_chunks: Mutex::default(),
        }
    }

    fn chunks(&self) -> MutexGuard<'_, Chunks> {
        self.snapshot_chunks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// A chunk of a snapshot from the leader this node follows is being
    /// taken: this node does not campaign while the returned guard lives
    /// (the last chunk's call lasts until the snapshot is installed), nor
    /// for [`SNAPSHOT_QUIET`] after the last guard is dropped.
    pub fn snapshot_chunk(&self) -> TakingChunk<'_> {
        let mut chunks = self.chunks();
        chunks.taking += 1;
        if !chunks.holding_off {
            tracing::info!(
                "receiving a snapshot from the leader: this node does not campaign until it \
                 is installed"
            );
            chunks.holding_off = true;
        }
        self.raft.runtime_config().elect(false);
        TakingChunk(self)
    }

    /// Turns elections on or off: off while the clock is off (`may_lead`
    /// false), or while a snapshot is taken or installed and for
    /// [`SNAPSHOT_QUIET`] after its last chunk.
    fn allow_elections(&self, may_lead: bool) {
        let mut chunks = self.chunks();
        let quiet = chunks.last.is_none_or(|at| at.elapsed() >= SNAPSHOT_QUIET);
        let taking = chunks.taking > 0 || self.state.installing() || !quiet;
        if chunks.holding_off && !taking {
            tracing::info!(
                "the snapshot from the leader is installed: this node may campaign again"
            );
            chunks.holding_off = false;
        }
        self.raft.runtime_config().elect(may_lead && !taking);
    }

    fn verdict(&self) -> MutexGuard<'_, Verdict> {
        self.verdict.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Why this node's clock is off its peers', while it is.
    pub fn clock_off(&self) -> Option<String> {
        self.verdict().clock_off.clone()
    }

    /// Why this node's chain differs from its peers', once it does.
    pub fn diverged(&self) -> Option<String> {
        self.verdict().diverged.clone()
    }

    pub fn status(&self) -> ReplicasView {
        let v = self.verdict();
        // Every peer, also one that has never answered.
        let peers = (self.peers.ids().iter())
            .map(|id| {
                let seen = v.peers.get(id);
                let (last, reachable) =
                    seen.map_or((None, false), |s| (s.answered_at, s.reachable));
                let refused = seen.and_then(|s| s.refused.clone());
                let certificate = seen.and_then(|s| s.certificate);
                let clock_offset_ms = seen.and_then(|s| s.clock_offset_ms);
                let (head, agrees) = match seen.and_then(|s| s.head.as_ref()) {
                    Some((head, agrees)) => (Some(head), *agrees),
                    None => (None, None),
                };
                PeerHeadView {
                    node: *id,
                    height: head.map(|h| h.height),
                    hash: head.map(|h| to_hex(&h.hash)),
                    agrees,
                    applied_index: head.and_then(|h| h.applied_index),
                    reachable,
                    last_contact_ms_ago: last.map(|t| t.elapsed().as_millis() as u64),
                    refused,
                    certificate,
                    clock_offset_ms,
                }
            })
            .collect();
        ReplicasView {
            diverged: v.diverged.clone(),
            clock_off: v.clock_off.clone(),
            peers,
        }
    }

    /// This node's head; `None` while a snapshot is replacing its state.
    pub fn head(&self) -> Option<Head> {
        Some(Head::of(&self.state.try_read()?))
    }

    /// Our block hash at `height`, if we have that block.
    fn hash_at(&self, height: u64) -> Option<Hash> {
        let state = self.state.try_read_stored()?;
        chain::header(&state, self.genesis_hash, height)
            .ok()
            .flatten()
            .map(|b| b.hash())
    }

    /// Compares one peer's head with our chain and updates the verdict.
    fn compare(&self, peer: NodeId, head: Head) {
        let agrees = self.hash_at(head.height).map(|ours| ours == head.hash);
        if agrees == Some(false) {
            tracing::error!(
                peer,
                height = head.height,
                "replica heads differ at the same height"
            );
        }
        let mut v = self.verdict();
        v.peers.entry(peer).or_default().head = Some((head, agrees));
        let disagree = v.agreements().filter(|a| *a == Some(false)).count();
        let agree = 1 + v.agreements().filter(|a| *a == Some(true)).count();
        if disagree > 0 && disagree >= agree && v.diverged.is_none() {
            let why = format!(
                "this node's chain differs from {disagree} of {} peers at the same height (first at {}): its stored state \
                 was changed outside Raft; it serves no reads until restored and restarted",
                v.agreements().count(),
                head.height
            );
            tracing::error!("DIVERGED: {why}");
            v.diverged = Some(why);
        }
    }

    /// Records how `peer` answered just now: its head, a refusal (and
    /// why), or nothing. A new refusal is logged with the peer's reason.
    fn contacted(&self, peer: NodeId, answer: &Asked) {
        let mut v = self.verdict();
        let seen = v.peers.entry(peer).or_default();
        seen.reachable = matches!(answer, Asked::Head(..));
        if let Asked::Head(_, certificate, offset) = answer {
            seen.answered_at = Some(Instant::now());
            seen.certificate = *certificate;
            seen.clock_offset_ms = *offset;
        }
        let refused = match answer {
            Asked::Refused(why) => Some(why.clone()),
            Asked::Head(..) | Asked::NoAnswer => None,
        };
        if refused.is_some() && refused != seen.refused {
            tracing::warn!(
                peer,
                reason = refused.as_deref(),
                "peer {peer} refuses this node"
            );
        } else if refused.is_none() && seen.refused.is_some() {
            let now = if seen.reachable {
                "answers"
            } else {
                "does not answer"
            };
            tracing::info!(peer, "peer {peer} no longer refuses this node: it {now}");
        }
        seen.refused = refused;
        let offsets: Vec<i64> = (v.peers.values())
            .filter(|s| s.reachable)
            .filter_map(|s| s.clock_offset_ms)
            .collect();
        let off = clock_off(&offsets, self.peers.ids().len(), self.clock_offset_max_ms);
        if off.is_some() && v.clock_off.is_none() {
            tracing::warn!(
                reason = off.as_deref(),
                "this node's clock is off: it takes no writes, does not campaign, and steps \
                 down if it leads, until its clock agrees with its peers' again"
            );
        } else if off.is_none() && v.clock_off.is_some() {
            tracing::info!("this node's clock agrees with its peers' again: it may lead");
        }
        // Without heartbeats, and with no writes proposed (the service
        // refuses them), a leader's followers stop hearing from it and
        // elect another node; without elections, this node never leads.
        let may_lead = off.is_none();
        self.allow_elections(may_lead);
        self.raft.runtime_config().heartbeat(may_lead);
        v.clock_off = off;
    }

    /// The peers that have applied log index `index`, asked again (at most
    /// every 50 ms) until all have or `within` has passed.
    pub async fn applied_by(&self, index: u64, within: Duration) -> Vec<NodeId> {
        let deadline = tokio::time::Instant::now() + within;
        let mut applied = Vec::new();
        loop {
            let ids = self.peers.ids();
            for &peer in &ids {
                if applied.contains(&peer) {
                    continue;
                }
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                if let Asked::Head(head, ..) = self.ask(peer, left).await {
                    if head.applied_index.is_some_and(|a| a >= index) {
                        applied.push(peer);
                    }
                }
            }
            if applied.len() == ids.len() || tokio::time::Instant::now() >= deadline {
                applied.sort_unstable();
                return applied;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Asks one peer for its head.
    async fn ask(&self, peer: NodeId, within: Duration) -> Asked {
        let Some(client) = self.peers.get(peer) else {
            return Asked::NoAnswer;
        };
        let sent_ms = crate::api::service::write::now_ms();
        let sent = client.http.post(client.url(HEAD_PATH)).timeout(within);
        let resp = match sent.send().await {
            Ok(resp) => resp,
            Err(e) => return tls_refusal(&e, peer).map_or(Asked::NoAnswer, Asked::Refused),
        };
        let status = resp.status();
        if !status.is_success() {
            let body: serde_json::Value = resp.json().await.unwrap_or_default();
            let message = body["error"]["message"]
                .as_str()
                .unwrap_or("no reason given");
            return Asked::Refused(format!("answered {status}: {message}"));
        }
        if let Err(why) = self.peers.check_response(peer, &resp) {
            return Asked::Refused(why);
        }
        let certificate = (resp.extensions().get::<reqwest::tls::TlsInfo>())
            .and_then(|tls| tls.peer_certificate())
            .and_then(Expiry::now);
        match resp.json::<Head>().await {
            Ok(head) => {
                let received_ms = crate::api::service::write::now_ms();
                // A peer's clock may say anything: the offset saturates.
                let offset = (head.clock_ms).map(|c| {
                    let mid = sent_ms / 2 + received_ms / 2;
                    let offset = i128::from(c) - i128::from(mid);
                    i64::try_from(offset).unwrap_or(if offset < 0 { i64::MIN } else { i64::MAX })
                });
                Asked::Head(head, certificate, offset)
            }
            Err(_) => Asked::NoAnswer,
        }
    }

    /// Asks every peer for its head every `every`, for as long as the node
    /// runs.
    pub fn spawn(self: Arc<Self>, every: Duration) {
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(every);
            loop {
                interval.tick().await;
                for peer in self.peers.ids() {
                    let answer = self.ask(peer, every).await;
                    self.contacted(peer, &answer);
                    if let Asked::Head(head, ..) = answer {
                        // It reads the store, which a slow disk holds up:
                        // off the runtime's threads.
                        let this = self.clone();
                        let _ = tokio::task::spawn_blocking(move || this.compare(peer, head)).await;
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::{clock_off, tls_refusal};
    use std::io;

    #[test]
    fn a_refused_handshake_is_named_however_deep_its_tls_error_is_wrapped() {
        let revoked = || rustls::Error::InvalidCertificate(rustls::CertificateError::Revoked);
        // As a connection's handshake fails: TLS in I/O in I/O.
        let nested = io::Error::other(io::Error::new(io::ErrorKind::InvalidData, revoked()));
        let why = tls_refusal(&nested, 3);
        assert_eq!(why.as_deref(), Some("node 3's certificate is revoked"));
        // As an open connection reads an alert: TLS in I/O.
        let alert = rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRevoked);
        let read = io::Error::new(io::ErrorKind::InvalidData, alert);
        let why = tls_refusal(&read, 3).expect("an alert is a refusal");
        assert!(why.contains("CertificateRevoked"), "{why}");
        // Not TLS: no refusal.
        let reset = io::Error::other(io::Error::from(io::ErrorKind::ConnectionReset));
        assert_eq!(tls_refusal(&reset, 3), None);
    }

    #[test]
    fn a_clock_is_off_when_most_of_the_group_disagrees_with_it() {
        // Two peers: one off is that peer's problem, both off is ours.
        assert_eq!(clock_off(&[10, -20], 2, 500), None);
        assert_eq!(clock_off(&[7_200_000, 10], 2, 500), None);
        let ours = clock_off(&[-7_200_000, -7_199_000], 2, 500).expect("off");
        assert!(
            ours.contains("about 7199000 ms ahead of the clocks of 2 of its 2"),
            "{ours}"
        );
        let behind = clock_off(&[900, 800], 2, 500).expect("off");
        assert!(behind.contains("behind"), "{behind}");
        // Four peers: three off of five nodes.
        assert_eq!(clock_off(&[900, 900, 0, 0], 4, 500), None);
        assert!(clock_off(&[900, 900, 900, 0], 4, 500).is_some());
        // Peers that did not answer count as agreeing.
        assert_eq!(clock_off(&[900], 2, 500), None);
        // Whatever a peer's clock says, no overflow.
        let extreme = clock_off(&[i64::MIN, i64::MIN], 2, 500).expect("off");
        assert!(extreme.contains("ahead of"), "{extreme}");
        assert!(clock_off(&[i64::MAX, i64::MAX], 2, 500).is_some());
    }
}
