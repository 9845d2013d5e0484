//! Issue 16, item 3: how many PostgreSQL connections a process holds (a `--force` run, a loop,
//! an HA pair, `autoscaler status`), read from `pg_stat_activity` by `application_name` while
//! the processes run; and a lock connection that the server terminates mid-loop.

mod common;

use autoscaler_gce_double::{ComputeDouble, InstanceSpec};
use common::process::{free_port, http_get, lines, spawn, terminate, wait_until};
use common::{shell_pool, TestDb};
use sqlx::Connection;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Every backend of the test's database whose `application_name` starts with
/// `vespene-autoscaler`, by name: the distinct backends (pid, start) seen, and the most seen at
/// once. Polled every 5 ms from a thread of its own; a pool keeps its connections open until
/// the process exits, so none is missed.
#[derive(Debug, Default)]
struct Seen {
    backends: BTreeMap<String, BTreeSet<(i32, String)>>,
    most_at_once: BTreeMap<String, usize>,
}

impl Seen {
    fn distinct(&self, app: &str) -> usize {
        self.backends.get(app).map_or(0, BTreeSet::len)
    }
    fn at_once(&self, app: &str) -> usize {
        self.most_at_once.get(app).copied().unwrap_or(0)
    }
}

struct Watch {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Seen>,
}

fn watch(url: &str) -> Watch {
    let stop = Arc::new(AtomicBool::new(false));
    let (url, s) = (url.to_string(), stop.clone());
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
            let mut seen = Seen::default();
            while !s.load(Ordering::SeqCst) {
                let rows: Vec<(String, i32, String)> = sqlx::query_as(
                    "SELECT application_name, pid, backend_start::text FROM pg_stat_activity \
                     WHERE datname = current_database() AND application_name LIKE 'vespene-autoscaler%'",
                )
                .fetch_all(&mut c)
                .await
                .unwrap();
                let mut now: BTreeMap<String, usize> = BTreeMap::new();
                for (app, pid, start) in rows {
                    *now.entry(app.clone()).or_default() += 1;
                    seen.backends.entry(app).or_default().insert((pid, start));
                }
                for (app, n) in now {
                    let most = seen.most_at_once.entry(app).or_default();
                    *most = (*most).max(n);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            seen
        })
    });
    Watch { stop, thread }
}

impl Watch {
    fn stop(self) -> Seen {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap()
    }
}

/// The test database's URL with the process named in `pg_stat_activity`.
fn named(t: &TestDb, app: &str) -> String {
    format!("{}?application_name={app}", t.url)
}

/// `n` gce-mig pools `g1..gN`, each a group of 3 instances of which one runs a build and none
/// is queued: every pool scales in to 1, so each one's executor reads its busy workers, all
/// of them in the same cycle (up to `concurrency` at once).
async fn gce_pools_to_scale_in(t: &TestDb, double: &ComputeDouble, first_id: i64, n: i64) {
    double.set_operation_polls(1);
    for i in first_id..first_id + n {
        let name = format!("g{i}");
        let group = format!("projects/p1/zones/us-central1-a/instanceGroupManagers/{name}-mig");
        let labels = [("vespene_worker", "true"), ("vespene_pool", name.as_str())];
        double.add_group(&group, &labels);
        for (host, created) in [
            (format!("{name}-old"), "2026-01-01T00:00:00.000-07:00"),
            (format!("{name}-mid"), "2026-02-01T00:00:00.000-07:00"),
            (format!("{name}-new"), "2026-03-01T00:00:00.000-07:00"),
        ] {
            double.add_instance(&group, InstanceSpec::new(&host, created).labels(&labels));
        }
        let mut p = shell_pool(i, &name, &group);
        p.executor = Some("gce-mig".into());
        t.add_pool(&p).await;
        t.add_worker(i, &format!("{name}-old")).await;
        t.add_builds(&[(i, i, "RUNNING", Some(i), Some(i))]).await;
    }
}

fn strs(a: &[String]) -> Vec<&str> {
    a.iter().map(String::as_str).collect()
}

fn gce_env(double: &ComputeDouble) -> [(&'static str, String); 2] {
    [
        ("AUTOSCALER_GCE_ENDPOINT", double.endpoint()),
        ("AUTOSCALER_GCE_CREDENTIALS", "anonymous".to_string()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_force_run_opens_one_connection() {
    let t = TestDb::postgres().await;
    let (_addr, double) = ComputeDouble::start();
    gce_pools_to_scale_in(&t, &double, 1, 6).await;
    let dir = tempfile::tempdir().unwrap();
    let mut queues: Vec<String> = (1..=6).map(|i| format!("g{i}")).collect();
    for i in 7..=10 {
        let name = format!("s{i}");
        t.add_pool(&shell_pool(i, &name, "sleep 0.2")).await;
        queues.push(name);
    }
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "[executors.gce-mig]\npoll_interval_ms = 20\n").unwrap();
    let mut args = vec!["--config".to_string(), cfg.display().to_string()];
    for q in &queues {
        args.extend(["--queue".to_string(), q.clone()]);
    }
    args.push("--force".into());

    let seen = watch(&t.url);
    let env = gce_env(&double);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_autoscaler"))
        .arg("--database-url")
        .arg(named(&t, "vespene-autoscaler-force"))
        .args(&args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let seen = seen.stop();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    for i in 1..=6 {
        let group = format!("projects/p1/zones/us-central1-a/instanceGroupManagers/g{i}-mig");
        assert_eq!(
            double.instance_names(&group),
            vec![format!("g{i}-old")],
            "g{i} scaled in to its busy instance\n{stderr}"
        );
    }
    for q in &queues {
        assert_eq!(t.status_of(q).await.0, Some(0), "{q}\n{stderr}");
    }
    let app = "vespene-autoscaler-force";
    println!(
        "--force over 10 pools (6 scaling in): {} connection(s), {} at once",
        seen.distinct(app),
        seen.at_once(app)
    );
    assert_eq!(seen.distinct(app), 1, "{seen:?}");
    assert_eq!(seen.at_once(app), 1, "{seen:?}");
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loop_and_an_ha_pair_hold_one_connection_each() {
    let t = TestDb::postgres().await;
    let (_addr, double) = ComputeDouble::start();
    // Declarative pools: fast polls every 0.2 s between the full cycles, and scale-ins.
    gce_pools_to_scale_in(&t, &double, 1, 3).await;
    let dir = tempfile::tempdir().unwrap();
    let mut args: Vec<String> = Vec::new();
    for i in 4..=6 {
        let name = format!("s{i}");
        let log = dir.path().join(&name);
        let mut p = shell_pool(i, &name, &format!("echo $INSTANCE >> {}", log.display()));
        p.reevaluate_minutes = 0; // due every cycle
        t.add_pool(&p).await;
        args.extend(["--queue".to_string(), name]);
    }
    for i in 1..=3 {
        args.extend(["--queue".to_string(), format!("g{i}")]);
    }
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        "poll_seconds = 0.2\n[executors.gce-mig]\npoll_interval_ms = 20\n",
    )
    .unwrap();
    args.extend([
        "--config".into(),
        cfg.display().to_string(),
        "--sleep".into(),
        "1".into(),
    ]);
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut with_metrics = args.clone();
    with_metrics.extend(["--metrics-addr".into(), metrics.to_string()]);
    let env = gce_env(&double);
    let env = |who: &'static str| {
        let mut e: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        e.push(("INSTANCE", who));
        e
    };

    let seen = watch(&t.url);
    let url_a = named(&t, "vespene-autoscaler-a");
    let url_b = named(&t, "vespene-autoscaler-b");
    let mut a = spawn(&url_a, &strs(&with_metrics), &env("a"));
    let mut b = spawn(&url_b, &strs(&args), &env("b"));
    let mut health = Vec::new();
    for _ in 0..5 {
        std::thread::sleep(Duration::from_secs(1));
        health.push(http_get(metrics, "/healthz").0);
    }
    // `autoscaler status`, read-only, alongside the pair.
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_autoscaler"))
        .args(["--database-url", &named(&t, "vespene-autoscaler-status")])
        .args(["--config", cfg.to_str().unwrap(), "status"])
        .envs(env("status"))
        .output()
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let (ca, ea) = terminate(&mut a);
    let (cb, eb) = terminate(&mut b);
    let seen = seen.stop();
    assert_eq!((ca, cb), (Some(0), Some(0)), "{ea}\n{eb}");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(health.iter().all(|c| *c == 200), "/healthz: {health:?}");
    // Both worked, on every shell pool, over several cycles.
    let calls: Vec<String> = (4..=6)
        .flat_map(|i| lines(&dir.path().join(format!("s{i}"))))
        .collect();
    for who in ["a", "b"] {
        let n = calls.iter().filter(|c| *c == who).count();
        assert!(
            n >= 3,
            "process {who} made {n} calls: {calls:?}\n{ea}\n{eb}"
        );
    }
    for i in 1..=3 {
        let group = format!("projects/p1/zones/us-central1-a/instanceGroupManagers/g{i}-mig");
        assert_eq!(double.instance_names(&group), vec![format!("g{i}-old")]);
    }
    println!(
        "loop, 6 s, {} calls: a {} connection(s) ({} at once), b {} ({} at once), status {}",
        calls.len(),
        seen.distinct("vespene-autoscaler-a"),
        seen.at_once("vespene-autoscaler-a"),
        seen.distinct("vespene-autoscaler-b"),
        seen.at_once("vespene-autoscaler-b"),
        seen.distinct("vespene-autoscaler-status"),
    );
    for app in ["vespene-autoscaler-a", "vespene-autoscaler-b"] {
        assert_eq!(seen.distinct(app), 1, "{app}: {seen:?}");
        assert_eq!(seen.at_once(app), 1, "{app}: {seen:?}");
    }
    assert_eq!(seen.distinct("vespene-autoscaler-status"), 1, "{seen:?}");
    t.cleanup().await;
}

/// The server terminates the backend that holds the locks in the middle of a cycle (from
/// inside a pool's command, so the moment is exact). The pools after it in that cycle must not
/// be called: their locks are gone and another autoscaler may hold them. Every call checks,
/// from its command, that this process's backend holds its pool's lock at that moment; the
/// next cycle must take the locks again on a new connection and call every pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lock_connection_stops_the_cycle_and_the_next_one_recovers() {
    let t = TestDb::postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("calls");
    let token = dir.path().join("kill");
    let app = "vespene-autoscaler-lost";
    let script = dir.path().join("call.sh");
    std::fs::write(
        &script,
        format!(
            r#"held=$(psql -X -At "{url}" -c "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid JOIN worker_pools w ON l.objid = w.id::oid WHERE l.locktype = 'advisory' AND l.classid = {ns} AND l.granted AND a.application_name = '{app}' AND w.name = '$VESPENE_POOL'")
echo "$VESPENE_POOL held=$held" >> {log}
if mv {token} {token}.taken 2>/dev/null; then
  psql -X -At "{url}" -c "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE application_name = '{app}'" > /dev/null
  echo "killed by $VESPENE_POOL" >> {log}
fi
"#,
            url = t.url,
            ns = autoscaler::db::LOCK_NAMESPACE,
            log = log.display(),
            token = token.display(),
        ),
    )
    .unwrap();
    let names = ["p1", "p2", "p3", "p4"];
    let mut args = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let mut p = shell_pool(i as i64 + 1, n, &format!("sh {}", script.display()));
        p.reevaluate_minutes = 0;
        t.add_pool(&p).await;
        args.extend(["--queue", n]);
    }
    // One call at a time: after the kill, the next call would start only on a stale lock.
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "concurrency = 1\n").unwrap();
    let cfg = cfg.display().to_string();
    args.extend(["--sleep", "1", "--config", &cfg]);
    let mut child = spawn(&format!("{}?application_name={app}", t.url), &args, &[]);

    let called = |l: &[String], n: &str| l.iter().any(|c| c.starts_with(&format!("{n} ")));
    wait_until(Duration::from_secs(15), || {
        let l = lines(&log);
        names.iter().all(|n| called(&l, n))
    })
    .expect("every pool called before the kill");
    std::fs::write(&token, "").unwrap();
    wait_until(Duration::from_secs(15), || {
        lines(&log).iter().any(|l| l.starts_with("killed by"))
    })
    .expect("a command terminated the lock connection");
    let recovered = wait_until(Duration::from_secs(15), || {
        let l = lines(&log);
        let k = l.iter().position(|c| c.starts_with("killed by")).unwrap();
        names.iter().all(|n| called(&l[k + 1..], n))
    });
    let (code, stderr) = terminate(&mut child);
    let l = lines(&log);
    assert!(
        recovered.is_some(),
        "not every pool called again after the kill: {l:#?}\n{stderr}"
    );
    assert_eq!(code, Some(0), "{stderr}");
    let stale: Vec<&String> = l
        .iter()
        .filter(|c| !c.starts_with("killed") && !c.ends_with(" held=1"))
        .collect();
    assert!(
        stale.is_empty(),
        "called without holding the pool's lock: {stale:?}\n{l:#?}\n{stderr}"
    );
    assert!(
        stderr.contains("lost the database connection that holds the pool locks"),
        "{stderr}"
    );
    let k = l.iter().position(|c| c.starts_with("killed by")).unwrap();
    println!(
        "{} calls, all holding their lock; the lock connection was terminated after call {}, every pool called again within {recovered:?}",
        l.len() - 1,
        k
    );
    t.cleanup().await;
}
