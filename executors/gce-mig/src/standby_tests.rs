//! Standby pools (issue 14) against the Compute double through the real client: leavers
//! suspended or stopped up to the pool's standby target and deleted beyond it, scale-out that
//! resumes before it resizes, the standby sizes Compute keeps, and what never happens (a busy
//! worker suspended, a wanted standby instance deleted).

use crate::candidates::{ACK_DONE, ACK_KEY, DRAIN_KEY};
use crate::tests::{executor, pool, posts, ts, Dir, GOOD_LABELS, REGIONAL, ZONAL};
use crate::{GceMigExecutor, StandbyAction};
use autoscaler_executor::{Executor, ExecutorError, Outcome, Plan, ScaleRequest, WorkerPool};
use autoscaler_gce_double::{ComputeDouble, InstanceSpec};

async fn run(
    e: &GceMigExecutor,
    p: &WorkerPool,
    size: u32,
    standby: u32,
    dir: &Dir,
    dry_run: bool,
) -> Result<Outcome, ExecutorError> {
    e.scale(ScaleRequest {
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

/// The POSTs to the group's methods, by method name, in order.
fn group_posts(d: &ComputeDouble) -> Vec<String> {
    posts(&d.requests())
        .iter()
        .filter(|r| r.path.contains("/instanceGroupManagers/"))
        .filter_map(|r| r.path.rsplit('/').next().map(str::to_string))
        .filter(|m| m != "listManagedInstances")
        .collect()
}

fn body_of(d: &ComputeDouble, method: &str) -> Vec<String> {
    posts(&d.requests())
        .iter()
        .filter(|r| r.path.ends_with(&format!("/{method}")))
        .map(|r| r.body.clone())
        .collect()
}

fn two_running(d: &ComputeDouble) {
    d.add_group(ZONAL, GOOD_LABELS);
    d.add_instance(ZONAL, InstanceSpec::new("linux-old1", &ts(1)));
    d.add_instance(ZONAL, InstanceSpec::new("linux-new2", &ts(2)));
}

/// Standby target 1, two idle leavers: the oldest is suspended (one `suspendInstances`,
/// waited for through its operation's polls), the other deleted; Compute's sizes move as the
/// API says (targetSize −2 in all, targetSuspendedSize +1) and the instance ends SUSPENDED.
#[tokio::test]
async fn target_one_two_idle_leavers_one_suspended_one_deleted() {
    let (_, d) = ComputeDouble::start();
    two_running(&d);
    d.set_operation_polls(3);
    let e = executor(&d, |_| {}).await;
    let p = pool("linux", ZONAL, 10);

    let out = run(&e, &p, 0, 1, &Dir::default(), false).await.unwrap();
    assert_eq!(
        group_posts(&d),
        vec!["deleteInstances", "suspendInstances"],
        "{:?}",
        out.actions
    );
    let suspend = body_of(&d, "suspendInstances");
    assert!(suspend[0].contains("linux-old1") && !suspend[0].contains("linux-new2"));
    assert!(body_of(&d, "deleteInstances")[0].contains("linux-new2"));
    assert_eq!(d.target_size(ZONAL), Some(0));
    assert_eq!(d.standby_sizes(ZONAL), Some((1, 0)));
    assert_eq!(
        d.instance_status(ZONAL, "linux-old1").as_deref(),
        Some("SUSPENDED")
    );
    assert_eq!(d.instance_names(ZONAL), vec!["linux-old1"]);
    assert_eq!(out.applied, Some(0));
    assert!(
        out.actions
            .iter()
            .any(|a| a.starts_with("suspendInstances") && a.contains("[linux-old1]")),
        "{:?}",
        out.actions
    );
    assert!(d.count("GET", "/operations/") >= 2, "operations polled");

    // Next cycle: the target is met, nothing more is suspended or deleted.
    d.clear_requests();
    run(&e, &p, 0, 1, &Dir::default(), false).await.unwrap();
    assert!(group_posts(&d).is_empty(), "{:?}", d.requests());
    assert_eq!(d.standby_sizes(ZONAL), Some((1, 0)));
}

/// Scale-out of 2 with one suspended member: one `resumeInstances` (target size +1, suspended
/// size −1), then a resize by the remaining one; the resumed instance is RUNNING.
#[tokio::test]
async fn scale_out_of_two_with_one_suspended_resumes_one_and_resizes_one() {
    let (_, d) = ComputeDouble::start();
    d.add_group(ZONAL, GOOD_LABELS);
    d.add_instance(ZONAL, InstanceSpec::new("linux-run1", &ts(1)));
    d.add_instance(
        ZONAL,
        InstanceSpec::new("linux-sus1", &ts(2)).status("SUSPENDED"),
    );
    assert_eq!(d.target_size(ZONAL), Some(1));
    assert_eq!(d.standby_sizes(ZONAL), Some((1, 0)));
    d.set_operation_polls(2);
    let e = executor(&d, |_| {}).await;
    let p = pool("linux", ZONAL, 10);

    let out = run(&e, &p, 3, 1, &Dir::default(), false).await.unwrap();
    assert_eq!(group_posts(&d), vec!["resumeInstances", "resize"]);
    let resize = posts(&d.requests())
        .into_iter()
        .find(|r| r.path.ends_with("/resize"))
        .cloned()
        .unwrap();
    assert_eq!(resize.param("size"), Some("3"));
    assert_eq!(d.target_size(ZONAL), Some(3));
    assert_eq!(d.standby_sizes(ZONAL), Some((0, 0)));
    assert_eq!(
        d.instance_status(ZONAL, "linux-sus1").as_deref(),
        Some("RUNNING")
    );
    assert_eq!(out.applied, Some(3));
    assert!(
        out.actions[0].starts_with("resumeInstances") && out.actions[0].contains("[linux-sus1]"),
        "{:?}",
        out.actions
    );
    assert!(out.actions[1].contains("from 2 to 3"), "{:?}", out.actions);
}

/// The whole scale-out covered by standby: no resize at all, nothing created.
#[tokio::test]
async fn scale_out_never_creates_while_standby_can_serve() {
    let (_, d) = ComputeDouble::start();
    d.add_group(ZONAL, GOOD_LABELS);
    for (i, n) in ["linux-s001", "linux-s002", "linux-s003"]
        .iter()
        .enumerate()
    {
        d.add_instance(
            ZONAL,
            InstanceSpec::new(n, &ts(i as u32)).status("SUSPENDED"),
        );
    }
    let e = executor(&d, |_| {}).await;
    let out = run(&e, &pool("linux", ZONAL, 10), 2, 3, &Dir::default(), false)
        .await
        .unwrap();
    assert_eq!(
        group_posts(&d),
        vec!["resumeInstances"],
        "{:?}",
        out.actions
    );
    // Oldest first.
    let body = &body_of(&d, "resumeInstances")[0];
    assert!(
        body.contains("linux-s001") && body.contains("linux-s002") && !body.contains("linux-s003")
    );
    assert_eq!(d.target_size(ZONAL), Some(2));
    assert_eq!(d.standby_sizes(ZONAL), Some((1, 0)));
    assert_eq!(d.instance_names(ZONAL).len(), 3, "nothing created");
}

/// A suspended member the standby target still wants is never a leaver: scaling in to 0 with
/// target 1 deletes both running instances and keeps the suspended one (the target is met by
/// it, so neither leaver is suspended).
#[tokio::test]
async fn a_suspended_instance_is_never_deleted_while_the_target_wants_it() {
    let (_, d) = ComputeDouble::start();
    d.add_group(ZONAL, GOOD_LABELS);
    d.add_instance(
        ZONAL,
        InstanceSpec::new("linux-sus0", &ts(0)).status("SUSPENDED"),
    );
    d.add_instance(ZONAL, InstanceSpec::new("linux-run1", &ts(1)));
    d.add_instance(ZONAL, InstanceSpec::new("linux-run2", &ts(2)));
    let e = executor(&d, |_| {}).await;
    let p = pool("linux", ZONAL, 10);

    run(&e, &p, 0, 1, &Dir::default(), false).await.unwrap();
    assert_eq!(group_posts(&d), vec!["deleteInstances"]);
    let body = &body_of(&d, "deleteInstances")[0];
    assert!(!body.contains("linux-sus0"), "{body}");
    assert_eq!(d.instance_names(ZONAL), vec!["linux-sus0"]);
    assert_eq!(d.standby_sizes(ZONAL), Some((1, 0)));
    assert_eq!(d.target_size(ZONAL), Some(0));
}

/// A worker RUNNING a build is never suspended, even with room in the standby pool: the idle
/// one goes to standby, the busy one stays running and is reported held.
#[tokio::test]
async fn a_worker_running_a_build_is_never_suspended() {
    let (_, d) = ComputeDouble::start();
    two_running(&d);
    let e = executor(&d, |_| {}).await;
    let p = pool("linux", ZONAL, 10);

    let out = run(&e, &p, 0, 2, &Dir::busy(&["linux-old1"]), false)
        .await
        .unwrap();
    assert_eq!(group_posts(&d), vec!["suspendInstances"]);
    let body = &body_of(&d, "suspendInstances")[0];
    assert!(
        body.contains("linux-new2") && !body.contains("linux-old1"),
        "{body}"
    );
    assert_eq!(
        d.instance_status(ZONAL, "linux-old1").as_deref(),
        Some("RUNNING")
    );
    assert_eq!(d.target_size(ZONAL), Some(1));
    assert!(out.revisit, "the busy one is still to go");
}

/// A dry run says "would suspendInstances …" / "would resumeInstances …" and changes nothing.
#[tokio::test]
async fn dry_run_says_would_suspend_and_would_resume() {
    let (_, d) = ComputeDouble::start();
    two_running(&d);
    let e = executor(&d, |_| {}).await;
    let p = pool("linux", ZONAL, 10);
    let out = run(&e, &p, 0, 1, &Dir::default(), true).await.unwrap();
    assert!(
        out.actions
            .iter()
            .any(|a| a.starts_with("would suspendInstances") && a.contains("[linux-old1]")),
        "{:?}",
        out.actions
    );
    assert!(out
        .actions
        .iter()
        .any(|a| a.starts_with("would deleteInstances")));
    assert_eq!(d.mutations_applied(), 0);

    let (_, d) = ComputeDouble::start();
    d.add_group(ZONAL, GOOD_LABELS);
    d.add_instance(
        ZONAL,
        InstanceSpec::new("linux-sus1", &ts(1)).status("SUSPENDED"),
    );
    let e = executor(&d, |_| {}).await;
    let out = run(&e, &p, 2, 1, &Dir::default(), true).await.unwrap();
    assert_eq!(out.actions.len(), 2, "{:?}", out.actions);
    assert!(
        out.actions[0].starts_with("would resumeInstances")
            && out.actions[0].contains("[linux-sus1]"),
        "{:?}",
        out.actions
    );
    assert!(
        out.actions[1].starts_with("would resize"),
        "{:?}",
        out.actions
    );
    assert!(out.actions[1].contains("from 1 to 2"), "{:?}", out.actions);
    assert_eq!(d.mutations_applied(), 0);
    assert_eq!(d.standby_sizes(ZONAL), Some((1, 0)));
}

/// `standby_action = "stop"`: leavers are stopped (TERMINATED, targetStoppedSize), and brought
/// back with `startInstances`.
#[tokio::test]
async fn stop_action_stops_and_start_brings_back() {
    let (_, d) = ComputeDouble::start();
    two_running(&d);
    let e = executor(&d, |c| c.standby_action = StandbyAction::Stop).await;
    let p = pool("linux", ZONAL, 10);

    run(&e, &p, 0, 2, &Dir::default(), false).await.unwrap();
    assert_eq!(group_posts(&d), vec!["stopInstances"]);
    assert_eq!(d.standby_sizes(ZONAL), Some((0, 2)));
    assert_eq!(d.target_size(ZONAL), Some(0));
    assert_eq!(
        d.instance_status(ZONAL, "linux-old1").as_deref(),
        Some("TERMINATED")
    );

    d.clear_requests();
    run(&e, &p, 1, 2, &Dir::default(), false).await.unwrap();
    assert_eq!(group_posts(&d), vec!["startInstances"]);
    assert!(body_of(&d, "startInstances")[0].contains("linux-old1"));
    assert_eq!(d.standby_sizes(ZONAL), Some((0, 1)));
    assert_eq!(d.target_size(ZONAL), Some(1));
}

/// Standby target 0 is today's behaviour: leavers are deleted, a suspended member is neither
/// resumed nor deleted, and a resize leaves the group's standby sizes as they were.
#[tokio::test]
async fn standby_target_zero_deletes_and_keeps_the_sizes() {
    let (_, d) = ComputeDouble::start();
    d.add_group(ZONAL, GOOD_LABELS);
    d.add_instance(
        ZONAL,
        InstanceSpec::new("linux-sus0", &ts(0)).status("SUSPENDED"),
    );
    d.add_instance(ZONAL, InstanceSpec::new("linux-run1", &ts(1)));
    d.add_instance(ZONAL, InstanceSpec::new("linux-run2", &ts(2)));
    let e = executor(&d, |_| {}).await;
    let p = pool("linux", ZONAL, 10);

    run(&e, &p, 1, 0, &Dir::default(), false).await.unwrap();
    assert_eq!(group_posts(&d), vec!["deleteInstances"]);
    d.clear_requests();
    run(&e, &p, 3, 0, &Dir::default(), false).await.unwrap();
    assert_eq!(group_posts(&d), vec!["resize"]);
    assert_eq!(
        d.requests().len(),
        3,
        "get, resize, operation poll: no listing"
    );
    assert_eq!(d.standby_sizes(ZONAL), Some((1, 0)));
    assert_eq!(
        d.instance_status(ZONAL, "linux-sus0").as_deref(),
        Some("SUSPENDED")
    );
}

/// An agent instance goes to standby only after its drain handshake, like a deletion; when it
/// comes back, its drain request is called off first so its agent starts workers again.
#[tokio::test]
async fn a_drained_agent_instance_is_suspended_after_its_ack_and_resumed_undrained() {
    let agent: &[(&str, &str)] = &[
        ("vespene_worker", "true"),
        ("vespene_pool", "linux"),
        ("vespene_drain_agent", "v1"),
    ];
    let (_, d) = ComputeDouble::start();
    d.add_group(ZONAL, GOOD_LABELS);
    d.add_instance(ZONAL, InstanceSpec::new("linux-ag01", &ts(1)).labels(agent));
    let e = executor(&d, |_| {}).await;
    let p = pool("linux", ZONAL, 10);

    // Cycle 1: asked to drain, not suspended yet.
    run(&e, &p, 0, 1, &Dir::default(), false).await.unwrap();
    assert!(group_posts(&d).is_empty(), "{:?}", d.requests());
    assert!(d.metadata_value(ZONAL, "linux-ag01", DRAIN_KEY).is_some());
    // Cycle 2: acknowledged: suspended.
    assert!(d.set_guest_attribute(ZONAL, "linux-ag01", ACK_KEY, ACK_DONE));
    d.clear_requests();
    run(&e, &p, 0, 1, &Dir::default(), false).await.unwrap();
    assert_eq!(group_posts(&d), vec!["suspendInstances"]);
    assert_eq!(d.standby_sizes(ZONAL), Some((1, 0)));
    // Cycle 3: a build arrives: the drain is called off, then the instance resumed.
    d.clear_requests();
    run(&e, &p, 1, 1, &Dir::default(), false).await.unwrap();
    assert_eq!(group_posts(&d), vec!["resumeInstances"]);
    assert_eq!(d.metadata_value(ZONAL, "linux-ag01", DRAIN_KEY), None);
    let reqs = d.requests();
    let meta = reqs.iter().position(|r| r.path.ends_with("/setMetadata"));
    let resume = reqs
        .iter()
        .position(|r| r.path.ends_with("/resumeInstances"));
    assert!(
        meta.unwrap() < resume.unwrap(),
        "drain called off before the resume"
    );
    assert_eq!(d.target_size(ZONAL), Some(1));
    assert_eq!(
        d.instance_status(ZONAL, "linux-ag01").as_deref(),
        Some("RUNNING")
    );
}

/// Compute marks a suspend DONE when it is scheduled; the instance is SUSPENDING for a while
/// after. Meanwhile it counts toward the standby target (no second instance is suspended) but
/// is not resumed (Compute would refuse: only SUSPENDED instances can be): a scale-out then
/// creates. Once SUSPENDED it is resumed as usual.
#[tokio::test]
async fn a_suspend_under_way_counts_toward_the_target_and_is_not_resumed() {
    let (_, d) = ComputeDouble::start();
    d.add_group(ZONAL, GOOD_LABELS);
    for (i, n) in ["linux-r001", "linux-r002", "linux-r003"]
        .iter()
        .enumerate()
    {
        d.add_instance(ZONAL, InstanceSpec::new(n, &ts(i as u32)));
    }
    d.set_standby_settle(2);
    let e = executor(&d, |_| {}).await;
    let p = pool("linux", ZONAL, 10);

    run(&e, &p, 2, 1, &Dir::default(), false).await.unwrap();
    assert_eq!(group_posts(&d), vec!["suspendInstances"]);
    assert_eq!(
        d.instance_status(ZONAL, "linux-r001").as_deref(),
        Some("SUSPENDING")
    );

    // Still suspending: a further scale-in deletes, it does not suspend another.
    d.clear_requests();
    run(&e, &p, 1, 1, &Dir::default(), false).await.unwrap();
    assert_eq!(group_posts(&d), vec!["deleteInstances"]);
    assert_eq!(d.standby_sizes(ZONAL), Some((1, 0)));

    // Suspended now (second listing): a scale-out resumes it instead of creating.
    d.clear_requests();
    run(&e, &p, 2, 1, &Dir::default(), false).await.unwrap();
    assert_eq!(group_posts(&d), vec!["resumeInstances"]);
    assert_eq!(d.target_size(ZONAL), Some(2));
    assert_eq!(d.standby_sizes(ZONAL), Some((0, 0)));
}

/// A scale-out while the only standby member is still suspending creates instead of sending
/// a `resumeInstances` Compute would refuse.
#[tokio::test]
async fn a_scale_out_while_suspending_creates_instead() {
    let (_, d) = ComputeDouble::start();
    two_running(&d);
    d.set_standby_settle(3);
    let e = executor(&d, |_| {}).await;
    let p = pool("linux", ZONAL, 10);
    run(&e, &p, 1, 1, &Dir::default(), false).await.unwrap();
    assert_eq!(group_posts(&d), vec!["suspendInstances"]);
    d.clear_requests();
    run(&e, &p, 2, 1, &Dir::default(), false).await.unwrap();
    assert_eq!(group_posts(&d), vec!["resize"]);
    assert_eq!(d.target_size(ZONAL), Some(2));
    assert_eq!(d.standby_sizes(ZONAL), Some((1, 0)));
}

/// A regional group (its own REST paths, the regional SDK builders): suspend and resume carry
/// the instances' zones in their URLs, and the sizes move the same way.
#[tokio::test]
async fn a_regional_group_suspends_and_resumes_across_zones() {
    let (_, d) = ComputeDouble::start();
    d.add_group(REGIONAL, GOOD_LABELS);
    d.set_redistribution(REGIONAL, Some("NONE"));
    d.add_instance(
        REGIONAL,
        InstanceSpec::new("linux-b1", &ts(1)).zone("us-east1-b"),
    );
    d.add_instance(
        REGIONAL,
        InstanceSpec::new("linux-c1", &ts(2)).zone("us-east1-c"),
    );
    let e = executor(&d, |_| {}).await;
    let p = pool("linux", REGIONAL, 10);

    run(&e, &p, 0, 2, &Dir::default(), false).await.unwrap();
    let suspend = posts(&d.requests())
        .into_iter()
        .find(|r| r.path.ends_with("/suspendInstances"))
        .cloned()
        .unwrap();
    assert!(
        suspend.path.contains("/regions/us-east1/"),
        "{}",
        suspend.path
    );
    assert!(
        suspend.body.contains("zones/us-east1-b/instances/linux-b1")
            && suspend.body.contains("zones/us-east1-c/instances/linux-c1"),
        "{}",
        suspend.body
    );
    assert!(suspend.param("requestId").is_some());
    assert_eq!(d.standby_sizes(REGIONAL), Some((2, 0)));
    assert_eq!(d.target_size(REGIONAL), Some(0));

    d.clear_requests();
    run(&e, &p, 1, 2, &Dir::default(), false).await.unwrap();
    assert_eq!(group_posts(&d), vec!["resumeInstances"]);
    assert!(body_of(&d, "resumeInstances")[0].contains("linux-b1"));
    assert_eq!(d.standby_sizes(REGIONAL), Some((1, 0)));
    assert_eq!(d.target_size(REGIONAL), Some(1));
}

/// A suspend whose operation ends in error fails the pool with Compute's code, naming the pool,
/// the group and the call; nothing moved, and the next cycle tries again. A response lost
/// after Compute applied the call is retried with the same request id and not applied twice.
#[tokio::test]
async fn a_failed_or_lost_standby_call_is_reported_and_never_applied_twice() {
    let (_, d) = ComputeDouble::start();
    two_running(&d);
    let e = executor(&d, |_| {}).await;
    let p = pool("linux", ZONAL, 10);

    d.fail_next_operation("RESOURCE_NOT_READY", "The resource is not ready", 400);
    let err = run(&e, &p, 1, 1, &Dir::default(), false).await.unwrap_err();
    for want in ["suspendInstances", ZONAL, "RESOURCE_NOT_READY"] {
        assert!(err.message.contains(want), "{want}: {}", err.message);
    }
    assert_eq!(err.pool, "linux");
    assert_eq!(d.standby_sizes(ZONAL), Some((0, 0)));
    assert_eq!(d.target_size(ZONAL), Some(2));
    assert_eq!(d.mutations_applied(), 0);

    d.fail_after_apply("POST", "/suspendInstances", 503, "backendError", 1);
    run(&e, &p, 1, 1, &Dir::default(), false).await.unwrap();
    assert_eq!(d.count("POST", "/suspendInstances"), 3);
    assert_eq!(d.mutations_applied(), 1, "the retry was deduplicated");
    assert_eq!(d.standby_sizes(ZONAL), Some((1, 0)));
    assert_eq!(d.target_size(ZONAL), Some(1));

    d.fail_after_apply("POST", "/resumeInstances", 502, "backendError", 1);
    run(&e, &p, 2, 1, &Dir::default(), false).await.unwrap();
    assert_eq!(d.count("POST", "/resumeInstances"), 2);
    assert_eq!(d.mutations_applied(), 2);
    assert_eq!(d.standby_sizes(ZONAL), Some((0, 0)));
    assert_eq!(d.target_size(ZONAL), Some(2));
}
