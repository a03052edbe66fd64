//! The transfer index: the height of the block that stored each transfer's
//! latest version, by id. It tells apply whether an id is new and where to
//! load a named transfer from, and it is kept mostly on disk, so that a
//! node's memory does not grow with the number of transfers ever made.
//!
//! It is derived from the blocks' transfer records and kept in the state
//! tree as sorted runs, the way a log-structured merge tree keeps tables:
//! - The ledger holds the most recent ids (its `stored_at`): the tail,
//!   in the order applied, and the ids looked up lately.
//! - Once [`RUN_IDS`] ids of the tail are on sled, a job thread sorts them
//!   into a run: chunks of about 4 KiB of (id, height) in id order, each
//!   keyed by its first id ([`RUN_TAG`]), and a Bloom filter of its ids
//!   ([`FILTER_TAG`]). The manifest ([`StateKey::IndexRuns`]) lists the
//!   runs, newest first, and the height through which they hold every
//!   block's transfers.
//! - A job merges [`MERGE_FAN`] runs of one size into one, so that a
//!   lookup meets few runs: a new id is ruled out by their filters in
//!   memory; a stored one costs a chunk read in each run it may be in.
//!   Runs of different sizes merge at once, each size one merge at a time,
//!   and a merge writes no faster than ids come in (past a start and a
//!   floor, [`Pacing`]): a merge of millions of ids spreads over the
//!   transfers of the next millions instead of taking the CPU from them.
//!
//! Every write goes through the state writer, in order: a snapshot walk
//! sees the index as it sees the blocks, and a node that stops finds the
//! manifest's runs whole. At start the tail is read back from the blocks
//! past the manifest's height, and chunks of runs the manifest does not
//! name (a job a stop cut short) are found, to be removed behind apply.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::writer::{StateBatch, Writer};
use crate::codec::{decode, encode, encode_into};
use crate::ledger::{Ledger, TransferId};
use crate::raft::store::{
    for_each_transfer_block_from, StateKey, CHUNK_BYTES, FILTER_TAG, REJECTED_TAG, RUN_TAG,
};

/// Ids of the tail (on sled) that a new run takes, unless set otherwise
/// ([`Limits::run_ids`]).
pub const RUN_IDS: usize = 1 << 17;
/// Past any run number an index reaches: a manifest or run numbered past
/// it is refused, so that a new run's number never overflows.
const RUN_NUMBER_MAX: u64 = 1 << 62;
/// The largest run number a received snapshot may hold: a node that
/// installs it numbers its runs from there, and would need a run per
/// transfer for millennia to reach [`RUN_NUMBER_MAX`].
const RUN_NUMBER_RECEIVED_MAX: u64 = 1 << 48;
const _: () = assert!(RUN_NUMBER_RECEIVED_MAX < RUN_NUMBER_MAX >> 1);

/// Runs of one size merged into one.
const MERGE_FAN: usize = 4;

/// Ids a merge writes each second however few come in: an idle node
/// still finishes its merges (one of 8 million ids in under three
/// minutes).
const MERGE_IDS_PER_SECOND: u64 = 50_000;

/// How often a merge waiting for its pace looks again at the time (ids
/// coming in wake it at once).
const PACE_RECHECK: Duration = Duration::from_millis(50);

/// Keys of replaced runs removed per batch, one batch between entries.
/// sled reads back the leaf that holds each key it removes (the old runs'
/// chunks are cold) and merges the leaves it empties, and the writer may
/// apply several queued batches as one, holding all of that until it ends:
/// at 2,500 keys a batch, removing a merge's inputs raised a node's
/// resident memory by 50-300 MB for a moment.
const REMOVALS_PER_BATCH: usize = 500;

/// Keys removed per batch while more than [`REMOVALS_BEHIND`] wait, so
/// that removals keep up with merges however fast transfers come: four
/// entries of 8,190 transfers with ids of 64 bytes make about 1,800
/// replaced keys per apply once the index has three levels.
const REMOVALS_PER_BATCH_BEHIND: usize = 2_500;

/// Keys waiting for removal beyond which [`REMOVALS_PER_BATCH_BEHIND`] go
/// per batch (about 10 MB of keys).
const REMOVALS_BEHIND: usize = 100_000;

/// A Bloom filter's bits per id, and the bits each id sets: about 1%
/// false positives.
const FILTER_BITS_PER_ID: u64 = 10;
const FILTER_PROBES: u64 = 7;

/// Most ids looked up from the runs that the ledger holds, unless
/// configured (`limits.transfer_index_held_max`): a re-send or a post soon
/// after its transfer is decided without a read of sled.
pub const INDEX_HELD_MAX: usize = 100_000;

/// Most refusals the ledger holds once they are on sled (fewer if
/// [`Limits::looked_max`] is smaller): each holds its whole request, a few
/// hundred bytes, and a member could make any number of them.
const REFUSALS_HELD_MAX: usize = 10_000;

/// The index's sizes.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Most ids looked up from the runs that the ledger holds.
    pub looked_max: usize,
    /// Ids of the tail that a new run takes.
    pub run_ids: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            looked_max: INDEX_HELD_MAX,
            run_ids: RUN_IDS,
        }
    }
}

/// The runs, newest first, and the height through which they hold every
/// block's transfers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    runs: Vec<RunMeta>,
    through: u64,
    next_run: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct RunMeta {
    number: u64,
    ids: u64,
}

/// A run lookups use: its filter in memory, its chunks on sled.
#[derive(Debug)]
struct Run {
    meta: RunMeta,
    filter: Filter,
    /// The writer's number of the batch that completes it on sled.
    written_by: u64,
}

/// The index as apply keeps it (inside the applied state, under its lock).
#[derive(Debug, Default)]
pub struct Index {
    /// The manifest as last queued.
    manifest: Manifest,
    /// The runs lookups use, newest first.
    live: Vec<Run>,
    /// Ids the ledger holds that no run has yet, in the order applied,
    /// each with the writer's number of the batch that stores its block
    /// (0: already on sled).
    tail: VecDeque<(u64, TransferId, u64)>,
    /// Ids the ledger holds that a queued run has, to drop once that run
    /// is on sled: (the batch that completes the run, its ids).
    flushed: VecDeque<(u64, Vec<(TransferId, u64)>)>,
    /// Ids the ledger holds because an entry named them, oldest first.
    looked: VecDeque<(TransferId, u64)>,
    /// Ids whose refusal the ledger holds, oldest first, each with the
    /// writer's number of the batch that stores it (0: already on sled).
    refused: VecDeque<(u64, TransferId)>,
    /// The ids that may have a refusal stored.
    refusals: RefusalFilter,
    /// The job making a new run of the tail, if one runs.
    flush: Option<Job>,
    /// The jobs merging runs, each with the size class of its inputs: one
    /// per class at a time, beside a flush (a long merge holds up no new
    /// run and no merge of smaller runs).
    merges: Vec<(u32, Job)>,
    /// Merged runs whose manifest is queued, each with the writer's number
    /// of that batch and its inputs' class: one replaces its inputs among
    /// the live runs once that batch is on sled.
    merged: Vec<(u64, u32, Built)>,
    /// Ids come into the tail, which paces the merges.
    pace: Arc<Pace>,
    /// Keys of merged runs' inputs, and of runs a stop cut short, still
    /// to remove: a few thousand at a time, and none while a walk has the
    /// tree frozen (the writer would keep each value it removes in memory
    /// for the walk).
    removals: Vec<Vec<u8>>,
}

#[derive(Debug)]
struct Job {
    thread: Option<JoinHandle<Result<Built, String>>>,
    cancel: Arc<AtomicBool>,
}

/// The niceness of the index's job threads: behind apply and the API,
/// ahead of the seal checks that only save work.
const JOB_NICE: i32 = 10;

impl Job {
    /// Runs `make` on a thread of its own; `make` gives up once told to
    /// stop.
    fn start(make: impl FnOnce(&AtomicBool) -> Result<Built, String> + Send + 'static) -> Self {
        let cancel = Arc::new(AtomicBool::new(false));
        let stop = cancel.clone();
        let thread = std::thread::Builder::new()
            .name("transfer-index".into())
            .spawn(move || {
                let me = rustix::thread::gettid();
                let _ = rustix::process::setpriority_process(Some(me), JOB_NICE);
                make(&stop)
            })
            .expect("spawning a transfer index thread");
        Self {
            thread: Some(thread),
            cancel,
        }
    }

    fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Waits for the job and takes what it made.
    fn join(mut self) -> Result<Built, IndexError> {
        let thread = self
            .thread
            .take()
            .ok_or_else(|| err("a job joined twice"))?;
        (thread.join())
            .map_err(|_| err("a job thread panicked"))?
            .map_err(err)
    }
}

/// What a job made: a run whose chunks and filter it queued.
#[derive(Debug)]
struct Built {
    run: RunMeta,
    filter: Filter,
    /// The runs it replaces (a merge's inputs).
    replaces: Vec<u64>,
    /// The keys of the runs it replaces, removed once it is live.
    replaced_keys: Vec<Vec<u8>>,
    /// The height through which the runs hold every block, with it.
    through: u64,
    /// A new run's ids, which the ledger drops once it is on sled.
    held: Vec<(TransferId, u64)>,
}

/// Why the index could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("the transfer index: {0}")]
pub struct IndexError(String);

fn err(e: impl std::fmt::Display) -> IndexError {
    IndexError(e.to_string())
}

impl Index {
    /// Reads the index of the state in `tree`: the manifest's runs and
    /// their filters; the ids of the blocks past them, which `ledger`
    /// holds; the keys of runs the manifest does not name, which it
    /// removes behind apply ([`Self::maintain`]); and the ids refusals are
    /// stored under, into a filter.
    pub fn load(tree: &sled::Tree, ledger: &mut Ledger) -> Result<Self, IndexError> {
        let manifest = manifest(tree)?;
        let (leftovers, largest) = unlisted_keys(tree, &manifest)?;
        if let Some(past) = largest.filter(|n| *n >= RUN_NUMBER_MAX) {
            return Err(err(format!(
                "the state holds chunks of a run numbered {past}, past any an index makes \
                 ({RUN_NUMBER_MAX}), that the manifest does not name"
            )));
        }
        let mut index = Self::with_manifest(tree, manifest, ledger)?;
        if !leftovers.is_empty() {
            // Removed behind apply, a batch at a time, like a merge's
            // inputs: a start does not wait for it. No new run takes the
            // number of one they belong to.
            tracing::info!(
                keys = leftovers.len(),
                "index runs the manifest does not name: removing them behind apply"
            );
            let next = largest.map_or(0, |n| n + 1);
            index.manifest.next_run = index.manifest.next_run.max(next);
            index.removals = leftovers;
        }
        for key in tree.scan_prefix([REJECTED_TAG]).keys() {
            let key = key.map_err(err)?;
            let id =
                std::str::from_utf8(&key[1..]).map_err(|_| err("a refusal's key is not an id"))?;
            index.refusals.insert(id_hash(id));
        }
        Ok(index)
    }

    /// [`Self::load`], changing nothing on sled (for an audit).
    pub fn read(tree: &sled::Tree, ledger: &mut Ledger) -> Result<Self, IndexError> {
        Self::with_manifest(tree, manifest(tree)?, ledger)
    }

    fn with_manifest(
        tree: &sled::Tree,
        manifest: Manifest,
        ledger: &mut Ledger,
    ) -> Result<Self, IndexError> {
        let mut live = Vec::with_capacity(manifest.runs.len());
        for meta in &manifest.runs {
            let mut bytes = Vec::new();
            for kv in tree.scan_prefix(run_prefix(FILTER_TAG, meta.number)) {
                bytes.extend_from_slice(&kv.map_err(err)?.1);
            }
            check_filter(meta, bytes.len())?;
            let filter = Filter::from_bytes(&bytes).expect("a filter check_filter takes");
            live.push(Run {
                meta: *meta,
                filter,
                written_by: 0,
            });
        }
        let mut tail = VecDeque::new();
        for_each_transfer_block_from(tree, manifest.through.saturating_add(1), |height, block| {
            for t in block {
                ledger.hold_indexed(t.id.clone(), height);
                tail.push_back((0, t.id, height));
            }
        })
        .map_err(err)?;
        Ok(Self {
            manifest,
            live,
            tail,
            ..Self::default()
        })
    }

    /// Notes that the ledger holds `ids` (each with its height), which
    /// batch `batch` stores.
    pub fn hold(&mut self, batch: u64, ids: impl IntoIterator<Item = (TransferId, u64)>) {
        let before = self.tail.len();
        self.tail
            .extend(ids.into_iter().map(|(id, height)| (batch, id, height)));
        self.pace.came((self.tail.len() - before) as u64);
    }

    /// Notes that the ledger holds `id` at `height`, looked up from the
    /// runs.
    pub fn remember(&mut self, id: TransferId, height: u64) {
        self.looked.push_back((id, height));
    }

    /// Notes that the ledger holds the refusals under `ids`, which batch
    /// `batch` stores (0: looked up from sled).
    pub fn hold_refused(&mut self, batch: u64, ids: impl IntoIterator<Item = TransferId>) {
        for id in ids {
            if batch != 0 {
                self.refusals.insert(id_hash(id.as_str()));
            }
            self.refused.push_back((batch, id));
        }
    }

    /// Whether a refusal may be stored under `id` (if not, none is).
    pub fn may_be_refused(&self, id: &TransferId) -> bool {
        self.refusals.may_hold(id_hash(id.as_str()))
    }

    /// Where the runs store transfer `id`'s latest version, if in any
    /// (the ledger's held ids are asked first).
    pub fn look_up(&self, tree: &sled::Tree, id: &TransferId) -> Result<Option<u64>, IndexError> {
        let hash = id_hash(id.as_str());
        for run in &self.live {
            if run.filter.may_hold(hash) {
                if let Some(height) = run_look_up(tree, run.meta.number, id.as_str())? {
                    return Ok(Some(height));
                }
            }
        }
        Ok(None)
    }

    /// Between entries: drops from `ledger` the ids a run on sled has, the
    /// oldest looked-up ones past `looked_max` and the oldest refusals on
    /// sled past their bound, makes a merged run
    /// live once on sled, takes what a finished job made, and starts the
    /// next job if one is due.
    pub fn maintain(
        &mut self,
        ledger: &mut Ledger,
        writer: &Arc<Writer>,
        tree: &sled::Tree,
        limits: Limits,
    ) -> Result<(), IndexError> {
        let written = writer.written();
        while self.flushed.front().is_some_and(|(n, _)| *n <= written) {
            if let Some((_, ids)) = self.flushed.pop_front() {
                for (id, height) in ids {
                    ledger.drop_indexed(&id, height);
                }
            }
        }
        while self.looked.len() > limits.looked_max {
            if let Some((id, height)) = self.looked.pop_front() {
                ledger.drop_indexed(&id, height);
            }
        }
        let refusals_max = limits.looked_max.min(REFUSALS_HELD_MAX);
        while self.refused.len() > refusals_max
            && self.refused.front().is_some_and(|(n, _)| *n <= written)
        {
            if let Some((_, id)) = self.refused.pop_front() {
                ledger.drop_refusal(&id);
            }
        }
        let (on_sled, queued) = std::mem::take(&mut self.merged)
            .into_iter()
            .partition(|(n, ..)| *n <= written);
        self.merged = queued;
        for (n, _, built) in on_sled {
            self.removals.extend(built.replaced_keys);
            place(
                &mut self.live,
                |r| r.meta.number,
                &built.replaces,
                |at, live| {
                    live.insert(
                        at,
                        Run {
                            meta: built.run,
                            filter: built.filter,
                            written_by: n,
                        },
                    )
                },
            )?;
        }
        if !self.removals.is_empty() && !writer.is_frozen() {
            let per_batch = if self.removals.len() > REMOVALS_BEHIND {
                REMOVALS_PER_BATCH_BEHIND
            } else {
                REMOVALS_PER_BATCH
            };
            let from = self.removals.len().saturating_sub(per_batch);
            let mut removal = StateBatch::default();
            for key in self.removals.drain(from..) {
                removal.remove(key);
            }
            writer.queue(removal).map_err(err)?;
        }
        if self.flush.as_ref().is_some_and(Job::is_finished) {
            if let Some(job) = self.flush.take() {
                let built = job.join()?;
                let n = self.queue_manifest(&built, writer)?;
                // A new run: live at once (its ids are held until it is on
                // sled, so a lookup that misses its chunks meanwhile misses
                // nothing).
                self.live.insert(
                    0,
                    Run {
                        meta: built.run,
                        filter: built.filter,
                        written_by: n,
                    },
                );
                self.flushed.push_back((n, built.held));
            }
        }
        let (finished, running) = std::mem::take(&mut self.merges)
            .into_iter()
            .partition(|(_, job)| job.is_finished());
        self.merges = running;
        for (class, job) in finished {
            let built = job.join()?;
            let n = self.queue_manifest(&built, writer)?;
            self.merged.push((n, class, built));
        }
        if self.flush.is_none() {
            self.start_flush(writer, written, limits.run_ids);
        }
        loop {
            let busy: Vec<u32> = (self.merges.iter().map(|(class, _)| *class))
                .chain(self.merged.iter().map(|(_, class, _)| *class))
                .collect();
            let Some((class, inputs)) = merge_due(&self.live, written, limits.run_ids, &busy)
            else {
                break;
            };
            let number = self.next_run();
            let (writer, tree) = (writer.clone(), tree.clone());
            let pacing = Pacing {
                pace: self.pace.clone(),
                came_in: self.pace.came_in(),
                began: Instant::now(),
                ahead: (limits.run_ids * MERGE_FAN) as u64,
            };
            let job = Job::start(move |stop| merge(&writer, &tree, stop, number, inputs, pacing));
            self.merges.push((class, job));
        }
        Ok(())
    }

    /// A new run's number.
    fn next_run(&mut self) -> u64 {
        self.manifest.next_run += 1;
        self.manifest.next_run - 1
    }

    /// Queues the manifest with what `built` made; returns the writer's
    /// number of that batch.
    fn queue_manifest(&mut self, built: &Built, writer: &Arc<Writer>) -> Result<u64, IndexError> {
        let mut manifest = self.manifest.clone();
        place(
            &mut manifest.runs,
            |r| r.number,
            &built.replaces,
            |at, runs| runs.insert(at, built.run),
        )?;
        manifest.through = manifest.through.max(built.through);
        let mut batch = StateBatch::default();
        batch.insert(StateKey::IndexRuns.encode(), encode(&manifest));
        let n = writer.queue(batch).map_err(err)?;
        self.manifest = manifest;
        Ok(n)
    }

    /// Starts a new run of the tail's ids on sled, if [`Limits::run_ids`]
    /// of them are.
    fn start_flush(&mut self, writer: &Arc<Writer>, written: u64, run_ids: usize) {
        if self.tail.len() < run_ids {
            return;
        }
        let on_sled = self.tail.iter().take_while(|(n, ..)| *n <= written).count();
        if on_sled < run_ids {
            return;
        }
        // A run takes whole blocks: the manifest's height says that every
        // block up to it is in the runs.
        let mut take = run_ids;
        while take < on_sled && self.tail[take].2 == self.tail[take - 1].2 {
            take += 1;
        }
        let ids: Vec<(TransferId, u64)> = (self.tail.drain(..take))
            .map(|(_, id, height)| (id, height))
            .collect();
        let number = self.next_run();
        let writer = writer.clone();
        self.flush = Some(Job::start(move |stop| new_run(&writer, stop, number, ids)));
    }

    /// Number of runs lookups use.
    pub fn runs(&self) -> usize {
        self.live.len()
    }

    /// Stops the jobs that run, and waits for them: before the state is
    /// replaced, nothing of theirs may land there.
    pub fn stop(&mut self) {
        let merges = std::mem::take(&mut self.merges)
            .into_iter()
            .map(|(_, job)| job);
        let jobs: Vec<Job> = self.flush.take().into_iter().chain(merges).collect();
        for job in &jobs {
            job.cancel.store(true, Ordering::Release);
        }
        self.pace.wake();
        for job in jobs {
            let _ = job.join();
        }
    }
}

impl Drop for Job {
    /// A job of an index dropped (its state replaced) queues nothing more.
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Release);
    }
}

/// Puts a run in `list` in place of those of `replaces` (a merge's
/// inputs, consecutive), or at the front if it replaces none.
/// `number` gives a run's number. Inputs missing or apart fail: the run
/// put anywhere else could hide a newer version of an id.
fn place<T>(
    list: &mut Vec<T>,
    number: impl Fn(&T) -> u64,
    replaces: &[u64],
    put: impl FnOnce(usize, &mut Vec<T>),
) -> Result<(), IndexError> {
    if replaces.is_empty() {
        put(0, list);
        return Ok(());
    }
    let replaced = |r: &T| replaces.contains(&number(r));
    let at = list.iter().position(replaced);
    let together = at.and_then(|at| Some((at, list.get(at..at + replaces.len())?)));
    let Some((at, _)) = together.filter(|(_, runs)| runs.iter().all(replaced)) else {
        return Err(err(format!(
            "a merged run's inputs {replaces:?} are not all among the runs, one after another"
        )));
    };
    list.drain(at..at + replaces.len());
    put(at, list);
    Ok(())
}

/// The size class of a run of `ids`, new runs taking `run_ids`: runs of
/// one class are merged.
fn class(ids: u64, run_ids: usize) -> u32 {
    (ids / run_ids.max(1) as u64).max(1).ilog(MERGE_FAN as u64)
}

/// The oldest [`MERGE_FAN`] consecutive runs of one class, all on sled,
/// of a class not in `busy` (whose merge runs or waits to go live), with
/// that class.
fn merge_due(
    live: &[Run],
    written: u64,
    run_ids: usize,
    busy: &[u32],
) -> Option<(u32, Vec<RunMeta>)> {
    let class = |r: &Run| class(r.meta.ids, run_ids);
    live.windows(MERGE_FAN)
        .rev()
        .find(|w| {
            !busy.contains(&class(&w[0]))
                && w.iter()
                    .all(|r| r.written_by <= written && class(r) == class(&w[0]))
        })
        .map(|w| (class(&w[0]), w.iter().map(|r| r.meta).collect()))
}

/// A run of the tail's `ids` (in the order applied: a later height of an
/// id is its latest).
fn new_run(
    writer: &Writer,
    cancel: &AtomicBool,
    number: u64,
    ids: Vec<(TransferId, u64)>,
) -> Result<Built, String> {
    let mut pairs: Vec<(&str, u64)> = ids.iter().map(|(id, h)| (id.as_str(), *h)).collect();
    pairs.sort_by(|a, b| a.0.cmp(b.0).then(b.1.cmp(&a.1)));
    pairs.dedup_by(|later, earlier| later.0 == earlier.0);
    let through = ids.iter().map(|(_, h)| *h).max().unwrap_or(0);
    let mut out = RunWriter::new(number, pairs.len(), None);
    for (id, height) in pairs {
        out.push(writer, cancel, id.as_bytes(), height)?;
    }
    let (run, filter) = out.finish(writer, cancel)?;
    Ok(Built {
        run,
        filter,
        replaces: Vec::new(),
        replaced_keys: Vec::new(),
        through,
        held: ids,
    })
}

/// One run made of `inputs`, read a chunk at a time: for an id in more
/// than one, its greatest height.
fn merge(
    writer: &Writer,
    tree: &sled::Tree,
    cancel: &AtomicBool,
    number: u64,
    inputs: Vec<RunMeta>,
    pacing: Pacing,
) -> Result<Built, String> {
    let began = Instant::now();
    let mut readers: Vec<RunReader> = (inputs.iter())
        .map(|meta| RunReader::new(tree, meta.number))
        .collect();
    for r in &mut readers {
        r.advance()?;
    }
    let ids = inputs.iter().map(|m| m.ids).sum::<u64>() as usize;
    let mut out = RunWriter::new(number, ids, Some(pacing));
    // The least id of the heads, at its latest height; every head that
    // holds it moves past it. Ids are decoded in place, the least copied
    // into one buffer.
    let mut least = Vec::new();
    loop {
        let heads = readers.iter().filter_map(RunReader::head);
        let Some(id) = heads.map(|(id, _)| id).min() else {
            break;
        };
        least.clear();
        least.extend_from_slice(id);
        let mut height = 0;
        for reader in &mut readers {
            while let Some((_, h)) = reader.head().filter(|(other, _)| *other == least) {
                height = height.max(h);
                reader.advance()?;
            }
        }
        out.push(writer, cancel, &least, height)?;
    }
    let (run, filter) = out.finish(writer, cancel)?;
    // The inputs' keys: their chunks' as read, and their filters'.
    let mut replaced_keys: Vec<Vec<u8>> = readers.into_iter().flat_map(|r| r.keys).collect();
    for meta in &inputs {
        for key in tree.scan_prefix(run_prefix(FILTER_TAG, meta.number)).keys() {
            replaced_keys.push(key.map_err(|e| e.to_string())?.to_vec());
        }
    }
    tracing::info!(
        runs = inputs.len(),
        ids = run.ids,
        seconds = began.elapsed().as_secs_f64(),
        "transfer index: runs merged"
    );
    Ok(Built {
        run,
        filter,
        replaces: inputs.iter().map(|m| m.number).collect(),
        replaced_keys,
        through: 0,
        held: Vec::new(),
    })
}

/// Writes a run's pairs, given in id order, as chunks queued in batches of
/// bounded size, then its filter.
struct RunWriter {
    number: u64,
    filter: Filter,
    ids: u64,
    /// A merge's pace (a new run of the tail has none).
    pacing: Option<Pacing>,
    /// The chunk's pairs, encoded, their number, and its first id.
    chunk: Vec<u8>,
    chunk_pairs: u64,
    chunk_first: Vec<u8>,
    /// The hashes of the ids pushed since the filter was last set: set a
    /// chunk's at once, so that their cache misses overlap.
    hashes: Vec<u64>,
    batch: StateBatch,
    batch_bytes: usize,
}

/// Bytes of chunks queued per batch while a run is written, and between
/// two looks at a merge's pace: each job holds one while it fills it, and
/// merges of several classes run at once.
const RUN_BATCH_BYTES: usize = 1 << 20;

impl RunWriter {
    fn new(number: u64, ids: usize, pacing: Option<Pacing>) -> Self {
        Self {
            number,
            filter: Filter::for_ids(ids),
            ids: 0,
            pacing,
            chunk: Vec::new(),
            chunk_pairs: 0,
            chunk_first: Vec::new(),
            hashes: Vec::new(),
            batch: StateBatch::default(),
            batch_bytes: 0,
        }
    }

    fn push(
        &mut self,
        writer: &Writer,
        cancel: &AtomicBool,
        id: &[u8],
        height: u64,
    ) -> Result<(), String> {
        if self.chunk.len() + id.len() + 10 > CHUNK_BYTES && self.chunk_pairs > 0 {
            self.end_chunk(writer, cancel)?;
        }
        if self.chunk_pairs == 0 {
            self.chunk_first = id.to_vec();
        }
        self.hashes.push(id_hash(id));
        self.ids += 1;
        self.chunk_pairs += 1;
        // As `encode` writes an (id, height): the id's length, its bytes,
        // the height.
        encode_into(&id.len(), &mut self.chunk);
        self.chunk.extend_from_slice(id);
        encode_into(&height, &mut self.chunk);
        Ok(())
    }

    /// Queues the chunk as `encode` writes a `Vec<(String, u64)>`: its
    /// number of pairs, then the pairs.
    fn end_chunk(&mut self, writer: &Writer, cancel: &AtomicBool) -> Result<(), String> {
        for hash in self.hashes.drain(..) {
            self.filter.insert(hash);
        }
        let mut value = encode(&self.chunk_pairs);
        value.extend_from_slice(&self.chunk);
        self.chunk.clear();
        self.chunk_pairs = 0;
        let key = run_key(self.number, &self.chunk_first);
        self.put(writer, cancel, key, &value)
    }

    /// Adds a key to the batch, and queues the batch once it holds
    /// [`RUN_BATCH_BYTES`].
    fn put(
        &mut self,
        writer: &Writer,
        cancel: &AtomicBool,
        key: Vec<u8>,
        value: &[u8],
    ) -> Result<(), String> {
        self.batch_bytes += value.len();
        self.batch.insert(key, value);
        if self.batch_bytes >= RUN_BATCH_BYTES {
            self.queue(writer, cancel)?;
        }
        Ok(())
    }

    fn queue(&mut self, writer: &Writer, cancel: &AtomicBool) -> Result<(), String> {
        if let Some(pacing) = &self.pacing {
            pacing.wait(self.ids, cancel)?;
        }
        if cancel.load(Ordering::Acquire) {
            return Err(STOPPED.into());
        }
        let batch = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        writer
            .queue_job(batch)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn finish(mut self, writer: &Writer, cancel: &AtomicBool) -> Result<(RunMeta, Filter), String> {
        if self.chunk_pairs > 0 {
            self.end_chunk(writer, cancel)?;
        }
        // In batches like the chunks': a batch larger than the writer's
        // room for jobs would wait until no other job's batch is unwritten.
        let bytes = self.filter.to_bytes();
        for (n, piece) in (0u32..).zip(bytes.chunks(CHUNK_BYTES)) {
            let mut key = run_prefix(FILTER_TAG, self.number);
            key.extend_from_slice(&n.to_be_bytes());
            self.put(writer, cancel, key, piece)?;
        }
        if self.batch_bytes > 0 {
            self.queue(writer, cancel)?;
        }
        let meta = RunMeta {
            number: self.number,
            ids: self.ids,
        };
        Ok((meta, self.filter))
    }
}

/// Why a job gave up.
const STOPPED: &str = "stopped: the state is being replaced";

/// The ids that have come into the tail since the index was loaded, which
/// merges wait on.
#[derive(Debug, Default)]
struct Pace {
    counts: Mutex<PaceCounts>,
    moved: Condvar,
}

#[derive(Debug, Default)]
struct PaceCounts {
    came_in: u64,
    /// Merges waiting for ids: apply wakes them only if some wait.
    waiting: usize,
}

impl Pace {
    fn counts(&self) -> std::sync::MutexGuard<'_, PaceCounts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn came(&self, ids: u64) {
        let mut counts = self.counts();
        counts.came_in += ids;
        if counts.waiting > 0 {
            self.moved.notify_all();
        }
    }

    fn came_in(&self) -> u64 {
        self.counts().came_in
    }

    /// Wakes the merges that wait, to see that they are told to stop.
    fn wake(&self) {
        let _held = self.counts();
        self.moved.notify_all();
    }
}

/// A merge's pace: it writes its first `ahead` ids at once, then one id
/// for each id come into the tail since it began, plus
/// [`MERGE_IDS_PER_SECOND`]. The work of merging the same ids is the
/// same; it is spread over the transfers that come in meanwhile. The next
/// merge of the same class is due once as many ids as this one's inputs
/// hold have come in, so this one ends first by its `ahead` ids and the
/// time's share; runs of that class waiting meanwhile number at most
/// about twice [`MERGE_FAN`].
#[derive(Debug)]
struct Pacing {
    pace: Arc<Pace>,
    /// Ids come in when it began.
    came_in: u64,
    began: Instant,
    ahead: u64,
}

impl Pacing {
    /// Ids the merge may have written with `came_in` ids come in.
    fn allowed(&self, came_in: u64) -> u64 {
        let by_time = self.began.elapsed().as_millis() as u64 * MERGE_IDS_PER_SECOND / 1000;
        (self.ahead.saturating_add(by_time)).saturating_add(came_in.saturating_sub(self.came_in))
    }

    /// Waits until the merge may have written `ids`, or it is told to
    /// stop.
    fn wait(&self, ids: u64, cancel: &AtomicBool) -> Result<(), String> {
        let mut counts = self.pace.counts();
        loop {
            if cancel.load(Ordering::Acquire) {
                return Err(STOPPED.into());
            }
            if self.allowed(counts.came_in) >= ids {
                return Ok(());
            }
            counts.waiting += 1;
            counts = (self.pace.moved.wait_timeout(counts, PACE_RECHECK))
                .map(|(held, _)| held)
                .unwrap_or_else(|p| p.into_inner().0);
            counts.waiting -= 1;
        }
    }
}

/// A run's pairs in id order, read a chunk at a time: its head is the
/// next pair, its id a slice of the chunk.
struct RunReader {
    chunks: sled::Iter,
    chunk: Option<Pairs>,
    head: Option<(Range<usize>, u64)>,
    /// The keys of the chunks read so far.
    keys: Vec<Vec<u8>>,
}

impl RunReader {
    fn new(tree: &sled::Tree, number: u64) -> Self {
        Self {
            chunks: tree.scan_prefix(run_prefix(RUN_TAG, number)),
            chunk: None,
            head: None,
            keys: Vec::new(),
        }
    }

    /// The next pair (its id's bytes, valid UTF-8), none past the last.
    fn head(&self) -> Option<(&[u8], u64)> {
        let (id, height) = self.head.clone()?;
        let chunk = self.chunk.as_ref()?;
        Some((chunk.id(id), height))
    }

    /// Moves the head to the next pair.
    fn advance(&mut self) -> Result<(), String> {
        loop {
            if let Some(chunk) = &mut self.chunk {
                self.head = chunk.next().map_err(|e| chunk.error(e))?;
                if self.head.is_some() {
                    return Ok(());
                }
            }
            let Some(kv) = self.chunks.next() else {
                self.chunk = None;
                return Ok(());
            };
            let (key, value) = kv.map_err(|e| e.to_string())?;
            self.keys.push(key.to_vec());
            self.chunk = Some(Pairs::new(key, value)?);
        }
    }
}

/// A chunk's pairs decoded one at a time, as `encode` wrote a
/// `Vec<(String, u64)>`; their ids stay in the chunk.
struct Pairs {
    key: sled::IVec,
    bytes: sled::IVec,
    /// Where the next pair starts.
    at: usize,
    /// Pairs not yet decoded.
    left: u64,
}

impl Pairs {
    fn new(key: sled::IVec, bytes: sled::IVec) -> Result<Self, String> {
        match postcard::take_from_bytes::<u64>(&bytes) {
            Ok((left, rest)) => Ok(Self {
                at: bytes.len() - rest.len(),
                left,
                key,
                bytes,
            }),
            Err(e) => Err(chunk_error(&key, e)),
        }
    }

    /// The next pair: where its id lies in the chunk, and its height.
    /// Bytes left after the last are an error.
    fn next(&mut self) -> Result<Option<(Range<usize>, u64)>, crate::codec::Error> {
        let rest = &self.bytes[self.at..];
        if self.left == 0 {
            return match rest {
                [] => Ok(None),
                _ => Err(crate::codec::Error::DeserializeBadEncoding),
            };
        }
        let (id, after_id) = postcard::take_from_bytes::<&str>(rest)?;
        let (height, after) = postcard::take_from_bytes::<u64>(after_id)?;
        let end = self.bytes.len() - after_id.len();
        self.at = self.bytes.len() - after.len();
        self.left -= 1;
        Ok(Some((end - id.len()..end, height)))
    }

    /// The id at `range`, given by [`Self::next`].
    fn id(&self, range: Range<usize>) -> &[u8] {
        &self.bytes[range]
    }

    fn error(&self, e: crate::codec::Error) -> String {
        chunk_error(&self.key, e)
    }
}

fn chunk_error(key: &[u8], e: crate::codec::Error) -> String {
    format!("the index chunk at {}: {e}", hex::encode(key))
}

/// Where run `number` stores `id`, if it holds it.
fn run_look_up(tree: &sled::Tree, number: u64, id: &str) -> Result<Option<u64>, IndexError> {
    let Some(kv) = tree
        .range(run_prefix(RUN_TAG, number)..=run_key(number, id))
        .next_back()
    else {
        return Ok(None);
    };
    let (key, value) = kv.map_err(err)?;
    // The whole chunk is decoded: one damaged past the id is refused.
    let mut chunk = Pairs::new(key, value).map_err(err)?;
    let mut found = None;
    while let Some((at, height)) = chunk.next().map_err(|e| err(chunk.error(e)))? {
        if found.is_none() && chunk.id(at) == id.as_bytes() {
            found = Some(height);
        }
    }
    Ok(found)
}

fn run_prefix(tag: u8, number: u64) -> Vec<u8> {
    [&[tag][..], &number.to_be_bytes()].concat()
}

/// The run number of a run's chunk or filter piece (none: another key).
fn index_run_number(key: &[u8]) -> Option<u64> {
    let tag = *key.first()?;
    (tag == RUN_TAG || tag == FILTER_TAG).then(|| run_number(key))?
}

/// The run number in a key of [`run_prefix`]'s, after its tag.
fn run_number(key: &[u8]) -> Option<u64> {
    let number = key.get(1..1 + std::mem::size_of::<u64>())?;
    Some(u64::from_be_bytes(number.try_into().ok()?))
}

fn run_key(number: u64, first: impl AsRef<[u8]>) -> Vec<u8> {
    [&run_prefix(RUN_TAG, number)[..], first.as_ref()].concat()
}

/// The first id a chunk's key of [`run_key`]'s names (empty: a key too
/// short for one).
fn run_key_first(key: &[u8]) -> &[u8] {
    key.get(1 + std::mem::size_of::<u64>()..)
        .unwrap_or_default()
}

/// The runs a stored manifest names, to tell their keys from those of
/// runs it does not name: a merge's output not yet live, inputs not yet
/// removed. A snapshot leaves those out (a start would remove them).
pub struct Listed(Vec<u64>);

impl Listed {
    /// Of the manifest stored as `value` (none: no run).
    pub fn of(value: Option<&[u8]>) -> Result<Self, IndexError> {
        Ok(Self::named_by(&manifest_of(value)?))
    }

    fn named_by(manifest: &Manifest) -> Self {
        let mut numbers: Vec<u64> = manifest.runs.iter().map(|r| r.number).collect();
        numbers.sort_unstable();
        Self(numbers)
    }

    /// Whether `key` is a chunk's or a filter piece's of a run not named.
    pub fn unlisted(&self, key: &[u8]) -> bool {
        index_run_number(key).is_some_and(|n| self.0.binary_search(&n).is_err())
    }

    /// Whether `key` is a chunk's or a filter piece's of a run named.
    fn names(&self, key: &[u8]) -> bool {
        index_run_number(key).is_some_and(|n| self.0.binary_search(&n).is_ok())
    }
}

/// Refuses a pair of a received snapshot that an index would not load or
/// would number its runs from past [`RUN_NUMBER_RECEIVED_MAX`]: a manifest
/// no index writes, or keys of a run numbered at or past it.
pub fn check_received(key: &[u8], value: &[u8]) -> Result<(), IndexError> {
    let received_max = |what: String| {
        err(format!(
            "{what}, past any a snapshot holds ({RUN_NUMBER_RECEIVED_MAX})"
        ))
    };
    if key == StateKey::IndexRuns.encode() {
        let manifest = manifest_of(Some(value))?;
        if manifest.next_run > RUN_NUMBER_RECEIVED_MAX {
            let next = manifest.next_run;
            return Err(received_max(format!(
                "the manifest's next run number is {next}"
            )));
        }
    }
    match index_run_number(key) {
        Some(n) if n >= RUN_NUMBER_RECEIVED_MAX => Err(received_max(format!("keys of run {n}"))),
        _ => Ok(()),
    }
}

/// The filters of a received snapshot's runs, gathered to be checked
/// against its manifest as [`Index::load`] reads them: the length of each
/// piece of a run the manifest names, by key (a key given twice counts
/// once, as sled keeps it). The chunks of those runs are checked as they
/// come ([`Self::pair`]).
pub struct ReceivedFilters {
    manifest: Manifest,
    named: Listed,
    pieces: BTreeMap<Vec<u8>, usize>,
}

impl ReceivedFilters {
    /// For the snapshot's manifest (none: no run), which
    /// [`check_received`] has taken.
    pub fn new(manifest: Option<&[u8]>) -> Result<Self, IndexError> {
        let manifest = manifest_of(manifest)?;
        Ok(Self {
            named: Listed::named_by(&manifest),
            manifest,
            pieces: Default::default(),
        })
    }

    /// The height through which the runs hold every block: the load reads
    /// the transfer records of the blocks after it.
    pub fn through(&self) -> u64 {
        self.manifest.through
    }

    /// Notes a pair of the snapshot: a piece of a named run's filter, or
    /// checks a chunk of a named run ([`check_chunk`]) against the head,
    /// block `head`.
    pub fn pair(&mut self, key: &[u8], value: &[u8], head: u64) -> Result<(), IndexError> {
        if !self.named.names(key) {
            return Ok(());
        }
        match key.first() {
            Some(&FILTER_TAG) => {
                self.pieces.insert(key.to_vec(), value.len());
            }
            Some(&RUN_TAG) => check_chunk(key, value, head)?,
            _ => {}
        }
        Ok(())
    }

    /// Checks that every run the manifest names has a filter the load
    /// takes ([`check_filter`]).
    pub fn finish(&self) -> Result<(), IndexError> {
        for meta in &self.manifest.runs {
            let prefix = run_prefix(FILTER_TAG, meta.number);
            let of_run = self.pieces.range(prefix.clone()..);
            let len = (of_run.take_while(|(key, _)| key.starts_with(&prefix)))
                .map(|(_, len)| len)
                .sum();
            check_filter(meta, len)?;
        }
        Ok(())
    }
}

/// Refuses a received chunk of a run (`key`, `value`) that a lookup could
/// not read whole (a lookup that meets it stops apply), whose ids are not
/// in order from the one its key names (a lookup finds the chunk by its
/// key), or that stores an id in a block past the head, block `head`.
fn check_chunk(key: &[u8], value: &[u8], head: u64) -> Result<(), IndexError> {
    let first = run_key_first(key);
    let mut chunk = Pairs::new(key.into(), value.into()).map_err(err)?;
    let mut last: Option<Range<usize>> = None;
    while let Some((at, height)) = chunk.next().map_err(|e| err(chunk.error(e)))? {
        let in_order = match &last {
            None => chunk.id(at.clone()) == first,
            Some(before) => chunk.id(before.clone()) < chunk.id(at.clone()),
        };
        if !in_order || height > head {
            return Err(err(format!(
                "the index chunk at {}: its ids are not in order from its key's, \
                 or one is stored in block {height}, past the head ({head})",
                hex::encode(key)
            )));
        }
        last = Some(at);
    }
    Ok(())
}

/// Refuses a run's filter of `len` bytes that [`Filter::from_bytes`] does
/// not take, or that is too small for the run's ids: a merge sizes its
/// filter by its inputs' ids, so ids a filter was not made for would size
/// one past what the state holds.
fn check_filter(meta: &RunMeta, len: usize) -> Result<(), IndexError> {
    if !Filter::whole(len) {
        return Err(err(format!("run {}'s filter is cut short", meta.number)));
    }
    if Filter::words_for(meta.ids).is_none_or(|words| len / 8 < words) {
        return Err(err(format!(
            "run {} names {} ids, more than its filter of {len} bytes was made for",
            meta.number, meta.ids,
        )));
    }
    Ok(())
}

/// The stored manifest (none: no run).
fn manifest(tree: &sled::Tree) -> Result<Manifest, IndexError> {
    let value = tree.get(StateKey::IndexRuns.encode()).map_err(err)?;
    manifest_of(value.as_deref())
}

/// The manifest stored as `value` (none: no run), if it is one an index
/// writes: each run named once and numbered below the next run's number,
/// which is at most [`RUN_NUMBER_MAX`].
fn manifest_of(value: Option<&[u8]>) -> Result<Manifest, IndexError> {
    let Some(value) = value else {
        return Ok(Manifest::default());
    };
    let manifest: Manifest = decode(value).map_err(err)?;
    if manifest.next_run > RUN_NUMBER_MAX {
        return Err(err(format!(
            "the manifest's next run number {} is past any an index makes ({RUN_NUMBER_MAX})",
            manifest.next_run
        )));
    }
    let Listed(numbers) = Listed::named_by(&manifest);
    if let Some(past) = numbers.iter().find(|n| **n >= manifest.next_run) {
        return Err(err(format!(
            "the manifest names run {past}, not below its next run's number {}",
            manifest.next_run
        )));
    }
    if let Some(twice) = numbers.windows(2).find(|w| w[0] == w[1]) {
        return Err(err(format!("the manifest names run {} twice", twice[0])));
    }
    Ok(manifest)
}

/// The keys of chunks and filters of runs `manifest` does not name, and
/// the largest such run's number.
fn unlisted_keys(
    tree: &sled::Tree,
    manifest: &Manifest,
) -> Result<(Vec<Vec<u8>>, Option<u64>), IndexError> {
    let Listed(listed) = Listed::named_by(manifest);
    let (mut keys, mut largest) = (Vec::new(), None);
    for tag in [RUN_TAG, FILTER_TAG] {
        // Only the gaps between listed runs are read: a start does not
        // read the whole index to find the few keys a stop left.
        let mut from = vec![tag];
        for number in listed.iter().map(Some).chain([None]) {
            let to = match number {
                Some(n) => run_prefix(tag, *n),
                None => vec![tag + 1],
            };
            for key in tree.range(from.clone()..to).keys() {
                let key = key.map_err(err)?;
                largest = largest.max(run_number(&key));
                keys.push(key.to_vec());
            }
            match number.and_then(|n| n.checked_add(1)) {
                Some(next) => from = run_prefix(tag, next),
                None => break,
            }
        }
    }
    Ok((keys, largest))
}

/// Bloom filters of the ids refusals are stored under, so that a new id
/// costs probes in memory rather than a read of sled: each a size class
/// of [`REFUSAL_FILTER_IDS`] and twice the one before, the next made when
/// the last is full.
#[derive(Debug, Default)]
struct RefusalFilter {
    /// Each filter with the ids it holds and can hold.
    filters: Vec<(Filter, usize, usize)>,
}

/// Ids the first refusal filter is sized for.
const REFUSAL_FILTER_IDS: usize = 1 << 14;

impl RefusalFilter {
    fn insert(&mut self, hash: u64) {
        let full = self.filters.last().is_none_or(|(_, ids, room)| ids >= room);
        if full {
            let room = self
                .filters
                .last()
                .map_or(REFUSAL_FILTER_IDS, |(_, _, room)| room * 2);
            self.filters.push((Filter::for_ids(room), 0, room));
        }
        if let Some((filter, ids, _)) = self.filters.last_mut() {
            filter.insert(hash);
            *ids += 1;
        }
    }

    fn may_hold(&self, hash: u64) -> bool {
        self.filters
            .iter()
            .any(|(filter, ..)| filter.may_hold(hash))
    }
}

/// A Bloom filter of ids by [`id_hash`], blocked: an id's bits all lie in
/// one 64-byte block, so that asking costs one cache miss.
#[derive(Debug)]
struct Filter {
    words: Vec<u64>,
}

/// Words of a filter's block.
const BLOCK_WORDS: usize = 8;

impl Filter {
    /// A filter for `ids`, which the filters in memory were made for (see
    /// [`Self::words_for`]).
    fn for_ids(ids: usize) -> Self {
        let words = Self::words_for(ids as u64).expect("ids whose filters are in memory");
        Self {
            words: vec![0; words],
        }
    }

    /// Whether `len` bytes are a filter's: whole blocks, at least one.
    fn whole(len: usize) -> bool {
        len > 0 && len.is_multiple_of(8 * BLOCK_WORDS)
    }

    /// The words of a filter for `ids` (none: more than memory holds).
    fn words_for(ids: u64) -> Option<usize> {
        let blocks = (ids.checked_mul(FILTER_BITS_PER_ID)?)
            .div_ceil(64 * BLOCK_WORDS as u64)
            .max(1);
        usize::try_from(blocks).ok()?.checked_mul(BLOCK_WORDS)
    }

    /// The id's block (its first word) and its bits there: 9 bits of a
    /// second hash each.
    fn bits(&self, hash: u64) -> (usize, impl Iterator<Item = (usize, u64)>) {
        let blocks = (self.words.len() / BLOCK_WORDS) as u64;
        // Multiply-shift onto 0..blocks (no division).
        let block = (((hash >> 32) * blocks) >> 32) as usize;
        let second = hash.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let bits = (0..FILTER_PROBES).map(move |i| {
            let bit = (second >> (9 * i)) & 511;
            ((bit / 64) as usize, 1 << (bit % 64))
        });
        (block * BLOCK_WORDS, bits)
    }

    fn insert(&mut self, hash: u64) {
        let (base, bits) = self.bits(hash);
        for (word, bit) in bits {
            self.words[base + word] |= bit;
        }
    }

    fn may_hold(&self, hash: u64) -> bool {
        let (base, mut bits) = self.bits(hash);
        bits.all(|(word, bit)| self.words[base + word] & bit != 0)
    }

    fn to_bytes(&self) -> Vec<u8> {
        self.words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if !Self::whole(bytes.len()) {
            return None;
        }
        let words = bytes
            .chunks_exact(8)
            .map(|w| u64::from_le_bytes(w.try_into().expect("8 bytes")))
            .collect();
        Some(Self { words })
    }
}

/// A 64-bit hash of an id that never changes: the filters are stored.
/// FNV-1a over 8 bytes at a time (the last word padded with zeros, the
/// length mixed in), then SplitMix64's finalizer to spread its bits.
fn id_hash(id: impl AsRef<[u8]>) -> u64 {
    let id = id.as_ref();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ id.len() as u64;
    for word in id.chunks(8) {
        let mut bytes = [0; 8];
        bytes[..word.len()].copy_from_slice(word);
        h ^= u64::from_le_bytes(bytes);
        h = h.wrapping_mul(0x0100_0000_01b3);
        h ^= h >> 29;
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::{class, id_hash, merge_due, run_key, run_prefix, unlisted_keys};
    use super::{Filter, Manifest, Pace, Pacing, Run, RunMeta};
    use super::{Index, Limits};
    use super::{RefusalFilter, REFUSAL_FILTER_IDS};
    use super::{FILTER_TAG, RUN_IDS, RUN_TAG};
    use super::{REMOVALS_BEHIND, REMOVALS_PER_BATCH, REMOVALS_PER_BATCH_BEHIND};

    /// A received chunk passes only as a lookup reads it: whole, its ids
    /// in order from its key's, none stored past the head.
    #[test]
    fn a_received_chunk_a_lookup_could_not_use_is_refused() {
        let check = |first: &str, value: &[u8]| super::check_chunk(&run_key(3, first), value, 10);
        let chunk = |a: &str, ha: u64, b: &str, hb: u64| {
            postcard::to_allocvec(&(2u64, a, ha, b, hb)).unwrap()
        };
        assert!(check("org1.a", &chunk("org1.a", 1, "org1.b", 10)).is_ok());
        for (first, value, why) in [
            (
                "org1.a",
                chunk("org1.a", 1, "org1.b", 11),
                "stored in block 11, past the head (10)",
            ),
            (
                "org1.0",
                chunk("org1.a", 1, "org1.b", 2),
                "not in order from its key's",
            ),
            (
                "org1.a",
                chunk("org1.a", 1, "org1.a", 2),
                "not in order from its key's",
            ),
            (
                "org1.b",
                chunk("org1.b", 1, "org1.a", 2),
                "not in order from its key's",
            ),
            (
                "org1.a",
                [&chunk("org1.a", 1, "org1.b", 2)[..], &[0]].concat(),
                "index chunk at",
            ),
            (
                "org1.a",
                chunk("org1.a", 1, "org1.b", 2)[..9].to_vec(),
                "index chunk at",
            ),
        ] {
            let err = check(first, &value).unwrap_err().to_string();
            assert!(err.contains(why), "{why}: {err}");
        }
    }

    #[test]
    fn runs_the_manifest_does_not_name_are_found() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("state").unwrap();
        for number in [0, 1, 2, 3, 5, 7, u64::MAX] {
            tree.insert(run_key(number, "org1.a"), &b"chunk"[..])
                .unwrap();
            tree.insert(run_key(number, "org1.b"), &b"chunk"[..])
                .unwrap();
            let mut piece = run_prefix(FILTER_TAG, number);
            piece.extend_from_slice(&0u32.to_be_bytes());
            tree.insert(piece, &b"filter"[..]).unwrap();
        }
        tree.insert([RUN_TAG - 1], &b"other"[..]).unwrap();
        tree.insert([FILTER_TAG + 1], &b"other"[..]).unwrap();
        let listed = [2, 5, u64::MAX].map(|number| RunMeta { number, ids: 2 });
        let manifest = Manifest {
            runs: listed.to_vec(),
            through: 9,
            next_run: 8,
        };
        let (keys, largest) = unlisted_keys(&tree, &manifest).unwrap();
        assert_eq!(largest, Some(7), "the largest unlisted run");
        for key in keys {
            tree.remove(key).unwrap();
        }
        let runs_left = |tag: u8| {
            let numbers = tree.scan_prefix([tag]).keys().map(|k| {
                let k = k.unwrap();
                u64::from_be_bytes(k[1..9].try_into().unwrap())
            });
            numbers.collect::<Vec<_>>()
        };
        assert_eq!(runs_left(RUN_TAG), [2, 2, 5, 5, u64::MAX, u64::MAX]);
        assert_eq!(runs_left(FILTER_TAG), [2, 5, u64::MAX]);
        assert!(tree.contains_key([RUN_TAG - 1]).unwrap(), "other keys stay");
        assert!(tree.contains_key([FILTER_TAG + 1]).unwrap());
    }

    /// A manifest no index writes (a hostile leader's snapshot, a damaged
    /// disk) is refused with its fault named, before any filter is sized
    /// by it.
    #[test]
    fn a_manifest_no_index_writes_is_refused_and_sizes_nothing() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("state").unwrap();
        let mut piece = run_prefix(FILTER_TAG, 0);
        piece.extend_from_slice(&0u32.to_be_bytes());
        tree.insert(piece, Filter::for_ids(10).to_bytes()).unwrap();
        let load = |runs: &[(u64, u64)], next_run: u64| {
            let manifest = Manifest {
                runs: (runs.iter())
                    .map(|&(number, ids)| RunMeta { number, ids })
                    .collect(),
                through: u64::MAX,
                next_run,
            };
            let key = crate::raft::store::StateKey::IndexRuns.encode();
            tree.insert(key, crate::codec::encode(&manifest)).unwrap();
            let mut ledger = crate::ledger::Ledger::new(Default::default());
            Index::load(&tree, &mut ledger)
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        assert_eq!(load(&[(0, 10)], 1), Ok(()), "the run as written");
        let past = load(&[(0, 10)], 0).unwrap_err();
        assert!(
            past.contains("names run 0, not below its next run's number 0"),
            "{past}"
        );
        let twice = load(&[(0, 10), (0, 10)], 1).unwrap_err();
        assert!(twice.contains("names run 0 twice"), "{twice}");
        for next_run in [super::RUN_NUMBER_MAX + 1, u64::MAX] {
            let far = load(&[(0, 10)], next_run).unwrap_err();
            assert!(far.contains("past any an index makes"), "{far}");
        }
        // More ids than the filter was made for, up to more than any
        // memory holds: refused, nothing allocated for them.
        for ids in [10_000, u64::MAX / 4, u64::MAX] {
            let many = load(&[(0, ids)], 1).unwrap_err();
            let says = format!("run 0 names {ids} ids, more than its filter of 64 bytes");
            assert!(many.contains(&says), "{many}");
        }
        // Chunks of a run numbered past any an index makes, which the
        // manifest does not name: a new run's number would overflow.
        tree.insert(run_key(super::RUN_NUMBER_MAX, "org1.a"), &b"chunk"[..])
            .unwrap();
        let far = load(&[(0, 10)], 1).unwrap_err();
        assert!(far.contains("past any an index makes"), "{far}");
    }

    /// A received snapshot's index is checked pair by pair before it
    /// replaces anything: its manifest must be one an index writes, and
    /// no run it holds numbered at or past the bound received snapshots
    /// keep to, which leaves a node that starts from the bound room for
    /// all the runs it will ever make.
    #[test]
    fn a_received_index_is_checked_before_it_replaces_anything() {
        use super::{check_received, RUN_NUMBER_RECEIVED_MAX};
        use crate::raft::store::StateKey;
        let key = StateKey::IndexRuns.encode();
        let manifest = |next_run| {
            let runs = vec![RunMeta { number: 0, ids: 1 }];
            let through = 0;
            crate::codec::encode(&Manifest {
                runs,
                through,
                next_run,
            })
        };
        assert!(check_received(&key, &manifest(RUN_NUMBER_RECEIVED_MAX)).is_ok());
        let far = check_received(&key, &manifest(RUN_NUMBER_RECEIVED_MAX + 1)).unwrap_err();
        assert!(
            far.to_string().contains("past any a snapshot holds"),
            "{far}"
        );
        let bad = check_received(&key, &manifest(0)).unwrap_err();
        assert!(
            bad.to_string().contains("not below its next run's number"),
            "{bad}"
        );
        assert!(check_received(&key, b"\xff\xff").is_err(), "not a manifest");
        for tag in [RUN_TAG, FILTER_TAG] {
            let below = run_key(RUN_NUMBER_RECEIVED_MAX - 1, "org1.a");
            let at = run_key(RUN_NUMBER_RECEIVED_MAX, "org1.a");
            let (mut below, mut at) = (below, at);
            below[0] = tag;
            at[0] = tag;
            assert!(check_received(&below, b"chunk").is_ok());
            let far = check_received(&at, b"chunk").unwrap_err();
            assert!(far.to_string().contains("keys of run"), "{far}");
        }
        // Other keys pass as they are.
        assert!(check_received(&[RUN_TAG - 1, 0xff], b"x").is_ok());
        // A node that starts from the bound may number runs for longer
        // than it will ever run, and still load its own manifest.
        let after = manifest(RUN_NUMBER_RECEIVED_MAX + (1 << 40));
        assert!(super::manifest_of(Some(&after)).is_ok());
    }

    /// A start finds the chunks of a run a stop cut short, numbered past
    /// the manifest's next run, and leaves them to be removed behind apply;
    /// no new run takes their number meanwhile.
    #[test]
    fn a_start_leaves_a_cut_runs_keys_to_apply_and_never_reuses_its_number() {
        use crate::raft::state_machine::writer::Writer;
        use crate::raft::store::StateKey;
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("state").unwrap();
        let manifest = Manifest {
            runs: Vec::new(),
            through: 0,
            next_run: 3,
        };
        tree.insert(
            StateKey::IndexRuns.encode(),
            crate::codec::encode(&manifest),
        )
        .unwrap();
        for first in ["org1.a", "org1.b"] {
            tree.insert(run_key(5, first), &b"chunk"[..]).unwrap();
        }
        let mut ledger = crate::ledger::Ledger::new(Default::default());
        let mut index = Index::load(&tree, &mut ledger).unwrap();
        assert_eq!(index.removals.len(), 2, "found, not yet removed");
        assert!(tree.contains_key(run_key(5, "org1.a")).unwrap());
        assert_eq!(index.next_run(), 6, "past the cut run's number");
        let writer = std::sync::Arc::new(Writer::start(tree.clone(), Default::default()));
        index
            .maintain(&mut ledger, &writer, &tree, Limits::default())
            .unwrap();
        writer.caught_up().unwrap();
        assert!(index.removals.is_empty());
        let left = tree.scan_prefix(run_prefix(RUN_TAG, 5)).count();
        assert_eq!(left, 0, "removed behind apply");
    }

    /// Replaced keys go a few hundred per batch between entries, and a few
    /// thousand while a long backlog waits, so that removals keep up.
    #[test]
    fn replaced_keys_are_removed_a_few_at_a_time_and_faster_when_behind() {
        use crate::raft::state_machine::writer::Writer;
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("state").unwrap();
        let mut ledger = crate::ledger::Ledger::new(Default::default());
        let mut index = Index::load(&tree, &mut ledger).unwrap();
        let writer = std::sync::Arc::new(Writer::start(tree.clone(), Default::default()));
        let behind = REMOVALS_BEHIND + REMOVALS_PER_BATCH_BEHIND + REMOVALS_PER_BATCH;
        index.removals = (0..behind)
            .map(|i| run_key(7, format!("org1.{i:07}")))
            .collect();
        let mut removed_per_batch = Vec::new();
        for _ in 0..3 {
            let before = index.removals.len();
            index
                .maintain(&mut ledger, &writer, &tree, Limits::default())
                .unwrap();
            removed_per_batch.push(before - index.removals.len());
        }
        assert_eq!(
            removed_per_batch,
            [
                REMOVALS_PER_BATCH_BEHIND,
                REMOVALS_PER_BATCH_BEHIND,
                REMOVALS_PER_BATCH
            ]
        );
        writer.caught_up().unwrap();
    }

    #[test]
    fn a_filter_holds_every_id_put_in_and_few_others() {
        let mut filter = Filter::for_ids(10_000);
        for i in 0..10_000 {
            filter.insert(id_hash(format!("org1.in-{i}")));
        }
        assert!((0..10_000).all(|i| filter.may_hold(id_hash(format!("org1.in-{i}")))));
        let false_positives = (0..10_000)
            .filter(|i| filter.may_hold(id_hash(format!("org1.out-{i}"))))
            .count();
        assert!(false_positives < 300, "{false_positives} of 10000");
        let back = Filter::from_bytes(&filter.to_bytes()).expect("whole");
        assert_eq!(back.words, filter.words);
        assert!(Filter::from_bytes(&filter.to_bytes()[1..]).is_none(), "cut");
    }

    #[test]
    fn the_refusal_filter_grows_and_keeps_every_id() {
        let mut refusals = RefusalFilter::default();
        assert!(!refusals.may_hold(id_hash("org1.none")), "empty");
        let ids = 3 * REFUSAL_FILTER_IDS + 1;
        for i in 0..ids {
            refusals.insert(id_hash(format!("org1.in-{i}")));
        }
        let rooms: Vec<usize> = refusals.filters.iter().map(|(_, _, room)| *room).collect();
        let first = REFUSAL_FILTER_IDS;
        assert_eq!(rooms, [first, 2 * first, 4 * first], "doubling");
        assert!((0..ids).all(|i| refusals.may_hold(id_hash(format!("org1.in-{i}")))));
        let false_positives = (0..10_000)
            .filter(|i| refusals.may_hold(id_hash(format!("org1.out-{i}"))))
            .count();
        assert!(false_positives < 600, "{false_positives} of 10000");
    }

    /// Runs of each size class merge on their own: a merge of big runs
    /// that runs (or waits to go live) holds up none of smaller runs.
    #[test]
    fn each_size_class_merges_while_another_does() {
        let run = |number: u64, ids: u64| Run {
            meta: RunMeta { number, ids },
            filter: Filter::for_ids(1),
            written_by: 1,
        };
        // Newest first: four of 10 ids (class 0), then four of 40 (class 1).
        let live: Vec<Run> = (0..8)
            .map(|i| run(i, if i < 4 { 10 } else { 40 }))
            .collect();
        let numbers = |due: Option<(u32, Vec<RunMeta>)>| {
            due.map(|(class, metas)| (class, metas.iter().map(|m| m.number).collect::<Vec<_>>()))
        };
        assert_eq!(
            numbers(merge_due(&live, 1, 10, &[])),
            Some((1, vec![4, 5, 6, 7])),
            "the oldest runs first"
        );
        assert_eq!(
            numbers(merge_due(&live, 1, 10, &[1])),
            Some((0, vec![0, 1, 2, 3])),
            "beside a merge of the bigger runs"
        );
        assert_eq!(numbers(merge_due(&live, 1, 10, &[0, 1])), None);
        assert_eq!(numbers(merge_due(&live, 0, 10, &[])), None, "not on sled");
    }

    /// A snapshot's walk leaves out the keys of runs that the manifest, as
    /// it was at the freeze, does not name (a merge's output not yet live,
    /// inputs not yet removed), and keeps every other key.
    #[test]
    fn a_walk_leaves_out_runs_the_frozen_manifest_does_not_name() {
        use crate::raft::state_machine::snapshot::{write_pairs, Pairs};
        use crate::raft::state_machine::writer::{StateBatch, Writer};
        use crate::raft::store::StateKey;
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("state").unwrap();
        let writer = Writer::start(tree.clone(), Default::default());
        let manifest = |numbers: &[u64]| {
            let runs = numbers.iter().map(|&number| RunMeta { number, ids: 2 });
            crate::codec::encode(&Manifest {
                runs: runs.collect(),
                through: 0,
                next_run: 6,
            })
        };
        let filter_key = |number: u64| {
            let mut key = run_prefix(FILTER_TAG, number);
            key.extend_from_slice(&0u32.to_be_bytes());
            key
        };
        let mut batch = StateBatch::default();
        batch.insert(StateKey::IndexRuns.encode(), manifest(&[2]));
        for number in [2, 5] {
            batch.insert(run_key(number, "org1.a"), &b"chunk"[..]);
            batch.insert(filter_key(number), &b"filter"[..]);
        }
        batch.insert(vec![RUN_TAG], &b"short"[..]);
        batch.insert(b"zz".to_vec(), &b"other"[..]);
        writer.queue(batch).unwrap();
        writer.caught_up().unwrap();
        let walked = |writer: &Writer| {
            let mut out = Vec::new();
            write_pairs(&tree, writer, &mut out).unwrap();
            let pairs = Pairs::new(&out[..]).unwrap().map(Result::unwrap);
            pairs.map(|(k, _)| k).collect::<Vec<_>>()
        };
        writer.freeze();
        let mut now_named = StateBatch::default();
        now_named.insert(StateKey::IndexRuns.encode(), manifest(&[2, 5]));
        writer.queue(now_named).unwrap();
        writer.caught_up().unwrap();
        let frozen = walked(&writer);
        writer.thaw();
        for kept in [
            run_key(2, "org1.a"),
            filter_key(2),
            vec![RUN_TAG],
            b"zz".to_vec(),
        ] {
            assert!(frozen.contains(&kept), "{kept:?} kept");
        }
        assert!(frozen.contains(&StateKey::IndexRuns.encode()));
        for left in [run_key(5, "org1.a"), filter_key(5)] {
            assert!(!frozen.contains(&left), "{left:?} left out");
        }
        let thawed = walked(&writer);
        assert!(thawed.contains(&run_key(5, "org1.a")), "named now");
        assert!(thawed.contains(&filter_key(5)));
    }

    /// A state tree and its writer, as the jobs write through them.
    fn state() -> (sled::Db, sled::Tree, std::sync::Arc<super::Writer>) {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("state").unwrap();
        let writer = super::Writer::start(tree.clone(), Default::default());
        (db, tree, std::sync::Arc::new(writer))
    }

    /// A merge's pace that never holds it back.
    fn unpaced() -> Pacing {
        Pacing {
            pace: std::sync::Arc::new(Pace::default()),
            came_in: 0,
            began: std::time::Instant::now(),
            ahead: u64::MAX / 2,
        }
    }

    /// A merge replaces every key of its inputs, chunks and filters, and
    /// holds every id of them.
    #[test]
    fn a_merge_replaces_every_key_of_its_inputs() {
        use std::sync::atomic::AtomicBool;
        let (_db, tree, writer) = state();
        let cancel = AtomicBool::new(false);
        let id = |s: String| crate::ledger::TransferId::parse(&s).unwrap();
        // Each input also holds one id of all four, at its own height.
        let inputs: Vec<RunMeta> = (0..4u64)
            .map(|number| {
                let ids = (0..3_000).map(|i| (id(format!("org1.r{number}-{i:05}")), number + 1));
                let shared = (id("org1.shared".into()), number + 1);
                let ids = ids.chain([shared]).collect();
                super::new_run(&writer, &cancel, number, ids).unwrap().run
            })
            .collect();
        writer.caught_up().unwrap();
        let keys_of = |number: u64| {
            let tags = [RUN_TAG, FILTER_TAG].into_iter();
            tags.flat_map(|tag| tree.scan_prefix(run_prefix(tag, number)).keys())
                .map(|k| k.unwrap().to_vec())
                .collect::<Vec<_>>()
        };
        let mut inputs_keys: Vec<Vec<u8>> = (0..4).flat_map(keys_of).collect();
        assert!(inputs_keys.len() > 4 * 10, "{} keys", inputs_keys.len());
        let pacing = unpaced();
        let built = super::merge(&writer, &tree, &cancel, 4, inputs, pacing).unwrap();
        writer.caught_up().unwrap();
        let mut replaced = built.replaced_keys.clone();
        replaced.sort();
        inputs_keys.sort();
        assert_eq!(replaced, inputs_keys);
        assert_eq!(built.run.ids, 12_001, "an id held by several inputs once");
        let height = |id: &str| super::run_look_up(&tree, 4, id).unwrap();
        assert_eq!(height("org1.shared"), Some(4), "its latest height");
        assert_eq!(height("org1.r2-00042"), Some(3));
        assert!(!keys_of(4).is_empty(), "the merged run is stored");
    }

    /// A run's chunks are what `encode` writes of their pairs; a reader
    /// gives them back in id order; a chunk cut short, with bytes left
    /// over or with an id not UTF-8 is an error naming it, to a reader and
    /// to a look-up of any id in it.
    #[test]
    fn a_runs_chunks_read_back_as_encoded_and_bad_ones_are_refused() {
        use crate::codec::{decode, encode};
        use std::sync::atomic::AtomicBool;
        let (_db, tree, writer) = state();
        let cancel = AtomicBool::new(false);
        let id = |s: String| crate::ledger::TransferId::parse(&s).unwrap();
        let ids =
            (0..2_000u64).map(|i| (id(format!("org1.{}-{i}", "x".repeat(i as usize % 50))), i));
        super::new_run(&writer, &cancel, 3, ids.collect()).unwrap();
        writer.caught_up().unwrap();
        let mut stored = Vec::new();
        for kv in tree.scan_prefix(run_prefix(RUN_TAG, 3)) {
            let (key, value) = kv.unwrap();
            let pairs: Vec<(String, u64)> = decode(&value).unwrap();
            assert_eq!(encode(&pairs), value.to_vec());
            assert_eq!(key.to_vec(), run_key(3, pairs[0].0.as_bytes()));
            stored.extend(pairs);
        }
        assert!(stored.len() == 2_000 && stored.windows(2).all(|w| w[0].0 < w[1].0));
        let mut reader = super::RunReader::new(&tree, 3);
        let mut read = Vec::new();
        reader.advance().unwrap();
        while let Some((id, height)) = reader.head() {
            read.push((String::from_utf8(id.to_vec()).unwrap(), height));
            reader.advance().unwrap();
        }
        assert_eq!(read, stored);
        assert_eq!(
            super::run_look_up(&tree, 3, &stored[700].0).unwrap(),
            Some(stored[700].1)
        );
        assert_eq!(super::run_look_up(&tree, 3, "org1.-5").unwrap(), None);

        let good = encode(&vec![("org1.a".to_string(), 1u64), ("org1.b".into(), 2)]);
        let cut = good[..good.len() - 3].to_vec();
        let left_over = [&good[..], &[0]].concat();
        let not_utf8 = encode(&(1u8, vec![0xffu8, 0xfe], 1u64));
        for (number, bad) in [(10u64, cut), (11, left_over), (12, not_utf8)] {
            tree.insert(run_key(number, b"org1.a"), bad).unwrap();
            // Past the damage, and before it.
            for id in ["org1.z", "org1.a"] {
                let e = super::run_look_up(&tree, number, id).unwrap_err();
                assert!(e.to_string().contains("the index chunk at"), "{e}");
            }
            let mut reader = super::RunReader::new(&tree, number);
            let mut read = reader.advance();
            while read.is_ok() && reader.head().is_some() {
                read = reader.advance();
            }
            assert!(read.unwrap_err().contains("the index chunk at"));
        }
    }

    /// An id twice in one input (a run written by another version, or
    /// damaged) is still merged into one pair, at its greatest height.
    #[test]
    fn a_merge_writes_an_id_once_however_many_times_its_inputs_hold_it() {
        use crate::codec::encode;
        use std::sync::atomic::AtomicBool;
        let (_db, tree, writer) = state();
        let chunk = |pairs: &[(&str, u64)]| {
            let pairs: Vec<(String, u64)> =
                pairs.iter().map(|(i, h)| (i.to_string(), *h)).collect();
            encode(&pairs)
        };
        let first = chunk(&[("org1.a", 1), ("org1.a", 3), ("org1.b", 1)]);
        tree.insert(run_key(0, "org1.a"), first).unwrap();
        tree.insert(run_key(1, "org1.a"), chunk(&[("org1.a", 2)]))
            .unwrap();
        let inputs = vec![RunMeta { number: 0, ids: 3 }, RunMeta { number: 1, ids: 1 }];
        let pacing = unpaced();
        let cancel = AtomicBool::new(false);
        let built = super::merge(&writer, &tree, &cancel, 2, inputs, pacing).unwrap();
        writer.caught_up().unwrap();
        assert_eq!(built.run.ids, 2);
        let stored: Vec<(String, u64)> = tree
            .scan_prefix(run_prefix(RUN_TAG, 2))
            .values()
            .flat_map(|v| crate::codec::decode::<Vec<(String, u64)>>(&v.unwrap()).unwrap())
            .collect();
        assert_eq!(
            stored,
            [("org1.a".to_string(), 3), ("org1.b".to_string(), 1)]
        );
    }

    /// A merge writes its first ids at once, then as ids come in; told
    /// to stop, it stops waiting.
    #[test]
    fn a_merge_keeps_pace_with_the_ids_that_come_in() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        use std::time::{Duration, Instant};
        let pace = Arc::new(Pace::default());
        pace.came(7);
        let pacing = Arc::new(Pacing {
            pace: pace.clone(),
            came_in: pace.came_in(),
            began: Instant::now(),
            ahead: 100,
        });
        let cancel = Arc::new(AtomicBool::new(false));
        pacing.wait(100, &cancel).expect("ahead: at once");
        // Far more than the time allows within this test.
        let far = 100 + 1_000 * super::MERGE_IDS_PER_SECOND;
        let waiting = {
            let (pacing, cancel) = (pacing.clone(), cancel.clone());
            std::thread::spawn(move || pacing.wait(far, &cancel))
        };
        assert!(
            pacing.allowed(pace.came_in() + far / 2) < far,
            "half of the ids"
        );
        assert!(pacing.allowed(pace.came_in() + far) >= far, "all of them");
        pace.came(far / 2);
        assert!(!waiting.is_finished(), "half of the ids come in");
        pace.came(far / 2);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !waiting.is_finished() {
            assert!(
                Instant::now() < deadline,
                "still waiting with every id come in"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        waiting.join().unwrap().expect("paced");
        let stopped = {
            let (pacing, cancel) = (pacing.clone(), cancel.clone());
            std::thread::spawn(move || pacing.wait(10 * far, &cancel))
        };
        cancel.store(true, Ordering::Release);
        pace.wake();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !stopped.is_finished() {
            assert!(Instant::now() < deadline, "still waiting once told to stop");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(stopped.join().unwrap().is_err());
    }

    /// With no ids coming in (an idle node), a merge still moves on.
    #[test]
    fn a_merge_moves_on_in_time_with_no_ids_coming_in() {
        use std::sync::atomic::AtomicBool;
        use std::sync::Arc;
        use std::time::Instant;
        let pace = Arc::new(Pace::default());
        let pacing = Pacing {
            pace,
            came_in: 0,
            began: Instant::now(),
            ahead: 0,
        };
        let began = Instant::now();
        let ids = super::MERGE_IDS_PER_SECOND / 10;
        let waiting = std::thread::spawn(move || pacing.wait(ids, &AtomicBool::new(false)));
        let deadline = began + std::time::Duration::from_secs(10);
        while !waiting.is_finished() {
            assert!(Instant::now() < deadline, "still waiting with time gone by");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        waiting.join().unwrap().expect("in time");
        assert!(began.elapsed().as_millis() >= 90, "not before its time");
    }

    /// A merged run takes its inputs' place; inputs missing or apart are
    /// refused rather than the run put where it could hide newer ids.
    #[test]
    fn a_merged_run_takes_the_place_of_its_inputs_or_none() {
        let list = || vec![9u64, 8, 4, 3, 2, 1, 0];
        let put = |n: u64| move |at: usize, l: &mut Vec<u64>| l.insert(at, n);
        let mut l = list();
        super::place(&mut l, |r| *r, &[4, 3, 2, 1], put(10)).unwrap();
        assert_eq!(l, [9, 8, 10, 0]);
        let mut l = list();
        super::place(&mut l, |r| *r, &[], put(11)).unwrap();
        assert_eq!(l, [11, 9, 8, 4, 3, 2, 1, 0], "a new run: in front");
        for replaces in [&[4, 3, 2, 7][..], &[8, 4, 2, 1], &[5, 6, 7, 12]] {
            let mut l = list();
            assert!(super::place(&mut l, |r| *r, replaces, put(10)).is_err());
            assert_eq!(l, list(), "{replaces:?}: unchanged");
        }
    }

    #[test]
    fn runs_are_merged_by_size_class() {
        let run = RUN_IDS as u64;
        assert_eq!(class(1, RUN_IDS), 0);
        assert_eq!(class(run, RUN_IDS), 0);
        assert_eq!(class(4 * run - 1, RUN_IDS), 0);
        assert_eq!(class(4 * run, RUN_IDS), 1);
        assert_eq!(class(16 * run, RUN_IDS), 2);
    }
}
