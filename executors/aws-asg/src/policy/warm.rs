//! The warm pool the executor keeps for a plan's standby target: which `PutWarmPool` call (if
//! any) brings the group's warm pool to it. Pure: the applier reads the group and its warm
//! pool, asks `decide_warm_pool`, and makes the one call it names.
//!
//! AWS sizes a warm pool as `max(MinSize, MaxGroupPreparedCapacity - DesiredCapacity)` (with
//! `MaxGroupPreparedCapacity` unset it stands for the group's `MaxSize`, and a negative
//! difference counts as 0). The executor sends `MinSize = MaxGroupPreparedCapacity = N`: the
//! difference is then at most `N` whatever the desired capacity, so the warm pool holds exactly
//! `max(N, N - desired) = N` instances, and does not move when the group grows or shrinks (the
//! user guide: only when the two are equal does the warm pool have an absolute size). Any
//! other choice would make the warm pool follow the desired capacity, and so need a
//! `PutWarmPool` on every scale.

use crate::client::{GroupInfo, WarmPoolConfig};
use crate::config::WarmPoolState;

/// The group tag that marks a warm pool as the executor's own: only such a warm pool is
/// shrunk to `MinSize 0` when the plan stops asking for standby. A warm pool a user made by
/// hand (no tag) is never changed by a plan without standby.
pub const TAG_WARM_POOL: &str = "vespene_warm_pool";

/// The value of [`TAG_WARM_POOL`].
pub const WARM_POOL_MANAGED: &str = "managed";

/// The `Status` AWS reports while a warm pool is being deleted.
pub(crate) const PENDING_DELETE: &str = "PendingDelete";

/// What the executor does to the group's warm pool this cycle.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct WarmPlan {
    /// The `PutWarmPool` to make, or `None` when the warm pool is already as wanted (or is
    /// not the executor's to change).
    pub put: Option<WarmPoolConfig>,
    /// Tag the group with [`TAG_WARM_POOL`] (it now keeps the warm pool and was not marked).
    pub tag: bool,
    /// Instances the plan's standby asked for, before the group's `MaxSize` clamped them.
    pub wanted: u32,
    /// Instances the warm pool is kept at (`wanted`, or less after the clamp).
    pub instances: u32,
    /// Why `instances` is below `wanted`, for a warning.
    pub clamp: Option<String>,
    /// Why nothing is done although something would be wanted, for a warning.
    pub skip: Option<String>,
}

/// Whether the group carries [`TAG_WARM_POOL`]`=`[`WARM_POOL_MANAGED`].
pub(crate) fn managed(group: &GroupInfo) -> bool {
    group
        .tags
        .iter()
        .any(|t| t.key == TAG_WARM_POOL && t.value == WARM_POOL_MANAGED)
}

/// Whether two settings are the same as far as `PutWarmPool` is concerned (`status` is only
/// described, never sent).
fn same(a: &WarmPoolConfig, b: &WarmPoolConfig) -> bool {
    a.min_size == b.min_size
        && a.max_group_prepared_capacity == b.max_group_prepared_capacity
        && a.pool_state == b.pool_state
        && a.reuse_on_scale_in == b.reuse_on_scale_in
}

/// The decision. `standby` is the plan's standby in workers, `workers_per_instance` divides it
/// (rounding up, as for `size`), `target` is the desired capacity this cycle sets (instances),
/// `current` is the described warm pool (`None`: the group has none).
///
/// - Standby 0 and no warm pool: nothing at all, today's behaviour.
/// - Standby 0 and a warm pool the executor marked: `MinSize 0`, `MaxGroupPreparedCapacity 0`
///   (AWS then keeps none and ends those it holds), `ReuseOnScaleIn` off so leavers terminate;
///   its `PoolState` is left as it is.
/// - Standby 0 and a warm pool made by hand: left alone.
/// - Standby `s > 0`: `N = ceil(s / workers_per_instance)`, never more than the group's
///   `MaxSize - target` (a warm instance only ever serves a scale-out, and the group never
///   grows past `MaxSize`, so one beyond that would be paid for and never drawn); `MinSize =
///   MaxGroupPreparedCapacity = N`, `ReuseOnScaleIn` on, `PoolState` from
///   `warm_pool_state`. A warm pool made by hand is taken over (and marked).
/// - A warm pool being deleted (`PendingDelete`) is not written to: AWS refuses until it is
///   gone, and the next cycle after that creates it again if standby is still wanted.
pub(crate) fn decide_warm_pool(
    standby: u32,
    workers_per_instance: u32,
    state: WarmPoolState,
    target: u32,
    group: &GroupInfo,
    current: Option<&WarmPoolConfig>,
) -> WarmPlan {
    let mine = managed(group);
    let mut plan = WarmPlan::default();
    let wanted_cfg = if standby == 0 {
        match current {
            None => return plan,
            Some(_) if !mine => return plan,
            Some(c) => WarmPoolConfig {
                min_size: 0,
                max_group_prepared_capacity: Some(0),
                pool_state: c.pool_state.clone(),
                reuse_on_scale_in: false,
                status: None,
            },
        }
    } else {
        let wanted = standby.div_ceil(workers_per_instance.max(1));
        let room = group.max_size.saturating_sub(target);
        let n = wanted.min(room);
        plan.wanted = wanted;
        plan.instances = n;
        if n < wanted {
            plan.clamp = Some(format!(
                "standby of {standby} workers wants {wanted} warm instance(s) but the group's \
                 MaxSize {} leaves room for {room} beside the {target} in service: the group \
                 MaxSize won",
                group.max_size
            ));
        }
        if n == 0 && current.is_none() {
            // No room at all: no warm pool of nothing is made.
            return plan;
        }
        plan.tag = !mine;
        WarmPoolConfig {
            min_size: n,
            max_group_prepared_capacity: Some(i32::try_from(n).unwrap_or(i32::MAX)),
            pool_state: state.aws_name().to_string(),
            reuse_on_scale_in: true,
            status: None,
        }
    };
    if let Some(c) = current {
        if c.status.as_deref() == Some(PENDING_DELETE) {
            plan.tag = false;
            plan.skip = Some(
                "the warm pool is being deleted (Status PendingDelete): PutWarmPool waits until \
                 it is gone"
                    .to_string(),
            );
            return plan;
        }
        if same(c, &wanted_cfg) {
            return plan;
        }
    }
    plan.put = Some(wanted_cfg);
    plan
}

/// The call as the outcome and the log show it.
pub(crate) fn describe_put(group: &str, cfg: &WarmPoolConfig) -> String {
    let mgpc = cfg
        .max_group_prepared_capacity
        .map(|v| v.to_string())
        .unwrap_or_else(|| "unset".to_string());
    format!(
        "PutWarmPool AutoScalingGroupName={group} MinSize={} MaxGroupPreparedCapacity={mgpc} \
         PoolState={} InstanceReusePolicy.ReuseOnScaleIn={}",
        cfg.min_size, cfg.pool_state, cfg.reuse_on_scale_in
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::GroupTag;

    fn group(max: u32, mine: bool) -> GroupInfo {
        GroupInfo {
            name: "g".into(),
            max_size: max,
            tags: if mine {
                vec![GroupTag {
                    key: TAG_WARM_POOL.into(),
                    value: WARM_POOL_MANAGED.into(),
                    propagate_at_launch: false,
                }]
            } else {
                vec![]
            },
            ..GroupInfo::default()
        }
    }

    fn cfg(n: u32, state: &str, reuse: bool) -> WarmPoolConfig {
        WarmPoolConfig {
            min_size: n,
            max_group_prepared_capacity: Some(n as i32),
            pool_state: state.into(),
            reuse_on_scale_in: reuse,
            status: None,
        }
    }

    const S: WarmPoolState = WarmPoolState::Stopped;

    #[test]
    fn standby_zero_without_a_warm_pool_changes_nothing() {
        for mine in [false, true] {
            assert_eq!(
                decide_warm_pool(0, 1, S, 3, &group(10, mine), None),
                WarmPlan::default()
            );
        }
    }

    #[test]
    fn standby_creates_an_absolute_warm_pool_and_marks_it() {
        let p = decide_warm_pool(2, 1, S, 3, &group(10, false), None);
        assert_eq!(p.put, Some(cfg(2, "Stopped", true)));
        assert!(p.tag);
        assert_eq!((p.wanted, p.instances, p.clamp), (2, 2, None));
        // Workers divide into instances, rounding up, like size.
        let p = decide_warm_pool(5, 4, WarmPoolState::Hibernated, 1, &group(10, true), None);
        assert_eq!(p.put, Some(cfg(2, "Hibernated", true)));
        assert!(!p.tag, "already marked");
    }

    #[test]
    fn a_matching_warm_pool_needs_no_call_whatever_the_desired_capacity() {
        let g = group(10, true);
        let c = cfg(2, "Stopped", true);
        for target in [0, 3, 8] {
            assert_eq!(
                decide_warm_pool(2, 1, S, target, &g, Some(&c)),
                WarmPlan {
                    wanted: 2,
                    instances: 2,
                    ..WarmPlan::default()
                }
            );
        }
        // Any difference is one put with all four settings.
        for other in [
            cfg(3, "Stopped", true),
            cfg(2, "Hibernated", true),
            cfg(2, "Stopped", false),
            WarmPoolConfig {
                max_group_prepared_capacity: None,
                ..cfg(2, "Stopped", true)
            },
        ] {
            let p = decide_warm_pool(2, 1, S, 3, &g, Some(&other));
            assert_eq!(p.put, Some(c.clone()), "{other:?}");
        }
    }

    #[test]
    fn the_group_max_size_clamps_with_a_reason() {
        let p = decide_warm_pool(4, 1, S, 8, &group(10, true), None);
        assert_eq!(p.put, Some(cfg(2, "Stopped", true)));
        assert_eq!((p.wanted, p.instances), (4, 2));
        let why = p.clamp.unwrap();
        assert!(
            why.contains("MaxSize 10 leaves room for 2 beside the 8 in service"),
            "{why}"
        );
        // No room at all and no warm pool: nothing is made, the clamp is still said.
        let p = decide_warm_pool(4, 1, S, 10, &group(10, false), None);
        assert_eq!(p.put, None);
        assert!(!p.tag);
        assert!(p.clamp.is_some());
        // No room and a warm pool: it is brought to 0.
        let p = decide_warm_pool(
            4,
            1,
            S,
            10,
            &group(10, true),
            Some(&cfg(2, "Stopped", true)),
        );
        assert_eq!(p.put, Some(cfg(0, "Stopped", true)));
    }

    #[test]
    fn standby_zero_empties_only_the_executors_own_warm_pool() {
        let c = cfg(2, "Hibernated", true);
        let p = decide_warm_pool(0, 1, S, 3, &group(10, true), Some(&c));
        assert_eq!(p.put, Some(cfg(0, "Hibernated", false)));
        assert!(!p.tag);
        // Already empty: no call.
        let p = decide_warm_pool(
            0,
            1,
            S,
            3,
            &group(10, true),
            Some(&cfg(0, "Hibernated", false)),
        );
        assert_eq!(p.put, None);
        // A hand-made one is never touched by a plan without standby.
        let p = decide_warm_pool(0, 1, S, 3, &group(10, false), Some(&c));
        assert_eq!(p, WarmPlan::default());
    }

    #[test]
    fn a_warm_pool_being_deleted_is_not_written() {
        let c = WarmPoolConfig {
            status: Some(PENDING_DELETE.into()),
            ..cfg(1, "Stopped", true)
        };
        let p = decide_warm_pool(2, 1, S, 3, &group(10, false), Some(&c));
        assert_eq!(p.put, None);
        assert!(!p.tag);
        assert!(p.skip.unwrap().contains("PendingDelete"));
    }

    #[test]
    fn the_call_is_shown_with_every_setting() {
        assert_eq!(
            describe_put("g", &cfg(2, "Stopped", true)),
            "PutWarmPool AutoScalingGroupName=g MinSize=2 MaxGroupPreparedCapacity=2 \
             PoolState=Stopped InstanceReusePolicy.ReuseOnScaleIn=true"
        );
    }
}
