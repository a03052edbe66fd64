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
    Account, AccountId, Amount, Asset, Command, NewAccount, NewTransfer, OrgName, Transfer,
    TransferId,
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

/// An amount: a JSON integer or a decimal string, positive, at most 2^64-1.
/// Floats (`1.0`, `1e3`) and integers past u64 (which JSON parsers turn into
/// floats) are refused rather than rounded.
fn amount(v: &Value) -> Result<Amount, ApiError> {
    let bad = |e: crate::ledger::InvalidAmount| invalid("invalid_amount", e.to_string());
    match v {
        Value::Number(n) => match n.as_u64() {
            Some(units) => Amount::new(units).map_err(bad),
            None => Err(invalid(
                "invalid_amount",
                "amount must be a positive integer of at most 18446744073709551615 (no sign, fraction or exponent)",
            )),
        },
        Value::String(s) => Amount::parse_decimal(s).map_err(bad),
        _ => Err(invalid("invalid_amount", "amount must be a JSON integer or a decimal string")),
    }
}

pub fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::MalformedJson(e.to_string()))
}

impl CreateAccountBody {
    pub fn validate(self, limits: &Limits) -> Result<NewAccount, ApiError> {
        if self.readers.len() > limits.readers_max {
            return Err(invalid(
                "too_many_readers",
                format!("at most {} readers", limits.readers_max),
            ));
        }
        let readers = self
            .readers
            .iter()
            .map(|r| OrgName::parse(r).map_err(|e| invalid("invalid_org", e.what)))
            .collect::<Result<BTreeSet<_>, _>>()?;
        Ok(NewAccount {
            id: account_id(&self.id)?,
            asset: asset(&self.asset)?,
            allow_negative: self.allow_negative,
            readers,
        })
    }
}

impl TransferBody {
    pub fn validate(self, limits: &Limits) -> Result<NewTransfer, ApiError> {
        if let Some(memo) = &self.memo {
            if memo.len() > limits.memo_bytes_max {
                return Err(invalid(
                    "memo_too_long",
                    format!("memo is longer than {} bytes", limits.memo_bytes_max),
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
        })
    }
}

/// An account as `viewer`'s organization may see it: the readers list is
/// shown to the owner only.
/// Limits that the edge checks, checked again on the leader for commands
/// forwarded by a peer.
pub fn check_limits(command: &Command, limits: &Limits) -> Result<(), ApiError> {
    match command {
        Command::CreateAccount(a) if a.readers.len() > limits.readers_max => Err(invalid(
            "too_many_readers",
            format!("at most {} readers", limits.readers_max),
        )),
        Command::Transfers(ts) => match ts.iter().find(|t| {
            t.memo
                .as_ref()
                .is_some_and(|m| m.len() > limits.memo_bytes_max)
        }) {
            Some(_) => Err(invalid(
                "memo_too_long",
                format!("memo is longer than {} bytes", limits.memo_bytes_max),
            )),
            None => Ok(()),
        },
        Command::CreateAccount(_) => Ok(()),
    }
}

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
        "readers": readers,
        "balance": a.balance().to_string(),
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
    })
}
