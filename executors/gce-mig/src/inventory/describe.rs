//! The audit's decisions, without I/O: which zones to look in, what each group member is,
//! and how an instance, a group and a pool are described in the shared inventory terms.

use crate::client::{GroupInfo, InstanceInfo, ManagedInstanceInfo};
use crate::config::Config;
use crate::names::{label_value, render_hostname};
use crate::target::{valid_name, GroupPath, Location};
use autoscaler_executor::{
    ExecutorError, InstanceState, InventoryGroup, InventoryInstance, LaunchFailure, PoolInventory,
};
use chrono::{DateTime, FixedOffset, Utc};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// One pool's group as read.
pub(super) struct PoolRead {
    /// The pool's name.
    pub(super) pool: String,
    /// Its group, unless the path did not render or parse.
    pub(super) group: Option<GroupPath>,
    /// The group, its members and their launch failures, or why they could not be read.
    pub(super) result:
        Result<(GroupInfo, Vec<ManagedInstanceInfo>, Vec<LaunchFailure>), ExecutorError>,
}

/// `(project, zone, name)`: how GCE identifies an instance.
pub(super) type Key = (String, String, String);

/// The instance's id in the shared inventory: its path, unique across projects and zones.
pub(super) fn instance_id((p, z, n): &Key) -> String {
    format!("projects/{p}/zones/{z}/instances/{n}")
}

/// `projects/P/zones/Z/instances/N` out of a full or partial instance URL.
pub(super) fn key_of_url(url: &str) -> Option<Key> {
    let at = url.find("projects/")?;
    let parts: Vec<&str> = url[at..].split('/').collect();
    match parts.as_slice() {
        ["projects", p, "zones", z, "instances", n, ..] => {
            Some((p.to_string(), z.to_string(), n.to_string()))
        }
        _ => None,
    }
}

/// Compute's timestamps carry an offset; the shared inventory speaks UTC.
pub(super) fn utc(t: Option<DateTime<FixedOffset>>) -> Option<DateTime<Utc>> {
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

/// A group's [`group_tail`], to match `created-by` against the pools' groups.
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

/// Zones to look in, each with the first pool/group found there (for errors and logs): a
/// zonal group's zone, the zones a group places instances in, and its members' zones.
pub(super) fn zones_to_look_in(
    reads: &[PoolRead],
) -> BTreeMap<(String, String), (String, GroupPath)> {
    let mut zones: BTreeMap<(String, String), (String, GroupPath)> = BTreeMap::new();
    for r in reads {
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
    zones
}

/// Per `(project, zone)`, the pool and group a follow-up listing there is made for.
pub(super) type ZoneOwners = BTreeMap<(String, String), (String, GroupPath)>;

/// The groups' members, sorted out against the labelled instances already listed.
pub(super) struct Members {
    /// Which read (by index) holds each member, and its managed-instance entry.
    pub(super) member_of: HashMap<Key, (usize, ManagedInstanceInfo)>,
    /// Per zone, members that lack the label (so were not listed), to describe by name.
    pub(super) unlabelled: BTreeMap<(String, String), (Vec<String>, String, GroupPath)>,
    /// Zones with members being deleted, whose deletions are dated by their operations.
    pub(super) deleting_zones: ZoneOwners,
}

impl Members {
    /// Sorts out every member of every group that was read.
    pub(super) fn of(reads: &[PoolRead], labelled: &HashMap<Key, InstanceInfo>) -> Members {
        let mut out = Members {
            member_of: HashMap::new(),
            unlabelled: BTreeMap::new(),
            deleting_zones: BTreeMap::new(),
        };
        for (idx, r) in reads.iter().enumerate() {
            let (Some(g), Ok((_, managed, _))) = (&r.group, &r.result) else {
                continue;
            };
            for m in managed {
                let key = key_of_url(&m.url)
                    .unwrap_or_else(|| (g.project.clone(), m.zone.clone(), m.name.clone()));
                if !labelled.contains_key(&key) && valid_name(&key.2) {
                    out.unlabelled
                        .entry((key.0.clone(), key.1.clone()))
                        .or_insert_with(|| (Vec::new(), r.pool.clone(), g.clone()))
                        .0
                        .push(key.2.clone());
                }
                if matches!(m.current_action.as_str(), "DELETING" | "ABANDONING") {
                    out.deleting_zones
                        .entry((key.0.clone(), key.1.clone()))
                        .or_insert_with(|| (r.pool.clone(), g.clone()));
                }
                out.member_of.insert(key, (idx, m.clone()));
            }
        }
        out
    }
}

/// Every instance once, members first, then labelled instances outside the groups.
pub(super) fn describe_instances(
    cfg: &Config,
    reads: &[PoolRead],
    member_of: &HashMap<Key, (usize, ManagedInstanceInfo)>,
    resources: &HashMap<Key, InstanceInfo>,
    delete_started: &HashMap<Key, DateTime<Utc>>,
) -> Vec<InventoryInstance> {
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
    keys.into_iter()
        .map(|key| {
            let res = resources.get(&key);
            let member = member_of.get(&key);
            let group = match member {
                Some((idx, _)) => targets[*idx].clone(),
                None => res
                    .and_then(|i| i.created_by.as_deref())
                    .map(|c| group_of_created_by(c, &by_tail)),
            };
            describe_instance(
                cfg,
                &key,
                res,
                member.map(|(_, m)| m),
                group,
                delete_started,
            )
        })
        .collect()
}

/// The pool group an instance's `created-by` names, else the path it names.
fn group_of_created_by(created_by: &str, by_tail: &HashMap<String, String>) -> String {
    group_tail(created_by)
        .and_then(|t| by_tail.get(&t).cloned())
        .unwrap_or_else(|| created_by[created_by.find("projects/").unwrap_or(0)..].to_string())
}

/// One instance in the shared terms, from its resource (when listed) and its group entry.
fn describe_instance(
    cfg: &Config,
    key: &Key,
    res: Option<&InstanceInfo>,
    member: Option<&ManagedInstanceInfo>,
    group: Option<String>,
    delete_started: &HashMap<Key, DateTime<Utc>>,
) -> InventoryInstance {
    let action = member.map(|m| m.current_action.as_str());
    let status = res
        .and_then(|i| i.status.as_deref())
        .or_else(|| member.and_then(|m| m.instance_status.as_deref()));
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
            .get(key)
            .copied()
            .or_else(|| utc(res.and_then(|i| i.last_stop))),
        InstanceState::Running => utc(res.and_then(|i| i.last_start)).or(launched),
        InstanceState::Stopped => utc(res.and_then(|i| i.last_stop)),
        _ => launched,
    };
    let (_, zone, name) = key;
    InventoryInstance {
        id: instance_id(key),
        name: name.clone(),
        zone: Some(zone.clone()),
        group,
        tags: res.map(|i| i.labels.clone()).unwrap_or_default(),
        state,
        raw_state,
        state_since,
        launched,
        hostnames: hostnames_of(cfg, key, res),
        described: res.is_some(),
        protected_from_scale_in: false,
    }
}

/// The names a worker on the instance may report, most telling first (messages quote the
/// first few), each once.
fn hostnames_of(
    cfg: &Config,
    (project, zone, name): &Key,
    res: Option<&InstanceInfo>,
) -> Vec<String> {
    let mut hostnames = vec![
        name.clone(),
        format!("{name}.{zone}.c.{project}.internal"),
        format!("{name}.c.{project}.internal"),
    ];
    if let Ok(h) = render_hostname(&cfg.hostname_match, name, zone, project) {
        hostnames.push(h);
    }
    if let Some(i) = res {
        hostnames.extend(i.hostname.iter().cloned());
        hostnames.extend(i.network_ips.iter().cloned());
    }
    let mut seen = BTreeSet::new();
    hostnames
        .into_iter()
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty() && seen.insert(h.clone()))
        .collect()
}

/// Each pool with its group as read (or the error that kept it from being read).
pub(super) fn pools_of(reads: Vec<PoolRead>, wpi: u32) -> Vec<PoolInventory> {
    reads
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
        .collect()
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
