//! Read-only row listings for the tools (`audit`'s workers, `simulate --export-trace`'s builds),
//! each row decoded on its own: a value the program cannot hold fails that row, named by its id
//! and column, and never the listing or the process.

use super::{Database, DbError, Ts};
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use sqlx::Row;

/// A worker row, for the audit's "never checked in" and "stale worker" findings.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerRow {
    /// `workers.id`, which builds point at.
    pub id: i32,
    /// Vespene's own id of the worker process.
    pub worker_uid: String,
    /// The name the worker reported: matched against the instances' hostnames.
    pub hostname: Option<String>,
    /// When it last polled; `None`: never.
    pub last_checkin: Option<DateTime<Utc>>,
}

/// A row of `workers` or `builds` that could not be read; the listing goes on without it.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{table} row {}: {column}: cannot be read: {reason}", id.map(|i| i.to_string()).unwrap_or_else(|| "?".into()))]
pub struct UnreadableRow {
    /// `workers` or `builds`.
    pub table: &'static str,
    /// The row's id, when that much could be read.
    pub id: Option<i64>,
    /// The column at fault.
    pub column: &'static str,
    /// The driver's reason.
    pub reason: String,
}

/// A build of `trace_builds`: `(id, project_id, queued_time, start_time, end_time)`.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceRow {
    /// `builds.id`.
    pub id: i64,
    /// `project_id`: `build_latest` pools count queued builds once per project.
    pub project: Option<i64>,
    /// `queued_time`: the arrival the trace replays.
    pub queued: DateTime<Utc>,
    /// `start_time`; `None`: never started.
    pub start: Option<DateTime<Utc>>,
    /// `end_time`; `None`: never ended (such builds are counted, not exported).
    pub end: Option<DateTime<Utc>>,
}

/// Reads one column of a row, or names it.
fn get<'r, R, T>(row: &'r R, column: &'static str) -> Result<T, (&'static str, String)>
where
    R: Row,
    usize: sqlx::ColumnIndex<R>,
    &'static str: sqlx::ColumnIndex<R>,
    T: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    row.try_get(column).map_err(|e| (column, e.to_string()))
}

/// The row of `table` a failed [`get`] was reading, named by its id when that much decodes.
fn unreadable<R>(
    table: &'static str,
    row: &R,
    (column, reason): (&'static str, String),
) -> UnreadableRow
where
    R: Row,
    &'static str: sqlx::ColumnIndex<R>,
    for<'r> i32: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    UnreadableRow {
        table,
        id: row.try_get::<i32, _>("id").ok().map(i64::from),
        column,
        reason,
    }
}

fn worker<R>(row: &R) -> Result<WorkerRow, UnreadableRow>
where
    R: Row,
    usize: sqlx::ColumnIndex<R>,
    &'static str: sqlx::ColumnIndex<R>,
    for<'r> i32: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<Ts>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let inner = || -> Result<WorkerRow, (&'static str, String)> {
        Ok(WorkerRow {
            id: get(row, "id")?,
            worker_uid: get(row, "worker_uid")?,
            hostname: get(row, "hostname")?,
            last_checkin: get::<R, Option<Ts>>(row, "last_checkin")?.map(|t| t.0),
        })
    };
    inner().map_err(|e| unreadable("workers", row, e))
}

fn trace_row<R>(row: &R) -> Result<Option<TraceRow>, UnreadableRow>
where
    R: Row,
    usize: sqlx::ColumnIndex<R>,
    &'static str: sqlx::ColumnIndex<R>,
    for<'r> i32: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<i32>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<Ts>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let inner = || -> Result<Option<TraceRow>, (&'static str, String)> {
        let Some(queued) = get::<R, Option<Ts>>(row, "queued_time")? else {
            return Ok(None);
        };
        Ok(Some(TraceRow {
            id: i64::from(get::<R, i32>(row, "id")?),
            project: get::<R, Option<i32>>(row, "project_id")?.map(i64::from),
            queued: queued.0,
            start: get::<R, Option<Ts>>(row, "start_time")?.map(|t| t.0),
            end: get::<R, Option<Ts>>(row, "end_time")?.map(|t| t.0),
        }))
    };
    inner().map_err(|e| unreadable("builds", row, e))
}

impl Database {
    /// Every worker row, for the audit; a row that cannot be read is returned as such.
    pub async fn workers(&self) -> Result<Vec<Result<WorkerRow, UnreadableRow>>, DbError> {
        let sql = "SELECT id, worker_uid, hostname, last_checkin FROM workers ORDER BY id";
        let what = DbError::query("reading workers");
        Ok(match self {
            Database::Postgres(p) => sqlx::query(sql)
                .fetch_all(p)
                .await
                .map_err(what)?
                .iter()
                .map(worker)
                .collect(),
            Database::Sqlite(p) => sqlx::query(sql)
                .fetch_all(p)
                .await
                .map_err(what)?
                .iter()
                .map(worker)
                .collect(),
        })
    }

    /// Builds of a pool queued in `[since, until)`, oldest id first: what `autoscaler simulate
    /// --export-trace` turns into a trace; rows that cannot be read come back as such,
    /// whatever their time. Read-only, five narrow columns (never `output`). The time range is
    /// applied here rather than in SQL because Vespene's PostgreSQL and an SQLite copy store
    /// timestamps in forms that one SQL comparison cannot serve both; the rows are streamed,
    /// so a long history costs time, not memory.
    pub async fn trace_builds(
        &self,
        pool_id: i64,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<Result<TraceRow, UnreadableRow>>, DbError> {
        const SQL: &str = "SELECT id, project_id, queued_time, start_time, end_time FROM builds \
            WHERE worker_pool_id = $1 AND queued_time IS NOT NULL ORDER BY id";
        let mut out = Vec::new();
        let mut keep = |r: Result<Option<TraceRow>, UnreadableRow>| match r {
            Ok(Some(t)) if t.queued >= since && t.queued < until => out.push(Ok(t)),
            Ok(_) => {}
            Err(e) => out.push(Err(e)),
        };
        let what = || DbError::query("reading builds for a trace");
        match self {
            Database::Postgres(p) => {
                let mut rows = sqlx::query(SQL).bind(pool_id as i32).fetch(p);
                while let Some(row) = rows.try_next().await.map_err(what())? {
                    keep(trace_row(&row));
                }
            }
            Database::Sqlite(p) => {
                let mut rows = sqlx::query(SQL).bind(pool_id as i32).fetch(p);
                while let Some(row) = rows.try_next().await.map_err(what())? {
                    keep(trace_row(&row));
                }
            }
        }
        Ok(out)
    }
}
