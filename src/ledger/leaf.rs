//! Block leaves: one result of an entry, as canonical JSON.
//!
//! The canonical form is serde_json's compact rendering of [`Leaf`]: what a
//! proof carries and what `alliance verify` hashes. A transfer's leaf is
//! written here by hand instead, because a block of 8000 transfers renders
//! 8000 of them on every replica, and serde_json's generic path was about a
//! tenth of a replica's apply. Debug builds check every hand-written leaf
//! against serde_json's, and a property test checks it on random transfers,
//! so the two cannot drift apart unnoticed.

use serde::Serialize;

use super::gov::{Ballot, ProposalState, Revocation};
use super::{Account, OrgName, Proposal, Transfer, TransferState};

/// A block leaf: one result of the entry.
#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Leaf<'a> {
    Transfer(&'a Transfer),
    Expired(&'a Transfer),
    Account(&'a Account),
    Refused {
        code: &'static str,
    },
    /// A proposal as it was opened.
    Proposal(&'a Proposal),
    Ballot(BallotLeaf<'a>),
    /// A proposal's end: executed, failed (with a code), rejected or
    /// expired.
    Decided {
        proposal: u64,
        state: ProposalState,
        code: Option<&'static str>,
    },
    /// A certificate its own organization revoked.
    Revoked(&'a Revocation),
    /// An organization added by vote acknowledged joining.
    Joined {
        org: &'a OrgName,
    },
}

/// A ballot with everything needed to check its signature without the
/// ledger (see [`Ballot`]).
#[derive(Serialize)]
pub(super) struct BallotLeaf<'a> {
    pub(super) proposal: u64,
    pub(super) org: &'a OrgName,
    pub(super) digest: &'a str,
    #[serde(flatten)]
    pub(super) ballot: &'a Ballot,
}

/// `leaf` as canonical JSON.
pub(super) fn leaf_json(leaf: &Leaf<'_>) -> Vec<u8> {
    let json = match leaf {
        Leaf::Transfer(t) => transfer_json("transfer", t),
        Leaf::Expired(t) => transfer_json("expired", t),
        Leaf::Account(_)
        | Leaf::Refused { .. }
        | Leaf::Proposal(_)
        | Leaf::Ballot(_)
        | Leaf::Decided { .. }
        | Leaf::Revoked(_)
        | Leaf::Joined { .. } => serde_json_leaf(leaf),
    };
    debug_assert_eq!(
        String::from_utf8_lossy(&json),
        String::from_utf8_lossy(&serde_json_leaf(leaf)),
        "a hand-written leaf differs from serde_json's"
    );
    json
}

fn serde_json_leaf(leaf: &Leaf<'_>) -> Vec<u8> {
    serde_json::to_vec(leaf).expect("leaves serialize")
}

/// The leaf a block committed for this version of a transfer: `{"transfer":
/// ...}` when it was created, posted or voided in that block, `{"expired":
/// ...}` when it expired there.
pub fn transfer_leaf(t: &Transfer) -> String {
    let leaf = if t.state == TransferState::Expired {
        Leaf::Expired(t)
    } else {
        Leaf::Transfer(t)
    };
    String::from_utf8(leaf_json(&leaf)).expect("JSON is UTF-8")
}

/// Longest rendering of a transfer leaf without its memo, in bytes: field
/// names, three ids of up to 64 bytes, a code of up to 12 and a name of up
/// to 32, eight numbers of up to 20 digits. A starting capacity, not a limit.
const TRANSFER_LEAF_BYTES: usize = 640;

/// `{"<kind>":{...}}` for `t`, field by field in declaration order, as
/// serde_json renders it. Ids, codes and names are validated to characters
/// JSON needs no escape for (see [`super::ids`]); the memo is free text and
/// goes through serde_json's string escaping.
fn transfer_json(kind: &str, t: &Transfer) -> Vec<u8> {
    let memo = t.memo.as_deref().map_or(0, str::len);
    let mut w = Writer(Vec::with_capacity(TRANSFER_LEAF_BYTES + memo));
    w.raw("{\"");
    w.raw(kind);
    w.raw("\":{");
    w.text("id", t.id.as_str());
    w.text("debit_account", t.debit_account.as_str());
    w.text("credit_account", t.credit_account.as_str());
    w.number("amount", t.amount.units());
    w.text("asset", t.asset.as_str());
    w.key("memo");
    match &t.memo {
        Some(memo) => serde_json::to_writer(&mut w.0, memo).expect("a string serializes"),
        None => w.raw("null"),
    }
    w.raw(",");
    w.text("posted_by", t.posted_by.as_str());
    w.number("timestamp_ms", t.timestamp_ms);
    w.number("height", t.height);
    w.number("log_index", t.log_index);
    w.number("leaf_index", t.leaf_index);
    w.key("pending");
    w.raw(if t.pending { "true," } else { "false," });
    w.optional("timeout_ms", t.timeout_ms);
    w.optional("expires_at_ms", t.expires_at_ms);
    w.text("state", state_name(t.state));
    w.optional("posted_amount", t.posted_amount.map(|a| a.units()));
    w.key("resolved_height");
    match t.resolved_height {
        Some(h) => w.digits(h),
        None => w.raw("null"),
    }
    w.raw("}}");
    w.0
}

/// `TransferState`'s serde name (`rename_all = "snake_case"`).
fn state_name(state: TransferState) -> &'static str {
    match state {
        TransferState::Posted => "posted",
        TransferState::Pending => "pending",
        TransferState::Voided => "voided",
        TransferState::Expired => "expired",
    }
}

/// Appends JSON pieces; every field but the last ends with a comma.
struct Writer(Vec<u8>);

impl Writer {
    fn raw(&mut self, s: &str) {
        self.0.extend_from_slice(s.as_bytes());
    }

    fn key(&mut self, name: &str) {
        self.raw("\"");
        self.raw(name);
        self.raw("\":");
    }

    /// A string field whose value needs no escaping.
    fn text(&mut self, name: &str, value: &str) {
        debug_assert!(
            value
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\'),
            "{value:?} would need escaping"
        );
        self.key(name);
        self.raw("\"");
        self.raw(value);
        self.raw("\",");
    }

    fn number(&mut self, name: &str, n: u64) {
        self.key(name);
        self.digits(n);
        self.raw(",");
    }

    fn optional(&mut self, name: &str, n: Option<u64>) {
        match n {
            Some(n) => self.number(name, n),
            None => {
                self.key(name);
                self.raw("null,");
            }
        }
    }

    /// `n` in decimal.
    fn digits(&mut self, mut n: u64) {
        let mut buf = [0u8; 20];
        let mut at = buf.len();
        loop {
            at -= 1;
            buf[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.0.extend_from_slice(&buf[at..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{AccountId, Amount, Asset, OrgName, TransferId};

    fn transfer() -> Transfer {
        Transfer {
            id: TransferId::parse("Tx-1:2.3_4").expect("valid"),
            debit_account: AccountId::parse("a.b").expect("valid"),
            credit_account: AccountId::parse("c:d-e_f").expect("valid"),
            amount: Amount::new(u64::MAX).expect("valid"),
            asset: Asset::parse("USD").expect("valid"),
            memo: None,
            posted_by: OrgName::parse("org-1").expect("valid"),
            timestamp_ms: 0,
            height: 1,
            log_index: 10,
            leaf_index: 9,
            pending: false,
            timeout_ms: None,
            expires_at_ms: None,
            state: TransferState::Posted,
            posted_amount: None,
            resolved_height: None,
        }
    }

    fn both(leaf: &Leaf<'_>) -> (String, String) {
        let (ours, theirs) = match leaf {
            Leaf::Transfer(t) => (transfer_json("transfer", t), serde_json_leaf(leaf)),
            Leaf::Expired(t) => (transfer_json("expired", t), serde_json_leaf(leaf)),
            _ => unreachable!("only transfer leaves are hand-written"),
        };
        let text = |v| String::from_utf8(v).expect("JSON is UTF-8");
        (text(ours), text(theirs))
    }

    #[test]
    fn a_transfer_leaf_is_serde_jsons() {
        let plain = transfer();
        let (ours, theirs) = both(&Leaf::Transfer(&plain));
        assert_eq!(ours, theirs);
        assert!(ours.starts_with(r#"{"transfer":{"id":"Tx-1:2.3_4","#));

        let full = Transfer {
            memo: Some("quote \" backslash \\ newline \n nul \0 é 💶".into()),
            pending: true,
            timeout_ms: Some(0),
            expires_at_ms: Some(u64::MAX),
            state: TransferState::Expired,
            posted_amount: Some(Amount::new(1).expect("valid")),
            resolved_height: Some(12_345_678_901),
            ..plain
        };
        let (ours, theirs) = both(&Leaf::Expired(&full));
        assert_eq!(ours, theirs);
        assert_eq!(
            transfer_leaf(&full),
            theirs,
            "expired transfers get the expired leaf"
        );
        for state in [
            TransferState::Posted,
            TransferState::Pending,
            TransferState::Voided,
        ] {
            let t = Transfer {
                state,
                ..full.clone()
            };
            let (ours, theirs) = both(&Leaf::Transfer(&t));
            assert_eq!(ours, theirs);
        }
    }

    fn state() -> impl proptest::strategy::Strategy<Value = TransferState> {
        proptest::sample::select(vec![
            TransferState::Posted,
            TransferState::Pending,
            TransferState::Voided,
            TransferState::Expired,
        ])
    }

    proptest::proptest! {
        #[test]
        fn every_transfer_leaf_is_serde_jsons(
            id in "[A-Za-z0-9][A-Za-z0-9._:-]{0,63}",
            debit in "[a-z0-9][a-z0-9._:-]{0,63}",
            credit in "[a-z0-9][a-z0-9._:-]{0,63}",
            asset in "[A-Z0-9]{1,12}",
            org in "[a-z0-9][a-z0-9-]{0,31}",
            memo in proptest::option::of(".*"),
            numbers in proptest::array::uniform5(proptest::num::u64::ANY),
            optional in proptest::array::uniform4(proptest::option::of(proptest::num::u64::ANY)),
            pending: bool,
            state in state(),
        ) {
            let t = Transfer {
                id: TransferId::parse(&id).expect("matches the rule"),
                debit_account: AccountId::parse(&debit).expect("matches the rule"),
                credit_account: AccountId::parse(&credit).expect("matches the rule"),
                amount: Amount::new(numbers[0].max(1)).expect("positive"),
                asset: Asset::parse(&asset).expect("matches the rule"),
                memo,
                posted_by: OrgName::parse(&org).expect("matches the rule"),
                timestamp_ms: numbers[1],
                height: numbers[2],
                log_index: numbers[3],
                leaf_index: numbers[4],
                pending,
                timeout_ms: optional[0],
                expires_at_ms: optional[1],
                state,
                posted_amount: optional[2].map(|n| Amount::new(n.max(1)).expect("positive")),
                resolved_height: optional[3],
            };
            let (ours, theirs) = both(&Leaf::Transfer(&t));
            proptest::prop_assert_eq!(ours, theirs);
            let (ours, theirs) = both(&Leaf::Expired(&t));
            proptest::prop_assert_eq!(ours, theirs);
        }
    }
}
