//! Internal errors. A ledger rejection is not an error here: it is a
//! deterministic [`crate::ledger::Rejection`] returned to the client. These are
//! the failures of the machine around it: bad configuration at start, storage
//! and I/O failures (fatal to the node), TLS set-up.

/// Errors of the node's own machinery.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("config: {0}")]
    Config(String),
    #[error("tls: {0}")]
    Tls(String),
    /// A failure of the node's store (log or state), with its source.
    #[error("storage: {0}")]
    Storage(#[source] Box<crate::raft::StorageError>),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("raft: {0}")]
    Raft(String),
    #[error("{0}")]
    Other(String),
}

impl From<crate::raft::StorageError> for Error {
    fn from(e: crate::raft::StorageError) -> Self {
        Self::Storage(Box::new(e))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
