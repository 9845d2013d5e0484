//! What AWS did after it answered (issue 13), against the in-memory group of `fake/` (moto has
//! no scaling activities and no `DesiredCapacityType`): launches that fail after
//! `SetDesiredCapacity` succeeded, groups that count capacity in something other than
//! instances, and what the audit's inventory says about both and about protected instances;
//! then the same on the wire, against moto, as far as moto models it.

mod common;
mod fake;
mod harness;

use autoscaler_aws_asg::client::AsgApi;
use autoscaler_aws_asg::{AwsAsgExecutor, Config};
use autoscaler_executor::{ErrorKind, Executor, WorkerPool};
use chrono::DateTime;
use common::*;
use fake::FakeAsg;
use harness::*;

const STOCKOUT: &str = "Could not launch On-Demand Instances. InsufficientInstanceCapacity - We \
    currently do not have sufficient t3.micro capacity in the Availability Zone you requested \
    (us-east-1a). Our system will be working on provisioning additional capacity. Launching EC2 \
    instance failed.";
const QUOTA: &str = "Could not launch On-Demand Instances. VcpuLimitExceeded - You have requested \
    more vCPU capacity than your current vCPU limit of 2 allows for the instance bucket that the \
    specified instance type belongs to. Launching EC2 instance failed.";
const OLD: &str = "Could not launch On-Demand Instances. InvalidParameterValue - Value (gone) for \
    parameter iamInstanceProfile.name is invalid. Launching EC2 instance failed.";

fn activity_reads(calls: &[String]) -> usize {
    calls
        .iter()
        .filter(|c| c.starts_with("DescribeScalingActivities"))
        .count()
}

/// Bullet 1: an accepted size is not launched machines. While the group stays below its
/// desired capacity, its failed scaling activities since the last raise fail the pool with
/// status 13 and AWS's code; at its desired capacity nothing more is read.
#[tokio::test(flavor = "current_thread")]
async fn failed_launches_fail_the_pool_with_the_clouds_reason() {
    let f = FakeAsg::with_group(G, 0, 10, 1);
    f.put_default_hook(G);
    f.set_now(DateTime::from_timestamp(1_700_000_000, 0).unwrap());
    // An earlier episode: a launch that failed an hour before, given up by lowering the size.
    f.add_activity(
        G,
        "Failed",
        "Launching a new EC2 instance.  Status Reason: …",
        OLD,
    );
    let (exec, fake, clock) = setup(Config::default(), f);
    let tick = |secs| {
        clock.advance(secs);
        fake.advance(secs);
    };
    tick(3600);
    let dir = FakeDirectory::default();
    let p = linux(10);

    // At its desired capacity: no activity is read. The raise to 3 is accepted, and AWS has
    // not started the launches yet.
    fake.stall_launches(G);
    run(&exec, &p, 3, &dir, false).await.unwrap();
    let calls = fake.take_calls();
    assert!(
        calls.contains(&"SetDesiredCapacity vespene-linux 3".to_string()),
        "{calls:?}"
    );
    assert_eq!(activity_reads(&calls), 0, "{calls:?}");

    // Below desired, nothing failed since the raise: the old failure is not today's.
    tick(20);
    run(&exec, &p, 3, &dir, false).await.unwrap();
    let calls = fake.take_calls();
    assert_eq!(
        calls
            .iter()
            .filter(|c| c.starts_with("DescribeScalingActivities"))
            .collect::<Vec<_>>(),
        vec!["DescribeScalingActivities vespene-linux 50"]
    );

    // AWS starts the launches and they fail: a stockout.
    fake.heal_launches(G);
    fake.fail_launches(G, STOCKOUT);
    fake.retry_launches(G);
    tick(20);
    let err = run(&exec, &p, 3, &dir, false).await.unwrap_err();
    println!(
        "operator sees (stockout): status {} {err}",
        err.status_code()
    );
    assert_eq!(err.kind, ErrorKind::LaunchFailed);
    assert_eq!(err.status_code(), 13);
    assert_eq!(err.reason.as_deref(), Some("InsufficientInstanceCapacity"));
    let msg = err.to_string();
    assert!(
        msg.starts_with(
            "pool linux: Auto Scaling group vespene-linux: 2 of 3 desired instances not \
             launched: DescribeScalingActivities reports 2 failed launches since \
             2023-11-14 23:13:40 UTC; newest: InsufficientInstanceCapacity: Could not launch \
             On-Demand Instances. InsufficientInstanceCapacity - We currently do not have \
             sufficient t3.micro capacity"
        ),
        "{msg}"
    );
    assert!(!msg.contains("InvalidParameterValue"), "{msg}");
    assert_eq!(fake.group(G).desired_capacity, 3, "the size is kept");

    // AWS retries and now hits a quota: the newest reason leads, the others are counted.
    fake.fail_launches(G, QUOTA);
    tick(60);
    fake.retry_launches(G);
    tick(20);
    let err = run(&exec, &p, 3, &dir, false).await.unwrap_err();
    println!("operator sees (quota): status {} {err}", err.status_code());
    assert_eq!(err.reason.as_deref(), Some("VcpuLimitExceeded"));
    assert!(
        err.message
            .contains("reports 4 failed launches since 2023-11-14 23:13:40 UTC; newest: VcpuLimitExceeded: Could not launch On-Demand Instances. VcpuLimitExceeded - You have requested more vCPU capacity than your current vCPU limit of 2"),
        "{}",
        err.message
    );
    assert!(
        err.message
            .ends_with("; also InsufficientInstanceCapacity (2)"),
        "{}",
        err.message
    );

    // A plan that no longer needs the missing instances takes them back and fails nothing.
    tick(20);
    fake.take_calls();
    let out = run(&exec, &p, 1, &dir, false).await.unwrap();
    assert!(
        out.actions.iter().any(|a| a
            .contains("DesiredCapacity=1 HonorCooldown=false (was 3; instances not launched yet")),
        "{:?}",
        out.actions
    );
    assert_eq!(activity_reads(&fake.take_calls()), 0);

    // Capacity comes back: the group reaches its size, and a steady cycle reads no activity.
    run(&exec, &p, 3, &dir, false).await.unwrap();
    fake.heal_launches(G);
    fake.retry_launches(G);
    tick(20);
    fake.take_calls();
    run(&exec, &p, 3, &dir, false).await.unwrap();
    assert_eq!(
        fake.take_calls(),
        vec!["DescribeAutoScalingGroups vespene-linux"],
        "steady state: one describe, no activity read"
    );
}

/// A failed read of the activities is the pool's error, naming the call; nothing else stops.
#[tokio::test(flavor = "current_thread")]
async fn a_refused_activity_read_names_the_call() {
    let f = FakeAsg::with_group(G, 0, 10, 1);
    f.put_default_hook(G);
    f.fail_launches(G, STOCKOUT);
    let (exec, fake, _) = setup(Config::default(), f);
    let dir = FakeDirectory::default();
    run(&exec, &linux(10), 2, &dir, false).await.unwrap();
    fake.fail_next(
        "DescribeScalingActivities",
        autoscaler_aws_asg::ApiError::service(
            "AccessDenied",
            "User: arn:aws:iam::123456789012:user/ci is not authorized to perform: \
             autoscaling:DescribeScalingActivities",
            403,
        ),
    );
    let err = run(&exec, &linux(10), 2, &dir, false).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::PermissionDenied, "{err}");
    assert!(
        err.message
            .contains("autoscaling:DescribeScalingActivities"),
        "{err}"
    );
}

/// Bullet 2: a group that counts its desired capacity in vCPUs, MiB or weight units is refused
/// with status 2 naming the setting, and nothing is sized; an instance already waiting on the
/// hook is still drained. Weights that are all 1 count instances and are driven as usual.
#[tokio::test(flavor = "current_thread")]
async fn groups_counting_vcpus_or_weights_are_refused_naming_the_setting() {
    let dir = FakeDirectory::default();
    for (capacity_type, weight, unit, setting) in [
        (
            Some("vcpu"),
            None,
            4,
            "DesiredCapacityType is vcpu: the group counts its desired capacity in vCPUs",
        ),
        (
            Some("memory-mib"),
            None,
            16384,
            "DesiredCapacityType is memory-mib: the group counts its desired capacity in MiB of memory",
        ),
        (
            None,
            Some("2"),
            2,
            "the mixed instances policy weighs instance types (WeightedCapacity m5.xlarge=2)",
        ),
    ] {
        let f = FakeAsg::with_group(G, 0, 100_000, 0);
        f.put_default_hook(G);
        f.count_in_units(G, capacity_type, weight, unit);
        // Two instances make up a desired capacity of two units' worth each.
        f.set_desired_capacity(G, 2 * unit).await.unwrap();
        assert_eq!(f.group(G).instances.len(), 2);
        f.set_state(G, "i-1", "Terminating:Wait");
        let (exec, fake, _) = setup(Config::default(), f);
        fake.take_calls();
        let p = linux(10);
        let err = run(&exec, &p, 3, &dir, false).await.unwrap_err();
        println!("operator sees: status {} {err}", err.status_code());
        assert_eq!(err.kind, ErrorKind::Config, "{err}");
        assert_eq!(err.status_code(), 2);
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!("pool linux: Auto Scaling group vespene-linux: {setting}")),
            "{msg}"
        );
        assert!(
            msg.contains("the executor sizes groups in instances"),
            "{msg}"
        );
        let calls = fake.take_calls();
        let changes: Vec<&String> = calls
            .iter()
            .filter(|c| !c.starts_with("Describe"))
            .collect();
        assert_eq!(
            changes,
            vec!["CompleteLifecycleAction vespene-linux vespene-drain i-1 CONTINUE"],
            "only the drain: {calls:?}"
        );
        let st = exec.status(&p).await.unwrap_err();
        assert_eq!(st.kind, ErrorKind::Config);
    }

    // Every weight 1: one instance is one unit, so instances are counted right.
    let f = FakeAsg::with_group(G, 0, 10, 0);
    f.count_in_units(G, Some("units"), Some("1"), 1);
    let (exec, fake, _) = setup(Config::default(), f);
    let out = run(&exec, &linux(10), 3, &dir, false).await.unwrap();
    assert_eq!(out.applied, Some(3));
    assert_eq!(fake.group(G).instances.len(), 3);
}

/// Bullets 1 to 3 in the audit's inventory: a group below its desired capacity carries its
/// failing launches (one activity read, only for it), a group counting vCPUs is a failed part
/// naming the setting, and protected members say so.
#[tokio::test(flavor = "current_thread")]
async fn the_inventory_reports_failing_launches_refusals_and_protection() {
    let f = FakeAsg::with_group(G, 0, 10, 2);
    f.add_group("vespene-arm", 0, 10, 1);
    f.add_group("vespene-gpu", 0, 100, 1);
    f.count_in_units("vespene-gpu", Some("vcpu"), None, 8);
    f.set_protected("vespene-arm", "i-3", true);
    f.fail_launches(G, STOCKOUT);
    f.set_desired_capacity(G, 4).await.unwrap();
    let fake = std::sync::Arc::new(f);
    let exec = AwsAsgExecutor::with_client(Config::default(), fake.clone()).unwrap();
    let pools = [
        pool(1, "linux", CMD, 10),
        pool(2, "arm", CMD, 10),
        pool(3, "gpu", CMD, 10),
    ];
    let refs: Vec<&WorkerPool> = pools.iter().collect();
    fake.take_calls();
    let snap = exec.inventory().unwrap().inventory(&refs).await.unwrap();
    let calls = fake.take_calls();
    assert_eq!(
        calls
            .iter()
            .filter(|c| c.starts_with("DescribeScalingActivities"))
            .collect::<Vec<_>>(),
        vec!["DescribeScalingActivities vespene-linux 50"],
        "only the group below its desired capacity: {calls:?}"
    );
    assert_eq!(snap.api_calls as usize, calls.len(), "{calls:?}");

    let linux = snap.pools[0].group.as_ref().unwrap();
    assert_eq!(
        linux.launch_failures.len(),
        2,
        "{:?}",
        linux.launch_failures
    );
    assert!(linux
        .launch_failures
        .iter()
        .all(|l| l.reason == "InsufficientInstanceCapacity" && l.message == STOCKOUT));
    let arm = snap.pools[1].group.as_ref().unwrap();
    assert!(arm.launch_failures.is_empty());
    let gpu = snap.pools[2].group.as_ref().unwrap_err();
    assert_eq!(gpu.kind, ErrorKind::Config);
    assert!(
        gpu.to_string().contains("DesiredCapacityType is vcpu"),
        "{gpu}"
    );

    let protected: Vec<&str> = snap
        .instances
        .iter()
        .filter(|i| i.protected_from_scale_in)
        .map(|i| i.id.as_str())
        .collect();
    assert_eq!(protected, vec!["i-3"]);
}

/// Issue 13 on the wire: moto stores a mixed instances policy with `WeightedCapacity`, the real
/// SDK client decodes it, and the executor refuses the group (status 2) without a mutating
/// call. moto answers `DescribeScalingActivities` with an empty list (it keeps no activities):
/// the real call is sent with the group and `MaxRecords`, and decodes that answer.
#[tokio::test]
async fn weighted_groups_are_refused_and_scaling_activities_decode() {
    let moto = Moto::start();
    let sdk = sdk_config(&moto.url, 3).await;
    // One of moto's built-in images.
    create_launch_template(&ec2(&sdk), "lt-weighted", "ami-03cf127a", Some("t3.micro")).await;
    use aws_sdk_autoscaling::types::{
        LaunchTemplate, LaunchTemplateOverrides, LaunchTemplateSpecification, MixedInstancesPolicy,
    };
    let weight = |t: &str, w: &str| {
        LaunchTemplateOverrides::builder()
            .instance_type(t)
            .weighted_capacity(w)
            .build()
    };
    aws_sdk_autoscaling::Client::new(&sdk)
        .create_auto_scaling_group()
        .auto_scaling_group_name("vespene-weighted")
        .mixed_instances_policy(
            MixedInstancesPolicy::builder()
                .launch_template(
                    LaunchTemplate::builder()
                        .launch_template_specification(
                            LaunchTemplateSpecification::builder()
                                .launch_template_name("lt-weighted")
                                .version("$Latest")
                                .build(),
                        )
                        .overrides(weight("t3.micro", "2"))
                        .overrides(weight("t3.small", "4"))
                        .build(),
                )
                .build(),
        )
        .min_size(0)
        .max_size(20)
        .desired_capacity(0)
        .availability_zones("us-east-1a")
        .termination_policies("OldestInstance")
        .send()
        .await
        .expect("CreateAutoScalingGroup");
    aws_sdk_autoscaling::Client::new(&sdk)
        .create_auto_scaling_group()
        .auto_scaling_group_name("vespene-plain")
        .launch_template(
            LaunchTemplateSpecification::builder()
                .launch_template_name("lt-weighted")
                .version("$Latest")
                .build(),
        )
        .min_size(0)
        .max_size(20)
        .desired_capacity(0)
        .availability_zones("us-east-1a")
        .send()
        .await
        .expect("CreateAutoScalingGroup");

    let api = autoscaler_aws_asg::SdkAsgApi::new(&sdk, std::time::Duration::from_secs(10));
    let groups = api
        .describe_groups(&["vespene-weighted".into(), "vespene-plain".into()])
        .await
        .unwrap();
    let weighted = groups
        .iter()
        .find(|g| g.name == "vespene-weighted")
        .unwrap();
    assert_eq!(
        weighted.instance_weights,
        vec![
            ("t3.micro".to_string(), "2".to_string()),
            ("t3.small".to_string(), "4".to_string())
        ]
    );
    let plain = groups.iter().find(|g| g.name == "vespene-plain").unwrap();
    assert!(plain.instance_weights.is_empty());
    assert_eq!(
        plain.desired_capacity_type, None,
        "moto leaves DesiredCapacityType out, which means units"
    );

    let exec = AwsAsgExecutor::from_sdk_config(Config::default(), &sdk).unwrap();
    let dir = FakeDirectory::default();
    moto.clear_log();
    let err = run(&exec, &pool(1, "weighted", CMD, 10), 3, &dir, false)
        .await
        .unwrap_err();
    println!("operator sees: status {} {err}", err.status_code());
    assert_eq!(err.kind, ErrorKind::Config);
    assert!(
        err.to_string().starts_with(
            "pool weighted: Auto Scaling group vespene-weighted: the mixed instances policy \
             weighs instance types (WeightedCapacity t3.micro=2, t3.small=4)"
        ),
        "{err}"
    );
    let counts = moto.counts();
    assert!(
        counts.keys().all(|a| !MUTATING.contains(&a.as_str())),
        "{counts:?}"
    );

    moto.clear_log();
    let activities = api
        .describe_scaling_activities("vespene-plain", 50)
        .await
        .expect("moto's DescribeScalingActivities answer decodes");
    assert!(activities.is_empty(), "{activities:?}");
    let log = moto.log();
    let (_, params) = log
        .iter()
        .find(|(a, _)| a == "DescribeScalingActivities")
        .expect("DescribeScalingActivities sent");
    assert_eq!(param(params, "AutoScalingGroupName"), Some("vespene-plain"));
    assert_eq!(param(params, "MaxRecords"), Some("50"));
    assert_eq!(log.len(), 1, "one page: {log:?}");
}
