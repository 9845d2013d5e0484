//! The narrow client the executor talks through, and its implementation on the Auto Scaling
//! SDK client and the crate's own EC2 Query API client ([`ec2`]).
//!
//! The trait holds exactly the calls the executor makes, in the executor's own plain types, so
//! the decision logic can be tested against an in-memory group that does what moto cannot
//! (`Terminating:Wait`, lifecycle actions, max-size validation), and so a counting or recording
//! wrapper can sit in front of the real client.

use async_trait::async_trait;
use autoscaler_executor::ErrorKind;
use chrono::{DateTime, Utc};

pub mod ec2;
mod error;
mod sdk;
#[cfg(test)]
mod tests;

pub(crate) use error::chain;
pub use error::{classify, map_sdk_error};
pub use sdk::SdkAsgApi;

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
    /// `DesiredCapacityType`: `units` (instances), `vcpu` or `memory-mib`; `None` when AWS
    /// leaves it out, which means `units`. The executor counts in instances, so anything else
    /// is refused (`policy::unsupported_capacity`).
    pub desired_capacity_type: Option<String>,
    /// `(InstanceType, WeightedCapacity)` of every override of the mixed instances policy that
    /// carries a weight: with weights other than 1 the desired capacity counts weight units,
    /// not instances.
    pub instance_weights: Vec<(String, String)>,
    /// `WarmPoolConfiguration` as `DescribeAutoScalingGroups` reports it: `None` when the
    /// group has no warm pool, which is how a group without one costs no `DescribeWarmPool`.
    pub warm_pool: Option<WarmPoolConfig>,
}

/// A warm pool's settings (`WarmPoolConfiguration`), in the executor's terms. The same type is
/// what `PutWarmPool` sends, so "wanted" and "described" compare field by field.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WarmPoolConfig {
    /// `MinSize`: the fewest instances AWS keeps in the warm pool.
    pub min_size: u32,
    /// `MaxGroupPreparedCapacity`: most instances in the group and its warm pool together
    /// (`None` = unset, AWS then uses the group's `MaxSize`; `-1` clears it).
    pub max_group_prepared_capacity: Option<i32>,
    /// `PoolState`: `Stopped`, `Hibernated` or `Running`.
    pub pool_state: String,
    /// `InstanceReusePolicy.ReuseOnScaleIn`: instances leaving the group in a scale-in go back
    /// to the warm pool instead of being terminated.
    pub reuse_on_scale_in: bool,
    /// `Status`: `PendingDelete` while the warm pool is being deleted, else `None`. Only
    /// described, never sent.
    pub status: Option<String>,
}

/// What `DescribeWarmPool` says: the settings (`None` when the group has no warm pool) and the
/// warm pool's instances (never part of the group's `Instances`, never capacity).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WarmPool {
    /// The settings, or `None`.
    pub config: Option<WarmPoolConfig>,
    /// Every instance of the warm pool, with its `Warmed:*` lifecycle state.
    pub instances: Vec<GroupInstance>,
}

/// Most `DescribeWarmPool` pages followed (100 instances each): a warm pool larger than that
/// is far beyond any standby target, and a read stays bounded whatever AWS answers.
pub const WARM_POOL_PAGES: usize = 10;

/// One member of a group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupInstance {
    /// `i-…`.
    pub instance_id: String,
    /// The Auto Scaling lifecycle state word, e.g. `InService`, `Terminating:Wait`.
    pub lifecycle_state: String,
    /// `Healthy` / `Unhealthy`.
    pub health_status: String,
    /// `ProtectedFromScaleIn`: AWS will not end it in a scale-in, and neither does the
    /// executor (it is never chosen).
    pub protected_from_scale_in: bool,
}

/// The lifecycle state in which an instance waits on a termination hook: the one the executor
/// drains.
pub const TERMINATING_WAIT: &str = "Terminating:Wait";

/// The lifecycle state in which an instance going back to the warm pool (a scale-in with
/// `ReuseOnScaleIn`) waits on the termination hook: drained exactly like
/// [`TERMINATING_WAIT`]. An instance launched into the warm pool waits in it too, on a
/// launching hook; the executor's calls on such an instance are answered "no active lifecycle
/// action", which the drain already treats as not its business.
pub const WARMED_PENDING_WAIT: &str = "Warmed:Pending:Wait";

impl GroupInstance {
    /// True for members that exist or are being made and are not on their way out: what the
    /// group counts as capacity (booting ones included).
    pub fn counts_as_capacity(&self) -> bool {
        let s = self.lifecycle_state.as_str();
        s == "InService" || s.starts_with("Pending")
    }

    /// True while the instance waits on a termination lifecycle hook: on its way out
    /// (`Terminating:Wait`) or back to the warm pool (`Warmed:Pending:Wait`, only ever listed
    /// by `DescribeWarmPool`). Either way a build on it would die when the wait ends.
    pub fn is_waiting_to_terminate(&self) -> bool {
        self.lifecycle_state == TERMINATING_WAIT || self.lifecycle_state == WARMED_PENDING_WAIT
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

/// One entry of `DescribeScalingActivities`: how AWS says a launch (or another change of the
/// group) went. A successful `SetDesiredCapacity` only asks; this is where a quota, a stockout
/// or a broken launch template shows up.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScalingActivity {
    /// `ActivityId`.
    pub activity_id: String,
    /// `Description`, e.g. `Launching a new EC2 instance: i-0abc` or
    /// `Launching a new EC2 instance.  Status Reason: …`.
    pub description: String,
    /// `Cause`: what started it (`At … a user request explicitly set group desired capacity …`).
    pub cause: String,
    /// `StatusCode`: `Successful`, `Failed`, `Cancelled`, `InProgress`, `PreInService`, ….
    pub status_code: String,
    /// `StatusMessage`: AWS's words for a failure (empty otherwise).
    pub status_message: String,
    /// `StartTime`.
    pub start_time: Option<DateTime<Utc>>,
}

impl ScalingActivity {
    /// True for the two codes AWS uses for a launch that did not happen.
    pub fn failed(&self) -> bool {
        self.status_code == "Failed" || self.status_code == "Cancelled"
    }

    /// True for an instance launched: the end of a run of failures.
    pub fn launched(&self) -> bool {
        self.status_code == "Successful" && self.description.starts_with("Launching")
    }
}

/// Most activities read per group when it is below its desired capacity: enough to find the
/// failures since the last successful launch without paging through weeks of history.
pub const ACTIVITIES_READ: usize = 50;

/// Most `DescribeScalingActivities` pages followed for one read (AWS may return fewer items
/// than `MaxRecords` on a page), so a read is bounded whatever AWS answers.
pub const ACTIVITY_PAGES: usize = 3;

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
    /// `DescribeScalingActivities` of one group, newest first (AWS lists activities still in
    /// progress first, then by start time), at most `limit` of them (`MaxRecords`, and at most
    /// [`ACTIVITY_PAGES`] pages).
    async fn describe_scaling_activities(
        &self,
        group: &str,
        limit: usize,
    ) -> Result<Vec<ScalingActivity>, ApiError>;
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
    /// `TerminateInstanceInAutoScalingGroup`: ends this one instance (through the group's
    /// termination lifecycle hooks, so it waits in `Terminating:Wait` when one exists). With
    /// `decrement_desired`, the group's desired capacity drops by one, so no replacement is
    /// launched: the executor's way to choose which instance a scale-in removes.
    async fn terminate_instance(
        &self,
        instance_id: &str,
        decrement_desired: bool,
    ) -> Result<(), ApiError>;
    /// `DescribeWarmPool`, following `NextToken` (at most [`WARM_POOL_PAGES`] pages): the
    /// settings and the instances of the group's warm pool.
    async fn describe_warm_pool(&self, group: &str) -> Result<WarmPool, ApiError>;
    /// `PutWarmPool` (creates or updates) with every setting of `cfg` but `status`.
    async fn put_warm_pool(&self, group: &str, cfg: &WarmPoolConfig) -> Result<(), ApiError>;
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
