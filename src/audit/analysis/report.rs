//! What the audit reports: findings, per-pool summaries, failures, and the JSON document
//! they make (its schema is a contract: docs/audit.md).

use super::*;

/// The version of the JSON document; bumped on any incompatible change.
pub const SCHEMA: &str = "vespene-autoscaler-audit/1";

/// How bad a finding is; `--fail-on` compares against it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing; nothing to fix.
    Info,
    /// Costs money or hides machines; fix soon.
    Warning,
    /// Something is broken or unmanaged.
    Error,
}

impl Severity {
    /// Lowercase name, as in JSON.
    pub fn as_str(&self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

/// What a finding is about. The order is the order of the issue and of the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A labelled worker no read group claims, or in another pool's group: unmanaged spend.
    Orphan,
    /// A group member without the worker or pool label: invisible to searches and cost reports.
    Untagged,
    /// Running ≠ desired for longer than the grace: the group is not converging.
    Drift,
    /// A drain that outlived the drain limit: a machine paid for that serves nothing.
    StuckTerminating,
    /// Up past the boot allowance without its worker checking in: a broken image, suspected.
    NeverCheckedIn,
    /// A `workers` row whose machine is gone: Vespene still lists it.
    StaleWorker,
    /// An image built for another Vespene version than expected.
    VersionSkew,
    /// Older than `--older-than`: a candidate for a refresh.
    OldInstance,
    /// The cloud reports launches failing now (quota, stockout, template).
    LaunchFailing,
    /// Members protected from scale-in, which keep a group above its size.
    ScaleInProtected,
}

impl Kind {
    /// snake_case name, as in JSON.
    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::Orphan => "orphan",
            Kind::Untagged => "untagged",
            Kind::Drift => "drift",
            Kind::StuckTerminating => "stuck_terminating",
            Kind::NeverCheckedIn => "never_checked_in",
            Kind::StaleWorker => "stale_worker",
            Kind::VersionSkew => "version_skew",
            Kind::OldInstance => "old_instance",
            Kind::LaunchFailing => "launch_failing",
            Kind::ScaleInProtected => "scale_in_protected",
        }
    }
}

/// One thing found, with what it concerns.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Finding {
    /// How bad it is: `--fail-on` and the exit status go by it.
    pub severity: Severity,
    /// Which rule found it, a stable name for scripts.
    pub kind: Kind,
    /// The pool it belongs to; `None` for an instance no audited pool claims.
    pub pool: Option<String>,
    /// The group involved, if any.
    pub group: Option<String>,
    /// The instance's name (`None` for group-level and worker-row findings).
    pub instance: Option<String>,
    /// The instance's id (GCE path / EC2 id), for scripts.
    pub instance_id: Option<String>,
    /// `workers.hostname` of a stale worker row.
    pub worker: Option<String>,
    /// What is wrong, for a human, with the numbers that make it so.
    pub message: String,
    /// How long it has been so, in seconds, when that can be told.
    pub age_seconds: Option<i64>,
}

/// A part of the audit that could not be done (exit status 2).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Failure {
    /// Which part: `inventory gce-mig`, `group of pool linux`, `pool arm`.
    pub part: String,
    /// The pool concerned, when one is.
    pub pool: Option<String>,
    /// A stable error kind (`not_found`, `unavailable`, `credentials`, `config`, …).
    pub kind: String,
    /// The error.
    pub message: String,
}

impl Failure {
    /// A failure from a backend error, naming `part`.
    pub fn from_executor(part: String, e: &ExecutorError) -> Failure {
        Failure {
            part,
            pool: Some(e.pool.clone()),
            kind: e.kind.as_str().to_string(),
            message: e.to_string(),
        }
    }
}

/// One instance in a pool's summary.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct InstanceReport {
    /// The cloud's id (GCE path, EC2 id): what a script acts on.
    pub id: String,
    /// The instance's name, for people.
    pub name: String,
    /// Its zone, when the cloud says: a zonal outage shows up here.
    pub zone: Option<String>,
    /// `pending`, `running`, `terminating`, `stopped`, `other`.
    pub state: &'static str,
    /// The cloud's own word(s).
    pub raw_state: String,
    /// When it was launched, when the cloud says.
    pub launched: Option<DateTime<Utc>>,
    /// Seconds since launch, for sorting and thresholds in scripts.
    pub age_seconds: Option<i64>,
    /// Holds a RUNNING build.
    pub busy: bool,
    /// The RUNNING builds it holds.
    pub builds: Vec<i64>,
    /// Latest `workers.last_checkin` of a row matching its hostnames (since launch).
    pub last_checkin: Option<DateTime<Utc>>,
    /// Its `vespene_version` tag/label.
    pub version: Option<String>,
    /// Protected from scale-in (AWS): never removed by a scale-in. Present only when true.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub protected_from_scale_in: bool,
}

/// One pool's summary.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PoolReport {
    /// The pool.
    pub name: String,
    /// The backend that describes it (`aws-asg`, `gce-mig`).
    pub executor: String,
    /// `ok`, or `failed` when its group could not be read (see `failures`).
    pub status: &'static str,
    /// The group (ASG name, MIG path).
    pub target: Option<String>,
    /// Workers per machine: sizes in workers and in instances differ by it.
    pub workers_per_instance: Option<u32>,
    /// The group's desired size, in instances.
    pub desired_instances: Option<u32>,
    /// The same in workers, comparable with the pool's plan.
    pub desired_workers: Option<u32>,
    /// The group's own floor, when it has one: a plan below it is not applied.
    pub min_instances: Option<u32>,
    /// The group's own ceiling, when it has one: a plan above it is capped.
    pub max_instances: Option<u32>,
    /// Members by state.
    pub running: u32,
    /// Members booting.
    pub pending: u32,
    /// Members draining or being deleted.
    pub terminating: u32,
    /// Members stopped, suspended or in a state the audit does not name.
    pub stopped: u32,
    /// Members holding a RUNNING build.
    pub busy: u32,
    /// Running members holding none.
    pub idle: u32,
    /// Hours since launch summed over the members: what the fleet has cost so far.
    pub instance_hours: f64,
    /// QUEUED and RUNNING builds of the pool.
    pub queued_builds: u64,
    /// RUNNING builds of the pool.
    pub running_builds: u64,
    /// Members, oldest first.
    pub instances: Vec<InstanceReport>,
}

impl PoolReport {
    /// The row of a pool whose group could not be read: its database facts only, every
    /// cloud figure empty, status `failed` (the failure itself is in [`Report::failures`]).
    /// Also the base a read group's row is filled in from.
    pub(super) fn unread(p: &PoolInput) -> PoolReport {
        PoolReport {
            name: p.pool.name.clone(),
            executor: p.executor.clone(),
            status: "failed",
            target: None,
            workers_per_instance: None,
            desired_instances: None,
            desired_workers: None,
            min_instances: None,
            max_instances: None,
            running: 0,
            pending: 0,
            terminating: 0,
            stopped: 0,
            busy: 0,
            idle: 0,
            instance_hours: 0.0,
            queued_builds: p.queued_builds,
            running_builds: p.running_builds,
            instances: Vec::new(),
        }
    }
}

/// What a backend cost and where it looked.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BackendReport {
    /// The backend.
    pub executor: String,
    /// `ok` or `failed`.
    pub status: &'static str,
    /// Where labelled instances were looked for: orphans elsewhere are not seen.
    pub scope: Vec<String>,
    /// Requests sent, retries included.
    pub api_calls: u32,
}

/// Counts by severity.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SeverityCounts {
    /// Findings at `error`.
    pub error: usize,
    /// Findings at `warning`.
    pub warning: usize,
    /// Findings at `info`.
    pub info: usize,
}

/// Fleet-wide totals.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Totals {
    /// Pools audited.
    pub pools: usize,
    /// Group members over all pools.
    pub instances: u32,
    /// Members holding a RUNNING build.
    pub busy: u32,
    /// Running members holding none: what the fleet pays for without use.
    pub idle: u32,
    /// Hours since launch summed over every member.
    pub instance_hours: f64,
    /// Findings by severity.
    pub findings: SeverityCounts,
}

/// The settings the findings were judged with, echoed so a report explains itself.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Settings {
    /// `--fail-on`: the severity that makes the exit status 1.
    pub fail_on: &'static str,
    /// `--older-than`, when given.
    pub older_than_seconds: Option<i64>,
    /// `drift_grace_seconds` of `[audit]`.
    pub drift_grace_seconds: i64,
    /// `drain_limit_seconds` of `[audit]`.
    pub drain_limit_seconds: i64,
    /// `boot_allowance_seconds` of `[audit]`.
    pub boot_allowance_seconds: i64,
    /// `stale_worker_seconds` of `[audit]`.
    pub stale_worker_seconds: i64,
    /// `expected_version` of `[audit]`; unset: versions not checked.
    pub expected_version: Option<String>,
}

/// The whole audit: the JSON document, and what the table is printed from.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// [`SCHEMA`]: scripts check it before reading the rest.
    pub schema: &'static str,
    /// The audit's clock (`--now`, or the time it ran).
    pub generated_at: DateTime<Utc>,
    /// Always true: the audit never changes anything.
    pub read_only: bool,
    /// The thresholds the findings were judged with.
    pub settings: Settings,
    /// One summary per audited pool, in audit order.
    pub pools: Vec<PoolReport>,
    /// Sorted by pool (in audit order; findings of no pool last), kind, then instance
    /// (old instances oldest first).
    pub findings: Vec<Finding>,
    /// Parts that could not be read (exit status 2).
    pub failures: Vec<Failure>,
    /// One line per backend: where it looked and what it cost.
    pub backends: Vec<BackendReport>,
    /// Fleet-wide sums.
    pub totals: Totals,
    /// 0 clean, 1 findings at or above `fail_on`, 2 a part failed.
    pub exit_status: u8,
}
