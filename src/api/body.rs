//! Request bodies: read within their limits, parsed, and validated into
//! ledger commands.
//!
//! A body is read whole before it is parsed, up to a byte limit and within
//! the request timeout. Bodies are parsed strictly (unknown fields refused)
//! and every field is checked into a ledger type here, so the ledger only
//! sees valid values.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use actix_web::http::header::CONTENT_TYPE;
use actix_web::{web, HttpRequest};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::ToSchema;

use super::error::ApiError;
use crate::config::Limits;
use crate::ledger::{
    AccountId, Amount, Asset, Command, NewAccount, NewTransfer, OrgName, TransferId, TOTAL_MAX,
};

/// Whether `req` declares a JSON body. Every write requires it, so that a
/// browser holding a member certificate cannot be made to post a form (a
/// cross-site form can only send form and text types).
pub fn ensure_json(req: &HttpRequest) -> Result<(), ApiError> {
    let declared = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::trim);
    match declared {
        Some(t) if t.eq_ignore_ascii_case("application/json") => Ok(()),
        _ => Err(ApiError::NotJson),
    }
}

/// The bytes of request bodies each caller (an organization on the API
/// listener, a node on the peer listener) has in memory on this node, from
/// the first byte read until its request is answered, each caller within
/// `max`: one caller's many or slow bodies cannot take the memory the
/// others' need.
#[derive(Debug)]
pub struct BodyBudgets {
    /// The config key of `max`, for the error.
    limit: &'static str,
    max: usize,
    held: Mutex<HashMap<String, usize>>,
}

impl BodyBudgets {
    pub fn new(limit: &'static str, max: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            max,
            held: Mutex::default(),
        })
    }

    /// A body of `caller`'s, counted against its budget as it is read.
    pub fn hold(self: &Arc<Self>, caller: impl ToString) -> Held {
        Held {
            budgets: self.clone(),
            caller: caller.to_string(),
            bytes: 0,
        }
    }

    /// The bytes `caller`'s bodies hold now.
    #[cfg(test)]
    fn held_by(&self, caller: &str) -> usize {
        self.lock().get(caller).copied().unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One body's bytes, counted against its caller's budget until dropped.
#[derive(Debug)]
pub struct Held {
    budgets: Arc<BodyBudgets>,
    caller: String,
    bytes: usize,
}

impl Held {
    /// Counts `n` more bytes, unless the caller's budget has no room.
    fn grow(&mut self, n: usize) -> Result<(), ApiError> {
        let b = &self.budgets;
        let mut held = b.lock();
        let now = held.get(&self.caller).copied().unwrap_or(0);
        if now.saturating_add(n) > b.max {
            return Err(ApiError::BodiesInFlight {
                limit: b.limit,
                max: b.max,
            });
        }
        match held.get_mut(&self.caller) {
            Some(now) => *now += n,
            None => {
                held.insert(self.caller.clone(), n);
            }
        }
        self.bytes += n;
        Ok(())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut held = self.budgets.lock();
        if let Some(now) = held.get_mut(&self.caller) {
            *now = now.saturating_sub(self.bytes);
            if *now == 0 {
                held.remove(&self.caller);
            }
        }
    }
}

/// A request body, counted against its caller's budget for as long as it
/// is kept.
#[derive(Debug)]
pub struct Body {
    bytes: web::Bytes,
    held: Held,
}

impl Body {
    /// Its place in the budget, without its bytes: for a caller that has
    /// decoded them and goes on with what they decoded to.
    pub fn into_held(self) -> Held {
        self.held
    }
}

impl std::ops::Deref for Body {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

/// Reads a request body of at most `max` bytes within `within`, counted
/// against its caller's budget (`held`); a larger one is refused before it
/// is buffered (the limit bounds memory per request), one past the
/// caller's budget as soon as it is, a slower one is cut off (a trickled
/// body holds a connection).
pub async fn read(
    payload: web::Payload,
    max: usize,
    within: std::time::Duration,
    mut held: Held,
) -> Result<Body, ApiError> {
    let bytes = tokio::time::timeout(within, read_all(payload, max, &mut held))
        .await
        .unwrap_or(Err(ApiError::BodyTimeout))?;
    Ok(Body { bytes, held })
}

async fn read_all(
    mut payload: web::Payload,
    max: usize,
    held: &mut Held,
) -> Result<web::Bytes, ApiError> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| match e {
            actix_web::error::PayloadError::Overflow => ApiError::BodyTooLarge(max),
            other => ApiError::MalformedJson(other.to_string()),
        })?;
        if body.len() + chunk.len() > max {
            return Err(ApiError::BodyTooLarge(max));
        }
        held.grow(chunk.len())?;
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"id": "org1.payroll", "asset": "USD"}))]
#[serde(deny_unknown_fields)]
pub struct CreateAccountBody {
    #[schema(value_type = AccountId)]
    id: String,
    #[schema(value_type = Asset)]
    asset: String,
    #[serde(default)]
    allow_negative: bool,
    #[serde(default)]
    #[schema(value_type = Vec<OrgName>)]
    readers: Vec<String>,
    #[serde(default)]
    #[schema(schema_with = decimal_or_null_in)]
    balance_max: Option<Value>,
}

#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"id": "org1.pay-0001", "debit_account": "org1.ops", "credit_account": "org2.ops", "amount": "2500", "memo": "invoice 17"}))]
#[serde(deny_unknown_fields)]
pub struct TransferBody {
    #[schema(value_type = TransferId)]
    id: String,
    #[schema(value_type = AccountId)]
    debit_account: String,
    #[schema(value_type = AccountId)]
    credit_account: String,
    #[schema(schema_with = amount_in)]
    amount: Value,
    #[schema(value_type = Option<Asset>)]
    asset: Option<String>,
    memo: Option<String>,
    #[serde(default)]
    pending: bool,
    timeout_ms: Option<u64>,
}

#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"transfers": [{"id": "org1.pay-0002", "debit_account": "org1.ops", "credit_account": "org2.ops", "amount": 100}, {"id": "org1.hold-0001", "debit_account": "org1.ops", "credit_account": "org3.ops", "amount": 200, "pending": true, "timeout_ms": 60000}], "atomic": true, "answer": "refused"}))]
#[serde(deny_unknown_fields)]
pub struct BatchBody {
    transfers: Vec<TransferBody>,
    #[serde(default)]
    atomic: bool,
    #[serde(default)]
    answer: BatchAnswer,
}

/// What a batch's answer lists (the body's `answer`).
#[derive(Clone, Copy, Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(super) enum BatchAnswer {
    /// Every item's result, in request order.
    #[default]
    All,
    /// Only the refused items, each with its index in the request.
    Refused,
}

/// The shape of a write's answer. Not part of the Raft entry: it travels
/// with a forwarded request, and the node that applies renders it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Shape {
    /// One record or one error: a single transfer, an account, a post.
    One,
    /// A batch: every item's result, in request order.
    All,
    /// A batch: a count of applied items and the refused ones, by index.
    Refused,
}

impl From<BatchAnswer> for Shape {
    fn from(a: BatchAnswer) -> Self {
        match a {
            BatchAnswer::All => Self::All,
            BatchAnswer::Refused => Self::Refused,
        }
    }
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostBody {
    /// Less than the pending amount: the rest is released.
    #[schema(schema_with = amount_or_null_in)]
    amount: Option<Value>,
}

#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"readers": ["org2"]}))]
#[serde(deny_unknown_fields)]
pub struct ReadersBody {
    #[schema(value_type = Vec<OrgName>)]
    readers: Vec<String>,
}

/// An amount as a body may give it (OpenAPI): a JSON integer from 1 to
/// 2^64-1, or a decimal string (the pattern shows those of up to 19
/// digits; larger ones up to 2^64-1 are taken too).
pub(super) fn amount_in() -> RefOr<Schema> {
    number_in(1, "^[1-9][0-9]{0,18}$", false)
}

/// [`amount_in`], or null (the same as leaving it out).
fn amount_or_null_in() -> RefOr<Schema> {
    number_in(1, "^[1-9][0-9]{0,18}$", true)
}

/// A non-negative integer as a body may give it (OpenAPI): a JSON integer
/// or a decimal string, or null (the same as leaving it out).
fn decimal_or_null_in() -> RefOr<Schema> {
    number_in(0, "^(0|[1-9][0-9]*)$", true)
}

fn number_in(minimum: u64, pattern: &str, or_null: bool) -> RefOr<Schema> {
    let integer = ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(minimum))
        .maximum(Some(u64::MAX));
    let string = ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(pattern));
    let either = OneOfBuilder::new().item(integer).item(string);
    if or_null {
        either
            .item(ObjectBuilder::new().schema_type(Type::Null))
            .into()
    } else {
        either.into()
    }
}

pub(super) fn invalid(code: &'static str, message: impl Into<String>) -> ApiError {
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
pub(super) fn amount(v: &Value) -> Result<Amount, ApiError> {
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

/// Whether `c` may not appear in a memo: a control character (C0, DEL, C1)
/// or a bidirectional override or isolate, which can make a memo display
/// as something other than what it holds.
fn unsafe_in_memo(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// A memo: at most `memo_bytes_max` bytes, nothing that hides what it says.
pub fn check_memo(memo: Option<&String>, limits: &Limits) -> Result<(), ApiError> {
    let Some(memo) = memo else {
        return Ok(());
    };
    if memo.len() > limits.memo_bytes_max {
        return Err(invalid(
            "memo_too_long",
            format!("memo is longer than {} bytes", limits.memo_bytes_max),
        ));
    }
    match memo.char_indices().find(|(_, c)| unsafe_in_memo(*c)) {
        Some((at, c)) => Err(invalid(
            "invalid_memo",
            format!(
                "memo holds U+{:04X} at byte {at}: control characters and bidirectional \
                 overrides (U+0000-U+001F, U+007F-U+009F, U+202A-U+202E, U+2066-U+2069) \
                 are refused",
                u32::from(c)
            ),
        )),
        None => Ok(()),
    }
}

impl TransferBody {
    pub fn validate(self, limits: &Limits) -> Result<NewTransfer, ApiError> {
        check_memo(self.memo.as_ref(), limits)?;
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
pub fn transfers_command(body: &[u8], limits: &Limits) -> Result<(Command, Shape), ApiError> {
    let keys: BodyKeys = parse_json(body)?;
    if !keys.contains_key("transfers") {
        let one: TransferBody = parse_json(body)?;
        let command = Command::Transfers {
            transfers: vec![one.validate(limits)?],
            atomic: false,
        };
        return Ok((command, Shape::One));
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
        Command::Transfers { transfers, .. } => transfers
            .iter()
            .try_for_each(|t| check_memo(t.memo.as_ref(), limits)),
        _ => Ok(()),
    }
}

/// `{}`: the only body `void` and `close` accept (or none at all).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct EmptyBody {}

pub(super) fn empty_body(body: &[u8]) -> Result<(), ApiError> {
    if !body.is_empty() {
        parse_json::<EmptyBody>(body)?;
    }
    Ok(())
}

/// The command a write request makes, and the shape of its answer: the one
/// parser of every write route's method, path and body. The API listener
/// runs it on each write; every replica runs it again, without node-local
/// limits ([`decode_signed`]), on a request its caller signed.
pub fn write_command(
    method: &str,
    path: &str,
    body: &[u8],
    limits: &Limits,
) -> Result<(Command, Shape), ApiError> {
    let segments: Vec<&str> = path.strip_prefix("/v1/").unwrap_or("").split('/').collect();
    let one = |command| Ok((command, Shape::One));
    match (method, segments.as_slice()) {
        ("POST", ["accounts"]) => one(Command::CreateAccount(
            parse_json::<CreateAccountBody>(body)?.validate(limits)?,
        )),
        ("POST", ["transfers"]) => transfers_command(body, limits),
        ("POST", ["transfers", id, "post"]) => {
            let id = transfer_id(id)?;
            let post = if body.is_empty() {
                PostBody::default()
            } else {
                parse_json::<PostBody>(body)?
            };
            let amount = post.amount()?;
            one(Command::PostPending { id, amount })
        }
        ("POST", ["transfers", id, "void"]) => {
            let id = transfer_id(id)?;
            empty_body(body)?;
            one(Command::VoidPending { id })
        }
        ("POST", ["accounts", id, "close"]) => {
            let id = account_id(id)?;
            empty_body(body)?;
            one(Command::CloseAccount { id })
        }
        ("PUT", ["accounts", id, "readers"]) => {
            let id = account_id(id)?;
            let readers = parse_json::<ReadersBody>(body)?.validate(limits)?;
            one(Command::SetReaders { id, readers })
        }
        ("POST", ["gov", rest @ ..]) => one(super::gov::command(rest, body, limits)?),
        _ => Err(ApiError::NotFound("route_not_found")),
    }
}

/// [`write_command`] for a signed request in a log entry: the same parser
/// with no node-local limits (nodes may configure theirs differently, and
/// every replica must decode alike).
pub fn decode_signed(method: &str, path: &str, body: &[u8]) -> Option<Command> {
    let unbounded = Limits {
        readers_max: usize::MAX,
        memo_bytes_max: usize::MAX,
        batch_transfers_max: usize::MAX,
        pending_timeout_ms_max: u64::MAX,
        ..Limits::default()
    };
    write_command(method, path, body, &unbounded)
        .ok()
        .map(|(command, _)| command)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_caller_holds_its_own_budget_until_its_bodies_are_dropped() {
        let budgets = BodyBudgets::new("limits.body_bytes_in_flight_max", 100);
        let mut a = budgets.hold("org1");
        a.grow(60).unwrap();
        let mut b = budgets.hold("org1");
        b.grow(40).unwrap();
        let past = b.grow(1).unwrap_err();
        assert_eq!(past.status().as_u16(), 429);
        assert!(
            past.message()
                .contains("limits.body_bytes_in_flight_max (100 bytes)"),
            "{}",
            past.message()
        );
        assert_eq!(budgets.held_by("org1"), 100, "a refused grow holds nothing");
        // Another caller is not held up, and a huge chunk does not wrap.
        let mut other = budgets.hold("org2");
        other.grow(100).unwrap();
        assert!(other.grow(usize::MAX).is_err());
        drop(a);
        assert_eq!(budgets.held_by("org1"), 40);
        b.grow(60).unwrap();
        drop(b);
        drop(other);
        assert_eq!(budgets.held_by("org1"), 0);
        assert!(
            budgets.lock().is_empty(),
            "no caller is remembered with nothing held"
        );
    }

    #[test]
    fn a_memo_refuses_what_would_hide_its_text_and_keeps_the_rest() {
        let limits = Limits::default();
        let memo = |m: &str| check_memo(Some(&m.to_owned()), &limits).map_err(|e| e.code());
        for ok in [
            "",
            "rent for March",
            "Zahlung für März ✓",
            "请付款",
            "a\u{200F}b",
        ] {
            assert_eq!(memo(ok), Ok(()), "{ok:?}");
        }
        for bad in [
            "\u{0}",
            "tab\t",
            "new\nline",
            "\u{1F}",
            "\u{7F}",
            "\u{80}",
            "\u{9F}",
            "\u{202A}",
            "\u{202E}",
            "\u{2066}",
            "\u{2069}",
        ] {
            assert_eq!(memo(bad), Err("invalid_memo"), "{bad:?}");
        }
        let long = "m".repeat(limits.memo_bytes_max + 1);
        assert_eq!(memo(&long), Err("memo_too_long"));
    }
}
