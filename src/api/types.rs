//! Request bodies, their validation into ledger commands, and response views.
//!
//! Bodies are parsed strictly (unknown fields refused) and every field is
//! checked into a ledger type here, so the ledger only sees valid values.
//! Amounts and balances go out as decimal strings so no client loses
//! precision past 2^53.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::error::{ApiError, ErrorView};
use crate::config::Limits;
use crate::ledger::{
    Account, AccountId, Amount, Asset, Command, HistoryItem, NewAccount, NewTransfer, OrgName,
    Rejection, Transfer, TransferId, TransferState, TOTAL_MAX,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateAccountBody {
    id: String,
    asset: String,
    #[serde(default)]
    allow_negative: bool,
    #[serde(default)]
    readers: Vec<String>,
    #[serde(default)]
    balance_max: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferBody {
    id: String,
    debit_account: String,
    credit_account: String,
    amount: Value,
    asset: Option<String>,
    memo: Option<String>,
    #[serde(default)]
    pending: bool,
    timeout_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchBody {
    transfers: Vec<TransferBody>,
    #[serde(default)]
    atomic: bool,
    #[serde(default)]
    answer: BatchAnswer,
}

/// What a batch's answer lists (the body's `answer`).
#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
enum BatchAnswer {
    /// Every item's result, in request order.
    #[default]
    All,
    /// Only the refused items, each with its index in the request.
    Refused,
}

/// The shape of a write's answer. Not part of the Raft entry: it travels
/// with a forwarded request, and the node that applies renders it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Answer {
    /// One record or one error: a single transfer, an account, a post.
    One,
    /// A batch: every item's result, in request order.
    All,
    /// A batch: a count of applied items and the refused ones, by index.
    Refused,
}

impl From<BatchAnswer> for Answer {
    fn from(a: BatchAnswer) -> Self {
        match a {
            BatchAnswer::All => Self::All,
            BatchAnswer::Refused => Self::Refused,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PostBody {
    amount: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadersBody {
    readers: Vec<String>,
}

fn invalid(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::InvalidField {
        code,
        message: message.into(),
    }
}

pub fn account_id(s: &str) -> Result<AccountId, ApiError> {
    AccountId::parse(s).map_err(|e| invalid("invalid_account_id", e.what))
}

pub fn transfer_id(s: &str) -> Result<TransferId, ApiError> {
    TransferId::parse(s).map_err(|e| invalid("invalid_transfer_id", e.what))
}

fn asset(s: &str) -> Result<Asset, ApiError> {
    Asset::parse(s).map_err(|e| invalid("invalid_asset", e.what))
}

fn readers(list: &[String], limits: &Limits) -> Result<BTreeSet<OrgName>, ApiError> {
    if list.len() > limits.readers_max {
        return Err(invalid(
            "too_many_readers",
            format!("at most {} readers", limits.readers_max),
        ));
    }
    list.iter()
        .map(|r| OrgName::parse(r).map_err(|e| invalid("invalid_org", e.what)))
        .collect()
}

/// A decimal integer as a JSON integer or string: digits only, no sign,
/// fraction, exponent or leading zero. Integers JSON parsers would round
/// (past u64) are refused unless sent as strings.
fn decimal(v: &Value, code: &'static str) -> Result<u128, ApiError> {
    let bad = || {
        invalid(
            code,
            "must be a non-negative integer, as a JSON integer or a decimal string",
        )
    };
    match v {
        Value::Number(n) => n.as_u64().map(u128::from).ok_or_else(bad),
        Value::String(s) => {
            let digits = !s.is_empty()
                && s.bytes().all(|b| b.is_ascii_digit())
                && (s == "0" || !s.starts_with('0'));
            if digits {
                s.parse().map_err(|_| bad())
            } else {
                Err(bad())
            }
        }
        _ => Err(bad()),
    }
}

/// An amount: positive, at most 2^64-1.
fn amount(v: &Value) -> Result<Amount, ApiError> {
    let units = decimal(v, "invalid_amount")?;
    let units = u64::try_from(units).map_err(|_| {
        invalid(
            "invalid_amount",
            "amount must be at most 18446744073709551615",
        )
    })?;
    Amount::new(units).map_err(|e| invalid("invalid_amount", e.to_string()))
}

pub fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::MalformedJson(e.to_string()))
}

impl CreateAccountBody {
    pub fn validate(self, limits: &Limits) -> Result<NewAccount, ApiError> {
        let balance_max = match &self.balance_max {
            None => None,
            Some(v) => match decimal(v, "invalid_balance_max")? {
                max if max <= TOTAL_MAX => Some(max),
                _ => return Err(invalid("invalid_balance_max", "balance_max is too large")),
            },
        };
        Ok(NewAccount {
            id: account_id(&self.id)?,
            asset: asset(&self.asset)?,
            allow_negative: self.allow_negative,
            readers: readers(&self.readers, limits)?,
            balance_max,
        })
    }
}

impl TransferBody {
    pub fn validate(self, limits: &Limits) -> Result<NewTransfer, ApiError> {
        if self
            .memo
            .as_ref()
            .is_some_and(|m| m.len() > limits.memo_bytes_max)
        {
            return Err(invalid(
                "memo_too_long",
                format!("memo is longer than {} bytes", limits.memo_bytes_max),
            ));
        }
        if let Some(t) = self.timeout_ms {
            if !self.pending {
                return Err(invalid(
                    "invalid_timeout",
                    "timeout_ms applies to pending transfers only",
                ));
            }
            if t == 0 || t > limits.pending_timeout_ms_max {
                return Err(invalid(
                    "invalid_timeout",
                    format!("timeout_ms must be 1..={}", limits.pending_timeout_ms_max),
                ));
            }
        }
        Ok(NewTransfer {
            id: transfer_id(&self.id)?,
            debit_account: account_id(&self.debit_account)?,
            credit_account: account_id(&self.credit_account)?,
            amount: amount(&self.amount)?,
            asset: self.asset.as_deref().map(asset).transpose()?,
            memo: self.memo,
            pending: self.pending,
            timeout_ms: self.timeout_ms,
        })
    }
}

/// The top-level keys of a `POST /v1/transfers` body, values skipped over
/// unparsed: whether it is a batch. Only a JSON object is a body (a derived
/// struct would also take an array, field by field).
type BodyKeys = std::collections::BTreeMap<String, serde::de::IgnoredAny>;

/// A single transfer or a batch, as a `POST /v1/transfers` body says, with
/// the answer it asks for. The body is parsed straight into its type (a
/// batch of 8000 transfers is 8000 small structs, not a JSON tree first).
pub fn transfers_command(body: &[u8], limits: &Limits) -> Result<(Command, Answer), ApiError> {
    let keys: BodyKeys = parse_json(body)?;
    if !keys.contains_key("transfers") {
        let one: TransferBody = parse_json(body)?;
        let command = Command::Transfers {
            transfers: vec![one.validate(limits)?],
            atomic: false,
        };
        return Ok((command, Answer::One));
    }
    let batch: BatchBody = parse_json(body)?;
    if batch.transfers.is_empty() || batch.transfers.len() > limits.batch_transfers_max {
        let max = limits.batch_transfers_max;
        return Err(invalid(
            "invalid_batch",
            format!("a batch holds 1..={max} transfers"),
        ));
    }
    let transfers = batch
        .transfers
        .into_iter()
        .map(|t| t.validate(limits))
        .collect::<Result<_, _>>()?;
    let command = Command::Transfers {
        transfers,
        atomic: batch.atomic,
    };
    Ok((command, batch.answer.into()))
}

impl PostBody {
    pub fn amount(&self) -> Result<Option<Amount>, ApiError> {
        self.amount.as_ref().map(amount).transpose()
    }
}

impl ReadersBody {
    pub fn validate(self, limits: &Limits) -> Result<BTreeSet<OrgName>, ApiError> {
        readers(&self.readers, limits)
    }
}

/// Limits that the edge checks, checked again on the leader for commands
/// forwarded by a peer.
pub fn check_limits(command: &Command, limits: &Limits) -> Result<(), ApiError> {
    match command {
        Command::CreateAccount(a) if a.readers.len() > limits.readers_max => Err(invalid(
            "too_many_readers",
            format!("at most {} readers", limits.readers_max),
        )),
        Command::SetReaders { readers, .. } if readers.len() > limits.readers_max => Err(invalid(
            "too_many_readers",
            format!("at most {} readers", limits.readers_max),
        )),
        Command::Transfers { transfers, .. } if transfers.len() > limits.batch_transfers_max => {
            Err(invalid(
                "invalid_batch",
                format!("a batch holds 1..={} transfers", limits.batch_transfers_max),
            ))
        }
        Command::Transfers { transfers, .. }
            if transfers.iter().any(|t| {
                t.memo
                    .as_ref()
                    .is_some_and(|m| m.len() > limits.memo_bytes_max)
            }) =>
        {
            Err(invalid(
                "memo_too_long",
                format!("memo is longer than {} bytes", limits.memo_bytes_max),
            ))
        }
        _ => Ok(()),
    }
}

/// An account as `viewer`'s organization may see it: the readers list is
/// shown to the owner only.
pub fn account_view(a: &Account, viewer: &OrgName, as_of: u64) -> Value {
    let readers: Vec<&OrgName> = if &a.owner == viewer {
        a.readers.iter().collect()
    } else {
        Vec::new()
    };
    json!({
        "id": a.id,
        "owner": a.owner,
        "asset": a.asset,
        "allow_negative": a.allow_negative,
        "closed": a.closed,
        "balance_max": a.balance_max.map(|m| m.to_string()),
        "readers": readers,
        "balance": a.balance().to_string(),
        "available": a.available().to_string(),
        "debits_pending": a.debits_pending.to_string(),
        "credits_pending": a.credits_pending.to_string(),
        "debits_posted": a.debits_posted.to_string(),
        "credits_posted": a.credits_posted.to_string(),
        "created_height": a.created_height,
        "as_of": as_of,
    })
}

/// A transfer as the API shows it. Serialized straight from the record:
/// a batch's answer is thousands of these.
#[derive(Serialize)]
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
            amount: Units(t.amount.units()),
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
            posted_amount: t.posted_amount.map(|a| Units(a.units())),
            resolved_height: t.resolved_height,
        }
    }
}

/// An amount in units, written as a decimal string (see the module docs).
struct Units(u64);

impl Serialize for Units {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

pub fn transfer_view(t: &Transfer) -> Value {
    serde_json::to_value(TransferView::from(t)).expect("views serialize")
}

pub fn history_view(h: &HistoryItem) -> Value {
    json!({
        "seq": h.seq,
        "transfer": h.transfer,
        "event": h.event,
        "side": if h.debit { "debit" } else { "credit" },
        "amount": h.amount.units().to_string(),
        "balance_after": h.balance_after.to_string(),
        "debits_pending_after": h.debits_pending_after.to_string(),
        "credits_pending_after": h.credits_pending_after.to_string(),
        "height": h.height,
        "log_index": h.log_index,
        "timestamp_ms": h.timestamp_ms,
    })
}

/// A refused batch item, when the batch asked for `"answer": "refused"`:
/// `{"index", "id", "error": {"code", "message"}}`, `index` counting the
/// request's items from 0.
#[derive(Serialize)]
pub struct RefusedView<'a> {
    index: u64,
    id: &'a TransferId,
    error: ErrorView<'static>,
}

impl<'a> RefusedView<'a> {
    pub fn new(index: u64, id: &'a TransferId, rejection: &Rejection) -> Self {
        Self {
            index,
            id,
            error: ErrorView {
                code: rejection.code(),
                message: rejection.message(),
            },
        }
    }
}

/// One batch item's result: `{"ok": true, "transfer": ...}` or
/// `{"ok": false, "error": {"code", "message"}}`.
#[derive(Serialize)]
pub struct BatchItemView<'a> {
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
                error: Some(ErrorView {
                    code: e.code(),
                    message: e.message(),
                }),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::OrgName;

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
        assert_eq!(transfer_view(&t), transfer);
        let ok = serde_json::to_value(BatchItemView::from(&Ok(t))).unwrap();
        assert_eq!(ok, json!({"ok": true, "transfer": transfer}));
        let refused = Err(Rejection::InsufficientFunds);
        let refused = serde_json::to_value(BatchItemView::from(&refused)).unwrap();
        let error = json!({"code": "insufficient_funds", "message": Rejection::InsufficientFunds.message()});
        assert_eq!(refused, json!({"ok": false, "error": error}));
    }
}
