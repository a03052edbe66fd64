//! `alliance bench`: a load generator against a running demo consortium.
//!
//! C concurrent clients, each on its own keep-alive mTLS connection, post
//! transfers of 1 unit (singly or in batches) from an issuance account to a
//! sink account, or between N accounts picked at random
//! ([`accounts`]), on one node for a fixed duration (after a warm-up),
//! retrying a transfer with the same id on 503/504 as a real client would.
//! It prints throughput and latency percentiles, errors by code, and checks
//! at the end that exactly the acknowledged transfers were credited and no
//! money was made or lost (a benchmark that loses or doubles transfers is
//! not a result). With a transfer budget
//! (`--transfers N`) the clients stop once N transfers have been sent, warm-up
//! included, so a run can end "after exactly N transfers" (the memory
//! figures); the duration then bounds the run.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod accounts;
mod conn;

use self::accounts::{check_conservation, Accounts, Rng, SPREAD_MAX, SPREAD_MIN};
use self::conn::Conn;
use crate::demo::Layout;
use crate::error::{Error, Result};

pub struct Options {
    /// The node to send to.
    pub node: u64,
    pub clients: usize,
    pub duration: Duration,
    pub warmup: Duration,
    /// Transfers per request: 1 posts single transfers, more post batches
    /// (not atomic) of that size.
    pub batch: usize,
    /// Stop after sending this many transfers in all (warm-up included);
    /// the last request carries what is left of the budget.
    pub transfers: Option<u64>,
    /// Spread transfers uniformly over this many accounts instead of one
    /// issuer and one sink.
    pub accounts: Option<usize>,
    /// Write each acknowledged request's send time and latency to this
    /// file ([`write_latencies`]).
    pub latencies: Option<std::path::PathBuf>,
}

/// What a run acknowledged.
#[derive(Debug)]
pub struct Summary {
    /// Transfers acknowledged, warm-up included (the accounts were credited
    /// this many units).
    pub acked: u64,
}

/// The transfers left to send: each request takes its share before it is
/// sent, so clients together send exactly the budget.
struct Budget(Option<AtomicU64>);

impl Budget {
    /// Up to `want` transfers for the next request; 0 when spent.
    fn take(&self, want: u64) -> u64 {
        let Some(left) = &self.0 else {
            return want;
        };
        let took = left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |now| {
            Some(now - now.min(want))
        });
        // The closure never refuses, so both arms hold the count before.
        took.unwrap_or_else(|before| before).min(want)
    }

    fn spent(&self) -> bool {
        self.0
            .as_ref()
            .is_some_and(|l| l.load(Ordering::Relaxed) == 0)
    }
}

/// Most concurrent clients: each holds a connection and a task.
pub const CLIENTS_MAX: usize = 4096;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Tally {
    /// Per request: when it was sent (Unix ms) and how long it took.
    latencies: Vec<(u64, Duration)>,
    errors: BTreeMap<String, u64>,
    /// Transfers acknowledged (in the measured window or not).
    acked: u64,
    /// Transfers acknowledged by requests sent in the measured window.
    measured: u64,
    /// Transfers of requests given up unanswered at the end: each may or
    /// may not have been applied.
    unanswered: u64,
}

impl Tally {
    /// A 2xx answer to a request for `asked` transfers, `acked` of them
    /// applied; `latency` is when the request was sent (wall clock) and
    /// how long its answer took, if it was sent in the measured window.
    fn ack(&mut self, asked: u64, acked: u64, latency: Option<(u64, Duration)>) {
        if acked != asked {
            self.error("batch_item_refused".into());
        }
        self.acked += acked;
        if let Some(latency) = latency {
            self.measured += acked;
            self.latencies.push(latency);
        }
    }

    fn error(&mut self, code: String) {
        *self.errors.entry(code).or_default() += 1;
    }

    fn merge(&mut self, other: Tally) {
        self.latencies.extend(other.latencies);
        self.acked += other.acked;
        self.measured += other.measured;
        self.unanswered += other.unanswered;
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
    }
}

/// What every client task of a run shares.
struct Load {
    /// The organization whose namespace the transfer ids are in.
    org: String,
    accounts: Accounts,
    batch: usize,
    /// Makes this run's transfer ids differ from earlier runs'.
    run_id: u128,
    /// Requests sent from here until `end` are measured.
    measure_from: Instant,
    end: Instant,
    budget: Budget,
    /// Transfers acknowledged so far, for the progress line.
    acked: AtomicU64,
}

pub async fn run(dir: &Path, opts: &Options) -> Result<Summary> {
    check_options(opts)?;
    // Made before any load, so that a path it cannot write sends nothing.
    let latencies = (opts.latencies.as_deref())
        .map(|path| {
            std::fs::File::create(path).map_err(|e| {
                Error::Config(format!(
                    "--latencies {}: {e}; give a file in a folder that exists",
                    path.display()
                ))
            })
        })
        .transpose()?;
    let layout = read_layout(dir)?;
    let org = layout
        .nodes
        .iter()
        .find(|n| n.id == opts.node)
        .ok_or_else(|| Error::Config(format!("no node {}", opts.node)))?
        .org
        .clone();
    let admin = layout.client(&org, "admin", opts.node, REQUEST_TIMEOUT)?;
    let accounts = Accounts::create(&admin, org.as_str(), opts.accounts).await?;
    let before = accounts.totals(&admin).await?;
    let usage_before = usage::of_nodes(&layout);

    let run_id = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let start = Instant::now();
    let measure_from = start + opts.warmup;
    let load = Arc::new(Load {
        org: org.to_string(),
        accounts,
        batch: opts.batch,
        run_id,
        measure_from,
        end: measure_from + opts.duration,
        budget: Budget(opts.transfers.map(AtomicU64::new)),
        acked: AtomicU64::new(0),
    });
    let progress = tokio::spawn(progress(load.clone(), start));
    let mut tasks = Vec::new();
    for c in 0..opts.clients {
        // Each client its own connection with the admin's identity. The
        // node vouches for its own organization's callers: they need not
        // sign, and the bench measures that path.
        let conn = Conn::new(&admin, REQUEST_TIMEOUT);
        tasks.push(tokio::spawn(drive(conn, load.clone(), c)));
    }
    let mut all = Tally::default();
    for t in tasks {
        all.merge(t.await.map_err(|e| Error::Other(e.to_string()))?);
    }
    progress.abort();
    // A budget can end the run before its duration: rate over the part of
    // the measured window that had load.
    let window = Instant::now()
        .min(load.end)
        .saturating_duration_since(measure_from);
    let after = load.accounts.totals(&admin).await?;
    report(opts, &all, window);
    let written = match (latencies, &opts.latencies) {
        (Some(file), Some(path)) => write_latencies(file, &all)
            .map_err(|e| Error::Other(format!("writing --latencies {}: {e}", path.display()))),
        _ => Ok(()),
    };
    if let Some(n) = opts.transfers.filter(|_| load.budget.spent()) {
        println!(
            "stopped: the --transfers budget of {n} was sent ({} acknowledged)",
            all.acked
        );
    }
    usage::report(&layout, &usage_before, start.elapsed());
    check_conservation(before, after, all.acked, all.unanswered)?;
    written?;
    Ok(Summary { acked: all.acked })
}

fn check_options(opts: &Options) -> Result<()> {
    if !(1..=CLIENTS_MAX).contains(&opts.clients) {
        return Err(Error::Config(format!(
            "--clients must be 1..={CLIENTS_MAX}"
        )));
    }
    let batch_max = crate::config::Limits::default().batch_transfers_max;
    if !(1..=batch_max).contains(&opts.batch) {
        return Err(Error::Config(format!(
            "--batch must be 1..={batch_max} (the demo's limits.batch_transfers_max)"
        )));
    }
    if opts.transfers == Some(0) {
        return Err(Error::Config("--transfers must be at least 1".into()));
    }
    if opts
        .accounts
        .is_some_and(|n| !(SPREAD_MIN..=SPREAD_MAX).contains(&n))
    {
        return Err(Error::Config(format!(
            "--accounts must be {SPREAD_MIN}..={SPREAD_MAX}"
        )));
    }
    Ok(())
}

/// The demo's `demo.json` under `dir`.
fn read_layout(dir: &Path) -> Result<Layout> {
    let bytes =
        crate::config::read_bounded(&Layout::index_path(dir), crate::config::CONFIG_BYTES_MAX)?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Config(e.to_string()))
}

/// One client task: requests until the run ends or the budget is spent.
async fn drive(mut conn: Conn, load: Arc<Load>, c: usize) -> Tally {
    let mut tally = Tally::default();
    let mut rng = Rng::new((load.run_id as u64) ^ ((c as u64 + 1) << 32));
    let mut i = 0u64;
    while Instant::now() < load.end {
        let n = load.budget.take(load.batch as u64);
        if n == 0 {
            break;
        }
        let id = format!("{}.b{}-{c}-{i}", load.org, load.run_id);
        i += 1;
        send_until_answered(&mut conn, &load, &id, n, &mut rng, &mut tally).await;
    }
    tally
}

/// Sends one request of `n` transfers under `id`, and sends it again with
/// the same id for as long as the answer is one a real client retries, until
/// [`UNANSWERED_GRACE`] after the run's end (a cluster that stopped
/// answering ends the run; its summary then shows the requests unanswered).
async fn send_until_answered(
    conn: &mut Conn,
    load: &Load,
    id: &str,
    n: u64,
    rng: &mut Rng,
    tally: &mut Tally,
) {
    // The same request each time it is sent again: same ids, same accounts.
    let mut items = batch_items(id, &load.accounts, rng, n as usize);
    let body = if load.batch == 1 {
        // A single transfer is sent under the request's id itself.
        let mut one = items.swap_remove(0);
        one.id = id.to_owned();
        serde_json::to_vec(&one).expect("a transfer serializes")
    } else {
        crate::client::batch_refused_only_json(&items, false)
    };
    let body = hyper::body::Bytes::from(body);
    let mut pause = RETRY_PAUSE_MIN;
    loop {
        if Instant::now() > load.end + UNANSWERED_GRACE {
            tally.error("unanswered_at_the_end".to_owned());
            tally.unanswered += n;
            return;
        }
        let (sent, sent_ms) = (Instant::now(), unix_ms(SystemTime::now()));
        let answer = conn.post_json("/v1/transfers", body.clone()).await;
        let measured = sent >= load.measure_from && sent < load.end;
        match answer {
            Some(a) if a.is_success() => {
                // A single transfer's 2xx is its acknowledgement: no need
                // to read the body.
                let ok = if load.batch == 1 {
                    1
                } else {
                    ok_items(&a.read())
                };
                load.acked.fetch_add(n, Ordering::Relaxed);
                tally.ack(n, ok, measured.then(|| (sent_ms, sent.elapsed())));
                return;
            }
            answer => {
                let code = match answer {
                    Some(a) => a.read().code().unwrap_or("unknown").to_owned(),
                    None => "no_response".to_owned(),
                };
                let retry = is_retried(&code);
                tally.error(code);
                if !retry {
                    return;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(RETRY_PAUSE_MAX);
            }
        }
    }
}

/// Prints, each second on standard error, the transfers acknowledged so
/// far and the rate over the last second.
async fn progress(load: Arc<Load>, start: Instant) {
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    interval.tick().await;
    let mut before = 0;
    loop {
        interval.tick().await;
        let acked = load.acked.load(Ordering::Relaxed);
        let phase = if Instant::now() < load.measure_from {
            "warm-up"
        } else {
            "measuring"
        };
        eprintln!(
            "bench: {:>4.0} s, {acked} transfers acknowledged, {}/s ({phase})",
            start.elapsed().as_secs_f64(),
            acked - before
        );
        before = acked;
    }
}

/// How long past the run's end a request is still sent again.
const UNANSWERED_GRACE: Duration = Duration::from_secs(30);
/// First and longest pause before a request is sent again.
const RETRY_PAUSE_MIN: Duration = Duration::from_millis(1);
const RETRY_PAUSE_MAX: Duration = Duration::from_millis(100);

/// The error codes a real client sends the same transfer again on.
fn is_retried(code: &str) -> bool {
    matches!(
        code,
        "no_quorum" | "outcome_unknown" | "no_response" | "overloaded"
    )
}

fn report(opts: &Options, t: &Tally, window: Duration) {
    let mut l: Vec<Duration> = t.latencies.iter().map(|(_, d)| *d).collect();
    l.sort();
    let pct = |p: f64| {
        l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    println!(
        "node {} clients {} batch {} duration {:?}: {} requests, {} transfers measured, {:.0} transfers/s",
        opts.node,
        opts.clients,
        opts.batch,
        window,
        l.len(),
        t.measured,
        if window.is_zero() { 0.0 } else { t.measured as f64 / window.as_secs_f64() }
    );
    println!(
        "latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
        pct(0.50),
        pct(0.90),
        pct(0.99),
        pct(0.999),
        l.last().map_or(0.0, |d| d.as_secs_f64() * 1e3)
    );
    println!("errors by code: {:?}", t.errors);
}

/// Writes one line per request acknowledged in the measured window, in
/// the order sent: when it was sent (Unix ms) and its latency (µs), e.g.
/// `1796656000123 5210`; of a request sent again, its last attempt (as
/// the latency figures count it).
fn write_latencies(file: std::fs::File, t: &Tally) -> std::io::Result<()> {
    use std::io::Write;
    let mut lines = t.latencies.clone();
    lines.sort();
    let mut out = std::io::BufWriter::new(file);
    for (sent, latency) in lines {
        writeln!(out, "{sent} {}", latency.as_micros())?;
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_all()
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One transfer of a batch, as the bench sends it.
#[derive(serde::Serialize)]
struct BatchItem<'a> {
    id: String,
    debit_account: &'a str,
    credit_account: &'a str,
    amount: u64,
}

/// `n` transfers of 1 unit between accounts `accounts` picks, ids `{id}-0`,
/// `{id}-1`, ... (a single transfer, `n` = 1, is sent under `id` itself).
fn batch_items<'a>(
    id: &str,
    accounts: &'a Accounts,
    rng: &mut Rng,
    n: usize,
) -> Vec<BatchItem<'a>> {
    (0..n)
        .map(|k| {
            let (debit_account, credit_account) = accounts.pick(rng);
            BatchItem {
                id: format!("{id}-{k}"),
                debit_account,
                credit_account,
                amount: 1,
            }
        })
        .collect()
}

/// Transfers a 2xx answer acknowledged: the applied items of a batch (the
/// bench asks for answers that count them and list only refusals; a node
/// that lists every item is counted item by item), or the one transfer of
/// a single request.
fn ok_items(r: &crate::client::Response) -> u64 {
    match (r.body["applied"].as_u64(), r.body["results"].as_array()) {
        (Some(applied), _) => applied,
        (None, Some(items)) => items.iter().filter(|i| i["ok"] == true).count() as u64,
        (None, None) => 1,
    }
}

/// CPU time and memory of the cluster's node processes on this machine,
/// read from `/proc` (Linux).
mod usage {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use crate::demo::Layout;

    /// `/proc/PID/stat` counts CPU time in USER_HZ ticks, 100 per second on
    /// Linux whatever the kernel's own tick.
    const TICKS_PER_SECOND: f64 = 100.0;

    pub struct Usage {
        pid: u32,
        cpu_seconds: f64,
        rss_mb: f64,
        peak_rss_mb: f64,
    }

    /// Each local node's usage now, by node id.
    pub fn of_nodes(layout: &Layout) -> BTreeMap<u64, Usage> {
        (layout.local_node_pids().into_iter())
            .filter_map(|(id, pid)| Some((id, read(pid)?)))
            .collect()
    }

    fn read(pid: u32) -> Option<Usage> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the parenthesised command: state is field 3, utime 14, stime 15.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks: u64 =
            fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let kb = |key| crate::memory::status_kb(&status, key).map(|kb| kb as f64);
        Some(Usage {
            pid,
            cpu_seconds: ticks as f64 / TICKS_PER_SECOND,
            rss_mb: kb("VmRSS:")? / 1024.0,
            peak_rss_mb: kb("VmHWM:")? / 1024.0,
        })
    }

    /// Prints each node's CPU time over the run and its memory.
    pub fn report(layout: &Layout, before: &BTreeMap<u64, Usage>, elapsed: Duration) {
        let after = of_nodes(layout);
        for node in &layout.nodes {
            match (before.get(&node.id), after.get(&node.id)) {
                (Some(b), Some(a)) if a.pid == b.pid => {
                    let cpu = a.cpu_seconds - b.cpu_seconds;
                    println!(
                        "node {} (pid {}): cpu {cpu:.1} s over {:.1} s ({:.0}% of one core), rss {:.0} MB, peak rss {:.0} MB",
                        node.id,
                        a.pid,
                        elapsed.as_secs_f64(),
                        100.0 * cpu / elapsed.as_secs_f64(),
                        a.rss_mb,
                        a.peak_rss_mb
                    );
                }
                _ => println!(
                    "node {}: not a process on this machine (or restarted): no CPU or memory figures",
                    node.id
                ),
            }
        }
    }
}
