//! What a calibration found, as a table, recommendations, the TOML to paste and figures.

use std::time::Duration;

use cascade_runtime::Mode;
use cascade_runtime::calibrate::{
    Bootstrap, Coverage, Curve, Estimate, Example, Goal, Interval, Recommendation, auroc, coverage,
};

use super::collect::Observation;
use crate::figures::Figures;

/// The confidence measures compared: the plugin's own, and three from its probabilities.
pub(super) const MEASURES: [&str; 4] = ["plugin", "max_probability", "margin", "entropy"];

/// Thresholds the table shows, besides the recommended ones.
const TABLE: [f64; 11] = [0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99];

/// How a recommendation did on held-out data.
#[derive(Debug, Clone, Copy)]
pub(super) struct Realised {
    /// The recommendation's figures predicted for as many new requests as the test split
    /// holds.
    pub(super) predicted: Estimate,
    pub(super) edge_share: f64,
    pub(super) accuracy: f64,
    pub(super) edge_only: f64,
    pub(super) upstream_only: f64,
}

/// Everything a calibration reports.
pub(super) struct Report {
    pub(super) bootstrap: Bootstrap,
    /// The recommendation per mode, `normal` first.
    pub(super) modes: [Recommendation; 3],
    /// The normal recommendation on the test split, if there is one.
    pub(super) realised: Option<Realised>,
    /// AUROC of each measure that had values.
    pub(super) auroc: Vec<(&'static str, f64)>,
    /// Mean time of the edge's plugin and of the upstream, per request.
    pub(super) latency: Option<(Duration, Duration)>,
    /// How often the intervals held over random re-splits (`--coverage`).
    pub(super) coverage: Option<Coverage>,
}

fn examples(observations: &[Observation], measure: &str, agreement: bool) -> Vec<Example> {
    observations.iter().filter_map(|o| o.example(measure, agreement)).collect()
}

/// The looser goals of `surge` and `emergency`: escalate at most their share of `normal`'s
/// escalation budget times normal's escalated share (`emergency` with no budget: nothing).
fn mode_goals(normal: &Recommendation, budgets: [f64; 3]) -> [Goal; 2] {
    let escalated = 1.0 - normal.estimate.point.edge_share;
    [Mode::Surge, Mode::Emergency].map(|m| {
        let ratio = if budgets[0] > 0.0 { (budgets[m.index()] / budgets[0]).min(1.0) } else { 0.0 };
        Goal::MaxEscalation(escalated * ratio)
    })
}

impl Report {
    /// The report of `calib` (recommending) and `test` (checking), with confidences by the
    /// plugin's own measure.
    pub(super) fn new(
        calib: &[Observation],
        test: &[Observation],
        agreement: bool,
        goal: Goal,
        budgets: [f64; 3],
        resamples: usize,
    ) -> Report {
        let bootstrap = Bootstrap::new(&examples(calib, "plugin", agreement), resamples, 1);
        let mut report = Report::from_bootstrap(bootstrap, goal, budgets);
        let held_out = Curve::new(&examples(test, "plugin", agreement));
        let at = held_out.at(report.modes[0].threshold);
        report.realised = Some(Realised {
            predicted: report.bootstrap.predict(report.modes[0].threshold, held_out.len()),
            edge_share: at.edge_share,
            accuracy: at.accuracy,
            edge_only: held_out.edge_only_accuracy(),
            upstream_only: held_out.upstream_only_accuracy(),
        });
        report.auroc = MEASURES
            .iter()
            .filter_map(|&m| {
                let ex = examples(calib, m, agreement);
                let scores: Vec<f64> = ex.iter().map(|e| e.confidence).collect();
                let right: Vec<bool> = ex.iter().map(|e| e.edge_right).collect();
                (ex.len() == calib.len()).then(|| auroc(&scores, &right).map(|a| (m, a))).flatten()
            })
            .collect();
        let mean = |f: &dyn Fn(&Observation) -> Duration| {
            calib.iter().map(f).sum::<Duration>() / u32::try_from(calib.len().max(1)).unwrap_or(u32::MAX)
        };
        let edge = mean(&|o| o.edge.as_ref().map_or(Duration::ZERO, |e| e.took));
        report.latency = Some((edge, mean(&|o| o.upstream_took)));
        report
    }

    /// Measures the intervals' coverage: `splits` random re-splits of the calibration and
    /// test examples pooled, at the calibration split's size, each calibrated with
    /// `resamples` resamples for the normal mode's goal.
    pub(super) fn measure_coverage(
        &mut self,
        calib: &[Observation],
        test: &[Observation],
        agreement: bool,
        splits: usize,
        resamples: usize,
    ) {
        let calib = examples(calib, "plugin", agreement);
        let mut pool = calib.clone();
        pool.extend(examples(test, "plugin", agreement));
        self.coverage = coverage(&pool, calib.len(), self.modes[0].goal, splits, resamples, 2);
    }

    /// A report from examples without a test split (shadow records).
    pub(super) fn from_bootstrap(bootstrap: Bootstrap, goal: Goal, budgets: [f64; 3]) -> Report {
        let normal = bootstrap.recommend(goal);
        let [surge, emergency] = mode_goals(&normal, budgets).map(|g| bootstrap.recommend(g));
        Report {
            modes: [normal, surge, emergency],
            bootstrap,
            realised: None,
            auroc: Vec::new(),
            latency: None,
            coverage: None,
        }
    }

    /// Expected mean latency per request at a share `edge_share` answered at the edge: every
    /// request pays the edge; escalated ones pay the upstream too.
    fn mean_latency_us(&self, edge_share: f64) -> Option<f64> {
        let (edge, up) = self.latency?;
        Some(edge.as_secs_f64() * 1e6 + (1.0 - edge_share) * up.as_secs_f64() * 1e6)
    }

    /// Prints the table, the recommendations, the TOML lines, the held-out check and the
    /// measures' AUROC to stderr.
    pub(super) fn print(&self, route: &str, upstream: String) {
        let curve = self.bootstrap.curve();
        eprintln!(
            "calibrating route `{route}` on {} examples; {upstream}; intervals are 90% (bootstrap)",
            curve.len()
        );
        eprintln!(
            "{:>9} {:>10} {:>9} {:>9} {:>9} {:>10} {:>11}",
            "threshold", "edge share", "edge acc", "accuracy", "agreement", "upstream/k", "latency us"
        );
        let mut rows: Vec<f64> = TABLE.to_vec();
        rows.extend(self.modes.iter().map(|r| r.threshold));
        rows.sort_by(f64::total_cmp);
        rows.dedup();
        for t in rows {
            let p = curve.at(t);
            let mark = if self.modes.iter().any(|r| r.threshold == t) { " <" } else { "" };
            let latency = self.mean_latency_us(p.edge_share).map_or("-".into(), |l| format!("{l:.0}"));
            eprintln!(
                "{t:>9.3} {:>9.1}% {:>8.2}% {:>8.2}% {:>8.2}% {:>10.0} {latency:>11}{mark}",
                100.0 * p.edge_share,
                100.0 * p.edge_accuracy,
                100.0 * p.accuracy,
                100.0 * p.agreement,
                p.upstream_per_1000
            );
        }
        eprintln!(
            "edge alone: {:.2}%; upstream alone: {:.2}%",
            100.0 * curve.edge_only_accuracy(),
            100.0 * curve.upstream_only_accuracy()
        );
        for (mode, r) in Mode::ALL.iter().zip(&self.modes) {
            describe(*mode, r);
        }
        eprintln!("paste into the route's section:");
        eprintln!("[routes.{route}.thresholds]");
        for (mode, r) in Mode::ALL.iter().zip(&self.modes) {
            eprintln!("{mode} = {:.3}", r.threshold);
        }
        if let Some(real) = self.realised {
            let e = real.predicted;
            let inside = |x: f64, i: Interval| {
                let verdict = if i.contains(x) { "inside" } else { "OUTSIDE" };
                format!("{verdict} the predicted [{:.2}, {:.2}]", 100.0 * i.lo, 100.0 * i.hi)
            };
            eprintln!(
                "held-out test split at {:.3}: edge share {:.2}% ({}), accuracy {:.2}% ({}); \
                 edge alone {:.2}%, upstream alone {:.2}% (predictions for that many new requests)",
                self.modes[0].threshold,
                100.0 * real.edge_share,
                inside(real.edge_share, e.edge_share),
                100.0 * real.accuracy,
                inside(real.accuracy, e.accuracy),
                100.0 * real.edge_only,
                100.0 * real.upstream_only
            );
        }
        if let Some(c) = self.coverage {
            eprintln!(
                "coverage of the 90% intervals over {} random re-splits of the calibration and test examples \
                 (calibrate on one part, check on the other): edge share inside in {:.0}%, accuracy inside in \
                 {:.0}% (honest intervals: about 90%); the goal held on the checking part in {:.0}% (it \
                 holds in 90% of resamples for the accuracy the examples stand for; a finite checking part \
                 adds noise of its own)",
                c.splits,
                100.0 * c.edge_share,
                100.0 * c.accuracy,
                100.0 * c.goal_held
            );
        }
        if !self.auroc.is_empty() {
            let list: Vec<String> = self.auroc.iter().map(|(m, a)| format!("{m} {a:.4}")).collect();
            eprintln!("confidence measures, AUROC of right against wrong edge answers: {}", list.join(", "));
        }
    }

    /// The headline as figures.
    pub(super) fn figures(&self) -> Figures {
        let mut f = Figures::default();
        let normal = &self.modes[0];
        // Predictions for the held-out split's size when there is one.
        let e: Estimate = self.realised.map_or(normal.estimate, |r| r.predicted);
        f.push("calibration.threshold", normal.threshold, "threshold");
        f.push("calibration.predicted.edge_share", e.point.edge_share, "fraction");
        f.push("calibration.predicted.edge_share.lo", e.edge_share.lo, "fraction");
        f.push("calibration.predicted.edge_share.hi", e.edge_share.hi, "fraction");
        f.push("calibration.predicted.accuracy", e.point.accuracy, "fraction");
        f.push("calibration.predicted.accuracy.lo", e.accuracy.lo, "fraction");
        f.push("calibration.predicted.accuracy.hi", e.accuracy.hi, "fraction");
        f.push("calibration.holds", normal.holds, "fraction");
        f.push("calibration.margin_cost.edge_share", normal.margin_cost, "fraction");
        if let Some(real) = self.realised {
            f.push("calibration.realised.edge_share", real.edge_share, "fraction");
            f.push("calibration.realised.accuracy", real.accuracy, "fraction");
            let inside = |x: f64, i: Interval| f64::from(u8::from(i.contains(x)));
            f.push("calibration.realised.edge_share.inside", inside(real.edge_share, e.edge_share), "bool");
            f.push("calibration.realised.accuracy.inside", inside(real.accuracy, e.accuracy), "bool");
            f.push("calibration.edge_only.accuracy", real.edge_only, "fraction");
            f.push("calibration.central_only.accuracy", real.upstream_only, "fraction");
        }
        if let Some(c) = self.coverage {
            f.push("calibration.coverage.edge_share", c.edge_share, "fraction");
            f.push("calibration.coverage.accuracy", c.accuracy, "fraction");
            f.push("calibration.coverage.goal_held", c.goal_held, "fraction");
        }
        for (m, a) in &self.auroc {
            f.push(format!("calibration.auroc.{m}"), *a, "ratio");
        }
        f
    }
}

fn describe(mode: Mode, r: &Recommendation) {
    let goal = match r.goal {
        Goal::TargetAccuracy(a) => format!("accuracy at least {:.2}%", 100.0 * a),
        Goal::MaxLoss(l) => format!("at most {:.2} point below the upstream alone", 100.0 * l),
        Goal::MaxEscalation(e) => format!("at most {:.1}% escalated", 100.0 * e),
    };
    let e = r.estimate;
    let sure = if r.feasible {
        format!("holds in {:.0}% of resamples", 100.0 * r.holds)
    } else {
        format!("NOT MET with 90% confidence (holds in {:.0}% of resamples at best)", 100.0 * r.holds)
    };
    // A goal that bounds escalation is safe on the lower side: its margin gains edge share.
    let margin = if r.margin_cost >= 0.0 {
        format!("costs {:.1} points of edge share", 100.0 * r.margin_cost)
    } else {
        format!("adds {:.1} points of edge share", -100.0 * r.margin_cost)
    };
    eprintln!(
        "{mode}: threshold {:.3} for {goal}: edge share {:.1}% [{:.1}, {:.1}], accuracy {:.2}% [{:.2}, {:.2}]; {sure}; \
         the margin over the naive {:.3} {margin}",
        r.threshold,
        100.0 * e.point.edge_share,
        100.0 * e.edge_share.lo,
        100.0 * e.edge_share.hi,
        100.0 * e.point.accuracy,
        100.0 * e.accuracy.lo,
        100.0 * e.accuracy.hi,
        r.naive_threshold,
    );
}
