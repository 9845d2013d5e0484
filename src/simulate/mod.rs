//! `autoscaler simulate`: replays a trace of builds through the real planner code and a model
//! of the fleet, so a pool can be tuned on a laptop instead of on the production fleet.
//!
//! - [`trace`]: the CSV format, reading and writing.
//! - [`model`]: the event-driven fleet and autoscaler loop (what is modelled and what is not).
//! - [`report`]: the figures, as a table or JSON.
//! - [`plot`]: the SVG.
//! - [`generate`]: the seeded synthetic traces shipped in `examples/traces/`.
//!
//! The subcommand also exports traces from a Vespene database (`--export-trace`) and writes
//! synthetic ones (`--generate`).

pub mod generate;
pub mod model;
pub mod plot;
pub mod report;
pub mod trace;

use crate::config::Config;
use crate::db::{ConnectOptions, Database};
use crate::planner::Planners;
use autoscaler_executor::WorkerPool;
use chrono::{DateTime, NaiveDate, Utc};
use generate::TraceKind;
use model::{ExecutorModel, Fleet};
use report::{Metrics, PoolSetup, Report, Setup};
use std::path::PathBuf;
use trace::Trace;

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

/// Why a simulation could not run; the message names the file, flag or setting at fault.
#[derive(Debug, thiserror::Error)]
#[error("simulate: {0}")]
pub struct SimulateError(pub String);

impl SimulateError {
    fn new(message: impl std::fmt::Display) -> Self {
        SimulateError(message.to_string())
    }
}

/// Runs the subcommand; returns the exit status.
pub async fn run(
    args: SimulateArgs,
    database_url: &str,
    config: &Config,
) -> Result<u8, SimulateError> {
    if let Some(kind) = args.generate {
        let trace = generate::generate(kind, args.seed);
        let comments = generate::header_comments(kind, args.seed);
        match &args.output {
            Some(path) => {
                let file = std::fs::File::create(path)
                    .map_err(|e| SimulateError::new(format!("{}: {e}", path.display())))?;
                trace
                    .write(file, &comments)
                    .map_err(|e| SimulateError::new(format!("{}: {e}", path.display())))?;
                eprintln!("wrote {} builds to {}", trace.builds.len(), path.display());
            }
            None => trace
                .write(std::io::stdout().lock(), &comments)
                .map_err(|e| SimulateError::new(format!("stdout: {e}")))?,
        }
        return Ok(0);
    }
    if let Some(path) = &args.export_trace {
        return export(&args, path, database_url).await;
    }

    let pool = pool_for(&args, database_url).await?;
    let path = args
        .trace
        .as_ref()
        .ok_or_else(|| SimulateError::new("--trace FILE.csv is required"))?;
    let trace = Trace::load(path).map_err(SimulateError::new)?;
    if trace.builds.is_empty() {
        return Err(SimulateError::new(format!(
            "{}: the trace has no builds",
            path.display()
        )));
    }
    let planners = Planners::from_config(&config.planners).map_err(SimulateError::new)?;
    let fleet = fleet_for(&args, &pool, config)?;
    let history = match args.history.as_str() {
        "trace" => Some(trace.clone()),
        "none" => None,
        file => {
            let h = Trace::load(std::path::Path::new(file))
                .map_err(|e| SimulateError::new(format!("--history: {e}")))?;
            Some(h)
        }
    };
    let names: Vec<Option<String>> = if args.planners.is_empty() {
        vec![None]
    } else {
        args.planners.iter().cloned().map(Some).collect()
    };

    let mut results = Vec::new();
    let mut outcomes = Vec::new();
    let mut planner_setups = Vec::new();
    let mut warnings = Vec::new();
    for name in names {
        let mut p = pool.clone();
        if let Some(n) = name {
            p.planner = Some(n);
        }
        let chosen = planners.lookup(&p).map_err(SimulateError::new)?;
        let label = chosen.name().to_string();
        if let Some(b) = chosen.boot_seconds() {
            if (b as f64 - args.boot_seconds).abs() > 1e-9 {
                let w = format!(
                    "--boot-seconds {} differs from [planners.{label}] boot_seconds = {b}: the \
                     planner provisions for a boot the simulated fleet does not have, so the \
                     result describes neither setup",
                    args.boot_seconds
                );
                if !warnings.contains(&w) {
                    warnings.push(w);
                }
            }
        }
        if let Some(r) = chosen.resume_seconds() {
            if (r as f64 - args.resume_seconds).abs() > 1e-9 {
                let w = format!(
                    "--resume-seconds {} differs from [planners.{label}] resume_seconds = {r}",
                    args.resume_seconds
                );
                if !warnings.contains(&w) {
                    warnings.push(w);
                }
            }
        }
        planner_setups.push(report::PlannerSetup {
            name: label.clone(),
            settings: chosen.settings(),
        });
        let started = std::time::Instant::now();
        let outcome = model::simulate_with_history(
            &trace,
            &p,
            &fleet,
            &planners,
            args.plot.is_some(),
            history.as_ref(),
        )
        .map_err(SimulateError::new)?;
        tracing::debug!(
            planner = %label,
            elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
            "simulated {} builds",
            trace.builds.len()
        );
        results.push(Metrics::compute(
            &label,
            &trace,
            &outcome,
            fleet.workers_per_instance,
        ));
        outcomes.push((label, outcome));
    }

    for w in &warnings {
        eprintln!("autoscaler simulate: warning: {w}");
    }
    let mut setup = setup(&args, path, &trace, &pool, &fleet);
    setup.planners = planner_setups;
    let report = Report {
        setup,
        results,
        warnings,
    };
    if let Some(svg) = &args.plot {
        let panels: Vec<plot::Panel<'_>> = outcomes
            .iter()
            .map(|(label, o)| plot::Panel {
                title: format!(
                    "{label} on {} (boot {} s, {} worker(s)/instance, maximum {})",
                    path.file_name()
                        .map(|f| f.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    args.boot_seconds,
                    fleet.workers_per_instance,
                    pool.maximum
                ),
                series: &o.series,
                end_ms: o.end_ms,
                start: trace.start,
            })
            .collect();
        plot::write_svg(svg, &panels).map_err(SimulateError::new)?;
        eprintln!(
            "wrote the plot of {} planner(s) to {}",
            panels.len(),
            svg.display()
        );
    }
    match args.report {
        ReportFormat::Table => print!("{}", report.to_table()),
        ReportFormat::Json => println!("{}", report.to_json()),
    }
    Ok(0)
}

/// Applies `key=value,…` to a pool row; errors name the key.
pub fn apply_pool_settings(pool: &mut WorkerPool, spec: &str) -> Result<(), SimulateError> {
    const KEYS: &str = "minimum, maximum, queued_weight, running_weight, multiplier, excess, \
                        reevaluate_minutes, build_latest, sleep_seconds, planner";
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (key, value) = item.split_once('=').ok_or_else(|| {
            SimulateError::new(format!(
                "--pool-settings: {item:?} is not KEY=VALUE (keys: {KEYS})"
            ))
        })?;
        let (key, value) = (key.trim(), value.trim());
        let bad = |what: &str| {
            SimulateError::new(format!("--pool-settings: {key}: {value:?} is not {what}"))
        };
        let int = || value.parse::<i32>().map_err(|_| bad("an integer"));
        let float = || value.parse::<f64>().map_err(|_| bad("a number"));
        match key {
            "minimum" => pool.minimum = int()?,
            "maximum" => pool.maximum = int()?,
            "excess" => pool.excess = int()?,
            "reevaluate_minutes" => pool.reevaluate_minutes = int()?,
            "sleep_seconds" => pool.sleep_seconds = int()?,
            "queued_weight" => pool.queued_weight = float()?,
            "running_weight" => pool.running_weight = float()?,
            "multiplier" => pool.multiplier = float()?,
            "build_latest" => {
                pool.build_latest = match value.to_ascii_lowercase().as_str() {
                    "true" | "1" | "yes" => true,
                    "false" | "0" | "no" => false,
                    _ => return Err(bad("true or false")),
                }
            }
            "planner" => pool.planner = Some(value.to_string()),
            other => {
                return Err(SimulateError::new(format!(
                    "--pool-settings: unknown key {other:?} (keys: {KEYS})"
                )))
            }
        }
    }
    Ok(())
}

/// The pool row to simulate: Vespene's defaults, then the database row, then
/// `--pool-settings`; checked as the engine checks it.
async fn pool_for(args: &SimulateArgs, database_url: &str) -> Result<WorkerPool, SimulateError> {
    let mut pool = match &args.from_db {
        Some(name) => load_pool(database_url, name).await?.1,
        None => WorkerPool::with_defaults(1, "simulated"),
    };
    if let Some(spec) = &args.pool_settings {
        apply_pool_settings(&mut pool, spec)?;
    }
    if pool.sleep_seconds < 0 {
        return Err(SimulateError::new(format!(
            "pool {}: sleep_seconds: must not be negative, got {}",
            pool.name, pool.sleep_seconds
        )));
    }
    crate::planner::validate(&pool).map_err(SimulateError::new)?;
    Ok(pool)
}

async fn load_pool(
    database_url: &str,
    name: &str,
) -> Result<(Database, WorkerPool), SimulateError> {
    let db =
        Database::connect(database_url, &ConnectOptions::default()).map_err(SimulateError::new)?;
    let mut rows = db
        .load_pools(&[name.to_string()])
        .await
        .map_err(SimulateError::new)?;
    if rows.is_empty() {
        return Err(SimulateError::new(format!(
            "--from-db: no worker pool named {name:?} in {}",
            crate::db::redact_url(database_url)
        )));
    }
    Ok((db, rows.remove(0)))
}

/// Longest time any simulated setting may span (a week): larger values are typing mistakes,
/// and they would make the model step for ever or overflow its millisecond clock.
pub const MAX_SETTING_SECONDS: u64 = 7 * 86_400;

fn fleet_for(
    args: &SimulateArgs,
    pool: &WorkerPool,
    config: &Config,
) -> Result<Fleet, SimulateError> {
    let seconds = |flag: &str, x: f64| -> Result<i64, SimulateError> {
        if !x.is_finite() || x < 0.0 {
            return Err(SimulateError::new(format!(
                "{flag}: must be a number of seconds, 0 or more, got {x}"
            )));
        }
        if x > MAX_SETTING_SECONDS as f64 {
            return Err(SimulateError::new(format!(
                "{flag}: at most {MAX_SETTING_SECONDS} seconds (a week), got {x}"
            )));
        }
        Ok((x * 1000.0).round() as i64)
    };
    let shell = args.executor == ExecutorKind::Shell;
    if !shell && (args.worker_max_builds.is_some() || args.worker_max_wait_minutes.is_some()) {
        return Err(SimulateError::new(
            "--worker-max-builds and --worker-max-wait-minutes apply to --executor shell only \
             (a declarative group keeps its workers)",
        ));
    }
    if args.sleep == 0 || args.sleep > MAX_SETTING_SECONDS {
        return Err(SimulateError::new(format!(
            "--sleep: must be 1 to {MAX_SETTING_SECONDS} seconds, got {}",
            args.sleep
        )));
    }
    let executor = if shell {
        let max_builds = match args.worker_max_builds.unwrap_or(1) {
            0 => None,
            n => Some(n),
        };
        let wait = args.worker_max_wait_minutes.unwrap_or(5.0);
        let max_wait_ms = seconds("--worker-max-wait-minutes", wait * 60.0)?;
        ExecutorModel::Shell {
            max_builds,
            max_wait_ms: (max_wait_ms > 0).then_some(max_wait_ms),
        }
    } else {
        ExecutorModel::Declarative
    };
    Ok(Fleet {
        boot_ms: seconds("--boot-seconds", args.boot_seconds)?,
        workers_per_instance: args.workers_per_instance,
        sleep_ms: args.sleep as i64 * 1000,
        poll_ms: seconds(
            "--poll-seconds",
            args.poll_seconds.or(config.poll_seconds).unwrap_or(1.0),
        )?,
        worker_poll_ms: seconds(
            "--worker-poll-seconds",
            args.worker_poll_seconds
                .unwrap_or(f64::from(pool.sleep_seconds.max(0))),
        )?,
        executor,
        max_step_up: config.max_step_up,
        resume_ms: seconds("--resume-seconds", args.resume_seconds)?,
        standby_cost: if args.standby_cost.is_finite() && (0.0..=1.0).contains(&args.standby_cost) {
            args.standby_cost
        } else {
            return Err(SimulateError::new(format!(
                "--standby-cost: must be a share of a running instance's price, 0 to 1, got {}",
                args.standby_cost
            )));
        },
    })
}

fn setup(
    args: &SimulateArgs,
    path: &std::path::Path,
    trace: &Trace,
    pool: &WorkerPool,
    fleet: &Fleet,
) -> Setup {
    let (max_builds, max_wait) = match fleet.executor {
        ExecutorModel::Declarative => (None, None),
        ExecutorModel::Shell {
            max_builds,
            max_wait_ms,
        } => (max_builds, max_wait_ms.map(|w| w as f64 / 60_000.0)),
    };
    Setup {
        trace: path.display().to_string(),
        builds: trace.builds.len(),
        projects: trace.projects.len(),
        start: trace.start.to_rfc3339(),
        trace_work_hours: (trace.total_work_seconds() / 3600.0 * 1000.0).round() / 1000.0,
        executor: match args.executor {
            ExecutorKind::Declarative => "declarative",
            ExecutorKind::Shell => "shell",
        }
        .into(),
        boot_seconds: fleet.boot_ms as f64 / 1000.0,
        workers_per_instance: fleet.workers_per_instance,
        sleep_seconds: fleet.sleep_ms as f64 / 1000.0,
        poll_seconds: if fleet.executor.declarative() && fleet.poll_ms < fleet.sleep_ms {
            fleet.poll_ms as f64 / 1000.0
        } else {
            0.0
        },
        worker_poll_seconds: fleet.worker_poll_ms as f64 / 1000.0,
        worker_max_builds: max_builds,
        worker_max_wait_minutes: max_wait,
        max_step_up: fleet.max_step_up,
        pool: PoolSetup {
            name: pool.name.clone(),
            minimum: pool.minimum,
            maximum: pool.maximum,
            queued_weight: pool.queued_weight,
            running_weight: pool.running_weight,
            multiplier: pool.multiplier,
            excess: pool.excess,
            reevaluate_minutes: pool.reevaluate_minutes,
            build_latest: pool.build_latest,
            sleep_seconds: pool.sleep_seconds,
        },
        resume_seconds: fleet.resume_ms as f64 / 1000.0,
        standby_cost: fleet.standby_cost,
        history: args.history.clone(),
        planners: Vec::new(),
    }
}

/// `--since` / `--until`: RFC 3339, or a date meaning its midnight UTC.
pub fn parse_time(flag: &str, raw: &str) -> Result<DateTime<Utc>, SimulateError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight").and_utc());
    }
    Err(SimulateError::new(format!(
        "{flag}: {raw:?} is neither an RFC 3339 time (2024-03-04T09:00:00Z) nor a date (2024-03-04)"
    )))
}

/// `--export-trace`: builds that ran (queued, started and ended) become rows; the others are
/// counted and reported on stderr.
async fn export(
    args: &SimulateArgs,
    path: &std::path::Path,
    database_url: &str,
) -> Result<u8, SimulateError> {
    let name = args
        .from_db
        .as_deref()
        .ok_or_else(|| SimulateError::new("--export-trace needs --from-db POOL"))?;
    let since = parse_time(
        "--since",
        args.since
            .as_deref()
            .ok_or_else(|| SimulateError::new("--export-trace needs --since"))?,
    )?;
    let until = match &args.until {
        Some(u) => parse_time("--until", u)?,
        None => Utc::now(),
    };
    if until <= since {
        return Err(SimulateError::new(format!(
            "--until ({until}) must be after --since ({since})"
        )));
    }
    let (db, pool) = load_pool(database_url, name).await?;
    let rows = db
        .trace_builds(pool.id, since, until)
        .await
        .map_err(SimulateError::new)?;
    db.close().await;
    let mut readable = Vec::with_capacity(rows.len());
    let mut unreadable = Vec::new();
    for r in rows {
        match r {
            Ok(t) => readable.push((t.id, t.project, t.queued, t.start, t.end)),
            Err(e) => unreadable.push(e),
        }
    }
    let (trace, skipped) = trace_from_rows(&readable);
    let file = std::fs::File::create(path)
        .map_err(|e| SimulateError::new(format!("{}: {e}", path.display())))?;
    trace
        .write(
            file,
            &[format!(
                "exported from pool {name:?}: builds queued in [{}, {})",
                since.to_rfc3339(),
                until.to_rfc3339()
            )],
        )
        .map_err(|e| SimulateError::new(format!("{}: {e}", path.display())))?;
    eprintln!(
        "wrote {} builds of pool {name} to {}; left out {skipped} that never ran or had not finished",
        trace.builds.len(),
        path.display()
    );
    for e in &unreadable {
        eprintln!("autoscaler simulate: left out {e}");
    }
    // A trace missing builds would mislead whatever is tuned with it: say so in the status.
    Ok(if unreadable.is_empty() { 0 } else { 2 })
}

/// Rows of [`Database::trace_builds`] as a trace (timestamps kept); returns the trace and how
/// many rows were left out for lacking a start or an end (or ending before they started).
#[allow(clippy::type_complexity)]
pub fn trace_from_rows(
    rows: &[(
        i64,
        Option<i64>,
        DateTime<Utc>,
        Option<DateTime<Utc>>,
        Option<DateTime<Utc>>,
    )],
) -> (Trace, usize) {
    let mut kept: Vec<(DateTime<Utc>, i64, Option<i64>)> = Vec::new();
    let mut skipped = 0;
    for &(_, project, queued, start, end) in rows {
        match (start, end) {
            (Some(s), Some(e)) if e >= s => {
                kept.push((queued, (e - s).num_milliseconds(), project))
            }
            _ => skipped += 1,
        }
    }
    let start = kept
        .iter()
        .map(|k| k.0)
        .min()
        .unwrap_or_else(|| DateTime::<Utc>::from_timestamp(trace::OFFSET_EPOCH, 0).unwrap());
    let mut projects: Vec<String> = Vec::new();
    let mut index: std::collections::HashMap<i64, u32> = Default::default();
    let mut builds: Vec<trace::TraceBuild> = kept
        .into_iter()
        .map(|(queued, duration_ms, project)| trace::TraceBuild {
            queued_ms: (queued - start).num_milliseconds(),
            duration_ms,
            project: project.map(|p| {
                *index.entry(p).or_insert_with(|| {
                    projects.push(p.to_string());
                    (projects.len() - 1) as u32
                })
            }),
        })
        .collect();
    builds.sort_by_key(|b| b.queued_ms);
    (
        Trace {
            start,
            builds,
            projects,
            timestamps: true,
        },
        skipped,
    )
}
