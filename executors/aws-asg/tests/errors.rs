//! Error paths through the real SDK client, configured by [`load_sdk_config`] as in
//! production, against an HTTP double that answers in the AWS Query wire format (XML error
//! documents, status codes), and against a closed port. Also the lifecycle calls moto lacks,
//! checked on the wire.

mod common;

use autoscaler_aws_asg::{AwsAsgExecutor, Config};
use autoscaler_executor::{ErrorKind, Executor, ExecutorError, Outcome, Plan, ScaleRequest};
use common::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

static ENV: Once = Once::new();

/// Dummy credentials from the environment, as CI provides them for moto; set once, before any
/// test of this binary reads the environment.
fn init_env() {
    ENV.call_once(|| {
        std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
        std::env::remove_var("AWS_SESSION_TOKEN");
        std::env::remove_var("AWS_PROFILE");
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    });
}

const G: &str = "vespene-linux";

async fn executor(url: &str, max_attempts: u32) -> AwsAsgExecutor {
    init_env();
    let cfg = Config {
        region: Some("us-east-1".into()),
        endpoint_url: Some(url.to_string()),
        max_attempts,
        request_timeout_seconds: 5,
        ..Config::default()
    };
    AwsAsgExecutor::from_config(cfg).await.unwrap()
}

async fn scale(
    exec: &AwsAsgExecutor,
    size: u32,
    dir: &FakeDirectory,
) -> Result<Outcome, ExecutorError> {
    let p = pool(1, "linux", "vespene-{{ worker_pool.name }}", 10);
    exec.prepare(&[&p], false).await.unwrap();
    exec.scale(ScaleRequest {
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

fn steady_group() -> String {
    describe_groups_xml(
        G,
        0,
        10,
        2,
        &[("i-1", "InService"), ("i-2", "InService")],
        &[("vespene_worker", "true"), ("vespene_pool", "linux")],
        &["OldestInstance"],
    )
}

fn assert_names(err: &ExecutorError) {
    let msg = err.to_string();
    println!("{:?} (status {}): {msg}", err.kind, err.status_code());
    assert!(
        msg.starts_with("pool linux: Auto Scaling group vespene-linux"),
        "{msg}"
    );
    assert!(
        !msg.contains("testing"),
        "no credentials in messages: {msg}"
    );
}

#[tokio::test]
async fn unknown_group_is_not_found() {
    let double = QueryDouble::start(|req| {
        match req.action.as_str() {
        "DescribeAutoScalingGroups" => QueryResponse::ok(
            "<DescribeAutoScalingGroupsResponse xmlns=\"https://autoscaling.amazonaws.com/doc/2011-01-01/\">\
             <DescribeAutoScalingGroupsResult><AutoScalingGroups/></DescribeAutoScalingGroupsResult>\
             <ResponseMetadata><RequestId>1</RequestId></ResponseMetadata></DescribeAutoScalingGroupsResponse>",
        ),
        _ => QueryResponse::error(400, "InvalidAction", "unexpected"),
    }
    });
    let exec = executor(&double.url, 2).await;
    let err = scale(&exec, 1, &FakeDirectory::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound);
    assert_eq!(err.status_code(), 5);
    assert_names(&err);
    assert!(
        err.to_string().contains("not found in region us-east-1"),
        "{err}"
    );
    assert_eq!(double.actions(), vec!["DescribeAutoScalingGroups"]);
}

#[tokio::test]
async fn access_denied_is_permission_denied() {
    let double = QueryDouble::start(|_| {
        QueryResponse::error(
            403,
            "AccessDenied",
            "User: arn:aws:iam::123456789012:user/ci is not authorized to perform: autoscaling:DescribeAutoScalingGroups because no identity-based policy allows the autoscaling:DescribeAutoScalingGroups action",
        )
    });
    let exec = executor(&double.url, 3).await;
    let err = scale(&exec, 1, &FakeDirectory::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::PermissionDenied);
    assert_names(&err);
    let msg = err.to_string();
    assert!(msg.contains("DescribeAutoScalingGroups: AccessDenied: User: arn:aws:iam::123456789012:user/ci is not authorized"), "{msg}");
    assert!(msg.contains("HTTP 403"), "{msg}");
    assert_eq!(double.actions().len(), 1, "access denied is not retried");
}

#[tokio::test]
async fn throttled_then_succeeding_is_retried_by_the_sdk() {
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    let double = QueryDouble::start(move |req| match req.action.as_str() {
        "DescribeAutoScalingGroups" => {
            if n2.fetch_add(1, Ordering::SeqCst) < 2 {
                QueryResponse::error(400, "Throttling", "Rate exceeded")
            } else {
                QueryResponse::ok(steady_group())
            }
        }
        "DescribeLifecycleHooks" => QueryResponse::ok(hooks_xml(G, "vespene-drain", 3600)),
        a => QueryResponse::error(400, "InvalidAction", &format!("unexpected {a}")),
    });
    let exec = executor(&double.url, 4).await;
    let out = scale(&exec, 2, &FakeDirectory::default()).await.unwrap();
    assert!(out.actions.is_empty(), "{:?}", out.actions);
    assert_eq!(
        n.load(Ordering::SeqCst),
        3,
        "two throttled attempts, then success"
    );
    assert_eq!(
        double.actions(),
        vec![
            "DescribeAutoScalingGroups",
            "DescribeAutoScalingGroups",
            "DescribeAutoScalingGroups",
            "DescribeLifecycleHooks"
        ]
    );
}

#[tokio::test]
async fn throttled_past_the_retries_is_throttled() {
    let double = QueryDouble::start(|_| QueryResponse::error(400, "Throttling", "Rate exceeded"));
    let exec = executor(&double.url, 2).await;
    let err = scale(&exec, 1, &FakeDirectory::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Throttled);
    assert_eq!(err.status_code(), 7);
    assert_names(&err);
    assert!(
        err.to_string().contains("Throttling: Rate exceeded"),
        "{err}"
    );
    assert_eq!(double.actions().len(), 2, "max_attempts = 2");
}

#[tokio::test]
async fn server_errors_past_the_retries_are_unavailable() {
    let double = QueryDouble::start(|_| {
        QueryResponse::error(503, "ServiceUnavailable", "Service is unavailable")
    });
    let exec = executor(&double.url, 2).await;
    let err = scale(&exec, 1, &FakeDirectory::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unavailable);
    assert_names(&err);
    assert!(err.to_string().contains("ServiceUnavailable"), "{err}");
    assert_eq!(double.actions().len(), 2);
}

#[tokio::test]
async fn endpoint_down_is_unavailable() {
    let url = format!("http://127.0.0.1:{}", free_port());
    let exec = executor(&url, 2).await;
    let t = Instant::now();
    let err = scale(&exec, 1, &FakeDirectory::default())
        .await
        .unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
    assert_eq!(err.kind, ErrorKind::Unavailable);
    assert_eq!(err.status_code(), 8);
    assert_names(&err);
    let msg = err.to_string();
    assert!(
        msg.contains("DescribeAutoScalingGroups: endpoint unreachable, after retries"),
        "{msg}"
    );
}

#[derive(Debug)]
struct RefusingCredentials;

impl aws_credential_types::provider::ProvideCredentials for RefusingCredentials {
    fn provide_credentials<'a>(
        &'a self,
    ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        aws_credential_types::provider::future::ProvideCredentials::ready(Err(
            aws_credential_types::provider::error::CredentialsError::not_loaded(
                "no providers in chain provided credentials",
            ),
        ))
    }
}

#[tokio::test]
async fn credentials_lost_after_start_are_a_credentials_error() {
    let double = QueryDouble::start(|_| QueryResponse::ok(steady_group()));
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(&double.url)
        .credentials_provider(RefusingCredentials)
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(1))
        .load()
        .await;
    let exec = AwsAsgExecutor::from_sdk_config(Config::default(), &sdk).unwrap();
    let err = scale(&exec, 1, &FakeDirectory::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Credentials);
    assert_eq!(err.status_code(), 4);
    assert_names(&err);
    assert!(
        err.to_string().contains("no usable AWS credentials"),
        "{err}"
    );
    assert!(double.actions().is_empty(), "nothing unsigned was sent");
}

#[tokio::test]
async fn lifecycle_calls_on_the_wire() {
    let complete_refused = Arc::new(AtomicUsize::new(0));
    let refused = complete_refused.clone();
    let double = QueryDouble::start(move |req| match req.action.as_str() {
        "DescribeAutoScalingGroups" => QueryResponse::ok(describe_groups_xml(
            G,
            0,
            10,
            1,
            &[
                ("i-1", "Terminating:Wait"),
                ("i-2", "Terminating:Wait"),
                ("i-3", "InService"),
            ],
            &[("vespene_worker", "true"), ("vespene_pool", "linux")],
            &["OldestInstance", "Default"],
        )),
        "DescribeLifecycleHooks" => QueryResponse::ok(hooks_xml(G, "vespene-drain", 3600)),
        "DescribeInstances" => QueryResponse::ok(ec2_instances_xml(&[
            ("i-1", "ip-10-0-0-1.ec2.internal", "10.0.0.1"),
            ("i-2", "ip-10-0-0-2.ec2.internal", "10.0.0.2"),
        ])),
        "RecordLifecycleActionHeartbeat" => {
            QueryResponse::ok(empty_xml("RecordLifecycleActionHeartbeat"))
        }
        "CompleteLifecycleAction" => {
            if refused.fetch_add(1, Ordering::SeqCst) == 0 {
                QueryResponse::ok(empty_xml("CompleteLifecycleAction"))
            } else {
                QueryResponse::error(
                    400,
                    "ValidationError",
                    "No active Lifecycle Action found with instance ID i-2",
                )
            }
        }
        a => QueryResponse::error(400, "InvalidAction", &format!("unexpected {a}")),
    });
    let exec = executor(&double.url, 2).await;
    let dir = FakeDirectory::default();
    dir.set(&[("10.0.0.1", 77)]);
    let out = scale(&exec, 1, &dir).await.unwrap();
    assert!(out.revisit);
    let log = double.log.lock().unwrap().clone();
    let find = |a: &str| {
        log.iter()
            .find(|r| r.action == a)
            .unwrap_or_else(|| panic!("{a} sent"))
            .params
            .clone()
    };
    let di = find("DescribeInstances");
    assert_eq!(param(&di, "Filter.1.Name"), Some("instance-id"));
    assert_eq!(param(&di, "Filter.1.Value.1"), Some("i-1"));
    assert_eq!(param(&di, "Filter.1.Value.2"), Some("i-2"));
    let hb = find("RecordLifecycleActionHeartbeat");
    assert_eq!(param(&hb, "AutoScalingGroupName"), Some(G));
    assert_eq!(param(&hb, "LifecycleHookName"), Some("vespene-drain"));
    assert_eq!(param(&hb, "InstanceId"), Some("i-1"));
    let c = find("CompleteLifecycleAction");
    assert_eq!(param(&c, "InstanceId"), Some("i-2"));
    assert_eq!(param(&c, "LifecycleActionResult"), Some("CONTINUE"));
    assert_eq!(param(&c, "LifecycleHookName"), Some("vespene-drain"));
    assert!(
        !log.iter().any(|r| r.action == "SetDesiredCapacity"),
        "desired already 1"
    );

    // Next cycle AWS says i-2 no longer waits on the hook: a warning, not a failure.
    let out = scale(&exec, 1, &dir).await.unwrap();
    assert!(
        !out.actions
            .iter()
            .any(|a| a.starts_with("CompleteLifecycleAction")),
        "{:?}",
        out.actions
    );
}
