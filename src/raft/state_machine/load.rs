//! The applied state as sled holds it, read whole at start and after a
//! snapshot is installed.

use std::collections::HashMap;

use super::{read_err, Applied, Founding};
use crate::codec::decode;
use crate::ledger::{BlockHeader, Hash, Ledger, TransferIndex, TransferState};
use crate::raft::store::{for_each_transfer_block, StateKey, ACCOUNT_TAG, REJECTED_TAG};
use crate::raft::StorageError;

/// Reads the whole applied state from the state tree.
pub(super) fn load(
    tree: &sled::Tree,
    founding: &Founding,
    genesis_hash: Hash,
) -> Result<Applied, StorageError> {
    fn get<T: serde::de::DeserializeOwned + Default>(
        tree: &sled::Tree,
        key: StateKey,
    ) -> Result<T, StorageError> {
        match tree.get(key.encode()).map_err(read_err)? {
            Some(v) => decode(&v).map_err(read_err),
            None => Ok(T::default()),
        }
    }
    // Settled transfers stay on disk: only where each is stored, and the
    // pending ones, are kept.
    let mut stored_at = TransferIndex::default();
    let mut pending = HashMap::new();
    for_each_transfer_block(tree, |height, block| {
        for t in block {
            stored_at.insert(t.id.as_str().into(), height);
            if t.state == TransferState::Pending {
                pending.insert(t.id.clone(), t);
            } else {
                pending.remove(&t.id);
            }
        }
    })
    .map_err(read_err)?;
    let ledger = Ledger::from_parts(
        founding.orgs.clone(),
        scan(tree, ACCOUNT_TAG)?,
        stored_at,
        pending.into_values(),
        scan(tree, REJECTED_TAG)?,
        match tree.get(StateKey::Head.encode()).map_err(read_err)? {
            Some(v) => decode(&v).map_err(read_err)?,
            None => BlockHeader::genesis(genesis_hash),
        },
        get(tree, StateKey::Clock)?,
    )
    .with_gov(match tree.get(StateKey::Gov.encode()).map_err(read_err)? {
        Some(v) => decode(&v).map_err(read_err)?,
        None => founding.gov.clone(),
    });
    Ok(Applied {
        ledger,
        last_applied: get(tree, StateKey::LastApplied)?,
        membership: get(tree, StateKey::Membership)?,
    })
}

fn scan<T: serde::de::DeserializeOwned>(
    tree: &sled::Tree,
    tag: u8,
) -> Result<Vec<T>, StorageError> {
    tree.scan_prefix([tag])
        .map(|kv| {
            let (_, v) = kv.map_err(read_err)?;
            decode(&v).map_err(read_err)
        })
        .collect()
}
