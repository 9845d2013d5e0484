//! Scale-in, drain and hook-timeout behaviour against an in-memory group that implements what
//! moto lacks: `Terminating:Wait`, lifecycle actions, oldest-first selection, Min/Max validation.

mod common;
mod fake;
mod harness;

use autoscaler_aws_asg::client::ApiError;
use autoscaler_aws_asg::{Config, HostnameMatch};
use autoscaler_executor::ErrorKind;
use common::*;
use fake::FakeAsg;
use harness::*;

#[tokio::test]
async fn scale_in_terminates_idle_instances_and_drains_them_busy_ones_stay() {
    let f = FakeAsg::with_group(G, 0, 10, 3);
    f.put_default_hook(G);
    let (exec, fake, clock) = setup(Config::default(), f);
    let dir = FakeDirectory::default();
    // i-1's worker reports its full private DNS name, i-3's only the short one.
    dir.set(&[("ip-10-0-0-1.ec2.internal", 42), ("ip-10-0-0-3", 43)]);
    let p = linux(10);

    // Cycle 1: scale in from 3 to 1. Only i-2 is idle: it alone is terminated (desired 3 -> 2)
    // and waits on the hook; the busy ones stay in service.
    let out = run(&exec, &p, 1, &dir, false).await.unwrap();
    assert!(out.revisit, "busy instances held: come back");
    assert_eq!(
        fake.take_calls(),
        vec![
            "DescribeAutoScalingGroups vespene-linux",
            "DescribeInstances i-1,i-2,i-3",
            "UpdateAutoScalingGroup vespene-linux OldestInstance,Default",
            "CreateOrUpdateTags vespene-linux vespene_worker=true,vespene_pool=linux",
            "CreateTags i-1,i-2,i-3",
            "DescribeLifecycleHooks vespene-linux",
            "TerminateInstanceInAutoScalingGroup i-2 true",
        ]
    );
    assert!(out.actions.iter().any(|a| a
        == "TerminateInstanceInAutoScalingGroup InstanceId=i-2 ShouldDecrementDesiredCapacity=true (idle: no RUNNING build on it)"),
        "{:?}", out.actions);
    assert_eq!(
        fake.states(G),
        vec![
            ("i-1".to_string(), "InService".to_string()),
            ("i-2".to_string(), "Terminating:Wait".to_string()),
            ("i-3".to_string(), "InService".to_string()),
        ]
    );
    assert_eq!(fake.group(G).desired_capacity, 2);

    // Cycle 2: i-2 is still idle: completed. i-1 and i-3 are still busy: held.
    clock.advance(20);
    let out = run(&exec, &p, 1, &dir, false).await.unwrap();
    assert!(out.revisit);
    assert_eq!(
        fake.take_calls(),
        vec![
            "DescribeAutoScalingGroups vespene-linux",
            "DescribeInstances i-1,i-2,i-3",
            "CompleteLifecycleAction vespene-linux vespene-drain i-2 CONTINUE",
        ]
    );
    assert!(
        out.actions.iter().any(|a| a
            .contains("InstanceId=i-2 LifecycleActionResult=CONTINUE (no RUNNING build on it)")),
        "{:?}",
        out.actions
    );

    // i-1's build ends: it goes next, then is completed the cycle after.
    dir.set(&[("ip-10-0-0-3", 43)]);
    clock.advance(20);
    let out = run(&exec, &p, 1, &dir, false).await.unwrap();
    assert!(fake
        .take_calls()
        .contains(&"TerminateInstanceInAutoScalingGroup i-1 true".to_string()));
    assert!(out.revisit, "i-1 waits on the hook");
    clock.advance(20);
    let out = run(&exec, &p, 1, &dir, false).await.unwrap();
    assert!(fake
        .take_calls()
        .contains(&"CompleteLifecycleAction vespene-linux vespene-drain i-1 CONTINUE".to_string()));
    assert!(!out.revisit, "nothing left to drain or hold");
    assert_eq!(
        fake.states(G),
        vec![("i-3".to_string(), "InService".to_string())]
    );
    assert_eq!(fake.group(G).desired_capacity, 1);

    // Steady state: one describe, nothing else, and the database is not asked.
    let before = *dir.calls.lock().unwrap();
    let out = run(&exec, &p, 1, &dir, false).await.unwrap();
    assert_eq!(
        fake.take_calls(),
        vec!["DescribeAutoScalingGroups vespene-linux"]
    );
    assert!(out.actions.is_empty() && !out.revisit);
    assert_eq!(*dir.calls.lock().unwrap(), before);
}

#[tokio::test]
async fn a_busy_waiting_instance_gets_heartbeats_every_third_of_the_timeout() {
    // AWS started this termination itself (a health check): desired already 2.
    let f = FakeAsg::with_group(G, 0, 10, 3);
    f.put_default_hook(G);
    f.set_state(G, "i-1", "Terminating:Wait");
    f.state
        .lock()
        .unwrap()
        .groups
        .get_mut(G)
        .unwrap()
        .desired_capacity = 2;
    let (exec, fake, clock) = setup(Config::default(), f);
    let dir = FakeDirectory::default();
    dir.set(&[("ip-10-0-0-1.ec2.internal", 42)]);
    let p = linux(10);
    let out = run(&exec, &p, 2, &dir, false).await.unwrap();
    assert!(out.actions.iter().any(|a| a.starts_with(
        "RecordLifecycleActionHeartbeat AutoScalingGroupName=vespene-linux LifecycleHookName=vespene-drain InstanceId=i-1 (build 42 RUNNING on worker ip-10-0-0-1.ec2.internal)"
    )), "{:?}", out.actions);
    fake.take_calls();
    // Ten minutes on: the heartbeat (interval 1200 s for a 3600 s timeout) is still fresh.
    clock.advance(600);
    let out = run(&exec, &p, 2, &dir, false).await.unwrap();
    assert!(out.revisit);
    assert!(out.actions.is_empty(), "{:?}", out.actions);
    assert!(!fake
        .take_calls()
        .iter()
        .any(|c| c.starts_with("Record") || c.starts_with("Complete")));
    // Twenty-one minutes after the first heartbeat: another one.
    clock.advance(660);
    run(&exec, &p, 2, &dir, false).await.unwrap();
    assert!(fake
        .take_calls()
        .contains(&"RecordLifecycleActionHeartbeat vespene-linux vespene-drain i-1".to_string()));
    // The build ends: i-1 is completed.
    dir.set(&[]);
    clock.advance(30);
    let out = run(&exec, &p, 2, &dir, false).await.unwrap();
    assert!(fake
        .take_calls()
        .contains(&"CompleteLifecycleAction vespene-linux vespene-drain i-1 CONTINUE".to_string()));
    assert!(!out.revisit);
}

#[tokio::test(flavor = "current_thread")]
async fn drain_timeout_releases_a_busy_instance_with_a_warning() {
    let logs = LogBuffer::default();
    let _guard = logs.install();
    let cfg = Config {
        heartbeat_timeout_seconds: 600,
        max_drain_seconds: 3600,
        ..Config::default()
    };
    let f = FakeAsg::with_group(G, 0, 10, 2);
    f.put_default_hook(G);
    f.set_state(G, "i-1", "Terminating:Wait");
    f.state
        .lock()
        .unwrap()
        .groups
        .get_mut(G)
        .unwrap()
        .desired_capacity = 1;
    let (exec, fake, clock) = setup(cfg, f);
    let dir = FakeDirectory::default();
    dir.set(&[("10.0.0.1", 42)]);
    let p = linux(10);
    run(&exec, &p, 1, &dir, false).await.unwrap(); // first sight: heartbeat
    for _ in 0..17 {
        clock.advance(200);
        run(&exec, &p, 1, &dir, false).await.unwrap();
    }
    let beats = fake
        .calls()
        .iter()
        .filter(|c| c.starts_with("RecordLifecycleActionHeartbeat"))
        .count();
    assert!(
        fake.calls().iter().all(|c| !c.starts_with("Complete")),
        "held while < 3600 s"
    );
    assert_eq!(
        beats, 18,
        "a heartbeat every 200 s (a third of the 600 s timeout)"
    );
    clock.advance(200); // 3600 s since first seen waiting
    let out = run(&exec, &p, 1, &dir, false).await.unwrap();
    assert!(
        fake.calls().contains(
            &"CompleteLifecycleAction vespene-linux vespene-drain i-1 CONTINUE".to_string()
        ),
        "{:?}",
        fake.calls()
    );
    assert!(
        out.actions.iter().any(|a| a
            .contains("max_drain_seconds=3600 reached with build 42 still RUNNING on 10.0.0.1")),
        "{:?}",
        out.actions
    );
    let text = logs.text();
    assert!(text.contains("WARN"), "{text}");
    assert!(
        text.contains("build 42 still RUNNING on worker 10.0.0.1 after max_drain_seconds=3600"),
        "{text}"
    );
    assert!(
        text.contains("pool=linux") && text.contains("group=vespene-linux"),
        "{text}"
    );
}

/// A RUNNING build on a worker whose name matches no instance could be on any of them: the
/// scale-in is held with status 12 (`held`), naming the hostnames, and nothing is removed.
/// The old code counted such workers as idle and let every instance go.
#[tokio::test]
async fn a_busy_worker_matching_no_instance_holds_the_scale_in_with_status_12() {
    let f = FakeAsg::with_group(G, 0, 10, 2);
    f.put_default_hook(G);
    let (exec, fake, _clock) = setup(Config::default(), f);
    let dir = FakeDirectory::default();
    dir.set(&[("ip-10-9-9-9.ec2.internal", 7), ("build-box", 8)]);
    let p = linux(10);
    let err = run(&exec, &p, 0, &dir, false).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Held);
    assert_eq!(err.status_code(), 12);
    let msg = err.to_string();
    assert!(
        msg.starts_with("pool linux: Auto Scaling group vespene-linux: scale-in held:")
            && msg.contains("build-box, ip-10-9-9-9.ec2.internal")
            && msg.contains("build 7, 8"),
        "{msg}"
    );
    assert!(!fake
        .take_calls()
        .iter()
        .any(|c| c.starts_with("Terminate") || c.starts_with("SetDesired")));
    assert_eq!(fake.group(G).desired_capacity, 2);
}

#[tokio::test]
async fn instance_id_matching() {
    let cfg = Config {
        hostname_match: HostnameMatch::InstanceId,
        manage_tags: false,
        manage_lifecycle_hook: false,
        manage_termination_policy: false,
        ..Config::default()
    };
    let f = FakeAsg::with_group(G, 0, 10, 2);
    f.put_default_hook(G);
    f.set_state(G, "i-1", "Terminating:Wait");
    f.set_state(G, "i-2", "Terminating:Wait");
    f.state
        .lock()
        .unwrap()
        .groups
        .get_mut(G)
        .unwrap()
        .desired_capacity = 0;
    let (exec, fake, _clock) = setup(cfg, f);
    let dir = FakeDirectory::default();
    dir.set(&[("i-2", 9)]);
    run(&exec, &linux(10), 0, &dir, false).await.unwrap();
    assert_eq!(
        fake.take_calls(),
        vec![
            "DescribeAutoScalingGroups vespene-linux",
            "DescribeInstances i-1,i-2",
            "CompleteLifecycleAction vespene-linux vespene-drain i-1 CONTINUE",
            "RecordLifecycleActionHeartbeat vespene-linux vespene-drain i-2",
        ]
    );
}

#[tokio::test]
async fn database_failure_keeps_waiting_instances_and_fails_the_pool() {
    let f = FakeAsg::with_group(G, 0, 10, 1);
    f.put_default_hook(G);
    let (exec, fake, clock) = setup(Config::default(), f);
    let dir = FakeDirectory::default();
    let p = linux(10);
    run(&exec, &p, 0, &dir, false).await.unwrap();
    clock.advance(20);
    *dir.fail.lock().unwrap() = true;
    fake.take_calls();
    let err = run(&exec, &p, 0, &dir, false).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Directory);
    let msg = err.to_string();
    assert!(
        msg.starts_with("pool linux: Auto Scaling group vespene-linux:"),
        "{msg}"
    );
    assert!(
        msg.contains("connection refused") && msg.contains("kept waiting"),
        "{msg}"
    );
    let calls = fake.take_calls();
    assert!(
        calls.contains(
            &"RecordLifecycleActionHeartbeat vespene-linux vespene-drain i-1".to_string()
        ),
        "{calls:?}"
    );
    assert!(
        !calls.iter().any(|c| c.starts_with("Complete")),
        "{calls:?}"
    );
}

#[tokio::test]
async fn an_instance_no_longer_waiting_on_the_hook_is_a_warning_not_a_failure() {
    let f = FakeAsg::with_group(G, 0, 10, 1);
    f.put_default_hook(G);
    let (exec, fake, clock) = setup(Config::default(), f);
    let dir = FakeDirectory::default();
    let p = linux(10);
    run(&exec, &p, 0, &dir, false).await.unwrap();
    clock.advance(20);
    fake.fail_next(
        "CompleteLifecycleAction",
        ApiError::service(
            "ValidationError",
            "No active Lifecycle Action found with instance ID i-1",
            400,
        ),
    );
    let out = run(&exec, &p, 0, &dir, false).await.unwrap();
    assert!(!out
        .actions
        .iter()
        .any(|a| a.starts_with("CompleteLifecycleAction")));
}
