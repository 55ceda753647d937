//! The run over time, in two panels on one time axis: above, the edge share and the
//! accuracy over trailing windows of answers; below, every answer's latency, coloured by
//! how it was answered. With an outage, both panels shade the time the central node was
//! down and the time until escalations resumed, and mark the kill, the restart and the
//! first escalated answer after it.

use std::time::Duration;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{
    Area, CAPTION, DOWN, FAMILY, MINOR_GRID, Mark, RECOVERING, SHADE, SMALL, color, drawing, legend,
    legend_height, micros, percent, svg,
};
use crate::demo::answer::Class;
use crate::demo::summary::Summary;

/// Heights of the title and of the two panels, in pixels.
const TITLE: u32 = 30;
const SHARES: u32 = 300;
const LATENCIES: u32 = 290;
/// Width of the panels' y-label areas, and their margins.
const Y_LABELS: u32 = 70;
const MARGIN_LEFT: u32 = 12;
const MARGIN_RIGHT: u32 = 24;
/// Room on the time axis after the last answer, as a share of the run.
const TAIL: f64 = 0.02;
/// Room under the lowest share, in share points.
const SHARE_ROOM: f64 = 0.02;
/// Room above 100% for the events' names, as a share of the panel's span.
const EVENT_ROOM: f64 = 0.18;
/// An event past this share of the run has its name on its left, so it stays in the chart.
const NAME_ON_LEFT: f64 = 0.6;
/// The radius of an answer's dot in the latency panel.
const DOT: u32 = 2;
/// Colour of the restart's mark (the shading's, darker, so that its name reads).
const RESTART: RGBColor = RGBColor(160, 115, 0);

/// An event on the time axis: when, its name, and its colour.
type Event = (f64, String, RGBColor);

/// The run over time.
pub(in crate::demo) fn timeline(summary: &Summary) -> anyhow::Result<String> {
    let end = summary.records.iter().map(|r| r.done).max().unwrap_or(Duration::ZERO).as_secs_f64();
    let end = end * (1.0 + TAIL) + f64::EPSILON;
    let entries = legend_entries(summary);
    let left = (MARGIN_LEFT + Y_LABELS) as i32;
    let legend_rows = legend_height(&entries, left)?;
    svg(TITLE + legend_rows + SHARES + LATENCIES, |root| {
        let (title, body) = root.split_vertically(TITLE);
        let caption = match summary.rate {
            Some(rate) => format!("The run over time ({rate:.1} requests per second)"),
            None => "The run over time (requests sent as fast as the clients go)".to_owned(),
        };
        title.titled(&caption, (FAMILY, CAPTION)).map_err(drawing("the timeline's title"))?;
        let (key, panels) = body.split_vertically(legend_rows);
        legend(&key, &entries, left)?;
        let (upper, lower) = panels.split_vertically(SHARES);
        shares(&upper, summary, end)?;
        latencies(&lower, summary, end)?;
        Ok(())
    })
}

fn legend_entries(summary: &Summary) -> Vec<(Mark, String)> {
    let mut entries = vec![
        (Mark::Line(color(Class::Edge)), "edge share (the edge's own model, degraded included)".to_owned()),
        (Mark::Line(BLACK), "accuracy (answers matching the label)".to_owned()),
    ];
    for class in Class::ALL {
        let count = summary.count(class);
        if count > 0 {
            entries.push((Mark::Dot(color(class)), format!("{} answer ({count})", class.name())));
        }
    }
    if summary.outage.is_some() {
        entries.push((Mark::Band(DOWN), "central down".to_owned()));
        entries.push((Mark::Band(RECOVERING), "restarted, no escalated answer yet".to_owned()));
    }
    entries
}

/// The outage's shaded spans and its events, if there was one.
fn outage(summary: &Summary) -> (Vec<(f64, f64, RGBColor)>, Vec<Event>) {
    let Some(o) = summary.outage else { return (Vec::new(), Vec::new()) };
    let (killed, restarted) = (o.killed.as_secs_f64(), o.restarted.as_secs_f64());
    let mut spans = vec![(killed, restarted, DOWN)];
    let mut events =
        vec![(killed, "central killed".to_owned(), DOWN), (restarted, "restarted".to_owned(), RESTART)];
    if let Some(r) = summary.recovery {
        spans.push((restarted, r.at.as_secs_f64(), RECOVERING));
        let name = format!("escalations resume (+{:.1} s)", r.seconds);
        events.push((r.at.as_secs_f64(), name, color(Class::Escalated)));
    }
    (spans, events)
}

/// Edge share and accuracy over trailing windows.
fn shares(area: &Area, summary: &Summary, end: f64) -> anyhow::Result<()> {
    let series = summary.series();
    let lowest = series.iter().map(|p| p.edge_share.min(p.accuracy)).fold(1.0, f64::min);
    let bottom = (lowest - SHARE_ROOM).max(0.0);
    let top = 1.0 + (1.0 - bottom) * EVENT_ROOM;
    let mut chart = ChartBuilder::on(area)
        .margin_left(MARGIN_LEFT)
        .margin_right(MARGIN_RIGHT)
        .x_label_area_size(24)
        .y_label_area_size(Y_LABELS)
        .build_cartesian_2d(0.0..end, bottom..top)
        .map_err(drawing("the shares' axes"))?;
    chart
        .configure_mesh()
        .light_line_style(BLACK.mix(MINOR_GRID))
        .x_label_formatter(&|x| format!("{x:.0} s"))
        .y_label_formatter(&|y| if *y <= 1.0 + 1e-9 { percent(*y, 0) } else { String::new() })
        .y_desc(format!("share of the last {} answers", summary.window()))
        .label_style((FAMILY, SMALL))
        .axis_desc_style((FAMILY, SMALL))
        .draw()
        .map_err(drawing("the shares' grid"))?;
    let (spans, events) = outage(summary);
    for (from, to, shade) in &spans {
        chart
            .draw_series([Rectangle::new([(*from, bottom), (*to, 1.0)], shade.mix(SHADE).filled())])
            .map_err(drawing("the outage"))?;
    }
    let edge = series.iter().map(|p| (p.at_s, p.edge_share));
    chart
        .draw_series(LineSeries::new(edge, color(Class::Edge).stroke_width(2)))
        .map_err(drawing("the edge share"))?;
    let accuracy = series.iter().map(|p| (p.at_s, p.accuracy));
    chart.draw_series(LineSeries::new(accuracy, BLACK.stroke_width(2))).map_err(drawing("the accuracy"))?;
    // Each event's name on a row of its own above 100%, so that close events do not
    // overprint; late events name themselves on their left.
    let row = (top - 1.0) / events.len().max(1) as f64;
    for (k, (at, name, shade)) in events.iter().enumerate() {
        chart
            .draw_series(DashedLineSeries::new([(*at, bottom), (*at, top)], 5, 3, shade.stroke_width(2)))
            .map_err(drawing("an event's line"))?;
        let (side, name) = if *at > end * NAME_ON_LEFT {
            (HPos::Right, format!("{name} "))
        } else {
            (HPos::Left, format!(" {name}"))
        };
        let style =
            TextStyle::from((FAMILY, SMALL).into_font()).color(shade).pos(Pos::new(side, VPos::Center));
        let y = top - row * (k as f64 + 0.5);
        chart.draw_series([Text::new(name, (*at, y), style)]).map_err(drawing("an event's name"))?;
    }
    Ok(())
}

/// Every answer's latency at the time it arrived.
fn latencies(area: &Area, summary: &Summary, end: f64) -> anyhow::Result<()> {
    let answered = summary.records.iter().filter(|r| r.answer.is_ok());
    let (lowest, highest) = answered
        .clone()
        .map(|r| r.latency_us())
        .fold((f64::INFINITY, 1.0f64), |(lo, hi), l| (lo.min(l), hi.max(l)));
    let lo = 10f64.powf(lowest.max(1.0).log10().floor());
    let hi = 10f64.powf(highest.log10().ceil()).max(lo * 10.0);
    let mut chart = ChartBuilder::on(area)
        .margin_left(MARGIN_LEFT)
        .margin_right(MARGIN_RIGHT)
        .x_label_area_size(46)
        .y_label_area_size(Y_LABELS)
        .build_cartesian_2d(0.0..end, (lo..hi).log_scale())
        .map_err(drawing("the latencies' axes"))?;
    chart
        .configure_mesh()
        .light_line_style(BLACK.mix(MINOR_GRID))
        .x_label_formatter(&|x| format!("{x:.0} s"))
        .y_label_formatter(&|y| micros(*y))
        .x_desc("time since the first request (s)")
        .y_desc("latency of each answer (log)")
        .label_style((FAMILY, SMALL))
        .axis_desc_style((FAMILY, SMALL))
        .draw()
        .map_err(drawing("the latencies' grid"))?;
    let (spans, events) = outage(summary);
    for (from, to, shade) in &spans {
        chart
            .draw_series([Rectangle::new([(*from, lo), (*to, hi)], shade.mix(SHADE).filled())])
            .map_err(drawing("the outage"))?;
    }
    for (at, _, shade) in &events {
        chart
            .draw_series(DashedLineSeries::new([(*at, lo), (*at, hi)], 5, 3, shade.stroke_width(2)))
            .map_err(drawing("an event's line"))?;
    }
    // Degraded answers last, on top: they are what this panel is for.
    for class in [Class::Edge, Class::Cached, Class::Escalated, Class::Degraded] {
        let dot = color(class);
        let of_class = answered
            .clone()
            .filter(|r| r.answer.as_ref().is_ok_and(|a| a.class == class))
            .map(|r| Circle::new((r.done.as_secs_f64(), r.latency_us()), DOT, dot.filled()));
        chart.draw_series(of_class).map_err(drawing("the answers"))?;
    }
    Ok(())
}
