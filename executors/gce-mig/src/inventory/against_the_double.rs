//! The audit's read-only fleet description against the Compute double.

use super::*;
use crate::Config;
use autoscaler_executor::{InstanceState, InventoryInstance, LaunchFailure};
use autoscaler_gce_double::{ComputeDouble, InstanceSpec};

const ZONAL: &str = "projects/proj-1/zones/us-central1-a/instanceGroupManagers/linux";
const OTHER: &str = "projects/proj-1/zones/us-central1-a/instanceGroupManagers/gpu";
const REGIONAL: &str = "projects/proj-1/regions/us-east1/instanceGroupManagers/arm";
const LINUX: &[(&str, &str)] = &[("vespene_worker", "true"), ("vespene_pool", "linux")];
const GPU: &[(&str, &str)] = &[("vespene_worker", "true"), ("vespene_pool", "gpu")];
const ARM: &[(&str, &str)] = &[("vespene_worker", "true"), ("vespene_pool", "arm")];

fn ts(minute: u32) -> String {
    format!("2024-05-01T09:{minute:02}:00.000-07:00")
}

fn at(minute: u32) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(&ts(minute))
        .unwrap()
        .with_timezone(&Utc)
}

async fn executor(d: &ComputeDouble, retry_attempts: u32) -> GceMigExecutor {
    let cfg = Config {
        endpoint: Some(d.endpoint()),
        credentials: Some("anonymous".into()),
        project: Some("proj-1".into()),
        max_attempts: retry_attempts,
        retry_initial_backoff_ms: 5,
        retry_max_backoff_ms: 20,
        workers_per_instance: 2,
        ..Config::default()
    };
    GceMigExecutor::from_config_with_env(cfg, &|_| None)
        .await
        .expect("executor builds")
}

fn inv(e: &GceMigExecutor) -> &dyn Inventory {
    autoscaler_executor::Executor::inventory(e).expect("gce-mig has an inventory")
}

fn pool(id: i64, name: &str, path: &str) -> WorkerPool {
    let mut p = WorkerPool::with_defaults(id, name);
    p.executor = Some("gce-mig".into());
    p.executor_command = path.into();
    p
}

fn find<'a>(s: &'a InventorySnapshot, name: &str) -> &'a InventoryInstance {
    s.instances
        .iter()
        .find(|i| i.name == name)
        .unwrap_or_else(|| panic!("{name} not in {:?}", s.instances))
}

#[tokio::test]
async fn a_zonal_fleet_is_described_read_only_and_cheaply() {
    let (_, d) = ComputeDouble::start();
    d.add_group(ZONAL, LINUX);
    d.add_group(OTHER, GPU);
    d.add_instance(ZONAL, InstanceSpec::new("linux-a", &ts(1)));
    d.add_instance(ZONAL, InstanceSpec::new("linux-b", &ts(2)));
    d.add_instance(ZONAL, InstanceSpec::new("linux-c", &ts(3)).creating());
    d.add_instance(ZONAL, InstanceSpec::new("linux-bare", &ts(4)).unlabelled());
    d.add_instance(
        ZONAL,
        InstanceSpec::new("linux-old", &ts(0)).deleting(&ts(5)),
    );
    // In the gpu group but labelled for linux; and a linux worker outside every group.
    d.add_instance(OTHER, InstanceSpec::new("gpu-x", &ts(6)).labels(LINUX));
    d.add_loose_instance(
        "proj-1",
        "us-central1-a",
        InstanceSpec::new("by-hand", &ts(7))
            .labels(LINUX)
            .created_by(ZONAL),
    );
    // Not labelled and in no group: none of the audit's business.
    d.add_stray_instance("proj-1", "us-central1-a", "someone-else", &ts(8));
    // Labelled, but in a zone no audited group uses: outside the scope.
    d.add_loose_instance(
        "proj-1",
        "europe-west1-b",
        InstanceSpec::new("far-away", &ts(9)).labels(LINUX),
    );
    let e = executor(&d, 2).await;
    let linux = pool(
        1,
        "linux",
        "zones/us-central1-a/instanceGroupManagers/{{ worker_pool.name }}",
    );
    let gpu = pool(2, "gpu", OTHER);
    d.clear_requests();
    let snap = inv(&e).inventory(&[&linux, &gpu]).await.unwrap();

    let reqs = d.requests();
    assert!(
        reqs.iter()
            .all(|r| r.method == "GET" || r.path.ends_with("/listManagedInstances")),
        "read-only: {reqs:?}"
    );
    assert_eq!(d.mutations_applied(), 0);
    assert_eq!(snap.api_calls as usize, reqs.len(), "every request counted");
    // 2 gets + listManagedInstances (linux: 5 members at page size 2 = 3 pages; gpu: 1)
    // + labelled list (5 labelled in the zone = 3 pages) + unlabelled members by name (1)
    // + delete operations (1).
    assert_eq!(d.count("GET", "/instanceGroupManagers/"), 2);
    assert_eq!(d.count("POST", "/listManagedInstances"), 4);
    assert_eq!(d.count("GET", "/instances"), 4, "{reqs:?}");
    assert_eq!(d.count("GET", "/operations"), 1);
    assert_eq!(reqs.len(), 11);
    let filters: Vec<&str> = reqs.iter().filter_map(|r| r.param("filter")).collect();
    assert!(filters.contains(&WORKER_FILTER), "{filters:?}");
    assert!(filters.contains(&"(name = \"linux-bare\")"), "{filters:?}");
    assert!(filters.contains(&DELETE_FILTER), "{filters:?}");

    assert_eq!(
        snap.scope,
        vec!["projects/proj-1/zones/us-central1-a".to_string()]
    );
    let g = snap.pools[0].group.as_ref().unwrap();
    assert_eq!(snap.pools[0].pool_tag, "linux");
    assert_eq!(g.target, ZONAL);
    assert_eq!(g.desired, 4, "the deleting member has left the target size");
    assert_eq!(g.members.len(), 5);
    assert_eq!(g.workers_per_instance, 2);
    assert!(g
        .members
        .contains(&"projects/proj-1/zones/us-central1-a/instances/linux-old".to_string()));

    let a = find(&snap, "linux-a");
    assert_eq!(a.state, InstanceState::Running);
    assert_eq!(a.launched, Some(at(1)));
    assert_eq!(a.state_since, Some(at(1)));
    assert_eq!(a.group.as_deref(), Some(ZONAL));
    assert_eq!(
        a.tags.get("vespene_pool").map(String::as_str),
        Some("linux")
    );
    assert!(a.hostnames.contains(&"linux-a".to_string()));
    assert!(a
        .hostnames
        .contains(&"linux-a.us-central1-a.c.proj-1.internal".to_string()));
    assert!(
        a.hostnames.iter().any(|h| h.starts_with("10.128.")),
        "{:?}",
        a.hostnames
    );
    assert!(a.described);

    let c = find(&snap, "linux-c");
    assert_eq!(c.state, InstanceState::Pending);
    assert_eq!(c.raw_state, "PROVISIONING/CREATING");

    let bare = find(&snap, "linux-bare");
    assert!(bare.described && bare.tags.is_empty(), "{bare:?}");
    assert_eq!(bare.group.as_deref(), Some(ZONAL));

    let old = find(&snap, "linux-old");
    assert_eq!(old.state, InstanceState::Terminating);
    assert_eq!(
        old.state_since,
        Some(at(5)),
        "dated by its delete operation"
    );

    let x = find(&snap, "gpu-x");
    assert_eq!(x.group.as_deref(), Some(OTHER));
    let by_hand = find(&snap, "by-hand");
    assert_eq!(
        by_hand.group.as_deref(),
        Some(ZONAL),
        "created-by (project number) maps back to the group path"
    );
    assert!(!snap.pools[0]
        .group
        .as_ref()
        .unwrap()
        .members
        .contains(&by_hand.id));
    assert!(snap
        .instances
        .iter()
        .all(|i| i.name != "someone-else" && i.name != "far-away"));
}

#[tokio::test]
async fn a_regional_group_is_scanned_in_each_of_its_zones() {
    let (_, d) = ComputeDouble::start();
    d.set_page_size(500);
    d.add_group(REGIONAL, ARM);
    d.set_zones(REGIONAL, &["us-east1-b", "us-east1-c"]);
    d.add_instance(
        REGIONAL,
        InstanceSpec::new("arm-1", &ts(1)).zone("us-east1-b"),
    );
    d.add_loose_instance(
        "proj-1",
        "us-east1-c",
        InstanceSpec::new("arm-lost", &ts(2)).labels(ARM),
    );
    let e = executor(&d, 2).await;
    let arm = pool(3, "arm", REGIONAL);
    d.clear_requests();
    let snap = inv(&e).inventory(&[&arm]).await.unwrap();
    assert_eq!(
        snap.scope,
        vec![
            "projects/proj-1/zones/us-east1-b".to_string(),
            "projects/proj-1/zones/us-east1-c".to_string()
        ]
    );
    assert_eq!(snap.instances.len(), 2);
    assert_eq!(find(&snap, "arm-lost").group, None);
    // get + listManagedInstances + one labelled list per zone.
    assert_eq!(d.requests().len(), 4, "{:?}", d.requests());
    assert_eq!(snap.api_calls, 4);
}

#[tokio::test]
async fn a_missing_group_fails_its_pool_alone_and_an_unreachable_zone_fails_all() {
    let (_, d) = ComputeDouble::start();
    d.add_group(ZONAL, LINUX);
    d.add_instance(ZONAL, InstanceSpec::new("linux-a", &ts(1)));
    let e = executor(&d, 2).await;
    let linux = pool(1, "linux", ZONAL);
    let ghost = pool(
        2,
        "ghost",
        "projects/proj-1/zones/us-central1-a/instanceGroupManagers/ghost",
    );
    let bad = pool(3, "bad", "not a group");
    let snap = inv(&e).inventory(&[&linux, &ghost, &bad]).await.unwrap();
    assert!(snap.pools[0].group.is_ok());
    let err = snap.pools[1].group.as_ref().unwrap_err();
    assert_eq!(err.kind, autoscaler_executor::ErrorKind::NotFound);
    assert!(err.to_string().starts_with("pool ghost: reading "), "{err}");
    let err = snap.pools[2].group.as_ref().unwrap_err();
    assert_eq!(err.kind, autoscaler_executor::ErrorKind::Config);

    d.fail_next(
        "GET",
        "/zones/us-central1-a/instances",
        503,
        "backendError",
        5,
    );
    let err = inv(&e).inventory(&[&linux]).await.unwrap_err();
    assert_eq!(err.kind, autoscaler_executor::ErrorKind::Unavailable);
    let msg = err.to_string();
    assert!(
        msg.contains("listing instances labelled vespene_worker=true in zone us-central1-a"),
        "{msg}"
    );
    assert!(msg.contains("after 2 attempts"), "{msg}");
}

/// Members stuck creating with errors become the group's launch failures, with the cloud's
/// code and words and dated by `listErrors`, which is read only for a group that has some.
#[tokio::test]
async fn launches_that_fail_are_reported_with_the_clouds_reason_and_date() {
    let (_, d) = ComputeDouble::start();
    d.add_group(ZONAL, LINUX);
    d.add_group(OTHER, GPU);
    d.add_instance(ZONAL, InstanceSpec::new("linux-a", &ts(1)));
    d.add_instance(
        ZONAL,
        InstanceSpec::new("linux-q", &ts(2)).failing(
            "QUOTA_EXCEEDED",
            "Quota 'CPUS' exceeded.  Limit: 8.0 in region us-central1.",
            &ts(3),
        ),
    );
    d.add_instance(OTHER, InstanceSpec::new("gpu-c", &ts(4)).creating());
    let e = executor(&d, 2).await;
    let snap = inv(&e)
        .inventory(&[&pool(1, "linux", ZONAL), &pool(2, "gpu", OTHER)])
        .await
        .unwrap();
    let linux = snap.pools[0].group.as_ref().unwrap();
    assert_eq!(
        linux.launch_failures,
        vec![LaunchFailure {
            reason: "QUOTA_EXCEEDED".into(),
            message: "Quota 'CPUS' exceeded.  Limit: 8.0 in region us-central1.".into(),
            instance: Some("linux-q".into()),
            since: Some(at(3)),
        }]
    );
    // Creating without errors is no failure; only the failing group's errors were listed.
    assert!(snap.pools[1]
        .group
        .as_ref()
        .unwrap()
        .launch_failures
        .is_empty());
    assert_eq!(d.count("GET", "/listErrors"), 1);
    assert!(d
        .requests()
        .iter()
        .any(|r| r.path.ends_with("/linux/listErrors")));
}
