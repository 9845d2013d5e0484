//! Planning: from a pool's settings and its counts of builds to the number of workers wanted.
//!
//! Pure by design (no I/O, no clock of its own): the engine, the simulator and the tests all
//! call the same code with the same inputs and get the same answer.

mod stock;

pub use stock::Stock;

use autoscaler_executor::{Plan, WorkerPool};
use chrono::{DateTime, Duration, Utc};

/// Builds of one pool as counted this cycle.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Builds in QUEUED.
    pub queued: u64,
    /// Distinct projects among QUEUED builds (a build without a project counts as its own):
    /// with `build_latest`, Vespene's worker aborts older duplicates, so only one build per
    /// project will ever need a worker.
    pub queued_projects: u64,
    /// Builds in RUNNING.
    pub running: u64,
}

impl Counts {
    /// The queued figure the formula uses for this pool.
    pub fn effective_queued(&self, pool: &WorkerPool) -> u64 {
        if pool.build_latest {
            self.queued_projects
        } else {
            self.queued
        }
    }
}

/// A pool setting that makes no sense; names the pool and the column so the operator can fix
/// it in the Vespene UI.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("pool {pool}: {field}: {message}")]
pub struct SettingError {
    /// The pool's name.
    pub pool: String,
    /// The `worker_pools` column at fault.
    pub field: &'static str,
    /// Why it is wrong, with the value.
    pub message: String,
}

impl SettingError {
    fn new(pool: &WorkerPool, field: &'static str, message: impl Into<String>) -> Self {
        SettingError {
            pool: pool.name.clone(),
            field,
            message: message.into(),
        }
    }
}

/// A way of turning counts into a plan. Implementations must be pure.
pub trait Planner: Send + Sync {
    /// The name a pool's `planner` column selects this planner by.
    fn name(&self) -> &'static str;
    /// The plan for a pool whose settings already passed [`validate`].
    fn plan(&self, pool: &WorkerPool, counts: &Counts) -> Plan;
}

/// Names accepted in the `planner` column. An empty or NULL planner means `stock`, the only
/// planner Vespene ever shipped, so a pool created before a planner was chosen still works.
pub const PLANNERS: &[&str] = &["stock"];

/// Picks the pool's planner, or says the name is unknown.
pub fn planner_for(pool: &WorkerPool) -> Result<&'static dyn Planner, SettingError> {
    match pool.planner.as_deref().map(str::trim) {
        None | Some("") | Some("stock") => Ok(&Stock),
        Some(other) => Err(SettingError::new(
            pool,
            "planner",
            format!("unknown planner {other:?} (known: {})", PLANNERS.join(", ")),
        )),
    }
}

/// Checks every setting the planner and the timer use. Run before planning, so a pool with
/// nonsense settings is reported and never scaled.
pub fn validate(pool: &WorkerPool) -> Result<(), SettingError> {
    for (field, value) in [
        ("queued_weight", pool.queued_weight),
        ("running_weight", pool.running_weight),
        ("multiplier", pool.multiplier),
    ] {
        if !value.is_finite() {
            return Err(SettingError::new(
                pool,
                field,
                format!("must be a finite number, got {value}"),
            ));
        }
        if value < 0.0 {
            return Err(SettingError::new(
                pool,
                field,
                format!("must not be negative, got {value}"),
            ));
        }
    }
    if pool.maximum < 0 {
        return Err(SettingError::new(
            pool,
            "maximum",
            format!("must not be negative, got {}", pool.maximum),
        ));
    }
    if pool.minimum < 0 {
        return Err(SettingError::new(
            pool,
            "minimum",
            format!("must not be negative, got {}", pool.minimum),
        ));
    }
    if pool.minimum > pool.maximum {
        return Err(SettingError::new(
            pool,
            "minimum",
            format!("{} is greater than maximum {}", pool.minimum, pool.maximum),
        ));
    }
    if pool.excess < 0 && i64::from(pool.excess) < -i64::from(pool.maximum) {
        return Err(SettingError::new(
            pool,
            "excess",
            format!(
                "{} is below -maximum ({}): the pool could not grow until more than {} weighted builds wait",
                pool.excess,
                -pool.maximum,
                -i64::from(pool.excess)
            ),
        ));
    }
    if pool.reevaluate_minutes < 0 {
        return Err(SettingError::new(
            pool,
            "reevaluate_minutes",
            format!("must not be negative, got {}", pool.reevaluate_minutes),
        ));
    }
    planner_for(pool)?;
    Ok(())
}

/// Validates the pool and runs its planner.
pub fn plan(pool: &WorkerPool, counts: &Counts) -> Result<Plan, SettingError> {
    validate(pool)?;
    Ok(planner_for(pool)?.plan(pool, counts))
}

/// Whether the pool's `reevaluate_minutes` timer has run out: never autoscaled, or last
/// autoscaled at least that many minutes ago. (Vespene's Python had this inverted.)
pub fn is_due(pool: &WorkerPool, now: DateTime<Utc>) -> bool {
    match pool.last_autoscaled {
        None => true,
        Some(last) => now - last >= Duration::minutes(i64::from(pool.reevaluate_minutes.max(0))),
    }
}

/// Clamps a raw figure into the pool's bounds; the one place the bounds are applied.
pub(crate) fn clamp(pool: &WorkerPool, raw: i64) -> u32 {
    let lo = i64::from(pool.minimum.max(0));
    let hi = i64::from(pool.maximum.max(0)).max(lo);
    raw.clamp(lo, hi) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> WorkerPool {
        WorkerPool::with_defaults(1, "p")
    }

    #[test]
    fn rejects_nonsense_naming_the_field() {
        type Case = (Box<dyn Fn(&mut WorkerPool)>, &'static str, &'static str);
        let cases: Vec<Case> = vec![
            (
                Box::new(|p| {
                    p.minimum = 5;
                    p.maximum = 3
                }),
                "minimum",
                "5 is greater than maximum 3",
            ),
            (
                Box::new(|p| p.maximum = -1),
                "maximum",
                "must not be negative",
            ),
            (
                Box::new(|p| p.minimum = -1),
                "minimum",
                "must not be negative",
            ),
            (
                Box::new(|p| p.queued_weight = f64::NAN),
                "queued_weight",
                "finite",
            ),
            (
                Box::new(|p| p.running_weight = f64::INFINITY),
                "running_weight",
                "finite",
            ),
            (
                Box::new(|p| p.running_weight = -0.5),
                "running_weight",
                "must not be negative",
            ),
            (
                Box::new(|p| p.multiplier = -1.0),
                "multiplier",
                "must not be negative",
            ),
            (
                Box::new(|p| p.multiplier = f64::NEG_INFINITY),
                "multiplier",
                "finite",
            ),
            (Box::new(|p| p.excess = -11), "excess", "below -maximum"),
            (
                Box::new(|p| p.reevaluate_minutes = -5),
                "reevaluate_minutes",
                "must not be negative",
            ),
            (
                Box::new(|p| p.planner = Some("magic".into())),
                "planner",
                "unknown planner \"magic\"",
            ),
        ];
        for (mutate, field, text) in cases {
            let mut p = pool();
            mutate(&mut p);
            let err = validate(&p).unwrap_err();
            assert_eq!(err.field, field, "{err}");
            assert!(
                err.to_string().starts_with(&format!("pool p: {field}: ")),
                "{err}"
            );
            assert!(err.message.contains(text), "{err}");
        }
    }

    #[test]
    fn accepts_defaults_and_edges() {
        let mut p = pool();
        validate(&p).unwrap();
        p.planner = Some("stock".into());
        p.excess = -10;
        p.multiplier = 0.0;
        p.minimum = 10;
        validate(&p).unwrap();
        p.planner = Some(String::new());
        validate(&p).unwrap();
    }

    #[test]
    fn timer_runs_the_right_way_round() {
        let now = Utc::now();
        let mut p = pool();
        p.reevaluate_minutes = 10;
        assert!(is_due(&p, now), "never autoscaled is due");
        p.last_autoscaled = Some(now - Duration::minutes(3));
        assert!(!is_due(&p, now), "recently autoscaled is not due");
        p.last_autoscaled = Some(now - Duration::minutes(10));
        assert!(is_due(&p, now));
        p.last_autoscaled = Some(now - Duration::hours(5));
        assert!(is_due(&p, now));
        p.reevaluate_minutes = 0;
        p.last_autoscaled = Some(now);
        assert!(is_due(&p, now));
    }

    #[test]
    fn build_latest_counts_projects() {
        let c = Counts {
            queued: 7,
            queued_projects: 2,
            running: 1,
        };
        let mut p = pool();
        assert_eq!(c.effective_queued(&p), 2);
        p.build_latest = false;
        assert_eq!(c.effective_queued(&p), 7);
    }
}
