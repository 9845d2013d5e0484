//! The command line. The names here are a contract with Vespene's users and scripts: keep them.

use crate::config::LogFormat;
pub use crate::run::RunArgs;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

const ABOUT: &str = "Grow and shrink Vespene CI worker pools from their queues.";

const LONG_ABOUT: &str = "\
Grow and shrink Vespene CI worker pools from their queues.

Each cycle, for every pool named with --queue, the autoscaler reads the pool's settings and its
QUEUED and RUNNING builds from the Vespene database, plans a size with the pool's planner
(`stock`: clamp(ceil((queued*queued_weight + running*running_weight) * multiplier) + excess,
minimum, maximum)), and hands it to the pool's executor (`shell`, `aws-asg`, `gce-mig`). It
writes back only `autoscaling_status` (0 = ok) and, on success, `last_autoscaled`.

A pool is evaluated when autoscaling is enabled and its `reevaluate_minutes` timer has run out;
a declarative executor (aws-asg, gce-mig) is also called as soon as the plan changes.";

const AFTER_HELP: &str = "\
Examples:
  autoscaler demo                                   # try it: a throw-away SQLite database
  autoscaler --queue linux --queue mac              # run forever, every 20 s
  autoscaler --queue linux --force --dry-run        # show the plan and the command, change nothing
  DATABASE_URL=postgres://vespene@db/vespene autoscaler --queue linux --force
  autoscaler db init --database-url sqlite:///var/lib/vespene/demo.db

Exit status: 0 every named pool succeeded or was skipped (disabled, missing, not due);
1 at least one pool failed (named on stderr); 2 the autoscaler could not run (usage,
config file, database).";

/// `autoscaler` and its subcommands.
#[derive(Debug, Parser)]
#[command(name = "autoscaler", version, about = ABOUT, long_about = LONG_ABOUT, after_help = AFTER_HELP)]
pub struct Cli {
    /// What every subcommand shares: the database, the config file, the log format.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// The main job's flags, used when no subcommand is given.
    #[command(flatten)]
    pub run: RunArgs,
    /// A subcommand; none runs the main job.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Settings every subcommand shares.
#[derive(Debug, Args, Clone)]
pub struct GlobalArgs {
    /// The Vespene database: postgres://USER[:PASSWORD]@HOST[:PORT]/DB or sqlite://PATH.
    /// The password is never logged.
    #[arg(
        long,
        env = "DATABASE_URL",
        global = true,
        default_value = "sqlite://vespene.db",
        hide_env_values = true
    )]
    pub database_url: String,

    /// TOML config file: executor settings ([executors.shell], [executors.aws-asg],
    /// [executors.gce-mig]), log_format, concurrency. Unknown keys are errors.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Log format on stderr [default: text, or log_format from the config file].
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Database utilities.
    #[command(subcommand)]
    Db(DbCommand),
    /// Audit the cloud fleets of the pools (read-only: changes nothing): orphans, untagged
    /// instances, drift, stuck drains, workers that never checked in, stale worker rows,
    /// version skew, old instances, and a summary.
    Audit(Box<crate::audit::AuditArgs>),
    /// Replay a trace of builds through the real planner and a model of the fleet (boot time,
    /// workers per instance, drain on scale-in), and report queue waits and worker-hours, to
    /// tune a pool before production.
    Simulate(Box<crate::simulate::SimulateArgs>),
    /// One row per pool: queue, the size its planner wants now, what the target has, and the
    /// last attempt's status in words. Read-only.
    Status(crate::status::StatusArgs),
    /// Prints a shell completion script for bash, zsh, fish, elvish or PowerShell.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Prints the man page (roff), e.g. `autoscaler man > autoscaler.1`.
    Man,
    /// Create a throw-away SQLite Vespene database with sample pools and builds, and run one
    /// forced cycle on it with a shell executor that only prints what it would scale.
    Demo {
        /// Keep the demo database at this path instead of a temporary directory.
        #[arg(long, value_name = "FILE")]
        keep: Option<PathBuf>,
    },
}

/// `autoscaler db …`
#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Create the Vespene tables the autoscaler uses (worker_pools, workers, builds) in an
    /// EMPTY database, for demos and tests. Refuses to touch a database that has any of them.
    Init,
    /// Create the optional partial index `autoscaler_builds_active` on builds (worker_pool_id,
    /// status) WHERE status IN ('QUEUED', 'RUNNING'), which makes the per-cycle count cost
    /// grow with active builds instead of with build history. The only schema change the
    /// autoscaler ever makes, and only through this command. Does nothing if it exists.
    EnsureIndex,
}
