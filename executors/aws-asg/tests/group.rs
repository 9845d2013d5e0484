//! Sizing, clamping, what is kept on the group (hook, tags, policy), dry runs and call economy
//! against the in-memory group of `fake/`.

mod common;
mod fake;
mod harness;

use autoscaler_aws_asg::client::ApiError;
use autoscaler_aws_asg::Config;
use autoscaler_executor::{ErrorKind, Executor, Plan, ScaleRequest, WorkerPool};
use common::*;
use fake::FakeAsg;
use harness::*;

#[tokio::test(flavor = "current_thread")]
async fn clamping_to_pool_maximum_and_group_bounds_says_which_bound_won() {
    let logs = LogBuffer::default();
    let _guard = logs.install();
    let dir = FakeDirectory::default();

    // Pool maximum 5 below the plan of 8.
    let (exec, fake, _) = setup(Config::default(), FakeAsg::with_group(G, 0, 10, 0));
    let out = run(&exec, &linux(5), 8, &dir, false).await.unwrap();
    assert!(fake
        .calls()
        .contains(&"SetDesiredCapacity vespene-linux 5".to_string()));
    assert_eq!(out.applied, Some(5));
    assert!(
        logs.text()
            .contains("plan of 8 workers exceeds the pool's maximum of 5: the pool maximum won"),
        "{}",
        logs.text()
    );

    // Group MaxSize 4 below the plan: AWS would reject 8, so 4 is asked.
    let (exec, fake, _) = setup(Config::default(), FakeAsg::with_group(G, 0, 4, 0));
    run(&exec, &linux(10), 8, &dir, false).await.unwrap();
    assert!(
        fake.calls()
            .contains(&"SetDesiredCapacity vespene-linux 4".to_string()),
        "{:?}",
        fake.calls()
    );
    assert!(logs
        .text()
        .contains("8 instances wanted but the group's MaxSize is 4: the group MaxSize won"));

    // Group MinSize 2 above a plan of 0: one instance of three goes, never below MinSize.
    let (exec, fake, _) = setup(Config::default(), FakeAsg::with_group(G, 2, 4, 3));
    run(&exec, &linux(10), 0, &dir, false).await.unwrap();
    let terminations: Vec<String> = fake
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("Terminate"))
        .collect();
    assert_eq!(
        terminations,
        vec!["TerminateInstanceInAutoScalingGroup i-1 true"]
    );
    assert_eq!(fake.group(G).desired_capacity, 2);
    assert!(logs
        .text()
        .contains("0 instances wanted but the group's MinSize is 2: the group MinSize won"));

    // Two workers per instance: 5 workers are 3 instances; maximum 5 allows only 2.
    let cfg = Config {
        workers_per_instance: 2,
        ..Config::default()
    };
    let (exec, fake, _) = setup(cfg.clone(), FakeAsg::with_group(G, 0, 10, 0));
    let out = run(&exec, &linux(10), 5, &dir, false).await.unwrap();
    assert!(fake
        .calls()
        .contains(&"SetDesiredCapacity vespene-linux 3".to_string()));
    assert_eq!(out.applied, Some(6));
    let (exec, fake, _) = setup(cfg, FakeAsg::with_group(G, 0, 10, 0));
    let out = run(&exec, &linux(5), 5, &dir, false).await.unwrap();
    assert!(fake
        .calls()
        .contains(&"SetDesiredCapacity vespene-linux 2".to_string()));
    assert_eq!(
        out.applied,
        Some(4),
        "never above the pool maximum of 5 workers"
    );
    assert!(logs.text().contains("3 instances of 2 workers would exceed the pool's maximum of 5 workers: the pool maximum won"));
    assert!(logs.text().contains("WARN"));
}

#[tokio::test]
async fn pending_instances_count_toward_the_size() {
    let f = FakeAsg::with_group(G, 0, 10, 3);
    f.put_default_hook(G);
    f.set_state(G, "i-2", "Pending");
    f.set_state(G, "i-3", "Pending:Wait");
    let (exec, fake, _) = setup(Config::default(), f);
    let dir = FakeDirectory::default();
    let p = linux(10);
    run(&exec, &p, 3, &dir, false).await.unwrap();
    fake.take_calls();
    // Booting machines are capacity: the same plan again makes no call.
    let out = run(&exec, &p, 3, &dir, false).await.unwrap();
    assert_eq!(
        fake.take_calls(),
        vec!["DescribeAutoScalingGroups vespene-linux"]
    );
    assert!(!out.revisit);
    let st = exec.status(&p).await.unwrap().unwrap();
    assert_eq!((st.desired, st.current), (3, 3));
}

#[tokio::test]
async fn prepare_describes_all_groups_in_batches_of_100_and_scale_reuses_it() {
    let f = FakeAsg::default();
    for i in 0..150 {
        f.add_group(&format!("vespene-p{i}"), 0, 10, 0);
    }
    let (exec, fake, _) = setup(
        Config {
            manage_lifecycle_hook: false,
            manage_tags: false,
            manage_termination_policy: false,
            ..Config::default()
        },
        f,
    );
    let mut pools: Vec<WorkerPool> = (0..150)
        .map(|i| pool(i, &format!("p{i}"), CMD, 10))
        .collect();
    pools.push(pool(999, "ghost", CMD, 10));
    let refs: Vec<&WorkerPool> = pools.iter().collect();
    exec.prepare(&refs, false).await.unwrap();
    let calls = fake.take_calls();
    assert_eq!(calls.len(), 2, "151 names: two requests");
    assert_eq!(calls[0].split(',').count(), 100);
    let dir = FakeDirectory::default();
    for p in &pools[..150] {
        exec.scale(ScaleRequest {
            pool: p,
            plan: Plan {
                size: 1,
                queued_size: 0,
                standby: 0,
            },
            dry_run: false,
            workers: &dir,
        })
        .await
        .unwrap();
    }
    let calls = fake.take_calls();
    assert_eq!(calls.len(), 150);
    assert!(
        calls.iter().all(|c| c.starts_with("SetDesiredCapacity")),
        "{calls:?}"
    );
    let err = exec
        .scale(ScaleRequest {
            pool: &pools[150],
            plan: Plan {
                size: 1,
                queued_size: 0,
                standby: 0,
            },
            dry_run: false,
            workers: &dir,
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound);
    assert!(
        err.to_string()
            .contains("pool ghost: Auto Scaling group vespene-ghost not found"),
        "{err}"
    );
    assert!(
        fake.take_calls().is_empty(),
        "the unknown group is known from prepare"
    );

    // A describe failure in prepare becomes each pool's own error, naming its group.
    fake.fail_next(
        "DescribeAutoScalingGroups",
        ApiError::service("Throttling", "Rate exceeded", 400),
    );
    exec.prepare(&refs[..2], false).await.unwrap();
    for p in &pools[..2] {
        let err = exec
            .scale(ScaleRequest {
                pool: p,
                plan: Plan {
                    size: 1,
                    queued_size: 0,
                    standby: 0,
                },
                dry_run: false,
                workers: &dir,
            })
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Throttled);
        let msg = err.to_string();
        assert!(
            msg.contains(&format!(
                "pool {}: Auto Scaling group vespene-{}: Throttling: Rate exceeded",
                p.name, p.name
            )),
            "{msg}"
        );
    }
    assert_eq!(
        fake.take_calls().len(),
        1,
        "no call after the failed describe"
    );
}

#[tokio::test]
async fn hook_is_made_before_a_scale_in_and_rechecked_periodically() {
    let (exec, fake, clock) = setup(Config::default(), FakeAsg::with_group(G, 0, 10, 2));
    let dir = FakeDirectory::default();
    let p = linux(10);
    run(&exec, &p, 1, &dir, false).await.unwrap();
    let calls = fake.take_calls();
    let put = calls
        .iter()
        .position(|c| c.starts_with("PutLifecycleHook"))
        .unwrap();
    let set = calls
        .iter()
        .position(|c| c.starts_with("TerminateInstanceInAutoScalingGroup"))
        .unwrap();
    assert!(
        put < set,
        "the hook must exist before an instance is terminated: {calls:?}"
    );
    assert_eq!(
        calls[put],
        "PutLifecycleHook vespene-linux vespene-drain autoscaling:EC2_INSTANCE_TERMINATING Some(3600) Some(\"CONTINUE\")"
    );
    // So the oldest instance waits instead of dying.
    assert_eq!(fake.states(G)[0].1, "Terminating:Wait");

    // Someone shortens the hook; within hook_check_seconds nobody looks.
    fake.state.lock().unwrap().hooks.get_mut(G).unwrap()[0].heartbeat_timeout = Some(300);
    clock.advance(300);
    run(&exec, &p, 1, &dir, false).await.unwrap();
    assert!(!fake
        .take_calls()
        .iter()
        .any(|c| c.contains("LifecycleHook")));
    // After it, the hook is described and put back.
    clock.advance(301);
    run(&exec, &p, 1, &dir, false).await.unwrap();
    let calls = fake.take_calls();
    assert!(
        calls.contains(&"DescribeLifecycleHooks vespene-linux".to_string()),
        "{calls:?}"
    );
    assert!(
        calls
            .iter()
            .any(|c| c.starts_with("PutLifecycleHook") && c.contains("Some(3600)")),
        "{calls:?}"
    );
}

#[tokio::test]
async fn unmanaged_settings_make_no_such_calls() {
    let cfg = Config {
        manage_tags: false,
        manage_lifecycle_hook: false,
        manage_termination_policy: false,
        ..Config::default()
    };
    let (exec, fake, _) = setup(cfg, FakeAsg::with_group(G, 0, 10, 1));
    let dir = FakeDirectory::default();
    run(&exec, &linux(10), 2, &dir, false).await.unwrap();
    assert_eq!(
        fake.take_calls(),
        vec![
            "DescribeAutoScalingGroups vespene-linux",
            "SetDesiredCapacity vespene-linux 2"
        ]
    );
}

#[tokio::test]
async fn dry_run_reads_but_changes_nothing() {
    let f = FakeAsg::with_group(G, 0, 10, 3);
    f.put_default_hook(G);
    f.set_state(G, "i-1", "Terminating:Wait");
    let (exec, fake, _) = setup(Config::default(), f);
    let dir = FakeDirectory::default();
    dir.set(&[("ip-10-0-0-1", 5)]);
    let out = run(&exec, &linux(10), 1, &dir, true).await.unwrap();
    let calls = fake.take_calls();
    assert!(calls.iter().all(|c| c.starts_with("Describe")), "{calls:?}");
    assert!(!out.actions.is_empty());
    assert!(
        out.actions.iter().all(|a| a.starts_with("would ")),
        "{:?}",
        out.actions
    );
    for call in [
        "would UpdateAutoScalingGroup AutoScalingGroupName=vespene-linux TerminationPolicies=[OldestInstance,Default]",
        "would CreateOrUpdateTags AutoScalingGroupName=vespene-linux Tags=[vespene_worker=true,vespene_pool=linux] PropagateAtLaunch=true",
        "would CreateTags (EC2) Resources=[i-2,i-3]",
        "would SetDesiredCapacity AutoScalingGroupName=vespene-linux DesiredCapacity=2 HonorCooldown=false (was 3; instances not launched yet; ends none)",
        "would TerminateInstanceInAutoScalingGroup InstanceId=i-2 ShouldDecrementDesiredCapacity=true (idle",
        "would RecordLifecycleActionHeartbeat AutoScalingGroupName=vespene-linux LifecycleHookName=vespene-drain InstanceId=i-1 (build 5 RUNNING on worker ip-10-0-0-1)",
    ] {
        assert!(out.actions.iter().any(|a| a.starts_with(call)), "{call}\n{:?}", out.actions);
    }
    assert_eq!(fake.group(G).desired_capacity, 3);
    assert_eq!(
        fake.group(G).termination_policies,
        vec!["Default".to_string()]
    );
}

#[tokio::test]
async fn a_refused_call_names_pool_group_and_code() {
    let (exec, fake, _) = setup(Config::default(), FakeAsg::with_group(G, 0, 10, 0));
    fake.fail_next(
        "SetDesiredCapacity",
        ApiError::service(
            "AccessDenied",
            "User: arn:aws:iam::123456789012:user/x is not authorized to perform: autoscaling:SetDesiredCapacity",
            403,
        ),
    );
    let err = run(&exec, &linux(10), 2, &FakeDirectory::default(), false)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::PermissionDenied);
    assert_eq!(err.status_code(), 6);
    let msg = err.to_string();
    assert!(
        msg.starts_with("pool linux: Auto Scaling group vespene-linux: AccessDenied: User:"),
        "{msg}"
    );
    assert!(msg.contains("autoscaling:SetDesiredCapacity"), "{msg}");
}
