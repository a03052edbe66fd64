//! This node's chain as the API reads it: block headers by height and the
//! head. Block 0 is not stored: it derives from the genesis file's hash.

use serde::{Deserialize, Serialize};

use crate::ledger::chain::Hash;
use crate::ledger::BlockHeader;
use crate::raft::state_machine::{ReadError, StateRead};

/// Block `height`: derived from genesis for 0, stored otherwise, None past
/// the head.
pub fn header(
    state: &StateRead<'_>,
    genesis_hash: Hash,
    height: u64,
) -> Result<Option<BlockHeader>, ReadError> {
    if height == 0 {
        Ok(Some(BlockHeader::genesis(genesis_hash)))
    } else if height > state.ledger.height() {
        Ok(None)
    } else {
        state.block(height)
    }
}

/// A chain head as peers exchange it.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Head {
    pub height: u64,
    #[serde(with = "hex32")]
    pub hash: Hash,
    /// The last log index the peer has applied.
    #[serde(default)]
    pub applied_index: Option<u64>,
    /// The peer's clock (Unix ms) when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_ms: Option<u64>,
}

impl Head {
    pub fn of(state: &StateRead<'_>) -> Self {
        let head = state.ledger.head();
        Self {
            height: head.height,
            hash: head.hash(),
            applied_index: state.last_applied.map(|l| l.index),
            clock_ms: None,
        }
    }
}

mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(h: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(h))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        crate::ledger::chain::from_hex(&s)
            .ok_or_else(|| serde::de::Error::custom("expected 64 hex digits"))
    }
}
