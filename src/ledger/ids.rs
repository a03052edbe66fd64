//! Validated identifiers and amounts.
//!
//! Every identifier that enters the ledger is checked here once, at the edge;
//! inside the ledger a value of these types is known to be well formed. The
//! rules are those of `docs/design.md`, "Identifiers": reject anything
//! else, never normalize.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::de::Visitor;
use serde::{Deserialize, Serialize};

/// Longest account or transfer id, in bytes (ASCII, so also characters).
pub const ID_BYTES_MAX: usize = 64;
/// Longest asset code, in bytes.
pub const ASSET_BYTES_MAX: usize = 12;
/// Longest organization name, in bytes (matches `scripts/new-org.sh`).
pub const ORG_BYTES_MAX: usize = 32;

fn is_lower_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// `first` must hold for the first byte, `rest` for every later one.
fn check(s: &str, max: usize, first: fn(u8) -> bool, rest: fn(u8) -> bool) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= max
        && first(bytes[0])
        && bytes[1..].iter().all(|&b| rest(b))
}

macro_rules! validated_string {
    ($(#[$doc:meta])* $name:ident, $noun:literal, $pattern:literal, $check:expr) => {
        $(#[$doc])*
        /// Deserializing validates too, so values arriving from a peer or
        /// from the log are held to the same rule as those from a client.
        /// Held as a shared string: each history item and record names its
        /// ids, and a clone is a count, not an allocation and a copy.
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(Arc<str>);

        /// As a plain string, borrowed: serde's `into = "String"` would
        /// clone the value at every serialization (records, replication,
        /// answers).
        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        /// From the input's string as it is, without an owned copy first.
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_str(Checked(PhantomData))
            }
        }

        impl<'a> TryFrom<&'a str> for $name {
            type Error = InvalidId;
            fn try_from(s: &'a str) -> Result<Self, InvalidId> {
                if $check(s) {
                    Ok(Self(s.into()))
                } else {
                    Err(InvalidId {
                        what: concat!($noun, " must match ", $pattern),
                    })
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidId;
            fn try_from(s: String) -> Result<Self, InvalidId> {
                Self::parse(&s)
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0.as_ref().to_owned()
            }
        }

        impl $name {
            /// Accepts `s` only if it follows the rule exactly.
            pub fn parse(s: &str) -> Result<Self, InvalidId> {
                Self::try_from(s)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        /// In the API's OpenAPI description: a string held to the rule.
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                string_schema(concat!("^", $pattern, "$"), concat!($noun, ": ", $pattern))
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}

/// A string held to `pattern`, as the API's OpenAPI description shows it.
pub fn string_schema(
    pattern: &str,
    description: &str,
) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .pattern(Some(pattern))
        .description(Some(description))
        .into()
}

/// Deserializes a validated string from the input's `&str`.
struct Checked<T>(PhantomData<T>);

impl<T> Visitor<'_> for Checked<T>
where
    T: for<'a> TryFrom<&'a str, Error = InvalidId>,
{
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<T, E> {
        T::try_from(s).map_err(E::custom)
    }
}

validated_string!(
    /// An account id: `[a-z0-9][a-z0-9._:-]{0,63}`.
    AccountId,
    "account id",
    "[a-z0-9][a-z0-9._:-]{0,63}",
    |s: &str| check(s, ID_BYTES_MAX, is_lower_alnum, |b| is_lower_alnum(b)
        || matches!(b, b'.' | b'_' | b':' | b'-'))
);

validated_string!(
    /// A transfer id, the client's idempotency key: `[A-Za-z0-9][A-Za-z0-9._:-]{0,63}`.
    TransferId,
    "transfer id",
    "[A-Za-z0-9][A-Za-z0-9._:-]{0,63}",
    |s: &str| check(s, ID_BYTES_MAX, |b| b.is_ascii_alphanumeric(), |b| b
        .is_ascii_alphanumeric()
        || matches!(b, b'.' | b'_' | b':' | b'-'))
);

/// Whether `id` is in `org`'s namespace: it begins with the organization's
/// name and a dot, and has more after it (`org1.payroll`, `org1.pay-0001`).
/// Account and transfer ids belong to the organization that creates them.
fn in_namespace(id: &str, org: &OrgName) -> bool {
    id.strip_prefix(org.as_str())
        .and_then(|rest| rest.strip_prefix('.'))
        .is_some_and(|rest| !rest.is_empty())
}

impl AccountId {
    pub fn in_namespace_of(&self, org: &OrgName) -> bool {
        in_namespace(self.as_str(), org)
    }
}

impl TransferId {
    pub fn in_namespace_of(&self, org: &OrgName) -> bool {
        in_namespace(self.as_str(), org)
    }
}

validated_string!(
    /// An asset code: `[A-Z0-9]{1,12}`.
    Asset,
    "asset",
    "[A-Z0-9]{1,12}",
    |s: &str| check(
        s,
        ASSET_BYTES_MAX,
        |b| b.is_ascii_uppercase() || b.is_ascii_digit(),
        |b| b.is_ascii_uppercase() || b.is_ascii_digit()
    )
);

validated_string!(
    /// An organization name: `[a-z0-9][a-z0-9-]{0,31}`.
    OrgName,
    "organization",
    "[a-z0-9][a-z0-9-]{0,31}",
    |s: &str| check(s, ORG_BYTES_MAX, is_lower_alnum, |b| is_lower_alnum(b) || b == b'-')
);

/// Why an identifier was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidId {
    pub what: &'static str,
}

impl fmt::Display for InvalidId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.what)
    }
}

/// A positive amount in minor units. Zero is not an amount.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct Amount(u64);

impl TryFrom<u64> for Amount {
    type Error = InvalidAmount;
    fn try_from(units: u64) -> Result<Self, InvalidAmount> {
        Self::new(units)
    }
}

impl From<Amount> for u64 {
    fn from(a: Amount) -> u64 {
        a.0
    }
}

/// Why an amount was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvalidAmount {
    Zero,
    NotDecimal,
    LeadingZero,
    OutOfRange,
}

impl fmt::Display for InvalidAmount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Zero => "amount must be positive",
            Self::NotDecimal => "amount must be a decimal integer of digits only",
            Self::LeadingZero => "amount must not have leading zeros",
            Self::OutOfRange => "amount must be at most 18446744073709551615",
        })
    }
}

/// In the API's OpenAPI description: an integer from 1 to 2^64-1.
impl utoipa::PartialSchema for Amount {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Integer)
            .minimum(Some(1))
            .maximum(Some(u64::MAX))
            .description(Some("an amount in minor units, 1 to 2^64-1"))
            .into()
    }
}

impl utoipa::ToSchema for Amount {}

impl Amount {
    pub fn new(units: u64) -> Result<Self, InvalidAmount> {
        if units == 0 {
            Err(InvalidAmount::Zero)
        } else {
            Ok(Self(units))
        }
    }

    /// Parses the decimal string form: digits only, no sign, no leading zero.
    pub fn parse_decimal(s: &str) -> Result<Self, InvalidAmount> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(InvalidAmount::NotDecimal);
        }
        if s.len() > 1 && s.starts_with('0') {
            return Err(InvalidAmount::LeadingZero);
        }
        let units: u64 = s.parse().map_err(|_| InvalidAmount::OutOfRange)?;
        Self::new(units)
    }

    pub fn units(self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_ids() {
        for ok in ["a", "org1.ops", "x:y-z_0", &"a".repeat(64)] {
            assert!(AccountId::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "A", ".a", "a b", "é", "a/b", &"a".repeat(65)] {
            assert!(AccountId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn transfer_ids_and_assets() {
        assert!(TransferId::parse("Tx-1:2.3_4").is_ok());
        assert!(TransferId::parse("-x").is_err());
        assert!(TransferId::parse("tx\u{e9}").is_err());
        assert!(Asset::parse("USD").is_ok());
        assert!(Asset::parse("usd").is_err());
        assert!(Asset::parse("ABCDEFGHIJKLM").is_err());
        assert!(OrgName::parse("org-1").is_ok());
        assert!(OrgName::parse("-org").is_err());
    }

    #[test]
    fn deserializing_validates() {
        assert!(serde_json::from_str::<AccountId>("\"ok.id\"").is_ok());
        assert!(serde_json::from_str::<AccountId>("\"Bad\"").is_err());
        assert!(serde_json::from_str::<Amount>("0").is_err());
        assert_eq!(
            serde_json::from_str::<Amount>("7").map(Amount::units).ok(),
            Some(7)
        );
    }

    #[test]
    fn ids_serialize_as_their_string() {
        let id = TransferId::parse("Tx-1").expect("valid");
        assert_eq!(serde_json::to_string(&id).ok(), Some("\"Tx-1\"".into()));
        assert_eq!(crate::codec::encode(&id), crate::codec::encode(&"Tx-1"));
        let back: Result<TransferId, _> = crate::codec::decode(&crate::codec::encode(&id));
        assert_eq!(back.ok(), Some(id));
        assert!(crate::codec::decode::<Asset>(&crate::codec::encode(&"usd")).is_err());
    }

    #[test]
    fn amounts() {
        assert_eq!(
            Amount::parse_decimal("18446744073709551615").map(Amount::units),
            Ok(u64::MAX)
        );
        assert_eq!(
            Amount::parse_decimal("18446744073709551616"),
            Err(InvalidAmount::OutOfRange)
        );
        assert_eq!(Amount::parse_decimal("0"), Err(InvalidAmount::Zero));
        assert_eq!(Amount::parse_decimal("01"), Err(InvalidAmount::LeadingZero));
        assert_eq!(Amount::parse_decimal("-1"), Err(InvalidAmount::NotDecimal));
        assert_eq!(Amount::parse_decimal("1.5"), Err(InvalidAmount::NotDecimal));
        assert_eq!(Amount::parse_decimal("+1"), Err(InvalidAmount::NotDecimal));
        assert_eq!(Amount::parse_decimal(""), Err(InvalidAmount::NotDecimal));
    }
}
