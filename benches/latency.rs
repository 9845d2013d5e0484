//! Reaction latency: the time from a build becoming QUEUED to the executor being called, with
//! the binary's default settings, for a declarative executor (gce-mig, against the in-process
//! Compute double; the "call" is the `resize` request arriving at the double).
//!
//! `cargo bench --bench latency` prints a table. Needs PostgreSQL (AUTOSCALER_TEST_PG).

#[path = "../tests/common/mod.rs"]
mod common;

use autoscaler_gce_double::ComputeDouble;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const GROUP: &str = "projects/p/zones/z-a/instanceGroupManagers/linux";

fn main() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let t = rt.block_on(common::TestDb::postgres());
    let (_addr, double) = ComputeDouble::start();
    double.set_operation_polls(0);
    double.add_group(
        GROUP,
        &[("vespene_worker", "true"), ("vespene_pool", "linux")],
    );
    let mut pool = common::shell_pool(1, "linux", GROUP);
    pool.executor = Some("gce-mig".into());
    pool.maximum = 100;
    rt.block_on(t.add_pool(&pool));

    let mut child = Command::new(env!("CARGO_BIN_EXE_autoscaler"))
        .args(["--database-url", &t.url, "--queue", "linux"])
        .env("AUTOSCALER_GCE_ENDPOINT", double.endpoint())
        .env("AUTOSCALER_GCE_CREDENTIALS", "anonymous")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Let the first full cycle pass (it sizes the group to 0).
    std::thread::sleep(Duration::from_secs(2));

    let samples = 20;
    let mut latencies = Vec::new();
    for i in 1..=samples {
        let before = double.count("POST", "/resize");
        // Queue at a random phase of the poll interval.
        std::thread::sleep(Duration::from_millis(137 * (i % 7) as u64));
        let t0 = Instant::now();
        rt.block_on(t.add_builds(&[(i, 1, "QUEUED", Some(i), None)]));
        while double.count("POST", "/resize") == before {
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "no reaction after 60 s"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        latencies.push(t0.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(double.target_size(GROUP), Some(i as u32));
    }
    unsafe { kill(child.id() as i32, 15) };
    let _ = child.wait();
    latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize];
    println!("Reaction latency, QUEUED row committed -> resize request at the Compute double,");
    println!("default settings (--sleep 20, poll_seconds 1), {samples} samples:\n");
    println!("| p50 | p95 | max |");
    println!("|---:|---:|---:|");
    println!(
        "| {:.0} ms | {:.0} ms | {:.0} ms |",
        pct(0.5),
        pct(0.95),
        latencies[latencies.len() - 1]
    );
    rt.block_on(t.cleanup());
}

extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}
