//! Snapshots: the state tree as one file, in a format of our own (the
//! magic, then each key and value with its length), stored durably and
//! never replaced by an older view. A snapshot is built, sent, received
//! and installed as a file, a bounded piece at a time: none is ever whole
//! in memory.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::index::Listed;
use super::writer::Writer;
use super::{read_err, StateMachine};
use crate::codec::{decode, encode};
use crate::raft::store::{storage_err, StateKey, Store};
use crate::raft::StorageError;
use openraft::storage::{Snapshot, SnapshotMeta};
use openraft::{ErrorSubject, ErrorVerb};

use crate::raft::TypeConfig;

pub(super) const SNAPSHOT_META: &[u8] = b"meta";
/// The name of the current snapshot's file in [`crate::raft::store::Store::snapshots`].
pub(super) const SNAPSHOT_FILE: &[u8] = b"file";
/// First bytes of a snapshot's data: format and version (v2: values in
/// the binary encoding of [`crate::codec`]; v3: transfers per block and
/// history in runs, see [`crate::raft::store::StateKey`]; v4: leaf hashes,
/// not leaves; v5: records in chunks of about 4 KiB; v6: each block's
/// blinding; v7: no history index by height; v8: each block's history in
/// chunks, found through each account's pages of runs; v9: the accounts'
/// last pages stored every few blocks). A node refuses a
/// snapshot of another version rather than misread its keys.
const SNAPSHOT_MAGIC: &[u8] = b"alliance-state-v9\n";

/// Buffer of the reads and writes of a snapshot file.
const FILE_BUFFER_BYTES: usize = 1 << 20;

/// Bytes of a snapshot file being built written between two syncs of it.
const SYNC_EVERY_BYTES: u64 = 8 << 20;

/// Bytes an older snapshot file is cut by at a time once it is removed,
/// and the pause between two cuts: ext4 frees a file's blocks in the
/// journal transaction that every other file's sync waits for, so a
/// snapshot file of hundreds of MB removed at once held up each node's
/// log syncs on the same disk by tens of ms (a 400 MB file: 27 ms at
/// most, against 6 ms cut 32 MiB at a time).
const REMOVE_STEP_BYTES: u64 = 32 << 20;
const REMOVE_STEP_PAUSE: std::time::Duration = std::time::Duration::from_millis(10);

/// A snapshot file being built, synced every [`SYNC_EVERY_BYTES`] and
/// dropped from the page cache once synced, so that it is never
/// gigabytes of dirty memory that the disk writes at once, with the log's
/// syncs (and every write) waiting behind it. The file is not read again
/// unless it is sent to a follower.
struct Trickle {
    file: File,
    written: u64,
    synced: u64,
}

impl Trickle {
    fn new(file: File) -> Self {
        Self {
            file,
            written: 0,
            synced: 0,
        }
    }

    /// Syncs what was written since the last sync and drops it from the
    /// page cache.
    fn sync(&mut self) -> std::io::Result<()> {
        self.file.sync_data()?;
        if let Some(len) = std::num::NonZeroU64::new(self.written - self.synced) {
            // Only advice: a kernel that ignores it keeps the pages cached.
            let dont_need = rustix::fs::Advice::DontNeed;
            let _ = rustix::fs::fadvise(&self.file, self.synced, Some(len), dont_need);
        }
        self.synced = self.written;
        Ok(())
    }

    /// Syncs the rest, and returns the file.
    fn finish(mut self) -> std::io::Result<File> {
        self.sync()?;
        Ok(self.file)
    }
}

impl Write for Trickle {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // Before the write, so that an error is one of a write that wrote
        // nothing.
        if self.written - self.synced >= SYNC_EVERY_BYTES {
            self.sync()?;
        }
        let n = self.file.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Why a snapshot's data is not one this node can install.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("not an alliance snapshot (or one of another version)")]
    NotOurs,
    #[error("truncated snapshot")]
    Truncated,
    #[error("a snapshot {what} of {len} bytes: the state holds none over {max} bytes")]
    TooLarge {
        what: &'static str,
        len: u64,
        max: u64,
    },
    #[error("reading the snapshot: {0}")]
    Io(#[from] std::io::Error),
}

fn io_err(
    meta: &SnapshotMeta<u64, openraft::BasicNode>,
    verb: ErrorVerb,
) -> impl Fn(std::io::Error) -> StorageError + '_ {
    move |e| StorageError::from_io_error(ErrorSubject::Snapshot(Some(meta.signature())), verb, e)
}

/// A new file in the folder of incoming snapshots, for reading and
/// writing, and its path.
pub(super) fn incoming_file(store: &Store) -> std::io::Result<(File, PathBuf)> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    std::fs::create_dir_all(&store.snapshots_incoming)?;
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let path = (store.snapshots_incoming).join(format!("{}-{n}.part", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)?;
    Ok((file, path))
}

/// Removes what a node that stopped left in the folder of incoming
/// snapshots.
pub(super) fn clear_incoming(store: &Store) -> std::io::Result<()> {
    match std::fs::remove_dir_all(&store.snapshots_incoming) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The path of `file` in the folder of incoming snapshots, if it is one
/// of its files.
pub(super) fn incoming_path(store: &Store, file: &File) -> std::io::Result<Option<PathBuf>> {
    use std::os::unix::fs::MetadataExt;
    let of = file.metadata()?;
    let Ok(entries) = std::fs::read_dir(&store.snapshots_incoming) else {
        return Ok(None);
    };
    for entry in entries {
        let entry = entry?;
        let m = entry.metadata()?;
        if m.ino() == of.ino() && m.dev() == of.dev() {
            return Ok(Some(entry.path()));
        }
    }
    Ok(None)
}

/// Held while the stored snapshot's name is read and its file opened to
/// be sent, and while older files are removed once a new one is stored:
/// a send opens the file the metadata names before it can be removed.
/// (A send that reads the name after the new metadata is applied opens
/// the new file, already synced; the store's own sync needs no lock.)
static SNAPSHOT_FILES: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn snapshot_files() -> std::sync::MutexGuard<'static, ()> {
    SNAPSHOT_FILES.lock().unwrap_or_else(|p| p.into_inner())
}

/// Removes the regular file at `path`, then, on a thread of its own
/// (returned, with the number of cuts), cuts it down
/// [`REMOVE_STEP_BYTES`] at a time before its blocks are freed; unless
/// it has another name (a hard link) or this process has it open
/// elsewhere (a snapshot being sent): then it is only removed, and its
/// blocks are freed as the last reader closes it. Readers in other
/// processes are not seen: a copy of the data directory taken meanwhile
/// may hold a cut file of an older snapshot (never the current one).
pub(super) fn remove_gently(path: &Path) -> std::io::Result<Option<std::thread::JoinHandle<u64>>> {
    use std::os::unix::fs::MetadataExt;
    let regular = std::fs::symlink_metadata(path)?.file_type().is_file();
    let file = match regular.then(|| std::fs::OpenOptions::new().write(true).open(path)) {
        Some(Ok(file)) => file,
        _ => return std::fs::remove_file(path).map(|()| None),
    };
    // Once unlinked, nothing opens it by name any more: whoever has it
    // open now is all there will be.
    std::fs::remove_file(path)?;
    let me = file.metadata()?;
    let alone = me.is_file() && me.nlink() == 0 && !open_elsewhere(&file, me.dev(), me.ino());
    if !alone || me.len() <= REMOVE_STEP_BYTES {
        return Ok(None);
    }
    let cut = move || {
        let (mut len, mut cuts) = (me.len(), 0);
        while len > REMOVE_STEP_BYTES {
            len -= REMOVE_STEP_BYTES;
            if file.set_len(len).is_err() {
                break;
            }
            cuts += 1;
            std::thread::sleep(REMOVE_STEP_PAUSE);
        }
        cuts
    };
    // Without a thread, the blocks are freed at once as `cut` drops.
    Ok((std::thread::Builder::new().name("snapshot-remove".into()))
        .spawn(cut)
        .ok())
}

/// Whether a file descriptor of this process other than `file`'s refers
/// to the file `dev`/`ino` (Linux: `/proc/self/fd`). When that cannot be
/// told, it counts as open.
fn open_elsewhere(file: &File, dev: u64, ino: u64) -> bool {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else {
        return true;
    };
    let own = file.as_raw_fd().to_string();
    fds.flatten()
        .filter(|fd| fd.file_name().to_str() != Some(own.as_str()))
        .filter_map(|fd| std::fs::metadata(fd.path()).ok())
        .any(|m| m.dev() == dev && m.ino() == ino)
}

impl StateMachine {
    /// Stores the complete snapshot file at `path` (in the folder of
    /// incoming snapshots) as the current snapshot, unless a newer one is
    /// stored already: a snapshot build runs concurrently with installs,
    /// and must not replace a newer installed snapshot with an older view.
    /// The caller holds the snapshot lock (see [`super::SharedState`]).
    /// Returns where the file is now; it is left where it was if it was
    /// not stored.
    ///
    /// The file is synced and moved into the snapshot folder, then the
    /// metadata naming it goes to sled (synced), then older files are
    /// removed: a crash at any point leaves the stored metadata naming a
    /// complete file.
    pub(super) fn save_snapshot(
        &self,
        meta: &SnapshotMeta<u64, openraft::BasicNode>,
        path: &Path,
    ) -> Result<PathBuf, StorageError> {
        let sig = Some(meta.signature());
        let io_err = io_err(meta, ErrorVerb::Write);
        let current = self.store.snapshot.get(SNAPSHOT_META).ok().flatten();
        let current: Option<SnapshotMeta<u64, openraft::BasicNode>> =
            current.and_then(|m| decode(&m).ok());
        if current.is_some_and(|c| c.last_log_id > meta.last_log_id) {
            return Ok(path.to_owned());
        }
        // The id may come from a peer: name the file by its hash.
        let id_hash = <sha2::Sha256 as sha2::Digest>::digest(meta.snapshot_id.as_bytes());
        let name = format!("{}.snap", hex::encode(id_hash));
        let dir = &self.store.snapshots;
        std::fs::create_dir_all(dir).map_err(&io_err)?;
        File::open(path)
            .and_then(|f| f.sync_all())
            .map_err(&io_err)?;
        std::fs::rename(path, dir.join(&name)).map_err(&io_err)?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(&io_err)?;
        let mut batch = sled::Batch::default();
        batch.insert(SNAPSHOT_META, encode(meta));
        batch.insert(SNAPSHOT_FILE, name.as_bytes());
        self.store
            .snapshot
            .apply_batch(batch)
            .map_err(|e| storage_err(ErrorSubject::Snapshot(sig.clone()), ErrorVerb::Write, e))?;
        self.store.durable.sync().map_err(&io_err)?;
        // The new snapshot is stored: an older file left here is only
        // space, removed with the next one stored.
        let _files = snapshot_files();
        for entry in std::fs::read_dir(dir).map_err(&io_err)? {
            let path = entry.map_err(&io_err)?.path();
            if path.file_name().is_some_and(|f| f != name.as_str()) {
                if let Err(e) = remove_gently(&path) {
                    tracing::warn!(
                        file = %path.display(),
                        error = %e,
                        "could not remove an older snapshot file; the next snapshot stored tries again"
                    );
                }
            }
        }
        Ok(dir.join(name))
    }

    /// [`Self::save_snapshot`], then the snapshot's file opened: the one
    /// stored, or the one at `path` if a newer snapshot is stored (then
    /// removed once open: only this caller reads it).
    pub(super) fn store_snapshot(
        &self,
        meta: &SnapshotMeta<u64, openraft::BasicNode>,
        path: &Path,
    ) -> Result<File, StorageError> {
        let stored = self.save_snapshot(meta, path)?;
        let file = File::open(&stored).map_err(io_err(meta, ErrorVerb::Read))?;
        if stored == path {
            let _ = std::fs::remove_file(path);
        }
        Ok(file)
    }

    /// The stored snapshot, if there is one, its data read from its file
    /// as it is sent.
    pub(super) async fn stored_snapshot(
        &self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let files = snapshot_files();
        let Some((meta, path)) = stored_file(&self.store)? else {
            return Ok(None);
        };
        let file = File::open(&path).map_err(|e| {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            StorageError::from_io_error(
                ErrorSubject::Snapshot(None),
                ErrorVerb::Read,
                std::io::Error::new(e.kind(), format!("snapshot file {name}: {e}")),
            )
        })?;
        drop(files);
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(tokio::fs::File::from_std(file)),
        }))
    }
}

type Meta = SnapshotMeta<u64, openraft::BasicNode>;

/// A key and its value.
type Pair = (Vec<u8>, Vec<u8>);

/// The stored snapshot's metadata and file, if there is one.
pub(super) fn stored_file(store: &Store) -> Result<Option<(Meta, PathBuf)>, StorageError> {
    let get = |key| {
        (store.snapshot.get(key))
            .map_err(|e| storage_err(ErrorSubject::Snapshot(None), ErrorVerb::Read, e))
    };
    let (Some(meta), Some(name)) = (get(SNAPSHOT_META)?, get(SNAPSHOT_FILE)?) else {
        return Ok(None);
    };
    let meta =
        decode(&meta).map_err(|e| storage_err(ErrorSubject::Snapshot(None), ErrorVerb::Read, e))?;
    let name = String::from_utf8_lossy(&name).into_owned();
    Ok(Some((meta, store.snapshots.join(name))))
}

/// Writes the key/value pairs of `tree` as frozen by `writer` (see
/// [`Writer::freeze`]) to `out`: the magic, then (u32 BE length, bytes)
/// for each key and each value. The keys the writer changed since the
/// freeze are written as they were then, from what it kept, also those it
/// removed, which the walk does not meet. Keys of index runs the frozen
/// manifest does not name are left out ([`Listed`]).
pub(super) fn write_pairs(
    tree: &sled::Tree,
    writer: &Writer,
    out: &mut impl Write,
) -> Result<(), StorageError> {
    let write = |e: std::io::Error| storage_err(ErrorSubject::Snapshot(None), ErrorVerb::Write, e);
    out.write_all(SNAPSHOT_MAGIC).map_err(write)?;
    let mut pair = |k: &[u8], v: &[u8]| {
        for part in [k, v] {
            let len = u32::try_from(part.len()).expect("sled keys and values are < 4 GiB");
            out.write_all(&len.to_be_bytes()).map_err(write)?;
            out.write_all(part).map_err(write)?;
        }
        Ok::<_, StorageError>(())
    };
    // Read before asking what the writer kept: a manifest written between
    // the two is then found kept (see `Writer::kept`).
    let manifest_key = StateKey::IndexRuns.encode();
    let now = tree.get(&manifest_key).map_err(read_err)?;
    let manifest = writer.kept(&manifest_key).unwrap_or(now);
    let listed = Listed::of(manifest.as_deref()).map_err(read_err)?;
    // Keys written since the freeze that the walk met, as they were then.
    let mut met = std::collections::HashSet::new();
    for kv in tree.iter() {
        let (k, now) = kv.map_err(read_err)?;
        if listed.unlisted(&k) {
            continue;
        }
        let v = match writer.kept(&k) {
            Some(then) => {
                met.insert(k.to_vec());
                then
            }
            None => Some(now),
        };
        if let Some(v) = v {
            pair(&k, &v)?;
        }
    }
    // Those removed before the walk reached them (a pending transfer's
    // record once it settles), which the tree no longer has. Installs do
    // not depend on the pairs' order.
    for (k, v) in writer.kept_values() {
        if !met.contains(&k) && !listed.unlisted(&k) {
            pair(&k, &v)?;
        }
    }
    Ok(())
}

/// Writes a new snapshot file of `tree` as frozen by `writer` in the
/// folder of incoming snapshots, synced, and returns its path.
pub(super) fn write_snapshot_file(store: &Store, writer: &Writer) -> Result<PathBuf, StorageError> {
    let write = |e: std::io::Error| storage_err(ErrorSubject::Snapshot(None), ErrorVerb::Write, e);
    let (file, path) = incoming_file(store).map_err(write)?;
    let mut out = BufWriter::with_capacity(FILE_BUFFER_BYTES, Trickle::new(file));
    write_pairs(&store.state, writer, &mut out)?;
    let file = out.into_inner().map_err(|e| write(e.into_error()))?;
    file.finish().map_err(write)?;
    Ok(path)
}

/// The key/value pairs of a snapshot's data, read from `R` one at a time.
pub(super) struct Pairs<R> {
    data: R,
}

impl<R: Read> Pairs<R> {
    /// The pairs of `data`, whose magic is read and checked first.
    pub(super) fn new(mut data: R) -> Result<Self, SnapshotError> {
        let mut magic = [0; SNAPSHOT_MAGIC.len()];
        match data.read_exact(&mut magic) {
            Ok(()) if magic == SNAPSHOT_MAGIC => Ok(Self { data }),
            Err(e) if e.kind() != std::io::ErrorKind::UnexpectedEof => Err(e.into()),
            _ => Err(SnapshotError::NotOurs),
        }
    }

    /// The next length, or `None` at the end of the data.
    fn len(&mut self, first: bool) -> Result<Option<u64>, SnapshotError> {
        let mut len = [0; 4];
        let mut got = 0;
        while got < len.len() {
            match self.data.read(&mut len[got..]) {
                Ok(0) if got == 0 && first => return Ok(None),
                Ok(0) => return Err(SnapshotError::Truncated),
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Some(u64::from(u32::from_be_bytes(len))))
    }

    /// The next `len` bytes. The buffer grows only as they arrive: a
    /// hostile length cannot make it allocate more than the data holds.
    fn part(&mut self, len: u64) -> Result<Vec<u8>, SnapshotError> {
        let mut part = Vec::new();
        (&mut self.data).take(len).read_to_end(&mut part)?;
        if part.len() as u64 != len {
            return Err(SnapshotError::Truncated);
        }
        Ok(part)
    }

    fn pair(&mut self) -> Result<Option<Pair>, SnapshotError> {
        let Some(len) = self.len(true)? else {
            return Ok(None);
        };
        let k = self.part(bounded("key", len, KEY_BYTES_MAX)?)?;
        let len = self.len(false)?.ok_or(SnapshotError::Truncated)?;
        Ok(Some((
            k,
            self.part(bounded("value", len, VALUE_BYTES_MAX)?)?,
        )))
    }
}

/// The largest key and value a state holds, with room to spare (ids are
/// short; the largest value, the governance state, is bounded by the
/// limits on members and proposals). A snapshot with a longer one is
/// refused before it is read into memory: a hostile leader cannot make a
/// follower allocate gigabytes for one value.
const KEY_BYTES_MAX: u64 = 64 << 10;
const VALUE_BYTES_MAX: u64 = 64 << 20;

fn bounded(what: &'static str, len: u64, max: u64) -> Result<u64, SnapshotError> {
    match len <= max {
        true => Ok(len),
        false => Err(SnapshotError::TooLarge { what, len, max }),
    }
}

impl<R: Read> Iterator for Pairs<R> {
    type Item = Result<Pair, SnapshotError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.pair().transpose()
    }
}

/// The pairs of the snapshot file `file`, from its start.
pub(super) fn file_pairs(file: &File) -> Result<Pairs<BufReader<&File>>, SnapshotError> {
    let mut file = file;
    file.rewind()?;
    Pairs::new(BufReader::with_capacity(FILE_BUFFER_BYTES, file))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A snapshot file being built is synced as it is written, every
    /// [`SYNC_EVERY_BYTES`], not only at the end, and holds every byte
    /// written.
    #[test]
    fn a_snapshot_file_is_synced_as_it_is_written() {
        let file = tempfile::tempfile().unwrap();
        let mut out = Trickle::new(file.try_clone().unwrap());
        let piece: Vec<u8> = (0..=255).cycle().take(1 << 20).collect();
        for i in 0..20u64 {
            out.write_all(&piece).unwrap();
            let written = (i + 1) << 20;
            assert_eq!(out.written, written);
            assert!(
                written - out.synced <= SYNC_EVERY_BYTES,
                "{} bytes unsynced after {written}",
                written - out.synced
            );
        }
        assert_eq!(out.synced, 16 << 20);
        let mut file = out.finish().unwrap();
        assert_eq!(file.metadata().unwrap().len(), 20 << 20);
        file.rewind().unwrap();
        let mut back = Vec::new();
        file.read_to_end(&mut back).unwrap();
        assert!(back.chunks(1 << 20).all(|c| c == piece.as_slice()));
    }

    /// A removed snapshot file is cut down on a thread of its own, unless
    /// it is open elsewhere in this process (being sent), then left whole
    /// for that reader, which reads all of it, or has another name.
    #[test]
    fn a_removed_snapshot_file_is_cut_down_unless_it_is_being_read() {
        let dir = tempfile::tempdir().unwrap();
        let piece: Vec<u8> = (0..=255).cycle().take(1 << 20).collect();
        let write = |name: &str| {
            let path = dir.path().join(name);
            let mut file = File::create(&path).unwrap();
            for _ in 0..40 {
                file.write_all(&piece).unwrap();
            }
            path
        };
        // 40 MiB with nothing written: only its length counts.
        let sparse = |name: &str| {
            let path = dir.path().join(name);
            File::create(&path).unwrap().set_len(40 << 20).unwrap();
            path
        };
        let sent = write("sent.snap");
        let mut reader = File::open(&sent).unwrap();
        let cut = remove_gently(&sent).unwrap();
        assert!(cut.is_none(), "a file being read is not cut");
        assert!(!sent.exists());
        let mut back = Vec::new();
        reader.read_to_end(&mut back).unwrap();
        assert_eq!(back.len(), 40 << 20);
        assert!(back.chunks(1 << 20).all(|c| c == piece.as_slice()));

        // A file with another name is only unlinked here.
        let linked = sparse("linked.snap");
        let other = dir.path().join("backup.snap");
        std::fs::hard_link(&linked, &other).unwrap();
        assert!(
            remove_gently(&linked).unwrap().is_none(),
            "a linked file is not cut"
        );
        assert_eq!(std::fs::metadata(&other).unwrap().len(), 40 << 20);

        // 40 MiB: cut once to 8 MiB, then freed.
        let idle = sparse("idle.snap");
        let cut = remove_gently(&idle).unwrap().expect("cut on a thread");
        assert!(!idle.exists());
        assert_eq!(cut.join().unwrap(), 1);
    }

    fn batch(pairs: &[(&str, &str)]) -> super::super::writer::StateBatch {
        let mut b = super::super::writer::StateBatch::default();
        for (k, v) in pairs {
            b.insert(k.as_bytes().to_vec(), v.as_bytes());
        }
        b
    }

    fn pairs(data: &[u8]) -> Vec<(String, String)> {
        let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
        let pairs = Pairs::new(data).unwrap().map(Result::unwrap);
        pairs.map(|(k, v)| (text(k), text(v))).collect()
    }

    fn encode_pairs(tree: &sled::Tree, writer: &Writer) -> Vec<u8> {
        let mut out = Vec::new();
        write_pairs(tree, writer, &mut out).unwrap();
        out
    }

    #[test]
    fn pairs_are_read_back_and_a_cut_or_foreign_file_is_refused() {
        let mut data = SNAPSHOT_MAGIC.to_vec();
        for part in [&b"key"[..], b"value", b"k2", b""] {
            data.extend_from_slice(&(part.len() as u32).to_be_bytes());
            data.extend_from_slice(part);
        }
        assert_eq!(
            pairs(&data),
            [("key".into(), "value".into()), ("k2".into(), String::new())]
        );
        let first_pair_ends = SNAPSHOT_MAGIC.len() + 4 + 3 + 4 + 5;
        for cut in SNAPSHOT_MAGIC.len() + 1..data.len() {
            let read: Result<Vec<_>, _> = Pairs::new(&data[..cut]).unwrap().collect();
            match cut == first_pair_ends {
                true => assert_eq!(read.unwrap().len(), 1),
                false => assert!(
                    matches!(read, Err(SnapshotError::Truncated)),
                    "cut at {cut}"
                ),
            }
        }
        let mut huge = SNAPSHOT_MAGIC.to_vec();
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        huge.extend_from_slice(b"short");
        let read: Result<Vec<_>, _> = Pairs::new(&huge[..]).unwrap().collect();
        assert!(matches!(
            read,
            Err(SnapshotError::TooLarge { what: "key", .. })
        ));
        // A value longer than any the state holds is refused before it is
        // read, whatever follows.
        let mut long = SNAPSHOT_MAGIC.to_vec();
        long.extend_from_slice(&1u32.to_be_bytes());
        long.push(b'k');
        long.extend_from_slice(&((64u32 << 20) + 1).to_be_bytes());
        long.extend_from_slice(b"short");
        let read: Result<Vec<_>, _> = Pairs::new(&long[..]).unwrap().collect();
        let e = read.unwrap_err();
        assert!(matches!(e, SnapshotError::TooLarge { what: "value", .. }));
        assert!(e.to_string().contains("67108865 bytes"), "{e}");
        for foreign in [&b""[..], b"alliance", b"alliance-state-v5\nxxxxxxxx"] {
            assert!(matches!(Pairs::new(foreign), Err(SnapshotError::NotOurs)));
        }
    }

    #[test]
    fn a_walk_of_a_frozen_tree_sees_it_as_it_was_at_the_freeze() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("state").unwrap();
        let writer = Writer::start(tree.clone(), std::time::Duration::ZERO);
        writer
            .queue(batch(&[("a", "1"), ("b", "1"), ("d", "1")]))
            .unwrap();
        writer.caught_up().unwrap();
        writer.freeze();
        // Written after the freeze: an overwrite, a new key before and
        // one after those the walk meets, and a removal.
        let mut changes = batch(&[("b", "2"), ("0", "2"), ("c", "2")]);
        changes.remove(b"d".to_vec());
        writer.queue(changes).unwrap();
        writer.caught_up().unwrap();
        let frozen = encode_pairs(&tree, &writer);
        writer.thaw();
        let mut got = pairs(&frozen);
        got.sort();
        let at_freeze = [("a", "1"), ("b", "1"), ("d", "1")].map(|(k, v)| (k.into(), v.into()));
        assert_eq!(got, at_freeze);
        // Thawed, a walk sees the tree as it is.
        let now = pairs(&encode_pairs(&tree, &writer));
        assert_eq!(now.len(), 4);
        assert!(now.contains(&("b".into(), "2".into())));
        assert!(!now.iter().any(|(k, _)| k == "d"), "removed");
    }
}
