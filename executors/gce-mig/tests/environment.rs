//! `AUTOSCALER_GCE_ENDPOINT` / `AUTOSCALER_GCE_CREDENTIALS` from the real process environment
//! redirect an unchanged config to the double. Its own test binary: it sets process variables.

use autoscaler_executor::{Executor, Plan, ScaleRequest, WorkerPool};
use autoscaler_gce_double::{ComputeDouble, InstanceSpec};
use autoscaler_gce_mig::{Config, GceMigExecutor, ENV_CREDENTIALS, ENV_ENDPOINT};

use autoscaler_executor::testing::StaticDirectory;

#[tokio::test]
async fn environment_points_the_client_at_the_double() {
    let (addr, double) = ComputeDouble::start();
    let group = "projects/env-proj/zones/europe-west4-a/instanceGroupManagers/builders";
    double.add_group(
        group,
        &[("vespene_worker", "true"), ("vespene_pool", "builders")],
    );
    double.add_instance(
        group,
        InstanceSpec::new("builders-0001", "2024-05-01T09:00:00.000-07:00"),
    );
    double.set_operation_polls(0);

    std::env::set_var(ENV_ENDPOINT, format!("http://{addr}"));
    std::env::set_var(ENV_CREDENTIALS, "anonymous");
    // The file says Google with ADC; the environment wins.
    let cfg = Config {
        endpoint: Some("https://compute.googleapis.com".into()),
        credentials: Some("adc".into()),
        ..Config::default()
    };
    let exec = GceMigExecutor::from_config(cfg)
        .await
        .expect("built against the double");
    assert_eq!(exec.endpoint(), Some(double.endpoint().as_str()));

    let mut pool = WorkerPool::with_defaults(3, "builders");
    pool.executor_command = group.into();
    let out = exec
        .scale(ScaleRequest {
            pool: &pool,
            plan: Plan {
                size: 3,
                queued_size: 3,
                standby: 0,
            },
            dry_run: false,
            workers: &StaticDirectory::idle(),
        })
        .await
        .unwrap();
    assert_eq!(out.applied, Some(3));
    assert_eq!(double.target_size(group), Some(3));
    assert_eq!(double.count("POST", "/resize"), 1);
}
