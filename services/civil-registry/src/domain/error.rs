//! What can go wrong in a call, as variants a caller can act on. `grpc/status.rs` maps each
//! to exactly one gRPC status.

/// Why a caller is not authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthFailure {
    /// No `authorization: Bearer` header.
    TokenMissing,
    /// A token that matches no account.
    TokenInvalid,
}

/// Why an authenticated caller may not do this.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denied {
    /// The account (or its unit) was revoked or deactivated.
    AccountRevoked,
    /// The target lies outside the caller's unit or jurisdiction.
    OutsideJurisdiction,
    /// The caller's role may not do this.
    RoleNotAllowed,
    /// A birth with a foreign element at a unit of the wrong level for the date.
    ForeignElementLevel,
}

/// The error of every operation of the birth register.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// No or unknown token.
    #[error("not authenticated: {0:?}")]
    Unauthenticated(AuthFailure),
    /// Authenticated but not allowed.
    #[error("permission denied: {0:?}")]
    PermissionDenied(Denied),
    /// Bad input: (field path, description) for every bad field.
    #[error("invalid argument")]
    InvalidArgument(Vec<(String, String)>),
    /// The idempotency key was used before with different content.
    #[error("idempotency key reused with different content")]
    IdempotencyKeyReused,
    /// The registration does not exist within the caller's jurisdiction.
    #[error("registration not found")]
    NotFound,
    /// The registration is in a state that cannot be corrected now.
    #[error("registration not correctable: {0}")]
    NotCorrectable(String),
    /// The correction changes nothing.
    #[error("nothing to correct")]
    NothingToCorrect,
    /// The database is unreachable or the service is shutting down.
    #[error("unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// A bug or an unexpected state.
    #[error("unexpected")]
    Unexpected(#[source] anyhow::Error),
}

impl RegistryError {
    /// One bad field.
    pub fn invalid(field: &str, description: impl Into<String>) -> Self {
        Self::InvalidArgument(vec![(field.to_owned(), description.into())])
    }
}
