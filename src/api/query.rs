//! Query strings of reads: which parameters a read takes, and their values.

use actix_web::web;
use serde::Deserialize;

use super::error::ApiError;
use crate::ledger::AccountId;

/// Query parameters of reads; each endpoint accepts the ones it uses.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ReadQuery {
    consistency: Option<String>,
    pub at_height: Option<u64>,
    cursor: Option<String>,
    limit: Option<usize>,
}

/// A page's size when the query names none (or the page limit, if lower).
pub(super) const PAGE_ITEMS_DEFAULT: usize = 100;

impl ReadQuery {
    /// Parses `query`, refusing parameters outside `allowed`.
    pub fn parse(query: &str, allowed: &[&str]) -> Result<Self, ApiError> {
        let q: Self = web::Query::<Self>::from_query(query)
            .map_err(|e| ApiError::InvalidQuery(e.to_string()))?
            .into_inner();
        let given = [
            ("at_height", q.at_height.is_some()),
            ("cursor", q.cursor.is_some()),
            ("limit", q.limit.is_some()),
        ];
        if let Some((name, _)) = given
            .iter()
            .find(|(name, set)| *set && !allowed.contains(name))
        {
            return Err(ApiError::InvalidQuery(format!(
                "{name} does not apply here"
            )));
        }
        Ok(q)
    }

    /// Whether the read asked for `consistency=local`.
    pub fn local(&self) -> Result<bool, ApiError> {
        match self.consistency.as_deref() {
            None | Some("linearizable") => Ok(false),
            Some("local") => Ok(true),
            Some(_) => Err(ApiError::InvalidQuery(
                "consistency must be linearizable or local".into(),
            )),
        }
    }

    /// The page size asked for, at most `max`.
    pub fn limit(&self, max: usize) -> Result<usize, ApiError> {
        page_limit(self.limit.unwrap_or(PAGE_ITEMS_DEFAULT.min(max)), max)
    }

    /// A history cursor: the sequence number to start from (0 if none).
    pub fn history_cursor(&self) -> Result<u64, ApiError> {
        match self.cursor.as_deref() {
            None => Ok(0),
            Some(c) => c
                .parse()
                .map_err(|_| ApiError::InvalidQuery("cursor is not one this API returned".into())),
        }
    }

    /// An account-list cursor: the last account id of the previous page.
    pub fn account_cursor(&self) -> Result<Option<AccountId>, ApiError> {
        self.cursor
            .as_deref()
            .map(|c| AccountId::parse(c).map_err(|_| ApiError::InvalidQuery("bad cursor".into())))
            .transpose()
    }

    /// A block-list cursor: the height to start from (0 if none).
    pub fn block_cursor(&self) -> Result<u64, ApiError> {
        Ok(self
            .cursor
            .as_deref()
            .map(parse_height)
            .transpose()?
            .unwrap_or(0))
    }
}

/// A page size: 1..=`max` items.
pub fn page_limit(limit: usize, max: usize) -> Result<usize, ApiError> {
    if (1..=max).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::InvalidQuery(format!("limit must be 1..={max}")))
    }
}

/// A block height: decimal digits, no sign or leading zero.
pub fn parse_height(s: &str) -> Result<u64, ApiError> {
    let canonical =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    s.parse()
        .ok()
        .filter(|_| canonical)
        .ok_or_else(|| ApiError::InvalidQuery(format!("{s:?} is not a block height")))
}
