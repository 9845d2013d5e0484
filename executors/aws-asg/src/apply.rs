//! Carrying out the decisions of [`crate::policy`] for one pool in one cycle: the drain of
//! waiting instances first (see [`crate::drain`]), then what protects a scale-in (termination
//! policy, tags, hook: see [`crate::protect`]), then the capacity: `SetDesiredCapacity` to grow, and for a scale-in
//! `TerminateInstanceInAutoScalingGroup` on the instances the shared chooser names (see
//! [`crate::scale_in`]). Everything talks to AWS through [`AsgApi`], so every branch runs
//! against an in-memory group in the tests. A failing call is recorded and the cycle goes on;
//! the pool's error then names every failed call.

use crate::client::{Ec2Instance, GroupInfo, DESCRIBE_BATCH};
use crate::policy::{
    capacity, group_name, resize, sizing, unsupported_capacity, validate, Resize, Sizing,
    CLOCK_SKEW,
};
use crate::run::{Applier, Prepared, Run, PREPARED_TTL};
use crate::warm_pool::WarmRead;
use autoscaler_executor::{
    ErrorKind, ExecutorError, Outcome, ScaleRequest, TargetStatus, WorkerDirectory, WorkerPool,
};
use chrono::{DateTime, Utc};
use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};

impl Applier {
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
        let names: BTreeSet<String> = pools.iter().filter_map(|p| group_name(p).ok()).collect();
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

    /// The group's refusal as the pool's error (status 2), naming the setting.
    fn refuse(pool: &WorkerPool, group: &GroupInfo) -> Option<ExecutorError> {
        unsupported_capacity(group).map(|why| {
            ExecutorError::new(
                &pool.name,
                ErrorKind::Config,
                format!("Auto Scaling group {}: {why}", group.name),
            )
        })
    }

    pub(crate) async fn status(&self, pool: &WorkerPool) -> Result<TargetStatus, ExecutorError> {
        let name = group_name(pool)?;
        let g = self.describe_one(pool, &name).await?;
        if let Some(e) = Self::refuse(pool, &g) {
            return Err(e);
        }
        let wpi = self.cfg.workers_per_instance_for(&pool.name);
        let current = capacity(&g);
        Ok(TargetStatus {
            target: name,
            desired: g.desired_capacity.saturating_mul(wpi),
            current: current.saturating_mul(wpi),
        })
    }

    /// One pool's cycle, in the order its steps must run: size, the warm pool's members, the
    /// drain, what protects a scale-in, the warm pool, the launches, the capacity.
    pub(crate) async fn scale(&self, req: ScaleRequest<'_>) -> Result<Outcome, ExecutorError> {
        let pool = req.pool;
        validate(&self.cfg, pool, req.plan)?;
        let name = group_name(pool)?;
        let group = self.group_for(pool, &name).await?;
        let mut run = Run::new(pool, &name, req.dry_run);
        let now = self.clock.now();
        let wpi = self.cfg.workers_per_instance_for(&pool.name);
        let size = sizing(req.plan.size, pool.maximum, wpi, &group);
        for clamp in &size.target.clamps {
            tracing::warn!(pool = %pool.name, group = %name, "{clamp}");
        }

        // The warm pool, only when the group has one or the plan wants standby: its settings
        // for the decision below, and its instances going back to it on the termination hook
        // (`Warmed:Pending:Wait`), which the drain handles with the group's own.
        let warm = self.read_warm_pool(&mut run, &group, req.plan).await;
        run.warm_unread = matches!(warm, WarmRead::Failed);
        let members = with_returning(&group, &warm);
        let waiting = members
            .instances
            .iter()
            .any(|i| i.is_waiting_to_terminate());

        // Names, tags and launch times of every member, once, when a drain or a scale-in needs
        // them; `None` when EC2 could not say (the failure is reported, nothing is removed).
        let ec2 = if waiting || size.reduce > 0 {
            self.describe_members(&mut run, &members).await
        } else {
            Some(HashMap::new())
        };

        // The drain first, whatever fails after it: an instance waiting on the hook must get
        // its heartbeat or its completion every cycle, or AWS's default result ends it.
        let still_waiting = self
            .drain(&mut run, &members, ec2.as_ref(), req.workers, now)
            .await;

        // A group that counts capacity in vCPUs, memory or weights: any size set would be
        // wrong, so nothing else is done to it (the drain above still protects its builds).
        if let Some(e) = Self::refuse(pool, &group) {
            run.errors.push(e);
            return run.finish();
        }

        let hook_ok = self.protect(&mut run, &group).await;

        // The warm pool before the capacity: leavers of this cycle's scale-in go back to it.
        run.to_warm_pool = self
            .ensure_warm_pool(&mut run, &group, &warm, req.plan, size.target.instances)
            .await;

        // Below the desired capacity and still wanting more than it has: AWS accepted a size
        // it has not launched. Only then are its scaling activities read.
        if size.capacity < group.desired_capacity && size.capacity < size.target.instances {
            self.check_launches(&mut run, size.capacity, group.desired_capacity)
                .await;
        }

        let why = format!("{} workers wanted, {wpi} per instance", req.plan.size);
        let shrink = Shrinking {
            ec2: ec2.as_ref(),
            hook_ok,
            workers: req.workers,
            now,
        };
        let revisit = self.resize(&mut run, &group, &size, &why, shrink).await;
        run.outcome.applied = Some(size.target.instances.saturating_mul(wpi));
        run.outcome.revisit = revisit || still_waiting > 0;
        run.finish()
    }

    /// What protects a scale-in, before it: with no hook, a termination is immediate. Returns
    /// whether the hook is in place (or not managed), without which no instance is ended.
    async fn protect(&self, run: &mut Run<'_>, group: &GroupInfo) -> bool {
        if self.cfg.manage_termination_policy {
            if let Err(e) = self.ensure_termination_policy(run, group).await {
                run.errors.push(e);
            }
        }
        if self.cfg.manage_tags {
            if let Err(e) = self.ensure_tags(run, group).await {
                run.errors.push(e);
            }
        }
        if !self.cfg.manage_lifecycle_hook {
            return true;
        }
        match self.ensure_hook(run).await {
            Ok(()) => true,
            Err(e) => {
                run.errors.push(e);
                false
            }
        }
    }

    /// Carries out the [`Resize`] of `size`; returns whether a scale-in wants the pool revisited.
    async fn resize(
        &self,
        run: &mut Run<'_>,
        group: &GroupInfo,
        size: &Sizing,
        why: &str,
        shrink: Shrinking<'_, '_>,
    ) -> bool {
        let desired = group.desired_capacity;
        match resize(desired, size.capacity, size.target.instances) {
            Resize::Grow { to } => {
                self.set_desired(run, to, desired, why).await;
                false
            }
            Resize::Shrink { lower } => {
                // Desired capacity not launched yet can be taken back without ending anything.
                if lower > 0 {
                    self.set_desired(
                        run,
                        desired - lower,
                        desired,
                        "instances not launched yet; ends none",
                    )
                    .await;
                }
                if size.reduce == 0 {
                    return false;
                }
                match (shrink.ec2, shrink.hook_ok) {
                    (Some(ec2), true) => {
                        self.scale_in(run, group, ec2, size.reduce, shrink.workers, shrink.now)
                            .await
                    }
                    (None, _) => {
                        run.note_skip(size.reduce, "EC2 did not describe the group's instances");
                        false
                    }
                    (_, false) => {
                        run.note_skip(
                            size.reduce,
                            "the termination lifecycle hook could not be checked, and without \
                             it a termination would end the instance at once",
                        );
                        false
                    }
                }
            }
            Resize::Hold => {
                tracing::debug!(pool = %run.pool.name, group = %run.group,
                    desired = size.target.instances, "desired capacity already as planned");
                false
            }
        }
    }

    /// `SetDesiredCapacity`: a scale-out, or taking back capacity not launched yet. Never used
    /// to make AWS end instances: the executor names those itself.
    async fn set_desired(&self, run: &mut Run<'_>, to: u32, was: u32, why: &str) {
        if !run.dry_run() {
            // Taken before the call: AWS may start (and fail) the launch before it answers.
            let asked = self.clock.now() - CLOCK_SKEW;
            if let Err(e) = self.api.set_desired_capacity(run.group, to).await {
                run.api_error(e);
                return;
            }
            if to > was {
                self.raised
                    .lock()
                    .unwrap()
                    .insert(run.group.to_string(), asked);
            }
        }
        run.action(format!(
            "SetDesiredCapacity AutoScalingGroupName={} DesiredCapacity={to} HonorCooldown=false \
             (was {was}; {why})",
            run.group
        ));
    }

    /// EC2's view of every member of the group, or `None` (error recorded) when it failed.
    async fn describe_members(
        &self,
        run: &mut Run<'_>,
        group: &GroupInfo,
    ) -> Option<HashMap<String, Ec2Instance>> {
        let ids: Vec<String> = group
            .instances
            .iter()
            .map(|i| i.instance_id.clone())
            .collect();
        if ids.is_empty() {
            return Some(HashMap::new());
        }
        match self.api.describe_instances(&ids).await {
            Ok(found) => Some(
                found
                    .into_iter()
                    .map(|i| (i.instance_id.clone(), i))
                    .collect(),
            ),
            Err(e) => {
                run.api_error(e);
                None
            }
        }
    }
}

/// What a scale-in needs beyond the sizing: EC2's view of the members (`None`: EC2 could not
/// say, so nothing is removed), whether the hook is in place, the workers, and "now".
struct Shrinking<'e, 'w> {
    ec2: Option<&'e HashMap<String, Ec2Instance>>,
    hook_ok: bool,
    workers: &'w dyn WorkerDirectory,
    now: DateTime<Utc>,
}

/// The group's members with the instances going back to its warm pool, which the drain
/// handles with the group's own (borrowed when there are none).
fn with_returning<'g>(group: &'g GroupInfo, warm: &WarmRead) -> Cow<'g, GroupInfo> {
    let returning = warm.waiting();
    if returning.is_empty() {
        return Cow::Borrowed(group);
    }
    let mut all = group.clone();
    all.instances.extend(returning);
    Cow::Owned(all)
}
