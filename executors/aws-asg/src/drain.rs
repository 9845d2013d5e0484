//! The drain of instances waiting on the termination hook (`Terminating:Wait`, or
//! `Warmed:Pending:Wait` on their way back to the warm pool), run first in every cycle and whatever
//! fails elsewhere: each waiting instance gets its heartbeat or its completion, one instance's
//! failed call never skips the others, and every failure is reported.
//!
//! An instance with the drain agent completes its own lifecycle action once its worker has
//! exited; the executor only keeps it alive with heartbeats while a RUNNING build matches it
//! (a safety net). An instance without the agent is completed here when nothing RUNNING
//! matches it (best effort: a worker may claim a build between the read and the call), and
//! kept alive with heartbeats while something does, up to `max_drain_seconds`.

use crate::client::{Ec2Instance, GroupInfo, GroupInstance};
use crate::policy::{decide, drain_match, drain_view, has_agent, Decision, DrainState, DrainView};
use crate::run::{Applier, Run};
use autoscaler_executor::scale_in::Blocker;
use autoscaler_executor::{ErrorKind, WorkerDirectory};
use chrono::{DateTime, Utc};
use std::collections::HashMap;

impl Applier {
    /// Handles every instance waiting on the hook (`group` lists the warm pool's returning
    /// instances with the members); returns how many are still waiting after
    /// this cycle (so the pool is revisited next cycle).
    pub(crate) async fn drain(
        &self,
        run: &mut Run<'_>,
        group: &GroupInfo,
        ec2: Option<&HashMap<String, Ec2Instance>>,
        workers: &dyn WorkerDirectory,
        now: DateTime<Utc>,
    ) -> usize {
        let waiting: Vec<&GroupInstance> = group
            .instances
            .iter()
            .filter(|i| i.is_waiting_to_terminate())
            .collect();
        let states = self.drain_states(run, &waiting, now);
        if waiting.is_empty() {
            return 0;
        }
        let hook = self.cfg.lifecycle_hook_name.clone();
        let view = self
            .busy_view(run, group, ec2, workers, now, states.len())
            .await;

        let mut still = 0;
        for (id, state) in &states {
            let agent = ec2.map(|e| has_agent(e.get(id))).unwrap_or(true);
            let matched = drain_match(view.as_ref(), id);
            let decision = decide(&self.cfg, now, state, agent, matched.as_ref());
            if self.carry_out(run, &hook, id, decision, now).await {
                still += 1;
            }
        }
        still
    }

    /// Each waiting instance's drain state, started `now` for a new one; the states of
    /// instances of this group no longer waiting are forgotten.
    fn drain_states(
        &self,
        run: &Run<'_>,
        waiting: &[&GroupInstance],
        now: DateTime<Utc>,
    ) -> Vec<(String, DrainState)> {
        // Without this cycle's warm-pool listing, an instance absent from `group` may still be
        // waiting there: its drain clock is kept, not restarted.
        let keep_unlisted = run.warm_unread;
        let mut drains = self.drains.lock().unwrap();
        drains.retain(|(g, id), _| {
            g != run.group || keep_unlisted || waiting.iter().any(|i| &i.instance_id == id)
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
    }

    /// Which build keeps each of the `waiting` instances, read from the busy workers; `None`
    /// (every instance may be busy) when they or the instances' names are unavailable. A
    /// failed read and a build that could be on any instance are recorded in `run`.
    async fn busy_view(
        &self,
        run: &mut Run<'_>,
        group: &GroupInfo,
        ec2: Option<&HashMap<String, Ec2Instance>>,
        workers: &dyn WorkerDirectory,
        now: DateTime<Utc>,
        waiting: usize,
    ) -> Option<DrainView> {
        let busy = match workers.busy_workers(run.pool).await {
            Ok(b) => Some(b),
            Err(e) => {
                run.error(
                    ErrorKind::Directory,
                    format!(
                        "{e}; {waiting} instance(s) waiting on the termination hook kept waiting"
                    ),
                );
                None
            }
        };
        // Without the busy workers or the instances' names, every waiting instance may be
        // busy: it is kept (within max_drain_seconds), never completed as idle.
        let view = match (&busy, ec2) {
            (Some(b), Some(e)) => Some(drain_view(&self.cfg, now, &group.instances, e, b)),
            _ => None,
        };
        if let Some(b @ Blocker::Unmatched { .. }) = view.as_ref().and_then(|v| v.blocker.as_ref())
        {
            run.error(
                ErrorKind::Held,
                format!("{b}; {waiting} instance(s) waiting on the termination hook kept waiting"),
            );
            run.held_reported = true;
        }
        view
    }

    /// Carries out one instance's drain [`Decision`]; returns whether it is still waiting.
    async fn carry_out(
        &self,
        run: &mut Run<'_>,
        hook: &str,
        id: &str,
        decision: Decision,
        now: DateTime<Utc>,
    ) -> bool {
        match decision {
            Decision::CompleteIdle => !self.complete(run, hook, id, "no RUNNING build on it").await,
            Decision::CompleteDrainTimeout { build_id, worker } => {
                tracing::warn!(pool = %run.pool.name, group = %run.group, instance = %id,
                    build = build_id, worker = %worker,
                    "build {build_id} still RUNNING on worker {worker} after max_drain_seconds={}: releasing the instance",
                    self.cfg.max_drain_seconds);
                let why = format!(
                    "max_drain_seconds={} reached with build {build_id} still RUNNING on {worker}",
                    self.cfg.max_drain_seconds
                );
                !self.complete(run, hook, id, &why).await
            }
            Decision::Heartbeat { build_id, worker } => {
                let why = format!("build {build_id} RUNNING on worker {worker}");
                self.heartbeat(run, hook, id, now, &why).await;
                true
            }
            Decision::Wait { build_id, worker } => {
                tracing::debug!(pool = %run.pool.name, group = %run.group, instance = %id,
                    "build {build_id} RUNNING on worker {worker}; heartbeat still fresh");
                true
            }
            Decision::LeaveToAgent => {
                tracing::debug!(pool = %run.pool.name, group = %run.group, instance = %id,
                    "drain agent instance with nothing RUNNING: its agent completes the lifecycle action");
                true
            }
            Decision::AgentOverdue { build_id, worker } => {
                tracing::warn!(pool = %run.pool.name, group = %run.group, instance = %id,
                    build = build_id, worker = %worker,
                    "build {build_id} still RUNNING on worker {worker} of a drain agent instance after max_drain_seconds={}: no more heartbeats from the autoscaler",
                    self.cfg.max_drain_seconds);
                true
            }
        }
    }

    /// `CompleteLifecycleAction CONTINUE`; true when the instance is on its way out (completed,
    /// or no longer waiting on the hook), false when the call failed (recorded in `run`).
    async fn complete(&self, run: &mut Run<'_>, hook: &str, id: &str, why: &str) -> bool {
        if !run.dry_run() {
            match self
                .api
                .complete_lifecycle_action(run.group, hook, id, "CONTINUE")
                .await
            {
                Ok(()) => {}
                Err(e) if e.is_no_active_lifecycle_action() => {
                    tracing::warn!(pool = %run.pool.name, group = %run.group, instance = %id,
                        "instance is not waiting on lifecycle hook {hook} (another hook holds it, or it already proceeded): {}", e.message);
                    return true;
                }
                Err(e) => {
                    run.instance_error("CompleteLifecycleAction", id, e);
                    return false;
                }
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
        true
    }

    /// `RecordLifecycleActionHeartbeat`; a failure is recorded in `run` and the next instance
    /// is still handled.
    async fn heartbeat(
        &self,
        run: &mut Run<'_>,
        hook: &str,
        id: &str,
        now: DateTime<Utc>,
        why: &str,
    ) {
        if !run.dry_run() {
            match self
                .api
                .record_lifecycle_action_heartbeat(run.group, hook, id)
                .await
            {
                Ok(()) => {}
                Err(e) if e.is_no_active_lifecycle_action() => {
                    tracing::warn!(pool = %run.pool.name, group = %run.group, instance = %id,
                        "instance is not waiting on lifecycle hook {hook}; no heartbeat recorded: {}", e.message);
                    return;
                }
                Err(e) => {
                    run.instance_error("RecordLifecycleActionHeartbeat", id, e);
                    return;
                }
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
    }
}
