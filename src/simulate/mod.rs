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

mod args;
mod export;
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
use trace::Trace;

pub use args::{ExecutorKind, ReportFormat, SimulateArgs, DEFAULT_STANDBY_COST};
use export::export;
pub use export::trace_from_rows;

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
        write_generated(kind, &args)?;
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
        for w in mismatches(&args, chosen, &label) {
            if !warnings.contains(&w) {
                warnings.push(w);
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
        write_plot(svg, &args, path, &trace, &pool, &fleet, &outcomes)?;
    }
    match args.report {
        ReportFormat::Table => print!("{}", report.to_table()),
        ReportFormat::Json => println!("{}", report.to_json()),
    }
    Ok(0)
}

/// `--generate`: a seeded synthetic trace, to `--output` or stdout.
fn write_generated(kind: TraceKind, args: &SimulateArgs) -> Result<(), SimulateError> {
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
    Ok(())
}

/// Warnings for a planner configured for another fleet than the one simulated: its result
/// then describes neither setup.
fn mismatches(
    args: &SimulateArgs,
    chosen: &dyn crate::planner::Planner,
    label: &str,
) -> Vec<String> {
    let mut warnings = Vec::new();
    if let Some(b) = chosen.boot_seconds() {
        if (b as f64 - args.boot_seconds).abs() > 1e-9 {
            warnings.push(format!(
                "--boot-seconds {} differs from [planners.{label}] boot_seconds = {b}: the \
                 planner provisions for a boot the simulated fleet does not have, so the \
                 result describes neither setup",
                args.boot_seconds
            ));
        }
    }
    if let Some(r) = chosen.resume_seconds() {
        if (r as f64 - args.resume_seconds).abs() > 1e-9 {
            warnings.push(format!(
                "--resume-seconds {} differs from [planners.{label}] resume_seconds = {r}",
                args.resume_seconds
            ));
        }
    }
    warnings
}

/// `--plot`: one panel per planner simulated.
fn write_plot(
    svg: &std::path::Path,
    args: &SimulateArgs,
    path: &std::path::Path,
    trace: &Trace,
    pool: &WorkerPool,
    fleet: &Fleet,
    outcomes: &[(String, model::Outcome)],
) -> Result<(), SimulateError> {
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
    Ok(())
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
