//! The scale-in decisions around the shared chooser, without I/O: what becomes of each
//! leaver (deleted or kept in standby), the action lines, the decision's log line, and the
//! cycle's result. [`super`] carries them out with Compute calls.

use crate::candidates::{Member, DRAIN_KEY, DRAIN_REQUESTED};
use crate::standby::in_standby;
use crate::target::GroupPath;
use autoscaler_executor::scale_in::{Action, Blocker, HoldReason, RemoveReason, ScaleInChoice};
use autoscaler_executor::standby::split_leavers;
use autoscaler_executor::{ErrorKind, ExecutorError, Outcome};
use std::collections::{HashMap, HashSet};
use tracing::info;

/// What becomes of the members the chooser removes: idle and drained leavers fill the standby
/// target (suspended or stopped), the rest (and booting ones, always) are deleted.
pub(super) struct Leavers<'a> {
    /// Deleted now, in one `deleteInstances`.
    pub(super) deleted: Vec<&'a Member>,
    /// Put in standby instead.
    pub(super) to_standby: Vec<&'a Member>,
    /// The ids of `to_standby`, which the deletion's action line leaves out.
    pub(super) kept: HashSet<String>,
}

/// Splits the chooser's removals between deletion and standby (see [`Leavers`]).
pub(super) fn split_leavers_of<'a>(
    members: &'a [Member],
    by_id: &HashMap<&str, &'a Member>,
    choice: &ScaleInChoice,
    standby: u32,
) -> Leavers<'a> {
    let leavers: Vec<String> = choice
        .removals()
        .filter(|(_, r)| matches!(r, RemoveReason::Idle | RemoveReason::Drained))
        .map(|(id, _)| id.to_string())
        .collect();
    let held_in_standby = members.iter().filter(|m| in_standby(m)).count() as u32;
    let kept: HashSet<String> = split_leavers(&leavers, held_in_standby, standby)
        .to_standby
        .into_iter()
        .collect();
    let pick = |standby: bool| -> Vec<&'a Member> {
        choice
            .removals()
            .filter(|(id, _)| kept.contains(*id) == standby)
            .filter_map(|(id, _)| by_id.get(id).copied())
            .collect()
    };
    Leavers {
        deleted: pick(false),
        to_standby: pick(true),
        kept,
    }
}

/// The action lines of a decision before any call: the deletion, then each drain change.
pub(super) fn planned_actions(
    group: &GroupPath,
    choice: &ScaleInChoice,
    leavers: &Leavers<'_>,
    current: u32,
    new_size: u32,
) -> Vec<String> {
    let mut actions = Vec::new();
    if !leavers.deleted.is_empty() {
        actions.push(describe_removal(
            group,
            choice,
            &leavers.kept,
            current,
            new_size,
        ));
    }
    for id in choice.drain_requests() {
        actions.push(format!("setMetadata {DRAIN_KEY}={DRAIN_REQUESTED} on {id} (drain agent asked to stop; deleted once it acknowledges)"));
    }
    for id in choice.drain_cancels() {
        actions.push(format!(
            "setMetadata without {DRAIN_KEY} on {id} (drain called off: the plan needs it)"
        ));
    }
    actions
}

/// The cycle's result: held when busy workers match no instance (the reduction cannot be
/// made safely), else the first error of the calls (with how many more), else the outcome.
pub(super) fn outcome_or_error(
    pool: &str,
    group: &GroupPath,
    choice: &ScaleInChoice,
    errors: Vec<ExecutorError>,
    outcome: Outcome,
) -> Result<Outcome, ExecutorError> {
    if let Some(b @ Blocker::Unmatched { .. }) = &choice.blocker {
        return Err(ExecutorError::new(
            pool,
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
            pool,
            first.kind,
            format!("{}{more}", first.message),
        ));
    }
    Ok(outcome)
}

/// The log line every decision leaves, in fields a test or an operator can count: instances
/// chosen (`removed` now, or `drain_requested`), `held` (busy, no agent), `blocked` (the
/// reduction left unmet because a RUNNING build could be anywhere), and the follow-ups of
/// earlier choices: `drained` (removed after the acknowledgement), `awaiting`, `cancelled`.
pub(super) fn log_decision(pool: &str, group: &GroupPath, reduction: u32, choice: &ScaleInChoice) {
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

/// The deletion's action line: which instances, why, the size change and what was held.
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
