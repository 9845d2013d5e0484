//! Planning: from a pool's settings and its counts of builds to the number of workers wanted.
//!
//! Pure by design (no I/O, no clock of its own): the engine, the simulator and the tests all
//! call the same code with the same inputs and get the same answer.

mod boot_aware;
mod stock;
mod warm;

pub use boot_aware::{BootAware, BootAwareConfig, DemandSample};
pub use stock::Stock;
pub use warm::{hour_of_week, ArrivalHistory, StandbyBounds, Warm, WarmConfig, HOURS_PER_WEEK};

use autoscaler_executor::{Plan, WorkerPool};
use chrono::{DateTime, Duration, Utc};
use std::collections::{BTreeMap, VecDeque};

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

/// `queued=Q queued_projects=P running=R`: the one way every log line and dry-run line names
/// these numbers, so `queued` always means QUEUED builds and never the distinct projects.
impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "queued={} queued_projects={} running={}",
            self.queued, self.queued_projects, self.running
        )
    }
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

/// One planning step's inputs.
#[derive(Clone, Copy, Debug)]
pub struct PlanInput<'a> {
    /// The pool row, settings validated.
    pub pool: &'a WorkerPool,
    /// Its builds this cycle.
    pub counts: Counts,
    /// The cycle's clock, passed in so planners stay pure and the simulator can run on
    /// simulated time.
    pub now: DateTime<Utc>,
}

/// What a planner may remember about one pool from one step to the next (the engine keeps one
/// per pool in memory; the simulator one per simulated pool). Stateless planners ignore it;
/// stateful ones (hysteresis, smoothing) keep their memory here and nowhere else, so the
/// planner itself stays a pure function of (input, state).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PlannerState {
    /// The planner's previous answer for this pool.
    pub last_plan: Option<Plan>,
    /// When `last_plan.size` last changed.
    pub last_change: Option<DateTime<Utc>>,
    /// `boot-aware`'s recent cycles, pruned to its window: the demand it holds capacity for
    /// and the arrivals it looks ahead by.
    pub samples: VecDeque<DemandSample>,
    /// The pool's arrivals by hour of the week, for `warm`'s standby target: put here by the
    /// caller (the simulator from a trace; a database's [`ArrivalHistory`] is cached per pool),
    /// never fetched by the planner. 168 buckets at most.
    pub history: Option<ArrivalHistory>,
    /// `warm`'s standby target held up, and since when: (since, target).
    pub standby_hold: Option<(DateTime<Utc>, u32)>,
}

/// A way of turning counts into a plan. Implementations must be pure: no I/O, no clock.
pub trait Planner: Send + Sync {
    /// The name a pool's `planner` column selects this planner by.
    fn name(&self) -> &'static str;
    /// The plan for a pool whose settings already passed [`validate`]; must stay within the
    /// pool's `minimum`..=`maximum`.
    fn plan(&self, input: &PlanInput<'_>, state: &mut PlannerState) -> Plan;
    /// The planner's own settings (its `[planners.NAME]` section with defaults filled in), so
    /// a simulation report says everything that produced its result; `null` for a planner
    /// that takes its settings from the pool row alone.
    fn settings(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
    /// The boot time the planner provisions for, if it has one: the simulator warns when its
    /// fleet boots at another speed, since the result would then describe neither.
    fn boot_seconds(&self) -> Option<u64> {
        None
    }
    /// The resume time (standby to serving) the planner plans for, if it holds standby: the
    /// simulator warns when its fleet resumes at another speed.
    fn resume_seconds(&self) -> Option<u64> {
        None
    }
    /// The window (seconds) the planner wants its [`PlannerState::history`] counted over, if
    /// it uses one at all: the caller builds the history to match.
    fn history_window_seconds(&self) -> Option<u64> {
        None
    }
    /// Standby workers (stopped or suspended instances, brought back in seconds) to hold
    /// besides `plan`. Planners without warm capacity hold none.
    fn standby(&self, _input: &PlanInput<'_>, _state: &mut PlannerState, _plan: &Plan) -> u32 {
        0
    }
}

/// A `[planners.NAME]` section of the config file that could not be used.
#[derive(Debug, thiserror::Error)]
#[error("[planners.{section}]: {message}")]
pub struct PlannerConfigError {
    /// The section's name.
    pub section: String,
    /// What is wrong, naming the key.
    pub message: String,
}

/// Every planner's name, as a pool's `planner` column and a `[planners.NAME]` section spell it.
pub const PLANNERS: [&str; 3] = ["stock", "boot-aware", "warm"];

/// The planners this build offers, configured from the config file's `[planners.NAME]`
/// sections. An empty or NULL `planner` column means `stock`, the only planner Vespene ever
/// shipped, so a pool created before a planner was chosen still works.
pub struct Planners {
    list: Vec<Box<dyn Planner>>,
}

impl Default for Planners {
    fn default() -> Self {
        Planners::from_config(&Default::default()).expect("default planners")
    }
}

impl Planners {
    /// Builds every planner, each from its own section (absent: its defaults). A section for
    /// an unknown planner, or with an unknown key, is an error.
    pub fn from_config(
        sections: &BTreeMap<String, toml::Table>,
    ) -> Result<Planners, PlannerConfigError> {
        let known = PLANNERS;
        for name in sections.keys() {
            if !known.contains(&name.as_str()) {
                return Err(PlannerConfigError {
                    section: name.clone(),
                    message: format!("unknown planner (known: {})", known.join(", ")),
                });
            }
        }
        if let Some(key) = sections.get("stock").and_then(|t| t.keys().next()) {
            return Err(PlannerConfigError {
                section: "stock".into(),
                message: format!(
                    "unknown key `{key}`: the stock planner takes its settings from the pool row"
                ),
            });
        }
        let boot_aware = match sections.get("boot-aware") {
            Some(table) => BootAware::from_table(table).map_err(|message| PlannerConfigError {
                section: "boot-aware".into(),
                message,
            })?,
            None => BootAware::new(BootAwareConfig::default()),
        };
        let warm = match sections.get("warm") {
            Some(table) => Warm::from_table(table).map_err(|message| PlannerConfigError {
                section: "warm".into(),
                message,
            })?,
            None => Warm::new(WarmConfig::default()),
        };
        Ok(Planners {
            list: vec![Box::new(Stock), Box::new(boot_aware), Box::new(warm)],
        })
    }

    /// Names, for messages and `--help`.
    pub fn names(&self) -> Vec<&'static str> {
        self.list.iter().map(|p| p.name()).collect()
    }

    /// The pool's planner, or a setting error naming the `planner` column.
    pub fn lookup(&self, pool: &WorkerPool) -> Result<&dyn Planner, SettingError> {
        let name = match pool.planner.as_deref().map(str::trim) {
            None | Some("") => "stock",
            Some(n) => n,
        };
        self.list
            .iter()
            .find(|p| p.name() == name)
            .map(|p| p.as_ref())
            .ok_or_else(|| {
                SettingError::new(
                    pool,
                    "planner",
                    format!(
                        "unknown planner {name:?} (known: {})",
                        self.names().join(", ")
                    ),
                )
            })
    }

    /// Validates the pool's settings, then runs its planner.
    pub fn plan(
        &self,
        input: &PlanInput<'_>,
        state: &mut PlannerState,
    ) -> Result<Plan, SettingError> {
        validate(input.pool)?;
        let plan = self.lookup(input.pool)?.plan(input, state);
        if state.last_plan.map(|p| p.size) != Some(plan.size) {
            state.last_change = Some(input.now);
        }
        state.last_plan = Some(plan);
        Ok(plan)
    }

    /// The standby workers the pool's planner holds besides `plan` (the plan as applied, after
    /// the runaway guard); settings validated as for [`Planners::plan`].
    pub fn standby(
        &self,
        input: &PlanInput<'_>,
        state: &mut PlannerState,
        plan: &Plan,
    ) -> Result<u32, SettingError> {
        validate(input.pool)?;
        Ok(self.lookup(input.pool)?.standby(input, state, plan))
    }
}

/// Checks every setting the planners and the timer use (the planner's name is checked by
/// [`Planners::lookup`]). Run before planning, so a pool with nonsense settings is reported and
/// never scaled.
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
    Ok(())
}

/// Whether the pool's `reevaluate_minutes` timer has run out: never autoscaled, or last
/// autoscaled at least that many minutes ago. (Vespene's Python had this inverted.)
///
/// A `last_autoscaled` further in the future than [`FUTURE_TOLERANCE`] (a clock set wrong, a
/// hand edit) would freeze the pool until that time comes; such a pool is due (the engine warns
/// with [`in_future`]).
pub fn is_due(pool: &WorkerPool, now: DateTime<Utc>) -> bool {
    match pool.last_autoscaled {
        None => true,
        Some(_) if in_future(pool, now) => true,
        Some(last) => {
            now.signed_duration_since(last)
                >= Duration::minutes(i64::from(pool.reevaluate_minutes.max(0)))
        }
    }
}

/// How far ahead of this process's clock `last_autoscaled` may be and still be trusted: another
/// autoscaler whose clock runs a little fast writes such times, and treating them as "due"
/// would run its pools a second time.
pub const FUTURE_TOLERANCE: Duration = Duration::minutes(5);

/// Whether the pool's `last_autoscaled` lies further in the future than [`FUTURE_TOLERANCE`].
pub fn in_future(pool: &WorkerPool, now: DateTime<Utc>) -> bool {
    pool.last_autoscaled.is_some_and(|last| {
        now.checked_add_signed(FUTURE_TOLERANCE)
            .is_none_or(|n| last > n)
    })
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
        ];
        for (mutate, field, text) in cases {
            let mut p = pool();
            mutate(&mut p);
            let err = validate(&p).unwrap_err();
            assert_eq!(
                Planners::default()
                    .plan(&input(&p), &mut PlannerState::default())
                    .unwrap_err(),
                err
            );
            assert_eq!(err.field, field, "{err}");
            assert!(
                err.to_string().starts_with(&format!("pool p: {field}: ")),
                "{err}"
            );
            assert!(err.message.contains(text), "{err}");
        }
    }

    fn input(p: &WorkerPool) -> PlanInput<'_> {
        PlanInput {
            pool: p,
            counts: Counts::default(),
            now: Utc::now(),
        }
    }

    #[test]
    fn unknown_planner_names_the_column() {
        let mut p = pool();
        p.planner = Some("magic".into());
        let err = Planners::default()
            .plan(&input(&p), &mut PlannerState::default())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "pool p: planner: unknown planner \"magic\" (known: stock, boot-aware, warm)"
        );
    }

    #[test]
    fn planner_sections_are_checked() {
        let mut sections = BTreeMap::new();
        sections.insert("magic".to_string(), toml::Table::new());
        let err = Planners::from_config(&sections).err().unwrap();
        assert_eq!(
            err.to_string(),
            "[planners.magic]: unknown planner (known: stock, boot-aware, warm)"
        );
        let mut sections = BTreeMap::new();
        let mut t = toml::Table::new();
        t.insert("boot".into(), toml::Value::Integer(3));
        sections.insert("stock".to_string(), t);
        assert!(Planners::from_config(&sections)
            .err()
            .unwrap()
            .to_string()
            .contains("unknown key `boot`"));
        // boot-aware takes its own keys, and only those.
        let mut sections = BTreeMap::new();
        sections.insert(
            "boot-aware".to_string(),
            toml::from_str::<toml::Table>("boot_seconds = 120\nscale_in_delay_seconds = 300")
                .unwrap(),
        );
        let planners = Planners::from_config(&sections).unwrap();
        assert_eq!(planners.names(), vec!["stock", "boot-aware", "warm"]);
        sections.insert(
            "boot-aware".to_string(),
            toml::from_str::<toml::Table>("boot_time = 120").unwrap(),
        );
        let err = Planners::from_config(&sections).err().unwrap().to_string();
        assert!(
            err.starts_with("[planners.boot-aware]: unknown field `boot_time`"),
            "{err}"
        );
    }

    #[test]
    fn state_tracks_changes() {
        let planners = Planners::default();
        let mut state = PlannerState::default();
        let p = pool();
        let t0 = Utc::now();
        let mut i = PlanInput {
            pool: &p,
            counts: Counts {
                queued: 2,
                queued_projects: 2,
                running: 0,
            },
            now: t0,
        };
        planners.plan(&i, &mut state).unwrap();
        assert_eq!(state.last_change, Some(t0));
        i.now = t0 + Duration::minutes(1);
        planners.plan(&i, &mut state).unwrap();
        assert_eq!(state.last_change, Some(t0), "same size: no change");
        i.counts.queued_projects = 5;
        planners.plan(&i, &mut state).unwrap();
        assert_eq!(state.last_change, Some(t0 + Duration::minutes(1)));
        assert_eq!(state.last_plan.unwrap().size, 5);
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
    fn a_last_autoscaled_in_the_future_does_not_freeze_the_pool() {
        let now = Utc::now();
        let mut p = pool();
        p.reevaluate_minutes = 10;
        // A little ahead (a fast clock elsewhere): trusted, not due yet.
        p.last_autoscaled = Some(now + Duration::minutes(1));
        assert!(!is_due(&p, now) && !in_future(&p, now));
        // Far ahead: due, and flagged for a warning.
        p.last_autoscaled = Some(now + Duration::days(365 * 200));
        assert!(is_due(&p, now) && in_future(&p, now));
        p.last_autoscaled = Some(DateTime::<Utc>::MAX_UTC);
        assert!(is_due(&p, now) && in_future(&p, now));
        p.last_autoscaled = Some(DateTime::<Utc>::MIN_UTC);
        assert!(is_due(&p, now) && !in_future(&p, now));
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
