//! The arrival histories the `warm` planner sizes standby from: read per pool on the cycle's
//! connection, at most once an hour ([`HistoryCache`]), and put into the pool's planner state
//! before it is planned. The planner itself never reads the database.

use super::Engine;
use crate::db::PoolLocks;
use autoscaler_executor::WorkerPool;
use chrono::{DateTime, Utc};

impl Engine {
    /// For each pool whose planner learns from history, brings its history up to date. A read
    /// that fails is logged with the pool's name and changes nothing: the pool keeps the last
    /// history read successfully (none at first, which holds the standby floor), so standby is
    /// never planned from a half-read answer, and the pool's size does not depend on it at all.
    pub(super) async fn load_histories(
        &self,
        pools: &[&WorkerPool],
        now: DateTime<Utc>,
        locks: &PoolLocks,
    ) {
        for pool in pools {
            let Some(window) = self
                .planners
                .lookup(pool)
                .ok()
                .and_then(|p| p.history_window_seconds())
            else {
                continue;
            };
            let mut cache = self.history.lock().await;
            match cache.get_locked(locks, pool, window, now).await {
                Ok(h) => {
                    let h = h.clone();
                    let mut all = self.memory.lock().expect("memory lock");
                    all.entry(pool.id).or_default().planner.history = Some(h);
                }
                Err(e) => tracing::warn!(pool = %pool.name, outcome = "history",
                    "pool {}: could not read its arrival history ({e}); its standby target keeps the last history read, or none",
                    pool.name),
            }
        }
    }

    /// Forgets the histories of pools this process no longer evaluates.
    pub(super) async fn retain_histories(&self, pool_ids: &[i64]) {
        self.history.lock().await.retain(pool_ids);
    }
}
