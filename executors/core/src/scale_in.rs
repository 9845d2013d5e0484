//! Which instances a scale-in removes, in what order, and which are held and why: one pure
//! decision shared by every cloud backend and by `autoscaler simulate`.
//!
//! Nomad keeps its victim selection in one helper (`sdk/helper/scaleutils`) so that every cloud
//! agrees; the same reasoning applies here, with one more duty: a Vespene worker cannot be told
//! to stop taking builds, so the chooser must be sure an instance is idle before it names it.
//! The rules, in the order they are applied:
//!
//! 1. Instances that are not removable at all are never candidates: protected from scale-in,
//!    standby, stopped, already leaving ([`CandidateState::Excluded`]).
//! 2. A RUNNING build with no worker recorded yet (Vespene saves `status = RUNNING` before it
//!    saves `worker_id`) could be on any instance: nothing is removed this cycle.
//! 3. A RUNNING build on a worker that matches no instance could be on any of them too (a
//!    hostname the matching does not understand): nothing is removed, and the backend reports
//!    [`crate::ErrorKind::Held`] so an operator fixes the matching.
//! 4. An instance a RUNNING build matches is busy and stays, unless the build started before
//!    the instance was created: names and private IPs are reused, and Vespene never finishes
//!    the RUNNING rows of a worker that died, so such a row is about an earlier machine.
//! 5. Instances already draining (their agent was asked to stop) count toward the reduction
//!    first; a drained one leaves once it acknowledged and nothing RUNNING matches it.
//! 6. Then instances still booting (no worker yet, so removing them cannot cost a build and
//!    saves the rest of their boot), newest first; then idle booted instances, oldest first.
//! 7. An instance that runs the drain agent is never removed directly: it is asked to drain,
//!    and removed on a later cycle after it acknowledged.

use crate::BusyWorker;
use chrono::{DateTime, Utc};
use std::collections::BTreeSet;
use std::net::IpAddr;

/// The instance tag (AWS) / label (GCE) that says an instance runs the drain agent of
/// `images/`, and so must be removed through the handshake (see `docs/scale-in.md`).
pub const TAG_DRAIN_AGENT: &str = "vespene_drain_agent";
/// The protocol version the agent and the executors speak; the marker's value.
pub const DRAIN_AGENT_VERSION: &str = "v1";

/// Whether two names a worker or a cloud gives for a machine are the same machine.
///
/// Vespene's worker reports `hostname`'s output (or `FILESERVING_HOSTNAME`), which may be a
/// short name or a fully qualified one, while clouds know instances by id, name, private DNS
/// name and IP. Case and a trailing dot never matter; a short name matches a fully qualified
/// one by its first label, in either direction; an IP address matches only itself (its first
/// "label" is not a name). The rule is symmetric, so it does not matter which side is the
/// worker's.
pub fn hostname_matches(a: &str, b: &str) -> bool {
    let a = normalize(a);
    let b = normalize(b);
    if a.is_empty() || b.is_empty() {
        return false;
    }
    if a == b {
        return true;
    }
    let short = |s: &str| !s.contains('.') && s.parse::<IpAddr>().is_err();
    let first = |s: &str| -> Option<String> {
        if s.parse::<IpAddr>().is_ok() {
            None
        } else {
            s.split('.').next().map(str::to_string)
        }
    };
    (short(&a) && first(&b).as_deref() == Some(a.as_str()))
        || (short(&b) && first(&a).as_deref() == Some(b.as_str()))
}

fn normalize(s: &str) -> String {
    s.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// Where a candidate is in its life, as far as removing it is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CandidateState {
    /// Being created or booting: it has no worker yet, so removing it cannot cost a build.
    Booting,
    /// Up and in service: its worker may be idle or busy.
    Ready,
    /// Must not be removed by a scale-in (the reason is shown to operators): protected,
    /// standby or stopped, already leaving, not in service.
    Excluded(String),
}

/// Where an agent-run instance is in the drain handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drain {
    /// Not asked to drain.
    None,
    /// Asked to drain (since when, if known); its agent has not acknowledged yet.
    Requested(Option<DateTime<Utc>>),
    /// Its agent acknowledged: its workers have exited and it starts no new one.
    Acknowledged,
}

/// One instance of a group, in the terms the chooser needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// What the backend's removal call takes (EC2 instance id, GCE instance name).
    pub id: String,
    /// Every name a worker on it may report as `workers.hostname`: instance id or name, private
    /// DNS names, private IPs.
    pub names: Vec<String>,
    /// When the cloud created it; `None` when the cloud does not say yet.
    pub created: Option<DateTime<Utc>>,
    /// See [`CandidateState`].
    pub state: CandidateState,
    /// Whether it runs the drain agent (carries [`TAG_DRAIN_AGENT`]).
    pub agent: bool,
    /// Its drain handshake, for agent instances.
    pub drain: Drain,
}

impl Candidate {
    fn draining(&self) -> bool {
        self.drain != Drain::None
    }
}

/// What one scale-in decides about one instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Remove it now (terminate / delete).
    Remove(RemoveReason),
    /// Ask its agent to drain; it is removed on a later cycle, after the acknowledgement.
    RequestDrain,
    /// It is draining and has not acknowledged yet (or acknowledged but a build still shows as
    /// RUNNING on it): leave it alone this cycle.
    AwaitDrain,
    /// It was asked to drain, but the plan no longer needs it gone: call the drain off.
    CancelDrain,
}

/// Why an instance is removed, for the log line and the dry-run output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemoveReason {
    /// Still booting and no longer needed by the plan.
    Booting,
    /// Booted, and no RUNNING build matches it.
    Idle,
    /// Its drain agent acknowledged and no RUNNING build matches it.
    Drained,
}

impl RemoveReason {
    /// A short word for log lines and "would …" actions.
    pub fn as_str(&self) -> &'static str {
        match self {
            RemoveReason::Booting => "booting, not needed",
            RemoveReason::Idle => "idle",
            RemoveReason::Drained => "drained",
        }
    }
}

/// Why an instance the plan would have removed stays.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HoldReason {
    /// A RUNNING build matches it.
    Busy {
        /// The build.
        build_id: i64,
        /// The worker (`workers.hostname`) that runs it.
        worker: String,
    },
    /// The pool demands the drain agent (`require_drain_agent`) and this instance lacks it.
    NoAgent,
}

/// Why nothing at all could be removed this cycle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Blocker {
    /// RUNNING builds with no worker recorded yet: they may be on any instance.
    Unassigned {
        /// The builds.
        build_ids: Vec<i64>,
    },
    /// RUNNING builds on workers whose hostnames match no instance of the group.
    Unmatched {
        /// The hostnames, as the workers reported them.
        hostnames: Vec<String>,
        /// The builds.
        build_ids: Vec<i64>,
    },
}

impl std::fmt::Display for Blocker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        fn ids(v: &[i64]) -> String {
            v.iter()
                .take(5)
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        }
        match self {
            Blocker::Unassigned { build_ids } => write!(
                f,
                "{} RUNNING build(s) have no worker recorded yet (build {}): any instance may run them",
                build_ids.len(),
                ids(build_ids)
            ),
            Blocker::Unmatched {
                hostnames,
                build_ids,
            } => write!(
                f,
                "{} RUNNING build(s) run on worker(s) that match no instance of the group \
                 ({}; build {}): any instance may run them, so none is removed until the \
                 hostname matching recognises them",
                build_ids.len(),
                hostnames
                    .iter()
                    .take(5)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
                ids(build_ids)
            ),
        }
    }
}

/// What the chooser is asked.
#[derive(Clone, Copy, Debug)]
pub struct ScaleInRequest<'a> {
    /// How many instances the plan wants gone (current count minus wanted count).
    pub reduction: u32,
    /// Every instance of the group (any state).
    pub candidates: &'a [Candidate],
    /// The pool's RUNNING builds, read from the database as late as possible.
    pub busy: &'a [BusyWorker],
    /// When a RUNNING build with no worker recorded yet stops counting: Vespene records the
    /// worker a moment after it starts the build, so a row still unassigned long after is left
    /// by a worker that died in between. `None`: such rows always count.
    pub unassigned_grace: Option<chrono::Duration>,
    /// Never remove an instance without the drain agent.
    pub require_agent: bool,
    /// The cycle's clock.
    pub now: DateTime<Utc>,
}

/// The chooser's answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScaleInChoice {
    /// What to do, per instance id, in the order decided. Instances not named are left alone.
    pub actions: Vec<(String, Action)>,
    /// Instances that would have gone but stay, and why.
    pub held: Vec<(String, HoldReason)>,
    /// Set when nothing could be removed at all.
    pub blocker: Option<Blocker>,
    /// Stale rows that were not counted (a build older than its instance, an unassigned build
    /// past the grace), so the backend can warn once.
    pub ignored: Vec<BusyWorker>,
}

impl ScaleInChoice {
    /// The instances to remove now.
    pub fn removals(&self) -> impl Iterator<Item = (&str, RemoveReason)> {
        self.actions.iter().filter_map(|(id, a)| match a {
            Action::Remove(r) => Some((id.as_str(), *r)),
            _ => None,
        })
    }

    /// The instances whose agent is to be asked to drain.
    pub fn drain_requests(&self) -> impl Iterator<Item = &str> {
        self.actions
            .iter()
            .filter(|(_, a)| *a == Action::RequestDrain)
            .map(|(id, _)| id.as_str())
    }

    /// The instances whose drain is called off.
    pub fn drain_cancels(&self) -> impl Iterator<Item = &str> {
        self.actions
            .iter()
            .filter(|(_, a)| *a == Action::CancelDrain)
            .map(|(id, _)| id.as_str())
    }

    /// How many instances are on their way out after this cycle's actions (removed now,
    /// asked to drain, or still draining).
    pub fn leaving(&self) -> u32 {
        self.actions
            .iter()
            .filter(|(_, a)| !matches!(a, Action::CancelDrain))
            .count() as u32
    }

    /// Whether the backend should come back next cycle: something is draining or held.
    pub fn unfinished(&self) -> bool {
        self.blocker.is_some()
            || !self.held.is_empty()
            || self
                .actions
                .iter()
                .any(|(_, a)| matches!(a, Action::RequestDrain | Action::AwaitDrain))
    }
}

/// The RUNNING build that makes `c` busy, if any (rule 4).
fn busy_on<'a>(c: &Candidate, busy: &'a [BusyWorker]) -> Option<&'a BusyWorker> {
    busy.iter().find(|b| matches_candidate(c, b))
}

fn matches_candidate(c: &Candidate, b: &BusyWorker) -> bool {
    let Some(host) = b.hostname.as_deref() else {
        return false;
    };
    if !c.names.iter().any(|n| hostname_matches(host, n)) {
        return false;
    }
    // A build older than the instance ran on an earlier machine of the same name or IP.
    !matches!((b.started, c.created), (Some(s), Some(created)) if s < created)
}

/// Decides a scale-in. Pure: same input, same answer.
pub fn choose(req: &ScaleInRequest<'_>) -> ScaleInChoice {
    let mut out = ScaleInChoice::default();

    // Rule 2: unassigned RUNNING builds, minus those past the grace.
    let mut unassigned = Vec::new();
    for b in req.busy.iter().filter(|b| b.hostname.is_none()) {
        let stale = match (req.unassigned_grace, b.started) {
            (Some(grace), Some(s)) => req.now - s > grace,
            _ => false,
        };
        if stale {
            out.ignored.push(b.clone());
        } else {
            unassigned.push(b.build_id);
        }
    }
    // Rule 3 and 4: which workers match which instance; which match none (or only as stale
    // rows of earlier machines).
    let mut unmatched_hosts = BTreeSet::new();
    let mut unmatched_builds = Vec::new();
    for b in req.busy.iter() {
        let Some(host) = b.hostname.as_deref() else {
            continue;
        };
        let by_name: Vec<&Candidate> = req
            .candidates
            .iter()
            .filter(|c| c.names.iter().any(|n| hostname_matches(host, n)))
            .collect();
        if by_name.is_empty() {
            unmatched_hosts.insert(host.to_string());
            unmatched_builds.push(b.build_id);
        } else if !by_name.iter().any(|c| matches_candidate(c, b)) {
            out.ignored.push(b.clone());
        }
    }

    let blocker = if !unassigned.is_empty() {
        Some(Blocker::Unassigned {
            build_ids: unassigned,
        })
    } else if !unmatched_builds.is_empty() {
        Some(Blocker::Unmatched {
            hostnames: unmatched_hosts.into_iter().collect(),
            build_ids: unmatched_builds,
        })
    } else {
        None
    };

    let mut left = req.reduction as usize;
    // Rule 5: draining instances first, oldest request first; a drain the plan no longer
    // needs is called off (youngest request last kept).
    // Rule 1 holds here too: an excluded instance asked to drain earlier (since stopped or
    // suspended into standby, protected, leaving) is neither counted nor removed.
    let mut draining: Vec<&Candidate> = req
        .candidates
        .iter()
        .filter(|c| c.draining() && !matches!(c.state, CandidateState::Excluded(_)))
        .collect();
    draining.sort_by_key(|c| match c.drain {
        Drain::Acknowledged => (0, None, c.id.clone()),
        Drain::Requested(t) => (1, t, c.id.clone()),
        Drain::None => (2, None, c.id.clone()),
    });
    for c in draining {
        if left == 0 {
            out.actions.push((c.id.clone(), Action::CancelDrain));
            continue;
        }
        left -= 1;
        let ready =
            c.drain == Drain::Acknowledged && blocker.is_none() && busy_on(c, req.busy).is_none();
        let action = if ready {
            Action::Remove(RemoveReason::Drained)
        } else {
            Action::AwaitDrain
        };
        out.actions.push((c.id.clone(), action));
    }

    if let Some(b) = blocker {
        // Nothing new is chosen; drains already under way keep waiting (above).
        if left > 0 {
            out.blocker = Some(b);
        }
        return out;
    }

    // Rule 6: booting, newest first; then idle ready, oldest first.
    let fresh: Vec<&Candidate> = req.candidates.iter().filter(|c| !c.draining()).collect();
    let mut booting: Vec<&Candidate> = fresh
        .iter()
        .copied()
        .filter(|c| c.state == CandidateState::Booting)
        .collect();
    booting.sort_by(|a, b| {
        // None (not even created yet) is the newest of all.
        let key = |c: &Candidate| {
            (
                c.created.is_some(),
                std::cmp::Reverse(c.created),
                c.id.clone(),
            )
        };
        key(a).cmp(&key(b))
    });
    let mut ready: Vec<&Candidate> = fresh
        .iter()
        .copied()
        .filter(|c| c.state == CandidateState::Ready)
        .collect();
    ready.sort_by(|a, b| {
        // Oldest first; an unknown creation time last.
        let key = |c: &Candidate| (c.created.is_none(), c.created, c.id.clone());
        key(a).cmp(&key(b))
    });

    for c in booting.into_iter().chain(ready) {
        if left == 0 {
            break;
        }
        if let Some(b) = busy_on(c, req.busy) {
            out.held.push((
                c.id.clone(),
                HoldReason::Busy {
                    build_id: b.build_id,
                    worker: b.hostname.clone().unwrap_or_default(),
                },
            ));
            continue;
        }
        if req.require_agent && !c.agent {
            out.held.push((c.id.clone(), HoldReason::NoAgent));
            continue;
        }
        left -= 1;
        let action = if c.state == CandidateState::Booting {
            Action::Remove(RemoveReason::Booting)
        } else if c.agent {
            Action::RequestDrain
        } else {
            Action::Remove(RemoveReason::Idle)
        };
        out.actions.push((c.id.clone(), action));
    }
    // Held entries only matter while the reduction is not met.
    if left == 0 {
        out.held.clear();
    }
    out
}

#[cfg(test)]
mod tests;
