//! Generic `google.rpc` error helpers on top of tonic-types: `BadRequest` field violations
//! for invalid input and `ErrorInfo` reasons clients can branch on.

use std::collections::HashMap;

use tonic_types::{ErrorDetails, FieldViolation, StatusExt as _};

/// `INVALID_ARGUMENT` with one `google.rpc.BadRequest` field violation per
/// `(field path, description)`.
pub fn invalid_argument(violations: Vec<(String, String)>) -> tonic::Status {
    let message = match violations.as_slice() {
        [] => "invalid request".to_string(),
        [(field, description)] => format!("invalid {field}: {description}"),
        [(field, description), rest @ ..] => {
            format!("invalid {field}: {description} (and {} more)", rest.len())
        }
    };
    let violations: Vec<FieldViolation> = violations
        .into_iter()
        .map(|(field, description)| FieldViolation::new(field, description))
        .collect();
    tonic::Status::with_error_details(
        tonic::Code::InvalidArgument,
        message,
        ErrorDetails::with_bad_request(violations),
    )
}

/// A status with a `google.rpc.ErrorInfo` carrying a machine-readable `reason`
/// (UPPER_SNAKE_CASE) within `domain` (e.g. `population.mps.gov`).
pub fn with_reason(
    code: tonic::Code,
    message: impl Into<String>,
    domain: &str,
    reason: &str,
) -> tonic::Status {
    tonic::Status::with_error_details(
        code,
        message,
        ErrorDetails::with_error_info(reason, domain, HashMap::new()),
    )
}

/// The `ErrorInfo.reason` of a status, if it carries one.
pub fn reason_of(status: &tonic::Status) -> Option<String> {
    status.get_details_error_info().map(|info| info.reason)
}

/// The `BadRequest` field violations of a status as `(field path, description)`.
pub fn field_violations_of(status: &tonic::Status) -> Vec<(String, String)> {
    status
        .get_details_bad_request()
        .map(|bad_request| {
            bad_request
                .field_violations
                .into_iter()
                .map(|violation| (violation.field, violation.description))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_violations_survive_a_round_trip_through_the_status_details() {
        let status = invalid_argument(vec![
            ("child.name".into(), "must not be empty".into()),
            ("child.date_of_birth".into(), "is in the future".into()),
        ]);

        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            field_violations_of(&status),
            vec![
                ("child.name".to_string(), "must not be empty".to_string()),
                (
                    "child.date_of_birth".to_string(),
                    "is in the future".to_string()
                ),
            ]
        );
        assert_eq!(reason_of(&status), None);
    }

    #[test]
    fn an_error_reason_survives_a_round_trip_through_the_status_details() {
        let status = with_reason(
            tonic::Code::FailedPrecondition,
            "not eligible",
            "example.test",
            "NOT_ELIGIBLE",
        );

        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert_eq!(status.message(), "not eligible");
        assert_eq!(reason_of(&status).as_deref(), Some("NOT_ELIGIBLE"));
        assert!(field_violations_of(&status).is_empty());
    }
}
