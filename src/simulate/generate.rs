//! Synthetic traces from a seed (`autoscaler simulate --generate KIND --seed N`), so the traces
//! shipped in `examples/traces/` can be regenerated and checked byte for byte, and anyone can
//! make more days of the same shape.
//!
//! The random numbers come from ChaCha20 seeded with `seed_from_u64(seed)` (a fixed,
//! documented algorithm), turned into uniform, exponential and normal variates here rather
//! than by a library whose sampling could change between versions.
//!
//! - `diurnal`: one office day. About 2,000 builds of 120 projects (a few popular, many
//!   rare), arriving as a Poisson process whose rate rises from a few per hour at night to a
//!   morning peak near 10:30 and an afternoon peak near 15:00, with a dip at lunch; plus a
//!   nightly schedule that queues 12 projects' full test suites at 02:00:00. Each project has
//!   its own typical duration (median 5 minutes across projects); each build varies around
//!   it.
//! - `release-day`: a quieter office day (60% of the diurnal rate) with six release trains
//!   (20 to 40 projects queued within 90 seconds, release builds 40% longer, 30% of them
//!   pushed twice, which `build_latest` collapses) and three hotfix storms (one project
//!   pushed 4 to 6 times a minute or so apart).

use crate::simulate::trace::{Trace, TraceBuild, OFFSET_EPOCH};
use chrono::{TimeZone, Utc};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// The shapes of day the generator knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TraceKind {
    /// Office hours: two peaks, quiet nights, a nightly schedule.
    Diurnal,
    /// Release trains and hotfix storms over a quieter day.
    ReleaseDay,
}

impl TraceKind {
    /// The name on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            TraceKind::Diurnal => "diurnal",
            TraceKind::ReleaseDay => "release-day",
        }
    }
}

struct Rng(ChaCha20Rng);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(ChaCha20Rng::seed_from_u64(seed))
    }
    /// Uniform in [0, 1), 53 bits.
    fn uniform(&mut self) -> f64 {
        (self.0.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
    fn exponential(&mut self, rate: f64) -> f64 {
        -(1.0 - self.uniform()).ln() / rate
    }
    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f64 {
        let (u1, u2) = (1.0 - self.uniform(), self.uniform());
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
    fn below(&mut self, n: usize) -> usize {
        ((self.uniform() * n as f64) as usize).min(n.saturating_sub(1))
    }
    fn weighted(&mut self, cumulative: &[f64]) -> usize {
        let x = self.uniform() * cumulative.last().copied().unwrap_or(0.0);
        cumulative
            .partition_point(|&c| c <= x)
            .min(cumulative.len() - 1)
    }
}

const PROJECTS: usize = 120;
const DAY: f64 = 24.0 * 3600.0;

struct Projects {
    cumulative: Vec<f64>,
    median_seconds: Vec<f64>,
}

fn projects(rng: &mut Rng) -> Projects {
    let mut cumulative = Vec::with_capacity(PROJECTS);
    let mut total = 0.0;
    for i in 0..PROJECTS {
        total += 1.0 / ((i + 1) as f64).powf(0.7);
        cumulative.push(total);
    }
    let median_seconds = (0..PROJECTS)
        .map(|_| {
            (300f64.ln() + 0.55 * rng.normal())
                .exp()
                .clamp(60.0, 1800.0)
        })
        .collect();
    Projects {
        cumulative,
        median_seconds,
    }
}

fn bump(h: f64, mean: f64, sd: f64) -> f64 {
    (-0.5 * ((h - mean) / sd).powi(2)).exp()
}

/// Builds per hour at `h` hours after midnight.
fn office_rate(h: f64) -> f64 {
    3.0 + 270.0 * bump(h, 10.5, 1.4) + 230.0 * bump(h, 15.0, 1.6) - 60.0 * bump(h, 12.6, 0.5)
}

/// Poisson arrivals at `scale * office_rate`, by thinning.
fn office_arrivals(rng: &mut Rng, scale: f64) -> Vec<f64> {
    let peak = (0..2400)
        .map(|i| office_rate(i as f64 / 100.0))
        .fold(0.0, f64::max)
        * scale
        * 1.05;
    let mut out = Vec::new();
    let mut t = 0.0;
    loop {
        t += rng.exponential(peak / 3600.0);
        if t >= DAY {
            return out;
        }
        if rng.uniform() * peak < scale * office_rate(t / 3600.0) {
            out.push(t);
        }
    }
}

fn duration(rng: &mut Rng, p: &Projects, project: usize, factor: f64) -> f64 {
    (p.median_seconds[project] * factor * (0.3 * rng.normal()).exp())
        .clamp(20.0, 5400.0)
        .round()
}

/// Generates one day of `kind` from `seed`.
pub fn generate(kind: TraceKind, seed: u64) -> Trace {
    let mut rng = Rng::new(seed);
    let p = projects(&mut rng);
    // (queued seconds, duration seconds, project)
    let mut rows: Vec<(f64, f64, usize)> = Vec::new();
    let scale = match kind {
        TraceKind::Diurnal => 1.0,
        TraceKind::ReleaseDay => 0.6,
    };
    for t in office_arrivals(&mut rng, scale) {
        let project = rng.weighted(&p.cumulative);
        let d = duration(&mut rng, &p, project, 1.0);
        rows.push((t.floor(), d, project));
    }
    match kind {
        TraceKind::Diurnal => {
            // The nightly schedule: 12 projects' full suites, queued at the same second.
            let mut chosen: Vec<usize> = (0..PROJECTS).collect();
            for i in 0..12 {
                let j = i + rng.below(PROJECTS - i);
                chosen.swap(i, j);
            }
            for &project in &chosen[..12] {
                let d = duration(&mut rng, &p, project, 2.0);
                rows.push((2.0 * 3600.0, d, project));
            }
        }
        TraceKind::ReleaseDay => {
            for base_hour in [9.5, 11.0, 13.75, 15.2, 16.3, 17.7] {
                let at = (base_hour + (rng.uniform() - 0.5) / 3.0) * 3600.0;
                let n = 20 + rng.below(21);
                let mut chosen: Vec<usize> = (0..PROJECTS).collect();
                for i in 0..n {
                    let j = i + rng.below(PROJECTS - i);
                    chosen.swap(i, j);
                }
                for &project in &chosen[..n] {
                    let t = at + rng.uniform() * 90.0;
                    rows.push((t.floor(), duration(&mut rng, &p, project, 1.4), project));
                    if rng.uniform() < 0.3 {
                        let again = t + 10.0 + rng.uniform() * 110.0;
                        rows.push((again.floor(), duration(&mut rng, &p, project, 1.4), project));
                    }
                }
            }
            for _ in 0..3 {
                let mut t = (9.0 + rng.uniform() * 8.0) * 3600.0;
                let project = rng.weighted(&p.cumulative);
                for _ in 0..4 + rng.below(3) {
                    rows.push((t.floor(), duration(&mut rng, &p, project, 1.0), project));
                    t += 30.0 + rng.uniform() * 60.0;
                }
            }
        }
    }
    rows.sort_by(|a, b| a.0.total_cmp(&b.0));
    Trace {
        start: Utc.timestamp_opt(OFFSET_EPOCH, 0).unwrap(),
        builds: rows
            .iter()
            .map(|&(t, d, project)| TraceBuild {
                queued_ms: t as i64 * 1000,
                duration_ms: d as i64 * 1000,
                project: Some(project as u32),
            })
            .collect(),
        projects: (1..=PROJECTS).map(|i| format!("project-{i:02}")).collect(),
        timestamps: false,
    }
}

/// The `#` comment lines written above a generated trace.
pub fn header_comments(kind: TraceKind, seed: u64) -> Vec<String> {
    vec![
        format!(
            "generated by `autoscaler simulate --generate {} --seed {seed}`; regenerate to check",
            kind.name()
        ),
        "queued_at: seconds since Monday 2024-03-04 00:00 UTC; duration_seconds: run time; project: build_latest key".into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_shaped() {
        let a = generate(TraceKind::Diurnal, 7);
        assert_eq!(a, generate(TraceKind::Diurnal, 7));
        assert_ne!(a, generate(TraceKind::Diurnal, 8));
        let n = a.builds.len();
        assert!((1500..2600).contains(&n), "{n} builds");
        let hour = |b: &TraceBuild| b.queued_ms / 3_600_000;
        let night = a
            .builds
            .iter()
            .filter(|b| hour(b) < 6 && b.queued_ms != 7_200_000)
            .count();
        let morning = a
            .builds
            .iter()
            .filter(|b| (9..12).contains(&hour(b)))
            .count();
        assert!(morning > 10 * night.max(1), "{morning} vs {night}");
        // The nightly schedule (a random arrival may share its second).
        let nightly = a.builds.iter().filter(|b| b.queued_ms == 7_200_000).count();
        assert!((12..=13).contains(&nightly), "{nightly}");
        let r = generate(TraceKind::ReleaseDay, 7);
        // Bursts: some minute holds at least 20 queued builds.
        let mut per_minute = std::collections::HashMap::new();
        for b in &r.builds {
            *per_minute.entry(b.queued_ms / 60_000).or_insert(0) += 1;
        }
        assert!(per_minute.values().any(|&c| c >= 20));
    }
}
