//! Carrying out [`crate::policy::warm`]: the group's warm pool read once per cycle when it has
//! one (or the plan wants standby), and at most one `PutWarmPool` (plus, once, the tag that
//! marks the warm pool as the executor's) before the capacity change, so leavers of this
//! cycle's scale-in already go back to it. A failure is recorded like any other call's and
//! never stops the capacity change. Scale-out needs nothing here: a raised desired capacity is
//! met from the warm pool first by AWS itself.

use crate::client::{GroupInfo, GroupTag, WarmPool};
use crate::policy::warm::{
    decide_warm_pool, describe_put, WarmPlan, TAG_WARM_POOL, WARM_POOL_MANAGED,
};
use crate::run::{Applier, Run};
use autoscaler_executor::Plan;

/// The warm pool as read this cycle.
pub(crate) enum WarmRead {
    /// Not read: the group has none and the plan wants no standby (today's calls).
    NotNeeded,
    /// `DescribeWarmPool` answered.
    Read(WarmPool),
    /// `DescribeWarmPool` failed (recorded): nothing is written to the warm pool this cycle.
    Failed,
}

impl WarmRead {
    /// The warm pool's instances waiting on the termination hook (going back to it).
    pub(crate) fn waiting(&self) -> Vec<crate::client::GroupInstance> {
        match self {
            WarmRead::Read(w) => w
                .instances
                .iter()
                .filter(|i| i.is_waiting_to_terminate())
                .cloned()
                .collect(),
            _ => Vec::new(),
        }
    }

    /// True when scale-in leavers go back to the warm pool (`ReuseOnScaleIn`).
    pub(crate) fn reuses(&self) -> bool {
        matches!(self, WarmRead::Read(WarmPool { config: Some(c), .. }) if c.reuse_on_scale_in)
    }
}

impl Applier {
    /// `DescribeWarmPool` when the group has a warm pool or the plan wants standby; else no
    /// call at all.
    pub(crate) async fn read_warm_pool(
        &self,
        run: &mut Run<'_>,
        group: &GroupInfo,
        plan: Plan,
    ) -> WarmRead {
        if group.warm_pool.is_none() && plan.standby == 0 {
            return WarmRead::NotNeeded;
        }
        match self.api.describe_warm_pool(run.group).await {
            Ok(w) => WarmRead::Read(w),
            Err(e) => {
                run.call_error("DescribeWarmPool", e);
                WarmRead::Failed
            }
        }
    }

    /// Brings the warm pool to the plan's standby (see [`decide_warm_pool`]); returns whether
    /// the warm pool keeps leavers after this cycle's call (so the scale-in can say where they
    /// go).
    pub(crate) async fn ensure_warm_pool(
        &self,
        run: &mut Run<'_>,
        group: &GroupInfo,
        read: &WarmRead,
        plan: Plan,
        target: u32,
    ) -> bool {
        let current = match read {
            WarmRead::NotNeeded => None,
            WarmRead::Read(w) => w.config.as_ref(),
            WarmRead::Failed => return false,
        };
        let wpi = self.cfg.workers_per_instance_for(&run.pool.name);
        let state = self.cfg.warm_pool_state_for(&run.pool.name);
        let decision: WarmPlan = decide_warm_pool(plan.standby, wpi, state, target, group, current);
        if let Some(why) = &decision.clamp {
            tracing::warn!(pool = %run.pool.name, group = %run.group, "{why}");
        }
        if let Some(why) = &decision.skip {
            tracing::warn!(pool = %run.pool.name, group = %run.group, "{why}");
        }
        let mut reuse = read.reuses();
        if let Some(cfg) = &decision.put {
            if !run.dry_run() {
                if let Err(e) = self.api.put_warm_pool(run.group, cfg).await {
                    run.call_error("PutWarmPool", e);
                    return reuse;
                }
            }
            let why = if plan.standby == 0 {
                "no standby planned: the executor's warm pool keeps none".to_string()
            } else {
                format!(
                    "standby {} workers, {wpi} per instance: {} warm instance(s)",
                    plan.standby, decision.instances
                )
            };
            run.action(format!("{} ({why})", describe_put(run.group, cfg)));
            reuse = cfg.reuse_on_scale_in;
        }
        if decision.tag {
            let tag = GroupTag {
                key: TAG_WARM_POOL.to_string(),
                value: WARM_POOL_MANAGED.to_string(),
                propagate_at_launch: false,
            };
            if !run.dry_run() {
                if let Err(e) = self
                    .api
                    .create_or_update_tags(run.group, std::slice::from_ref(&tag))
                    .await
                {
                    run.call_error("CreateOrUpdateTags", e);
                    return reuse;
                }
            }
            run.action(format!(
                "CreateOrUpdateTags AutoScalingGroupName={} Tags=[{TAG_WARM_POOL}={WARM_POOL_MANAGED}] \
                 PropagateAtLaunch=false (the warm pool is kept by the executor)",
                run.group
            ));
        }
        reuse
    }
}
