//! Incarnations: a node whose storage was lost never rejoins under its old id.
//!
//! A Raft node that forgets its log and vote is dangerous: with an empty log
//! it will vote for a candidate that lacks entries it had acknowledged, and
//! it may vote twice in one term. Either can elect a leader without a
//! committed entry, and an acknowledged transfer is lost.
//!
//! So each data directory gets a random *incarnation* when it is created.
//! Every peer request and response carries the sender's incarnation; each
//! node durably records the first incarnation it sees for each peer, and from
//! then on refuses any other one from that node id: its requests get 403 and
//! its responses (votes, acknowledgements) are treated as unreachable. A node
//! started on empty storage asks its peers first and stops with a clear error
//! if any of them remembers it under another incarnation. Such a member can
//! come back only under a new id (a data directory restored from a backup
//! is a stale copy, which could lose a committed entry).

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::Digest;

use super::store::Store;

/// Header carrying the sender's incarnation on peer requests and responses.
pub const INCARNATION_HEADER: &str = "alliance-incarnation";

const OWN_KEY: &[u8] = b"incarnation";
const PEER_PREFIX: &[u8] = b"peer_incarnation/";

/// This node's incarnation and the ones it has recorded for its peers.
#[derive(Clone)]
pub struct Incarnations {
    own: String,
    /// Whether `own` was created by this start (the storage was empty).
    fresh: bool,
    store: Store,
    known: Arc<Mutex<BTreeMap<u64, String>>>,
}

impl Incarnations {
    /// Loads this node's incarnation, creating one for a new data directory.
    pub fn open(store: &Store, node_id: u64) -> io::Result<Self> {
        let (own, fresh) = match store.raft.get(OWN_KEY).map_err(io::Error::other)? {
            Some(v) => (String::from_utf8_lossy(&v).into_owned(), false),
            None => {
                let own = new_incarnation(node_id, store);
                store
                    .raft
                    .insert(OWN_KEY, own.as_bytes())
                    .map_err(io::Error::other)?;
                store.durable.sync()?;
                (own, true)
            }
        };
        let mut known = BTreeMap::new();
        for kv in store.raft.scan_prefix(PEER_PREFIX) {
            let (k, v) = kv.map_err(io::Error::other)?;
            let id = std::str::from_utf8(&k[PEER_PREFIX.len()..])
                .ok()
                .and_then(|s| s.parse().ok());
            if let Some(id) = id {
                known.insert(id, String::from_utf8_lossy(&v).into_owned());
            }
        }
        Ok(Self {
            own,
            fresh,
            store: store.clone(),
            known: Arc::new(Mutex::new(known)),
        })
    }

    pub fn own(&self) -> &str {
        &self.own
    }

    /// Whether this start created the node's storage.
    pub fn fresh(&self) -> bool {
        self.fresh
    }

    /// Accepts `incarnation` for `peer` if it is the one on record, or if
    /// none is on record yet (it is then recorded, durably).
    pub fn check(&self, peer: u64, incarnation: Option<&str>) -> Result<(), String> {
        let Some(inc) = incarnation.filter(|i| !i.is_empty() && i.len() <= 128) else {
            return Err(format!("node {peer} sent no incarnation"));
        };
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        match known.get(&peer) {
            Some(k) if k == inc => Ok(()),
            Some(_) => Err(format!(
                "node {peer} lost its storage (new incarnation): it cannot rejoin under this id"
            )),
            None => {
                let key = [PEER_PREFIX, peer.to_string().as_bytes()].concat();
                let recorded = self
                    .store
                    .raft
                    .insert(key, inc.as_bytes())
                    .map_err(|e| e.to_string())
                    .and_then(|_| self.store.durable.sync().map_err(|e| e.to_string()));
                recorded.map_err(|e| format!("recording node {peer}'s incarnation: {e}"))?;
                known.insert(peer, inc.to_owned());
                Ok(())
            }
        }
    }
}

/// A value no other data directory will have: a hash of the time, the
/// process, the node id and the directory.
fn new_incarnation(node_id: u64, store: &Store) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut h = sha2::Sha256::new();
    h.update(nanos.to_be_bytes());
    h.update(std::process::id().to_be_bytes());
    h.update(node_id.to_be_bytes());
    h.update(format!("{:?}", store.db.generate_id()).as_bytes());
    hex::encode(&h.finalize()[..16])
}
