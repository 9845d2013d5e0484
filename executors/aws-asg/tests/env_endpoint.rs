//! The production constructor, configured only by the standard AWS environment variables, as
//! the end-to-end tests and CI run it: `AWS_ENDPOINT_URL_AUTO_SCALING` / `AWS_ENDPOINT_URL_EC2`
//! reach moto even when `AWS_ENDPOINT_URL` points elsewhere. Its own test binary, because it
//! sets the process environment.

mod common;

use autoscaler_aws_asg::{AwsAsgExecutor, Config};
use autoscaler_executor::{Executor, Plan, ScaleRequest};
use common::*;

#[tokio::test]
async fn service_specific_endpoint_variables_are_honoured() {
    let moto = Moto::start();
    let dead = format!("http://127.0.0.1:{}", free_port());
    std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
    std::env::set_var("AWS_REGION", "us-east-1");
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    std::env::set_var("AWS_ENDPOINT_URL", &dead);
    std::env::set_var("AWS_ENDPOINT_URL_AUTO_SCALING", &moto.url);
    std::env::set_var("AWS_ENDPOINT_URL_EC2", &moto.url);

    // The test's own clients make the group, through the same environment.
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let ec2 = ec2(&sdk);
    assert_eq!(
        (ec2.endpoint(), ec2.endpoint_source()),
        (
            moto.url.as_str(),
            autoscaler_aws_asg::client::ec2::EndpointSource::Configured
        )
    );
    create_launch_template(&ec2, "lt", "ami-03cf127a", None).await;
    let asg = aws_sdk_autoscaling::Client::new(&sdk);
    asg.create_auto_scaling_group()
        .auto_scaling_group_name("vespene-env")
        .launch_template(
            aws_sdk_autoscaling::types::LaunchTemplateSpecification::builder()
                .launch_template_name("lt")
                .build(),
        )
        .min_size(0)
        .max_size(5)
        .desired_capacity(0)
        .availability_zones("us-east-1a")
        .send()
        .await
        .unwrap();

    let exec = AwsAsgExecutor::from_config(Config::default())
        .await
        .unwrap();
    let p = pool(1, "env", "vespene-{{ worker_pool.name }}", 10);
    exec.prepare(&[&p], false).await.unwrap();
    let out = exec
        .scale(ScaleRequest {
            pool: &p,
            plan: Plan {
                size: 2,
                queued_size: 2,
                standby: 0,
            },
            dry_run: false,
            workers: &FakeDirectory::default(),
        })
        .await
        .unwrap();
    assert_eq!(out.applied, Some(2));
    let g = asg
        .describe_auto_scaling_groups()
        .auto_scaling_group_names("vespene-env")
        .send()
        .await
        .unwrap();
    assert_eq!(g.auto_scaling_groups()[0].desired_capacity(), Some(2));
    assert!(moto.counts().contains_key("SetDesiredCapacity"));
}
