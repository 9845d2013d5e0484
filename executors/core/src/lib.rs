//! The one small interface between the autoscaler's engine and a backend that changes a fleet.
//!
//! The engine reads the Vespene database and plans; an [`Executor`] only applies a plan. Keeping
//! the interface this narrow (Nomad Autoscaler's `Scale` + `Status`) is what lets a backend be
//! written, tested and compiled on its own: `executors/shell`, `executors/aws-asg` and
//! `executors/gce-mig` each depend on this crate and nothing else of the autoscaler.

pub mod actions;
mod error;
pub mod inventory;
mod pool;
pub mod scale_in;
pub mod sizing;
pub mod standby;
pub mod template;
#[cfg(feature = "test-support")]
pub mod testing;

pub use actions::ActionLog;
pub use error::{describe_status, DirectoryError, ErrorKind, ExecutorError};
pub use inventory::{
    InstanceState, Inventory, InventoryGroup, InventoryInstance, InventorySnapshot, LaunchFailure,
    PoolInventory,
};
pub use pool::{BusyWorker, Plan, WorkerPool};
pub use template::{
    render_command, render_fixed_target, render_pool, render_target, TemplateError,
};

use async_trait::async_trait;

/// Lets an executor ask the Vespene database which machines are busy, without depending on it.
///
/// Scale-in must never kill a machine that runs a build; only the database knows which do
/// (`builds.status = 'RUNNING'` joined through `worker_id` to `workers.hostname`). The engine
/// implements this over its connection pool; tests implement it over a `Vec`.
#[async_trait]
pub trait WorkerDirectory: Send + Sync {
    /// The RUNNING builds of `pool` and their workers right now (a build with no worker yet
    /// included), read fresh on every call so a drain decision is never made on a stale answer.
    async fn busy_workers(&self, pool: &WorkerPool) -> Result<Vec<BusyWorker>, DirectoryError>;
}

/// Everything an executor needs for one pool in one cycle.
///
/// It is a struct rather than arguments so that adding a field later does not break every
/// backend's signature.
pub struct ScaleRequest<'a> {
    /// The pool row as read this cycle (every column, for templates and error messages).
    pub pool: &'a WorkerPool,
    /// What the planner wants.
    pub plan: Plan,
    /// Report what would be done and change nothing, anywhere.
    pub dry_run: bool,
    /// Which workers are busy, for drain-aware scale-in.
    pub workers: &'a dyn WorkerDirectory,
}

/// What an executor did (or, in a dry run, would do).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// One human-readable line per call made or, in a dry run, per call that would be made.
    /// The engine logs them and prints them for `--dry-run`, so they name the target and
    /// arguments.
    pub actions: Vec<String>,
    /// The size the target was left at (in workers), when the backend can tell; feeds the
    /// `applied size` metric and the audit.
    pub applied: Option<u32>,
    /// Ask to be called again next cycle even when the pool's timer is not due, because work is
    /// still in progress (e.g. instances draining in `Terminating:Wait`).
    pub revisit: bool,
}

/// What the target looks like now, for operators and the audit; `None` where a backend cannot
/// know (a shell command has no memory).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TargetStatus {
    /// The target's own name for itself (group name, group path).
    pub target: String,
    /// Size the group is asked to be, in workers.
    pub desired: u32,
    /// Machines that exist now (booting ones included), in workers.
    pub current: u32,
}

/// A backend that can change how many workers a pool has.
#[async_trait]
pub trait Executor: Send + Sync {
    /// The name a pool's `executor` column uses to pick this backend.
    fn name(&self) -> &'static str;

    /// True when applying the same plan twice is harmless (it sets a size rather than adding
    /// machines). The engine then applies a changed plan at once instead of waiting for the
    /// pool's `reevaluate_minutes`; a non-declarative backend keeps Vespene's timer semantics.
    fn declarative(&self) -> bool;

    /// Checks the pool's executor settings (its rendered `executor_command` above all) without
    /// any I/O. The engine calls it for every due pool before [`Executor::prepare`], so a pool
    /// with a bad template or a malformed target fails alone, with a clear error, and no
    /// backend call is made for it. The default renders the command and rejects an empty one.
    fn validate(&self, pool: &WorkerPool, plan: Plan) -> Result<(), ExecutorError> {
        render_pool(pool, plan).map(|_| ())
    }

    /// Called once per cycle, before any [`Executor::scale`], with every pool this backend is
    /// about to scale, so a cloud backend can batch its reads (one describe call for all
    /// groups). Only pools that passed [`Executor::validate`] are passed. A failure here fails
    /// every one of those pools, and no scale call is made.
    async fn prepare(&self, _pools: &[&WorkerPool], _dry_run: bool) -> Result<(), ExecutorError> {
        Ok(())
    }

    /// Bring the pool's target to the plan.
    async fn scale(&self, request: ScaleRequest<'_>) -> Result<Outcome, ExecutorError>;

    /// Read the target's current size without changing anything.
    async fn status(&self, _pool: &WorkerPool) -> Result<Option<TargetStatus>, ExecutorError> {
        Ok(None)
    }

    /// The backend's read-only view of its fleet, for `autoscaler audit`; `None` for a backend
    /// that keeps no fleet of its own to describe (a shell command). The default keeps every
    /// backend compiling; a cloud backend returns itself.
    fn inventory(&self) -> Option<&dyn Inventory> {
        None
    }
}
