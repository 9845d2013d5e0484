//! An in-memory Auto Scaling group behind [`AsgApi`], doing what moto does not: termination
//! hooks holding instances in `Terminating:Wait` (from a lowered desired capacity or from
//! `TerminateInstanceInAutoScalingGroup`), `CompleteLifecycleAction`,
//! `RecordLifecycleActionHeartbeat`, the hook's heartbeat timeout applying its default result,
//! `OldestInstance` selection, `ProtectedFromScaleIn` and Min/Max validation, with AWS's error
//! codes and messages; scaling activities, among them launches that fail after
//! `SetDesiredCapacity` succeeded (a stockout, a quota: [`FakeAsg::fail_launches`]) and are
//! retried by [`FakeAsg::retry_launches`]; and capacity counted in weights (`WeightedCapacity`,
//! `DesiredCapacityType` vcpu), where one instance is several units of desired capacity. An observer hears of every instance the moment it is terminated, so a
//! harness can tell which builds were running on it.
//!
//! Warm pools (see [`warm`]): `PutWarmPool` / `DescribeWarmPool`; with `ReuseOnScaleIn` an
//! instance leaving in a scale-in goes back to the warm pool, waiting in `Warmed:Pending:Wait`
//! on the termination hook (the user guide's lifecycle) and then `Warmed:Stopped` (or
//! `Warmed:Hibernated`); a raised desired capacity takes ready warm instances first
//! (`Warmed:Stopped` -> `Pending`) and launches only the rest; [`FakeAsg::maintain_warm_pool`]
//! is AWS's asynchronous upkeep of the warm pool's size.
#![allow(dead_code)]

use async_trait::async_trait;
use autoscaler_aws_asg::client::{
    ApiError, AsgApi, Ec2Instance, GroupInfo, GroupInstance, GroupTag, HookInfo, ScalingActivity,
    WarmPool, WarmPoolConfig, TERMINATING_TRANSITION, TERMINATING_WAIT,
};
use chrono::{DateTime, Duration, Utc};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

mod launches;
mod warm;
use launches::fill;

/// Called with (group, instance id) when an instance is terminated (gone for good).
pub type Observer = Box<dyn Fn(&str, &str) + Send + Sync>;

/// When an instance started waiting on a termination hook, and its last heartbeat.
#[derive(Clone, Copy, Debug)]
pub struct Wait {
    pub since: DateTime<Utc>,
    pub last_heartbeat: DateTime<Utc>,
}

#[derive(Default)]
pub struct State {
    pub groups: HashMap<String, GroupInfo>,
    pub hooks: HashMap<String, Vec<HookInfo>>,
    pub ec2: HashMap<String, Ec2Instance>,
    pub instance_tags: HashMap<String, Vec<(String, String)>>,
    /// Every call, as `Action group/instance args`.
    pub calls: Vec<String>,
    /// Errors to return, per action, before answering normally.
    pub fail: HashMap<String, VecDeque<ApiError>>,
    next_id: u32,
    /// The fake's clock; `None` = the wall clock.
    pub now: Option<DateTime<Utc>>,
    /// Instances waiting on a termination hook.
    pub waits: HashMap<String, Wait>,
    /// Every instance terminated so far, in order, with how it ended.
    pub terminated: Vec<(String, String)>,
    /// Private IPs freed by terminated instances, handed to new ones first (EC2 reuses them).
    pub free_ips: VecDeque<u32>,
    /// Hand freed private IPs (and DNS names) to new instances.
    pub reuse_ips: bool,
    pub observer: Option<Observer>,
    /// For each instance that ended after waiting on a hook: milliseconds from the start of
    /// the wait (the termination call) to its end.
    pub gone_ms: Vec<i64>,
    /// Every group's scaling activities, oldest first, as AWS records them.
    pub activities: HashMap<String, Vec<ScalingActivity>>,
    /// Per group, the `StatusMessage` with which every launch fails now.
    pub launch_failure: HashMap<String, String>,
    /// Per group, the units of desired capacity one instance is (its weight, or its vCPUs).
    pub unit: HashMap<String, u32>,
    /// Groups whose launches AWS has accepted but not started yet (no activity so far).
    pub stalled: std::collections::HashSet<String>,
    next_activity: u32,
    /// Per group, its warm pool: settings and instances (never in the group's `instances`).
    pub warm: HashMap<String, WarmPool>,
    /// Warm-pool instances in `Warmed:Pending:Wait` on a launching hook (not the executor's).
    pub launch_waits: std::collections::HashSet<String>,
}

impl State {
    pub fn now(&self) -> DateTime<Utc> {
        self.now.unwrap_or_else(Utc::now)
    }
}

#[derive(Default)]
pub struct FakeAsg {
    pub state: Mutex<State>,
}

impl FakeAsg {
    /// A group with `n` InService instances `i-1..=i-n` (oldest first), whose private DNS names
    /// are `ip-10-0-0-K.ec2.internal`.
    pub fn with_group(name: &str, min: u32, max: u32, n: u32) -> Self {
        let f = FakeAsg::default();
        f.add_group(name, min, max, n);
        f
    }

    pub fn add_group(&self, name: &str, min: u32, max: u32, n: u32) {
        let mut s = self.state.lock().unwrap();
        s.groups.insert(
            name.to_string(),
            GroupInfo {
                name: name.to_string(),
                min_size: min,
                max_size: max,
                desired_capacity: 0,
                instances: vec![],
                tags: vec![],
                termination_policies: vec!["Default".into()],
                ..Default::default()
            },
        );
        for _ in 0..n {
            launch(&mut s, name, "InService");
        }
        s.groups.get_mut(name).unwrap().desired_capacity = n;
    }

    pub fn waiting(&self, group: &str) -> Vec<String> {
        self.group(group)
            .instances
            .iter()
            .filter(|i| i.is_waiting_to_terminate())
            .map(|i| i.instance_id.clone())
            .collect()
    }

    pub fn terminated(&self) -> Vec<(String, String)> {
        self.state.lock().unwrap().terminated.clone()
    }

    /// Sets the fake's clock (and from then on it stands still until set again).
    pub fn set_now(&self, t: DateTime<Utc>) {
        self.state.lock().unwrap().now = Some(t);
    }

    pub fn advance(&self, secs: i64) {
        let mut s = self.state.lock().unwrap();
        let t = s.now() + Duration::seconds(secs);
        s.now = Some(t);
    }

    pub fn set_observer(&self, f: Observer) {
        self.state.lock().unwrap().observer = Some(f);
    }

    pub fn set_protected(&self, group: &str, id: &str, protected: bool) {
        let mut s = self.state.lock().unwrap();
        let g = s.groups.get_mut(group).unwrap();
        g.instances
            .iter_mut()
            .find(|i| i.instance_id == id)
            .unwrap()
            .protected_from_scale_in = protected;
    }

    /// Tags an instance (as a launch template or an image would).
    pub fn tag(&self, id: &str, key: &str, value: &str) {
        let mut s = self.state.lock().unwrap();
        s.ec2
            .get_mut(id)
            .unwrap()
            .tags
            .insert(key.into(), value.into());
    }

    pub fn set_launch_time(&self, id: &str, t: DateTime<Utc>) {
        self.state
            .lock()
            .unwrap()
            .ec2
            .get_mut(id)
            .unwrap()
            .launch_time = Some(t);
    }

    /// Every `Pending` instance boots: `InService`. Returns their ids.
    pub fn boot_pending(&self, group: &str) -> Vec<String> {
        let mut s = self.state.lock().unwrap();
        let g = s.groups.get_mut(group).unwrap();
        let mut out = Vec::new();
        for i in g.instances.iter_mut() {
            if i.lifecycle_state.starts_with("Pending") {
                i.lifecycle_state = "InService".into();
                out.push(i.instance_id.clone());
            }
        }
        out
    }

    /// AWS's side of the hook's heartbeat timeout: an instance whose last heartbeat (or start
    /// of wait) is older than the hook's timeout gets the default result (for a termination
    /// hook, CONTINUE and ABANDON both terminate it). Returns the instances ended.
    pub fn expire_waits(&self) -> Vec<String> {
        let mut s = self.state.lock().unwrap();
        let now = s.now();
        let mut ended = Vec::new();
        let groups: Vec<String> = s.groups.keys().cloned().collect();
        for g in groups {
            let timeout = s
                .hooks
                .get(&g)
                .and_then(|hs| hs.iter().find(|h| h.transition == TERMINATING_TRANSITION))
                .and_then(|h| h.heartbeat_timeout)
                .unwrap_or(3600);
            let ids: Vec<String> = s.groups[&g]
                .instances
                .iter()
                .filter(|i| i.is_waiting_to_terminate())
                .map(|i| i.instance_id.clone())
                .collect();
            for id in ids {
                let w = s.waits[&id];
                if now - w.last_heartbeat >= Duration::seconds(i64::from(timeout)) {
                    end(&mut s, &g, &id, "heartbeat timeout: default result");
                    ended.push(id);
                }
            }
            // Going back to the warm pool: the default result lets it stop there.
            for id in warm::returning(&s, &g) {
                let w = s.waits[&id];
                if now - w.last_heartbeat >= Duration::seconds(i64::from(timeout)) {
                    warm::settle(&mut s, &g, &id);
                    ended.push(id);
                }
            }
        }
        ended
    }

    pub fn set_state(&self, group: &str, id: &str, lifecycle: &str) {
        let mut s = self.state.lock().unwrap();
        let g = s.groups.get_mut(group).unwrap();
        g.instances
            .iter_mut()
            .find(|i| i.instance_id == id)
            .unwrap()
            .lifecycle_state = lifecycle.into();
    }

    pub fn group(&self, name: &str) -> GroupInfo {
        self.state.lock().unwrap().groups[name].clone()
    }

    pub fn states(&self, name: &str) -> Vec<(String, String)> {
        self.group(name)
            .instances
            .iter()
            .map(|i| (i.instance_id.clone(), i.lifecycle_state.clone()))
            .collect()
    }

    pub fn calls(&self) -> Vec<String> {
        self.state.lock().unwrap().calls.clone()
    }

    pub fn take_calls(&self) -> Vec<String> {
        std::mem::take(&mut self.state.lock().unwrap().calls)
    }

    pub fn fail_next(&self, action: &str, err: ApiError) {
        self.state
            .lock()
            .unwrap()
            .fail
            .entry(action.into())
            .or_default()
            .push_back(err);
    }

    /// The hook the executor would make, so a test can start from a prepared group.
    pub fn put_default_hook(&self, group: &str) {
        self.state.lock().unwrap().hooks.insert(
            group.into(),
            vec![HookInfo {
                name: "vespene-drain".into(),
                transition: TERMINATING_TRANSITION.into(),
                heartbeat_timeout: Some(3600),
                default_result: Some("CONTINUE".into()),
            }],
        );
    }
}

fn launch(s: &mut State, group: &str, state: &str) -> String {
    s.next_id += 1;
    let n = s.next_id;
    let id = format!("i-{n}");
    let k = if s.reuse_ips {
        s.free_ips.pop_front().unwrap_or(n)
    } else {
        n
    };
    let mut tags: std::collections::BTreeMap<String, String> = s.groups[group]
        .tags
        .iter()
        .filter(|t| t.propagate_at_launch)
        .map(|t| (t.key.clone(), t.value.clone()))
        .collect();
    tags.insert("aws:autoscaling:groupName".to_string(), group.to_string());
    s.ec2.insert(
        id.clone(),
        Ec2Instance {
            instance_id: id.clone(),
            private_dns_name: Some(format!("ip-10-0-0-{k}.ec2.internal")),
            private_ip: Some(format!("10.0.0.{k}")),
            launch_time: Some(s.now()),
            state: "running".into(),
            zone: Some("us-east-1a".into()),
            tags,
        },
    );
    let g = s.groups.get_mut(group).unwrap();
    g.instances.push(GroupInstance {
        instance_id: id.clone(),
        lifecycle_state: state.into(),
        health_status: "Healthy".into(),
        protected_from_scale_in: false,
    });
    id
}

/// The instance leaves for good: out of the group and EC2, its IP free, the observer told.
fn end(s: &mut State, group: &str, id: &str, how: &str) {
    if let Some(g) = s.groups.get_mut(group) {
        g.instances.retain(|i| i.instance_id != id);
    }
    if let Some(w) = s.waits.remove(id) {
        let ms = (s.now() - w.since).num_milliseconds();
        s.gone_ms.push(ms);
    }
    if let Some(e) = s.ec2.remove(id) {
        if let Some(ip) = e
            .private_ip
            .and_then(|ip| ip.rsplit('.').next()?.parse().ok())
        {
            s.free_ips.push_back(ip);
        }
    }
    s.terminated.push((id.to_string(), how.to_string()));
    if let Some(f) = &s.observer {
        f(group, id);
    }
}

/// The instance starts leaving: `Terminating:Wait` when a termination hook exists, else gone;
/// in a scale-in of a group whose warm pool has `ReuseOnScaleIn`, back to the warm pool instead
/// (`Warmed:Pending:Wait` on the hook, else straight to its pool state).
fn start_termination(s: &mut State, group: &str, id: &str, hook: bool, how: &str) {
    start_leaving(s, group, id, hook, how, false)
}

fn start_leaving(s: &mut State, group: &str, id: &str, hook: bool, how: &str, scale_in: bool) {
    if scale_in && warm::reuses(s, group) {
        warm::return_to_pool(s, group, id, hook);
        return;
    }
    if hook {
        let now = s.now();
        let g = s.groups.get_mut(group).unwrap();
        let i = g
            .instances
            .iter_mut()
            .find(|i| i.instance_id == id)
            .unwrap();
        i.lifecycle_state = TERMINATING_WAIT.into();
        s.waits.insert(
            id.to_string(),
            Wait {
                since: now,
                last_heartbeat: now,
            },
        );
    } else {
        end(s, group, id, how);
    }
}

fn check(s: &mut State, action: &str) -> Result<(), ApiError> {
    if let Some(q) = s.fail.get_mut(action) {
        if let Some(e) = q.pop_front() {
            return Err(e);
        }
    }
    Ok(())
}

fn validation(msg: String) -> ApiError {
    ApiError::service("ValidationError", msg, 400)
}

fn has_termination_hook(s: &State, group: &str) -> bool {
    s.hooks
        .get(group)
        .is_some_and(|hs| hs.iter().any(|h| h.transition == TERMINATING_TRANSITION))
}

#[async_trait]
impl AsgApi for FakeAsg {
    async fn describe_groups(&self, names: &[String]) -> Result<Vec<GroupInfo>, ApiError> {
        let mut s = self.state.lock().unwrap();
        s.calls
            .push(format!("DescribeAutoScalingGroups {}", names.join(",")));
        check(&mut s, "DescribeAutoScalingGroups")?;
        assert!(names.len() <= 100, "MaxRecords is 100");
        Ok(names
            .iter()
            .filter_map(|n| {
                let mut g = s.groups.get(n).cloned()?;
                g.warm_pool = s.warm.get(n).and_then(|w| w.config.clone());
                Some(g)
            })
            .collect())
    }

    async fn describe_scaling_activities(
        &self,
        group: &str,
        limit: usize,
    ) -> Result<Vec<ScalingActivity>, ApiError> {
        let mut s = self.state.lock().unwrap();
        s.calls
            .push(format!("DescribeScalingActivities {group} {limit}"));
        check(&mut s, "DescribeScalingActivities")?;
        let mut out: Vec<ScalingActivity> = s.activities.get(group).cloned().unwrap_or_default();
        out.reverse();
        out.truncate(limit);
        Ok(out)
    }

    async fn set_desired_capacity(&self, group: &str, desired: u32) -> Result<(), ApiError> {
        let mut s = self.state.lock().unwrap();
        s.calls
            .push(format!("SetDesiredCapacity {group} {desired}"));
        check(&mut s, "SetDesiredCapacity")?;
        let hook = has_termination_hook(&s, group);
        let g = s
            .groups
            .get(group)
            .ok_or_else(|| validation(format!("AutoScalingGroup name not found - {group}")))?
            .clone();
        if desired > g.max_size {
            return Err(validation(format!(
                "New SetDesiredCapacity value {desired} is above max value {} for the AutoScalingGroup.",
                g.max_size
            )));
        }
        if desired < g.min_size {
            return Err(validation(format!(
                "New SetDesiredCapacity value {desired} is below min value {} for the AutoScalingGroup.",
                g.min_size
            )));
        }
        let unit = s.unit.get(group).copied().unwrap_or(1).max(1);
        let active = g
            .instances
            .iter()
            .filter(|i| i.counts_as_capacity())
            .count() as u32
            * unit;
        if desired > active {
            s.groups.get_mut(group).unwrap().desired_capacity = desired;
            // Ready warm instances first; launches only for the rest.
            warm::draw(&mut s, group, ((desired - active) / unit) as usize);
            fill(&mut s, group);
        } else {
            // OldestInstance: the first launched go first; protected ones are skipped.
            let remove = ((active - desired) / unit) as usize;
            let victims: Vec<String> = s.groups[group]
                .instances
                .iter()
                .filter(|i| i.counts_as_capacity() && !i.protected_from_scale_in)
                .take(remove)
                .map(|i| i.instance_id.clone())
                .collect();
            for id in victims {
                start_leaving(
                    &mut s,
                    group,
                    &id,
                    hook,
                    "scale-in by desired capacity",
                    true,
                );
            }
        }
        s.groups.get_mut(group).unwrap().desired_capacity = desired;
        Ok(())
    }

    async fn update_termination_policies(
        &self,
        group: &str,
        policies: &[String],
    ) -> Result<(), ApiError> {
        let mut s = self.state.lock().unwrap();
        s.calls.push(format!(
            "UpdateAutoScalingGroup {group} {}",
            policies.join(",")
        ));
        check(&mut s, "UpdateAutoScalingGroup")?;
        s.groups.get_mut(group).unwrap().termination_policies = policies.to_vec();
        Ok(())
    }

    async fn create_or_update_tags(&self, group: &str, tags: &[GroupTag]) -> Result<(), ApiError> {
        let mut s = self.state.lock().unwrap();
        let shown: Vec<String> = tags
            .iter()
            .map(|t| format!("{}={}", t.key, t.value))
            .collect();
        s.calls
            .push(format!("CreateOrUpdateTags {group} {}", shown.join(",")));
        check(&mut s, "CreateOrUpdateTags")?;
        let g = s.groups.get_mut(group).unwrap();
        for t in tags {
            g.tags.retain(|x| x.key != t.key);
            g.tags.push(t.clone());
        }
        Ok(())
    }

    async fn describe_lifecycle_hooks(
        &self,
        group: &str,
        names: &[String],
    ) -> Result<Vec<HookInfo>, ApiError> {
        let mut s = self.state.lock().unwrap();
        s.calls.push(format!("DescribeLifecycleHooks {group}"));
        check(&mut s, "DescribeLifecycleHooks")?;
        Ok(s.hooks
            .get(group)
            .map(|hs| {
                hs.iter()
                    .filter(|h| names.is_empty() || names.contains(&h.name))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn put_lifecycle_hook(&self, group: &str, hook: &HookInfo) -> Result<(), ApiError> {
        let mut s = self.state.lock().unwrap();
        s.calls.push(format!(
            "PutLifecycleHook {group} {} {} {:?} {:?}",
            hook.name, hook.transition, hook.heartbeat_timeout, hook.default_result
        ));
        check(&mut s, "PutLifecycleHook")?;
        let hs = s.hooks.entry(group.into()).or_default();
        hs.retain(|h| h.name != hook.name);
        hs.push(hook.clone());
        Ok(())
    }

    async fn complete_lifecycle_action(
        &self,
        group: &str,
        hook: &str,
        instance_id: &str,
        result: &str,
    ) -> Result<(), ApiError> {
        let mut s = self.state.lock().unwrap();
        s.calls.push(format!(
            "CompleteLifecycleAction {group} {hook} {instance_id} {result}"
        ));
        check(&mut s, "CompleteLifecycleAction")?;
        if warm::is_returning(&s, group, instance_id) {
            warm::settle(&mut s, group, instance_id);
            return Ok(());
        }
        let g = s.groups.get_mut(group).unwrap();
        if !g
            .instances
            .iter()
            .any(|i| i.instance_id == instance_id && i.is_waiting_to_terminate())
        {
            return Err(validation(format!(
                "No active Lifecycle Action found with instance ID {instance_id}"
            )));
        }
        end(&mut s, group, instance_id, "CompleteLifecycleAction");
        Ok(())
    }

    async fn record_lifecycle_action_heartbeat(
        &self,
        group: &str,
        hook: &str,
        instance_id: &str,
    ) -> Result<(), ApiError> {
        let mut s = self.state.lock().unwrap();
        s.calls.push(format!(
            "RecordLifecycleActionHeartbeat {group} {hook} {instance_id}"
        ));
        check(&mut s, "RecordLifecycleActionHeartbeat")?;
        let g = &s.groups[group];
        if !warm::is_returning(&s, group, instance_id)
            && !g
                .instances
                .iter()
                .any(|i| i.instance_id == instance_id && i.is_waiting_to_terminate())
        {
            return Err(validation(format!(
                "No active Lifecycle Action found with instance ID {instance_id}"
            )));
        }
        let now = s.now();
        if let Some(w) = s.waits.get_mut(instance_id) {
            w.last_heartbeat = now;
        }
        Ok(())
    }

    async fn terminate_instance(
        &self,
        instance_id: &str,
        decrement_desired: bool,
    ) -> Result<(), ApiError> {
        let mut s = self.state.lock().unwrap();
        s.calls.push(format!(
            "TerminateInstanceInAutoScalingGroup {instance_id} {decrement_desired}"
        ));
        check(&mut s, "TerminateInstanceInAutoScalingGroup")?;
        let Some(group) = s
            .groups
            .values()
            .find(|g| g.instances.iter().any(|i| i.instance_id == instance_id))
            .map(|g| g.name.clone())
        else {
            return Err(validation(format!(
                "Instance Id not found - No managed instance found for instance ID {instance_id}"
            )));
        };
        let g = &s.groups[&group];
        let member = g
            .instances
            .iter()
            .find(|i| i.instance_id == instance_id)
            .unwrap();
        if !member.counts_as_capacity() {
            // AWS accepts the call on an instance already leaving and does nothing more.
            return Ok(());
        }
        if decrement_desired && g.desired_capacity <= g.min_size {
            return Err(validation(format!(
                "Currently, desiredSize equals minSize ({}). Terminating instance without \
                 replacement will violate group's min size constraint. Either set \
                 shouldDecrementDesiredCapacity flag to false or lower group's min size.",
                g.min_size
            )));
        }
        let hook = has_termination_hook(&s, &group);
        if decrement_desired {
            s.groups.get_mut(&group).unwrap().desired_capacity -= 1;
        }
        // With ShouldDecrementDesiredCapacity the group shrinks: a scale-in, which
        // ReuseOnScaleIn turns into a return to the warm pool. Without it the instance is
        // replaced, and ends.
        start_leaving(
            &mut s,
            &group,
            instance_id,
            hook,
            "TerminateInstanceInAutoScalingGroup",
            decrement_desired,
        );
        if !decrement_desired {
            fill(&mut s, &group);
        }
        Ok(())
    }

    async fn describe_warm_pool(&self, group: &str) -> Result<WarmPool, ApiError> {
        let mut s = self.state.lock().unwrap();
        s.calls.push(format!("DescribeWarmPool {group}"));
        check(&mut s, "DescribeWarmPool")?;
        if !s.groups.contains_key(group) {
            return Err(validation(format!(
                "AutoScalingGroup name not found - {group}"
            )));
        }
        Ok(s.warm.get(group).cloned().unwrap_or_default())
    }

    async fn put_warm_pool(&self, group: &str, cfg: &WarmPoolConfig) -> Result<(), ApiError> {
        let mut s = self.state.lock().unwrap();
        s.calls.push(format!(
            "PutWarmPool {group} min={} max_prepared={:?} {} reuse={}",
            cfg.min_size, cfg.max_group_prepared_capacity, cfg.pool_state, cfg.reuse_on_scale_in
        ));
        check(&mut s, "PutWarmPool")?;
        warm::put(&mut s, group, cfg)
    }

    async fn describe_instances(&self, ids: &[String]) -> Result<Vec<Ec2Instance>, ApiError> {
        let mut s = self.state.lock().unwrap();
        s.calls.push(format!("DescribeInstances {}", ids.join(",")));
        check(&mut s, "DescribeInstances")?;
        Ok(ids.iter().filter_map(|i| s.ec2.get(i).cloned()).collect())
    }

    async fn tag_instances(
        &self,
        ids: &[String],
        tags: &[(String, String)],
    ) -> Result<(), ApiError> {
        let mut s = self.state.lock().unwrap();
        s.calls.push(format!("CreateTags {}", ids.join(",")));
        check(&mut s, "CreateTags")?;
        for id in ids {
            s.instance_tags
                .entry(id.clone())
                .or_default()
                .extend(tags.iter().cloned());
            if let Some(e) = s.ec2.get_mut(id) {
                e.tags.extend(tags.iter().cloned());
            }
        }
        Ok(())
    }

    async fn describe_worker_instances(&self) -> Result<Vec<Ec2Instance>, ApiError> {
        let mut s = self.state.lock().unwrap();
        s.calls
            .push("DescribeInstances tag:vespene_worker=true".into());
        check(&mut s, "DescribeInstances")?;
        let mut out: Vec<Ec2Instance> = s
            .ec2
            .values()
            .filter(|e| e.tags.get("vespene_worker").map(String::as_str) == Some("true"))
            .filter(|e| e.state == "pending" || e.state == "running")
            .cloned()
            .collect();
        out.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
        Ok(out)
    }
}
