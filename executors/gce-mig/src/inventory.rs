//! The read-only fleet description behind `autoscaler audit`: each pool's managed instance
//! group and every instance labelled `vespene_worker=true` in the zones those groups use.
//!
//! Requests per audit: per pool one `get` and one `listManagedInstances` (one more per 500
//! members); per zone one `instances.list` filtered on the label (one more per 500 instances);
//! and only when needed, one name-filtered `instances.list` per zone for group members that
//! lack the label, and one `zoneOperations.list` per zone that has members being deleted (to
//! date the deletion), and one `listErrors` per group that has members failing to launch (to
//! date the failure). Nothing is ever written.

mod counting;
mod describe;

use crate::apply::Applier;
use crate::client::{name_filters, ApiError, InstanceInfo, Page};
use crate::target::GroupPath;
use crate::GceMigExecutor;
use async_trait::async_trait;
use autoscaler_executor::inventory::TAG_WORKER;
use autoscaler_executor::{ExecutorError, Inventory, InventorySnapshot, WorkerPool};
use chrono::{DateTime, Utc};
use counting::Counting;
use describe::{
    describe_instances, key_of_url, pools_of, utc, zones_to_look_in, Key, Members, PoolRead,
    ZoneOwners,
};
use futures::stream::{self, StreamExt};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// Groups (and zones) read at the same time: enough to hide latency, few enough to stay far
/// below Compute's per-second read quota.
const CONCURRENCY: usize = 8;
/// The server-side filter that finds every worker in a zone, whoever launched it.
pub const WORKER_FILTER: &str = "labels.vespene_worker = \"true\"";
/// The server-side filter for instance deletions still in progress.
pub const DELETE_FILTER: &str = "(operationType = \"delete\") AND (status != \"DONE\")";

impl GceMigExecutor {
    /// One pool's group, members and launch failures; a pool that cannot be read fails alone.
    async fn read_pool(applier: &Applier, pool: &WorkerPool) -> PoolRead {
        let group = match applier.group_for(pool) {
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

    /// Every page of a list call, each page through the retry loop.
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

    /// The audit's reads, in order: every pool's group and members, the labelled instances
    /// of their zones, the members those missed, and when each deletion under way started.
    async fn snapshot(
        &self,
        applier: &Applier,
        pools: &[&WorkerPool],
    ) -> Result<InventorySnapshot, ExecutorError> {
        // Futures collected first: a closure inside the stream would defeat the `Send` proof
        // that `async_trait` needs (higher-ranked lifetimes).
        let reading: Vec<_> = pools.iter().map(|p| Self::read_pool(applier, p)).collect();
        let reads: Vec<PoolRead> = stream::iter(reading).buffered(CONCURRENCY).collect().await;
        let zones = zones_to_look_in(&reads);
        let mut resources = Self::list_labelled(applier, &zones).await?;
        let members = Members::of(&reads, &resources);
        Self::describe_unlabelled(applier, &members.unlabelled, &mut resources).await?;
        let delete_started = Self::deletions_started(applier, &members.deleting_zones).await?;
        let instances = describe_instances(
            applier.cfg(),
            &reads,
            &members.member_of,
            &resources,
            &delete_started,
        );
        Ok(InventorySnapshot {
            pools: pools_of(reads, applier.cfg().workers_per_instance),
            instances,
            scope: zones
                .keys()
                .map(|(p, z)| format!("projects/{p}/zones/{z}"))
                .collect(),
            api_calls: 0,
        })
    }

    /// Every instance labelled as a worker in `zones`.
    async fn list_labelled(
        applier: &Applier,
        zones: &ZoneOwners,
    ) -> Result<HashMap<Key, InstanceInfo>, ExecutorError> {
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
        Ok(resources)
    }

    /// Adds to `resources` the members that lack the label, found by name.
    async fn describe_unlabelled(
        applier: &Applier,
        unlabelled: &BTreeMap<(String, String), (Vec<String>, String, GroupPath)>,
        resources: &mut HashMap<Key, InstanceInfo>,
    ) -> Result<(), ExecutorError> {
        let api = applier.api();
        for ((project, zone), (names, pool, group)) in unlabelled {
            for filter in name_filters(names) {
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
        Ok(())
    }

    /// When each deletion under way in `zones` started: the instance's own `delete` operation.
    async fn deletions_started(
        applier: &Applier,
        zones: &ZoneOwners,
    ) -> Result<HashMap<Key, DateTime<Utc>>, ExecutorError> {
        let api = applier.api();
        let mut delete_started: HashMap<Key, DateTime<Utc>> = HashMap::new();
        for ((project, zone), (pool, group)) in zones {
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
        Ok(delete_started)
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
mod against_the_double;
