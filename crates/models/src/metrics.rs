//! Binary classification metrics computed on a holdout set.
//!
//! Every function takes the true labels `y` (0.0 / 1.0) and the predicted
//! probabilities of class 1 `p`, in the same order. A label counts as positive
//! when it is greater than 0.5, so exact 0.0 / 1.0 labels behave as expected.
//!
//! Preconditions (these functions take data produced inside modelbus, not raw
//! user input): `y.len() == p.len()` and every `p` is finite. A length mismatch
//! trips a `debug_assert!`; in release builds the extra tail of the longer slice
//! is ignored. The functions never panic in release builds.
//!
//! The ranking metrics ([`roc_auc`], [`pr_auc`]) sort once and are
//! O(n log n); the others are O(n).

use std::cmp::Ordering;

/// Summary of how well predicted probabilities separate a binary holdout set.
///
/// Labels are 0.0/1.0, `p` are predicted probabilities of class 1. Undefined
/// ranking metrics (one class only) are NaN, so compare with care: `NaN != NaN`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BinaryMetrics {
    /// Area under the ROC curve ([`roc_auc`]); NaN when only one class is present.
    pub roc_auc: f64,
    /// Average precision ([`pr_auc`]); NaN when there are no positives.
    pub pr_auc: f64,
    /// Mean negative log-likelihood ([`log_loss`]).
    pub log_loss: f64,
    /// Mean squared error of the probabilities ([`brier`]).
    pub brier: f64,
    /// Number of rows scored.
    pub n: usize,
    /// Number of rows whose label is positive.
    pub positives: usize,
}

/// Whether a label counts as the positive class.
fn is_positive(label: f64) -> bool {
    label > 0.5
}

/// Number of rows that both slices cover (they should be equal).
fn paired_len(y: &[f64], p: &[f64]) -> usize {
    debug_assert_eq!(y.len(), p.len(), "labels and predictions differ in length");
    y.len().min(p.len())
}

/// Normalises `-0.0` to `0.0` so that `total_cmp` treats the two as a tie.
fn score_key(v: f64) -> f64 {
    if v == 0.0 { 0.0 } else { v }
}

/// Indices `0..n` sorted by score, ascending or descending, ties in index order.
fn order_by_score(p: &[f64], n: usize, descending: bool) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    idx.sort_by(|&a, &b| {
        let ord = score_key(p[a]).total_cmp(&score_key(p[b]));
        if descending { ord.reverse() } else { ord }
    });
    idx
}

/// Whether two scores belong to the same tie group.
fn same_score(a: f64, b: f64) -> bool {
    score_key(a).total_cmp(&score_key(b)) == Ordering::Equal
}

/// Area under the ROC curve: the probability that a random positive is scored
/// above a random negative, counting ties as one half.
///
/// This is the Mann–Whitney U statistic with average ranks for tied scores,
/// equal to `sklearn.metrics.roc_auc_score`. Returns NaN when only one class is
/// present (the AUC is undefined). O(n log n).
pub fn roc_auc(y: &[f64], p: &[f64]) -> f64 {
    let n = paired_len(y, p);
    let order = order_by_score(p, n, false);
    // Walk tie groups in ascending score order. A positive in a group beats every
    // negative seen in earlier groups and ties with the negatives in its own group.
    let mut negatives_below = 0u64;
    let mut positives = 0u64;
    let mut pairs_won = 0.0f64; // counts ties as 0.5; stays exact below 2^52 pairs
    let mut start = 0;
    while start < n {
        let mut end = start + 1;
        while end < n && same_score(p[order[start]], p[order[end]]) {
            end += 1;
        }
        let group_pos = order[start..end]
            .iter()
            .filter(|&&i| is_positive(y[i]))
            .count() as u64;
        let group_neg = (end - start) as u64 - group_pos;
        pairs_won +=
            group_pos as f64 * negatives_below as f64 + 0.5 * group_pos as f64 * group_neg as f64;
        negatives_below += group_neg;
        positives += group_pos;
        start = end;
    }
    let negatives = negatives_below;
    if positives == 0 || negatives == 0 {
        return f64::NAN;
    }
    pairs_won / (positives as f64 * negatives as f64)
}

/// Average precision: the area under the precision–recall curve, computed
/// exactly as `sklearn.metrics.average_precision_score`.
///
/// Thresholds are the distinct scores in descending order; all rows sharing a
/// score enter together. The result is `sum_k (R_k - R_{k-1}) * P_k`, a step
/// function (no interpolation) with `R_0 = 0`. Returns NaN when there are no
/// positives (recall is undefined). O(n log n).
pub fn pr_auc(y: &[f64], p: &[f64]) -> f64 {
    let n = paired_len(y, p);
    let total_positives = y[..n].iter().filter(|&&v| is_positive(v)).count();
    if total_positives == 0 {
        return f64::NAN;
    }
    let order = order_by_score(p, n, true);
    let mut true_pos = 0usize;
    let mut seen = 0usize;
    let mut prev_recall = 0.0f64;
    let mut ap = 0.0f64;
    let mut start = 0;
    while start < n {
        let mut end = start + 1;
        while end < n && same_score(p[order[start]], p[order[end]]) {
            end += 1;
        }
        true_pos += order[start..end]
            .iter()
            .filter(|&&i| is_positive(y[i]))
            .count();
        seen += end - start;
        let recall = true_pos as f64 / total_positives as f64;
        let precision = true_pos as f64 / seen as f64;
        ap += (recall - prev_recall) * precision;
        prev_recall = recall;
        start = end;
    }
    ap
}

/// Mean negative log-likelihood (cross-entropy) of the labels under `p`.
///
/// Probabilities are clipped to `[1e-15, 1 - 1e-15]` so a confident mistake
/// costs about 34.5 instead of infinity. Returns NaN for empty input.
pub fn log_loss(y: &[f64], p: &[f64]) -> f64 {
    const EPS: f64 = 1e-15;
    let n = paired_len(y, p);
    if n == 0 {
        return f64::NAN;
    }
    let total: f64 = y[..n]
        .iter()
        .zip(&p[..n])
        .map(|(&label, &prob)| {
            let q = prob.clamp(EPS, 1.0 - EPS);
            if is_positive(label) {
                -q.ln()
            } else {
                -(-q).ln_1p()
            }
        })
        .sum();
    total / n as f64
}

/// Brier score: mean squared difference between `p` and the 0/1 label.
///
/// Lower is better; 0.25 is what a constant 0.5 prediction scores. Returns NaN
/// for empty input.
pub fn brier(y: &[f64], p: &[f64]) -> f64 {
    let n = paired_len(y, p);
    if n == 0 {
        return f64::NAN;
    }
    let total: f64 = y[..n]
        .iter()
        .zip(&p[..n])
        .map(|(&label, &prob)| {
            let target = if is_positive(label) { 1.0 } else { 0.0 };
            (prob - target) * (prob - target)
        })
        .sum();
    total / n as f64
}

/// All the metrics above in one [`BinaryMetrics`], plus row and positive counts.
pub fn binary_metrics(y: &[f64], p: &[f64]) -> BinaryMetrics {
    let n = paired_len(y, p);
    BinaryMetrics {
        roc_auc: roc_auc(y, p),
        pr_auc: pr_auc(y, p),
        log_loss: log_loss(y, p),
        brier: brier(y, p),
        n,
        positives: y[..n].iter().filter(|&&v| is_positive(v)).count(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    /// O(n^2) reference: fraction of (positive, negative) pairs ordered correctly,
    /// ties counted as one half.
    fn auc_by_pairs(y: &[f64], p: &[f64]) -> f64 {
        let mut won = 0.0;
        let mut pairs = 0.0;
        for i in 0..y.len() {
            for j in 0..y.len() {
                if y[i] == 1.0 && y[j] == 0.0 {
                    pairs += 1.0;
                    if p[i] > p[j] {
                        won += 1.0;
                    } else if p[i] == p[j] {
                        won += 0.5;
                    }
                }
            }
        }
        won / pairs
    }

    #[test]
    fn roc_auc_hand_computed() {
        let y = [0.0, 0.0, 1.0, 1.0];
        let p = [0.1, 0.4, 0.35, 0.8];
        assert!(close(roc_auc(&y, &p), 0.75, 1e-12));
    }

    #[test]
    fn roc_auc_ties_count_half() {
        // Every score tied: a coin toss.
        assert!(close(
            roc_auc(&[0.0, 1.0, 0.0, 1.0], &[0.5, 0.5, 0.5, 0.5]),
            0.5,
            1e-12
        ));
        // Positive at 0.5 ties one negative (0.5) and beats one (0.2); positive
        // at 0.9 beats both: (1.5 + 2) / 4.
        let y = [0.0, 1.0, 0.0, 1.0];
        let p = [0.2, 0.5, 0.5, 0.9];
        assert!(close(roc_auc(&y, &p), 0.875, 1e-12));
        // -0.0 and 0.0 are the same score.
        assert!(close(roc_auc(&[0.0, 1.0], &[0.0, -0.0]), 0.5, 1e-12));
    }

    #[test]
    fn roc_auc_matches_pairwise_reference_with_many_ties() {
        let y: Vec<f64> = (0..60)
            .map(|i| ((i * 7 + 3) % 5 < 2) as u8 as f64)
            .collect();
        let p: Vec<f64> = (0..60).map(|i| ((i * 13) % 7) as f64 / 7.0).collect();
        let expected = auc_by_pairs(&y, &p);
        assert!(close(roc_auc(&y, &p), expected, 1e-12));
        assert!(expected > 0.0 && expected < 1.0);
    }

    #[test]
    fn roc_auc_perfect_and_inverted() {
        let y = [0.0, 0.0, 1.0, 1.0, 0.0, 1.0];
        let perfect = [0.1, 0.2, 0.8, 0.9, 0.3, 0.7];
        let inverted: Vec<f64> = perfect.iter().map(|v| 1.0 - v).collect();
        assert_eq!(roc_auc(&y, &perfect), 1.0);
        assert_eq!(roc_auc(&y, &inverted), 0.0);
    }

    #[test]
    fn roc_auc_one_class_is_nan() {
        assert!(roc_auc(&[1.0, 1.0, 1.0], &[0.1, 0.5, 0.9]).is_nan());
        assert!(roc_auc(&[0.0, 0.0], &[0.1, 0.5]).is_nan());
        assert!(roc_auc(&[], &[]).is_nan());
    }

    #[test]
    fn pr_auc_hand_computed() {
        // Descending: 0.8 (+) P=1 R=.5; 0.4 (-); 0.35 (+) P=2/3 R=1.
        // AP = 0.5*1 + 0.5*2/3 = 5/6.
        let y = [0.0, 0.0, 1.0, 1.0];
        let p = [0.1, 0.4, 0.35, 0.8];
        assert!(close(pr_auc(&y, &p), 5.0 / 6.0, 1e-12));
        assert!(close(pr_auc(&y, &p), 0.8333333333, 1e-10));
    }

    #[test]
    fn pr_auc_ties_grouped_by_threshold() {
        // All tied: one threshold, P = 2/4, R = 1 -> AP = 0.5 (prevalence).
        assert!(close(
            pr_auc(&[1.0, 0.0, 1.0, 0.0], &[0.3, 0.3, 0.3, 0.3]),
            0.5,
            1e-12
        ));
        // Thresholds 0.9 {+}, 0.5 {+, -}, 0.1 {-}:
        // 0.9: P=1, R=.5 -> 0.5; 0.5: P=2/3, R=1 -> 0.5*2/3; 0.1: R unchanged.
        // Without grouping the tie, the order inside it would change the answer.
        let y = [1.0, 1.0, 0.0, 0.0];
        let p = [0.9, 0.5, 0.5, 0.1];
        assert!(close(pr_auc(&y, &p), 0.5 + 1.0 / 3.0, 1e-12));
        let y_swapped = [1.0, 0.0, 1.0, 0.0];
        let p_swapped = [0.9, 0.5, 0.5, 0.1];
        assert!(close(
            pr_auc(&y_swapped, &p_swapped),
            0.5 + 1.0 / 3.0,
            1e-12
        ));
    }

    #[test]
    fn pr_auc_perfect_inverted_and_no_positives() {
        let y = [0.0, 1.0, 0.0, 1.0, 0.0];
        let p = [0.1, 0.9, 0.2, 0.8, 0.3];
        assert_eq!(pr_auc(&y, &p), 1.0);
        // Inverted: positives ranked 4th and 5th: 0.5*(1/4) + 0.5*(2/5) = 0.325.
        let inverted: Vec<f64> = p.iter().map(|v| 1.0 - v).collect();
        assert!(close(pr_auc(&y, &inverted), 0.325, 1e-12));
        assert!(pr_auc(&[0.0, 0.0], &[0.2, 0.4]).is_nan());
        assert!(pr_auc(&[], &[]).is_nan());
        // Only positives: precision 1 everywhere.
        assert_eq!(pr_auc(&[1.0, 1.0], &[0.2, 0.4]), 1.0);
    }

    #[test]
    fn log_loss_hand_computed_and_clipped() {
        let y = [1.0, 0.0];
        let p = [0.8, 0.4];
        let expected = -(0.8f64.ln() + 0.6f64.ln()) / 2.0;
        assert!(close(log_loss(&y, &p), expected, 1e-12));
        // Perfect confident predictions cost (almost) nothing.
        assert!(log_loss(&[1.0, 0.0], &[1.0, 0.0]) < 1e-14);
        // A confident mistake is clipped at -ln(1e-15), not infinity.
        let worst = log_loss(&[1.0], &[0.0]);
        assert!(close(worst, -(1e-15f64).ln(), 1e-9), "{worst}");
        let worst_neg = log_loss(&[0.0], &[1.0]);
        assert!(worst_neg.is_finite() && worst_neg > 30.0, "{worst_neg}");
        assert!(log_loss(&[], &[]).is_nan());
    }

    #[test]
    fn brier_hand_computed() {
        let y = [1.0, 0.0, 1.0, 0.0];
        let p = [0.9, 0.2, 0.4, 0.5];
        // (0.01 + 0.04 + 0.36 + 0.25) / 4
        assert!(close(brier(&y, &p), 0.165, 1e-12));
        assert_eq!(brier(&[1.0, 0.0], &[1.0, 0.0]), 0.0);
        assert!(close(brier(&[1.0, 0.0], &[0.5, 0.5]), 0.25, 1e-12));
        assert!(brier(&[], &[]).is_nan());
    }

    #[test]
    fn binary_metrics_bundles_everything() {
        let y = [0.0, 0.0, 1.0, 1.0];
        let p = [0.1, 0.4, 0.35, 0.8];
        let m = binary_metrics(&y, &p);
        assert_eq!(m.n, 4);
        assert_eq!(m.positives, 2);
        assert!(close(m.roc_auc, 0.75, 1e-12));
        assert!(close(m.pr_auc, 5.0 / 6.0, 1e-12));
        assert!(close(m.log_loss, log_loss(&y, &p), 0.0));
        let expected_ll = -(0.9f64.ln() + 0.6f64.ln() + 0.35f64.ln() + 0.8f64.ln()) / 4.0;
        assert!(close(m.log_loss, expected_ll, 1e-12));
        let expected_brier = (0.01 + 0.16 + 0.4225 + 0.04) / 4.0;
        assert!(close(m.brier, expected_brier, 1e-12));

        let json = serde_json::to_string(&m).expect("serialise");
        let back: BinaryMetrics = serde_json::from_str(&json).expect("deserialise");
        // serde_json without `float_roundtrip` may be one ulp off when parsing.
        for (a, b) in [
            (back.roc_auc, m.roc_auc),
            (back.pr_auc, m.pr_auc),
            (back.log_loss, m.log_loss),
            (back.brier, m.brier),
        ] {
            assert!(
                close(a, b, 4.0 * f64::EPSILON * a.abs().max(b.abs())),
                "{a} vs {b}"
            );
        }
        assert_eq!((back.n, back.positives), (m.n, m.positives));
    }

    #[test]
    fn binary_metrics_one_class_has_nan_ranking_metrics() {
        let m = binary_metrics(&[0.0, 0.0, 0.0], &[0.1, 0.2, 0.3]);
        assert!(m.roc_auc.is_nan());
        assert!(m.pr_auc.is_nan());
        assert!(m.log_loss.is_finite());
        assert_eq!(m.positives, 0);
        assert_eq!(m.n, 3);
    }
}
