//! The read-only fleet description behind `autoscaler audit`: each pool's managed instance
//! group and every instance labelled `vespene_worker=true` in the zones those groups use.
//!
//! Requests per audit: per pool one `get` and one `listManagedInstances` (one more per 500
//! members); per zone one `instances.list` filtered on the label (one more per 500 instances);
//! and only when needed, one name-filtered `instances.list` per zone for group members that
//! lack the label, and one `zoneOperations.list` per zone that has members being deleted (to
//! date the deletion), and one `listErrors` per group that has members failing to launch (to
//! date the failure). Nothing is ever written.

use crate::apply::Applier;
use crate::client::{
    ApiError, ComputeApi, GroupError, GroupInfo, InstanceInfo, ManagedInstanceInfo, OperationInfo,
    Page, ZoneOperationInfo,
};
use crate::names::{label_value, render_hostname};
use crate::target::{valid_name, GroupPath, Location};
use crate::GceMigExecutor;
use async_trait::async_trait;
use autoscaler_executor::inventory::TAG_WORKER;
use autoscaler_executor::{
    ExecutorError, InstanceState, Inventory, InventoryGroup, InventoryInstance, InventorySnapshot,
    LaunchFailure, Plan, PoolInventory, WorkerPool,
};
use chrono::{DateTime, FixedOffset, Utc};
use futures::stream::{self, StreamExt};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// Groups (and zones) read at the same time: enough to hide latency, few enough to stay far
/// below Compute's per-second read quota.
const CONCURRENCY: usize = 8;
/// Names per name-filtered `instances.list`, as in scale-in.
const FILTER_CHUNK: usize = 100;
/// The server-side filter that finds every worker in a zone, whoever launched it.
pub const WORKER_FILTER: &str = "labels.vespene_worker = \"true\"";
/// The server-side filter for instance deletions still in progress.
pub const DELETE_FILTER: &str = "(operationType = \"delete\") AND (status != \"DONE\")";

/// Counts every request (retries included) so the audit can report what it cost.
struct Counting {
    inner: Arc<dyn ComputeApi>,
    calls: AtomicU32,
}

impl Counting {
    fn tick(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }
}

#[async_trait]
impl ComputeApi for Counting {
    async fn get_group(&self, group: &GroupPath) -> Result<GroupInfo, ApiError> {
        self.tick();
        self.inner.get_group(group).await
    }
    async fn resize(&self, g: &GroupPath, size: u32, id: &str) -> Result<OperationInfo, ApiError> {
        self.tick();
        self.inner.resize(g, size, id).await
    }
    async fn delete_instances(
        &self,
        g: &GroupPath,
        urls: &[String],
        id: &str,
    ) -> Result<OperationInfo, ApiError> {
        self.tick();
        self.inner.delete_instances(g, urls, id).await
    }
    async fn standby_instances(
        &self,
        g: &GroupPath,
        call: crate::client::StandbyCall,
        urls: &[String],
        id: &str,
    ) -> Result<OperationInfo, ApiError> {
        self.tick();
        self.inner.standby_instances(g, call, urls, id).await
    }
    async fn get_operation(&self, g: &GroupPath, op: &str) -> Result<OperationInfo, ApiError> {
        self.tick();
        self.inner.get_operation(g, op).await
    }
    async fn list_managed_instances(
        &self,
        g: &GroupPath,
        token: Option<&str>,
    ) -> Result<Page<ManagedInstanceInfo>, ApiError> {
        self.tick();
        self.inner.list_managed_instances(g, token).await
    }
    async fn list_errors(
        &self,
        g: &GroupPath,
        token: Option<&str>,
    ) -> Result<Page<GroupError>, ApiError> {
        self.tick();
        self.inner.list_errors(g, token).await
    }
    async fn list_instances(
        &self,
        project: &str,
        zone: &str,
        filter: &str,
        token: Option<&str>,
    ) -> Result<Page<InstanceInfo>, ApiError> {
        self.tick();
        self.inner
            .list_instances(project, zone, filter, token)
            .await
    }
    async fn list_zone_operations(
        &self,
        project: &str,
        zone: &str,
        filter: &str,
        token: Option<&str>,
    ) -> Result<Page<ZoneOperationInfo>, ApiError> {
        self.tick();
        self.inner
            .list_zone_operations(project, zone, filter, token)
            .await
    }
    async fn get_instance(&self, p: &str, z: &str, n: &str) -> Result<InstanceInfo, ApiError> {
        self.tick();
        self.inner.get_instance(p, z, n).await
    }
    async fn set_metadata(
        &self,
        p: &str,
        z: &str,
        n: &str,
        fingerprint: Option<&[u8]>,
        items: &[(String, String)],
        id: &str,
    ) -> Result<OperationInfo, ApiError> {
        self.tick();
        self.inner
            .set_metadata(p, z, n, fingerprint, items, id)
            .await
    }
    async fn get_guest_attribute(
        &self,
        p: &str,
        z: &str,
        n: &str,
        key: &str,
    ) -> Result<Option<String>, ApiError> {
        self.tick();
        self.inner.get_guest_attribute(p, z, n, key).await
    }
    async fn get_zone_operation(
        &self,
        p: &str,
        z: &str,
        op: &str,
    ) -> Result<OperationInfo, ApiError> {
        self.tick();
        self.inner.get_zone_operation(p, z, op).await
    }
}

/// One pool's group as read.
struct PoolRead {
    pool: String,
    group: Option<GroupPath>,
    result: Result<(GroupInfo, Vec<ManagedInstanceInfo>, Vec<LaunchFailure>), ExecutorError>,
}

/// `(project, zone, name)`: how GCE identifies an instance.
type Key = (String, String, String);

fn instance_id((p, z, n): &Key) -> String {
    format!("projects/{p}/zones/{z}/instances/{n}")
}

/// `projects/P/zones/Z/instances/N` out of a full or partial instance URL.
fn key_of_url(url: &str) -> Option<Key> {
    let at = url.find("projects/")?;
    let parts: Vec<&str> = url[at..].split('/').collect();
    match parts.as_slice() {
        ["projects", p, "zones", z, "instances", n, ..] => {
            Some((p.to_string(), z.to_string(), n.to_string()))
        }
        _ => None,
    }
}

fn utc(t: Option<DateTime<FixedOffset>>) -> Option<DateTime<Utc>> {
    t.map(|t| t.with_timezone(&Utc))
}

/// `zones/Z/instanceGroupManagers/N` or `regions/R/…`: a group's identity without its project,
/// because `created-by` names the project by number and a pool's path names it by id.
fn group_tail(path: &str) -> Option<String> {
    let at = path
        .find("zones/")
        .or_else(|| path.find("regions/"))
        .filter(|&i| i == 0 || path.as_bytes()[i - 1] == b'/')?;
    Some(path[at..].trim_end_matches('/').to_string())
}

fn tail_of(g: &GroupPath) -> String {
    match &g.location {
        Location::Zone(z) => format!("zones/{z}/instanceGroupManagers/{}", g.name),
        Location::Region(r) => format!("regions/{r}/instanceGroupManagers/{}", g.name),
    }
}

/// Maps the managed-instance action and the instance status onto the shared states.
fn state_of(action: Option<&str>, status: Option<&str>) -> InstanceState {
    match action {
        Some("DELETING" | "ABANDONING") => return InstanceState::Terminating,
        Some("CREATING" | "CREATING_WITHOUT_RETRIES" | "RECREATING" | "VERIFYING") => {
            return InstanceState::Pending
        }
        _ => {}
    }
    match status {
        Some("PROVISIONING" | "STAGING") => InstanceState::Pending,
        Some("RUNNING") => InstanceState::Running,
        Some("STOPPING" | "STOPPED" | "SUSPENDING" | "SUSPENDED" | "TERMINATED") => {
            InstanceState::Stopped
        }
        None if action.is_some() => InstanceState::Pending,
        _ => InstanceState::Other,
    }
}

impl GceMigExecutor {
    async fn read_pool(applier: &Applier, pool: &WorkerPool) -> PoolRead {
        let group = match applier.group_for(pool, Plan::default()) {
            Ok(g) => g,
            Err(e) => {
                return PoolRead {
                    pool: pool.name.clone(),
                    group: None,
                    result: Err(e),
                }
            }
        };
        let info = applier
            .retry(&pool.name, "get", &group, || {
                applier.api().get_group(&group)
            })
            .await
            .map_err(|e| applier.api_error(&pool.name, "reading", &group, e));
        let result = match info {
            Ok(info) => match applier.list_managed(&pool.name, &group).await {
                // Members stuck creating with errors are launches the cloud cannot do;
                // `listErrors` (read only then) dates them.
                Ok(m) => applier
                    .read_launch_failures(&pool.name, &group, &m, &HashMap::new())
                    .await
                    .map(|f| (info, m, f)),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        PoolRead {
            pool: pool.name.clone(),
            group: Some(group),
            result,
        }
    }

    async fn list_all<T, F, Fut>(
        applier: &Applier,
        pool: &str,
        group: &GroupPath,
        doing: &str,
        call: F,
    ) -> Result<Vec<T>, ExecutorError>
    where
        F: Fn(Option<String>) -> Fut,
        Fut: std::future::Future<Output = Result<Page<T>, ApiError>>,
    {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = applier
                .retry(pool, doing, group, || call(token.clone()))
                .await
                .map_err(|e| applier.api_error(pool, doing, group, e))?;
            out.extend(page.items);
            match page.next_page_token {
                Some(t) => token = Some(t),
                None => return Ok(out),
            }
        }
    }

    async fn snapshot(
        &self,
        applier: &Applier,
        pools: &[&WorkerPool],
    ) -> Result<InventorySnapshot, ExecutorError> {
        // Futures collected first: a closure inside the stream would defeat the `Send` proof
        // that `async_trait` needs (higher-ranked lifetimes).
        let reading: Vec<_> = pools.iter().map(|p| Self::read_pool(applier, p)).collect();
        let reads: Vec<PoolRead> = stream::iter(reading).buffered(CONCURRENCY).collect().await;

        // Zones to look in, each with the first pool/group found there (for errors and logs).
        let mut zones: BTreeMap<(String, String), (String, GroupPath)> = BTreeMap::new();
        for r in &reads {
            let Some(g) = &r.group else { continue };
            let mut add = |zone: &str| {
                zones
                    .entry((g.project.clone(), zone.to_string()))
                    .or_insert_with(|| (r.pool.clone(), g.clone()));
            };
            if let Location::Zone(z) = &g.location {
                add(z);
            }
            if let Ok((info, managed, _)) = &r.result {
                for z in &info.zones {
                    add(z);
                }
                for m in managed {
                    add(&m.zone);
                }
            }
        }

        // Every labelled instance in those zones.
        let api = applier.api();
        let listing: Vec<_> = zones
            .iter()
            .map(|((project, zone), (pool, group))| async move {
                let doing = format!(
                    "listing instances labelled {TAG_WORKER}=true in zone {zone} (project {project}) near"
                );
                let items = Self::list_all(applier, pool, group, &doing, |t| async move {
                    api.list_instances(project, zone, WORKER_FILTER, t.as_deref())
                        .await
                })
                .await?;
                Ok(items
                    .into_iter()
                    .map(|i| ((project.clone(), zone.clone(), i.name.clone()), i))
                    .collect::<Vec<(Key, InstanceInfo)>>())
            })
            .collect();
        let listed: Vec<Result<Vec<(Key, InstanceInfo)>, ExecutorError>> =
            stream::iter(listing).buffered(CONCURRENCY).collect().await;
        let mut resources: HashMap<Key, InstanceInfo> = HashMap::new();
        for l in listed {
            resources.extend(l?);
        }

        // Members: which group holds each, and which lack the label (described by name).
        let mut member_of: HashMap<Key, (usize, ManagedInstanceInfo)> = HashMap::new();
        let mut unlabelled: BTreeMap<(String, String), (Vec<String>, String, GroupPath)> =
            BTreeMap::new();
        let mut deleting_zones: BTreeMap<(String, String), (String, GroupPath)> = BTreeMap::new();
        for (idx, r) in reads.iter().enumerate() {
            let (Some(g), Ok((_, managed, _))) = (&r.group, &r.result) else {
                continue;
            };
            for m in managed {
                let key = key_of_url(&m.url)
                    .unwrap_or_else(|| (g.project.clone(), m.zone.clone(), m.name.clone()));
                if !resources.contains_key(&key) && valid_name(&key.2) {
                    unlabelled
                        .entry((key.0.clone(), key.1.clone()))
                        .or_insert_with(|| (Vec::new(), r.pool.clone(), g.clone()))
                        .0
                        .push(key.2.clone());
                }
                if matches!(m.current_action.as_str(), "DELETING" | "ABANDONING") {
                    deleting_zones
                        .entry((key.0.clone(), key.1.clone()))
                        .or_insert_with(|| (r.pool.clone(), g.clone()));
                }
                member_of.insert(key, (idx, m.clone()));
            }
        }
        for ((project, zone), (names, pool, group)) in &unlabelled {
            for chunk in names.chunks(FILTER_CHUNK) {
                let filter = chunk
                    .iter()
                    .map(|n| format!("(name = \"{n}\")"))
                    .collect::<Vec<_>>()
                    .join(" OR ");
                let doing = format!("describing unlabelled members in zone {zone} of");
                let filter = &filter;
                let items = Self::list_all(applier, pool, group, &doing, |t| async move {
                    api.list_instances(project, zone, filter, t.as_deref())
                        .await
                })
                .await?;
                for i in items {
                    resources.insert((project.clone(), zone.clone(), i.name.clone()), i);
                }
            }
        }

        // When each deletion started: the instance's own `delete` operation.
        let mut delete_started: HashMap<Key, DateTime<Utc>> = HashMap::new();
        for ((project, zone), (pool, group)) in &deleting_zones {
            let doing = format!("listing delete operations in zone {zone} for");
            let ops = Self::list_all(applier, pool, group, &doing, |t| async move {
                api.list_zone_operations(project, zone, DELETE_FILTER, t.as_deref())
                    .await
            })
            .await?;
            for op in ops {
                if op.operation_type != "delete" || op.status == "DONE" {
                    continue;
                }
                if let (Some(k), Some(t)) = (key_of_url(&op.target), utc(op.inserted)) {
                    let e = delete_started.entry(k).or_insert(t);
                    *e = (*e).min(t);
                }
            }
        }

        // Instances, each once: members first, then labelled instances outside the groups.
        let targets: Vec<Option<String>> = reads
            .iter()
            .map(|r| r.group.as_ref().map(|g| g.to_string()))
            .collect();
        let by_tail: HashMap<String, String> = reads
            .iter()
            .filter_map(|r| r.group.as_ref())
            .map(|g| (tail_of(g), g.to_string()))
            .collect();
        let mut keys: BTreeSet<Key> = member_of.keys().cloned().collect();
        keys.extend(resources.keys().cloned());
        let mut instances = Vec::with_capacity(keys.len());
        for key in keys {
            let res = resources.get(&key);
            let member = member_of.get(&key);
            let group = match member {
                Some((idx, _)) => targets[*idx].clone(),
                None => res.and_then(|i| i.created_by.as_deref()).map(|c| {
                    group_tail(c)
                        .and_then(|t| by_tail.get(&t).cloned())
                        .unwrap_or_else(|| c[c.find("projects/").unwrap_or(0)..].to_string())
                }),
            };
            let action = member.map(|(_, m)| m.current_action.as_str());
            let status = res
                .and_then(|i| i.status.as_deref())
                .or_else(|| member.and_then(|(_, m)| m.instance_status.as_deref()));
            let state = state_of(action, status);
            let raw_state = match (status, action) {
                (Some(s), Some(a)) if a != "NONE" => format!("{s}/{a}"),
                (Some(s), _) => s.to_string(),
                (None, Some(a)) => a.to_string(),
                (None, None) => "UNKNOWN".to_string(),
            };
            let launched = utc(res.and_then(|i| i.created));
            let state_since = match state {
                InstanceState::Terminating => delete_started
                    .get(&key)
                    .copied()
                    .or_else(|| utc(res.and_then(|i| i.last_stop))),
                InstanceState::Running => utc(res.and_then(|i| i.last_start)).or(launched),
                InstanceState::Stopped => utc(res.and_then(|i| i.last_stop)),
                _ => launched,
            };
            let (project, zone, name) = &key;
            let mut hostnames = vec![
                name.clone(),
                format!("{name}.{zone}.c.{project}.internal"),
                format!("{name}.c.{project}.internal"),
            ];
            if let Ok(h) = render_hostname(&applier.cfg().hostname_match, name, zone, project) {
                hostnames.push(h);
            }
            if let Some(i) = res {
                hostnames.extend(i.hostname.iter().cloned());
                hostnames.extend(i.network_ips.iter().cloned());
            }
            // Most telling first (messages quote the first few); each once.
            let mut seen = BTreeSet::new();
            let hostnames: Vec<String> = hostnames
                .into_iter()
                .map(|h| h.trim().to_ascii_lowercase())
                .filter(|h| !h.is_empty() && seen.insert(h.clone()))
                .collect();
            instances.push(InventoryInstance {
                id: instance_id(&key),
                name: name.clone(),
                zone: Some(zone.clone()),
                group,
                tags: res.map(|i| i.labels.clone()).unwrap_or_default(),
                state,
                raw_state,
                state_since,
                launched,
                hostnames,
                described: res.is_some(),
                protected_from_scale_in: false,
            });
        }

        let wpi = applier.cfg().workers_per_instance;
        let pools_out = reads
            .into_iter()
            .map(|r| {
                let group = r.result.map(|(info, managed, launch_failures)| {
                    let g = r.group.as_ref().expect("a read group has a path");
                    InventoryGroup {
                        pool: r.pool.clone(),
                        target: g.to_string(),
                        desired: info.target_size,
                        min: None,
                        max: None,
                        members: managed
                            .iter()
                            .map(|m| {
                                instance_id(&key_of_url(&m.url).unwrap_or_else(|| {
                                    (g.project.clone(), m.zone.clone(), m.name.clone())
                                }))
                            })
                            .collect(),
                        workers_per_instance: wpi,
                        desired_since: None,
                        launch_failures,
                    }
                });
                PoolInventory {
                    pool_tag: label_value(&r.pool),
                    pool: r.pool,
                    group,
                }
            })
            .collect();
        Ok(InventorySnapshot {
            pools: pools_out,
            instances,
            scope: zones
                .keys()
                .map(|(p, z)| format!("projects/{p}/zones/{z}"))
                .collect(),
            api_calls: 0,
        })
    }
}

#[async_trait]
impl Inventory for GceMigExecutor {
    async fn inventory(&self, pools: &[&WorkerPool]) -> Result<InventorySnapshot, ExecutorError> {
        let counting = Arc::new(Counting {
            inner: self.applier.api().clone(),
            calls: AtomicU32::new(0),
        });
        let applier = Applier::new(counting.clone(), self.applier.cfg().clone());
        let mut snap = self.snapshot(&applier, pools).await?;
        snap.api_calls = counting.calls.load(Ordering::Relaxed);
        Ok(snap)
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn urls_and_group_tails() {
        let k =
            key_of_url("https://www.googleapis.com/compute/v1/projects/p/zones/z-a/instances/w-1")
                .unwrap();
        assert_eq!(k, ("p".into(), "z-a".into(), "w-1".into()));
        assert_eq!(instance_id(&k), "projects/p/zones/z-a/instances/w-1");
        assert_eq!(key_of_url("zones/z/instances/w"), None);
        assert_eq!(
            group_tail("projects/123456/zones/z-a/instanceGroupManagers/g").as_deref(),
            Some("zones/z-a/instanceGroupManagers/g")
        );
        assert_eq!(
            group_tail("projects/123/regions/r1/instanceGroupManagers/g").as_deref(),
            Some("regions/r1/instanceGroupManagers/g")
        );
        assert_eq!(group_tail("projects/ozones/x"), None);
    }

    #[test]
    fn states_map_onto_the_shared_ones() {
        use InstanceState::*;
        assert_eq!(state_of(Some("NONE"), Some("RUNNING")), Running);
        assert_eq!(state_of(Some("DELETING"), Some("RUNNING")), Terminating);
        assert_eq!(state_of(Some("CREATING"), None), Pending);
        assert_eq!(state_of(Some("NONE"), Some("STAGING")), Pending);
        assert_eq!(state_of(None, Some("TERMINATED")), Stopped);
        assert_eq!(state_of(None, Some("REPAIRING")), Other);
    }
}

#[cfg(test)]
mod against_the_double;
