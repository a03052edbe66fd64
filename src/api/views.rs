//! What the API answers: typed answers and the JSON views they render to.
//!
//! The service returns an [`Answer`] (or an `ApiError`);
//! the listener that received the request renders it, once, at the edge.
//! A leader renders the answer to a forwarded request too, and the follower
//! relays that [`Rendered`] body as it is ([`Answer::Relayed`]): a batch's
//! thousands of results are written once, straight from the records.
//!
//! Amounts and balances go out as decimal strings so no client loses
//! precision past 2^53.

use std::fmt::Display;

use actix_web::http::header::ContentType;
use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::openapi::schema::Schema;
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

use crate::identity::Expiry;
use crate::ledger::chain::{self, BlockHeader, Hash, Proof};
use crate::ledger::{
    Account, AccountId, Asset, Event, HistoryItem, OrgName, Rejection, Transfer, TransferId,
    TransferState,
};

/// A typed answer to a request that succeeded (or, for an atomic batch,
/// was refused as a whole: see [`Answer::Batch`]).
#[derive(Debug)]
pub enum Answer {
    /// An account as `viewer`'s organization may see it; `as_of` is the
    /// applied index of a read or the log index of a write.
    Account {
        account: Account,
        viewer: OrgName,
        as_of: u64,
    },
    /// An account's balances after its last event at or below `at_height`.
    BalanceAt {
        account: Account,
        at_height: u64,
        last: Option<HistoryItem>,
        as_of: u64,
    },
    /// A transfer; reads say `as_of`, writes do not.
    Transfer {
        transfer: Transfer,
        as_of: Option<u64>,
    },
    History {
        items: Vec<HistoryItem>,
        next: Option<u64>,
        as_of: u64,
    },
    Accounts {
        accounts: Vec<Account>,
        viewer: OrgName,
        next: Option<AccountId>,
        as_of: u64,
    },
    Block {
        header: BlockHeader,
        leaf_hashes: Vec<Hash>,
        as_of: u64,
    },
    Blocks {
        headers: Vec<BlockHeader>,
        next: Option<u64>,
        head_height: u64,
        as_of: u64,
    },
    Proof {
        proof: Proof,
        transfer: TransferId,
    },
    /// A batch: every item's result in request order. A refused atomic
    /// batch answers 422 `batch_rejected`.
    Batch {
        atomic: bool,
        results: Vec<Result<Transfer, Rejection>>,
    },
    /// A batch that asked for its refused items only: a count of applied
    /// items and the refused ones by request index (leaving out the
    /// `linked_transfer_failed` ones that `batch_rejected` implies).
    BatchRefused {
        atomic: bool,
        items: usize,
        applied: usize,
        refused: Vec<(u64, TransferId, Rejection)>,
    },
    Cluster(Box<ClusterView>),
    /// An answer the leader rendered to a forwarded request.
    Relayed(Rendered),
    /// An answer rendered where it was made (governance views).
    View(Rendered),
}

impl Answer {
    /// The JSON body and status of this answer.
    pub fn render(&self) -> Rendered {
        match self {
            Self::Account {
                account,
                viewer,
                as_of,
            } => Rendered::ok(&AccountView::new(account, viewer, *as_of)),
            Self::BalanceAt {
                account,
                at_height,
                last,
                as_of,
            } => Rendered::ok(&BalanceAtView::new(account, *at_height, last, *as_of)),
            Self::Transfer { transfer, as_of } => Rendered::ok(&TransferRead {
                transfer: transfer.into(),
                as_of: *as_of,
            }),
            Self::History { items, next, as_of } => Rendered::ok(&HistoryPage {
                items: items.iter().map(HistoryView::from).collect(),
                next_cursor: next.map(|n| n.to_string()),
                as_of: *as_of,
            }),
            Self::Accounts {
                accounts,
                viewer,
                next,
                as_of,
            } => Rendered::ok(&AccountsPage::new(accounts, viewer, next.as_ref(), *as_of)),
            Self::Block {
                header,
                leaf_hashes,
                as_of,
            } => Rendered::ok(&BlockRead {
                header: header.into(),
                leaf_hashes: leaf_hashes.iter().map(chain::to_hex).collect(),
                as_of: *as_of,
            }),
            Self::Blocks {
                headers,
                next,
                head_height,
                as_of,
            } => Rendered::ok(&BlocksPage::new(headers, *next, *head_height, *as_of)),
            Self::Proof { proof, transfer } => Rendered::ok(&ProofView {
                block_hash: chain::to_hex(&proof.header.hash()),
                proof,
                transfer,
            }),
            Self::Batch { atomic, results } => batch(*atomic, results),
            Self::BatchRefused {
                atomic,
                items,
                applied,
                refused,
            } => {
                let (status, error) = batch_error(*atomic, applied < items);
                batch_refused(status, error, *atomic, *applied, refused)
            }
            Self::Cluster(view) => Rendered::ok(view),
            Self::Relayed(rendered) | Self::View(rendered) => rendered.clone(),
        }
    }
}

/// A finished answer: status and JSON body. It is what a leader sends back
/// to a follower that forwarded a request, so it is serializable; the body
/// stays JSON text, relayed without being parsed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Rendered {
    pub status: u16,
    pub body: Box<RawValue>,
}

impl Rendered {
    pub fn ok(body: &impl Serialize) -> Self {
        Self::with(200, body)
    }

    pub fn with(status: u16, body: &impl Serialize) -> Self {
        let body = serde_json::value::to_raw_value(body).expect("API views serialize");
        Self { status, body }
    }
}

impl From<Rendered> for HttpResponse {
    fn from(r: Rendered) -> Self {
        let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        HttpResponse::build(status)
            .content_type(ContentType::json())
            .body(String::from(Box::<str>::from(r.body)))
    }
}

/// An error as every error body carries it, under `"error"`.
#[derive(Serialize, ToSchema)]
pub struct ErrorView<'a> {
    pub code: &'a str,
    pub message: &'a str,
}

impl ErrorView<'static> {
    fn rejection(r: &Rejection) -> Self {
        Self {
            code: r.code(),
            message: r.message(),
        }
    }
}

/// The body of every error answer: `{"error": {"code", "message"}}`.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody<'a> {
    pub error: ErrorView<'a>,
}

/// A number written as a decimal string (see the module docs).
pub(super) struct Decimal<T>(T);

/// Minor units (amounts), totals of them (balances' parts) and signed
/// balances: the names the API's fields use, so that its OpenAPI
/// description names each as one schema.
pub(super) type Units = Decimal<u64>;
pub(super) type Total = Decimal<u128>;
pub(super) type SignedTotal = Decimal<i128>;

impl PartialSchema for Decimal<u64> {
    fn schema() -> RefOr<Schema> {
        crate::ledger::ids::string_schema(
            "^(0|[1-9][0-9]*)$",
            "a non-negative integer as a decimal string",
        )
    }
}

impl ToSchema for Decimal<u64> {
    fn name() -> std::borrow::Cow<'static, str> {
        "Decimal".into()
    }
}

impl PartialSchema for Decimal<u128> {
    fn schema() -> RefOr<Schema> {
        Decimal::<u64>::schema()
    }
}

impl ToSchema for Decimal<u128> {
    fn name() -> std::borrow::Cow<'static, str> {
        "Decimal".into()
    }
}

impl PartialSchema for Decimal<i128> {
    fn schema() -> RefOr<Schema> {
        crate::ledger::ids::string_schema("^(0|-?[1-9][0-9]*)$", "an integer as a decimal string")
    }
}

impl ToSchema for Decimal<i128> {
    fn name() -> std::borrow::Cow<'static, str> {
        "SignedDecimal".into()
    }
}

impl<T: Display> Serialize for Decimal<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

/// An account as `viewer`'s organization may see it: the readers list is
/// shown to the owner only.
#[derive(Serialize, ToSchema)]
pub struct AccountView<'a> {
    id: &'a AccountId,
    owner: &'a OrgName,
    asset: &'a Asset,
    allow_negative: bool,
    closed: bool,
    balance_max: Option<Total>,
    readers: Vec<&'a OrgName>,
    balance: SignedTotal,
    available: SignedTotal,
    debits_pending: Total,
    credits_pending: Total,
    debits_posted: Total,
    credits_posted: Total,
    created_height: u64,
    as_of: u64,
}

impl<'a> AccountView<'a> {
    pub fn new(a: &'a Account, viewer: &OrgName, as_of: u64) -> Self {
        let readers = if &a.owner == viewer {
            a.readers.iter().collect()
        } else {
            Vec::new()
        };
        Self {
            id: &a.id,
            owner: &a.owner,
            asset: &a.asset,
            allow_negative: a.allow_negative,
            closed: a.closed,
            balance_max: a.balance_max.map(Decimal),
            readers,
            balance: Decimal(a.balance()),
            available: Decimal(a.available()),
            debits_pending: Decimal(a.debits_pending),
            credits_pending: Decimal(a.credits_pending),
            debits_posted: Decimal(a.debits_posted),
            credits_posted: Decimal(a.credits_posted),
            created_height: a.created_height,
            as_of,
        }
    }
}

/// An account's balances as of a block height: after its last event at or
/// below it (none: as created, all zero).
#[derive(Serialize, ToSchema)]
pub(super) struct BalanceAtView<'a> {
    id: &'a AccountId,
    asset: &'a Asset,
    at_height: u64,
    balance: SignedTotal,
    debits_pending: Total,
    credits_pending: Total,
    as_of: u64,
}

impl<'a> BalanceAtView<'a> {
    fn new(a: &'a Account, at_height: u64, last: &Option<HistoryItem>, as_of: u64) -> Self {
        let last = last.as_ref();
        Self {
            id: &a.id,
            asset: &a.asset,
            at_height,
            balance: Decimal(last.map_or(0, |i| i.balance_after)),
            debits_pending: Decimal(last.map_or(0, |i| i.debits_pending_after)),
            credits_pending: Decimal(last.map_or(0, |i| i.credits_pending_after)),
            as_of,
        }
    }
}

/// A transfer as the API shows it. Serialized straight from the record:
/// a batch's answer is thousands of these.
#[derive(Serialize, ToSchema)]
pub struct TransferView<'a> {
    id: &'a TransferId,
    debit_account: &'a AccountId,
    credit_account: &'a AccountId,
    amount: Units,
    asset: &'a Asset,
    memo: &'a Option<String>,
    posted_by: &'a OrgName,
    timestamp_ms: u64,
    height: u64,
    log_index: u64,
    pending: bool,
    timeout_ms: Option<u64>,
    expires_at_ms: Option<u64>,
    state: TransferState,
    posted_amount: Option<Units>,
    resolved_height: Option<u64>,
}

impl<'a> From<&'a Transfer> for TransferView<'a> {
    fn from(t: &'a Transfer) -> Self {
        Self {
            id: &t.id,
            debit_account: &t.debit_account,
            credit_account: &t.credit_account,
            amount: Decimal(t.amount.units()),
            asset: &t.asset,
            memo: &t.memo,
            posted_by: &t.posted_by,
            timestamp_ms: t.timestamp_ms,
            height: t.height,
            log_index: t.log_index,
            pending: t.pending,
            timeout_ms: t.timeout_ms,
            expires_at_ms: t.expires_at_ms,
            state: t.state,
            posted_amount: t.posted_amount.map(|a| Decimal(a.units())),
            resolved_height: t.resolved_height,
        }
    }
}

/// A transfer, with `as_of` when it was read.
#[derive(Serialize, ToSchema)]
pub(super) struct TransferRead<'a> {
    #[serde(flatten)]
    transfer: TransferView<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    as_of: Option<u64>,
}

/// One item of an account's history.
#[derive(Serialize, ToSchema)]
pub(super) struct HistoryView<'a> {
    seq: u64,
    transfer: &'a TransferId,
    event: Event,
    side: &'static str,
    amount: Units,
    balance_after: SignedTotal,
    debits_pending_after: Total,
    credits_pending_after: Total,
    height: u64,
    log_index: u64,
    timestamp_ms: u64,
}

impl<'a> From<&'a HistoryItem> for HistoryView<'a> {
    fn from(h: &'a HistoryItem) -> Self {
        Self {
            seq: h.seq,
            transfer: &h.transfer,
            event: h.event,
            side: if h.debit { "debit" } else { "credit" },
            amount: Decimal(h.amount.units()),
            balance_after: Decimal(h.balance_after),
            debits_pending_after: Decimal(h.debits_pending_after),
            credits_pending_after: Decimal(h.credits_pending_after),
            height: h.height,
            log_index: h.log_index,
            timestamp_ms: h.timestamp_ms,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub(super) struct HistoryPage<'a> {
    items: Vec<HistoryView<'a>>,
    next_cursor: Option<String>,
    as_of: u64,
}

#[derive(Serialize, ToSchema)]
pub(super) struct AccountsPage<'a> {
    accounts: Vec<AccountView<'a>>,
    next_cursor: Option<&'a AccountId>,
    as_of: u64,
}

impl<'a> AccountsPage<'a> {
    fn new(
        accounts: &'a [Account],
        viewer: &OrgName,
        next_cursor: Option<&'a AccountId>,
        as_of: u64,
    ) -> Self {
        let accounts = accounts.iter().map(|a| AccountView::new(a, viewer, as_of));
        Self {
            accounts: accounts.collect(),
            next_cursor,
            as_of,
        }
    }
}

/// A block header with its hash, hashes in hex.
#[derive(Serialize, ToSchema)]
pub struct BlockView<'a> {
    #[serde(flatten)]
    header: &'a BlockHeader,
    hash: String,
}

impl<'a> From<&'a BlockHeader> for BlockView<'a> {
    fn from(header: &'a BlockHeader) -> Self {
        Self {
            header,
            hash: chain::to_hex(&header.hash()),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub(super) struct BlockRead<'a> {
    #[serde(flatten)]
    header: BlockView<'a>,
    leaf_hashes: Vec<String>,
    as_of: u64,
}

#[derive(Serialize, ToSchema)]
pub(super) struct BlocksPage<'a> {
    blocks: Vec<BlockView<'a>>,
    next_cursor: Option<String>,
    head_height: u64,
    as_of: u64,
}

impl<'a> BlocksPage<'a> {
    fn new(headers: &'a [BlockHeader], next: Option<u64>, head_height: u64, as_of: u64) -> Self {
        Self {
            blocks: headers.iter().map(BlockView::from).collect(),
            next_cursor: next.map(|n| n.to_string()),
            head_height,
            as_of,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub(super) struct ProofView<'a> {
    #[serde(flatten)]
    proof: &'a Proof,
    transfer: &'a TransferId,
    block_hash: String,
}

/// The public window's view of the chain head.
#[derive(Serialize, ToSchema)]
pub struct HeadView {
    pub consortium: String,
    pub genesis_hash: String,
    pub height: u64,
    pub hash: String,
    pub timestamp_ms: u64,
}

/// `GET /v1/cluster`: this node's view of the cluster.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClusterView {
    pub consortium: String,
    /// SHA-256 of the genesis file, hex: what a signed request names.
    pub genesis_hash: String,
    pub node_id: u64,
    pub state: String,
    pub leader: Option<u64>,
    pub term: u64,
    pub voters: Vec<u64>,
    /// Nodes that replicate the log without voting yet: added by vote and
    /// catching up.
    pub learners: Vec<u64>,
    /// The registry's nodes (empty while a snapshot is replacing this
    /// node's state).
    pub members: Vec<MemberView>,
    /// Whether a snapshot from the leader is replacing this node's state
    /// now: reads here answer 503 until it is done.
    pub installing_snapshot: bool,
    pub last_log_index: Option<u64>,
    pub commit_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
    pub height: u64,
    pub replicas: ReplicasView,
    /// This node's certificate's expiry.
    pub certificate: Option<Expiry>,
    /// The caller's certificate's expiry.
    pub caller_certificate: Option<Expiry>,
}

/// A node of the registry (genesis's, or added by vote) as `GET
/// /v1/cluster` lists it.
#[derive(Debug, Serialize, ToSchema)]
pub struct MemberView {
    pub id: u64,
    pub org: OrgName,
    pub api_addr: String,
    pub raft_addr: String,
}

/// What this node knows of its peers' chains.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReplicasView {
    pub diverged: Option<String>,
    /// Set while this node's clock is more than `clock_offset_max_ms`
    /// from most of its peers' clocks: by how much, and what to do.
    pub clock_off: Option<String>,
    pub peers: Vec<PeerHeadView>,
}

/// A peer's last reported head (none before it first answers) and whether
/// our block at that height agrees; whether it answers now, and since when
/// it has not.
#[derive(Debug, Serialize, ToSchema)]
pub struct PeerHeadView {
    pub node: u64,
    pub height: Option<u64>,
    pub hash: Option<String>,
    pub agrees: Option<bool>,
    /// The last log index the peer reported applied.
    pub applied_index: Option<u64>,
    /// Whether the peer answered the last head exchange.
    pub reachable: bool,
    /// Milliseconds since the peer last answered (None: never).
    pub last_contact_ms_ago: Option<u64>,
    /// Why the peer refused this node's last request, if it did (say,
    /// another genesis file).
    pub refused: Option<String>,
    /// The expiry of the certificate the peer last presented.
    pub certificate: Option<Expiry>,
    /// How far the peer's clock was ahead of this node's (negative:
    /// behind) at the last head exchange, in ms, within half its round
    /// trip.
    pub clock_offset_ms: Option<i64>,
}

/// One batch item's result: `{"ok": true, "transfer": ...}` or
/// `{"ok": false, "error": {"code", "message"}}`.
#[derive(Serialize, ToSchema)]
pub(super) struct BatchItemView<'a> {
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    transfer: Option<TransferView<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorView<'static>>,
}

impl<'a> From<&'a Result<Transfer, Rejection>> for BatchItemView<'a> {
    fn from(r: &'a Result<Transfer, Rejection>) -> Self {
        match r {
            Ok(t) => Self {
                ok: true,
                transfer: Some(t.into()),
                error: None,
            },
            Err(e) => Self {
                ok: false,
                transfer: None,
                error: Some(ErrorView::rejection(e)),
            },
        }
    }
}

/// A refused batch item: `{"index", "id", "error": {"code", "message"}}`,
/// `index` counting the request's items from 0.
#[derive(Serialize, ToSchema)]
pub(super) struct RefusedView<'a> {
    index: u64,
    id: &'a TransferId,
    error: ErrorView<'static>,
}

/// The error of a refused atomic batch, and the status it answers with.
fn batch_error(atomic: bool, any_refused: bool) -> (u16, Option<ErrorView<'static>>) {
    if atomic && any_refused {
        let error = ErrorView {
            code: "batch_rejected",
            message: "a transfer of this atomic batch was refused; nothing was applied",
        };
        (422, Some(error))
    } else {
        (200, None)
    }
}

/// A batch's answer: every item's result, in request order.
#[derive(Serialize, ToSchema)]
pub(super) struct BatchAll<'a> {
    /// Set when an atomic batch was refused as a whole (422).
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorView<'static>>,
    atomic: bool,
    results: Vec<BatchItemView<'a>>,
}

/// A batch's answer when it asked for its refused items only.
#[derive(Serialize, ToSchema)]
pub(super) struct BatchRefused<'a> {
    /// Set when an atomic batch was refused as a whole (422).
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorView<'static>>,
    atomic: bool,
    applied: usize,
    refused: Vec<RefusedView<'a>>,
}

fn batch(atomic: bool, results: &[Result<Transfer, Rejection>]) -> Rendered {
    let (status, error) = batch_error(atomic, results.iter().any(Result::is_err));
    let results = results.iter().map(BatchItemView::from).collect();
    Rendered::with(
        status,
        &BatchAll {
            error,
            atomic,
            results,
        },
    )
}

fn batch_refused(
    status: u16,
    error: Option<ErrorView<'static>>,
    atomic: bool,
    applied: usize,
    refused: &[(u64, TransferId, Rejection)],
) -> Rendered {
    let refused = refused
        .iter()
        .map(|(index, id, r)| RefusedView {
            index: *index,
            id,
            error: ErrorView::rejection(r),
        })
        .collect();
    Rendered::with(
        status,
        &BatchRefused {
            error,
            atomic,
            applied,
            refused,
        },
    )
}

/// `GET /readyz` on the operations listener: whether this node serves now,
/// and if not, why.
#[derive(Debug, Serialize)]
pub struct ReadyView {
    pub ready: bool,
    /// Why the node is not ready (empty when it is).
    pub reasons: Vec<String>,
    pub leader: Option<u64>,
    pub commit_index: Option<u64>,
    pub applied_index: Option<u64>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::ledger::Amount;

    /// The views written straight from records keep the API's field names
    /// and types: amounts as decimal strings, absent options as null.
    #[test]
    fn transfer_and_batch_views_keep_the_api_shape() {
        let t = Transfer {
            id: TransferId::parse("t-1").unwrap(),
            debit_account: AccountId::parse("org1.ops").unwrap(),
            credit_account: AccountId::parse("org2.ops").unwrap(),
            amount: Amount::new(u64::MAX).unwrap(),
            asset: Asset::parse("USD").unwrap(),
            memo: Some("rent \"may\"".into()),
            posted_by: OrgName::parse("org1").unwrap(),
            timestamp_ms: 1_700_000_000_000,
            height: 7,
            log_index: 9,
            leaf_index: 3,
            pending: true,
            timeout_ms: Some(5_000),
            expires_at_ms: None,
            state: TransferState::Posted,
            posted_amount: Some(Amount::new(12).unwrap()),
            resolved_height: None,
        };
        let transfer = json!({
            "id": "t-1",
            "debit_account": "org1.ops",
            "credit_account": "org2.ops",
            "amount": u64::MAX.to_string(),
            "asset": "USD",
            "memo": "rent \"may\"",
            "posted_by": "org1",
            "timestamp_ms": 1_700_000_000_000u64,
            "height": 7,
            "log_index": 9,
            "pending": true,
            "timeout_ms": 5_000,
            "expires_at_ms": null,
            "state": "posted",
            "posted_amount": "12",
            "resolved_height": null,
        });
        assert_eq!(
            serde_json::to_value(TransferView::from(&t)).unwrap(),
            transfer
        );
        let ok = serde_json::to_value(BatchItemView::from(&Ok(t))).unwrap();
        assert_eq!(ok, json!({"ok": true, "transfer": transfer}));
        let refused = Err(Rejection::InsufficientFunds);
        let refused = serde_json::to_value(BatchItemView::from(&refused)).unwrap();
        let error = json!({"code": "insufficient_funds", "message": Rejection::InsufficientFunds.message()});
        assert_eq!(refused, json!({"ok": false, "error": error}));
    }
}
