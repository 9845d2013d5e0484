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

mod idle;

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
    Ran { start_ms: i64, instance: u32 },
    /// Aborted at this time because a worker took an older build of the same project
    /// (`build_latest`).
    Superseded { at_ms: i64 },
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

    fn arrive(&mut self, b: u32) {
        self.queue.push_back(b);
        self.queued += 1;
        match self.trace.builds[b as usize].project {
            Some(p) => {
                let list = &mut self.per_project[p as usize];
                if list.is_empty() {
                    self.projects_queued += 1;
                }
                list.push_back(b);
            }
            None => self.no_project_queued += 1,
        }
        self.dispatch();
    }

    /// With instant claims, idle workers (oldest instance first) take queued builds.
    fn dispatch(&mut self) {
        if !self.instant_claims() {
            return;
        }
        while self.queued > 0 {
            let Some(slot) = self.idle.pop_first() else {
                return;
            };
            self.claim(slot);
        }
    }

    /// The slot takes the oldest queued build (there is one).
    fn claim(&mut self, slot: u32) {
        let b = loop {
            let b = self.queue.pop_front().expect("claim with a queued build");
            if !self.aborted[b as usize] {
                break b;
            }
        };
        self.queued -= 1;
        match self.trace.builds[b as usize].project {
            Some(p) => {
                let list = &mut self.per_project[p as usize];
                let first = list.pop_front();
                debug_assert_eq!(first, Some(b));
                if self.pool.build_latest {
                    for other in list.drain(..) {
                        self.aborted[other as usize] = true;
                        self.fates[other as usize] = BuildFate::Superseded { at_ms: self.t };
                        self.queued -= 1;
                    }
                }
                if list.is_empty() {
                    self.projects_queued -= 1;
                }
            }
            None => self.no_project_queued -= 1,
        }
        self.fates[b as usize] = BuildFate::Ran {
            start_ms: self.t,
            instance: slot / self.k,
        };
        let s = &mut self.slots[slot as usize];
        s.build = Some(b);
        self.instances[(slot / self.k) as usize].busy += 1;
        self.running += 1;
        let end = self.t + self.trace.builds[b as usize].duration_ms;
        self.push(end, Kind::Finish, slot, 0);
    }

    fn finish_build(&mut self, slot: u32) {
        let s = &mut self.slots[slot as usize];
        s.build = None;
        s.done += 1;
        let done = s.done;
        self.instances[(slot / self.k) as usize].busy -= 1;
        self.running -= 1;
        if let ExecutorModel::Shell {
            max_builds: Some(m),
            ..
        } = self.fleet.executor
        {
            if done >= m {
                self.exit_worker(slot);
                return;
            }
        }
        self.became_idle(slot);
        self.dispatch();
    }

    fn became_idle(&mut self, slot: u32) {
        let t = self.t;
        let s = &mut self.slots[slot as usize];
        s.idle_since = t;
        s.generation = s.generation.wrapping_add(1);
        let generation = s.generation;
        if self.instant_claims() {
            self.idle.insert(slot);
            if let ExecutorModel::Shell {
                max_wait_ms: Some(w),
                ..
            } = self.fleet.executor
            {
                self.push(t + w, Kind::Poll, slot, generation);
            }
        } else {
            // Vespene's worker sleeps `sleep_seconds` after each build before polling again; a
            // resumed one wakes in the middle of its sleep.
            let resumed = self.instances[(slot / self.k) as usize].resumed;
            let next = if self.slots[slot as usize].done == 0 && !resumed {
                t
            } else {
                t + self.fleet.worker_poll_ms
            };
            self.push(next, Kind::Poll, slot, generation);
        }
    }

    fn ready(&mut self, inst: u32, epoch: u32) {
        let t = self.t;
        let i = &mut self.instances[inst as usize];
        if i.gone.is_some() || i.standby || i.epoch != epoch {
            return;
        }
        if i.warming {
            // Booted into standby: it waits there.
            i.warming = false;
            i.standby = true;
            i.standby_since = t;
            self.warming.retain(|&x| x != inst);
            self.standby.push(inst);
            return;
        }
        i.ready = true;
        let workers = i.live_slots;
        self.ready_workers += workers;
        for slot in inst * self.k..(inst + 1) * self.k {
            self.became_idle(slot);
        }
        self.dispatch();
    }

    /// A worker's poll (or, with instant claims, its idle-exit timer).
    fn poll(&mut self, slot: u32, generation: u32) {
        let s = self.slots[slot as usize];
        let inst = &self.instances[(slot / self.k) as usize];
        if inst.gone.is_some()
            || !inst.ready
            || s.exited
            || s.build.is_some()
            || s.generation != generation
        {
            return;
        }
        if !self.instant_claims() && self.queued > 0 {
            self.claim(slot);
            return;
        }
        if let ExecutorModel::Shell {
            max_wait_ms: Some(w),
            ..
        } = self.fleet.executor
        {
            if self.t - s.idle_since >= w {
                self.exit_worker(slot);
                return;
            }
        }
        if !self.instant_claims() {
            let next = self.t + self.fleet.worker_poll_ms;
            self.push(next, Kind::Poll, slot, generation);
        }
    }

    fn exit_worker(&mut self, slot: u32) {
        self.slots[slot as usize].exited = true;
        self.idle.remove(&slot);
        let inst = slot / self.k;
        let i = &mut self.instances[inst as usize];
        i.live_slots -= 1;
        let (was_ready, left) = (i.ready, i.live_slots);
        if was_ready {
            self.ready_workers -= 1;
        }
        if left == 0 {
            self.terminate(inst);
        }
    }

    fn launch(&mut self, at: i64, boot: i64) {
        let inst = self.launch_instance(at, boot, false);
        self.live.push(inst);
    }

    /// Launches an instance that boots and then waits in standby.
    fn launch_warming(&mut self, at: i64) {
        let inst = self.launch_instance(at, self.fleet.boot_ms, true);
        self.warming.push(inst);
    }

    fn launch_instance(&mut self, at: i64, boot: i64, warming: bool) -> u32 {
        let inst = self.instances.len() as u32;
        self.instances.push(Instance {
            launched: at,
            ready_at: at + boot,
            gone: None,
            ready: false,
            busy: 0,
            live_slots: self.k,
            standby: false,
            standby_since: 0,
            standby_ms: 0,
            warming,
            resumed: false,
            epoch: 0,
        });
        for _ in 0..self.k {
            self.slots.push(Slot {
                build: None,
                done: 0,
                exited: false,
                idle_since: at,
                generation: 0,
            });
        }
        self.push(at + boot, Kind::Ready, inst, 0);
        inst
    }

    /// A live instance the chooser picked goes to standby instead of away: a booted one is
    /// stopped now, a booting one finishes its boot first (it cannot be stopped before), a
    /// resuming one goes back.
    fn put_in_standby(&mut self, inst: u32) {
        let t = self.t;
        let k = self.k;
        let i = &mut self.instances[inst as usize];
        debug_assert_eq!(i.busy, 0, "never stop an instance with a running build");
        self.live.retain(|&x| x != inst);
        if !i.ready && !i.resumed {
            i.warming = true;
            self.warming.push(inst);
            return;
        }
        let workers = if i.ready { i.live_slots } else { 0 };
        i.ready = false;
        i.standby = true;
        i.standby_since = t;
        i.epoch = i.epoch.wrapping_add(1);
        self.ready_workers -= workers;
        self.standby.push(inst);
        for slot in inst * k..(inst + 1) * k {
            self.idle.remove(&slot);
            let s = &mut self.slots[slot as usize];
            s.generation = s.generation.wrapping_add(1);
        }
    }

    /// A standby instance comes back: its workers take builds after `resume`.
    fn resume(&mut self, inst: u32) {
        let t = self.t;
        let resume = self.fleet.resume_ms;
        let i = &mut self.instances[inst as usize];
        i.standby = false;
        i.standby_ms += t - i.standby_since;
        i.resumed = true;
        i.epoch = i.epoch.wrapping_add(1);
        let epoch = i.epoch;
        self.standby.retain(|&x| x != inst);
        self.live.push(inst);
        self.out.resumes += 1;
        self.push(t + resume, Kind::Ready, inst, epoch);
    }

    fn terminate(&mut self, inst: u32) {
        let t = self.t;
        let i = &mut self.instances[inst as usize];
        debug_assert_eq!(
            i.busy, 0,
            "never terminate an instance with a running build"
        );
        i.gone = Some(t);
        if i.standby {
            i.standby = false;
            i.standby_ms += t - i.standby_since;
        }
        i.warming = false;
        let workers = if i.ready { i.live_slots } else { 0 };
        i.live_slots = 0;
        self.ready_workers -= workers;
        for slot in inst * self.k..(inst + 1) * self.k {
            self.idle.remove(&slot);
        }
        self.live.retain(|&x| x != inst);
        self.standby.retain(|&x| x != inst);
        self.warming.retain(|&x| x != inst);
    }

    /// The instances a scale-in removes, chosen by the executors' own chooser, so the
    /// simulator removes what `aws-asg` and `gce-mig` would: booting ones first (newest
    /// first), then idle ones, oldest first; never one with a running build.
    fn choose_victims(&self, reduction: u32) -> Vec<u32> {
        use autoscaler_executor::scale_in::{choose, Candidate, CandidateState, Drain};
        let base = self.trace.start;
        let at = |ms: i64| base + chrono::Duration::milliseconds(ms);
        let candidates: Vec<Candidate> = self
            .live
            .iter()
            .map(|&i| {
                let inst = &self.instances[i as usize];
                Candidate {
                    id: i.to_string(),
                    names: vec![format!("i{i}")],
                    created: Some(at(inst.launched)),
                    state: if inst.ready {
                        CandidateState::Ready
                    } else {
                        CandidateState::Booting
                    },
                    agent: false,
                    drain: Drain::None,
                }
            })
            .collect();
        let busy: Vec<autoscaler_executor::BusyWorker> = self
            .live
            .iter()
            .filter(|&&i| self.instances[i as usize].busy > 0)
            .map(|&i| autoscaler_executor::BusyWorker {
                hostname: Some(format!("i{i}")),
                build_id: i64::from(i),
                started: None,
            })
            .collect();
        let choice = choose(&autoscaler_executor::scale_in::ScaleInRequest {
            reduction,
            candidates: &candidates,
            busy: &busy,
            unassigned_grace: None,
            require_agent: false,
            now: at(self.t),
        });
        choice
            .removals()
            .filter_map(|(id, _)| id.parse().ok())
            .collect()
    }

    fn target_instances(&self, size: u32) -> u32 {
        let max_instances = self.pool.maximum.max(0) as u32 / self.k;
        size.div_ceil(self.k).min(max_instances)
    }

    /// One autoscaler cycle; returns whether the simulation may end here.
    fn cycle(&mut self, resting: Plan, full: bool) -> Result<bool, ModelError> {
        self.out.cycles += 1;
        let now = self.trace.start + chrono::Duration::milliseconds(self.t);
        let counts = Counts {
            queued: u64::from(self.queued),
            queued_projects: u64::from(self.projects_queued + self.no_project_queued),
            running: u64::from(self.running),
        };
        let input = PlanInput {
            pool: &self.pool,
            counts,
            now,
        };
        let planned = self.planners.plan(&input, &mut self.state)?;
        let (plan, _) = crate::guard::limit(
            planned,
            &self.pool,
            self.last_applied.map(|p| p.size),
            self.fleet.max_step_up,
        );
        self.out.peak_plan = self.out.peak_plan.max(plan.size);
        let declarative = self.fleet.executor.declarative();
        let standby = if declarative {
            let workers = self.planners.standby(&input, &mut self.state, &plan)?;
            let want = self.target_instances(plan.size);
            let max_instances = self.pool.maximum.max(0) as u32 / self.k;
            workers
                .div_ceil(self.k)
                .min(max_instances.saturating_sub(want))
        } else {
            0
        };
        let due = crate::engine::DueCheck {
            force: false,
            full_cycle: full,
            timer_due: planner::is_due(&self.pool, now),
            declarative,
            revisit: self.revisit,
            // The model's backend never fails.
            failed: false,
            last_size: self.last_applied.map(|p| p.size),
            size: plan.size,
        }
        .due()
            || (full
                && (standby != self.last_standby
                    || (declarative
                        && ((self.standby.len() + self.warming.len()) as u32) < standby)));
        if due {
            self.out.executor_calls += 1;
            self.revisit = self.apply(plan, standby)?;
            self.last_applied = Some(plan);
            self.pool.last_autoscaled = Some(now);
            self.dispatch();
        }
        let all_done =
            self.next_arrival == self.trace.builds.len() && self.queued == 0 && self.running == 0;
        Ok(all_done
            && if declarative {
                self.last_applied == Some(resting)
                    && !self.revisit
                    && self.live.len() as u32 == self.target_instances(resting.size)
                    && self.warming.is_empty()
                    && self.standby.len() as u32 == self.last_standby
                    && self.short_since.is_none()
            } else {
                self.live.is_empty()
            })
    }

    /// Refuses to grow the model past [`MAX_MODEL_INSTANCES`].
    fn room_for(&self, more: usize) -> Result<(), ModelError> {
        if self.instances.len().saturating_add(more) > MAX_MODEL_INSTANCES {
            return Err(ModelError::Fleet(format!(
                "pool {}: the plan asks for more than {MAX_MODEL_INSTANCES} instances over the \
                 simulation, more than the model holds; lower maximum or multiplier",
                self.pool.name
            )));
        }
        Ok(())
    }

    /// Calls the executor with the plan and the standby target (instances); returns its
    /// `revisit`.
    fn apply(&mut self, plan: Plan, standby: u32) -> Result<bool, ModelError> {
        let t = self.t;
        let boot = self.fleet.boot_ms;
        Ok(match self.fleet.executor {
            ExecutorModel::Declarative => {
                let want = self.target_instances(plan.size) as usize;
                let current = self.live.len();
                let held = if want > current {
                    let mut need = want - current;
                    // Standby first (seconds), then instances already booting into standby,
                    // then new ones.
                    while need > 0 {
                        let Some(&inst) = self.standby.last() else {
                            break;
                        };
                        self.resume(inst);
                        need -= 1;
                    }
                    while need > 0 {
                        let Some(inst) = self.warming.pop() else {
                            break;
                        };
                        self.instances[inst as usize].warming = false;
                        self.live.push(inst);
                        need -= 1;
                    }
                    self.room_for(need)?;
                    for _ in 0..need {
                        self.launch(t, boot);
                    }
                    self.out.scale_out_events += 1;
                    false
                } else if want < current {
                    let reduction = current - want;
                    let victims = self.choose_victims(reduction as u32);
                    if !victims.is_empty() {
                        self.out.scale_in_events += 1;
                    }
                    let held = reduction - victims.len();
                    for v in victims {
                        if ((self.standby.len() + self.warming.len()) as u32) < standby {
                            self.put_in_standby(v);
                        } else {
                            self.terminate(v);
                        }
                    }
                    held > 0
                } else {
                    false
                };
                // The standby target: delete the longest waiting above it, boot new ones
                // below it.
                let mut extra = (self.standby.len() + self.warming.len()) as u32;
                while extra > standby {
                    let Some(&inst) = self.standby.first().or(self.warming.first()) else {
                        break;
                    };
                    self.terminate(inst);
                    extra -= 1;
                }
                // Below it: instances resumed from standby usually come back to it when their
                // builds end, so booting replacements for them at once would pay a boot per
                // resume. The shortfall they cover is booted for only once it has lasted a
                // boot time (rent or buy, as the planners' hold); the rest at once.
                if extra < standby {
                    let short = standby - extra;
                    let returning = self
                        .live
                        .iter()
                        .filter(|&&i| self.instances[i as usize].resumed)
                        .count() as u32;
                    let since = *self.short_since.get_or_insert(t);
                    let now = if t - since >= boot {
                        short
                    } else {
                        short.saturating_sub(returning)
                    };
                    self.room_for(now as usize)?;
                    for _ in 0..now {
                        self.launch_warming(t);
                    }
                    if now == short {
                        self.short_since = None;
                    }
                } else {
                    self.short_since = None;
                }
                self.last_standby = standby;
                held
            }
            ExecutorModel::Shell { .. } => {
                let n = plan.queued_size.div_ceil(self.k);
                self.room_for(n as usize)?;
                for _ in 0..n {
                    self.launch(t, boot);
                }
                if n > 0 {
                    self.out.scale_out_events += 1;
                }
                false
            }
        })
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
