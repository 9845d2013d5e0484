//! The Grafana dashboard in examples/ queries only metrics that `/metrics` really serves: the
//! real binary runs a loop over PostgreSQL with a shell pool that succeeds, one that fails and
//! a gce-mig pool on the Compute double (which reports the size it applied), and every metric
//! name in every panel's query must appear in what it serves.

mod common;

use common::{shell_pool, TestDb};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// Every `autoscaler_…` name in the dashboard's queries (and its variable query).
fn queried_metrics(dashboard: &serde_json::Value) -> BTreeSet<String> {
    let mut exprs = Vec::new();
    for p in dashboard["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().expect("targets") {
            exprs.push(t["expr"].as_str().expect("expr").to_string());
        }
    }
    for v in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["definition"].as_str() {
            exprs.push(q.to_string());
        }
    }
    let mut names = BTreeSet::new();
    for e in exprs {
        let mut rest = e.as_str();
        while let Some(i) = rest.find("autoscaler_") {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            names.insert(tail[..end].to_string());
            rest = &tail[end..];
        }
    }
    names
}

#[tokio::test]
async fn every_dashboard_query_names_a_served_metric() {
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/grafana/autoscaler.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let wanted = queried_metrics(&dashboard);
    assert!(wanted.len() >= 8, "{wanted:?}");

    let t = TestDb::postgres().await;
    t.add_pool(&shell_pool(1, "ok", "true")).await;
    t.add_pool(&shell_pool(2, "bad", "exit 3")).await;
    let group = "projects/p1/zones/us-central1-a/instanceGroupManagers/cloud";
    let (_a, double) = autoscaler_gce_double::ComputeDouble::start();
    double.add_group(group, &[]);
    let mut cloud = shell_pool(3, "cloud", group);
    cloud.executor = Some("gce-mig".into());
    t.add_pool(&cloud).await;
    t.add_builds(&[(1, 1, "QUEUED", Some(1), None)]).await;
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_autoscaler"))
        .args([
            "--database-url",
            &t.url,
            "--queue",
            "ok",
            "--queue",
            "bad",
            "--queue",
            "cloud",
            "--sleep",
            "1",
        ])
        .args(["--metrics-addr", &addr.to_string()])
        .env("AUTOSCALER_GCE_ENDPOINT", double.endpoint())
        .env("AUTOSCALER_GCE_CREDENTIALS", "anonymous")
        .env_remove("DATABASE_URL")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let mut body = String::new();
    while start.elapsed() < Duration::from_secs(20) {
        if let Some(b) = http_get(addr, "/metrics") {
            if b.contains("autoscaler_pool_executor_errors_total{")
                && b.contains("autoscaler_pool_applied_size{")
            {
                body = b;
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(!body.is_empty(), "the loop never served its metrics");
    let served: BTreeSet<String> = body
        .lines()
        .filter(|l| l.starts_with("autoscaler_"))
        .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
        .collect();
    let missing: Vec<&String> = wanted.difference(&served).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries {missing:?}, which /metrics does not serve:\n{body}"
    );
    t.cleanup().await;
}
