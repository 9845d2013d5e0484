use super::*;
use chrono::{Duration, TimeZone};
use proptest::prelude::*;

fn t(min: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0).unwrap() + Duration::minutes(min)
}

fn inst(id: &str, created: i64, state: CandidateState) -> Candidate {
    Candidate {
        id: id.into(),
        names: vec![
            id.into(),
            format!("{id}.c.proj.internal"),
            format!("10.0.0.{}", created.rem_euclid(250)),
        ],
        created: Some(t(created)),
        state,
        agent: false,
        drain: Drain::None,
    }
}

fn ready(id: &str, created: i64) -> Candidate {
    inst(id, created, CandidateState::Ready)
}

fn busy(host: Option<&str>, build: i64, started: i64) -> BusyWorker {
    BusyWorker {
        hostname: host.map(str::to_string),
        build_id: build,
        started: Some(t(started)),
    }
}

fn ask(reduction: u32, c: &[Candidate], b: &[BusyWorker]) -> ScaleInChoice {
    choose(&ScaleInRequest {
        reduction,
        candidates: c,
        busy: b,
        unassigned_grace: Some(Duration::minutes(10)),
        require_agent: false,
        now: t(100),
    })
}

fn removed(c: &ScaleInChoice) -> Vec<&str> {
    c.removals().map(|(id, _)| id).collect()
}

#[test]
fn booting_first_newest_first_then_idle_oldest_first() {
    let c = vec![
        ready("old", 1),
        ready("mid", 5),
        inst("boot-a", 50, CandidateState::Booting),
        inst("boot-b", 60, CandidateState::Booting),
        ready("new", 9),
    ];
    let got = ask(4, &c, &[]);
    assert_eq!(removed(&got), vec!["boot-b", "boot-a", "old", "mid"]);
    assert_eq!(got.actions[0].1, Action::Remove(RemoveReason::Booting));
    assert_eq!(got.actions[2].1, Action::Remove(RemoveReason::Idle));
    assert!(!got.unfinished());
}

#[test]
fn a_busy_instance_is_never_removed_and_is_reported_held() {
    let c = vec![ready("a", 1), ready("b", 2)];
    let got = ask(2, &c, &[busy(Some("a"), 7, 30)]);
    assert_eq!(removed(&got), vec!["b"]);
    assert_eq!(
        got.held,
        vec![(
            "a".to_string(),
            HoldReason::Busy {
                build_id: 7,
                worker: "a".into()
            }
        )]
    );
    assert!(got.unfinished());
}

#[test]
fn fqdn_short_name_and_ip_reports_all_match() {
    let c = vec![ready("a", 1), ready("b", 2), ready("z", 3)];
    let b = vec![
        busy(Some("A.c.proj.internal."), 1, 30),
        busy(Some("10.0.0.2"), 2, 30),
    ];
    let got = ask(3, &c, &b);
    assert_eq!(removed(&got), vec!["z"]);
}

#[test]
fn a_build_with_no_worker_yet_holds_every_instance() {
    // Vespene saves RUNNING, then the worker: in between, the build is on some instance.
    let c = vec![ready("a", 1), inst("boot", 50, CandidateState::Booting)];
    let got = ask(2, &c, &[busy(None, 9, 99)]);
    assert!(removed(&got).is_empty());
    assert_eq!(
        got.blocker,
        Some(Blocker::Unassigned { build_ids: vec![9] })
    );
    assert!(got.unfinished());
}

#[test]
fn an_unassigned_row_past_the_grace_is_stale_and_ignored() {
    let c = vec![ready("a", 1)];
    let got = ask(1, &c, &[busy(None, 9, 10)]);
    assert_eq!(removed(&got), vec!["a"]);
    assert_eq!(got.ignored.len(), 1);
}

#[test]
fn a_busy_worker_matching_no_instance_blocks_the_scale_in() {
    let c = vec![ready("a", 1), ready("b", 2)];
    let got = ask(1, &c, &[busy(Some("elsewhere-7"), 3, 30)]);
    assert!(removed(&got).is_empty());
    match &got.blocker {
        Some(Blocker::Unmatched {
            hostnames,
            build_ids,
        }) => {
            assert_eq!(hostnames, &vec!["elsewhere-7".to_string()]);
            assert_eq!(build_ids, &vec![3]);
        }
        other => panic!("{other:?}"),
    }
    assert!(got.blocker.unwrap().to_string().contains("elsewhere-7"));
}

#[test]
fn a_build_older_than_its_instance_is_a_stale_row() {
    // GCE autohealing recreates an instance with the same name; EC2 reuses private IPs.
    let c = vec![ready("a", 40), ready("b", 50)];
    let got = ask(1, &c, &[busy(Some("a"), 3, 20)]);
    assert_eq!(removed(&got), vec!["a"]);
    assert_eq!(got.ignored.len(), 1);
    // Started after creation: busy.
    let got = ask(1, &c, &[busy(Some("a"), 3, 45)]);
    assert_eq!(removed(&got), vec!["b"]);
}

#[test]
fn excluded_instances_are_never_candidates() {
    let c = vec![
        inst(
            "prot",
            1,
            CandidateState::Excluded("protected from scale-in".into()),
        ),
        ready("b", 2),
    ];
    let got = ask(2, &c, &[]);
    assert_eq!(removed(&got), vec!["b"]);
}

/// An instance asked to drain and then excluded (a GCE standby VM stopped or suspended after
/// the request, an AWS instance protected since) is not counted toward the reduction nor
/// removed, acknowledged or not: the chooser took it for a leaver before.
#[test]
fn an_excluded_instance_that_was_asked_to_drain_is_left_alone() {
    for drain in [Drain::Acknowledged, Drain::Requested(Some(t(90)))] {
        let mut standby = inst(
            "standby",
            1,
            CandidateState::Excluded("standby (SUSPENDED)".into()),
        );
        standby.agent = true;
        standby.drain = drain;
        let got = ask(1, &[standby, ready("b", 2)], &[]);
        assert_eq!(removed(&got), vec!["b"], "{drain:?}: {got:?}");
        assert!(got.actions.iter().all(|(id, _)| id != "standby"), "{got:?}");
    }
}

#[test]
fn agent_instances_drain_before_they_go() {
    let mut a = ready("a", 1);
    a.agent = true;
    let got = ask(1, std::slice::from_ref(&a), &[]);
    assert_eq!(got.actions, vec![("a".into(), Action::RequestDrain)]);
    assert!(removed(&got).is_empty());
    assert!(got.unfinished());

    // Requested, no acknowledgement yet: wait; it still counts toward the reduction.
    a.drain = Drain::Requested(Some(t(90)));
    let b = ready("b", 2);
    let got = ask(1, &[a.clone(), b.clone()], &[]);
    assert_eq!(got.actions, vec![("a".into(), Action::AwaitDrain)]);

    // Acknowledged and idle: remove.
    a.drain = Drain::Acknowledged;
    let got = ask(1, &[a.clone(), b.clone()], &[]);
    assert_eq!(removed(&got), vec!["a"]);
    assert_eq!(got.actions[0].1, Action::Remove(RemoveReason::Drained));

    // Acknowledged, but the database still shows a RUNNING build on it: wait.
    let got = ask(1, &[a.clone(), b.clone()], &[busy(Some("a"), 5, 95)]);
    assert_eq!(got.actions, vec![("a".into(), Action::AwaitDrain)]);

    // The plan no longer needs it gone: the drain is called off.
    let got = ask(0, &[a, b], &[]);
    assert_eq!(got.actions, vec![("a".into(), Action::CancelDrain)]);
    assert_eq!(got.leaving(), 0);
}

#[test]
fn require_agent_holds_instances_without_it() {
    let c = vec![ready("a", 1)];
    let got = choose(&ScaleInRequest {
        reduction: 1,
        candidates: &c,
        busy: &[],
        unassigned_grace: None,
        require_agent: true,
        now: t(100),
    });
    assert!(removed(&got).is_empty());
    assert_eq!(got.held, vec![("a".into(), HoldReason::NoAgent)]);
}

#[test]
fn hostname_rules() {
    assert!(hostname_matches("w-1", "w-1"));
    assert!(hostname_matches("W-1.", "w-1"));
    assert!(hostname_matches("w-1", "w-1.us-central1-a.c.p.internal"));
    assert!(hostname_matches("w-1.us-central1-a.c.p.internal", "w-1"));
    assert!(!hostname_matches("w-1", "w-10.internal"));
    assert!(!hostname_matches("x.w-1", "w-1"));
    assert!(!hostname_matches("w-1.a", "w-1.b"));
    assert!(hostname_matches("10.0.0.1", "10.0.0.1"));
    assert!(!hostname_matches("10", "10.0.0.1"));
    assert!(!hostname_matches("", ""));
    assert!(!hostname_matches("  ", "a"));
}

fn arb_name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-c]{1,2}",
        "[a-c]{1,2}\\.[a-c]{1,2}",
        "[A-C]{1,2}\\.?",
        (0u8..3, 0u8..3).prop_map(|(a, b)| format!("10.0.{a}.{b}")),
    ]
}

proptest! {
    #[test]
    fn hostname_matching_is_symmetric(a in arb_name(), b in arb_name()) {
        prop_assert_eq!(hostname_matches(&a, &b), hostname_matches(&b, &a));
    }

    #[test]
    fn never_removes_a_busy_or_excluded_instance_nor_more_than_asked(
        n in 0usize..8,
        reduction in 0u32..10,
        states in proptest::collection::vec(0u8..3, 8),
        created in proptest::collection::vec(0i64..60, 8),
        agents in proptest::collection::vec(any::<bool>(), 8),
        drains in proptest::collection::vec(0u8..3, 8),
        busy_on in proptest::collection::vec((0usize..10, 0i64..100), 0..5),
    ) {
        let cands: Vec<Candidate> = (0..n).map(|i| {
            let state = match states[i] {
                0 => CandidateState::Booting,
                1 => CandidateState::Ready,
                _ => CandidateState::Excluded("standby".into()),
            };
            let mut c = inst(&format!("i{i}"), created[i], state);
            c.agent = agents[i];
            c.drain = match drains[i] {
                0 => Drain::None,
                1 if c.agent => Drain::Requested(Some(t(created[i] + 1))),
                2 if c.agent => Drain::Acknowledged,
                _ => Drain::None,
            };
            c
        }).collect();
        let busy: Vec<BusyWorker> = busy_on.iter().enumerate()
            .map(|(k, (i, s))| busy(Some(&format!("i{i}")), k as i64, *s))
            .collect();
        let got = ask(reduction, &cands, &busy);
        prop_assert!(got.leaving() <= reduction);
        for (id, _) in got.removals() {
            let c = cands.iter().find(|c| c.id == id).unwrap();
            prop_assert!(!matches!(c.state, CandidateState::Excluded(_)));
            // Busy: a build on it that started after it was created.
            let is_busy = busy.iter().any(|b| matches_candidate(c, b));
            prop_assert!(!is_busy, "removed busy {}", id);
        }
        for id in got.drain_requests() {
            prop_assert!(cands.iter().any(|c| c.id == id && c.agent));
        }
        for (id, _) in &got.actions {
            let c = cands.iter().find(|c| &c.id == id).unwrap();
            prop_assert!(!matches!(c.state, CandidateState::Excluded(_)), "acted on excluded {}", id);
        }
    }
}
