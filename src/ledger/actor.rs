//! Who proposes a command: an organization in a role, as verified from the
//! caller's TLS session.

use serde::{Deserialize, Serialize};

use super::OrgName;

/// What a certificate's `OU` says its holder may do (`docs/design.md`,
/// "Trust model").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Node,
    App,
    Partner,
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Node, Self::App, Self::Partner, Self::Admin]
            .into_iter()
            .find(|r| r.as_str() == s)
    }

    /// The role as a certificate's `OU` names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Node => "node",
            Self::App => "app",
            Self::Partner => "partner",
            Self::Admin => "admin",
        }
    }

    /// Apps and admins write; partners and nodes never do.
    pub fn may_write(self) -> bool {
        matches!(self, Self::App | Self::Admin)
    }
}

/// Who proposed a command, as verified from the caller's TLS session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub org: OrgName,
    pub role: Role,
}
