//! From a simulation's [`Outcome`] to the figures a person tunes a pool by: queue waits,
//! worker-hours against the lower bound, idle share and scale events; as a table or JSON.

use crate::simulate::model::{BuildFate, Outcome};
use crate::simulate::trace::Trace;
use serde::Serialize;

/// One simulation's figures. Every time is in seconds or hours as named; floats are rounded
/// to 3 decimals so the JSON is stable across runs and platforms.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Metrics {
    /// The planner the pool ran.
    pub planner: String,
    /// Builds in the trace.
    pub builds: usize,
    /// Builds a worker ran.
    pub ran: usize,
    /// Builds aborted by `build_latest` because a worker took an older build of the project.
    pub superseded: usize,
    /// Builds still queued when the simulation was cut off (see `capped`).
    pub never_started: usize,
    /// Queue wait (queued to started) of the builds that ran: median.
    pub wait_p50_seconds: f64,
    /// 95th percentile (nearest rank).
    pub wait_p95_seconds: f64,
    /// Longest.
    pub wait_max_seconds: f64,
    /// Mean.
    pub wait_mean_seconds: f64,
    /// Worker time paid for, launch to termination, boot included.
    pub worker_hours: f64,
    /// The lower bound: the summed durations of the builds that ran (no fleet can do that
    /// work in fewer worker-hours).
    pub lower_bound_worker_hours: f64,
    /// `cost_worker_hours / lower_bound_worker_hours`: the standby's cost included.
    pub ratio_to_lower_bound: f64,
    /// Share of the paid worker time that ran no build (booting, idle, waiting to be
    /// removed).
    pub idle_fraction: f64,
    /// Paid worker time spent booting.
    pub boot_worker_hours: f64,
    /// Instances launched.
    pub instances_launched: usize,
    /// Most workers paid for at once.
    pub peak_workers: u32,
    /// Executor calls that launched instances.
    pub scale_out_events: u64,
    /// Executor calls that removed instances.
    pub scale_in_events: u64,
    /// `scale_out_events + scale_in_events`.
    pub scale_events: u64,
    /// Executor calls, including ones that changed nothing (the `reevaluate_minutes` timer).
    pub executor_calls: u64,
    /// Autoscaler cycles.
    pub cycles: u64,
    /// Simulated time from the trace's start until the fleet came to rest.
    pub simulated_hours: f64,
    /// The run was cut off a day after the last build was queued, before coming to rest.
    pub capped: bool,
    /// Worker time spent in standby (stopped or suspended), billed at the standby rate.
    pub standby_worker_hours: f64,
    /// What the fleet cost, in running-worker-hours: `worker_hours` plus the standby's
    /// hours times its share of a running instance's price.
    pub cost_worker_hours: f64,
    /// Standby instances brought back into service.
    pub resumes: u64,
}

fn round3(x: f64) -> f64 {
    if x.is_finite() {
        (x * 1000.0).round() / 1000.0
    } else {
        0.0
    }
}

/// The `p`-th percentile by nearest rank of sorted values (0 for none).
pub fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

impl Metrics {
    /// Computes the figures of one run; `workers_per_instance` converts instances to workers.
    pub fn compute(
        planner: &str,
        trace: &Trace,
        outcome: &Outcome,
        workers_per_instance: u32,
    ) -> Metrics {
        let end = outcome.end_ms;
        let k = f64::from(workers_per_instance);
        let mut waits: Vec<i64> = Vec::with_capacity(trace.builds.len());
        let (mut superseded, mut never, mut busy_ms) = (0usize, 0usize, 0i64);
        for (b, fate) in trace.builds.iter().zip(&outcome.fates) {
            match *fate {
                BuildFate::Ran { start_ms, .. } => {
                    waits.push(start_ms - b.queued_ms);
                    busy_ms += (start_ms + b.duration_ms).min(end.max(start_ms)) - start_ms;
                }
                BuildFate::Superseded { .. } => superseded += 1,
                BuildFate::NeverStarted => never += 1,
            }
        }
        waits.sort_unstable();
        let (mut paid_ms, mut boot_ms, mut standby_ms) = (0i64, 0i64, 0i64);
        let mut edges: Vec<(i64, i32)> = Vec::with_capacity(outcome.instances.len() * 2);
        for i in &outcome.instances {
            let gone = i.gone_ms.unwrap_or(end).min(end).max(i.launched_ms);
            let standby = i.standby_ms.clamp(0, gone - i.launched_ms);
            paid_ms += gone - i.launched_ms - standby;
            standby_ms += standby;
            boot_ms += i.ready_ms.min(gone) - i.launched_ms;
            edges.push((i.launched_ms, 1));
            edges.push((gone, -1));
        }
        // Terminations before launches at the same instant.
        edges.sort_unstable();
        let (mut now, mut peak) = (0i32, 0i32);
        for (_, d) in edges {
            now += d;
            peak = peak.max(now);
        }
        let worker_hours = paid_ms as f64 * k / 3_600_000.0;
        let standby_hours = standby_ms as f64 * k / 3_600_000.0;
        let cost = worker_hours + outcome.standby_cost * standby_hours;
        let lower = busy_ms as f64 / 3_600_000.0;
        let mean = if waits.is_empty() {
            0.0
        } else {
            waits.iter().sum::<i64>() as f64 / waits.len() as f64 / 1000.0
        };
        Metrics {
            planner: planner.to_string(),
            builds: trace.builds.len(),
            ran: waits.len(),
            superseded,
            never_started: never,
            wait_p50_seconds: round3(percentile(&waits, 50.0) as f64 / 1000.0),
            wait_p95_seconds: round3(percentile(&waits, 95.0) as f64 / 1000.0),
            wait_max_seconds: round3(waits.last().copied().unwrap_or(0) as f64 / 1000.0),
            wait_mean_seconds: round3(mean),
            worker_hours: round3(worker_hours),
            lower_bound_worker_hours: round3(lower),
            ratio_to_lower_bound: round3(if lower > 0.0 { cost / lower } else { 0.0 }),
            idle_fraction: round3(if worker_hours > 0.0 {
                1.0 - lower / worker_hours
            } else {
                0.0
            }),
            boot_worker_hours: round3(boot_ms as f64 * k / 3_600_000.0),
            instances_launched: outcome.instances.len(),
            peak_workers: (peak.max(0) as u32) * workers_per_instance,
            scale_out_events: outcome.scale_out_events,
            scale_in_events: outcome.scale_in_events,
            scale_events: outcome.scale_out_events + outcome.scale_in_events,
            executor_calls: outcome.executor_calls,
            cycles: outcome.cycles,
            simulated_hours: round3(end as f64 / 3_600_000.0),
            capped: outcome.capped,
            standby_worker_hours: round3(standby_hours),
            cost_worker_hours: round3(cost),
            resumes: outcome.resumes,
        }
    }
}

/// What was simulated, echoed in the report so a saved report says what produced it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Setup {
    /// The trace file (or `-`).
    pub trace: String,
    /// Its builds.
    pub builds: usize,
    /// Distinct projects.
    pub projects: usize,
    /// The instant offset 0 stands for, RFC 3339.
    pub start: String,
    /// Summed durations of every build of the trace, in hours.
    pub trace_work_hours: f64,
    /// `declarative` or `shell`.
    pub executor: String,
    /// Launch to first poll of an instance's workers.
    pub boot_seconds: f64,
    /// Workers per instance.
    pub workers_per_instance: u32,
    /// The autoscaler's `--sleep`.
    pub sleep_seconds: f64,
    /// Fast polls of the declarative pool between full cycles (0: none).
    pub poll_seconds: f64,
    /// A worker's pause between polls of the queue.
    pub worker_poll_seconds: f64,
    /// Shell only: `--max-builds` of each worker (`null`: unlimited).
    pub worker_max_builds: Option<u32>,
    /// Shell only: `--max-wait-minutes` of each worker (`null`: never).
    pub worker_max_wait_minutes: Option<f64>,
    /// The config file's runaway guard (`null`: none).
    pub max_step_up: Option<u32>,
    /// The pool's settings that matter to the simulation.
    pub pool: PoolSetup,
    /// Standby to workers taking builds.
    pub resume_seconds: f64,
    /// A standby instance's price as a share of a running one's.
    pub standby_cost: f64,
    /// Where the planners' arrival history came from: `trace` (the simulated trace itself),
    /// `none`, or a trace file.
    pub history: String,
    /// Each simulated planner's own settings (`[planners.NAME]` with its defaults), in the
    /// order of `results`.
    pub planners: Vec<PlannerSetup>,
}

/// A simulated planner and the settings it ran with.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PlannerSetup {
    /// Its name, as in `results`.
    pub name: String,
    /// Its `[planners.NAME]` settings, defaults filled in (`null`: it has none).
    pub settings: serde_json::Value,
}

/// The pool columns the planners and the timer use, each as in `worker_pools`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PoolSetup {
    /// The pool simulated.
    pub name: String,
    /// `minimum`: the floor the planner never goes below.
    pub minimum: i32,
    /// `maximum`: the ceiling, and the runaway guard's last word.
    pub maximum: i32,
    /// `queued_weight`: workers per queued build.
    pub queued_weight: f64,
    /// `running_weight`: workers per running build.
    pub running_weight: f64,
    /// `multiplier`: on the weighted sum.
    pub multiplier: f64,
    /// `excess`: workers added on top.
    pub excess: i32,
    /// `reevaluate_minutes`: the timer of a non-declarative pool.
    pub reevaluate_minutes: i32,
    /// `build_latest`: queued builds counted once per project.
    pub build_latest: bool,
    /// `sleep_seconds`: how often an idle worker polls the queue.
    pub sleep_seconds: i32,
}

/// A whole report: the setup and one line of figures per planner.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// What was simulated.
    pub setup: Setup,
    /// One entry per `--planner`, in the order given.
    pub results: Vec<Metrics>,
    /// Settings that disagree in a way that makes the result describe no real setup (also
    /// printed on stderr).
    pub warnings: Vec<String>,
}

impl Report {
    /// Pretty JSON with a fixed key order (the struct's).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report always serializes")
    }

    /// A table for people: one row per planner, then the setup in one line.
    pub fn to_table(&self) -> String {
        let s = &self.setup;
        let mut out = String::new();
        out += &format!(
            "trace {}: {} builds, {} projects, {:.1} worker-hours of work\n",
            s.trace, s.builds, s.projects, s.trace_work_hours
        );
        out += &format!(
            "pool {}: minimum {} maximum {} queued_weight {} running_weight {} multiplier {} excess {} \
             reevaluate_minutes {} build_latest {}\n",
            s.pool.name,
            s.pool.minimum,
            s.pool.maximum,
            s.pool.queued_weight,
            s.pool.running_weight,
            s.pool.multiplier,
            s.pool.excess,
            s.pool.reevaluate_minutes,
            s.pool.build_latest
        );
        out += &format!(
            "fleet: {} executor, boot {} s (from standby {} s, standby at {} of the running price), {} worker(s)/instance; autoscaler --sleep {} s{}; worker poll {} s{}{}\n\n",
            s.executor,
            s.boot_seconds,
            s.resume_seconds,
            s.standby_cost,
            s.workers_per_instance,
            s.sleep_seconds,
            if s.poll_seconds > 0.0 {
                format!(", fast poll {} s", s.poll_seconds)
            } else {
                String::new()
            },
            s.worker_poll_seconds,
            match (s.worker_max_builds, s.worker_max_wait_minutes) {
                (None, None) if s.executor == "declarative" => String::new(),
                (b, w) => format!(
                    ", workers exit after {} build(s) / {} idle",
                    b.map(|b| b.to_string()).unwrap_or_else(|| "unlimited".into()),
                    w.map(|w| format!("{w} min")).unwrap_or_else(|| "never".into())
                ),
            },
            s.max_step_up
                .map(|m| format!(", max_step_up {m}"))
                .unwrap_or_default()
        );
        let header = [
            "planner",
            "ran",
            "superseded",
            "wait p50 s",
            "p95 s",
            "max s",
            "worker-h",
            "standby-h",
            "cost",
            "lower bound",
            "ratio",
            "idle",
            "peak",
            "scale out/in",
            "calls",
        ];
        let rows: Vec<Vec<String>> = self
            .results
            .iter()
            .map(|m| {
                vec![
                    m.planner.clone(),
                    m.ran.to_string(),
                    m.superseded.to_string(),
                    format!("{:.0}", m.wait_p50_seconds),
                    format!("{:.0}", m.wait_p95_seconds),
                    format!("{:.0}", m.wait_max_seconds),
                    format!("{:.1}", m.worker_hours),
                    format!("{:.1}", m.standby_worker_hours),
                    format!("{:.1}", m.cost_worker_hours),
                    format!("{:.1}", m.lower_bound_worker_hours),
                    format!("{:.2}", m.ratio_to_lower_bound),
                    format!("{:.0}%", m.idle_fraction * 100.0),
                    m.peak_workers.to_string(),
                    format!("{}/{}", m.scale_out_events, m.scale_in_events),
                    m.executor_calls.to_string(),
                ]
            })
            .collect();
        let widths: Vec<usize> = (0..header.len())
            .map(|c| {
                rows.iter()
                    .map(|r| r[c].len())
                    .chain([header[c].len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: Vec<&str>| -> String {
            let mut l = String::new();
            for (c, cell) in cells.iter().enumerate() {
                if c == 0 {
                    l += &format!("{cell:<w$}", w = widths[c]);
                } else {
                    l += &format!("  {cell:>w$}", w = widths[c]);
                }
            }
            l.trim_end().to_string() + "\n"
        };
        out += &line(header.to_vec());
        for r in &rows {
            out += &line(r.iter().map(String::as_str).collect());
        }
        for w in &self.warnings {
            out += &format!("warning: {w}\n");
        }
        for m in &self.results {
            if m.capped {
                out += &format!(
                    "note: {}: cut off {} h after the start, a day after the last build was queued, before the fleet came to rest ({} build(s) never started)\n",
                    m.planner, m.simulated_hours, m.never_started
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let v: Vec<i64> = (1..=20).collect();
        assert_eq!(percentile(&v, 50.0), 10);
        assert_eq!(percentile(&v, 95.0), 19);
        assert_eq!(percentile(&v, 100.0), 20);
        assert_eq!(percentile(&[7], 95.0), 7);
        assert_eq!(percentile(&[], 95.0), 0);
    }
}
