//! One evaluation cycle: lock the named pools (one actor per pool), read them and their counts
//! (one query each), plan each pool, decide which are due, validate their executor settings,
//! let each backend batch its reads, scale the due pools concurrently, and record the outcomes
//! in batches. The loop around it lives in `run.rs`.

use crate::db::{Database, DbError, PoolLocks};
use crate::planner::{self, Counts, PlanInput, Planners, SettingError};
use async_trait::async_trait;
use autoscaler_executor::{
    BusyWorker, DirectoryError, ErrorKind, Executor, ExecutorError, Outcome, Plan, ScaleRequest,
    WorkerDirectory, WorkerPool,
};
use chrono::{DateTime, Utc};
use futures::future::{BoxFuture, FutureExt, Shared};
use futures::stream::{FuturesUnordered, StreamExt};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

mod due;
mod history;
mod memory;
mod record;
mod registry;

pub use due::DueCheck;
use memory::Memory;
pub use memory::{WRITE_BACKOFF_BASE, WRITE_BACKOFF_CAP};
pub use registry::{Registry, ALL_EXECUTORS};

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
        /// The cloud's reason code, when it gave one (see `ExecutorError::reason`).
        reason: Option<String>,
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

    async fn locked_cycle(
        &self,
        names: &[String],
        force: bool,
        scope: Scope,
        stop: &watch::Receiver<bool>,
        locks: &PoolLocks,
    ) -> Result<CycleReport, DbError> {
        let now = Utc::now();
        let loaded = locks.load_pools_checked(names).await?;
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
        let planned: Vec<&WorkerPool> = names
            .iter()
            .filter_map(|n| by_name.get(n.as_str()).copied())
            .filter(|p| p.autoscaling_enabled && locks.holds(p.id))
            .collect();
        let mine: Vec<i64> = planned.iter().map(|p| p.id).collect();
        let counts = locks.count_builds(&mine).await?;
        self.load_histories(&planned, now, locks).await;
        if scope == Scope::All {
            self.retain_histories(&mine).await;
        }

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
                        reason: None,
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
                    report.result = failed(pool, &e);
                    reports.push(report);
                }
            }
        }
        if !self.options.dry_run {
            if let Err(e) = locks.record_failures(&settings_failures).await {
                tracing::error!(
                    "could not record autoscaling_status of pools with bad settings: {e}"
                );
            }
        }

        // Each backend batches its reads for all of its pools once, every backend at the same
        // time, and a pool starts as soon as its own backend is prepared: a cloud endpoint that
        // never answers holds back the pools of that backend only.
        let mut prepared: BTreeMap<&'static str, Prepared> = BTreeMap::new();
        let mut groups: BTreeMap<&'static str, (Arc<dyn Executor>, Vec<WorkerPool>)> =
            BTreeMap::new();
        for job in &jobs {
            groups
                .entry(job.executor.name())
                .or_insert_with(|| (job.executor.clone(), Vec::new()))
                .1
                .push(job.pool.clone());
        }
        for (name, (executor, pools)) in groups {
            let dry_run = self.options.dry_run;
            let prepare = async move {
                let refs: Vec<&WorkerPool> = pools.iter().collect();
                executor
                    .prepare(&refs, dry_run)
                    .await
                    .err()
                    .map(|e| (e.kind, e.message))
            };
            prepared.insert(name, prepare.boxed().shared());
        }

        // Scale concurrently (at most `concurrency` executor calls at once); record whatever
        // has finished in batches (one UPDATE for all the successes that are ready), so a slow
        // pool never holds back another pool's record. The calls and the records run side by
        // side: both use the one connection, and a call waiting on it must keep being polled.
        let directory = DbDirectory(locks);
        let directory = &directory;
        let slots = tokio::sync::Semaphore::new(self.options.concurrency.max(1));
        let slots = &slots;
        let told = std::sync::atomic::AtomicBool::new(false);
        let told = &told;
        let not_started = move || {
            if !told.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::info!("shutting down: not starting the remaining pools");
            }
            None
        };
        let mut calls = jobs
            .into_iter()
            .map(|job| {
                let prepare = prepared[job.executor.name()].clone();
                let mut stop = stop.clone();
                let grace = self.options.shutdown_grace;
                async move {
                    let result = async {
                        let prepare_failed = tokio::select! {
                            p = prepare => p,
                            _ = stop.wait_for(|s| *s) => return not_started(),
                        };
                        if let Some((kind, message)) = prepare_failed {
                            return Some(Turn::Called(Err(ExecutorError::new(&job.pool.name, kind, message))));
                        }
                        let _slot = tokio::select! {
                            s = slots.acquire() => s.expect("the semaphore is never closed"),
                            _ = stop.wait_for(|s| *s) => return not_started(),
                        };
                        if *stop.borrow() {
                            return not_started();
                        }
                        // Never call an executor for a pool whose lock may be gone: the
                        // lock connection must answer after this call's turn came.
                        if let Err(e) = locks.check(std::time::Instant::now()).await {
                            return Some(Turn::LockLost(e));
                        }
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
                        Some(Turn::Called(tokio::select! {
                            r = scale => r,
                            _ = deadline => Err(ExecutorError::new(
                                &job.pool.name,
                                ErrorKind::Cancelled,
                                format!("executor call stopped {} s after shutdown began; its work may be incomplete", grace.as_secs()),
                            )),
                        }))
                    }
                    .await;
                    // The time the call ended is what restarts the pool's timer.
                    result.map(|r| (job, r, Utc::now()))
                }
            })
            .collect::<FuturesUnordered<_>>()
            .filter_map(std::future::ready);
        let (done, mut finished) = futures::channel::mpsc::unbounded();
        let calls = async move {
            while let Some(f) = calls.next().await {
                let _ = done.unbounded_send(f);
            }
        };
        let records = async {
            while let Some(first) = finished.next().await {
                let mut chunk = vec![first];
                while chunk.len() < 256 {
                    match finished.try_recv() {
                        Ok(f) => chunk.push(f),
                        Err(_) => break,
                    }
                }
                let mut called = Vec::with_capacity(chunk.len());
                for (job, turn, ended) in chunk {
                    match turn {
                        Turn::Called(r) => called.push((job, r, ended)),
                        Turn::LockLost(e) => reports[job.index].result = lock_lost(&job.pool, &e),
                    }
                }
                for (index, result) in self.record(called, locks).await {
                    reports[index].result = result;
                }
            }
        };
        futures::join!(calls, records);
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
        let (mut plan, why) = crate::guard::limit(
            planned,
            pool,
            memory.last_plan.map(|p| p.size),
            self.options.max_step_up,
        );
        // Standby is planned on the size as applied (after the guard), so size and standby
        // together stay within the pool's maximum.
        plan.standby = self
            .planners
            .standby(&input, &mut memory.planner, &plan)
            .map_err(setting)?;
        for w in why {
            tracing::warn!(pool = %pool.name, outcome = "clamped", "pool {}: {w}", pool.name);
        }
        if planner::in_future(pool, now) {
            tracing::warn!(pool = %pool.name, outcome = "clock", "pool {}: last_autoscaled {} is in the future; treating the pool as due",
                pool.name, pool.last_autoscaled.map(|t| t.to_rfc3339()).unwrap_or_default());
        }
        let held = !memory.allows(pool, now);
        if held && !force {
            tracing::debug!(pool = %pool.name, outcome = "held", "pool {}: its last status write failed; waiting before calling it again", pool.name);
            return Ok((plan, None));
        }
        let due = DueCheck {
            force,
            full_cycle: scope == Scope::All,
            timer_due: planner::is_due(pool, now),
            declarative: executor.declarative(),
            revisit: memory.revisit,
            failed: memory.failed,
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
    tracing::error!(pool = %pool.name, executor = pool.executor.as_deref().unwrap_or(""), outcome = "failed",
        kind = "database", "{error}");
    PoolResult::Failed {
        status: 1,
        kind: "database",
        error,
        reason: None,
    }
}

/// Logs a pool failure and builds its result.
fn failed(pool: &WorkerPool, e: &ExecutorError) -> PoolResult {
    let status = e.kind.status_code();
    let reason = e.reason.as_deref().unwrap_or("");
    tracing::error!(pool = %pool.name, executor = pool.executor.as_deref().unwrap_or(""), outcome = "failed",
        kind = e.kind.as_str(), status, reason, "{e}");
    PoolResult::Failed {
        status,
        kind: e.kind.as_str(),
        error: e.to_string(),
        reason: e.reason.clone(),
    }
}
