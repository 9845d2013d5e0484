//! The four standby calls of a group, as Compute answers them and as the group then behaves:
//! `suspendInstances` (RUNNING → SUSPENDING → SUSPENDED), `stopInstances` (RUNNING →
//! STOPPING → TERMINATED), `resumeInstances` (SUSPENDED → STAGING → RUNNING, `currentAction`
//! RESUMING) and `startInstances` (TERMINATED → STAGING → RUNNING, `currentAction` STARTING).
//! The sizes move when the call is accepted, as the API reference says: suspend and stop take
//! `targetSize` down and the standby size up by the number of instances, resume and start the
//! other way round. The operation is DONE once scheduled (after the double's polls), which is
//! when the instances reach their new state.

use super::*;

impl DoubleState {
    /// `POST …/{suspend,resume,stop,start}Instances?requestId=R` with `{"instances": [URL…]}`.
    pub(super) fn standby_call(
        &mut self,
        g_key: &str,
        method: &str,
        body: &Value,
        request_id: Option<&str>,
    ) -> Result<Value, ComputeError> {
        if let Some(op) = self.replayed(g_key, request_id) {
            return Ok(op);
        }
        let urls = instance_urls(body)?;
        // What the instance must be now, what it goes through, and where it ends.
        let (from, action, passing, end): (&[&str], &str, &str, &str) = match method {
            "suspendInstances" => (&["RUNNING"], "SUSPENDING", "SUSPENDING", "SUSPENDED"),
            "stopInstances" => (&["RUNNING"], "STOPPING", "STOPPING", "TERMINATED"),
            "resumeInstances" => (&["SUSPENDED"], "RESUMING", "STAGING", "RUNNING"),
            "startInstances" => (&["TERMINATED", "STOPPED"], "STARTING", "STAGING", "RUNNING"),
            _ => unreachable!("routed methods only"),
        };
        let g = &self.groups[g_key];
        let mut keys = Vec::new();
        for u in &urls {
            let name = last_segment(u).to_string();
            let zone = zone_of_url(u).unwrap_or_else(|| g.zones[0].clone());
            let key = (g.path.project.clone(), zone, name);
            let ok = g.members.contains(&key)
                && self
                    .instances
                    .get(&key)
                    .is_some_and(|i| i.action == "NONE" && from.contains(&i.status.as_str()));
            if !ok {
                return Err(err(
                    400,
                    "invalid",
                    format!(
                        "Invalid value for field 'resource.instances': '{u}'. {method} accepts only \
                         instances of the group in state {}.",
                        from.join(" or ")
                    ),
                ));
            }
            keys.push(key);
        }
        let op_type = format!("compute.instanceGroupManagers.{method}");
        if let Some(f) = self.op_failures.pop_front() {
            return Ok(self.new_operation(g_key, &op_type, request_id, Vec::new(), Some(f)));
        }
        self.mutations += 1;
        for k in &keys {
            let i = self.instances.get_mut(k).unwrap();
            i.action = action.into();
            i.status = passing.into();
        }
        let n = keys.len() as u32;
        let g = self.groups.get_mut(g_key).unwrap();
        match method {
            "suspendInstances" => {
                g.target_size = g.target_size.saturating_sub(n);
                g.target_suspended_size += n;
            }
            "stopInstances" => {
                g.target_size = g.target_size.saturating_sub(n);
                g.target_stopped_size += n;
            }
            "resumeInstances" => {
                g.target_size += n;
                g.target_suspended_size = g.target_suspended_size.saturating_sub(n);
            }
            _ => {
                g.target_size += n;
                g.target_stopped_size = g.target_stopped_size.saturating_sub(n);
            }
        }
        let effects = vec![Effect::FinishStandby(keys, end.to_string())];
        Ok(self.new_operation(g_key, &op_type, request_id, effects, None))
    }

    /// Called on the first page of each `listManagedInstances`: standby actions still under
    /// way after their operation move one listing closer to their end state.
    pub(super) fn settle_standby(&mut self, g_key: &str) {
        let keys = self.groups[g_key].members.clone();
        for k in keys {
            if let Some(i) = self.instances.get_mut(&k) {
                if let Some((left, status)) = i.settling.take() {
                    if left <= 1 {
                        i.action = "NONE".into();
                        i.status = status;
                    } else {
                        i.settling = Some((left - 1, status));
                    }
                }
            }
        }
    }

    /// The group's standby sizes, for tests: (`targetSuspendedSize`, `targetStoppedSize`).
    pub(super) fn standby_sizes(&self, g_key: &str) -> Option<(u32, u32)> {
        self.groups
            .get(g_key)
            .map(|g| (g.target_suspended_size, g.target_stopped_size))
    }
}
