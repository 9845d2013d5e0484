//! An in-process double of the Compute Engine REST routes the gce-mig executor calls.
//!
//! No GCE emulator exists, so the executor's tests (and the main package's end-to-end test of
//! the real binary) run the real SDK client against this server instead. It speaks Compute's
//! own JSON: camelCase fields, `uint64` ids as strings, RFC 3339 timestamps with an offset,
//! operations that go RUNNING → DONE (optionally with `error.errors[]`), Compute-style error
//! bodies (`error.code`, `error.errors[].reason`), `pageToken` pagination with a small page size,
//! and it ignores the `$alt` / `$apiVersion` parameters the SDK adds. Every request is recorded
//! so a test can count calls per cycle.
//!
//! Routes (zonal and regional alike, under `/compute/v1/projects/{project}/`):
//! `GET …/instanceGroupManagers/{name}`, `POST …/resize?size=N&requestId=R`,
//! `POST …/deleteInstances?requestId=R`, `POST …/listManagedInstances`,
//! `GET zones/{z}/instances?filter=…` (filters: `name = "…"` terms joined by OR, or
//! `labels.K = "V"` / `field != "V"` terms joined by AND or OR), `GET zones/{z}/instances/{name}`,
//! `GET zones/{z}/operations?filter=…` (the pending `delete` operation of every instance being
//! deleted, plus the zone's group operations), `GET …/operations/{op}`,
//! `POST …/operations/{op}/wait`.
//!
//! Instances carry what the audit reads: `networkInterfaces[0].networkIP`, metadata
//! `created-by` naming their group (by project *number*, as Compute does), and
//! `lastStartTimestamp` while RUNNING.
//!
//! Start it with [`ComputeDouble::start`]; point the executor at [`ComputeDouble::endpoint`]
//! (e.g. `AUTOSCALER_GCE_ENDPOINT`) with anonymous credentials.

use crate::target::{last_segment, zone_of_url, GroupPath, Location};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

const API: &str = "https://www.googleapis.com/compute/v1";

/// One request the double received, for assertions on what a cycle costs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRequest {
    /// `GET`, `POST`, …
    pub method: String,
    /// The URL path, e.g. `/compute/v1/projects/p/zones/z/instanceGroupManagers/g`.
    pub path: String,
    /// The decoded query parameters, in order.
    pub query: Vec<(String, String)>,
    /// The request body, if any.
    pub body: String,
}

impl RecordedRequest {
    /// The first value of query parameter `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// An instance to seed a group with, as if the group had created it earlier.
#[derive(Clone, Debug)]
pub struct InstanceSpec {
    name: String,
    zone: Option<String>,
    created: String,
    labels: Vec<(String, String)>,
    unlabelled: bool,
    action: String,
    status: String,
    deleting_since: Option<String>,
    created_by: Option<String>,
}

impl InstanceSpec {
    /// An instance named `name`, created at `created` (RFC 3339, e.g.
    /// `2024-05-01T09:00:00.000-07:00`), running, labelled like the group's template.
    pub fn new(name: &str, created: &str) -> Self {
        InstanceSpec {
            name: name.into(),
            zone: None,
            created: created.into(),
            labels: Vec::new(),
            unlabelled: false,
            action: "NONE".into(),
            status: "RUNNING".into(),
            deleting_since: None,
            created_by: None,
        }
    }

    /// Places it in `zone` (needed for regional groups; defaults to the group's first zone).
    pub fn zone(mut self, zone: &str) -> Self {
        self.zone = Some(zone.into());
        self
    }

    /// Gives it these labels instead of the group's template labels.
    pub fn labels(mut self, labels: &[(&str, &str)]) -> Self {
        self.labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self
    }

    /// Marks it as still being created (`currentAction: CREATING`, `status: PROVISIONING`).
    pub fn creating(mut self) -> Self {
        self.action = "CREATING".into();
        self.status = "PROVISIONING".into();
        self
    }

    /// Gives it no labels at all (not even the group template's), as an instance made from an
    /// old template or by hand would have.
    pub fn unlabelled(mut self) -> Self {
        self.labels.clear();
        self.unlabelled = true;
        self
    }

    /// Marks it as being deleted since `since` (RFC 3339): `currentAction: DELETING` and a
    /// pending `delete` zone operation inserted then (a drain that has not finished).
    pub fn deleting(mut self, since: &str) -> Self {
        self.action = "DELETING".into();
        self.deleting_since = Some(since.into());
        self
    }

    /// Sets the instance `status` (e.g. `STAGING`, `TERMINATED`).
    pub fn status(mut self, status: &str) -> Self {
        self.status = status.into();
        self
    }

    /// Sets metadata `created-by` (a group path) on an instance added outside any group: one
    /// that was abandoned by, or left over from, that group.
    pub fn created_by(mut self, group_path: &str) -> Self {
        self.created_by = Some(group_path.into());
        self
    }
}

#[derive(Clone, Debug)]
struct Fault {
    method: String,
    path_contains: String,
    status: u16,
    reason: String,
    remaining: u32,
    after_apply: bool,
}

#[derive(Clone, Debug)]
struct Stall {
    method: String,
    path_contains: String,
    remaining: u32,
    delay: std::time::Duration,
}

#[derive(Clone, Debug)]
struct OpFailure {
    code: String,
    message: String,
    http_status: u16,
}

#[derive(Debug)]
struct Group {
    path: GroupPath,
    id: u64,
    base: String,
    target_size: u32,
    zones: Vec<String>,
    members: Vec<InstKey>,
    template_labels: Vec<(String, String)>,
    request_ids: HashMap<String, OpKey>,
    next_zone: usize,
}

type InstKey = (String, String, String); // project, zone, name
type OpKey = (String, String); // "zones/z" or "regions/r" (with project prefix), op name

#[derive(Debug)]
struct Instance {
    id: u64,
    created: String,
    labels: Vec<(String, String)>,
    status: String,
    action: String,
    /// Metadata `created-by`, as Compute writes it (project by number).
    created_by: Option<String>,
    /// When its delete operation was inserted, while it is being deleted.
    deleting_since: Option<String>,
}

/// How Compute writes a group into an instance's `created-by`: the project by number.
fn created_by_of(path: &GroupPath) -> String {
    let number = 100_000_000_000u64
        + path
            .project
            .bytes()
            .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)))
            % 900_000_000_000;
    match &path.location {
        Location::Zone(z) => format!(
            "projects/{number}/zones/{z}/instanceGroupManagers/{}",
            path.name
        ),
        Location::Region(r) => format!(
            "projects/{number}/regions/{r}/instanceGroupManagers/{}",
            path.name
        ),
    }
}

#[derive(Debug)]
enum Effect {
    FinishCreate(Vec<InstKey>),
    FinishDelete(String, Vec<InstKey>),
}

#[derive(Debug)]
struct Op {
    json: Value,
    polls_left: u32,
    failure: Option<OpFailure>,
    effects: Vec<Effect>,
    done: bool,
}

#[derive(Debug)]
struct DoubleState {
    groups: BTreeMap<String, Group>,
    instances: BTreeMap<InstKey, Instance>,
    operations: HashMap<OpKey, Op>,
    requests: Vec<RecordedRequest>,
    faults: Vec<Fault>,
    stalls: Vec<Stall>,
    op_failures: VecDeque<OpFailure>,
    page_size: usize,
    op_polls: u32,
    next_id: u64,
    mutations: u32,
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
            next_id: 1_000_000_000_000,
            mutations: 0,
        }
    }
}

struct StopGuard(Mutex<Option<tokio::sync::oneshot::Sender<()>>>);

impl Drop for StopGuard {
    fn drop(&mut self) {
        if let Some(tx) = self.0.lock().unwrap().take() {
            let _ = tx.send(());
        }
    }
}

/// Handle to a running double; clones share it, and the server stops when the last is dropped.
#[derive(Clone)]
pub struct ComputeDouble {
    state: Arc<Mutex<DoubleState>>,
    addr: SocketAddr,
    _stop: Arc<StopGuard>,
}

impl ComputeDouble {
    /// Starts the double on `127.0.0.1:0` on its own thread and runtime, so it serves whether
    /// the caller is sync, on a current-thread runtime, or blocked waiting for a child process.
    pub fn start() -> (SocketAddr, ComputeDouble) {
        let state = Arc::new(Mutex::new(DoubleState::default()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server_state = state.clone();
        std::thread::Builder::new()
            .name("compute-double".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime for the Compute double");
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                        .await
                        .expect("bind 127.0.0.1:0 for the Compute double");
                    addr_tx.send(listener.local_addr().unwrap()).unwrap();
                    let app = Router::new().fallback(handle).with_state(server_state);
                    let stop = async {
                        let _ = stop_rx.await;
                    };
                    let _ = tokio::select! {
                        r = axum::serve(listener, app) => r,
                        _ = stop => Ok(()),
                    };
                });
            })
            .expect("spawn the Compute double's thread");
        let addr = addr_rx.recv().expect("the Compute double did not start");
        let double = ComputeDouble {
            state,
            addr,
            _stop: Arc::new(StopGuard(Mutex::new(Some(stop_tx)))),
        };
        (addr, double)
    }

    /// `http://127.0.0.1:PORT`, the value for `AUTOSCALER_GCE_ENDPOINT` or `endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DoubleState> {
        self.state.lock().unwrap()
    }

    /// Adds an empty group at `path` (`projects/P/zones/Z/instanceGroupManagers/N` or the
    /// regional form). Instances it creates get `template_labels`, like an instance template's.
    /// A regional group spreads over `{region}-a`, `-b`, `-c` unless [`Self::set_zones`] says otherwise.
    pub fn add_group(&self, path: &str, template_labels: &[(&str, &str)]) {
        let gp = GroupPath::parse(path, None).expect("a full group path");
        let zones = match &gp.location {
            Location::Zone(z) => vec![z.clone()],
            Location::Region(r) => vec![format!("{r}-a"), format!("{r}-b"), format!("{r}-c")],
        };
        let mut st = self.lock();
        let id = st.next_id();
        st.groups.insert(
            gp.to_string(),
            Group {
                base: gp.name.clone(),
                path: gp,
                id,
                target_size: 0,
                zones,
                members: Vec::new(),
                template_labels: template_labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                request_ids: HashMap::new(),
                next_zone: 0,
            },
        );
    }

    /// Sets the zones a regional group spreads new instances over.
    pub fn set_zones(&self, path: &str, zones: &[&str]) {
        let mut st = self.lock();
        let g = st.groups.get_mut(path).expect("group added first");
        g.zones = zones.iter().map(|z| z.to_string()).collect();
    }

    /// Adds an existing instance to the group at `path` and raises its target size by one.
    pub fn add_instance(&self, path: &str, spec: InstanceSpec) {
        let mut st = self.lock();
        let id = st.next_id();
        let g = st.groups.get_mut(path).expect("group added first");
        let zone = spec.zone.clone().unwrap_or_else(|| g.zones[0].clone());
        let key = (g.path.project.clone(), zone, spec.name.clone());
        g.members.push(key.clone());
        // A member being deleted has already left the target size.
        if spec.action != "DELETING" {
            g.target_size += 1;
        }
        let labels = if spec.labels.is_empty() && !spec.unlabelled {
            g.template_labels.clone()
        } else {
            spec.labels
        };
        let created_by = Some(created_by_of(&g.path));
        st.instances.insert(
            key,
            Instance {
                id,
                created: spec.created,
                labels,
                status: spec.status,
                action: spec.action,
                created_by,
                deleting_since: spec.deleting_since,
            },
        );
    }

    /// Adds an instance that is no group's member (launched by hand or by a shell command, or
    /// abandoned by a group), with the spec's labels and, if set, its `created-by`.
    pub fn add_loose_instance(&self, project: &str, zone: &str, spec: InstanceSpec) {
        let mut st = self.lock();
        let id = st.next_id();
        let created_by = spec
            .created_by
            .as_deref()
            .map(|p| GroupPath::parse(p, None).expect("a full group path"))
            .map(|p| created_by_of(&p));
        st.instances.insert(
            (project.into(), zone.into(), spec.name.clone()),
            Instance {
                id,
                created: spec.created,
                labels: spec.labels,
                status: spec.status,
                action: spec.action,
                created_by,
                deleting_since: spec.deleting_since,
            },
        );
    }

    /// Adds an instance that belongs to no group (another fleet in the same zone), so a test
    /// can prove the executor's filtered listing leaves it alone.
    pub fn add_stray_instance(&self, project: &str, zone: &str, name: &str, created: &str) {
        let mut st = self.lock();
        let id = st.next_id();
        st.instances.insert(
            (project.into(), zone.into(), name.into()),
            Instance {
                id,
                created: created.into(),
                labels: Vec::new(),
                status: "RUNNING".into(),
                action: "NONE".into(),
                created_by: None,
                deleting_since: None,
            },
        );
    }

    /// Items per list page (default 2, to make every listing paginate).
    pub fn set_page_size(&self, n: usize) {
        self.lock().page_size = n.max(1);
    }

    /// How many `operations.get` calls an operation answers RUNNING before DONE (default 1;
    /// 0 returns DONE straight from the mutating call).
    pub fn set_operation_polls(&self, n: u32) {
        self.lock().op_polls = n;
    }

    /// The next `times` requests with `method` whose path contains `path_contains` fail with
    /// `status` and a Compute error body carrying `reason`; nothing is applied.
    pub fn fail_next(
        &self,
        method: &str,
        path_contains: &str,
        status: u16,
        reason: &str,
        times: u32,
    ) {
        self.lock().faults.push(Fault {
            method: method.into(),
            path_contains: path_contains.into(),
            status,
            reason: reason.into(),
            remaining: times,
            after_apply: false,
        });
    }

    /// Like [`Self::fail_next`], but the request is applied first and only the response is lost:
    /// what a retry with the same request id must not apply twice.
    pub fn fail_after_apply(
        &self,
        method: &str,
        path_contains: &str,
        status: u16,
        reason: &str,
        times: u32,
    ) {
        self.lock().faults.push(Fault {
            method: method.into(),
            path_contains: path_contains.into(),
            status,
            reason: reason.into(),
            remaining: times,
            after_apply: true,
        });
    }

    /// The next `times` matching requests are answered only after `delay` (then normally): a
    /// hung backend, to prove the per-attempt timeout and its retry.
    pub fn stall_next(
        &self,
        method: &str,
        path_contains: &str,
        times: u32,
        delay: std::time::Duration,
    ) {
        self.lock().stalls.push(Stall {
            method: method.into(),
            path_contains: path_contains.into(),
            remaining: times,
            delay,
        });
    }

    /// The next mutating call creates an operation that ends DONE with this error (and changes
    /// nothing), as Compute reports e.g. `QUOTA_EXCEEDED`.
    pub fn fail_next_operation(&self, code: &str, message: &str, http_status: u16) {
        self.lock().op_failures.push_back(OpFailure {
            code: code.into(),
            message: message.into(),
            http_status,
        });
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    /// Forgets the recorded requests (e.g. between cycles).
    pub fn clear_requests(&self) {
        self.lock().requests.clear();
    }

    /// Requests with `method` whose path contains `path_contains`.
    pub fn count(&self, method: &str, path_contains: &str) -> usize {
        self.lock()
            .requests
            .iter()
            .filter(|r| r.method == method && r.path.contains(path_contains))
            .count()
    }

    /// Resizes and deletions actually applied (a deduplicated retry does not count).
    pub fn mutations_applied(&self) -> u32 {
        self.lock().mutations
    }

    /// The group's target size.
    pub fn target_size(&self, path: &str) -> Option<u32> {
        self.lock().groups.get(path).map(|g| g.target_size)
    }

    /// Names of the group's instances not being deleted, in creation order.
    pub fn instance_names(&self, path: &str) -> Vec<String> {
        let st = self.lock();
        let Some(g) = st.groups.get(path) else {
            return Vec::new();
        };
        g.members
            .iter()
            .filter(|k| st.instances.get(*k).is_some_and(|i| i.action != "DELETING"))
            .map(|k| k.2.clone())
            .collect()
    }

    /// `currentAction` of a group member, e.g. `CREATING`, `NONE`, `DELETING`; `None` once gone.
    pub fn instance_action(&self, path: &str, name: &str) -> Option<String> {
        let st = self.lock();
        let g = st.groups.get(path)?;
        let key = g.members.iter().find(|k| k.2 == name)?;
        st.instances.get(key).map(|i| i.action.clone())
    }
}

impl DoubleState {
    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn take_stall(&mut self, method: &str, path: &str) -> Option<std::time::Duration> {
        let s = self
            .stalls
            .iter_mut()
            .find(|s| s.remaining > 0 && s.method == method && path.contains(&s.path_contains))?;
        s.remaining -= 1;
        Some(s.delay)
    }

    fn take_fault(&mut self, method: &str, path: &str, after_apply: bool) -> Option<Fault> {
        let f = self.faults.iter_mut().find(|f| {
            f.remaining > 0
                && f.after_apply == after_apply
                && f.method == method
                && path.contains(&f.path_contains)
        })?;
        f.remaining -= 1;
        Some(f.clone())
    }

    fn group_json(&self, g: &Group) -> Value {
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
                let key = match i.action.as_str() {
                    "CREATING" => "creating",
                    "DELETING" => "deleting",
                    "ABANDONING" => "abandoning",
                    _ => "none",
                };
                *actions.get_mut(key).unwrap() += 1;
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
            "selfLink": format!("{API}/{}", g.path),
            "updatePolicy": {"type": "OPPORTUNISTIC"},
        });
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
                    "targetShape": "EVEN",
                });
            }
        }
        v
    }

    fn instance_json(&self, key: &InstKey, i: &Instance) -> Value {
        let (p, z, n) = key;
        let mut v = json!({
            "kind": "compute#instance",
            "id": i.id.to_string(),
            "creationTimestamp": i.created,
            "name": n,
            "machineType": format!("{API}/projects/{p}/zones/{z}/machineTypes/e2-standard-4"),
            "status": i.status,
            "zone": format!("{API}/projects/{p}/zones/{z}"),
            "labels": i.labels.iter().cloned().collect::<BTreeMap<_, _>>(),
            "networkInterfaces": [{
                "kind": "compute#networkInterface",
                "name": "nic0",
                "network": format!("{API}/projects/{p}/global/networks/default"),
                "networkIP": network_ip(i.id),
                "stackType": "IPV4_ONLY",
            }],
            "selfLink": format!("{API}/projects/{p}/zones/{z}/instances/{n}"),
        });
        if i.status == "RUNNING" {
            v["lastStartTimestamp"] = json!(i.created);
        }
        if let Some(c) = &i.created_by {
            v["metadata"] = json!({
                "kind": "compute#metadata",
                "items": [{"key": "created-by", "value": c}],
            });
        }
        v
    }

    /// The zone's operations: a pending `delete` per instance being deleted (as the group's
    /// service agent issues them) and the group operations recorded in the zone.
    fn list_zone_operations(
        &self,
        project: &str,
        zone: &str,
        query: &[(String, String)],
    ) -> Result<Value, ComputeError> {
        let filter = query
            .iter()
            .find(|(k, _)| k == "filter")
            .map(|(_, v)| v.as_str())
            .unwrap_or("");
        let filter = parse_filter(filter).ok_or_else(|| {
            err(
                400,
                "invalid",
                format!(
                    "Invalid value for field 'filter': '{filter}'. Invalid list filter expression."
                ),
            )
        })?;
        let scope = format!("projects/{project}/zones/{zone}");
        let mut items: Vec<Value> = self
            .instances
            .iter()
            .filter(|(k, _)| k.0 == project && k.1 == zone)
            .filter_map(|(k, i)| {
                let since = i.deleting_since.as_ref()?;
                let name = format!("operation-delete-{}", i.id);
                Some(json!({
                    "kind": "compute#operation",
                    "id": (i.id + 7).to_string(),
                    "name": name,
                    "operationType": "delete",
                    "targetLink": format!("{API}/projects/{}/zones/{}/instances/{}", k.0, k.1, k.2),
                    "targetId": i.id.to_string(),
                    "status": "RUNNING",
                    "user": "123456789012@cloudservices.gserviceaccount.com",
                    "progress": 0,
                    "insertTime": since,
                    "startTime": since,
                    "zone": format!("{API}/{scope}"),
                    "selfLink": format!("{API}/{scope}/operations/{name}"),
                }))
            })
            .collect();
        let mut group_ops: Vec<(&String, &Op)> = self
            .operations
            .iter()
            .filter(|((s, _), _)| *s == scope)
            .map(|((_, n), o)| (n, o))
            .collect();
        group_ops.sort_by_key(|(n, _)| n.as_str());
        items.extend(group_ops.into_iter().map(|(_, o)| o.json.clone()));
        let items: Vec<Value> = items.into_iter().filter(|v| filter.matches(v)).collect();
        let (page, next) = paginate(items, query, self.page_size)?;
        let mut v = json!({
            "kind": "compute#operationList",
            "id": format!("{scope}/operations"),
            "items": page,
            "selfLink": format!("{API}/{scope}/operations"),
        });
        if let Some(t) = next {
            v["nextPageToken"] = json!(t);
        }
        Ok(v)
    }

    fn new_operation(
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

    fn finish_operation(&mut self, key: &OpKey) {
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
                        if let Some(i) = self.instances.get_mut(&k) {
                            i.action = "NONE".into();
                            i.status = "RUNNING".into();
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
                }
            }
        }
    }

    fn resize(&mut self, g_key: &str, size: u32, request_id: Option<&str>) -> Value {
        if let Some(r) = request_id {
            if let Some(existing) = self.groups[g_key].request_ids.get(r).cloned() {
                return self.operations[&existing].json.clone();
            }
        }
        if let Some(f) = self.op_failures.pop_front() {
            return self.new_operation(
                g_key,
                "compute.instanceGroupManagers.resize",
                request_id,
                Vec::new(),
                Some(f),
            );
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
        let created_by = Some(created_by_of(&g.path));
        for (key, id) in &new_keys {
            self.instances.insert(
                key.clone(),
                Instance {
                    id: *id,
                    created: created.clone(),
                    labels: labels.clone(),
                    status: "PROVISIONING".into(),
                    action: "CREATING".into(),
                    created_by: created_by.clone(),
                    deleting_since: None,
                },
            );
        }
        for k in &deleting {
            if let Some(i) = self.instances.get_mut(k) {
                i.action = "DELETING".into();
                i.deleting_since = Some(created.clone());
            }
        }
        let mut effects = vec![Effect::FinishCreate(
            new_keys.into_iter().map(|(k, _)| k).collect(),
        )];
        if !deleting.is_empty() {
            effects.push(Effect::FinishDelete(g_key.to_string(), deleting));
        }
        self.new_operation(
            g_key,
            "compute.instanceGroupManagers.resize",
            request_id,
            effects,
            None,
        )
    }

    fn delete_instances(
        &mut self,
        g_key: &str,
        body: &Value,
        request_id: Option<&str>,
    ) -> Result<Value, ComputeError> {
        if let Some(r) = request_id {
            if let Some(existing) = self.groups[g_key].request_ids.get(r).cloned() {
                return Ok(self.operations[&existing].json.clone());
            }
        }
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
        for k in &keys {
            let i = self.instances.get_mut(k).unwrap();
            i.action = "DELETING".into();
            i.deleting_since = Some(now.clone());
        }
        let g = self.groups.get_mut(g_key).unwrap();
        g.target_size -= keys.len() as u32;
        let effects = vec![Effect::FinishDelete(g_key.to_string(), keys)];
        Ok(self.new_operation(
            g_key,
            "compute.instanceGroupManagers.deleteInstances",
            request_id,
            effects,
            None,
        ))
    }

    fn list_managed(&self, g_key: &str, query: &[(String, String)]) -> Result<Value, ComputeError> {
        let g = &self.groups[g_key];
        let items: Vec<Value> = g
            .members
            .iter()
            .filter_map(|k| {
                let i = self.instances.get(k)?;
                let (p, z, n) = k;
                let mut v = json!({
                    "instance": format!("{API}/projects/{p}/zones/{z}/instances/{n}"),
                    "id": i.id.to_string(),
                    "currentAction": i.action,
                    "name": n,
                    "version": {"instanceTemplate": format!("{API}/projects/{p}/global/instanceTemplates/{}-template", g.base)},
                });
                if i.action != "CREATING" {
                    v["instanceStatus"] = json!(i.status);
                }
                Some(v)
            })
            .collect();
        let (page, next) = paginate(items, query, self.page_size)?;
        let mut v = json!({ "managedInstances": page });
        if let Some(t) = next {
            v["nextPageToken"] = json!(t);
        }
        Ok(v)
    }

    fn list_instances(
        &self,
        project: &str,
        zone: &str,
        query: &[(String, String)],
    ) -> Result<Value, ComputeError> {
        let filter = query
            .iter()
            .find(|(k, _)| k == "filter")
            .map(|(_, v)| v.as_str())
            .unwrap_or("");
        let items: Vec<Value> = match parse_name_filter(filter) {
            Some(names) => self
                .instances
                .iter()
                .filter(|(k, _)| k.0 == project && k.1 == zone)
                .filter(|(k, _)| names.as_ref().is_none_or(|n| n.contains(&k.2)))
                .map(|(k, i)| self.instance_json(k, i))
                .collect(),
            None => {
                let f = parse_filter(filter).ok_or_else(|| {
                    err(
                        400,
                        "invalid",
                        format!(
                            "Invalid value for field 'filter': '{filter}'. Invalid list filter expression."
                        ),
                    )
                })?;
                self.instances
                    .iter()
                    .filter(|(k, _)| k.0 == project && k.1 == zone)
                    .map(|(k, i)| self.instance_json(k, i))
                    .filter(|v| f.matches(v))
                    .collect()
            }
        };
        let (page, next) = paginate(items, query, self.page_size)?;
        let mut v = json!({
            "kind": "compute#instanceList",
            "id": format!("projects/{project}/zones/{zone}/instances"),
            "items": page,
            "selfLink": format!("{API}/projects/{project}/zones/{zone}/instances"),
        });
        if let Some(t) = next {
            v["nextPageToken"] = json!(t);
        }
        Ok(v)
    }
}

/// A parsed Compute filter of `field = "v"` / `field != "v"` terms (a dotted field path
/// reaches into maps, e.g. `labels.vespene_worker`), all joined by AND or all by OR.
#[derive(Debug, PartialEq)]
struct Filter {
    terms: Vec<(String, bool, String)>,
    any: bool,
}

impl Filter {
    fn matches(&self, v: &Value) -> bool {
        let term = |(path, equal, want): &(String, bool, String)| {
            let mut cur = Some(v);
            for part in path.split('.') {
                cur = cur.and_then(|c| c.get(part));
            }
            let got = cur.map(|c| match c {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            });
            (got.as_deref() == Some(want.as_str())) == *equal
        };
        if self.terms.is_empty() {
            true
        } else if self.any {
            self.terms.iter().any(term)
        } else {
            self.terms.iter().all(term)
        }
    }
}

/// Parses [`Filter`]; `None` when the expression is outside what the double understands
/// (Compute would answer 400 to a malformed one, and the double does too).
fn parse_filter(filter: &str) -> Option<Filter> {
    let f = filter.trim();
    if f.is_empty() {
        return Some(Filter {
            terms: Vec::new(),
            any: false,
        });
    }
    let (parts, any): (Vec<&str>, bool) = match (f.contains(" AND "), f.contains(" OR ")) {
        (true, true) => return None,
        (false, true) => (f.split(" OR ").collect(), true),
        _ => (f.split(" AND ").collect(), false),
    };
    let mut terms = Vec::new();
    for part in parts {
        let t = part.trim();
        let t = t
            .strip_prefix('(')
            .and_then(|t| t.strip_suffix(')'))
            .unwrap_or(t)
            .trim();
        let (field, equal, rest) = if let Some((a, b)) = t.split_once("!=") {
            (a, false, b)
        } else {
            let (a, b) = t.split_once('=')?;
            (a, true, b)
        };
        let field = field.trim();
        if field.is_empty()
            || !field
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
        {
            return None;
        }
        let rest = rest.trim();
        let value = rest
            .strip_prefix('"')
            .and_then(|r| r.strip_suffix('"'))
            .unwrap_or(rest);
        if value.contains('"') {
            return None;
        }
        terms.push((field.to_string(), equal, value.to_string()));
    }
    Some(Filter { terms, any })
}

fn network_ip(id: u64) -> String {
    format!("10.128.{}.{}", (id / 250) % 250, id % 250 + 2)
}

/// `None` for an empty filter (everything); `Some(names)` for `name = "a"` terms joined by OR.
fn parse_name_filter(filter: &str) -> Option<Option<Vec<String>>> {
    let f = filter.trim();
    if f.is_empty() {
        return Some(None);
    }
    let mut names = Vec::new();
    for term in f.split(" OR ") {
        let t = term.trim();
        let t = t
            .strip_prefix('(')
            .and_then(|t| t.strip_suffix(')'))
            .unwrap_or(t)
            .trim();
        let rest = t.strip_prefix("name")?.trim_start();
        let rest = rest.strip_prefix('=')?.trim();
        let value = rest
            .strip_prefix('"')
            .and_then(|r| r.strip_suffix('"'))
            .unwrap_or(rest);
        if value.is_empty() || value.contains('"') {
            return None;
        }
        names.push(value.to_string());
    }
    Some(Some(names))
}

fn paginate(
    items: Vec<Value>,
    query: &[(String, String)],
    page_size: usize,
) -> Result<(Vec<Value>, Option<String>), ComputeError> {
    let param = |n: &str| query.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
    let max = match param("maxResults") {
        Some(m) => m
            .parse::<usize>()
            .map_err(|_| err(400, "invalid", "Invalid value for maxResults"))?
            .clamp(1, 500),
        None => 500,
    };
    let start = match param("pageToken") {
        Some(t) if !t.is_empty() => t
            .strip_prefix("page-")
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| err(400, "invalid", "Invalid value for pageToken"))?,
        _ => 0,
    };
    let size = max.min(page_size);
    let end = (start + size).min(items.len());
    let page = items
        .get(start.min(items.len())..end)
        .unwrap_or(&[])
        .to_vec();
    let next = (end < items.len()).then(|| format!("page-{end}"));
    Ok((page, next))
}

fn suffix(id: u64) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut n = id.wrapping_mul(2_654_435_761) % (36u64.pow(4));
    let mut out = [b'a'; 4];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(n % 36) as usize];
        n /= 36;
    }
    String::from_utf8(out.to_vec()).unwrap()
}

fn now_rfc3339() -> String {
    let offset = chrono::FixedOffset::west_opt(7 * 3600).unwrap();
    chrono::Utc::now()
        .with_timezone(&offset)
        .format("%Y-%m-%dT%H:%M:%S%.3f%:z")
        .to_string()
}

fn http_reason(status: u16) -> &'static str {
    match status {
        400 => "BAD REQUEST",
        403 => "FORBIDDEN",
        404 => "NOT FOUND",
        409 => "CONFLICT",
        429 => "TOO MANY REQUESTS",
        500 => "INTERNAL SERVER ERROR",
        503 => "SERVICE UNAVAILABLE",
        _ => "ERROR",
    }
}

/// An error the double answers with, turned into a Compute error body by [`error_response`].
struct ComputeError {
    status: u16,
    reason: &'static str,
    message: String,
}

fn err(status: u16, reason: &'static str, message: impl Into<String>) -> ComputeError {
    ComputeError {
        status,
        reason,
        message: message.into(),
    }
}

fn reply(r: Result<Value, ComputeError>) -> Response {
    match r {
        Ok(v) => ok_json(v),
        Err(e) => error_response(e.status, e.reason, &e.message),
    }
}

/// A Compute-style error: `{"error": {"code", "message", "errors": [{"message", "domain", "reason"}]}}`.
fn error_response(status: u16, reason: &str, message: &str) -> Response {
    let domain = if status == 429 || reason.contains("RateLimit") || reason.contains("rateLimit") {
        "usageLimits"
    } else {
        "global"
    };
    let body = json!({"error": {"code": status, "message": message, "errors": [{"message": message, "domain": domain, "reason": reason}]}});
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        code,
        [(header::CONTENT_TYPE, "application/json; charset=UTF-8")],
        body.to_string(),
    )
        .into_response()
}

fn ok_json(v: Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json; charset=UTF-8")],
        v.to_string(),
    )
        .into_response()
}

fn decode_component(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(
                    std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"),
                    16,
                ) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_query(q: Option<&str>) -> Vec<(String, String)> {
    q.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode_component(k), decode_component(v))
        })
        .collect()
}

async fn handle(
    State(state): State<Arc<Mutex<DoubleState>>>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let query = parse_query(uri.query());
    let body_text = String::from_utf8_lossy(&body).into_owned();
    let stall = {
        let mut st = state.lock().unwrap();
        st.requests.push(RecordedRequest {
            method: method.to_string(),
            path: path.clone(),
            query: query.clone(),
            body: body_text.clone(),
        });
        st.take_stall(method.as_str(), &path)
    };
    if let Some(delay) = stall {
        tokio::time::sleep(delay).await;
    }
    let mut st = state.lock().unwrap();
    if let Some(f) = st.take_fault(method.as_str(), &path, false) {
        return error_response(
            f.status,
            &f.reason,
            &format!("Injected {} on {} {}", f.status, method, path),
        );
    }
    let response = route(&mut st, &method, &path, &query, &body_text);
    if response.status().is_success() {
        if let Some(f) = st.take_fault(method.as_str(), &path, true) {
            return error_response(
                f.status,
                &f.reason,
                &format!("Injected {} after applying {} {}", f.status, method, path),
            );
        }
    }
    response
}

fn route(
    st: &mut DoubleState,
    method: &Method,
    path: &str,
    query: &[(String, String)],
    body: &str,
) -> Response {
    let Some(rest) = path.strip_prefix("/compute/v1/projects/") else {
        return error_response(
            404,
            "notFound",
            &format!("The double has no route for {path}"),
        );
    };
    let segs: Vec<&str> = rest.split('/').collect();
    let param = |n: &str| query.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
    let not_found = |what: &str| {
        error_response(
            404,
            "notFound",
            &format!("The resource '{what}' was not found"),
        )
    };
    let wrong_method = || {
        error_response(
            405,
            "httpMethodNotAllowed",
            &format!("{method} is not allowed on {path}"),
        )
    };
    match segs.as_slice() {
        [p, kind @ ("zones" | "regions"), loc, "instanceGroupManagers", name, tail @ ..] => {
            let g_key = format!("projects/{p}/{kind}/{loc}/instanceGroupManagers/{name}");
            if !st.groups.contains_key(&g_key) {
                return not_found(&g_key);
            }
            match (tail, method) {
                ([], &Method::GET) => ok_json(st.group_json(&st.groups[&g_key])),
                (["resize"], &Method::POST) => {
                    let Some(size) = param("size").and_then(|s| s.parse::<i64>().ok()) else {
                        return error_response(
                            400,
                            "required",
                            "Required field 'size' not specified",
                        );
                    };
                    if size < 0 {
                        return error_response(
                            400,
                            "invalid",
                            "Invalid value for field 'size': must be >= 0",
                        );
                    }
                    let rid = param("requestId").map(str::to_string);
                    ok_json(st.resize(&g_key, size as u32, rid.as_deref()))
                }
                (["deleteInstances"], &Method::POST) => {
                    let v: Value = match serde_json::from_str(body) {
                        Ok(v) => v,
                        Err(_) => {
                            return error_response(
                                400,
                                "parseError",
                                "This API does not support parsing form-encoded input.",
                            )
                        }
                    };
                    let rid = param("requestId").map(str::to_string);
                    reply(st.delete_instances(&g_key, &v, rid.as_deref()))
                }
                (["listManagedInstances"], &Method::POST) => reply(st.list_managed(&g_key, query)),
                ([] | ["resize"] | ["deleteInstances"] | ["listManagedInstances"], _) => {
                    wrong_method()
                }
                _ => error_response(
                    404,
                    "notFound",
                    &format!("The double has no route for {path}"),
                ),
            }
        }
        [p, "zones", z, "operations"] => {
            if method != Method::GET {
                return wrong_method();
            }
            reply(st.list_zone_operations(p, z, query))
        }
        [p, "zones", z, "instances"] => {
            if method != Method::GET {
                return wrong_method();
            }
            reply(st.list_instances(p, z, query))
        }
        [p, "zones", z, "instances", n] => {
            if method != Method::GET {
                return wrong_method();
            }
            let key = (p.to_string(), z.to_string(), n.to_string());
            match st.instances.get(&key) {
                Some(i) => ok_json(st.instance_json(&key, i)),
                None => not_found(&format!("projects/{p}/zones/{z}/instances/{n}")),
            }
        }
        [p, kind @ ("zones" | "regions"), loc, "operations", op, tail @ ..] => {
            let key = (format!("projects/{p}/{kind}/{loc}"), op.to_string());
            if !st.operations.contains_key(&key) {
                return not_found(&format!("projects/{p}/{kind}/{loc}/operations/{op}"));
            }
            match (tail, method) {
                ([], &Method::GET) => {
                    let o = st.operations.get_mut(&key).unwrap();
                    if !o.done {
                        o.polls_left = o.polls_left.saturating_sub(1);
                        if o.polls_left == 0 {
                            st.finish_operation(&key);
                        }
                    }
                    ok_json(st.operations[&key].json.clone())
                }
                (["wait"], &Method::POST) => {
                    st.finish_operation(&key);
                    ok_json(st.operations[&key].json.clone())
                }
                _ => wrong_method(),
            }
        }
        _ => error_response(
            404,
            "notFound",
            &format!("The double has no route for {path}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_parsing() {
        assert_eq!(parse_name_filter(""), Some(None));
        assert_eq!(
            parse_name_filter("(name = \"a\") OR (name = \"b-1\")"),
            Some(Some(vec!["a".into(), "b-1".into()]))
        );
        assert_eq!(
            parse_name_filter("name = \"a\""),
            Some(Some(vec!["a".into()]))
        );
        assert_eq!(parse_name_filter("labels.x = \"a\""), None);
        assert_eq!(parse_name_filter("name eq a.*"), None);
    }

    #[test]
    fn generic_filters() {
        let f = parse_filter("labels.vespene_worker = \"true\"").unwrap();
        assert!(f.matches(&json!({"labels": {"vespene_worker": "true"}})));
        assert!(!f.matches(&json!({"labels": {"vespene_worker": "false"}})));
        assert!(!f.matches(&json!({"labels": {}})));
        let f = parse_filter("(operationType = \"delete\") AND (status != \"DONE\")").unwrap();
        assert!(f.matches(&json!({"operationType": "delete", "status": "RUNNING"})));
        assert!(!f.matches(&json!({"operationType": "delete", "status": "DONE"})));
        assert!(!f.matches(&json!({"operationType": "insert", "status": "RUNNING"})));
        assert!(parse_filter("(a = \"1\") AND (b = \"2\") OR (c = \"3\")").is_none());
        assert!(parse_filter("labels.x ~ y").is_none());
    }

    #[test]
    fn query_decoding() {
        let q = parse_query(Some(
            "%24alt=json&filter=%28name+%3D+%22a%22%29&pageToken=page-2",
        ));
        assert_eq!(q[0], ("$alt".into(), "json".into()));
        assert_eq!(q[1].1, "(name = \"a\")");
        assert_eq!(q[2].1, "page-2");
        assert_eq!(decode_component("100%"), "100%");
    }

    #[test]
    fn suffixes_are_gce_names() {
        for id in 0..200u64 {
            let s = suffix(id);
            assert_eq!(s.len(), 4);
            assert!(crate::target::valid_name(&format!("w-{s}")), "{s}");
        }
    }
}
