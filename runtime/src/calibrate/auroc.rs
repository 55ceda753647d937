//! Which confidence measure separates right answers from wrong ones best: the area under
//! the ROC curve, the chance that a right answer scores above a wrong one (ties count half).
//! 0.5 is a coin; 1 separates them perfectly.

/// AUROC of `scores`, `right[i]` saying whether answer `i` was right. `None` when there are
/// no right or no wrong answers to compare.
pub fn auroc(scores: &[f64], right: &[bool]) -> Option<f64> {
    let mut ranked: Vec<(f64, bool)> = scores.iter().copied().zip(right.iter().copied()).collect();
    ranked.sort_by(|a, b| a.0.total_cmp(&b.0));
    let positives = ranked.iter().filter(|(_, r)| *r).count();
    let negatives = ranked.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    // Mann-Whitney: the sum of the right answers' ranks, ties given their average rank.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < ranked.len() {
        let mut j = i;
        while j < ranked.len() && ranked[j].0 == ranked[i].0 {
            j += 1;
        }
        let average_rank = (i + j + 1) as f64 / 2.0;
        rank_sum += average_rank * ranked[i..j].iter().filter(|(_, r)| *r).count() as f64;
        i = j;
    }
    let (p, n) = (positives as f64, negatives as f64);
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_random_and_tied_scores() {
        assert_eq!(auroc(&[0.1, 0.2, 0.8, 0.9], &[false, false, true, true]), Some(1.0));
        assert_eq!(auroc(&[0.9, 0.8, 0.2, 0.1], &[false, false, true, true]), Some(0.0));
        assert_eq!(auroc(&[0.5; 4], &[false, true, false, true]), Some(0.5));
        assert_eq!(auroc(&[0.1, 0.4, 0.35, 0.8], &[false, true, false, true]), Some(1.0));
        assert_eq!(auroc(&[0.1, 0.2], &[true, true]), None);
    }
}
