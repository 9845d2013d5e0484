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

/// The version of the JSON document; bumped on any incompatible change.
pub const SCHEMA: &str = "vespene-autoscaler-audit/1";

/// How bad a finding is; `--fail-on` compares against it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing; nothing to fix.
    Info,
    /// Costs money or hides machines; fix soon.
    Warning,
    /// Something is broken or unmanaged.
    Error,
}

impl Severity {
    /// Lowercase name, as in JSON.
    pub fn as_str(&self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

/// What a finding is about. The order is the order of the issue and of the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Orphan,
    Untagged,
    Drift,
    StuckTerminating,
    NeverCheckedIn,
    StaleWorker,
    VersionSkew,
    OldInstance,
    LaunchFailing,
    ScaleInProtected,
}

impl Kind {
    /// snake_case name, as in JSON.
    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::Orphan => "orphan",
            Kind::Untagged => "untagged",
            Kind::Drift => "drift",
            Kind::StuckTerminating => "stuck_terminating",
            Kind::NeverCheckedIn => "never_checked_in",
            Kind::StaleWorker => "stale_worker",
            Kind::VersionSkew => "version_skew",
            Kind::OldInstance => "old_instance",
            Kind::LaunchFailing => "launch_failing",
            Kind::ScaleInProtected => "scale_in_protected",
        }
    }
}

/// One thing found, with what it concerns.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    pub kind: Kind,
    /// The pool it belongs to; `None` for an instance no audited pool claims.
    pub pool: Option<String>,
    /// The group involved, if any.
    pub group: Option<String>,
    /// The instance's name (`None` for group-level and worker-row findings).
    pub instance: Option<String>,
    /// The instance's id (GCE path / EC2 id), for scripts.
    pub instance_id: Option<String>,
    /// `workers.hostname` of a stale worker row.
    pub worker: Option<String>,
    /// What is wrong, for a human, with the numbers that make it so.
    pub message: String,
    /// How long it has been so, in seconds, when that can be told.
    pub age_seconds: Option<i64>,
}

/// A part of the audit that could not be done (exit status 2).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Failure {
    /// Which part: `inventory gce-mig`, `group of pool linux`, `pool arm`.
    pub part: String,
    /// The pool concerned, when one is.
    pub pool: Option<String>,
    /// A stable error kind (`not_found`, `unavailable`, `credentials`, `config`, …).
    pub kind: String,
    /// The error.
    pub message: String,
}

impl Failure {
    /// A failure from a backend error, naming `part`.
    pub fn from_executor(part: String, e: &ExecutorError) -> Failure {
        Failure {
            part,
            pool: Some(e.pool.clone()),
            kind: e.kind.as_str().to_string(),
            message: e.to_string(),
        }
    }
}

/// One instance in a pool's summary.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct InstanceReport {
    pub id: String,
    pub name: String,
    pub zone: Option<String>,
    /// `pending`, `running`, `terminating`, `stopped`, `other`.
    pub state: &'static str,
    /// The cloud's own word(s).
    pub raw_state: String,
    pub launched: Option<DateTime<Utc>>,
    pub age_seconds: Option<i64>,
    /// Holds a RUNNING build.
    pub busy: bool,
    /// The RUNNING builds it holds.
    pub builds: Vec<i64>,
    /// Latest `workers.last_checkin` of a row matching its hostnames (since launch).
    pub last_checkin: Option<DateTime<Utc>>,
    /// Its `vespene_version` tag/label.
    pub version: Option<String>,
    /// Protected from scale-in (AWS): never removed by a scale-in. Present only when true.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub protected_from_scale_in: bool,
}

/// One pool's summary.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PoolReport {
    pub name: String,
    pub executor: String,
    /// `ok`, or `failed` when its group could not be read (see `failures`).
    pub status: &'static str,
    /// The group (ASG name, MIG path).
    pub target: Option<String>,
    pub workers_per_instance: Option<u32>,
    pub desired_instances: Option<u32>,
    pub desired_workers: Option<u32>,
    pub min_instances: Option<u32>,
    pub max_instances: Option<u32>,
    /// Members by state.
    pub running: u32,
    pub pending: u32,
    pub terminating: u32,
    pub stopped: u32,
    /// Members holding a RUNNING build.
    pub busy: u32,
    /// Running members holding none.
    pub idle: u32,
    /// Hours since launch summed over the members: what the fleet has cost so far.
    pub instance_hours: f64,
    /// QUEUED and RUNNING builds of the pool.
    pub queued_builds: u64,
    pub running_builds: u64,
    /// Members, oldest first.
    pub instances: Vec<InstanceReport>,
}

/// What a backend cost and where it looked.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BackendReport {
    pub executor: String,
    /// `ok` or `failed`.
    pub status: &'static str,
    /// Where labelled instances were looked for: orphans elsewhere are not seen.
    pub scope: Vec<String>,
    /// Requests sent, retries included.
    pub api_calls: u32,
}

/// Counts by severity.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SeverityCounts {
    pub error: usize,
    pub warning: usize,
    pub info: usize,
}

/// Fleet-wide totals.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Totals {
    pub pools: usize,
    pub instances: u32,
    pub busy: u32,
    pub idle: u32,
    pub instance_hours: f64,
    pub findings: SeverityCounts,
}

/// The settings the findings were judged with, echoed so a report explains itself.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Settings {
    pub fail_on: &'static str,
    pub older_than_seconds: Option<i64>,
    pub drift_grace_seconds: i64,
    pub drain_limit_seconds: i64,
    pub boot_allowance_seconds: i64,
    pub stale_worker_seconds: i64,
    pub expected_version: Option<String>,
}

/// The whole audit: the JSON document, and what the table is printed from.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub generated_at: DateTime<Utc>,
    /// Always true: the audit never changes anything.
    pub read_only: bool,
    pub settings: Settings,
    pub pools: Vec<PoolReport>,
    /// Sorted by pool (in audit order; findings of no pool last), kind, then instance
    /// (old instances oldest first).
    pub findings: Vec<Finding>,
    pub failures: Vec<Failure>,
    pub backends: Vec<BackendReport>,
    pub totals: Totals,
    /// 0 clean, 1 findings at or above `fail_on`, 2 a part failed.
    pub exit_status: u8,
}

/// The thresholds.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    pub drift_grace: Duration,
    pub drain_limit: Duration,
    pub boot_allowance: Duration,
    pub stale_worker: Duration,
    pub expected_version: Option<String>,
    pub older_than: Option<Duration>,
    /// Lowest severity that makes the exit status 1; `None` = never.
    pub fail_on: Option<Severity>,
}

/// One audited pool and its database facts.
#[derive(Clone, Debug)]
pub struct PoolInput {
    pub pool: WorkerPool,
    /// The executor name (a key of [`Input::sources`]).
    pub executor: String,
    pub queued_builds: u64,
    pub running_builds: u64,
    /// Hostnames holding a RUNNING build of the pool.
    pub busy: Vec<BusyWorker>,
}

/// Everything the analysis looks at.
#[derive(Debug)]
pub struct Input {
    pub now: DateTime<Utc>,
    pub options: Options,
    /// In audit order.
    pub pools: Vec<PoolInput>,
    /// One inventory per executor name.
    pub sources: BTreeMap<String, Result<InventorySnapshot, ExecutorError>>,
    /// Every `workers` row.
    pub workers: Vec<WorkerRow>,
    /// `workers.id` → ids of the audited pools it ran builds for.
    pub worker_pools: HashMap<i32, Vec<i64>>,
    /// No `--queue`: every cloud pool is audited, so an instance labelled for a pool that does
    /// not exist is an orphan too.
    pub all_pools: bool,
    /// Parts that failed before the analysis (a named pool that does not exist, …).
    pub failures: Vec<Failure>,
}

/// Whether a worker's reported hostname is one of an instance's names: the one matching rule
/// every backend shares ([`autoscaler_executor::scale_in::hostname_matches`]).
pub fn hostname_matches(worker: &str, hostnames: &[String]) -> bool {
    hostnames
        .iter()
        .any(|h| autoscaler_executor::scale_in::hostname_matches(worker, h))
}

/// `1.2.3` and `1-2-3` are the same version (GCE label values cannot hold dots).
fn version_key(v: &str) -> String {
    v.trim()
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

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

fn is_worker(i: &InventoryInstance) -> bool {
    i.tags
        .get(TAG_WORKER)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
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
    let now = input.now;
    let mut ctx = Ctx {
        input,
        findings: Vec::new(),
    };
    let mut failures = input.failures.clone();
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

    // Which pools could be read, per executor, and every instance by id.
    let mut ok_groups: HashMap<(&str, &str), &InventoryGroup> = HashMap::new();
    let mut failed_pools: HashSet<&str> = HashSet::new();
    let mut tag_owner: HashMap<(&str, &str), &str> = HashMap::new();
    for p in &input.pools {
        let name = p.pool.name.as_str();
        match input.sources.get(&p.executor) {
            Some(Ok(snap)) => match snap.pools.iter().find(|pi| pi.pool == name) {
                Some(pi) => {
                    tag_owner.insert((p.executor.as_str(), pi.pool_tag.as_str()), name);
                    match &pi.group {
                        Ok(g) => {
                            ok_groups.insert((p.executor.as_str(), name), g);
                        }
                        Err(e) => {
                            failed_pools.insert(name);
                            failures
                                .push(Failure::from_executor(format!("group of pool {name}"), e));
                        }
                    }
                }
                None => {
                    failed_pools.insert(name);
                }
            },
            _ => {
                failed_pools.insert(name);
            }
        }
    }

    let mut pools_out = Vec::new();
    for p in &input.pools {
        let name = p.pool.name.as_str();
        let exec = p.executor.as_str();
        let Some(g) = ok_groups.get(&(exec, name)).copied() else {
            pools_out.push(PoolReport {
                name: name.to_string(),
                executor: p.executor.clone(),
                status: "failed",
                target: None,
                workers_per_instance: None,
                desired_instances: None,
                desired_workers: None,
                min_instances: None,
                max_instances: None,
                running: 0,
                pending: 0,
                terminating: 0,
                stopped: 0,
                busy: 0,
                idle: 0,
                instance_hours: 0.0,
                queued_builds: p.queued_builds,
                running_builds: p.running_builds,
                instances: Vec::new(),
            });
            continue;
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
        pools_out.push(judge_pool(&mut ctx, p, g, pool_tag, &members));
    }

    orphans_outside_groups(&mut ctx, &ok_groups, &failed_pools, &tag_owner);
    stale_workers(&mut ctx, &failed_pools);

    // Old instances: every instance of the audited fleets, oldest first.
    if let Some(limit) = opts.older_than {
        let mut seen = HashSet::new();
        let mut old: Vec<(DateTime<Utc>, &str, &str, &InventoryInstance)> = Vec::new();
        for p in &input.pools {
            let Some(g) = ok_groups.get(&(p.executor.as_str(), p.pool.name.as_str())) else {
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

    // Order: pools in audit order, then no pool; kind; old instances stay oldest first.
    let order: HashMap<&str, usize> = input
        .pools
        .iter()
        .enumerate()
        .map(|(i, p)| (p.pool.name.as_str(), i))
        .collect();
    let mut findings = ctx.findings;
    findings.sort_by(|a, b| {
        let pa = a
            .pool
            .as_deref()
            .and_then(|p| order.get(p))
            .copied()
            .unwrap_or(usize::MAX);
        let pb = b
            .pool
            .as_deref()
            .and_then(|p| order.get(p))
            .copied()
            .unwrap_or(usize::MAX);
        let ka = (pa, a.pool.clone(), a.kind);
        let kb = (pb, b.pool.clone(), b.kind);
        ka.cmp(&kb).then_with(|| {
            if a.kind == Kind::OldInstance {
                std::cmp::Ordering::Equal // already oldest first (stable sort)
            } else {
                (&a.instance, &a.worker, &a.message).cmp(&(&b.instance, &b.worker, &b.message))
            }
        })
    });

    let mut totals = Totals {
        pools: pools_out.len(),
        ..Totals::default()
    };
    for p in &pools_out {
        totals.instances += p.instances.len() as u32;
        totals.busy += p.busy;
        totals.idle += p.idle;
        totals.instance_hours += p.instance_hours;
    }
    totals.instance_hours = round2(totals.instance_hours);
    for f in &findings {
        match f.severity {
            Severity::Error => totals.findings.error += 1,
            Severity::Warning => totals.findings.warning += 1,
            Severity::Info => totals.findings.info += 1,
        }
    }
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
        generated_at: now,
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

fn judge_pool(
    ctx: &mut Ctx<'_>,
    p: &PoolInput,
    g: &InventoryGroup,
    pool_tag: &str,
    members: &[&InventoryInstance],
) -> PoolReport {
    let input = ctx.input;
    let opts = &input.options;
    let now = input.now;
    let name = p.pool.name.as_str();
    let target = g.target.as_str();
    let mut report = PoolReport {
        name: name.to_string(),
        executor: p.executor.clone(),
        status: "ok",
        target: Some(g.target.clone()),
        workers_per_instance: Some(g.workers_per_instance),
        desired_instances: Some(g.desired),
        desired_workers: Some(g.desired * g.workers_per_instance),
        min_instances: g.min,
        max_instances: g.max,
        running: 0,
        pending: 0,
        terminating: 0,
        stopped: 0,
        busy: 0,
        idle: 0,
        instance_hours: 0.0,
        queued_builds: p.queued_builds,
        running_builds: p.running_builds,
        instances: Vec::new(),
    };
    let mut hours = 0.0;
    let mut busy_running = 0u32;
    for i in members {
        let builds: Vec<i64> = p
            .busy
            .iter()
            .filter(|b| {
                b.hostname
                    .as_deref()
                    .is_some_and(|h| hostname_matches(h, &i.hostnames))
            })
            .map(|b| b.build_id)
            .collect();
        let last_checkin = input
            .workers
            .iter()
            .filter(|w| {
                w.hostname
                    .as_deref()
                    .is_some_and(|h| hostname_matches(h, &i.hostnames))
            })
            .filter_map(|w| w.last_checkin)
            .filter(|t| i.launched.is_none_or(|l| *t >= l))
            .max();
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

        // untagged / orphan in another pool's group
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

        // stuck draining
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

        // never checked in
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
                        "but the queue is empty, so it may just have had nothing to claim"
                            .to_string(),
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

        // version skew (an untagged member is reported as such already)
        let tagged = is_worker(i) && i.tags.contains_key(TAG_POOL);
        if let (Some(want), true) = (&opts.expected_version, i.described && tagged) {
            if i.state != InstanceState::Terminating {
                match &version {
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

/// Protected members stay whatever the plan says: a warning when more members run than the
/// group's desired size and protected ones are among them (AWS lowered the size but may not
/// end them), else an info naming them, so a pool that does not shrink is explained.
fn scale_in_protected(
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
fn launch_failing(
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

fn drift(
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

fn orphans_outside_groups(
    ctx: &mut Ctx<'_>,
    ok_groups: &HashMap<(&str, &str), &InventoryGroup>,
    failed_pools: &HashSet<&str>,
    tag_owner: &HashMap<(&str, &str), &str>,
) {
    let input = ctx.input;
    for (exec, src) in &input.sources {
        let Ok(snap) = src else { continue };
        let groups: Vec<&InventoryGroup> = ok_groups
            .iter()
            .filter(|((e, _), _)| *e == exec.as_str())
            .map(|(_, g)| *g)
            .collect();
        let members: HashSet<&str> = groups
            .iter()
            .flat_map(|g| g.members.iter().map(String::as_str))
            .collect();
        for i in &snap.instances {
            if members.contains(i.id.as_str()) || !i.described || !is_worker(i) {
                continue;
            }
            let label = i.tags.get(TAG_POOL).map(String::as_str);
            let owner = label.and_then(|l| tag_owner.get(&(exec.as_str(), l)).copied());
            let creator = i
                .group
                .as_deref()
                .and_then(|t| groups.iter().find(|g| g.target == t));
            if owner.is_some_and(|o| failed_pools.contains(o)) {
                continue; // its pool's group could not be read: cannot tell
            }
            let pool = owner.or(creator.map(|g| g.pool.as_str()));
            if pool.is_none() && !input.all_pools {
                continue; // labelled for a pool not being audited
            }
            let labelled = match label {
                Some(l) => format!("labelled {TAG_POOL}={l}"),
                None => format!("labelled {TAG_WORKER}=true without {TAG_POOL}"),
            };
            let whose = match (label, owner) {
                (Some(_), Some(o)) => format!(" (pool {o})"),
                (Some(_), None) => ", which names no audited pool,".to_string(),
                _ => String::new(),
            };
            let place = match (&i.group, creator) {
                (Some(_), Some(c)) if owner == Some(c.pool.as_str()) => format!(
                    "made by its group {} but no longer a member (abandoned or detached)",
                    c.target
                ),
                (Some(_), Some(c)) => format!(
                    "made by {} (pool {}) but no longer its member (abandoned or detached)",
                    c.target, c.pool
                ),
                (Some(other), None) => format!("in group {other}, which no audited pool uses"),
                (None, _) => "in no group".to_string(),
            };
            let age = ctx.age(i.launched);
            let up = age
                .map(|a| format!("; up {}", human(a)))
                .unwrap_or_default();
            ctx.add(
                Severity::Error,
                Kind::Orphan,
                pool,
                i.group.as_deref(),
                Some(i),
                format!(
                    "{labelled}{whose} {place}: no autoscaler manages it ({}{up})",
                    i.raw_state
                ),
                age,
            );
        }
    }
}

fn stale_workers(ctx: &mut Ctx<'_>, failed_pools: &HashSet<&str>) {
    let input = ctx.input;
    let limit = input.options.stale_worker;
    let pool_by_id: HashMap<i64, &PoolInput> = input.pools.iter().map(|p| (p.pool.id, p)).collect();
    let instances: Vec<&InventoryInstance> = input
        .sources
        .values()
        .filter_map(|s| s.as_ref().ok())
        .flat_map(|s| s.instances.iter())
        .collect();
    let mut found = Vec::new();
    for w in &input.workers {
        let Some(host) = w.hostname.as_deref().filter(|h| !h.trim().is_empty()) else {
            continue;
        };
        let pools: Vec<&PoolInput> = input
            .worker_pools
            .get(&w.id)
            .into_iter()
            .flatten()
            .filter_map(|id| pool_by_id.get(id).copied())
            .collect();
        let Some(first) = pools.first() else { continue };
        if pools
            .iter()
            .any(|p| failed_pools.contains(p.pool.name.as_str()))
        {
            continue;
        }
        let age = w.last_checkin.map(|t| input.now - t);
        if age.is_some_and(|a| a <= limit) {
            continue;
        }
        if instances
            .iter()
            .any(|i| hostname_matches(host, &i.hostnames))
        {
            continue;
        }
        let when = match age {
            Some(a) => format!("last checked in {} ago", human(a)),
            None => "never checked in".to_string(),
        };
        found.push(Finding {
            severity: Severity::Info,
            kind: Kind::StaleWorker,
            pool: Some(first.pool.name.clone()),
            group: None,
            instance: None,
            instance_id: None,
            worker: Some(host.to_string()),
            message: format!(
                "workers row {} ({host}) {when} and no instance carries that hostname: the machine is gone, Vespene still lists it",
                w.id
            ),
            age_seconds: age.map(|a| a.num_seconds()),
        });
    }
    ctx.findings.extend(found);
}
