//! The Vespene database: PostgreSQL in production, SQLite as the embedded default.
//!
//! Every query is written once, in SQL both engines accept, and bound with `$N` placeholders
//! (SQLite numbers `$N` parameters in order of appearance, PostgreSQL by N; the queries use
//! them in order). The autoscaler writes only `autoscaling_status` and `last_autoscaled`.

mod lock;
mod redact;
mod rows;
mod timestamp;

pub use lock::{PoolLocks, LOCK_NAMESPACE};
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
    InvalidUrl { url: String, reason: String },
    /// A query failed.
    #[error("database: {what}: {reason}")]
    Query { what: &'static str, reason: String },
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
    Postgres(PgPool),
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

/// Reads one column; `f64` columns also accept the text spellings `NaN`, `inf`, `-inf` that a
/// loosely typed engine (SQLite) may hold, so validation can name the real problem.
macro_rules! col {
    ($row:expr, $name:literal) => {
        $row.try_get($name).map_err(|e| ($name, e.to_string()))?
    };
    ($row:expr, $name:literal, ts) => {
        $row.try_get::<Option<Ts>, _>($name)
            .map_err(|e| ($name, e.to_string()))?
            .map(|t| t.0)
    };
    ($row:expr, $name:literal, f64) => {
        match $row.try_get::<f64, _>($name) {
            Ok(v) => v,
            Err(e) => match $row
                .try_get::<String, _>($name)
                .ok()
                .and_then(|t| t.trim().parse::<f64>().ok())
            {
                Some(v) => v,
                None => return Err(($name, e.to_string())),
            },
        }
    };
}

/// Generates the row decoder for one engine's row type.
macro_rules! pool_decoder {
    ($fn:ident, $row:ty) => {
        fn $fn(row: &$row) -> Result<WorkerPool, UnreadablePool> {
            use sqlx::Row;
            let inner = || -> Result<WorkerPool, (&'static str, String)> {
                Ok(WorkerPool {
                    id: i64::from({
                        let v: i32 = col!(row, "id");
                        v
                    }),
                    name: col!(row, "name"),
                    variables: col!(row, "variables"),
                    isolation_method: col!(row, "isolation_method"),
                    sudo_user: col!(row, "sudo_user"),
                    permissions_hex: col!(row, "permissions_hex"),
                    sleep_seconds: col!(row, "sleep_seconds"),
                    auto_abort_minutes: col!(row, "auto_abort_minutes"),
                    build_latest: col!(row, "build_latest"),
                    build_object_shelf_life: col!(row, "build_object_shelf_life"),
                    build_root_shelf_life: col!(row, "build_root_shelf_life"),
                    created_by_id: col!(row, "created_by_id"),
                    autoscaling_enabled: col!(row, "autoscaling_enabled"),
                    autoscaling_status: col!(row, "autoscaling_status"),
                    excess: col!(row, "excess"),
                    executor: col!(row, "executor"),
                    executor_command: col!(row, "executor_command"),
                    last_autoscaled: col!(row, "last_autoscaled", ts),
                    maximum: col!(row, "maximum"),
                    minimum: col!(row, "minimum"),
                    multiplier: col!(row, "multiplier", f64),
                    planner: col!(row, "planner"),
                    queued_weight: col!(row, "queued_weight", f64),
                    reevaluate_minutes: col!(row, "reevaluate_minutes"),
                    running_weight: col!(row, "running_weight", f64),
                })
            };
            inner().map_err(|(column, reason)| UnreadablePool {
                id: row.try_get::<i32, _>("id").ok().map(i64::from),
                name: row.try_get::<String, _>("name").ok(),
                executor: row.try_get::<Option<String>, _>("executor").ok().flatten(),
                column,
                reason,
            })
        }
    };
}

pool_decoder!(decode_pg_pool, sqlx::postgres::PgRow);
pool_decoder!(decode_sqlite_pool, sqlx::sqlite::SqliteRow);

const POOL_COLUMNS: &str = "id, name, variables, isolation_method, sudo_user, permissions_hex, \
    sleep_seconds, auto_abort_minutes, build_latest, build_object_shelf_life, build_root_shelf_life, \
    created_by_id, autoscaling_enabled, autoscaling_status, excess, executor, executor_command, \
    last_autoscaled, maximum, minimum, multiplier, planner, queued_weight, reevaluate_minutes, running_weight";

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

/// Most values bound to one statement: SQLite refuses more than 32,766 variables and
/// PostgreSQL more than 65,535, so long `--queue` lists are read and written in chunks.
pub(crate) const MAX_BINDS: usize = 5_000;

/// `$1, $2, …, $n` for an IN list.
fn placeholders(n: usize) -> String {
    (1..=n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The one grouped query that counts every named pool's builds per cycle. It reads only the
/// QUEUED and RUNNING rows (the optional partial index of `db ensure-index` serves exactly
/// this predicate), never `output` or other wide columns.
fn count_sql(n: usize) -> String {
    format!(
        "SELECT worker_pool_id, \
           COUNT(CASE WHEN status = 'QUEUED' THEN 1 END) AS queued, \
           COUNT(DISTINCT CASE WHEN status = 'QUEUED' THEN project_id END) \
             + COUNT(CASE WHEN status = 'QUEUED' AND project_id IS NULL THEN 1 END) AS queued_projects, \
           COUNT(CASE WHEN status = 'RUNNING' THEN 1 END) AS running \
         FROM builds \
         WHERE status IN ('QUEUED', 'RUNNING') AND worker_pool_id IN ({}) \
         GROUP BY worker_pool_id",
        placeholders(n)
    )
}

const BUSY_SQL: &str =
    "SELECT w.hostname AS hostname, b.id AS build_id, b.start_time AS start_time \
    FROM builds b LEFT JOIN workers w ON w.id = b.worker_id \
    WHERE b.worker_pool_id = $1 AND b.status = 'RUNNING' \
    ORDER BY b.id";

/// The status writes: one shape each, whatever the batch (see [`Database::record_successes`]).
const RECORD_SUCCESSES_PG: &str = "UPDATE worker_pools AS w \
    SET autoscaling_status = 0, last_autoscaled = v.at \
    FROM UNNEST($1::int4[], $2::timestamptz[]) AS v(id, at) WHERE w.id = v.id";
const RECORD_FAILURES_PG: &str = "UPDATE worker_pools AS w SET autoscaling_status = v.status \
    FROM UNNEST($1::int4[], $2::int4[]) AS v(id, status) WHERE w.id = v.id";
const RECORD_SUCCESSES_SQLITE: &str = "UPDATE worker_pools \
    SET autoscaling_status = 0, last_autoscaled = v.at \
    FROM (SELECT json_extract(value, '$.id') AS id, json_extract(value, '$.at') AS at \
          FROM json_each($1)) AS v WHERE worker_pools.id = v.id";
const RECORD_FAILURES_SQLITE: &str = "UPDATE worker_pools SET autoscaling_status = v.status \
    FROM (SELECT json_extract(value, '$.id') AS id, json_extract(value, '$.status') AS status \
          FROM json_each($1)) AS v WHERE worker_pools.id = v.id";

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
            let pool = PgPoolOptions::new()
                .max_connections(opts.max_connections)
                .acquire_timeout(opts.acquire_timeout)
                .connect_lazy_with(o.application_name("vespene-autoscaler"));
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

    /// The named pools (every column), in one query, each row read on its own: a row that
    /// cannot be read fails only that pool. Names that match no row are absent from the
    /// answer; the caller warns about them.
    pub async fn load_pools_checked(
        &self,
        names: &[String],
    ) -> Result<Vec<Result<WorkerPool, UnreadablePool>>, DbError> {
        let mut out = Vec::with_capacity(names.len());
        for chunk in names.chunks(MAX_BINDS) {
            let sql = format!(
                "SELECT {POOL_COLUMNS} FROM worker_pools WHERE name IN ({}) ORDER BY id",
                placeholders(chunk.len())
            );
            out.extend(self.fetch_pools(&sql, chunk).await?);
        }
        if names.len() > MAX_BINDS {
            out.sort_by_key(|r| match r {
                Ok(p) => Some(p.id),
                Err(e) => e.id,
            });
        }
        Ok(out)
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
        let sql = format!("SELECT {POOL_COLUMNS} FROM worker_pools ORDER BY id");
        self.fetch_pools(&sql, &[]).await
    }

    async fn fetch_pools(
        &self,
        sql: &str,
        binds: &[String],
    ) -> Result<Vec<Result<WorkerPool, UnreadablePool>>, DbError> {
        // The same query on either engine; only the row decoder differs.
        macro_rules! fetch {
            ($pool:expr, $decode:ident) => {{
                let mut q = sqlx::query(sql);
                for b in binds {
                    q = q.bind(b);
                }
                let rows = q
                    .fetch_all($pool)
                    .await
                    .map_err(DbError::query("reading worker_pools"))?;
                rows.iter().map($decode).collect()
            }};
        }
        Ok(match self {
            Database::Postgres(p) => fetch!(p, decode_pg_pool),
            Database::Sqlite(p) => fetch!(p, decode_sqlite_pool),
        })
    }

    /// QUEUED and RUNNING counts for all the given pools in ONE grouped query. A pool with no
    /// active build is present with zero counts.
    pub async fn count_builds(&self, pool_ids: &[i64]) -> Result<HashMap<i64, Counts>, DbError> {
        let mut out: HashMap<i64, Counts> =
            pool_ids.iter().map(|id| (*id, Counts::default())).collect();
        let mut rows: Vec<(i32, i64, i64, i64)> = Vec::new();
        for chunk in pool_ids.chunks(MAX_BINDS) {
            let sql = count_sql(chunk.len());
            rows.extend(on_pool!(self, p => {
                let mut q = sqlx::query_as::<_, (i32, i64, i64, i64)>(&sql);
                for id in chunk {
                    q = q.bind(*id as i32);
                }
                q.fetch_all(p).await.map_err(DbError::query("counting builds"))?
            }));
        }
        for (id, queued, queued_projects, running) in rows {
            out.insert(
                i64::from(id),
                Counts {
                    queued: queued.max(0) as u64,
                    queued_projects: queued_projects.max(0) as u64,
                    running: running.max(0) as u64,
                },
            );
        }
        Ok(out)
    }

    /// The pool's RUNNING builds with their workers' hostnames (`builds.worker_id ->
    /// workers.hostname`), a build with no worker recorded yet included.
    pub async fn busy_workers(&self, pool_id: i64) -> Result<Vec<BusyWorker>, DbError> {
        use sqlx::Row;
        Ok(on_pool!(self, p => sqlx::query(BUSY_SQL)
            .bind(pool_id as i32)
            .fetch_all(p)
            .await
            .map_err(DbError::query("reading busy workers"))?
            .into_iter()
            .map(|row| BusyWorker {
                // No worker yet, or one that reported no name: busy somewhere in the pool.
                hostname: row
                    .try_get::<Option<String>, _>("hostname")
                    .ok()
                    .flatten()
                    .filter(|h| !h.trim().is_empty()),
                build_id: row.try_get::<i32, _>("build_id").map(i64::from).unwrap_or(0),
                // An unreadable start ('infinity', …) is no evidence of anything: unknown,
                // which the chooser treats as possibly busy on any instance it names.
                started: row.try_get::<Option<Ts>, _>("start_time").ok().flatten().map(|t| t.0),
            })
            .collect()))
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
        let failed = DbError::query("writing autoscaling_status");
        match self {
            Database::Postgres(p) => {
                let ids: Vec<i32> = done.iter().map(|(id, _)| *id as i32).collect();
                let ats: Vec<DateTime<Utc>> = done.iter().map(|(_, at)| *at).collect();
                sqlx::query(RECORD_SUCCESSES_PG)
                    .bind(ids)
                    .bind(ats)
                    .execute(p)
                    .await
                    .map(|_| ())
                    .map_err(failed)
            }
            Database::Sqlite(p) => {
                let doc: Vec<serde_json::Value> = done
                    .iter()
                    .map(|(id, at)| {
                        // The text sqlx itself writes for a DateTime<Utc> on SQLite.
                        let at = at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false);
                        serde_json::json!({ "id": id, "at": at })
                    })
                    .collect();
                sqlx::query(RECORD_SUCCESSES_SQLITE)
                    .bind(serde_json::Value::Array(doc).to_string())
                    .execute(p)
                    .await
                    .map(|_| ())
                    .map_err(failed)
            }
        }
    }

    /// Records failed attempts `(pool id, status)`: the status only, one statement for the
    /// batch; `last_autoscaled` is left alone so each pool stays due and is retried.
    pub async fn record_failures(&self, failures: &[(i64, i32)]) -> Result<(), DbError> {
        if failures.is_empty() {
            return Ok(());
        }
        let failed = DbError::query("writing autoscaling_status");
        match self {
            Database::Postgres(p) => {
                let ids: Vec<i32> = failures.iter().map(|(id, _)| *id as i32).collect();
                let statuses: Vec<i32> = failures.iter().map(|(_, s)| *s).collect();
                sqlx::query(RECORD_FAILURES_PG)
                    .bind(ids)
                    .bind(statuses)
                    .execute(p)
                    .await
                    .map(|_| ())
                    .map_err(failed)
            }
            Database::Sqlite(p) => {
                let doc: Vec<serde_json::Value> = failures
                    .iter()
                    .map(|(id, status)| serde_json::json!({ "id": id, "status": status }))
                    .collect();
                sqlx::query(RECORD_FAILURES_SQLITE)
                    .bind(serde_json::Value::Array(doc).to_string())
                    .execute(p)
                    .await
                    .map(|_| ())
                    .map_err(failed)
            }
        }
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
