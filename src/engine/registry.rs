//! The backends compiled into this binary, looked up by a pool's `executor` column.

use crate::planner::SettingError;
use autoscaler_executor::{Executor, WorkerPool};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The backends compiled into this binary, by the name a pool's `executor` column uses.
#[derive(Clone, Default)]
pub struct Registry {
    pub(super) executors: BTreeMap<&'static str, Arc<dyn Executor>>,
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
