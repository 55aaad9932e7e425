//! The one map from domain errors to gRPC statuses (exhaustive: a new variant does not
//! compile until it has a status). Internal errors are logged once with their cause chain
//! and answered with an opaque message.

use tonic::{Code, Status};

use crate::domain::error::{AuthFailure, Denied, RegistryError};

/// `ErrorInfo.domain` of every refusal.
pub const ERROR_DOMAIN: &str = "civilstatus.moj.gov.vn";

fn reason(code: Code, message: &str, reason: &str) -> Status {
    service_kit::status::with_reason(code, message, ERROR_DOMAIN, reason)
}

/// The status answering `error`.
pub fn to_status(error: RegistryError) -> Status {
    match error {
        RegistryError::Unauthenticated(AuthFailure::TokenMissing) => reason(
            Code::Unauthenticated,
            "an `authorization: Bearer <token>` header is required",
            "TOKEN_MISSING",
        ),
        RegistryError::Unauthenticated(AuthFailure::TokenInvalid) => reason(
            Code::Unauthenticated,
            "the token is not valid",
            "TOKEN_INVALID",
        ),
        RegistryError::PermissionDenied(denied) => {
            let (message, r) = match denied {
                Denied::AccountRevoked => ("the account or its unit is revoked", "ACCOUNT_REVOKED"),
                Denied::OutsideJurisdiction => (
                    "outside the caller's unit or jurisdiction",
                    "OUTSIDE_JURISDICTION",
                ),
                Denied::RoleNotAllowed => ("the caller's role may not do this", "ROLE_NOT_ALLOWED"),
                Denied::ForeignElementLevel => (
                    "a birth with a foreign element is registered by a district-level unit before 2025-07-01 and by a commune from then on",
                    "FOREIGN_ELEMENT_LEVEL",
                ),
            };
            reason(Code::PermissionDenied, message, r)
        }
        RegistryError::InvalidArgument(violations) => {
            service_kit::status::invalid_argument(violations)
        }
        RegistryError::IdempotencyKeyReused => reason(
            Code::AlreadyExists,
            "request_id was used before with different content",
            "IDEMPOTENCY_KEY_REUSED",
        ),
        RegistryError::NotFound => reason(
            Code::NotFound,
            "registration not found",
            "REGISTRATION_NOT_FOUND",
        ),
        RegistryError::NotCorrectable(why) => reason(
            Code::FailedPrecondition,
            &why,
            "REGISTRATION_NOT_CORRECTABLE",
        ),
        RegistryError::NothingToCorrect => reason(
            Code::FailedPrecondition,
            "the correction changes nothing",
            "NOTHING_TO_CORRECT",
        ),
        RegistryError::Unavailable(e) => {
            tracing::warn!(error = format!("{e:#}"), "database unavailable");
            Status::unavailable(
                "the registry cannot reach its database; retry with the same request_id",
            )
        }
        RegistryError::Unexpected(e) => {
            tracing::error!(error = format!("{e:#}"), "unexpected error");
            Status::internal("internal error")
        }
    }
}
