//! Latency histograms: one panel per class of answer, on one logarithmic latency axis, so
//! the classes' shapes compare at a glance however many answers each has.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{CAPTION, FAMILY, LABEL, MINOR_GRID, SMALL, color, drawing, micros, svg};
use crate::demo::answer::Class;
use crate::demo::summary::Summary;
use crate::figures::percentile;

/// Pixels per panel, plus room under the last one for the axis's name.
const PANEL: u32 = 150;
const AXIS_ROOM: u32 = 30;
/// The title's room above the panels.
const TITLE: u32 = 34;
/// Histogram bins per tenfold of latency.
const BINS_PER_DECADE: f64 = 10.0;
/// p99 within this factor of p50 is marked once: on the log axis they would touch.
const SAME_MARK: f64 = 1.15;
/// Room above the tallest bar, as a share of it.
const HEADROOM: f64 = 0.2;

/// Histograms of the latencies of each class that has answers.
pub(in crate::demo) fn latency(summary: &Summary) -> anyhow::Result<String> {
    let panels: Vec<(Class, Vec<f64>)> =
        Class::ALL.iter().map(|&c| (c, summary.latencies(c))).filter(|(_, l)| !l.is_empty()).collect();
    let all = panels.iter().flat_map(|(_, l)| l.iter().copied());
    let (lowest, highest) = all.fold((f64::INFINITY, 0.0f64), |(lo, hi), l| (lo.min(l), hi.max(l)));
    // Whole half-decades around the data, so the axis's ticks land on round numbers.
    let half_decade = |x: f64, round: fn(f64) -> f64| 10f64.powf(round(x.max(1.0).log10() * 2.0) / 2.0);
    let lo = half_decade(lowest, f64::floor);
    // At least one bin wide, even if every latency is the same.
    let hi = half_decade(highest, f64::ceil).max(lo * 10f64.powf(1.0 / BINS_PER_DECADE));
    let edges: Vec<f64> = (0..)
        .map(|k| lo * 10f64.powf(f64::from(k) / BINS_PER_DECADE))
        .take_while(|&e| e < hi * 1.0001)
        .collect();
    let height = TITLE + PANEL * panels.len().max(1) as u32 + AXIS_ROOM;
    svg(height, |root| {
        let (title, body) = root.split_vertically(TITLE);
        title
            .titled("Latency of the answers, by how they were answered", (FAMILY, CAPTION))
            .map_err(drawing("the latency title"))?;
        if panels.is_empty() {
            body.draw(&Text::new("no answers", (20, 20), (FAMILY, LABEL)))
                .map_err(drawing("the latency chart"))?;
            return Ok(());
        }
        let mut rest = body;
        for (k, (class, latencies)) in panels.iter().enumerate() {
            let last = k + 1 == panels.len();
            let (area, below) = if last {
                let size = rest.dim_in_pixel().1;
                rest.split_vertically(size)
            } else {
                rest.split_vertically(PANEL)
            };
            rest = below;
            panel(&area, *class, latencies, &edges, (lo, hi), last)?;
        }
        Ok(())
    })
}

/// One class's histogram; `last` draws the axis's name under it.
fn panel(
    area: &super::Area,
    class: Class,
    latencies: &[f64],
    edges: &[f64],
    (lo, hi): (f64, f64),
    last: bool,
) -> anyhow::Result<()> {
    let counts: Vec<usize> = edges
        .windows(2)
        .map(|bin| latencies.iter().filter(|&&l| l >= bin[0] && l < bin[1]).count())
        .collect();
    let tallest = counts.iter().copied().max().unwrap_or(0).max(1) as f64;
    let (p50, p99) = (percentile(&mut latencies.to_vec(), 0.5), percentile(&mut latencies.to_vec(), 0.99));
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!(
                "{}: {} answers, p50 {}, p99 {}",
                class.name(),
                latencies.len(),
                micros(p50),
                micros(p99)
            ),
            (FAMILY, LABEL),
        )
        .margin_left(12)
        .margin_right(24)
        .x_label_area_size(if last { 46 } else { 22 })
        .y_label_area_size(64)
        .build_cartesian_2d((lo..hi).log_scale(), 0.0..tallest * (1.0 + HEADROOM))
        .map_err(drawing("a latency panel's axes"))?;
    let mut mesh = chart.configure_mesh();
    mesh.light_line_style(BLACK.mix(MINOR_GRID))
        .x_label_formatter(&|x| micros(*x))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .y_labels(4)
        .y_desc("answers")
        .label_style((FAMILY, SMALL))
        .axis_desc_style((FAMILY, SMALL));
    if last {
        mesh.x_desc("latency: request sent to answer read, over HTTP (log scale)");
    }
    mesh.draw().map_err(drawing("a latency panel's grid"))?;
    let bars = edges.windows(2).zip(&counts).filter(|(_, c)| **c > 0).map(|(bin, &count)| {
        let mut bar = Rectangle::new([(bin[0], 0.0), (bin[1], count as f64)], color(class).filled());
        bar.set_margin(0, 0, 1, 1);
        bar
    });
    chart.draw_series(bars).map_err(drawing("a latency histogram"))?;
    // p50 and p99 as marks along the top, each named.
    let top = tallest * (1.0 + HEADROOM);
    let style = TextStyle::from((FAMILY, SMALL).into_font()).pos(Pos::new(HPos::Left, VPos::Top));
    // Percentiles this close share one mark, so that their names do not overprint.
    let marks = if p99 / p50.max(f64::MIN_POSITIVE) < SAME_MARK {
        vec![("p50, p99", p99, BLACK.mix(0.85))]
    } else {
        vec![("p50", p50, BLACK.mix(0.45)), ("p99", p99, BLACK.mix(0.85))]
    };
    for (name, at, shape) in marks {
        chart
            .draw_series(DashedLineSeries::new([(at, 0.0), (at, top)], 4, 3, shape.stroke_width(1)))
            .map_err(drawing("a percentile mark"))?;
        chart
            .draw_series([Text::new(format!(" {name}"), (at, top), style.clone())])
            .map_err(drawing("a percentile label"))?;
    }
    Ok(())
}
