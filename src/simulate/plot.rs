//! `--plot FILE.svg`: queued builds, running builds and capacity over time, one panel per
//! planner, so a person can see *when* a planner lags or over-provisions, not just by how
//! much.

use crate::simulate::model::Sample;
use plotters::prelude::*;
use std::path::Path;

/// One panel: a title and the run's samples up to `end_ms`.
pub struct Panel<'a> {
    /// Shown above the panel: planner, trace and fleet.
    pub title: String,
    /// The run's samples ([`crate::simulate::model::simulate`] with `record_series`).
    pub series: &'a [Sample],
    /// Where the time axis ends.
    pub end_ms: i64,
}

/// Columns each panel is reduced to: every column shows the most each quantity reached in its
/// slice of time, so a one-minute burst in a day-long trace is still visible.
const COLUMNS: usize = 1200;

/// Per column: (hours since the start, [queued, running, ready workers, paid workers]).
fn envelope(series: &[Sample], end_ms: i64) -> Vec<(f64, [u32; 4])> {
    let end = end_ms.max(1);
    let width = (end as f64 / COLUMNS as f64).max(1.0);
    let mut out = Vec::with_capacity(COLUMNS + 1);
    let mut cur = [0u32; 4];
    let mut idx = 0;
    for j in 0..=COLUMNS {
        let upto = ((j + 1) as f64 * width) as i64;
        let mut m = cur;
        while idx < series.len() && series[idx].t_ms < upto {
            let s = series[idx];
            cur = [s.queued, s.running, s.ready_workers, s.provisioned_workers];
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

/// Writes the SVG.
pub fn write_svg(path: &Path, panels: &[Panel<'_>]) -> Result<(), String> {
    let height = 360 * panels.len().max(1) as u32;
    let root = SVGBackend::new(path, (1200, height)).into_drawing_area();
    let e = |x: &dyn std::fmt::Display| format!("drawing {}: {x}", path.display());
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let areas = root.split_evenly((panels.len().max(1), 1));
    let names = [
        "queued builds",
        "running builds",
        "capacity (booted workers)",
        "paid workers (booting included)",
    ];
    let colors = [
        RED.to_rgba(),
        BLUE.to_rgba(),
        RGBColor(0, 150, 60).to_rgba(),
        BLACK.mix(0.35),
    ];
    for (area, panel) in areas.iter().zip(panels) {
        let cols = envelope(panel.series, panel.end_ms);
        let hours = (panel.end_ms as f64 / 3_600_000.0).max(1.0 / 60.0);
        let ymax = cols.iter().flat_map(|c| c.1).max().unwrap_or(0).max(1) as f64 * 1.08;
        let mut chart = ChartBuilder::on(area)
            .caption(&panel.title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(48)
            .build_cartesian_2d(0f64..hours, 0f64..ymax)
            .map_err(|x| e(&x))?;
        let x_fmt = |x: &f64| {
            if hours >= 5.0 {
                format!("{x:.0}")
            } else {
                format!("{x:.2}")
            }
        };
        chart
            .configure_mesh()
            .x_desc("hours since the start of the trace")
            .y_desc("builds / workers")
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&|y: &f64| format!("{y:.0}"))
            .draw()
            .map_err(|x| e(&x))?;
        for (i, name) in names.iter().enumerate() {
            let color = colors[i];
            let style = ShapeStyle::from(color).stroke_width(if i < 2 { 1 } else { 2 });
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
}
