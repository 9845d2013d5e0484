//! One evaluation cycle: lock the named pools (one actor per pool), read them and their counts
//! (one query each), plan each pool, decide which are due, validate their executor settings,
//! let each backend batch its reads, scale the due pools concurrently, and record the outcomes
//! in batches. The loop around it lives in `run.rs`.

use crate::db::{Database, DbError};
use crate::planner::{self, Counts, PlanInput, PlannerState, Planners, SettingError};
use async_trait::async_trait;
use autoscaler_executor::{
    BusyWorker, DirectoryError, ErrorKind, Executor, ExecutorError, Outcome, Plan, ScaleRequest,
    WorkerDirectory, WorkerPool,
};
use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// The backends compiled into this binary, by the name a pool's `executor` column uses.
#[derive(Clone, Default)]
pub struct Registry {
    executors: BTreeMap<&'static str, Arc<dyn Executor>>,
}

/// Every backend this project has, compiled in or not, so a pool naming one that was left out
/// of the build gets "not compiled in" rather than "unknown".
pub const ALL_EXECUTORS: &[&str] = &["shell", "aws-asg", "gce-mig"];

impl Registry {
    /// Adds a backend under its own name.
    pub fn register(&mut self, executor: Arc<dyn Executor>) {
        self.executors.insert(executor.name(), executor);
    }

    /// Names of the registered backends.
    pub fn names(&self) -> Vec<&'static str> {
        self.executors.keys().copied().collect()
    }

    /// Whether the pool's backend is registered and declarative.
    pub fn is_declarative(&self, pool: &WorkerPool) -> bool {
        self.lookup(pool).is_ok_and(|e| e.declarative())
    }

    /// The pool's backend, or a setting error naming the `executor` column.
    pub fn lookup(&self, pool: &WorkerPool) -> Result<Arc<dyn Executor>, SettingError> {
        let name = pool.executor.as_deref().map(str::trim).unwrap_or("");
        let err = |message: String| SettingError {
            pool: pool.name.clone(),
            field: "executor",
            message,
        };
        if name.is_empty() {
            return Err(err(format!(
                "not set (choose one of: {})",
                self.names().join(", ")
            )));
        }
        if let Some(e) = self.executors.get(name) {
            return Ok(e.clone());
        }
        if ALL_EXECUTORS.contains(&name) {
            return Err(err(format!(
                "{name:?} is not compiled into this build (rebuild with cargo feature `{name}`)"
            )));
        }
        Err(err(format!(
            "unknown executor {name:?} (known: {})",
            self.names().join(", ")
        )))
    }
}

/// Which pools a cycle evaluates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every named pool (a full cycle, every `--sleep` seconds).
    All,
    /// Only pools with a declarative executor: the cheap fast poll between full cycles, so a
    /// queue change reaches an Auto Scaling group or MIG within about a second.
    Declarative,
}

/// When a pool's executor is called: the one rule the engine and the simulator share.
#[derive(Clone, Copy, Debug)]
pub struct DueCheck {
    /// `--force`: always.
    pub force: bool,
    /// A full cycle (every `--sleep`), or a fast poll of the declarative pools in between.
    pub full_cycle: bool,
    /// The pool's `reevaluate_minutes` timer has run out.
    pub timer_due: bool,
    /// The executor sets a size (aws-asg, gce-mig) rather than launching machines.
    pub declarative: bool,
    /// The executor asked to be called again (instances draining).
    pub revisit: bool,
    /// The size this process last applied to the pool.
    pub last_size: Option<u32>,
    /// The size planned now.
    pub size: u32,
}

impl DueCheck {
    /// Full cycles: the timer, a revisit, or (declarative) a changed size. Fast polls only
    /// scale out: a queued build reaches its group within a poll, while scale-in and revisits
    /// wait for the next full cycle, so an idle machine is not deleted a second after its build
    /// ended (the simulator showed `stock` re-booting for every build otherwise) and a held
    /// drain is not re-checked every second.
    pub fn due(&self) -> bool {
        if self.force {
            return true;
        }
        if self.full_cycle {
            self.timer_due
                || self.revisit
                || (self.declarative && self.last_size != Some(self.size))
        } else {
            self.declarative && self.last_size.is_none_or(|last| self.size > last)
        }
    }
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
    NotDue { plan: Plan, counts: Counts },
    /// The executor ran (or, in a dry run, described) and succeeded.
    Scaled {
        plan: Plan,
        counts: Counts,
        outcome: Outcome,
    },
    /// Settings, template or executor failure; `status` was written to `autoscaling_status`
    /// (except in a dry run).
    Failed {
        status: i32,
        kind: &'static str,
        error: String,
    },
    /// Due, but not started because the process is shutting down: nothing done, not written.
    Interrupted,
}

/// One pool's line in a cycle report.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolReport {
    pub name: String,
    pub executor: Option<String>,
    pub result: PoolResult,
}

/// Everything one cycle did, in the order the pools were named.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CycleReport {
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

/// What the engine remembers between cycles about a pool.
#[derive(Clone, Debug, Default)]
struct Memory {
    /// The planner's own memory of this pool.
    planner: PlannerState,
    /// The plan last applied successfully: a declarative backend is called again as soon as
    /// its size differs, without waiting for the timer; and the runaway guard's base.
    last_plan: Option<Plan>,
    /// The backend asked to be called next cycle (draining in progress).
    revisit: bool,
}

/// Answers executors' "which workers are busy" from the Vespene database.
struct DbDirectory<'a>(&'a Database);

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
}

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
        // Lock first, then read: what we act on was read while we held the pool.
        let locks = self.db.lock_pools(names).await?;
        let result = self.locked_cycle(names, force, scope, stop, &locks).await;
        locks.release().await;
        result
    }

    async fn locked_cycle(
        &self,
        names: &[String],
        force: bool,
        scope: Scope,
        stop: &watch::Receiver<bool>,
        locks: &crate::db::PoolLocks,
    ) -> Result<CycleReport, DbError> {
        let now = Utc::now();
        let loaded = self.db.load_pools_checked(names).await?;
        let mut rows = Vec::with_capacity(loaded.len());
        let mut unreadable: HashMap<String, crate::db::UnreadablePool> = HashMap::new();
        for r in loaded {
            match r {
                Ok(p) => rows.push(p),
                Err(e) => {
                    unreadable.insert(e.name.clone().unwrap_or_default(), e);
                }
            }
        }
        let scoped: Vec<String>;
        let names: &[String] = match scope {
            Scope::All => names,
            Scope::Declarative => {
                unreadable.clear();
                scoped = rows
                    .iter()
                    .filter(|p| p.autoscaling_enabled && self.registry.is_declarative(p))
                    .map(|p| p.name.clone())
                    .collect();
                &scoped
            }
        };
        let by_name: HashMap<&str, &WorkerPool> =
            rows.iter().map(|p| (p.name.as_str(), p)).collect();
        let mine: Vec<i64> = names
            .iter()
            .filter_map(|n| by_name.get(n.as_str()))
            .filter(|p| p.autoscaling_enabled && locks.holds(p.id))
            .map(|p| p.id)
            .collect();
        let counts = self.db.count_builds(&mine).await?;

        let mut reports: Vec<PoolReport> = Vec::with_capacity(names.len());
        let mut jobs: Vec<Job> = Vec::new();
        let mut settings_failures: Vec<(i64, i32)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for name in names {
            if !seen.insert(name.as_str()) {
                continue; // the same --queue twice is evaluated once
            }
            let index = reports.len();
            if let Some(e) = unreadable.get(name.as_str()) {
                let status = ErrorKind::Config.status_code();
                tracing::error!(pool = %name, outcome = "failed", kind = "config", status, "{e}");
                if let Some(id) = e.id.filter(|id| locks.holds(*id)) {
                    settings_failures.push((id, status));
                }
                reports.push(PoolReport {
                    name: name.clone(),
                    executor: None,
                    result: PoolResult::Failed {
                        status,
                        kind: "config",
                        error: e.to_string(),
                    },
                });
                continue;
            }
            let Some(pool) = by_name.get(name.as_str()).copied() else {
                tracing::warn!(pool = %name, outcome = "missing", "pool {name}: no worker pool with this name; skipping it");
                reports.push(PoolReport {
                    name: name.clone(),
                    executor: None,
                    result: PoolResult::Missing,
                });
                continue;
            };
            let mut report = PoolReport {
                name: name.clone(),
                executor: pool.executor.clone(),
                result: PoolResult::Disabled,
            };
            if !pool.autoscaling_enabled {
                tracing::debug!(pool = %name, outcome = "disabled", "pool {name}: autoscaling disabled; skipping it");
                reports.push(report);
                continue;
            }
            if !locks.holds(pool.id) {
                tracing::debug!(pool = %name, outcome = "held_elsewhere",
                    "pool {name}: another autoscaler holds this pool this cycle; skipping it");
                report.result = PoolResult::HeldElsewhere;
                reports.push(report);
                continue;
            }
            let c = counts.get(&pool.id).copied().unwrap_or_default();
            match self.evaluate(pool, c, now, force, scope) {
                Ok((plan, Some(executor))) => {
                    report.result = PoolResult::Interrupted;
                    reports.push(report);
                    jobs.push(Job {
                        index,
                        pool: pool.clone(),
                        plan,
                        counts: c,
                        executor,
                    });
                }
                Ok((plan, None)) => {
                    report.result = PoolResult::NotDue { plan, counts: c };
                    reports.push(report);
                }
                Err(e) => {
                    settings_failures.push((pool.id, e.status_code()));
                    report.result = failed(pool, e.kind, &e.to_string());
                    reports.push(report);
                }
            }
        }
        if !self.options.dry_run {
            if let Err(e) = self.db.record_failures(&settings_failures).await {
                tracing::error!(
                    "could not record autoscaling_status of pools with bad settings: {e}"
                );
            }
        }

        // Let each backend batch its reads for all of its pools, once.
        let mut by_executor: BTreeMap<&'static str, Vec<usize>> = BTreeMap::new();
        for (i, job) in jobs.iter().enumerate() {
            by_executor.entry(job.executor.name()).or_default().push(i);
        }
        let mut failed_prepare: HashMap<usize, ExecutorError> = HashMap::new();
        for idxs in by_executor.values() {
            let executor = jobs[idxs[0]].executor.clone();
            let pools: Vec<&WorkerPool> = idxs.iter().map(|&i| &jobs[i].pool).collect();
            if let Err(e) = executor.prepare(&pools, self.options.dry_run).await {
                for &i in idxs {
                    let err = ExecutorError::new(&jobs[i].pool.name, e.kind, e.message.clone());
                    failed_prepare.insert(i, err);
                }
            }
        }

        // Scale concurrently; record whatever has finished in batches (one UPDATE for all the
        // successes that are ready), so a slow pool never holds back another pool's record.
        let directory = DbDirectory(&self.db);
        let directory = &directory;
        let stop_starting = stop.clone();
        let mut finished = stream::iter(jobs.into_iter().enumerate())
            .take_while(|_| {
                let stopping = *stop_starting.borrow();
                if stopping {
                    tracing::info!("shutting down: not starting the remaining pools");
                }
                std::future::ready(!stopping)
            })
            .map(|(i, job)| {
                let prepared = failed_prepare.remove(&i);
                let mut stop = stop.clone();
                let grace = self.options.shutdown_grace;
                async move {
                    let result = match prepared {
                        Some(err) => Err(err),
                        None => {
                            let scale = job.executor.scale(ScaleRequest {
                                pool: &job.pool,
                                plan: job.plan,
                                dry_run: self.options.dry_run,
                                workers: directory,
                            });
                            let deadline = async {
                                let _ = stop.wait_for(|s| *s).await;
                                tokio::time::sleep(grace).await;
                            };
                            tokio::select! {
                                r = scale => r,
                                _ = deadline => Err(ExecutorError::new(
                                    &job.pool.name,
                                    ErrorKind::Cancelled,
                                    format!("executor call stopped {} s after shutdown began; its work may be incomplete", grace.as_secs()),
                                )),
                            }
                        }
                    };
                    (job, result)
                }
            })
            .buffer_unordered(self.options.concurrency.max(1))
            .ready_chunks(256);
        while let Some(chunk) = finished.next().await {
            for (index, result) in self.record(chunk, now).await {
                reports[index].result = result;
            }
        }
        Ok(CycleReport { pools: reports })
    }

    /// Plans one pool, applies the runaway guard, decides whether it is due and checks its
    /// executor settings. The executor is returned only when the pool is due.
    fn evaluate(
        &self,
        pool: &WorkerPool,
        counts: Counts,
        now: DateTime<Utc>,
        force: bool,
        scope: Scope,
    ) -> Result<(Plan, Option<Arc<dyn Executor>>), ExecutorError> {
        let setting = |e: SettingError| {
            ExecutorError::new(
                &pool.name,
                ErrorKind::Config,
                format!("{}: {}", e.field, e.message),
            )
        };
        let mut all = self.memory.lock().expect("memory lock");
        let memory = all.entry(pool.id).or_default();
        let input = PlanInput { pool, counts, now };
        let planned = self
            .planners
            .plan(&input, &mut memory.planner)
            .map_err(setting)?;
        let executor = self.registry.lookup(pool).map_err(setting)?;
        let (plan, why) = crate::guard::limit(
            planned,
            pool,
            memory.last_plan.map(|p| p.size),
            self.options.max_step_up,
        );
        for w in why {
            tracing::warn!(pool = %pool.name, outcome = "clamped", "pool {}: {w}", pool.name);
        }
        let due = DueCheck {
            force,
            full_cycle: scope == Scope::All,
            timer_due: planner::is_due(pool, now),
            declarative: executor.declarative(),
            revisit: memory.revisit,
            last_size: memory.last_plan.map(|p| p.size),
            size: plan.size,
        }
        .due();
        if !due {
            tracing::debug!(pool = %pool.name, size = plan.size, queued_size = plan.queued_size, outcome = "not_due",
                "pool {}: not due (reevaluate_minutes {})", pool.name, pool.reevaluate_minutes);
            return Ok((plan, None));
        }
        executor.validate(pool, plan)?;
        Ok((plan, Some(executor)))
    }

    /// Logs, remembers and records (in batches) a set of finished pools.
    async fn record(
        &self,
        chunk: Vec<(Job, Result<Outcome, ExecutorError>)>,
        now: DateTime<Utc>,
    ) -> Vec<(usize, PoolResult)> {
        let mut successes = Vec::new();
        let mut failures = Vec::new();
        let mut results = Vec::with_capacity(chunk.len());
        for (job, result) in chunk {
            let pool = &job.pool;
            let name = job.executor.name();
            match result {
                Ok(outcome) => {
                    for action in &outcome.actions {
                        tracing::info!(pool = %pool.name, executor = name, "[{}] {action}", pool.name);
                    }
                    let c = job.counts;
                    tracing::info!(
                        pool = %pool.name, executor = name, outcome = if self.options.dry_run { "dry_run" } else { "scaled" },
                        size = job.plan.size, queued_size = job.plan.queued_size,
                        queued = c.queued, queued_projects = c.queued_projects, running = c.running,
                        "pool {}: size {} (queued_size {}) from {c}", pool.name, job.plan.size, job.plan.queued_size
                    );
                    {
                        let mut all = self.memory.lock().expect("memory lock");
                        let memory = all.entry(pool.id).or_default();
                        memory.last_plan = Some(job.plan);
                        memory.revisit = outcome.revisit;
                    }
                    successes.push(pool.id);
                    results.push((
                        job.index,
                        PoolResult::Scaled {
                            plan: job.plan,
                            counts: job.counts,
                            outcome,
                        },
                    ));
                }
                Err(e) => {
                    // Forget the applied plan so a declarative pool is retried next cycle.
                    if let Some(memory) = self.memory.lock().expect("memory lock").get_mut(&pool.id)
                    {
                        memory.last_plan = None;
                        memory.revisit = false;
                    }
                    failures.push((pool.id, e.status_code()));
                    results.push((job.index, failed(pool, e.kind, &e.to_string())));
                }
            }
        }
        if !self.options.dry_run {
            if let Err(e) = self.db.record_failures(&failures).await {
                tracing::error!("could not record autoscaling_status of failed pools: {e}");
            }
            if let Err(e) = self.db.record_successes(&successes, now).await {
                let msg = format!("scaled, but could not record the result: {e}");
                tracing::error!(outcome = "failed", "{msg}");
                for (_, r) in results.iter_mut() {
                    if matches!(r, PoolResult::Scaled { .. }) {
                        *r = PoolResult::Failed {
                            status: 1,
                            kind: "database",
                            error: msg.clone(),
                        };
                    }
                }
            }
        }
        results
    }
}

/// Logs a pool failure and builds its result.
fn failed(pool: &WorkerPool, kind: ErrorKind, error: &str) -> PoolResult {
    let status = kind.status_code();
    tracing::error!(pool = %pool.name, executor = pool.executor.as_deref().unwrap_or(""), outcome = "failed",
        kind = kind.as_str(), status, "{error}");
    PoolResult::Failed {
        status,
        kind: kind.as_str(),
        error: error.to_string(),
    }
}
