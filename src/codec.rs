//! The binary encoding of what a node stores and what it sends its peers:
//! postcard (serde, varint integers, no field names). JSON stays at the
//! edges (the HTTP API, block leaves, proofs), where people and other
//! programs read it.
//!
//! Postcard is not self-describing: every stored or sent type must
//! serialize the same fields in the same order on every node. A data dir
//! written in another format is refused at open (see `store::FORMAT`).

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use postcard::Error;

/// The content type of binary peer messages.
pub const CONTENT_TYPE: &str = "application/x-alliance-postcard";

pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).expect("our types always serialize")
}

/// Appends `value`'s encoding, as [`encode`] writes it, to `out`.
pub fn encode_into<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) {
    postcard::serialize_with_flavor(value, Tail(out)).expect("our types always serialize")
}

/// The encoding of a sequence whose elements are already encoded, as
/// [`encode`] would write it: postcard writes a sequence as its length (a
/// varint) followed by the elements. Records encoded once (for a block's
/// state digest) are stored grouped without encoding them again.
pub fn encode_seq<B: AsRef<[u8]>>(elements: &[B]) -> Vec<u8> {
    let len = elements.len();
    let body: usize = elements.iter().map(|e| e.as_ref().len()).sum();
    let mut out = encode(&len);
    out.reserve(body);
    for e in elements {
        out.extend_from_slice(e.as_ref());
    }
    out
}

/// Records encoded back to back in one buffer, each exactly as [`encode`]
/// writes it. An entry of 8000 transfers changes about 24,000 records:
/// one buffer for all of them, instead of one allocation (and its
/// regrowths) for each, which a follower's profile showed as its top cost.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Encoded {
    bytes: Vec<u8>,
    /// Where each record ends in `bytes`.
    ends: Vec<usize>,
}

impl Encoded {
    /// Room for `records` records of `bytes` bytes in all.
    pub fn with_capacity(records: usize, bytes: usize) -> Self {
        Self {
            bytes: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(records),
        }
    }

    /// Encodes `value` as the next record and returns its bytes.
    pub fn push<T: Serialize + ?Sized>(&mut self, value: &T) -> &[u8] {
        let start = self.bytes.len();
        encode_into(value, &mut self.bytes);
        self.ends.push(self.bytes.len());
        &self.bytes[start..]
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The records, in the order pushed.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        (0..self.ends.len()).map(|i| {
            let start = if i == 0 { 0 } else { self.ends[i - 1] };
            &self.bytes[start..self.ends[i]]
        })
    }
}

/// A postcard output that appends to a vector it borrows.
struct Tail<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for Tail<'_> {
    type Output = ();

    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.0.push(byte);
        Ok(())
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// Decodes exactly one value: bytes left over are an error, as in JSON.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    match postcard::take_from_bytes(bytes)? {
        (value, []) => Ok(value),
        _ => Err(Error::DeserializeBadEncoding),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use openraft::{BasicNode, CommittedLeaderId, EntryPayload, Membership};

    use super::*;
    use crate::ledger::*;
    use crate::raft::{LogId, TypeConfig};

    fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(v: &T) {
        let back: T = decode(&encode(v)).expect("decodes what it encoded");
        assert_eq!(&back, v);
    }

    /// Every kind of command, applied to a ledger: each entry, outcome and
    /// record it produced survives the encoding unchanged.
    #[test]
    fn every_logged_and_stored_type_round_trips() {
        let org = |s: &str| OrgName::parse(s).unwrap();
        let acct = |s: &str| AccountId::parse(s).unwrap();
        let tid = |s: &str| TransferId::parse(s).unwrap();
        let admin = Actor {
            org: org("org1"),
            role: Role::Admin,
        };
        let transfer = |id: &str, pending: bool| NewTransfer {
            id: tid(id),
            debit_account: acct("org1.issuer"),
            credit_account: acct("org1.ops"),
            amount: Amount::new(u64::MAX).unwrap(),
            asset: Some(Asset::parse("EUR").unwrap()),
            memo: Some("héllo \"memo\"".into()),
            pending,
            timeout_ms: pending.then_some(60_000),
        };
        let new_account = |id: &str, allow_negative| NewAccount {
            id: acct(id),
            asset: Asset::parse("EUR").unwrap(),
            allow_negative,
            readers: BTreeSet::from([org("org2")]),
            balance_max: (!allow_negative).then_some(u128::MAX),
        };
        let commands = vec![
            Command::CreateAccount(new_account("org1.issuer", true)),
            Command::CreateAccount(new_account("org1.ops", false)),
            Command::Transfers {
                transfers: vec![transfer("org1.t1", false)],
                atomic: false,
            },
            Command::Transfers {
                transfers: vec![transfer("org1.t2", true)],
                atomic: true,
            },
            Command::PostPending {
                id: tid("org1.t2"),
                amount: Some(Amount::new(1).unwrap()),
            },
            Command::VoidPending { id: tid("org1.t2") },
            Command::Group(vec![Bundle {
                evidence: Evidence::Leader,
                items: vec![Grouped {
                    actor: admin.clone(),
                    transfer: transfer("org1.t3", false),
                }],
            }]),
            Command::SetReaders {
                id: acct("org1.ops"),
                readers: BTreeSet::new(),
            },
            Command::Tick,
            Command::CloseAccount {
                id: acct("org1.ops"),
            },
            // Refused (closed account): a remembered refusal.
            Command::Transfers {
                transfers: vec![transfer("org1.t4", false)],
                atomic: false,
            },
        ];
        let mut ledger = Ledger::new(BTreeSet::from([org("org1"), org("org2")]));
        let mut refusals = 0;
        for (i, command) in commands.into_iter().enumerate() {
            let entry = Entry {
                actor: admin.clone(),
                timestamp_ms: 1_700_000_000_000,
                command,
                evidence: Evidence::Leader,
                blinding: Blinding([7; 16]),
            };
            round_trip(&entry);
            let (outcome, changes) = ledger.apply_logged(&entry, i as u64 + 1, 7, &[Ok(())]);
            round_trip(&outcome);
            round_trip(changes.block.as_ref().expect("every entry is a block"));
            changes.history.iter().for_each(round_trip);
            changes
                .accounts
                .iter()
                .for_each(|id| round_trip(ledger.account(id).unwrap()));
            changes.transfers.iter().for_each(round_trip);
            for id in &changes.rejected {
                round_trip(ledger.rejected(id).unwrap());
                refusals += 1;
            }
            let each: Vec<Vec<u8>> = (changes.accounts.iter())
                .map(|id| encode(ledger.account(id).unwrap()))
                .chain(changes.transfers.iter().map(encode))
                .chain(
                    changes
                        .rejected
                        .iter()
                        .map(|id| encode(ledger.rejected(id).unwrap())),
                )
                .chain(changes.history.iter().map(encode))
                .collect();
            assert!(
                changes.encoded.iter().eq(each.iter().map(Vec::as_slice)),
                "the entry's records, encoded together, are each as encode writes it"
            );

            let payload = EntryPayload::<TypeConfig>::Normal(entry.into());
            let log_id = LogId::new(CommittedLeaderId::new(7, 2), i as u64 + 1);
            round_trip(&openraft::Entry::<TypeConfig> { log_id, payload });
        }
        assert_eq!(refusals, 1, "the scenario covers a remembered refusal");

        let nodes = BTreeMap::from([(1, BasicNode::new("a:1")), (2, BasicNode::new("b:2"))]);
        let membership = Membership::new(vec![BTreeSet::from([1, 2])], nodes);
        let log_id = LogId::new(CommittedLeaderId::new(3, 1), 9);
        round_trip(&openraft::Entry::<TypeConfig> {
            log_id,
            payload: EntryPayload::Membership(membership.clone()),
        });
        round_trip(&openraft::StoredMembership::new(Some(log_id), membership));
        round_trip(&openraft::Entry::<TypeConfig> {
            log_id,
            payload: EntryPayload::Blank,
        });
        round_trip(&openraft::Vote::new_committed(3, 1));
        round_trip(&Some(log_id));
    }

    /// Types without `PartialEq`: compared by their debug form.
    fn round_trip_debug<T: Serialize + DeserializeOwned + std::fmt::Debug>(v: &T) {
        let back: T = decode(&encode(v)).expect("decodes what it encoded");
        assert_eq!(format!("{back:?}"), format!("{v:?}"));
    }

    /// Every Raft RPC, both ways, as the peer routes send and answer them.
    #[test]
    fn every_peer_rpc_round_trips() {
        use openraft::error::{Fatal, RaftError};
        use openraft::raft::*;
        let vote = openraft::Vote::new_committed(4, 2);
        let log_id = LogId::new(CommittedLeaderId::new(4, 2), 11);
        let entry = openraft::Entry::<TypeConfig> {
            log_id,
            payload: EntryPayload::Normal(std::sync::Arc::new(crate::ledger::Entry {
                actor: crate::ledger::Actor {
                    org: crate::ledger::OrgName::parse("org1").unwrap(),
                    role: crate::ledger::Role::App,
                },
                timestamp_ms: 5,
                command: crate::ledger::Command::Tick,
                evidence: Evidence::Leader,
                blinding: Blinding([7; 16]),
            })),
        };
        round_trip_debug(&AppendEntriesRequest::<TypeConfig> {
            vote,
            prev_log_id: Some(log_id),
            entries: vec![entry.clone(), entry],
            leader_commit: Some(log_id),
        });
        type Answer<T> = Result<T, RaftError<u64>>;
        for r in [
            AppendEntriesResponse::Success,
            AppendEntriesResponse::PartialSuccess(Some(log_id)),
            AppendEntriesResponse::Conflict,
            AppendEntriesResponse::HigherVote(vote),
        ] {
            round_trip_debug(&Answer::Ok(r));
        }
        round_trip_debug(&Answer::<AppendEntriesResponse<u64>>::Err(
            RaftError::Fatal(Fatal::Stopped),
        ));
        round_trip_debug(&VoteRequest::new(vote, Some(log_id)));
        round_trip_debug(&Answer::Ok(VoteResponse::new(vote, Some(log_id), true)));
        round_trip_debug(&InstallSnapshotRequest::<TypeConfig> {
            vote,
            meta: openraft::SnapshotMeta {
                last_log_id: Some(log_id),
                last_membership: Default::default(),
                snapshot_id: "4-11-1".into(),
            },
            offset: 3,
            data: vec![0, 1, 255, 7],
            done: true,
        });
        round_trip_debug(&Result::<
            _,
            RaftError<u64, openraft::error::InstallSnapshotError>,
        >::Ok(InstallSnapshotResponse { vote }));
    }

    #[test]
    fn a_sequence_of_encoded_elements_is_the_encoded_sequence() {
        for n in [0usize, 1, 2, 127, 128, 300, 20_000] {
            let items: Vec<(u64, String)> = (0..n)
                .map(|i| (i as u64 * 977, "x".repeat(i % 7)))
                .collect();
            let parts: Vec<Vec<u8>> = items.iter().map(encode).collect();
            assert_eq!(encode_seq(&parts), encode(&items), "{n} elements");
            let back: Vec<(u64, String)> = decode(&encode_seq(&parts)).unwrap();
            assert_eq!(back, items);
        }
    }

    #[test]
    fn records_encoded_together_keep_their_bounds() {
        let mut all = Encoded::with_capacity(1, 1);
        assert!(all.is_empty());
        assert_eq!(all.push(&"first"), &encode(&"first")[..]);
        assert_eq!(all.push(&()), &[] as &[u8], "a record may be empty");
        assert_eq!(all.push(&u128::MAX), &encode(&u128::MAX)[..]);
        let long = "x".repeat(1000);
        assert_eq!(
            all.push(&long),
            &encode(&long)[..],
            "past the reserved room"
        );
        let got: Vec<&[u8]> = all.iter().collect();
        let want = [
            encode(&"first"),
            Vec::new(),
            encode(&u128::MAX),
            encode(&long),
        ];
        assert_eq!(got, want.iter().map(Vec::as_slice).collect::<Vec<_>>());
        assert_eq!(all.len(), 4);
    }

    #[test]
    fn bytes_after_the_value_are_refused() {
        let mut bytes = encode(&Some(7u64));
        assert_eq!(decode::<Option<u64>>(&bytes).unwrap(), Some(7));
        bytes.push(0);
        assert!(decode::<Option<u64>>(&bytes).is_err());
    }

    /// Postcard encodes an enum variant as its index, so the order of
    /// variants is the stored and wire format. Reordering or inserting
    /// before the end breaks stored data: append new variants, or change
    /// `store::FORMAT`. These pin the order of the enums in stored records.
    #[test]
    fn stored_enum_variants_keep_their_order() {
        let codes: Vec<&str> = (0u8..)
            .map_while(|i| decode::<Rejection>(&[i]).ok())
            .map(Rejection::code)
            .collect();
        assert_eq!(
            codes,
            [
                "role_may_not_write",
                "allow_negative_requires_admin",
                "grant_requires_admin",
                "close_requires_admin",
                "unknown_reader_org",
                "account_exists",
                "account_not_found",
                "account_not_owned",
                "accounts_must_be_different",
                "debit_account_not_found",
                "credit_account_not_found",
                "debit_account_not_owned",
                "exists_with_different_fields",
                "asset_mismatch",
                "debit_account_closed",
                "credit_account_closed",
                "insufficient_funds",
                "exceeds_balance_max",
                "overflow",
                "linked_transfer_failed",
                "pending_transfer_not_found",
                "pending_transfer_not_pending",
                "pending_transfer_already_posted",
                "pending_transfer_already_voided",
                "pending_transfer_expired",
                "exceeds_pending_amount",
                "origin_missing",
                "origin_invalid",
                "origin_foreign",
                "origin_stale",
                "id_outside_namespace",
                "origin_replayed",
                "certificate_revoked",
                "debit_account_frozen",
                "credit_account_frozen",
                "signature_required",
                "admin_required",
                "proposal_not_found",
                "digest_mismatch",
                "already_voted",
                "proposal_closed",
                "too_many_open_proposals",
                "invalid_action",
                "unknown_org",
                "vote_required",
                "account_already_frozen",
                "account_not_frozen",
                "org_not_active",
                "org_exists",
                "org_runs_nodes",
                "org_removed",
                "unknown_ca",
                "node_exists",
                "node_not_found",
                "too_few_nodes",
                "account_frozen",
                "ballot_too_large",
                "too_many_revocations",
            ]
        );
        /// The JSON names of the variants with indexes 0, 1, 2, ...
        fn names<T: Serialize + DeserializeOwned>() -> Vec<String> {
            (0u8..)
                .map_while(|i| decode::<T>(&[i]).ok())
                .map(|v| serde_json::to_string(&v).unwrap().replace('"', ""))
                .collect()
        }
        assert_eq!(
            names::<TransferState>(),
            ["posted", "pending", "voided", "expired"]
        );
        assert_eq!(
            names::<Event>(),
            [
                "posted",
                "pending",
                "pending_posted",
                "pending_voided",
                "pending_expired"
            ]
        );
        assert_eq!(names::<Role>(), ["node", "app", "partner", "admin"]);
        // Commands in the log: the first byte is the variant.
        let tick = encode(&Command::Tick);
        let group = encode(&Command::Group(Vec::new()));
        assert_eq!((tick[0], group[0]), (6, 7), "Command's variants moved");
    }

    /// Hashes are raw bytes in the binary encoding, hex only in JSON.
    #[test]
    fn a_block_header_is_compact_in_binary_and_hex_in_json() {
        let header = BlockHeader::genesis([7; 32]);
        assert!(
            encode(&header).len() < 3 * 32 + 16,
            "{} bytes",
            encode(&header).len()
        );
        let json = serde_json::to_string(&header).unwrap();
        assert!(json.contains(&"07".repeat(32)), "{json}");
        round_trip(&header);
    }
}
