//! The drift reference: what the monitor keeps of the training rows so that it
//! can compare live windows with them without the rows themselves.
//!
//! Numbers keep their exact value counts while they have at most
//! [`EXACT_VALUES`] distinct values (every reference of at most 1,000 rows is
//! therefore exact, which is where Evidently runs its p-value tests); beyond
//! that, [`QUANTILES`]` + 1` evenly spaced quantiles stand for the
//! distribution, read as a piecewise-linear CDF. That CDF is within one
//! quantile step (1/[`QUANTILES`] = 0.001) of the empirical one, and the
//! normalised Wasserstein distance computed from it is within
//! `(max - min) / (QUANTILES × norm)` of the exact one; every result computed
//! from quantiles carries that bound.
//!
//! Categories keep their counts up to [`MAX_CATEGORIES`]; any further ones go
//! into one `other` bucket (counted, never silently dropped).

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::sample::{FeatureKind, FeatureSample};

/// Distinct values up to which a numeric reference is kept exactly.
pub const EXACT_VALUES: usize = 1000;
/// Quantile steps of an approximate numeric reference (1,001 points).
pub const QUANTILES: usize = 1000;
/// Categories kept per categorical reference.
pub const MAX_CATEGORIES: usize = 1000;

/// A numeric feature's reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NumericReference {
    /// Rows with a value.
    pub rows: u64,
    /// Rows without one.
    pub nulls: u64,
    /// Mean of the values.
    pub mean: f64,
    /// Population standard deviation (NumPy's `np.std`, as Evidently normalises by).
    pub std: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Each distinct value with its count, ascending, when there are at most
    /// [`EXACT_VALUES`] of them; otherwise empty.
    #[serde(default)]
    pub values: Vec<(f64, u64)>,
    /// Quantiles at `i / QUANTILES` for `i` in `0..=QUANTILES` (NumPy's linear
    /// interpolation); empty when `values` is exact.
    #[serde(default)]
    pub quantiles: Vec<f64>,
}

/// A categorical feature's reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CategoricalReference {
    /// Rows with a value.
    pub rows: u64,
    /// Rows without one.
    pub nulls: u64,
    /// Rows per category (the [`MAX_CATEGORIES`] most frequent).
    pub counts: BTreeMap<String, u64>,
    /// Rows in categories beyond those kept.
    #[serde(default)]
    pub other: u64,
}

/// One feature's reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ColumnReference {
    /// Numbers.
    Numeric(NumericReference),
    /// Categories.
    Categorical(CategoricalReference),
}

impl ColumnReference {
    /// Summarises a sample.
    pub fn from_sample(sample: FeatureSample) -> Self {
        match sample {
            FeatureSample::Numeric { values, nulls } => {
                ColumnReference::Numeric(NumericReference::from_values(values, nulls))
            }
            FeatureSample::Categorical { counts, nulls } => {
                ColumnReference::Categorical(CategoricalReference::from_counts(counts, nulls))
            }
        }
    }

    /// Rows with a value.
    pub fn rows(&self) -> u64 {
        match self {
            ColumnReference::Numeric(n) => n.rows,
            ColumnReference::Categorical(c) => c.rows,
        }
    }

    /// Rows without one.
    pub fn nulls(&self) -> u64 {
        match self {
            ColumnReference::Numeric(n) => n.nulls,
            ColumnReference::Categorical(c) => c.nulls,
        }
    }

    /// Its kind.
    pub fn kind(&self) -> FeatureKind {
        match self {
            ColumnReference::Numeric(_) => FeatureKind::Numeric,
            ColumnReference::Categorical(_) => FeatureKind::Categorical,
        }
    }

    /// Checks a reference read from storage is usable: counts add up, values are
    /// finite and ascending, quantiles are complete. Names the first problem.
    pub fn check(&self) -> Result<(), String> {
        match self {
            ColumnReference::Numeric(n) => n.check(),
            ColumnReference::Categorical(c) => {
                let sum: u64 = c
                    .counts
                    .values()
                    .try_fold(0u64, |a, b| a.checked_add(*b))
                    .ok_or("category counts overflow")?;
                if sum.checked_add(c.other) != Some(c.rows) {
                    return Err(format!(
                        "category counts add up to {} but rows is {}",
                        sum.saturating_add(c.other),
                        c.rows
                    ));
                }
                if c.counts.len() > MAX_CATEGORIES {
                    return Err(format!(
                        "{} categories, more than the {MAX_CATEGORIES} a reference keeps",
                        c.counts.len()
                    ));
                }
                Ok(())
            }
        }
    }
}

/// Linear-interpolation quantile of ascending values (NumPy's default).
fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

impl NumericReference {
    /// Summarises values (any order; non-finite ones must already be counted as nulls).
    pub fn from_values(mut values: Vec<f64>, nulls: u64) -> Self {
        values.retain(|v| v.is_finite());
        radsort::sort(&mut values);
        let n = values.len();
        if n == 0 {
            return Self {
                rows: 0,
                nulls,
                mean: 0.0,
                std: 0.0,
                min: 0.0,
                max: 0.0,
                values: Vec::new(),
                quantiles: Vec::new(),
            };
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n as f64;
        let mut exact: Vec<(f64, u64)> = Vec::new();
        for v in &values {
            match exact.last_mut() {
                Some((last, c)) if *last == *v => *c += 1,
                _ => {
                    if exact.len() == EXACT_VALUES {
                        exact.clear();
                        exact.shrink_to_fit();
                        break;
                    }
                    exact.push((*v, 1));
                }
            }
        }
        let quantiles = if exact.is_empty() {
            (0..=QUANTILES)
                .map(|i| quantile_sorted(&values, i as f64 / QUANTILES as f64))
                .collect()
        } else {
            Vec::new()
        };
        Self {
            rows: n as u64,
            nulls,
            mean,
            std: var.sqrt(),
            min: values[0],
            max: values[n - 1],
            values: exact,
            quantiles,
        }
    }

    /// Whether the distribution is kept exactly.
    pub fn is_exact(&self) -> bool {
        self.quantiles.is_empty()
    }

    /// Distinct values, when exact (`None` means more than [`EXACT_VALUES`]).
    pub fn distinct(&self) -> Option<usize> {
        self.is_exact().then_some(self.values.len())
    }

    /// Share of the values at or below `x` (exact, or from the quantiles'
    /// piecewise-linear CDF).
    pub fn cdf(&self, x: f64) -> f64 {
        if self.rows == 0 {
            return 0.0;
        }
        if self.is_exact() {
            return Cdf::new(self).at(x);
        }
        let q = &self.quantiles;
        if x < q[0] {
            return 0.0;
        }
        if x >= q[q.len() - 1] {
            return 1.0;
        }
        // Last quantile at or below x (ties: the highest, so flat runs count fully).
        let i = q.partition_point(|v| *v <= x) - 1;
        let (lo, hi) = (q[i], q[i + 1]);
        let frac = if hi > lo { (x - lo) / (hi - lo) } else { 0.0 };
        (i as f64 + frac) / QUANTILES as f64
    }

    /// Share of the values strictly below `x` (the CDF's left limit).
    pub fn cdf_left(&self, x: f64) -> f64 {
        if self.rows == 0 {
            return 0.0;
        }
        if self.is_exact() {
            return Cdf::new(self).left(x);
        }
        let q = &self.quantiles;
        if x <= q[0] {
            return 0.0;
        }
        if x > q[q.len() - 1] {
            return 1.0;
        }
        // Last quantile strictly below x: q[i] < x <= q[i + 1].
        let i = q.partition_point(|v| *v < x) - 1;
        let (lo, hi) = (q[i], q[i + 1]);
        let frac = if hi > lo { (x - lo) / (hi - lo) } else { 1.0 };
        (i as f64 + frac) / QUANTILES as f64
    }

    /// The points where the CDF may bend or jump: the exact values, or the quantiles.
    pub fn support(&self) -> impl Iterator<Item = f64> + '_ {
        let exact = self.values.iter().map(|(v, _)| *v);
        let approx = self.quantiles.iter().copied();
        exact.chain(approx)
    }

    /// Bound on the error of the normalised Wasserstein distance computed from
    /// this reference (0 when exact).
    pub fn wasserstein_bound(&self, norm: f64) -> f64 {
        if self.is_exact() {
            0.0
        } else {
            (self.max - self.min) / (QUANTILES as f64 * norm)
        }
    }

    fn check(&self) -> Result<(), String> {
        for (what, v) in [
            ("mean", self.mean),
            ("std", self.std),
            ("min", self.min),
            ("max", self.max),
        ] {
            if !v.is_finite() {
                return Err(format!("{what} is not a finite number"));
            }
        }
        if self.std < 0.0 || self.min > self.max {
            return Err("std is negative or min exceeds max".into());
        }
        if self.rows == 0 {
            return Ok(());
        }
        if self.is_exact() {
            if self.values.is_empty() || self.values.len() > EXACT_VALUES {
                return Err(format!(
                    "{} exact values (expected 1 to {EXACT_VALUES})",
                    self.values.len()
                ));
            }
            let sum = self
                .values
                .iter()
                .try_fold(0u64, |a, (_, c)| a.checked_add(*c))
                .ok_or("value counts overflow")?;
            if sum != self.rows {
                return Err(format!(
                    "value counts add up to {sum} but rows is {}",
                    self.rows
                ));
            }
            if self
                .values
                .windows(2)
                .any(|w| !w[0].0.is_finite() || w[0].0 >= w[1].0)
            {
                return Err("exact values are not finite and strictly ascending".into());
            }
        } else {
            if self.quantiles.len() != QUANTILES + 1 {
                return Err(format!(
                    "{} quantiles (expected {})",
                    self.quantiles.len(),
                    QUANTILES + 1
                ));
            }
            if self
                .quantiles
                .windows(2)
                .any(|w| !w[0].is_finite() || !w[1].is_finite() || w[0] > w[1])
            {
                return Err("quantiles are not finite and ascending".into());
            }
        }
        Ok(())
    }
}

/// A numeric reference's CDF, evaluated in O(log n) per point (exact values
/// get their prefix sums once).
pub struct Cdf<'a> {
    reference: &'a NumericReference,
    prefix: Vec<u64>,
}

impl<'a> Cdf<'a> {
    /// Prepares the CDF of a reference.
    pub fn new(reference: &'a NumericReference) -> Self {
        let prefix = reference
            .values
            .iter()
            .scan(0u64, |acc, (_, c)| {
                *acc += c;
                Some(*acc)
            })
            .collect();
        Self { reference, prefix }
    }

    fn exact_share(&self, k: usize) -> f64 {
        if k == 0 {
            0.0
        } else {
            self.prefix[k - 1] as f64 / self.reference.rows as f64
        }
    }

    /// Share at or below `x`.
    pub fn at(&self, x: f64) -> f64 {
        let r = self.reference;
        if r.is_exact() && r.rows > 0 {
            self.exact_share(r.values.partition_point(|(v, _)| *v <= x))
        } else {
            r.cdf(x)
        }
    }

    /// Share strictly below `x`.
    pub fn left(&self, x: f64) -> f64 {
        let r = self.reference;
        if r.is_exact() && r.rows > 0 {
            self.exact_share(r.values.partition_point(|(v, _)| *v < x))
        } else {
            r.cdf_left(x)
        }
    }
}

impl CategoricalReference {
    /// Summarises counts, keeping the [`MAX_CATEGORIES`] most frequent.
    pub fn from_counts(counts: BTreeMap<String, u64>, nulls: u64) -> Self {
        let rows: u64 = counts.values().sum();
        if counts.len() <= MAX_CATEGORIES {
            return Self {
                rows,
                nulls,
                counts,
                other: 0,
            };
        }
        let mut all: Vec<(String, u64)> = counts.into_iter().collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let other = all[MAX_CATEGORIES..].iter().map(|(_, c)| c).sum();
        all.truncate(MAX_CATEGORIES);
        Self {
            rows,
            nulls,
            counts: all.into_iter().collect(),
            other,
        }
    }
}

/// The drift reference of every feature of a data set (or a served version).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftReference {
    /// Rows summarised.
    pub rows: u64,
    /// One reference per feature, by name.
    pub columns: Vec<(String, ColumnReference)>,
}

impl DriftReference {
    /// Summarises the samples of a sampler's features.
    pub fn from_samples(rows: u64, samples: Vec<(String, FeatureSample)>) -> Self {
        Self {
            rows,
            columns: samples
                .into_iter()
                .map(|(n, s)| (n, ColumnReference::from_sample(s)))
                .collect(),
        }
    }

    /// The reference of one feature.
    pub fn column(&self, name: &str) -> Option<&ColumnReference> {
        self.columns.iter().find(|(n, _)| n == name).map(|(_, r)| r)
    }

    /// Checks every column (see [`ColumnReference::check`]), naming the first bad one.
    pub fn check(&self) -> Result<(), String> {
        let mut seen = HashMap::new();
        for (name, c) in &self.columns {
            if seen.insert(name.as_str(), ()).is_some() {
                return Err(format!("column `{name}` appears twice"));
            }
            c.check().map_err(|e| format!("column `{name}`: {e}"))?;
        }
        Ok(())
    }
}
