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

mod policy;

use crate::apply::Applier;
use crate::candidates::{Member, DRAIN_KEY, DRAIN_REQUESTED};
use crate::client::ApiErrorKind;
use crate::target::GroupPath;
use autoscaler_executor::scale_in::{
    choose, Action, Candidate, Drain, ScaleInChoice, ScaleInRequest,
};
use autoscaler_executor::{
    ActionLog, BusyWorker, ErrorKind, ExecutorError, Outcome, ScaleRequest, WorkerPool,
};
use chrono::Utc;
use policy::{log_decision, outcome_or_error, planned_actions, split_leavers_of, Leavers};
use std::collections::HashMap;
use tracing::{info, warn};

/// A RUNNING build with no worker recorded holds every instance (Vespene records the worker a
/// moment after it starts the build), but a row still unassigned after this long was left by
/// a worker that died in between, and must not hold the pool forever.
pub const UNASSIGNED_GRACE_SECS: i64 = 600;

/// Attempts at `setMetadata` when the fingerprint keeps changing under us (412).
const METADATA_ATTEMPTS: u32 = 3;

/// The sizes one reconcile works with, in instances.
#[derive(Clone, Copy)]
struct Sizes {
    /// The group's target size now.
    current: u32,
    /// The plan's target size.
    want: u32,
    /// The plan's standby target.
    standby: u32,
}

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
        let sizes = Sizes {
            current,
            want,
            standby,
        };
        let pool = req.pool;
        let reduction = current.saturating_sub(want);
        let read = self.read_group(&pool.name, group).await?;
        let candidates: Vec<Candidate> = read.members.iter().map(|m| m.candidate.clone()).collect();
        let draining = candidates.iter().filter(|c| c.drain != Drain::None).count();
        if reduction == 0 && draining == 0 {
            self.remember_drains(group, false);
            return self
                .grow_to(pool, group, &read.members, sizes, req.dry_run)
                .await;
        }
        let busy = self.busy_workers(req, group, reduction).await?;
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
        let leavers = split_leavers_of(&read.members, &by_id, &choice, standby);
        let new_size = current - leavers.deleted.len() as u32;
        let actions = planned_actions(group, &choice, &leavers, current, new_size);
        if req.dry_run {
            return self
                .dry_run(
                    pool,
                    group,
                    &read.members,
                    &choice,
                    &leavers,
                    actions,
                    sizes,
                )
                .await;
        }

        let mut actions = actions;
        let mut errors = read.errors;
        let removed = self
            .remove(
                &pool.name,
                group,
                &leavers,
                &mut actions,
                &mut errors,
                current,
            )
            .await;
        let metadata_failed = self
            .change_drains(
                &pool.name,
                group,
                &choice,
                &by_id,
                &mut actions,
                &mut errors,
            )
            .await;
        let still_draining = choice
            .actions
            .iter()
            .any(|(_, a)| matches!(a, Action::RequestDrain | Action::AwaitDrain));
        self.remember_drains(group, still_draining || metadata_failed);

        let mut applied = current - removed;
        let mut revisit = choice.unfinished();
        if want > current {
            let out = self
                .grow_to(pool, group, &read.members, sizes, false)
                .await?;
            actions.extend(out.actions);
            applied = want;
            revisit |= out.revisit;
        }
        let wpi = self.cfg().workers_per_instance;
        outcome_or_error(
            &pool.name,
            group,
            &choice,
            errors,
            Outcome {
                actions,
                applied: Some(applied * wpi),
                revisit,
            },
        )
    }

    /// Grows to `want` (standby members first when the plan keeps a standby pool), or, at or
    /// above it, leaves the group as it is.
    async fn grow_to(
        &self,
        pool: &WorkerPool,
        group: &GroupPath,
        members: &[Member],
        sizes: Sizes,
        dry_run: bool,
    ) -> Result<Outcome, ExecutorError> {
        let (current, want) = (sizes.current, sizes.want);
        if want > current && sizes.standby > 0 {
            self.grow(pool, group, members, current, want, dry_run)
                .await
        } else if want > current {
            self.scale_out(pool, group, current, want, dry_run).await
        } else {
            Ok(Outcome {
                actions: Vec::new(),
                applied: Some(current * self.cfg().workers_per_instance),
                revisit: false,
            })
        }
    }

    /// The busy workers, read last, as close to the removal as possible. With nothing to
    /// remove (only drains to call off) they do not matter, and a database outage must not
    /// stop a scale-out.
    async fn busy_workers(
        &self,
        req: &ScaleRequest<'_>,
        group: &GroupPath,
        reduction: u32,
    ) -> Result<Vec<BusyWorker>, ExecutorError> {
        if reduction == 0 {
            return Ok(Vec::new());
        }
        let pool = req.pool;
        req.workers.busy_workers(pool).await.map_err(|e| {
            ExecutorError::new(
                &pool.name,
                ErrorKind::Directory,
                format!("{e}; not scaling in {group}"),
            )
        })
    }

    /// What a `--dry-run` reports: the planned lines as "would …", the standby calls, and the
    /// growth, with nothing changed.
    #[allow(clippy::too_many_arguments)]
    async fn dry_run(
        &self,
        pool: &WorkerPool,
        group: &GroupPath,
        members: &[Member],
        choice: &ScaleInChoice,
        leavers: &Leavers<'_>,
        planned: Vec<String>,
        sizes: Sizes,
    ) -> Result<Outcome, ExecutorError> {
        let (current, want) = (sizes.current, sizes.want);
        let mut log = ActionLog::new(true);
        for a in planned {
            log.would(a);
        }
        log.extend(
            self.to_standby(&pool.name, group, &leavers.to_standby, true)
                .await?,
        );
        if want > current && sizes.standby > 0 {
            let out = self.grow(pool, group, members, current, want, true).await?;
            log.extend(out.actions);
        } else if want > current {
            log.would(format!("resize {group} from {current} to {want} instances"));
        }
        Ok(Outcome {
            actions: log.into_lines(),
            applied: Some(current * self.cfg().workers_per_instance),
            revisit: choice.unfinished(),
        })
    }

    /// Deletes the leavers and puts the others in standby. A failed call drops its action
    /// line and joins `errors`; returns how many members left the target size.
    async fn remove(
        &self,
        pool: &str,
        group: &GroupPath,
        leavers: &Leavers<'_>,
        actions: &mut Vec<String>,
        errors: &mut Vec<ExecutorError>,
        current: u32,
    ) -> u32 {
        let mut removed = 0;
        let deleted = &leavers.deleted;
        if !deleted.is_empty() {
            match self.delete(pool, group, deleted).await {
                Ok(rid) => {
                    removed = deleted.len() as u32;
                    if let Some(a) = actions.first_mut() {
                        a.push_str(&format!(" (requestId {rid})"));
                    }
                    let names: Vec<&str> =
                        deleted.iter().map(|m| m.managed.name.as_str()).collect();
                    let to = current - removed;
                    info!(pool, group = %group, deleted = %names.join(", "), from = current, to, "deleted instances");
                }
                Err(e) => {
                    actions.remove(0);
                    errors.push(e);
                }
            }
        }
        match self
            .to_standby(pool, group, &leavers.to_standby, false)
            .await
        {
            Ok(line) => {
                removed += leavers.to_standby.len() as u32;
                actions.extend(line);
            }
            Err(e) => errors.push(e),
        }
        removed
    }

    /// Asks the chosen instances to drain and calls off the drains the plan no longer needs.
    /// A failed change drops its action line and joins `errors`; returns whether any failed
    /// (the group may then still be draining).
    async fn change_drains(
        &self,
        pool: &str,
        group: &GroupPath,
        choice: &ScaleInChoice,
        by_id: &HashMap<&str, &Member>,
        actions: &mut Vec<String>,
        errors: &mut Vec<ExecutorError>,
    ) -> bool {
        let mut failed = false;
        let changes = choice
            .drain_requests()
            .map(|id| (id, true))
            .chain(choice.drain_cancels().map(|id| (id, false)));
        for (id, on) in changes {
            let Some(m) = by_id.get(id) else { continue };
            if let Err(e) = self.set_drain(pool, group, m, on).await {
                let what = if on { "drain request" } else { "drain cancel" };
                actions.retain(|a| {
                    !(a.contains(&format!(" on {id} ")) && a.starts_with("setMetadata"))
                });
                warn!(pool, group = %group, instance = id, error = %e, "{what} failed");
                failed = true;
                errors.push(e);
            }
        }
        failed
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
