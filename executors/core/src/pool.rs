use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One row of Vespene's `worker_pools` table, every column, exactly as stored.
///
/// Templates see all of it as `worker_pool` (and `worker`, the name Vespene's docs use), so a
/// command can use any column a user set in the UI.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkerPool {
    pub id: i64,
    pub name: String,
    pub variables: Option<String>,
    pub isolation_method: String,
    pub sudo_user: Option<String>,
    pub permissions_hex: String,
    pub sleep_seconds: i32,
    pub auto_abort_minutes: i32,
    pub build_latest: bool,
    pub build_object_shelf_life: i32,
    pub build_root_shelf_life: i32,
    pub created_by_id: Option<i32>,
    pub autoscaling_enabled: bool,
    pub autoscaling_status: Option<i32>,
    pub excess: i32,
    pub executor: Option<String>,
    pub executor_command: String,
    pub last_autoscaled: Option<DateTime<Utc>>,
    pub maximum: i32,
    pub minimum: i32,
    pub multiplier: f64,
    pub planner: Option<String>,
    pub queued_weight: f64,
    pub reevaluate_minutes: i32,
    pub running_weight: f64,
}

impl WorkerPool {
    /// A pool with Vespene's own defaults (what its UI creates), for tests, demos and the
    /// simulator; only `id` and `name` are needed.
    pub fn with_defaults(id: i64, name: &str) -> Self {
        WorkerPool {
            id,
            name: name.to_string(),
            variables: Some("{}".into()),
            isolation_method: "basic".into(),
            sudo_user: None,
            permissions_hex: "0x777".into(),
            sleep_seconds: 10,
            auto_abort_minutes: 24 * 60,
            build_latest: true,
            build_object_shelf_life: 365,
            build_root_shelf_life: 31,
            created_by_id: None,
            autoscaling_enabled: false,
            autoscaling_status: None,
            excess: 0,
            executor: None,
            executor_command: String::new(),
            last_autoscaled: None,
            maximum: 10,
            minimum: 0,
            multiplier: 1.0,
            planner: None,
            queued_weight: 1.0,
            reevaluate_minutes: 10,
            running_weight: 1.0,
        }
    }
}

/// The planner's answer, in workers (not machines: a backend with several workers per machine
/// divides).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Total workers wanted, running builds included: what a declarative backend sets.
    pub size: u32,
    /// Workers wanted for queued builds alone: what a non-declarative backend launches.
    pub queued_size: u32,
    /// Standby workers (stopped or suspended instances, beyond `size`) the planner wants held,
    /// so a burst is met by a resume of seconds instead of a boot; 0 = none, today's
    /// behaviour. In workers like `size` (a backend with several workers per machine divides,
    /// rounding up); a backend without standby ignores it.
    #[serde(default)]
    pub standby: u32,
}

/// A RUNNING build of a pool and the machine it runs on, as the Vespene database knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BusyWorker {
    /// `workers.hostname` as the worker reported it when it claimed the build; `None` while the
    /// build is RUNNING with no worker recorded yet (Vespene saves the status first and the
    /// worker a moment later), which means "busy somewhere in this pool".
    pub hostname: Option<String>,
    /// The RUNNING build, so a log line can say what kept a machine alive.
    pub build_id: i64,
    /// When that build started, if recorded.
    pub started: Option<DateTime<Utc>>,
}
