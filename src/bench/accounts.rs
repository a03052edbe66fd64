//! The accounts a bench run moves money between, and its check that no
//! transfer was lost or doubled.
//!
//! By default every transfer moves 1 unit from an issuer to a sink. With
//! `--accounts N`, each transfer moves 1 unit between two of N accounts
//! picked uniformly at random, as TigerBeetle's benchmark spreads its
//! transfers over its accounts. Either way the check is the same: over the
//! run's accounts, the balances add up to what they did before, and the
//! credits posted grew by exactly the transfers acknowledged.

use futures_util::{stream, StreamExt};

use crate::client::ApiClient;
use crate::error::{Error, Result};

/// Fewest and most accounts `--accounts` takes.
pub const SPREAD_MIN: usize = 2;
pub const SPREAD_MAX: usize = 100_000;

/// Requests in flight while the bench creates or reads its accounts.
const SETUP_CONCURRENCY: usize = 32;

/// The accounts of a run: an issuer and a sink, or N to spread over.
pub enum Accounts {
    Pair { issuer: String, sink: String },
    Spread(Vec<String>),
}

/// What the check compares before and after a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Totals {
    pub balance: i128,
    pub credits: i128,
}

impl Accounts {
    /// Creates the run's accounts in `org`'s namespace (creating one that
    /// exists with the same fields is a no-op).
    pub async fn create(admin: &ApiClient, org: &str, spread: Option<usize>) -> Result<Self> {
        let accounts = match spread {
            None => Self::Pair {
                issuer: format!("{org}.bench.issuer"),
                sink: format!("{org}.bench.sink"),
            },
            Some(n) => Self::Spread((0..n).map(|i| format!("{org}.bench.a{i}")).collect()),
        };
        let sink = match &accounts {
            Self::Pair { sink, .. } => Some(sink.as_str()),
            Self::Spread(_) => None,
        };
        // Every account may go negative, except the pair's sink.
        let made: Vec<Result<()>> = stream::iter(accounts.ids())
            .map(|id| async move {
                let negative = Some(id) != sink;
                expect_ok(admin.create_account(id, "BENCH", negative, &[]).await)
            })
            .buffer_unordered(SETUP_CONCURRENCY)
            .collect()
            .await;
        made.into_iter().collect::<Result<()>>()?;
        Ok(accounts)
    }

    fn ids(&self) -> Vec<&str> {
        match self {
            Self::Pair { issuer, sink } => vec![issuer, sink],
            Self::Spread(ids) => ids.iter().map(String::as_str).collect(),
        }
    }

    /// The debit and credit account of the next transfer.
    pub fn pick(&self, rng: &mut Rng) -> (&str, &str) {
        match self {
            Self::Pair { issuer, sink } => (issuer, sink),
            Self::Spread(ids) => {
                let n = ids.len() as u64;
                let from = rng.below(n);
                // Any other account, uniformly.
                let to = (from + 1 + rng.below(n - 1)) % n;
                (&ids[from as usize], &ids[to as usize])
            }
        }
    }

    /// The balances and credits posted of all the run's accounts, added up.
    pub async fn totals(&self, admin: &ApiClient) -> Result<Totals> {
        let read: Vec<Result<(i128, i128)>> = stream::iter(self.ids())
            .map(|id| async move { balance_and_credits(admin, id).await })
            .buffer_unordered(SETUP_CONCURRENCY)
            .collect()
            .await;
        let mut totals = Totals {
            balance: 0,
            credits: 0,
        };
        for r in read {
            let (balance, credits) = r?;
            totals.balance += balance;
            totals.credits += credits;
        }
        Ok(totals)
    }
}

/// Money neither made nor lost, and exactly `acked` transfers of 1 unit
/// posted, plus any of the `unanswered` ones (given up at the end without
/// an answer: each may or may not have been applied).
pub fn check_conservation(
    before: Totals,
    after: Totals,
    acked: u64,
    unanswered: u64,
) -> Result<()> {
    let posted = after.credits - before.credits;
    let (least, most) = (i128::from(acked), i128::from(acked + unanswered));
    if after.balance != before.balance || !(least..=most).contains(&posted) {
        return Err(Error::Other(format!(
            "conservation check FAILED: the accounts' balances went from {} to {} in all, \
             and {posted} units were credited for {acked} transfers acknowledged and \
             {unanswered} unanswered",
            before.balance, after.balance
        )));
    }
    if unanswered == 0 {
        println!(
            "check: the accounts' balances add up as before, and exactly the {acked} \
             acknowledged transfers were credited"
        );
    } else {
        println!(
            "check: the accounts' balances add up as before; {posted} transfers were credited: \
             the {acked} acknowledged and {} of the {unanswered} left unanswered",
            posted - least
        );
    }
    Ok(())
}

async fn balance_and_credits(client: &ApiClient, account: &str) -> Result<(i128, i128)> {
    let r = client
        .account(account, false)
        .await
        .map_err(|e| Error::Other(e.to_string()))?;
    let field = |name: &str| r.body[name].as_str().and_then(|v| v.parse::<i128>().ok());
    match (field("balance"), field("credits_posted")) {
        (Some(b), Some(c)) => Ok((b, c)),
        _ => Err(Error::Other(format!(
            "reading {account}: {} {}",
            r.status, r.body
        ))),
    }
}

fn expect_ok(r: std::result::Result<crate::client::Response, reqwest::Error>) -> Result<()> {
    match r {
        Ok(r) if r.is_success() => Ok(()),
        Ok(r) => Err(Error::Other(format!("{} {}", r.status, r.body))),
        Err(e) => Err(Error::Other(e.to_string())),
    }
}

/// A small pseudo-random generator (xorshift64*) for picking accounts: the
/// load needs spread, not secrecy.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (n > 0); the bias of the modulo is at most n/2^64.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spread_picks_two_different_accounts_and_reaches_them_all() {
        let ids: Vec<String> = (0..10).map(|i| format!("org1.bench.a{i}")).collect();
        let accounts = Accounts::Spread(ids);
        let mut rng = Rng::new(7);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..2_000 {
            let (from, to) = accounts.pick(&mut rng);
            assert_ne!(from, to);
            seen.insert(from.to_owned());
            seen.insert(to.to_owned());
        }
        assert_eq!(seen.len(), 10);
    }

    #[test]
    fn conservation_needs_equal_balances_and_the_credits_acknowledged() {
        let before = Totals {
            balance: 5,
            credits: 100,
        };
        let ok = Totals {
            balance: 5,
            credits: 130,
        };
        assert!(check_conservation(before, ok, 30, 0).is_ok());
        assert!(check_conservation(before, ok, 29, 0).is_err());
        assert!(check_conservation(before, ok, 31, 0).is_err());
        let made_money = Totals { balance: 6, ..ok };
        assert!(check_conservation(before, made_money, 30, 0).is_err());
        // Unanswered transfers may or may not have been applied: no more.
        assert!(check_conservation(before, ok, 25, 5).is_ok());
        assert!(check_conservation(before, ok, 25, 10).is_ok());
        assert!(check_conservation(before, ok, 25, 4).is_err());
        assert!(check_conservation(before, ok, 31, 5).is_err());
    }
}
