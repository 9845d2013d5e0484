//! The Vespene database: PostgreSQL in production, SQLite as the embedded default.
//!
//! Every query is written once, in SQL both engines accept, and bound with `$N` placeholders
//! (SQLite numbers `$N` parameters in order of appearance, PostgreSQL by N; the queries use
//! them in order). The autoscaler writes only `autoscaling_status` and `last_autoscaled`.

mod history;
mod lock;
mod queries;
mod redact;
mod rows;
mod timestamp;

pub use history::{HistoryCache, HISTORY_MAX_AGE, HISTORY_WEEKS};
pub use lock::{PoolLocks, LOCK_NAMESPACE};
use queries::Acquired;
pub use redact::redact_url;
use redact::{drop_unknown_pg_params, scrub};
pub use rows::{TraceRow, UnreadableRow, WorkerRow};
pub use timestamp::{from_pg_micros, Ts};

use crate::planner::Counts;
use autoscaler_executor::{BusyWorker, WorkerPool};
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{PgPool, SqlitePool};
use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

/// A database failure. Messages carry what was being done and the driver's reason, never the
/// connection URL's password.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The URL could not be used; the text names what is wrong with it (password redacted).
    #[error("invalid --database-url {url}: {reason}")]
    InvalidUrl {
        /// The URL, its password replaced: errors are logged.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A query failed.
    #[error("database: {what}: {reason}")]
    Query {
        /// What the query was for (`reading worker_pools`): the operator's first clue.
        what: &'static str,
        /// The driver's message, scrubbed of secrets.
        reason: String,
    },
    /// `db init` found Vespene's tables already there and touched nothing.
    #[error("database already has Vespene tables ({0}); refusing to touch it")]
    AlreadyInitialized(String),
}

impl DbError {
    fn query(what: &'static str) -> impl FnOnce(sqlx::Error) -> DbError {
        move |e| DbError::Query {
            what,
            reason: e.to_string(),
        }
    }
}

/// A connection pool to either engine. An enum rather than `sqlx::Any` because `Any` cannot
/// decode timestamps, and Vespene's `last_autoscaled` is one.
#[derive(Clone, Debug)]
pub enum Database {
    /// Vespene's production database.
    Postgres(PgPool),
    /// Demos, tests and small installations.
    Sqlite(SqlitePool),
}

/// Runs the same statement-building code against whichever engine is connected.
macro_rules! on_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            Database::Postgres($pool) => $body,
            Database::Sqlite($pool) => $body,
        }
    };
}

/// How the autoscaler's connections appear in PostgreSQL's `pg_stat_activity` unless the URL
/// (`?application_name=…`) or `PGAPPNAME` names them otherwise (two autoscalers of an HA pair,
/// say).
pub const DEFAULT_APPLICATION_NAME: &str = "vespene-autoscaler";

/// Options for [`Database::connect`].
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// Connections kept open; the engine runs pools concurrently.
    pub max_connections: u32,
    /// How long a query may wait for a connection (and a connect may take) before failing;
    /// short, so an outage is noticed within a cycle.
    pub acquire_timeout: Duration,
    /// Create the SQLite file when missing (`db init`, the demo); otherwise a typo in a path
    /// would silently autoscale against an empty database.
    pub create_sqlite: bool,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(3),
            create_sqlite: false,
        }
    }
}

/// A pool row that could not be read (a column holds something its type cannot: text in a
/// REAL column on SQLite, say). It fails that pool alone, naming the column.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("pool {}: {column}: cannot be read: {reason}", name.as_deref().unwrap_or("?"))]
pub struct UnreadablePool {
    /// The row's id, when that much could be read (to record its status).
    pub id: Option<i64>,
    /// The row's name, when that much could be read.
    pub name: Option<String>,
    /// The row's `executor`, when readable: the audit skips unreadable rows of pools it would
    /// not have audited anyway.
    pub executor: Option<String>,
    /// The column at fault.
    pub column: &'static str,
    /// The driver's reason.
    pub reason: String,
}

fn collect_pools(
    rows: Vec<Result<WorkerPool, UnreadablePool>>,
) -> Result<Vec<WorkerPool>, DbError> {
    rows.into_iter()
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| DbError::Query {
            what: "reading worker_pools",
            reason: e.to_string(),
        })
}

/// Name of the optional partial index.
pub const ACTIVE_BUILDS_INDEX_NAME: &str = "autoscaler_builds_active";

/// The exact statement `autoscaler db ensure-index` runs. Vespene's `builds` has no index on
/// `status`, so the count query scans every build ever run; this partial index holds only the
/// QUEUED and RUNNING rows (a few per pool), so it stays tiny however long the history grows,
/// and costs Vespene's writers one small index update per status change into or out of those
/// two states. Drop it with `DROP INDEX autoscaler_builds_active`.
pub const ACTIVE_BUILDS_INDEX: &str =
    "CREATE INDEX autoscaler_builds_active ON builds (worker_pool_id, status) \
    WHERE status IN ('QUEUED', 'RUNNING')";

impl Database {
    /// Connects lazily: the first query opens the connection. The process can then start
    /// while the database is down and recover when it returns, instead of exiting.
    pub fn connect(url: &str, opts: &ConnectOptions) -> Result<Database, DbError> {
        let invalid = |reason: String| DbError::InvalidUrl {
            url: redact_url(url),
            reason,
        };
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let (url, ignored) = drop_unknown_pg_params(url);
            if !ignored.is_empty() {
                tracing::warn!(
                    "--database-url: ignoring unrecognized connect parameter(s) {} (values not shown)",
                    ignored.join(", ")
                );
            }
            let o = PgConnectOptions::from_str(&url)
                .map_err(|e| invalid(scrub(&e.to_string(), &url)))?;
            // `application_name` (from the URL or PGAPPNAME) names the process in
            // pg_stat_activity; without one it is `vespene-autoscaler`.
            let o = match o.get_application_name() {
                Some(_) => o,
                None => o.application_name(DEFAULT_APPLICATION_NAME),
            };
            let pool = PgPoolOptions::new()
                .max_connections(opts.max_connections)
                .acquire_timeout(opts.acquire_timeout)
                .connect_lazy_with(o);
            Ok(Database::Postgres(pool))
        } else if url.starts_with("sqlite:") {
            let o = SqliteConnectOptions::from_str(url)
                .map_err(|e| invalid(scrub(&e.to_string(), url)))?
                .create_if_missing(opts.create_sqlite)
                .journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(10));
            let file = o.get_filename();
            if !opts.create_sqlite && file != Path::new(":memory:") && !file.exists() {
                return Err(invalid(format!(
                    "SQLite file {} does not exist (create one with `autoscaler db init`, or point \
                     --database-url / DATABASE_URL at Vespene's PostgreSQL)",
                    file.display()
                )));
            }
            let pool = SqlitePoolOptions::new()
                .max_connections(opts.max_connections)
                .acquire_timeout(opts.acquire_timeout)
                .connect_lazy_with(o);
            Ok(Database::Sqlite(pool))
        } else {
            Err(invalid(
                "expected a postgres://, postgresql:// or sqlite: URL".to_string(),
            ))
        }
    }

    /// Which engine, for logs.
    pub fn engine(&self) -> &'static str {
        match self {
            Database::Postgres(_) => "postgres",
            Database::Sqlite(_) => "sqlite",
        }
    }

    /// A connection from the pool. The pool only says that it timed out; one direct attempt
    /// then tells why (refused, authentication, …), so an outage is logged with its cause.
    async fn acquire(&self, what: &'static str) -> Result<Acquired, DbError> {
        let timed_out = match self {
            Database::Postgres(pool) => match pool.acquire().await {
                Ok(c) => return Ok(Acquired::Postgres(c)),
                Err(sqlx::Error::PoolTimedOut) => {
                    use sqlx::ConnectOptions as _;
                    let opts = pool.connect_options();
                    match tokio::time::timeout(Duration::from_secs(5), opts.connect()).await {
                        Ok(Err(e)) => e.to_string(),
                        Ok(Ok(_)) => "timed out waiting for a free connection".to_string(),
                        Err(_) => "timed out connecting".to_string(),
                    }
                }
                Err(e) => return Err(DbError::query(what)(e)),
            },
            Database::Sqlite(pool) => {
                return pool
                    .acquire()
                    .await
                    .map(Acquired::Sqlite)
                    .map_err(DbError::query(what))
            }
        };
        Err(DbError::Query {
            what: "connecting",
            reason: timed_out,
        })
    }

    /// The named pools (every column), in one query, each row read on its own: a row that
    /// cannot be read fails only that pool. Names that match no row are absent from the
    /// answer; the caller warns about them.
    pub async fn load_pools_checked(
        &self,
        names: &[String],
    ) -> Result<Vec<Result<WorkerPool, UnreadablePool>>, DbError> {
        let what = "reading worker_pools";
        let mut c = self.acquire(what).await?;
        let rows = c.conn().load_pools_checked(names).await;
        rows.map_err(DbError::query(what))
    }

    /// [`Database::load_pools_checked`], failing as a whole on an unreadable row (tools and
    /// tests, where a partial answer is no use).
    pub async fn load_pools(&self, names: &[String]) -> Result<Vec<WorkerPool>, DbError> {
        collect_pools(self.load_pools_checked(names).await?)
    }

    /// Every pool, for `audit` without `--queue`, the simulator and benchmarks.
    pub async fn load_all_pools(&self) -> Result<Vec<WorkerPool>, DbError> {
        collect_pools(self.load_all_pools_checked().await?)
    }

    /// Every pool, each row read on its own (the audit goes on past a row it cannot read).
    pub async fn load_all_pools_checked(
        &self,
    ) -> Result<Vec<Result<WorkerPool, UnreadablePool>>, DbError> {
        let what = "reading worker_pools";
        let mut c = self.acquire(what).await?;
        let rows = c.conn().load_all_pools_checked().await;
        rows.map_err(DbError::query(what))
    }

    /// QUEUED and RUNNING counts for all the given pools in ONE grouped query (it reads only
    /// those rows, which the optional partial index of `db ensure-index` serves). A pool with
    /// no active build is present with zero counts.
    pub async fn count_builds(&self, pool_ids: &[i64]) -> Result<HashMap<i64, Counts>, DbError> {
        let what = "counting builds";
        let mut c = self.acquire(what).await?;
        let counts = c.conn().count_builds(pool_ids).await;
        counts.map_err(DbError::query(what))
    }

    /// The pool's RUNNING builds with their workers' hostnames (`builds.worker_id ->
    /// workers.hostname`), a build with no worker recorded yet included.
    pub async fn busy_workers(&self, pool_id: i64) -> Result<Vec<BusyWorker>, DbError> {
        let what = "reading busy workers";
        let mut c = self.acquire(what).await?;
        let busy = c.conn().busy_workers(pool_id).await;
        busy.map_err(DbError::query(what))
    }

    /// Records successful attempts `(pool id, when its executor call succeeded)`, in one
    /// statement for the whole batch: status 0 and that time, which restarts each pool's
    /// timer from the moment its call ended (a `terraform apply` that outlasts
    /// `reevaluate_minutes` must not leave its pool due again at once).
    ///
    /// One statement shape per engine whatever the batch size (arrays on PostgreSQL, a JSON
    /// document on SQLite), so a long-running loop prepares it once per connection.
    pub async fn record_successes(&self, done: &[(i64, DateTime<Utc>)]) -> Result<(), DbError> {
        if done.is_empty() {
            return Ok(());
        }
        let what = "writing autoscaling_status";
        let mut c = self.acquire(what).await?;
        let written = c.conn().record_successes(done).await;
        written.map_err(DbError::query(what))
    }

    /// Records failed attempts `(pool id, status)`: the status only, one statement for the
    /// batch; `last_autoscaled` is left alone so each pool stays due and is retried.
    pub async fn record_failures(&self, failures: &[(i64, i32)]) -> Result<(), DbError> {
        if failures.is_empty() {
            return Ok(());
        }
        let what = "writing autoscaling_status";
        let mut c = self.acquire(what).await?;
        let written = c.conn().record_failures(failures).await;
        written.map_err(DbError::query(what))
    }

    /// Runs a multi-statement SQL script as is (schema creation, test fixtures).
    pub async fn run_script(&self, sql: &str) -> Result<(), DbError> {
        on_pool!(self, p => sqlx::raw_sql(sql).execute(p).await.map(|_| ()).map_err(DbError::query("running SQL script")))
    }

    /// Names of Vespene's tables that already exist here (of the three the autoscaler uses).
    pub async fn existing_tables(&self) -> Result<Vec<String>, DbError> {
        let sql = match self {
            Database::Postgres(_) => "SELECT table_name::text FROM information_schema.tables \
                WHERE table_schema = current_schema() AND table_name IN ('worker_pools', 'workers', 'builds') ORDER BY 1",
            Database::Sqlite(_) => "SELECT name FROM sqlite_master WHERE type = 'table' \
                AND name IN ('worker_pools', 'workers', 'builds') ORDER BY 1",
        };
        let rows: Vec<(String,)> = on_pool!(self, p => sqlx::query_as::<_, (String,)>(sql)
            .fetch_all(p).await.map_err(DbError::query("listing tables"))?);
        Ok(rows.into_iter().map(|r| r.0).collect())
    }

    /// Connects to `url`, creating a SQLite file that does not exist, and creates the Vespene
    /// tables in it ([`Database::init_schema`]): `db init` and the demo start the same way, and
    /// neither touches a database that has the tables already.
    pub async fn create_schema(url: &str) -> Result<Database, DbError> {
        let db = Database::connect(
            url,
            &ConnectOptions {
                create_sqlite: true,
                ..ConnectOptions::default()
            },
        )?;
        db.init_schema().await?;
        Ok(db)
    }

    /// Creates the Vespene tables the autoscaler uses in an empty database (`db init`);
    /// refuses, changing nothing, when any of them exists.
    pub async fn init_schema(&self) -> Result<(), DbError> {
        let existing = self.existing_tables().await?;
        if !existing.is_empty() {
            return Err(DbError::AlreadyInitialized(existing.join(", ")));
        }
        let script = match self {
            Database::Postgres(_) => include_str!("schema_postgres.sql"),
            Database::Sqlite(_) => include_str!("schema_sqlite.sql"),
        };
        // One transaction: either every table exists afterwards or none does.
        on_pool!(self, p => {
            let mut tx = p.begin().await.map_err(DbError::query("starting db init"))?;
            sqlx::raw_sql(script).execute(&mut *tx).await.map_err(DbError::query("creating tables"))?;
            tx.commit().await.map_err(DbError::query("committing db init"))?;
        });
        Ok(())
    }

    /// Creates, if missing, the one optional index the autoscaler benefits from (see
    /// [`ACTIVE_BUILDS_INDEX`]); never called implicitly. Returns whether it was created.
    pub async fn ensure_index(&self) -> Result<bool, DbError> {
        let exists_sql = match self {
            Database::Postgres(_) => "SELECT COUNT(*) FROM pg_indexes WHERE schemaname = current_schema() AND indexname = $1",
            Database::Sqlite(_) => "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name = $1",
        };
        let (n,): (i64,) = on_pool!(self, p => sqlx::query_as::<_, (i64,)>(exists_sql).bind(ACTIVE_BUILDS_INDEX_NAME)
            .fetch_one(p).await.map_err(DbError::query("looking for the index"))?);
        if n > 0 {
            return Ok(false);
        }
        self.run_script(ACTIVE_BUILDS_INDEX).await?;
        Ok(true)
    }

    /// Closes every connection (tests drop their databases afterwards).
    pub async fn close(&self) {
        on_pool!(self, p => p.close().await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_url_names_the_problem_without_the_password() {
        let err = Database::connect(
            "mysql://root:hunter2@localhost/x",
            &ConnectOptions::default(),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("expected a postgres://"), "{msg}");
        assert!(!msg.contains("hunter2"), "{msg}");
    }
}
