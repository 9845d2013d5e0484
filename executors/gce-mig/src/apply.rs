//! Bringing one managed instance group to a plan: the shared parts (checks, operation waits)
//! and scale-out. Retries and error classification are the client's ([`crate::client`]),
//! scale-in lives in [`crate::scale_in`], the reading of a group's instances in
//! [`crate::candidates`].

use crate::client::{
    api_error, operation_error_kind, ApiError, ComputeApi, Failed, OperationInfo, RetryPolicy,
};
use crate::config::Config;
use crate::target::{GroupPath, EXPECTED_FORMS};
use autoscaler_executor::sizing::instances_for;
use autoscaler_executor::{
    render_fixed_target, render_target, ActionLog, ErrorKind, ExecutorError, Outcome, Plan,
    ScaleRequest, TargetStatus, WorkerPool,
};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// Longest pause between operation polls.
const MAX_POLL: Duration = Duration::from_secs(5);

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(max).collect::<String>())
    }
}

/// The scaling logic, independent of how Compute is reached.
pub(crate) struct Applier {
    api: Arc<dyn ComputeApi>,
    cfg: Config,
    /// The client's retry loop, set from `cfg`.
    retry: RetryPolicy,
    /// Pools already warned about missing labels: the warning is useful once, noise after.
    pub(crate) labels_warned: Mutex<HashSet<String>>,
    /// Per group: whether some instance may be draining (`false` only once a listing showed
    /// none). Scale-out and "at target" must not count draining instances as capacity, but
    /// listing the group every cycle would end the one-`get` steady state; this remembers
    /// what the last listing saw, and a fresh process lists once to find out.
    pub(crate) may_drain: Mutex<HashMap<String, bool>>,
    /// Stale RUNNING rows already warned about (by build id), so each is reported once.
    pub(crate) stale_warned: Mutex<HashSet<i64>>,
    /// Per group, when this process first saw each member being created (by instance URL):
    /// dates a failing launch when `listErrors` does not. Only members creating now are kept.
    pub(crate) creating_seen:
        Mutex<HashMap<String, HashMap<String, chrono::DateTime<chrono::Utc>>>>,
}

/// The group path a pool names: its `executor_command` rendered as every backend renders a
/// target ([`render_target`]: with an empty plan, so `status` and the inventory read the group
/// `scale` changes), then parsed; no I/O.
pub(crate) fn group_path(
    project: Option<&str>,
    pool: &WorkerPool,
) -> Result<GroupPath, ExecutorError> {
    parse_group(project, pool, render_target(pool)?)
}

/// [`group_path`], after checking that the path does not move with `plan`: the check
/// `validate` makes before any call.
pub(crate) fn fixed_group_path(
    project: Option<&str>,
    pool: &WorkerPool,
    plan: Plan,
) -> Result<GroupPath, ExecutorError> {
    parse_group(
        project,
        pool,
        render_fixed_target(pool, plan, "managed instance group")?,
    )
}

fn parse_group(
    project: Option<&str>,
    pool: &WorkerPool,
    rendered: String,
) -> Result<GroupPath, ExecutorError> {
    GroupPath::parse(&rendered, project).map_err(|why| {
        ExecutorError::new(
            &pool.name,
            ErrorKind::Config,
            format!(
                "executor_command renders to {:?}, which is not a managed instance group ({why}); expected {EXPECTED_FORMS}",
                shorten(&rendered, 200)
            ),
        )
    })
}

impl Applier {
    pub(crate) fn new(api: Arc<dyn ComputeApi>, cfg: Config) -> Applier {
        Applier {
            api,
            retry: RetryPolicy::from_config(&cfg),
            cfg,
            labels_warned: Mutex::new(HashSet::new()),
            may_drain: Mutex::new(HashMap::new()),
            stale_warned: Mutex::new(HashSet::new()),
            creating_seen: Mutex::new(HashMap::new()),
        }
    }

    /// The Compute client, for the read-only audit in [`crate::inventory`].
    pub(crate) fn api(&self) -> &Arc<dyn ComputeApi> {
        &self.api
    }

    /// The checked settings.
    pub(crate) fn cfg(&self) -> &Config {
        &self.cfg
    }

    pub(crate) fn group_for(&self, pool: &WorkerPool) -> Result<GroupPath, ExecutorError> {
        group_path(self.cfg.project.as_deref(), pool)
    }

    /// The I/O-free part of [`Applier::scale`]'s checks: the group path and the instance count.
    pub(crate) fn validate(&self, pool: &WorkerPool, plan: Plan) -> Result<(), ExecutorError> {
        fixed_group_path(self.cfg.project.as_deref(), pool, plan)?;
        self.target_instances(pool, plan.size).map(|_| ())
    }

    /// Instances for `size` workers, by the sizing rule every backend shares
    /// ([`autoscaler_executor::sizing::instances_for`]; a managed instance group has no
    /// size bounds of its own), with the same warning as aws-asg when a bound won.
    fn target_instances(&self, pool: &WorkerPool, size: u32) -> Result<u32, ExecutorError> {
        let wpi = self.cfg.workers_per_instance;
        if (pool.maximum.max(0) as u32) < wpi && size > 0 {
            return Err(ExecutorError::new(
                &pool.name,
                ErrorKind::Config,
                format!(
                    "workers_per_instance ({wpi}) is larger than the pool's maximum ({}): not one instance fits; \
                     raise maximum or lower [executors.gce-mig] workers_per_instance",
                    pool.maximum
                ),
            ));
        }
        let target = instances_for(size, pool.maximum, wpi, 0, u32::MAX);
        for clamp in &target.clamps {
            warn!(pool = %pool.name, "{clamp}");
        }
        Ok(target.instances)
    }

    /// Standby instances for a standby target of `standby` workers (rounded up), never more
    /// than the pool's maximum in instances: a standby pool larger than the pool could ever
    /// run is disk paid for nothing.
    pub(crate) fn standby_instances(&self, pool: &WorkerPool, standby: u32) -> u32 {
        let wpi = self.cfg.workers_per_instance;
        let max_instances = (pool.maximum.max(0) as u32) / wpi;
        standby.div_ceil(wpi).min(max_instances)
    }

    /// Runs `call` through the client's retry loop ([`RetryPolicy::run`]).
    pub(crate) async fn retry<T, F, Fut>(
        &self,
        pool: &str,
        what: &str,
        group: &GroupPath,
        call: F,
    ) -> Result<T, Failed>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ApiError>>,
    {
        self.retry.run(pool, what, group, call).await
    }

    /// The pool's error for a call that failed for good (the client's [`api_error`]).
    pub(crate) fn api_error(
        &self,
        pool: &str,
        doing: &str,
        group: &GroupPath,
        failed: Failed,
    ) -> ExecutorError {
        api_error(pool, doing, group, failed)
    }

    /// Waits for an operation of the group (resize, deleteInstances) to finish.
    pub(crate) async fn wait(
        &self,
        pool: &str,
        group: &GroupPath,
        what: &str,
        op: OperationInfo,
    ) -> Result<(), ExecutorError> {
        self.wait_in(pool, group, None, what, op).await
    }

    /// Waits for an operation to finish: the group's (`zone` None) or an instance operation
    /// in `zone` (setMetadata), whatever the group's scope.
    pub(crate) async fn wait_in(
        &self,
        pool: &str,
        group: &GroupPath,
        zone: Option<&str>,
        what: &str,
        mut op: OperationInfo,
    ) -> Result<(), ExecutorError> {
        let timeout = Duration::from_secs(self.cfg.operation_timeout_seconds);
        let deadline = Instant::now() + timeout;
        let mut interval = Duration::from_millis(self.cfg.poll_interval_ms.max(1));
        loop {
            if op.done() {
                let Some(f) = op.error else { return Ok(()) };
                let kind = operation_error_kind(&f);
                return Err(ExecutorError::new(
                    pool,
                    kind,
                    format!(
                        "{what} of {group} failed: operation {} finished with error {}: {}",
                        op.name,
                        f.code.as_deref().unwrap_or("(no code)"),
                        f.message
                    ),
                ));
            }
            if op.name.is_empty() {
                return Err(ExecutorError::new(
                    pool,
                    ErrorKind::Backend,
                    format!("{what} of {group}: Compute returned an unfinished operation without a name"),
                ));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(ExecutorError::new(
                    pool,
                    ErrorKind::Timeout,
                    format!(
                        "{what} of {group}: operation {} still {} after {}s (operation_timeout_seconds); \
                         it may yet finish, the next cycle reads the group again",
                        op.name,
                        op.status,
                        timeout.as_secs()
                    ),
                ));
            }
            tokio::time::sleep(interval.min(deadline - now)).await;
            interval = (interval * 3 / 2).min(MAX_POLL);
            let name = op.name.clone();
            op = self
                .retry(pool, "operations.get", group, || async {
                    match zone {
                        Some(z) => self.api.get_zone_operation(&group.project, z, &name).await,
                        None => self.api.get_operation(group, &name).await,
                    }
                })
                .await
                .map_err(|e| {
                    self.api_error(
                        pool,
                        &format!("waiting for {what} operation {name} of"),
                        group,
                        e,
                    )
                })?;
        }
    }

    pub(crate) async fn scale(&self, req: ScaleRequest<'_>) -> Result<Outcome, ExecutorError> {
        let pool = req.pool;
        let group = fixed_group_path(self.cfg.project.as_deref(), pool, req.plan)?;
        let want = self.target_instances(pool, req.plan.size)?;
        let wpi = self.cfg.workers_per_instance;
        let info = self
            .retry(&pool.name, "get", &group, || self.api.get_group(&group))
            .await
            .map_err(|e| self.api_error(&pool.name, "reading", &group, e))?;
        let current = info.target_size;
        self.check_setup(&pool.name, &group, &info, want < current)?;
        let standby = self.standby_instances(pool, req.plan.standby);
        // Standby members to bring back are found by listing the group, which its standby
        // counts say is worth doing; with none (or no standby target) the steady state stays
        // one `get`.
        let resumable = standby > 0 && want > current && info.standby() > 0;
        let outcome = if want < current || self.may_drain(&group) || resumable {
            // Draining instances: they are in the target size but take no builds, so even
            // at or above target the group is read and the drains reconciled first.
            self.reconcile(&req, &group, current, want, standby).await
        } else if want > current {
            self.scale_out(pool, &group, current, want, req.dry_run)
                .await
        } else {
            debug!(pool = %pool.name, group = %group, instances = current, "at target");
            Ok(Outcome {
                actions: Vec::new(),
                applied: Some(current * wpi),
                revisit: false,
            })
        }?;
        // Instances the group was already creating may be held by a quota or a stockout:
        // looked into once the plan is carried out (creations added now wait on the same
        // cause and start with the others once it is fixed), so a scale-out from a settled
        // group costs nothing more. A scale-in needs no look: it removes them first.
        if want >= current {
            let target = outcome.applied.map_or(current, |a| a / wpi).max(current);
            self.check_launches(&pool.name, &group, target, info.creating)
                .await?;
        }
        Ok(outcome)
    }

    /// Whether `group` may have draining instances (unknown counts as yes).
    fn may_drain(&self, group: &GroupPath) -> bool {
        self.may_drain
            .lock()
            .unwrap()
            .get(&group.to_string())
            .copied()
            .unwrap_or(true)
    }

    pub(crate) async fn scale_out(
        &self,
        pool: &WorkerPool,
        group: &GroupPath,
        current: u32,
        want: u32,
        dry_run: bool,
    ) -> Result<Outcome, ExecutorError> {
        let wpi = self.cfg.workers_per_instance;
        let what = format!(
            "resize {group} from {current} to {want} instances ({} workers)",
            want * wpi
        );
        let mut log = ActionLog::new(dry_run);
        if log.would(&what) {
            return Ok(Outcome {
                actions: log.into_lines(),
                applied: Some(current * wpi),
                revisit: false,
            });
        }
        // One id per intent, reused by every retry of this call: if a response is lost after
        // Compute accepted the resize, the retry returns the same operation instead of a second one.
        let request_id = uuid::Uuid::new_v4().to_string();
        let op = self
            .retry(&pool.name, "resize", group, || {
                self.api.resize(group, want, &request_id)
            })
            .await
            .map_err(|e| {
                self.api_error(
                    &pool.name,
                    &format!("resizing to {want} instances"),
                    group,
                    e,
                )
            })?;
        self.wait(&pool.name, group, "resize", op).await?;
        info!(pool = %pool.name, group = %group, from = current, to = want, "resized managed instance group");
        log.did(format!("{what} (requestId {request_id})"));
        Ok(Outcome {
            actions: log.into_lines(),
            applied: Some(want * wpi),
            revisit: false,
        })
    }

    pub(crate) async fn status(
        &self,
        pool: &WorkerPool,
    ) -> Result<Option<TargetStatus>, ExecutorError> {
        let group = self.group_for(pool)?;
        let wpi = self.cfg.workers_per_instance;
        let info = self
            .retry(&pool.name, "get", &group, || self.api.get_group(&group))
            .await
            .map_err(|e| self.api_error(&pool.name, "reading", &group, e))?;
        Ok(Some(TargetStatus {
            target: group.to_string(),
            desired: info.target_size * wpi,
            current: info.instances_present.unwrap_or(info.target_size) * wpi,
        }))
    }
}
