//! Writes applied entries to sled behind apply, on a thread of its own.
//!
//! Apply changes the ledger in memory and queues the entries' changes as
//! one sled batch; the answers go out while the batch is written. That is
//! safe because the state on sled is never what makes a write durable: the
//! log is (fsynced on a majority before the entry commits), and a node that
//! restarts re-applies the committed entries past its stored last-applied.
//! What must hold is that nobody reads sled before it has what memory
//! already shows: every read of sled first waits for the batches queued so
//! far ([`Writer::caught_up`]). Batches queued while the writer is busy are
//! written as one sled batch, each key's last write winning: a writer that
//! falls behind writes a record that several blocks change (an account's)
//! once.
//!
//! A reader that walks the whole tree (a snapshot build, a backup) does so
//! without holding up apply: it [freezes](Writer::freeze) the tree at a
//! point, and from then on the writer keeps, for each key it writes, the
//! value it had at that point ([`Writer::kept`]), removed keys included
//! ([`Writer::kept_values`]).

use std::collections::HashMap;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

/// Batches queued before apply waits for the writer: with those the writer
/// has taken ([`MERGED_MAX`]), a bound on the memory they hold (a batch of
/// 8,000 transfers is a few MB).
const QUEUED_MAX: usize = 16;

/// Bytes of the batches queued and not yet written (those the writer has
/// taken included) before apply waits for the writer, unless nothing is
/// queued. A node catching up applies several entries at once, so its
/// batches are that many times larger: the count alone would let them hold
/// hundreds of MB.
const QUEUED_BYTES_MAX: usize = 64 << 20;

/// Bytes of the transfer index job's batches queued and not yet written
/// before the job waits for the writer ([`Writer::queue_job`]). A merge
/// writes a run of millions of ids in batches of about 1 MiB as fast as
/// its pace allows; bounded only by [`QUEUED_BYTES_MAX`], the jobs (a
/// flush and the merges of several classes) could hold the queue full,
/// tens of MB, for as long as they run. With this bound they hold a few
/// batches unwritten at a time.
const JOB_QUEUED_BYTES_MAX: usize = 8 << 20;

/// What a write in a batch is counted as beyond its key's and value's
/// bytes: the vector and the value's handle.
const WRITE_OVERHEAD: usize = 64;

/// How far the writer has come.
#[derive(Default)]
struct Progress {
    /// Batches queued so far.
    queued: u64,
    /// Bytes of the batches queued and not yet written.
    unwritten_bytes: usize,
    /// Of those, the bytes of the index job's batches.
    job_unwritten_bytes: usize,
    /// Callers of [`Writer::queue`] waiting for room now.
    waiting: usize,
    /// Batches written so far (in queue order).
    written: u64,
    /// sled batches applied for them (several queued batches go as one).
    applied: u64,
    /// The first failed write: nothing after it is written, and every
    /// later wait fails with it.
    failed: Option<String>,
}

/// Why sled does not have what apply queued.
#[derive(Debug, thiserror::Error)]
#[error("writing the applied state to the store failed: {0}")]
pub struct WriteFailed(String);

struct Shared {
    progress: Mutex<Progress>,
    changed: Condvar,
    /// While the tree is frozen: for each key written since, its value at
    /// the point of the freeze (`None`: it had none).
    frozen: Mutex<Option<Frozen>>,
}

type Frozen = HashMap<Vec<u8>, Option<sled::IVec>>;

impl Shared {
    fn progress(&self) -> MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn frozen(&self) -> MutexGuard<'_, Option<Frozen>> {
        self.frozen.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What apply queues: writes of keys, in order (`None`: a removal).
#[derive(Default)]
pub struct StateBatch {
    writes: Vec<(Vec<u8>, Option<sled::IVec>)>,
    /// What the writes hold in memory, about.
    bytes: usize,
    /// Queued by the index job ([`Writer::queue_job`]).
    job: bool,
}

impl StateBatch {
    pub fn insert(&mut self, key: Vec<u8>, value: impl Into<sled::IVec>) {
        let value = value.into();
        self.bytes += key.len() + value.len() + WRITE_OVERHEAD;
        self.writes.push((key, Some(value)));
    }

    pub fn remove(&mut self, key: Vec<u8>) {
        self.bytes += key.len() + WRITE_OVERHEAD;
        self.writes.push((key, None));
    }
}

/// Most queued batches the writer applies as one, and most writes (sled
/// holds its lock on every read while it applies a batch).
const MERGED_MAX: usize = QUEUED_MAX;
const MERGED_WRITES_MAX: usize = 1 << 18;

/// The handle apply queues on and reads wait on.
pub struct Writer {
    shared: Arc<Shared>,
    queue: Mutex<Option<SyncSender<StateBatch>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Writer {
    /// Starts the thread that writes batches to `tree` in queue order,
    /// pausing `delay` for each (tests stand in for a slow disk with
    /// it).
    pub fn start(tree: sled::Tree, delay: std::time::Duration) -> Self {
        let shared = Arc::new(Shared {
            progress: Mutex::default(),
            changed: Condvar::new(),
            frozen: Mutex::default(),
        });
        let (tx, rx) = sync_channel(QUEUED_MAX);
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("state-writer".into())
                .spawn(move || write_queued(&tree, &rx, &shared, delay))
                .expect("spawning the state writer thread")
        };
        Self {
            shared,
            queue: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        }
    }

    /// Queues `batch` after every batch queued before it; waits only if
    /// [`QUEUED_MAX`] batches, or with it more than [`QUEUED_BYTES_MAX`],
    /// are queued. Fails once a write has failed. Returns the batch's
    /// number: it is on sled once [`Self::written`] reaches it.
    pub fn queue(&self, batch: StateBatch) -> Result<u64, WriteFailed> {
        let queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let tx = queue
            .as_ref()
            .ok_or_else(|| WriteFailed("the writer has stopped".into()))?;
        let number = {
            let unwritten = |p: &Progress| p.unwritten_bytes;
            let mut progress = self.room(unwritten, QUEUED_BYTES_MAX, batch.bytes)?;
            progress.queued += 1;
            progress.unwritten_bytes += batch.bytes;
            progress.queued
        };
        tx.send(batch)
            .map_err(|_| WriteFailed("the writer has stopped".into()))?;
        Ok(number)
    }

    /// Queues a batch of the transfer index's job as [`Self::queue`] does,
    /// after waiting while the job's batches not yet written hold more
    /// than [`JOB_QUEUED_BYTES_MAX`] (unless none is unwritten). That wait
    /// holds no lock that apply needs: apply queues meanwhile.
    pub fn queue_job(&self, mut batch: StateBatch) -> Result<u64, WriteFailed> {
        {
            let unwritten = |p: &Progress| p.job_unwritten_bytes;
            let mut progress = self.room(unwritten, JOB_QUEUED_BYTES_MAX, batch.bytes)?;
            // Counted from now: the writer subtracts it once written.
            progress.job_unwritten_bytes += batch.bytes;
        }
        batch.job = true;
        self.queue(batch)
    }

    /// The progress, once the bytes `unwritten` counts are none or leave
    /// room for `bytes` more within `max`; fails once a write has failed.
    fn room(
        &self,
        unwritten: impl Fn(&Progress) -> usize,
        max: usize,
        bytes: usize,
    ) -> Result<MutexGuard<'_, Progress>, WriteFailed> {
        let mut progress = self.shared.progress();
        loop {
            if let Some(e) = &progress.failed {
                return Err(WriteFailed(e.clone()));
            }
            let held = unwritten(&progress);
            if held == 0 || held + bytes <= max {
                return Ok(progress);
            }
            progress.waiting += 1;
            progress = (self.shared.changed.wait(progress)).unwrap_or_else(|p| p.into_inner());
            progress.waiting -= 1;
        }
    }

    /// Number of batches on sled so far (written, not necessarily
    /// fsynced): every batch numbered up to it.
    pub fn written(&self) -> u64 {
        self.shared.progress().written
    }

    /// Blocks until every batch queued so far is on sled (written, not
    /// necessarily fsynced).
    pub fn caught_up(&self) -> Result<(), WriteFailed> {
        let mut progress = self.shared.progress();
        let target = progress.queued;
        loop {
            if let Some(e) = &progress.failed {
                return Err(WriteFailed(e.clone()));
            }
            if progress.written >= target {
                return Ok(());
            }
            progress = self
                .shared
                .changed
                .wait(progress)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Freezes the tree as it is now: from now until [`Self::thaw`], the
    /// writer keeps the value each key it writes had before. The caller
    /// makes sure that apply has nothing queued (it holds the state lock,
    /// after [`Self::caught_up`]); the transfer index's jobs may queue
    /// meanwhile, but only chunks of runs that no manifest names yet, which
    /// a walk may see in part (a node that loads them removes them). One
    /// freeze at a time.
    pub fn freeze(&self) {
        let mut frozen = self.shared.frozen();
        assert!(frozen.is_none(), "one freeze at a time");
        *frozen = Some(Frozen::new());
    }

    /// What key `key` held at the freeze, if the writer has written it
    /// since (`Some(None)`: it held nothing); if not, what a read of it
    /// made before this call found is what it held.
    pub fn kept(&self, key: &[u8]) -> Option<Option<sled::IVec>> {
        self.shared
            .frozen()
            .as_ref()
            .and_then(|f| f.get(key).cloned())
    }

    /// The keys written since the freeze that held a value at it, with that
    /// value: among them those removed since, which a walk of the tree
    /// does not meet.
    pub fn kept_values(&self) -> Vec<(Vec<u8>, sled::IVec)> {
        let frozen = self.shared.frozen();
        let kept = frozen.iter().flat_map(|f| f.iter());
        kept.filter_map(|(k, v)| Some((k.clone(), v.clone()?)))
            .collect()
    }

    /// Whether a walk has the tree frozen now.
    pub fn is_frozen(&self) -> bool {
        self.shared.frozen().is_some()
    }

    /// Ends the freeze.
    pub fn thaw(&self) {
        self.shared.frozen().take();
    }
}

impl Drop for Writer {
    /// Writes what is queued, then stops the thread.
    fn drop(&mut self) {
        drop(self.queue.lock().unwrap_or_else(|p| p.into_inner()).take());
        if let Some(thread) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = thread.join();
        }
    }
}

/// Fails every later wait on the writer if its thread ends by a panic, so
/// that nothing waits for room or progress that will not come.
struct FailOnPanic<'a>(&'a Shared);

impl Drop for FailOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let mut progress = self.0.progress();
            progress
                .failed
                .get_or_insert_with(|| "the state writer panicked".into());
            self.0.changed.notify_all();
        }
    }
}

fn write_queued(
    tree: &sled::Tree,
    rx: &Receiver<StateBatch>,
    shared: &Shared,
    delay: std::time::Duration,
) {
    let _fail_on_panic = FailOnPanic(shared);
    while let Ok(first) = rx.recv() {
        // The batches queued meanwhile go with it, as one sled batch in
        // which a key's last write wins: when the writer is behind, a key
        // that several blocks write (an account's record) is written once.
        // sled applies a batch atomically, so what it holds after is the
        // state after the last of them.
        let mut writes = first.writes.len();
        let mut queued = vec![first];
        while queued.len() < MERGED_MAX && writes < MERGED_WRITES_MAX {
            match rx.try_recv() {
                Ok(next) => {
                    writes += next.writes.len();
                    queued.push(next);
                }
                Err(_) => break,
            }
        }
        let merged = queued.len() as u64;
        let bytes: usize = queued.iter().map(|q| q.bytes).sum();
        let job_bytes: usize = queued.iter().filter(|q| q.job).map(|q| q.bytes).sum();
        // A slow disk is slow for each batch's writes, merged or not.
        std::thread::sleep(delay * queued.len() as u32);
        let mut batch = sled::Batch::default();
        let mut keys = Vec::new();
        for (key, value) in queued.into_iter().flat_map(|q| q.writes) {
            match value {
                Some(value) => batch.insert(key.as_slice(), value),
                None => batch.remove(key.as_slice()),
            }
            keys.push(key);
        }
        let result = keep_frozen(tree, &keys, shared).and_then(|()| tree.apply_batch(batch));
        let mut progress = shared.progress();
        match result {
            Ok(()) => {
                progress.written += merged;
                progress.unwritten_bytes -= bytes;
                progress.job_unwritten_bytes -= job_bytes;
                progress.applied += 1;
            }
            Err(e) => {
                tracing::error!(error = %e, "writing the applied state failed");
                progress.failed = Some(e.to_string());
                shared.changed.notify_all();
                return;
            }
        }
        shared.changed.notify_all();
    }
}

/// While the tree is frozen, keeps the value each of `keys` has before
/// the writer first overwrites it.
fn keep_frozen(tree: &sled::Tree, keys: &[Vec<u8>], shared: &Shared) -> sled::Result<()> {
    let mut frozen = shared.frozen();
    let Some(frozen) = frozen.as_mut() else {
        return Ok(());
    };
    for key in keys {
        if !frozen.contains_key(key) {
            let then = tree.get(key)?;
            frozen.insert(key.clone(), then);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{StateBatch, Writer, JOB_QUEUED_BYTES_MAX, QUEUED_BYTES_MAX};
    use std::time::{Duration, Instant};

    /// Batches queued while the writer is busy go to sled as one, in which
    /// each key's last write wins; a walk's frozen view still sees each
    /// key as it was at the freeze.
    #[test]
    fn batches_queued_meanwhile_are_written_as_one_and_the_last_write_wins() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("state").unwrap();
        tree.insert("kept", "before").unwrap();
        tree.insert("removed", "before").unwrap();
        let writer = Writer::start(tree.clone(), Duration::ZERO);
        writer.freeze();
        // The writer keeps what a batch overwrites before it writes it,
        // under this lock: held, the writer waits with the batches it has
        // taken, and the rest stay queued until it is let go.
        let busy = writer.shared.frozen();
        let one = |writes: &[(&str, Option<&str>)]| {
            let mut batch = StateBatch::default();
            for (key, value) in writes {
                match value {
                    Some(v) => batch.insert(key.as_bytes().to_vec(), v.as_bytes()),
                    None => batch.remove(key.as_bytes().to_vec()),
                }
            }
            writer.queue(batch).unwrap()
        };
        one(&[("first", Some("1"))]);
        one(&[("kept", Some("a")), ("new", Some("a"))]);
        one(&[("kept", Some("b")), ("removed", None)]);
        one(&[("new", None), ("back", Some("x"))]);
        let last = one(&[("new", Some("c")), ("back", None), ("back", Some("y"))]);
        drop(busy);
        writer.caught_up().unwrap();
        assert_eq!(writer.written(), last);
        let applied = writer.shared.progress().applied;
        assert!(applied < last, "{applied} sled batches for {last}");
        let get = |k: &str| tree.get(k).unwrap().map(|v| v.to_vec());
        assert_eq!(get("kept"), Some(b"b".to_vec()));
        assert_eq!(get("new"), Some(b"c".to_vec()));
        assert_eq!(get("back"), Some(b"y".to_vec()));
        assert_eq!(get("removed"), None);
        assert_eq!(get("first"), Some(b"1".to_vec()));
        let kept = |k: &str| writer.kept(k.as_bytes()).map(|v| v.map(|v| v.to_vec()));
        assert_eq!(kept("kept"), Some(Some(b"before".to_vec())));
        assert_eq!(kept("removed"), Some(Some(b"before".to_vec())));
        assert_eq!(kept("new"), Some(None), "written after the freeze");
        assert_eq!(kept("back"), Some(None));
        let mut removed_included = writer.kept_values();
        removed_included.sort();
        let keys: Vec<&[u8]> = removed_included.iter().map(|(k, _)| &k[..]).collect();
        assert_eq!(keys, [&b"kept"[..], b"removed"]);
        writer.thaw();
    }

    /// Waits, with a deadline, until `queuing` (a thread queuing a batch,
    /// returning its number and the batches written when it was queued)
    /// waits for room while nothing is written; then lets the writer go
    /// (drops `busy`) and checks that the batch was queued as `number`
    /// only after a write.
    fn queued_after_a_write<Busy>(
        writer: &Writer,
        busy: Busy,
        queuing: std::thread::ScopedJoinHandle<'_, (u64, u64)>,
        number: u64,
    ) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while writer.shared.progress().waiting == 0 {
            assert!(
                Instant::now() < deadline && !queuing.is_finished(),
                "batch {number} was queued while nothing was written"
            );
            std::thread::yield_now();
        }
        assert_eq!(writer.written(), 0);
        drop(busy);
        let (queued_as, written_then) = queuing.join().unwrap();
        assert_eq!(queued_as, number);
        assert!(written_then >= 1, "queued before a batch was written");
    }

    /// Apply waits for the writer once the batches it has not written yet
    /// hold more than [`QUEUED_BYTES_MAX`], however few they are.
    #[test]
    fn apply_waits_while_unwritten_batches_hold_too_many_bytes() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let writer = Writer::start(db.open_tree("state").unwrap(), Duration::ZERO);
        writer.freeze();
        let half = |key: &str| {
            let mut batch = StateBatch::default();
            batch.insert(key.as_bytes().to_vec(), vec![7u8; QUEUED_BYTES_MAX / 2 + 1]);
            batch
        };
        // Held as in the test above: the first batch stays unwritten.
        let busy = writer.shared.frozen();
        assert_eq!(writer.queue(half("a")).unwrap(), 1);
        std::thread::scope(|s| {
            let second = s.spawn(|| {
                let number = writer.queue(half("b")).unwrap();
                (number, writer.written())
            });
            queued_after_a_write(&writer, busy, second, 2);
        });
        writer.caught_up().unwrap();
        assert_eq!(writer.shared.progress().unwritten_bytes, 0);
        writer.thaw();
    }

    /// The index job waits for the writer once its own batches not yet
    /// written hold more than [`JOB_QUEUED_BYTES_MAX`]; apply does not.
    #[test]
    fn the_index_job_waits_while_its_unwritten_batches_hold_too_many_bytes() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let writer = Writer::start(db.open_tree("state").unwrap(), Duration::ZERO);
        writer.freeze();
        let sized = |key: &str, bytes: usize| {
            let mut batch = StateBatch::default();
            batch.insert(key.as_bytes().to_vec(), vec![7u8; bytes]);
            batch
        };
        let half = JOB_QUEUED_BYTES_MAX / 2 + 1;
        // Held as in the tests above: the batches stay unwritten.
        let busy = writer.shared.frozen();
        assert_eq!(writer.queue_job(sized("a", half)).unwrap(), 1);
        std::thread::scope(|s| {
            let job = s.spawn(|| {
                let number = writer.queue_job(sized("c", half)).unwrap();
                (number, writer.written())
            });
            let deadline = Instant::now() + Duration::from_secs(10);
            while writer.shared.progress().waiting == 0 {
                assert!(
                    Instant::now() < deadline,
                    "the job's second batch did not wait"
                );
                std::thread::yield_now();
            }
            // Apply queues while the job waits, however much it queues.
            let apply = s.spawn(|| writer.queue(sized("b", JOB_QUEUED_BYTES_MAX)).unwrap());
            while !apply.is_finished() {
                assert!(Instant::now() < deadline, "apply waited for the job");
                std::thread::yield_now();
            }
            assert_eq!(apply.join().unwrap(), 2);
            queued_after_a_write(&writer, busy, job, 3);
        });
        writer.caught_up().unwrap();
        let progress = writer.shared.progress();
        assert_eq!(
            (progress.unwritten_bytes, progress.job_unwritten_bytes),
            (0, 0)
        );
        drop(progress);
        writer.thaw();
    }
}
