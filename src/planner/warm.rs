//! `warm`: boot-aware's size, plus a standby target learned from the pool's own history.
//!
//! A reactive planner cannot make a build wait less than one boot when it arrives in a burst
//! that the booted workers cannot absorb. Both clouds can keep instances stopped or suspended,
//! paying for their disks only, and bring them back in seconds; `warm` says how many to keep:
//! enough for the arrivals seen within one boot at this hour of the week.

use super::{BootAware, BootAwareConfig, PlanInput, Planner, PlannerState};
use autoscaler_executor::{Plan, WorkerPool};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Hours in a week: the most buckets an [`ArrivalHistory`] holds.
pub const HOURS_PER_WEEK: usize = 168;

/// Hour of the week of `t` in UTC, 0 = Monday 00:00–01:00 (1970-01-01 was a Thursday, hence the
/// 72 hours).
pub fn hour_of_week(t: DateTime<Utc>) -> usize {
    (t.timestamp().div_euclid(3600) + 72).rem_euclid(HOURS_PER_WEEK as i64) as usize
}

/// A pool's arrivals by hour of the week: per hour, the most builds that arrived within one
/// window of `window_seconds` (fixed windows aligned to the Unix epoch; the windows of every
/// week of the history pooled, the largest kept). Arrivals are counted as the pool's demand
/// counts them: distinct projects with `build_latest` (a build without a project counts as its
/// own), every build otherwise.
///
/// Fixed windows are the honest statistic one grouped query can give on both engines: a burst
/// that straddles two windows counts as two smaller ones, so the figure errs low by up to half
/// for bursts shorter than a window. Bounded by construction: 168 buckets, whatever the history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArrivalHistory {
    window_seconds: u64,
    peaks: Vec<u32>,
}

impl ArrivalHistory {
    /// An empty history (every hour 0) for windows of `window_seconds` (at least 1).
    pub fn new(window_seconds: u64) -> Self {
        ArrivalHistory {
            window_seconds: window_seconds.max(1),
            peaks: vec![0; HOURS_PER_WEEK],
        }
    }

    /// The window the peaks were counted over.
    pub fn window_seconds(&self) -> u64 {
        self.window_seconds
    }

    /// Records `count` arrivals in one window starting in `hour` (0..168; others ignored):
    /// the bucket keeps the largest.
    pub fn record(&mut self, hour: usize, count: u32) {
        if let Some(p) = self.peaks.get_mut(hour) {
            *p = (*p).max(count);
        }
    }

    /// The peak of one hour of the week (0 for an hour out of range).
    pub fn peak(&self, hour: usize) -> u32 {
        self.peaks.get(hour).copied().unwrap_or(0)
    }

    /// Buckets held: 168, always.
    pub fn buckets(&self) -> usize {
        self.peaks.len()
    }

    /// Whether no window saw an arrival.
    pub fn is_empty(&self) -> bool {
        self.peaks.iter().all(|&p| p == 0)
    }

    /// The history of a list of arrivals `(queued time, demand key)`: builds sharing a key
    /// within a window count once (the caller gives each build its own key unless the pool
    /// has `build_latest`). What the simulator learns from a trace, by the same rule as the
    /// database query ([`crate::db::Database::arrival_history`]).
    pub fn from_arrivals(
        window_seconds: u64,
        arrivals: impl IntoIterator<Item = (DateTime<Utc>, u64)>,
    ) -> Self {
        let mut h = ArrivalHistory::new(window_seconds);
        let w = h.window_seconds as i64;
        let mut windows: BTreeMap<i64, std::collections::BTreeSet<u64>> = BTreeMap::new();
        for (t, key) in arrivals {
            windows
                .entry(t.timestamp().div_euclid(w))
                .or_default()
                .insert(key);
        }
        for (win, keys) in windows {
            let Some(start) = win
                .checked_mul(w)
                .and_then(|s| DateTime::from_timestamp(s, 0))
            else {
                continue;
            };
            h.record(
                hour_of_week(start),
                u32::try_from(keys.len()).unwrap_or(u32::MAX),
            );
        }
        h
    }
}

/// One pool's standby bounds under `[planners.warm.pools.NAME]`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StandbyBounds {
    /// Standby workers held whatever the history says [default: the section's].
    pub standby_min: Option<u32>,
    /// Most standby workers held [default: the section's].
    pub standby_max: Option<u32>,
}

/// `[planners.warm]` of the config file.
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WarmConfig {
    /// Seconds from asking for a new instance until its workers take builds: the size is
    /// planned as `boot-aware` plans it, and the standby covers the arrivals within this time.
    pub boot_seconds: u64,
    /// Seconds from resuming a standby instance until its workers take builds again.
    pub resume_seconds: u64,
    /// As `boot-aware`'s [default: `resume_seconds`]: with standby to come back from, giving
    /// a worker up costs a resume rather than a boot, so the rent-or-buy hold is one resume.
    pub scale_in_delay_seconds: Option<u64>,
    /// As `boot-aware`'s.
    pub lookahead: f64,
    /// Standby workers held even with no history (the floor) [default: 0].
    pub standby_min: u32,
    /// Most standby workers held (the ceiling): each costs its disk while it waits.
    pub standby_max: u32,
    /// Share of the history's peak to hold on standby (1: all of it).
    pub coverage: f64,
    /// A standby target that drops is held this long first [default: 0]. A standby instance
    /// given up costs a boot to get back, and kept it costs the standby price; but on the
    /// shipped traces holding it (even the rent-or-buy 20 boot times at 5% of the price) cost
    /// more standby-hours than the boots it saved, so it is off unless asked for.
    pub standby_hold_seconds: u64,
    /// Per-pool floor and ceiling, by pool name, over the two above.
    pub pools: BTreeMap<String, StandbyBounds>,
}

impl Default for WarmConfig {
    fn default() -> Self {
        WarmConfig {
            boot_seconds: 90,
            resume_seconds: 20,
            scale_in_delay_seconds: None,
            lookahead: 0.0,
            standby_min: 0,
            standby_max: 40,
            coverage: 1.0,
            standby_hold_seconds: 0,
            pools: BTreeMap::new(),
        }
    }
}

/// `boot-aware`'s size, and a standby target from history:
///
/// ```text
/// size     = boot-aware's size (same formula, same settings)
/// expected = the history's peak arrivals within one boot, at this hour of the week and at
///            the hour one boot from now (whichever is larger), counted as the pool's demand
/// standby  = min(clamp(ceil(coverage × expected × queued_weight × multiplier),
///                      standby_min, standby_max),
///                maximum − size)
/// ```
///
/// The last line keeps size + standby within the pool's `maximum`: a standby instance beyond it
/// could never be brought into service. With no history the standby is the floor.
pub struct Warm {
    config: WarmConfig,
    size: BootAware,
}

impl Warm {
    /// Builds the planner from its checked settings.
    pub fn new(config: WarmConfig) -> Self {
        let size = BootAware::new(BootAwareConfig {
            boot_seconds: config.boot_seconds,
            scale_in_delay_seconds: Some(
                config
                    .scale_in_delay_seconds
                    .unwrap_or(config.resume_seconds),
            ),
            lookahead: config.lookahead,
        });
        Warm { config, size }
    }

    /// Reads `[planners.warm]`; unknown keys and nonsense values are errors naming the key.
    pub fn from_table(table: &toml::Table) -> Result<Self, String> {
        let config: WarmConfig = toml::Value::Table(table.clone())
            .try_into()
            .map_err(|e: toml::de::Error| e.message().to_string())?;
        // The size settings are boot-aware's, checked by its own rules.
        let mut size = toml::Table::new();
        size.insert(
            "boot_seconds".into(),
            toml::Value::Integer(config.boot_seconds.min(i64::MAX as u64) as i64),
        );
        if let Some(d) = config
            .scale_in_delay_seconds
            .or(Some(config.resume_seconds))
        {
            size.insert(
                "scale_in_delay_seconds".into(),
                toml::Value::Integer(d.min(i64::MAX as u64) as i64),
            );
        }
        size.insert("lookahead".into(), toml::Value::Float(config.lookahead));
        BootAware::from_table(&size)?;
        if config.standby_hold_seconds > 7 * 86_400 || config.resume_seconds > 86_400 {
            return Err(
                "standby_hold_seconds and resume_seconds: must be at most 604800 and 86400".into(),
            );
        }
        if config.boot_seconds == 0 {
            return Err("boot_seconds: must be at least 1 (the standby covers one boot)".into());
        }
        if !config.coverage.is_finite() || !(0.0..=4.0).contains(&config.coverage) {
            return Err(format!(
                "coverage: must be between 0 and 4, got {}",
                config.coverage
            ));
        }
        let check = |what: &str, lo: u32, hi: u32| {
            if lo > hi {
                Err(format!(
                    "{what}standby_min ({lo}) is greater than standby_max ({hi})"
                ))
            } else {
                Ok(())
            }
        };
        check("", config.standby_min, config.standby_max)?;
        for (name, b) in &config.pools {
            let (lo, hi) = (
                b.standby_min.unwrap_or(config.standby_min),
                b.standby_max.unwrap_or(config.standby_max),
            );
            check(&format!("pools.{name}: "), lo, hi)?;
        }
        Ok(Warm::new(config))
    }

    fn hold_seconds(&self) -> u64 {
        self.config.standby_hold_seconds
    }

    /// The pool's (floor, ceiling).
    fn bounds(&self, pool: &WorkerPool) -> (u32, u32) {
        let b = self
            .config
            .pools
            .get(&pool.name)
            .copied()
            .unwrap_or_default();
        (
            b.standby_min.unwrap_or(self.config.standby_min),
            b.standby_max.unwrap_or(self.config.standby_max),
        )
    }
}

impl Planner for Warm {
    fn name(&self) -> &'static str {
        "warm"
    }

    fn settings(&self) -> serde_json::Value {
        serde_json::to_value(&self.config).expect("plain settings serialize")
    }

    fn boot_seconds(&self) -> Option<u64> {
        Some(self.config.boot_seconds)
    }

    fn resume_seconds(&self) -> Option<u64> {
        Some(self.config.resume_seconds)
    }

    fn history_window_seconds(&self) -> Option<u64> {
        Some(self.config.boot_seconds)
    }

    fn plan(&self, input: &PlanInput<'_>, state: &mut PlannerState) -> Plan {
        self.size.plan(input, state)
    }

    fn standby(&self, input: &PlanInput<'_>, state: &mut PlannerState, plan: &Plan) -> u32 {
        let pool = input.pool;
        let (lo, hi) = self.bounds(pool);
        let expected = state.history.as_ref().map_or(0, |h| {
            let later = input
                .now
                .checked_add_signed(Duration::seconds(self.config.boot_seconds as i64))
                .unwrap_or(input.now);
            h.peak(hour_of_week(input.now))
                .max(h.peak(hour_of_week(later)))
        });
        let raw =
            (self.config.coverage * f64::from(expected) * pool.queued_weight * pool.multiplier
                - 1e-9)
                .ceil();
        // `as` saturates; validated settings rule out NaN.
        let want = (raw.max(0.0) as u64).clamp(u64::from(lo), u64::from(hi)) as u32;
        let room = (pool.maximum.max(0) as u32).saturating_sub(plan.size);
        let want = want.min(room);
        // A lower target waits out the hold (a clock that went backwards ends it).
        let now = input.now;
        let hold = Duration::seconds(self.hold_seconds().min(i64::MAX as u64) as i64);
        let held = match state.standby_hold {
            Some((since, held)) if held > want && since <= now && now - since < hold => held,
            _ => {
                state.standby_hold = Some((now, want));
                want
            }
        };
        held.min(room).min(hi)
    }
}

#[cfg(test)]
mod tests;
