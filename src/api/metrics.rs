//! `GET /metrics` on the operations listener: this node's state in the
//! Prometheus text format (version 0.0.4), written by hand: gauges from Raft
//! and the chain, counters and histograms of what the node did (answers by
//! route and status, proposals, durable appends, group commits, leader
//! changes, rate-limited requests), and how long each certificate it
//! relies on stays valid.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::views::ClusterView;
use crate::raft::state_machine::SnapshotCounts;
use crate::stats::{Histogram, SIZE_BOUNDS};

/// Lowest and highest HTTP status counted.
const STATUS_MIN: u16 = 100;
const STATUS_MAX: u16 = 599;

/// Methods counted by name; any other is counted as `other`, so that no
/// client can grow the table with made-up methods.
const METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"];

/// The API listener's answers, counted by method, route (its pattern, such
/// as `/v1/accounts/{id}`, or `unmatched`) and HTTP status: a bounded
/// table, since routes and methods are few.
#[derive(Default)]
pub struct Responses {
    counts: Mutex<BTreeMap<(&'static str, String, u16), u64>>,
}

impl Responses {
    /// Counts one answer; a status outside 100..=599 is not counted.
    pub fn record(&self, method: &str, route: Option<String>, status: u16) {
        if !(STATUS_MIN..=STATUS_MAX).contains(&status) {
            return;
        }
        let method = METHODS
            .iter()
            .copied()
            .find(|m| *m == method)
            .unwrap_or("other");
        let route = route.unwrap_or_else(|| "unmatched".into());
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        *counts.entry((method, route, status)).or_default() += 1;
    }

    /// `(method, route, status, count)` for every answer given at least once.
    fn counts(&self) -> Vec<(&'static str, String, u16, u64)> {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts
            .iter()
            .map(|((m, r, s), n)| (*m, r.clone(), *s, *n))
            .collect()
    }
}

/// What a node counts for `/metrics`, shared by its listeners and its
/// write path.
pub struct NodeStats {
    pub responses: Responses,
    /// Entries this node proposed that committed, and that did not (or may
    /// not have).
    pub proposals_committed: AtomicU64,
    pub proposals_failed: AtomicU64,
    /// From proposing an entry to its result, in microseconds.
    pub proposal_us: Histogram,
    /// Transfers in each group-commit entry.
    pub group_transfers: Histogram,
    /// Times the leader this node knows changed.
    pub leader_changes: AtomicU64,
    /// Durable appends of the log (flush and fdatasync), in microseconds:
    /// the store's own histogram.
    pub fsync_us: Arc<Histogram>,
    /// Requests the public window refused for their client's rate.
    pub public_limited: AtomicU64,
    /// Snapshots built and installed by the state machine, and sent to
    /// peers.
    pub snapshots: Arc<SnapshotCounts>,
    pub snapshots_sent: Arc<AtomicU64>,
}

impl NodeStats {
    pub fn new(
        fsync_us: Arc<Histogram>,
        (snapshots, snapshots_sent): (Arc<SnapshotCounts>, Arc<AtomicU64>),
    ) -> Self {
        Self {
            responses: Responses::default(),
            proposals_committed: AtomicU64::new(0),
            proposals_failed: AtomicU64::new(0),
            proposal_us: Histogram::latency(),
            group_transfers: Histogram::new(SIZE_BOUNDS),
            leader_changes: AtomicU64::new(0),
            fsync_us,
            public_limited: AtomicU64::new(0),
            snapshots,
            snapshots_sent,
        }
    }

    /// Counts a proposal's result and how long it took.
    pub fn proposed(&self, committed: bool, took: std::time::Duration) {
        let counter = if committed {
            &self.proposals_committed
        } else {
            &self.proposals_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.proposal_us.observe_duration(took);
    }
}

/// Microseconds in a second: histograms of durations render in seconds.
const US_PER_S: f64 = 1_000_000.0;

/// One metric's `# HELP` and `# TYPE` lines and its samples.
fn metric(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}

/// A gauge with one unlabelled sample (none if `value` is None).
fn gauge(out: &mut String, name: &str, help: &str, value: Option<u64>) {
    let samples: Vec<_> = value.map(|v| (String::new(), v)).into_iter().collect();
    metric(out, name, "gauge", help, &samples);
}

/// The text of `GET /metrics`.
/// Renders the metrics; `certs` are the certificates this node relies on
/// now, by label (`{cert="node"}`, `{cert="ca",org="org1"}`,
/// `{cert="peer",node="2"}`), with when each expires (Unix seconds).
pub fn render(cluster: &ClusterView, stats: &NodeStats, certs: &[(String, i64)]) -> String {
    let mut out = String::new();
    let is_leader = cluster.leader == Some(cluster.node_id);
    gauge(
        &mut out,
        "alliance_is_leader",
        "Whether this node is the Raft leader.",
        Some(u64::from(is_leader)),
    );
    gauge(
        &mut out,
        "alliance_has_leader",
        "Whether this node knows a leader.",
        Some(u64::from(cluster.leader.is_some())),
    );
    gauge(
        &mut out,
        "alliance_raft_term",
        "This node's current Raft term.",
        Some(cluster.term),
    );
    gauge(
        &mut out,
        "alliance_raft_last_log_index",
        "The last index in this node's log.",
        cluster.last_log_index,
    );
    gauge(
        &mut out,
        "alliance_raft_commit_index",
        "The last index this node knows committed.",
        cluster.commit_index,
    );
    gauge(
        &mut out,
        "alliance_raft_applied_index",
        "The last index this node applied.",
        cluster.applied_index,
    );
    gauge(
        &mut out,
        "alliance_raft_snapshot_index",
        "The last index in this node's snapshot.",
        cluster.snapshot_index,
    );
    gauge(
        &mut out,
        "alliance_chain_height",
        "The height of this node's chain head.",
        Some(cluster.height),
    );
    let diverged = u64::from(cluster.replicas.diverged.is_some());
    gauge(
        &mut out,
        "alliance_diverged",
        "Whether this node's chain differs from its peers'.",
        Some(diverged),
    );
    gauge(
        &mut out,
        "alliance_clock_offset_exceeded",
        "Whether this node's clock is more than clock_offset_max_ms from most of its peers'.",
        Some(u64::from(cluster.replicas.clock_off.is_some())),
    );
    let agrees: Vec<_> = (cluster.replicas.peers.iter())
        .filter_map(|p| {
            p.agrees
                .map(|a| (format!("{{peer=\"{}\"}}", p.node), u64::from(a)))
        })
        .collect();
    metric(
        &mut out,
        "alliance_peer_chain_agrees",
        "gauge",
        "Whether a peer's last reported head agrees with this node's chain.",
        &agrees,
    );
    let reachable: Vec<_> = (cluster.replicas.peers.iter())
        .map(|p| (format!("{{peer=\"{}\"}}", p.node), u64::from(p.reachable)))
        .collect();
    metric(
        &mut out,
        "alliance_peer_reachable",
        "gauge",
        "Whether a peer answered this node's last head exchange.",
        &reachable,
    );
    gauge(
        &mut out,
        "process_resident_memory_bytes",
        "Resident memory of this node's process, in bytes.",
        crate::memory::resident_bytes(),
    );
    gauge(
        &mut out,
        "alliance_memory_soft_limit_bytes",
        "limits.memory_soft_limit_mb in bytes (0: no limit).",
        Some(crate::memory::soft_limit_bytes()),
    );
    gauge(
        &mut out,
        "alliance_memory_above_soft_limit",
        "Whether this node's resident memory was above its soft limit at the last check.",
        Some(u64::from(crate::memory::above_soft_limit())),
    );
    gauge(
        &mut out,
        "alliance_memory_in_use_above_soft_limit",
        "Whether purges leave this node above its soft limit (memory in use is), so that its checks back off.",
        Some(u64::from(crate::memory::in_use_above_soft_limit())),
    );
    metric(
        &mut out,
        "alliance_memory_purges_total",
        "counter",
        "Purges of the allocator's freed memory this node asked for, above its soft limit.",
        &[(String::new(), crate::memory::purges())],
    );
    render_activity(&mut out, stats, certs);
    out
}

/// The counters and histograms of what this node did, and its
/// certificates' remaining validity.
fn render_activity(out: &mut String, stats: &NodeStats, certs: &[(String, i64)]) {
    let answers: Vec<_> = (stats.responses.counts().into_iter())
        .map(|(method, route, status, n)| {
            let route = route.replace('\\', "\\\\").replace('"', "\\\"");
            let labels = format!("{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}}");
            (labels, n)
        })
        .collect();
    metric(
        out,
        "alliance_api_responses_total",
        "counter",
        "Answers the API listener's routes gave, by method, route and HTTP status (not those actix gives itself, such as a request timeout).",
        &answers,
    );
    let count = |name: &str, help: &str, n: &AtomicU64| {
        let samples = [(String::new(), n.load(Ordering::Relaxed))];
        (name.to_owned(), help.to_owned(), samples)
    };
    for (name, help, samples) in [
        count(
            "alliance_proposals_committed_total",
            "Entries this node proposed as leader that committed.",
            &stats.proposals_committed,
        ),
        count(
            "alliance_proposals_failed_total",
            "Entries this node proposed that failed or whose fate is unknown (lost leadership, timeout).",
            &stats.proposals_failed,
        ),
        count(
            "alliance_leader_changes_total",
            "Times the leader this node knows changed, counting the first it learns after start (and a change to none).",
            &stats.leader_changes,
        ),
        count(
            "alliance_public_rate_limited_total",
            "Requests the public window refused (429) for their client's rate.",
            &stats.public_limited,
        ),
        count(
            "alliance_snapshots_built_total",
            "Snapshots this node built of its state.",
            &stats.snapshots.built,
        ),
        count(
            "alliance_snapshots_installed_total",
            "Snapshots this node installed from its leader.",
            &stats.snapshots.installed,
        ),
        count(
            "alliance_snapshot_builds_deferred_total",
            "Snapshot builds that waited while this node caught up with its leader.",
            &stats.snapshots.deferred,
        ),
        count(
            "alliance_snapshots_sent_total",
            "Snapshots this node finished sending to a peer.",
            &stats.snapshots_sent,
        ),
    ] {
        metric(out, &name, "counter", &help, &samples);
    }
    stats.proposal_us.render(
        out,
        "alliance_proposal_duration_seconds",
        "From proposing an entry to its result, on this node.",
        US_PER_S,
    );
    stats.fsync_us.render(
        out,
        "alliance_log_fsync_duration_seconds",
        "Durable appends of this node's log (flush and fdatasync).",
        US_PER_S,
    );
    stats.group_transfers.render(
        out,
        "alliance_group_commit_transfers",
        "Transfers in each group-commit entry this node proposed.",
        1.0,
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let _ = writeln!(
        out,
        "# HELP alliance_certificate_expiry_seconds Seconds until a certificate this node relies on expires (negative: expired)."
    );
    let _ = writeln!(out, "# TYPE alliance_certificate_expiry_seconds gauge");
    for (labels, not_after) in certs {
        let _ = writeln!(
            out,
            "alliance_certificate_expiry_seconds{labels} {}",
            not_after - now
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_counted_by_route_and_odd_statuses_and_methods_bounded() {
        let r = Responses::default();
        let route = || Some("/v1/accounts/{id}".to_owned());
        for status in [200, 200, 599, 100, 99, 600, 0] {
            r.record("GET", route(), status);
        }
        r.record("FROB", None, 404);
        r.record("BLORP", None, 404);
        let counts = r.counts();
        assert_eq!(
            counts,
            vec![
                ("GET", "/v1/accounts/{id}".to_owned(), 100, 1),
                ("GET", "/v1/accounts/{id}".to_owned(), 200, 2),
                ("GET", "/v1/accounts/{id}".to_owned(), 599, 1),
                ("other", "unmatched".to_owned(), 404, 2),
            ]
        );
    }
}
