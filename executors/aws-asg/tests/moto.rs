//! The executor against a real moto_server: groups made from a launch template, scaled out and
//! in through the real SDK client, every request counted from moto's own request log.
//!
//! moto ignores `TerminationPolicies` in `UpdateAutoScalingGroup` (it keeps what the group was
//! created with), so the steady-state groups here are created with `OldestInstance` first; the
//! update itself is checked on the wire in `termination_policy_update_reaches_the_wire`.

mod common;

use autoscaler_aws_asg::{AwsAsgExecutor, Config, PoolOverride};
use autoscaler_executor::{
    ErrorKind, Executor, ExecutorError, Outcome, Plan, ScaleRequest, WorkerPool,
};
use common::*;
use std::collections::BTreeMap;

const AMI: &str = "ami-03cf127a"; // one of moto's built-in images

async fn create_group(sdk: &aws_config::SdkConfig, name: &str, desired: i32, policies: &[&str]) {
    let template = format!("lt-{name}");
    create_launch_template(&ec2(sdk), &template, AMI, Some("t3.micro")).await;
    let asg = aws_sdk_autoscaling::Client::new(sdk);
    asg.create_auto_scaling_group()
        .auto_scaling_group_name(name)
        .launch_template(
            aws_sdk_autoscaling::types::LaunchTemplateSpecification::builder()
                .launch_template_name(&template)
                .version("$Latest")
                .build(),
        )
        .min_size(0)
        .max_size(10)
        .desired_capacity(desired)
        .availability_zones("us-east-1a")
        .set_termination_policies(Some(policies.iter().map(|p| p.to_string()).collect()))
        .send()
        .await
        .expect("CreateAutoScalingGroup");
}

struct GroupView {
    desired: i32,
    instances: Vec<String>,
    policies: Vec<String>,
    tags: BTreeMap<String, (String, bool)>,
}

async fn group(sdk: &aws_config::SdkConfig, name: &str) -> GroupView {
    let asg = aws_sdk_autoscaling::Client::new(sdk);
    let out = asg
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(name)
        .send()
        .await
        .unwrap();
    let g = &out.auto_scaling_groups()[0];
    GroupView {
        desired: g.desired_capacity().unwrap(),
        instances: g
            .instances()
            .iter()
            .map(|i| i.instance_id().unwrap().to_string())
            .collect(),
        policies: g.termination_policies().to_vec(),
        tags: g
            .tags()
            .iter()
            .map(|t| {
                (
                    t.key().unwrap().to_string(),
                    (
                        t.value().unwrap().to_string(),
                        t.propagate_at_launch().unwrap(),
                    ),
                )
            })
            .collect(),
    }
}

async fn instance_tags(sdk: &aws_config::SdkConfig, id: &str) -> BTreeMap<String, String> {
    let mut all = describe_by_id(&ec2(sdk), &[id.to_string()]).await;
    all.remove(id).expect("the instance is described").1
}

/// One engine cycle: prepare once for every pool, then scale each.
async fn cycle(
    exec: &AwsAsgExecutor,
    pools: &[(WorkerPool, u32)],
    dir: &FakeDirectory,
    dry_run: bool,
) -> Vec<Result<Outcome, ExecutorError>> {
    let refs: Vec<&WorkerPool> = pools.iter().map(|(p, _)| p).collect();
    exec.prepare(&refs, dry_run).await.unwrap();
    let mut out = Vec::new();
    for (p, size) in pools {
        out.push(
            exec.scale(ScaleRequest {
                pool: p,
                plan: Plan {
                    size: *size,
                    queued_size: 0,
                    standby: 0,
                },
                dry_run,
                workers: dir,
            })
            .await,
        );
    }
    out
}

fn mutating(counts: &BTreeMap<String, usize>) -> usize {
    counts
        .iter()
        .filter(|(a, _)| MUTATING.contains(&a.as_str()))
        .map(|(_, n)| n)
        .sum()
}

fn report(label: &str, counts: &BTreeMap<String, usize>) {
    println!(
        "moto calls [{label}]: mutating={} describe={} {:?}",
        mutating(counts),
        counts
            .iter()
            .filter(|(a, _)| a.starts_with("Describe"))
            .map(|(_, n)| n)
            .sum::<usize>(),
        counts
    );
}

#[tokio::test]
async fn scale_out_steady_state_dry_run_and_scale_in_against_moto() {
    let moto = Moto::start();
    let sdk = sdk_config(&moto.url, 3).await;
    create_group(&sdk, "vespene-linux", 0, &["OldestInstance"]).await;
    // One instance runs before the executor first sees the group, so it predates the tags.
    create_group(&sdk, "vespene-arm", 1, &["OldestInstance", "Default"]).await;
    let before_tags = group(&sdk, "vespene-arm").await.instances;
    assert_eq!(before_tags.len(), 1);

    let cfg = Config {
        pools: [(
            "arm".to_string(),
            PoolOverride {
                workers_per_instance: Some(2),
                ..PoolOverride::default()
            },
        )]
        .into(),
        ..Config::default()
    };
    let exec = AwsAsgExecutor::from_sdk_config(cfg, &sdk).unwrap();
    let dir = FakeDirectory::default();
    let cmd = "vespene-{{ worker_pool.name }}";
    let mut pools = vec![
        (pool(1, "linux", cmd, 10), 3),
        (pool(2, "arm", cmd, 10), 3),
        (pool(3, "ghost", cmd, 10), 1),
    ];

    // Cycle 1: scale out; tags, hook and capacity are set.
    moto.clear_log();
    let res = cycle(&exec, &pools, &dir, false).await;
    let counts = moto.counts();
    report("first cycle, scale-out of 2 groups + 1 unknown", &counts);
    let linux = res[0].as_ref().unwrap();
    let arm = res[1].as_ref().unwrap();
    assert_eq!(linux.applied, Some(3));
    assert_eq!(
        arm.applied,
        Some(4),
        "ceil(3 / 2) = 2 instances of 2 workers"
    );
    let ghost = res[2].as_ref().unwrap_err();
    assert_eq!(ghost.kind, ErrorKind::NotFound);
    let msg = ghost.to_string();
    assert!(
        msg.contains("pool ghost") && msg.contains("vespene-ghost") && msg.contains("not found"),
        "{msg}"
    );
    assert_eq!(
        counts.get("DescribeAutoScalingGroups"),
        Some(&1),
        "one describe for all pools: {counts:?}"
    );
    assert_eq!(counts.get("SetDesiredCapacity"), Some(&2));
    assert_eq!(counts.get("CreateOrUpdateTags"), Some(&2));
    assert_eq!(counts.get("PutLifecycleHook"), Some(&2));
    assert_eq!(counts.get("DescribeLifecycleHooks"), Some(&2));
    assert_eq!(
        counts.get("CreateTags"),
        Some(&1),
        "only arm had an instance to tag"
    );
    assert_eq!(
        counts.get("UpdateAutoScalingGroup"),
        None,
        "OldestInstance already first"
    );
    // The SetDesiredCapacity requests carried the right arguments.
    let sets: Vec<(String, String)> = moto
        .log()
        .into_iter()
        .filter(|(a, _)| a == "SetDesiredCapacity")
        .map(|(_, p)| {
            (
                param(&p, "AutoScalingGroupName").unwrap().to_string(),
                param(&p, "DesiredCapacity").unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        sets.contains(&("vespene-linux".into(), "3".into())),
        "{sets:?}"
    );
    assert!(
        sets.contains(&("vespene-arm".into(), "2".into())),
        "{sets:?}"
    );

    // What moto now holds.
    for (name, pool_name, desired) in [("vespene-linux", "linux", 3), ("vespene-arm", "arm", 2)] {
        let g = group(&sdk, name).await;
        assert_eq!(g.desired, desired, "{name}");
        assert_eq!(g.instances.len(), desired as usize, "{name}");
        assert_eq!(g.policies[0], "OldestInstance", "{name}");
        assert_eq!(
            g.tags.get("vespene_worker"),
            Some(&("true".to_string(), true)),
            "{name}"
        );
        assert_eq!(
            g.tags.get("vespene_pool"),
            Some(&(pool_name.to_string(), true)),
            "{name}"
        );
        for id in &g.instances {
            let t = instance_tags(&sdk, id).await;
            assert_eq!(
                t.get("vespene_worker").map(String::as_str),
                Some("true"),
                "{name} {id}: {t:?}"
            );
            assert_eq!(
                t.get("vespene_pool").map(String::as_str),
                Some(pool_name),
                "{name} {id}: {t:?}"
            );
        }
        let hooks = aws_sdk_autoscaling::Client::new(&sdk)
            .describe_lifecycle_hooks()
            .auto_scaling_group_name(name)
            .send()
            .await
            .unwrap();
        let h = &hooks.lifecycle_hooks()[0];
        assert_eq!(h.lifecycle_hook_name(), Some("vespene-drain"));
        assert_eq!(
            h.lifecycle_transition(),
            Some("autoscaling:EC2_INSTANCE_TERMINATING")
        );
        assert_eq!(h.heartbeat_timeout(), Some(3600));
        assert_eq!(h.default_result(), Some("CONTINUE"));
    }
    assert!(group(&sdk, "vespene-arm")
        .await
        .instances
        .contains(&before_tags[0]));

    // Cycle 2, same plan: steady state makes no mutating call.
    moto.clear_log();
    let res = cycle(&exec, &pools, &dir, false).await;
    let counts = moto.counts();
    report("steady state", &counts);
    assert_eq!(mutating(&counts), 0, "{counts:?}");
    assert_eq!(
        counts.get("DescribeAutoScalingGroups"),
        Some(&1),
        "{counts:?}"
    );
    assert_eq!(counts.values().sum::<usize>(), 1, "{counts:?}");
    assert!(res[0].as_ref().unwrap().actions.is_empty());
    assert!(!res[0].as_ref().unwrap().revisit);

    // A dry run of a bigger plan says what it would do and changes nothing.
    pools[0].1 = 6;
    moto.clear_log();
    let res = cycle(&exec, &pools, &dir, true).await;
    let counts = moto.counts();
    report("dry run", &counts);
    assert_eq!(mutating(&counts), 0, "{counts:?}");
    let actions = &res[0].as_ref().unwrap().actions;
    assert_eq!(actions.len(), 1, "{actions:?}");
    assert!(
        actions[0].starts_with(
            "would SetDesiredCapacity AutoScalingGroupName=vespene-linux DesiredCapacity=6"
        ),
        "{actions:?}"
    );
    assert_eq!(group(&sdk, "vespene-linux").await.desired, 3);

    // Scale in: the executor names the instances (oldest idle first) and ends each with
    // TerminateInstanceInAutoScalingGroup(ShouldDecrementDesiredCapacity=true); it never lowers
    // the desired capacity to let AWS choose.
    let linux_before = group(&sdk, "vespene-linux").await.instances;
    let arm_before = group(&sdk, "vespene-arm").await.instances;
    pools[0].1 = 1;
    pools[1].1 = 0;
    moto.clear_log();
    let res = cycle(&exec, &pools, &dir, false).await;
    let counts = moto.counts();
    report("scale-in cycle", &counts);
    assert_eq!(counts.get("SetDesiredCapacity"), None, "{counts:?}");
    assert_eq!(
        counts.get("TerminateInstanceInAutoScalingGroup"),
        Some(&4),
        "{counts:?}"
    );
    assert_eq!(mutating(&counts), 4, "{counts:?}");
    let terminated: Vec<(String, String)> = moto
        .log()
        .into_iter()
        .filter(|(a, _)| a == "TerminateInstanceInAutoScalingGroup")
        .map(|(_, p)| {
            (
                param(&p, "InstanceId").unwrap().to_string(),
                param(&p, "ShouldDecrementDesiredCapacity")
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    assert!(
        terminated.iter().all(|(_, d)| d == "true"),
        "{terminated:?}"
    );
    let chosen: Vec<String> = res
        .iter()
        .take(2)
        .flat_map(|r| r.as_ref().unwrap().actions.clone())
        .filter_map(|a| {
            a.strip_prefix("TerminateInstanceInAutoScalingGroup InstanceId=")
                .map(|r| r.split(' ').next().unwrap().to_string())
        })
        .collect();
    let sent: Vec<String> = terminated.iter().map(|(i, _)| i.clone()).collect();
    assert_eq!(chosen, sent, "the calls are the ones reported");
    assert_eq!(group(&sdk, "vespene-linux").await.desired, 1);
    assert_eq!(group(&sdk, "vespene-arm").await.desired, 0);
    // Exactly the chosen instances left, and only they.
    let linux_after = group(&sdk, "vespene-linux").await.instances;
    assert_eq!(linux_after.len(), 1);
    let mut expect: Vec<String> = linux_before
        .iter()
        .filter(|i| !sent.contains(i))
        .cloned()
        .collect();
    assert_eq!(linux_after, expect);
    expect = arm_before
        .iter()
        .filter(|i| !sent.contains(i))
        .cloned()
        .collect();
    assert!(expect.is_empty(), "{expect:?}");
    assert!(
        res[0].as_ref().unwrap().revisit,
        "come back for the instances leaving through the hook"
    );

    // The revisit after scale-in: nothing waits in moto (no Terminating:Wait), nothing to do.
    moto.clear_log();
    let res = cycle(&exec, &pools, &dir, false).await;
    let counts = moto.counts();
    report("cycle after scale-in", &counts);
    assert_eq!(mutating(&counts), 0, "{counts:?}");
    assert_eq!(counts.values().sum::<usize>(), 1, "{counts:?}");
    assert!(!res[0].as_ref().unwrap().revisit);
    assert_eq!(group(&sdk, "vespene-linux").await.instances.len(), 1);
    assert_eq!(group(&sdk, "vespene-arm").await.instances.len(), 0);

    // status() reads the group in workers.
    let st = exec.status(&pools[1].0).await.unwrap().unwrap();
    assert_eq!(
        (st.target.as_str(), st.desired, st.current),
        ("vespene-arm", 0, 0)
    );
    let st = exec.status(&pools[0].0).await.unwrap().unwrap();
    assert_eq!((st.desired, st.current), (1, 1));
}

#[tokio::test]
async fn termination_policy_update_reaches_the_wire() {
    let moto = Moto::start();
    let sdk = sdk_config(&moto.url, 3).await;
    create_group(&sdk, "vespene-default", 0, &["Default"]).await;
    let exec = AwsAsgExecutor::from_sdk_config(Config::default(), &sdk).unwrap();
    let dir = FakeDirectory::default();
    let pools = vec![(pool(1, "default", "vespene-{{ worker_pool.name }}", 10), 0)];
    moto.clear_log();
    let res = cycle(&exec, &pools, &dir, false).await;
    let out = res[0].as_ref().unwrap();
    assert!(
        out.actions.iter().any(|a| a
            == "UpdateAutoScalingGroup AutoScalingGroupName=vespene-default TerminationPolicies=[OldestInstance,Default] (was [Default])"),
        "{:?}",
        out.actions
    );
    let log = moto.log();
    let (_, params) = log
        .iter()
        .find(|(a, _)| a == "UpdateAutoScalingGroup")
        .expect("UpdateAutoScalingGroup sent");
    assert_eq!(
        param(params, "AutoScalingGroupName"),
        Some("vespene-default")
    );
    assert_eq!(
        param(params, "TerminationPolicies.member.1"),
        Some("OldestInstance")
    );
    assert_eq!(
        param(params, "TerminationPolicies.member.2"),
        Some("Default")
    );
    // Only the policies change: sizes and the launch template are not sent.
    for k in [
        "MinSize",
        "MaxSize",
        "DesiredCapacity",
        "LaunchTemplate.LaunchTemplateName",
    ] {
        assert_eq!(param(params, k), None, "{k} must not be sent");
    }
    assert_eq!(
        moto.counts().get("SetDesiredCapacity"),
        None,
        "desired already 0"
    );
}

#[tokio::test]
async fn inventory_lists_groups_members_and_orphans_read_only() {
    use autoscaler_executor::InstanceState;
    let moto = Moto::start();
    let sdk = sdk_config(&moto.url, 3).await;
    create_group(&sdk, "vespene-linux", 0, &["OldestInstance"]).await;
    let exec = AwsAsgExecutor::from_sdk_config(Config::default(), &sdk).unwrap();
    let dir = FakeDirectory::default();
    let cmd = "vespene-{{ worker_pool.name }}";
    let pools = [
        (pool(1, "linux", cmd, 10), 2),
        (pool(2, "ghost", cmd, 10), 0),
    ];
    cycle(&exec, &pools[..1], &dir, false).await[0]
        .as_ref()
        .unwrap();

    // A worker launched by hand outside any group, and a machine that is no worker at all.
    let ec2 = ec2(&sdk);
    for tags in [
        &[
            ("vespene_worker", "true"),
            ("vespene_pool", "linux"),
            ("Name", "orphan"),
        ][..],
        &[("Name", "database")][..],
    ] {
        run_instances(&ec2, AMI, 1, tags).await;
    }

    // One member protected from scale-in (moto stores the flag): the inventory says so.
    let members = group(&sdk, "vespene-linux").await.instances;
    aws_sdk_autoscaling::Client::new(&sdk)
        .set_instance_protection()
        .auto_scaling_group_name("vespene-linux")
        .instance_ids(&members[0])
        .protected_from_scale_in(true)
        .send()
        .await
        .expect("SetInstanceProtection");

    moto.clear_log();
    let inv = exec.inventory().expect("aws-asg has an inventory");
    let refs: Vec<&WorkerPool> = pools.iter().map(|(p, _)| p).collect();
    let snap = inv.inventory(&refs).await.unwrap();
    let counts = moto.counts();
    report("audit inventory", &counts);
    assert_eq!(mutating(&counts), 0, "{counts:?}");
    assert_eq!(
        snap.api_calls as usize,
        counts.values().sum::<usize>(),
        "{counts:?}"
    );
    assert_eq!(
        snap.api_calls, 2,
        "one group describe, one tag-filtered instance list"
    );
    assert_eq!(snap.scope, vec!["region us-east-1".to_string()]);

    let g = snap.pools[0].group.as_ref().unwrap();
    assert_eq!(
        (g.target.as_str(), g.desired, g.min, g.max),
        ("vespene-linux", 2, Some(0), Some(10))
    );
    assert_eq!(g.members.len(), 2);
    assert_eq!(snap.pools[0].pool_tag, "linux");
    let e = snap.pools[1].group.as_ref().unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound);
    assert!(
        e.to_string()
            .contains("pool ghost: Auto Scaling group vespene-ghost not found"),
        "{e}"
    );

    assert_eq!(snap.instances.len(), 3, "{:?}", snap.instances);
    for id in &g.members {
        let i = snap.instances.iter().find(|i| &i.id == id).unwrap();
        assert_eq!(i.group.as_deref(), Some("vespene-linux"));
        assert_eq!(i.state, InstanceState::Running, "{i:?}");
        assert!(i.described);
        assert_eq!(
            i.tags.get("vespene_pool").map(String::as_str),
            Some("linux")
        );
        assert!(i.hostnames.contains(&i.id.to_lowercase()));
        assert!(
            i.hostnames.len() >= 3,
            "dns name, short name, ip, id: {:?}",
            i.hostnames
        );
        assert!(i.launched.is_some());
        assert_eq!(i.protected_from_scale_in, *id == members[0], "{i:?}");
    }
    let orphan = snap.instances.iter().find(|i| i.name == "orphan").unwrap();
    assert_eq!(orphan.group, None);
    assert_eq!(orphan.raw_state, "running");
    assert!(!snap.instances.iter().any(|i| i.name == "database"));
}

/// One cycle of one pool whose plan asks for `standby` workers besides `size`.
async fn cycle_standby(
    exec: &AwsAsgExecutor,
    p: &WorkerPool,
    size: u32,
    standby: u32,
    dir: &FakeDirectory,
    dry_run: bool,
) -> Result<Outcome, ExecutorError> {
    exec.prepare(&[p], dry_run).await.unwrap();
    exec.scale(ScaleRequest {
        pool: p,
        plan: Plan {
            size,
            queued_size: 0,
            standby,
        },
        dry_run,
        workers: dir,
    })
    .await
}

#[tokio::test]
async fn warm_pool_is_put_and_described_over_the_wire_and_a_second_cycle_makes_no_put() {
    use autoscaler_aws_asg::client::{AsgApi, SdkAsgApi, WarmPoolConfig};
    let moto = Moto::start();
    let sdk = sdk_config(&moto.url, 3).await;
    create_group(&sdk, "vespene-linux", 1, &["OldestInstance"]).await;
    let exec = AwsAsgExecutor::from_sdk_config(Config::default(), &sdk).unwrap();
    let api = SdkAsgApi::new(&sdk, std::time::Duration::from_secs(20));
    let dir = FakeDirectory::default();
    let p = pool(1, "linux", "vespene-{{ worker_pool.name }}", 10);

    // No warm pool yet: DescribeWarmPool answers with none.
    let none = api.describe_warm_pool("vespene-linux").await.unwrap();
    assert_eq!(none.config, None);
    assert!(none.instances.is_empty());

    // A dry run with standby says what it would do and sends nothing that changes anything.
    moto.clear_log();
    let out = cycle_standby(&exec, &p, 2, 3, &dir, true).await.unwrap();
    let counts = moto.counts();
    assert_eq!(mutating(&counts), 0, "{counts:?}");
    assert_eq!(counts.get("DescribeWarmPool"), Some(&1), "{counts:?}");
    assert!(
        out.actions.iter().any(|a| a.starts_with(
            "would PutWarmPool AutoScalingGroupName=vespene-linux MinSize=3 MaxGroupPreparedCapacity=3"
        )),
        "{:?}",
        out.actions
    );

    // Cycle 1: standby 3 workers = 3 instances: one PutWarmPool with all four settings.
    moto.clear_log();
    cycle_standby(&exec, &p, 2, 3, &dir, false).await.unwrap();
    let counts = moto.counts();
    report("warm pool, first cycle", &counts);
    assert_eq!(counts.get("PutWarmPool"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("DescribeWarmPool"), Some(&1), "{counts:?}");
    let put: Vec<Vec<(String, String)>> = moto
        .log()
        .into_iter()
        .filter(|(a, _)| a == "PutWarmPool")
        .map(|(_, p)| p)
        .collect();
    let put = &put[0];
    assert_eq!(param(put, "AutoScalingGroupName"), Some("vespene-linux"));
    assert_eq!(param(put, "MinSize"), Some("3"));
    assert_eq!(param(put, "MaxGroupPreparedCapacity"), Some("3"));
    assert_eq!(param(put, "PoolState"), Some("Stopped"));
    assert_eq!(
        param(put, "InstanceReusePolicy.ReuseOnScaleIn"),
        Some("true")
    );
    // Read back through the crate's own DescribeWarmPool: moto kept every setting.
    let want = WarmPoolConfig {
        min_size: 3,
        max_group_prepared_capacity: Some(3),
        pool_state: "Stopped".into(),
        reuse_on_scale_in: true,
        status: None,
    };
    let read = api.describe_warm_pool("vespene-linux").await.unwrap();
    assert_eq!(read.config.as_ref(), Some(&want));
    // The group is marked as keeping the executor's warm pool (not propagated).
    let g = group(&sdk, "vespene-linux").await;
    assert_eq!(
        g.tags.get("vespene_warm_pool"),
        Some(&("managed".to_string(), false))
    );
    assert_eq!(g.desired, 2);
    // DescribeAutoScalingGroups carries it too: what tells the executor a group has a warm
    // pool, so a group without one costs no DescribeWarmPool.
    let described = api
        .describe_groups(&["vespene-linux".into()])
        .await
        .unwrap();
    assert_eq!(described[0].warm_pool.as_ref(), Some(&want));

    // Cycle 2, same plan: the warm pool already matches, so no PutWarmPool (nor any other
    // change): the group and its warm pool read, nothing written.
    moto.clear_log();
    cycle_standby(&exec, &p, 2, 3, &dir, false).await.unwrap();
    let counts = moto.counts();
    report("warm pool, steady state", &counts);
    assert_eq!(counts.get("PutWarmPool"), None, "{counts:?}");
    assert_eq!(mutating(&counts), 0, "{counts:?}");

    // The plan drops its standby: the executor's own warm pool is brought to MinSize 0.
    moto.clear_log();
    cycle_standby(&exec, &p, 2, 0, &dir, false).await.unwrap();
    let counts = moto.counts();
    assert_eq!(counts.get("PutWarmPool"), Some(&1), "{counts:?}");
    let read = api.describe_warm_pool("vespene-linux").await.unwrap();
    assert_eq!(
        read.config,
        Some(WarmPoolConfig {
            min_size: 0,
            max_group_prepared_capacity: Some(0),
            reuse_on_scale_in: false,
            ..want
        })
    );
}
