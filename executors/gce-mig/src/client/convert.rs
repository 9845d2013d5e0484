//! From SDK models and errors to the executor's narrow types: which fields are read, how a
//! failure is classified. Pure functions, so the wire shapes are tested without a server.

use super::*;
use crate::target::{last_segment, zone_of_url, GroupPath, Location};
use chrono::{DateTime, FixedOffset};
use google_cloud_compute_v1::model;
use google_cloud_gax::error::rpc::{Code, StatusDetails};
use std::time::Duration;

const MAX_MESSAGE: usize = 300;

pub(super) fn shorten(s: &str) -> String {
    let s = s.trim();
    if s.chars().count() <= MAX_MESSAGE {
        return s.to_string();
    }
    let cut: String = s.chars().take(MAX_MESSAGE).collect();
    format!("{cut}…")
}

/// Classifies an SDK error by HTTP status and ErrorInfo reason, falling back to the gRPC-style
/// code only when no HTTP status is known.
pub(crate) fn classify(err: &google_cloud_gax::error::Error) -> ApiError {
    let http_status = err.http_status_code();
    let reason = err.status().and_then(|s| {
        s.details.iter().find_map(|d| match d {
            StatusDetails::ErrorInfo(info) if !info.reason.is_empty() => Some(info.reason.clone()),
            _ => None,
        })
    });
    let retry_after = err
        .http_headers()
        .and_then(|h| h.get("retry-after"))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let message = match err.status() {
        Some(s) if !s.message.is_empty() => shorten(&s.message),
        _ => shorten(&err.to_string()),
    };
    let rate_limited = reason.as_deref().is_some_and(|r| {
        matches!(
            r,
            "rateLimitExceeded"
                | "userRateLimitExceeded"
                | "RATE_LIMIT_EXCEEDED"
                | "RATE_LIMIT_EXCEEDED_PER_USER"
        )
    });
    let kind = if err.is_authentication() {
        ApiErrorKind::Credentials
    } else if err.is_timeout() {
        ApiErrorKind::Timeout
    } else if let Some(code) = http_status {
        match code {
            401 => ApiErrorKind::Credentials,
            403 if rate_limited => ApiErrorKind::Throttled,
            403 => ApiErrorKind::PermissionDenied,
            404 => ApiErrorKind::NotFound,
            408 => ApiErrorKind::Timeout,
            412 => ApiErrorKind::Conflict,
            429 => ApiErrorKind::Throttled,
            500..=599 => ApiErrorKind::Unavailable,
            _ if rate_limited => ApiErrorKind::Throttled,
            _ => ApiErrorKind::Rejected,
        }
    } else if let Some(status) = err.status() {
        match status.code {
            Code::NotFound => ApiErrorKind::NotFound,
            Code::PermissionDenied => ApiErrorKind::PermissionDenied,
            Code::ResourceExhausted => ApiErrorKind::Throttled,
            Code::Unavailable | Code::Internal => ApiErrorKind::Unavailable,
            Code::Unauthenticated => ApiErrorKind::Credentials,
            Code::DeadlineExceeded => ApiErrorKind::Timeout,
            _ => ApiErrorKind::Rejected,
        }
    } else if err.is_connect() || err.is_io() || err.is_transport() {
        ApiErrorKind::Unavailable
    } else {
        ApiErrorKind::Rejected
    };
    ApiError {
        kind,
        http_status,
        reason,
        message,
        retry_after,
    }
}

pub(super) fn group_info(g: &model::InstanceGroupManager) -> GroupInfo {
    let instances_present = g.current_actions.as_ref().map(|a| {
        [
            a.abandoning,
            a.creating,
            a.creating_without_retries,
            a.deleting,
            a.none,
            a.recreating,
            a.refreshing,
            a.restarting,
            a.resuming,
            a.starting,
            a.stopping,
            a.suspending,
            a.verifying,
        ]
        .iter()
        .map(|v| v.unwrap_or(0).max(0) as u32)
        .sum()
    });
    let mut zones: Vec<String> = g
        .distribution_policy
        .as_ref()
        .map(|d| {
            d.zones
                .iter()
                .filter_map(|z| z.zone.as_deref().map(|u| last_segment(u).to_string()))
                .collect()
        })
        .unwrap_or_default();
    if let Some(z) = g.zone.as_deref() {
        zones.push(last_segment(z).to_string());
    }
    zones.sort();
    zones.dedup();
    let creating = g.current_actions.as_ref().map_or(0, |a| {
        (a.creating.unwrap_or(0).max(0) + a.creating_without_retries.unwrap_or(0).max(0)) as u32
    });
    let regional = g.region.as_deref().is_some_and(|r| !r.is_empty());
    let redistribution = regional.then(|| {
        g.update_policy
            .as_ref()
            .and_then(|u| u.instance_redistribution_type.as_ref())
            .and_then(|t| t.name().map(str::to_string))
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| "PROACTIVE".into())
    });
    let target_shape = regional.then(|| {
        g.distribution_policy
            .as_ref()
            .and_then(|d| d.target_shape.as_ref())
            .and_then(|t| t.name().map(str::to_string))
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| "EVEN".into())
    });
    GroupInfo {
        target_size: g.target_size.unwrap_or(0).max(0) as u32,
        instances_present,
        zones,
        creating,
        autoscaler: g
            .status
            .as_ref()
            .and_then(|s| s.autoscaler.clone())
            .filter(|a| !a.trim().is_empty()),
        redistribution,
        target_shape,
        target_suspended_size: g.target_suspended_size.unwrap_or(0).max(0) as u32,
        target_stopped_size: g.target_stopped_size.unwrap_or(0).max(0) as u32,
        standby_mode: g
            .standby_policy
            .as_ref()
            .and_then(|p| p.mode.as_ref())
            .and_then(|m| m.name().map(str::to_string))
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| "MANUAL".into()),
    }
}

/// One `listErrors` item; `None` when it carries no error at all.
pub(super) fn group_error(e: &model::InstanceManagedByIgmError) -> Option<GroupError> {
    let err = e.error.as_ref()?;
    let details = e.instance_action_details.as_ref();
    Some(GroupError {
        instance: details.and_then(|d| d.instance.clone()),
        action: details
            .and_then(|d| d.action.as_ref())
            .and_then(|a| a.name().map(str::to_string)),
        error: CloudError {
            code: err.code.clone().unwrap_or_default(),
            message: shorten(err.message.as_deref().unwrap_or("")),
        },
        at: timestamp(e.timestamp.as_deref()),
    })
}

pub(super) fn operation_info(op: model::Operation) -> OperationInfo {
    let status = op
        .status
        .as_ref()
        .and_then(|s| s.name().map(str::to_string))
        .unwrap_or_else(|| "PENDING".into());
    let first = op.error.as_ref().and_then(|e| e.errors.first());
    let error = if first.is_some() || op.http_error_status_code.is_some_and(|c| c >= 400) {
        Some(OperationFailure {
            http_status: op.http_error_status_code,
            code: first.and_then(|e| e.code.clone()),
            message: shorten(
                first
                    .and_then(|e| e.message.as_deref())
                    .or(op.http_error_message.as_deref())
                    .unwrap_or("no message"),
            ),
        })
    } else {
        None
    };
    OperationInfo {
        name: op.name.unwrap_or_default(),
        status,
        error,
    }
}

pub(super) fn managed_info(
    group: &GroupPath,
    mi: &model::ManagedInstance,
) -> Option<ManagedInstanceInfo> {
    let url = mi.instance.clone()?;
    let name = mi
        .name
        .clone()
        .unwrap_or_else(|| last_segment(&url).to_string());
    let zone = zone_of_url(&url).or_else(|| match &group.location {
        Location::Zone(z) => Some(z.clone()),
        Location::Region(_) => None,
    })?;
    Some(ManagedInstanceInfo {
        name,
        url,
        zone,
        current_action: mi
            .current_action
            .as_ref()
            .and_then(|a| a.name().map(str::to_string))
            .unwrap_or_else(|| "NONE".into()),
        instance_status: mi
            .instance_status
            .as_ref()
            .and_then(|s| s.name().map(str::to_string)),
        last_attempt_errors: mi
            .last_attempt
            .as_ref()
            .and_then(|a| a.errors.as_ref())
            .map(|e| {
                e.errors
                    .iter()
                    .map(|x| CloudError {
                        code: x.code.clone().unwrap_or_default(),
                        message: shorten(x.message.as_deref().unwrap_or("")),
                    })
                    .collect()
            })
            .unwrap_or_default(),
    })
}

fn timestamp(t: Option<&str>) -> Option<DateTime<FixedOffset>> {
    t.and_then(|t| DateTime::parse_from_rfc3339(t).ok())
}

pub(super) fn instance_info(i: &model::Instance) -> Option<InstanceInfo> {
    Some(InstanceInfo {
        name: i.name.clone()?,
        created: timestamp(i.creation_timestamp.as_deref()),
        labels: i
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        status: i.status.as_ref().and_then(|s| s.name().map(str::to_string)),
        last_start: timestamp(i.last_start_timestamp.as_deref()),
        last_stop: timestamp(i.last_stop_timestamp.as_deref()),
        hostname: i.hostname.clone().filter(|h| !h.is_empty()),
        network_ips: i
            .network_interfaces
            .iter()
            .filter_map(|n| n.network_ip.clone())
            .collect(),
        created_by: i.metadata.as_ref().and_then(|m| {
            m.items
                .iter()
                .find(|it| it.key.as_deref() == Some("created-by"))
                .and_then(|it| it.value.clone())
        }),
        metadata: i
            .metadata
            .as_ref()
            .map(|m| {
                m.items
                    .iter()
                    .filter_map(|it| Some((it.key.clone()?, it.value.clone().unwrap_or_default())))
                    .collect()
            })
            .unwrap_or_default(),
        metadata_fingerprint: i
            .metadata
            .as_ref()
            .and_then(|m| m.fingerprint.as_ref())
            .map(|f| f.to_vec()),
    })
}

pub(super) fn zone_operation_info(op: &model::Operation) -> ZoneOperationInfo {
    ZoneOperationInfo {
        operation_type: op.operation_type.clone().unwrap_or_default(),
        target: op.target_link.clone().unwrap_or_default(),
        status: op
            .status
            .as_ref()
            .and_then(|s| s.name().map(str::to_string))
            .unwrap_or_else(|| "PENDING".into()),
        inserted: timestamp(op.insert_time.as_deref()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use google_cloud_gax::error::rpc::Status;
    use google_cloud_gax::error::Error;

    fn compute_error(code: u16, reason: &str) -> Error {
        let body = format!(
            r#"{{"error":{{"code":{code},"message":"msg {code}","errors":[{{"message":"msg {code}","domain":"global","reason":"{reason}"}}]}}}}"#
        );
        let bytes = Bytes::from(body);
        // What gaxi's `to_http_error` does with a Compute error body.
        let status = Status::try_from(&bytes).unwrap();
        assert_eq!(
            status.code,
            Code::Unknown,
            "Compute errors carry no gRPC status"
        );
        Error::service_with_http_metadata(status, Some(code), Some(http::HeaderMap::new()))
    }

    #[test]
    fn classification_uses_http_status_and_reason() {
        let k = |c, r| classify(&compute_error(c, r)).kind;
        assert_eq!(k(404, "notFound"), ApiErrorKind::NotFound);
        assert_eq!(k(403, "forbidden"), ApiErrorKind::PermissionDenied);
        assert_eq!(k(403, "rateLimitExceeded"), ApiErrorKind::Throttled);
        assert_eq!(k(429, "rateLimitExceeded"), ApiErrorKind::Throttled);
        assert_eq!(k(503, "backendError"), ApiErrorKind::Unavailable);
        assert_eq!(k(500, "backendError"), ApiErrorKind::Unavailable);
        assert_eq!(k(401, "authError"), ApiErrorKind::Credentials);
        assert_eq!(k(400, "invalid"), ApiErrorKind::Rejected);
        assert_eq!(k(412, "conditionNotMet"), ApiErrorKind::Conflict);
        let e = classify(&compute_error(404, "notFound"));
        assert_eq!(e.reason.as_deref(), Some("notFound"));
        assert_eq!(e.detail(), "HTTP 404 notFound: msg 404");
        assert!(!e.retryable());
        assert!(classify(&compute_error(429, "rateLimitExceeded")).retryable());
    }

    #[test]
    fn non_json_error_bodies_still_classify() {
        let e = Error::http(
            502,
            http::HeaderMap::new(),
            Bytes::from_static(b"<html>bad gateway</html>"),
        );
        let a = classify(&e);
        assert_eq!(a.kind, ApiErrorKind::Unavailable);
        assert_eq!(a.http_status, Some(502));
        let mut h = http::HeaderMap::new();
        h.insert("retry-after", http::HeaderValue::from_static("3"));
        let a = classify(&Error::http(429, h, Bytes::from_static(b"slow down")));
        assert_eq!(a.kind, ApiErrorKind::Throttled);
        assert_eq!(a.retry_after, Some(Duration::from_secs(3)));
    }

    #[test]
    fn done_operation_with_error_is_a_failure() {
        let json = serde_json::json!({
            "name": "operation-1", "status": "DONE", "httpErrorStatusCode": 403,
            "httpErrorMessage": "FORBIDDEN",
            "error": {"errors": [{"code": "QUOTA_EXCEEDED", "message": "Quota 'CPUS' exceeded."}]}
        });
        let op: model::Operation = serde_json::from_value(json).unwrap();
        let info = operation_info(op);
        assert!(info.done());
        let f = info.error.unwrap();
        assert_eq!(f.code.as_deref(), Some("QUOTA_EXCEEDED"));
        assert_eq!(f.http_status, Some(403));
        assert_eq!(f.message, "Quota 'CPUS' exceeded.");

        let ok: model::Operation =
            serde_json::from_value(serde_json::json!({"name": "operation-2", "status": "RUNNING"}))
                .unwrap();
        let info = operation_info(ok);
        assert!(!info.done());
        assert!(info.error.is_none());
    }
}
