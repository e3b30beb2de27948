//! The raw value of every feature, as the model's inputs saw it before
//! imputation or encoding: input columns as read, derived features evaluated.
//! This is what the training reference summarises (`FeatureStatistics`, drift
//! references) and what drift compares a live window with.

use std::collections::{BTreeMap, HashMap};

use std::io::Read;
use std::sync::Arc;

use arrow_array::{Array, Float64Array, Int64Array, StringArray};

use modelbus_dataset::expr::{Expr, Value};
use modelbus_dataset::schema::ColumnType;
use modelbus_dataset::spec::DatasetSpec;
use modelbus_dataset::table::{Chunk, CsvChunks, TableError, parse_bool};
use serde::{Deserialize, Serialize};

use crate::features::{Cell, ColumnTransform, FeaturePlan, FeatureTransform, array_cell, cell};

/// Whether a feature is compared as numbers or as categories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeatureKind {
    /// Numbers (integers, floats, booleans as 0/1, derived features).
    Numeric,
    /// Categories (text).
    Categorical,
}

/// The values one feature took over some rows.
#[derive(Debug, Clone, PartialEq)]
pub enum FeatureSample {
    /// Numbers, in arrival order (not sorted), without nulls.
    Numeric {
        /// The non-null values.
        values: Vec<f64>,
        /// Rows whose value was null (or not a finite number).
        nulls: u64,
    },
    /// Categories with their counts.
    Categorical {
        /// Rows per category.
        counts: BTreeMap<String, u64>,
        /// Rows whose value was null.
        nulls: u64,
    },
}

impl FeatureSample {
    /// An empty sample of a kind.
    pub fn empty(kind: FeatureKind) -> Self {
        match kind {
            FeatureKind::Numeric => FeatureSample::Numeric {
                values: Vec::new(),
                nulls: 0,
            },
            FeatureKind::Categorical => FeatureSample::Categorical {
                counts: BTreeMap::new(),
                nulls: 0,
            },
        }
    }

    /// Rows with a value.
    pub fn non_null(&self) -> u64 {
        match self {
            FeatureSample::Numeric { values, .. } => values.len() as u64,
            FeatureSample::Categorical { counts, .. } => counts.values().sum(),
        }
    }

    /// Rows without one.
    pub fn nulls(&self) -> u64 {
        match self {
            FeatureSample::Numeric { nulls, .. } | FeatureSample::Categorical { nulls, .. } => {
                *nulls
            }
        }
    }

    /// Its kind.
    pub fn kind(&self) -> FeatureKind {
        match self {
            FeatureSample::Numeric { .. } => FeatureKind::Numeric,
            FeatureSample::Categorical { .. } => FeatureKind::Categorical,
        }
    }
}

/// Where a feature's value comes from.
#[derive(Debug, Clone)]
enum Source {
    /// An input cell, read as a number or a category.
    Input(usize),
    /// An expression over input cells.
    Expr(Box<Expr>, Vec<usize>),
    /// A boolean input cell as 0/1: typed booleans, or text as the spec's
    /// booleans are written (`true`, `yes`, `1`, ...), since a logged record
    /// keeps what the client sent.
    Flag(usize),
    /// Nothing to read (a transform column whose input or expression is not
    /// there): every row is a null, so features keep their places.
    Missing,
}

/// One feature a sampler collects.
#[derive(Debug, Clone)]
pub struct SampledFeature {
    /// Its name.
    pub name: String,
    /// Compared as numbers or categories.
    pub kind: FeatureKind,
    source: Source,
}

/// Collects [`FeatureSample`]s of a set of features row by row: from Arrow
/// chunks of a CSV, or from cells of any other source (a logged record).
#[derive(Debug, Clone)]
pub struct FeatureSampler {
    /// The input columns read, in the order cells are given.
    pub inputs: Vec<String>,
    features: Vec<SampledFeature>,
    samples: Vec<FeatureSample>,
    /// Per feature, the first few categories met and their counts, looked up
    /// before the sample's map: a linear scan that mostly compares lengths
    /// only (categories seldom share one), merged into the map at the end.
    tallies: Vec<Vec<(String, u64)>>,
    rows: u64,
}

/// Categories a feature's tally holds before the rest go to the map.
const TALLY: usize = 16;

/// The kind a column of type `ty` is compared as.
pub fn kind_of(ty: ColumnType) -> FeatureKind {
    match ty {
        ColumnType::String => FeatureKind::Categorical,
        ColumnType::Int | ColumnType::Float | ColumnType::Bool => FeatureKind::Numeric,
    }
}

impl FeatureSampler {
    fn with(inputs: Vec<String>, features: Vec<SampledFeature>) -> Self {
        let samples = features
            .iter()
            .map(|f| FeatureSample::empty(f.kind))
            .collect();
        let tallies = vec![Vec::new(); features.len()];
        Self {
            inputs,
            features,
            samples,
            tallies,
            rows: 0,
        }
    }

    /// Every feature of a spec's plan: its feature columns and its derived
    /// features (so no fitted transform is needed, as for two CSV files).
    pub fn from_plan(plan: &FeaturePlan) -> Self {
        let mut inputs: Vec<String> = plan.columns.iter().map(|c| c.name.clone()).collect();
        let mut features: Vec<SampledFeature> = plan
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| SampledFeature {
                name: c.name.clone(),
                kind: kind_of(c.ty),
                source: if c.ty == ColumnType::Bool {
                    Source::Flag(i)
                } else {
                    Source::Input(i)
                },
            })
            .collect();
        for d in &plan.derived {
            let mut idx = Vec::new();
            for v in d.expr.columns() {
                let i = match inputs.iter().position(|n| n == v) {
                    Some(i) => i,
                    None => {
                        inputs.push(v.to_string());
                        inputs.len() - 1
                    }
                };
                idx.push(i);
            }
            features.push(SampledFeature {
                name: d.name.clone(),
                kind: FeatureKind::Numeric,
                source: Source::Expr(Box::new(d.expr.clone()), idx),
            });
        }
        Self::with(inputs, features)
    }

    /// Every feature of a fitted transform (what a served model reads), one per
    /// transform column and in its order.
    pub fn from_transform(t: &FeatureTransform) -> Self {
        let index = |n: &str| t.inputs.iter().position(|i| i == n);
        let input = |column: &str| index(column).map_or(Source::Missing, Source::Input);
        let features = t
            .columns
            .iter()
            .map(|c| {
                let (kind, source) = match c {
                    ColumnTransform::OneHot { column, .. } => {
                        (FeatureKind::Categorical, input(column))
                    }
                    ColumnTransform::Numeric { column, .. } => {
                        (FeatureKind::Numeric, input(column))
                    }
                    ColumnTransform::Bool { column, .. } => (
                        FeatureKind::Numeric,
                        index(column).map_or(Source::Missing, Source::Flag),
                    ),
                    ColumnTransform::Derived { expr, .. } => {
                        let source = Expr::parse(expr)
                            .ok()
                            .and_then(|e| {
                                let idx = e
                                    .columns()
                                    .iter()
                                    .map(|v| index(v))
                                    .collect::<Option<Vec<usize>>>()?;
                                Some(Source::Expr(Box::new(e), idx))
                            })
                            .unwrap_or(Source::Missing);
                        (FeatureKind::Numeric, source)
                    }
                };
                SampledFeature {
                    name: c.name().to_string(),
                    kind,
                    source,
                }
            })
            .collect();
        Self::with(t.inputs.clone(), features)
    }

    /// Adds one more input column sampled as itself (the target of two CSV
    /// files, the prediction of logged records); only before any row is added.
    pub fn add_column(&mut self, name: &str, kind: FeatureKind) {
        debug_assert_eq!(self.rows, 0, "columns are added before rows");
        let i = match self.inputs.iter().position(|n| n == name) {
            Some(i) => i,
            None => {
                self.inputs.push(name.to_string());
                self.inputs.len() - 1
            }
        };
        self.features.push(SampledFeature {
            name: name.to_string(),
            kind,
            source: Source::Input(i),
        });
        self.samples.push(FeatureSample::empty(kind));
        self.tallies.push(Vec::new());
    }

    /// The features collected, in order.
    pub fn features(&self) -> &[SampledFeature] {
        &self.features
    }

    /// Rows seen.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Adds one row: `cells` holds one cell per input, in [`Self::inputs`] order.
    pub fn add_cells(&mut self, cells: &[Cell<'_>]) {
        self.rows += 1;
        for ((f, s), t) in self
            .features
            .iter()
            .zip(self.samples.iter_mut())
            .zip(self.tallies.iter_mut())
        {
            add_one(f, s, t, cells);
        }
    }

    /// Adds every row of a chunk; `column_index` maps an input name to its
    /// column in the chunk (an input missing from the chunk reads as null).
    /// Features read straight from a column are added a column at a time;
    /// derived features row by row.
    pub fn add_chunk(&mut self, chunk: &Chunk, column_index: &dyn Fn(&str) -> Option<usize>) {
        let n = chunk.batch.num_rows();
        let idx: Vec<Option<usize>> = self.inputs.iter().map(|c| column_index(c)).collect();
        let mut derived = Vec::new();
        for (k, f) in self.features.iter().enumerate() {
            match &f.source {
                Source::Input(j) | Source::Flag(j) => match idx.get(*j).copied().flatten() {
                    Some(ci) => add_column(&mut self.samples[k], chunk.batch.column(ci).as_ref()),
                    None => add_nulls(&mut self.samples[k], n as u64),
                },
                Source::Expr(..) => derived.push(k),
                Source::Missing => add_nulls(&mut self.samples[k], n as u64),
            }
        }
        if !derived.is_empty() {
            // Only the inputs the derived features read are looked up.
            let mut needed = vec![false; idx.len()];
            for &k in &derived {
                if let Source::Expr(_, cols) = &self.features[k].source {
                    for &c in cols {
                        if let Some(x) = needed.get_mut(c) {
                            *x = true;
                        }
                    }
                }
            }
            let idx: Vec<Option<usize>> = idx
                .iter()
                .zip(&needed)
                .map(|(ci, need)| ci.filter(|_| *need))
                .collect();
            let mut cells = Vec::with_capacity(idx.len());
            for i in 0..n {
                cells.clear();
                cells.extend(
                    idx.iter()
                        .map(|ci| ci.map(|ci| cell(chunk, ci, i)).unwrap_or(Cell::Null)),
                );
                for &k in &derived {
                    add_one(
                        &self.features[k],
                        &mut self.samples[k],
                        &mut self.tallies[k],
                        &cells,
                    );
                }
            }
        }
        self.rows += n as u64;
    }

    /// The samples, one per feature in [`Self::features`] order.
    pub fn finish(mut self) -> (u64, Vec<(SampledFeature, FeatureSample)>) {
        for (s, t) in self.samples.iter_mut().zip(&mut self.tallies) {
            if let FeatureSample::Categorical { counts, .. } = s {
                for (c, n) in t.drain(..) {
                    *counts.entry(c).or_default() += n;
                }
            }
        }
        (
            self.rows,
            self.features.into_iter().zip(self.samples).collect(),
        )
    }
}

/// Adds one row's value of one feature.
fn add_one(
    f: &SampledFeature,
    s: &mut FeatureSample,
    tally: &mut Vec<(String, u64)>,
    cells: &[Cell<'_>],
) {
    match (&f.source, s) {
        (Source::Input(j), FeatureSample::Categorical { counts, nulls }) => match cells.get(*j) {
            // Text is looked up before it is copied: most rows repeat a category.
            Some(Cell::Text(t)) => {
                if let Some(e) = tally.iter_mut().find(|e| e.0.len() == t.len() && e.0 == *t) {
                    e.1 += 1;
                } else if tally.len() < TALLY {
                    tally.push(((*t).to_string(), 1));
                } else {
                    match counts.get_mut(*t) {
                        Some(n) => *n += 1,
                        None => {
                            counts.insert((*t).to_string(), 1);
                        }
                    }
                }
            }
            other => match other.and_then(category) {
                Some(c) => *counts.entry(c).or_default() += 1,
                None => *nulls += 1,
            },
        },
        (Source::Input(j), FeatureSample::Numeric { values, nulls }) => {
            match cells.get(*j).and_then(numeric) {
                Some(v) => values.push(v),
                None => *nulls += 1,
            }
        }
        (Source::Expr(e, idx), FeatureSample::Numeric { values, nulls }) => {
            let v = e.eval(&|m| {
                idx.get(m)
                    .and_then(|i| cells.get(*i))
                    .map(Cell::value)
                    .unwrap_or(Value::Null)
            });
            if v.is_finite() {
                values.push(v)
            } else {
                *nulls += 1
            }
        }
        (Source::Flag(j), FeatureSample::Numeric { values, nulls }) => {
            let v = match cells.get(*j) {
                Some(Cell::Text(t)) => parse_bool(t.trim()).map(|b| f64::from(u8::from(b))),
                other => other.and_then(numeric),
            };
            match v {
                Some(v) => values.push(v),
                None => *nulls += 1,
            }
        }
        (Source::Expr(..) | Source::Flag(_), FeatureSample::Categorical { nulls, .. }) => {
            *nulls += 1
        }
        (Source::Missing, s) => add_nulls(s, 1),
    }
}

fn add_nulls(s: &mut FeatureSample, n: u64) {
    match s {
        FeatureSample::Numeric { nulls, .. } | FeatureSample::Categorical { nulls, .. } => {
            *nulls += n
        }
    }
}

/// Adds a whole Arrow column to a sample (the columnar path of `add_chunk`).
fn add_column(s: &mut FeatureSample, col: &dyn Array) {
    let any = col.as_any();
    match s {
        FeatureSample::Numeric { values, nulls } => {
            if let Some(a) = any.downcast_ref::<Float64Array>() {
                values.reserve(a.len());
                for i in 0..a.len() {
                    let v = a.value(i);
                    if a.is_valid(i) && v.is_finite() {
                        values.push(v);
                    } else {
                        *nulls += 1;
                    }
                }
            } else if let Some(a) = any.downcast_ref::<Int64Array>() {
                values.reserve(a.len());
                for i in 0..a.len() {
                    if a.is_valid(i) {
                        values.push(a.value(i) as f64);
                    } else {
                        *nulls += 1;
                    }
                }
            } else {
                for i in 0..col.len() {
                    match numeric(&array_cell(col, i)) {
                        Some(v) => values.push(v),
                        None => *nulls += 1,
                    }
                }
            }
        }
        FeatureSample::Categorical { counts, nulls } => {
            if let Some(a) = any.downcast_ref::<StringArray>() {
                // Few distinct values per column: count in a small list first
                // (a linear scan beats hashing), then merge.
                let mut local: Vec<(&str, u64)> = Vec::new();
                let mut many: HashMap<&str, u64> = HashMap::new();
                for i in 0..a.len() {
                    if a.is_null(i) {
                        *nulls += 1;
                        continue;
                    }
                    let t = a.value(i);
                    if let Some(e) = local.iter_mut().find(|e| e.0 == t) {
                        e.1 += 1;
                    } else if local.len() < 32 {
                        local.push((t, 1));
                    } else {
                        *many.entry(t).or_default() += 1;
                    }
                }
                for (t, c) in local.into_iter().chain(many) {
                    match counts.get_mut(t) {
                        Some(n) => *n += c,
                        None => {
                            counts.insert(t.to_string(), c);
                        }
                    }
                }
            } else {
                for i in 0..col.len() {
                    match category(&array_cell(col, i)) {
                        Some(c) => *counts.entry(c).or_default() += 1,
                        None => *nulls += 1,
                    }
                }
            }
        }
    }
}

/// Text of a cell used as a category (numbers as written, integers without a
/// fraction, booleans as `true`/`false`).
pub fn category(c: &Cell<'_>) -> Option<String> {
    match c {
        Cell::Text(s) => Some((*s).to_string()),
        Cell::Num(v) => Some(if v.fract() == 0.0 {
            format!("{}", *v as i64)
        } else {
            v.to_string()
        }),
        Cell::Bool(b) => Some(b.to_string()),
        Cell::Null => None,
    }
}

/// A cell as a finite number (booleans as 0/1, numeric text parsed).
pub fn numeric(c: &Cell<'_>) -> Option<f64> {
    match c {
        Cell::Num(v) if v.is_finite() => Some(*v),
        Cell::Bool(b) => Some(f64::from(u8::from(*b))),
        Cell::Text(s) => s.trim().parse::<f64>().ok().filter(|v| v.is_finite()),
        _ => None,
    }
}

/// A CSV field as the cell its column's type reads it as, with what does not
/// parse (or is not finite) as a null, exactly as the Arrow reader builds it.
fn typed_cell(text: &str, ty: ColumnType) -> Cell<'_> {
    match ty {
        ColumnType::String => Cell::Text(text),
        ColumnType::Int => text
            .trim()
            .parse::<i64>()
            .map_or(Cell::Null, |v| Cell::Num(v as f64)),
        ColumnType::Float => match text.trim().parse::<f64>() {
            Ok(v) if v.is_finite() => Cell::Num(v),
            _ => Cell::Null,
        },
        ColumnType::Bool => parse_bool(text.trim()).map_or(Cell::Null, Cell::Bool),
    }
}

/// Reads a CSV file with a spec and samples every feature of the spec's plan
/// (input columns and derived features) and the target (target drift, as
/// Evidently's preset includes it): the rows read and one sample per column. Cells that do not parse as their column's type count as nulls;
/// a file whose header does not fit the spec, or that is not CSV, is an error.
pub fn sample_csv<R: Read>(
    input: R,
    spec: Arc<DatasetSpec>,
) -> Result<(u64, Vec<(String, FeatureSample)>), TableError> {
    let plan = FeaturePlan::from_spec(&spec);
    let mut sampler = FeatureSampler::from_plan(&plan);
    if let Some(t) = spec.column(&spec.target.column) {
        sampler.add_column(&t.name, kind_of(t.ty));
    }
    // Records go straight into the sampler as cells: no Arrow column is built
    // (measured: building them, then reading them back, was half the time).
    let mut reader = CsvChunks::new(input, spec.clone(), 1)?;
    // Each input the sampler reads: the file's field holding it and its type.
    let fields: Vec<Option<(usize, ColumnType)>> = sampler
        .inputs
        .iter()
        .map(|name| {
            let col = spec.columns.iter().position(|c| &c.name == name)?;
            let field = reader.mapping().iter().position(|m| *m == Some(col))?;
            Some((field, spec.columns[col].ty))
        })
        .collect();
    let nulls = reader.null_markers().clone();
    while let Some(record) = reader.next_record()? {
        let cells: Vec<Cell<'_>> = fields
            .iter()
            .map(|f| {
                let Some((i, ty)) = *f else {
                    return Cell::Null;
                };
                let text = record.get(i).unwrap_or("");
                if nulls.is_null(text) {
                    return Cell::Null;
                }
                typed_cell(text, ty)
            })
            .collect();
        sampler.add_cells(&cells);
    }
    let (rows, samples) = sampler.finish();
    Ok((
        rows,
        samples.into_iter().map(|(f, s)| (f.name, s)).collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use modelbus_dataset::table::read_all;

    #[test]
    fn columns_at_a_time_sample_exactly_what_rows_do() {
        let spec = DatasetSpec::parse(
            r#"name = "d"
entity_column = "id"
null_values = ["", " "]
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
[[columns]]
name = "n"
type = "int"
nullable = true
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
[[features]]
name = "x2"
expr = "x * 2"
"#,
            "t",
        )
        .unwrap()
        .spec;
        let csv = "id,x,n,c,b,y\na,1.5,3,red,true,1\nb, ,,blue,false,0\nc,2,5, ,true,1\nd,-4,7,red,false,0\n";
        let spec = Arc::new(spec);
        let chunks = read_all(csv.as_bytes(), spec.clone(), 3).unwrap();
        let plan = FeaturePlan::from_spec(&spec);
        let names: Vec<String> = spec.columns.iter().map(|c| c.name.clone()).collect();
        let index = |n: &str| names.iter().position(|c| c == n);
        let mut by_chunk = FeatureSampler::from_plan(&plan);
        let mut by_row = FeatureSampler::from_plan(&plan);
        for chunk in &chunks {
            by_chunk.add_chunk(chunk, &index);
            let idx: Vec<Option<usize>> = by_row.inputs.iter().map(|c| index(c)).collect();
            for i in 0..chunk.batch.num_rows() {
                let cells: Vec<Cell<'_>> = idx
                    .iter()
                    .map(|ci| ci.map(|ci| cell(chunk, ci, i)).unwrap_or(Cell::Null))
                    .collect();
                by_row.add_cells(&cells);
            }
        }
        let (a, b) = (by_chunk.finish(), by_row.finish());
        assert_eq!(a.0, 4);
        assert_eq!(a.0, b.0);
        let a: Vec<_> = a.1.into_iter().map(|(f, s)| (f.name, s)).collect();
        let b: Vec<_> = b.1.into_iter().map(|(f, s)| (f.name, s)).collect();
        assert_eq!(a, b);
        let get = |n: &str| a.iter().find(|(k, _)| k == n).unwrap().1.clone();
        assert_eq!(
            get("x"),
            FeatureSample::Numeric {
                values: vec![1.5, 2.0, -4.0],
                nulls: 1
            }
        );
        assert_eq!(get("c").nulls(), 1);
        // A logged record keeps what the client sent: booleans as text count.
        let mut logged = FeatureSampler::from_plan(&plan);
        let b = logged.inputs.iter().position(|c| c == "b").unwrap();
        for text in ["true", "Yes", "0", "maybe"] {
            let mut cells = vec![Cell::Null; logged.inputs.len()];
            cells[b] = Cell::Text(text);
            logged.add_cells(&cells);
        }
        let (_, samples) = logged.finish();
        let flag = samples.into_iter().find(|(f, _)| f.name == "b").unwrap().1;
        assert_eq!(
            flag,
            FeatureSample::Numeric {
                values: vec![1.0, 1.0, 0.0],
                nulls: 1
            }
        );
        assert_eq!(get("b").non_null(), 4);
        assert_eq!(
            get("x2"),
            FeatureSample::Numeric {
                values: vec![3.0, 4.0, -8.0],
                nulls: 1
            }
        );
        // Straight from a file (no Arrow chunks): the same samples as the
        // chunks give, the target included, with the fields in another order
        // and a cell that does not parse read as a null.
        let csv = "y,c,x,n,b,id\n1,red,1.5,3,true,a\n0,blue, ,x7,false,b\n1, ,2,5,true,c\n0,red,-4,7,false,d\n";
        let (rows, direct) = sample_csv(csv.as_bytes(), spec.clone()).unwrap();
        let mut chunked = FeatureSampler::from_plan(&plan);
        chunked.add_column("y", FeatureKind::Numeric);
        for chunk in &read_all(csv.as_bytes(), spec.clone(), 3).unwrap() {
            chunked.add_chunk(chunk, &index);
        }
        let (chunk_rows, chunked) = chunked.finish();
        assert_eq!(rows, 4);
        assert_eq!(chunk_rows, 4);
        let chunked: Vec<_> = chunked.into_iter().map(|(f, s)| (f.name, s)).collect();
        assert_eq!(direct, chunked);
        let n = direct.iter().find(|(k, _)| k == "n").unwrap();
        assert_eq!(
            n.1,
            FeatureSample::Numeric {
                values: vec![3.0, 5.0, 7.0],
                nulls: 1
            }
        );
    }
}
