//! The main job around [`Engine::run_cycle`]: building the backends, `--force`, the loop,
//! signals, database outages and exit codes.

use crate::config::Config;
use crate::db::{ConnectOptions, Database, DbError};
use crate::engine::{CycleReport, Engine, EngineOptions, FailureKind, PoolResult, Registry, Scope};
use crate::metrics::Metrics;
use crate::planner::Planners;
use autoscaler_executor::ErrorKind;
use clap::Args;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Process exit status: every named pool succeeded or was skipped.
pub const EXIT_OK: u8 = 0;
/// At least one pool failed.
pub const EXIT_POOL_FAILED: u8 = 1;
/// The autoscaler could not run at all (usage, config, database).
pub const EXIT_CANNOT_RUN: u8 = 2;

/// The main job: evaluate pools.
#[derive(Debug, Args, Clone)]
pub struct RunArgs {
    /// A worker pool to autoscale, by name; repeat for several pools.
    #[arg(long = "queue", value_name = "NAME")]
    pub queues: Vec<String>,

    /// Ignore every timer: evaluate each named pool once, then exit.
    #[arg(long)]
    pub force: bool,

    /// Seconds to wait between cycles (without --force), 1 to 86400.
    #[arg(long, value_name = "SECONDS", default_value_t = 20,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub sleep: u64,

    /// Compute and print each plan and what the executor would do (for shell: the rendered
    /// command; for clouds: each call). Changes nothing, writes nothing to the database.
    #[arg(long)]
    pub dry_run: bool,

    /// Serve Prometheus metrics at http://ADDR/metrics and liveness at /healthz (unhealthy
    /// once the database has been unreachable for unhealthy_after_seconds, default 120).
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_addr: Option<std::net::SocketAddr>,
}

/// Why the main job could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The database could not be reached or read: nothing was done to any pool.
    #[error(transparent)]
    Database(#[from] DbError),
    /// The backends, planners, signal handlers or metrics server could not be set up; the
    /// message names which.
    #[error("{0}")]
    Executor(String),
}

/// Builds every compiled-in backend from its config section.
pub async fn build_registry(config: &Config) -> Result<Registry, RunError> {
    #[allow(unused_mut)]
    let mut registry = Registry::default();
    #[cfg(feature = "shell")]
    registry.register(Arc::new(autoscaler_shell::ShellExecutor::new(
        config.executors.shell.clone(),
    )));
    #[cfg(feature = "aws-asg")]
    registry.register(Arc::new(crate::lazy::LazyExecutor::cloud(
        "aws-asg",
        config.executors.aws_asg.clone(),
        autoscaler_aws_asg::validate_pool,
        autoscaler_aws_asg::AwsAsgExecutor::from_config,
        autoscaler_aws_asg::AwsAsgError::kind,
    )));
    #[cfg(feature = "gce-mig")]
    registry.register(Arc::new(crate::lazy::LazyExecutor::cloud(
        "gce-mig",
        config.executors.gce_mig.clone(),
        autoscaler_gce_mig::validate_pool,
        autoscaler_gce_mig::GceMigExecutor::from_config,
        autoscaler_gce_mig::GceMigError::kind,
    )));
    let _ = config;
    Ok(registry)
}

/// Connects for the main job: one connection. A cycle locks, reads and writes on the
/// connection that holds its pools' locks, and the executors' busy-worker reads go through it
/// too, so a process never needs a second one (docs/database.md, "Connections").
pub fn connect(url: &str) -> Result<Database, DbError> {
    Database::connect(
        url,
        &ConnectOptions {
            max_connections: 1,
            ..ConnectOptions::default()
        },
    )
}

/// Turns SIGINT, SIGTERM and SIGHUP into a `true` on the returned channel, in the loop and with
/// `--force` alike: the pools in progress get `shutdown_grace_seconds` and are recorded, none
/// is left running unrecorded because a terminal closed or a service manager stopped us.
/// The handlers are installed before this returns, so a signal that arrives at once is not lost.
pub fn shutdown_signal() -> Result<watch::Receiver<bool>, RunError> {
    use tokio::signal::unix::{signal, SignalKind};
    let (tx, rx) = watch::channel(false);
    let install = |kind: SignalKind, name: &str| {
        signal(kind).map_err(|e| RunError::Executor(format!("installing the {name} handler: {e}")))
    };
    let mut int = install(SignalKind::interrupt(), "SIGINT")?;
    let mut term = install(SignalKind::terminate(), "SIGTERM")?;
    let mut hup = install(SignalKind::hangup(), "SIGHUP")?;
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
            _ = hup.recv() => "SIGHUP",
        };
        tracing::info!("{name} received: finishing the pools in progress, then exiting");
        let _ = tx.send(true);
    });
    Ok(rx)
}

/// Prints a dry run's plans and actions on stdout, one block per pool.
pub fn print_dry_run(report: &CycleReport) {
    for p in &report.pools {
        match &p.result {
            PoolResult::Scaled {
                plan,
                counts,
                outcome,
            } => {
                println!(
                    "pool {}: executor {} plan size={} queued_size={} ({counts})",
                    p.name,
                    p.executor.as_deref().unwrap_or("?"),
                    plan.size,
                    plan.queued_size,
                );
                for a in &outcome.actions {
                    println!("  {a}");
                }
            }
            PoolResult::NotDue { plan, .. } => {
                println!(
                    "pool {}: not due; plan size={} queued_size={}",
                    p.name, plan.size, plan.queued_size
                )
            }
            PoolResult::Missing => println!("pool {}: no such pool", p.name),
            PoolResult::Disabled => println!("pool {}: autoscaling disabled", p.name),
            PoolResult::HeldElsewhere => {
                println!("pool {}: held by another autoscaler this cycle", p.name)
            }
            PoolResult::Failed { error, .. } => println!("pool {}: FAILED: {error}", p.name),
            PoolResult::Interrupted => println!("pool {}: not evaluated (shutting down)", p.name),
        }
    }
}

/// `--force`: one cycle, then the exit status. When `stop` turns true (a signal), pools not
/// yet started are left alone and calls in progress get the shutdown grace; pools stopped that
/// way are reported but, as in the loop, do not make the exit status non-zero.
pub async fn run_once(
    engine: &Engine,
    args: &RunArgs,
    stop: watch::Receiver<bool>,
) -> Result<u8, RunError> {
    let report = engine.run_cycle(&args.queues, true, &stop).await?;
    if args.dry_run {
        print_dry_run(&report);
    }
    let mut failed = false;
    for f in report.failures() {
        if let PoolResult::Failed { error, kind, .. } = &f.result {
            let line = format!("autoscaler: pool {} failed: {error}", f.name);
            eprintln!("{}", crate::logging::escape_line(&line));
            failed |= !(*kind == FailureKind::Executor(ErrorKind::Cancelled) && *stop.borrow());
        }
    }
    for p in &report.pools {
        if p.result == PoolResult::Interrupted {
            let line = format!("autoscaler: pool {}: not evaluated (shutting down)", p.name);
            eprintln!("{}", crate::logging::escape_line(&line));
        }
    }
    Ok(if failed { EXIT_POOL_FAILED } else { EXIT_OK })
}

/// Delay before retrying after a failed cycle: exponential from 1 s, capped at the loop's own
/// interval (so recovery takes at most one cycle), with up to 25% jitter so several
/// autoscalers do not reconnect in step.
pub fn backoff(failures: u32, cap: Duration) -> Duration {
    let base = Duration::from_secs(1u64 << failures.min(16)).min(cap.max(Duration::from_secs(1)));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let jitter = base.mul_f64(f64::from(nanos % 1000) / 4000.0);
    base.saturating_sub(jitter)
}

/// The loop: a full cycle every `--sleep` seconds and, in between, a fast poll of the
/// declarative pools every `poll` (so a queue change reaches a cloud group in about a second),
/// until SIGINT/SIGTERM. Database failures are logged once when they start and once when they
/// end, retried with backoff (capped at the loop interval), and never acted on.
pub async fn run_loop(
    engine: &Engine,
    args: &RunArgs,
    mut stop: watch::Receiver<bool>,
    metrics: Option<&Metrics>,
    poll: Duration,
) -> u8 {
    let mut state = LoopState {
        sleep: Duration::from_secs(args.sleep),
        poll,
        failures: 0,
        next_full: tokio::time::Instant::now(),
        fast_pools: Vec::new(),
    };
    loop {
        if *stop.borrow() {
            return EXIT_OK;
        }
        let full = tokio::time::Instant::now() >= state.next_full;
        let (names, scope) = if full {
            (&args.queues, Scope::All)
        } else {
            (&state.fast_pools, Scope::Declarative)
        };
        let started = std::time::Instant::now();
        if let Some(m) = metrics {
            m.cycle_started();
        }
        let wait = match engine.run_scoped_cycle(names, false, scope, &stop).await {
            Ok(report) => {
                if let Some(m) = metrics {
                    m.observe_cycle(&report, started.elapsed());
                }
                if args.dry_run && (full || !report.pools.is_empty()) {
                    print_dry_run(&report);
                }
                state.cycle_done(engine, &report, full)
            }
            Err(e) => {
                if let Some(m) = metrics {
                    m.observe_database_down();
                }
                state.cycle_failed(&e)
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => {}
        }
    }
}

/// What the loop carries from one cycle to the next: when the next full cycle is due, which
/// pools the fast polls touch, and how long the database has been failing.
struct LoopState {
    /// `--sleep`: between full cycles.
    sleep: Duration,
    /// Between fast polls (zero: none).
    poll: Duration,
    /// Consecutive cycles the database failed.
    failures: u32,
    next_full: tokio::time::Instant,
    /// The declarative pools seen by the last full cycle; fast polls touch only these.
    fast_pools: Vec<String>,
}

impl LoopState {
    /// A cycle ran: the outage (if any) is over; after a full cycle, the next one is
    /// scheduled and the fast-poll pools are taken from it. Returns the wait before the next.
    fn cycle_done(&mut self, engine: &Engine, report: &CycleReport, full: bool) -> Duration {
        if self.failures > 0 {
            tracing::info!(
                outcome = "recovered",
                "database reachable again after {} failed cycle(s)",
                self.failures
            );
        }
        self.failures = 0;
        if full {
            self.next_full = tokio::time::Instant::now() + self.sleep;
            self.fast_pools = if !self.poll.is_zero() && self.poll < self.sleep {
                engine.declarative_pools(report)
            } else {
                Vec::new()
            };
        }
        let until_full = self
            .next_full
            .saturating_duration_since(tokio::time::Instant::now());
        if !self.fast_pools.is_empty() {
            self.poll.min(until_full)
        } else {
            until_full
        }
    }

    /// The database failed: logged once when the outage starts, retried with backoff, and
    /// with a full cycle once it answers. Returns the wait before the retry.
    fn cycle_failed(&mut self, e: &DbError) -> Duration {
        if self.failures == 0 {
            tracing::error!(
                outcome = "database_down",
                "{e}; no pool is scaled until the database answers"
            );
        } else {
            tracing::debug!("still failing: {e}");
        }
        self.failures = self.failures.saturating_add(1);
        self.next_full = tokio::time::Instant::now();
        backoff(self.failures, self.sleep)
    }
}

/// Default of `stuck_after_sleeps`: at the default `--sleep 20`, 15 minutes, longer than the
/// shell executor's default timeout (600 s) plus its kill grace.
pub const DEFAULT_STUCK_AFTER_SLEEPS: u32 = 45;

/// Starts the metrics server when an address is configured. `sleep` is the loop's interval:
/// `/healthz` fails once no cycle has finished for `stuck_after_sleeps` of them.
pub async fn start_metrics(
    config: &Config,
    flag: Option<std::net::SocketAddr>,
    sleep: Duration,
) -> Result<Option<Arc<Metrics>>, RunError> {
    let Some(addr) = flag.or(config.metrics_addr) else {
        return Ok(None);
    };
    let sleeps = config
        .stuck_after_sleeps
        .unwrap_or(DEFAULT_STUCK_AFTER_SLEEPS);
    let stuck_after = (sleeps > 0).then(|| sleep.saturating_mul(sleeps));
    let metrics = Arc::new(
        Metrics::new(Duration::from_secs(
            config.unhealthy_after_seconds.unwrap_or(120),
        ))
        .with_stuck_after(stuck_after),
    );
    let bound = crate::metrics::serve(addr, metrics.clone())
        .await
        .map_err(|e| RunError::Executor(format!("--metrics-addr {addr}: {e}")))?;
    tracing::info!("metrics at http://{bound}/metrics, health at http://{bound}/healthz");
    Ok(Some(metrics))
}

/// Builds an engine for the main job.
pub async fn engine_for(config: &Config, url: &str, dry_run: bool) -> Result<Engine, RunError> {
    let concurrency = config.concurrency.unwrap_or(8);
    let db = connect(url)?;
    let registry = build_registry(config).await?;
    let planners =
        Planners::from_config(&config.planners).map_err(|e| RunError::Executor(e.to_string()))?;
    Ok(Engine::new(
        db,
        registry,
        planners,
        EngineOptions {
            dry_run,
            concurrency,
            max_step_up: config.max_step_up,
            shutdown_grace: Duration::from_secs(config.shutdown_grace_seconds.unwrap_or(30)),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let cap = Duration::from_secs(20);
        assert!(
            backoff(1, cap) <= Duration::from_secs(2)
                && backoff(1, cap) >= Duration::from_millis(1500)
        );
        assert!(
            backoff(3, cap) <= Duration::from_secs(8) && backoff(3, cap) >= Duration::from_secs(6)
        );
        for n in 5..40 {
            let b = backoff(n, cap);
            assert!(b <= cap && b >= Duration::from_secs(15), "{n}: {b:?}");
        }
    }
}
