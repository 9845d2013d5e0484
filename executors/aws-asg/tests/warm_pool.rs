//! Warm pools against the in-memory group, which models what moto does not: instances going
//! back to the warm pool on a scale-in with `ReuseOnScaleIn`, waiting in `Warmed:Pending:Wait`
//! on the termination hook, and a scale-out drawing the warm pool's instances before launching.

mod common;
mod fake;
mod harness;

use autoscaler_aws_asg::client::{ApiError, GroupTag, WarmPoolConfig};
use autoscaler_aws_asg::policy::warm::{TAG_WARM_POOL, WARM_POOL_MANAGED};
use autoscaler_aws_asg::Config;
use autoscaler_executor::{ErrorKind, Executor};
use common::*;
use fake::FakeAsg;
use harness::*;

fn warm_cfg(n: u32, reuse: bool) -> WarmPoolConfig {
    WarmPoolConfig {
        min_size: n,
        max_group_prepared_capacity: Some(n as i32),
        pool_state: "Stopped".into(),
        reuse_on_scale_in: reuse,
        status: None,
    }
}

fn mark_managed(f: &FakeAsg) {
    f.state
        .lock()
        .unwrap()
        .groups
        .get_mut(G)
        .unwrap()
        .tags
        .push(GroupTag {
            key: TAG_WARM_POOL.into(),
            value: WARM_POOL_MANAGED.into(),
            propagate_at_launch: false,
        });
}

/// Only the capacity: no tags, termination policy or hook upkeep in the call lists.
fn capacity_only() -> Config {
    Config {
        manage_tags: false,
        manage_termination_policy: false,
        manage_lifecycle_hook: false,
        ..Config::default()
    }
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[tokio::test]
async fn standby_zero_and_no_warm_pool_make_exactly_todays_calls() {
    let f = FakeAsg::with_group(G, 0, 10, 3);
    f.put_default_hook(G);
    let (exec, fake, clock) = setup(Config::default(), f);
    let dir = FakeDirectory::default();
    let p = linux(10);

    // A scale-in: the same seven calls as before warm pools existed, and no warm-pool call.
    let out = run_standby(&exec, &p, 2, 0, &dir, false).await.unwrap();
    assert_eq!(
        fake.take_calls(),
        vec![
            "DescribeAutoScalingGroups vespene-linux",
            "DescribeInstances i-1,i-2,i-3",
            "UpdateAutoScalingGroup vespene-linux OldestInstance,Default",
            "CreateOrUpdateTags vespene-linux vespene_worker=true,vespene_pool=linux",
            "CreateTags i-1,i-2,i-3",
            "DescribeLifecycleHooks vespene-linux",
            "TerminateInstanceInAutoScalingGroup i-1 true",
        ]
    );
    assert!(
        out.actions.iter().any(|a| a
            == "TerminateInstanceInAutoScalingGroup InstanceId=i-1 ShouldDecrementDesiredCapacity=true (idle: no RUNNING build on it)"),
        "{:?}",
        out.actions
    );
    // The leaver is terminated through the hook as always, not kept anywhere.
    assert_eq!(fake.waiting(G), vec!["i-1"]);
    assert!(fake.warm_states(G).is_empty());

    // The drain, then a scale-out: still nothing but today's calls.
    clock.advance(20);
    run_standby(&exec, &p, 2, 0, &dir, false).await.unwrap();
    assert_eq!(
        fake.take_calls(),
        vec![
            "DescribeAutoScalingGroups vespene-linux",
            "DescribeInstances i-1,i-2,i-3",
            "CompleteLifecycleAction vespene-linux vespene-drain i-1 CONTINUE",
        ]
    );
    clock.advance(20);
    run_standby(&exec, &p, 4, 0, &dir, false).await.unwrap();
    assert_eq!(
        fake.take_calls(),
        vec![
            "DescribeAutoScalingGroups vespene-linux",
            "SetDesiredCapacity vespene-linux 4",
        ]
    );
    assert_eq!(
        fake.terminated(),
        pairs(&[("i-1", "CompleteLifecycleAction")])
    );
    assert!(fake.warm_config(G).is_none(), "no warm pool was made");
}

#[tokio::test]
async fn scale_in_with_standby_returns_leavers_to_the_warm_pool_through_the_drain() {
    let f = FakeAsg::with_group(G, 0, 10, 4);
    f.put_default_hook(G);
    let (exec, fake, clock) = setup(Config::default(), f);
    let dir = FakeDirectory::default();
    let p = linux(10);

    // Cycle 1: 4 -> 2 with standby 2. The warm pool is made (and marked) before the scale-in,
    // so the two idle leavers the chooser names go back to it instead of ending.
    let out = run_standby(&exec, &p, 2, 2, &dir, false).await.unwrap();
    assert!(out.revisit);
    assert_eq!(
        fake.take_calls(),
        vec![
            "DescribeAutoScalingGroups vespene-linux",
            "DescribeWarmPool vespene-linux",
            "DescribeInstances i-1,i-2,i-3,i-4",
            "UpdateAutoScalingGroup vespene-linux OldestInstance,Default",
            "CreateOrUpdateTags vespene-linux vespene_worker=true,vespene_pool=linux",
            "CreateTags i-1,i-2,i-3,i-4",
            "DescribeLifecycleHooks vespene-linux",
            "PutWarmPool vespene-linux min=2 max_prepared=Some(2) Stopped reuse=true",
            "CreateOrUpdateTags vespene-linux vespene_warm_pool=managed",
            "TerminateInstanceInAutoScalingGroup i-1 true",
            "TerminateInstanceInAutoScalingGroup i-2 true",
        ]
    );
    assert!(
        out.actions.iter().any(|a| a
            == "PutWarmPool AutoScalingGroupName=vespene-linux MinSize=2 MaxGroupPreparedCapacity=2 \
                PoolState=Stopped InstanceReusePolicy.ReuseOnScaleIn=true \
                (standby 2 workers, 1 per instance: 2 warm instance(s))"),
        "{:?}",
        out.actions
    );
    assert!(
        out.actions.iter().any(|a| a.ends_with(
            "InstanceId=i-1 ShouldDecrementDesiredCapacity=true (idle: no RUNNING build on it; \
             the group's warm pool has ReuseOnScaleIn)"
        )),
        "{:?}",
        out.actions
    );
    assert_eq!(
        fake.states(G),
        pairs(&[("i-3", "InService"), ("i-4", "InService")])
    );
    assert_eq!(
        fake.warm_states(G),
        pairs(&[
            ("i-1", "Warmed:Pending:Wait"),
            ("i-2", "Warmed:Pending:Wait")
        ])
    );
    assert_eq!(fake.group(G).desired_capacity, 2);

    // A worker on i-1 claimed a build just before its termination (the race the drain is
    // for). Cycle 2: i-1 is held with a heartbeat, idle i-2 is completed and stops in the
    // warm pool. The warm pool is as wanted: no PutWarmPool, no tag.
    dir.set(&[("ip-10-0-0-1.ec2.internal", 42)]);
    clock.advance(20);
    let out = run_standby(&exec, &p, 2, 2, &dir, false).await.unwrap();
    assert!(out.revisit, "i-1 still waits");
    assert_eq!(
        fake.take_calls(),
        vec![
            "DescribeAutoScalingGroups vespene-linux",
            "DescribeWarmPool vespene-linux",
            "DescribeInstances i-3,i-4,i-1,i-2",
            "RecordLifecycleActionHeartbeat vespene-linux vespene-drain i-1",
            "CompleteLifecycleAction vespene-linux vespene-drain i-2 CONTINUE",
        ]
    );
    assert!(
        out.actions
            .iter()
            .any(|a| a
                .contains("InstanceId=i-1 (build 42 RUNNING on worker ip-10-0-0-1.ec2.internal)")),
        "{:?}",
        out.actions
    );
    assert_eq!(
        fake.warm_states(G),
        pairs(&[("i-1", "Warmed:Pending:Wait"), ("i-2", "Warmed:Stopped")])
    );

    // A third of the hook's hour later the heartbeat is due again; AWS's timeout never fires.
    clock.advance(20);
    run_standby(&exec, &p, 2, 2, &dir, false).await.unwrap();
    assert_eq!(
        fake.take_calls(),
        vec![
            "DescribeAutoScalingGroups vespene-linux",
            "DescribeWarmPool vespene-linux",
            "DescribeInstances i-3,i-4,i-1",
        ],
        "heartbeat still fresh"
    );
    for _ in 0..4 {
        clock.advance(1200);
        fake.advance(1200);
        run_standby(&exec, &p, 2, 2, &dir, false).await.unwrap();
        assert!(fake.take_calls().contains(
            &"RecordLifecycleActionHeartbeat vespene-linux vespene-drain i-1".to_string()
        ));
        assert!(
            fake.expire_waits().is_empty(),
            "heartbeats keep the wait alive"
        );
    }

    // The build ends: i-1 is completed and stops in the warm pool. Nothing ever terminated.
    dir.set(&[]);
    clock.advance(20);
    let out = run_standby(&exec, &p, 2, 2, &dir, false).await.unwrap();
    assert!(fake
        .take_calls()
        .contains(&"CompleteLifecycleAction vespene-linux vespene-drain i-1 CONTINUE".to_string()));
    assert!(!out.revisit);
    assert_eq!(
        fake.warm_states(G),
        pairs(&[("i-1", "Warmed:Stopped"), ("i-2", "Warmed:Stopped")])
    );
    assert!(fake.terminated().is_empty(), "{:?}", fake.terminated());
    assert_eq!(fake.maintain_warm_pool(G), (vec![], vec![]), "exactly 2");

    // Steady state: the group and its warm pool read, nothing written.
    run_standby(&exec, &p, 2, 2, &dir, false).await.unwrap();
    assert_eq!(
        fake.take_calls(),
        vec![
            "DescribeAutoScalingGroups vespene-linux",
            "DescribeWarmPool vespene-linux",
        ]
    );
    // The warm instances are not capacity.
    let st = exec.status(&p).await.unwrap().unwrap();
    assert_eq!((st.desired, st.current), (2, 2));
}

#[tokio::test]
async fn scale_out_draws_from_the_warm_pool_and_launches_only_the_rest() {
    let f = FakeAsg::with_group(G, 0, 10, 2);
    f.add_warm_pool(G, warm_cfg(2, true), 2); // i-3, i-4, stopped
    mark_managed(&f);
    let (exec, fake, _clock) = setup(capacity_only(), f);
    let dir = FakeDirectory::default();
    let p = linux(10);
    assert_eq!(
        fake.warm_states(G),
        pairs(&[("i-3", "Warmed:Stopped"), ("i-4", "Warmed:Stopped")])
    );

    // 2 -> 5: one SetDesiredCapacity; AWS takes both warm instances and launches one.
    run_standby(&exec, &p, 5, 2, &dir, false).await.unwrap();
    assert_eq!(
        fake.take_calls(),
        vec![
            "DescribeAutoScalingGroups vespene-linux",
            "DescribeWarmPool vespene-linux",
            "SetDesiredCapacity vespene-linux 5",
        ]
    );
    assert_eq!(
        fake.states(G),
        pairs(&[
            ("i-1", "InService"),
            ("i-2", "InService"),
            ("i-3", "Pending"),
            ("i-4", "Pending"),
            ("i-5", "Pending"),
        ])
    );
    assert!(fake.warm_states(G).is_empty());
    // AWS refills the warm pool to its absolute size, whatever the desired capacity.
    let (launched, ended) = fake.maintain_warm_pool(G);
    assert_eq!((launched.len(), ended.len()), (2, 0));
    fake.boot_pending(G);

    // Next cycle: five in service, two warm, nothing to do.
    run_standby(&exec, &p, 5, 2, &dir, false).await.unwrap();
    assert_eq!(
        fake.take_calls(),
        vec![
            "DescribeAutoScalingGroups vespene-linux",
            "DescribeWarmPool vespene-linux",
        ]
    );
    let st = exec.status(&p).await.unwrap().unwrap();
    assert_eq!(
        (st.desired, st.current),
        (5, 5),
        "warm instances are not capacity"
    );
}

#[tokio::test]
async fn a_failing_put_warm_pool_is_reported_and_the_capacity_still_changes() {
    let f = FakeAsg::with_group(G, 0, 10, 1);
    f.fail_next(
        "PutWarmPool",
        ApiError::service(
            "ValidationError",
            "You can't add a warm pool to an Auto Scaling group that has a mixed instances policy",
            400,
        ),
    );
    let (exec, fake, _clock) = setup(capacity_only(), f);
    let dir = FakeDirectory::default();
    let p = linux(10);

    let err = run_standby(&exec, &p, 3, 2, &dir, false).await.unwrap_err();
    assert_eq!(err.pool, "linux");
    assert_eq!(err.kind, ErrorKind::Backend);
    assert!(
        err.message.starts_with("Auto Scaling group vespene-linux: PutWarmPool: ValidationError: You can't add a warm pool"),
        "{}",
        err.message
    );
    assert_eq!(
        fake.take_calls(),
        vec![
            "DescribeAutoScalingGroups vespene-linux",
            "DescribeWarmPool vespene-linux",
            "PutWarmPool vespene-linux min=2 max_prepared=Some(2) Stopped reuse=true",
            "SetDesiredCapacity vespene-linux 3",
        ],
        "no tag for a warm pool that was not made; the capacity changed anyway"
    );
    assert_eq!(fake.group(G).desired_capacity, 3);
    assert!(fake.warm_config(G).is_none());

    // Next cycle the call is made again, and succeeds.
    fake.boot_pending(G);
    run_standby(&exec, &p, 3, 2, &dir, false).await.unwrap();
    assert_eq!(
        fake.take_calls(),
        vec![
            "DescribeAutoScalingGroups vespene-linux",
            "DescribeWarmPool vespene-linux",
            "PutWarmPool vespene-linux min=2 max_prepared=Some(2) Stopped reuse=true",
            "CreateOrUpdateTags vespene-linux vespene_warm_pool=managed",
        ]
    );
    assert_eq!(fake.warm_config(G), Some(warm_cfg(2, true)));
}

#[tokio::test]
async fn dry_run_makes_no_mutating_call() {
    let f = FakeAsg::with_group(G, 0, 10, 4);
    f.put_default_hook(G);
    let (exec, fake, _clock) = setup(Config::default(), f);
    let dir = FakeDirectory::default();
    let p = linux(10);

    let out = run_standby(&exec, &p, 2, 2, &dir, true).await.unwrap();
    let calls = fake.take_calls();
    assert!(calls.iter().all(|c| c.starts_with("Describe")), "{calls:?}");
    assert!(calls.contains(&"DescribeWarmPool vespene-linux".to_string()));
    assert!(
        out.actions.iter().any(|a| a.starts_with(
            "would PutWarmPool AutoScalingGroupName=vespene-linux MinSize=2 MaxGroupPreparedCapacity=2 PoolState=Stopped"
        )),
        "{:?}",
        out.actions
    );
    assert!(out
        .actions
        .iter()
        .any(|a| a.starts_with("would CreateOrUpdateTags AutoScalingGroupName=vespene-linux Tags=[vespene_warm_pool=managed]")));
    assert!(out
        .actions
        .iter()
        .any(|a| a.starts_with("would TerminateInstanceInAutoScalingGroup InstanceId=i-1")));
    assert!(fake.warm_config(G).is_none());
    assert_eq!(fake.group(G).desired_capacity, 4);
    assert_eq!(fake.states(G).len(), 4);
}

#[tokio::test]
async fn standby_zero_empties_the_executors_warm_pool_and_leaves_a_hand_made_one() {
    // The executor's own (marked) warm pool: MinSize 0, no reuse, so leavers end again.
    let f = FakeAsg::with_group(G, 0, 10, 2);
    f.add_warm_pool(G, warm_cfg(2, true), 2);
    mark_managed(&f);
    let (exec, fake, _clock) = setup(capacity_only(), f);
    let dir = FakeDirectory::default();
    let p = linux(10);
    let out = run_standby(&exec, &p, 2, 0, &dir, false).await.unwrap();
    assert_eq!(
        fake.take_calls(),
        vec![
            "DescribeAutoScalingGroups vespene-linux",
            "DescribeWarmPool vespene-linux",
            "PutWarmPool vespene-linux min=0 max_prepared=Some(0) Stopped reuse=false",
        ]
    );
    assert!(out.actions[0].ends_with("(no standby planned: the executor's warm pool keeps none)"));
    let (_, ended) = fake.maintain_warm_pool(G);
    assert_eq!(
        ended.len(),
        2,
        "AWS ends what the warm pool no longer holds"
    );
    run_standby(&exec, &p, 2, 0, &dir, false).await.unwrap();
    assert_eq!(
        fake.take_calls(),
        vec![
            "DescribeAutoScalingGroups vespene-linux",
            "DescribeWarmPool vespene-linux",
        ],
        "already empty"
    );

    // A warm pool made by hand (no mark): a plan without standby never touches it.
    let f = FakeAsg::with_group(G, 0, 10, 2);
    f.add_warm_pool(G, warm_cfg(3, false), 3);
    let (exec, fake, _clock) = setup(capacity_only(), f);
    let out = run_standby(&exec, &p, 2, 0, &dir, false).await.unwrap();
    assert_eq!(
        fake.take_calls(),
        vec![
            "DescribeAutoScalingGroups vespene-linux",
            "DescribeWarmPool vespene-linux",
        ]
    );
    assert!(out.actions.is_empty());
    assert_eq!(fake.warm_config(G), Some(warm_cfg(3, false)));
}

#[tokio::test]
async fn the_group_max_size_clamps_the_warm_pool() {
    // MaxSize 4 with 3 in service leaves room for one warm instance, not the planned three.
    let f = FakeAsg::with_group(G, 0, 4, 3);
    mark_managed(&f);
    let (exec, fake, _clock) = setup(capacity_only(), f);
    let dir = FakeDirectory::default();
    let p = linux(10);
    run_standby(&exec, &p, 3, 3, &dir, false).await.unwrap();
    assert_eq!(
        fake.take_calls(),
        vec![
            "DescribeAutoScalingGroups vespene-linux",
            "DescribeWarmPool vespene-linux",
            "PutWarmPool vespene-linux min=1 max_prepared=Some(1) Stopped reuse=true",
        ]
    );
}

#[tokio::test]
async fn the_audit_lists_warm_instances_as_members_never_as_capacity() {
    let f = FakeAsg::with_group(G, 0, 10, 3);
    f.put_default_hook(G);
    let (exec, fake, _clock) = setup(Config::default(), f);
    let dir = FakeDirectory::default();
    let p = linux(10);
    // 3 -> 2 with standby 2: i-1 goes back to the warm pool and waits on the hook, still
    // running and tagged vespene_worker=true; AWS then launches one more into the warm pool.
    run_standby(&exec, &p, 2, 2, &dir, false).await.unwrap();
    let (launched, _) = fake.maintain_warm_pool(G);
    assert_eq!(launched, vec!["i-4"]);
    assert_eq!(
        fake.warm_states(G),
        pairs(&[("i-1", "Warmed:Pending:Wait"), ("i-4", "Warmed:Stopped")])
    );
    fake.take_calls();

    let snap = exec.inventory().unwrap().inventory(&[&p]).await.unwrap();
    assert!(
        fake.calls()
            .contains(&"DescribeWarmPool vespene-linux".to_string()),
        "{:?}",
        fake.calls()
    );
    let g = snap.pools[0].group.as_ref().unwrap();
    assert_eq!(g.desired, 2);
    let mut members = g.members.clone();
    members.sort();
    assert_eq!(
        members,
        vec!["i-1", "i-2", "i-3", "i-4"],
        "warm ones are the group's"
    );
    let state = |id: &str| {
        let i = snap.instances.iter().find(|i| i.id == id).unwrap();
        (i.state, i.raw_state.clone())
    };
    use autoscaler_executor::InstanceState;
    assert_eq!(
        state("i-1"),
        (
            InstanceState::Stopped,
            "running/Warmed:Pending:Wait".to_string()
        ),
        "not capacity, though EC2 still runs it"
    );
    assert_eq!(
        state("i-4"),
        (InstanceState::Stopped, "stopped/Warmed:Stopped".to_string())
    );
    assert_eq!(state("i-2").0, InstanceState::Running);
}

#[tokio::test]
async fn an_instance_launching_into_the_warm_pool_on_the_users_hook_is_not_the_drains() {
    let f = FakeAsg::with_group(G, 0, 10, 2);
    f.put_default_hook(G);
    f.add_warm_pool(G, warm_cfg(2, true), 1); // i-3, stopped
    mark_managed(&f);
    let booting = f.launch_into_pool_on_launch_hook(G); // i-4
    let (exec, fake, _clock) = setup(capacity_only(), f);
    let dir = FakeDirectory::default();
    let p = linux(10);

    // It waits in Warmed:Pending:Wait like a returning instance, so the drain tries it; AWS
    // answers that the executor's hook holds no action on it: a warning, no failure, and it
    // is left to its own hook.
    let out = run_standby(&exec, &p, 2, 2, &dir, false).await.unwrap();
    assert_eq!(
        fake.take_calls(),
        vec![
            "DescribeAutoScalingGroups vespene-linux".to_string(),
            "DescribeWarmPool vespene-linux".to_string(),
            format!("DescribeInstances i-1,i-2,{booting}"),
            format!("CompleteLifecycleAction vespene-linux vespene-drain {booting} CONTINUE"),
        ]
    );
    assert!(!out.revisit);
    assert_eq!(
        fake.warm_states(G),
        pairs(&[("i-3", "Warmed:Stopped"), ("i-4", "Warmed:Pending:Wait")])
    );
    assert!(fake.terminated().is_empty());
}

#[tokio::test]
async fn a_failed_describe_warm_pool_is_reported_and_keeps_the_drain_clock() {
    let cfg = Config {
        max_drain_seconds: 3600,
        ..Config::default()
    };
    let f = FakeAsg::with_group(G, 0, 10, 3);
    f.put_default_hook(G);
    let (exec, fake, clock) = setup(cfg, f);
    let dir = FakeDirectory::default();
    let p = linux(10);

    // i-1 goes back to the warm pool; a build lands on it before its drain starts.
    run_standby(&exec, &p, 2, 1, &dir, false).await.unwrap();
    assert_eq!(
        fake.warm_states(G),
        pairs(&[("i-1", "Warmed:Pending:Wait")])
    );
    dir.set(&[("ip-10-0-0-1.ec2.internal", 42)]);
    run_standby(&exec, &p, 2, 1, &dir, false).await.unwrap();
    assert!(fake
        .take_calls()
        .contains(&"RecordLifecycleActionHeartbeat vespene-linux vespene-drain i-1".to_string()));

    // The warm pool cannot be read: the pool fails naming the call, nothing is written to the
    // warm pool, and the capacity still changes.
    clock.advance(1300);
    fake.fail_next(
        "DescribeWarmPool",
        ApiError::service("Throttling", "Rate exceeded", 400),
    );
    let err = run_standby(&exec, &p, 3, 1, &dir, false).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Throttled);
    assert!(
        err.message.starts_with(
            "Auto Scaling group vespene-linux: DescribeWarmPool: Throttling: Rate exceeded"
        ),
        "{}",
        err.message
    );
    let calls = fake.take_calls();
    assert!(
        calls.contains(&"SetDesiredCapacity vespene-linux 3".to_string()),
        "{calls:?}"
    );
    assert!(
        !calls.iter().any(|c| c.starts_with("PutWarmPool")),
        "{calls:?}"
    );

    // max_drain_seconds after the drain began (not after the failed read), i-1 is released.
    clock.advance(3600 - 1300);
    fake.boot_pending(G);
    let out = run_standby(&exec, &p, 3, 1, &dir, false).await.unwrap();
    assert!(
        fake.take_calls().contains(
            &"CompleteLifecycleAction vespene-linux vespene-drain i-1 CONTINUE".to_string()
        ),
        "{:?}",
        out.actions
    );
    assert!(out
        .actions
        .iter()
        .any(|a| a.contains("max_drain_seconds=3600 reached with build 42")));
}
