//! `autoscaler status`: what an operator runs first when someone asks why their build waits.
//!
//! One row per pool, read-only: the pool's switches, its queue, the size its planner wants now,
//! what the target says it has (the executor's own `status`, no change made), and the last
//! attempt's result in words. Nothing is written, locked or scaled.

use crate::config::Config;
use crate::db::{ConnectOptions, Database, DbError};
use crate::planner::{Counts, PlanInput, PlannerState, Planners};
use autoscaler_executor::{describe_status, WorkerPool};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::time::Duration;

const AFTER_HELP: &str = "\
Read-only: reads the Vespene database and asks each pool's executor what its target has now
(AWS DescribeAutoScalingGroups, GCE instanceGroupManagers.get; a shell command has nothing to
ask). It writes nothing, takes no lock and scales nothing.

`wants` is the size the pool's planner asks for now (a planner with memory, boot-aware, is
asked as if it had none). `target` is desired/current as the cloud reports them.

Exit status: 0 printed; 2 the database could not be read.

Examples:
  autoscaler status
  autoscaler status --queue linux --format json | jq '.pools[0]'";

/// How a cloud call for one row may take before the row shows a timeout instead.
const TARGET_TIMEOUT: Duration = Duration::from_secs(15);

/// `table` for people, `json` for scripts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns.
    Table,
    /// One JSON document, `vespene-autoscaler-status/1`.
    Json,
}

/// The subcommand's flags.
#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct StatusArgs {
    /// Pools to show, by name; repeat for several (default: every pool).
    #[arg(long = "queue", value_name = "NAME")]
    pub queues: Vec<String>,

    /// `table` for people, `json` for scripts.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// Why the subcommand could not run.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The database could not be read.
    #[error(transparent)]
    Database(#[from] DbError),
    /// The executors could not be built from the config.
    #[error("building the executors: {0}")]
    Executors(String),
}

/// One pool's row.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Row {
    /// The pool.
    pub pool: String,
    /// `autoscaling_enabled`.
    pub enabled: bool,
    /// The planner that plans it (`stock` when unset).
    pub planner: String,
    /// The executor column, as stored.
    pub executor: Option<String>,
    /// QUEUED builds.
    pub queued: u64,
    /// Distinct projects among them (what `build_latest` pools plan from).
    pub queued_projects: u64,
    /// RUNNING builds.
    pub running: u64,
    /// The size the planner wants now; `None` when a setting makes planning fail.
    pub wants: Option<u32>,
    /// Why it could not plan.
    pub plan_error: Option<String>,
    /// The target's desired size, in workers, as the executor reports it.
    pub desired: Option<u32>,
    /// Machines the target has now (booting ones included), in workers.
    pub current: Option<u32>,
    /// Why the target could not be read (or `None`).
    pub target_error: Option<String>,
    /// `last_autoscaled`.
    pub last_autoscaled: Option<DateTime<Utc>>,
    /// `autoscaling_status`.
    pub status: Option<i32>,
    /// What the status means.
    pub status_meaning: String,
}

/// Runs the subcommand; returns the exit status.
pub async fn run(args: StatusArgs, url: &str, config: &Config) -> Result<u8, StatusError> {
    // Its statements run one after the other: one connection (a larger pool may open a
    // second while the first is still being handed back).
    let db = Database::connect(
        url,
        &ConnectOptions {
            max_connections: 1,
            ..ConnectOptions::default()
        },
    )?;
    let rows = collect(&db, config, &args.queues, Utc::now()).await;
    db.close().await;
    let rows = rows?;
    match args.format {
        Format::Table => print!("{}", table(&rows)),
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "format": "vespene-autoscaler-status/1",
                "pools": rows,
            }))
            .expect("rows serialize")
        ),
    }
    Ok(0)
}

/// Reads every row; pools named but missing are left out with a warning.
pub async fn collect(
    db: &Database,
    config: &Config,
    names: &[String],
    now: DateTime<Utc>,
) -> Result<Vec<Row>, StatusError> {
    let pools = if names.is_empty() {
        db.load_all_pools().await?
    } else {
        let found = db.load_pools(names).await?;
        for n in names {
            if !found.iter().any(|p| &p.name == n) {
                tracing::warn!(pool = %n, "pool {n}: no worker pool with this name");
            }
        }
        found
    };
    let ids: Vec<i64> = pools.iter().map(|p| p.id).collect();
    let counts = db.count_builds(&ids).await?;
    let planners = Planners::from_config(&config.planners)
        .map_err(|e| StatusError::Executors(e.to_string()))?;
    let registry = crate::run::build_registry(config)
        .await
        .map_err(|e| StatusError::Executors(e.to_string()))?;
    let rows = pools.iter().map(|pool| {
        let c = counts.get(&pool.id).copied().unwrap_or_default();
        row(pool, c, now, &planners, &registry)
    });
    Ok(futures::future::join_all(rows).await)
}

async fn row(
    pool: &WorkerPool,
    c: Counts,
    now: DateTime<Utc>,
    planners: &Planners,
    registry: &crate::engine::Registry,
) -> Row {
    let planned = planners.plan(
        &PlanInput {
            pool,
            counts: c,
            now,
        },
        &mut PlannerState::default(),
    );
    let (wants, plan_error) = match planned {
        Ok(p) => (Some(p.size), None),
        Err(e) => (None, Some(format!("{}: {}", e.field, e.message))),
    };
    let (desired, current, target_error) = match registry.lookup(pool) {
        Err(e) => (None, None, Some(format!("{}: {}", e.field, e.message))),
        Ok(executor) => match tokio::time::timeout(TARGET_TIMEOUT, executor.status(pool)).await {
            Ok(Ok(Some(s))) => (Some(s.desired), Some(s.current), None),
            Ok(Ok(None)) => (None, None, None),
            Ok(Err(e)) => (None, None, Some(e.message)),
            Err(_) => (
                None,
                None,
                Some(format!("no answer within {} s", TARGET_TIMEOUT.as_secs())),
            ),
        },
    };
    Row {
        pool: pool.name.clone(),
        enabled: pool.autoscaling_enabled,
        planner: pool
            .planner
            .as_deref()
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .unwrap_or("stock")
            .to_string(),
        executor: pool.executor.clone(),
        queued: c.queued,
        queued_projects: c.queued_projects,
        running: c.running,
        wants,
        plan_error,
        desired,
        current,
        target_error,
        last_autoscaled: pool.last_autoscaled,
        status: pool.autoscaling_status,
        status_meaning: match pool.autoscaling_status {
            Some(s) => meaning(pool, s),
            None => "never attempted".to_string(),
        },
    }
}

/// The status in words; a shell command's exit status is written as is, so for a shell pool a
/// fixed code may also be the command's own.
fn meaning(pool: &WorkerPool, status: i32) -> String {
    let words = describe_status(status);
    let shell = pool.executor.as_deref().map(str::trim) == Some("shell");
    if shell && status != 0 && !words.starts_with("command:") {
        format!("{words} (or the command exited with status {status})")
    } else {
        words
    }
}

/// The aligned table; a pool's problems (plan or target errors) on an indented line below it.
pub fn table(rows: &[Row]) -> String {
    let header = [
        "POOL",
        "ENABLED",
        "PLANNER",
        "EXECUTOR",
        "QUEUED",
        "RUNNING",
        "WANTS",
        "TARGET",
        "LAST AUTOSCALED",
        "STATUS",
    ];
    let dash = || "-".to_string();
    let cells: Vec<[String; 10]> = rows
        .iter()
        .map(|r| {
            [
                printable(&r.pool),
                if r.enabled { "yes" } else { "no" }.to_string(),
                r.planner.clone(),
                r.executor.clone().unwrap_or_else(dash),
                format!("{} ({} projects)", r.queued, r.queued_projects),
                r.running.to_string(),
                r.wants.map(|w| w.to_string()).unwrap_or_else(dash),
                match (r.desired, r.current) {
                    (Some(d), Some(c)) => format!("{d} desired / {c} now"),
                    _ => dash(),
                },
                r.last_autoscaled
                    .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                    .unwrap_or_else(|| "never".to_string()),
                match r.status {
                    Some(s) => format!("{s} {}", r.status_meaning),
                    None => r.status_meaning.clone(),
                },
            ]
        })
        .collect();
    let mut width = header.map(|h| h.chars().count());
    for c in &cells {
        for (w, cell) in width.iter_mut().zip(c.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cols: &[String]| -> String {
        let mut s = cols
            .iter()
            .zip(width.iter())
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ");
        s.truncate(s.trim_end().len());
        s.push('\n');
        s
    };
    let mut out = line(&header.map(str::to_string));
    for (r, c) in rows.iter().zip(&cells) {
        out.push_str(&line(c));
        for why in [&r.plan_error, &r.target_error].into_iter().flatten() {
            out.push_str(&format!("    {}\n", printable(why)));
        }
    }
    out
}

/// A pool name or message as one safe table cell: control characters (a newline that would
/// forge a row, an escape sequence that would drive the terminal) are shown escaped.
fn printable(s: &str) -> String {
    s.chars()
        .flat_map(|c| -> Box<dyn Iterator<Item = char>> {
            if c.is_control() {
                Box::new(c.escape_default())
            } else {
                Box::new(std::iter::once(c))
            }
        })
        .collect()
}
