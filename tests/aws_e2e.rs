//! The real `autoscaler` binary with the aws-asg executor against `moto_server` (the real AWS
//! wire protocol, locally) and a PostgreSQL Vespene database. moto does not model lifecycle
//! waits, so the drain logic is tested in executors/aws-asg against an in-memory fake; here we
//! check the wire: capacity, termination policy, tags, hook, call counts, secrets. What a launch
//! AWS accepted and could not make looks like to an operator (status, log line, metric) runs
//! the engine in-process over that fake: moto keeps no scaling activities.

mod common;
#[path = "../executors/aws-asg/tests/fake/mod.rs"]
mod fake;

use autoscaler_aws_asg::client::ec2::{Ec2Client, Element};
use base64::Engine as _;
use common::{shell_pool, TestDb};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const SECRET: &str = "aws-secret-must-not-leak";
const MUTATING: &[&str] = &[
    "SetDesiredCapacity",
    "UpdateAutoScalingGroup",
    "CreateOrUpdateTags",
    "PutLifecycleHook",
    "CompleteLifecycleAction",
    "RecordLifecycleActionHeartbeat",
    "CreateTags",
    "TerminateInstanceInAutoScalingGroup",
];

/// moto_server on a free port, recording requests; killed on drop.
struct Moto {
    child: Child,
    url: String,
    recording: PathBuf,
    _dir: tempfile::TempDir,
}

impl Moto {
    fn start() -> Moto {
        let bin = std::env::var("MOTO_SERVER").unwrap_or_else(|_| "moto_server".into());
        let dir = tempfile::tempdir().unwrap();
        let recording = dir.path().join("rec.jsonl");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("MOTO_ENABLE_RECORDING", "True")
            .env("MOTO_RECORDER_FILEPATH", &recording)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("starting {bin} (set MOTO_SERVER; scripts/test installs it): {e}")
            });
        let t0 = Instant::now();
        while TcpStream::connect(("127.0.0.1", port))
            .and_then(|mut s| {
                write!(
                    s,
                    "GET /moto-api/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                )?;
                let mut b = String::new();
                s.read_to_string(&mut b).map(|_| b)
            })
            .map(|b| !b.starts_with("HTTP/1."))
            .unwrap_or(true)
        {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "moto_server did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Moto {
            child,
            url: format!("http://127.0.0.1:{port}"),
            recording,
            _dir: dir,
        }
    }

    fn clear(&self) {
        let _ = std::fs::remove_file(&self.recording);
    }

    /// The `Action` of every request since the last clear.
    fn actions(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.recording).unwrap_or_default();
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                let mut body = v["body"].as_str().unwrap_or("").to_string();
                if v["body_encoded"].as_bool() == Some(true) {
                    body = String::from_utf8(
                        base64::engine::general_purpose::STANDARD
                            .decode(body)
                            .unwrap(),
                    )
                    .unwrap();
                }
                let query = v["url"]
                    .as_str()
                    .and_then(|u| u.split_once('?'))
                    .map(|q| q.1.to_string())
                    .unwrap_or_default();
                body.split('&')
                    .chain(query.split('&'))
                    .find_map(|kv| kv.strip_prefix("Action="))
                    .unwrap_or("?")
                    .to_string()
            })
            .collect()
    }

    fn mutating(&self) -> Vec<String> {
        self.actions()
            .into_iter()
            .filter(|a| MUTATING.contains(&a.as_str()))
            .collect()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn sdk(url: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(url)
        .credentials_provider(aws_sdk_autoscaling::config::Credentials::new(
            "testing", SECRET, None, None, "test",
        ))
        .load()
        .await
}

fn run(moto: &Moto, t: &TestDb, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_autoscaler"))
        .args(["--database-url", &t.url])
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL", &moto.url)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("RUST_LOG", "debug")
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_asg_end_to_end_on_postgres_and_moto() {
    let moto = Moto::start();
    let sdk = sdk(&moto.url).await;
    let ec2 = Ec2Client::new(&sdk, Duration::from_secs(10));
    ec2.call_xml(
        "CreateLaunchTemplate",
        &[
            ("LaunchTemplateName", "lt-linux"),
            ("LaunchTemplateData.ImageId", "ami-03cf127a"),
            ("LaunchTemplateData.InstanceType", "t3.micro"),
        ],
    )
    .await
    .unwrap();
    let asg = aws_sdk_autoscaling::Client::new(&sdk);
    asg.create_auto_scaling_group()
        .auto_scaling_group_name("vespene-linux")
        .launch_template(
            aws_sdk_autoscaling::types::LaunchTemplateSpecification::builder()
                .launch_template_name("lt-linux")
                .version("$Latest")
                .build(),
        )
        .min_size(0)
        .max_size(20)
        .desired_capacity(0)
        .availability_zones("us-east-1a")
        // moto ignores TerminationPolicies updates; start with the policy in place.
        .termination_policies("OldestInstance")
        .send()
        .await
        .unwrap();

    let t = TestDb::postgres().await;
    let mut linux = shell_pool(1, "linux", "vespene-{{ worker_pool.name }}");
    linux.executor = Some("aws-asg".into());
    linux.maximum = 10;
    let mut missing = shell_pool(2, "ghost", "vespene-{{ worker_pool.name }}");
    missing.executor = Some("aws-asg".into());
    t.add_pool(&linux).await;
    t.add_pool(&missing).await;
    t.add_worker(1, "ip-10-0-0-1.ec2.internal").await;
    t.add_builds(&[
        (1, 1, "QUEUED", Some(1), None),
        (2, 1, "QUEUED", Some(2), None),
        (3, 1, "QUEUED", Some(3), None),
        (4, 1, "RUNNING", Some(4), Some(1)),
    ])
    .await;

    // Scale out: 3 queued + 1 running = 4; the unknown group fails alone.
    moto.clear();
    let out = run(
        &moto,
        &t,
        &["--queue", "linux", "--queue", "ghost", "--force"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("autoscaler: pool ghost failed: pool ghost:"),
        "{stderr}"
    );
    assert!(
        stderr.contains("vespene-ghost"),
        "the error names the group: {stderr}"
    );
    assert_eq!(t.status_of("ghost").await.0, Some(5), "not found");
    assert_eq!(t.status_of("linux").await.0, Some(0), "{stderr}");
    let first = moto.actions();
    assert_eq!(
        first
            .iter()
            .filter(|a| *a == "DescribeAutoScalingGroups")
            .count(),
        1,
        "one batched describe: {first:?}"
    );

    let g = asg
        .describe_auto_scaling_groups()
        .auto_scaling_group_names("vespene-linux")
        .send()
        .await
        .unwrap();
    let g = &g.auto_scaling_groups()[0];
    assert_eq!(g.desired_capacity(), Some(4));
    assert_eq!(
        g.termination_policies().first().map(String::as_str),
        Some("OldestInstance")
    );
    let tags: Vec<(String, String, bool)> = g
        .tags()
        .iter()
        .map(|t| {
            (
                t.key().unwrap_or("").to_string(),
                t.value().unwrap_or("").to_string(),
                t.propagate_at_launch().unwrap_or(false),
            )
        })
        .collect();
    assert!(
        tags.contains(&("vespene_worker".into(), "true".into(), true)),
        "{tags:?}"
    );
    assert!(
        tags.contains(&("vespene_pool".into(), "linux".into(), true)),
        "{tags:?}"
    );
    let hooks = asg
        .describe_lifecycle_hooks()
        .auto_scaling_group_name("vespene-linux")
        .send()
        .await
        .unwrap();
    let hook = hooks.lifecycle_hooks().first().expect("a termination hook");
    assert_eq!(
        hook.lifecycle_transition(),
        Some("autoscaling:EC2_INSTANCE_TERMINATING")
    );
    assert_eq!(hook.heartbeat_timeout(), Some(3600));
    assert_eq!(hook.default_result(), Some("CONTINUE"));
    // Instances carry the tags.
    let ids: Vec<String> = g
        .instances()
        .iter()
        .filter_map(|i| i.instance_id().map(str::to_string))
        .collect();
    assert_eq!(ids.len(), 4);
    let by_id: Vec<(String, String)> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (format!("InstanceId.{}", i + 1), id.clone()))
        .collect();
    let di = ec2.call_xml("DescribeInstances", &by_id).await.unwrap();
    let described: Vec<&Element> = di
        .items("reservationSet")
        .flat_map(|r| r.items("instancesSet"))
        .collect();
    assert_eq!(described.len(), ids.len());
    for i in &described {
        let keys: Vec<_> = i
            .items("tagSet")
            .map(|t| {
                (
                    t.text_at("key").unwrap_or(""),
                    t.text_at("value").unwrap_or(""),
                )
            })
            .collect();
        assert!(
            keys.contains(&("vespene_pool", "linux")) && keys.contains(&("vespene_worker", "true")),
            "{keys:?}"
        );
    }

    // Steady state: one describe, no mutating call.
    moto.clear();
    let out = run(&moto, &t, &["--queue", "linux", "--force"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let steady = moto.actions();
    assert_eq!(moto.mutating(), Vec::<String>::new(), "{steady:?}");
    println!("aws-asg steady state: {steady:?}");

    // The RUNNING build runs on the third instance: its worker reports that instance's
    // private DNS name (moto gives each instance its own).
    let busy_id = ids[2].clone();
    let dns = described
        .iter()
        .find(|i| i.text_at("instanceId") == Some(busy_id.as_str()))
        .and_then(|i| i.text_at("privateDnsName"))
        .unwrap()
        .to_string();
    t.exec(&format!(
        "UPDATE workers SET hostname = '{dns}' WHERE id = 1"
    ))
    .await;
    // Dry run of a scale-in: describes, says what it would do, changes nothing.
    t.exec("UPDATE builds SET status = 'SUCCESS' WHERE status = 'QUEUED'")
        .await;
    moto.clear();
    let out = run(&moto, &t, &["--queue", "linux", "--force", "--dry-run"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("would"), "{stdout}");
    assert_eq!(moto.mutating(), Vec::<String>::new());

    // Scale in: 1 running build -> 1 instance. The executor names the three idle ones and
    // terminates each with the desired capacity decremented; the busy one stays.
    moto.clear();
    let out = run(&moto, &t, &["--queue", "linux", "--force"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let g = asg
        .describe_auto_scaling_groups()
        .auto_scaling_group_names("vespene-linux")
        .send()
        .await
        .unwrap();
    let g = &g.auto_scaling_groups()[0];
    assert_eq!(g.desired_capacity(), Some(1));
    let left: Vec<&str> = g
        .instances()
        .iter()
        .filter_map(|i| i.instance_id())
        .collect();
    assert_eq!(left, vec![busy_id.as_str()], "the busy instance stays");
    let scale_in = moto.actions();
    assert_eq!(
        moto.mutating(),
        vec!["TerminateInstanceInAutoScalingGroup".to_string(); 3],
        "{scale_in:?}"
    );
    println!("aws-asg scale-in: {scale_in:?}");

    // The secret key never reaches a log line, whatever the level.
    assert!(!stderr.contains(SECRET) && !stdout.contains(SECRET));

    // Audit (read-only): an orphan launched straight through EC2 with the pool's tags, and a
    // desired capacity changed behind the autoscaler's back, which the audit must read.
    let orphan = ec2
        .call_xml(
            "RunInstances",
            &[
                ("ImageId", "ami-03cf127a"),
                ("MinCount", "1"),
                ("MaxCount", "1"),
                ("TagSpecification.1.ResourceType", "instance"),
                ("TagSpecification.1.Tag.1.Key", "vespene_worker"),
                ("TagSpecification.1.Tag.1.Value", "true"),
                ("TagSpecification.1.Tag.2.Key", "vespene_pool"),
                ("TagSpecification.1.Tag.2.Value", "linux"),
            ],
        )
        .await
        .unwrap();
    let orphan_id = orphan
        .items("instancesSet")
        .next()
        .and_then(|i| i.text_at("instanceId"))
        .unwrap()
        .to_string();
    asg.set_desired_capacity()
        .auto_scaling_group_name("vespene-linux")
        .desired_capacity(3)
        .send()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("audit.toml");
    std::fs::write(&cfg, "[audit]\ndrift_grace_seconds = 0\n").unwrap();
    moto.clear();
    let out = run(
        &moto,
        &t,
        &[
            "audit",
            "--queue",
            "linux",
            "--format",
            "json",
            "--fail-on",
            "error",
            "--config",
            cfg.to_str().unwrap(),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "an orphan is an error finding\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let findings = report["findings"].as_array().unwrap();
    assert!(
        findings
            .iter()
            .any(|f| f["kind"] == "orphan" && f["instance_id"] == orphan_id.as_str()),
        "{findings:#?}"
    );
    let pool = &report["pools"][0];
    assert_eq!(pool["target"], "vespene-linux");
    assert_eq!(pool["desired_instances"], 3);
    assert_eq!(
        moto.mutating(),
        Vec::<String>::new(),
        "the audit is read-only"
    );
    println!("aws audit calls: {:?}", moto.actions());
    t.cleanup().await;
}

/// Issue 13: a size AWS accepted and cannot launch (a stockout) is, for the operator, status 13
/// in `autoscaling_status`, an error log line with `kind=launch_failed` and AWS's code as
/// `reason`, and `autoscaler_pool_launch_failures_total{pool,reason}` on `/metrics`. A group
/// counting vCPUs is status 2 naming the setting, and does not stop the other pool.
#[tokio::test(flavor = "current_thread")]
async fn a_failing_launch_reaches_the_status_the_log_and_the_metrics() {
    use autoscaler::db::{ConnectOptions, Database};
    use autoscaler::engine::{Engine, EngineOptions, PoolResult, Registry};
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let logs = Buf::default();
    let writer = logs.clone();
    // As the binary's text format, into a buffer.
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_target(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let t = TestDb::sqlite().await;
    let mut linux = shell_pool(1, "linux", "vespene-{{ worker_pool.name }}");
    linux.executor = Some("aws-asg".into());
    linux.maximum = 10;
    t.add_pool(&linux).await;
    let mut gpu = linux.clone();
    gpu.id = 2;
    gpu.name = "gpu".into();
    t.add_pool(&gpu).await;
    t.add_builds(&[
        (1, 1, "QUEUED", Some(1), None),
        (2, 1, "QUEUED", Some(2), None),
        (3, 1, "QUEUED", Some(3), None),
    ])
    .await;
    let cloud = Arc::new(fake::FakeAsg::with_group("vespene-linux", 0, 10, 1));
    cloud.put_default_hook("vespene-linux");
    cloud.add_group("vespene-gpu", 0, 100, 1);
    cloud.count_in_units("vespene-gpu", Some("vcpu"), None, 4);
    cloud.fail_launches(
        "vespene-linux",
        "Could not launch On-Demand Instances. InsufficientInstanceCapacity - We currently do \
         not have sufficient t3.micro capacity in the Availability Zone you requested \
         (us-east-1a). Launching EC2 instance failed.",
    );
    let mut registry = Registry::default();
    registry.register(Arc::new(
        autoscaler_aws_asg::AwsAsgExecutor::with_client(Default::default(), cloud.clone()).unwrap(),
    ));
    let engine = Engine::new(
        Database::connect(&t.url, &ConnectOptions::default()).unwrap(),
        registry,
        Default::default(),
        EngineOptions::default(),
    );
    let metrics = autoscaler::metrics::Metrics::new(Duration::from_secs(600));
    let (_tx, stop) = tokio::sync::watch::channel(false);
    let names = ["linux".to_string(), "gpu".to_string()];

    // The raise to 3 is accepted: success, and AWS's launches fail after it answered.
    let first = engine.run_cycle(&names, true, &stop).await.unwrap();
    let linux_first = first.pools.iter().find(|p| p.name == "linux").unwrap();
    assert!(
        matches!(linux_first.result, PoolResult::Scaled { .. }),
        "{first:?}"
    );
    assert_eq!(cloud.group("vespene-linux").desired_capacity, 3);
    assert_eq!(t.status_of("linux").await.0, Some(0));

    // The next cycle finds the group below its size and reads why.
    let second = engine.run_cycle(&names, true, &stop).await.unwrap();
    metrics.observe_cycle(&second, Duration::from_millis(5));
    match &second
        .pools
        .iter()
        .find(|p| p.name == "linux")
        .unwrap()
        .result
    {
        PoolResult::Failed {
            status,
            kind,
            reason,
            ..
        } => {
            assert_eq!(*status, 13);
            assert_eq!(*kind, "launch_failed");
            assert_eq!(reason.as_deref(), Some("InsufficientInstanceCapacity"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(t.status_of("linux").await.0, Some(13));
    assert_eq!(t.status_of("gpu").await.0, Some(2));
    assert_eq!(cloud.group("vespene-gpu").desired_capacity, 1, "not sized");
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("kind=\"launch_failed\""))
        .unwrap_or_else(|| panic!("no launch_failed line in\n{text}"));
    println!("log line: {line}");
    for part in [
        "ERROR",
        "pool=linux",
        "executor=\"aws-asg\"",
        "kind=\"launch_failed\"",
        "status=13",
        "reason=\"InsufficientInstanceCapacity\"",
        "pool linux: Auto Scaling group vespene-linux: 2 of 3 desired instances not launched: \
         DescribeScalingActivities reports 2 failed launches since",
        "newest: InsufficientInstanceCapacity: Could not launch On-Demand Instances.",
    ] {
        assert!(line.contains(part), "{part:?} not in {line}");
    }
    let refused = text
        .lines()
        .find(|l| l.contains("pool=gpu") && l.contains("kind=\"config\""))
        .unwrap_or_else(|| panic!("no refusal line in\n{text}"));
    println!("log line: {refused}");
    assert!(
        refused.contains("DesiredCapacityType is vcpu") && refused.contains("status=2"),
        "{refused}"
    );
    let exposed = metrics.encode();
    for want in [
        "autoscaler_pool_launch_failures_total{pool=\"linux\",reason=\"InsufficientInstanceCapacity\"} 1",
        "autoscaler_pool_executor_errors_total{pool=\"linux\",kind=\"launch_failed\"} 1",
        "autoscaler_pool_executor_errors_total{pool=\"gpu\",kind=\"config\"} 1",
    ] {
        let found = exposed.lines().find(|l| l.starts_with(want.split('}').next().unwrap()));
        println!("metric: {}", found.unwrap_or("(missing)"));
        assert!(exposed.contains(want), "{want} not in\n{exposed}");
    }
    t.cleanup().await;
}
