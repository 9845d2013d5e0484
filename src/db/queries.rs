//! Every statement of a cycle, written once and run on one connection of either engine: the
//! pool methods of [`Database`](super::Database) run them on a connection of the pool, and
//! [`PoolLocks`](super::PoolLocks) on the connection that holds the cycle's locks.

use super::{Ts, UnreadablePool};
use crate::planner::Counts;
use autoscaler_executor::{BusyWorker, WorkerPool};
use chrono::{DateTime, Utc};
use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, Postgres, Sqlite, SqliteConnection};
use std::collections::HashMap;

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

/// Most values bound to one statement: SQLite refuses more than 32,766 variables and
/// PostgreSQL more than 65,535, so long `--queue` lists are read and written in chunks.
pub(super) const MAX_BINDS: usize = 5_000;

/// `$1, $2, …, $n` for an IN list.
pub(super) fn placeholders(n: usize) -> String {
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

/// A connection taken from the pool, of either engine.
pub(super) enum Acquired {
    Postgres(PoolConnection<Postgres>),
    Sqlite(PoolConnection<Sqlite>),
}

impl Acquired {
    pub(super) fn conn(&mut self) -> Conn<'_> {
        match self {
            Acquired::Postgres(c) => Conn::Postgres(c),
            Acquired::Sqlite(c) => Conn::Sqlite(c),
        }
    }
}

/// One connection of either engine, borrowed for the statements below.
pub(super) enum Conn<'c> {
    Postgres(&'c mut PgConnection),
    Sqlite(&'c mut SqliteConnection),
}

/// Runs the same statement-building code on whichever engine the connection is.
macro_rules! on_conn {
    ($conn:expr, $c:ident => $body:expr) => {
        match $conn {
            Conn::Postgres($c) => $body,
            Conn::Sqlite($c) => $body,
        }
    };
}

impl Conn<'_> {
    /// Rows of `worker_pools` for `sql` (`binds` in order), each decoded on its own.
    pub(super) async fn fetch_pools(
        &mut self,
        sql: &str,
        binds: &[String],
    ) -> Result<Vec<Result<WorkerPool, UnreadablePool>>, sqlx::Error> {
        // The same query on either engine; only the row decoder differs.
        macro_rules! fetch {
            ($c:expr, $decode:ident) => {{
                let mut q = sqlx::query(sql);
                for b in binds {
                    q = q.bind(b);
                }
                q.fetch_all(&mut **$c).await?.iter().map($decode).collect()
            }};
        }
        Ok(match self {
            Conn::Postgres(c) => fetch!(c, decode_pg_pool),
            Conn::Sqlite(c) => fetch!(c, decode_sqlite_pool),
        })
    }

    /// The named pools, every column, in id order; see [`super::Database::load_pools_checked`].
    pub(super) async fn load_pools_checked(
        &mut self,
        names: &[String],
    ) -> Result<Vec<Result<WorkerPool, UnreadablePool>>, sqlx::Error> {
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

    /// Every pool, in id order.
    pub(super) async fn load_all_pools_checked(
        &mut self,
    ) -> Result<Vec<Result<WorkerPool, UnreadablePool>>, sqlx::Error> {
        let sql = format!("SELECT {POOL_COLUMNS} FROM worker_pools ORDER BY id");
        self.fetch_pools(&sql, &[]).await
    }

    /// QUEUED and RUNNING counts of the given pools in one grouped query (per chunk).
    pub(super) async fn count_builds(
        &mut self,
        pool_ids: &[i64],
    ) -> Result<HashMap<i64, Counts>, sqlx::Error> {
        let mut out: HashMap<i64, Counts> =
            pool_ids.iter().map(|id| (*id, Counts::default())).collect();
        let mut rows: Vec<(i32, i64, i64, i64)> = Vec::new();
        for chunk in pool_ids.chunks(MAX_BINDS) {
            let sql = count_sql(chunk.len());
            rows.extend(on_conn!(self, c => {
                let mut q = sqlx::query_as::<_, (i32, i64, i64, i64)>(&sql);
                for id in chunk {
                    q = q.bind(*id as i32);
                }
                q.fetch_all(&mut **c).await?
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

    /// The pool's RUNNING builds with their workers' hostnames.
    pub(super) async fn busy_workers(
        &mut self,
        pool_id: i64,
    ) -> Result<Vec<BusyWorker>, sqlx::Error> {
        use sqlx::Row;
        Ok(on_conn!(self, c => sqlx::query(BUSY_SQL)
            .bind(pool_id as i32)
            .fetch_all(&mut **c)
            .await?
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

    /// Status 0 and the time of each pool's success, one statement for the batch.
    pub(super) async fn record_successes(
        &mut self,
        done: &[(i64, DateTime<Utc>)],
    ) -> Result<(), sqlx::Error> {
        if done.is_empty() {
            return Ok(());
        }
        match self {
            Conn::Postgres(c) => {
                let ids: Vec<i32> = done.iter().map(|(id, _)| *id as i32).collect();
                let ats: Vec<DateTime<Utc>> = done.iter().map(|(_, at)| *at).collect();
                sqlx::query(RECORD_SUCCESSES_PG)
                    .bind(ids)
                    .bind(ats)
                    .execute(&mut **c)
                    .await?;
            }
            Conn::Sqlite(c) => {
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
                    .execute(&mut **c)
                    .await?;
            }
        }
        Ok(())
    }

    /// Each pool's failure status, one statement for the batch; `last_autoscaled` untouched.
    pub(super) async fn record_failures(
        &mut self,
        failures: &[(i64, i32)],
    ) -> Result<(), sqlx::Error> {
        if failures.is_empty() {
            return Ok(());
        }
        match self {
            Conn::Postgres(c) => {
                let ids: Vec<i32> = failures.iter().map(|(id, _)| *id as i32).collect();
                let statuses: Vec<i32> = failures.iter().map(|(_, s)| *s).collect();
                sqlx::query(RECORD_FAILURES_PG)
                    .bind(ids)
                    .bind(statuses)
                    .execute(&mut **c)
                    .await?;
            }
            Conn::Sqlite(c) => {
                let doc: Vec<serde_json::Value> = failures
                    .iter()
                    .map(|(id, status)| serde_json::json!({ "id": id, "status": status }))
                    .collect();
                sqlx::query(RECORD_FAILURES_SQLITE)
                    .bind(serde_json::Value::Array(doc).to_string())
                    .execute(&mut **c)
                    .await?;
            }
        }
        Ok(())
    }
}
