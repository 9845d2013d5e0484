//! What the engine remembers between cycles about each pool, and the back-off after a status
//! write that failed.

use crate::planner::PlannerState;
use autoscaler_executor::{Plan, WorkerPool};
use chrono::{DateTime, Utc};

/// What the engine remembers between cycles about a pool.
#[derive(Clone, Debug, Default)]
pub(super) struct Memory {
    /// The planner's own memory of this pool.
    pub(super) planner: PlannerState,
    /// The plan last applied successfully: a declarative backend is called again as soon as
    /// its size differs, without waiting for the timer; and the runaway guard's base.
    pub(super) last_plan: Option<Plan>,
    /// The backend asked to be called next cycle (draining in progress).
    pub(super) revisit: bool,
    /// The last executor call failed: retried on full cycles only (see `DueCheck::failed`).
    pub(super) failed: bool,
    /// When this process last scaled the pool successfully without managing to record it:
    /// the timer runs from here, so a database that refuses writes (read-only standby,
    /// permissions) does not make a shell command run every cycle.
    pub(super) unrecorded_success: Option<DateTime<Utc>>,
    /// Consecutive cycles whose status write for this pool failed.
    write_failures: u32,
    /// After a failed status write, the pool is not called again before this time (unless
    /// `--force`): exponential from [`WRITE_BACKOFF_BASE`] up to [`WRITE_BACKOFF_CAP`].
    hold_until: Option<DateTime<Utc>>,
}

/// First wait after a pool's status could not be written.
pub const WRITE_BACKOFF_BASE: chrono::Duration = chrono::Duration::seconds(30);
/// Longest wait between attempts while a pool's status cannot be written.
pub const WRITE_BACKOFF_CAP: chrono::Duration = chrono::Duration::hours(1);

impl Memory {
    /// The pool's status write failed at `now`: hold it back, doubling each time.
    pub(super) fn write_failed(&mut self, now: DateTime<Utc>) {
        self.write_failures = self.write_failures.saturating_add(1);
        let wait = WRITE_BACKOFF_BASE
            .checked_mul(1 << (self.write_failures - 1).min(10))
            .unwrap_or(WRITE_BACKOFF_CAP)
            .min(WRITE_BACKOFF_CAP);
        self.hold_until = now.checked_add_signed(wait);
    }

    /// The pool's status was written: the database's `last_autoscaled` is the timer again.
    pub(super) fn write_succeeded(&mut self) {
        self.write_failures = 0;
        self.hold_until = None;
        self.unrecorded_success = None;
    }

    /// Whether the in-memory timer and back-off let the pool be called at `now`.
    pub(super) fn allows(&self, pool: &WorkerPool, now: DateTime<Utc>) -> bool {
        let held = self.hold_until.is_some_and(|t| now < t);
        let timer = self.unrecorded_success.is_none_or(|t| {
            now.signed_duration_since(t)
                >= chrono::Duration::minutes(i64::from(pool.reevaluate_minutes.max(0)))
        });
        !held && timer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    #[test]
    fn a_failed_write_holds_the_pool_back_doubling_up_to_the_cap() {
        let now = Utc::now();
        let mut pool = WorkerPool::with_defaults(1, "p");
        pool.reevaluate_minutes = 0;
        let mut m = Memory::default();
        assert!(m.allows(&pool, now));
        let mut waits = Vec::new();
        for _ in 0..12 {
            m.write_failed(now);
            waits.push((m.hold_until.unwrap() - now).num_seconds());
            assert!(!m.allows(&pool, now));
        }
        assert_eq!(&waits[..8], &[30, 60, 120, 240, 480, 960, 1920, 3600]);
        assert!(waits[8..].iter().all(|w| *w == 3600));
        assert!(m.allows(&pool, now + Duration::hours(1)));
        m.write_succeeded();
        assert!(m.allows(&pool, now));
        // A success that could not be recorded: the timer runs from it, in memory.
        pool.reevaluate_minutes = 10;
        m.unrecorded_success = Some(now);
        assert!(!m.allows(&pool, now + Duration::minutes(9)));
        assert!(m.allows(&pool, now + Duration::minutes(10)));
    }
}
