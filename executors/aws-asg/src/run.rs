//! The executor's state and one pool's cycle record, the leaf every step imports: [`Applier`]
//! holds what lives across cycles (the API, the config, drains, hooks seen, raises made) and
//! [`Run`] what one pool's cycle gathers (actions, failures). Keeping them apart from
//! [`crate::apply`] lets apply, launch, the warm pool, the drain and the scale-in each import
//! them without importing each other.

use crate::client::{ApiError, AsgApi, GroupInfo};
use crate::config::Config;
use crate::policy::{validate, DrainState};
use autoscaler_executor::{ActionLog, ErrorKind, ExecutorError, Outcome, Plan, WorkerPool};
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Where "now" comes from, so the drain timeout can be tested without waiting hours.
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
}

/// The wall clock.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Running totals of the shared chooser's decisions, for tests and operators: how many
/// instances it chose to remove (or to drain) and how many it held.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScaleInStats {
    /// Scale-in cycles that asked the chooser.
    pub cycles: u64,
    /// Instances chosen: terminated, or handed to their drain agent.
    pub chosen: u64,
    /// Instances the plan wanted gone that stayed: busy, lacking a required agent, or held
    /// because a RUNNING build could be on any of them.
    pub held: u64,
}

pub(crate) type Prepared = HashMap<String, Result<Option<GroupInfo>, ApiError>>;

/// How long a `prepare` answer may stand in for a describe: long enough for a cycle of many
/// pools, short enough that a pool scaled without a fresh `prepare` reads its group again.
pub(crate) const PREPARED_TTL: std::time::Duration = std::time::Duration::from_secs(120);

/// The executor's state and logic, shared by every pool.
pub(crate) struct Applier {
    pub(crate) api: Arc<dyn AsgApi>,
    pub(crate) cfg: Config,
    pub(crate) region: Option<String>,
    pub(crate) clock: Arc<dyn Clock>,
    /// Groups described by `prepare` for this cycle, and when; each entry is taken by one
    /// `scale`, and ignored once older than [`PREPARED_TTL`].
    pub(crate) prepared: Mutex<(Prepared, Option<std::time::Instant>)>,
    /// Drain state per (group, instance).
    pub(crate) drains: Mutex<HashMap<(String, String), DrainState>>,
    /// When each group's lifecycle hook was last seen (or made) as configured.
    pub(crate) hooks_checked: Mutex<HashMap<String, DateTime<Utc>>>,
    /// See [`ScaleInStats`].
    pub(crate) stats: Mutex<ScaleInStats>,
    /// When this process last raised each group's desired capacity: launch failures older
    /// than that belong to an earlier size (see [`crate::launch`]).
    pub(crate) raised: Mutex<HashMap<String, DateTime<Utc>>>,
}

/// One pool's cycle: the pool, its group, the actions so far and every failure so far.
pub(crate) struct Run<'a> {
    pub(crate) pool: &'a WorkerPool,
    pub(crate) group: &'a str,
    /// The calls made (or, in a dry run, that would be made), worded as every backend words
    /// them; they become the outcome's actions.
    log: ActionLog,
    /// The outcome's other fields (`applied`, `revisit`), set by the steps.
    pub(crate) outcome: Outcome,
    /// Failures, each already naming its call (and instance): reported together at the end.
    pub(crate) errors: Vec<ExecutorError>,
    /// A [`ErrorKind::Held`] failure is among `errors` already.
    pub(crate) held_reported: bool,
    /// Leavers of this cycle's scale-in go back to the warm pool (`ReuseOnScaleIn`).
    pub(crate) to_warm_pool: bool,
    /// `DescribeWarmPool` failed this cycle: instances going back to the warm pool are not
    /// listed, so the drain must not forget them.
    pub(crate) warm_unread: bool,
}

impl<'a> Run<'a> {
    /// A fresh cycle of `pool` on `group`: no action, no failure yet.
    pub(crate) fn new(pool: &'a WorkerPool, group: &'a str, dry_run: bool) -> Self {
        Run {
            pool,
            group,
            log: ActionLog::new(dry_run),
            outcome: Outcome::default(),
            errors: Vec::new(),
            held_reported: false,
            to_warm_pool: false,
            warm_unread: false,
        }
    }

    /// Whether this cycle only reports: every step skips its mutating calls.
    pub(crate) fn dry_run(&self) -> bool {
        self.log.dry_run()
    }

    pub(crate) fn fail(&self, e: ApiError) -> ExecutorError {
        ExecutorError::new(
            &self.pool.name,
            e.kind,
            format!("Auto Scaling group {}: {}", self.group, e.message),
        )
    }

    /// Records a failed call that concerns the whole group.
    pub(crate) fn api_error(&mut self, e: ApiError) {
        let err = self.fail(e);
        self.errors.push(err);
    }

    /// Records a failed call that concerns the whole group, naming the call (an SDK error
    /// names it already; a double's may not).
    pub(crate) fn call_error(&mut self, call: &str, e: ApiError) {
        let msg = without_call(call, &e);
        self.error(e.kind, format!("{call}: {msg}"));
    }

    /// Records a failed call on one instance, naming the call and the instance.
    pub(crate) fn instance_error(&mut self, call: &str, id: &str, e: ApiError) {
        let msg = without_call(call, &e);
        self.error(e.kind, format!("{call} InstanceId={id}: {msg}"));
    }

    /// Records a failure that is not a call's (the database, a hold).
    pub(crate) fn error(&mut self, kind: ErrorKind, message: String) {
        let err = ExecutorError::new(
            &self.pool.name,
            kind,
            format!("Auto Scaling group {}: {message}", self.group),
        );
        self.errors.push(err);
    }

    /// A scale-in that could not even be considered, for the log.
    pub(crate) fn note_skip(&self, reduce: u32, why: &str) {
        tracing::warn!(pool = %self.pool.name, group = %self.group,
            "scale-in of {reduce} instance(s) skipped this cycle: {why}");
    }

    /// Records a mutating call that was made (or, in a dry run, skipped): logged, and listed
    /// in the outcome in core's words ("would …" in a dry run).
    pub(crate) fn action(&mut self, call: String) {
        if self.log.would(&call) {
            tracing::info!(pool = %self.pool.name, group = %self.group, "dry run: would {call}");
        } else {
            tracing::info!(pool = %self.pool.name, group = %self.group, "{call}");
            self.log.did(call);
        }
    }

    /// The cycle's result: the outcome, or one error naming every failure (its kind is the
    /// first failure's, which is also the first thing an operator should fix).
    pub(crate) fn finish(mut self) -> Result<Outcome, ExecutorError> {
        match self.errors.len() {
            0 => Ok(Outcome {
                actions: self.log.into_lines(),
                ..self.outcome
            }),
            1 => Err(self.errors.remove(0)),
            n => {
                let prefix = format!("Auto Scaling group {}: ", self.group);
                let all: Vec<String> = self
                    .errors
                    .iter()
                    .map(|e| {
                        e.message
                            .strip_prefix(&prefix)
                            .unwrap_or(&e.message)
                            .to_string()
                    })
                    .collect();
                let mut e = ExecutorError::new(
                    &self.pool.name,
                    self.errors[0].kind,
                    format!("{prefix}{n} failures: {}", all.join("; ")),
                );
                e.reason = self.errors[0].reason.clone();
                Err(e)
            }
        }
    }
}

impl Applier {
    pub(crate) fn new(
        api: Arc<dyn AsgApi>,
        cfg: Config,
        region: Option<String>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Applier {
            api,
            cfg,
            region,
            clock,
            prepared: Mutex::new((HashMap::new(), None)),
            drains: Mutex::new(HashMap::new()),
            hooks_checked: Mutex::new(HashMap::new()),
            stats: Mutex::new(ScaleInStats::default()),
            raised: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn stats(&self) -> ScaleInStats {
        *self.stats.lock().unwrap()
    }

    pub(crate) fn config(&self) -> &Config {
        &self.cfg
    }

    pub(crate) fn api(&self) -> &dyn AsgApi {
        self.api.as_ref()
    }

    pub(crate) fn region(&self) -> Option<&str> {
        self.region.as_deref()
    }

    pub(crate) fn set_clock(&mut self, clock: Arc<dyn Clock>) {
        self.clock = clock;
    }

    pub(crate) fn validate(&self, pool: &WorkerPool, plan: Plan) -> Result<(), ExecutorError> {
        validate(&self.cfg, pool, plan)
    }

    pub(crate) fn where_(&self) -> String {
        match &self.region {
            Some(r) => format!(" in region {r}"),
            None => String::new(),
        }
    }
}

/// An SDK error's message already names its call; a double's may not: the call is named once.
fn without_call<'a>(call: &str, e: &'a ApiError) -> &'a str {
    e.message
        .strip_prefix(&format!("{call}: "))
        .unwrap_or(&e.message)
}
