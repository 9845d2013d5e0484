//! What a group does on its own after Compute accepted a call, in Compute's wire format:
//! creations that keep failing (`lastAttempt.errors`, `listErrors`), a regional group with
//! proactive redistribution deleting instances of its own choice, and an attached GCE
//! autoscaler that refuses resizes and refills deletions.

use super::*;

/// A GCE autoscaler attached to a group: it owns the size, so a resize is refused (412) and
/// the group is refilled to its recommendation after instances are deleted.
#[derive(Clone, Debug)]
pub(super) struct Autoscaler {
    pub(super) url: String,
    pub(super) recommended: u32,
}

/// Launches that fail: of the instances created from now on, `allow` more succeed and the
/// rest stay `CREATING` with this error in `lastAttempt` and in `listErrors`.
#[derive(Clone, Debug)]
pub(super) struct LaunchFailureSpec {
    pub(super) code: String,
    pub(super) message: String,
    pub(super) allow: u32,
}

/// Which standby count a member with this `status` belongs to, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Standby {
    Stopped,
    Suspended,
}

pub(super) fn standby_of(status: &str) -> Option<Standby> {
    match status {
        "STOPPED" | "STOPPING" | "TERMINATED" => Some(Standby::Stopped),
        "SUSPENDED" | "SUSPENDING" => Some(Standby::Suspended),
        _ => None,
    }
}

/// `currentActions` key of a `currentAction` (`CREATING_WITHOUT_RETRIES` →
/// `creatingWithoutRetries`).
pub(super) fn action_key(action: &str) -> String {
    let mut out = String::new();
    for (i, part) in action.to_ascii_lowercase().split('_').enumerate() {
        if i == 0 {
            out.push_str(part);
        } else {
            let mut c = part.chars();
            if let Some(f) = c.next() {
                out.push(f.to_ascii_uppercase());
                out.push_str(c.as_str());
            }
        }
    }
    out
}

/// What Compute answers a resize of an autoscaled group with (HTTP 412).
pub(super) fn autoscaled(path: &GroupPath) -> ComputeError {
    let scope = match path.location {
        Location::Zone(_) => "zonal",
        Location::Region(_) => "regional",
    };
    err(
        412,
        "conditionNotMet",
        format!(
            "Resizing of autoscaled {scope} managed instance groups is not allowed. If you want to \
             manually adjust target size remove the autoscaler or set autoscaling policy mode to OFF."
        ),
    )
}

impl DoubleState {
    /// The `lastAttempt` errors of an instance the group starts creating now: none, or the
    /// group's launch failure (recorded in `listErrors` too) once its allowance is used up.
    pub(super) fn launch_attempt(
        &mut self,
        g_key: &str,
        key: &InstKey,
        at: &str,
    ) -> Vec<(String, String)> {
        let g = self.groups.get_mut(g_key).unwrap();
        let Some(f) = g.launch_failure.as_mut() else {
            return Vec::new();
        };
        if f.allow > 0 {
            f.allow -= 1;
            return Vec::new();
        }
        let (code, message) = (f.code.clone(), f.message.clone());
        g.push_error(key, &code, &message, at);
        vec![(code, message)]
    }

    /// After instances left a group: an autoscaler refills it to its recommendation, and a
    /// regional group with proactive redistribution evens out its zones by deleting instances
    /// of its own choice (the first member of the fullest zone) and creating new ones.
    pub(super) fn after_delete(&mut self, g_key: &str) {
        let Some(g) = self.groups.get(g_key) else {
            return;
        };
        if let Some(a) = g.autoscaler.clone() {
            let missing = a.recommended.saturating_sub(g.target_size);
            let zones = g.zones.clone();
            for n in 0..missing as usize {
                self.create_running(g_key, &zones[n % zones.len()]);
            }
            self.groups.get_mut(g_key).unwrap().target_size += missing;
        }
        let g = &self.groups[g_key];
        let proactive = matches!(g.path.location, Location::Region(_))
            && g.redistribution.as_deref().is_none_or(|r| r == "PROACTIVE");
        if !proactive {
            return;
        }
        loop {
            let g = &self.groups[g_key];
            let live = |z: &String| -> Vec<InstKey> {
                g.members
                    .iter()
                    .filter(|k| &k.1 == z)
                    .filter(|k| {
                        self.instances.get(*k).is_some_and(|i| {
                            i.action != "DELETING" && standby_of(&i.status).is_none()
                        })
                    })
                    .cloned()
                    .collect()
            };
            let counts: Vec<(String, Vec<InstKey>)> =
                g.zones.iter().map(|z| (z.clone(), live(z))).collect();
            let (Some(full), Some(empty)) = (
                counts.iter().max_by_key(|(_, m)| m.len()),
                counts.iter().min_by_key(|(_, m)| m.len()),
            ) else {
                return;
            };
            if full.1.len() < empty.1.len() + 2 {
                return;
            }
            let victim = full.1[0].clone();
            let zone = empty.0.clone();
            self.deletion_started(&victim);
            self.instances.remove(&victim);
            self.groups
                .get_mut(g_key)
                .unwrap()
                .members
                .retain(|m| m != &victim);
            self.create_running(g_key, &zone);
        }
    }

    /// A member the group created on its own (a refill, a rebalance), running at once.
    fn create_running(&mut self, g_key: &str, zone: &str) {
        let id = self.next_id();
        let g = self.groups.get_mut(g_key).unwrap();
        let key = (
            g.path.project.clone(),
            zone.to_string(),
            format!("{}-{}", g.base, suffix(id)),
        );
        g.members.push(key.clone());
        let instance = Instance {
            id,
            created: now_rfc3339(),
            labels: g.template_labels.clone(),
            status: "RUNNING".into(),
            action: "NONE".into(),
            metadata: initial_metadata(Some(g.path.created_by()), &g.template_metadata),
            ..Instance::default()
        };
        self.instances.insert(key, instance);
    }

    /// `GET …/listErrors`: the group's errors, oldest first, paginated.
    pub(super) fn list_errors(
        &self,
        g_key: &str,
        query: &[(String, String)],
    ) -> Result<Value, ComputeError> {
        let items = self.groups[g_key].errors.clone();
        let (page, next) = paginate(items, query, self.page_size)?;
        let mut v = json!({ "items": page });
        if let Some(t) = next {
            v["nextPageToken"] = json!(t);
        }
        Ok(v)
    }
}

impl Group {
    /// Records a failed creation of `key` in `listErrors`, as Compute does for each attempt.
    pub(super) fn push_error(&mut self, key: &InstKey, code: &str, message: &str, at: &str) {
        let (p, z, n) = key;
        self.errors.push(json!({
            "error": {"code": code, "message": message},
            "instanceActionDetails": {
                "action": "CREATING",
                "instance": format!("{API}/projects/{p}/zones/{z}/instances/{n}"),
                "version": {"instanceTemplate": format!("{API}/projects/{p}/global/instanceTemplates/{}-template", self.base)},
            },
            "timestamp": at,
        }));
    }
}

impl ComputeDouble {
    /// Sets `updatePolicy.instanceRedistributionType` (`None`: absent, which Compute reads as
    /// `PROACTIVE` for a regional group, and the double does too).
    pub fn set_redistribution(&self, path: &str, value: Option<&str>) {
        let mut st = self.lock();
        st.groups
            .get_mut(path)
            .expect("group added first")
            .redistribution = value.map(Into::into);
    }

    /// Sets a regional group's `distributionPolicy.targetShape` (`None`: absent).
    pub fn set_target_shape(&self, path: &str, value: Option<&str>) {
        let mut st = self.lock();
        st.groups
            .get_mut(path)
            .expect("group added first")
            .target_shape = value.map(Into::into);
    }

    /// Attaches a GCE autoscaler named `name` that recommends the group's present target
    /// size: `status.autoscaler` names it, a resize answers 412, and the group is refilled to
    /// that size after instances are deleted.
    pub fn attach_autoscaler(&self, path: &str, name: &str) {
        let mut st = self.lock();
        let g = st.groups.get_mut(path).expect("group added first");
        let p = &g.path.project;
        let url = match &g.path.location {
            Location::Zone(z) => format!("{API}/projects/{p}/zones/{z}/autoscalers/{name}"),
            Location::Region(r) => format!("{API}/projects/{p}/regions/{r}/autoscalers/{name}"),
        };
        g.autoscaler = Some(Autoscaler {
            url,
            recommended: g.target_size,
        });
    }

    /// From now on, of the instances the group creates, `allow` more succeed and the rest stay
    /// `CREATING` with `code` / `message` in `lastAttempt.errors` and in `listErrors`: a quota
    /// (`QUOTA_EXCEEDED`) or a stockout (`ZONE_RESOURCE_POOL_EXHAUSTED`). The resize itself
    /// still ends DONE without error, as Compute's does.
    pub fn fail_launches(&self, path: &str, code: &str, message: &str, allow: u32) {
        let mut st = self.lock();
        st.groups
            .get_mut(path)
            .expect("group added first")
            .launch_failure = Some(LaunchFailureSpec {
            code: code.into(),
            message: message.into(),
            allow,
        });
    }

    /// The cause is gone (quota raised, capacity back): the group's next retry creates every
    /// stuck instance, and new creations succeed.
    pub fn clear_launch_failures(&self, path: &str) {
        let mut st = self.lock();
        let st = &mut *st;
        let g = st.groups.get_mut(path).expect("group added first");
        g.launch_failure = None;
        for k in &g.members {
            if let Some(i) = st.instances.get_mut(k) {
                if !i.last_attempt.is_empty() {
                    i.last_attempt.clear();
                    i.action = "NONE".into();
                    i.status = "RUNNING".into();
                }
            }
        }
    }
}
