//! What a run through the tiers amounts to: the tier split, accuracy, latency per tier, the
//! edge share and accuracy over the run, and the recovery after an outage. The figures,
//! the text on stderr and the report are all read from here.

use std::collections::BTreeMap;
use std::time::Duration;

use cascade_runtime::Digits;

use super::answer::Class;
use super::outage::Outage;
use super::stream::Record;
use super::tiers::EDGE;
use crate::figures::{Figures, percentile};

/// The time series have about this many windows' worth of requests over the run...
const WINDOWS_PER_RUN: usize = 25;
/// ...with at least this many requests in a window (fewer make every error a cliff)...
const MIN_WINDOW: usize = 20;
/// ...and at most this many (more blur the outage).
const MAX_WINDOW: usize = 100;

/// When escalations resumed after the central node's restart.
///
/// `recovery_s` is the time from the moment the demo started the new central process to
/// the moment the first answer the central node computed for a request (`escalated: true`
/// and not from the cache) arrived after it. It includes the central node's own start-up
/// ([`Outage::ready`]), the edge finding its connection to the killed process dead and
/// connecting again, and the wait for a request unsure enough to be escalated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Recovery {
    /// When the first escalated answer after the restart arrived.
    pub(super) at: Duration,
    /// `at` minus the restart, in seconds.
    pub(super) seconds: f64,
}

/// One trailing window of the time series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct WindowPoint {
    /// When the window's last answer arrived, in seconds since the stream started.
    pub(super) at_s: f64,
    /// Share of the window's requests answered by the edge's own model (degraded included).
    pub(super) edge_share: f64,
    /// Share of the window's requests answered right.
    pub(super) accuracy: f64,
}

/// A run's records and what they add up to.
#[derive(Debug)]
pub(super) struct Summary {
    /// Every request, in the order answered.
    pub(super) records: Vec<Record>,
    /// Whether each record's answer is right (parallel to `records`; a failure is not).
    pub(super) right: Vec<bool>,
    /// The outage, with `--kill-central-at`.
    pub(super) outage: Option<Outage>,
    /// When escalations resumed after it, if they did within the run.
    pub(super) recovery: Option<Recovery>,
    /// Clients that sent the requests.
    pub(super) concurrency: usize,
    /// The pace, if the requests were paced.
    pub(super) rate: Option<f64>,
}

impl Summary {
    /// Scores `records` against `test`'s labels.
    pub(super) fn new(
        records: Vec<Record>,
        test: &Digits,
        outage: Option<Outage>,
        concurrency: usize,
        rate: Option<f64>,
    ) -> Summary {
        let right = records
            .iter()
            .map(|r| r.answer.as_ref().is_ok_and(|a| a.predicted == usize::from(test.label(r.image))))
            .collect();
        let recovery = outage.and_then(|o| {
            let first = records.iter().find(|r| {
                r.done >= o.restarted && r.answer.as_ref().is_ok_and(|a| a.class == Class::Escalated)
            })?;
            Some(Recovery { at: first.done, seconds: (first.done - o.restarted).as_secs_f64() })
        });
        Summary { records, right, outage, recovery, concurrency, rate }
    }

    /// Requests sent.
    pub(super) fn requests(&self) -> usize {
        self.records.len()
    }

    /// Requests that got no answer.
    pub(super) fn failed(&self) -> usize {
        self.records.iter().filter(|r| r.answer.is_err()).count()
    }

    /// Answers of `class`.
    pub(super) fn count(&self, class: Class) -> usize {
        self.records.iter().filter(|r| r.answer.as_ref().is_ok_and(|a| a.class == class)).count()
    }

    /// `count` as a share of every request sent.
    pub(super) fn share(&self, count: usize) -> f64 {
        count as f64 / self.requests().max(1) as f64
    }

    /// Share of requests answered by the edge's own model (its `tier`), degraded included.
    pub(super) fn edge_share(&self) -> f64 {
        self.share(self.records.iter().filter(|r| r.answer.as_ref().is_ok_and(|a| a.tier == EDGE)).count())
    }

    /// Share of requests answered right.
    pub(super) fn accuracy(&self) -> f64 {
        self.share(self.right.iter().filter(|&&r| r).count())
    }

    /// Latencies (µs) of the answers of `class`.
    pub(super) fn latencies(&self, class: Class) -> Vec<f64> {
        let of_class = |r: &&Record| r.answer.as_ref().is_ok_and(|a| a.class == class);
        self.records.iter().filter(of_class).map(Record::latency_us).collect()
    }

    /// Latencies (µs) of the answers, by the tier that answered (the receipt's `tier`).
    pub(super) fn latencies_by_tier(&self) -> BTreeMap<String, Vec<f64>> {
        let mut by_tier: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for r in &self.records {
            if let Ok(a) = &r.answer {
                by_tier.entry(a.tier.clone()).or_default().push(r.latency_us());
            }
        }
        by_tier
    }

    /// Degraded answers counted by their reason.
    pub(super) fn degraded_reasons(&self) -> BTreeMap<String, usize> {
        let mut reasons = BTreeMap::new();
        for r in &self.records {
            if let Ok(a) = &r.answer
                && a.class == Class::Degraded
            {
                *reasons.entry(a.degraded_reason.clone().unwrap_or_else(|| "unknown".into())).or_default() +=
                    1;
            }
        }
        reasons
    }

    /// Requests per window of [`Summary::series`].
    pub(super) fn window(&self) -> usize {
        (self.requests() / WINDOWS_PER_RUN).clamp(MIN_WINDOW, MAX_WINDOW).min(self.requests().max(1))
    }

    /// Edge share and accuracy over each trailing window of [`Summary::window`] answers, one
    /// point per answer from the window's size on.
    pub(super) fn series(&self) -> Vec<WindowPoint> {
        let w = self.window();
        let at_edge: Vec<bool> =
            self.records.iter().map(|r| r.answer.as_ref().is_ok_and(|a| a.tier == EDGE)).collect();
        (w..=self.records.len())
            .map(|end| {
                let count = |v: &[bool]| v[end - w..end].iter().filter(|&&b| b).count() as f64 / w as f64;
                WindowPoint {
                    at_s: self.records[end - 1].done.as_secs_f64(),
                    edge_share: count(&at_edge),
                    accuracy: count(&self.right),
                }
            })
            .collect()
    }

    /// The run's figures, one `{"figure", "value", "unit"}` line each (README, "Benchmarks").
    pub(super) fn figures(&self, figures: &mut Figures) {
        let all: Vec<f64> =
            self.records.iter().filter(|r| r.answer.is_ok()).map(Record::latency_us).collect();
        figures.push("demo.requests", self.requests() as f64, "count");
        figures.push("demo.failed_requests", self.failed() as f64, "count");
        figures.push("demo.edge_share", self.edge_share(), "fraction");
        figures.push("demo.escalated_share", self.share(self.count(Class::Escalated)), "fraction");
        figures.push("demo.cached_share", self.share(self.count(Class::Cached)), "fraction");
        figures.push("demo.degraded_share", self.share(self.count(Class::Degraded)), "fraction");
        figures.push("demo.cascade_accuracy", self.accuracy(), "fraction");
        figures.push("demo.latency_us.p50", percentile(&mut all.clone(), 0.5), "us");
        figures.push("demo.latency_us.p99", percentile(&mut all.clone(), 0.99), "us");
        let local: Vec<f64> =
            [Class::Edge, Class::Degraded, Class::Cached].iter().flat_map(|&c| self.latencies(c)).collect();
        figures.push("demo.local.latency_us.p50", percentile(&mut local.clone(), 0.5), "us");
        figures.push(
            "demo.escalated.latency_us.p50",
            percentile(&mut self.latencies(Class::Escalated), 0.5),
            "us",
        );
        for (tier, mut latencies) in self.latencies_by_tier() {
            figures.push(format!("demo.p99_us.{tier}"), percentile(&mut latencies, 0.99), "us");
        }
        if let Some(recovery) = self.recovery {
            figures.push("demo.recovery_s", recovery.seconds, "s");
        }
    }

    /// The run in a few lines on stderr.
    pub(super) fn print(&self) {
        let pct = |count: usize| 100.0 * self.share(count);
        let split: Vec<String> =
            Class::ALL.iter().map(|&c| format!("{} {:.1}%", c.name(), pct(self.count(c)))).collect();
        eprintln!(
            "   {} requests: {}; {} failed; cascade accuracy {:.2}%",
            self.requests(),
            split.join(", "),
            self.failed(),
            100.0 * self.accuracy()
        );
        let tiers: Vec<String> = self
            .latencies_by_tier()
            .into_iter()
            .map(|(tier, mut l)| {
                format!(
                    "{tier} p50 {:.0} us, p99 {:.0} us",
                    percentile(&mut l, 0.5),
                    percentile(&mut l, 0.99)
                )
            })
            .collect();
        eprintln!("   latency (HTTP, {} clients) by answering tier: {}", self.concurrency, tiers.join("; "));
        if let Some(o) = self.outage {
            let reasons: Vec<String> =
                self.degraded_reasons().iter().map(|(r, n)| format!("{n} {r}")).collect();
            eprintln!(
                "   central down from {:.1} s to {:.1} s (ready again at {:.1} s); degraded answers: {}",
                o.killed.as_secs_f64(),
                o.restarted.as_secs_f64(),
                o.ready.as_secs_f64(),
                if reasons.is_empty() { "none".to_owned() } else { reasons.join(", ") }
            );
            match self.recovery {
                Some(r) => eprintln!(
                    "   escalations resumed at {:.1} s: recovery {:.2} s after the restart",
                    r.at.as_secs_f64(),
                    r.seconds
                ),
                None => eprintln!(
                    "   no escalated answer arrived after the restart before the run ended: pass a lower --rate or \
                     a higher --limit to see the recovery"
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::answer::Answer;
    use cascade_runtime::{Split, reference};

    fn test_split() -> Digits {
        Digits::load_split(&reference::default_models_dir(), Split::Test).unwrap()
    }

    /// A record of image `image` answered `ms` milliseconds into the run as `class`, right
    /// or wrong.
    fn record(test: &Digits, image: usize, ms: u64, class: Class, right: bool) -> Record {
        let label = usize::from(test.label(image));
        let tier = if class == Class::Escalated { "central" } else { EDGE };
        let answer = Answer {
            predicted: if right { label } else { (label + 1) % 10 },
            tier: tier.to_owned(),
            class,
            degraded_reason: (class == Class::Degraded).then(|| "breaker_open".to_owned()),
        };
        let done = Duration::from_millis(ms);
        Record { image, sent: done.saturating_sub(Duration::from_millis(1)), done, answer: Ok(answer) }
    }

    fn outage() -> Outage {
        Outage {
            answered_at_kill: 2,
            killed: Duration::from_millis(200),
            restarted: Duration::from_millis(500),
            ready: Duration::from_millis(600),
        }
    }

    #[test]
    fn recovery_runs_from_the_restart_to_the_first_escalated_answer_after_it() {
        let test = test_split();
        let records = vec![
            record(&test, 0, 100, Class::Escalated, true),
            record(&test, 1, 150, Class::Edge, true),
            record(&test, 2, 300, Class::Degraded, false),
            // Cached and degraded answers after the restart are not escalations resuming.
            record(&test, 3, 700, Class::Cached, true),
            record(&test, 4, 800, Class::Degraded, true),
            record(&test, 5, 1250, Class::Escalated, true),
        ];
        let s = Summary::new(records, &test, Some(outage()), 1, None);
        let recovery = s.recovery.unwrap();
        assert_eq!(recovery.at, Duration::from_millis(1250));
        assert!((recovery.seconds - 0.75).abs() < 1e-9);
        assert_eq!((s.count(Class::Degraded), s.count(Class::Cached), s.failed()), (2, 1, 0));
        assert!((s.accuracy() - 5.0 / 6.0).abs() < 1e-9);
        // Edge, degraded and the cached edge answer were the edge's model's.
        assert!((s.edge_share() - 4.0 / 6.0).abs() < 1e-9);
        assert_eq!(s.degraded_reasons()["breaker_open"], 2);
        let mut figures = Figures::default();
        s.figures(&mut figures);
        assert_eq!(figures.get("demo.recovery_s"), Some(recovery.seconds));
        assert_eq!(figures.get("demo.degraded_share"), Some(2.0 / 6.0));
        assert!(figures.get("demo.p99_us.central").is_some() && figures.get("demo.p99_us.edge").is_some());
    }

    #[test]
    fn without_an_escalation_after_the_restart_there_is_no_recovery_figure() {
        let test = test_split();
        let mut late = record(&test, 1, 900, Class::Edge, true);
        late.answer = Err("HTTP 503".into());
        let records = vec![record(&test, 0, 400, Class::Escalated, true), late];
        let s = Summary::new(records, &test, Some(outage()), 1, None);
        assert_eq!((s.recovery, s.failed()), (None, 1));
        let mut figures = Figures::default();
        s.figures(&mut figures);
        assert_eq!(figures.get("demo.recovery_s"), None);
        assert_eq!(figures.get("demo.failed_requests"), Some(1.0));
    }

    #[test]
    fn the_series_is_trailing_windows_of_answers() {
        let test = test_split();
        let records: Vec<Record> =
            (0..MIN_WINDOW * 2).map(|i| record(&test, i, i as u64 * 10, Class::Edge, i % 2 == 0)).collect();
        let s = Summary::new(records, &test, None, 1, None);
        let series = s.series();
        assert_eq!((s.window(), series.len()), (MIN_WINDOW, MIN_WINDOW + 1));
        assert!(series.iter().all(|p| p.edge_share == 1.0 && (p.accuracy - 0.5).abs() < 1e-9));
    }
}
