//! The audit's judgement as one pure function: what the clouds described, what the Vespene
//! database says, and the clock in; findings and a per-pool summary out. No I/O, so every rule
//! is tested with hand-built fleets and the command's output is reproducible with `--now`.
//!
//! Rules (also in docs/audit.md):
//! - **orphan** (error): an instance labelled `vespene_worker=true` that is a member of no
//!   group read, or a member of one pool's group while its `vespene_pool` names another pool.
//!   Judged only for instances whose pool is audited (or, without `--queue`, any pool), and
//!   never for a pool whose group could not be read.
//! - **untagged** (warning): a group member lacking `vespene_worker=true` or `vespene_pool`.
//! - **drift**: `running ≠ desired` (terminating members excluded, as both clouds take them
//!   out of the desired size). The audit keeps no state, so it dates drift by its oldest
//!   cause: for a shortfall, the oldest not-yet-running member's launch and, for members not
//!   yet created (or with no timestamp), the time the desired size was last set
//!   (`last_autoscaled` of the pool, or the cloud's own record); for a surplus, the later of that time and the time
//!   the (desired+1)-th oldest running member came up. At least `drift_grace_seconds` old →
//!   warning (a surplus entirely made of busy instances → info: they go once their builds
//!   end); younger → nothing; no timestamp at all → info.
//! - **stuck_terminating** (warning): terminating/deleting for longer than
//!   `drain_limit_seconds` (undated → info).
//! - **never_checked_in**: running for longer than `boot_allowance_seconds`, holding no build,
//!   and no `workers` row matching its hostnames has checked in since it launched. Error when
//!   the pool has queued builds the instance should have claimed (the image is broken: the
//!   checklist's points 5 and 6), info when the queue is empty (an idle worker has nothing to
//!   claim, and Vespene writes the row when a build is claimed).
//! - **stale_worker** (info): a `workers` row that ran builds of an audited pool, last
//!   checked in more than `stale_worker_seconds` ago, whose hostname no instance carries.
//! - **version_skew** (warning): `vespene_version` missing or different from `expected_version`
//!   (compared with every character other than letters and digits read as `_`, since GCE label
//!   values cannot hold dots).
//! - **old_instance** (warning): launched longer ago than `--older-than`, oldest first.
//! - **launch_failing** (error): the cloud reports launches of the group failing now (a quota,
//!   a stockout, a broken template), one finding per reason.
//! - **scale_in_protected** (warning / info): members protected from scale-in (AWS), which
//!   neither AWS nor the autoscaler removes: warning when more members run than desired and
//!   protected ones are among them (they keep the group above its size), info otherwise.
//!
//! Hostnames: a `workers.hostname` matches an instance when it equals one of the instance's
//! hostnames (case-insensitive), or when either side has no dot and equals the first DNS label
//! of the other (`ip-10-0-0-5` matches `ip-10-0-0-5.ec2.internal`). IP addresses only match
//! exactly.

use crate::db::WorkerRow;
use autoscaler_executor::{
    inventory::{TAG_POOL, TAG_VERSION, TAG_WORKER},
    BusyWorker, ExecutorError, InstanceState, InventoryGroup, InventoryInstance, InventorySnapshot,
    LaunchFailure, WorkerPool,
};

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};

mod fleet;
mod group;
mod identity;
mod input;
mod pool;
mod report;

use fleet::{orphans_outside_groups, stale_workers};
use group::{drift, launch_failing, scale_in_protected};
pub use identity::hostname_matches;
use identity::{is_worker, version_key};
pub use input::{Input, Options, PoolInput};
use pool::judge_pool;
pub use report::*;

/// `3d 4h`, `2h 5m`, `45m`, `30s`: ages for messages and tables.
pub fn human(d: Duration) -> String {
    let s = d.num_seconds().max(0);
    let (days, hours, mins, secs) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60, s % 60);
    if days > 0 {
        if hours > 0 {
            format!("{days}d {hours}h")
        } else {
            format!("{days}d")
        }
    } else if hours > 0 {
        if mins > 0 {
            format!("{hours}h {mins}m")
        } else {
            format!("{hours}h")
        }
    } else if mins > 0 {
        format!("{mins}m")
    } else {
        format!("{secs}s")
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

struct Ctx<'a> {
    input: &'a Input,
    findings: Vec<Finding>,
}

impl Ctx<'_> {
    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        severity: Severity,
        kind: Kind,
        pool: Option<&str>,
        group: Option<&str>,
        instance: Option<&InventoryInstance>,
        message: String,
        age: Option<Duration>,
    ) {
        self.findings.push(Finding {
            severity,
            kind,
            pool: pool.map(str::to_string),
            group: group.map(str::to_string),
            instance: instance.map(|i| i.name.clone()),
            instance_id: instance.map(|i| i.id.clone()),
            worker: None,
            message,
            age_seconds: age.map(|a| a.num_seconds()),
        });
    }

    fn age(&self, t: Option<DateTime<Utc>>) -> Option<Duration> {
        t.map(|t| self.input.now - t)
    }
}

/// Judges the fleet. Pure: the same input gives the same report.
pub fn analyze(input: &Input) -> Report {
    let opts = &input.options;
    let mut ctx = Ctx {
        input,
        findings: Vec::new(),
    };
    let mut failures = input.failures.clone();
    let backends = backend_reports(input, &mut failures);
    let groups = Groups::read(input, &mut failures);
    let pools_out: Vec<PoolReport> = input
        .pools
        .iter()
        .map(|p| pool_report(&mut ctx, &groups, p))
        .collect();
    orphans_outside_groups(&mut ctx, &groups.ok, &groups.failed, &groups.tag_owner);
    stale_workers(&mut ctx, &groups.failed);
    if let Some(limit) = opts.older_than {
        old_instances(&mut ctx, &groups, limit);
    }
    let mut findings = ctx.findings;
    sort_findings(input, &mut findings);
    let totals = totals(&pools_out, &findings);
    let exit_status = if !failures.is_empty() {
        2
    } else if opts
        .fail_on
        .is_some_and(|min| findings.iter().any(|f| f.severity >= min))
    {
        1
    } else {
        0
    };
    Report {
        schema: SCHEMA,
        generated_at: input.now,
        read_only: true,
        settings: Settings {
            fail_on: match opts.fail_on {
                Some(s) => s.as_str(),
                None => "never",
            },
            older_than_seconds: opts.older_than.map(|d| d.num_seconds()),
            drift_grace_seconds: opts.drift_grace.num_seconds(),
            drain_limit_seconds: opts.drain_limit.num_seconds(),
            boot_allowance_seconds: opts.boot_allowance.num_seconds(),
            stale_worker_seconds: opts.stale_worker.num_seconds(),
            expected_version: opts.expected_version.clone(),
        },
        pools: pools_out,
        findings,
        failures,
        backends,
        totals,
        exit_status,
    }
}

/// One line per backend: whether its inventory could be read; a backend that failed is also
/// a failure of the audit (exit status 2).
fn backend_reports(input: &Input, failures: &mut Vec<Failure>) -> Vec<BackendReport> {
    let mut backends = Vec::new();
    for (executor, src) in &input.sources {
        match src {
            Ok(s) => backends.push(BackendReport {
                executor: executor.clone(),
                status: "ok",
                scope: s.scope.clone(),
                api_calls: s.api_calls,
            }),
            Err(e) => {
                backends.push(BackendReport {
                    executor: executor.clone(),
                    status: "failed",
                    scope: Vec::new(),
                    api_calls: 0,
                });
                failures.push(Failure::from_executor(format!("inventory {executor}"), e));
            }
        }
    }
    backends
}

/// Which pools' groups could be read, per executor: only those are judged, and no instance is
/// called an orphan on behalf of a pool whose group could not be read.
struct Groups<'a> {
    /// The groups read, by (executor, pool).
    ok: HashMap<(&'a str, &'a str), &'a InventoryGroup>,
    /// Pools whose group (or whole backend) could not be read.
    failed: HashSet<&'a str>,
    /// The pool a `vespene_pool` label value stands for, by (executor, label).
    tag_owner: HashMap<(&'a str, &'a str), &'a str>,
}

impl<'a> Groups<'a> {
    fn read(input: &'a Input, failures: &mut Vec<Failure>) -> Self {
        let mut groups = Groups {
            ok: HashMap::new(),
            failed: HashSet::new(),
            tag_owner: HashMap::new(),
        };
        for p in &input.pools {
            let name = p.pool.name.as_str();
            match input.sources.get(&p.executor) {
                Some(Ok(snap)) => match snap.pools.iter().find(|pi| pi.pool == name) {
                    Some(pi) => {
                        groups
                            .tag_owner
                            .insert((p.executor.as_str(), pi.pool_tag.as_str()), name);
                        match &pi.group {
                            Ok(g) => {
                                groups.ok.insert((p.executor.as_str(), name), g);
                            }
                            Err(e) => {
                                groups.failed.insert(name);
                                failures.push(Failure::from_executor(
                                    format!("group of pool {name}"),
                                    e,
                                ));
                            }
                        }
                    }
                    None => {
                        groups.failed.insert(name);
                    }
                },
                _ => {
                    groups.failed.insert(name);
                }
            }
        }
        groups
    }
}

/// The pool's summary, judging its group's members; a pool whose group could not be read gets
/// an empty `failed` row (the failure itself is in `failures`).
fn pool_report(ctx: &mut Ctx<'_>, groups: &Groups<'_>, p: &PoolInput) -> PoolReport {
    let input = ctx.input;
    let name = p.pool.name.as_str();
    let exec = p.executor.as_str();
    let Some(g) = groups.ok.get(&(exec, name)).copied() else {
        return PoolReport::unread(p);
    };
    let Some(Ok(snap)) = input.sources.get(exec) else {
        unreachable!("a read group comes from a read snapshot")
    };
    let by_id: HashMap<&str, &InventoryInstance> =
        snap.instances.iter().map(|i| (i.id.as_str(), i)).collect();
    let pool_tag = snap
        .pools
        .iter()
        .find(|pi| pi.pool == name)
        .map(|pi| pi.pool_tag.as_str())
        .unwrap_or(name);
    let members: Vec<&InventoryInstance> = g
        .members
        .iter()
        .filter_map(|id| by_id.get(id.as_str()).copied())
        .collect();
    judge_pool(ctx, p, g, pool_tag, &members)
}

/// Old instances: every instance of the audited fleets launched longer ago than `limit`,
/// oldest first.
fn old_instances(ctx: &mut Ctx<'_>, groups: &Groups<'_>, limit: Duration) {
    let input = ctx.input;
    let now = input.now;
    let mut seen = HashSet::new();
    let mut old: Vec<(DateTime<Utc>, &str, &str, &InventoryInstance)> = Vec::new();
    for p in &input.pools {
        let Some(g) = groups.ok.get(&(p.executor.as_str(), p.pool.name.as_str())) else {
            continue;
        };
        let Some(Ok(snap)) = input.sources.get(&p.executor) else {
            continue;
        };
        for i in snap.instances.iter().filter(|i| g.members.contains(&i.id)) {
            if let Some(l) = i.launched {
                if now - l > limit && seen.insert(i.id.clone()) {
                    old.push((l, p.pool.name.as_str(), g.target.as_str(), i));
                }
            }
        }
    }
    old.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.3.id.cmp(&b.3.id)));
    for (l, pool, group, i) in old {
        ctx.add(
            Severity::Warning,
            Kind::OldInstance,
            Some(pool),
            Some(group),
            Some(i),
            format!(
                "launched {} ago ({}), older than --older-than {}",
                human(now - l),
                l.format("%Y-%m-%d %H:%M UTC"),
                human(limit)
            ),
            Some(now - l),
        );
    }
}

/// Order: pools in audit order, then no pool; kind; old instances stay oldest first.
fn sort_findings(input: &Input, findings: &mut [Finding]) {
    let order: HashMap<&str, usize> = input
        .pools
        .iter()
        .enumerate()
        .map(|(i, p)| (p.pool.name.as_str(), i))
        .collect();
    let rank = |f: &Finding| {
        f.pool
            .as_deref()
            .and_then(|p| order.get(p))
            .copied()
            .unwrap_or(usize::MAX)
    };
    findings.sort_by(|a, b| {
        let ka = (rank(a), a.pool.clone(), a.kind);
        let kb = (rank(b), b.pool.clone(), b.kind);
        ka.cmp(&kb).then_with(|| {
            if a.kind == Kind::OldInstance {
                std::cmp::Ordering::Equal // already oldest first (stable sort)
            } else {
                (&a.instance, &a.worker, &a.message).cmp(&(&b.instance, &b.worker, &b.message))
            }
        })
    });
}

/// The fleet's sums and the findings by severity.
fn totals(pools: &[PoolReport], findings: &[Finding]) -> Totals {
    let mut totals = Totals {
        pools: pools.len(),
        ..Totals::default()
    };
    for p in pools {
        totals.instances += p.instances.len() as u32;
        totals.busy += p.busy;
        totals.idle += p.idle;
        totals.instance_hours += p.instance_hours;
    }
    totals.instance_hours = round2(totals.instance_hours);
    for f in findings {
        match f.severity {
            Severity::Error => totals.findings.error += 1,
            Severity::Warning => totals.findings.warning += 1,
            Severity::Info => totals.findings.info += 1,
        }
    }
    totals
}
