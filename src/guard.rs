//! The runaway guard: whatever a planner answers, the engine never asks for more than the
//! pool's `maximum`, and (when configured) never grows a pool by more than a fixed step per
//! cycle. Pure, so it is tested like the planners.

use autoscaler_executor::{Plan, WorkerPool};

/// Clamps `plan` and says why, for a warning. `last_size` is the size last applied to this pool
/// by this process (none after a restart: then only the maximum applies, since the current
/// size is unknown). `max_step_up` bounds the growth of `size` over `last_size`, and bounds
/// `queued_size` itself (the number of workers a non-declarative command launches in one call).
pub fn limit(
    plan: Plan,
    pool: &WorkerPool,
    last_size: Option<u32>,
    max_step_up: Option<u32>,
) -> (Plan, Vec<String>) {
    let mut out = plan;
    let mut why = Vec::new();
    let maximum = pool.maximum.max(0) as u32;
    // Lowers `value` to `cap`, saying which bound won (`bound` ends the warning).
    let mut clamp = |field: &str, value: &mut u32, cap: u32, bound: String| {
        if *value > cap {
            why.push(format!("{field} {value} {bound}"));
            *value = cap;
        }
    };
    let over_max = format!("exceeds maximum {maximum}; clamped");
    clamp("size", &mut out.size, maximum, over_max.clone());
    clamp("queued_size", &mut out.queued_size, maximum, over_max);
    if let Some(step) = max_step_up {
        if let Some(last) = last_size {
            let cap = last.saturating_add(step);
            let bound = format!(
                "is more than max_step_up {step} above the last applied {last}; clamped to {cap}"
            );
            clamp("size", &mut out.size, cap, bound);
        }
        let bound = format!("exceeds max_step_up {step}; clamped");
        clamp("queued_size", &mut out.queued_size, step, bound);
    }
    (out, why)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pool(max: i32) -> WorkerPool {
        let mut p = WorkerPool::with_defaults(1, "p");
        p.maximum = max;
        p
    }

    #[test]
    fn clamps_to_maximum_and_says_so() {
        let (p, why) = limit(
            Plan {
                size: 50,
                queued_size: 12,
                standby: 0,
            },
            &pool(10),
            None,
            None,
        );
        assert_eq!(
            p,
            Plan {
                size: 10,
                queued_size: 10,
                standby: 0
            }
        );
        assert_eq!(
            why,
            vec![
                "size 50 exceeds maximum 10; clamped",
                "queued_size 12 exceeds maximum 10; clamped"
            ]
        );
    }

    #[test]
    fn step_up_is_bounded_from_the_last_applied_size() {
        let (p, why) = limit(
            Plan {
                size: 40,
                queued_size: 30,
                standby: 0,
            },
            &pool(100),
            Some(10),
            Some(5),
        );
        assert_eq!(
            p,
            Plan {
                size: 15,
                queued_size: 5,
                standby: 0
            }
        );
        assert_eq!(why.len(), 2);
        // Scaling in is never limited.
        let (p, why) = limit(
            Plan {
                size: 2,
                queued_size: 0,
                standby: 0,
            },
            &pool(100),
            Some(10),
            Some(5),
        );
        assert_eq!(
            (p, why.len()),
            (
                Plan {
                    size: 2,
                    queued_size: 0,
                    standby: 0
                },
                0
            )
        );
        // Unknown last size: only the maximum and the queued step apply.
        let (p, _) = limit(
            Plan {
                size: 40,
                queued_size: 3,
                standby: 0,
            },
            &pool(100),
            None,
            Some(5),
        );
        assert_eq!(
            p,
            Plan {
                size: 40,
                queued_size: 3,
                standby: 0
            }
        );
    }

    proptest! {
        #[test]
        fn never_above_maximum_nor_the_step(size in 0u32..10_000, q in 0u32..10_000, max in 0i32..500,
                                            last in proptest::option::of(0u32..500), step in proptest::option::of(0u32..50)) {
            let (p, _) = limit(Plan { size, queued_size: q, standby: 0 }, &pool(max), last, step);
            prop_assert!(p.size <= max as u32 && p.queued_size <= max as u32);
            prop_assert!(p.size <= size && p.queued_size <= q);
            if let (Some(l), Some(s)) = (last, step) { prop_assert!(p.size <= l + s); }
            if let Some(s) = step { prop_assert!(p.queued_size <= s); }
        }
    }
}
