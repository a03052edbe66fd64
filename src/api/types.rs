//! Request bodies, their validation into ledger commands, and response views.
//!
//! Bodies are parsed strictly (unknown fields refused) and every field is
//! checked into a ledger type here, so the ledger only sees valid values.
//! Amounts and balances go out as decimal strings so no client loses
//! precision past 2^53.

use std::collections::BTreeSet;

use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use crate::config::Limits;
use crate::ledger::{
    Account, AccountId, Amount, Asset, Command, HistoryItem, NewAccount, NewTransfer, OrgName,
    Rejection, Transfer, TransferId, TOTAL_MAX,
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

/// A single transfer or a batch: which one a `POST /v1/transfers` body is.
pub fn transfers_command(body: &[u8], limits: &Limits) -> Result<(Command, bool), ApiError> {
    let value: Value = parse_json(body)?;
    if value.get("transfers").is_some() {
        let batch: BatchBody =
            serde_json::from_value(value).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
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
        Ok((
            Command::Transfers {
                transfers,
                atomic: batch.atomic,
            },
            true,
        ))
    } else {
        let one: TransferBody =
            serde_json::from_value(value).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
        Ok((
            Command::Transfers {
                transfers: vec![one.validate(limits)?],
                atomic: false,
            },
            false,
        ))
    }
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

pub fn transfer_view(t: &Transfer) -> Value {
    json!({
        "id": t.id,
        "debit_account": t.debit_account,
        "credit_account": t.credit_account,
        "amount": t.amount.units().to_string(),
        "asset": t.asset,
        "memo": t.memo,
        "posted_by": t.posted_by,
        "timestamp_ms": t.timestamp_ms,
        "height": t.height,
        "log_index": t.log_index,
        "pending": t.pending,
        "timeout_ms": t.timeout_ms,
        "expires_at_ms": t.expires_at_ms,
        "state": t.state,
        "posted_amount": t.posted_amount.map(|a| a.units().to_string()),
        "resolved_height": t.resolved_height,
    })
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

/// One batch item's result.
pub fn batch_item_view(r: &Result<Transfer, Rejection>) -> Value {
    match r {
        Ok(t) => json!({"ok": true, "transfer": transfer_view(t)}),
        Err(e) => json!({"ok": false, "error": {"code": e.code(), "message": e.message()}}),
    }
}
