//! Governance under faults: one worker proposes policy changes, node
//! additions and node removals, and has every organization's admin approve
//! them, through any node, retrying as a real admin would. The nodes it
//! adds are never started: the leader adds each to Raft as a learner it
//! cannot reach (which must block nothing) and removes it again with the
//! removal. The checker then holds every replica to what the admins were
//! told: each proposal decided at most once, at the same height, with the
//! same outcome and ballots on every replica, and every acknowledged
//! ballot and outcome present; and Raft's membership converges to the
//! registry's nodes.

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
    /// Where the organizations' CAs are, to issue node certificates.
    pki: std::path::PathBuf,
    /// Nodes this worker added (it knows the addition executed) and has
    /// not proposed to remove or replace, with their organizations.
    added: Vec<(u64, String)>,
}

/// The first id of the nodes the worker adds.
const FIRST_ADDED_NODE: u64 = 100;

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
            pki: c.layout.dir.join("pki"),
            added: Vec::new(),
        }
    }

    /// The next action, in turn: a node addition (a node that is never
    /// started), its replacement by another such node of its organization,
    /// the replacement's removal, a policy change.
    async fn action(&mut self, n: u64) -> (Value, Option<(u64, String)>) {
        let new_node = |id: u64, org: &str, cert: String| {
            let port = 20_000 + 2 * n;
            json!({"id": id, "org": org, "api_addr": format!("127.0.0.1:{port}"),
                   "raft_addr": format!("127.0.0.1:{}", port + 1), "cert": cert})
        };
        match n % 4 {
            1 => {
                let id = FIRST_ADDED_NODE + n;
                let org = format!("org{}", 1 + self.rng.below(self.admins.len() as u64));
                let cert = issue_node_cert(self.pki.clone(), org.clone(), id).await;
                let action = json!({ "add_node": new_node(id, &org, cert) });
                (action, Some((id, org)))
            }
            3 if !self.added.is_empty() => {
                let (id, _) = self.added.remove(0);
                (json!({"remove_node": {"id": id}}), None)
            }
            2 if !self.added.is_empty() => {
                let (old, org) = self.added.remove(0);
                let id = FIRST_ADDED_NODE + n;
                let cert = issue_node_cert(self.pki.clone(), org.clone(), id).await;
                let action = json!({"replace_node": {"old": old, "new": new_node(id, &org, cert)}});
                (action, Some((id, org)))
            }
            // Each proposal sets a time to live of its own, so the
            // registry shows which one executed last.
            _ => (
                json!({"set_policy": {"threshold": "majority",
                                       "proposal_ttl_ms": 3_600_000 + n}}),
                None,
            ),
        }
    }

    pub async fn run(mut self, history: Arc<Mutex<GovHistory>>, stop: Arc<AtomicBool>) {
        let mut n = 0u64;
        while !stop.load(Ordering::SeqCst) {
            n += 1;
            let proposer = self.rng.below(self.admins.len() as u64) as usize;
            let (action, adds) = self.action(n).await;
            let Some(id) = self.propose(proposer, &action, &history, &stop).await else {
                continue;
            };
            for voter in 0..self.admins.len() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                self.vote(voter, id, &history, &stop).await;
            }
            let executed = (history.lock().unwrap().proposals.get(&id))
                .and_then(|op| op.decided.clone())
                .is_some_and(|(state, _)| state == "executed");
            if let (Some(node), true) = (adds, executed) {
                self.added.push(node);
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

/// A node certificate for node `id` of `org`, issued by our script.
async fn issue_node_cert(pki: std::path::PathBuf, org: String, id: u64) -> String {
    tokio::task::spawn_blocking(move || crate::harness::issue_node_cert(&pki, &org, id))
        .await
        .unwrap()
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

/// Raft's membership converges to the registry: the genesis nodes vote,
/// and every node the registry added (never started) is a learner until
/// removed.
async fn check_membership(c: &Cluster, report: &mut Report) {
    let admin = c.client("org1", "admin", 1);
    let converged = tokio::time::timeout(crate::harness::DEADLINE, async {
        loop {
            let registry = admin.call(Method::GET, "/v1/gov/registry", None).await;
            let status = c.status(1).await;
            if let (Ok(r), Some(s)) = (registry, status) {
                let nodes = r.body["nodes"].as_object().cloned().unwrap_or_default();
                let mut current: Vec<u64> = (nodes.iter())
                    .filter(|(_, n)| n["removed"] == false)
                    .filter_map(|(id, _)| id.parse().ok())
                    .filter(|id| *id >= FIRST_ADDED_NODE)
                    .collect();
                current.sort_unstable();
                if s["voters"] == json!([1, 2, 3]) && s["learners"] == json!(current) {
                    return;
                }
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    })
    .await;
    report.check(
        "membership: Raft's voters and learners converge to the registry's nodes",
        converged.is_ok(),
        || "the leader's membership never matched the registry".into(),
    );
}

/// Holds every replica to the governance history.
pub async fn check(c: &Cluster, history: &GovHistory, report: &mut Report) {
    check_membership(c, report).await;
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
        // Enough approvals (with the owner's, where the action needs it)
        // and still open would mean a decision was lost.
        let approvals = p["approvals"].as_u64().unwrap_or(0);
        let required = p["required"].as_u64().unwrap_or(u64::MAX);
        let owner_approved = match p["needs_approval_of"].as_str() {
            Some(owner) => voted_approve(p, owner),
            None => true,
        };
        let ran = p["state"] == "executed" || p["state"] == "failed";
        report.check(
            "governance: decided exactly when the threshold was reached",
            ran == (approvals >= required && owner_approved),
            || {
                format!(
                    "proposal {id}: {approvals} approvals of {required}, owner approved: \
                     {owner_approved}, state {}",
                    p["state"]
                )
            },
        );
    }
}

/// Whether `org` approved proposal `p` (as a replica shows it).
fn voted_approve(p: &Value, org: &str) -> bool {
    (p["ballots"].as_array().into_iter().flatten())
        .any(|b| b["org"] == org && b["vote"] == "approve")
}
