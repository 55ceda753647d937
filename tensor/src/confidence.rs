//! Turning a model's scores into a class and a confidence in [0, 1]: what a classifier
//! plugin reports, what a route's mapping reads from an upstream's raw scores, and what a
//! calibration run compares.

/// Softmax of `logits`, computed stably (the largest logit is subtracted first).
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|&l| (l - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// Index of the largest value (the first one on ties), or `None` if `values` is empty or
/// all NaN.
pub fn argmax(values: &[f32]) -> Option<usize> {
    values
        .iter()
        .enumerate()
        .filter(|(_, v)| !v.is_nan())
        .fold(None, |best: Option<(usize, f32)>, (i, &v)| match best {
            Some((_, b)) if b >= v => best,
            _ => Some((i, v)),
        })
        .map(|(i, _)| i)
}

/// The largest probability: confidence of the top class.
pub fn max_probability(probs: &[f32]) -> f32 {
    probs.iter().copied().fold(0.0, f32::max).clamp(0.0, 1.0)
}

/// Top probability minus the runner-up: 1 when one class takes all, 0 on a tie.
pub fn margin(probs: &[f32]) -> f32 {
    let (mut first, mut second) = (0.0f32, 0.0f32);
    for &p in probs {
        if p > first {
            second = first;
            first = p;
        } else if p > second {
            second = p;
        }
    }
    (first - second).clamp(0.0, 1.0)
}

/// One minus the normalised entropy of `probs`: 1 for a one-hot distribution, 0 for a
/// uniform one.
pub fn entropy_confidence(probs: &[f32]) -> f32 {
    if probs.len() < 2 {
        return 1.0;
    }
    let h: f32 = probs.iter().filter(|&&p| p > 0.0).map(|&p| -p * p.ln()).sum();
    (1.0 - h / (probs.len() as f32).ln()).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f32, b: f32) -> bool {
        (a - b).abs() < 1e-5
    }

    #[test]
    fn softmax_is_a_distribution_and_stable() {
        let p = softmax(&[1000.0, 1000.0, 999.0]);
        assert!(close(p.iter().sum(), 1.0));
        assert!(close(p[0], p[1]) && p[2] < p[0]);
        let q = softmax(&[0.0, 0.0_f32.ln_1p()]);
        assert!(close(q[0], 0.5));
    }

    #[test]
    fn argmax_picks_first_of_ties_and_skips_nan() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), Some(1));
        assert_eq!(argmax(&[f32::NAN, 2.0, 1.0]), Some(1));
        assert_eq!(argmax(&[]), None);
    }

    #[test]
    fn confidences_span_zero_to_one() {
        let sure = [1.0, 0.0, 0.0, 0.0];
        let unsure = [0.25; 4];
        assert!(close(max_probability(&sure), 1.0));
        assert!(close(max_probability(&unsure), 0.25));
        assert!(close(margin(&sure), 1.0));
        assert!(close(margin(&unsure), 0.0));
        assert!(close(margin(&[0.1, 0.6, 0.3]), 0.3));
        assert!(close(entropy_confidence(&sure), 1.0));
        assert!(close(entropy_confidence(&unsure), 0.0));
        let mid = entropy_confidence(&[0.7, 0.1, 0.1, 0.1]);
        assert!(mid > 0.0 && mid < 1.0);
    }
}
