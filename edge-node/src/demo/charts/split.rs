//! The tier split: how many requests each class of answer took, and how many failed.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{CAPTION, FAILED, FAMILY, LABEL, color, drawing, percent, svg};
use crate::demo::answer::Class;
use crate::demo::summary::Summary;

/// The chart's height in pixels.
const HEIGHT: u32 = 260;
/// Room right of the longest bar for its label, as a share of the longest bar.
const LABEL_ROOM: f64 = 0.22;
/// Pixels between neighbouring bars.
const GAP: u32 = 7;

/// The tier split as horizontal bars, with counts and shares.
pub(in crate::demo) fn split(summary: &Summary) -> anyhow::Result<String> {
    let mut rows: Vec<(&str, usize, RGBColor)> =
        Class::ALL.iter().map(|&c| (c.name(), summary.count(c), color(c))).collect();
    rows.push(("failed", summary.failed(), FAILED));
    // The first row on top: plotters counts rows from the bottom.
    rows.reverse();
    // plotters' integer ranges include their end: 0..rows-1 is one segment per row.
    let longest = rows.iter().map(|r| r.1).max().unwrap_or(0).max(1) as f64;
    svg(HEIGHT, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(format!("How the {} requests were answered", summary.requests()), (FAMILY, CAPTION))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(96)
            .build_cartesian_2d(0.0..longest * (1.0 + LABEL_ROOM), (0..rows.len() - 1).into_segmented())
            .map_err(drawing("the tier split's axes"))?;
        let name = |v: &SegmentValue<usize>| match v {
            SegmentValue::CenterOf(i) => rows.get(*i).map_or(String::new(), |r| r.0.to_owned()),
            _ => String::new(),
        };
        chart
            .configure_mesh()
            .disable_y_mesh()
            .light_line_style(TRANSPARENT)
            .y_label_formatter(&name)
            .x_label_formatter(&|x| format!("{x:.0}"))
            .x_desc("requests")
            .label_style((FAMILY, LABEL))
            .axis_desc_style((FAMILY, LABEL))
            .draw()
            .map_err(drawing("the tier split's grid"))?;
        let bars = rows.iter().enumerate().map(|(i, &(_, count, color))| {
            let mut bar = Rectangle::new(
                [(0.0, SegmentValue::Exact(i)), (count as f64, SegmentValue::Exact(i + 1))],
                color.filled(),
            );
            bar.set_margin(GAP, GAP, 0, 0);
            bar
        });
        chart.draw_series(bars).map_err(drawing("the tier split's bars"))?;
        let style = TextStyle::from((FAMILY, LABEL).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
        let labels = rows.iter().enumerate().map(|(i, &(_, count, _))| {
            let at = (count as f64 + longest * 0.01, SegmentValue::CenterOf(i));
            Text::new(format!("{count}  ({})", percent(summary.share(count), 1)), at, style.clone())
        });
        chart.draw_series(labels).map_err(drawing("the tier split's labels"))?;
        Ok(())
    })
}
