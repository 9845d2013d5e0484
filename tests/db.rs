//! The database layer on both engines: PostgreSQL with Vespene's real schema, and SQLite.

mod common;

use autoscaler::db::DbError;
use autoscaler_executor::WorkerPool;
use chrono::{TimeZone, Utc};
use common::{shell_pool, TestDb};

db_test!(reads_every_pool_column, |t: TestDb| async move {
    let mut p = shell_pool(4, "odd'name", "echo {{ size }}");
    p.variables = Some("{\"a\": 1}".into());
    p.sudo_user = Some("builder".into());
    p.queued_weight = 0.5;
    p.running_weight = 2.25;
    p.multiplier = 1.5;
    p.excess = -1;
    p.minimum = 1;
    p.maximum = 42;
    p.reevaluate_minutes = 3;
    p.build_latest = false;
    p.autoscaling_status = Some(7);
    p.last_autoscaled = Some(Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap());
    t.add_pool(&p).await;
    t.add_pool(&WorkerPool::with_defaults(5, "other")).await;
    let got =
        t.db.load_pools(&["odd'name".to_string(), "missing".to_string()])
            .await
            .unwrap();
    assert_eq!(got, vec![p]);
    t.cleanup().await;
});

db_test!(
    counts_all_pools_in_one_grouped_query,
    |t: TestDb| async move {
        let mut latest = shell_pool(1, "latest", "true");
        latest.build_latest = true;
        let mut every = shell_pool(2, "every", "true");
        every.build_latest = false;
        let idle = shell_pool(3, "idle", "true");
        let unnamed = shell_pool(4, "unnamed", "true");
        for p in [&latest, &every, &idle, &unnamed] {
            t.add_pool(p).await;
        }
        t.add_worker(1, "w1").await;
        t.add_builds(&[
            // latest: 3 QUEUED of project 10, 1 of project 11, 2 with no project -> 4 distinct.
            (1, 1, "QUEUED", Some(10), None),
            (2, 1, "QUEUED", Some(10), None),
            (3, 1, "QUEUED", Some(10), None),
            (4, 1, "QUEUED", Some(11), None),
            (5, 1, "QUEUED", None, None),
            (6, 1, "QUEUED", None, None),
            (7, 1, "RUNNING", Some(12), Some(1)),
            (8, 1, "SUCCESS", Some(12), Some(1)),
            (9, 1, "FAILURE", Some(12), None),
            (10, 1, "ABORTED", Some(12), None),
            // every: 2 queued same project, 3 running.
            (11, 2, "QUEUED", Some(20), None),
            (12, 2, "QUEUED", Some(20), None),
            (13, 2, "RUNNING", Some(21), None),
            (14, 2, "RUNNING", Some(21), None),
            (15, 2, "RUNNING", None, None),
            (16, 2, "ORPHANED", None, None),
            // unnamed pool has activity but is not asked for.
            (17, 4, "QUEUED", Some(40), None),
        ])
        .await;
        let counts = t.db.count_builds(&[1, 2, 3]).await.unwrap();
        assert_eq!(counts.len(), 3);
        let c1 = counts[&1];
        assert_eq!((c1.queued, c1.queued_projects, c1.running), (6, 4, 1));
        let c2 = counts[&2];
        assert_eq!((c2.queued, c2.queued_projects, c2.running), (2, 1, 3));
        assert_eq!(counts[&3], Default::default());
        assert!(t.db.count_builds(&[]).await.unwrap().is_empty());
        t.cleanup().await;
    }
);

db_test!(
    busy_workers_join_running_builds_to_hostnames,
    |t: TestDb| async move {
        t.add_pool(&shell_pool(1, "a", "true")).await;
        t.add_pool(&shell_pool(2, "b", "true")).await;
        t.add_worker(1, "ip-10-0-0-1.ec2.internal").await;
        t.add_worker(2, "ip-10-0-0-2.ec2.internal").await;
        t.add_worker(3, "other-pool-host").await;
        t.add_builds(&[
            (1, 1, "RUNNING", Some(1), Some(1)),
            (2, 1, "SUCCESS", Some(1), Some(2)),
            (3, 1, "QUEUED", Some(1), None),
            (4, 2, "RUNNING", Some(2), Some(3)),
            // Vespene saves RUNNING first and worker_id a moment later: such a build is busy
            // somewhere in the pool (the inner join of old missed it: issue 11, defect 2).
            (5, 1, "RUNNING", Some(1), None),
        ])
        .await;
        let busy = t.db.busy_workers(1).await.unwrap();
        let hosts: Vec<_> = busy
            .iter()
            .map(|b| (b.hostname.as_deref(), b.build_id))
            .collect();
        assert_eq!(
            hosts,
            vec![(Some("ip-10-0-0-1.ec2.internal"), 1), (None, 5)]
        );
        t.cleanup().await;
    }
);

db_test!(writes_only_status_and_time, |t: TestDb| async move {
    let p = shell_pool(1, "p", "true");
    let q = shell_pool(2, "q", "true");
    t.add_pool(&p).await;
    t.add_pool(&q).await;
    let at = Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap();
    t.db.record_successes(&[(1, at)]).await.unwrap();
    let mut expected = p.clone();
    expected.autoscaling_status = Some(0);
    expected.last_autoscaled = Some(at);
    assert_eq!(t.pool("p").await, expected);
    t.db.record_failures(&[(1, 3)]).await.unwrap();
    expected.autoscaling_status = Some(3);
    assert_eq!(
        t.pool("p").await,
        expected,
        "a failure keeps last_autoscaled"
    );
    assert_eq!(t.pool("q").await, q, "other pools untouched");
    // Batches: several pools, several statuses, in one statement.
    t.add_pool(&shell_pool(3, "r", "true")).await;
    t.db.record_failures(&[(1, 4), (2, 4), (3, 9)])
        .await
        .unwrap();
    assert_eq!(t.status_of("p").await.0, Some(4));
    assert_eq!(t.status_of("q").await, (Some(4), None));
    assert_eq!(t.status_of("r").await, (Some(9), None));
    // Each pool gets its own time (when its own call ended), sub-second precision kept.
    let later = at + chrono::Duration::milliseconds(2_345);
    t.db.record_successes(&[(2, at), (3, later)]).await.unwrap();
    assert_eq!(t.status_of("q").await, (Some(0), Some(at)));
    assert_eq!(t.status_of("r").await, (Some(0), Some(later)));
    assert_eq!(t.status_of("p").await.0, Some(4));
    t.cleanup().await;
});

db_test!(db_init_refuses_an_existing_schema, |t: TestDb| async move {
    let err = t.db.init_schema().await.unwrap_err();
    assert!(matches!(err, DbError::AlreadyInitialized(_)), "{err}");
    assert_eq!(
        err.to_string(),
        "database already has Vespene tables (builds, worker_pools, workers); refusing to touch it"
    );
    t.cleanup().await;
});

#[tokio::test]
async fn db_init_creates_tables_in_an_empty_postgres() {
    let t = TestDb::postgres_empty().await;
    assert!(t.db.existing_tables().await.unwrap().is_empty());
    t.db.init_schema().await.unwrap();
    assert_eq!(
        t.db.existing_tables().await.unwrap(),
        vec!["builds", "worker_pools", "workers"]
    );
    // And the autoscaler's queries work on it.
    t.add_pool(&shell_pool(1, "p", "true")).await;
    t.exec(&autoscaler::demo::insert_build_sql(
        1,
        1,
        "QUEUED",
        Some(5),
        None,
    ))
    .await;
    assert_eq!(t.db.count_builds(&[1]).await.unwrap()[&1].queued, 1);
    t.cleanup().await;
}

#[tokio::test]
async fn unreachable_database_is_a_clean_error_without_password() {
    // Port 1 is closed: connection refused.
    let db = autoscaler::db::Database::connect(
        "postgres://vespene:hunter2@127.0.0.1:1/vespene",
        &autoscaler::db::ConnectOptions {
            acquire_timeout: std::time::Duration::from_secs(2),
            ..Default::default()
        },
    )
    .unwrap();
    let err = db.load_pools(&["x".into()]).await.unwrap_err().to_string();
    // The pool only says it timed out; the error says why.
    assert!(
        err.starts_with("database: connecting: ") && err.contains("Connection refused"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
}

db_test!(
    ensure_index_is_explicit_and_idempotent,
    |t: TestDb| async move {
        assert!(t.db.ensure_index().await.unwrap(), "created the first time");
        assert!(
            !t.db.ensure_index().await.unwrap(),
            "left alone the second time"
        );
        // The counts are the same with the index in place.
        t.add_pool(&shell_pool(1, "p", "true")).await;
        t.add_builds(&[
            (1, 1, "QUEUED", Some(1), None),
            (2, 1, "RUNNING", Some(2), None),
        ])
        .await;
        let c = t.db.count_builds(&[1]).await.unwrap()[&1];
        assert_eq!((c.queued, c.running), (1, 1));
        t.cleanup().await;
    }
);

/// Issue 16, item 3: the cycle's statements run on the connection that holds its locks. Once
/// the server ends that session, every later statement of the cycle fails (the locks may be
/// another process's), the pools are free for another process, and the next cycle of the same
/// process locks them again on a new connection.
#[tokio::test]
async fn a_terminated_lock_connection_fails_the_rest_of_the_cycle_postgres() {
    let t = TestDb::postgres().await;
    t.add_pool(&shell_pool(1, "p", "true")).await;
    t.add_pool(&shell_pool(2, "q", "true")).await;
    let url = format!("{}?application_name=vespene-autoscaler-killed", t.url);
    let one = autoscaler::run::connect(&url).unwrap();
    let names = ["p".to_string(), "q".to_string()];
    let locks = one.lock_pools(&names).await.unwrap();
    assert!(locks.holds(1) && locks.holds(2));
    assert_eq!(locks.load_pools_checked(&names).await.unwrap().len(), 2);
    let before = std::time::Instant::now();
    locks.check(before).await.unwrap();
    assert!(locks.lost().is_none());

    t.exec(
        "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity \
         WHERE application_name = 'vespene-autoscaler-killed'",
    )
    .await;
    // Proven before the kill, not after it.
    locks.check(before).await.unwrap();
    let err = locks
        .check(std::time::Instant::now())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("database: checking the pool locks: "),
        "{err}"
    );
    assert!(locks.lost().is_some());
    for err in [
        locks.busy_workers(1).await.unwrap_err().to_string(),
        locks
            .record_successes(&[(1, Utc::now())])
            .await
            .unwrap_err()
            .to_string(),
        locks.count_builds(&[1]).await.unwrap_err().to_string(),
    ] {
        assert!(
            err.contains("the connection holding the pool locks was lost"),
            "{err}"
        );
    }
    locks.release().await;
    assert_eq!(t.status_of("p").await, (None, None), "nothing was written");

    // Free for another process; then this one takes them again, on a new connection.
    let other = t.db.lock_pools(&names).await.unwrap();
    assert!(other.holds(1) && other.holds(2));
    other.release().await;
    let again = one.lock_pools(&names).await.unwrap();
    assert!(again.holds(1) && again.holds(2));
    again.record_successes(&[(1, Utc::now())]).await.unwrap();
    again.release().await;
    assert_eq!(t.status_of("p").await.0, Some(0));
    one.close().await;
    t.cleanup().await;
}

/// Issue 16: the batched status writes used to build a new `IN (…)` statement for every batch
/// length, so a long-running loop kept preparing statements. Over one connection, batches of
/// 1 to 40 pools must leave exactly one prepared UPDATE per kind of write.
#[tokio::test]
async fn status_writes_have_one_statement_shape_whatever_the_batch_postgres() {
    let t = TestDb::postgres().await;
    for id in 1..=40 {
        t.add_pool(&shell_pool(id, &format!("p{id}"), "true")).await;
    }
    let one = autoscaler::db::Database::connect(
        &t.url,
        &autoscaler::db::ConnectOptions {
            max_connections: 1,
            ..Default::default()
        },
    )
    .unwrap();
    let at = Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap();
    for n in 1..=40i64 {
        let done: Vec<(i64, chrono::DateTime<Utc>)> = (1..=n).map(|id| (id, at)).collect();
        one.record_successes(&done).await.unwrap();
        let failed: Vec<(i64, i32)> = (1..=n).map(|id| (id, (id % 3) as i32 + 2)).collect();
        one.record_failures(&failed).await.unwrap();
    }
    assert_eq!(t.status_of("p40").await.0, Some(40 % 3 + 2));
    let autoscaler::db::Database::Postgres(pool) = &one else {
        unreachable!()
    };
    let shapes: Vec<(String,)> = sqlx::query_as(
        "SELECT statement FROM pg_prepared_statements WHERE statement LIKE 'UPDATE worker_pools%'",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(shapes.len(), 2, "{shapes:#?}");
    one.close().await;
    t.cleanup().await;
}

/// Issue 12 item 1, a fuzz target over row decoding: a pool row holding PostgreSQL's edge values
/// (infinite and extreme timestamps, NaN and infinite doubles, the integer extremes) is read as a
/// pool or as an unreadable row naming its column, and a whole (dry-run) cycle over it ends
/// with a result for the pool: never a panic.
#[test]
fn row_decoding_survives_postgres_edge_values() {
    use autoscaler::engine::PoolResult;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestCaseError, TestRunner};

    let rt = tokio::runtime::Runtime::new().unwrap();
    let t = rt.block_on(TestDb::postgres());
    rt.block_on(t.add_pool(&shell_pool(
        1,
        "p",
        "echo {{ size }} {{ worker_pool.last_autoscaled }}",
    )));
    let engine = rt
        .block_on(autoscaler::run::engine_for(
            &Default::default(),
            &t.url,
            true,
        ))
        .unwrap();
    let ts = prop_oneof![
        Just("NULL"),
        Just("'infinity'"),
        Just("'-infinity'"),
        Just("'294276-12-31 23:59:59.999999+00'"),
        Just("'294000-01-01 00:00:00+00'"),
        Just("'262143-12-31 23:59:59+00'"),
        Just("'262144-01-01 00:00:00+00'"),
        Just("'4713-01-01 00:00:00+00 BC'"),
        Just("'1970-01-01 00:00:00+00'"),
        Just("now() + interval '1000 years'"),
        Just("now() - interval '1 minute'"),
    ];
    let float = || {
        prop_oneof![
            Just("'NaN'"),
            Just("'Infinity'"),
            Just("'-Infinity'"),
            Just("1e308"),
            Just("-1e308"),
            Just("5e-324"),
            Just("-0.0"),
            Just("1"),
        ]
    };
    let int = || {
        prop_oneof![
            Just("2147483647"),
            Just("-2147483648"),
            Just("0"),
            Just("1"),
            Just("-1"),
            Just("10"),
        ]
    };
    let strategy = (
        ts,
        (float(), float(), float()),
        (int(), int(), int(), int()),
    );
    let mut runner = TestRunner::new(Config {
        cases: 96,
        failure_persistence: None,
        ..Config::default()
    });
    let columns = [
        "last_autoscaled",
        "multiplier",
        "queued_weight",
        "running_weight",
    ];
    runner
        .run(&strategy, |(last, (mult, qw, rw), (max, min, excess, reeval))| {
            rt.block_on(async {
                t.exec(&format!(
                    "UPDATE worker_pools SET last_autoscaled = {last}, multiplier = {mult}, \
                     queued_weight = {qw}, running_weight = {rw}, maximum = {max}, minimum = {min}, \
                     excess = {excess}, reevaluate_minutes = {reeval} WHERE id = 1"
                ))
                .await;
                let rows = t.db.load_pools_checked(&["p".to_string()]).await.unwrap();
                prop_assert_eq!(rows.len(), 1);
                let unreadable = match &rows[0] {
                    Ok(_) => None,
                    Err(e) => {
                        prop_assert!(columns.contains(&e.column), "{:?}", e);
                        prop_assert_eq!(e.id, Some(1));
                        Some(e.column)
                    }
                };
                let (_tx, stop) = tokio::sync::watch::channel(false);
                let report = engine
                    .run_cycle(&["p".to_string()], false, &stop)
                    .await
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(report.pools.len(), 1);
                if let Some(column) = unreadable {
                    match &report.pools[0].result {
                        PoolResult::Failed { status, error, .. } => {
                            prop_assert_eq!(*status, 2);
                            prop_assert!(error.contains(column), "{}", error);
                        }
                        other => prop_assert!(false, "acted on an unreadable row: {:?}", other),
                    }
                }
                Ok(())
            })
        })
        .unwrap();
    rt.block_on(t.cleanup());
}
