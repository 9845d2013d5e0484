//! An in-memory Auto Scaling group behind [`AsgApi`], doing what moto does not: termination
//! hooks holding instances in `Terminating:Wait`, `CompleteLifecycleAction`,
//! `RecordLifecycleActionHeartbeat`, `OldestInstance` selection and Min/Max validation, with
//! AWS's error codes and messages.
#![allow(dead_code)]

use async_trait::async_trait;
use autoscaler_aws_asg::client::{
    ApiError, AsgApi, Ec2Instance, GroupInfo, GroupInstance, GroupTag, HookInfo,
    TERMINATING_TRANSITION, TERMINATING_WAIT,
};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

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
            },
        );
        for _ in 0..n {
            launch(&mut s, name, "InService");
        }
        s.groups.get_mut(name).unwrap().desired_capacity = n;
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
    let k = s.next_id;
    let id = format!("i-{k}");
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
            launch_time: None,
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
    });
    id
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
            .filter_map(|n| s.groups.get(n).cloned())
            .collect())
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
        let active = g
            .instances
            .iter()
            .filter(|i| i.counts_as_capacity())
            .count() as u32;
        if desired > active {
            for _ in active..desired {
                launch(&mut s, group, "Pending");
            }
        } else {
            // OldestInstance: the first launched go first.
            let mut remove = active - desired;
            let g = s.groups.get_mut(group).unwrap();
            for i in g.instances.iter_mut() {
                if remove == 0 {
                    break;
                }
                if i.counts_as_capacity() {
                    i.lifecycle_state = if hook {
                        TERMINATING_WAIT.into()
                    } else {
                        "Terminating".into()
                    };
                    remove -= 1;
                }
            }
            g.instances.retain(|i| i.lifecycle_state != "Terminating");
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
        let g = s.groups.get_mut(group).unwrap();
        let Some(pos) = g
            .instances
            .iter()
            .position(|i| i.instance_id == instance_id && i.is_waiting_to_terminate())
        else {
            return Err(validation(format!(
                "No active Lifecycle Action found with instance ID {instance_id}"
            )));
        };
        g.instances.remove(pos);
        s.ec2.remove(instance_id);
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
        if !g
            .instances
            .iter()
            .any(|i| i.instance_id == instance_id && i.is_waiting_to_terminate())
        {
            return Err(validation(format!(
                "No active Lifecycle Action found with instance ID {instance_id}"
            )));
        }
        Ok(())
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
