//! Snapshots: the state tree as one file, in a format of our own (the
//! magic, then each key and value with its length), stored durably and
//! never replaced by an older view.

use super::writer::Writer;
use super::{read_err, StateMachine};
use crate::codec::{decode, encode};
use crate::raft::store::storage_err;
use crate::raft::StorageError;
use openraft::storage::{Snapshot, SnapshotMeta};
use openraft::{ErrorSubject, ErrorVerb};
use std::io::Cursor;

use crate::raft::TypeConfig;

pub(super) const SNAPSHOT_META: &[u8] = b"meta";
/// The name of the current snapshot's file in [`crate::raft::store::Store::snapshots`].
pub(super) const SNAPSHOT_FILE: &[u8] = b"file";
/// First bytes of a snapshot's data: format and version (v2: values in
/// the binary encoding of [`crate::codec`]; v3: transfers per block and
/// history in runs, see [`crate::raft::store::StateKey`]; v4: leaf hashes,
/// not leaves; v5: records in chunks of about 4 KiB; v6: each block's
/// blinding; v7: no history index by height). A node refuses a snapshot
/// of another version rather than misread its keys; it reads v6, whose
/// history index keys it ignores.
const SNAPSHOT_MAGIC: &[u8] = b"alliance-state-v7\n";
const SNAPSHOT_MAGIC_V6: &[u8] = b"alliance-state-v6\n";

/// Why a snapshot's data is not one this node can install.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("not an alliance snapshot (or one of another version)")]
    NotOurs,
    #[error("truncated snapshot")]
    Truncated,
}

impl StateMachine {
    /// Stores `snapshot` unless a newer one is stored already: a snapshot
    /// build runs concurrently with installs, and must not replace a newer
    /// installed snapshot with an older view. The caller holds the
    /// snapshot lock (see [`super::SharedState`]).
    ///
    /// The data goes to a file of its own (written, synced, renamed into
    /// place), then the metadata naming it to sled (synced), then older
    /// files are removed: a crash at any point leaves the stored metadata
    /// naming a complete file.
    pub(super) fn save_snapshot(
        &self,
        meta: &SnapshotMeta<u64, openraft::BasicNode>,
        data: &[u8],
    ) -> Result<(), StorageError> {
        let sig = Some(meta.signature());
        let io_err = |e| {
            StorageError::from_io_error(ErrorSubject::Snapshot(sig.clone()), ErrorVerb::Write, e)
        };
        let current = self.store.snapshot.get(SNAPSHOT_META).ok().flatten();
        let current: Option<SnapshotMeta<u64, openraft::BasicNode>> =
            current.and_then(|m| decode(&m).ok());
        if current.is_some_and(|c| c.last_log_id > meta.last_log_id) {
            return Ok(());
        }
        // The id may come from a peer: name the file by its hash.
        let id_hash = <sha2::Sha256 as sha2::Digest>::digest(meta.snapshot_id.as_bytes());
        let name = format!("{}.snap", hex::encode(id_hash));
        write_durably(&self.store.snapshots, &name, data).map_err(io_err)?;
        let mut batch = sled::Batch::default();
        batch.insert(SNAPSHOT_META, encode(meta));
        batch.insert(SNAPSHOT_FILE, name.as_bytes());
        self.store
            .snapshot
            .apply_batch(batch)
            .map_err(|e| storage_err(ErrorSubject::Snapshot(sig.clone()), ErrorVerb::Write, e))?;
        self.store.durable.sync().map_err(io_err)?;
        for entry in std::fs::read_dir(&self.store.snapshots).map_err(io_err)? {
            let path = entry.map_err(io_err)?.path();
            if path.file_name().is_some_and(|f| f != name.as_str()) {
                std::fs::remove_file(&path).map_err(io_err)?;
            }
        }
        Ok(())
    }

    /// The stored snapshot, if there is one.
    pub(super) fn stored_snapshot(&self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let read = |e: std::io::Error| {
            StorageError::from_io_error(ErrorSubject::Snapshot(None), ErrorVerb::Read, e)
        };
        let get = |key| {
            self.store
                .snapshot
                .get(key)
                .map_err(|e| storage_err(ErrorSubject::Snapshot(None), ErrorVerb::Read, e))
        };
        let (Some(meta), Some(name)) = (get(SNAPSHOT_META)?, get(SNAPSHOT_FILE)?) else {
            return Ok(None);
        };
        let meta = decode(&meta)
            .map_err(|e| storage_err(ErrorSubject::Snapshot(None), ErrorVerb::Read, e))?;
        let name = String::from_utf8_lossy(&name).into_owned();
        let data = std::fs::read(self.store.snapshots.join(&name)).map_err(|e| {
            read(std::io::Error::new(
                e.kind(),
                format!("snapshot file {name}: {e}"),
            ))
        })?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

/// Writes `data` to `dir/name` so that it is whole on disk before the call
/// returns: a temporary file, synced, renamed into place, the folder synced.
fn write_durably(dir: &std::path::Path, name: &str, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!("{name}.tmp"));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(data)?;
    file.sync_all()?;
    std::fs::rename(&tmp, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
}

/// Encodes the key/value pairs of `tree` as frozen by `writer` (see
/// [`Writer::freeze`]): the magic, then (u32 BE length, bytes) for each
/// key and each value. The writer only inserts, so every key the tree had
/// at the freeze is still there for the walk to meet.
pub(super) fn encode_pairs(tree: &sled::Tree, writer: &Writer) -> Result<Vec<u8>, StorageError> {
    let mut out = SNAPSHOT_MAGIC.to_vec();
    for kv in tree.iter() {
        let (k, now) = kv.map_err(read_err)?;
        if let Some(v) = writer.as_frozen(&k, now) {
            put_pair(&mut out, &k, &v);
        }
    }
    Ok(out)
}

fn put_pair(out: &mut Vec<u8>, k: &[u8], v: &[u8]) {
    for part in [k, v] {
        let len = u32::try_from(part.len()).expect("sled keys and values are < 4 GiB");
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(part);
    }
}

/// A snapshot's key/value pairs, borrowed from its data.
type Pairs<'a> = Vec<(&'a [u8], &'a [u8])>;

pub(super) fn decode_pairs(data: &[u8]) -> Result<Pairs<'_>, SnapshotError> {
    fn take<'a>(rest: &mut &'a [u8]) -> Result<&'a [u8], SnapshotError> {
        let (len, tail) = rest
            .split_first_chunk::<4>()
            .ok_or(SnapshotError::Truncated)?;
        let len = u32::from_be_bytes(*len) as usize;
        if tail.len() < len {
            return Err(SnapshotError::Truncated);
        }
        let (part, tail) = tail.split_at(len);
        *rest = tail;
        Ok(part)
    }
    let mut rest = (data.strip_prefix(SNAPSHOT_MAGIC))
        .or_else(|| data.strip_prefix(SNAPSHOT_MAGIC_V6))
        .ok_or(SnapshotError::NotOurs)?;
    let mut pairs = Vec::new();
    while !rest.is_empty() {
        let k = take(&mut rest)?;
        let v = take(&mut rest)?;
        pairs.push((k, v));
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(pairs: &[(&str, &str)]) -> super::super::writer::StateBatch {
        let mut b = super::super::writer::StateBatch::default();
        for (k, v) in pairs {
            b.insert(k.as_bytes().to_vec(), v.as_bytes());
        }
        b
    }

    fn pairs(data: &[u8]) -> Vec<(String, String)> {
        let text = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
        let pairs = decode_pairs(data).unwrap();
        pairs.into_iter().map(|(k, v)| (text(k), text(v))).collect()
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
        // one after those the walk meets.
        writer
            .queue(batch(&[("b", "2"), ("0", "2"), ("c", "2")]))
            .unwrap();
        writer.caught_up().unwrap();
        let frozen = encode_pairs(&tree, &writer).unwrap();
        writer.thaw();
        let at_freeze = [("a", "1"), ("b", "1"), ("d", "1")].map(|(k, v)| (k.into(), v.into()));
        assert_eq!(pairs(&frozen), at_freeze);
        // Thawed, a walk sees the tree as it is.
        let now = pairs(&encode_pairs(&tree, &writer).unwrap());
        assert_eq!(now.len(), 5);
        assert!(now.contains(&("b".into(), "2".into())));
    }
}
