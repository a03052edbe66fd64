//! The sample scenario: a few accounts, an issuance and transfers between
//! the organizations, each step re-sent until it is answered for good.

use std::time::{Duration, Instant};

use super::Layout;
use crate::error::{Error, Result};

/// A short, re-runnable scenario: accounts, an issuance and two transfers.
/// Fixed ids make it idempotent, so a resumed demo runs it again harmlessly.
pub(super) async fn scenario(layout: &Layout) -> Result<Vec<(String, String)>> {
    let timeout = Duration::from_secs(15);
    let orgs: Vec<&str> = layout.orgs.iter().map(|o| o.name.as_str()).collect();
    let node_of = |org: &str| {
        layout
            .nodes
            .iter()
            .find(|n| n.org == org)
            .expect("node per org")
            .id
    };
    let first = orgs[0];
    let admin = layout.client(first, "admin", node_of(first), timeout)?;
    let treasury = format!("{first}.treasury");
    until_ok("create treasury", || {
        admin.create_account(&treasury, "USD", true, &[])
    })
    .await?;
    for (i, org) in orgs.iter().enumerate() {
        let org_admin = layout.client(org, "admin", node_of(org), timeout)?;
        // The next organization may read this account (granting is an admin's).
        let readers: Vec<String> = orgs.get(i + 1).map(|o| o.to_string()).into_iter().collect();
        let account = format!("{org}.ops");
        until_ok("create account", || {
            org_admin.create_account(&account, "USD", false, &readers)
        })
        .await?;
    }
    let ops = format!("{first}.ops");
    let issue = format!("{first}.demo-issue-1");
    until_ok("issue", || {
        admin.transfer(&issue, &treasury, &ops, 1_000_000)
    })
    .await?;
    let app = layout.client(first, "app", node_of(first), timeout)?;
    for (n, org) in orgs.iter().enumerate().skip(1) {
        let id = format!("{first}.demo-pay-{n}");
        let to = format!("{org}.ops");
        until_ok("transfer", || {
            app.transfer(&id, &ops, &to, 25_000 * n as u64)
        })
        .await?;
    }
    let mut balances = Vec::new();
    for org in &orgs {
        let owner = layout.client(org, "app", node_of(org), timeout)?;
        let account = format!("{org}.ops");
        let r = until_ok(&format!("read {account}"), || {
            owner.account(&account, false)
        })
        .await?;
        balances.push((
            account,
            r.body["balance"].as_str().unwrap_or("?").to_owned(),
        ));
    }
    Ok(balances)
}

/// How long the scenario re-sends a step that failed for a passing reason,
/// and how long it pauses between two sends.
const STEP_WAIT: Duration = Duration::from_secs(60);
const STEP_PAUSE: Duration = Duration::from_millis(200);

/// Runs `step` until it succeeds. A transport error, a 503 or a 504 (no
/// leader yet, a leader change, a timeout on a busy machine) is tried again
/// every [`STEP_PAUSE`] for up to [`STEP_WAIT`]: the scenario's ids are fixed, so a
/// re-sent step is answered as the first was. Any other answer is final.
async fn until_ok<F, Fut>(what: &str, mut step: F) -> Result<crate::client::Response>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<crate::client::Response, reqwest::Error>>,
{
    let deadline = Instant::now() + STEP_WAIT;
    loop {
        let failure = match step().await {
            Ok(r) if r.is_success() => return Ok(r),
            Ok(r) if !matches!(r.status, 503 | 504) => {
                return Err(Error::Other(format!("{what}: {} {}", r.status, r.body)))
            }
            Ok(r) => format!("{what}: {} {}", r.status, r.body),
            Err(e) => format!("{what}: {e}"),
        };
        if Instant::now() >= deadline {
            return Err(Error::Other(failure));
        }
        tokio::time::sleep(STEP_PAUSE).await;
    }
}
