//! Which endpoint the EC2 client sends to, with the real environment variables the SDK reads:
//! the same order as aws-sdk-ec2 (programmatic, `AWS_ENDPOINT_URL_EC2`, `AWS_ENDPOINT_URL`,
//! the regional default; `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS` drops the two variables, not
//! an endpoint set in code). Its
//! own test binary, and one test, because it sets the process environment.

mod common;

use autoscaler_aws_asg::client::ec2::{Ec2Client, EndpointSource};
use common::*;
use std::time::Duration;

async fn load(programmatic: Option<&str>) -> Ec2Client {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("eu-west-3"))
        .credentials_provider(aws_credential_types::Credentials::new(
            "testing", "testing", None, None, "tests",
        ))
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(1));
    if let Some(url) = programmatic {
        loader = loader.endpoint_url(url);
    }
    Ec2Client::new(&loader.load().await, Duration::from_secs(5))
}

#[tokio::test]
async fn endpoint_precedence_is_the_sdks() {
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    std::env::set_var("AWS_CONFIG_FILE", "/nonexistent/aws-config");
    std::env::set_var(
        "AWS_SHARED_CREDENTIALS_FILE",
        "/nonexistent/aws-credentials",
    );
    let double = QueryDouble::start(|req| match req.action.as_str() {
        "DescribeInstances" => QueryResponse::ok(ec2_instances_xml(&[(
            "i-1",
            "ip-10-0-0-1.ec2.internal",
            "10.0.0.1",
        )])),
        a => QueryResponse::error(400, "InvalidAction", &format!("unexpected {a}")),
    });
    let dead = format!("http://127.0.0.1:{}", free_port());
    let other = format!("http://127.0.0.1:{}", free_port());

    // The service-specific variable beats the global one, and requests really go there.
    std::env::set_var("AWS_ENDPOINT_URL", &dead);
    std::env::set_var("AWS_ENDPOINT_URL_EC2", format!("{}/", double.url));
    let ec2 = load(None).await;
    assert_eq!(
        (ec2.endpoint(), ec2.endpoint_source()),
        (double.url.as_str(), EndpointSource::Configured)
    );
    let got = ec2
        .describe_instances(&[("instance-id".into(), vec!["i-1".into()])])
        .await
        .unwrap();
    assert_eq!(got[0].instance_id, "i-1");
    assert_eq!(double.actions(), vec!["DescribeInstances"]);

    // An endpoint set in code beats both variables.
    let ec2 = load(Some(&other)).await;
    assert_eq!(
        (ec2.endpoint(), ec2.endpoint_source()),
        (other.as_str(), EndpointSource::Programmatic)
    );

    // Without the service-specific variable, the global one.
    std::env::remove_var("AWS_ENDPOINT_URL_EC2");
    let ec2 = load(None).await;
    assert_eq!(
        (ec2.endpoint(), ec2.endpoint_source()),
        (dead.as_str(), EndpointSource::Configured)
    );
    let err = ec2
        .describe_instances(&[("instance-id".into(), vec!["i-1".into()])])
        .await
        .unwrap_err();
    assert_eq!(err.kind, autoscaler_executor::ErrorKind::Unavailable);
    assert!(
        err.message
            .starts_with(&format!("DescribeInstances: endpoint {dead} unreachable")),
        "{err}"
    );

    // Told to ignore configured endpoints, both variables are ignored; code still wins.
    std::env::set_var("AWS_ENDPOINT_URL_EC2", &double.url);
    std::env::set_var("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true");
    let ec2 = load(None).await;
    assert_eq!(
        (ec2.endpoint(), ec2.endpoint_source()),
        (
            "https://ec2.eu-west-3.amazonaws.com",
            EndpointSource::Default
        )
    );
    let ec2 = load(Some(&other)).await;
    assert_eq!(ec2.endpoint_source(), EndpointSource::Programmatic);

    // Nothing set: the regional endpoint.
    std::env::remove_var("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS");
    std::env::remove_var("AWS_ENDPOINT_URL_EC2");
    std::env::remove_var("AWS_ENDPOINT_URL");
    let ec2 = load(None).await;
    assert_eq!(
        (ec2.endpoint(), ec2.endpoint_source()),
        (
            "https://ec2.eu-west-3.amazonaws.com",
            EndpointSource::Default
        )
    );
}
