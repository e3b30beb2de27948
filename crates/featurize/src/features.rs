//! Feature transforms: fitted on the training split only, saved inside the model
//! artifact, and applied identically at training and serving time.
//!
//! What the spec asks for is gathered into a [`FeaturePlan`]: per input column an
//! imputation strategy (median by default for numbers, none for strings: a null
//! category encodes as all zeros), an optional missing-value indicator and, for
//! strings, a maximum number of one-hot categories (the rarer ones share an
//! "other" feature); plus derived features, expressions over the row
//! (`modelbus_dataset::expr`). A category never seen in training goes to "other" when it
//! exists, else encodes as all zeros, so serving never fails on one.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use arrow_array::{Array, BooleanArray, Float64Array, Int64Array, StringArray};
use serde::{Deserialize, Serialize};

use crate::sample::{FeatureSample, FeatureSampler, category, numeric};
use modelbus_dataset::expr::{Expr, Value};
use modelbus_dataset::spec::{ColumnType, DatasetSpec};
pub use modelbus_dataset::spec::{FillValue, Impute};
use modelbus_dataset::table::{Chunk, parse_bool};

/// Name of the one-hot feature collecting rare and unseen categories.
pub const OTHER: &str = "__other__";
/// Suffix of a missing-value indicator feature.
pub const MISSING: &str = "__missing";

/// Feature options of one input column.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnPlan {
    /// Column name.
    pub name: String,
    /// Its type.
    pub ty: ColumnType,
    /// How nulls are filled (None: numbers use the median, categories stay null).
    pub impute: Option<Impute>,
    /// The constant for [`Impute::Constant`].
    pub fill_value: Option<FillValue>,
    /// Add a 0/1 feature telling whether the value was missing.
    pub missing_indicator: bool,
    /// Keep at most this many categories (most frequent first); the rest go to "other".
    pub max_categories: Option<usize>,
}

/// A derived feature.
#[derive(Debug, Clone, PartialEq)]
pub struct DerivedPlan {
    /// Feature name.
    pub name: String,
    /// The expression, parsed.
    pub expr: Expr,
    /// How nulls (and NaN results) are filled; default median.
    pub impute: Option<Impute>,
    /// The constant for [`Impute::Constant`].
    pub fill_value: Option<f64>,
    /// Add a 0/1 missing indicator.
    pub missing_indicator: bool,
}

/// Everything the transform is fitted from.
#[derive(Debug, Clone, PartialEq)]
pub struct FeaturePlan {
    /// Feature columns, in spec order.
    pub columns: Vec<ColumnPlan>,
    /// Derived features, in spec order.
    pub derived: Vec<DerivedPlan>,
}

impl FeaturePlan {
    /// The plan a spec describes.
    pub fn from_spec(spec: &DatasetSpec) -> Self {
        let columns = spec
            .feature_columns()
            .map(|c| ColumnPlan {
                name: c.name.clone(),
                ty: c.ty,
                impute: c.impute,
                fill_value: c.fill_value.clone(),
                missing_indicator: c.missing_indicator,
                max_categories: c.max_categories,
            })
            .collect();
        let derived = spec
            .features
            .iter()
            .filter_map(|f| {
                // The spec was checked when parsed: expressions parse.
                Expr::parse(&f.expr).ok().map(|expr| DerivedPlan {
                    name: f.name.clone(),
                    expr,
                    impute: f.impute,
                    fill_value: f.fill_value,
                    missing_indicator: f.missing_indicator,
                })
            })
            .collect();
        Self { columns, derived }
    }
}

/// How one input column (or expression) becomes model features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ColumnTransform {
    /// A number used as is; nulls take `impute`.
    Numeric {
        /// Input column.
        column: String,
        /// Value used for nulls.
        impute: f64,
        /// Whether a 0/1 missing indicator follows.
        #[serde(default)]
        missing_indicator: bool,
    },
    /// A boolean as 0/1; nulls take `impute`.
    Bool {
        /// Input column.
        column: String,
        /// Value used for nulls.
        impute: f64,
        /// Whether a 0/1 missing indicator follows.
        #[serde(default)]
        missing_indicator: bool,
    },
    /// One feature per kept training category, then "other" if categories were
    /// dropped; unseen categories go to "other" (or nowhere), nulls to `impute`.
    OneHot {
        /// Input column.
        column: String,
        /// Kept categories, sorted.
        categories: Vec<String>,
        /// Whether the "other" feature exists.
        #[serde(default)]
        other: bool,
        /// Category used for nulls (none: all zeros).
        #[serde(default)]
        impute: Option<String>,
        /// Whether a 0/1 missing indicator follows.
        #[serde(default)]
        missing_indicator: bool,
    },
    /// An expression over the row; NaN results take `impute`.
    Derived {
        /// Feature name.
        name: String,
        /// Expression source.
        expr: String,
        /// Value used for nulls.
        impute: f64,
        /// Whether a 0/1 missing indicator follows.
        #[serde(default)]
        missing_indicator: bool,
    },
}

impl ColumnTransform {
    /// The feature's (base) name: the input column, or the derived feature's name.
    pub fn name(&self) -> &str {
        match self {
            ColumnTransform::Numeric { column, .. }
            | ColumnTransform::Bool { column, .. }
            | ColumnTransform::OneHot { column, .. } => column,
            ColumnTransform::Derived { name, .. } => name,
        }
    }

    fn has_indicator(&self) -> bool {
        match self {
            ColumnTransform::Numeric {
                missing_indicator, ..
            }
            | ColumnTransform::Bool {
                missing_indicator, ..
            }
            | ColumnTransform::OneHot {
                missing_indicator, ..
            }
            | ColumnTransform::Derived {
                missing_indicator, ..
            } => *missing_indicator,
        }
    }

    fn width(&self) -> usize {
        let base = match self {
            ColumnTransform::OneHot {
                categories, other, ..
            } => categories.len() + usize::from(*other),
            _ => 1,
        };
        base + usize::from(self.has_indicator())
    }
}

/// A fitted transform. `inputs` lists the raw columns it reads; encoding takes one
/// cell per input, in that order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FeatureTransform {
    /// Raw input columns read, in order.
    pub inputs: Vec<String>,
    /// Output features, in order.
    pub columns: Vec<ColumnTransform>,
    /// Per column: the input index (plain columns) or the inputs of its expression.
    #[serde(skip)]
    compiled: Vec<Compiled>,
}

#[derive(Debug, Clone)]
enum Compiled {
    Input(usize),
    Expr(Box<Expr>, Vec<usize>),
}

impl PartialEq for FeatureTransform {
    fn eq(&self, other: &Self) -> bool {
        self.inputs == other.inputs && self.columns == other.columns
    }
}

/// What the features stage hands the trainer besides the feature set: the fitted
/// transform and the label vocabulary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FittedFeatures {
    /// The transform, fitted on the training split.
    pub transform: FeatureTransform,
    /// Target value of the positive class.
    pub positive_label: String,
    /// Most frequent other target value: what a negative prediction is called.
    pub negative_label: String,
    /// Rows per target value in the whole batch.
    pub label_counts: BTreeMap<String, u64>,
}

/// A raw cell value.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell<'a> {
    /// Missing.
    Null,
    /// A number.
    Num(f64),
    /// Text (categories, or numbers written as text).
    Text(&'a str),
    /// A boolean.
    Bool(bool),
}

impl<'a> Cell<'a> {
    pub(crate) fn value(&self) -> Value<'a> {
        match self {
            Cell::Null => Value::Null,
            Cell::Num(v) => Value::Num(*v),
            Cell::Text(s) => match s.trim().parse::<f64>() {
                Ok(v) => Value::Num(v),
                Err(_) => Value::Str(s),
            },
            Cell::Bool(b) => Value::Num(f64::from(u8::from(*b))),
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

fn most_frequent_num(v: &[f64]) -> f64 {
    let mut counts: BTreeMap<u64, (usize, f64)> = BTreeMap::new();
    for x in v {
        counts.entry(x.to_bits()).or_insert((0, *x)).0 += 1;
    }
    // Highest count; ties to the smallest value, so the choice is deterministic.
    counts
        .values()
        .max_by(|a, b| a.0.cmp(&b.0).then(b.1.total_cmp(&a.1)))
        .map(|(_, x)| *x)
        .unwrap_or(0.0)
}

fn fill(values: Vec<f64>, impute: Option<Impute>, constant: Option<f64>) -> f64 {
    match impute.unwrap_or(Impute::Median) {
        Impute::Median => median(values),
        Impute::Mean => mean(&values),
        Impute::MostFrequent => most_frequent_num(&values),
        Impute::Constant => constant.unwrap_or(0.0),
    }
}

/// Reads cell `i` of column `ci` of a chunk as a [`Cell`].
pub fn cell(chunk: &Chunk, ci: usize, i: usize) -> Cell<'_> {
    array_cell(chunk.batch.column(ci).as_ref(), i)
}

/// Row `i` of an Arrow column as a [`Cell`].
pub fn array_cell(col: &dyn Array, i: usize) -> Cell<'_> {
    if col.is_null(i) {
        return Cell::Null;
    }
    let any = col.as_any();
    if let Some(a) = any.downcast_ref::<Float64Array>() {
        return Cell::Num(a.value(i));
    }
    if let Some(a) = any.downcast_ref::<Int64Array>() {
        return Cell::Num(a.value(i) as f64);
    }
    if let Some(a) = any.downcast_ref::<StringArray>() {
        return Cell::Text(a.value(i));
    }
    if let Some(a) = any.downcast_ref::<BooleanArray>() {
        return Cell::Bool(a.value(i));
    }
    Cell::Null
}

impl FeatureTransform {
    /// Builds a transform from its parts (the inputs are derived from the columns).
    pub fn new(columns: Vec<ColumnTransform>) -> Result<Self, String> {
        let mut inputs: Vec<String> = Vec::new();
        let mut add = |name: &str| match inputs.iter().position(|i| i == name) {
            Some(i) => i,
            None => {
                inputs.push(name.to_string());
                inputs.len() - 1
            }
        };
        let mut compiled = Vec::with_capacity(columns.len());
        for c in &columns {
            compiled.push(match c {
                ColumnTransform::Derived { name, expr, .. } => {
                    let e = Expr::parse(expr)
                        .map_err(|err| format!("derived feature {name:?}: {err}"))?;
                    let idx = e.columns().iter().map(|col| add(col)).collect();
                    Compiled::Expr(Box::new(e), idx)
                }
                other => Compiled::Input(add(other.name())),
            });
        }
        Ok(Self {
            inputs,
            columns,
            compiled,
        })
    }

    /// Re-derives what serde does not store; call after deserialising.
    pub fn prepare(self) -> Result<Self, String> {
        let rebuilt = Self::new(self.columns)?;
        if rebuilt.inputs != self.inputs {
            return Err(format!(
                "transform inputs {:?} do not match its columns ({:?})",
                self.inputs, rebuilt.inputs
            ));
        }
        Ok(rebuilt)
    }

    /// Fits the plan on the rows whose global index (over all chunks) is in
    /// `train_rows`. `column_index` maps a raw column name to its chunk column.
    pub fn fit(
        plan: &FeaturePlan,
        chunks: &[Chunk],
        column_index: &dyn Fn(&str) -> Option<usize>,
        train_rows: &[usize],
    ) -> Result<Self, String> {
        let train: BTreeSet<usize> = train_rows.iter().copied().collect();
        let for_train = |ci: usize, f: &mut dyn FnMut(Cell<'_>)| {
            let mut row = 0usize;
            for chunk in chunks {
                for i in 0..chunk.batch.num_rows() {
                    if train.contains(&row) {
                        f(cell(chunk, ci, i));
                    }
                    row += 1;
                }
            }
        };
        let mut columns = Vec::new();
        for c in &plan.columns {
            let ci = column_index(&c.name)
                .ok_or_else(|| format!("feature column {:?} is not in the data", c.name))?;
            columns.push(match c.ty {
                ColumnType::Int | ColumnType::Float | ColumnType::Bool => {
                    let mut values = Vec::new();
                    for_train(ci, &mut |cell| {
                        if let Some(v) = numeric(&cell) {
                            values.push(v);
                        }
                    });
                    let constant = match &c.fill_value {
                        Some(FillValue::Num(v)) => Some(*v),
                        _ => None,
                    };
                    let impute = fill(values, c.impute, constant);
                    if c.ty == ColumnType::Bool {
                        ColumnTransform::Bool {
                            column: c.name.clone(),
                            impute,
                            missing_indicator: c.missing_indicator,
                        }
                    } else {
                        ColumnTransform::Numeric {
                            column: c.name.clone(),
                            impute,
                            missing_indicator: c.missing_indicator,
                        }
                    }
                }
                ColumnType::String => {
                    let mut counts: HashMap<String, u64> = HashMap::new();
                    for_train(ci, &mut |cell| {
                        if let Some(k) = category(&cell) {
                            *counts.entry(k).or_default() += 1;
                        }
                    });
                    // Most frequent first, ties by name: deterministic.
                    let mut ranked: Vec<(String, u64)> = counts.into_iter().collect();
                    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                    let impute = match c.impute {
                        Some(Impute::MostFrequent) => ranked.first().map(|r| r.0.clone()),
                        Some(Impute::Constant) => match &c.fill_value {
                            Some(FillValue::Text(s)) => Some(s.clone()),
                            Some(FillValue::Num(v)) => Some(v.to_string()),
                            None => None,
                        },
                        _ => None,
                    };
                    let keep = c.max_categories.unwrap_or(usize::MAX);
                    let other = ranked.len() > keep;
                    let mut categories: Vec<String> =
                        ranked.into_iter().take(keep).map(|r| r.0).collect();
                    categories.sort();
                    ColumnTransform::OneHot {
                        column: c.name.clone(),
                        categories,
                        other,
                        impute,
                        missing_indicator: c.missing_indicator,
                    }
                }
            });
        }
        for d in &plan.derived {
            let idx: Vec<usize> = d
                .expr
                .columns()
                .iter()
                .map(|c| {
                    column_index(c).ok_or_else(|| {
                        format!("derived feature {:?} reads unknown column {c:?}", d.name)
                    })
                })
                .collect::<Result<_, _>>()?;
            let mut values = Vec::new();
            let mut row = 0usize;
            for chunk in chunks {
                for i in 0..chunk.batch.num_rows() {
                    if train.contains(&row) {
                        let cells: Vec<Cell<'_>> =
                            idx.iter().map(|&ci| cell(chunk, ci, i)).collect();
                        let v = d.expr.eval(&|k| cells[k].value());
                        if v.is_finite() {
                            values.push(v);
                        }
                    }
                    row += 1;
                }
            }
            columns.push(ColumnTransform::Derived {
                name: d.name.clone(),
                expr: d.expr.to_string(),
                impute: fill(values, d.impute, d.fill_value),
                missing_indicator: d.missing_indicator,
            });
        }
        Self::new(columns)
    }

    /// Names of the output features: `col`, `col=category`, `col=__other__`,
    /// `col__missing`.
    pub fn feature_names(&self) -> Vec<String> {
        let mut out = Vec::new();
        for c in &self.columns {
            match c {
                ColumnTransform::OneHot {
                    column,
                    categories,
                    other,
                    ..
                } => {
                    out.extend(categories.iter().map(|cat| format!("{column}={cat}")));
                    if *other {
                        out.push(format!("{column}={OTHER}"));
                    }
                }
                other => out.push(other.name().to_string()),
            }
            if c.has_indicator() {
                out.push(format!("{}{MISSING}", c.name()));
            }
        }
        out
    }

    /// Number of output features.
    pub fn num_features(&self) -> usize {
        self.columns.iter().map(ColumnTransform::width).sum()
    }

    /// Encodes one row given one cell per input (in `inputs` order), appending to `out`.
    pub fn encode_row(&self, cells: &[Cell<'_>], out: &mut Vec<f64>) {
        for (t, how) in self.columns.iter().zip(&self.compiled) {
            let (value, missing): (Option<f64>, bool) = match (t, how) {
                (ColumnTransform::Derived { impute, .. }, Compiled::Expr(e, idx)) => {
                    let v = e.eval(&|k| cells.get(idx[k]).map(Cell::value).unwrap_or(Value::Null));
                    if v.is_finite() {
                        (Some(v), false)
                    } else {
                        (Some(*impute), true)
                    }
                }
                (
                    ColumnTransform::Numeric { impute, .. } | ColumnTransform::Bool { impute, .. },
                    Compiled::Input(i),
                ) => {
                    let c = cells.get(*i).unwrap_or(&Cell::Null);
                    let v = match (t, c) {
                        (ColumnTransform::Bool { .. }, Cell::Text(s)) => {
                            parse_bool(s.trim()).map(|b| f64::from(u8::from(b)))
                        }
                        (ColumnTransform::Bool { .. }, Cell::Num(v)) => {
                            Some(f64::from(u8::from(*v != 0.0)))
                        }
                        _ => numeric(c),
                    };
                    match v {
                        Some(v) => (Some(v), false),
                        None => (Some(*impute), true),
                    }
                }
                (
                    ColumnTransform::OneHot {
                        categories,
                        other,
                        impute,
                        ..
                    },
                    Compiled::Input(i),
                ) => {
                    let c = cells.get(*i).unwrap_or(&Cell::Null);
                    let key = category(c);
                    let missing = key.is_none();
                    let key = key.or_else(|| impute.clone());
                    let start = out.len();
                    out.resize(start + categories.len() + usize::from(*other), 0.0);
                    if let Some(k) = key {
                        match categories.binary_search_by(|c| c.as_str().cmp(&k)) {
                            Ok(pos) => out[start + pos] = 1.0,
                            Err(_) if *other => out[start + categories.len()] = 1.0,
                            Err(_) => {}
                        }
                    }
                    (None, missing)
                }
                _ => (Some(f64::NAN), true),
            };
            if let Some(v) = value {
                out.push(v);
            }
            if t.has_indicator() {
                out.push(if missing { 1.0 } else { 0.0 });
            }
        }
    }

    /// Encodes every row of the chunks: row-major, `num_features` columns.
    /// `column_index` maps a raw column name to its chunk column.
    pub fn transform_chunks(
        &self,
        chunks: &[Chunk],
        column_index: &dyn Fn(&str) -> Option<usize>,
    ) -> Vec<f64> {
        let idx: Vec<Option<usize>> = self.inputs.iter().map(|c| column_index(c)).collect();
        let rows: usize = chunks.iter().map(|c| c.batch.num_rows()).sum();
        let mut out = Vec::with_capacity(rows * self.num_features());
        let mut cells = Vec::with_capacity(idx.len());
        for chunk in chunks {
            for i in 0..chunk.batch.num_rows() {
                cells.clear();
                cells.extend(
                    idx.iter()
                        .map(|ci| ci.map(|ci| cell(chunk, ci, i)).unwrap_or(Cell::Null)),
                );
                self.encode_row(&cells, &mut out);
            }
        }
        out
    }
}

/// Statistics of one input column or derived feature on the training rows: the
/// drift reference the monitor compares live traffic against.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FeatureStats {
    /// A number.
    Numeric {
        /// Feature name.
        name: String,
        /// Rows considered.
        rows: u64,
        /// Share of nulls.
        null_ratio: f64,
        /// Mean of the non-null values.
        mean: f64,
        /// Sample standard deviation.
        stdev: f64,
        /// Quantiles at 0, 1, 5, 25, 50, 75, 95, 99, 100 %.
        quantiles: Vec<(f64, f64)>,
        /// Histogram edges (fixed from the training deciles, deduplicated); counts
        /// has one more bucket than edges (below the first, between, above the last).
        edges: Vec<f64>,
        /// Rows per bucket.
        counts: Vec<u64>,
    },
    /// A category.
    Categorical {
        /// Feature name.
        name: String,
        /// Rows considered.
        rows: u64,
        /// Share of nulls.
        null_ratio: f64,
        /// Share of each category among non-null rows.
        frequencies: BTreeMap<String, f64>,
    },
}

/// Statistics of every feature of a feature set, on its training rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureStatistics {
    /// Rows the statistics were computed on.
    pub rows: u64,
    /// One entry per input column and derived feature, in transform order.
    pub features: Vec<FeatureStats>,
    /// The same features summarised for drift (exact values or 1,001
    /// quantiles, category counts): what the monitor compares live windows
    /// with, without the training rows. Absent from statistics written
    /// before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift_reference: Option<crate::drift::DriftReference>,
}

/// Quantile of sorted values by linear interpolation (NumPy's default).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// Bucket of `v` for `edges`: 0 below the first edge, `edges.len()` at or above the last.
pub fn bucket(edges: &[f64], v: f64) -> usize {
    edges.partition_point(|e| *e <= v)
}

impl FeatureStats {
    /// The statistics of one feature's training sample (its numbers sorted in place).
    fn of(name: &str, rows: u64, sample: &mut FeatureSample) -> Self {
        let null_ratio = if rows == 0 {
            0.0
        } else {
            sample.nulls() as f64 / rows as f64
        };
        match sample {
            FeatureSample::Categorical { counts, .. } => {
                let total: u64 = counts.values().sum();
                FeatureStats::Categorical {
                    name: name.to_string(),
                    rows,
                    null_ratio,
                    frequencies: counts
                        .iter()
                        .map(|(c, n)| {
                            let share = if total == 0 {
                                0.0
                            } else {
                                *n as f64 / total as f64
                            };
                            (c.clone(), share)
                        })
                        .collect(),
                }
            }
            FeatureSample::Numeric { values: v, .. } => {
                v.sort_by(|a, b| a.total_cmp(b));
                let m = mean(v);
                let stdev = if v.len() > 1 {
                    (v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (v.len() - 1) as f64).sqrt()
                } else {
                    0.0
                };
                let quantiles = [0.0, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 1.0]
                    .iter()
                    .map(|q| (*q, quantile(v, *q)))
                    .collect();
                let mut edges: Vec<f64> = (1..10)
                    .map(|d| quantile(v, d as f64 / 10.0))
                    .filter(|e| e.is_finite())
                    .collect();
                edges.dedup();
                let mut counts = vec![0u64; edges.len() + 1];
                for x in v.iter() {
                    counts[bucket(&edges, *x)] += 1;
                }
                FeatureStats::Numeric {
                    name: name.to_string(),
                    rows,
                    null_ratio,
                    mean: m,
                    stdev,
                    quantiles,
                    edges,
                    counts,
                }
            }
        }
    }
}

impl FeatureStatistics {
    /// Computes the statistics of a fitted transform's features on the
    /// training rows, and the same rows' drift reference, from one pass.
    pub fn compute(
        transform: &FeatureTransform,
        chunks: &[Chunk],
        column_index: &dyn Fn(&str) -> Option<usize>,
        train_rows: &[usize],
    ) -> Self {
        let train: BTreeSet<usize> = train_rows.iter().copied().collect();
        let idx: Vec<Option<usize>> = transform.inputs.iter().map(|c| column_index(c)).collect();
        let mut cells = Vec::with_capacity(idx.len());
        let mut sampler = FeatureSampler::from_transform(transform);
        let mut row = 0usize;
        for chunk in chunks {
            for i in 0..chunk.batch.num_rows() {
                if train.contains(&row) {
                    cells.clear();
                    cells.extend(
                        idx.iter()
                            .map(|ci| ci.map(|ci| cell(chunk, ci, i)).unwrap_or(Cell::Null)),
                    );
                    sampler.add_cells(&cells);
                }
                row += 1;
            }
        }
        let (rows, mut samples) = sampler.finish();
        let features = samples
            .iter_mut()
            .map(|(f, s)| FeatureStats::of(&f.name, rows, s))
            .collect();
        let drift_reference = Some(crate::drift::DriftReference::from_samples(
            rows,
            samples.into_iter().map(|(f, s)| (f.name, s)).collect(),
        ));
        Self {
            rows,
            features,
            drift_reference,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use modelbus_dataset::table::read_all;
    use std::sync::Arc;

    fn spec(extra: &str) -> Arc<DatasetSpec> {
        let text = format!(
            r#"name = "d"
entity_column = "id"
[target]
column = "y"
positive = "1"
[[columns]]
name = "id"
type = "string"
[[columns]]
name = "x"
type = "float"
nullable = true
{extra}
[[columns]]
name = "c"
type = "string"
nullable = true
[[columns]]
name = "b"
type = "bool"
[[columns]]
name = "y"
type = "int"
"#
        );
        Arc::new(DatasetSpec::parse(&text, "t").unwrap().spec)
    }

    fn fit(s: &DatasetSpec, chunks: &[Chunk], rows: &[usize]) -> FeatureTransform {
        let index = |n: &str| s.columns.iter().position(|c| c.name == n);
        FeatureTransform::fit(&FeaturePlan::from_spec(s), chunks, &index, rows).unwrap()
    }

    const CSV: &str =
        "id,x,c,b,y\na,1,red,true,1\nb,,blue,false,0\nc,3,red,true,1\nd,100,green,false,0\n";

    #[test]
    fn fits_on_training_rows_only_and_encodes() {
        let s = spec("");
        let chunks = read_all(CSV.as_bytes(), s.clone(), 2).unwrap();
        // Row 3 (green, 100) is held out: it must not influence the fit.
        let t = fit(&s, &chunks, &[0, 1, 2]);
        assert_eq!(t.feature_names(), vec!["x", "c=blue", "c=red", "b"]);
        assert_eq!(
            t.columns[0],
            ColumnTransform::Numeric {
                column: "x".into(),
                impute: 2.0,
                missing_indicator: false
            }
        );
        let index = |n: &str| s.columns.iter().position(|c| c.name == n);
        let x = t.transform_chunks(&chunks, &index);
        assert_eq!(x.len(), 4 * 4);
        assert_eq!(&x[0..4], &[1.0, 0.0, 1.0, 1.0]);
        assert_eq!(
            &x[4..8],
            &[2.0, 1.0, 0.0, 0.0],
            "null x imputed with the training median"
        );
        assert_eq!(
            &x[12..16],
            &[100.0, 0.0, 0.0, 0.0],
            "unseen category is all zeros"
        );
    }

    #[test]
    fn indicators_strategies_other_bucket_and_derived_features() {
        let s = spec("impute = \"mean\"\nmissing_indicator = true");
        let mut s = (*s).clone();
        let c = s.columns.iter_mut().find(|c| c.name == "c").unwrap();
        c.max_categories = Some(1);
        c.impute = Some(Impute::MostFrequent);
        s.features.push(modelbus_dataset::spec::DerivedFeatureSpec {
            name: "x_per_b".into(),
            expr: "x / (b + 1)".into(),
            impute: None,
            fill_value: None,
            missing_indicator: true,
        });
        let csv = "id,x,c,b,y\na,1,red,true,1\nb,,blue,false,0\nc,3,red,true,1\nd,5,,false,0\ne,9,green,true,1\n";
        let chunks = read_all(csv.as_bytes(), Arc::new(s.clone()), 2).unwrap();
        let t = fit(&s, &chunks, &[0, 1, 2, 3]);
        assert_eq!(
            t.feature_names(),
            vec![
                "x",
                "x__missing",
                "c=red",
                "c=__other__",
                "b",
                "x_per_b",
                "x_per_b__missing"
            ]
        );
        let index = |n: &str| s.columns.iter().position(|c| c.name == n);
        let x = t.transform_chunks(&chunks, &index);
        let row = |i: usize| &x[i * 7..(i + 1) * 7];
        // Mean of 1, 3, 5 = 3; the missing indicator is set.
        assert_eq!(row(1)[..2], [3.0, 1.0]);
        // "blue" is rare: other bucket.
        assert_eq!(row(1)[2..4], [0.0, 1.0]);
        // Null category takes the most frequent ("red").
        assert_eq!(row(3)[2..4], [1.0, 0.0]);
        // Unseen "green" goes to other.
        assert_eq!(row(4)[2..4], [0.0, 1.0]);
        // Derived: 1 / (1 + 1) = 0.5; row 1: x null → imputed with the median of
        // training results (0.5, 1.5, 5) = 1.5, indicator set.
        assert_eq!(row(0)[5..7], [0.5, 0.0]);
        assert_eq!(row(1)[5..7], [1.5, 1.0]);
        // Round trip through JSON keeps the behaviour.
        let back: FeatureTransform =
            serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
        let back = back.prepare().unwrap();
        assert_eq!(back, t);
        assert_eq!(back.transform_chunks(&chunks, &index), x);
    }

    #[test]
    fn statistics_are_the_training_reference() {
        let s = spec("");
        let chunks = read_all(CSV.as_bytes(), s.clone(), 3).unwrap();
        let t = fit(&s, &chunks, &[0, 1, 2]);
        let index = |n: &str| s.columns.iter().position(|c| c.name == n);
        let st = FeatureStatistics::compute(&t, &chunks, &index, &[0, 1, 2]);
        assert_eq!(st.rows, 3);
        match &st.features[0] {
            FeatureStats::Numeric {
                name,
                null_ratio,
                mean,
                quantiles,
                counts,
                ..
            } => {
                assert_eq!(name, "x");
                assert!((null_ratio - 1.0 / 3.0).abs() < 1e-12);
                assert_eq!(*mean, 2.0);
                assert_eq!(quantiles[4], (0.5, 2.0));
                assert_eq!(counts.iter().sum::<u64>(), 2);
            }
            other => panic!("{other:?}"),
        }
        match &st.features[1] {
            FeatureStats::Categorical { frequencies, .. } => {
                assert!((frequencies["red"] - 2.0 / 3.0).abs() < 1e-12);
                assert!(
                    !frequencies.contains_key("green"),
                    "holdout rows are not in the reference"
                );
            }
            other => panic!("{other:?}"),
        }
        // The drift reference holds the same training rows, exactly.
        let r = st.drift_reference.as_ref().unwrap();
        assert_eq!(r.rows, 3);
        match r.column("x").unwrap() {
            crate::drift::ColumnReference::Numeric(n) => {
                assert_eq!((n.rows, n.nulls), (2, 1));
                assert_eq!(n.values, vec![(1.0, 1), (3.0, 1)]);
            }
            other => panic!("{other:?}"),
        }
        match r.column("c").unwrap() {
            crate::drift::ColumnReference::Categorical(c) => {
                assert_eq!(c.counts.get("red"), Some(&2));
                assert!(!c.counts.contains_key("green"));
            }
            other => panic!("{other:?}"),
        }
        assert!(r.check().is_ok());
    }

    #[test]
    fn quantiles_and_buckets() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile(&v, 0.5), 2.5);
        assert_eq!(quantile(&v, 0.0), 1.0);
        assert_eq!(bucket(&[1.0, 2.0], 0.5), 0);
        assert_eq!(bucket(&[1.0, 2.0], 1.0), 1);
        assert_eq!(bucket(&[1.0, 2.0], 5.0), 2);
    }
}
