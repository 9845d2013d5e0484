//! The rules judged instance by instance inside one pool's group: tags, drains, check-ins,
//! versions; and the pool's summary row.

use super::*;

pub(super) fn judge_pool(
    ctx: &mut Ctx<'_>,
    p: &PoolInput,
    g: &InventoryGroup,
    pool_tag: &str,
    members: &[&InventoryInstance],
) -> PoolReport {
    let input = ctx.input;
    let now = input.now;
    let name = p.pool.name.as_str();
    let target = g.target.as_str();
    let mut report = PoolReport {
        status: "ok",
        target: Some(g.target.clone()),
        workers_per_instance: Some(g.workers_per_instance),
        desired_instances: Some(g.desired),
        desired_workers: Some(g.desired * g.workers_per_instance),
        min_instances: g.min,
        max_instances: g.max,
        ..PoolReport::unread(p)
    };
    let mut hours = 0.0;
    let mut busy_running = 0u32;
    for i in members {
        let builds = builds_on(p, i);
        let last_checkin = last_checkin(input, i);
        match i.state {
            InstanceState::Running => report.running += 1,
            InstanceState::Pending => report.pending += 1,
            InstanceState::Terminating => report.terminating += 1,
            InstanceState::Stopped | InstanceState::Other => report.stopped += 1,
        }
        if !builds.is_empty() {
            report.busy += 1;
            if i.state == InstanceState::Running {
                busy_running += 1;
            }
        } else if i.state == InstanceState::Running {
            report.idle += 1;
        }
        if let Some(l) = i.launched {
            hours += (now - l).num_seconds().max(0) as f64 / 3600.0;
        }
        let version = i.tags.get(TAG_VERSION).cloned();

        tags(ctx, name, target, pool_tag, i);
        stuck_draining(ctx, name, target, i, &builds);
        never_checked_in(ctx, p, target, i, &builds, last_checkin);
        version_skew(ctx, name, target, i, version.as_deref());

        report.instances.push(InstanceReport {
            id: i.id.clone(),
            name: i.name.clone(),
            zone: i.zone.clone(),
            state: i.state.as_str(),
            raw_state: i.raw_state.clone(),
            launched: i.launched,
            age_seconds: i.launched.map(|l| (now - l).num_seconds()),
            busy: !builds.is_empty(),
            builds,
            last_checkin,
            version,
            protected_from_scale_in: i.protected_from_scale_in,
        });
    }
    report.instance_hours = round2(hours);
    report.instances.sort_by(|a, b| {
        (a.launched.is_none(), a.launched, &a.id).cmp(&(b.launched.is_none(), b.launched, &b.id))
    });

    drift(ctx, p, g, members, busy_running);
    launch_failing(ctx, p, g, members);
    scale_in_protected(ctx, p, g, members);
    report
}

/// Whether a hostname Vespene recorded (a busy worker's, a `workers` row's) is this instance.
fn names(i: &InventoryInstance, hostname: Option<&str>) -> bool {
    hostname.is_some_and(|h| hostname_matches(h, &i.hostnames))
}

/// The RUNNING builds the pool's busy hostnames put on this instance.
fn builds_on(p: &PoolInput, i: &InventoryInstance) -> Vec<i64> {
    p.busy
        .iter()
        .filter(|b| names(i, b.hostname.as_deref()))
        .map(|b| b.build_id)
        .collect()
}

/// The latest check-in of a `workers` row naming this instance since it launched (an older
/// one was another machine of the same name).
fn last_checkin(input: &Input, i: &InventoryInstance) -> Option<DateTime<Utc>> {
    input
        .workers
        .iter()
        .filter(|w| names(i, w.hostname.as_deref()))
        .filter_map(|w| w.last_checkin)
        .filter(|t| i.launched.is_none_or(|l| *t >= l))
        .max()
}

/// **untagged** and **orphan** (a member labelled for another pool), for described members.
fn tags(ctx: &mut Ctx<'_>, name: &str, target: &str, pool_tag: &str, i: &InventoryInstance) {
    if i.described {
        let worker_ok = is_worker(i);
        let label = i.tags.get(TAG_POOL);
        let mut missing = Vec::new();
        if !worker_ok {
            missing.push(format!("{TAG_WORKER}=true"));
        }
        if label.is_none() {
            missing.push(format!("{TAG_POOL}={pool_tag}"));
        }
        if !missing.is_empty() {
            ctx.add(
                Severity::Warning,
                Kind::Untagged,
                Some(name),
                Some(target),
                Some(i),
                format!(
                    "member of {target} without {}: invisible to tag-based searches and cost reports; set them in the group's template",
                    missing.join(" and ")
                ),
                None,
            );
        } else if let Some(l) = label.filter(|l| l.as_str() != pool_tag) {
            ctx.add(
                Severity::Error,
                Kind::Orphan,
                Some(name),
                Some(target),
                Some(i),
                format!(
                    "labelled {TAG_POOL}={l} but a member of pool {name}'s group {target}: one pool's launches landed in another's group"
                ),
                None,
            );
        }
    }
}

/// **stuck_terminating**: draining for longer than the drain limit, or since a time unknown.
fn stuck_draining(
    ctx: &mut Ctx<'_>,
    name: &str,
    target: &str,
    i: &InventoryInstance,
    builds: &[i64],
) {
    let input = ctx.input;
    let opts = &input.options;
    if i.state == InstanceState::Terminating {
        let holding = if builds.is_empty() {
            String::new()
        } else {
            format!(
                "; still holds RUNNING build{} {}",
                if builds.len() > 1 { "s" } else { "" },
                builds
                    .iter()
                    .map(|b| b.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        match ctx.age(i.state_since) {
            Some(age) if age > opts.drain_limit => ctx.add(
                Severity::Warning,
                Kind::StuckTerminating,
                Some(name),
                Some(target),
                Some(i),
                format!(
                    "{} for {}, longer than the drain limit {}{holding}",
                    i.raw_state,
                    human(age),
                    human(opts.drain_limit)
                ),
                Some(age),
            ),
            Some(_) => {}
            None => ctx.add(
                Severity::Info,
                Kind::StuckTerminating,
                Some(name),
                Some(target),
                Some(i),
                format!(
                    "{}, since a time the cloud does not say: cannot be held to the drain limit {}{holding}",
                    i.raw_state,
                    human(opts.drain_limit)
                ),
                None,
            ),
        }
    }
}

/// **never_checked_in**: running past the boot allowance, holding no build, and no check-in.
fn never_checked_in(
    ctx: &mut Ctx<'_>,
    p: &PoolInput,
    target: &str,
    i: &InventoryInstance,
    builds: &[i64],
    last_checkin: Option<DateTime<Utc>>,
) {
    let input = ctx.input;
    let opts = &input.options;
    let name = p.pool.name.as_str();
    if i.state == InstanceState::Running && builds.is_empty() && last_checkin.is_none() {
        if let Some(up) = ctx.age(i.launched).filter(|a| *a > opts.boot_allowance) {
            let names = i
                .hostnames
                .iter()
                .take(4)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ");
            let (severity, why) = if p.queued_builds > 0 {
                (
                    Severity::Error,
                    format!(
                        "while {} build(s) wait in the queue: the image may not start the worker or reach the database (image checklist points 5 and 6)",
                        p.queued_builds
                    ),
                )
            } else {
                (
                    Severity::Info,
                    "but the queue is empty, so it may just have had nothing to claim".to_string(),
                )
            };
            ctx.add(
                severity,
                Kind::NeverCheckedIn,
                Some(name),
                Some(target),
                Some(i),
                format!(
                    "up {} (boot allowance {}) and no workers row for {names} has checked in since it launched, {why}",
                    human(up),
                    human(opts.boot_allowance)
                ),
                Some(up),
            );
        }
    }
}

/// **version_skew** (an untagged member is reported as such already).
fn version_skew(
    ctx: &mut Ctx<'_>,
    name: &str,
    target: &str,
    i: &InventoryInstance,
    version: Option<&str>,
) {
    let input = ctx.input;
    let opts = &input.options;
    let tagged = is_worker(i) && i.tags.contains_key(TAG_POOL);
    if let (Some(want), true) = (&opts.expected_version, i.described && tagged) {
        if i.state != InstanceState::Terminating {
            match version {
                None => ctx.add(
                    Severity::Warning,
                    Kind::VersionSkew,
                    Some(name),
                    Some(target),
                    Some(i),
                    format!("no {TAG_VERSION} label/tag; expected {want}"),
                    None,
                ),
                Some(v) if version_key(v) != version_key(want) => ctx.add(
                    Severity::Warning,
                    Kind::VersionSkew,
                    Some(name),
                    Some(target),
                    Some(i),
                    format!("{TAG_VERSION}={v}, expected {want}: the image and the Vespene server differ (image checklist point 1)"),
                    None,
                ),
                Some(_) => {}
            }
        }
    }
}
