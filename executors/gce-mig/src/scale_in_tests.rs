//! Scale-in against the Compute double: the defects of issue 11 that concern GCE, the drain
//! handshake on the wire (setMetadata with its fingerprint, getGuestAttributes), and the
//! order in which instances leave. Each defect test says how the code before the shared
//! chooser failed it.

use crate::candidates::{ACK_DONE, ACK_KEY, DRAIN_KEY, DRAIN_REQUESTED};
use crate::tests::{executor, pool, posts, run, ts, Dir, GOOD_LABELS, ZONAL};
use autoscaler_executor::{BusyWorker, ErrorKind};
use autoscaler_gce_double::{ComputeDouble, InstanceSpec};
use chrono::{DateTime, Utc};

const AGENT_LABELS: &[(&str, &str)] = &[
    ("vespene_worker", "true"),
    ("vespene_pool", "linux"),
    ("vespene_drain_agent", "v1"),
];

fn at(minute: u32) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(&ts(minute))
        .unwrap()
        .with_timezone(&Utc)
}

fn busy(host: Option<&str>, build: i64, started_minute: u32) -> BusyWorker {
    BusyWorker {
        hostname: host.map(str::to_string),
        build_id: build,
        started: Some(at(started_minute)),
    }
}

fn deletes(d: &ComputeDouble) -> usize {
    d.count("POST", "/deleteInstances")
}

/// Defect 1, the claim race: the busy read and the delete are separate steps, and a worker
/// can claim a build in between. An instance that runs the drain agent is therefore never
/// deleted on the strength of the busy read alone: it is asked to drain (metadata, other items
/// kept), and deleted only once its agent acknowledged. The code before the chooser deleted
/// the idle instance in the first cycle.
#[tokio::test]
async fn an_agent_instance_is_deleted_only_after_its_acknowledgement() {
    let (_, d) = ComputeDouble::start();
    d.add_group(ZONAL, AGENT_LABELS);
    d.add_instance(
        ZONAL,
        InstanceSpec::new("linux-a001", &ts(1)).metadata("startup-script", "echo hi"),
    );
    d.add_instance(ZONAL, InstanceSpec::new("linux-a002", &ts(2)));
    let e = executor(&d, |_| {}).await;
    let p = pool("linux", ZONAL, 10);

    // Cycle 1: the oldest idle instance is asked to drain; nothing is deleted.
    let out = run(&e, &p, 1, &Dir::default(), false).await.unwrap();
    assert_eq!(deletes(&d), 0);
    assert!(out.revisit, "a drain under way asks for a revisit");
    assert!(out.actions[0].contains("setMetadata vespene-drain=requested on linux-a001"));
    assert_eq!(
        d.metadata_value(ZONAL, "linux-a001", DRAIN_KEY).as_deref(),
        Some(DRAIN_REQUESTED)
    );
    // Every other item survived, fingerprint and all.
    assert_eq!(
        d.metadata_value(ZONAL, "linux-a001", "startup-script")
            .as_deref(),
        Some("echo hi")
    );
    assert!(d
        .metadata_value(ZONAL, "linux-a001", "created-by")
        .is_some());
    let set: Vec<_> = d
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/setMetadata"))
        .collect();
    assert_eq!(set.len(), 1);
    let body: serde_json::Value = serde_json::from_str(&set[0].body).unwrap();
    assert!(body["fingerprint"].as_str().is_some(), "{body}");
    assert!(set[0].param("requestId").is_some());

    // Cycle 2: no acknowledgement yet (its worker may have claimed a build just before the
    // request): still nothing deleted, and no second request.
    let out = run(&e, &p, 1, &Dir::default(), false).await.unwrap();
    assert_eq!(deletes(&d), 0);
    assert!(out.revisit);
    assert_eq!(d.count("POST", "/setMetadata"), 1);
    assert_eq!(d.count("GET", "/getGuestAttributes"), 1);

    // The agent acknowledges; a build still RUNNING on it keeps it anyway.
    assert!(d.set_guest_attribute(ZONAL, "linux-a001", ACK_KEY, ACK_DONE));
    let still = Dir::rows(vec![busy(Some("linux-a001"), 7, 30)]);
    run(&e, &p, 1, &still, false).await.unwrap();
    assert_eq!(deletes(&d), 0);

    // Acknowledged and idle: deleted, and only that one.
    let out = run(&e, &p, 1, &Dir::default(), false).await.unwrap();
    assert_eq!(deletes(&d), 1);
    assert!(
        out.actions[0].contains("[linux-a001] (drained;"),
        "{:?}",
        out.actions
    );
    assert!(!out.revisit);
    assert_eq!(d.instance_names(ZONAL), vec!["linux-a002"]);
}

/// Scale-out must not count draining instances as capacity: drains are called off first
/// (metadata key removed), and the resize covers the rest.
#[tokio::test]
async fn scale_out_and_a_plan_back_at_target_call_drains_off() {
    let (_, d) = ComputeDouble::start();
    d.add_group(ZONAL, AGENT_LABELS);
    for i in 1..=3 {
        d.add_instance(ZONAL, InstanceSpec::new(&format!("linux-c00{i}"), &ts(i)));
    }
    let e = executor(&d, |_| {}).await;
    let p = pool("linux", ZONAL, 10);
    run(&e, &p, 1, &Dir::default(), false).await.unwrap();
    assert_eq!(d.count("POST", "/setMetadata"), 2);

    // Back at the target size (3): both drains are called off, nothing is resized.
    let out = run(&e, &p, 3, &Dir::default(), false).await.unwrap();
    assert_eq!(d.count("POST", "/setMetadata"), 4);
    assert!(d.metadata_value(ZONAL, "linux-c001", DRAIN_KEY).is_none());
    assert!(d.metadata_value(ZONAL, "linux-c002", DRAIN_KEY).is_none());
    assert_eq!(d.count("POST", "/resize"), 0);
    assert!(!out.revisit);
    // Drains gone and known gone: the next cycle at target is one GET.
    d.clear_requests();
    run(&e, &p, 3, &Dir::default(), false).await.unwrap();
    assert_eq!(d.requests().len(), 1);

    // One drain, then a scale-out to 5: the drain is called off and the group resized.
    run(&e, &p, 2, &Dir::default(), false).await.unwrap();
    assert_eq!(
        d.metadata_value(ZONAL, "linux-c001", DRAIN_KEY).as_deref(),
        Some(DRAIN_REQUESTED)
    );
    let out = run(&e, &p, 5, &Dir::default(), false).await.unwrap();
    assert!(d.metadata_value(ZONAL, "linux-c001", DRAIN_KEY).is_none());
    assert_eq!(d.target_size(ZONAL), Some(5));
    assert_eq!(out.applied, Some(5));
    assert!(out.actions.iter().any(|a| a.contains("drain called off")));
    assert!(out.actions.iter().any(|a| a.starts_with("resize")));
}

/// A fingerprint that changed between the read and the write (412 `conditionNotMet`) is read
/// again and the write retried, keeping the other writer's change.
#[tokio::test]
async fn a_stale_metadata_fingerprint_is_reread_and_retried() {
    let (_, d) = ComputeDouble::start();
    d.add_group(ZONAL, AGENT_LABELS);
    d.add_instance(ZONAL, InstanceSpec::new("linux-f001", &ts(1)));
    d.add_instance(ZONAL, InstanceSpec::new("linux-f002", &ts(2)));
    d.fail_next("POST", "/setMetadata", 412, "conditionNotMet", 1);
    let e = executor(&d, |_| {}).await;
    run(&e, &pool("linux", ZONAL, 10), 1, &Dir::default(), false)
        .await
        .unwrap();
    assert_eq!(d.count("POST", "/setMetadata"), 2);
    assert_eq!(d.count("GET", "/instances/linux-f001"), 1, "instances.get");
    assert_eq!(
        d.metadata_value(ZONAL, "linux-f001", DRAIN_KEY).as_deref(),
        Some(DRAIN_REQUESTED)
    );
}

/// Defect 2: Vespene saves `status = RUNNING` before `worker_id`, so a build that just started
/// has no worker: it may be on any instance, and nothing is deleted this cycle. The code
/// before read busy workers through an inner join, never saw such a build, and deleted the
/// oldest instance.
#[tokio::test]
async fn a_fresh_build_without_a_worker_holds_every_instance() {
    let (_, d) = ComputeDouble::start();
    d.add_group(ZONAL, GOOD_LABELS);
    d.add_instance(ZONAL, InstanceSpec::new("linux-u001", &ts(1)));
    d.add_instance(ZONAL, InstanceSpec::new("linux-u002", &ts(2)));
    let e = executor(&d, |_| {}).await;
    let fresh = Dir::rows(vec![BusyWorker {
        hostname: None,
        build_id: 41,
        started: Some(Utc::now()),
    }]);
    let out = run(&e, &pool("linux", ZONAL, 10), 1, &fresh, false)
        .await
        .unwrap();
    assert_eq!(deletes(&d), 0);
    assert!(out.revisit, "held scale-in comes back next cycle");
    assert_eq!(d.instance_names(ZONAL).len(), 2);

    // Once the worker is recorded, the other instance goes.
    let known = Dir::rows(vec![busy(Some("linux-u001"), 41, 30)]);
    let out = run(&e, &pool("linux", ZONAL, 10), 1, &known, false)
        .await
        .unwrap();
    assert!(out.actions[0].contains("[linux-u002]"), "{:?}", out.actions);
}

/// Defect 3: a busy worker whose hostname matches no instance was only a warning, and every
/// instance then looked idle. Now it holds the pool's scale-in with status 12 naming it,
/// while the names a worker really reports (custom hostname, internal IP, internal DNS
/// names) do match. The code before deleted linux-m001 here (and matched neither the custom
/// hostname nor the IP).
#[tokio::test]
async fn unmatched_workers_hold_with_status_12_and_every_instance_name_matches() {
    let (_, d) = ComputeDouble::start();
    d.add_group(ZONAL, GOOD_LABELS);
    d.add_instance(ZONAL, InstanceSpec::new("linux-m001", &ts(1)));
    d.add_instance(
        ZONAL,
        InstanceSpec::new("linux-m002", &ts(2)).hostname("builder-7.example.internal"),
    );
    d.add_instance(ZONAL, InstanceSpec::new("linux-m003", &ts(3)));
    d.add_instance(ZONAL, InstanceSpec::new("linux-m004", &ts(4)));
    d.add_instance(ZONAL, InstanceSpec::new("linux-m005", &ts(5)));
    let e = executor(&d, |_| {}).await;
    let p = pool("linux", ZONAL, 10);

    let stranger = Dir::rows(vec![busy(Some("ip-10-9-9-9"), 50, 30)]);
    let err = run(&e, &p, 1, &stranger, false).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Held);
    assert_eq!(err.status_code(), 12);
    assert!(err.message.contains("ip-10-9-9-9"), "{}", err.message);
    assert!(err.message.contains("build 50"), "{}", err.message);
    assert_eq!(deletes(&d), 0);

    // Custom hostname, internal IP, zonal and global internal DNS names all match.
    let ip = d.network_ip(ZONAL, "linux-m003").unwrap();
    let dir = Dir::rows(vec![
        busy(Some("builder-7"), 51, 30),
        busy(Some(&ip), 52, 30),
        busy(Some("linux-m001.us-central1-a.c.proj-1.internal"), 53, 30),
        busy(Some("LINUX-M004.c.proj-1.internal."), 54, 30),
    ]);
    let out = run(&e, &p, 1, &dir, false).await.unwrap();
    assert!(
        out.actions[0].contains("[linux-m005]") && out.actions[0].contains("4 held up by busy"),
        "{:?}",
        out.actions
    );
}

/// Defect 6: Vespene never finishes the RUNNING rows of a worker that died, and autohealing
/// recreates an instance under the same name. A row that started before the instance was
/// created is about the earlier machine: it does not hold the new one. The code before held
/// linux-r001 forever.
#[tokio::test]
async fn a_running_row_older_than_the_instance_does_not_hold_it() {
    let (_, d) = ComputeDouble::start();
    d.add_group(ZONAL, GOOD_LABELS);
    d.add_instance(ZONAL, InstanceSpec::new("linux-r001", &ts(30))); // recreated at :30
    d.add_instance(ZONAL, InstanceSpec::new("linux-r002", &ts(40)));
    let e = executor(&d, |_| {}).await;
    let stale = Dir::rows(vec![busy(Some("linux-r001"), 60, 10)]); // started at :10
    let out = run(&e, &pool("linux", ZONAL, 10), 1, &stale, false)
        .await
        .unwrap();
    assert!(out.actions[0].contains("[linux-r001]"), "{:?}", out.actions);
    // A build that started after the instance was created does hold it.
    let (_, d) = ComputeDouble::start();
    d.add_group(ZONAL, GOOD_LABELS);
    d.add_instance(ZONAL, InstanceSpec::new("linux-r001", &ts(30)));
    d.add_instance(ZONAL, InstanceSpec::new("linux-r002", &ts(40)));
    let e = executor(&d, |_| {}).await;
    let live = Dir::rows(vec![busy(Some("linux-r001"), 61, 35)]);
    let out = run(&e, &pool("linux", ZONAL, 10), 1, &live, false)
        .await
        .unwrap();
    assert!(out.actions[0].contains("[linux-r002]"), "{:?}", out.actions);
}

/// Standby (stopped, suspended) and leaving instances are never the "oldest idle" one;
/// booting ones go first, newest first, then idle running ones, oldest first.
#[tokio::test]
async fn standby_never_goes_and_booting_goes_first() {
    let (_, d) = ComputeDouble::start();
    d.add_group(ZONAL, GOOD_LABELS);
    d.add_instance(
        ZONAL,
        InstanceSpec::new("linux-s-stop", &ts(0)).status("STOPPED"),
    );
    d.add_instance(
        ZONAL,
        InstanceSpec::new("linux-s-susp", &ts(1)).status("SUSPENDED"),
    );
    d.add_instance(ZONAL, InstanceSpec::new("linux-s-old", &ts(2)));
    d.add_instance(ZONAL, InstanceSpec::new("linux-s-mid", &ts(3)));
    d.add_instance(
        ZONAL,
        InstanceSpec::new("linux-s-stage", &ts(8)).status("STAGING"),
    );
    d.add_instance(ZONAL, InstanceSpec::new("linux-s-new", &ts(9)).creating());
    let e = executor(&d, |_| {}).await;
    let p = pool("linux", ZONAL, 10);
    // 4 running (standby VMs are outside the target size), 1 wanted: the two booting ones,
    // then the oldest running idle one.
    assert_eq!(d.target_size(ZONAL), Some(4));
    let out = run(&e, &p, 1, &Dir::default(), false).await.unwrap();
    assert!(
        out.actions[0].contains("[linux-s-new, linux-s-stage, linux-s-old]"),
        "{:?}",
        out.actions
    );
    // 0 wanted: the running one goes; standby ones stay.
    run(&e, &p, 0, &Dir::default(), false).await.unwrap();
    let mut left = d.instance_names(ZONAL);
    left.sort();
    assert_eq!(left, vec!["linux-s-stop", "linux-s-susp"]);
}

/// `require_drain_agent`: an instance without the agent label is held, never deleted, and
/// the pool comes back to it; the steady state reads no guest attribute.
#[tokio::test]
async fn require_drain_agent_holds_instances_without_it() {
    let (_, d) = ComputeDouble::start();
    d.add_group(ZONAL, GOOD_LABELS);
    d.add_instance(ZONAL, InstanceSpec::new("linux-n001", &ts(1)));
    d.add_instance(
        ZONAL,
        InstanceSpec::new("linux-n002", &ts(2)).labels(AGENT_LABELS),
    );
    let e = executor(&d, |c| c.require_drain_agent = true).await;
    let out = run(&e, &pool("linux", ZONAL, 10), 0, &Dir::default(), false)
        .await
        .unwrap();
    assert_eq!(deletes(&d), 0);
    assert!(out.revisit);
    assert_eq!(
        d.metadata_value(ZONAL, "linux-n002", DRAIN_KEY).as_deref(),
        Some(DRAIN_REQUESTED)
    );
    assert!(d.metadata_value(ZONAL, "linux-n001", DRAIN_KEY).is_none());
    assert_eq!(d.count("GET", "/getGuestAttributes"), 0);
    assert!(posts(&d.requests())
        .iter()
        .all(|r| !r.path.ends_with("/deleteInstances")));
}

/// An acknowledgement that cannot be read is no acknowledgement: the instance stays, and the
/// failure is reported (here a missing `compute.instances.getGuestAttributes` permission).
#[tokio::test]
async fn an_unreadable_acknowledgement_keeps_the_instance_and_is_reported() {
    let (_, d) = ComputeDouble::start();
    d.add_group(ZONAL, AGENT_LABELS);
    d.add_instance(ZONAL, InstanceSpec::new("linux-g001", &ts(1)));
    d.add_instance(ZONAL, InstanceSpec::new("linux-g002", &ts(2)));
    let e = executor(&d, |_| {}).await;
    let p = pool("linux", ZONAL, 10);
    run(&e, &p, 1, &Dir::default(), false).await.unwrap();
    assert!(d.set_guest_attribute(ZONAL, "linux-g001", ACK_KEY, ACK_DONE));
    d.fail_next("GET", "/getGuestAttributes", 403, "forbidden", 1);
    let err = run(&e, &p, 1, &Dir::default(), false).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::PermissionDenied);
    assert!(err.message.contains("linux-g001"), "{}", err.message);
    assert_eq!(deletes(&d), 0);
    // Readable again: deleted.
    run(&e, &p, 1, &Dir::default(), false).await.unwrap();
    assert_eq!(deletes(&d), 1);
}
