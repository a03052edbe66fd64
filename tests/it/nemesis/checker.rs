//! The checker: after the faults heal and the cluster settles, reads every
//! replica's own state (local reads) and holds it against what the clients
//! were told during the run.

use std::collections::BTreeMap;
use std::time::Instant;

use alliance::client::ApiClient;
use reqwest::Method;
use serde_json::Value;

use super::workload::{accounts, History, Known, OPENING_BALANCE};
use crate::harness::{eventually, Cluster};

/// Invariants checked (by name, how many times) and the violations found.
#[derive(Default)]
pub struct Report {
    pub checks: BTreeMap<&'static str, u64>,
    pub violations: Vec<String>,
}

impl Report {
    pub fn check(&mut self, name: &'static str, holds: bool, why: impl FnOnce() -> String) {
        *self.checks.entry(name).or_default() += 1;
        if !holds {
            self.violations.push(format!("{name}: {}", why()));
        }
    }
}

/// One history item, as a replica lists it.
#[derive(Clone, Debug, PartialEq)]
struct Item {
    transfer: String,
    debit: bool,
    amount: u64,
    balance_after: i128,
    log_index: u64,
    raw: Value,
}

/// One replica's own view of the bank.
#[derive(Debug)]
struct Replica {
    /// Account views without `as_of`.
    accounts: BTreeMap<String, Value>,
    histories: BTreeMap<String, Vec<Item>>,
    head: (u64, String),
}

async fn get(client: &ApiClient, path: &str) -> Option<Value> {
    let r = client.call(Method::GET, path, None).await.ok()?;
    r.is_success().then_some(r.body)
}

async fn replica(c: &Cluster, node: u64) -> Replica {
    let mut accounts_seen = BTreeMap::new();
    let mut histories = BTreeMap::new();
    for (org, account) in accounts(c.layout.orgs.len()) {
        let app = c.app(org, node);
        let path = format!("/v1/accounts/{account}?consistency=local");
        let mut view = eventually(&format!("{account} at node {node}"), || get(&app, &path)).await;

        view.as_object_mut().expect("an object").remove("as_of");
        accounts_seen.insert(account.clone(), view);
        let mut items = Vec::new();
        let mut cursor = String::new();
        loop {
            let path =
                format!("/v1/accounts/{account}/transfers?limit=1000&consistency=local{cursor}");
            let page = eventually(&format!("history of {account} at node {node}"), || {
                get(&app, &path)
            })
            .await;
            for raw in page["items"].as_array().expect("items") {
                let text = |k: &str| raw[k].as_str().expect("a string field").to_owned();
                items.push(Item {
                    transfer: text("transfer"),
                    debit: raw["side"] == "debit",
                    amount: text("amount").parse().expect("amount"),
                    balance_after: text("balance_after").parse().expect("balance"),
                    log_index: raw["log_index"].as_u64().expect("log_index"),
                    raw: raw.clone(),
                });
            }
            match page["next_cursor"].as_str() {
                Some(next) => cursor = format!("&cursor={next}"),
                None => break,
            }
        }
        histories.insert(account, items);
    }
    let app = c.app(1, node);
    let head = eventually(&format!("head of node {node}"), || async {
        let list = get(&app, "/v1/blocks?limit=1&consistency=local").await?;
        let h = list["head_height"].as_u64()?;
        let block = get(&app, &format!("/v1/blocks/{h}?consistency=local")).await?;
        Some((h, block["hash"].as_str()?.to_owned()))
    })
    .await;
    Replica {
        accounts: accounts_seen,
        histories,
        head,
    }
}

/// Runs every check; `issued` is what the bank was funded with, `kills`
/// when the nemesis SIGKILLed which node.
pub async fn check(
    c: &Cluster,
    history: &History,
    issued: u64,
    kills: &[(u64, Instant)],
) -> Report {
    let mut report = Report::default();
    for v in &history.violations {
        report.violations.push(format!("during the run: {v}"));
    }
    let mut replicas = Vec::new();
    for id in c.ids() {
        replicas.push((id, replica(c, id).await));
    }
    let (first_id, first) = &replicas[0];
    for (id, other) in &replicas[1..] {
        report.check(
            "replicas: same head block",
            other.head == first.head,
            || {
                format!(
                    "node {id} head {:?}, node {first_id} {:?}",
                    other.head, first.head
                )
            },
        );
        for (account, view) in &first.accounts {
            report.check(
                "replicas: same account records",
                other.accounts.get(account) == Some(view),
                || format!("{account} differs between node {first_id} and node {id}"),
            );
            report.check(
                "replicas: same transfer records",
                other.histories.get(account) == first.histories.get(account),
                || format!("history of {account} differs between node {first_id} and node {id}"),
            );
        }
    }

    // Where each transfer id appears: (account, item).
    let mut seen: BTreeMap<&str, Vec<(&str, &Item)>> = BTreeMap::new();
    for (account, items) in &first.histories {
        for item in items {
            seen.entry(&item.transfer)
                .or_default()
                .push((account, item));
        }
    }
    let mut expected: BTreeMap<&str, i128> = first
        .accounts
        .keys()
        .map(|a| (a.as_str(), i128::from(OPENING_BALANCE)))
        .collect();
    for (id, op) in &history.transfers {
        let found = seen.get(id.as_str()).map(Vec::as_slice).unwrap_or_default();
        match &op.known {
            Known::Ok { log_index, .. } => {
                let once = found.len() == 2
                    && found.iter().any(|(a, i)| *a == op.from && i.debit)
                    && found.iter().any(|(a, i)| *a == op.to && !i.debit)
                    && found
                        .iter()
                        .all(|(_, i)| i.amount == op.amount && i.log_index == *log_index);
                report.check("acknowledged: present exactly once, as sent", once, || {
                    format!(
                        "{id} ({} -> {} amount {} at index {log_index}) appears as {:?}",
                        op.from,
                        op.to,
                        op.amount,
                        found.iter().map(|(_, i)| &i.raw).collect::<Vec<_>>()
                    )
                });
                *expected.get_mut(op.from.as_str()).expect("a bank account") -=
                    i128::from(op.amount);
                *expected.get_mut(op.to.as_str()).expect("a bank account") += i128::from(op.amount);
            }
            Known::Refused(code) => {
                report.check(
                    "refused: only for funds, and absent",
                    code == "insufficient_funds" && found.is_empty(),
                    || format!("{id} refused with {code}, appears {} times", found.len()),
                );
            }
            Known::NotProposed => {
                report.check("503 (nothing proposed): absent", found.is_empty(), || {
                    format!("{id} was only ever answered 503/429 but is in the ledger")
                })
            }
            // resolve_unknown re-sent each of these until it was known,
            // or failed the test at its deadline.
            Known::Unknown => unreachable!("{id}: outcome still unknown at the check"),
            Known::Broken(why) => {
                report.check("2xx describes what was sent", false, || why.clone())
            }
        }
    }
    for id in seen.keys() {
        report.check(
            "no transfer the clients never sent",
            id.starts_with("org1.open-") || history.transfers.contains_key(*id),
            || format!("{id} is in the ledger but no client sent it"),
        );
    }
    let mut total: i128 = 0;
    for (account, view) in &first.accounts {
        let balance: i128 = view["balance"]
            .as_str()
            .and_then(|b| b.parse().ok())
            .expect("a balance");
        total += balance;
        report.check("no negative balance", balance >= 0, || {
            format!("{account} ends at {balance}")
        });
        report.check(
            "balance = opening + acknowledged credits - debits",
            Some(&balance) == expected.get(account.as_str()),
            || {
                format!(
                    "{account} is {balance}, acknowledged transfers say {:?}",
                    expected.get(account.as_str())
                )
            },
        );
    }
    report.check(
        "money conserved per asset",
        total == i128::from(issued),
        || format!("USD accounts total {total}, issued {issued}"),
    );

    check_reads(&mut report, history, &first.histories, kills);
    report
}

/// Every read returned the state at its `as_of`; a linearizable read was at
/// least as new as everything a client saw complete before it began (an
/// acknowledged write, or another read: an applied index is committed);
/// local reads on one node process never went back. `kills` are the times
/// the nemesis SIGKILLed each node: a restarted node may resume from an
/// older (committed) index, see the README.
fn check_reads(
    report: &mut Report,
    history: &History,
    histories: &BTreeMap<String, Vec<Item>>,
    kills: &[(u64, Instant)],
) {
    let acks = history.transfers.values().filter_map(|op| match op.known {
        Known::Ok { log_index, acked } => Some((acked, log_index)),
        _ => None,
    });
    let mut seen: Vec<(Instant, u64)> = acks
        .chain(history.reads.iter().map(|r| (r.end, r.as_of)))
        .collect();
    seen.sort();
    let mut reads: Vec<_> = history.reads.iter().collect();
    reads.sort_by_key(|r| r.start);
    let (mut newest_seen, mut next) = (0, 0);
    for read in &reads {
        let items = histories
            .get(&read.account)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let at = items
            .iter()
            .take_while(|i| i.log_index <= read.as_of)
            .last()
            .map_or(0, |i| i.balance_after);
        report.check(
            "a read shows the state at its as_of",
            at == read.balance,
            || {
                format!(
                    "{} read {} at node {} as_of {}, the ledger had {at} then",
                    read.account, read.balance, read.node, read.as_of
                )
            },
        );
        while next < seen.len() && seen[next].0 < read.start {
            newest_seen = newest_seen.max(seen[next].1);
            next += 1;
        }
        if !read.local {
            report.check(
                "linearizable read no older than anything seen before it",
                read.as_of >= newest_seen,
                || {
                    format!(
                        "{} read at node {} as_of {}, but index {newest_seen} was acknowledged or read before it began",
                        read.account, read.node, read.as_of
                    )
                },
            );
        }
    }
    // Local reads per node process: one that began after another ended is
    // at least as new.
    let process = |node: u64, at: Instant| {
        let restarts = kills.iter().filter(|(n, t)| *n == node && *t < at).count();
        (node, restarts)
    };
    let mut by_process: BTreeMap<(u64, usize), Vec<_>> = BTreeMap::new();
    for read in reads.iter().filter(|r| r.local) {
        by_process
            .entry(process(read.node, read.start))
            .or_default()
            .push(*read);
    }
    for ((node, _), reads) in by_process {
        let mut ended: Vec<_> = reads.iter().map(|r| (r.end, r.as_of)).collect();
        ended.sort();
        let (mut newest, mut next) = (0, 0);
        for read in &reads {
            while next < ended.len() && ended[next].0 < read.start {
                newest = newest.max(ended[next].1);
                next += 1;
            }
            report.check("local reads on one node never go back", read.as_of >= newest, || {
                format!(
                    "node {node}: a local read of {} was as_of {} after one as_of {newest} had returned",
                    read.account, read.as_of
                )
            });
        }
    }
}
