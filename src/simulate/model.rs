//! The simulated fleet and the simulated autoscaler loop, event by event, in whole
//! milliseconds.
//!
//! What is modelled, and how it maps to the real thing:
//!
//! - **The autoscaler loop** evaluates the pool as `run.rs` schedules it: a full cycle every
//!   `sleep` (first at time 0) and, for a declarative executor, a fast poll every
//!   `poll_seconds` in between (the config file's `poll_seconds`, default 1; 0 or not less
//!   than `sleep` turns it off). Each evaluation is the engine's: it counts QUEUED builds
//!   (and distinct queued projects) and RUNNING builds, runs the pool's planner through
//!   [`Planners::plan`] with the planner's own [`PlannerState`] carried from cycle to cycle,
//!   applies the runaway guard ([`crate::guard::limit`]), and calls the executor when
//!   [`crate::engine::DueCheck`] says so, the engine's own rule (full cycles: the timer, a
//!   revisit or a changed size; fast polls: scale-out only; the loop never forces). A call restarts the pool's `reevaluate_minutes` timer
//!   (`last_autoscaled = now`), as a successful real call does.
//! - **A declarative executor** behaves like the `gce-mig` backend: it wants
//!   `min(ceil(size / workers_per_instance), maximum / workers_per_instance)` instances;
//!   scaling out launches the difference; scaling in removes what the executors' shared
//!   chooser picks (`autoscaler_executor::scale_in`): instances still booting first, newest
//!   first, then idle ones, oldest first; an instance with a running build holds the size up
//!   and asks for a revisit until it is idle. Such a held instance keeps taking builds meanwhile.
//! - **A non-declarative (shell) executor** launches `ceil(queued_size / workers_per_instance)`
//!   new instances per call and never removes any: its workers exit on their own after
//!   `max_builds` builds or after `max_wait` without one (Vespene's `--max-builds` and
//!   `--max-wait-minutes`, with the idle time measured as the docs mean it), and an instance
//!   ends when all its workers have.
//! - **Instances** cost from launch to termination, boot included; a launched instance
//!   becomes `workers_per_instance` workers after `boot`.
//! - **Standby instances** (a planner with warm capacity, `warm`, asks for them besides its
//!   size; declarative executors only) are stopped or suspended: they cost `standby_cost` of a
//!   running instance and come back after `resume` instead of `boot`. Scale-out resumes
//!   standby instances first, then takes over instances still booting into standby, and
//!   launches only the rest. Scale-in puts an instance the chooser picked into standby while
//!   the standby target is not met (a booting one finishes its boot first, then waits in
//!   standby), and deletes it otherwise. A standby target not met by scale-in is met by
//!   launching instances that boot (at the running price) and then wait in standby; one above
//!   the target is met by deleting standby instances, the longest waiting first. A changed
//!   standby target makes a full cycle call the executor. A resumed worker's agent wakes in
//!   the middle of its sleep: it polls `worker_poll` after the resume (the worst case).
//! - **Workers** behave like Vespene's worker loop: a worker polls the queue when it starts
//!   and then `worker_poll` after each empty poll or each finished build (the pool's
//!   `sleep_seconds`); with `worker_poll` 0 an idle worker takes a build the instant it is
//!   queued. A poll takes the oldest QUEUED build; with the pool's `build_latest` it also
//!   aborts every other QUEUED build of that project (Vespene's `cleanup_extra_builds`).
//!   Builds are never killed: nothing here can end an instance that runs one.
//!
//! Events at the same instant happen in this order: builds finish, instances finish booting,
//! builds are queued, workers poll, the autoscaler evaluates. So a build queued at the very
//! instant of an evaluation is counted by it.
//!
//! Not modelled: Vespene's `auto_abort_minutes` orphaning (a day later by default), failed
//! executor calls, API latency, and instance boot-time variance.

mod autoscaler;
mod builds;
mod idle;
mod instances;

use crate::planner::{self, ArrivalHistory, Counts, PlanInput, PlannerState, Planners};
use crate::simulate::trace::Trace;
use autoscaler_executor::{Plan, WorkerPool};
use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, VecDeque};

/// How long the simulation may run past the last queued build before it is cut off (a planner
/// that never lets the fleet come to rest would otherwise run forever).
pub const TAIL_CAP_MS: i64 = 24 * 3600 * 1000;

/// How the executor applies a plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecutorModel {
    /// Sets the group size (aws-asg, gce-mig): changed plans are applied at once; scale-in
    /// removes idle instances only.
    Declarative,
    /// Launches `queued_size` workers per call (shell with a non-declarative command).
    Shell {
        /// Builds a worker runs before it exits (`--max-builds`); `None`: no limit.
        max_builds: Option<u32>,
        /// Idle time after which a worker exits (`--max-wait-minutes`); `None`: never.
        max_wait_ms: Option<i64>,
    },
}

impl ExecutorModel {
    /// Whether the engine treats this executor as declarative.
    pub fn declarative(&self) -> bool {
        matches!(self, ExecutorModel::Declarative)
    }
}

/// The simulated fleet and loop settings (the pool's own settings come from its row).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fleet {
    /// Launch to first poll of the queue.
    pub boot_ms: i64,
    /// Workers on each instance.
    pub workers_per_instance: u32,
    /// The autoscaler's `--sleep` between full cycles.
    pub sleep_ms: i64,
    /// The config file's `poll_seconds`: a declarative pool is also evaluated this often
    /// between full cycles; 0 turns that off.
    pub poll_ms: i64,
    /// A worker's pause between polls of the queue (Vespene's pool `sleep_seconds`); 0 means
    /// it takes a queued build at once.
    pub worker_poll_ms: i64,
    /// How plans are applied.
    pub executor: ExecutorModel,
    /// The config file's `max_step_up` (the engine's runaway guard).
    pub max_step_up: Option<u32>,
    /// Standby (stopped or suspended) to workers taking builds again.
    pub resume_ms: i64,
    /// What a standby instance costs per hour, as a share of a running one (its disks, and the
    /// memory image of a suspended one).
    pub standby_cost: f64,
}

/// What became of one build of the trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuildFate {
    /// A worker of instance `instance` (an index into [`Outcome::instances`]) started it at
    /// this time (ms).
    Ran {
        /// When it started (ms from the trace's start): its wait is this minus its arrival.
        start_ms: i64,
        /// The instance it ran on.
        instance: u32,
    },
    /// Aborted at this time because a worker took an older build of the same project
    /// (`build_latest`).
    Superseded {
        /// When (ms from the trace's start).
        at_ms: i64,
    },
    /// Still queued when the simulation was cut off.
    NeverStarted,
}

/// One instance's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InstanceLife {
    /// Launched (billing starts).
    pub launched_ms: i64,
    /// Became workers.
    pub ready_ms: i64,
    /// Terminated (billing stops); `None`: still there at the end.
    pub gone_ms: Option<i64>,
    /// Time spent in standby (billed at the standby rate, not the running one).
    pub standby_ms: i64,
}

/// The fleet and queue at one instant, for the plot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Milliseconds after the start of the trace; the values hold until the next sample.
    pub t_ms: i64,
    /// QUEUED builds.
    pub queued: u32,
    /// RUNNING builds.
    pub running: u32,
    /// Workers on booted instances.
    pub ready_workers: u32,
    /// Workers paid for (booting ones included).
    pub provisioned_workers: u32,
    /// Workers on standby instances (suspended or stopped, paid at the standby rate).
    pub standby_workers: u32,
}

/// Everything a run produced; [`crate::simulate::report`] turns it into figures.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// Per trace build, in trace order.
    pub fates: Vec<BuildFate>,
    /// Per instance, in launch order.
    pub instances: Vec<InstanceLife>,
    /// When the simulation ended: the first evaluation at which every build had finished
    /// and the fleet had come to rest (the planner's idle plan applied, nothing held), or
    /// [`TAIL_CAP_MS`] after the last build was queued.
    pub end_ms: i64,
    /// Whether the end came from the cap rather than from rest.
    pub capped: bool,
    /// Executor calls that launched instances.
    pub scale_out_events: u64,
    /// Executor calls that deleted instances.
    pub scale_in_events: u64,
    /// Executor calls in all (including ones that changed nothing).
    pub executor_calls: u64,
    /// Evaluations of the pool (full cycles and fast polls).
    pub cycles: u64,
    /// The largest plan size asked for.
    pub peak_plan: u32,
    /// Standby instances brought back into service.
    pub resumes: u64,
    /// The fleet's `standby_cost`, for the report.
    pub standby_cost: f64,
    /// State changes over time (only when asked for).
    pub series: Vec<Sample>,
}

/// Why a simulation cannot run with these settings.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ModelError {
    /// A pool setting is unusable (the same check the engine makes).
    #[error(transparent)]
    Setting(#[from] planner::SettingError),
    /// A fleet setting is unusable.
    #[error("{0}")]
    Fleet(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Finish = 0,
    Ready = 1,
    Arrival = 2,
    Poll = 3,
    Cycle = 4,
}

/// (time, kind, sequence, a, b): a/b are an instance or slot index and a generation.
type Event = Reverse<(i64, Kind, u64, u32, u32)>;

struct Instance {
    launched: i64,
    ready_at: i64,
    gone: Option<i64>,
    ready: bool,
    busy: u32,
    live_slots: u32,
    /// Stopped or suspended, since `standby_since`.
    standby: bool,
    standby_since: i64,
    standby_ms: i64,
    /// Booting, to wait in standby once booted.
    warming: bool,
    /// Came back from standby at least once: its agent wakes mid-sleep.
    resumed: bool,
    /// Bumped on every resume, so a stale Ready event is ignored.
    epoch: u32,
}

#[derive(Clone, Copy)]
struct Slot {
    build: Option<u32>,
    done: u32,
    exited: bool,
    idle_since: i64,
    generation: u32,
}

struct Sim<'a> {
    trace: &'a Trace,
    fleet: Fleet,
    pool: WorkerPool,
    planners: &'a Planners,
    k: u32,
    t: i64,
    seq: u64,
    events: BinaryHeap<Event>,
    next_arrival: usize,
    instances: Vec<Instance>,
    slots: Vec<Slot>,
    /// Instances not terminated and not standby (booting, resuming or booted), in launch order.
    live: Vec<u32>,
    /// Standby instances, in the order they entered standby.
    standby: Vec<u32>,
    /// Instances booting to enter standby.
    warming: Vec<u32>,
    /// The standby target (instances) last applied.
    last_standby: u32,
    /// Since when the standby has been below its target (see `apply`).
    short_since: Option<i64>,
    /// Idle slots of booted instances (only when workers take builds at once).
    idle: BTreeSet<u32>,
    queue: VecDeque<u32>,
    aborted: Vec<bool>,
    per_project: Vec<VecDeque<u32>>,
    queued: u32,
    projects_queued: u32,
    no_project_queued: u32,
    running: u32,
    ready_workers: u32,
    fates: Vec<BuildFate>,
    state: PlannerState,
    last_applied: Option<Plan>,
    revisit: bool,
    out: Outcome,
    record: bool,
    /// When the next full cycle is due.
    next_full: i64,
    /// Jump over idle time (see `idle.rs`); off only to check that jumping changes nothing.
    jump: bool,
}

/// Most instances the model holds: a plan of two billion workers (a huge `maximum` and
/// `multiplier`) would exhaust memory; the simulation refuses it instead.
pub const MAX_MODEL_INSTANCES: usize = 1_000_000;

/// Replays `trace` against `pool` (its planner, weights, bounds, timer and `build_latest`)
/// on `fleet`. Deterministic: the same inputs give the same outcome.
pub fn simulate(
    trace: &Trace,
    pool: &WorkerPool,
    fleet: &Fleet,
    planners: &Planners,
    record_series: bool,
) -> Result<Outcome, ModelError> {
    simulate_with(trace, pool, fleet, planners, record_series, true, None)
}

/// [`simulate`], with the planner's history learned from `history`'s arrivals (for planners
/// that use one, `warm`), counted as the pool's demand over the planner's window. Passing the
/// simulated trace itself learns from the very week being replayed (in-sample); another
/// trace of the same pool is the out-of-sample check.
pub fn simulate_with_history(
    trace: &Trace,
    pool: &WorkerPool,
    fleet: &Fleet,
    planners: &Planners,
    record_series: bool,
    history: Option<&Trace>,
) -> Result<Outcome, ModelError> {
    simulate_with(trace, pool, fleet, planners, record_series, true, history)
}

/// The [`ArrivalHistory`] of a trace's arrivals, keyed as the pool's demand counts them.
pub fn trace_history(trace: &Trace, pool: &WorkerPool, window_seconds: u64) -> ArrivalHistory {
    let projects = trace.projects.len() as u64;
    ArrivalHistory::from_arrivals(
        window_seconds,
        trace.builds.iter().enumerate().map(|(i, b)| {
            let key = match b.project {
                Some(p) if pool.build_latest => u64::from(p),
                _ => projects + i as u64,
            };
            (
                trace.start + chrono::Duration::milliseconds(b.queued_ms),
                key,
            )
        }),
    )
}

/// [`simulate`], with the idle-time jump on or off.
pub(crate) fn simulate_with(
    trace: &Trace,
    pool: &WorkerPool,
    fleet: &Fleet,
    planners: &Planners,
    record_series: bool,
    jump: bool,
    history: Option<&Trace>,
) -> Result<Outcome, ModelError> {
    planner::validate(pool)?;
    planners.lookup(pool)?;
    if fleet.workers_per_instance == 0 {
        return Err(ModelError::Fleet(
            "--workers-per-instance must be at least 1".into(),
        ));
    }
    if fleet.sleep_ms <= 0 {
        return Err(ModelError::Fleet("--sleep must be more than 0".into()));
    }
    if fleet.boot_ms < 0 || fleet.worker_poll_ms < 0 || fleet.poll_ms < 0 || fleet.resume_ms < 0 {
        return Err(ModelError::Fleet(
            "--boot-seconds, --resume-seconds, --worker-poll-seconds and --poll-seconds must not \
             be negative"
                .into(),
        ));
    }
    if !fleet.standby_cost.is_finite() || !(0.0..=1.0).contains(&fleet.standby_cost) {
        return Err(ModelError::Fleet(format!(
            "--standby-cost: must be a share of a running instance's price, 0 to 1, got {}",
            fleet.standby_cost
        )));
    }
    let mut state = PlannerState::default();
    if let (Some(h), Some(window)) = (history, planners.lookup(pool)?.history_window_seconds()) {
        state.history = Some(trace_history(h, pool, window));
    }
    if fleet.executor.declarative() && pool.maximum.max(0) < fleet.workers_per_instance as i32 {
        return Err(ModelError::Fleet(format!(
            "pool {}: maximum ({}) is smaller than --workers-per-instance ({}): not one instance fits",
            pool.name, pool.maximum, fleet.workers_per_instance
        )));
    }
    let mut sim = Sim {
        trace,
        fleet: *fleet,
        pool: pool.clone(),
        planners,
        k: fleet.workers_per_instance,
        t: 0,
        seq: 0,
        events: BinaryHeap::new(),
        next_arrival: 0,
        instances: Vec::new(),
        slots: Vec::new(),
        live: Vec::new(),
        standby: Vec::new(),
        warming: Vec::new(),
        last_standby: 0,
        short_since: None,
        idle: BTreeSet::new(),
        queue: VecDeque::new(),
        aborted: vec![false; trace.builds.len()],
        per_project: vec![VecDeque::new(); trace.projects.len()],
        queued: 0,
        projects_queued: 0,
        no_project_queued: 0,
        running: 0,
        ready_workers: 0,
        fates: vec![BuildFate::NeverStarted; trace.builds.len()],
        state,
        last_applied: None,
        revisit: false,
        out: Outcome {
            fates: Vec::new(),
            instances: Vec::new(),
            end_ms: 0,
            capped: false,
            scale_out_events: 0,
            scale_in_events: 0,
            executor_calls: 0,
            cycles: 0,
            peak_plan: 0,
            resumes: 0,
            standby_cost: fleet.standby_cost,
            series: Vec::new(),
        },
        record: record_series,
        next_full: 0,
        jump,
    };
    sim.pool.last_autoscaled = None;
    sim.run()?;
    Ok(sim.finish())
}

impl Sim<'_> {
    fn push(&mut self, t: i64, kind: Kind, a: u32, b: u32) {
        self.seq += 1;
        self.events.push(Reverse((t, kind, self.seq, a, b)));
    }

    fn instant_claims(&self) -> bool {
        self.fleet.worker_poll_ms == 0
    }

    /// The plan a planner settles on with nothing to do: the simulation may end once that is
    /// applied and every build is done.
    fn resting_plan(&self) -> Result<Plan, ModelError> {
        Ok(self.planners.plan(
            &PlanInput {
                pool: &self.pool,
                counts: Counts::default(),
                now: self.trace.start,
            },
            &mut PlannerState::default(),
        )?)
    }

    fn run(&mut self) -> Result<(), ModelError> {
        let resting = self.resting_plan()?;
        let last_queued = self.trace.builds.last().map(|b| b.queued_ms).unwrap_or(0);
        let cap = last_queued + TAIL_CAP_MS;
        // A running fleet at the pool's floor (a declarative group sits at its size).
        if self.fleet.executor.declarative() {
            let floor = self.target_instances(self.pool.minimum.max(0) as u32);
            self.room_for(floor as usize)?;
            for _ in 0..floor {
                self.launch(0, 0);
            }
        }
        self.push(0, Kind::Cycle, 0, 0);
        loop {
            let arrival = self
                .trace
                .builds
                .get(self.next_arrival)
                .map(|b| (b.queued_ms, Kind::Arrival));
            let top = self.events.peek().map(|Reverse(e)| (e.0, e.1));
            let take_arrival = match (arrival, top) {
                (Some(a), Some(e)) => a < e,
                (Some(_), None) => true,
                (None, _) => false,
            };
            if take_arrival {
                let b = self.next_arrival as u32;
                self.next_arrival += 1;
                self.t = self.trace.builds[b as usize].queued_ms;
                self.arrive(b);
            } else {
                let Some(Reverse((t, kind, _, a, b))) = self.events.pop() else {
                    break; // unreachable: a cycle is always pending
                };
                self.t = t;
                match kind {
                    Kind::Finish => self.finish_build(a),
                    Kind::Ready => self.ready(a, b),
                    Kind::Poll => self.poll(a, b),
                    Kind::Cycle => {
                        let full = self.t >= self.next_full;
                        let rest = self.cycle(resting, full)?;
                        if rest || self.t >= cap {
                            self.out.capped = !rest;
                            self.out.end_ms = self.t;
                            self.sample();
                            return Ok(());
                        }
                        if self.t >= self.next_full {
                            self.next_full = self.t + self.fleet.sleep_ms;
                        }
                        let poll = self.fleet.poll_ms;
                        let next = if self.fleet.executor.declarative()
                            && poll > 0
                            && poll < self.fleet.sleep_ms
                        {
                            (self.t + poll).min(self.next_full)
                        } else {
                            self.next_full
                        };
                        let next = self.skip_idle(next, resting);
                        self.push(next, Kind::Cycle, 0, 0);
                    }
                    Kind::Arrival => unreachable!("arrivals are not queued as events"),
                }
            }
            self.sample();
        }
        Ok(())
    }

    fn sample(&mut self) {
        if !self.record {
            return;
        }
        let s = Sample {
            t_ms: self.t,
            queued: self.queued,
            running: self.running,
            ready_workers: self.ready_workers,
            provisioned_workers: (self.live.len() + self.warming.len()) as u32 * self.k,
            standby_workers: self.standby.len() as u32 * self.k,
        };
        match self.out.series.last_mut() {
            Some(last) if last.t_ms == s.t_ms => *last = s,
            Some(last)
                if (
                    last.queued,
                    last.running,
                    last.ready_workers,
                    last.provisioned_workers,
                    last.standby_workers,
                ) == (
                    s.queued,
                    s.running,
                    s.ready_workers,
                    s.provisioned_workers,
                    s.standby_workers,
                ) => {}
            _ => self.out.series.push(s),
        }
    }

    fn finish(mut self) -> Outcome {
        let end = self.out.end_ms;
        self.out.fates = self.fates;
        self.out.instances = self
            .instances
            .iter()
            .map(|i| InstanceLife {
                launched_ms: i.launched,
                ready_ms: i.ready_at,
                gone_ms: i.gone,
                standby_ms: i.standby_ms
                    + if i.standby && i.gone.is_none() {
                        (end - i.standby_since).max(0)
                    } else {
                        0
                    },
            })
            .collect();
        self.out
    }
}
