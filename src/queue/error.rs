//! The errors of this layer, in the vocabulary callers act on; the transport maps each to a
//! status (`api/status.rs`). A store error is logged here with its detail and becomes
//! `Unavailable` or a generic `Internal`, so no Redis text reaches a caller.

use tracing::warn;

use crate::store::StoreError;

/// What can go wrong, in the vocabulary callers act on. The transport maps each to a status.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    StaleLease(String),
    #[error("{0}")]
    TooLarge(String),
    /// The job or queue is not in a state that allows this (e.g. cancelling a finished job).
    #[error("{0}")]
    Precondition(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// A compare-and-set lost a race; nothing was written, the caller may retry.
    #[error("{0}")]
    Aborted(String),
    /// An event cursor points before what is still kept.
    #[error("{0}")]
    OutOfRange(String),
    #[error("redis is unavailable; retry later")]
    Unavailable,
    #[error("this server is shutting down; retry on another instance")]
    ShuttingDown,
    #[error("internal error")]
    Internal,
}

impl Error {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Invalid { field: field.into(), reason: reason.into() }
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(detail) => {
                warn!(%detail, "redis unavailable");
                Error::Unavailable
            }
            other => {
                tracing::error!(error = %other, "store error");
                Error::Internal
            }
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
