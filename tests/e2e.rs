//! The real `autoscaler` binary end to end, against PostgreSQL (Vespene's real schema) and
//! SQLite, with the shell executor.

mod common;

use chrono::{Duration as ChronoDuration, Utc};
use common::{shell_pool, TestDb};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_autoscaler"));
    c.env_remove("DATABASE_URL").env("RUST_LOG", "info");
    c
}

fn run(url: &str, args: &[&str]) -> Output {
    bin()
        .arg("--database-url")
        .arg(url)
        .args(args)
        .output()
        .expect("run autoscaler")
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Pools covering the documented behaviour; every shell command appends to `log`.
async fn seed(t: &TestDb, log: &Path) {
    let append = |text: &str| format!("echo \"{text}\" >> {}", log.display());
    let mut weighted = shell_pool(
        1,
        "weighted",
        &append("weighted size={{ size }} queued={{ queued_size }}"),
    );
    weighted.queued_weight = 2.0;
    weighted.running_weight = 0.5;
    weighted.multiplier = 1.5;
    weighted.excess = 1;
    weighted.maximum = 20;
    weighted.build_latest = false;
    let latest = shell_pool(
        2,
        "latest",
        &append("latest size={{ size }} queued={{ queued_size }} via {{ worker.name }}"),
    );
    let mut disabled = shell_pool(3, "disabled", &append("disabled ran"));
    disabled.autoscaling_enabled = false;
    disabled.planner = None;
    disabled.executor = None;
    let failing = shell_pool(4, "failing", "echo 'scaler broke' >&2; exit 5");
    let undefined = shell_pool(5, "undefined", &append("{{ worker_pool.no_such_column }}"));
    let quoted = shell_pool(
        6,
        "it's; touch /tmp/pwned-by-pool-name",
        &format!(
            "printf '%s\\n' {{{{ worker_pool.name | shell_quote }}}} >> {}",
            log.display()
        ),
    );
    for p in [&weighted, &latest, &disabled, &failing, &undefined, &quoted] {
        t.add_pool(p).await;
    }
    t.add_worker(1, "w1").await;
    t.add_worker(2, "w2").await;
    t.add_worker(3, "w3").await;
    t.add_builds(&[
        (1, 1, "QUEUED", Some(1), None),
        (2, 1, "QUEUED", Some(1), None),
        (3, 1, "QUEUED", Some(2), None),
        (4, 1, "RUNNING", Some(3), Some(1)),
        (5, 1, "RUNNING", Some(3), Some(2)),
        (6, 1, "SUCCESS", Some(3), Some(2)),
        (7, 2, "QUEUED", Some(10), None),
        (8, 2, "QUEUED", Some(10), None),
        (9, 2, "QUEUED", Some(11), None),
        (10, 2, "QUEUED", Some(11), None),
        (11, 2, "RUNNING", Some(12), Some(3)),
        (12, 3, "QUEUED", Some(30), None),
    ])
    .await;
}

const ALL: &[&str] = &[
    "--queue",
    "weighted",
    "--queue",
    "latest",
    "--queue",
    "disabled",
    "--queue",
    "missing",
    "--queue",
    "failing",
    "--queue",
    "undefined",
    "--queue",
    "it's; touch /tmp/pwned-by-pool-name",
];

db_test!(
    force_cycle_renders_runs_and_records,
    |t: TestDb| async move {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("commands.log");
        seed(&t, &log).await;
        let before = Utc::now();
        let out = run(&t.url, &[ALL, &["--force"]].concat());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(1),
            "a failing pool makes --force exit 1\n{stderr}"
        );

        let mut got = lines(&log);
        got.sort();
        // weighted: ceil((3*2 + 2*0.5) * 1.5) + 1 = ceil(10.5) + 1 = 12; queued: ceil(6*1.5)+1 = 10.
        // latest: build_latest -> 2 distinct projects queued, 1 running: size 3, queued 2.
        assert_eq!(
            got,
            vec![
                "it's; touch /tmp/pwned-by-pool-name".to_string(),
                "latest size=3 queued=2 via latest".to_string(),
                "weighted size=12 queued=10".to_string(),
            ]
        );
        assert!(!Path::new("/tmp/pwned-by-pool-name").exists());

        // Failures are named on stderr, with their reason.
        assert!(stderr.contains("autoscaler: pool failing failed: pool failing: executor_command exited with status 5: scaler broke"), "{stderr}");
        assert!(stderr.contains("autoscaler: pool undefined failed: pool undefined: executor_command: undefined variable"), "{stderr}");
        assert!(
            stderr.contains("pool missing: no worker pool with this name"),
            "{stderr}"
        );

        for ok in ["weighted", "latest", "it's; touch /tmp/pwned-by-pool-name"] {
            let (status, at) = t.status_of(ok).await;
            assert_eq!(status, Some(0), "{ok}");
            assert!(at.unwrap() >= before - ChronoDuration::seconds(1), "{ok}");
        }
        assert_eq!(
            t.status_of("failing").await,
            (Some(5), None),
            "exit code recorded, time not"
        );
        assert_eq!(
            t.status_of("undefined").await,
            (Some(3), None),
            "template error code"
        );
        assert_eq!(
            t.status_of("disabled").await,
            (None, None),
            "a skipped pool is never written"
        );
        t.cleanup().await;
    }
);

db_test!(dry_run_prints_and_changes_nothing, |t: TestDb| async move {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("commands.log");
    seed(&t, &log).await;
    let out = run(
        &t.url,
        &[
            "--queue",
            "weighted",
            "--queue",
            "latest",
            "--force",
            "--dry-run",
        ],
    );
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("pool weighted: executor shell plan size=12 queued_size=10 (queued=3 queued_projects=2 running=2)"), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "would run: echo \"weighted size=12 queued=10\" >> {}",
            log.display()
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("pool latest: executor shell plan size=3 queued_size=2"),
        "{stdout}"
    );
    assert!(!log.exists(), "dry run ran a command");
    assert_eq!(t.status_of("weighted").await, (None, None));
    assert_eq!(t.status_of("latest").await, (None, None));
    t.cleanup().await;
});

db_test!(
    loop_respects_timers_and_stops_on_sigterm,
    |t: TestDb| async move {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("commands.log");
        let append = |text: &str| format!("echo {text} >> {}", log.display());
        let due = shell_pool(1, "due", &append("due"));
        let mut recent = shell_pool(2, "recent", &append("recent"));
        recent.last_autoscaled = Some(Utc::now() - ChronoDuration::minutes(1));
        recent.autoscaling_status = Some(0);
        t.add_pool(&due).await;
        t.add_pool(&recent).await;
        let mut child = bin()
            .arg("--database-url")
            .arg(&t.url)
            .args(["--queue", "due", "--queue", "recent", "--sleep", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Wait for the first cycle, then let two more pass.
        let start = Instant::now();
        while lines(&log).is_empty() && start.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(2500));
        unsafe { libc_kill(child.id() as i32, 15) };
        let stopped = Instant::now();
        let status = child.wait().unwrap();
        assert!(stopped.elapsed() < Duration::from_secs(10));
        assert_eq!(status.code(), Some(0), "SIGTERM exits 0");
        // `due` ran once (its timer then restarted: reevaluate_minutes 10), `recent` never.
        assert_eq!(lines(&log), vec!["due".to_string()]);
        assert_eq!(t.status_of("due").await.0, Some(0));
        t.cleanup().await;
    }
);

db_test!(
    last_autoscaled_is_when_the_call_succeeded,
    |t: TestDb| async move {
        // A command that outlasts its cycle's start by 1.5 s (a `terraform apply` can outlast
        // reevaluate_minutes itself): the pool's timer restarts when the call succeeded, not
        // when the cycle began, so it is not due again the moment it is written.
        let dir = tempfile::tempdir().unwrap();
        let done = dir.path().join("done");
        let slow = shell_pool(
            1,
            "slow",
            &format!("sleep 1.5; date -u +%s.%N > {}", done.display()),
        );
        t.add_pool(&slow).await;
        let before = Utc::now();
        let out = run(&t.url, &["--queue", "slow", "--force"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let finished: f64 = std::fs::read_to_string(&done)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let (status, at) = t.status_of("slow").await;
        assert_eq!(status, Some(0));
        let at = at.expect("last_autoscaled written");
        let at_secs = at.timestamp() as f64 + f64::from(at.timestamp_subsec_nanos()) / 1e9;
        assert!(
            at_secs >= finished,
            "last_autoscaled {at} is before the command finished ({finished}); cycle began {before}"
        );
        assert!(at - before >= ChronoDuration::milliseconds(1500));
        t.cleanup().await;
    }
);

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

#[test]
fn no_queue_is_a_usage_error() {
    let out = bin().output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("name at least one pool with --queue NAME"),
        "{stderr}"
    );
}

#[test]
fn help_is_enough_to_work_from() {
    let out = bin().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--queue <NAME>",
        "--force",
        "--sleep <SECONDS>",
        "--dry-run",
        "--database-url",
        "--config",
        "--log-format",
        "reevaluate_minutes",
        "Exit status",
        "db",
        "demo",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}:\n{help}");
    }
}

#[test]
fn bad_database_url_fails_cleanly_without_secrets() {
    let out = run(
        "mysql://root:hunter2@localhost/vespene",
        &["--queue", "x", "--force"],
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "invalid --database-url mysql://root:***@localhost/vespene: expected a postgres://"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"));
    let out = run(
        "postgres://vespene:hunter2@127.0.0.1:1/vespene",
        &["--queue", "x", "--force"],
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "database: connecting: error communicating with database: Connection refused"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

#[test]
fn demo_runs_on_a_fresh_machine_and_its_next_command_runs_as_printed() {
    let dir = tempfile::tempdir().unwrap();
    // A space in the path: the suggested command must quote it.
    let db = dir.path().join("my demo.db");
    let out = bin().args(["demo", "--keep"]).arg(&db).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("would scale linux to 4 workers (2 for the queue alone)"),
        "{stderr}"
    );
    assert!(stderr.contains("would scale gpu to 4 workers"), "{stderr}");
    assert!(stdout.contains("after one forced cycle"), "{stdout}");
    assert!(db.exists());
    // The log names the counts with the dry-run line's words: queued builds, queued projects.
    assert!(
        stderr.contains(
            "pool linux: size 4 (queued_size 2) from queued=4 queued_projects=2 running=2"
        ),
        "{stderr}"
    );

    // The suggested next command is the last line; it names this binary by its real path
    // (no `autoscaler` on the PATH after `cargo run`) and runs, as printed, in a shell.
    let next = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap()
        .trim();
    assert!(!next.starts_with("autoscaler "), "{next}");
    assert!(next.ends_with("--queue linux --force --dry-run"), "{next}");
    let out = Command::new("sh")
        .args(["-c", next])
        .env_remove("DATABASE_URL")
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    let dry = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{next}\n{dry}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        dry.contains("pool linux: executor shell plan size=4 queued_size=2 (queued=4 queued_projects=2 running=2)"),
        "{dry}"
    );
}
