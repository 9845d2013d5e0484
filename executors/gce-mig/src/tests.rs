//! The executor end to end in-process: real SDK client, real HTTP, the Compute double.

use crate::{Config, GceMigExecutor};
use autoscaler_executor::{
    ErrorKind, Executor, ExecutorError, Outcome, Plan, ScaleRequest, WorkerPool,
};
use autoscaler_gce_double::{ComputeDouble, InstanceSpec, RecordedRequest};
use std::sync::{Arc, Mutex};

pub(crate) const ZONAL: &str = "projects/proj-1/zones/us-central1-a/instanceGroupManagers/linux";
pub(crate) const REGIONAL: &str = "projects/proj-1/regions/us-east1/instanceGroupManagers/linux-r";
pub(crate) const GOOD_LABELS: &[(&str, &str)] =
    &[("vespene_worker", "true"), ("vespene_pool", "linux")];

/// A Vespene database stand-in: the busy workers are whatever the test says (core's one).
pub(crate) type Dir = autoscaler_executor::testing::StaticDirectory;

pub(crate) fn test_config(d: &ComputeDouble) -> Config {
    Config {
        endpoint: Some(d.endpoint()),
        credentials: Some("anonymous".into()),
        project: Some("proj-1".into()),
        max_attempts: 4,
        retry_initial_backoff_ms: 5,
        retry_max_backoff_ms: 20,
        poll_interval_ms: 5,
        ..Config::default()
    }
}

pub(crate) async fn executor(d: &ComputeDouble, tweak: impl FnOnce(&mut Config)) -> GceMigExecutor {
    let mut cfg = test_config(d);
    tweak(&mut cfg);
    GceMigExecutor::from_config_with_env(cfg, &|_| None)
        .await
        .expect("executor builds")
}

pub(crate) fn pool(name: &str, command: &str, maximum: i32) -> WorkerPool {
    autoscaler_executor::testing::pool(1, name, "gce-mig", command, maximum)
}

pub(crate) async fn run(
    e: &GceMigExecutor,
    p: &WorkerPool,
    size: u32,
    dir: &Dir,
    dry_run: bool,
) -> Result<Outcome, ExecutorError> {
    e.scale(ScaleRequest {
        pool: p,
        plan: Plan {
            size,
            queued_size: 0,
            standby: 0,
        },
        dry_run,
        workers: dir,
    })
    .await
}

pub(crate) fn ts(minute: u32) -> String {
    format!("2024-05-01T09:{minute:02}:00.000-07:00")
}

pub(crate) fn posts(reqs: &[RecordedRequest]) -> Vec<&RecordedRequest> {
    reqs.iter().filter(|r| r.method == "POST").collect()
}

#[tokio::test]
async fn scale_out_resizes_and_waits_for_running_then_done() {
    let (_, d) = ComputeDouble::start();
    d.add_group(ZONAL, GOOD_LABELS);
    d.add_instance(ZONAL, InstanceSpec::new("linux-aaaa", &ts(1)));
    d.add_instance(ZONAL, InstanceSpec::new("linux-bbbb", &ts(2)));
    d.set_operation_polls(3); // RUNNING, RUNNING, DONE
    let e = executor(&d, |_| {}).await;
    let p = pool("linux", ZONAL, 10);

    let out = run(&e, &p, 5, &Dir::default(), false).await.unwrap();
    assert_eq!(d.target_size(ZONAL), Some(5));
    assert_eq!(out.applied, Some(5));
    assert!(!out.revisit);
    assert_eq!(out.actions.len(), 1);
    assert!(
        out.actions[0].starts_with(&format!("resize {ZONAL} from 2 to 5 instances")),
        "{:?}",
        out.actions
    );

    let reqs = d.requests();
    let resize: Vec<_> = reqs
        .iter()
        .filter(|r| r.path.ends_with("/resize"))
        .collect();
    assert_eq!(resize.len(), 1);
    assert_eq!(resize[0].method, "POST");
    assert_eq!(resize[0].param("size"), Some("5"));
    let rid = resize[0]
        .param("requestId")
        .expect("resize carries a request id");
    assert!(uuid::Uuid::parse_str(rid).is_ok(), "{rid}");
    assert!(out.actions[0].contains(rid));
    // The SDK's own parameters arrive and are tolerated.
    assert_eq!(resize[0].param("$alt"), Some("json"));
    assert!(resize[0].param("$apiVersion").is_some());
    // It polled the zone operation until DONE: three GETs.
    assert_eq!(d.count("GET", "/zones/us-central1-a/operations/"), 3);
    assert_eq!(d.count("GET", "/instanceGroupManagers/linux"), 1);
    // New instances are being created and carry the template's labels.
    let names = d.instance_names(ZONAL);
    assert_eq!(names.len(), 5);
    assert_eq!(d.instance_action(ZONAL, &names[4]).as_deref(), Some("NONE"));
}

#[tokio::test]
async fn workers_per_instance_divides_and_the_maximum_caps() {
    let (_, d) = ComputeDouble::start();
    d.add_group(ZONAL, GOOD_LABELS);
    d.set_operation_polls(0);
    let e = executor(&d, |c| c.workers_per_instance = 4).await;
    // 9 workers -> 3 instances.
    let out = run(&e, &pool("linux", ZONAL, 12), 9, &Dir::default(), false)
        .await
        .unwrap();
    assert_eq!(d.target_size(ZONAL), Some(3));
    assert_eq!(out.applied, Some(12));
    // 10 workers with maximum 10 -> ceil is 3 instances = 12 workers > 10, so 2.
    let d2 = {
        let (_, d2) = ComputeDouble::start();
        d2.add_group(ZONAL, GOOD_LABELS);
        d2.set_operation_polls(0);
        d2
    };
    let e2 = executor(&d2, |c| c.workers_per_instance = 4).await;
    let out = run(&e2, &pool("linux", ZONAL, 10), 10, &Dir::default(), false)
        .await
        .unwrap();
    assert_eq!(d2.target_size(ZONAL), Some(2));
    assert_eq!(out.applied, Some(8));
    // A maximum below one instance is a configuration error, and nothing is called.
    d2.clear_requests();
    let err = run(&e2, &pool("linux", ZONAL, 2), 1, &Dir::default(), false)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Config);
    assert!(
        err.to_string().contains("workers_per_instance (4)"),
        "{err}"
    );
    assert!(d2.requests().is_empty());
}

#[tokio::test]
async fn a_done_operation_with_an_error_is_a_failure() {
    let (_, d) = ComputeDouble::start();
    d.add_group(ZONAL, GOOD_LABELS);
    d.set_operation_polls(2);
    d.fail_next_operation(
        "QUOTA_EXCEEDED",
        "Quota 'CPUS' exceeded. Limit: 8.0 in region us-central1.",
        403,
    );
    let e = executor(&d, |_| {}).await;
    let err = run(&e, &pool("linux", ZONAL, 10), 4, &Dir::default(), false)
        .await
        .unwrap_err();
    assert_eq!(err.pool, "linux");
    assert_eq!(err.kind, ErrorKind::PermissionDenied);
    let msg = err.to_string();
    assert!(msg.starts_with("pool linux: "), "{msg}");
    assert!(msg.contains(ZONAL), "{msg}");
    assert!(
        msg.contains("QUOTA_EXCEEDED") && msg.contains("Quota 'CPUS' exceeded"),
        "{msg}"
    );
    assert_eq!(d.target_size(ZONAL), Some(0));
}

#[tokio::test]
async fn scale_in_deletes_the_oldest_idle_instances_and_spares_busy_ones() {
    let (_, d) = ComputeDouble::start();
    d.add_group(ZONAL, GOOD_LABELS);
    // Name order differs from age order on purpose.
    d.add_instance(ZONAL, InstanceSpec::new("linux-eeee", &ts(1))); // oldest, busy (FQDN)
    d.add_instance(ZONAL, InstanceSpec::new("linux-dddd", &ts(2))); // idle -> deleted
    d.add_instance(ZONAL, InstanceSpec::new("linux-cccc", &ts(3))); // busy
    d.add_instance(ZONAL, InstanceSpec::new("linux-bbbb", &ts(4))); // idle -> deleted
    d.add_instance(ZONAL, InstanceSpec::new("linux-aaaa", &ts(5))); // idle, newest -> kept
    d.add_stray_instance("proj-1", "us-central1-a", "other-fleet-1", &ts(0));
    d.set_page_size(2);
    let e = executor(&d, |_| {}).await;
    let dir = Dir::busy(&["linux-eeee.us-central1-a.c.proj-1.internal", "linux-cccc"]);

    let out = run(&e, &pool("linux", ZONAL, 10), 3, &dir, false)
        .await
        .unwrap();
    assert_eq!(d.target_size(ZONAL), Some(3));
    assert_eq!(out.applied, Some(3));
    assert!(!out.revisit);
    assert!(
        out.actions[0].contains("[linux-dddd, linux-bbbb]"),
        "{:?}",
        out.actions
    );

    let reqs = d.requests();
    let p = posts(&reqs);
    assert_eq!(
        p.iter().filter(|r| r.path.ends_with("/resize")).count(),
        0,
        "scale-in never resizes"
    );
    let del: Vec<_> = p
        .iter()
        .filter(|r| r.path.ends_with("/deleteInstances"))
        .collect();
    assert_eq!(del.len(), 1);
    let body: serde_json::Value = serde_json::from_str(&del[0].body).unwrap();
    let urls: Vec<&str> = body["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        urls,
        vec![
            "https://www.googleapis.com/compute/v1/projects/proj-1/zones/us-central1-a/instances/linux-dddd",
            "https://www.googleapis.com/compute/v1/projects/proj-1/zones/us-central1-a/instances/linux-bbbb",
        ]
    );
    assert!(del[0].param("requestId").is_some());
    // Pagination: 5 managed instances at 2 per page = 3 pages; instances.list likewise.
    assert_eq!(d.count("POST", "/listManagedInstances"), 3);
    let lists: Vec<_> = reqs
        .iter()
        .filter(|r| r.method == "GET" && r.path.ends_with("/instances"))
        .collect();
    assert_eq!(lists.len(), 3);
    assert_eq!(lists[1].param("pageToken"), Some("page-2"));
    let filter = lists[0].param("filter").unwrap();
    assert!(
        filter.starts_with("(name = \"linux-eeee\") OR (name = \"linux-dddd\") OR"),
        "{filter}"
    );
    assert!(!filter.contains("other-fleet"), "{filter}");
    // Busy and newest instances are untouched; the deleted ones are going.
    let mut left = d.instance_names(ZONAL);
    left.sort();
    assert_eq!(left, vec!["linux-aaaa", "linux-cccc", "linux-eeee"]);
    assert_eq!(dir.calls(), 1);
}

#[tokio::test]
async fn busy_workers_hold_the_size_up_and_ask_for_a_revisit() {
    let (_, d) = ComputeDouble::start();
    d.add_group(ZONAL, GOOD_LABELS);
    d.add_instance(ZONAL, InstanceSpec::new("linux-a001", &ts(1)));
    d.add_instance(ZONAL, InstanceSpec::new("linux-a002", &ts(2)));
    d.add_instance(ZONAL, InstanceSpec::new("linux-a003", &ts(3)));
    let e = executor(&d, |_| {}).await;
    let p = pool("linux", ZONAL, 10);

    // Wants 0, two are busy: only the idle one goes.
    let dir = Dir::busy(&["linux-a001", "linux-a003"]);
    let out = run(&e, &p, 0, &dir, false).await.unwrap();
    assert_eq!(d.target_size(ZONAL), Some(2));
    assert_eq!(out.applied, Some(2));
    assert!(out.revisit);
    assert!(
        out.actions[0].contains("[linux-a002]")
            && out.actions[0].contains("2 held up by busy workers"),
        "{:?}",
        out.actions
    );

    // Everything busy: no mutating call at all.
    d.clear_requests();
    let out = run(&e, &p, 0, &dir, false).await.unwrap();
    assert!(out.actions.is_empty());
    assert!(out.revisit);
    assert_eq!(out.applied, Some(2));
    assert!(d
        .requests()
        .iter()
        .all(|r| !r.path.ends_with("/deleteInstances") && !r.path.ends_with("/resize")));
}

#[tokio::test]
async fn instances_being_created_count_toward_the_size_and_go_first() {
    let (_, d) = ComputeDouble::start();
    d.add_group(ZONAL, GOOD_LABELS);
    d.add_instance(ZONAL, InstanceSpec::new("linux-old1", &ts(1)));
    d.add_instance(ZONAL, InstanceSpec::new("linux-new1", &ts(9)).creating());
    d.add_instance(ZONAL, InstanceSpec::new("linux-old2", &ts(2)));
    let e = executor(&d, |_| {}).await;
    let p = pool("linux", ZONAL, 10);

    // 3 wanted, 3 in the group (one still booting): nothing to do, and no POST but the
    // first cycle's listing.
    let out = run(&e, &p, 3, &Dir::default(), false).await.unwrap();
    assert!(out.actions.is_empty());
    assert_eq!(out.applied, Some(3));
    assert!(posts(&d.requests())
        .iter()
        .all(|r| r.path.ends_with("/listManagedInstances")));

    // 2 wanted: the booting instance goes first (it has no worker yet, and removing it
    // saves the rest of its boot).
    let out = run(&e, &p, 2, &Dir::default(), false).await.unwrap();
    assert!(
        out.actions[0].contains("[linux-new1] (booting, not needed;"),
        "{:?}",
        out.actions
    );
    assert_eq!(d.target_size(ZONAL), Some(2));
    // 1 wanted: then the oldest idle one.
    let out = run(&e, &p, 1, &Dir::default(), false).await.unwrap();
    assert!(out.actions[0].contains("[linux-old1]"), "{:?}", out.actions);
    assert_eq!(d.instance_names(ZONAL), vec!["linux-old2"]);
}

#[tokio::test]
async fn regional_groups_scale_out_and_in_across_zones() {
    let (_, d) = ComputeDouble::start();
    d.add_group(REGIONAL, GOOD_LABELS);
    // Scale-in needs proactive redistribution off (see group_tests).
    d.set_redistribution(REGIONAL, Some("NONE"));
    d.add_instance(
        REGIONAL,
        InstanceSpec::new("linux-r-z1a", &ts(1)).zone("us-east1-b"),
    );
    d.add_instance(
        REGIONAL,
        InstanceSpec::new("linux-r-z2a", &ts(2)).zone("us-east1-c"),
    );
    d.add_instance(
        REGIONAL,
        InstanceSpec::new("linux-r-z3a", &ts(3)).zone("us-east1-d"),
    );
    d.set_zones(REGIONAL, &["us-east1-b", "us-east1-c", "us-east1-d"]);
    d.set_operation_polls(2);
    let e = executor(&d, |_| {}).await;
    // The short form with the project from the config.
    let p = pool(
        "linux",
        "regions/us-east1/instanceGroupManagers/linux-r",
        10,
    );

    let out = run(&e, &p, 6, &Dir::default(), false).await.unwrap();
    assert_eq!(d.target_size(REGIONAL), Some(6));
    assert!(
        out.actions[0].starts_with(&format!("resize {REGIONAL} from 3 to 6")),
        "{:?}",
        out.actions
    );
    assert_eq!(
        d.count(
            "POST",
            "/regions/us-east1/instanceGroupManagers/linux-r/resize"
        ),
        1
    );
    assert_eq!(d.count("GET", "/regions/us-east1/operations/"), 2);

    // Scale in to 2: of the six, the two busy ones stay and the oldest idle ones go.
    d.clear_requests();
    let dir = Dir::busy(&["linux-r-z1a"]);
    let out = run(&e, &p, 2, &dir, false).await.unwrap();
    assert_eq!(d.target_size(REGIONAL), Some(2));
    assert!(
        out.actions[0].contains("[linux-r-z2a, linux-r-z3a,"),
        "{:?}",
        out.actions
    );
    assert_eq!(
        d.count(
            "POST",
            "/regions/us-east1/instanceGroupManagers/linux-r/deleteInstances"
        ),
        1
    );
    // One instances.list per zone the group's instances live in.
    for z in ["us-east1-b", "us-east1-c", "us-east1-d"] {
        assert!(d.count("GET", &format!("/zones/{z}/instances")) >= 1, "{z}");
    }
    let del = d
        .requests()
        .into_iter()
        .find(|r| r.path.ends_with("/deleteInstances"))
        .unwrap();
    assert!(
        del.body.contains("/zones/us-east1-c/instances/linux-r-z2a"),
        "{}",
        del.body
    );
    assert!(d
        .instance_names(REGIONAL)
        .contains(&"linux-r-z1a".to_string()));
}

#[tokio::test]
async fn steady_state_is_one_get_and_no_post() {
    let (_, d) = ComputeDouble::start();
    d.add_group(ZONAL, GOOD_LABELS);
    for i in 0..3 {
        d.add_instance(ZONAL, InstanceSpec::new(&format!("linux-s00{i}"), &ts(i)));
    }
    let e = executor(&d, |_| {}).await;
    let p = pool("linux", ZONAL, 10);
    // A fresh process lists the group once, to learn whether any instance is draining (a
    // draining instance is not capacity); after that a cycle at target is one GET.
    run(&e, &p, 3, &Dir::default(), false).await.unwrap();
    assert_eq!(d.count("POST", "/listManagedInstances"), 2); // 3 members, 2 per page
    for cycle in 1..=3 {
        d.clear_requests();
        let out = run(&e, &p, 3, &Dir::default(), false).await.unwrap();
        assert!(out.actions.is_empty());
        let reqs = d.requests();
        assert_eq!(reqs.len(), 1, "cycle {cycle}: {reqs:?}");
        assert_eq!(reqs[0].method, "GET");
        assert_eq!(reqs[0].path, format!("/compute/v1/{ZONAL}"));
    }
    assert_eq!(d.mutations_applied(), 0);
}

#[tokio::test]
async fn http_errors_are_classified_and_name_pool_and_group() {
    let (_, d) = ComputeDouble::start();
    d.add_group(ZONAL, GOOD_LABELS);
    let e = executor(&d, |_| {}).await;

    // 404: no such group.
    let missing = "projects/proj-1/zones/us-central1-a/instanceGroupManagers/nope";
    let err = run(&e, &pool("linux", missing, 10), 1, &Dir::default(), false)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound);
    assert!(
        err.to_string().contains("pool linux") && err.to_string().contains(missing),
        "{err}"
    );
    assert!(err.to_string().contains("HTTP 404 notFound"), "{err}");

    // 403: no permission; not retried.
    d.clear_requests();
    d.fail_next("GET", "/instanceGroupManagers/linux", 403, "forbidden", 10);
    let err = run(&e, &pool("linux", ZONAL, 10), 1, &Dir::default(), false)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::PermissionDenied);
    assert!(
        err.to_string().contains("roles/compute.instanceAdmin.v1"),
        "{err}"
    );
    assert_eq!(d.requests().len(), 1, "403 is not retried");
}

#[tokio::test]
async fn throttling_and_5xx_are_retried_even_for_mutating_calls() {
    let (_, d) = ComputeDouble::start();
    d.add_group(ZONAL, GOOD_LABELS);
    d.set_operation_polls(1);
    let e = executor(&d, |_| {}).await;
    let p = pool("linux", ZONAL, 10);

    // 429 on the get, once: retried, succeeds.
    d.fail_next(
        "GET",
        "/instanceGroupManagers/linux",
        429,
        "rateLimitExceeded",
        1,
    );
    // 503 on the resize POST, once: retried with the same request id, succeeds.
    d.fail_next("POST", "/resize", 503, "backendError", 1);
    // 403 rateLimitExceeded on the operation poll, once: that is throttling, retried.
    d.fail_next("GET", "/operations/", 403, "rateLimitExceeded", 1);
    let out = run(&e, &p, 2, &Dir::default(), false).await.unwrap();
    assert_eq!(out.applied, Some(2));
    assert_eq!(d.target_size(ZONAL), Some(2));
    assert_eq!(d.count("GET", "/instanceGroupManagers/linux"), 2);
    let resizes: Vec<_> = d
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/resize"))
        .collect();
    assert_eq!(resizes.len(), 2);
    assert_eq!(resizes[0].param("requestId"), resizes[1].param("requestId"));
    assert_eq!(d.count("GET", "/operations/"), 2);

    // Persistent 503: a clear Unavailable error after every attempt.
    d.clear_requests();
    d.fail_next("POST", "/resize", 503, "backendError", 100);
    let err = run(&e, &p, 3, &Dir::default(), false).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unavailable);
    let msg = err.to_string();
    assert!(
        msg.contains("pool linux") && msg.contains(ZONAL) && msg.contains("HTTP 503"),
        "{msg}"
    );
    assert!(msg.contains("after 4 attempts"), "{msg}");
    assert_eq!(d.count("POST", "/resize"), 4);

    // Persistent 429: Throttled.
    d.clear_requests();
    d.fail_next(
        "GET",
        "/instanceGroupManagers/linux",
        429,
        "rateLimitExceeded",
        100,
    );
    let err = run(&e, &p, 3, &Dir::default(), false).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Throttled);
    assert_eq!(d.count("GET", "/instanceGroupManagers/linux"), 4);
}

#[tokio::test]
async fn a_hung_request_times_out_and_is_retried() {
    let (_, d) = ComputeDouble::start();
    d.add_group(ZONAL, GOOD_LABELS);
    d.stall_next(
        "GET",
        "/instanceGroupManagers/linux",
        1,
        std::time::Duration::from_secs(4),
    );
    let e = executor(&d, |c| c.request_timeout_seconds = 1).await;
    let started = std::time::Instant::now();
    let out = run(&e, &pool("linux", ZONAL, 10), 0, &Dir::default(), false)
        .await
        .unwrap();
    assert_eq!(out.applied, Some(0));
    assert_eq!(d.count("GET", "/instanceGroupManagers/linux"), 2);
    let took = started.elapsed();
    assert!(
        took >= std::time::Duration::from_secs(1) && took < std::time::Duration::from_secs(3),
        "{took:?}"
    );

    // Hung every time: a Timeout error after the attempts.
    d.stall_next(
        "GET",
        "/instanceGroupManagers/linux",
        10,
        std::time::Duration::from_secs(4),
    );
    let e = executor(&d, |c| {
        c.request_timeout_seconds = 1;
        c.max_attempts = 2;
    })
    .await;
    let err = run(&e, &pool("linux", ZONAL, 10), 0, &Dir::default(), false)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Timeout, "{err}");
    assert!(err.to_string().contains("after 2 attempts"), "{err}");
}

#[tokio::test]
async fn a_lost_response_is_not_applied_twice() {
    let (_, d) = ComputeDouble::start();
    d.add_group(ZONAL, GOOD_LABELS);
    d.add_instance(ZONAL, InstanceSpec::new("linux-l001", &ts(1)));
    d.add_instance(ZONAL, InstanceSpec::new("linux-l002", &ts(2)));
    d.set_operation_polls(1);
    let e = executor(&d, |_| {}).await;
    let p = pool("linux", ZONAL, 10);

    d.fail_after_apply("POST", "/resize", 503, "backendError", 1);
    run(&e, &p, 4, &Dir::default(), false).await.unwrap();
    assert_eq!(d.count("POST", "/resize"), 2);
    assert_eq!(
        d.mutations_applied(),
        1,
        "the retry was deduplicated by its request id"
    );
    assert_eq!(d.target_size(ZONAL), Some(4));

    d.fail_after_apply("POST", "/deleteInstances", 502, "backendError", 1);
    let out = run(&e, &p, 3, &Dir::default(), false).await.unwrap();
    assert_eq!(d.count("POST", "/deleteInstances"), 2);
    assert_eq!(d.mutations_applied(), 2);
    assert_eq!(d.target_size(ZONAL), Some(3));
    assert!(out.actions[0].contains("[linux-l001]"), "{:?}", out.actions);
}

fn capture_logs() -> (Arc<Mutex<Vec<u8>>>, tracing::subscriber::DefaultGuard) {
    #[derive(Clone)]
    struct W(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for W {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Arc::new(Mutex::new(Vec::new()));
    let w = W(buf.clone());
    let sub = tracing_subscriber::fmt()
        .with_writer(move || w.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    (buf, tracing::subscriber::set_default(sub))
}

#[tokio::test]
async fn missing_labels_are_warned_once_per_pool() {
    let (buf, _guard) = capture_logs();
    let (_, d) = ComputeDouble::start();
    d.add_group(ZONAL, &[("vespene_worker", "true")]); // no vespene_pool
    for i in 0..4 {
        d.add_instance(ZONAL, InstanceSpec::new(&format!("linux-m00{i}"), &ts(i)));
    }
    d.add_group(
        REGIONAL,
        &[("vespene_worker", "true"), ("vespene_pool", "linux_r")],
    );
    d.set_redistribution(REGIONAL, Some("NONE"));
    for i in 0..3 {
        d.add_instance(
            REGIONAL,
            InstanceSpec::new(&format!("linux-r-m{i}"), &ts(i)),
        );
    }
    let e = executor(&d, |_| {}).await;
    let p = pool("linux", ZONAL, 10);
    run(&e, &p, 3, &Dir::default(), false).await.unwrap();
    run(&e, &p, 2, &Dir::default(), false).await.unwrap();
    run(&e, &p, 1, &Dir::default(), true).await.unwrap();
    // A pool whose instances are labelled for it: no warning.
    run(
        &e,
        &pool("Linux R", REGIONAL, 10),
        2,
        &Dir::default(),
        false,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    // A pool pointed at instances labelled for another pool: its own warning.
    run(&e, &pool("other", REGIONAL, 10), 1, &Dir::default(), false)
        .await
        .unwrap();
    run(&e, &pool("other", REGIONAL, 10), 0, &Dir::default(), false)
        .await
        .unwrap();

    let logs = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
    assert_eq!(logs.matches("lack the labels").count(), 2, "{logs}");
    assert_eq!(
        logs.matches("vespene_worker=true and vespene_pool=linux ")
            .count(),
        1,
        "{logs}"
    );
    assert!(logs.contains("4 of 4 instances"), "{logs}");
    assert_eq!(logs.matches("vespene_pool=other ").count(), 1, "{logs}");
    assert!(!logs.contains("vespene_pool=linux_r "), "{logs}");
}

#[tokio::test]
async fn dry_run_describes_and_sends_nothing_mutating() {
    let (_, d) = ComputeDouble::start();
    d.add_group(ZONAL, GOOD_LABELS);
    d.add_instance(ZONAL, InstanceSpec::new("linux-d001", &ts(1)));
    d.add_instance(ZONAL, InstanceSpec::new("linux-d002", &ts(2)));
    let e = executor(&d, |_| {}).await;
    let p = pool("linux", ZONAL, 10);

    let out = run(&e, &p, 5, &Dir::default(), true).await.unwrap();
    assert_eq!(
        out.actions,
        vec![format!(
            "would resize {ZONAL} from 2 to 5 instances (5 workers)"
        )]
    );
    let out = run(&e, &p, 1, &Dir::default(), true).await.unwrap();
    assert_eq!(
        out.actions,
        vec![format!(
            "would deleteInstances {ZONAL} [linux-d001] (idle, oldest first; target size 2 -> 1)"
        )]
    );
    let reqs = d.requests();
    assert!(
        reqs.iter()
            .all(|r| !r.path.ends_with("/resize") && !r.path.ends_with("/deleteInstances")),
        "{reqs:?}"
    );
    assert_eq!(d.target_size(ZONAL), Some(2));
    assert_eq!(d.mutations_applied(), 0);
}

#[tokio::test]
async fn bad_commands_and_a_broken_directory_are_clear_errors() {
    let (_, d) = ComputeDouble::start();
    d.add_group(ZONAL, GOOD_LABELS);
    d.add_instance(ZONAL, InstanceSpec::new("linux-x001", &ts(1)));
    let e = executor(&d, |c| c.project = None).await;

    let err = run(
        &e,
        &pool(
            "linux",
            "zones/us-central1-a/instanceGroupManagers/linux",
            10,
        ),
        1,
        &Dir::default(),
        false,
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Config);
    let msg = err.to_string();
    assert!(msg.starts_with("pool linux: executor_command"), "{msg}");
    assert!(
        msg.contains("needs `project`")
            && msg.contains("projects/PROJECT/zones/ZONE/instanceGroupManagers/NAME"),
        "{msg}"
    );

    let err = run(
        &e,
        &pool("linux", "gcloud compute resize {{ size }}", 10),
        1,
        &Dir::default(),
        false,
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Config);
    assert!(err.to_string().contains("gcloud compute resize 1"), "{err}");

    let err = run(
        &e,
        &pool("linux", "{{ nope }}", 10),
        1,
        &Dir::default(),
        false,
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Template);
    assert!(err.to_string().contains("executor_command"), "{err}");

    // Templates work: the group named after the pool.
    let templated = pool(
        "linux",
        "projects/proj-1/zones/us-central1-a/instanceGroupManagers/{{ worker_pool.name }}",
        10,
    );
    let out = run(&e, &templated, 1, &Dir::default(), false)
        .await
        .unwrap();
    assert_eq!(out.applied, Some(1));

    // The database cannot say who is busy: no scale-in.
    d.clear_requests();
    let broken = Dir::failing();
    let err = run(&e, &templated, 0, &broken, false).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Directory);
    assert!(err.to_string().contains("not scaling in"), "{err}");
    assert_eq!(d.count("POST", "/deleteInstances"), 0);
    assert_eq!(d.target_size(ZONAL), Some(1));
}

#[tokio::test]
async fn status_reports_target_and_present_instances() {
    let (_, d) = ComputeDouble::start();
    d.add_group(ZONAL, GOOD_LABELS);
    d.add_instance(ZONAL, InstanceSpec::new("linux-t001", &ts(1)));
    d.add_instance(ZONAL, InstanceSpec::new("linux-t002", &ts(2)).creating());
    let e = executor(&d, |c| c.workers_per_instance = 2).await;
    let st = e.status(&pool("linux", ZONAL, 10)).await.unwrap().unwrap();
    assert_eq!(st.target, ZONAL);
    assert_eq!(st.desired, 4);
    assert_eq!(st.current, 4);
    assert_eq!(e.name(), "gce-mig");
    assert!(e.declarative());
}

#[tokio::test]
async fn operation_timeout_is_reported() {
    let (_, d) = ComputeDouble::start();
    d.add_group(ZONAL, GOOD_LABELS);
    d.set_operation_polls(1_000_000);
    let e = executor(&d, |c| c.operation_timeout_seconds = 1).await;
    let started = std::time::Instant::now();
    let err = run(&e, &pool("linux", ZONAL, 10), 1, &Dir::default(), false)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Timeout);
    assert!(err.to_string().contains("still RUNNING after 1s"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

/// The numbers for the report: requests per cycle against the double with the client's
/// default page size (500), i.e. what one cycle costs against Compute.
#[tokio::test]
async fn requests_per_cycle() {
    let (_, d) = ComputeDouble::start();
    d.set_page_size(500);
    d.set_operation_polls(1);
    d.add_group(ZONAL, GOOD_LABELS);
    for i in 0..10 {
        d.add_instance(ZONAL, InstanceSpec::new(&format!("linux-n{i:03}"), &ts(i)));
    }
    let e = executor(&d, |c| c.poll_interval_ms = 1).await;
    let p = pool("linux", ZONAL, 20);
    let summary = |reqs: &[RecordedRequest]| {
        reqs.iter()
            .map(|r| format!("{} {}", r.method, r.path.rsplit('/').next().unwrap()))
            .collect::<Vec<_>>()
            .join(", ")
    };

    run(&e, &p, 10, &Dir::default(), false).await.unwrap(); // first cycle: learns no drains
    d.clear_requests();
    run(&e, &p, 10, &Dir::default(), false).await.unwrap();
    let steady = d.requests();
    eprintln!(
        "steady state: {} request(s): {}",
        steady.len(),
        summary(&steady)
    );
    assert_eq!(steady.len(), 1);

    d.clear_requests();
    run(&e, &p, 14, &Dir::default(), false).await.unwrap();
    let out = d.requests();
    eprintln!("scale-out: {} request(s): {}", out.len(), summary(&out));
    assert_eq!(out.len(), 3); // get, resize, operations.get

    d.clear_requests();
    let dir = Dir::busy(&["linux-n000"]);
    run(&e, &p, 11, &dir, false).await.unwrap();
    let inn = d.requests();
    eprintln!(
        "scale-in (zonal, 14 instances, 3 deleted): {} request(s): {}",
        inn.len(),
        summary(&inn)
    );
    // get, listManagedInstances, instances.list, deleteInstances, operations.get
    assert_eq!(inn.len(), 5);

    // Regional: one instances.list per zone the group's instances are in.
    d.add_group(REGIONAL, GOOD_LABELS);
    // Scale-in needs proactive redistribution off (see group_tests).
    d.set_redistribution(REGIONAL, Some("NONE"));
    for (i, z) in ["us-east1-a", "us-east1-b", "us-east1-c", "us-east1-a"]
        .iter()
        .enumerate()
    {
        d.add_instance(
            REGIONAL,
            InstanceSpec::new(&format!("linux-r-n{i}"), &ts(i as u32)).zone(z),
        );
    }
    let rp = pool("linux", REGIONAL, 20);
    run(&e, &rp, 4, &Dir::default(), false).await.unwrap(); // first cycle: learns no drains
    d.clear_requests();
    run(&e, &rp, 4, &Dir::default(), false).await.unwrap();
    assert_eq!(d.requests().len(), 1);
    d.clear_requests();
    run(&e, &rp, 2, &Dir::default(), false).await.unwrap();
    let reg = d.requests();
    eprintln!(
        "scale-in (regional, 3 zones, 2 deleted): {} request(s): {}",
        reg.len(),
        summary(&reg)
    );
    assert_eq!(reg.len(), 7);
}
