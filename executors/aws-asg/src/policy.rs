//! The executor's pure decisions: the group's name and size, what it keeps on the group
//! (tags, termination policy), how an instance of the group looks to the shared scale-in
//! chooser, and what to do with an instance waiting in `Terminating:Wait`. Nothing here does
//! I/O, so every rule is tested on values alone; the crate's `apply` carries the decisions out.

use crate::client::{Ec2Instance, GroupInfo, GroupInstance, GroupTag};
use crate::config::{Config, HostnameMatch};
use autoscaler_executor::inventory::{TAG_POOL, TAG_WORKER};
use autoscaler_executor::scale_in::{
    self, Action, Blocker, Candidate, CandidateState, Drain, HoldReason, RemoveReason,
    ScaleInChoice, ScaleInRequest, DRAIN_AGENT_VERSION, TAG_DRAIN_AGENT,
};
use autoscaler_executor::{
    render_fixed_target, render_target, BusyWorker, ErrorKind, ExecutorError, Plan, WorkerPool,
};
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use std::collections::HashMap;

/// How far this host's clock may be ahead of AWS's: a raise counts as made this much earlier
/// than this host says, so a launch AWS failed right after it is never taken for an older one.
pub(crate) const CLOCK_SKEW: chrono::Duration = chrono::Duration::seconds(30);

/// The instance sizing every backend shares (see [`autoscaler_executor::sizing`]); named here
/// as this crate has always named it.
pub(crate) use autoscaler_executor::sizing::{instances_for as target_instances, Target};

pub mod warm;

/// The first termination policy the executor keeps on every group: when AWS itself picks which
/// instances leave (AZ rebalancing, a desired capacity lowered by someone else), the oldest go
/// first (Vespene's own advice). The executor's own scale-in names its instances.
pub(crate) const OLDEST_INSTANCE: &str = "OldestInstance";

/// The Auto Scaling group a pool names: its `executor_command` rendered as every backend
/// renders a target ([`render_target`]: with an empty plan, so `prepare`, which has no plan,
/// describes the group `scale` changes).
pub(crate) fn group_name(pool: &WorkerPool) -> Result<String, ExecutorError> {
    valid_name(pool, render_target(pool)?)
}

/// [`group_name`], after checking that the name does not move with `plan` (what `validate`
/// and `scale` check: a name that moved would scale one group and report on another).
pub(crate) fn fixed_group_name(pool: &WorkerPool, plan: Plan) -> Result<String, ExecutorError> {
    valid_name(pool, render_fixed_target(pool, plan, "Auto Scaling group")?)
}

/// `name` when it can be an Auto Scaling group's name.
fn valid_name(pool: &WorkerPool, name: String) -> Result<String, ExecutorError> {
    let ok_len = (1..=255).contains(&name.len());
    let bad_char = name
        .chars()
        .find(|c| !(('!'..='~').contains(c)) || *c == ':');
    if !ok_len || bad_char.is_some() {
        return Err(ExecutorError::new(
            &pool.name,
            ErrorKind::Config,
            format!(
                "executor_command renders to {name:?}, which is not an Auto Scaling group name \
                 (1 to 255 printable ASCII characters, no spaces, no colon)"
            ),
        ));
    }
    Ok(name)
}

/// Checks a pool's settings without any I/O: the group name renders, is a valid name and does
/// not change with the plan, and at least one instance fits under the pool's maximum.
pub(crate) fn validate(cfg: &Config, pool: &WorkerPool, plan: Plan) -> Result<(), ExecutorError> {
    fixed_group_name(pool, plan)?;
    let wpi = cfg.workers_per_instance_for(&pool.name);
    if pool.maximum > 0 && (pool.maximum as u32) < wpi {
        return Err(ExecutorError::new(
            &pool.name,
            ErrorKind::Config,
            format!(
                "maximum {} is below workers_per_instance {wpi} of [executors.aws-asg]: no \
                 instance fits without exceeding the pool's maximum",
                pool.maximum
            ),
        ));
    }
    Ok(())
}

/// Why the executor cannot size this group, naming the setting to change; `None` when it can.
///
/// The executor counts in instances (`workers_per_instance` workers each). A group whose
/// `DesiredCapacityType` is `vcpu` or `memory-mib`, or whose mixed instances policy weighs its
/// instance types (`WeightedCapacity` other than 1), counts its desired capacity in those
/// units: a desired capacity of 8 could be one instance or eight, so any size the executor set
/// would be wrong. Weights that are all 1 count instances, and are accepted.
pub(crate) fn unsupported_capacity(group: &GroupInfo) -> Option<String> {
    if let Some(t) = group
        .desired_capacity_type
        .as_deref()
        .filter(|t| !t.is_empty() && *t != "units")
    {
        return Some(format!(
            "DesiredCapacityType is {t}: the group counts its desired capacity in {}, but the \
             executor sizes groups in instances (workers_per_instance workers each); set the \
             group's DesiredCapacityType to units",
            if t == "vcpu" {
                "vCPUs"
            } else {
                "MiB of memory"
            }
        ));
    }
    let weighted: Vec<String> = group
        .instance_weights
        .iter()
        .filter(|(_, w)| w.trim() != "1")
        .map(|(t, w)| format!("{t}={w}"))
        .collect();
    if !weighted.is_empty() {
        return Some(format!(
            "the mixed instances policy weighs instance types (WeightedCapacity {}): the group \
             counts its desired capacity in weight units, but the executor sizes groups in \
             instances (workers_per_instance workers each); remove WeightedCapacity from the \
             overrides (or set every weight to 1)",
            weighted.join(", ")
        ));
    }
    None
}

/// The termination policies to set so `OldestInstance` comes first, keeping the others in
/// order after it; `None` when it already comes first.
pub(crate) fn wanted_termination_policies(current: &[String]) -> Option<Vec<String>> {
    if current.first().map(String::as_str) == Some(OLDEST_INSTANCE) {
        return None;
    }
    let mut out = vec![OLDEST_INSTANCE.to_string()];
    out.extend(current.iter().filter(|p| *p != OLDEST_INSTANCE).cloned());
    Some(out)
}

/// The tags every group of a pool carries, propagated to its instances.
pub(crate) fn wanted_tags(pool: &str) -> Vec<GroupTag> {
    vec![
        GroupTag {
            key: TAG_WORKER.to_string(),
            value: "true".to_string(),
            propagate_at_launch: true,
        },
        GroupTag {
            key: TAG_POOL.to_string(),
            value: pool.to_string(),
            propagate_at_launch: true,
        },
    ]
}

/// The wanted tags the group lacks (missing, another value, or not propagated).
pub(crate) fn missing_tags(current: &[GroupTag], pool: &str) -> Vec<GroupTag> {
    wanted_tags(pool)
        .into_iter()
        .filter(|w| !current.iter().any(|c| c == w))
        .collect()
}

/// The names the worker on an instance may report as `workers.hostname`, under `mode` (see
/// [`HostnameMatch`]): the instance id, the private DNS name, the private IP. `ec2` is `None`
/// when EC2 did not describe the instance (then only its id is known).
pub(crate) fn instance_names(
    mode: HostnameMatch,
    instance_id: &str,
    ec2: Option<&Ec2Instance>,
) -> Vec<String> {
    let dns = ec2.and_then(|e| e.private_dns_name.clone());
    let ip = ec2.and_then(|e| e.private_ip.clone());
    let id = Some(instance_id.to_string());
    let names = match mode {
        HostnameMatch::PrivateDnsName => vec![dns],
        HostnameMatch::PrivateIp => vec![ip],
        HostnameMatch::InstanceId => vec![id],
        HostnameMatch::Any => vec![id, dns, ip],
    };
    names
        .into_iter()
        .flatten()
        .filter(|n| !n.trim().is_empty())
        .collect()
}

/// Whether the instance runs the drain agent of `images/` (instance tag
/// `vespene_drain_agent=v1`): it is then removed only through the handshake, and the executor
/// never completes its lifecycle action.
pub(crate) fn has_agent(ec2: Option<&Ec2Instance>) -> bool {
    ec2.and_then(|e| e.tags.get(TAG_DRAIN_AGENT))
        .is_some_and(|v| v == DRAIN_AGENT_VERSION)
}

/// How a member of the group looks to the shared chooser: `InService` is ready, `Pending*` is
/// booting, anything else (protected from scale-in, `Terminating*`, `Standby`, `Warmed*`,
/// `Detaching`, …) is excluded with the reason. On AWS an instance asked to drain has already
/// left the group's capacity (it waits in `Terminating:Wait`), so no candidate is ever
/// "draining".
pub(crate) fn candidate(
    mode: HostnameMatch,
    member: &GroupInstance,
    ec2: Option<&Ec2Instance>,
) -> Candidate {
    let s = member.lifecycle_state.as_str();
    let state = if member.protected_from_scale_in {
        CandidateState::Excluded("protected from scale-in".into())
    } else if s == "InService" {
        CandidateState::Ready
    } else if s.starts_with("Pending") {
        CandidateState::Booting
    } else {
        CandidateState::Excluded(format!("lifecycle state {s}"))
    };
    Candidate {
        id: member.instance_id.clone(),
        names: instance_names(mode, &member.instance_id, ec2),
        created: ec2.and_then(|e| e.launch_time),
        state,
        agent: has_agent(ec2),
        drain: Drain::None,
    }
}

/// How many instances a scale-in removes: what the desired capacity exceeds the target by,
/// never more than the instances that exist (a desired capacity above them is lowered by
/// `SetDesiredCapacity`, which ends nothing). Because the target is never below the group's
/// `MinSize`, removing this many with `ShouldDecrementDesiredCapacity` never breaks it.
pub(crate) fn reduction(desired: u32, capacity: u32, target: u32) -> u32 {
    desired.min(capacity).saturating_sub(target)
}

/// A cycle's sizing of one group, decided once: the instances the plan wants (with the bounds
/// that won, for the log), the instances that count today, and how many a scale-in removes.
#[derive(Debug)]
pub(crate) struct Sizing {
    /// The instances wanted, from [`target_instances`].
    pub(crate) target: Target,
    /// Members that count as capacity (launching or in service).
    pub(crate) capacity: u32,
    /// What a scale-in removes, see [`reduction`].
    pub(crate) reduce: u32,
}

/// The members of `group` that count as capacity, so `status` and `scale` count alike.
pub(crate) fn capacity(group: &GroupInfo) -> u32 {
    group
        .instances
        .iter()
        .filter(|i| i.counts_as_capacity())
        .count() as u32
}

/// The group's [`Sizing`] for a plan of `size` workers at `wpi` per instance.
pub(crate) fn sizing(size: u32, pool_maximum: i32, wpi: u32, group: &GroupInfo) -> Sizing {
    let target = target_instances(size, pool_maximum, wpi, group.min_size, group.max_size);
    let capacity = capacity(group);
    let reduce = reduction(group.desired_capacity, capacity, target.instances);
    Sizing {
        target,
        capacity,
        reduce,
    }
}

/// What a cycle does to the desired capacity, so the branches of `apply` only carry it out.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Resize {
    /// Raise the desired capacity to `to`: AWS launches the difference.
    Grow {
        /// The new desired capacity.
        to: u32,
    },
    /// The target is below the desired capacity: first take back the `lower` instances not
    /// launched yet (that ends nothing), then a scale-in of the running ones ([`reduction`]).
    Shrink {
        /// How far `SetDesiredCapacity` lowers the desired capacity (0: not at all).
        lower: u32,
    },
    /// The desired capacity is already as planned.
    Hold,
}

/// The [`Resize`] from the group's `desired` capacity, its `capacity` and the `target`.
pub(crate) fn resize(desired: u32, capacity: u32, target: u32) -> Resize {
    if target > desired {
        Resize::Grow { to: target }
    } else if target < desired {
        let unlaunched = desired.saturating_sub(capacity);
        Resize::Shrink {
            lower: unlaunched.min(desired - target),
        }
    } else {
        Resize::Hold
    }
}

/// The chooser's question for a scale-in of `reduction` instances of `members`.
pub(crate) fn scale_in_choice(
    cfg: &Config,
    now: DateTime<Utc>,
    reduction: u32,
    members: &[GroupInstance],
    ec2: &HashMap<String, Ec2Instance>,
    busy: &[BusyWorker],
) -> ScaleInChoice {
    let candidates: Vec<Candidate> = members
        .iter()
        .map(|m| candidate(cfg.hostname_match, m, ec2.get(&m.instance_id)))
        .collect();
    scale_in::choose(&ScaleInRequest {
        reduction,
        candidates: &candidates,
        busy,
        unassigned_grace: grace(cfg),
        require_agent: cfg.require_drain_agent,
        now,
    })
}

/// Why the chooser's `action` ends an instance, for the log; `None` for an action that ends
/// none. On AWS no candidate is ever draining (a drained instance has left the group's
/// capacity), so the chooser never waits on or cancels one.
pub(crate) fn removal_reason(action: &Action) -> Option<&'static str> {
    match action {
        Action::Remove(RemoveReason::Booting) => Some("booting, not needed"),
        Action::Remove(RemoveReason::Idle) => Some("idle: no RUNNING build on it"),
        Action::Remove(RemoveReason::Drained) => Some("drained"),
        Action::RequestDrain => {
            Some("drain agent: it finishes its build, then completes the lifecycle action")
        }
        Action::AwaitDrain | Action::CancelDrain => None,
    }
}

/// The members that count as capacity but may not be removed, each with why, for the warning
/// when a scale-in removed fewer than asked with nothing to wait for.
pub(crate) fn excluded(
    mode: HostnameMatch,
    members: &[GroupInstance],
    ec2: &HashMap<String, Ec2Instance>,
) -> Vec<String> {
    members
        .iter()
        .filter_map(
            |m| match candidate(mode, m, ec2.get(&m.instance_id)).state {
                CandidateState::Excluded(r) if m.counts_as_capacity() => {
                    Some(format!("{} ({r})", m.instance_id))
                }
                _ => None,
            },
        )
        .collect()
}

/// Whether a scale-in that ended `chosen` instances comes back next cycle: terminated
/// instances wait on the hook, busy ones free up, an unassigned build gets its worker in a
/// moment. A missing agent or protection does not change by waiting, so those alone are no
/// reason to come back.
pub(crate) fn scale_in_revisit(chosen: u64, choice: &ScaleInChoice) -> bool {
    let busy_held = choice
        .held
        .iter()
        .any(|(_, r)| matches!(r, HoldReason::Busy { .. }));
    chosen > 0 || busy_held || matches!(choice.blocker, Some(Blocker::Unassigned { .. }))
}

fn grace(cfg: &Config) -> Option<ChronoDuration> {
    (cfg.unassigned_grace_seconds > 0)
        .then(|| ChronoDuration::seconds(cfg.unassigned_grace_seconds.min(i64::MAX as u64) as i64))
}

/// What keeps each instance in `Terminating:Wait`, by the chooser's rules: the RUNNING build
/// that matches it, or `None` when none does. A RUNNING build that could be on any instance
/// (no worker recorded yet, or a worker matching no member of the group) keeps every waiting
/// instance, and is returned as the blocker.
pub(crate) struct DrainView {
    /// Per waiting instance id, the build that keeps it.
    pub busy: HashMap<String, Option<BusyWorker>>,
    /// Why every waiting instance is kept, if something could be on any of them.
    pub blocker: Option<Blocker>,
}

/// The build that keeps instance `id` in the drain: from the `view`, or, without one (the
/// busy workers or the instances' names unavailable), an unknown build, so the instance is
/// kept (within `max_drain_seconds`) and never completed as idle.
pub(crate) fn drain_match(view: Option<&DrainView>, id: &str) -> Option<BusyWorker> {
    match view {
        Some(v) => v.busy.get(id).cloned().flatten(),
        None => Some(BusyWorker {
            hostname: Some("(unknown: busy workers or instance names unavailable)".into()),
            build_id: 0,
            started: None,
        }),
    }
}

/// Asks the shared chooser which waiting instances are idle: every member of the group is a
/// candidate for the matching (a worker's name is compared with all of them), only the waiting
/// ones may be "removed", and the reduction is all of them, so each is either idle or held.
pub(crate) fn drain_view(
    cfg: &Config,
    now: DateTime<Utc>,
    members: &[GroupInstance],
    ec2: &HashMap<String, Ec2Instance>,
    busy: &[BusyWorker],
) -> DrainView {
    let mut waiting = 0;
    let candidates: Vec<Candidate> = members
        .iter()
        .map(|m| {
            let mut c = candidate(cfg.hostname_match, m, ec2.get(&m.instance_id));
            c.agent = false;
            c.state = if m.is_waiting_to_terminate() {
                waiting += 1;
                CandidateState::Ready
            } else {
                CandidateState::Excluded("not waiting".into())
            };
            c
        })
        .collect();
    let choice = scale_in::choose(&ScaleInRequest {
        reduction: waiting,
        candidates: &candidates,
        busy,
        unassigned_grace: grace(cfg),
        require_agent: false,
        now,
    });
    let mut out = HashMap::new();
    for m in members.iter().filter(|m| m.is_waiting_to_terminate()) {
        let held = choice.held.iter().find_map(|(id, r)| match r {
            HoldReason::Busy { build_id, worker } if id == &m.instance_id => Some(BusyWorker {
                hostname: Some(worker.clone()),
                build_id: *build_id,
                started: None,
            }),
            _ => None,
        });
        let held = held.or_else(|| {
            choice.blocker.as_ref().map(|b| BusyWorker {
                hostname: Some(format!("(any instance: {})", blocker_word(b))),
                build_id: blocker_build(b),
                started: None,
            })
        });
        out.insert(m.instance_id.clone(), held);
    }
    DrainView {
        busy: out,
        blocker: choice.blocker,
    }
}

fn blocker_word(b: &Blocker) -> &'static str {
    match b {
        Blocker::Unassigned { .. } => "a RUNNING build has no worker recorded yet",
        Blocker::Unmatched { .. } => "a RUNNING build's worker matches no instance",
    }
}

fn blocker_build(b: &Blocker) -> i64 {
    match b {
        Blocker::Unassigned { build_ids } | Blocker::Unmatched { build_ids, .. } => {
            build_ids.first().copied().unwrap_or(0)
        }
    }
}

/// What the drain logic remembers about an instance in `Terminating:Wait`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DrainState {
    /// When this process first saw it waiting: the start of its drain. A restart of the
    /// autoscaler restarts this clock; AWS's own global timeout still bounds the wait.
    pub since: DateTime<Utc>,
    /// The last heartbeat this process recorded for it.
    pub last_heartbeat: Option<DateTime<Utc>>,
}

/// What to do with one waiting instance this cycle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// No RUNNING build on it: let it terminate now.
    CompleteIdle,
    /// Still busy but held for `max_drain_seconds` already: let it terminate.
    CompleteDrainTimeout {
        /// The RUNNING build.
        build_id: i64,
        /// The worker (`workers.hostname`) running it.
        worker: String,
    },
    /// Busy and the last heartbeat is getting old: extend the wait.
    Heartbeat {
        /// The RUNNING build.
        build_id: i64,
        /// The worker (`workers.hostname`) running it.
        worker: String,
    },
    /// Busy, heartbeat recent enough: nothing to send.
    Wait {
        /// The RUNNING build.
        build_id: i64,
        /// The worker (`workers.hostname`) running it.
        worker: String,
    },
    /// It runs the drain agent and nothing RUNNING matches it: the agent completes the
    /// lifecycle action itself once its worker has exited; nothing to send.
    LeaveToAgent,
    /// It runs the drain agent, a build still matches it, and `max_drain_seconds` is over: no
    /// more heartbeats from the executor (the agent's own, or the hook's timeout, decide).
    AgentOverdue {
        /// The RUNNING build.
        build_id: i64,
        /// The worker (`workers.hostname`) running it.
        worker: String,
    },
}

/// The drain rule. A worker the database does not know (no RUNNING build names it) is idle:
/// only a RUNNING build can keep an instance. An instance with the drain agent is never
/// completed by the executor (the agent acknowledges); it only gets the safety-net heartbeats
/// while a build matches it.
pub(crate) fn decide(
    cfg: &Config,
    now: DateTime<Utc>,
    state: &DrainState,
    agent: bool,
    busy: Option<&BusyWorker>,
) -> Decision {
    let Some(b) = busy else {
        return if agent {
            Decision::LeaveToAgent
        } else {
            Decision::CompleteIdle
        };
    };
    let (build_id, worker) = (b.build_id, b.hostname.clone().unwrap_or_default());
    let max = ChronoDuration::seconds(cfg.max_drain_seconds.min(i64::MAX as u64) as i64);
    if now - state.since >= max {
        return if agent {
            Decision::AgentOverdue { build_id, worker }
        } else {
            Decision::CompleteDrainTimeout { build_id, worker }
        };
    }
    let interval = ChronoDuration::seconds(cfg.heartbeat_interval_seconds() as i64);
    match state.last_heartbeat {
        Some(t) if now - t < interval => Decision::Wait { build_id, worker },
        _ => Decision::Heartbeat { build_id, worker },
    }
}

#[cfg(test)]
mod tests;
