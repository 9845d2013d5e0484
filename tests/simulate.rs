//! `autoscaler simulate` against small traces worked out by hand, the shipped traces, the
//! command line (reports, plot, errors) and the database export.

mod common;

use autoscaler::planner::Planners;
use autoscaler::simulate::model::{self, BuildFate, ExecutorModel, Fleet, InstanceLife, Outcome};
use autoscaler::simulate::report::Metrics;
use autoscaler::simulate::trace::Trace;
use autoscaler_executor::WorkerPool;
use std::process::Command;

/// A trace from `(queued seconds, duration seconds, project)` rows, through the CSV parser.
fn trace(rows: &[(f64, f64, &str)]) -> Trace {
    let mut csv = String::from("queued_at,duration_seconds,project\n");
    for (q, d, p) in rows {
        csv += &format!("{q},{d},{p}\n");
    }
    Trace::parse(csv.as_bytes(), "test.csv").unwrap()
}

/// Boot `boot` s, `--sleep 20` without fast polls (so the cycles are easy to count by hand),
/// workers take builds at once, declarative, one worker each.
fn fleet(boot: i64) -> Fleet {
    Fleet {
        boot_ms: boot * 1000,
        workers_per_instance: 1,
        sleep_ms: 20_000,
        poll_ms: 0,
        worker_poll_ms: 0,
        executor: ExecutorModel::Declarative,
        max_step_up: None,
        resume_ms: 20_000,
        standby_cost: 0.05,
    }
}

fn pool() -> WorkerPool {
    WorkerPool::with_defaults(1, "sim")
}

fn run(t: &Trace, p: &WorkerPool, f: &Fleet) -> (Outcome, Metrics) {
    let planners = Planners::default();
    let o = model::simulate(t, p, f, &planners, true).unwrap();
    let m = Metrics::compute(
        p.planner.as_deref().unwrap_or("stock"),
        t,
        &o,
        f.workers_per_instance,
    );
    (o, m)
}

fn started(o: &Outcome) -> Vec<Option<i64>> {
    o.fates
        .iter()
        .map(|f| match f {
            BuildFate::Ran { start_ms, .. } => Some(start_ms / 1000),
            _ => None,
        })
        .collect()
}

fn life(launched: i64, ready: i64, gone: Option<i64>) -> InstanceLife {
    InstanceLife {
        launched_ms: launched * 1000,
        ready_ms: ready * 1000,
        gone_ms: gone.map(|g| g * 1000),
        standby_ms: 0,
    }
}

/// No instance may end while one of its builds runs.
fn assert_never_killed(t: &Trace, o: &Outcome) {
    for (b, fate) in t.builds.iter().zip(&o.fates) {
        if let BuildFate::Ran { start_ms, instance } = *fate {
            let i = o.instances[instance as usize];
            assert!(i.ready_ms <= start_ms, "started before its instance booted");
            if let Some(gone) = i.gone_ms {
                assert!(
                    gone >= start_ms + b.duration_ms,
                    "instance {instance} ended at {gone} ms while its build ran until {} ms",
                    start_ms + b.duration_ms
                );
            }
        }
    }
}

#[test]
fn one_build_waits_for_the_next_evaluation_plus_boot() {
    // Queued at 5 s; the loop evaluates at 0, 20, 40…: it is seen at 20 s, the instance boots
    // until 80 s. Wait = (20 - 5) + 60 = 75 s. It runs 100 s, until 180 s, when the cycle
    // scales the pool back to 0.
    let t = trace(&[(5.0, 100.0, "a")]);
    let (o, m) = run(&t, &pool(), &fleet(60));
    assert_eq!(started(&o), vec![Some(80)]);
    assert_eq!(o.instances, vec![life(20, 80, Some(180))]);
    assert_eq!(o.end_ms, 180_000);
    assert_eq!(
        (m.wait_p50_seconds, m.wait_p95_seconds, m.wait_max_seconds),
        (75.0, 75.0, 75.0)
    );
    assert_eq!((o.scale_out_events, o.scale_in_events), (1, 1));
    // Calls, as the engine makes them for a declarative executor: at 0 (never autoscaled), 20
    // (size 0 -> 1) and 180 (size 1 -> 0); the other cycles see the same size (at 80 only
    // queued_size changes, which a declarative executor does not use) and the timer is not due.
    assert_eq!(o.executor_calls, 3);
    assert_eq!(o.cycles, 10);
    assert_eq!(m.worker_hours, 0.044); // 160 s
    assert_eq!(m.lower_bound_worker_hours, 0.028); // 100 s
    assert_eq!(m.idle_fraction, 0.375); // 60 s of 160
    assert_eq!(m.boot_worker_hours, 0.017); // 60 s
    assert_never_killed(&t, &o);
}

#[test]
fn fast_polls_evaluate_a_declarative_pool_every_second() {
    // With the real loop's default poll_seconds = 1, the build queued at 5.3 s is seen by the
    // poll at 6 s: wait 0.7 + 60 s. It ends at 166 s; fast polls only scale out, so the idle
    // instance goes at the next full cycle, 180 s.
    let mut f = fleet(60);
    f.poll_ms = 1000;
    let t = trace(&[(5.3, 100.0, "a")]);
    let (o, m) = run(&t, &pool(), &f);
    assert_eq!(o.instances, vec![life(6, 66, Some(180))]);
    assert_eq!(m.wait_max_seconds, 60.7);
    // Evaluations at 0, 1, …, 180 s: full cycles and polls alike.
    assert_eq!(o.cycles, 181);
    // A shell executor keeps to the full cycles (and its timer).
    f.executor = ExecutorModel::Shell {
        max_builds: Some(1),
        max_wait_ms: None,
    };
    let (o, _) = run(&t, &pool(), &f);
    assert_eq!(o.instances, vec![life(600, 660, Some(760))]);
    assert_eq!(o.cycles, 39);
}

#[test]
fn a_polling_worker_waits_for_its_next_poll() {
    // Workers poll every 10 s from the moment they boot (at 0, with minimum 1 and a running
    // fleet at the floor): a build queued at 12 s is taken at the 20 s poll; the next one,
    // queued at 31 s while the worker is busy until 25 s… the worker sleeps 10 s after a
    // build, so it polls at 35 s and takes it then.
    let mut p = pool();
    p.minimum = 1;
    let mut f = fleet(60);
    f.worker_poll_ms = 10_000;
    let t = trace(&[(12.0, 5.0, "a"), (31.0, 5.0, "b")]);
    let (o, m) = run(&t, &p, &f);
    assert_eq!(started(&o), vec![Some(20), Some(35)]);
    assert_eq!(m.wait_max_seconds, 8.0);
    assert_eq!(o.instances, vec![life(0, 0, None)], "minimum 1 keeps it");
    assert_eq!(o.scale_out_events, 0);
}

#[test]
fn two_builds_one_worker() {
    // maximum 1: one instance, booted at 60 s; the second build waits for the first.
    let mut p = pool();
    p.maximum = 1;
    let t = trace(&[(0.0, 50.0, "a"), (0.0, 30.0, "b")]);
    let (o, m) = run(&t, &p, &fleet(60));
    assert_eq!(started(&o), vec![Some(60), Some(110)]);
    assert_eq!(o.instances, vec![life(0, 60, Some(140))]);
    assert_eq!(
        (m.wait_p50_seconds, m.wait_p95_seconds, m.wait_max_seconds),
        (60.0, 110.0, 110.0)
    );
    assert_eq!(m.wait_mean_seconds, 85.0);
    assert_eq!(m.peak_workers, 1);
}

#[test]
fn scale_in_drains_and_never_kills_a_running_build() {
    // running_weight 0: once both builds run the plan drops to 0, but both instances are busy,
    // so the executor holds them (and asks for a revisit) until each is idle at a cycle.
    let mut p = pool();
    p.running_weight = 0.0;
    let t = trace(&[(0.0, 50.0, "a"), (0.0, 130.0, "b")]);
    let (o, m) = run(&t, &p, &fleet(0));
    assert_eq!(started(&o), vec![Some(0), Some(0)]);
    assert_eq!(
        o.instances,
        vec![life(0, 0, Some(60)), life(0, 0, Some(140))]
    );
    assert_eq!(o.scale_in_events, 2);
    // 0 (launch 2), 20 (plan 0; both held, revisit), 40, 60 (one goes), 80..140 (revisits).
    assert_eq!(o.executor_calls, 8);
    assert_eq!(m.worker_hours, 0.056); // 200 s
    assert_never_killed(&t, &o);
}

#[test]
fn scale_in_removes_idle_instances_oldest_first() {
    // Three builds at 0 on a fleet that boots at once; the short one ends at 30 s; at 40 s
    // the plan is 2, so the idle instance (the first launched) goes, the busy ones stay.
    let t = trace(&[(0.0, 30.0, "a"), (0.0, 200.0, "b"), (0.0, 200.0, "c")]);
    let (o, _) = run(&t, &pool(), &fleet(0));
    assert_eq!(started(&o), vec![Some(0), Some(0), Some(0)]);
    assert_eq!(
        o.instances,
        vec![
            life(0, 0, Some(40)),
            life(0, 0, Some(200)),
            life(0, 0, Some(200))
        ]
    );
    assert_never_killed(&t, &o);
}

#[test]
fn scale_in_removes_a_booting_instance_before_an_idle_booted_one() {
    // minimum 2: I0 and I1 are up at 0. A (0 s, 300 s) runs on I0, B (0 s, 25 s) on I1.
    // C is queued at 10 while both are busy: the cycle at 20 plans 3 and launches I2 (ready
    // at 80). B ends at 25 and I1 takes C at once (25..30). The cycle at 40 plans 2: the
    // shared chooser removes I2, still booting and no longer needed, and keeps I1, idle but
    // ready; removing I1 (the oldest idle) would leave the pool waiting for I2's boot.
    let mut p = pool();
    p.minimum = 2;
    let t = trace(&[(0.0, 300.0, "a"), (0.0, 25.0, "b"), (10.0, 5.0, "c")]);
    let (o, _) = run(&t, &p, &fleet(60));
    assert_eq!(started(&o), vec![Some(0), Some(0), Some(25)]);
    assert_eq!(
        o.instances,
        vec![life(0, 0, None), life(0, 0, None), life(20, 80, Some(40))]
    );
    assert_never_killed(&t, &o);
}

#[test]
fn scale_in_with_builds_queued_removes_the_booting_instance_not_the_idle_one() {
    // The issue's case: builds still queued when the plan drops. minimum 1: I0 is up at 0 and
    // its worker polls every 30 s. A (0 s, 25 s) runs on I0 from its first poll at 0. B is
    // queued at 5: the cycle at 20 plans 2 and launches I1 (booting until 80). A ends at 25;
    // I0's worker sleeps until its poll at 55. The cycle at 40 sees B still QUEUED and plans
    // 1 (B's worker, none running): one of I0 (idle, booted) and I1 (booting) goes. The
    // shared chooser removes I1, and I0 takes B at 55 (wait 50 s); removing the idle I0
    // would have made B wait for I1's boot until 80 (wait 75 s) for the same cost.
    let mut p = pool();
    p.minimum = 1;
    let t = trace(&[(0.0, 25.0, "a"), (5.0, 100.0, "b")]);
    let mut f = fleet(60);
    f.worker_poll_ms = 30_000;
    let (o, m) = run(&t, &p, &f);
    assert_eq!(started(&o), vec![Some(0), Some(55)]);
    assert_eq!(o.instances, vec![life(0, 0, None), life(20, 80, Some(40))]);
    assert_eq!(m.wait_max_seconds, 50.0);
    assert_never_killed(&t, &o);
}

/// Planners with `[planners.warm]` set from `toml`.
fn warm(toml: &str) -> Planners {
    let mut sections = std::collections::BTreeMap::new();
    sections.insert("warm".to_string(), toml::from_str(toml).unwrap());
    Planners::from_config(&sections).unwrap()
}

#[test]
fn a_build_arriving_while_an_instance_is_suspended_waits_resume_plus_worker_poll() {
    // warm with a standby floor of 1, boot 60 s as the fleet's, resume 20 s, worker poll 10 s.
    // The cycle at 0 plans size 0 and standby 1: I0 boots (0..60, at the running price), then
    // waits in standby. A build is queued at 100, a cycle instant: plan 1, so I0 resumes,
    // ready at 120; its agent wakes mid-sleep and polls at 130. Wait = 20 + 10 = 30 s. The
    // standby target is unmet again, but I0 will come back to standby when its build ends:
    // only once that shortfall has lasted a boot (60 s, at the cycle at 160) does I1 boot
    // into standby.
    let planners = warm("boot_seconds = 60\nstandby_min = 1");
    let mut p = pool();
    p.planner = Some("warm".into());
    let t = trace(&[(100.0, 50.0, "a")]);
    let mut f = fleet(60);
    f.worker_poll_ms = 10_000;
    let o = model::simulate(&t, &p, &f, &planners, true).unwrap();
    assert_eq!(
        o.fates,
        vec![BuildFate::Ran {
            start_ms: 130_000,
            instance: 0
        }]
    );
    assert_eq!(o.resumes, 1);
    let i0 = o.instances[0];
    assert_eq!(
        (i0.launched_ms, i0.ready_ms, i0.standby_ms),
        (0, 60_000, 40_000)
    );
    assert_eq!(
        (o.instances[1].launched_ms, o.instances[1].ready_ms),
        (160_000, 220_000)
    );
    assert_eq!(o.instances.len(), 2, "one standby kept, no more");
    assert!(o.series.iter().any(|s| s.standby_workers == 1));
    let m = Metrics::compute("warm", &t, &o, 1);
    assert_eq!(m.wait_max_seconds, 30.0);
    assert!(m.standby_worker_hours > 0.0);
    let expect = m.worker_hours + 0.05 * m.standby_worker_hours;
    assert!((m.cost_worker_hours - expect).abs() < 0.002, "{m:?}");
    assert_never_killed(&t, &o);

    // A worker that takes builds at once waits the resume alone.
    f.worker_poll_ms = 0;
    let o = model::simulate(&t, &p, &f, &planners, false).unwrap();
    assert!(matches!(
        o.fates[0],
        BuildFate::Ran {
            start_ms: 120_000,
            instance: 0
        }
    ));

    // Without a standby the same build waits a boot (stock's rule, warm's size).
    let o = model::simulate(&t, &p, &f, &warm("boot_seconds = 60"), false).unwrap();
    assert!(matches!(
        o.fates[0],
        BuildFate::Ran {
            start_ms: 160_000,
            ..
        }
    ));
    assert_eq!(o.resumes, 0);
}

#[test]
fn standby_follows_the_history_and_never_exceeds_the_maximum() {
    // The uv week, learning from itself: warm holds standby, resumes it, and never has more
    // instances (running, booting or standby) than maximum.
    let t = Trace::load(&example("uv-2026w24.csv")).unwrap();
    let mut p = pool();
    p.maximum = 12;
    p.planner = Some("warm".into());
    let planners = warm("boot_seconds = 90\nstandby_max = 12");
    let mut f = fleet(90);
    f.worker_poll_ms = 10_000;
    let o = model::simulate_with_history(&t, &p, &f, &planners, true, Some(&t)).unwrap();
    assert!(o.resumes > 0);
    assert!(o
        .series
        .iter()
        .all(|s| s.provisioned_workers + s.standby_workers <= 12));
    assert!(o.series.iter().any(|s| s.standby_workers > 0));
    assert_never_killed(&t, &o);
    // No history: the floor (0), so no standby at all.
    let none = model::simulate_with_history(&t, &p, &f, &planners, true, None).unwrap();
    assert_eq!(none.resumes, 0);
    assert!(none.series.iter().all(|s| s.standby_workers == 0));
}

#[test]
fn workers_per_instance_round_up_and_cost_per_worker() {
    // 3 queued builds, 2 workers per instance: ceil(3/2) = 2 instances, 4 workers paid.
    let mut f = fleet(60);
    f.workers_per_instance = 2;
    let t = trace(&[(0.0, 100.0, "a"), (0.0, 100.0, "b"), (0.0, 100.0, "c")]);
    let (o, m) = run(&t, &pool(), &f);
    assert_eq!(started(&o), vec![Some(60), Some(60), Some(60)]);
    assert_eq!(
        o.instances,
        vec![life(0, 60, Some(160)), life(0, 60, Some(160))]
    );
    assert_eq!(m.worker_hours, 0.178); // 2 instances x 2 workers x 160 s = 640 s
    assert_eq!(m.lower_bound_worker_hours, 0.083); // 300 s
    assert_eq!(m.ratio_to_lower_bound, 2.133);
    assert_eq!(m.peak_workers, 4);
    assert_never_killed(&t, &o);
}

#[test]
fn workers_per_instance_never_exceed_the_maximum() {
    // maximum 5 with 2 workers per instance: at most 2 instances (floor(5/2)), as gce-mig.
    let mut p = pool();
    p.maximum = 5;
    let mut f = fleet(0);
    f.workers_per_instance = 2;
    let rows: Vec<(f64, f64, String)> = (0..9).map(|i| (0.0, 60.0, format!("p{i}"))).collect();
    let rows: Vec<(f64, f64, &str)> = rows.iter().map(|(q, d, p)| (*q, *d, p.as_str())).collect();
    let (o, m) = run(&trace(&rows), &p, &f);
    assert_eq!(m.peak_workers, 4);
    assert_eq!(o.instances.len(), 2);
    assert_eq!(m.ran, 9);
}

#[test]
fn build_latest_runs_the_oldest_and_aborts_the_other_queued_builds_of_its_project() {
    // Four builds at 0: three of project a, one of b. build_latest counts 2 distinct projects,
    // so 2 instances; the first worker takes a's oldest build and aborts a's other two
    // (Vespene's cleanup_extra_builds), the second takes b.
    let rows = [
        (0.0, 100.0, "a"),
        (0.0, 50.0, "a"),
        (0.0, 10.0, "b"),
        (0.0, 70.0, "a"),
    ];
    let t = trace(&rows);
    let (o, m) = run(&t, &pool(), &fleet(60));
    assert_eq!(o.instances.len(), 2);
    assert_eq!(
        o.fates,
        vec![
            BuildFate::Ran {
                start_ms: 60_000,
                instance: 0
            },
            BuildFate::Superseded { at_ms: 60_000 },
            BuildFate::Ran {
                start_ms: 60_000,
                instance: 1
            },
            BuildFate::Superseded { at_ms: 60_000 },
        ]
    );
    assert_eq!((m.ran, m.superseded), (2, 2));
    // Without build_latest every build is a worker's: 4 instances, all run.
    let mut p = pool();
    p.build_latest = false;
    let (o, m) = run(&t, &p, &fleet(60));
    assert_eq!((o.instances.len(), m.ran, m.superseded), (4, 4, 0));
}

#[test]
fn a_build_queued_after_its_projects_build_started_is_not_a_duplicate() {
    // b queued at 70 s, after a (same project) started at 60 s: both run.
    let t = trace(&[(0.0, 100.0, "x"), (70.0, 10.0, "x")]);
    let (o, m) = run(&t, &pool(), &fleet(60));
    assert_eq!(m.superseded, 0);
    // Seen at 80 s: boot until 140 s.
    assert_eq!(started(&o), vec![Some(60), Some(140)]);
}

#[test]
fn shell_executor_keeps_vespenes_timer() {
    // Non-declarative: called only when reevaluate_minutes (10) runs out. At 0 nothing is
    // queued; the build queued at 5 s is launched for at 600 s and starts at 660 s; its
    // worker exits after one build (--max-builds 1), ending the instance.
    let mut f = fleet(60);
    f.executor = ExecutorModel::Shell {
        max_builds: Some(1),
        max_wait_ms: Some(300_000),
    };
    let t = trace(&[(5.0, 100.0, "a")]);
    let (o, m) = run(&t, &pool(), &f);
    assert_eq!(started(&o), vec![Some(660)]);
    assert_eq!(o.instances, vec![life(600, 660, Some(760))]);
    assert_eq!(m.wait_max_seconds, 655.0);
    assert_eq!(o.executor_calls, 2);
    // The same with a declarative executor reacts at the next cycle.
    let (o, _) = run(&t, &pool(), &fleet(60));
    assert_eq!(started(&o), vec![Some(80)]);
}

#[test]
fn shell_workers_exit_after_idling() {
    // max-builds unlimited, max-wait 1 minute: the worker runs both builds (the second queued
    // 30 s after the first ended), then exits 60 s after its last build.
    let mut p = pool();
    p.reevaluate_minutes = 1;
    let mut f = fleet(0);
    f.executor = ExecutorModel::Shell {
        max_builds: None,
        max_wait_ms: Some(60_000),
    };
    let t = trace(&[(0.0, 10.0, "a"), (40.0, 10.0, "b")]);
    let (o, _) = run(&t, &p, &f);
    assert_eq!(started(&o), vec![Some(0), Some(40)]);
    assert_eq!(o.instances, vec![life(0, 0, Some(110))]);
}

#[test]
fn the_runaway_guard_limits_growth_per_cycle() {
    // max_step_up 2: one build gets an instance at 0; when five more arrive at 30 s the plan
    // of 6 grows by at most 2 over the last applied size per cycle: 3 at 40 s, 5 at 60 s,
    // 6 at 80 s. (After a restart nothing is applied yet, so only the maximum applies.)
    let mut f = fleet(0);
    f.max_step_up = Some(2);
    let mut rows: Vec<(f64, f64, String)> = vec![(0.0, 1000.0, "p0".into())];
    rows.extend((1..6).map(|i| (30.0, 1000.0, format!("p{i}"))));
    let rows: Vec<(f64, f64, &str)> = rows.iter().map(|(q, d, p)| (*q, *d, p.as_str())).collect();
    let (o, _) = run(&trace(&rows), &pool(), &f);
    let launched: Vec<i64> = o.instances.iter().map(|i| i.launched_ms / 1000).collect();
    assert_eq!(launched, vec![0, 40, 40, 60, 60, 80]);
}

#[test]
fn boot_aware_holds_capacity_for_the_next_build() {
    // Two builds 100 s apart. stock lets the first instance go at the first cycle after the
    // build ends, so the second build waits a whole boot; boot-aware (delay 300 s) keeps the
    // instance and the second build starts at once.
    let t = trace(&[(0.0, 30.0, "a"), (130.0, 30.0, "b")]);
    let (o, m) = run(&t, &pool(), &fleet(60));
    assert_eq!(started(&o), vec![Some(60), Some(200)]);
    assert_eq!(m.wait_max_seconds, 70.0);
    let mut sections = std::collections::BTreeMap::new();
    sections.insert(
        "boot-aware".to_string(),
        toml::from_str::<toml::Table>(
            "boot_seconds = 60\nscale_in_delay_seconds = 300\nlookahead = 0.0",
        )
        .unwrap(),
    );
    let planners = Planners::from_config(&sections).unwrap();
    let mut p = pool();
    p.planner = Some("boot-aware".into());
    let o = model::simulate(&t, &p, &fleet(60), &planners, false).unwrap();
    assert_eq!(started(&o), vec![Some(60), Some(130)]);
    // The instance went 300 s after the demand was last seen: the second build ran from
    // 130 s to 160 s, so the 140 s cycle was the last to see it, and 440 s the first cycle
    // 300 s after.
    assert_eq!(o.instances, vec![life(0, 60, Some(440))]);
}

#[test]
fn bad_settings_are_refused_naming_them() {
    let t = trace(&[(0.0, 1.0, "a")]);
    let mut p = pool();
    p.minimum = 5;
    p.maximum = 2;
    let err = model::simulate(&t, &p, &fleet(0), &Planners::default(), false).unwrap_err();
    assert_eq!(
        err.to_string(),
        "pool sim: minimum: 5 is greater than maximum 2"
    );
    let mut f = fleet(0);
    f.workers_per_instance = 4;
    let mut p = pool();
    p.maximum = 3;
    let err = model::simulate(&t, &p, &f, &Planners::default(), false).unwrap_err();
    assert!(err.to_string().contains("not one instance fits"), "{err}");
    p.planner = Some("magic".into());
    p.maximum = 10;
    let err = model::simulate(&t, &p, &fleet(0), &Planners::default(), false).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("pool sim: planner: unknown planner \"magic\""),
        "{err}"
    );
}

// ---- the shipped traces ----

fn example(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/traces")
        .join(name)
}

#[test]
fn shipped_traces_regenerate_byte_for_byte() {
    use autoscaler::simulate::generate::{generate, header_comments, TraceKind};
    for (kind, file) in [
        (TraceKind::Diurnal, "diurnal.csv"),
        (TraceKind::ReleaseDay, "release-day.csv"),
    ] {
        let mut out = Vec::new();
        generate(kind, 1)
            .write(&mut out, &header_comments(kind, 1))
            .unwrap();
        let shipped = std::fs::read(example(file)).unwrap();
        assert!(
            out == shipped,
            "{file} differs from `--generate {} --seed 1`",
            kind.name()
        );
    }
}

#[test]
fn the_real_uv_trace_parses_comment_and_header_included() {
    // A week of pushes to astral-sh/uv (see docs/simulate.md): a `#` comment line, then the
    // header, then RFC 3339 rows.
    let t = Trace::load(&example("uv-2026w24.csv")).unwrap();
    assert_eq!(t.builds.len(), 281);
    assert!(t.timestamps);
    assert_eq!(t.start.to_rfc3339(), "2026-06-08T00:50:36+00:00");
    let last = t.builds.last().unwrap().queued_ms;
    assert!(last > 6 * 86_400_000 && last < 7 * 86_400_000, "{last}");
    assert!(t.projects.contains(&"infra".to_string()));
    assert!(t
        .builds
        .iter()
        .all(|b| b.duration_ms > 0 && b.project.is_some()));
    let mut p = pool();
    p.maximum = 100;
    p.planner = Some("boot-aware".into());
    let (o, m) = run(&t, &p, &fleet(90));
    assert_eq!(m.ran + m.superseded, 281);
    assert!(!o.capped);
    assert_never_killed(&t, &o);
}

#[test]
fn a_day_simulates_well_under_a_second_and_never_kills_a_build() {
    let t = Trace::load(&example("diurnal.csv")).unwrap();
    let mut p = pool();
    p.maximum = 100;
    let mut f = fleet(90);
    f.worker_poll_ms = 10_000;
    f.poll_ms = 1000;
    for planner in ["stock", "boot-aware"] {
        p.planner = Some(planner.into());
        let (o, m) = run(&t, &p, &f);
        assert_never_killed(&t, &o);
        assert_eq!(m.ran + m.superseded, t.builds.len(), "{planner}");
        assert!(!m.capped);
        assert!(m.peak_workers <= 100);
        assert!(m.ratio_to_lower_bound >= 1.0);
    }
}

// ---- the command line ----

fn autoscaler() -> Command {
    Command::new(env!("CARGO_BIN_EXE_autoscaler"))
}

#[test]
fn json_report_is_stable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.csv");
    std::fs::write(&path, "queued_at,duration_seconds,project\n5,100,a\n").unwrap();
    let out = |extra: &[&str]| {
        let o = autoscaler()
            .args(["simulate", "--trace"])
            .arg(&path)
            .args([
                "--boot-seconds",
                "60",
                "--worker-poll-seconds",
                "0",
                "--report",
                "json",
                "--poll-seconds",
                "0",
            ])
            .args(extra)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };
    let a = out(&[]);
    assert_eq!(a, out(&[]), "same input, same bytes");
    let v: serde_json::Value = serde_json::from_str(&a).unwrap();
    let r = &v["results"][0];
    let expected = serde_json::json!({
        "planner": "stock", "builds": 1, "ran": 1, "superseded": 0, "never_started": 0,
        "wait_p50_seconds": 75.0, "wait_p95_seconds": 75.0, "wait_max_seconds": 75.0,
        "wait_mean_seconds": 75.0, "worker_hours": 0.044, "lower_bound_worker_hours": 0.028,
        "ratio_to_lower_bound": 1.6, "idle_fraction": 0.375, "boot_worker_hours": 0.017,
        "instances_launched": 1, "peak_workers": 1, "scale_out_events": 1, "scale_in_events": 1,
        "scale_events": 2, "executor_calls": 3, "cycles": 10, "simulated_hours": 0.05,
        "capped": false, "standby_worker_hours": 0.0, "cost_worker_hours": 0.044, "resumes": 0
    });
    assert_eq!(r, &expected);
    // Key order is the documented one.
    let keys: Vec<&str> = a
        .lines()
        .filter_map(|l| l.trim().strip_prefix('"').and_then(|l| l.split('"').next()))
        .collect();
    assert_eq!(&keys[..3], &["setup", "trace", "builds"]);
    assert_eq!(v["setup"]["pool"]["maximum"], 10);
    assert_eq!(v["setup"]["executor"], "declarative");
    // Two planners: two results, in the order asked.
    let two: serde_json::Value =
        serde_json::from_str(&out(&["--planner", "boot-aware", "--planner", "stock"])).unwrap();
    assert_eq!(two["results"][0]["planner"], "boot-aware");
    assert_eq!(two["results"][1]["planner"], "stock");
    // Every setting that changes the result is in `setup`, the planners' own included.
    assert_eq!(
        v["setup"]["planners"],
        serde_json::json!([{"name": "stock", "settings": null}])
    );
    assert_eq!(v["warnings"], serde_json::json!([]));
    assert_eq!(
        two["setup"]["planners"][0],
        serde_json::json!({"name": "boot-aware", "settings":
            {"boot_seconds": 90, "scale_in_delay_seconds": null, "lookahead": 0.0}})
    );
}

#[test]
fn standby_settings_are_in_setup_checked_and_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.csv");
    std::fs::write(&path, "queued_at,duration_seconds,project\n5,100,a\n").unwrap();
    let run = |extra: &[&str]| {
        autoscaler()
            .args([
                "simulate",
                "--report",
                "json",
                "--planner",
                "warm",
                "--trace",
            ])
            .arg(&path)
            .args(extra)
            .output()
            .unwrap()
    };
    let o = run(&[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let setup = &v["setup"];
    assert_eq!(
        (
            &setup["resume_seconds"],
            &setup["standby_cost"],
            &setup["history"]
        ),
        (
            &serde_json::json!(20.0),
            &serde_json::json!(0.05),
            &serde_json::json!("trace")
        )
    );
    assert_eq!(setup["planners"][0]["settings"]["resume_seconds"], 20);
    assert_eq!(setup["planners"][0]["settings"]["standby_max"], 40);
    assert_eq!(v["warnings"], serde_json::json!([]));
    // Another trace as history, or none.
    let o = run(&["--history"]);
    assert!(!o.status.success());
    let other = example("diurnal.csv");
    let o = run(&[
        "--history",
        other.to_str().unwrap(),
        "--resume-seconds",
        "30",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["setup"]["history"], other.to_str().unwrap());
    assert_eq!(
        v["warnings"][0],
        "--resume-seconds 30 differs from [planners.warm] resume_seconds = 20"
    );
    for (flag, value, message) in [
        (
            "--standby-cost",
            "1.5",
            "--standby-cost: must be a share of a running instance's price, 0 to 1, got 1.5",
        ),
        ("--standby-cost", "NaN", "--standby-cost: must be a share"),
        (
            "--resume-seconds",
            "-1",
            "--resume-seconds: must be a number of seconds, 0 or more",
        ),
        (
            "--history",
            "/nonexistent/h.csv",
            "--history: /nonexistent/h.csv",
        ),
    ] {
        let o = run(&[&format!("{flag}={value}")]);
        assert!(!o.status.success(), "{flag} {value}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(message), "{flag} {value}: {err}");
    }
}

#[test]
fn a_boot_time_that_differs_from_the_planners_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.csv");
    std::fs::write(&path, "queued_at,duration_seconds,project\n5,100,a\n").unwrap();
    let run = |boot: &str, report: &str| {
        let o = autoscaler()
            .args(["simulate", "--trace"])
            .arg(&path)
            .args([
                "--boot-seconds",
                boot,
                "--planner",
                "boot-aware",
                "--planner",
                "stock",
            ])
            .args(["--report", report])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        (
            String::from_utf8(o.stdout).unwrap(),
            String::from_utf8(o.stderr).unwrap(),
        )
    };
    let text = "--boot-seconds 300 differs from [planners.boot-aware] boot_seconds = 90";
    let (json, stderr) = run("300", "json");
    assert!(stderr.contains(&format!("warning: {text}")), "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["warnings"].as_array().unwrap().len(), 1, "{json}");
    assert!(v["warnings"][0].as_str().unwrap().starts_with(text));
    let (table, _) = run("300", "table");
    assert!(table.contains(&format!("warning: {text}")), "{table}");
    // Matching boot times: no warning anywhere.
    let (json, stderr) = run("90", "json");
    assert!(!stderr.contains("warning"), "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["warnings"], serde_json::json!([]));
}

#[test]
fn table_report_and_svg_plot() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("plot.svg");
    let o = autoscaler()
        .args(["simulate", "--trace"])
        .arg(example("release-day.csv"))
        .args([
            "--pool-settings",
            "maximum=60",
            "--planner",
            "stock",
            "--planner",
            "boot-aware",
            "--plot",
        ])
        .arg(&svg)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let table = String::from_utf8(o.stdout).unwrap();
    assert!(table.contains("wait p50 s"), "{table}");
    assert!(table.lines().any(|l| l.starts_with("stock ")), "{table}");
    assert!(
        table.lines().any(|l| l.starts_with("boot-aware ")),
        "{table}"
    );
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.starts_with("<svg"), "{}", &text[..100.min(text.len())]);
    assert!(text.trim_end().ends_with("</svg>"));
    assert!(text.len() > 20_000, "only {} bytes", text.len());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains(&format!(
            "wrote the plot of 2 planner(s) to {}",
            svg.display()
        )),
        "{stderr}"
    );
    for label in [
        "queued builds",
        "running builds",
        "capacity (booted workers)",
        "paid workers (booting included)",
        "standby workers (suspended or stopped)",
        "time (UTC), from",
        "stock on release-day.csv",
        "boot-aware on release-day.csv",
    ] {
        assert!(text.contains(label), "no {label:?} in the SVG");
    }
    // Lines with many points were drawn (one polyline per series per panel).
    assert!(text.matches("<polyline").count() >= 10);
    // Clock ticks on the time axis (the release day starts at midnight: 02:00, 04:00, …).
    let labels: Vec<&str> = regex_lite::Regex::new(r"<text[^>]*>\s*([^<]*?)\s*</text>")
        .unwrap()
        .captures_iter(&text)
        .map(|c| c.get(1).unwrap().as_str())
        .collect();
    for tick in ["00:00", "02:00", "12:00", "22:00"] {
        assert!(labels.contains(&tick), "no clock tick {tick}: {labels:?}");
    }
    // Whole-number counts on the y axis, rising within each panel, none printed twice (ticks
    // at 0.5 printed `0 0 1 1 2 2`).
    let numbers: Vec<u32> = labels.iter().filter_map(|l| l.parse().ok()).collect();
    assert!(numbers.len() >= 6, "{labels:?}");
    assert_eq!(
        numbers.iter().filter(|&&n| n == 0).count(),
        2,
        "{numbers:?}"
    );
    for w in numbers.windows(2) {
        assert!(w[1] > w[0] || w[1] == 0, "{numbers:?}");
    }
}

#[test]
fn csv_errors_name_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.csv");
    std::fs::write(
        &path,
        "# a comment\nqueued_at,duration_seconds,project\n0,10,a\n5,ten,b\n",
    )
    .unwrap();
    let o = autoscaler()
        .args(["simulate", "--trace"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8(o.stderr).unwrap();
    assert!(
        err.contains(&format!(
            "{}: line 4, column 2 (duration_seconds): \"ten\" is not a number of seconds",
            path.display()
        )),
        "{err}"
    );
}

#[test]
fn bad_flags_are_named() {
    let run = |args: &[&str]| {
        let o = autoscaler().arg("simulate").args(args).output().unwrap();
        (o.status.code(), String::from_utf8(o.stderr).unwrap())
    };
    let trace = example("diurnal.csv");
    let trace = trace.to_str().unwrap();
    let (code, err) = run(&["--trace", trace, "--pool-settings", "maximum=lots"]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("--pool-settings: maximum: \"lots\" is not an integer"),
        "{err}"
    );
    let (_, err) = run(&["--trace", trace, "--pool-settings", "maxmum=5"]);
    assert!(
        err.contains("--pool-settings: unknown key \"maxmum\""),
        "{err}"
    );
    let (_, err) = run(&["--trace", trace, "--pool-settings", "minimum=20"]);
    assert!(
        err.contains("pool simulated: minimum: 20 is greater than maximum 10"),
        "{err}"
    );
    let (_, err) = run(&["--trace", trace, "--worker-max-builds", "1"]);
    assert!(err.contains("apply to --executor shell only"), "{err}");
    let (_, err) = run(&["--trace", trace, "--planner", "magic"]);
    assert!(
        err.contains("unknown planner \"magic\" (known: stock, boot-aware, warm)"),
        "{err}"
    );
    let (code, err) = run(&[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--trace"), "{err}");
}

#[test]
fn generate_writes_the_shipped_trace() {
    let o = autoscaler()
        .args(["simulate", "--generate", "release-day", "--seed", "1"])
        .output()
        .unwrap();
    assert!(o.status.success());
    assert_eq!(o.stdout, std::fs::read(example("release-day.csv")).unwrap());
}

// ---- the database ----

use common::{Engine, TestDb};

/// A build fixture: (id, status, project, queued, started, ended), times in seconds.
type Fixture<'a> = (i64, &'a str, Option<i64>, i64, Option<i64>, Option<i64>);

async fn export_and_simulate(db: TestDb) {
    let mut p = WorkerPool::with_defaults(7, "linux");
    p.maximum = 3;
    p.reevaluate_minutes = 5;
    db.add_pool(&p).await;
    db.add_worker(1, "w1").await;
    // (id, status, project, queued, started, ended) in seconds after 2024-03-04 09:00 UTC.
    let rows: [Fixture; 6] = [
        (1, "SUCCESS", Some(11), 0, Some(30), Some(130)),
        (2, "FAILURE", Some(12), 10, Some(40), Some(100)),
        (3, "ABORTED", Some(11), 20, None, None), // superseded: never ran
        (4, "RUNNING", Some(13), 50, Some(60), None), // not finished
        (
            5,
            "SUCCESS",
            None,
            3600 * 30,
            Some(3600 * 30 + 5),
            Some(3600 * 30 + 65),
        ), // outside --until
        (6, "SUCCESS", Some(12), 60, Some(61), Some(91)),
    ];
    db.add_builds(
        &rows
            .iter()
            .map(|r| {
                (
                    r.0,
                    7,
                    r.1,
                    r.2,
                    if r.1 == "RUNNING" { Some(1) } else { None },
                )
            })
            .collect::<Vec<_>>(),
    )
    .await;
    let base = chrono::DateTime::parse_from_rfc3339("2024-03-04T09:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let ts = |s: Option<i64>| {
        s.map(|s| autoscaler::demo::sql_time(&(base + chrono::Duration::seconds(s))))
            .unwrap_or_else(|| "NULL".into())
    };
    let mut sql = String::new();
    for r in &rows {
        sql += &format!(
            "UPDATE builds SET queued_time = {}, start_time = {}, end_time = {} WHERE id = {};\n",
            ts(Some(r.3)),
            ts(r.4),
            ts(r.5),
            r.0
        );
    }
    db.exec(&sql).await;

    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("export.csv");
    let o = autoscaler()
        .args(["simulate", "--database-url", &db.url, "--export-trace"])
        .arg(&csv)
        .args([
            "--from-db",
            "linux",
            "--since",
            "2024-03-04",
            "--until",
            "2024-03-05T00:00:00Z",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stderr = String::from_utf8(o.stderr).unwrap();
    assert!(stderr.contains("wrote 3 builds of pool linux"), "{stderr}");
    assert!(stderr.contains("left out 2"), "{stderr}");
    let text = std::fs::read_to_string(&csv).unwrap();
    let body: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        body,
        vec![
            "queued_at,duration_seconds,project",
            "2024-03-04T09:00:00Z,100,11",
            "2024-03-04T09:00:10Z,60,12",
            "2024-03-04T09:01:00Z,30,12",
        ]
    );

    // Simulate the export with the pool's own settings from the database.
    let o = autoscaler()
        .args([
            "simulate",
            "--database-url",
            &db.url,
            "--from-db",
            "linux",
            "--report",
            "json",
            "--trace",
        ])
        .arg(&csv)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["setup"]["pool"]["name"], "linux");
    assert_eq!(v["setup"]["pool"]["maximum"], 3);
    assert_eq!(v["setup"]["pool"]["reevaluate_minutes"], 5);
    assert_eq!(v["setup"]["start"], "2024-03-04T09:00:00+00:00");
    // Builds 2 and 6 are both project 12 and both queued when a worker takes 2 at 110 s
    // (boot 90 s after the 20 s cycle): build_latest aborts 6.
    assert_eq!(v["results"][0]["ran"], 2);
    assert_eq!(v["results"][0]["superseded"], 1);

    // A pool that does not exist is named.
    let o = autoscaler()
        .args([
            "simulate",
            "--database-url",
            &db.url,
            "--from-db",
            "nope",
            "--trace",
        ])
        .arg(&csv)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no worker pool named \"nope\""));
    db.cleanup().await;
}

#[tokio::test]
async fn export_trace_from_postgres() {
    export_and_simulate(TestDb::new(Engine::Postgres).await).await;
}

#[tokio::test]
async fn export_trace_from_sqlite() {
    export_and_simulate(TestDb::new(Engine::Sqlite).await).await;
}

/// Issue 12 item 13: the simulator neither runs away nor exhausts memory: a two-row trace with a
/// mistyped year (2204) is simulated in bounded time, and a plan of two billion workers is
/// refused with a message instead of modelled.
#[test]
fn a_mistyped_year_and_a_huge_plan_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("t.csv");
    std::fs::write(
        &csv,
        "queued_at,duration_seconds\n2024-03-04T09:00:00Z,60\n2204-03-04T09:00:00Z,60\n",
    )
    .unwrap();
    let run = |extra: &[&str]| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_autoscaler"))
            .args([
                "simulate",
                "--trace",
                csv.to_str().unwrap(),
                "--report",
                "json",
            ])
            .args(extra)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let start = std::time::Instant::now();
        while child.try_wait().unwrap().is_none() {
            if start.elapsed() > std::time::Duration::from_secs(120) {
                let _ = child.kill();
                panic!("simulate {extra:?} still running after 120 s");
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        child.wait_with_output().unwrap()
    };
    let out = run(&[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["results"][0]["ran"], 2, "{report}");
    let out = run(&["--pool-settings", "maximum=2147483647,multiplier=1e308"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr
            .contains("more than 1000000 instances over the simulation, more than the model holds"),
        "{stderr}"
    );
}
