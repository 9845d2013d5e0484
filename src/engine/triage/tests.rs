//! Table tests of [`triage`]: rows, locks, counts and memory in, the cycle plan out, with no
//! database and no backend call.

use super::*;
use crate::engine::Registry;
use async_trait::async_trait;
use autoscaler_executor::{Outcome, ScaleRequest};

/// A backend that is never called here: triage only looks it up, asks whether it is
/// declarative, and validates.
struct Backend {
    name: &'static str,
    declarative: bool,
}

#[async_trait]
impl Executor for Backend {
    fn name(&self) -> &'static str {
        self.name
    }
    fn declarative(&self) -> bool {
        self.declarative
    }
    async fn scale(&self, _request: ScaleRequest<'_>) -> Result<Outcome, ExecutorError> {
        panic!("triage never calls an executor")
    }
}

fn registry() -> Registry {
    let mut r = Registry::default();
    r.register(Arc::new(Backend {
        name: "shell",
        declarative: false,
    }));
    r.register(Arc::new(Backend {
        name: "gce-mig",
        declarative: true,
    }));
    r
}

fn pool(id: i64, name: &str, executor: &str) -> WorkerPool {
    let mut p = WorkerPool::with_defaults(id, name);
    p.autoscaling_enabled = true;
    p.executor = Some(executor.into());
    p.executor_command = "echo {{ size }}".into();
    p
}

fn unreadable(id: Option<i64>, name: &str) -> UnreadablePool {
    UnreadablePool {
        id,
        name: Some(name.into()),
        executor: None,
        column: "multiplier",
        reason: "not a number".into(),
    }
}

/// One case: the facts, and what triage makes of them.
struct Case {
    names: Vec<&'static str>,
    pools: Vec<WorkerPool>,
    unreadable: Vec<UnreadablePool>,
    /// Pool ids this process does NOT hold (all others are held).
    held_elsewhere: Vec<i64>,
    counts: Vec<(i64, Counts)>,
    force: bool,
    scope: Scope,
}

impl Default for Case {
    fn default() -> Self {
        Case {
            names: vec![],
            pools: vec![],
            unreadable: vec![],
            held_elsewhere: vec![],
            counts: vec![],
            force: false,
            scope: Scope::All,
        }
    }
}

fn run(case: Case, memory: &mut HashMap<i64, Memory>) -> CyclePlan {
    let names: Vec<String> = case.names.iter().map(|s| s.to_string()).collect();
    let mut rows = Rows {
        pools: case.pools,
        unreadable: case
            .unreadable
            .into_iter()
            .map(|u| (u.name.clone().unwrap_or_default(), u))
            .collect(),
    };
    let registry = registry();
    let names = rows.in_scope(&names, case.scope, &registry);
    let held: HashSet<i64> = rows
        .pools
        .iter()
        .map(|p| p.id)
        .chain(rows.unreadable.values().filter_map(|u| u.id))
        .filter(|id| !case.held_elsewhere.contains(id))
        .collect();
    let counts: HashMap<i64, Counts> = case.counts.into_iter().collect();
    let planners = Planners::default();
    let facts = Facts {
        names: &names,
        rows: &rows,
        held: &held,
        counts: &counts,
        now: Utc::now(),
        force: case.force,
        scope: case.scope,
    };
    let rules = Rules {
        planners: &planners,
        registry: &registry,
        max_step_up: None,
    };
    triage(&facts, &rules, memory)
}

/// What each entry came to, in words, to compare whole plans at a glance.
fn summary(plan: &CyclePlan) -> Vec<(String, String)> {
    plan.entries
        .iter()
        .map(|e| {
            let what = match &e.state {
                State::Pending => "pending".to_string(),
                State::Decided(PoolResult::Missing) => "missing".into(),
                State::Decided(PoolResult::Disabled) => "disabled".into(),
                State::Decided(PoolResult::HeldElsewhere) => "held_elsewhere".into(),
                State::Decided(PoolResult::NotDue { plan, .. }) => {
                    format!("not_due size={}", plan.size)
                }
                State::Decided(PoolResult::Failed { status, kind, .. }) => {
                    format!("failed {kind} {status}")
                }
                State::Decided(other) => format!("{other:?}"),
            };
            (e.name.clone(), what)
        })
        .collect()
}

fn counts(queued: u64, running: u64) -> Counts {
    Counts {
        queued,
        queued_projects: queued,
        running,
    }
}

#[test]
fn each_named_pool_gets_one_decision_in_order() {
    let mut disabled = pool(3, "windows", "shell");
    disabled.autoscaling_enabled = false;
    let plan = run(
        Case {
            names: vec!["linux", "bad", "arm", "windows", "mac", "linux"],
            pools: vec![pool(1, "linux", "shell"), disabled, pool(4, "mac", "shell")],
            unreadable: vec![unreadable(Some(2), "bad")],
            held_elsewhere: vec![4],
            counts: vec![(1, counts(3, 1))],
            force: true,
            ..Case::default()
        },
        &mut HashMap::new(),
    );
    assert_eq!(
        summary(&plan),
        [
            ("linux", "pending"),
            ("bad", "failed config 2"),
            ("arm", "missing"),
            ("windows", "disabled"),
            ("mac", "held_elsewhere"),
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    // The pool named twice is one job; the unreadable row's status is written (we hold it).
    assert_eq!(plan.jobs.len(), 1);
    assert_eq!((plan.jobs[0].index, plan.jobs[0].plan.size), (0, 4));
    assert_eq!(plan.settings_failures, vec![(2, 2)]);
    assert_eq!(plan.entries[0].executor.as_deref(), Some("shell"));
    assert_eq!(plan.entries[1].executor, None);
}

#[test]
fn an_unreadable_row_is_written_only_when_this_process_holds_it() {
    let plan = run(
        Case {
            names: vec!["bad", "nameless"],
            unreadable: vec![unreadable(Some(7), "bad"), unreadable(None, "nameless")],
            held_elsewhere: vec![7],
            ..Case::default()
        },
        &mut HashMap::new(),
    );
    assert_eq!(
        summary(&plan)
            .iter()
            .map(|s| s.1.as_str())
            .collect::<Vec<_>>(),
        ["failed config 2", "failed config 2"]
    );
    assert!(
        plan.settings_failures.is_empty(),
        "{:?}",
        plan.settings_failures
    );
    match &plan.entries[0].state {
        State::Decided(PoolResult::Failed { error, .. }) => {
            assert!(error.contains("multiplier"), "{error}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_pool_without_counts_is_planned_on_an_empty_queue() {
    let mut p = pool(1, "linux", "shell");
    p.minimum = 2;
    let plan = run(
        Case {
            names: vec!["linux"],
            pools: vec![p],
            force: true,
            ..Case::default()
        },
        &mut HashMap::new(),
    );
    assert_eq!(plan.jobs.len(), 1);
    assert_eq!(plan.jobs[0].counts, Counts::default());
    // No queue: the pool's minimum, not a failure and not a skipped pool.
    assert_eq!(plan.jobs[0].plan.size, 2);
}

#[test]
fn a_bad_setting_fails_its_pool_alone_and_is_recorded() {
    let plan = run(
        Case {
            names: vec!["typo", "linux"],
            pools: vec![pool(1, "typo", "shel"), pool(2, "linux", "shell")],
            force: true,
            ..Case::default()
        },
        &mut HashMap::new(),
    );
    assert_eq!(summary(&plan)[0].1, "failed config 2");
    assert_eq!(summary(&plan)[1].1, "pending");
    assert_eq!(plan.settings_failures, vec![(1, 2)]);
}

#[test]
fn not_due_without_force_until_the_timer_runs_out() {
    let mut p = pool(1, "linux", "shell");
    p.last_autoscaled = Some(Utc::now());
    p.reevaluate_minutes = 10;
    let case = || Case {
        names: vec!["linux"],
        pools: vec![p.clone()],
        counts: vec![(1, counts(2, 0))],
        ..Case::default()
    };
    let plan = run(case(), &mut HashMap::new());
    assert_eq!(summary(&plan)[0].1, "not_due size=2");
    assert!(plan.jobs.is_empty());
    let forced = run(
        Case {
            force: true,
            ..case()
        },
        &mut HashMap::new(),
    );
    assert_eq!(summary(&forced)[0].1, "pending");
}

#[test]
fn the_memory_of_a_failed_pool_keeps_it_out_of_fast_polls_only() {
    let mut failed = Memory::default();
    failed.failed = true;
    let mut memory = HashMap::from([(1, failed)]);
    let p = pool(1, "mig", "gce-mig");
    let case = |scope| Case {
        names: vec!["mig"],
        pools: vec![p.clone()],
        counts: vec![(1, counts(3, 0))],
        scope,
        ..Case::default()
    };
    // A fast poll: a failed declarative pool waits for the next full cycle.
    let poll = run(case(Scope::Declarative), &mut memory);
    assert_eq!(
        summary(&poll),
        [("mig".to_string(), "not_due size=3".to_string())]
    );
    // A full cycle: its never-applied plan differs from nothing applied, so it is called.
    let full = run(case(Scope::All), &mut memory);
    assert_eq!(summary(&full)[0].1, "pending");
    // Without the failure, the fast poll scales out at once.
    memory.get_mut(&1).unwrap().failed = false;
    let poll = run(case(Scope::Declarative), &mut memory);
    assert_eq!(summary(&poll)[0].1, "pending");
}

#[test]
fn a_fast_poll_looks_at_enabled_declarative_pools_only() {
    let mut off = pool(3, "off", "gce-mig");
    off.autoscaling_enabled = false;
    let plan = run(
        Case {
            names: vec!["shell", "bad", "off", "mig"],
            pools: vec![pool(1, "shell", "shell"), pool(2, "mig", "gce-mig"), off],
            unreadable: vec![unreadable(Some(9), "bad")],
            counts: vec![(2, counts(1, 0))],
            scope: Scope::Declarative,
            ..Case::default()
        },
        &mut HashMap::new(),
    );
    assert_eq!(summary(&plan), [("mig".to_string(), "pending".to_string())]);
    assert!(plan.settings_failures.is_empty());
}

#[test]
fn only_enabled_pools_held_here_are_counted() {
    let mut off = pool(2, "off", "shell");
    off.autoscaling_enabled = false;
    let rows = Rows {
        pools: vec![pool(1, "a", "shell"), off, pool(3, "c", "shell")],
        unreadable: HashMap::new(),
    };
    let names: Vec<String> = ["a", "off", "c", "zz"].map(String::from).to_vec();
    let held: HashSet<i64> = [1, 2].into_iter().collect();
    let ids: Vec<i64> = rows.to_plan(&names, &held).iter().map(|p| p.id).collect();
    assert_eq!(ids, [1]);
}
