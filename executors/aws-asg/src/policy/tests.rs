use super::*;
use crate::client::{GroupInstance, GroupTag};
use autoscaler_executor::scale_in::Action;
use autoscaler_executor::sizing::Clamp;
use std::collections::BTreeMap;

/// Whether a worker's reported hostname is this instance, under `mode`: the shared rule of
/// [`autoscaler_executor::scale_in::hostname_matches`] (case, a trailing dot and a short name
/// against a fully qualified one never matter) applied to [`instance_names`], which is what
/// the shared chooser does with the names [`candidate`] hands it.
fn hostname_matches(
    mode: HostnameMatch,
    hostname: &str,
    instance_id: &str,
    ec2: Option<&Ec2Instance>,
) -> bool {
    instance_names(mode, instance_id, ec2)
        .iter()
        .any(|n| scale_in::hostname_matches(hostname, n))
}

fn pool(name: &str, cmd: &str, maximum: i32) -> WorkerPool {
    let mut p = WorkerPool::with_defaults(1, name);
    p.executor = Some("aws-asg".into());
    p.executor_command = cmd.into();
    p.maximum = maximum;
    p
}

#[test]
fn instances_are_ceil_of_workers_within_every_bound() {
    // ceil(5 / 2) = 3 instances; maximum 10 allows 5.
    assert_eq!(target_instances(5, 10, 2, 0, 100).instances, 3);
    assert!(target_instances(5, 10, 2, 0, 100).clamps.is_empty());
    // Plan above the pool maximum: the pool maximum wins.
    let t = target_instances(25, 10, 1, 0, 100);
    assert_eq!(t.instances, 10);
    assert_eq!(
        t.clamps,
        vec![Clamp::PoolMaximum {
            planned: 25,
            maximum: 10
        }]
    );
    assert!(t.clamps[0].to_string().contains("pool maximum won"));
    // Maximum 5 with 2 per instance: 3 instances would run 6 workers; 2 is the most.
    let t = target_instances(5, 5, 2, 0, 100);
    assert_eq!(t.instances, 2);
    assert!(matches!(
        t.clamps[0],
        Clamp::WholeInstances { allowed: 2, .. }
    ));
    // Group MaxSize below the wish.
    let t = target_instances(8, 10, 1, 0, 4);
    assert_eq!(t.instances, 4);
    assert!(t.clamps[0].to_string().contains("group MaxSize won"));
    // Group MinSize above the wish.
    let t = target_instances(0, 10, 1, 2, 4);
    assert_eq!(t.instances, 2);
    assert!(t.clamps[0].to_string().contains("group MinSize won"));
    // Never more workers than the maximum, for every combination (MinSize aside).
    for size in 0..30 {
        for max in 0..15 {
            for wpi in 1..5 {
                let t = target_instances(size, max, wpi, 0, 1000);
                assert!(t.instances * wpi <= max as u32, "{size} {max} {wpi}");
                if size <= max as u32 && (max as u32).is_multiple_of(wpi) {
                    assert_eq!(t.instances, size.div_ceil(wpi));
                }
            }
        }
    }
}

#[test]
fn oldest_instance_goes_first_once() {
    assert_eq!(
        wanted_termination_policies(&["Default".to_string()]),
        Some(vec!["OldestInstance".to_string(), "Default".to_string()])
    );
    assert_eq!(
        wanted_termination_policies(&[]),
        Some(vec!["OldestInstance".to_string()])
    );
    assert_eq!(
        wanted_termination_policies(&[
            "ClosestToNextInstanceHour".to_string(),
            "OldestInstance".to_string()
        ]),
        Some(vec![
            "OldestInstance".to_string(),
            "ClosestToNextInstanceHour".to_string()
        ])
    );
    assert_eq!(
        wanted_termination_policies(&["OldestInstance".to_string(), "Default".to_string()]),
        None
    );
}

#[test]
fn tags_missing_when_absent_different_or_not_propagated() {
    let have = vec![
        GroupTag {
            key: "vespene_worker".into(),
            value: "true".into(),
            propagate_at_launch: false,
        },
        GroupTag {
            key: "vespene_pool".into(),
            value: "linux".into(),
            propagate_at_launch: true,
        },
    ];
    let m = missing_tags(&have, "linux");
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].key, "vespene_worker");
    assert!(m[0].propagate_at_launch);
    assert_eq!(missing_tags(&have, "arm").len(), 2);
    assert!(missing_tags(&wanted_tags("x"), "x").is_empty());
}

#[test]
fn hostname_rules() {
    let e = Ec2Instance {
        instance_id: "i-0abc".into(),
        private_dns_name: Some("ip-10-0-1-5.ec2.internal".into()),
        private_ip: Some("10.0.1.5".into()),
        launch_time: None,
        ..Default::default()
    };
    use HostnameMatch::*;
    assert!(hostname_matches(
        PrivateDnsName,
        "ip-10-0-1-5.ec2.internal",
        "i-0abc",
        Some(&e)
    ));
    assert!(hostname_matches(
        PrivateDnsName,
        "IP-10-0-1-5.EC2.internal.",
        "i-0abc",
        Some(&e)
    ));
    assert!(hostname_matches(
        PrivateDnsName,
        "ip-10-0-1-5",
        "i-0abc",
        Some(&e)
    ));
    assert!(!hostname_matches(
        PrivateDnsName,
        "ip-10-0-1-6",
        "i-0abc",
        Some(&e)
    ));
    assert!(!hostname_matches(
        PrivateDnsName,
        "10.0.1.5",
        "i-0abc",
        Some(&e)
    ));
    assert!(hostname_matches(PrivateIp, "10.0.1.5", "i-0abc", Some(&e)));
    assert!(!hostname_matches(PrivateIp, "10", "i-0abc", Some(&e)));
    assert!(hostname_matches(InstanceId, "i-0abc", "i-0abc", None));
    assert!(!hostname_matches(
        InstanceId,
        "ip-10-0-1-5",
        "i-0abc",
        Some(&e)
    ));
    for h in [
        "i-0abc",
        "10.0.1.5",
        "ip-10-0-1-5",
        "ip-10-0-1-5.ec2.internal",
    ] {
        assert!(hostname_matches(Any, h, "i-0abc", Some(&e)), "{h}");
    }
    assert!(!hostname_matches(Any, "", "i-0abc", Some(&e)));
    assert!(!hostname_matches(
        PrivateDnsName,
        "ip-10-0-1-5",
        "i-0abc",
        None
    ));
}

#[test]
fn validate_rejects_size_dependent_names_and_bad_names() {
    let cfg = Config::default();
    let plan = Plan {
        size: 3,
        queued_size: 1,
        standby: 0,
    };
    validate(
        &cfg,
        &pool("linux", "vespene-{{ worker_pool.name }}", 10),
        plan,
    )
    .unwrap();
    let e = validate(&cfg, &pool("linux", "g-{{ size }}", 10), plan).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Config);
    assert!(e.to_string().contains("must not depend on size"), "{e}");
    let e = validate(&cfg, &pool("linux", "my group", 10), plan).unwrap_err();
    assert!(
        e.to_string().contains("not an Auto Scaling group name"),
        "{e}"
    );
    let e = validate(&cfg, &pool("linux", "a:b", 10), plan).unwrap_err();
    assert!(e.to_string().contains("no colon"), "{e}");
    let e = validate(&cfg, &pool("linux", "{{ nope }}", 10), plan).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Template);
    assert!(
        e.to_string().starts_with("pool linux: executor_command"),
        "{e}"
    );
    let cfg4 = Config {
        workers_per_instance: 4,
        ..Config::default()
    };
    let e = validate(&cfg4, &pool("linux", "g", 3), plan).unwrap_err();
    assert!(
        e.to_string()
            .contains("maximum 3 is below workers_per_instance 4"),
        "{e}"
    );
}

#[test]
fn drain_decisions() {
    let cfg = Config {
        heartbeat_timeout_seconds: 300,
        max_drain_seconds: 3600,
        ..Config::default()
    };
    let t0 = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
    let busy = BusyWorker {
        hostname: Some("h".into()),
        build_id: 7,
        started: None,
    };
    let fresh = DrainState {
        since: t0,
        last_heartbeat: None,
    };
    assert_eq!(
        decide(&cfg, t0, &fresh, false, None),
        Decision::CompleteIdle
    );
    assert!(matches!(
        decide(&cfg, t0, &fresh, false, Some(&busy)),
        Decision::Heartbeat { build_id: 7, .. }
    ));
    let beat = DrainState {
        since: t0,
        last_heartbeat: Some(t0),
    };
    assert!(matches!(
        decide(
            &cfg,
            t0 + ChronoDuration::seconds(99),
            &beat,
            false,
            Some(&busy)
        ),
        Decision::Wait { .. }
    ));
    assert!(matches!(
        decide(
            &cfg,
            t0 + ChronoDuration::seconds(100),
            &beat,
            false,
            Some(&busy)
        ),
        Decision::Heartbeat { .. }
    ));
    assert!(matches!(
        decide(
            &cfg,
            t0 + ChronoDuration::seconds(3600),
            &beat,
            false,
            Some(&busy)
        ),
        Decision::CompleteDrainTimeout { build_id: 7, .. }
    ));
}

#[test]
fn agent_instances_are_never_completed_only_kept_alive_while_busy() {
    let cfg = Config {
        heartbeat_timeout_seconds: 300,
        max_drain_seconds: 3600,
        ..Config::default()
    };
    let t0 = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
    let busy = BusyWorker {
        hostname: Some("h".into()),
        build_id: 7,
        started: None,
    };
    let s = DrainState {
        since: t0,
        last_heartbeat: None,
    };
    assert_eq!(decide(&cfg, t0, &s, true, None), Decision::LeaveToAgent);
    assert!(matches!(
        decide(&cfg, t0, &s, true, Some(&busy)),
        Decision::Heartbeat { build_id: 7, .. }
    ));
    assert!(matches!(
        decide(
            &cfg,
            t0 + ChronoDuration::seconds(3600),
            &s,
            true,
            Some(&busy)
        ),
        Decision::AgentOverdue { build_id: 7, .. }
    ));
}

fn member(id: &str, state: &str) -> GroupInstance {
    GroupInstance {
        instance_id: id.into(),
        lifecycle_state: state.into(),
        health_status: "Healthy".into(),
        protected_from_scale_in: false,
    }
}

fn ec2(id: &str, k: u32, launched: i64, agent: bool) -> Ec2Instance {
    let mut tags = BTreeMap::new();
    if agent {
        tags.insert(TAG_DRAIN_AGENT.to_string(), DRAIN_AGENT_VERSION.to_string());
    }
    Ec2Instance {
        instance_id: id.into(),
        private_dns_name: Some(format!("ip-10-0-0-{k}.ec2.internal")),
        private_ip: Some(format!("10.0.0.{k}")),
        launch_time: DateTime::from_timestamp(launched, 0),
        state: "running".into(),
        zone: None,
        tags,
    }
}

#[test]
fn group_members_become_candidates_by_lifecycle_state_and_protection() {
    let e = ec2("i-1", 1, 1_700_000_000, true);
    let c = candidate(HostnameMatch::Any, &member("i-1", "InService"), Some(&e));
    assert_eq!(c.state, CandidateState::Ready);
    assert!(c.agent);
    assert_eq!(c.names, vec!["i-1", "ip-10-0-0-1.ec2.internal", "10.0.0.1"]);
    assert_eq!(c.created, e.launch_time);
    assert_eq!(
        candidate(HostnameMatch::Any, &member("i-1", "Pending:Wait"), None).state,
        CandidateState::Booting
    );
    for s in [
        "Terminating:Wait",
        "Terminating",
        "Standby",
        "Warmed:Running",
        "Detaching",
    ] {
        assert!(
            matches!(candidate(HostnameMatch::Any, &member("i-1", s), None).state, CandidateState::Excluded(ref r) if r.contains(s)),
            "{s}"
        );
    }
    let mut p = member("i-1", "InService");
    p.protected_from_scale_in = true;
    assert_eq!(
        candidate(HostnameMatch::Any, &p, None).state,
        CandidateState::Excluded("protected from scale-in".into())
    );
    let mut wrong = e.clone();
    wrong.tags.insert(TAG_DRAIN_AGENT.into(), "v0".into());
    assert!(!has_agent(Some(&wrong)) && !has_agent(None));
    assert_eq!(
        instance_names(HostnameMatch::PrivateIp, "i-1", Some(&e)),
        vec!["10.0.0.1"]
    );
}

#[test]
fn reduction_never_exceeds_instances_or_goes_below_target() {
    assert_eq!(reduction(5, 5, 2), 3);
    assert_eq!(
        reduction(5, 3, 2),
        1,
        "two of the five are not launched yet"
    );
    assert_eq!(reduction(2, 5, 2), 0);
    assert_eq!(reduction(1, 1, 3), 0);
}

#[test]
fn scale_in_choice_picks_idle_oldest_and_asks_agents_to_drain() {
    let cfg = Config::default();
    let now = DateTime::from_timestamp(1_700_010_000, 0).unwrap();
    let members = vec![
        member("i-1", "InService"),
        member("i-2", "InService"),
        member("i-3", "InService"),
        member("i-4", "Pending"),
    ];
    let ec2s: HashMap<String, Ec2Instance> = [
        ec2("i-1", 1, 1_700_000_000, false),
        ec2("i-2", 2, 1_700_000_100, true),
        ec2("i-3", 3, 1_700_000_200, false),
        ec2("i-4", 4, 1_700_009_000, false),
    ]
    .into_iter()
    .map(|e| (e.instance_id.clone(), e))
    .collect();
    // i-1 is busy; the booting one goes first, then i-2 (an agent instance: asked to drain).
    let busy = vec![BusyWorker {
        hostname: Some("ip-10-0-0-1".into()),
        build_id: 9,
        started: DateTime::from_timestamp(1_700_005_000, 0),
    }];
    let c = scale_in_choice(&cfg, now, 2, &members, &ec2s, &busy);
    assert_eq!(
        c.actions,
        vec![
            (
                "i-4".to_string(),
                Action::Remove(scale_in::RemoveReason::Booting)
            ),
            ("i-2".to_string(), Action::RequestDrain),
        ]
    );
    // With the agent required, i-3 (no agent) is held, not removed.
    let cfg = Config {
        require_drain_agent: true,
        ..Config::default()
    };
    let c = scale_in_choice(&cfg, now, 3, &members, &ec2s, &busy);
    assert!(c
        .held
        .iter()
        .any(|(id, r)| id == "i-3" && *r == HoldReason::NoAgent));
}

#[test]
fn drain_view_uses_the_chooser_rules() {
    let cfg = Config::default();
    let now = DateTime::from_timestamp(1_700_010_000, 0).unwrap();
    let members = vec![
        member("i-1", "Terminating:Wait"),
        member("i-2", "Terminating:Wait"),
        member("i-3", "InService"),
    ];
    let ec2s: HashMap<String, Ec2Instance> = [
        ec2("i-1", 1, 1_700_000_000, false),
        ec2("i-2", 2, 1_700_000_000, false),
        ec2("i-3", 3, 1_700_000_000, false),
    ]
    .into_iter()
    .map(|e| (e.instance_id.clone(), e))
    .collect();
    let b = |h: Option<&str>, id: i64, started: i64| BusyWorker {
        hostname: h.map(str::to_string),
        build_id: id,
        started: DateTime::from_timestamp(started, 0),
    };
    // i-1 busy; i-3's build is not a waiting instance's; a stale row on i-2's IP predates it.
    let v = drain_view(
        &cfg,
        now,
        &members,
        &ec2s,
        &[
            b(Some("ip-10-0-0-1"), 1, 1_700_001_000),
            b(Some("10.0.0.3"), 3, 1_700_001_000),
            b(Some("10.0.0.2"), 2, 1_699_000_000),
        ],
    );
    assert!(v.blocker.is_none());
    assert_eq!(v.busy["i-1"].as_ref().unwrap().build_id, 1);
    assert!(
        v.busy["i-2"].is_none(),
        "a build older than the instance is stale"
    );
    // A build with no worker yet keeps every waiting instance.
    let v = drain_view(&cfg, now, &members, &ec2s, &[b(None, 5, 1_700_009_990)]);
    assert!(matches!(v.blocker, Some(Blocker::Unassigned { .. })));
    assert!(v
        .busy
        .values()
        .all(|x| x.as_ref().is_some_and(|w| w.build_id == 5)));
    // ... unless it is older than the grace: a worker died between the two saves.
    let v = drain_view(&cfg, now, &members, &ec2s, &[b(None, 5, 1_700_000_000)]);
    assert!(v.blocker.is_none() && v.busy.values().all(Option::is_none));
    // A worker that matches no member keeps every waiting instance too.
    let v = drain_view(
        &cfg,
        now,
        &members,
        &ec2s,
        &[b(Some("build-box"), 6, 1_700_009_000)],
    );
    assert!(matches!(v.blocker, Some(Blocker::Unmatched { .. })));
    assert!(v.busy.values().all(Option::is_some));
}

#[test]
fn resize_grows_takes_back_unlaunched_capacity_first_or_holds() {
    // desired 5, 3 launched: a target of 2 takes back the 2 unlaunched, then a scale-in of 1.
    assert_eq!(resize(5, 3, 2), Resize::Shrink { lower: 2 });
    assert_eq!(reduction(5, 3, 2), 1);
    // Everything launched: nothing to take back, the scale-in removes the difference.
    assert_eq!(resize(4, 4, 1), Resize::Shrink { lower: 0 });
    assert_eq!(reduction(4, 4, 1), 3);
    // Only unlaunched capacity above the target: lowered by exactly the difference.
    assert_eq!(resize(6, 1, 4), Resize::Shrink { lower: 2 });
    assert_eq!(reduction(6, 1, 4), 0);
    assert_eq!(resize(2, 2, 5), Resize::Grow { to: 5 });
    assert_eq!(resize(3, 1, 3), Resize::Hold);
}
