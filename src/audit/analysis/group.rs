//! The rules judged on a whole group: drift between running and desired, launches failing,
//! members protected from scale-in.

use super::*;

/// Protected members stay whatever the plan says: a warning when more members run than the
/// group's desired size and protected ones are among them (AWS lowered the size but may not
/// end them), else an info naming them, so a pool that does not shrink is explained.
pub(super) fn scale_in_protected(
    ctx: &mut Ctx<'_>,
    p: &PoolInput,
    g: &InventoryGroup,
    members: &[&InventoryInstance],
) {
    let protected: Vec<&str> = members
        .iter()
        .filter(|i| i.protected_from_scale_in && i.state != InstanceState::Terminating)
        .map(|i| i.name.as_str())
        .collect();
    if protected.is_empty() {
        return;
    }
    let running = members
        .iter()
        .filter(|i| i.state == InstanceState::Running)
        .count() as u32;
    let mut names = protected
        .iter()
        .take(10)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if protected.len() > 10 {
        names.push_str(", …");
    }
    let n = protected.len();
    let (severity, message) = if running > g.desired {
        (
            Severity::Warning,
            format!(
                "{running} instances running, {} above the {} desired, and {n} protected from \
                 scale-in ({names}): neither AWS nor the autoscaler removes a protected instance, \
                 so the group stays above its size until their protection is removed",
                running - g.desired,
                g.desired
            ),
        )
    } else {
        (
            Severity::Info,
            format!(
                "{n} member(s) protected from scale-in ({names}): the autoscaler never picks them \
                 when the pool shrinks"
            ),
        )
    };
    ctx.add(
        severity,
        Kind::ScaleInProtected,
        Some(p.pool.name.as_str()),
        Some(&g.target),
        None,
        message,
        None,
    );
}

/// One error per distinct reason the cloud gives for launches that fail now: the builds of
/// the pool wait on it and only an operator can fix it (a quota, a stockout, a template).
pub(super) fn launch_failing(
    ctx: &mut Ctx<'_>,
    p: &PoolInput,
    g: &InventoryGroup,
    members: &[&InventoryInstance],
) {
    let mut by_reason: BTreeMap<&str, Vec<&LaunchFailure>> = BTreeMap::new();
    for f in &g.launch_failures {
        by_reason.entry(f.reason.as_str()).or_default().push(f);
    }
    for (reason, failures) in by_reason {
        let first = failures[0];
        let since = failures.iter().filter_map(|f| f.since).min();
        let instance = first
            .instance
            .as_deref()
            .and_then(|n| members.iter().find(|i| i.name == n || i.id == n).copied());
        let count = if failures.len() > 1 {
            format!(" ({} launches)", failures.len())
        } else {
            String::new()
        };
        ctx.add(
            Severity::Error,
            Kind::LaunchFailing,
            Some(p.pool.name.as_str()),
            Some(&g.target),
            instance,
            format!(
                "the cloud cannot launch instances: {reason}{count}: {}",
                first.message
            ),
            ctx.age(since),
        );
    }
}

pub(super) fn drift(
    ctx: &mut Ctx<'_>,
    p: &PoolInput,
    g: &InventoryGroup,
    members: &[&InventoryInstance],
    busy_running: u32,
) {
    let now = ctx.input.now;
    let grace = ctx.input.options.drift_grace;
    let name = p.pool.name.as_str();
    let desired = g.desired;
    let running: Vec<&&InventoryInstance> = members
        .iter()
        .filter(|i| i.state == InstanceState::Running)
        .collect();
    let n_running = running.len() as u32;
    if n_running == desired {
        return;
    }
    // When the desired size was last set, as far as anyone recorded.
    let desired_set = match (p.pool.last_autoscaled, g.desired_since) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    let wpi = g.workers_per_instance;
    let workers = |n: u32| {
        if wpi > 1 {
            format!(" ({} workers)", n * wpi)
        } else {
            String::new()
        }
    };
    let (since, what, held_by_builds) = if n_running < desired {
        let pending: Vec<&&InventoryInstance> = members
            .iter()
            .filter(|i| i.state == InstanceState::Pending)
            .collect();
        let missing = desired.saturating_sub(n_running + pending.len() as u32);
        let dated: Vec<DateTime<Utc>> = pending
            .iter()
            .filter_map(|i| i.launched.or(i.state_since))
            .collect();
        let undated = missing as usize + pending.len() - dated.len();
        let mut bounds: Vec<DateTime<Utc>> = dated.into_iter().min().into_iter().collect();
        if undated > 0 {
            bounds.extend(desired_set);
        }
        // The shortfall has lasted at least as long as its longest-dated cause.
        let since = bounds.into_iter().min();
        (
            since,
            format!(
                "{n_running} of {desired} desired instances{} running ({} pending, {missing} not yet created)",
                workers(desired),
                pending.len()
            ),
            false,
        )
    } else {
        let excess = n_running - desired;
        let mut up: Vec<Option<DateTime<Utc>>> = running
            .iter()
            .map(|i| i.state_since.or(i.launched))
            .collect();
        up.sort_by_key(|t| (t.is_none(), *t));
        let nth = up.get(desired as usize).copied().flatten();
        let since = match (nth, desired_set) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        };
        (
            since,
            format!(
                "{n_running} instances running, {excess} above the {desired} desired{}",
                workers(desired)
            ),
            excess <= busy_running,
        )
    };
    match since.map(|s| now - s) {
        Some(age) if age >= grace => {
            let (severity, tail) = if held_by_builds {
                (
                    Severity::Info,
                    format!(
                        "; {busy_running} running instance(s) hold builds and go once those end"
                    ),
                )
            } else {
                (Severity::Warning, String::new())
            };
            ctx.add(
                severity,
                Kind::Drift,
                Some(name),
                Some(&g.target),
                None,
                format!(
                    "{what} for at least {} (grace {}){tail}",
                    human(age),
                    human(grace)
                ),
                Some(age),
            );
        }
        Some(_) => {}
        None => ctx.add(
            Severity::Info,
            Kind::Drift,
            Some(name),
            Some(&g.target),
            None,
            format!(
                "{what}; no timestamp tells for how long: run the audit again after {}",
                human(grace)
            ),
            None,
        ),
    }
}
