//! The racing-worker harness for aws-asg (issue 11): fake Vespene workers, one per instance,
//! claim builds exactly as Vespene's worker does, on real PostgreSQL with Vespene's schema,
//! while a queue that rises and falls drives the executor through thousands of scale-in
//! decisions. Every build that was RUNNING on an instance at the moment the fake cloud
//! terminated it is recorded.
//!
//! In-process, against the in-memory Auto Scaling group of `executors/aws-asg/tests/fake`:
//! moto does not model `Terminating:Wait` or lifecycle actions, which is where the drain
//! happens. Everything else is real: the executor's code (`AwsAsgExecutor::scale`), the
//! database, and the engine's busy query (`Database::busy_workers`).
//!
//! A worker (Vespene's `workers/daemon.py` + `builder.py`): takes the lowest-id QUEUED build
//! of its pool, saves `status = RUNNING` and `start_time`, then after a short random delay
//! creates or updates its `workers` row (hostname = the instance's private DNS name or IP)
//! and saves `worker_id`; runs the build for a random time; saves SUCCESS. It keeps polling
//! while its instance waits in `Terminating:Wait` (Vespene's worker does not know). With the
//! drain agent, a fake agent per instance watches for `Terminating:Wait` (the instance
//! metadata's `target-lifecycle-state`), lets no new build start, and completes the lifecycle
//! action once the worker has exited.
//!
//! Counting is conservative: a build counts as killed if its instance ended at any moment
//! from just before its RUNNING row was committed to just after its SUCCESS was committed.

mod common;
#[path = "../executors/aws-asg/tests/fake/mod.rs"]
mod fake;

use async_trait::async_trait;
use autoscaler::db::Database;
use autoscaler_aws_asg::client::{AsgApi, GroupTag};
use autoscaler_aws_asg::{AwsAsgExecutor, Config};
use autoscaler_executor::scale_in::{DRAIN_AGENT_VERSION, TAG_DRAIN_AGENT};
use autoscaler_executor::{
    BusyWorker, DirectoryError, Executor, Plan, ScaleRequest, WorkerDirectory, WorkerPool,
};
use common::TestDb;
use fake::FakeAsg;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const G: &str = "vespene-linux";
const POOL_ID: i64 = 1;
const PROJECT_ID: i64 = 1;
const MAX_INSTANCES: i32 = 16;
/// Stop once this many scale-in decisions were made (the issue asks for 2,000 per run).
const DECISIONS: u64 = 2_000;
/// A run never takes longer than this. An idle 2-core machine reaches [`DECISIONS`] in about
/// 40 s; a loaded one (other builds on the same cores) needed more than 75 s, so the cap leaves
/// room for that rather than failing a run on the machine's speed.
const TIME_CAP: Duration = Duration::from_secs(150);
/// Instances chosen (removed or asked to drain) a run needs besides [`DECISIONS`].
const MIN_CHOSEN: u64 = 100;

/// What one instance's worker is doing, as far as a termination is concerned.
#[derive(Default)]
struct Life {
    /// The cloud ended the instance.
    terminated: bool,
    /// The build the worker runs (from just before RUNNING is committed to just after SUCCESS
    /// is).
    running: Option<i64>,
    /// The agent asked the worker to start no new build.
    draining: bool,
    /// The worker loop has exited.
    exited: bool,
}

#[derive(Default)]
struct Shared {
    lives: Mutex<HashMap<String, Life>>,
    /// (instance, build) of every build RUNNING on an instance when it ended.
    killed: Mutex<Vec<(String, i64)>>,
    builds_done: AtomicI64,
    stop: AtomicBool,
}

/// The engine's busy query, as the engine's own directory calls it.
struct Directory(Database);

#[async_trait]
impl WorkerDirectory for Directory {
    async fn busy_workers(&self, pool: &WorkerPool) -> Result<Vec<BusyWorker>, DirectoryError> {
        self.0
            .busy_workers(pool.id)
            .await
            .map_err(|e| DirectoryError(e.to_string()))
    }
}

/// Runs a statement, retrying while the machine is too busy to hand out a connection in time.
async fn sql(pg: &PgPool, statement: String) {
    for _ in 0..200 {
        if sqlx::raw_sql(&statement).execute(pg).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("{statement} kept failing");
}

fn rand_ms(rng: &mut ChaCha8Rng, lo: u64, hi: u64) -> Duration {
    Duration::from_millis(lo + u64::from(rng.next_u32()) % (hi - lo + 1))
}

/// One Vespene worker on one instance, until the instance ends or (agent) it is drained.
async fn worker(
    pg: PgPool,
    shared: Arc<Shared>,
    instance: String,
    hostname: String,
    worker_row: i64,
    seed: u64,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    loop {
        {
            let mut lives = shared.lives.lock().unwrap();
            let life = lives.entry(instance.clone()).or_default();
            if life.terminated || life.draining || shared.stop.load(Ordering::SeqCst) {
                life.exited = true;
                return;
            }
        }
        // Claim: the lowest-id QUEUED build of the pool, RUNNING + start_time.
        let mut tx = match pg.begin().await {
            Ok(t) => t,
            Err(_) => continue,
        };
        let Ok(row) = sqlx::query_as::<_, (i32,)>(
            "SELECT id FROM builds WHERE worker_pool_id = $1 AND status = 'QUEUED' \
             ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED",
        )
        .bind(POOL_ID as i32)
        .fetch_optional(&mut *tx)
        .await
        else {
            continue;
        };
        let Some((build,)) = row else {
            tx.commit().await.ok();
            tokio::time::sleep(rand_ms(&mut rng, 3, 12)).await;
            continue;
        };
        let build = i64::from(build);
        {
            // From here the build counts as running on this instance.
            let mut lives = shared.lives.lock().unwrap();
            let life = lives.entry(instance.clone()).or_default();
            if life.terminated {
                life.exited = true;
                return; // the process died before it could commit anything
            }
            life.running = Some(build);
        }
        sqlx::query("UPDATE builds SET status = 'RUNNING', start_time = now() WHERE id = $1")
            .bind(build as i32)
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        // Register the worker a moment later, then save worker_id.
        tokio::time::sleep(rand_ms(&mut rng, 0, 25)).await;
        if alive(&shared, &instance) {
            sql(
                &pg,
                format!(
                    "INSERT INTO workers (id, worker_uid, hostname, port, build_root, \
                     first_checkin, last_checkin, fileserving_enabled) VALUES ({worker_row}, \
                     'uid-{instance}', '{hostname}', 8000, '/tmp/b', now(), now(), false) \
                     ON CONFLICT (id) DO UPDATE SET hostname = EXCLUDED.hostname, \
                     last_checkin = now()"
                ),
            )
            .await;
        }
        if alive(&shared, &instance) {
            sql(
                &pg,
                format!("UPDATE builds SET worker_id = {worker_row} WHERE id = {build}"),
            )
            .await;
        }
        // The build runs.
        tokio::time::sleep(rand_ms(&mut rng, 40, 400)).await;
        if !alive(&shared, &instance) {
            // Killed with the instance (counted by the cloud); the row stays RUNNING, as in
            // Vespene.
            let mut lives = shared.lives.lock().unwrap();
            lives.entry(instance.clone()).or_default().exited = true;
            return;
        }
        sql(
            &pg,
            format!("UPDATE builds SET status = 'SUCCESS', end_time = now() WHERE id = {build}"),
        )
        .await;
        {
            let mut lives = shared.lives.lock().unwrap();
            let life = lives.entry(instance.clone()).or_default();
            if life.terminated {
                life.exited = true;
                return;
            }
            life.running = None;
        }
        shared.builds_done.fetch_add(1, Ordering::SeqCst);
    }
}

fn alive(shared: &Shared, instance: &str) -> bool {
    !shared
        .lives
        .lock()
        .unwrap()
        .get(instance)
        .is_some_and(|l| l.terminated)
}

/// The drain agent: on `Terminating:Wait` it lets no new build start, waits for the worker to
/// exit, then completes the lifecycle action from the instance.
async fn agent(fake: Arc<FakeAsg>, shared: Arc<Shared>, instance: String) {
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let waiting = fake.waiting(G).contains(&instance);
        if !fake
            .group(G)
            .instances
            .iter()
            .any(|i| i.instance_id == instance)
        {
            return; // ended without us (cannot happen with the agent; counted if it does)
        }
        if waiting {
            shared
                .lives
                .lock()
                .unwrap()
                .entry(instance.clone())
                .or_default()
                .draining = true;
            loop {
                let exited = shared
                    .lives
                    .lock()
                    .unwrap()
                    .get(&instance)
                    .is_some_and(|l| l.exited);
                if exited {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            fake.complete_lifecycle_action(G, "vespene-drain", &instance, "CONTINUE")
                .await
                .ok();
            return;
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
}

/// What one run measured.
#[derive(Debug)]
struct Report {
    killed: Vec<(String, i64)>,
    decisions: u64,
    chosen: u64,
    held: u64,
    cycles: u64,
    builds_done: i64,
    terminated: usize,
    elapsed: Duration,
    /// Decision (termination call) to instance gone, per instance ended through the hook.
    gone_ms: Vec<i64>,
}

async fn race(with_agent: bool, seed: u64) -> Report {
    let db = TestDb::postgres().await;
    let mut p = WorkerPool::with_defaults(POOL_ID, "linux");
    p.autoscaling_enabled = true;
    p.executor = Some("aws-asg".into());
    p.executor_command = G.into();
    p.maximum = MAX_INSTANCES;
    db.add_pool(&p).await;
    db.exec(&common::insert_project_sql(PROJECT_ID, POOL_ID))
        .await;
    let pg = PgPoolOptions::new()
        .max_connections(40)
        .connect(&db.url)
        .await
        .unwrap();
    let busy_db = Database::connect(&db.url, &autoscaler::db::ConnectOptions::default()).unwrap();
    let dir = Directory(busy_db);

    let fake = Arc::new(FakeAsg::default());
    fake.add_group(G, 0, MAX_INSTANCES as u32, 0);
    {
        let mut s = fake.state.lock().unwrap();
        s.reuse_ips = true;
        if with_agent {
            s.groups.get_mut(G).unwrap().tags.push(GroupTag {
                key: TAG_DRAIN_AGENT.into(),
                value: DRAIN_AGENT_VERSION.into(),
                propagate_at_launch: true,
            });
        }
    }
    let shared = Arc::new(Shared::default());
    {
        let shared = shared.clone();
        fake.set_observer(Box::new(move |_group, id| {
            let mut lives = shared.lives.lock().unwrap();
            let life = lives.entry(id.to_string()).or_default();
            life.terminated = true;
            if let Some(b) = life.running {
                shared.killed.lock().unwrap().push((id.to_string(), b));
            }
        }));
    }
    let cfg = Config {
        unassigned_grace_seconds: 2,
        ..Config::default()
    };
    let exec = AwsAsgExecutor::with_client(cfg, fake.clone()).unwrap();

    // The queue: bursts of builds, then quiet, so the group grows and shrinks again and again.
    let next_build = Arc::new(AtomicI64::new(1));
    let queue = {
        let pg = pg.clone();
        let shared = shared.clone();
        let next_build = next_build.clone();
        tokio::spawn(async move {
            let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xbeef);
            let mut tick = 0u64;
            while !shared.stop.load(Ordering::SeqCst) {
                // 1.2 s of load at a random rate, then 0.8 s of quiet.
                let phase = tick % 40;
                if phase < 24 {
                    let n = rng.next_u32() % 7;
                    for _ in 0..n {
                        let id = next_build.fetch_add(1, Ordering::SeqCst);
                        let statement = autoscaler::demo::insert_build_sql(
                            id,
                            POOL_ID,
                            "QUEUED",
                            Some(PROJECT_ID),
                            None,
                        );
                        sql(&pg, statement).await;
                    }
                }
                tick += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    // The cloud: instances boot, and a worker (and an agent) starts on each.
    let cloud = {
        let fake = fake.clone();
        let shared = shared.clone();
        let pg = pg.clone();
        tokio::spawn(async move {
            let mut started: HashSet<String> = HashSet::new();
            let mut tasks = Vec::new();
            let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xc10d);
            let mut row = 0i64;
            while !shared.stop.load(Ordering::SeqCst) {
                fake.boot_pending(G);
                let members = fake.group(G).instances;
                for m in members {
                    if m.lifecycle_state != "InService" || !started.insert(m.instance_id.clone()) {
                        continue;
                    }
                    let e = fake.state.lock().unwrap().ec2[&m.instance_id].clone();
                    // Some images report the DNS name, some the short name, some the IP.
                    let dns = e.private_dns_name.unwrap();
                    let hostname = match rng.next_u32() % 3 {
                        0 => dns.clone(),
                        1 => dns.split('.').next().unwrap().to_string(),
                        _ => e.private_ip.unwrap(),
                    };
                    row += 1;
                    tasks.push(tokio::spawn(worker(
                        pg.clone(),
                        shared.clone(),
                        m.instance_id.clone(),
                        hostname,
                        row,
                        seed.wrapping_mul(1000).wrapping_add(row as u64),
                    )));
                    if with_agent {
                        tasks.push(tokio::spawn(agent(
                            fake.clone(),
                            shared.clone(),
                            m.instance_id.clone(),
                        )));
                    }
                }
                tokio::time::sleep(rand_ms(&mut rng, 5, 30)).await;
            }
            // Workers finish the step they are in, then see the stop.
            for t in tasks {
                t.await.unwrap();
            }
        })
    };

    // The autoscaler: plan = queued + running (at most the maximum), every few milliseconds.
    let t0 = Instant::now();
    let mut failures = Vec::new();
    loop {
        let (queued, running): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE status = 'QUEUED'), \
             count(*) FILTER (WHERE status = 'RUNNING' AND start_time > now() - interval '5 seconds') \
             FROM builds WHERE worker_pool_id = $1",
        )
        .bind(POOL_ID as i32)
        .fetch_one(&pg)
        .await
        .unwrap();
        let size = ((queued + running) as u32).min(MAX_INSTANCES as u32);
        exec.prepare(&[&p], false).await.unwrap();
        if let Err(e) = exec
            .scale(ScaleRequest {
                pool: &p,
                plan: Plan {
                    size,
                    queued_size: queued as u32,
                    standby: 0,
                },
                dry_run: false,
                workers: &dir,
            })
            .await
        {
            failures.push(e.to_string());
        }
        let s = exec.scale_in_stats();
        let done = match fixed_duration() {
            Some(d) => t0.elapsed() > d,
            // Enough decisions, and enough of them removals: after a kill on the best-effort
            // path the unassigned row holds every instance for its grace, and a run of holds
            // alone could otherwise reach the count within seconds.
            None => {
                (s.chosen + s.held >= DECISIONS && s.chosen >= MIN_CHOSEN)
                    || t0.elapsed() > TIME_CAP
            }
        };
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(4)).await;
    }
    shared.stop.store(true, Ordering::SeqCst);
    queue.await.unwrap();
    cloud.await.unwrap();
    let elapsed = t0.elapsed();
    let s = exec.scale_in_stats();
    let (ended, gone_ms) = {
        let st = fake.state.lock().unwrap();
        (st.terminated.clone(), st.gone_ms.clone())
    };
    let how: HashMap<String, String> = ended.iter().cloned().collect();
    let report = Report {
        killed: shared
            .killed
            .lock()
            .unwrap()
            .iter()
            .map(|(i, b)| {
                (
                    format!("{i} ({})", how.get(i).map(String::as_str).unwrap_or("?")),
                    *b,
                )
            })
            .collect(),
        decisions: s.chosen + s.held,
        chosen: s.chosen,
        held: s.held,
        cycles: s.cycles,
        builds_done: shared.builds_done.load(Ordering::SeqCst),
        terminated: ended.len(),
        elapsed,
        gone_ms,
    };
    // Only holds (status 12 would be a matching failure) and nothing else is expected.
    assert!(
        failures.is_empty(),
        "executor failures: {:?}",
        &failures[..failures.len().min(5)]
    );
    pg.close().await;
    db.cleanup().await;
    report
}

/// `RACE_SECONDS=N` runs for N seconds instead of until [`DECISIONS`], to compare with the
/// code before the fix (which has no chooser to count decisions of) on equal time.
fn fixed_duration() -> Option<Duration> {
    std::env::var("RACE_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_secs)
}

fn summary(label: &str, r: &Report) {
    let mut g = r.gone_ms.clone();
    g.sort();
    let pct = |q: f64| {
        g.get(((g.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(0)
    };
    println!(
        "race [{label}]: killed={} {:?} decisions={} (chosen={} held={}) scale-in cycles={} builds done={} \
         instances ended={} in {:.1} s; decision->gone ms p50={} p90={} max={}",
        r.killed.len(),
        r.killed,
        r.decisions,
        r.chosen,
        r.held,
        r.cycles,
        r.builds_done,
        r.terminated,
        r.elapsed.as_secs_f64(),
        pct(0.5),
        pct(0.9),
        pct(1.0)
    );
}

/// With the drain agent on every instance, no build is ever killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn race_with_the_drain_agent_kills_no_build() {
    let r = race(true, 11).await;
    summary("agent", &r);
    assert!(
        r.decisions >= DECISIONS || fixed_duration().is_some(),
        "{} decisions",
        r.decisions
    );
    assert!(r.terminated > 20, "the group shrank many times");
    assert!(r.builds_done > 100, "{} builds", r.builds_done);
    assert!(r.killed.is_empty(), "killed builds: {:?}", r.killed);
}

/// Without the agent (best effort): the number of killed builds is reported; the executor
/// never picks a busy instance and the hook holds one that turns busy, so only a build claimed
/// between the drain's read and its CompleteLifecycleAction can be lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn race_best_effort_reports_killed_builds() {
    let r = race(false, 12).await;
    summary("best effort", &r);
    assert!(
        r.decisions >= DECISIONS || fixed_duration().is_some(),
        "{} decisions",
        r.decisions
    );
    assert!(r.terminated > 20, "the group shrank many times");
    assert!(r.builds_done > 100, "{} builds", r.builds_done);
}

/// Not a test of the executor: proves the harness sees a kill when there is one. Lowering the
/// desired capacity with no hook lets AWS (the fake's OldestInstance) end busy instances.
#[tokio::test]
async fn the_harness_detects_a_killed_build() {
    let fake = Arc::new(FakeAsg::with_group(G, 0, 10, 2));
    let shared = Arc::new(Shared::default());
    {
        let shared = shared.clone();
        fake.set_observer(Box::new(move |_g, id| {
            let mut lives = shared.lives.lock().unwrap();
            let life = lives.entry(id.to_string()).or_default();
            life.terminated = true;
            if let Some(b) = life.running {
                shared.killed.lock().unwrap().push((id.to_string(), b));
            }
        }));
    }
    shared
        .lives
        .lock()
        .unwrap()
        .entry("i-1".into())
        .or_default()
        .running = Some(7);
    fake.set_desired_capacity(G, 1).await.unwrap();
    assert_eq!(*shared.killed.lock().unwrap(), vec![("i-1".to_string(), 7)]);
}
