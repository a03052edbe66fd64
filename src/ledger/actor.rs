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
        match s {
            "node" => Some(Self::Node),
            "app" => Some(Self::App),
            "partner" => Some(Self::Partner),
            "admin" => Some(Self::Admin),
            _ => None,
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
