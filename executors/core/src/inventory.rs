//! What a cloud backend can tell about a fleet without changing it, for `autoscaler audit`.
//!
//! The audit's judgement (orphans, drift, stuck drains, …) is one pure function in the main
//! crate; each cloud backend only has to describe what exists, in the terms below. The terms
//! are the common ground of EC2 Auto Scaling groups and GCE managed instance groups, so the
//! audit never needs to know which cloud it is looking at:
//!
//! | here | AWS | GCE |
//! |---|---|---|
//! | [`InventoryGroup::desired`] | `DesiredCapacity` | `targetSize` |
//! | [`InventoryGroup::min`] / [`InventoryGroup::max`] | `MinSize` / `MaxSize` | none (`None`) |
//! | [`InventoryGroup::members`] | `Instances[]` of the group | `listManagedInstances` |
//! | [`InventoryInstance::group`] | tag `aws:autoscaling:groupName` | metadata `created-by` |
//! | [`InstanceState::Pending`] | `pending`, `Pending`, `Pending:Wait/Proceed` | `PROVISIONING`, `STAGING`, action `CREATING` |
//! | [`InstanceState::Running`] | `running` + `InService` | `RUNNING` |
//! | [`InstanceState::Terminating`] | `Terminating`, `Terminating:Wait/Proceed` | action `DELETING` / `ABANDONING` |
//! | [`InstanceState::Stopped`] | `stopping`, `stopped`, `Standby` | `STOPPING`, `STOPPED`, `SUSPENDED`, `TERMINATED` |
//! | [`InventoryInstance::hostnames`] | private DNS name, private IP, instance id | name, internal DNS names, network IP |
//!
//! Tagged instances are found with a server-side filter (AWS `tag:vespene_worker=true` with
//! `instance-state-name` pending/running; GCE `labels.vespene_worker = "true"` per zone), so an
//! audit costs a few list calls however large the account is.

use crate::{ErrorKind, ExecutorError, WorkerPool};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;

/// The tag (AWS) / label (GCE) that marks a machine as a Vespene worker (value `true`), so a
/// fleet can be found, billed and audited without knowing its groups.
pub const TAG_WORKER: &str = "vespene_worker";
/// The tag / label naming the worker's pool, so an instance outside any group can still be
/// traced to the pool that launched it.
pub const TAG_POOL: &str = "vespene_pool";
/// The tag / label naming the Vespene version baked into the image, checked against the
/// expected version from the config (the image checklist's first point).
pub const TAG_VERSION: &str = "vespene_version";

/// Where a machine is in its life, in terms both clouds share; the backend keeps its own word
/// in [`InventoryInstance::raw_state`] for messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum InstanceState {
    /// Being created or booting: not yet able to run a worker.
    Pending,
    /// Up: its workers should be checking in.
    Running,
    /// On its way out (AWS `Terminating:Wait`, GCE `DELETING`): drains, then disappears.
    Terminating,
    /// Exists but is not running (stopped, suspended, standby): costs disk, runs nothing.
    Stopped,
    /// A state the backend could not map.
    Other,
}

impl InstanceState {
    /// A stable lowercase name for JSON and tables.
    pub fn as_str(&self) -> &'static str {
        match self {
            InstanceState::Pending => "pending",
            InstanceState::Running => "running",
            InstanceState::Terminating => "terminating",
            InstanceState::Stopped => "stopped",
            InstanceState::Other => "other",
        }
    }
}

/// One machine as the cloud describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InventoryInstance {
    /// Unique within the backend: the EC2 instance id, or GCE's
    /// `projects/P/zones/Z/instances/NAME` (a GCE name is unique only per zone).
    pub id: String,
    /// What an operator calls it (GCE instance name; AWS instance id or `Name` tag).
    pub name: String,
    /// Zone / availability zone.
    pub zone: Option<String>,
    /// The group the instance says it belongs to (AWS `aws:autoscaling:groupName`, GCE
    /// `created-by`), normalised to [`InventoryGroup::target`] when it is one of the groups
    /// read. Group membership itself comes from [`InventoryGroup::members`]; this is how an
    /// instance outside the audited groups is placed.
    pub group: Option<String>,
    /// Tags / labels, as set.
    pub tags: BTreeMap<String, String>,
    /// Shared state.
    pub state: InstanceState,
    /// The backend's own state word(s), e.g. `Terminating:Wait`, `RUNNING/DELETING`.
    pub raw_state: String,
    /// When the instance entered its current state, when the cloud says (AWS lifecycle
    /// activity start, GCE `lastStartTimestamp` or the delete operation's `insertTime`).
    pub state_since: Option<DateTime<Utc>>,
    /// Launch / creation time.
    pub launched: Option<DateTime<Utc>>,
    /// Every name the Vespene worker on this machine may report as `workers.hostname`
    /// (private DNS names, private IPs, instance name or id), lowercase.
    pub hostnames: Vec<String>,
    /// False when the cloud has no resource for it yet (a group member still being created):
    /// its tags and times are then unknown, not empty, and must not be judged.
    pub described: bool,
    /// AWS `ProtectedFromScaleIn`: neither AWS nor the autoscaler removes it in a scale-in, so
    /// it can keep a group above its desired size; always false on GCE (no such setting).
    pub protected_from_scale_in: bool,
}

/// A pool's group as the cloud describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InventoryGroup {
    /// The pool's name.
    pub pool: String,
    /// The group's own name for itself (ASG name, MIG path), as in [`crate::TargetStatus`].
    pub target: String,
    /// Instances the group is asked to keep (not workers).
    pub desired: u32,
    /// Lower bound on instances, when the cloud has one.
    pub min: Option<u32>,
    /// Upper bound on instances, when the cloud has one.
    pub max: Option<u32>,
    /// [`InventoryInstance::id`] of every member, in any state.
    pub members: Vec<String>,
    /// Vespene workers per instance, so the audit can speak in workers where it must.
    pub workers_per_instance: u32,
    /// When `desired` was last changed, when the cloud records it cheaply; dates drift.
    pub desired_since: Option<DateTime<Utc>>,
    /// Launches the cloud reports as failing now (GCE instances stuck creating with errors,
    /// AWS failed scaling activities since the last size change), so the audit shows why the
    /// group stays below its desired size; empty when none are known.
    pub launch_failures: Vec<LaunchFailure>,
}

/// A launch the cloud tried and could not do, in its own words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchFailure {
    /// The cloud's short code (`QUOTA_EXCEEDED`, `ZONE_RESOURCE_POOL_EXHAUSTED`,
    /// `InsufficientInstanceCapacity`, …), for metrics labels and grouping.
    pub reason: String,
    /// The cloud's message, for a human.
    pub message: String,
    /// The instance it concerns, when the cloud names one (a GCE instance being created).
    pub instance: Option<String>,
    /// Since when the launch has been failing, when the cloud says.
    pub since: Option<DateTime<Utc>>,
}

/// One pool's part of a snapshot. The group is read per pool and may fail alone (a group
/// that does not exist) without hiding the other pools.
#[derive(Debug)]
pub struct PoolInventory {
    /// The pool's name.
    pub pool: String,
    /// The `vespene_pool` value this backend expects on the pool's instances (GCE label
    /// values cannot hold upper case or most punctuation, so it may differ from the name).
    pub pool_tag: String,
    /// The group, or why it could not be read.
    pub group: Result<InventoryGroup, ExecutorError>,
}

/// Everything one backend saw, in one pass.
#[derive(Debug, Default)]
pub struct InventorySnapshot {
    /// Per pool asked about, in the order asked.
    pub pools: Vec<PoolInventory>,
    /// Every group member plus every instance tagged `vespene_worker=true` found in
    /// [`InventorySnapshot::scope`], each once.
    pub instances: Vec<InventoryInstance>,
    /// Where tagged instances were looked for (`projects/P/zones/Z`, `region us-east-1`): an
    /// orphan elsewhere is not seen, and the report says so.
    pub scope: Vec<String>,
    /// Requests sent to the cloud, retries included, so API economy can be watched.
    pub api_calls: u32,
}

/// A backend that can describe its fleet without changing anything.
#[async_trait]
pub trait Inventory: Send + Sync {
    /// Reads the groups of `pools` and every tagged instance where they live, read-only.
    /// A failure reading one pool's group goes into that pool's [`PoolInventory::group`]; an
    /// error here means nothing usable could be read (no credentials, the instance listing
    /// failed) and names the first pool involved.
    async fn inventory(&self, pools: &[&WorkerPool]) -> Result<InventorySnapshot, ExecutorError>;
}

/// The error a backend returns when asked for an inventory it cannot give, naming `pool`.
pub fn no_inventory(pool: &str, executor: &str) -> ExecutorError {
    ExecutorError::new(
        pool,
        ErrorKind::Config,
        format!("executor {executor} keeps no inventory to audit"),
    )
}
