//! openraft's own storage test suite, run against our sled stores.

use openraft::testing::{StoreBuilder, Suite};

use super::log_store::LogStore;
use super::state_machine::StateMachine;
use super::store::Store;
use super::{StorageError, TypeConfig};

/// Each build gets a fresh sled directory; the guard removes it.
struct SledBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for SledBuilder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("open sled");
        let sm = StateMachine::open(store.clone(), Default::default(), [0; 32])?;
        Ok((dir, LogStore::new(store), sm))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(SledBuilder).expect("openraft storage suite");
}

/// Regression: under load a sync listed a blob file that sled removed
/// before it was opened, and the failed open killed the node's Raft (found by
/// `alliance bench` with 256 clients). A listed blob that is gone is skipped.
#[test]
fn a_blob_removed_after_listing_does_not_fail_the_sync() {
    use std::collections::HashSet;
    use std::ffi::OsString;
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("7"), b"blob").expect("blob");
    let listed = vec![OsString::from("7"), OsString::from("8")]; // 8: removed meanwhile
    let mut synced = HashSet::new();
    super::store::sync_blobs(dir.path(), listed, &mut synced)
        .expect("a vanished blob is not an error");
    assert_eq!(
        synced,
        HashSet::from([OsString::from("7")]),
        "only present blobs are remembered"
    );
}

/// A data dir written before the binary encoding is refused with a clear
/// error, not misread; a new one gets the format and opens again.
#[test]
fn a_data_dir_in_another_format_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    drop(Store::open(dir.path()).expect("a new data dir opens"));
    drop(Store::open(dir.path()).expect("and opens again"));

    let old = tempfile::tempdir().expect("temp dir");
    {
        let db = sled::open(old.path()).expect("sled");
        let log = db.open_tree("log").expect("tree");
        log.insert(1u64.to_be_bytes(), &br#"{"log_id":{}}"#[..])
            .expect("insert");
        db.flush().expect("flush");
    }
    let err = Store::open(old.path())
        .err()
        .expect("an old data dir is refused");
    assert!(
        err.to_string().contains("written by an earlier alliance"),
        "{err}"
    );
    let log = sled::open(old.path())
        .expect("sled")
        .open_tree("log")
        .expect("tree");
    assert_eq!(log.len(), 1, "refusing changes nothing");
}
