//! The read-only fleet description behind `autoscaler audit`: each pool's Auto Scaling group
//! and every instance tagged `vespene_worker=true` in the region.
//!
//! Requests per audit: one `DescribeAutoScalingGroups` per 100 groups; one `DescribeInstances`
//! filtered on `tag:vespene_worker=true` and `instance-state-name` pending/running (one more per
//! page); and, only for group members that lack the tag (or are stopped), one `DescribeInstances`
//! by `instance-id` per 200 of them; per group below its desired capacity, one
//! `DescribeScalingActivities` for its failing launches ([`crate::launch`]); per group with a
//! warm pool, one `DescribeWarmPool` (its instances are listed as the group's members, in
//! `Warmed:*` states that are never capacity). Nothing is ever written.

use crate::client::{ApiError, AsgApi, Ec2Instance, GroupInfo, GroupInstance, DESCRIBE_BATCH};
use crate::launch::current_failures;
use crate::policy::{capacity, group_name, unsupported_capacity};
use crate::run::Applier;
use async_trait::async_trait;
use autoscaler_executor::{
    ErrorKind, ExecutorError, InstanceState, InventoryGroup, InventoryInstance, InventorySnapshot,
    LaunchFailure, PoolInventory, WorkerPool,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The tag AWS puts on every instance a group launched.
pub(crate) const TAG_GROUP: &str = "aws:autoscaling:groupName";

/// Maps EC2's state and, for a member, the group's lifecycle state to the shared terms. The
/// lifecycle state wins where it says more (a running instance in `Terminating:Wait` is on its
/// way out).
pub(crate) fn instance_state(ec2_state: &str, lifecycle: Option<&str>) -> InstanceState {
    if let Some(l) = lifecycle {
        // In the warm pool (only `DescribeWarmPool` lists these): never capacity, so never
        // running or pending for the audit's drift, whatever EC2 says of the machine (one going
        // back to the warm pool still runs while it drains on the hook).
        if let Some(w) = l.strip_prefix("Warmed:") {
            return if w.starts_with("Terminat") {
                InstanceState::Terminating
            } else {
                InstanceState::Stopped
            };
        }
        if l.starts_with("Pending") {
            return InstanceState::Pending;
        }
        if l.starts_with("Terminating") || l == "Terminated" || l.starts_with("Detach") {
            return InstanceState::Terminating;
        }
        if l.contains("Standby") {
            return InstanceState::Stopped;
        }
    }
    match ec2_state {
        "pending" => InstanceState::Pending,
        "running" => InstanceState::Running,
        "shutting-down" | "terminated" => InstanceState::Terminating,
        "stopping" | "stopped" => InstanceState::Stopped,
        "" => match lifecycle {
            Some("InService") => InstanceState::Running,
            _ => InstanceState::Other,
        },
        _ => InstanceState::Other,
    }
}

/// Every name the worker on this instance may report as `workers.hostname`, lowercase: private
/// DNS name and its first label, private IP, instance id.
pub(crate) fn hostnames(id: &str, ec2: Option<&Ec2Instance>) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(e) = ec2 {
        if let Some(dns) = &e.private_dns_name {
            let dns = dns.trim_end_matches('.').to_ascii_lowercase();
            if let Some((short, _)) = dns.split_once('.') {
                out.push(short.to_string());
            }
            out.push(dns);
        }
        if let Some(ip) = &e.private_ip {
            out.push(ip.to_ascii_lowercase());
        }
    }
    out.push(id.to_ascii_lowercase());
    out.dedup();
    out
}

fn to_instance(
    id: &str,
    ec2: Option<&Ec2Instance>,
    member: Option<&GroupInstance>,
) -> InventoryInstance {
    let lifecycle = member.map(|m| m.lifecycle_state.as_str());
    let ec2_state = ec2.map(|e| e.state.as_str()).unwrap_or("");
    let raw_state = match (ec2.map(|e| e.state.as_str()), lifecycle) {
        (Some(s), Some(l)) if !s.is_empty() => format!("{s}/{l}"),
        (Some(s), None) => s.to_string(),
        (_, Some(l)) => l.to_string(),
        _ => String::new(),
    };
    let tags = ec2.map(|e| e.tags.clone()).unwrap_or_default();
    // An Auto Scaling group's name is its target name: no normalisation needed.
    let group = tags.get(TAG_GROUP).cloned();
    InventoryInstance {
        id: id.to_string(),
        name: tags.get("Name").cloned().unwrap_or_else(|| id.to_string()),
        zone: ec2.and_then(|e| e.zone.clone()),
        group,
        state: instance_state(ec2_state, lifecycle),
        raw_state,
        state_since: None,
        launched: ec2.and_then(|e| e.launch_time),
        hostnames: hostnames(id, ec2),
        described: ec2.is_some(),
        protected_from_scale_in: member.is_some_and(|m| m.protected_from_scale_in),
        tags,
    }
}

/// Each group's description (or the failure of the call that should have given it).
type Groups = HashMap<String, Result<GroupInfo, ApiError>>;

/// Each read group's launch failures (or the failure of reading them).
type Failing = HashMap<String, Result<Vec<LaunchFailure>, ApiError>>;

/// The snapshot's reads, each counted, so the audit can report what it cost.
struct Reads<'a> {
    api: &'a dyn AsgApi,
    /// Requests sent.
    calls: u32,
}

impl Reads<'_> {
    /// One `DescribeAutoScalingGroups` per 100 names; a failed call fails its names only.
    async fn groups(&mut self, wanted: &[String]) -> Groups {
        let mut groups: Groups = HashMap::new();
        for chunk in wanted.chunks(DESCRIBE_BATCH) {
            self.calls += 1;
            match self.api.describe_groups(chunk).await {
                Ok(found) => {
                    for g in found {
                        groups.insert(g.name.clone(), Ok(g));
                    }
                }
                Err(e) => {
                    for n in chunk {
                        groups.insert(n.clone(), Err(e.clone()));
                    }
                }
            }
        }
        groups
    }

    /// A group's warm pool belongs to it: its instances are listed as members (in
    /// `Warmed:*` states, never capacity), or one going back to the warm pool, still
    /// running and tagged, would look like an instance no group manages.
    async fn warm_pools(&mut self, groups: &mut Groups) {
        let with_warm: Vec<String> = groups
            .iter()
            .filter(|(_, g)| g.as_ref().is_ok_and(|g| g.warm_pool.is_some()))
            .map(|(n, _)| n.clone())
            .collect();
        for n in with_warm {
            self.calls += 1;
            match self.api.describe_warm_pool(&n).await {
                Ok(w) => {
                    if let Some(Ok(g)) = groups.get_mut(&n) {
                        g.instances.extend(w.instances);
                    }
                }
                Err(e) => {
                    groups.insert(n, Err(e));
                }
            }
        }
    }

    /// The tagged instances, then the members the tag filter did not return (untagged,
    /// stopped) by id; a failure here fails the snapshot, reported on the `first` pool.
    async fn instances(
        &mut self,
        first: &str,
        members: &BTreeMap<String, GroupInstance>,
    ) -> Result<BTreeMap<String, Ec2Instance>, ExecutorError> {
        self.calls += 1;
        let tagged = self.api.describe_worker_instances().await.map_err(|e| {
            ExecutorError::new(
                first,
                e.kind,
                format!(
                    "listing instances tagged vespene_worker=true: {}",
                    e.message
                ),
            )
        })?;
        let mut ec2: BTreeMap<String, Ec2Instance> = tagged
            .into_iter()
            .map(|i| (i.instance_id.clone(), i))
            .collect();
        let missing: Vec<String> = members
            .keys()
            .filter(|id| !ec2.contains_key(*id))
            .cloned()
            .collect();
        for chunk in missing.chunks(200) {
            self.calls += 1;
            let got = self.api.describe_instances(chunk).await.map_err(|e| {
                ExecutorError::new(
                    first,
                    e.kind,
                    format!("describing group members: {}", e.message),
                )
            })?;
            for i in got {
                ec2.insert(i.instance_id.clone(), i);
            }
        }
        Ok(ec2)
    }

    /// Groups below their desired capacity: why AWS has not launched the rest. This process
    /// raised no size, so the failures run back to the last successful launch.
    async fn launch_failures(&mut self, groups: &Groups) -> Failing {
        let mut failing: Failing = HashMap::new();
        for g in groups.values().filter_map(|g| g.as_ref().ok()) {
            if capacity(g) < g.desired_capacity && unsupported_capacity(g).is_none() {
                self.calls += 1;
                let got = self
                    .api
                    .describe_scaling_activities(&g.name, crate::client::ACTIVITIES_READ)
                    .await
                    .map(|a| current_failures(&a, None));
                failing.insert(g.name.clone(), got);
            }
        }
        failing
    }
}

/// Every member of every described group, by instance id.
fn members_of(groups: &Groups) -> BTreeMap<String, GroupInstance> {
    groups
        .values()
        .filter_map(|g| g.as_ref().ok())
        .flat_map(|g| {
            g.instances
                .iter()
                .map(|i| (i.instance_id.clone(), i.clone()))
        })
        .collect()
}

impl Applier {
    /// The audit's snapshot; see the module docs for its cost.
    pub(crate) async fn inventory(
        &self,
        pools: &[&WorkerPool],
    ) -> Result<InventorySnapshot, ExecutorError> {
        let mut reads = Reads {
            api: self.api(),
            calls: 0,
        };
        let names: Vec<Result<String, ExecutorError>> =
            pools.iter().map(|p| group_name(p)).collect();
        let wanted: BTreeSet<String> = names
            .iter()
            .filter_map(|n| n.as_ref().ok().cloned())
            .collect();
        let wanted: Vec<String> = wanted.into_iter().collect();
        let mut groups = reads.groups(&wanted).await;
        reads.warm_pools(&mut groups).await;

        let first = pools.first().map(|p| p.name.as_str()).unwrap_or("-");
        let members = members_of(&groups);
        let ec2 = reads.instances(first, &members).await?;
        let failing = reads.launch_failures(&groups).await;

        let mut ids: BTreeSet<String> = ec2.keys().cloned().collect();
        ids.extend(members.keys().cloned());
        let instances = ids
            .iter()
            .map(|id| to_instance(id, ec2.get(id), members.get(id)))
            .collect();

        let pools_out = pools
            .iter()
            .zip(names)
            .map(|(p, name)| PoolInventory {
                pool: p.name.clone(),
                pool_tag: p.name.clone(),
                group: name.and_then(|n| self.pool_group(p, &n, &groups, &failing)),
            })
            .collect();

        Ok(InventorySnapshot {
            pools: pools_out,
            instances,
            scope: vec![match self.region() {
                Some(r) => format!("region {r}"),
                None => "the SDK's default region".to_string(),
            }],
            api_calls: reads.calls,
        })
    }

    /// One pool's row of the snapshot: its group `n` as read, or why it could not be judged.
    fn pool_group(
        &self,
        p: &WorkerPool,
        n: &str,
        groups: &Groups,
        failing: &Failing,
    ) -> Result<InventoryGroup, ExecutorError> {
        match groups.get(n) {
            // Its sizes are not instances: judging drift on them would mislead.
            Some(Ok(g)) if unsupported_capacity(g).is_some() => Err(ExecutorError::new(
                &p.name,
                ErrorKind::Config,
                format!(
                    "Auto Scaling group {n}: {}",
                    unsupported_capacity(g).unwrap_or_default()
                ),
            )),
            Some(Ok(g)) => Ok(InventoryGroup {
                pool: p.name.clone(),
                target: g.name.clone(),
                desired: g.desired_capacity,
                min: Some(g.min_size),
                max: Some(g.max_size),
                members: g.instances.iter().map(|i| i.instance_id.clone()).collect(),
                workers_per_instance: self.config().workers_per_instance_for(&p.name),
                desired_since: None,
                launch_failures: match failing.get(n) {
                    Some(Ok(f)) => f.clone(),
                    Some(Err(e)) => {
                        return Err(ExecutorError::new(
                            &p.name,
                            e.kind,
                            format!("Auto Scaling group {n}: {}", e.message),
                        ))
                    }
                    None => Vec::new(),
                },
            }),
            Some(Err(e)) => Err(ExecutorError::new(
                &p.name,
                e.kind,
                format!("Auto Scaling group {n}: {}", e.message),
            )),
            None => Err(ExecutorError::new(
                &p.name,
                ErrorKind::NotFound,
                format!("Auto Scaling group {n} not found{}", self.where_()),
            )),
        }
    }
}

#[async_trait]
impl autoscaler_executor::Inventory for crate::AwsAsgExecutor {
    /// Groups and tagged instances, read-only, for `autoscaler audit` (see the module docs).
    async fn inventory(&self, pools: &[&WorkerPool]) -> Result<InventorySnapshot, ExecutorError> {
        self.applier.inventory(pools).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_map_to_shared_terms() {
        assert_eq!(
            instance_state("running", Some("InService")),
            InstanceState::Running
        );
        assert_eq!(
            instance_state("running", Some("Terminating:Wait")),
            InstanceState::Terminating
        );
        assert_eq!(
            instance_state("pending", Some("Pending:Wait")),
            InstanceState::Pending
        );
        assert_eq!(
            instance_state("running", Some("Standby")),
            InstanceState::Stopped
        );
        assert_eq!(instance_state("stopped", None), InstanceState::Stopped);
        assert_eq!(
            instance_state("shutting-down", None),
            InstanceState::Terminating
        );
        assert_eq!(
            instance_state("", Some("InService")),
            InstanceState::Running
        );
        assert_eq!(instance_state("weird", None), InstanceState::Other);
        // The warm pool: never running or pending, whatever EC2 says of the machine.
        for (ec2, l) in [
            ("stopped", "Warmed:Stopped"),
            ("stopped", "Warmed:Hibernated"),
            ("running", "Warmed:Pending"),
            ("running", "Warmed:Pending:Wait"),
            ("running", "Warmed:Pending:Proceed"),
            ("running", "Warmed:Running"),
        ] {
            assert_eq!(instance_state(ec2, Some(l)), InstanceState::Stopped, "{l}");
        }
        assert_eq!(
            instance_state("running", Some("Warmed:Terminating:Wait")),
            InstanceState::Terminating
        );
    }

    #[test]
    fn hostnames_cover_every_rule() {
        let e = Ec2Instance {
            instance_id: "i-0AB".into(),
            private_dns_name: Some("IP-10-0-0-1.ec2.internal".into()),
            private_ip: Some("10.0.0.1".into()),
            ..Default::default()
        };
        assert_eq!(
            hostnames("i-0AB", Some(&e)),
            vec![
                "ip-10-0-0-1",
                "ip-10-0-0-1.ec2.internal",
                "10.0.0.1",
                "i-0ab"
            ]
        );
        assert_eq!(hostnames("i-1", None), vec!["i-1"]);
    }
}
