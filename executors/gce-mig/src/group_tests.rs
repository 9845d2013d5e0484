//! What the cloud really does after it said yes (issue 13), against the Compute double: a
//! launch a quota or a stockout holds, a regional group that rebalances its zones by itself,
//! an attached GCE autoscaler, and standby VMs. Each test says how the code before failed it.

use crate::candidates::{ACK_DONE, ACK_KEY, DRAIN_KEY, DRAIN_REQUESTED};
use crate::tests::{executor, pool, posts, run, ts, Dir, GOOD_LABELS, REGIONAL, ZONAL};
use autoscaler_executor::ErrorKind;
use autoscaler_gce_double::{ComputeDouble, InstanceSpec};
use std::sync::{Arc, Mutex};

const QUOTA: &str = "Quota 'CPUS' exceeded.  Limit: 8.0 in region us-central1.";
const STOCKOUT: &str = "The zone 'projects/proj-1/zones/us-central1-a' does not have enough \
resources available to fulfill the request.  Try a different zone, or try again later.";

/// Failed launches: the resize is DONE once the creations are scheduled, and the quota shows
/// only as members stuck in CREATING with `lastAttempt` errors (and in `listErrors`). Within
/// `launch_failure_after_seconds` that is no failure; past it the pool fails with status 13
/// and the cloud's code and words, still carrying out its plan; once the cause is gone the
/// pool succeeds and the steady state is one request again. The code before reported every
/// cycle as a success.
#[tokio::test]
async fn a_launch_the_cloud_cannot_do_fails_the_pool_with_its_reason() {
    let (_, d) = ComputeDouble::start();
    d.add_group(ZONAL, GOOD_LABELS);
    d.fail_launches(ZONAL, "QUOTA_EXCEEDED", QUOTA, 2);
    d.set_page_size(500); // one page per list, to count requests
    let e = executor(&d, |_| {}).await;
    let p = pool("linux", ZONAL, 10);

    let out = run(&e, &p, 4, &Dir::default(), false).await.unwrap();
    assert_eq!(out.applied, Some(4), "Compute accepted the resize");
    assert_eq!(d.target_size(ZONAL), Some(4));

    // Two are stuck; they have been failing for less than 300 s: not a failure yet, and the
    // members are read only because the group says it is creating.
    d.clear_requests();
    run(&e, &p, 4, &Dir::default(), false).await.unwrap();
    assert_eq!(d.count("POST", "/listManagedInstances"), 1);
    assert_eq!(d.count("GET", "/listErrors"), 1);
    assert_eq!(posts(&d.requests()).len(), 1, "nothing is changed");

    // Past the limit (here 0 s): status 13, the cloud's reason, its message, the instance.
    let strict = executor(&d, |c| c.launch_failure_after_seconds = 0).await;
    let err = run(&strict, &p, 4, &Dir::default(), false)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::LaunchFailed);
    assert_eq!(err.status_code(), 13);
    assert_eq!(err.reason.as_deref(), Some("QUOTA_EXCEEDED"));
    for want in [
        QUOTA,
        ZONAL,
        "2 of 4 instance(s)",
        "launch_failure_after_seconds 0",
    ] {
        assert!(err.message.contains(want), "{want}: {}", err.message);
    }

    // The plan is still carried out (the new creations wait on the same quota), then reported.
    let err = run(&strict, &p, 6, &Dir::default(), false)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::LaunchFailed);
    assert_eq!(d.target_size(ZONAL), Some(6));
    assert!(err.message.contains("4 of 6"), "{}", err.message);

    // The quota is raised: the group's retry creates them, and the pool is fine again.
    d.clear_launch_failures(ZONAL);
    run(&strict, &p, 6, &Dir::default(), false).await.unwrap();
    d.clear_requests();
    run(&strict, &p, 6, &Dir::default(), false).await.unwrap();
    assert_eq!(d.requests().len(), 1, "{:?}", d.requests());
}

/// A process that has just started (every `--force` run) dates a failing launch by the
/// group's `listErrors`, not by when it first saw it; a scale-in is no failure: it removes the
/// stuck member first.
#[tokio::test]
async fn a_fresh_process_dates_a_failing_launch_by_list_errors() {
    let (_, d) = ComputeDouble::start();
    d.add_group(ZONAL, GOOD_LABELS);
    d.add_instance(ZONAL, InstanceSpec::new("linux-ok01", &ts(1)));
    d.add_instance(
        ZONAL,
        InstanceSpec::new("linux-st01", &ts(2)).failing(
            "ZONE_RESOURCE_POOL_EXHAUSTED",
            STOCKOUT,
            &ts(2),
        ),
    );
    let e = executor(&d, |_| {}).await; // the default limit, 300 s
    let p = pool("linux", ZONAL, 10);
    let err = run(&e, &p, 2, &Dir::default(), false).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::LaunchFailed);
    assert_eq!(err.reason.as_deref(), Some("ZONE_RESOURCE_POOL_EXHAUSTED"));
    assert!(
        err.message.contains("instance linux-st01") && err.message.contains(STOCKOUT),
        "{}",
        err.message
    );

    let out = run(&e, &p, 1, &Dir::default(), false).await.unwrap();
    assert!(out.actions[0].contains("[linux-st01]"), "{:?}", out.actions);
    assert_eq!(d.instance_names(ZONAL), vec!["linux-ok01"]);
}

/// A regional group with proactive instance redistribution (the API's default when the field
/// is unset) deletes instances of its own choice to even out its zones. Scale-in is refused
/// with status 2 naming the setting, before anything is deleted; scale-out goes ahead; with
/// `NONE` the same scale-in runs and the busy instance stays. The code before deleted the
/// three oldest idle instances, after which the group deleted the busy one to rebalance.
#[tokio::test]
async fn a_regional_group_that_rebalances_is_never_scaled_in() {
    let (_, d) = ComputeDouble::start();
    d.add_group(REGIONAL, GOOD_LABELS);
    d.set_zones(REGIONAL, &["us-east1-b", "us-east1-c", "us-east1-d"]);
    for (i, name) in ["b1", "c1", "d1", "b2", "c2", "d2"].iter().enumerate() {
        let zone = format!("us-east1-{}", &name[..1]);
        d.add_instance(
            REGIONAL,
            InstanceSpec::new(&format!("linux-r-{name}"), &ts(i as u32)).zone(&zone),
        );
    }
    let deleted = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = deleted.clone();
    d.on_delete(move |i| seen.lock().unwrap().push(i.name.clone()));
    let e = executor(&d, |_| {}).await;
    let p = pool("linux", REGIONAL, 10);
    let busy = Dir::busy(&["linux-r-c1"]);

    let err = run(&e, &p, 3, &busy, false).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Config);
    for want in [
        "instanceRedistributionType",
        "PROACTIVE",
        "NONE",
        "targetShape EVEN",
        REGIONAL,
    ] {
        assert!(err.message.contains(want), "{want}: {}", err.message);
    }
    assert!(deleted.lock().unwrap().is_empty());
    assert_eq!(d.count("POST", "/deleteInstances"), 0);
    assert_eq!(d.count("POST", "/setMetadata"), 0);
    assert_eq!(d.target_size(REGIONAL), Some(6));

    // Scale-out only adds instances: it goes ahead.
    run(&e, &p, 7, &busy, false).await.unwrap();
    assert_eq!(d.target_size(REGIONAL), Some(7));

    // Redistribution off (the EVEN shape kept): the group no longer picks victims.
    d.set_redistribution(REGIONAL, Some("NONE"));
    run(&e, &p, 3, &busy, false).await.unwrap();
    assert_eq!(d.target_size(REGIONAL), Some(3));
    assert!(!deleted.lock().unwrap().contains(&"linux-r-c1".to_string()));
    assert!(d
        .instance_names(REGIONAL)
        .contains(&"linux-r-c1".to_string()));
}

/// A GCE autoscaler attached to the group owns its size: a resize answers 412 and deleted
/// instances are refilled. Every plan fails with status 2 naming the autoscaler, and nothing
/// is sent. The code before failed a scale-out with status 10 (the 412) and "scaled in" by
/// deleting idle instances that the autoscaler then replaced.
#[tokio::test]
async fn a_group_with_a_gce_autoscaler_is_refused_naming_it() {
    let (_, d) = ComputeDouble::start();
    d.add_group(ZONAL, GOOD_LABELS);
    for i in 0..3 {
        d.add_instance(ZONAL, InstanceSpec::new(&format!("linux-a{i:03}"), &ts(i)));
    }
    d.attach_autoscaler(ZONAL, "linux-as");
    let e = executor(&d, |_| {}).await;
    let p = pool("linux", ZONAL, 10);
    for size in [5, 1, 3] {
        let err = run(&e, &p, size, &Dir::default(), false).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Config, "size {size}");
        for want in [
            "projects/proj-1/zones/us-central1-a/autoscalers/linux-as",
            "status.autoscaler",
            "stop-autoscaling linux --zone us-central1-a",
        ] {
            assert!(err.message.contains(want), "{want}: {}", err.message);
        }
    }
    assert!(posts(&d.requests()).is_empty(), "{:?}", d.requests());
    assert_eq!(d.instance_names(ZONAL).len(), 3);
}

/// A standby VM (stopped or suspended, outside the group's running target size) that was
/// asked to drain before it went to standby is not a leaver: the oldest idle running
/// instance goes instead, and the standby VM's acknowledgement is not even read. The code
/// before deleted the acknowledged suspended VM (which does not lower the target size, so the
/// pool stayed too big), and let the stopped one, which can never answer, hold the pool.
#[tokio::test]
async fn a_standby_vm_asked_to_drain_before_standby_never_leaves() {
    let agent: &[(&str, &str)] = &[
        ("vespene_worker", "true"),
        ("vespene_pool", "linux"),
        ("vespene_drain_agent", "v1"),
    ];
    for (status, acknowledged) in [("SUSPENDED", true), ("TERMINATED", false)] {
        let (_, d) = ComputeDouble::start();
        d.add_group(ZONAL, GOOD_LABELS);
        d.add_instance(
            ZONAL,
            InstanceSpec::new("linux-sb01", &ts(0))
                .status(status)
                .labels(agent)
                .metadata(DRAIN_KEY, DRAIN_REQUESTED),
        );
        if acknowledged {
            assert!(d.set_guest_attribute(ZONAL, "linux-sb01", ACK_KEY, ACK_DONE));
        }
        d.add_instance(ZONAL, InstanceSpec::new("linux-r001", &ts(1)));
        d.add_instance(ZONAL, InstanceSpec::new("linux-r002", &ts(2)));
        assert_eq!(
            d.target_size(ZONAL),
            Some(2),
            "standby is outside targetSize"
        );
        let e = executor(&d, |_| {}).await;

        let out = run(&e, &pool("linux", ZONAL, 10), 1, &Dir::default(), false)
            .await
            .unwrap();
        assert!(
            out.actions[0].contains("[linux-r001]"),
            "{status}: {:?}",
            out.actions
        );
        assert!(!out.revisit, "{status}");
        assert_eq!(d.target_size(ZONAL), Some(1));
        assert_eq!(d.instance_names(ZONAL), vec!["linux-sb01", "linux-r002"]);
        assert_eq!(d.count("GET", "/getGuestAttributes"), 0, "{status}");
    }
}

/// A group path that moves with the plan (`…-{{ size }}`) is refused before any call, naming
/// the pool and the setting: `status` and the audit look a group up with no plan, so such a
/// template would scale one group and report on another. The code before accepted it and
/// resized `linux-3` while `status` read `linux-0`.
#[tokio::test]
async fn a_group_path_that_moves_with_the_plan_is_refused_before_any_call() {
    let (_, d) = ComputeDouble::start();
    d.add_group(ZONAL, GOOD_LABELS);
    let e = executor(&d, |_| {}).await;
    let p = pool("linux", &format!("{ZONAL}-{{{{ size }}}}"), 10);
    let plan = autoscaler_executor::Plan {
        size: 3,
        queued_size: 3,
        standby: 0,
    };
    use autoscaler_executor::Executor;
    let err = e.validate(&p, plan).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Config);
    let text = err.to_string();
    assert!(
        text.starts_with("pool linux: executor_command names the managed instance group and must not depend on size"),
        "{text}"
    );
    assert!(text.contains("linux-3\" for this plan"), "{text}");
    let cfg = crate::tests::test_config(&d);
    let same = crate::validate_pool(&cfg, &p, plan).unwrap_err();
    assert_eq!(same.to_string(), text);
    assert!(d.requests().is_empty(), "{:?}", d.requests());
}
