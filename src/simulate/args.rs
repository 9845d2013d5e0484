//! The `autoscaler simulate` command line: its flags are a contract like every other command's.

use super::generate::TraceKind;
use std::path::PathBuf;

const AFTER_HELP: &str = "\
Trace CSV: a header row naming queued_at, duration_seconds and (optionally) project, then one
row per build. queued_at is an RFC 3339 timestamp (2024-03-04T09:15:00Z) or seconds since the
start of the trace (540); one form per file. Lines starting with # are comments.

Pool settings start from Vespene's defaults for a new pool (minimum 0, maximum 10, weights 1,
multiplier 1, excess 0, reevaluate_minutes 10, build_latest true, sleep_seconds 10), then the
row of --from-db POOL, then --pool-settings. [planners.NAME] sections of --config configure the
planners exactly as for the real loop.

Examples:
  autoscaler simulate --trace examples/traces/diurnal.csv
  autoscaler simulate --trace examples/traces/diurnal.csv --pool-settings maximum=60 \\
      --planner stock --planner boot-aware --plot diurnal.svg
  autoscaler simulate --trace day.csv --from-db linux --report json
  autoscaler simulate --export-trace day.csv --from-db linux --since 2024-03-04 --until 2024-03-05
  autoscaler simulate --generate diurnal --seed 1 --output examples/traces/diurnal.csv";

/// `autoscaler simulate` arguments.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct SimulateArgs {
    /// A CSV trace of builds: queued_at, duration_seconds, project (see below).
    #[arg(long, value_name = "FILE.csv", required_unless_present_any = ["export_trace", "generate"])]
    pub trace: Option<PathBuf>,

    /// Pool settings over Vespene's defaults (and over --from-db), e.g.
    /// `minimum=0,maximum=50,queued_weight=1,reevaluate_minutes=10,build_latest=true`. Keys:
    /// minimum, maximum, queued_weight, running_weight, multiplier, excess,
    /// reevaluate_minutes, build_latest, sleep_seconds, planner.
    #[arg(long, value_name = "KEY=VALUE,…")]
    pub pool_settings: Option<String>,

    /// Take the pool's settings from this pool's row in --database-url (read-only). With
    /// --export-trace: the pool whose builds are exported.
    #[arg(long, value_name = "POOL")]
    pub from_db: Option<String>,

    /// Seconds from launching an instance until its workers poll the queue.
    #[arg(long, value_name = "SECONDS", default_value_t = 90.0)]
    pub boot_seconds: f64,

    /// Seconds from resuming a standby (stopped or suspended) instance until its workers take
    /// builds again, instead of --boot-seconds (planners with warm capacity: warm).
    #[arg(long, value_name = "SECONDS", default_value_t = 20.0)]
    pub resume_seconds: f64,

    /// What a standby instance costs as a share of a running one: its disk (and a suspended
    /// one's memory image) without the VM. Default from list prices: a 50 GB balanced
    /// persistent disk against an e2-standard-4 on GCE (see docs/simulate.md).
    #[arg(long, value_name = "SHARE", default_value_t = DEFAULT_STANDBY_COST)]
    pub standby_cost: f64,

    /// Where planners with a history (warm) learn the pool's arrivals by hour of the week:
    /// `trace` (the simulated trace itself, in-sample), `none`, or another trace FILE.csv of
    /// the same pool (out-of-sample).
    #[arg(long, value_name = "trace|none|FILE.csv", default_value = "trace")]
    pub history: String,

    /// Workers (concurrent builds) per instance; the executor launches
    /// ceil(size / workers_per_instance) instances.
    #[arg(long, value_name = "K", default_value_t = 1)]
    pub workers_per_instance: u32,

    /// The planner to simulate (overrides the pool's `planner`); repeat to compare several,
    /// one row each.
    #[arg(long = "planner", value_name = "NAME")]
    pub planners: Vec<String>,

    /// Seconds between the autoscaler's full cycles, as `autoscaler --sleep`.
    #[arg(long, value_name = "SECONDS", default_value_t = 20)]
    pub sleep: u64,

    /// Seconds between the fast polls of a declarative pool between full cycles [default:
    /// poll_seconds of --config, else 1, as the real loop]; 0 turns them off.
    #[arg(long, value_name = "SECONDS")]
    pub poll_seconds: Option<f64>,

    /// How plans are applied: `declarative` sets the group's size and applies a changed plan
    /// at once (aws-asg, gce-mig); `shell` launches queued_size workers whenever the pool's
    /// reevaluate_minutes timer runs out, and its workers exit on their own.
    #[arg(long, value_enum, default_value_t = ExecutorKind::Declarative)]
    pub executor: ExecutorKind,

    /// Seconds a worker waits between polls of the queue [default: the pool's sleep_seconds,
    /// which is what Vespene's worker does]; 0 takes a build the instant it is queued.
    #[arg(long, value_name = "SECONDS")]
    pub worker_poll_seconds: Option<f64>,

    /// With --executor shell: builds a worker runs before exiting (its --max-builds; 0 =
    /// unlimited) [default: 1, as Vespene's docs advise for non-declarative setups].
    #[arg(long, value_name = "N")]
    pub worker_max_builds: Option<u32>,

    /// With --executor shell: idle minutes after which a worker exits (its
    /// --max-wait-minutes; 0 = never) [default: 5].
    #[arg(long, value_name = "MINUTES")]
    pub worker_max_wait_minutes: Option<f64>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
    pub report: ReportFormat,

    /// Also draw queued builds, running builds and capacity over time to this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,

    /// Instead of simulating: write the builds of --from-db POOL queued between --since and
    /// --until as a trace (queued_time, end_time - start_time, project_id).
    #[arg(long, value_name = "FILE.csv", requires_all = ["from_db", "since"], conflicts_with_all = ["trace", "generate"])]
    pub export_trace: Option<PathBuf>,

    /// With --export-trace: first queue time to include (RFC 3339 or YYYY-MM-DD, UTC).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,

    /// With --export-trace: queue times before this are included (RFC 3339 or YYYY-MM-DD,
    /// UTC) [default: now].
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,

    /// Instead of simulating: write a synthetic one-day trace of this shape (to --output or
    /// stdout).
    #[arg(long, value_enum, value_name = "KIND", conflicts_with = "trace")]
    pub generate: Option<TraceKind>,

    /// With --generate: the seed (the traces in examples/traces/ use 1).
    #[arg(long, default_value_t = 1, requires = "generate")]
    pub seed: u64,

    /// With --generate: the file to write [default: stdout].
    #[arg(long, value_name = "FILE.csv", requires = "generate")]
    pub output: Option<PathBuf>,
}

/// `--standby-cost`'s default: GCE list prices (us-central1), a 50 GB pd-balanced disk at
/// $0.10 per GB-month ($5.00 a month, $0.0068 an hour) against an e2-standard-4 at $0.134 an
/// hour: 0.051, rounded to 0.05.
pub const DEFAULT_STANDBY_COST: f64 = 0.05;

/// `--executor`: the two ways the engine applies a plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExecutorKind {
    /// Sets a group's size (aws-asg, gce-mig).
    Declarative,
    /// Launches workers per call (a non-declarative shell command).
    Shell,
}

/// `--report`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    /// Aligned columns for people.
    Table,
    /// One JSON object (setup and results) with a fixed key order, for scripts.
    Json,
}
