//! The `warm` planner live, through the real binary: a pool's standby target comes from its own
//! `builds.queued_time` history (read on the cycle's connection), reaches the executor, and a
//! history that cannot be read costs the pool its standby only, never its size or its status.

mod common;

use chrono::{DateTime, Duration, Utc};
use common::{admin_url, shell_pool, Engine, TestDb};
use std::path::Path;
use std::process::{Command, Output};

fn run(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_autoscaler"))
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .arg("--database-url")
        .arg(url)
        .args(args)
        .output()
        .expect("run autoscaler")
}

/// A `warm` pool and a `stock` one, each appending its plan to `log`.
async fn pools(t: &TestDb, log: &Path) {
    let line = |name: &str| {
        format!(
            "echo \"{name} size={{{{ size }}}} standby={{{{ standby }}}} env=$VESPENE_STANDBY\" >> {}",
            log.display()
        )
    };
    let mut warm = shell_pool(1, "linux", &line("linux"));
    warm.planner = Some("warm".into());
    warm.maximum = 10;
    t.add_pool(&warm).await;
    t.add_pool(&shell_pool(2, "mac", &line("mac"))).await;
}

/// Start of the 90 s window (the default `boot_seconds`) holding `at`.
fn window_start(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(at.timestamp().div_euclid(90) * 90, 0).unwrap()
}

/// History for `linux`: a week ago, in this hour of the week, 3 projects' builds (4 builds, one
/// project twice) queued within one boot window, all finished. One QUEUED build now.
async fn history(t: &TestDb, now: DateTime<Utc>) {
    t.add_builds(&[
        (1, 1, "SUCCESS", Some(11), None),
        (2, 1, "SUCCESS", Some(11), None),
        (3, 1, "FAILURE", Some(12), None),
        (4, 1, "SUCCESS", Some(13), None),
        (5, 1, "QUEUED", Some(14), None),
    ])
    .await;
    let start = window_start(now - Duration::days(7));
    for (id, s) in [(1, 1), (2, 5), (3, 30), (4, 60)] {
        let at = autoscaler::demo::sql_time(&(start + Duration::seconds(s)));
        t.exec(&format!(
            "UPDATE builds SET queued_time = {at} WHERE id = {id};"
        ))
        .await;
    }
}

fn logged(log: &Path, pool: &str) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with(&format!("{pool} ")))
        .unwrap_or_else(|| panic!("no line for {pool} in {text:?}"))
        .to_string()
}

async fn standby_comes_from_history(t: TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("plans.log");
    pools(&t, &log).await;
    history(&t, Utc::now()).await;

    let out = run(&t.url, &["--queue", "linux", "--queue", "mac", "--force"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // size: boot-aware's for one queued build; standby: the 3 projects of last week's window
    // (this hour, one boot), within maximum − size.
    assert_eq!(
        logged(&log, "linux"),
        "linux size=1 standby=3 env=3",
        "{stderr}"
    );
    assert_eq!(
        logged(&log, "mac"),
        "mac size=0 standby=0 env=0",
        "{stderr}"
    );
    assert_eq!(t.status_of("linux").await.0, Some(0));
    t.cleanup().await;
}

#[tokio::test]
async fn standby_comes_from_history_postgres() {
    standby_comes_from_history(TestDb::new(Engine::Postgres).await).await;
}

#[tokio::test]
async fn standby_comes_from_history_sqlite() {
    standby_comes_from_history(TestDb::new(Engine::Sqlite).await).await;
}

/// The same pools as seen by a role that may read every column the cycle needs except
/// `builds.queued_time`: the history query is refused by PostgreSQL itself. The warm pool is
/// still sized and stamped (standby 0, its floor, with a warning naming the pool); the other
/// pool is untouched by it.
#[tokio::test]
async fn an_unreadable_history_costs_the_standby_only() {
    let t = TestDb::new(Engine::Postgres).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("plans.log");
    pools(&t, &log).await;
    history(&t, Utc::now()).await;

    let role = format!("autoscaler_nohist_{}", std::process::id());
    t.exec(&format!(
        "CREATE ROLE {role} LOGIN;\n\
         GRANT SELECT, UPDATE ON worker_pools TO {role};\n\
         GRANT SELECT ON workers, projects TO {role};\n\
         GRANT SELECT (id, status, worker_pool_id, project_id, worker_id, start_time) ON builds TO {role};"
    ))
    .await;
    let mut url = url::Url::parse(&t.url).unwrap();
    url.set_username(&role).unwrap();

    let out = run(
        url.as_str(),
        &["--queue", "linux", "--queue", "mac", "--force"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        logged(&log, "linux"),
        "linux size=1 standby=0 env=0",
        "{stderr}"
    );
    assert_eq!(
        logged(&log, "mac"),
        "mac size=0 standby=0 env=0",
        "{stderr}"
    );
    assert!(
        stderr.contains("pool linux: could not read its arrival history"),
        "{stderr}"
    );
    assert!(out.status.success(), "{stderr}");
    assert_eq!(t.status_of("linux").await.0, Some(0));
    assert_eq!(t.status_of("mac").await.0, Some(0));

    let name = url.path().trim_start_matches('/').to_string();
    t.cleanup().await;
    let dropped = Command::new("psql")
        .arg(admin_url())
        .args(["-q", "-c", &format!("DROP ROLE IF EXISTS {role}")])
        .output()
        .unwrap();
    assert!(
        dropped.status.success(),
        "drop role after {name}: {dropped:?}"
    );
}
