//! Issue 12: nothing one pool holds can stop the others. A command that leaves a detached
//! child, a stuck cycle, a database that refuses status writes, a cloud endpoint that never
//! answers, a clock in the future, signals in both modes, a killed autoscaler, and SQLite paths
//! spelt two ways. (The bad-data items are in `bad_input.rs`.)

mod common;

use async_trait::async_trait;
use autoscaler::db::{ConnectOptions, Database};
use autoscaler::engine::{Engine, EngineOptions, PoolResult, Registry};
use autoscaler_executor::{Executor, ExecutorError, Outcome, ScaleRequest, WorkerPool};
use common::process::{free_port, http_get, lines, signal, spawn, terminate, wait_until};
use common::{shell_pool, TestDb};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn kill_pids(file: &std::path::Path) {
    for pid in lines(file) {
        if let Ok(pid) = pid.trim().parse::<i32>() {
            signal(pid, 9);
        }
    }
}

fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Item 2: a command whose detached child keeps the output pipe open no longer holds the loop:
/// a pool due every cycle keeps running beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detached_child_does_not_stall_the_loop() {
    let t = TestDb::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    let ticks = dir.path().join("ticks");
    let mut detach = shell_pool(
        1,
        "detach",
        &format!(
            "n=$(cat {p} 2>/dev/null | wc -l); setsid sh -c 'echo $$ >> {p}; exec sleep 40' & \
             while [ \"$(cat {p} 2>/dev/null | wc -l)\" = \"$n\" ]; do sleep 0.01; done; echo launched",
            p = pids.display()
        ),
    );
    detach.reevaluate_minutes = 0;
    let mut tick = shell_pool(2, "tick", &format!("date +%s.%N >> {}", ticks.display()));
    tick.reevaluate_minutes = 0;
    t.add_pool(&detach).await;
    t.add_pool(&tick).await;
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "[executors.shell]\ntimeout_seconds = 3\n").unwrap();
    let mut child = spawn(
        &t.url,
        &[
            "--queue",
            "detach",
            "--queue",
            "tick",
            "--sleep",
            "1",
            "--config",
            cfg.to_str().unwrap(),
        ],
        &[],
    );
    std::thread::sleep(Duration::from_secs(10));
    let (code, stderr) = terminate(&mut child);
    kill_pids(&pids);
    assert_eq!(code, Some(0), "{stderr}");
    let n = lines(&ticks).len();
    // Each cycle waits at most the 2 s output drain for the detached child: 3 or more cycles
    // in 10 s, where the child's 40 s would allow one.
    assert!(n >= 3, "the other pool ran {n} times in 10 s:\n{stderr}");
    assert!(stderr.contains("still holds its output"), "{stderr}");
    assert_eq!(t.status_of("detach").await.0, Some(0));
    t.cleanup().await;
}

/// Item 2: a cycle that does not finish shows: `/healthz` turns 503 once no cycle has ended for
/// `stuck_after_sleeps` x `--sleep`, and `/metrics` says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_cycle_turns_healthz_red() {
    let t = TestDb::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let started = dir.path().join("started");
    t.add_pool(&shell_pool(
        1,
        "hang",
        &format!("touch {}; sleep 30", started.display()),
    ))
    .await;
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        "stuck_after_sleeps = 2\nshutdown_grace_seconds = 1\n[executors.shell]\ntimeout_seconds = 60\n",
    )
    .unwrap();
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut child = spawn(
        &t.url,
        &[
            "--queue",
            "hang",
            "--sleep",
            "1",
            "--config",
            cfg.to_str().unwrap(),
            "--metrics-addr",
            &metrics.to_string(),
        ],
        &[],
    );
    wait_until(Duration::from_secs(20), || started.exists()).expect("the command never started");
    let red = wait_until(Duration::from_secs(15), || {
        http_get(metrics, "/healthz").0 == 503
    });
    let (_, health) = http_get(metrics, "/healthz");
    let (_, body) = http_get(metrics, "/metrics");
    let (code, stderr) = terminate(&mut child);
    assert!(
        red.is_some(),
        "/healthz stayed 200 during a 30 s cycle: {health}\n{stderr}"
    );
    assert!(health.contains("no cycle has finished for"), "{health}");
    assert!(body.contains("autoscaler_cycle_stuck 1"), "{body}");
    let running: f64 = body
        .lines()
        .find_map(|l| l.strip_prefix("autoscaler_cycle_in_progress_seconds "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_default();
    assert!(running >= 2.0, "{body}");
    assert_eq!(code, Some(0), "{stderr}");
    t.cleanup().await;
}

/// Item 4: when the status UPDATE fails, the timer lives on in memory and failures back off: a
/// pool with reevaluate_minutes = 10 runs once, not every cycle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_status_write_does_not_rerun_the_command() {
    let t = TestDb::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let ok = dir.path().join("ok");
    let bad = dir.path().join("bad");
    t.add_pool(&shell_pool(
        1,
        "ok",
        &format!("echo run >> {}", ok.display()),
    ))
    .await;
    t.add_pool(&shell_pool(
        2,
        "bad",
        &format!("echo run >> {}; exit 3", bad.display()),
    ))
    .await;
    // A database that refuses every write to worker_pools (a read-only standby, say).
    t.exec(
        "CREATE TRIGGER read_only BEFORE UPDATE ON worker_pools \
         BEGIN SELECT RAISE(ABORT, 'attempt to write a readonly database'); END;",
    )
    .await;
    let mut child = spawn(
        &t.url,
        &["--queue", "ok", "--queue", "bad", "--sleep", "1"],
        &[],
    );
    std::thread::sleep(Duration::from_secs(7));
    let (code, stderr) = terminate(&mut child);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("could not record the result"), "{stderr}");
    assert_eq!(lines(&ok).len(), 1, "the succeeding pool re-ran:\n{stderr}");
    assert_eq!(
        lines(&bad).len(),
        1,
        "the failing pool did not back off:\n{stderr}"
    );
    t.cleanup().await;
}

/// A cloud backend whose `prepare` takes its time (an endpoint that accepts and never answers).
struct SlowCloud;

#[async_trait]
impl Executor for SlowCloud {
    fn name(&self) -> &'static str {
        "gce-mig"
    }
    fn declarative(&self) -> bool {
        true
    }
    async fn prepare(&self, _pools: &[&WorkerPool], _dry_run: bool) -> Result<(), ExecutorError> {
        tokio::time::sleep(Duration::from_secs(5)).await;
        Ok(())
    }
    async fn scale(&self, r: ScaleRequest<'_>) -> Result<Outcome, ExecutorError> {
        Ok(Outcome {
            actions: vec![],
            applied: Some(r.plan.size),
            revisit: false,
        })
    }
}

/// Item 7: one backend's slow `prepare` holds back only that backend's pools.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_backend_does_not_delay_pools_of_another() {
    let t = TestDb::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let ran = dir.path().join("ran");
    t.add_pool(&shell_pool(
        1,
        "fast",
        &format!("date +%s.%N > {}", ran.display()),
    ))
    .await;
    let mut cloudy = shell_pool(2, "cloudy", "group-{{ worker_pool.name }}");
    cloudy.executor = Some("gce-mig".into());
    t.add_pool(&cloudy).await;
    let mut registry = Registry::default();
    registry.register(Arc::new(autoscaler_shell::ShellExecutor::new(
        Default::default(),
    )));
    registry.register(Arc::new(SlowCloud));
    let engine = Engine::new(
        Database::connect(&t.url, &ConnectOptions::default()).unwrap(),
        registry,
        Default::default(),
        EngineOptions::default(),
    );
    let (_tx, stop) = tokio::sync::watch::channel(false);
    let start = now_secs();
    let t0 = Instant::now();
    let report = engine
        .run_cycle(&["cloudy".into(), "fast".into()], true, &stop)
        .await
        .unwrap();
    let took = t0.elapsed();
    assert!(
        report
            .pools
            .iter()
            .all(|p| matches!(p.result, PoolResult::Scaled { .. })),
        "{report:?}"
    );
    let at: f64 = std::fs::read_to_string(&ran)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        took >= Duration::from_secs(5),
        "the slow prepare was not awaited: {took:?}"
    );
    assert!(
        at - start < 2.5,
        "the shell pool waited {:.1} s for the cloud backend",
        at - start
    );
    t.cleanup().await;
}

/// Item 8: a `last_autoscaled` far in the future does not freeze the pool: it is due, with a
/// warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_last_autoscaled_in_the_future_is_due_with_a_warning() {
    let t = TestDb::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let ran = dir.path().join("ran");
    let mut p = shell_pool(1, "future", &format!("touch {}", ran.display()));
    p.last_autoscaled = Some(chrono::Utc::now() + chrono::Duration::days(365 * 100));
    p.reevaluate_minutes = 10;
    t.add_pool(&p).await;
    let mut child = spawn(&t.url, &["--queue", "future", "--sleep", "1"], &[]);
    let seen = wait_until(Duration::from_secs(15), || ran.exists());
    let (code, stderr) = terminate(&mut child);
    assert!(seen.is_some(), "the pool never ran:\n{stderr}");
    assert_eq!(code, Some(0));
    assert!(
        stderr.contains("is in the future; treating the pool as due"),
        "{stderr}"
    );
    t.cleanup().await;
}

/// Item 10: SIGTERM and SIGINT with `--force`, and SIGHUP in the loop, all stop the same way:
/// the call in progress gets the grace, is recorded as cancelled, and the process exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_stop_force_and_loop_alike() {
    for (mode, sig, name) in [
        ("force", 15, "SIGTERM"),
        ("force", 2, "SIGINT"),
        ("loop", 1, "SIGHUP"),
    ] {
        let t = TestDb::sqlite().await;
        let dir = tempfile::tempdir().unwrap();
        let started = dir.path().join("started");
        let done = dir.path().join("done");
        t.add_pool(&shell_pool(
            1,
            "slow",
            &format!(
                "touch {}; sleep 30; touch {}",
                started.display(),
                done.display()
            ),
        ))
        .await;
        let cfg = dir.path().join("c.toml");
        std::fs::write(&cfg, "shutdown_grace_seconds = 1\n").unwrap();
        let mut args = vec!["--queue", "slow", "--config", cfg.to_str().unwrap()];
        if mode == "force" {
            args.push("--force");
        }
        let mut child = spawn(&t.url, &args, &[]);
        wait_until(Duration::from_secs(15), || started.exists()).expect("command never started");
        signal(child.id() as i32, sig);
        let t0 = Instant::now();
        let status = child.wait().unwrap();
        let took = t0.elapsed();
        let stderr = common::process::stderr_of(&mut child);
        assert_eq!(
            status.code(),
            Some(0),
            "{mode} {name}: {status:?}\n{stderr}"
        );
        assert!(took < Duration::from_secs(10), "{mode} {name}: {took:?}");
        assert!(
            stderr.contains(&format!("{name} received")),
            "{mode} {name}: {stderr}"
        );
        std::thread::sleep(Duration::from_millis(300));
        assert!(!done.exists(), "{mode} {name}: the command was not stopped");
        assert_eq!(
            t.status_of("slow").await,
            (Some(11), None),
            "{mode} {name}: cancelled, recorded"
        );
        t.cleanup().await;
    }
}

/// Item 10: an autoscaler killed with SIGKILL leaves no command running behind it (a restarted
/// one would overlap it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_autoscaler_leaves_no_orphaned_command() {
    let t = TestDb::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    t.add_pool(&shell_pool(
        1,
        "p",
        &format!(
            "echo start >> {l}; sleep 3; echo end >> {l}",
            l = log.display()
        ),
    ))
    .await;
    let mut child = spawn(&t.url, &["--queue", "p", "--sleep", "1"], &[]);
    wait_until(Duration::from_secs(15), || !lines(&log).is_empty()).expect("never started");
    // Mid-command (not in the microseconds between starting the command and its watchdog).
    std::thread::sleep(Duration::from_millis(300));
    signal(child.id() as i32, 9);
    let _ = child.wait();
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(lines(&log), vec!["start"], "the orphaned command went on");
    t.cleanup().await;
}

/// Item 14: the same SQLite database through a symlink or a `.` shares one set of pool locks.
#[tokio::test]
async fn sqlite_locks_do_not_depend_on_how_the_path_is_spelled() {
    let t = TestDb::sqlite().await;
    t.add_pool(&shell_pool(1, "p", "true")).await;
    let file = t.url.trim_start_matches("sqlite://").to_string();
    let path = std::path::Path::new(&file);
    let link = path.with_file_name("link.db");
    std::os::unix::fs::symlink(path, &link).unwrap();
    let dotted = path
        .parent()
        .unwrap()
        .join(".")
        .join(path.file_name().unwrap());
    let names = ["p".to_string()];
    let mine = t.db.lock_pools(&names).await.unwrap();
    assert!(mine.holds(1));
    for other in [link.clone(), dotted] {
        let db = Database::connect(
            &format!("sqlite://{}", other.display()),
            &ConnectOptions::default(),
        )
        .unwrap();
        let theirs = db.lock_pools(&names).await.unwrap();
        assert!(
            !theirs.holds(1),
            "{} took a lock held through {}",
            other.display(),
            path.display()
        );
        theirs.release().await;
        db.close().await;
    }
    mine.release().await;
    t.cleanup().await;
}

/// Item 11: a successful command's background jobs end with its process group, and the README
/// says so (it used to mention the timeout only).
#[tokio::test]
async fn background_jobs_of_a_successful_command_end_with_it_as_documented() {
    let t = TestDb::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let pid = dir.path().join("pid");
    t.add_pool(&shell_pool(
        1,
        "p",
        &format!("sleep 30 & echo $! > {}; echo ok", pid.display()),
    ))
    .await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_autoscaler"))
        .args(["--database-url", &t.url, "--queue", "p", "--force"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pid: i32 = std::fs::read_to_string(&pid)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let gone = wait_until(Duration::from_secs(5), || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        stat.is_empty() || stat.split_whitespace().nth(2) == Some("Z")
    });
    assert!(
        gone.is_some(),
        "the background job {pid} outlived its command"
    );
    let readme = include_str!("../docs/shell.md");
    assert!(
        readme.contains("background jobs are killed"),
        "docs/shell.md does not say what happens to a successful command's background jobs"
    );
    t.cleanup().await;
}

/// Issue 12 item 15: 40,000 `--queue` names on SQLite are read in chunks.
#[tokio::test]
async fn forty_thousand_queue_names_on_sqlite() {
    let t = TestDb::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let ran = dir.path().join("ran");
    t.add_pool(&shell_pool(
        40_000,
        "pool-39999",
        &format!("touch {}", ran.display()),
    ))
    .await;
    let names: Vec<String> = (0..40_000).map(|i| format!("pool-{i}")).collect();
    let mut args = vec![
        "--database-url".to_string(),
        t.url.clone(),
        "--force".to_string(),
    ];
    for n in &names {
        args.push("--queue".into());
        args.push(n.clone());
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_autoscaler"))
        .args(&args)
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        stderr.chars().take(2000).collect::<String>()
    );
    assert!(ran.exists());
    assert_eq!(t.status_of("pool-39999").await.0, Some(0));
    t.cleanup().await;
}

/// Item 6: 30 MB of output without a newline is logged cut at 16 KiB (the rest is read and
/// dropped, never buffered), and the command runs to its end.
#[tokio::test]
async fn an_endless_output_line_is_cut_not_buffered() {
    let t = TestDb::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let done = dir.path().join("done");
    t.add_pool(&shell_pool(
        1,
        "p",
        &format!(
            "head -c 30000000 /dev/zero | tr '\\0' x; touch {}",
            done.display()
        ),
    ))
    .await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_autoscaler"))
        .args(["--database-url", &t.url, "--queue", "p", "--force"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        &stderr[..stderr.len().min(2000)]
    );
    assert!(done.exists(), "the command did not run to its end");
    assert!(
        stderr.len() < 100_000,
        "{} bytes of log for one line",
        stderr.len()
    );
    assert!(
        stderr.contains("… (line cut at 16384 bytes)"),
        "{}",
        &stderr[..stderr.len().min(2000)]
    );
    t.cleanup().await;
}
