//! The few Compute Engine calls this executor makes, behind a narrow trait, and their
//! implementation on the official Google Cloud Rust SDK.
//!
//! The trait exists so the scaling logic reads as logic (no SDK builders in it) and so every
//! call goes through one retry loop and one error classifier. The SDK's own retry loop is
//! switched off: it retries only idempotent GETs and would sit a minute on a transient
//! credentials error, while here mutating calls carry a request id and are safe to retry.

mod convert;
mod credentials;
mod errors;
mod retry;
mod sdk;

pub(crate) use convert::classify;
pub(crate) use errors::{api_error, operation_error_kind};
pub(crate) use retry::{Failed, RetryPolicy};
pub use sdk::SdkCompute;

use crate::target::GroupPath;
use async_trait::async_trait;
use chrono::{DateTime, FixedOffset};
use std::collections::BTreeMap;
use std::time::Duration;

/// Names per name-filtered `instances.list`: keeps the URL far below any length limit.
const FILTER_CHUNK: usize = 100;

/// The `instances.list` filters that find these instances by name, one per chunk of at most
/// [`FILTER_CHUNK`] names (`(name = "a") OR (name = "b") …`). Scale-in and the inventory both
/// look members up this way; one builder keeps the quoting and the chunk size the same.
pub(crate) fn name_filters<S: AsRef<str>>(names: &[S]) -> impl Iterator<Item = String> + '_ {
    names.chunks(FILTER_CHUNK).map(|chunk| {
        chunk
            .iter()
            .map(|n| format!("(name = \"{}\")", n.as_ref()))
            .collect::<Vec<_>>()
            .join(" OR ")
    })
}

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
    /// Instances the group is creating now (`currentActions.creating` +
    /// `creatingWithoutRetries`): a `resize` is DONE once creations are *scheduled*, so
    /// while this is above 0 the running count is below the target and a quota or a stockout
    /// may be holding them; the only case in which launches are looked into.
    pub creating: u32,
    /// `status.autoscaler`: the URL of a GCE autoscaler attached to the group, which owns its
    /// size (a resize answers 412, deleted instances are refilled).
    pub autoscaler: Option<String>,
    /// A regional group's `updatePolicy.instanceRedistributionType`, with the API's default
    /// (`PROACTIVE`) filled in when unset; `None` for a zonal group, which never rebalances.
    pub redistribution: Option<String>,
    /// A regional group's `distributionPolicy.targetShape` (`EVEN` when unset), for messages.
    pub target_shape: Option<String>,
    /// `targetSuspendedSize`: suspended members, outside `targetSize`. Read so a standby pool
    /// is seen without listing the group, and never written: the executor only changes it
    /// through `suspendInstances` / `resumeInstances` / `deleteInstances`, as Compute does.
    pub target_suspended_size: u32,
    /// `targetStoppedSize`: stopped members, outside `targetSize`; kept like
    /// [`GroupInfo::target_suspended_size`].
    pub target_stopped_size: u32,
    /// `standbyPolicy.mode` (`MANUAL` when unset). With `SCALE_OUT_POOL` the group resumes or
    /// starts standby members itself on a resize up, and refills its standby pool afterwards.
    pub standby_mode: String,
}

impl GroupInfo {
    /// Members in standby (stopped or suspended), by the group's own counts.
    pub fn standby(&self) -> u32 {
        self.target_suspended_size
            .saturating_add(self.target_stopped_size)
    }

    /// Whether the group itself brings standby members back on a resize up.
    pub fn scale_out_pool(&self) -> bool {
        self.standby_mode == "SCALE_OUT_POOL"
    }
}

/// The four standby calls of a managed instance group, each taking instance URLs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StandbyCall {
    /// `suspendInstances`: running → SUSPENDED; `targetSize` −n, `targetSuspendedSize` +n.
    Suspend,
    /// `resumeInstances`: SUSPENDED → RUNNING; `targetSize` +n, `targetSuspendedSize` −n.
    Resume,
    /// `stopInstances`: running → TERMINATED; `targetSize` −n, `targetStoppedSize` +n.
    Stop,
    /// `startInstances`: TERMINATED → RUNNING; `targetSize` +n, `targetStoppedSize` −n.
    Start,
}

impl StandbyCall {
    /// The REST method name, for log lines, retries and error messages.
    pub fn method(&self) -> &'static str {
        match self {
            StandbyCall::Suspend => "suspendInstances",
            StandbyCall::Resume => "resumeInstances",
            StandbyCall::Stop => "stopInstances",
            StandbyCall::Start => "startInstances",
        }
    }
}

impl GroupInfo {
    /// Whether the group deletes instances of its own choice to even out its zones: a
    /// regional group whose redistribution is `PROACTIVE` (the default).
    pub fn rebalances(&self) -> bool {
        self.redistribution.as_deref() == Some("PROACTIVE")
    }
}

/// An error Compute reports for a managed instance (`lastAttempt.errors.errors[]`) or for the
/// group (`listErrors` items' `error`): the cloud's short code and its words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloudError {
    /// `QUOTA_EXCEEDED`, `ZONE_RESOURCE_POOL_EXHAUSTED`, … (empty when Compute gave none).
    pub code: String,
    /// The cloud's message.
    pub message: String,
}

/// One item of `instanceGroupManagers.listErrors`: what failed, on which instance, when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupError {
    /// `instanceActionDetails.instance`: the instance URL (set even before it exists).
    pub instance: Option<String>,
    /// `instanceActionDetails.action` (`CREATING`, `DELETING`, …).
    pub action: Option<String>,
    /// `error.code` / `error.message`.
    pub error: CloudError,
    /// `timestamp`: when the error occurred, which dates how long a launch has been failing
    /// even for a process that has just started (every `--force` run).
    pub at: Option<DateTime<FixedOffset>>,
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
    /// `lastAttempt.errors.errors[]`: why the group's last attempt to create (or delete) the
    /// instance failed; a member stuck in `CREATING` with these is a launch that fails.
    pub last_attempt_errors: Vec<CloudError>,
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
    /// Every metadata item, in order: `setMetadata` replaces the whole list, so a change to
    /// one key must send the others back unchanged.
    pub metadata: Vec<(String, String)>,
    /// The metadata fingerprint `setMetadata` must quote, so a concurrent change is refused
    /// (412 `conditionNotMet`) instead of overwritten.
    pub metadata_fingerprint: Option<Vec<u8>>,
}

impl InstanceInfo {
    /// The value of metadata key `key`, if set.
    pub fn metadata_value(&self, key: &str) -> Option<&str> {
        self.metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
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
    /// An attempt outlived `request_timeout_seconds`.
    Timeout,
    /// 412 `conditionNotMet`: a fingerprint no longer matches (someone else changed the
    /// resource); read it again and retry with the new fingerprint.
    Conflict,
    /// 4xx that retrying will not fix (400, 409, …), or an unreadable response.
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
    /// `…/suspendInstances`, `resumeInstances`, `stopInstances` or `startInstances` with
    /// exactly these instance URLs (request id, so a retry is not applied twice).
    async fn standby_instances(
        &self,
        group: &GroupPath,
        call: StandbyCall,
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
    /// One page of `…/listErrors`: the errors of actions on the group's instances.
    async fn list_errors(
        &self,
        group: &GroupPath,
        page_token: Option<&str>,
    ) -> Result<Page<GroupError>, ApiError>;
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
    /// `instances.get`: one instance, for a fresh metadata fingerprint after a 412.
    async fn get_instance(
        &self,
        project: &str,
        zone: &str,
        name: &str,
    ) -> Result<InstanceInfo, ApiError>;
    /// `instances.setMetadata`: replaces the instance's metadata items with `items`, provided
    /// `fingerprint` is still current (else 412 `conditionNotMet`). Returns a zone operation.
    async fn set_metadata(
        &self,
        project: &str,
        zone: &str,
        name: &str,
        fingerprint: Option<&[u8]>,
        items: &[(String, String)],
        request_id: &str,
    ) -> Result<OperationInfo, ApiError>;
    /// `instances.getGuestAttributes?variableKey=KEY`: the value the guest wrote under `key`
    /// (`namespace/key`); `None` when it wrote nothing there (Compute answers 404).
    async fn get_guest_attribute(
        &self,
        project: &str,
        zone: &str,
        name: &str,
        key: &str,
    ) -> Result<Option<String>, ApiError>;
    /// `zoneOperations.get`: instance operations (setMetadata) live in the instance's zone,
    /// whatever the group's scope.
    async fn get_zone_operation(
        &self,
        project: &str,
        zone: &str,
        operation: &str,
    ) -> Result<OperationInfo, ApiError>;
}
