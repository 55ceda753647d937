//! What a threshold does, estimated from examples: the share answered at the edge, the
//! accuracy of those answers and of the whole cascade, agreement with the upstream, and the
//! load and latency it puts on the upstream. Sans-IO and deterministic.

/// One request as the cascade saw it: this node's confidence, and whether each tier got it
/// right. Without labels, "right" means "agrees with the upstream" (the upstream is then
/// right by definition).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Example {
    /// This node's plugin's confidence.
    pub confidence: f64,
    /// Whether this node's answer is right.
    pub edge_right: bool,
    /// Whether the upstream's answer is right.
    pub upstream_right: bool,
    /// Whether the two answers agree.
    pub agree: bool,
    /// How many requests this example stands for (1 for a calibration set; the inverse of
    /// the sampling rate for shadow records).
    pub weight: f64,
}

/// The cascade's figures at one threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Answers at or above this confidence stay at the edge.
    pub threshold: f64,
    /// Share of requests answered at the edge.
    pub edge_share: f64,
    /// Accuracy of the edge's answers (those it keeps); 1 when it keeps none.
    pub edge_accuracy: f64,
    /// Accuracy of the cascade: the edge's kept answers and the upstream's for the rest.
    pub accuracy: f64,
    /// Share of requests whose answer is the one the upstream would give.
    pub agreement: f64,
    /// Requests sent upstream per 1,000.
    pub upstream_per_1000: f64,
}

/// Examples sorted by confidence with running sums, so that every threshold is evaluated
/// in logarithmic time.
#[derive(Debug, Clone)]
pub struct Curve {
    confidences: Vec<f64>,
    /// Prefix sums over the sorted examples (index `i`: the first `i` examples) of weight,
    /// weight of edge-right, of upstream-right, and of agreeing examples.
    weight: Vec<f64>,
    edge_right: Vec<f64>,
    upstream_right: Vec<f64>,
    agree: Vec<f64>,
}

impl Curve {
    /// The curve of `examples` (any order).
    pub fn new(examples: &[Example]) -> Curve {
        let mut sorted = examples.to_vec();
        sorted.sort_by(|a, b| a.confidence.total_cmp(&b.confidence));
        let n = sorted.len();
        let mut c = Curve {
            confidences: sorted.iter().map(|e| e.confidence).collect(),
            weight: Vec::with_capacity(n + 1),
            edge_right: Vec::with_capacity(n + 1),
            upstream_right: Vec::with_capacity(n + 1),
            agree: Vec::with_capacity(n + 1),
        };
        let (mut w, mut er, mut ur, mut ag) = (0.0, 0.0, 0.0, 0.0);
        for sums in [&mut c.weight, &mut c.edge_right, &mut c.upstream_right, &mut c.agree] {
            sums.push(0.0);
        }
        for e in &sorted {
            w += e.weight;
            er += e.weight * f64::from(u8::from(e.edge_right));
            ur += e.weight * f64::from(u8::from(e.upstream_right));
            ag += e.weight * f64::from(u8::from(e.agree));
            c.weight.push(w);
            c.edge_right.push(er);
            c.upstream_right.push(ur);
            c.agree.push(ag);
        }
        c
    }

    /// Examples on the curve.
    pub fn len(&self) -> usize {
        self.confidences.len()
    }

    /// Whether it has no examples.
    pub fn is_empty(&self) -> bool {
        self.confidences.is_empty()
    }

    /// The figures at `threshold`: examples with confidence at or above it are kept at the
    /// edge, the others escalate. All zero for an empty curve.
    pub fn at(&self, threshold: f64) -> Point {
        let n = self.len();
        let total = self.weight[n];
        if total <= 0.0 {
            return Point {
                threshold,
                edge_share: 0.0,
                edge_accuracy: 0.0,
                accuracy: 0.0,
                agreement: 0.0,
                upstream_per_1000: 0.0,
            };
        }
        // The first example at or above the threshold.
        let k = self.confidences.partition_point(|&c| c < threshold);
        let below = self.weight[k];
        let kept = total - below;
        let kept_right = self.edge_right[n] - self.edge_right[k];
        let escalated_right = self.upstream_right[k];
        let kept_agree = self.agree[n] - self.agree[k];
        Point {
            threshold,
            edge_share: kept / total,
            edge_accuracy: if kept > 0.0 { kept_right / kept } else { 1.0 },
            accuracy: (kept_right + escalated_right) / total,
            // Escalated requests get the upstream's answer: they agree by definition.
            agreement: (kept_agree + below) / total,
            upstream_per_1000: 1000.0 * below / total,
        }
    }

    /// Accuracy with every request answered at the edge.
    pub fn edge_only_accuracy(&self) -> f64 {
        self.at(f64::NEG_INFINITY).accuracy
    }

    /// Accuracy with every request sent upstream.
    pub fn upstream_only_accuracy(&self) -> f64 {
        self.at(f64::INFINITY).accuracy
    }
}

/// The thresholds a table or a search visits: 0 to 1 in steps of `1 / steps`.
pub fn grid(steps: u32) -> impl DoubleEndedIterator<Item = f64> {
    (0..=steps).map(move |i| f64::from(i) / f64::from(steps))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(confidence: f64, edge_right: bool, upstream_right: bool) -> Example {
        Example { confidence, edge_right, upstream_right, agree: edge_right == upstream_right, weight: 1.0 }
    }

    #[test]
    fn a_threshold_splits_the_examples_between_the_tiers() {
        let examples =
            [ex(0.2, false, true), ex(0.5, false, false), ex(0.8, true, true), ex(0.95, true, true)];
        let c = Curve::new(&examples);
        let p = c.at(0.5);
        assert_eq!(p.edge_share, 0.75);
        assert!((p.edge_accuracy - 2.0 / 3.0).abs() < 1e-12);
        // Kept: 0.5 (wrong), 0.8, 0.95 (right); escalated: 0.2, which the upstream gets right.
        assert_eq!(p.accuracy, 0.75);
        assert_eq!(p.upstream_per_1000, 250.0);
        assert_eq!(c.edge_only_accuracy(), 0.5);
        assert_eq!(c.upstream_only_accuracy(), 0.75);
        // Everything escalates at a threshold above every confidence.
        let all_up = c.at(1.0);
        assert_eq!((all_up.edge_share, all_up.agreement), (0.0, 1.0));
    }

    #[test]
    fn weights_count_examples_as_often_as_they_stand_for() {
        let light = ex(0.9, false, true);
        let heavy = Example { weight: 3.0, ..ex(0.1, true, true) };
        let c = Curve::new(&[light, heavy]);
        assert_eq!(c.at(0.5).edge_share, 0.25);
        assert_eq!(c.at(0.5).agreement, 0.75);
        assert!(Curve::new(&[]).at(0.5).accuracy == 0.0);
    }
}
