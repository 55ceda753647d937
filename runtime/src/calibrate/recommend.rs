//! Choosing a threshold for a goal, honestly: every figure comes with a 90% interval from a
//! bootstrap over the examples, and the threshold recommended is the one for which the goal
//! holds in at least 90% of the resamples, not merely on the examples at hand (a threshold
//! picked exactly at the target misses it on new data about half the time).

use super::curve::{Curve, Example, Point, grid};

/// Thresholds visited: 0 to 1 in steps of 0.001.
const STEPS: u32 = 1000;

/// How sure the recommendation must be that its goal holds.
pub const CONFIDENCE: f64 = 0.9;

/// What the threshold should achieve. Shares and accuracies are fractions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Goal {
    /// The most answers at the edge with the cascade's accuracy at least this.
    TargetAccuracy(f64),
    /// The most answers at the edge losing at most this much accuracy against sending
    /// everything upstream (0.0015 is 0.15 point).
    MaxLoss(f64),
    /// The best accuracy escalating at most this share of requests.
    MaxEscalation(f64),
}

/// A 90% interval: the 5th and 95th percentiles over the resamples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    /// Lower end.
    pub lo: f64,
    /// Upper end.
    pub hi: f64,
}

impl Interval {
    /// Whether `x` is inside.
    pub fn contains(&self, x: f64) -> bool {
        self.lo <= x && x <= self.hi
    }
}

/// A threshold's figures on the examples, with their intervals.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    /// The figures on the examples themselves.
    pub point: Point,
    /// Interval of the share answered at the edge.
    pub edge_share: Interval,
    /// Interval of the cascade's accuracy.
    pub accuracy: Interval,
    /// Interval of the agreement with the upstream.
    pub agreement: Interval,
}

/// The threshold chosen for a goal, and what choosing it safely costs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Recommendation {
    /// The goal.
    pub goal: Goal,
    /// The threshold recommended.
    pub threshold: f64,
    /// Its figures.
    pub estimate: Estimate,
    /// Share of resamples in which the goal holds at that threshold.
    pub holds: f64,
    /// Whether any threshold meets the goal with the required confidence; if not, the
    /// recommendation is the threshold that comes closest.
    pub feasible: bool,
    /// The threshold that meets the goal on the examples alone (what a naive pick would be).
    pub naive_threshold: f64,
    /// Edge share given up for the margin: the naive threshold's share minus the
    /// recommended one's (negative if the margin keeps more at the edge).
    pub margin_cost: f64,
}

/// The examples and their resamples.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    base: Curve,
    resamples: Vec<Curve>,
}

/// xorshift64*: reproducible resampling without a dependency.
pub(super) fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

/// The value at quantile `q` of `values` (sorted in place).
fn quantile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    if values.is_empty() {
        return 0.0;
    }
    let i = ((values.len() - 1) as f64 * q).round() as usize;
    values[i.min(values.len() - 1)]
}

impl Bootstrap {
    /// `resamples` resamples (with replacement) of `examples`, drawn from `seed`.
    pub fn new(examples: &[Example], resamples: usize, seed: u64) -> Bootstrap {
        let mut state = seed | 1;
        let n = examples.len();
        let resamples = (0..resamples)
            .map(|_| {
                let drawn: Vec<Example> =
                    (0..n).map(|_| examples[(next(&mut state) % n.max(1) as u64) as usize]).collect();
                Curve::new(&drawn)
            })
            .collect();
        Bootstrap { base: Curve::new(examples), resamples }
    }

    /// The curve of the examples themselves.
    pub fn curve(&self) -> &Curve {
        &self.base
    }

    /// `threshold`'s figures on `m` new requests, with prediction intervals: the bootstrap
    /// interval of the estimate widened by `sqrt(1 + n / m)` around it, since `m` new
    /// requests add noise of their own to the `n` examples' (the two variances add).
    pub fn predict(&self, threshold: f64, m: usize) -> Estimate {
        let e = self.estimate(threshold);
        let k = (1.0 + self.base.len() as f64 / m.max(1) as f64).sqrt();
        let widen = |i: Interval, p: f64| Interval { lo: p - (p - i.lo) * k, hi: p + (i.hi - p) * k };
        Estimate {
            point: e.point,
            edge_share: widen(e.edge_share, e.point.edge_share),
            accuracy: widen(e.accuracy, e.point.accuracy),
            agreement: widen(e.agreement, e.point.agreement),
        }
    }

    /// `threshold`'s figures and the 90% intervals of their estimates.
    pub fn estimate(&self, threshold: f64) -> Estimate {
        let points: Vec<Point> = self.resamples.iter().map(|c| c.at(threshold)).collect();
        let interval = |f: fn(&Point) -> f64| {
            let mut v: Vec<f64> = points.iter().map(f).collect();
            Interval { lo: quantile(&mut v, 0.05), hi: quantile(&mut v, 0.95) }
        };
        Estimate {
            point: self.base.at(threshold),
            edge_share: interval(|p| p.edge_share),
            accuracy: interval(|p| p.accuracy),
            agreement: interval(|p| p.agreement),
        }
    }

    /// Whether `goal` holds on `curve` at `threshold`.
    pub(super) fn holds_on(curve: &Curve, goal: Goal, threshold: f64) -> bool {
        let p = curve.at(threshold);
        match goal {
            Goal::TargetAccuracy(a) => p.accuracy >= a,
            // Paired: the loss against the same resample's upstream-only accuracy.
            Goal::MaxLoss(loss) => p.accuracy >= curve.upstream_only_accuracy() - loss,
            Goal::MaxEscalation(e) => 1.0 - p.edge_share <= e,
        }
    }

    /// Share of resamples in which `goal` holds at `threshold`.
    pub fn holds(&self, goal: Goal, threshold: f64) -> f64 {
        if self.resamples.is_empty() {
            return f64::from(u8::from(Self::holds_on(&self.base, goal, threshold)));
        }
        let n = self.resamples.iter().filter(|c| Self::holds_on(c, goal, threshold)).count();
        n as f64 / self.resamples.len() as f64
    }

    /// The threshold for `goal`: for an accuracy goal the lowest (most answers at the edge)
    /// at which the goal holds with [`CONFIDENCE`]; for an escalation goal the highest
    /// (best accuracy).
    pub fn recommend(&self, goal: Goal) -> Recommendation {
        // Nothing may escalate: the threshold is moot, and 0 says so.
        if goal == Goal::MaxEscalation(0.0) {
            return Recommendation {
                goal,
                threshold: 0.0,
                estimate: self.estimate(0.0),
                holds: 1.0,
                feasible: true,
                naive_threshold: 0.0,
                margin_cost: 0.0,
            };
        }
        let thresholds: Vec<f64> = match goal {
            Goal::MaxEscalation(_) => grid(STEPS).rev().collect(),
            _ => grid(STEPS).collect(),
        };
        let sure = thresholds.iter().copied().find(|&t| self.holds(goal, t) >= CONFIDENCE);
        let naive = thresholds.iter().copied().find(|&t| Self::holds_on(&self.base, goal, t));
        // Infeasible: the threshold where the goal holds most often (ties: the first).
        let threshold = sure.unwrap_or_else(|| {
            thresholds
                .iter()
                .copied()
                .map(|t| (t, self.holds(goal, t)))
                .fold((thresholds[0], -1.0), |best, (t, h)| if h > best.1 { (t, h) } else { best })
                .0
        });
        let naive_threshold = naive.unwrap_or(threshold);
        Recommendation {
            goal,
            threshold,
            estimate: self.estimate(threshold),
            holds: self.holds(goal, threshold),
            feasible: sure.is_some(),
            naive_threshold,
            margin_cost: self.base.at(naive_threshold).edge_share - self.base.at(threshold).edge_share,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Confidence `i / n`; the edge is right above 0.3 and on every second example below;
    /// the upstream is always right.
    fn examples(n: usize) -> Vec<Example> {
        (0..n)
            .map(|i| {
                let confidence = i as f64 / n as f64;
                let edge_right = confidence > 0.3 || i % 2 == 0;
                Example { confidence, edge_right, upstream_right: true, agree: edge_right, weight: 1.0 }
            })
            .collect()
    }

    #[test]
    fn the_recommended_threshold_holds_its_goal_with_margin() {
        let b = Bootstrap::new(&examples(2000), 300, 7);
        let goal = Goal::TargetAccuracy(0.9);
        let r = b.recommend(goal);
        assert!(r.feasible, "{r:?}");
        assert!(r.holds >= CONFIDENCE, "{r:?}");
        assert!(r.estimate.point.accuracy >= 0.9);
        // The naive pick meets the target only on these examples; the safe one is higher.
        assert!(r.naive_threshold <= r.threshold, "{r:?}");
        assert!(r.margin_cost >= 0.0);
        let e = r.estimate;
        assert!(e.accuracy.lo <= e.point.accuracy && e.point.accuracy <= e.accuracy.hi, "{e:?}");
        assert!(e.edge_share.contains(e.point.edge_share), "{e:?}");
    }

    #[test]
    fn loss_and_escalation_goals_pick_from_the_right_end() {
        let b = Bootstrap::new(&examples(2000), 200, 11);
        let loss = b.recommend(Goal::MaxLoss(0.01));
        assert!(loss.feasible && loss.estimate.point.accuracy >= 0.99 - 1e-9, "{loss:?}");
        let esc = b.recommend(Goal::MaxEscalation(0.2));
        assert!(esc.feasible, "{esc:?}");
        assert!(1.0 - esc.estimate.point.edge_share <= 0.2 + 1e-9, "{esc:?}");
        // An impossible target is said to be so.
        let never = b.recommend(Goal::TargetAccuracy(1.01));
        assert!(!never.feasible);
    }

    #[test]
    fn predictions_for_fewer_new_requests_are_wider() {
        let b = Bootstrap::new(&examples(1000), 200, 5);
        // At 0.2 some kept answers are wrong, so the accuracy varies between resamples.
        let (e, p) = (b.estimate(0.2), b.predict(0.2, 250));
        let width = |i: Interval| i.hi - i.lo;
        let ratio = width(p.accuracy) / width(e.accuracy);
        assert!((ratio - 5f64.sqrt()).abs() < 1e-9, "{ratio}");
        assert_eq!(b.recommend(Goal::MaxEscalation(0.0)).threshold, 0.0);
    }

    #[test]
    fn resampling_is_reproducible() {
        let a = Bootstrap::new(&examples(500), 50, 3).estimate(0.5);
        let b = Bootstrap::new(&examples(500), 50, 3).estimate(0.5);
        assert_eq!(a, b);
    }
}
