//! The executor on a manual clock over the in-memory group: what the drain and group tests
//! share.
#![allow(dead_code)] // each test binary uses its own part

use crate::common::{pool, FakeDirectory};
use crate::fake::FakeAsg;
use autoscaler_aws_asg::{AwsAsgExecutor, Clock, Config};
use autoscaler_executor::{Executor, ExecutorError, Outcome, Plan, ScaleRequest, WorkerPool};
use chrono::{DateTime, Duration, Utc};
use std::sync::{Arc, Mutex};

pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    pub fn new() -> Arc<Self> {
        Arc::new(ManualClock(Mutex::new(
            DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
        )))
    }
    pub fn advance(&self, secs: i64) {
        *self.0.lock().unwrap() += Duration::seconds(secs);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

pub const CMD: &str = "vespene-{{ worker_pool.name }}";
pub const G: &str = "vespene-linux";

pub fn setup(cfg: Config, fake: FakeAsg) -> (AwsAsgExecutor, Arc<FakeAsg>, Arc<ManualClock>) {
    let fake = Arc::new(fake);
    let clock = ManualClock::new();
    let exec = AwsAsgExecutor::with_client(cfg, fake.clone())
        .unwrap()
        .with_clock(clock.clone());
    (exec, fake, clock)
}

pub async fn run(
    exec: &AwsAsgExecutor,
    p: &WorkerPool,
    size: u32,
    dir: &FakeDirectory,
    dry_run: bool,
) -> Result<Outcome, ExecutorError> {
    run_standby(exec, p, size, 0, dir, dry_run).await
}

/// One cycle whose plan also asks for `standby` workers.
pub async fn run_standby(
    exec: &AwsAsgExecutor,
    p: &WorkerPool,
    size: u32,
    standby: u32,
    dir: &FakeDirectory,
    dry_run: bool,
) -> Result<Outcome, ExecutorError> {
    exec.prepare(&[p], dry_run).await.unwrap();
    exec.scale(ScaleRequest {
        pool: p,
        plan: Plan {
            size,
            queued_size: 0,
            standby,
        },
        dry_run,
        workers: dir,
    })
    .await
}

pub fn linux(max: i32) -> WorkerPool {
    pool(1, "linux", CMD, max)
}
