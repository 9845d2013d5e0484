//! The fake's warm pools, as the Auto Scaling user guide describes them ("Use lifecycle hooks
//! with a warm pool"): the warm pool's instances are listed by `DescribeWarmPool` only, never
//! among the group's instances; with `ReuseOnScaleIn` an instance leaving in a scale-in waits
//! in `Warmed:Pending:Wait` on the termination hook and then stops (or hibernates) in the warm
//! pool; a scale-out takes ready warm instances first; the warm pool's size is
//! `max(MinSize, MaxGroupPreparedCapacity - DesiredCapacity)`, `MaxGroupPreparedCapacity`
//! defaulting to the group's `MaxSize`, kept by AWS in the background.

use super::{launch, validation, FakeAsg, State, Wait};
use autoscaler_aws_asg::client::{ApiError, GroupInstance, WarmPoolConfig, WARMED_PENDING_WAIT};

fn parked(cfg: &WarmPoolConfig) -> String {
    format!("Warmed:{}", cfg.pool_state)
}

fn is_ready(i: &GroupInstance) -> bool {
    i.lifecycle_state == "Warmed:Stopped" || i.lifecycle_state == "Warmed:Hibernated"
}

pub(super) fn reuses(s: &State, group: &str) -> bool {
    s.warm
        .get(group)
        .and_then(|w| w.config.as_ref())
        .is_some_and(|c| c.reuse_on_scale_in)
}

pub(super) fn put(s: &mut State, group: &str, cfg: &WarmPoolConfig) -> Result<(), ApiError> {
    if !s.groups.contains_key(group) {
        return Err(validation(format!(
            "AutoScalingGroup name not found - {group}"
        )));
    }
    if let Some(m) = cfg.max_group_prepared_capacity {
        if m >= 0 && (m as u32) < cfg.min_size {
            return Err(validation(format!(
                "MinSize {} cannot be greater than MaxGroupPreparedCapacity {m}.",
                cfg.min_size
            )));
        }
    }
    let w = s.warm.entry(group.to_string()).or_default();
    w.config = Some(WarmPoolConfig {
        status: None,
        ..cfg.clone()
    });
    Ok(())
}

/// A member leaves the group for the warm pool (a scale-in with `ReuseOnScaleIn`).
pub(super) fn return_to_pool(s: &mut State, group: &str, id: &str, hook: bool) {
    let now = s.now();
    let g = s.groups.get_mut(group).unwrap();
    let pos = g
        .instances
        .iter()
        .position(|i| i.instance_id == id)
        .unwrap();
    let mut member = g.instances.remove(pos);
    let cfg = s.warm[group].config.clone().unwrap();
    if hook {
        member.lifecycle_state = WARMED_PENDING_WAIT.into();
        s.waits.insert(
            id.to_string(),
            Wait {
                since: now,
                last_heartbeat: now,
            },
        );
    } else {
        member.lifecycle_state = parked(&cfg);
        if let Some(e) = s.ec2.get_mut(id) {
            e.state = "stopped".into();
        }
    }
    s.warm.get_mut(group).unwrap().instances.push(member);
}

pub(super) fn is_returning(s: &State, group: &str, id: &str) -> bool {
    if s.launch_waits.contains(id) {
        return false;
    }
    s.warm.get(group).is_some_and(|w| {
        w.instances
            .iter()
            .any(|i| i.instance_id == id && i.lifecycle_state == WARMED_PENDING_WAIT)
    })
}

pub(super) fn returning(s: &State, group: &str) -> Vec<String> {
    s.warm
        .get(group)
        .map(|w| {
            w.instances
                .iter()
                .filter(|i| i.lifecycle_state == WARMED_PENDING_WAIT)
                .filter(|i| !s.launch_waits.contains(&i.instance_id))
                .map(|i| i.instance_id.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// The hook's wait is over (completed, or its timeout's default result): the instance stops
/// (hibernates) in the warm pool.
pub(super) fn settle(s: &mut State, group: &str, id: &str) {
    if let Some(w) = s.waits.remove(id) {
        let ms = (s.now() - w.since).num_milliseconds();
        s.gone_ms.push(ms);
    }
    let w = s.warm.get_mut(group).unwrap();
    let state = parked(w.config.as_ref().unwrap());
    if let Some(i) = w.instances.iter_mut().find(|i| i.instance_id == id) {
        i.lifecycle_state = state;
    }
    if let Some(e) = s.ec2.get_mut(id) {
        e.state = "stopped".into();
    }
}

/// A raised desired capacity: up to `n` ready warm instances (oldest first) join the group as
/// `Pending`; returns how many.
pub(super) fn draw(s: &mut State, group: &str, n: usize) -> usize {
    let Some(w) = s.warm.get_mut(group) else {
        return 0;
    };
    let mut taken = Vec::new();
    while taken.len() < n {
        let Some(pos) = w.instances.iter().position(is_ready) else {
            break;
        };
        let mut i = w.instances.remove(pos);
        i.lifecycle_state = "Pending".into();
        taken.push(i);
    }
    let count = taken.len();
    for i in taken {
        if let Some(e) = s.ec2.get_mut(&i.instance_id) {
            e.state = "pending".into();
        }
        s.groups.get_mut(group).unwrap().instances.push(i);
    }
    count
}

impl FakeAsg {
    /// A warm pool on the group, as a user or an earlier cycle made it, holding `ready`
    /// instances already in its pool state.
    pub fn add_warm_pool(&self, group: &str, cfg: WarmPoolConfig, ready: u32) {
        let mut s = self.state.lock().unwrap();
        put(&mut s, group, &cfg).unwrap();
        for _ in 0..ready {
            launch_into_pool(&mut s, group);
        }
    }

    /// An instance launching into the warm pool, held in `Warmed:Pending:Wait` by a
    /// launching hook of the user's: lifecycle calls naming the executor's termination hook are
    /// refused for it ("No active Lifecycle Action"), as AWS refuses a hook that is not the
    /// one the instance waits on.
    pub fn launch_into_pool_on_launch_hook(&self, group: &str) -> String {
        let mut s = self.state.lock().unwrap();
        let id = launch_into_pool(&mut s, group);
        let w = s.warm.get_mut(group).unwrap();
        w.instances.last_mut().unwrap().lifecycle_state = WARMED_PENDING_WAIT.into();
        if let Some(e) = s.ec2.get_mut(&id) {
            e.state = "running".into();
        }
        s.launch_waits.insert(id.clone());
        id
    }

    /// The warm pool's instances and their lifecycle states.
    pub fn warm_states(&self, group: &str) -> Vec<(String, String)> {
        self.state
            .lock()
            .unwrap()
            .warm
            .get(group)
            .map(|w| {
                w.instances
                    .iter()
                    .map(|i| (i.instance_id.clone(), i.lifecycle_state.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The warm pool's settings.
    pub fn warm_config(&self, group: &str) -> Option<WarmPoolConfig> {
        self.state
            .lock()
            .unwrap()
            .warm
            .get(group)
            .and_then(|w| w.config.clone())
    }

    /// AWS's background upkeep: launches instances into the warm pool (straight to its pool
    /// state: their own launch is not what these tests are about) up to its size, or ends
    /// ready ones beyond it. Instances still going back (`Warmed:Pending:Wait`) count and are
    /// never ended. Returns (launched, ended).
    pub fn maintain_warm_pool(&self, group: &str) -> (Vec<String>, Vec<String>) {
        let mut s = self.state.lock().unwrap();
        let Some(cfg) = s.warm.get(group).and_then(|w| w.config.clone()) else {
            return (vec![], vec![]);
        };
        let g = &s.groups[group];
        let prepared = cfg
            .max_group_prepared_capacity
            .filter(|m| *m >= 0)
            .map(|m| m as u32)
            .unwrap_or(g.max_size);
        let size = cfg
            .min_size
            .max(prepared.saturating_sub(g.desired_capacity)) as usize;
        let have = s.warm[group].instances.len();
        let (mut launched, mut ended) = (vec![], vec![]);
        for _ in have..size {
            launched.push(launch_into_pool(&mut s, group));
        }
        let extra = have.saturating_sub(size);
        for _ in 0..extra {
            let w = s.warm.get_mut(group).unwrap();
            let Some(pos) = w.instances.iter().position(is_ready) else {
                break;
            };
            let i = w.instances.remove(pos);
            s.ec2.remove(&i.instance_id);
            s.terminated
                .push((i.instance_id.clone(), "warm pool above its size".into()));
            ended.push(i.instance_id);
        }
        (launched, ended)
    }
}

fn launch_into_pool(s: &mut State, group: &str) -> String {
    let id = launch(s, group, "InService");
    let g = s.groups.get_mut(group).unwrap();
    let mut i = g.instances.pop().unwrap();
    let cfg = s.warm[group].config.clone().unwrap();
    i.lifecycle_state = parked(&cfg);
    if let Some(e) = s.ec2.get_mut(&id) {
        e.state = "stopped".into();
    }
    s.warm.get_mut(group).unwrap().instances.push(i);
    id
}
