//! Live and estimated performance of a served version, per window of traffic.
//!
//! *Realised* performance needs labels: [`realised`] computes the same figures
//! as the holdout evaluation (ROC AUC, PR AUC, log loss, Brier, expected
//! calibration error) and the confusion matrix at the model's threshold.
//!
//! *Estimated* performance needs only the probabilities: confidence-based
//! performance estimation (NannyML's CBPE). A [`Calibration`] fitted on the
//! holdout at training time (isotonic regression, as NannyML fits with
//! scikit-learn, kept only when it lowers the cross-validated calibration
//! error, as NannyML's `needs_calibration` decides) turns each probability
//! into the chance its label is positive; the expected confusion matrix and
//! the expected ROC curve follow. One difference from NannyML: the ROC curve
//! ranks rows by the model's own score (what realised ROC AUC ranks by) and
//! takes the calibrated probabilities as expected labels, where NannyML ranks
//! by the calibrated probability; isotonic ties would otherwise understate a
//! model whose ranking is finer than its calibration blocks.

use serde::{Deserialize, Serialize};

use crate::evaluate::expected_calibration_error;
use crate::metrics;

/// Bins of the expected calibration error (as the evaluation report uses).
pub const ECE_BINS: usize = 10;

/// Most points a stored calibration keeps.
const MAX_POINTS: usize = 4_096;

/// A monotone map from a model's probability to the observed positive rate:
/// isotonic regression, evaluated by linear interpolation between its points
/// and clipped outside them (scikit-learn's `IsotonicRegression` with
/// `out_of_bounds="clip"`). No points is the identity.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Probabilities, strictly increasing.
    pub x: Vec<f64>,
    /// Calibrated values, non-decreasing, in `[0, 1]`.
    pub y: Vec<f64>,
    /// Holdout ECE of the raw probabilities (cross-validated decision input).
    #[serde(default)]
    pub ece_raw: Option<f64>,
    /// Holdout ECE after calibration, cross-validated.
    #[serde(default)]
    pub ece_calibrated: Option<f64>,
}

impl Calibration {
    /// Fits isotonic regression of `y` (0/1 labels) on `p`.
    pub fn isotonic(y: &[f64], p: &[f64]) -> Self {
        let n = y.len().min(p.len());
        let mut pairs: Vec<(f64, f64)> = (0..n)
            .filter(|&i| p[i].is_finite())
            .map(|i| (p[i], if y[i] > 0.5 { 1.0 } else { 0.0 }))
            .collect();
        if pairs.is_empty() {
            return Self::default();
        }
        pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
        // Duplicate x: one point with their mean and weight.
        let mut xs: Vec<f64> = Vec::new();
        let mut blocks: Vec<(f64, f64, usize)> = Vec::new(); // (sum, weight, first x index)
        for (x, v) in pairs {
            if xs.last() == Some(&x) {
                if let Some(b) = blocks.last_mut() {
                    b.0 += v;
                    b.1 += 1.0;
                }
            } else {
                xs.push(x);
                blocks.push((v, 1.0, xs.len() - 1));
            }
        }
        // Pool adjacent violators.
        let mut stack: Vec<(f64, f64, usize)> = Vec::with_capacity(blocks.len());
        for b in blocks {
            let mut cur = b;
            while let Some(last) = stack.last() {
                if last.0 / last.1 >= cur.0 / cur.1 {
                    let last = stack.pop().unwrap_or(cur);
                    cur = (last.0 + cur.0, last.1 + cur.1, last.2);
                } else {
                    break;
                }
            }
            stack.push(cur);
        }
        let mut fitted = vec![0.0; xs.len()];
        for (i, b) in stack.iter().enumerate() {
            let end = stack.get(i + 1).map(|n| n.2).unwrap_or(xs.len());
            for f in &mut fitted[b.2..end] {
                *f = (b.0 / b.1).clamp(0.0, 1.0);
            }
        }
        // Keep the first and last point and every point whose value differs
        // from a neighbour's (scikit-learn's redundant-point removal).
        let mut x = Vec::new();
        let mut yv = Vec::new();
        for i in 0..xs.len() {
            let interior = i > 0 && i + 1 < xs.len();
            if interior && fitted[i - 1] == fitted[i] && fitted[i] == fitted[i + 1] {
                continue;
            }
            x.push(xs[i]);
            yv.push(fitted[i]);
        }
        if x.len() > MAX_POINTS {
            let step = x.len() as f64 / MAX_POINTS as f64;
            let keep: Vec<usize> = (0..MAX_POINTS)
                .map(|k| ((k as f64 * step) as usize).min(x.len() - 1))
                .chain(std::iter::once(x.len() - 1))
                .collect();
            let (kx, ky) = keep.iter().map(|&i| (x[i], yv[i])).unzip();
            x = kx;
            yv = ky;
            x.dedup();
            yv.truncate(x.len());
        }
        Self {
            x,
            y: yv,
            ece_raw: None,
            ece_calibrated: None,
        }
    }

    /// The calibration NannyML's CBPE would use: isotonic regression when it
    /// lowers the expected calibration error in `folds`-fold cross-validation,
    /// otherwise the identity. Both errors are kept.
    pub fn fit(y: &[f64], p: &[f64], folds: usize) -> Self {
        let n = y.len().min(p.len());
        let folds = folds.clamp(2, 10);
        if n < folds * 10 {
            return Self::default();
        }
        let (mut raw, mut cal) = (0.0, 0.0);
        for f in 0..folds {
            let (mut ty, mut tp, mut vy, mut vp) = (vec![], vec![], vec![], vec![]);
            for i in 0..n {
                if i % folds == f {
                    vy.push(y[i]);
                    vp.push(p[i]);
                } else {
                    ty.push(y[i]);
                    tp.push(p[i]);
                }
            }
            let c = Self::isotonic(&ty, &tp);
            let calibrated: Vec<f64> = vp.iter().map(|&v| c.apply(v)).collect();
            raw += expected_calibration_error(&vy, &vp, ECE_BINS).0;
            cal += expected_calibration_error(&vy, &calibrated, ECE_BINS).0;
        }
        let (raw, cal) = (raw / folds as f64, cal / folds as f64);
        let mut c = if cal < raw {
            Self::isotonic(y, p)
        } else {
            Self::default()
        };
        c.ece_raw = finite(raw);
        c.ece_calibrated = finite(cal);
        c
    }

    /// Whether the stored points are a valid monotone map.
    pub fn check(&self) -> Result<(), String> {
        if self.x.len() != self.y.len() {
            return Err(format!(
                "calibration has {} x and {} y values",
                self.x.len(),
                self.y.len()
            ));
        }
        if self.x.len() > MAX_POINTS + 1 {
            return Err(format!("calibration has {} points", self.x.len()));
        }
        if self.x.iter().chain(&self.y).any(|v| !v.is_finite())
            || self.y.iter().any(|v| !(0.0..=1.0).contains(v))
        {
            return Err("calibration has a value that is not finite or outside [0, 1]".into());
        }
        if self.x.windows(2).any(|w| w[0] >= w[1]) || self.y.windows(2).any(|w| w[0] > w[1]) {
            return Err("calibration is not monotone".into());
        }
        Ok(())
    }

    /// The calibrated probability of `p`.
    pub fn apply(&self, p: f64) -> f64 {
        let (x, y) = (&self.x, &self.y);
        if x.is_empty() || x.len() != y.len() {
            return p.clamp(0.0, 1.0);
        }
        if p <= x[0] {
            return y[0];
        }
        let last = x.len() - 1;
        if p >= x[last] {
            return y[last];
        }
        let i = x.partition_point(|&v| v <= p); // x[i-1] <= p < x[i]
        let (x0, x1, y0, y1) = (x[i - 1], x[i], y[i - 1], y[i]);
        y0 + (y1 - y0) * (p - x0) / (x1 - x0)
    }
}

/// A figure that may be undefined (one class only, no rows): `None`, never NaN.
fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

/// A confusion matrix at the model's threshold; estimated ones hold expected
/// (fractional) counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Confusion {
    /// Predicted positive, positive.
    pub tp: f64,
    /// Predicted positive, negative.
    pub fp: f64,
    /// Predicted negative, negative.
    pub tn: f64,
    /// Predicted negative, positive.
    pub fn_: f64,
}

impl Confusion {
    fn accuracy(&self) -> Option<f64> {
        finite((self.tp + self.tn) / (self.tp + self.tn + self.fp + self.fn_))
    }
    fn precision(&self) -> Option<f64> {
        finite(self.tp / (self.tp + self.fp))
    }
    fn recall(&self) -> Option<f64> {
        finite(self.tp / (self.tp + self.fn_))
    }
    fn f1(&self) -> Option<f64> {
        finite(2.0 * self.tp / (2.0 * self.tp + self.fp + self.fn_))
    }
}

/// Realised performance of a window's labelled predictions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Realised {
    /// Labelled predictions.
    pub rows: u64,
    /// Positive labels among them.
    pub positives: u64,
    /// ROC AUC (`None` with one class only).
    pub roc_auc: Option<f64>,
    /// PR AUC (average precision).
    pub pr_auc: Option<f64>,
    /// Log loss.
    pub log_loss: Option<f64>,
    /// Brier score.
    pub brier: Option<f64>,
    /// Expected calibration error (10 bins).
    pub ece: Option<f64>,
    /// Accuracy at the threshold.
    pub accuracy: Option<f64>,
    /// Precision at the threshold.
    pub precision: Option<f64>,
    /// Recall at the threshold.
    pub recall: Option<f64>,
    /// F1 at the threshold.
    pub f1: Option<f64>,
    /// The threshold.
    pub threshold: f64,
    /// Counts at the threshold.
    pub confusion: Confusion,
}

/// Realised performance of `p` against labels `y` (0/1) at `threshold`.
pub fn realised(y: &[f64], p: &[f64], threshold: f64) -> Realised {
    let n = y.len().min(p.len());
    let (y, p) = (&y[..n], &p[..n]);
    let m = metrics::binary_metrics(y, p);
    let mut c = Confusion::default();
    for (&label, &prob) in y.iter().zip(p) {
        match (prob >= threshold, label > 0.5) {
            (true, true) => c.tp += 1.0,
            (true, false) => c.fp += 1.0,
            (false, false) => c.tn += 1.0,
            (false, true) => c.fn_ += 1.0,
        }
    }
    Realised {
        rows: n as u64,
        positives: m.positives as u64,
        roc_auc: finite(m.roc_auc),
        pr_auc: finite(m.pr_auc),
        log_loss: finite(m.log_loss),
        brier: finite(m.brier),
        ece: finite(expected_calibration_error(y, p, ECE_BINS).0),
        accuracy: c.accuracy(),
        precision: c.precision(),
        recall: c.recall(),
        f1: c.f1(),
        threshold,
        confusion: c,
    }
}

/// Estimated performance of a window from its probabilities alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Estimated {
    /// Predictions the estimate is over.
    pub rows: u64,
    /// Expected share of positive labels.
    pub positive_rate: Option<f64>,
    /// Expected ROC AUC.
    pub roc_auc: Option<f64>,
    /// Expected accuracy at the threshold.
    pub accuracy: Option<f64>,
    /// Expected precision at the threshold.
    pub precision: Option<f64>,
    /// Expected recall at the threshold.
    pub recall: Option<f64>,
    /// Expected F1 at the threshold.
    pub f1: Option<f64>,
    /// The threshold.
    pub threshold: f64,
    /// Expected counts at the threshold.
    pub confusion: Confusion,
}

/// Confidence-based performance estimation of `p` at `threshold`.
pub fn estimate(calibration: &Calibration, p: &[f64], threshold: f64) -> Estimated {
    let mut rows: Vec<(f64, f64)> = p
        .iter()
        .filter(|v| v.is_finite())
        .map(|&v| (v, calibration.apply(v)))
        .collect();
    let mut c = Confusion::default();
    for &(score, q) in &rows {
        if score >= threshold {
            c.tp += q;
            c.fp += 1.0 - q;
        } else {
            c.fn_ += q;
            c.tn += 1.0 - q;
        }
    }
    let positives: f64 = rows.iter().map(|r| r.1).sum();
    let negatives = rows.len() as f64 - positives;
    // Expected ROC: walk thresholds from the highest score down; rows with one
    // score move together (a diagonal step, as ties count one half).
    rows.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (mut tp, mut fp, mut prev_tpr, mut prev_fpr, mut area) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let mut i = 0;
    while i < rows.len() {
        let s = rows[i].0;
        while i < rows.len() && rows[i].0 == s {
            tp += rows[i].1;
            fp += 1.0 - rows[i].1;
            i += 1;
        }
        let (tpr, fpr) = (tp / positives, fp / negatives);
        area += (fpr - prev_fpr) * (tpr + prev_tpr) / 2.0;
        prev_tpr = tpr;
        prev_fpr = fpr;
    }
    let roc_auc = (positives > 0.0 && negatives > 0.0)
        .then_some(area)
        .and_then(finite);
    Estimated {
        rows: rows.len() as u64,
        positive_rate: finite(positives / rows.len() as f64),
        roc_auc,
        accuracy: c.accuracy(),
        precision: c.precision(),
        recall: c.recall(),
        f1: c.f1(),
        threshold,
        confusion: c,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn isotonic_pools_violators_and_interpolates() {
        // Labels against x: 0 1 0 1 1 -> PAV pools (1, 0) into 0.5.
        let c = Calibration::isotonic(&[0.0, 1.0, 0.0, 1.0, 1.0], &[0.1, 0.2, 0.3, 0.4, 0.5]);
        c.check().unwrap();
        assert_eq!(c.apply(0.0), 0.0);
        assert_eq!(c.apply(0.2), 0.5);
        assert_eq!(c.apply(0.3), 0.5);
        assert_eq!(c.apply(0.9), 1.0);
        assert!((c.apply(0.15) - 0.25).abs() < 1e-12);
        // Identity without points.
        assert_eq!(Calibration::default().apply(0.3), 0.3);
        let mut bad = c.clone();
        bad.y[0] = 0.9;
        assert!(bad.check().unwrap_err().contains("monotone"));
    }

    /// Scores whose true positive rate is `truth(score)`.
    fn draw(n: usize, seed: u64, truth: impl Fn(f64) -> f64) -> (Vec<f64>, Vec<f64>) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let p: Vec<f64> = (0..n).map(|_| rng.random::<f64>()).collect();
        let y = p
            .iter()
            .map(|&s| f64::from(u8::from(rng.random::<f64>() < truth(s))))
            .collect();
        (y, p)
    }

    #[test]
    fn a_calibrated_model_keeps_the_identity_and_estimates_its_auc() {
        let (y, p) = draw(4_000, 1, |s| s);
        let c = Calibration::fit(&y, &p, 5);
        assert!(c.x.is_empty(), "already calibrated: {c:?}");
        let (yt, pt) = draw(2_000, 2, |s| s);
        let est = estimate(&c, &pt, 0.5);
        let real = realised(&yt, &pt, 0.5);
        let (e, r) = (est.roc_auc.unwrap(), real.roc_auc.unwrap());
        assert!((e - r).abs() < 0.02, "estimated {e}, realised {r}");
        assert!((est.accuracy.unwrap() - real.accuracy.unwrap()).abs() < 0.03);
    }

    #[test]
    fn a_miscalibrated_model_is_calibrated_before_estimating() {
        // True rate is s², the model says s: over-confident on positives.
        let truth = |s: f64| s * s;
        let (y, p) = draw(4_000, 3, truth);
        let c = Calibration::fit(&y, &p, 5);
        assert!(!c.x.is_empty());
        assert!(c.ece_calibrated < c.ece_raw);
        let (yt, pt) = draw(2_000, 4, truth);
        let est = estimate(&c, &pt, 0.5);
        let real = realised(&yt, &pt, 0.5);
        assert!((est.roc_auc.unwrap() - real.roc_auc.unwrap()).abs() < 0.02);
        assert!((est.f1.unwrap() - real.f1.unwrap()).abs() < 0.04);
        // Uncalibrated, the expected share of positives would be far off
        // (1/2 where it is 1/3); calibrated, it is close.
        let share = real.positives as f64 / real.rows as f64;
        let naive = estimate(&Calibration::default(), &pt, 0.5);
        assert!((naive.positive_rate.unwrap() - share).abs() > 0.1);
        assert!((est.positive_rate.unwrap() - share).abs() < 0.03);
    }

    #[test]
    fn undefined_figures_are_none_never_nan() {
        let r = realised(&[1.0, 1.0], &[0.2, 0.9], 0.5);
        assert_eq!(r.roc_auc, None);
        assert_eq!(r.confusion.tp, 1.0);
        assert_eq!(r.confusion.fn_, 1.0);
        let e = estimate(&Calibration::default(), &[], 0.5);
        assert_eq!((e.rows, e.roc_auc, e.accuracy), (0, None, None));
        let json = serde_json::to_string(&e).unwrap();
        assert!(!json.contains("NaN"));
    }
}
