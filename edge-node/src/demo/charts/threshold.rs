//! The threshold curve: the edge share against the cascade's accuracy at every threshold,
//! measured on the calibration split; the run's threshold on it with its 90% prediction
//! intervals; what the run itself got; and each tier alone as reference lines.

use cascade_runtime::calibrate::grid;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{
    CAPTION, FAMILY, LABEL, MINOR_GRID, Mark, SMALL, color, drawing, legend, legend_height, percent, svg,
};
use crate::demo::answer::Class;
use crate::demo::calibration::ThresholdCurve;
use crate::demo::summary::Summary;

/// The chart's height in pixels.
const HEIGHT: u32 = 560;
/// Thresholds visited along the curve (0 to 1 in steps of 1 / `STEPS`).
const STEPS: u32 = 1000;
/// Thresholds named along the curve, to read it by.
const NAMED: [f64; 5] = [0.5, 0.8, 0.9, 0.95, 0.99];
/// Edge share shown left of the leftmost point of interest.
const LEFT_ROOM: f64 = 0.06;
/// Room above and below the accuracies, as a share of their spread (at least `MIN_PAD`).
const PAD: f64 = 0.1;
const MIN_PAD: f64 = 0.002;
/// The run's threshold, as a point with its intervals.
const CHOSEN: RGBColor = RGBColor(214, 39, 40);
/// The edge model's reference line.
const EDGE_ALONE: RGBColor = RGBColor(230, 110, 0);
/// Width of the y-label area (with the margin), which the legend lines up with.
const Y_LABELS: u32 = 90;
/// Named thresholds closer than this many pixels in both directions share one name.
const NAME_SPACING: i32 = 28;

/// The curve with the run's threshold and the run's own result on it.
pub(in crate::demo) fn threshold(curve: &ThresholdCurve, summary: &Summary) -> anyhow::Result<String> {
    let c = curve.bootstrap.curve();
    let points: Vec<(f64, f64)> = grid(STEPS).map(|t| c.at(t)).map(|p| (p.edge_share, p.accuracy)).collect();
    let (edge_only, central_only) = (c.edge_only_accuracy(), c.upstream_only_accuracy());
    let est = curve.predicted;
    let run = (summary.edge_share(), summary.accuracy());
    let left = (est.edge_share.lo.min(run.0) - LEFT_ROOM).clamp(0.0, 1.0 - LEFT_ROOM);
    let shown = points.iter().filter(|p| p.0 >= left).map(|p| p.1);
    let lowest = shown.clone().fold(edge_only.min(est.accuracy.lo).min(run.1), f64::min);
    let highest = shown.fold(central_only.max(est.accuracy.hi).max(run.1), f64::max);
    let pad = ((highest - lowest) * PAD).max(MIN_PAD);
    // Accuracy cannot pass 100%: the axis stops half a pad above it, unlabelled, so that a
    // point at 100% stays clear of the caption.
    let (bottom, top) = (lowest - pad, (highest + pad).min(1.0 + pad / 2.0));
    let clip = |y: f64| y.clamp(bottom, top);
    let caption = format!(
        "Threshold curve: {} calibration images, both tiers run in process; the run's threshold {}",
        curve.examples(),
        curve.threshold
    );
    let (x, y) = (est.point.edge_share, est.point.accuracy);
    let entries = vec![
        (Mark::Line(color(Class::Edge)), "every threshold from 0 to 1, on the calibration split".to_owned()),
        (
            Mark::Dot(CHOSEN),
            format!(
                "threshold {}: {} at the edge, accuracy {}, with 90% prediction intervals for {} requests",
                curve.threshold,
                percent(x, 1),
                percent(y, 2),
                summary.requests()
            ),
        ),
        (
            Mark::Cross(BLACK),
            format!(
                "this run, live on the test split: {} at the edge, accuracy {}",
                percent(run.0, 1),
                percent(run.1, 2)
            ),
        ),
        (Mark::Dashed(color(Class::Escalated)), format!("central model alone: {}", percent(central_only, 2))),
        (Mark::Dashed(EDGE_ALONE), format!("edge model alone: {}", percent(edge_only, 2))),
    ];
    let key_height = legend_height(&entries, Y_LABELS as i32)?;
    svg(HEIGHT + key_height, |root| {
        let (plot, key) = root.split_vertically(HEIGHT);
        let mut chart = ChartBuilder::on(&plot)
            .caption(caption, (FAMILY, CAPTION))
            .margin(14)
            .margin_right(28)
            .x_label_area_size(48)
            .y_label_area_size(Y_LABELS - 14)
            .build_cartesian_2d(left..1.0, bottom..top)
            .map_err(drawing("the curve's axes"))?;
        chart
            .configure_mesh()
            .light_line_style(BLACK.mix(MINOR_GRID))
            .x_desc("share of requests answered at the edge")
            .y_desc("accuracy of the cascade")
            .x_label_formatter(&|x| percent(*x, 0))
            .y_label_formatter(&|y| if *y <= 1.0 + 1e-9 { percent(*y, 1) } else { String::new() })
            .label_style((FAMILY, SMALL))
            .axis_desc_style((FAMILY, LABEL))
            .draw()
            .map_err(drawing("the curve's grid"))?;
        for (y, line) in [(central_only, color(Class::Escalated)), (edge_only, EDGE_ALONE)] {
            chart
                .draw_series(DashedLineSeries::new([(left, y), (1.0, y)], 6, 4, line.stroke_width(1)))
                .map_err(drawing("a reference line"))?;
        }
        let blue = color(Class::Edge);
        chart
            .draw_series(LineSeries::new(
                points.iter().copied().filter(|p| p.0 >= left),
                blue.stroke_width(2),
            ))
            .map_err(drawing("the curve"))?;
        // Named thresholds, skipping one that would print over a neighbour's name.
        let grey = BLACK.mix(0.7);
        let named = TextStyle::from((FAMILY, SMALL).into_font())
            .color(&grey)
            .pos(Pos::new(HPos::Right, VPos::Bottom));
        // The run's own point is drawn over its neighbourhood: no name under it either.
        let mut taken: Vec<(i32, i32)> = vec![chart.backend_coord(&(x, y))];
        for t in NAMED {
            let p = c.at(t);
            let at = (p.edge_share, p.accuracy);
            let pixel = chart.backend_coord(&at);
            let crowded = taken
                .iter()
                .any(|q| (q.0 - pixel.0).abs() < NAME_SPACING && (q.1 - pixel.1).abs() < NAME_SPACING);
            if p.edge_share < left || crowded {
                continue;
            }
            taken.push(pixel);
            chart
                .draw_series([EmptyElement::at(at)
                    + Circle::new((0, 0), 3, grey.filled())
                    + Text::new(format!("{t}"), (-4, -3), named.clone())])
                .map_err(drawing("a named threshold"))?;
        }
        chart
            .draw_series([
                PathElement::new([(est.edge_share.lo, y), (est.edge_share.hi, y)], CHOSEN.stroke_width(2)),
                PathElement::new(
                    [(x, clip(est.accuracy.lo)), (x, clip(est.accuracy.hi))],
                    CHOSEN.stroke_width(2),
                ),
            ])
            .map_err(drawing("the intervals"))?;
        chart
            .draw_series([Circle::new((x, y), 6, CHOSEN.filled())])
            .map_err(drawing("the run's threshold"))?;
        chart
            .draw_series([Cross::new(run, 7, BLACK.stroke_width(2))])
            .map_err(drawing("the run's result"))?;
        legend(&key, &entries, Y_LABELS as i32)
    })
}
