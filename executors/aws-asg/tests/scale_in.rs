//! The defects of issue 11 that concern AWS, each against the in-memory group, which does
//! what AWS does: a termination hook holds an instance in `Terminating:Wait` (from
//! `TerminateInstanceInAutoScalingGroup` or a lowered desired capacity), the desired capacity
//! drops with `ShouldDecrementDesiredCapacity`, MinSize is enforced, protected instances are
//! skipped, and a hook without heartbeats times out into its default result. Each test says
//! how the code before the fix (desired capacity lowered, AWS choosing, drain after every
//! other call) failed it.

mod common;
mod fake;

use async_trait::async_trait;
use autoscaler_aws_asg::client::{ApiError, AsgApi};
use autoscaler_aws_asg::{AwsAsgExecutor, Clock, Config};
use autoscaler_executor::scale_in::{DRAIN_AGENT_VERSION, TAG_DRAIN_AGENT};
use autoscaler_executor::{
    BusyWorker, DirectoryError, ErrorKind, Executor, ExecutorError, Outcome, Plan, ScaleRequest,
    WorkerDirectory, WorkerPool,
};
use chrono::{DateTime, Duration, Utc};
use common::*;
use fake::FakeAsg;
use std::sync::{Arc, Mutex};

const G: &str = "vespene-linux";
const CMD: &str = "vespene-{{ worker_pool.name }}";

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000, 0).unwrap()
}

struct ManualClock(Mutex<DateTime<Utc>>);

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

/// The executor and the fake group on one clock.
struct Env {
    exec: AwsAsgExecutor,
    fake: Arc<FakeAsg>,
    clock: Arc<ManualClock>,
}

impl Env {
    fn new(cfg: Config, n: u32, min: u32, hook: bool) -> Env {
        let fake = FakeAsg::default();
        fake.set_now(t0());
        fake.add_group(G, min, 10, n);
        if hook {
            fake.put_default_hook(G);
        }
        let fake = Arc::new(fake);
        let clock = Arc::new(ManualClock(Mutex::new(t0())));
        let exec = AwsAsgExecutor::with_client(cfg, fake.clone())
            .unwrap()
            .with_clock(clock.clone());
        Env { exec, fake, clock }
    }

    fn advance(&self, secs: i64) {
        *self.clock.0.lock().unwrap() += Duration::seconds(secs);
        self.fake.advance(secs);
    }

    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    async fn run(&self, size: u32, dir: &dyn WorkerDirectory) -> Result<Outcome, ExecutorError> {
        let p = pool(1, "linux", CMD, 10);
        self.exec.prepare(&[&p], false).await.unwrap();
        self.exec
            .scale(ScaleRequest {
                pool: &p,
                plan: Plan {
                    size,
                    queued_size: 0,
                    standby: 0,
                },
                dry_run: false,
                workers: dir,
            })
            .await
    }

    /// The calls made since the last look, without the reads.
    fn writes(&self) -> Vec<String> {
        self.fake
            .take_calls()
            .into_iter()
            .filter(|c| !c.starts_with("Describe"))
            .collect()
    }
}

fn busy(host: Option<&str>, build: i64, started: Option<DateTime<Utc>>) -> BusyWorker {
    BusyWorker {
        hostname: host.map(str::to_string),
        build_id: build,
        started,
    }
}

/// Answers from a list like [`FakeDirectory`]; then, once the answer has left, a worker claims
/// a build: the race between the executor's read and its call.
#[derive(Default)]
struct RacingDirectory {
    busy: Mutex<Vec<BusyWorker>>,
    claim_after_read: Mutex<Vec<BusyWorker>>,
    reads: Mutex<u32>,
}

impl RacingDirectory {
    fn claim_after_next_read(&self, b: BusyWorker) {
        self.claim_after_read.lock().unwrap().push(b);
    }
}

#[async_trait]
impl WorkerDirectory for RacingDirectory {
    async fn busy_workers(&self, _pool: &WorkerPool) -> Result<Vec<BusyWorker>, DirectoryError> {
        *self.reads.lock().unwrap() += 1;
        let answer = self.busy.lock().unwrap().clone();
        let claims: Vec<BusyWorker> = self.claim_after_read.lock().unwrap().drain(..).collect();
        self.busy.lock().unwrap().extend(claims);
        Ok(answer)
    }
}

/// Defect 1, the claim race, and defect 4, AWS choosing. The chooser reads the busy workers
/// right before it names an instance, so the instance whose worker has just claimed a build
/// (i-1, the oldest) is not picked: the idle i-2 goes, by its id, and the desired capacity is
/// never lowered. Before the fix the executor set DesiredCapacity=1 and AWS's OldestInstance
/// picked the busy i-1 (held in Terminating:Wait while the idle i-2 kept running, and paid).
/// And when a worker claims a build on the chosen instance after the read, the hook holds it:
/// the next cycle's drain sees the build and sends heartbeats instead of completing.
#[tokio::test]
async fn defect_1_and_4_the_executor_picks_and_never_a_busy_instance() {
    let env = Env::new(Config::default(), 3, 0, true);
    let dir = RacingDirectory::default();
    dir.busy
        .lock()
        .unwrap()
        .push(busy(Some("ip-10-0-0-1"), 41, Some(env.now())));
    // After the read, i-2's worker claims build 42: i-2 is chosen as idle all the same.
    dir.claim_after_next_read(busy(Some("10.0.0.2"), 42, Some(env.now())));
    env.advance(10);
    let out = env.run(1, &dir).await.unwrap();
    let writes = env.writes();
    assert!(
        !writes.iter().any(|c| c.starts_with("SetDesiredCapacity")),
        "{writes:?}"
    );
    assert_eq!(
        writes
            .iter()
            .filter(|c| c.starts_with("Terminate"))
            .collect::<Vec<_>>(),
        vec![
            "TerminateInstanceInAutoScalingGroup i-2 true",
            "TerminateInstanceInAutoScalingGroup i-3 true"
        ],
        "i-1 busy: the two idle ones, oldest first"
    );
    assert!(out.revisit);
    assert_eq!(
        env.fake.states(G),
        vec![
            ("i-1".to_string(), "InService".to_string()),
            ("i-2".to_string(), "Terminating:Wait".to_string()),
            ("i-3".to_string(), "Terminating:Wait".to_string()),
        ]
    );
    assert_eq!(env.fake.group(G).desired_capacity, 1, "decremented by AWS");
    // The build claimed after the read keeps i-2 alive: heartbeat, no completion.
    env.advance(20);
    env.run(1, &dir).await.unwrap();
    let writes = env.writes();
    assert!(
        writes.contains(&"RecordLifecycleActionHeartbeat vespene-linux vespene-drain i-2".into()),
        "{writes:?}"
    );
    assert!(
        !writes
            .contains(&"CompleteLifecycleAction vespene-linux vespene-drain i-2 CONTINUE".into()),
        "{writes:?}"
    );
    assert_eq!(
        env.fake.terminated(),
        vec![("i-3".to_string(), "CompleteLifecycleAction".to_string())]
    );
}

/// Defect 1 on an instance with the drain agent: the executor's termination is the drain
/// request, and it never completes the lifecycle action itself, not even when the database
/// says the instance is idle, because a worker may claim a build right after that read. Only
/// the agent's acknowledgement (after its worker exited) ends the instance. Before the fix
/// the executor completed every waiting instance the database showed idle: here it would have
/// completed i-1 in the cycle whose read came just before the claim of build 8.
#[tokio::test]
async fn defect_1_an_agent_instance_is_not_released_without_its_ack() {
    let env = Env::new(Config::default(), 2, 0, true);
    env.fake.tag("i-1", TAG_DRAIN_AGENT, DRAIN_AGENT_VERSION);
    env.fake.tag("i-2", TAG_DRAIN_AGENT, DRAIN_AGENT_VERSION);
    let dir = RacingDirectory::default();
    dir.busy
        .lock()
        .unwrap()
        .push(busy(Some("10.0.0.2"), 1, Some(env.now())));
    env.advance(10);
    let out = env.run(1, &dir).await.unwrap();
    assert!(out.actions.iter().any(|a| a.starts_with(
        "TerminateInstanceInAutoScalingGroup InstanceId=i-1 ShouldDecrementDesiredCapacity=true (drain agent"
    )), "{:?}", out.actions);
    // Each cycle a build is claimed on i-1 right after the read (which showed it idle), and
    // ends before the next read: the executor never completes it.
    for build in 2..8 {
        dir.claim_after_next_read(busy(
            Some("ip-10-0-0-1.ec2.internal"),
            build,
            Some(env.now()),
        ));
        env.advance(30);
        let out = env.run(1, &dir).await.unwrap();
        assert!(out.revisit, "an instance waits");
        dir.busy.lock().unwrap().retain(|b| b.build_id != build);
    }
    let writes = env.writes();
    assert!(
        !writes.iter().any(|c| c.starts_with("Complete")),
        "{writes:?}"
    );
    // A build the read sees: heartbeats (the safety net), still no completion.
    dir.busy
        .lock()
        .unwrap()
        .push(busy(Some("ip-10-0-0-1.ec2.internal"), 9, Some(env.now())));
    env.advance(30);
    env.run(1, &dir).await.unwrap();
    let writes = env.writes();
    assert!(
        !writes.iter().any(|c| c.starts_with("Complete")),
        "{writes:?}"
    );
    assert!(
        writes.contains(&"RecordLifecycleActionHeartbeat vespene-linux vespene-drain i-1".into()),
        "heartbeats while a build matches it: {writes:?}"
    );
    assert_eq!(env.fake.waiting(G), vec!["i-1".to_string()]);
    // The agent acknowledges: now it goes.
    env.fake
        .complete_lifecycle_action(G, "vespene-drain", "i-1", "CONTINUE")
        .await
        .unwrap();
    assert_eq!(
        env.fake.terminated(),
        vec![("i-1".to_string(), "CompleteLifecycleAction".to_string())]
    );
    let out = env.run(1, &dir).await.unwrap();
    assert!(!out.revisit);
}

/// Defect 2: Vespene saves `status = RUNNING` before `worker_id`, so a fresh build has no
/// worker: it could be on any instance, and nothing is removed until it has one. Before the
/// fix the busy query dropped such rows and the drain never matched a build without a
/// hostname, so both instances were released with the build on one of them.
#[tokio::test]
async fn defect_2_a_fresh_build_without_a_worker_holds_every_instance() {
    let env = Env::new(Config::default(), 2, 0, true);
    let dir = FakeDirectory::default();
    *dir.busy.lock().unwrap() = vec![busy(None, 5, Some(env.now()))];
    env.advance(1);
    let out = env.run(0, &dir).await.unwrap();
    assert!(out.revisit, "come back when the worker is recorded");
    assert!(!env
        .writes()
        .iter()
        .any(|c| c.starts_with("Terminate") || c.starts_with("SetDesired")));
    // Its worker is recorded on i-2: i-1 goes, i-2 stays.
    *dir.busy.lock().unwrap() = vec![busy(Some("ip-10-0-0-2"), 5, Some(env.now()))];
    env.run(0, &dir).await.unwrap();
    assert_eq!(
        env.writes()
            .into_iter()
            .filter(|c| c.starts_with("Terminate"))
            .collect::<Vec<_>>(),
        vec!["TerminateInstanceInAutoScalingGroup i-1 true"]
    );
    // A row still without a worker after unassigned_grace_seconds was left by a dead worker.
    *dir.busy.lock().unwrap() = vec![busy(None, 6, Some(env.now()))];
    env.advance(601);
    env.run(0, &dir).await.unwrap();
    assert!(
        env.fake.calls().is_empty()
            || env
                .writes()
                .contains(&"TerminateInstanceInAutoScalingGroup i-2 true".into())
    );
}

/// Defect 4, protection: instances protected from scale-in are never chosen and do not make
/// the pool revisit. Before the fix the desired capacity was lowered anyway, nothing ended,
/// and the pool asked to be revisited every cycle forever (capacity stayed above the target).
#[tokio::test]
async fn defect_4_protected_instances_are_skipped_without_revisiting_forever() {
    let env = Env::new(Config::default(), 2, 0, true);
    env.fake.set_protected(G, "i-1", true);
    env.fake.set_protected(G, "i-2", true);
    let dir = FakeDirectory::default();
    for _ in 0..3 {
        let out = env.run(0, &dir).await.unwrap();
        assert!(!out.revisit);
        assert!(!env
            .writes()
            .iter()
            .any(|c| c.starts_with("Terminate") || c.starts_with("SetDesired")));
    }
    assert_eq!(env.fake.group(G).desired_capacity, 2);
    // Unprotect one: it goes.
    env.fake.set_protected(G, "i-2", false);
    env.run(0, &dir).await.unwrap();
    assert!(env
        .writes()
        .contains(&"TerminateInstanceInAutoScalingGroup i-2 true".into()));
}

/// MinSize is never broken: the target never goes below it, so the executor terminates only
/// down to it; the fake refuses, as AWS does, a decrement below MinSize.
#[tokio::test]
async fn min_size_is_respected_and_enforced_by_the_fake() {
    let env = Env::new(Config::default(), 3, 1, true);
    let dir = FakeDirectory::default();
    env.run(0, &dir).await.unwrap();
    let terminated: Vec<String> = env
        .writes()
        .into_iter()
        .filter(|c| c.starts_with("Terminate"))
        .collect();
    assert_eq!(
        terminated,
        vec![
            "TerminateInstanceInAutoScalingGroup i-1 true",
            "TerminateInstanceInAutoScalingGroup i-2 true"
        ]
    );
    assert_eq!(env.fake.group(G).desired_capacity, 1);
    let err = env.fake.terminate_instance("i-3", true).await.unwrap_err();
    assert_eq!(err.code.as_deref(), Some("ValidationError"));
    assert!(err.message.contains("min size constraint"), "{err}");
    // Without a hook a termination is immediate.
    let env = Env::new(Config::default(), 1, 0, false);
    env.fake.terminate_instance("i-1", true).await.unwrap();
    assert_eq!(
        env.fake.terminated(),
        vec![(
            "i-1".to_string(),
            "TerminateInstanceInAutoScalingGroup".to_string()
        )]
    );
}

/// Defect 5: every waiting instance gets its heartbeat or completion whatever else fails, and
/// the pool's error names every failed call and instance. Before the fix the failing
/// termination-policy update returned before the drain: i-3 got no heartbeat (the hook's
/// CONTINUE would end its build) and i-2 was not released; and inside the drain the first
/// failed call skipped every instance after it.
#[tokio::test]
async fn defect_5_the_drain_runs_whatever_fails() {
    let env = Env::new(Config::default(), 4, 0, true);
    for id in ["i-1", "i-2", "i-3"] {
        env.fake.set_state(G, id, "Terminating:Wait");
    }
    env.fake
        .state
        .lock()
        .unwrap()
        .groups
        .get_mut(G)
        .unwrap()
        .desired_capacity = 1;
    let dir = FakeDirectory::default();
    dir.set(&[("ip-10-0-0-3", 9)]);
    let denied = || ApiError::service("AccessDenied", "not authorized", 403);
    env.fake.fail_next("UpdateAutoScalingGroup", denied());
    env.fake.fail_next("CreateOrUpdateTags", denied());
    env.fake.fail_next(
        "CompleteLifecycleAction",
        ApiError::service("Throttling", "Rate exceeded", 400),
    );
    env.fake.fail_next(
        "TerminateInstanceInAutoScalingGroup",
        ApiError::service(
            "ValidationError",
            "Currently, desiredSize equals minSize",
            400,
        ),
    );
    let err = env.run(0, &dir).await.unwrap_err();
    let writes = env.writes();
    for call in [
        "CompleteLifecycleAction vespene-linux vespene-drain i-1 CONTINUE",
        "CompleteLifecycleAction vespene-linux vespene-drain i-2 CONTINUE",
        "RecordLifecycleActionHeartbeat vespene-linux vespene-drain i-3",
        "TerminateInstanceInAutoScalingGroup i-4 true",
    ] {
        assert!(writes.contains(&call.to_string()), "{call}: {writes:?}");
    }
    assert_eq!(
        env.fake.terminated(),
        vec![("i-2".to_string(), "CompleteLifecycleAction".to_string())]
    );
    assert_eq!(err.kind, ErrorKind::Throttled, "the first failure's kind");
    let msg = err.to_string();
    for part in [
        "pool linux: Auto Scaling group vespene-linux: 4 failures:",
        "CompleteLifecycleAction InstanceId=i-1: Throttling: Rate exceeded",
        "AccessDenied: not authorized",
        "TerminateInstanceInAutoScalingGroup InstanceId=i-4: ValidationError",
    ] {
        assert!(msg.contains(part), "{part}: {msg}");
    }
    // EC2 cannot name the instances: every waiting one is kept with a heartbeat, none
    // released.
    env.fake.fail_next(
        "DescribeInstances",
        ApiError::service("Unavailable", "try later", 503),
    );
    env.advance(1300);
    let err = env.run(0, &dir).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unavailable);
    let writes = env.writes();
    for id in ["i-1", "i-3"] {
        assert!(
            writes.contains(&format!(
                "RecordLifecycleActionHeartbeat vespene-linux vespene-drain {id}"
            )),
            "{id}: {writes:?}"
        );
    }
    assert!(!writes
        .iter()
        .any(|c| c.starts_with("Complete") || c.starts_with("Terminate")));
}

/// Defect 6: Vespene never finishes the RUNNING row of a worker that died, and EC2 hands its
/// private IP to a new instance. A build that started before the instance existed is not
/// evidence that it is busy. Before the fix the row matched the new instance by IP and held
/// it (heartbeats) for max_drain_seconds, four hours by default.
#[tokio::test]
async fn defect_6_a_stale_row_on_a_reused_private_ip_does_not_hold_a_new_instance() {
    let env = Env::new(Config::default(), 1, 0, false);
    env.fake.state.lock().unwrap().reuse_ips = true;
    let dir = FakeDirectory::default();
    // Build 50 starts on i-1 (10.0.0.1); i-1 dies (a health check replaces it) and the row stays.
    env.advance(10);
    *dir.busy.lock().unwrap() = vec![busy(Some("10.0.0.1"), 50, Some(env.now()))];
    env.advance(90);
    env.fake.terminate_instance("i-1", false).await.unwrap();
    let g = env.fake.group(G);
    assert_eq!(g.instances.len(), 1);
    let new = g.instances[0].instance_id.clone();
    assert_eq!(new, "i-2");
    let ip = env.fake.state.lock().unwrap().ec2[&new].private_ip.clone();
    assert_eq!(ip.as_deref(), Some("10.0.0.1"), "EC2 reused the IP");
    env.fake.boot_pending(G);
    env.fake.put_default_hook(G);
    env.fake.take_calls();
    env.advance(100);
    env.run(0, &dir).await.unwrap();
    assert!(env
        .writes()
        .contains(&"TerminateInstanceInAutoScalingGroup i-2 true".into()));
    // Waiting on the hook, the stale row does not keep it either.
    env.advance(20);
    env.run(0, &dir).await.unwrap();
    assert!(env
        .writes()
        .contains(&"CompleteLifecycleAction vespene-linux vespene-drain i-2 CONTINUE".into()));
}

/// `require_drain_agent`: instances without the agent are held and reported, never removed;
/// agent instances go through the handshake.
#[tokio::test]
async fn require_drain_agent_holds_instances_without_it() {
    let cfg = Config {
        require_drain_agent: true,
        ..Config::default()
    };
    let env = Env::new(cfg, 3, 0, true);
    env.fake.tag("i-3", TAG_DRAIN_AGENT, DRAIN_AGENT_VERSION);
    let dir = FakeDirectory::default();
    env.run(0, &dir).await.unwrap();
    let terminated: Vec<String> = env
        .writes()
        .into_iter()
        .filter(|c| c.starts_with("Terminate"))
        .collect();
    assert_eq!(
        terminated,
        vec!["TerminateInstanceInAutoScalingGroup i-3 true"]
    );
    let s = env.exec.scale_in_stats();
    assert_eq!((s.chosen, s.held), (1, 2));
}

/// The fake's hook timeout, as AWS: with no heartbeat an instance gets the default result
/// after the hook's timeout; the executor's heartbeats for a busy one keep it.
#[tokio::test]
async fn the_hook_times_out_without_heartbeats() {
    let env = Env::new(Config::default(), 2, 0, true);
    env.fake.terminate_instance("i-1", true).await.unwrap();
    env.fake.terminate_instance("i-2", true).await.unwrap();
    let dir = FakeDirectory::default();
    dir.set(&[("ip-10-0-0-2", 3)]);
    env.fake.tag("i-1", TAG_DRAIN_AGENT, DRAIN_AGENT_VERSION);
    // i-1 has the agent (which is not running here): the executor leaves it to the agent.
    for _ in 0..4 {
        env.run(0, &dir).await.unwrap();
        env.advance(1000);
        env.fake.expire_waits();
    }
    assert_eq!(
        env.fake.terminated(),
        vec![(
            "i-1".to_string(),
            "heartbeat timeout: default result".to_string()
        )]
    );
    assert_eq!(env.fake.waiting(G), vec!["i-2".to_string()]);
}
