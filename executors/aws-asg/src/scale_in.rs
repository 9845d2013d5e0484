//! Scale-in on AWS: the shared chooser names the instances, and each is ended with
//! `TerminateInstanceInAutoScalingGroup(ShouldDecrementDesiredCapacity=true)`, so AWS never
//! picks (it would pick by zone balance and age, blind to builds). The desired capacity drops
//! by one per instance, which keeps AWS from launching a replacement; the termination hook
//! then holds the instance in `Terminating:Wait` for the drain (see [`crate::drain`]). For an
//! instance with the drain agent that termination *is* the drain request: the agent reads
//! `autoscaling/target-lifecycle-state` from the instance metadata service, starts no new
//! worker, and completes the lifecycle action itself once its worker has exited.

use crate::client::{Ec2Instance, GroupInfo};
use crate::policy::{excluded, removal_reason, scale_in_choice, scale_in_revisit};
use crate::run::{Applier, Run};
use autoscaler_executor::scale_in::{Blocker, HoldReason, ScaleInChoice};
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
            if let Some(why) = removal_reason(action) {
                chosen += 1;
                self.terminate(run, id, why).await;
            }
        }
        log_held(run, &choice.held);
        let held = choice.held.len() as u64 + report_blocker(run, &choice, reduce, chosen);
        if chosen < u64::from(reduce) && choice.held.is_empty() && choice.blocker.is_none() {
            // Protected, standby or otherwise excluded instances: nothing to wait for.
            let excluded = excluded(self.cfg.hostname_match, &group.instances, ec2);
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
        scale_in_revisit(chosen, &choice)
    }

    async fn terminate(&self, run: &mut Run<'_>, id: &str, why: &str) {
        if !run.dry_run() {
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

/// Logs why each held instance stays.
fn log_held(run: &Run<'_>, held: &[(String, HoldReason)]) {
    for (id, reason) in held {
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
}

/// Reports the chooser's blocker (a build that could be on any instance fails the pool as
/// held, once per cycle); returns how many more instances it held beyond those named.
fn report_blocker(run: &mut Run<'_>, choice: &ScaleInChoice, reduce: u32, chosen: u64) -> u64 {
    match &choice.blocker {
        Some(b @ Blocker::Unassigned { .. }) => {
            tracing::info!(pool = %run.pool.name, group = %run.group,
                "scale-in held this cycle: {b}");
            u64::from(reduce).saturating_sub(chosen)
        }
        Some(b @ Blocker::Unmatched { .. }) => {
            if !run.held_reported {
                run.error(ErrorKind::Held, format!("scale-in held: {b}"));
                run.held_reported = true;
            }
            u64::from(reduce).saturating_sub(chosen)
        }
        None => 0,
    }
}
