//! The `warm` planner's arrival history on both engines: one grouped query over
//! `builds.queued_time`, counted as the pool's demand, hostile rows left out, cached hourly.

mod common;

use autoscaler::db::{HistoryCache, HISTORY_MAX_AGE};
use autoscaler_executor::WorkerPool;
use chrono::{DateTime, Duration, Utc};
use common::{Engine, TestDb};

/// Monday 2024-03-04 09:00 UTC: hour 9 of the week, on a 90 s window boundary.
fn base() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2024-03-04T09:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

async fn set_queued(t: &TestDb, id: i64, value: &str) {
    t.exec(&format!(
        "UPDATE builds SET queued_time = {value} WHERE id = {id};"
    ))
    .await;
}

/// (id, pool, project, seconds after `base`).
const BUILDS: [(i64, i64, Option<i64>, i64); 12] = [
    // One window [09:00:00, 09:01:30): 5 builds, 4 demand keys (11 twice; two without a
    // project, each its own).
    (1, 7, Some(11), 0),
    (2, 7, Some(11), 10),
    (3, 7, Some(12), 20),
    (4, 7, None, 30),
    (5, 7, None, 89),
    // The next window.
    (6, 7, Some(13), 90),
    // 10:00.
    (7, 7, Some(14), 3605),
    // The same hour a week earlier: 2 in one window, below this week's peak.
    (8, 7, Some(15), -7 * 86_400),
    (9, 7, Some(16), -7 * 86_400 + 1),
    // Another pool, same window: not counted.
    (10, 8, Some(21), 5),
    // Five weeks back: outside the four weeks read.
    (11, 7, Some(17), -35 * 86_400),
    // Queued in the future of `now`: outside [since, until).
    (12, 7, Some(18), 3 * 86_400),
];

async fn fill(t: &TestDb, build_latest: bool) -> WorkerPool {
    let mut p = WorkerPool::with_defaults(7, "linux");
    p.build_latest = build_latest;
    t.add_pool(&p).await;
    t.add_pool(&WorkerPool::with_defaults(8, "mac")).await;
    let rows: Vec<_> = BUILDS
        .iter()
        .map(|&(id, pool, project, _)| (id, pool, "SUCCESS", project, None))
        .collect();
    t.add_builds(&rows).await;
    for &(id, _, _, s) in &BUILDS {
        let at = autoscaler::demo::sql_time(&(base() + Duration::seconds(s)));
        set_queued(t, id, &at).await;
    }
    // Hostile rows of the pool: no time at all, and a value no time function can use.
    t.add_builds(&[
        (13, 7, "QUEUED", Some(11), None),
        (14, 7, "SUCCESS", Some(11), None),
    ])
    .await;
    set_queued(t, 13, "NULL").await;
    let hostile = match t.engine {
        Engine::Postgres => "'infinity'",
        Engine::Sqlite => "'not a time'",
    };
    set_queued(t, 14, hostile).await;
    p
}

fn now() -> DateTime<Utc> {
    base() + Duration::days(2)
}

async fn counts_demand_per_hour_of_the_week(t: TestDb) {
    let p = fill(&t, true).await;
    let since = now() - Duration::weeks(4);
    let h = t.db.arrival_history(&p, 90, since, now()).await.unwrap();
    assert_eq!(h.window_seconds(), 90);
    assert_eq!(h.buckets(), 168);
    assert_eq!((h.peak(9), h.peak(10)), (4, 1), "distinct projects");
    let others: u32 = (0..168)
        .filter(|&x| x != 9 && x != 10)
        .map(|x| h.peak(x))
        .sum();
    assert_eq!(others, 0);
    // Without build_latest every build is demand.
    let mut every = p.clone();
    every.build_latest = false;
    let h =
        t.db.arrival_history(&every, 90, since, now())
            .await
            .unwrap();
    assert_eq!((h.peak(9), h.peak(10)), (5, 1));
    // A window of an hour holds the whole 09:00 hour: 6 builds, 5 projects.
    let h = t.db.arrival_history(&p, 3600, since, now()).await.unwrap();
    assert_eq!(h.peak(9), 5);
    // A pool without builds: an empty history, not an error.
    let mac = WorkerPool::with_defaults(9, "none");
    assert!(t
        .db
        .arrival_history(&mac, 90, since, now())
        .await
        .unwrap()
        .is_empty());
    t.cleanup().await;
}

async fn cached_for_an_hour(t: TestDb) {
    let p = fill(&t, true).await;
    let mut cache = HistoryCache::new();
    assert_eq!(cache.get(&t.db, &p, 90, now()).await.unwrap().peak(9), 4);
    // A fifth project joins the 09:00 window.
    t.add_builds(&[(20, 7, "SUCCESS", Some(19), None)]).await;
    let at = autoscaler::demo::sql_time(&(base() + Duration::seconds(45)));
    set_queued(&t, 20, &at).await;
    let within = now() + HISTORY_MAX_AGE - Duration::seconds(1);
    assert_eq!(
        cache.get(&t.db, &p, 90, within).await.unwrap().peak(9),
        4,
        "read at most hourly"
    );
    // Counted differently: read again at once.
    assert_eq!(cache.get(&t.db, &p, 3600, within).await.unwrap().peak(9), 6);
    let later = now() + HISTORY_MAX_AGE + Duration::seconds(1);
    assert_eq!(cache.get(&t.db, &p, 90, later).await.unwrap().peak(9), 5);
    // A failed read returns the error (the caller plans without a history) and the next
    // read, once the database answers, works again.
    t.exec("ALTER TABLE builds RENAME TO builds_away;").await;
    let far = later + Duration::hours(2);
    let err = cache.get(&t.db, &p, 90, far).await.unwrap_err().to_string();
    assert!(
        err.starts_with("database: reading the arrival history:"),
        "{err}"
    );
    t.exec("ALTER TABLE builds_away RENAME TO builds;").await;
    assert_eq!(cache.get(&t.db, &p, 90, far).await.unwrap().peak(9), 5);
    cache.retain(&[]);
    t.cleanup().await;
}

db_test!(history_counts_demand_per_hour_of_the_week, |t: TestDb| {
    counts_demand_per_hour_of_the_week(t)
});
db_test!(history_is_cached_for_an_hour, |t: TestDb| {
    cached_for_an_hour(t)
});
