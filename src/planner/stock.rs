use super::{clamp, PlanInput, Planner, PlannerState};
use autoscaler_executor::Plan;
#[cfg(test)]
use autoscaler_executor::WorkerPool;

/// Vespene's formula, as its documentation means it (FACTS.md), with the Python original's
/// defects fixed: weights applied, `size` counts running builds and `queued_size` does not,
/// and the bounds are a clamp.
///
/// ```text
/// size        = clamp(ceil((Q*queued_weight + R*running_weight) * multiplier) + excess, minimum, maximum)
/// queued_size = clamp(ceil((Q*queued_weight) * multiplier) + excess, minimum, maximum)
/// ```
pub struct Stock;

/// `ceil(x) + excess` in integers, saturating: a huge weight pins the result at `maximum`
/// instead of wrapping.
fn ceil_plus(x: f64, excess: i32) -> i64 {
    // `as` saturates for out-of-range floats; validated settings rule out NaN.
    (x.ceil() as i64).saturating_add(i64::from(excess))
}

impl Planner for Stock {
    fn name(&self) -> &'static str {
        "stock"
    }

    fn plan(&self, input: &PlanInput<'_>, _state: &mut PlannerState) -> Plan {
        let (pool, counts) = (input.pool, &input.counts);
        let q = counts.effective_queued(pool) as f64 * pool.queued_weight;
        let r = counts.running as f64 * pool.running_weight;
        Plan {
            size: clamp(pool, ceil_plus((q + r) * pool.multiplier, pool.excess)),
            queued_size: clamp(pool, ceil_plus(q * pool.multiplier, pool.excess)),
            standby: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::planner::Counts;
    use proptest::prelude::*;

    fn stock(p: &WorkerPool, counts: Counts) -> Plan {
        Stock.plan(
            &PlanInput {
                pool: p,
                counts,
                now: chrono::Utc::now(),
            },
            &mut PlannerState::default(),
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn pool(
        qw: f64,
        rw: f64,
        m: f64,
        excess: i32,
        min: i32,
        max: i32,
        build_latest: bool,
    ) -> WorkerPool {
        let mut p = WorkerPool::with_defaults(1, "p");
        p.queued_weight = qw;
        p.running_weight = rw;
        p.multiplier = m;
        p.excess = excess;
        p.minimum = min;
        p.maximum = max;
        p.build_latest = build_latest;
        p
    }

    /// Worked by hand from the formula; each row: settings, counts, expected (size, queued_size).
    #[test]
    fn matches_hand_computed_table() {
        #[rustfmt::skip]
        type Row = (f64, f64, f64, i32, i32, i32, bool, u64, u64, u64, u32, u32);
        let rows: &[Row] = &[
            // qw   rw   mult  exc min max  latest  Q  Qp  R   size qsize
            (1.0, 1.0, 1.0, 0, 0, 10, false, 3, 3, 2, 5, 3), // defaults
            (1.0, 1.0, 1.0, 0, 0, 10, true, 5, 2, 1, 3, 2),  // build_latest: distinct projects
            (2.0, 0.5, 1.0, 0, 0, 50, false, 3, 3, 3, 8, 6), // 6 + 1.5 = 7.5 -> 8
            (1.0, 1.0, 1.5, 1, 0, 50, false, 3, 3, 0, 6, 6), // ceil(4.5)+1
            (1.0, 1.0, 1.0, 0, 2, 10, false, 0, 0, 0, 2, 2), // minimum holds
            (1.0, 1.0, 1.0, 0, 0, 10, false, 40, 40, 9, 10, 10), // maximum holds
            (1.0, 1.0, 1.0, -2, 0, 10, false, 1, 1, 4, 3, 0), // negative excess, floor at minimum
            (0.0, 1.0, 1.0, 0, 0, 10, false, 9, 9, 4, 4, 0), // queued ignored
            (1.0, 1.0, 0.0, 3, 0, 10, false, 9, 9, 4, 3, 3), // multiplier 0: excess only
            (0.25, 1.0, 1.0, 0, 0, 10, false, 1, 1, 0, 1, 1), // ceil(0.25)
            (1e300, 1.0, 1e300, 0, 0, 7, false, 1, 1, 0, 7, 7), // huge: saturates to maximum
            (1.0, 1.0, 1.0, 0, 0, 0, false, 5, 5, 5, 0, 0),  // maximum 0
        ];
        for (i, &(qw, rw, m, e, min, max, latest, q, qp, r, size, qsize)) in rows.iter().enumerate()
        {
            let p = pool(qw, rw, m, e, min, max, latest);
            super::super::validate(&p).unwrap();
            let got = stock(
                &p,
                Counts {
                    queued: q,
                    queued_projects: qp,
                    running: r,
                },
            );
            assert_eq!(
                got,
                Plan {
                    size,
                    queued_size: qsize,
                    standby: 0
                },
                "row {i}"
            );
        }
    }

    fn settings() -> impl Strategy<Value = WorkerPool> {
        (
            0.0..8.0f64,
            0.0..8.0f64,
            0.0..8.0f64,
            0..50i32,
            0..60i32,
            -20..20i32,
            any::<bool>(),
        )
            .prop_map(|(qw, rw, m, min, span, excess, latest)| {
                let max = min + span;
                pool(qw, rw, m, excess.max(-max), min, max, latest)
            })
    }

    proptest! {
        #[test]
        fn always_within_bounds(p in settings(), q in 0u64..10_000, r in 0u64..10_000) {
            let plan = stock(&p, Counts { queued: q, queued_projects: q / 2, running: r });
            prop_assert!(plan.size as i32 >= p.minimum && plan.size as i32 <= p.maximum);
            prop_assert!(plan.queued_size as i32 >= p.minimum && plan.queued_size as i32 <= p.maximum);
            prop_assert!(plan.queued_size <= plan.size);
        }

        #[test]
        fn monotone_in_queued_and_running(p in settings(), q in 0u64..1000, r in 0u64..1000, dq in 0u64..100, dr in 0u64..100) {
            let a = stock(&p, Counts { queued: q, queued_projects: q, running: r });
            let b = stock(&p, Counts { queued: q + dq, queued_projects: q + dq, running: r });
            let c = stock(&p, Counts { queued: q, queued_projects: q, running: r + dr });
            prop_assert!(b.size >= a.size && b.queued_size >= a.queued_size);
            prop_assert!(c.size >= a.size && c.queued_size == a.queued_size);
        }
    }
}
