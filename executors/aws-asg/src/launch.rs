//! Launches AWS accepted but could not make. `SetDesiredCapacity` succeeding only means AWS
//! will try: a quota (`VcpuLimitExceeded`), a stockout (`InsufficientInstanceCapacity`) or a
//! broken launch template shows up later, as failed scaling activities, while the group stays
//! below its desired capacity. This module reads them (only then: a group at its desired
//! capacity costs no request) and turns them into [`LaunchFailure`]s: the pool fails with
//! [`ErrorKind::LaunchFailed`] and the audit shows `launch_failing`.
//!
//! Which activities count: newest first, every `Failed` or `Cancelled` one that is not a
//! termination, back to the first of
//! - a successful launch (the launches after it are the ones failing now),
//! - the executor's own last raise of the group's desired capacity, less [`CLOCK_SKEW`](crate::policy::CLOCK_SKEW) (what
//!   it asked for then is what is failing; older failures belong to an earlier size), when
//!   this process made one,
//! - [`ACTIVITIES_READ`] activities.

use crate::client::{ApiError, ScalingActivity, ACTIVITIES_READ};
use crate::run::{Applier, Run};
use autoscaler_executor::{ErrorKind, ExecutorError, LaunchFailure};
use chrono::{DateTime, Utc};

/// The short code of a failed activity, for the metric label and the log's `reason`: AWS's
/// own error code where the message carries one, else the code of a well-known message, else
/// the activity's `StatusCode` (`Failed` / `Cancelled`). In order:
/// 1. the word before ` - ` when it looks like an error code: launches through a launch
///    template say `Could not launch On-Demand Instances. InsufficientInstanceCapacity - We
///    currently do not have sufficient …` (likewise `VcpuLimitExceeded`,
///    `InvalidParameterValue`, `UnfulfillableCapacity`, …);
/// 2. a dotted EC2 code anywhere (`Client.InternalError: Client error on launch`);
/// 3. the classic messages without a code: `… do not have sufficient … capacity …` →
///    `InsufficientInstanceCapacity`, `… vCPU limit …` → `VcpuLimitExceeded`, `… instance
///    limit …` → `InstanceLimitExceeded`, `… not enough free addresses in subnet …` →
///    `InsufficientFreeAddressesInSubnet`.
pub(crate) fn launch_reason(status_message: &str, status_code: &str) -> String {
    if let Some((before, _)) = status_message.split_once(" - ") {
        if let Some(word) = before.split_whitespace().last() {
            if is_code(word) {
                return word.to_string();
            }
        }
    }
    for word in status_message.split_whitespace() {
        let word = word.trim_end_matches([':', '.', ',', ';']);
        if (word.starts_with("Client.") || word.starts_with("Server.")) && is_code(word) {
            return word.to_string();
        }
    }
    let lower = status_message.to_ascii_lowercase();
    let known = [
        (
            lower.contains("sufficient") && lower.contains("capacity"),
            "InsufficientInstanceCapacity",
        ),
        (lower.contains("vcpu limit"), "VcpuLimitExceeded"),
        (lower.contains("instance limit"), "InstanceLimitExceeded"),
        (
            lower.contains("not enough free addresses"),
            "InsufficientFreeAddressesInSubnet",
        ),
    ];
    if let Some((_, code)) = known.iter().find(|(hit, _)| *hit) {
        return code.to_string();
    }
    if is_code(status_code) {
        status_code.to_string()
    } else {
        "Failed".to_string()
    }
}

/// An AWS error code: an upper-case letter, then letters, digits and dots, up to 64 (EC2's
/// longest), with a lower-case letter somewhere, so a shouted word or a number is not one.
/// This also bounds what reaches a metric label.
fn is_code(w: &str) -> bool {
    let mut chars = w.chars();
    chars.next().is_some_and(|c| c.is_ascii_uppercase())
        && w.len() <= 64
        && w.len() >= 3
        && w.chars().all(|c| c.is_ascii_alphanumeric() || c == '.')
        && w.chars().any(|c| c.is_ascii_lowercase())
        && !w.ends_with('.')
}

/// The launches failing now, newest first (see the module docs for which count). `since` is
/// the executor's own last raise of the desired capacity, when it made one.
pub(crate) fn current_failures(
    activities: &[ScalingActivity],
    since: Option<DateTime<Utc>>,
) -> Vec<LaunchFailure> {
    let mut sorted: Vec<&ScalingActivity> = activities.iter().collect();
    // Newest first whatever the answer's order (AWS lists activities in progress first).
    sorted.sort_by_key(|a| std::cmp::Reverse(a.start_time));
    let mut out = Vec::new();
    for a in sorted {
        if since.is_some_and(|s| a.start_time.is_some_and(|t| t < s)) || a.launched() {
            break;
        }
        if a.failed() && !a.description.starts_with("Terminating") {
            let message = if a.status_message.trim().is_empty() {
                a.description.trim().to_string()
            } else {
                a.status_message.trim().to_string()
            };
            out.push(LaunchFailure {
                reason: launch_reason(&a.status_message, &a.status_code),
                message,
                instance: None,
                since: a.start_time,
            });
        }
    }
    out
}

/// The pool's error for `failures` (newest first, at least one): how far the group is below
/// its desired capacity, how many launches failed since when, and the newest in AWS's words.
pub(crate) fn launch_error(
    pool: &str,
    group: &str,
    capacity: u32,
    desired: u32,
    failures: &[LaunchFailure],
) -> ExecutorError {
    let newest = &failures[0];
    let oldest = failures.iter().filter_map(|f| f.since).min();
    let since = oldest
        .map(|t| format!(" since {}", t.format("%Y-%m-%d %H:%M:%S UTC")))
        .unwrap_or_default();
    let mut others: Vec<(&str, usize)> = Vec::new();
    for f in failures.iter().filter(|f| f.reason != newest.reason) {
        match others.iter_mut().find(|(r, _)| *r == f.reason) {
            Some((_, n)) => *n += 1,
            None => others.push((&f.reason, 1)),
        }
    }
    let also = if others.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = others.iter().map(|(r, n)| format!("{r} ({n})")).collect();
        format!("; also {}", list.join(", "))
    };
    let n = failures.len();
    ExecutorError::new(
        pool,
        ErrorKind::LaunchFailed,
        format!(
            "Auto Scaling group {group}: {} of {desired} desired instances not launched: \
             DescribeScalingActivities reports {n} failed launch{}{since}; newest: {}: {}{also}",
            desired.saturating_sub(capacity),
            if n == 1 { "" } else { "es" },
            newest.reason,
            newest.message
        ),
    )
    .with_reason(newest.reason.clone())
}

impl Applier {
    /// The group's failing launches, read only because it is below its desired capacity.
    pub(crate) async fn read_launch_failures(
        &self,
        group: &str,
        since: Option<DateTime<Utc>>,
    ) -> Result<Vec<LaunchFailure>, ApiError> {
        let activities = self
            .api
            .describe_scaling_activities(group, ACTIVITIES_READ)
            .await?;
        Ok(current_failures(&activities, since))
    }

    /// Records on `run` why the group stays below its desired capacity, if AWS says.
    pub(crate) async fn check_launches(&self, run: &mut Run<'_>, capacity: u32, desired: u32) {
        let since = self.raised.lock().unwrap().get(run.group).copied();
        match self.read_launch_failures(run.group, since).await {
            Ok(f) if f.is_empty() => {
                tracing::debug!(pool = %run.pool.name, group = %run.group, capacity, desired,
                    "below desired capacity, and no failed launch since the last change");
            }
            Ok(f) => {
                let e = launch_error(&run.pool.name, run.group, capacity, desired, &f);
                run.errors.push(e);
            }
            Err(e) => run.api_error(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn act(code: &str, desc: &str, msg: &str, secs: i64) -> ScalingActivity {
        ScalingActivity {
            activity_id: format!("a-{secs}"),
            description: desc.into(),
            cause: String::new(),
            status_code: code.into(),
            status_message: msg.into(),
            start_time: DateTime::from_timestamp(1_700_000_000 + secs, 0),
        }
    }

    #[test]
    fn reasons_come_from_the_message() {
        let cases = [
            (
                "Could not launch On-Demand Instances. InsufficientInstanceCapacity - We currently \
                 do not have sufficient t3.micro capacity in the Availability Zone you requested \
                 (us-east-1a). Launching EC2 instance failed.",
                "InsufficientInstanceCapacity",
            ),
            (
                "Could not launch On-Demand Instances. VcpuLimitExceeded - You have requested more \
                 vCPU capacity than your current vCPU limit of 0 allows.",
                "VcpuLimitExceeded",
            ),
            (
                "Could not launch Spot Instances. UnfulfillableCapacity - Unable to fulfill \
                 capacity due to your request configuration.",
                "UnfulfillableCapacity",
            ),
            (
                "Could not launch On-Demand Instances. InvalidParameterValue - Value (x) for \
                 parameter iamInstanceProfile.name is invalid.",
                "InvalidParameterValue",
            ),
            (
                "Instance became unhealthy while waiting for instance to be in InService state. \
                 Termination Reason: Client.InternalError: Client error on launch",
                "Client.InternalError",
            ),
            (
                "We currently do not have sufficient m5.large capacity in the Availability Zone \
                 you requested (us-east-1a). Launching EC2 instance failed.",
                "InsufficientInstanceCapacity",
            ),
            (
                "You have requested more instances (1) than your current instance limit of 0 \
                 allows for the specified instance type.",
                "InstanceLimitExceeded",
            ),
            (
                "There are not enough free addresses in subnet subnet-0 to satisfy the requested \
                 number of instances.",
                "InsufficientFreeAddressesInSubnet",
            ),
            (
                "The image id 'ami-4edb0327' does not exist. Launching EC2 instance failed.",
                "Failed",
            ),
            ("A - B - no code here", "Failed"),
        ];
        for (msg, want) in cases {
            assert_eq!(launch_reason(msg, "Failed"), want, "{msg}");
        }
        assert_eq!(launch_reason("", "Cancelled"), "Cancelled");
        assert_eq!(launch_reason("", "weird value!"), "Failed");
    }

    #[test]
    fn failures_run_back_to_a_launch_or_the_last_raise() {
        let ok = |s| act("Successful", "Launching a new EC2 instance: i-1", "", s);
        let bad = |s| {
            act(
                "Failed",
                "Launching a new EC2 instance.  Status Reason: …",
                "Could not launch On-Demand Instances. VcpuLimitExceeded - limit of 0",
                s,
            )
        };
        // In progress first, as AWS lists them; then newest first.
        let acts = vec![
            act("InProgress", "Launching a new EC2 instance", "", 50),
            bad(40),
            act("Failed", "Terminating EC2 instance: i-9", "gone", 35),
            bad(30),
            ok(20),
            bad(10),
        ];
        let f = current_failures(&acts, None);
        assert_eq!(f.len(), 2, "{f:?}");
        assert_eq!(f[0].reason, "VcpuLimitExceeded");
        assert_eq!(f[0].since, DateTime::from_timestamp(1_700_000_040, 0));
        assert_eq!(f[1].since, DateTime::from_timestamp(1_700_000_030, 0));
        // The last raise bounds it too.
        let raise = DateTime::from_timestamp(1_700_000_035, 0);
        assert_eq!(current_failures(&acts, raise).len(), 1);
        // A launch since the failures ends them.
        let mut healed = acts.clone();
        healed.push(ok(45));
        assert!(current_failures(&healed, None).is_empty());
        let e = launch_error("linux", "g", 1, 3, &current_failures(&acts, None));
        assert_eq!(e.kind, ErrorKind::LaunchFailed);
        assert_eq!(e.reason.as_deref(), Some("VcpuLimitExceeded"));
        assert!(
            e.message.contains(
                "2 of 3 desired instances not launched: DescribeScalingActivities reports 2 \
                 failed launches since 2023-11-14 22:13:50 UTC; newest: VcpuLimitExceeded: \
                 Could not launch On-Demand Instances. VcpuLimitExceeded - limit of 0"
            ),
            "{}",
            e.message
        );
    }
}
