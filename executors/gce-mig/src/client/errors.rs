//! What a failed call means for the pool: the shared [`ErrorKind`] (and so the status code the
//! engine records) and an operator's hint. One classifier for every call, next to the one
//! that reads the SDK's errors ([`super::classify`]), so no caller re-decides it.

use super::retry::Failed;
use super::{ApiErrorKind, OperationFailure};
use crate::target::GroupPath;
use autoscaler_executor::{ErrorKind, ExecutorError};

/// The pool's error for a call that failed for good while `doing` something to `group`.
pub(crate) fn api_error(
    pool: &str,
    doing: &str,
    group: &GroupPath,
    (e, attempts): Failed,
) -> ExecutorError {
    let kind = match e.kind {
        ApiErrorKind::NotFound => ErrorKind::NotFound,
        ApiErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
        ApiErrorKind::Throttled => ErrorKind::Throttled,
        ApiErrorKind::Unavailable => ErrorKind::Unavailable,
        ApiErrorKind::Credentials => ErrorKind::Credentials,
        ApiErrorKind::Timeout => ErrorKind::Timeout,
        ApiErrorKind::Rejected | ApiErrorKind::Conflict => ErrorKind::Backend,
    };
    let tries = if attempts > 1 {
        format!(" (after {attempts} attempts)")
    } else {
        String::new()
    };
    let hint = match e.kind {
        ApiErrorKind::NotFound => "; check the pool's executor_command names an existing group",
        ApiErrorKind::PermissionDenied => {
            "; the account needs roles/compute.instanceAdmin.v1 on the project (see docs/gce-mig.md)"
        }
        ApiErrorKind::Credentials => "; check the GCE credentials",
        _ => "",
    };
    ExecutorError::new(
        pool,
        kind,
        format!("{doing} {group}: {}{tries}{hint}", e.detail()),
    )
}

/// The kind of a DONE operation's failure: Compute reports it in the operation, not as an
/// HTTP error, so it is classified from the operation's HTTP status and error code.
pub(crate) fn operation_error_kind(f: &OperationFailure) -> ErrorKind {
    match (f.http_status, f.code.as_deref()) {
        (_, Some("RATE_LIMIT_EXCEEDED")) | (Some(429), _) => ErrorKind::Throttled,
        (Some(403), _) => ErrorKind::PermissionDenied,
        (Some(404), _) | (_, Some("RESOURCE_NOT_FOUND")) => ErrorKind::NotFound,
        (Some(s), _) if s >= 500 => ErrorKind::Unavailable,
        _ => ErrorKind::Backend,
    }
}
