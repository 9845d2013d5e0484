//! The warm planner on hand-made histories and pools.

use super::*;
use crate::planner::{Counts, Planners};
use proptest::prelude::*;

fn at(s: i64) -> DateTime<Utc> {
    // Monday 2024-03-04 00:00 UTC.
    DateTime::from_timestamp(1_709_510_400 + s, 0).unwrap()
}

fn standby(w: &Warm, pool: &WorkerPool, now: DateTime<Utc>, st: &mut PlannerState) -> u32 {
    let input = PlanInput {
        pool,
        counts: Counts::default(),
        now,
    };
    let plan = w.plan(&input, st);
    w.standby(&input, st, &plan)
}

#[test]
fn hours_of_the_week_start_on_monday() {
    assert_eq!(hour_of_week(at(0)), 0);
    assert_eq!(hour_of_week(at(3599)), 0);
    assert_eq!(hour_of_week(at(3600 * 25)), 25);
    assert_eq!(hour_of_week(at(-1)), 167, "Sunday 23:xx");
    assert!(hour_of_week(DateTime::<Utc>::MIN_UTC) < 168);
    assert!(hour_of_week(DateTime::<Utc>::MAX_UTC) < 168);
}

#[test]
fn history_counts_demand_per_window_and_keeps_the_peak() {
    // Monday 09:00: 3 builds of one project and 2 of others in the window [09:00, 09:01:30);
    // a week later in the same hour, 2 in one window. Monday 10:00: one build.
    let nine = 9 * 3600;
    let week = 7 * 86_400;
    let arrivals = [
        (at(nine), 1),
        (at(nine + 10), 1),
        (at(nine + 20), 1),
        (at(nine + 30), 2),
        (at(nine + 89), 3),
        (at(nine + 90), 4), // the next window
        (at(week + nine + 5), 5),
        (at(week + nine + 6), 6),
        (at(10 * 3600 + 1), 7),
    ];
    let h = ArrivalHistory::from_arrivals(90, arrivals);
    assert_eq!(h.peak(9), 3, "3 distinct keys in the first window");
    assert_eq!(h.peak(10), 1);
    assert_eq!(h.peak(11), 0);
    assert_eq!(h.buckets(), HOURS_PER_WEEK);
}

#[test]
fn standby_follows_the_hour_and_looks_one_boot_ahead() {
    let mut h = ArrivalHistory::new(90);
    h.record(9, 4);
    let w = Warm::new(WarmConfig::default());
    let mut pool = WorkerPool::with_defaults(1, "p");
    pool.maximum = 50;
    let mut st = PlannerState {
        history: Some(h),
        ..Default::default()
    };
    assert_eq!(standby(&w, &pool, at(8 * 3600), &mut st), 0);
    st.standby_hold = None;
    // 08:59: one boot from now is 09:00:30.
    assert_eq!(standby(&w, &pool, at(9 * 3600 - 60), &mut st), 4);
    assert_eq!(standby(&w, &pool, at(9 * 3600 + 1800), &mut st), 4);
    assert_eq!(standby(&w, &pool, at(10 * 3600 + 1), &mut st), 0);
    // Weights scale it as they scale the size; the maximum caps size + standby.
    pool.queued_weight = 2.0;
    assert_eq!(standby(&w, &pool, at(9 * 3600), &mut st), 8);
    pool.maximum = 5;
    assert_eq!(standby(&w, &pool, at(9 * 3600), &mut st), 5);
}

#[test]
fn a_dropping_standby_target_is_held_for_the_hold() {
    // Hour 9 wants 4, hour 10 nothing; a hold of 30 min.
    let mut h = ArrivalHistory::new(90);
    h.record(9, 4);
    let w = Warm::new(WarmConfig {
        standby_hold_seconds: 1800,
        ..WarmConfig::default()
    });
    let mut pool = WorkerPool::with_defaults(1, "p");
    pool.maximum = 50;
    let mut st = PlannerState {
        history: Some(h),
        ..Default::default()
    };
    let ten = 10 * 3600;
    assert_eq!(standby(&w, &pool, at(ten - 100), &mut st), 4);
    assert_eq!(standby(&w, &pool, at(ten + 1000), &mut st), 4, "held");
    assert_eq!(standby(&w, &pool, at(ten - 100 + 1799), &mut st), 4, "held");
    assert_eq!(
        standby(&w, &pool, at(ten - 100 + 1800), &mut st),
        0,
        "released"
    );
    // A rise is never held back; a clock that went backwards ends the hold.
    assert_eq!(standby(&w, &pool, at(ten - 60), &mut st), 4);
    assert_eq!(standby(&w, &pool, at(ten - 7200), &mut st), 0);
    // The hold never keeps more than the maximum leaves room for.
    assert_eq!(standby(&w, &pool, at(ten - 60), &mut st), 4);
    pool.maximum = 2;
    assert_eq!(standby(&w, &pool, at(ten + 60), &mut st), 2);
    let w = Warm::new(WarmConfig::default());
    pool.maximum = 50;
    st.standby_hold = None;
    assert_eq!(standby(&w, &pool, at(ten - 60), &mut st), 4);
    assert_eq!(standby(&w, &pool, at(ten + 60), &mut st), 0, "no hold");
}

#[test]
fn per_pool_bounds_and_bad_settings() {
    let t: toml::Table = toml::from_str(
        "standby_max = 3\n[pools.linux]\nstandby_min = 2\n[pools.mac]\nstandby_max = 0",
    )
    .unwrap();
    let w = Warm::from_table(&t).unwrap();
    let mut pool = WorkerPool::with_defaults(1, "linux");
    pool.maximum = 50;
    let mut st = PlannerState::default();
    assert_eq!(standby(&w, &pool, at(0), &mut st), 2, "the pool's floor");
    let mut h = ArrivalHistory::new(90);
    h.record(0, 9);
    st.history = Some(h);
    assert_eq!(
        standby(&w, &pool, at(0), &mut st),
        3,
        "the section's ceiling"
    );
    pool.name = "mac".into();
    assert_eq!(standby(&w, &pool, at(0), &mut st), 0, "the pool's ceiling");
    for (text, message) in [
        (
            "standby_min = 4\nstandby_max = 3",
            "standby_min (4) is greater than standby_max (3)",
        ),
        (
            "[pools.x]\nstandby_min = 41",
            "pools.x: standby_min (41) is greater than standby_max (40)",
        ),
        ("coverage = -1.0", "coverage: must be between 0 and 4"),
        ("lookahead = 9.0", "lookahead: must be between 0 and 4"),
        ("boot_seconds = 0", "boot_seconds: must be at least 1"),
        ("standby = 3", "unknown field `standby`"),
        ("[pools.x]\nfloor = 1", "unknown field `floor`"),
    ] {
        let t: toml::Table = toml::from_str(text).unwrap();
        let err = Warm::from_table(&t).err().unwrap();
        assert!(err.contains(message), "{text}: {err}");
    }
}

#[test]
fn registered_as_a_planner() {
    let mut sections = BTreeMap::new();
    sections.insert(
        "warm".to_string(),
        toml::from_str::<toml::Table>("boot_seconds = 120\nstandby_max = 4").unwrap(),
    );
    let planners = Planners::from_config(&sections).unwrap();
    assert_eq!(planners.names(), vec!["stock", "boot-aware", "warm"]);
    let mut pool = WorkerPool::with_defaults(1, "p");
    pool.planner = Some("warm".into());
    let p = planners.lookup(&pool).unwrap();
    assert_eq!(p.boot_seconds(), Some(120));
    assert_eq!(p.settings()["standby_max"], 4);
    sections.insert(
        "warm".to_string(),
        toml::from_str::<toml::Table>("standby_min = 5\nstandby_max = 4").unwrap(),
    );
    let err = Planners::from_config(&sections).err().unwrap().to_string();
    assert!(err.starts_with("[planners.warm]: standby_min (5)"), "{err}");
}

fn settings() -> impl Strategy<Value = (WorkerPool, WarmConfig)> {
    (
        0..20i32,
        0..60i32,
        0.0..4.0f64,
        0.0..3.0f64,
        0u32..8,
        0u32..30,
        0.0..2.0f64,
    )
        .prop_map(|(min, span, qw, m, lo, extra, coverage)| {
            let mut p = WorkerPool::with_defaults(1, "p");
            p.minimum = min;
            p.maximum = min + span;
            p.queued_weight = qw;
            p.multiplier = m;
            let c = WarmConfig {
                standby_min: lo,
                standby_max: lo + extra,
                coverage,
                ..WarmConfig::default()
            };
            (p, c)
        })
}

/// A run of cycles: (seconds since the previous cycle, queued, running).
fn cycles() -> impl Strategy<Value = Vec<(i64, u64, u64)>> {
    proptest::collection::vec((1i64..4000, 0u64..80, 0u64..80), 1..40)
}

proptest! {
    #[test]
    fn standby_stays_within_its_bounds_and_the_maximum(
        (pool, config) in settings(), run in cycles(),
        peaks in proptest::collection::vec((0usize..200, any::<u32>()), 0..50),
        start in -1_000_000_000i64..1_000_000_000,
    ) {
        let mut h = ArrivalHistory::new(config.boot_seconds);
        for (hour, n) in peaks {
            h.record(hour, n);
        }
        prop_assert_eq!(h.buckets(), HOURS_PER_WEEK, "state bounded: 168 buckets");
        let (lo, hi) = (config.standby_min, config.standby_max);
        let w = Warm::new(config);
        let mut st = PlannerState { history: Some(h), ..Default::default() };
        let mut t = start;
        for (dt, q, r) in run {
            t += dt;
            let input = PlanInput {
                pool: &pool,
                counts: Counts { queued: q, queued_projects: q, running: r },
                now: at(t),
            };
            let plan = w.plan(&input, &mut st);
            let s = w.standby(&input, &mut st, &plan);
            prop_assert!(plan.size as i32 >= pool.minimum && plan.size as i32 <= pool.maximum);
            prop_assert!(s <= hi, "standby {s} above its ceiling {hi}");
            prop_assert!(i64::from(plan.size) + i64::from(s) <= i64::from(pool.maximum));
            let room = (pool.maximum as u32).saturating_sub(plan.size);
            prop_assert!(s >= lo.min(room), "standby {s} below its floor {lo} (room {room})");
            prop_assert_eq!(st.history.as_ref().map(|h| h.buckets()), Some(HOURS_PER_WEEK));
        }
    }

    #[test]
    fn no_history_holds_the_floor((pool, config) in settings(), run in cycles()) {
        let lo = config.standby_min;
        let w = Warm::new(config.clone());
        let boot_aware = BootAware::new(BootAwareConfig {
            boot_seconds: config.boot_seconds,
            scale_in_delay_seconds: Some(config.resume_seconds),
            lookahead: config.lookahead,
        });
        let (mut st, mut st_ba) = (PlannerState::default(), PlannerState::default());
        let mut t = 0;
        for (dt, q, r) in run {
            t += dt;
            let input = PlanInput {
                pool: &pool,
                counts: Counts { queued: q, queued_projects: q, running: r },
                now: at(t),
            };
            let plan = w.plan(&input, &mut st);
            prop_assert_eq!(plan, boot_aware.plan(&input, &mut st_ba), "size as boot-aware's");
            let room = (pool.maximum as u32).saturating_sub(plan.size);
            prop_assert_eq!(w.standby(&input, &mut st, &plan), lo.min(room));
        }
    }
}

#[test]
fn no_history_and_default_settings_hold_none() {
    let w = Warm::new(WarmConfig::default());
    let pool = WorkerPool::with_defaults(1, "p");
    let mut st = PlannerState::default();
    for t in [0, 3600 * 9, 86_400 * 3] {
        assert_eq!(standby(&w, &pool, at(t), &mut st), 0);
    }
    // An empty history is no history.
    st.history = Some(ArrivalHistory::new(90));
    assert_eq!(standby(&w, &pool, at(3600 * 9), &mut st), 0);
    assert!(st.history.as_ref().unwrap().is_empty());
}
