//! Multivariate drift: the reconstruction error of a PCA fitted on the
//! training rows (NannyML's data reconstruction drift).
//!
//! At training time the model's encoded features are standardised and a PCA
//! keeps the components that explain 65 % of their variance (NannyML's
//! default). A row's reconstruction error is the Euclidean distance between
//! its standardised features and their projection back from those
//! components; a window's error is the mean over its rows. The reference's
//! spread comes from random chunks of training rows of the monitoring window's
//! size: a window whose error leaves mean ± 3 standard deviations of the
//! chunks' errors has drifted (NannyML's default thresholds). Univariate tests
//! miss a change in how features move together (the correlation between
//! tenure and total charges breaking, say); this does not. The features whose
//! squared reconstruction error grew most are named.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

/// Share of the standardised variance the kept components explain.
pub const EXPLAINED_VARIANCE: f64 = 0.65;
/// Widest encoding a PCA is fitted on (a covariance of this many squared).
pub const MAX_FEATURES: usize = 256;
/// Features named as contributing most.
const TOP_FEATURES: usize = 5;
/// Random chunks of training rows the thresholds come from.
const REFERENCE_CHUNKS: usize = 50;

/// A PCA fitted on the training rows, with the reference's error and its
/// thresholds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PcaReference {
    /// Encoded feature names, in the encoding's order.
    pub features: Vec<String>,
    /// Training mean of each feature.
    pub mean: Vec<f64>,
    /// Training standard deviation of each feature (1 for a constant one).
    pub scale: Vec<f64>,
    /// Kept components, each of `features.len()` values (unit length).
    pub components: Vec<Vec<f64>>,
    /// Variance share they explain.
    pub explained: f64,
    /// Rows per reference chunk (the monitoring window's size).
    pub chunk_rows: usize,
    /// Mean reconstruction error over the reference chunks.
    pub error_mean: f64,
    /// Its standard deviation over the chunks.
    pub error_std: f64,
    /// Lower threshold (mean − 3 std, at least 0).
    pub lower: f64,
    /// Upper threshold (mean + 3 std).
    pub upper: f64,
    /// Mean squared reconstruction error of each feature on the training rows.
    pub feature_error: Vec<f64>,
}

/// A window's running reconstruction errors.
#[derive(Debug, Clone, Default)]
pub struct PcaWindow {
    rows: u64,
    error: f64,
    feature_error: Vec<f64>,
    z: Vec<f64>,
    scores: Vec<f64>,
}

/// A window's multivariate drift.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MultivariateDrift {
    /// Method name (`pca_reconstruction`).
    pub method: String,
    /// Rows the error is over.
    pub rows: u64,
    /// The window's mean reconstruction error.
    pub error: f64,
    /// The reference's mean error.
    pub reference_error: f64,
    /// Thresholds.
    pub lower: f64,
    /// Upper threshold.
    pub upper: f64,
    /// Whether the error left the thresholds.
    pub drifted: bool,
    /// Components kept and the variance share they explain.
    pub components: usize,
    /// Variance share explained.
    pub explained: f64,
    /// Features whose squared reconstruction error grew most: (name, window
    /// mean squared error, reference's).
    pub top_features: Vec<(String, f64, f64)>,
}

impl PcaReference {
    /// Fits on `x` (row-major, `names.len()` columns); `chunk_rows` is the
    /// monitoring window. `None` with too few rows, too many features, or
    /// nothing varying.
    pub fn fit(x: &[f64], names: &[String], chunk_rows: usize, seed: u64) -> Option<Self> {
        let d = names.len();
        if d == 0 || d > MAX_FEATURES || !x.len().is_multiple_of(d) {
            return None;
        }
        let n = x.len() / d;
        if n < 20 || chunk_rows == 0 {
            return None;
        }
        let value = |r: usize, j: usize| {
            let v = x[r * d + j];
            if v.is_finite() { Some(v) } else { None }
        };
        let mut mean = vec![0.0; d];
        let mut count = vec![0usize; d];
        for r in 0..n {
            for j in 0..d {
                if let Some(v) = value(r, j) {
                    mean[j] += v;
                    count[j] += 1;
                }
            }
        }
        for j in 0..d {
            mean[j] = if count[j] > 0 {
                mean[j] / count[j] as f64
            } else {
                0.0
            };
        }
        let mut scale = vec![0.0; d];
        for r in 0..n {
            for j in 0..d {
                if let Some(v) = value(r, j) {
                    scale[j] += (v - mean[j]).powi(2);
                }
            }
        }
        for j in 0..d {
            let s = (scale[j] / (count[j].max(2) - 1) as f64).sqrt();
            scale[j] = if s > 1e-12 && s.is_finite() { s } else { 1.0 };
        }
        // Covariance of the standardised features (a missing value is the mean).
        let mut cov = vec![0.0; d * d];
        let mut z = vec![0.0; d];
        for r in 0..n {
            for j in 0..d {
                z[j] = value(r, j).map_or(0.0, |v| (v - mean[j]) / scale[j]);
            }
            for a in 0..d {
                if z[a] == 0.0 {
                    continue;
                }
                for b in a..d {
                    cov[a * d + b] += z[a] * z[b];
                }
            }
        }
        for a in 0..d {
            for b in a..d {
                let v = cov[a * d + b] / (n - 1) as f64;
                cov[a * d + b] = v;
                cov[b * d + a] = v;
            }
        }
        let (values, vectors) = jacobi_eigen(cov, d);
        let total: f64 = values.iter().filter(|v| **v > 0.0).sum();
        if total <= 0.0 {
            return None;
        }
        let mut order: Vec<usize> = (0..d).collect();
        order.sort_by(|&a, &b| values[b].total_cmp(&values[a]));
        let mut components = Vec::new();
        let mut explained = 0.0;
        for &i in &order {
            if explained >= EXPLAINED_VARIANCE {
                break;
            }
            explained += values[i].max(0.0) / total;
            components.push((0..d).map(|j| vectors[j * d + i]).collect::<Vec<f64>>());
        }
        let mut reference = Self {
            features: names.to_vec(),
            mean,
            scale,
            components,
            explained,
            chunk_rows,
            error_mean: 0.0,
            error_std: 0.0,
            lower: 0.0,
            upper: 0.0,
            feature_error: vec![0.0; d],
        };
        // Per-row errors once; chunks are random sets of rows.
        let mut w = PcaWindow::default();
        let mut row_error = Vec::with_capacity(n);
        let mut feature_error = vec![0.0; d];
        for r in 0..n {
            let before = w.error;
            reference.add(&x[r * d..(r + 1) * d], &mut w);
            row_error.push(w.error - before);
        }
        for (j, e) in feature_error.iter_mut().enumerate() {
            *e = w.feature_error[j] / n as f64;
        }
        reference.feature_error = feature_error;
        let size = chunk_rows.min(n);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut idx: Vec<usize> = (0..n).collect();
        let chunk_means: Vec<f64> = (0..REFERENCE_CHUNKS)
            .map(|_| {
                idx.shuffle(&mut rng);
                idx[..size].iter().map(|&i| row_error[i]).sum::<f64>() / size as f64
            })
            .collect();
        let m = chunk_means.iter().sum::<f64>() / chunk_means.len() as f64;
        let s = (chunk_means.iter().map(|v| (v - m).powi(2)).sum::<f64>()
            / (chunk_means.len() - 1) as f64)
            .sqrt();
        reference.error_mean = m;
        reference.error_std = s;
        reference.lower = (m - 3.0 * s).max(0.0);
        reference.upper = m + 3.0 * s;
        Some(reference)
    }

    /// Whether the stored reference is consistent.
    pub fn check(&self) -> Result<(), String> {
        let d = self.features.len();
        if d == 0 || d > MAX_FEATURES {
            return Err(format!("PCA over {d} features (1 to {MAX_FEATURES})"));
        }
        if self.mean.len() != d || self.scale.len() != d || self.feature_error.len() != d {
            return Err("PCA reference vectors differ in length".into());
        }
        if self.components.is_empty()
            || self.components.len() > d
            || self.components.iter().any(|c| c.len() != d)
        {
            return Err("PCA components do not match the features".into());
        }
        let all = self
            .mean
            .iter()
            .chain(&self.scale)
            .chain(&self.feature_error)
            .chain(self.components.iter().flatten())
            .chain([&self.error_mean, &self.error_std, &self.lower, &self.upper]);
        if all.into_iter().any(|v| !v.is_finite()) || self.scale.iter().any(|s| *s <= 0.0) {
            return Err("PCA reference has a value that is not a finite number".into());
        }
        Ok(())
    }

    /// Adds one encoded row to a window.
    pub fn add(&self, row: &[f64], w: &mut PcaWindow) {
        let d = self.features.len();
        if row.len() != d {
            return;
        }
        w.z.resize(d, 0.0);
        w.scores.resize(self.components.len(), 0.0);
        if w.feature_error.len() != d {
            w.feature_error = vec![0.0; d];
        }
        for (j, (z, v)) in w.z.iter_mut().zip(row).enumerate() {
            *z = if v.is_finite() {
                (v - self.mean[j]) / self.scale[j]
            } else {
                0.0
            };
        }
        for (k, c) in self.components.iter().enumerate() {
            w.scores[k] = c.iter().zip(&w.z).map(|(a, b)| a * b).sum();
        }
        let mut sq = 0.0;
        for j in 0..d {
            let recon: f64 = self
                .components
                .iter()
                .zip(&w.scores)
                .map(|(c, s)| c[j] * s)
                .sum();
            let e = (w.z[j] - recon).powi(2);
            w.feature_error[j] += e;
            sq += e;
        }
        w.error += sq.sqrt();
        w.rows += 1;
    }

    /// The window's verdict; `None` for an empty window.
    pub fn result(&self, w: &PcaWindow) -> Option<MultivariateDrift> {
        if w.rows == 0 {
            return None;
        }
        let n = w.rows as f64;
        let error = w.error / n;
        let mut growth: Vec<(usize, f64)> = (0..self.features.len())
            .map(|j| {
                (
                    j,
                    w.feature_error.get(j).copied().unwrap_or(0.0) / n - self.feature_error[j],
                )
            })
            .collect();
        growth.sort_by(|a, b| b.1.total_cmp(&a.1));
        let top_features = growth
            .into_iter()
            .filter(|(_, g)| *g > 0.0)
            .take(TOP_FEATURES)
            .map(|(j, _)| {
                (
                    self.features[j].clone(),
                    w.feature_error[j] / n,
                    self.feature_error[j],
                )
            })
            .collect();
        Some(MultivariateDrift {
            method: "pca_reconstruction".into(),
            rows: w.rows,
            error,
            reference_error: self.error_mean,
            lower: self.lower,
            upper: self.upper,
            drifted: error < self.lower || error > self.upper,
            components: self.components.len(),
            explained: self.explained,
            top_features,
        })
    }
}

/// Eigenvalues and eigenvectors (column `i` of the row-major `d × d` result
/// belongs to value `i`) of a symmetric matrix, by cyclic Jacobi rotations.
fn jacobi_eigen(mut a: Vec<f64>, d: usize) -> (Vec<f64>, Vec<f64>) {
    let mut v = vec![0.0; d * d];
    for i in 0..d {
        v[i * d + i] = 1.0;
    }
    for _sweep in 0..100 {
        let off: f64 = (0..d)
            .flat_map(|p| ((p + 1)..d).map(move |q| (p, q)))
            .map(|(p, q)| a[p * d + q].powi(2))
            .sum();
        if off < 1e-22 {
            break;
        }
        for p in 0..d {
            for q in (p + 1)..d {
                let apq = a[p * d + q];
                if apq.abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q * d + q] - a[p * d + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..d {
                    let akp = a[k * d + p];
                    let akq = a[k * d + q];
                    a[k * d + p] = c * akp - s * akq;
                    a[k * d + q] = s * akp + c * akq;
                }
                for k in 0..d {
                    let apk = a[p * d + k];
                    let aqk = a[q * d + k];
                    a[p * d + k] = c * apk - s * aqk;
                    a[q * d + k] = s * apk + c * aqk;
                }
                for k in 0..d {
                    let vkp = v[k * d + p];
                    let vkq = v[k * d + q];
                    v[k * d + p] = c * vkp - s * vkq;
                    v[k * d + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..d).map(|i| a[i * d + i]).collect(), v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn jacobi_finds_the_eigenpairs_of_a_known_matrix() {
        // [[2, 1], [1, 2]]: eigenvalues 3 and 1.
        let (mut values, vectors) = jacobi_eigen(vec![2.0, 1.0, 1.0, 2.0], 2);
        values.sort_by(f64::total_cmp);
        assert!((values[0] - 1.0).abs() < 1e-12 && (values[1] - 3.0).abs() < 1e-12);
        for i in 0..2 {
            let len: f64 = (0..2).map(|j| vectors[j * 2 + i].powi(2)).sum();
            assert!((len - 1.0).abs() < 1e-12);
        }
    }

    /// Rows of (a, b, c) where b follows a closely and c is noise.
    fn rows(n: usize, seed: u64, correlated: bool) -> Vec<f64> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut x = Vec::with_capacity(n * 3);
        for _ in 0..n {
            let a: f64 = rng.random::<f64>() * 10.0;
            let b = if correlated {
                a + rng.random::<f64>() * 0.5
            } else {
                rng.random::<f64>() * 10.0
            };
            x.extend([a, b, rng.random::<f64>()]);
        }
        x
    }

    #[test]
    fn a_broken_correlation_drifts_though_each_marginal_is_the_same() {
        let names: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let r = PcaReference::fit(&rows(5_000, 1, true), &names, 500, 7).unwrap();
        r.check().unwrap();
        assert_eq!(r.components.len(), 1, "a and b are one direction: {r:?}");
        let judge = |x: &[f64]| {
            let mut w = PcaWindow::default();
            for row in x.chunks(3) {
                r.add(row, &mut w);
            }
            r.result(&w).unwrap()
        };
        let same = judge(&rows(500, 2, true));
        assert!(!same.drifted, "{same:?}");
        let broken = judge(&rows(500, 3, false));
        assert!(broken.drifted, "{broken:?}");
        let named: Vec<&str> = broken.top_features.iter().map(|f| f.0.as_str()).collect();
        assert!(named.contains(&"a") && named.contains(&"b"), "{named:?}");
        assert!(r.result(&PcaWindow::default()).is_none());
        let json = serde_json::to_string(&broken).unwrap();
        assert!(!json.contains("NaN"));
    }

    #[test]
    fn nothing_to_fit_gives_none_and_a_corrupt_reference_is_refused() {
        let names: Vec<String> = vec!["a".into()];
        assert!(PcaReference::fit(&[1.0; 100], &names, 10, 1).is_none());
        assert!(PcaReference::fit(&[], &names, 10, 1).is_none());
        let two: Vec<String> = vec!["a".into(), "b".into()];
        let mut r = PcaReference::fit(&rows(200, 1, true)[..400], &two, 50, 1).unwrap();
        r.scale[0] = f64::NAN;
        assert!(r.check().is_err());
    }
}
