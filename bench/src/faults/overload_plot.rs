//! The overload scenario as a picture (`cascade-bench faults --only overload --plot DIR`):
//! every admitted answer of the first 3x phase, its latency against when it was sent, for
//! the edge with the intake governor and the one without, on a log scale, with the goal
//! (twice the governed edge's unloaded p99) as a line. What a p99 hides shows: the band the
//! ungoverned edge keeps its requests in, and the governed edge's onset and episodes.

use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;

/// The picture's size in pixels.
const SIZE: (u32, u32) = (1100, 800);

/// Colours of the two edges' answers (translucent: tens of thousands of dots overlap).
const GOVERNED: RGBColor = RGBColor(0, 90, 200);
const UNGOVERNED: RGBColor = RGBColor(220, 90, 0);

/// Draws the two phases, `(seconds into the phase, latency µs)` each, into `file` (PNG): one
/// panel per edge, on the same axes.
pub(super) fn draw(
    file: &Path,
    governed: &[(f64, f64)],
    ungoverned: &[(f64, f64)],
    goal_us: f64,
) -> anyhow::Result<()> {
    edge_node::font::register()?;
    let e = |what: &str| format!("drawing the overload picture's {what} into {}", file.display());
    let root = BitMapBackend::new(file, SIZE).into_drawing_area();
    root.fill(&WHITE).with_context(|| e("background"))?;
    let (title, body) = root.split_vertically(40);
    title
        .titled(
            "Overload at 3x capacity: every admitted answer's latency, by when it was sent",
            (edge_node::font::FAMILY, 22),
        )
        .with_context(|| e("title"))?;
    let points = governed.iter().chain(ungoverned);
    let end = points.clone().map(|p| p.0).fold(0.0, f64::max).max(0.1);
    let (low, high) = points.map(|p| ms(p.1)).fold((f64::MAX, 0.0_f64), |(lo, hi), y| (lo.min(y), hi.max(y)));
    let y = (low.min(ms(goal_us)) * 0.8).max(0.01)..(high.max(ms(goal_us)) * 1.25).max(0.1);
    let (upper, lower) = body.split_vertically(SIZE.1.saturating_sub(40) / 2);
    panel(&upper, ungoverned, UNGOVERNED, "without the governor", end, y.clone(), goal_us)
        .with_context(|| e("upper panel"))?;
    panel(&lower, governed, GOVERNED, "with admission.max_intake_lag_us = 500", end, y, goal_us)
        .with_context(|| e("lower panel"))?;
    root.present().with_context(|| e("file"))?;
    Ok(())
}

fn ms(us: f64) -> f64 {
    us / 1000.0
}

/// One edge's answers, with the goal as a line.
fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    answers: &[(f64, f64)],
    color: RGBColor,
    name: &str,
    end: f64,
    y: std::ops::Range<f64>,
    goal_us: f64,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let mut chart = ChartBuilder::on(area)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..end, y.log_scale())?;
    chart
        .configure_mesh()
        .x_desc("seconds into the 3x phase")
        .y_desc("latency, ms (log)")
        .y_label_formatter(&|y| format!("{y}"))
        .label_style((edge_node::font::FAMILY, 14))
        .draw()?;
    chart
        .draw_series(answers.iter().map(|&(t, us)| Circle::new((t, ms(us)), 1, color.mix(0.4).filled())))?
        .label(format!("{name}: {} answers", answers.len()))
        .legend(move |(x, y)| Circle::new((x + 10, y), 4, color.filled()));
    chart
        .draw_series(LineSeries::new([(0.0, ms(goal_us)), (end, ms(goal_us))], BLACK.stroke_width(2)))?
        .label(format!("goal: twice the governed edge's unloaded p99 ({:.2} ms)", ms(goal_us)))
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK.stroke_width(2)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((edge_node::font::FAMILY, 14))
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_both_edges_into_a_png() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("overload.png");
        let governed: Vec<(f64, f64)> =
            (0..200).map(|i| (f64::from(i) / 100.0, 150.0 + f64::from(i % 7))).collect();
        let ungoverned: Vec<(f64, f64)> =
            (0..400).map(|i| (f64::from(i) / 200.0, 2_000.0 * f64::from(1 + i % 5))).collect();
        draw(&file, &governed, &ungoverned, 1_200.0).unwrap();
        let bytes = std::fs::read(&file).unwrap();
        assert!(bytes.starts_with(b"\x89PNG"), "not a PNG: {} bytes", bytes.len());
    }
}
