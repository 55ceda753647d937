//! Whether the intervals mean what they say: how often a realised figure falls inside its
//! predicted 90% interval, measured on the examples at hand.
//!
//! One held-out check is one draw: a realised figure outside its 90% interval happens one
//! time in ten even when the method is right, and a fixed pair of splits gives the same
//! draw every run. Pooling the calibration and held-out examples and re-splitting them at
//! random many times (same sizes) repeats the whole procedure — bootstrap, recommend,
//! predict, check — on splits that are equally likely, so the share of re-splits whose
//! realised figure is inside its interval estimates the interval's real coverage: about 0.9
//! when the intervals are honest, lower when they are too narrow.

use super::curve::{Curve, Example};
use super::recommend::{Bootstrap, Goal, next};

/// How often the predictions held over random re-splits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Coverage {
    /// Re-splits measured.
    pub splits: usize,
    /// Share of re-splits whose held-out edge share fell inside its predicted interval.
    pub edge_share: f64,
    /// The same for the cascade's accuracy.
    pub accuracy: f64,
    /// Share of re-splits in which the goal itself held on the held-out part.
    pub goal_held: f64,
}

/// Re-splits `pool` `splits` times into `calib_len` examples to calibrate on and the rest
/// to check on; each calibration uses `resamples` bootstrap resamples. Deterministic for a
/// `seed`. `None` if either part would be empty.
pub fn coverage(
    pool: &[Example],
    calib_len: usize,
    goal: Goal,
    splits: usize,
    resamples: usize,
    seed: u64,
) -> Option<Coverage> {
    if calib_len == 0 || calib_len >= pool.len() || splits == 0 {
        return None;
    }
    let mut state = seed | 1;
    let mut shuffled = pool.to_vec();
    let (mut share_in, mut accuracy_in, mut held) = (0usize, 0usize, 0usize);
    for split in 0..splits {
        // Fisher–Yates.
        for i in (1..shuffled.len()).rev() {
            let j = (next(&mut state) % (i as u64 + 1)) as usize;
            shuffled.swap(i, j);
        }
        let (calib, rest) = shuffled.split_at(calib_len);
        let bootstrap = Bootstrap::new(calib, resamples, seed.wrapping_add(split as u64 + 1));
        let threshold = bootstrap.recommend(goal).threshold;
        let predicted = bootstrap.predict(threshold, rest.len());
        let checked = Curve::new(rest);
        let realised = checked.at(threshold);
        share_in += usize::from(predicted.edge_share.contains(realised.edge_share));
        accuracy_in += usize::from(predicted.accuracy.contains(realised.accuracy));
        held += usize::from(Bootstrap::holds_on(&checked, goal, threshold));
    }
    let share = |n: usize| n as f64 / splits as f64;
    Some(Coverage {
        splits,
        edge_share: share(share_in),
        accuracy: share(accuracy_in),
        goal_held: share(held),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Confidence spread over [0, 1); the edge is right more often the surer it is, the
    /// upstream right on all but every 50th example. Random, so that splits differ.
    fn pool(n: usize, seed: u64) -> Vec<Example> {
        let mut state = seed | 1;
        (0..n)
            .map(|i| {
                let confidence = (next(&mut state) % 10_000) as f64 / 10_000.0;
                let edge_right = (next(&mut state) % 10_000) as f64 / 10_000.0 < 0.5 + 0.5 * confidence;
                let upstream_right = i % 50 != 0;
                Example {
                    confidence,
                    edge_right,
                    upstream_right,
                    agree: edge_right == upstream_right,
                    weight: 1.0,
                }
            })
            .collect()
    }

    #[test]
    fn honest_intervals_cover_about_nine_splits_in_ten() {
        let examples = pool(1200, 3);
        let c = coverage(&examples, 600, Goal::TargetAccuracy(0.9), 150, 200, 5).unwrap();
        eprintln!("{c:?}");
        assert_eq!(c.splits, 150);
        // Over 150 splits a 90% coverage reads 0.90 ± 0.025 (one standard error). Intervals
        // not widened for the held-out part's own noise would cover about 0.76.
        assert!((0.82..=0.97).contains(&c.edge_share), "{c:?}");
        // The threshold is picked on the same examples its accuracy is estimated from, so
        // its accuracy interval covers a little less (0.875 over 400 splits).
        assert!((0.78..=0.97).contains(&c.accuracy), "{c:?}");
        // The goal holds in 90% of resamples, i.e. for the accuracy the examples stand for;
        // a finite held-out part adds its own noise, so it is met there less often.
        assert!(c.goal_held >= 0.6, "{c:?}");
    }

    #[test]
    fn intervals_narrowed_by_too_few_resamples_are_seen_to_miss() {
        // One resample gives a zero-width interval around one draw: it almost never covers.
        let examples = pool(1200, 4);
        let c = coverage(&examples, 600, Goal::TargetAccuracy(0.9), 40, 1, 6).unwrap();
        assert!(c.edge_share < 0.3, "{c:?}");
    }

    #[test]
    fn nothing_to_split_is_none() {
        let examples = pool(10, 1);
        assert!(coverage(&examples, 0, Goal::MaxLoss(0.01), 5, 10, 1).is_none());
        assert!(coverage(&examples, 10, Goal::MaxLoss(0.01), 5, 10, 1).is_none());
        assert!(coverage(&examples, 5, Goal::MaxLoss(0.01), 0, 10, 1).is_none());
    }
}
