//! Feature transforms: fitted on the training split only, saved inside the model
//! artifact, and applied identically at training and serving time.
//!
//! Defaults from the spec: numeric columns pass through with median imputation,
//! booleans become 0/1 (imputed with the training median), strings are one-hot
//! encoded over the categories seen in training; a category never seen (or a
//! null) encodes as all zeros, so serving never fails on one.

use std::collections::{BTreeMap, BTreeSet};

use arrow_array::{Array, BooleanArray, Float64Array, Int64Array, StringArray};
use serde::{Deserialize, Serialize};

use crate::spec::{ColumnType, DatasetSpec, Role};
use crate::table::{Chunk, parse_bool};

/// How one input column becomes model features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ColumnTransform {
    /// A number used as is; nulls take the training median.
    Numeric {
        /// Input column.
        column: String,
        /// Value used for nulls.
        impute: f64,
    },
    /// A boolean as 0/1; nulls take the training median.
    Bool {
        /// Input column.
        column: String,
        /// Value used for nulls.
        impute: f64,
    },
    /// One feature per training category; unknown and null are all zeros.
    OneHot {
        /// Input column.
        column: String,
        /// Categories seen in training, sorted.
        categories: Vec<String>,
    },
}

impl ColumnTransform {
    /// Input column name.
    pub fn column(&self) -> &str {
        match self {
            ColumnTransform::Numeric { column, .. }
            | ColumnTransform::Bool { column, .. }
            | ColumnTransform::OneHot { column, .. } => column,
        }
    }

    fn width(&self) -> usize {
        match self {
            ColumnTransform::OneHot { categories, .. } => categories.len(),
            _ => 1,
        }
    }
}

/// A fitted transform.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureTransform {
    /// One entry per feature column, in spec order.
    pub columns: Vec<ColumnTransform>,
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

/// A raw cell value handed to [`FeatureTransform::encode_row`].
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

/// Reads cell `i` of column `ci` of a chunk as a [`Cell`].
pub fn cell(chunk: &Chunk, ci: usize, i: usize) -> Cell<'_> {
    let col = chunk.batch.column(ci);
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
    /// Fits on the rows whose global index (over all chunks) is in `train_rows`.
    pub fn fit(spec: &DatasetSpec, chunks: &[Chunk], train_rows: &[usize]) -> Self {
        let train: BTreeSet<usize> = train_rows.iter().copied().collect();
        let mut columns = Vec::new();
        for c in spec.feature_columns() {
            if c.role != Role::Feature {
                continue;
            }
            let Some(ci) = spec.columns.iter().position(|x| x.name == c.name) else {
                continue;
            };
            let mut nums = Vec::new();
            let mut cats = BTreeSet::new();
            let mut row = 0usize;
            for chunk in chunks {
                for i in 0..chunk.batch.num_rows() {
                    if train.contains(&row) {
                        match cell(chunk, ci, i) {
                            Cell::Num(v) => nums.push(v),
                            Cell::Bool(b) => nums.push(if b { 1.0 } else { 0.0 }),
                            Cell::Text(s) => {
                                cats.insert(s.to_string());
                            }
                            Cell::Null => {}
                        }
                    }
                    row += 1;
                }
            }
            columns.push(match c.ty {
                ColumnType::Int | ColumnType::Float => ColumnTransform::Numeric {
                    column: c.name.clone(),
                    impute: median(nums),
                },
                ColumnType::Bool => ColumnTransform::Bool {
                    column: c.name.clone(),
                    impute: median(nums),
                },
                ColumnType::String => ColumnTransform::OneHot {
                    column: c.name.clone(),
                    categories: cats.into_iter().collect(),
                },
            });
        }
        Self { columns }
    }

    /// Names of the output features (`col` or `col=category`), LightGBM-safe.
    pub fn feature_names(&self) -> Vec<String> {
        let mut out = Vec::new();
        for c in &self.columns {
            match c {
                ColumnTransform::OneHot { column, categories } => {
                    for cat in categories {
                        out.push(format!("{column}={cat}"));
                    }
                }
                other => out.push(other.column().to_string()),
            }
        }
        out
    }

    /// Number of output features.
    pub fn num_features(&self) -> usize {
        self.columns.iter().map(ColumnTransform::width).sum()
    }

    /// Encodes one row given each feature column's cell (in `columns` order),
    /// appending to `out`.
    pub fn encode_row(&self, cells: &[Cell<'_>], out: &mut Vec<f64>) {
        for (t, c) in self.columns.iter().zip(cells) {
            match t {
                ColumnTransform::Numeric { impute, .. } => out.push(match c {
                    Cell::Num(v) => *v,
                    Cell::Bool(b) => f64::from(u8::from(*b)),
                    Cell::Text(s) => s.trim().parse::<f64>().unwrap_or(*impute),
                    Cell::Null => *impute,
                }),
                ColumnTransform::Bool { impute, .. } => out.push(match c {
                    Cell::Bool(b) => f64::from(u8::from(*b)),
                    Cell::Num(v) => f64::from(u8::from(*v != 0.0)),
                    Cell::Text(s) => parse_bool(s.trim())
                        .map(|b| f64::from(u8::from(b)))
                        .unwrap_or(*impute),
                    Cell::Null => *impute,
                }),
                ColumnTransform::OneHot { categories, .. } => {
                    let start = out.len();
                    out.resize(start + categories.len(), 0.0);
                    let owned;
                    let key: Option<&str> = match c {
                        Cell::Text(s) => Some(s),
                        Cell::Num(v) => {
                            owned = if v.fract() == 0.0 {
                                format!("{}", *v as i64)
                            } else {
                                v.to_string()
                            };
                            Some(owned.as_str())
                        }
                        Cell::Bool(b) => Some(if *b { "true" } else { "false" }),
                        Cell::Null => None,
                    };
                    if let Some(k) = key
                        && let Ok(pos) = categories.binary_search_by(|c| c.as_str().cmp(k))
                    {
                        out[start + pos] = 1.0;
                    }
                }
            }
        }
    }

    /// Encodes every row of the chunks: row-major, `num_features` columns.
    pub fn transform_chunks(&self, spec: &DatasetSpec, chunks: &[Chunk]) -> Vec<f64> {
        let idx: Vec<usize> = self
            .columns
            .iter()
            .map(|t| {
                spec.columns
                    .iter()
                    .position(|c| c.name == t.column())
                    .unwrap_or(usize::MAX)
            })
            .collect();
        let rows: usize = chunks.iter().map(|c| c.batch.num_rows()).sum();
        let mut out = Vec::with_capacity(rows * self.num_features());
        let mut cells = Vec::with_capacity(idx.len());
        for chunk in chunks {
            for i in 0..chunk.batch.num_rows() {
                cells.clear();
                cells.extend(idx.iter().map(|&ci| {
                    if ci == usize::MAX {
                        Cell::Null
                    } else {
                        cell(chunk, ci, i)
                    }
                }));
                self.encode_row(&cells, &mut out);
            }
        }
        out
    }

    /// Category frequencies and medians, for display.
    pub fn summary(&self) -> BTreeMap<String, serde_json::Value> {
        self.columns
            .iter()
            .map(|c| {
                (
                    c.column().to_string(),
                    serde_json::to_value(c).unwrap_or_default(),
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::read_all;
    use std::sync::Arc;

    fn spec() -> Arc<DatasetSpec> {
        let text = r#"name = "d"
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
[[columns]]
name = "c"
type = "string"
[[columns]]
name = "b"
type = "bool"
[[columns]]
name = "y"
type = "int"
"#;
        Arc::new(DatasetSpec::parse(text, "t").unwrap().spec)
    }

    #[test]
    fn fits_on_training_rows_only_and_encodes() {
        let csv =
            "id,x,c,b,y\na,1,red,true,1\nb,,blue,false,0\nc,3,red,true,1\nd,100,green,false,0\n";
        let s = spec();
        let chunks = read_all(csv.as_bytes(), s.clone(), 2).unwrap();
        // Row 3 (green, 100) is held out: it must not influence the fit.
        let t = FeatureTransform::fit(&s, &chunks, &[0, 1, 2]);
        assert_eq!(t.feature_names(), vec!["x", "c=blue", "c=red", "b"]);
        assert_eq!(
            t.columns[0],
            ColumnTransform::Numeric {
                column: "x".into(),
                impute: 2.0
            }
        );
        let x = t.transform_chunks(&s, &chunks);
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
    fn encode_row_accepts_text_numbers_and_unknowns() {
        let t = FeatureTransform {
            columns: vec![
                ColumnTransform::Numeric {
                    column: "x".into(),
                    impute: 5.0,
                },
                ColumnTransform::OneHot {
                    column: "c".into(),
                    categories: vec!["0".into(), "1".into()],
                },
            ],
        };
        let mut out = Vec::new();
        t.encode_row(&[Cell::Text("2.5"), Cell::Num(1.0)], &mut out);
        assert_eq!(out, vec![2.5, 0.0, 1.0]);
        out.clear();
        t.encode_row(&[Cell::Null, Cell::Text("7")], &mut out);
        assert_eq!(out, vec![5.0, 0.0, 0.0]);
    }
}
