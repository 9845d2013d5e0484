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
//! `POST …/deleteInstances?requestId=R`, `POST …/{suspend,resume,stop,start}Instances?requestId=R`
//! (see `standby`), `POST …/listManagedInstances`,
//! `GET …/listErrors`, `GET zones/{z}/instances?filter=…` (filters: `name = "…"` terms joined by OR, or
//! `labels.K = "V"` / `field != "V"` terms joined by AND or OR), `GET zones/{z}/instances/{name}`,
//! `GET zones/{z}/operations?filter=…` (the pending `delete` operation of every instance being
//! deleted, plus the zone's group operations), `GET …/operations/{op}`,
//! `POST …/operations/{op}/wait`.
//!
//! Instances carry what the audit reads: `networkInterfaces[0].networkIP`, metadata
//! `created-by` naming their group (by project *number*, as Compute does), and
//! `lastStartTimestamp` while RUNNING.
//!
//! Groups behave as Compute's do after a call was accepted (see `behaviours`): creations that
//! keep failing, proactive redistribution of regional groups (the API's default), an attached
//! autoscaler, and standby (stopped, suspended) members outside the running `targetSize`.
//!
//! Start it with [`ComputeDouble::start`]; point the executor at [`ComputeDouble::endpoint`]
//! (e.g. `AUTOSCALER_GCE_ENDPOINT`) with anonymous credentials.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

mod behaviours;
mod instances;
mod path;
mod route;
mod spec;
mod standby;
mod state;
mod wire;

use behaviours::*;
use path::{last_segment, zone_of_url, GroupPath, Location};
use route::handle;
pub use spec::InstanceSpec;
use state::*;
use wire::*;

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
        wire::query_param(&self.query, name)
    }
}

/// An instance at the moment its deletion started, for a test's [`ComputeDouble::on_delete`]
/// hook: a harness records which builds were still running on it.
#[derive(Clone, Debug)]
pub struct DeletedInstance {
    /// Project of the instance.
    pub project: String,
    /// Zone of the instance.
    pub zone: String,
    /// Instance name.
    pub name: String,
    /// Its labels.
    pub labels: Vec<(String, String)>,
    /// Its metadata items.
    pub metadata: Vec<(String, String)>,
    /// When each metadata item got its current value (e.g. when a drain was requested).
    pub metadata_since: BTreeMap<String, std::time::Instant>,
    /// The guest attributes its guest had written.
    pub guest_attributes: BTreeMap<String, String>,
    /// When the deletion started.
    pub at: std::time::Instant,
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
        let gp = GroupPath::parse(path).expect("a full group path");
        let zones = match &gp.location {
            Location::Zone(z) => vec![z.clone()],
            Location::Region(r) => vec![format!("{r}-a"), format!("{r}-b"), format!("{r}-c")],
        };
        let target_shape = matches!(gp.location, Location::Region(_)).then(|| "EVEN".to_string());
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
                template_metadata: vec![("enable-guest-attributes".into(), "TRUE".into())],
                target_stopped_size: 0,
                target_suspended_size: 0,
                standby_mode: None,
                autoscaler: None,
                redistribution: None,
                target_shape,
                launch_failure: None,
                errors: Vec::new(),
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
        // A member being deleted has already left the target size; a standby one (stopped,
        // suspended) is in the group's standby counts, not in its target size of running VMs.
        if spec.action != "DELETING" {
            match standby_of(&spec.status) {
                None => g.target_size += 1,
                Some(Standby::Stopped) => g.target_stopped_size += 1,
                Some(Standby::Suspended) => g.target_suspended_size += 1,
            }
        }
        let mut last_attempt = Vec::new();
        if let Some((code, message, since)) = &spec.launch_error {
            g.push_error(&key, code, message, since);
            last_attempt.push((code.clone(), message.clone()));
        }
        let labels = if spec.labels.is_empty() && !spec.unlabelled {
            g.template_labels.clone()
        } else {
            spec.labels
        };
        let mut extra = g.template_metadata.clone();
        extra.extend(spec.metadata);
        let metadata = initial_metadata(Some(g.path.created_by()), &extra);
        st.instances.insert(
            key,
            Instance {
                id,
                created: spec.created,
                labels,
                status: spec.status,
                action: spec.action,
                deleting_since: spec.deleting_since,
                hostname: spec.hostname,
                metadata,
                last_attempt,
                ..Instance::default()
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
            .map(|p| GroupPath::parse(p).expect("a full group path"))
            .map(|p| p.created_by());
        st.instances.insert(
            (project.into(), zone.into(), spec.name.clone()),
            Instance {
                id,
                created: spec.created,
                labels: spec.labels,
                status: spec.status,
                action: spec.action,
                deleting_since: spec.deleting_since,
                hostname: spec.hostname,
                metadata: initial_metadata(created_by, &spec.metadata),
                ..Instance::default()
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
                ..Instance::default()
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

    fn push_fault(
        &self,
        method: &str,
        path_contains: &str,
        status: u16,
        reason: &str,
        times: u32,
        after_apply: bool,
    ) {
        self.lock().faults.push(Fault {
            method: method.into(),
            path_contains: path_contains.into(),
            status,
            reason: reason.into(),
            remaining: times,
            after_apply,
        });
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
        self.push_fault(method, path_contains, status, reason, times, false);
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
        self.push_fault(method, path_contains, status, reason, times, true);
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

    /// How many listings of its group (`listManagedInstances`) a suspend, stop, resume or
    /// start stays under way after its operation is DONE (default 0): Compute marks the
    /// operation DONE once the action is scheduled, and the instance gets there later.
    pub fn set_standby_settle(&self, listings: u32) {
        self.lock().standby_settle = listings;
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

    /// Resizes, deletions and metadata changes actually applied (a deduplicated retry does
    /// not count).
    pub fn mutations_applied(&self) -> u32 {
        self.lock().mutations
    }

    /// The group's (`targetSuspendedSize`, `targetStoppedSize`).
    pub fn standby_sizes(&self, path: &str) -> Option<(u32, u32)> {
        self.lock().standby_sizes(path)
    }

    /// `status` of group member `name` (`RUNNING`, `SUSPENDED`, `TERMINATED`, …).
    pub fn instance_status(&self, path: &str, name: &str) -> Option<String> {
        let st = self.lock();
        let key = Self::member_key(&st, path, name)?;
        st.instances.get(&key).map(|i| i.status.clone())
    }

    /// Sets the group's `standbyPolicy.mode` (`MANUAL`, `SCALE_OUT_POOL`); unset by default.
    pub fn set_standby_mode(&self, path: &str, mode: &str) {
        let mut st = self.lock();
        st.groups
            .get_mut(path)
            .expect("group added first")
            .standby_mode = Some(mode.into());
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

    /// Calls `hook` for every instance whose deletion starts (`deleteInstances`, or a resize
    /// down), at that moment and under the double's lock: the hook must not call the double.
    pub fn on_delete(&self, hook: impl Fn(&DeletedInstance) + Send + Sync + 'static) {
        self.lock().on_delete = Some(DeleteHook(Arc::new(hook)));
    }

    fn member_key(st: &DoubleState, path: &str, name: &str) -> Option<InstKey> {
        st.groups
            .get(path)?
            .members
            .iter()
            .find(|k| k.2 == name)
            .cloned()
    }

    /// Metadata item `key` of group member `name`, as its guest would read it from the
    /// metadata server (`instance/attributes/KEY`).
    pub fn metadata_value(&self, path: &str, name: &str, key: &str) -> Option<String> {
        let st = self.lock();
        let k = Self::member_key(&st, path, name)?;
        let i = st.instances.get(&k)?;
        i.metadata
            .iter()
            .find(|(mk, _)| mk == key)
            .map(|(_, v)| v.clone())
    }

    /// Writes guest attribute `key` (`namespace/key`) of group member `name`: what its guest
    /// does with `PUT …/computeMetadata/v1/instance/guest-attributes/NAMESPACE/KEY`. Returns
    /// false when there is no such instance any more.
    pub fn set_guest_attribute(&self, path: &str, name: &str, key: &str, value: &str) -> bool {
        let mut st = self.lock();
        let Some(k) = Self::member_key(&st, path, name) else {
            return false;
        };
        match st.instances.get_mut(&k) {
            Some(i) => {
                i.guest.insert(key.into(), value.into());
                true
            }
            None => false,
        }
    }

    /// The internal IP of group member `name` (`networkInterfaces[0].networkIP`).
    pub fn network_ip(&self, path: &str, name: &str) -> Option<String> {
        let st = self.lock();
        let k = Self::member_key(&st, path, name)?;
        st.instances.get(&k).map(|i| network_ip(i.id))
    }

    /// `currentAction` of a group member, e.g. `CREATING`, `NONE`, `DELETING`; `None` once gone.
    pub fn instance_action(&self, path: &str, name: &str) -> Option<String> {
        let st = self.lock();
        let g = st.groups.get(path)?;
        let key = g.members.iter().find(|k| k.2 == name)?;
        st.instances.get(key).map(|i| i.action.clone())
    }
}
