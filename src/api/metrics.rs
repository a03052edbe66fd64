//! `GET /metrics` on the operations listener: this node's state in the
//! Prometheus text format (version 0.0.4), written by hand: a few gauges
//! from Raft and the chain, and the API listener's answers by status.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use super::views::ClusterView;

/// Lowest and highest HTTP status counted.
const STATUS_MIN: u16 = 100;
const STATUS_MAX: u16 = 599;

/// The API listener's answers, counted by HTTP status.
pub struct Responses {
    by_status: Vec<AtomicU64>,
}

impl Default for Responses {
    fn default() -> Self {
        let statuses = usize::from(STATUS_MAX - STATUS_MIN) + 1;
        Self {
            by_status: (0..statuses).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl Responses {
    /// Counts one answer; a status outside 100..=599 is not counted.
    pub fn record(&self, status: u16) {
        if (STATUS_MIN..=STATUS_MAX).contains(&status) {
            self.by_status[usize::from(status - STATUS_MIN)].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `(status, count)` for every status answered at least once.
    fn counts(&self) -> impl Iterator<Item = (u16, u64)> + '_ {
        (STATUS_MIN..)
            .zip(&self.by_status)
            .filter_map(|(status, n)| {
                let n = n.load(Ordering::Relaxed);
                (n > 0).then_some((status, n))
            })
    }
}

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
pub fn render(cluster: &ClusterView, responses: &Responses) -> String {
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
    let answers: Vec<_> = responses
        .counts()
        .map(|(status, n)| (format!("{{status=\"{status}\"}}"), n))
        .collect();
    metric(
        &mut out,
        "alliance_api_responses_total",
        "counter",
        "Answers the API listener's routes gave, by HTTP status (not those actix gives itself, such as a request timeout).",
        &answers,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_counted_by_status_and_odd_statuses_ignored() {
        let r = Responses::default();
        for status in [200, 200, 404, 599, 100, 99, 600, 0] {
            r.record(status);
        }
        let counts: Vec<_> = r.counts().collect();
        assert_eq!(counts, vec![(100, 1), (200, 2), (404, 1), (599, 1)]);
    }
}
