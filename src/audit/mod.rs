//! `autoscaler audit`: a read-only look at what really runs, cross-checked with Vespene.
//! (Being written; see issue 5.)

use crate::config::Config;

/// `autoscaler audit` arguments.
#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// Pools to audit (default: every pool whose executor is a cloud executor).
    #[arg(long = "queue", value_name = "NAME")]
    pub queues: Vec<String>,
}

/// Why the audit itself failed (exit status 2).
#[derive(Debug, thiserror::Error)]
#[error("audit: {0}")]
pub struct AuditError(pub String);

/// Runs the subcommand; returns the exit status.
pub async fn run(_args: AuditArgs, _database_url: &str, _config: &Config) -> Result<u8, AuditError> {
    Err(AuditError("not implemented yet".into()))
}
