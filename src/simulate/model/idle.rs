//! Jumping over idle time: a trace with a gap of years (a mistyped date) would otherwise be
//! stepped cycle by cycle across it. While nothing happens (no build queued or running, the
//! fleet at rest, no event pending), every skipped cycle is the same: the plan is the resting
//! one and the only effect is the `reevaluate_minutes` timer's call, which changes nothing.
//! So the skipped cycles and calls are counted, the timer is moved to where the last skipped
//! call would have put it, and the loop resumes stepping a few cycles before the next build.

use super::{Plan, Sim};

/// Gaps shorter than this are stepped through: the jump is for anomalies, and ordinary traces
/// keep being replayed cycle by cycle.
pub const MIN_JUMP_MS: i64 = 6 * 3600 * 1000;

/// `a / b` rounded up, for `a >= 0` and `b > 0`.
fn ceil_div(a: i64, b: i64) -> i64 {
    (a + b - 1) / b
}

impl Sim<'_> {
    /// Where the next cycle should run: `next`, or, when the simulation is at rest until a far
    /// arrival, the last full cycle before it (after counting what was skipped).
    pub(super) fn skip_idle(&mut self, next: i64, resting: Plan) -> i64 {
        if !self.jump {
            return next;
        }
        let Some(arrival) = self
            .trace
            .builds
            .get(self.next_arrival)
            .map(|b| b.queued_ms)
        else {
            return next;
        };
        let declarative = self.fleet.executor.declarative();
        let at_rest = self.events.is_empty()
            && self.queued == 0
            && self.running == 0
            && !self.revisit
            && self.last_applied == Some(resting)
            // A standby target follows the hour of the week: a gap is stepped through so
            // every change of it is applied and paid for.
            && self.standby.is_empty()
            && self.last_standby == 0
            && if declarative {
                self.live.len() as u32 == self.target_instances(resting.size)
            } else {
                self.live.is_empty() && resting.queued_size == 0
            };
        let sleep = self.fleet.sleep_ms;
        let g0 = self.next_full;
        if !at_rest || arrival - g0 < MIN_JUMP_MS.max(3 * sleep) {
            return next;
        }
        // Skip the full cycles g0, g0 + sleep, …, g0 + (m-1)·sleep; resume at g0 + m·sleep,
        // at least two full cycles before the arrival.
        let m = (arrival - g0) / sleep - 2;
        let poll = self.fleet.poll_ms;
        let fast = declarative && poll > 0 && poll < sleep;
        let per_interval = if fast {
            (sleep + poll - 1) / poll - 1
        } else {
            0
        };
        let before_g0 = if fast && next < g0 {
            (g0 - self.t + poll - 1) / poll - 1
        } else {
            0
        };
        self.out.cycles += (before_g0 + m * (1 + per_interval)) as u64;
        // The timer's calls among the skipped full cycles: the first where it has run out,
        // then one every ceil(R / sleep) full cycles.
        let r = i64::from(self.pool.reevaluate_minutes.max(0)) * 60_000;
        let first = match self.pool.last_autoscaled {
            None => 0,
            Some(last) => {
                let last_ms = (last - self.trace.start).num_milliseconds();
                ceil_div((last_ms + r - g0).max(0), sleep)
            }
        };
        let period = ceil_div(r, sleep).max(1);
        if first < m {
            let calls = 1 + (m - 1 - first) / period;
            let last_call = g0 + (first + (calls - 1) * period) * sleep;
            self.out.executor_calls += calls as u64;
            self.pool.last_autoscaled =
                Some(self.trace.start + chrono::Duration::milliseconds(last_call));
        }
        self.next_full = g0 + m * sleep;
        self.next_full
    }
}

#[cfg(test)]
mod tests {
    use super::super::{simulate_with, ExecutorModel, Fleet};
    use crate::planner::Planners;
    use crate::simulate::trace::Trace;
    use autoscaler_executor::WorkerPool;

    fn trace(rows: &[(i64, i64)]) -> Trace {
        let mut csv = String::from("queued_at,duration_seconds\n");
        for (q, d) in rows {
            csv += &format!("{q},{d}\n");
        }
        Trace::parse(csv.as_bytes(), "t.csv").unwrap()
    }

    /// Jumping over a long idle gap gives exactly the outcome of stepping through it: fates,
    /// instances, series, cycles and executor calls.
    #[test]
    fn jumping_changes_nothing_but_the_time_it_takes() {
        // Bursts separated by gaps of 7 h and 30 h (and one odd-sized gap).
        let t = trace(&[
            (0, 300),
            (10, 60),
            (7 * 3600 + 13, 120),
            (7 * 3600 + 14, 30),
            (37 * 3600 + 7, 600),
            (37 * 3600 + 3601, 5),
        ]);
        let planners = Planners::default();
        for executor in [
            ExecutorModel::Declarative,
            ExecutorModel::Shell {
                max_builds: Some(1),
                max_wait_ms: Some(300_000),
            },
        ] {
            for (poll_ms, worker_poll_ms) in [(1000, 0), (0, 10_000), (3000, 0)] {
                for (planner, reevaluate, minimum) in [
                    ("stock", 10, 0),
                    ("boot-aware", 0, 0),
                    ("stock", 7, 0),
                    ("stock", 10, 2),
                ] {
                    let mut pool = WorkerPool::with_defaults(1, "p");
                    pool.planner = Some(planner.into());
                    pool.reevaluate_minutes = reevaluate;
                    pool.minimum = minimum;
                    let fleet = Fleet {
                        boot_ms: 90_000,
                        workers_per_instance: 1,
                        sleep_ms: 20_000,
                        poll_ms,
                        worker_poll_ms,
                        executor,
                        max_step_up: None,
                        resume_ms: 20_000,
                        standby_cost: 0.05,
                    };
                    let stepped =
                        simulate_with(&t, &pool, &fleet, &planners, true, false, None).unwrap();
                    let jumped =
                        simulate_with(&t, &pool, &fleet, &planners, true, true, None).unwrap();
                    assert_eq!(
                        jumped, stepped,
                        "{executor:?} poll {poll_ms} worker poll {worker_poll_ms} {planner} {reevaluate}"
                    );
                }
            }
        }
    }

    /// The case: two builds 180 years apart (a mistyped year) are simulated, not
    /// stepped through second by second; every cycle of the gap is still counted.
    #[test]
    fn a_mistyped_year_is_jumped_over() {
        let years = 180i64;
        let gap = years * 365 * 86_400;
        let t = trace(&[(0, 60), (gap, 60)]);
        let pool = WorkerPool::with_defaults(1, "p");
        let fleet = Fleet {
            boot_ms: 90_000,
            workers_per_instance: 1,
            sleep_ms: 20_000,
            poll_ms: 1000,
            worker_poll_ms: 10_000,
            executor: ExecutorModel::Declarative,
            max_step_up: None,
            resume_ms: 20_000,
            standby_cost: 0.05,
        };
        let o = simulate_with(&t, &pool, &fleet, &Planners::default(), false, true, None).unwrap();
        assert!(
            o.fates
                .iter()
                .all(|f| matches!(f, super::super::BuildFate::Ran { .. })),
            "{:?}",
            o.fates
        );
        // One full cycle per 20 s and 19 fast polls between: 20 cycles per 20 s of the gap.
        assert!(o.cycles >= (gap as u64) * 19 / 20, "{}", o.cycles);
    }
}
