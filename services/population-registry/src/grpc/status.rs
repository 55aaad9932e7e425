//! The one place domain errors become gRPC statuses, with `google.rpc`
//! details (BadRequest field violations, ErrorInfo reasons). Internal errors
//! log their cause chain once and answer an opaque message.

use tonic::{Code, Status};

use crate::domain::birth::Violation;
use crate::domain::errors::{AuthError, IssueError, LookupError, ReissueError};
use service_kit::status::{invalid_argument, with_reason};

/// ErrorInfo domain of every reason below.
pub const DOMAIN: &str = "population.mps.gov.vn";

fn invalid(violations: Vec<Violation>) -> Status {
    invalid_argument(
        violations
            .into_iter()
            .map(|v| (v.field, v.description))
            .collect(),
    )
}

fn unexpected(cause: &anyhow::Error) -> Status {
    tracing::error!(error = format!("{cause:#}"), "internal error");
    Status::internal("internal error")
}

fn unavailable(message: &str) -> Status {
    tracing::warn!(error = message, "database unavailable");
    Status::unavailable("the registry cannot reach its database; retry with the same request_id")
}

fn exhausted() -> Status {
    with_reason(
        Code::ResourceExhausted,
        "no free number left for this province, century-sex and year",
        DOMAIN,
        "BUCKET_EXHAUSTED",
    )
}

fn key_reused() -> Status {
    with_reason(
        Code::AlreadyExists,
        "request_id was already used with different content",
        DOMAIN,
        "IDEMPOTENCY_KEY_REUSED",
    )
}

/// Status of a failed issuance.
pub fn issue(e: IssueError) -> Status {
    match e {
        IssueError::Invalid(v) => invalid(v),
        IssueError::IdempotencyKeyReused => key_reused(),
        IssueError::BucketExhausted => exhausted(),
        IssueError::Unavailable(m) => unavailable(&m),
        IssueError::Unexpected(cause) => unexpected(&cause),
    }
}

/// Status of a failed re-issue.
pub fn reissue(e: ReissueError) -> Status {
    match e {
        ReissueError::Invalid(v) => invalid(v),
        ReissueError::IdempotencyKeyReused => key_reused(),
        ReissueError::NotFound => with_reason(
            Code::NotFound,
            "no citizen holds this number",
            DOMAIN,
            "CITIZEN_NOT_FOUND",
        ),
        ReissueError::AlreadyCancelled => with_reason(
            Code::FailedPrecondition,
            "the number is no longer active",
            DOMAIN,
            "PERSONAL_ID_CANCELLED",
        ),
        ReissueError::NothingToReissue => with_reason(
            Code::FailedPrecondition,
            "the correction does not change the province, sex or year of birth the number encodes",
            DOMAIN,
            "NOTHING_TO_REISSUE",
        ),
        ReissueError::BucketExhausted => exhausted(),
        ReissueError::Unavailable(m) => unavailable(&m),
        ReissueError::Unexpected(cause) => unexpected(&cause),
    }
}

/// Status of a failed lookup.
pub fn lookup(e: LookupError) -> Status {
    match e {
        LookupError::Invalid(v) => invalid(v),
        LookupError::NotFound => with_reason(
            Code::NotFound,
            "no citizen matches",
            DOMAIN,
            "CITIZEN_NOT_FOUND",
        ),
        LookupError::Unavailable(m) => unavailable(&m),
        LookupError::Unexpected(cause) => unexpected(&cause),
    }
}

/// Status of a refused caller.
pub fn auth(e: AuthError) -> Status {
    match e {
        AuthError::MissingCertificate => with_reason(
            Code::Unauthenticated,
            "a client certificate is required",
            DOMAIN,
            "CLIENT_CERTIFICATE_MISSING",
        ),
        AuthError::NotAllowed => with_reason(
            Code::PermissionDenied,
            "the client certificate is not on the allow-list for this method",
            DOMAIN,
            "CALLER_NOT_ALLOWED",
        ),
    }
}

/// The `google.rpc.Status` a batch item carries for `status`.
pub fn to_rpc(status: &Status) -> contracts::google::rpc::Status {
    if !status.details().is_empty()
        && let Ok(decoded) =
            <contracts::google::rpc::Status as prost::Message>::decode(status.details())
    {
        return decoded;
    }
    contracts::google::rpc::Status {
        code: status.code() as i32,
        message: status.message().to_owned(),
        details: Vec::new(),
    }
}
