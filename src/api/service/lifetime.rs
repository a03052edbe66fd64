//! Certificates must not become a time bomb: this node's, its peers' and
//! every member CA's expiry, shown in `/v1/cluster` and warned about in the
//! log at 30, 7 and 1 days left, each warning once per certificate.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use super::Service;
use crate::identity::{expiry_warning, first_cert_der, Expiry};

/// How often the certificates are looked at.
const CHECK_EVERY: Duration = Duration::from_secs(5);

impl Service {
    /// Warns in the log, at 30, 7 and 1 days before a certificate this
    /// node relies on expires: its own, each member organization's CA, and
    /// each peer's as the peer last presented it.
    pub fn spawn_expiry_warnings(self: Arc<Self>) {
        tokio::spawn(async move {
            let mut warned = BTreeSet::new();
            let mut interval = tokio::time::interval(CHECK_EVERY);
            loop {
                interval.tick().await;
                for (what, expiry) in self.certificates() {
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

    /// Every certificate this node relies on, named, with its expiry.
    fn certificates(&self) -> Vec<(String, Expiry)> {
        let mut all: Vec<(String, Expiry)> = Vec::new();
        if let Some(e) = Expiry::now(&self.attester.cert()) {
            all.push((format!("this node's certificate (node {})", self.id), e));
        }
        let cas: Vec<(String, String)> = {
            let state = self.state.read();
            (state.ledger.gov().orgs())
                .flat_map(|(org, m)| {
                    m.ca_certs
                        .iter()
                        .map(move |pem| (org.to_string(), pem.clone()))
                })
                .collect()
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
