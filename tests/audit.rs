//! `autoscaler audit` end to end: the real binary, the gce-mig inventory on the real SDK client
//! against the in-process Compute REST double (no GCE emulator exists), and a PostgreSQL
//! Vespene database (the real schema) holding pools, workers and builds. The clock is fixed
//! with the hidden `--now`, so the JSON report is compared with a golden file.
//!
//! `UPDATE_GOLDEN=1 cargo test --test audit` rewrites `tests/golden/audit.json` (review the diff).

mod common;

use autoscaler::demo::insert_worker_sql;
use autoscaler_gce_double::{ComputeDouble, InstanceSpec};
use chrono::{DateTime, Utc};
use common::{shell_pool, TestDb};
use std::path::{Path, PathBuf};
use std::process::Output;

const NOW: &str = "2026-03-10T12:00:00Z";
const LINUX: &str = "projects/p1/zones/us-central1-a/instanceGroupManagers/linux-mig";
const GPU: &str = "projects/p1/zones/us-central1-a/instanceGroupManagers/gpu-mig";
const CLEAN: &str = "projects/p1/zones/us-central1-b/instanceGroupManagers/clean-mig";
const LINUX_LABELS: &[(&str, &str)] = &[
    ("vespene_worker", "true"),
    ("vespene_pool", "linux"),
    ("vespene_version", "1-2-3"),
];
const GPU_LABELS: &[(&str, &str)] = &[
    ("vespene_worker", "true"),
    ("vespene_pool", "gpu"),
    ("vespene_version", "1-2-3"),
];
const CLEAN_LABELS: &[(&str, &str)] = &[
    ("vespene_worker", "true"),
    ("vespene_pool", "clean"),
    ("vespene_version", "1-2-3"),
];

/// `YYYY-MM-DD HH:MM` (UTC) in Compute's style: an offset, milliseconds.
fn gce(t: &str) -> String {
    chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M")
        .unwrap()
        .and_utc()
        .with_timezone(&chrono::FixedOffset::west_opt(7 * 3600).unwrap())
        .format("%Y-%m-%dT%H:%M:%S%.3f%:z")
        .to_string()
}

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

struct Scenario {
    db: TestDb,
    double: ComputeDouble,
    _dir: tempfile::TempDir,
    config: PathBuf,
}

/// The fixed fleet (times relative to NOW = 2026-03-10 12:00 UTC):
/// - linux (group linux-mig): w-busy (runs build 5), w-idle (since January, version 1.2.2),
///   w-silent (up 2 h, never checked in, while builds are queued), w-bare (no labels),
///   w-boot (still being created after an hour: drift), w-drain (deleting for 3 h: stuck);
/// - gpu (group gpu-mig): gpu-1, and gpu-x which is labelled for linux;
/// - clean (group clean-mig, another zone): one healthy instance;
/// - outside every group: by-hand (labelled linux), abandoned (made by linux-mig), and an
///   unlabelled stray that is none of the audit's business;
/// - workers rows for the machines, plus w-gone: last seen 9 days ago, machine gone;
/// - a shell pool, which the audit leaves alone.
async fn scenario() -> Scenario {
    let db = TestDb::postgres().await;
    let (_, double) = ComputeDouble::start();
    double.add_group(LINUX, LINUX_LABELS);
    double.add_instance(LINUX, InstanceSpec::new("w-busy", &gce("2026-03-10 08:00")));
    double.add_instance(
        LINUX,
        InstanceSpec::new("w-idle", &gce("2026-01-15 09:00")).labels(&[
            ("vespene_worker", "true"),
            ("vespene_pool", "linux"),
            ("vespene_version", "1-2-2"),
        ]),
    );
    double.add_instance(
        LINUX,
        InstanceSpec::new("w-silent", &gce("2026-03-10 10:00")),
    );
    double.add_instance(
        LINUX,
        InstanceSpec::new("w-bare", &gce("2026-03-10 07:00")).unlabelled(),
    );
    double.add_instance(
        LINUX,
        InstanceSpec::new("w-boot", &gce("2026-03-10 11:00")).creating(),
    );
    double.add_instance(
        LINUX,
        InstanceSpec::new("w-drain", &gce("2026-03-09 06:00")).deleting(&gce("2026-03-10 09:00")),
    );
    double.add_group(GPU, GPU_LABELS);
    double.add_instance(GPU, InstanceSpec::new("gpu-1", &gce("2026-03-10 06:00")));
    double.add_instance(
        GPU,
        InstanceSpec::new("gpu-x", &gce("2026-03-10 06:30")).labels(LINUX_LABELS),
    );
    double.add_group(CLEAN, CLEAN_LABELS);
    double.add_instance(
        CLEAN,
        InstanceSpec::new("clean-1", &gce("2026-03-10 05:00")),
    );
    double.add_loose_instance(
        "p1",
        "us-central1-a",
        InstanceSpec::new("by-hand", &gce("2026-03-08 12:00")).labels(LINUX_LABELS),
    );
    double.add_loose_instance(
        "p1",
        "us-central1-a",
        InstanceSpec::new("abandoned", &gce("2026-03-07 12:00"))
            .labels(LINUX_LABELS)
            .created_by(LINUX),
    );
    double.add_stray_instance("p1", "us-central1-a", "not-ours", &gce("2026-03-01 00:00"));

    let mut linux = shell_pool(
        1,
        "linux",
        "zones/us-central1-a/instanceGroupManagers/{{ worker_pool.name }}-mig",
    );
    linux.executor = Some("gce-mig".into());
    let mut gpu = shell_pool(2, "gpu", GPU);
    gpu.executor = Some("gce-mig".into());
    let mut clean = shell_pool(3, "clean", CLEAN);
    clean.executor = Some("gce-mig".into());
    let local = shell_pool(4, "local", "echo {{ size }}");
    for p in [&linux, &gpu, &clean, &local] {
        db.add_pool(p).await;
    }
    let mut sql = String::new();
    for (id, host, seen) in [
        (1, "w-busy", "2026-03-10T11:58:00Z"),
        (
            2,
            "w-idle.us-central1-a.c.p1.internal",
            "2026-03-10T11:00:00Z",
        ),
        (3, "w-bare", "2026-03-10T11:00:00Z"),
        (4, "w-drain", "2026-03-10T08:55:00Z"),
        (5, "gpu-1", "2026-03-10T11:30:00Z"),
        (6, "gpu-x", "2026-03-10T11:30:00Z"),
        (7, "clean-1", "2026-03-10T11:30:00Z"),
        (8, "w-gone", "2026-03-01T12:00:00Z"),
        (9, "static-mac", "2026-01-01T00:00:00Z"),
    ] {
        sql += &insert_worker_sql(id, host, Some(utc(seen)));
    }
    db.exec(&sql).await;
    db.add_builds(&[
        (1, 1, "SUCCESS", Some(1), Some(8)), // w-gone ran linux builds
        (2, 1, "SUCCESS", Some(1), Some(2)),
        (5, 1, "RUNNING", Some(2), Some(1)), // w-busy
        (6, 1, "QUEUED", Some(3), None),
        (7, 1, "QUEUED", Some(4), None),
        (8, 2, "SUCCESS", Some(5), Some(5)),
        (9, 2, "SUCCESS", Some(5), Some(6)),
        (10, 3, "SUCCESS", Some(6), Some(7)),
        (11, 4, "SUCCESS", Some(7), Some(9)), // a static machine of the shell pool
    ])
    .await;

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("autoscaler.toml");
    std::fs::write(
        &config,
        "[executors.gce-mig]\nproject = \"p1\"\nretry_attempts = 2\nretry_initial_backoff_ms = 5\nretry_max_backoff_ms = 20\n\
         request_timeout_secs = 5\n\n[audit]\nexpected_version = \"1.2.3\"\n",
    )
    .unwrap();
    double.clear_requests();
    Scenario {
        db,
        double,
        _dir: dir,
        config,
    }
}

fn audit(s: &Scenario, endpoint: &str, args: &[&str]) -> Output {
    // Global options after the subcommand: `args_conflicts_with_subcommands` rejects them
    // before it.
    std::process::Command::new(env!("CARGO_BIN_EXE_autoscaler"))
        .arg("audit")
        .arg("--database-url")
        .arg(&s.db.url)
        .arg("--config")
        .arg(&s.config)
        .arg("--now")
        .arg(NOW)
        .args(args)
        .env("AUTOSCALER_GCE_ENDPOINT", endpoint)
        .env("AUTOSCALER_GCE_CREDENTIALS", "anonymous")
        .env("RUST_LOG", "warn")
        .env_remove("NO_COLOR")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn golden_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/audit.json")
}

#[tokio::test]
async fn golden_json_for_a_fixed_fleet() {
    let s = scenario().await;
    let out = audit(
        &s,
        &s.double.endpoint(),
        &["--format", "json", "--older-than", "7d"],
    );
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "errors found\n{stderr}\n{stdout}"
    );

    // The facts the golden file pins down, stated on their own.
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON document");
    assert_eq!(v["schema"], "vespene-autoscaler-audit/1");
    assert_eq!(v["read_only"], true);
    let found: Vec<(String, String, String)> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["kind"].as_str().unwrap().to_string(),
                f["pool"].as_str().unwrap_or("-").to_string(),
                f["instance"]
                    .as_str()
                    .or(f["worker"].as_str())
                    .unwrap_or("-")
                    .to_string(),
            )
        })
        .collect();
    let has = |k: &str, p: &str, i: &str| {
        assert!(
            found.contains(&(k.into(), p.into(), i.into())),
            "missing {k} {p} {i} in {found:#?}"
        )
    };
    has("orphan", "linux", "by-hand");
    has("orphan", "linux", "abandoned");
    has("orphan", "gpu", "gpu-x");
    has("untagged", "linux", "w-bare");
    has("drift", "linux", "-");
    has("stuck_terminating", "linux", "w-drain");
    has("never_checked_in", "linux", "w-silent");
    has("stale_worker", "linux", "w-gone");
    has("version_skew", "linux", "w-idle");
    has("old_instance", "linux", "w-idle");
    assert!(
        !stdout.contains("not-ours")
            && !stdout.contains("static-mac")
            && !stdout.contains("\"local\""),
        "unlabelled strays and shell pools are not audited"
    );
    let pools: Vec<&str> = v["pools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(pools, vec!["linux", "gpu", "clean"]);
    let linux = &v["pools"][0];
    assert_eq!(linux["desired_instances"], 5);
    assert_eq!(linux["running"], 4);
    assert_eq!(linux["pending"], 1);
    assert_eq!(linux["terminating"], 1);
    assert_eq!(linux["busy"], 1);
    assert_eq!(linux["queued_builds"], 2);

    // Read-only, and what it cost.
    let reqs = s.double.requests();
    assert!(
        reqs.iter()
            .all(|r| r.method == "GET" || r.path.ends_with("/listManagedInstances")),
        "{reqs:?}"
    );
    assert_eq!(s.double.mutations_applied(), 0);
    assert_eq!(v["backends"][0]["api_calls"], reqs.len());
    println!(
        "gce-mig requests for one audit of 3 pools in 2 zones: {}",
        reqs.len()
    );
    for r in &reqs {
        println!(
            "  {} {} {}",
            r.method,
            r.path,
            r.param("filter").unwrap_or("")
        );
    }
    assert_eq!(
        s.db.status_of("linux").await,
        (None, None),
        "the database is not written"
    );

    // At Compute's real page size (500) instead of the double's 2: one request per group
    // read and list, one labelled list per zone, one describe of the unlabelled member, one
    // operations list for the zone with a deletion.
    s.double.set_page_size(500);
    s.double.clear_requests();
    let again = audit(&s, &s.double.endpoint(), &["--format", "json"]);
    assert_eq!(again.status.code(), Some(1));
    let n = s.double.requests().len();
    println!("at page size 500: {n} requests");
    assert_eq!(n, 3 + 3 + 2 + 1 + 1, "{:#?}", s.double.requests());

    let golden = golden_path();
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(golden.parent().unwrap()).unwrap();
        std::fs::write(&golden, &stdout).unwrap();
    }
    let want = std::fs::read_to_string(&golden)
        .expect("tests/golden/audit.json (UPDATE_GOLDEN=1 writes it)");
    assert_eq!(stdout, want, "the report differs from {}", golden.display());
    s.db.cleanup().await;
}

#[tokio::test]
async fn the_table_is_grouped_by_pool_and_plain_off_a_terminal() {
    let s = scenario().await;
    let out = audit(&s, &s.double.endpoint(), &[]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    println!("{stdout}");
    assert!(!stdout.contains('\x1b'), "no colour when stdout is a pipe");
    assert!(stdout.contains("read-only"));
    let linux = stdout
        .find(
            "POOL linux (gce-mig) projects/p1/zones/us-central1-a/instanceGroupManagers/linux-mig",
        )
        .expect(&stdout);
    let gpu = stdout.find("POOL gpu (gce-mig)").expect(&stdout);
    let clean = stdout.find("POOL clean (gce-mig)").expect(&stdout);
    assert!(linux < gpu && gpu < clean);
    let linux_block = &stdout[linux..gpu];
    for want in [
        "desired 5 instances",
        "running 4",
        "busy 1",
        "w-busy",
        "#5",
        "w-drain",
        "terminating (RUNNING/DELETING)",
        "ERROR",
        "orphan",
        "by-hand",
        "never_checked_in",
        "stuck_terminating",
        "version_skew",
        "stale_worker",
        "worker w-gone",
    ] {
        assert!(
            linux_block.contains(want),
            "{want:?} not in the linux block:\n{linux_block}"
        );
    }
    assert!(stdout[gpu..clean].contains("gpu-x"));
    assert!(stdout[clean..].contains("no findings"), "{stdout}");
    assert!(stdout.contains("BACKENDS\n  gce-mig: ok,"));
    // Columns line up: every instance row of the linux table starts its ZONE column at the
    // same place as the header.
    let lines: Vec<&str> = linux_block.lines().collect();
    let header = lines
        .iter()
        .find(|l| l.trim_start().starts_with("INSTANCE"))
        .unwrap();
    let col = header.find("ZONE").unwrap();
    for l in lines.iter().filter(|l| l.contains("us-central1-a  ")) {
        assert_eq!(l.find("us-central1-a"), Some(col), "{l}\n{header}");
    }
    s.db.cleanup().await;
}

#[tokio::test]
async fn fail_on_and_queue_choose_the_exit_status() {
    let s = scenario().await;
    let ep = s.double.endpoint();
    let code = |args: &[&str]| audit(&s, &ep, args).status.code();
    assert_eq!(code(&["--fail-on", "never"]), Some(0));
    assert_eq!(code(&["--fail-on", "warning"]), Some(1));
    assert_eq!(code(&["--queue", "clean"]), Some(0));
    assert_eq!(code(&["--queue", "clean", "--fail-on", "warning"]), Some(0));
    // gpu alone: its orphan gpu-x (labelled linux) is an error; linux's own instances are not
    // judged, since linux is not audited.
    let out = audit(&s, &ep, &["--queue", "gpu", "--format", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let kinds: Vec<&str> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["instance"].as_str().unwrap_or("-"))
        .collect();
    assert_eq!(kinds, vec!["gpu-x"]);
    // A named pool that does not exist, or one without a cloud inventory: the audit failed.
    let out = audit(&s, &ep, &["--queue", "clean", "--queue", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("pool nope failed: pool nope: no such pool"),
        "{}",
        text(&out.stderr)
    );
    let out = audit(&s, &ep, &["--queue", "local"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("executor shell keeps no cloud inventory"),
        "{}",
        text(&out.stderr)
    );
    let out = audit(&s, &ep, &["--older-than", "7x"]);
    assert_eq!(out.status.code(), Some(2), "usage error");
    assert!(text(&out.stderr).contains("unknown unit"));
    assert_eq!(s.double.mutations_applied(), 0);
    s.db.cleanup().await;
}

#[tokio::test]
async fn an_unreachable_cloud_is_exit_2_naming_the_part() {
    let s = scenario().await;
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let started = std::time::Instant::now();
    let out = audit(&s, &endpoint, &["--format", "json"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    assert!(stderr.contains("autoscaler audit: inventory gce-mig failed: pool linux: listing instances labelled vespene_worker=true in zone us-central1-a"), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a report even so");
    assert_eq!(v["exit_status"], 2);
    assert_eq!(v["backends"][0]["status"], "failed");
    assert_eq!(v["failures"][0]["kind"], "unavailable");
    assert!(v["pools"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["status"] == "failed"));
    assert!(
        v["findings"].as_array().unwrap().is_empty(),
        "nothing is judged without the fleet: no false orphans or stale rows"
    );

    // The database unreachable: exit 2 too, naming it.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_autoscaler"))
        .args([
            "audit",
            "--database-url",
            "postgres://postgres@127.0.0.1:1/none",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("reading the Vespene database"),
        "{}",
        text(&out.stderr)
    );
    s.db.cleanup().await;
}
