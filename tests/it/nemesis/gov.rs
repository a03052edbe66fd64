//! Governance under faults: one worker proposes policy changes and has
//! every organization's admin approve them, through any node, retrying as
//! a real admin would. The checker then holds every replica to what the
//! admins were told: each proposal decided at most once, at the same
//! height, with the same outcome and ballots on every replica, and every
//! acknowledged ballot and outcome present.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use alliance::client::{checked_digest, ApiClient};
use reqwest::Method;
use serde_json::{json, Value};

use super::checker::Report;
use super::workload::{CLIENT_TIMEOUT, RETRY_PAUSE};
use super::Rng;
use crate::harness::{eventually, Cluster};

/// What the admins were told about one proposal.
#[derive(Clone, Debug, Default)]
pub struct GovOp {
    /// Organizations whose ballot was acknowledged (2xx).
    pub acked_ballots: Vec<String>,
    /// An acknowledged answer that said the proposal was decided: its
    /// state and height.
    pub decided: Option<(String, u64)>,
}

#[derive(Default)]
pub struct GovHistory {
    pub proposals: BTreeMap<u64, GovOp>,
    /// Proposals whose creation was never acknowledged (they may exist).
    pub unacknowledged_proposals: u64,
}

impl GovHistory {
    /// What the table of a run shows.
    pub fn counts(&self) -> Vec<(String, String)> {
        let ballots: usize = self.proposals.values().map(|p| p.acked_ballots.len()).sum();
        let decided = self.proposals.values().filter(|p| p.decided.is_some());
        [
            ("proposals acknowledged", self.proposals.len()),
            (
                "proposals unanswered (may exist)",
                self.unacknowledged_proposals as usize,
            ),
            ("ballots acknowledged", ballots),
            ("decisions told to an admin", decided.count()),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_string()))
        .to_vec()
    }
}

/// Every organization's admin, with a client at every node.
pub struct GovWorker {
    admins: Vec<(String, Vec<ApiClient>)>,
    rng: Rng,
}

impl GovWorker {
    pub fn new(c: &Cluster, seed: u64) -> Self {
        let admins = (1..=c.layout.orgs.len())
            .map(|o| {
                let org = format!("org{o}");
                let clients = (c.ids().into_iter())
                    .map(|n| c.client_with_timeout(&org, "admin", n, CLIENT_TIMEOUT))
                    .collect();
                (org, clients)
            })
            .collect();
        Self {
            admins,
            rng: Rng::new(seed ^ 0x6f76),
        }
    }

    pub async fn run(mut self, history: Arc<Mutex<GovHistory>>, stop: Arc<AtomicBool>) {
        let mut n = 0u64;
        while !stop.load(Ordering::SeqCst) {
            n += 1;
            let proposer = self.rng.below(self.admins.len() as u64) as usize;
            // Each proposal sets a time to live of its own, so the
            // registry shows which one executed last.
            let action = json!({"set_policy": {"threshold": "majority",
                                                "proposal_ttl_ms": 3_600_000 + n}});
            let Some(id) = self.propose(proposer, &action, &history, &stop).await else {
                continue;
            };
            for voter in 0..self.admins.len() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                self.vote(voter, id, &history, &stop).await;
            }
        }
    }

    /// A client of admin `who` at a node picked at random.
    fn client(&mut self, who: usize) -> &ApiClient {
        let nodes = self.admins[who].1.len() as u64;
        let node = self.rng.below(nodes) as usize;
        &self.admins[who].1[node]
    }

    /// Proposes `action` once (a proposal is not idempotent: a retry would
    /// make another); its id if acknowledged.
    async fn propose(
        &mut self,
        who: usize,
        action: &Value,
        history: &Mutex<GovHistory>,
        stop: &AtomicBool,
    ) -> Option<u64> {
        let answer = self.client(who).propose(action).await;
        match answer {
            Ok(r) if r.is_success() => {
                let id = r.body["id"].as_u64()?;
                history.lock().unwrap().proposals.entry(id).or_default();
                Some(id)
            }
            _ => {
                history.lock().unwrap().unacknowledged_proposals += 1;
                if !stop.load(Ordering::SeqCst) {
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                None
            }
        }
    }

    /// Approves proposal `id` as admin `who`, retrying (a ballot is
    /// idempotent) until an answer or a few attempts.
    async fn vote(&mut self, who: usize, id: u64, history: &Mutex<GovHistory>, stop: &AtomicBool) {
        for _ in 0..4 {
            let client = self.client(who).clone();
            let shown = match client
                .call(Method::GET, &format!("/v1/gov/proposals/{id}"), None)
                .await
            {
                Ok(r) if r.is_success() => r.body,
                _ => {
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
            };
            let digest = checked_digest(&shown).expect("the node shows the action it signed");
            match client.ballot(id, true, &digest).await {
                Ok(r) if r.is_success() => {
                    let mut h = history.lock().unwrap();
                    let op = h.proposals.entry(id).or_default();
                    op.acked_ballots.push(self.admins[who].0.clone());
                    let state = r.body["state"].as_str().unwrap_or_default();
                    if state != "open" {
                        let at = r.body["closed_height"].as_u64().unwrap_or(0);
                        op.decided = Some((state.to_owned(), at));
                    }
                    return;
                }
                // Closed already (decided by the others): nothing to do.
                Ok(r) if r.status == 409 => return,
                _ => {}
            }
            if stop.load(Ordering::SeqCst) {
                return;
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
}

/// Every proposal on one replica, read from its own state: id → the
/// proposal without `as_of`.
async fn proposals(c: &Cluster, node: u64) -> BTreeMap<u64, Value> {
    let admin = c.client("org1", "admin", node);
    let mut all = BTreeMap::new();
    let mut cursor = String::new();
    loop {
        let path = format!("/v1/gov/proposals?limit=1000&consistency=local{cursor}");
        let page = eventually(&format!("proposals at node {node}"), || async {
            let r = admin.call(Method::GET, &path, None).await.ok()?;
            r.is_success().then_some(r.body)
        })
        .await;
        for p in page["proposals"].as_array().expect("proposals") {
            all.insert(p["id"].as_u64().expect("an id"), p.clone());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => return all,
        }
    }
}

/// Holds every replica to the governance history.
pub async fn check(c: &Cluster, history: &GovHistory, report: &mut Report) {
    let mut replicas = Vec::new();
    for node in c.ids() {
        replicas.push((node, proposals(c, node).await));
    }
    let (first_id, first) = &replicas[0];
    for (node, other) in &replicas[1..] {
        report.check(
            "governance: the same proposals, outcomes, heights and ballots on every replica",
            other == first,
            || format!("node {node} and node {first_id} differ on proposals"),
        );
    }
    for (id, op) in &history.proposals {
        let Some(p) = first.get(id) else {
            report.check("governance: an acknowledged proposal exists", false, || {
                format!("proposal {id} was acknowledged but is not on node {first_id}")
            });
            continue;
        };
        let voted: Vec<&str> = p["ballots"]
            .as_array()
            .expect("ballots")
            .iter()
            .filter_map(|b| b["org"].as_str())
            .collect();
        for org in &op.acked_ballots {
            report.check(
                "governance: an acknowledged ballot is on the chain, once",
                voted.iter().filter(|v| **v == org.as_str()).count() == 1,
                || format!("proposal {id}: {org}'s ballot was acknowledged, ballots are {voted:?}"),
            );
        }
        if let Some((state, at)) = &op.decided {
            report.check(
                "governance: a decision told to an admin is the replicas' decision",
                p["state"] == state.as_str() && p["closed_height"] == *at,
                || format!("proposal {id}: told {state} at {at}, replicas say {p}"),
            );
        }
        // A majority of approvals and still open would mean a decision
        // was lost.
        let approvals = p["approvals"].as_u64().unwrap_or(0);
        let required = p["required"].as_u64().unwrap_or(u64::MAX);
        report.check(
            "governance: decided exactly when the threshold was reached",
            (p["state"] == "executed") == (approvals >= required),
            || {
                format!(
                    "proposal {id}: {approvals} approvals of {required}, state {}",
                    p["state"]
                )
            },
        );
    }
}
