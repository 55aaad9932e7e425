//! One error enum per operation, each variant something a caller can act on.

use super::birth::Violation;

/// Failures of the storage layer, before they are given an operation's meaning.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached in time: retry later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Anything else; logged once, answered opaquely.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// Why a number was not issued.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// A field is bad.
    #[error("invalid request")]
    Invalid(Vec<Violation>),
    /// The key was used before with different content.
    #[error("request_id was already used with different content")]
    IdempotencyKeyReused,
    /// The record's bucket has no free number left.
    #[error("no free number left for this province, century-sex and year")]
    BucketExhausted,
    /// The database cannot be reached: retry with the same request_id.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A bug or corruption.
    #[error(transparent)]
    Unexpected(anyhow::Error),
}

impl From<StoreError> for IssueError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(m) => Self::Unavailable(m),
            StoreError::Unexpected(e) => Self::Unexpected(e),
        }
    }
}

/// Why a number was not re-issued.
#[derive(Debug, thiserror::Error)]
pub enum ReissueError {
    /// A field is bad.
    #[error("invalid request")]
    Invalid(Vec<Violation>),
    /// The key was used before with different content.
    #[error("request_id was already used with different content")]
    IdempotencyKeyReused,
    /// No citizen holds the number.
    #[error("no citizen holds this number")]
    NotFound,
    /// The number is already cancelled.
    #[error("the number is no longer active")]
    AlreadyCancelled,
    /// The correction leaves province, century-sex and year unchanged.
    #[error("the correction does not change what the number encodes")]
    NothingToReissue,
    /// The new bucket has no free number left.
    #[error("no free number left for this province, century-sex and year")]
    BucketExhausted,
    /// The database cannot be reached.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A bug or corruption.
    #[error(transparent)]
    Unexpected(anyhow::Error),
}

impl From<StoreError> for ReissueError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(m) => Self::Unavailable(m),
            StoreError::Unexpected(e) => Self::Unexpected(e),
        }
    }
}

/// Why a lookup (citizen, registration, statistics, listing) failed.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// A field is bad.
    #[error("invalid request")]
    Invalid(Vec<Violation>),
    /// Nothing matches.
    #[error("no citizen matches")]
    NotFound,
    /// The database cannot be reached.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A bug or corruption.
    #[error(transparent)]
    Unexpected(anyhow::Error),
}

impl From<StoreError> for LookupError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(m) => Self::Unavailable(m),
            StoreError::Unexpected(e) => Self::Unexpected(e),
        }
    }
}

/// Why a caller was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No verified client certificate.
    #[error("a client certificate is required")]
    MissingCertificate,
    /// The certificate's identity is not on the role's allow-list.
    #[error("caller is not allowed to call this method")]
    NotAllowed,
}
