//! Scale-in, and the drains that scale-out must call off: the group is read
//! ([`crate::candidates`]), the database last, the shared chooser
//! ([`autoscaler_executor::scale_in::choose`]) decides, and this module only carries the
//! decision out with Compute calls:
//!
//! - `Remove` → one `deleteInstances` for every chosen instance (request id, operation wait);
//! - `RequestDrain` → `instances.setMetadata` adding `vespene-drain=requested`, quoting the
//!   metadata fingerprint and keeping every other item (a 412 re-reads the instance and
//!   retries);
//! - `CancelDrain` → `instances.setMetadata` removing that key;
//! - `AwaitDrain` → nothing.
//!
//! Draining instances are in the group's target size but take no builds, so they are never
//! counted as capacity: a scale-out (or a plan back at the target size) first calls drains
//! off (the chooser answers `CancelDrain` for every drain beyond the reduction) and resizes
//! for the rest.

use crate::apply::Applier;
use crate::candidates::{Member, DRAIN_KEY, DRAIN_REQUESTED};
use crate::client::ApiErrorKind;
use crate::standby::in_standby;
use crate::target::GroupPath;
use autoscaler_executor::scale_in::{
    choose, Action, Blocker, Candidate, Drain, HoldReason, RemoveReason, ScaleInChoice,
    ScaleInRequest,
};
use autoscaler_executor::standby::split_leavers;
use autoscaler_executor::{ErrorKind, ExecutorError, Outcome, ScaleRequest};
use chrono::Utc;
use std::collections::{HashMap, HashSet};
use tracing::{info, warn};

/// A RUNNING build with no worker recorded holds every instance (Vespene records the worker a
/// moment after it starts the build), but a row still unassigned after this long was left by
/// a worker that died in between, and must not hold the pool forever.
pub const UNASSIGNED_GRACE_SECS: i64 = 600;

/// Attempts at `setMetadata` when the fingerprint keeps changing under us (412).
const METADATA_ATTEMPTS: u32 = 3;

impl Applier {
    /// Brings the group to `want` instances when it may hold draining instances or must shrink.
    pub(crate) async fn reconcile(
        &self,
        req: &ScaleRequest<'_>,
        group: &GroupPath,
        current: u32,
        want: u32,
        standby: u32,
    ) -> Result<Outcome, ExecutorError> {
        let pool = req.pool;
        let wpi = self.cfg().workers_per_instance;
        let reduction = current.saturating_sub(want);
        let read = self.read_group(&pool.name, group).await?;
        let candidates: Vec<Candidate> = read.members.iter().map(|m| m.candidate.clone()).collect();
        let draining = candidates.iter().filter(|c| c.drain != Drain::None).count();
        if reduction == 0 && draining == 0 {
            self.remember_drains(group, false);
            return if want > current && standby > 0 {
                self.grow(pool, group, &read.members, current, want, req.dry_run)
                    .await
            } else if want > current {
                self.scale_out(pool, group, current, want, req.dry_run)
                    .await
            } else {
                Ok(Outcome {
                    actions: Vec::new(),
                    applied: Some(current * wpi),
                    revisit: false,
                })
            };
        }
        // Read the database last, as close to the removal as possible. With nothing to remove
        // (only drains to call off) the busy workers do not matter, and a database outage must
        // not stop a scale-out.
        let busy = if reduction > 0 {
            req.workers.busy_workers(pool).await.map_err(|e| {
                ExecutorError::new(
                    &pool.name,
                    ErrorKind::Directory,
                    format!("{e}; not scaling in {group}"),
                )
            })?
        } else {
            Vec::new()
        };
        let choice = choose(&ScaleInRequest {
            reduction,
            candidates: &candidates,
            busy: &busy,
            unassigned_grace: Some(chrono::Duration::seconds(UNASSIGNED_GRACE_SECS)),
            require_agent: self.cfg().require_drain_agent,
            now: Utc::now(),
        });
        self.warn_stale(&pool.name, group, &choice);
        log_decision(&pool.name, group, reduction, &choice);

        let by_id: HashMap<&str, &Member> = read
            .members
            .iter()
            .map(|m| (m.candidate.id.as_str(), m))
            .collect();
        // Idle and drained leavers fill the standby target; booting ones are always deleted.
        let leavers: Vec<String> = choice
            .removals()
            .filter(|(_, r)| matches!(r, RemoveReason::Idle | RemoveReason::Drained))
            .map(|(id, _)| id.to_string())
            .collect();
        let held_in_standby = read.members.iter().filter(|m| in_standby(m)).count() as u32;
        let kept: HashSet<String> = split_leavers(&leavers, held_in_standby, standby)
            .to_standby
            .into_iter()
            .collect();
        let removals: Vec<&Member> = choice
            .removals()
            .filter(|(id, _)| !kept.contains(*id))
            .filter_map(|(id, _)| by_id.get(id).copied())
            .collect();
        let to_standby: Vec<&Member> = choice
            .removals()
            .filter(|(id, _)| kept.contains(*id))
            .filter_map(|(id, _)| by_id.get(id).copied())
            .collect();
        let new_size = current - removals.len() as u32;
        let mut actions = Vec::new();
        if !removals.is_empty() {
            actions.push(describe_removal(group, &choice, &kept, current, new_size));
        }
        for id in choice.drain_requests() {
            actions.push(format!("setMetadata {DRAIN_KEY}={DRAIN_REQUESTED} on {id} (drain agent asked to stop; deleted once it acknowledges)"));
        }
        for id in choice.drain_cancels() {
            actions.push(format!(
                "setMetadata without {DRAIN_KEY} on {id} (drain called off: the plan needs it)"
            ));
        }
        if req.dry_run {
            let mut actions: Vec<String> =
                actions.into_iter().map(|a| format!("would {a}")).collect();
            actions.extend(
                self.to_standby(&pool.name, group, &to_standby, true)
                    .await?,
            );
            if want > current && standby > 0 {
                let out = self
                    .grow(pool, group, &read.members, current, want, true)
                    .await?;
                actions.extend(out.actions);
            } else if want > current {
                actions.push(format!(
                    "would resize {group} from {current} to {want} instances"
                ));
            }
            return Ok(Outcome {
                actions,
                applied: Some(current * wpi),
                revisit: choice.unfinished(),
            });
        }

        let mut errors = read.errors;
        let mut removed = 0;
        if !removals.is_empty() {
            match self.delete(&pool.name, group, &removals).await {
                Ok(rid) => {
                    removed = removals.len() as u32;
                    if let Some(a) = actions.first_mut() {
                        a.push_str(&format!(" (requestId {rid})"));
                    }
                    let names: Vec<&str> =
                        removals.iter().map(|m| m.managed.name.as_str()).collect();
                    info!(pool = %pool.name, group = %group, deleted = %names.join(", "), from = current, to = new_size, "deleted instances");
                }
                Err(e) => {
                    actions.remove(0);
                    errors.push(e);
                }
            }
        }
        match self.to_standby(&pool.name, group, &to_standby, false).await {
            Ok(line) => {
                removed += to_standby.len() as u32;
                actions.extend(line);
            }
            Err(e) => errors.push(e),
        }
        let mut metadata_failed = false;
        let changes = choice
            .drain_requests()
            .map(|id| (id, true))
            .chain(choice.drain_cancels().map(|id| (id, false)));
        for (id, on) in changes {
            let Some(m) = by_id.get(id) else { continue };
            if let Err(e) = self.set_drain(&pool.name, group, m, on).await {
                let what = if on { "drain request" } else { "drain cancel" };
                actions.retain(|a| {
                    !(a.contains(&format!(" on {id} ")) && a.starts_with("setMetadata"))
                });
                warn!(pool = %pool.name, group = %group, instance = id, error = %e, "{what} failed");
                metadata_failed = true;
                errors.push(e);
            }
        }
        let still_draining = choice
            .actions
            .iter()
            .any(|(_, a)| matches!(a, Action::RequestDrain | Action::AwaitDrain));
        self.remember_drains(group, still_draining || metadata_failed);

        let mut applied = current - removed;
        let mut revisit = choice.unfinished();
        if want > current {
            let out = if standby > 0 {
                self.grow(pool, group, &read.members, current, want, false)
                    .await?
            } else {
                self.scale_out(pool, group, current, want, false).await?
            };
            actions.extend(out.actions);
            applied = want;
            revisit |= out.revisit;
        }
        if let Some(Blocker::Unmatched { .. }) = &choice.blocker {
            let b = choice.blocker.as_ref().unwrap();
            return Err(ExecutorError::new(
                &pool.name,
                ErrorKind::Held,
                format!(
                    "scale-in of {group} held: {b}. Instances are matched by name, internal DNS \
                     name, custom hostname and internal IP (plus [executors.gce-mig] hostname_match); \
                     if these workers run elsewhere, their builds must end first"
                ),
            ));
        }
        if let Some(first) = errors.first() {
            let more = if errors.len() > 1 {
                format!(" (and {} more error(s))", errors.len() - 1)
            } else {
                String::new()
            };
            return Err(ExecutorError::new(
                &pool.name,
                first.kind,
                format!("{}{more}", first.message),
            ));
        }
        Ok(Outcome {
            actions,
            applied: Some(applied * wpi),
            revisit,
        })
    }

    fn remember_drains(&self, group: &GroupPath, may: bool) {
        self.may_drain
            .lock()
            .unwrap()
            .insert(group.to_string(), may);
    }

    /// Warns once per build about RUNNING rows the chooser did not count as busy.
    fn warn_stale(&self, pool: &str, group: &GroupPath, choice: &ScaleInChoice) {
        for b in &choice.ignored {
            if !self.stale_warned.lock().unwrap().insert(b.build_id) {
                continue;
            }
            match &b.hostname {
                Some(h) => warn!(pool, group = %group, build = b.build_id, worker = %h,
                    "RUNNING build started before the instance named {h} was created: a row left by an earlier machine of that name, not counted as busy"),
                None => warn!(pool, group = %group, build = b.build_id,
                    "RUNNING build has had no worker for over {UNASSIGNED_GRACE_SECS}s: its worker died before registering; not counted as busy"),
            }
        }
    }

    /// One `deleteInstances` for `members`; returns the request id.
    async fn delete(
        &self,
        pool: &str,
        group: &GroupPath,
        members: &[&Member],
    ) -> Result<String, ExecutorError> {
        let urls: Vec<String> = members.iter().map(|m| m.managed.url.clone()).collect();
        // One id per intent, reused by every retry: a lost response is not applied twice.
        let request_id = uuid::Uuid::new_v4().to_string();
        let op = self
            .retry(pool, "deleteInstances", group, || {
                self.api().delete_instances(group, &urls, &request_id)
            })
            .await
            .map_err(|e| {
                self.api_error(
                    pool,
                    &format!("deleting {} instance(s) of", urls.len()),
                    group,
                    e,
                )
            })?;
        self.wait(pool, group, "deleteInstances", op).await?;
        Ok(request_id)
    }

    /// Sets (`on`) or removes metadata [`DRAIN_KEY`] on one instance, keeping its other items.
    pub(crate) async fn set_drain(
        &self,
        pool: &str,
        group: &GroupPath,
        m: &Member,
        on: bool,
    ) -> Result<(), ExecutorError> {
        let (zone, name) = (m.managed.zone.as_str(), m.managed.name.as_str());
        let project = group.project.as_str();
        let doing = format!(
            "{} metadata {DRAIN_KEY} on instance {name} in zone {zone} of",
            if on { "setting" } else { "removing" }
        );
        let mut inst = match &m.instance {
            Some(i) => i.clone(),
            None => self
                .retry(pool, "instances.get", group, || {
                    self.api().get_instance(project, zone, name)
                })
                .await
                .map_err(|e| self.api_error(pool, &doing, group, e))?,
        };
        for attempt in 1..=METADATA_ATTEMPTS {
            let already = inst.metadata_value(DRAIN_KEY) == Some(DRAIN_REQUESTED);
            if already == on {
                return Ok(());
            }
            let mut items: Vec<(String, String)> = inst
                .metadata
                .iter()
                .filter(|(k, _)| k != DRAIN_KEY)
                .cloned()
                .collect();
            if on {
                items.push((DRAIN_KEY.to_string(), DRAIN_REQUESTED.to_string()));
            }
            // A new id per body: a retry of the same body reuses it (see `retry`).
            let request_id = uuid::Uuid::new_v4().to_string();
            let fingerprint = inst.metadata_fingerprint.clone();
            let sent = self
                .retry(pool, "instances.setMetadata", group, || {
                    self.api().set_metadata(
                        project,
                        zone,
                        name,
                        fingerprint.as_deref(),
                        &items,
                        &request_id,
                    )
                })
                .await;
            match sent {
                Ok(op) => {
                    return self
                        .wait_in(pool, group, Some(zone), "setMetadata", op)
                        .await
                }
                Err((e, _)) if e.kind == ApiErrorKind::Conflict && attempt < METADATA_ATTEMPTS => {
                    // Someone changed the metadata meanwhile: read it again, keep their change.
                    inst = self
                        .retry(pool, "instances.get", group, || {
                            self.api().get_instance(project, zone, name)
                        })
                        .await
                        .map_err(|e| self.api_error(pool, &doing, group, e))?;
                }
                Err(e) => return Err(self.api_error(pool, &doing, group, e)),
            }
        }
        unreachable!("the last attempt returns")
    }
}

/// The log line every decision leaves, in fields a test or an operator can count: instances
/// chosen (`removed` now, or `drain_requested`), `held` (busy, no agent), `blocked` (the
/// reduction left unmet because a RUNNING build could be anywhere), and the follow-ups of
/// earlier choices: `drained` (removed after the acknowledgement), `awaiting`, `cancelled`.
fn log_decision(pool: &str, group: &GroupPath, reduction: u32, choice: &ScaleInChoice) {
    let count = |f: fn(&Action) -> bool| choice.actions.iter().filter(|(_, a)| f(a)).count();
    let removed = count(|a| {
        matches!(
            a,
            Action::Remove(RemoveReason::Idle) | Action::Remove(RemoveReason::Booting)
        )
    });
    let drained = count(|a| matches!(a, Action::Remove(RemoveReason::Drained)));
    let drain_requested = count(|a| matches!(a, Action::RequestDrain));
    let awaiting = count(|a| matches!(a, Action::AwaitDrain));
    let cancelled = count(|a| matches!(a, Action::CancelDrain));
    let held = choice.held.len();
    let unmet = (reduction as usize).saturating_sub(choice.leaving() as usize);
    let blocked = if choice.blocker.is_some() {
        unmet.saturating_sub(held)
    } else {
        0
    };
    if reduction == 0 && cancelled == 0 {
        return;
    }
    info!(
        pool,
        group = %group,
        reduction,
        removed,
        drained,
        drain_requested,
        awaiting,
        cancelled,
        held,
        blocked,
        blocker = %choice.blocker.as_ref().map(|b| b.to_string()).unwrap_or_default(),
        "scale-in decision"
    );
}

fn describe_removal(
    group: &GroupPath,
    choice: &ScaleInChoice,
    kept: &HashSet<String>,
    current: u32,
    new_size: u32,
) -> String {
    let removals: Vec<_> = choice
        .removals()
        .filter(|(id, _)| !kept.contains(*id))
        .collect();
    let names: Vec<&str> = removals.iter().map(|(id, _)| *id).collect();
    let mut reasons: Vec<&str> = Vec::new();
    for (_, r) in &removals {
        let why = match r {
            RemoveReason::Idle => "idle, oldest first",
            other => other.as_str(),
        };
        if !reasons.contains(&why) {
            reasons.push(why);
        }
    }
    let busy = choice
        .held
        .iter()
        .filter(|(_, h)| matches!(h, HoldReason::Busy { .. }))
        .count();
    let no_agent = choice.held.len() - busy;
    let mut held = String::new();
    if busy > 0 {
        held.push_str(&format!(", {busy} held up by busy workers"));
    }
    if no_agent > 0 {
        held.push_str(&format!(
            ", {no_agent} held: no drain agent (require_drain_agent)"
        ));
    }
    format!(
        "deleteInstances {group} [{}] ({}; target size {current} -> {new_size}{held})",
        names.join(", "),
        reasons.join(" + ")
    )
}
