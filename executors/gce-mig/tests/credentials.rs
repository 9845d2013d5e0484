//! Without any credentials, construction must fail in seconds with a credentials error, not sit
//! through a minute of metadata-server retries. Its own test binary: it rewrites the process
//! environment (HOME, GOOGLE_APPLICATION_CREDENTIALS, GCE_METADATA_HOST).

use autoscaler_executor::ErrorKind;
use autoscaler_gce_mig::{Config, GceMigError, GceMigExecutor};
use std::time::{Duration, Instant};

async fn build_without_credentials(
    metadata_host: &str,
    timeout_secs: u64,
) -> (GceMigError, Duration) {
    std::env::set_var("GCE_METADATA_HOST", metadata_host);
    let started = Instant::now();
    let cfg = Config {
        credentials_timeout_seconds: timeout_secs,
        ..Config::default()
    };
    let err = match GceMigExecutor::from_config_with_env(cfg, &|_| None).await {
        Ok(_) => panic!("built an executor with no credentials"),
        Err(e) => e,
    };
    eprintln!("{metadata_host}: {err} ({:?})", started.elapsed());
    (err, started.elapsed())
}

#[tokio::test]
async fn no_credentials_fail_fast() {
    let home = tempfile::tempdir().unwrap();
    std::env::set_var("HOME", home.path());
    std::env::remove_var("GOOGLE_APPLICATION_CREDENTIALS");

    // A metadata server that refuses connections (nothing listens on port 1).
    let (err, took) = build_without_credentials("127.0.0.1:1", 10).await;
    assert_eq!(err.kind(), ErrorKind::Credentials, "{err}");
    assert!(
        err.to_string().contains("application default credentials"),
        "{err}"
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");

    // A metadata server that accepts connections and never answers: the bound cuts it off.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = silent.accept().await {
            held.push(sock);
        }
    });
    let (err, took) = build_without_credentials(&silent_addr.to_string(), 2).await;
    assert_eq!(err.kind(), ErrorKind::Credentials, "{err}");
    assert!(err.to_string().contains("within 2s"), "{err}");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(4),
        "took {took:?}"
    );

    // A key file that is not one is refused without echoing its contents.
    let bogus = home.path().join("key.json");
    std::fs::write(
        &bogus,
        r#"{"type": "authorized_user", "refresh_token": "SECRET-TOKEN"}"#,
    )
    .unwrap();
    let cfg = Config {
        credentials: Some(bogus.display().to_string()),
        ..Config::default()
    };
    let err = match GceMigExecutor::from_config_with_env(cfg, &|_| None).await {
        Ok(_) => panic!("accepted a non-service-account key"),
        Err(e) => e,
    };
    assert_eq!(err.kind(), ErrorKind::Credentials);
    assert!(!err.to_string().contains("SECRET-TOKEN"), "{err}");
}
