//! What protects a scale-in, kept on the group before any instance is terminated: the
//! termination lifecycle hook (without it a termination is immediate), the `vespene_worker` /
//! `vespene_pool` tags (on the group, propagated, and on members launched before), and
//! `OldestInstance` first in the termination policies (for the terminations AWS starts itself).

use crate::client::{GroupInfo, HookInfo, TERMINATING_TRANSITION};
use crate::policy::{missing_tags, wanted_termination_policies};
use crate::run::{Applier, Run};
use autoscaler_executor::ExecutorError;
use chrono::Duration as ChronoDuration;

fn list(items: &[String]) -> String {
    format!("[{}]", items.join(","))
}

impl Applier {
    pub(crate) async fn ensure_termination_policy(
        &self,
        run: &mut Run<'_>,
        group: &GroupInfo,
    ) -> Result<(), ExecutorError> {
        let Some(wanted) = wanted_termination_policies(&group.termination_policies) else {
            return Ok(());
        };
        if !run.dry_run() {
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

    pub(crate) async fn ensure_tags(
        &self,
        run: &mut Run<'_>,
        group: &GroupInfo,
    ) -> Result<(), ExecutorError> {
        let missing = missing_tags(&group.tags, &run.pool.name);
        if missing.is_empty() {
            return Ok(());
        }
        if !run.dry_run() {
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
            if !run.dry_run() {
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

    pub(crate) fn wanted_hook(&self) -> HookInfo {
        HookInfo {
            name: self.cfg.lifecycle_hook_name.clone(),
            transition: TERMINATING_TRANSITION.to_string(),
            heartbeat_timeout: Some(self.cfg.heartbeat_timeout_seconds),
            default_result: Some("CONTINUE".to_string()),
        }
    }

    pub(crate) async fn ensure_hook(&self, run: &mut Run<'_>) -> Result<(), ExecutorError> {
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
            if !run.dry_run() {
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
            if run.dry_run() {
                return Ok(());
            }
        }
        self.hooks_checked
            .lock()
            .unwrap()
            .insert(run.group.to_string(), now);
        Ok(())
    }
}
