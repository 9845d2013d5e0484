//! [`AsgApi`] on the official Auto Scaling SDK client and the crate's own EC2 client.

use super::ec2::Ec2Client;
use super::{
    error::map_sdk_error, ApiError, AsgApi, Ec2Instance, GroupInfo, GroupInstance, GroupTag,
    HookInfo, ScalingActivity, WarmPool, WarmPoolConfig, ACTIVITY_PAGES, DESCRIBE_BATCH,
    WARM_POOL_PAGES,
};
use async_trait::async_trait;
use aws_sdk_autoscaling::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Duration;

/// [`AsgApi`] over the Auto Scaling SDK client and [`Ec2Client`].
#[derive(Clone, Debug)]
pub struct SdkAsgApi {
    asg: aws_sdk_autoscaling::Client,
    ec2: Arc<Ec2Client>,
    request_timeout: Duration,
}

impl SdkAsgApi {
    /// Both clients from one loaded SDK config, so they share credentials, region, retry and
    /// timeout settings; the service-specific endpoint variables still apply per client.
    pub fn new(config: &aws_config::SdkConfig, request_timeout: Duration) -> Self {
        SdkAsgApi {
            asg: aws_sdk_autoscaling::Client::new(config),
            ec2: Arc::new(Ec2Client::new(config, request_timeout)),
            request_timeout,
        }
    }

    /// The EC2 client, for tools and tests that make raw EC2 calls with the same settings.
    pub fn ec2(&self) -> &Ec2Client {
        &self.ec2
    }

    fn err<E>(&self, call: &str, err: SdkError<E, HttpResponse>) -> ApiError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        map_sdk_error(call, err, self.request_timeout)
    }
}

fn to_utc(t: &aws_smithy_types::DateTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.secs(), t.subsec_nanos())
}

fn nonneg(v: Option<i32>) -> u32 {
    v.unwrap_or(0).max(0) as u32
}

fn member(i: &aws_sdk_autoscaling::types::Instance) -> GroupInstance {
    GroupInstance {
        instance_id: i.instance_id().unwrap_or_default().to_string(),
        lifecycle_state: i
            .lifecycle_state()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default(),
        health_status: i.health_status().unwrap_or_default().to_string(),
        protected_from_scale_in: i.protected_from_scale_in().unwrap_or(false),
    }
}

fn warm_config(c: &aws_sdk_autoscaling::types::WarmPoolConfiguration) -> WarmPoolConfig {
    WarmPoolConfig {
        min_size: nonneg(c.min_size()),
        max_group_prepared_capacity: c.max_group_prepared_capacity(),
        // AWS leaves PoolState out for the default, Stopped.
        pool_state: c
            .pool_state()
            .map(|s| s.as_str().to_string())
            .unwrap_or_else(|| "Stopped".to_string()),
        reuse_on_scale_in: c
            .instance_reuse_policy()
            .and_then(|r| r.reuse_on_scale_in())
            .unwrap_or(false),
        status: c.status().map(|s| s.as_str().to_string()),
    }
}

fn i32_of(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

#[async_trait]
impl AsgApi for SdkAsgApi {
    async fn describe_groups(&self, names: &[String]) -> Result<Vec<GroupInfo>, ApiError> {
        let mut out = Vec::new();
        if names.is_empty() {
            // An empty name list would describe every group in the account.
            return Ok(out);
        }
        let mut token: Option<String> = None;
        loop {
            let resp = self
                .asg
                .describe_auto_scaling_groups()
                .set_auto_scaling_group_names(Some(names.to_vec()))
                .max_records(i32_of(DESCRIBE_BATCH as u32))
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| self.err("DescribeAutoScalingGroups", e))?;
            for g in resp.auto_scaling_groups() {
                out.push(GroupInfo {
                    name: g.auto_scaling_group_name().unwrap_or_default().to_string(),
                    min_size: nonneg(g.min_size()),
                    max_size: nonneg(g.max_size()),
                    desired_capacity: nonneg(g.desired_capacity()),
                    instances: g.instances().iter().map(member).collect(),
                    tags: g
                        .tags()
                        .iter()
                        .map(|t| GroupTag {
                            key: t.key().unwrap_or_default().to_string(),
                            value: t.value().unwrap_or_default().to_string(),
                            propagate_at_launch: t.propagate_at_launch().unwrap_or(false),
                        })
                        .collect(),
                    termination_policies: g.termination_policies().to_vec(),
                    desired_capacity_type: g.desired_capacity_type().map(str::to_string),
                    instance_weights: g
                        .mixed_instances_policy()
                        .and_then(|m| m.launch_template())
                        .map(|t| t.overrides())
                        .unwrap_or_default()
                        .iter()
                        .filter_map(|o| {
                            let w = o.weighted_capacity()?;
                            Some((o.instance_type().unwrap_or("-").to_string(), w.to_string()))
                        })
                        .collect(),
                    warm_pool: g.warm_pool_configuration().map(warm_config),
                });
            }
            match resp.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => break,
            }
        }
        Ok(out)
    }

    async fn describe_scaling_activities(
        &self,
        group: &str,
        limit: usize,
    ) -> Result<Vec<ScalingActivity>, ApiError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..ACTIVITY_PAGES {
            let want = limit.saturating_sub(out.len()).clamp(1, 100);
            let resp = self
                .asg
                .describe_scaling_activities()
                .auto_scaling_group_name(group)
                .max_records(i32_of(want as u32))
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| self.err("DescribeScalingActivities", e))?;
            for a in resp.activities() {
                out.push(ScalingActivity {
                    activity_id: a.activity_id().unwrap_or_default().to_string(),
                    description: a.description().unwrap_or_default().to_string(),
                    cause: a.cause().unwrap_or_default().to_string(),
                    status_code: a
                        .status_code()
                        .map(|c| c.as_str().to_string())
                        .unwrap_or_default(),
                    status_message: a.status_message().unwrap_or_default().to_string(),
                    start_time: a.start_time().and_then(to_utc),
                });
            }
            match resp.next_token() {
                Some(t) if !t.is_empty() && out.len() < limit => token = Some(t.to_string()),
                _ => break,
            }
        }
        out.truncate(limit);
        Ok(out)
    }

    async fn set_desired_capacity(&self, group: &str, desired: u32) -> Result<(), ApiError> {
        self.asg
            .set_desired_capacity()
            .auto_scaling_group_name(group)
            .desired_capacity(i32_of(desired))
            .honor_cooldown(false)
            .send()
            .await
            .map_err(|e| self.err("SetDesiredCapacity", e))?;
        Ok(())
    }

    async fn update_termination_policies(
        &self,
        group: &str,
        policies: &[String],
    ) -> Result<(), ApiError> {
        self.asg
            .update_auto_scaling_group()
            .auto_scaling_group_name(group)
            .set_termination_policies(Some(policies.to_vec()))
            .send()
            .await
            .map_err(|e| self.err("UpdateAutoScalingGroup", e))?;
        Ok(())
    }

    async fn create_or_update_tags(&self, group: &str, tags: &[GroupTag]) -> Result<(), ApiError> {
        let tags = tags
            .iter()
            .map(|t| {
                aws_sdk_autoscaling::types::Tag::builder()
                    .resource_id(group)
                    .resource_type("auto-scaling-group")
                    .key(&t.key)
                    .value(&t.value)
                    .propagate_at_launch(t.propagate_at_launch)
                    .build()
            })
            .collect();
        self.asg
            .create_or_update_tags()
            .set_tags(Some(tags))
            .send()
            .await
            .map_err(|e| self.err("CreateOrUpdateTags", e))?;
        Ok(())
    }

    async fn describe_lifecycle_hooks(
        &self,
        group: &str,
        names: &[String],
    ) -> Result<Vec<HookInfo>, ApiError> {
        let resp = self
            .asg
            .describe_lifecycle_hooks()
            .auto_scaling_group_name(group)
            .set_lifecycle_hook_names(Some(names.to_vec()))
            .send()
            .await
            .map_err(|e| self.err("DescribeLifecycleHooks", e))?;
        Ok(resp
            .lifecycle_hooks()
            .iter()
            .map(|h| HookInfo {
                name: h.lifecycle_hook_name().unwrap_or_default().to_string(),
                transition: h.lifecycle_transition().unwrap_or_default().to_string(),
                heartbeat_timeout: h.heartbeat_timeout().map(|v| v.max(0) as u32),
                default_result: h.default_result().map(str::to_string),
            })
            .collect())
    }

    async fn put_lifecycle_hook(&self, group: &str, hook: &HookInfo) -> Result<(), ApiError> {
        self.asg
            .put_lifecycle_hook()
            .auto_scaling_group_name(group)
            .lifecycle_hook_name(&hook.name)
            .lifecycle_transition(&hook.transition)
            .set_heartbeat_timeout(hook.heartbeat_timeout.map(i32_of))
            .set_default_result(hook.default_result.clone())
            .send()
            .await
            .map_err(|e| self.err("PutLifecycleHook", e))?;
        Ok(())
    }

    async fn complete_lifecycle_action(
        &self,
        group: &str,
        hook: &str,
        instance_id: &str,
        result: &str,
    ) -> Result<(), ApiError> {
        self.asg
            .complete_lifecycle_action()
            .auto_scaling_group_name(group)
            .lifecycle_hook_name(hook)
            .instance_id(instance_id)
            .lifecycle_action_result(result)
            .send()
            .await
            .map_err(|e| self.err("CompleteLifecycleAction", e))?;
        Ok(())
    }

    async fn terminate_instance(
        &self,
        instance_id: &str,
        decrement_desired: bool,
    ) -> Result<(), ApiError> {
        self.asg
            .terminate_instance_in_auto_scaling_group()
            .instance_id(instance_id)
            .should_decrement_desired_capacity(decrement_desired)
            .send()
            .await
            .map_err(|e| self.err("TerminateInstanceInAutoScalingGroup", e))?;
        Ok(())
    }

    async fn describe_warm_pool(&self, group: &str) -> Result<WarmPool, ApiError> {
        let mut out = WarmPool::default();
        let mut token: Option<String> = None;
        for _ in 0..WARM_POOL_PAGES {
            let resp = self
                .asg
                .describe_warm_pool()
                .auto_scaling_group_name(group)
                .max_records(100)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| self.err("DescribeWarmPool", e))?;
            if let Some(c) = resp.warm_pool_configuration() {
                out.config = Some(warm_config(c));
            }
            out.instances.extend(resp.instances().iter().map(member));
            match resp.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => break,
            }
        }
        Ok(out)
    }

    async fn put_warm_pool(&self, group: &str, cfg: &WarmPoolConfig) -> Result<(), ApiError> {
        use aws_sdk_autoscaling::types::{InstanceReusePolicy, WarmPoolState};
        self.asg
            .put_warm_pool()
            .auto_scaling_group_name(group)
            .min_size(i32_of(cfg.min_size))
            .set_max_group_prepared_capacity(cfg.max_group_prepared_capacity)
            .pool_state(WarmPoolState::from(cfg.pool_state.as_str()))
            .instance_reuse_policy(
                InstanceReusePolicy::builder()
                    .reuse_on_scale_in(cfg.reuse_on_scale_in)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.err("PutWarmPool", e))?;
        Ok(())
    }

    async fn record_lifecycle_action_heartbeat(
        &self,
        group: &str,
        hook: &str,
        instance_id: &str,
    ) -> Result<(), ApiError> {
        self.asg
            .record_lifecycle_action_heartbeat()
            .auto_scaling_group_name(group)
            .lifecycle_hook_name(hook)
            .instance_id(instance_id)
            .send()
            .await
            .map_err(|e| self.err("RecordLifecycleActionHeartbeat", e))?;
        Ok(())
    }

    async fn describe_instances(&self, ids: &[String]) -> Result<Vec<Ec2Instance>, ApiError> {
        let mut out = Vec::new();
        for chunk in ids.chunks(super::ec2::IDS_PER_FILTER) {
            let filter = ("instance-id".to_string(), chunk.to_vec());
            out.extend(self.ec2.describe_instances(&[filter]).await?);
        }
        Ok(out)
    }

    async fn describe_worker_instances(&self) -> Result<Vec<Ec2Instance>, ApiError> {
        let filters = [
            (
                format!("tag:{}", autoscaler_executor::inventory::TAG_WORKER),
                vec!["true".to_string()],
            ),
            (
                "instance-state-name".to_string(),
                vec!["pending".to_string(), "running".to_string()],
            ),
        ];
        self.ec2.describe_instances(&filters).await
    }

    async fn tag_instances(
        &self,
        ids: &[String],
        tags: &[(String, String)],
    ) -> Result<(), ApiError> {
        self.ec2.create_tags(ids, tags).await
    }
}
