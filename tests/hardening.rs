//! Running for months: two autoscalers on the same pools, a database that goes away and comes
//! back, shutdown in the middle of an executor call, metrics and health, and secrets in logs.

mod common;

use common::process::{free_port, http_get, lines, spawn, terminate, wait_until};
use common::{shell_pool, TestDb};
use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_never_act_on_the_same_pool_at_once() {
    let t = TestDb::postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let names = ["a", "b", "c"];
    for (i, n) in names.iter().enumerate() {
        let f = dir.path().join(n);
        let mut p = shell_pool(
            i as i64 + 1,
            n,
            &format!(
                "echo \"start $INSTANCE\" >> {f}; sleep 0.1; echo \"end $INSTANCE\" >> {f}",
                f = f.display()
            ),
        );
        p.reevaluate_minutes = 0; // due every cycle: maximum contention
        t.add_pool(&p).await;
    }
    let args = [
        "--queue", "a", "--queue", "b", "--queue", "c", "--sleep", "1",
    ];
    let mut one = spawn(&t.url, &args, &[("INSTANCE", "one")]);
    let mut two = spawn(&t.url, &args, &[("INSTANCE", "two")]);
    std::thread::sleep(Duration::from_secs(8));
    let (c1, e1) = terminate(&mut one);
    let (c2, e2) = terminate(&mut two);
    assert_eq!((c1, c2), (Some(0), Some(0)), "{e1}\n{e2}");
    let mut calls = 0;
    let mut by = std::collections::HashMap::new();
    for n in names {
        let l = lines(&dir.path().join(n));
        assert!(l.len() >= 4, "pool {n} ran too rarely: {l:?}");
        // Strictly start X / end X / start Y / end Y …: no call began while another was running.
        for pair in l.chunks(2) {
            assert_eq!(pair.len(), 2, "pool {n}: unfinished call at the end: {l:?}");
            let who = pair[0]
                .strip_prefix("start ")
                .unwrap_or_else(|| panic!("pool {n}: overlap: {l:?}"));
            assert_eq!(pair[1], format!("end {who}"), "pool {n}: overlap: {l:?}");
            *by.entry(who.to_string()).or_insert(0) += 1;
            calls += 1;
        }
    }
    println!("two processes, 8 s: {calls} executor calls ({by:?}), 0 overlapping");
    t.cleanup().await;
}

/// A TCP proxy between the autoscaler and PostgreSQL that the test can cut and restore.
struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let (u, c) = (up.clone(), conns.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if !u.load(Ordering::SeqCst) {
                    drop(inbound); // cut: refuse service
                    continue;
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                c.lock().unwrap().push(task);
            }
        });
        Proxy { port, up, conns }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for t in self.conns.lock().unwrap().drain(..) {
            t.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_a_database_outage_and_reports_health() {
    let t = TestDb::postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("ran");
    let mut p = shell_pool(1, "p", &format!("date +%s.%N >> {}", log.display()));
    p.reevaluate_minutes = 0;
    t.add_pool(&p).await;
    let proxy = Proxy::start("127.0.0.1:5432".parse().unwrap()).await;
    // Trust auth ignores the password; it is here to prove it is never printed.
    let mut url = url::Url::parse(&t.url).unwrap();
    url.set_port(Some(proxy.port)).unwrap();
    url.set_password(Some("pw-must-not-leak")).unwrap();
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "unhealthy_after_seconds = 2\n").unwrap();

    // Down at start: it waits, acts on nothing, and starts working once the database answers.
    proxy.cut();
    let mut child = spawn(
        url.as_str(),
        &[
            "--queue",
            "p",
            "--sleep",
            "1",
            "--log-format",
            "json",
            "--config",
            cfg.to_str().unwrap(),
            "--metrics-addr",
            &metrics.to_string(),
        ],
        &[],
    );
    std::thread::sleep(Duration::from_secs(6));
    assert!(lines(&log).is_empty(), "acted without reading the database");
    assert_eq!(
        http_get(metrics, "/healthz").0,
        503,
        "unhealthy after 2 s down"
    );
    proxy.restore();
    let first = wait_until(Duration::from_secs(10), || !lines(&log).is_empty())
        .expect("never recovered from a down start");
    // The command's output appears before its cycle ends and is recorded; health follows then.
    wait_until(Duration::from_secs(5), || {
        http_get(metrics, "/healthz").0 == 200
    })
    .expect("/healthz did not recover with the database");
    let (code, body) = http_get(metrics, "/metrics");
    assert_eq!(code, 200);
    assert!(
        body.contains("autoscaler_pool_planned_size{pool=\"p\"} 0"),
        "{body}"
    );
    assert!(body.contains("autoscaler_database_up 1"), "{body}");

    // Mid-loop outage of 6 s.
    proxy.cut();
    std::thread::sleep(Duration::from_millis(1500)); // a cycle in flight may finish
    let during = lines(&log).len();
    std::thread::sleep(Duration::from_millis(4500));
    assert_eq!(
        lines(&log).len(),
        during,
        "acted while the database was unreachable"
    );
    assert_eq!(http_get(metrics, "/healthz").0, 503);
    let restored = Instant::now();
    proxy.restore();
    let recovery =
        wait_until(Duration::from_secs(10), || lines(&log).len() > during).expect("did not resume");
    let (code, stderr) = terminate(&mut child);
    assert_eq!(code, Some(0));
    println!("recovered {first:?} after a down start, {recovery:?} after a 6 s outage (restored {:?} ago)", restored.elapsed());
    assert!(
        recovery < Duration::from_secs(4),
        "recovery took {recovery:?}"
    );

    // Logged once per state change, as JSON, and never the password.
    let events: Vec<serde_json::Value> = stderr
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        events.len() >= 3 && events.len() == stderr.lines().count(),
        "every line is JSON:\n{stderr}"
    );
    let outcome = |o: &str| events.iter().filter(|e| e["outcome"] == o).count();
    assert_eq!(outcome("database_down"), 2, "once per outage:\n{stderr}");
    assert_eq!(outcome("recovered"), 2, "once per recovery:\n{stderr}");
    assert!(outcome("scaled") >= 2);
    let scaled = events.iter().find(|e| e["outcome"] == "scaled").unwrap();
    assert_eq!(scaled["pool"], "p");
    assert_eq!(scaled["executor"], "shell");
    assert!(scaled["size"].is_u64());
    assert!(!stderr.contains("pw-must-not-leak"), "{stderr}");
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_call_waits_the_grace_then_records_no_success() {
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
    let mut child = spawn(
        &t.url,
        &["--queue", "slow", "--config", cfg.to_str().unwrap()],
        &[],
    );
    wait_until(Duration::from_secs(10), || started.exists()).expect("command never started");
    let t0 = Instant::now();
    let (code, stderr) = terminate(&mut child);
    let took = t0.elapsed();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(8),
        "took {took:?}"
    );
    assert!(
        stderr.contains("executor call stopped 1 s after shutdown began"),
        "{stderr}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !done.exists(),
        "the command's process group was not stopped"
    );
    assert_eq!(
        t.status_of("slow").await,
        (Some(11), None),
        "cancelled, not success"
    );
    t.cleanup().await;
}

#[tokio::test]
async fn a_hung_pool_delays_no_other_pool_beyond_its_own_timeout() {
    let t = TestDb::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let fast: Vec<_> = (0..4)
        .map(|i| dir.path().join(format!("fast{i}")))
        .collect();
    t.add_pool(&shell_pool(1, "hung", "sleep 60")).await;
    for (i, f) in fast.iter().enumerate() {
        t.add_pool(&shell_pool(
            i as i64 + 2,
            &format!("fast{i}"),
            &format!("date +%s.%N > {}", f.display()),
        ))
        .await;
    }
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        "concurrency = 2\n[executors.shell]\ntimeout_seconds = 3\nkill_grace_seconds = 1\n",
    )
    .unwrap();
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let t0 = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_autoscaler"))
        .args([
            "--database-url",
            &t.url,
            "--config",
            cfg.to_str().unwrap(),
            "--force",
            "--queue",
            "hung",
        ])
        .args((0..4).flat_map(|i| ["--queue".to_string(), format!("fast{i}")]))
        .output()
        .unwrap();
    let took = t0.elapsed();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("pool hung failed: pool hung: executor_command still running after 3 s"));
    // With 2 slots, one held by the hung pool, the four fast pools still ran at once.
    for f in &fast {
        let at: f64 = std::fs::read_to_string(f).unwrap().trim().parse().unwrap();
        assert!(
            at - start < 2.0,
            "{} ran {:.1} s after start",
            f.display(),
            at - start
        );
    }
    assert!(
        took < Duration::from_secs(10),
        "the run took {took:?}; the hung pool's timeout is 3 s"
    );
    assert_eq!(t.status_of("hung").await.0, Some(124));
    assert_eq!(t.status_of("fast3").await.0, Some(0));
    t.cleanup().await;
}

#[tokio::test]
async fn runaway_guard_bounds_each_step_and_the_maximum() {
    let t = TestDb::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("sizes");
    let mut p = shell_pool(
        1,
        "p",
        &format!(
            "echo {{{{ size }}}} {{{{ queued_size }}}} >> {}",
            log.display()
        ),
    );
    p.maximum = 8;
    p.reevaluate_minutes = 0;
    p.build_latest = false;
    t.add_pool(&p).await;
    t.add_builds(&[(1, 1, "QUEUED", Some(1), None)]).await;
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "max_step_up = 3\n").unwrap();
    // One process, several cycles: after a burst of 29 builds the size climbs by at most 3
    // per cycle and stops at the maximum, 8; a shell call never launches more than 3.
    let mut child = spawn(
        &t.url,
        &[
            "--queue",
            "p",
            "--sleep",
            "1",
            "--config",
            cfg.to_str().unwrap(),
        ],
        &[],
    );
    wait_until(Duration::from_secs(20), || !lines(&log).is_empty()).expect("first cycle");
    t.add_builds(
        &(2..=30)
            .map(|i| (i, 1, "QUEUED", Some(i), None))
            .collect::<Vec<_>>(),
    )
    .await;
    wait_until(Duration::from_secs(20), || lines(&log).len() >= 5).expect("five cycles");
    let (code, stderr) = terminate(&mut child);
    assert_eq!(code, Some(0));
    let got = lines(&log);
    assert_eq!(&got[..5], &["1 1", "4 3", "7 3", "8 3", "8 3"], "{stderr}");
    assert!(
        stderr.contains(
            "pool p: size 8 is more than max_step_up 3 above the last applied 1; clamped to 4"
        ),
        "{stderr}"
    );
    t.cleanup().await;
}
