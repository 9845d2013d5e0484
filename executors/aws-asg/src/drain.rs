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
use crate::policy::{decide, drain_view, has_agent, Decision, DrainState};
use crate::run::{Applier, Run};
use autoscaler_executor::scale_in::Blocker;
use autoscaler_executor::{BusyWorker, ErrorKind, WorkerDirectory};
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
        // Without this cycle's warm-pool listing, an instance absent from `group` may still be
        // waiting there: its drain clock is kept, not restarted.
        let keep_unlisted = run.warm_unread;
        let states: Vec<(String, DrainState)> = {
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
        };
        if waiting.is_empty() {
            return 0;
        }
        let hook = self.cfg.lifecycle_hook_name.clone();

        let busy = match workers.busy_workers(run.pool).await {
            Ok(b) => Some(b),
            Err(e) => {
                run.error(
                    ErrorKind::Directory,
                    format!(
                        "{e}; {} instance(s) waiting on the termination hook kept waiting",
                        states.len()
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
        if let Some(Blocker::Unmatched { .. }) = view.as_ref().and_then(|v| v.blocker.as_ref()) {
            let b = view.as_ref().unwrap().blocker.as_ref().unwrap();
            run.error(
                ErrorKind::Held,
                format!(
                    "{b}; {} instance(s) waiting on the termination hook kept waiting",
                    states.len()
                ),
            );
            run.held_reported = true;
        }

        let mut still = 0;
        for (id, state) in &states {
            let agent = ec2.map(|e| has_agent(e.get(id))).unwrap_or(true);
            let matched: Option<BusyWorker> = match &view {
                Some(v) => v.busy.get(id).cloned().flatten(),
                None => Some(BusyWorker {
                    hostname: Some("(unknown: busy workers or instance names unavailable)".into()),
                    build_id: 0,
                    started: None,
                }),
            };
            match decide(&self.cfg, now, state, agent, matched.as_ref()) {
                Decision::CompleteIdle => {
                    if !self
                        .complete(run, &hook, id, "no RUNNING build on it")
                        .await
                    {
                        still += 1;
                    }
                }
                Decision::CompleteDrainTimeout { build_id, worker } => {
                    tracing::warn!(pool = %run.pool.name, group = %run.group, instance = %id,
                        build = build_id, worker = %worker,
                        "build {build_id} still RUNNING on worker {worker} after max_drain_seconds={}: releasing the instance",
                        self.cfg.max_drain_seconds);
                    let why = format!(
                        "max_drain_seconds={} reached with build {build_id} still RUNNING on {worker}",
                        self.cfg.max_drain_seconds
                    );
                    if !self.complete(run, &hook, id, &why).await {
                        still += 1;
                    }
                }
                Decision::Heartbeat { build_id, worker } => {
                    still += 1;
                    let why = format!("build {build_id} RUNNING on worker {worker}");
                    self.heartbeat(run, &hook, id, now, &why).await;
                }
                Decision::Wait { build_id, worker } => {
                    still += 1;
                    tracing::debug!(pool = %run.pool.name, group = %run.group, instance = %id,
                        "build {build_id} RUNNING on worker {worker}; heartbeat still fresh");
                }
                Decision::LeaveToAgent => {
                    still += 1;
                    tracing::debug!(pool = %run.pool.name, group = %run.group, instance = %id,
                        "drain agent instance with nothing RUNNING: its agent completes the lifecycle action");
                }
                Decision::AgentOverdue { build_id, worker } => {
                    still += 1;
                    tracing::warn!(pool = %run.pool.name, group = %run.group, instance = %id,
                        build = build_id, worker = %worker,
                        "build {build_id} still RUNNING on worker {worker} of a drain agent instance after max_drain_seconds={}: no more heartbeats from the autoscaler",
                        self.cfg.max_drain_seconds);
                }
            }
        }
        still
    }

    /// `CompleteLifecycleAction CONTINUE`; true when the instance is on its way out (completed,
    /// or no longer waiting on the hook), false when the call failed (recorded in `run`).
    async fn complete(&self, run: &mut Run<'_>, hook: &str, id: &str, why: &str) -> bool {
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
