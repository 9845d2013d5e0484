//! Cost of one `--force` evaluation cycle on PostgreSQL: database reads and writes, planner and
//! an executor, end to end through the same `Engine` the binary runs, on one connection as the
//! binary does.
//!
//! `cargo bench --bench cycle` loads Vespene's real schema into a scratch database, fills it
//! with pools and build history, and for each size runs a child process (so peak RSS is that
//! size's own) that does one warm-up cycle and then timed cycles. Prints Markdown tables.
//! The same file is the `cycle` binary of the `autoscaler-bench` package (`bench/`), whose
//! release build compiles the shell executor only: `cargo run --release -p autoscaler-bench
//! --bin cycle` (a `cargo bench` also compiles the dev-dependencies, the AWS and Google SDKs).
//!
//! Environment: `AUTOSCALER_TEST_PG` (admin URL, default postgres://postgres@127.0.0.1:5432/test),
//! `BENCH_POOLS` (default "1,100,1000,10000"), `BENCH_BUILDS` (default "100000,1000000"),
//! `BENCH_REPS` (default 15), `BENCH_CONCURRENCY` (the engine's `concurrency`, default 8),
//! `BENCH_EXECUTOR` (`noop`, default: planning and database only; `shell`: every pool runs the
//! real shell executor with `executor_command = true`, so the figure includes starting one
//! `sh -c` process per pool, as a user's cycle does).
//!
//! `cycle --setup NAME POOLS` only loads database NAME (pools `pool-00001`…, `BENCH_BUILDS`
//! finished builds, executor per `BENCH_EXECUTOR`), keeps it and prints its URL: for timing the
//! real `autoscaler` binary on the same data.
//!
//! It also times 8 busy-worker reads at once (what 8 pools scaling in at the same moment ask)
//! on the one connection of a cycle, where they wait for each other, and on a pool of 8.

use async_trait::async_trait;
use autoscaler::engine::{Engine, EngineOptions, PoolResult, Registry};
use autoscaler_executor::{Executor, ExecutorError, Outcome, ScaleRequest};
use sqlx::Connection;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

const SCHEMA: &str = include_str!("../tests/fixtures/vespene_schema.sql");

/// Succeeds at once: the bench measures the autoscaler, not a backend.
struct Noop;

#[async_trait]
impl Executor for Noop {
    fn name(&self) -> &'static str {
        "noop"
    }
    fn declarative(&self) -> bool {
        false
    }
    async fn scale(&self, r: ScaleRequest<'_>) -> Result<Outcome, ExecutorError> {
        Ok(Outcome {
            actions: vec![],
            applied: Some(r.plan.size),
            revisit: false,
        })
    }
}

fn env_list(name: &str, default: &str) -> Vec<usize> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .map(|s| s.trim().parse().expect("a number"))
        .collect()
}

fn admin_url() -> String {
    std::env::var("AUTOSCALER_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn db_url(name: &str) -> String {
    let mut u = url::Url::parse(&admin_url()).unwrap();
    u.set_path(&format!("/{name}"));
    u.to_string()
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// `noop` or `shell` (see the module docs).
fn executor_kind() -> String {
    std::env::var("BENCH_EXECUTOR").unwrap_or_else(|_| "noop".into())
}

fn concurrency() -> usize {
    env_list("BENCH_CONCURRENCY", "8")[0]
}

/// Pools with RUNNING builds (every fourth one), as many as a cycle scales at once.
const BUSY_POOLS: [i64; 8] = [4, 8, 12, 16, 20, 24, 28, 32];

/// Median ms of 8 busy-worker reads at once: on the one connection of a cycle (they wait for
/// each other there), and on a pool of 8 connections.
async fn busy_reads(url: &str, reps: usize) -> (f64, f64) {
    let names: Vec<String> = BUSY_POOLS.iter().map(|i| format!("pool-{i:05}")).collect();
    let one = autoscaler::run::connect(url).unwrap();
    let eight = autoscaler::db::Database::connect(
        url,
        &autoscaler::db::ConnectOptions {
            max_connections: 8,
            ..Default::default()
        },
    )
    .unwrap();
    let mut shared = Vec::new();
    let mut pooled = Vec::new();
    for _ in 0..=reps {
        let locks = one.lock_pools(&names).await.unwrap();
        let t = Instant::now();
        let all =
            futures::future::join_all(BUSY_POOLS.iter().map(|id| locks.busy_workers(*id))).await;
        shared.push(t.elapsed().as_secs_f64() * 1000.0);
        assert!(all.iter().all(|b| b.as_ref().unwrap().len() == 2));
        locks.release().await;
        let t = Instant::now();
        let all =
            futures::future::join_all(BUSY_POOLS.iter().map(|id| eight.busy_workers(*id))).await;
        pooled.push(t.elapsed().as_secs_f64() * 1000.0);
        assert!(all.iter().all(|b| b.as_ref().unwrap().len() == 2));
    }
    // The first round opens the connections.
    let median = |v: &mut Vec<f64>| {
        v.remove(0);
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    (median(&mut shared), median(&mut pooled))
}

/// Child: time cycles over the first `pools` pools.
async fn child(url: &str, pools: usize, reps: usize) {
    let db = autoscaler::run::connect(url).unwrap();
    let mut registry = Registry::default();
    match executor_kind().as_str() {
        "shell" => registry.register(Arc::new(autoscaler_shell::ShellExecutor::new(
            Default::default(),
        ))),
        _ => registry.register(Arc::new(Noop)),
    }
    let engine = Engine::new(
        db,
        registry,
        autoscaler::planner::Planners::default(),
        EngineOptions {
            dry_run: false,
            concurrency: concurrency(),
            ..EngineOptions::default()
        },
    );
    let names: Vec<String> = (1..=pools).map(|i| format!("pool-{i:05}")).collect();
    let (_tx, stop) = tokio::sync::watch::channel(false);
    let warm = engine.run_cycle(&names, true, &stop).await.unwrap();
    let scaled = warm
        .pools
        .iter()
        .filter(|p| matches!(p.result, PoolResult::Scaled { .. }))
        .count();
    assert_eq!(scaled, pools, "every pool must be scaled");
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        engine.run_cycle(&names, true, &stop).await.unwrap();
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let rss = peak_rss_kib();
    let (shared, pooled) = busy_reads(url, reps).await;
    println!(
        "RESULT {:.2} {:.2} {:.2} {rss} {shared:.2} {pooled:.2}",
        times[times.len() / 2],
        times[0],
        times[times.len() - 1],
    );
}

async fn setup(name: &str, max_pools: usize, finished: usize) {
    let mut admin = sqlx::PgConnection::connect(&admin_url())
        .await
        .expect("PostgreSQL");
    sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .unwrap();
    sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let mut c = sqlx::PgConnection::connect(&db_url(name)).await.unwrap();
    sqlx::raw_sql(SCHEMA).execute(&mut c).await.unwrap();
    let p = max_pools;
    let (exe, cmd) = match executor_kind().as_str() {
        "shell" => ("shell", "true"),
        _ => ("noop", "noop"),
    };
    let fill = format!(
        "SET search_path TO public;
         INSERT INTO worker_pools (id, name, variables, isolation_method, sudo_user, permissions_hex, sleep_seconds,
           auto_abort_minutes, build_latest, build_object_shelf_life, build_root_shelf_life, created_by_id,
           autoscaling_enabled, autoscaling_status, excess, executor, executor_command, last_autoscaled, maximum,
           minimum, multiplier, planner, queued_weight, reevaluate_minutes, running_weight)
         SELECT g, 'pool-' || lpad(g::text, 5, '0'), '{{}}', 'basic', NULL, '0x777', 10, 1440, true, 365, 31, NULL,
           true, NULL, 0, '{exe}', '{cmd}', NULL, 10, 0, 1.0, 'stock', 1.0, 10, 1.0 FROM generate_series(1, {p}) g;
         INSERT INTO projects (id, name, pipeline_enabled, description, repo_url, repo_branch, scm_type,
           webhook_enabled, timeout, launch_questions, schedule_enabled, monday, tuesday, wednesday, thursday,
           friday, saturday, sunday, schedule_threshold, worker_pool_id, recursive)
         SELECT g, 'project-' || g, false, '', 'https://example.invalid/r.git', 'main', 'git', false, 60, '[]',
           false, false, false, false, false, false, false, false, 0, ((g - 1) / 2) + 1, false
         FROM generate_series(1, {p} * 2) g;
         -- History: finished builds spread over every pool, each with a few hundred bytes of output.
         INSERT INTO builds (id, is_internal, status, working_dir, variables, output_variables, output, project_id,
           worker_pool_id, queued_time, start_time, end_time, return_code)
         SELECT g, false, CASE WHEN g % 10 = 0 THEN 'FAILURE' ELSE 'SUCCESS' END, '/srv/buildroot/' || g, '{{}}', '{{}}',
           repeat('compiling unit ' || g || E'\\n', 8), ((g % {p}) * 2) + 1, (g % {p}) + 1,
           now() - interval '30 days', now() - interval '30 days', now() - interval '29 days', 0
         FROM generate_series(1, {finished}) g;
         -- Activity: every fourth pool has 3 queued builds of 2 projects and 2 running.
         INSERT INTO builds (id, is_internal, status, working_dir, variables, output_variables, project_id,
           worker_pool_id, queued_time)
         SELECT {finished} + row_number() OVER (), false, s.status, '/srv/buildroot', '{{}}', '{{}}', s.project, s.pool, now()
         FROM (SELECT pool, status, project FROM generate_series(4, {p}, 4) pool,
               LATERAL (VALUES ('QUEUED', pool * 2 - 1), ('QUEUED', pool * 2 - 1), ('QUEUED', pool * 2),
                               ('RUNNING', pool * 2), ('RUNNING', pool * 2 - 1)) v(status, project)) s;
         ANALYZE;"
    );
    sqlx::raw_sql(&fill).execute(&mut c).await.unwrap();
    c.close().await.ok();
}

/// median, min, max ms, peak RSS KiB, busy reads ms (shared connection, pool of 8)
type ChildResult = (f64, f64, f64, u64, f64, f64);

fn run_child(url: &str, pools: usize, reps: usize) -> ChildResult {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--child", url, &pools.to_string(), &reps.to_string()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("child failed: {}", String::from_utf8_lossy(&out.stderr)));
    let v: Vec<&str> = line.split_whitespace().collect();
    (
        v[0].parse().unwrap(),
        v[1].parse().unwrap(),
        v[2].parse().unwrap(),
        v[3].parse().unwrap(),
        v[4].parse().unwrap(),
        v[5].parse().unwrap(),
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        let (url, pools, reps) = (
            &args[i + 1],
            args[i + 2].parse().unwrap(),
            args[i + 3].parse().unwrap(),
        );
        rt.block_on(child(url, pools, reps));
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--setup") {
        // Keep a loaded database for timing the real binary on it (docs/performance.md).
        let name = args.get(i + 1).expect("--setup NAME POOLS");
        let pools: usize = args
            .get(i + 2)
            .and_then(|n| n.parse().ok())
            .expect("--setup NAME POOLS");
        let finished = env_list("BENCH_BUILDS", "100000")[0];
        rt.block_on(setup(name, pools, finished));
        println!("{}", db_url(name));
        return;
    }
    let pools = env_list("BENCH_POOLS", "1,100,1000,10000");
    let builds = env_list("BENCH_BUILDS", "100000,1000000");
    let reps = env_list("BENCH_REPS", "15")[0];
    let max_pools = (*pools.iter().max().unwrap()).max(32);
    let mut busy = Vec::new();
    println!(
        "One --force cycle on PostgreSQL, executor {}, concurrency {} (median of {reps}, after one warm-up cycle; min-max in brackets).\n",
        executor_kind(),
        concurrency()
    );
    println!("| pools | finished builds | active builds | no index: cycle ms | with partial index: cycle ms | peak RSS |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for &finished in &builds {
        let name = format!("autoscaler_bench_{}", std::process::id());
        let t = Instant::now();
        rt.block_on(setup(&name, max_pools, finished));
        eprintln!(
            "loaded {max_pools} pools and {finished} finished builds in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        let url = db_url(&name);
        let mut rows = Vec::new();
        for &n in &pools {
            rows.push(run_child(&url, n, reps));
        }
        rt.block_on(async {
            let db = autoscaler::run::connect(&url).unwrap();
            db.ensure_index().await.unwrap();
            db.run_script("ANALYZE builds").await.unwrap();
            db.close().await;
        });
        for (k, &n) in pools.iter().enumerate() {
            let (med, lo, hi, rss, shared, pooled) = rows[k];
            let (imed, ilo, ihi, irss, ishared, ipooled) = run_child(&url, n, reps);
            if k == 0 {
                busy.push((finished, shared, pooled, ishared, ipooled));
            }
            let active = (n / 4) * 5;
            println!(
                "| {n} | {finished} | {active} | {med:.1} [{lo:.1}-{hi:.1}] | {imed:.1} [{ilo:.1}-{ihi:.1}] | {:.1} MiB |",
                rss.max(irss) as f64 / 1024.0
            );
        }
        rt.block_on(async {
            let mut admin = sqlx::PgConnection::connect(&admin_url()).await.unwrap();
            sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut admin)
                .await
                .unwrap();
        });
    }
    println!(
        "\n8 busy-worker reads at once (median ms): one connection (the cycle's) / a pool of 8\n"
    );
    println!("| finished builds | no index | with partial index |");
    println!("|---:|---:|---:|");
    for (finished, shared, pooled, ishared, ipooled) in busy {
        println!("| {finished} | {shared:.2} / {pooled:.2} | {ishared:.2} / {ipooled:.2} |");
    }
}
