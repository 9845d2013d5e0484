//! The real `autoscaler` binary with the gce-mig executor, against the in-process Compute REST
//! double (no GCE emulator exists) and a PostgreSQL Vespene database.

mod common;

use autoscaler_gce_double::{ComputeDouble, InstanceSpec};
use common::{shell_pool, TestDb};
use std::process::Output;

const GROUP: &str = "projects/p1/zones/us-central1-a/instanceGroupManagers/linux-mig";
const LABELS: &[(&str, &str)] = &[("vespene_worker", "true"), ("vespene_pool", "linux")];

fn run(t: &TestDb, double: &ComputeDouble, cfg: &std::path::Path, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_autoscaler"))
        .arg("--database-url")
        .arg(&t.url)
        .arg("--config")
        .arg(cfg)
        .args(args)
        .env("AUTOSCALER_GCE_ENDPOINT", double.endpoint())
        .env("AUTOSCALER_GCE_CREDENTIALS", "anonymous")
        .env("RUST_LOG", "info")
        .output()
        .unwrap()
}

#[tokio::test]
async fn gce_mig_end_to_end_on_postgres() {
    let t = TestDb::postgres().await;
    let (_addr, double) = ComputeDouble::start();
    double.set_operation_polls(1);
    double.add_group(GROUP, LABELS);
    for (name, created) in [
        ("w-old", "2026-01-01T00:00:00.000-07:00"),
        ("w-mid", "2026-02-01T00:00:00.000-07:00"),
        ("w-new", "2026-03-01T00:00:00.000-07:00"),
    ] {
        double.add_instance(GROUP, InstanceSpec::new(name, created).labels(LABELS));
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("autoscaler.toml");
    std::fs::write(&cfg, "[executors.gce-mig]\npoll_interval_ms = 20\n").unwrap();

    let mut linux = shell_pool(
        1,
        "linux",
        "projects/p1/zones/us-central1-a/instanceGroupManagers/{{ worker_pool.name }}-mig",
    );
    linux.executor = Some("gce-mig".into());
    let mut broken = shell_pool(2, "broken", "zones/us-central1-a/linux-mig");
    broken.executor = Some("gce-mig".into());
    t.add_pool(&linux).await;
    t.add_pool(&broken).await;
    t.add_worker(1, "w-old").await;
    t.add_builds(&[
        (1, 1, "QUEUED", Some(1), None),
        (2, 1, "QUEUED", Some(2), None),
        (3, 1, "QUEUED", Some(3), None),
        (4, 1, "QUEUED", Some(4), None),
        (5, 1, "RUNNING", Some(5), Some(1)),
    ])
    .await;

    // Scale out: 4 queued + 1 running = 5 workers; the group has 3.
    let out = run(
        &t,
        &double,
        &cfg,
        &["--queue", "linux", "--queue", "broken", "--force"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the broken pool fails the run\n{stderr}"
    );
    assert_eq!(double.target_size(GROUP), Some(5), "{stderr}");
    assert_eq!(t.status_of("linux").await.0, Some(0));
    assert_eq!(
        t.status_of("broken").await.0,
        Some(2),
        "malformed group path is a config error"
    );
    assert!(stderr.contains("pool broken: executor_command renders to \"zones/us-central1-a/linux-mig\", which is not a managed instance group"), "{stderr}");
    assert_eq!(double.count("POST", "/resize"), 1);
    assert!(
        double.requests().iter().all(|r| !r.path.contains("broken")),
        "no call for the broken pool"
    );
    let scale_out_requests = double.requests().len();

    // Same plan: nothing changes. A fresh process (each --force run is one) lists the group
    // once to learn whether an instance is draining (a draining instance is no capacity): a
    // get, then listManagedInstances and instances.list; in loop mode later cycles are one get.
    double.clear_requests();
    let out = run(&t, &double, &cfg, &["--queue", "linux", "--force"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let steady: Vec<_> = double.requests();
    assert_eq!(
        steady
            .iter()
            .filter(|r| r.method == "POST" && !r.path.ends_with("/listManagedInstances"))
            .count(),
        0,
        "{steady:?}"
    );
    // The double pages by 2: one get, then listing pages only.
    assert!(
        steady[1..]
            .iter()
            .all(|r| r.path.ends_with("/listManagedInstances")
                || (r.method == "GET" && r.path.ends_with("/instances"))),
        "{steady:?}"
    );
    assert_eq!(steady[0].method, "GET", "{steady:?}");
    assert_eq!(double.mutations_applied(), 1, "only the resize");

    // Scale in: the queue drains; w-old still runs build 5, so it survives; the rest are idle.
    t.exec("UPDATE builds SET status = 'SUCCESS' WHERE status = 'QUEUED'")
        .await;
    double.clear_requests();
    let out = run(&t, &double, &cfg, &["--queue", "linux", "--force"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(
        double.instance_names(GROUP),
        vec!["w-old".to_string()],
        "{stderr}"
    );
    assert_eq!(
        double.count("POST", "/resize"),
        0,
        "scale-in never resizes down"
    );
    assert_eq!(double.count("POST", "/deleteInstances"), 1);
    let scale_in_requests = double.requests().len();
    println!("gce-mig requests per --force run: scale-out {scale_out_requests}, at target (get + one listing), scale-in {scale_in_requests}");

    // Dry run: describes, sends nothing mutating.
    t.exec("UPDATE builds SET status = 'QUEUED' WHERE id IN (1, 2)")
        .await;
    double.clear_requests();
    let out = run(
        &t,
        &double,
        &cfg,
        &["--queue", "linux", "--force", "--dry-run"],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("would resize"), "{stdout}");
    // A fresh process lists the group (a POST that reads); nothing that changes anything.
    assert!(
        double
            .requests()
            .iter()
            .all(|r| r.method == "GET" || r.path.ends_with("/listManagedInstances")),
        "{:?}",
        double.requests()
    );
    assert_eq!(double.instance_names(GROUP).len(), 1);
    t.cleanup().await;
}

#[tokio::test]
async fn gce_without_credentials_fails_its_pools_only_and_quickly() {
    let t = TestDb::sqlite().await;
    let mut gce = shell_pool(1, "gce", "zones/z/instanceGroupManagers/g");
    gce.executor = Some("gce-mig".into());
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("ran");
    let shell = shell_pool(2, "shell", &format!("touch {}", log.display()));
    t.add_pool(&gce).await;
    t.add_pool(&shell).await;
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        "[executors.gce-mig]\nproject = \"p\"\ncredentials = \"/nonexistent/key.json\"\n",
    )
    .unwrap();
    let started = std::time::Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_autoscaler"))
        .args(["--database-url", &t.url, "--config"])
        .arg(&cfg)
        .args(["--queue", "gce", "--queue", "shell", "--force"])
        .env_remove("AUTOSCALER_GCE_ENDPOINT")
        .env_remove("AUTOSCALER_GCE_CREDENTIALS")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("autoscaler: pool gce failed: pool gce:"),
        "{stderr}"
    );
    assert_eq!(
        t.status_of("gce").await.0,
        Some(4),
        "credentials status code\n{stderr}"
    );
    assert!(log.exists(), "the shell pool still ran");
    assert_eq!(t.status_of("shell").await.0, Some(0));
    t.cleanup().await;
}

/// Issue 13 as an operator sees it, from the real binary in its loop: a launch a quota holds
/// (status 13, the cloud's reason in the log line and in
/// `autoscaler_pool_launch_failures_total{pool,reason}`, and `launch_failing` in the audit),
/// a regional group that rebalances by itself refused a scale-in, and a group driven by a GCE
/// autoscaler refused (status 2 each, `kind="config"`). Run with `--nocapture` to see them.
#[tokio::test]
async fn what_an_operator_sees_when_the_cloud_cannot_do_it() {
    let t = TestDb::postgres().await;
    let (_addr, double) = ComputeDouble::start();
    double.set_operation_polls(1);
    let quota = "projects/p1/zones/us-central1-a/instanceGroupManagers/quota-mig";
    let rebal = "projects/p1/regions/us-east1/instanceGroupManagers/rebal-mig";
    let scaled = "projects/p1/zones/us-central1-a/instanceGroupManagers/scaled-mig";
    let labels = |pool: &'static str| [("vespene_worker", "true"), ("vespene_pool", pool)];
    double.add_group(quota, &labels("quota"));
    double.add_instance(
        quota,
        InstanceSpec::new("quota-ok01", "2026-03-01T00:00:00.000-07:00"),
    );
    double.add_instance(
        quota,
        InstanceSpec::new("quota-st01", "2026-03-01T00:10:00.000-07:00").failing(
            "QUOTA_EXCEEDED",
            "Quota 'CPUS' exceeded.  Limit: 8.0 in region us-central1.",
            "2026-03-01T00:10:00.000-07:00",
        ),
    );
    double.add_group(rebal, &labels("rebal"));
    for (i, z) in ["us-east1-a", "us-east1-b", "us-east1-c"]
        .iter()
        .enumerate()
    {
        double.add_instance(
            rebal,
            InstanceSpec::new(&format!("rebal-{i}"), "2026-03-01T00:00:00.000-07:00").zone(z),
        );
    }
    double.add_group(scaled, &labels("scaled"));
    double.add_instance(
        scaled,
        InstanceSpec::new("scaled-1", "2026-03-01T00:00:00.000-07:00"),
    );
    double.attach_autoscaler(scaled, "scaled-as");

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("autoscaler.toml");
    std::fs::write(&cfg, "[executors.gce-mig]\npoll_interval_ms = 20\n").unwrap();
    for (id, name, path) in [
        (1, "quota", quota),
        (2, "rebal", rebal),
        (3, "scaled", scaled),
    ] {
        let mut p = shell_pool(id, name, path);
        p.executor = Some("gce-mig".into());
        t.add_pool(&p).await;
    }
    // quota: 2 wanted (at its target of 2, one stuck); rebal: 0 wanted of 3; scaled: 3 of 1.
    t.add_builds(&[
        (1, 1, "QUEUED", Some(1), None),
        (2, 1, "QUEUED", Some(2), None),
        (3, 3, "QUEUED", Some(3), None),
        (4, 3, "QUEUED", Some(4), None),
        (5, 3, "QUEUED", Some(5), None),
    ])
    .await;

    let port = common::process::free_port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let args = [
        "--config",
        cfg.to_str().unwrap(),
        "--queue",
        "quota",
        "--queue",
        "rebal",
        "--queue",
        "scaled",
        "--sleep",
        "1",
        "--metrics-addr",
        &addr.to_string(),
    ];
    let endpoint = double.endpoint();
    let env = [
        ("AUTOSCALER_GCE_ENDPOINT", endpoint.as_str()),
        ("AUTOSCALER_GCE_CREDENTIALS", "anonymous"),
    ];
    let mut child = common::process::spawn(&t.url, &args, &env);
    let mut metrics = String::new();
    let served = common::process::wait_until(std::time::Duration::from_secs(30), || {
        metrics = common::process::http_get(addr, "/metrics").1;
        metrics.contains("autoscaler_pool_launch_failures_total{")
            && metrics.contains("pool=\"rebal\"")
            && metrics.contains("pool=\"scaled\"")
    });
    let (_, stderr) = common::process::terminate(&mut child);
    assert!(served.is_some(), "{metrics}\n{stderr}");

    assert_eq!(t.status_of("quota").await.0, Some(13), "{stderr}");
    assert_eq!(t.status_of("rebal").await.0, Some(2), "{stderr}");
    assert_eq!(t.status_of("scaled").await.0, Some(2), "{stderr}");
    let line = |pool: &str| {
        stderr
            .lines()
            .find(|l| l.contains("outcome=\"failed\"") && l.contains(&format!("pool={pool}")))
            .unwrap_or_else(|| panic!("no failure line for {pool}:\n{stderr}"))
            .to_string()
    };
    let (q, r, s) = (line("quota"), line("rebal"), line("scaled"));
    assert!(
        q.contains("status=13")
            && q.contains("reason=\"QUOTA_EXCEEDED\"")
            && q.contains("Quota 'CPUS' exceeded"),
        "{q}"
    );
    assert!(
        r.contains("status=2") && r.contains("instanceRedistributionType"),
        "{r}"
    );
    assert!(
        s.contains("status=2") && s.contains("autoscalers/scaled-as"),
        "{s}"
    );
    let metric = |name: &str, labels: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(&format!("{name}{{")) && l.contains(labels))
            .unwrap_or_else(|| panic!("no {name} with {labels}:\n{metrics}"))
            .to_string()
    };
    let m = [
        metric(
            "autoscaler_pool_launch_failures_total",
            "reason=\"QUOTA_EXCEEDED\"",
        ),
        metric("autoscaler_pool_executor_errors_total", "pool=\"quota\""),
        metric("autoscaler_pool_executor_errors_total", "pool=\"rebal\""),
        metric("autoscaler_pool_executor_errors_total", "pool=\"scaled\""),
    ];
    assert!(m[0].contains("pool=\"quota\""), "{}", m[0]);
    assert!(m[1].contains("kind=\"launch_failed\""), "{}", m[1]);
    assert!(m[2].contains("kind=\"config\"") && m[3].contains("kind=\"config\""));
    // Nothing was deleted or resized on the refused groups.
    assert_eq!(double.target_size(rebal), Some(3));
    assert_eq!(double.target_size(scaled), Some(1));

    let audit = std::process::Command::new(env!("CARGO_BIN_EXE_autoscaler"))
        .args(["audit", "--database-url", &t.url, "--config"])
        .arg(&cfg)
        .args(["--queue", "quota"])
        .env("AUTOSCALER_GCE_ENDPOINT", double.endpoint())
        .env("AUTOSCALER_GCE_CREDENTIALS", "anonymous")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&audit.stdout);
    let finding = report
        .lines()
        .find(|l| l.contains("launch_failing"))
        .unwrap_or_else(|| panic!("no launch_failing finding:\n{report}"));
    assert!(
        finding.contains("QUOTA_EXCEEDED") && finding.contains("quota-st01"),
        "{finding}"
    );
    eprintln!(
        "--- log lines\n{q}\n{r}\n{s}\n--- /metrics\n{}\n--- audit\n{report}",
        m.join("\n")
    );
    t.cleanup().await;
}

/// A pool whose cloud refuses is asked again on the next full cycle (every `--sleep`), not on
/// every fast poll (every `poll_seconds`): the engine forgets the size it applied after a failure,
/// which used to make each one-second poll call the cloud again.
#[tokio::test]
async fn a_refusing_group_is_retried_each_full_cycle_not_each_fast_poll() {
    let t = TestDb::postgres().await;
    let (_addr, double) = ComputeDouble::start();
    let scaled = "projects/p1/zones/us-central1-a/instanceGroupManagers/scaled-mig";
    double.add_group(
        scaled,
        &[("vespene_worker", "true"), ("vespene_pool", "scaled")],
    );
    double.attach_autoscaler(scaled, "scaled-as");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("autoscaler.toml");
    std::fs::write(
        &cfg,
        "poll_seconds = 0.5\n[executors.gce-mig]\npoll_interval_ms = 20\n",
    )
    .unwrap();
    let mut p = shell_pool(1, "scaled", scaled);
    p.executor = Some("gce-mig".into());
    t.add_pool(&p).await;
    t.add_builds(&[
        (1, 1, "QUEUED", Some(1), None),
        (2, 1, "QUEUED", Some(2), None),
    ])
    .await;

    let port = common::process::free_port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let args = [
        "--config",
        cfg.to_str().unwrap(),
        "--queue",
        "scaled",
        "--sleep",
        "10",
        "--metrics-addr",
        &addr.to_string(),
    ];
    let endpoint = double.endpoint();
    let env = [
        ("AUTOSCALER_GCE_ENDPOINT", endpoint.as_str()),
        ("AUTOSCALER_GCE_CREDENTIALS", "anonymous"),
    ];
    let mut child = common::process::spawn(&t.url, &args, &env);
    let errors = || -> u64 {
        common::process::http_get(addr, "/metrics")
            .1
            .lines()
            .find(|l| {
                l.starts_with("autoscaler_pool_executor_errors_total{")
                    && l.contains("pool=\"scaled\"")
            })
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0)
    };
    let first = common::process::wait_until(std::time::Duration::from_secs(30), || errors() >= 1);
    // Six fast polls' worth (0.5 s each): each one would have called the group again.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let after_polls = errors();
    let retried = common::process::wait_until(std::time::Duration::from_secs(30), || errors() >= 2);
    let (_, stderr) = common::process::terminate(&mut child);
    assert!(
        first.is_some(),
        "the refusal never reached /metrics:\n{stderr}"
    );
    assert_eq!(
        after_polls, 1,
        "fast polls called the refusing group again:\n{stderr}"
    );
    assert!(
        retried.is_some(),
        "the next full cycle did not retry the pool:\n{stderr}"
    );
    assert_eq!(double.target_size(scaled), Some(0), "nothing was resized");
    t.cleanup().await;
}
