//! Test support shared by every backend's tests (feature `test-support`, which only
//! dev-dependencies turn on): one stand-in for the Vespene database's busy-worker answer and
//! one pool builder, so each crate's tests do not grow their own copies that drift apart.

use crate::{BusyWorker, DirectoryError, WorkerDirectory, WorkerPool};
use async_trait::async_trait;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Mutex;

/// A [`WorkerDirectory`] whose answer the test sets: these RUNNING builds (and their
/// workers), or a failure, as the real database could give. It counts the calls, since a
/// scale-in must ask before it removes anything.
#[derive(Debug, Default)]
pub struct StaticDirectory {
    busy: Mutex<Vec<BusyWorker>>,
    failing: AtomicBool,
    calls: AtomicU32,
}

impl StaticDirectory {
    /// No RUNNING build anywhere.
    pub fn idle() -> Self {
        Self::default()
    }

    /// Exactly these RUNNING rows.
    pub fn rows(rows: Vec<BusyWorker>) -> Self {
        let d = Self::default();
        d.set_rows(rows);
        d
    }

    /// One RUNNING build on each of these hostnames (build ids 100, 101, …).
    pub fn busy(hosts: &[&str]) -> Self {
        let pairs: Vec<(&str, i64)> = hosts
            .iter()
            .enumerate()
            .map(|(i, h)| (*h, 100 + i as i64))
            .collect();
        let d = Self::default();
        d.set(&pairs);
        d
    }

    /// A database that cannot answer (`connection refused`).
    pub fn failing() -> Self {
        let d = Self::default();
        d.set_failing(true);
        d
    }

    /// From now on, these `(hostname, build id)` RUNNING builds.
    pub fn set(&self, busy: &[(&str, i64)]) {
        self.set_rows(
            busy.iter()
                .map(|(h, id)| BusyWorker {
                    hostname: Some(h.to_string()),
                    build_id: *id,
                    started: None,
                })
                .collect(),
        );
    }

    /// From now on, exactly these RUNNING rows.
    pub fn set_rows(&self, rows: Vec<BusyWorker>) {
        *self.busy.lock().unwrap_or_else(|e| e.into_inner()) = rows;
    }

    /// From now on, fail (or answer again).
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// How many times a backend asked.
    pub fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl WorkerDirectory for StaticDirectory {
    async fn busy_workers(&self, _pool: &WorkerPool) -> Result<Vec<BusyWorker>, DirectoryError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.failing.load(Ordering::SeqCst) {
            return Err(DirectoryError("connection refused".into()));
        }
        Ok(self.busy.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

/// A pool with Vespene's defaults, autoscaling on, this executor and `executor_command`
/// (a command for `shell`, a group for the clouds) and this `maximum`: the one builder the
/// backends' tests share.
pub fn pool(id: i64, name: &str, executor: &str, command: &str, maximum: i32) -> WorkerPool {
    let mut p = WorkerPool::with_defaults(id, name);
    p.autoscaling_enabled = true;
    p.executor = Some(executor.into());
    p.executor_command = command.into();
    p.maximum = maximum;
    p
}
