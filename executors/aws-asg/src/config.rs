//! The `[executors.aws-asg]` section of the config file.
//!
//! Every setting has a default, so an empty section (or none at all) works on an EC2 instance
//! with an instance profile. Unknown keys are an error: a misspelt `workers_per_instance` left
//! silently at 1 would over-provision by exactly the factor the user meant to divide by.

use crate::AwsAsgError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// AWS's own upper bound on how long an instance may wait in `Terminating:Wait` (48 hours),
/// whatever heartbeats are recorded; a longer `max_drain_seconds` could never be honoured.
pub const AWS_MAX_LIFECYCLE_SECONDS: u64 = 172_800;

/// The shortest heartbeat interval (a third of `heartbeat_timeout_seconds`) accepted: the
/// default `--sleep` of `autoscaler run`. A waiting instance is looked at once per cycle, so a
/// heartbeat due every N seconds goes out up to one `--sleep` late; the engine does not tell
/// executors its `--sleep`, so the check assumes the default, and an operator who raises
/// `--sleep` keeps `heartbeat_timeout_seconds` above three times it (see
/// `docs/aws-asg.md#start-up-checks`).
pub const MIN_HEARTBEAT_INTERVAL_SECONDS: u64 = 20;

/// Settings of the aws-asg executor, shared by every pool that names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case", default)]
pub struct Config {
    /// AWS region of the groups. Unset: the SDK's normal resolution (`AWS_REGION`,
    /// `AWS_DEFAULT_REGION`, the profile, then the instance metadata service).
    pub region: Option<String>,
    /// Named profile from `~/.aws/config` / `~/.aws/credentials`. Unset: `AWS_PROFILE`, else
    /// `default`.
    pub profile: Option<String>,
    /// One endpoint for both Auto Scaling and EC2 (a VPC endpoint, a proxy, moto). Unset: the
    /// SDK's standard endpoint configuration, which honours `AWS_ENDPOINT_URL`,
    /// `AWS_ENDPOINT_URL_AUTO_SCALING` and `AWS_ENDPOINT_URL_EC2`.
    pub endpoint_url: Option<String>,
    /// Vespene workers each instance runs (supervisor starting N workers). The plan counts
    /// workers and the group counts instances, so the group is asked for
    /// `ceil(size / workers_per_instance)` instances, never more than
    /// `floor(maximum / workers_per_instance)`. This replaces the Vespene docs' advice to raise
    /// `multiplier`, which over-provisions by the square of the factor.
    pub workers_per_instance: u32,
    /// Heartbeat timeout of the termination lifecycle hook this executor maintains (30..=7200,
    /// AWS's range; at least 60 so a heartbeat every third of it fits the default loop): how long a terminating instance waits if nobody answers (the autoscaler is
    /// down), after which AWS applies the default result `CONTINUE`.
    pub heartbeat_timeout_seconds: u32,
    /// Longest time an instance is held in `Terminating:Wait` because its worker still runs a
    /// build; then it is released (`CONTINUE`) with a warning naming the build. Default 4 hours.
    /// AWS ends any wait after `min(100 * heartbeat_timeout_seconds, 48 h)` regardless.
    pub max_drain_seconds: u64,
    /// Keep the group's tags `vespene_worker=true` and `vespene_pool=<pool>` (PropagateAtLaunch).
    pub manage_tags: bool,
    /// Keep a termination lifecycle hook named [`Config::lifecycle_hook_name`] on the group.
    /// When false the hook must exist already (made by Terraform): instances waiting on it are
    /// still drained by this executor.
    pub manage_lifecycle_hook: bool,
    /// Keep `OldestInstance` first in the group's termination policies.
    pub manage_termination_policy: bool,
    /// Name of the termination lifecycle hook that holds instances for draining; also the
    /// hook named in `CompleteLifecycleAction` and `RecordLifecycleActionHeartbeat`.
    pub lifecycle_hook_name: String,
    /// Which instance attribute a busy worker's `workers.hostname` is compared with.
    pub hostname_match: HostnameMatch,
    /// How often the lifecycle hook is described again to check nobody changed or deleted it;
    /// in between, a group whose hook was verified costs no `DescribeLifecycleHooks` call.
    pub hook_check_seconds: u64,
    /// How long construction may spend proving credentials can be loaded, so a machine with
    /// none fails in seconds instead of after the instance metadata service's retries.
    pub credentials_timeout_seconds: u64,
    /// Per HTTP attempt: a hung connection must not stall the pool's cycle.
    pub request_timeout_seconds: u64,
    /// Attempts per call, first included, with the SDK's standard retry mode (exponential
    /// backoff with jitter on throttling, 5xx and connection errors).
    pub max_attempts: u32,
    /// Never remove an instance that lacks the drain agent (instance tag
    /// `vespene_drain_agent=v1`): such instances are held and reported instead, so every
    /// removal goes through the agent's handshake and no build can be killed.
    pub require_drain_agent: bool,
    /// How long a RUNNING build with no worker recorded holds every scale-in of its pool.
    /// Vespene saves the worker a moment after the status, so such a build may be on any
    /// instance; one still unassigned after this long was left by a worker that died in
    /// between and no longer counts. 0: it always counts.
    pub unassigned_grace_seconds: u64,
    /// The state instances wait in while the group's warm pool holds them for a plan's
    /// standby target (`PutWarmPool` `PoolState`): see [`WarmPoolState`].
    pub warm_pool_state: WarmPoolState,
    /// Per-pool overrides, keyed by the pool's name (`worker_pools.name`).
    pub pools: BTreeMap<String, PoolOverride>,
}

/// Settings that differ between pools (a pool of large instances runs more workers each).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case", default)]
pub struct PoolOverride {
    /// Overrides [`Config::workers_per_instance`] for this pool.
    pub workers_per_instance: Option<u32>,
    /// Overrides [`Config::warm_pool_state`] for this pool.
    pub warm_pool_state: Option<WarmPoolState>,
}

/// How a warm-pool instance waits: the trade-off between what it costs while it waits and how
/// fast it serves a scale-out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WarmPoolState {
    /// Stopped: only its volumes (and Elastic IPs) are paid for; leaving the pool boots the
    /// operating system and the worker again, still much faster than a new instance.
    #[default]
    Stopped,
    /// Hibernated: its memory is saved to its (encrypted, large enough) root volume, so
    /// leaving the pool resumes the running worker; it pays for that larger volume, and the
    /// instance type and image must support hibernation.
    Hibernated,
}

impl WarmPoolState {
    /// The `PoolState` word AWS uses.
    pub fn aws_name(self) -> &'static str {
        match self {
            WarmPoolState::Stopped => "Stopped",
            WarmPoolState::Hibernated => "Hibernated",
        }
    }
}

/// Which of an instance's names the worker on it reports as `workers.hostname`.
///
/// Vespene's worker records the machine's hostname when it claims a build. On EC2 that is
/// normally the private DNS name (`ip-10-0-1-5.ec2.internal`, or only its first label on some
/// distributions), but images may set their own. Names are compared without regard to case
/// and a trailing dot; a hostname without a dot also matches the first label of the private
/// DNS name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostnameMatch {
    /// The private DNS name (or its first label).
    PrivateDnsName,
    /// The primary private IPv4 address.
    PrivateIp,
    /// The instance id (`i-0abc…`): for images that set the hostname to it. Needs no EC2 call.
    InstanceId,
    /// Any of the three (the default). A false match only delays a termination; a missed match
    /// could end a running build, so the widest rule is the safe one.
    #[default]
    Any,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            region: None,
            profile: None,
            endpoint_url: None,
            workers_per_instance: 1,
            heartbeat_timeout_seconds: 3600,
            max_drain_seconds: 4 * 3600,
            manage_tags: true,
            manage_lifecycle_hook: true,
            manage_termination_policy: true,
            lifecycle_hook_name: "vespene-drain".to_string(),
            hostname_match: HostnameMatch::Any,
            hook_check_seconds: 600,
            credentials_timeout_seconds: 10,
            request_timeout_seconds: 20,
            max_attempts: 4,
            require_drain_agent: false,
            unassigned_grace_seconds: 600,
            warm_pool_state: WarmPoolState::Stopped,
            pools: BTreeMap::new(),
        }
    }
}

fn bad(setting: &str, message: impl Into<String>) -> AwsAsgError {
    AwsAsgError::Config {
        setting: setting.to_string(),
        message: message.into(),
    }
}

impl Config {
    /// Checks every value, so a bad setting is reported at start-up naming the setting rather
    /// than mid-cycle in every pool's status.
    pub fn validate(&self) -> Result<(), AwsAsgError> {
        if self.workers_per_instance == 0 {
            return Err(bad("workers_per_instance", "must be at least 1"));
        }
        for (pool, o) in &self.pools {
            if o.workers_per_instance == Some(0) {
                return Err(bad(
                    &format!("pools.{pool}.workers_per_instance"),
                    "must be at least 1",
                ));
            }
        }
        if !(30..=7200).contains(&self.heartbeat_timeout_seconds) {
            return Err(bad(
                "heartbeat_timeout_seconds",
                format!(
                    "{} is outside AWS's range 30..=7200",
                    self.heartbeat_timeout_seconds
                ),
            ));
        }
        if self.max_drain_seconds > self.aws_global_timeout_seconds() {
            return Err(bad(
                "max_drain_seconds",
                format!(
                    "{} exceeds how long AWS lets an instance wait on a lifecycle hook: \
                     min(100 x heartbeat_timeout_seconds, 48 hours) = {} s; AWS would end the \
                     wait first",
                    self.max_drain_seconds,
                    self.aws_global_timeout_seconds()
                ),
            ));
        }
        if self.heartbeat_interval_seconds() < MIN_HEARTBEAT_INTERVAL_SECONDS {
            return Err(bad(
                "heartbeat_timeout_seconds",
                format!(
                    "{} gives a heartbeat every {} s, shorter than the autoscaler's loop \
                     (--sleep, {MIN_HEARTBEAT_INTERVAL_SECONDS} s by default): heartbeats could \
                     only be sent after the hook timed out; use at least {}",
                    self.heartbeat_timeout_seconds,
                    self.heartbeat_interval_seconds(),
                    3 * MIN_HEARTBEAT_INTERVAL_SECONDS
                ),
            ));
        }
        let name = self.lifecycle_hook_name.as_str();
        if name.is_empty()
            || name.len() > 255
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_/".contains(&b))
        {
            return Err(bad(
                "lifecycle_hook_name",
                format!("{name:?} must be 1 to 255 characters of A-Z a-z 0-9 - _ /"),
            ));
        }
        if self.credentials_timeout_seconds == 0 {
            return Err(bad("credentials_timeout_seconds", "must be at least 1"));
        }
        if self.request_timeout_seconds == 0 {
            return Err(bad("request_timeout_seconds", "must be at least 1"));
        }
        if self.max_attempts == 0 {
            return Err(bad("max_attempts", "must be at least 1"));
        }
        if let Some(url) = &self.endpoint_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(bad(
                    "endpoint_url",
                    format!("{url:?} is not an http:// or https:// URL"),
                ));
            }
        }
        Ok(())
    }

    /// Workers per instance for `pool`, its override winning.
    pub fn workers_per_instance_for(&self, pool: &str) -> u32 {
        self.pools
            .get(pool)
            .and_then(|o| o.workers_per_instance)
            .unwrap_or(self.workers_per_instance)
            .max(1)
    }

    /// The warm pool state for `pool`, its override winning.
    pub fn warm_pool_state_for(&self, pool: &str) -> WarmPoolState {
        self.pools
            .get(pool)
            .and_then(|o| o.warm_pool_state)
            .unwrap_or(self.warm_pool_state)
    }

    /// How long AWS itself lets an instance wait, however many heartbeats it gets.
    pub fn aws_global_timeout_seconds(&self) -> u64 {
        (100 * u64::from(self.heartbeat_timeout_seconds)).min(AWS_MAX_LIFECYCLE_SECONDS)
    }

    /// Time between heartbeats for a busy instance: a third of the heartbeat timeout, so two
    /// cycles may be missed before AWS gives up waiting.
    pub fn heartbeat_interval_seconds(&self) -> u64 {
        (u64::from(self.heartbeat_timeout_seconds) / 3).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(c.workers_per_instance, 1);
        assert_eq!(c.heartbeat_timeout_seconds, 3600);
        assert_eq!(c.max_drain_seconds, 14_400);
        assert_eq!(c.lifecycle_hook_name, "vespene-drain");
        assert_eq!(c.hostname_match, HostnameMatch::Any);
        assert!(c.manage_tags && c.manage_lifecycle_hook && c.manage_termination_policy);
        assert_eq!(c.heartbeat_interval_seconds(), 1200);
        assert_eq!(c.aws_global_timeout_seconds(), 172_800);
        assert!(!c.require_drain_agent);
        assert_eq!(c.unassigned_grace_seconds, 600);
    }

    #[test]
    fn timing_is_checked_against_aws_and_the_loop() {
        // 100 x 300 s = 30,000 s is all AWS lets an instance wait with a 300 s hook.
        let c = Config {
            heartbeat_timeout_seconds: 300,
            max_drain_seconds: 30_000,
            ..Config::default()
        };
        c.validate().unwrap();
        let err = Config {
            max_drain_seconds: 30_001,
            ..c.clone()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("[executors.aws-asg] max_drain_seconds: 30001 exceeds")
                && err.contains("= 30000 s"),
            "{err}"
        );
        // A 45 s hook wants a heartbeat every 15 s, faster than the default 20 s loop.
        let err = Config {
            heartbeat_timeout_seconds: 45,
            max_drain_seconds: 600,
            ..Config::default()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with(
                "[executors.aws-asg] heartbeat_timeout_seconds: 45 gives a heartbeat every 15 s"
            ) && err.contains("at least 60"),
            "{err}"
        );
        Config {
            heartbeat_timeout_seconds: 60,
            max_drain_seconds: 6000,
            ..Config::default()
        }
        .validate()
        .unwrap();
        let c: Config =
            serde_json::from_str(r#"{"require_drain_agent":true,"unassigned_grace_seconds":30}"#)
                .unwrap();
        assert!(c.require_drain_agent);
        assert_eq!(c.unassigned_grace_seconds, 30);
    }

    #[test]
    fn parses_every_key_and_overrides() {
        let c: Config = serde_json::from_str(
            r#"{"region":"eu-west-1","workers_per_instance":4,"hostname_match":"private_ip",
                "max_drain_seconds":600,"manage_tags":false,
                "pools":{"big":{"workers_per_instance":8}}}"#,
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.region.as_deref(), Some("eu-west-1"));
        assert_eq!(c.hostname_match, HostnameMatch::PrivateIp);
        assert_eq!(c.workers_per_instance_for("big"), 8);
        assert_eq!(c.workers_per_instance_for("other"), 4);
        assert!(!c.manage_tags);
    }

    #[test]
    fn warm_pool_state_parses_with_a_pool_override_and_rejects_others() {
        let c: Config = serde_json::from_str(
            r#"{"warm_pool_state":"hibernated","pools":{"big":{"warm_pool_state":"stopped"}}}"#,
        )
        .unwrap();
        assert_eq!(c.warm_pool_state_for("other"), WarmPoolState::Hibernated);
        assert_eq!(c.warm_pool_state_for("big"), WarmPoolState::Stopped);
        assert_eq!(
            Config::default().warm_pool_state_for("x").aws_name(),
            "Stopped"
        );
        let err = serde_json::from_str::<Config>(r#"{"warm_pool_state":"running"}"#).unwrap_err();
        assert!(
            err.to_string().contains("stopped") && err.to_string().contains("hibernated"),
            "{err}"
        );
    }

    #[test]
    fn the_documented_example_parses() {
        // docs/aws-asg.md documents this section; its example must stay true.
        let readme = include_str!("../../../docs/aws-asg.md");
        let start = readme
            .find("```toml\n[executors.aws-asg]")
            .expect("example in docs/aws-asg.md")
            + 8;
        let end = start + readme[start..].find("```").unwrap();
        let file: toml::Table = toml::from_str(&readme[start..end]).unwrap();
        let section = file["executors"]["aws-asg"].clone();
        let c: Config = section.try_into().unwrap();
        c.validate().unwrap();
        assert_eq!(c.workers_per_instance_for("gpu"), 4);
        assert_eq!(c.workers_per_instance_for("linux"), 1);
        // Every commented-out default in the example is the real default.
        let uncommented: String = readme[start..end]
            .lines()
            .take_while(|l| !l.starts_with("[executors.aws-asg.pools"))
            .map(|l| l.trim_start_matches("# ").split(" #").next().unwrap_or(""))
            .filter(|l| {
                l.contains(" = ")
                    && !l.starts_with("region")
                    && !l.starts_with("profile")
                    && !l.starts_with("endpoint_url")
            })
            .collect::<Vec<_>>()
            .join("\n");
        let all: Config = toml::from_str(&uncommented).unwrap();
        assert_eq!(all, Config::default(), "{uncommented}");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_rejected_naming_the_setting() {
        let err = serde_json::from_str::<Config>(r#"{"workers_per_instanse":4}"#).unwrap_err();
        assert!(err.to_string().contains("workers_per_instanse"), "{err}");
        let err = serde_json::from_str::<Config>(r#"{"hostname_match":"dns"}"#).unwrap_err();
        assert!(err.to_string().contains("private_dns_name"), "{err}");

        let cases: Vec<(Config, &str)> = vec![
            (
                Config {
                    workers_per_instance: 0,
                    ..Config::default()
                },
                "workers_per_instance",
            ),
            (
                Config {
                    heartbeat_timeout_seconds: 10,
                    ..Config::default()
                },
                "heartbeat_timeout_seconds",
            ),
            (
                Config {
                    max_drain_seconds: 200_000,
                    ..Config::default()
                },
                "max_drain_seconds",
            ),
            (
                Config {
                    heartbeat_timeout_seconds: 30,
                    max_drain_seconds: 60,
                    ..Config::default()
                },
                "heartbeat_timeout_seconds",
            ),
            (
                Config {
                    lifecycle_hook_name: "bad name".into(),
                    ..Config::default()
                },
                "lifecycle_hook_name",
            ),
            (
                Config {
                    endpoint_url: Some("localhost:5000".into()),
                    ..Config::default()
                },
                "endpoint_url",
            ),
            (
                Config {
                    pools: [(
                        "big".to_string(),
                        PoolOverride {
                            workers_per_instance: Some(0),
                            ..PoolOverride::default()
                        },
                    )]
                    .into(),
                    ..Config::default()
                },
                "pools.big.workers_per_instance",
            ),
        ];
        for (cfg, setting) in cases {
            let err = cfg.validate().unwrap_err().to_string();
            assert!(err.contains(setting), "{setting}: {err}");
            assert!(err.starts_with("[executors.aws-asg]"), "{err}");
        }
    }
}
