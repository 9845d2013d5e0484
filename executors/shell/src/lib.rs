//! The `shell` executor: renders the pool's `executor_command` and runs it with `sh -c`.
//!
//! It is Vespene's original executor, kept with its semantics (a command may not be
//! declarative, so the engine only calls it when the pool's timer is due) and made safe: the
//! command runs in its own process group, its output is streamed to the log line by line with
//! the pool's name, and a command that outlives its timeout is killed with all its children.

mod config;
mod run;

pub use config::Config;

use async_trait::async_trait;
use autoscaler_executor::{render_pool, ActionLog, Executor, ExecutorError, Outcome, ScaleRequest};
use std::time::Duration;

/// See the crate docs.
pub struct ShellExecutor {
    config: Config,
}

impl ShellExecutor {
    /// Builds the executor from its config section.
    pub fn new(config: Config) -> Self {
        ShellExecutor { config }
    }
}

#[async_trait]
impl Executor for ShellExecutor {
    fn name(&self) -> &'static str {
        "shell"
    }

    fn declarative(&self) -> bool {
        false
    }

    async fn scale(&self, request: ScaleRequest<'_>) -> Result<Outcome, ExecutorError> {
        let pool = request.pool;
        let command = render_pool(pool, request.plan)?;
        let mut log = ActionLog::new(request.dry_run);
        if log.would(format!("run: {command}")) {
            return Ok(Outcome {
                actions: log.into_lines(),
                applied: None,
                revisit: false,
            });
        }
        let env = [
            ("VESPENE_POOL", pool.name.clone()),
            ("VESPENE_SIZE", request.plan.size.to_string()),
            ("VESPENE_QUEUED_SIZE", request.plan.queued_size.to_string()),
            ("VESPENE_STANDBY", request.plan.standby.to_string()),
        ];
        let timeout = Duration::from_secs(self.config.timeout_seconds);
        let grace = Duration::from_secs(self.config.kill_grace_seconds);
        run::run(
            &self.config.shell,
            &command,
            &env,
            &pool.name,
            timeout,
            grace,
        )
        .await?;
        log.did(format!("ran: {command}"));
        Ok(Outcome {
            actions: log.into_lines(),
            applied: None,
            revisit: false,
        })
    }
}
