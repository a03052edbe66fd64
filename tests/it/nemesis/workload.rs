//! The bank workload: concurrent clients of every organization move money
//! between accounts of every organization and read balances, through every
//! node, each request with a timeout, and record what they were told.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alliance::client::ApiClient;

use super::Rng;
use crate::harness::Cluster;

/// Accounts per organization.
pub const ACCOUNTS_PER_ORG: usize = 3;
/// What each bank account is funded with before the workload starts.
pub const OPENING_BALANCE: u64 = 1_000;
/// Largest amount one transfer moves; small against balances, so some
/// transfers are refused for funds and most are not.
const AMOUNT_MAX: u64 = 20;
/// Per-request timeout of the workload's clients: longer than the nodes'
/// `request_timeout_ms`, so a node answers 503/504 before a client gives up,
/// except when the node (or its link) is frozen.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts of one transfer (same id each time) before the run moves on and
/// leaves it to the final resolution.
const ATTEMPTS_MAX: usize = 6;
pub const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Where a transfer stands, as far as its client knows.
#[derive(Clone, Debug)]
pub enum Known {
    /// 2xx: committed at `log_index`; the client learned it at `acked`.
    Ok { log_index: u64, acked: Instant },
    /// A definite refusal (4xx) with its code.
    Refused(String),
    /// Answered 503/429/408 with no earlier attempt in doubt: nothing was
    /// proposed, and the client gave up on it.
    NotProposed,
    /// A 2xx that does not describe what was sent.
    Broken(String),
    /// Some attempt timed out, was reset or got 504: it may have committed.
    Unknown,
}

#[derive(Clone, Debug)]
pub struct TransferOp {
    pub org: usize,
    pub from: String,
    pub to: String,
    pub amount: u64,
    pub known: Known,
    /// The outcome was unknown at least once before it became known.
    pub was_unknown: bool,
}

#[derive(Clone, Debug)]
pub struct ReadOp {
    pub node: u64,
    pub account: String,
    pub local: bool,
    pub start: Instant,
    pub end: Instant,
    pub balance: i128,
    pub as_of: u64,
}

/// What the clients did and were told.
#[derive(Default)]
pub struct History {
    pub transfers: BTreeMap<String, TransferOp>,
    pub reads: Vec<ReadOp>,
    /// Broken promises seen during the run (a negative balance, a 2xx with
    /// another amount, an unexpected status).
    pub violations: Vec<String>,
}

pub fn accounts(orgs: usize) -> Vec<(usize, String)> {
    (1..=orgs)
        .flat_map(|org| (0..ACCOUNTS_PER_ORG).map(move |i| (org, format!("org{org}.bank{i}"))))
        .collect()
}

/// Creates every bank account (readable by every other organization) and
/// funds each from `org1.issuer`; returns the total issued.
pub async fn open_bank(c: &Cluster) -> u64 {
    let orgs = c.layout.orgs.len();
    let admin = c.client("org1", "admin", 1);
    crate::harness::ok(admin.create_account("org1.issuer", "USD", true, &[]).await);
    for (org, account) in accounts(orgs) {
        let readers: Vec<String> = (1..=orgs)
            .filter(|o| *o != org)
            .map(|o| format!("org{o}"))
            .collect();
        let owner = c.client(&format!("org{org}"), "admin", org as u64);
        crate::harness::ok(owner.create_account(&account, "USD", false, &readers).await);

        crate::harness::ok(
            admin
                .transfer(
                    &format!("org1.open-{account}"),
                    "org1.issuer",
                    &account,
                    OPENING_BALANCE,
                )
                .await,
        );
    }
    OPENING_BALANCE * accounts(orgs).len() as u64
}

/// One client: an organization's app with a connection to every node; it
/// starts each request at its home node and retries at the next one.
pub struct Worker {
    pub id: usize,
    pub org: usize,
    /// Organizations in the consortium.
    pub orgs: usize,
    pub home: usize,
    pub clients: Vec<(u64, ApiClient)>,
    pub rng: Rng,
}

impl Worker {
    pub fn new(c: &Cluster, id: usize, seed: u64) -> Self {
        let orgs = c.layout.orgs.len();
        let org = id % orgs + 1;
        let clients = c
            .ids()
            .into_iter()
            .map(|n| {
                let client = c.client_with_timeout(&format!("org{org}"), "app", n, CLIENT_TIMEOUT);
                (n, client)
            })
            .collect();
        Self {
            id,
            org,
            orgs,
            home: org - 1,

            clients,
            rng: Rng::new(seed ^ (id as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        }
    }

    /// Runs operations until `stop`.
    pub async fn run(mut self, history: Arc<Mutex<History>>, stop: Arc<AtomicBool>) {
        let all = accounts(self.orgs);
        let own: Vec<String> = all
            .iter()
            .filter(|(o, _)| *o == self.org)
            .map(|(_, a)| a.clone())
            .collect();
        let mut n = 0u64;
        while !stop.load(Ordering::SeqCst) {
            let roll = self.rng.below(100);
            if roll < 70 {
                n += 1;
                let id = format!("org{}.w{}-{n}", self.org, self.id);
                let from = self.rng.pick(&own).clone();
                let to = loop {
                    let (_, to) = self.rng.pick(&all);
                    if *to != from {
                        break to.clone();
                    }
                };
                let amount = 1 + self.rng.below(AMOUNT_MAX);
                self.transfer(&history, &stop, id, from, to, amount).await;
            } else {
                let (_, account) = self.rng.pick(&all).clone();
                self.read(&history, &account, roll >= 90).await;
            }
        }
    }

    async fn transfer(
        &mut self,
        history: &Mutex<History>,
        stop: &AtomicBool,
        id: String,
        from: String,
        to: String,
        amount: u64,
    ) {
        let mut op = TransferOp {
            org: self.org,
            from,
            to,
            amount,
            known: Known::NotProposed,
            was_unknown: false,
        };
        for attempt in 0..ATTEMPTS_MAX {
            let (_, client) = &self.clients[(self.home + attempt) % self.clients.len()];
            let answer = client.transfer(&id, &op.from, &op.to, amount).await;
            let unknown = matches!(op.known, Known::Unknown);
            match settle(&id, &op, answer) {
                Ok(Some(known)) => {
                    op.known = known;
                    op.was_unknown = unknown;
                    break;
                }
                // A definite "nothing proposed" (op.known still says so):
                // the client gives up, so the checker can hold the node to
                // its word.
                Ok(None) if !unknown => break,
                // Once in doubt, in doubt until an answer settles it.
                Ok(None) | Err(Maybe) => op.known = Known::Unknown,
            }
            if stop.load(Ordering::SeqCst) {
                break;
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
        history.lock().unwrap().transfers.insert(id, op);
    }

    async fn read(&mut self, history: &Mutex<History>, account: &str, local: bool) {
        let (node, client) = &self.clients[self.home];
        let start = Instant::now();
        let Ok(r) = client.account(account, local).await else {
            return;
        };
        let end = Instant::now();
        if !r.is_success() {
            return; // 503 (no quorum, diverged) tells nothing about state
        }
        let balance = r.body["balance"]
            .as_str()
            .and_then(|b| b.parse::<i128>().ok());
        let as_of = r.body["as_of"].as_u64();
        let mut h = history.lock().unwrap();
        match (balance, as_of) {
            (Some(balance), Some(as_of)) => {
                if balance < 0 {
                    h.violations.push(format!(
                        "negative balance: {account} read {balance} at node {node} (as_of {as_of})"
                    ));
                }
                h.reads.push(ReadOp {
                    node: *node,
                    account: account.to_owned(),
                    local,
                    start,
                    end,
                    balance,
                    as_of,
                });
            }
            _ => h.violations.push(format!(
                "read of {account} at node {node}: bad body {}",
                r.body
            )),
        }
    }
}

/// The outcome may have committed.
pub struct Maybe;

/// What one answer says: `Some` is final, `None` means nothing was proposed
/// (try again), `Err(Maybe)` means it may have been.
pub fn settle(
    id: &str,
    op: &TransferOp,
    answer: Result<alliance::client::Response, reqwest::Error>,
) -> Result<Option<Known>, Maybe> {
    let Ok(r) = answer else {
        return Err(Maybe); // timeout, reset: the request may have arrived
    };
    match r.status {
        200..=299 => {
            let amount = r.body["amount"].as_str();
            let log_index = r.body["log_index"].as_u64();
            match (amount, log_index) {
                (Some(a), Some(log_index)) if a == op.amount.to_string() => Ok(Some(Known::Ok {
                    log_index,
                    acked: Instant::now(),
                })),
                _ => Ok(Some(Known::Broken(format!(
                    "2xx for {id} with body {} (sent amount {})",
                    r.body, op.amount
                )))),
            }
        }
        503 | 429 | 408 => Ok(None),
        400..=499 => Ok(Some(Known::Refused(
            r.code().unwrap_or("no code").to_owned(),
        ))),
        _ => Err(Maybe), // 504 outcome_unknown, or a 5xx we did not expect
    }
}
