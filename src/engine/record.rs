//! Recording what the executors did: logs, the engine's memory, and the batched status writes
//! (with the back-off when a write fails).

use super::{failed, Engine, FailureKind, Job, PoolResult};
use crate::db::PoolLocks;
use autoscaler_executor::{ExecutorError, Outcome};
use chrono::{DateTime, Utc};

impl Engine {
    /// Remembers whether the status writes of these pools went through, so a pool whose
    /// write failed is neither re-run at once nor every cycle. `hold`: back off before the
    /// next call; not when the write failed because the lock connection was lost (the next
    /// cycle writes on a new one; a success's timer still runs from it, in memory).
    fn remember_writes(
        &self,
        attempts: impl Iterator<Item = (i64, DateTime<Utc>)>,
        ok: bool,
        succeeded: bool,
        hold: bool,
    ) {
        let mut all = self.memory.lock().expect("memory lock");
        for (id, now) in attempts {
            let memory = all.entry(id).or_default();
            if ok {
                memory.write_succeeded();
            } else {
                if hold {
                    memory.write_failed(now);
                }
                if succeeded {
                    memory.unrecorded_success = Some(now);
                }
            }
        }
    }

    /// Logs, remembers and records (in batches) a set of finished pools, each with the time
    /// its executor call ended: a success restarts the pool's timer from then.
    pub(super) async fn record(
        &self,
        chunk: Vec<(Job, Result<Outcome, ExecutorError>, DateTime<Utc>)>,
        locks: &PoolLocks,
    ) -> Vec<(usize, PoolResult)> {
        let mut successes = Vec::new();
        let mut failures = Vec::new();
        let mut failed_at = Vec::new();
        let mut results = Vec::with_capacity(chunk.len());
        for (job, result, ended) in chunk {
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
                        memory.failed = false;
                    }
                    successes.push((pool.id, ended));
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
                    // Forget the applied plan so a declarative pool is retried on the next full
                    // cycle (not on every fast poll: `failed`).
                    {
                        let mut all = self.memory.lock().expect("memory lock");
                        let memory = all.entry(pool.id).or_default();
                        memory.last_plan = None;
                        memory.revisit = false;
                        memory.failed = true;
                    }
                    failures.push((pool.id, e.status_code()));
                    failed_at.push((pool.id, ended));
                    results.push((job.index, failed(pool, &e)));
                }
            }
        }
        if !self.options.dry_run {
            let failed_write = locks.record_failures(&failures).await.err();
            if let Some(e) = &failed_write {
                tracing::error!("could not record autoscaling_status of failed pools: {e}");
            }
            let hold = locks.lost().is_none();
            self.remember_writes(failed_at.into_iter(), failed_write.is_none(), false, hold);
            let written = locks.record_successes(&successes).await;
            let hold = locks.lost().is_none();
            self.remember_writes(successes.iter().copied(), written.is_ok(), true, hold);
            if let Err(e) = written {
                let msg = format!("scaled, but could not record the result: {e}");
                tracing::error!(outcome = "failed", "{msg}");
                for (_, r) in results.iter_mut() {
                    if matches!(r, PoolResult::Scaled { .. }) {
                        *r = PoolResult::failed(FailureKind::Database, msg.clone(), None);
                    }
                }
            }
        }
        results
    }
}
