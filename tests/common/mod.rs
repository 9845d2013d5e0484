//! Test harness: a fresh database per test, on PostgreSQL (the real Vespene schema from
//! `fixtures/vespene_schema.sql`) or SQLite (`db init`'s schema in a temp dir), plus row
//! builders. PostgreSQL is at `AUTOSCALER_TEST_PG` (default postgres://postgres@127.0.0.1:5432/test).

#![allow(dead_code)]

use autoscaler::db::{ConnectOptions, Database};
use autoscaler::demo::{insert_build_sql, insert_pool_sql, insert_worker_sql};
use autoscaler_executor::WorkerPool;
use sqlx::Connection;
use std::sync::atomic::{AtomicUsize, Ordering};

pub mod process;

pub const VESPENE_SCHEMA: &str = include_str!("../fixtures/vespene_schema.sql");

/// Which engine a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Postgres,
    Sqlite,
}

/// `(id, pool_id, status, project_id, worker_id)` of a build fixture.
pub type BuildRow<'a> = (i64, i64, &'a str, Option<i64>, Option<i64>);

/// A database that exists for one test and is dropped afterwards.
pub struct TestDb {
    pub engine: Engine,
    pub url: String,
    pub db: Database,
    pg_name: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

pub fn admin_url() -> String {
    std::env::var("AUTOSCALER_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn url_with_db(admin: &str, name: &str) -> String {
    let mut u = url::Url::parse(admin).expect("AUTOSCALER_TEST_PG must be a URL");
    u.set_path(&format!("/{name}"));
    u.to_string()
}

impl TestDb {
    pub async fn new(engine: Engine) -> TestDb {
        match engine {
            Engine::Postgres => TestDb::postgres().await,
            Engine::Sqlite => TestDb::sqlite().await,
        }
    }

    /// A new PostgreSQL database holding Vespene's real schema, unmodified.
    pub async fn postgres() -> TestDb {
        let db = TestDb::postgres_empty().await;
        // A dedicated connection: the dump empties search_path for its session.
        let mut conn = sqlx::PgConnection::connect(&db.url)
            .await
            .expect("connect to test database");
        sqlx::raw_sql(VESPENE_SCHEMA)
            .execute(&mut conn)
            .await
            .expect("load Vespene schema");
        conn.close().await.ok();
        db
    }

    /// A new, empty PostgreSQL database.
    pub async fn postgres_empty() -> TestDb {
        let admin = admin_url();
        let name = format!(
            "autoscaler_t_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst),
            chrono::Utc::now().timestamp_micros() % 1_000_000
        );
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL for tests at {admin}: {e}"));
        sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("create database");
        conn.close().await.ok();
        let url = url_with_db(&admin, &name);
        let db = Database::connect(&url, &ConnectOptions::default()).expect("connect");
        TestDb {
            engine: Engine::Postgres,
            url,
            db,
            pg_name: Some(name),
            _dir: None,
        }
    }

    /// A new SQLite file with `db init`'s schema.
    pub async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("vespene.db").display());
        let db = Database::connect(
            &url,
            &ConnectOptions {
                create_sqlite: true,
                ..ConnectOptions::default()
            },
        )
        .expect("connect");
        db.init_schema().await.expect("db init");
        TestDb {
            engine: Engine::Sqlite,
            url,
            db,
            pg_name: None,
            _dir: Some(dir),
        }
    }

    pub async fn exec(&self, sql: &str) {
        self.db
            .run_script(sql)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{sql}"));
    }

    pub async fn add_pool(&self, pool: &WorkerPool) {
        self.exec(&insert_pool_sql(pool)).await;
    }

    pub async fn add_worker(&self, id: i64, hostname: &str) {
        self.exec(&insert_worker_sql(id, hostname, Some(chrono::Utc::now())))
            .await;
    }

    /// Adds builds `(id, pool_id, status, project_id, worker_id)`; on the real schema it first
    /// adds the projects they reference (foreign key).
    pub async fn add_builds(&self, builds: &[BuildRow<'_>]) {
        let mut sql = String::from("BEGIN;\n");
        if self.engine == Engine::Postgres {
            let mut projects: Vec<(i64, i64)> = builds
                .iter()
                .filter_map(|b| b.3.map(|p| (p, b.1)))
                .collect();
            projects.sort();
            projects.dedup_by_key(|p| p.0);
            for (project, pool) in projects {
                sql += &insert_project_sql(project, pool);
            }
        }
        for &(id, pool, status, project, worker) in builds {
            sql += &insert_build_sql(id, pool, status, project, worker);
        }
        sql += "COMMIT;\n";
        self.exec(&sql).await;
    }

    /// Reads `(autoscaling_status, last_autoscaled)` of a pool.
    pub async fn status_of(
        &self,
        name: &str,
    ) -> (Option<i32>, Option<chrono::DateTime<chrono::Utc>>) {
        let p = self.db.load_pools(&[name.to_string()]).await.unwrap();
        let p = p.first().unwrap_or_else(|| panic!("no pool {name}"));
        (p.autoscaling_status, p.last_autoscaled)
    }

    pub async fn pool(&self, name: &str) -> WorkerPool {
        self.db
            .load_pools(&[name.to_string()])
            .await
            .unwrap()
            .remove(0)
    }

    /// Closes connections and drops the PostgreSQL database.
    pub async fn cleanup(mut self) {
        self.db.close().await;
        if let Some(name) = self.pg_name.take() {
            drop_pg(&name);
        }
    }
}

fn drop_pg(name: &str) {
    // psql rather than async code so it also works from Drop during a panic.
    let _ = std::process::Command::new("psql")
        .arg(admin_url())
        .arg("-q")
        .arg("-c")
        .arg(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .output();
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(name) = self.pg_name.take() {
            drop_pg(&name);
        }
    }
}

/// A `projects` row (Vespene's schema has a foreign key from builds) with every NOT NULL column.
pub fn insert_project_sql(id: i64, pool_id: i64) -> String {
    format!(
        "INSERT INTO projects (id, name, pipeline_enabled, description, repo_url, repo_branch, scm_type, \
         webhook_enabled, timeout, launch_questions, schedule_enabled, monday, tuesday, wednesday, thursday, \
         friday, saturday, sunday, schedule_threshold, worker_pool_id, recursive) VALUES ({id}, 'project-{id}', \
         false, '', 'https://example.invalid/repo.git', 'main', 'git', false, 60, '[]', false, false, false, \
         false, false, false, false, false, 0, {pool_id}, false) ON CONFLICT (id) DO NOTHING;\n"
    )
}

/// A pool with autoscaling on, the shell executor and `command`.
pub fn shell_pool(id: i64, name: &str, command: &str) -> WorkerPool {
    let mut p = WorkerPool::with_defaults(id, name);
    p.autoscaling_enabled = true;
    p.planner = Some("stock".into());
    p.executor = Some("shell".into());
    p.executor_command = command.into();
    p
}

/// Generates `NAME_postgres` and `NAME_sqlite` tests that run `body(TestDb)`.
#[macro_export]
macro_rules! db_test {
    ($name:ident, $body:expr) => {
        paste::paste! {
            #[tokio::test]
            async fn [<$name _postgres>]() {
                let db = $crate::common::TestDb::new($crate::common::Engine::Postgres).await;
                ($body)(db).await;
            }
            #[tokio::test]
            async fn [<$name _sqlite>]() {
                let db = $crate::common::TestDb::new($crate::common::Engine::Sqlite).await;
                ($body)(db).await;
            }
        }
    };
}
