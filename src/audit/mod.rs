//! `autoscaler audit`: a read-only look at what really runs in the clouds, cross-checked with
//! the Vespene database (issue 5).
//!
//! The command gathers (each backend's [`autoscaler_executor::Inventory`], the pools, builds
//! and `workers` rows), hands everything to the pure [`analysis::analyze`], and prints the
//! [`analysis::Report`] as a table or as JSON. Nothing is ever written: the backends only list
//! and get, the database is only read.

pub mod analysis;
pub mod output;

pub use crate::config::AuditConfig;
use crate::config::Config;
use crate::db::{ConnectOptions, Database, DbError};
use analysis::{Failure, Input, Options, PoolInput, Severity};
use autoscaler_executor::{Executor, WorkerPool};
use chrono::{DateTime, Duration, Utc};
use futures::stream::{self, StreamExt};
use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal;
use std::sync::Arc;

const AFTER_HELP: &str = "\
Read-only: the audit never changes anything. It only lists and reads groups and instances
(EC2 DescribeAutoScalingGroups / DescribeInstances; GCE instanceGroupManagers.get,
listManagedInstances, instances.list, zoneOperations.list) and reads the Vespene database.

Findings: orphan, untagged, drift, stuck_terminating, never_checked_in, stale_worker,
version_skew, old_instance (with --older-than). Thresholds come from the [audit] section of
the config file: expected_version, drift_grace_seconds (900), drain_limit_seconds (3600),
boot_allowance_seconds (900), stale_worker_seconds (86400).

Exit status: 0 no finding at or above --fail-on; 1 at least one; 2 the audit itself failed
(a group or the instance listing could not be read, a named pool does not exist, the
database is unreachable): the part that failed is named on stderr and in the report.

Examples:
  autoscaler audit                                  # every aws-asg / gce-mig pool
  autoscaler audit --queue linux --older-than 7d
  autoscaler audit --format json --fail-on warning | jq '.findings[]'";

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned, grouped by pool; severities coloured on a terminal.
    Table,
    /// One JSON document (schema in docs/audit.md).
    Json,
}

/// The lowest severity that makes the exit status 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
// Doc comments on the variants would become `--fail-on`'s help text, a contract.
#[allow(missing_docs)]
pub enum FailOn {
    Warning,
    Error,
    Never,
}

/// `autoscaler audit` arguments.
#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct AuditArgs {
    /// Pools to audit, by name; repeat for several (default: every pool whose executor is a
    /// cloud executor: aws-asg, gce-mig).
    #[arg(long = "queue", value_name = "NAME")]
    pub queues: Vec<String>,

    /// `table` for people, `json` for scripts.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,

    /// Also report instances launched longer ago than this (e.g. 7d, 36h, 90m, 1d12h),
    /// oldest first.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub older_than: Option<Duration>,

    /// Exit with status 1 when a finding of this severity or worse is found.
    #[arg(long, value_enum, default_value_t = FailOn::Error)]
    pub fail_on: FailOn,

    /// The clock, for reproducible reports and tests (RFC 3339).
    #[arg(long, hide = true, value_name = "RFC3339", value_parser = parse_now)]
    pub now: Option<DateTime<Utc>>,
}

/// Why the audit itself failed (exit status 2), when not even a partial report could be made.
#[derive(Debug, thiserror::Error)]
#[error("audit: {0}")]
pub struct AuditError(pub String);

impl From<DbError> for AuditError {
    fn from(e: DbError) -> Self {
        AuditError(format!("reading the Vespene database: {e}"))
    }
}

/// Parses `7d`, `36h`, `90m`, `45s`, `2w`, combinations like `1d12h`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    let bounded = |n: i64| {
        if n > MAX_DURATION_SECONDS {
            Err(format!("{s:?} is longer than 100 years"))
        } else {
            Ok(Duration::seconds(n))
        }
    };
    if let Ok(n) = t.parse::<i64>() {
        return if n >= 0 {
            bounded(n)
        } else {
            Err(format!("{s:?} is negative"))
        };
    }
    let mut total: i64 = 0;
    let mut digits = String::new();
    for c in t.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => {
                return Err(format!(
                    "{s:?}: unknown unit {c:?} (use s, m, h, d or w, e.g. 7d or 1d12h)"
                ))
            }
        };
        let n: i64 = digits
            .parse()
            .map_err(|_| format!("{s:?}: a number must come before {c:?}"))?;
        digits.clear();
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("{s:?} is too long"))?;
    }
    if !digits.is_empty() {
        return Err(format!("{s:?}: the last number has no unit"));
    }
    bounded(total)
}

/// Longest `--older-than` (100 years): beyond it, subtracting it from now overflows.
const MAX_DURATION_SECONDS: i64 = 100 * 365 * 86_400;

fn parse_now(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("{s:?} is not an RFC 3339 time: {e}"))
}

/// Executor names that are cloud backends even when not compiled in, so a pool naming one is
/// reported as unauditable instead of silently skipped.
const CLOUD_EXECUTORS: &[&str] = &["aws-asg", "gce-mig"];

/// Pools whose busy workers the audit reads at the same time: also its connection count.
const BUSY_READS_AT_ONCE: usize = 4;

fn secs(n: u64) -> Duration {
    Duration::seconds(i64::try_from(n).unwrap_or(i64::MAX / 1000))
}

fn options(args: &AuditArgs, cfg: &AuditConfig) -> Options {
    Options {
        drift_grace: secs(cfg.drift_grace_seconds),
        drain_limit: secs(cfg.drain_limit_seconds),
        boot_allowance: secs(cfg.boot_allowance_seconds),
        stale_worker: secs(cfg.stale_worker_seconds),
        expected_version: cfg
            .expected_version
            .clone()
            .filter(|v| !v.trim().is_empty()),
        older_than: args.older_than,
        fail_on: match args.fail_on {
            FailOn::Warning => Some(Severity::Warning),
            FailOn::Error => Some(Severity::Error),
            FailOn::Never => None,
        },
    }
}

fn failure(part: String, pool: &str, kind: &str, message: String) -> Failure {
    Failure {
        part,
        pool: Some(pool.to_string()),
        kind: kind.into(),
        message,
    }
}

/// `workers.id` → ids of the given pools it has run builds for (one grouped scan of builds;
/// Vespene's schema indexes `builds.worker_id`).
async fn worker_pools(db: &Database, pool_ids: &[i64]) -> Result<HashMap<i32, Vec<i64>>, DbError> {
    let mut out: HashMap<i32, Vec<i64>> = HashMap::new();
    if pool_ids.is_empty() {
        return Ok(out);
    }
    let sql = format!(
        "SELECT worker_id, worker_pool_id FROM builds WHERE worker_id IS NOT NULL \
         AND worker_pool_id IN ({}) GROUP BY worker_id, worker_pool_id ORDER BY worker_id, worker_pool_id",
        (1..=pool_ids.len())
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let err = |e: sqlx::Error| DbError::Query {
        what: "reading which workers ran builds of the audited pools",
        reason: e.to_string(),
    };
    let rows: Vec<(i32, i32)> = match db {
        Database::Postgres(p) => {
            let mut q = sqlx::query_as::<_, (i32, i32)>(&sql);
            for id in pool_ids {
                q = q.bind(*id as i32);
            }
            q.fetch_all(p).await.map_err(err)?
        }
        Database::Sqlite(p) => {
            let mut q = sqlx::query_as::<_, (i32, i32)>(&sql);
            for id in pool_ids {
                q = q.bind(*id as i32);
            }
            q.fetch_all(p).await.map_err(err)?
        }
    };
    for (worker, pool) in rows {
        out.entry(worker).or_default().push(i64::from(pool));
    }
    Ok(out)
}

/// Runs the subcommand; returns the exit status.
pub async fn run(args: AuditArgs, database_url: &str, config: &Config) -> Result<u8, AuditError> {
    let options = options(&args, &config.audit);
    let now = args.now.unwrap_or_else(Utc::now);
    // At most BUSY_READS_AT_ONCE busy-worker reads at once, nothing else concurrently.
    let db = Database::connect(
        database_url,
        &ConnectOptions {
            max_connections: BUSY_READS_AT_ONCE as u32,
            ..ConnectOptions::default()
        },
    )?;
    let registry = crate::run::build_registry(config)
        .await
        .map_err(|e| AuditError(format!("building the executors: {e}")))?;

    // Which pools, and which backend describes each.
    let all_pools = args.queues.is_empty();
    let mut failures = Vec::new();
    let rows = if all_pools {
        db.load_all_pools_checked().await?
    } else {
        db.load_pools_checked(&args.queues).await?
    };
    let candidates = readable_pools(rows, &args.queues, &mut failures);
    let by_executor = by_backend(candidates, &registry, all_pools, &mut failures);

    // The clouds, one backend at a time in parallel.
    let reads = by_executor.iter().map(|(name, (e, pools))| async move {
        let refs: Vec<&WorkerPool> = pools.iter().collect();
        let inventory = e.inventory().expect("chosen for having an inventory");
        (name.clone(), inventory.inventory(&refs).await)
    });
    let sources: BTreeMap<_, _> = futures::future::join_all(reads).await.into_iter().collect();

    // The database, read after the clouds so busy workers are as fresh as the instances.
    let facts = read_database(&db, by_executor, &mut failures).await?;
    db.close().await;
    let input = Input {
        now,
        options,
        pools: facts.pools,
        sources,
        workers: facts.workers,
        worker_pools: facts.worker_pools,
        all_pools,
        failures,
    };
    let report = analysis::analyze(&input);
    print(&report, args.format);
    Ok(report.exit_status)
}

/// The rows that could be read; an unreadable row is a failure of the audit when it is the
/// audit's business (named with `--queue`, or naming a cloud executor, or unreadable even
/// there), and a pool named with `--queue` that does not exist is one too.
fn readable_pools(
    rows: Vec<Result<WorkerPool, crate::db::UnreadablePool>>,
    queues: &[String],
    failures: &mut Vec<Failure>,
) -> Vec<WorkerPool> {
    let all_pools = queues.is_empty();
    let mut candidates = Vec::with_capacity(rows.len());
    for row in rows {
        match row {
            Ok(p) => candidates.push(p),
            Err(e) => {
                // Without --queue, a row is only the audit's business if it names a cloud
                // executor (or its executor cannot be read either).
                let ours = e
                    .executor
                    .as_deref()
                    .is_none_or(|x| CLOUD_EXECUTORS.contains(&x.trim()));
                if !all_pools || ours {
                    let name = e.name.clone().unwrap_or_else(|| "?".into());
                    failures.push(failure(
                        format!("pool {name}"),
                        &name,
                        "config",
                        e.to_string(),
                    ));
                }
            }
        }
    }
    for name in queues {
        let unreadable = failures.iter().any(|f| f.pool.as_deref() == Some(name));
        if !unreadable && !candidates.iter().any(|p| &p.name == name) {
            failures.push(failure(
                format!("pool {name}"),
                name,
                "not_found",
                format!("pool {name}: no such pool in worker_pools"),
            ));
        }
    }
    candidates
}

/// The pools by the backend that describes them: only backends with a cloud inventory. A pool
/// named with `--queue` whose backend keeps none, or whose executor is unusable, is a failure.
fn by_backend(
    candidates: Vec<WorkerPool>,
    registry: &crate::engine::Registry,
    all_pools: bool,
    failures: &mut Vec<Failure>,
) -> BTreeMap<String, (Arc<dyn Executor>, Vec<WorkerPool>)> {
    let mut by_executor: BTreeMap<String, (Arc<dyn Executor>, Vec<WorkerPool>)> = BTreeMap::new();
    for pool in candidates {
        let named = pool.executor.as_deref().map(str::trim).unwrap_or("");
        match registry.lookup(&pool) {
            Ok(e) if e.inventory().is_some() => {
                by_executor
                    .entry(e.name().to_string())
                    .or_insert_with(|| (e.clone(), Vec::new()))
                    .1
                    .push(pool);
            }
            Ok(e) => {
                if !all_pools {
                    failures.push(failure(
                        format!("pool {}", pool.name),
                        &pool.name,
                        "config",
                        format!(
                            "pool {}: executor {} keeps no cloud inventory; the audit covers {} pools",
                            pool.name,
                            e.name(),
                            CLOUD_EXECUTORS.join(" and ")
                        ),
                    ));
                }
            }
            Err(err) => {
                if !all_pools || CLOUD_EXECUTORS.contains(&named) {
                    failures.push(failure(
                        format!("pool {}", pool.name),
                        &pool.name,
                        "config",
                        err.to_string(),
                    ));
                }
            }
        }
    }
    by_executor
}

/// What the database says about the audited pools.
struct DatabaseFacts {
    pools: Vec<PoolInput>,
    workers: Vec<crate::db::WorkerRow>,
    worker_pools: HashMap<i32, Vec<i64>>,
}

/// Reads the audited pools' counts and busy workers, and every `workers` row (an unreadable
/// one is a failure naming it).
async fn read_database(
    db: &Database,
    by_executor: BTreeMap<String, (Arc<dyn Executor>, Vec<WorkerPool>)>,
    failures: &mut Vec<Failure>,
) -> Result<DatabaseFacts, AuditError> {
    let mut pools: Vec<(WorkerPool, String)> = by_executor
        .into_iter()
        .flat_map(|(name, (_, pools))| pools.into_iter().map(move |p| (p, name.clone())))
        .collect();
    pools.sort_by_key(|(p, _)| p.id);
    let ids: Vec<i64> = pools.iter().map(|(p, _)| p.id).collect();
    let counts = db.count_builds(&ids).await?;
    let busy: Vec<_> = stream::iter(ids.iter().map(|id| db.busy_workers(*id)))
        .buffered(BUSY_READS_AT_ONCE)
        .collect()
        .await;
    let mut workers = Vec::new();
    for row in db.workers().await? {
        match row {
            Ok(w) => workers.push(w),
            Err(e) => failures.push(Failure {
                part: format!("worker {}", e.id.map(|i| i.to_string()).unwrap_or_default()),
                pool: None,
                kind: "config".into(),
                message: e.to_string(),
            }),
        }
    }
    let worker_pools = worker_pools(db, &ids).await?;
    let mut pool_inputs = Vec::with_capacity(pools.len());
    for ((pool, executor), busy) in pools.into_iter().zip(busy) {
        let c = counts.get(&pool.id).copied().unwrap_or_default();
        pool_inputs.push(PoolInput {
            queued_builds: c.queued,
            running_builds: c.running,
            busy: busy?,
            executor,
            pool,
        });
    }
    Ok(DatabaseFacts {
        pools: pool_inputs,
        workers,
        worker_pools,
    })
}

/// The report on stdout, and each failed part on stderr (escaped: it may quote the cloud).
fn print(report: &analysis::Report, format: Format) {
    match format {
        Format::Json => print!("{}", output::json(report)),
        Format::Table => {
            let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            print!("{}", output::table(report, color));
        }
    }
    for f in &report.failures {
        let line = format!("autoscaler audit: {} failed: {}", f.part, f.message);
        eprintln!("{}", crate::logging::escape_line(&line));
    }
}

#[cfg(test)]
mod tests;
