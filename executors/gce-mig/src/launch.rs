//! What the cloud really did after it said yes, and group setups this executor cannot drive.
//!
//! A `resize` operation is DONE once Compute has *scheduled* the creations: a quota, a
//! stockout or a template that cannot launch shows up later, as members stuck in `CREATING`
//! whose `lastAttempt.errors` say why, and as items of the group's `listErrors`. The group's
//! `get` (read every cycle anyway) says whether anything is being created; only then are the
//! members listed, and `listErrors` read only when one of them failed, to date the failure
//! even in a process that has just started. Once a member has been failing to launch for
//! longer than `launch_failure_after_seconds`, the pool fails with status 13 and the cloud's
//! own code and words.
//!
//! Two setups are refused with status 2 instead of being driven wrong: a GCE autoscaler
//! attached to the group (it owns the size: a resize answers 412 and deleted instances are
//! refilled), and, for scale-in, a regional group with proactive instance redistribution (it
//! deletes instances of its own choice, busy ones included, to even out its zones after the
//! chosen idle ones are deleted).

use crate::apply::Applier;
use crate::client::{GroupError, GroupInfo, ManagedInstanceInfo};
use crate::target::{last_segment, zone_of_url, GroupPath, Location};
use autoscaler_executor::{ErrorKind, ExecutorError, LaunchFailure};
use chrono::{DateTime, Duration, Utc};
use std::collections::{BTreeMap, HashMap};
use tracing::warn;

/// Pages of `listErrors` read at most (500 items each with the default page size): the list
/// keeps the group's history, and the newest failures are what matters.
const MAX_ERROR_PAGES: usize = 4;

/// The reason recorded when Compute gives an error without a code.
const UNKNOWN_REASON: &str = "unknown";

/// Whether the group is creating this member (the only state a launch failure holds it in).
pub(crate) fn is_creating(m: &ManagedInstanceInfo) -> bool {
    matches!(
        m.current_action.as_str(),
        "CREATING" | "CREATING_WITHOUT_RETRIES"
    )
}

/// `(zone, name)` of an instance URL, so URLs with different prefixes compare equal.
fn instance_key(url: &str) -> (Option<String>, String) {
    (zone_of_url(url), last_segment(url).to_string())
}

/// The failing launches among `managed`: members still being created whose last attempt
/// failed, one [`LaunchFailure`] each (its first error), dated by the earliest `listErrors`
/// item about a creation of that instance, or by when this process first saw it creating.
pub(crate) fn failing_launches(
    managed: &[ManagedInstanceInfo],
    errors: &[GroupError],
    seen: &HashMap<String, DateTime<Utc>>,
) -> Vec<LaunchFailure> {
    let mut first_error: HashMap<(Option<String>, String), DateTime<Utc>> = HashMap::new();
    for e in errors {
        let creating = e
            .action
            .as_deref()
            .is_none_or(|a| a.starts_with("CREATING"));
        let (Some(url), Some(at), true) = (&e.instance, e.at, creating) else {
            continue;
        };
        let at = at.with_timezone(&Utc);
        let t = first_error.entry(instance_key(url)).or_insert(at);
        *t = (*t).min(at);
    }
    managed
        .iter()
        .filter(|m| is_creating(m))
        .filter_map(|m| {
            let err = m.last_attempt_errors.first()?;
            let since = [
                first_error.get(&instance_key(&m.url)).copied(),
                seen.get(&m.url).copied(),
            ]
            .into_iter()
            .flatten()
            .min();
            Some(LaunchFailure {
                reason: if err.code.is_empty() {
                    UNKNOWN_REASON.to_string()
                } else {
                    err.code.clone()
                },
                message: err.message.clone(),
                instance: Some(m.name.clone()),
                since,
            })
        })
        .collect()
}

/// A duration for a message: seconds while short, else minutes, hours, days.
fn human(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 2 * 86400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        s => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

/// The `gcloud` flag that names where a group is.
fn location_flag(group: &GroupPath) -> String {
    match &group.location {
        Location::Zone(z) => format!("--zone {z}"),
        Location::Region(r) => format!("--region {r}"),
    }
}

impl Applier {
    /// Refuses a group this executor cannot drive: status 2 (config), naming the setting to
    /// change, before anything is sent. `shrinking`: the plan wants fewer instances.
    pub(crate) fn check_setup(
        &self,
        pool: &str,
        group: &GroupPath,
        info: &GroupInfo,
        shrinking: bool,
    ) -> Result<(), ExecutorError> {
        if let Some(autoscaler) = &info.autoscaler {
            return Err(ExecutorError::new(
                pool,
                ErrorKind::Config,
                format!(
                    "{group} is driven by the GCE autoscaler {autoscaler} (status.autoscaler): it owns the \
                     group's size (a resize is refused with 412 and deleted instances are refilled), so this \
                     pool cannot size it; remove the autoscaler (gcloud compute instance-groups managed \
                     stop-autoscaling {} {}) and let the pool's plan set the size. Nothing was changed",
                    group.name,
                    location_flag(group)
                ),
            ));
        }
        if shrinking && info.rebalances() {
            return Err(ExecutorError::new(
                pool,
                ErrorKind::Config,
                format!(
                    "scale-in of {group} refused: the regional group's updatePolicy.instanceRedistributionType \
                     is PROACTIVE (the default when unset; distributionPolicy.targetShape {}), so once the idle \
                     instances chosen here were deleted the group would delete instances of its own choice, \
                     busy ones included, to even out its zones; set instanceRedistributionType to NONE \
                     (gcloud compute instance-groups managed update {} {} --instance-redistribution-type=NONE, \
                     or instance_redistribution_type = \"NONE\" in the update_policy block of \
                     google_compute_region_instance_group_manager). Nothing was deleted; scale-out is not affected",
                    info.target_shape.as_deref().unwrap_or("EVEN"),
                    group.name,
                    location_flag(group)
                ),
            ));
        }
        Ok(())
    }

    /// While the group (of `target` instances) is creating `creating` of them, whether their
    /// launches fail: `Err` with status 13 and the cloud's reason once a member has been
    /// failing for longer than `launch_failure_after_seconds`. Costs nothing while nothing is
    /// being created.
    pub(crate) async fn check_launches(
        &self,
        pool: &str,
        group: &GroupPath,
        target: u32,
        creating: u32,
    ) -> Result<(), ExecutorError> {
        let key = group.to_string();
        if creating == 0 {
            self.creating_seen.lock().unwrap().remove(&key);
            return Ok(());
        }
        let managed = self.list_managed(pool, group).await?;
        let now = Utc::now();
        let seen = {
            let mut all = self.creating_seen.lock().unwrap();
            let seen = all.entry(key).or_default();
            let creating: Vec<&ManagedInstanceInfo> =
                managed.iter().filter(|m| is_creating(m)).collect();
            seen.retain(|url, _| creating.iter().any(|m| &m.url == url));
            for m in creating {
                seen.entry(m.url.clone()).or_insert(now);
            }
            seen.clone()
        };
        let failures = self
            .read_launch_failures(pool, group, &managed, &seen)
            .await?;
        if failures.is_empty() {
            return Ok(());
        }
        let limit = self.cfg().launch_failure_after_seconds;
        let age = |f: &LaunchFailure| f.since.map_or(0, |s| (now - s).num_seconds().max(0));
        let overdue: Vec<&LaunchFailure> = failures
            .iter()
            .filter(|f| {
                f.since
                    .is_none_or(|s| now - s >= Duration::seconds(limit as i64))
            })
            .collect();
        if overdue.is_empty() {
            let first = &failures[0];
            warn!(pool, group = %group, reason = %first.reason, failing = failures.len(),
                "{} instance(s) failing to launch for up to {} ({}: {}); the pool fails with status 13 after {limit}s (launch_failure_after_seconds)",
                failures.len(), human(failures.iter().map(age).max().unwrap_or(0)), first.reason, first.message);
            return Ok(());
        }
        let mut by_reason: BTreeMap<&str, Vec<&LaunchFailure>> = BTreeMap::new();
        for f in &overdue {
            by_reason.entry(f.reason.as_str()).or_default().push(f);
        }
        let mut reasons: Vec<(&str, Vec<&LaunchFailure>)> = by_reason.into_iter().collect();
        reasons.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(b.0)));
        let (reason, main) = &reasons[0];
        let oldest = main.iter().copied().max_by_key(|f| age(f)).unwrap();
        let others = reasons[1..]
            .iter()
            .map(|(r, fs)| format!("{r} on {}", fs.len()))
            .collect::<Vec<_>>()
            .join(", ");
        let others = if others.is_empty() {
            String::new()
        } else {
            format!("; also {others}")
        };
        Err(ExecutorError::new(
            pool,
            ErrorKind::LaunchFailed,
            format!(
                "{} of {} instance(s) of {group} have been failing to launch for {} \
                 (launch_failure_after_seconds {limit}): {reason}: {} (instance {}){others}; the group \
                 keeps retrying them and they start once the cause is fixed (a quota to raise, a zone \
                 out of capacity, a template that cannot launch)",
                main.len(),
                target,
                human(age(oldest)),
                oldest.message,
                oldest.instance.as_deref().unwrap_or("?"),
            ),
        )
        .with_reason(reason.to_string()))
    }

    /// The failing launches among `managed` (see [`failing_launches`]); reads `listErrors`
    /// only when some member's last attempt failed.
    pub(crate) async fn read_launch_failures(
        &self,
        pool: &str,
        group: &GroupPath,
        managed: &[ManagedInstanceInfo],
        seen: &HashMap<String, DateTime<Utc>>,
    ) -> Result<Vec<LaunchFailure>, ExecutorError> {
        let failing = managed
            .iter()
            .any(|m| is_creating(m) && !m.last_attempt_errors.is_empty());
        if !failing {
            return Ok(Vec::new());
        }
        let mut errors = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..MAX_ERROR_PAGES {
            let page = self
                .retry(pool, "listErrors", group, || {
                    self.api().list_errors(group, token.as_deref())
                })
                .await
                .map_err(|e| self.api_error(pool, "listing the errors of", group, e))?;
            errors.extend(page.items);
            match page.next_page_token {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        Ok(failing_launches(managed, &errors, seen))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::CloudError;
    use chrono::DateTime;

    fn member(name: &str, action: &str, errors: &[(&str, &str)]) -> ManagedInstanceInfo {
        ManagedInstanceInfo {
            name: name.into(),
            url: format!(
                "https://www.googleapis.com/compute/v1/projects/p/zones/z-a/instances/{name}"
            ),
            zone: "z-a".into(),
            current_action: action.into(),
            instance_status: None,
            last_attempt_errors: errors
                .iter()
                .map(|(c, m)| CloudError {
                    code: c.to_string(),
                    message: m.to_string(),
                })
                .collect(),
        }
    }

    fn error(name: &str, action: &str, at: &str) -> GroupError {
        GroupError {
            instance: Some(format!("projects/p/zones/z-a/instances/{name}")),
            action: Some(action.into()),
            error: CloudError {
                code: "QUOTA_EXCEEDED".into(),
                message: "Quota 'CPUS' exceeded.".into(),
            },
            at: DateTime::parse_from_rfc3339(at).ok(),
        }
    }

    #[test]
    fn ages_read_well() {
        assert_eq!(human(0), "0s");
        assert_eq!(human(299), "4m");
        assert_eq!(human(3 * 3600 + 120), "3h 2m");
        assert_eq!(human(23_962_690), "277d 8h");
    }

    #[test]
    fn only_creating_members_with_errors_fail_dated_by_their_earliest_creation_error() {
        let managed = vec![
            member(
                "a",
                "CREATING",
                &[("QUOTA_EXCEEDED", "Quota 'CPUS' exceeded.")],
            ),
            member("b", "CREATING", &[]),
            member("c", "NONE", &[("QUOTA_EXCEEDED", "old")]),
            member("d", "CREATING", &[("", "no code")]),
        ];
        let errors = vec![
            error("a", "CREATING", "2024-05-01T09:10:00.000-07:00"),
            error("a", "CREATING", "2024-05-01T09:05:00.000-07:00"),
            // A deletion error of the same instance does not date its launch.
            error("a", "DELETING", "2024-05-01T08:00:00.000-07:00"),
        ];
        let seen: HashMap<String, DateTime<Utc>> = [(
            managed[3].url.clone(),
            DateTime::parse_from_rfc3339("2024-05-01T09:30:00Z")
                .unwrap()
                .with_timezone(&Utc),
        )]
        .into_iter()
        .collect();
        let got = failing_launches(&managed, &errors, &seen);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].reason, "QUOTA_EXCEEDED");
        assert_eq!(got[0].instance.as_deref(), Some("a"));
        assert_eq!(
            got[0].since.unwrap().to_rfc3339(),
            "2024-05-01T16:05:00+00:00"
        );
        assert_eq!(got[1].reason, UNKNOWN_REASON);
        assert_eq!(
            got[1].since.unwrap().to_rfc3339(),
            "2024-05-01T09:30:00+00:00"
        );
    }
}
