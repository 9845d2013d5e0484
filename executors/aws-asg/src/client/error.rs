//! Turning SDK failures into [`ApiError`]s of the right [`ErrorKind`].

use super::ApiError;
use autoscaler_executor::ErrorKind;
use aws_sdk_autoscaling::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use std::time::Duration;

const THROTTLING: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "EC2ThrottledException",
    "SlowDown",
    "PriorRequestNotComplete",
    "ResourceContention",
];

const CREDENTIALS: &[&str] = &[
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "ExpiredTokenException",
    "RequestExpired",
    "AuthFailure",
    "UnrecognizedClientException",
    "InvalidAccessKeyId",
    "IncompleteSignature",
    "MissingAuthenticationToken",
    "InvalidSignatureException",
];

const PERMISSION: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "UnauthorizedOperation",
    "UnauthorizedAccess",
    "OptInRequired",
];

/// Chooses an [`ErrorKind`] from a service answer: the code first (it is precise), the HTTP
/// status when the code is unknown.
pub fn classify(code: Option<&str>, status: u16, message: &str) -> ErrorKind {
    let code = code.unwrap_or("");
    if THROTTLING.contains(&code) || status == 429 {
        return ErrorKind::Throttled;
    }
    if CREDENTIALS.contains(&code) {
        return ErrorKind::Credentials;
    }
    if PERMISSION.contains(&code) {
        return ErrorKind::PermissionDenied;
    }
    let lower = message.to_ascii_lowercase();
    if code.ends_with("NotFound")
        || code.ends_with(".NotFound")
        || code == "ResourceNotFoundException"
        || (code == "ValidationError" && lower.contains("not found"))
    {
        return ErrorKind::NotFound;
    }
    if status >= 500
        || matches!(
            code,
            "InternalFailure" | "InternalError" | "ServiceUnavailable" | "Unavailable"
        )
    {
        return ErrorKind::Unavailable;
    }
    match status {
        401 => ErrorKind::Credentials,
        403 => ErrorKind::PermissionDenied,
        404 => ErrorKind::NotFound,
        _ => ErrorKind::Backend,
    }
}

/// The error and its sources, as `a: b: c`, without the Debug dump `DisplayErrorContext` adds:
/// one readable line for `autoscaling_status` readers and logs.
pub(crate) fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        let text = e.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = e.source();
    }
    // Some providers report over several lines (the credential chain lists each provider it
    // tried); a status line must stay one line.
    parts
        .join(": ")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn caused_by_credentials(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if e.downcast_ref::<aws_credential_types::provider::error::CredentialsError>()
            .is_some()
        {
            return true;
        }
        cur = e.source();
    }
    false
}

/// Turns an SDK failure into an [`ApiError`] naming the call; after the SDK's own retries,
/// so a throttle or outage here is one that persisted.
pub fn map_sdk_error<E>(
    call: &str,
    err: SdkError<E, HttpResponse>,
    request_timeout: Duration,
) -> ApiError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match &err {
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            let code = se.err().code().map(str::to_string);
            let msg = se.err().message().unwrap_or("no message");
            let request_id = se
                .err()
                .meta()
                .extra("aws_request_id")
                .map(|r| format!(", request id {r}"))
                .unwrap_or_default();
            ApiError {
                kind: classify(code.as_deref(), status, msg),
                message: format!(
                    "{call}: {}: {msg} (HTTP {status}{request_id})",
                    code.as_deref().unwrap_or("unknown error")
                ),
                code,
            }
        }
        SdkError::TimeoutError(_) => ApiError {
            kind: ErrorKind::Unavailable,
            code: None,
            message: format!(
                "{call}: no answer within {} s (request_timeout_seconds), after retries",
                request_timeout.as_secs()
            ),
        },
        SdkError::ResponseError(re) => ApiError {
            kind: if re.raw().status().is_server_error() {
                ErrorKind::Unavailable
            } else {
                ErrorKind::Backend
            },
            code: None,
            message: format!(
                "{call}: unreadable answer (HTTP {}): {}",
                re.raw().status().as_u16(),
                chain(&err)
            ),
        },
        SdkError::DispatchFailure(_) | SdkError::ConstructionFailure(_) => {
            if caused_by_credentials(&err) {
                ApiError {
                    kind: ErrorKind::Credentials,
                    code: None,
                    message: format!("{call}: no usable AWS credentials: {}", chain(&err)),
                }
            } else if matches!(err, SdkError::DispatchFailure(_)) {
                ApiError {
                    kind: ErrorKind::Unavailable,
                    code: None,
                    message: format!(
                        "{call}: endpoint unreachable, after retries: {}",
                        chain(&err)
                    ),
                }
            } else {
                ApiError {
                    kind: ErrorKind::Backend,
                    code: None,
                    message: format!("{call}: request could not be built: {}", chain(&err)),
                }
            }
        }
        _ => ApiError {
            kind: ErrorKind::Backend,
            code: None,
            message: format!("{call}: {}", chain(&err)),
        },
    }
}
