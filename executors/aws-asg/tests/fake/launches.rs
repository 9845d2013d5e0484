//! The fake's scaling activities and capacity units: launches that AWS accepts and then fails
//! (a stockout, a quota), its retries, and groups whose desired capacity counts weights or
//! vCPUs instead of instances.

use super::{launch, FakeAsg, State};
use autoscaler_aws_asg::client::ScalingActivity;

impl FakeAsg {
    /// From now on every launch of the group fails with `message` (AWS's `StatusMessage`): a
    /// raised desired capacity is accepted and launches nothing, leaving a `Failed` activity.
    pub fn fail_launches(&self, group: &str, message: &str) {
        self.state
            .lock()
            .unwrap()
            .launch_failure
            .insert(group.into(), message.into());
    }

    /// Launches work again.
    pub fn heal_launches(&self, group: &str) {
        let mut s = self.state.lock().unwrap();
        s.launch_failure.remove(group);
        s.stalled.remove(group);
    }

    /// A raised desired capacity is accepted and nothing happens yet: the seconds before AWS
    /// starts the launch activity.
    pub fn stall_launches(&self, group: &str) {
        self.state.lock().unwrap().stalled.insert(group.into());
    }

    /// Records an activity as AWS would have, at the fake's current time.
    pub fn add_activity(&self, group: &str, code: &str, description: &str, message: &str) {
        let mut s = self.state.lock().unwrap();
        record(&mut s, group, code, description.into(), message);
    }

    /// AWS's own retry while the group is below its desired capacity: launches what is
    /// missing, or records another failed activity per missing instance.
    pub fn retry_launches(&self, group: &str) {
        let mut s = self.state.lock().unwrap();
        fill(&mut s, group);
    }

    /// The group counts capacity in `unit`s per instance: `DesiredCapacityType` `capacity_type`
    /// (`vcpu`, `memory-mib`; `None` keeps it unset) and, with `weight`, a mixed instances
    /// policy whose override `m5.xlarge` carries `WeightedCapacity=weight`.
    pub fn count_in_units(
        &self,
        group: &str,
        capacity_type: Option<&str>,
        weight: Option<&str>,
        unit: u32,
    ) {
        let mut s = self.state.lock().unwrap();
        s.unit.insert(group.into(), unit);
        let g = s.groups.get_mut(group).unwrap();
        g.desired_capacity_type = capacity_type.map(str::to_string);
        g.instance_weights = weight
            .map(|w| vec![("m5.xlarge".to_string(), w.to_string())])
            .unwrap_or_default();
    }

    /// The group's scaling activities, newest first.
    pub fn activities(&self, group: &str) -> Vec<ScalingActivity> {
        let mut a = self
            .state
            .lock()
            .unwrap()
            .activities
            .get(group)
            .cloned()
            .unwrap_or_default();
        a.reverse();
        a
    }
}

fn record(s: &mut State, group: &str, code: &str, description: String, message: &str) {
    s.next_activity += 1;
    let a = ScalingActivity {
        activity_id: format!("act-{}", s.next_activity),
        description,
        cause: format!(
            "At {} an instance was started in response to a difference between desired and \
             actual capacity.",
            s.now().format("%Y-%m-%dT%H:%M:%SZ")
        ),
        status_code: code.into(),
        status_message: message.into(),
        start_time: Some(s.now()),
    };
    s.activities.entry(group.into()).or_default().push(a);
}

/// Launches instances until the group's capacity (in units) reaches its desired capacity, each
/// a `Successful` activity; while launches fail, one `Failed` activity per missing instance
/// instead, and nothing is launched.
pub(super) fn fill(s: &mut State, group: &str) {
    if s.stalled.contains(group) {
        return;
    }
    let unit = s.unit.get(group).copied().unwrap_or(1).max(1);
    let g = &s.groups[group];
    let have = g
        .instances
        .iter()
        .filter(|i| i.counts_as_capacity())
        .count() as u32
        * unit;
    let missing = g.desired_capacity.saturating_sub(have).div_ceil(unit);
    for _ in 0..missing {
        match s.launch_failure.get(group).cloned() {
            Some(msg) => record(
                s,
                group,
                "Failed",
                format!("Launching a new EC2 instance.  Status Reason: {msg}"),
                &msg,
            ),
            None => {
                let id = launch(s, group, "Pending");
                record(
                    s,
                    group,
                    "Successful",
                    format!("Launching a new EC2 instance: {id}"),
                    "",
                );
            }
        }
    }
}
