use super::{clamp, PlanInput, Planner, PlannerState, Stock};
use autoscaler_executor::Plan;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// `[planners.boot-aware]` of the config file.
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BootAwareConfig {
    /// Seconds from asking for an instance until its workers take builds. Arrivals expected
    /// within this time are provisioned for now, since capacity asked for later comes too
    /// late for them.
    pub boot_seconds: u64,
    /// Capacity is kept until the demand has stayed below it for this many seconds
    /// [default: `boot_seconds`]. Removing a worker and booting another a minute later costs
    /// a boot time of worker-seconds and a boot time of waiting; keeping it idle costs only
    /// the idle seconds. Holding for one boot time is the classic rent-or-buy answer: never
    /// more than twice the cost of the best choice made in hindsight.
    pub scale_in_delay_seconds: Option<u64>,
    /// How much of the expected arrivals within one boot time to provision ahead (0 turns the
    /// look-ahead off, 1 provisions for all of them).
    pub lookahead: f64,
}

impl Default for BootAwareConfig {
    fn default() -> Self {
        BootAwareConfig {
            boot_seconds: 90,
            scale_in_delay_seconds: None,
            lookahead: 0.0,
        }
    }
}

/// The most runs kept per pool, whatever the loop's interval: the memory bound (a few
/// hundred kilobytes at most).
const MAX_SAMPLES: usize = 4096;

/// A run of cycles `boot-aware` remembers for a pool: what each asked for on its own (`size`)
/// and the queued + running builds it saw, from the first to the last cycle of the run.
/// Consecutive equal cycles share one run, so a pool re-planned every second stays small.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DemandSample {
    /// The run's first cycle.
    pub first: DateTime<Utc>,
    /// The run's last cycle: the hold lasts `scale_in_delay_seconds` from here.
    pub last: DateTime<Utc>,
    /// Stock's size plus the look-ahead, clamped.
    pub size: u32,
    /// Queued + running builds, queued ones counted as the pool's demand counts them
    /// ([`crate::planner::Counts::effective_queued`]: distinct projects with `build_latest`),
    /// so the look-ahead sees the arrivals that will need a worker and not the duplicates
    /// Vespene's worker aborts.
    pub builds: u64,
}

/// Vespene's formula, made aware of time: scale out as `stock` does (never slower), plus
/// capacity for the builds expected within one boot time; scale in only after the demand has
/// stayed lower for `scale_in_delay_seconds`.
///
/// ```text
/// demand(t) = stock size at t (weights, multiplier, excess, build_latest, bounds)
/// arrivals  = builds that joined in the last window (rises of queued + running, queued counted
///             as stock counts them: distinct projects with build_latest), per second
/// size(t)   = clamp(max(demand(t) + ceil(lookahead * arrivals * boot_seconds),
///                       max of demand over the last scale_in_delay_seconds), minimum, maximum)
/// queued_size = stock's (a non-declarative executor cannot scale in, so it gets no spare)
/// ```
///
/// With no history (a restart, `--force`) it answers exactly what `stock` answers.
pub struct BootAware {
    config: BootAwareConfig,
}

impl BootAware {
    /// Builds the planner from its checked settings.
    pub fn new(config: BootAwareConfig) -> Self {
        BootAware { config }
    }

    /// Reads `[planners.boot-aware]`; unknown keys and nonsense values are errors naming the
    /// key.
    pub fn from_table(table: &toml::Table) -> Result<Self, String> {
        let config: BootAwareConfig = toml::Value::Table(table.clone())
            .try_into()
            .map_err(|e: toml::de::Error| e.message().to_string())?;
        if !config.lookahead.is_finite() || !(0.0..=4.0).contains(&config.lookahead) {
            return Err(format!(
                "lookahead: must be between 0 and 4, got {}",
                config.lookahead
            ));
        }
        if config.boot_seconds > 86_400 || config.scale_in_delay_seconds.unwrap_or(0) > 86_400 {
            return Err("boot_seconds and scale_in_delay_seconds must be at most 86400".into());
        }
        Ok(BootAware::new(config))
    }

    fn delay_seconds(&self) -> u64 {
        self.config
            .scale_in_delay_seconds
            .unwrap_or(self.config.boot_seconds)
    }

    /// How far back samples are kept: the hold and the arrival rate both look this far.
    fn window(&self) -> Duration {
        Duration::seconds(self.delay_seconds().max(self.config.boot_seconds) as i64)
    }
}

impl Planner for BootAware {
    fn name(&self) -> &'static str {
        "boot-aware"
    }

    fn settings(&self) -> serde_json::Value {
        serde_json::to_value(&self.config).expect("plain settings serialize")
    }

    fn boot_seconds(&self) -> Option<u64> {
        Some(self.config.boot_seconds)
    }

    fn plan(&self, input: &PlanInput<'_>, state: &mut PlannerState) -> Plan {
        let stock = Stock.plan(input, state);
        let now = input.now;
        let builds = input.counts.effective_queued(input.pool) + input.counts.running;
        let samples = &mut state.samples;
        // A clock that went backwards invalidates the history.
        if samples.back().is_some_and(|s| s.last > now) {
            samples.clear();
        }
        let window = self.window();
        let window_start = now - window;
        while samples.front().is_some_and(|s| s.last < window_start) {
            samples.pop_front();
        }
        let delay_start = now - Duration::seconds(self.delay_seconds() as i64);
        let held = samples
            .iter()
            .filter(|s| s.last > delay_start)
            .map(|s| s.size)
            .max()
            .unwrap_or(0);
        let ahead = if self.config.lookahead > 0.0 {
            // Rises of queued + running between remembered cycles: the builds that joined
            // (a build that joined and one that left in the same interval cancel out, so this
            // errs low). Divided by the whole window: no history means no arrivals yet.
            let mut arrivals = 0u64;
            let mut prev: Option<u64> = None;
            for b in samples.iter().map(|s| s.builds).chain([builds]) {
                if let Some(p) = prev {
                    arrivals += b.saturating_sub(p);
                }
                prev = Some(b);
            }
            let per_second = arrivals as f64 / (window.num_seconds().max(1) as f64);
            let pool = input.pool;
            (self.config.lookahead
                * per_second
                * self.config.boot_seconds as f64
                * pool.queued_weight
                * pool.multiplier
                - 1e-9)
                .ceil() as i64
        } else {
            0
        };
        // What this cycle alone asks for; remembered, so the look-ahead is held too (otherwise
        // a noisy rate estimate would flap the size up and down every cycle).
        let fresh = clamp(input.pool, i64::from(stock.size) + ahead);
        match samples.back_mut() {
            Some(last) if last.size == fresh && last.builds == builds => last.last = now,
            _ => samples.push_back(DemandSample {
                first: now,
                last: now,
                size: fresh,
                builds,
            }),
        }
        if samples.len() > MAX_SAMPLES {
            // Fold the oldest run into the next: the hold only lasts longer, never shorter.
            let oldest = samples.pop_front().expect("over the bound");
            if let Some(next) = samples.front_mut() {
                next.size = next.size.max(oldest.size);
                next.first = oldest.first;
            }
        }
        Plan {
            size: fresh.max(held),
            queued_size: stock.queued_size,
            standby: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::planner::Counts;
    use autoscaler_executor::WorkerPool;
    use proptest::prelude::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_709_510_400 + s, 0).unwrap()
    }

    fn counts(q: u64, r: u64) -> Counts {
        Counts {
            queued: q,
            queued_projects: q,
            running: r,
        }
    }

    fn planner(delay: u64, lookahead: f64) -> BootAware {
        BootAware::new(BootAwareConfig {
            boot_seconds: 60,
            scale_in_delay_seconds: Some(delay),
            lookahead,
        })
    }

    fn step(p: &BootAware, pool: &WorkerPool, t: i64, c: Counts, st: &mut PlannerState) -> u32 {
        p.plan(
            &PlanInput {
                pool,
                counts: c,
                now: at(t),
            },
            st,
        )
        .size
    }

    #[test]
    fn holds_then_scales_in() {
        let pool = WorkerPool::with_defaults(1, "p");
        let p = planner(120, 0.0);
        let mut st = PlannerState::default();
        assert_eq!(step(&p, &pool, 0, counts(3, 0), &mut st), 3);
        assert_eq!(step(&p, &pool, 20, counts(0, 3), &mut st), 3);
        assert_eq!(step(&p, &pool, 40, counts(0, 1), &mut st), 3, "held");
        assert_eq!(step(&p, &pool, 100, counts(0, 1), &mut st), 3, "still held");
        // 3 was last seen at 20 s: held until 140 s.
        assert_eq!(step(&p, &pool, 139, counts(0, 1), &mut st), 3);
        assert_eq!(step(&p, &pool, 141, counts(0, 0), &mut st), 1);
        // 1 was last seen at 139 s: held until 259 s.
        assert_eq!(step(&p, &pool, 258, counts(0, 0), &mut st), 1);
        assert_eq!(step(&p, &pool, 260, counts(0, 0), &mut st), 0);
    }

    #[test]
    fn looks_ahead_by_the_arrival_rate() {
        let mut pool = WorkerPool::with_defaults(1, "p");
        pool.maximum = 50;
        let p = planner(60, 1.0);
        let mut st = PlannerState::default();
        // 2 builds join every 20 s: 0.1/s, 6 within the 60 s boot.
        let mut size = 0;
        for i in 0..4 {
            size = step(&p, &pool, i * 20, counts(0, 2 * i as u64), &mut st);
        }
        assert_eq!(size, 6 + 6);
    }

    #[test]
    fn a_burst_of_one_project_counts_as_stock_counts_it() {
        // 13 builds of one project queue 5 s apart while 2 of them run: with build_latest the
        // pool needs a worker per project, so the look-ahead must not see 13 arrivals.
        let mut pool = WorkerPool::with_defaults(1, "p");
        pool.maximum = 50;
        let p = planner(60, 1.0);
        let burst = |pool: &WorkerPool| {
            let mut st = PlannerState::default();
            let mut peak = 0;
            for i in 0..13u64 {
                let running = i.min(2);
                let c = Counts {
                    queued: i + 1 - running,
                    queued_projects: 1,
                    running,
                };
                peak = peak.max(step(&p, pool, i as i64 * 5, c, &mut st));
            }
            peak
        };
        // Demand: 1 queued project + 2 running = 3. Arrivals counted the same way rose 1 -> 3
        // within the 60 s window: 2 more expected within the 60 s boot. (Counting every
        // queued build, as before, saw 12 rises: 3 + 12 = 15 workers for 3 builds' worth.)
        assert_eq!(burst(&pool), 3 + 2);
        // Without build_latest every build is demand, and the look-ahead counts them all.
        pool.build_latest = false;
        assert!(burst(&pool) >= 13, "{}", burst(&pool));
    }

    #[test]
    fn no_history_is_stock() {
        let mut pool = WorkerPool::with_defaults(1, "p");
        pool.excess = 1;
        let p = BootAware::new(BootAwareConfig::default());
        let input = PlanInput {
            pool: &pool,
            counts: counts(4, 2),
            now: at(0),
        };
        assert_eq!(
            p.plan(&input, &mut PlannerState::default()),
            Stock.plan(&input, &mut PlannerState::default())
        );
    }

    #[test]
    fn settings_are_checked() {
        let t: toml::Table =
            toml::from_str("boot_seconds = 30\nscale_in_delay_seconds = 600\nlookahead = 0.5")
                .unwrap();
        let p = BootAware::from_table(&t).unwrap();
        assert_eq!(p.delay_seconds(), 600);
        let t: toml::Table = toml::from_str("boot_seconds = 45").unwrap();
        assert_eq!(
            BootAware::from_table(&t).unwrap().delay_seconds(),
            45,
            "defaults to the boot time"
        );
        let t: toml::Table = toml::from_str("boot_secs = 30").unwrap();
        assert!(BootAware::from_table(&t)
            .err()
            .unwrap()
            .contains("unknown field `boot_secs`"));
        let t: toml::Table = toml::from_str("lookahead = -1.0").unwrap();
        assert!(BootAware::from_table(&t)
            .err()
            .unwrap()
            .starts_with("lookahead: must be between 0 and 4"));
        let t: toml::Table = toml::from_str("boot_seconds = \"slow\"").unwrap();
        assert!(BootAware::from_table(&t).is_err());
    }

    #[test]
    fn memory_is_bounded_and_the_hold_survives_it() {
        let mut pool = WorkerPool::with_defaults(1, "p");
        pool.maximum = 100;
        let p = planner(86_400, 0.0);
        let mut st = PlannerState::default();
        assert_eq!(step(&p, &pool, 0, counts(50, 0), &mut st), 50);
        // Every second a different count: no two cycles merge.
        for t in 1..10_000i64 {
            let size = step(&p, &pool, t, counts((t % 7) as u64, 0), &mut st);
            assert_eq!(size, 50, "at {t}");
            assert!(st.samples.len() <= MAX_SAMPLES);
        }
        // Equal cycles share one run.
        let mut st = PlannerState::default();
        for t in 0..1000 {
            step(&p, &pool, t, counts(3, 1), &mut st);
        }
        assert_eq!(st.samples.len(), 1);
        assert_eq!((st.samples[0].first, st.samples[0].last), (at(0), at(999)));
    }

    fn settings() -> impl Strategy<Value = WorkerPool> {
        (0..20i32, 0..60i32, 0.0..4.0f64, 0.0..4.0f64, -5..5i32).prop_map(
            |(min, span, qw, rw, excess)| {
                let mut p = WorkerPool::with_defaults(1, "p");
                p.minimum = min;
                p.maximum = min + span;
                p.queued_weight = qw;
                p.running_weight = rw;
                p.excess = excess.max(-p.maximum);
                p
            },
        )
    }

    /// A run of cycles: (seconds since the previous cycle, queued, running).
    fn cycles() -> impl Strategy<Value = Vec<(i64, u64, u64)>> {
        proptest::collection::vec((1i64..120, 0u64..80, 0u64..80), 1..60)
    }

    proptest! {
        #[test]
        fn within_bounds_and_never_below_stock(pool in settings(), run in cycles(),
                                               delay in 0u64..900, lookahead in 0.0..2.0f64) {
            let p = planner(delay, lookahead);
            let mut st = PlannerState::default();
            let mut t = 0;
            for (dt, q, r) in run {
                t += dt;
                let input = PlanInput { pool: &pool, counts: counts(q, r), now: at(t) };
                let stock = Stock.plan(&input, &mut PlannerState::default());
                let plan = p.plan(&input, &mut st);
                prop_assert!(plan.size as i32 >= pool.minimum && plan.size as i32 <= pool.maximum);
                prop_assert!(plan.size >= stock.size, "scales out at least as fast as stock");
                prop_assert_eq!(plan.queued_size, stock.queued_size);
            }
        }

        #[test]
        fn never_scales_in_before_the_delay(pool in settings(), run in cycles(), delay in 0u64..900) {
            let p = planner(delay, 0.0);
            let mut st = PlannerState::default();
            let mut t = 0;
            // (time, stock size) of every cycle so far.
            let mut seen: Vec<(i64, u32)> = Vec::new();
            for (dt, q, r) in run {
                t += dt;
                let input = PlanInput { pool: &pool, counts: counts(q, r), now: at(t) };
                let stock = Stock.plan(&input, &mut PlannerState::default());
                let plan = p.plan(&input, &mut st);
                seen.push((t, stock.size));
                // Every demand seen less than `delay` ago still holds the size up.
                for &(s, size) in &seen {
                    if t - s < delay as i64 {
                        prop_assert!(plan.size >= size, "at {t}: size {} below demand {size} seen at {s}", plan.size);
                    }
                }
                // And without look-ahead, nothing more than that.
                let expect = seen.iter().filter(|&&(s, _)| t - s < delay as i64).map(|x| x.1).max().unwrap_or(0).max(stock.size);
                prop_assert_eq!(plan.size, expect);
            }
        }
    }
}
