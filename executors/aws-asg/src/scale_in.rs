//! Scale-in on AWS: the shared chooser names the instances, and each is ended with
//! `TerminateInstanceInAutoScalingGroup(ShouldDecrementDesiredCapacity=true)`, so AWS never
//! picks (it would pick by zone balance and age, blind to builds). The desired capacity drops
//! by one per instance, which keeps AWS from launching a replacement; the termination hook
//! then holds the instance in `Terminating:Wait` for the drain (see [`crate::drain`]). For an
//! instance with the drain agent that termination *is* the drain request: the agent reads
//! `autoscaling/target-lifecycle-state` from the instance metadata service, starts no new
//! worker, and completes the lifecycle action itself once its worker has exited.

use crate::client::{Ec2Instance, GroupInfo};
use crate::policy::scale_in_choice;
use crate::run::{Applier, Run};
use autoscaler_executor::scale_in::{Action, Blocker, CandidateState, HoldReason, RemoveReason};
use autoscaler_executor::{ErrorKind, WorkerDirectory};
use chrono::{DateTime, Utc};
use std::collections::HashMap;

impl Applier {
    /// Removes up to `reduce` instances as the chooser decides; returns whether the pool
    /// should be revisited next cycle (instances terminated or held while busy, or a build not
    /// yet assigned to a worker). Every failure is recorded in `run`; one instance's failure never stops
    /// the others.
    pub(crate) async fn scale_in(
        &self,
        run: &mut Run<'_>,
        group: &GroupInfo,
        ec2: &HashMap<String, Ec2Instance>,
        reduce: u32,
        workers: &dyn WorkerDirectory,
        now: DateTime<Utc>,
    ) -> bool {
        // Read as late as possible: right before the choice.
        let busy = match workers.busy_workers(run.pool).await {
            Ok(b) => b,
            Err(e) => {
                run.error(
                    ErrorKind::Directory,
                    format!("{e}; no instance removed (scale-in of {reduce} held)"),
                );
                return false;
            }
        };
        let choice = scale_in_choice(&self.cfg, now, reduce, &group.instances, ec2, &busy);
        for b in &choice.ignored {
            tracing::debug!(pool = %run.pool.name, group = %run.group, build = b.build_id,
                worker = b.hostname.as_deref().unwrap_or("-"),
                "RUNNING build not counted: it started before the instance of that name existed, or it has had no worker for longer than unassigned_grace_seconds");
        }

        let mut chosen = 0u64;
        for (id, action) in &choice.actions {
            let why = match action {
                Action::Remove(RemoveReason::Booting) => "booting, not needed",
                Action::Remove(RemoveReason::Idle) => "idle: no RUNNING build on it",
                Action::Remove(RemoveReason::Drained) => "drained",
                Action::RequestDrain => {
                    "drain agent: it finishes its build, then completes the lifecycle action"
                }
                // On AWS no candidate is ever draining (a drained instance has left the group's
                // capacity), so the chooser never waits on or cancels one.
                Action::AwaitDrain | Action::CancelDrain => continue,
            };
            chosen += 1;
            self.terminate(run, id, why).await;
        }
        for (id, reason) in &choice.held {
            match reason {
                HoldReason::Busy { build_id, worker } => {
                    tracing::info!(pool = %run.pool.name, group = %run.group, instance = %id,
                        "kept: build {build_id} RUNNING on worker {worker}")
                }
                HoldReason::NoAgent => {
                    tracing::warn!(pool = %run.pool.name, group = %run.group, instance = %id,
                        "kept: require_drain_agent is set and the instance lacks the tag vespene_drain_agent=v1")
                }
            }
        }
        let mut held = choice.held.len() as u64;
        match &choice.blocker {
            Some(b @ Blocker::Unassigned { .. }) => {
                held += u64::from(reduce).saturating_sub(chosen);
                tracing::info!(pool = %run.pool.name, group = %run.group,
                    "scale-in held this cycle: {b}");
            }
            Some(b @ Blocker::Unmatched { .. }) => {
                held += u64::from(reduce).saturating_sub(chosen);
                if !run.held_reported {
                    run.error(ErrorKind::Held, format!("scale-in held: {b}"));
                    run.held_reported = true;
                }
            }
            None => {}
        }
        if chosen < u64::from(reduce) && choice.held.is_empty() && choice.blocker.is_none() {
            // Protected, standby or otherwise excluded instances: nothing to wait for.
            let excluded: Vec<String> = group
                .instances
                .iter()
                .filter_map(|m| {
                    match crate::policy::candidate(
                        self.cfg.hostname_match,
                        m,
                        ec2.get(&m.instance_id),
                    )
                    .state
                    {
                        CandidateState::Excluded(r) if m.counts_as_capacity() => {
                            Some(format!("{} ({r})", m.instance_id))
                        }
                        _ => None,
                    }
                })
                .collect();
            tracing::warn!(pool = %run.pool.name, group = %run.group,
                "scale-in of {reduce} instance(s) removed {chosen}: the others may not be removed [{}]",
                excluded.join(", "));
        }
        {
            let mut s = self.stats.lock().unwrap();
            s.cycles += 1;
            s.chosen += chosen;
            s.held += held;
        }
        let busy_held = choice
            .held
            .iter()
            .any(|(_, r)| matches!(r, HoldReason::Busy { .. }));
        // Terminated instances wait on the hook next cycle; busy ones free up; an unassigned
        // build gets its worker in a moment. A missing agent or protection does not change by
        // waiting, so those alone are no reason to come back.
        chosen > 0 || busy_held || matches!(choice.blocker, Some(Blocker::Unassigned { .. }))
    }

    async fn terminate(&self, run: &mut Run<'_>, id: &str, why: &str) {
        if !run.dry_run {
            if let Err(e) = self.api.terminate_instance(id, true).await {
                run.instance_error("TerminateInstanceInAutoScalingGroup", id, e);
                return;
            }
        }
        let whither = if run.to_warm_pool {
            "; the group's warm pool has ReuseOnScaleIn"
        } else {
            ""
        };
        run.action(format!(
            "TerminateInstanceInAutoScalingGroup InstanceId={id} \
             ShouldDecrementDesiredCapacity=true ({why}{whither})"
        ));
    }
}
