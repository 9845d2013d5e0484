//! The decision core of a cycle, with no database and no cloud in it: from the rows read
//! under the locks, the rows that could not be read, the locks this process holds, the build
//! counts and the engine's memory, [`triage`] decides for every named pool what the cycle
//! does with it, and returns that as a [`CyclePlan`]. Everything after it (each backend's
//! `prepare`, the executor calls, the status writes) only carries the plan out, so every
//! decision can be read, and tested, here.

use super::memory::Memory;
use super::{DueCheck, FailureKind, Job, PoolResult, Registry, Scope};
use crate::db::UnreadablePool;
use crate::planner::{self, Counts, PlanInput, Planners, SettingError};
use autoscaler_executor::{ErrorKind, Executor, ExecutorError, Plan, WorkerPool};
use chrono::{DateTime, Utc};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// The `worker_pools` rows of a cycle, split into those that could be read and those that
/// could not (each of which fails its own pool only, naming the column).
#[derive(Debug, Default)]
pub(super) struct Rows {
    /// Rows read whole.
    pub(super) pools: Vec<WorkerPool>,
    /// Rows with an unreadable column, by the name read from them (empty when not even that).
    pub(super) unreadable: HashMap<String, UnreadablePool>,
}

impl Rows {
    /// Splits what the database returned.
    pub(super) fn split(loaded: Vec<Result<WorkerPool, UnreadablePool>>) -> Self {
        let mut rows = Rows {
            pools: Vec::with_capacity(loaded.len()),
            unreadable: HashMap::new(),
        };
        for r in loaded {
            match r {
                Ok(p) => rows.pools.push(p),
                Err(e) => {
                    rows.unreadable
                        .insert(e.name.clone().unwrap_or_default(), e);
                }
            }
        }
        rows
    }

    /// The pools a cycle of this scope evaluates. A fast poll ([`Scope::Declarative`]) looks
    /// only at enabled pools whose backend is declarative, and leaves unreadable rows to the
    /// next full cycle, which reports them.
    pub(super) fn in_scope(
        &mut self,
        names: &[String],
        scope: Scope,
        registry: &Registry,
    ) -> Vec<String> {
        match scope {
            Scope::All => names.to_vec(),
            Scope::Declarative => {
                self.unreadable.clear();
                self.pools
                    .iter()
                    .filter(|p| p.autoscaling_enabled && registry.is_declarative(p))
                    .map(|p| p.name.clone())
                    .collect()
            }
        }
    }

    /// The named pools whose builds are counted (and histories read): enabled and locked by
    /// this process. The others are not planned, so their counts are not needed.
    pub(super) fn to_plan<'a>(
        &'a self,
        names: &[String],
        held: &HashSet<i64>,
    ) -> Vec<&'a WorkerPool> {
        let by_name = self.by_name();
        names
            .iter()
            .filter_map(|n| by_name.get(n.as_str()).copied())
            .filter(|p| p.autoscaling_enabled && held.contains(&p.id))
            .collect()
    }

    fn by_name(&self) -> HashMap<&str, &WorkerPool> {
        self.pools.iter().map(|p| (p.name.as_str(), p)).collect()
    }
}

/// The facts one cycle decides on.
pub(super) struct Facts<'a> {
    /// The pools named for this cycle (after [`Rows::in_scope`]), in order, possibly twice.
    pub(super) names: &'a [String],
    /// Their rows.
    pub(super) rows: &'a Rows,
    /// The ids of the pools whose lock this process holds this cycle.
    pub(super) held: &'a HashSet<i64>,
    /// QUEUED and RUNNING builds by pool id; a pool without an entry has none.
    pub(super) counts: &'a HashMap<i64, Counts>,
    /// The cycle's clock.
    pub(super) now: DateTime<Utc>,
    /// `--force`: every timer ignored.
    pub(super) force: bool,
    /// A full cycle or a fast poll.
    pub(super) scope: Scope,
}

/// What the decisions are made with: the planners, the backends, and the runaway guard.
pub(super) struct Rules<'a> {
    /// The planners, by name.
    pub(super) planners: &'a Planners,
    /// The compiled-in backends.
    pub(super) registry: &'a Registry,
    /// The runaway guard's step (`max_step_up`).
    pub(super) max_step_up: Option<u32>,
}

/// One named pool's place in the cycle.
#[derive(Debug)]
pub(super) enum State {
    /// Decided without an executor call: this is its result.
    Decided(PoolResult),
    /// Due: handed to its executor, and decided by the call. A pool still pending when the
    /// cycle ends was never started (the process is shutting down).
    Pending,
}

/// One named pool in a [`CyclePlan`], in the order the pools were named.
#[derive(Debug)]
pub(super) struct Entry {
    /// The name as given.
    pub(super) name: String,
    /// The pool's `executor` column, when its row was read.
    pub(super) executor: Option<String>,
    /// What the cycle does with it.
    pub(super) state: State,
}

/// What a cycle does, decided before anything is done.
#[derive(Default)]
pub(super) struct CyclePlan {
    /// Every distinct named pool, in order.
    pub(super) entries: Vec<Entry>,
    /// The due pools, each pointing at its entry.
    pub(super) jobs: Vec<Job>,
    /// Pools failed by their settings or an unreadable row, with the status to write.
    pub(super) settings_failures: Vec<(i64, i32)>,
}

/// Decides every named pool's fate: unreadable rows fail (config), missing pools are skipped
/// with a warning, disabled pools and pools held by another process are skipped, a pool named
/// twice is decided once; the rest are planned, and either not due, failed by a setting, or
/// pending for their executor. Planning updates the pools' memory (planner state).
pub(super) fn triage(
    facts: &Facts<'_>,
    rules: &Rules<'_>,
    memory: &mut HashMap<i64, Memory>,
) -> CyclePlan {
    let by_name = facts.rows.by_name();
    let mut plan = CyclePlan::default();
    let mut seen = HashSet::new();
    for name in facts.names {
        if !seen.insert(name.as_str()) {
            continue; // the same --queue twice is evaluated once
        }
        let index = plan.entries.len();
        let decided = |executor: Option<String>, result: PoolResult| Entry {
            name: name.clone(),
            executor,
            state: State::Decided(result),
        };
        if let Some(e) = facts.rows.unreadable.get(name.as_str()) {
            let kind = FailureKind::Executor(ErrorKind::Config);
            let status = kind.status_code();
            tracing::error!(pool = %name, outcome = "failed", kind = kind.as_str(), status, "{e}");
            if let Some(id) = e.id.filter(|id| facts.held.contains(id)) {
                plan.settings_failures.push((id, status));
            }
            plan.entries
                .push(decided(None, PoolResult::failed(kind, e.to_string(), None)));
            continue;
        }
        let Some(pool) = by_name.get(name.as_str()).copied() else {
            tracing::warn!(pool = %name, outcome = "missing", "pool {name}: no worker pool with this name; skipping it");
            plan.entries.push(decided(None, PoolResult::Missing));
            continue;
        };
        let executor = pool.executor.clone();
        if !pool.autoscaling_enabled {
            tracing::debug!(pool = %name, outcome = "disabled", "pool {name}: autoscaling disabled; skipping it");
            plan.entries.push(decided(executor, PoolResult::Disabled));
            continue;
        }
        if !facts.held.contains(&pool.id) {
            tracing::debug!(pool = %name, outcome = "held_elsewhere",
                "pool {name}: another autoscaler holds this pool this cycle; skipping it");
            plan.entries
                .push(decided(executor, PoolResult::HeldElsewhere));
            continue;
        }
        let counts = facts.counts.get(&pool.id).copied().unwrap_or_default();
        let memory = memory.entry(pool.id).or_default();
        match evaluate(pool, counts, facts, rules, memory) {
            Ok((p, Some(backend))) => {
                plan.entries.push(Entry {
                    name: name.clone(),
                    executor,
                    state: State::Pending,
                });
                plan.jobs.push(Job {
                    index,
                    pool: pool.clone(),
                    plan: p,
                    counts,
                    executor: backend,
                });
            }
            Ok((p, None)) => plan
                .entries
                .push(decided(executor, PoolResult::NotDue { plan: p, counts })),
            Err(e) => {
                plan.settings_failures.push((pool.id, e.status_code()));
                plan.entries
                    .push(decided(executor, super::failed(pool, &e)));
            }
        }
    }
    plan
}

/// Plans one pool, applies the runaway guard, decides whether it is due and checks its
/// executor settings. The executor is returned only when the pool is due.
fn evaluate(
    pool: &WorkerPool,
    counts: Counts,
    facts: &Facts<'_>,
    rules: &Rules<'_>,
    memory: &mut Memory,
) -> Result<(Plan, Option<Arc<dyn Executor>>), ExecutorError> {
    let (now, force) = (facts.now, facts.force);
    let setting = |e: SettingError| {
        ExecutorError::new(
            &pool.name,
            ErrorKind::Config,
            format!("{}: {}", e.field, e.message),
        )
    };
    let input = PlanInput { pool, counts, now };
    let planned = rules
        .planners
        .plan(&input, &mut memory.planner)
        .map_err(setting)?;
    let executor = rules.registry.lookup(pool).map_err(setting)?;
    let (mut plan, why) = crate::guard::limit(
        planned,
        pool,
        memory.last_plan.map(|p| p.size),
        rules.max_step_up,
    );
    // Standby is planned on the size as applied (after the guard), so size and standby
    // together stay within the pool's maximum.
    plan.standby = rules
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
        full_cycle: facts.scope == Scope::All,
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

#[cfg(test)]
mod tests;
