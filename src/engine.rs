//! One evaluation cycle: lock the named pools (one actor per pool), read them and their counts
//! (one query each), plan each pool, decide which are due, validate their executor settings,
//! let each backend batch its reads, scale the due pools concurrently, and record the outcomes
//! in batches. The loop around it lives in `run.rs`.

use crate::db::{Database, DbError, PoolLocks};
use crate::planner::{Counts, Planners};
use async_trait::async_trait;
use autoscaler_executor::{
    BusyWorker, DirectoryError, ErrorKind, Executor, ExecutorError, Outcome, Plan, WorkerDirectory,
    WorkerPool,
};
use chrono::Utc;
use futures::future::{BoxFuture, Shared};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

mod due;
mod history;
mod memory;
mod record;
mod registry;
mod scale;
mod triage;

pub use due::DueCheck;
use memory::Memory;
pub use memory::{WRITE_BACKOFF_BASE, WRITE_BACKOFF_CAP};
pub use registry::{Registry, ALL_EXECUTORS};
use triage::{triage, Facts, Rows, Rules, State};

/// Which pools a cycle evaluates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every named pool (a full cycle, every `--sleep` seconds).
    All,
    /// Only pools with a declarative executor: the cheap fast poll between full cycles, so a
    /// queue change reaches an Auto Scaling group or MIG within about a second.
    Declarative,
}

/// Settings of the engine that come from the command line and config file.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// Plan and describe, change nothing, write nothing.
    pub dry_run: bool,
    /// Pools scaled at the same time.
    pub concurrency: usize,
    /// The runaway guard: at most this many workers more than the last applied size per
    /// cycle (and at most this many launched by one non-declarative call). None: unlimited.
    pub max_step_up: Option<u32>,
    /// After SIGTERM/SIGINT, how long executor calls in progress may run before they are
    /// stopped (their pools are then recorded as cancelled, never as successes).
    pub shutdown_grace: Duration,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            dry_run: false,
            concurrency: 8,
            max_step_up: None,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// What happened to one named pool in one cycle.
#[derive(Clone, Debug, PartialEq)]
pub enum PoolResult {
    /// No pool has that name (a warning, not an error).
    Missing,
    /// `autoscaling_enabled` is false: not evaluated, not written.
    Disabled,
    /// Another autoscaler process holds the pool this cycle: not evaluated, not written.
    HeldElsewhere,
    /// Planned, but neither the timer nor a changed plan called for the executor; not written.
    NotDue {
        /// The plan it would have applied: metrics and dry runs show it all the same.
        plan: Plan,
        /// What it was planned from.
        counts: Counts,
    },
    /// The executor ran (or, in a dry run, described) and succeeded.
    Scaled {
        /// The plan applied.
        plan: Plan,
        /// What it was planned from.
        counts: Counts,
        /// What the executor did (its actions, the size it applied, whether to come back).
        outcome: Outcome,
    },
    /// Settings, template or executor failure; `status` was written to `autoscaling_status`
    /// (except in a dry run).
    /// Built by [`PoolResult::failed`] only, so `status` is always the one `kind` writes.
    Failed {
        /// What `autoscaling_status` was set to: `kind`'s code.
        status: i32,
        /// What failed, for metrics labels and logs.
        kind: FailureKind,
        /// The failure in words, naming the pool.
        error: String,
        /// The cloud's reason code, when it gave one (see `ExecutorError::reason`).
        reason: Option<String>,
    },
    /// Due, but not started because the process is shutting down: nothing done, not written.
    Interrupted,
}

impl PoolResult {
    /// A failure of `kind`: its status is the one `kind` writes, never chosen by hand.
    pub fn failed(kind: FailureKind, error: String, reason: Option<String>) -> Self {
        PoolResult::Failed {
            status: kind.status_code(),
            kind,
            error,
            reason,
        }
    }
}

/// What made a pool fail in a cycle: its settings or its executor ([`ErrorKind`], which also
/// gives the `autoscaling_status` written), or the Vespene database under the cycle, which the
/// executors' kinds do not cover and which is never written (the write is what failed, or the
/// pool's lock may be gone).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// A setting, the template, or the executor call.
    Executor(ErrorKind),
    /// The connection holding the pool's lock was lost, or the result could not be recorded.
    Database,
}

impl FailureKind {
    /// The stable lowercase name of metrics labels and JSON logs (`config`, `timeout`, …,
    /// `database`).
    pub fn as_str(&self) -> &'static str {
        match self {
            FailureKind::Executor(kind) => kind.as_str(),
            FailureKind::Database => "database",
        }
    }

    /// The status a report shows for it (1 for the database: it is not written).
    pub fn status_code(&self) -> i32 {
        match self {
            FailureKind::Executor(kind) => kind.status_code(),
            FailureKind::Database => 1,
        }
    }
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Scripts and tests compare a kind with its label (`"launch_failed"`), as in the logs.
impl PartialEq<&str> for FailureKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// One pool's line in a cycle report.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolReport {
    /// The pool as named on the command line.
    pub name: String,
    /// Its `executor` column, when its row was read: metrics label by it.
    pub executor: Option<String>,
    /// What the cycle did with it.
    pub result: PoolResult,
}

/// Everything one cycle did, in the order the pools were named.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CycleReport {
    /// One line per distinct named pool (a pool named twice is evaluated once).
    pub pools: Vec<PoolReport>,
}

impl CycleReport {
    /// The pools that failed; `--force` exits non-zero when there is any.
    pub fn failures(&self) -> impl Iterator<Item = &PoolReport> {
        self.pools
            .iter()
            .filter(|p| matches!(p.result, PoolResult::Failed { .. }))
    }
}

/// Answers executors' "which workers are busy" from the Vespene database, on the cycle's
/// connection: several pools' reads wait for each other there (measured in
/// docs/performance.md), and a read that succeeds proves the pool's lock is still held.
struct DbDirectory<'a>(&'a PoolLocks);

#[async_trait]
impl WorkerDirectory for DbDirectory<'_> {
    async fn busy_workers(&self, pool: &WorkerPool) -> Result<Vec<BusyWorker>, DirectoryError> {
        self.0
            .busy_workers(pool.id)
            .await
            .map_err(|e| DirectoryError(e.to_string()))
    }
}

/// The autoscaling engine; one per process.
pub struct Engine {
    db: Database,
    registry: Registry,
    planners: Planners,
    options: EngineOptions,
    memory: Mutex<HashMap<i64, Memory>>,
    /// Arrival histories for planners that learn from them (`warm`), read at most hourly.
    history: tokio::sync::Mutex<crate::db::HistoryCache>,
}

/// One backend's `prepare` for the pools of a cycle, awaited by each of them: `Some` holds the
/// failure every one of those pools then reports.
type Prepared = Shared<BoxFuture<'static, Option<(ErrorKind, String)>>>;

/// A pool that passed every check and will be handed to its executor.
struct Job {
    index: usize,
    pool: WorkerPool,
    plan: Plan,
    counts: Counts,
    executor: Arc<dyn Executor>,
}

impl Engine {
    /// Builds an engine over a database, the compiled-in backends and the planners.
    pub fn new(
        db: Database,
        registry: Registry,
        planners: Planners,
        options: EngineOptions,
    ) -> Self {
        Engine {
            db,
            registry,
            planners,
            options,
            memory: Mutex::new(HashMap::new()),
            history: tokio::sync::Mutex::new(crate::db::HistoryCache::new()),
        }
    }

    /// The pools of a full cycle's report whose executor is declarative: the only ones the
    /// fast polls between full cycles lock and read (empty: no fast polls at all).
    pub fn declarative_pools(&self, report: &CycleReport) -> Vec<String> {
        report
            .pools
            .iter()
            .filter(|p| {
                p.executor
                    .as_deref()
                    .and_then(|e| self.registry.executors.get(e.trim()))
                    .is_some_and(|e| e.declarative())
            })
            .map(|p| p.name.clone())
            .collect()
    }

    /// The database, for callers that share the connection (metrics, audit).
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Runs one cycle over the named pools. `force` ignores every timer. Pools not yet started
    /// when `stop` turns true are left alone (not written); pools in progress get the
    /// shutdown grace period, then are stopped and recorded as cancelled.
    ///
    /// Returns `Err` only when the pools or their counts could not be read: then nothing was
    /// done to any pool.
    pub async fn run_cycle(
        &self,
        names: &[String],
        force: bool,
        stop: &watch::Receiver<bool>,
    ) -> Result<CycleReport, DbError> {
        self.run_scoped_cycle(names, force, Scope::All, stop).await
    }

    /// [`Engine::run_cycle`] over a subset: with [`Scope::Declarative`], only the enabled pools
    /// whose executor is declarative are evaluated (and reported); the rest are left for the
    /// next full cycle, silently.
    pub async fn run_scoped_cycle(
        &self,
        names: &[String],
        force: bool,
        scope: Scope,
        stop: &watch::Receiver<bool>,
    ) -> Result<CycleReport, DbError> {
        if names.is_empty() {
            return Ok(CycleReport::default());
        }
        // Lock first, then read: what we act on was read while we held the pool. Every
        // statement of the cycle goes through the connection that holds the locks.
        let locks = self.db.lock_pools(names).await?;
        let result = self.locked_cycle(names, force, scope, stop, &locks).await;
        locks.release().await;
        result
    }

    /// The cycle under the locks: read, decide ([`triage`]), then carry the plan out. Every
    /// statement goes through the connection that holds the locks.
    async fn locked_cycle(
        &self,
        names: &[String],
        force: bool,
        scope: Scope,
        stop: &watch::Receiver<bool>,
        locks: &PoolLocks,
    ) -> Result<CycleReport, DbError> {
        let now = Utc::now();
        let mut rows = Rows::split(locks.load_pools_checked(names).await?);
        let names = rows.in_scope(names, scope, &self.registry);
        let held: HashSet<i64> = rows
            .pools
            .iter()
            .map(|p| p.id)
            .chain(rows.unreadable.values().filter_map(|e| e.id))
            .filter(|id| locks.holds(*id))
            .collect();
        let planned = rows.to_plan(&names, &held);
        let mine: Vec<i64> = planned.iter().map(|p| p.id).collect();
        let counts = locks.count_builds(&mine).await?;
        self.load_histories(&planned, now, locks).await;
        if scope == Scope::All {
            self.retain_histories(&mine).await;
        }
        let facts = Facts {
            names: &names,
            rows: &rows,
            held: &held,
            counts: &counts,
            now,
            force,
            scope,
        };
        let rules = Rules {
            planners: &self.planners,
            registry: &self.registry,
            max_step_up: self.options.max_step_up,
        };
        let plan = triage(
            &facts,
            &rules,
            &mut self.memory.lock().expect("memory lock"),
        );
        if !self.options.dry_run {
            if let Err(e) = locks.record_failures(&plan.settings_failures).await {
                tracing::error!(
                    "could not record autoscaling_status of pools with bad settings: {e}"
                );
            }
        }
        let mut entries = plan.entries;
        let prepared = self.prepare(&plan.jobs);
        self.scale(plan.jobs, prepared, &mut entries, stop, locks)
            .await;
        let pools = entries
            .into_iter()
            .map(|e| PoolReport {
                name: e.name,
                executor: e.executor,
                result: match e.state {
                    State::Decided(result) => result,
                    // Due, but never started: the process began shutting down first.
                    State::Pending => PoolResult::Interrupted,
                },
            })
            .collect();
        Ok(CycleReport { pools })
    }
}

/// How a due pool's turn ended.
enum Turn {
    /// Its executor was called.
    Called(Result<Outcome, ExecutorError>),
    /// Not called: the connection holding the locks failed first.
    LockLost(DbError),
}

/// A due pool not called because its lock may be gone: failed, and not written (the pool may
/// be another process's now); the next cycle takes the lock again on a new connection.
fn lock_lost(pool: &WorkerPool, e: &DbError) -> PoolResult {
    let error = format!(
        "pool {}: not scaled: {e}; it is retried next cycle",
        pool.name
    );
    let kind = FailureKind::Database;
    tracing::error!(pool = %pool.name, executor = pool.executor.as_deref().unwrap_or(""), outcome = "failed",
        kind = kind.as_str(), "{error}");
    PoolResult::failed(kind, error, None)
}

/// Logs a pool failure and builds its result.
fn failed(pool: &WorkerPool, e: &ExecutorError) -> PoolResult {
    let kind = FailureKind::Executor(e.kind);
    let status = kind.status_code();
    let reason = e.reason.as_deref().unwrap_or("");
    tracing::error!(pool = %pool.name, executor = pool.executor.as_deref().unwrap_or(""), outcome = "failed",
        kind = kind.as_str(), status, reason, "{e}");
    PoolResult::failed(kind, e.to_string(), e.reason.clone())
}
