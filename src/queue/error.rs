//! The errors of this layer, in the vocabulary callers act on; the transport maps each to a
//! status (`api/status.rs`). A store error is logged here with its detail and becomes
//! `Unavailable` or a generic `Internal`, so no Redis text reaches a caller.

use tracing::warn;

use crate::store::StoreError;

/// What can go wrong, in the vocabulary callers act on. Each message but those of `Full` and the
/// last three names the field at fault first (`field: ...`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field is malformed or out of range; nothing was written.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field's name as the caller sent it, with its place in a batch (`jobs[3].priority`).
        field: String,
        /// What the field must be.
        reason: String,
    },
    /// The job or session named does not exist (or is no longer retained).
    #[error("{0}")]
    NotFound(String),
    /// The lease token presented is not the job's current lease: it timed out, was re-delivered
    /// or the job finished. The job is unchanged.
    #[error("{0}")]
    StaleLease(String),
    /// A payload, result, state or batch is over its size limit.
    #[error("{0}")]
    TooLarge(String),
    /// The job or queue is not in a state that allows this (e.g. cancelling a finished job).
    #[error("{0}")]
    Precondition(String),
    /// A session of that name exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// A compare-and-set lost a race; nothing was written, the caller may retry.
    #[error("{0}")]
    Aborted(String),
    /// An event cursor points before what is still kept.
    #[error("{0}")]
    OutOfRange(String),
    /// Redis is out of memory, or the queue holds its cap of waiting jobs: an add (or a new
    /// session) was refused and nothing written; the caller may retry once workers drained it.
    #[error("{0}")]
    Full(String),
    /// Redis could not be reached or did not answer in time; the caller may retry.
    #[error("redis is unavailable; retry later")]
    Unavailable,
    /// This instance is stopping and takes no new work; the caller may retry on another one.
    #[error("this server is shutting down; retry on another instance")]
    ShuttingDown,
    /// Anything else; the detail went to the log, not to the caller.
    #[error("internal error")]
    Internal,
}

impl Error {
    /// An `Invalid` error: `field` is at fault, and `reason` says what it must be.
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
            // The rooms that add (intake, sessions) say how full through `memory.rs`.
            StoreError::OutOfMemory => Error::Full("Redis is full: it refused a write for lack of memory".into()),
            other => {
                tracing::error!(error = %other, "store error");
                Error::Internal
            }
        }
    }
}

/// The result of this layer's calls; the error is this layer's unless said otherwise.
pub type Result<T, E = Error> = std::result::Result<T, E>;
