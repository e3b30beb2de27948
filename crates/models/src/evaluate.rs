//! The evaluation report of a trained model on its holdout rows, and the
//! champion/challenger comparison.
//!
//! [`evaluate`] computes ROC AUC with a bootstrap confidence interval, PR AUC,
//! log loss, Brier score, expected calibration error with its reliability table,
//! the confusion matrix at a threshold chosen by a [`ThresholdRule`], metrics per
//! slice and the top feature importances. [`compare`] evaluates the current
//! champion's predictions on the same holdout rows and reports the differences,
//! with a paired bootstrap interval of the AUC difference.
//!
//! Conventions follow [`crate::metrics`]: labels are 0.0/1.0 (a label counts as
//! positive when greater than 0.5), `p` are predicted probabilities of class 1,
//! both in the same row order. Lengths should match; if they do not, only the
//! common prefix is used. Nothing here panics on empty or one-class input: the
//! undefined metrics are NaN, and NaN is written to JSON as `null` and read back
//! as NaN (see [`nan_as_null`]).
//!
//! Bootstrap: the percentile method. Each resample draws `n` row indices with
//! replacement from one `ChaCha8Rng::seed_from_u64(seed)`; resamples with a
//! single class are skipped (their AUC is undefined). The rows are ranked once,
//! and each resample's AUC is computed from per-row multiplicities in one O(n)
//! pass over that ranking, so a bootstrap costs O(n log n + B · n) and gives the
//! same AUC, bit for bit, as [`roc_auc`] on the materialised resample.

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::metrics::{brier, log_loss, pr_auc, roc_auc};
pub use modelbus_dataset::spec::{
    EvaluationConfig, MAX_BOOTSTRAP_SAMPLES, MAX_CALIBRATION_BINS, ThresholdRule,
};

/// Largest number of points kept in [`Evaluation::roc_curve`].
pub const MAX_ROC_POINTS: usize = 200;

/// Largest number of features kept in [`Evaluation::feature_importance`].
pub const MAX_IMPORTANCE_FEATURES: usize = 30;

/// Serde helper for `f64` fields that may be NaN or infinite: JSON has no such
/// numbers, so they are written as `null`, and `null` is read back as NaN.
///
/// Use with `#[serde(with = "nan_as_null")]`. Infinities also come back as NaN.
pub mod nan_as_null {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes a finite value as a number and anything else as `null`.
    pub fn serialize<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
        if value.is_finite() {
            serializer.serialize_f64(*value)
        } else {
            serializer.serialize_none()
        }
    }

    /// Reads a number, or `null` as NaN.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(deserializer)?.unwrap_or(f64::NAN))
    }
}

/// A two-sided confidence interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// Lower bound; NaN when it could not be computed (no usable resample).
    #[serde(with = "nan_as_null")]
    pub low: f64,
    /// Upper bound; NaN when it could not be computed.
    #[serde(with = "nan_as_null")]
    pub high: f64,
    /// Confidence level, e.g. 0.95.
    pub confidence: f64,
}

/// One row of the reliability table: the predictions that fell in one bin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReliabilityBin {
    /// Lower edge of the bin (inclusive).
    pub lower: f64,
    /// Upper edge of the bin (exclusive, except 1.0 for the last bin).
    pub upper: f64,
    /// Rows whose prediction fell in the bin.
    pub count: usize,
    /// Mean predicted probability in the bin; NaN when the bin is empty.
    #[serde(with = "nan_as_null")]
    pub mean_predicted: f64,
    /// Fraction of positive labels in the bin; NaN when the bin is empty.
    #[serde(with = "nan_as_null")]
    pub fraction_positive: f64,
}

/// The confusion matrix at the chosen threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Confusion {
    /// Rows with `p >= threshold` are predicted positive.
    pub threshold: f64,
    /// Positives predicted positive.
    pub true_positive: usize,
    /// Negatives predicted positive.
    pub false_positive: usize,
    /// Negatives predicted negative.
    pub true_negative: usize,
    /// Positives predicted negative.
    pub false_negative: usize,
    /// TP / (TP + FP), 0 when nothing is predicted positive.
    pub precision: f64,
    /// TP / (TP + FN), 0 when there are no positives.
    pub recall: f64,
    /// 2TP / (2TP + FP + FN), 0 when that is 0 / 0.
    pub f1: f64,
    /// (TP + TN) / n, 0 for no rows.
    pub accuracy: f64,
    /// With the cost rule: total cost / n (the cost per row).
    pub expected_cost: Option<f64>,
}

/// Metrics on the holdout rows that share one value of a slice column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SliceMetrics {
    /// The slice column, e.g. `Contract`.
    pub column: String,
    /// The value shared by the rows, e.g. `Month-to-month`.
    pub value: String,
    /// Rows in the slice.
    pub rows: usize,
    /// Positive rows in the slice.
    pub positives: usize,
    /// ROC AUC; NaN when the slice has only one class.
    #[serde(with = "nan_as_null")]
    pub roc_auc: f64,
    /// PR AUC (average precision); NaN when the slice has no positives.
    #[serde(with = "nan_as_null")]
    pub pr_auc: f64,
    /// Log loss.
    #[serde(with = "nan_as_null")]
    pub log_loss: f64,
    /// Brier score.
    #[serde(with = "nan_as_null")]
    pub brier: f64,
}

/// The evaluation of one model's predictions on the holdout rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Holdout rows.
    pub rows: usize,
    /// Positive holdout rows.
    pub positives: usize,
    /// ROC AUC; NaN with one class.
    #[serde(with = "nan_as_null")]
    pub roc_auc: f64,
    /// Bootstrap percentile interval of the ROC AUC.
    pub roc_auc_interval: Interval,
    /// The ROC curve as (false positive rate, true positive rate) points from
    /// (0, 0) to (1, 1), one per distinct score, evenly thinned to at most
    /// [`MAX_ROC_POINTS`]; empty with one class.
    pub roc_curve: Vec<(f64, f64)>,
    /// PR AUC (average precision); NaN without positives.
    #[serde(with = "nan_as_null")]
    pub pr_auc: f64,
    /// Log loss.
    #[serde(with = "nan_as_null")]
    pub log_loss: f64,
    /// Brier score.
    #[serde(with = "nan_as_null")]
    pub brier: f64,
    /// Expected calibration error over [`Evaluation::reliability`].
    #[serde(with = "nan_as_null")]
    pub ece: f64,
    /// The reliability table, one bin per row, empty bins included.
    pub reliability: Vec<ReliabilityBin>,
    /// The rule that chose [`Evaluation::confusion`]'s threshold.
    pub threshold_rule: ThresholdRule,
    /// The confusion matrix at the chosen threshold.
    pub confusion: Confusion,
    /// Metrics per slice: slice columns in the given order, values sorted.
    pub slices: Vec<SliceMetrics>,
    /// Feature importances, largest first (ties by name), at most
    /// [`MAX_IMPORTANCE_FEATURES`]; non-finite values are dropped.
    pub feature_importance: Vec<(String, f64)>,
}

/// The new model against the current champion on the same holdout rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// The champion's model name.
    pub champion_model: String,
    /// The champion's version.
    pub champion_version: u32,
    /// The full evaluation of the champion's predictions (without feature
    /// importance).
    pub champion: Evaluation,
    /// Challenger ROC AUC minus champion ROC AUC (higher is better).
    #[serde(with = "nan_as_null")]
    pub delta_roc_auc: f64,
    /// Challenger PR AUC minus champion PR AUC (higher is better).
    #[serde(with = "nan_as_null")]
    pub delta_pr_auc: f64,
    /// Challenger log loss minus champion log loss (lower is better).
    #[serde(with = "nan_as_null")]
    pub delta_log_loss: f64,
    /// Challenger Brier minus champion Brier (lower is better).
    #[serde(with = "nan_as_null")]
    pub delta_brier: f64,
    /// Challenger ECE minus champion ECE (lower is better).
    #[serde(with = "nan_as_null")]
    pub delta_ece: f64,
    /// Paired bootstrap interval of the ROC AUC difference (challenger minus
    /// champion), both models scored on the same resamples.
    pub paired_roc_auc_interval: Interval,
}

/// The evaluation report stored as an artifact and shown by the registry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluationReport {
    /// The evaluated model's name.
    pub model: String,
    /// The evaluated model's version.
    pub version: u32,
    /// Its evaluation on the holdout.
    pub evaluation: Evaluation,
    /// The comparison with the champion, when there is one.
    pub comparison: Option<Comparison>,
}

/// A slice column of the holdout: one value per holdout row, in row order.
#[derive(Debug, Clone, Copy)]
pub struct Slice<'a> {
    /// The column name.
    pub column: &'a str,
    /// One value per holdout row.
    pub values: &'a [String],
}

/// Whether a label counts as the positive class (as in [`crate::metrics`]).
fn is_positive(label: f64) -> bool {
    label > 0.5
}

/// Normalises `-0.0` to `0.0` so that `total_cmp` treats the two as a tie.
fn score_key(v: f64) -> f64 {
    if v == 0.0 { 0.0 } else { v }
}

/// Rows ranked by ascending score once, reused for every bootstrap resample.
struct Ranking {
    /// Row indices in ascending score order.
    order: Vec<usize>,
    /// Whether the row at each ranked position is positive.
    positive: Vec<bool>,
    /// End (exclusive) of each tie group in `order`.
    group_ends: Vec<usize>,
}

impl Ranking {
    fn new(y: &[f64], p: &[f64]) -> Self {
        let n = y.len().min(p.len());
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| score_key(p[a]).total_cmp(&score_key(p[b])));
        let positive = order.iter().map(|&i| is_positive(y[i])).collect();
        let mut group_ends = Vec::new();
        for k in 1..=n {
            if k == n
                || score_key(p[order[k - 1]])
                    .total_cmp(&score_key(p[order[k]]))
                    .is_ne()
            {
                group_ends.push(k);
            }
        }
        Self {
            order,
            positive,
            group_ends,
        }
    }

    /// ROC AUC of the resample in which row `i` appears `weights[i]` times.
    ///
    /// Counts twice the won pairs in integers, so the result equals
    /// [`roc_auc`] on the materialised resample exactly. NaN with one class.
    fn weighted_auc(&self, weights: &[u32]) -> f64 {
        let mut negatives_below = 0u64;
        let mut positives = 0u64;
        let mut twice_won = 0u64;
        let mut start = 0;
        for &end in &self.group_ends {
            let (mut group_pos, mut group_neg) = (0u64, 0u64);
            for k in start..end {
                let w = u64::from(weights[self.order[k]]);
                if self.positive[k] {
                    group_pos += w;
                } else {
                    group_neg += w;
                }
            }
            twice_won += 2 * group_pos * negatives_below + group_pos * group_neg;
            negatives_below += group_neg;
            positives += group_pos;
            start = end;
        }
        if positives == 0 || negatives_below == 0 {
            return f64::NAN;
        }
        twice_won as f64 / (2 * positives * negatives_below) as f64
    }

    /// The ROC curve, (FPR, TPR) from (0, 0), one point per tie group walking
    /// down the scores; empty with one class.
    fn roc_curve(&self) -> Vec<(f64, f64)> {
        let total_pos = self.positive.iter().filter(|&&b| b).count();
        let total_neg = self.positive.len() - total_pos;
        if total_pos == 0 || total_neg == 0 {
            return Vec::new();
        }
        let mut points = vec![(0.0, 0.0)];
        let (mut tp, mut fp) = (0usize, 0usize);
        let mut end = self.order.len();
        for g in (0..self.group_ends.len()).rev() {
            let start = if g == 0 { 0 } else { self.group_ends[g - 1] };
            for k in start..end {
                if self.positive[k] {
                    tp += 1;
                } else {
                    fp += 1;
                }
            }
            points.push((fp as f64 / total_neg as f64, tp as f64 / total_pos as f64));
            end = start;
        }
        thin(points, MAX_ROC_POINTS)
    }
}

/// Keeps at most `max` points, evenly spaced by index, first and last included.
fn thin(points: Vec<(f64, f64)>, max: usize) -> Vec<(f64, f64)> {
    if points.len() <= max || max < 2 {
        return points;
    }
    let last = points.len() - 1;
    (0..max)
        .map(|k| points[(k * last + (max - 1) / 2) / (max - 1)])
        .collect()
}

/// Runs `samples` bootstrap resamples of `n` rows and returns `statistic` of
/// each resample that has both classes (and a finite statistic).
///
/// `statistic` receives the multiplicity of every row in the resample.
fn bootstrap<F: FnMut(&[u32]) -> f64>(
    y: &[f64],
    samples: usize,
    seed: u64,
    mut statistic: F,
) -> Vec<f64> {
    let n = y.len();
    let total_pos = y.iter().filter(|&&v| is_positive(v)).count();
    if n == 0 || total_pos == 0 || total_pos == n {
        return Vec::new();
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut weights = vec![0u32; n];
    let mut stats = Vec::with_capacity(samples);
    for _ in 0..samples {
        weights.fill(0);
        let mut positives = 0usize;
        for _ in 0..n {
            let i = rng.random_range(0..n);
            weights[i] += 1;
            positives += usize::from(is_positive(y[i]));
        }
        if positives == 0 || positives == n {
            continue;
        }
        let value = statistic(&weights);
        if value.is_finite() {
            stats.push(value);
        }
    }
    stats
}

/// Linear-interpolation quantile (numpy's default) of sorted values.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let below = pos.floor() as usize;
    let above = (below + 1).min(sorted.len() - 1);
    let frac = pos - below as f64;
    sorted[below] + frac * (sorted[above] - sorted[below])
}

/// Percentile interval of bootstrap statistics; NaN bounds when there are none.
fn percentile_interval(mut stats: Vec<f64>, confidence: f64) -> Interval {
    if stats.is_empty() {
        return Interval {
            low: f64::NAN,
            high: f64::NAN,
            confidence,
        };
    }
    stats.sort_by(f64::total_cmp);
    let alpha = 1.0 - confidence;
    Interval {
        low: quantile(&stats, alpha / 2.0),
        high: quantile(&stats, 1.0 - alpha / 2.0),
        confidence,
    }
}

/// Expected calibration error and the reliability table over `bins`
/// equal-width bins on `[0, 1]` (at least one).
///
/// A prediction `p` falls in bin `floor(p * bins)` (the last bin includes 1.0;
/// values outside `[0, 1]` are clamped). ECE = sum over bins of
/// `count / n * |mean_predicted - fraction_positive|`. Empty bins are reported
/// with count 0 and NaN means. ECE is NaN for no rows.
pub fn expected_calibration_error(y: &[f64], p: &[f64], bins: usize) -> (f64, Vec<ReliabilityBin>) {
    let bins = bins.max(1);
    let n = y.len().min(p.len());
    let mut count = vec![0usize; bins];
    let mut sum_p = vec![0.0f64; bins];
    let mut sum_pos = vec![0usize; bins];
    for (&label, &prob) in y[..n].iter().zip(&p[..n]) {
        let b = ((prob.clamp(0.0, 1.0) * bins as f64) as usize).min(bins - 1);
        count[b] += 1;
        sum_p[b] += prob;
        sum_pos[b] += usize::from(is_positive(label));
    }
    let mut ece = 0.0;
    let table = (0..bins)
        .map(|b| {
            let (mean_predicted, fraction_positive) = if count[b] == 0 {
                (f64::NAN, f64::NAN)
            } else {
                let c = count[b] as f64;
                (sum_p[b] / c, sum_pos[b] as f64 / c)
            };
            if count[b] > 0 {
                ece += count[b] as f64 / n as f64 * (mean_predicted - fraction_positive).abs();
            }
            ReliabilityBin {
                lower: b as f64 / bins as f64,
                upper: (b + 1) as f64 / bins as f64,
                count: count[b],
                mean_predicted,
                fraction_positive,
            }
        })
        .collect();
    if n == 0 {
        ece = f64::NAN;
    }
    (ece, table)
}

/// Ratio that is 0 when the denominator is 0.
fn ratio(num: usize, den: usize) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

/// The confusion matrix when rows with `p >= threshold` are predicted positive.
fn confusion_at(y: &[f64], p: &[f64], threshold: f64, expected_cost: Option<f64>) -> Confusion {
    let (mut tp, mut fp, mut tn, mut fn_) = (0, 0, 0, 0);
    for (&label, &prob) in y.iter().zip(p) {
        match (is_positive(label), prob >= threshold) {
            (true, true) => tp += 1,
            (false, true) => fp += 1,
            (false, false) => tn += 1,
            (true, false) => fn_ += 1,
        }
    }
    Confusion {
        threshold,
        true_positive: tp,
        false_positive: fp,
        true_negative: tn,
        false_negative: fn_,
        precision: ratio(tp, tp + fp),
        recall: ratio(tp, tp + fn_),
        f1: ratio(2 * tp, 2 * tp + fp + fn_),
        accuracy: ratio(tp + tn, tp + fp + tn + fn_),
        expected_cost,
    }
}

/// Chooses the decision threshold by `rule` and returns the confusion matrix
/// there.
///
/// - `MaxF1`: each distinct predicted probability is a candidate threshold;
///   the one with the highest F1 wins, ties going to the higher threshold.
/// - `Cost`: candidates are the distinct probabilities plus one threshold
///   above them all (nothing predicted positive); the one minimising
///   `false_positive * FP + false_negative * FN` wins, ties going to the higher
///   threshold, and `expected_cost` is that total divided by the row count.
/// - `Fixed`: the given value.
///
/// With no rows the threshold is 0.5 (or the fixed value) and every count is 0.
pub fn choose_threshold(y: &[f64], p: &[f64], rule: &ThresholdRule) -> Confusion {
    let n = y.len().min(p.len());
    let (y, p) = (&y[..n], &p[..n]);
    if let ThresholdRule::Fixed { value } = rule {
        return confusion_at(y, p, *value, None);
    }
    if n == 0 {
        let cost = matches!(rule, ThresholdRule::Cost { .. }).then_some(0.0);
        return confusion_at(y, p, 0.5, cost);
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| score_key(p[b]).total_cmp(&score_key(p[a])));
    let total_pos = y.iter().filter(|&&v| is_positive(v)).count();
    // Walk tie groups from the highest score down; after a group, everything
    // scored at or above it is predicted positive.
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut candidates = Vec::new(); // (threshold, tp, fp)
    let mut start = 0;
    while start < n {
        let mut end = start + 1;
        while end < n
            && score_key(p[order[start]])
                .total_cmp(&score_key(p[order[end]]))
                .is_eq()
        {
            end += 1;
        }
        for &i in &order[start..end] {
            if is_positive(y[i]) {
                tp += 1;
            } else {
                fp += 1;
            }
        }
        candidates.push((p[order[start]], tp, fp));
        start = end;
    }
    match rule {
        ThresholdRule::MaxF1 => {
            let mut best = candidates[0];
            let mut best_f1 = -1.0;
            for &(t, tp, fp) in &candidates {
                let f1 = ratio(2 * tp, tp + fp + total_pos);
                if f1 > best_f1 {
                    best_f1 = f1;
                    best = (t, tp, fp);
                }
            }
            confusion_at(y, p, best.0, None)
        }
        ThresholdRule::Cost {
            false_positive,
            false_negative,
        } => {
            let max = p[order[0]];
            let above_all = if max < 1.0 { 1.0 } else { max.next_up() };
            let cost = |tp: usize, fp: usize| {
                false_positive * fp as f64 + false_negative * (total_pos - tp) as f64
            };
            let mut best_t = above_all;
            let mut best_cost = cost(0, 0);
            for &(t, tp, fp) in &candidates {
                let c = cost(tp, fp);
                if c < best_cost {
                    best_cost = c;
                    best_t = t;
                }
            }
            confusion_at(y, p, best_t, Some(best_cost / n as f64))
        }
        ThresholdRule::Fixed { .. } => unreachable!("handled above"),
    }
}

/// Metrics per value of every slice column, values in sorted order.
fn slice_metrics(y: &[f64], p: &[f64], slices: &[Slice<'_>]) -> Vec<SliceMetrics> {
    let mut out = Vec::new();
    for slice in slices {
        let mut groups: BTreeMap<&str, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
        for ((value, &label), &prob) in slice.values.iter().zip(y).zip(p) {
            let group = groups.entry(value.as_str()).or_default();
            group.0.push(label);
            group.1.push(prob);
        }
        for (value, (ys, ps)) in groups {
            out.push(SliceMetrics {
                column: slice.column.to_string(),
                value: value.to_string(),
                rows: ys.len(),
                positives: ys.iter().filter(|&&v| is_positive(v)).count(),
                roc_auc: roc_auc(&ys, &ps),
                pr_auc: pr_auc(&ys, &ps),
                log_loss: log_loss(&ys, &ps),
                brier: brier(&ys, &ps),
            });
        }
    }
    out
}

/// Finite importances, largest first (ties by name), at most
/// [`MAX_IMPORTANCE_FEATURES`].
fn top_importance(importance: &[(String, f64)]) -> Vec<(String, f64)> {
    let mut top: Vec<(String, f64)> = importance
        .iter()
        .filter(|(_, v)| v.is_finite())
        .cloned()
        .collect();
    top.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    top.truncate(MAX_IMPORTANCE_FEATURES);
    top
}

/// Evaluates predictions `p` against labels `y` on the holdout.
///
/// `slices` give per-row values of the spec's slice columns (a slice's values
/// beyond the row count are ignored, missing ones leave rows out of that
/// column's slices); `importance` is the trained model's feature importance.
/// Deterministic for the same inputs and `config.seed`.
pub fn evaluate(
    y: &[f64],
    p: &[f64],
    slices: &[Slice<'_>],
    importance: &[(String, f64)],
    config: &EvaluationConfig,
) -> Evaluation {
    let n = y.len().min(p.len());
    let (y, p) = (&y[..n], &p[..n]);
    let ranking = Ranking::new(y, p);
    let stats = bootstrap(y, config.bootstrap_samples, config.seed, |w| {
        ranking.weighted_auc(w)
    });
    let (ece, reliability) = expected_calibration_error(y, p, config.calibration_bins);
    Evaluation {
        rows: n,
        positives: y.iter().filter(|&&v| is_positive(v)).count(),
        roc_auc: roc_auc(y, p),
        roc_auc_interval: percentile_interval(stats, config.effective_confidence()),
        roc_curve: ranking.roc_curve(),
        pr_auc: pr_auc(y, p),
        log_loss: log_loss(y, p),
        brier: brier(y, p),
        ece,
        reliability,
        threshold_rule: config.threshold.clone(),
        confusion: choose_threshold(y, p, &config.threshold),
        slices: slice_metrics(y, p, slices),
        feature_importance: top_importance(importance),
    }
}

/// Compares the challenger's predictions with the champion's on the same
/// holdout rows: evaluates the champion in full and reports challenger minus
/// champion for every metric, with a paired bootstrap interval of the AUC
/// difference (the same resamples score both models).
pub fn compare(
    y: &[f64],
    challenger: &[f64],
    champion: &[f64],
    champion_model: &str,
    champion_version: u32,
    slices: &[Slice<'_>],
    config: &EvaluationConfig,
) -> Comparison {
    let n = y.len().min(challenger.len()).min(champion.len());
    let (y, challenger, champion) = (&y[..n], &challenger[..n], &champion[..n]);
    let champion_eval = evaluate(y, champion, slices, &[], config);
    let challenger_rank = Ranking::new(y, challenger);
    let champion_rank = Ranking::new(y, champion);
    let stats = bootstrap(y, config.bootstrap_samples, config.seed, |w| {
        challenger_rank.weighted_auc(w) - champion_rank.weighted_auc(w)
    });
    let (challenger_ece, _) = expected_calibration_error(y, challenger, config.calibration_bins);
    Comparison {
        champion_model: champion_model.to_string(),
        champion_version,
        delta_roc_auc: roc_auc(y, challenger) - champion_eval.roc_auc,
        delta_pr_auc: pr_auc(y, challenger) - champion_eval.pr_auc,
        delta_log_loss: log_loss(y, challenger) - champion_eval.log_loss,
        delta_brier: brier(y, challenger) - champion_eval.brier,
        delta_ece: challenger_ece - champion_eval.ece,
        paired_roc_auc_interval: percentile_interval(stats, config.effective_confidence()),
        champion: champion_eval,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    /// Labels with about 27 % positives and noisy, informative probabilities.
    fn synthetic(n: usize, seed: u64) -> (Vec<f64>, Vec<f64>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut y = Vec::with_capacity(n);
        let mut p = Vec::with_capacity(n);
        for _ in 0..n {
            let label = if rng.random::<f64>() < 0.27 { 1.0 } else { 0.0 };
            let noise: f64 = (0..3).map(|_| rng.random::<f64>()).sum::<f64>() - 1.5;
            let logit = 1.5 * (2.0 * label - 1.0) - 1.0 + 2.0 * noise;
            y.push(label);
            p.push(1.0 / (1.0 + (-logit).exp()));
        }
        (y, p)
    }

    #[test]
    fn ece_hand_computed_with_empty_bins() {
        let y = [0.0, 1.0, 1.0, 0.0, 1.0];
        let p = [0.1, 0.15, 0.8, 0.85, 0.9];
        // Bin [0, .25): mean .125, 1/2 positive -> 2/5 * .375 = .15.
        // Bin [.75, 1]: mean .85, 2/3 positive -> 3/5 * (.85 - 2/3) = .11.
        let (ece, table) = expected_calibration_error(&y, &p, 4);
        assert!(close(ece, 0.26, 1e-12), "{ece}");
        let counts: Vec<usize> = table.iter().map(|b| b.count).collect();
        assert_eq!(counts, [2, 0, 0, 3]);
        assert!(close(table[0].mean_predicted, 0.125, 1e-12));
        assert!(close(table[0].fraction_positive, 0.5, 1e-12));
        assert!(close(table[3].mean_predicted, 0.85, 1e-12));
        assert!(close(table[3].fraction_positive, 2.0 / 3.0, 1e-12));
        assert!(table[1].mean_predicted.is_nan() && table[2].fraction_positive.is_nan());
        assert_eq!((table[1].lower, table[1].upper), (0.25, 0.5));
        assert_eq!(table[3].upper, 1.0);
        // 1.0 falls in the last bin; perfectly calibrated extremes cost nothing.
        let (ece, table) = expected_calibration_error(&[1.0, 0.0], &[1.0, 0.0], 10);
        assert_eq!(ece, 0.0);
        assert_eq!((table[0].count, table[9].count), (1, 1));
        assert!(expected_calibration_error(&[], &[], 10).0.is_nan());
    }

    #[test]
    fn max_f1_tiny_case() {
        // Thresholds .9 .8 .7 .6 .3 .2 give F1 1/2, 4/5, 2/3, 6/7, 3/4, 2/3.
        let y = [1.0, 1.0, 0.0, 1.0, 0.0, 0.0];
        let p = [0.9, 0.8, 0.7, 0.6, 0.3, 0.2];
        let c = choose_threshold(&y, &p, &ThresholdRule::MaxF1);
        assert_eq!(c.threshold, 0.6);
        assert_eq!(
            (
                c.true_positive,
                c.false_positive,
                c.true_negative,
                c.false_negative
            ),
            (3, 1, 2, 0)
        );
        assert!(close(c.f1, 6.0 / 7.0, 1e-12));
        assert!(close(c.precision, 0.75, 1e-12));
        assert_eq!(c.recall, 1.0);
        assert!(close(c.accuracy, 5.0 / 6.0, 1e-12));
        assert_eq!(c.expected_cost, None);
    }

    #[test]
    fn max_f1_tie_goes_to_the_higher_threshold() {
        // Threshold .9: TP 1, FN 1 -> F1 2/3; threshold .6: TP 2, FP 2 -> F1 2/3.
        let y = [1.0, 0.0, 0.0, 1.0];
        let p = [0.9, 0.8, 0.7, 0.6];
        let c = choose_threshold(&y, &p, &ThresholdRule::MaxF1);
        assert_eq!(c.threshold, 0.9);
        assert!(close(c.f1, 2.0 / 3.0, 1e-12));
    }

    #[test]
    fn cost_rule_moves_threshold_down_when_false_negatives_cost_more() {
        let y = [1.0, 1.0, 0.0, 1.0, 0.0, 0.0];
        let p = [0.9, 0.8, 0.7, 0.6, 0.3, 0.2];
        let even = ThresholdRule::Cost {
            false_positive: 1.0,
            false_negative: 1.0,
        };
        // Equal costs: .8 and .6 both make one mistake; the higher one wins.
        let c_even = choose_threshold(&y, &p, &even);
        assert_eq!(c_even.threshold, 0.8);
        assert_eq!(c_even.expected_cost, Some(1.0 / 6.0));
        let fn_expensive = ThresholdRule::Cost {
            false_positive: 1.0,
            false_negative: 10.0,
        };
        let c_fn = choose_threshold(&y, &p, &fn_expensive);
        assert_eq!(c_fn.threshold, 0.6);
        assert_eq!(c_fn.false_negative, 0);
        assert_eq!(c_fn.expected_cost, Some(1.0 / 6.0));
        assert!(c_fn.threshold < c_even.threshold);
        // Costly false positives: the threshold rises to the last one without any.
        let fp_expensive = ThresholdRule::Cost {
            false_positive: 100.0,
            false_negative: 0.1,
        };
        let c_fp = choose_threshold(&y, &p, &fp_expensive);
        assert_eq!(c_fp.threshold, 0.8);
        assert_eq!((c_fp.true_positive, c_fp.false_positive), (2, 0));
        assert!(close(c_fp.expected_cost.unwrap(), 0.1 / 6.0, 1e-12));
        // When the top score is a negative, predicting nothing positive wins.
        let c_none = choose_threshold(&[0.0, 1.0], &[0.9, 0.5], &fp_expensive);
        assert_eq!(c_none.threshold, 1.0);
        assert_eq!((c_none.true_positive, c_none.false_positive), (0, 0));
        assert!(close(c_none.expected_cost.unwrap(), 0.1 / 2.0, 1e-12));
        // Nothing positive even when a prediction is exactly 1.0.
        let c_one = choose_threshold(&[0.0, 1.0], &[1.0, 0.5], &fp_expensive);
        assert!(c_one.threshold > 1.0);
        assert_eq!(c_one.false_positive, 0);
    }

    #[test]
    fn fixed_threshold_and_empty_input() {
        let y = [1.0, 0.0, 1.0, 0.0];
        let p = [0.7, 0.5, 0.4, 0.2];
        let c = choose_threshold(&y, &p, &ThresholdRule::Fixed { value: 0.5 });
        assert_eq!(c.threshold, 0.5);
        assert_eq!(
            (
                c.true_positive,
                c.false_positive,
                c.true_negative,
                c.false_negative
            ),
            (1, 1, 1, 1)
        );
        let empty = choose_threshold(&[], &[], &ThresholdRule::MaxF1);
        assert_eq!(empty.threshold, 0.5);
        assert_eq!(empty.accuracy, 0.0);
        let e = evaluate(&[], &[], &[], &[], &EvaluationConfig::default());
        assert_eq!(e.rows, 0);
        assert!(e.roc_auc.is_nan() && e.roc_auc_interval.low.is_nan() && e.ece.is_nan());
        assert!(e.roc_curve.is_empty());
    }

    #[test]
    fn weighted_auc_matches_roc_auc_on_materialised_resample() {
        let (y, mut p) = synthetic(300, 7);
        // Coarse scores create many ties, plus a -0.0 / 0.0 tie.
        for v in &mut p {
            *v = (*v * 20.0).round() / 20.0;
        }
        p[0] = -0.0;
        p[1] = 0.0;
        let ranking = Ranking::new(&y, &p);
        assert_eq!(ranking.weighted_auc(&vec![1; y.len()]), roc_auc(&y, &p));
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for _ in 0..20 {
            let mut weights = vec![0u32; y.len()];
            let (mut ys, mut ps) = (Vec::new(), Vec::new());
            for _ in 0..y.len() {
                let i = rng.random_range(0..y.len());
                weights[i] += 1;
                ys.push(y[i]);
                ps.push(p[i]);
            }
            assert_eq!(ranking.weighted_auc(&weights), roc_auc(&ys, &ps));
        }
    }

    #[test]
    fn bootstrap_interval_contains_estimate_and_narrows_with_more_rows() {
        let config = EvaluationConfig::default();
        let width = |n: usize| {
            let (y, p) = synthetic(n, 11);
            let e = evaluate(&y, &p, &[], &[], &config);
            let i = &e.roc_auc_interval;
            assert!(
                i.low < e.roc_auc && e.roc_auc < i.high,
                "{n}: {i:?} {}",
                e.roc_auc
            );
            assert!(i.low > 0.5 && i.high <= 1.0, "{i:?}");
            assert_eq!(i.confidence, 0.95);
            i.high - i.low
        };
        let small = width(200);
        let large = width(5000);
        assert!(large < 0.6 * small, "{large} vs {small}");
        // A wider confidence level gives a wider interval on the same resamples.
        let (y, p) = synthetic(500, 5);
        let narrow = evaluate(
            &y,
            &p,
            &[],
            &[],
            &EvaluationConfig {
                confidence: 0.5,
                ..config.clone()
            },
        );
        let wide = evaluate(&y, &p, &[], &[], &config);
        let w = |e: &Evaluation| e.roc_auc_interval.high - e.roc_auc_interval.low;
        assert!(w(&narrow) < w(&wide));
        // No resamples: no interval.
        let none = evaluate(
            &y,
            &p,
            &[],
            &[],
            &EvaluationConfig {
                bootstrap_samples: 0,
                ..config
            },
        );
        assert!(none.roc_auc_interval.low.is_nan() && none.roc_auc_interval.high.is_nan());
    }

    #[test]
    fn evaluation_is_deterministic_for_a_seed() {
        let (y, p) = synthetic(400, 21);
        let config = EvaluationConfig {
            seed: 9,
            ..EvaluationConfig::default()
        };
        let a = serde_json::to_string(&evaluate(&y, &p, &[], &[], &config)).unwrap();
        let b = serde_json::to_string(&evaluate(&y, &p, &[], &[], &config)).unwrap();
        assert_eq!(a, b);
        let other = evaluate(
            &y,
            &p,
            &[],
            &[],
            &EvaluationConfig {
                seed: 10,
                ..config.clone()
            },
        );
        let first = evaluate(&y, &p, &[], &[], &config);
        assert_ne!(other.roc_auc_interval, first.roc_auc_interval);
        assert_eq!(other.roc_auc, first.roc_auc);
    }

    #[test]
    fn compare_identical_predictions_gives_zero_deltas() {
        let (y, p) = synthetic(500, 4);
        let config = EvaluationConfig::default();
        let c = compare(&y, &p, &p, "churn", 3, &[], &config);
        assert_eq!(c.champion_model, "churn");
        assert_eq!(c.champion_version, 3);
        for d in [
            c.delta_roc_auc,
            c.delta_pr_auc,
            c.delta_log_loss,
            c.delta_brier,
            c.delta_ece,
        ] {
            assert_eq!(d, 0.0);
        }
        let i = &c.paired_roc_auc_interval;
        assert!(i.low <= 0.0 && 0.0 <= i.high, "{i:?}");
        assert_eq!((i.low, i.high), (0.0, 0.0));
        assert_eq!(c.champion, evaluate(&y, &p, &[], &[], &config));
    }

    #[test]
    fn compare_sees_a_better_challenger() {
        let (y, good) = synthetic(1000, 8);
        // The champion is the challenger with much of its signal washed out.
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let weak: Vec<f64> = good
            .iter()
            .map(|&v| 0.3 * v + 0.7 * rng.random::<f64>())
            .collect();
        let c = compare(
            &y,
            &good,
            &weak,
            "churn",
            1,
            &[],
            &EvaluationConfig::default(),
        );
        assert!(c.delta_roc_auc > 0.05, "{}", c.delta_roc_auc);
        assert!(c.delta_log_loss < 0.0 && c.delta_brier < 0.0);
        let i = &c.paired_roc_auc_interval;
        assert!(
            i.low > 0.0 && i.low < c.delta_roc_auc && c.delta_roc_auc < i.high,
            "{i:?}"
        );
        // The delta is the difference of the two full evaluations.
        let good_eval = evaluate(&y, &good, &[], &[], &EvaluationConfig::default());
        assert!(close(
            c.delta_roc_auc,
            good_eval.roc_auc - c.champion.roc_auc,
            1e-12
        ));
    }

    #[test]
    fn slices_partition_rows_and_one_class_slice_is_nan() {
        let y = [1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0];
        let p = [0.9, 0.2, 0.6, 0.7, 0.1, 0.8, 0.3];
        let contract: Vec<String> = ["Month", "Year", "Month", "Month", "Year", "Two", "Year"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let internet: Vec<String> = ["Fiber", "DSL", "Fiber", "DSL", "DSL", "Fiber", "DSL"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let slices = [
            Slice {
                column: "Contract",
                values: &contract,
            },
            Slice {
                column: "Internet",
                values: &internet,
            },
        ];
        let e = evaluate(&y, &p, &slices, &[], &EvaluationConfig::default());
        let keys: Vec<(&str, &str, usize, usize)> = e
            .slices
            .iter()
            .map(|s| (s.column.as_str(), s.value.as_str(), s.rows, s.positives))
            .collect();
        assert_eq!(
            keys,
            [
                ("Contract", "Month", 3, 2),
                ("Contract", "Two", 1, 1),
                ("Contract", "Year", 3, 0),
                ("Internet", "DSL", 4, 0),
                ("Internet", "Fiber", 3, 3),
            ]
        );
        for column in ["Contract", "Internet"] {
            let rows: usize = e
                .slices
                .iter()
                .filter(|s| s.column == column)
                .map(|s| s.rows)
                .sum();
            assert_eq!(rows, y.len());
        }
        let month = &e.slices[0];
        // Month rows: (1, .9), (1, .6), (0, .7): the negative beats one positive.
        assert!(close(month.roc_auc, 0.5, 1e-12));
        assert!(close(
            month.brier,
            brier(&[1.0, 1.0, 0.0], &[0.9, 0.6, 0.7]),
            1e-15
        ));
        let year = &e.slices[2];
        assert!(year.roc_auc.is_nan() && year.pr_auc.is_nan());
        assert!(year.log_loss.is_finite());
        assert!(e.slices[1].roc_auc.is_nan() && e.slices[1].pr_auc == 1.0);
    }

    fn report_with_nans() -> EvaluationReport {
        let (y, p) = synthetic(300, 2);
        let values: Vec<String> = y
            .iter()
            .enumerate()
            .map(|(i, &label)| {
                if label > 0.5 || i % 2 == 0 {
                    "mixed".into()
                } else {
                    "<b>neg</b>".into()
                }
            })
            .collect();
        let slices = [Slice {
            column: "Contract",
            values: &values,
        }];
        let importance = vec![
            ("tenure".to_string(), 12.5),
            ("bad".to_string(), f64::NAN),
            ("charges".to_string(), 30.0),
        ];
        let config = EvaluationConfig {
            calibration_bins: 20,
            bootstrap_samples: 200,
            ..EvaluationConfig::default()
        };
        let champion: Vec<f64> = p.iter().map(|v| 0.5 * v + 0.25).collect();
        EvaluationReport {
            model: "churn".into(),
            version: 4,
            evaluation: evaluate(&y, &p, &slices, &importance, &config),
            comparison: Some(compare(&y, &p, &champion, "churn", 3, &slices, &config)),
        }
    }

    #[test]
    fn report_with_nan_round_trips_through_json() {
        let report = report_with_nans();
        let neg = &report.evaluation.slices[0];
        assert_eq!(neg.value, "<b>neg</b>");
        assert!(neg.roc_auc.is_nan() && neg.pr_auc.is_nan());
        assert!(report.evaluation.reliability.iter().any(|b| b.count == 0));
        assert_eq!(
            report.evaluation.feature_importance,
            [("charges".to_string(), 30.0), ("tenure".to_string(), 12.5)]
        );
        let json = serde_json::to_string(&report).unwrap();
        assert!(json.contains("\"roc_auc\":null"), "{json}");
        assert!(!json.contains("NaN"));
        let back: EvaluationReport = serde_json::from_str(&json).unwrap();
        assert!(back.evaluation.slices[0].roc_auc.is_nan());
        assert_eq!(serde_json::to_string(&back).unwrap(), json);
        // Everything without a NaN compares equal after the round trip.
        assert_eq!(back.evaluation.confusion, report.evaluation.confusion);
        assert_eq!(back.evaluation.slices[1], report.evaluation.slices[1]);
        assert_eq!(back.evaluation.roc_curve, report.evaluation.roc_curve);
    }

    #[test]
    fn roc_curve_runs_from_origin_to_one_and_is_thinned() {
        let e = evaluate(
            &[0.0, 1.0, 0.0, 1.0],
            &[0.1, 0.35, 0.4, 0.8],
            &[],
            &[],
            &EvaluationConfig::default(),
        );
        assert_eq!(
            e.roc_curve,
            [(0.0, 0.0), (0.0, 0.5), (0.5, 0.5), (0.5, 1.0), (1.0, 1.0)]
        );
        let (y, p) = synthetic(3000, 6);
        let e = evaluate(
            &y,
            &p,
            &[],
            &[],
            &EvaluationConfig {
                bootstrap_samples: 10,
                ..EvaluationConfig::default()
            },
        );
        assert_eq!(e.roc_curve.len(), MAX_ROC_POINTS);
        assert_eq!(e.roc_curve[0], (0.0, 0.0));
        assert_eq!(*e.roc_curve.last().unwrap(), (1.0, 1.0));
        assert!(
            e.roc_curve
                .windows(2)
                .all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1)
        );
        // Trapezoids under the full curve give the AUC; the thinned one is close.
        let area: f64 = e
            .roc_curve
            .windows(2)
            .map(|w| (w[1].0 - w[0].0) * (w[0].1 + w[1].1) / 2.0)
            .sum();
        assert!(close(area, e.roc_auc, 0.01), "{area} vs {}", e.roc_auc);
    }

    #[test]
    fn config_reads_the_spec_table_and_validates() {
        let c: EvaluationConfig = toml::from_str("").unwrap();
        assert_eq!(c, EvaluationConfig::default());
        assert_eq!(c.bootstrap_samples, 1000);
        let c: EvaluationConfig = toml::from_str(
            "confidence = 0.9\nthreshold = { rule = \"cost\", false_positive = 1.0, false_negative = 5.0 }",
        )
        .unwrap();
        assert_eq!(
            c.threshold,
            ThresholdRule::Cost {
                false_positive: 1.0,
                false_negative: 5.0
            }
        );
        assert_eq!(c.confidence, 0.9);
        let c: EvaluationConfig = toml::from_str("threshold = { rule = \"max_f1\" }").unwrap();
        assert_eq!(c.threshold, ThresholdRule::MaxF1);
        let c: EvaluationConfig =
            toml::from_str("threshold = { rule = \"fixed\", value = 0.3 }").unwrap();
        assert_eq!(c.threshold, ThresholdRule::Fixed { value: 0.3 });
        assert!(c.validate().is_ok());
        assert!(toml::from_str::<EvaluationConfig>("bins = 3").is_err());
        assert!(
            toml::from_str::<EvaluationConfig>(
                "threshold = { rule = \"fixed\", value = 0.3, x = 1 }"
            )
            .is_err()
        );
        assert!(toml::from_str::<EvaluationConfig>("threshold = { rule = \"median\" }").is_err());
        let bad = |c: EvaluationConfig| c.validate().unwrap_err();
        let d = EvaluationConfig::default;
        assert!(
            bad(EvaluationConfig {
                confidence: 1.0,
                ..d()
            })
            .starts_with("confidence")
        );
        assert!(
            bad(EvaluationConfig {
                calibration_bins: 0,
                ..d()
            })
            .starts_with("calibration_bins")
        );
        assert!(
            bad(EvaluationConfig {
                bootstrap_samples: 1_000_000,
                ..d()
            })
            .starts_with("bootstrap_samples")
        );
        assert!(
            bad(EvaluationConfig {
                threshold: ThresholdRule::Fixed { value: 1.5 },
                ..d()
            })
            .contains("threshold.value")
        );
        assert!(
            bad(EvaluationConfig {
                threshold: ThresholdRule::Cost {
                    false_positive: -1.0,
                    false_negative: 1.0
                },
                ..d()
            })
            .contains("threshold.false_positive")
        );
        assert!(
            bad(EvaluationConfig {
                threshold: ThresholdRule::Cost {
                    false_positive: 0.0,
                    false_negative: 0.0
                },
                ..d()
            })
            .contains("both")
        );
    }

    #[test]
    fn bootstrap_timing_1409_rows_1000_resamples() {
        let (y, p) = synthetic(1409, 1409);
        let config = EvaluationConfig::default();
        let start = std::time::Instant::now();
        let e = evaluate(&y, &p, &[], &[], &config);
        let evaluate_time = start.elapsed();
        let start = std::time::Instant::now();
        let c = compare(&y, &p, &p, "m", 1, &[], &config);
        let compare_time = start.elapsed();
        println!(
            "evaluate n=1409 B=1000: {evaluate_time:?}; compare (champion evaluation + paired bootstrap): {compare_time:?}"
        );
        assert!(e.roc_auc_interval.low < e.roc_auc && e.roc_auc < e.roc_auc_interval.high);
        assert_eq!(c.paired_roc_auc_interval.low, 0.0);
        // Generous bound that also holds for unoptimised builds on a busy machine.
        assert!(evaluate_time.as_secs_f64() < 20.0, "{evaluate_time:?}");
    }
}
