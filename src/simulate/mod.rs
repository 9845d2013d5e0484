//! `autoscaler simulate`: replays a trace of builds through the real planner code.
//! (Being written; see issue 8.)

use crate::config::Config;

/// `autoscaler simulate` arguments.
#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// A CSV trace of builds: queued_at, duration_seconds, project.
    #[arg(long, value_name = "FILE.csv")]
    pub trace: Option<std::path::PathBuf>,
}

/// Why a simulation could not run.
#[derive(Debug, thiserror::Error)]
#[error("simulate: {0}")]
pub struct SimulateError(pub String);

/// Runs the subcommand; returns the exit status.
pub async fn run(
    _args: SimulateArgs,
    _database_url: &str,
    _config: &Config,
) -> Result<u8, SimulateError> {
    Err(SimulateError("not implemented yet".into()))
}
