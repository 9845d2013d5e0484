//! The analysis on hand-built fleets: one test per finding kind, a clean fleet, exit statuses.

use super::analysis::*;
use super::*;
use crate::db::WorkerRow;
use autoscaler_executor::{
    BusyWorker, ErrorKind, ExecutorError, InstanceState, InventoryGroup, InventoryInstance,
    InventorySnapshot, LaunchFailure, PoolInventory, WorkerPool,
};
use chrono::TimeZone;

const EXEC: &str = "gce-mig";

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 10, 12, 0, 0).unwrap()
}

fn ago(minutes: i64) -> DateTime<Utc> {
    now() - Duration::minutes(minutes)
}

fn group_path(pool: &str) -> String {
    format!("projects/p/zones/z-a/instanceGroupManagers/{pool}")
}

/// A described, running instance labelled for `pool`, launched `minutes` ago.
fn inst(name: &str, pool: &str, minutes: i64) -> InventoryInstance {
    InventoryInstance {
        id: format!("projects/p/zones/z-a/instances/{name}"),
        name: name.into(),
        zone: Some("z-a".into()),
        group: Some(group_path(pool)),
        tags: [("vespene_worker", "true"), ("vespene_pool", pool)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        state: InstanceState::Running,
        raw_state: "RUNNING".into(),
        state_since: Some(ago(minutes)),
        launched: Some(ago(minutes)),
        hostnames: vec![name.into(), format!("{name}.z-a.c.p.internal")],
        described: true,
        protected_from_scale_in: false,
    }
}

fn with_state(
    mut i: InventoryInstance,
    state: InstanceState,
    raw: &str,
    since: Option<i64>,
) -> InventoryInstance {
    i.state = state;
    i.raw_state = raw.into();
    i.state_since = since.map(ago);
    i
}

fn pool(id: i64, name: &str) -> WorkerPool {
    let mut p = WorkerPool::with_defaults(id, name);
    p.executor = Some(EXEC.into());
    p.autoscaling_enabled = true;
    p
}

fn options() -> Options {
    Options {
        drift_grace: Duration::minutes(15),
        drain_limit: Duration::hours(1),
        boot_allowance: Duration::minutes(15),
        stale_worker: Duration::days(1),
        expected_version: None,
        older_than: None,
        fail_on: Some(Severity::Error),
    }
}

/// A fleet under construction: pools with their groups, loose instances, workers rows.
struct Fleet {
    pools: Vec<PoolInput>,
    groups: Vec<(String, Result<InventoryGroup, ExecutorError>)>,
    instances: Vec<InventoryInstance>,
    workers: Vec<WorkerRow>,
    worker_pools: HashMap<i32, Vec<i64>>,
    options: Options,
    all_pools: bool,
}

impl Fleet {
    fn new() -> Fleet {
        Fleet {
            pools: Vec::new(),
            groups: Vec::new(),
            instances: Vec::new(),
            workers: Vec::new(),
            worker_pools: HashMap::new(),
            options: options(),
            all_pools: false,
        }
    }

    /// Adds pool `name` (id `id`) whose group wants `desired` and holds `members`.
    fn pool(mut self, id: i64, name: &str, desired: u32, members: Vec<InventoryInstance>) -> Fleet {
        self.pools.push(PoolInput {
            pool: pool(id, name),
            executor: EXEC.into(),
            queued_builds: 0,
            running_builds: 0,
            busy: Vec::new(),
        });
        self.groups.push((
            name.into(),
            Ok(InventoryGroup {
                pool: name.into(),
                target: group_path(name),
                desired,
                min: None,
                max: None,
                members: members.iter().map(|i| i.id.clone()).collect(),
                workers_per_instance: 1,
                desired_since: None,
                launch_failures: Vec::new(),
            }),
        ));
        self.instances.extend(members);
        self
    }

    fn loose(mut self, i: InventoryInstance) -> Fleet {
        self.instances.push(i);
        self
    }

    /// A workers row that ran builds of `pool_id` and last checked in `minutes` ago.
    fn worker(mut self, id: i32, host: &str, minutes: Option<i64>, pool_id: i64) -> Fleet {
        self.workers.push(WorkerRow {
            id,
            worker_uid: format!("uid-{id}"),
            hostname: Some(host.into()),
            last_checkin: minutes.map(ago),
        });
        self.worker_pools.entry(id).or_default().push(pool_id);
        self
    }

    fn busy(mut self, pool: &str, host: &str, build: i64) -> Fleet {
        let p = self.pools.iter_mut().find(|p| p.pool.name == pool).unwrap();
        p.busy.push(BusyWorker {
            hostname: Some(host.into()),
            build_id: build,
            started: Some(ago(5)),
        });
        p.running_builds += 1;
        self
    }

    fn queued(mut self, pool: &str, n: u64) -> Fleet {
        self.pools
            .iter_mut()
            .find(|p| p.pool.name == pool)
            .unwrap()
            .queued_builds = n;
        self
    }

    fn input(self) -> Input {
        let snap = InventorySnapshot {
            pools: self
                .groups
                .into_iter()
                .map(|(pool, group)| PoolInventory {
                    pool_tag: pool.clone(),
                    pool,
                    group,
                })
                .collect(),
            instances: self.instances,
            scope: vec!["projects/p/zones/z-a".into()],
            api_calls: 3,
        };
        Input {
            now: now(),
            options: self.options,
            pools: self.pools,
            sources: [(EXEC.to_string(), Ok(snap))].into_iter().collect(),
            workers: self.workers,
            worker_pools: self.worker_pools,
            all_pools: self.all_pools,
            failures: Vec::new(),
        }
    }

    fn report(self) -> Report {
        analyze(&self.input())
    }
}

fn kinds(r: &Report) -> Vec<(Severity, Kind, Option<&str>)> {
    r.findings
        .iter()
        .map(|f| {
            (
                f.severity,
                f.kind,
                f.instance.as_deref().or(f.worker.as_deref()),
            )
        })
        .collect()
}

/// Two running instances, both checked in since launch, one busy: nothing to say.
fn clean() -> Fleet {
    Fleet::new()
        .pool(
            1,
            "linux",
            2,
            vec![inst("w-1", "linux", 120), inst("w-2", "linux", 60)],
        )
        .worker(1, "w-1", Some(3), 1)
        .worker(2, "w-2.z-a.c.p.internal", Some(30), 1)
        .busy("linux", "w-1", 77)
}

#[test]
fn a_clean_fleet_has_no_findings_and_a_summary() {
    let r = clean().report();
    assert!(r.findings.is_empty(), "{:#?}", r.findings);
    assert!(r.failures.is_empty());
    assert_eq!(r.exit_status, 0);
    let p = &r.pools[0];
    assert_eq!(p.status, "ok");
    assert_eq!((p.desired_instances, p.running, p.pending), (Some(2), 2, 0));
    assert_eq!((p.busy, p.idle), (1, 1));
    assert_eq!(p.instance_hours, 3.0);
    assert_eq!(p.instances[0].name, "w-1", "oldest first");
    assert_eq!(p.instances[0].builds, vec![77]);
    assert_eq!(
        p.instances[1].last_checkin,
        Some(ago(30)),
        "FQDN row matches"
    );
    assert_eq!(r.totals.instances, 2);
    assert_eq!(r.backends[0].api_calls, 3);
    assert_eq!(r.schema, SCHEMA);
    assert!(r.read_only);
}

#[test]
fn orphans_outside_any_group_and_inside_another_pools_group() {
    let mut abandoned = inst("w-abandoned", "linux", 100);
    abandoned.group = Some(group_path("linux"));
    let mut by_hand = inst("w-hand", "linux", 50);
    by_hand.group = None;
    let r = Fleet::new()
        .pool(1, "linux", 0, vec![])
        .pool(2, "gpu", 1, vec![inst("w-mixed", "linux", 40)])
        .worker(1, "w-mixed", Some(1), 2)
        .loose(abandoned)
        .loose(by_hand)
        .report();
    let got = kinds(&r);
    assert!(
        got.contains(&(Severity::Error, Kind::Orphan, Some("w-hand"))),
        "{got:?}"
    );
    assert!(
        got.contains(&(Severity::Error, Kind::Orphan, Some("w-abandoned"))),
        "{got:?}"
    );
    assert!(
        got.contains(&(Severity::Error, Kind::Orphan, Some("w-mixed"))),
        "{got:?}"
    );
    let f = |n: &str| {
        r.findings
            .iter()
            .find(|f| f.instance.as_deref() == Some(n))
            .unwrap()
    };
    assert_eq!(f("w-hand").pool.as_deref(), Some("linux"));
    assert!(
        f("w-hand").message.contains("in no group"),
        "{}",
        f("w-hand").message
    );
    assert!(f("w-abandoned").message.contains(
        "made by its group projects/p/zones/z-a/instanceGroupManagers/linux but no longer a member"
    ));
    assert_eq!(
        f("w-mixed").pool.as_deref(),
        Some("gpu"),
        "reported under the group's pool"
    );
    assert!(f("w-mixed")
        .message
        .contains("vespene_pool=linux but a member of pool gpu's group"));
    assert_eq!(r.exit_status, 1);
}

#[test]
fn orphans_of_pools_not_audited_are_left_alone_unless_every_pool_is() {
    let mut stray = inst("w-other", "windows", 30);
    stray.group = None;
    let fleet = || {
        Fleet::new()
            .pool(1, "linux", 0, vec![])
            .loose(stray.clone())
    };
    assert!(fleet().report().findings.is_empty());
    let mut all = fleet();
    all.all_pools = true;
    let r = all.report();
    assert_eq!(
        kinds(&r),
        vec![(Severity::Error, Kind::Orphan, Some("w-other"))]
    );
    assert_eq!(r.findings[0].pool, None);
    assert!(r.findings[0].message.contains("names no audited pool"));
}

#[test]
fn no_orphan_is_claimed_for_a_pool_whose_group_could_not_be_read() {
    let mut f = Fleet::new().pool(1, "linux", 1, vec![]);
    f.groups[0].1 = Err(ExecutorError::new(
        "linux",
        ErrorKind::NotFound,
        "reading g: HTTP 404",
    ));
    let mut lone = inst("w-1", "linux", 30);
    lone.group = None;
    let r = f.loose(lone).report();
    assert!(r.findings.is_empty(), "{:?}", r.findings);
    assert_eq!(r.pools[0].status, "failed");
    assert_eq!(r.failures.len(), 1);
    assert_eq!(r.failures[0].part, "group of pool linux");
    assert_eq!(r.failures[0].kind, "not_found");
    assert_eq!(r.exit_status, 2);
}

#[test]
fn untagged_members_but_not_undescribed_ones() {
    let mut bare = inst("w-bare", "linux", 30);
    bare.tags.clear();
    let mut half = inst("w-half", "linux", 30);
    half.tags.remove("vespene_pool");
    let mut creating = with_state(
        inst("w-new", "linux", 1),
        InstanceState::Pending,
        "CREATING",
        None,
    );
    creating.tags.clear();
    creating.described = false;
    creating.launched = None;
    let r = Fleet::new()
        .pool(1, "linux", 3, vec![bare, half, creating])
        .worker(1, "w-bare", Some(1), 1)
        .worker(2, "w-half", Some(1), 1)
        .report();
    let untagged: Vec<_> = kinds(&r)
        .into_iter()
        .filter(|k| k.1 == Kind::Untagged)
        .collect();
    assert_eq!(
        untagged,
        vec![
            (Severity::Warning, Kind::Untagged, Some("w-bare")),
            (Severity::Warning, Kind::Untagged, Some("w-half"))
        ]
    );
    assert!(r.findings[0]
        .message
        .contains("vespene_worker=true and vespene_pool=linux"));
}

#[test]
fn drift_is_dated_by_its_oldest_cause() {
    // Shortfall: a member pending for 30 minutes (grace 15).
    let stuck = with_state(
        inst("w-2", "linux", 30),
        InstanceState::Pending,
        "STAGING",
        Some(30),
    );
    let r = Fleet::new()
        .pool(1, "linux", 2, vec![inst("w-1", "linux", 60), stuck])
        .worker(1, "w-1", Some(1), 1)
        .report();
    assert_eq!(kinds(&r), vec![(Severity::Warning, Kind::Drift, None)]);
    assert!(
        r.findings[0].message.starts_with(
            "1 of 2 desired instances running (1 pending, 0 not yet created) for at least 30m"
        ),
        "{}",
        r.findings[0].message
    );
    assert_eq!(r.findings[0].age_seconds, Some(1800));
    assert_eq!(
        r.findings[0].group.as_deref(),
        Some(group_path("linux").as_str())
    );

    // Booting for 5 minutes: normal.
    let booting = with_state(
        inst("w-2", "linux", 5),
        InstanceState::Pending,
        "STAGING",
        Some(5),
    );
    let r = Fleet::new()
        .pool(1, "linux", 2, vec![inst("w-1", "linux", 60), booting])
        .worker(1, "w-1", Some(1), 1)
        .report();
    assert!(r.findings.is_empty(), "{:?}", r.findings);

    // Instances never created, desired set an hour ago by the autoscaler.
    let mut f = Fleet::new()
        .pool(1, "linux", 3, vec![inst("w-1", "linux", 60)])
        .worker(1, "w-1", Some(1), 1);
    f.pools[0].pool.last_autoscaled = Some(ago(60));
    let r = f.report();
    assert_eq!(kinds(&r), vec![(Severity::Warning, Kind::Drift, None)]);
    assert!(r.findings[0]
        .message
        .contains("2 not yet created) for at least 1h"));

    // Same, but nothing dates it: info.
    let r = Fleet::new()
        .pool(1, "linux", 3, vec![inst("w-1", "linux", 60)])
        .worker(1, "w-1", Some(1), 1)
        .report();
    assert_eq!(kinds(&r), vec![(Severity::Info, Kind::Drift, None)]);
    assert!(r.findings[0]
        .message
        .contains("no timestamp tells for how long"));

    // Surplus: desired 1 since 40 minutes, both up for hours.
    let mut f = Fleet::new()
        .pool(
            1,
            "linux",
            1,
            vec![inst("w-1", "linux", 300), inst("w-2", "linux", 200)],
        )
        .worker(1, "w-1", Some(1), 1)
        .worker(2, "w-2", Some(1), 1);
    f.pools[0].pool.last_autoscaled = Some(ago(40));
    let r = f.report();
    assert_eq!(kinds(&r), vec![(Severity::Warning, Kind::Drift, None)]);
    assert!(r.findings[0]
        .message
        .starts_with("2 instances running, 1 above the 1 desired for at least 40m"));

    // The same surplus held up by a busy instance: info.
    let mut f = Fleet::new()
        .pool(
            1,
            "linux",
            1,
            vec![inst("w-1", "linux", 300), inst("w-2", "linux", 200)],
        )
        .worker(1, "w-1", Some(1), 1)
        .worker(2, "w-2", Some(1), 1)
        .busy("linux", "w-2", 9);
    f.pools[0].pool.last_autoscaled = Some(ago(40));
    let r = f.report();
    assert_eq!(kinds(&r), vec![(Severity::Info, Kind::Drift, None)]);
}

#[test]
fn stuck_terminating_past_the_drain_limit() {
    let long = with_state(
        inst("w-long", "linux", 300),
        InstanceState::Terminating,
        "RUNNING/DELETING",
        Some(125),
    );
    let short = with_state(
        inst("w-short", "linux", 300),
        InstanceState::Terminating,
        "RUNNING/DELETING",
        Some(10),
    );
    let undated = with_state(
        inst("w-undated", "linux", 300),
        InstanceState::Terminating,
        "Terminating:Wait",
        None,
    );
    let r = Fleet::new()
        .pool(1, "linux", 0, vec![long, short, undated])
        .busy("linux", "w-long", 42)
        .report();
    assert_eq!(
        kinds(&r),
        vec![
            (Severity::Warning, Kind::StuckTerminating, Some("w-long")),
            (Severity::Info, Kind::StuckTerminating, Some("w-undated")),
        ]
    );
    assert_eq!(
        r.findings[0].message,
        "RUNNING/DELETING for 2h 5m, longer than the drain limit 1h; still holds RUNNING build 42"
    );
    assert_eq!(r.pools[0].terminating, 3);
    assert_eq!(r.exit_status, 0, "warnings do not fail --fail-on error");
}

#[test]
fn never_checked_in_depends_on_the_queue_and_on_hostname_reuse() {
    let fleet = || {
        Fleet::new()
            .pool(
                1,
                "linux",
                4,
                vec![
                    inst("w-silent", "linux", 60),
                    inst("w-reused", "linux", 60),
                    inst("w-ok", "linux", 60),
                    inst("w-young", "linux", 5),
                ],
            )
            // An older machine with the same hostname checked in before w-reused launched.
            .worker(1, "w-reused", Some(90), 1)
            .worker(2, "W-OK", Some(10), 1)
    };
    let r = fleet().queued("linux", 3).report();
    assert_eq!(
        kinds(&r),
        vec![
            (Severity::Error, Kind::NeverCheckedIn, Some("w-reused")),
            (Severity::Error, Kind::NeverCheckedIn, Some("w-silent")),
        ]
    );
    assert!(
        r.findings[1]
            .message
            .contains("3 build(s) wait in the queue"),
        "{}",
        r.findings[1].message
    );
    assert!(r.findings[1]
        .message
        .starts_with("up 1h (boot allowance 15m)"));
    let r = fleet().report();
    assert!(r
        .findings
        .iter()
        .all(|f| f.severity == Severity::Info && f.kind == Kind::NeverCheckedIn));
    assert_eq!(r.findings.len(), 2);
}

#[test]
fn stale_worker_rows_of_gone_machines() {
    let r = Fleet::new()
        .pool(1, "linux", 1, vec![inst("w-1", "linux", 600)])
        .worker(1, "w-1", Some(3 * 24 * 60), 1) // old, but the machine is there (idle)
        .worker(2, "w-gone", Some(3 * 24 * 60), 1)
        .worker(3, "w-recent", Some(60), 1) // gone, but too recent to call stale
        .worker(4, "w-other-pool", Some(3 * 24 * 60), 9) // a pool not audited
        .report();
    let stale: Vec<_> = r
        .findings
        .iter()
        .filter(|f| f.kind == Kind::StaleWorker)
        .collect();
    assert_eq!(stale.len(), 1, "{:?}", r.findings);
    assert_eq!(stale[0].worker.as_deref(), Some("w-gone"));
    assert_eq!(stale[0].pool.as_deref(), Some("linux"));
    assert_eq!(stale[0].severity, Severity::Info);
    assert!(stale[0].message.contains("last checked in 3d ago"));
}

#[test]
fn version_skew_against_the_expected_version() {
    let tagged = |name: &str, v: Option<&str>| {
        let mut i = inst(name, "linux", 30);
        if let Some(v) = v {
            i.tags.insert("vespene_version".into(), v.into());
        }
        i
    };
    let mut f = Fleet::new()
        .pool(
            1,
            "linux",
            3,
            vec![
                tagged("w-same", Some("1-2-3")),
                tagged("w-old", Some("1.2.2")),
                tagged("w-none", None),
            ],
        )
        .worker(1, "w-same", Some(1), 1)
        .worker(2, "w-old", Some(1), 1)
        .worker(3, "w-none", Some(1), 1);
    f.options.expected_version = Some("1.2.3".into());
    let r = f.report();
    assert_eq!(
        kinds(&r),
        vec![
            (Severity::Warning, Kind::VersionSkew, Some("w-none")),
            (Severity::Warning, Kind::VersionSkew, Some("w-old")),
        ]
    );
    assert_eq!(
        r.pools[0]
            .instances
            .iter()
            .filter(|i| i.version.is_some())
            .count(),
        2
    );
}

#[test]
fn old_instances_oldest_first() {
    let mut f = Fleet::new()
        .pool(
            1,
            "linux",
            3,
            vec![
                inst("w-10d", "linux", 10 * 24 * 60),
                inst("w-30d", "linux", 30 * 24 * 60),
                inst("w-1d", "linux", 24 * 60),
            ],
        )
        .worker(1, "w-10d", Some(1), 1)
        .worker(2, "w-30d", Some(1), 1)
        .worker(3, "w-1d", Some(1), 1);
    f.options.older_than = Some(Duration::days(7));
    let r = f.report();
    assert_eq!(
        kinds(&r),
        vec![
            (Severity::Warning, Kind::OldInstance, Some("w-30d")),
            (Severity::Warning, Kind::OldInstance, Some("w-10d")),
        ]
    );
    assert!(r.findings[0]
        .message
        .starts_with("launched 30d ago (2026-02-08 12:00 UTC), older than --older-than 7d"));
}

#[test]
fn fail_on_sets_the_exit_status() {
    let warn_only = || {
        let mut bare = inst("w-bare", "linux", 30);
        bare.tags.clear();
        Fleet::new()
            .pool(1, "linux", 1, vec![bare])
            .worker(1, "w-bare", Some(1), 1)
    };
    assert_eq!(warn_only().report().exit_status, 0);
    let mut f = warn_only();
    f.options.fail_on = Some(Severity::Warning);
    assert_eq!(f.report().exit_status, 1);
    let mut f = warn_only();
    f.options.fail_on = None;
    assert_eq!(f.report().exit_status, 0);
    let r = warn_only().report();
    assert_eq!(r.settings.fail_on, "error");
    assert_eq!(r.totals.findings.warning, 1);
}

#[test]
fn a_failed_backend_fails_its_pools_and_the_audit() {
    let mut input = clean().input();
    input.sources.insert(
        EXEC.into(),
        Err(ExecutorError::new(
            "linux",
            ErrorKind::Unavailable,
            "listing instances in zone z-a: HTTP 503",
        )),
    );
    let r = analyze(&input);
    assert_eq!(r.exit_status, 2);
    assert_eq!(r.failures[0].part, "inventory gce-mig");
    assert_eq!(
        r.failures[0].message,
        "pool linux: listing instances in zone z-a: HTTP 503"
    );
    assert_eq!(r.backends[0].status, "failed");
    assert_eq!(r.pools[0].status, "failed");
    assert!(
        r.findings.is_empty(),
        "stale rows are not judged without the fleet"
    );
}

#[test]
fn hostnames_match_exactly_or_by_first_label() {
    let h = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert!(hostname_matches("W-1", &h(&["w-1"])));
    assert!(hostname_matches("w-1.z.c.p.internal", &h(&["w-1"])));
    assert!(hostname_matches(
        "ip-10-0-0-5",
        &h(&["ip-10-0-0-5.ec2.internal", "10.0.0.5"])
    ));
    assert!(hostname_matches(
        "10.0.0.5",
        &h(&["ip-10-0-0-5.ec2.internal", "10.0.0.5"])
    ));
    assert!(!hostname_matches("10", &h(&["10.0.0.5"])));
    assert!(!hostname_matches("w-12", &h(&["w-1"])));
    assert!(!hostname_matches("x.w-1", &h(&["w-1"])));
    assert!(!hostname_matches("", &h(&["w-1"])));
}

#[test]
fn durations_parse_with_units() {
    assert_eq!(parse_duration("7d"), Ok(Duration::days(7)));
    assert_eq!(parse_duration("1d12h"), Ok(Duration::hours(36)));
    assert_eq!(parse_duration("90m"), Ok(Duration::minutes(90)));
    assert_eq!(parse_duration("2w"), Ok(Duration::days(14)));
    assert_eq!(parse_duration("3600"), Ok(Duration::hours(1)));
    assert!(parse_duration("7x").unwrap_err().contains("unknown unit"));
    assert!(parse_duration("d").unwrap_err().contains("number"));
    assert!(parse_duration("12").is_ok());
    assert!(parse_duration("1d12").unwrap_err().contains("no unit"));
    assert!(parse_duration("").is_err());
    assert!(parse_duration("-5").is_err());
}

#[test]
fn the_audit_section_of_the_config_file() {
    let cfg = crate::config::Config::parse(
        "[audit]\nexpected_version = \"1.2.3\"\ndrain_limit_seconds = 7200\n",
        "c.toml",
    )
    .unwrap();
    assert_eq!(cfg.audit.expected_version.as_deref(), Some("1.2.3"));
    assert_eq!(cfg.audit.drain_limit_seconds, 7200);
    assert_eq!(cfg.audit.drift_grace_seconds, 900);
    let err = crate::config::Config::parse("[audit]\ndrain_limit_secs = 5\n", "c.toml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `drain_limit_secs`"), "{err}");
    assert_eq!(
        crate::config::Config::default().audit,
        AuditConfig::default()
    );
}

#[test]
fn the_table_groups_by_pool_and_colours_only_when_asked() {
    let mut bare = inst("w-bare", "linux", 30);
    bare.tags.clear();
    let mut lone = inst("w-lone", "mac", 30);
    lone.group = None;
    let mut f = Fleet::new()
        .pool(1, "linux", 1, vec![bare])
        .worker(1, "w-bare", Some(1), 1)
        .loose(lone);
    f.all_pools = true;
    let r = f.report();
    let plain = output::table(&r, false);
    assert!(!plain.contains('\x1b'));
    assert!(plain.contains("read-only"));
    assert!(plain.contains("POOL linux (gce-mig) projects/p/zones/z-a/instanceGroupManagers/linux"));
    assert!(plain.contains("WARNING"));
    assert!(plain.contains("NO AUDITED POOL"));
    let coloured = output::table(&r, true);
    assert!(coloured.contains("\x1b[33mWARNING\x1b[0m"));
    assert!(coloured.contains("\x1b[1;31mERROR\x1b[0m"));
    let json: serde_json::Value = serde_json::from_str(&output::json(&r)).unwrap();
    assert_eq!(json["schema"], SCHEMA);
    assert_eq!(json["findings"][0]["kind"], "untagged");
    assert_eq!(json["findings"][1]["pool"], serde_json::Value::Null);
}

#[test]
fn launch_failures_are_one_error_per_reason_with_the_clouds_words() {
    let creating = with_state(
        inst("w-2", "linux", 20),
        InstanceState::Pending,
        "CREATING",
        Some(20),
    );
    let mut fleet = Fleet::new().pool(1, "linux", 3, vec![inst("w-1", "linux", 120), creating]);
    let failure = |reason: &str, instance: Option<&str>, minutes: i64| LaunchFailure {
        reason: reason.into(),
        message: format!("{reason} in z-a"),
        instance: instance.map(str::to_string),
        since: Some(ago(minutes)),
    };
    if let Ok(g) = &mut fleet.groups[0].1 {
        g.launch_failures = vec![
            failure("QUOTA_EXCEEDED", Some("w-2"), 20),
            failure("QUOTA_EXCEEDED", None, 12),
            failure("ZONE_RESOURCE_POOL_EXHAUSTED", None, 5),
        ];
    }
    let r = fleet.worker(1, "w-1", Some(3), 1).report();
    let launch: Vec<&Finding> = r
        .findings
        .iter()
        .filter(|f| f.kind == Kind::LaunchFailing)
        .collect();
    assert_eq!(launch.len(), 2, "{launch:#?}");
    let quota = launch
        .iter()
        .find(|f| f.message.contains("QUOTA_EXCEEDED"))
        .expect("the quota finding");
    assert_eq!(quota.severity, Severity::Error);
    assert_eq!(quota.instance.as_deref(), Some("w-2"));
    assert_eq!(quota.age_seconds, Some(20 * 60), "dated by the oldest");
    assert!(
        quota
            .message
            .contains("QUOTA_EXCEEDED (2 launches): QUOTA_EXCEEDED in z-a"),
        "{}",
        quota.message
    );
    let stockout = launch
        .iter()
        .find(|f| f.message.contains("ZONE_RESOURCE_POOL_EXHAUSTED"))
        .expect("the stockout finding");
    assert_eq!(stockout.instance, None);
    assert_eq!(stockout.age_seconds, Some(5 * 60));
    assert_eq!(r.exit_status, 1, "an error fails the audit");
    assert_eq!(Kind::LaunchFailing.as_str(), "launch_failing");
}

#[test]
fn protected_members_are_shown_and_a_warning_when_they_keep_the_group_above_desired() {
    let protect = |mut i: InventoryInstance| {
        i.protected_from_scale_in = true;
        i
    };
    // Desired 1, three running, two of them protected: AWS lowered the size but may not end
    // them.
    let above = Fleet::new()
        .pool(
            1,
            "linux",
            1,
            vec![
                protect(inst("w-1", "linux", 120)),
                protect(inst("w-2", "linux", 100)),
                inst("w-3", "linux", 90),
            ],
        )
        .report();
    let found: Vec<&Finding> = above
        .findings
        .iter()
        .filter(|f| f.kind == Kind::ScaleInProtected)
        .collect();
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].severity, Severity::Warning);
    assert_eq!(
        found[0].message,
        "3 instances running, 2 above the 1 desired, and 2 protected from scale-in (w-1, w-2): \
         neither AWS nor the autoscaler removes a protected instance, so the group stays above \
         its size until their protection is removed"
    );
    let shown: Vec<(&str, bool)> = above.pools[0]
        .instances
        .iter()
        .map(|i| (i.name.as_str(), i.protected_from_scale_in))
        .collect();
    assert_eq!(shown, vec![("w-1", true), ("w-2", true), ("w-3", false)]);
    let json = serde_json::to_value(&above).unwrap();
    assert_eq!(
        json["pools"][0]["instances"][0]["protected_from_scale_in"],
        true
    );
    assert!(
        json["pools"][0]["instances"][2]
            .get("protected_from_scale_in")
            .is_none(),
        "only protected instances carry the field"
    );
    let table = crate::audit::output::table(&above, false);
    assert!(table.contains("running protected"), "{table}");

    // At its size: an info naming them, so a pool that does not shrink is explained.
    let at_size = Fleet::new()
        .pool(
            1,
            "linux",
            2,
            vec![protect(inst("w-1", "linux", 120)), inst("w-2", "linux", 60)],
        )
        .report();
    let found: Vec<&Finding> = at_size
        .findings
        .iter()
        .filter(|f| f.kind == Kind::ScaleInProtected)
        .collect();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].severity, Severity::Info);
    assert!(found[0]
        .message
        .starts_with("1 member(s) protected from scale-in (w-1)"));
    assert_eq!(Kind::ScaleInProtected.as_str(), "scale_in_protected");

    // None protected: nothing.
    let plain = Fleet::new()
        .pool(1, "linux", 1, vec![inst("w-1", "linux", 120)])
        .report();
    assert!(!plain
        .findings
        .iter()
        .any(|f| f.kind == Kind::ScaleInProtected));
}
