//! The narrow client the executor talks through, and its implementation on the AWS SDK.
//!
//! The trait holds exactly the calls the executor makes, in the executor's own plain types, so
//! the decision logic can be tested against an in-memory group that does what moto cannot
//! (`Terminating:Wait`, lifecycle actions, max-size validation), and so a counting or recording
//! wrapper can sit in front of the real client.

use async_trait::async_trait;
use autoscaler_executor::ErrorKind;
use aws_sdk_autoscaling::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use chrono::{DateTime, Utc};
use std::time::Duration;

/// Most groups one `DescribeAutoScalingGroups` request may name (its `MaxRecords` limit).
pub const DESCRIBE_BATCH: usize = 100;

/// An Auto Scaling group as far as the executor cares.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupInfo {
    /// `AutoScalingGroupName`.
    pub name: String,
    /// `MinSize`, in instances.
    pub min_size: u32,
    /// `MaxSize`, in instances.
    pub max_size: u32,
    /// `DesiredCapacity`, in instances; it already counts instances still booting.
    pub desired_capacity: u32,
    /// The group's members, in any lifecycle state.
    pub instances: Vec<GroupInstance>,
    /// The group's tags.
    pub tags: Vec<GroupTag>,
    /// `TerminationPolicies`, in order.
    pub termination_policies: Vec<String>,
}

/// One member of a group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupInstance {
    /// `i-…`.
    pub instance_id: String,
    /// The Auto Scaling lifecycle state word, e.g. `InService`, `Terminating:Wait`.
    pub lifecycle_state: String,
    /// `Healthy` / `Unhealthy`.
    pub health_status: String,
}

/// The lifecycle state in which an instance waits on a termination hook: the one the executor
/// drains.
pub const TERMINATING_WAIT: &str = "Terminating:Wait";

impl GroupInstance {
    /// True for members that exist or are being made and are not on their way out: what the
    /// group counts as capacity (booting ones included).
    pub fn counts_as_capacity(&self) -> bool {
        let s = self.lifecycle_state.as_str();
        s == "InService" || s.starts_with("Pending")
    }

    /// True while the instance waits on a termination lifecycle hook.
    pub fn is_waiting_to_terminate(&self) -> bool {
        self.lifecycle_state == TERMINATING_WAIT
    }
}

/// A group tag.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupTag {
    /// Tag key.
    pub key: String,
    /// Tag value.
    pub value: String,
    /// Whether instances launched by the group get the tag.
    pub propagate_at_launch: bool,
}

/// A lifecycle hook of a group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HookInfo {
    /// `LifecycleHookName`.
    pub name: String,
    /// `autoscaling:EC2_INSTANCE_TERMINATING` or `…_LAUNCHING`.
    pub transition: String,
    /// Seconds before AWS applies the default result.
    pub heartbeat_timeout: Option<u32>,
    /// `CONTINUE` or `ABANDON`.
    pub default_result: Option<String>,
}

/// The transition of a termination hook.
pub const TERMINATING_TRANSITION: &str = "autoscaling:EC2_INSTANCE_TERMINATING";

/// What EC2 knows about an instance that the group does not: its names on the network.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ec2Instance {
    /// `i-…`.
    pub instance_id: String,
    /// `ip-10-0-1-5.ec2.internal` (empty while the instance has no network interface).
    pub private_dns_name: Option<String>,
    /// `10.0.1.5`.
    pub private_ip: Option<String>,
    /// Launch time.
    pub launch_time: Option<DateTime<Utc>>,
    /// EC2 state name: `pending`, `running`, `shutting-down`, `stopping`, `stopped`,
    /// `terminated`.
    pub state: String,
    /// Availability zone.
    pub zone: Option<String>,
    /// The instance's tags.
    pub tags: std::collections::BTreeMap<String, String>,
}

/// A failed call, classified. The message is built from the service's error code and message
/// and the SDK's description of a transport failure — never from request bodies or
/// credentials.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// How the failure is recorded in `autoscaling_status`.
    pub kind: ErrorKind,
    /// The service's error code (`AccessDenied`, `Throttling`, `ValidationError`, …) when the
    /// service answered.
    pub code: Option<String>,
    /// What happened, for a human.
    pub message: String,
}

impl ApiError {
    /// An error with a service code, for test doubles and classification.
    pub fn service(code: &str, message: impl Into<String>, status: u16) -> Self {
        let message = message.into();
        ApiError {
            kind: classify(Some(code), status, &message),
            code: Some(code.to_string()),
            message: format!("{code}: {message} (HTTP {status})"),
        }
    }

    /// True for the answer AWS gives to a lifecycle call on an instance that is no longer
    /// waiting on that hook (it proceeded, or waits on another hook): not a failure of ours.
    pub fn is_no_active_lifecycle_action(&self) -> bool {
        self.code.as_deref() == Some("ValidationError")
            && self
                .message
                .to_ascii_lowercase()
                .contains("no active lifecycle action")
    }
}

/// Exactly the AWS calls the executor makes.
#[async_trait]
pub trait AsgApi: Send + Sync {
    /// `DescribeAutoScalingGroups` for `names` (at most [`DESCRIBE_BATCH`]), following
    /// `NextToken`. Unknown names are simply absent from the answer, as in AWS.
    async fn describe_groups(&self, names: &[String]) -> Result<Vec<GroupInfo>, ApiError>;
    /// `SetDesiredCapacity` with `HonorCooldown=false`.
    async fn set_desired_capacity(&self, group: &str, desired: u32) -> Result<(), ApiError>;
    /// `UpdateAutoScalingGroup` changing only `TerminationPolicies`.
    async fn update_termination_policies(
        &self,
        group: &str,
        policies: &[String],
    ) -> Result<(), ApiError>;
    /// `CreateOrUpdateTags` on the group.
    async fn create_or_update_tags(&self, group: &str, tags: &[GroupTag]) -> Result<(), ApiError>;
    /// `DescribeLifecycleHooks` for the named hooks of a group.
    async fn describe_lifecycle_hooks(
        &self,
        group: &str,
        names: &[String],
    ) -> Result<Vec<HookInfo>, ApiError>;
    /// `PutLifecycleHook` (creates or replaces).
    async fn put_lifecycle_hook(&self, group: &str, hook: &HookInfo) -> Result<(), ApiError>;
    /// `CompleteLifecycleAction` by instance id.
    async fn complete_lifecycle_action(
        &self,
        group: &str,
        hook: &str,
        instance_id: &str,
        result: &str,
    ) -> Result<(), ApiError>;
    /// `RecordLifecycleActionHeartbeat` by instance id.
    async fn record_lifecycle_action_heartbeat(
        &self,
        group: &str,
        hook: &str,
        instance_id: &str,
    ) -> Result<(), ApiError>;
    /// EC2 `DescribeInstances` filtered by `instance-id` (a filter, so an instance that is gone
    /// is absent rather than an error), following `NextToken`.
    async fn describe_instances(&self, ids: &[String]) -> Result<Vec<Ec2Instance>, ApiError>;
    /// EC2 `DescribeInstances` of every `pending` or `running` instance tagged
    /// `vespene_worker=true` in the region (server-side filters), following `NextToken`: the
    /// audit's way to find workers outside any group.
    async fn describe_worker_instances(&self) -> Result<Vec<Ec2Instance>, ApiError>;
    /// EC2 `CreateTags` on instances, for members launched before the group had the tags
    /// (PropagateAtLaunch only reaches instances launched afterwards).
    async fn tag_instances(
        &self,
        ids: &[String],
        tags: &[(String, String)],
    ) -> Result<(), ApiError>;
}

/// [`AsgApi`] over the official SDK clients.
#[derive(Clone, Debug)]
pub struct SdkAsgApi {
    asg: aws_sdk_autoscaling::Client,
    ec2: aws_sdk_ec2::Client,
    request_timeout: Duration,
}

impl SdkAsgApi {
    /// Both clients from one loaded SDK config, so they share credentials, region, retry and
    /// timeout settings; the service-specific endpoint variables still apply per client.
    pub fn new(config: &aws_config::SdkConfig, request_timeout: Duration) -> Self {
        SdkAsgApi {
            asg: aws_sdk_autoscaling::Client::new(config),
            ec2: aws_sdk_ec2::Client::new(config),
            request_timeout,
        }
    }

    /// `DescribeInstances` with `filters`, every page.
    async fn ec2_instances(
        &self,
        filters: Vec<aws_sdk_ec2::types::Filter>,
    ) -> Result<Vec<Ec2Instance>, ApiError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let resp = self
                .ec2
                .describe_instances()
                .set_filters(Some(filters.clone()))
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| self.err("DescribeInstances", e))?;
            for r in resp.reservations() {
                for i in r.instances() {
                    out.push(Ec2Instance {
                        instance_id: i.instance_id().unwrap_or_default().to_string(),
                        private_dns_name: i
                            .private_dns_name()
                            .filter(|s| !s.is_empty())
                            .map(str::to_string),
                        private_ip: i
                            .private_ip_address()
                            .filter(|s| !s.is_empty())
                            .map(str::to_string),
                        launch_time: i.launch_time().and_then(to_utc),
                        state: i
                            .state()
                            .and_then(|s| s.name())
                            .map(|n| n.as_str().to_string())
                            .unwrap_or_default(),
                        zone: i
                            .placement()
                            .and_then(|p| p.availability_zone())
                            .map(str::to_string),
                        tags: i
                            .tags()
                            .iter()
                            .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
                            .collect(),
                    });
                }
            }
            match resp.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => return Ok(out),
            }
        }
    }

    fn err<E>(&self, call: &str, err: SdkError<E, HttpResponse>) -> ApiError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        map_sdk_error(call, err, self.request_timeout)
    }
}

fn to_utc(t: &aws_smithy_types::DateTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.secs(), t.subsec_nanos())
}

fn nonneg(v: Option<i32>) -> u32 {
    v.unwrap_or(0).max(0) as u32
}

fn i32_of(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

#[async_trait]
impl AsgApi for SdkAsgApi {
    async fn describe_groups(&self, names: &[String]) -> Result<Vec<GroupInfo>, ApiError> {
        let mut out = Vec::new();
        if names.is_empty() {
            // An empty name list would describe every group in the account.
            return Ok(out);
        }
        let mut token: Option<String> = None;
        loop {
            let resp = self
                .asg
                .describe_auto_scaling_groups()
                .set_auto_scaling_group_names(Some(names.to_vec()))
                .max_records(i32_of(DESCRIBE_BATCH as u32))
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| self.err("DescribeAutoScalingGroups", e))?;
            for g in resp.auto_scaling_groups() {
                out.push(GroupInfo {
                    name: g.auto_scaling_group_name().unwrap_or_default().to_string(),
                    min_size: nonneg(g.min_size()),
                    max_size: nonneg(g.max_size()),
                    desired_capacity: nonneg(g.desired_capacity()),
                    instances: g
                        .instances()
                        .iter()
                        .map(|i| GroupInstance {
                            instance_id: i.instance_id().unwrap_or_default().to_string(),
                            lifecycle_state: i
                                .lifecycle_state()
                                .map(|s| s.as_str().to_string())
                                .unwrap_or_default(),
                            health_status: i.health_status().unwrap_or_default().to_string(),
                        })
                        .collect(),
                    tags: g
                        .tags()
                        .iter()
                        .map(|t| GroupTag {
                            key: t.key().unwrap_or_default().to_string(),
                            value: t.value().unwrap_or_default().to_string(),
                            propagate_at_launch: t.propagate_at_launch().unwrap_or(false),
                        })
                        .collect(),
                    termination_policies: g.termination_policies().to_vec(),
                });
            }
            match resp.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => break,
            }
        }
        Ok(out)
    }

    async fn set_desired_capacity(&self, group: &str, desired: u32) -> Result<(), ApiError> {
        self.asg
            .set_desired_capacity()
            .auto_scaling_group_name(group)
            .desired_capacity(i32_of(desired))
            .honor_cooldown(false)
            .send()
            .await
            .map_err(|e| self.err("SetDesiredCapacity", e))?;
        Ok(())
    }

    async fn update_termination_policies(
        &self,
        group: &str,
        policies: &[String],
    ) -> Result<(), ApiError> {
        self.asg
            .update_auto_scaling_group()
            .auto_scaling_group_name(group)
            .set_termination_policies(Some(policies.to_vec()))
            .send()
            .await
            .map_err(|e| self.err("UpdateAutoScalingGroup", e))?;
        Ok(())
    }

    async fn create_or_update_tags(&self, group: &str, tags: &[GroupTag]) -> Result<(), ApiError> {
        let tags = tags
            .iter()
            .map(|t| {
                aws_sdk_autoscaling::types::Tag::builder()
                    .resource_id(group)
                    .resource_type("auto-scaling-group")
                    .key(&t.key)
                    .value(&t.value)
                    .propagate_at_launch(t.propagate_at_launch)
                    .build()
            })
            .collect();
        self.asg
            .create_or_update_tags()
            .set_tags(Some(tags))
            .send()
            .await
            .map_err(|e| self.err("CreateOrUpdateTags", e))?;
        Ok(())
    }

    async fn describe_lifecycle_hooks(
        &self,
        group: &str,
        names: &[String],
    ) -> Result<Vec<HookInfo>, ApiError> {
        let resp = self
            .asg
            .describe_lifecycle_hooks()
            .auto_scaling_group_name(group)
            .set_lifecycle_hook_names(Some(names.to_vec()))
            .send()
            .await
            .map_err(|e| self.err("DescribeLifecycleHooks", e))?;
        Ok(resp
            .lifecycle_hooks()
            .iter()
            .map(|h| HookInfo {
                name: h.lifecycle_hook_name().unwrap_or_default().to_string(),
                transition: h.lifecycle_transition().unwrap_or_default().to_string(),
                heartbeat_timeout: h.heartbeat_timeout().map(|v| v.max(0) as u32),
                default_result: h.default_result().map(str::to_string),
            })
            .collect())
    }

    async fn put_lifecycle_hook(&self, group: &str, hook: &HookInfo) -> Result<(), ApiError> {
        self.asg
            .put_lifecycle_hook()
            .auto_scaling_group_name(group)
            .lifecycle_hook_name(&hook.name)
            .lifecycle_transition(&hook.transition)
            .set_heartbeat_timeout(hook.heartbeat_timeout.map(i32_of))
            .set_default_result(hook.default_result.clone())
            .send()
            .await
            .map_err(|e| self.err("PutLifecycleHook", e))?;
        Ok(())
    }

    async fn complete_lifecycle_action(
        &self,
        group: &str,
        hook: &str,
        instance_id: &str,
        result: &str,
    ) -> Result<(), ApiError> {
        self.asg
            .complete_lifecycle_action()
            .auto_scaling_group_name(group)
            .lifecycle_hook_name(hook)
            .instance_id(instance_id)
            .lifecycle_action_result(result)
            .send()
            .await
            .map_err(|e| self.err("CompleteLifecycleAction", e))?;
        Ok(())
    }

    async fn record_lifecycle_action_heartbeat(
        &self,
        group: &str,
        hook: &str,
        instance_id: &str,
    ) -> Result<(), ApiError> {
        self.asg
            .record_lifecycle_action_heartbeat()
            .auto_scaling_group_name(group)
            .lifecycle_hook_name(hook)
            .instance_id(instance_id)
            .send()
            .await
            .map_err(|e| self.err("RecordLifecycleActionHeartbeat", e))?;
        Ok(())
    }

    async fn describe_instances(&self, ids: &[String]) -> Result<Vec<Ec2Instance>, ApiError> {
        let mut out = Vec::new();
        for chunk in ids.chunks(200) {
            let filter = aws_sdk_ec2::types::Filter::builder()
                .name("instance-id")
                .set_values(Some(chunk.to_vec()))
                .build();
            out.extend(self.ec2_instances(vec![filter]).await?);
        }
        Ok(out)
    }

    async fn describe_worker_instances(&self) -> Result<Vec<Ec2Instance>, ApiError> {
        let filters = vec![
            aws_sdk_ec2::types::Filter::builder()
                .name(format!(
                    "tag:{}",
                    autoscaler_executor::inventory::TAG_WORKER
                ))
                .values("true")
                .build(),
            aws_sdk_ec2::types::Filter::builder()
                .name("instance-state-name")
                .values("pending")
                .values("running")
                .build(),
        ];
        self.ec2_instances(filters).await
    }

    async fn tag_instances(
        &self,
        ids: &[String],
        tags: &[(String, String)],
    ) -> Result<(), ApiError> {
        for chunk in ids.chunks(1000) {
            self.ec2
                .create_tags()
                .set_resources(Some(chunk.to_vec()))
                .set_tags(Some(
                    tags.iter()
                        .map(|(k, v)| aws_sdk_ec2::types::Tag::builder().key(k).value(v).build())
                        .collect(),
                ))
                .send()
                .await
                .map_err(|e| self.err("CreateTags", e))?;
        }
        Ok(())
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_kinds() {
        assert_eq!(
            classify(Some("Throttling"), 400, "Rate exceeded"),
            ErrorKind::Throttled
        );
        assert_eq!(
            classify(Some("AccessDenied"), 403, "User is not authorized"),
            ErrorKind::PermissionDenied
        );
        assert_eq!(
            classify(Some("UnauthorizedOperation"), 403, "x"),
            ErrorKind::PermissionDenied
        );
        assert_eq!(
            classify(Some("InvalidClientTokenId"), 403, "bad token"),
            ErrorKind::Credentials
        );
        assert_eq!(
            classify(Some("AuthFailure"), 401, "x"),
            ErrorKind::Credentials
        );
        assert_eq!(
            classify(
                Some("ValidationError"),
                400,
                "AutoScalingGroup name not found - x"
            ),
            ErrorKind::NotFound
        );
        assert_eq!(
            classify(Some("InvalidInstanceID.NotFound"), 400, "x"),
            ErrorKind::NotFound
        );
        assert_eq!(
            classify(
                Some("ValidationError"),
                400,
                "New SetDesiredCapacity value 9 is above max value 4"
            ),
            ErrorKind::Backend
        );
        assert_eq!(
            classify(Some("InternalFailure"), 500, "x"),
            ErrorKind::Unavailable
        );
        assert_eq!(classify(None, 503, "x"), ErrorKind::Unavailable);
        assert_eq!(classify(None, 429, "x"), ErrorKind::Throttled);
        assert!(ApiError::service(
            "ValidationError",
            "No active Lifecycle Action found with instance ID i-1",
            400
        )
        .is_no_active_lifecycle_action());
    }

    #[test]
    fn capacity_states() {
        let i = |s: &str| GroupInstance {
            instance_id: "i-1".into(),
            lifecycle_state: s.into(),
            health_status: "Healthy".into(),
        };
        assert!(i("Pending").counts_as_capacity());
        assert!(i("Pending:Wait").counts_as_capacity());
        assert!(i("InService").counts_as_capacity());
        assert!(!i("Terminating:Wait").counts_as_capacity());
        assert!(!i("Standby").counts_as_capacity());
        assert!(i("Terminating:Wait").is_waiting_to_terminate());
        assert!(!i("Terminating:Proceed").is_waiting_to_terminate());
    }
}
