//! The double's state: groups, instances, operations, injected faults; the group calls.

use super::*;

#[derive(Clone, Debug)]
pub(super) struct Fault {
    pub(super) method: String,
    pub(super) path_contains: String,
    pub(super) status: u16,
    pub(super) reason: String,
    pub(super) remaining: u32,
    pub(super) after_apply: bool,
}

#[derive(Clone, Debug)]
pub(super) struct Stall {
    pub(super) method: String,
    pub(super) path_contains: String,
    pub(super) remaining: u32,
    pub(super) delay: std::time::Duration,
}

#[derive(Clone, Debug)]
pub(super) struct OpFailure {
    pub(super) code: String,
    pub(super) message: String,
    pub(super) http_status: u16,
}

#[derive(Debug)]
pub(super) struct Group {
    pub(super) path: GroupPath,
    pub(super) id: u64,
    pub(super) base: String,
    pub(super) target_size: u32,
    pub(super) zones: Vec<String>,
    pub(super) members: Vec<InstKey>,
    pub(super) template_labels: Vec<(String, String)>,
    /// Metadata every instance the group creates gets (`enable-guest-attributes=TRUE`).
    pub(super) template_metadata: Vec<(String, String)>,
    pub(super) request_ids: HashMap<String, OpKey>,
    pub(super) next_zone: usize,
    /// Standby members: `targetSize` counts running instances only (Compute's standby pools).
    pub(super) target_stopped_size: u32,
    pub(super) target_suspended_size: u32,
    /// `standbyPolicy.mode`; `None`: absent (Compute's default, MANUAL).
    pub(super) standby_mode: Option<String>,
    /// A GCE autoscaler attached to the group (see [`Autoscaler`]).
    pub(super) autoscaler: Option<Autoscaler>,
    /// `updatePolicy.instanceRedistributionType`; `None`: absent (Compute's default, PROACTIVE).
    pub(super) redistribution: Option<String>,
    /// `distributionPolicy.targetShape` of a regional group; `None`: absent.
    pub(super) target_shape: Option<String>,
    /// Creations that fail from now on (a quota, a stockout).
    pub(super) launch_failure: Option<LaunchFailureSpec>,
    /// `listErrors` items, oldest first.
    pub(super) errors: Vec<Value>,
}

pub(super) type InstKey = (String, String, String); // project, zone, name
pub(super) type OpKey = (String, String); // "zones/z" or "regions/r" (with project prefix), op name

#[derive(Debug, Default)]
pub(super) struct Instance {
    pub(super) id: u64,
    pub(super) created: String,
    pub(super) labels: Vec<(String, String)>,
    pub(super) status: String,
    pub(super) action: String,
    /// When its delete operation was inserted, while it is being deleted.
    pub(super) deleting_since: Option<String>,
    /// The `hostname` field, when the instance was given a custom one.
    pub(super) hostname: Option<String>,
    /// Metadata items in order (`created-by` first, as Compute writes it for group members).
    pub(super) metadata: Vec<(String, String)>,
    /// Bumped by every applied `setMetadata`; sent base64-encoded as `metadata.fingerprint`.
    pub(super) fingerprint: u64,
    /// When each metadata item got its current value, for tests timing a drain.
    pub(super) metadata_since: BTreeMap<String, std::time::Instant>,
    /// Guest attributes the guest wrote, by `namespace/key`.
    pub(super) guest: BTreeMap<String, String>,
    /// `lastAttempt.errors.errors[]` (code, message) of a creation that keeps failing.
    pub(super) last_attempt: Vec<(String, String)>,
    /// A standby call's action still under way after its operation is DONE: listings of the
    /// group left before the instance reaches this status.
    pub(super) settling: Option<(u32, String)>,
}

/// Metadata items of a new instance: `created-by` (when known) and then `extra`.
pub(super) fn initial_metadata(
    created_by: Option<String>,
    extra: &[(String, String)],
) -> Vec<(String, String)> {
    created_by
        .map(|c| ("created-by".to_string(), c))
        .into_iter()
        .chain(extra.iter().cloned())
        .collect()
}

/// Calls a test's hook with every instance the moment its deletion starts.
#[derive(Clone)]
pub(super) struct DeleteHook(pub(super) Arc<dyn Fn(&DeletedInstance) + Send + Sync>);

impl std::fmt::Debug for DeleteHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeleteHook")
    }
}

#[derive(Debug)]
pub(super) enum Effect {
    FinishCreate(Vec<InstKey>),
    FinishDelete(String, Vec<InstKey>),
    /// `setMetadata`: the instance's new items.
    SetMetadata(InstKey, Vec<(String, String)>),
    /// A standby call's instances reach their new `status` (SUSPENDED, TERMINATED, RUNNING).
    FinishStandby(Vec<InstKey>, String),
}

#[derive(Debug)]
pub(super) struct Op {
    pub(super) json: Value,
    pub(super) polls_left: u32,
    pub(super) failure: Option<OpFailure>,
    pub(super) effects: Vec<Effect>,
    pub(super) done: bool,
}

#[derive(Debug)]
pub(super) struct DoubleState {
    pub(super) groups: BTreeMap<String, Group>,
    pub(super) instances: BTreeMap<InstKey, Instance>,
    pub(super) operations: HashMap<OpKey, Op>,
    pub(super) requests: Vec<RecordedRequest>,
    pub(super) faults: Vec<Fault>,
    pub(super) stalls: Vec<Stall>,
    pub(super) op_failures: VecDeque<OpFailure>,
    pub(super) page_size: usize,
    pub(super) op_polls: u32,
    /// Listings a standby action stays under way after its operation is DONE (default 0).
    pub(super) standby_settle: u32,
    pub(super) next_id: u64,
    pub(super) mutations: u32,
    /// Request ids of instance calls (`setMetadata`), per instance.
    pub(super) instance_request_ids: HashMap<String, OpKey>,
    pub(super) on_delete: Option<DeleteHook>,
}

impl Default for DoubleState {
    fn default() -> Self {
        DoubleState {
            groups: BTreeMap::new(),
            instances: BTreeMap::new(),
            operations: HashMap::new(),
            requests: Vec::new(),
            faults: Vec::new(),
            stalls: Vec::new(),
            op_failures: VecDeque::new(),
            page_size: 2,
            op_polls: 1,
            standby_settle: 0,
            next_id: 1_000_000_000_000,
            mutations: 0,
            instance_request_ids: HashMap::new(),
            on_delete: None,
        }
    }
}

impl DoubleState {
    pub(super) fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub(super) fn take_stall(&mut self, method: &str, path: &str) -> Option<std::time::Duration> {
        let s = self
            .stalls
            .iter_mut()
            .find(|s| s.remaining > 0 && s.method == method && path.contains(&s.path_contains))?;
        s.remaining -= 1;
        Some(s.delay)
    }

    pub(super) fn take_fault(
        &mut self,
        method: &str,
        path: &str,
        after_apply: bool,
    ) -> Option<Fault> {
        let f = self.faults.iter_mut().find(|f| {
            f.remaining > 0
                && f.after_apply == after_apply
                && f.method == method
                && path.contains(&f.path_contains)
        })?;
        f.remaining -= 1;
        Some(f.clone())
    }

    pub(super) fn group_json(&self, g: &Group) -> Value {
        let mut actions: BTreeMap<&str, u32> = [
            "abandoning",
            "creating",
            "creatingWithoutRetries",
            "deleting",
            "none",
            "recreating",
            "refreshing",
            "restarting",
            "resuming",
            "starting",
            "stopping",
            "suspending",
            "verifying",
        ]
        .into_iter()
        .map(|k| (k, 0))
        .collect();
        for k in &g.members {
            if let Some(i) = self.instances.get(k) {
                let key = action_key(&i.action);
                if let Some(n) = actions.get_mut(key.as_str()) {
                    *n += 1;
                }
            }
        }
        let stable = actions.iter().all(|(k, v)| *k == "none" || *v == 0);
        let p = &g.path.project;
        let mut v = json!({
            "kind": "compute#instanceGroupManager",
            "id": g.id.to_string(),
            "creationTimestamp": "2024-01-01T00:00:00.000-08:00",
            "name": g.path.name,
            "instanceTemplate": format!("{API}/projects/{p}/global/instanceTemplates/{}-template", g.base),
            "baseInstanceName": g.base,
            "fingerprint": "9CKqcKOpYx8=",
            "currentActions": actions,
            "status": {"isStable": stable, "versionTarget": {"isReached": true}},
            "targetSize": g.target_size,
            "targetStoppedSize": g.target_stopped_size,
            "targetSuspendedSize": g.target_suspended_size,
            "selfLink": format!("{API}/{}", g.path),
            "updatePolicy": {"type": "OPPORTUNISTIC"},
        });
        if let Some(a) = &g.autoscaler {
            v["status"]["autoscaler"] = json!(a.url);
        }
        if let Some(r) = &g.redistribution {
            v["updatePolicy"]["instanceRedistributionType"] = json!(r);
        }
        if let Some(m) = &g.standby_mode {
            v["standbyPolicy"] = json!({"mode": m, "initialDelaySec": 0});
        }
        match &g.path.location {
            Location::Zone(z) => {
                v["zone"] = json!(format!("{API}/projects/{p}/zones/{z}"));
                v["instanceGroup"] = json!(format!(
                    "{API}/projects/{p}/zones/{z}/instanceGroups/{}",
                    g.path.name
                ));
            }
            Location::Region(r) => {
                v["region"] = json!(format!("{API}/projects/{p}/regions/{r}"));
                v["instanceGroup"] = json!(format!(
                    "{API}/projects/{p}/regions/{r}/instanceGroups/{}",
                    g.path.name
                ));
                v["distributionPolicy"] = json!({
                    "zones": g.zones.iter().map(|z| json!({"zone": format!("{API}/projects/{p}/zones/{z}")})).collect::<Vec<_>>(),
                });
                if let Some(t) = &g.target_shape {
                    v["distributionPolicy"]["targetShape"] = json!(t);
                }
            }
        }
        v
    }

    pub(super) fn new_operation(
        &mut self,
        g_key: &str,
        op_type: &str,
        request_id: Option<&str>,
        effects: Vec<Effect>,
        failure: Option<OpFailure>,
    ) -> Value {
        let id = self.next_id();
        let g = self.groups.get(g_key).unwrap();
        let p = g.path.project.clone();
        let name = format!("operation-{id}-{:x}", id.wrapping_mul(0x9e37_79b9));
        let (scope, loc_field, loc_url) = match &g.path.location {
            Location::Zone(z) => (
                format!("projects/{p}/zones/{z}"),
                "zone",
                format!("{API}/projects/{p}/zones/{z}"),
            ),
            Location::Region(r) => (
                format!("projects/{p}/regions/{r}"),
                "region",
                format!("{API}/projects/{p}/regions/{r}"),
            ),
        };
        let now = now_rfc3339();
        let mut json = json!({
            "kind": "compute#operation",
            "id": id.to_string(),
            "name": name,
            "operationType": op_type,
            "targetLink": format!("{API}/{}", g.path),
            "targetId": g.id.to_string(),
            "status": "RUNNING",
            "user": "vespene-autoscaler@example.iam.gserviceaccount.com",
            "progress": 0,
            "insertTime": now,
            "startTime": now,
            "selfLink": format!("{API}/{scope}/operations/{name}"),
        });
        json[loc_field] = json!(loc_url);
        if let Some(r) = request_id {
            json["clientOperationId"] = json!(r);
        }
        let key = (scope, name);
        let polls = self.op_polls;
        self.operations.insert(
            key.clone(),
            Op {
                json,
                polls_left: polls,
                failure,
                effects,
                done: false,
            },
        );
        if let Some(r) = request_id {
            self.groups
                .get_mut(g_key)
                .unwrap()
                .request_ids
                .insert(r.to_string(), key.clone());
        }
        if polls == 0 {
            self.finish_operation(&key);
        }
        self.operations[&key].json.clone()
    }

    pub(super) fn finish_operation(&mut self, key: &OpKey) {
        let Some(op) = self.operations.get_mut(key) else {
            return;
        };
        if op.done {
            return;
        }
        op.done = true;
        op.json["status"] = json!("DONE");
        op.json["progress"] = json!(100);
        op.json["endTime"] = json!(now_rfc3339());
        if let Some(f) = &op.failure {
            op.json["httpErrorStatusCode"] = json!(f.http_status);
            op.json["httpErrorMessage"] = json!(http_reason(f.http_status));
            op.json["error"] = json!({"errors": [{"code": f.code, "message": f.message}]});
        }
        let effects = std::mem::take(&mut op.effects);
        for e in effects {
            match e {
                Effect::FinishCreate(keys) => {
                    for k in keys {
                        // A failing creation stays CREATING: the group retries it.
                        if let Some(i) = self.instances.get_mut(&k) {
                            if i.last_attempt.is_empty() {
                                i.action = "NONE".into();
                                i.status = "RUNNING".into();
                            }
                        }
                    }
                }
                Effect::SetMetadata(key, items) => self.apply_metadata(&key, items),
                Effect::FinishStandby(keys, status) => {
                    let settle = self.standby_settle;
                    for k in keys {
                        if let Some(i) = self.instances.get_mut(&k) {
                            if settle > 0 {
                                i.settling = Some((settle, status.clone()));
                            } else {
                                i.action = "NONE".into();
                                i.status = status.clone();
                            }
                        }
                    }
                }
                Effect::FinishDelete(g_key, keys) => {
                    for k in &keys {
                        self.instances.remove(k);
                    }
                    if let Some(g) = self.groups.get_mut(&g_key) {
                        g.members.retain(|m| !keys.contains(m));
                    }
                    self.after_delete(&g_key);
                }
            }
        }
    }

    /// The operation a group call with this `requestId` already made, if any: Compute
    /// answers a retried call with the first one's operation and does not apply it again.
    pub(super) fn replayed(&self, g_key: &str, request_id: Option<&str>) -> Option<Value> {
        let existing = self.groups[g_key].request_ids.get(request_id?)?;
        Some(self.operations[existing].json.clone())
    }

    pub(super) fn resize(
        &mut self,
        g_key: &str,
        size: u32,
        request_id: Option<&str>,
    ) -> Result<Value, ComputeError> {
        if let Some(op) = self.replayed(g_key, request_id) {
            return Ok(op);
        }
        if self.groups[g_key].autoscaler.is_some() {
            return Err(autoscaled(&self.groups[g_key].path));
        }
        if let Some(f) = self.op_failures.pop_front() {
            return Ok(self.new_operation(
                g_key,
                "compute.instanceGroupManagers.resize",
                request_id,
                Vec::new(),
                Some(f),
            ));
        }
        self.mutations += 1;
        let created = now_rfc3339();
        let mut new_keys = Vec::new();
        let mut deleting = Vec::new();
        let current = self.groups[g_key].target_size;
        let ids: Vec<u64> = (current..size.max(current))
            .map(|_| self.next_id())
            .collect();
        let g = self.groups.get_mut(g_key).unwrap();
        let current = g.target_size;
        if size > current {
            for id in &ids {
                let zone = g.zones[g.next_zone % g.zones.len()].clone();
                g.next_zone += 1;
                let name = format!("{}-{}", g.base, suffix(*id));
                let key = (g.path.project.clone(), zone, name);
                g.members.push(key.clone());
                new_keys.push((key, *id));
            }
        } else if size < current {
            // A real group picks its own victims; the double takes the newest. The executor
            // never shrinks this way, so a test seeing this has found a bug.
            let live: Vec<InstKey> = g
                .members
                .iter()
                .rev()
                .take((current - size) as usize)
                .cloned()
                .collect();
            deleting = live;
        }
        g.target_size = size;
        let labels = g.template_labels.clone();
        let metadata = initial_metadata(Some(g.path.created_by()), &g.template_metadata);
        for (key, id) in &new_keys {
            let last_attempt = self.launch_attempt(g_key, key, &created);
            self.instances.insert(
                key.clone(),
                Instance {
                    id: *id,
                    created: created.clone(),
                    labels: labels.clone(),
                    status: "PROVISIONING".into(),
                    action: "CREATING".into(),
                    metadata: metadata.clone(),
                    last_attempt,
                    ..Instance::default()
                },
            );
        }
        for k in &deleting {
            if let Some(i) = self.instances.get_mut(k) {
                i.action = "DELETING".into();
                i.deleting_since = Some(created.clone());
            }
            self.deletion_started(k);
        }
        let mut effects = vec![Effect::FinishCreate(
            new_keys.into_iter().map(|(k, _)| k).collect(),
        )];
        if !deleting.is_empty() {
            effects.push(Effect::FinishDelete(g_key.to_string(), deleting));
        }
        Ok(self.new_operation(
            g_key,
            "compute.instanceGroupManagers.resize",
            request_id,
            effects,
            None,
        ))
    }

    pub(super) fn delete_instances(
        &mut self,
        g_key: &str,
        body: &Value,
        request_id: Option<&str>,
    ) -> Result<Value, ComputeError> {
        if let Some(op) = self.replayed(g_key, request_id) {
            return Ok(op);
        }
        let urls = instance_urls(body)?;
        let skip = body
            .get("skipInstancesOnValidationError")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        let g = &self.groups[g_key];
        let mut keys = Vec::new();
        for u in &urls {
            let name = last_segment(u).to_string();
            let zone = zone_of_url(u).unwrap_or_else(|| g.zones[0].clone());
            let key = (g.path.project.clone(), zone, name.clone());
            let member = g.members.contains(&key)
                && self
                    .instances
                    .get(&key)
                    .is_some_and(|i| i.action != "DELETING");
            if member {
                keys.push(key);
            } else if !skip {
                return Err(err(
                    400,
                    "invalid",
                    format!("Invalid value for field 'resource.instances': '{u}'. The instance is not a member of the group or is already being deleted."),
                ));
            }
        }
        if let Some(f) = self.op_failures.pop_front() {
            return Ok(self.new_operation(
                g_key,
                "compute.instanceGroupManagers.deleteInstances",
                request_id,
                Vec::new(),
                Some(f),
            ));
        }
        self.mutations += 1;
        let now = now_rfc3339();
        let mut standby = Vec::new();
        for k in &keys {
            let i = self.instances.get_mut(k).unwrap();
            i.action = "DELETING".into();
            i.deleting_since = Some(now.clone());
            standby.push(standby_of(&i.status));
            self.deletion_started(k);
        }
        let g = self.groups.get_mut(g_key).unwrap();
        // Deleting a standby VM lowers its standby count, not the running target.
        for s in standby {
            let n = match s {
                None => &mut g.target_size,
                Some(Standby::Stopped) => &mut g.target_stopped_size,
                Some(Standby::Suspended) => &mut g.target_suspended_size,
            };
            *n = n.saturating_sub(1);
        }
        let effects = vec![Effect::FinishDelete(g_key.to_string(), keys)];
        Ok(self.new_operation(
            g_key,
            "compute.instanceGroupManagers.deleteInstances",
            request_id,
            effects,
            None,
        ))
    }
}

/// The `instances` URLs of a `{"instances": [URL…]}` body; Compute refuses an empty list.
pub(super) fn instance_urls(body: &Value) -> Result<Vec<String>, ComputeError> {
    let urls: Vec<String> = body
        .get("instances")
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|u| u.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if urls.is_empty() {
        return Err(err(
            400,
            "required",
            "Required field 'instances' not specified",
        ));
    }
    Ok(urls)
}
