//! L2-regularised logistic regression: the baseline every boosted model is
//! compared against.
//!
//! Features are standardised with the training mean and (population) standard
//! deviation, then the model is fitted by Newton–Raphson (IRLS) on
//!
//! ```text
//! J(b, w) = sum_i [ log(1 + exp(z_i)) - y_i * z_i ] + 0.5 * l2 * ||w||^2,   z_i = b + w . x_std_i
//! ```
//!
//! The intercept `b` is not penalised. Dividing `J` by `n` gives the mean
//! log-loss plus `(l2 / (2n)) * ||w||^2`, which has the same minimiser; in sum
//! form `l2 = 1 / C`, so the default `l2 = 1.0` matches scikit-learn's
//! `LogisticRegression()` (C = 1.0) fitted on `StandardScaler`-transformed data.
//!
//! Each Newton system is `(p + 1) x (p + 1)` and is solved with a Cholesky
//! factorisation written here (no linear-algebra dependency); dimensions are
//! expected to be at most a few hundred. Everything is deterministic.

use crate::MlError;
pub use modelbus_dataset::spec::LogisticParams;

/// A fitted logistic regression, self-contained for serving.
///
/// Prediction standardises each feature as `(x - means[j]) / scales[j]`, then
/// returns `sigmoid(intercept + coef . x_std)`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct LogisticModel {
    /// Training mean of each feature.
    pub means: Vec<f64>,
    /// Training (population) standard deviation of each feature; 1.0 for a
    /// constant feature, so it contributes nothing instead of dividing by zero.
    pub scales: Vec<f64>,
    /// Coefficients on the standardised scale (divide by `scales` for the raw scale).
    pub coef: Vec<f64>,
    /// Intercept on the standardised scale: the log-odds at the mean row.
    pub intercept: f64,
    /// Number of Newton steps taken.
    pub iterations: usize,
}

/// Logistic function `1 / (1 + exp(-z))` without overflow for large `|z|`.
fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// `log(1 + exp(z))` without overflow or loss of precision.
fn softplus(z: f64) -> f64 {
    z.max(0.0) + (-z.abs()).exp().ln_1p()
}

/// Checks shapes, labels and values; returns the number of rows.
fn validate(
    x: &[f64],
    n_features: usize,
    y: &[f64],
    params: &LogisticParams,
) -> Result<usize, MlError> {
    let invalid = |msg: String| Err(MlError::InvalidData(msg));
    if !(params.l2.is_finite() && params.l2 >= 0.0) {
        return invalid(format!(
            "l2 penalty must be finite and >= 0, got {}",
            params.l2
        ));
    }
    if !(params.tol.is_finite() && params.tol >= 0.0) {
        return invalid(format!(
            "tolerance must be finite and >= 0, got {}",
            params.tol
        ));
    }
    if n_features == 0 {
        return invalid("n_features must be at least 1".to_string());
    }
    if x.is_empty() {
        return invalid("feature matrix is empty (no rows)".to_string());
    }
    if !x.len().is_multiple_of(n_features) {
        return invalid(format!(
            "feature matrix has {} values, not a multiple of n_features = {n_features}",
            x.len()
        ));
    }
    let n_rows = x.len() / n_features;
    if y.len() != n_rows {
        return invalid(format!("{} labels for {n_rows} feature rows", y.len()));
    }
    if let Some((row, label)) = y.iter().enumerate().find(|&(_, &v)| v != 0.0 && v != 1.0) {
        return invalid(format!("label at row {row} is {label}, expected 0 or 1"));
    }
    let positives = y.iter().filter(|&&v| v == 1.0).count();
    if positives == 0 || positives == n_rows {
        return invalid(format!(
            "labels contain only one class ({positives} positives in {n_rows} rows)"
        ));
    }
    if let Some(pos) = x.iter().position(|v| !v.is_finite()) {
        return invalid(format!(
            "non-finite feature value {} at row {}, column {}",
            x[pos],
            pos / n_features,
            pos % n_features
        ));
    }
    Ok(n_rows)
}

/// Per-column training means and scales (population std; 1.0 when constant).
fn standardisation(x: &[f64], n_rows: usize, n_features: usize) -> (Vec<f64>, Vec<f64>) {
    let mut means = vec![0.0; n_features];
    let mut scales = vec![1.0; n_features];
    for j in 0..n_features {
        let column = || x.iter().skip(j).step_by(n_features).copied();
        let first = x[j];
        if column().all(|v| v == first) {
            // Exactly constant: avoid a mean that is off by one ulp and turns into noise.
            means[j] = first;
            continue;
        }
        let mean = column().sum::<f64>() / n_rows as f64;
        let var = column().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n_rows as f64;
        let std = var.sqrt();
        means[j] = mean;
        // Treat a spread at rounding-error level relative to the mean as constant.
        if std.is_finite() && std > 10.0 * f64::EPSILON * mean.abs() {
            scales[j] = std;
        }
    }
    (means, scales)
}

/// Sum-form objective at `beta` (`beta[0]` intercept, `beta[1..]` coefficients);
/// writes the linear predictors into `eta`.
fn objective(z: &[f64], y: &[f64], beta: &[f64], l2: f64, eta: &mut [f64]) -> f64 {
    let p = beta.len() - 1;
    let mut total = 0.0;
    for (i, (e, &label)) in eta.iter_mut().zip(y).enumerate() {
        let row = &z[i * p..(i + 1) * p];
        let lin = beta[0] + row.iter().zip(&beta[1..]).map(|(a, b)| a * b).sum::<f64>();
        *e = lin;
        total += softplus(lin) - label * lin;
    }
    total + 0.5 * l2 * beta[1..].iter().map(|w| w * w).sum::<f64>()
}

/// Solves `a * x = b` for a symmetric positive definite `m x m` matrix `a`
/// (row-major) by Cholesky factorisation. `None` when `a` is not (numerically)
/// positive definite, including when a pivot falls below `1e-12` times its
/// diagonal entry, where a solve would amplify rounding noise into huge steps.
fn cholesky_solve(a: &[f64], m: usize, b: &[f64]) -> Option<Vec<f64>> {
    let mut l = vec![0.0; m * m];
    for i in 0..m {
        for j in 0..=i {
            let dot: f64 = (0..j).map(|k| l[i * m + k] * l[j * m + k]).sum();
            let v = a[i * m + j] - dot;
            if i == j {
                // A pivot that is zero or lost to cancellation relative to the
                // diagonal means a (numerically) singular direction.
                if !(v > 1e-12 * a[i * m + i] && v > 0.0 && v.is_finite()) {
                    return None;
                }
                l[i * m + i] = v.sqrt();
            } else {
                l[i * m + j] = v / l[j * m + j];
            }
        }
    }
    // Forward substitution L u = b, then back substitution L^T x = u.
    let mut u = vec![0.0; m];
    for i in 0..m {
        let dot: f64 = (0..i).map(|k| l[i * m + k] * u[k]).sum();
        u[i] = (b[i] - dot) / l[i * m + i];
    }
    let mut x = vec![0.0; m];
    for i in (0..m).rev() {
        let dot: f64 = (i + 1..m).map(|k| l[k * m + i] * x[k]).sum();
        x[i] = (u[i] - dot) / l[i * m + i];
    }
    x.iter().all(|v| v.is_finite()).then_some(x)
}

/// Solves the Newton system, adding a growing ridge to the diagonal when the
/// Hessian is singular (collinear or constant features with `l2 = 0`, or
/// saturated probabilities on separable data).
fn solve_newton(hessian: &[f64], m: usize, grad: &[f64]) -> Option<Vec<f64>> {
    if let Some(step) = cholesky_solve(hessian, m, grad) {
        return Some(step);
    }
    let max_diag = (0..m).map(|i| hessian[i * m + i]).fold(0.0f64, f64::max);
    let base = if max_diag > 0.0 && max_diag.is_finite() {
        max_diag
    } else {
        1.0
    };
    let mut jittered = hessian.to_vec();
    let mut ridge = base * 1e-12;
    while ridge <= base {
        for i in 0..m {
            jittered[i * m + i] = hessian[i * m + i] + ridge;
        }
        if let Some(step) = cholesky_solve(&jittered, m, grad) {
            return Some(step);
        }
        ridge *= 100.0;
    }
    None
}

/// Fits an L2-regularised logistic regression by Newton–Raphson.
///
/// `x` is row-major with `n_features` columns, `y` holds 0.0/1.0 labels, one
/// per row. Features are standardised (mean/std from `x`; a zero std becomes
/// scale 1.0) before fitting and the returned `coef` are on the standardised
/// scale. Each step solves the Newton system exactly; when the full step does
/// not decrease the objective it is halved (up to 50 times). Fitting stops when
/// the largest parameter change is below `params.tol`, after `params.max_iter`
/// steps, or when no step decreases the objective any more.
///
/// # Errors
///
/// [`MlError::InvalidData`] when `x` is empty, `x.len()` is not a multiple of
/// `n_features`, `y` has a different number of rows, a label is not 0 or 1,
/// only one class is present, a feature value is NaN or infinite (the message
/// names the row and column), the parameters are out of range, or the Newton
/// system cannot be solved.
pub fn fit_logistic(
    x: &[f64],
    n_features: usize,
    y: &[f64],
    params: &LogisticParams,
) -> Result<LogisticModel, MlError> {
    let n_rows = validate(x, n_features, y, params)?;
    let p = n_features;
    let m = p + 1;
    let (means, scales) = standardisation(x, n_rows, p);
    let z: Vec<f64> = x
        .iter()
        .enumerate()
        .map(|(k, &v)| (v - means[k % p]) / scales[k % p])
        .collect();

    // Start from the intercept-only optimum: the log-odds of the base rate.
    let positives = y.iter().filter(|&&v| v == 1.0).count() as f64;
    let mut beta = vec![0.0; m];
    beta[0] = (positives / (n_rows as f64 - positives)).ln();
    let mut eta = vec![0.0; n_rows];
    let mut current = objective(&z, y, &beta, params.l2, &mut eta);

    let mut candidate = vec![0.0; m];
    let mut candidate_eta = vec![0.0; n_rows];
    let mut grad = vec![0.0; m];
    let mut hessian = vec![0.0; m * m];
    let mut iterations = 0;
    while iterations < params.max_iter {
        // Gradient and Hessian of the sum-form objective; only the upper
        // triangle is accumulated, then mirrored.
        grad.iter_mut().for_each(|g| *g = 0.0);
        hessian.iter_mut().for_each(|h| *h = 0.0);
        for (i, (&lin, &label)) in eta.iter().zip(y).enumerate() {
            let prob = sigmoid(lin);
            let residual = prob - label;
            let weight = prob * (1.0 - prob);
            let row = &z[i * p..(i + 1) * p];
            grad[0] += residual;
            hessian[0] += weight;
            for (j, &zj) in row.iter().enumerate() {
                grad[j + 1] += residual * zj;
                let wz = weight * zj;
                hessian[j + 1] += wz;
                let hrow = &mut hessian[(j + 1) * m..(j + 2) * m];
                for (h, &zk) in hrow[j + 1..].iter_mut().zip(&row[j..]) {
                    *h += wz * zk;
                }
            }
        }
        for j in 1..m {
            grad[j] += params.l2 * beta[j];
            hessian[j * m + j] += params.l2;
            for k in 0..j {
                hessian[j * m + k] = hessian[k * m + j];
            }
        }

        let step = solve_newton(&hessian, m, &grad).ok_or_else(|| {
            MlError::InvalidData(
                "logistic regression: the Newton system could not be solved \
                 (features too collinear or too badly scaled)"
                    .to_string(),
            )
        })?;

        // Step-halving line search on the objective.
        let mut t = 1.0;
        let mut accepted = None;
        for _ in 0..=50 {
            for ((c, &b), &s) in candidate.iter_mut().zip(&beta).zip(&step) {
                *c = b - t * s;
            }
            let value = objective(&z, y, &candidate, params.l2, &mut candidate_eta);
            if value <= current {
                accepted = Some(value);
                break;
            }
            t *= 0.5;
        }
        let Some(value) = accepted else {
            // No step decreases the objective: we are at the optimum to
            // machine precision.
            break;
        };
        let max_change = step.iter().map(|s| (t * s).abs()).fold(0.0f64, f64::max);
        std::mem::swap(&mut beta, &mut candidate);
        std::mem::swap(&mut eta, &mut candidate_eta);
        current = value;
        iterations += 1;
        if max_change < params.tol {
            break;
        }
    }

    Ok(LogisticModel {
        means,
        scales,
        intercept: beta[0],
        coef: beta[1..].to_vec(),
        iterations,
    })
}

impl LogisticModel {
    /// Probability of class 1 for one raw (unstandardised) feature row.
    ///
    /// NaN features are treated as missing and replaced by the training mean
    /// (0 after standardising). Infinite features saturate the probability
    /// towards 0 or 1 (and contribute nothing when their coefficient is 0).
    /// Returns NaN when `row.len()` differs from the number of features the
    /// model was trained on, or when the model's vectors disagree in length.
    pub fn predict_proba(&self, row: &[f64]) -> f64 {
        let p = self.coef.len();
        if row.len() != p || self.means.len() != p || self.scales.len() != p {
            return f64::NAN;
        }
        let mut lin = self.intercept;
        for (((&v, &mean), &scale), &w) in row
            .iter()
            .zip(&self.means)
            .zip(&self.scales)
            .zip(&self.coef)
        {
            if v.is_nan() {
                continue;
            }
            let contribution = w * (v - mean) / scale;
            if !contribution.is_nan() {
                lin += contribution;
            }
        }
        sigmoid(lin)
    }

    /// [`predict_proba`](Self::predict_proba) for every row of a row-major
    /// matrix with `n_features` columns.
    ///
    /// Returns one probability per row; a trailing partial row (when
    /// `x.len()` is not a multiple of `n_features`) and every row of a matrix
    /// whose width differs from the model's yield NaN. `n_features == 0` gives
    /// an empty vector.
    pub fn predict_proba_batch(&self, x: &[f64], n_features: usize) -> Vec<f64> {
        if n_features == 0 {
            return Vec::new();
        }
        x.chunks(n_features)
            .map(|row| self.predict_proba(row))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::roc_auc;
    use modelbus_featurize::split::stratified_holdout;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Synthetic data: three uniform(-1, 1) features, log-odds
    /// `0.5 + 2 x0 - 3 x1 + 0 x2` (x2 is noise), labels drawn from it.
    fn synthetic(n: usize, seed: u64) -> (Vec<f64>, Vec<f64>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut x = Vec::with_capacity(n * 3);
        let mut y = Vec::with_capacity(n);
        for _ in 0..n {
            let row: [f64; 3] = [
                rng.random::<f64>() * 2.0 - 1.0,
                rng.random::<f64>() * 2.0 - 1.0,
                rng.random::<f64>() * 2.0 - 1.0,
            ];
            let p = sigmoid(0.5 + 2.0 * row[0] - 3.0 * row[1]);
            y.push(if rng.random::<f64>() < p { 1.0 } else { 0.0 });
            x.extend_from_slice(&row);
        }
        (x, y)
    }

    /// Gradient of the sum-form objective at the fitted model, computed
    /// independently of the fitting code.
    fn objective_gradient(model: &LogisticModel, x: &[f64], y: &[f64], l2: f64) -> Vec<f64> {
        let p = model.coef.len();
        let mut grad = vec![0.0; p + 1];
        for (row, &label) in x.chunks(p).zip(y) {
            let zs: Vec<f64> = (0..p)
                .map(|j| (row[j] - model.means[j]) / model.scales[j])
                .collect();
            let lin: f64 =
                model.intercept + zs.iter().zip(&model.coef).map(|(a, b)| a * b).sum::<f64>();
            let r = 1.0 / (1.0 + (-lin).exp()) - label;
            grad[0] += r;
            for j in 0..p {
                grad[j + 1] += r * zs[j];
            }
        }
        for j in 0..p {
            grad[j + 1] += l2 * model.coef[j];
        }
        grad
    }

    fn expect_invalid(result: Result<LogisticModel, MlError>, needles: &[&str]) {
        match result {
            Err(MlError::InvalidData(msg)) => {
                for needle in needles {
                    assert!(msg.contains(needle), "message {msg:?} lacks {needle:?}");
                }
            }
            other => panic!("expected InvalidData, got {other:?}"),
        }
    }

    #[test]
    fn default_params() {
        let p = LogisticParams::default();
        assert_eq!(p.l2, 1.0);
        assert_eq!(p.max_iter, 100);
        assert_eq!(p.tol, 1e-8);
    }

    #[test]
    fn sigmoid_and_softplus_are_stable() {
        assert_eq!(sigmoid(0.0), 0.5);
        assert_eq!(sigmoid(1000.0), 1.0);
        assert_eq!(sigmoid(-1000.0), 0.0);
        assert!((sigmoid(-30.0) - (-30.0f64).exp() / (1.0 + (-30.0f64).exp())).abs() < 1e-25);
        assert!((softplus(0.0) - 2.0f64.ln()).abs() < 1e-15);
        assert_eq!(softplus(1000.0), 1000.0);
        assert!(softplus(-1000.0) >= 0.0 && softplus(-1000.0) < 1e-300);
        assert!((softplus(-40.0) - (-40.0f64).exp()).abs() < 1e-30);
    }

    #[test]
    fn cholesky_solves_small_system() {
        // [[4, 2], [2, 3]] x = [2, 1]  ->  x = [0.5, 0]
        let x = cholesky_solve(&[4.0, 2.0, 2.0, 3.0], 2, &[2.0, 1.0]).expect("spd");
        assert!((x[0] - 0.5).abs() < 1e-15 && x[1].abs() < 1e-15);
        // Singular matrix is refused, and the ridge fallback still solves it.
        assert!(cholesky_solve(&[1.0, 1.0, 1.0, 1.0], 2, &[1.0, 1.0]).is_none());
        let s = solve_newton(&[1.0, 1.0, 1.0, 1.0], 2, &[1.0, 1.0]).expect("ridge");
        assert!((s[0] + s[1] - 1.0).abs() < 1e-6);
    }

    #[test]
    fn one_binary_feature_unpenalised_matches_closed_form() {
        // Group x=0: 1 of 4 positive; group x=1: 3 of 4 positive. The MLE fits
        // each group's rate exactly: p(0) = 0.25, p(1) = 0.75. Standardised
        // (mean 0.5, std 0.5): coef = 0.5 * (logit 0.75 - logit 0.25) = ln 3,
        // intercept = 0.
        let x = [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0];
        let y = [0.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0];
        let params = LogisticParams {
            l2: 0.0,
            ..LogisticParams::default()
        };
        let m = fit_logistic(&x, 1, &y, &params).expect("fit");
        assert_eq!(m.means, vec![0.5]);
        assert_eq!(m.scales, vec![0.5]);
        assert!((m.coef[0] - 3.0f64.ln()).abs() < 1e-10, "{m:?}");
        assert!(m.intercept.abs() < 1e-10, "{m:?}");
        assert!((m.predict_proba(&[0.0]) - 0.25).abs() < 1e-10);
        assert!((m.predict_proba(&[1.0]) - 0.75).abs() < 1e-10);
        assert!(m.iterations > 0 && m.iterations < params.max_iter);
    }

    #[test]
    fn one_binary_feature_penalised_matches_hand_solution() {
        // Same data, l2 = 1. By symmetry the intercept is 0 and the coefficient
        // w solves d/dw [4 softplus(w) - 3w + 4 softplus(-w) - w + w^2/2] = 0,
        // i.e. 8 sigmoid(w) - 6 + w = 0 (found here by bisection).
        let x = [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0];
        let y = [0.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0];
        let (mut lo, mut hi) = (0.0f64, 3.0f64);
        for _ in 0..200 {
            let mid = 0.5 * (lo + hi);
            if 8.0 * sigmoid(mid) - 6.0 + mid > 0.0 {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        let expected = 0.5 * (lo + hi);
        assert!(expected > 0.5 && expected < 3.0f64.ln());
        let m = fit_logistic(&x, 1, &y, &LogisticParams::default()).expect("fit");
        assert!(
            (m.coef[0] - expected).abs() < 1e-10,
            "{} vs {expected}",
            m.coef[0]
        );
        assert!(m.intercept.abs() < 1e-10);
    }

    #[test]
    fn recovers_coefficient_signs() {
        let (x, y) = synthetic(2000, 7);
        let m = fit_logistic(&x, 3, &y, &LogisticParams::default()).expect("fit");
        assert!(m.coef[0] > 0.0, "{m:?}");
        assert!(m.coef[1] < 0.0, "{m:?}");
        assert!(m.coef[2].abs() < 0.3, "noise feature weight {m:?}");
        // On the raw scale the true weights are 2 and -3.
        let raw0 = m.coef[0] / m.scales[0];
        let raw1 = m.coef[1] / m.scales[1];
        assert!((raw0 - 2.0).abs() < 0.6, "raw0 = {raw0}");
        assert!((raw1 + 3.0).abs() < 0.6, "raw1 = {raw1}");
        // Means and scales are the population statistics of the columns.
        for j in 0..3 {
            let col: Vec<f64> = x.iter().skip(j).step_by(3).copied().collect();
            let mean = col.iter().sum::<f64>() / col.len() as f64;
            let var = col.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / col.len() as f64;
            assert!((m.means[j] - mean).abs() < 1e-12);
            assert!((m.scales[j] - var.sqrt()).abs() < 1e-12);
        }
    }

    #[test]
    fn gradient_vanishes_at_optimum() {
        // Correlated features so the Hessian has off-diagonal structure.
        let (base, y) = synthetic(1500, 11);
        let x: Vec<f64> = base
            .chunks(3)
            .flat_map(|r| [r[0], r[1], r[2], r[0] + 0.5 * r[1], 100.0 * r[2] + 5000.0])
            .collect();
        for l2 in [1.0, 0.1, 10.0] {
            let params = LogisticParams {
                l2,
                ..LogisticParams::default()
            };
            let m = fit_logistic(&x, 5, &y, &params).expect("fit");
            let grad = objective_gradient(&m, &x, &y, l2);
            let max = grad.iter().map(|g| g.abs()).fold(0.0, f64::max);
            assert!(max < 1e-6, "l2 = {l2}: gradient {grad:?}");
            assert!(m.iterations < params.max_iter, "did not converge");
        }
    }

    #[test]
    fn penalty_shrinks_coefficients() {
        let (x, y) = synthetic(500, 3);
        let norm = |l2: f64| {
            let m = fit_logistic(
                &x,
                3,
                &y,
                &LogisticParams {
                    l2,
                    ..LogisticParams::default()
                },
            )
            .expect("fit");
            m.coef.iter().map(|w| w * w).sum::<f64>()
        };
        let (weak, strong) = (norm(0.01), norm(200.0));
        assert!(strong < 0.5 * weak, "{strong} vs {weak}");
    }

    #[test]
    fn fitting_is_deterministic() {
        let (x, y) = synthetic(800, 5);
        let a = fit_logistic(&x, 3, &y, &LogisticParams::default()).expect("fit");
        let b = fit_logistic(&x, 3, &y, &LogisticParams::default()).expect("fit");
        assert_eq!(a, b);
    }

    #[test]
    fn constant_feature_gets_unit_scale_and_intercept_is_base_rate() {
        // Column 0 constant; column 1 carries no signal (each value has the same
        // 1-in-5 positive rate). The unpenalised intercept must be logit(0.2).
        let x: Vec<f64> = (0..20)
            .flat_map(|i| [5.0, if i < 10 { 1.0 } else { 2.0 }])
            .collect();
        let y: Vec<f64> = (0..20)
            .map(|i| if i % 5 == 0 { 1.0 } else { 0.0 })
            .collect();
        let params = LogisticParams {
            l2: 3.0,
            ..LogisticParams::default()
        };
        let m = fit_logistic(&x, 2, &y, &params).expect("fit");
        assert_eq!(m.means[0], 5.0);
        assert_eq!(m.scales[0], 1.0);
        assert_eq!(m.scales[1], 0.5);
        assert!(m.coef[0].abs() < 1e-12);
        assert!(m.coef[1].abs() < 1e-10);
        assert!((m.intercept - (0.25f64).ln()).abs() < 1e-10);
        assert!((m.predict_proba(&[5.0, 1.0]) - 0.2).abs() < 1e-10);
    }

    #[test]
    fn unpenalised_constant_and_duplicate_features_still_fit() {
        // l2 = 0 with a constant column and a duplicated column: the Hessian is
        // singular and the ridge fallback must keep the fit finite.
        let (base, y) = synthetic(300, 9);
        let x: Vec<f64> = base
            .chunks(3)
            .flat_map(|r| [r[0], r[0], 1.0, r[1]])
            .collect();
        let params = LogisticParams {
            l2: 0.0,
            ..LogisticParams::default()
        };
        let m = fit_logistic(&x, 4, &y, &params).expect("fit");
        assert!(m.coef.iter().all(|w| w.is_finite()));
        assert!(m.coef[0] + m.coef[1] > 0.0 && m.coef[3] < 0.0, "{m:?}");
        let probs = m.predict_proba_batch(&x, 4);
        assert!(roc_auc(&y, &probs) > 0.75);
    }

    #[test]
    fn separable_data_without_penalty_terminates() {
        let x: Vec<f64> = (0..20).map(f64::from).collect();
        let y: Vec<f64> = (0..20).map(|i| if i >= 10 { 1.0 } else { 0.0 }).collect();
        let params = LogisticParams {
            l2: 0.0,
            max_iter: 50,
            tol: 1e-8,
        };
        let m = fit_logistic(&x, 1, &y, &params).expect("fit");
        assert!(m.coef[0].is_finite() && m.coef[0] > 5.0, "{m:?}");
        assert!(m.predict_proba(&[0.0]) < 0.01);
        assert!(m.predict_proba(&[19.0]) > 0.99);
    }

    #[test]
    fn prediction_handles_nan_batches_and_bad_widths() {
        let (x, y) = synthetic(400, 2);
        let m = fit_logistic(&x, 3, &y, &LogisticParams::default()).expect("fit");
        // NaN behaves like the training mean.
        let at_mean = m.predict_proba(&[m.means[0], 0.3, -0.2]);
        let with_nan = m.predict_proba(&[f64::NAN, 0.3, -0.2]);
        assert!((at_mean - with_nan).abs() < 1e-15);
        let all_nan = m.predict_proba(&[f64::NAN; 3]);
        assert!((all_nan - sigmoid(m.intercept)).abs() < 1e-15);
        // Infinite values saturate instead of producing NaN.
        let big = m.predict_proba(&[f64::INFINITY, 0.0, 0.0]);
        assert_eq!(big, 1.0);
        // Batch equals row by row.
        let batch = m.predict_proba_batch(&x, 3);
        assert_eq!(batch.len(), 400);
        for (row, &b) in x.chunks(3).zip(&batch) {
            assert_eq!(m.predict_proba(row), b);
            assert!(b > 0.0 && b < 1.0);
        }
        // Wrong widths give NaN rather than a silently wrong number.
        assert!(m.predict_proba(&[0.1, 0.2]).is_nan());
        let odd = m.predict_proba_batch(&x[..7], 3);
        assert_eq!(odd.len(), 3);
        assert!(odd[0].is_finite() && odd[1].is_finite() && odd[2].is_nan());
        assert!(m.predict_proba_batch(&x[..8], 2).iter().all(|v| v.is_nan()));
        assert!(m.predict_proba_batch(&x, 0).is_empty());
    }

    #[test]
    fn model_round_trips_through_json() {
        let (x, y) = synthetic(200, 4);
        let m = fit_logistic(&x, 3, &y, &LogisticParams::default()).expect("fit");
        let json = serde_json::to_string(&m).expect("serialise");
        let back: LogisticModel = serde_json::from_str(&json).expect("deserialise");
        // serde_json without its `float_roundtrip` feature may parse a float one
        // ulp away from what it printed, so compare to within a few ulps.
        let near = |a: f64, b: f64| (a - b).abs() <= 4.0 * f64::EPSILON * a.abs().max(b.abs());
        let all_near =
            |a: &[f64], b: &[f64]| a.len() == b.len() && a.iter().zip(b).all(|(&u, &v)| near(u, v));
        assert!(all_near(&back.means, &m.means), "{back:?} vs {m:?}");
        assert!(all_near(&back.scales, &m.scales), "{back:?} vs {m:?}");
        assert!(all_near(&back.coef, &m.coef), "{back:?} vs {m:?}");
        assert!(near(back.intercept, m.intercept));
        assert_eq!(back.iterations, m.iterations);
        for row in x.chunks(3) {
            assert!((back.predict_proba(row) - m.predict_proba(row)).abs() < 1e-14);
        }
        let params: LogisticParams =
            serde_json::from_str(&serde_json::to_string(&LogisticParams::default()).expect("ser"))
                .expect("de");
        assert_eq!(params, LogisticParams::default());
    }

    #[test]
    fn invalid_inputs_are_rejected() {
        let p = LogisticParams::default();
        expect_invalid(fit_logistic(&[], 2, &[], &p), &["empty"]);
        expect_invalid(fit_logistic(&[1.0, 2.0], 0, &[1.0], &p), &["n_features"]);
        expect_invalid(
            fit_logistic(&[1.0, 2.0, 3.0], 2, &[0.0, 1.0], &p),
            &["3 values", "n_features = 2"],
        );
        expect_invalid(
            fit_logistic(&[1.0, 2.0, 3.0, 4.0], 2, &[0.0, 1.0, 1.0], &p),
            &["3 labels", "2 feature rows"],
        );
        expect_invalid(
            fit_logistic(&[1.0, 2.0, 3.0], 1, &[0.0, 0.5, 1.0], &p),
            &["row 1", "0.5", "0 or 1"],
        );
        expect_invalid(
            fit_logistic(&[1.0, 2.0], 1, &[0.0, f64::NAN], &p),
            &["row 1", "NaN"],
        );
        expect_invalid(
            fit_logistic(&[1.0, 2.0, 3.0], 1, &[1.0, 1.0, 1.0], &p),
            &["one class"],
        );
        expect_invalid(
            fit_logistic(&[1.0, 2.0, 3.0], 1, &[0.0, 0.0, 0.0], &p),
            &["one class"],
        );
        expect_invalid(
            fit_logistic(&[1.0, 2.0, 3.0, 4.0, 5.0, f64::NAN], 3, &[0.0, 1.0], &p),
            &["non-finite", "row 1", "column 2"],
        );
        expect_invalid(
            fit_logistic(&[f64::INFINITY, 2.0], 1, &[0.0, 1.0], &p),
            &["non-finite", "row 0", "column 0"],
        );
        let bad_l2 = LogisticParams {
            l2: -1.0,
            ..LogisticParams::default()
        };
        expect_invalid(fit_logistic(&[1.0, 2.0], 1, &[0.0, 1.0], &bad_l2), &["l2"]);
        let bad_tol = LogisticParams {
            tol: f64::NAN,
            ..LogisticParams::default()
        };
        expect_invalid(
            fit_logistic(&[1.0, 2.0], 1, &[0.0, 1.0], &bad_tol),
            &["tolerance"],
        );
    }

    #[test]
    fn bank_churn_holdout_auc() {
        const PATH: &str = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/data/bank-churn/churn_modelling.csv"
        );
        const FEATURES: [&str; 8] = [
            "CreditScore",
            "Age",
            "Tenure",
            "Balance",
            "NumOfProducts",
            "HasCrCard",
            "IsActiveMember",
            "EstimatedSalary",
        ];
        let text = std::fs::read_to_string(PATH).expect("read churn_modelling.csv");
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().expect("header").trim().split(',').collect();
        let col = |name: &str| {
            header
                .iter()
                .position(|h| *h == name)
                .unwrap_or_else(|| panic!("missing column {name}"))
        };
        let feature_cols: Vec<usize> = FEATURES.iter().map(|f| col(f)).collect();
        let target_col = col("Exited");
        let mut x = Vec::new();
        let mut y = Vec::new();
        for line in lines {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split(',').collect();
            assert_eq!(fields.len(), header.len(), "bad line {line:?}");
            for &c in &feature_cols {
                x.push(fields[c].parse::<f64>().expect("numeric feature"));
            }
            y.push(fields[target_col].parse::<f64>().expect("numeric target"));
        }
        assert_eq!(y.len(), 10_000);
        let nf = FEATURES.len();

        let (train, holdout) = stratified_holdout(&y, 0.2, 42);
        assert_eq!(holdout.len(), 2000);
        let take = |idx: &[usize]| -> (Vec<f64>, Vec<f64>) {
            let xs = idx
                .iter()
                .flat_map(|&i| x[i * nf..(i + 1) * nf].iter().copied())
                .collect();
            let ys = idx.iter().map(|&i| y[i]).collect();
            (xs, ys)
        };
        let (x_train, y_train) = take(&train);
        let (x_hold, y_hold) = take(&holdout);

        let params = LogisticParams::default();
        let model = fit_logistic(&x_train, nf, &y_train, &params).expect("fit");
        let grad = objective_gradient(&model, &x_train, &y_train, params.l2);
        assert!(grad.iter().all(|g| g.abs() < 1e-6), "gradient {grad:?}");

        let probs = model.predict_proba_batch(&x_hold, nf);
        let auc = roc_auc(&y_hold, &probs);
        println!(
            "bank-churn logistic holdout ROC AUC = {auc:.4} ({} Newton steps)",
            model.iterations
        );
        assert!((0.70..=0.85).contains(&auc), "holdout AUC {auc}");
        // Older customers and inactive members churn more in this data set.
        assert!(model.coef[col_index(&FEATURES, "Age")] > 0.0);
        assert!(model.coef[col_index(&FEATURES, "IsActiveMember")] < 0.0);
    }

    fn col_index(names: &[&str], name: &str) -> usize {
        names
            .iter()
            .position(|n| *n == name)
            .unwrap_or_else(|| panic!("unknown feature {name}"))
    }
}
