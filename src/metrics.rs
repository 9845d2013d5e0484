//! `--metrics-addr`: Prometheus metrics at `/metrics` and liveness at `/healthz`.
//!
//! Everything is derived from the cycle reports the loop already has, so observing costs the
//! engine nothing and cannot disagree with what the logs say.

use crate::engine::{CycleReport, FailureKind, PoolResult};
use autoscaler_executor::ErrorKind;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    pool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    pool: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LaunchLabels {
    pool: String,
    reason: String,
}

/// The process's metrics and health state.
pub struct Metrics {
    registry: Registry,
    queued: Family<PoolLabels, Gauge>,
    running: Family<PoolLabels, Gauge>,
    planned: Family<PoolLabels, Gauge>,
    applied: Family<PoolLabels, Gauge>,
    last_success: Family<PoolLabels, Gauge<f64, AtomicU64>>,
    errors: Family<ErrorLabels, Counter>,
    launch_failures: Family<LaunchLabels, Counter>,
    cycle_seconds: Histogram,
    database_up: Gauge,
    cycle_in_progress: Gauge<f64, AtomicU64>,
    cycle_stuck: Gauge,
    db_down_since: Mutex<Option<Instant>>,
    unhealthy_after: Duration,
    cycles: Mutex<CycleClock>,
    stuck_after: Option<Duration>,
}

/// When the current cycle began and the last one ended: a cycle that never ends (a command
/// or call that ignores every bound) must show, since it stops every pool.
struct CycleClock {
    created: Instant,
    running_since: Option<Instant>,
    last_end: Option<Instant>,
}

impl Metrics {
    /// `unhealthy_after`: how long the database may be unreachable before `/healthz` fails
    /// (a restart will not fix an outage, so it should be longer than a blip).
    pub fn new(unhealthy_after: Duration) -> Metrics {
        let mut registry = Registry::with_prefix("autoscaler");
        let m = Metrics {
            queued: Family::default(),
            running: Family::default(),
            planned: Family::default(),
            applied: Family::default(),
            last_success: Family::default(),
            errors: Family::default(),
            launch_failures: Family::default(),
            cycle_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            database_up: Gauge::default(),
            cycle_in_progress: Gauge::default(),
            cycle_stuck: Gauge::default(),
            db_down_since: Mutex::new(None),
            unhealthy_after,
            cycles: Mutex::new(CycleClock {
                created: Instant::now(),
                running_since: None,
                last_end: None,
            }),
            stuck_after: None,
            registry: Registry::default(),
        };
        registry.register(
            "pool_queued_builds",
            "QUEUED builds (queued; with build_latest the planner counts queued_projects)",
            m.queued.clone(),
        );
        registry.register("pool_running_builds", "RUNNING builds", m.running.clone());
        registry.register(
            "pool_planned_size",
            "Workers the planner wants",
            m.planned.clone(),
        );
        registry.register(
            "pool_applied_size",
            "Workers the executor left the target at",
            m.applied.clone(),
        );
        registry.register(
            "pool_last_success_timestamp_seconds",
            "Unix time of the pool's last successful autoscale",
            m.last_success.clone(),
        );
        registry.register(
            "pool_executor_errors",
            "Failed attempts, by kind",
            m.errors.clone(),
        );
        registry.register(
            "pool_launch_failures",
            "Attempts that found the cloud unable to launch the pool's instances, by the cloud's reason",
            m.launch_failures.clone(),
        );
        registry.register(
            "cycle_duration_seconds",
            "Duration of one evaluation cycle",
            m.cycle_seconds.clone(),
        );
        registry.register(
            "database_up",
            "1 when the last cycle could read the database",
            m.database_up.clone(),
        );
        registry.register(
            "cycle_in_progress_seconds",
            "How long the cycle now running has run (0 between cycles)",
            m.cycle_in_progress.clone(),
        );
        registry.register(
            "cycle_stuck",
            "1 when no cycle has finished for longer than stuck_after_sleeps x --sleep",
            m.cycle_stuck.clone(),
        );
        Metrics { registry, ..m }
    }

    /// `/healthz` also fails when no cycle has finished for longer than `after` (counted from
    /// the start of the process until the first cycle ends). None: never for that reason.
    pub fn with_stuck_after(mut self, after: Option<Duration>) -> Metrics {
        self.stuck_after = after;
        self
    }

    /// A cycle begins.
    pub fn cycle_started(&self) {
        self.cycles.lock().expect("cycle clock").running_since = Some(Instant::now());
    }

    fn cycle_ended(&self) {
        let mut c = self.cycles.lock().expect("cycle clock");
        c.running_since = None;
        c.last_end = Some(Instant::now());
    }

    /// Why the loop counts as stuck, if it does.
    fn stuck(&self) -> Option<String> {
        let limit = self.stuck_after?;
        let c = self.cycles.lock().expect("cycle clock");
        let since = c.last_end.unwrap_or(c.created).elapsed();
        (since > limit).then(|| {
            format!(
                "no cycle has finished for {} s (threshold {} s: stuck_after_sleeps x --sleep)",
                since.as_secs(),
                limit.as_secs()
            )
        })
    }

    /// Records a finished cycle.
    pub fn observe_cycle(&self, report: &CycleReport, took: Duration) {
        self.cycle_ended();
        self.cycle_seconds.observe(took.as_secs_f64());
        self.database_up.set(1);
        *self.db_down_since.lock().expect("health lock") = None;
        for p in &report.pools {
            let l = PoolLabels {
                pool: p.name.clone(),
            };
            let counts_plan = match &p.result {
                PoolResult::Scaled {
                    plan,
                    counts,
                    outcome,
                } => {
                    if let Some(a) = outcome.applied {
                        self.applied.get_or_create(&l).set(i64::from(a));
                    }
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_secs_f64())
                        .unwrap_or(0.0);
                    self.last_success.get_or_create(&l).set(now);
                    Some((counts, plan))
                }
                PoolResult::NotDue { plan, counts } => Some((counts, plan)),
                PoolResult::Failed { kind, reason, .. } => {
                    self.errors
                        .get_or_create(&ErrorLabels {
                            pool: p.name.clone(),
                            kind: kind.to_string(),
                        })
                        .inc();
                    if *kind == FailureKind::Executor(ErrorKind::LaunchFailed) {
                        self.launch_failures
                            .get_or_create(&LaunchLabels {
                                pool: p.name.clone(),
                                reason: reason.clone().unwrap_or_else(|| "unknown".into()),
                            })
                            .inc();
                    }
                    None
                }
                _ => None,
            };
            if let Some((counts, plan)) = counts_plan {
                self.queued.get_or_create(&l).set(counts.queued as i64);
                self.running.get_or_create(&l).set(counts.running as i64);
                self.planned.get_or_create(&l).set(i64::from(plan.size));
            }
        }
    }

    /// Records a cycle that could not read the database.
    pub fn observe_database_down(&self) {
        self.cycle_ended();
        self.database_up.set(0);
        self.db_down_since
            .lock()
            .expect("health lock")
            .get_or_insert_with(Instant::now);
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let running = self
            .cycles
            .lock()
            .expect("cycle clock")
            .running_since
            .map(|t| t.elapsed().as_secs_f64());
        self.cycle_in_progress.set(running.unwrap_or(0.0));
        self.cycle_stuck.set(i64::from(self.stuck().is_some()));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        out
    }

    /// Healthy unless the database has been unreachable for longer than the threshold, or no
    /// cycle has finished for longer than the stuck threshold.
    pub fn healthy(&self) -> Result<(), String> {
        if let Some(why) = self.stuck() {
            return Err(why);
        }
        match *self.db_down_since.lock().expect("health lock") {
            Some(since) if since.elapsed() > self.unhealthy_after => Err(format!(
                "database unreachable for {} s (threshold {} s)",
                since.elapsed().as_secs(),
                self.unhealthy_after.as_secs()
            )),
            _ => Ok(()),
        }
    }
}

async fn metrics_handler(
    State(m): State<Arc<Metrics>>,
) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.encode(),
    )
}

async fn health_handler(State(m): State<Arc<Metrics>>) -> (StatusCode, String) {
    match m.healthy() {
        Ok(()) => (StatusCode::OK, "ok\n".into()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("unhealthy: {why}\n"),
        ),
    }
}

/// Binds `addr` and serves `/metrics` and `/healthz` in the background; returns the bound
/// address (useful with port 0).
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(health_handler))
        .with_state(metrics);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("metrics server stopped: {e}");
        }
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::PoolReport;
    use crate::planner::Counts;
    use autoscaler_executor::{Outcome, Plan};

    #[test]
    fn exposes_pool_figures_and_health() {
        let m = Metrics::new(Duration::from_millis(0));
        let report = CycleReport {
            pools: vec![
                PoolReport {
                    name: "linux".into(),
                    executor: Some("shell".into()),
                    result: PoolResult::Scaled {
                        plan: Plan {
                            size: 5,
                            queued_size: 2,
                            standby: 0,
                        },
                        counts: Counts {
                            queued: 3,
                            queued_projects: 2,
                            running: 3,
                        },
                        outcome: Outcome {
                            actions: vec![],
                            applied: Some(5),
                            revisit: false,
                        },
                    },
                },
                PoolReport {
                    name: "mac".into(),
                    executor: Some("shell".into()),
                    result: PoolResult::failed(
                        FailureKind::Executor(ErrorKind::Timeout),
                        "x".into(),
                        None,
                    ),
                },
                PoolReport {
                    name: "arm".into(),
                    executor: Some("gce-mig".into()),
                    result: PoolResult::failed(
                        FailureKind::Executor(ErrorKind::LaunchFailed),
                        "x".into(),
                        Some("QUOTA_EXCEEDED".into()),
                    ),
                },
            ],
        };
        m.observe_cycle(&report, Duration::from_millis(12));
        let text = m.encode();
        for needle in [
            "autoscaler_pool_queued_builds{pool=\"linux\"} 3",
            "autoscaler_pool_running_builds{pool=\"linux\"} 3",
            "autoscaler_pool_planned_size{pool=\"linux\"} 5",
            "autoscaler_pool_applied_size{pool=\"linux\"} 5",
            "autoscaler_pool_executor_errors_total{pool=\"mac\",kind=\"timeout\"} 1",
            "autoscaler_pool_launch_failures_total{pool=\"arm\",reason=\"QUOTA_EXCEEDED\"} 1",
            "autoscaler_cycle_duration_seconds_count 1",
            "autoscaler_database_up 1",
            "autoscaler_pool_last_success_timestamp_seconds{pool=\"linux\"}",
        ] {
            assert!(text.contains(needle), "missing {needle}:\n{text}");
        }
        assert!(m.healthy().is_ok());
        m.observe_database_down();
        std::thread::sleep(Duration::from_millis(5));
        assert!(m
            .healthy()
            .unwrap_err()
            .starts_with("database unreachable for"));
        assert!(m.encode().contains("autoscaler_database_up 0"));
        m.observe_cycle(&CycleReport::default(), Duration::from_millis(1));
        assert!(m.healthy().is_ok());
    }

    #[test]
    fn a_cycle_that_never_ends_turns_health_red() {
        let m =
            Metrics::new(Duration::from_secs(60)).with_stuck_after(Some(Duration::from_millis(30)));
        m.cycle_started();
        m.observe_cycle(&CycleReport::default(), Duration::from_millis(1));
        assert!(m.healthy().is_ok());
        assert!(m.encode().contains("autoscaler_cycle_stuck 0"));
        m.cycle_started();
        std::thread::sleep(Duration::from_millis(60));
        let why = m.healthy().unwrap_err();
        assert!(why.starts_with("no cycle has finished for"), "{why}");
        let text = m.encode();
        assert!(text.contains("autoscaler_cycle_stuck 1"), "{text}");
        let running: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("autoscaler_cycle_in_progress_seconds "))
            .and_then(|v| v.parse().ok())
            .unwrap_or_default();
        assert!(running >= 0.05, "{text}");
        m.observe_cycle(&CycleReport::default(), Duration::from_millis(1));
        assert!(m.healthy().is_ok());
        // Off: never stuck.
        let off = Metrics::new(Duration::from_secs(60));
        off.cycle_started();
        std::thread::sleep(Duration::from_millis(5));
        assert!(off.healthy().is_ok());
    }
}
