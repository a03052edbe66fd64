//! The tamper-evident chain: blocks, Merkle trees, inclusion proofs.
//!
//! Every applied ledger entry is a block. Its leaves are the entry's results
//! in order (pending transfers that expired before it first, then each
//! command's result), each leaf a canonical JSON record. The Merkle tree is
//! RFC 6962's (node = SHA-256(0x01 ‖ l ‖ r), split at the largest power of
//! two), so inclusion paths are the standard ones; a leaf's hash is blinded:
//! SHA-256(0x00 ‖ blind ‖ data), where the blind is derived from the entry's
//! [`Blinding`] (random, chosen by the leader) and the leaf's position (see
//! [`leaf_blind`]). Block headers are public (the public window serves
//! them); without the blinds, the root of a block of one transfer could be
//! matched against guessed records (an amount and memo tried one by one for
//! a known id). Each leaf's blind is stored on the nodes and given only
//! with that leaf's proof, and tells nothing about the other leaves' blinds.
//! A header commits to the previous block's hash, the Merkle root, the
//! Raft log position, the leader's timestamp and a digest of the state the
//! entry changed; its hash is SHA-256 over a fixed binary encoding. Block 0
//! comes from the genesis file, so its hash names the consortium.
//!
//! What this proves: that a record was committed in a block of a chain whose
//! head a verifier trusts, and that no replica's stored history was rewritten
//! without its hashes changing. What it does not: Raft tolerates crashed
//! nodes, not lying ones; a majority of colluding members can build another
//! chain. Publishing heads (the public window) makes that visible.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub type Hash = [u8; 32];

fn sha256(parts: &[&[u8]]) -> Hash {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// RFC 6962's leaf hash, unblinded: block 0's leaf (the genesis file's
/// hash, which its header shows anyway).
pub fn leaf_hash(data: &[u8]) -> Hash {
    sha256(&[&[0x00], data])
}

/// The hash of a block leaf: SHA-256(0x00 ‖ blind ‖ data).
pub fn blinded_leaf_hash(blind: &Hash, data: &[u8]) -> Hash {
    sha256(&[&[0x00], blind, data])
}

/// Randomness the leader chooses for each entry, from which every leaf of
/// its block gets its blind. Stored on the nodes with the block, never in
/// the header. Hex in JSON. The default (zeros) is what a [`super::Changes`]
/// holds before an entry applies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Blinding(pub [u8; 16]);

/// Domain separation for leaf blinds.
const BLIND_TAG: &[u8] = b"alliance leaf blind v1";

/// Leaf `index`'s blind: SHA-256(tag ‖ blinding ‖ index as a big-endian
/// u64). A blind given out with one leaf's proof does not reveal the
/// blinding, so it tells nothing about another leaf's blind.
pub fn leaf_blind(blinding: &Blinding, index: u64) -> Hash {
    sha256(&[BLIND_TAG, &blinding.0, &index.to_be_bytes()])
}

impl Serialize for Blinding {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&hex::encode(self.0))
        } else {
            self.0.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for Blinding {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if !d.is_human_readable() {
            return <[u8; 16]>::deserialize(d).map(Self);
        }
        let s = String::deserialize(d)?;
        hex::decode(&s)
            .ok()
            .and_then(|b| b.try_into().ok())
            .map(Self)
            .ok_or_else(|| serde::de::Error::custom("expected 32 hex digits"))
    }
}

pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    sha256(&[&[0x01], left, right])
}

/// The largest power of two below `n` (n > 1).
fn split(n: usize) -> usize {
    debug_assert!(n > 1);
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// RFC 6962 MTH over leaf hashes (the empty tree hashes the empty string).
pub fn merkle_root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => sha256(&[]),
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&merkle_root(&leaves[..k]), &merkle_root(&leaves[k..]))
        }
    }
}

/// RFC 6962 `PATH(m, D[n])`: the sibling hashes from leaf `index` up.
pub fn inclusion_path(leaves: &[Hash], index: usize) -> Vec<Hash> {
    let n = leaves.len();
    if n <= 1 {
        return Vec::new();
    }
    let k = split(n);
    if index < k {
        let mut path = inclusion_path(&leaves[..k], index);
        path.push(merkle_root(&leaves[k..]));
        path
    } else {
        let mut path = inclusion_path(&leaves[k..], index - k);
        path.push(merkle_root(&leaves[..k]));
        path
    }
}

/// RFC 9162 §2.1.3.2: does `path` prove leaf `index` of a `size`-leaf tree
/// with root `root`?
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, path: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = *leaf;
    for p in path {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    sn == 0 && &r == root
}

/// A block header. Hashes are hex in JSON.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BlockHeader {
    pub height: u64,
    #[serde(with = "hex_hash")]
    #[schema(value_type = String)]
    pub prev_hash: Hash,
    #[serde(with = "hex_hash")]
    #[schema(value_type = String)]
    pub merkle_root: Hash,
    pub leaf_count: u64,
    /// The Raft log position of the entry (0, 0 for block 0).
    pub log_index: u64,
    pub log_term: u64,
    /// The leader's timestamp of the entry, ms since the Unix epoch.
    pub timestamp_ms: u64,
    /// SHA-256 over every record the entry changed, in key order.
    #[serde(with = "hex_hash")]
    #[schema(value_type = String)]
    pub state_digest: Hash,
}

/// Domain separation for header hashes.
const HEADER_TAG: &[u8] = b"alliance-block-v1";

impl BlockHeader {
    /// SHA-256 over the tag and the fields in order, integers big-endian.
    pub fn hash(&self) -> Hash {
        sha256(&[
            HEADER_TAG,
            &self.height.to_be_bytes(),
            &self.prev_hash,
            &self.merkle_root,
            &self.leaf_count.to_be_bytes(),
            &self.log_index.to_be_bytes(),
            &self.log_term.to_be_bytes(),
            &self.timestamp_ms.to_be_bytes(),
            &self.state_digest,
        ])
    }

    /// Block 0, from the SHA-256 of the genesis file.
    pub fn genesis(genesis_hash: Hash) -> Self {
        let leaves = [leaf_hash(&genesis_hash)];
        Self {
            height: 0,
            prev_hash: [0; 32],
            merkle_root: merkle_root(&leaves),
            leaf_count: 1,
            log_index: 0,
            log_term: 0,
            timestamp_ms: 0,
            state_digest: genesis_hash,
        }
    }
}

/// Accumulates the digest of an entry's changed records.
#[derive(Default)]
pub struct StateDigest(Sha256);

impl StateDigest {
    pub fn add(&mut self, kind: &str, record: &[u8]) {
        self.0.update((kind.len() as u32).to_be_bytes());
        self.0.update(kind.as_bytes());
        self.0.update((record.len() as u64).to_be_bytes());
        self.0.update(record);
    }

    pub fn finish(self) -> Hash {
        self.0.finalize().into()
    }
}

/// An inclusion proof of one leaf, as served and as `alliance verify` reads it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Proof {
    pub header: BlockHeader,
    pub leaf_index: u64,
    /// The leaf's data: the committed record, canonical JSON.
    pub leaf: String,
    /// The leaf's blind (see [`leaf_blind`]): the leaf hash is
    /// SHA-256(0x00 ‖ blind ‖ leaf).
    #[serde(with = "hex_hash")]
    #[schema(value_type = String)]
    pub blind: Hash,
    #[serde(with = "hex_hashes")]
    #[schema(value_type = Vec<String>)]
    pub path: Vec<Hash>,
}

impl Proof {
    /// Checks the proof against a block hash obtained elsewhere.
    pub fn verify(&self, block_hash: &Hash) -> Result<(), &'static str> {
        if &self.header.hash() != block_hash {
            return Err("the block header does not hash to the given block hash");
        }
        let leaf = blinded_leaf_hash(&self.blind, self.leaf.as_bytes());
        if !verify_inclusion(
            &leaf,
            self.leaf_index,
            self.header.leaf_count,
            &self.path,
            &self.header.merkle_root,
        ) {
            return Err("the leaf is not in the block's Merkle tree");
        }
        Ok(())
    }
}

pub fn to_hex(h: &Hash) -> String {
    hex::encode(h)
}

pub fn from_hex(s: &str) -> Option<Hash> {
    hex::decode(s).ok()?.try_into().ok()
}

/// A hash as 64 hex digits for people (JSON), as 32 raw bytes in the
/// binary encoding.
mod hex_hash {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(h: &super::Hash, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&hex::encode(h))
        } else {
            h.serialize(s)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<super::Hash, D::Error> {
        if !d.is_human_readable() {
            return super::Hash::deserialize(d);
        }
        let s = String::deserialize(d)?;
        super::from_hex(&s).ok_or_else(|| serde::de::Error::custom("expected 64 hex digits"))
    }
}

mod hex_hashes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(hs: &[super::Hash], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(hs.iter().map(hex::encode))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<super::Hash>, D::Error> {
        let v = Vec::<String>::deserialize(d)?;
        v.iter()
            .map(|s| {
                super::from_hex(s).ok_or_else(|| serde::de::Error::custom("expected 64 hex digits"))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_leaf_of_every_size_proves_and_nothing_else_does() {
        for n in 1..=33usize {
            let leaves: Vec<Hash> = (0..n)
                .map(|i| leaf_hash(format!("leaf {i}").as_bytes()))
                .collect();
            let root = merkle_root(&leaves);
            for i in 0..n {
                let path = inclusion_path(&leaves, i);
                assert!(
                    verify_inclusion(&leaves[i], i as u64, n as u64, &path, &root),
                    "n={n} i={i}"
                );
                let other = (i + 1) % n;
                if other != i {
                    assert!(!verify_inclusion(
                        &leaves[other],
                        i as u64,
                        n as u64,
                        &path,
                        &root
                    ));
                }
                // (The size is not checked here: the header's hash commits to it.)
                if n > 1 {
                    let wrong = ((i + 1) % n) as u64;
                    assert!(
                        !verify_inclusion(&leaves[i], wrong, n as u64, &path, &root),
                        "n={n} i={i}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_proof_holds_with_its_leafs_blind_only() {
        let blinding = Blinding([9; 16]);
        let leaves: Vec<String> = (0..5).map(|i| format!("leaf {i}")).collect();
        let hashes: Vec<Hash> = (0..)
            .zip(&leaves)
            .map(|(i, l)| blinded_leaf_hash(&leaf_blind(&blinding, i), l.as_bytes()))
            .collect();
        let header = BlockHeader {
            height: 3,
            merkle_root: merkle_root(&hashes),
            leaf_count: 5,
            ..BlockHeader::default()
        };
        let proof = Proof {
            header: header.clone(),
            leaf_index: 2,
            leaf: leaves[2].clone(),
            blind: leaf_blind(&blinding, 2),
            path: inclusion_path(&hashes, 2),
        };
        assert_eq!(proof.verify(&header.hash()), Ok(()));
        for blind in [leaf_blind(&blinding, 1), leaf_blind(&Blinding([8; 16]), 2)] {
            let wrong = Proof {
                blind,
                ..proof.clone()
            };
            assert!(wrong.verify(&header.hash()).is_err());
        }

        // In JSON the blind is hex, and so is an entry's blinding.
        let json = serde_json::to_value(&proof).unwrap();
        assert_eq!(json["blind"], to_hex(&proof.blind));
        assert_eq!(serde_json::from_value::<Proof>(json).unwrap(), proof);
        let text = serde_json::to_string(&blinding).unwrap();
        assert_eq!(text, format!("\"{}\"", "09".repeat(16)));
        assert_eq!(serde_json::from_str::<Blinding>(&text).unwrap(), blinding);
    }

    #[test]
    fn rfc6962_empty_and_single() {
        assert_eq!(
            to_hex(&merkle_root(&[])),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let l = leaf_hash(b"");
        assert_eq!(
            to_hex(&l),
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
        );
    }
}
