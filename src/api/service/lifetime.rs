//! Certificates must not become a time bomb: this node's, its peers' and
//! every member CA's expiry, shown in `/v1/cluster` and warned about in the
//! log at 30, 7 and 1 days left, each warning once per certificate.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Service;
use crate::identity::{expiry_warning, first_cert_der, Expiry};
use crate::ledger::gov::OrgStatus;

/// How often the certificates are looked at.
const CHECK_EVERY: Duration = Duration::from_secs(5);

/// How often an expired certificate is alarmed about, each.
const ALARM_EVERY: Duration = Duration::from_secs(60);

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Service {
    /// Warns in the log, at 30, 7 and 1 days before a certificate this
    /// node relies on expires: its own, each member organization's CA, and
    /// each peer's as the peer last presented it.
    pub fn spawn_expiry_warnings(self: Arc<Self>) {
        tokio::spawn(async move {
            let mut warned = BTreeSet::new();
            let mut alarmed: BTreeMap<String, Instant> = BTreeMap::new();
            let mut interval = tokio::time::interval(CHECK_EVERY);
            loop {
                interval.tick().await;
                for (what, expiry) in self.certificates() {
                    let now = unix_now();
                    if expiry.not_after < now {
                        let due = (alarmed.get(&what)).is_none_or(|t| t.elapsed() >= ALARM_EVERY);
                        if due {
                            alarmed.insert(what.clone(), Instant::now());
                            tracing::error!(
                                certificate = %what,
                                not_after = expiry.not_after,
                                "{what} EXPIRED {} s ago: clients refuse it, and between nodes \
                                 a node certificate works only if its key is the one genesis \
                                 registers for that node. Renew it now: scripts/issue-cert.sh \
                                 for a node (keep its key) then SIGHUP, scripts/new-org.sh and \
                                 an add-ca vote for a CA",
                                now - expiry.not_after
                            );
                        }
                        continue;
                    }
                    let Some(days) = expiry_warning(expiry) else {
                        continue;
                    };
                    if warned.insert((what.clone(), days)) {
                        tracing::warn!(
                            certificate = %what,
                            days_left = expiry.days_left,
                            not_after = expiry.not_after,
                            "{what} expires in {} days: renew it before then \
                             (scripts/issue-cert.sh for a node, scripts/new-org.sh and a vote \
                             for a CA)",
                            expiry.days_left
                        );
                    }
                }
            }
        });
    }

    /// When each certificate this node relies on expires (Unix seconds),
    /// labelled for `/metrics`: its own, each member organization's CA
    /// that expires first, and each peer's.
    pub fn certificate_gauges(&self) -> Vec<(String, i64)> {
        let mut gauges: Vec<(String, i64)> = Vec::new();
        if let Some(e) = Expiry::now(&self.attester.cert()) {
            gauges.push(("{cert=\"node\"}".to_owned(), e.not_after));
        }
        // While a snapshot replaces the state, its CAs are left out.
        let cas: Vec<(String, Option<i64>)> = match self.state.try_read() {
            None => Vec::new(),
            Some(state) => (state.ledger.gov().orgs())
                .filter(|(_, m)| m.status != OrgStatus::Removed)
                .map(|(org, m)| {
                    let first = (m.ca_certs.iter())
                        .filter_map(|pem| first_cert_der(pem.as_bytes()))
                        .filter_map(|der| Expiry::now(&der).map(|e| e.not_after))
                        .min();
                    (org.to_string(), first)
                })
                .collect(),
        };
        for (org, not_after) in cas {
            if let Some(t) = not_after {
                gauges.push((format!("{{cert=\"ca\",org=\"{org}\"}}"), t));
            }
        }
        for peer in self.watch.status().peers {
            if let Some(e) = peer.certificate {
                gauges.push((
                    format!("{{cert=\"peer\",node=\"{}\"}}", peer.node),
                    e.not_after,
                ));
            }
        }
        gauges
    }

    /// Every certificate this node relies on, named, with its expiry.
    fn certificates(&self) -> Vec<(String, Expiry)> {
        let mut all: Vec<(String, Expiry)> = Vec::new();
        if let Some(e) = Expiry::now(&self.attester.cert()) {
            all.push((format!("this node's certificate (node {})", self.id), e));
        }
        // While a snapshot replaces the state, its CAs wait for the next
        // round.
        let cas: Vec<(String, String)> = match self.state.try_read() {
            None => Vec::new(),
            Some(state) => (state.ledger.gov().orgs())
                .flat_map(|(org, m)| {
                    m.ca_certs
                        .iter()
                        .map(move |pem| (org.to_string(), pem.clone()))
                })
                .collect(),
        };
        for (org, pem) in cas {
            let expiry = first_cert_der(pem.as_bytes()).and_then(|der| Expiry::now(&der));
            if let Some(e) = expiry {
                all.push((format!("the CA certificate of {org}"), e));
            }
        }
        for peer in self.watch.status().peers {
            if let Some(e) = peer.certificate {
                all.push((format!("node {}'s certificate", peer.node), e));
            }
        }
        all
    }
}
