//! The report's charts, each drawn by plotters' SVG backend into a string for the page to
//! hold inline: the tier split, latency histograms per class, the run over time, and the
//! threshold curve.

mod latency;
mod split;
mod threshold;
mod timeline;

use anyhow::anyhow;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::font::FAMILY;

use super::answer::Class;

pub(super) use latency::latency;
pub(super) use split::split;
pub(super) use threshold::threshold;
pub(super) use timeline::timeline;

/// Every chart's width in pixels (the page's column).
const WIDTH: u32 = 960;
/// Text sizes, in pixels.
const CAPTION: u32 = 19;
const LABEL: u32 = 14;
const SMALL: u32 = 13;

/// The colour of each class, the same in every chart.
fn color(class: Class) -> RGBColor {
    match class {
        Class::Edge => RGBColor(31, 119, 180),
        Class::Escalated => RGBColor(44, 160, 44),
        Class::Cached => RGBColor(148, 103, 189),
        Class::Degraded => RGBColor(230, 110, 0),
    }
}
/// Failed requests, in the tier split.
const FAILED: RGBColor = RGBColor(200, 30, 30);
/// The central node's outage (killed to restarted), shaded.
const DOWN: RGBColor = RGBColor(214, 39, 40);
/// From the restart until escalations resume, shaded.
const RECOVERING: RGBColor = RGBColor(240, 180, 0);
/// How opaque the shading is.
const SHADE: f64 = 0.13;

/// The drawing area charts draw on.
type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// Draws `height` pixels of chart with `draw` and returns the `<svg>` element.
fn svg(height: u32, draw: impl FnOnce(&Area) -> anyhow::Result<()>) -> anyhow::Result<String> {
    crate::font::register()?;
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("drawing the background: {e}"))?;
        draw(&root)?;
        root.present().map_err(|e| anyhow!("finishing the chart: {e}"))?;
    }
    Ok(out)
}

/// How faint the minor grid lines are (the major ones are plotters' default).
const MINOR_GRID: f64 = 0.035;

/// A legend entry's mark.
#[derive(Debug, Clone, Copy)]
enum Mark {
    /// A line of this colour.
    Line(RGBColor),
    /// A dashed line.
    Dashed(RGBColor),
    /// A dot.
    Dot(RGBColor),
    /// A cross.
    Cross(RGBColor),
    /// A shaded span.
    Band(RGBColor),
}

/// A legend's geometry, in pixels: the mark's width, the gap after it and between entries,
/// and a row's height.
const MARK_WIDTH: i32 = 24;
const MARK_GAP: i32 = 6;
const ENTRY_GAP: i32 = 22;
const LEGEND_ROW: i32 = 20;

/// Where each entry goes, laid out left to right from `left` and wrapped at the area's
/// right edge, and the rows' total height.
fn legend_layout(
    area: &Area,
    entries: &[(Mark, String)],
    left: i32,
) -> anyhow::Result<(Vec<(i32, i32)>, u32)> {
    let width = area.dim_in_pixel().0 as i32;
    let font = TextStyle::from((FAMILY, SMALL).into_font());
    let (mut x, mut y, mut at) = (left, LEGEND_ROW / 2, Vec::new());
    for (_, words) in entries {
        let (text, _) = area.estimate_text_size(words, &font).map_err(drawing::<_>("a legend"))?;
        let entry = MARK_WIDTH + MARK_GAP + text as i32;
        if x > left && x + entry > width {
            (x, y) = (left, y + LEGEND_ROW);
        }
        at.push((x, y));
        x += entry + ENTRY_GAP;
    }
    Ok((at, (y + LEGEND_ROW / 2) as u32))
}

/// The height [`legend`] needs for `entries` on a chart's full width, measured on a
/// scratch chart (text widths need a drawing area).
fn legend_height(entries: &[(Mark, String)], left: i32) -> anyhow::Result<u32> {
    let mut height = 0;
    svg(LEGEND_ROW as u32, |scratch| {
        height = legend_layout(scratch, entries, left)?.1;
        Ok(())
    })?;
    Ok(height)
}

/// Draws `entries` as a legend in rows on `area`, outside any plot, so it hides no data.
fn legend(area: &Area, entries: &[(Mark, String)], left: i32) -> anyhow::Result<()> {
    let (at, _) = legend_layout(area, entries, left)?;
    let style = TextStyle::from((FAMILY, SMALL).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    for ((mark, words), (x, y)) in entries.iter().zip(at) {
        let (mid, end) = (x + MARK_WIDTH / 2, x + MARK_WIDTH);
        let e = drawing::<_>("a legend mark");
        match *mark {
            Mark::Line(c) => {
                area.draw(&PathElement::new([(x, y), (end, y)], c.stroke_width(2))).map_err(e)?
            }
            Mark::Dashed(c) => {
                area.draw(&PathElement::new([(x, y), (x + 9, y)], c.stroke_width(2))).map_err(e)?;
                area.draw(&PathElement::new([(x + 15, y), (end, y)], c.stroke_width(2))).map_err(e)?;
            }
            Mark::Dot(c) => area.draw(&Circle::new((mid, y), 4, c.filled())).map_err(e)?,
            Mark::Cross(c) => area.draw(&Cross::new((mid, y), 5, c.stroke_width(2))).map_err(e)?,
            Mark::Band(c) => {
                let band = Rectangle::new([(x, y - 7), (end, y + 7)], c.mix(SHADE * 2.0).filled());
                area.draw(&band).map_err(e)?;
            }
        }
        area.draw(&Text::new(words.clone(), (end + MARK_GAP, y), style.clone()))
            .map_err(drawing::<_>("a legend's words"))?;
    }
    Ok(())
}

/// Turns a plotters error into one line saying what was being drawn.
fn drawing<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> anyhow::Error + Copy {
    move |e| anyhow!("drawing {what}: {e}")
}

/// A latency in microseconds the way people read it: `850 µs`, `3.2 ms`, `1.0 s`.
fn micros(us: f64) -> String {
    if us >= 1e6 {
        format!("{:.1} s", us / 1e6)
    } else if us >= 1e4 {
        format!("{:.0} ms", us / 1e3)
    } else if us >= 1e3 {
        format!("{:.1} ms", us / 1e3)
    } else {
        format!("{us:.0} µs")
    }
}

/// A share as a percentage with `digits` decimals.
fn percent(share: f64, digits: usize) -> String {
    format!("{:.digits$}%", 100.0 * share)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_read_in_their_unit() {
        assert_eq!(micros(850.0), "850 µs");
        assert_eq!(micros(3_240.0), "3.2 ms");
        assert_eq!(micros(65_000.0), "65 ms");
        assert_eq!(micros(1_000_000.0), "1.0 s");
        assert_eq!(percent(0.9432, 1), "94.3%");
    }
}
