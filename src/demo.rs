//! `autoscaler demo`: a newcomer's first run. A throw-away SQLite Vespene database with a few
//! pools and builds, and one forced cycle whose shell executor only prints what it would scale.
//! The SQL builders are also what the tests use to write fixture rows, so the demo's rows are
//! exactly as Vespene writes them (every NOT NULL column set: Vespene has no column defaults).

use crate::config::Config;
use crate::db::{Database, DbError};
use crate::run::{self, RunArgs, RunError};
use autoscaler_executor::WorkerPool;
use chrono::{DateTime, Utc};
use std::path::{Path, PathBuf};

/// Why the demo could not run. Each message names the path or the step, because a newcomer
/// seeing this has nothing else to go on.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// `--keep` names a file that exists: the demo never overwrites a database.
    #[error("{} already exists; choose another --keep path", .0.display())]
    Exists(PathBuf),
    /// The temporary directory could not be made.
    #[error("creating {}", .path.display())]
    TempDir {
        /// The directory.
        path: PathBuf,
        /// What the file system said.
        #[source]
        source: std::io::Error,
    },
    /// Creating or reading the demo database failed.
    #[error(transparent)]
    Database(#[from] DbError),
    /// The sample rows could not be written.
    #[error("seeding the demo database")]
    Seed(#[source] DbError),
    /// The forced cycle could not run.
    #[error(transparent)]
    Run(#[from] RunError),
}

/// `autoscaler demo`: creates the throw-away database (at `keep`, or in a fresh temporary
/// directory), runs one forced cycle of the main job on it, and prints the pools' rows after
/// it and the dry run to try next. Returns the cycle's exit status.
pub async fn run(keep: Option<PathBuf>, config: &Config) -> Result<u8, DemoError> {
    let path = match keep {
        Some(path) => path,
        None => tempfile_dir()?.join("vespene-demo.db"),
    };
    if path.exists() {
        return Err(DemoError::Exists(path));
    }
    let url = format!("sqlite://{}", path.display());
    let db = Database::create_schema(&url).await?;
    db.run_script(&demo_script())
        .await
        .map_err(DemoError::Seed)?;
    db.close().await;
    println!(
        "demo database: {} (pools linux, gpu, windows[disabled]; arm does not exist)",
        path.display()
    );
    let engine = run::engine_for(config, &url, false).await?;
    let args = RunArgs {
        queues: ["linux", "gpu", "windows", "arm"]
            .map(String::from)
            .to_vec(),
        force: true,
        sleep: 20,
        dry_run: false,
        metrics_addr: None,
    };
    let code = run::run_once(&engine, &args, run::shutdown_signal()?).await?;
    print_pools(&engine.database().load_all_pools().await?);
    let exe = std::env::current_exe().ok();
    println!("\nnext, a dry run on the same database (plans and commands, no changes):");
    println!("  {}", next_command(exe.as_deref(), &url));
    Ok(code)
}

/// The pools' rows after the forced cycle: what the autoscaler wrote back.
fn print_pools(pools: &[WorkerPool]) {
    println!("\nafter one forced cycle:");
    println!(
        "{:<10} {:>8} {:>20} {:>30}",
        "pool", "enabled", "autoscaling_status", "last_autoscaled"
    );
    for p in pools {
        println!(
            "{:<10} {:>8} {:>20} {:>30}",
            p.name,
            p.autoscaling_enabled,
            p.autoscaling_status
                .map(|s| s.to_string())
                .unwrap_or_else(|| "NULL".into()),
            p.last_autoscaled
                .map(|t| t.to_rfc3339())
                .unwrap_or_else(|| "NULL".into())
        );
    }
}

/// A directory of this process's own, so two demos at once do not share a database.
fn tempfile_dir() -> Result<PathBuf, DemoError> {
    let dir = std::env::temp_dir().join(format!("vespene-autoscaler-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|source| DemoError::TempDir {
        path: dir.clone(),
        source,
    })?;
    Ok(dir)
}

/// A SQL string literal.
pub fn sql_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn sql_opt_str(s: &Option<String>) -> String {
    s.as_deref().map(sql_str).unwrap_or_else(|| "NULL".into())
}

/// A timestamp literal both engines read back as a UTC `timestamptz`.
pub fn sql_time(t: &DateTime<Utc>) -> String {
    sql_str(&t.format("%Y-%m-%d %H:%M:%S%.6f+00:00").to_string())
}

fn sql_f64(x: f64) -> String {
    if x.is_nan() {
        "'NaN'".into()
    } else if x.is_infinite() {
        if x > 0.0 {
            "'Infinity'".into()
        } else {
            "'-Infinity'".into()
        }
    } else {
        format!("{x:?}")
    }
}

/// `INSERT INTO worker_pools` with every column of `p`.
pub fn insert_pool_sql(p: &WorkerPool) -> String {
    format!(
        "INSERT INTO worker_pools (id, name, variables, isolation_method, sudo_user, permissions_hex, sleep_seconds, \
         auto_abort_minutes, build_latest, build_object_shelf_life, build_root_shelf_life, created_by_id, \
         autoscaling_enabled, autoscaling_status, excess, executor, executor_command, last_autoscaled, maximum, \
         minimum, multiplier, planner, queued_weight, reevaluate_minutes, running_weight) VALUES \
         ({}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {});\n",
        p.id,
        sql_str(&p.name),
        sql_opt_str(&p.variables),
        sql_str(&p.isolation_method),
        sql_opt_str(&p.sudo_user),
        sql_str(&p.permissions_hex),
        p.sleep_seconds,
        p.auto_abort_minutes,
        p.build_latest,
        p.build_object_shelf_life,
        p.build_root_shelf_life,
        p.created_by_id.map(|v| v.to_string()).unwrap_or_else(|| "NULL".into()),
        p.autoscaling_enabled,
        p.autoscaling_status.map(|v| v.to_string()).unwrap_or_else(|| "NULL".into()),
        p.excess,
        sql_opt_str(&p.executor),
        sql_str(&p.executor_command),
        p.last_autoscaled.as_ref().map(sql_time).unwrap_or_else(|| "NULL".into()),
        p.maximum,
        p.minimum,
        sql_f64(p.multiplier),
        sql_opt_str(&p.planner),
        sql_f64(p.queued_weight),
        p.reevaluate_minutes,
        sql_f64(p.running_weight),
    )
}

/// `INSERT INTO builds` with every NOT NULL column set.
pub fn insert_build_sql(
    id: i64,
    pool_id: i64,
    status: &str,
    project_id: Option<i64>,
    worker_id: Option<i64>,
) -> String {
    let opt = |v: Option<i64>| v.map(|x| x.to_string()).unwrap_or_else(|| "NULL".into());
    format!(
        "INSERT INTO builds (id, is_internal, status, working_dir, variables, output_variables, output, \
         project_id, worker_id, worker_pool_id) VALUES ({id}, false, {}, '/tmp/build', '{{}}', '{{}}', '', {}, {}, {pool_id});\n",
        sql_str(status),
        opt(project_id),
        opt(worker_id),
    )
}

/// `INSERT INTO workers` with every NOT NULL column set.
pub fn insert_worker_sql(id: i64, hostname: &str, last_checkin: Option<DateTime<Utc>>) -> String {
    let t = last_checkin
        .as_ref()
        .map(sql_time)
        .unwrap_or_else(|| "NULL".into());
    format!(
        "INSERT INTO workers (id, worker_uid, hostname, port, build_root, first_checkin, last_checkin, fileserving_enabled) \
         VALUES ({id}, {}, {}, 8000, '/tmp/buildroot', {t}, {t}, false);\n",
        sql_str(&format!("uid-{id}-{hostname}")),
        sql_str(hostname),
    )
}

/// The demo's pools and builds, as one SQL script.
pub fn demo_script() -> String {
    let say = "echo \"would scale {{ worker_pool.name | shell_quote }} to {{ size }} workers ({{ queued_size }} for the queue alone)\"";
    let mut linux = WorkerPool::with_defaults(1, "linux");
    linux.autoscaling_enabled = true;
    linux.planner = Some("stock".into());
    linux.executor = Some("shell".into());
    linux.executor_command = say.into();
    let mut gpu = WorkerPool::with_defaults(2, "gpu");
    gpu.autoscaling_enabled = true;
    gpu.executor = Some("shell".into());
    gpu.executor_command = say.into();
    gpu.build_latest = false;
    gpu.queued_weight = 2.0;
    gpu.maximum = 4;
    let mut windows = WorkerPool::with_defaults(3, "windows");
    windows.executor_command = say.into();
    let mut sql = String::new();
    for p in [&linux, &gpu, &windows] {
        sql += &insert_pool_sql(p);
    }
    sql += &insert_worker_sql(1, "worker-a.example", Some(Utc::now()));
    sql += &insert_worker_sql(2, "worker-b.example", Some(Utc::now()));
    // linux: 4 queued builds of 2 projects (build_latest counts 2), 2 running.
    for (id, project) in [(1, 10), (2, 10), (3, 11), (4, 11)] {
        sql += &insert_build_sql(id, 1, "QUEUED", Some(project), None);
    }
    sql += &insert_build_sql(5, 1, "RUNNING", Some(12), Some(1));
    sql += &insert_build_sql(6, 1, "RUNNING", Some(13), Some(2));
    sql += &insert_build_sql(7, 1, "SUCCESS", Some(12), Some(1));
    // gpu: 3 queued with weight 2 -> 6, capped at maximum 4.
    for id in 8..=10 {
        sql += &insert_build_sql(id, 2, "QUEUED", Some(20 + id), None);
    }
    sql
}

/// The command the demo suggests next: a dry run of the same pools on the same database, led
/// by the path of the binary that is running, because after `cargo run` no `autoscaler` is on
/// the `PATH` and the suggestion must run as printed. Every word is quoted for `sh`.
pub fn next_command(exe: Option<&Path>, database_url: &str) -> String {
    use autoscaler_executor::template::shell_quote;
    let program = exe
        .and_then(|p| p.to_str())
        .map(shell_quote)
        .unwrap_or_else(|| "autoscaler".into());
    format!(
        "{program} --database-url {} --queue linux --force --dry-run",
        shell_quote(database_url)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_are_escaped() {
        assert_eq!(sql_str("it's"), "'it''s'");
        let mut p = WorkerPool::with_defaults(1, "o'neil");
        p.multiplier = f64::NAN;
        let sql = insert_pool_sql(&p);
        assert!(sql.contains("'o''neil'") && sql.contains("'NaN'"), "{sql}");
    }

    #[test]
    fn next_command_names_the_running_binary_quoted() {
        let exe = std::path::Path::new("/home/a user/target/debug/autoscaler");
        assert_eq!(
            next_command(Some(exe), "sqlite:///tmp/it's.db"),
            "'/home/a user/target/debug/autoscaler' --database-url 'sqlite:///tmp/it'\\''s.db' --queue linux --force --dry-run"
        );
        assert!(next_command(None, "sqlite://x.db")
            .starts_with("autoscaler --database-url sqlite://x.db "));
    }
}
