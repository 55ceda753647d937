//! `--report FILE`: the run as one self-contained HTML page. The charts are inline SVG, the
//! style is inline, and the page has no script. Its Content-Security-Policy forbids every
//! fetch (`default-src 'none'`), so a browser that opens it makes no request at all, and
//! would say so in its console if anything in the page tried.

use std::fmt::Write;

use super::DemoOptions;
use super::answer::Class;
use super::calibration::ThresholdCurve;
use super::charts;
use super::models::ModelFigures;
use super::outage::CENTRAL_DOWN;
use super::summary::Summary;
use super::tiers::BREAKER_OPEN_MS;
use crate::figures::{Figures, percentile};

/// The page's style: one readable column, tables and figure cards.
const STYLE: &str = "
body { font-family: sans-serif; color: #222; background: #f4f5f7; margin: 0; }
main { max-width: 1000px; margin: 0 auto; padding: 24px 20px 48px; }
h1 { font-size: 26px; margin: 8px 0 4px; }
h2 { font-size: 19px; margin: 0 0 8px; }
section { background: #fff; border: 1px solid #dde0e4; border-radius: 6px; padding: 16px 18px; margin: 16px 0; }
p { line-height: 1.45; margin: 6px 0 10px; }
svg { display: block; max-width: 100%; height: auto; margin: 8px 0; }
table { border-collapse: collapse; margin: 8px 0; font-size: 14px; }
th, td { text-align: left; padding: 4px 12px 4px 0; border-bottom: 1px solid #eceef1; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
code { background: #eef0f3; padding: 1px 4px; border-radius: 3px; font-size: 13px; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(140px, 1fr)); gap: 10px; }
.card { border: 1px solid #dde0e4; border-radius: 6px; padding: 8px 10px; }
.card b { display: block; font-size: 22px; }
.card span { font-size: 13px; color: #555; }
.bad b { color: #c81e1e; }
";

/// Everything the page shows.
pub(super) struct Page<'a> {
    pub(super) options: &'a DemoOptions,
    pub(super) models: &'a [ModelFigures],
    pub(super) summary: &'a Summary,
    pub(super) curve: &'a ThresholdCurve,
    pub(super) figures: &'a Figures,
}

/// `text` safe inside HTML text and attribute values.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn pct(share: f64) -> String {
    format!("{:.1}%", 100.0 * share)
}

impl Page<'_> {
    /// The whole page.
    pub(super) fn render(&self) -> anyhow::Result<String> {
        let mut html = String::new();
        html.push_str("<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
        html.push_str(
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n",
        );
        html.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
        let _ = writeln!(
            html,
            "<title>Cascade demo report</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>"
        );
        self.header(&mut html);
        self.section(
            &mut html,
            "tier-split",
            "Tier split",
            &self.split_text(),
            &charts::split(self.summary)?,
        );
        let latency = self.latency_text();
        self.section(&mut html, "latency", "Latency per tier", &latency, &charts::latency(self.summary)?);
        let timeline = self.timeline_text();
        self.section(
            &mut html,
            "timeline",
            "Edge share and accuracy over the run",
            &timeline,
            &charts::timeline(self.summary)?,
        );
        self.section(&mut html, "outage", "Central outage and recovery", &self.outage_text(), "");
        let curve = self.curve_text();
        let chart = charts::threshold(self.curve, self.summary)?;
        self.section(&mut html, "threshold-curve", "Threshold curve from calibration", &curve, &chart);
        self.section(&mut html, "models", "The models alone", &self.models_text(), "");
        self.section(&mut html, "figures", "Figures", &self.figures_text(), "");
        html.push_str("</main>\n</body>\n</html>\n");
        Ok(html)
    }

    fn section(&self, html: &mut String, id: &str, title: &str, text: &str, svg: &str) {
        let _ = writeln!(html, "<section id=\"{id}\">\n<h2>{title}</h2>\n{text}\n{svg}\n</section>");
    }

    fn header(&self, html: &mut String) {
        let (s, o) = (self.summary, self.options);
        let pace = match s.rate {
            Some(rate) => format!("paced at {rate:.1} requests per second"),
            None => "as fast as they go".to_owned(),
        };
        let command: Vec<String> = std::env::args().map(|a| escape(&a)).collect();
        let _ = writeln!(
            html,
            "<h1>Cascade demo</h1>\n<p>An edge node (the <code>edge_int8</code> model behind the \
             <code>{plugin}</code> plugin) escalating to a central node (<code>central_fp32</code>) over QUIC with \
             mutual TLS, both real <code>edge-node serve</code> processes on loopback. {n} test images were sent to \
             the edge over KServe v2 HTTP by {c} clients, {pace}; the edge keeps an answer whose confidence is at \
             least {t} and escalates the rest.</p>\n<p>Made by <code>{command}</code>.</p>",
            plugin = escape(
                &o.plugin_crate.file_name().map_or(String::new(), |f| f.to_string_lossy().into_owned())
            ),
            n = s.requests(),
            c = s.concurrency,
            t = o.threshold,
            command = command.join(" "),
        );
        let mut cards = vec![
            (s.requests().to_string(), "requests".to_owned(), false),
            (s.failed().to_string(), "failed".to_owned(), s.failed() > 0),
            (pct(s.accuracy()), "cascade accuracy".to_owned(), false),
            (pct(s.edge_share()), "answered by the edge's model".to_owned(), false),
            (pct(s.share(s.count(Class::Escalated))), "escalated".to_owned(), false),
            (pct(s.share(s.count(Class::Cached))), "cached".to_owned(), false),
            (pct(s.share(s.count(Class::Degraded))), "degraded".to_owned(), false),
        ];
        if s.outage.is_some() {
            let recovery = s.recovery.map_or("not seen".to_owned(), |r| format!("{:.2} s", r.seconds));
            cards.push((recovery, "recovery after the restart".to_owned(), s.recovery.is_none()));
        }
        html.push_str("<section id=\"summary\">\n<div class=\"cards\">\n");
        for (value, name, bad) in cards {
            let class = if bad { "card bad" } else { "card" };
            let _ = writeln!(html, "<div class=\"{class}\"><b>{value}</b><span>{name}</span></div>");
        }
        html.push_str("</div>\n</section>\n");
    }

    fn split_text(&self) -> String {
        "<p>Each request counts once, by how the edge answered it: <b>edge</b>, computed by the edge's own model \
         and confident enough to keep; <b>escalated</b>, computed by the central node for this request; \
         <b>cached</b>, served from the edge's answer cache or shared with an identical request in flight, \
         whichever tier computed it; <b>degraded</b>, the edge's own answer standing in for an escalation that \
         could not happen (the receipt's <code>degraded: true</code>); <b>failed</b>, no answer at all.</p>"
            .to_owned()
    }

    fn latency_text(&self) -> String {
        let mut text = "<p>From sending the request to reading the answer, over HTTP on loopback, per class of \
                        answer. The figures <code>demo.p99_us.&lt;tier&gt;</code> group the answers by the tier \
                        that produced them instead (the receipt's <code>tier</code>: a degraded answer is the \
                        edge's):</p>\n<table><tr><th>tier</th><th>answers</th><th>p50</th><th>p99</th></tr>"
            .to_owned();
        for (tier, mut latencies) in self.summary.latencies_by_tier() {
            let (p50, p99) = (percentile(&mut latencies, 0.5), percentile(&mut latencies, 0.99));
            let _ = write!(
                text,
                "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{p50:.0} µs</td><td class=\"n\">{p99:.0} µs</td></tr>",
                escape(&tier),
                latencies.len()
            );
        }
        text.push_str("</table>");
        text
    }

    fn timeline_text(&self) -> String {
        let window = self.summary.window();
        let mut text = format!(
            "<p>Above: the share of the last {window} answers that the edge's own model produced (degraded \
             answers included), and the share that match their label. Below: every answer at the time it \
             arrived, its latency on a log scale, coloured by class."
        );
        if self.summary.outage.is_some() {
            text.push_str(
                " Shaded red: the central node is down (killed, not yet restarted). Shaded yellow: restarted, \
                 and no escalated answer yet.",
            );
        }
        text.push_str("</p>");
        text
    }

    fn outage_text(&self) -> String {
        let s = self.summary;
        let Some(o) = s.outage else {
            return "<p>No outage in this run: <code>--kill-central-at 50%</code> kills the central node half-way \
                    and restarts it a few seconds later.</p>"
                .to_owned();
        };
        let secs = |d: std::time::Duration| format!("{:.2} s", d.as_secs_f64());
        let mut text = format!(
            "<p>The central process was killed with SIGKILL, as in a crash, once {} requests had been answered, \
             and started again {} s later on the same ports with the same certificates. The edge's breaker \
             probes a failing upstream again after {} ms.</p>\n<table>\
             <tr><td>central killed</td><td class=\"n\">{}</td></tr>\
             <tr><td>central restarted (new process started)</td><td class=\"n\">{}</td></tr>\
             <tr><td>restarted central ready (health check)</td><td class=\"n\">{}</td></tr>",
            o.answered_at_kill,
            CENTRAL_DOWN.as_secs(),
            BREAKER_OPEN_MS,
            secs(o.killed),
            secs(o.restarted),
            secs(o.ready),
        );
        match s.recovery {
            Some(r) => {
                let _ = write!(
                    text,
                    "<tr><td>first escalated answer after the restart</td><td class=\"n\">{}</td></tr>\
                     <tr><td><b>recovery</b> (<code>demo.recovery_s</code>)</td><td class=\"n\"><b>{:.2} s</b></td></tr>",
                    secs(r.at),
                    r.seconds
                );
            }
            None => {
                text.push_str("<tr><td><b>recovery</b></td><td class=\"n\">not seen within the run</td></tr>")
            }
        }
        text.push_str("</table>\n");
        text.push_str(
            "<p><b>Recovery</b> is the time from the moment the new central process was started to the moment \
             the first answer the central node computed for a request (<code>escalated: true</code>, not from the \
             cache) arrived. It includes the central node's start-up, the edge finding that its connection to \
             the killed process is dead and connecting again, and the wait for a request unsure enough to be \
             escalated. Times are from the first request.</p>\n",
        );
        let reasons = s.degraded_reasons();
        let listed: Vec<String> =
            reasons.iter().map(|(r, n)| format!("{n} <code>{}</code>", escape(r))).collect();
        let _ = write!(
            text,
            "<p>Degraded answers: {} of {} ({}){}; failed requests: {}.</p>",
            s.count(Class::Degraded),
            s.requests(),
            pct(s.share(s.count(Class::Degraded))),
            if listed.is_empty() { String::new() } else { format!(", by reason: {}", listed.join(", ")) },
            s.failed()
        );
        text
    }

    fn curve_text(&self) -> String {
        format!(
            "<p>What each edge threshold would do, measured on the first {} images of the <b>calibration</b> \
             split (the run used the test split): the edge's and the central node's plugin and models run in \
             process, as <code>edge-node calibrate</code> runs them, and each image kept at the edge when the \
             edge's confidence is at least the threshold. The red point is the run's threshold with 90% \
             prediction intervals (a bootstrap over the calibration images, widened for a run of {} requests); \
             the cross is what the live run got, degraded answers included.</p>",
            self.curve.examples(),
            self.summary.requests()
        )
    }

    fn models_text(&self) -> String {
        let mut text = format!(
            "<p>Each reference model run directly through tract on the first {} test images.</p>\n<table><tr>\
             <th>model</th><th>accuracy</th><th>bytes</th><th>FLOPs per image</th><th>batch-1 median</th></tr>",
            self.models.first().map_or(0, |m| m.images)
        );
        for m in self.models {
            let _ = write!(
                text,
                "<tr><td><code>{}</code></td><td class=\"n\">{:.2}%</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
                 <td class=\"n\">{:.0} µs</td></tr>",
                m.key,
                100.0 * m.accuracy,
                m.bytes,
                m.flops,
                m.b1_median_us
            );
        }
        text.push_str("</table>");
        text
    }

    fn figures_text(&self) -> String {
        let mut text = "<p>As <code>--json</code> prints them, one per line.</p>\n<table>\
                        <tr><th>figure</th><th>value</th><th>unit</th></tr>"
            .to_owned();
        for line in self.figures.to_json_lines().lines() {
            let Ok(f) = serde_json::from_str::<serde_json::Value>(line) else { continue };
            let value = f["value"].as_f64().unwrap_or(f64::NAN);
            let _ = write!(
                text,
                "<tr><td><code>{}</code></td><td class=\"n\">{}</td><td>{}</td></tr>",
                escape(f["figure"].as_str().unwrap_or("?")),
                if value.fract() == 0.0 { format!("{value:.0}") } else { format!("{value:.4}") },
                escape(f["unit"].as_str().unwrap_or(""))
            );
        }
        text.push_str("</table>");
        text
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use cascade_runtime::calibrate::{Bootstrap, Example};
    use cascade_runtime::{Digits, Split, reference};

    use super::*;
    use crate::demo::answer::Answer;
    use crate::demo::outage::Outage;
    use crate::demo::stream::Record;

    /// A run of `n` answers with an outage in the middle, every class represented.
    fn summary(test: &Digits, n: usize) -> Summary {
        let records = (0..n)
            .map(|i| {
                let class = match i % 10 {
                    _ if (n / 2..n / 2 + 5).contains(&i) => Class::Degraded,
                    0 => Class::Escalated,
                    1 => Class::Cached,
                    _ => Class::Edge,
                };
                let tier = if class == Class::Escalated { "central" } else { "edge" };
                let answer = Answer {
                    predicted: usize::from(test.label(i)),
                    tier: tier.into(),
                    class,
                    degraded_reason: (class == Class::Degraded).then(|| "upstream_failed".into()),
                };
                let done = Duration::from_millis(10 * i as u64 + 5);
                Record {
                    image: i,
                    sent: done - Duration::from_micros(900 + 37 * i as u64),
                    done,
                    answer: Ok(answer),
                }
            })
            .collect();
        let at = |i: usize| Duration::from_millis(10 * i as u64);
        let outage = Outage {
            answered_at_kill: n / 2,
            killed: at(n / 2),
            restarted: at(n / 2 + 4),
            ready: at(n / 2 + 6),
        };
        Summary::new(records, test, Some(outage), 4, Some(100.0))
    }

    #[test]
    fn a_run_renders_as_one_page_that_fetches_nothing() {
        let test = Digits::load_split(&reference::default_models_dir(), Split::Test).unwrap();
        let summary = summary(&test, 200);
        let examples: Vec<Example> = (0..200)
            .map(|i| Example {
                confidence: i as f64 / 200.0,
                edge_right: i > 20,
                upstream_right: i % 50 != 0,
                agree: i > 20,
                weight: 1.0,
            })
            .collect();
        let bootstrap = Bootstrap::new(&examples, 50, 1);
        let predicted = bootstrap.predict(0.9, summary.requests());
        let curve = ThresholdCurve { bootstrap, threshold: 0.9, predicted };
        let options = DemoOptions {
            models_dir: PathBuf::from("models"),
            plugin_crate: PathBuf::from("examples/mnist-classifier"),
            latency_samples: 1,
            concurrency: 4,
            limit: 200,
            threshold: 0.9,
            models_only: false,
            rate: Some(100.0),
            kill_central_at: Some(crate::demo::Share(0.5)),
            report: None,
        };
        let mut figures = Figures::default();
        summary.figures(&mut figures);
        let page =
            Page { options: &options, models: &[], summary: &summary, curve: &curve, figures: &figures };
        let html = page.render().unwrap();
        for id in
            ["summary", "tier-split", "latency", "timeline", "outage", "threshold-curve", "models", "figures"]
        {
            assert!(html.contains(&format!("<section id=\"{id}\">")), "no section {id}");
        }
        assert_eq!(html.matches("<svg").count(), 4);
        assert!(html.contains("default-src 'none'") && !html.contains("<script") && !html.contains("href="));
        assert!(html.contains("central killed") && html.contains("escalations resume"));
        assert!(html.contains("demo.recovery_s"));
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(escape("<a href=\"x\">&</a>"), "&lt;a href=&quot;x&quot;&gt;&amp;&lt;/a&gt;");
    }
}
