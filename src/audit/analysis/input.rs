//! What the audit judges: the thresholds, the audited pools with their database facts, and
//! each backend's inventory, gathered by the command and handed over whole.

use super::*;

/// The thresholds.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// How long running ≠ desired may last before it is drift (machines take minutes to boot).
    pub drift_grace: Duration,
    /// How long a drain may take before it is stuck.
    pub drain_limit: Duration,
    /// How long a machine may run before its worker must have checked in.
    pub boot_allowance: Duration,
    /// How old a gone machine's `workers` row must be to be reported.
    pub stale_worker: Duration,
    /// The Vespene version images should carry; `None`: not checked.
    pub expected_version: Option<String>,
    /// `--older-than`: report machines launched longer ago.
    pub older_than: Option<Duration>,
    /// Lowest severity that makes the exit status 1; `None` = never.
    pub fail_on: Option<Severity>,
}

/// One audited pool and its database facts.
#[derive(Clone, Debug)]
pub struct PoolInput {
    /// The pool's row.
    pub pool: WorkerPool,
    /// The executor name (a key of [`Input::sources`]).
    pub executor: String,
    /// QUEUED builds: a machine that never checked in is an error only while builds wait.
    pub queued_builds: u64,
    /// RUNNING builds of the pool.
    pub running_builds: u64,
    /// Hostnames holding a RUNNING build of the pool.
    pub busy: Vec<BusyWorker>,
}

/// Everything the analysis looks at.
#[derive(Debug)]
pub struct Input {
    /// The clock every age is measured against (`--now` for reproducible reports).
    pub now: DateTime<Utc>,
    /// The thresholds.
    pub options: Options,
    /// In audit order.
    pub pools: Vec<PoolInput>,
    /// One inventory per executor name.
    pub sources: BTreeMap<String, Result<InventorySnapshot, ExecutorError>>,
    /// Every `workers` row.
    pub workers: Vec<WorkerRow>,
    /// `workers.id` → ids of the audited pools it ran builds for.
    pub worker_pools: HashMap<i32, Vec<i64>>,
    /// No `--queue`: every cloud pool is audited, so an instance labelled for a pool that does
    /// not exist is an orphan too.
    pub all_pools: bool,
    /// Parts that failed before the analysis (a named pool that does not exist, …).
    pub failures: Vec<Failure>,
}
