//! The threshold curve as a picture: edge share against the cascade's accuracy over every
//! threshold, the recommended point with its 90% intervals, the held-out result, and the
//! edge-only and upstream-only accuracies as reference lines. SVG or PNG by the file's
//! extension.

use std::path::Path;

use anyhow::{Context, bail};
use cascade_runtime::calibrate::grid;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::report::Report;

/// Draws `report` into `file` (`.svg` or `.png`).
pub(super) fn draw(file: &Path, report: &Report) -> anyhow::Result<()> {
    crate::font::register()?;
    let size = (1000, 650);
    match file.extension().and_then(|e| e.to_str()) {
        Some("svg") => chart(&SVGBackend::new(file, size).into_drawing_area(), report),
        Some("png") => chart(&BitMapBackend::new(file, size).into_drawing_area(), report),
        _ => bail!("{}: the plot is written as .svg or .png", file.display()),
    }
}

fn chart<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, report: &Report) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let e = |what: &str| format!("plotting {what}");
    let curve = report.bootstrap.curve();
    let all: Vec<(f64, f64)> = grid(1000).map(|t| curve.at(t)).map(|p| (p.edge_share, p.accuracy)).collect();
    let (edge_only, upstream_only) = (curve.edge_only_accuracy(), curve.upstream_only_accuracy());
    let chosen = &report.modes[0];
    let est = chosen.estimate;
    let est = report.realised.map_or(est, |r| r.predicted);
    let lowest = all.iter().map(|p| p.1).fold(edge_only, f64::min).min(est.accuracy.lo);
    let highest = all.iter().map(|p| p.1).fold(upstream_only, f64::max).max(est.accuracy.hi);
    let pad = ((highest - lowest) * 0.08).max(0.002);
    // The part of the curve around the choice: a little below its interval (and the
    // held-out point) up to everything at the edge.
    let left = est.edge_share.lo.min(report.realised.map_or(1.0, |r| r.edge_share));
    let left = (left - 0.08).max(0.0);
    root.fill(&WHITE).with_context(|| e("the background"))?;
    let mut chart = ChartBuilder::on(root)
        .caption(
            format!("Threshold curve: {} examples; chosen threshold {:.3}", curve.len(), chosen.threshold),
            ("sans-serif", 22),
        )
        .margin(18)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(left..1.0, (lowest - pad)..(highest + pad))
        .with_context(|| e("the axes"))?;
    chart
        .configure_mesh()
        .x_desc("share of requests answered at the edge")
        .y_desc("accuracy of the cascade")
        .x_label_formatter(&|x| format!("{:.0}%", 100.0 * x))
        .y_label_formatter(&|y| format!("{:.1}%", 100.0 * y))
        .label_style(("sans-serif", 15))
        .draw()
        .with_context(|| e("the grid"))?;
    let mut reference = |y: f64, color: RGBColor, label: String| -> anyhow::Result<()> {
        chart
            .draw_series(LineSeries::new([(left, y), (1.0, y)], color.stroke_width(1)))
            .with_context(|| e("a reference line"))?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
        Ok(())
    };
    reference(upstream_only, RGBColor(0, 130, 60), format!("upstream alone: {:.2}%", 100.0 * upstream_only))?;
    reference(edge_only, RGBColor(200, 120, 0), format!("edge alone: {:.2}%", 100.0 * edge_only))?;
    chart
        .draw_series(LineSeries::new(all.into_iter().filter(|p| p.0 >= left), BLUE.stroke_width(2)))
        .with_context(|| e("the curve"))?
        .label("every threshold from 0 to 1")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    let (x, y) = (est.point.edge_share, est.point.accuracy);
    chart
        .draw_series([
            PathElement::new([(est.edge_share.lo, y), (est.edge_share.hi, y)], RED.stroke_width(2)),
            PathElement::new([(x, est.accuracy.lo), (x, est.accuracy.hi)], RED.stroke_width(2)),
        ])
        .with_context(|| e("the intervals"))?;
    chart
        .draw_series([Circle::new((x, y), 6, RED.filled())])
        .with_context(|| e("the chosen point"))?
        .label(format!("chosen {:.3}, with 90% prediction intervals", chosen.threshold))
        .legend(|(x, y)| Circle::new((x + 10, y), 5, RED.filled()));
    if let Some(real) = report.realised {
        chart
            .draw_series([Cross::new((real.edge_share, real.accuracy), 7, BLACK.stroke_width(2))])
            .with_context(|| e("the held-out point"))?
            .label("the same threshold on the held-out test split")
            .legend(|(x, y)| Cross::new((x + 10, y), 5, BLACK.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .label_font(("sans-serif", 15))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .with_context(|| e("the legend"))?;
    root.present().with_context(|| e("the file"))?;
    Ok(())
}
