//! Data drift: a current sample of every feature compared with the training
//! reference, one statistical method per column, and the data set's verdict by
//! the share of drifted columns.
//!
//! The methods, their defaults and the rule that chooses one follow Evidently
//! 0.7 (`DataDriftPreset`) so that its users read the same numbers:
//!
//! | reference rows | column | distinct values (both samples) | method | drifted when |
//! |---|---|---|---|---|
//! | ≤ 1,000 | numeric | > 5 | Kolmogorov–Smirnov | p < 0.05 |
//! | ≤ 1,000 | numeric or categorical | 3 to 5 (any, for categories) | chi-square | p < 0.05 |
//! | ≤ 1,000 | numeric or categorical | ≤ 2 | two-proportion z | p < 0.05 |
//! | > 1,000 | numeric | > 5 | Wasserstein (normalised by the reference's std) | ≥ 0.1 |
//! | > 1,000 | numeric ≤ 5 values, or categorical | | Jensen–Shannon | ≥ 0.1 |
//!
//! PSI (≥ 0.1) may be chosen for any column. Nulls are left out of every test
//! and reported as shares; categories the reference never saw are counted and
//! listed. A column whose values are all equal in both samples scores 0, never
//! NaN; a column with fewer than `min_rows` values in the current sample, or
//! none in the reference, is skipped with the reason and does not vote.

pub mod html;
mod methods;
pub mod multivariate;
pub mod reference;
pub mod special;

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize, Serializer};

pub use reference::{ColumnReference, DriftReference};

use crate::sample::{FeatureKind, FeatureSample};
use methods::Pairs;
use reference::NumericReference;

/// A drift method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Two-sample Kolmogorov–Smirnov test (numbers; p-value).
    Ks,
    /// Pearson's chi-square test (categories; p-value).
    Chisquare,
    /// Two-proportion z-test (two values; p-value).
    Z,
    /// Wasserstein distance over the reference's standard deviation (numbers).
    Wasserstein,
    /// Jensen–Shannon distance (natural log; both kinds).
    Jensenshannon,
    /// Population stability index (both kinds).
    Psi,
}

impl Method {
    /// Every method, for help texts.
    pub const ALL: [Method; 6] = [
        Method::Ks,
        Method::Chisquare,
        Method::Z,
        Method::Wasserstein,
        Method::Jensenshannon,
        Method::Psi,
    ];

    /// The name used in configuration and reports (Evidently's).
    pub fn name(self) -> &'static str {
        match self {
            Method::Ks => "ks",
            Method::Chisquare => "chisquare",
            Method::Z => "z",
            Method::Wasserstein => "wasserstein",
            Method::Jensenshannon => "jensenshannon",
            Method::Psi => "psi",
        }
    }

    /// Parses a name.
    pub fn parse(name: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Whether the method's score is a p-value (drift below the threshold)
    /// rather than a distance (drift at or above it).
    pub fn is_test(self) -> bool {
        matches!(self, Method::Ks | Method::Chisquare | Method::Z)
    }

    /// Evidently's default threshold.
    pub fn default_threshold(self) -> f64 {
        if self.is_test() { 0.05 } else { 0.1 }
    }

    /// Whether the method applies to a column of this kind.
    pub fn applies_to(self, kind: FeatureKind) -> bool {
        match self {
            Method::Ks | Method::Wasserstein => kind == FeatureKind::Numeric,
            _ => true,
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How one column is tested, when not by the default rule.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnOptions {
    /// The method.
    pub method: Option<Method>,
    /// The threshold (a p-value for tests, a distance otherwise).
    pub threshold: Option<f64>,
}

/// How drift is computed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DriftOptions {
    /// Share of drifted columns at or above which the data set has drifted (Evidently: 0.5).
    pub drift_share: f64,
    /// Fewest values a current column needs to be tested.
    pub min_rows: u64,
    /// Method for every column not named in `columns` (default: Evidently's rule).
    pub method: Option<Method>,
    /// Threshold for every column not named in `columns` (default: the method's).
    pub threshold: Option<f64>,
    /// Per-column overrides.
    pub columns: BTreeMap<String, ColumnOptions>,
}

impl Default for DriftOptions {
    fn default() -> Self {
        Self {
            drift_share: 0.5,
            min_rows: 30,
            method: None,
            threshold: None,
            columns: BTreeMap::new(),
        }
    }
}

/// Why drift options or a reference cannot be used.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DriftError {
    /// An option is out of range or does not fit a column.
    #[error("invalid drift option {key}: {reason}")]
    Option {
        /// The option, as a dotted key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A stored reference is inconsistent.
    #[error("invalid drift reference: {0}")]
    Reference(String),
}

impl DriftOptions {
    /// Checks ranges, and that every per-column method fits the column's kind
    /// in `reference` and names a column it has.
    pub fn check(&self, reference: &DriftReference) -> Result<(), DriftError> {
        let bad = |key: String, reason: String| DriftError::Option { key, reason };
        if !(self.drift_share > 0.0 && self.drift_share <= 1.0) {
            return Err(bad(
                "drift_share".into(),
                format!("{} is not in (0, 1]", self.drift_share),
            ));
        }
        if self.min_rows == 0 {
            return Err(bad("min_rows".into(), "must be at least 1".into()));
        }
        let check_threshold = |key: String, t: Option<f64>| match t {
            Some(t) if !(t.is_finite() && t > 0.0) => {
                Err(bad(key, format!("{t} is not a positive number")))
            }
            _ => Ok(()),
        };
        check_threshold("threshold".into(), self.threshold)?;
        for (name, o) in &self.columns {
            let Some(r) = reference.column(name) else {
                return Err(bad(
                    format!("columns.{name}"),
                    "the reference has no such column".into(),
                ));
            };
            check_threshold(format!("columns.{name}.threshold"), o.threshold)?;
            if let Some(m) = o.method
                && !m.applies_to(r.kind())
            {
                return Err(bad(
                    format!("columns.{name}.method"),
                    format!("{m} does not apply to a {:?} column", r.kind()),
                ));
            }
        }
        Ok(())
    }

    /// The method and threshold of a column: its own, else the global ones (a
    /// global method that does not fit the column's kind, such as `ks` for a
    /// category, leaves that column to the default rule, threshold included).
    fn for_column(&self, name: &str, kind: FeatureKind) -> (Option<Method>, Option<f64>) {
        let o = self.columns.get(name);
        let global = self.method.filter(|m| m.applies_to(kind));
        match o.and_then(|o| o.method) {
            Some(m) => (Some(m), o.and_then(|o| o.threshold)),
            None if self.method.is_some() && global.is_none() => {
                (None, o.and_then(|o| o.threshold))
            }
            None => (global, o.and_then(|o| o.threshold).or(self.threshold)),
        }
    }
}

/// Serialises a number that may be infinite (a chi-square against a category
/// the reference never saw) as `null`, keeping reports valid JSON.
fn finite_or_null<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.is_finite() {
        s.serialize_f64(*v)
    } else {
        s.serialize_none()
    }
}

fn de_finite_or_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::INFINITY))
}

/// Shares per bucket or category, reference beside current (for reports).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Distribution {
    /// Bucket or category labels.
    pub labels: Vec<String>,
    /// Reference share per label.
    pub reference: Vec<f64>,
    /// Current share per label.
    pub current: Vec<f64>,
}

/// One column's drift result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnDrift {
    /// The column.
    pub column: String,
    /// Compared as numbers or categories.
    pub kind: FeatureKind,
    /// The method used.
    pub method: Method,
    /// The test statistic (D, chi-square, z) or the distance; `null` when infinite.
    #[serde(
        serialize_with = "finite_or_null",
        deserialize_with = "de_finite_or_null"
    )]
    pub statistic: f64,
    /// The p-value, for tests.
    pub p_value: Option<f64>,
    /// What is compared with the threshold: the p-value for tests, the distance otherwise.
    pub score: f64,
    /// The threshold.
    pub threshold: f64,
    /// Whether the column drifted.
    pub drifted: bool,
    /// Reference values tested (nulls excluded).
    pub reference_rows: u64,
    /// Current values tested (nulls excluded).
    pub current_rows: u64,
    /// Share of nulls in the reference.
    pub reference_null_share: f64,
    /// Share of nulls in the current sample.
    pub current_null_share: f64,
    /// Current rows whose category the reference never saw.
    pub unseen_rows: u64,
    /// Up to 20 such categories with their counts.
    pub unseen: BTreeMap<String, u64>,
    /// Bound on the statistic's error when the reference is summarised by
    /// quantiles (0 when exact).
    pub error_bound: f64,
    /// Distributions, reference beside current.
    pub distribution: Distribution,
}

/// A column not tested, with the reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkippedColumn {
    /// The column.
    pub column: String,
    /// Why.
    pub reason: String,
}

/// The data set's drift: every column's result and the share verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetDrift {
    /// Rows in the reference.
    pub reference_rows: u64,
    /// Rows in the current sample.
    pub current_rows: u64,
    /// Tested columns.
    pub columns: Vec<ColumnDrift>,
    /// Columns not tested.
    pub skipped: Vec<SkippedColumn>,
    /// Tested columns that drifted.
    pub drifted_columns: usize,
    /// `drifted_columns / columns.len()` (0 when none was tested).
    pub share: f64,
    /// The share at or above which the data set has drifted.
    pub drift_share: f64,
    /// Whether the data set drifted.
    pub drifted: bool,
}

impl DatasetDrift {
    /// Whether any column or the data set drifted.
    pub fn any_drift(&self) -> bool {
        self.drifted || self.drifted_columns > 0
    }
}

/// Compares current samples with the reference, column by column.
pub fn compare(
    reference: &DriftReference,
    current_rows: u64,
    current: Vec<(String, FeatureSample)>,
    options: &DriftOptions,
) -> Result<DatasetDrift, DriftError> {
    reference.check().map_err(DriftError::Reference)?;
    options.check(reference)?;
    let mut columns = Vec::new();
    let mut skipped = Vec::new();
    let mut current: HashMap<String, FeatureSample> = current.into_iter().collect();
    let mut work: Vec<(&String, &ColumnReference, FeatureSample)> = Vec::new();
    for (name, r) in &reference.columns {
        match current.remove(name) {
            Some(sample) => work.push((name, r, sample)),
            None => skipped.push(SkippedColumn {
                column: name.clone(),
                reason: "not in the current data".into(),
            }),
        }
    }
    // Large samples (a benchmark, a file) are compared on every core, a column
    // per task; a monitoring window is small enough for one.
    let values: u64 = work.iter().map(|w| w.2.non_null()).sum();
    let threads = if values > 200_000 {
        std::thread::available_parallelism().map_or(1, |n| n.get().min(8))
    } else {
        1
    };
    let names: Vec<String> = work.iter().map(|w| w.0.clone()).collect();
    let results: Vec<(String, Result<ColumnDrift, String>)> = if threads > 1 {
        let queue = std::sync::Mutex::new(work.into_iter().enumerate().collect::<Vec<_>>());
        let mut done: Vec<(usize, String, Result<ColumnDrift, String>)> =
            std::thread::scope(|sc| {
                let handles: Vec<_> = (0..threads)
                    .map(|_| {
                        sc.spawn(|| {
                            let mut out = Vec::new();
                            loop {
                                let next = queue.lock().ok().and_then(|mut q| q.pop());
                                let Some((i, (name, r, sample))) = next else {
                                    break;
                                };
                                out.push((i, name.clone(), column_drift(name, r, sample, options)));
                            }
                            out
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .flat_map(|h| h.join().unwrap_or_default())
                    .collect()
            });
        done.sort_by_key(|d| d.0);
        // A task that died takes its columns with it: name them, never drop them.
        let mut out = Vec::with_capacity(names.len());
        let mut it = done.into_iter().peekable();
        for (i, name) in names.iter().enumerate() {
            match it.next_if(|d| d.0 == i) {
                Some((_, n, r)) => out.push((n, r)),
                None => out.push((name.clone(), Err("its computation failed".to_string()))),
            }
        }
        out
    } else {
        work.into_iter()
            .map(|(name, r, sample)| (name.clone(), column_drift(name, r, sample, options)))
            .collect()
    };
    for (name, result) in results {
        match result {
            Ok(c) => columns.push(c),
            Err(reason) => skipped.push(SkippedColumn {
                column: name,
                reason,
            }),
        }
    }
    let mut extra: Vec<String> = current.into_keys().collect();
    extra.sort();
    for name in extra {
        skipped.push(SkippedColumn {
            column: name,
            reason: "not in the reference".into(),
        });
    }
    let drifted_columns = columns.iter().filter(|c| c.drifted).count();
    let share = if columns.is_empty() {
        0.0
    } else {
        drifted_columns as f64 / columns.len() as f64
    };
    Ok(DatasetDrift {
        reference_rows: reference.rows,
        current_rows,
        drifted: !columns.is_empty() && share >= options.drift_share,
        columns,
        skipped,
        drifted_columns,
        share,
        drift_share: options.drift_share,
    })
}

fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// Evidently's default method for a column.
fn default_method(kind: FeatureKind, reference_rows: u64, n_values: usize) -> Method {
    match (reference_rows <= 1000, kind) {
        (true, FeatureKind::Numeric) if n_values > 5 => Method::Ks,
        (true, _) if n_values > 2 => Method::Chisquare,
        (true, _) => Method::Z,
        (false, FeatureKind::Numeric) if n_values > 5 => Method::Wasserstein,
        (false, _) => Method::Jensenshannon,
    }
}

/// A number with at most 4 decimals, trailing zeros dropped (`∞` when not finite).
pub(crate) fn short_number(v: f64) -> String {
    if v.is_finite() {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        "∞".into()
    }
}

/// A number as a category label (integers without a fraction).
fn number_label(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn column_drift(
    name: &str,
    reference: &ColumnReference,
    sample: FeatureSample,
    options: &DriftOptions,
) -> Result<ColumnDrift, String> {
    if sample.kind() != reference.kind() {
        return Err(format!(
            "compared as {:?} in the reference but {:?} in the current data",
            reference.kind(),
            sample.kind()
        ));
    }
    if reference.rows() == 0 {
        return Err("the reference has no values".into());
    }
    if sample.non_null() < options.min_rows {
        return Err(format!(
            "{} values in the current data, fewer than the {} a test needs",
            sample.non_null(),
            options.min_rows
        ));
    }
    let (method, threshold) = options.for_column(name, reference.kind());
    let reference_null_share = share(reference.nulls(), reference.rows() + reference.nulls());
    let current_null_share = share(sample.nulls(), sample.non_null() + sample.nulls());
    let mut out = match (reference, sample) {
        (ColumnReference::Numeric(r), FeatureSample::Numeric { mut values, .. }) => {
            // A radix sort: a window's or a file's column in a few linear passes.
            radsort::sort(&mut values);
            numeric_drift(r, &values, method)?
        }
        (ColumnReference::Categorical(r), FeatureSample::Categorical { counts, .. }) => {
            categorical_drift(r, &counts, method)
        }
        _ => unreachable!("kinds checked above"),
    };
    out.threshold = threshold.unwrap_or(out.method.default_threshold());
    out.drifted = if out.method.is_test() {
        out.score < out.threshold
    } else {
        out.score >= out.threshold
    };
    out.column = name.to_string();
    out.reference_null_share = reference_null_share;
    out.current_null_share = current_null_share;
    Ok(out)
}

fn result(kind: FeatureKind, method: Method, statistic: f64, p_value: Option<f64>) -> ColumnDrift {
    let score = p_value.unwrap_or(statistic);
    ColumnDrift {
        column: String::new(),
        kind,
        method,
        statistic,
        p_value,
        score: if score.is_finite() { score } else { f64::MAX },
        threshold: 0.0,
        drifted: false,
        reference_rows: 0,
        current_rows: 0,
        reference_null_share: 0.0,
        current_null_share: 0.0,
        unseen_rows: 0,
        unseen: BTreeMap::new(),
        error_bound: 0.0,
        distribution: Distribution {
            labels: Vec::new(),
            reference: Vec::new(),
            current: Vec::new(),
        },
    }
}

/// Per-value pairs of a numeric column whose reference is exact.
fn numeric_pairs(r: &NumericReference, current: &[f64]) -> (Pairs, Vec<f64>) {
    let mut keys: Vec<f64> = r.values.iter().map(|(v, _)| *v).collect();
    let mut prev = f64::NAN;
    for &v in current {
        if v != prev {
            keys.push(v);
            prev = v;
        }
    }
    keys.sort_unstable_by(f64::total_cmp);
    keys.dedup();
    let pairs = keys
        .iter()
        .map(|k| {
            let rc = r
                .values
                .binary_search_by(|(v, _)| v.total_cmp(k))
                .map(|i| r.values[i].1)
                .unwrap_or(0);
            let cc = current.partition_point(|v| *v <= *k) - current.partition_point(|v| *v < *k);
            (rc as f64, cc as f64)
        })
        .collect();
    (pairs, keys)
}

/// Distinct values of both samples together, counted up to `cap + 1`.
fn distinct_union(r: &NumericReference, current: &[f64], cap: usize) -> usize {
    if !r.is_exact() {
        return usize::MAX;
    }
    let mut seen: Vec<f64> = r.values.iter().map(|(v, _)| *v).collect();
    let mut prev = f64::NAN;
    for &v in current {
        if v != prev {
            prev = v;
            if r.values.binary_search_by(|(x, _)| x.total_cmp(&v)).is_err() {
                seen.push(v);
                if seen.len() > cap {
                    break;
                }
            }
        }
    }
    seen.len()
}

fn numeric_drift(
    r: &NumericReference,
    current: &[f64],
    method: Option<Method>,
) -> Result<ColumnDrift, String> {
    let n_values = distinct_union(r, current, 5);
    let method = method.unwrap_or_else(|| default_method(FeatureKind::Numeric, r.rows, n_values));
    let per_value = r.is_exact() && r.values.len() <= 20;
    // Counts per distinct value of both samples (exact references only), for
    // the discrete methods and the distribution: computed at most once.
    let by_value = (r.is_exact() && (per_value || matches!(method, Method::Chisquare | Method::Z)))
        .then(|| numeric_pairs(r, current));
    let (nr, nc) = (r.rows as f64, current.len() as f64);
    let mut error_bound = 0.0;
    let mut out = match method {
        Method::Ks => {
            let (d, p) = methods::ks(r, current);
            if !r.is_exact() {
                error_bound = 1.0 / reference::QUANTILES as f64;
            }
            result(FeatureKind::Numeric, method, d, Some(p))
        }
        Method::Wasserstein => {
            let norm = r.std.max(0.001);
            error_bound = r.wasserstein_bound(norm);
            let w = methods::wasserstein(r, current) / norm;
            result(FeatureKind::Numeric, method, w, None)
        }
        Method::Chisquare | Method::Z => {
            if !r.is_exact() {
                return Err(format!(
                    "{method} needs the reference's exact values, and it has more than {} distinct ones",
                    reference::EXACT_VALUES
                ));
            }
            let pairs = by_value
                .as_ref()
                .map(|b| b.0.as_slice())
                .unwrap_or_default();
            let (s, p) = if method == Method::Z {
                methods::z(pairs)
            } else {
                methods::chisquare(pairs)
            };
            result(FeatureKind::Numeric, method, s, Some(p))
        }
        Method::Jensenshannon | Method::Psi => {
            let pairs = if let (true, Some((pairs, _))) = (per_value, &by_value) {
                pairs.iter().map(|(a, b)| (a / nr, b / nc)).collect()
            } else {
                if !r.is_exact() {
                    error_bound = 2.0 / reference::QUANTILES as f64;
                }
                methods::binned(r, current, &methods::sturges_edges(r, current))
            };
            let s = if method == Method::Psi {
                methods::psi(&pairs)
            } else {
                methods::jensenshannon(&pairs)
            };
            result(FeatureKind::Numeric, method, s, None)
        }
    };
    out.reference_rows = r.rows;
    out.current_rows = current.len() as u64;
    out.error_bound = error_bound;
    out.distribution = if let (true, Some((pairs, keys))) = (per_value, &by_value) {
        Distribution {
            labels: keys.iter().map(|k| number_label(*k)).collect(),
            reference: pairs.iter().map(|p| p.0 / nr).collect(),
            current: pairs.iter().map(|p| p.1 / nc).collect(),
        }
    } else {
        let mut lo = r.min;
        let mut hi = r.max;
        if let (Some(a), Some(b)) = (current.first(), current.last()) {
            lo = lo.min(*a);
            hi = hi.max(*b);
        }
        if lo == hi {
            hi = lo + 1.0;
        }
        let edges: Vec<f64> = (0..=20).map(|i| lo + (hi - lo) * i as f64 / 20.0).collect();
        let pairs = methods::binned(r, current, &edges);
        Distribution {
            labels: edges[..20].iter().map(|e| short_number(*e)).collect(),
            reference: pairs.iter().map(|p| p.0).collect(),
            current: pairs.iter().map(|p| p.1).collect(),
        }
    };
    Ok(out)
}

fn categorical_drift(
    r: &reference::CategoricalReference,
    current: &BTreeMap<String, u64>,
    method: Option<Method>,
) -> ColumnDrift {
    // Keys: every category of either sample; the reference's `other` bucket is
    // one more key, which current categories not kept by the reference join
    // only when the reference had an `other` bucket.
    const OTHER: &str = "(other)";
    let mut table: BTreeMap<&str, (f64, f64)> = r
        .counts
        .iter()
        .map(|(k, c)| (k.as_str(), (*c as f64, 0.0)))
        .collect();
    if r.other > 0 {
        table.insert(OTHER, (r.other as f64, 0.0));
    }
    let mut unseen_rows = 0u64;
    let mut unseen_all: Vec<(&str, u64)> = Vec::new();
    for (k, c) in current {
        match table.get_mut(k.as_str()) {
            Some(e) => e.1 += *c as f64,
            None if r.other > 0 => {
                if let Some(e) = table.get_mut(OTHER) {
                    e.1 += *c as f64
                }
            }
            None => {
                unseen_rows += c;
                unseen_all.push((k.as_str(), *c));
                table.insert(k.as_str(), (0.0, *c as f64));
            }
        }
    }
    let n_values = table.len();
    let pairs: Pairs = table.values().copied().collect();
    let method =
        method.unwrap_or_else(|| default_method(FeatureKind::Categorical, r.rows, n_values));
    let (nr, nc) = (r.rows as f64, current.values().sum::<u64>() as f64);
    let shares: Pairs = pairs.iter().map(|(a, b)| (a / nr, b / nc)).collect();
    let mut out = match method {
        Method::Chisquare => {
            let (s, p) = methods::chisquare(&pairs);
            result(FeatureKind::Categorical, method, s, Some(p))
        }
        Method::Z => {
            let (s, p) = methods::z(&pairs);
            result(FeatureKind::Categorical, method, s, Some(p))
        }
        Method::Psi => result(
            FeatureKind::Categorical,
            method,
            methods::psi(&shares),
            None,
        ),
        // Ks and Wasserstein are refused for categories by `DriftOptions::check`.
        _ => result(
            FeatureKind::Categorical,
            Method::Jensenshannon,
            methods::jensenshannon(&shares),
            None,
        ),
    };
    out.reference_rows = r.rows;
    out.current_rows = nc as u64;
    out.unseen_rows = unseen_rows;
    unseen_all.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    out.unseen = unseen_all
        .into_iter()
        .take(20)
        .map(|(k, c)| (k.to_string(), c))
        .collect();
    // The 20 categories with the largest share in either sample, then the rest.
    let mut order: Vec<(&str, (f64, f64))> = table
        .iter()
        .map(|(k, (a, b))| (*k, (a / nr, b / nc)))
        .collect();
    order.sort_by(|a, b| {
        b.1.0
            .max(b.1.1)
            .total_cmp(&a.1.0.max(a.1.1))
            .then(a.0.cmp(b.0))
    });
    let rest = order.split_off(order.len().min(20));
    let mut dist = Distribution {
        labels: order.iter().map(|(k, _)| k.to_string()).collect(),
        reference: order.iter().map(|(_, s)| s.0).collect(),
        current: order.iter().map(|(_, s)| s.1).collect(),
    };
    if !rest.is_empty() {
        dist.labels.push(format!("({} more)", rest.len()));
        dist.reference.push(rest.iter().map(|(_, s)| s.0).sum());
        dist.current.push(rest.iter().map(|(_, s)| s.1).sum());
    }
    out.distribution = dist;
    out
}

#[cfg(test)]
mod tests;
