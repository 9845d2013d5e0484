//! Reading a group for scale-in: its members (`listManagedInstances`), their instance
//! resources (one name-filtered `instances.list` per zone, which already carries names, IPs,
//! labels and metadata, so nothing is fetched per instance), and, only for the instances asked
//! to drain, their agent's answer (`getGuestAttributes`). The result is the shared chooser's
//! [`Candidate`]s, so the steady state costs no extra request.

use crate::apply::Applier;
use crate::client::{name_filters, InstanceInfo, ManagedInstanceInfo};
use crate::names::{label_value, render_hostname};
use crate::target::{valid_name, GroupPath};
use autoscaler_executor::inventory::{TAG_POOL, TAG_WORKER};
use autoscaler_executor::scale_in::{
    Candidate, CandidateState, Drain, DRAIN_AGENT_VERSION, TAG_DRAIN_AGENT,
};
use autoscaler_executor::{ErrorKind, ExecutorError};
use chrono::Utc;
use std::collections::{BTreeMap, HashMap};
use tracing::warn;

/// The instance metadata key the executor sets to ask an instance's agent to drain (see the
/// drain protocol in `docs/scale-in.md#gce-step-by-step`).
pub const DRAIN_KEY: &str = "vespene-drain";
/// The value of [`DRAIN_KEY`] that means "drain".
pub const DRAIN_REQUESTED: &str = "requested";
/// The guest attribute (`namespace/key`) the agent answers in.
pub const ACK_KEY: &str = "vespene/drain";
/// The value of [`ACK_KEY`] that means "my workers have exited and I start no other".
pub const ACK_DONE: &str = "done";

/// One member of the group, as read this cycle.
#[derive(Clone, Debug)]
pub(crate) struct Member {
    /// Its `listManagedInstances` entry (URL, zone, action).
    pub managed: ManagedInstanceInfo,
    /// Its instance resource, when the VM exists.
    pub instance: Option<InstanceInfo>,
    /// What the chooser sees.
    pub candidate: Candidate,
}

/// A group as read for scale-in.
pub(crate) struct GroupRead {
    /// Every member, leaving ones included (their workers must still match an instance).
    pub members: Vec<Member>,
    /// Drain acknowledgements that could not be read: those instances count as not
    /// acknowledged, and the errors are reported once the cycle has acted.
    pub errors: Vec<ExecutorError>,
}

/// Where a member is, for removal. Instances a resize created are `Booting` until the guest
/// runs; a member whose VM runs is `Ready` even while the group still verifies it, because its
/// worker may already have claimed a build; stopped, suspended and leaving ones are never
/// removed by a scale-in.
pub(crate) fn candidate_state(m: &ManagedInstanceInfo, has_resource: bool) -> CandidateState {
    let action = m.current_action.as_str();
    let status = m.instance_status.as_deref();
    if matches!(action, "DELETING" | "ABANDONING") {
        return CandidateState::Excluded(format!("already leaving the group ({action})"));
    }
    if matches!(action, "STOPPING" | "SUSPENDING") {
        return CandidateState::Excluded(format!("standby ({action})"));
    }
    match status {
        None | Some("PROVISIONING") | Some("STAGING") => CandidateState::Booting,
        Some("RUNNING") if !has_resource => {
            CandidateState::Excluded("instance resource not found".into())
        }
        Some("RUNNING") => CandidateState::Ready,
        Some(other) => CandidateState::Excluded(format!("not running ({other})")),
    }
}

impl Applier {
    /// Every name a worker on `m` may report as `workers.hostname`: the instance name, its
    /// internal DNS names (zonal and global forms), a custom `hostname`, internal IPs, and the
    /// rendering of `hostname_match`.
    fn names_of(
        &self,
        pool: &str,
        group: &GroupPath,
        m: &ManagedInstanceInfo,
        inst: Option<&InstanceInfo>,
    ) -> Result<Vec<String>, ExecutorError> {
        let p = &group.project;
        let mut names = vec![
            m.name.clone(),
            format!("{}.{}.c.{p}.internal", m.name, m.zone),
            format!("{}.c.{p}.internal", m.name),
        ];
        if let Some(i) = inst {
            names.extend(i.hostname.iter().cloned());
            names.extend(i.network_ips.iter().cloned());
        }
        let rendered =
            render_hostname(&self.cfg().hostname_match, &m.name, &m.zone, p).map_err(|e| {
                ExecutorError::new(
                    pool,
                    ErrorKind::Config,
                    format!("[executors.gce-mig] hostname_match: {e}"),
                )
            })?;
        if !names.contains(&rendered) {
            names.push(rendered);
        }
        Ok(names)
    }

    /// Lists the group, describes its instances and reads the drain acknowledgements of the
    /// instances asked to drain.
    pub(crate) async fn read_group(
        &self,
        pool: &str,
        group: &GroupPath,
    ) -> Result<GroupRead, ExecutorError> {
        let managed = self.list_managed(pool, group).await?;
        let resources = self.describe(pool, group, &managed).await?;
        self.check_labels(
            pool,
            group,
            managed
                .iter()
                .filter(|m| !matches!(m.current_action.as_str(), "DELETING" | "ABANDONING"))
                .filter_map(|m| resources.get(&(m.zone.clone(), m.name.clone()))),
        );
        let mut members = Vec::with_capacity(managed.len());
        for m in managed {
            let inst = resources.get(&(m.zone.clone(), m.name.clone())).cloned();
            let state = candidate_state(&m, inst.is_some());
            let leaving = matches!(m.current_action.as_str(), "DELETING" | "ABANDONING");
            let asked =
                inst.as_ref().and_then(|i| i.metadata_value(DRAIN_KEY)) == Some(DRAIN_REQUESTED);
            let candidate = Candidate {
                id: m.name.clone(),
                names: self.names_of(pool, group, &m, inst.as_ref())?,
                created: inst
                    .as_ref()
                    .and_then(|i| i.created)
                    .map(|t| t.with_timezone(&Utc)),
                state,
                agent: inst
                    .as_ref()
                    .and_then(|i| i.labels.get(TAG_DRAIN_AGENT))
                    .is_some_and(|v| v == DRAIN_AGENT_VERSION),
                drain: if asked && !leaving {
                    Drain::Requested(None)
                } else {
                    Drain::None
                },
            };
            members.push(Member {
                managed: m,
                instance: inst,
                candidate,
            });
        }
        let mut errors = Vec::new();
        for mem in members.iter_mut() {
            // A standby VM (stopped, suspended) runs no agent that could answer, and the
            // chooser leaves excluded members alone anyway.
            if mem.candidate.drain == Drain::None
                || matches!(mem.candidate.state, CandidateState::Excluded(_))
            {
                continue;
            }
            let (zone, name) = (mem.managed.zone.clone(), mem.managed.name.clone());
            let read = self
                .retry(pool, "getGuestAttributes", group, || {
                    self.api()
                        .get_guest_attribute(&group.project, &zone, &name, ACK_KEY)
                })
                .await;
            match read {
                Ok(Some(v)) if v == ACK_DONE => mem.candidate.drain = Drain::Acknowledged,
                Ok(_) => {}
                Err(e) => {
                    let e = self.api_error(
                        pool,
                        &format!(
                            "reading the drain acknowledgement (guest attribute {ACK_KEY}) of instance {name} in zone {zone} of"
                        ),
                        group,
                        e,
                    );
                    warn!(pool, group = %group, instance = %name, error = %e, "drain acknowledgement unreadable; the instance stays");
                    errors.push(e);
                }
            }
        }
        Ok(GroupRead { members, errors })
    }

    pub(crate) async fn list_managed(
        &self,
        pool: &str,
        group: &GroupPath,
    ) -> Result<Vec<ManagedInstanceInfo>, ExecutorError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .retry(pool, "listManagedInstances", group, || {
                    self.api().list_managed_instances(group, token.as_deref())
                })
                .await
                .map_err(|e| self.api_error(pool, "listing the instances of", group, e))?;
            out.extend(page.items);
            match page.next_page_token {
                Some(t) => token = Some(t),
                None => return Ok(out),
            }
        }
    }

    /// Instance resources (creation time, labels) for the given managed instances, one filtered
    /// `instances.list` per zone (per 100 names).
    pub(crate) async fn describe(
        &self,
        pool: &str,
        group: &GroupPath,
        managed: &[ManagedInstanceInfo],
    ) -> Result<HashMap<(String, String), InstanceInfo>, ExecutorError> {
        let mut by_zone: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for m in managed {
            if valid_name(&m.name) {
                by_zone
                    .entry(m.zone.as_str())
                    .or_default()
                    .push(m.name.as_str());
            }
        }
        let mut out = HashMap::new();
        for (zone, names) in by_zone {
            for filter in name_filters(&names) {
                let mut token: Option<String> = None;
                loop {
                    let page = self
                        .retry(pool, "instances.list", group, || {
                            self.api().list_instances(
                                &group.project,
                                zone,
                                &filter,
                                token.as_deref(),
                            )
                        })
                        .await
                        .map_err(|e| {
                            self.api_error(
                                pool,
                                &format!("listing instances in zone {zone} for"),
                                group,
                                e,
                            )
                        })?;
                    for i in page.items {
                        out.insert((zone.to_string(), i.name.clone()), i);
                    }
                    match page.next_page_token {
                        Some(t) => token = Some(t),
                        None => break,
                    }
                }
            }
        }
        Ok(out)
    }

    pub(crate) fn check_labels<'a>(
        &self,
        pool: &str,
        group: &GroupPath,
        instances: impl Iterator<Item = &'a InstanceInfo>,
    ) {
        if !self.cfg().check_labels {
            return;
        }
        let want_pool = label_value(pool);
        let mut total = 0;
        let mut bad: Vec<&str> = Vec::new();
        for i in instances {
            total += 1;
            let ok = i.labels.get(TAG_WORKER).map(String::as_str) == Some("true")
                && i.labels.get(TAG_POOL) == Some(&want_pool);
            if !ok {
                bad.push(&i.name);
            }
        }
        if bad.is_empty() {
            return;
        }
        if !self.labels_warned.lock().unwrap().insert(pool.to_string()) {
            return;
        }
        bad.sort();
        let examples = bad.iter().take(3).copied().collect::<Vec<_>>().join(", ");
        warn!(
            pool,
            group = %group,
            "{} of {} instances lack the labels {TAG_WORKER}=true and {TAG_POOL}={want_pool} (e.g. {examples}); \
             set them in the group's instance template (see examples/). This warning is shown once per pool.",
            bad.len(),
            total
        );
    }
}
