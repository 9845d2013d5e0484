//! One actor per pool: several autoscalers may watch the same pools (redundancy, or pool groups
//! that overlap); for each pool, exactly one may evaluate and act on it in a cycle.
//!
//! PostgreSQL: a session-level advisory lock per pool, `pg_try_advisory_lock(NAMESPACE, id)`,
//! held on one connection for the cycle; if the process dies, the server drops the connection
//! and the locks with it. SQLite: an `flock` per pool on a file beside the database, released
//! by the kernel when the process dies.
//!
//! The cycle's reads and writes, and the executors' busy-worker reads, go through the same
//! connection ([`PoolLocks`]): a process needs one connection, and on PostgreSQL every
//! statement that succeeds is also proof that the locks are still held (a session's advisory
//! locks live exactly as long as its connection). Once that connection fails, the locks may be
//! another process's: nothing more is read, written or started in that cycle.

use super::queries::{placeholders, Acquired, Conn, MAX_BINDS};
use super::{Database, DbError, UnreadablePool};
use crate::planner::Counts;
use autoscaler_executor::{BusyWorker, WorkerPool};
use chrono::{DateTime, Utc};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::path::PathBuf;
use std::time::Instant;

/// First key of every advisory lock the autoscaler takes ("VESP"), so its locks never collide
/// with other users of single-key advisory locks on the same database.
pub const LOCK_NAMESPACE: i32 = 0x5645_5350;

/// The pools this process holds for the current cycle, and the one connection the cycle reads
/// and writes through (on PostgreSQL, the one that holds the locks). Call
/// [`PoolLocks::release`] at the end of the cycle; if it is dropped instead (panic,
/// cancellation), the PostgreSQL connection is closed rather than returned to the pool, which
/// releases the locks on the server.
///
/// Statements are serialized on the connection (the executors' busy-worker reads of several
/// pools wait for each other): `benches/cycle.rs` measures what that costs.
pub struct PoolLocks {
    ids: HashSet<i64>,
    conn: tokio::sync::Mutex<Option<Acquired>>,
    /// Held open for their locks (SQLite); closing a file releases its lock.
    _files: Vec<File>,
    /// Why the connection holding the locks was lost, once it was.
    lost: std::sync::Mutex<Option<String>>,
    /// When the latest statement that succeeded on the connection began: the locks were
    /// certainly held at some moment after it.
    proven: std::sync::Mutex<Option<Instant>>,
}

/// The connection lock of one statement. If its future is dropped halfway (a cancelled
/// executor call), the connection may be mid-protocol: it is not trusted again.
struct Statement<'a> {
    locks: &'a PoolLocks,
    conn: tokio::sync::MutexGuard<'a, Option<Acquired>>,
    what: &'static str,
    started: Instant,
    done: bool,
}

impl Statement<'_> {
    fn conn(&mut self) -> Conn<'_> {
        self.conn
            .as_mut()
            .expect("a statement is only made on a connection")
            .conn()
    }

    fn finish<T>(mut self, result: Result<T, sqlx::Error>) -> Result<T, DbError> {
        self.done = true;
        if result.is_ok() {
            let mut proven = self.locks.proven.lock().expect("proven lock");
            *proven = (*proven).max(Some(self.started));
        }
        result.map_err(|e| {
            let postgres = matches!(self.conn.as_ref(), Some(Acquired::Postgres(_)));
            if postgres && connection_lost(&e) {
                self.locks.lose(format!("{}: {e}", self.what));
            }
            DbError::Query {
                what: self.what,
                reason: e.to_string(),
            }
        })
    }
}

impl Drop for Statement<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.locks.lose(format!("{}: cancelled halfway", self.what));
        }
    }
}

/// Whether an error means the session (and so its advisory locks) may be gone: the socket,
/// the protocol, or the server ending the session (SQLSTATE class 08, connection exception;
/// 57, operator intervention: `pg_terminate_backend`, a shutdown).
fn connection_lost(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => d
            .code()
            .is_some_and(|c| c.starts_with("08") || c.starts_with("57")),
        sqlx::Error::Io(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        _ => false,
    }
}

impl PoolLocks {
    /// Whether this process may act on the pool in this cycle.
    pub fn holds(&self, pool_id: i64) -> bool {
        self.ids.contains(&pool_id)
    }

    /// Why the connection holding the locks was lost, if it was: then no pool may be started
    /// or written in this cycle.
    pub fn lost(&self) -> Option<String> {
        self.lost.lock().expect("lost lock").clone()
    }

    fn lose(&self, why: String) {
        let mut lost = self.lost.lock().expect("lost lock");
        if lost.is_none() {
            tracing::error!(
                outcome = "lock_lost",
                "lost the database connection that holds the pool locks ({why}); \
                 no further pool is scaled or recorded this cycle"
            );
            *lost = Some(why);
        }
    }

    async fn statement(&self, what: &'static str) -> Result<Statement<'_>, DbError> {
        let lost = |why: String| DbError::Query {
            what,
            reason: format!("the connection holding the pool locks was lost ({why})"),
        };
        if let Some(why) = self.lost() {
            return Err(lost(why));
        }
        let conn = self.conn.lock().await;
        // Lost while this statement waited for its turn.
        if let Some(why) = self.lost() {
            return Err(lost(why));
        }
        if conn.is_none() {
            return Err(lost("released".into()));
        }
        Ok(Statement {
            locks: self,
            conn,
            what,
            started: Instant::now(),
            done: false,
        })
    }

    fn proven_since(&self, since: Instant) -> bool {
        self.proven
            .lock()
            .expect("proven lock")
            .is_some_and(|t| t >= since)
    }

    /// Succeeds only if the locks were certainly held at some moment after `since`: a
    /// statement that began after it succeeded on their connection (a session's advisory locks
    /// end only with it), or else a round trip now. Calls that ask at about the same time
    /// share one round trip. SQLite's file locks live as long as this process, so there it
    /// only says whether the cycle gave up. The engine asks before each executor call, with
    /// the moment the call's turn came.
    pub async fn check(&self, since: Instant) -> Result<(), DbError> {
        if self.lost().is_none() && self.proven_since(since) {
            return Ok(());
        }
        let mut s = self.statement("checking the pool locks").await?;
        // Another call's round trip, begun after `since`, ended while this one waited.
        if self.proven_since(since) {
            s.done = true; // nothing was sent
            return Ok(());
        }
        let result = match s.conn() {
            Conn::Postgres(c) => sqlx::Connection::ping(&mut *c).await,
            Conn::Sqlite(_) => Ok(()),
        };
        s.finish(result)
    }

    /// [`Database::load_pools_checked`] on the cycle's connection.
    pub async fn load_pools_checked(
        &self,
        names: &[String],
    ) -> Result<Vec<Result<WorkerPool, UnreadablePool>>, DbError> {
        let mut s = self.statement("reading worker_pools").await?;
        let rows = s.conn().load_pools_checked(names).await;
        s.finish(rows)
    }

    /// [`Database::count_builds`] on the cycle's connection.
    pub async fn count_builds(&self, pool_ids: &[i64]) -> Result<HashMap<i64, Counts>, DbError> {
        let mut s = self.statement("counting builds").await?;
        let counts = s.conn().count_builds(pool_ids).await;
        s.finish(counts)
    }

    /// [`Database::busy_workers`] on the cycle's connection: the read a scale-in decision is
    /// made on is also proof that the pool is still this process's.
    pub async fn busy_workers(&self, pool_id: i64) -> Result<Vec<BusyWorker>, DbError> {
        let mut s = self.statement("reading busy workers").await?;
        let busy = s.conn().busy_workers(pool_id).await;
        s.finish(busy)
    }

    /// [`Database::arrival_history`] on the cycle's connection.
    pub async fn arrival_history(
        &self,
        pool: &WorkerPool,
        window_seconds: u64,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<crate::planner::ArrivalHistory, DbError> {
        let mut s = self.statement("reading the arrival history").await?;
        let h = s
            .conn()
            .arrival_history(pool, window_seconds, since, until)
            .await;
        s.finish(h)
    }

    /// [`Database::record_successes`] on the cycle's connection.
    pub async fn record_successes(&self, done: &[(i64, DateTime<Utc>)]) -> Result<(), DbError> {
        if done.is_empty() {
            return Ok(());
        }
        let mut s = self.statement("writing autoscaling_status").await?;
        let written = s.conn().record_successes(done).await;
        s.finish(written)
    }

    /// [`Database::record_failures`] on the cycle's connection.
    pub async fn record_failures(&self, failures: &[(i64, i32)]) -> Result<(), DbError> {
        if failures.is_empty() {
            return Ok(());
        }
        let mut s = self.statement("writing autoscaling_status").await?;
        let written = s.conn().record_failures(failures).await;
        s.finish(written)
    }

    /// Releases every lock now and gives the connection back for the next cycle (a lost one
    /// is closed instead).
    pub async fn release(mut self) {
        let lost = self.lost().is_some();
        if let Some(Acquired::Postgres(mut c)) = self.conn.get_mut().take() {
            if lost
                || sqlx::query("SELECT pg_advisory_unlock_all()")
                    .execute(&mut *c)
                    .await
                    .is_err()
            {
                c.close_on_drop();
            }
        }
        // A SQLite connection goes back to the pool; the files unlock as they are closed.
    }
}

impl Drop for PoolLocks {
    fn drop(&mut self) {
        if let Some(Acquired::Postgres(c)) = self.conn.get_mut() {
            c.close_on_drop();
        }
    }
}

fn lock_dir(db_file: &std::path::Path) -> PathBuf {
    let mut name = db_file.file_name().unwrap_or_default().to_os_string();
    name.push(".autoscaler-locks");
    db_file.with_file_name(name)
}

impl Database {
    /// Takes, without waiting, the lock of every named pool that has autoscaling enabled;
    /// pools another process holds are simply not in the answer. The connection it takes is
    /// the cycle's, for every statement until [`PoolLocks::release`].
    pub async fn lock_pools(&self, names: &[String]) -> Result<PoolLocks, DbError> {
        let mut acquired = self.acquire("locking pools").await?;
        match self.take_locks(&mut acquired, names).await {
            Ok((ids, files)) => Ok(PoolLocks {
                ids: ids.into_iter().collect(),
                conn: tokio::sync::Mutex::new(Some(acquired)),
                _files: files,
                lost: std::sync::Mutex::new(None),
                proven: std::sync::Mutex::new(None),
            }),
            Err(e) => {
                // Closed, not returned to the pool, with any lock an earlier chunk took.
                if let Acquired::Postgres(c) = &mut acquired {
                    c.close_on_drop();
                }
                Err(e)
            }
        }
    }

    async fn take_locks(
        &self,
        acquired: &mut Acquired,
        names: &[String],
    ) -> Result<(Vec<i64>, Vec<File>), DbError> {
        let what = "locking pools";
        let mut ids: Vec<i64> = Vec::new();
        let mut files = Vec::new();
        match acquired.conn() {
            Conn::Postgres(conn) => {
                for chunk in names.chunks(MAX_BINDS) {
                    // MATERIALIZED: lock exactly the named, enabled pools, whatever plan PostgreSQL picks.
                    let sql = format!(
                        "WITH named AS MATERIALIZED (SELECT id FROM worker_pools WHERE name IN ({}) AND autoscaling_enabled) \
                         SELECT id FROM named WHERE pg_try_advisory_lock({LOCK_NAMESPACE}, id)",
                        placeholders(chunk.len())
                    );
                    let mut q = sqlx::query_as::<_, (i32,)>(&sql);
                    for n in chunk {
                        q = q.bind(n);
                    }
                    let rows = q.fetch_all(&mut *conn).await;
                    ids.extend(
                        rows.map_err(DbError::query(what))?
                            .into_iter()
                            .map(|r| i64::from(r.0)),
                    );
                }
            }
            Conn::Sqlite(conn) => {
                let mut candidates: Vec<i64> = Vec::new();
                for chunk in names.chunks(MAX_BINDS) {
                    let sql = format!(
                        "SELECT id FROM worker_pools WHERE name IN ({}) AND autoscaling_enabled",
                        placeholders(chunk.len())
                    );
                    let mut q = sqlx::query_as::<_, (i64,)>(&sql);
                    for n in chunk {
                        q = q.bind(n);
                    }
                    let rows = q.fetch_all(&mut *conn).await;
                    candidates.extend(rows.map_err(DbError::query(what))?.into_iter().map(|r| r.0));
                }
                let Database::Sqlite(pool) = self else {
                    unreachable!("a SQLite connection comes from a SQLite pool")
                };
                let file = pool.connect_options().get_filename().to_path_buf();
                if file.as_os_str() == ":memory:" {
                    // One process by definition.
                    ids = candidates;
                } else {
                    (ids, files) = lock_files(&file, candidates)?;
                }
            }
        }
        Ok((ids, files))
    }
}

/// `flock`s, without waiting, a file per pool beside the SQLite database: the pools locked and
/// the open files that hold their locks.
fn lock_files(db_file: &std::path::Path, ids: Vec<i64>) -> Result<(Vec<i64>, Vec<File>), DbError> {
    // The same database through a symlink or `..` must share one set of locks.
    let file = std::fs::canonicalize(db_file).unwrap_or_else(|_| db_file.to_path_buf());
    let dir = lock_dir(&file);
    std::fs::create_dir_all(&dir).map_err(|e| DbError::Query {
        what: "locking pools",
        reason: format!("creating {}: {e}", dir.display()),
    })?;
    let mut held = Vec::new();
    let mut locked = Vec::new();
    for id in ids {
        let path = dir.join(format!("pool-{id}.lock"));
        let f = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| DbError::Query {
                what: "locking pools",
                reason: format!("opening {}: {e}", path.display()),
            })?;
        // SAFETY: flock on a descriptor we own; LOCK_NB never blocks.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            locked.push(id);
            held.push(f);
        }
    }
    Ok((locked, held))
}
