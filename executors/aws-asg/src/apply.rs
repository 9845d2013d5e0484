//! The decisions: which capacity to ask for, what to keep on the group, and what to do with
//! each instance waiting in `Terminating:Wait`. Everything here talks to AWS only through
//! [`AsgApi`], so every branch runs against an in-memory group in the tests.

use crate::client::{
    ApiError, AsgApi, Ec2Instance, GroupInfo, GroupInstance, GroupTag, HookInfo, DESCRIBE_BATCH,
    TERMINATING_TRANSITION,
};
use crate::config::{Config, HostnameMatch};
use autoscaler_executor::inventory::{TAG_POOL, TAG_WORKER};
use autoscaler_executor::{
    render_command, BusyWorker, ErrorKind, ExecutorError, Outcome, Plan, ScaleRequest,
    TargetStatus, WorkerPool,
};
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

/// The first termination policy the executor keeps on every group: when AWS picks which
/// instances a scale-in removes, the oldest go first (Vespene's own advice).
pub const OLDEST_INSTANCE: &str = "OldestInstance";

/// Where "now" comes from, so the drain timeout can be tested without waiting hours.
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
}

/// The wall clock.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// The Auto Scaling group a pool names: its `executor_command` rendered.
///
/// The name must not depend on `size` or `queued_size`: [`crate::AwsAsgExecutor`] renders it
/// with an empty plan in `prepare` (which has no plan) to batch the describe call, so a name
/// that moved with the plan would describe the wrong group. [`validate`] rejects such a
/// template.
pub fn group_name(pool: &WorkerPool, plan: Plan) -> Result<String, ExecutorError> {
    let name = render_command(&pool.executor_command, pool, plan).map_err(|e| {
        ExecutorError::new(
            &pool.name,
            ErrorKind::Template,
            format!("executor_command (the Auto Scaling group name): {e}"),
        )
    })?;
    let ok_len = (1..=255).contains(&name.len());
    let bad_char = name
        .chars()
        .find(|c| !(('!'..='~').contains(c)) || *c == ':');
    if !ok_len || bad_char.is_some() {
        return Err(ExecutorError::new(
            &pool.name,
            ErrorKind::Config,
            format!(
                "executor_command renders to {name:?}, which is not an Auto Scaling group name \
                 (1 to 255 printable ASCII characters, no spaces, no colon)"
            ),
        ));
    }
    Ok(name)
}

/// Checks a pool's settings without any I/O: the group name renders, is a valid name and does
/// not change with the plan, and at least one instance fits under the pool's maximum.
pub fn validate(cfg: &Config, pool: &WorkerPool, plan: Plan) -> Result<(), ExecutorError> {
    let name = group_name(pool, plan)?;
    let fixed = group_name(pool, Plan::default())?;
    if name != fixed {
        return Err(ExecutorError::new(
            &pool.name,
            ErrorKind::Config,
            format!(
                "executor_command names the Auto Scaling group and must not depend on size or \
                 queued_size (it renders to {name:?} for this plan but {fixed:?} for an empty one)"
            ),
        ));
    }
    let wpi = cfg.workers_per_instance_for(&pool.name);
    if pool.maximum > 0 && (pool.maximum as u32) < wpi {
        return Err(ExecutorError::new(
            &pool.name,
            ErrorKind::Config,
            format!(
                "maximum {} is below workers_per_instance {wpi} of [executors.aws-asg]: no \
                 instance fits without exceeding the pool's maximum",
                pool.maximum
            ),
        ));
    }
    Ok(())
}

/// A bound that changed the number of instances asked for, so the warning can say which won.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Clamp {
    /// The plan asked for more workers than the pool's `maximum`.
    PoolMaximum {
        /// Workers planned.
        planned: u32,
        /// The pool's `maximum`, in workers.
        maximum: u32,
    },
    /// Rounding up to whole instances would have run more workers than `maximum`.
    WholeInstances {
        /// Instances the rounding up asked for.
        wanted: u32,
        /// Instances that fit under `maximum`.
        allowed: u32,
        /// Workers each instance runs.
        workers_per_instance: u32,
        /// The pool's `maximum`, in workers.
        maximum: u32,
    },
    /// The group's `MaxSize` is below what the pool wants.
    GroupMax {
        /// Instances wanted.
        wanted: u32,
        /// The group's `MaxSize`.
        max_size: u32,
    },
    /// The group's `MinSize` is above what the pool wants.
    GroupMin {
        /// Instances wanted.
        wanted: u32,
        /// The group's `MinSize`.
        min_size: u32,
    },
}

impl std::fmt::Display for Clamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Clamp::PoolMaximum { planned, maximum } => write!(
                f,
                "plan of {planned} workers exceeds the pool's maximum of {maximum}: the pool maximum won"
            ),
            Clamp::WholeInstances {
                wanted,
                allowed,
                workers_per_instance,
                maximum,
            } => write!(
                f,
                "{wanted} instances of {workers_per_instance} workers would exceed the pool's maximum of \
                 {maximum} workers: the pool maximum won, asking for {allowed} instances"
            ),
            Clamp::GroupMax { wanted, max_size } => write!(
                f,
                "{wanted} instances wanted but the group's MaxSize is {max_size}: the group MaxSize won"
            ),
            Clamp::GroupMin { wanted, min_size } => write!(
                f,
                "{wanted} instances wanted but the group's MinSize is {min_size}: the group MinSize won"
            ),
        }
    }
}

/// The desired capacity for a plan, with every bound that changed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Instances to ask the group for.
    pub instances: u32,
    /// The bounds that won, in the order applied.
    pub clamps: Vec<Clamp>,
}

/// Instances for `size` workers: `ceil(min(size, maximum) / wpi)`, never more than
/// `floor(maximum / wpi)` (so the workers never exceed the pool's maximum), then inside the
/// group's `MinSize..=MaxSize` (AWS rejects anything outside; a `MinSize` above the pool's
/// maximum therefore wins, with a warning).
pub fn target_instances(
    size: u32,
    pool_maximum: i32,
    workers_per_instance: u32,
    group_min: u32,
    group_max: u32,
) -> Target {
    let wpi = workers_per_instance.max(1);
    let maximum = pool_maximum.max(0) as u32;
    let mut clamps = Vec::new();
    let workers = if size > maximum {
        clamps.push(Clamp::PoolMaximum {
            planned: size,
            maximum,
        });
        maximum
    } else {
        size
    };
    let mut instances = workers.div_ceil(wpi);
    let allowed = maximum / wpi;
    if instances > allowed {
        clamps.push(Clamp::WholeInstances {
            wanted: instances,
            allowed,
            workers_per_instance: wpi,
            maximum,
        });
        instances = allowed;
    }
    if instances > group_max {
        clamps.push(Clamp::GroupMax {
            wanted: instances,
            max_size: group_max,
        });
        instances = group_max;
    }
    if instances < group_min {
        clamps.push(Clamp::GroupMin {
            wanted: instances,
            min_size: group_min,
        });
        instances = group_min;
    }
    Target { instances, clamps }
}

/// The termination policies to set so `OldestInstance` comes first, keeping the others in
/// order after it; `None` when it already comes first.
pub fn wanted_termination_policies(current: &[String]) -> Option<Vec<String>> {
    if current.first().map(String::as_str) == Some(OLDEST_INSTANCE) {
        return None;
    }
    let mut out = vec![OLDEST_INSTANCE.to_string()];
    out.extend(current.iter().filter(|p| *p != OLDEST_INSTANCE).cloned());
    Some(out)
}

/// The tags every group of a pool carries, propagated to its instances.
pub fn wanted_tags(pool: &str) -> Vec<GroupTag> {
    vec![
        GroupTag {
            key: TAG_WORKER.to_string(),
            value: "true".to_string(),
            propagate_at_launch: true,
        },
        GroupTag {
            key: TAG_POOL.to_string(),
            value: pool.to_string(),
            propagate_at_launch: true,
        },
    ]
}

/// The wanted tags the group lacks (missing, another value, or not propagated).
pub fn missing_tags(current: &[GroupTag], pool: &str) -> Vec<GroupTag> {
    wanted_tags(pool)
        .into_iter()
        .filter(|w| !current.iter().any(|c| c == w))
        .collect()
}

fn norm(s: &str) -> String {
    s.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// Whether a worker's reported hostname is this instance, under `mode` (see
/// [`HostnameMatch`]). `ec2` is `None` when EC2 did not describe the instance.
pub fn hostname_matches(
    mode: HostnameMatch,
    hostname: &str,
    instance_id: &str,
    ec2: Option<&Ec2Instance>,
) -> bool {
    let h = norm(hostname);
    if h.is_empty() {
        return false;
    }
    let by_dns = || {
        ec2.and_then(|e| e.private_dns_name.as_deref())
            .map(norm)
            .is_some_and(|dns| dns == h || (!h.contains('.') && dns.split('.').next() == Some(&h)))
    };
    let by_ip = || {
        ec2.and_then(|e| e.private_ip.as_deref())
            .is_some_and(|ip| norm(ip) == h)
    };
    let by_id = || norm(instance_id) == h;
    match mode {
        HostnameMatch::PrivateDnsName => by_dns(),
        HostnameMatch::PrivateIp => by_ip(),
        HostnameMatch::InstanceId => by_id(),
        HostnameMatch::Any => by_dns() || by_ip() || by_id(),
    }
}

/// What the drain logic remembers about an instance in `Terminating:Wait`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DrainState {
    /// When this process first saw it waiting: the start of its drain. A restart of the
    /// autoscaler restarts this clock; AWS's own global timeout still bounds the wait.
    pub since: DateTime<Utc>,
    /// The last heartbeat this process recorded for it.
    pub last_heartbeat: Option<DateTime<Utc>>,
}

/// What to do with one waiting instance this cycle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// No RUNNING build on it: let it terminate now.
    CompleteIdle,
    /// Still busy but held for `max_drain_seconds` already: let it terminate.
    CompleteDrainTimeout {
        /// The RUNNING build.
        build_id: i64,
        /// The worker (`workers.hostname`) running it.
        worker: String,
    },
    /// Busy and the last heartbeat is getting old: extend the wait.
    Heartbeat {
        /// The RUNNING build.
        build_id: i64,
        /// The worker (`workers.hostname`) running it.
        worker: String,
    },
    /// Busy, heartbeat recent enough: nothing to send.
    Wait {
        /// The RUNNING build.
        build_id: i64,
        /// The worker (`workers.hostname`) running it.
        worker: String,
    },
}

/// The drain rule. A worker the database does not know (no RUNNING build names it) is idle:
/// only a RUNNING build can keep an instance.
pub fn decide(
    cfg: &Config,
    now: DateTime<Utc>,
    state: &DrainState,
    busy: Option<&BusyWorker>,
) -> Decision {
    let Some(b) = busy else {
        return Decision::CompleteIdle;
    };
    let (build_id, worker) = (b.build_id, b.hostname.clone().unwrap_or_default());
    let max = ChronoDuration::seconds(cfg.max_drain_seconds.min(i64::MAX as u64) as i64);
    if now - state.since >= max {
        return Decision::CompleteDrainTimeout { build_id, worker };
    }
    let interval = ChronoDuration::seconds(cfg.heartbeat_interval_seconds() as i64);
    match state.last_heartbeat {
        Some(t) if now - t < interval => Decision::Wait { build_id, worker },
        _ => Decision::Heartbeat { build_id, worker },
    }
}

type Prepared = HashMap<String, Result<Option<GroupInfo>, ApiError>>;

/// How long a `prepare` answer may stand in for a describe: long enough for a cycle of many
/// pools, short enough that a pool scaled without a fresh `prepare` reads its group again.
const PREPARED_TTL: std::time::Duration = std::time::Duration::from_secs(120);

/// The executor's state and logic, shared by every pool.
pub(crate) struct Applier {
    api: Arc<dyn AsgApi>,
    cfg: Config,
    region: Option<String>,
    clock: Arc<dyn Clock>,
    /// Groups described by `prepare` for this cycle, and when; each entry is taken by one
    /// `scale`, and ignored once older than [`PREPARED_TTL`].
    prepared: Mutex<(Prepared, Option<std::time::Instant>)>,
    /// Drain state per (group, instance).
    drains: Mutex<HashMap<(String, String), DrainState>>,
    /// When each group's lifecycle hook was last seen (or made) as configured.
    hooks_checked: Mutex<HashMap<String, DateTime<Utc>>>,
}

/// One pool's cycle: the pool, its group and the actions so far.
struct Run<'a> {
    pool: &'a WorkerPool,
    group: &'a str,
    dry_run: bool,
    outcome: Outcome,
}

impl Run<'_> {
    fn fail(&self, e: ApiError) -> ExecutorError {
        ExecutorError::new(
            &self.pool.name,
            e.kind,
            format!("Auto Scaling group {}: {}", self.group, e.message),
        )
    }

    /// Records a mutating call: logged, and listed in the outcome ("would …" in a dry run).
    fn action(&mut self, call: String) {
        if self.dry_run {
            tracing::info!(pool = %self.pool.name, group = %self.group, "dry run: would {call}");
            self.outcome.actions.push(format!("would {call}"));
        } else {
            tracing::info!(pool = %self.pool.name, group = %self.group, "{call}");
            self.outcome.actions.push(call);
        }
    }
}

fn list(items: &[String]) -> String {
    format!("[{}]", items.join(","))
}

impl Applier {
    pub(crate) fn new(
        api: Arc<dyn AsgApi>,
        cfg: Config,
        region: Option<String>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Applier {
            api,
            cfg,
            region,
            clock,
            prepared: Mutex::new((HashMap::new(), None)),
            drains: Mutex::new(HashMap::new()),
            hooks_checked: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn config(&self) -> &Config {
        &self.cfg
    }

    pub(crate) fn api(&self) -> &dyn AsgApi {
        self.api.as_ref()
    }

    pub(crate) fn region(&self) -> Option<&str> {
        self.region.as_deref()
    }

    pub(crate) fn set_clock(&mut self, clock: Arc<dyn Clock>) {
        self.clock = clock;
    }

    pub(crate) fn validate(&self, pool: &WorkerPool, plan: Plan) -> Result<(), ExecutorError> {
        validate(&self.cfg, pool, plan)
    }

    pub(crate) fn where_(&self) -> String {
        match &self.region {
            Some(r) => format!(" in region {r}"),
            None => String::new(),
        }
    }

    fn not_found(&self, pool: &WorkerPool, group: &str) -> ExecutorError {
        ExecutorError::new(
            &pool.name,
            ErrorKind::NotFound,
            format!(
                "Auto Scaling group {group} not found{} (the pool's executor_command renders to \
                 this name; DescribeAutoScalingGroups returned no such group)",
                self.where_()
            ),
        )
    }

    /// One `DescribeAutoScalingGroups` for every group of the cycle (per 100 names), kept for
    /// the `scale` calls that follow. A failure is kept too, and each pool reports it with its
    /// own group's name; `prepare` itself never fails.
    pub(crate) async fn prepare(&self, pools: &[&WorkerPool]) {
        let names: BTreeSet<String> = pools
            .iter()
            .filter_map(|p| group_name(p, Plan::default()).ok())
            .collect();
        let names: Vec<String> = names.into_iter().collect();
        let mut found: Prepared = HashMap::new();
        for chunk in names.chunks(DESCRIBE_BATCH) {
            match self.api.describe_groups(chunk).await {
                Ok(groups) => {
                    for n in chunk {
                        let g = groups.iter().find(|g| &g.name == n).cloned();
                        found.insert(n.clone(), Ok(g));
                    }
                }
                Err(e) => {
                    for n in chunk {
                        found.insert(n.clone(), Err(e.clone()));
                    }
                }
            }
        }
        *self.prepared.lock().unwrap() = (found, Some(std::time::Instant::now()));
    }

    async fn describe_one(
        &self,
        pool: &WorkerPool,
        group: &str,
    ) -> Result<GroupInfo, ExecutorError> {
        let got = self
            .api
            .describe_groups(&[group.to_string()])
            .await
            .map_err(|e| {
                ExecutorError::new(
                    &pool.name,
                    e.kind,
                    format!("Auto Scaling group {group}: {}", e.message),
                )
            })?;
        got.into_iter()
            .find(|g| g.name == group)
            .ok_or_else(|| self.not_found(pool, group))
    }

    async fn group_for(&self, pool: &WorkerPool, group: &str) -> Result<GroupInfo, ExecutorError> {
        let cached = {
            let mut p = self.prepared.lock().unwrap();
            let fresh = p.1.is_some_and(|t| t.elapsed() < PREPARED_TTL);
            let entry = p.0.remove(group);
            entry.filter(|_| fresh)
        };
        match cached {
            Some(Ok(Some(g))) => Ok(g),
            Some(Ok(None)) => Err(self.not_found(pool, group)),
            Some(Err(e)) => Err(ExecutorError::new(
                &pool.name,
                e.kind,
                format!("Auto Scaling group {group}: {}", e.message),
            )),
            None => self.describe_one(pool, group).await,
        }
    }

    pub(crate) async fn status(&self, pool: &WorkerPool) -> Result<TargetStatus, ExecutorError> {
        let name = group_name(pool, Plan::default())?;
        let g = self.describe_one(pool, &name).await?;
        let wpi = self.cfg.workers_per_instance_for(&pool.name);
        let current = g
            .instances
            .iter()
            .filter(|i| i.counts_as_capacity())
            .count() as u32;
        Ok(TargetStatus {
            target: name,
            desired: g.desired_capacity.saturating_mul(wpi),
            current: current.saturating_mul(wpi),
        })
    }

    pub(crate) async fn scale(&self, req: ScaleRequest<'_>) -> Result<Outcome, ExecutorError> {
        let pool = req.pool;
        validate(&self.cfg, pool, req.plan)?;
        let name = group_name(pool, req.plan)?;
        let group = self.group_for(pool, &name).await?;
        let mut run = Run {
            pool,
            group: &name,
            dry_run: req.dry_run,
            outcome: Outcome::default(),
        };

        // Everything that protects a scale-in comes before the capacity change: with no hook
        // yet, a lowered capacity would end instances at once.
        if self.cfg.manage_termination_policy {
            self.ensure_termination_policy(&mut run, &group).await?;
        }
        if self.cfg.manage_tags {
            self.ensure_tags(&mut run, &group).await?;
        }
        if self.cfg.manage_lifecycle_hook {
            self.ensure_hook(&mut run).await?;
        }

        let wpi = self.cfg.workers_per_instance_for(&pool.name);
        let target = target_instances(
            req.plan.size,
            pool.maximum,
            wpi,
            group.min_size,
            group.max_size,
        );
        for clamp in &target.clamps {
            tracing::warn!(pool = %pool.name, group = %name, "{clamp}");
        }
        let capacity = group
            .instances
            .iter()
            .filter(|i| i.counts_as_capacity())
            .count() as u32;
        let lowered = target.instances < group.desired_capacity;
        if target.instances != group.desired_capacity {
            if !req.dry_run {
                self.api
                    .set_desired_capacity(&name, target.instances)
                    .await
                    .map_err(|e| run.fail(e))?;
            }
            run.action(format!(
                "SetDesiredCapacity AutoScalingGroupName={name} DesiredCapacity={} \
                 HonorCooldown=false (was {}; {} workers wanted, {wpi} per instance)",
                target.instances, group.desired_capacity, req.plan.size
            ));
        } else {
            tracing::debug!(pool = %pool.name, group = %name, desired = target.instances,
                "desired capacity already as planned");
        }
        run.outcome.applied = Some(target.instances.saturating_mul(wpi));

        let kept = self.drain(&mut run, &group, req.workers).await?;
        // Come back next cycle while instances drain, and while the group still has more
        // capacity than asked (instances about to enter Terminating:Wait).
        run.outcome.revisit = kept > 0 || lowered || capacity > target.instances;
        Ok(run.outcome)
    }

    async fn ensure_termination_policy(
        &self,
        run: &mut Run<'_>,
        group: &GroupInfo,
    ) -> Result<(), ExecutorError> {
        let Some(wanted) = wanted_termination_policies(&group.termination_policies) else {
            return Ok(());
        };
        if !run.dry_run {
            self.api
                .update_termination_policies(run.group, &wanted)
                .await
                .map_err(|e| run.fail(e))?;
        }
        run.action(format!(
            "UpdateAutoScalingGroup AutoScalingGroupName={} TerminationPolicies={} (was {})",
            run.group,
            list(&wanted),
            list(&group.termination_policies)
        ));
        Ok(())
    }

    async fn ensure_tags(&self, run: &mut Run<'_>, group: &GroupInfo) -> Result<(), ExecutorError> {
        let missing = missing_tags(&group.tags, &run.pool.name);
        if missing.is_empty() {
            return Ok(());
        }
        if !run.dry_run {
            self.api
                .create_or_update_tags(run.group, &missing)
                .await
                .map_err(|e| run.fail(e))?;
        }
        let shown: Vec<String> = missing
            .iter()
            .map(|t| format!("{}={}", t.key, t.value))
            .collect();
        run.action(format!(
            "CreateOrUpdateTags AutoScalingGroupName={} Tags={} PropagateAtLaunch=true",
            run.group,
            list(&shown)
        ));
        // PropagateAtLaunch reaches only instances launched from now on; tag the members that
        // already run so that every instance carries the tags.
        let members: Vec<String> = group
            .instances
            .iter()
            .filter(|i| i.counts_as_capacity() || i.lifecycle_state == "Standby")
            .map(|i| i.instance_id.clone())
            .collect();
        if !members.is_empty() {
            let pairs: Vec<(String, String)> = missing
                .iter()
                .map(|t| (t.key.clone(), t.value.clone()))
                .collect();
            if !run.dry_run {
                self.api
                    .tag_instances(&members, &pairs)
                    .await
                    .map_err(|e| run.fail(e))?;
            }
            run.action(format!(
                "CreateTags (EC2) Resources={} Tags={}",
                list(&members),
                list(&shown)
            ));
        }
        Ok(())
    }

    fn wanted_hook(&self) -> HookInfo {
        HookInfo {
            name: self.cfg.lifecycle_hook_name.clone(),
            transition: TERMINATING_TRANSITION.to_string(),
            heartbeat_timeout: Some(self.cfg.heartbeat_timeout_seconds),
            default_result: Some("CONTINUE".to_string()),
        }
    }

    async fn ensure_hook(&self, run: &mut Run<'_>) -> Result<(), ExecutorError> {
        let now = self.clock.now();
        let recheck = ChronoDuration::seconds(self.cfg.hook_check_seconds as i64);
        if let Some(t) = self.hooks_checked.lock().unwrap().get(run.group) {
            if now - *t < recheck {
                return Ok(());
            }
        }
        let wanted = self.wanted_hook();
        let hooks = self
            .api
            .describe_lifecycle_hooks(run.group, std::slice::from_ref(&wanted.name))
            .await
            .map_err(|e| run.fail(e))?;
        let current = hooks.iter().find(|h| h.name == wanted.name);
        let same = current.is_some_and(|h| {
            h.transition == wanted.transition
                && h.heartbeat_timeout == wanted.heartbeat_timeout
                && h.default_result.as_deref().unwrap_or("ABANDON") == "CONTINUE"
        });
        if !same {
            if !run.dry_run {
                self.api
                    .put_lifecycle_hook(run.group, &wanted)
                    .await
                    .map_err(|e| run.fail(e))?;
            }
            let was = match current {
                Some(h) => format!(
                    "was {} HeartbeatTimeout={} DefaultResult={}",
                    h.transition,
                    h.heartbeat_timeout
                        .map(|v| v.to_string())
                        .unwrap_or_else(|| "-".into()),
                    h.default_result.as_deref().unwrap_or("-")
                ),
                None => "was missing".to_string(),
            };
            run.action(format!(
                "PutLifecycleHook AutoScalingGroupName={} LifecycleHookName={} \
                 LifecycleTransition={} HeartbeatTimeout={} DefaultResult=CONTINUE ({was})",
                run.group, wanted.name, wanted.transition, self.cfg.heartbeat_timeout_seconds
            ));
            if run.dry_run {
                return Ok(());
            }
        }
        self.hooks_checked
            .lock()
            .unwrap()
            .insert(run.group.to_string(), now);
        Ok(())
    }

    /// Handles every instance in `Terminating:Wait`; returns how many are kept waiting.
    async fn drain(
        &self,
        run: &mut Run<'_>,
        group: &GroupInfo,
        workers: &dyn autoscaler_executor::WorkerDirectory,
    ) -> Result<usize, ExecutorError> {
        let waiting: Vec<&GroupInstance> = group
            .instances
            .iter()
            .filter(|i| i.is_waiting_to_terminate())
            .collect();
        let now = self.clock.now();
        let states: Vec<(String, DrainState)> = {
            let mut drains = self.drains.lock().unwrap();
            drains.retain(|(g, id), _| {
                g != run.group || waiting.iter().any(|i| &i.instance_id == id)
            });
            waiting
                .iter()
                .map(|i| {
                    let s = *drains
                        .entry((run.group.to_string(), i.instance_id.clone()))
                        .or_insert(DrainState {
                            since: now,
                            last_heartbeat: None,
                        });
                    (i.instance_id.clone(), s)
                })
                .collect()
        };
        if waiting.is_empty() {
            return Ok(0);
        }
        let hook = self.cfg.lifecycle_hook_name.clone();

        let busy = match workers.busy_workers(run.pool).await {
            Ok(b) => b,
            Err(e) => {
                // Unknown means possibly busy: keep every waiting instance alive (within the
                // drain limit) and report the failure.
                for (id, state) in &states {
                    let pretend = BusyWorker {
                        hostname: Some("(unknown: database unavailable)".into()),
                        build_id: 0,
                        started: None,
                    };
                    if let Decision::Heartbeat { .. } =
                        decide(&self.cfg, now, state, Some(&pretend))
                    {
                        self.heartbeat(run, &hook, id, now, "busy workers unknown")
                            .await?;
                    }
                }
                return Err(ExecutorError::new(
                    &run.pool.name,
                    ErrorKind::Directory,
                    format!(
                        "Auto Scaling group {}: {e}; {} instance(s) in Terminating:Wait kept waiting",
                        run.group,
                        states.len()
                    ),
                ));
            }
        };

        let ec2: HashMap<String, Ec2Instance> =
            if self.cfg.hostname_match == HostnameMatch::InstanceId || busy.is_empty() {
                HashMap::new()
            } else {
                let ids: Vec<String> = states.iter().map(|(id, _)| id.clone()).collect();
                self.api
                    .describe_instances(&ids)
                    .await
                    .map_err(|e| run.fail(e))?
                    .into_iter()
                    .map(|i| (i.instance_id.clone(), i))
                    .collect()
            };

        let mut kept = 0;
        for (id, state) in &states {
            let described = ec2.get(id);
            let mut matched = busy.iter().find(|w| {
                w.hostname
                    .as_deref()
                    .is_some_and(|h| hostname_matches(self.cfg.hostname_match, h, id, described))
            });
            let unknown;
            if matched.is_none()
                && described.is_none()
                && !busy.is_empty()
                && self.cfg.hostname_match != HostnameMatch::InstanceId
            {
                // EC2 gave no names for it, so a busy worker on it could not be recognised:
                // treat it as busy (bounded by max_drain_seconds) rather than risk a build.
                tracing::warn!(pool = %run.pool.name, group = %run.group, instance = %id,
                    "EC2 did not describe this instance; holding it as possibly busy");
                unknown = BusyWorker {
                    hostname: Some(format!("(unknown names of {id})")),
                    build_id: 0,
                    started: None,
                };
                matched = Some(&unknown);
            }
            match decide(&self.cfg, now, state, matched) {
                Decision::CompleteIdle => {
                    self.complete(run, &hook, id, "no RUNNING build on it")
                        .await?;
                }
                Decision::CompleteDrainTimeout { build_id, worker } => {
                    tracing::warn!(pool = %run.pool.name, group = %run.group, instance = %id,
                        build = build_id, worker = %worker,
                        "build {build_id} still RUNNING on worker {worker} after max_drain_seconds={}: releasing the instance",
                        self.cfg.max_drain_seconds);
                    self.complete(
                        run,
                        &hook,
                        id,
                        &format!(
                            "max_drain_seconds={} reached with build {build_id} still RUNNING on {worker}",
                            self.cfg.max_drain_seconds
                        ),
                    )
                    .await?;
                }
                Decision::Heartbeat { build_id, worker } => {
                    kept += 1;
                    self.heartbeat(
                        run,
                        &hook,
                        id,
                        now,
                        &format!("build {build_id} RUNNING on worker {worker}"),
                    )
                    .await?;
                }
                Decision::Wait { build_id, worker } => {
                    kept += 1;
                    tracing::debug!(pool = %run.pool.name, group = %run.group, instance = %id,
                        "build {build_id} RUNNING on worker {worker}; heartbeat still fresh");
                }
            }
        }
        Ok(kept)
    }

    async fn complete(
        &self,
        run: &mut Run<'_>,
        hook: &str,
        id: &str,
        why: &str,
    ) -> Result<(), ExecutorError> {
        if !run.dry_run {
            match self
                .api
                .complete_lifecycle_action(run.group, hook, id, "CONTINUE")
                .await
            {
                Ok(()) => {}
                Err(e) if e.is_no_active_lifecycle_action() => {
                    tracing::warn!(pool = %run.pool.name, group = %run.group, instance = %id,
                        "instance is not waiting on lifecycle hook {hook} (another hook holds it, or it already proceeded): {}", e.message);
                    return Ok(());
                }
                Err(e) => return Err(run.fail(e)),
            }
            self.drains
                .lock()
                .unwrap()
                .remove(&(run.group.to_string(), id.to_string()));
        }
        run.action(format!(
            "CompleteLifecycleAction AutoScalingGroupName={} LifecycleHookName={hook} \
             InstanceId={id} LifecycleActionResult=CONTINUE ({why})",
            run.group
        ));
        Ok(())
    }

    async fn heartbeat(
        &self,
        run: &mut Run<'_>,
        hook: &str,
        id: &str,
        now: DateTime<Utc>,
        why: &str,
    ) -> Result<(), ExecutorError> {
        if !run.dry_run {
            match self
                .api
                .record_lifecycle_action_heartbeat(run.group, hook, id)
                .await
            {
                Ok(()) => {}
                Err(e) if e.is_no_active_lifecycle_action() => {
                    tracing::warn!(pool = %run.pool.name, group = %run.group, instance = %id,
                        "instance is not waiting on lifecycle hook {hook}; no heartbeat recorded: {}", e.message);
                    return Ok(());
                }
                Err(e) => return Err(run.fail(e)),
            }
            if let Some(s) = self
                .drains
                .lock()
                .unwrap()
                .get_mut(&(run.group.to_string(), id.to_string()))
            {
                s.last_heartbeat = Some(now);
            }
        }
        run.action(format!(
            "RecordLifecycleActionHeartbeat AutoScalingGroupName={} LifecycleHookName={hook} \
             InstanceId={id} ({why})",
            run.group
        ));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(name: &str, cmd: &str, maximum: i32) -> WorkerPool {
        let mut p = WorkerPool::with_defaults(1, name);
        p.executor = Some("aws-asg".into());
        p.executor_command = cmd.into();
        p.maximum = maximum;
        p
    }

    #[test]
    fn instances_are_ceil_of_workers_within_every_bound() {
        // ceil(5 / 2) = 3 instances; maximum 10 allows 5.
        assert_eq!(target_instances(5, 10, 2, 0, 100).instances, 3);
        assert!(target_instances(5, 10, 2, 0, 100).clamps.is_empty());
        // Plan above the pool maximum: the pool maximum wins.
        let t = target_instances(25, 10, 1, 0, 100);
        assert_eq!(t.instances, 10);
        assert_eq!(
            t.clamps,
            vec![Clamp::PoolMaximum {
                planned: 25,
                maximum: 10
            }]
        );
        assert!(t.clamps[0].to_string().contains("pool maximum won"));
        // Maximum 5 with 2 per instance: 3 instances would run 6 workers; 2 is the most.
        let t = target_instances(5, 5, 2, 0, 100);
        assert_eq!(t.instances, 2);
        assert!(matches!(
            t.clamps[0],
            Clamp::WholeInstances { allowed: 2, .. }
        ));
        // Group MaxSize below the wish.
        let t = target_instances(8, 10, 1, 0, 4);
        assert_eq!(t.instances, 4);
        assert!(t.clamps[0].to_string().contains("group MaxSize won"));
        // Group MinSize above the wish.
        let t = target_instances(0, 10, 1, 2, 4);
        assert_eq!(t.instances, 2);
        assert!(t.clamps[0].to_string().contains("group MinSize won"));
        // Never more workers than the maximum, for every combination (MinSize aside).
        for size in 0..30 {
            for max in 0..15 {
                for wpi in 1..5 {
                    let t = target_instances(size, max, wpi, 0, 1000);
                    assert!(t.instances * wpi <= max as u32, "{size} {max} {wpi}");
                    if size <= max as u32 && (max as u32).is_multiple_of(wpi) {
                        assert_eq!(t.instances, size.div_ceil(wpi));
                    }
                }
            }
        }
    }

    #[test]
    fn oldest_instance_goes_first_once() {
        assert_eq!(
            wanted_termination_policies(&["Default".to_string()]),
            Some(vec!["OldestInstance".to_string(), "Default".to_string()])
        );
        assert_eq!(
            wanted_termination_policies(&[]),
            Some(vec!["OldestInstance".to_string()])
        );
        assert_eq!(
            wanted_termination_policies(&[
                "ClosestToNextInstanceHour".to_string(),
                "OldestInstance".to_string()
            ]),
            Some(vec![
                "OldestInstance".to_string(),
                "ClosestToNextInstanceHour".to_string()
            ])
        );
        assert_eq!(
            wanted_termination_policies(&["OldestInstance".to_string(), "Default".to_string()]),
            None
        );
    }

    #[test]
    fn tags_missing_when_absent_different_or_not_propagated() {
        let have = vec![
            GroupTag {
                key: "vespene_worker".into(),
                value: "true".into(),
                propagate_at_launch: false,
            },
            GroupTag {
                key: "vespene_pool".into(),
                value: "linux".into(),
                propagate_at_launch: true,
            },
        ];
        let m = missing_tags(&have, "linux");
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].key, "vespene_worker");
        assert!(m[0].propagate_at_launch);
        assert_eq!(missing_tags(&have, "arm").len(), 2);
        assert!(missing_tags(&wanted_tags("x"), "x").is_empty());
    }

    #[test]
    fn hostname_rules() {
        let e = Ec2Instance {
            instance_id: "i-0abc".into(),
            private_dns_name: Some("ip-10-0-1-5.ec2.internal".into()),
            private_ip: Some("10.0.1.5".into()),
            launch_time: None,
            ..Default::default()
        };
        use HostnameMatch::*;
        assert!(hostname_matches(
            PrivateDnsName,
            "ip-10-0-1-5.ec2.internal",
            "i-0abc",
            Some(&e)
        ));
        assert!(hostname_matches(
            PrivateDnsName,
            "IP-10-0-1-5.EC2.internal.",
            "i-0abc",
            Some(&e)
        ));
        assert!(hostname_matches(
            PrivateDnsName,
            "ip-10-0-1-5",
            "i-0abc",
            Some(&e)
        ));
        assert!(!hostname_matches(
            PrivateDnsName,
            "ip-10-0-1-6",
            "i-0abc",
            Some(&e)
        ));
        assert!(!hostname_matches(
            PrivateDnsName,
            "10.0.1.5",
            "i-0abc",
            Some(&e)
        ));
        assert!(hostname_matches(PrivateIp, "10.0.1.5", "i-0abc", Some(&e)));
        assert!(!hostname_matches(PrivateIp, "10", "i-0abc", Some(&e)));
        assert!(hostname_matches(InstanceId, "i-0abc", "i-0abc", None));
        assert!(!hostname_matches(
            InstanceId,
            "ip-10-0-1-5",
            "i-0abc",
            Some(&e)
        ));
        for h in [
            "i-0abc",
            "10.0.1.5",
            "ip-10-0-1-5",
            "ip-10-0-1-5.ec2.internal",
        ] {
            assert!(hostname_matches(Any, h, "i-0abc", Some(&e)), "{h}");
        }
        assert!(!hostname_matches(Any, "", "i-0abc", Some(&e)));
        assert!(!hostname_matches(
            PrivateDnsName,
            "ip-10-0-1-5",
            "i-0abc",
            None
        ));
    }

    #[test]
    fn validate_rejects_size_dependent_names_and_bad_names() {
        let cfg = Config::default();
        let plan = Plan {
            size: 3,
            queued_size: 1,
        };
        validate(
            &cfg,
            &pool("linux", "vespene-{{ worker_pool.name }}", 10),
            plan,
        )
        .unwrap();
        let e = validate(&cfg, &pool("linux", "g-{{ size }}", 10), plan).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Config);
        assert!(e.to_string().contains("must not depend on size"), "{e}");
        let e = validate(&cfg, &pool("linux", "my group", 10), plan).unwrap_err();
        assert!(
            e.to_string().contains("not an Auto Scaling group name"),
            "{e}"
        );
        let e = validate(&cfg, &pool("linux", "a:b", 10), plan).unwrap_err();
        assert!(e.to_string().contains("no colon"), "{e}");
        let e = validate(&cfg, &pool("linux", "{{ nope }}", 10), plan).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Template);
        assert!(
            e.to_string().starts_with("pool linux: executor_command"),
            "{e}"
        );
        let cfg4 = Config {
            workers_per_instance: 4,
            ..Config::default()
        };
        let e = validate(&cfg4, &pool("linux", "g", 3), plan).unwrap_err();
        assert!(
            e.to_string()
                .contains("maximum 3 is below workers_per_instance 4"),
            "{e}"
        );
    }

    #[test]
    fn drain_decisions() {
        let cfg = Config {
            heartbeat_timeout_seconds: 300,
            max_drain_seconds: 3600,
            ..Config::default()
        };
        let t0 = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let busy = BusyWorker {
            hostname: Some("h".into()),
            build_id: 7,
            started: None,
        };
        let fresh = DrainState {
            since: t0,
            last_heartbeat: None,
        };
        assert_eq!(decide(&cfg, t0, &fresh, None), Decision::CompleteIdle);
        assert!(matches!(
            decide(&cfg, t0, &fresh, Some(&busy)),
            Decision::Heartbeat { build_id: 7, .. }
        ));
        let beat = DrainState {
            since: t0,
            last_heartbeat: Some(t0),
        };
        assert!(matches!(
            decide(&cfg, t0 + ChronoDuration::seconds(99), &beat, Some(&busy)),
            Decision::Wait { .. }
        ));
        assert!(matches!(
            decide(&cfg, t0 + ChronoDuration::seconds(100), &beat, Some(&busy)),
            Decision::Heartbeat { .. }
        ));
        assert!(matches!(
            decide(&cfg, t0 + ChronoDuration::seconds(3600), &beat, Some(&busy)),
            Decision::CompleteDrainTimeout { build_id: 7, .. }
        ));
    }
}
