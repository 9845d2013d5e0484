//! The `gce-mig` executor: sizes a Google Compute Engine managed instance group (zonal or
//! regional) to a pool's plan, on the official Google Cloud Rust SDK.
//!
//! Scale-out is a `resize` up (with a request id, waiting for the operation). Scale-in never
//! resizes down, because the group would choose which instances die and might kill a running
//! build: the shared chooser of `autoscaler_executor::scale_in` picks the instances (booting
//! ones first, then idle ones oldest first, never a busy one), instances that run the drain
//! agent are asked to drain through instance metadata and deleted only once their agent
//! acknowledged through a guest attribute, and others are deleted directly (best effort). In
//! steady state a cycle costs one `get` per pool and nothing else. An accepted resize is not a
//! launched machine: members the cloud keeps failing to create fail the pool with its reason
//! (see `launch`), and groups that would undo the executor's choices (an attached autoscaler,
//! proactive redistribution) are refused.

#![deny(missing_docs)]

mod apply;
mod candidates;
pub mod client;
pub mod config;
mod inventory;
mod launch;
mod names;
mod scale_in;
mod standby;
pub mod target;

#[cfg(test)]
mod group_tests;
#[cfg(test)]
mod scale_in_tests;
#[cfg(test)]
mod standby_tests;
#[cfg(test)]
mod tests;

pub use config::{Config, CredentialsSource, StandbyAction, ENV_CREDENTIALS, ENV_ENDPOINT};
pub use names::label_value;
pub use target::{GroupPath, Location};

use async_trait::async_trait;
use autoscaler_executor::{
    ErrorKind, Executor, ExecutorError, Inventory, Outcome, Plan, ScaleRequest, TargetStatus,
    WorkerPool,
};
use std::sync::Arc;

/// Why the executor could not be built. Reported at start-up so a broken setup is found before
/// the first cycle, not in every pool's status.
#[derive(Debug, thiserror::Error)]
pub enum GceMigError {
    /// A setting (or one of the two environment variables) is unusable.
    #[error("[executors.gce-mig] {setting}: {message}")]
    Config {
        /// The setting's name as written in the config file (or the environment variable).
        setting: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// No usable credentials (never includes key material).
    #[error("GCE credentials ({origin}): {message}")]
    Credentials {
        /// Where the credentials were looked for.
        origin: String,
        /// What went wrong.
        message: String,
    },
    /// The SDK refused to build a client.
    #[error("creating the Compute Engine client for {endpoint}: {message}")]
    Client {
        /// The endpoint in use.
        endpoint: String,
        /// The SDK's reason.
        message: String,
    },
}

impl GceMigError {
    /// The matching [`ErrorKind`], so the caller can record the failure on every pool that
    /// names this executor with the same status codes as a per-pool failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            GceMigError::Config { .. } => ErrorKind::Config,
            GceMigError::Credentials { .. } => ErrorKind::Credentials,
            GceMigError::Client { .. } => ErrorKind::Config,
        }
    }
}

/// Checks a pool's group path (rendered `executor_command`) without any I/O, so the engine can
/// reject a malformed path before the executor is even built.
pub fn validate_pool(cfg: &Config, pool: &WorkerPool, plan: Plan) -> Result<(), ExecutorError> {
    apply::fixed_group_path(cfg.project.as_deref(), pool, plan).map(|_| ())
}

/// The executor. Cheap to share: one set of SDK clients serves every pool concurrently.
pub struct GceMigExecutor {
    applier: apply::Applier,
    endpoint: Option<String>,
    credentials: CredentialsSource,
}

impl GceMigExecutor {
    /// Builds the executor from the config file's section, with [`ENV_ENDPOINT`] and
    /// [`ENV_CREDENTIALS`] from the process environment taking precedence. Proves the
    /// credentials yield a token (bounded by `credentials_timeout_seconds`) so a machine without
    /// credentials fails here, in seconds.
    pub async fn from_config(cfg: Config) -> Result<GceMigExecutor, GceMigError> {
        Self::from_config_with_env(cfg, &|k| std::env::var(k).ok()).await
    }

    /// [`GceMigExecutor::from_config`] with the environment supplied by the caller, so tests
    /// can exercise the overrides without mutating the process environment.
    pub async fn from_config_with_env(
        cfg: Config,
        env: &(dyn Fn(&str) -> Option<String> + Sync),
    ) -> Result<GceMigExecutor, GceMigError> {
        let resolved = cfg.resolve(env)?;
        let api = client::SdkCompute::new(&resolved).await?;
        tracing::info!(
            endpoint = resolved.endpoint.as_deref().unwrap_or("https://compute.googleapis.com"),
            credentials = %resolved.credentials.describe(),
            workers_per_instance = resolved.config.workers_per_instance,
            "gce-mig executor ready"
        );
        Ok(GceMigExecutor {
            applier: apply::Applier::new(Arc::new(api), resolved.config),
            endpoint: resolved.endpoint,
            credentials: resolved.credentials,
        })
    }

    /// Builds the executor on another [`client::ComputeApi`] (a recorder, another transport);
    /// the config is still checked, but the environment and credentials are not consulted.
    pub fn with_api(
        cfg: Config,
        api: Arc<dyn client::ComputeApi>,
    ) -> Result<GceMigExecutor, GceMigError> {
        let resolved = cfg.resolve(&|_| None)?;
        Ok(GceMigExecutor {
            applier: apply::Applier::new(api, resolved.config),
            endpoint: resolved.endpoint,
            credentials: resolved.credentials,
        })
    }

    /// The endpoint in use (`None` = Google's), for start-up logs and `--dry-run` headers.
    pub fn endpoint(&self) -> Option<&str> {
        self.endpoint.as_deref()
    }

    /// Which credentials are in use, for start-up logs.
    pub fn credentials(&self) -> &CredentialsSource {
        &self.credentials
    }
}

#[async_trait]
impl Executor for GceMigExecutor {
    fn name(&self) -> &'static str {
        "gce-mig"
    }

    /// Declarative: a resize sets a size, so applying the same plan twice is harmless.
    fn declarative(&self) -> bool {
        true
    }

    fn validate(&self, pool: &WorkerPool, plan: Plan) -> Result<(), ExecutorError> {
        self.applier.validate(pool, plan)
    }

    async fn scale(&self, request: ScaleRequest<'_>) -> Result<Outcome, ExecutorError> {
        self.applier.scale(request).await
    }

    async fn status(&self, pool: &WorkerPool) -> Result<Option<TargetStatus>, ExecutorError> {
        self.applier.status(pool).await
    }

    /// Groups and labelled instances, read-only, for `autoscaler audit` (see `inventory.rs`).
    fn inventory(&self) -> Option<&dyn Inventory> {
        Some(self)
    }
}
