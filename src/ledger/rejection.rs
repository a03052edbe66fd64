//! Why a command was refused: one closed set, each code with its message.
//! The order of checks is documented on each command's function and in the
//! README; the first failing check answers.

use serde::{Deserialize, Serialize};

macro_rules! rejections {
    ($($(#[$doc:meta])* $variant:ident => $code:literal, $message:literal;)*) => {
        /// Why a command was refused.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum Rejection {
            $($(#[$doc])* $variant,)*
        }

        impl Rejection {
            /// Every rejection, for documentation and exhaustive tests.
            pub const ALL: &'static [Rejection] = &[$(Rejection::$variant),*];

            /// The stable error code clients see.
            pub fn code(self) -> &'static str {
                match self { $(Self::$variant => $code,)* }
            }

            pub fn message(self) -> &'static str {
                match self { $(Self::$variant => $message,)* }
            }
        }
    };
}

rejections! {
    /// The caller's role may not write (partners, nodes).
    RoleMayNotWrite => "role_may_not_write", "this certificate's role may not write";
    AllowNegativeRequiresAdmin => "allow_negative_requires_admin", "only an admin may create an account with allow_negative";
    GrantRequiresAdmin => "grant_requires_admin", "only an admin may grant or revoke other organizations' read access";
    CloseRequiresAdmin => "close_requires_admin", "only an admin may close an account";
    UnknownReaderOrg => "unknown_reader_org", "a reader organization is not a member of the consortium";
    /// The account id is taken, with other fields than requested.
    AccountExists => "account_exists", "an account with this id exists with other fields";
    AccountNotFound => "account_not_found", "no such account, or not visible to this organization";
    AccountNotOwned => "account_not_owned", "the account belongs to another organization";
    AccountsMustBeDifferent => "accounts_must_be_different", "debit and credit account must be different";
    DebitAccountNotFound => "debit_account_not_found", "the debit account does not exist";
    CreditAccountNotFound => "credit_account_not_found", "the credit account does not exist";
    DebitAccountNotOwned => "debit_account_not_owned", "the debit account belongs to another organization";
    /// The transfer id was used before with another body.
    ExistsWithDifferentFields => "exists_with_different_fields", "a transfer with this id exists with another body";
    AssetMismatch => "asset_mismatch", "the accounts' assets (and the transfer's asset, if given) differ";
    DebitAccountClosed => "debit_account_closed", "the debit account is closed";
    CreditAccountClosed => "credit_account_closed", "the credit account is closed";
    InsufficientFunds => "insufficient_funds", "the debit account's available balance is lower than the amount";
    ExceedsBalanceMax => "exceeds_balance_max", "the credit account's balance would pass its balance_max";
    /// A posted or pending total would pass what the ledger can represent.
    Overflow => "overflow", "the transfer would overflow an account's totals";
    /// Another transfer of the same atomic batch was refused.
    LinkedTransferFailed => "linked_transfer_failed", "another transfer of this atomic batch was refused; nothing was applied";
    PendingTransferNotFound => "pending_transfer_not_found", "no such transfer, or not visible to this organization";
    PendingTransferNotPending => "pending_transfer_not_pending", "the transfer is not a pending (two-phase) transfer";
    PendingTransferAlreadyPosted => "pending_transfer_already_posted", "the pending transfer was already posted";
    PendingTransferAlreadyVoided => "pending_transfer_already_voided", "the pending transfer was already voided";
    PendingTransferExpired => "pending_transfer_expired", "the pending transfer expired and its funds were released";
    ExceedsPendingAmount => "exceeds_pending_amount", "a pending transfer cannot be posted for more than it reserved";
    /// A write without evidence of its sender (only the leader's own ticks
    /// carry none).
    OriginMissing => "origin_missing", "the write carries no signature of the node or client that sent it";
    /// The seal's signature or certificate does not verify.
    OriginInvalid => "origin_invalid", "the signature or certificate that attests this write's sender does not verify";
    /// The sealing node belongs to another organization than the caller.
    OriginForeign => "origin_foreign", "the write was attested by a node of another organization than its caller";
    /// Signed too long before, or after, the ledger clock.
    OriginStale => "origin_stale", "the write was signed too long before (or after) the ledger clock: check the signer's clock";
    /// An account or transfer id outside the creating organization's namespace.
    IdOutsideNamespace => "id_outside_namespace", "an account or transfer id begins with the name of the organization that creates it and a dot, e.g. org1.payroll or org1.pay-0001";
    /// A grant change signed no later than the one in force.
    OriginReplayed => "origin_replayed", "this grant change was signed no later than the one in force (a replay, or an older request): sign a new request";
    /// The certificate that attests or signed the write was revoked.
    CertificateRevoked => "certificate_revoked", "the certificate that signed or attests this write is revoked";
    DebitAccountFrozen => "debit_account_frozen", "the debit account is frozen by a governance vote";
    CreditAccountFrozen => "credit_account_frozen", "the credit account is frozen by a governance vote";
    /// A governance write without the caller's own signature.
    SignatureRequired => "signature_required", "governance writes must be signed with the admin's own certificate key (alliance client signs every write)";
    AdminRequired => "admin_required", "only an organization's admin may propose, vote or revoke";
    ProposalNotFound => "proposal_not_found", "no such proposal";
    /// The ballot signs another digest than the proposal's.
    DigestMismatch => "digest_mismatch", "the ballot's digest is not the proposal's: fetch the proposal and sign its digest";
    AlreadyVoted => "already_voted", "this organization has already voted on the proposal; a ballot is never changed";
    ProposalClosed => "proposal_closed", "the proposal is no longer open: it executed, failed, was rejected or expired";
    TooManyOpenProposals => "too_many_open_proposals", "this organization has as many open proposals as it may: wait until one is decided or expires";
    InvalidAction => "invalid_action", "the proposed action is not well formed (a policy threshold at or below one half, a memo too long, a replacement node of another organization than the node it replaces)";
    UnknownOrg => "unknown_org", "the organization is not a member of the consortium";
    /// Revoking another organization's certificate needs a vote.
    VoteRequired => "vote_required", "revoking another organization's certificate needs a proposal and a vote (alliance client gov propose revoke)";
    AccountAlreadyFrozen => "account_already_frozen", "the account is already frozen";
    AccountNotFrozen => "account_not_frozen", "the account is not frozen";
    OrgNotActive => "org_not_active", "this organization may not propose or vote: it has not acknowledged joining (alliance client gov join), or it has left";
    OrgExists => "org_exists", "an organization of this name is or was a member: names are never reused";
    OrgRunsNodes => "org_runs_nodes", "the organization runs nodes of the consortium: remove them first (gov propose remove-node), or keep the CA that backs them";
    /// The organization of the certificate that signed or attests the
    /// write has left the consortium.
    OrgRemoved => "org_removed", "the organization of the certificate that signed or attests this write has left the consortium";
    UnknownCa => "unknown_ca", "the organization has no CA certificate with this SHA-256 (see GET /v1/gov/registry)";
    /// A node id that is or was a member node's, or an address another
    /// node has.
    NodeExists => "node_exists", "the node id is or was a node's (ids are never reused), or another node has this address: choose another";
    NodeNotFound => "node_not_found", "no such node in the registry (GET /v1/gov/registry lists them), or it was removed";
    /// A removal that would leave fewer than three nodes.
    TooFewNodes => "too_few_nodes", "removing the node would leave fewer than three nodes: add its replacement first";
    /// Closing an account that a vote froze.
    AccountFrozen => "account_frozen", "the account is frozen by a governance vote: it cannot be closed until a vote unfreezes it";
    /// Ballots are kept whole, so their bodies are bounded.
    BallotTooLarge => "ballot_too_large", "a ballot's signed body is at most 1024 bytes: send {\"vote\": ..., \"digest\": ...} without padding";
    /// An organization's own revocations are bounded.
    TooManyRevocations => "too_many_revocations", "this organization has revoked as many of its certificates itself as it may (1024): further revocations need a proposal and a vote (gov propose revoke)";
}

/// `Ok` if `condition` holds, else `rejection`: one line per check.
pub(super) fn ensure(condition: bool, rejection: Rejection) -> Result<(), Rejection> {
    if condition {
        Ok(())
    } else {
        Err(rejection)
    }
}
