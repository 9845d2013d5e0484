//! One actor per pool: several autoscalers may watch the same pools (redundancy, or pool groups
//! that overlap); for each pool, exactly one may evaluate and act on it in a cycle.
//!
//! PostgreSQL: a session-level advisory lock per pool, `pg_try_advisory_lock(NAMESPACE, id)`,
//! held on one dedicated connection for the cycle; if the process dies, the server drops the
//! connection and the locks with it. SQLite: an `flock` per pool on a file beside the
//! database, released by the kernel when the process dies.

use super::{placeholders, Database, DbError, MAX_BINDS};
use sqlx::pool::PoolConnection;
use sqlx::Postgres;
use std::collections::HashSet;
use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::path::PathBuf;

/// First key of every advisory lock the autoscaler takes ("VESP"), so its locks never collide
/// with other users of single-key advisory locks on the same database.
pub const LOCK_NAMESPACE: i32 = 0x5645_5350;

/// The pools this process holds for the current cycle. Call [`PoolLocks::release`] at the end
/// of the cycle; if it is dropped instead (panic, cancellation), the PostgreSQL connection is
/// closed rather than returned to the pool, which releases the locks on the server.
pub struct PoolLocks {
    ids: HashSet<i64>,
    held: Held,
}

enum Held {
    Postgres(Option<PoolConnection<Postgres>>),
    /// Held open for their locks; closing a file releases its lock.
    Files(#[allow(dead_code)] Vec<File>),
}

impl PoolLocks {
    /// Whether this process may act on the pool in this cycle.
    pub fn holds(&self, pool_id: i64) -> bool {
        self.ids.contains(&pool_id)
    }

    /// Releases every lock now.
    pub async fn release(mut self) {
        if let Held::Postgres(conn) = &mut self.held {
            if let Some(mut c) = conn.take() {
                if sqlx::query("SELECT pg_advisory_unlock_all()")
                    .execute(&mut *c)
                    .await
                    .is_err()
                {
                    c.close_on_drop();
                }
            }
        }
        // Files unlock as they are closed on drop.
    }
}

impl Drop for PoolLocks {
    fn drop(&mut self) {
        if let Held::Postgres(Some(c)) = &mut self.held {
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
    /// pools another process holds are simply not in the answer.
    pub async fn lock_pools(&self, names: &[String]) -> Result<PoolLocks, DbError> {
        if names.is_empty() {
            return Ok(PoolLocks {
                ids: HashSet::new(),
                held: Held::Files(Vec::new()),
            });
        }
        match self {
            Database::Postgres(pool) => {
                let mut conn = match pool.acquire().await {
                    Ok(c) => c,
                    // The pool only says it timed out; one direct attempt tells why.
                    Err(sqlx::Error::PoolTimedOut) => {
                        use sqlx::ConnectOptions as _;
                        let opts = pool.connect_options();
                        let attempt = opts.connect();
                        let reason =
                            match tokio::time::timeout(std::time::Duration::from_secs(5), attempt)
                                .await
                            {
                                Ok(Err(e)) => e.to_string(),
                                Ok(Ok(_)) => "timed out waiting for a free connection".to_string(),
                                Err(_) => "timed out connecting".to_string(),
                            };
                        return Err(DbError::Query {
                            what: "connecting",
                            reason,
                        });
                    }
                    Err(e) => return Err(DbError::query("locking pools")(e)),
                };
                let mut rows = Vec::new();
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
                    rows.extend(
                        q.fetch_all(&mut *conn)
                            .await
                            .map_err(DbError::query("locking pools"))?,
                    );
                }
                Ok(PoolLocks {
                    ids: rows.into_iter().map(|r| i64::from(r.0)).collect(),
                    held: Held::Postgres(Some(conn)),
                })
            }
            Database::Sqlite(pool) => {
                let mut ids: Vec<i64> = Vec::new();
                for chunk in names.chunks(MAX_BINDS) {
                    let sql = format!(
                        "SELECT id FROM worker_pools WHERE name IN ({}) AND autoscaling_enabled",
                        placeholders(chunk.len())
                    );
                    let mut q = sqlx::query_as::<_, (i64,)>(&sql);
                    for n in chunk {
                        q = q.bind(n);
                    }
                    ids.extend(
                        q.fetch_all(pool)
                            .await
                            .map_err(DbError::query("locking pools"))?
                            .into_iter()
                            .map(|r| r.0),
                    );
                }
                let file = pool.connect_options().get_filename().to_path_buf();
                if file.as_os_str() == ":memory:" {
                    // One process by definition.
                    return Ok(PoolLocks {
                        ids: ids.into_iter().collect(),
                        held: Held::Files(Vec::new()),
                    });
                }
                // The same database through a symlink or `..` must share one set of locks.
                let file = std::fs::canonicalize(&file).unwrap_or(file);
                let dir = lock_dir(&file);
                std::fs::create_dir_all(&dir).map_err(|e| DbError::Query {
                    what: "locking pools",
                    reason: format!("creating {}: {e}", dir.display()),
                })?;
                let mut held = Vec::new();
                let mut locked = HashSet::new();
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
                        locked.insert(id);
                        held.push(f);
                    }
                }
                Ok(PoolLocks {
                    ids: locked,
                    held: Held::Files(held),
                })
            }
        }
    }
}
