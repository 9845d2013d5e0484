//! Carrying a cycle's plan out: each backend's `prepare` for its pools, the executor calls
//! (concurrent, bounded, stopped on shutdown) and their records, side by side on the cycle's
//! one connection. Nothing here decides what to do with a pool: [`super::triage`] did.

use super::triage::{Entry, State};
use super::{lock_lost, DbDirectory, Engine, Job, Prepared, Turn};
use crate::db::PoolLocks;
use autoscaler_executor::{ErrorKind, Executor, ExecutorError, ScaleRequest, WorkerPool};
use chrono::{DateTime, Utc};
use futures::channel::mpsc::UnboundedReceiver;
use futures::future::FutureExt;
use futures::stream::{FuturesUnordered, StreamExt};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::watch;
use tokio::sync::Semaphore;

impl Engine {
    /// Each backend batches its reads for all of its due pools once, every backend at the
    /// same time; a pool starts as soon as its own backend is prepared, so a cloud endpoint
    /// that never answers holds back the pools of that backend only.
    pub(super) fn prepare(&self, jobs: &[Job]) -> BTreeMap<&'static str, Prepared> {
        let mut prepared: BTreeMap<&'static str, Prepared> = BTreeMap::new();
        let mut groups: BTreeMap<&'static str, (Arc<dyn Executor>, Vec<WorkerPool>)> =
            BTreeMap::new();
        for job in jobs {
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
        prepared
    }

    /// Calls the due pools' executors and records each result into its entry as it comes.
    pub(super) async fn scale(
        &self,
        jobs: Vec<Job>,
        prepared: BTreeMap<&'static str, Prepared>,
        entries: &mut [Entry],
        stop: &watch::Receiver<bool>,
        locks: &PoolLocks,
    ) {
        // Scale concurrently (at most `concurrency` executor calls at once); record whatever
        // has finished in batches (one UPDATE for all the successes that are ready), so a slow
        // pool never holds back another pool's record. The calls and the records run side by
        // side: both use the one connection, and a call waiting on it must keep being polled.
        let directory = DbDirectory(locks);
        let slots = Semaphore::new(self.options.concurrency.max(1));
        let told = AtomicBool::new(false);
        let (directory, slots, told) = (&directory, &slots, &told);
        let mut calls = jobs
            .into_iter()
            .map(|job| {
                let prepare = prepared[job.executor.name()].clone();
                let stop = stop.clone();
                async move {
                    let turn = self
                        .turn(&job, prepare, stop, slots, locks, directory, told)
                        .await;
                    // The time the call ended is what restarts the pool's timer.
                    turn.map(|r| (job, r, Utc::now()))
                }
            })
            .collect::<FuturesUnordered<_>>()
            .filter_map(std::future::ready);
        let (done, finished) = futures::channel::mpsc::unbounded();
        let calls = async move {
            while let Some(f) = calls.next().await {
                let _ = done.unbounded_send(f);
            }
        };
        futures::join!(calls, self.record_as_they_end(finished, entries, locks));
    }

    /// One due pool's turn: its backend's `prepare`, a free slot, the lock checked, then the
    /// executor call, stopped `shutdown_grace` after shutdown began. `None`: not started,
    /// because the process began shutting down first.
    #[allow(clippy::too_many_arguments)]
    async fn turn(
        &self,
        job: &Job,
        prepare: Prepared,
        mut stop: watch::Receiver<bool>,
        slots: &Semaphore,
        locks: &PoolLocks,
        directory: &DbDirectory<'_>,
        told: &AtomicBool,
    ) -> Option<Turn> {
        let not_started = || -> Option<Turn> {
            if !told.swap(true, Ordering::Relaxed) {
                tracing::info!("shutting down: not starting the remaining pools");
            }
            None
        };
        let prepare_failed = tokio::select! {
            p = prepare => p,
            _ = stop.wait_for(|s| *s) => return not_started(),
        };
        if let Some((kind, message)) = prepare_failed {
            return Some(Turn::Called(Err(ExecutorError::new(
                &job.pool.name,
                kind,
                message,
            ))));
        }
        let _slot = tokio::select! {
            s = slots.acquire() => s.expect("the semaphore is never closed"),
            _ = stop.wait_for(|s| *s) => return not_started(),
        };
        if *stop.borrow() {
            return not_started();
        }
        // Never call an executor for a pool whose lock may be gone: the lock connection must
        // answer after this call's turn came.
        if let Err(e) = locks.check(std::time::Instant::now()).await {
            return Some(Turn::LockLost(e));
        }
        let grace = self.options.shutdown_grace;
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

    /// Records the turns as they end, in batches of what has ended meanwhile (at most 256),
    /// into their entries.
    async fn record_as_they_end(
        &self,
        mut finished: UnboundedReceiver<(Job, Turn, DateTime<Utc>)>,
        entries: &mut [Entry],
        locks: &PoolLocks,
    ) {
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
                    Turn::LockLost(e) => {
                        entries[job.index].state = State::Decided(lock_lost(&job.pool, &e))
                    }
                }
            }
            for (index, result) in self.record(called, locks).await {
                entries[index].state = State::Decided(result);
            }
        }
    }
}
