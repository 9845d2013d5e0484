//! The few Compute Engine calls this executor makes, behind a narrow trait, and their
//! implementation on the official Google Cloud Rust SDK.
//!
//! The trait exists so the scaling logic reads as logic (no SDK builders in it) and so every
//! call goes through one retry loop and one error classifier. The SDK's own retry loop is
//! switched off: it retries only idempotent GETs and would sit a minute on a transient
//! credentials error, while here mutating calls carry a request id and are safe to retry.

use crate::config::{CredentialsSource, Resolved};
use crate::target::{last_segment, zone_of_url, GroupPath, Location};
use crate::GceMigError;
use async_trait::async_trait;
use chrono::{DateTime, FixedOffset};
use google_cloud_auth::credentials::Credentials;
use google_cloud_compute_v1::client::{
    InstanceGroupManagers, Instances, RegionInstanceGroupManagers, ZoneOperations,
};
use google_cloud_compute_v1::model;
use google_cloud_gax::error::rpc::{Code, StatusDetails};
use google_cloud_gax::retry_policy::NeverRetry;
use std::collections::BTreeMap;
use std::time::Duration;

/// What a `get` tells about a group: enough to decide, nothing more.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupInfo {
    /// The group's target size in instances (booting ones included).
    pub target_size: u32,
    /// Instances that exist in any state (from `currentActions`), for [`crate::Executor::status`].
    pub instances_present: Option<u32>,
    /// Zones the group places instances in (a zonal group's own zone; a regional group's
    /// `distributionPolicy`), where the audit looks for tagged instances.
    pub zones: Vec<String>,
}

/// One entry of `listManagedInstances`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManagedInstanceInfo {
    /// Instance name (also the default hostname of its worker).
    pub name: String,
    /// The instance URL, as `deleteInstances` wants it.
    pub url: String,
    /// Zone the instance lives in (regional groups span several).
    pub zone: String,
    /// `currentAction`: NONE, CREATING, DELETING, …
    pub current_action: String,
    /// `instanceStatus` (absent while the VM does not exist yet).
    pub instance_status: Option<String>,
}

/// The parts of an instance resource scale-in needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceInfo {
    /// Instance name.
    pub name: String,
    /// `creationTimestamp`, to delete the oldest idle instances first.
    pub created: Option<DateTime<FixedOffset>>,
    /// GCE labels, to check `vespene_worker` / `vespene_pool`.
    pub labels: BTreeMap<String, String>,
    /// `status` (PROVISIONING, STAGING, RUNNING, STOPPING, TERMINATED, …), for the audit.
    pub status: Option<String>,
    /// `lastStartTimestamp`: since when a RUNNING instance has been up.
    pub last_start: Option<DateTime<FixedOffset>>,
    /// `lastStopTimestamp`: since when a stopped instance has been down.
    pub last_stop: Option<DateTime<FixedOffset>>,
    /// `hostname`, when the instance was given a custom one.
    pub hostname: Option<String>,
    /// `networkInterfaces[].networkIP`: names a worker may report as its hostname.
    pub network_ips: Vec<String>,
    /// Metadata `created-by`: the group that made the instance, even once it left the group.
    pub created_by: Option<String>,
}

/// The parts of a zone operation the audit needs to date an instance deletion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZoneOperationInfo {
    /// `operationType` (`delete`, `insert`, …).
    pub operation_type: String,
    /// `targetLink`: the instance the operation acts on.
    pub target: String,
    /// PENDING, RUNNING or DONE.
    pub status: String,
    /// `insertTime`: when the operation was requested.
    pub inserted: Option<DateTime<FixedOffset>>,
}

/// A long-running operation as far as waiting for it goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperationInfo {
    /// Operation name, to poll it.
    pub name: String,
    /// PENDING, RUNNING or DONE.
    pub status: String,
    /// Set when a DONE operation failed: the SDK hands such an operation back as `Ok`.
    pub error: Option<OperationFailure>,
}

impl OperationInfo {
    /// True once Compute says DONE (whether it succeeded or not).
    pub fn done(&self) -> bool {
        self.status == "DONE"
    }
}

/// Why a DONE operation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperationFailure {
    /// `httpErrorStatusCode`, when present.
    pub http_status: Option<i32>,
    /// First `error.errors[].code` (e.g. `QUOTA_EXCEEDED`).
    pub code: Option<String>,
    /// First `error.errors[].message`, or `httpErrorMessage`.
    pub message: String,
}

/// One page of a list call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T> {
    /// The items on this page.
    pub items: Vec<T>,
    /// Token for the next page; `None` on the last page.
    pub next_page_token: Option<String>,
}

/// How a failed call is classified: by HTTP status and ErrorInfo reason first, because Compute
/// errors carry no gRPC status string and the SDK reports them with code `Unknown`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiErrorKind {
    /// 404.
    NotFound,
    /// 403 other than rate limiting.
    PermissionDenied,
    /// 429, or 403 with reason `rateLimitExceeded` / `userRateLimitExceeded`.
    Throttled,
    /// 5xx, connection refused/reset, broken transport.
    Unavailable,
    /// No token could be made, or 401.
    Credentials,
    /// An attempt outlived `request_timeout_secs`.
    Timeout,
    /// 4xx that retrying will not fix (400, 409, 412, …), or an unreadable response.
    Rejected,
}

/// A failed Compute call, with what a retry decision and an operator need and nothing secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// Classification.
    pub kind: ApiErrorKind,
    /// HTTP status, when a response arrived.
    pub http_status: Option<u16>,
    /// First ErrorInfo / `errors[].reason` (`notFound`, `rateLimitExceeded`, …).
    pub reason: Option<String>,
    /// Compute's message (or the transport's), shortened.
    pub message: String,
    /// `Retry-After`, when the server sent one.
    pub retry_after: Option<Duration>,
}

impl ApiError {
    /// Whether trying again can help (and, for mutating calls, is safe: they carry a request id).
    pub fn retryable(&self) -> bool {
        matches!(
            self.kind,
            ApiErrorKind::Throttled | ApiErrorKind::Unavailable | ApiErrorKind::Timeout
        )
    }

    /// `HTTP 404 notFound: message` style detail for error messages.
    pub fn detail(&self) -> String {
        let mut out = String::new();
        if let Some(s) = self.http_status {
            out.push_str(&format!("HTTP {s}"));
        }
        if let Some(r) = &self.reason {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(r);
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&self.message);
        out
    }
}

/// The Compute calls this executor makes. Pagination is per page so the retry loop wraps each
/// request, not a whole listing.
#[async_trait]
pub trait ComputeApi: Send + Sync {
    /// `instanceGroupManagers.get` / `regionInstanceGroupManagers.get`.
    async fn get_group(&self, group: &GroupPath) -> Result<GroupInfo, ApiError>;
    /// `…/resize?size=N&requestId=…`.
    async fn resize(
        &self,
        group: &GroupPath,
        size: u32,
        request_id: &str,
    ) -> Result<OperationInfo, ApiError>;
    /// `…/deleteInstances?requestId=…` with exactly these instance URLs.
    async fn delete_instances(
        &self,
        group: &GroupPath,
        instance_urls: &[String],
        request_id: &str,
    ) -> Result<OperationInfo, ApiError>;
    /// `zoneOperations.get` / `regionOperations.get` for an operation on `group`.
    async fn get_operation(
        &self,
        group: &GroupPath,
        operation: &str,
    ) -> Result<OperationInfo, ApiError>;
    /// One page of `…/listManagedInstances`.
    async fn list_managed_instances(
        &self,
        group: &GroupPath,
        page_token: Option<&str>,
    ) -> Result<Page<ManagedInstanceInfo>, ApiError>;
    /// One page of `instances.list` in `zone`, narrowed by a Compute filter expression.
    async fn list_instances(
        &self,
        project: &str,
        zone: &str,
        filter: &str,
        page_token: Option<&str>,
    ) -> Result<Page<InstanceInfo>, ApiError>;
    /// One page of `zoneOperations.list` in `zone`, narrowed by a Compute filter expression:
    /// the audit dates instance deletions by their operation's `insertTime`.
    async fn list_zone_operations(
        &self,
        project: &str,
        zone: &str,
        filter: &str,
        page_token: Option<&str>,
    ) -> Result<Page<ZoneOperationInfo>, ApiError>;
}

/// [`ComputeApi`] on `google-cloud-compute-v1`.
pub struct SdkCompute {
    zonal: InstanceGroupManagers,
    regional: RegionInstanceGroupManagers,
    instances: Instances,
    zone_operations: ZoneOperations,
    page_size: u32,
}

impl SdkCompute {
    /// Builds the three SDK clients on one set of credentials, with the SDK's retries off (the
    /// executor's retry loop is the only one) and a per-attempt timeout.
    pub(crate) async fn new(resolved: &Resolved) -> Result<SdkCompute, GceMigError> {
        let credentials = build_credentials(resolved).await?;
        let attempt_timeout = Duration::from_secs(resolved.config.request_timeout_secs);
        let endpoint_desc = resolved
            .endpoint
            .clone()
            .unwrap_or_else(|| "https://compute.googleapis.com".into());
        let client_err = |e: google_cloud_gax::client_builder::Error| GceMigError::Client {
            endpoint: endpoint_desc.clone(),
            message: e.to_string(),
        };

        macro_rules! build {
            ($client:ty) => {{
                let mut b = <$client>::builder()
                    .with_credentials(credentials.clone())
                    .with_retry_policy(NeverRetry)
                    .with_attempt_timeout(attempt_timeout);
                if let Some(e) = &resolved.endpoint {
                    b = b.with_endpoint(e.clone());
                }
                b.build().await.map_err(client_err)?
            }};
        }
        Ok(SdkCompute {
            zonal: build!(InstanceGroupManagers),
            regional: build!(RegionInstanceGroupManagers),
            instances: build!(Instances),
            zone_operations: build!(ZoneOperations),
            page_size: resolved.config.page_size,
        })
    }
}

/// Makes the credentials and proves they yield a token within `credentials_timeout_secs`, so a
/// machine without credentials is told so at start-up, in seconds.
async fn build_credentials(resolved: &Resolved) -> Result<Credentials, GceMigError> {
    use google_cloud_auth::credentials::{anonymous, mds, service_account, Builder};
    let cred_err = |message: String| GceMigError::Credentials {
        origin: resolved.credentials.describe(),
        message,
    };
    let creds = match &resolved.credentials {
        CredentialsSource::Anonymous => return Ok(anonymous::Builder::new().build()),
        CredentialsSource::KeyFile(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| cred_err(format!("cannot read {path}: {e}")))?;
            // Never echo the file: it holds a private key.
            let json: serde_json::Value =
                serde_json::from_str(&text).map_err(|_| cred_err(format!("{path} is not JSON")))?;
            if json.get("type").and_then(|t| t.as_str()) != Some("service_account") {
                return Err(cred_err(format!(
                    "{path} is not a service-account key (\"type\": \"service_account\"); for other \
                     credential files set GOOGLE_APPLICATION_CREDENTIALS and credentials = \"adc\""
                )));
            }
            service_account::Builder::new(json)
                .build()
                .map_err(|e| cred_err(e.to_string()))?
        }
        CredentialsSource::Adc => {
            if adc_file_present() {
                Builder::default()
                    .build()
                    .map_err(|e| cred_err(e.to_string()))?
            } else {
                // The metadata server. Pinning the universe domain stops the client builder from
                // asking the metadata server for it (with retries) before anything else.
                mds::Builder::default()
                    .with_universe_domain("googleapis.com")
                    .build()
                    .map_err(|e| cred_err(e.to_string()))?
            }
        }
    };
    let limit = Duration::from_secs(resolved.config.credentials_timeout_secs);
    match tokio::time::timeout(limit, creds.headers(http::Extensions::new())).await {
        Ok(Ok(_)) => Ok(creds),
        Ok(Err(e)) => Err(cred_err(format!(
            "no access token: {e} (on GCE give the VM a service account with the compute scope; \
             elsewhere run `gcloud auth application-default login` or set GOOGLE_APPLICATION_CREDENTIALS)"
        ))),
        Err(_) => Err(cred_err(format!(
            "no access token within {}s (no ADC file, and the metadata server did not answer)",
            limit.as_secs()
        ))),
    }
}

/// Mirrors the ADC search order (AIP-4110) so the metadata-server fallback can be built with a
/// pinned universe domain instead of whatever the generic builder does.
fn adc_file_present() -> bool {
    if std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS").is_some() {
        return true;
    }
    std::env::var_os("HOME")
        .map(|h| {
            std::path::Path::new(&h)
                .join(".config/gcloud/application_default_credentials.json")
                .exists()
        })
        .unwrap_or(false)
}

const MAX_MESSAGE: usize = 300;

fn shorten(s: &str) -> String {
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

fn group_info(g: &model::InstanceGroupManager) -> GroupInfo {
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
    GroupInfo {
        target_size: g.target_size.unwrap_or(0).max(0) as u32,
        instances_present,
        zones,
    }
}

fn operation_info(op: model::Operation) -> OperationInfo {
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

fn managed_info(group: &GroupPath, mi: &model::ManagedInstance) -> Option<ManagedInstanceInfo> {
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
    })
}

fn timestamp(t: Option<&str>) -> Option<DateTime<FixedOffset>> {
    t.and_then(|t| DateTime::parse_from_rfc3339(t).ok())
}

fn instance_info(i: &model::Instance) -> Option<InstanceInfo> {
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
    })
}

fn zone_operation_info(op: &model::Operation) -> ZoneOperationInfo {
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

#[async_trait]
impl ComputeApi for SdkCompute {
    async fn get_group(&self, group: &GroupPath) -> Result<GroupInfo, ApiError> {
        let g = match &group.location {
            Location::Zone(z) => {
                self.zonal
                    .get()
                    .set_project(&group.project)
                    .set_zone(z)
                    .set_instance_group_manager(&group.name)
                    .send()
                    .await
            }
            Location::Region(r) => {
                self.regional
                    .get()
                    .set_project(&group.project)
                    .set_region(r)
                    .set_instance_group_manager(&group.name)
                    .send()
                    .await
            }
        }
        .map_err(|e| classify(&e))?;
        Ok(group_info(&g))
    }

    async fn resize(
        &self,
        group: &GroupPath,
        size: u32,
        request_id: &str,
    ) -> Result<OperationInfo, ApiError> {
        let size = i32::try_from(size).unwrap_or(i32::MAX);
        let op = match &group.location {
            Location::Zone(z) => {
                self.zonal
                    .resize()
                    .set_project(&group.project)
                    .set_zone(z)
                    .set_instance_group_manager(&group.name)
                    .set_size(size)
                    .set_request_id(request_id)
                    .send()
                    .await
            }
            Location::Region(r) => {
                self.regional
                    .resize()
                    .set_project(&group.project)
                    .set_region(r)
                    .set_instance_group_manager(&group.name)
                    .set_size(size)
                    .set_request_id(request_id)
                    .send()
                    .await
            }
        }
        .map_err(|e| classify(&e))?;
        Ok(operation_info(op))
    }

    async fn delete_instances(
        &self,
        group: &GroupPath,
        instance_urls: &[String],
        request_id: &str,
    ) -> Result<OperationInfo, ApiError> {
        // skipInstancesOnValidationError: an instance that vanished meanwhile (its worker shut
        // it down) must not stop the others from going.
        let op = match &group.location {
            Location::Zone(z) => {
                let body = model::InstanceGroupManagersDeleteInstancesRequest::new()
                    .set_instances(instance_urls.to_vec())
                    .set_skip_instances_on_validation_error(true);
                self.zonal
                    .delete_instances()
                    .set_project(&group.project)
                    .set_zone(z)
                    .set_instance_group_manager(&group.name)
                    .set_request_id(request_id)
                    .set_body(body)
                    .send()
                    .await
            }
            Location::Region(r) => {
                let body = model::RegionInstanceGroupManagersDeleteInstancesRequest::new()
                    .set_instances(instance_urls.to_vec())
                    .set_skip_instances_on_validation_error(true);
                self.regional
                    .delete_instances()
                    .set_project(&group.project)
                    .set_region(r)
                    .set_instance_group_manager(&group.name)
                    .set_request_id(request_id)
                    .set_body(body)
                    .send()
                    .await
            }
        }
        .map_err(|e| classify(&e))?;
        Ok(operation_info(op))
    }

    async fn get_operation(
        &self,
        group: &GroupPath,
        operation: &str,
    ) -> Result<OperationInfo, ApiError> {
        let op = match &group.location {
            Location::Zone(z) => {
                self.zonal
                    .get_operation()
                    .set_project(&group.project)
                    .set_zone(z)
                    .set_operation(operation)
                    .send()
                    .await
            }
            Location::Region(r) => {
                self.regional
                    .get_operation()
                    .set_project(&group.project)
                    .set_region(r)
                    .set_operation(operation)
                    .send()
                    .await
            }
        }
        .map_err(|e| classify(&e))?;
        Ok(operation_info(op))
    }

    async fn list_managed_instances(
        &self,
        group: &GroupPath,
        page_token: Option<&str>,
    ) -> Result<Page<ManagedInstanceInfo>, ApiError> {
        let (items, next) = match &group.location {
            Location::Zone(z) => {
                let resp = self
                    .zonal
                    .list_managed_instances()
                    .set_project(&group.project)
                    .set_zone(z)
                    .set_instance_group_manager(&group.name)
                    .set_max_results(self.page_size)
                    .set_or_clear_page_token(page_token)
                    .send()
                    .await
                    .map_err(|e| classify(&e))?;
                (resp.managed_instances, resp.next_page_token)
            }
            Location::Region(r) => {
                let resp = self
                    .regional
                    .list_managed_instances()
                    .set_project(&group.project)
                    .set_region(r)
                    .set_instance_group_manager(&group.name)
                    .set_max_results(self.page_size)
                    .set_or_clear_page_token(page_token)
                    .send()
                    .await
                    .map_err(|e| classify(&e))?;
                (resp.managed_instances, resp.next_page_token)
            }
        };
        Ok(Page {
            items: items
                .iter()
                .filter_map(|m| managed_info(group, m))
                .collect(),
            next_page_token: next.filter(|t| !t.is_empty()),
        })
    }

    async fn list_instances(
        &self,
        project: &str,
        zone: &str,
        filter: &str,
        page_token: Option<&str>,
    ) -> Result<Page<InstanceInfo>, ApiError> {
        let resp = self
            .instances
            .list()
            .set_project(project)
            .set_zone(zone)
            .set_filter(filter)
            .set_max_results(self.page_size)
            .set_or_clear_page_token(page_token)
            .send()
            .await
            .map_err(|e| classify(&e))?;
        Ok(Page {
            items: resp.items.iter().filter_map(instance_info).collect(),
            next_page_token: resp.next_page_token.filter(|t| !t.is_empty()),
        })
    }

    async fn list_zone_operations(
        &self,
        project: &str,
        zone: &str,
        filter: &str,
        page_token: Option<&str>,
    ) -> Result<Page<ZoneOperationInfo>, ApiError> {
        let resp = self
            .zone_operations
            .list()
            .set_project(project)
            .set_zone(zone)
            .set_filter(filter)
            .set_max_results(self.page_size)
            .set_or_clear_page_token(page_token)
            .send()
            .await
            .map_err(|e| classify(&e))?;
        Ok(Page {
            items: resp.items.iter().map(zone_operation_info).collect(),
            next_page_token: resp.next_page_token.filter(|t| !t.is_empty()),
        })
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
