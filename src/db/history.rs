//! A pool's arrivals by hour of the week, for the `warm` planner's standby target: one grouped
//! query over `builds.queued_time` (no schema change, no new index), cached per pool.

use super::queries::Conn;
use super::{Database, DbError, PoolLocks};
use crate::planner::{ArrivalHistory, HOURS_PER_WEEK};
use autoscaler_executor::WorkerPool;
use chrono::{DateTime, Duration, Utc};
use sqlx::Row;
use std::collections::HashMap;

/// How much history the standby target learns from: four weeks, so one unusual week does not
/// decide an hour alone, and a change of habits is forgotten within a month.
pub const HISTORY_WEEKS: i64 = 4;

/// How long a pool's history is reused before it is read again: the buckets are hours, so a
/// fresher answer would change nothing but the database's load.
pub const HISTORY_MAX_AGE: Duration = Duration::hours(1);

/// The statement for one engine: per hour of the week (0 = Monday 00:00 UTC), the most
/// arrivals within one fixed window of `window` seconds. The window and the demand key are
/// integers and column names chosen here, never text from outside, so they are written into
/// the statement; the pool and the time range are bound.
///
/// The innermost select turns each build into (epoch seconds, demand key): with
/// `build_latest` the project (a build without one is its own, `-id`), otherwise the build.
/// The middle one counts distinct keys per window, the outer keeps each hour's largest window.
fn sql(postgres: bool, window: u64, build_latest: bool) -> String {
    let key = if build_latest {
        "COALESCE(project_id, -id)"
    } else {
        "id"
    };
    let (epoch, range) = if postgres {
        (
            "CAST(FLOOR(EXTRACT(EPOCH FROM queued_time)) AS BIGINT)",
            // Finite bounds keep PostgreSQL's 'infinity' rows out before EXTRACT sees them.
            "AND queued_time >= $2 AND queued_time < $3",
        )
    } else {
        // strftime gives NULL for text that is no time (a hand-edited row): left out.
        ("CAST(strftime('%s', queued_time) AS INTEGER)", "")
    };
    let outer_range = if postgres {
        ""
    } else {
        "AND b.e >= $2 AND b.e < $3"
    };
    format!(
        "SELECT ((w.win * {window}) / 3600 + 72) % 168 AS how, MAX(w.n) AS peak FROM (\
           SELECT b.e / {window} AS win, COUNT(DISTINCT b.k) AS n FROM (\
             SELECT {epoch} AS e, {key} AS k FROM builds \
             WHERE worker_pool_id = $1 AND queued_time IS NOT NULL {range}\
           ) b WHERE b.e IS NOT NULL {outer_range} GROUP BY b.e / {window}\
         ) w GROUP BY ((w.win * {window}) / 3600 + 72) % 168"
    )
}

/// One `(hour, peak)` row into the history; values out of range (which no well-formed row
/// gives) are clamped, never trusted to index or to panic.
fn keep(h: &mut ArrivalHistory, how: i64, peak: i64) {
    if (0..HOURS_PER_WEEK as i64).contains(&how) {
        h.record(how as usize, u32::try_from(peak.max(0)).unwrap_or(u32::MAX));
    }
}

impl Database {
    /// The pool's arrivals queued in `[since, until)` by hour of the week: per hour, the most
    /// builds (distinct projects with `build_latest`) queued within one fixed `window_seconds`
    /// window (see [`ArrivalHistory`]). ONE grouped query; it reads `builds` rows of this pool
    /// only, three narrow columns, and returns at most 168 rows.
    pub async fn arrival_history(
        &self,
        pool: &WorkerPool,
        window_seconds: u64,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<ArrivalHistory, DbError> {
        let what = "reading the arrival history";
        let mut c = self.acquire(what).await?;
        let h = c
            .conn()
            .arrival_history(pool, window_seconds, since, until)
            .await;
        h.map_err(DbError::query(what))
    }
}

impl Conn<'_> {
    /// [`Database::arrival_history`] on a given connection (the cycle's, which holds the locks).
    pub(super) async fn arrival_history(
        &mut self,
        pool: &WorkerPool,
        window_seconds: u64,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<ArrivalHistory, sqlx::Error> {
        // A window longer than a week says nothing per hour; 1 s at least.
        let window = window_seconds.clamp(1, 7 * 86_400);
        let mut h = ArrivalHistory::new(window);
        let rows = match self {
            Conn::Postgres(c) => sqlx::query(&sql(true, window, pool.build_latest))
                .bind(pool.id as i32)
                .bind(since)
                .bind(until)
                .fetch_all(&mut **c)
                .await?
                .into_iter()
                .map(|r| Ok((r.try_get("how")?, r.try_get("peak")?)))
                .collect::<Result<Vec<(i64, i64)>, sqlx::Error>>()?,
            Conn::Sqlite(c) => sqlx::query(&sql(false, window, pool.build_latest))
                .bind(pool.id as i32)
                .bind(since.timestamp())
                .bind(until.timestamp())
                .fetch_all(&mut **c)
                .await?
                .into_iter()
                .map(|r| Ok((r.try_get("how")?, r.try_get("peak")?)))
                .collect::<Result<Vec<(i64, i64)>, sqlx::Error>>()?,
        };
        for (how, peak) in rows {
            keep(&mut h, how, peak);
        }
        Ok(h)
    }
}

/// Per pool, the last history read and when: [`HistoryCache::get`] reads a pool's history at
/// most once per [`HISTORY_MAX_AGE`] (or when the window or `build_latest` changed). Holds one
/// entry per pool asked about, each of 168 buckets.
#[derive(Debug, Default)]
pub struct HistoryCache {
    entries: HashMap<i64, Entry>,
}

#[derive(Debug)]
struct Entry {
    read_at: DateTime<Utc>,
    window: u64,
    build_latest: bool,
    history: ArrivalHistory,
}

impl HistoryCache {
    /// An empty cache.
    pub fn new() -> Self {
        HistoryCache::default()
    }

    /// The pool's history over the [`HISTORY_WEEKS`] before `now`, read from `db` when the
    /// cached one is older than [`HISTORY_MAX_AGE`] or was counted differently. A failed read
    /// returns the error and keeps nothing new: the caller plans without a history rather
    /// than with a half-read one.
    pub async fn get(
        &mut self,
        db: &Database,
        pool: &WorkerPool,
        window_seconds: u64,
        now: DateTime<Utc>,
    ) -> Result<&ArrivalHistory, DbError> {
        self.get_with(pool, window_seconds, now, |since| {
            db.arrival_history(pool, window_seconds, since, now)
        })
        .await
    }

    /// [`HistoryCache::get`] on the cycle's connection (the one holding the pool locks): what
    /// the engine calls, since a process has only that one connection.
    pub async fn get_locked(
        &mut self,
        locks: &PoolLocks,
        pool: &WorkerPool,
        window_seconds: u64,
        now: DateTime<Utc>,
    ) -> Result<&ArrivalHistory, DbError> {
        self.get_with(pool, window_seconds, now, |since| {
            locks.arrival_history(pool, window_seconds, since, now)
        })
        .await
    }

    /// The cache rule of both: `read(since)` only when the entry is stale.
    async fn get_with<F, Fut>(
        &mut self,
        pool: &WorkerPool,
        window_seconds: u64,
        now: DateTime<Utc>,
        read: F,
    ) -> Result<&ArrivalHistory, DbError>
    where
        F: FnOnce(DateTime<Utc>) -> Fut,
        Fut: std::future::Future<Output = Result<ArrivalHistory, DbError>>,
    {
        if !self.is_fresh(pool, window_seconds, now) {
            let history = read(now - Duration::weeks(HISTORY_WEEKS)).await?;
            self.insert(pool, window_seconds, now, history);
        }
        Ok(&self.entries[&pool.id].history)
    }

    fn is_fresh(&self, pool: &WorkerPool, window_seconds: u64, now: DateTime<Utc>) -> bool {
        self.entries.get(&pool.id).is_some_and(|e| {
            e.window == window_seconds
                && e.build_latest == pool.build_latest
                && e.read_at <= now
                && now - e.read_at < HISTORY_MAX_AGE
        })
    }

    fn insert(
        &mut self,
        pool: &WorkerPool,
        window_seconds: u64,
        now: DateTime<Utc>,
        history: ArrivalHistory,
    ) {
        self.entries.insert(
            pool.id,
            Entry {
                read_at: now,
                window: window_seconds,
                build_latest: pool.build_latest,
                history,
            },
        );
    }

    /// Forgets pools no longer configured, so the cache never outgrows the pool list.
    pub fn retain(&mut self, pool_ids: &[i64]) {
        let keep: std::collections::HashSet<i64> = pool_ids.iter().copied().collect();
        self.entries.retain(|id, _| keep.contains(id));
    }
}
