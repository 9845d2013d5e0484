//! A machine with no AWS credentials at all, whose instance metadata service hangs (accepts the
//! connection, never answers: the slowest way to have none): construction fails within seconds,
//! saying so. Its own test binary, because it rewrites the process environment.

mod common;

use autoscaler_aws_asg::{AwsAsgExecutor, Config};
use autoscaler_executor::{ErrorKind, ExecutorError};
use std::net::TcpListener;
use std::time::{Duration, Instant};

#[tokio::test]
async fn no_credentials_fail_within_seconds_and_no_region_is_a_config_error() {
    // A metadata service that accepts connections and never answers.
    let hole = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = hole.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in hole.incoming() {
            held.push(s);
        }
    });
    let home = tempfile::tempdir().unwrap();
    for k in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_EC2_METADATA_DISABLED",
        "AWS_ENDPOINT_URL",
    ] {
        std::env::remove_var(k);
    }
    std::env::set_var("HOME", home.path());
    std::env::set_var("AWS_CONFIG_FILE", home.path().join("config"));
    std::env::set_var(
        "AWS_SHARED_CREDENTIALS_FILE",
        home.path().join("credentials"),
    );
    std::env::set_var(
        "AWS_EC2_METADATA_SERVICE_ENDPOINT",
        format!("http://{addr}"),
    );

    let cfg = Config {
        region: Some("us-east-1".into()),
        ..Config::default()
    };
    let t = Instant::now();
    let err = match AwsAsgExecutor::from_config(cfg).await {
        Ok(_) => panic!("built without credentials"),
        Err(e) => e,
    };
    let took = t.elapsed();
    println!("no credentials: {took:?}: {err}");
    assert!(took < Duration::from_secs(12), "took {took:?}");
    assert_eq!(err.kind(), ErrorKind::Credentials);
    let msg = err.to_string();
    assert!(msg.starts_with("AWS credentials: "), "{msg}");
    assert!(msg.contains("standard chain"), "{msg}");
    assert!(!msg.contains('\n'), "one line: {msg}");
    // How the main package records it on each pool (its lazy backend names the pool).
    let on_pool = ExecutorError::new("linux", err.kind(), err.to_string());
    assert_eq!(on_pool.status_code(), 4);
    assert!(on_pool
        .to_string()
        .starts_with("pool linux: AWS credentials: "));

    // No region anywhere either: a config error naming the setting, as fast.
    let t = Instant::now();
    let err = match AwsAsgExecutor::from_config(Config::default()).await {
        Ok(_) => panic!("built without a region"),
        Err(e) => e,
    };
    let took = t.elapsed();
    println!("no region: {took:?}: {err}");
    assert!(took < Duration::from_secs(12), "took {took:?}");
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(
        err.to_string()
            .starts_with("[executors.aws-asg] region: no AWS region"),
        "{err}"
    );
}
