//! How many instances a plan of workers needs, within every bound, and which bound won: one
//! rule for every backend (and for `autoscaler simulate`), so AWS and GCE clamp the same way and
//! warn in the same words.

/// A bound that changed the number of instances asked for, so the warning can say which won.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Clamp {
    /// The plan asked for more workers than the pool's `maximum`.
    PoolMaximum {
        /// Workers planned.
        planned: u32,
        /// The pool's `maximum`, in workers.
        maximum: u32,
    },
    /// Rounding up to whole instances would have run more workers than `maximum`.
    WholeInstances {
        /// Instances the rounding up asked for.
        wanted: u32,
        /// Instances that fit under `maximum`.
        allowed: u32,
        /// Workers each instance runs.
        workers_per_instance: u32,
        /// The pool's `maximum`, in workers.
        maximum: u32,
    },
    /// The group's `MaxSize` is below what the pool wants.
    GroupMax {
        /// Instances wanted.
        wanted: u32,
        /// The group's `MaxSize`.
        max_size: u32,
    },
    /// The group's `MinSize` is above what the pool wants.
    GroupMin {
        /// Instances wanted.
        wanted: u32,
        /// The group's `MinSize`.
        min_size: u32,
    },
}

impl std::fmt::Display for Clamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Clamp::PoolMaximum { planned, maximum } => write!(
                f,
                "plan of {planned} workers exceeds the pool's maximum of {maximum}: the pool maximum won"
            ),
            Clamp::WholeInstances {
                wanted,
                allowed,
                workers_per_instance,
                maximum,
            } => write!(
                f,
                "{wanted} instances of {workers_per_instance} workers would exceed the pool's maximum of \
                 {maximum} workers: the pool maximum won, asking for {allowed} instances"
            ),
            Clamp::GroupMax { wanted, max_size } => write!(
                f,
                "{wanted} instances wanted but the group's MaxSize is {max_size}: the group MaxSize won"
            ),
            Clamp::GroupMin { wanted, min_size } => write!(
                f,
                "{wanted} instances wanted but the group's MinSize is {min_size}: the group MinSize won"
            ),
        }
    }
}

/// The desired capacity for a plan, with every bound that changed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Instances to ask the group for.
    pub instances: u32,
    /// The bounds that won, in the order applied.
    pub clamps: Vec<Clamp>,
}

/// Instances for `size` workers: `ceil(min(size, maximum) / wpi)`, never more than
/// `floor(maximum / wpi)` (so the workers never exceed the pool's maximum), then inside the
/// group's `group_min..=group_max` (AWS rejects a desired capacity outside `MinSize..=MaxSize`;
/// a `MinSize` above the pool's maximum therefore wins, with a warning). A backend whose groups
/// have no such bounds (GCE) passes `0` and `u32::MAX`.
pub fn instances_for(
    size: u32,
    pool_maximum: i32,
    workers_per_instance: u32,
    group_min: u32,
    group_max: u32,
) -> Target {
    let wpi = workers_per_instance.max(1);
    let maximum = pool_maximum.max(0) as u32;
    let mut clamps = Vec::new();
    let workers = if size > maximum {
        clamps.push(Clamp::PoolMaximum {
            planned: size,
            maximum,
        });
        maximum
    } else {
        size
    };
    let mut instances = workers.div_ceil(wpi);
    let allowed = maximum / wpi;
    if instances > allowed {
        clamps.push(Clamp::WholeInstances {
            wanted: instances,
            allowed,
            workers_per_instance: wpi,
            maximum,
        });
        instances = allowed;
    }
    if instances > group_max {
        clamps.push(Clamp::GroupMax {
            wanted: instances,
            max_size: group_max,
        });
        instances = group_max;
    }
    if instances < group_min {
        clamps.push(Clamp::GroupMin {
            wanted: instances,
            min_size: group_min,
        });
        instances = group_min;
    }
    Target { instances, clamps }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever the inputs, the instances stay within every bound the rule promises: never
        /// more workers than the pool's maximum (unless the group's minimum forces it, which
        /// is then the clamp reported last), within the group's bounds, and with no clamp
        /// reported the plain rounding up.
        #[test]
        fn sizing_stays_within_all_bounds(
            size in 0u32..10_000,
            maximum in -5i32..5_000,
            wpi in 0u32..20,
            group_min in 0u32..50,
            extra in 0u32..10_000,
        ) {
            let group_max = group_min.saturating_add(extra);
            let t = instances_for(size, maximum, wpi, group_min, group_max);
            let w = wpi.max(1);
            let max = maximum.max(0) as u32;
            prop_assert!(t.instances >= group_min);
            prop_assert!(t.instances <= group_max.max(group_min));
            if !matches!(t.clamps.last(), Some(Clamp::GroupMin { .. })) {
                prop_assert!(t.instances.saturating_mul(w) <= max);
            }
            if t.clamps.is_empty() {
                prop_assert_eq!(t.instances, size.div_ceil(w));
            }
        }
    }
}
