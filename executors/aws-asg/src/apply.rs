//! Carrying out the decisions of [`crate::policy`] for one pool in one cycle: the drain of
//! waiting instances first (see [`crate::drain`]), then what protects a scale-in (termination
//! policy, tags, hook: see [`crate::protect`]), then the capacity: `SetDesiredCapacity` to grow, and for a scale-in
//! `TerminateInstanceInAutoScalingGroup` on the instances the shared chooser names (see
//! [`crate::scale_in`]). Everything talks to AWS through [`AsgApi`], so every branch runs
//! against an in-memory group in the tests. A failing call is recorded and the cycle goes on;
//! the pool's error then names every failed call.

use crate::client::{Ec2Instance, GroupInfo, DESCRIBE_BATCH};
use crate::policy::{
    group_name, reduction, target_instances, unsupported_capacity, validate, CLOCK_SKEW,
};
use crate::run::{Applier, Prepared, Run, PREPARED_TTL};
use autoscaler_executor::{
    ErrorKind, ExecutorError, Outcome, Plan, ScaleRequest, TargetStatus, WorkerPool,
};
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
        let name = group_name(pool, Plan::default())?;
        let g = self.describe_one(pool, &name).await?;
        if let Some(e) = Self::refuse(pool, &g) {
            return Err(e);
        }
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
            errors: Vec::new(),
            held_reported: false,
            to_warm_pool: false,
            warm_unread: false,
        };
        let now = self.clock.now();
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
        let reduce = reduction(group.desired_capacity, capacity, target.instances);

        // The warm pool, only when the group has one or the plan wants standby: its settings
        // for the decision below, and its instances going back to it on the termination hook
        // (`Warmed:Pending:Wait`), which the drain handles with the group's own.
        let warm = self.read_warm_pool(&mut run, &group, req.plan).await;
        run.warm_unread = matches!(warm, crate::warm_pool::WarmRead::Failed);
        let returning = warm.waiting();
        let members: std::borrow::Cow<'_, GroupInfo> = if returning.is_empty() {
            std::borrow::Cow::Borrowed(&group)
        } else {
            let mut all = group.clone();
            all.instances.extend(returning);
            std::borrow::Cow::Owned(all)
        };
        let waiting = members
            .instances
            .iter()
            .any(|i| i.is_waiting_to_terminate());

        // Names, tags and launch times of every member, once, when a drain or a scale-in needs
        // them; `None` when EC2 could not say (the failure is reported, nothing is removed).
        let ec2 = if waiting || reduce > 0 {
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

        // What protects a scale-in comes before it: with no hook, a termination is immediate.
        if self.cfg.manage_termination_policy {
            if let Err(e) = self.ensure_termination_policy(&mut run, &group).await {
                run.errors.push(e);
            }
        }
        if self.cfg.manage_tags {
            if let Err(e) = self.ensure_tags(&mut run, &group).await {
                run.errors.push(e);
            }
        }
        let hook_ok = if self.cfg.manage_lifecycle_hook {
            match self.ensure_hook(&mut run).await {
                Ok(()) => true,
                Err(e) => {
                    run.errors.push(e);
                    false
                }
            }
        } else {
            true
        };

        // The warm pool before the capacity: leavers of this cycle's scale-in go back to it.
        run.to_warm_pool = self
            .ensure_warm_pool(&mut run, &group, &warm, req.plan, target.instances)
            .await;

        // Below the desired capacity and still wanting more than it has: AWS accepted a size
        // it has not launched. Only then are its scaling activities read.
        if capacity < group.desired_capacity && capacity < target.instances {
            self.check_launches(&mut run, capacity, group.desired_capacity)
                .await;
        }

        let mut revisit = still_waiting > 0;
        let desired = group.desired_capacity;
        if target.instances > desired {
            self.set_desired(
                &mut run,
                target.instances,
                desired,
                &format!("{} workers wanted, {wpi} per instance", req.plan.size),
            )
            .await;
        } else if target.instances < desired {
            // Desired capacity not launched yet can be taken back without ending anything.
            let unlaunched = desired.saturating_sub(capacity);
            let lower = unlaunched.min(desired - target.instances);
            if lower > 0 {
                self.set_desired(
                    &mut run,
                    desired - lower,
                    desired,
                    "instances not launched yet; ends none",
                )
                .await;
            }
            if reduce > 0 {
                match (&ec2, hook_ok) {
                    (Some(ec2), true) => {
                        revisit |= self
                            .scale_in(&mut run, &group, ec2, reduce, req.workers, now)
                            .await;
                    }
                    (None, _) => {
                        run.note_skip(reduce, "EC2 did not describe the group's instances")
                    }
                    (_, false) => run.note_skip(
                        reduce,
                        "the termination lifecycle hook could not be checked, and without it a \
                         termination would end the instance at once",
                    ),
                }
            }
        } else {
            tracing::debug!(pool = %pool.name, group = %name, desired = target.instances,
                "desired capacity already as planned");
        }
        run.outcome.applied = Some(target.instances.saturating_mul(wpi));
        run.outcome.revisit = revisit;
        run.finish()
    }

    /// `SetDesiredCapacity`: a scale-out, or taking back capacity not launched yet. Never used
    /// to make AWS end instances: the executor names those itself.
    async fn set_desired(&self, run: &mut Run<'_>, to: u32, was: u32, why: &str) {
        if !run.dry_run {
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
