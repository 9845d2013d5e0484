//! The `aws-asg` executor: sizes an EC2 Auto Scaling group to a pool's plan, on the official AWS
//! SDK for Rust.
//!
//! Declarative: each cycle brings the group to `ceil(size / workers_per_instance)` instances
//! (clamped to the pool's maximum and the group's Min/Max), and only when it differs, so a
//! steady state costs one `DescribeAutoScalingGroups` for all pools and no mutating call. It
//! grows with `SetDesiredCapacity`; it shrinks by naming the instances itself, with the shared
//! scale-in chooser of `autoscaler-executor` (booting ones first, then idle ones oldest first,
//! never a busy, protected or not-in-service one) and
//! `TerminateInstanceInAutoScalingGroup(ShouldDecrementDesiredCapacity=true)` for each. A
//! termination lifecycle hook kept on the group holds every leaving instance in
//! `Terminating:Wait`: an instance with the drain agent completes it itself after its worker
//! exited; one without is released when no RUNNING build matches it, and kept alive with
//! heartbeats while one does (up to `max_drain_seconds`).
//!
//! A plan with standby workers keeps the group's warm pool at that many instances (see
//! [`policy::warm`]); instances going back to it wait in `Warmed:Pending:Wait` and go through
//! the same drain. A plan without standby on a group without a warm pool costs exactly the
//! calls above.
//!
//! The modules, one way down: `config` (the settings), `client` (every AWS call, its
//! retries and error classification; the SDK's backoff with jitter is set up by
//! [`load_sdk_config`]), `policy` (every decision, pure, tested on
//! values), `run` (the executor's state and one pool's cycle record), and the steps that carry
//! the decisions out: `apply` (one pool's cycle) calling `drain`, `protect`, `warm_pool`,
//! `launch` and `scale_in`; `inventory` is the audit's read-only snapshot.

#![deny(missing_docs)]

mod apply;
pub mod client;
pub mod config;
mod drain;
mod inventory;
mod launch;
pub mod policy;
mod protect;
mod run;
mod scale_in;
mod warm_pool;

pub use client::{ApiError, AsgApi, SdkAsgApi};
pub use config::{Config, HostnameMatch, PoolOverride, WarmPoolState};
pub use run::{Clock, ScaleInStats, SystemClock};

use async_trait::async_trait;
use autoscaler_executor::{
    ErrorKind, Executor, ExecutorError, Outcome, Plan, ScaleRequest, TargetStatus, WorkerPool,
};
use aws_config::{BehaviorVersion, Region};
use aws_credential_types::provider::ProvideCredentials;
use std::sync::Arc;
use std::time::Duration;

/// Why the executor could not be built. Reported when the first pool needs it, so a broken
/// setup is one clear line per pool instead of an SDK failure per call.
#[derive(Debug, thiserror::Error)]
pub enum AwsAsgError {
    /// A setting of `[executors.aws-asg]` is unusable (or no region could be found).
    #[error("[executors.aws-asg] {setting}: {message}")]
    Config {
        /// The setting's name as written in the config file.
        setting: String,
        /// What is wrong with it.
        message: String,
    },
    /// No credentials could be loaded (never includes key material).
    #[error("AWS credentials: {message}")]
    Credentials {
        /// What the standard chain reported.
        message: String,
    },
}

impl AwsAsgError {
    /// The matching [`ErrorKind`], so the caller records the failure on each pool with the
    /// same status code as a per-pool failure of that kind.
    pub fn kind(&self) -> ErrorKind {
        match self {
            AwsAsgError::Config { .. } => ErrorKind::Config,
            AwsAsgError::Credentials { .. } => ErrorKind::Credentials,
        }
    }
}

/// Checks a pool's group name and sizes without I/O, so the engine can reject a bad template
/// before the executor (and its credentials) is even built.
pub fn validate_pool(cfg: &Config, pool: &WorkerPool, plan: Plan) -> Result<(), ExecutorError> {
    policy::validate(cfg, pool, plan)
}

fn imds_client() -> aws_config::imds::Client {
    // One second per attempt, two attempts: off EC2 the metadata service is absent and must not
    // cost a minute; on EC2 it answers in milliseconds.
    aws_config::imds::Client::builder()
        .connect_timeout(Duration::from_secs(1))
        .read_timeout(Duration::from_secs(1))
        .max_attempts(2)
        .build()
}

async fn resolve_region(cfg: &Config) -> Result<Region, AwsAsgError> {
    if let Some(r) = &cfg.region {
        return Ok(Region::new(r.clone()));
    }
    use aws_config::meta::region::RegionProviderChain;
    let mut profile = aws_config::profile::region::ProfileFileRegionProvider::builder();
    if let Some(p) = &cfg.profile {
        profile = profile.profile_name(p);
    }
    let chain = RegionProviderChain::first_try(
        aws_config::environment::region::EnvironmentVariableRegionProvider::new(),
    )
    .or_else(profile.build())
    .or_else(
        aws_config::imds::region::ImdsRegionProvider::builder()
            .imds_client(imds_client())
            .build(),
    );
    let limit = Duration::from_secs(cfg.credentials_timeout_seconds);
    match tokio::time::timeout(limit, chain.region()).await {
        Ok(Some(r)) => Ok(r),
        _ => Err(AwsAsgError::Config {
            setting: "region".into(),
            message: "no AWS region: set `region` here, AWS_REGION, or a region in the AWS \
                      profile (the instance metadata service did not answer either)"
                .into(),
        }),
    }
}

/// Loads the SDK configuration the executor uses: the standard chain (environment, profile,
/// SSO, web identity, ECS, instance metadata) with a short metadata timeout, the region and
/// endpoint of `cfg`, the SDK's standard retry mode (exponential backoff with jitter) and
/// per-attempt timeouts. Public so tests and tools build their own clients the same way.
pub async fn load_sdk_config(cfg: &Config) -> Result<aws_config::SdkConfig, AwsAsgError> {
    cfg.validate()?;
    let region = resolve_region(cfg).await?;
    let mut creds = aws_config::default_provider::credentials::DefaultCredentialsChain::builder()
        .imds_client(imds_client())
        .region(region.clone());
    if let Some(p) = &cfg.profile {
        creds = creds.profile_name(p);
    }
    let creds = creds.build().await;
    let attempt = Duration::from_secs(cfg.request_timeout_seconds);
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(region)
        .credentials_provider(creds)
        .retry_config(
            aws_config::retry::RetryConfig::standard().with_max_attempts(cfg.max_attempts),
        )
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(attempt.min(Duration::from_secs(5)))
                .operation_attempt_timeout(attempt)
                .build(),
        );
    if let Some(p) = &cfg.profile {
        loader = loader.profile_name(p);
    }
    if let Some(url) = &cfg.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    Ok(loader.load().await)
}

/// The executor. Cheap to share: one pair of SDK clients serves every pool concurrently.
pub struct AwsAsgExecutor {
    applier: run::Applier,
}

impl AwsAsgExecutor {
    /// Builds the executor from the config file's section with the standard AWS credential
    /// chain, and proves credentials can be loaded within `credentials_timeout_seconds`, so a
    /// machine with none fails in seconds with a message saying so.
    pub async fn from_config(cfg: Config) -> Result<AwsAsgExecutor, AwsAsgError> {
        let sdk = load_sdk_config(&cfg).await?;
        let provider = sdk
            .credentials_provider()
            .ok_or_else(|| AwsAsgError::Credentials {
                message: "no credentials provider configured".into(),
            })?;
        let limit = Duration::from_secs(cfg.credentials_timeout_seconds);
        match tokio::time::timeout(limit, provider.provide_credentials()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                return Err(AwsAsgError::Credentials {
                    message: format!(
                        "none found by the standard chain (environment variables, profile, SSO, \
                         web identity, container and instance metadata): {}",
                        client::chain(&e)
                    ),
                })
            }
            Err(_) => {
                return Err(AwsAsgError::Credentials {
                    message: format!(
                        "none loaded within {} s (credentials_timeout_seconds): the standard chain \
                         (environment, profile, SSO, web identity, container and instance metadata) \
                         did not answer",
                        limit.as_secs()
                    ),
                })
            }
        }
        let region = sdk.region().map(|r| r.to_string());
        tracing::info!(
            region = region.as_deref().unwrap_or("-"),
            endpoint = cfg.endpoint_url.as_deref().unwrap_or("standard"),
            workers_per_instance = cfg.workers_per_instance,
            "aws-asg executor ready"
        );
        let api = SdkAsgApi::new(&sdk, Duration::from_secs(cfg.request_timeout_seconds));
        Ok(AwsAsgExecutor {
            applier: run::Applier::new(Arc::new(api), cfg, region, Arc::new(SystemClock)),
        })
    }

    /// Builds the executor on an SDK configuration made elsewhere (a test's, pointing at moto);
    /// credentials are not checked up front.
    pub fn from_sdk_config(
        cfg: Config,
        sdk: &aws_config::SdkConfig,
    ) -> Result<AwsAsgExecutor, AwsAsgError> {
        cfg.validate()?;
        let region = sdk.region().map(|r| r.to_string());
        let api = SdkAsgApi::new(sdk, Duration::from_secs(cfg.request_timeout_seconds));
        Ok(AwsAsgExecutor {
            applier: run::Applier::new(Arc::new(api), cfg, region, Arc::new(SystemClock)),
        })
    }

    /// Builds the executor on another [`AsgApi`] (an in-memory group, a counting wrapper).
    pub fn with_client(cfg: Config, api: Arc<dyn AsgApi>) -> Result<AwsAsgExecutor, AwsAsgError> {
        cfg.validate()?;
        let region = cfg.region.clone();
        Ok(AwsAsgExecutor {
            applier: run::Applier::new(api, cfg, region, Arc::new(SystemClock)),
        })
    }

    /// Replaces the clock, so drain limits can be tested without waiting hours.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.applier.set_clock(clock);
        self
    }

    /// How many instances the scale-in chooser has chosen and held so far (this process).
    pub fn scale_in_stats(&self) -> ScaleInStats {
        self.applier.stats()
    }

    /// The settings in use.
    pub fn config(&self) -> &Config {
        self.applier.config()
    }
}

#[async_trait]
impl Executor for AwsAsgExecutor {
    fn name(&self) -> &'static str {
        "aws-asg"
    }

    /// Declarative: desired capacity is a size, so setting it twice is harmless.
    fn declarative(&self) -> bool {
        true
    }

    fn validate(&self, pool: &WorkerPool, plan: Plan) -> Result<(), ExecutorError> {
        self.applier.validate(pool, plan)
    }

    /// One `DescribeAutoScalingGroups` (per 100 groups) for every pool of the cycle. Group
    /// names are rendered with an empty plan, which is why they may not depend on the size. A
    /// failure is not returned here but by each pool's `scale`, naming its own group.
    async fn prepare(&self, pools: &[&WorkerPool], _dry_run: bool) -> Result<(), ExecutorError> {
        self.applier.prepare(pools).await;
        Ok(())
    }

    async fn scale(&self, request: ScaleRequest<'_>) -> Result<Outcome, ExecutorError> {
        self.applier.scale(request).await
    }

    async fn status(&self, pool: &WorkerPool) -> Result<Option<TargetStatus>, ExecutorError> {
        self.applier.status(pool).await.map(Some)
    }

    /// Groups and tagged instances, read-only, for `autoscaler audit` (see the crate's `inventory` module).
    fn inventory(&self) -> Option<&dyn autoscaler_executor::Inventory> {
        Some(self)
    }
}
