//! `--plot FILE.svg`: queued builds, running builds, booted, paid and standby workers over
//! time, one panel per planner, so a person can see *when* a planner lags or over-provisions,
//! not just by how much.

use crate::simulate::model::Sample;
use chrono::{DateTime, Duration, Timelike, Utc};
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::prelude::*;
use std::ops::Range;
use std::path::Path;

/// An axis with the tick positions given: plotters' own choice for an `f64` range puts ticks
/// at 0.5 when the maximum is small and at "hours since the start" rather than at clock times.
struct Ticked {
    range: Range<f64>,
    ticks: Vec<f64>,
}

impl Ranged for Ticked {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let span = self.range.end - self.range.start;
        if span <= 0.0 || !value.is_finite() {
            return limit.0;
        }
        let share = (value - self.range.start) / span;
        limit.0 + (share * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        // Labelled (bold) lines only: no light lines between two whole ticks.
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> Range<f64> {
        self.range.clone()
    }
}

/// One panel: a title and the run's samples up to `end_ms`.
pub struct Panel<'a> {
    /// Shown above the panel: planner, trace and fleet.
    pub title: String,
    /// The run's samples ([`crate::simulate::model::simulate`] with `record_series`).
    pub series: &'a [Sample],
    /// Where the time axis ends.
    pub end_ms: i64,
    /// The instant the trace's offset 0 stands for: the time axis is labelled with clock
    /// times (UTC), which is what a person compares with their own CI's day.
    pub start: DateTime<Utc>,
}

/// Columns each panel is reduced to: every column shows the most each quantity reached in its
/// slice of time, so a one-minute burst in a day-long trace is still visible.
const COLUMNS: usize = 1200;

/// The quantities drawn, in the order of [`envelope`]'s arrays.
const SERIES: usize = 5;

/// Per column: (hours since the start, [queued, running, ready workers, paid workers,
/// standby workers]).
fn envelope(series: &[Sample], end_ms: i64) -> Vec<(f64, [u32; SERIES])> {
    let end = end_ms.max(1);
    let width = (end as f64 / COLUMNS as f64).max(1.0);
    let mut out = Vec::with_capacity(COLUMNS + 1);
    let mut cur = [0u32; SERIES];
    let mut idx = 0;
    for j in 0..=COLUMNS {
        let upto = ((j + 1) as f64 * width) as i64;
        let mut m = cur;
        while idx < series.len() && series[idx].t_ms < upto {
            let s = series[idx];
            cur = [
                s.queued,
                s.running,
                s.ready_workers,
                s.provisioned_workers,
                s.standby_workers,
            ];
            for (a, b) in m.iter_mut().zip(cur) {
                *a = (*a).max(b);
            }
            idx += 1;
        }
        let t = (j as f64 * width).min(end as f64);
        out.push((t / 3_600_000.0, m));
        if t >= end as f64 {
            break;
        }
    }
    out
}

/// Integer tick values from 0 to at least `max` with a 1-2-5 step, at most about 10 of them:
/// counts of builds and workers are whole numbers, so no tick may fall between two.
fn y_ticks(max: u32) -> (Vec<f64>, u32) {
    let max = max.max(1);
    let mut step = 1u32;
    'search: for decade in [1u32, 10, 100, 1000, 10_000, 100_000] {
        for m in [1u32, 2, 5] {
            step = m * decade;
            if max.div_ceil(step) <= 10 {
                break 'search;
            }
        }
    }
    let top = max.div_ceil(step) * step;
    ((0..=top / step).map(|i| f64::from(i * step)).collect(), top)
}

/// Clock ticks (hours since the start) at whole multiples of a step in wall-clock time: a
/// quarter hour for short runs up to a day for a week, at most about 14 of them.
fn x_ticks(start: DateTime<Utc>, hours: f64) -> (Vec<f64>, f64) {
    const STEPS_MIN: [i64; 10] = [15, 30, 60, 120, 180, 360, 720, 1440, 2880, 10_080];
    let minutes = hours * 60.0;
    let step = STEPS_MIN
        .into_iter()
        .find(|s| minutes / *s as f64 <= 12.0)
        .unwrap_or(10_080);
    let step_s = step * 60;
    let start_s = start.timestamp();
    let first =
        start_s.div_euclid(step_s) * step_s + if start_s % step_s == 0 { 0 } else { step_s };
    let mut ticks = Vec::new();
    let mut t = first;
    while ((t - start_s) as f64) / 3600.0 <= hours && ticks.len() < 64 {
        ticks.push((t - start_s) as f64 / 3600.0);
        t += step_s;
    }
    (ticks, step as f64 / 60.0)
}

/// The label of a clock tick: `HH:MM` within a day, the weekday and date at midnight when the
/// run spans days.
fn x_label(start: DateTime<Utc>, hours: f64, span_hours: f64) -> String {
    let t = start + Duration::milliseconds((hours * 3_600_000.0).round() as i64);
    if span_hours > 30.0 {
        if t.hour() == 0 && t.minute() == 0 {
            t.format("%a %d %b").to_string()
        } else {
            t.format("%a %H:%M").to_string()
        }
    } else {
        t.format("%H:%M").to_string()
    }
}

/// Writes the SVG.
pub fn write_svg(path: &Path, panels: &[Panel<'_>]) -> Result<(), String> {
    let height = 380 * panels.len().max(1) as u32;
    let root = SVGBackend::new(path, (1400, height)).into_drawing_area();
    let e = |x: &dyn std::fmt::Display| format!("drawing {}: {x}", path.display());
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let areas = root.split_evenly((panels.len().max(1), 1));
    // Drawn in this order, widest first, so a line that equals another (running = booted when
    // every worker is busy) still shows as a thin line inside the wider one.
    let names = [
        "paid workers (booting included)",
        "capacity (booted workers)",
        "standby workers (suspended or stopped)",
        "running builds",
        "queued builds",
    ];
    let index = [3usize, 2, 4, 1, 0];
    let styles = [
        ShapeStyle::from(BLACK.mix(0.22)).stroke_width(7),
        ShapeStyle::from(RGBColor(0, 150, 60).mix(0.75)).stroke_width(4),
        ShapeStyle::from(RGBColor(230, 140, 0)).stroke_width(2),
        ShapeStyle::from(BLUE).stroke_width(1),
        ShapeStyle::from(RED).stroke_width(1),
    ];
    for (area, panel) in areas.iter().zip(panels) {
        let cols = envelope(panel.series, panel.end_ms);
        let hours = (panel.end_ms as f64 / 3_600_000.0).max(1.0 / 60.0);
        let peak = cols.iter().flat_map(|c| c.1).max().unwrap_or(0);
        let (yk, top) = y_ticks(peak);
        let (xk, _) = x_ticks(panel.start, hours);
        let mut chart = ChartBuilder::on(area)
            .caption(&panel.title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(48)
            .build_cartesian_2d(
                Ticked {
                    range: 0f64..hours,
                    ticks: xk,
                },
                Ticked {
                    range: 0f64..f64::from(top),
                    ticks: yk,
                },
            )
            .map_err(|x| e(&x))?;
        let start = panel.start;
        let x_fmt = |x: &f64| x_label(start, *x, hours);
        chart
            .configure_mesh()
            .x_desc(format!(
                "time (UTC), from {}",
                start.format("%a %Y-%m-%d %H:%M")
            ))
            .y_desc("builds / workers")
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&|y: &f64| format!("{}", y.round() as i64))
            .draw()
            .map_err(|x| e(&x))?;
        for (n, name) in names.iter().enumerate() {
            let (i, style) = (index[n], styles[n]);
            chart
                .draw_series(LineSeries::new(
                    cols.iter().map(|(t, v)| (*t, f64::from(v[i]))),
                    style,
                ))
                .map_err(|x| e(&x))?
                .label(*name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|x| e(&x))?;
    }
    root.present().map_err(|x| e(&x))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t_ms: i64, q: u32) -> Sample {
        Sample {
            t_ms,
            queued: q,
            running: 0,
            ready_workers: 0,
            provisioned_workers: 0,
            standby_workers: 0,
        }
    }

    #[test]
    fn envelope_keeps_short_peaks() {
        // A 1 ms spike to 9 in a 20 minute run still shows in its column.
        let series = [s(0, 1), s(600_000, 9), s(600_001, 2)];
        let cols = envelope(&series, 1_200_000);
        assert_eq!(cols.iter().map(|c| c.1[0]).max(), Some(9));
        assert_eq!(cols[0].1[0], 1);
        assert_eq!(cols.last().unwrap().1[0], 2);
        assert!((cols.last().unwrap().0 - 1_200_000.0 / 3_600_000.0).abs() < 1e-9);
    }

    #[test]
    fn y_ticks_are_whole_numbers() {
        // The old axis printed `0 0 1 2 2 2` for a maximum of 2 (ticks at 0.5).
        for max in [0u32, 1, 2, 3, 7, 10, 11, 37, 99, 1234, 4_000_000] {
            let (ticks, top) = y_ticks(max);
            assert!(top >= max.max(1), "{max}");
            assert!(ticks.len() >= 2 && ticks.len() <= 11, "{max}: {ticks:?}");
            assert!(ticks.iter().all(|t| t.fract() == 0.0), "{max}: {ticks:?}");
            let labels: Vec<String> = ticks.iter().map(|t| format!("{t}")).collect();
            let mut dedup = labels.clone();
            dedup.dedup();
            assert_eq!(labels, dedup, "no label twice");
        }
        assert_eq!(y_ticks(2).0, vec![0.0, 1.0, 2.0]);
    }

    #[test]
    fn x_ticks_are_clock_times() {
        let start = DateTime::parse_from_rfc3339("2026-06-08T00:50:36Z")
            .unwrap()
            .with_timezone(&Utc);
        // A week: one tick a day at midnight, labelled with the date.
        let (ticks, step) = x_ticks(start, 7.0 * 24.0);
        assert_eq!(step, 24.0);
        assert_eq!(ticks.len(), 7);
        assert_eq!(x_label(start, ticks[0], 168.0), "Tue 09 Jun");
        // A day: every two hours, on the hour.
        let (ticks, _) = x_ticks(start, 24.0);
        assert_eq!(x_label(start, ticks[0], 24.0), "02:00");
        assert_eq!(x_label(start, ticks[1], 24.0), "04:00");
        // Twenty minutes: quarter hours.
        let (ticks, _) = x_ticks(start, 1.0 / 3.0);
        assert_eq!(x_label(start, ticks[0], 1.0 / 3.0), "01:00");
    }
}
