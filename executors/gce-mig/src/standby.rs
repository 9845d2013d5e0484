//! Carrying out standby pools with Compute's own calls; the decision is
//! [`autoscaler_executor::standby`]'s.
//!
//! - Scale-in: of the leavers the shared chooser picked, the idle and drained ones fill the
//!   pool's standby target through one `suspendInstances` (or `stopInstances`, per
//!   `standby_action`); the rest are deleted as before. Compute lowers `targetSize` and raises
//!   `targetSuspendedSize` / `targetStoppedSize` itself.
//! - Scale-out: standby members are brought back first, suspended ones (`resumeInstances`)
//!   before stopped ones (`startInstances`), and only the rest is created with a resize.
//!
//! The standby sizes are never written: no call the executor makes sets them, so a pool the
//! group or an operator keeps is not reset. A standby target of 0 leaves all of this out.

use crate::apply::Applier;
use crate::candidates::{Member, DRAIN_KEY};
use crate::client::StandbyCall;
use crate::config::StandbyAction;
use crate::target::GroupPath;
use autoscaler_executor::standby::split_scale_out;
use autoscaler_executor::{ActionLog, ExecutorError, Outcome, WorkerPool};
use tracing::info;

/// Whether a member is in standby or on its way there (it counts toward the target).
pub(crate) fn in_standby(m: &Member) -> bool {
    let action = m.managed.current_action.as_str();
    if matches!(action, "DELETING" | "ABANDONING") {
        return false;
    }
    matches!(action, "SUSPENDING" | "STOPPING")
        || matches!(
            m.managed.instance_status.as_deref(),
            Some("SUSPENDED" | "SUSPENDING" | "TERMINATED" | "STOPPED" | "STOPPING")
        )
}

/// The call that brings a settled standby member back, if it can be brought back now.
pub(crate) fn back_call(m: &Member) -> Option<StandbyCall> {
    if m.managed.current_action != "NONE" {
        return None;
    }
    match m.managed.instance_status.as_deref() {
        Some("SUSPENDED") => Some(StandbyCall::Resume),
        Some("TERMINATED" | "STOPPED") => Some(StandbyCall::Start),
        _ => None,
    }
}

impl StandbyAction {
    fn call(&self) -> StandbyCall {
        match self {
            StandbyAction::Suspend => StandbyCall::Suspend,
            StandbyAction::Stop => StandbyCall::Stop,
        }
    }
}

impl Applier {
    /// One standby call for `members` (request id, operation wait); returns the request id.
    pub(crate) async fn standby_call(
        &self,
        pool: &str,
        group: &GroupPath,
        call: StandbyCall,
        members: &[&Member],
    ) -> Result<String, ExecutorError> {
        let urls: Vec<String> = members.iter().map(|m| m.managed.url.clone()).collect();
        // One id per intent, reused by every retry: a lost response is not applied twice.
        let request_id = uuid::Uuid::new_v4().to_string();
        let op = self
            .retry(pool, call.method(), group, || {
                self.api()
                    .standby_instances(group, call, &urls, &request_id)
            })
            .await
            .map_err(|e| {
                self.api_error(
                    pool,
                    &format!("{} of {} instance(s) of", call.method(), urls.len()),
                    group,
                    e,
                )
            })?;
        self.wait(pool, group, call.method(), op).await?;
        Ok(request_id)
    }

    /// Puts `members` (drained or idle leavers) into standby the configured way; the action
    /// line on success.
    pub(crate) async fn to_standby(
        &self,
        pool: &str,
        group: &GroupPath,
        members: &[&Member],
        dry_run: bool,
    ) -> Result<Option<String>, ExecutorError> {
        if members.is_empty() {
            return Ok(None);
        }
        let call = self.cfg().standby_action.call();
        let line = format!(
            "{} {group} [{}] (idle or drained, kept in standby for the pool's standby target)",
            call.method(),
            names(members)
        );
        let mut log = ActionLog::new(dry_run);
        if log.would(&line) {
            return Ok(log.into_lines().pop());
        }
        let rid = self.standby_call(pool, group, call, members).await?;
        info!(pool, group = %group, instances = %names(members), call = call.method(), "put instances in standby");
        Ok(Some(format!("{line} (requestId {rid})")))
    }

    /// Grows the group from `current` to `want` running instances: standby members first
    /// (suspended before stopped, oldest first), a resize for the rest. `members` is this
    /// cycle's listing.
    pub(crate) async fn grow(
        &self,
        pool: &WorkerPool,
        group: &GroupPath,
        members: &[Member],
        current: u32,
        want: u32,
        dry_run: bool,
    ) -> Result<Outcome, ExecutorError> {
        let wpi = self.cfg().workers_per_instance;
        let mut ready: Vec<(&Member, StandbyCall)> = members
            .iter()
            .filter_map(|m| back_call(m).map(|c| (m, c)))
            .collect();
        ready.sort_by_key(|(m, c)| {
            (
                *c != StandbyCall::Resume,
                m.candidate.created,
                m.candidate.id.clone(),
            )
        });
        let split = split_scale_out(want.saturating_sub(current), ready.len() as u32);
        ready.truncate(split.resume as usize);
        let mut log = ActionLog::new(dry_run);
        let mut size = current;
        for call in [StandbyCall::Resume, StandbyCall::Start] {
            let chosen: Vec<&Member> = ready
                .iter()
                .filter(|(_, c)| *c == call)
                .map(|(m, _)| *m)
                .collect();
            if chosen.is_empty() {
                continue;
            }
            let line = format!(
                "{} {group} [{}] (standby first: target size {size} -> {})",
                call.method(),
                names(&chosen),
                size + chosen.len() as u32
            );
            if log.would(&line) {
                size += chosen.len() as u32;
                continue;
            }
            // A drained instance went to standby with its drain request still set: call it
            // off first, so its agent starts workers again when it comes back.
            for m in &chosen {
                let asked = m
                    .instance
                    .as_ref()
                    .and_then(|i| i.metadata_value(DRAIN_KEY))
                    .is_some();
                if asked {
                    self.set_drain(&pool.name, group, m, false).await?;
                }
            }
            let rid = self.standby_call(&pool.name, group, call, &chosen).await?;
            info!(pool = %pool.name, group = %group, instances = %names(&chosen), call = call.method(), "brought standby instances back");
            log.did(format!("{line} (requestId {rid})"));
            size += chosen.len() as u32;
        }
        if split.create > 0 {
            let out = self.scale_out(pool, group, size, want, dry_run).await?;
            log.extend(out.actions);
        }
        Ok(Outcome {
            actions: log.into_lines(),
            applied: Some(if dry_run { current } else { want } * wpi),
            revisit: false,
        })
    }
}

fn names(members: &[&Member]) -> String {
    members
        .iter()
        .map(|m| m.managed.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
