//! Bringing one managed instance group to a plan: resize up, delete idle instances down.

use crate::client::{
    ApiError, ApiErrorKind, ComputeApi, InstanceInfo, ManagedInstanceInfo, OperationInfo,
};
use crate::config::Config;
use crate::target::{valid_name, GroupPath, EXPECTED_FORMS};
use autoscaler_executor::{
    render_command, ErrorKind, ExecutorError, Outcome, Plan, ScaleRequest, TargetStatus, WorkerPool,
};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// Names per `instances.list` filter: keeps the URL far below any length limit.
const FILTER_CHUNK: usize = 100;
/// Longest pause between operation polls.
const MAX_POLL: Duration = Duration::from_secs(5);

/// The label every worker instance should carry, so fleets can be found and billed.
pub const LABEL_WORKER: &str = "vespene_worker";
/// The label naming the instance's pool (value: [`label_value`] of the pool name).
pub const LABEL_POOL: &str = "vespene_pool";

/// GCE label values allow only lowercase letters, digits, `_` and `-`, up to 63 characters; a
/// Vespene pool name may hold anything, so the expected `vespene_pool` value is the pool name
/// lowercased with every other character replaced by `_` and cut to 63 characters.
pub fn label_value(pool_name: &str) -> String {
    pool_name
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(63)
        .collect()
}

pub(crate) fn render_hostname(
    template: &str,
    name: &str,
    zone: &str,
    project: &str,
) -> Result<String, String> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.render_str(
        template,
        minijinja::context! { name => name, zone => zone, project => project },
    )
    .map(|s| s.trim().to_ascii_lowercase())
    .map_err(|e| e.to_string())
}

/// Checks `hostname_match` renders for a sample instance, so a typo fails at start-up.
pub(crate) fn check_hostname_template(template: &str) -> Result<(), String> {
    let out = render_hostname(template, "worker-abcd", "us-central1-a", "my-project")?;
    if out.is_empty() {
        return Err(format!("{template:?} renders to nothing"));
    }
    Ok(())
}

fn hostname_matches(busy: &str, rendered: &str) -> bool {
    let busy = busy.trim().to_ascii_lowercase();
    busy == rendered || (!rendered.contains('.') && busy.split('.').next() == Some(rendered))
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(max).collect::<String>())
    }
}

/// The scaling logic, independent of how Compute is reached.
pub(crate) struct Applier {
    api: Arc<dyn ComputeApi>,
    cfg: Config,
    /// Pools already warned about missing labels: the warning is useful once, noise after.
    labels_warned: Mutex<HashSet<String>>,
}

/// Renders the pool's `executor_command` and parses it as a group path; no I/O.
pub(crate) fn group_path(
    project: Option<&str>,
    pool: &WorkerPool,
    plan: Plan,
) -> Result<GroupPath, ExecutorError> {
    let rendered = render_command(&pool.executor_command, pool, plan).map_err(|e| {
        ExecutorError::new(
            &pool.name,
            ErrorKind::Template,
            format!("executor_command: {e}"),
        )
    })?;
    GroupPath::parse(&rendered, project).map_err(|why| {
        ExecutorError::new(
            &pool.name,
            ErrorKind::Config,
            format!(
                "executor_command renders to {:?}, which is not a managed instance group ({why}); expected {EXPECTED_FORMS}",
                shorten(&rendered, 200)
            ),
        )
    })
}

impl Applier {
    pub(crate) fn new(api: Arc<dyn ComputeApi>, cfg: Config) -> Applier {
        Applier {
            api,
            cfg,
            labels_warned: Mutex::new(HashSet::new()),
        }
    }

    /// The Compute client, for the read-only audit in [`crate::inventory`].
    pub(crate) fn api(&self) -> &Arc<dyn ComputeApi> {
        &self.api
    }

    /// The checked settings.
    pub(crate) fn cfg(&self) -> &Config {
        &self.cfg
    }

    pub(crate) fn group_for(
        &self,
        pool: &WorkerPool,
        plan: Plan,
    ) -> Result<GroupPath, ExecutorError> {
        group_path(self.cfg.project.as_deref(), pool, plan)
    }

    /// The I/O-free part of [`Applier::scale`]'s checks: the group path and the instance count.
    pub(crate) fn validate(&self, pool: &WorkerPool, plan: Plan) -> Result<(), ExecutorError> {
        self.group_for(pool, plan)?;
        self.target_instances(pool, plan.size).map(|_| ())
    }

    /// Instances for `size` workers, never more than the pool's maximum allows.
    fn target_instances(&self, pool: &WorkerPool, size: u32) -> Result<u32, ExecutorError> {
        let wpi = self.cfg.workers_per_instance;
        let max_instances = (pool.maximum.max(0) as u32) / wpi;
        let wanted = size.div_ceil(wpi);
        if wanted > max_instances {
            if max_instances == 0 {
                return Err(ExecutorError::new(
                    &pool.name,
                    ErrorKind::Config,
                    format!(
                        "workers_per_instance ({wpi}) is larger than the pool's maximum ({}): not one instance fits; \
                         raise maximum or lower [executors.gce-mig] workers_per_instance",
                        pool.maximum
                    ),
                ));
            }
            debug!(pool = %pool.name, wanted, max_instances, "capped at the pool maximum");
        }
        Ok(wanted.min(max_instances))
    }

    /// Runs `call`, retrying throttling, 5xx, timeouts and connection errors with exponential
    /// backoff (honouring `Retry-After`). Returns the last error and how many attempts were made.
    pub(crate) async fn retry<T, F, Fut>(
        &self,
        pool: &str,
        what: &str,
        group: &GroupPath,
        mut call: F,
    ) -> Result<T, (ApiError, u32)>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ApiError>>,
    {
        let max = Duration::from_millis(self.cfg.retry_max_backoff_ms);
        let mut delay = Duration::from_millis(self.cfg.retry_initial_backoff_ms);
        let mut attempt = 1;
        loop {
            match call().await {
                Ok(v) => return Ok(v),
                Err(e) if e.retryable() && attempt < self.cfg.retry_attempts => {
                    let pause = e.retry_after.unwrap_or(delay).min(max);
                    let pause = jitter(pause);
                    warn!(pool, group = %group, call = what, attempt, error = %e.detail(), pause_ms = pause.as_millis() as u64, "retrying Compute call");
                    tokio::time::sleep(pause).await;
                    delay = (delay * 2).min(max);
                    attempt += 1;
                }
                Err(e) => return Err((e, attempt)),
            }
        }
    }

    pub(crate) fn api_error(
        &self,
        pool: &str,
        doing: &str,
        group: &GroupPath,
        (e, attempts): (ApiError, u32),
    ) -> ExecutorError {
        let kind = match e.kind {
            ApiErrorKind::NotFound => ErrorKind::NotFound,
            ApiErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
            ApiErrorKind::Throttled => ErrorKind::Throttled,
            ApiErrorKind::Unavailable => ErrorKind::Unavailable,
            ApiErrorKind::Credentials => ErrorKind::Credentials,
            ApiErrorKind::Timeout => ErrorKind::Timeout,
            ApiErrorKind::Rejected => ErrorKind::Backend,
        };
        let tries = if attempts > 1 {
            format!(" (after {attempts} attempts)")
        } else {
            String::new()
        };
        let hint = match e.kind {
            ApiErrorKind::NotFound => "; check the pool's executor_command names an existing group",
            ApiErrorKind::PermissionDenied => {
                "; the account needs roles/compute.instanceAdmin.v1 on the project (see docs/gce-mig.md)"
            }
            ApiErrorKind::Credentials => "; check the GCE credentials",
            _ => "",
        };
        ExecutorError::new(
            pool,
            kind,
            format!("{doing} {group}: {}{tries}{hint}", e.detail()),
        )
    }

    async fn wait(
        &self,
        pool: &str,
        group: &GroupPath,
        what: &str,
        mut op: OperationInfo,
    ) -> Result<(), ExecutorError> {
        let timeout = Duration::from_secs(self.cfg.operation_timeout_secs);
        let deadline = Instant::now() + timeout;
        let mut interval = Duration::from_millis(self.cfg.poll_interval_ms.max(1));
        loop {
            if op.done() {
                let Some(f) = op.error else { return Ok(()) };
                let kind = match (f.http_status, f.code.as_deref()) {
                    (_, Some("RATE_LIMIT_EXCEEDED")) | (Some(429), _) => ErrorKind::Throttled,
                    (Some(403), _) => ErrorKind::PermissionDenied,
                    (Some(404), _) | (_, Some("RESOURCE_NOT_FOUND")) => ErrorKind::NotFound,
                    (Some(s), _) if s >= 500 => ErrorKind::Unavailable,
                    _ => ErrorKind::Backend,
                };
                return Err(ExecutorError::new(
                    pool,
                    kind,
                    format!(
                        "{what} of {group} failed: operation {} finished with error {}: {}",
                        op.name,
                        f.code.as_deref().unwrap_or("(no code)"),
                        f.message
                    ),
                ));
            }
            if op.name.is_empty() {
                return Err(ExecutorError::new(
                    pool,
                    ErrorKind::Backend,
                    format!("{what} of {group}: Compute returned an unfinished operation without a name"),
                ));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(ExecutorError::new(
                    pool,
                    ErrorKind::Timeout,
                    format!(
                        "{what} of {group}: operation {} still {} after {}s (operation_timeout_secs); \
                         it may yet finish, the next cycle reads the group again",
                        op.name,
                        op.status,
                        timeout.as_secs()
                    ),
                ));
            }
            tokio::time::sleep(interval.min(deadline - now)).await;
            interval = (interval * 3 / 2).min(MAX_POLL);
            let name = op.name.clone();
            op = self
                .retry(pool, "operations.get", group, || {
                    self.api.get_operation(group, &name)
                })
                .await
                .map_err(|e| {
                    self.api_error(
                        pool,
                        &format!("waiting for {what} operation {name} of"),
                        group,
                        e,
                    )
                })?;
        }
    }

    pub(crate) async fn scale(&self, req: ScaleRequest<'_>) -> Result<Outcome, ExecutorError> {
        let pool = req.pool;
        let group = self.group_for(pool, req.plan)?;
        let want = self.target_instances(pool, req.plan.size)?;
        let wpi = self.cfg.workers_per_instance;
        let info = self
            .retry(&pool.name, "get", &group, || self.api.get_group(&group))
            .await
            .map_err(|e| self.api_error(&pool.name, "reading", &group, e))?;
        let current = info.target_size;
        if want > current {
            self.scale_out(pool, &group, current, want, req.dry_run)
                .await
        } else if want == current {
            debug!(pool = %pool.name, group = %group, instances = current, "at target");
            Ok(Outcome {
                actions: Vec::new(),
                applied: Some(current * wpi),
                revisit: false,
            })
        } else {
            self.scale_in(&req, &group, current, want).await
        }
    }

    async fn scale_out(
        &self,
        pool: &WorkerPool,
        group: &GroupPath,
        current: u32,
        want: u32,
        dry_run: bool,
    ) -> Result<Outcome, ExecutorError> {
        let wpi = self.cfg.workers_per_instance;
        let what = format!(
            "resize {group} from {current} to {want} instances ({} workers)",
            want * wpi
        );
        if dry_run {
            return Ok(Outcome {
                actions: vec![format!("would {what}")],
                applied: Some(current * wpi),
                revisit: false,
            });
        }
        // One id per intent, reused by every retry of this call: if a response is lost after
        // Compute accepted the resize, the retry returns the same operation instead of a second one.
        let request_id = uuid::Uuid::new_v4().to_string();
        let op = self
            .retry(&pool.name, "resize", group, || {
                self.api.resize(group, want, &request_id)
            })
            .await
            .map_err(|e| {
                self.api_error(
                    &pool.name,
                    &format!("resizing to {want} instances"),
                    group,
                    e,
                )
            })?;
        self.wait(&pool.name, group, "resize", op).await?;
        info!(pool = %pool.name, group = %group, from = current, to = want, "resized managed instance group");
        Ok(Outcome {
            actions: vec![format!("{what} (requestId {request_id})")],
            applied: Some(want * wpi),
            revisit: false,
        })
    }

    pub(crate) async fn list_managed(
        &self,
        pool: &str,
        group: &GroupPath,
    ) -> Result<Vec<ManagedInstanceInfo>, ExecutorError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .retry(pool, "listManagedInstances", group, || {
                    self.api.list_managed_instances(group, token.as_deref())
                })
                .await
                .map_err(|e| self.api_error(pool, "listing the instances of", group, e))?;
            out.extend(page.items);
            match page.next_page_token {
                Some(t) => token = Some(t),
                None => return Ok(out),
            }
        }
    }

    /// Instance resources (creation time, labels) for the given managed instances, one filtered
    /// `instances.list` per zone (per 100 names).
    async fn describe(
        &self,
        pool: &str,
        group: &GroupPath,
        managed: &[ManagedInstanceInfo],
    ) -> Result<HashMap<(String, String), InstanceInfo>, ExecutorError> {
        let mut by_zone: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for m in managed {
            if valid_name(&m.name) {
                by_zone
                    .entry(m.zone.as_str())
                    .or_default()
                    .push(m.name.as_str());
            }
        }
        let mut out = HashMap::new();
        for (zone, names) in by_zone {
            for chunk in names.chunks(FILTER_CHUNK) {
                let filter = chunk
                    .iter()
                    .map(|n| format!("(name = \"{n}\")"))
                    .collect::<Vec<_>>()
                    .join(" OR ");
                let mut token: Option<String> = None;
                loop {
                    let page = self
                        .retry(pool, "instances.list", group, || {
                            self.api
                                .list_instances(&group.project, zone, &filter, token.as_deref())
                        })
                        .await
                        .map_err(|e| {
                            self.api_error(
                                pool,
                                &format!("listing instances in zone {zone} for"),
                                group,
                                e,
                            )
                        })?;
                    for i in page.items {
                        out.insert((zone.to_string(), i.name.clone()), i);
                    }
                    match page.next_page_token {
                        Some(t) => token = Some(t),
                        None => break,
                    }
                }
            }
        }
        Ok(out)
    }

    fn check_labels<'a>(
        &self,
        pool: &str,
        group: &GroupPath,
        instances: impl Iterator<Item = &'a InstanceInfo>,
    ) {
        if !self.cfg.check_labels {
            return;
        }
        let want_pool = label_value(pool);
        let mut total = 0;
        let mut bad: Vec<&str> = Vec::new();
        for i in instances {
            total += 1;
            let ok = i.labels.get(LABEL_WORKER).map(String::as_str) == Some("true")
                && i.labels.get(LABEL_POOL) == Some(&want_pool);
            if !ok {
                bad.push(&i.name);
            }
        }
        if bad.is_empty() {
            return;
        }
        if !self.labels_warned.lock().unwrap().insert(pool.to_string()) {
            return;
        }
        bad.sort();
        let examples = bad.iter().take(3).copied().collect::<Vec<_>>().join(", ");
        warn!(
            pool,
            group = %group,
            "{} of {} instances lack the labels {LABEL_WORKER}=true and {LABEL_POOL}={want_pool} (e.g. {examples}); \
             set them in the group's instance template (see examples/). This warning is shown once per pool.",
            bad.len(),
            total
        );
    }

    async fn scale_in(
        &self,
        req: &ScaleRequest<'_>,
        group: &GroupPath,
        current: u32,
        want: u32,
    ) -> Result<Outcome, ExecutorError> {
        let pool = req.pool;
        let wpi = self.cfg.workers_per_instance;
        let reduction = current - want;

        let managed = self.list_managed(&pool.name, group).await?;
        // Instances already on their way out were taken off the target size when their delete
        // was accepted; everything else, instances still being created included, is current.
        let live: Vec<ManagedInstanceInfo> = managed
            .into_iter()
            .filter(|m| !matches!(m.current_action.as_str(), "DELETING" | "ABANDONING"))
            .collect();
        let resources = self.describe(&pool.name, group, &live).await?;
        self.check_labels(&pool.name, group, resources.values());

        // Read the database last, as close to the delete as possible.
        let busy = req.workers.busy_workers(pool).await.map_err(|e| {
            ExecutorError::new(
                &pool.name,
                ErrorKind::Directory,
                format!("{e}; not scaling in {group}"),
            )
        })?;

        let mut busy_names: HashMap<&str, Vec<i64>> = HashMap::new();
        let mut matched_hosts: HashSet<usize> = HashSet::new();
        for m in &live {
            let rendered =
                render_hostname(&self.cfg.hostname_match, &m.name, &m.zone, &group.project)
                    .map_err(|e| {
                        ExecutorError::new(
                            &pool.name,
                            ErrorKind::Config,
                            format!("[executors.gce-mig] hostname_match: {e}"),
                        )
                    })?;
            for (idx, b) in busy.iter().enumerate() {
                if hostname_matches(&b.hostname, &rendered) {
                    busy_names
                        .entry(m.name.as_str())
                        .or_default()
                        .push(b.build_id);
                    matched_hosts.insert(idx);
                }
            }
        }
        let unmatched: Vec<&str> = busy
            .iter()
            .enumerate()
            .filter(|(i, _)| !matched_hosts.contains(i))
            .map(|(_, b)| b.hostname.as_str())
            .collect();
        if !unmatched.is_empty() {
            warn!(
                pool = %pool.name,
                group = %group,
                hosts = %unmatched.iter().take(5).copied().collect::<Vec<_>>().join(", "),
                "{} busy worker(s) match no instance of the group; if they do run on it, fix \
                 [executors.gce-mig] hostname_match (now {:?}) before they are deleted",
                unmatched.len(),
                self.cfg.hostname_match
            );
        }

        let mut idle: Vec<&ManagedInstanceInfo> = live
            .iter()
            .filter(|m| !busy_names.contains_key(m.name.as_str()))
            .collect();
        // Oldest first; instances with no creation time yet (still being created) last.
        idle.sort_by(|a, b| {
            let ca = resources
                .get(&(a.zone.clone(), a.name.clone()))
                .and_then(|i| i.created);
            let cb = resources
                .get(&(b.zone.clone(), b.name.clone()))
                .and_then(|i| i.created);
            (ca.is_none(), ca, &a.name).cmp(&(cb.is_none(), cb, &b.name))
        });
        let victims: Vec<&ManagedInstanceInfo> =
            idle.into_iter().take(reduction as usize).collect();
        let held = reduction - victims.len() as u32;
        let new_size = current - victims.len() as u32;
        if held > 0 {
            info!(
                pool = %pool.name,
                group = %group,
                wanted = want,
                staying_at = new_size,
                busy_instances = busy_names.len(),
                "{held} instance(s) with busy workers held the size up; they go once their builds finish"
            );
        }
        if victims.is_empty() {
            return Ok(Outcome {
                actions: Vec::new(),
                applied: Some(current * wpi),
                revisit: held > 0,
            });
        }
        let names = victims
            .iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let what = format!(
            "deleteInstances {group} [{names}] (idle, oldest first; target size {current} -> {new_size}{})",
            if held > 0 { format!(", {held} held up by busy workers") } else { String::new() }
        );
        if req.dry_run {
            return Ok(Outcome {
                actions: vec![format!("would {what}")],
                applied: Some(current * wpi),
                revisit: held > 0,
            });
        }
        let urls: Vec<String> = victims.iter().map(|m| m.url.clone()).collect();
        let request_id = uuid::Uuid::new_v4().to_string();
        let op = self
            .retry(&pool.name, "deleteInstances", group, || {
                self.api.delete_instances(group, &urls, &request_id)
            })
            .await
            .map_err(|e| {
                self.api_error(
                    &pool.name,
                    &format!("deleting {} idle instance(s) of", urls.len()),
                    group,
                    e,
                )
            })?;
        self.wait(&pool.name, group, "deleteInstances", op).await?;
        info!(pool = %pool.name, group = %group, deleted = %names, from = current, to = new_size, "deleted idle instances");
        Ok(Outcome {
            actions: vec![format!("{what} (requestId {request_id})")],
            applied: Some(new_size * wpi),
            revisit: held > 0,
        })
    }

    pub(crate) async fn status(
        &self,
        pool: &WorkerPool,
    ) -> Result<Option<TargetStatus>, ExecutorError> {
        let group = self.group_for(pool, Plan::default())?;
        let wpi = self.cfg.workers_per_instance;
        let info = self
            .retry(&pool.name, "get", &group, || self.api.get_group(&group))
            .await
            .map_err(|e| self.api_error(&pool.name, "reading", &group, e))?;
        Ok(Some(TargetStatus {
            target: group.to_string(),
            desired: info.target_size * wpi,
            current: info.instances_present.unwrap_or(info.target_size) * wpi,
        }))
    }
}

/// Spreads retries of concurrent pools apart (±20 %), without a random-number dependency.
fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    let factor = 0.8 + (nanos % 400) as f64 / 1000.0;
    d.mul_f64(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_gce_safe() {
        assert_eq!(label_value("linux"), "linux");
        assert_eq!(label_value("Linux Builders/2"), "linux_builders_2");
        assert_eq!(label_value(&"x".repeat(80)).len(), 63);
    }

    #[test]
    fn hostnames_match_names_and_fqdns() {
        let r = render_hostname("{{ name }}", "w-abcd", "z", "p").unwrap();
        assert!(hostname_matches("w-abcd", &r));
        assert!(hostname_matches("W-ABCD.us-central1-a.c.proj.internal", &r));
        assert!(!hostname_matches("w-abcde", &r));
        assert!(!hostname_matches("x.w-abcd", &r));
        let r = render_hostname(
            "{{ name }}.{{ zone }}.c.{{ project }}.internal",
            "w-1",
            "z-a",
            "p",
        )
        .unwrap();
        assert!(hostname_matches("w-1.z-a.c.p.internal", &r));
        assert!(!hostname_matches("w-1", &r));
        assert!(check_hostname_template("{{ nam }}").is_err());
        assert!(check_hostname_template("{{ '' }}").is_err());
    }

    #[test]
    fn jitter_stays_near() {
        for _ in 0..100 {
            let j = jitter(Duration::from_millis(1000));
            assert!(
                j >= Duration::from_millis(800) && j <= Duration::from_millis(1200),
                "{j:?}"
            );
        }
    }
}
